//! The job runner host: runs one task of a job (see `cluster::jobs`) per
//! `POST /v1/jobs/task:run`, beside the shards it reads.
//!
//! A task runs an interpreter or binary the operator allows (`[jobs]
//! allowed` in node.toml, resolved on `[jobs] path`, never on the node's
//! own PATH) in its own temporary directory, with a cleared environment,
//! in the [`sandbox`], fed its input objects on stdin as this node reads
//! them ([`input`]: own disk first). Its stdout streams back to the
//! gateway in the RPC response; its stderr (the first 64 KiB) comes back
//! in the final report. The keys the task brought (one per input chunk)
//! live in this call's memory only.

pub mod input;
pub mod sandbox;

use crate::config::JobsConfig;
use crate::node::Node;
use bytes::Bytes;
use grid::chunk_io::Grid;
use grid::node_client::{ChannelBody, ResponseBody};
use grid::task::{self, TaskReport, TaskRequest};
use http::{Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use metadata::Record;
use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, Semaphore};

/// How often a queued or running task tells the gateway it is alive.
const ALIVE_EVERY: Duration = Duration::from_secs(5);
/// stderr kept for the report.
const STDERR_KEEP: usize = 64 << 10;

/// A node's job runner: allowed programs, sandbox, slots.
pub struct JobHost {
    cfg: JobsConfig,
    /// argv[0] as a task names it -> the file run.
    allowed: HashMap<String, PathBuf>,
    sandbox: sandbox::Sandbox,
    slots: Arc<Semaphore>,
    work_dir: Result<PathBuf, String>,
    /// The grid as of the node's map, rebuilt when the epoch changes.
    grid: Mutex<Option<(u64, Arc<Grid>)>>,
}

impl JobHost {
    /// Resolve the allowed programs, find what isolation applies, prepare
    /// the work directory, and close the data directory to the task user.
    /// Problems are logged; a node whose jobs cannot run still serves
    /// shards.
    pub fn new(node_id: &str, data_dir: &Path, cfg: &JobsConfig) -> JobHost {
        let mut allowed = HashMap::new();
        for name in &cfg.allowed {
            match resolve_program(name, &cfg.path) {
                Some(p) => {
                    allowed.insert(name.clone(), p);
                }
                None => tracing::warn!(node = %node_id, program = %name, path = %cfg.path,
                    "jobs: allowed program not found; tasks naming it are refused"),
            }
        }
        let sandbox = if allowed.is_empty() && !cfg.allow_shipped_binaries {
            // No task can run: do not probe or touch anything.
            sandbox::Sandbox::new_inert()
        } else {
            let s = sandbox::Sandbox::new(node_id, (cfg.run_as_uid, cfg.run_as_gid), &[data_dir]);
            if s.run_as.is_some() {
                // The task user must not traverse into the shards, the
                // metadata or anything else kept here.
                if let Err(e) =
                    std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o700))
                {
                    tracing::warn!(node = %node_id, error = %e, "jobs: cannot close the data directory (mode 0700)");
                }
            }
            tracing::info!(node = %node_id, programs = ?allowed.keys().collect::<Vec<_>>(),
                sandbox = %s.describe(), "jobs: runner ready");
            s
        };
        let work_dir = prepare_work_dir(node_id, cfg);
        if let Err(e) = &work_dir {
            tracing::warn!(node = %node_id, error = %e, "jobs: no work directory; tasks are refused");
        }
        JobHost {
            cfg: cfg.clone(),
            allowed,
            sandbox,
            slots: Arc::new(Semaphore::new(cfg.concurrency.max(1))),
            work_dir,
            grid: Mutex::new(None),
        }
    }

    /// The programs tasks may name, sorted.
    pub fn programs(&self) -> Vec<String> {
        let mut p: Vec<String> = self.allowed.keys().cloned().collect();
        p.sort();
        p
    }

    pub fn shipped_binaries(&self) -> bool {
        self.cfg.allow_shipped_binaries
    }

    /// Whether this node runs no task at all.
    fn runs_nothing(&self) -> bool {
        self.allowed.is_empty() && !self.cfg.allow_shipped_binaries
    }

    pub fn sandbox(&self) -> &sandbox::Sandbox {
        &self.sandbox
    }

    fn grid(&self, node: &Node) -> Result<Arc<Grid>, String> {
        let map = node
            .cluster_map()
            .map_err(|e| e.to_string())?
            .ok_or("this node has no cluster map yet")?;
        let mut g = self.grid.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((epoch, grid)) = g.as_ref() {
            if *epoch == map.epoch {
                return Ok(grid.clone());
            }
        }
        let epoch = map.epoch;
        let grid = Arc::new(crate::repair::grid_of(node, map));
        *g = Some((epoch, grid.clone()));
        Ok(grid)
    }
}

