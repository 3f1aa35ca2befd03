//! The node RPC server: TLS 1.3 only (see `grid::tls`), HTTP/1.1 and HTTP/2
//! by ALPN on one port, every call from a client whose certificate the
//! cluster map lists (the certificate is the whole of its authentication;
//! what it may do follows from who it is, see [`authorize`]), the protocol
//! in `grid::node_api`. Probes (`/health`, `/metrics`) need no certificate.
//!
//! Blocking work (file and metadata I/O, both of which fsync) runs on
//! tokio's blocking pool so the reactor keeps serving other requests.

use crate::jobs::JobHost;
use crate::node::{Caller, Node};
use crate::shard_store::{ShardReader, StoreError};
use bytes::Bytes;
use grid::node_api::{self as api};
use grid::node_client::{BodyError, ChannelBody, ResponseBody};
use grid::tls::IdentityKey;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use metadata::db::{Batch, DbError, Table};
use metadata::model::{ChunkReference, ClusterMap};
use metadata::{Record, RecordError, ShardKey};
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// A client that has not finished its TLS handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Shards are read and sent in pieces of this size.
const READ_PIECE: u64 = 1 << 20;

/// A failed call: its status and a one-line reason for the caller.
#[derive(Debug)]
struct Failure {
    status: StatusCode,
    message: String,
}

impl Failure {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        let status = match &e {
            StoreError::InsufficientStorage { .. } => StatusCode::INSUFFICIENT_STORAGE,
            StoreError::NotFound => StatusCode::NOT_FOUND,
            StoreError::InvalidKey(_) | StoreError::Corrupt(_) | StoreError::NotVouched => {
                StatusCode::BAD_REQUEST
            }
            StoreError::InvalidRange { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            StoreError::Io(io) if io.raw_os_error() == Some(libc::ENOSPC) => {
                StatusCode::INSUFFICIENT_STORAGE
            }
            StoreError::Io(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self::new(status, e.to_string())
    }
}

impl From<crate::node::NodeError> for Failure {
    fn from(e: crate::node::NodeError) -> Self {
        use crate::node::NodeError;
        match e {
            NodeError::Unauthorised(m) => Failure::new(StatusCode::FORBIDDEN, m),
            NodeError::Refused(m) => Failure::new(StatusCode::CONFLICT, m),
            NodeError::Store(e) => e.into(),
            NodeError::Db(e) => e.into(),
            e => Failure::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        }
    }
}

impl From<DbError> for Failure {
    fn from(e: DbError) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }
}

impl From<RecordError> for Failure {
    fn from(e: RecordError) -> Self {
        Self::bad_request(e.to_string())
    }
}

impl From<metadata::InvalidShardKey> for Failure {
    fn from(e: metadata::InvalidShardKey) -> Self {
        Self::bad_request(e.to_string())
    }
}

type Reply = Result<Response<ResponseBody>, Failure>;

fn full(b: impl Into<Bytes>) -> ResponseBody {
    Full::new(b.into()).map_err(|e| match e {}).boxed()
}

fn reply(status: StatusCode, body: impl Into<Bytes>) -> Response<ResponseBody> {
    let body = body.into();
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r
}

fn ok_record(r: &impl Record) -> Reply {
    Ok(reply(StatusCode::OK, r.encode_record()))
}

fn no_content() -> Reply {
    Ok(reply(StatusCode::NO_CONTENT, Bytes::new()))
}

/// Run blocking work on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Failure> + Send + 'static,
) -> Result<T, Failure> {
    grid::blocking(f)
        .await
        .map_err(|e| Failure::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
}

/// Which call a request is, for routing, metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Health,
    Metrics,
    PutShard,
    GetShard,
    DeleteShard,
    HaveShards,
    DeleteShards,
    MetaGet,
    MetaPut,
    MetaDelete,
    MetaBatch,
    MetaScan,
    MetaCas,
    RefsAdd,
    RefsRemove,
    RefsList,
    Status,
    GetMap,
    PutMap,
    MapVote,
    RepairHint,
    MetaDigest,
    MetaChanges,
    JobTask,
    ProveShard,
    Unknown,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Health => "health",
            Op::Metrics => "metrics",
            Op::PutShard => "put_shard",
            Op::GetShard => "get_shard",
            Op::DeleteShard => "delete_shard",
            Op::HaveShards => "have_shards",
            Op::DeleteShards => "delete_shards",
            Op::MetaGet => "meta_get",
            Op::MetaPut => "meta_put",
            Op::MetaDelete => "meta_delete",
            Op::MetaBatch => "meta_batch",
            Op::MetaScan => "meta_scan",
            Op::MetaCas => "meta_cas",
            Op::RefsAdd => "refs_add",
            Op::RefsRemove => "refs_remove",
            Op::RefsList => "refs_list",
            Op::Status => "status",
            Op::GetMap => "get_map",
            Op::PutMap => "put_map",
            Op::MapVote => "map_vote",
            Op::RepairHint => "repair_hint",
            Op::MetaDigest => "meta_digest",
            Op::MetaChanges => "meta_changes",
            Op::JobTask => "job_task",
            Op::ProveShard => "prove_shard",
            Op::Unknown => "unknown",
        }
    }

    fn route(method: &Method, path: &str) -> Op {
        let m = method.clone();
        if path.starts_with(api::SHARDS) {
            return match m {
                Method::PUT => Op::PutShard,
                Method::GET => Op::GetShard,
                Method::DELETE => Op::DeleteShard,
                _ => Op::Unknown,
            };
        }
        if path.starts_with(api::META) {
            return match m {
                Method::PUT => Op::MetaPut,
                Method::GET => Op::MetaGet,
                Method::DELETE => Op::MetaDelete,
                _ => Op::Unknown,
            };
        }
        match (m, path) {
            (Method::GET, api::HEALTH) => Op::Health,
            (Method::GET, api::METRICS) => Op::Metrics,
            (Method::POST, api::SHARDS_HAVE) => Op::HaveShards,
            (Method::POST, api::SHARDS_DELETE) => Op::DeleteShards,
            (Method::POST, api::META_BATCH) => Op::MetaBatch,
            (Method::POST, api::META_SCAN) => Op::MetaScan,
            (Method::POST, api::META_CAS) => Op::MetaCas,
            (Method::POST, api::REFS_ADD) => Op::RefsAdd,
            (Method::POST, api::REFS_REMOVE) => Op::RefsRemove,
            (Method::POST, api::REFS_LIST) => Op::RefsList,
            (Method::GET, api::STATUS) => Op::Status,
            (Method::GET, api::MAP) => Op::GetMap,
            (Method::PUT, api::MAP) => Op::PutMap,
            (Method::POST, api::MAP_VOTE) => Op::MapVote,
            (Method::POST, api::REPAIR_HINT) => Op::RepairHint,
            (Method::POST, api::META_DIGEST) => Op::MetaDigest,
            (Method::POST, api::META_CHANGES) => Op::MetaChanges,
            (Method::POST, grid::task::TASK_RUN) => Op::JobTask,
            (Method::POST, api::SHARDS_PROVE) => Op::ProveShard,
            _ => Op::Unknown,
        }
    }
}

