//! `gridstore admin …` (users, keys, buckets, node status) and `gridstore
//! gateway`: both connect to a grid named by a cluster map, either a
//! `gridstore server` DIR or a gateway config file.

use crate::cluster_file::{FileError, GatewayFile, MapFile};
use crate::embedded::{ServerState, MAP_FILE, STATE_FILE};
use crate::units;
use clap::{Args, Subcommand};
use cluster::secrets::MasterKey;
use cluster::{ErasureSpec, ObjectStore, StoreConfig};
use grid::chunk_io::Grid;
use grid::tls::{Identity, IdentityKey};
use grid::ClientOptions;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

#[derive(Args)]
pub struct AdminArgs {
    /// The DIR of a running `gridstore server`.
    #[arg(long, value_name = "DIR", conflicts_with = "config")]
    dir: Option<PathBuf>,
    /// A gateway config file (cluster map, secrets).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: AdminCommand,
}

/// `--json` of the listing subcommands.
#[derive(Args, Clone, Copy)]
struct Format {
    /// Print one JSON object instead of the table: stable field names,
    /// sizes in bytes, times in milliseconds since the Unix epoch.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Access keys: create, list and delete them.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Buckets: create, list, delete, and allow anonymous reads.
    #[command(subcommand)]
    Bucket(BucketCommand),
    /// Every node's state: capacity, use, shard count. Exits non-zero if
    /// any node does not answer.
    Status {
        #[command(flatten)]
        format: Format,
    },
    /// Self-healing: what every node is missing and rebuilding.
    #[command(subcommand)]
    Repair(RepairCommand),
    /// Run one storage audit round now: challenge every up node to prove
    /// random slices of shards it should hold, print per-node results, and
    /// mark nodes past the failure threshold untrusted. Exits non-zero if
    /// any node failed, lacks shards or did not answer.
    Audit {
        #[command(flatten)]
        format: Format,
    },
    /// Grid membership: add, drain and remove nodes; pin their identities
    /// and those of the gateways the nodes accept.
    #[command(subcommand)]
    Node(NodeCommand),
}

#[derive(Subcommand)]
enum NodeCommand {
    /// The cluster map the nodes hold: every node and its state, and the
    /// clients they accept.
    List {
        #[command(flatten)]
        format: Format,
    },
    /// Hand the configured map (the gateway config's `cluster_map`, or the
    /// server directory's) to every node that holds none yet: a new grid's
    /// first map. Nodes holding a map are left alone. `gridstore gateway`
    /// does this by itself at start and every few seconds. Exits non-zero
    /// if any node does not answer.
    Seed,
    /// Add a node (already running, its identity key known); placement
    /// starts using it at once and the others move it its share.
    Add {
        /// Its `node_id`.
        id: String,
        /// Its RPC address, host:port.
        #[arg(long)]
        addr: String,
        /// Its failure domain (`site` in its node.toml).
        #[arg(long)]
        site: String,
        /// Its identity key, hex (`gridstore node --config FILE --identity`
        /// on its machine).
        #[arg(long)]
        key: String,
        /// Placement weight, in GiB.
        #[arg(long, default_value_t = 1024)]
        capacity_gib: u64,
    },
    /// Stop placing data on a node; its shards move to the others in the
    /// background (follow with `admin repair status`).
    Drain {
        /// The node's `node_id`.
        id: String,
    },
    /// Let a gateway or admin tool connect to the nodes, by its identity
    /// key (`gridstore gateway --config FILE --identity`).
    Trust {
        /// Its identity key, hex.
        key: String,
        /// For people: which one it is.
        #[arg(long, default_value = "")]
        name: String,
        /// What it is, for people reading the map (the nodes treat both
        /// alike).
        #[arg(long, default_value = "gateway", value_parser = ["gateway", "admin"])]
        role: String,
    },
    /// Stop letting the client with this identity key connect.
    Distrust {
        /// Its identity key, hex.
        key: String,
    },
    /// Pin a node's new identity after its data directory (and so its
    /// identity) was lost: nodes and gateways refuse it until then.
    Rekey {
        /// The node's `node_id`.
        id: String,
        /// `gridstore node --config FILE --identity` on its machine.
        #[arg(long)]
        key: String,
    },
    /// Take a drained node (no shards left) out of the grid for good.
    Remove {
        /// The node's `node_id`.
        id: String,
        /// Even if it still holds shards or does not answer (a dead disk:
        /// repair rebuilds its shards elsewhere).
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand)]
enum RepairCommand {
    /// Per node: shards missing, being rebuilt and rebuilt, scrub figures;
    /// nodes out of touch, damaged chunks and untrusted nodes. Exits
    /// non-zero if any node does not answer.
    Status {
        /// Follow a running rebuild with a progress bar until nothing is
        /// missing.
        #[arg(long, conflicts_with = "json")]
        watch: bool,
        #[command(flatten)]
        format: Format,
    },
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Create an access key; its secret is printed once.
    Create {
        /// A name to recognise the key by.
        #[arg(long, default_value = "")]
        name: String,
        /// May manage every bucket.
        #[arg(long)]
        admin: bool,
    },
    /// Every access key: its id, whether it is an admin, its name.
    List {
        #[command(flatten)]
        format: Format,
    },
    /// Delete an access key: requests signed with it are refused from then
    /// on; buckets it owns are kept.
    Delete {
        /// The access key id (GS...).
        access_key: String,
    },
}

