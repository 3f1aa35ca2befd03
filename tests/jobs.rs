//! The job runner on in-process grids: map and reduce results
//! against a count computed here, locality against a random node choice
//! in the same run, failing and timed-out tasks, a node killed mid-job,
//! and what the sandbox keeps a task from.

mod support;

use cluster::jobs::{
    JobManager, JobPhase, JobSpec, JobStatus, Placement, ProgramFile, ProgramSpec, TaskLimits,
};
use cluster::{ErasureSpec, GetOptions, ObjectStore, PutOptions, StoreConfig};
use std::collections::BTreeMap;
use std::time::Duration;
use storage_node::config::JobsConfig;
use support::grid::TestGrid;
use support::objects::{read_all, store_on, stream_of, OWNER};

const WORDS: [&str; 12] = [
    "grid", "shard", "farm", "site", "chunk", "parity", "node", "repair", "scrub", "object",
    "bucket", "job",
];

const MAP: &str = r#"
import sys, collections
c = collections.Counter(sys.stdin.read().split())
for w in sorted(c):
    print(f"{w}\t{c[w]}")
"#;

const REDUCE: &str = r#"
import sys, collections
c = collections.Counter()
for line in sys.stdin:
    w, n = line.rstrip("\n").split("\t")
    c[w] += int(n)
for w in sorted(c):
    print(f"{w}\t{c[w]}")
"#;

fn jobs_config() -> JobsConfig {
    JobsConfig {
        allowed: vec!["python3".into()],
        concurrency: 4,
        ..JobsConfig::default()
    }
}

/// Text of about `len` bytes from a simple generator; its word counts.
fn text(seed: u64, len: usize, counts: &mut BTreeMap<String, u64>) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut out = Vec::with_capacity(len + 16);
    let mut col = 0;
    while out.len() < len {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let w = WORDS[(x >> 33) as usize % WORDS.len()];
        *counts.entry(w.to_string()).or_default() += 1;
        out.extend_from_slice(w.as_bytes());
        col += w.len() + 1;
        if col > 70 {
            out.push(b'\n');
            col = 0;
        } else {
            out.push(b' ');
        }
    }
    out
}

async fn put(store: &ObjectStore, bucket: &str, key: &str, data: Vec<u8>) {
    store
        .put_object(
            bucket,
            key,
            stream_of(data, 64 << 10),
            PutOptions::default(),
        )
        .await
        .unwrap();
}

async fn get(store: &ObjectStore, bucket: &str, key: &str) -> Vec<u8> {
    let r = store
        .get_object(bucket, key, GetOptions::default())
        .await
        .unwrap_or_else(|e| panic!("{bucket}/{key}: {e}"));
    read_all(r.body).await
}

/// Every map output under `output/PREFIX/` is its input object's count.
async fn check_map_outputs(store: &ObjectStore, prefix: &str, each: &[BTreeMap<String, u64>]) {
    for (i, want) in each.iter().enumerate() {
        let got = get(store, "output", &format!("{prefix}/data/{i:04}.txt")).await;
        assert_eq!(&counts_of(&got), want, "{prefix}: map output of object {i}");
    }
}

fn counts_of(text: &[u8]) -> BTreeMap<String, u64> {
    String::from_utf8_lossy(text)
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (w, n) = l.split_once('\t').expect("word<TAB>count");
            (w.to_string(), n.parse().expect("count"))
        })
        .collect()
}

/// `n` objects of `len` bytes under `data/` in a 4+2 bucket; the total
/// word counts and each object's.
async fn corpus(
    store: &ObjectStore,
    n: u64,
    len: usize,
) -> (BTreeMap<String, u64>, Vec<BTreeMap<String, u64>>) {
    store
        .create_bucket("input", OWNER, Some(ErasureSpec::new(4, 2)))
        .await
        .unwrap();
    store
        .create_bucket("output", OWNER, Some(ErasureSpec::new(4, 2)))
        .await
        .unwrap();
    let mut total = BTreeMap::new();
    let mut each = Vec::new();
    for i in 0..n {
        let mut c = BTreeMap::new();
        let t = text(i, len, &mut c);
        for (w, k) in &c {
            *total.entry(w.clone()).or_default() += k;
        }
        each.push(c);
        put(store, "input", &format!("data/{i:04}.txt"), t).await;
    }
    put(store, "input", "code/wc.py", MAP.as_bytes().to_vec()).await;
    put(store, "input", "code/sum.py", REDUCE.as_bytes().to_vec()).await;
    (total, each)
}