/// Handle one request: authenticate, route, answer. Never panics on input.
/// What the RPC server answers from: the node core and the job runner
/// beside it, both owned by the daemon.
#[derive(Clone)]
pub struct Served {
    pub node: Arc<Node>,
    pub jobs: Arc<JobHost>,
}

/// Answer `req`, which came over a connection whose client showed the
/// certificate of `client` (already admitted by the handshake), or none.
pub async fn handle(
    served: Served,
    client: Option<IdentityKey>,
    req: Request<Incoming>,
) -> Response<ResponseBody> {
    let node = served.node.clone();
    let started = Instant::now();
    let op = Op::route(req.method(), req.uri().path());
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let probe = matches!(op, Op::Health | Op::Metrics);
    // The map may have moved on since the handshake: a client it no
    // longer lists loses its open connections too, not only new ones.
    let caller = client.and_then(|key| node.admission.caller(&key));
    let result = match (client, caller) {
        _ if probe => dispatch(&node, &served.jobs, op, Caller::Peer, req).await,
        (None, _) => Err(Failure::new(
            StatusCode::UNAUTHORIZED,
            "a client certificate is required",
        )),
        (Some(_), None) => Err(Failure::new(
            StatusCode::UNAUTHORIZED,
            "this client's identity is not in the node's cluster map",
        )),
        (Some(_), Some(caller)) => dispatch(&node, &served.jobs, op, caller, req).await,
    };
    let resp = match result {
        Ok(r) => r,
        Err(f) => {
            if f.status == StatusCode::UNAUTHORIZED || f.status == StatusCode::FORBIDDEN {
                node.metrics.auth_failures.inc();
                tracing::warn!(%method, %path, reason = %f.message, "refused request");
            } else if f.status.is_server_error() {
                tracing::error!(%method, %path, status = f.status.as_u16(), reason = %f.message, "request failed");
            } else {
                tracing::debug!(%method, %path, status = f.status.as_u16(), reason = %f.message, "request rejected");
            }
            reply(f.status, f.message)
        }
    };
    node.metrics
        .requests
        .get_or_create(&crate::metrics::RequestLabels {
            op: op.name(),
            status: resp.status().as_u16(),
        })
        .inc();
    node.metrics
        .duration
        .get_or_create(&crate::metrics::OpLabels { op: op.name() })
        .observe(started.elapsed().as_secs_f64());
    resp
}

