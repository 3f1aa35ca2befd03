//! Compute beside the data: the job scheduler.
//!
//! A job names a bucket and prefix and a program; every object under the
//! prefix becomes one map task, run on the live node holding the most
//! data-shard bytes of that object's chunks (then the most on its site,
//! then the least loaded), which reads its own shards from its disk and
//! fetches only the rest. The program's stdout streams back over the node
//! RPC (`grid::task`) and is stored here, by the gateway, as
//! `OUT_BUCKET/OUT_PREFIX/<key>`, so nodes never hold a key that writes;
//! non-empty stderr is stored as `OUT_PREFIX/_logs/<key>`. An optional
//! reduce task then reads every map output (concatenated, in key order)
//! and writes `OUT_PREFIX/_reduce`.
//!
//! Tasks whose node dies (the stream ends without a report, or the node
//! cannot be reached) or that the node could not run (input unreadable
//! there, program could not start) are retried on another node, up to
//! `max_attempts`; a program that exits non-zero, is killed by a limit or
//! runs out of time is failed at once (running it again would fail again).
//!
//! A job outlives the gateway that took it. Its spec and every task's
//! state are sealed records on the root replicas ([`records`]), so every
//! gateway reports the same status. One gateway drives it, holding a
//! lease it renews (a duty lease, `crate::duties`); every gateway looks
//! for unfinished jobs whose lease has lapsed and takes them over from
//! their records: tasks done stay done, the rest run again. An output
//! carries the job's id in its metadata and is written only if its key
//! still holds what it held when the task started, and only while the
//! lease holds; a task whose output already carries the id is done. So a
//! takeover reruns no task whose output was committed and commits no
//! output twice. A summary of each finished job is stored (once) as
//! `OUT_PREFIX/_job/<id>.txt`.

use crate::chunk_stream::{open_inline, ReadKey};
use crate::error::Error;
use crate::objects::Conditions;
use crate::store::{BucketHandle, ObjectStore};
use crate::{ListObjectsParams, PutOptions};
use bytes::Bytes;
use codec::ChunkId;
use grid::chunk_io::Grid;
use grid::node_client::RpcError;
use grid::task::{InputChunk, TaskFile, TaskInput, TaskReport, TaskRequest};
use http_body_util::BodyExt;
use metadata::model::{ChunkRef, NodeState};
use metadata::Record;
use records::{JobRecord, JobTasks};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinSet;

mod records;

/// A node that sends nothing (not even an alive frame) for this long is
/// taken for dead and its task retried elsewhere.
const IDLE_LIMIT: Duration = Duration::from_secs(30);
/// A driver renews its job's lease this often; the lease lasts three
/// renewals, so one missed renewal keeps it.
const LEASE_RENEW: Duration = Duration::from_secs(2);
/// A driver stops short of its lease's end by this much: no output is
/// committed under a lease that may be passing to another gateway.
const LEASE_MARGIN: Duration = Duration::from_secs(2);
/// How often every gateway looks for jobs whose driver is gone.
const ADOPT_EVERY: Duration = Duration::from_secs(3);
/// How long a node may take to say which programs it runs.
const PROGRAMS_TIMEOUT: Duration = Duration::from_secs(3);
/// How often `wait` reads a job's records.
const WAIT_POLL: Duration = Duration::from_millis(300);
/// Job leases among the duty leases.
const JOB_DUTY_PREFIX: &str = "job/";
/// User metadata on every output a job writes: the job's id. A task whose
/// output already carries it is done.
pub const JOB_METADATA: &str = "gridstore-job";
/// stderr kept in memory per task (the whole of it, up to the node's
/// 64 KiB, is stored as a log object).
const STDERR_HEAD: usize = 4096;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JobError {
    #[error("no such job {0}")]
    NoSuchJob(String),
    #[error("access denied: {0}")]
    AccessDenied(String),
    #[error("invalid job: {0}")]
    Invalid(String),
    #[error("unavailable: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Store(#[from] Error),
}

/// How tasks choose their node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Placement {
    /// The node holding the most data-shard bytes of the input.
    #[default]
    Locality,
    /// A uniformly random live node: the baseline locality is measured
    /// against.
    Random,
}

impl Placement {
    pub fn name(self) -> &'static str {
        match self {
            Placement::Locality => "locality",
            Placement::Random => "random",
        }
    }
}

/// A program file fetched from the grid into each task's directory.
#[derive(Debug, Clone)]
pub struct ProgramFile {
    pub bucket: String,
    pub key: String,
}

impl ProgramFile {
    /// The file's name in the task directory: the key's last component.
    pub fn file_name(&self) -> &str {
        self.key.rsplit('/').next().unwrap_or(&self.key)
    }
}

#[derive(Debug, Clone, Default)]
pub struct ProgramSpec {
    pub argv: Vec<String>,
    pub files: Vec<ProgramFile>,
}

#[derive(Debug, Clone)]
pub struct TaskLimits {
    pub timeout_secs: u64,
    pub cpu_secs: u64,
    pub memory_mb: u64,
}

impl Default for TaskLimits {
    fn default() -> Self {
        Self {
            timeout_secs: 300,
            cpu_secs: 300,
            memory_mb: 512,
        }
    }
}

#[derive(Debug, Clone)]
pub struct JobSpec {
    /// The access key submitting it; it must own every bucket named.
    pub owner: String,
    pub admin: bool,
    pub bucket: String,
    pub prefix: String,
    pub out_bucket: String,
    pub out_prefix: String,
    pub map: ProgramSpec,
    pub reduce: Option<ProgramSpec>,
    pub limits: TaskLimits,
    pub placement: Placement,
    /// Attempts per task when nodes die or cannot run it.
    pub max_attempts: u32,
    /// Tasks of this job in flight on one node.
    pub per_node: usize,
}

impl JobSpec {
    /// A job with default limits for `owner`.
    pub fn new(
        owner: &str,
        bucket: &str,
        prefix: &str,
        out_bucket: &str,
        out_prefix: &str,
    ) -> Self {
        Self {
            owner: owner.into(),
            admin: false,
            bucket: bucket.into(),
            prefix: prefix.into(),
            out_bucket: out_bucket.into(),
            out_prefix: out_prefix.into(),
            map: ProgramSpec::default(),
            reduce: None,
            limits: TaskLimits::default(),
            placement: Placement::Locality,
            max_attempts: 3,
            per_node: 2,
        }
    }

    /// Where the map output of `key` goes.
    pub fn output_key(&self, key: &str) -> String {
        join_key(&self.out_prefix, key)
    }

    pub fn log_key(&self, key: &str) -> String {
        join_key(&self.out_prefix, &format!("_logs/{key}"))
    }

    pub fn reduce_key(&self) -> String {
        join_key(&self.out_prefix, "_reduce")
    }

    fn check(&self) -> Result<(), JobError> {
        if self.map.argv.is_empty() {
            return Err(JobError::Invalid("no map program".into()));
        }
        if self.reduce.as_ref().is_some_and(|r| r.argv.is_empty()) {
            return Err(JobError::Invalid("empty reduce program".into()));
        }
        let files = self
            .map
            .files
            .iter()
            .chain(self.reduce.iter().flat_map(|r| r.files.iter()));
        for f in files {
            if !grid::task::valid_file_name(f.file_name()) {
                return Err(JobError::Invalid(format!("program file {:?}", f.key)));
            }
        }
        if self.max_attempts == 0 || self.per_node == 0 {
            return Err(JobError::Invalid(
                "max_attempts and per_node must be positive".into(),
            ));
        }
        if self.limits.timeout_secs == 0 {
            return Err(JobError::Invalid("timeout must be positive".into()));
        }
        Ok(())
    }
}