#[derive(Subcommand)]
enum BucketCommand {
    /// Every bucket: owner, erasure shape, versioning, public or not.
    List {
        #[command(flatten)]
        format: Format,
    },
    /// Create a bucket owned by an access key.
    Create {
        /// The bucket's name (S3 naming rules).
        name: String,
        /// The owning access key.
        #[arg(long)]
        owner: String,
        /// Erasure shape "k+m" instead of the cluster default.
        #[arg(long)]
        erasure: Option<String>,
    },
    /// Delete an empty bucket.
    Delete {
        /// The bucket's name.
        name: String,
    },
    /// Allow (or stop) anonymous reads.
    Public {
        /// The bucket's name.
        name: String,
        /// on: anyone may read its objects; off: only signed requests.
        #[arg(value_parser = ["on", "off"])]
        state: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(transparent)]
    File(#[from] FileError),
    #[error("{0}")]
    Store(#[from] cluster::Error),
    #[error("{0}")]
    Usage(String),
    #[error("{down} of {total} nodes did not answer")]
    NodesDown { down: usize, total: usize },
    #[error("{} of {total} nodes hold no cluster map (down, or refused it): {}", missing.len(), missing.join(", "))]
    NotSeeded { missing: Vec<String>, total: usize },
    #[error("{failing} of {total} nodes failed their audit, lack shards they should hold or did not answer")]
    AuditFailed { failing: usize, total: usize },
    #[error("no access key {0}")]
    NoSuchAccessKey(String),
    #[error("cannot encode the output as JSON: {0}")]
    Json(serde_json::Error),
    #[error("cannot write the output: {0}")]
    Output(std::io::Error),
    #[error(transparent)]
    Membership(#[from] grid::membership::MembershipError),
    #[error("cannot listen for S3 on {addr} (listen): {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

struct Connection {
    store: ObjectStore,
}

fn connect_parts(
    map: MapFile,
    identity: Identity,
    master: MasterKey,
    site: Option<String>,
    metadata_replicas: usize,
) -> Result<Connection, AdminError> {
    // Nodes holding this map would refuse us, and seeding it would lock us
    // out: say what to add instead.
    if !map.lists_client(&identity) {
        return Err(AdminError::Usage(format!(
            "this client's identity is not in the cluster map: add\n\n\
             [[clients]]\nname = \"gateway\"\nkey = \"{}\"\n\nto the map file",
            identity.key()
        )));
    }
    let opts = ClientOptions {
        identity: Some(identity),
        ..ClientOptions::default()
    };
    let grid = Grid::new(map.to_map(), opts);
    let cfg = StoreConfig {
        local_site: site,
        metadata_replicas,
        ..StoreConfig::default()
    };
    Ok(Connection {
        store: ObjectStore::new(grid, master, cfg),
    })
}

fn connect(args: &AdminArgs) -> Result<Connection, AdminError> {
    match (&args.dir, &args.config) {
        (Some(dir), _) => {
            if !dir.join(STATE_FILE).exists() {
                return Err(AdminError::Usage(format!(
                    "{} is not a gridstore server directory",
                    dir.display()
                )));
            }
            let state =
                ServerState::load_or_create(dir).map_err(|e| AdminError::Usage(e.to_string()))?;
            let map = MapFile::load(&dir.join(MAP_FILE))?;
            let master = MasterKey::from_text(&state.master_key)
                .map_err(|e| AdminError::Usage(e.to_string()))?;
            let identity = Identity::load_or_create(&dir.join(crate::embedded::IDENTITY_DIR))
                .map_err(|e| AdminError::Usage(e.to_string()))?;
            connect_parts(
                map,
                identity,
                master,
                None,
                StoreConfig::default().metadata_replicas,
            )
        }
        (None, Some(config)) => {
            let g = GatewayFile::load(config)?;
            let map = MapFile::load(&g.cluster_map)?;
            connect_parts(
                map,
                g.identity()?,
                g.master_key()?,
                g.site.clone(),
                g.metadata_replicas,
            )
        }
        (None, None) => Err(AdminError::Usage(
            "say which grid: --dir DIR (a gridstore server) or --config gw.toml".into(),
        )),
    }
}

fn parse_key(hex: &str) -> Result<Vec<u8>, AdminError> {
    Ok(IdentityKey::from_hex(hex)
        .map_err(|e| AdminError::Usage(e.to_string()))?
        .0
        .to_vec())
}

fn parse_erasure(s: &str) -> Result<ErasureSpec, AdminError> {
    let bad = || AdminError::Usage(format!("erasure must look like 4+2, not {s:?}"));
    let (k, m) = s.split_once('+').ok_or_else(bad)?;
    Ok(ErasureSpec::new(
        k.trim().parse().map_err(|_| bad())?,
        m.trim().parse().map_err(|_| bad())?,
    ))
}

async fn admin(args: AdminArgs) -> Result<(), AdminError> {
    let c = connect(&args)?;
    let s = &c.store;
    match args.command {
        AdminCommand::Key(KeyCommand::Create { name, admin }) => {
            let (ak, sk) = s.create_user(&name, admin, None, None).await?;
            println!("access key: {ak}");
            println!("secret key: {sk}");
        }
        AdminCommand::Key(KeyCommand::List { format }) => {
            let keys: Vec<KeyRow> = s
                .list_users()
                .await?
                .into_iter()
                .map(|u| KeyRow {
                    access_key: u.access_key,
                    name: u.name,
                    admin: u.admin,
                    created_ms: u.created_ms,
                })
                .collect();
            if format.json {
                print_json(&KeyList { keys })?;
            } else {
                for k in &keys {
                    let kind = if k.admin { "admin" } else { "user" };
                    println!("{}\t{kind}\t{}", k.access_key, k.name);
                }
            }
        }
        AdminCommand::Key(KeyCommand::Delete { access_key }) => {
            if !s.delete_user(&access_key).await? {
                return Err(AdminError::NoSuchAccessKey(access_key));
            }
        }
        AdminCommand::Bucket(BucketCommand::List { format }) => {
            let buckets: Vec<BucketRow> = s
                .list_buckets()
                .await?
                .into_iter()
                .map(|b| BucketRow {
                    name: b.name,
                    owner: b.owner,
                    created_ms: b.created_ms,
                    erasure: ErasureRow {
                        data: b.erasure.data,
                        parity: b.erasure.parity,
                    },
                    versioning: format!("{:?}", b.versioning).to_lowercase(),
                    public: b.public,
                })
                .collect();
            if format.json {
                print_json(&BucketList { buckets })?;
            } else {
                for b in &buckets {
                    println!(
                        "{}\towner {}\t{}+{}\t{}{}",
                        b.name,
                        b.owner,
                        b.erasure.data,
                        b.erasure.parity,
                        b.versioning,
                        if b.public { "\tpublic" } else { "" }
                    );
                }
            }
        }
        AdminCommand::Bucket(BucketCommand::Create {
            name,
            owner,
            erasure,
        }) => {
            let e = erasure.as_deref().map(parse_erasure).transpose()?;
            s.create_bucket(&name, &owner, e).await?;
        }
        AdminCommand::Bucket(BucketCommand::Delete { name }) => s.delete_bucket(&name).await?,
        AdminCommand::Bucket(BucketCommand::Public { name, state }) => {
            s.set_public(&name, state == "on").await?
        }
        AdminCommand::Status { format } => {
            let nodes = status_rows(s).await;
            if format.json {
                print_json(&StatusReport {
                    nodes: nodes.clone(),
                })?;
            } else {
                print!("{}", status_table(&nodes));
            }
            // Scripts and monitors read the exit status: any node that
            // does not answer (down, or refusing our identity) fails it.
            let down = nodes.iter().filter(|n| !n.up).count();
            if down > 0 {
                return Err(AdminError::NodesDown {
                    down,
                    total: nodes.len(),
                });
            }
        }
        AdminCommand::Node(cmd) => node_command(s, cmd).await?,
        AdminCommand::Audit { format } => {
            let cfg = match &args.config {
                Some(config) => GatewayFile::load(config)?.audit_config(),
                None => cluster::AuditConfig::default(),
            };
            let report = cluster::Auditor::new(s.clone(), cfg).audit_once().await;
            // A node the auditor could not list shards for shows nothing
            // to challenge; ask each whether it answers at all.
            let silent = unanswered(s, report.nodes.iter().map(|n| n.node.as_str())).await;
            if format.json {
                print_json(&audit_view(&report, &silent))?;
            } else {
                print!("{}", audit_table(&report, &silent));
            }
            let failing = report
                .nodes
                .iter()
                .filter(|n| !matches!(audit_result(n, &silent), "ok" | "nothing to challenge"))
                .count();
            if failing > 0 {
                return Err(AdminError::AuditFailed {
                    failing,
                    total: report.nodes.len(),
                });
            }
        }
        AdminCommand::Repair(RepairCommand::Status { watch, format }) => {
            let rows = repair_rows(s).await;
            let names = referrer_names(s, &rows).await;
            let map = grid::membership::current_map(&s.grid(), &s.owner_key())
                .await
                .ok();
            if format.json {
                print_json(&repair_view(&rows, &names, map.as_ref()))?;
            } else {
                print!("{}", repair_table(&rows, &names));
                if let Some(map) = &map {
                    print!("{}", untrusted_table(map));
                }
            }
            if watch {
                watch_repair(s, &rows).await;
            }
            let down = rows.iter().filter(|(_, st)| st.is_err()).count();
            if down > 0 {
                return Err(AdminError::NodesDown {
                    down,
                    total: rows.len(),
                });
            }
        }
    }
    Ok(())
}

fn print_json(value: &impl Serialize) -> Result<(), AdminError> {
    use std::io::Write;
    let text = serde_json::to_string_pretty(value).map_err(AdminError::Json)?;
    match writeln!(std::io::stdout().lock(), "{text}") {
        // A reader that stopped early (`| head`) wanted no more.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => r.map_err(AdminError::Output),
    }
}

/// `key list --json`.
#[derive(Serialize)]
struct KeyList {
    keys: Vec<KeyRow>,
}

#[derive(Serialize)]
struct KeyRow {
    access_key: String,
    name: String,
    admin: bool,
    created_ms: u64,
}

/// `bucket list --json`.
#[derive(Serialize)]
struct BucketList {
    buckets: Vec<BucketRow>,
}

#[derive(Serialize)]
struct BucketRow {
    name: String,
    owner: String,
    created_ms: u64,
    erasure: ErasureRow,
    /// "unversioned", "enabled" or "suspended".
    versioning: String,
    public: bool,
}

#[derive(Serialize)]
struct ErasureRow {
    data: u32,
    parity: u32,
}

/// `status --json`.
#[derive(Serialize)]
struct StatusReport {
    nodes: Vec<StatusRow>,
}

/// One node's answer to `status`; the figures are null when it gave none.
#[derive(Serialize, Clone)]
struct StatusRow {
    id: String,
    site: String,
    addr: String,
    up: bool,
    /// Why it did not answer.
    error: Option<String>,
    shards: Option<u64>,
    used_bytes: Option<u64>,
    available_bytes: Option<u64>,
    capacity_bytes: Option<u64>,
    map_epoch: Option<u64>,
    version: Option<String>,
}

async fn status_rows(s: &ObjectStore) -> Vec<StatusRow> {
    cluster::node_status::gather(s, None)
        .await
        .into_iter()
        .map(|(n, answer)| {
            let st = answer.as_ref().ok();
            StatusRow {
                id: n.id,
                site: n.site,
                addr: n.addr,
                up: answer.is_ok(),
                error: answer.as_ref().err().cloned(),
                shards: st.map(|st| st.shard_count),
                used_bytes: st.map(|st| st.used_bytes),
                available_bytes: st.map(|st| st.available_bytes),
                capacity_bytes: st.map(|st| st.capacity_bytes),
                map_epoch: st.map(|st| st.map_epoch),
                version: st.map(|st| st.version.clone()),
            }
        })
        .collect()
}

fn status_table(rows: &[StatusRow]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    for r in rows {
        let _ = match (&r.error, r.shards, r.used_bytes, r.available_bytes) {
            (None, Some(shards), Some(used), Some(available)) => writeln!(
                out,
                "{}\t{}\t{}\tup\t{shards} shards\t{} used\t{} available",
                r.id,
                r.site,
                r.addr,
                units::bytes(used),
                units::bytes(available)
            ),
            (e, ..) => writeln!(
                out,
                "{}\t{}\t{}\tDOWN ({})",
                r.id,
                r.site,
                r.addr,
                e.as_deref().unwrap_or("no answer")
            ),
        };
    }
    out
}

async fn node_command(s: &ObjectStore, cmd: NodeCommand) -> Result<(), AdminError> {
    use grid::membership::{apply, current_map, Change};
    let grid = s.grid();
    let change = match cmd {
        NodeCommand::Seed => {
            let seeded = grid::membership::seed(&grid, &s.owner_key()).await;
            if seeded.is_empty() {
                println!("every node that answered already holds a cluster map");
            } else {
                println!(
                    "cluster map epoch {} handed to: {}",
                    grid.map().epoch,
                    seeded.join(", ")
                );
            }
            // `seed` passes over nodes that do not answer, as the
            // gateway's loop retries them; a command run once must say
            // which still hold no map.
            let mut missing = Vec::new();
            let live = grid
                .map()
                .nodes
                .iter()
                .filter(|n| n.state != metadata::model::NodeState::Removed as i32);
            let mut total = 0;
            for n in live {
                total += 1;
                let held = match grid.client(&n.id) {
                    Some(c) => matches!(
                        tokio::time::timeout(Duration::from_secs(3), c.get_map()).await,
                        Ok(Ok(Some(_)))
                    ),
                    None => false,
                };
                if !held {
                    missing.push(n.id.clone());
                }
            }
            if !missing.is_empty() {
                return Err(AdminError::NotSeeded { missing, total });
            }
            return Ok(());
        }
        NodeCommand::List { format } => {
            let map = current_map(&grid, &s.owner_key()).await?;
            let view = node_list_view(&map);
            if format.json {
                print_json(&view)?;
            } else {
                println!("epoch {}", view.epoch);
                for n in &view.nodes {
                    println!(
                        "{}\t{}\t{}\t{}\t{}",
                        n.id,
                        n.site,
                        n.addr,
                        n.state,
                        units::bytes(n.capacity_bytes)
                    );
                }
                for c in &view.clients {
                    println!("client\t{}\t{}\t{}", c.name, c.role, c.key);
                }
            }
            return Ok(());
        }
        NodeCommand::Add {
            id,
            addr,
            site,
            key,
            capacity_gib,
        } => Change::Add(metadata::model::Node {
            id,
            addr,
            site,
            capacity_bytes: capacity_gib << 30,
            state: metadata::model::NodeState::Up as i32,
            key: parse_key(&key)?,
            untrusted_reason: String::new(),
        }),
        NodeCommand::Drain { id } => Change::Drain(id),
        NodeCommand::Trust { key, name, role } => Change::Trust(metadata::model::ClientIdentity {
            name,
            key: parse_key(&key)?,
            role: if role == "admin" {
                metadata::model::ClientRole::Admin
            } else {
                metadata::model::ClientRole::Gateway
            } as i32,
        }),
        NodeCommand::Distrust { key } => Change::Distrust(parse_key(&key)?),
        NodeCommand::Rekey { id, key } => Change::Rekey {
            node: id,
            key: parse_key(&key)?,
        },
        NodeCommand::Remove { id, force } => Change::Remove { node: id, force },
    };
    let map = apply(&grid, &s.owner_key(), change).await?;
    println!(
        "cluster map epoch {} handed to {} nodes",
        map.epoch,
        map.nodes.len()
    );
    Ok(())
}

/// Nodes that failed storage audits, and why: their shards are rebuilt
/// elsewhere, and they stay out until an operator removes them.
fn untrusted_table(map: &metadata::model::ClusterMap) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let untrusted = map
        .nodes
        .iter()
        .filter(|n| n.state == metadata::model::NodeState::Untrusted as i32);
    for (i, n) in untrusted.enumerate() {
        if i == 0 {
            let _ = writeln!(
                out,
                "\nuntrusted nodes (failed storage audits; their shards are rebuilt elsewhere):"
            );
        }
        let _ = writeln!(out, "{} ({}): {}", n.id, n.site, n.untrusted_reason);
    }
    out
}

fn audit_table(r: &cluster::AuditReport, silent: &Silent) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out, "audit against map epoch {}", r.epoch);
    let _ = writeln!(
        out,
        "{:<12} {:>7} {:>7} {:>8} {:>10} {:>7}  result",
        "node", "passed", "failed", "skipped", "rechecking", "recent"
    );
    for n in &r.nodes {
        let result = match audit_result(n, silent) {
            "untrusted" => "UNTRUSTED now",
            "failed" => "FAILED",
            "rechecking" => "lacks shards: told to repair, asked again later",
            "unreachable" => "did not answer",
            other => other,
        };
        let _ = writeln!(
            out,
            "{:<12} {:>7} {:>7} {:>8} {:>10} {:>7}  {result}",
            n.node, n.passed, n.failed, n.skipped, n.rechecking, n.recent_failures
        );
        for f in &n.failures {
            let _ = writeln!(out, "    {f}");
        }
    }
    if let Some(w) = &r.withheld {
        let _ = writeln!(out, "{w}");
    }
    out
}

use cluster::node_status::state_name;

/// `node list --json`: the cluster map as the nodes hold it.
#[derive(Serialize)]
struct NodeList {
    epoch: u64,
    nodes: Vec<MapNodeRow>,
    clients: Vec<MapClientRow>,
}

#[derive(Serialize)]
struct MapNodeRow {
    id: String,
    site: String,
    addr: String,
    /// "up", "down", "draining", "lost", "removed", "untrusted".
    state: String,
    capacity_bytes: u64,
    /// Identity key, hex.
    key: String,
    /// Why storage audits made it untrusted; null otherwise.
    untrusted_reason: Option<String>,
}

#[derive(Serialize)]
struct MapClientRow {
    name: String,
    /// "gateway" or "admin".
    role: String,
    /// Identity key, hex.
    key: String,
}

fn key_hex(key: &[u8]) -> String {
    IdentityKey::from_bytes(key).map_or_else(|| "(bad key)".to_string(), |k| k.to_hex())
}

fn node_list_view(map: &metadata::model::ClusterMap) -> NodeList {
    NodeList {
        epoch: map.epoch,
        nodes: map
            .nodes
            .iter()
            .map(|n| MapNodeRow {
                id: n.id.clone(),
                site: n.site.clone(),
                addr: n.addr.clone(),
                state: state_name(n.state),
                capacity_bytes: n.capacity_bytes,
                key: key_hex(&n.key),
                untrusted_reason: (!n.untrusted_reason.is_empty())
                    .then(|| n.untrusted_reason.clone()),
            })
            .collect(),
        clients: map
            .clients
            .iter()
            .map(|c| MapClientRow {
                name: c.name.clone(),
                role: metadata::model::ClientRole::try_from(c.role)
                    .map_or_else(|_| c.role.to_string(), |r| format!("{r:?}").to_lowercase()),
                key: key_hex(&c.key),
            })
            .collect(),
    }
}

/// `audit --json`.
#[derive(Serialize)]
struct AuditView {
    epoch: u64,
    nodes: Vec<AuditRow>,
    /// Why the round's verdicts were not applied (too many nodes failing
    /// at once to believe it); null when they were.
    withheld: Option<String>,
}

#[derive(Serialize)]
struct AuditRow {
    id: String,
    passed: u32,
    failed: u32,
    /// Challenges the node did not answer.
    skipped: u32,
    rechecking: u32,
    recent_failures: u32,
    /// Made untrusted by this round.
    untrusted: bool,
    /// "ok", "failed", "untrusted", "rechecking", "unreachable" or
    /// "nothing to challenge".
    result: &'static str,
    failures: Vec<String>,
}

/// Ids of the nodes that did not answer a status call.
type Silent = std::collections::HashSet<String>;

async fn unanswered(s: &ObjectStore, ids: impl Iterator<Item = &str>) -> Silent {
    let grid = s.grid();
    let mut silent = Silent::new();
    for id in ids {
        let answered = match grid.client(id) {
            Some(c) => matches!(
                tokio::time::timeout(Duration::from_secs(5), c.status()).await,
                Ok(Ok(_))
            ),
            None => false,
        };
        if !answered {
            silent.insert(id.to_string());
        }
    }
    silent
}

/// One word for a node's audit outcome, worst first.
fn audit_result(n: &cluster::audit::NodeAudit, silent: &Silent) -> &'static str {
    if n.untrusted {
        "untrusted"
    } else if n.failed > 0 {
        "failed"
    } else if n.rechecking > 0 {
        "rechecking"
    } else if n.skipped > 0 || silent.contains(&n.node) {
        "unreachable"
    } else if n.passed == 0 {
        "nothing to challenge"
    } else {
        "ok"
    }
}

