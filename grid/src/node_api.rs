//! The node RPC protocol: paths, message bodies and status codes, shared
//! by the client (`NodeClient`, in this crate) and the server (the
//! `storage-node` crate).
//!
//! Every call is HTTP (1.1 or 2) over TLS 1.3 with both ends' identities
//! pinned by the cluster map (see [`crate::tls`]): who the caller is comes
//! from its certificate, and what it may do from that (see the node's
//! `rpc_server::authorize`), never from anything a request says of itself.
//! Shard bodies travel raw; every other body is a record in the versioned
//! encoding of [`metadata::record`], so the protocol evolves by the same
//! rules as the data on disk.
//!
//! | call | method and path | request body | response body |
//! |---|---|---|---|
//! | put shard | `PUT /v1/shards/<chunk hex>.<index>` | the shard | - |
//! | get shard | `GET /v1/shards/<name>[?offset=N&len=M]` | - | the bytes |
//! | delete shard | `DELETE /v1/shards/<name>` | - | - (404 if absent) |
//! | which held | `POST /v1/shards:have` | [`ShardList`] | [`ShardLengths`] |
//! | delete shards | `POST /v1/shards:delete` | [`ShardList`] | [`Deleted`] |
//! | record get | `GET /v1/meta/<table>/<key hex>` | - | the record (404 if absent) |
//! | record put | `PUT /v1/meta/<table>/<key hex>` | the record | - |
//! | record delete | `DELETE /v1/meta/<table>/<key hex>` | - | - |
//! | batch | `POST /v1/meta:batch` | [`MetaBatch`] | - |
//! | range scan | `POST /v1/meta:scan` | [`ScanRequest`] | [`ScanPage`] |
//! | compare-and-set | `POST /v1/meta:cas` | [`CasRequest`] | [`CasResult`] |
//! | add refs | `POST /v1/refs:add` | [`RefList`] | - |
//! | remove refs | `POST /v1/refs:remove` | [`RefList`] (referrers only matter) | - |
//! | list refs | `POST /v1/refs:list` | [`RefQuery`] | [`RefPage`] |
//! | status | `GET /v1/status` | - | [`NodeStatus`] |
//! | cluster map | `GET` / `PUT /v1/map` | - / `ClusterMap` | `ClusterMap` / [`MapAccepted`] |
//! | range digests | `POST /v1/meta:digest` | [`DigestRequest`] | [`DigestReply`] |
//! | changed keys | `POST /v1/meta:changes` | [`ChangesRequest`] | [`ChangesReply`] |
//! | repair hint | `POST /v1/repair:hint` | [`RepairHints`] (shards to reconcile soon) | - |
//! | storage proof | `POST /v1/shards:prove` | [`ProveRequest`] | [`ShardProof`] (404 if absent) |
//!
//! A shard put declares the shard's own checksum (the last 32 bytes of its
//! header: BLAKE3 over every other byte of the shard) in
//! [`HEADER_SHARD_CHECKSUM`]. The node decides from it, before the body
//! arrives, whether a peer may place that shard (the checksum must be the
//! one the owner recorded), and commits the shard only if it verifies and
//! carries that checksum: one pass over the bytes, and the sender, who
//! sealed the shard, hashes nothing. See [`shard_checksum`].
//!
//! `/health` and `/metrics` are plain, unauthenticated GETs for probes and
//! Prometheus; they reveal counts, never data or names.

use metadata::db::Table;
use metadata::model::ChunkReference;
use metadata::{InvalidShardKey, Record, RecordError, ShardKey};

