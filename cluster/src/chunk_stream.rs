//! Objects as streams of chunks: the write pipeline (body → content-defined
//! chunks → dedup check → seal → shards on the grid → chunk references)
//! and the read stream (manifest → chunks covering a range → bytes).
//!
//! Memory: a write holds the chunker's buffer (one and a half
//! maximum-size chunks) plus up to `chunks_in_flight` chunks being sealed
//! or sent, and all the writes of a store together hold at most
//! `write_bytes_in_flight` bytes of chunks in flight; a read holds two
//! chunks. None of it depends on the object's size.

use crate::checksum::{ChecksumAlgorithm, DigestResult, Digests};
use crate::config::StoreConfig;
use crate::error::{Error, Result};
use crate::secrets::Sealing;
use bytes::Bytes;
use codec::{ChunkId, Chunker, ErasureParams, SealConfig, SealedChunk, Sealer};
use futures_util::{Stream, StreamExt};
use grid::chunk_io::{self, ChunkSecret, Grid};
use metadata::model::{ChunkRef, ChunkReference, ErasureSpec, ObjectVersion, Referrer};
use metadata::ShardKey;
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

/// An object's bytes as they arrive from the grid.
pub type ObjectBody = Pin<Box<dyn Stream<Item = Result<Bytes>> + Send>>;

/// A chunk a read found damaged or short of shards: work for the repair
/// daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepairHint {
    pub chunk: ChunkId,
    pub erasure: ErasureSpec,
    /// Shard indexes no node asked had.
    pub missing: Vec<usize>,
    /// (shard index, node) pairs whose shard failed verification.
    pub corrupt: Vec<(usize, String)>,
}

/// Where damaged or short chunks a read meets are reported: the repair
/// daemon's queue, when the process has one.
#[derive(Clone, Default)]
pub(crate) struct RepairSink(pub Option<mpsc::Sender<RepairHint>>);

impl RepairSink {
    /// Queue a hint (or log it when no queue is attached). Hints are
    /// dropped, with a warning, when the queue is full: scrubbing finds
    /// what a dropped hint would have named.
    pub(crate) fn report(&self, hint: RepairHint) {
        if let Some(tx) = &self.0 {
            if tx.try_send(hint).is_err() {
                tracing::warn!("repair queue full or closed; dropping a hint");
            }
        } else if !hint.missing.is_empty() || !hint.corrupt.is_empty() {
            tracing::info!(chunk = %hint.chunk, missing = ?hint.missing, corrupt = ?hint.corrupt,
                "damaged chunk read (no repair queue attached)");
        }
    }
}

/// What moving chunks needs of the object layer, and nothing more: the
/// grid as of the request, the tunables, and the repair sink.
#[derive(Clone)]
pub(crate) struct ChunkIo {
    pub grid: Arc<Grid>,
    pub cfg: Arc<StoreConfig>,
    pub repair: RepairSink,
    /// Signs every chunk reference written, so nodes can refuse made-up
    /// ones from peers.
    pub owner: Arc<metadata::signing::OwnerKey>,
    /// Bytes of chunks in flight, shared by every write of the store.
    pub write_budget: Arc<tokio::sync::Semaphore>,
}

/// What to write and under which name.
#[derive(Clone)]
pub(crate) struct WriteCtx {
    pub io: ChunkIo,
    pub sealing: Sealing,
    pub erasure: ErasureSpec,
    pub referrer: Referrer,
    pub algorithms: Vec<ChecksumAlgorithm>,
    /// Objects up to this size are returned sealed, for the manifest.
    pub inline_threshold: usize,
}

/// What a write produced.
pub(crate) struct Written {
    pub size: u64,
    /// The chunks written, referenced under the write's referrer until a
    /// record names them.
    pub refs: PendingRefs,
    pub inline: Vec<u8>,
    pub digests: DigestResult,
}

