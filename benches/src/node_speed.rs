//! `gridstore bench node`: shard put and get through a real node RPC server
//! over loopback, beside raw write+fsync and read of the same disk, in the
//! same run.
//!
//! Both sides move the same 1 MiB shards (sealed by the codec, so the node
//! verifies them as in production) through files in the same directory.
//! Raw write = create/truncate, write, fsync; RPC put = sign, send, verify
//! the stream, write a temp file, fsync, rename, fsync the directory, ack.
//! Raw read = open, read the whole file; RPC get = sign, send, read,
//! stream back. Workloads alternate round by round and the ratios are
//! taken per round, so a noisy neighbour lands on both sides.

use crate::{median, median_ratio, Case, Timing};
use bytes::Bytes;
use codec::{DomainKey, ErasureParams, SealConfig, Sealer};
use grid::{ClientOptions, NodeClient};
use metadata::ShardKey;
use rand::{RngCore, SeedableRng};
use serde::Serialize;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;
use storage_node::config::IoChoice;
use storage_node::daemon::LocalNode;
use storage_node::NodeConfig;

const SHARD_PLAINTEXT: usize = 1 << 20;
/// Distinct shards cycled through (64 MiB in memory).
const POOL: usize = 64;
/// Requests in flight in the parallel cases.
const PARALLEL: usize = 4;

#[derive(Debug, Clone, Serialize)]
pub struct Pair {
    /// GB/s (10^9 bytes/s), median round.
    pub raw_gbps: f64,
    pub rpc_gbps: f64,
    /// Median over rounds of rpc / raw.
    pub ratio: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct NodeReport {
    pub shard_bytes: usize,
    pub rounds: usize,
    pub io_backend: String,
    pub dir: String,
    /// One request at a time.
    pub put: Pair,
    /// Reads from the disk: both sides drop the file's cached pages first.
    pub get: Pair,
    /// Reads served from the page cache (a memcpy for raw).
    pub get_cached: Pair,
    /// Not RPC: what creating a file crash-safely costs on this disk
    /// (temp file, write, fsync, rename, directory fsync), the file
    /// system work every put does, against raw write+fsync.
    pub durable_create: Pair,
    /// `PARALLEL` at a time (threads for raw, concurrent requests for RPC);
    /// reads from the disk.
    pub put_parallel: Pair,
    pub get_parallel: Pair,
}

#[derive(Debug, thiserror::Error)]
pub enum NodeBenchError {
    #[error("bench setup: {0}")]
    Setup(String),
}

fn setup<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> NodeBenchError + '_ {
    move |e| NodeBenchError::Setup(format!("{what}: {e}"))
}

/// How long each workload runs per round: disk work needs longer rounds
/// than the codec's in-memory loops to average over writeback.
pub fn timing(quick: bool) -> Timing {
    if quick {
        Timing::quick()
    } else {
        Timing {
            rounds: 7,
            round: Duration::from_millis(600),
        }
    }
}

