//! One storage node's state: its shard store, its metadata tables, its
//! identity and who it admits, the verifier of RPC signatures and its
//! metrics.

use crate::config::{ConfigError, NodeConfig};
use crate::metrics::Metrics;
use crate::shard_store::{ShardStore, ShardStoreConfig, StoreError};
use crate::IoBackend;
use grid::tls::{ClientPolicy, Identity, IdentityError, IdentityKey};
use metadata::db::{Db, DbError, Table};
use metadata::model::ClusterMap;
use metadata::Record;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Instant;

/// System-table keys.
const NODE_ID_KEY: &[u8] = b"node_id";
pub(crate) const MAP_KEY: &[u8] = b"cluster_map";
/// The map this node held before the current one.
const PREV_MAP_KEY: &[u8] = b"cluster_map_previous";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("shard store: {0}")]
    Store(#[from] StoreError),
    #[error("metadata store: {0}")]
    Db(#[from] DbError),
    #[error("{0}")]
    Refused(String),
    /// Not signed by whom it must be (a cluster map).
    #[error("{0}")]
    Unauthorised(String),
    /// Shards that would not rebuild (too few good ones, mismatched).
    #[error("codec: {0}")]
    Codec(#[from] codec::CodecError),
    #[error("identity: {0}")]
    Identity(#[from] IdentityError),
}

/// Where a node keeps its identity, inside its data directory.
pub const IDENTITY_DIR: &str = "identity";

/// What a caller is to this node, by the identity its certificate proved.
/// Authority follows from it (see `rpc_server::authorize` and the table
/// in docs/architecture.md, "Who may call what").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// Another node of the map: another owner's farm, trusted with
    /// nothing it could not check or undo.
    Peer,
    /// A gateway or admin tool of the map: the data's owner.
    Owner,
}

/// The clients a node lets connect: the nodes and clients of the map it
/// holds. Before it holds one, or while its map names no identity at all
/// (a grid from before identities), any client with a certificate, as an
/// owner: the first map must come from somewhere, and a node outside any
/// grid holds nothing of anyone's.
#[derive(Debug, Default)]
pub struct Admission(RwLock<Option<HashMap<IdentityKey, Caller>>>);

impl Admission {
    fn set(&self, map: Option<&ClusterMap>) {
        let known = map.map(|m| {
            let peers = m
                .nodes
                .iter()
                .filter(|n| n.state != metadata::model::NodeState::Removed as i32)
                .filter_map(|n| IdentityKey::from_bytes(&n.key))
                .map(|k| (k, Caller::Peer));
            // Listed as a client too: the owner said so.
            let owners = m
                .clients
                .iter()
                .filter_map(|c| IdentityKey::from_bytes(&c.key))
                .map(|k| (k, Caller::Owner));
            peers.chain(owners).collect::<HashMap<_, _>>()
        });
        let known = known.filter(|k| !k.is_empty());
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = known;
    }

    /// What the holder of `key` is here; `None` for a stranger.
    pub fn caller(&self, key: &IdentityKey) -> Option<Caller> {
        match &*self.0.read().unwrap_or_else(|p| p.into_inner()) {
            None => Some(Caller::Owner),
            Some(known) => known.get(key).copied(),
        }
    }
}

impl ClientPolicy for Admission {
    fn accepts(&self, key: &IdentityKey) -> bool {
        self.caller(key).is_some()
    }
}

pub struct Node {
    pub id: String,
    pub site: String,
    pub store: ShardStore,
    pub db: Db,
    /// Its TLS identity, as a server and as a client of its peers.
    pub identity: Identity,
    pub admission: Arc<Admission>,
    /// What its own heartbeats show of its peers (its votes' ground).
    pub peers: crate::peer_view::PeerView,
    pub metrics: Metrics,
    /// Counters and work queue of self-healing ([`crate::repair`]).
    pub repair: crate::repair_state::RepairState,
    started: Instant,
    /// Held by garbage collection from its last look at a chunk's
    /// references to the deletion of its shards, and by every reference
    /// write: a chunk referenced by a call that has returned is not
    /// collected while that reference stands (see [`crate::gc`]).
    gc_lock: Mutex<()>,
    /// `[repair] metadata_replicas`, reported in the status so gateways
    /// can check they agree.
    pub metadata_replicas: usize,
}

impl Node {
    /// Open the node's stores under `cfg.data_dir` (creating them on first
    /// start) and claim the directory for `cfg.node_id`.
    pub fn open(cfg: &NodeConfig) -> Result<Node, NodeError> {
        let io = match cfg.io_backend() {
            Some(IoBackend::Uring) if IoBackend::detect() != IoBackend::Uring => {
                return Err(NodeError::Refused(
                    "io = \"io_uring\" but the kernel refuses io_uring".into(),
                ))
            }
            choice => choice,
        };
        std::fs::create_dir_all(&cfg.data_dir).map_err(StoreError::Io)?;
        let store = ShardStore::open(ShardStoreConfig {
            root: cfg.data_dir.clone(),
            quota: cfg.quota_bytes,
            reserve_bytes: cfg.reserve_bytes,
            io,
        })?;
        let db = Db::open(&cfg.data_dir.join("meta"))?;
        // A data directory belongs to one node id for life: starting another
        // id on it would make the grid believe two nodes hold these shards.
        let claimed = db.compare_and_set(
            Table::System,
            NODE_ID_KEY,
            None,
            Some(cfg.node_id.as_bytes()),
        )?;
        if !claimed {
            let owner = db.get_raw(Table::System, NODE_ID_KEY)?.unwrap_or_default();
            if owner != cfg.node_id.as_bytes() {
                return Err(NodeError::Refused(format!(
                    "{} belongs to node {:?}, not {:?}",
                    cfg.data_dir.display(),
                    String::from_utf8_lossy(&owner),
                    cfg.node_id
                )));
            }
        }
        let identity = Identity::load_or_create(&cfg.data_dir.join(IDENTITY_DIR))?;
        let admission = Arc::new(Admission::default());
        admission.set(db.get::<ClusterMap>(Table::System, MAP_KEY)?.as_ref());
        Ok(Node {
            identity,
            admission,
            peers: Default::default(),
            id: cfg.node_id.clone(),
            site: cfg.site.clone(),
            store,
            db,
            metrics: Metrics::new(),
            repair: crate::repair_state::RepairState::default(),
            started: Instant::now(),
            metadata_replicas: cfg.repair.metadata_replicas,
            gc_lock: Mutex::new(()),
        })
    }

    /// The lock ordering reference writes against garbage collection.
    /// Nothing the lock protects can be left half-done by a panic (it
    /// guards no data), so a poisoned lock is simply taken.
    pub(crate) fn gc_guard(&self) -> MutexGuard<'_, ()> {
        self.gc_lock.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn uptime_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    pub fn cluster_map(&self) -> Result<Option<ClusterMap>, DbError> {
        self.db.get(Table::System, MAP_KEY)
    }

    /// The owner's public key, as the held map names it: what records and
    /// references from peers must be signed with.
    pub fn owner_key(&self) -> Result<Option<Vec<u8>>, DbError> {
        Ok(self
            .cluster_map()?
            .map(|m| m.owner_key)
            .filter(|k| !k.is_empty()))
    }

    /// The map held before the current one (where shards were before the
    /// last change).
    pub fn previous_map(&self) -> Result<Option<ClusterMap>, DbError> {
        self.db.get(Table::System, PREV_MAP_KEY)
    }

    /// Keep `map` if it is newer than the one held (or, under the same
    /// epoch, wins the tie-break); returns whether it was kept and the
    /// epoch now held.
    pub fn offer_map(&self, map: &ClusterMap) -> Result<(bool, u64), NodeError> {
        let new = map.encode_record();
        loop {
            let current = self.db.get_raw(Table::System, MAP_KEY)?;
            let held = match &current {
                None => None,
                Some(b) => {
                    Some(
                        ClusterMap::decode_record(b).map_err(|source| DbError::Record {
                            table: Table::System.name(),
                            source,
                        })?,
                    )
                }
            };
            let epoch = held.as_ref().map_or(0, |m| m.epoch);
            // The owner's key as the held map pins it; a node holding no
            // map takes the first map's own (trust on first use, like the
            // first map itself).
            let pinned = held
                .as_ref()
                .map(|m| m.owner_key.as_slice())
                .filter(|k| !k.is_empty());
            grid::signed_map::verify(map, pinned)
                .map_err(|e| NodeError::Unauthorised(format!("cluster map {}: {e}", map.epoch)))?;
            // Two nodes may propose different maps under the same epoch
            // (liveness after a partition heals): every node then keeps the
            // one with the greater hash, so the grid converges on one map.
            let wins_tie = || {
                current
                    .as_deref()
                    .is_some_and(|c| blake3::hash(&new).as_bytes() > blake3::hash(c).as_bytes())
            };
            if map.epoch < epoch || (map.epoch == epoch && !wins_tie()) {
                return Ok((false, epoch));
            }
            if self
                .db
                .compare_and_set(Table::System, MAP_KEY, current.as_deref(), Some(&new))?
            {
                if let Some(prev) = &current {
                    self.db.put_raw(Table::System, PREV_MAP_KEY, prev)?;
                }
                self.admission.set(Some(map));
                // Shard homes may have moved, however the map arrived (pushed
                // by a proposer, pulled by a heartbeat, handed by an admin).
                self.repair.request_full();
                return Ok((true, map.epoch));
            }
        }
    }
}
