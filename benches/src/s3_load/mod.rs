//! `gridstore bench s3`: an S3 load generator for any endpoint, in the
//! manner of MinIO's warp.
//!
//! Workers (one request in flight each) run one kind of operation, or the
//! warp mix, for a fixed time against a bucket, and every request is timed
//! from sending to the last byte of its answer. Objects live under a
//! prefix unique to the run, so runs never see each other's objects and
//! the clean-up can list exactly what the run wrote.

mod body;
mod client;
mod stats;
mod units;

pub use stats::{Kind, Stats};
pub use units::{format_size, parse_duration, parse_size};

use body::{ObjectBody, MAX_BLOCK};
use bytes::Bytes;
use client::{OpError, S3};
use futures_util::StreamExt;
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use serde::Serialize;
use stats::{Outcome, Recorder};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The largest object a single PUT may carry in S3.
const MAX_OBJECT: u64 = 5 << 30;
/// Deletes in flight when a server without batch delete is cleaned up.
const CLEANUP_PARALLEL: usize = 16;

/// What the workers do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    /// Upload new objects.
    Put,
    /// Download prepared objects.
    Get,
    /// warp's mix: 45 % get, 30 % put, 15 % stat (HEAD), 10 % delete.
    Mixed,
    /// List the prepared objects, one page (up to 1000 keys) per request.
    List,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Put => "put",
            Op::Get => "get",
            Op::Mixed => "mixed",
            Op::List => "list",
        }
    }

    fn needs_objects(self) -> bool {
        self != Op::Put
    }
}

/// `gridstore bench s3` options. No `Debug`: it holds a secret.
#[derive(Clone, clap::Args)]
pub struct S3Args {
    /// The S3 endpoint; requests are path-style (URL/bucket/key).
    #[arg(long, value_name = "URL")]
    pub endpoint: String,
    /// Access key id [default: $GRIDSTORE_ACCESS_KEY, else
    /// $AWS_ACCESS_KEY_ID].
    #[arg(long, value_name = "KEY")]
    pub access_key: Option<String>,
    /// Secret key [default: $GRIDSTORE_SECRET_KEY, else
    /// $AWS_SECRET_ACCESS_KEY]. Prefer the environment: arguments are
    /// visible to every user of the machine.
    #[arg(long, value_name = "SECRET")]
    pub secret_key: Option<String>,
    /// Region the requests are signed for.
    #[arg(long, default_value = "us-east-1")]
    pub region: String,
    /// Bucket to work in, created if missing (and then kept).
    #[arg(long, default_value = "gridstore-bench")]
    pub bucket: String,
    /// What to measure.
    #[arg(long, value_enum, default_value_t = Op::Mixed)]
    pub op: Op,
    /// Object size: 4096, 4KiB, 1MiB, 64MiB, 10MB, ...
    #[arg(long, default_value = "1MiB", value_parser = parse_size)]
    pub size: u64,
    /// Upload each object as a multipart upload in parts of this size
    /// (rounded up to 64 KiB), parts sent one after another; 0: one PUT.
    #[arg(long, default_value = "0", value_parser = parse_size)]
    pub part_size: u64,
    /// Workers, each with one request in flight.
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = parse_concurrency)]
    pub concurrency: usize,
    /// How long to measure: 10s, 500ms, 2m, 1m30s, ...
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Objects uploaded before measuring get, mixed and list.
    #[arg(long, value_name = "N", default_value_t = 200)]
    pub objects: usize,
    /// Spread those objects over N folders (`obj/0007/...`); `--op list`
    /// then lists one folder per request, with the delimiter `/`, going
    /// round the folders.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub folders: usize,
    /// Give up on a request after this long (counted as an error).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Leave the objects the run wrote in the bucket.
    #[arg(long)]
    pub keep: bool,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