fn join_key(prefix: &str, key: &str) -> String {
    let p = prefix.trim_end_matches('/');
    if p.is_empty() {
        key.to_string()
    } else {
        format!("{p}/{key}")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskPhase {
    Pending,
    Running,
    Done,
    Failed,
    Cancelled,
}

impl TaskPhase {
    pub fn name(self) -> &'static str {
        match self {
            TaskPhase::Pending => "pending",
            TaskPhase::Running => "running",
            TaskPhase::Done => "done",
            TaskPhase::Failed => "failed",
            TaskPhase::Cancelled => "cancelled",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobPhase {
    Running,
    Reducing,
    Done,
    Failed,
    Cancelled,
}

impl JobPhase {
    pub fn name(self) -> &'static str {
        match self {
            JobPhase::Running => "running",
            JobPhase::Reducing => "reducing",
            JobPhase::Done => "done",
            JobPhase::Failed => "failed",
            JobPhase::Cancelled => "cancelled",
        }
    }

    pub fn finished(self) -> bool {
        matches!(
            self,
            JobPhase::Done | JobPhase::Failed | JobPhase::Cancelled
        )
    }
}

/// Input bytes of a task by where they were read, and what the shard map
/// said was possible.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Locality {
    /// Measured: shard bytes from the running node's own disk, from other
    /// nodes of its site, from other sites; input bytes sent inline.
    pub local: u64,
    pub site: u64,
    pub remote: u64,
    pub inline: u64,
    /// From the shard map, in data-shard bytes: all of them, the most one
    /// live node holds itself, the most one live node's site holds, and
    /// the mean of each over the live nodes (a random node's expectation).
    pub planned: u64,
    pub ceiling_local: u64,
    pub ceiling_site: u64,
    pub random_local: f64,
    pub random_site: f64,
}

impl Locality {
    fn add(&mut self, o: &Locality) {
        self.local += o.local;
        self.site += o.site;
        self.remote += o.remote;
        self.inline += o.inline;
        self.planned += o.planned;
        self.ceiling_local += o.ceiling_local;
        self.ceiling_site += o.ceiling_site;
        self.random_local += o.random_local;
        self.random_site += o.random_site;
    }

    fn shard_bytes(&self) -> u64 {
        self.local + self.site + self.remote
    }

    /// Measured fraction of shard bytes read from the node's own disk.
    pub fn local_fraction(&self) -> Option<f64> {
        ratio(self.local as f64, self.shard_bytes() as f64)
    }

    /// Measured fraction read from the node's own site (its disk included).
    pub fn site_fraction(&self) -> Option<f64> {
        ratio((self.local + self.site) as f64, self.shard_bytes() as f64)
    }

    /// The best any node choice could do (from the shard map).
    pub fn ceiling_local_fraction(&self) -> Option<f64> {
        ratio(self.ceiling_local as f64, self.planned as f64)
    }

    pub fn ceiling_site_fraction(&self) -> Option<f64> {
        ratio(self.ceiling_site as f64, self.planned as f64)
    }

    /// What a uniformly random live node would get (from the shard map).
    pub fn random_local_fraction(&self) -> Option<f64> {
        ratio(self.random_local, self.planned as f64)
    }

    pub fn random_site_fraction(&self) -> Option<f64> {
        ratio(self.random_site, self.planned as f64)
    }
}

fn ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0).then(|| a / b)
}

/// One task as status reports it.
#[derive(Debug, Clone)]
pub struct TaskStatus {
    pub key: String,
    pub size: u64,
    pub phase: TaskPhase,
    pub node: Option<String>,
    pub attempts: u32,
    /// How it ended ("ok", "exited with code 3", ...), or the last retry's
    /// reason while it runs.
    pub outcome: String,
    /// The start of its stderr.
    pub stderr: String,
    pub locality: Locality,
}

impl TaskStatus {
    fn new(key: String, size: u64) -> Self {
        Self {
            key,
            size,
            phase: TaskPhase::Pending,
            node: None,
            attempts: 0,
            outcome: String::new(),
            stderr: String::new(),
            locality: Locality::default(),
        }
    }
}

/// A job as status reports it.
#[derive(Debug, Clone)]
pub struct JobStatus {
    pub id: String,
    pub owner: String,
    pub phase: JobPhase,
    pub placement: Placement,
    pub bucket: String,
    pub prefix: String,
    pub out_bucket: String,
    pub out_prefix: String,
    pub reduce_key: Option<String>,
    /// Whether every input has been listed (the task count is final).
    pub listed: bool,
    pub pending: usize,
    pub running: usize,
    pub done: usize,
    pub failed: usize,
    pub cancelled: usize,
    /// Attempts beyond each task's first (node deaths, node faults).
    pub retries: u64,
    /// Over the map tasks that succeeded.
    pub locality: Locality,
    pub error: Option<String>,
    pub created_ms: u64,
    pub finished_ms: Option<u64>,
    /// Failed tasks, and the reduce task when there is one.
    pub failures: Vec<TaskStatus>,
    pub reduce: Option<TaskStatus>,
}

impl JobStatus {
    pub fn total(&self) -> usize {
        self.pending + self.running + self.done + self.failed + self.cancelled
    }

    /// A few lines for a human.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "job {} ({}): {}\n  input  {}/{}\n  output {}/{}\n  tasks  {} total: {} pending, {} running, {} done, {} failed, {} cancelled ({} retries)\n",
            self.id,
            self.placement.name(),
            self.phase.name(),
            self.bucket,
            self.prefix,
            self.out_bucket,
            self.out_prefix,
            self.total(),
            self.pending,
            self.running,
            self.done,
            self.failed,
            self.cancelled,
            self.retries,
        );
        let pct = |f: Option<f64>| f.map_or("-".to_string(), |v| format!("{:.1} %", v * 100.0));
        let l = &self.locality;
        s.push_str(&format!(
            "  input read from the node's own disk: {} (ceiling {}, random node {})\n",
            pct(l.local_fraction()),
            pct(l.ceiling_local_fraction()),
            pct(l.random_local_fraction()),
        ));
        s.push_str(&format!(
            "  input read from the node's own site: {} (ceiling {}, random node {})\n",
            pct(l.site_fraction()),
            pct(l.ceiling_site_fraction()),
            pct(l.random_site_fraction()),
        ));
        s.push_str(&format!(
            "  shard bytes: {} local, {} same site, {} other sites; {} inline\n",
            l.local, l.site, l.remote, l.inline
        ));
        if let Some(r) = &self.reduce {
            s.push_str(&format!(
                "  reduce: {} on {} -> {}/{} ({})\n",
                r.phase.name(),
                r.node.as_deref().unwrap_or("-"),
                self.out_bucket,
                self.reduce_key.as_deref().unwrap_or(""),
                r.outcome
            ));
        }
        if let Some(e) = &self.error {
            s.push_str(&format!("  error: {e}\n"));
        }
        for f in self.failures.iter().take(10) {
            s.push_str(&format!(
                "  failed {} on {}: {}\n",
                f.key,
                f.node.as_deref().unwrap_or("-"),
                f.outcome
            ));
        }
        if self.failures.len() > 10 {
            s.push_str(&format!("  ... {} more failed\n", self.failures.len() - 10));
        }
        s
    }
}

struct JobState {
    phase: JobPhase,
    tasks: Vec<TaskStatus>,
    listed: bool,
    /// The last listed input whose task is recorded.
    listed_after: Option<String>,
    retries: u64,
    error: Option<String>,
    finished_ms: Option<u64>,
    reduce: Option<TaskStatus>,
}

impl JobState {
    fn fresh() -> Self {
        Self {
            phase: JobPhase::Running,
            tasks: Vec::new(),
            listed: false,
            listed_after: None,
            retries: 0,
            error: None,
            finished_ms: None,
            reduce: None,
        }
    }
}

/// A job this gateway drives.
struct Job {
    id: String,
    spec: JobSpec,
    created_ms: u64,
    state: Mutex<JobState>,
    cancelled: AtomicBool,
    /// The lease passed to another gateway, or could not be renewed in
    /// time: stop, and write nothing more (the job is someone else's).
    lost: AtomicBool,
    /// Until when (ms) the lease surely holds.
    lease_until_ms: AtomicU64,
    /// Woken on a cancel or a lost lease.
    cancel: Notify,
    /// Tasks (`None`: the reduce) whose record write failed: written
    /// again with the job's record.
    dirty: Mutex<BTreeSet<Option<usize>>>,
}

impl Job {
    fn new(
        id: String,
        spec: JobSpec,
        created_ms: u64,
        state: JobState,
        lease_until_ms: u64,
    ) -> Self {
        Self {
            id,
            spec,
            created_ms,
            state: Mutex::new(state),
            cancelled: AtomicBool::new(false),
            lost: AtomicBool::new(false),
            lease_until_ms: AtomicU64::new(lease_until_ms),
            cancel: Notify::new(),
            dirty: Mutex::default(),
        }
    }

