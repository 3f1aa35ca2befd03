//! Self-healing on one node: reconciliation of what the node should hold
//! with what it has, and keyless rebuild of what is missing.
//!
//! A node knows which shards it should hold from the chunk references
//! placed on it and the cluster map it holds: shard `i` of chunk `c`
//! belongs on `shard_homes(c)[i]` (the same rendezvous rule gateways
//! write by). A reconciliation pass walks the reference table chunk by
//! chunk and, for each:
//!
//! - finds the shards this node is home for but lacks (never written, lost
//!   with a disk, or deleted by the scrubber as corrupt) and rebuilds them
//!   from `k` verified shards fetched from peers, without any key
//!   ([`codec::Rebuilder`] works on ciphertext), each fetched and rebuilt
//!   shard checked against the checksum its writer recorded in the
//!   reference, so a dishonest peer cannot slip in a forged shard;
//! - hands shards it holds but is not home for (hand-offs taken while a
//!   home was down, or left by an older map) to their home, then drops its
//!   own copy once the home holds one;
//! - gives the chunk's references to the homes the previous map did not
//!   name when the map changed since the last pass (to every home when
//!   this node did not propagate the previous map, or is not a home
//!   itself), so a new home learns what it should hold, and forgets them
//!   once it has no part in the chunk any more.
//!
//! Rebuilds start as soon as the pass finds them, while it scans on, worst
//! chunk first among those found (fewest healthy shards on the grid), with
//! bounded concurrency and bandwidth; chunks named by a read that met a bad
//! shard, by the scrubber, or by a peer that pushed references join the
//! running pass ([`crate::repair_state::RepairState::hint`]).
//!
//! Two failures are not retried pass after pass:
//!
//! - a chunk fewer than `k` good shards of exist anywhere (every node that
//!   could hold one answered) is recorded as damaged, logged once, listed
//!   in the node's status with the objects that refer to it, and left
//!   alone until something could have changed: a new map, a hint naming
//!   it, or [`crate::repair_state::DAMAGED_RETRY`];
//! - a shard store with no room for a rebuilt shard pauses rebuilds for a
//!   while, from [`crate::repair_state::PAUSE_MIN`] doubling up to
//!   [`crate::repair_state::PAUSE_MAX`] while the store stays full, and no
//!   rebuild fetches shards from peers before it has claimed room for what
//!   it will write.

use crate::node::{Node, NodeError};
use crate::repair_budget::{RepairBudget, RepairRates};
use crate::StoreError;
use bytes::Bytes;
use codec::{ChunkId, Rebuilder};
use grid::chunk_io::Grid;
use grid::{ClientOptions, NodeClient, RpcError};
use metadata::db::{Batch, Table};
use metadata::model::{ChunkReference, ClusterMap, NodeState};
use metadata::{Record, ShardKey};
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tracing::Instrument;

/// Epoch of the map whose homes were last given every reference.
const PROPAGATED_KEY: &[u8] = b"repair/propagated_epoch";
/// References read from the table per page.
const REF_PAGE: usize = 1024;
/// References pushed to one peer per call.
const PUSH_BATCH: usize = 512;
/// A pass's first batch to each peer, doubling up to `PUSH_BATCH`: a new
/// home can rebuild nothing before it has references, and a full first
/// batch waits for hundreds of chunks to be scanned.
const FIRST_PUSH: usize = 16;
/// Chunks scanned between looks at the hints peers sent meanwhile.
const HINT_CHECK: usize = 64;

/// How hard repair may work.
#[derive(Debug, Clone, Copy)]
pub struct RepairLimits {
    /// Rebuilds in flight at once.
    pub concurrency: usize,
    /// Shard bytes fetched per second for rebuilds; 0: unlimited.
    pub bytes_per_sec: u64,
    /// Shard bytes per second this node's site may move across its link
    /// for repair, shared among the site's nodes; 0: unlimited. See
    /// [`crate::repair_budget`].
    pub site_bytes_per_sec: u64,
}

impl Default for RepairLimits {
    fn default() -> Self {
        Self {
            concurrency: 8,
            bytes_per_sec: 0,
            site_bytes_per_sec: 0,
        }
    }
}

/// What one reconciliation pass found and did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Distinct chunks with a reference on this node.
    pub chunks: u64,
    /// Home shards missing at the start of the pass (not counting those of
    /// chunks left alone as damaged).
    pub missing: u64,
    pub rebuilt: u64,
    pub rebuilt_bytes: u64,
    /// Rebuilds that failed for a reason that may pass (a peer that did not
    /// answer, an I/O error): retried soon.
    pub failed: u64,
    /// Chunks found damaged by this pass: fewer than `k` good shards exist
    /// on the grid.
    pub damaged: u64,
    /// Chunks known damaged that this pass did not try again.
    pub left_damaged: u64,
    /// Chunks whose rebuild was put off because the shard store is full.
    pub deferred: u64,
    pub handed_back: u64,
    /// References given to homes that might lack them.
    pub refs_pushed: u64,
    /// Chunks whose references this node dropped (no part in them left).
    pub refs_dropped: u64,
    /// Home shards not rebuilt because the node they belong on is only
    /// down (it may be rebooting): they wait for it to return or be lost.
    pub waiting: u64,
    /// Chunks with no spare shard left, counting every down node: rebuilt
    /// at once, down or not.
    pub at_risk: u64,
}

/// A reconciliation pass in progress.
struct Pass<'a> {
    grid: &'a Grid,
    /// Chunks known damaged that this pass met (a complete pass forgets
    /// the others: their references are gone).
    met_damaged: HashSet<[u8; 32]>,
    /// Give every home the references (the map changed since last time).
    push_all: bool,
    /// The previous map, when its homes all have the references: then
    /// `push_all` gives them only to homes it did not name.
    settled: Option<&'a Grid>,
    /// The map with its down nodes counted as up, when it has any: where
    /// each shard would live if they all came back (see [`down_slots`]).
    patient: Option<Arc<Grid>>,
    /// The map's down nodes.
    down: HashSet<String>,
    push_failed: bool,
    report: ReconcileReport,
    rebuilds: Rebuilds,
    /// Per peer: references to give it and shards to tell it to look at,
    /// sent in batches.
    outbox: BTreeMap<String, Outgoing>,
    /// Per peer: the size of the next batch.
    batch: BTreeMap<String, usize>,
    /// Batches on their way; `Err` holds how many references went before
    /// one failed.
    sending: JoinSet<Result<u64, u64>>,
}

#[derive(Default)]
struct Outgoing {
    refs: Vec<ChunkReference>,
    hints: Vec<ShardKey>,
}

impl Pass<'_> {
    /// Queue references and hints for `target`; sends once a batch is full.
    fn send(&mut self, target: &str, refs: &[ChunkReference], hints: Vec<ShardKey>) {
        let out = self.outbox.entry(target.to_string()).or_default();
        out.refs.extend_from_slice(refs);
        out.hints.extend(hints);
        let limit = self.batch.entry(target.to_string()).or_insert(FIRST_PUSH);
        if out.refs.len() >= *limit || out.hints.len() >= *limit {
            *limit = (*limit * 2).min(PUSH_BATCH);
            self.flush(target);
        }
    }

    /// Send what is queued for `target` in the background: the scan goes
    /// on meanwhile, so peers learn of their work while the machine is
    /// busy rebuilding, not one round trip at a time.
    fn flush(&mut self, target: &str) {
        let Some(out) = self.outbox.remove(target) else {
            return;
        };
        let Some(client) = self.grid.client(target).cloned() else {
            self.push_failed = true;
            return;
        };
        let target = target.to_string();
        self.sending.spawn(
            async move {
                let mut pushed = 0u64;
                for batch in out.refs.chunks(PUSH_BATCH) {
                    if let Err(e) = client.refs_add(batch.to_vec()).await {
                        tracing::debug!(%target, error = %e, "reference push failed");
                        return Err(pushed);
                    }
                    pushed += batch.len() as u64;
                }
                // The references are there: the peer looks at those chunks now
                // rather than at its next full pass.
                for batch in out.hints.chunks(grid::node_api::MAX_ITEMS) {
                    if let Err(e) = client.repair_hint(batch, false).await {
                        tracing::debug!(%target, error = %e, "repair hint not delivered");
                    }
                }
                Ok(pushed)
            }
            .in_current_span(),
        );
    }

    /// Send everything queued and wait until it is delivered (or failed).
    async fn flush_all(&mut self) {
        let targets: Vec<String> = self.outbox.keys().cloned().collect();
        for t in targets {
            self.flush(&t);
        }
        while let Some(sent) = self.sending.join_next().await {
            match sent {
                Ok(Ok(pushed)) => self.report.refs_pushed += pushed,
                Ok(Err(pushed)) => {
                    self.report.refs_pushed += pushed;
                    self.push_failed = true;
                }
                Err(_) => self.push_failed = true,
            }
        }
    }
}

