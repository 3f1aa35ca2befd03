//! Self-healing on an in-process grid (real metadata store, real shard files,
//! real RPC on loopback): bitrot and lost shards found by scrubbing and
//! rebuilt by reconciliation; dead nodes marked down by heartbeats and
//! their shards rebuilt on the nodes placement names next, with no
//! command; the nodes' return collecting what became stale.

mod support;

use cluster::{ErasureSpec, GetOptions, ObjectStore, PutOptions, StoreConfig};
use futures_util::StreamExt;
use metadata::model::{ClusterMap, NodeState};
use metadata::ShardKey;
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use storage_node::config::RepairConfig;
use support::grid::TestGrid;
use support::objects::{store_on, Data, OWNER};
use support::shards::{chunks_on_disk, held, misplaced, shard_files, wait_for};

/// (object key, sha256, size) of each object put.
async fn put_objects(
    store: &ObjectStore,
    bucket: &str,
    count: u64,
) -> Vec<(String, [u8; 32], u64)> {
    let mut out = Vec::new();
    for i in 0..count {
        let len = 300_000 + i * 137_000;
        let key = format!("obj/{i:03}");
        store
            .put_object(
                bucket,
                &key,
                Data::new(len, 1000 + i).stream(),
                PutOptions::default(),
            )
            .await
            .unwrap();
        out.push((key, Data::sha256(len, 1000 + i), len));
    }
    out
}

/// Read an object; `Ok(sha)` if the whole body arrived, `Err` if the read
/// failed at any point (never a partial body passed off as whole).
async fn read_sha(store: &ObjectStore, bucket: &str, key: &str) -> Result<[u8; 32], String> {
    let r = store
        .get_object(bucket, key, GetOptions::default())
        .await
        .map_err(|e| e.to_string())?;
    let mut body = r.body;
    let mut h = Sha256::new();
    while let Some(piece) = body.next().await {
        h.update(piece.map_err(|e| e.to_string())?);
    }
    Ok(h.finalize().into())
}

/// A map as one of the nodes holds it.
async fn node_map(grid: &TestGrid, node_id: &str) -> ClusterMap {
    let g = grid.grid();
    g.client(node_id).unwrap().get_map().await.unwrap().unwrap()
}

/// Flip bytes in 10 % of the shard files and delete another 5 %, never
/// more than `m` shards of one chunk (beyond that no code can help, and
/// the issue is the grid's repair, not arithmetic): scrubbing finds the
/// flips, reconciliation rebuilds every damaged and deleted shard byte for
/// byte, and no read in between returns wrong bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scrubbing_and_reconciliation_restore_flipped_and_deleted_shards() {
    let grid = TestGrid::start_healing(3, 2, RepairConfig::manual()).await;
    let store = store_on(&grid, StoreConfig::default());
    store
        .create_bucket("heal", OWNER, Some(ErasureSpec::new(4, 2)))
        .await
        .unwrap();
    let objects = put_objects(&store, "heal", 24).await;

    let before: BTreeMap<PathBuf, (ShardKey, Vec<u8>)> = shard_files(grid.dir.path())
        .into_iter()
        .map(|(p, k)| {
            let b = std::fs::read(&p).unwrap();
            (p, (k, b))
        })
        .collect();
    let total = before.len();
    assert!(total > 200, "only {total} shard files");

    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut paths: Vec<&PathBuf> = before.keys().collect();
    // A random order, then take the first 10 % to flip and the next 5 % to
    // delete, skipping shards of chunks already damaged m times.
    for i in (1..paths.len()).rev() {
        paths.swap(i, rng.gen_range(0..=i));
    }
    let mut damaged: BTreeMap<[u8; 32], usize> = BTreeMap::new();
    let (want_flip, want_delete) = (total / 10, total / 20);
    let (mut flipped, mut deleted) = (0, 0);
    for p in paths {
        let (key, bytes) = &before[p];
        let d = damaged.entry(key.chunk).or_default();
        if *d >= 2 {
            continue;
        }
        if flipped < want_flip {
            let mut b = bytes.clone();
            for _ in 0..rng.gen_range(1..=8) {
                let at = rng.gen_range(0..b.len());
                b[at] ^= rng.gen_range(1..=255u8);
            }
            std::fs::write(p, &b).unwrap();
            flipped += 1;
        } else if deleted < want_delete {
            std::fs::remove_file(p).unwrap();
            deleted += 1;
        } else {
            break;
        }
        *d += 1;
    }
    assert_eq!((flipped, deleted), (want_flip, want_delete));

    // Before any repair: every read is right or refused, never wrong.
    for (key, sha, _) in &objects {
        if let Ok(got) = read_sha(&store, "heal", key).await {
            assert_eq!(&got, sha, "{key} read back wrong bytes from damaged shards");
        }
    }

    let mut corrupt = 0;
    for n in grid.nodes.iter().flatten() {
        corrupt += n.scrub().await.unwrap().corrupt;
    }
    assert_eq!(
        corrupt as usize, flipped,
        "the scrubber finds every flipped shard"
    );
    let mut rebuilt = 0;
    for n in grid.nodes.iter().flatten() {
        let r = n.reconcile().await.unwrap();
        assert_eq!(r.failed, 0, "{r:?}");
        rebuilt += r.rebuilt;
    }
    assert_eq!(rebuilt as usize, flipped + deleted);

    for (p, (_, bytes)) in &before {
        let now = std::fs::read(p).unwrap_or_default();
        assert!(now == *bytes, "{} not restored byte for byte", p.display());
    }
    // Nothing left to do, and a second scrub finds nothing.
    for n in grid.nodes.iter().flatten() {
        let r = n.reconcile().await.unwrap();
        assert_eq!((r.missing, r.rebuilt), (0, 0), "{r:?}");
        assert_eq!(n.scrub().await.unwrap().corrupt, 0);
    }
    for (key, sha, _) in &objects {
        assert_eq!(&read_sha(&store, "heal", key).await.unwrap(), sha, "{key}");
    }
}

