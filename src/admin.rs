//! `gridstore admin …` (users, keys, buckets, node status) and `gridstore
//! gateway`: both connect to a grid named by a cluster map, either a
//! `gridstore server` DIR or a gateway config file.

use crate::cluster_file::{FileError, GatewayFile, MapFile};
use crate::embedded::{ServerState, MAP_FILE, STATE_FILE};
use clap::{Args, Subcommand};
use cluster::secrets::MasterKey;
use cluster::{ErasureSpec, ObjectStore, StoreConfig};
use grid::chunk_io::Grid;
use grid::tls::{Identity, IdentityKey};
use grid::ClientOptions;
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

#[derive(Subcommand)]
enum AdminCommand {
    /// Access keys.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Buckets.
    #[command(subcommand)]
    Bucket(BucketCommand),
    /// Every node's state: capacity, use, shard count. Exits non-zero if
    /// any node does not answer.
    Status,
    /// Self-healing.
    #[command(subcommand)]
    Repair(RepairCommand),
    /// Run one storage audit round now: challenge every up node to prove
    /// random slices of shards it should hold, print per-node results, and
    /// mark nodes past the failure threshold untrusted.
    Audit,
    /// Grid membership: add, drain and remove nodes; pin their identities
    /// and those of the gateways the nodes accept.
    #[command(subcommand)]
    Node(NodeCommand),
}