fn audit_view(r: &cluster::AuditReport, silent: &Silent) -> AuditView {
    AuditView {
        epoch: r.epoch,
        nodes: r
            .nodes
            .iter()
            .map(|n| AuditRow {
                id: n.node.clone(),
                passed: n.passed,
                failed: n.failed,
                skipped: n.skipped,
                rechecking: n.rechecking,
                recent_failures: n.recent_failures,
                untrusted: n.untrusted,
                result: audit_result(n, silent),
                failures: n.failures.clone(),
            })
            .collect(),
        withheld: r.withheld.clone(),
    }
}

/// `repair status --json`. Times are milliseconds since the Unix epoch,
/// null for never.
#[derive(Serialize)]
struct RepairView {
    nodes: Vec<RepairNodeRow>,
    /// Nodes some node has not heard from, as the nodes that answered see
    /// them.
    out_of_touch: Vec<OutOfTouchRow>,
    /// Nodes made untrusted by storage audits (empty when no node
    /// answered with a map).
    untrusted: Vec<UntrustedRow>,
}

#[derive(Serialize)]
struct RepairNodeRow {
    id: String,
    site: String,
    state: String,
    answered: bool,
    /// Why it did not answer.
    error: Option<String>,
    map_epoch: Option<u64>,
    /// The node's figures; null when it did not answer or reports none.
    repair: Option<RepairFigures>,
}