fn parse_concurrency(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(n @ 1..=10_000) => Ok(n),
        _ => Err(format!("{text:?}: expected a number from 1 to 10000")),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum S3BenchError {
    #[error("{0}")]
    Options(String),
    #[error("no {what}: pass --{flag} or set {} or {}", .vars[0], .vars[1])]
    MissingCredential {
        what: &'static str,
        flag: &'static str,
        vars: [&'static str; 2],
    },
    #[error("endpoint {endpoint:?}: {reason}")]
    Endpoint { endpoint: String, reason: String },
    #[error("cannot start: {0}")]
    Setup(String),
    #[error("bucket {bucket:?}: {reason}")]
    Bucket { bucket: String, reason: String },
    #[error("none of the {wanted} objects to read could be uploaded; first error: {first}")]
    Prepare { wanted: usize, first: String },
    #[error("every operation failed ({errors} errors); first error: {first}")]
    AllFailed { errors: u64, first: String },
    #[error("no operation completed in {0:?}")]
    NoOps(Duration),
}

/// One kind of operation's figures.
#[derive(Debug, Clone, Serialize)]
pub struct OpStats {
    pub op: Kind,
    #[serde(flatten)]
    pub stats: Stats,
}

/// A run's figures; `--json` prints it as is.
#[derive(Debug, Clone, Serialize)]
pub struct S3Report {
    pub endpoint: String,
    pub bucket: String,
    pub op: Op,
    /// Object size in bytes.
    pub size: u64,
    pub concurrency: usize,
    /// The requested measuring time.
    pub duration_s: f64,
    /// From the first request to the end of the last (requests in flight
    /// at the deadline finish); rates are per this time.
    pub elapsed_s: f64,
    /// Objects uploaded before measuring.
    pub objects: usize,
    /// All operations together.
    #[serde(flatten)]
    pub total: Stats,
    /// List runs: keys returned by all listings, and per second.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keys_listed: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keys_per_s: Option<f64>,
    /// Per kind of operation (one entry unless mixed).
    pub by_op: Vec<OpStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
    /// With `--keep`: where the run's objects are.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kept: Option<String>,
    /// What went wrong around the measurement (preparing, cleaning up).
    pub warnings: Vec<String>,
}

/// Runs the benchmark described by `args` on its own runtime.
pub fn run(args: &S3Args) -> Result<S3Report, S3BenchError> {
    validate(args)?;
    let access = credential(
        &args.access_key,
        "access key",
        "access-key",
        ["GRIDSTORE_ACCESS_KEY", "AWS_ACCESS_KEY_ID"],
    )?;
    let secret = credential(
        &args.secret_key,
        "secret key",
        "secret-key",
        ["GRIDSTORE_SECRET_KEY", "AWS_SECRET_ACCESS_KEY"],
    )?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| S3BenchError::Setup(format!("runtime: {e}")))?;
    runtime.block_on(run_async(args, rusty_s3::Credentials::new(access, secret)))
}

fn validate(args: &S3Args) -> Result<(), S3BenchError> {
    let fail = |m: String| Err(S3BenchError::Options(m));
    if args.size > MAX_OBJECT {
        return fail(format!(
            "--size {} is above the 5 GiB a single PUT may carry",
            format_size(args.size)
        ));
    }
    if args.duration.is_zero() {
        return fail("--duration must be above zero".into());
    }
    if Instant::now().checked_add(args.duration).is_none() {
        return fail(format!("--duration {:?} is too long", args.duration));
    }
    if args.timeout.is_zero() {
        return fail("--timeout must be above zero".into());
    }
    if args.op.needs_objects() && args.objects == 0 {
        return fail(format!(
            "--op {} needs --objects of 1 or more",
            args.op.name()
        ));
    }
    // A slash would silently turn the rest of the name into a key prefix.
    if args.bucket.is_empty() || args.bucket.contains('/') {
        return fail(format!("--bucket {:?} is not a bucket name", args.bucket));
    }
    if args.region.is_empty() {
        return fail("--region must not be empty".into());
    }
    Ok(())
}

/// The flag, else the first of `vars` that is set.
fn credential(
    given: &Option<String>,
    what: &'static str,
    flag: &'static str,
    vars: [&'static str; 2],
) -> Result<String, S3BenchError> {
    if let Some(value) = given {
        return Ok(value.clone());
    }
    vars.iter()
        .find_map(|var| std::env::var(var).ok().filter(|v| !v.is_empty()))
        .ok_or(S3BenchError::MissingCredential { what, flag, vars })
}

/// Everything the workers share.
struct Ctx {
    s3: S3,
    op: Op,
    size: u64,
    /// Unique to the run: in every key and in every object's contents.
    run_id: u64,
    prefix: String,
    pool: Pool,
    recorder: Recorder,
    timeout: Duration,
    folders: usize,
    /// Multipart part size for uploads; 0: single PUTs.
    part_size: u64,
}

impl Ctx {
    fn prepared_prefix(&self) -> String {
        format!("{}obj/", self.prefix)
    }

    /// Where prepared object `i` goes.
    fn prepared_key(&self, i: usize) -> String {
        match self.folders {
            0 => format!("{}{i:08}", self.prepared_prefix()),
            n => format!("{}{:04}/{i:08}", self.prepared_prefix(), i % n),
        }
    }

    /// What a listing request reads: the prefix and delimiter of folder
    /// `round` (or all prepared objects).
    fn listed(&self, round: u64) -> (String, Option<&'static str>) {
        match self.folders {
            0 => (self.prepared_prefix(), None),
            n => (
                format!("{}{:04}/", self.prepared_prefix(), round % n as u64),
                Some("/"),
            ),
        }
    }

    async fn timed<T>(&self, f: impl Future<Output = Result<T, OpError>>) -> Result<T, OpError> {
        tokio::time::timeout(self.timeout, f)
            .await
            .unwrap_or_else(|_| Err(OpError(format!("no answer in {:?}", self.timeout))))
    }
}

async fn run_async(
    args: &S3Args,
    credentials: rusty_s3::Credentials,
) -> Result<S3Report, S3BenchError> {
    let s3 = S3::new(
        &args.endpoint,
        &args.region,
        &args.bucket,
        credentials,
        args.concurrency,
        args.timeout,
    )?;
    let run_id: u64 = rand::random();
    let ctx = Arc::new(Ctx {
        s3,
        op: args.op,
        size: args.size,
        run_id,
        prefix: format!("gridstore-bench-{run_id:016x}/"),
        pool: Pool::default(),
        recorder: Recorder::new().map_err(|e| S3BenchError::Setup(format!("histogram: {e}")))?,
        timeout: args.timeout,
        folders: args.folders,
        part_size: args.part_size,
    });
    ctx.timed(ctx.s3.ensure_bucket())
        .await
        .map_err(|e| S3BenchError::Bucket {
            bucket: args.bucket.clone(),
            reason: e.0,
        })?;

    let mut warnings = Vec::new();
    let mut objects = 0;
    if args.op.needs_objects() {
        let (uploaded, failed) = prepare(&ctx, args.objects, args.concurrency).await;
        objects = uploaded;
        if let Some((count, first)) = failed {
            if uploaded == 0 {
                return Err(S3BenchError::Prepare {
                    wanted: args.objects,
                    first,
                });
            }
            warnings.push(format!(
                "{count} of {} objects could not be uploaded before measuring; first error: {first}",
                args.objects
            ));
        }
    }

    let start = Instant::now();
    let deadline = start.checked_add(args.duration).ok_or_else(|| {
        S3BenchError::Options(format!("--duration {:?} is too long", args.duration))
    })?;
    let workers: Vec<_> = (0..args.concurrency as u64)
        .map(|id| tokio::spawn(worker(Arc::clone(&ctx), id, deadline)))
        .collect();
    for worker in workers {
        if let Err(e) = worker.await {
            warnings.push(format!("a worker stopped: {e}"));
        }
    }
    let elapsed = start.elapsed();

    let kept = args
        .keep
        .then(|| format!("s3://{}/{}", args.bucket, ctx.prefix));
    if !args.keep {
        if let Err(e) = cleanup(&ctx).await {
            warnings.push(format!(
                "clean-up of s3://{}/{}: {e}",
                args.bucket, ctx.prefix
            ));
        }
    }

    let total = ctx.recorder.total(elapsed);
    if total.ops == 0 {
        return Err(match ctx.recorder.first_error() {
            Some(first) => S3BenchError::AllFailed {
                errors: total.errors,
                first,
            },
            None => S3BenchError::NoOps(elapsed),
        });
    }
    let keys_listed = (args.op == Op::List).then(|| ctx.recorder.keys_listed());
    Ok(S3Report {
        endpoint: args.endpoint.clone(),
        bucket: args.bucket.clone(),
        op: args.op,
        size: args.size,
        concurrency: args.concurrency,
        duration_s: args.duration.as_secs_f64(),
        elapsed_s: elapsed.as_secs_f64(),
        objects,
        total,
        keys_listed,
        keys_per_s: keys_listed.map(|k| k as f64 / elapsed.as_secs_f64().max(f64::MIN_POSITIVE)),
        by_op: ctx
            .recorder
            .by_kind(elapsed)
            .into_iter()
            .map(|(op, stats)| OpStats { op, stats })
            .collect(),
        first_error: ctx.recorder.first_error(),
        kept,
        warnings,
    })
}

/// One random block per worker; objects are slices of it behind unique
/// tags (see `body`).
fn random_block(rng: &mut StdRng, size: u64) -> Bytes {
    // Bounded by MAX_BLOCK, so it fits in memory and in usize.
    let mut block = vec![0u8; size.min(MAX_BLOCK) as usize];
    rng.fill_bytes(&mut block);
    Bytes::from(block)
}

fn worker_rng(run_id: u64, worker: u64) -> StdRng {
    StdRng::seed_from_u64(run_id ^ worker.wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

/// Uploads the objects get, mixed and list read; how many made it, and
/// how many did not with the first error.
async fn prepare(
    ctx: &Arc<Ctx>,
    wanted: usize,
    concurrency: usize,
) -> (usize, Option<(usize, String)>) {
    let next = Arc::new(AtomicUsize::new(0));
    let uploaders: Vec<_> = (0..concurrency.min(wanted) as u64)
        .map(|id| {
            let ctx = Arc::clone(ctx);
            let next = Arc::clone(&next);
            tokio::spawn(async move {
                // Distinct from the workers' seeds (those count from 0).
                let mut rng = worker_rng(ctx.run_id, u64::MAX - id);
                let block = random_block(&mut rng, ctx.size);
                let mut first_error = None;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= wanted {
                        break;
                    }
                    let key: Arc<str> = ctx.prepared_key(i).into();
                    let body = ObjectBody::new(block.clone(), ctx.run_id, i as u64, ctx.size);
                    match ctx.timed(ctx.s3.put(&key, body)).await {
                        Ok(_) => ctx.pool.insert(key),
                        Err(e) => {
                            first_error.get_or_insert(e.0);
                        }
                    }
                }
                first_error
            })
        })
        .collect();
    let mut first_error = None;
    for uploader in uploaders {
        let error = match uploader.await {
            Ok(error) => error,
            Err(e) => Some(format!("an uploader stopped: {e}")),
        };
        if first_error.is_none() {
            first_error = error;
        }
    }
    let uploaded = ctx.pool.len();
    let failed = first_error.map(|first| (wanted - uploaded, first));
    (uploaded, failed)
}

/// An operation about to run, with what it works on.
enum Task<'a> {
    Put(String),
    Get(Lease<'a>),
    Stat(Lease<'a>),
    Delete(Arc<str>),
    List,
}

impl Task<'_> {
    fn kind(&self) -> Kind {
        match self {
            Task::Put(_) => Kind::Put,
            Task::Get(_) => Kind::Get,
            Task::Stat(_) => Kind::Stat,
            Task::Delete(_) => Kind::Delete,
            Task::List => Kind::List,
        }
    }
}

struct Worker {
    id: u64,
    rng: StdRng,
    block: Bytes,
    puts: u64,
    /// Where this worker's walk through the listing is.
    continuation: Option<String>,
    /// Listings this worker finished (which folder is next).
    listed: u64,
}

impl Worker {
    fn new_key(&mut self, ctx: &Ctx) -> String {
        self.puts += 1;
        format!("{}w{:04}/{:010}", ctx.prefix, self.id, self.puts)
    }

    /// Picks the next operation. Gets, stats and deletes need an object:
    /// when none is free (a mixed run that deleted all of them), the
    /// worker uploads one instead, which also refills the pool.
    fn plan<'a>(&mut self, ctx: &'a Ctx) -> Task<'a> {
        let wanted = match ctx.op {
            Op::Put => Kind::Put,
            Op::Get => Kind::Get,
            Op::List => Kind::List,
            Op::Mixed => match self.rng.gen_range(0..100u32) {
                0..45 => Kind::Get,
                45..75 => Kind::Put,
                75..90 => Kind::Stat,
                _ => Kind::Delete,
            },
        };
        let task = match wanted {
            Kind::Get => ctx.pool.lease(&mut self.rng).map(Task::Get),
            Kind::Stat => ctx.pool.lease(&mut self.rng).map(Task::Stat),
            Kind::Delete => ctx.pool.take_idle(&mut self.rng).map(Task::Delete),
            Kind::List => Some(Task::List),
            Kind::Put => None,
        };
        task.unwrap_or_else(|| Task::Put(self.new_key(ctx)))
    }

    async fn execute(&mut self, ctx: &Ctx, task: Task<'_>) -> Outcome {
        let result = match task {
            Task::Put(key) => {
                // Unique per object across the run; prepared objects use
                // 0..objects, far below.
                let object = ((self.id + 1) << 40) | self.puts;
                let body = ObjectBody::new(self.block.clone(), ctx.run_id, object, ctx.size);
                let put = async {
                    match ctx.part_size {
                        0 => ctx.s3.put(&key, body).await,
                        part => ctx.s3.put_multipart(&key, body, part).await,
                    }
                };
                ctx.timed(put).await.map(|bytes| {
                    if ctx.op == Op::Mixed {
                        ctx.pool.insert(key.into());
                    }
                    (bytes, 0)
                })
            }
            Task::Get(lease) => ctx.timed(ctx.s3.get(&lease.key)).await.and_then(|got| {
                if got == ctx.size {
                    Ok((got, 0))
                } else {
                    Err(OpError(format!(
                        "GET {}: {got} bytes, expected {}",
                        lease.key, ctx.size
                    )))
                }
            }),
            Task::Stat(lease) => ctx.timed(ctx.s3.head(&lease.key)).await.map(|()| (0, 0)),
            Task::Delete(key) => ctx.timed(ctx.s3.delete(&key)).await.map(|()| (0, 0)),
            Task::List => {
                let (prefix, delimiter) = ctx.listed(self.listed + self.id);
                let fresh = self.continuation.is_none();
                let page = ctx
                    .timed(
                        ctx.s3
                            .list(&prefix, delimiter, self.continuation.as_deref()),
                    )
                    .await;
                match page {
                    Ok(page) if fresh && page.contents.is_empty() => {
                        self.continuation = None;
                        Err(OpError(format!(
                            "the listing of {prefix} is empty, though objects were uploaded there"
                        )))
                    }
                    Ok(page) => {
                        self.continuation = page.next_continuation_token;
                        if self.continuation.is_none() {
                            self.listed += 1;
                        }
                        Ok((0, page.contents.len() as u64))
                    }
                    Err(e) => {
                        self.continuation = None;
                        Err(e)
                    }
                }
            }
        };
        match result {
            Ok((bytes, keys)) => Outcome::Done { bytes, keys },
            Err(e) => Outcome::Failed(e.0),
        }
    }
}

async fn worker(ctx: Arc<Ctx>, id: u64, deadline: Instant) {
    let mut rng = worker_rng(ctx.run_id, id);
    let block = random_block(&mut rng, ctx.size);
    let mut worker = Worker {
        id,
        rng,
        block,
        puts: 0,
        continuation: None,
        listed: 0,
    };
    while Instant::now() < deadline {
        let task = worker.plan(&ctx);
        let kind = task.kind();
        let started = Instant::now();
        let outcome = worker.execute(&ctx, task).await;
        ctx.recorder.record(kind, started.elapsed(), outcome);
    }
}

/// Deletes everything under the run's prefix: listing rather than
/// remembering keys keeps memory flat however many objects a run writes.
async fn cleanup(ctx: &Ctx) -> Result<(), String> {
    let mut continuation: Option<String> = None;
    let mut failed = 0usize;
    loop {
        let page = ctx
            .timed(ctx.s3.list(&ctx.prefix, None, continuation.as_deref()))
            .await
            .map_err(|e| e.0)?;
        let keys: Vec<String> = page.contents.into_iter().map(|c| c.key).collect();
        if !keys.is_empty() {
            failed += match ctx.timed(ctx.s3.delete_batch(keys.clone())).await {
                Ok(failures) => failures,
                // Not every S3 server has batch delete.
                Err(_) => {
                    futures_util::stream::iter(keys)
                        .map(|key| async move { ctx.timed(ctx.s3.delete(&key)).await })
                        .buffer_unordered(CLEANUP_PARALLEL)
                        .filter(|r| std::future::ready(r.is_err()))
                        .count()
                        .await
                }
            };
        }
        match page.next_continuation_token {
            Some(token) => continuation = Some(token),
            None => break,
        }
    }
    if failed > 0 {
        return Err(format!("{failed} objects could not be deleted"));
    }
    Ok(())
}

/// The objects gets, stats and deletes pick from. A delete takes only an
/// object nobody is reading, so a mixed run's reads never race a delete
/// into a spurious NoSuchKey.
#[derive(Default)]
struct Pool {
    inner: Mutex<PoolInner>,
}

#[derive(Default)]
struct PoolInner {
    keys: Vec<Arc<str>>,
    /// Readers per key, for keys with any.
    busy: HashMap<Arc<str>, u32>,
}

/// A key being read; gives it back when dropped.
struct Lease<'a> {
    pool: &'a Pool,
    key: Arc<str>,
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        let mut inner = self.pool.lock();
        if let Some(readers) = inner.busy.get_mut(&self.key) {
            *readers -= 1;
            if *readers == 0 {
                inner.busy.remove(&self.key);
            }
        }
    }
}