thread_local! {
    // Sealers keep compressor and coder state; one per blocking thread
    // per shape, so the hot path allocates nothing once warm.
    static SEALERS: RefCell<Vec<((usize, usize), Sealer)>> = const { RefCell::new(Vec::new()) };
}

fn seal_on_this_thread(
    sealing: &Sealing,
    erasure: ErasureSpec,
    id: ChunkId,
    plain: &[u8],
) -> Result<SealedChunk> {
    let shape = (erasure.data as usize, erasure.parity as usize);
    SEALERS.with(|cell| {
        let mut sealers = cell.borrow_mut();
        let pos = match sealers.iter().position(|(s, _)| *s == shape) {
            Some(p) => p,
            None => {
                let params = ErasureParams::new(shape.0, shape.1)
                    .map_err(|e| Error::Internal(format!("erasure shape: {e}")))?;
                let sealer = Sealer::new(SealConfig::new(params))
                    .map_err(|e| Error::Internal(format!("sealer: {e}")))?;
                sealers.push((shape, sealer));
                sealers.len() - 1
            }
        };
        let sealer = &mut sealers[pos].1;
        let mut out = SealedChunk::default();
        let r = match sealing {
            Sealing::Domain(domain) => sealer.seal_chunk(domain, id, plain, &mut out),
            Sealing::Customer(_, customer) => {
                sealer.seal_with_key(id, &customer.chunk_key(&id), [0; 12], plain, &mut out)
            }
        };
        r.map_err(|e| Error::Internal(format!("seal: {e}")))?;
        Ok(out)
    })
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    grid::blocking(f)
        .await
        .map_err(|e| Error::Internal(e.to_string()))
}

/// Read `body` to its end, storing it as chunks (or returning it sealed
/// for inline storage when small).
pub(crate) async fn write_stream<S, E>(ctx: WriteCtx, mut body: S) -> Result<Written>
where
    S: Stream<Item = std::result::Result<Bytes, E>> + Send + Unpin,
    E: std::fmt::Display,
{
    let cfg = &ctx.io.cfg;
    let max_size = cfg.max_object_size;
    let in_flight = cfg.chunks_in_flight.max(1);
    let mut chunker = Chunker::new(cfg.chunker.with_seed(ctx.sealing.domain().cdc_seed()))
        .map_err(|e| Error::Internal(format!("chunker: {e}")))?;

    // Digests run on their own thread, fed in order, beside the chunking.
    let (dtx, mut drx) = tokio::sync::mpsc::channel::<Bytes>(8);
    let algorithms = ctx.algorithms.clone();
    let digester = tokio::task::spawn_blocking(move || {
        let mut d = Digests::new(&algorithms);
        while let Some(b) = drx.blocking_recv() {
            d.update(&b);
        }
        d.finish()
    });

    let mut pending: VecDeque<tokio::task::JoinHandle<Result<ChunkRef>>> = VecDeque::new();
    let mut chunks: Vec<ChunkRef> = Vec::new();
    let mut size: u64 = 0;
    let mut emitted = false;

    let outcome: Result<()> = async {
        loop {
            let piece = match body.next().await {
                Some(Ok(p)) => p,
                Some(Err(e)) => return Err(Error::Body(e.to_string())),
                None => break,
            };
            size += piece.len() as u64;
            if size > max_size {
                return Err(Error::EntityTooLarge {
                    size,
                    max: max_size,
                });
            }
            chunker.push(&piece);
            if dtx.send(piece).await.is_err() {
                return Err(Error::Internal("digest thread stopped".into()));
            }
            while let Some(c) = chunker.next_chunk() {
                emitted = true;
                let plain = Bytes::copy_from_slice(c.data);
                let offset = c.offset;
                while pending.len() >= in_flight {
                    if let Some(h) = pending.pop_front() {
                        chunks.push(join(h).await?);
                    }
                }
                pending.push_back(spawn_store_chunk(&ctx, offset, plain).await?);
            }
        }
        chunker.finish();
        Ok(())
    }
    .await;
    drop(dtx);
    if let Err(e) = outcome {
        abandon(&ctx, pending, &chunks).await;
        return Err(e);
    }

    let mut inline = Vec::new();
    if !emitted && size > 0 && size as usize <= ctx.inline_threshold {
        if let Some(c) = chunker.next_chunk() {
            let plain = c.data.to_vec();
            let sealing = ctx.sealing.clone();
            let sealed = blocking(move || {
                let id = chunk_id_for(&sealing, &plain);
                seal_on_this_thread(&sealing, ErasureSpec::new(1, 0), id, &plain)
            })
            .await??;
            inline = sealed.shard(0);
        }
    } else {
        while let Some(c) = chunker.next_chunk() {
            let plain = Bytes::copy_from_slice(c.data);
            let offset = c.offset;
            while pending.len() >= in_flight {
                if let Some(h) = pending.pop_front() {
                    match join(h).await {
                        Ok(r) => chunks.push(r),
                        Err(e) => {
                            abandon(&ctx, pending, &chunks).await;
                            return Err(e);
                        }
                    }
                }
            }
            match spawn_store_chunk(&ctx, offset, plain).await {
                Ok(h) => pending.push_back(h),
                Err(e) => {
                    abandon(&ctx, pending, &chunks).await;
                    return Err(e);
                }
            }
        }
    }
    while let Some(h) = pending.pop_front() {
        match join(h).await {
            Ok(r) => chunks.push(r),
            Err(e) => {
                abandon(&ctx, pending, &chunks).await;
                return Err(e);
            }
        }
    }
    let refs = PendingRefs::new(&ctx.io, ctx.referrer.clone(), chunks);
    let digests = digester
        .await
        .map_err(|e| Error::Internal(format!("digest thread: {e}")))?;
    Ok(Written {
        size,
        refs,
        inline,
        digests,
    })
}