fn spec(out_prefix: &str, argv: &[&str]) -> JobSpec {
    let mut s = JobSpec::new(OWNER, "input", "data/", "output", out_prefix);
    s.map = ProgramSpec {
        argv: argv.iter().map(|a| a.to_string()).collect(),
        files: Vec::new(),
    };
    s
}

fn python(code: &str) -> ProgramSpec {
    ProgramSpec {
        argv: vec!["python3".into(), "-c".into(), code.into()],
        files: Vec::new(),
    }
}

async fn run(jobs: &JobManager, spec: JobSpec) -> JobStatus {
    let id = jobs.submit(spec).await.unwrap();
    let s = jobs
        .wait(&id, OWNER, false, Duration::from_secs(600))
        .await
        .unwrap();
    assert!(s.phase.finished(), "job did not finish: {}", s.summary());
    println!("{}", s.summary());
    s
}

/// Wait for job `id`, which must end done with `tasks` tasks done.
async fn finished_done(jobs: &JobManager, id: &str, tasks: usize) -> JobStatus {
    let st = jobs
        .wait(id, OWNER, false, Duration::from_secs(600))
        .await
        .unwrap();
    println!("{}", st.summary());
    assert_eq!(st.phase, JobPhase::Done, "{}", st.summary());
    assert_eq!(st.done, tasks, "{}", st.summary());
    st
}