pub const SHARDS: &str = "/v1/shards/";
pub const SHARDS_HAVE: &str = "/v1/shards:have";
pub const SHARDS_DELETE: &str = "/v1/shards:delete";
pub const SHARDS_PROVE: &str = "/v1/shards:prove";
pub const META: &str = "/v1/meta/";
pub const META_BATCH: &str = "/v1/meta:batch";
pub const META_SCAN: &str = "/v1/meta:scan";
pub const META_CAS: &str = "/v1/meta:cas";
pub const REFS_ADD: &str = "/v1/refs:add";
pub const REFS_REMOVE: &str = "/v1/refs:remove";
pub const REFS_LIST: &str = "/v1/refs:list";
pub const STATUS: &str = "/v1/status";
pub const MAP: &str = "/v1/map";
/// POST a proposed liveness change (a `ClusterMap`); the reply is the
/// node's `LivenessVote` for it, or a refusal.
pub const MAP_VOTE: &str = "/v1/map:vote";
pub const REPAIR_HINT: &str = "/v1/repair:hint";
pub const META_DIGEST: &str = "/v1/meta:digest";
pub const META_CHANGES: &str = "/v1/meta:changes";
pub const HEALTH: &str = "/health";
/// A shard put's declared checksum, hex (see the module documentation).
/// The wire name is older than its present meaning.
pub const HEADER_SHARD_CHECKSUM: &str = "x-gs-content-hash";
pub const METRICS: &str = "/metrics";

/// Largest shard a node accepts: a 64 MiB chunk with k = 1 plus its
/// header, tag and padding, rounded up.
pub const MAX_SHARD_BYTES: u64 = (64 << 20) + (1 << 16);
/// Largest non-shard request body (batches of records, key lists).
pub const MAX_MESSAGE_BYTES: u64 = 16 << 20;
/// Most items in one batch, key list or scan page.
pub const MAX_ITEMS: usize = 10_000;

/// The tables a gateway may read and write through the record calls.
/// Chunk references have their own calls; the system table (node
/// identity, cluster map) is the node's own.
pub fn table_name(t: Table) -> Option<&'static str> {
    match t {
        Table::Buckets
        | Table::Versions
        | Table::Uploads
        | Table::Parts
        | Table::Users
        | Table::Locks
        | Table::Jobs
        | Table::JobTasks => Some(t.name()),
        Table::ChunkRefs | Table::System => None,
    }
}

pub fn table_from_name(name: &str) -> Option<Table> {
    Table::ALL
        .into_iter()
        .find(|t| table_name(*t) == Some(name))
}

fn table_from_wire(n: u32) -> Result<Table, RecordError> {
    let t = match n {
        1 => Table::Buckets,
        2 => Table::Versions,
        3 => Table::Uploads,
        4 => Table::Parts,
        5 => Table::Users,
        6 => Table::Locks,
        7 => Table::Jobs,
        8 => Table::JobTasks,
        _ => return Err(RecordError::Invalid("unknown or private table")),
    };
    Ok(t)
}

pub fn table_to_wire(t: Table) -> u32 {
    match t {
        Table::Buckets => 1,
        Table::Versions => 2,
        Table::Uploads => 3,
        Table::Parts => 4,
        Table::Users => 5,
        Table::Locks => 6,
        Table::Jobs => 7,
        Table::JobTasks => 8,
        // Never accepted by a node; encoded so a mistake is refused there.
        Table::ChunkRefs | Table::System => 0,
    }
}

/// The checksum a shard put declares for `shard`: the one its header
/// carries, or, for bytes that are not a shard, their BLAKE3 (the node
/// refuses them either way, with the precise reason).
pub fn shard_checksum(shard: &[u8]) -> [u8; 32] {
    match codec::shard::ShardHeader::parse(shard) {
        Ok(h) => h.checksum,
        Err(_) => *blake3::hash(shard).as_bytes(),
    }
}

/// The checksum a shard put declared, if it declared a well-formed one.
pub fn parse_shard_checksum(value: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(value, &mut out).ok()?;
    Some(out)
}

pub fn shard_path(key: &ShardKey) -> String {
    format!("{SHARDS}{}", key.to_name())
}

pub fn meta_path(table: Table, key: &[u8]) -> String {
    format!("{META}{}/{}", table.name(), hex::encode(key))
}

/// Shards a node should reconcile soon. `verify`: a reader found them bad,
/// so every local shard of their chunks is re-read and checked; otherwise
/// they may just be missing (a new home told by a peer that pushed it the
/// references) and a presence check is enough. Wire-compatible with a bare
/// [`ShardList`] (no `verify`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct RepairHints {
    #[prost(bytes = "vec", repeated, tag = "1")]
    pub keys: Vec<Vec<u8>>,
    #[prost(bool, tag = "2")]
    pub verify: bool,
}