#[derive(Subcommand)]
enum NodeCommand {
    /// The cluster map the nodes hold: every node and its state.
    List,
    /// Hand the configured map (the gateway config's `cluster_map`, or the
    /// server directory's) to every node that holds none yet: a new grid's
    /// first map. Nodes holding a map are left alone. `gridstore gateway`
    /// does this by itself at start and every few seconds.
    Seed,
    /// Add a node (already running, its identity key known); placement
    /// starts using it at once and the others move it its share.
    Add {
        /// Its `node_id`.
        id: String,
        /// Its RPC address, host:port.
        #[arg(long)]
        addr: String,
        #[arg(long)]
        site: String,
        /// Its identity key, hex (`gridstore node --config FILE --identity`
        /// on its machine).
        #[arg(long)]
        key: String,
        /// Placement weight.
        #[arg(long, default_value_t = 1024)]
        capacity_gib: u64,
    },
    /// Stop placing data on a node; its shards move to the others in the
    /// background (follow with `admin repair status`).
    Drain { id: String },
    /// Let a gateway or admin tool connect to the nodes, by its identity
    /// key (`gridstore gateway --config FILE --identity`).
    Trust {
        key: String,
        /// For people: which one it is.
        #[arg(long, default_value = "")]
        name: String,
        #[arg(long, default_value = "gateway", value_parser = ["gateway", "admin"])]
        role: String,
    },
    /// Stop letting the client with this identity key connect.
    Distrust { key: String },
    /// Pin a node's new identity after its data directory (and so its
    /// identity) was lost: nodes and gateways refuse it until then.
    Rekey {
        id: String,
        /// `gridstore node --config FILE --identity` on its machine.
        #[arg(long)]
        key: String,
    },
    /// Take a drained node (no shards left) out of the grid for good.
    Remove {
        id: String,
        /// Even if it still holds shards or does not answer (a dead disk:
        /// repair rebuilds its shards elsewhere).
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand)]
enum RepairCommand {
    /// Per node: shards missing, being rebuilt and rebuilt, scrub figures.
    Status {
        /// Follow a running rebuild with a progress bar until nothing is
        /// missing.
        #[arg(long)]
        watch: bool,
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
    List,
    Delete {
        access_key: String,
    },
}

#[derive(Subcommand)]
enum BucketCommand {
    List,
    Create {
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
        name: String,
    },
    /// Allow (or stop) anonymous reads.
    Public {
        name: String,
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
        AdminCommand::Key(KeyCommand::List) => {
            for u in s.list_users().await? {
                println!(
                    "{}\t{}\t{}",
                    u.access_key,
                    if u.admin { "admin" } else { "user" },
                    u.name
                );
            }
        }
        AdminCommand::Key(KeyCommand::Delete { access_key }) => {
            if !s.delete_user(&access_key).await? {
                return Err(AdminError::Usage(format!("no access key {access_key}")));
            }
        }
        AdminCommand::Bucket(BucketCommand::List) => {
            for b in s.list_buckets().await? {
                println!(
                    "{}\towner {}\t{}+{}\t{:?}{}",
                    b.name,
                    b.owner,
                    b.erasure.data,
                    b.erasure.parity,
                    b.versioning,
                    if b.public { "\tpublic" } else { "" }
                );
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
        AdminCommand::Status => {
            let grid = s.grid();
            let total = grid.map().nodes.len();
            let mut down = 0;
            for n in &grid.map().nodes {
                let Some(client) = grid.client(&n.id) else {
                    down += 1;
                    println!("{}\t{}\t{}\tDOWN (no client)", n.id, n.site, n.addr);
                    continue;
                };
                match client.status().await {
                    Ok(st) => println!(
                        "{}\t{}\t{}\tup\t{} shards\t{} MiB used\t{} MiB available",
                        n.id,
                        n.site,
                        n.addr,
                        st.shard_count,
                        st.used_bytes >> 20,
                        st.available_bytes >> 20
                    ),
                    Err(e) => {
                        down += 1;
                        println!("{}\t{}\t{}\tDOWN ({e})", n.id, n.site, n.addr);
                    }
                }
            }
            // Scripts and monitors read the exit status: any node that
            // does not answer (down, or refusing our identity) fails it.
            if down > 0 {
                return Err(AdminError::NodesDown { down, total });
            }
        }
        AdminCommand::Node(cmd) => node_command(s, cmd).await?,
        AdminCommand::Audit => {
            let cfg = match &args.config {
                Some(config) => GatewayFile::load(config)?.audit_config(),
                None => cluster::AuditConfig::default(),
            };
            let report = cluster::Auditor::new(s.clone(), cfg).audit_once().await;
            print!("{}", audit_table(&report));
            if report
                .nodes
                .iter()
                .any(|n| n.failed > 0 || n.rechecking > 0)
            {
                return Err(AdminError::Usage(
                    "some nodes failed their audit or lack shards they should hold".into(),
                ));
            }
        }
        AdminCommand::Repair(RepairCommand::Status { watch }) => {
            let rows = repair_rows(s).await;
            let names = referrer_names(s, &rows).await;
            print!("{}", repair_table(&rows, &names));
            if let Ok(map) = grid::membership::current_map(&s.grid(), &s.owner_key()).await {
                print!("{}", untrusted_table(&map));
            }
            if watch {
                watch_repair(s, &rows).await;
            }
        }
    }
    Ok(())
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
            return Ok(());
        }
        NodeCommand::List => {
            let map = current_map(&grid, &s.owner_key()).await?;
            println!("epoch {}", map.epoch);
            for n in &map.nodes {
                let state = state_name(n.state);
                println!(
                    "{}\t{}\t{}\t{}\t{} GiB",
                    n.id,
                    n.site,
                    n.addr,
                    state,
                    n.capacity_bytes >> 30
                );
            }
            for c in &map.clients {
                let role = metadata::model::ClientRole::try_from(c.role)
                    .map_or_else(|_| c.role.to_string(), |r| format!("{r:?}").to_lowercase());
                let key = IdentityKey::from_bytes(&c.key)
                    .map_or_else(|| "(bad key)".to_string(), |k| k.to_hex());
                println!("client\t{}\t{role}\t{key}", c.name);
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

fn audit_table(r: &cluster::AuditReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out, "audit against map epoch {}", r.epoch);
    let _ = writeln!(
        out,
        "{:<12} {:>7} {:>7} {:>8} {:>10} {:>7}  result",
        "node", "passed", "failed", "skipped", "rechecking", "recent"
    );
    for n in &r.nodes {
        let result = if n.untrusted {
            "UNTRUSTED now"
        } else if n.failed > 0 {
            "FAILED"
        } else if n.rechecking > 0 {
            "lacks shards: told to repair, asked again later"
        } else if n.passed == 0 {
            "nothing to challenge"
        } else {
            "ok"
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

/// A node state as the map names it, in lower case.
fn state_name(state: i32) -> String {
    metadata::model::NodeState::try_from(state)
        .map_or_else(|_| state.to_string(), |s| format!("{s:?}").to_lowercase())
}

/// One node's answer to a status call, or why there was none.
type RepairRow = (
    metadata::model::Node,
    Result<grid::node_api::NodeStatus, String>,
);

async fn repair_rows(s: &ObjectStore) -> Vec<RepairRow> {
    let mut rows = Vec::new();
    let grid = s.grid();
    for n in &grid.map().nodes {
        let st = match grid.client(&n.id) {
            Some(c) => c.status().await.map_err(|e| e.to_string()),
            None => Err("no client".into()),
        };
        rows.push((n.clone(), st));
    }
    rows
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
    // The root crate has no hex dependency; ids are short.
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<12} {:<10} {:<9} {:>14} {:>8} {:>8} {:>7} {:>10} {:>9} {:>11} {:>7} {:>8} {:>7} {:>11} {:>10} {:>8} {:>12} {:>12}",
        "node",
        "site",
        "state",
        "epoch",
        "missing",
        "waiting",
        "at risk",
        "rebuilding",
        "rebuilt",
        "rebuilt MiB",
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
                    "{:<12} {:<10} {:<9} {:>14} {:>8} {:>8} {:>7} {:>10} {:>9} {:>11} {:>7} {:>8} {:>7} {:>11} {:>10} {:>8} {:>12} {:>12}",
                    n.id, n.site, state_name(n.state), st.map_epoch, r.missing, r.waiting, r.at_risk,
                    r.rebuilding, r.rebuilt_shards,
                    r.rebuilt_bytes >> 20, r.failed_rebuilds, r.damaged_chunks, paused,
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
    if !unheard.is_empty() {
        let _ = writeln!(
            out,
            "\nout of touch: shards of a down node wait for it (chunks with no spare left \
             are rebuilt at once); once lost, its shards are rebuilt elsewhere"
        );
        for (id, (silent, lost_in)) in unheard {
            let state = rows
                .iter()
                .find(|(n, _)| n.id == id)
                .map_or_else(|| "?".to_string(), |(n, _)| state_name(n.state));
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
    let webdav = gateway::webdav::server::start_with(
        g.webdav_listen,
        store.clone(),
        tls.clone(),
        admission.clone(),
    )
    .await
    .map_err(|e| AdminError::Usage(e.to_string()))?;
    let jobs = gateway::jobs::start_tls(g.jobs_listen, store.clone(), tls.clone())
        .await
        .map_err(|e| AdminError::Usage(e.to_string()))?;
    let cfg = gateway::server::GatewayConfig {
        region: g.region.clone(),
        admission,
        domain: None,
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