#[derive(Serialize)]
struct RepairFigures {
    missing: u64,
    waiting: u64,
    at_risk: u64,
    rebuilding: u64,
    rebuilt_shards: u64,
    rebuilt_bytes: u64,
    failed_rebuilds: u64,
    handed_back: u64,
    scrubbed_shards: u64,
    corrupt_found: u64,
    reconcile_passes: u64,
    last_reconcile_ms: Option<u64>,
    last_scrub_ms: Option<u64>,
    rebuilds_paused_until_ms: Option<u64>,
    store_full_pauses: u64,
    damaged_chunks: u64,
    /// The first damaged chunks (`damaged_chunks` counts them all).
    damaged: Vec<DamagedRow>,
}

#[derive(Serialize)]
struct DamagedRow {
    /// Hex.
    chunk_id: String,
    shards_found: u32,
    shards_needed: u32,
    first_found_ms: Option<u64>,
    last_tried_ms: Option<u64>,
    /// References to it on the node (`referrers` lists the first).
    referrer_count: u64,
    referrers: Vec<ReferrerRow>,
}

#[derive(Serialize)]
struct ReferrerRow {
    /// Bucket name and object key, null when the records could not be
    /// opened (deleted since, or unreachable).
    bucket: Option<String>,
    key: Option<String>,
    /// Hex.
    bucket_id: String,
    key_hash: String,
    /// The object version, or the multipart upload id when `part_number`
    /// is not 0; hex.
    version: String,
    part_number: u32,
}