impl RepairHints {
    pub fn new(keys: &[ShardKey], verify: bool) -> Self {
        Self {
            keys: ShardList::new(keys).keys,
            verify,
        }
    }

    pub fn shard_keys(&self) -> Result<Vec<ShardKey>, InvalidShardKey> {
        ShardList {
            keys: self.keys.clone(),
        }
        .shard_keys()
    }
}

impl Record for RepairHints {
    fn validate(&self) -> Result<(), RecordError> {
        if self.keys.len() > MAX_ITEMS {
            return Err(RecordError::Invalid("too many keys"));
        }
        Ok(())
    }
}

/// Shard keys on the wire: 32 bytes of chunk id, one of index.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ShardList {
    #[prost(bytes = "vec", repeated, tag = "1")]
    pub keys: Vec<Vec<u8>>,
}

impl ShardList {
    pub fn new(keys: &[ShardKey]) -> Self {
        Self {
            keys: keys
                .iter()
                .map(|k| {
                    let mut v = k.chunk.to_vec();
                    v.push(k.index);
                    v
                })
                .collect(),
        }
    }

    pub fn shard_keys(&self) -> Result<Vec<ShardKey>, InvalidShardKey> {
        self.keys
            .iter()
            .map(|b| {
                let (chunk, index) = b
                    .split_first_chunk::<32>()
                    .filter(|(_, rest)| rest.len() == 1)
                    .ok_or(InvalidShardKey("shard key must be 33 bytes"))?;
                ShardKey::new(*chunk, index[0] as usize)
            })
            .collect()
    }
}

impl Record for ShardList {
    fn validate(&self) -> Result<(), RecordError> {
        if self.keys.len() > MAX_ITEMS {
            return Err(RecordError::Invalid("too many shard keys"));
        }
        self.shard_keys()
            .map(|_| ())
            .map_err(|e| RecordError::Invalid(e.0))
    }
}

/// For each key asked about, in order: its stored length, 0 if not held.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ShardLengths {
    #[prost(uint64, repeated, tag = "1")]
    pub lens: Vec<u64>,
}
impl Record for ShardLengths {}

/// For each key, in order: whether it was there to delete.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Deleted {
    #[prost(bool, repeated, tag = "1")]
    pub deleted: Vec<bool>,
}
impl Record for Deleted {}

/// One write of a batch: `value` set puts, absent deletes.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MetaOp {
    #[prost(uint32, tag = "1")]
    pub table: u32,
    #[prost(bytes = "vec", tag = "2")]
    pub key: Vec<u8>,
    #[prost(bytes = "vec", optional, tag = "3")]
    pub value: Option<Vec<u8>>,
}

impl MetaOp {
    pub fn put(table: Table, key: &[u8], value: Vec<u8>) -> Self {
        Self {
            table: table_to_wire(table),
            key: key.to_vec(),
            value: Some(value),
        }
    }

    pub fn delete(table: Table, key: &[u8]) -> Self {
        Self {
            table: table_to_wire(table),
            key: key.to_vec(),
            value: None,
        }
    }

    pub fn table(&self) -> Result<Table, RecordError> {
        table_from_wire(self.table)
    }
}

/// Writes applied all or none.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MetaBatch {
    #[prost(message, repeated, tag = "1")]
    pub ops: Vec<MetaOp>,
}

impl Record for MetaBatch {
    fn validate(&self) -> Result<(), RecordError> {
        if self.ops.len() > MAX_ITEMS {
            return Err(RecordError::Invalid("batch too large"));
        }
        for op in &self.ops {
            op.table()?;
            if op.key.is_empty() {
                return Err(RecordError::Invalid("empty key"));
            }
        }
        Ok(())
    }
}

