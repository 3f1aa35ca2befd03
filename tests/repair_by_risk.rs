//! Repair by risk, on real `gridstore node` processes with short timers:
//! a node that is only down (a farm rebooting) costs no rebuild of what it
//! holds; chunks left with no spare shard while nodes are down are rebuilt
//! at once; a node unreachable past the lost delay is rebuilt as before.

mod support;

use ::grid::chunk_io::Grid;
use ::grid::{ClientOptions, NodeClient};
use cluster::{ErasureSpec, GetOptions, ObjectStore, PutOptions, StoreConfig};
use codec::ChunkId;
use futures_util::StreamExt;
use metadata::model::{ClusterMap, NodeState};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;
use support::objects::{Data, OWNER};
use support::shards::{held, misplaced, wait_for};
use support::NodeProc;

/// One grid at a time: each is 8 node processes with 1 s timers, and
/// three at once on a small machine miss enough heartbeats to mark a
/// second node down, which rightly puts chunks at risk and rebuilds them.
static ONE_GRID_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Heartbeats, reconciliation and anti-entropy each second, down after
/// 3 s, and `lost_after_secs` as given.
fn timers(lost_after_secs: u64) -> String {
    format!(
        "[repair]\nreconcile_interval_secs = 1\nheartbeat_secs = 1\ndown_after_secs = 3\n\
         lost_after_secs = {lost_after_secs}\nscrub_interval_secs = 0\n\
         anti_entropy_interval_secs = 1\nmetadata_replicas = 5\n"
    )
}

/// 8 nodes on 4 sites and a gateway following their map, with a 4+2
/// bucket `risk`.
async fn grid_of(
    root: &Path,
    lost_after_secs: u64,
) -> (
    tokio::sync::MutexGuard<'static, ()>,
    Vec<NodeProc>,
    ClusterMap,
    ObjectStore,
) {
    let turn = ONE_GRID_AT_A_TIME.lock().await;
    let (procs, map) = support::proc_grid(root, 4, 2, &timers(lost_after_secs)).await;
    let grid = Grid::new(
        map.clone(),
        ClientOptions {
            timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(2),
            ..ClientOptions::default()
        },
    );
    // Five metadata replicas: two nodes out still leave a quorum.
    let store = ObjectStore::new(
        grid,
        support::master(),
        StoreConfig {
            metadata_replicas: 5,
            ..StoreConfig::default()
        },
    )
    .with_repair_forwarding()
    .following_map(Duration::from_millis(500));
    store
        .create_bucket("risk", OWNER, Some(ErasureSpec::new(4, 2)))
        .await
        .unwrap();
    (turn, procs, map, store)
}

/// Put `count` objects of 0.3-1.5 MB under `prefix`: (key, sha256, size).
async fn put(store: &ObjectStore, prefix: &str, count: u64) -> Vec<(String, [u8; 32], u64)> {
    let mut out = Vec::new();
    for i in 0..count {
        let len = 300_000 + (i * 211_000) % 1_200_000;
        let key = format!("{prefix}/{i:03}");
        let seed = len ^ (prefix.len() as u64) << 40 ^ i;
        store
            .put_object(
                "risk",
                &key,
                Data::new(len, seed).stream(),
                PutOptions::default(),
            )
            .await
            .unwrap();
        out.push((key, Data::sha256(len, seed), len));
    }
    out
}

async fn read_all(store: &ObjectStore, objects: &[(String, [u8; 32], u64)]) {
    for (key, sha, _) in objects {
        let r = store
            .get_object("risk", key, GetOptions::default())
            .await
            .unwrap_or_else(|e| panic!("{key}: {e}"));
        let mut body = r.body;
        let mut h = Sha256::new();
        while let Some(piece) = body.next().await {
            h.update(piece.unwrap_or_else(|e| panic!("{key}: {e}")));
        }
        assert_eq!(&<[u8; 32]>::from(h.finalize()), sha, "{key}");
    }
}