/// Store one chunk in a task of its own once the store's write budget has
/// room for it; the budget is given back when the chunk is stored or
/// failed.
async fn spawn_store_chunk(
    ctx: &WriteCtx,
    offset: u64,
    plain: Bytes,
) -> Result<tokio::task::JoinHandle<Result<ChunkRef>>> {
    let budget = &ctx.io.write_budget;
    // A chunk larger than the whole budget waits for all of it.
    let cost = plain
        .len()
        .clamp(1, ctx.io.cfg.write_bytes_in_flight.max(1));
    let permit = budget
        .clone()
        .acquire_many_owned(u32::try_from(cost).unwrap_or(u32::MAX))
        .await
        .map_err(|_| Error::Internal("the write budget is closed".into()))?;
    let ctx = ctx.clone();
    Ok(tokio::spawn(async move {
        let stored = store_chunk(ctx, offset, plain).await;
        drop(permit);
        stored
    }))
}

async fn join(h: tokio::task::JoinHandle<Result<ChunkRef>>) -> Result<ChunkRef> {
    h.await
        .map_err(|e| Error::Internal(format!("chunk task: {e}")))?
}

/// A failed write: stop the chunks still in flight and drop the references
/// of those stored, so their shards can be collected. References a stopped
/// task had already added are found by the orphan sweep (see `gc`).
async fn abandon(
    ctx: &WriteCtx,
    pending: VecDeque<tokio::task::JoinHandle<Result<ChunkRef>>>,
    done: &[ChunkRef],
) {
    for h in pending {
        h.abort();
    }
    PendingRefs::new(&ctx.io, ctx.referrer.clone(), done.to_vec())
        .release()
        .await;
}

fn chunk_id_for(sealing: &Sealing, plain: &[u8]) -> ChunkId {
    if sealing.dedup() {
        sealing.domain().chunk_id(plain)
    } else {
        // Random ids: a customer-keyed chunk never matches another one, so
        // equal content stays invisible across keys.
        ChunkId(rand::random())
    }
}