/// Keys in `[start, end)` in order (`end` absent: to the table's end).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ScanRequest {
    #[prost(uint32, tag = "1")]
    pub table: u32,
    #[prost(bytes = "vec", tag = "2")]
    pub start: Vec<u8>,
    #[prost(bytes = "vec", optional, tag = "3")]
    pub end: Option<Vec<u8>>,
    #[prost(uint32, tag = "4")]
    pub limit: u32,
}

impl ScanRequest {
    pub fn table(&self) -> Result<Table, RecordError> {
        table_from_wire(self.table)
    }
}

impl Record for ScanRequest {
    fn validate(&self) -> Result<(), RecordError> {
        self.table()?;
        if self.limit == 0 || self.limit as usize > MAX_ITEMS {
            return Err(RecordError::Invalid("scan limit out of range"));
        }
        Ok(())
    }
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct KeyValue {
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}

/// Digests of consecutive key ranges of one table, for metadata
/// anti-entropy: `[starts[i], starts[i + 1])`, the last one up to `end`
/// (absent: the end of the table).
#[derive(Clone, PartialEq, prost::Message)]
pub struct DigestRequest {
    #[prost(uint32, tag = "1")]
    pub table: u32,
    #[prost(bytes = "vec", repeated, tag = "2")]
    pub starts: Vec<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "3")]
    pub end: Option<Vec<u8>>,
}

impl DigestRequest {
    pub fn table(&self) -> Result<Table, RecordError> {
        table_from_wire(self.table)
    }
}

impl Record for DigestRequest {
    fn validate(&self) -> Result<(), RecordError> {
        table_from_wire(self.table)?;
        if self.starts.is_empty() || self.starts.len() > 256 {
            return Err(RecordError::Invalid("1 to 256 ranges per digest request"));
        }
        if self.starts.windows(2).any(|w| w[0] >= w[1]) {
            return Err(RecordError::Invalid("range starts out of order"));
        }
        Ok(())
    }
}

/// Records and a BLAKE3 over their keys and values, per range asked.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RangeDigest {
    #[prost(uint64, tag = "1")]
    pub count: u64,
    #[prost(bytes = "vec", tag = "2")]
    pub hash: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct DigestReply {
    #[prost(message, repeated, tag = "1")]
    pub ranges: Vec<RangeDigest>,
}
impl Record for DigestReply {}

/// The keys of a fed table (`metadata::db::FED_TABLES`) under `prefix`
/// written since a position of the node's change feed; without a position,
/// only where the feed is now.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ChangesRequest {
    #[prost(uint32, tag = "1")]
    pub table: u32,
    #[prost(bytes = "vec", tag = "2")]
    pub prefix: Vec<u8>,
    #[prost(uint64, optional, tag = "3")]
    pub feed: Option<u64>,
    #[prost(uint64, tag = "4")]
    pub since: u64,
    #[prost(uint32, tag = "5")]
    pub limit: u32,
}

impl ChangesRequest {
    pub fn table(&self) -> Result<Table, RecordError> {
        table_from_wire(self.table)
    }
}

impl Record for ChangesRequest {
    fn validate(&self) -> Result<(), RecordError> {
        if !metadata::db::FED_TABLES.contains(&self.table()?) {
            return Err(RecordError::Invalid("table has no change feed"));
        }
        if self.limit as usize > MAX_ITEMS {
            return Err(RecordError::Invalid("changes limit out of range"));
        }
        Ok(())
    }
}

/// See `metadata::db::Changes`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ChangesReply {
    #[prost(uint64, tag = "1")]
    pub feed: u64,
    #[prost(uint64, tag = "2")]
    pub head: u64,
    #[prost(bytes = "vec", repeated, tag = "3")]
    pub keys: Vec<Vec<u8>>,
    #[prost(bool, tag = "4")]
    pub complete: bool,
}
impl Record for ChangesReply {}

/// One page; pass `next` as the following request's `start`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ScanPage {
    #[prost(message, repeated, tag = "1")]
    pub items: Vec<KeyValue>,
    #[prost(bytes = "vec", optional, tag = "2")]
    pub next: Option<Vec<u8>>,
}
impl Record for ScanPage {}

