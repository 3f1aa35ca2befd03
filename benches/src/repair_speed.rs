//! `gridstore bench repair`: how fast the grid heals itself. An in-process
//! grid of 8 nodes on 4 sites (real metadata store, shard files and RPC on
//! loopback, the daemon's own self-healing with its default heartbeats)
//! takes `size` MiB of incompressible objects at 4+2; then one node dies
//! and the bench times, with no command given, its detection (a new map
//! epoch marks it down), the first rebuilt shard, and full redundancy
//! (every survivor reports nothing missing and the dead node's shard bytes
//! are rebuilt). Beside the rebuild rate, measured in the same run: the
//! codec's keyless rebuild alone (one 4+2 shard from four, in memory) and
//! the disk's rate for writing shard-sized files with fsync, the two
//! ceilings a rebuild cannot pass.
//!
//! With `outage_secs`, the node is not dead but rebooting: it comes back
//! after that many seconds, long before it would be marked lost, and the
//! bench reports what repair wrote meanwhile and after its return against
//! what the node held (`outage_repair_fraction`: nothing of what it held
//! should be copied anywhere).

use bytes::Bytes;
use cluster::{ErasureSpec, MasterKey, ObjectStore, PutOptions, StoreConfig};
use codec::{DomainKey, ErasureParams, Rebuilder, SealConfig, Sealer};
use grid::chunk_io::Grid;
use grid::ClientOptions;
use metadata::model::{ClusterMap, NodeState};
use rand::{RngCore, SeedableRng};
use serde::Serialize;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};
use storage_node::daemon::LocalNode;
use storage_node::NodeConfig;

const OBJECT_MIB: u64 = 64;

#[derive(Debug, Clone, Serialize)]
pub struct RepairReport {
    pub data_mib: u64,
    pub nodes: usize,
    pub sites: usize,
    pub erasure: String,
    pub heartbeat_secs: u64,
    pub down_after_secs: u64,
    /// Rebuilds each node ran at once.
    pub concurrency: usize,
    /// Shard bytes the dead node held.
    pub lost_mib: f64,
    /// From the kill to a map epoch marking it down.
    pub detect_s: f64,
    /// From the kill to the first shard rebuilt.
    pub rebuild_start_s: f64,
    /// From the kill to full redundancy.
    pub full_redundancy_s: f64,
    /// The dead node's shard bytes restored per second, from the first
    /// rebuilt shard to full redundancy: what the ratio is taken of.
    pub rebuild_mib_s: f64,
    /// The same, between 10 % and 90 % of the lost bytes restored: the
    /// rate once every node is at work, without the first shards (found
    /// while peers still scan) and the last.
    pub steady_mib_s: f64,
    /// Every shard byte repair wrote per second in that time: the rebuilt
    /// ones and the shards the new map moved (copied, not rebuilt, from
    /// where they were).
    pub written_mib_s: f64,
    /// Keyless rebuild of one shard from four, in memory, one thread.
    pub codec_rebuild_mib_s: f64,
    /// Writing shard-sized files with fsync, one at a time, same disk.
    pub disk_write_mib_s: f64,
    /// rebuild / min(codec, disk).
    pub ratio: f64,
    /// CPU time the whole process (every node) spent per GiB restored,
    /// from the first rebuilt shard to full redundancy: what a rebuild
    /// costs, which a change to the rebuild path should lower. (On a
    /// shared machine it varies between runs too, though less than the
    /// rate.)
    pub cpu_s_per_gib: f64,
    /// (seconds since the kill, MiB rebuilt so far), every 20 ms: where
    /// the rebuild ran at full speed and where it waited.
    pub timeline: Vec<(f64, f64)>,
    /// The outage case: seconds the node was away (absent for a death).
    pub outage_secs: Option<u64>,
    /// The outage case: shard bytes rebuilt anywhere, from the kill until
    /// the grid settled after the node's return, over the shard bytes the
    /// node held. Target: at most 0.01.
    pub outage_repair_fraction: Option<f64>,
    /// The outage case: from the restart to every node holding the map
    /// that marks it up, with nothing missing or rebuilding anywhere.
    pub settled_after_return_s: Option<f64>,
}

#[derive(Debug, thiserror::Error)]
pub enum RepairBenchError {
    #[error("bench setup: {0}")]
    Setup(String),
    #[error("{0}")]
    Timeout(String),
}