/// Whether `caller` may make call `op` at all; what a peer may put is
/// checked further by the handlers. Peers are other owners' farms: they
/// may read what they could read anyway (ciphertext, sealed records),
/// offer what the receiver checks for itself (maps by their signatures,
/// records newer than the ones held, shards this node is the home of),
/// and nothing that deletes, overwrites or runs code. The table of calls
/// and callers is in docs/architecture.md ("Who may call what").
fn authorize(op: Op, caller: Caller) -> Result<(), Failure> {
    let peer_may = matches!(
        op,
        Op::Health
            | Op::Metrics
            | Op::Unknown
            | Op::GetShard
            | Op::HaveShards
            | Op::PutShard
            | Op::RefsList
            | Op::RefsAdd
            | Op::RepairHint
            | Op::MetaGet
            | Op::MetaScan
            | Op::MetaDigest
            | Op::MetaChanges
            | Op::MetaCas
            | Op::Status
            | Op::GetMap
            | Op::PutMap
            | Op::MapVote
    );
    if caller == Caller::Owner || peer_may {
        Ok(())
    } else {
        Err(Failure::new(
            StatusCode::FORBIDDEN,
            format!("{} is for gateways and admin tools, not nodes", op.name()),
        ))
    }
}

async fn dispatch(
    node: &Arc<Node>,
    jobs: &Arc<JobHost>,
    op: Op,
    caller: Caller,
    req: Request<Incoming>,
) -> Reply {
    match op {
        Op::Health => {
            // Alive either way (a node without a map must still take
            // the first one); the body tells a probe what it lacks.
            let n = node.clone();
            let has_map = blocking(move || Ok(n.cluster_map().is_ok_and(|m| m.is_some()))).await?;
            let body = if has_map {
                "ok\n"
            } else {
                "ok: no cluster map yet\n"
            };
            return Ok(reply(StatusCode::OK, body));
        }
        Op::Metrics => return metrics(node).await,
        // Only callers with an admitted certificate get here (see
        // `handle`), so probing without one learns nothing from a 404.
        Op::Unknown => return Err(Failure::new(StatusCode::NOT_FOUND, "no such call")),
        _ => {}
    }
    authorize(op, caller)?;
    match op {
        Op::PutShard => put_shard(node, req, caller).await,
        Op::GetShard => get_shard(node, &req).await,
        Op::DeleteShard => {
            let key = shard_key(&req)?;
            let n = node.clone();
            if blocking(move || Ok(n.store.delete(&key)?)).await? {
                no_content()
            } else {
                Err(Failure::new(StatusCode::NOT_FOUND, "shard not held"))
            }
        }
        Op::MetaDigest => {
            let q = read_record::<api::DigestRequest>(node, req).await?;
            let table = q.table()?;
            let n = node.clone();
            let ranges = blocking(move || {
                n.range_digests(table, &q.starts, q.end.as_deref())
                    .map_err(|e| Failure::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
            })
            .await?;
            ok_record(&api::DigestReply { ranges })
        }
        Op::JobTask => crate::jobs::task_response(node, jobs, req.into_body())
            .await
            .map_err(|(status, m)| Failure::new(status, m)),
        Op::ProveShard => {
            let q = read_record::<api::ProveRequest>(node, req).await?;
            let n = node.clone();
            ok_record(&blocking(move || Ok(crate::audit::prove(&n, &q)?)).await?)
        }
        Op::RepairHint => {
            let hints = read_record::<api::RepairHints>(node, req).await?;
            for k in &hints.shard_keys()? {
                node.repair.hint(k.chunk, hints.verify);
            }
            Ok(reply(StatusCode::NO_CONTENT, ""))
        }
        Op::HaveShards => {
            let keys = read_record::<api::ShardList>(node, req)
                .await?
                .shard_keys()?;
            let n = node.clone();
            let lens = blocking(move || {
                keys.iter()
                    .map(|k| match n.store.shard_len(k) {
                        Ok(l) => Ok(l),
                        Err(StoreError::NotFound) => Ok(0),
                        Err(e) => Err(Failure::from(e)),
                    })
                    .collect::<Result<Vec<u64>, Failure>>()
            })
            .await?;
            ok_record(&api::ShardLengths { lens })
        }
        Op::DeleteShards => {
            let keys = read_record::<api::ShardList>(node, req)
                .await?
                .shard_keys()?;
            let n = node.clone();
            let deleted = blocking(move || {
                keys.iter()
                    .map(|k| n.store.delete(k).map_err(Failure::from))
                    .collect::<Result<Vec<bool>, Failure>>()
            })
            .await?;
            ok_record(&api::Deleted { deleted })
        }
        Op::MetaGet => {
            let (table, key) = meta_target(&req)?;
            node.metrics
                .record_reads
                .get_or_create(&crate::metrics::TableLabels {
                    table: table.name(),
                })
                .inc();
            let n = node.clone();
            match blocking(move || Ok(n.db.get_raw(table, &key)?)).await? {
                Some(v) => {
                    node.metrics.bytes_sent.inc_by(v.len() as u64);
                    Ok(reply(StatusCode::OK, v))
                }
                None => Err(Failure::new(StatusCode::NOT_FOUND, "no such record")),
            }
        }
        Op::MetaPut => {
            let (table, key) = meta_target(&req)?;
            let value = read_body(node, req).await?;
            check_value(table, &value)?;
            let n = node.clone();
            let mut b = Batch::new();
            b.put_raw(table, &key, value.to_vec());
            blocking(move || Ok(n.db.write_if(b, metadata::replicated::replaces)?)).await?;
            no_content()
        }
        Op::MetaDelete => {
            let (table, key) = meta_target(&req)?;
            let n = node.clone();
            blocking(move || Ok(n.db.delete(table, &key)?)).await?;
            no_content()
        }
        Op::MetaBatch => {
            let batch = read_record::<api::MetaBatch>(node, req).await?;
            let mut b = Batch::new();
            for op in batch.ops {
                let table = op.table()?;
                match op.value {
                    Some(v) => {
                        check_value(table, &v)?;
                        b.put_raw(table, &op.key, v);
                    }
                    None => {
                        b.delete(table, &op.key);
                    }
                }
            }
            let n = node.clone();
            blocking(move || Ok(n.db.write_if(b, metadata::replicated::replaces)?)).await?;
            no_content()
        }
        Op::MetaChanges => {
            let q = read_record::<api::ChangesRequest>(node, req).await?;
            let table = q.table()?;
            let c = node.db.changes(
                table,
                &q.prefix,
                q.feed.map(|f| (f, q.since)),
                q.limit as usize,
            );
            ok_record(&api::ChangesReply {
                feed: c.feed,
                head: c.head,
                keys: c.keys,
                complete: c.complete,
            })
        }
        Op::MetaScan => {
            let q = read_record::<api::ScanRequest>(node, req).await?;
            let table = q.table()?;
            let n = node.clone();
            let page = blocking(move || {
                Ok(n.db.scan(table, &q.start, q.end.as_deref(), q.limit as usize)?)
            })
            .await?;
            ok_record(&api::ScanPage {
                items: page
                    .items
                    .into_iter()
                    .map(|(key, value)| api::KeyValue { key, value })
                    .collect(),
                next: page.next,
            })
        }
        Op::MetaCas => {
            let q = read_record::<api::CasRequest>(node, req).await?;
            let table = q.table()?;
            if let Some(v) = &q.new {
                check_value(table, v)?;
            }
            let n = node.clone();
            let result = blocking(move || {
                if caller == Caller::Peer {
                    peer_may_replace(&n, table, &q)?;
                }
                let swapped =
                    n.db.compare_and_set(table, &q.key, q.expected.as_deref(), q.new.as_deref())?;
                let current = n.db.get_raw(table, &q.key)?;
                Ok(api::CasResult { swapped, current })
            })
            .await?;
            ok_record(&result)
        }
        Op::RefsAdd | Op::RefsRemove => {
            let mut list = read_record::<api::RefList>(node, req).await?;
            if caller == Caller::Peer {
                // Repair hands references on; only the owner makes them.
                let n = node.clone();
                let owner = blocking(move || Ok(n.owner_key()?))
                    .await?
                    .unwrap_or_default();
                if list
                    .refs
                    .iter()
                    .any(|r| !metadata::signing::reference_verifies(r, &owner))
                {
                    return Err(Failure::new(
                        StatusCode::FORBIDDEN,
                        "a chunk reference not signed by the grid's owner",
                    ));
                }
            }
            if op == Op::RefsAdd {
                // A reference added without the shard hashes (a dedup hit or
                // a new referrer of stored chunks) inherits them from one
                // that has them, so keyless rebuilds keep their forgery
                // check whoever referenced the chunk first.
                let n = node.clone();
                list = blocking(move || {
                    for r in list.refs.iter_mut().filter(|r| r.shard_hashes.is_empty()) {
                        let page = n.db.scan_prefix(Table::ChunkRefs, &r.chunk_id, None, 8)?;
                        for (_, v) in page.items {
                            if let Ok(other) = ChunkReference::decode_record(&v) {
                                if !other.shard_hashes.is_empty() && other.erasure == r.erasure {
                                    // With their signature, which covers
                                    // them for any reference of the chunk.
                                    r.shard_hashes = other.shard_hashes;
                                    r.shard_len = other.shard_len;
                                    r.hashes_signature = other.hashes_signature;
                                    break;
                                }
                            }
                        }
                    }
                    Ok(list)
                })
                .await?;
            }
            let mut b = Batch::new();
            for r in &list.refs {
                // Decoding validated every reference, so each has a key.
                let key = r
                    .key()
                    .ok_or_else(|| Failure::bad_request("reference without referrer"))?;
                if op == Op::RefsAdd {
                    b.put(Table::ChunkRefs, &key, r);
                } else {
                    b.delete(Table::ChunkRefs, &key);
                }
            }
            let n = node.clone();
            if op == Op::RefsAdd {
                let mut chunks: Vec<Vec<u8>> = list.refs.into_iter().map(|r| r.chunk_id).collect();
                chunks.sort_unstable();
                chunks.dedup();
                // Ordered against garbage collection: once we answer, the
                // caller may rely on the chunk's shards staying (dedup).
                blocking(move || Ok(n.add_references(b, &chunks)?)).await?;
            } else {
                blocking(move || Ok(n.db.write(b)?)).await?;
            }
            no_content()
        }
        Op::RefsList => {
            let q = read_record::<api::RefQuery>(node, req).await?;
            let n = node.clone();
            let page = blocking(move || {
                let prefix = q.chunk_id.clone().unwrap_or_default();
                Ok(n.db.scan_prefix(
                    Table::ChunkRefs,
                    &prefix,
                    q.start_after.as_deref(),
                    q.limit as usize,
                )?)
            })
            .await?;
            let mut refs = Vec::with_capacity(page.items.len());
            for (_, v) in &page.items {
                refs.push(
                    ChunkReference::decode_record(v).map_err(|e| {
                        Failure::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
                    })?,
                );
            }
            let next_after = page.next.and(page.items.last().map(|(k, _)| k.clone()));
            ok_record(&api::RefPage { refs, next_after })
        }
        Op::Status => {
            let n = node.clone();
            let (job_programs, job_shipped_binaries) = (jobs.programs(), jobs.shipped_binaries());
            let status = blocking(move || {
                let usage = n.store.usage()?;
                let map = n.cluster_map()?;
                let map_epoch = map.as_ref().map_or(0, |m| m.epoch);
                let unheard = match (&map, n.peers.fresh()) {
                    (Some(m), Some(seen)) => seen.unheard_peers(m, &n.id),
                    _ => Vec::new(),
                };
                Ok(api::NodeStatus {
                    node_id: n.id.clone(),
                    site: n.site.clone(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    capacity_bytes: usage.quota.unwrap_or(usage.fs_total),
                    used_bytes: usage.used,
                    fs_free_bytes: usage.fs_free,
                    available_bytes: usage.available,
                    shard_count: usage.shards,
                    map_epoch,
                    io_backend: n.store.io_backend().name().into(),
                    uptime_ms: n.uptime_ms(),
                    repair: Some(n.repair.snapshot(n.scrub_last_done_ms()?.unwrap_or(0))),
                    metadata_replicas: n.metadata_replicas as u32,
                    unheard,
                    job_programs,
                    job_shipped_binaries,
                })
            })
            .await?;
            ok_record(&status)
        }
        Op::GetMap => {
            let n = node.clone();
            match blocking(move || Ok(n.cluster_map()?)).await? {
                Some(m) => ok_record(&m),
                None => Err(Failure::new(StatusCode::NOT_FOUND, "no cluster map yet")),
            }
        }
        Op::PutMap => {
            let map = read_record::<ClusterMap>(node, req).await?;
            let n = node.clone();
            let (accepted, epoch) = blocking(move || Ok(n.offer_map(&map)?)).await?;
            if accepted {
                tracing::info!(epoch, "cluster map updated");
            }
            ok_record(&api::MapAccepted { accepted, epoch })
        }
        Op::MapVote => {
            let proposal = read_record::<ClusterMap>(node, req).await?;
            let n = node.clone();
            let vote = blocking(move || Ok(crate::liveness::vote(&n, &proposal)?)).await?;
            ok_record(&vote)
        }
        Op::Health | Op::Metrics | Op::Unknown => {
            Err(Failure::new(StatusCode::NOT_FOUND, "no such call"))
        }
    }
}

/// A peer's compare-and-set is anti-entropy: it may only hand this node
/// a record the owner signed that wins the merge against the one held (a
/// newer revision), never delete one, put an older one back or make one
/// up.
fn peer_may_replace(node: &Node, table: Table, q: &api::CasRequest) -> Result<(), Failure> {
    let forbidden = |m: &str| Failure::new(StatusCode::FORBIDDEN, m.to_string());
    let new = q
        .new
        .as_deref()
        .ok_or_else(|| forbidden("a node may not delete records"))?;
    let owner = node
        .owner_key()?
        .ok_or_else(|| forbidden("this node follows no owner yet"))?;
    metadata::sealed::verify_signed(table, &q.key, new, &owner)
        .map_err(|_| forbidden("the record is not signed by the grid's owner"))?;
    if let Some(held) = node.db.get_raw(table, &q.key)? {
        if !metadata::replicated::newer(table, new, &held) {
            return Err(forbidden(
                "a node may only hand over a record newer than the one held",
            ));
        }
    }
    Ok(())
}

/// A peer may hand this node a shard only where the map this node holds
/// makes it that shard's home, for a chunk it holds a reference to, and
/// with the checksum that reference records for that index: a farm cannot
/// fill others' disks with shards of its own making or slip a forged one
/// in. Returns the recorded checksum, if any.
fn peer_may_place(node: &Node, key: &ShardKey) -> Result<Option<[u8; 32]>, Failure> {
    let forbidden = |m: String| Failure::new(StatusCode::FORBIDDEN, m);
    let map = node
        .cluster_map()?
        .ok_or_else(|| forbidden("this node holds no cluster map yet".into()))?;
    let page = node
        .db
        .scan_prefix(Table::ChunkRefs, &key.chunk[..], None, 16)?;
    let refs: Vec<ChunkReference> = page
        .items
        .iter()
        .filter_map(|(_, v)| ChunkReference::decode_record(v).ok())
        .collect();
    let Some(erasure) = refs.iter().find_map(|r| r.erasure) else {
        return Err(forbidden(format!(
            "no reference to chunk {} here: a node sends its references first",
            hex::encode(key.chunk)
        )));
    };
    let homes = metadata::placement::chunk_nodes(&map, &key.chunk[..], erasure.total())
        .map_err(|e| forbidden(format!("no placement under map {}: {e}", map.epoch)))?;
    if homes.get(key.index as usize).map(|n| n.id.as_str()) != Some(node.id.as_str()) {
        return Err(forbidden(format!(
            "this node is not the home of shard {} under map {}",
            key.index, map.epoch
        )));
    }
    Ok(refs
        .iter()
        .filter(|r| r.erasure == Some(erasure))
        .find_map(|r| r.shard_hashes.get(key.index as usize))
        .and_then(|h| <[u8; 32]>::try_from(h.as_slice()).ok()))
}

/// The checksum a shard put declares (see `node_api`): required, since a
/// peer's put is judged by it before its body arrives.
fn declared_checksum<B>(req: &Request<B>) -> Result<[u8; 32], Failure> {
    let value = req
        .headers()
        .get(api::HEADER_SHARD_CHECKSUM)
        .ok_or_else(|| {
            Failure::bad_request(format!("a shard put needs {}", api::HEADER_SHARD_CHECKSUM))
        })?;
    value
        .to_str()
        .ok()
        .and_then(api::parse_shard_checksum)
        .ok_or_else(|| {
            Failure::bad_request(format!(
                "malformed {}: 64 hex digits expected",
                api::HEADER_SHARD_CHECKSUM
            ))
        })
}

fn shard_key<B>(req: &Request<B>) -> Result<ShardKey, Failure> {
    let name = req
        .uri()
        .path()
        .strip_prefix(api::SHARDS)
        .unwrap_or_default();
    Ok(ShardKey::from_name(name)?)
}

fn meta_target<B>(req: &Request<B>) -> Result<(Table, Vec<u8>), Failure> {
    let rest = req.uri().path().strip_prefix(api::META).unwrap_or_default();
    let (table, key_hex) = rest
        .split_once('/')
        .ok_or_else(|| Failure::bad_request("expected /v1/meta/<table>/<key hex>"))?;
    let table = api::table_from_name(table)
        .ok_or_else(|| Failure::bad_request("unknown or private table"))?;
    let key = hex::decode(key_hex).map_err(|_| Failure::bad_request("key must be hex"))?;
    if key.is_empty() {
        return Err(Failure::bad_request("empty key"));
    }
    Ok((table, key))
}

/// Refuse what is not a sealed record: a node cannot read what gateways
/// store, but it stores only what has the shape they seal, so merges by
/// revision always have one to read.
fn check_value(table: Table, value: &[u8]) -> Result<(), Failure> {
    match table {
        Table::ChunkRefs | Table::System => Err(RecordError::Invalid("private table")),
        _ => metadata::sealed::check_envelope(value),
    }
    .map_err(Failure::from)
}

fn content_length<B>(req: &Request<B>) -> Result<Option<u64>, Failure> {
    match req.headers().get(header::CONTENT_LENGTH) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.parse().ok())
            .map(Some)
            .ok_or_else(|| Failure::bad_request("malformed content-length")),
    }
}