/// `name` on `path` (or `name` itself when absolute), if it is an
/// executable file: how a node finds an allowed program.
pub fn resolve_program(name: &str, path: &str) -> Option<PathBuf> {
    let is_exec = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if name.starts_with('/') {
        let p = PathBuf::from(name);
        return is_exec(&p).then_some(p);
    }
    if name.contains('/') || name.is_empty() {
        return None;
    }
    path.split(':')
        .filter(|d| d.starts_with('/'))
        .map(|d| Path::new(d).join(name))
        .find(|p| is_exec(p))
}

fn prepare_work_dir(node_id: &str, cfg: &JobsConfig) -> Result<PathBuf, String> {
    let dir = match &cfg.work_dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join("gridstore-jobs").join(node_id),
    };
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    // Traversable but not listable by the task user; each task's own
    // directory is its alone.
    for d in [dir.parent(), Some(dir.as_path())].into_iter().flatten() {
        if cfg.work_dir.is_none() || d == dir {
            let _ = std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o711));
        }
    }
    // Directories left by tasks of a previous run (a crash mid-task).
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for e in entries.flatten() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
    Ok(dir)
}

/// Why a task could not run or finish.
#[derive(Debug, thiserror::Error)]
enum RunError {
    #[error("program {0:?} is not allowed on this node")]
    NotAllowed(String),
    #[error("cannot prepare the task: {0}")]
    Setup(String),
    #[error("cannot start the program: {0}")]
    Start(std::io::Error),
    #[error(transparent)]
    Input(#[from] input::InputError),
    #[error("output over the {0}-byte limit")]
    OutputLimit(u64),
    #[error("cancelled by the gateway")]
    Cancelled,
}

impl RunError {
    /// The node's fault, not the program's: another node may manage.
    fn node_fault(&self) -> bool {
        matches!(
            self,
            RunError::Setup(_) | RunError::Start(_) | RunError::Input(_) | RunError::NotAllowed(_)
        )
    }
}

/// Handle `POST /v1/jobs/task:run` (authenticated by the caller): check
/// the request and answer with the task's frame stream.
pub async fn task_response(
    node: &Arc<Node>,
    host: &Arc<JobHost>,
    body: Incoming,
) -> Result<Response<ResponseBody>, (StatusCode, String)> {
    let (req, streamed) = read_request(node, body).await?;
    if host.runs_nothing() {
        return Err((
            StatusCode::FORBIDDEN,
            "this node runs no jobs ([jobs] allowed is empty)".into(),
        ));
    }
    let (tx, rx) = mpsc::channel::<Result<Bytes, grid::node_client::BodyError>>(8);
    tokio::spawn(run(node.clone(), host.clone(), req, streamed, tx));
    Ok(Response::new(ChannelBody::new(rx).boxed()))
}

type Tx = mpsc::Sender<Result<Bytes, grid::node_client::BodyError>>;

/// What the feeder writes next: an inline input's bytes, or a chunk
/// being read.
enum Piece {
    Inline(Vec<u8>),
    Read(tokio::task::JoinHandle<Result<(Vec<u8>, input::ReadBytes), input::InputError>>),
}

/// The inputs that follow a streamed request, read as the program needs
/// them.
pub struct InputStream {
    frames: task::FrameReader,
    body: Incoming,
}

impl InputStream {
    /// The next input; `None` at the body's end.
    async fn next(&mut self) -> Result<Option<task::TaskInput>, input::InputError> {
        let bad = |e: String| input::InputError::Stream(e);
        loop {
            if let Some((kind, payload)) =
                self.frames.next_frame().map_err(|e| bad(e.to_string()))?
            {
                if kind != task::FRAME_INPUT {
                    return Err(bad(format!("unexpected frame type {kind}")));
                }
                return task::TaskInput::decode_record(&payload)
                    .map(Some)
                    .map_err(|e| bad(e.to_string()));
            }
            match self.body.frame().await {
                None if self.frames.pending() == 0 => return Ok(None),
                None => return Err(bad("the request ended inside a frame".into())),
                Some(Err(e)) => return Err(bad(e.to_string())),
                Some(Ok(f)) => {
                    if let Ok(d) = f.into_data() {
                        self.frames.push(&d);
                    }
                }
            }
        }
    }
}

/// The task request at the start of `body`: a plain record (the whole
/// body), or a `FRAME_REQUEST` and then the inputs' stream.
async fn read_request(
    node: &Node,
    mut body: Incoming,
) -> Result<(TaskRequest, Option<InputStream>), (StatusCode, String)> {
    let bad = |m: String| (StatusCode::BAD_REQUEST, m);
    let limit = grid::node_api::MAX_MESSAGE_BYTES as usize;
    let mut head = bytes::BytesMut::new();
    let mut frames: Option<task::FrameReader> = None;
    loop {
        if let Some(f) = frames.as_mut() {
            if let Some((kind, payload)) = f.next_frame().map_err(|e| bad(e.to_string()))? {
                if kind != task::FRAME_REQUEST {
                    return Err(bad(format!(
                        "a streamed task starts with frame type {kind}"
                    )));
                }
                node.metrics.bytes_received.inc_by(payload.len() as u64);
                let req = TaskRequest::decode_record(&payload).map_err(|e| bad(e.to_string()))?;
                let mut rest = frames.take().unwrap_or_default();
                rest.set_limit(task::MAX_FRAME);
                return Ok((req, Some(InputStream { frames: rest, body })));
            }
        }
        match body.frame().await {
            Some(Ok(f)) => {
                let Ok(d) = f.into_data() else { continue };
                if d.is_empty() {
                    continue;
                }
                match frames.as_mut() {
                    Some(f) => f.push(&d),
                    None if head.is_empty() && d.first() == Some(&task::FRAME_REQUEST) => {
                        let mut f = task::FrameReader::with_limit(limit);
                        f.push(&d);
                        frames = Some(f);
                    }
                    None => {
                        head.extend_from_slice(&d);
                        if head.len() > limit {
                            return Err((
                                StatusCode::PAYLOAD_TOO_LARGE,
                                "request body too large".into(),
                            ));
                        }
                    }
                }
            }
            Some(Err(e)) => return Err(bad(format!("reading body: {e}"))),
            None if frames.is_some() => {
                return Err(bad("the request ended inside its first frame".into()))
            }
            None => {
                node.metrics.bytes_received.inc_by(head.len() as u64);
                let req = TaskRequest::decode_record(&head).map_err(|e| bad(e.to_string()))?;
                return Ok((req, None));
            }
        }
    }
}

async fn send(tx: &Tx, kind: u8, payload: &[u8]) -> Result<(), RunError> {
    tx.send(Ok(task::frame(kind, payload)))
        .await
        .map_err(|_| RunError::Cancelled)
}

async fn run(
    node: Arc<Node>,
    host: Arc<JobHost>,
    req: TaskRequest,
    streamed: Option<InputStream>,
    tx: Tx,
) {
    let started = Instant::now();
    let mut report = TaskReport {
        node_id: node.id.clone(),
        ..TaskReport::default()
    };
    let slot = loop {
        tokio::select! {
            s = host.slots.clone().acquire_owned() => break s,
            () = tokio::time::sleep(ALIVE_EVERY) => {
                if send(&tx, task::FRAME_ALIVE, &[]).await.is_err() {
                    return;
                }
            }
        }
    };
    let Ok(_slot) = slot else { return };
    let result = execute(&node, &host, &req, streamed, &tx, &mut report).await;
    if let Err(e) = result {
        if matches!(e, RunError::Cancelled) {
            tracing::info!(node = %node.id, task = %req.task_id, "task cancelled");
            return;
        }
        report.node_fault = e.node_fault();
        report.error = e.to_string();
    }
    report.wall_ms = started.elapsed().as_millis() as u64;
    tracing::debug!(node = %node.id, task = %req.task_id, outcome = %report.outcome(),
        local = report.bytes_local, site = report.bytes_site, remote = report.bytes_remote, "task ended");
    let _ = send(&tx, task::FRAME_DONE, &report.encode_record()).await;
}

/// Removes the task's directory however the task ends.
struct TaskDir(PathBuf);

impl Drop for TaskDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Kills the task's process group however the task ends.
struct Group(u32);

impl Drop for Group {
    fn drop(&mut self) {
        sandbox::kill_group(self.0);
    }
}

async fn execute(
    node: &Arc<Node>,
    host: &JobHost,
    req: &TaskRequest,
    streamed: Option<InputStream>,
    tx: &Tx,
    report: &mut TaskReport,
) -> Result<(), RunError> {
    let cfg = &host.cfg;
    // A program shipped with the job runs from the task's directory; any
    // other must be one the operator allows.
    let shipped = req.argv[0]
        .strip_prefix("./")
        .filter(|name| cfg.allow_shipped_binaries && req.files.iter().any(|f| f.name == *name));
    let allowed = match shipped {
        Some(_) => None,
        None => Some(
            host.allowed
                .get(&req.argv[0])
                .ok_or_else(|| RunError::NotAllowed(req.argv[0].clone()))?,
        ),
    };
    let grid = host.grid(node).map_err(RunError::Setup)?;
    let work = host.work_dir.clone().map_err(RunError::Setup)?;
    let dir = work.join(format!("{:016x}", rand_u64()));
    let dir = TaskDir(dir);
    let setup = |e: std::io::Error| RunError::Setup(format!("{}: {e}", dir.0.display()));
    std::fs::create_dir(&dir.0).map_err(setup)?;
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o700)).map_err(setup)?;
    let owner = host.sandbox.run_as;
    for f in &req.files {
        let path = dir.0.join(&f.name);
        std::fs::write(&path, &f.data).map_err(setup)?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&path, Some(uid), Some(gid)).map_err(setup)?;
        }
    }
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(&dir.0, Some(uid), Some(gid)).map_err(setup)?;
    }
    let program = match (allowed, shipped) {
        (Some(p), _) => p.clone(),
        (None, Some(name)) => {
            let p = dir.0.join(name);
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o700)).map_err(setup)?;
            p
        }
        (None, None) => return Err(RunError::NotAllowed(req.argv[0].clone())),
    };

    let cap = |asked: u64, max: u64| if asked == 0 { max } else { asked.min(max) };
    let timeout = Duration::from_millis(cap(
        req.timeout_ms,
        cfg.max_timeout_secs.saturating_mul(1000),
    ));
    let limits = sandbox::Limits {
        cpu_secs: cap(req.cpu_secs, cfg.max_cpu_secs).max(1),
        memory_bytes: cap(req.memory_bytes, cfg.max_memory_mb.saturating_mul(1 << 20)),
        file_bytes: cfg.max_output_bytes,
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.arg0(&req.argv[0])
        .args(&req.argv[1..])
        .env_clear()
        .env("PATH", &cfg.path)
        .env("HOME", &dir.0)
        .env("TMPDIR", &dir.0)
        .env("LANG", "C.UTF-8")
        .env("GRIDSTORE_TASK_ID", &req.task_id)
        .current_dir(&dir.0)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let [only] = req.inputs.as_slice() {
        cmd.env("GRIDSTORE_INPUT_KEY", &only.key);
    }
    for e in &req.env {
        cmd.env(&e.name, &e.value);
    }
    host.sandbox.apply(&mut cmd, limits);
    let mut child = cmd.spawn().map_err(RunError::Start)?;
    let _group = child.id().map(Group);
    let (Some(mut stdin), Some(mut stdout), Some(mut stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(RunError::Setup("child pipes missing".into()));
    };

    // stdin: the inputs, chunk by chunk, the next chunk read while the
    // current one is written. The inputs come from the request, then from
    // its stream while the program runs; a producer starts each chunk's
    // read and hands it over a one-slot channel, so one read runs ahead.
    let feeder = {
        let node = node.clone();
        let inputs = req.inputs.clone();
        tokio::spawn(async move {
            let (piece_tx, mut piece_rx) = mpsc::channel::<Piece>(1);
            let producer = tokio::spawn(async move {
                let mut streamed = streamed;
                let mut listed = inputs.into_iter();
                loop {
                    let input = match listed.next() {
                        Some(i) => i,
                        None => match streamed.as_mut() {
                            Some(s) => match s.next().await {
                                Ok(Some(i)) => i,
                                Ok(None) => return Ok(()),
                                Err(e) => return Err(e),
                            },
                            None => return Ok(()),
                        },
                    };
                    if !input.inline_data.is_empty()
                        && piece_tx
                            .send(Piece::Inline(input.inline_data))
                            .await
                            .is_err()
                    {
                        return Ok(());
                    }
                    for c in input.chunks {
                        let node = node.clone();
                        let grid = grid.clone();
                        let read = tokio::spawn(async move {
                            let chunk = c.chunk.unwrap_or_default();
                            let key = <[u8; 32]>::try_from(c.key.as_slice()).unwrap_or([0; 32]);
                            input::read_chunk(&node, &grid, &chunk, key).await
                        });
                        if piece_tx.send(Piece::Read(read)).await.is_err() {
                            return Ok(());
                        }
                    }
                }
            });
            let mut counts = input::ReadBytes::default();
            let mut inline = 0u64;
            while let Some(piece) = piece_rx.recv().await {
                let data = match piece {
                    Piece::Inline(data) => {
                        inline += data.len() as u64;
                        data
                    }
                    Piece::Read(handle) => {
                        let (plain, got) =
                            handle.await.map_err(|e| input::InputError::Unreadable {
                                chunk: String::new(),
                                reason: e.to_string(),
                            })??;
                        counts.add(got);
                        plain
                    }
                };
                if stdin.write_all(&data).await.is_err() {
                    // The program closed its stdin: it wants no more.
                    producer.abort();
                    return Ok((counts, inline));
                }
            }
            drop(stdin);
            // All fed, unless the stream of inputs broke (the gateway went
            // away): then the program saw only part of its input.
            match producer.await {
                Ok(Ok(())) => Ok((counts, inline)),
                Ok(Err(e)) => Err(e),
                Err(e) => Err(input::InputError::Stream(e.to_string())),
            }
        })
    };
    let mut feeder = Some(feeder);

    let err_reader = tokio::spawn(async move {
        let mut kept = Vec::new();
        let mut truncated = false;
        let mut buf = vec![0u8; 16 << 10];
        loop {
            match stderr.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let room = STDERR_KEEP.saturating_sub(kept.len());
                    kept.extend_from_slice(&buf[..n.min(room)]);
                    truncated |= n > room;
                }
            }
        }
        (kept, truncated)
    });

    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let mut alive = tokio::time::interval(ALIVE_EVERY);
    alive.tick().await;
    let mut buf = vec![0u8; 64 << 10];
    let mut out_open = true;
    let mut status = None;
    let mut failure: Option<RunError> = None;
    let pid = child.id();
    while out_open || status.is_none() {
        tokio::select! {
            n = stdout.read(&mut buf), if out_open => match n {
                Ok(0) | Err(_) => out_open = false,
                Ok(n) => {
                    report.stdout_bytes += n as u64;
                    if report.stdout_bytes > cfg.max_output_bytes {
                        failure = Some(RunError::OutputLimit(cfg.max_output_bytes));
                        kill(pid);
                        out_open = false;
                    } else {
                        send(tx, task::FRAME_STDOUT, &buf[..n]).await?;
                    }
                }
            },
            s = child.wait(), if status.is_none() => {
                status = Some(s);
                // Whatever it left running in the background goes too, so
                // its pipes close.
                kill(pid);
            },
            r = async {
                match feeder.as_mut() {
                    Some(f) => f.await,
                    None => std::future::pending().await,
                }
            }, if feeder.is_some() => {
                feeder = None;
                match r {
                    Ok(Ok((counts, inline))) => {
                        report.bytes_local = counts.local;
                        report.bytes_site = counts.site;
                        report.bytes_remote = counts.remote;
                        report.bytes_inline = inline;
                    }
                    Ok(Err(e)) => {
                        failure = Some(e.into());
                        kill(pid);
                    }
                    Err(e) => {
                        failure = Some(RunError::Setup(format!("input feeder: {e}")));
                        kill(pid);
                    }
                }
            },
            () = &mut deadline, if status.is_none() && !report.timed_out => {
                report.timed_out = true;
                kill(pid);
            },
            _ = alive.tick() => send(tx, task::FRAME_ALIVE, &[]).await?,
            () = tx.closed() => return Err(RunError::Cancelled),
        }
    }
    if let Some(f) = feeder.take() {
        // The program ended before reading all its input.
        f.abort();
    }
    let (kept, truncated) = err_reader.await.unwrap_or_default();
    report.stderr = kept;
    report.stderr_truncated = truncated;
    match status {
        Some(Ok(s)) => {
            report.exit_code = s.code();
            report.signal = s.signal();
        }
        Some(Err(e)) => return Err(RunError::Setup(format!("waiting for the program: {e}"))),
        None => {}
    }
    match failure {
        Some(f) => Err(f),
        None => Ok(()),
    }
}

fn kill(pid: Option<u32>) {
    if let Some(pid) = pid {
        sandbox::kill_group(pid);
    }
}

/// A name for a task directory: unguessable by other tasks (they cannot
/// list the work directory anyway) and unique in this process.
fn rand_u64() -> u64 {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mut material = Vec::with_capacity(28);
    material.extend_from_slice(&t.to_le_bytes());
    material.extend_from_slice(&n.to_le_bytes());
    material.extend_from_slice(&std::process::id().to_le_bytes());
    let h = blake3::hash(&material);
    let mut b = [0u8; 8];
    b.copy_from_slice(&h.as_bytes()[..8]);
    u64::from_le_bytes(b) ^ n
}