#[derive(Serialize)]
struct OutOfTouchRow {
    id: String,
    state: String,
    /// The longest silence any answering node reports.
    unheard_ms: u64,
    /// The soonest any answering node would mark it lost (0: due).
    lost_in_ms: u64,
}

#[derive(Serialize)]
struct UntrustedRow {
    id: String,
    site: String,
    reason: String,
}

/// The root crate has no hex dependency; ids are short.
fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// 0 is how the nodes say "never".
fn when(ms: u64) -> Option<u64> {
    (ms != 0).then_some(ms)
}

fn repair_view(
    rows: &[RepairRow],
    names: &ReferrerNames,
    map: Option<&metadata::model::ClusterMap>,
) -> RepairView {
    let nodes = rows
        .iter()
        .map(|(n, st)| RepairNodeRow {
            id: n.id.clone(),
            site: n.site.clone(),
            state: state_name(n.state),
            answered: st.is_ok(),
            error: st.as_ref().err().cloned(),
            map_epoch: st.as_ref().ok().map(|st| st.map_epoch),
            repair: st
                .as_ref()
                .ok()
                .and_then(|st| st.repair.as_ref())
                .map(|r| repair_figures(r, names)),
        })
        .collect();
    let out_of_touch = unheard_nodes(rows)
        .into_iter()
        .map(|(id, (unheard_ms, lost_in_ms))| OutOfTouchRow {
            state: node_state_in(rows, id),
            id: id.to_string(),
            unheard_ms,
            lost_in_ms,
        })
        .collect();
    let untrusted = map
        .map(|m| {
            m.nodes
                .iter()
                .filter(|n| n.state == metadata::model::NodeState::Untrusted as i32)
                .map(|n| UntrustedRow {
                    id: n.id.clone(),
                    site: n.site.clone(),
                    reason: n.untrusted_reason.clone(),
                })
                .collect()
        })
        .unwrap_or_default();
    RepairView {
        nodes,
        out_of_touch,
        untrusted,
    }
}