    /// A job read back from its records, to drive from where they stop.
    fn resumed(r: &JobRecord, tasks: JobTasks, lease_until_ms: u64) -> Self {
        let mut maps = tasks.maps;
        for t in maps.iter_mut() {
            // Its attempt died with the gateway that made it.
            if t.phase == TaskPhase::Running {
                t.phase = TaskPhase::Pending;
            }
        }
        let state = JobState {
            phase: records::phase_of(&r.phase),
            tasks: maps,
            listed: r.listed,
            listed_after: (!r.listed_after.is_empty()).then(|| r.listed_after.clone()),
            retries: r.retries,
            error: None,
            finished_ms: None,
            reduce: tasks.reduce,
        };
        let job = Self::new(
            r.id.clone(),
            records::spec_of(r),
            r.created_ms,
            state,
            lease_until_ms,
        );
        if tasks.cancel_requested {
            job.cancelled.store(true, Ordering::Relaxed);
        }
        job
    }

    fn state(&self) -> std::sync::MutexGuard<'_, JobState> {
        // Nothing in the state can be left half-updated by a panic.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn dirty(&self) -> std::sync::MutexGuard<'_, BTreeSet<Option<usize>>> {
        self.dirty.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }

    fn is_lost(&self) -> bool {
        self.lost.load(Ordering::Relaxed)
    }

    /// Cancelled, or no longer this gateway's to drive.
    fn stopping(&self) -> bool {
        self.is_cancelled() || self.is_lost()
    }

    fn cancel_now(&self) {
        self.cancelled.store(true, Ordering::Relaxed);
        self.cancel.notify_waiters();
    }

    fn lose(&self) {
        self.lost.store(true, Ordering::Relaxed);
        self.cancel.notify_waiters();
    }

    /// Whether the lease holds long enough to commit an output under it.
    fn lease_holds(&self) -> bool {
        let margin = LEASE_MARGIN.as_millis() as u64;
        !self.is_lost()
            && grid::clock::now_ms() + margin < self.lease_until_ms.load(Ordering::Relaxed)
    }

    async fn cancelled(&self) {
        let n = self.cancel.notified();
        if self.stopping() {
            return;
        }
        n.await
    }

    fn record(&self) -> JobRecord {
        let st = self.state();
        JobRecord {
            phase: st.phase.name().to_string(),
            error: st.error.clone().unwrap_or_default(),
            finished_ms: st.finished_ms.unwrap_or(0),
            listed: st.listed,
            listed_after: st.listed_after.clone().unwrap_or_default(),
            retries: st.retries,
            counts: records::counts(&st.tasks),
            ..records::new_record(&self.id, &self.spec, self.created_ms)
        }
    }

    /// Its status as this gateway holds it.
    fn status(&self) -> JobStatus {
        let record = self.record();
        let st = self.state();
        let tasks = JobTasks {
            maps: st.tasks.clone(),
            reduce: st.reduce.clone(),
            cancel_requested: false,
        };
        records::status_of(&record, Some(&tasks))
    }

    fn update(&self, idx: Option<usize>, f: impl FnOnce(&mut TaskStatus)) {
        let mut st = self.state();
        let t = match idx {
            Some(i) => st.tasks.get_mut(i),
            None => st.reduce.as_mut(),
        };
        if let Some(t) = t {
            f(t);
        }
    }
}

/// Counts and failures of `tasks` into `s`.
fn tally(s: &mut JobStatus, tasks: &[TaskStatus]) {
    s.pending = 0;
    s.running = 0;
    s.done = 0;
    s.failed = 0;
    s.cancelled = 0;
    s.locality = Locality::default();
    s.failures.clear();
    for t in tasks {
        match t.phase {
            TaskPhase::Pending => s.pending += 1,
            TaskPhase::Running => s.running += 1,
            TaskPhase::Done => {
                s.done += 1;
                s.locality.add(&t.locality);
            }
            TaskPhase::Failed => {
                s.failed += 1;
                s.failures.push(t.clone());
            }
            TaskPhase::Cancelled => s.cancelled += 1,
        }
    }
}

/// Write task `idx`'s state (`None`: the reduce), unless the job is no
/// longer ours; a failed write is retried with the job's record.
async fn persist_task(store: &ObjectStore, job: &Job, idx: Option<usize>) {
    if job.is_lost() {
        return;
    }
    let t = {
        let st = job.state();
        match idx {
            Some(i) => st.tasks.get(i).cloned(),
            None => st.reduce.clone(),
        }
    };
    let Some(t) = t else { return };
    if let Err(e) = store.put_job_task(&job.id, &t, idx.is_none()).await {
        tracing::warn!(job = %job.id, task = %t.key, error = %e, "task state not recorded; retried");
        job.dirty().insert(idx);
    }
}

/// Write the job's record, and the task states whose write failed.
async fn persist_job(store: &ObjectStore, job: &Job) -> Result<(), Error> {
    if job.is_lost() {
        return Ok(());
    }
    let dirty = std::mem::take(&mut *job.dirty());
    for idx in dirty {
        persist_task(store, job, idx).await;
    }
    store.put_job_record(&job.record()).await
}

/// Refuse a job whose map or reduce program no live node runs: asked of
/// the nodes themselves (their `[jobs]` config), so that a program off
/// the allow-list fails at submission, not task by task.
async fn check_programs(store: &ObjectStore, spec: &JobSpec) -> Result<(), JobError> {
    let answers: Vec<_> = crate::node_status::gather(store, Some(PROGRAMS_TIMEOUT))
        .await
        .into_iter()
        .filter(|(n, _)| n.state == NodeState::Up as i32)
        .filter_map(|(_, answer)| answer.ok())
        .collect();
    if answers.is_empty() {
        return Err(JobError::Unavailable(
            "no node answered: cannot check the job's programs".into(),
        ));
    }
    let programs: BTreeSet<&str> = answers
        .iter()
        .flat_map(|s| s.job_programs.iter().map(String::as_str))
        .collect();
    let shipped = answers.iter().any(|s| s.job_shipped_binaries);
    for (what, p) in
        std::iter::once(("map", &spec.map)).chain(spec.reduce.iter().map(|r| ("reduce", r)))
    {
        let argv0 = p.argv[0].as_str();
        let ok = match argv0.strip_prefix("./") {
            Some(name) => shipped && p.files.iter().any(|f| f.file_name() == name),
            None => programs.contains(argv0),
        };
        if ok {
            continue;
        }
        let allowed = if programs.is_empty() {
            "none".to_string()
        } else {
            programs.iter().copied().collect::<Vec<_>>().join(", ")
        };
        let shipped_note = match (argv0.starts_with("./"), shipped) {
            (true, false) => "; no node runs programs shipped with a job",
            (true, true) => "; a shipped program must be one of the program's files",
            _ => "",
        };
        return Err(JobError::Invalid(format!(
            "the {what} program {argv0:?} is not allowed on any live node (allowed: {allowed}{shipped_note})"
        )));
    }
    Ok(())
}

fn duty_name(id: &str) -> String {
    format!("{JOB_DUTY_PREFIX}{id}")
}

/// The jobs of a grid, as one gateway serves them: the ones it drives,
/// and every job's records.
#[derive(Clone)]
pub struct JobManager {
    inner: Arc<Manager>,
}

struct Manager {
    store: ObjectStore,
    /// This gateway's name in job leases.
    holder: String,
    /// The jobs this gateway drives.
    jobs: Mutex<BTreeMap<String, Arc<Job>>>,
}