/// This write's reference to chunk `id`, unsigned, without shard hashes.
fn reference(ctx: &WriteCtx, id: &ChunkId) -> ChunkReference {
    ChunkReference {
        chunk_id: id.0.to_vec(),
        erasure: Some(ctx.erasure),
        referrer: Some(ctx.referrer.clone()),
        created_ms: grid::clock::now_ms(),
        ..ChunkReference::default()
    }
}

/// Store one chunk (or find it already stored) and reference it.
pub(crate) async fn store_chunk(ctx: WriteCtx, offset: u64, plain: Bytes) -> Result<ChunkRef> {
    let grid = &ctx.io.grid;
    let n = ctx.erasure.total();
    let len = plain.len() as u64;
    let sealing = ctx.sealing.clone();
    let (id, plain) = blocking(move || (chunk_id_for(&sealing, &plain), plain)).await?;
    let homes = grid
        .shard_homes(&id, n)
        .map_err(chunk_io::ChunkError::from)?;
    let chunk_ref = |shard_len: u32| ChunkRef {
        id: id.0.to_vec(),
        offset,
        len,
        erasure: Some(ctx.erasure),
        shard_len,
    };

    if ctx.sealing.dedup() {
        // Reference first, then look: once a node has the reference it
        // never collects the chunk, so shards found now stay.
        if let Some(shard_len) = already_stored(&ctx, &id, &homes).await {
            return Ok(chunk_ref(shard_len));
        }
    }

    let sealing = ctx.sealing.clone();
    let erasure = ctx.erasure;
    let sealed = blocking(move || seal_on_this_thread(&sealing, erasure, id, &plain)).await??;
    let shard_len = (sealed.header(0).len() + sealed.body(0).len()) as u32;
    let mut full = reference(&ctx, &id);
    full.shard_len = shard_len;
    full.shard_hashes = (0..n)
        .map(|i| {
            let h = sealed.header(i);
            h[h.len() - 32..].to_vec()
        })
        .collect();
    ctx.io.owner.sign_reference(&mut full);

    // A holder that dies between taking its shard and taking the reference
    // leaves the chunk a shard short: store the chunk again (the dead node
    // is then handed over) rather than acknowledge it under-replicated.
    let mut attempt = 0;
    loop {
        attempt += 1;
        let report = chunk_io::put_chunk(grid, &sealed).await?;
        match reference_holders(&ctx, &full, &report.holders, &homes).await {
            Ok(()) => break,
            Err(detail) if attempt < 3 => {
                tracing::warn!(chunk = %id, %detail, "storing the chunk again");
            }
            Err(detail) => {
                return Err(Error::Chunk(chunk_io::ChunkError::Quorum {
                    chunk: id,
                    stored: n,
                    shards: n,
                    detail,
                }))
            }
        }
    }
    drop(sealed);
    Ok(chunk_ref(shard_len))
}