/// Set `key` to `new` (absent: delete) only if it currently is `expected`
/// (absent: the key does not exist).
#[derive(Clone, PartialEq, prost::Message)]
pub struct CasRequest {
    #[prost(uint32, tag = "1")]
    pub table: u32,
    #[prost(bytes = "vec", tag = "2")]
    pub key: Vec<u8>,
    #[prost(bytes = "vec", optional, tag = "3")]
    pub expected: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "4")]
    pub new: Option<Vec<u8>>,
}

impl CasRequest {
    pub fn table(&self) -> Result<Table, RecordError> {
        table_from_wire(self.table)
    }
}

impl Record for CasRequest {
    fn validate(&self) -> Result<(), RecordError> {
        self.table()?;
        if self.key.is_empty() {
            return Err(RecordError::Invalid("empty key"));
        }
        Ok(())
    }
}

/// Whether the swap happened, and the value now stored.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CasResult {
    #[prost(bool, tag = "1")]
    pub swapped: bool,
    #[prost(bytes = "vec", optional, tag = "2")]
    pub current: Option<Vec<u8>>,
}
impl Record for CasResult {}

/// Chunk references to add, or (by chunk id and referrer) to remove.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RefList {
    #[prost(message, repeated, tag = "1")]
    pub refs: Vec<ChunkReference>,
}

impl Record for RefList {
    fn validate(&self) -> Result<(), RecordError> {
        if self.refs.len() > MAX_ITEMS {
            return Err(RecordError::Invalid("too many references"));
        }
        self.refs.iter().try_for_each(Record::validate)
    }
}

/// References in key order: one chunk's (`chunk_id` set) or all, starting
/// after `start_after` (a reference's table key).
#[derive(Clone, PartialEq, prost::Message)]
pub struct RefQuery {
    #[prost(bytes = "vec", optional, tag = "1")]
    pub chunk_id: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "2")]
    pub start_after: Option<Vec<u8>>,
    #[prost(uint32, tag = "3")]
    pub limit: u32,
}

impl Record for RefQuery {
    fn validate(&self) -> Result<(), RecordError> {
        if self
            .chunk_id
            .as_ref()
            .is_some_and(|c| c.len() != metadata::model::CHUNK_ID_LEN)
        {
            return Err(RecordError::Invalid("chunk id length"));
        }
        if self.limit == 0 || self.limit as usize > MAX_ITEMS {
            return Err(RecordError::Invalid("limit out of range"));
        }
        Ok(())
    }
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RefPage {
    #[prost(message, repeated, tag = "1")]
    pub refs: Vec<ChunkReference>,
    /// Table key of the last reference returned, when more follow.
    #[prost(bytes = "vec", optional, tag = "2")]
    pub next_after: Option<Vec<u8>>,
}
impl Record for RefPage {}

/// What a node reports about itself.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NodeStatus {
    #[prost(string, tag = "1")]
    pub node_id: String,
    #[prost(string, tag = "2")]
    pub site: String,
    /// gridstore version the node runs.
    #[prost(string, tag = "3")]
    pub version: String,
    /// Quota if configured, else the filesystem's size.
    #[prost(uint64, tag = "4")]
    pub capacity_bytes: u64,
    #[prost(uint64, tag = "5")]
    pub used_bytes: u64,
    #[prost(uint64, tag = "6")]
    pub fs_free_bytes: u64,
    /// What a new shard write may still take.
    #[prost(uint64, tag = "7")]
    pub available_bytes: u64,
    #[prost(uint64, tag = "8")]
    pub shard_count: u64,
    /// Epoch of the cluster map the node holds (0: none yet).
    #[prost(uint64, tag = "9")]
    pub map_epoch: u64,
    /// "io_uring" or "threads".
    #[prost(string, tag = "10")]
    pub io_backend: String,
    #[prost(uint64, tag = "11")]
    pub uptime_ms: u64,
    #[prost(message, optional, tag = "12")]
    pub repair: Option<RepairStatus>,
    /// The node's `[repair] metadata_replicas`: how many copies of each
    /// bucket's metadata its anti-entropy keeps in sync. Gateways check
    /// it against their own at start. 0: a node too old to say.
    #[prost(uint32, tag = "13")]
    pub metadata_replicas: u32,
    /// Peers this node has not heard from for a heartbeat or more, by its
    /// own heartbeats, with how long until it would agree to mark them
    /// lost.
    #[prost(message, repeated, tag = "14")]
    pub unheard: Vec<PeerUnheard>,
    /// The programs its job runner runs (`[jobs] allowed`, as a task's
    /// argv[0] names them); gateways check a job against them when it is
    /// submitted.
    #[prost(string, repeated, tag = "15")]
    pub job_programs: Vec<String>,
    /// Whether it runs programs shipped with the job as one of its files
    /// (`[jobs] allow_shipped_binaries`).
    #[prost(bool, tag = "16")]
    pub job_shipped_binaries: bool,
}