impl Manager {
    fn jobs(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<Job>>> {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn start(self: &Arc<Self>, job: Arc<Job>) {
        self.jobs().insert(job.id.clone(), job.clone());
        tokio::spawn(drive(
            Arc::downgrade(self),
            self.store.clone(),
            job,
            self.holder.clone(),
        ));
    }

    /// Take over the unfinished jobs no live gateway holds the lease of.
    async fn adopt_orphans(self: &Arc<Self>) -> Result<usize, Error> {
        let store = &self.store;
        let open: Vec<JobRecord> = {
            let records = store.job_records().await?;
            let local = self.jobs();
            records
                .into_iter()
                .filter(|r| !records::phase_of(&r.phase).finished() && !local.contains_key(&r.id))
                .collect()
        };
        if open.is_empty() {
            return Ok(0);
        }
        let held = store.duty_holders(JOB_DUTY_PREFIX).await?;
        let mut adopted = 0;
        for r in open {
            let duty = duty_name(&r.id);
            if held.contains_key(&duty) {
                continue;
            }
            let started = grid::clock::now_ms();
            if !store.hold_duty(&duty, &self.holder, LEASE_RENEW).await? {
                // Another gateway got there first: leave it the job.
                let _ = store.release_duty(&duty, &self.holder).await;
                continue;
            }
            let tasks = store.job_task_records(&r.id).await?;
            let job = Arc::new(Job::resumed(&r, tasks, started + lease_ms()));
            tracing::info!(job = %r.id, "job taken over: the gateway driving it stopped renewing its lease");
            self.start(job);
            adopted += 1;
        }
        Ok(adopted)
    }
}

/// Look for orphaned jobs every [`ADOPT_EVERY`] while the manager lives.
async fn adopt_loop(manager: Weak<Manager>) {
    let mut tick = tokio::time::interval(ADOPT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(m) = manager.upgrade() else { return };
        if let Err(e) = m.adopt_orphans().await {
            tracing::debug!(error = %e, "looking for orphaned jobs failed; retried");
        }
    }
}

fn lease_ms() -> u64 {
    crate::duties::duty_ttl(LEASE_RENEW).as_millis() as u64
}

impl JobManager {
    /// The job service of one gateway, under a lease name of its own.
    pub fn new(store: ObjectStore) -> Self {
        Self::with_holder(store, &format!("jobs-{:016x}", rand::random::<u64>()))
    }

    /// As [`JobManager::new`], named `holder` in job leases (unique per
    /// running gateway). Starts looking for jobs whose gateway is gone.
    pub fn with_holder(store: ObjectStore, holder: &str) -> Self {
        let inner = Arc::new(Manager {
            store,
            holder: holder.to_string(),
            jobs: Mutex::default(),
        });
        tokio::spawn(adopt_loop(Arc::downgrade(&inner)));
        Self { inner }
    }

    /// Take over now the jobs whose driver's lease has lapsed (done every
    /// few seconds by itself); how many were taken.
    pub async fn adopt_orphans(&self) -> Result<usize, JobError> {
        Ok(self.inner.adopt_orphans().await?)
    }

    /// Check `spec` (the caller must own every bucket it names), record it
    /// and start it; its id. Once this returns, the job survives this
    /// gateway.
    pub async fn submit(&self, spec: JobSpec) -> Result<String, JobError> {
        spec.check()?;
        let store = &self.inner.store;
        let mut buckets = vec![spec.bucket.as_str(), spec.out_bucket.as_str()];
        for f in spec
            .map
            .files
            .iter()
            .chain(spec.reduce.iter().flat_map(|r| r.files.iter()))
        {
            buckets.push(&f.bucket);
        }
        for b in buckets {
            let info = store.head_bucket(b).await?;
            if !spec.admin && info.owner != spec.owner {
                return Err(JobError::AccessDenied(format!("bucket {b} is not yours")));
            }
        }
        crate::naming::check_object_key(&spec.reduce_key()).map_err(Error::from)?;
        check_programs(store, &spec).await?;
        let id = format!(
            "j{:x}{:06x}",
            grid::clock::now_ms(),
            rand::random::<u32>() & 0xff_ffff
        );
        let started = grid::clock::now_ms();
        if !store
            .hold_duty(&duty_name(&id), &self.inner.holder, LEASE_RENEW)
            .await?
        {
            return Err(JobError::Invalid(format!("job id {id} already taken")));
        }
        let job = Arc::new(Job::new(
            id.clone(),
            spec,
            started,
            JobState::fresh(),
            started + lease_ms(),
        ));
        store.put_job_record(&job.record()).await?;
        self.inner.start(job);
        Ok(id)
    }

    async fn record(&self, id: &str, caller: &str, admin: bool) -> Result<JobRecord, JobError> {
        match self.inner.store.get_job_record(id).await? {
            Some(r) if admin || r.owner == caller => Ok(r),
            // Someone else's job is as invisible as a missing one.
            _ => Err(JobError::NoSuchJob(id.to_string())),
        }
    }

    /// The job's status from its records: the same from every gateway.
    pub async fn status(&self, id: &str, caller: &str, admin: bool) -> Result<JobStatus, JobError> {
        let r = self.record(id, caller, admin).await?;
        self.status_from(&r).await
    }

    /// The status of the job `r` records, with its task records read.
    async fn status_from(&self, r: &JobRecord) -> Result<JobStatus, JobError> {
        let tasks = self.inner.store.job_task_records(&r.id).await?;
        Ok(records::status_of(r, Some(&tasks)))
    }

    /// The caller's jobs (an admin's: all), oldest first, with the task
    /// counts their drivers last recorded.
    pub async fn list(&self, caller: &str, admin: bool) -> Result<Vec<JobStatus>, JobError> {
        let mut jobs: Vec<JobStatus> = self
            .inner
            .store
            .job_records()
            .await?
            .iter()
            .filter(|r| admin || r.owner == caller)
            .map(|r| records::status_of(r, None))
            .collect();
        jobs.sort_by(|a, b| (a.created_ms, &a.id).cmp(&(b.created_ms, &b.id)));
        Ok(jobs)
    }

    /// Stop dispatching and stop the tasks running (their nodes kill the
    /// programs), whichever gateway drives the job.
    pub async fn cancel(&self, id: &str, caller: &str, admin: bool) -> Result<JobStatus, JobError> {
        let r = self.record(id, caller, admin).await?;
        self.inner.store.put_job_cancel(id).await?;
        let local = self.inner.jobs().get(id).cloned();
        if let Some(job) = local {
            job.cancel_now();
        }
        self.status_from(&r).await
    }

    /// Wait until the job has finished (or `timeout` passed); its status.
    pub async fn wait(
        &self,
        id: &str,
        caller: &str,
        admin: bool,
        timeout: Duration,
    ) -> Result<JobStatus, JobError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // The job's record says when it ends; its tasks are read once.
            let r = self.record(id, caller, admin).await?;
            if records::phase_of(&r.phase).finished() || tokio::time::Instant::now() >= deadline {
                return self.status_from(&r).await;
            }
            tokio::time::sleep_until(deadline.min(tokio::time::Instant::now() + WAIT_POLL)).await;
        }
    }

    /// The stored stderr of task `key`, or (no key) the stderr heads of
    /// every failed task and the reduce.
    pub async fn logs(
        &self,
        id: &str,
        caller: &str,
        admin: bool,
        key: Option<&str>,
    ) -> Result<String, JobError> {
        let r = self.record(id, caller, admin).await?;
        if let Some(key) = key {
            let spec = records::spec_of(&r);
            let log_key = spec.log_key(key);
            let got = self
                .inner
                .store
                .get_object(&spec.out_bucket, &log_key, Default::default())
                .await;
            return match got {
                Ok(r) => {
                    let mut body = r.body;
                    let mut out = Vec::new();
                    use futures_util::StreamExt;
                    while let Some(piece) = body.next().await {
                        out.extend_from_slice(&piece?);
                    }
                    Ok(String::from_utf8_lossy(&out).into_owned())
                }
                Err(Error::NoSuchKey { .. }) => Ok(String::new()),
                Err(e) => Err(e.into()),
            };
        }
        let s = self.status_from(&r).await?;
        let mut out = String::new();
        for t in s.failures.iter().chain(s.reduce.iter()) {
            out.push_str(&format!(
                "== {} ({} on {}: {})\n{}",
                t.key,
                t.phase.name(),
                t.node.as_deref().unwrap_or("-"),
                t.outcome,
                t.stderr
            ));
            if !t.stderr.ends_with('\n') && !t.stderr.is_empty() {
                out.push('\n');
            }
        }
        Ok(out)
    }
}

/// Which nodes tasks are on, shared by a job's tasks.
struct Sched {
    state: Mutex<SchedState>,
    freed: Notify,
    per_node: usize,
}

#[derive(Default)]
struct SchedState {
    inflight: HashMap<String, usize>,
    /// Nodes this job found dead; not chosen again by it.
    suspect: HashSet<String>,
}

/// An input's data-shard bytes per node and per site, from the map.
#[derive(Default, Clone)]
struct Plan {
    total: u64,
    node: HashMap<String, u64>,
    site: HashMap<String, u64>,
}

impl Plan {
    fn add_chunks(&mut self, grid: &Grid, chunks: &[ChunkRef]) {
        for c in chunks {
            let Some(e) = c.erasure else { continue };
            let Ok(id) = <[u8; 32]>::try_from(c.id.as_slice()) else {
                continue;
            };
            let Ok(homes) = grid.shard_homes(&ChunkId(id), e.total()) else {
                continue;
            };
            let len = u64::from(c.shard_len);
            self.total += len * u64::from(e.data);
            for home in homes.iter().take(e.data as usize) {
                *self.node.entry(home.clone()).or_default() += len;
                if let Some(n) = grid.map().nodes.iter().find(|n| &n.id == home) {
                    *self.site.entry(n.site.clone()).or_default() += len;
                }
            }
        }
    }