/// Give every holder (and every home, for repair to know) the chunk's
/// reference. Every holder must take it: a shard without a reference is
/// collected.
async fn reference_holders(
    ctx: &WriteCtx,
    full: &ChunkReference,
    holders: &[String],
    homes: &[String],
) -> std::result::Result<(), String> {
    let grid = &ctx.io.grid;
    let holders: BTreeSet<String> = holders.iter().cloned().collect();
    let mut targets = holders.clone();
    targets.extend(homes.iter().cloned());
    // A home that hung lately and holds nothing of this write is skipped:
    // repair brings it the reference later.
    targets.retain(|n| holders.contains(n) || !grid.is_suspect(n));
    let mut tasks = JoinSet::new();
    for node in targets.iter().cloned() {
        let client = grid.client(&node).cloned();
        let r = full.clone();
        tasks.spawn(async move {
            let result = match client {
                Some(c) => c.refs_add(vec![r]).await.map_err(|e| e.to_string()),
                None => Err("not in the cluster map".to_string()),
            };
            (node, result)
        });
    }
    // A hung home that holds no shard of this write only misses a
    // reference repair brings it later; a hung holder fails the attempt
    // (the chunk is stored again around it).
    let (mut results, left_behind) = grid.join_calls(&mut tasks, &targets, Result::is_ok).await;
    for node in left_behind {
        results.push((
            node,
            Err("too slow: no answer long after the others".into()),
        ));
    }
    let mut failed = Vec::new();
    for (node, result) in results {
        if let Err(e) = result {
            if holders.contains(&node) {
                failed.push(format!(
                    "holder {node} did not take the chunk reference: {e}"
                ));
            }
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(failed.join("; "))
    }
}

/// Add this write's reference on every home of chunk `id` and ask each
/// whether it holds its shards; `Some(shard length)` if all are there.
async fn already_stored(ctx: &WriteCtx, id: &ChunkId, homes: &[String]) -> Option<u32> {
    let grid = &ctx.io.grid;
    let mut by_node: BTreeMap<&str, Vec<ShardKey>> = BTreeMap::new();
    for (i, node) in homes.iter().enumerate() {
        by_node
            .entry(node.as_str())
            .or_default()
            .push(ShardKey::new(id.0, i).ok()?);
    }
    let mut tasks = JoinSet::new();
    let mut asked = Vec::new();
    let mut signed = reference(ctx, id);
    ctx.io.owner.sign_reference(&mut signed);
    for (node, keys) in by_node {
        if grid.is_suspect(node) {
            // Hung lately: the chunk cannot be known stored there; it is
            // written again, which hands that shard off.
            return None;
        }
        asked.push(node.to_string());
        let client = grid.client(node).cloned()?;
        let r = signed.clone();
        let name = node.to_string();
        tasks.spawn(async move {
            let answer = async {
                client.refs_add(vec![r]).await.ok()?;
                client.has_shards(&keys).await.ok()
            }
            .await;
            (name, answer)
        });
    }
    let mut shard_len = None;
    // A hung home makes the chunk "not known stored": it is then written
    // again, which hands its shard off.
    let (answers, left_behind) = grid.join_calls(&mut tasks, &asked, Option::is_some).await;
    let mut complete = left_behind.is_empty();
    for (_, answer) in answers {
        match answer {
            Some(lens) if lens.iter().all(|l| *l > 0) => {
                shard_len = lens.first().map(|l| *l as u32);
            }
            _ => complete = false,
        }
    }
    if complete {
        shard_len
    } else {
        None
    }
}

/// Chunk references a write added under one referrer that no durable
/// record names yet. Every way out settles them: [`PendingRefs::keep`]
/// once a record names them, [`PendingRefs::release`] on a failure; a
/// guard dropped unsettled (an early `?`, a client gone mid-request)
/// releases them in the background, so nothing waits for the orphan
/// sweep that a failure path forgot.
#[must_use = "pending references must be kept or released"]
pub(crate) struct PendingRefs {
    io: ChunkIo,
    referrer: Referrer,
    chunks: Vec<ChunkRef>,
}

impl PendingRefs {
    pub(crate) fn new(io: &ChunkIo, referrer: Referrer, chunks: Vec<ChunkRef>) -> Self {
        Self {
            io: io.clone(),
            referrer,
            chunks,
        }
    }

    pub(crate) fn chunks(&self) -> &[ChunkRef] {
        &self.chunks
    }

    /// One more chunk referenced under the same referrer.
    pub(crate) fn push(&mut self, c: ChunkRef) {
        self.chunks.push(c);
    }

    /// Settle the references of the chunks `named` picks out as kept
    /// (a record names them); the others stay pending.
    pub(crate) fn keep_where(&mut self, named: impl Fn(&ChunkRef) -> bool) {
        self.chunks.retain(|c| !named(c));
    }

    /// Take over `other`'s references (same referrer), leaving it settled.
    pub(crate) fn absorb(&mut self, mut other: PendingRefs) {
        debug_assert_eq!(self.referrer, other.referrer);
        self.chunks.append(&mut other.chunks);
    }

    /// A record now names these chunks: the references stay.
    pub(crate) fn keep(mut self) {
        self.chunks.clear();
    }

    /// Remove the references (best effort: what fails here the orphan
    /// sweep removes later).
    pub(crate) async fn release(mut self) {
        let chunks = std::mem::take(&mut self.chunks);
        remove_refs(&self.io, &self.referrer, &chunks).await;
    }

    /// Keep the references if `r` succeeded, release them if it failed.
    pub(crate) async fn settle<T>(self, r: Result<T>) -> Result<T> {
        match r {
            Ok(v) => {
                self.keep();
                Ok(v)
            }
            Err(e) => {
                self.release().await;
                Err(e)
            }
        }
    }
}

impl Drop for PendingRefs {
    fn drop(&mut self) {
        if self.chunks.is_empty() {
            return;
        }
        let (io, referrer) = (self.io.clone(), self.referrer.clone());
        let chunks = std::mem::take(&mut self.chunks);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move { remove_refs(&io, &referrer, &chunks).await });
        }
    }
}