fn repair_figures(r: &grid::node_api::RepairStatus, names: &ReferrerNames) -> RepairFigures {
    RepairFigures {
        missing: r.missing,
        waiting: r.waiting,
        at_risk: r.at_risk,
        rebuilding: r.rebuilding,
        rebuilt_shards: r.rebuilt_shards,
        rebuilt_bytes: r.rebuilt_bytes,
        failed_rebuilds: r.failed_rebuilds,
        handed_back: r.handed_back,
        scrubbed_shards: r.scrubbed_shards,
        corrupt_found: r.corrupt_found,
        reconcile_passes: r.reconcile_passes,
        last_reconcile_ms: when(r.last_reconcile_ms),
        last_scrub_ms: when(r.last_scrub_ms),
        rebuilds_paused_until_ms: (r.rebuilds_paused_until_ms > grid::clock::now_ms())
            .then_some(r.rebuilds_paused_until_ms),
        store_full_pauses: r.store_full_pauses,
        damaged_chunks: r.damaged_chunks,
        damaged: r
            .damaged
            .iter()
            .map(|d| DamagedRow {
                chunk_id: hex(&d.chunk_id),
                shards_found: d.shards_found,
                shards_needed: d.shards_needed,
                first_found_ms: when(d.first_found_ms),
                last_tried_ms: when(d.last_tried_ms),
                referrer_count: d.referrer_count,
                referrers: d
                    .referrers
                    .iter()
                    .map(|rf| {
                        let (bucket, key) = match names.get(rf) {
                            Some(Some((b, k))) => (Some(b.clone()), Some(k.clone())),
                            _ => (None, None),
                        };
                        ReferrerRow {
                            bucket,
                            key,
                            bucket_id: hex(&rf.bucket_id),
                            key_hash: hex(&rf.key_hash),
                            version: hex(&rf.version),
                            part_number: rf.part_number,
                        }
                    })
                    .collect(),
            })
            .collect(),
    }
}

/// Nodes out of touch: for each, the longest silence any node that
/// answered reports and the soonest one of them would mark it lost.
fn unheard_nodes(rows: &[RepairRow]) -> std::collections::BTreeMap<&str, (u64, u64)> {
    let mut unheard: std::collections::BTreeMap<&str, (u64, u64)> = Default::default();
    for p in rows
        .iter()
        .filter_map(|(_, st)| st.as_ref().ok())
        .flat_map(|st| &st.unheard)
    {
        let e = unheard
            .entry(p.node_id.as_str())
            .or_insert((p.unheard_ms, p.lost_in_ms));
        e.0 = e.0.max(p.unheard_ms);
        e.1 = e.1.min(p.lost_in_ms);
    }
    unheard
}

fn node_state_in(rows: &[RepairRow], id: &str) -> String {
    rows.iter()
        .find(|(n, _)| n.id == id)
        .map_or_else(|| "?".to_string(), |(n, _)| state_name(n.state))
}

/// One node's answer to a status call, or why there was none.
type RepairRow = cluster::node_status::NodeAnswer;

async fn repair_rows(s: &ObjectStore) -> Vec<RepairRow> {
    cluster::node_status::gather(s, None).await
}

/// The bucket and key of each damaged chunk's referrers: nodes know only
/// key hashes, the admin (holding the master key) can open the records.
async fn referrer_names(s: &ObjectStore, rows: &[RepairRow]) -> ReferrerNames {
    let mut names = ReferrerNames::new();
    let buckets = s.bucket_names_by_id().await.unwrap_or_default();
    for (_, st) in rows {
        let Some(r) = st.as_ref().ok().and_then(|st| st.repair.as_ref()) else {
            continue;
        };
        for rf in r.damaged.iter().flat_map(|d| &d.referrers) {
            if !names.contains_key(rf) {
                let found = s.referrer_names(rf, &buckets).await;
                names.insert(rf.clone(), found);
            }
        }
    }
    names
}

type ReferrerNames = std::collections::HashMap<metadata::model::Referrer, Option<(String, String)>>;