impl Pool {
    fn lock(&self) -> MutexGuard<'_, PoolInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn len(&self) -> usize {
        self.lock().keys.len()
    }

    fn insert(&self, key: Arc<str>) {
        self.lock().keys.push(key);
    }

    fn lease(&self, rng: &mut impl Rng) -> Option<Lease<'_>> {
        let mut inner = self.lock();
        if inner.keys.is_empty() {
            return None;
        }
        let key = Arc::clone(&inner.keys[rng.gen_range(0..inner.keys.len())]);
        *inner.busy.entry(Arc::clone(&key)).or_insert(0) += 1;
        Some(Lease { pool: self, key })
    }

    /// Removes a random key nobody is reading, if a few tries find one.
    fn take_idle(&self, rng: &mut impl Rng) -> Option<Arc<str>> {
        let mut inner = self.lock();
        for _ in 0..16 {
            if inner.keys.is_empty() {
                return None;
            }
            let i = rng.gen_range(0..inner.keys.len());
            if !inner.busy.contains_key(&inner.keys[i]) {
                return Some(inner.keys.swap_remove(i));
            }
        }
        None
    }
}

/// The report as a table.
pub fn table(report: &S3Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "gridstore bench s3: {}, {} objects, {} workers, {:.1} s (measured {:.2} s)",
        report.op.name(),
        format_size(report.size),
        report.concurrency,
        report.duration_s,
        report.elapsed_s
    );
    let _ = write!(
        out,
        "endpoint {}, bucket {}",
        report.endpoint, report.bucket
    );
    if report.objects > 0 {
        let _ = write!(out, ", {} objects uploaded first", report.objects);
    }
    let _ = writeln!(out, "\n");
    let _ = writeln!(
        out,
        "{:<7} {:>9} {:>10} {:>9} {:>8} {:>8} {:>8} {:>7}",
        "op", "ops", "ops/s", "MiB/s", "p50 ms", "p99 ms", "max ms", "errors"
    );
    let row = |out: &mut String, name: &str, s: &Stats| {
        let _ = writeln!(
            out,
            "{:<7} {:>9} {:>10.1} {:>9.1} {:>8.2} {:>8.2} {:>8.2} {:>7}",
            name, s.ops, s.ops_per_s, s.mib_per_s, s.p50_ms, s.p99_ms, s.max_ms, s.errors
        );
    };
    for entry in &report.by_op {
        row(&mut out, entry.op.name(), &entry.stats);
    }
    if report.by_op.len() > 1 {
        row(&mut out, "total", &report.total);
    }
    if let (Some(keys), Some(rate)) = (report.keys_listed, report.keys_per_s) {
        let _ = writeln!(out, "\nkeys listed: {keys} ({rate:.0}/s)");
    }
    if let Some(error) = &report.first_error {
        let _ = writeln!(out, "\nfirst error: {error}");
    }
    if let Some(kept) = &report.kept {
        let _ = writeln!(out, "objects kept under {kept}");
    }
    for warning in &report.warnings {
        let _ = writeln!(out, "warning: {warning}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn deletes_skip_keys_being_read() {
        let pool = Pool::default();
        pool.insert("a".into());
        pool.insert("b".into());
        let mut rng = StdRng::seed_from_u64(1);
        let lease = pool.lease(&mut rng).expect("two keys");
        let leased = Arc::clone(&lease.key);
        let taken = pool.take_idle(&mut rng).expect("one idle key");
        assert_ne!(taken, leased);
        assert!(
            pool.take_idle(&mut rng).is_none(),
            "the leased key was taken"
        );
        drop(lease);
        assert_eq!(pool.take_idle(&mut rng), Some(leased));
        assert!(pool.lease(&mut rng).is_none());
    }

    #[test]
    fn concurrency_bounds() {
        assert_eq!(parse_concurrency("8"), Ok(8));
        assert!(parse_concurrency("0").is_err());
        assert!(parse_concurrency("10001").is_err());
        assert!(parse_concurrency("many").is_err());
    }
}