/// Remove `referrer`'s references to `chunks` from their homes (best
/// effort: what fails here the orphan sweep removes later).
pub(crate) async fn remove_refs(io: &ChunkIo, referrer: &Referrer, chunks: &[ChunkRef]) {
    let grid = &io.grid;
    let mut by_node: BTreeMap<String, Vec<ChunkReference>> = BTreeMap::new();
    for c in chunks {
        let Some(id) = chunk_id_of(c) else { continue };
        let n = c.erasure.map_or(1, |e| e.total());
        let Ok(nodes) = grid.placement(&id, n) else {
            continue;
        };
        for node in nodes {
            by_node.entry(node).or_default().push(ChunkReference {
                chunk_id: c.id.clone(),
                erasure: c.erasure,
                referrer: Some(referrer.clone()),
                ..Default::default()
            });
        }
    }
    send_refs(io, by_node, false).await;
}

/// Add references for `referrer` to `chunks` on their homes. A node may
/// fail; the call fails only when some chunk ends up referenced on fewer
/// homes than it has data shards. The references are pending until the
/// caller keeps them (a record now names them) or releases them.
pub(crate) async fn add_refs(
    io: &ChunkIo,
    referrer: &Referrer,
    chunks: &[ChunkRef],
) -> Result<PendingRefs> {
    let grid = &io.grid;
    let now = grid::clock::now_ms();
    let mut by_node: BTreeMap<String, Vec<ChunkReference>> = BTreeMap::new();
    let mut homes_of: BTreeMap<Vec<u8>, Vec<String>> = BTreeMap::new();
    for c in chunks {
        let Some(id) = chunk_id_of(c) else {
            return Err(Error::Corrupt("chunk id length".into()));
        };
        let n = c.erasure.map_or(1, |e| e.total());
        let nodes = grid.placement(&id, n).map_err(chunk_io::ChunkError::from)?;
        let mut r = ChunkReference {
            chunk_id: c.id.clone(),
            erasure: c.erasure,
            shard_len: c.shard_len,
            referrer: Some(referrer.clone()),
            created_ms: now,
            ..ChunkReference::default()
        };
        io.owner.sign_reference(&mut r);
        for node in &nodes {
            by_node.entry(node.clone()).or_default().push(r.clone());
        }
        homes_of.insert(c.id.clone(), nodes);
    }
    let failed = send_refs(io, by_node, true).await;
    // Whatever happens next, these references are pending: a failure
    // below releases those that did land.
    let refs = PendingRefs::new(io, referrer.clone(), chunks.to_vec());
    // Each chunk needs its reference on enough homes to outlive the
    // collection of the old referrer: at least its data shards' count.
    for c in chunks {
        let homes = &homes_of[&c.id];
        let ok = homes.iter().filter(|h| !failed.contains(*h)).count();
        let need = c.erasure.map_or(1, |e| e.data as usize).min(homes.len());
        if ok < need {
            refs.release().await;
            return Err(Error::Chunk(chunk_io::ChunkError::Quorum {
                chunk: chunk_id_of(c).unwrap_or(ChunkId([0; 32])),
                stored: ok,
                shards: homes.len(),
                detail: "too few nodes took the chunk reference".into(),
            }));
        }
    }
    Ok(refs)
}