/// Collect a small body, refusing one beyond the message limit.
async fn read_body(node: &Node, req: Request<Incoming>) -> Result<Bytes, Failure> {
    if content_length(&req)?.is_some_and(|n| n > api::MAX_MESSAGE_BYTES) {
        return Err(Failure::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request body too large",
        ));
    }
    let body = Limited::new(req.into_body(), api::MAX_MESSAGE_BYTES as usize)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                Failure::new(StatusCode::PAYLOAD_TOO_LARGE, "request body too large")
            } else {
                Failure::bad_request(format!("reading body: {e}"))
            }
        })?
        .to_bytes();
    node.metrics.bytes_received.inc_by(body.len() as u64);
    Ok(body)
}

async fn read_record<R: Record>(node: &Node, req: Request<Incoming>) -> Result<R, Failure> {
    let body = read_body(node, req).await?;
    Ok(R::decode_record(&body)?)
}

/// What the body pump hands the blocking writer.
enum Piece {
    Data(Bytes),
    /// The body ended normally.
    End,
}

async fn put_shard(node: &Arc<Node>, req: Request<Incoming>, caller: Caller) -> Reply {
    let key = shard_key(&req)?;
    let checksum = declared_checksum(&req)?;
    if caller == Caller::Peer {
        let n = node.clone();
        let recorded = blocking(move || peer_may_place(&n, &key)).await?;
        // Without a recorded checksum a farm could plant any shard that
        // checks out by itself; repair always sends the references (which
        // carry the checksums) first.
        match recorded {
            Some(h) if h == checksum => {}
            Some(_) => {
                return Err(Failure::new(
                    StatusCode::FORBIDDEN,
                    "shard checksum differs from the one its writer recorded",
                ))
            }
            None => {
                return Err(Failure::new(
                    StatusCode::FORBIDDEN,
                    "no checksum recorded for this shard here: references first",
                ))
            }
        }
    }
    let len = content_length(&req)?.ok_or_else(|| {
        Failure::new(
            StatusCode::LENGTH_REQUIRED,
            "a shard put needs content-length",
        )
    })?;
    if len > api::MAX_SHARD_BYTES {
        return Err(Failure::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("shard of {len} bytes exceeds {}", api::MAX_SHARD_BYTES),
        ));
    }
    // The blocking writer verifies and writes while the body streams in;
    // it commits only after the shard verified and its checksum is the one
    // the request declared (the one a peer was judged by, see `node_api`),
    // so a cut stream, or a body other than the one declared, leaves
    // nothing.
    let (tx, mut rx) = mpsc::channel::<Piece>(8);
    let n = node.clone();
    let writer = tokio::task::spawn_blocking(move || -> Result<(), Failure> {
        let mut w = n.store.writer(key, len)?;
        w.expect_checksum(checksum);
        loop {
            match rx.blocking_recv() {
                Some(Piece::Data(b)) => w.write(&b)?,
                Some(Piece::End) => break,
                None => return Err(Failure::bad_request("request body cut short")),
            }
        }
        w.commit()?;
        Ok(())
    });
    let mut body = req.into_body();
    let mut received = 0u64;
    let pumped: Result<(), Failure> = loop {
        match body.frame().await {
            None => {
                // A closed writer has failed; its own error explains why.
                let _ = tx.send(Piece::End).await;
                break Ok(());
            }
            Some(Err(e)) => break Err(Failure::bad_request(format!("reading body: {e}"))),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    received += data.len() as u64;
                    // Once the writer has failed (507, bad shard), keep
                    // reading and dropping the body (at most the declared,
                    // bounded length): an HTTP/1.1 client still sending
                    // would otherwise see a reset instead of our answer.
                    if !tx.is_closed() {
                        let _ = tx.send(Piece::Data(data)).await;
                    }
                }
            }
        }
    };
    drop(tx);
    let written = writer.await.map_err(|e| {
        Failure::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("writer failed: {e}"),
        )
    })?;
    node.metrics.bytes_received.inc_by(received);
    // The writer's verdict explains a failure best (507, bad shard); a
    // transport error matters only if the writer did not already fail.
    written?;
    pumped?;
    Ok(reply(StatusCode::CREATED, Bytes::new()))
}