/// One chunk's references on this node, and the facts they agree on.
struct ChunkRefs {
    id: [u8; 32],
    k: usize,
    n: usize,
    shard_len: u32,
    /// Expected checksum per shard index (empty when unknown).
    hashes: Vec<[u8; 32]>,
    refs: Vec<ChunkReference>,
}

/// Shards of one chunk this node should hold and does not, waiting to be
/// rebuilt; the heap serves the fewest `healthy` first, then the oldest.
struct Waiting {
    chunk: Arc<ChunkRefs>,
    missing: Vec<usize>,
    /// The chunk's shards this node held whole when the pass looked.
    held: Vec<usize>,
    /// Shards of the chunk the grid holds, as far as its homes say.
    healthy: usize,
    seq: u64,
}

impl PartialEq for Waiting {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == std::cmp::Ordering::Equal
    }
}

impl Eq for Waiting {}

impl PartialOrd for Waiting {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Waiting {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        other
            .healthy
            .cmp(&self.healthy)
            .then(other.seq.cmp(&self.seq))
    }
}

/// The rebuilds of one pass. They start as soon as the pass finds work,
/// while it goes on looking, so a node whose scan is long (or that learns
/// of its new shards from peers' hints during it) does not idle until the
/// scan ends; of the work found so far, the chunks with the fewest healthy
/// shards go first.
///
/// Up to `concurrency` workers take the queued rebuilds one after another
/// by themselves: a slot refilled only when the pass loop came round would
/// stay empty while the pass waits on a peer or the disk for its scan.
struct Rebuilds {
    node: Arc<Node>,
    grid: Arc<Grid>,
    /// The previous map: where a copy may still be, and how many of a
    /// chunk's shards survive without asking their homes.
    prev: Option<Arc<Grid>>,
    queue: Arc<Mutex<RebuildQueue>>,
    /// A worker finished a rebuild.
    finished: Arc<Notify>,
    /// Workers stop taking rebuilds (the pass was told to stop).
    halt: Arc<AtomicBool>,
    concurrency: usize,
    /// Chunks waiting or being rebuilt: one met again meanwhile (hinted
    /// after the scan saw it) is not rebuilt twice, but looked at again,
    /// through `again`, once its rebuild ends.
    active: HashSet<[u8; 32]>,
    again: HashSet<[u8; 32]>,
    seq: u64,
    workers: JoinSet<()>,
    budget: Arc<RepairBudget>,
    room: Arc<Room>,
}

fn lock_queue(queue: &Mutex<RebuildQueue>) -> MutexGuard<'_, RebuildQueue> {
    queue.lock().unwrap_or_else(|p| p.into_inner())
}

/// What the pass and the workers share.
#[derive(Default)]
struct RebuildQueue {
    waiting: BinaryHeap<Waiting>,
    /// Ended rebuilds the pass has not accounted for yet.
    done: Vec<RebuildDone>,
    /// Workers running (each exits when it finds the queue empty).
    workers: usize,
}

impl Rebuilds {
    fn new(
        node: &Arc<Node>,
        grid: Arc<Grid>,
        prev: Option<Arc<Grid>>,
        limits: RepairLimits,
    ) -> Self {
        let rates = RepairRates {
            node_bytes_per_sec: limits.bytes_per_sec,
            site_bytes_per_sec: limits.site_bytes_per_sec,
        };
        let budget = Arc::new(RepairBudget::new(grid.map(), &node.id, rates));
        Self {
            node: node.clone(),
            grid,
            prev,
            queue: Arc::default(),
            finished: Arc::new(Notify::new()),
            halt: Arc::new(AtomicBool::new(false)),
            concurrency: limits.concurrency.max(1),
            active: HashSet::new(),
            again: HashSet::new(),
            seq: 0,
            workers: JoinSet::new(),
            budget,
            room: Arc::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, RebuildQueue> {
        lock_queue(&self.queue)
    }

    fn nothing_waiting(&self) -> bool {
        self.lock().waiting.is_empty()
    }

    /// Queue the rebuild of shards `missing` of `chunk`, of which this
    /// node holds shards `held`.
    async fn add(
        &mut self,
        chunk: ChunkRefs,
        missing: Vec<usize>,
        held: Vec<usize>,
        report: &mut ReconcileReport,
    ) {
        // The store is full: not even the peers are asked how the chunk
        // fares. The pass after the pause finds it again.
        if self.node.repair.rebuilds_paused().is_some() {
            report.missing += missing.len() as u64;
            report.deferred += 1;
            self.node
                .repair
                .missing
                .fetch_add(missing.len() as u64, Ordering::Relaxed);
            return;
        }
        if !self.active.insert(chunk.id) {
            self.again.insert(chunk.id);
            return;
        }
        let healthy = healthy_shards(&self.grid, self.prev.as_deref(), &chunk).await;
        report.missing += missing.len() as u64;
        self.node
            .repair
            .missing
            .fetch_add(missing.len() as u64, Ordering::Relaxed);
        self.seq += 1;
        self.lock().waiting.push(Waiting {
            chunk: Arc::new(chunk),
            missing,
            held,
            healthy,
            seq: self.seq,
        });
    }

    /// Account for ended rebuilds and have enough workers on the queue
    /// (none once `stop` is set).
    fn start(&mut self, stop: &AtomicBool, report: &mut ReconcileReport) {
        while let Some(joined) = self.workers.try_join_next() {
            self.reap(joined, report);
        }
        self.settle_done(report);
        if stop.load(Ordering::Relaxed) {
            self.halt.store(true, Ordering::Relaxed);
            return;
        }
        let mut q = self.lock();
        let wanted = self.concurrency.min(q.workers + q.waiting.len());
        let spawn = wanted.saturating_sub(q.workers);
        q.workers += spawn;
        drop(q);
        for _ in 0..spawn {
            let (n, grid, prev, budget, room) = (
                self.node.clone(),
                self.grid.clone(),
                self.prev.clone(),
                self.budget.clone(),
                self.room.clone(),
            );
            let (queue, finished, halt) =
                (self.queue.clone(), self.finished.clone(), self.halt.clone());
            self.workers.spawn(
                async move {
                    loop {
                        let next = {
                            let mut q = lock_queue(&queue);
                            let next = if halt.load(Ordering::Relaxed) {
                                None
                            } else {
                                q.waiting.pop()
                            };
                            if next.is_none() {
                                q.workers -= 1;
                            }
                            next
                        };
                        let Some(w) = next else {
                            finished.notify_one();
                            return;
                        };
                        // Paused by another worker meanwhile: the queue
                        // drains without a call to any peer.
                        let r = if n.repair.rebuilds_paused().is_some() {
                            Err(RebuildError::Paused)
                        } else {
                            n.repair.rebuilding.fetch_add(1, Ordering::Relaxed);
                            let r = rebuild(&n, &grid, prev.as_deref(), &w, &budget, &room).await;
                            n.repair.rebuilding.fetch_sub(1, Ordering::Relaxed);
                            r
                        };
                        // At once, not when the pass accounts for it: the
                        // other workers must stop fetching now.
                        match &r {
                            Ok(bytes) if *bytes > 0 => n.repair.store_took_shard(),
                            Err(RebuildError::StoreFull { needed, available }) => {
                                store_full(&n, *needed, *available)
                            }
                            _ => {}
                        }
                        lock_queue(&queue)
                            .done
                            .push((w.chunk.clone(), w.missing.len(), r));
                        finished.notify_one();
                    }
                }
                .in_current_span(),
            );
        }
    }

    /// Wait for running rebuilds to end (at least one); `false` when none
    /// runs.
    async fn finish_one(&mut self, report: &mut ReconcileReport) -> bool {
        loop {
            if self.settle_done(report) > 0 {
                return true;
            }
            if self.lock().workers == 0 {
                return false;
            }
            // A rebuild ending between the look above and here leaves a
            // permit, so this does not miss it.
            tokio::select! {
                _ = self.finished.notified() => {}
                Some(joined) = self.workers.join_next() => self.reap(joined, report),
            }
        }
    }

    /// A worker ended. One that panicked never took itself off the count,
    /// and its rebuild failed.
    fn reap(&mut self, joined: Result<(), tokio::task::JoinError>, report: &mut ReconcileReport) {
        if let Err(e) = joined {
            self.lock().workers -= 1;
            report.failed += 1;
            self.node
                .repair
                .failed_rebuilds
                .fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %e, "a rebuild worker failed; its chunk waits for the next pass");
        }
    }

    /// Account for the rebuilds the workers ended; how many there were.
    fn settle_done(&mut self, report: &mut ReconcileReport) -> usize {
        let done = std::mem::take(&mut self.lock().done);
        let count = done.len();
        let epoch = self.grid.map().epoch;
        for (chunk, shards, result) in done {
            self.active.remove(&chunk.id);
            if self.again.remove(&chunk.id) {
                self.node.repair.hint(chunk.id, false);
            }
            account(&self.node, epoch, (chunk, shards, result), report);
        }
        count
    }
}

/// Bytes the pass's rebuilds have claimed for the shards they will write,
/// from their look at the store's free space to the end of their writes:
/// concurrent rebuilds that each saw room for one shard do not all fetch
/// `k` shards for it.
#[derive(Default)]
struct Room {
    claimed: Mutex<u64>,
}

/// Room held for one rebuild; given back when dropped.
struct Claim<'a> {
    room: &'a Room,
    bytes: u64,
}

