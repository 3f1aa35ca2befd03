//! Storage audits on an in-process grid (real metadata store, real shard files,
//! real RPC on loopback): a node proves slices of the shards it holds
//! against the checksums writers recorded, and an honest grid passes its
//! audits round after round. The farm that drops shards, on real node
//! processes, is in tests/hostile_farm.rs.

mod support;

use cluster::{AuditConfig, Auditor, ErasureSpec, ObjectStore, PutOptions, StoreConfig};
use grid::RpcError;
use metadata::model::{ClusterMap, NodeState};
use rand::{RngCore, SeedableRng};
use std::time::Duration;
use storage_node::config::RepairConfig;
use support::grid::TestGrid;
use support::objects::{store_on, Data, OWNER};

async fn put_objects(store: &ObjectStore, bucket: &str, count: u64) -> Vec<(String, [u8; 32])> {
    let mut out = Vec::new();
    for i in 0..count {
        let len = 300_000 + i * 97_000;
        let key = format!("obj/{i:03}");
        store
            .put_object(
                bucket,
                &key,
                Data::new(len, 500 + i).stream(),
                PutOptions::default(),
            )
            .await
            .unwrap();
        out.push((key, Data::sha256(len, 500 + i)));
    }
    out
}

async fn node_map(grid: &TestGrid, node_id: &str) -> ClusterMap {
    let g = grid.grid();
    g.client(node_id).unwrap().get_map().await.unwrap().unwrap()
}

fn healing() -> RepairConfig {
    RepairConfig {
        reconcile_interval_secs: 1,
        scrub_interval_secs: 0,
        heartbeat_secs: 1,
        down_after_secs: 3,
        anti_entropy_interval_secs: 1,
        ..RepairConfig::default()
    }
}

/// The node side of a challenge, through the RPC: a held shard proves any
/// slice, and the proof checks against the shard's checksum only; an
/// absent shard is "not found"; a slice past the end is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_proves_slices_of_what_it_holds() {
    let grid = TestGrid::start(1, 2).await;
    let g = grid.grid();
    let mut sealer = codec::Sealer::new(codec::SealConfig::new(
        codec::ErasureParams::new(2, 1).unwrap(),
    ))
    .unwrap();
    let mut data = vec![0u8; 300_000];
    rand::rngs::StdRng::seed_from_u64(3).fill_bytes(&mut data);
    let sealed = sealer.seal(&codec::DomainKey::new([3; 32]), &data).unwrap();
    let node = g.client("s0n0").unwrap();
    let key = metadata::ShardKey::new(sealed.id().0, 1).unwrap();
    let shard = sealed.shard(1);
    node.put_shard(&key, shard.clone().into()).await.unwrap();
    let root = codec::shard::ShardHeader::parse(&shard).unwrap().checksum;
    let total = codec::audit::checksummed_len(shard.len() as u64).unwrap();
    for (offset, len) in [(0, 4096), (total - 100, 100), (12_345, 1)] {
        let proof = node.prove_shard(&key, offset, len).await.unwrap();
        let got = codec::audit::verify_slice(&proof, &root, offset, len).unwrap();
        assert_eq!(
            got,
            codec::audit::checksummed(&shard).unwrap()[offset as usize..][..len as usize]
        );
        // Another shard's checksum refuses it.
        let other = codec::shard::ShardHeader::parse(&sealed.shard(0))
            .unwrap()
            .checksum;
        assert!(codec::audit::verify_slice(&proof, &other, offset, len).is_err());
    }
    let absent = metadata::ShardKey::new(sealed.id().0, 0).unwrap();
    assert!(matches!(
        node.prove_shard(&absent, 0, 10).await,
        Err(RpcError::NotFound)
    ));
    assert!(matches!(
        node.prove_shard(&key, total, 10).await,
        Err(RpcError::Rejected { status: 416, .. })
    ));
    assert!(matches!(
        node.prove_shard(&key, 0, codec::audit::MAX_SLICE_LEN + 1)
            .await,
        Err(RpcError::Rejected { status: 400, .. })
    ));
}

/// Every node of an honest grid passes every challenge, round after round.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_honest_grid_passes_its_audits() {
    let grid = TestGrid::start_healing(3, 2, healing()).await;
    let store = store_on(&grid, StoreConfig::default());
    store
        .create_bucket("honest", OWNER, Some(ErasureSpec::new(3, 2)))
        .await
        .unwrap();
    put_objects(&store, "honest", 8).await;
    let auditor = Auditor::new(
        store.clone(),
        AuditConfig {
            samples_per_node: 16,
            fail_threshold: 1,
            settle: Duration::ZERO,
            ..AuditConfig::default()
        },
    );
    for _ in 0..5 {
        let r = auditor.audit_once().await;
        assert_eq!(r.nodes.len(), 6, "{r:?}");
        for n in &r.nodes {
            assert_eq!(n.failed, 0, "{n:?}");
            assert_eq!(n.rechecking, 0, "{n:?}");
            assert!(n.passed > 0, "{n:?}");
            assert!(!n.untrusted);
        }
        assert_eq!(r.withheld, None);
    }
    let m = node_map(&grid, "s0n0").await;
    assert!(m.nodes.iter().all(|n| n.state == NodeState::Up as i32));
    let stats = store.audit_stats().snapshot();
    assert_eq!(stats.len(), 6);
    assert!(stats
        .values()
        .all(|(passed, failed)| *passed > 0 && *failed == 0));
    assert!(gateway::metrics::audit_text(&store).contains("result=\"passed\""));
}

// The farm that drops a tenth of its shards, on real node processes, is
// in tests/hostile_farm.rs with the other attacks.