fn chunk_id_of(c: &ChunkRef) -> Option<ChunkId> {
    Some(ChunkId(c.id.as_slice().try_into().ok()?))
}

/// Send reference batches (add or remove) to their nodes in parallel;
/// returns the nodes that failed.
async fn send_refs(
    io: &ChunkIo,
    by_node: BTreeMap<String, Vec<ChunkReference>>,
    add: bool,
) -> BTreeSet<String> {
    let grid = &io.grid;
    let mut tasks = JoinSet::new();
    let expected: BTreeSet<String> = by_node.keys().cloned().collect();
    let mut asked = Vec::new();
    for (node, refs) in by_node {
        if grid.is_suspect(&node) {
            // Hung lately: counted as failed without waiting for it.
            continue;
        }
        asked.push(node.clone());
        let client = grid.client(&node).cloned();
        tasks.spawn(async move {
            let Some(c) = client else {
                return (node, false);
            };
            for batch in refs.chunks(grid::node_api::MAX_ITEMS) {
                let r = if add {
                    c.refs_add(batch.to_vec()).await
                } else {
                    c.refs_remove(batch.to_vec()).await
                };
                if let Err(e) = r {
                    tracing::debug!(%node, error = %e, add, "chunk reference update failed");
                    return (node, false);
                }
            }
            (node, true)
        });
    }
    // A hung node counts as failed after about a second: callers decide by
    // how many homes took the references, not by waiting for all.
    let (done, _) = grid.join_calls(&mut tasks, &asked, |ok| *ok).await;
    let succeeded: BTreeSet<String> = done
        .into_iter()
        .filter(|(_, ok)| *ok)
        .map(|(node, _)| node)
        .collect();
    expected.difference(&succeeded).cloned().collect()
}

/// How to open an object's chunks.
#[derive(Clone)]
pub(crate) enum ReadKey {
    Domain(codec::DomainKey),
    Customer(crate::secrets::CustomerKey),
}

/// Open an inline object.
pub(crate) async fn open_inline(key: &ReadKey, sealed: Vec<u8>) -> Result<Vec<u8>> {
    let key = key.clone();
    blocking(move || {
        let header = codec::shard::ShardHeader::parse(&sealed)
            .map_err(|e| Error::Corrupt(format!("inline object: {e}")))?;
        let id = header.chunk_id;
        let shards = [sealed.as_slice()];
        let r = codec::with_opener(|opener| match &key {
            ReadKey::Domain(d) => opener.open(d, &id, &shards).map(|(p, _)| p),
            ReadKey::Customer(c) => {
                let mut out = Vec::new();
                opener
                    .open_with_key(&id, &c.chunk_key(&id), &shards, &mut out)
                    .map(|_| out)
            }
        });
        r.map_err(|e| Error::Corrupt(format!("inline object: {e}")))
    })
    .await?
}