/// Heal-on-read: a read that meets a flipped shard still returns the right
/// bytes, and the shard's home, told by the gateway, rebuilds it within
/// seconds, long before its next scheduled pass or scrub.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_read_that_meets_a_bad_shard_gets_it_rebuilt() {
    let repair = RepairConfig {
        reconcile_interval_secs: 3_600,
        ..RepairConfig::manual()
    };
    let grid = TestGrid::start_healing(3, 2, repair).await;
    let store = store_on(&grid, StoreConfig::default()).with_repair_forwarding();
    store
        .create_bucket("hot", OWNER, Some(ErasureSpec::new(4, 2)))
        .await
        .unwrap();
    let objects = put_objects(&store, "hot", 1).await;
    let (key, sha, _) = &objects[0];
    // Flip a data shard: reads take those first, so this one is met.
    let (path, original) = shard_files(grid.dir.path())
        .into_iter()
        .find(|(_, k)| k.index == 0)
        .map(|(p, _)| {
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .unwrap();
    let mut bad = original.clone();
    let at = bad.len() - 100;
    bad[at] ^= 0x5a;
    std::fs::write(&path, &bad).unwrap();

    assert_eq!(&read_sha(&store, "hot", key).await.unwrap(), sha);
    let healed = wait_for(Duration::from_secs(30), || async {
        std::fs::read(&path).is_ok_and(|b| b == original)
    })
    .await;
    assert!(
        healed,
        "{} not rebuilt after the read reported it",
        path.display()
    );
}

/// Records of `table` a node holds (every page).
async fn count_records(grid: &TestGrid, node_id: &str, table: metadata::db::Table) -> usize {
    let g = grid.grid();
    let c = g.client(node_id).unwrap();
    let (mut n, mut pos) = (0, Vec::new());
    loop {
        let page = c.meta_scan(table, &pos, None, 1000).await.unwrap();
        n += page.items.len();
        match page.next {
            Some(next) => pos = next,
            None => return n,
        }
    }
}

/// A replica of a bucket's metadata that was down during 1,000 puts has
/// all of them shortly after it comes back, from anti-entropy alone (no
/// reads to repair it); once the replicas agree, a pass moves nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_metadata_replica_down_during_1000_puts_catches_up() {
    use metadata::db::Table;
    let repair = RepairConfig {
        anti_entropy_interval_secs: 1,
        ..RepairConfig::manual()
    };
    let mut grid = TestGrid::start_healing(3, 2, repair).await;
    let store = store_on(&grid, StoreConfig::default());
    store.create_bucket("meta", OWNER, None).await.unwrap();
    let small = |i: u64| bytes::Bytes::from(format!("object {i}").into_bytes());
    store
        .put_object(
            "meta",
            "first",
            support::objects::stream_of(small(0).to_vec(), 64),
            PutOptions::default(),
        )
        .await
        .unwrap();
    let ids: Vec<String> = grid.map.nodes.iter().map(|n| n.id.clone()).collect();
    // A write returns at its quorum (two); the third replica's copy lands
    // a moment later.
    let mut replicas = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while replicas.len() < 3 && Instant::now() < deadline {
        replicas.clear();
        for id in &ids {
            if count_records(&grid, id, Table::Versions).await > 0 {
                replicas.push(id.clone());
            }
        }
    }
    assert_eq!(replicas.len(), 3, "versions on {replicas:?}");
    let victim = replicas[0].clone();
    grid.kill(&victim).await;
    for i in 0..1000u64 {
        store
            .put_object(
                "meta",
                &format!("k/{i:04}"),
                support::objects::stream_of(small(i).to_vec(), 64),
                PutOptions::default(),
            )
            .await
            .unwrap();
    }
    let full = count_records(&grid, &replicas[1], Table::Versions).await;
    assert_eq!(full, 1001);
    grid.restart(&victim).await;
    let started = Instant::now();
    let caught_up = wait_for(Duration::from_secs(60), || async {
        count_records(&grid, &victim, Table::Versions).await == full
    })
    .await;
    assert!(
        caught_up,
        "{victim} has {} of {full} versions",
        count_records(&grid, &victim, Table::Versions).await
    );
    eprintln!(
        "replica caught up on 1,000 puts in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    for id in &replicas {
        let r = grid.node(id).anti_entropy(3).await.unwrap();
        assert_eq!((r.pulled, r.pushed), (0, 0), "{id}: {r:?}");
    }
    // Reads through a quorum that includes the returned replica are right.
    for i in [0u64, 499, 999] {
        let got = read_sha(&store, "meta", &format!("k/{i:04}"))
            .await
            .unwrap();
        let want: [u8; 32] = Sha256::digest(small(i)).into();
        assert_eq!(got, want);
    }
}

