//! Garbage collection of unreferenced shards on a real in-process node
//! (metadata store and shard files in a temp dir, RPC on loopback), references and
//! shards written through the node RPC the way gateways write them. Passes
//! are driven by their `now_ms` argument, never by the clock, except for
//! the one test of the background loop.

use ::grid::{ClientOptions, NodeClient};
use codec::{DomainKey, ErasureParams, SealConfig, SealedChunk, Sealer};
use metadata::model::{ChunkReference, ErasureSpec, Referrer, BUCKET_ID_LEN, VERSION_ID_LEN};
use metadata::ShardKey;
use rand::{RngCore, SeedableRng};
use std::time::{Duration, Instant};
use storage_node::config::IoChoice;
use storage_node::daemon::LocalNode;
use storage_node::{GcReport, NodeConfig};

/// A pass's idea of "now" at the start of each test.
const T0: u64 = 1_700_000_000_000;
const GRACE: u64 = 60_000;

struct TestNode {
    local: LocalNode,
    client: NodeClient,
    _dir: tempfile::TempDir,
}

fn config(dir: &std::path::Path, gc_interval_secs: u64, gc_grace_secs: u64) -> NodeConfig {
    NodeConfig {
        node_id: "gc1".into(),
        site: "farm-a".into(),
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.join("data"),
        quota_bytes: None,
        reserve_bytes: 0,
        io: IoChoice::Auto,
        shutdown_grace_secs: 5,
        gc_grace_secs,
        gc_interval_secs,
        repair: storage_node::config::RepairConfig::manual(),
        jobs: Default::default(),
    }
}

/// A node whose only garbage collection passes are the test's own.
async fn start() -> TestNode {
    start_with(0, 86_400).await
}

async fn start_with(gc_interval_secs: u64, gc_grace_secs: u64) -> TestNode {
    let dir = tempfile::tempdir().unwrap();
    let local = LocalNode::start(&config(dir.path(), gc_interval_secs, gc_grace_secs))
        .await
        .unwrap();
    let client = NodeClient::new(
        local.addr.to_string(),
        &local.node.identity.key().0,
        ClientOptions::default(),
    );
    TestNode {
        local,
        client,
        _dir: dir,
    }
}

/// A real sealed chunk (2 data + 1 parity shards) of `len` random bytes.
fn sealed(len: usize, seed: u64) -> SealedChunk {
    let mut data = vec![0u8; len];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut data);
    Sealer::new(SealConfig::new(ErasureParams::new(2, 1).unwrap()))
        .unwrap()
        .seal(&DomainKey::new([7; 32]), &data)
        .unwrap()
}

fn keys(c: &SealedChunk) -> Vec<ShardKey> {
    (0..c.shard_count())
        .map(|i| ShardKey::new(c.id().0, i).unwrap())
        .collect()
}

fn bytes_of(c: &SealedChunk, indices: impl IntoIterator<Item = usize>) -> u64 {
    indices.into_iter().map(|i| c.shard(i).len() as u64).sum()
}

async fn put(client: &NodeClient, c: &SealedChunk, indices: impl IntoIterator<Item = usize>) {
    for i in indices {
        client
            .put_shard(&ShardKey::new(c.id().0, i).unwrap(), c.shard(i).into())
            .await
            .unwrap();
    }
}

async fn put_all(client: &NodeClient, c: &SealedChunk) {
    put(client, c, 0..c.shard_count()).await;
}

/// How many of the chunk's shards the node holds.
async fn held(client: &NodeClient, c: &SealedChunk) -> usize {
    let lens = client.has_shards(&keys(c)).await.unwrap();
    lens.iter().filter(|&&l| l > 0).count()
}