fn setup<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> RepairBenchError + '_ {
    move |e| RepairBenchError::Setup(format!("{what}: {e}"))
}

/// The knobs of one run.
#[derive(Debug, Clone, Copy)]
pub struct RepairArgs {
    pub data_mib: u64,
    pub heartbeat_secs: u64,
    pub down_after_secs: u64,
    /// Rebuilds each node runs at once.
    pub concurrency: usize,
    /// `Some(n)`: the node comes back after `n` seconds (a reboot) instead
    /// of dying.
    pub outage_secs: Option<u64>,
}

pub fn run(args: RepairArgs, dir: Option<&Path>) -> Result<RepairReport, RepairBenchError> {
    let base = match dir {
        Some(d) => tempfile::tempdir_in(d),
        None => tempfile::tempdir(),
    }
    .map_err(setup("temp dir"))?;
    let codec_rebuild_mib_s = codec_rebuild_rate()?;
    let disk_write_mib_s = disk_write_rate(base.path())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(setup("runtime"))?;
    let mut report = runtime.block_on(heal(args, base.path()))?;
    if report.outage_secs.is_some() {
        return Ok(report);
    }
    report.codec_rebuild_mib_s = codec_rebuild_mib_s;
    report.disk_write_mib_s = disk_write_mib_s;
    report.ratio = report.rebuild_mib_s / codec_rebuild_mib_s.min(disk_write_mib_s);
    Ok(report)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 20) as f64
}

/// Rebuilt shard bytes per second: one of six 4+2 shards of a 1 MiB
/// random chunk, from four others.
fn codec_rebuild_rate() -> Result<f64, RepairBenchError> {
    let mut data = vec![0u8; 1 << 20];
    rand::rngs::StdRng::seed_from_u64(1).fill_bytes(&mut data);
    let params = ErasureParams::new(4, 2).map_err(setup("erasure"))?;
    let mut sealer = Sealer::new(SealConfig::new(params)).map_err(setup("sealer"))?;
    let sealed = sealer
        .seal(&DomainKey::new([3; 32]), &data)
        .map_err(setup("seal"))?;
    let shards: Vec<Vec<u8>> = (1..5).map(|i| sealed.shard(i)).collect();
    let id = sealed.id();
    let mut rebuilder = Rebuilder::new();
    let (mut bytes, started) = (0u64, Instant::now());
    while started.elapsed() < Duration::from_secs(2) {
        let (out, _) = rebuilder
            .rebuild(&id, &shards, &[0])
            .map_err(setup("rebuild"))?;
        bytes += out.iter().map(|s| s.len() as u64).sum::<u64>();
    }
    Ok(mib(bytes) / started.elapsed().as_secs_f64())
}

/// Write+fsync of 256 KiB files (a 4+2 shard of a 1 MiB chunk) for 2 s.
fn disk_write_rate(dir: &Path) -> Result<f64, RepairBenchError> {
    let mut buf = vec![0u8; 256 << 10];
    rand::rngs::StdRng::seed_from_u64(2).fill_bytes(&mut buf);
    let probe = dir.join("disk-probe");
    std::fs::create_dir_all(&probe).map_err(setup("probe dir"))?;
    let (mut bytes, mut i, started) = (0u64, 0u64, Instant::now());
    while started.elapsed() < Duration::from_secs(2) {
        let path = probe.join(format!("f{}", i % 64));
        let mut f = std::fs::File::create(&path).map_err(setup("probe file"))?;
        f.write_all(&buf).map_err(setup("probe write"))?;
        f.sync_all().map_err(setup("probe fsync"))?;
        bytes += buf.len() as u64;
        i += 1;
    }
    let rate = mib(bytes) / started.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(&probe);
    Ok(rate)
}

fn random_body(
    len: u64,
    seed: u64,
) -> impl futures_util::Stream<Item = Result<Bytes, std::convert::Infallible>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut left = len;
    futures_util::stream::iter(std::iter::from_fn(move || {
        if left == 0 {
            return None;
        }
        let n = left.min(1 << 20);
        left -= n;
        let mut b = vec![0u8; n as usize];
        rng.fill_bytes(&mut b);
        Some(Ok(Bytes::from(b)))
    }))
}

