//! A node process killed or stopped in the middle of writes: nothing it
//! acknowledged is lost, nothing half-written becomes visible.

mod support;

use ::grid::node_api as api;
use ::grid::node_client::read_response;
use bytes::Bytes;
use codec::SealedChunk;
use http::Method;
use metadata::ShardKey;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use storage_node::{ShardStore, ShardStoreConfig};
use support::*;

/// Start a streamed shard put, send the first half of the body, and hand
/// back the sender for the rest plus the in-flight response.
async fn half_sent_put(
    node: &NodeProc,
    chunk: &SealedChunk,
    index: usize,
) -> (
    tokio::sync::mpsc::Sender<Result<Bytes, ::grid::node_client::BodyError>>,
    Bytes,
    tokio::task::JoinHandle<Result<Bytes, ::grid::RpcError>>,
) {
    let shard = Bytes::from(chunk.shard(index));
    let path = api::shard_path(&shard_key(chunk, index));
    let (tx, stream) = channel_body();
    let req = request(&node.addr, Method::PUT, &path, &shard)
        .body(stream)
        .unwrap();
    let c = node.client();
    let pending = tokio::spawn(async move { read_response(c.send(req).await?).await });
    let half = shard.len() / 2;
    tx.send(Ok(shard.slice(..half))).await.unwrap();
    // Go on only once the node is writing it: its temp file exists.
    let tmp = node.dir.join("data/tmp");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::fs::read_dir(&tmp).unwrap().next().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "the put never started"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (tx, shard.slice(half..), pending)
}

/// Shards a node acknowledged, with their bytes.
type Acked = Vec<(ShardKey, Vec<u8>)>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_shard_writes_loses_no_acknowledged_shard() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = NodeProc::start(dir.path(), "");
    let acked: Arc<Mutex<Acked>> = Arc::default();

    // Four writers streaming 1 MiB shards as fast as the node takes them.
    let mut writers = Vec::new();
    for w in 0..4u64 {
        let c = node.client();
        let acked = acked.clone();
        writers.push(tokio::spawn(async move {
            for i in 0.. {
                let chunk = sealed(1 << 20, 1, 0, w * 10_000 + i);
                let k = shard_key(&chunk, 0);
                match c.put_shard(&k, chunk.shard(0).into()).await {
                    Ok(()) => acked.lock().unwrap().push((k, chunk.shard(0))),
                    Err(_) => return,
                }
            }
        }));
    }
    // And one put whose body stops half way, so a partial shard is on the
    // node's disk at the moment of the kill.
    let partial = sealed(1 << 20, 1, 0, 999_999);
    let (_tx, _rest, pending) = half_sent_put(&node, &partial, 0).await;

    while acked.lock().unwrap().len() < 24 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    node.kill9();
    for w in writers {
        w.await.unwrap();
    }
    assert!(pending.await.unwrap().is_err(), "the cut put was not acked");
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 24);

    node.restart();
    assert!(
        node.log()
            .contains("removed partial shards left by a crash"),
        "{}",
        node.log()
    );
    let c = node.client();
    for (k, shard) in &acked {
        assert_eq!(
            c.get_shard(k, None).await.unwrap(),
            *shard,
            "acknowledged shard {k} lost or damaged"
        );
    }
    assert_eq!(
        c.has_shards(&[shard_key(&partial, 0)]).await.unwrap(),
        vec![0]
    );
    let held = c.status().await.unwrap().shard_count;
    // Writes in flight at the kill may have completed without their ack
    // arriving: at most one per writer.
    assert!(
        held >= acked.len() as u64 && held <= acked.len() as u64 + 4,
        "{held} shards held, {} acked",
        acked.len()
    );
    node.kill9();

    // Every shard file on disk is whole and verifies; no temp file is left.
    let store = ShardStore::open(ShardStoreConfig::new(dir.path().join("data"))).unwrap();
    let mut n = 0;
    for k in store.iter().unwrap() {
        store.verify(&k.unwrap()).unwrap();
        n += 1;
    }
    assert_eq!(n, held);
    assert_eq!(
        std::fs::read_dir(dir.path().join("data/tmp"))
            .unwrap()
            .count(),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_writes_in_flight_then_exits() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = NodeProc::start(dir.path(), "");
    let chunk = sealed(1 << 20, 2, 1, 77);
    let (tx, rest, pending) = half_sent_put(&node, &chunk, 2).await;

    node.signal(libc::SIGTERM);
    // The node soon stops accepting connections...
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while node.client().status().await.is_ok() {
        assert!(std::time::Instant::now() < deadline, "still accepting");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(node.log().contains("SIGTERM received"), "{}", node.log());
    // ...but the write already under way completes and is acknowledged.
    tx.send(Ok(rest)).await.unwrap();
    drop(tx);
    pending.await.unwrap().unwrap();
    let status = node.wait(Duration::from_secs(20));
    assert!(status.success(), "{status:?}\n{}", node.log());

    node.restart();
    let c = node.client();
    assert_eq!(
        c.get_shard(&shard_key(&chunk, 2), None).await.unwrap(),
        chunk.shard(2)
    );
}

#[test]
fn a_data_dir_belongs_to_one_node_id() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = NodeProc::start(dir.path(), "");
    node.signal(libc::SIGTERM);
    assert!(node.wait(Duration::from_secs(20)).success());

    let other = dir.path().join("other.toml");
    std::fs::write(
        &other,
        format!(
            "node_id = \"n2\"\nlisten = \"127.0.0.1:0\"\ndata_dir = {:?}\n",
            dir.path().join("data")
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gridstore"))
        .args(["node", "--config"])
        .arg(&other)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("belongs to node \"n1\""), "{err}");
}

#[test]
fn bad_configs_fail_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("listen = \"127.0.0.1:0\"\ndata_dir = \"/tmp/x\"\n", "node_id"),
        ("node_id = \"a/b\"\nlisten = \"127.0.0.1:0\"\ndata_dir = \"/tmp/x\"\n", "node_id"),
        ("node_id = \"a\"\nlisten = \"nowhere\"\ndata_dir = \"/tmp/x\"\n", "listen"),
        ("node_id = \"a\"\nlisten = \"127.0.0.1:0\"\ndata_dir = \"/tmp/x\"\nquota = 5\n", "unknown field"),
        // A retired setting is set aside, the rest still checked as strictly.
        ("node_id = \"a\"\nlisten = \"127.0.0.1:0\"\ndata_dir = \"/tmp/x\"\ncluster_secret = \"0123456789abcdefXX\"\nquota = 5\n", "unknown field `quota`"),
        ("node_id = \"a\"\nlisten = \"nowhere\"\ndata_dir = \"/tmp/x\"\ncluster_secret_file = \"/nonexistent\"\n", "listen"),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let cfg = dir.path().join(format!("c{i}.toml"));
        std::fs::write(&cfg, text).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_gridstore"))
            .args(["node", "--config"])
            .arg(&cfg)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{text}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{want:?} not in {err}");
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gridstore"))
        .args(["node", "--config", "/nonexistent/node.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));
}