async fn get_shard(node: &Arc<Node>, req: &Request<Incoming>) -> Reply {
    let key = shard_key(req)?;
    let range = api::parse_range_query(req.uri().query()).map_err(Failure::bad_request)?;
    // A shard in memory is answered here; the blocking pool is for the
    // disk. A failure here is left to the blocking read to report.
    if let Ok(Some(bytes)) = node.store.read_cached(&key, range, READ_PIECE) {
        let len = bytes.len() as u64;
        node.metrics.bytes_sent.inc_by(len);
        return Ok(sized(full(bytes), len));
    }
    let n = node.clone();
    let (reader, offset, len, first) = blocking(move || {
        let reader = n.store.open_shard(&key)?;
        let (offset, len) = reader.check_range(range)?;
        let first = reader.read(offset, len.min(READ_PIECE))?;
        Ok((reader, offset, len, first))
    })
    .await?;
    node.metrics.bytes_sent.inc_by(len);
    let body = if len <= READ_PIECE {
        full(first)
    } else {
        stream_rest(reader, offset, len, first)
    };
    Ok(sized(body, len))
}

/// A 200 answer of `len` bytes, declared up front (also for a streamed
/// body), so a reader can tell a cut-off answer.
fn sized(body: ResponseBody, len: u64) -> Response<ResponseBody> {
    let mut resp = Response::new(body);
    resp.headers_mut()
        .insert(header::CONTENT_LENGTH, http::HeaderValue::from(len));
    resp
}