/// 8 nodes on 4 sites healing on a 1 s rhythm (heartbeats, 3 s to mark a
/// node down, reconciliation and anti-entropy each second), and a gateway
/// following their map.
async fn fast_healing_grid() -> (TestGrid, ObjectStore) {
    let repair = RepairConfig {
        reconcile_interval_secs: 1,
        scrub_interval_secs: 0,
        heartbeat_secs: 1,
        down_after_secs: 3,
        // Lost as soon as down: these tests are about rebuilding.
        lost_after_secs: 3,
        anti_entropy_interval_secs: 1,
        ..RepairConfig::default()
    };
    let grid = TestGrid::start_healing(4, 2, repair).await;
    let store = store_on(&grid, StoreConfig::default()).following_map(Duration::from_millis(300));
    (grid, store)
}

/// Shards whose home differs between two maps.
fn home_changes(a: &ClusterMap, b: &ClusterMap, chunks: &BTreeMap<[u8; 32], usize>) -> usize {
    let (ga, gb) = (grid_view(a), grid_view(b));
    chunks
        .iter()
        .map(|(id, n)| {
            let ha = ga.shard_homes(&codec::ChunkId(*id), *n).unwrap();
            let hb = gb.shard_homes(&codec::ChunkId(*id), *n).unwrap();
            ha.iter().zip(&hb).filter(|(x, y)| x != y).count()
        })
        .sum()
}

fn grid_view(map: &ClusterMap) -> ::grid::chunk_io::Grid {
    ::grid::chunk_io::Grid::new(map.clone(), ::grid::ClientOptions::default())
}