/// The bytes `[start, end)` of the object `v` as a stream. Only the chunks
/// covering the range are fetched, [`READ_AHEAD_BYTES`] worth of chunks (at
/// least two) ahead of the reader.
pub(crate) fn read_stream(
    io: ChunkIo,
    v: &ObjectVersion,
    key: ReadKey,
    start: u64,
    end: u64,
) -> ObjectBody {
    if start >= end {
        return Box::pin(futures_util::stream::empty());
    }
    if v.chunks.is_empty() {
        let sealed = v.inline_data.clone();
        return Box::pin(futures_util::stream::once(async move {
            let plain = open_inline(&key, sealed).await?;
            let (s, e) = (start as usize, (end as usize).min(plain.len()));
            Ok(Bytes::from(plain).slice(s.min(e)..e))
        }));
    }
    // Chunks are contiguous and ordered: find the first covering `start`.
    let first = v.chunks.partition_point(|c| c.offset + c.len <= start);
    let wanted: Vec<ChunkRef> = v.chunks[first..]
        .iter()
        .take_while(|c| c.offset < end)
        .cloned()
        .collect();
    let ahead = read_ahead(&wanted);
    let fetches = futures_util::stream::iter(wanted).map(move |c| {
        let io = io.clone();
        let key = key.clone();
        async move {
            let plain = fetch_chunk(&io, &key, &c).await?;
            let s = start.saturating_sub(c.offset) as usize;
            let e = ((end - c.offset).min(c.len)) as usize;
            Ok(Bytes::from(plain).slice(s..e))
        }
    });
    Box::pin(fetches.buffered(ahead))
}

/// How many plaintext bytes a read stream fetches and opens ahead of its
/// reader. A chunk read waits on a node round trip, a disk read and a
/// blocking-pool hand-off; two chunks in flight left a core idle on a
/// single large GET, four (at the default 1 MiB chunks) kept both busy
/// (docs/benchmarks.md). Each chunk in flight holds its shards and then
/// its plaintext, so the window is counted in bytes, not chunks.
pub(crate) const READ_AHEAD_BYTES: u64 = 4 << 20;

/// Chunks in flight for a read of `chunks`: [`READ_AHEAD_BYTES`] at their
/// mean size, at least 2 and at most 8.
fn read_ahead(chunks: &[ChunkRef]) -> usize {
    let total: u64 = chunks.iter().map(|c| c.len).sum();
    let mean = total / (chunks.len() as u64).max(1);
    (READ_AHEAD_BYTES / mean.max(1)).clamp(2, 8) as usize
}

/// One chunk's plaintext, checked against the manifest's length.
pub(crate) async fn fetch_chunk(io: &ChunkIo, key: &ReadKey, c: &ChunkRef) -> Result<Vec<u8>> {
    let id = chunk_id_of(c).ok_or_else(|| Error::Corrupt("chunk id length".into()))?;
    let erasure = c
        .erasure
        .ok_or_else(|| Error::Corrupt("chunk without erasure shape".into()))?;
    let secret = match key {
        ReadKey::Domain(d) => ChunkSecret::Domain(d.clone()),
        ReadKey::Customer(k) => ChunkSecret::Key(k.chunk_key(&id)),
    };
    let (k, m) = (erasure.data as usize, erasure.parity as usize);
    let result = chunk_io::get_chunk_with(&io.grid, &secret, &id, k, m).await;
    match &result {
        Ok((_, report)) if !report.missing.is_empty() || !report.corrupt.is_empty() => {
            io.repair.report(RepairHint {
                chunk: id,
                erasure,
                missing: report.missing.clone(),
                corrupt: report.corrupt.clone(),
            });
        }
        Err(chunk_io::ChunkError::Unreadable { .. }) => io.repair.report(RepairHint {
            chunk: id,
            erasure,
            missing: (0..k + m).collect(),
            corrupt: Vec::new(),
        }),
        _ => {}
    }
    let (plain, _) = result?;
    if plain.len() as u64 != c.len {
        return Err(Error::Corrupt(format!(
            "chunk {id} opened to {} bytes, the manifest says {}",
            plain.len(),
            c.len
        )));
    }
    Ok(plain)
}