/// A peer a node has lost touch with ([`NodeStatus::unheard`]).
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct PeerUnheard {
    #[prost(string, tag = "1")]
    pub node_id: String,
    /// Since its last answer to a heartbeat (or since this node started).
    #[prost(uint64, tag = "2")]
    pub unheard_ms: u64,
    /// Until this node would mark it lost (or vote so): 0 when due. The
    /// delay depends on how many sites have nodes out, so it can shrink.
    #[prost(uint64, tag = "3")]
    pub lost_in_ms: u64,
}
impl Record for NodeStatus {}

/// Self-healing on one node: gauges from its last reconciliation pass and
/// counters since it started.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RepairStatus {
    /// Shards this node should hold and lacks.
    #[prost(uint64, tag = "1")]
    pub missing: u64,
    /// Rebuilds running now.
    #[prost(uint64, tag = "2")]
    pub rebuilding: u64,
    #[prost(uint64, tag = "3")]
    pub rebuilt_shards: u64,
    #[prost(uint64, tag = "4")]
    pub rebuilt_bytes: u64,
    #[prost(uint64, tag = "5")]
    pub failed_rebuilds: u64,
    /// Shards held for another home and given back to it.
    #[prost(uint64, tag = "6")]
    pub handed_back: u64,
    #[prost(uint64, tag = "7")]
    pub scrubbed_shards: u64,
    #[prost(uint64, tag = "8")]
    pub corrupt_found: u64,
    #[prost(uint64, tag = "9")]
    pub reconcile_passes: u64,
    /// When the last reconciliation pass ended (ms since the epoch; 0: none).
    #[prost(uint64, tag = "10")]
    pub last_reconcile_ms: u64,
    /// When the last complete scrub ended (ms since the epoch; 0: none).
    #[prost(uint64, tag = "11")]
    pub last_scrub_ms: u64,
    /// Chunks this node should hold shards of but cannot rebuild: fewer
    /// than `k` good shards of them exist on the grid. Not retried until
    /// something changes (a new map, a hint naming them, or a long wait).
    #[prost(uint64, tag = "12")]
    pub damaged_chunks: u64,
    /// The first of them (at most [`MAX_DAMAGED_LISTED`]), in chunk id order.
    #[prost(message, repeated, tag = "13")]
    pub damaged: Vec<DamagedChunk>,
    /// Until when rebuilds are paused because the node's shard store is
    /// full (ms since the epoch; 0: not paused).
    #[prost(uint64, tag = "14")]
    pub rebuilds_paused_until_ms: u64,
    /// Times rebuilds were paused for a full store, since start.
    #[prost(uint64, tag = "15")]
    pub store_full_pauses: u64,
    /// Home shards the last full pass left waiting for a down node (the
    /// node holds them; they are rebuilt only if it is marked lost).
    #[prost(uint64, tag = "16")]
    pub waiting: u64,
    /// Chunks the last full pass found with no spare shard left, counting
    /// every down node: rebuilt at once.
    #[prost(uint64, tag = "17")]
    pub at_risk: u64,
}

/// Damaged chunks a status lists at most; the count covers them all.
pub const MAX_DAMAGED_LISTED: usize = 100;
/// Referrers a damaged chunk lists at most; the count covers them all.
pub const MAX_DAMAGED_REFERRERS: usize = 8;