/// The map `watcher` holds, once `node` has `state` in it.
async fn wait_state(watcher: &NodeClient, node: &str, state: NodeState) -> ClusterMap {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(Some(m)) = watcher.get_map().await {
            if m.nodes
                .iter()
                .any(|n| n.id == node && n.state == state as i32)
            {
                return m;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{node} never marked {state:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Rebuilt shards and bytes, and shards left waiting for a down node, summed
/// over the nodes that answer.
async fn repair_totals(procs: &[NodeProc], skip: &[usize]) -> (u64, u64, u64) {
    let (mut shards, mut bytes, mut waiting) = (0, 0, 0);
    for (i, p) in procs.iter().enumerate() {
        if skip.contains(&i) {
            continue;
        }
        let st = p.client().status().await.unwrap();
        let r = st.repair.unwrap_or_default();
        shards += r.rebuilt_shards;
        bytes += r.rebuilt_bytes;
        waiting += r.waiting;
    }
    (shards, bytes, waiting)
}

/// Wait until every shard under `root` of a 4+2 chunk is at its home
/// under `map`, and nothing is held anywhere else.
async fn settle(root: &Path, map: &ClusterMap, when: &str) {
    let chunks: BTreeMap<[u8; 32], usize> =
        held(root).into_iter().map(|(_, c, _)| (c, 6)).collect();
    let settled = wait_for(Duration::from_secs(60), || async {
        misplaced(root, map, &chunks) == (0, 0)
    })
    .await;
    assert!(
        settled,
        "(missing, stale) {when}: {:?}",
        misplaced(root, map, &chunks)
    );
}

fn dir_bytes(dir: &Path) -> u64 {
    support::shards::shard_files(dir)
        .keys()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum()
}

/// A node killed and restarted before it is lost: none of what it held
/// is rebuilt elsewhere while it is away, reads go around it, writes made
/// meanwhile land on live nodes and reach it after its return, and every
/// object reads back right throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rebooting_node_costs_no_rebuild() {
    let root = tempfile::tempdir().unwrap();
    let (_turn, mut procs, map, store) = grid_of(root.path(), 600).await;
    let before = put(&store, "before", 24).await;
    // A shard handed off during the writes (a node slow to answer on a
    // loaded machine) is moved home by a rebuild; let that finish first,
    // so what follows counts only what the outage causes.
    settle(root.path(), &map, "after the writes").await;
    let victim = 2;
    let victim_id = procs[victim].id.clone();
    let held_bytes = dir_bytes(&procs[victim].dir);
    assert!(held_bytes > 0, "the victim holds nothing to test with");
    let held_before: BTreeSet<_> = held(root.path())
        .into_iter()
        .filter(|(n, _, _)| *n == victim_id)
        .collect();
    let (rebuilt_at_kill, rebuilt_bytes_at_kill, _) = repair_totals(&procs, &[victim]).await;

    procs[victim].kill9();
    let watcher = procs[0].client();
    wait_state(&watcher, &victim_id, NodeState::Down).await;
    // Several reconciliation passes while it is down: every live node
    // sees the victim's shards as waiting, and rebuilds none of them.
    let waited = wait_for(Duration::from_secs(30), || async {
        repair_totals(&procs, &[victim]).await.2 > 0
    })
    .await;
    assert!(waited, "no node reported shards waiting for the down node");
    // Nodes tell how long until the victim would be marked lost.
    let st = watcher.status().await.unwrap();
    let seen = st
        .unheard
        .iter()
        .find(|p| p.node_id == victim_id)
        .expect("the victim listed as unheard");
    assert!(seen.unheard_ms >= 1_000, "{seen:?}");
    assert!(
        seen.lost_in_ms > 500_000 && seen.lost_in_ms <= 600_000,
        "lost_after_secs is 600, one site out: {seen:?}"
    );
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (rebuilt, _, waiting) = repair_totals(&procs, &[victim]).await;
    let states = watcher.get_map().await.ok().flatten().map(|m| {
        m.nodes
            .iter()
            .map(|n| (n.id.clone(), n.state))
            .collect::<Vec<_>>()
    });
    // None of the victim's shards has a copy anywhere else.
    let copied: Vec<_> = held(root.path())
        .into_iter()
        .filter(|(n, c, i)| *n != victim_id && held_before.contains(&(victim_id.clone(), *c, *i)))
        .collect();
    assert!(
        copied.is_empty(),
        "shards of the down node rebuilt elsewhere: {copied:?} (node states now: {states:?})"
    );
    assert_eq!(
        rebuilt - rebuilt_at_kill,
        0,
        "shards rebuilt while the node was only down (node states now: {states:?})"
    );
    read_all(&store, &before).await;
    let during = put(&store, "during", 6).await;
    let during_bytes: u64 = during.iter().map(|(_, _, len)| len).sum();

    procs[victim].restart();
    let m = wait_state(&watcher, &victim_id, NodeState::Up).await;
    // Settled: every shard at its home under the map with the victim up,
    // nothing left anywhere else.
    settle(root.path(), &m, "after the return").await;
    let (_, rebuilt_bytes, _) = repair_totals(&procs, &[]).await;
    let rebuilt_bytes = rebuilt_bytes - rebuilt_bytes_at_kill;
    // Only what was written during the outage may have been rebuilt to
    // the victim; what it held was not copied anywhere.
    assert!(
        rebuilt_bytes <= during_bytes,
        "rebuilt {rebuilt_bytes} bytes; the outage wrote {during_bytes} bytes of objects, \
         and the node held {held_bytes} shard bytes ({waiting} shards were waiting)"
    );
    let held_after: BTreeSet<_> = held(root.path())
        .into_iter()
        .filter(|(n, _, _)| *n == victim_id)
        .collect();
    assert!(
        held_before.is_subset(&held_after),
        "the returning node lost shards it held"
    );
    read_all(&store, &before).await;
    read_all(&store, &during).await;
}

/// Two nodes on two sites down at once in a 4+2 bucket: the chunks with a
/// shard on each are left with no spare (4 of 6) and are rebuilt while
/// the nodes are only down; chunks with one shard on them keep their
/// spare and wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chunks_at_their_last_spare_are_rebuilt_at_once() {
    let root = tempfile::tempdir().unwrap();
    let (_turn, mut procs, map, store) = grid_of(root.path(), 600).await;
    let objects = put(&store, "o", 30).await;
    let dead = [0usize, 2];
    let dead_ids: Vec<String> = dead.iter().map(|d| procs[*d].id.clone()).collect();
    // Homes with every node up: which chunks the two nodes share.
    let g = Grid::new(map.clone(), ClientOptions::default());
    let chunks: BTreeSet<[u8; 32]> = held(root.path()).into_iter().map(|(_, c, _)| c).collect();
    let mut at_risk = BTreeMap::new();
    let mut spare = BTreeMap::new();
    for c in &chunks {
        let homes = g.shard_homes(&ChunkId(*c), 6).unwrap();
        let out: Vec<usize> = (0..6).filter(|i| dead_ids.contains(&homes[*i])).collect();
        match out.len() {
            2 => {
                at_risk.insert(*c, out);
            }
            1 => {
                spare.insert(*c, out);
            }
            _ => {}
        }
    }
    assert!(
        !at_risk.is_empty() && !spare.is_empty(),
        "the test needs both kinds of chunk: {} at risk, {} with a spare",
        at_risk.len(),
        spare.len()
    );

    for d in dead {
        procs[d].kill9();
    }
    let watcher = procs[1].client();
    for id in &dead_ids {
        wait_state(&watcher, id, NodeState::Down).await;
    }
    // Copies of the dead nodes' shards on live nodes.
    let on_live = || {
        held(root.path())
            .into_iter()
            .filter(|(n, _, _)| !dead_ids.contains(n))
            .map(|(_, c, i)| (c, i as usize))
            .collect::<BTreeSet<_>>()
    };
    let rebuilt = wait_for(Duration::from_secs(60), || async {
        let live = on_live();
        at_risk
            .iter()
            .all(|(c, slots)| slots.iter().all(|i| live.contains(&(*c, *i))))
    })
    .await;
    assert!(rebuilt, "chunks with no spare left were not rebuilt");
    // A few more passes: the others still wait.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let live = on_live();
    let copied: Vec<_> = spare
        .iter()
        .filter(|(c, slots)| slots.iter().any(|i| live.contains(&(**c, *i))))
        .collect();
    assert!(
        copied.is_empty(),
        "{} of {} chunks with a spare left were rebuilt anyway",
        copied.len(),
        spare.len()
    );
    read_all(&store, &objects).await;
}

/// A node unreachable past the lost delay goes down, then lost, and its
/// shards are rebuilt on the nodes placement names next.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_past_the_lost_delay_is_rebuilt() {
    let root = tempfile::tempdir().unwrap();
    let (_turn, mut procs, _, store) = grid_of(root.path(), 8).await;
    let objects = put(&store, "o", 16).await;
    let chunks: BTreeMap<[u8; 32], usize> = held(root.path())
        .into_iter()
        .map(|(_, c, _)| (c, 6))
        .collect();
    let victim = 5;
    let victim_id = procs[victim].id.clone();
    procs[victim].kill9();
    let watcher = procs[0].client();
    wait_state(&watcher, &victim_id, NodeState::Down).await;
    let m = wait_state(&watcher, &victim_id, NodeState::Lost).await;
    let live_root = tempfile::tempdir().unwrap();
    // The victim's folder still holds its files: judge placement on the
    // live nodes' folders only.
    for p in &procs {
        if p.id != victim_id {
            std::os::unix::fs::symlink(&p.dir, live_root.path().join(&p.id)).unwrap();
        }
    }
    let restored = wait_for(Duration::from_secs(60), || async {
        misplaced(live_root.path(), &m, &chunks).0 == 0
    })
    .await;
    assert!(
        restored,
        "(missing, stale) once lost: {:?}",
        misplaced(live_root.path(), &m, &chunks)
    );
    read_all(&store, &objects).await;
}
