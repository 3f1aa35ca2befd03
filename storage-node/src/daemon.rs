//! `gridstore node`: open the node, serve RPC and collect garbage until
//! SIGTERM or SIGINT, then finish the requests in flight.

use crate::anti_entropy::{self, SyncReport};
use crate::config::NodeConfig;
use crate::config::RepairConfig;
use crate::gc::GcReport;
use crate::jobs::JobHost;
use crate::liveness::{Liveness, LivenessConfig};
use crate::node::{Node, NodeError};
use crate::repair::{self, ReconcileReport, RepairLimits};
use crate::rpc_server;
use crate::scrub::ScrubReport;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Notify;

/// Run a node until a signal stops it. Prints one line to stdout,
/// `gridstore node <id> listening on <addr>`, once it accepts requests
/// (scripts and tests wait for it; with port 0 it tells the port).
pub async fn run(cfg: NodeConfig) -> Result<(), NodeError> {
    // Install the handlers before anyone can learn we are up: a SIGTERM
    // that arrives first must stop us cleanly, not by the default action.
    let shutdown = shutdown_signal()?;
    let node = Arc::new(tokio::task::block_in_place(|| Node::open(&cfg))?);
    let listener = TcpListener::bind(cfg.listen)
        .await
        .map_err(|e| NodeError::Refused(format!("cannot listen on {}: {e}", cfg.listen)))?;
    let addr: SocketAddr = listener
        .local_addr()
        .map_err(|e| NodeError::Refused(format!("listener has no address: {e}")))?;
    tracing::info!(
        node = %node.id,
        site = %node.site,
        %addr,
        io = node.store.io_backend().name(),
        identity = %node.identity.key(),
        "node serving"
    );
    println!("gridstore node {} listening on {addr}", node.id);
    let gc = GcTask::start(&node, &cfg);
    let healing = Healing::start(&node, &cfg);
    let jobs = Arc::new(JobHost::new(&cfg.node_id, &cfg.data_dir, &cfg.jobs));
    let served = rpc_server::Served { node, jobs };
    rpc_server::serve(
        listener,
        served,
        shutdown,
        Duration::from_secs(cfg.shutdown_grace_secs),
    )
    .await;
    if let Some(gc) = gc {
        gc.stop().await;
    }
    healing.stop().await;
    tracing::info!("node stopped");
    Ok(())
}

/// The identity of the node `cfg` configures (made on first use, as the
/// node itself would at its first start): what the cluster map must list
/// as its `key`.
pub fn identity(cfg: &NodeConfig) -> Result<grid::tls::Identity, NodeError> {
    let dir = cfg.data_dir.join(crate::node::IDENTITY_DIR);
    Ok(grid::tls::Identity::load_or_create(&dir)?)
}

/// The background garbage collector: a pass every `gc_interval_secs`, the
/// first one interval after start, never two at once.
struct GcTask {
    /// Ends a pass in progress early.
    stop: Arc<AtomicBool>,
    /// Ends the wait for the next pass.
    wake: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl GcTask {
    /// `None` when the config turns collection off.
    fn start(node: &Arc<Node>, cfg: &NodeConfig) -> Option<GcTask> {
        if cfg.gc_interval_secs == 0 {
            return None;
        }
        let interval = Duration::from_secs(cfg.gc_interval_secs);
        let grace_ms = cfg.gc_grace_secs.saturating_mul(1000);
        let stop = Arc::new(AtomicBool::new(false));
        let wake = Arc::new(Notify::new());
        let task = tokio::spawn(gc_loop(
            node.clone(),
            interval,
            grace_ms,
            stop.clone(),
            wake.clone(),
        ));
        Some(GcTask { stop, wake, task })
    }

    /// Stop, waiting for a pass in progress to notice (between chunks).
    async fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // A stored permit: the loop sees it even if it is mid-pass now.
        self.wake.notify_one();
        let _ = (&mut self.task).await;
    }
}

