//! `node.toml`: what one storage node needs to run.
//!
//! ```toml
//! node_id = "farm-a-1"            # stable; refused if the data dir belongs to another id
//! site = "farm-a"                 # failure domain
//! listen = "0.0.0.0:7070"
//! data_dir = "/var/lib/gridstore/node"
//! quota_bytes = 500_000_000_000   # optional; default: the disk decides
//! reserve_bytes = 268_435_456     # free space always left on the filesystem
//! io = "auto"                     # "auto", "io_uring" or "threads"
//! shutdown_grace_secs = 30
//! gc_grace_secs = 86400           # how long shards without a chunk reference are kept
//! gc_interval_secs = 3600         # time between garbage collection passes; 0: none
//!
//! [repair]                        # self-healing; every key optional
//! reconcile_interval_secs = 300   # time between reconciliation passes; 0: none
//! scrub_interval_secs = 604800    # time between full scrub passes; 0: none
//! scrub_bytes_per_sec = 33554432  # scrub read budget; 0: unlimited
//! concurrency = 8                 # rebuilds at once (each holds ~2n shards in memory)
//! bytes_per_sec = 0               # rebuild fetch budget; 0: unlimited
//! site_bytes_per_sec = 0          # repair budget of this site's link, shared by its nodes
//! heartbeat_secs = 5              # time between heartbeats; 0: no liveness
//! down_after_secs = 25            # unreachable this long: marked down (shards wait)
//! lost_after_secs = 1200          # unreachable this long: marked lost (shards rebuilt);
//!                                 # halved per other site with nodes out
//! anti_entropy_interval_secs = 600 # metadata replica comparison; 0: none
//! metadata_replicas = 3           # must equal the gateways' metadata_replicas
//!
//! [jobs]                          # the job runner; every key optional
//! allowed = ["python3"]           # programs tasks may run; empty (default): none
//! path = "/usr/local/bin:/usr/bin:/bin"   # where those are found; the tasks' PATH
//! concurrency = 2                 # tasks at once
//! max_timeout_secs = 3600         # caps on what a task may ask for
//! max_cpu_secs = 3600
//! max_memory_mb = 2048
//! max_output_bytes = 1073741824
//! run_as_uid = 65534              # tasks' user when the node runs as root
//! run_as_gid = 65534
//! ```

use crate::file_io::IoBackend;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Settings of the shared cluster secret that once keyed a MAC on every
/// node call. Callers are now authenticated by their TLS identity alone,
/// and a secret every farm holds is what the trust model forbids; configs
/// that still carry them keep working (see [`warn_retired`]).
pub const RETIRED_KEYS: [&str; 2] = ["cluster_secret", "cluster_secret_file"];
/// The environment variable that carried the same secret.
pub const RETIRED_ENV: &str = "GRIDSTORE_CLUSTER_SECRET";