impl Room {
    fn lock(&self) -> MutexGuard<'_, u64> {
        // A plain counter: a panic elsewhere cannot leave it half-written.
        self.claimed.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Claim `bytes` of the `available` the store reports, less what other
    /// rebuilds claimed already.
    fn claim(&self, available: u64, bytes: u64) -> Result<Claim<'_>, RebuildError> {
        let mut claimed = self.lock();
        let free = available.saturating_sub(*claimed);
        if bytes > free {
            return Err(RebuildError::StoreFull {
                needed: bytes,
                available: free,
            });
        }
        *claimed += bytes;
        Ok(Claim { room: self, bytes })
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        let mut claimed = self.room.lock();
        *claimed = claimed.saturating_sub(self.bytes);
    }
}

/// Spreads rebuild traffic out so it stays under a byte rate.
pub(crate) fn fail(e: impl std::fmt::Display) -> NodeError {
    NodeError::Refused(e.to_string())
}

/// Run `f` on the blocking pool (file and metadata I/O).
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, NodeError> + Send + 'static,
) -> Result<T, NodeError> {
    grid::blocking(f).await.map_err(fail)?
}

/// The grid as this node sees it: its map, and clients signed with its key
/// and presenting its identity.
pub fn grid_of(node: &Node, map: ClusterMap) -> Grid {
    let opts = ClientOptions {
        identity: Some(node.identity.clone()),
        timeout: Duration::from_secs(30),
        connect_timeout: Duration::from_secs(2),
        ..ClientOptions::default()
    };
    Grid::new(map, opts)
}

/// One reconciliation pass: the hinted chunks, then, when `full`, every
/// chunk referenced on this node. Ends early, with what it did, once `stop`
/// is set.
pub async fn reconcile_pass(
    node: &Arc<Node>,
    limits: RepairLimits,
    stop: &AtomicBool,
    full: bool,
) -> Result<ReconcileReport, NodeError> {
    let n = node.clone();
    let Some(map) = blocking(move || Ok(n.cluster_map()?)).await? else {
        return Ok(ReconcileReport::default());
    };
    let epoch = map.epoch;
    let grid = Arc::new(grid_of(node, map));
    let n = node.clone();
    let propagated = blocking(move || {
        Ok(n.db
            .get_raw(Table::System, PROPAGATED_KEY)?
            .and_then(|v| v.try_into().ok().map(u64::from_be_bytes))
            .unwrap_or(0))
    })
    .await?;
    // Where shards were before the last map change, read once per pass:
    // it tells which homes are new, orders the work and says where a copy
    // may still be.
    let n = node.clone();
    let prev: Option<Arc<Grid>> = blocking(move || Ok(n.previous_map()?))
        .await
        .ok()
        .flatten()
        .map(|m| Arc::new(grid.with_map(m)));
    let push_all = full && propagated != epoch;
    let started = Instant::now();
    let mut pass = Pass {
        grid: &grid,
        met_damaged: HashSet::new(),
        // A new map may have named new homes: they learn from the old ones.
        push_all,
        // When every home under the previous map was given the references
        // (this node propagated that epoch), only homes new since then
        // need them: pushing to all would rewrite every reference on every
        // home and have each look at every chunk again.
        settled: prev
            .as_deref()
            .filter(|p| push_all && p.map().epoch == propagated),
        patient: patient_grid(&grid),
        down: grid
            .map()
            .nodes
            .iter()
            .filter(|n| n.state == NodeState::Down as i32)
            .map(|n| n.id.clone())
            .collect(),
        push_failed: false,
        report: ReconcileReport::default(),
        rebuilds: Rebuilds::new(node, grid.clone(), prev.clone(), limits),
        outbox: BTreeMap::new(),
        batch: BTreeMap::new(),
        sending: JoinSet::new(),
    };
    node.repair.missing.store(0, Ordering::Relaxed);
    // A pause that ran out shows as over from the first pass after it.
    publish(node);

    let hinted = node.repair.take_hints();
    visit_hinted(node, &mut pass, &hinted, stop).await?;
    let mut after: Option<Vec<u8>> = None;
    // Hinted only: the scan below is for full passes.
    let mut scanning = full;
    while scanning && !stop.load(Ordering::Relaxed) {
        let n = node.clone();
        let start = after.clone();
        let page = blocking(move || {
            Ok(n.db.scan_prefix(Table::ChunkRefs, &[], start.as_deref(), REF_PAGE)?)
        })
        .await?;
        let last_page = page.next.is_none();
        let mut chunks: Vec<ChunkRefs> = Vec::new();
        for (key, value) in &page.items {
            let Ok(r) = ChunkReference::decode_record(value) else {
                tracing::warn!(key = %hex::encode(key), "undecodable chunk reference skipped");
                continue;
            };
            match chunks.last_mut() {
                Some(c) if c.id[..] == r.chunk_id[..] => c.refs.push(r),
                _ => {
                    if let Some(c) = chunk_refs(vec![r]) {
                        chunks.push(c);
                    }
                }
            }
        }
        // The last chunk of a page may go on in the next: read all of its
        // references, then resume after every key it can have (byte 32 of
        // a reference key is the bucket id's length, 16, never 0xff).
        if !last_page {
            if let Some(c) = chunks.pop() {
                let mut resume = c.id.to_vec();
                resume.extend_from_slice(&[0xff; 8]);
                after = Some(resume);
                if let Some(whole) = load_chunk(node, c.id).await? {
                    chunks.push(whole);
                }
            }
        }
        // What this node holds of the page's chunks, in one trip.
        let (n, ids) = (
            node.clone(),
            chunks.iter().map(|c| c.id).collect::<Vec<_>>(),
        );
        let listed = blocking(move || {
            ids.iter()
                .map(|id| Ok(n.store.held(id)?))
                .collect::<Result<Vec<_>, NodeError>>()
        })
        .await?;
        for (i, (c, listed)) in chunks.into_iter().zip(listed).enumerate() {
            if hinted.contains_key(&c.id) {
                continue;
            }
            pass.report.chunks += 1;
            visit(node, &mut pass, c, false, false, Some(listed)).await?;
            pass.rebuilds.start(stop, &mut pass.report);
            // Chunks peers name now (their new shards here) need not wait
            // for the end of a long scan.
            if i % HINT_CHECK == HINT_CHECK - 1 && takes_hints(node) {
                let more = node.repair.take_hints();
                visit_hinted(node, &mut pass, &more, stop).await?;
            }
        }
        scanning = !last_page;
    }
    pass.flush_all().await;
    if pass.push_all && !pass.push_failed && !stop.load(Ordering::Relaxed) {
        let n = node.clone();
        blocking(move || {
            Ok(n.db.put_raw(Table::System, PROPAGATED_KEY, &epoch.to_be_bytes())?)
        })
        .await?;
    }
    // Rebuild what was found; chunks hinted meanwhile join in, so the
    // rebuilds never drain between one batch of hints and the next.
    loop {
        pass.rebuilds.start(stop, &mut pass.report);
        if pass.rebuilds.nothing_waiting() && !stop.load(Ordering::Relaxed) && takes_hints(node) {
            let more = node.repair.take_hints();
            visit_hinted(node, &mut pass, &more, stop).await?;
            pass.flush_all().await;
            continue;
        }
        if !pass.rebuilds.finish_one(&mut pass.report).await
            && (stop.load(Ordering::Relaxed) || !takes_hints(node))
        {
            break;
        }
    }
    // Every reference was looked at: a damaged chunk not met has none left
    // here (its objects were deleted), so it is no damage of this node's.
    if full && !stop.load(Ordering::Relaxed) {
        let r = &node.repair;
        r.waiting.store(pass.report.waiting, Ordering::Relaxed);
        r.at_risk.store(pass.report.at_risk, Ordering::Relaxed);
        let met = std::mem::take(&mut pass.met_damaged);
        node.repair.retain_damaged(started, |id| met.contains(id));
    }
    publish(node);
    let report = pass.report;
    node.repair.passes.fetch_add(1, Ordering::Relaxed);
    node.repair
        .last_pass_ms
        .store(grid::clock::now_ms(), Ordering::Relaxed);
    Ok(report)
}