    /// (own-disk bytes, own-site bytes) if `node` ran it.
    fn score(&self, grid: &Grid, node: &str) -> (u64, u64) {
        let local = self.node.get(node).copied().unwrap_or(0);
        let site = grid
            .map()
            .nodes
            .iter()
            .find(|n| n.id == node)
            .and_then(|n| self.site.get(&n.site))
            .copied()
            .unwrap_or(0);
        (local, site)
    }

    /// Ceilings and random-node expectations over `live` nodes.
    fn locality(&self, grid: &Grid, live: &[String]) -> Locality {
        let scores: Vec<(u64, u64)> = live.iter().map(|n| self.score(grid, n)).collect();
        let n = scores.len().max(1) as f64;
        Locality {
            planned: self.total,
            ceiling_local: scores.iter().map(|s| s.0).max().unwrap_or(0),
            ceiling_site: scores.iter().map(|s| s.1).max().unwrap_or(0),
            random_local: scores.iter().map(|s| s.0 as f64).sum::<f64>() / n,
            random_site: scores.iter().map(|s| s.1 as f64).sum::<f64>() / n,
            ..Locality::default()
        }
    }
}

impl Sched {
    fn new(per_node: usize) -> Self {
        Self {
            state: Mutex::default(),
            freed: Notify::new(),
            per_node,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SchedState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn live(&self, grid: &Grid, excluded: &HashSet<String>) -> Vec<String> {
        let st = self.lock();
        grid.map()
            .nodes
            .iter()
            .filter(|n| n.state == NodeState::Up as i32)
            .filter(|n| grid.client(&n.id).is_some())
            .filter(|n| !st.suspect.contains(&n.id) && !excluded.contains(&n.id))
            .map(|n| n.id.clone())
            .collect()
    }

    /// A node for a task with input `plan`, once one has a free slot;
    /// `None` when no live node is left.
    async fn acquire(
        &self,
        grid: &Grid,
        plan: &Plan,
        placement: Placement,
        excluded: &HashSet<String>,
    ) -> Option<String> {
        // Random placement picks its node once, then waits for it: choosing
        // among free nodes only would still be locality-blind, but picking
        // first keeps the baseline exactly uniform.
        let random_pick = {
            let live = self.live(grid, excluded);
            if live.is_empty() {
                return None;
            }
            live[rand::random::<usize>() % live.len()].clone()
        };
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            let live = self.live(grid, excluded);
            if live.is_empty() {
                return None;
            }
            let chosen = {
                let mut st = self.lock();
                let chosen = self.choose(&st, grid, plan, placement, &live, &random_pick);
                if let Some(n) = &chosen {
                    *st.inflight.entry(n.clone()).or_default() += 1;
                }
                chosen
            };
            if chosen.is_some() {
                return chosen;
            }
            freed.await;
        }
    }

    fn choose(
        &self,
        st: &SchedState,
        grid: &Grid,
        plan: &Plan,
        placement: Placement,
        live: &[String],
        random_pick: &String,
    ) -> Option<String> {
        let load = |n: &str| st.inflight.get(n).copied().unwrap_or(0);
        {
            match placement {
                Placement::Random => {
                    let n = if live.contains(random_pick) {
                        random_pick.clone()
                    } else {
                        live[rand::random::<usize>() % live.len()].clone()
                    };
                    (load(&n) < self.per_node).then_some(n)
                }
                Placement::Locality => {
                    let best = live.iter().map(|n| plan.score(grid, n)).max();
                    let mut candidates: Vec<&String> = live
                        .iter()
                        .filter(|n| Some(plan.score(grid, n)) == best)
                        .filter(|n| load(n) < self.per_node)
                        .collect();
                    // Equal locality: the least loaded, then any (random, so
                    // equal nodes share the work).
                    let min = candidates.iter().map(|n| load(n)).min();
                    candidates.retain(|n| Some(load(n)) == min);
                    (!candidates.is_empty())
                        .then(|| candidates[rand::random::<usize>() % candidates.len()].clone())
                }
            }
        }
    }

    fn release(&self, node: &str) {
        if let Some(c) = self.lock().inflight.get_mut(node) {
            *c = c.saturating_sub(1);
        }
        self.freed.notify_waiters();
    }

    fn suspect(&self, node: &str) {
        self.lock().suspect.insert(node.to_string());
        self.freed.notify_waiters();
    }
}

/// The grid as of now, owned (a task outlives any borrow of the store).
fn grid_now(store: &ObjectStore) -> Grid {
    let g: &Grid = &store.grid();
    g.clone()
}

/// Run `job` to its end while this gateway holds its lease; record how it
/// ended and store its summary beside the outputs.
async fn drive(manager: Weak<Manager>, store: ObjectStore, job: Arc<Job>, holder: String) {
    let keeper = AbortOnDrop(tokio::spawn(keep_lease(
        store.clone(),
        job.clone(),
        holder.clone(),
    )));
    let result = run_job(&store, &job).await;
    drop(keeper);
    let forget = || {
        if let Some(m) = manager.upgrade() {
            m.jobs().remove(&job.id);
        }
    };
    if job.is_lost() {
        tracing::warn!(job = %job.id, "job left to the gateway that holds its lease now");
        forget();
        return;
    }
    let phase = {
        let mut st = job.state();
        st.phase = match (&result, job.is_cancelled()) {
            (_, true) => JobPhase::Cancelled,
            (Ok(()), false) => JobPhase::Done,
            (Err(_), false) => JobPhase::Failed,
        };
        if let Err(e) = &result {
            st.error = Some(e.clone());
        }
        st.finished_ms = Some(grid::clock::now_ms());
        st.phase
    };
    tracing::info!(job = %job.id, phase = phase.name(), "job finished");
    // The summary first, under a key only this job writes and only if
    // absent: a gateway taking over a job whose end was not recorded
    // writes it no second time.
    let summary = job.status().summary();
    let key = join_key(&job.spec.out_prefix, &format!("_job/{}.txt", job.id));
    let once = Conditions {
        if_none_match: Some("*".into()),
        ..Conditions::default()
    };
    match put_bytes(&store, &job.spec.out_bucket, &key, summary.into(), once).await {
        Ok(()) | Err(Error::PreconditionFailed) => {}
        Err(e) => tracing::warn!(job = %job.id, error = %e, "could not store the job summary"),
    }
    // The end must be recorded, or another gateway would take the job
    // over; while the lease holds, keep trying.
    if let Err(e) = while_lease_holds(&job, "job end", || persist_job(&store, &job)).await {
        tracing::warn!(job = %job.id, error = %e, "job end not recorded; another gateway will finish it");
        forget();
        return;
    }
    let duty = duty_name(&job.id);
    if let Err(e) = store.release_duty(&duty, &holder).await {
        tracing::debug!(job = %job.id, error = %e, "job lease not released; it lapses");
    }
    forget();
}

/// Send `inputs` as `FRAME_INPUT`s, read one at a time as the node takes
/// them; an input that cannot be read ends the stream with an error (and
/// is the task's failure).
async fn stream_inputs(
    store: ObjectStore,
    inputs: Vec<(BucketHandle, String)>,
    frames: mpsc::Sender<Result<Bytes, grid::node_client::BodyError>>,
) -> Result<(), String> {
    /// Chunks per frame: keeps a frame of a huge input under the limit.
    const CHUNKS_PER_FRAME: usize = 2000;
    for (b, key) in inputs {
        let input = match plan_input(&store, &b, &key).await {
            Ok((input, _)) => input,
            Err(e) => {
                let why = format!("cannot read input {key}: {e}");
                let _ = frames.send(Err(why.clone().into())).await;
                return Err(why);
            }
        };
        let pieces: Vec<TaskInput> = if input.chunks.len() <= CHUNKS_PER_FRAME {
            vec![input]
        } else {
            input
                .chunks
                .chunks(CHUNKS_PER_FRAME)
                .map(|c| TaskInput {
                    key: input.key.clone(),
                    chunks: c.to_vec(),
                    inline_data: Vec::new(),
                })
                .collect()
        };
        for p in pieces {
            let f = grid::task::frame(grid::task::FRAME_INPUT, &p.encode_record());
            if frames.send(Ok(f)).await.is_err() {
                // The node stopped reading (the program ended early).
                return Ok(());
            }
        }
    }
    Ok(())
}

/// Aborts the task when dropped.
struct AbortOnDrop<T = ()>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Renew the job's lease every [`LEASE_RENEW`], pick up cancel requests
/// made through other gateways, and record progress for listings. A lease
/// lost, or not renewed in time, stops the job here.
async fn keep_lease(store: ObjectStore, job: Arc<Job>, holder: String) {
    let duty = duty_name(&job.id);
    let mut tick = tokio::time::interval(LEASE_RENEW);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The lease was just taken.
    tick.tick().await;
    let mut recorded = records::counts(&job.state().tasks);
    loop {
        tick.tick().await;
        let started = grid::clock::now_ms();
        match store.hold_duty(&duty, &holder, LEASE_RENEW).await {
            Ok(true) => job
                .lease_until_ms
                .store(started + lease_ms(), Ordering::Relaxed),
            Ok(false) => {
                tracing::warn!(job = %job.id, "job lease taken by another gateway: stopping here");
                job.lose();
                return;
            }
            Err(e) => tracing::warn!(job = %job.id, error = %e, "job lease not renewed"),
        }
        if !job.lease_holds() {
            tracing::warn!(job = %job.id, "job lease not renewed in time: stopping here");
            job.lose();
            return;
        }
        if !job.is_cancelled() && matches!(store.job_cancel_requested(&job.id).await, Ok(true)) {
            tracing::info!(job = %job.id, "job cancelled through another gateway");
            job.cancel_now();
        }
        let counts = records::counts(&job.state().tasks);
        if counts != recorded || !job.dirty().is_empty() {
            match persist_job(&store, &job).await {
                Ok(()) => recorded = counts,
                Err(e) => tracing::debug!(job = %job.id, error = %e, "job progress not recorded"),
            }
        }
    }
}

async fn put_bytes(
    store: &ObjectStore,
    bucket: &str,
    key: &str,
    data: Bytes,
    write_conditions: Conditions,
) -> Result<(), Error> {
    let body = futures_util::stream::iter([Ok::<_, std::convert::Infallible>(data)]);
    let opts = PutOptions {
        content_type: Some("text/plain".into()),
        write_conditions,
        ..PutOptions::default()
    };
    store.put_object(bucket, key, body, opts).await.map(drop)
}

/// What a task needs from the job, shared by its tasks.
struct TaskCtx {
    store: ObjectStore,
    job: Arc<Job>,
    sched: Arc<Sched>,
}

/// Run the job's tasks from where its records stop: the recorded tasks
/// not finished, then the inputs not yet listed, then the reduce.
async fn run_job(store: &ObjectStore, job: &Arc<Job>) -> Result<(), String> {
    let spec = &job.spec;
    let input = store
        .open_bucket(&spec.bucket)
        .await
        .map_err(|e| e.to_string())?;
    let files = fetch_files(store, &spec.map.files).await?;
    let ctx = Arc::new(TaskCtx {
        store: store.clone(),
        job: job.clone(),
        sched: Arc::new(Sched::new(spec.per_node)),
    });
    let live = ctx.sched.live(&grid_now(store), &HashSet::new()).len();
    let parallel = (live.max(1) * spec.per_node).max(1);
    let mut running = JoinSet::new();
    let map_task = |idx: usize, key: String| Task {
        idx: Some(idx),
        inputs: vec![(input.clone(), key)],
        argv: spec.map.argv.clone(),
        files: files.clone(),
        out_key: None,
    };
    let unfinished: Vec<(usize, String)> = job
        .state()
        .tasks
        .iter()
        .enumerate()
        .filter(|(_, t)| matches!(t.phase, TaskPhase::Pending | TaskPhase::Running))
        .map(|(i, t)| (i, t.key.clone()))
        .collect();
    for (idx, key) in unfinished {
        if job.stopping() {
            break;
        }
        while running.len() >= parallel {
            running.join_next().await;
        }
        running.spawn(run_task(ctx.clone(), map_task(idx, key)));
    }
    let (listed, mut after) = {
        let st = job.state();
        (st.listed, st.listed_after.clone())
    };
    // Outputs written under the input prefix must not become inputs.
    let skip_prefix = (spec.out_bucket == spec.bucket).then(|| spec.output_key(""));
    while !listed && !job.stopping() {
        let params = ListObjectsParams {
            prefix: spec.prefix.clone(),
            delimiter: None,
            start_after: after.clone(),
            max_keys: 1000,
        };
        let page = store
            .list_objects(&spec.bucket, &params)
            .await
            .map_err(|e| e.to_string())?;
        let last = page.objects.last().map(|o| o.key.clone());
        let fresh: Vec<TaskStatus> = page
            .objects
            .into_iter()
            .filter(|o| {
                !skip_prefix
                    .as_deref()
                    .is_some_and(|p| !p.is_empty() && o.key.starts_with(p))
            })
            .map(|o| TaskStatus::new(o.key, o.size))
            .collect();
        let done = !page.is_truncated || page.next_start_after.is_none();
        let first = {
            let mut st = job.state();
            let first = st.tasks.len();
            st.tasks.extend(fresh.iter().cloned());
            if let Some(l) = &last {
                st.listed_after = Some(l.clone());
            }
            st.listed = done;
            first
        };
        // Recorded before any of them runs: a gateway taking over finds
        // every task that may have started.
        record_page(store, job, &fresh).await?;
        for (i, t) in fresh.into_iter().enumerate() {
            if job.stopping() {
                break;
            }
            while running.len() >= parallel {
                running.join_next().await;
            }
            running.spawn(run_task(ctx.clone(), map_task(first + i, t.key)));
        }
        if done {
            break;
        }
        after = page.next_start_after.or(last);
    }
    while running.join_next().await.is_some() {}
    if job.is_lost() {
        return Err("lease lost".into());
    }
    if job.is_cancelled() {
        let cancelled: Vec<TaskStatus> = {
            let mut st = job.state();
            st.tasks
                .iter_mut()
                .filter(|t| t.phase == TaskPhase::Pending)
                .map(|t| {
                    t.phase = TaskPhase::Cancelled;
                    t.clone()
                })
                .collect()
        };
        record_page(store, job, &cancelled).await?;
        return Err("cancelled".into());
    }
    let (failed, total, outputs) = {
        let st = job.state();
        let failed = st
            .tasks
            .iter()
            .filter(|t| t.phase != TaskPhase::Done)
            .count();
        let outputs: Vec<String> = st.tasks.iter().map(|t| spec.output_key(&t.key)).collect();
        (failed, st.tasks.len(), outputs)
    };
    if failed > 0 {
        return Err(format!("{failed} of {total} map tasks failed"));
    }
    let Some(reduce) = &spec.reduce else {
        return Ok(());
    };
    let reduced = {
        let mut st = job.state();
        st.phase = JobPhase::Reducing;
        st.reduce
            .as_ref()
            .is_some_and(|r| r.phase == TaskPhase::Done)
    };
    if !reduced {
        persist_job(store, job).await.map_err(|e| e.to_string())?;
        let out = store
            .open_bucket(&spec.out_bucket)
            .await
            .map_err(|e| e.to_string())?;
        let files = fetch_files(store, &reduce.files).await?;
        {
            let mut st = job.state();
            let attempts = st.reduce.as_ref().map_or(0, |r| r.attempts);
            let mut r = TaskStatus::new(spec.reduce_key(), 0);
            r.attempts = attempts;
            st.reduce = Some(r);
        }
        let task = Task {
            idx: None,
            inputs: outputs.into_iter().map(|k| (out.clone(), k)).collect(),
            argv: reduce.argv.clone(),
            files,
            out_key: Some(spec.reduce_key()),
        };
        run_task(ctx, task).await;
    }
    if job.is_lost() {
        return Err("lease lost".into());
    }
    let st = job.state();
    match &st.reduce {
        Some(r) if r.phase == TaskPhase::Done => Ok(()),
        Some(r) => Err(format!("reduce failed: {}", r.outcome)),
        None => Err("reduce did not run".into()),
    }
}

/// Record the job (its listing cursor, its counts) with `tasks`, in one
/// write, retried while the lease holds.
async fn record_page(store: &ObjectStore, job: &Job, tasks: &[TaskStatus]) -> Result<(), String> {
    while_lease_holds(job, "job tasks", || async {
        if job.is_lost() {
            return Err("lease lost".to_string());
        }
        store
            .put_job_and_tasks(&job.record(), tasks)
            .await
            .map_err(|e| format!("could not record the job's tasks: {e}"))
    })
    .await
}

/// Run `write` until it succeeds, backing off up to a renewal period,
/// for as long as the job's lease holds; then its last error.
async fn while_lease_holds<E, F, Fut>(job: &Job, what: &str, mut write: F) -> Result<(), E>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), E>>,
{
    let mut delay = Duration::from_millis(200);
    loop {
        match write().await {
            Ok(()) => return Ok(()),
            Err(e) if job.lease_holds() => {
                tracing::warn!(job = %job.id, error = %e, "{what} not recorded; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(LEASE_RENEW);
            }
            Err(e) => return Err(e),
        }
    }
}

/// Program files, fetched once per job.
async fn fetch_files(store: &ObjectStore, files: &[ProgramFile]) -> Result<Vec<TaskFile>, String> {
    let mut out = Vec::new();
    for f in files {
        let got = store
            .get_object(&f.bucket, &f.key, Default::default())
            .await
            .map_err(|e| format!("program file {}/{}: {e}", f.bucket, f.key))?;
        if got.info.size > grid::task::MAX_FILE_BYTES as u64 {
            return Err(format!(
                "program file {}/{} is over {} bytes",
                f.bucket,
                f.key,
                grid::task::MAX_FILE_BYTES
            ));
        }
        let mut data = Vec::with_capacity(got.info.size as usize);
        let mut body = got.body;
        use futures_util::StreamExt;
        while let Some(piece) = body.next().await {
            data.extend_from_slice(&piece.map_err(|e| e.to_string())?);
        }
        out.push(TaskFile {
            name: f.file_name().to_string(),
            data,
        });
    }
    Ok(out)
}

struct Task {
    /// Index of a map task; `None` for the reduce.
    idx: Option<usize>,
    inputs: Vec<(BucketHandle, String)>,
    argv: Vec<String>,
    files: Vec<TaskFile>,
    /// The reduce's output key (a map task's follows from its input).
    out_key: Option<String>,
}

/// The task request's input for `key` and its chunk list.
async fn plan_input(
    store: &ObjectStore,
    b: &BucketHandle,
    key: &str,
) -> Result<(TaskInput, Vec<ChunkRef>), Error> {
    let (v, _) = store.find_version(b, key, None).await?;
    if !v.sse_customer_key_md5.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "{key} is encrypted with a customer key; jobs cannot read it"
        )));
    }
    let mut input = TaskInput {
        key: key.to_string(),
        ..TaskInput::default()
    };
    if v.chunks.is_empty() {
        if !v.inline_data.is_empty() {
            input.inline_data =
                open_inline(&ReadKey::Domain(b.domain.clone()), v.inline_data.clone()).await?;
        }
        return Ok((input, Vec::new()));
    }
    for c in &v.chunks {
        let id = <[u8; 32]>::try_from(c.id.as_slice())
            .map_err(|_| Error::Corrupt("chunk id length".into()))?;
        input.chunks.push(InputChunk {
            chunk: Some(c.clone()),
            key: b.domain.chunk_key(&ChunkId(id)).to_bytes().to_vec(),
        });
    }
    Ok((input, v.chunks))
}