/// Drain a node, remove it, add a new one: each time the nodes move the
/// shards whose home changed, and only those (a copy of the shard, not a
/// rebuild), in the background, with reads right throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn draining_and_adding_nodes_move_only_what_placement_requires() {
    use ::grid::membership::{apply, Change};
    let (mut grid, store) = fast_healing_grid().await;
    store
        .create_bucket("move", OWNER, Some(ErasureSpec::new(4, 2)))
        .await
        .unwrap();
    let objects = put_objects(&store, "move", 12).await;
    let chunks = chunks_on_disk(grid.dir.path(), 6);
    let m0 = grid.map.clone();

    let before = held(grid.dir.path());
    let m1 = apply(
        &grid.grid(),
        &support::owner(),
        Change::Drain("s3n1".into()),
    )
    .await
    .unwrap();
    let expected = home_changes(&m0, &m1, &chunks);
    assert!(expected > 0);
    let drained = wait_for(Duration::from_secs(60), || async {
        misplaced(grid.dir.path(), &m1, &chunks) == (0, 0)
    })
    .await;
    assert!(
        drained,
        "(missing, stale) while draining: {:?}",
        misplaced(grid.dir.path(), &m1, &chunks)
    );
    let after = held(grid.dir.path());
    assert_eq!(
        after.difference(&before).count(),
        expected,
        "shards written anew"
    );
    assert_eq!(
        grid.node("s3n1").node.store.usage().unwrap().shards,
        0,
        "the drained node still holds shards"
    );
    for (key, sha, _) in &objects {
        assert_eq!(&read_sha(&store, "move", key).await.unwrap(), sha, "{key}");
    }
    let rebuilt: u64 = grid
        .nodes
        .iter()
        .flatten()
        .map(|n| n.node.repair.snapshot(0).rebuilt_shards)
        .sum();
    eprintln!("drain: {expected} shards moved ({rebuilt} by copy or rebuild on new homes)");

    // A node that still holds shards is not removed unless forced.
    let busy = apply(
        &grid.grid(),
        &support::owner(),
        Change::Remove {
            node: "s0n0".into(),
            force: false,
        },
    )
    .await;
    assert!(busy.is_err(), "removed an undrained node: {busy:?}");
    apply(
        &grid.grid(),
        &support::owner(),
        Change::Remove {
            node: "s3n1".into(),
            force: false,
        },
    )
    .await
    .unwrap();

    let before = held(grid.dir.path());
    let entry = grid.add_node("s3n2", "site-3").await;
    let m2 = apply(&grid.grid(), &support::owner(), Change::Add(entry))
        .await
        .unwrap();
    let expected = home_changes(&m1, &m2, &chunks);
    assert!(expected > 0);
    let settled = wait_for(Duration::from_secs(60), || async {
        misplaced(grid.dir.path(), &m2, &chunks) == (0, 0)
    })
    .await;
    assert!(
        settled,
        "(missing, stale) after the add: {:?}",
        misplaced(grid.dir.path(), &m2, &chunks)
    );
    let after = held(grid.dir.path());
    assert_eq!(
        after.difference(&before).count(),
        expected,
        "shards written anew"
    );
    assert!(grid.node("s3n2").node.store.usage().unwrap().shards > 0);
    for (key, sha, _) in &objects {
        assert_eq!(&read_sha(&store, "move", key).await.unwrap(), sha, "{key}");
    }
}

/// A whole site goes dark and its disks are wiped while it is down: the
/// other sites rebuild everything it held with no command; when it comes
/// back empty, its share moves back to it and nothing is lost or doubled.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wiped_site_is_rebuilt_elsewhere_and_refilled_on_return() {
    let (mut grid, store) = fast_healing_grid().await;
    store
        .create_bucket("site", OWNER, Some(ErasureSpec::new(4, 2)))
        .await
        .unwrap();
    let objects = put_objects(&store, "site", 12).await;
    let chunks = chunks_on_disk(grid.dir.path(), 6);

    let site = ["s3n0", "s3n1"];
    for id in site {
        grid.kill(id).await;
        std::fs::remove_dir_all(grid.dir.path().join(id)).unwrap();
    }
    let rebuilt = wait_for(Duration::from_secs(90), || async {
        let m = node_map(&grid, "s0n0").await;
        let down = site.iter().all(|d| {
            m.nodes
                .iter()
                .any(|n| n.id == *d && n.state == NodeState::Lost as i32)
        });
        down && misplaced(grid.dir.path(), &m, &chunks) == (0, 0)
    })
    .await;
    let m = node_map(&grid, "s0n0").await;
    assert!(
        rebuilt,
        "(missing, stale) with the site gone: {:?}",
        misplaced(grid.dir.path(), &m, &chunks)
    );
    for (key, sha, _) in &objects {
        assert_eq!(&read_sha(&store, "site", key).await.unwrap(), sha, "{key}");
    }

    // Wiped disks took the nodes' identities: they come back with new ones,
    // which nobody accepts until the operator pins them.
    use ::grid::membership::{apply, Change};
    for id in site {
        grid.restart(id).await;
        let key = grid.node(id).node.identity.key().0.to_vec();
        let node = id.to_string();
        apply(&grid.grid(), &support::owner(), Change::Rekey { node, key })
            .await
            .unwrap();
    }
    let back = wait_for(Duration::from_secs(90), || async {
        let m = node_map(&grid, "s0n0").await;
        m.nodes.iter().all(|n| n.state == NodeState::Up as i32)
            && misplaced(grid.dir.path(), &m, &chunks) == (0, 0)
    })
    .await;
    let m = node_map(&grid, "s0n0").await;
    assert!(
        back,
        "(missing, stale) after the site's return: {:?}",
        misplaced(grid.dir.path(), &m, &chunks)
    );
    assert!(grid.node("s3n0").node.store.usage().unwrap().shards > 0);
    for (key, sha, _) in &objects {
        assert_eq!(&read_sha(&store, "site", key).await.unwrap(), sha, "{key}");
    }
}