/// A body fed piece by piece by a blocking reader, at most two pieces
/// ahead of the network.
fn stream_rest(reader: ShardReader, offset: u64, len: u64, first: Vec<u8>) -> ResponseBody {
    let (tx, rx) = mpsc::channel::<Result<Bytes, BodyError>>(2);
    tokio::task::spawn_blocking(move || {
        if tx.blocking_send(Ok(first.into())).is_err() {
            return;
        }
        let mut at = offset + READ_PIECE;
        let end = offset + len;
        while at < end {
            let n = (end - at).min(READ_PIECE);
            let piece = reader.read(at, n).map(Bytes::from).map_err(BodyError::from);
            let failed = piece.is_err();
            if tx.blocking_send(piece).is_err() || failed {
                return;
            }
            at += n;
        }
    });
    ChannelBody::new(rx).boxed()
}

async fn metrics(node: &Arc<Node>) -> Reply {
    let n = node.clone();
    blocking(move || {
        let usage = n.store.usage()?;
        let m = &n.metrics;
        m.shards.set(usage.shards as i64);
        m.used_bytes.set(usage.used as i64);
        m.free_bytes.set(usage.fs_free as i64);
        m.available_bytes
            .set(usage.available.min(i64::MAX as u64) as i64);
        let map = n.cluster_map()?;
        m.map_epoch.set(map.as_ref().map_or(0, |c| c.epoch) as i64);
        m.peer_unheard_seconds.clear();
        m.peer_lost_in_seconds.clear();
        if let (Some(map), Some(seen)) = (&map, n.peers.fresh()) {
            for p in seen.unheard_peers(map, &n.id) {
                let l = crate::metrics::PeerLabels { peer: p.node_id };
                m.peer_unheard_seconds
                    .get_or_create(&l)
                    .set((p.unheard_ms / 1000) as i64);
                m.peer_lost_in_seconds
                    .get_or_create(&l)
                    .set((p.lost_in_ms / 1000) as i64);
            }
        }
        let r = &n.repair;
        for (what, v) in [
            ("missing", &r.missing),
            ("rebuilding", &r.rebuilding),
            ("waiting", &r.waiting),
            ("at_risk", &r.at_risk),
            ("rebuilt_shards", &r.rebuilt_shards),
            ("rebuilt_bytes", &r.rebuilt_bytes),
            ("failed_rebuilds", &r.failed_rebuilds),
            ("handed_back", &r.handed_back),
            ("scrubbed_shards", &r.scrubbed_shards),
            ("scrubbed_bytes", &r.scrubbed_bytes),
            ("corrupt_found", &r.corrupt_found),
        ] {
            let v = v.load(std::sync::atomic::Ordering::Relaxed);
            m.repair
                .get_or_create(&crate::metrics::RepairLabels { what })
                .set(v.min(i64::MAX as u64) as i64);
        }
        Ok(())
    })
    .await?;
    let mut r = reply(StatusCode::OK, node.metrics.render());
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
    );
    Ok(r)
}