fn reference(c: &SealedChunk, key: &str) -> ChunkReference {
    let mut r = ChunkReference {
        chunk_id: c.id().0.to_vec(),
        erasure: Some(ErasureSpec::new(2, 1)),
        shard_len: c.shard(0).len() as u32,
        referrer: Some(Referrer {
            bucket_id: vec![1; BUCKET_ID_LEN],
            key_hash: blake3::hash(key.as_bytes()).as_bytes()[..16].to_vec(),
            version: vec![2; VERSION_ID_LEN],
            part_number: 0,
        }),
        created_ms: 5,
        ..ChunkReference::default()
    };
    metadata::signing::OwnerKey::from_seed(&[42; 32]).sign_reference(&mut r);
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreferenced_shards_outlive_the_grace_then_go() {
    let n = start().await;
    let c = sealed(5_000, 1);
    put_all(&n.client, &c).await;

    let first = n.local.gc_pass(T0, GRACE).await.unwrap();
    assert_eq!(
        first,
        GcReport {
            chunks_seen: 1,
            unreferenced: 1,
            deleted_shards: 0,
            freed_bytes: 0
        }
    );
    assert_eq!(held(&n.client, &c).await, 3);

    let before_grace = n.local.gc_pass(T0 + GRACE - 1, GRACE).await.unwrap();
    assert_eq!(before_grace.deleted_shards, 0);
    assert_eq!(held(&n.client, &c).await, 3);

    let after_grace = n.local.gc_pass(T0 + GRACE, GRACE).await.unwrap();
    assert_eq!(after_grace.deleted_shards, 3);
    assert_eq!(held(&n.client, &c).await, 0);
    assert_eq!(n.client.status().await.unwrap().shard_count, 0);

    let empty = n.local.gc_pass(T0 + 2 * GRACE, GRACE).await.unwrap();
    assert_eq!(empty, GcReport::default());
    n.local.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn referenced_shards_are_never_deleted() {
    let n = start().await;
    let c = sealed(5_000, 2);
    // As a gateway writes: references first, then the shards.
    n.client.refs_add(vec![reference(&c, "a")]).await.unwrap();
    put_all(&n.client, &c).await;

    for (now, grace) in [(T0, GRACE), (T0 + GRACE, GRACE), (T0 + 100 * GRACE, 0)] {
        let r = n.local.gc_pass(now, grace).await.unwrap();
        assert_eq!(r.chunks_seen, 1);
        assert_eq!(r.unreferenced, 0);
        assert_eq!(r.deleted_shards, 0);
        assert_eq!(held(&n.client, &c).await, 3);
    }
    n.local.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grace_starts_when_the_last_reference_goes() {
    let n = start().await;
    let c = sealed(5_000, 3);
    let (a, b) = (reference(&c, "a"), reference(&c, "b"));
    n.client.refs_add(vec![a.clone(), b.clone()]).await.unwrap();
    put_all(&n.client, &c).await;
    n.local.gc_pass(T0, GRACE).await.unwrap();

    n.client.refs_remove(vec![a]).await.unwrap();
    let one_left = n.local.gc_pass(T0 + 10 * GRACE, GRACE).await.unwrap();
    assert_eq!(one_left.unreferenced, 0);
    assert_eq!(held(&n.client, &c).await, 3);

    // Long after the shards were stored, but the grace counts from the
    // first pass that finds no reference.
    n.client.refs_remove(vec![b]).await.unwrap();
    let t1 = T0 + 20 * GRACE;
    let marked = n.local.gc_pass(t1, GRACE).await.unwrap();
    assert_eq!((marked.unreferenced, marked.deleted_shards), (1, 0));
    assert_eq!(held(&n.client, &c).await, 3);

    let within = n.local.gc_pass(t1 + GRACE - 1, GRACE).await.unwrap();
    assert_eq!(within.deleted_shards, 0);
    assert_eq!(held(&n.client, &c).await, 3);

    let past = n.local.gc_pass(t1 + GRACE, GRACE).await.unwrap();
    assert_eq!(past.deleted_shards, 3);
    assert_eq!(held(&n.client, &c).await, 0);
    n.local.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reference_added_after_marking_saves_the_chunk() {
    let n = start().await;
    let c = sealed(5_000, 4);
    put_all(&n.client, &c).await;
    n.local.gc_pass(T0, GRACE).await.unwrap();

    // A gateway deduplicating against the marked chunk.
    let r = reference(&c, "a");
    n.client.refs_add(vec![r.clone()]).await.unwrap();
    for now in [T0 + GRACE, T0 + 10 * GRACE] {
        let pass = n.local.gc_pass(now, GRACE).await.unwrap();
        assert_eq!((pass.unreferenced, pass.deleted_shards), (0, 0));
        assert_eq!(held(&n.client, &c).await, 3);
    }

    // Losing the reference again starts a whole new grace.
    n.client.refs_remove(vec![r]).await.unwrap();
    let t2 = T0 + 20 * GRACE;
    assert_eq!(n.local.gc_pass(t2, GRACE).await.unwrap().deleted_shards, 0);
    assert_eq!(held(&n.client, &c).await, 3);
    assert_eq!(
        n.local
            .gc_pass(t2 + GRACE, GRACE)
            .await
            .unwrap()
            .deleted_shards,
        3
    );
    assert_eq!(held(&n.client, &c).await, 0);
    n.local.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reference_added_and_removed_between_passes_restarts_the_grace() {
    let n = start().await;
    let c = sealed(5_000, 5);
    put_all(&n.client, &c).await;
    n.local.gc_pass(T0, GRACE).await.unwrap();

    // Referenced for a while no pass saw: the object may have been read
    // moments ago, so the chunk gets a full grace from the next pass.
    let r = reference(&c, "a");
    n.client.refs_add(vec![r.clone()]).await.unwrap();
    n.client.refs_remove(vec![r]).await.unwrap();

    let t1 = T0 + GRACE;
    let pass = n.local.gc_pass(t1, GRACE).await.unwrap();
    assert_eq!((pass.unreferenced, pass.deleted_shards), (1, 0));
    assert_eq!(held(&n.client, &c).await, 3);
    assert_eq!(
        n.local
            .gc_pass(t1 + GRACE, GRACE)
            .await
            .unwrap()
            .deleted_shards,
        3
    );
    n.local.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_and_metrics_count_what_was_freed() {
    let n = start().await;
    // A node usually holds one or two shards of a chunk, not all.
    let whole = sealed(5_000, 6);
    let kept = sealed(7_000, 7);
    let one = sealed(20_000, 8);
    let two = sealed(900, 9);
    put_all(&n.client, &whole).await;
    n.client
        .refs_add(vec![reference(&kept, "k")])
        .await
        .unwrap();
    put_all(&n.client, &kept).await;
    put(&n.client, &one, [1]).await;
    put(&n.client, &two, [0, 2]).await;

    let first = n.local.gc_pass(T0, GRACE).await.unwrap();
    assert_eq!(
        first,
        GcReport {
            chunks_seen: 4,
            unreferenced: 3,
            deleted_shards: 0,
            freed_bytes: 0
        }
    );

    let freed = bytes_of(&whole, 0..3) + bytes_of(&one, [1]) + bytes_of(&two, [0, 2]);
    let second = n.local.gc_pass(T0 + GRACE, GRACE).await.unwrap();
    assert_eq!(
        second,
        GcReport {
            chunks_seen: 4,
            unreferenced: 3,
            deleted_shards: 6,
            freed_bytes: freed
        }
    );
    let status = n.client.status().await.unwrap();
    assert_eq!(status.shard_count, 3);
    assert_eq!(status.used_bytes, bytes_of(&kept, 0..3));

    let metrics = n.local.node.metrics.render();
    assert!(
        metrics.contains("gridstore_node_gc_deleted_shards_total 6\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!("gridstore_node_gc_freed_bytes_total {freed}\n")),
        "{metrics}"
    );

    let third = n.local.gc_pass(T0 + 2 * GRACE, GRACE).await.unwrap();
    assert_eq!(
        third,
        GcReport {
            chunks_seen: 1,
            unreferenced: 0,
            deleted_shards: 0,
            freed_bytes: 0
        }
    );
    n.local.stop().await;
}

/// A gateway adds a reference and then asks whether the node holds the
/// chunk's shards (dedup), while a pass is about to delete them. Whichever
/// wins, the gateway must never see shards that are deleted afterwards:
/// it would skip the upload and the object would lose the chunk.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reference_racing_a_pass_never_loses_a_deduplicated_chunk() {
    let n = start().await;
    let (mut kept, mut collected) = (0, 0);
    for seed in 0..40u64 {
        let c = sealed(3_000, 100 + seed);
        put_all(&n.client, &c).await;
        // Marked long ago: the next pass may delete it.
        n.local.gc_pass(T0, GRACE).await.unwrap();

        let client = n.client.clone();
        let r = reference(&c, "racer");
        let ks = keys(&c);
        let gateway = tokio::spawn(async move {
            client.refs_add(vec![r]).await.unwrap();
            client.has_shards(&ks).await.unwrap()
        });
        let pass = n.local.gc_pass(T0 + GRACE, GRACE);
        let (seen, pass) = tokio::join!(gateway, pass);
        let (seen, pass) = (seen.unwrap(), pass.unwrap());

        let present = seen.iter().filter(|&&l| l > 0).count();
        match present {
            3 => {
                kept += 1;
                assert_eq!(pass.deleted_shards, 0, "seed {seed}");
                // Still there, now and after any later pass.
                n.local.gc_pass(T0 + 50 * GRACE, 0).await.unwrap();
                assert_eq!(held(&n.client, &c).await, 3, "seed {seed}");
            }
            0 => {
                collected += 1;
                assert_eq!(pass.deleted_shards, 3, "seed {seed}");
                // The gateway uploads again, and that copy stays.
                put_all(&n.client, &c).await;
                n.local.gc_pass(T0 + 50 * GRACE, 0).await.unwrap();
                assert_eq!(held(&n.client, &c).await, 3, "seed {seed}");
            }
            _ => panic!("seed {seed}: the gateway saw a chunk half deleted: {seen:?}"),
        }
    }
    eprintln!("race outcomes: {kept} kept, {collected} collected first");
    n.local.stop().await;
}

/// The daemon's own loop (a pass every second, no grace): the unreferenced
/// chunk goes within two passes, the referenced one stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_background_loop_collects() {
    let n = start_with(1, 0).await;
    let garbage = sealed(5_000, 10);
    let live = sealed(5_000, 11);
    n.client
        .refs_add(vec![reference(&live, "a")])
        .await
        .unwrap();
    put_all(&n.client, &live).await;
    put_all(&n.client, &garbage).await;

    let deadline = Instant::now() + Duration::from_secs(60);
    while held(&n.client, &garbage).await > 0 {
        assert!(
            Instant::now() < deadline,
            "the loop did not collect in 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(held(&n.client, &live).await, 3);
    let metrics = n.local.node.metrics.render();
    assert!(
        metrics.contains("gridstore_node_gc_deleted_shards_total 3\n"),
        "{metrics}"
    );
    n.local.stop().await;
}

#[test]
fn gc_settings_parse_with_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.toml");
    let base = "node_id = \"n1\"\nlisten = \"127.0.0.1:0\"\ndata_dir = \"d\"\n";
    std::fs::write(&path, base).unwrap();
    let cfg = NodeConfig::load(&path).unwrap();
    assert_eq!((cfg.gc_grace_secs, cfg.gc_interval_secs), (86_400, 3_600));

    std::fs::write(
        &path,
        format!("{base}gc_grace_secs = 600\ngc_interval_secs = 0\n"),
    )
    .unwrap();
    let cfg = NodeConfig::load(&path).unwrap();
    assert_eq!((cfg.gc_grace_secs, cfg.gc_interval_secs), (600, 0));

    std::fs::write(&path, format!("{base}gc_grace = 600\n")).unwrap();
    assert!(NodeConfig::load(&path).is_err());

    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/node.example.toml");
    let cfg = NodeConfig::load(&example).unwrap();
    assert_eq!((cfg.gc_grace_secs, cfg.gc_interval_secs), (86_400, 3_600));
}

#[test]
fn retired_secret_settings_are_set_aside() {
    let base = "node_id = \"n1\"\nlisten = \"127.0.0.1:0\"\ndata_dir = \"d\"\n";
    let old = format!(
        "{base}cluster_secret = \"test-cluster-secret-0123456789\"\n\
         cluster_secret_file = \"/etc/gridstore/cluster.secret\"\ngc_grace_secs = 600\n"
    );
    let (cfg, retired) = NodeConfig::parse(&old).unwrap();
    assert_eq!(retired, ["cluster_secret", "cluster_secret_file"]);
    assert_eq!((cfg.node_id.as_str(), cfg.gc_grace_secs), ("n1", 600));
    let (_, retired) = NodeConfig::parse(base).unwrap();
    assert!(retired.is_empty());
    // Only those: other unknown keys are refused as before, by name.
    let err = NodeConfig::parse(&format!("{old}gc_grace = 1\n")).unwrap_err();
    assert!(err.contains("gc_grace"), "{err}");
}
