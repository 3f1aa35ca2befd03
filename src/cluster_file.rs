//! Files the binary reads and writes: the cluster map as TOML (what a
//! gateway or admin command connects to) and the gateway's config.

use cluster::secrets::MasterKey;
use grid::tls::{Identity, IdentityKey};
use metadata::model::{ClientIdentity, ClientRole, ClusterMap, Node, NodeState};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{0}")]
    Invalid(String),
}

fn read(path: &Path) -> Result<String, FileError> {
    std::fs::read_to_string(path).map_err(|source| FileError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Write `text` to `path` readable by its owner only (it may hold
/// secrets), atomically.
pub fn write_private(path: &Path, text: &str) -> Result<(), FileError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| FileError::Io {
        path: path.to_owned(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(text.as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MapNode {
    pub id: String,
    pub addr: String,
    pub site: String,
    #[serde(default = "default_capacity")]
    pub capacity_bytes: u64,
    /// Its identity key, hex (`gridstore node --config FILE --identity`).
    pub key: String,
}

/// A gateway or admin tool the nodes accept.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MapClient {
    /// For people: which one this is.
    #[serde(default)]
    pub name: String,
    /// `gateway` or `admin`.
    #[serde(default = "default_role")]
    pub role: String,
    /// Its identity key, hex (`gridstore gateway --config FILE --identity`).
    pub key: String,
}

fn default_role() -> String {
    "gateway".into()
}

fn default_capacity() -> u64 {
    1 << 40
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MapFile {
    pub epoch: u64,
    pub nodes: Vec<MapNode>,
    #[serde(default)]
    pub clients: Vec<MapClient>,
}

impl MapFile {
    /// Read a map file; every node and client must have a well-formed key.
    pub fn load(path: &Path) -> Result<MapFile, FileError> {
        let f: MapFile = toml::from_str(&read(path)?).map_err(|e| FileError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        let bad = |what: String, e: grid::tls::IdentityError| FileError::Parse {
            path: path.to_owned(),
            message: format!("{what}: {e}"),
        };
        for n in &f.nodes {
            IdentityKey::from_hex(&n.key).map_err(|e| bad(format!("node {:?}", n.id), e))?;
        }
        for c in &f.clients {
            IdentityKey::from_hex(&c.key).map_err(|e| bad(format!("client {:?}", c.name), e))?;
            parse_role(&c.role).map_err(|m| FileError::Parse {
                path: path.to_owned(),
                message: m,
            })?;
        }
        Ok(f)
    }

    /// Whether the nodes of this map accept `identity` as a client.
    pub fn lists_client(&self, identity: &Identity) -> bool {
        let key = identity.key();
        self.clients
            .iter()
            .any(|c| IdentityKey::from_hex(&c.key).is_ok_and(|k| k == key))
    }

    pub fn save(&self, path: &Path) -> Result<(), FileError> {
        let text = toml::to_string(self).map_err(|e| FileError::Invalid(e.to_string()))?;
        write_private(path, &text)
    }

    pub fn to_map(&self) -> ClusterMap {
        ClusterMap {
            epoch: self.epoch,
            nodes: self
                .nodes
                .iter()
                .map(|n| Node {
                    id: n.id.clone(),
                    addr: n.addr.clone(),
                    site: n.site.clone(),
                    capacity_bytes: n.capacity_bytes,
                    state: NodeState::Up as i32,
                    // Checked by `load`; a bad one leaves the node unpinned,
                    // and calls to it fail saying so.
                    key: key_bytes(&n.key),
                    untrusted_reason: String::new(),
                })
                .collect(),
            clients: self
                .clients
                .iter()
                .map(|c| ClientIdentity {
                    name: c.name.clone(),
                    key: key_bytes(&c.key),
                    role: parse_role(&c.role).unwrap_or(ClientRole::Gateway) as i32,
                })
                .collect(),
            // Signed by whoever hands it to nodes (they hold the master key).
            ..ClusterMap::default()
        }
    }
}

fn key_bytes(hex: &str) -> Vec<u8> {
    IdentityKey::from_hex(hex).map_or_else(|_| Vec::new(), |k| k.0.to_vec())
}

fn parse_role(role: &str) -> Result<ClientRole, String> {
    match role {
        "gateway" => Ok(ClientRole::Gateway),
        "admin" => Ok(ClientRole::Admin),
        other => Err(format!(
            "client role must be gateway or admin, not {other:?}"
        )),
    }
}

/// `gridstore gateway --config gw.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayFile {
    /// S3 listener.
    #[serde(default = "default_listen")]
    pub listen: std::net::SocketAddr,
    #[serde(default = "default_region")]
    pub region: String,
    /// WebDAV listener.
    #[serde(default = "default_webdav_listen")]
    pub webdav_listen: std::net::SocketAddr,
    /// Job API listener (`gridstore job ...`).
    #[serde(default = "default_jobs_listen")]
    pub jobs_listen: std::net::SocketAddr,
    /// Admin listener: `/health`, `/metrics`, the status page. No
    /// credentials: keep it on loopback or behind a firewall.
    #[serde(default = "default_admin_listen")]
    pub admin_listen: std::net::SocketAddr,
    /// The cluster map (TOML, as `gridstore server` writes it).
    pub cluster_map: PathBuf,
    /// Where the gateway keeps its TLS identity (made on first start);
    /// default `identity/` beside this file. `gridstore admin --config`
    /// uses the same one.
    pub identity_dir: Option<PathBuf>,
    /// TLS for the S3, WebDAV and job listeners: a PEM certificate chain
    /// and its PEM private key, both or neither. Without them the
    /// listeners are plain HTTP (loopback, or behind a TLS proxy).
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Read from older configs and ignored (see
    /// `storage_node::config::RETIRED_KEYS`): node calls are authenticated
    /// by the gateway's TLS identity.
    #[serde(default)]
    cluster_secret: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    cluster_secret_file: Option<serde::de::IgnoredAny>,
    /// Master key (64 hex digits or a passphrase of 32+ characters); or
    /// `master_key_file`; or env `GRIDSTORE_MASTER_KEY`.
    pub master_key: Option<String>,
    pub master_key_file: Option<PathBuf>,
    /// The gateway's site (reads prefer shards held there).
    pub site: Option<String>,
    #[serde(default = "default_max_requests")]
    pub max_requests: usize,
    /// Requests in progress for one access key (default: half of
    /// `max_requests`), so one key cannot lock the others out.
    pub max_requests_per_key: Option<usize>,
    /// A request body that sends nothing for this long is cut off.
    #[serde(default = "default_body_idle_timeout_secs")]
    pub body_idle_timeout_secs: u64,
    /// After its first 10 s, a request body must average at least this.
    #[serde(default = "default_body_min_bytes_per_sec")]
    pub body_min_bytes_per_sec: u64,
    /// Copies of each bucket's metadata; the nodes' `[repair]
    /// metadata_replicas` must say the same (anti-entropy syncs that many).
    #[serde(default = "default_metadata_replicas")]
    pub metadata_replicas: usize,
    /// Seconds between housekeeping rounds (orphaned references, stale
    /// uploads); one gateway of the grid does each round.
    #[serde(default = "default_housekeeping_secs")]
    pub housekeeping_secs: u64,
    /// A chunk reference a crashed write left behind is removed once this
    /// old.
    #[serde(default = "default_orphan_grace_secs")]
    pub orphan_grace_secs: u64,
    /// An unfinished multipart upload is aborted once this old.
    #[serde(default = "default_upload_max_age_secs")]
    pub upload_max_age_secs: u64,
    /// Seconds between storage audit rounds (0: no audits); one gateway of
    /// the grid audits at a time.
    #[serde(default = "default_audit_secs")]
    pub audit_secs: u64,
    /// Shards each node is challenged to prove per round.
    #[serde(default = "default_audit_samples_per_node")]
    pub audit_samples_per_node: usize,
    /// Failed challenges within a node's last six rounds that make it
    /// untrusted.
    #[serde(default = "default_audit_fail_threshold")]
    pub audit_fail_threshold: u32,
    /// Chunks younger than this, and shards whose home moved more recently,
    /// are not challenged (they may still be on their way).
    #[serde(default = "default_audit_settle_secs")]
    pub audit_settle_secs: u64,
}

fn default_audit_secs() -> u64 {
    600
}

fn default_audit_samples_per_node() -> usize {
    8
}

fn default_audit_fail_threshold() -> u32 {
    3
}

fn default_audit_settle_secs() -> u64 {
    3600
}

fn default_body_idle_timeout_secs() -> u64 {
    30
}

fn default_body_min_bytes_per_sec() -> u64 {
    1024
}

fn default_metadata_replicas() -> usize {
    3
}

fn default_housekeeping_secs() -> u64 {
    3600
}

fn default_orphan_grace_secs() -> u64 {
    86_400
}

fn default_upload_max_age_secs() -> u64 {
    7 * 86_400
}

fn default_listen() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], 9000))
}

fn default_webdav_listen() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], 9001))
}