fn repair_table(rows: &[RepairRow], names: &ReferrerNames) -> String {
    use std::fmt::Write;
    let now = grid::clock::now_ms();
    let ago = |ms: u64| {
        if ms == 0 {
            "never".to_string()
        } else {
            format!("{}s ago", now.saturating_sub(ms) / 1000)
        }
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<12} {:<10} {:<9} {:>14} {:>8} {:>8} {:>7} {:>10} {:>9} {:>12} {:>7} {:>8} {:>7} {:>11} {:>10} {:>8} {:>12} {:>12}",
        "node",
        "site",
        "state",
        "epoch",
        "missing",
        "waiting",
        "at risk",
        "rebuilding",
        "rebuilt",
        "rebuilt data",
        "failed",
        "damaged",
        "paused",
        "handed back",
        "scrubbed",
        "corrupt",
        "reconciled",
        "scrubbed at"
    );
    for (n, st) in rows {
        match st {
            Ok(st) => {
                let r = st.repair.clone().unwrap_or_default();
                // Rebuilds paused for a full store: for how much longer.
                let paused = if r.rebuilds_paused_until_ms > now {
                    format!("{}s", (r.rebuilds_paused_until_ms - now).div_ceil(1000))
                } else {
                    "-".to_string()
                };
                let _ = writeln!(
                    out,
                    "{:<12} {:<10} {:<9} {:>14} {:>8} {:>8} {:>7} {:>10} {:>9} {:>12} {:>7} {:>8} {:>7} {:>11} {:>10} {:>8} {:>12} {:>12}",
                    n.id, n.site, state_name(n.state), st.map_epoch, r.missing, r.waiting, r.at_risk,
                    r.rebuilding, r.rebuilt_shards,
                    units::bytes(r.rebuilt_bytes), r.failed_rebuilds, r.damaged_chunks, paused,
                    r.handed_back, r.scrubbed_shards, r.corrupt_found, ago(r.last_reconcile_ms),
                    ago(r.last_scrub_ms)
                );
            }
            Err(e) => {
                let _ = writeln!(
                    out,
                    "{:<12} {:<10} {:<9} no answer ({e})",
                    n.id,
                    n.site,
                    state_name(n.state)
                );
            }
        }
    }
    // Nodes out of touch: how long, and when their shards stop waiting
    // for them, as the nodes that answered see it (the longest silence
    // any of them reports, and the soonest it would mark the node lost).
    let unheard = unheard_nodes(rows);
    if !unheard.is_empty() {
        let _ = writeln!(
            out,
            "\nout of touch: shards of a down node wait for it (chunks with no spare left \
             are rebuilt at once); once lost, its shards are rebuilt elsewhere"
        );
        for (id, (silent, lost_in)) in unheard {
            let state = node_state_in(rows, id);
            let when = if state == "lost" {
                "rebuilt elsewhere".to_string()
            } else if lost_in == 0 {
                "lost when the others agree".to_string()
            } else {
                format!("lost in {} s", lost_in.div_ceil(1000))
            };
            let _ = writeln!(
                out,
                "{id:<12} {state:<9} unheard for {} s, {when}",
                silent / 1000
            );
        }
    }
    // Which objects lost data: every damaged chunk a node lists, with the
    // object versions (or multipart parts) that refer to it.
    let repairs = rows
        .iter()
        .filter_map(|(n, st)| Some((n, st.as_ref().ok()?.repair.as_ref()?)));
    let mut header = false;
    for (n, r) in repairs {
        if r.damaged_chunks == 0 {
            continue;
        }
        if !header {
            header = true;
            let _ = writeln!(
                out,
                "\ndamaged chunks: fewer good shards exist than a rebuild needs; tried again on \
                 a new cluster map, a repair hint naming them, or after an hour"
            );
        }
        for d in &r.damaged {
            let _ = writeln!(
                out,
                "{} on {}: {} of {} shards found, first found {}",
                hex(&d.chunk_id),
                n.id,
                d.shards_found,
                d.shards_needed,
                ago(d.first_found_ms)
            );
            for rf in &d.referrers {
                let object = match names.get(rf) {
                    Some(Some((bucket, key))) => format!("bucket {bucket} key {key:?}"),
                    _ => format!(
                        "bucket id {} key hash {}",
                        hex(&rf.bucket_id),
                        hex(&rf.key_hash)
                    ),
                };
                let _ = if rf.part_number > 0 {
                    writeln!(
                        out,
                        "    {object} upload {} part {}",
                        hex(&rf.version),
                        rf.part_number
                    )
                } else {
                    writeln!(out, "    {object} version {}", hex(&rf.version))
                };
            }
            let more = d.referrer_count.saturating_sub(d.referrers.len() as u64);
            if more > 0 {
                let _ = writeln!(out, "    and {more} more referrers");
            }
        }
        let unlisted = r.damaged_chunks.saturating_sub(r.damaged.len() as u64);
        if unlisted > 0 {
            let _ = writeln!(out, "{}: {unlisted} more damaged chunks not listed", n.id);
        }
    }
    out
}