/// Dropped without `stop` (a killed or forgotten `LocalNode`): stop without
/// waiting; a pass in progress ends at its next chunk.
impl Drop for GcTask {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.abort();
    }
}

async fn gc_loop(
    node: Arc<Node>,
    interval: Duration,
    grace_ms: u64,
    stop: Arc<AtomicBool>,
    wake: Arc<Notify>,
) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = wake.notified() => return,
        }
        let n = node.clone();
        let s = stop.clone();
        // Wall-clock time: the marks it is compared with outlive restarts.
        let now_ms = grid::clock::now_ms();
        let pass = tokio::task::spawn_blocking(move || n.gc_pass_until(now_ms, grace_ms, &s));
        match pass.await {
            Ok(Ok(r)) => log_report(&r),
            Ok(Err(e)) => tracing::warn!(error = %e, "garbage collection pass failed"),
            Err(e) => tracing::warn!(error = %e, "garbage collection pass did not finish"),
        }
        if stop.load(Ordering::Relaxed) {
            return;
        }
    }
}

fn log_report(r: &GcReport) {
    if r.deleted_shards > 0 {
        tracing::info!(
            chunks = r.chunks_seen,
            unreferenced = r.unreferenced,
            deleted_shards = r.deleted_shards,
            freed_bytes = r.freed_bytes,
            "garbage collected unreferenced shards"
        );
    } else {
        tracing::debug!(
            chunks = r.chunks_seen,
            unreferenced = r.unreferenced,
            "garbage collection pass: nothing to delete"
        );
    }
}

fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>, NodeError> {
    use tokio::signal::unix::{signal, SignalKind};
    let handler =
        |kind| signal(kind).map_err(|e| NodeError::Refused(format!("cannot handle signals: {e}")));
    let mut term = handler(SignalKind::terminate())?;
    let mut int = handler(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
    })
}

/// A node serving on 127.0.0.1 inside this process: for in-process test
/// clusters and benchmarks (real metadata store, real files, real RPC on
/// loopback; only the process is shared). Garbage collection runs as in
/// the daemon unless `gc_interval_secs = 0`; tests that want passes at
/// chosen times call [`LocalNode::gc_pass`].
pub struct LocalNode {
    pub addr: SocketAddr,
    pub node: Arc<Node>,
    /// The job runner the node's RPC server hands tasks to.
    pub jobs: Arc<JobHost>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    gc: Option<GcTask>,
    healing: Option<Healing>,
}

impl LocalNode {
    /// Open and serve `cfg` (its `listen` address; port 0 picks one).
    pub async fn start(cfg: &NodeConfig) -> Result<LocalNode, NodeError> {
        let node = Arc::new(tokio::task::block_in_place(|| Node::open(cfg))?);
        let listener = TcpListener::bind(cfg.listen)
            .await
            .map_err(|e| NodeError::Refused(format!("cannot listen on {}: {e}", cfg.listen)))?;
        let addr = listener
            .local_addr()
            .map_err(|e| NodeError::Refused(format!("listener has no address: {e}")))?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let jobs = Arc::new(JobHost::new(&cfg.node_id, &cfg.data_dir, &cfg.jobs));
        let served = rpc_server::Served {
            node: node.clone(),
            jobs: jobs.clone(),
        };
        let task = tokio::spawn(rpc_server::serve(
            listener,
            served,
            async {
                let _ = stopped.await;
            },
            Duration::from_secs(cfg.shutdown_grace_secs),
        ));
        let gc = GcTask::start(&node, cfg);
        let healing = Some(Healing::start(&node, cfg));
        Ok(LocalNode {
            addr,
            node,
            jobs,
            stop: Some(stop),
            task,
            gc,
            healing,
        })
    }

    /// This node as a cluster map lists it: up, at the address it serves,
    /// weighted by `capacity_bytes`.
    pub fn map_entry(&self, capacity_bytes: u64) -> metadata::model::Node {
        metadata::model::Node {
            id: self.node.id.clone(),
            addr: self.addr.to_string(),
            site: self.node.site.clone(),
            capacity_bytes,
            state: metadata::model::NodeState::Up as i32,
            key: self.node.identity.key().0.to_vec(),
            untrusted_reason: String::new(),
        }
    }