fn default_jobs_listen() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], 9002))
}

fn default_admin_listen() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], 9003))
}

fn default_region() -> String {
    "us-east-1".into()
}

fn default_max_requests() -> usize {
    256
}

impl GatewayFile {
    /// The storage audit settings.
    pub fn audit_config(&self) -> cluster::AuditConfig {
        cluster::AuditConfig {
            every: std::time::Duration::from_secs(self.audit_secs.max(1)),
            samples_per_node: self.audit_samples_per_node,
            fail_threshold: self.audit_fail_threshold.max(1),
            settle: std::time::Duration::from_secs(self.audit_settle_secs),
            ..cluster::AuditConfig::default()
        }
    }

    pub fn load(path: &Path) -> Result<GatewayFile, FileError> {
        let mut g: GatewayFile = toml::from_str(&read(path)?).map_err(|e| FileError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        // Relative paths are relative to the config file.
        let base = path.parent().unwrap_or(Path::new("."));
        for p in [
            Some(&mut g.cluster_map),
            g.master_key_file.as_mut(),
            g.identity_dir.as_mut(),
            g.tls_cert.as_mut(),
            g.tls_key.as_mut(),
        ]
        .into_iter()
        .flatten()
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        if g.identity_dir.is_none() {
            g.identity_dir = Some(base.join("identity"));
        }
        let retired = [
            g.cluster_secret.map(|_| "cluster_secret"),
            g.cluster_secret_file.map(|_| "cluster_secret_file"),
        ];
        storage_node::config::warn_retired(retired.into_iter().flatten().collect());
        Ok(g)
    }

    /// The front ends' TLS, if configured.
    pub fn tls(&self) -> Result<Option<gateway::tls::Acceptor>, FileError> {
        match (&self.tls_cert, &self.tls_key) {
            (None, None) => Ok(None),
            (Some(cert), Some(key)) => gateway::tls::acceptor(cert, key)
                .map(Some)
                .map_err(|e| FileError::Invalid(e.to_string())),
            _ => Err(FileError::Invalid(
                "tls_cert and tls_key go together: set both or neither".into(),
            )),
        }
    }

    /// The gateway's identity, made on first use.
    pub fn identity(&self) -> Result<Identity, FileError> {
        let dir = self
            .identity_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("identity"));
        Identity::load_or_create(&dir).map_err(|e| FileError::Invalid(e.to_string()))
    }

    pub fn master_key(&self) -> Result<MasterKey, FileError> {
        let text = match (&self.master_key, &self.master_key_file) {
            (Some(s), _) => s.clone(),
            (None, Some(f)) => read(f)?,
            (None, None) => {
                return MasterKey::from_env().map_err(|e| FileError::Invalid(e.to_string()))
            }
        };
        MasterKey::from_text(&text).map_err(|e| FileError::Invalid(e.to_string()))
    }
}