/// A progress bar over the shards missing at the start, until none are
/// missing or being rebuilt on any node that answers. Damaged chunks (too
/// few shards to rebuild) are not missing shards: nothing will rebuild
/// them, so the watch ends without them and says how many there are.
async fn watch_repair(s: &ObjectStore, first: &[RepairRow]) {
    let now = grid::clock::now_ms;
    let sum = |rows: &[RepairRow]| {
        rows.iter()
            .filter_map(|(_, st)| st.as_ref().ok()?.repair.clone())
            .fold((0u64, 0u64, 0u64, 0u64, 0u64), |(m, b, r, d, p), x| {
                (
                    m + x.missing,
                    b + x.rebuilding,
                    r + x.rebuilt_shards,
                    d + x.damaged_chunks,
                    p + u64::from(x.rebuilds_paused_until_ms > now()),
                )
            })
    };
    let (missing, _, rebuilt0, _, _) = sum(first);
    let bar = indicatif::ProgressBar::new(missing.max(1));
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} rebuilding [{bar:40}] {pos}/{len} shards, {msg} ({elapsed})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    loop {
        let rows = repair_rows(s).await;
        let (m, b, r, damaged, paused) = sum(&rows);
        let done = r.saturating_sub(rebuilt0);
        bar.set_length((done + m).max(1));
        bar.set_position(done);
        let mut msg = format!("{b} in flight, {m} missing");
        if paused > 0 {
            msg.push_str(&format!(", paused on {paused} nodes (shard store full)"));
        }
        if damaged > 0 {
            msg.push_str(&format!(", {damaged} damaged"));
        }
        bar.set_message(msg);
        if m == 0 && b == 0 {
            if damaged == 0 {
                bar.finish_with_message("full redundancy".to_string());
            } else {
                bar.finish_with_message(format!(
                    "done; {damaged} damaged chunks (per node) cannot be rebuilt: \
                     see gridstore admin repair status"
                ));
            }
            return;
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

pub async fn run(args: AdminArgs) -> ExitCode {
    match admin(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gridstore admin: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `gridstore gateway --config gw.toml`: S3 in front of the nodes in the
/// config's cluster map. Users come from the cluster (create them with
/// `gridstore admin --config gw.toml key create --admin`).
/// `gridstore gateway --config FILE --identity`.
pub fn print_gateway_identity(config: &Path) -> ExitCode {
    match GatewayFile::load(config).and_then(|g| g.identity()) {
        Ok(id) => {
            println!("{}", id.key());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("gridstore gateway: {e}");
            ExitCode::FAILURE
        }
    }
}

pub async fn run_gateway(config: &Path) -> Result<(), AdminError> {
    let g = GatewayFile::load(config)?;
    let map = MapFile::load(&g.cluster_map)?;
    if g.metadata_replicas == 0 {
        return Err(AdminError::Usage(
            "metadata_replicas must be at least 1".into(),
        ));
    }
    let identity = g.identity()?;
    tracing::info!(identity = %identity.key(), "gateway identity");
    let c = connect_parts(
        map,
        identity,
        g.master_key()?,
        g.site.clone(),
        g.metadata_replicas,
    )?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| AdminError::Usage(format!("signal handler: {e}")))?;
    let listener = tokio::net::TcpListener::bind(g.listen)
        .await
        .map_err(|source| AdminError::Listen {
            addr: g.listen,
            source,
        })?;
    // One store for every front end: they share its map (followed from
    // the nodes) and its repair hints.
    let store = c
        .store
        .with_repair_forwarding()
        .following_map(cluster::map_follow::FOLLOW_EVERY);
    let tls = g.tls()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    // WebDAV gets the same limits as S3, on its own slots.
    let admission = gateway::admission::AdmissionConfig {
        max_requests: g.max_requests,
        max_requests_per_key: g.max_requests_per_key,
        body_idle_timeout: Duration::from_secs(g.body_idle_timeout_secs.max(1)),
        body_min_bytes_per_sec: g.body_min_bytes_per_sec,
        ..Default::default()
    };
    // One set of figures for S3, WebDAV and the admin listener.
    let metrics = gateway::metrics::GatewayMetrics::new(store.clone());
    let webdav = gateway::webdav::server::start_measured(
        g.webdav_listen,
        store.clone(),
        tls.clone(),
        admission.clone(),
        metrics.clone(),
    )
    .await
    .map_err(|e| AdminError::Usage(e.to_string()))?;
    let jobs = gateway::jobs::start_tls(g.jobs_listen, store.clone(), tls.clone())
        .await
        .map_err(|e| AdminError::Usage(e.to_string()))?;
    let admin =
        gateway::admin_listener::start(g.admin_listen, store.clone(), metrics.clone(), tls.clone())
            .await
            .map_err(|e| AdminError::Usage(e.to_string()))?;
    let cfg = gateway::server::GatewayConfig {
        region: g.region.clone(),
        admission,
        domain: None,
        metrics: Some(metrics),
    };
    check_metadata_replicas(&store, g.metadata_replicas).await?;
    // The first map: nodes started from their configs hold none until a
    // gateway hands them the one this gateway was configured with. Keep
    // offering it (nodes that were down, or wiped, get it when back); a
    // node holding any map is never touched.
    let seeding = {
        let grid = store.grid();
        let owner = store.owner_key();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(10));
            loop {
                tick.tick().await;
                let seeded = grid::membership::seed(&grid, &owner).await;
                if !seeded.is_empty() {
                    tracing::info!(nodes = ?seeded, epoch = grid.map().epoch, "first cluster map handed to nodes");
                }
            }
        })
    };
    let duties = tokio::spawn(store.clone().run_duties(
        crate::embedded::duty_holder("gateway"),
        cluster::DutyConfig {
            every: Duration::from_secs(g.housekeeping_secs.max(1)),
            orphan_grace: Duration::from_secs(g.orphan_grace_secs),
            upload_max_age: Duration::from_secs(g.upload_max_age_secs),
        },
    ));
    let audits = (g.audit_secs > 0).then(|| {
        tokio::spawn(
            cluster::Auditor::new(store.clone(), g.audit_config())
                .run(crate::embedded::duty_holder("gateway")),
        )
    });
    let service = gateway::server::service(store, &cfg);
    let addr = listener.local_addr().map_err(|source| AdminError::Listen {
        addr: g.listen,
        source,
    })?;
    println!(
        "gridstore gateway ready: S3 on {scheme}://{addr} (region {})",
        g.region
    );
    println!("WebDAV on {scheme}://{}/", webdav.addr);
    println!("jobs on {scheme}://{} (gridstore job ...)", jobs.addr);
    println!(
        "admin on {scheme}://{}/ (status page, /health, /metrics; no credentials)",
        admin.addr
    );
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    gateway::server::serve_tls(listener, tls, service, shutdown).await;
    seeding.abort();
    duties.abort();
    if let Some(a) = audits {
        a.abort();
    }
    webdav.stop().await;
    jobs.stop().await;
    admin.stop().await;
    Ok(())
}

/// A gateway and its nodes must agree on how many copies of each bucket's
/// metadata there are: quorums are computed from it on the gateway, and
/// anti-entropy keeps that many in sync on the nodes. Checked against the
/// nodes that answer at start; a grid with none up is checked by nobody.
async fn check_metadata_replicas(store: &ObjectStore, want: usize) -> Result<(), AdminError> {
    let grid = store.grid();
    for n in &grid.map().nodes {
        let Some(c) = grid.client(&n.id) else {
            continue;
        };
        let Ok(Ok(status)) = tokio::time::timeout(Duration::from_secs(3), c.status()).await else {
            continue;
        };
        let theirs = status.metadata_replicas as usize;
        if theirs != 0 && theirs != want {
            return Err(AdminError::Usage(format!(
                "metadata_replicas is {want} here but {theirs} on node {} ([repair] metadata_replicas in its node.toml): they must agree",
                n.id
            )));
        }
    }
    Ok(())
}