    /// One garbage collection pass as if the time were `now_ms` (see
    /// [`Node::gc_pass`]), on the blocking pool.
    pub async fn gc_pass(&self, now_ms: u64, grace_ms: u64) -> Result<GcReport, NodeError> {
        let n = self.node.clone();
        match tokio::task::spawn_blocking(move || n.gc_pass(now_ms, grace_ms)).await {
            Ok(r) => r,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => Err(NodeError::Refused(format!("gc pass did not finish: {e}"))),
        }
    }

    /// Stop as on SIGTERM: refuse new connections, finish requests.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = (&mut self.task).await;
        if let Some(gc) = self.gc.take() {
            gc.stop().await;
        }
        if let Some(h) = self.healing.take() {
            h.stop().await;
        }
    }

    /// One reconciliation pass now (see [`crate::repair`]).
    pub async fn reconcile(&self) -> Result<ReconcileReport, NodeError> {
        let limits = RepairLimits::default();
        repair::reconcile_pass(&self.node, limits, &AtomicBool::new(false), true).await
    }

    /// One metadata anti-entropy pass now (see [`crate::anti_entropy`]).
    pub async fn anti_entropy(&self, replicas: usize) -> Result<SyncReport, NodeError> {
        anti_entropy::sync_pass(&self.node, replicas, &AtomicBool::new(false)).await
    }

    /// One scrub pass now, unthrottled (see [`crate::scrub`]).
    pub async fn scrub(&self) -> Result<ScrubReport, NodeError> {
        let n = self.node.clone();
        match tokio::task::spawn_blocking(move || n.scrub_pass(0, &AtomicBool::new(false))).await {
            Ok(r) => r,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => Err(NodeError::Refused(format!("scrub did not finish: {e}"))),
        }
    }

    /// Vanish at once: the port closes and open connections drop mid-
    /// request (writes already handed to the disk still complete, as the
    /// kernel would finish them for a killed process).
    pub async fn kill(mut self) {
        drop(self.gc.take());
        drop(self.healing.take());
        self.task.abort();
        let _ = (&mut self.task).await;
    }
}

/// Self-healing in the background: reconciliation (on its interval, or at
/// once when a hint or a map change wakes it), scrubbing and heartbeats,
/// each its own loop, as `[repair]` in the config sets them.
struct Healing {
    stop: Arc<AtomicBool>,
    /// Set once on stop; a loop sees it whether it is waiting or busy.
    quit: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Spawn a node's background loop in a span naming the node: several
/// nodes may share a process (`gridstore server`, the benches, the tests).
fn spawn_for(
    node: &Node,
    work: impl std::future::Future<Output = ()> + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    let span = tracing::info_span!("node", id = %node.id);
    tokio::spawn(tracing::Instrument::instrument(work, span))
}

impl Healing {
    fn start(node: &Arc<Node>, cfg: &NodeConfig) -> Healing {
        let r: RepairConfig = cfg.repair;
        let stop = Arc::new(AtomicBool::new(false));
        let (quit, _) = tokio::sync::watch::channel(false);
        let mut tasks = Vec::new();
        if r.reconcile_interval_secs > 0 {
            let limits = RepairLimits {
                concurrency: r.concurrency,
                bytes_per_sec: r.bytes_per_sec,
                site_bytes_per_sec: r.site_bytes_per_sec,
            };
            let every = Duration::from_secs(r.reconcile_interval_secs);
            let work = reconcile_loop(node.clone(), every, limits, stop.clone(), quit.subscribe());
            tasks.push(spawn_for(node, work));
        }
        if r.scrub_interval_secs > 0 {
            let every = Duration::from_secs(r.scrub_interval_secs);
            let rate = r.scrub_bytes_per_sec;
            let work = scrub_loop(node.clone(), every, rate, stop.clone(), quit.subscribe());
            tasks.push(spawn_for(node, work));
        }
        if r.anti_entropy_interval_secs > 0 {
            let every = Duration::from_secs(r.anti_entropy_interval_secs);
            let replicas = r.metadata_replicas;
            let work = anti_entropy_loop(
                node.clone(),
                every,
                replicas,
                stop.clone(),
                quit.subscribe(),
            );
            tasks.push(spawn_for(node, work));
        }
        if r.heartbeat_secs > 0 {
            let lc = LivenessConfig {
                heartbeat: Duration::from_secs(r.heartbeat_secs),
                down_after: Duration::from_secs(r.down_after_secs.max(r.heartbeat_secs)),
                lost_after: Duration::from_secs(r.lost_after_secs),
            };
            let work = liveness_loop(node.clone(), lc, stop.clone(), quit.subscribe());
            tasks.push(spawn_for(node, work));
        }
        Healing { stop, quit, tasks }
    }