/// One warning naming the retired settings a process was given (`found`,
/// plus [`RETIRED_ENV`] if set), if any, so operators can drop them.
pub fn warn_retired(mut found: Vec<&'static str>) {
    if std::env::var_os(RETIRED_ENV).is_some() {
        found.push(RETIRED_ENV);
    }
    if !found.is_empty() {
        tracing::warn!(
            settings = %found.join(", "),
            "the cluster secret is no longer used (node calls are authenticated by TLS \
             identity): these settings are ignored and can be removed"
        );
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid config: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum IoChoice {
    #[default]
    Auto,
    IoUring,
    Threads,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    pub node_id: String,
    #[serde(default = "default_site")]
    pub site: String,
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    #[serde(default)]
    pub quota_bytes: Option<u64>,
    #[serde(default = "default_reserve")]
    pub reserve_bytes: u64,
    #[serde(default)]
    pub io: IoChoice,
    #[serde(default = "default_grace")]
    pub shutdown_grace_secs: u64,
    /// Shards of a chunk this node holds no reference for are deleted once
    /// they have been unreferenced this long. It must outlast any write,
    /// repair or read in flight: a shard may arrive before its reference
    /// does, and a reader may still fetch a chunk just dereferenced.
    #[serde(default = "default_gc_grace")]
    pub gc_grace_secs: u64,
    /// Time between garbage collection passes (the first one interval after
    /// start); 0 runs none.
    #[serde(default = "default_gc_interval")]
    pub gc_interval_secs: u64,
    /// Self-healing: reconciliation, scrubbing and liveness.
    #[serde(default)]
    pub repair: RepairConfig,
    /// The job runner: allowed programs and limits.
    #[serde(default)]
    pub jobs: JobsConfig,
}

/// `[repair]` in `node.toml`: how often and how hard the node heals.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RepairConfig {
    /// Time between reconciliation passes (a hint from a reader or the
    /// scrubber starts one at once); 0 runs none.
    pub reconcile_interval_secs: u64,
    /// Time between the starts of full scrub passes; 0 runs none.
    pub scrub_interval_secs: u64,
    /// Bytes per second the scrubber may read; 0: no limit.
    pub scrub_bytes_per_sec: u64,
    /// Rebuilds in flight at once.
    pub concurrency: usize,
    /// Shard bytes per second fetched for rebuilds; 0: no limit.
    pub bytes_per_sec: u64,
    /// Shard bytes per second repair may move across this node's site
    /// link (fetches from and hand-backs to other sites), shared equally
    /// by the site's serving nodes; 0: no limit. Set it the same on every
    /// node of a site.
    pub site_bytes_per_sec: u64,
    /// Time between heartbeats to every peer; 0 turns liveness off.
    pub heartbeat_secs: u64,
    /// A peer unreachable this long is marked down in a new map epoch:
    /// reads and writes route around it, its shards wait.
    pub down_after_secs: u64,
    /// A peer unreachable this long (halved for every other site with a
    /// node out, never below `down_after_secs`) is marked lost: its shards
    /// are rebuilt elsewhere. Chunks down to their last spare are rebuilt
    /// without waiting for it.
    pub lost_after_secs: u64,
    /// Time between metadata anti-entropy passes; 0 runs none.
    pub anti_entropy_interval_secs: u64,
    /// Copies of each bucket's metadata: the gateways' setting, which
    /// decides which nodes are replicas of what.
    pub metadata_replicas: usize,
}

impl Default for RepairConfig {
    fn default() -> Self {
        Self {
            reconcile_interval_secs: 300,
            scrub_interval_secs: 7 * 86_400,
            scrub_bytes_per_sec: 32 << 20,
            concurrency: 8,
            bytes_per_sec: 0,
            site_bytes_per_sec: 0,
            heartbeat_secs: 5,
            down_after_secs: 25,
            lost_after_secs: 1200,
            anti_entropy_interval_secs: 600,
            metadata_replicas: 3,
        }
    }
}

impl RepairConfig {
    /// Nothing runs by itself: for tests that drive passes by hand.
    pub fn manual() -> Self {
        Self {
            reconcile_interval_secs: 0,
            scrub_interval_secs: 0,
            heartbeat_secs: 0,
            anti_entropy_interval_secs: 0,
            ..Self::default()
        }
    }
}

fn default_site() -> String {
    "default".into()
}
fn default_reserve() -> u64 {
    256 << 20
}
fn default_grace() -> u64 {
    30
}
fn default_gc_grace() -> u64 {
    86_400
}
fn default_gc_interval() -> u64 {
    3_600
}

impl NodeConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        let parse = |message: String| ConfigError::Parse {
            path: path.into(),
            message,
        };
        let (cfg, retired) = Self::parse(&text).map_err(parse)?;
        cfg.validate()?;
        warn_retired(retired);
        Ok(cfg)
    }

    /// Parse `node.toml`, accepting and setting aside [`RETIRED_KEYS`]
    /// (returned) while still refusing every other unknown key.
    pub fn parse(text: &str) -> Result<(NodeConfig, Vec<&'static str>), String> {
        let mut table: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
        let retired: Vec<&'static str> = RETIRED_KEYS
            .into_iter()
            .filter(|k| table.remove(*k).is_some())
            .collect();
        // The original text when it can be used: its errors point at the
        // lines the operator wrote.
        let rest;
        let text = if retired.is_empty() {
            text
        } else {
            rest = toml::to_string(&table).map_err(|e| e.to_string())?;
            &rest
        };
        let cfg = toml::from_str(text).map_err(|e| e.to_string())?;
        Ok((cfg, retired))
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let id_ok = !self.node_id.is_empty()
            && self.node_id.len() <= 64
            && self
                .node_id
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(&c));
        if !id_ok {
            return Err(ConfigError::Invalid(
                "node_id: 1-64 characters of A-Z a-z 0-9 - _ .".into(),
            ));
        }
        if self.site.is_empty() {
            return Err(ConfigError::Invalid("site must not be empty".into()));
        }
        Ok(())
    }

    pub fn io_backend(&self) -> Option<IoBackend> {
        match self.io {
            IoChoice::Auto => None,
            IoChoice::IoUring => Some(IoBackend::Uring),
            IoChoice::Threads => Some(IoBackend::Threads),
        }
    }
}

/// `[jobs]` in node.toml.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JobsConfig {
    /// Programs a task may run (its argv[0]): names looked up on `path`,
    /// or absolute paths. Empty: this node runs no tasks.
    pub allowed: Vec<String>,
    /// Also run a program shipped with the job as one of its files (a
    /// static binary: a Go or Rust program), named `./FILE` as argv[0],
    /// under the same sandbox and limits as the interpreters.
    pub allow_shipped_binaries: bool,
    /// Where names in `allowed` are looked up, and the tasks' PATH.
    pub path: String,
    /// Tasks running at once; more wait.
    pub concurrency: usize,
    /// Caps on what a task may ask for.
    pub max_timeout_secs: u64,
    pub max_cpu_secs: u64,
    pub max_memory_mb: u64,
    /// A task writing more to stdout (or to one file) is killed.
    pub max_output_bytes: u64,
    /// Parent of the tasks' temporary directories (default: the system
    /// temp dir's `gridstore-jobs/<node id>`).
    pub work_dir: Option<PathBuf>,
    /// The unprivileged user and group tasks run as when the node runs
    /// as root.
    pub run_as_uid: u32,
    pub run_as_gid: u32,
}

impl Default for JobsConfig {
    fn default() -> Self {
        Self {
            allowed: Vec::new(),
            allow_shipped_binaries: false,
            path: "/usr/local/bin:/usr/bin:/bin".into(),
            concurrency: 2,
            max_timeout_secs: 3600,
            max_cpu_secs: 3600,
            max_memory_mb: 2048,
            max_output_bytes: 1 << 30,
            work_dir: None,
            run_as_uid: 65534,
            run_as_gid: 65534,
        }
    }
}
