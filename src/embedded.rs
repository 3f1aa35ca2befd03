//! `gridstore server DIR`: the gateway and a small grid of storage nodes in
//! one process, each node on its own sub-folder of DIR and the nodes spread
//! over sites, so erasure coding, encryption and repair are real from the
//! first minute. Secrets and the root credentials are generated on first
//! start and kept in `DIR/server.toml`; restarting on DIR keeps everything.

use crate::cluster_file::{write_private, FileError, MapClient, MapFile, MapNode};
use cluster::secrets::MasterKey;
use cluster::{ObjectStore, StoreConfig};
use grid::chunk_io::Grid;
use grid::ClientOptions;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use storage_node::config::IoChoice;
use storage_node::daemon::LocalNode;
use storage_node::NodeConfig;

#[derive(Debug, Clone)]
pub struct ServerArgs {
    pub dir: PathBuf,
    pub listen: SocketAddr,
    pub webdav_listen: SocketAddr,
    pub nodes: usize,
    pub sites: usize,
    pub region: String,
    pub reconcile_interval_secs: u64,
    pub scrub_interval_secs: u64,
    pub gc_grace_secs: u64,
    pub gc_interval_secs: u64,
    /// Job API listener.
    pub jobs_listen: SocketAddr,
    /// Admin listener: health, metrics, status page.
    pub admin_listen: SocketAddr,
    /// Programs job tasks may run on the nodes.
    pub job_allow: Vec<String>,
}

/// What `DIR/server.toml` keeps between starts.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerState {
    /// Read from older state files and ignored: node calls are
    /// authenticated by TLS identity, so nothing needs a shared secret.
    /// Never written.
    #[serde(default, skip_serializing)]
    cluster_secret: Option<serde::de::IgnoredAny>,
    pub master_key: String,
    pub access_key: String,
    pub secret_key: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    File(#[from] FileError),
    #[error("storage node {id}: {message}")]
    Node { id: String, message: String },
    #[error("{0}")]
    Store(#[from] cluster::Error),
    #[error("cannot listen for S3 on {addr} (--listen): {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

pub const STATE_FILE: &str = "server.toml";
pub const MAP_FILE: &str = "cluster-map.toml";
/// The gateway's (and `gridstore admin --dir`'s) identity, in DIR.
pub const IDENTITY_DIR: &str = "identity";

impl ServerState {
    /// Load `DIR/server.toml`, or create it with fresh secrets.
    pub fn load_or_create(dir: &Path) -> Result<ServerState, ServerError> {
        let path = dir.join(STATE_FILE);
        if path.exists() {
            let text = std::fs::read_to_string(&path).map_err(|source| FileError::Io {
                path: path.clone(),
                source,
            })?;
            let state: ServerState = toml::from_str(&text).map_err(|e| {
                ServerError::File(FileError::Parse {
                    path,
                    message: e.to_string(),
                })
            })?;
            let retired = state.cluster_secret.map(|_| "cluster_secret (server.toml)");
            storage_node::config::warn_retired(retired.into_iter().collect());
            return Ok(state);
        }
        let state = ServerState {
            cluster_secret: None,
            master_key: MasterKey::generate_text(),
            access_key: cluster::users::new_access_key(),
            secret_key: cluster::users::new_secret_key(),
        };
        let text = toml::to_string(&state).map_err(|e| ServerError::Invalid(e.to_string()))?;
        write_private(&path, &text)?;
        Ok(state)
    }
}

/// The root credentials: `GRIDSTORE_ACCESS_KEY`/`GRIDSTORE_SECRET_KEY`
/// when both are set (as MinIO's root user variables), else DIR's.
fn root_credentials(state: &ServerState) -> (String, String) {
    match (
        std::env::var("GRIDSTORE_ACCESS_KEY"),
        std::env::var("GRIDSTORE_SECRET_KEY"),
    ) {
        (Ok(a), Ok(s)) if !a.is_empty() && !s.is_empty() => (a, s),
        _ => (state.access_key.clone(), state.secret_key.clone()),
    }
}

/// The loopback addresses DIR's nodes had at the last start, by node id:
/// a node's `/metrics` and `/health` are on its RPC port, so keeping the
/// port keeps a Prometheus scrape config valid across restarts. Nothing on
/// a first start or an unreadable map.
fn previous_ports(dir: &Path) -> std::collections::HashMap<String, SocketAddr> {
    let Ok(map) = MapFile::load(&dir.join(MAP_FILE)) else {
        return Default::default();
    };
    map.nodes
        .iter()
        .filter_map(|n| {
            let addr: SocketAddr = n.addr.parse().ok()?;
            addr.ip().is_loopback().then(|| (n.id.clone(), addr))
        })
        .collect()
}

/// The node's previous address if it is still free, else a port the
/// system picks.
fn node_listen(previous: Option<SocketAddr>) -> SocketAddr {
    // Binding is the only reliable test; the probe is closed before the
    // node binds, and a port taken in between fails the start, as any
    // port in use does.
    previous
        .filter(|addr| std::net::TcpListener::bind(addr).is_ok())
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)))
}