    async fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.quit.send_replace(true);
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
    }
}

impl Drop for Healing {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in &self.tasks {
            t.abort();
        }
    }
}

type Quit = tokio::sync::watch::Receiver<bool>;

/// Resolves once the node stops (at once if it already has).
async fn quitting(quit: &mut Quit) {
    let _ = quit.wait_for(|q| *q).await;
}

async fn reconcile_loop(
    node: Arc<Node>,
    interval: Duration,
    limits: RepairLimits,
    stop: Arc<AtomicBool>,
    mut quit: Quit,
) {
    // Hints that arrive while a pass runs wait for the next one: it starts
    // at once. Only an idle loop, woken by a first hint, waits a moment so
    // a burst (a scrub finding many) gathers.
    const GATHER: Duration = Duration::from_millis(500);
    // Rebuilds that failed for a reason that may pass (a peer not
    // answering) are tried again this soon: peers may be back.
    const RETRY: Duration = Duration::from_secs(10);
    let mut last_pass = tokio::time::Instant::now();
    // A full pass due before the interval is over. One deadline, however
    // many passes asked for one: a timer per failing pass would multiply
    // (each full pass that failed again set one more), until passes ran
    // back to back.
    let mut retry_at: Option<tokio::time::Instant> = None;
    loop {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let wait = retry_at.map_or(interval, |at| {
            at.saturating_duration_since(tokio::time::Instant::now())
                .min(interval)
        });
        let full = tokio::select! {
            () = tokio::time::sleep(wait) => true,
            () = node.repair.wake.notified() => {
                // A new map (a full pass asked for) starts at once, also
                // when it comes while hints gather: peers that adopted it
                // first hint a new home before the map reaches it.
                if last_pass.elapsed() >= GATHER {
                    let until = tokio::time::Instant::now() + GATHER;
                    while !node.repair.full_requested() {
                        tokio::select! {
                            () = tokio::time::sleep_until(until) => break,
                            () = node.repair.wake.notified() => {}
                        }
                    }
                }
                node.repair.take_full()
            }
            () = quitting(&mut quit) => return,
        };
        if stop.load(Ordering::Relaxed) {
            return;
        }
        if full {
            // This pass is the one a retry was waiting for.
            retry_at = None;
        }
        tracing::debug!(full, "reconciliation pass starting");
        let result = repair::reconcile_pass(&node, limits, &stop, full).await;
        last_pass = tokio::time::Instant::now();
        // A pass that only put rebuilds off (the store is full) has nothing
        // to say: the pause was said once, when it began.
        let deferred_only = |r: &ReconcileReport| {
            r.deferred > 0
                && r.rebuilt == 0
                && r.failed == 0
                && r.damaged == 0
                && r.handed_back == 0
                && r.refs_dropped == 0
        };
        let failed = match result {
            Ok(r)
                if (r.missing > 0 || r.handed_back > 0 || r.refs_dropped > 0 || r.damaged > 0)
                    && !deferred_only(&r) =>
            {
                tracing::info!(
                    chunks = r.chunks,
                    missing = r.missing,
                    rebuilt = r.rebuilt,
                    rebuilt_bytes = r.rebuilt_bytes,
                    failed = r.failed,
                    damaged = r.damaged,
                    left_damaged = r.left_damaged,
                    deferred = r.deferred,
                    handed_back = r.handed_back,
                    refs_pushed = r.refs_pushed,
                    refs_dropped = r.refs_dropped,
                    "reconciliation pass"
                );
                r.failed > 0
            }
            Ok(r) => {
                tracing::debug!(
                    chunks = r.chunks,
                    missing = r.missing,
                    deferred = r.deferred,
                    left_damaged = r.left_damaged,
                    "reconciliation pass: nothing rebuilt or moved"
                );
                false
            }
            Err(e) => {
                tracing::warn!(error = %e, "reconciliation pass failed");
                false
            }
        };
        let now = tokio::time::Instant::now();
        if let Some(left) = node.repair.rebuilds_paused() {
            // The store is full: the rebuilds put off (the hints that named
            // them are spent) are found again by a full pass when the pause
            // ends, and not before.
            retry_at = Some(now + left);
        } else if failed {
            // Peers may be back soon: do not wait a whole interval.
            let at = now + RETRY;
            retry_at = Some(retry_at.map_or(at, |t| t.min(at)));
        }
    }
}