/// Kill two nodes on different sites of an 8-node, 4-site grid with
/// heartbeats on: the survivors mark them down in a new map epoch and
/// rebuild their shards on the nodes placement names now, with no command;
/// reads stay right throughout. Restart them: they are marked up again,
/// the shards go back to their homes and the interim copies are dropped,
/// so nothing is lost or held twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dead_nodes_are_replaced_and_their_return_collects_stale_copies() {
    let repair = RepairConfig {
        reconcile_interval_secs: 1,
        scrub_interval_secs: 0,
        heartbeat_secs: 1,
        down_after_secs: 3,
        // Lost as soon as down: these tests are about rebuilding.
        lost_after_secs: 3,
        ..RepairConfig::default()
    };
    let mut grid = TestGrid::start_healing(4, 2, repair).await;
    // Five metadata replicas (quorum three): with the default three, two
    // dead nodes can be two of a bucket's replicas and its metadata then
    // has no read quorum until anti-entropy re-replicates it.
    let store = store_on(
        &grid,
        StoreConfig {
            metadata_replicas: 5,
            ..StoreConfig::default()
        },
    );
    store
        .create_bucket("grid", OWNER, Some(ErasureSpec::new(4, 2)))
        .await
        .unwrap();
    let objects = put_objects(&store, "grid", 12).await;
    let chunks = chunks_on_disk(grid.dir.path(), 6);
    assert_eq!(
        misplaced(grid.dir.path(), &grid.map.clone(), &chunks),
        (0, 0)
    );

    let dead = ["s1n0", "s2n1"];
    for d in dead {
        grid.kill(d).await;
    }
    let started = Instant::now();
    let detected = wait_for(Duration::from_secs(60), || async {
        let m = node_map(&grid, "s0n0").await;
        dead.iter().all(|d| {
            m.nodes
                .iter()
                .any(|n| n.id == *d && n.state == NodeState::Lost as i32)
        })
    })
    .await;
    assert!(detected, "the dead nodes were not marked down");
    let detect_time = started.elapsed();
    let healed = wait_for(Duration::from_secs(120), || async {
        let m = node_map(&grid, "s0n0").await;
        misplaced(grid.dir.path(), &m, &chunks).0 == 0
    })
    .await;
    let m = node_map(&grid, "s0n0").await;
    assert!(
        healed,
        "still missing at homes: {:?}",
        misplaced(grid.dir.path(), &m, &chunks)
    );
    eprintln!(
        "two nodes killed: marked down after {:.1} s, full redundancy after {:.1} s",
        detect_time.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    for (key, sha, _) in &objects {
        assert_eq!(&read_sha(&store, "grid", key).await.unwrap(), sha, "{key}");
    }

    for d in dead {
        grid.restart(d).await;
    }
    let back = wait_for(Duration::from_secs(60), || async {
        let m = node_map(&grid, "s0n0").await;
        m.nodes.iter().all(|n| n.state == NodeState::Up as i32)
    })
    .await;
    assert!(back, "the restarted nodes were not marked up");
    let settled = wait_for(Duration::from_secs(120), || async {
        let m = node_map(&grid, "s0n0").await;
        misplaced(grid.dir.path(), &m, &chunks) == (0, 0)
    })
    .await;
    let m = node_map(&grid, "s0n0").await;
    assert!(
        settled,
        "(missing, stale) after the return: {:?}",
        misplaced(grid.dir.path(), &m, &chunks)
    );
    for (key, sha, _) in &objects {
        assert_eq!(&read_sha(&store, "grid", key).await.unwrap(), sha, "{key}");
    }
}