/// `grid`'s map with its down nodes counted as up, if it has any.
fn patient_grid(grid: &Grid) -> Option<Arc<Grid>> {
    let mut map = grid.map().clone();
    let mut any = false;
    for n in &mut map.nodes {
        if n.state == NodeState::Down as i32 {
            n.state = NodeState::Up as i32;
            any = true;
        }
    }
    any.then(|| Arc::new(grid.with_map(map)))
}

/// The shards of chunk `chunk` (`n` of them, placed at `homes` under the
/// current map) whose home would be a down node if the down nodes were
/// up: the shards that node holds, waiting for it. Placement draws each
/// shard's home independently of node states and replaces only homes
/// that are not placeable, so these are exactly the down nodes' shards.
fn down_slots(pass: &Pass<'_>, chunk: &ChunkId, n: usize, homes: &[String]) -> Vec<usize> {
    let Some(patient) = pass.patient.as_deref() else {
        return Vec::new();
    };
    let Ok(waiting_homes) = pass.grid.shard_homes_beside(patient, chunk, n).1 else {
        return Vec::new();
    };
    (0..n)
        .filter(|i| waiting_homes[*i] != homes[*i] && pass.down.contains(&waiting_homes[*i]))
        .collect()
}

/// Every reference to chunk `id` on this node.
async fn load_chunk(node: &Arc<Node>, id: [u8; 32]) -> Result<Option<ChunkRefs>, NodeError> {
    let n = node.clone();
    blocking(move || refs_of(&n, &id)).await
}

/// [`load_chunk`] on a thread that may block.
fn refs_of(node: &Node, id: &[u8; 32]) -> Result<Option<ChunkRefs>, NodeError> {
    let mut refs = Vec::new();
    let mut after: Option<Vec<u8>> = None;
    loop {
        let page = node
            .db
            .scan_prefix(Table::ChunkRefs, id, after.as_deref(), REF_PAGE)?;
        for (_, v) in &page.items {
            if let Ok(r) = ChunkReference::decode_record(v) {
                refs.push(r);
            }
        }
        after = page.items.last().map(|(k, _)| k.clone());
        if page.next.is_none() {
            return Ok(chunk_refs(refs));
        }
    }
}

fn chunk_refs(refs: Vec<ChunkReference>) -> Option<ChunkRefs> {
    let first = refs.first()?;
    let id: [u8; 32] = first.chunk_id.as_slice().try_into().ok()?;
    let erasure = first.erasure?;
    let with_hashes = refs.iter().find(|r| !r.shard_hashes.is_empty());
    // All or none: one malformed entry would shift the rest onto the
    // wrong indexes.
    let hashes = with_hashes
        .and_then(|r| {
            r.shard_hashes
                .iter()
                .map(|h| <[u8; 32]>::try_from(h.as_slice()).ok())
                .collect::<Option<Vec<_>>>()
        })
        .filter(|h| h.len() == erasure.total())
        .unwrap_or_default();
    let shard_len = with_hashes
        .map(|r| r.shard_len)
        .or_else(|| refs.iter().map(|r| r.shard_len).find(|l| *l > 0))
        .unwrap_or(0);
    Some(ChunkRefs {
        id,
        k: erasure.data as usize,
        n: erasure.total(),
        shard_len,
        hashes,
        refs,
    })
}

/// Whether a running pass should take the hints that came in. Not once a
/// new map asked for a full pass: this one places shards by the old map,
/// and a steady stream of hints (a scrub) must not keep it from ending.
fn takes_hints(node: &Node) -> bool {
    node.repair.has_hints() && !node.repair.full_requested()
}

/// Visit the chunks in `hinted` (chunk -> verify its local shards).
async fn visit_hinted(
    node: &Arc<Node>,
    pass: &mut Pass<'_>,
    hinted: &BTreeMap<[u8; 32], bool>,
    stop: &AtomicBool,
) -> Result<(), NodeError> {
    // Queued or being rebuilt already: every surviving home pushes the
    // same new home the same hint, and looking again finds nothing new.
    let wanted: Vec<([u8; 32], bool)> = hinted
        .iter()
        .filter(|(id, verify)| **verify || !pass.rebuilds.active.contains(*id))
        .map(|(id, verify)| (*id, *verify))
        .collect();
    // References and listings for a batch of chunks in one trip to the
    // blocking pool: after a map change a new home is hinted a chunk for
    // each shard it gained, and two trips per chunk (four thread wake-ups)
    // cost more than the reading.
    for batch in wanted.chunks(HINT_CHECK) {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let (n, ids) = (node.clone(), batch.to_vec());
        let loaded = blocking(move || {
            let mut out = Vec::with_capacity(ids.len());
            for (id, verify) in ids {
                let c = refs_of(&n, &id)?;
                // A verifying visit checks the shards itself.
                let listed = match (&c, verify) {
                    (Some(_), false) => Some(n.store.held(&id)?),
                    _ => None,
                };
                out.push((c, listed));
            }
            Ok(out)
        })
        .await?;
        for (&(id, verify), (c, listed)) in batch.iter().zip(loaded) {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            match c {
                Some(c) => {
                    pass.report.chunks += 1;
                    visit(node, pass, c, verify, true, listed).await?;
                    pass.rebuilds.start(stop, &mut pass.report);
                }
                // No reference left: whatever its shards, no object here
                // lost data through it.
                None => {
                    if node.repair.clear_damaged(&id) {
                        publish(node);
                    }
                }
            }
        }
    }
    Ok(())
}