pub fn run(timing: Timing, dir: Option<&Path>) -> Result<NodeReport, NodeBenchError> {
    let base = match dir {
        Some(d) => tempfile::tempdir_in(d),
        None => tempfile::tempdir(),
    }
    .map_err(setup("temp dir"))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(setup("runtime"))?;

    let cfg = NodeConfig {
        node_id: "bench".into(),
        site: "bench".into(),
        listen: "127.0.0.1:0".parse().map_err(setup("address"))?,
        data_dir: base.path().join("node"),
        quota_bytes: None,
        reserve_bytes: 0,
        io: IoChoice::Auto,
        shutdown_grace_secs: 5,
        gc_grace_secs: 86_400,
        // A benchmark measures the RPC path alone.
        gc_interval_secs: 0,
        repair: storage_node::config::RepairConfig::manual(),
        jobs: Default::default(),
    };
    let local = runtime
        .block_on(LocalNode::start(&cfg))
        .map_err(setup("node"))?;
    let node_files = local.node.clone();
    let io_backend = node_files.store.io_backend().name().to_owned();
    let addr = local.addr;
    let client = {
        let _guard = runtime.enter();
        NodeClient::new(
            addr.to_string(),
            &local.node.identity.key().0,
            ClientOptions::default(),
        )
    };

    let shards = seal_pool()?;
    let shard_bytes = shards[0].1.len();
    let raw_dir = base.path().join("raw");
    std::fs::create_dir_all(&raw_dir).map_err(setup("raw dir"))?;
    let raw_paths: Vec<PathBuf> = (0..POOL)
        .map(|i| raw_dir.join(format!("{i}.bin")))
        .collect();
    // Lay everything down once so the read cases read something.
    for (i, (key, shard)) in shards.iter().enumerate() {
        raw_write(&raw_paths[i], shard).map_err(setup("raw write"))?;
        runtime
            .block_on(client.put_shard(key, shard.clone()))
            .map_err(setup("rpc put"))?;
    }

    let shard_files: Vec<PathBuf> = shards
        .iter()
        .map(|(k, _)| node_files.store.shard_path(k))
        .collect();
    let (mut n_rw, mut n_put, mut n_rr, mut n_get) = (0usize, 0usize, 0usize, 0usize);
    let mut n_dc = 0usize;
    let mut durable_create = || {
        let i = n_dc % POOL;
        n_dc += 1;
        durable_create(&raw_dir, &raw_paths[i], &shards[i].1).expect("durable create");
    };
    let (mut c_rr, mut c_get) = (0usize, 0usize);
    let mut raw_r_cold = || {
        let i = c_rr % POOL;
        c_rr += 1;
        evict(&raw_paths[i]).expect("evict");
        raw_read(&raw_paths[i]).expect("raw read");
    };
    let mut rpc_get_cold = || {
        let i = c_get % POOL;
        c_get += 1;
        evict(&shard_files[i]).expect("evict");
        let k = &shards[i].0;
        runtime
            .block_on(client.get_shard(k, None))
            .expect("rpc get");
    };
    let mut raw_w = || {
        let i = n_rw % POOL;
        n_rw += 1;
        raw_write(&raw_paths[i], &shards[i].1).expect("raw write");
    };
    let mut rpc_put = || {
        let (k, s) = &shards[n_put % POOL];
        n_put += 1;
        runtime
            .block_on(client.put_shard(k, s.clone()))
            .expect("rpc put");
    };
    let mut raw_r = || {
        let i = n_rr % POOL;
        n_rr += 1;
        let got = raw_read(&raw_paths[i]).expect("raw read");
        assert_eq!(got.len(), shard_bytes);
    };
    let mut rpc_get = || {
        let (k, s) = &shards[n_get % POOL];
        n_get += 1;
        let got = runtime
            .block_on(client.get_shard(k, None))
            .expect("rpc get");
        assert_eq!(got.len(), s.len());
    };

    let (mut p_rw, mut p_put, mut p_rr, mut p_get) = (0usize, 0usize, 0usize, 0usize);
    let mut raw_w_par = || {
        let at = p_rw;
        p_rw += PARALLEL;
        std::thread::scope(|s| {
            for j in 0..PARALLEL {
                let i = (at + j) % POOL;
                let (path, shard) = (&raw_paths[i], &shards[i].1);
                s.spawn(move || raw_write(path, shard).expect("raw write"));
            }
        });
    };
    let mut rpc_put_par = || {
        let at = p_put;
        p_put += PARALLEL;
        runtime.block_on(async {
            let mut tasks = Vec::with_capacity(PARALLEL);
            for j in 0..PARALLEL {
                let (k, s) = shards[(at + j) % POOL].clone();
                let c = client.clone();
                tasks.push(tokio::spawn(async move { c.put_shard(&k, s).await }));
            }
            for t in tasks {
                t.await.expect("task").expect("rpc put");
            }
        });
    };
    let mut raw_r_par = || {
        let at = p_rr;
        p_rr += PARALLEL;
        std::thread::scope(|s| {
            for j in 0..PARALLEL {
                let path = &raw_paths[(at + j) % POOL];
                evict(path).expect("evict");
                s.spawn(move || raw_read(path).expect("raw read"));
            }
        });
    };
    let mut rpc_get_par = || {
        let at = p_get;
        p_get += PARALLEL;
        runtime.block_on(async {
            let mut tasks = Vec::with_capacity(PARALLEL);
            for j in 0..PARALLEL {
                let i = (at + j) % POOL;
                evict(&shard_files[i]).expect("evict");
                let k = shards[i].0;
                let c = client.clone();
                tasks.push(tokio::spawn(async move { c.get_shard(&k, None).await }));
            }
            for t in tasks {
                t.await.expect("task").expect("rpc get");
            }
        });
    };

    let rates = timing.interleaved(&mut [
        Case {
            bytes: shard_bytes,
            run: &mut raw_w,
        },
        Case {
            bytes: shard_bytes,
            run: &mut rpc_put,
        },
        Case {
            bytes: shard_bytes,
            run: &mut raw_r,
        },
        Case {
            bytes: shard_bytes,
            run: &mut rpc_get,
        },
        Case {
            bytes: shard_bytes,
            run: &mut raw_r_cold,
        },
        Case {
            bytes: shard_bytes,
            run: &mut durable_create,
        },
        Case {
            bytes: shard_bytes,
            run: &mut rpc_get_cold,
        },
        Case {
            bytes: shard_bytes * PARALLEL,
            run: &mut raw_w_par,
        },
        Case {
            bytes: shard_bytes * PARALLEL,
            run: &mut rpc_put_par,
        },
        Case {
            bytes: shard_bytes * PARALLEL,
            run: &mut raw_r_par,
        },
        Case {
            bytes: shard_bytes * PARALLEL,
            run: &mut rpc_get_par,
        },
    ]);
    let pair = |raw: usize, rpc: usize| Pair {
        raw_gbps: median(rates[raw].clone()),
        rpc_gbps: median(rates[rpc].clone()),
        ratio: median_ratio(&rates[rpc], &rates[raw]),
    };
    let report = NodeReport {
        shard_bytes,
        rounds: timing.rounds,
        io_backend,
        dir: base.path().display().to_string(),
        put: pair(0, 1),
        get_cached: pair(2, 3),
        get: pair(4, 5),
        durable_create: pair(0, 6),
        put_parallel: pair(7, 8),
        get_parallel: pair(9, 10),
    };
    runtime.block_on(local.stop());
    Ok(report)
}