async fn heal(args: RepairArgs, dir: &Path) -> Result<RepairReport, RepairBenchError> {
    let (sites, per_site) = (4usize, 2usize);
    let mut nodes = Vec::new();
    let mut entries = Vec::new();
    let mut configs = Vec::new();
    for s in 0..sites {
        for j in 0..per_site {
            let id = format!("s{s}n{j}");
            // Through the config file format, as an operator writes it.
            let path = dir.join(format!("{id}.toml"));
            let text = format!(
                "node_id = {id:?}\nsite = \"site-{s}\"\nlisten = \"127.0.0.1:0\"\n\
                 data_dir = {:?}\nreserve_bytes = 0\n\
                 gc_interval_secs = 0\n[repair]\nheartbeat_secs = {}\n\
                 down_after_secs = {}\nlost_after_secs = {}\n\
                 scrub_interval_secs = 0\nconcurrency = {}\n",
                dir.join(&id),
                args.heartbeat_secs,
                args.down_after_secs,
                // A node death: lost as soon as it is down, so the figures
                // measure rebuilding, not the patience for a reboot. A
                // reboot: lost long after it is back.
                args.outage_secs
                    .map_or(args.down_after_secs, |o| (o * 2).max(o + 600)),
                args.concurrency,
            );
            std::fs::write(&path, text).map_err(setup("node config"))?;
            let cfg = NodeConfig::load(&path).map_err(setup("node config"))?;
            let node = LocalNode::start(&cfg).await.map_err(setup("node"))?;
            entries.push(node.map_entry(1 << 40));
            configs.push(path);
            nodes.push(Some(node));
        }
    }
    // The bench's calls present the process's ephemeral identity.
    let me = grid::tls::Identity::ephemeral().map_err(setup("identity"))?;
    let master = MasterKey::from_bytes([7; 32]);
    let map = master.owner_key().signed(ClusterMap {
        epoch: 1,
        nodes: entries,
        clients: vec![me.as_gateway("bench")],
        ..ClusterMap::default()
    });
    let grid = Grid::new(map.clone(), ClientOptions::default());
    for n in &map.nodes {
        if let Some(c) = grid.client(&n.id) {
            c.put_map(&map).await.map_err(setup("map"))?;
        }
    }
    let store = ObjectStore::new(grid.clone(), master, StoreConfig::default())
        .following_map(Duration::from_secs(1));
    store
        .create_bucket("bench", "bench", Some(ErasureSpec::new(4, 2)))
        .await
        .map_err(setup("bucket"))?;
    let objects = args.data_mib.div_ceil(OBJECT_MIB);
    // Progress on stderr: loading takes most of a run, and a profiler
    // started by hand wants the moment of the kill.
    eprintln!("bench repair: writing {} MiB", args.data_mib);
    for i in 0..objects {
        let len = OBJECT_MIB.min(args.data_mib - i * OBJECT_MIB) << 20;
        store
            .put_object(
                "bench",
                &format!("o/{i}"),
                random_body(len, i),
                PutOptions::default(),
            )
            .await
            .map_err(setup("put"))?;
    }

    let victim = 3usize;
    let victim_id = map.nodes[victim].id.clone();
    let lost = nodes[victim]
        .as_ref()
        .map(|n| n.node.store.usage().map(|u| u.used))
        .transpose()
        .map_err(setup("usage"))?
        .unwrap_or(0);
    let survivors: Vec<String> = map
        .nodes
        .iter()
        .filter(|n| n.id != victim_id)
        .map(|n| n.id.clone())
        .collect();
    let rebuilt_before: u64 = survivors
        .iter()
        .filter_map(|id| nodes.iter().flatten().find(|n| &n.node.id == id))
        .map(|n| n.node.repair.snapshot(0).rebuilt_bytes)
        .sum();
    if let Some(n) = nodes[victim].take() {
        n.kill().await;
    }
    let killed = Instant::now();
    eprintln!("bench repair: {victim_id} killed");
    if let Some(outage) = args.outage_secs {
        // The victim restarts with its counters at zero: `rebuilt_before`
        // (the survivors') is the whole baseline.
        // The node comes back on the same address and data.
        let text = std::fs::read_to_string(&configs[victim]).map_err(setup("node config"))?;
        let pinned = text.replace(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = {:?}", map.nodes[victim].addr),
        );
        std::fs::write(&configs[victim], pinned).map_err(setup("node config"))?;
        let marked = |nodes: &[Option<LocalNode>], state: NodeState| {
            let live: Vec<&LocalNode> = nodes.iter().flatten().collect();
            !live.is_empty()
                && live.iter().all(|n| {
                    n.node.cluster_map().ok().flatten().is_some_and(|m| {
                        m.nodes
                            .iter()
                            .any(|x| x.id == victim_id && x.state == state as i32)
                    })
                })
        };
        let mut detect = None;
        while killed.elapsed() < Duration::from_secs(outage) {
            if detect.is_none() && marked(&nodes, NodeState::Down) {
                detect = Some(killed.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let cfg = NodeConfig::load(&configs[victim]).map_err(setup("node config"))?;
        nodes[victim] = Some(LocalNode::start(&cfg).await.map_err(setup("restart"))?);
        let back = Instant::now();
        eprintln!("bench repair: {victim_id} back after {outage} s");
        let limit = Duration::from_secs(args.down_after_secs * 4 + 600);
        let mut quiet_since: Option<Instant> = None;
        loop {
            if back.elapsed() > limit {
                return Err(RepairBenchError::Timeout(format!(
                    "not settled {} s after the node's return",
                    limit.as_secs()
                )));
            }
            let figures: Vec<_> = nodes
                .iter()
                .flatten()
                .map(|n| n.node.repair.snapshot(0))
                .collect();
            let quiet = marked(&nodes, NodeState::Up)
                && figures.iter().all(|f| f.missing == 0 && f.rebuilding == 0);
            match (quiet, quiet_since) {
                (false, _) => quiet_since = None,
                (true, None) => quiet_since = Some(Instant::now()),
                // Quiet through a few reconciliation passes.
                (true, Some(t)) if t.elapsed() >= Duration::from_secs(5) => {
                    let rebuilt = figures
                        .iter()
                        .map(|f| f.rebuilt_bytes)
                        .sum::<u64>()
                        .saturating_sub(rebuilt_before);
                    let settled = t.duration_since(back).as_secs_f64();
                    return Ok(RepairReport {
                        data_mib: args.data_mib,
                        nodes: sites * per_site,
                        sites,
                        erasure: "4+2".into(),
                        heartbeat_secs: args.heartbeat_secs,
                        down_after_secs: args.down_after_secs,
                        concurrency: args.concurrency,
                        lost_mib: mib(lost),
                        detect_s: detect.map_or(0.0, |d| d.as_secs_f64()),
                        rebuild_start_s: 0.0,
                        full_redundancy_s: 0.0,
                        rebuild_mib_s: 0.0,
                        steady_mib_s: 0.0,
                        written_mib_s: 0.0,
                        codec_rebuild_mib_s: 0.0,
                        disk_write_mib_s: 0.0,
                        ratio: 0.0,
                        cpu_s_per_gib: 0.0,
                        timeline: Vec::new(),
                        outage_secs: Some(outage),
                        outage_repair_fraction: Some(rebuilt as f64 / (lost as f64).max(1.0)),
                        settled_after_return_s: Some(settled),
                    });
                }
                (true, Some(_)) => {}
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let limit = Duration::from_secs(args.down_after_secs * 4 + 1800);
    let (mut detect, mut start) = (None, None);
    let mut cpu_at_start = 0.0;
    let mut timeline = Vec::new();
    loop {
        if killed.elapsed() > limit {
            return Err(RepairBenchError::Timeout(format!(
                "no full redundancy {} s after the kill",
                limit.as_secs()
            )));
        }
        let live: Vec<&LocalNode> = nodes.iter().flatten().collect();
        if detect.is_none() {
            let down = live.iter().any(|n| {
                n.node.cluster_map().ok().flatten().is_some_and(|m| {
                    m.nodes
                        .iter()
                        .any(|x| x.id == victim_id && x.state == NodeState::Lost as i32)
                })
            });
            if down {
                detect = Some(killed.elapsed());
            }
        }
        let figures: Vec<_> = live.iter().map(|n| n.node.repair.snapshot(0)).collect();
        let rebuilt: u64 = figures.iter().map(|f| f.rebuilt_bytes).sum::<u64>() - rebuilt_before;
        timeline.push((killed.elapsed().as_secs_f64(), mib(rebuilt)));
        if start.is_none() && (rebuilt > 0 || figures.iter().any(|f| f.rebuilding > 0)) {
            start = Some(killed.elapsed());
            cpu_at_start = process_cpu_secs();
        }
        let quiet = figures.iter().all(|f| f.missing == 0 && f.rebuilding == 0);
        // Rebuilt shard files include their headers, as `lost` does.
        if detect.is_some() && quiet && rebuilt >= lost {
            let full = killed.elapsed();
            let start = start.unwrap_or(full);
            let secs = (full - start).as_secs_f64().max(1e-3);
            let cpu = process_cpu_secs() - cpu_at_start;
            return Ok(RepairReport {
                data_mib: args.data_mib,
                nodes: sites * per_site,
                sites,
                erasure: "4+2".into(),
                heartbeat_secs: args.heartbeat_secs,
                down_after_secs: args.down_after_secs,
                concurrency: args.concurrency,
                lost_mib: mib(lost),
                detect_s: detect.map_or(0.0, |d| d.as_secs_f64()),
                rebuild_start_s: start.as_secs_f64(),
                full_redundancy_s: full.as_secs_f64(),
                rebuild_mib_s: mib(lost) / secs,
                steady_mib_s: steady_rate(&timeline, mib(lost)),
                written_mib_s: mib(rebuilt) / secs,
                codec_rebuild_mib_s: 0.0,
                disk_write_mib_s: 0.0,
                ratio: 0.0,
                cpu_s_per_gib: cpu / (mib(lost) / 1024.0).max(1e-9),
                timeline,
                outage_secs: None,
                outage_repair_fraction: None,
                settled_after_return_s: None,
            });
        }
        // Every 20 ms: the window the rate is taken over is 1-2 s long, and
        // its ends are known only to the poll interval (at 100 ms, a third
        // of the spread between runs).
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// User and system CPU seconds this process has used, all threads.
fn process_cpu_secs() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) } != 0 {
        return 0.0;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(u.ru_utime) + secs(u.ru_stime)
}

/// MiB per second between the samples where 10 % and 90 % of `lost` MiB
/// were restored (0 when the timeline is too short to tell).
fn steady_rate(timeline: &[(f64, f64)], lost: f64) -> f64 {
    let at = |share: f64| timeline.iter().find(|(_, m)| *m >= lost * share).copied();
    match (at(0.1), at(0.9)) {
        (Some((t0, m0)), Some((t1, m1))) if t1 > t0 => (m1 - m0) / (t1 - t0),
        _ => 0.0,
    }
}

pub fn table(r: &RepairReport) -> String {
    if let (Some(outage), Some(fraction)) = (r.outage_secs, r.outage_repair_fraction) {
        return format!(
            "one of {} nodes ({} sites, {}) away for {} s holding {:.0} MiB of {} MiB stored\n\
             heartbeat {} s, down after {} s\n\
             marked down                    {:>8.1} s\n\
             settled after its return       {:>8.1} s\n\
             rebuilt / bytes it held        {:>8.4}\n",
            r.nodes,
            r.sites,
            r.erasure,
            outage,
            r.lost_mib,
            r.data_mib,
            r.heartbeat_secs,
            r.down_after_secs,
            r.detect_s,
            r.settled_after_return_s.unwrap_or(0.0),
            fraction
        );
    }
    format!(
        "self-healing after one of {} nodes ({} sites, {}) dies holding {:.0} MiB of {} MiB stored\n\
         heartbeat {} s, down after {} s\n\
         detected (map marks it down)  {:>8.1} s\n\
         first shard rebuilt            {:>8.1} s\n\
         full redundancy                {:>8.1} s\n\
         rebuild rate (lost bytes)      {:>8.1} MiB/s\n\
           between 10 % and 90 % done   {:>8.1} MiB/s\n\
         repair writes (rebuilt+moved)  {:>8.1} MiB/s\n\
         codec rebuild (1 thread)       {:>8.1} MiB/s\n\
         disk write+fsync (256 KiB)     {:>8.1} MiB/s\n\
         rebuild / slower ceiling       {:>8.2}\n\
         CPU per GiB restored (all nodes) {:>6.2} s\n",
        r.nodes,
        r.sites,
        r.erasure,
        r.lost_mib,
        r.data_mib,
        r.heartbeat_secs,
        r.down_after_secs,
        r.detect_s,
        r.rebuild_start_s,
        r.full_redundancy_s,
        r.rebuild_mib_s,
        r.steady_mib_s,
        r.written_mib_s,
        r.codec_rebuild_mib_s,
        r.disk_write_mib_s,
        r.ratio,
        r.cpu_s_per_gib
    )
}