/// Why one attempt did not produce a report.
#[derive(Debug, thiserror::Error)]
enum AttemptError {
    #[error("node {node}: {source}")]
    Node { node: String, source: RpcError },
    #[error("node {0} stopped answering")]
    Silent(String),
    #[error("node {node} sent a bad stream: {reason}")]
    Stream { node: String, reason: String },
    #[error("storing the output: {0}")]
    Store(Error),
    /// A streamed input could not be read (the reduce's map output).
    #[error("{0}")]
    Input(String),
    #[error("cancelled")]
    Cancelled,
}

impl TaskCtx {
    /// Change task `idx` (`None`: the reduce) and record it.
    async fn set(&self, idx: Option<usize>, f: impl FnOnce(&mut TaskStatus)) {
        self.job.update(idx, f);
        persist_task(&self.store, &self.job, idx).await;
    }
}

/// What the output key holds before a task runs.
enum Prior {
    /// Nothing: the output is written only if it is still absent.
    Absent,
    /// An older object (another job's, or a rerun's): replaced only if it
    /// is still that one (its ETag).
    Other(String),
    /// This job's output: the task finished under an earlier driver.
    Ours,
}

async fn prior_output(store: &ObjectStore, job: &Job, key: &str) -> Result<Prior, Error> {
    let b = store.open_bucket(&job.spec.out_bucket).await?;
    let v = store.latest_version(&b, key).await?;
    Ok(match v.filter(|v| !v.delete_marker) {
        None => Prior::Absent,
        Some(v) if v.user_metadata.get(JOB_METADATA) == Some(&job.id) => Prior::Ours,
        Some(v) => Prior::Other(v.etag),
    })
}