async fn scrub_loop(
    node: Arc<Node>,
    interval: Duration,
    bytes_per_sec: u64,
    stop: Arc<AtomicBool>,
    mut quit: Quit,
) {
    loop {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        // A pass is due `interval` after the last complete one; a pass cut
        // short by a restart resumes at once (its cursor is kept).
        let n = node.clone();
        let last = tokio::task::spawn_blocking(move || n.scrub_last_done_ms())
            .await
            .ok()
            .and_then(|r| r.ok())
            .flatten();
        let wait = last.map_or(Duration::from_secs(60), |done| {
            let due = done.saturating_add(interval.as_millis() as u64);
            Duration::from_millis(due.saturating_sub(grid::clock::now_ms()))
        });
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = quitting(&mut quit) => return,
        }
        let (n, s) = (node.clone(), stop.clone());
        match tokio::task::spawn_blocking(move || n.scrub_pass(bytes_per_sec, &s)).await {
            Ok(Ok(r)) => tracing::info!(
                shards = r.shards,
                bytes = r.bytes,
                corrupt = r.corrupt,
                complete = r.complete,
                "scrub pass"
            ),
            Ok(Err(e)) => tracing::warn!(error = %e, "scrub pass failed"),
            Err(e) => tracing::warn!(error = %e, "scrub pass did not finish"),
        }
        if stop.load(Ordering::Relaxed) {
            return;
        }
    }
}

async fn anti_entropy_loop(
    node: Arc<Node>,
    interval: Duration,
    replicas: usize,
    stop: Arc<AtomicBool>,
    mut quit: Quit,
) {
    loop {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = quitting(&mut quit) => return,
        }
        match anti_entropy::sync_pass(&node, replicas, &stop).await {
            Ok(r) if r.pulled > 0 || r.pushed > 0 => tracing::info!(
                pairs = r.pairs,
                digests = r.digests,
                pulled = r.pulled,
                pushed = r.pushed,
                "metadata anti-entropy repaired replicas"
            ),
            Ok(r) => tracing::debug!(
                pairs = r.pairs,
                digests = r.digests,
                "metadata replicas agree"
            ),
            Err(e) => tracing::warn!(error = %e, "metadata anti-entropy pass failed"),
        }
    }
}

async fn liveness_loop(
    node: Arc<Node>,
    cfg: LivenessConfig,
    stop: Arc<AtomicBool>,
    mut quit: Quit,
) {
    let mut live = Liveness::new(cfg);
    loop {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(cfg.heartbeat) => {}
            () = quitting(&mut quit) => return,
        }
        if let Err(e) = live.round(&node).await {
            tracing::warn!(error = %e, "heartbeat round failed");
        }
    }
}
