//! Chunks over an in-process grid of 6 nodes on 3 sites: placement, hand-
//! off when nodes are down, the write quorum, degraded and corrupt reads.

mod support;

use ::grid::chunk_io::{get_chunk, put_chunk, ChunkError};
use codec::{DomainKey, ErasureParams, SealConfig, SealedChunk, Sealer};
use std::collections::HashMap;
use support::grid::TestGrid;
use support::random_bytes;

fn domain() -> DomainKey {
    DomainKey::new([7; 32])
}

fn seal(len: usize, k: usize, m: usize, seed: u64) -> (Vec<u8>, SealedChunk) {
    let data = random_bytes(len, seed);
    let mut sealer = Sealer::new(SealConfig::new(ErasureParams::new(k, m).unwrap())).unwrap();
    let sealed = sealer.seal(&domain(), &data).unwrap();
    (data, sealed)
}

fn sites_of(grid: &TestGrid, holders: &[String]) -> HashMap<String, usize> {
    let mut per_site = HashMap::new();
    for h in holders {
        let site = grid.map.nodes[grid.index_of(h)].site.clone();
        *per_site.entry(site).or_default() += 1;
    }
    per_site
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_spread_over_sites_and_read_back() {
    let tg = TestGrid::start(3, 2).await;
    let grid = tg.grid();
    for seed in 0..5 {
        let (data, sealed) = seal(700_000, 4, 2, seed);
        let w = put_chunk(&grid, &sealed).await.unwrap();
        assert!(w.handed_off.is_empty());
        let mut distinct = w.holders.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), 6, "one shard per node");
        assert!(sites_of(&tg, &w.holders).values().all(|&c| c == 2));
        let (back, report) = get_chunk(&grid, &domain(), &sealed.id(), 4, 2)
            .await
            .unwrap();
        assert_eq!(back, data);
        assert_eq!(report, Default::default(), "a clean read reports nothing");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_hand_off_around_down_nodes_and_refuse_below_quorum() {
    let mut tg = TestGrid::start(3, 2).await;
    let grid = tg.grid();
    let (data, sealed) = seal(500_000, 4, 2, 11);
    // Kill two of this chunk's placement nodes on different sites.
    let placement: Vec<String> = metadata::placement::chunk_nodes(&tg.map, &sealed.id().0, 6)
        .unwrap()
        .iter()
        .map(|n| n.id.clone())
        .collect();
    tg.kill(&placement[0]).await;
    tg.kill(&placement[5]).await;
    let w = put_chunk(&grid, &sealed).await.unwrap();
    assert_eq!(w.handed_off.len(), 2, "{w:?}");
    assert!(!w.holders.contains(&placement[0]) && !w.holders.contains(&placement[5]));
    let mut counts: HashMap<&String, usize> = HashMap::new();
    for h in &w.holders {
        *counts.entry(h).or_default() += 1;
    }
    assert!(
        counts.values().all(|&c| c <= 2),
        "at most m shards per node: {counts:?}"
    );
    let (back, report) = get_chunk(&grid, &domain(), &sealed.id(), 4, 2)
        .await
        .unwrap();
    assert_eq!(back, data);
    assert!(report.missing.len() <= 2, "{report:?}");

    // Two nodes left: six shards would put three on a node, more than m.
    let alive: Vec<String> = tg
        .map
        .nodes
        .iter()
        .map(|n| n.id.clone())
        .filter(|id| id != &placement[0] && id != &placement[5])
        .collect();
    tg.kill(&alive[0]).await;
    tg.kill(&alive[1]).await;
    let (_, other) = seal(300_000, 4, 2, 12);
    let err = put_chunk(&grid, &other).await.unwrap_err();
    assert!(matches!(err, ChunkError::Quorum { .. }), "{err}");
    assert!(
        err.to_string().contains("write quorum not reached"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_survive_m_lost_nodes_and_report_them() {
    let mut tg = TestGrid::start(3, 2).await;
    let grid = tg.grid();
    let (data, sealed) = seal(900_000, 4, 2, 21);
    let w = put_chunk(&grid, &sealed).await.unwrap();
    // Lose the holders of data shards 0 and 2.
    tg.kill(&w.holders[0]).await;
    tg.kill(&w.holders[2]).await;
    let (back, report) = get_chunk(&grid, &domain(), &sealed.id(), 4, 2)
        .await
        .unwrap();
    assert_eq!(back, data);
    assert_eq!(report.missing, vec![0, 2]);
    // A third loss is one too many for 4+2.
    tg.kill(&w.holders[4]).await;
    let err = get_chunk(&grid, &domain(), &sealed.id(), 4, 2)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ChunkError::Unreadable {
                valid: 3,
                needed: 4,
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_rotten_on_disk_is_rejected_and_reported() {
    let tg = TestGrid::start(3, 2).await;
    let grid = tg.grid();
    let (data, sealed) = seal(400_000, 4, 2, 31);
    let w = put_chunk(&grid, &sealed).await.unwrap();
    let victim = &w.holders[1];
    let key = metadata::ShardKey::new(sealed.id().0, 1).unwrap();
    let path = tg.node(victim).node.store.shard_path(&key);
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x40;
    std::fs::write(&path, bytes).unwrap();

    let (back, report) = get_chunk(&grid, &domain(), &sealed.id(), 4, 2)
        .await
        .unwrap();
    assert_eq!(back, data);
    assert_eq!(report.corrupt, vec![(1, victim.clone())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_during_a_write_costs_a_hand_off_not_the_write() {
    let mut tg = TestGrid::start(3, 2).await;
    let grid = std::sync::Arc::new(tg.grid());
    let (data, sealed) = seal(8 << 20, 4, 2, 41);
    let placement: Vec<String> = metadata::placement::chunk_nodes(&tg.map, &sealed.id().0, 6)
        .unwrap()
        .iter()
        .map(|n| n.id.clone())
        .collect();
    let sealed = std::sync::Arc::new(sealed);
    let put = {
        let (g, s) = (grid.clone(), sealed.clone());
        tokio::spawn(async move { put_chunk(&g, &s).await })
    };
    tg.kill(&placement[3]).await;
    let w = put.await.unwrap().unwrap();
    let (back, _) = get_chunk(&grid, &domain(), &sealed.id(), 4, 2)
        .await
        .unwrap();
    assert_eq!(back, data);
    assert_eq!(w.holders.len(), 6);
}