async fn run_task(ctx: Arc<TaskCtx>, task: Task) {
    let job = &ctx.job;
    let spec = &job.spec;
    let store = &ctx.store;
    let name = match task.idx {
        Some(i) => job.state().tasks.get(i).map(|t| t.key.clone()),
        None => Some(spec.reduce_key()),
    }
    .unwrap_or_default();
    let out_key = task
        .out_key
        .clone()
        .unwrap_or_else(|| spec.output_key(&name));
    // Committed by a driver that stopped before recording it: done, and
    // not run (nor committed) again.
    let prior = match prior_output(store, job, &out_key).await {
        Ok(Prior::Ours) => {
            ctx.set(task.idx, |t| {
                t.phase = TaskPhase::Done;
                t.outcome = "ok (output committed before a takeover)".into();
            })
            .await;
            return;
        }
        Ok(p) => p,
        Err(e) => {
            ctx.set(task.idx, |t| {
                t.phase = TaskPhase::Failed;
                t.outcome = format!("cannot read the output key {out_key}: {e}");
            })
            .await;
            return;
        }
    };
    let grid = grid_now(store);
    let mut plan = Plan::default();
    // A map task's one input goes in its request, and places it; the
    // reduce's (every map output) stream to the node while it runs.
    let streamed = task.idx.is_none();
    let mut inputs = Vec::with_capacity(task.inputs.len());
    for (b, key) in task.inputs.iter().filter(|_| !streamed) {
        match plan_input(store, b, key).await {
            Ok((input, chunks)) => {
                plan.add_chunks(&grid, &chunks);
                inputs.push(input);
            }
            Err(e) => {
                ctx.set(task.idx, |t| {
                    t.phase = TaskPhase::Failed;
                    t.outcome = format!("cannot read input {key}: {e}");
                })
                .await;
                return;
            }
        }
    }
    let live = ctx.sched.live(&grid, &HashSet::new());
    let planned = plan.locality(&grid, &live);
    // Attempts made under earlier drivers still show.
    let base = {
        let st = job.state();
        match task.idx {
            Some(i) => st.tasks.get(i).map_or(0, |t| t.attempts),
            None => st.reduce.as_ref().map_or(0, |t| t.attempts),
        }
    };
    let mut excluded = HashSet::new();
    let mut last = String::from("no attempt made");
    for attempt in 1..=spec.max_attempts {
        if job.is_lost() {
            return;
        }
        if job.is_cancelled() {
            ctx.set(task.idx, |t| t.phase = TaskPhase::Cancelled).await;
            return;
        }
        let Some(node) = ctx
            .sched
            .acquire(&grid, &plan, spec.placement, &excluded)
            .await
        else {
            last = format!("no live node left to run it ({last})");
            break;
        };
        if attempt > 1 {
            job.state().retries += 1;
        }
        ctx.set(task.idx, |t| {
            t.phase = TaskPhase::Running;
            t.node = Some(node.clone());
            t.attempts = base + attempt;
        })
        .await;
        let req = TaskRequest {
            task_id: format!("{}/{}", job.id, name),
            argv: task.argv.clone(),
            files: task.files.clone(),
            inputs: inputs.clone(),
            timeout_ms: spec.limits.timeout_secs.saturating_mul(1000),
            cpu_secs: spec.limits.cpu_secs,
            memory_bytes: spec.limits.memory_mb.saturating_mul(1 << 20),
            env: Vec::new(),
        };
        let stream = streamed.then_some(task.inputs.as_slice());
        let result = attempt_on(&ctx, &grid, &node, req, stream, &out_key, &prior).await;
        ctx.sched.release(&node);
        match result {
            Ok(report) => {
                let stderr = report.stderr.clone();
                let ok = report.succeeded();
                if !ok && report.node_fault {
                    // The node could not run it (input unreadable there,
                    // program could not start): another node may.
                    last = format!("{node}: {}", report.outcome());
                    tracing::info!(job = %job.id, task = %name, %node, reason = %last, "task retried elsewhere");
                    excluded.insert(node);
                    continue;
                }
                if !stderr.is_empty() {
                    let log = spec.log_key(&name);
                    let anyhow = Conditions::default();
                    if let Err(e) =
                        put_bytes(store, &spec.out_bucket, &log, stderr.into(), anyhow).await
                    {
                        tracing::warn!(job = %job.id, task = %name, error = %e, "could not store a task log");
                    }
                }
                ctx.set(task.idx, |t| {
                    t.phase = if ok {
                        TaskPhase::Done
                    } else {
                        TaskPhase::Failed
                    };
                    t.outcome = report.outcome();
                    let head = &report.stderr[..report.stderr.len().min(STDERR_HEAD)];
                    t.stderr = String::from_utf8_lossy(head).into_owned();
                    t.locality = Locality {
                        local: report.bytes_local,
                        site: report.bytes_site,
                        remote: report.bytes_remote,
                        inline: report.bytes_inline,
                        ..planned
                    };
                })
                .await;
                return;
            }
            Err(AttemptError::Cancelled) if job.is_lost() => return,
            Err(AttemptError::Input(e)) => {
                // Unreadable here; another node would fare no better.
                last = e;
                break;
            }
            Err(AttemptError::Cancelled) => {
                ctx.set(task.idx, |t| {
                    t.phase = TaskPhase::Cancelled;
                    t.outcome = "cancelled".into();
                })
                .await;
                return;
            }
            Err(e) => {
                last = e.to_string();
                tracing::warn!(job = %job.id, task = %name, attempt, error = %e, "task attempt failed");
                if matches!(
                    e,
                    AttemptError::Node { .. }
                        | AttemptError::Silent(_)
                        | AttemptError::Stream { .. }
                ) {
                    ctx.sched.suspect(&node);
                }
                excluded.insert(node);
                ctx.set(task.idx, |t| t.outcome = format!("retrying: {last}"))
                    .await;
            }
        }
    }
    ctx.set(task.idx, |t| {
        t.phase = TaskPhase::Failed;
        t.outcome = format!("gave up: {last}");
    })
    .await;
}