/// Serve `listener` until `shutdown` resolves, then stop accepting and let
/// requests in flight finish (at most `grace`). Connections live in a
/// `JoinSet` owned by this future: dropping it (aborting its task) closes
/// the port and every connection at once, which is how an in-process test
/// cluster "kills" a node.
pub async fn serve(
    listener: TcpListener,
    served: Served,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) {
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let tls = served
        .node
        .identity
        .server_config(served.node.admission.clone());
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let mut conns = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let (s, acceptor, builder) = (served.clone(), acceptor.clone(), builder.clone());
                let watcher = graceful.watcher();
                // The handshake runs in the connection's task, so a slow or
                // silent client holds up no one else.
                conns.spawn(async move {
                    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => tls,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    };
                    let client = grid::tls::peer_key(tls.get_ref().1);
                    let svc = hyper::service::service_fn(move |req| {
                        let s = s.clone();
                        async move { Ok::<_, Infallible>(handle(s, client, req).await) }
                    });
                    let conn = builder.serve_connection(TokioIo::new(tls), svc).into_owned();
                    if let Err(e) = watcher.watch(conn).await {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    tracing::info!("shutting down: no new connections, finishing requests in flight");
    tokio::select! {
        () = async {
            graceful.shutdown().await;
            while conns.join_next().await.is_some() {}
        } => tracing::info!("all connections closed"),
        () = tokio::time::sleep(grace) => {
            tracing::warn!(?grace, "grace period over; closing connections with requests in flight")
        }
    }
}