/// Run until SIGTERM or SIGINT.
pub async fn run(args: ServerArgs) -> Result<(), ServerError> {
    if args.nodes == 0 || args.sites == 0 || args.sites > args.nodes {
        return Err(ServerError::Invalid(
            "need at least one node per site".into(),
        ));
    }
    // Ports first: one in use is found before anything is written.
    for (what, flag, addr) in [
        ("S3", "--listen", args.listen),
        ("WebDAV", "--webdav-listen", args.webdav_listen),
        ("jobs", "--jobs-listen", args.jobs_listen),
        ("admin pages", "--admin-listen", args.admin_listen),
    ] {
        // As the listeners bind later (SO_REUSEADDR, as tokio does): a
        // port a killed server left in TIME_WAIT is free to use again.
        let probe = match addr {
            std::net::SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
            std::net::SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
        };
        probe
            .and_then(|s| {
                s.set_reuseaddr(true)?;
                s.bind(addr)?;
                s.listen(1)
            })
            .map_err(|e| {
                ServerError::Invalid(format!("cannot listen for {what} on {addr} ({flag}): {e}"))
            })?;
    }
    std::fs::create_dir_all(&args.dir).map_err(|source| FileError::Io {
        path: args.dir.clone(),
        source,
    })?;
    // One server per directory, checked before its nodes touch their
    // folders (a node empties its tmp/ at start). Held until exit.
    let _lock = lock_dir(&args.dir)?;
    let state = ServerState::load_or_create(&args.dir)?;
    // Signals first, so a stop during start-up is not lost.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| ServerError::Invalid(format!("signal handler: {e}")))?;

    let previous = previous_ports(&args.dir);
    let mut nodes = Vec::new();
    let mut entries = Vec::new();
    for i in 0..args.nodes {
        let site = format!("site-{}", i % args.sites);
        let id = format!("node-{i}");
        let cfg = NodeConfig {
            node_id: id.clone(),
            site: site.clone(),
            listen: node_listen(previous.get(&id).copied()),
            data_dir: args.dir.join(&site).join(&id),
            quota_bytes: None,
            reserve_bytes: 256 << 20,
            io: IoChoice::Auto,
            shutdown_grace_secs: 10,
            gc_grace_secs: args.gc_grace_secs,
            gc_interval_secs: args.gc_interval_secs,
            repair: storage_node::config::RepairConfig {
                reconcile_interval_secs: args.reconcile_interval_secs,
                scrub_interval_secs: args.scrub_interval_secs,
                // The nodes live and die with this one process: heartbeats
                // between them could only mistake a busy process for a dead
                // node. Separate `gridstore node` processes run them.
                heartbeat_secs: 0,
                ..storage_node::config::RepairConfig::default()
            },
            jobs: storage_node::config::JobsConfig {
                allowed: args.job_allow.clone(),
                ..storage_node::config::JobsConfig::default()
            },
        };
        let node = LocalNode::start(&cfg)
            .await
            .map_err(|e| ServerError::Node {
                id: id.clone(),
                message: e.to_string(),
            })?;
        entries.push(MapNode {
            id,
            addr: node.addr.to_string(),
            site,
            capacity_bytes: 1 << 40,
            key: node.node.identity.key().to_hex(),
        });
        nodes.push(node);
    }
    let identity = grid::tls::Identity::load_or_create(&args.dir.join(IDENTITY_DIR))
        .map_err(|e| ServerError::Invalid(e.to_string()))?;
    // Ports may change between starts (one taken meanwhile); the epoch
    // only grows.
    let map_file = MapFile {
        epoch: grid::clock::now_ms(),
        nodes: entries,
        clients: vec![MapClient {
            name: "server".into(),
            role: "gateway".into(),
            key: identity.key().to_hex(),
        }],
    };
    map_file.save(&args.dir.join(MAP_FILE))?;
    let master =
        MasterKey::from_text(&state.master_key).map_err(|e| ServerError::Invalid(e.to_string()))?;
    let map = master.owner_key().signed(map_file.to_map());
    let opts = ClientOptions {
        timeout: Duration::from_secs(30),
        identity: Some(identity),
        ..ClientOptions::default()
    };
    for n in &map.nodes {
        let c = grid::NodeClient::new(n.addr.clone(), &n.key, opts.clone());
        if let Err(e) = c.put_map(&map).await {
            tracing::warn!(node = %n.id, error = %e, "could not hand the cluster map to a node");
        }
    }
    let grid = Grid::new(map, opts);
    let store = ObjectStore::new(grid, master, StoreConfig::default())
        .with_repair_forwarding()
        .following_map(cluster::map_follow::FOLLOW_EVERY);
    let (access_key, secret_key) = root_credentials(&state);
    store
        .ensure_user("root", true, &access_key, &secret_key)
        .await?;

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|source| ServerError::Listen {
            addr: args.listen,
            source,
        })?;
    let addr = listener
        .local_addr()
        .map_err(|source| ServerError::Listen {
            addr: args.listen,
            source,
        })?;
    // One set of figures for S3, WebDAV and the admin listener.
    let metrics = gateway::metrics::GatewayMetrics::new(store.clone());
    let cfg = gateway::server::GatewayConfig {
        region: args.region.clone(),
        metrics: Some(metrics.clone()),
        ..Default::default()
    };
    let service = gateway::server::service(store.clone(), &cfg);
    let webdav = gateway::webdav::server::start_measured(
        args.webdav_listen,
        store.clone(),
        None,
        gateway::webdav::server::default_admission(),
        metrics.clone(),
    )
    .await
    .map_err(|e| ServerError::Invalid(e.to_string()))?;
    let jobs = gateway::jobs::start(args.jobs_listen, store.clone())
        .await
        .map_err(|e| ServerError::Invalid(e.to_string()))?;
    let admin = gateway::admin_listener::start(args.admin_listen, store.clone(), metrics, None)
        .await
        .map_err(|e| ServerError::Invalid(e.to_string()))?;
    let housekeeping = tokio::spawn(
        store
            .clone()
            .run_duties(duty_holder("server"), duty_config(&args)),
    );
    let audits = tokio::spawn(
        cluster::Auditor::new(store.clone(), cluster::AuditConfig::default())
            .run(duty_holder("server")),
    );

    println!(
        "gridstore server ready: S3 on http://{addr} (region {})",
        args.region
    );
    println!(
        "WebDAV on http://{}/ (HTTP Basic with the same credentials)",
        webdav.addr
    );
    println!(
        "jobs on http://{} (gridstore job ...; programs allowed: {})",
        jobs.addr,
        if args.job_allow.is_empty() {
            "none".to_string()
        } else {
            args.job_allow.join(", ")
        }
    );
    println!(
        "admin on http://{}/ (status page, /health, /metrics; no credentials)",
        admin.addr
    );
    println!("access key: {access_key}");
    println!("secret key: {secret_key}");
    println!(
        "try: AWS_ACCESS_KEY_ID={access_key} AWS_SECRET_ACCESS_KEY={secret_key} \
         aws --endpoint-url http://{addr} s3 ls"
    );
    println!(
        "data: {} ({} nodes on {} sites)",
        args.dir.display(),
        args.nodes,
        args.sites
    );
    use std::io::Write;
    let _ = std::io::stdout().flush();

    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!("stopping");
    };
    gateway::server::serve(listener, service, shutdown).await;
    webdav.stop().await;
    jobs.stop().await;
    admin.stop().await;
    housekeeping.abort();
    audits.abort();
    for n in nodes {
        n.stop().await;
    }
    Ok(())
}

/// This process's name in the housekeeping lease: unique per start, so a
/// restarted gateway never mistakes its predecessor's lease for its own.
pub fn duty_holder(kind: &str) -> String {
    format!("{kind}-{:016x}", rand::random::<u64>())
}

/// The gateway's housekeeping: a reference no record names waits as long
/// before it goes as a shard no reference names does on the nodes.
fn duty_config(args: &ServerArgs) -> cluster::DutyConfig {
    let default = cluster::DutyConfig::default();
    cluster::DutyConfig {
        orphan_grace: std::time::Duration::from_secs(args.gc_grace_secs),
        every: match args.gc_interval_secs {
            0 => default.every,
            s => std::time::Duration::from_secs(s),
        },
        ..default
    }
}

/// Take `DIR/server.lock` for this process (released when the process
/// ends, however it ends).
fn lock_dir(dir: &std::path::Path) -> Result<std::fs::File, ServerError> {
    let path = dir.join("server.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| FileError::Io {
            path: path.clone(),
            source,
        })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(ServerError::Invalid(format!(
            "{} is in use by another gridstore server",
            dir.display()
        ))),
        Err(std::fs::TryLockError::Error(source)) => Err(FileError::Io { path, source }.into()),
    }
}