/// The same with real `gridstore node` processes and `kill -9`, under a
/// continuous writer and reader: 8 nodes on 4 sites, 4+2 coding. Every
/// acknowledged PUT reads back right during and after; the dead nodes'
/// shards are rebuilt with no command; once they restart nothing is lost
/// or held twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_two_node_processes_under_load() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};

    let root = tempfile::tempdir().unwrap();
    // A short GC grace too: a put retried after a holder died mid-chunk
    // leaves shards nobody references, which collection must remove.
    let healing = "gc_grace_secs = 5\ngc_interval_secs = 1\n\
                   [repair]\nreconcile_interval_secs = 1\nheartbeat_secs = 1\n\
                   down_after_secs = 3\nlost_after_secs = 3\nscrub_interval_secs = 0\n\
                   anti_entropy_interval_secs = 1\nmetadata_replicas = 5\n";
    let (mut procs, map) = support::proc_grid(root.path(), 4, 2, healing).await;
    let grid = ::grid::chunk_io::Grid::new(
        map.clone(),
        ::grid::ClientOptions {
            timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(2),
            ..::grid::ClientOptions::default()
        },
    );
    // Five metadata replicas (quorum three): two dead nodes can be two of
    // a bucket's replicas, and with three its metadata would have no read
    // quorum until the map moved. The gateway follows the map the nodes
    // agree on, so quorums move off the dead nodes, and anti-entropy fills
    // the replicas that take their place.
    let store = ObjectStore::new(
        grid,
        cluster::MasterKey::from_bytes([42; 32]),
        StoreConfig {
            metadata_replicas: 5,
            ..StoreConfig::default()
        },
    )
    .with_repair_forwarding()
    .following_map(Duration::from_millis(500));
    store
        .create_bucket("load", OWNER, Some(ErasureSpec::new(4, 2)))
        .await
        .unwrap();

    // (key, sha256) of every acknowledged PUT.
    type Acked = Arc<Mutex<Vec<(String, [u8; 32])>>>;
    let acked: Acked = Arc::default();
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let (store, acked, done) = (store.clone(), acked.clone(), done.clone());
        tokio::spawn(async move {
            let mut failed = Vec::new();
            let mut i = 0u64;
            while !done.load(Ordering::Relaxed) {
                let len = 100_000 + (i * 77_777) % 1_500_000;
                let key = format!("w/{i:05}");
                match store
                    .put_object(
                        "load",
                        &key,
                        Data::new(len, i).stream(),
                        PutOptions::default(),
                    )
                    .await
                {
                    Ok(_) => acked.lock().unwrap().push((key, Data::sha256(len, i))),
                    Err(e) => failed.push(format!("{key}: {e}")),
                }
                i += 1;
            }
            failed
        })
    };
    let reader = {
        let (store, acked, done) = (store.clone(), acked.clone(), done.clone());
        tokio::spawn(async move {
            let (mut reads, mut wrong) = (0u64, Vec::new());
            let mut n = 0usize;
            while !done.load(Ordering::Relaxed) {
                let pick = {
                    let a = acked.lock().unwrap();
                    (!a.is_empty()).then(|| a[n % a.len()].clone())
                };
                n = n.wrapping_add(7919);
                let Some((key, sha)) = pick else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                match read_sha(&store, "load", &key).await {
                    Ok(got) if got == sha => {}
                    Ok(_) => wrong.push(format!("{key}: wrong bytes")),
                    Err(e) => wrong.push(format!("{key}: {e}")),
                }
                reads += 1;
            }
            (reads, wrong)
        })
    };

    tokio::time::sleep(Duration::from_secs(4)).await;
    // The hard case: two of the bucket's metadata replicas, on two sites.
    let mut holders = Vec::new();
    for (i, p) in procs.iter().enumerate() {
        let page = p
            .client()
            .meta_scan(metadata::db::Table::Versions, &[], None, 1)
            .await
            .unwrap();
        if !page.items.is_empty() {
            holders.push(i);
        }
    }
    assert_eq!(holders.len(), 5, "metadata replicas: {holders:?}");
    let dead = [holders[0], holders[1]];
    for d in dead {
        procs[d].kill9();
    }
    let killed_at = Instant::now();
    let watcher = (0..procs.len()).find(|i| !dead.contains(i)).unwrap();
    let first = procs[watcher].client();
    let marked = wait_for(Duration::from_secs(60), || async {
        let Ok(Some(m)) = first.get_map().await else {
            return false;
        };
        dead.iter()
            .all(|d| m.nodes[*d].state == NodeState::Lost as i32)
    })
    .await;
    assert!(marked, "dead nodes not marked down");
    let detected = killed_at.elapsed();
    // Keep writing and reading through the rebuild for a while.
    tokio::time::sleep(Duration::from_secs(6)).await;
    done.store(true, Ordering::Relaxed);
    let failed_puts = writer.await.unwrap();
    let (reads, wrong) = reader.await.unwrap();
    assert!(
        wrong.is_empty(),
        "{} of {reads} reads failed: {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > 20, "only {} puts acknowledged", acked.len());
    eprintln!(
        "{} puts acknowledged ({} refused while nodes died: {:?}), {reads} reads right",
        acked.len(),
        failed_puts.len(),
        &failed_puts[..failed_puts.len().min(3)]
    );

    // The chunks of acknowledged data: a put refused while the nodes died
    // may leave shards nobody references, which GC removes, not repair.
    let live: Vec<::grid::NodeClient> = procs
        .iter()
        .enumerate()
        .filter(|(i, _)| !dead.contains(i))
        .map(|(_, p)| p.client())
        .collect();
    let referenced = support::shards::referenced_chunks(&live).await;
    let chunks: BTreeMap<[u8; 32], usize> = chunks_on_disk(root.path(), 6)
        .into_iter()
        .filter(|(id, _)| referenced.contains(id))
        .collect();
    let healed = wait_for(Duration::from_secs(120), || async {
        let Ok(Some(m)) = first.get_map().await else {
            return false;
        };
        misplaced(root.path(), &m, &chunks).0 == 0
    })
    .await;
    let m = first.get_map().await.unwrap().unwrap();
    if !healed {
        let why = format!(
            "(missing, stale): {:?}; acked {}, refused {:?}",
            misplaced(root.path(), &m, &chunks),
            acked.len(),
            failed_puts
        );
        panic!("{why}; data and logs kept in {}", root.keep().display());
    }
    eprintln!(
        "kill -9 of two nodes: marked down after {:.1} s, full redundancy after {:.1} s",
        detected.as_secs_f64(),
        killed_at.elapsed().as_secs_f64()
    );
    for (key, sha) in &acked {
        assert_eq!(&read_sha(&store, "load", key).await.unwrap(), sha, "{key}");
    }

    for d in dead {
        procs[d].restart();
    }
    let back = wait_for(Duration::from_secs(60), || async {
        let Ok(Some(m)) = first.get_map().await else {
            return false;
        };
        m.nodes.iter().all(|n| n.state == NodeState::Up as i32)
    })
    .await;
    assert!(back, "restarted nodes not marked up");
    let settled = wait_for(Duration::from_secs(120), || async {
        let Ok(Some(m)) = first.get_map().await else {
            return false;
        };
        misplaced(root.path(), &m, &chunks) == (0, 0)
    })
    .await;
    let m = first.get_map().await.unwrap().unwrap();
    if !settled {
        let why = format!(
            "(missing, stale) after the return: {:?}; stale: {:?}",
            misplaced(root.path(), &m, &chunks),
            support::shards::stale_list(root.path(), &m, &chunks)
        );
        // Keep the nodes' data and logs for a post-mortem.
        panic!("{why}; data and logs kept in {}", root.keep().display());
    }
    for (key, sha) in &acked {
        assert_eq!(&read_sha(&store, "load", key).await.unwrap(), sha, "{key}");
    }
}