/// Reconcile one chunk: queue the rebuild of missing home shards, hand back
/// foreign shards, push and drop references.
///
/// `listed`: the node's shards of the chunk (index, length) when the caller
/// listed them already, a page of chunks in one trip to the blocking pool.
/// `hinted`: something named the chunk (a reader, the scrubber, a peer), so
/// it is tried even if known damaged.
async fn visit(
    node: &Arc<Node>,
    pass: &mut Pass<'_>,
    c: ChunkRefs,
    verify: bool,
    hinted: bool,
    listed: Option<Vec<(usize, u64)>>,
) -> Result<(), NodeError> {
    let chunk = ChunkId(c.id);
    // Placed under the previous map too, in the same draws: the pushes
    // below, the queue order and a copy from a previous home all ask.
    let homes = match pass.rebuilds.prev.as_deref() {
        Some(prev) => pass.grid.shard_homes_beside(prev, &chunk, c.n).0,
        None => pass.grid.shard_homes(&chunk, c.n),
    };
    let homes = match homes {
        Ok(h) => h,
        Err(e) => {
            tracing::warn!(chunk = %chunk, error = %e, "no placement for a referenced chunk");
            return Ok(());
        }
    };
    // What this node holds of the chunk, and whether each looks whole.
    let (n, id, len, shards) = (node.clone(), c.id, c.shard_len, c.n);
    let whole = move |listed: Vec<(usize, u64)>| -> Vec<(usize, bool)> {
        listed
            .into_iter()
            .filter(|(i, _)| *i < shards)
            .map(|(i, l)| (i, len == 0 || l == u64::from(len)))
            .collect()
    };
    let held: Vec<(usize, bool)> = match listed {
        Some(l) if !verify => whole(l),
        _ => blocking(move || {
            if !verify {
                return Ok(whole(n.store.held(&id)?));
            }
            // A reader named this chunk: check our shards in full, and drop a
            // bad one so it is rebuilt below.
            let mut held = Vec::new();
            for i in 0..shards {
                let key = ShardKey::new(id, i).map_err(fail)?;
                match n.store.verify(&key) {
                    Ok(()) => held.push((i, true)),
                    Err(crate::StoreError::NotFound) => {}
                    Err(crate::StoreError::Corrupt(reason)) => {
                        tracing::warn!(shard = %key, %reason, "corrupt shard deleted for rebuild");
                        n.repair.corrupt_found.fetch_add(1, Ordering::Relaxed);
                        n.store.delete(&key)?;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            Ok(held)
        })
        .await?,
    };
    let mine: Vec<usize> = (0..c.n).filter(|i| homes[*i] == node.id).collect();
    let mut missing: Vec<usize> = mine
        .iter()
        .copied()
        .filter(|i| !held.iter().any(|(j, whole)| j == i && *whole))
        .collect();
    // Shards whose home is only down stay where they are, on that node:
    // a farm that reboots costs no rebuild. Unless the chunk has no spare
    // left without them: then it is rebuilt now, down or not.
    let waiting = down_slots(pass, &chunk, c.n, &homes);
    if !waiting.is_empty() {
        if c.n - waiting.len() <= c.k {
            pass.report.at_risk += 1;
        } else {
            let before = missing.len();
            missing.retain(|i| !waiting.contains(i));
            pass.report.waiting += (before - missing.len()) as u64;
        }
    }
    let is_home = !mine.is_empty();

    // Shards held here for another home go back to it.
    let foreign: Vec<usize> = held
        .iter()
        .filter(|(i, whole)| *whole && homes[*i] != node.id)
        .map(|(i, _)| *i)
        .collect();
    let mut still_foreign = false;
    for i in foreign {
        match hand_back(node, pass.grid, &pass.rebuilds.budget, &c, i, &homes[i]).await {
            Ok(moved) => {
                if moved {
                    pass.report.handed_back += 1;
                    node.repair.handed_back.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(e) => {
                still_foreign = true;
                tracing::debug!(chunk = %chunk, index = i, home = %homes[i], error = %e,
                    "could not hand a shard back to its home; keeping it");
            }
        }
    }

    let hints_for = |target: &String| -> Vec<ShardKey> {
        (0..c.n)
            .filter(|i| homes[*i] == *target)
            .filter_map(|i| ShardKey::new(c.id, i).ok())
            .collect()
    };
    let targets: BTreeSet<&String> = homes.iter().filter(|h| **h != node.id).collect();
    if is_home && pass.push_all {
        let before: BTreeSet<String> = pass
            .settled
            .and_then(|p| p.shard_homes(&chunk, c.n).ok())
            .map(|h| h.into_iter().collect())
            .unwrap_or_default();
        for target in targets.into_iter().filter(|t| !before.contains(*t)) {
            let hints = hints_for(target);
            pass.send(target, &c.refs, hints);
        }
    } else if !is_home {
        // A stale holder: the homes must have the references before this
        // node forgets them, so these go at once.
        let mut all_ok = true;
        for target in targets {
            match push_refs(pass.grid, target, &c.refs).await {
                Ok(()) => {
                    pass.report.refs_pushed += c.refs.len() as u64;
                    let hints = hints_for(target);
                    pass.send(target, &[], hints);
                }
                Err(e) => {
                    all_ok = false;
                    tracing::debug!(chunk = %chunk, %target, error = %e, "reference push failed");
                }
            }
        }
        if !all_ok {
            pass.push_failed = true;
        }
        // No part left here: every home has the references and no shard
        // of ours remains to hand back.
        if all_ok && !still_foreign {
            let (n, refs) = (node.clone(), c.refs.clone());
            blocking(move || {
                let mut b = Batch::new();
                for r in &refs {
                    if let Some(k) = r.key() {
                        b.delete(Table::ChunkRefs, &k);
                    }
                }
                Ok(n.db.write(b)?)
            })
            .await?;
            pass.report.refs_dropped += 1;
        }
    }

    let known_damaged = node.repair.is_damaged(&c.id);
    if known_damaged {
        pass.met_damaged.insert(c.id);
    }
    if missing.is_empty() {
        // Its shards here are whole (put back by hand, or this node is no
        // home any more): nothing of it for this node to rebuild.
        if known_damaged && node.repair.clear_damaged(&c.id) {
            tracing::info!(chunk = %chunk, "damaged chunk no longer missing shards here");
            publish(node);
        }
        return Ok(());
    }
    // Found damaged under this map: asking every peer again would find
    // what it found then. A hint, a new map or a long wait may change that.
    if !hinted && node.repair.damaged_rests(&c.id, pass.grid.map().epoch) {
        pass.report.left_damaged += 1;
        return Ok(());
    }
    let held = held.iter().filter(|(_, w)| *w).map(|(i, _)| *i).collect();
    pass.rebuilds.add(c, missing, held, &mut pass.report).await;
    Ok(())
}

async fn push_refs(grid: &Grid, target: &str, refs: &[ChunkReference]) -> Result<(), RpcError> {
    let client = grid.client(target).ok_or_else(|| RpcError::Unreachable {
        node: target.into(),
        reason: "not in the cluster map".into(),
    })?;
    for batch in refs.chunks(PUSH_BATCH) {
        client.refs_add(batch.to_vec()).await?;
    }
    Ok(())
}

/// Give shard `index` to `home` unless it already has a good one, then
/// delete the local copy. `Ok(true)` when a shard was sent.
async fn hand_back(
    node: &Arc<Node>,
    grid: &Grid,
    budget: &RepairBudget,
    c: &ChunkRefs,
    index: usize,
    home: &str,
) -> Result<bool, NodeError> {
    let client = grid
        .client(home)
        .ok_or_else(|| fail(format!("{home} not in the cluster map")))?;
    let key = ShardKey::new(c.id, index).map_err(fail)?;
    let has = client.has_shards(&[key]).await.map_err(fail)?;
    let mut sent = false;
    if has.first().copied().unwrap_or(0) == 0 {
        let n = node.clone();
        let bytes = blocking(move || Ok(n.store.read(&key, None)?)).await?;
        // A corrupt local copy is the scrubber's business: never spread it.
        if !shard_ok(&bytes, c, index) {
            return Err(fail("local copy fails verification"));
        }
        // A home takes a shard from a peer only for a chunk it holds a
        // reference to (rpc_server, `peer_may_place`).
        push_refs(grid, home, &c.refs).await.map_err(fail)?;
        budget.send(home, bytes.len() as u64).await;
        client
            .put_shard(&key, Bytes::from(bytes))
            .await
            .map_err(fail)?;
        sent = true;
    }
    let n = node.clone();
    blocking(move || Ok(n.store.delete(&key)?)).await?;
    Ok(sent)
}

/// A shard that claims to be the one wanted: header well formed, the index
/// and chunk asked for, and the checksum its writer recorded (when known).
/// The bytes are not hashed: the rebuild verifies every checksum.
fn header_ok(bytes: &[u8], c: &ChunkRefs, index: usize) -> bool {
    let Ok(h) = codec::shard::ShardHeader::parse(bytes) else {
        return false;
    };
    h.index as usize == index
        && h.chunk_id.0 == c.id
        && h.shard_len() == bytes.len()
        && c.hashes.get(index).is_none_or(|x| *x == h.checksum)
}

/// Whether a shard may go into a rebuild: when `careful`, checked in full
/// ([`shard_ok`]); otherwise on its header alone, since the rebuild
/// verifies every checksum and, should one fail, gathers again carefully.
fn usable(bytes: &[u8], c: &ChunkRefs, index: usize, careful: bool) -> bool {
    if careful {
        shard_ok(bytes, c, index)
    } else {
        header_ok(bytes, c, index)
    }
}

/// A shard fit to rebuild from: well formed, checksum right, the index and
/// chunk it claims, and the checksum its writer recorded (when known).
fn shard_ok(bytes: &[u8], c: &ChunkRefs, index: usize) -> bool {
    let Ok(v) = codec::shard::verify(bytes) else {
        return false;
    };
    v.header.index as usize == index
        && v.header.chunk_id.0 == c.id
        && c.hashes.get(index).is_none_or(|h| *h == v.header.checksum)
}

/// How many shards of `c` the grid holds. After a map change the previous
/// map tells without a call: a shard whose home then is still serving is
/// there. Without one, the chunk's homes are asked.
async fn healthy_shards(grid: &Grid, prev: Option<&Grid>, c: &ChunkRefs) -> usize {
    let Some(prev) = prev else {
        return count_healthy(grid, c).await;
    };
    let serving = |id: &String| {
        grid.map().nodes.iter().any(|n| {
            &n.id == id
                && (n.state == NodeState::Up as i32 || n.state == NodeState::Draining as i32)
        })
    };
    prev.shard_homes(&ChunkId(c.id), c.n)
        .map_or(0, |homes| homes.iter().filter(|h| serving(h)).count())
}

/// Why a rebuild did not happen. Only [`RebuildError::Unanswered`] and
/// [`RebuildError::Node`] may pass by themselves: those are retried soon.
#[derive(Debug, thiserror::Error)]
enum RebuildError {
    /// Fewer than `k` good shards exist, as every node that could hold one
    /// says: nothing to rebuild from until something changes.
    #[error("{found} good shards found, {needed} needed; every node that could hold one answered")]
    TooFew { found: usize, needed: usize },
    /// Fewer than `k` good shards found, but some serving node did not
    /// answer: it may hold the ones missing.
    #[error("{found} good shards found, {needed} needed; some nodes did not answer")]
    Unanswered { found: usize, needed: usize },
    /// The shard store has no room for the shards to write.
    #[error("shard store full: {needed} bytes needed, {available} available")]
    StoreFull { needed: u64, available: u64 },
    /// Rebuilds are paused (the store was full); not tried.
    #[error("rebuilds paused: the shard store is full")]
    Paused,
    #[error(transparent)]
    Node(NodeError),
}

impl From<NodeError> for RebuildError {
    fn from(e: NodeError) -> Self {
        match e {
            NodeError::Store(StoreError::InsufficientStorage { needed, available }) => {
                RebuildError::StoreFull { needed, available }
            }
            e => RebuildError::Node(e),
        }
    }
}

type RebuildDone = (Arc<ChunkRefs>, usize, Result<u64, RebuildError>);

/// The store refused a shard, or has no room for one: pause rebuilds, and
/// say so once per pause.
fn store_full(node: &Node, needed: u64, available: u64) {
    if let Some(pause) = node.repair.pause_rebuilds() {
        tracing::warn!(
            needed,
            available,
            pause_secs = pause.as_secs(),
            "shard store full: rebuilds paused"
        );
        publish(node);
    }
}

/// Copy the repair figures only this module changes into the metrics
/// (the server copies the counters of [`crate::repair_state::RepairState`]
/// at each scrape itself).
fn publish(node: &Node) {
    let r = &node.repair;
    let m = &node.metrics;
    m.set_repair("damaged_chunks", r.damaged_count() as u64);
    m.set_repair("rebuilds_paused", u64::from(r.rebuilds_paused().is_some()));
    m.set_repair(
        "store_full_pauses",
        r.store_full_pauses.load(Ordering::Relaxed),
    );
}

/// A referrer as a node can tell it: bucket id, the key's hash (only a
/// gateway can say which key that is), version.
fn describe(r: &metadata::model::Referrer) -> String {
    let mut s = format!(
        "bucket {} key hash {} version {}",
        hex::encode(&r.bucket_id),
        hex::encode(&r.key_hash),
        hex::encode(&r.version)
    );
    if r.part_number > 0 {
        s.push_str(&format!(" part {}", r.part_number));
    }
    s
}

fn account(
    node: &Node,
    epoch: u64,
    (chunk, shards, result): RebuildDone,
    report: &mut ReconcileReport,
) {
    let id = chunk.id;
    match result {
        Ok(bytes) => {
            report.rebuilt += shards as u64;
            report.rebuilt_bytes += bytes;
            node.repair
                .rebuilt_shards
                .fetch_add(shards as u64, Ordering::Relaxed);
            node.repair
                .rebuilt_bytes
                .fetch_add(bytes, Ordering::Relaxed);
            let _ = node
                .repair
                .missing
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |m| {
                    Some(m.saturating_sub(shards as u64))
                });
            if node.repair.clear_damaged(&id) {
                tracing::info!(chunk = %hex::encode(id), "damaged chunk rebuilt: its shards came back");
                publish(node);
            }
        }
        Err(RebuildError::TooFew { found, needed }) => {
            report.damaged += 1;
            node.repair.failed_rebuilds.fetch_add(1, Ordering::Relaxed);
            // Reported as damaged, not as missing: nothing will rebuild it.
            let _ = node
                .repair
                .missing
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |m| {
                    Some(m.saturating_sub(shards as u64))
                });
            let referrers = chunk.refs.iter().filter_map(|r| r.referrer.clone());
            if node
                .repair
                .mark_damaged(id, epoch, found, needed, referrers)
            {
                let named: Vec<String> = chunk
                    .refs
                    .iter()
                    .filter_map(|r| r.referrer.as_ref())
                    .take(3)
                    .map(describe)
                    .collect();
                tracing::error!(
                    chunk = %hex::encode(id),
                    found,
                    needed,
                    referrers = chunk.refs.len(),
                    first = %named.join("; "),
                    "chunk cannot be rebuilt: too few good shards exist on the grid; \
                     not retried until a new cluster map, a repair hint naming it, or an hour"
                );
                publish(node);
            } else {
                tracing::debug!(chunk = %hex::encode(id), found, needed, "damaged chunk still cannot be rebuilt");
            }
        }
        Err(e @ (RebuildError::StoreFull { .. } | RebuildError::Paused)) => {
            // Said once, when the pause began (see `store_full`).
            report.deferred += 1;
            tracing::debug!(chunk = %hex::encode(id), error = %e, "rebuild put off");
        }
        Err(e) => {
            report.failed += 1;
            node.repair.failed_rebuilds.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(chunk = %hex::encode(id), error = %e, "rebuild failed; retried next pass");
        }
    }
}

/// Shards of the chunk its homes say they hold.
async fn count_healthy(grid: &Grid, c: &ChunkRefs) -> usize {
    let Ok(homes) = grid.shard_homes(&ChunkId(c.id), c.n) else {
        return 0;
    };
    let mut by_node: BTreeMap<&str, Vec<ShardKey>> = BTreeMap::new();
    for (i, h) in homes.iter().enumerate() {
        if let Ok(k) = ShardKey::new(c.id, i) {
            by_node.entry(h.as_str()).or_default().push(k);
        }
    }
    let mut healthy = 0;
    for (node, keys) in by_node {
        if let Some(client) = grid.client(node) {
            if let Ok(lens) = client.has_shards(&keys).await {
                healthy += lens.iter().filter(|l| **l > 0).count();
            }
        }
    }
    healthy
}

/// Rebuild the shards `w` misses here from `k` good shards found on the
/// grid (local ones first). Returns the bytes written.
async fn rebuild(
    node: &Arc<Node>,
    grid: &Grid,
    prev: Option<&Grid>,
    w: &Waiting,
    budget: &RepairBudget,
    room: &Room,
) -> Result<u64, RebuildError> {
    let (c, missing) = (&w.chunk, &w.missing);
    let chunk = ChunkId(c.id);
    // Room first: shards fetched for a store that cannot take what they
    // rebuild are load on the peers for nothing. (A length of 0 is an
    // older reference that did not record it: at least a full store is
    // caught; a write that does not fit still pauses.)
    let needed = u64::from(c.shard_len.max(1)) * missing.len() as u64;
    let n = node.clone();
    let available = blocking(move || Ok(n.store.usage()?.available)).await?;
    let _claim = room.claim(available, needed)?;
    // A node added or drained leaves the shards where they were: copying
    // the very shard moves one shard's bytes where rebuilding moves k.
    let mut written = 0u64;
    let copied = copy_from_holders(node, grid, prev, c, missing, budget).await?;
    for &i in &copied {
        written += u64::from(c.shard_len);
        tracing::info!(chunk = %chunk, index = i, "shard copied from its previous holder");
    }
    let missing: Vec<usize> = missing
        .iter()
        .copied()
        .filter(|i| !copied.contains(i))
        .collect();
    if missing.is_empty() {
        return Ok(written);
    }
    // Fetched shards are taken on their headers and the rebuild checks
    // their bytes; should one be bad, gather again checking each fully,
    // so the bad one is passed over for another. Too few shards, or a full
    // store, would only be met again.
    let built = match rebuild_from(node, grid, c, &missing, Some(&w.held), budget).await {
        Ok(b) => b,
        Err(RebuildError::Node(e)) => {
            tracing::debug!(chunk = %chunk, error = %e, "rebuild failed; gathering again, verifying each shard");
            rebuild_from(node, grid, c, &missing, None, budget).await?
        }
        Err(e) => return Err(e),
    };
    Ok(written + built)
}

/// What asking a node for a shard told.
enum Fetched {
    Got(Bytes),
    /// The node answered: it holds no good copy.
    Absent,
    /// No answer (unreachable, timed out, failed): it may hold one.
    Unknown,
}

/// Whether `id` is serving under the grid's map: a node that is not (down,
/// removed) not answering says nothing new, and a new map, which would
/// bring it back, has damaged chunks looked at again anyway.
fn serving(grid: &Grid, id: &str) -> bool {
    use metadata::model::NodeState;
    grid.map().nodes.iter().any(|n| {
        n.id == id && (n.state == NodeState::Up as i32 || n.state == NodeState::Draining as i32)
    })
}

/// Rebuild `missing` from `k` shards gathered here and from peers. With
/// `held` (what the pass saw here), the shards are taken on their headers;
/// without, every one is fully verified (`careful`) and this node's
/// directory listed again. Returns the bytes written.
async fn rebuild_from(
    node: &Arc<Node>,
    grid: &Grid,
    c: &Arc<ChunkRefs>,
    missing: &[usize],
    held: Option<&[usize]>,
    budget: &RepairBudget,
) -> Result<u64, RebuildError> {
    let careful = held.is_none();
    let chunk = ChunkId(c.id);
    let homes = grid.shard_homes(&chunk, c.n).map_err(fail)?;
    let mut have: BTreeMap<usize, Bytes> = BTreeMap::new();
    // Shards already here (this node may be home to several), taken like
    // fetched ones. A new home usually has none: no trip to the blocking
    // pool for it.
    let (n, cc, held) = (node.clone(), c.clone(), held.map(<[usize]>::to_vec));
    let local: Vec<(usize, Bytes)> = match held {
        Some(h) if h.is_empty() => Vec::new(),
        _ => {
            blocking(move || {
                let listed = match held {
                    Some(h) => h,
                    None => n.store.held(&cc.id)?.into_iter().map(|(i, _)| i).collect(),
                };
                let mut out = Vec::new();
                for i in listed {
                    let Ok(key) = ShardKey::new(cc.id, i) else {
                        continue;
                    };
                    if let Ok(b) = n.store.read(&key, None) {
                        if usable(&b, &cc, i, careful) {
                            out.push((i, Bytes::from(b)));
                        }
                    }
                }
                Ok(out)
            })
            .await?
        }
    };
    have.extend(local);
    // Then from their homes, data shards first (any k serve), as many at
    // once as are still needed: a rebuild waits on the slowest of them,
    // not on their sum.
    let mut asked: BTreeSet<(usize, String)> = BTreeSet::new();
    // A serving node that did not answer: too few shards is then no proof
    // the chunk is damaged.
    let mut unanswered = false;
    let mut candidates = homes
        .iter()
        .enumerate()
        .filter(|(i, home)| !have.contains_key(i) && **home != node.id)
        .map(|(i, home)| (i, home.clone()))
        .collect::<Vec<_>>()
        .into_iter();
    while have.len() < c.k {
        let wave: Vec<(usize, String)> = candidates.by_ref().take(c.k - have.len()).collect();
        if wave.is_empty() {
            break;
        }
        let fetched = futures_util::future::join_all(
            wave.iter()
                .map(|(i, home)| fetch(grid, home, c, *i, budget, careful)),
        )
        .await;
        for ((i, home), got) in wave.into_iter().zip(fetched) {
            match got {
                Fetched::Got(b) => {
                    have.insert(i, b);
                }
                Fetched::Absent => {}
                Fetched::Unknown => unanswered |= serving(grid, &home),
            }
            asked.insert((i, home));
        }
    }
    // Hand-offs: any node may hold a shard whose home was down.
    if have.len() < c.k {
        for peer in grid.map().nodes.iter().filter(|p| p.id != node.id) {
            if have.len() >= c.k {
                break;
            }
            let Some(client) = grid.client(&peer.id) else {
                continue;
            };
            let peer_serving = serving(grid, &peer.id);
            let keys: Vec<ShardKey> = (0..c.n)
                .filter(|i| !have.contains_key(i) && !asked.contains(&(*i, peer.id.clone())))
                .filter_map(|i| ShardKey::new(c.id, i).ok())
                .collect();
            if keys.is_empty() {
                continue;
            }
            let Ok(lens) = client.has_shards(&keys).await else {
                unanswered |= peer_serving;
                continue;
            };
            for (key, len) in keys.iter().zip(lens) {
                if len == 0 || have.len() >= c.k {
                    continue;
                }
                let i = key.index as usize;
                match fetch(grid, &peer.id, c, i, budget, careful).await {
                    Fetched::Got(b) => {
                        have.insert(i, b);
                    }
                    Fetched::Absent => {}
                    Fetched::Unknown => unanswered |= peer_serving,
                }
            }
        }
    }
    if have.len() < c.k {
        let (found, needed) = (have.len(), c.k);
        return Err(if unanswered {
            RebuildError::Unanswered { found, needed }
        } else {
            RebuildError::TooFew { found, needed }
        });
    }
    // Rebuild and store in one trip to the blocking pool.
    let (n, cc, wanted) = (node.clone(), c.clone(), missing.to_vec());
    let shards: Vec<Bytes> = have.into_values().take(c.k).collect();
    blocking(move || {
        let mut written = 0u64;
        // The rebuilder hashed each body into its header just now (and,
        // with the recorded checksums, compared them): the store need not
        // hash it again.
        let mut store = |i: usize, header: &[u8], body: &[u8]| -> Result<(), NodeError> {
            let key = ShardKey::new(cc.id, i).map_err(fail)?;
            // A stale or corrupt file in the way goes first.
            n.store.delete(&key)?;
            n.store.put_own_parts(key, header, body)?;
            let len = header.len() + body.len();
            written += len as u64;
            tracing::info!(chunk = %ChunkId(cc.id), index = i, bytes = len, "shard rebuilt");
            Ok(())
        };
        let id = ChunkId(cc.id);
        // With every wanted shard's recorded checksum, checking the rebuilt
        // shards checks the inputs (see `rebuild_expecting`): k fewer
        // shards hashed per rebuild. Older references may lack them.
        let expected: Option<Vec<(usize, [u8; 32])>> = wanted
            .iter()
            .map(|&i| cc.hashes.get(i).map(|h| (i, *h)))
            .collect();
        with_rebuilder(|r| match &expected {
            Some(expected) => r.rebuild_expecting(&id, &shards, expected, &mut store),
            None => r.rebuild_with(&id, &shards, &wanted, &mut store),
        })?;
        Ok(written)
    })
    .await
    .map_err(RebuildError::from)
}

/// Rebuilders kept between rebuilds. Each holds its coding matrices and a
/// work buffer as large as the largest chunk it rebuilt, which a new one
/// allocates and the kernel zeroes page by page again. Shared rather than
/// one per thread: the blocking pool runs a hundred threads or more.
static REBUILDERS: Mutex<Vec<Rebuilder>> = Mutex::new(Vec::new());
/// Kept at most; a process that runs more rebuilds at once (several
/// in-process nodes) makes new ones for the excess and drops them after.
const KEPT_REBUILDERS: usize = 32;

fn with_rebuilder<T>(f: impl FnOnce(&mut Rebuilder) -> T) -> T {
    let kept = REBUILDERS.lock().unwrap_or_else(|p| p.into_inner()).pop();
    let mut r = kept.unwrap_or_default();
    let out = f(&mut r);
    let mut pool = REBUILDERS.lock().unwrap_or_else(|p| p.into_inner());
    if pool.len() < KEPT_REBUILDERS {
        pool.push(r);
    }
    out
}

/// Copy shards `missing` of `c` from any serving node that still holds
/// them (a previous home, a hand-off), checked like any fetched shard, and
/// store them here. Returns the indexes copied.
async fn copy_from_holders(
    node: &Arc<Node>,
    grid: &Grid,
    prev: Option<&Grid>,
    c: &Arc<ChunkRefs>,
    missing: &[usize],
    budget: &RepairBudget,
) -> Result<BTreeSet<usize>, RebuildError> {
    use metadata::model::NodeState;
    // Only where the shards were under the previous map: asking every node
    // would cost a call per node and chunk when a dead node's shards are
    // rebuilt, where no copy exists.
    let Some(prev) = prev else {
        return Ok(BTreeSet::new());
    };
    let prev_homes = prev.shard_homes(&ChunkId(c.id), c.n).unwrap_or_default();
    let was_home: BTreeSet<&String> = missing.iter().filter_map(|i| prev_homes.get(*i)).collect();
    let keys: Vec<ShardKey> = missing
        .iter()
        .filter_map(|i| ShardKey::new(c.id, *i).ok())
        .collect();
    let mut asks = JoinSet::new();
    for peer in grid.map().nodes.iter().filter(|p| {
        p.id != node.id
            && was_home.contains(&p.id)
            && (p.state == NodeState::Up as i32 || p.state == NodeState::Draining as i32)
    }) {
        let Some(client) = grid.client(&peer.id).cloned() else {
            continue;
        };
        let (keys, id) = (keys.clone(), peer.id.clone());
        asks.spawn(async move { (id, client.has_shards(&keys).await) });
    }
    let mut holders: BTreeMap<usize, String> = BTreeMap::new();
    while let Some(done) = asks.join_next().await {
        let Ok((peer, Ok(lens))) = done else { continue };
        for (key, len) in keys.iter().zip(lens) {
            if len > 0 {
                holders
                    .entry(key.index as usize)
                    .or_insert_with(|| peer.clone());
            }
        }
    }
    let mut copied = BTreeSet::new();
    for (i, peer) in holders {
        let Fetched::Got(shard) = fetch(grid, &peer, c, i, budget, true).await else {
            continue;
        };
        let key = ShardKey::new(c.id, i).map_err(fail)?;
        let n = node.clone();
        // `fetch` checked it in full (careful): not hashed again.
        blocking(move || {
            n.store.delete(&key)?;
            Ok(n.store.put_own(key, &shard)?)
        })
        .await?;
        copied.insert(i);
    }
    Ok(copied)
}

/// Shard `index` of `c` from `node_id`, if it is there and good.
async fn fetch(
    grid: &Grid,
    node_id: &str,
    c: &ChunkRefs,
    index: usize,
    budget: &RepairBudget,
    careful: bool,
) -> Fetched {
    // Not in the map (or no such shard index): nothing the grid can use.
    let Some(client): Option<&NodeClient> = grid.client(node_id) else {
        return Fetched::Absent;
    };
    let Ok(key) = ShardKey::new(c.id, index) else {
        return Fetched::Absent;
    };
    budget.fetch(node_id, u64::from(c.shard_len.max(1))).await;
    match client.get_shard(&key, None).await {
        Ok(b) if usable(&b, c, index, careful) => Fetched::Got(b),
        // A bad copy is no copy: the chunk is no better off for it.
        Ok(_) => {
            tracing::warn!(chunk = %hex::encode(c.id), index, node = node_id,
                "peer served a bad shard; not used");
            Fetched::Absent
        }
        Err(RpcError::NotFound) => Fetched::Absent,
        Err(e) => {
            tracing::debug!(chunk = %hex::encode(c.id), index, node = node_id, error = %e,
                "shard not fetched");
            Fetched::Unknown
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiting(id: u8, healthy: usize, seq: u64) -> Waiting {
        Waiting {
            chunk: Arc::new(ChunkRefs {
                id: [id; 32],
                k: 4,
                n: 6,
                shard_len: 0,
                hashes: Vec::new(),
                refs: Vec::new(),
            }),
            missing: vec![0],
            held: Vec::new(),
            healthy,
            seq,
        }
    }

    #[test]
    fn the_queue_serves_the_fewest_healthy_shards_first_then_the_oldest() {
        let mut q = BinaryHeap::new();
        for (id, healthy, seq) in [(1, 5, 1), (2, 4, 2), (3, 5, 3), (4, 4, 4), (5, 3, 5)] {
            q.push(waiting(id, healthy, seq));
        }
        let order: Vec<u8> = std::iter::from_fn(|| q.pop().map(|w| w.chunk.id[0])).collect();
        assert_eq!(order, vec![5, 2, 4, 1, 3]);
    }
}