/// Run `req` on `node`, storing its stdout as `out_key` while it streams;
/// the output is committed only if the program succeeded, the lease still
/// holds and the key still holds what it held before (`prior`), so that no
/// two drivers commit one task's output.
async fn attempt_on(
    ctx: &TaskCtx,
    grid: &Grid,
    node: &str,
    req: TaskRequest,
    stream: Option<&[(BucketHandle, String)]>,
    out_key: &str,
    prior: &Prior,
) -> Result<TaskReport, AttemptError> {
    let client = grid.client(node).ok_or_else(|| AttemptError::Node {
        node: node.to_string(),
        source: RpcError::Unreachable {
            node: node.to_string(),
            reason: "not in the cluster map".into(),
        },
    })?;
    let node_err = |source| AttemptError::Node {
        node: node.to_string(),
        source,
    };
    let mut feeding = None;
    let started = match stream {
        None => client.run_task(&req).await,
        Some(inputs) => {
            let (frames, rx) = mpsc::channel(8);
            let head = grid::task::frame(grid::task::FRAME_REQUEST, &req.encode_record());
            let _ = frames.send(Ok(head)).await;
            feeding = Some(AbortOnDrop(tokio::spawn(stream_inputs(
                ctx.store.clone(),
                inputs.to_vec(),
                frames,
            ))));
            client.run_task_streaming(rx).await
        }
    };
    let resp = tokio::select! {
        r = async { started } => r.map_err(node_err)?,
        () = ctx.job.cancelled() => return Err(AttemptError::Cancelled),
    };
    let (tx, mut rx) = mpsc::channel::<Result<Bytes, String>>(4);
    let spec = &ctx.job.spec;
    let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let write_conditions = match prior {
        Prior::Absent => Conditions {
            if_none_match: Some("*".into()),
            ..Conditions::default()
        },
        Prior::Other(etag) => Conditions {
            if_match: Some(etag.clone()),
            ..Conditions::default()
        },
        // Not attempted (the task is done); a conflict if it ever is.
        Prior::Ours => Conditions {
            if_none_match: Some("*".into()),
            ..Conditions::default()
        },
    };
    let put = ctx.store.put_object(
        &spec.out_bucket,
        out_key,
        stream,
        PutOptions {
            content_type: Some("application/octet-stream".into()),
            user_metadata: [(JOB_METADATA.to_string(), ctx.job.id.clone())].into(),
            write_conditions,
            ..PutOptions::default()
        },
    );
    let read = async move {
        let mut r = read_frames(ctx, node, resp, &tx).await;
        if r.as_ref().is_ok_and(TaskReport::succeeded) && !ctx.job.lease_holds() {
            r = Err(AttemptError::Cancelled);
        }
        if !r.as_ref().is_ok_and(TaskReport::succeeded) {
            // Fail the put: no output for a failed, lost or cancelled
            // program (a stream that just ended would commit a partial one).
            let reason = match &r {
                Ok(report) => report.outcome(),
                Err(e) => e.to_string(),
            };
            let _ = tx.send(Err(reason)).await;
        }
        r
    };
    // Read and store concurrently; the stream ends (and the put commits)
    // when `read` returns and drops its sender.
    let (put, read) = tokio::join!(put, read);
    // An input the gateway could not read is the task's failure; a feeder
    // still sending once the program has ended is dropped (it aborts).
    if let Some(mut f) = feeding.take().filter(|f| f.0.is_finished()) {
        if let Ok(Err(e)) = (&mut f.0).await {
            return Err(AttemptError::Input(e));
        }
    }
    let report = read?;
    if report.succeeded() {
        match put {
            Ok(_) => {}
            Err(Error::PreconditionFailed | Error::NoSuchKey { .. })
                if matches!(
                    prior_output(&ctx.store, &ctx.job, out_key).await,
                    Ok(Prior::Ours)
                ) =>
            {
                // Another driver of this job committed it meanwhile.
            }
            Err(e) => return Err(AttemptError::Store(e)),
        }
    }
    Ok(report)
}

async fn read_frames(
    ctx: &TaskCtx,
    node: &str,
    resp: http::Response<hyper::body::Incoming>,
    tx: &mpsc::Sender<Result<Bytes, String>>,
) -> Result<TaskReport, AttemptError> {
    {
        let mut body = resp.into_body();
        let mut frames = grid::task::FrameReader::default();
        loop {
            let next = tokio::select! {
                n = tokio::time::timeout(IDLE_LIMIT, body.frame()) => n,
                () = ctx.job.cancelled() => return Err(AttemptError::Cancelled),
            };
            let piece = match next {
                Err(_) => return Err(AttemptError::Silent(node.to_string())),
                Ok(None) => {
                    return Err(AttemptError::Stream {
                        node: node.to_string(),
                        reason: "ended without a report".into(),
                    })
                }
                Ok(Some(Err(e))) => {
                    return Err(AttemptError::Stream {
                        node: node.to_string(),
                        reason: e.to_string(),
                    })
                }
                Ok(Some(Ok(f))) => f,
            };
            let Ok(data) = piece.into_data() else {
                continue;
            };
            frames.push(&data);
            loop {
                let f = frames.next_frame().map_err(|e| AttemptError::Stream {
                    node: node.to_string(),
                    reason: e.to_string(),
                })?;
                let Some((kind, payload)) = f else { break };
                match kind {
                    grid::task::FRAME_STDOUT => {
                        // The put failing first closes the channel; keep
                        // reading so the report still arrives.
                        let _ = tx.send(Ok(payload)).await;
                    }
                    grid::task::FRAME_DONE => {
                        let report = TaskReport::decode_record(&payload).map_err(|e| {
                            AttemptError::Stream {
                                node: node.to_string(),
                                reason: e.to_string(),
                            }
                        })?;
                        return Ok(report);
                    }
                    _ => {}
                }
            }
        }
    }
}