/// A chunk too few good shards of exist to rebuild it: what an operator
/// needs to find the objects that lost data.
#[derive(Clone, PartialEq, prost::Message)]
pub struct DamagedChunk {
    #[prost(bytes = "vec", tag = "1")]
    pub chunk_id: Vec<u8>,
    /// When this node first found it so (ms since the epoch).
    #[prost(uint64, tag = "2")]
    pub first_found_ms: u64,
    /// When this node last tried to rebuild it (ms since the epoch).
    #[prost(uint64, tag = "3")]
    pub last_tried_ms: u64,
    /// Good shards found then, and how many a rebuild needs (`k`).
    #[prost(uint32, tag = "4")]
    pub shards_found: u32,
    #[prost(uint32, tag = "5")]
    pub shards_needed: u32,
    /// The object versions (or multipart parts) its references name, at
    /// most [`MAX_DAMAGED_REFERRERS`].
    #[prost(message, repeated, tag = "6")]
    pub referrers: Vec<metadata::model::Referrer>,
    /// References to it on this node, listed or not.
    #[prost(uint64, tag = "7")]
    pub referrer_count: u64,
}

/// Answer to a map push: whether it replaced the node's map (only a newer
/// epoch does), and the epoch the node now holds.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MapAccepted {
    #[prost(bool, tag = "1")]
    pub accepted: bool,
    #[prost(uint64, tag = "2")]
    pub epoch: u64,
}
impl Record for MapAccepted {}

/// A storage audit challenge: prove holding `len` bytes at `offset` of the
/// bytes shard `key`'s checksum covers (see `codec::audit`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ProveRequest {
    /// 32 bytes of chunk id, one of index, as in [`ShardList`].
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    #[prost(uint64, tag = "2")]
    pub offset: u64,
    #[prost(uint64, tag = "3")]
    pub len: u64,
}

impl ProveRequest {
    pub fn new(key: &ShardKey, offset: u64, len: u64) -> Self {
        let mut k = key.chunk.to_vec();
        k.push(key.index);
        Self {
            key: k,
            offset,
            len,
        }
    }

    pub fn shard_key(&self) -> Result<ShardKey, InvalidShardKey> {
        let (chunk, index) = self
            .key
            .split_first_chunk::<32>()
            .filter(|(_, rest)| rest.len() == 1)
            .ok_or(InvalidShardKey("shard key must be 33 bytes"))?;
        ShardKey::new(*chunk, index[0] as usize)
    }
}

impl Record for ProveRequest {
    fn validate(&self) -> Result<(), RecordError> {
        self.shard_key().map_err(|e| RecordError::Invalid(e.0))?;
        if self.len == 0 || self.len > codec::audit::MAX_SLICE_LEN {
            return Err(RecordError::Invalid("slice length out of range"));
        }
        Ok(())
    }
}

/// A bao slice proof of the slice a [`ProveRequest`] asked for.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ShardProof {
    #[prost(bytes = "vec", tag = "1")]
    pub proof: Vec<u8>,
}
impl Record for ShardProof {}

/// Parse `offset=N&len=M` (both or neither) of a shard GET.
pub fn parse_range_query(query: Option<&str>) -> Result<Option<(u64, u64)>, &'static str> {
    let Some(q) = query.filter(|q| !q.is_empty()) else {
        return Ok(None);
    };
    let (mut offset, mut len) = (None, None);
    for pair in q.split('&') {
        let (k, v) = pair.split_once('=').ok_or("malformed query")?;
        let v: u64 = v.parse().map_err(|_| "range values must be integers")?;
        let slot = match k {
            "offset" => &mut offset,
            "len" => &mut len,
            _ => return Err("unknown query parameter"),
        };
        if slot.replace(v).is_some() {
            return Err("repeated query parameter");
        }
    }
    match (offset, len) {
        (Some(o), Some(l)) => Ok(Some((o, l))),
        _ => Err("offset and len go together"),
    }
}