fn seal_pool() -> Result<Vec<(ShardKey, Bytes)>, NodeBenchError> {
    let params = ErasureParams::new(1, 0).map_err(setup("erasure"))?;
    let mut sealer = Sealer::new(SealConfig::new(params)).map_err(setup("sealer"))?;
    let domain = DomainKey::new([3; 32]);
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let mut data = vec![0u8; SHARD_PLAINTEXT];
    (0..POOL)
        .map(|_| {
            rng.fill_bytes(&mut data);
            let c = sealer.seal(&domain, &data).map_err(setup("seal"))?;
            let key = ShardKey::new(c.id().0, 0).map_err(setup("key"))?;
            Ok((key, Bytes::from(c.shard(0))))
        })
        .collect()
}

fn raw_write(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    f.write_all(data)?;
    f.sync_all()
}

/// Drop a file's pages from the page cache, so the next read goes to the
/// disk (the pages are clean: everything was fsynced).
fn evict(path: &Path) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let f = File::open(path)?;
    // SAFETY: a valid open descriptor; advice only.
    let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    if rc != 0 {
        return Err(std::io::Error::from_raw_os_error(rc));
    }
    Ok(())
}

fn durable_create(dir: &Path, path: &Path, data: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join("create.tmp");
    raw_write(&tmp, data)?;
    std::fs::rename(&tmp, path)?;
    File::open(dir)?.sync_all()
}

fn raw_read(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut f = File::open(path)?;
    let mut v = Vec::with_capacity(f.metadata()?.len() as usize);
    f.read_to_end(&mut v)?;
    Ok(v)
}

pub fn table(r: &NodeReport) -> String {
    let mut s = format!(
        "node RPC over loopback vs the same disk ({} byte shards, {} rounds, {} I/O, in {})\n",
        r.shard_bytes, r.rounds, r.io_backend, r.dir
    );
    s.push_str(&format!(
        "{:<40} {:>10} {:>10} {:>8}\n",
        "", "raw GB/s", "RPC GB/s", "RPC/raw"
    ));
    for (name, p) in [
        ("put vs write+fsync", &r.put),
        ("get vs read (disk)", &r.get),
        ("get vs read (page cache)", &r.get_cached),
        ("(no RPC) durable create vs write+fsync", &r.durable_create),
        (
            &*format!("put vs write+fsync, {PARALLEL} at once"),
            &r.put_parallel,
        ),
        (
            &*format!("get vs read (disk), {PARALLEL} at once"),
            &r.get_parallel,
        ),
    ] {
        s.push_str(&format!(
            "{:<40} {:>10.3} {:>10.3} {:>8.2}\n",
            name, p.raw_gbps, p.rpc_gbps, p.ratio
        ));
    }
    s
}