fn wc_program() -> ProgramSpec {
    ProgramSpec {
        argv: vec!["python3".into(), "wc.py".into()],
        files: vec![ProgramFile {
            bucket: "input".into(),
            key: "code/wc.py".into(),
        }],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn word_count_map_reduce_is_right_and_runs_beside_the_data() {
    // 12 nodes on 4 sites, 4+2: a random node holds a data shard of a
    // one-chunk object with probability 4/12, the scheduler's always.
    let grid = TestGrid::start_jobs(4, 3, jobs_config()).await;
    let store = store_on(&grid, StoreConfig::default());
    let (total, each) = corpus(&store, 60, 40 << 10).await;
    let jobs = JobManager::new(store.clone());

    let mut s = spec("wc", &[]);
    s.map = wc_program();
    s.reduce = Some(ProgramSpec {
        argv: vec!["python3".into(), "sum.py".into()],
        files: vec![ProgramFile {
            bucket: "input".into(),
            key: "code/sum.py".into(),
        }],
    });
    let sched = run(&jobs, s.clone()).await;
    assert_eq!(sched.phase, JobPhase::Done, "{}", sched.summary());
    assert_eq!(sched.done, 60);
    // Every map output is that object's count, the reduce the total.
    check_map_outputs(&store, "wc", &each).await;
    let reduced = get(&store, "output", "wc/_reduce").await;
    assert_eq!(counts_of(&reduced), total);

    // The same map with a random node per task, in the same run.
    let mut r = spec("wc-random", &[]);
    r.map = wc_program();
    r.placement = Placement::Random;
    let random = run(&jobs, r).await;
    assert_eq!(random.phase, JobPhase::Done);

    let l = &sched.locality;
    let (local, site) = (l.local_fraction().unwrap(), l.site_fraction().unwrap());
    let (rl, rs) = (
        random.locality.local_fraction().unwrap(),
        random.locality.site_fraction().unwrap(),
    );
    let (cl, cs) = (
        l.ceiling_local_fraction().unwrap(),
        l.ceiling_site_fraction().unwrap(),
    );
    println!(
        "locality: scheduler local {local:.3} site {site:.3}; random local {rl:.3} site {rs:.3}; \
         ceiling local {cl:.3} site {cs:.3}; random expected local {:.3} site {:.3}",
        l.random_local_fraction().unwrap(),
        l.random_site_fraction().unwrap()
    );
    // Own disk: 1/4 (one data shard of 4) against 4/12 * 1/4 = 1/12.
    assert!(local >= 1.5 * rl, "local {local} vs random {rl}");
    assert!(local >= 0.9 * cl, "local {local} vs ceiling {cl}");
    // Own site: placement puts a chunk's 4 data shards on 4 different
    // sites here, so no node's site holds more than one: the ceiling is
    // 1/4, which any node reaches (docs/architecture.md, "Jobs": the ceilings per topology).
    assert!(site >= 0.9 * cs, "site {site} vs ceiling {cs}");
    assert!(site >= rs * 0.99, "site {site} vs random {rs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failing_and_overtime_tasks_are_reported_with_their_stderr() {
    let grid = TestGrid::start_jobs(3, 2, jobs_config()).await;
    let store = store_on(&grid, StoreConfig::default());
    corpus(&store, 3, 20 << 10).await;
    let jobs = JobManager::new(store.clone());

    let mut s = spec("fail", &[]);
    s.map = python("import sys; sys.stdin.read(); print('partial'); sys.stderr.write('boom: bad input\\n'); sys.exit(3)");
    let failed = run(&jobs, s).await;
    assert_eq!(failed.phase, JobPhase::Failed);
    assert_eq!(failed.failed, 3);
    for t in &failed.failures {
        assert_eq!(t.outcome, "exited with code 3");
        assert_eq!(t.attempts, 1, "a program's failure is not retried");
        assert!(t.stderr.contains("boom: bad input"), "{:?}", t.stderr);
        // No output for a failed task; its log is stored.
        let out = store
            .head_object("output", &format!("fail/{}", t.key), &GetOptions::default())
            .await;
        assert!(out.is_err(), "failed task left an output");
        let log = get(&store, "output", &format!("fail/_logs/{}", t.key)).await;
        assert_eq!(log, b"boom: bad input\n");
    }
    let logs = jobs.logs(&failed.id, OWNER, false, None).await.unwrap();
    assert!(logs.contains("boom: bad input"));

    let mut s = spec("slow", &[]);
    s.map = python("import time\nwhile True: time.sleep(0.05)");
    s.limits = TaskLimits {
        timeout_secs: 2,
        ..TaskLimits::default()
    };
    let slow = run(&jobs, s).await;
    assert_eq!(slow.phase, JobPhase::Failed);
    assert_eq!(slow.failed, 3);
    for t in &slow.failures {
        assert_eq!(t.outcome, "killed: over its time limit");
    }

    // CPU time is limited too: a busy loop gets SIGXCPU or SIGKILL.
    let mut s = spec("busy", &[]);
    s.map = python("while True: pass");
    s.limits = TaskLimits {
        timeout_secs: 60,
        cpu_secs: 1,
        ..TaskLimits::default()
    };
    let busy = run(&jobs, s).await;
    assert_eq!(busy.failed, 3);
    for t in &busy.failures {
        assert!(t.outcome.starts_with("killed by signal"), "{}", t.outcome);
    }

    // Someone else's job is invisible; another user cannot submit over
    // buckets they do not own.
    assert!(jobs.status(&slow.id, "someone-else", false).await.is_err());
    let mut s = spec("x", &["python3"]);
    s.owner = "someone-else".into();
    assert!(jobs.submit(s).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_killed_mid_job_does_not_stop_it() {
    let mut grid = TestGrid::start_jobs(3, 2, jobs_config()).await;
    let store = store_on(&grid, StoreConfig::default());
    let (_, each) = corpus(&store, 40, 24 << 10).await;
    let jobs = JobManager::new(store.clone());
    let mut s = spec("wc", &[]);
    // Slow enough that tasks are running on every node when one dies.
    s.map = python(&format!("import time; time.sleep(0.3)\n{MAP}"));
    s.per_node = 1;
    let id = jobs.submit(s).await.unwrap();
    loop {
        let st = jobs.status(&id, OWNER, false).await.unwrap();
        if st.done >= 6 {
            break;
        }
        assert!(!st.phase.finished(), "{}", st.summary());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let victim = grid.map.nodes[1].id.clone();
    grid.kill(&victim).await;
    finished_done(&jobs, &id, 40).await;
    check_map_outputs(&store, "wc", &each).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_task_cannot_read_shards_or_reach_the_network() {
    let grid = TestGrid::start_jobs(3, 2, jobs_config()).await;
    let store = store_on(&grid, StoreConfig::default());
    corpus(&store, 1, 20 << 10).await;
    let jobs = JobManager::new(store.clone());
    // A real shard file on every node: the test can read them, tasks not.
    let mut paths = Vec::new();
    for n in &grid.map.nodes {
        let node = &grid.node(&n.id).node;
        let shard = node
            .store
            .iter()
            .ok()
            .and_then(|mut i| i.next())
            .and_then(|r| r.ok())
            .map(|k| node.store.shard_path(&k))
            .expect("a shard on every node");
        assert!(std::fs::read(&shard).is_ok());
        paths.push(shard.display().to_string());
    }
    let data_dir = grid.cfgs[0].data_dir.display().to_string();
    let node_addr = grid.map.nodes[0].addr.clone();
    let code = format!(
        r#"
import os, socket, sys
sys.stdin.read()
for p in {paths:?} + [{data_dir:?} + "/meta/CURRENT"]:
    try:
        open(p, "rb").read(1)
        print("READ", p)
    except OSError as e:
        print("refused", type(e).__name__)
try:
    os.listdir({data_dir:?})
    print("LISTED")
except OSError as e:
    print("refused", type(e).__name__)
host, port = {node_addr:?}.rsplit(":", 1)
try:
    socket.create_connection((host, int(port)), timeout=2)
    print("CONNECTED")
except OSError as e:
    print("refused", type(e).__name__)
print("uid", os.getuid(), "env", sorted(os.environ))
"#
    );
    let mut s = spec("probe", &[]);
    s.map = python(&code);
    let st = run(&jobs, s).await;
    assert_eq!(st.phase, JobPhase::Done, "{}", st.summary());
    let out = String::from_utf8(get(&store, "output", "probe/data/0000.txt").await).unwrap();
    println!("{out}");
    assert!(!out.contains("READ"), "{out}");
    assert!(!out.contains("LISTED"), "{out}");
    assert!(!out.contains("CONNECTED"), "{out}");
    assert_eq!(out.matches("refused").count(), paths.len() + 3, "{out}");
    let sandbox = grid.node(&grid.map.nodes[0].id).jobs.sandbox().clone();
    if sandbox.run_as.is_some() {
        assert!(out.contains("uid 65534"), "{out}");
    }
    // Nothing of the node's environment reaches the task.
    assert!(
        out.contains(
            "env ['GRIDSTORE_INPUT_KEY', 'GRIDSTORE_TASK_ID', 'HOME', 'LANG', 'PATH', 'TMPDIR']"
        ),
        "{out}"
    );
}

/// Every version under `prefix` in `bucket`: key → how many.
async fn versions_under(
    store: &ObjectStore,
    bucket: &str,
    prefix: &str,
) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    let mut params = cluster::ListVersionsParams {
        prefix: prefix.into(),
        max_keys: 1000,
        ..Default::default()
    };
    loop {
        let page = store.list_object_versions(bucket, &params).await.unwrap();
        for v in &page.versions {
            *out.entry(v.key.clone()).or_default() += 1;
        }
        if !page.is_truncated {
            return out;
        }
        params.key_marker = page.next_key_marker;
        params.version_id_marker = page.next_version_id_marker;
    }
}

/// Two gateways on one grid: the one driving a job dies mid-job (its
/// runtime is dropped, as a process killed), the other reports the job
/// all along, takes it over once the lease lapses and finishes it, every
/// count exact and every output written once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_outlives_the_gateway_driving_it() {
    let grid = TestGrid::start_jobs(3, 2, jobs_config()).await;
    let store = store_on(&grid, StoreConfig::default());
    let (total, each) = corpus(&store, 40, 16 << 10).await;
    store
        .set_versioning("output", cluster::VersioningState::Enabled)
        .await
        .unwrap();
    let mut s = spec("wc", &[]);
    // Slow enough that the job is mid-way when its gateway dies.
    s.map = python(&format!("import time; time.sleep(0.4)\n{MAP}"));
    s.reduce = Some(python(REDUCE));
    s.per_node = 1;

    // Gateway A on a runtime of its own, dropped to kill it.
    let (id_tx, id_rx) = std::sync::mpsc::channel();
    let (kill_tx, kill_rx) = tokio::sync::oneshot::channel::<()>();
    let grid_a = grid.grid();
    let a = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let store_a = ObjectStore::new(grid_a, support::master(), StoreConfig::default());
            let jobs_a = JobManager::with_holder(store_a, "jobs-a");
            id_tx.send(jobs_a.submit(s).await.unwrap()).unwrap();
            let _ = kill_rx.await;
        });
        rt.shutdown_background();
    });
    let id = id_rx.recv().unwrap();
    // Gateway B: the smaller name would win a race, but there is none.
    let jobs_b = JobManager::with_holder(store.clone(), "jobs-b");
    loop {
        let st = jobs_b.status(&id, OWNER, false).await.unwrap();
        assert!(!st.phase.finished(), "finished too soon: {}", st.summary());
        if st.done >= 8 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    kill_tx.send(()).unwrap();
    a.join().unwrap();
    let at_kill = jobs_b.status(&id, OWNER, false).await.unwrap();
    assert!(at_kill.done < 40, "{}", at_kill.summary());
    finished_done(&jobs_b, &id, 40).await;
    check_map_outputs(&store, "wc", &each).await;
    assert_eq!(counts_of(&get(&store, "output", "wc/_reduce").await), total);
    let versions = versions_under(&store, "output", "wc/").await;
    let twice: Vec<_> = versions.iter().filter(|(_, n)| **n != 1).collect();
    assert!(
        twice.is_empty(),
        "outputs written more than once: {twice:?}"
    );
    // 40 map outputs, the reduce and the summary.
    assert_eq!(versions.len(), 42, "{versions:?}");
    // Listed from either gateway alike, with the final counts.
    let listed = jobs_b.list(OWNER, false).await.unwrap();
    let l = listed.iter().find(|j| j.id == id).unwrap();
    assert_eq!((l.phase, l.done), (JobPhase::Done, 40));
}

/// A cancel asked through one gateway stops the job another drives.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cancel_through_another_gateway_stops_the_job() {
    let grid = TestGrid::start_jobs(3, 2, jobs_config()).await;
    let store = store_on(&grid, StoreConfig::default());
    corpus(&store, 30, 4 << 10).await;
    let a = JobManager::with_holder(store.clone(), "jobs-a");
    let b = JobManager::with_holder(store_on(&grid, StoreConfig::default()), "jobs-b");
    let mut s = spec("slow", &[]);
    s.map = python("import time; time.sleep(1)");
    s.per_node = 1;
    let id = a.submit(s).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    b.cancel(&id, OWNER, false).await.unwrap();
    let st = b
        .wait(&id, OWNER, false, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(st.phase, JobPhase::Cancelled, "{}", st.summary());
    assert!(st.cancelled > 0, "{}", st.summary());
    let from_a = a.status(&id, OWNER, false).await.unwrap();
    assert_eq!(
        (from_a.phase, from_a.done, from_a.cancelled),
        (st.phase, st.done, st.cancelled)
    );
}

const LUA_MAP: &str = r#"
local c = {}
for w in io.read("a"):gmatch("%S+") do c[w] = (c[w] or 0) + 1 end
local ws = {}
for w in pairs(c) do ws[#ws + 1] = w end
table.sort(ws)
for _, w in ipairs(ws) do io.write(w, "\t", c[w], "\n") end
"#;

const LUA_REDUCE: &str = r#"
local c = {}
for line in io.lines() do
  local w, n = line:match("^(.-)\t(%d+)$")
  if w then c[w] = (c[w] or 0) + tonumber(n) end
end
local ws = {}
for w in pairs(c) do ws[#ws + 1] = w end
table.sort(ws)
for _, w in ipairs(ws) do io.write(w, "\t", c[w], "\n") end
"#;

const JS_MAP: &str = r#"
const parts = [];
process.stdin.on("data", (d) => parts.push(d));
process.stdin.on("end", () => {
  const c = new Map();
  for (const w of Buffer.concat(parts).toString().split(/\s+/)) {
    if (w) c.set(w, (c.get(w) || 0) + 1);
  }
  for (const w of [...c.keys()].sort()) process.stdout.write(`${w}\t${c.get(w)}\n`);
});
"#;

const JS_REDUCE: &str = r#"
const parts = [];
process.stdin.on("data", (d) => parts.push(d));
process.stdin.on("end", () => {
  const c = new Map();
  for (const line of Buffer.concat(parts).toString().split("\n")) {
    const [w, n] = line.split("\t");
    if (w && n) c.set(w, (c.get(w) || 0) + Number(n));
  }
  for (const w of [...c.keys()].sort()) process.stdout.write(`${w}\t${c.get(w)}\n`);
});
"#;

const RUST_MAP: &str = r#"
use std::collections::BTreeMap;
use std::io::{Read, Write};
fn main() {
    let mut s = String::new();
    std::io::stdin().read_to_string(&mut s).unwrap();
    let mut c: BTreeMap<&str, u64> = BTreeMap::new();
    for w in s.split_whitespace() {
        *c.entry(w).or_default() += 1;
    }
    let mut out = std::io::stdout().lock();
    for (w, n) in c {
        writeln!(out, "{w}\t{n}").unwrap();
    }
}
"#;

/// `source` built with rustc into a static binary: a program a job ships
/// as one of its files.
fn static_binary(source: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("wc.rs");
    std::fs::write(&src, source).unwrap();
    let bin = dir.path().join("wc");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out = std::process::Command::new(rustc)
        .args([
            "-O",
            "-C",
            "target-feature=+crt-static",
            "-C",
            "strip=symbols",
            "-o",
        ])
        .arg(&bin)
        .arg(&src)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "rustc: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(bin).unwrap()
}

/// The word count in Lua, JavaScript and as a static binary shipped with
/// the job, each exact; a program no node allows is refused when the job
/// is submitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn word_count_in_lua_javascript_and_a_shipped_binary() {
    let cfg = JobsConfig {
        allowed: vec!["python3".into(), "lua5.4".into(), "node".into()],
        allow_shipped_binaries: true,
        ..jobs_config()
    };
    let jobs_path = cfg.path.clone();
    let grid = TestGrid::start_jobs(3, 2, cfg).await;
    let store = store_on(&grid, StoreConfig::default());
    let (total, each) = corpus(&store, 12, 24 << 10).await;
    for (key, body) in [
        ("code/wc.lua", LUA_MAP.as_bytes().to_vec()),
        ("code/sum.lua", LUA_REDUCE.as_bytes().to_vec()),
        ("code/wc.js", JS_MAP.as_bytes().to_vec()),
        ("code/sum.js", JS_REDUCE.as_bytes().to_vec()),
        ("code/wc", static_binary(RUST_MAP)),
    ] {
        put(&store, "input", key, body).await;
    }
    let jobs = JobManager::new(store.clone());
    let program = |argv: &[&str], file: &str| ProgramSpec {
        argv: argv.iter().map(|a| a.to_string()).collect(),
        files: vec![ProgramFile {
            bucket: "input".into(),
            key: format!("code/{file}"),
        }],
    };
    let runs = [
        (
            "lua",
            program(&["lua5.4", "wc.lua"], "wc.lua"),
            program(&["lua5.4", "sum.lua"], "sum.lua"),
        ),
        (
            "js",
            program(&["node", "wc.js"], "wc.js"),
            program(&["node", "sum.js"], "sum.js"),
        ),
        (
            "bin",
            program(&["./wc"], "wc"),
            program(&["node", "sum.js"], "sum.js"),
        ),
    ];
    for (name, map, reduce) in runs {
        // The README's test command runs where only Rust (and python3) is
        // installed: a language whose interpreter the nodes cannot find is
        // skipped, said on stderr. CI installs them all.
        if let Some(missing) = [&map, &reduce]
            .into_iter()
            .map(|p| p.argv[0].as_str())
            .find(|prog| {
                !prog.starts_with("./")
                    && storage_node::jobs::resolve_program(prog, &jobs_path).is_none()
            })
        {
            eprintln!("skipped the {name} word count: {missing} is not installed");
            continue;
        }
        let mut s = spec(name, &[]);
        s.map = map;
        s.reduce = Some(reduce);
        let st = run(&jobs, s).await;
        assert_eq!(st.phase, JobPhase::Done, "{name}: {}", st.summary());
        check_map_outputs(&store, name, &each).await;
        let reduced = get(&store, "output", &format!("{name}/_reduce")).await;
        assert_eq!(counts_of(&reduced), total, "{name}: reduce");
    }

    // Off the allow-list: refused at once, naming what is allowed.
    let mut s = spec("perl", &["perl", "-e", "print 1"]);
    s.reduce = None;
    let e = jobs.submit(s).await.unwrap_err().to_string();
    assert!(
        e.contains("\"perl\" is not allowed") && e.contains("lua5.4, node, python3"),
        "{e}"
    );
    // A shipped program must be one of the job's files.
    let mut s = spec("stray", &["./elsewhere"]);
    s.map.files = vec![ProgramFile {
        bucket: "input".into(),
        key: "code/wc".into(),
    }];
    let e = jobs.submit(s).await.unwrap_err().to_string();
    assert!(e.contains("one of the program's files"), "{e}");
}

/// Nodes that run only python3 refuse a shipped binary at submission.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_shipped_binary_is_refused_where_nodes_do_not_run_them() {
    let grid = TestGrid::start_jobs(2, 2, jobs_config()).await;
    let store = store_on(&grid, StoreConfig::default());
    corpus(&store, 1, 1 << 10).await;
    let jobs = JobManager::new(store.clone());
    let mut s = spec("bin", &["./wc"]);
    s.map.files = vec![ProgramFile {
        bucket: "input".into(),
        key: "code/wc.py".into(),
    }];
    let e = jobs.submit(s).await.unwrap_err().to_string();
    assert!(
        e.contains("no node runs programs shipped with a job"),
        "{e}"
    );
}

/// A task whose inputs stream with its request, 20 MiB of them: more than
/// one request may carry. The program sees every byte, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn inputs_stream_past_the_request_limit() {
    use ::grid::task::{self, FrameReader, TaskInput, TaskRequest};
    use http_body_util::BodyExt;
    use metadata::Record;
    let grid = TestGrid::start_jobs(1, 1, jobs_config()).await;
    let g = grid.grid();
    let node = grid.map.nodes[0].id.clone();
    let client = g.client(&node).unwrap().clone();
    let req = TaskRequest {
        task_id: "stream/test".into(),
        argv: vec![
            "python3".into(),
            "-c".into(),
            "import sys, hashlib; d = sys.stdin.buffer.read(); print(len(d), hashlib.sha256(d).hexdigest())".into(),
        ],
        ..TaskRequest::default()
    };
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(Ok(task::frame(task::FRAME_REQUEST, &req.encode_record())))
        .await
        .unwrap();
    let mut want = sha2::Sha256::default();
    let pieces: Vec<Vec<u8>> = (0..40u8).map(|i| vec![i; 512 << 10]).collect();
    for p in &pieces {
        sha2::Digest::update(&mut want, p);
    }
    let feeder = tokio::spawn(async move {
        for p in pieces {
            let input = TaskInput {
                key: "k".into(),
                inline_data: p,
                ..TaskInput::default()
            };
            let f = task::frame(task::FRAME_INPUT, &input.encode_record());
            if tx.send(Ok(f)).await.is_err() {
                break;
            }
        }
    });
    let resp = client.run_task_streaming(rx).await.unwrap();
    let mut body = resp.into_body();
    let mut frames = FrameReader::default();
    let mut stdout = Vec::new();
    let report = 'read: loop {
        let piece = body.frame().await.expect("stream ended").unwrap();
        frames.push(&piece.into_data().unwrap_or_default());
        while let Some((kind, payload)) = frames.next_frame().unwrap() {
            match kind {
                task::FRAME_STDOUT => stdout.extend_from_slice(&payload),
                task::FRAME_DONE => break 'read task::TaskReport::decode_record(&payload).unwrap(),
                _ => {}
            }
        }
    };
    feeder.await.unwrap();
    assert!(report.succeeded(), "{}", report.outcome());
    let want = hex::encode(sha2::Digest::finalize(want));
    assert_eq!(
        String::from_utf8_lossy(&stdout).trim(),
        format!("{} {want}", 40 * (512 << 10))
    );
    assert_eq!(report.bytes_inline, 40 * (512 << 10));
}
