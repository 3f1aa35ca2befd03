//! The object layer under failure and inspection: nodes killed in the
//! middle of a put and of a get, dedup measured in bytes on the nodes,
//! what a node's disk holds, customer keys, damaged shards reported for
//! repair, and garbage collection after deletes and after a crashed put.

mod support;

use bytes::Bytes;
use cluster::{
    CustomerKey, Error, GetOptions, ListVersionsParams, PutOptions, RepairHint, StoreConfig,
    VersioningState,
};
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::time::Duration;
use support::grid::TestGrid;
use support::objects::{read_all, sha256_of, store_on, stored_bytes, stream_of, Data, OWNER};

type Piece = Result<Bytes, Infallible>;

/// A body the test feeds piece by piece.
fn fed_body() -> (
    tokio::sync::mpsc::Sender<Piece>,
    impl futures_util::Stream<Item = Piece> + Unpin + Send,
) {
    let (tx, rx) = tokio::sync::mpsc::channel::<Piece>(4);
    let stream =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|p| (p, rx)) });
    (tx, Box::pin(stream))
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            files_under(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn is_shard_file(p: &Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.split_once('.'))
        .is_some_and(|(h, i)| h.len() == 64 && i.parse::<u32>().is_ok())
}

fn shard_files(tg: &TestGrid, node: &str) -> Vec<PathBuf> {
    let mut all = Vec::new();
    files_under(&tg.dir.path().join(node), &mut all);
    all.retain(|p| is_shard_file(p));
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_killed_in_the_middle_of_a_put_and_of_a_get() {
    let size: u64 = 40 << 20;
    let mut tg = TestGrid::start(3, 2).await;
    let s = store_on(&tg, StoreConfig::default());
    s.create_bucket("faults", OWNER, None).await.unwrap();

    // Put: both nodes of site 1 die after 12 MiB have gone in.
    let (tx, body) = fed_body();
    let writer = s.clone();
    let put = tokio::spawn(async move {
        writer
            .put_object("faults", "survivor", body, PutOptions::default())
            .await
    });
    let mut data = Data::new(size, 3);
    let mut sent = 0u64;
    let mut killed = false;
    while let Some(p) = data.next_piece() {
        sent += p.len() as u64;
        if tx.send(Ok(p)).await.is_err() {
            panic!("the put stopped reading: {:?}", put.await);
        }
        if !killed && sent >= 12 << 20 {
            tg.kill("s1n0").await;
            tg.kill("s1n1").await;
            killed = true;
        }
    }
    drop(tx);
    let put = put
        .await
        .unwrap()
        .expect("the put succeeds with two nodes down");
    assert_eq!(put.size, size);
    let (sha, n) = sha256_of(
        s.get_object("faults", "survivor", GetOptions::default())
            .await
            .unwrap()
            .body,
    )
    .await;
    assert_eq!(n, size);
    assert_eq!(sha, Data::sha256(size, 3));

    // Get: a fresh grid, both nodes of site 2 die after 8 MiB were read.
    let mut tg = TestGrid::start(3, 2).await;
    let s = store_on(&tg, StoreConfig::default());
    s.create_bucket("faults", OWNER, None).await.unwrap();
    s.put_object(
        "faults",
        "reader",
        Data::new(size, 4).stream(),
        PutOptions::default(),
    )
    .await
    .unwrap();
    let mut body = s
        .get_object("faults", "reader", GetOptions::default())
        .await
        .unwrap()
        .body;
    let mut h = Sha256::new();
    let mut read = 0u64;
    let mut killed = false;
    while let Some(piece) = body.next().await {
        let piece = piece.expect("the read goes on from parity");
        read += piece.len() as u64;
        h.update(&piece);
        if !killed && read >= 8 << 20 {
            tg.kill("s2n0").await;
            tg.kill("s2n1").await;
            killed = true;
        }
    }
    assert!(killed);
    assert_eq!(read, size);
    let sha: [u8; 32] = h.finalize().into();
    assert_eq!(sha, Data::sha256(size, 4));

    // A third node down leaves chunks with fewer than k shards reachable:
    // writes are refused with a clear error, not acknowledged.
    tg.kill("s0n0").await;
    let e = s
        .put_object(
            "faults",
            "too-many-down",
            Data::new(4 << 20, 5).stream(),
            PutOptions::default(),
        )
        .await
        .expect_err("three of six nodes down");
    assert!(e.is_unavailable(), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dedup_stores_a_changed_version_and_copies_for_almost_nothing() {
    let tg = TestGrid::start(3, 2).await;
    let s = store_on(&tg, StoreConfig::default());
    s.create_bucket("archive", OWNER, None).await.unwrap();
    s.set_versioning("archive", VersioningState::Enabled)
        .await
        .unwrap();
    let original = Data::bytes(64 << 20, 8);
    s.put_object(
        "archive",
        "big.bin",
        stream_of(original.clone(), 1 << 20),
        PutOptions::default(),
    )
    .await
    .unwrap();
    let first = stored_bytes(&tg).await;
    assert!(first > 64 << 20, "4+2 stores 1.5x: {first}");

    let mut edited = original.clone();
    let insert = Data::bytes(1024, 9);
    edited.splice(32 << 20..32 << 20, insert);
    s.put_object(
        "archive",
        "big.bin",
        stream_of(edited.clone(), 1 << 20),
        PutOptions::default(),
    )
    .await
    .unwrap();
    let second = stored_bytes(&tg).await;
    let added = (second - first) as f64 / first as f64;
    eprintln!(
        "dedup: second version with 1 KiB inserted added {:.2} % ({} bytes)",
        added * 100.0,
        second - first
    );
    assert!(added < 0.05, "added {:.2} %", added * 100.0);

    // Both versions read back.
    let versions = s
        .list_object_versions(
            "archive",
            &ListVersionsParams {
                max_keys: 10,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(versions.versions.len(), 2);
    let old = GetOptions {
        version: Some(versions.versions[1].version_id.clone()),
        ..Default::default()
    };
    assert_eq!(
        read_all(s.get_object("archive", "big.bin", old).await.unwrap().body).await,
        original
    );
    assert_eq!(
        read_all(
            s.get_object("archive", "big.bin", GetOptions::default())
                .await
                .unwrap()
                .body
        )
        .await,
        edited
    );

    // Ten more keys with the same content: metadata only.
    for i in 0..10 {
        s.put_object(
            "archive",
            &format!("copy-{i}"),
            stream_of(original.clone(), 1 << 20),
            PutOptions::default(),
        )
        .await
        .unwrap();
    }
    assert_eq!(
        stored_bytes(&tg).await,
        second,
        "identical objects add no shard bytes"
    );
    let got = read_all(
        s.get_object("archive", "copy-7", GetOptions::default())
            .await
            .unwrap()
            .body,
    )
    .await;
    assert_eq!(got, original);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shard_files_and_node_databases_hold_no_plaintext() {
    const MARK: &[u8] = b"GRIDSTORE-PLAINTEXT-MARKER";
    let tg = TestGrid::start(3, 2).await;
    let s = store_on(&tg, StoreConfig::default());
    s.create_bucket("secret", OWNER, None).await.unwrap();
    // Recognisable text (compressible) ...
    let mut text = Vec::new();
    let mut i = 0;
    while text.len() < 3 << 20 {
        text.extend_from_slice(format!("line {i}: the quick brown fox, ").as_bytes());
        text.extend_from_slice(MARK);
        text.push(b'\n');
        i += 1;
    }
    // ... random bytes with the marker every 4 KiB (stored uncompressed,
    // so only encryption hides it), above the chunker's 4 MiB maximum so
    // they make two chunks at least whatever the bucket's cut seed ...
    let mut noisy = Data::bytes((4 << 20) + 4096, 12);
    for off in (0..noisy.len() - MARK.len()).step_by(4096) {
        noisy[off..off + MARK.len()].copy_from_slice(MARK);
    }
    // ... and a small object stored inline in the replicated manifest.
    let small = [MARK, b" inline"].concat();
    for (key, data) in [("text", &text), ("noisy", &noisy), ("small", &small)] {
        s.put_object(
            "secret",
            key,
            stream_of(data.clone(), 65_536),
            PutOptions::default(),
        )
        .await
        .unwrap();
        let back = read_all(
            s.get_object("secret", key, GetOptions::default())
                .await
                .unwrap()
                .body,
        )
        .await;
        assert_eq!(&back, data);
    }
    let mut files = Vec::new();
    files_under(tg.dir.path(), &mut files);
    let shards = files.iter().filter(|p| is_shard_file(p)).count();
    assert!(
        shards >= 6 * 3,
        "the big objects were stored as shards: {shards}"
    );
    for f in &files {
        let bytes = std::fs::read(f).unwrap_or_default();
        assert!(
            !bytes.windows(MARK.len()).any(|w| w == MARK),
            "plaintext found in {}",
            f.display()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn customer_keys_are_required_and_bypass_dedup() {
    let tg = TestGrid::start(3, 2).await;
    let s = store_on(&tg, StoreConfig::default());
    s.create_bucket("ssec", OWNER, None).await.unwrap();
    let data = Data::bytes(2 << 20, 21);
    let key = CustomerKey::new([5; 32]);
    let with_key = |k: &CustomerKey| PutOptions {
        customer_key: Some(k.clone()),
        ..PutOptions::default()
    };
    let before = stored_bytes(&tg).await;
    s.put_object(
        "ssec",
        "a",
        stream_of(data.clone(), 1 << 20),
        with_key(&key),
    )
    .await
    .unwrap();
    let one = stored_bytes(&tg).await - before;
    s.put_object(
        "ssec",
        "b",
        stream_of(data.clone(), 1 << 20),
        with_key(&key),
    )
    .await
    .unwrap();
    let two = stored_bytes(&tg).await - before;
    assert!(
        two >= 2 * one - 4096,
        "no dedup under customer keys: {one} then {two}"
    );

    let get = |k: Option<CustomerKey>| GetOptions {
        customer_key: k,
        ..GetOptions::default()
    };
    assert!(matches!(
        s.get_object("ssec", "a", get(None)).await,
        Err(Error::CustomerKeyRequired)
    ));
    assert!(matches!(
        s.head_object("ssec", "a", &get(Some(CustomerKey::new([6; 32]))))
            .await,
        Err(Error::CustomerKeyMismatch)
    ));
    let head = s
        .head_object("ssec", "a", &get(Some(key.clone())))
        .await
        .unwrap();
    assert_eq!(head.sse_customer_key_md5.as_deref(), Some(key.md5_b64()));
    let back = read_all(
        s.get_object("ssec", "a", get(Some(key.clone())))
            .await
            .unwrap()
            .body,
    )
    .await;
    assert_eq!(back, data);
    // A small object under a customer key (inline) round-trips too.
    s.put_object(
        "ssec",
        "tiny",
        stream_of(b"tiny secret".to_vec(), 4),
        with_key(&key),
    )
    .await
    .unwrap();
    let back = read_all(
        s.get_object("ssec", "tiny", get(Some(key.clone())))
            .await
            .unwrap()
            .body,
    )
    .await;
    assert_eq!(back, b"tiny secret");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_and_missing_shards_are_read_around_and_reported() {
    let tg = TestGrid::start(3, 2).await;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<RepairHint>(1000);
    let s = store_on(&tg, StoreConfig::default()).with_repair_queue(tx);
    s.create_bucket("damage", OWNER, None).await.unwrap();
    let data = Data::bytes(10 << 20, 31);
    s.put_object(
        "damage",
        "obj",
        stream_of(data.clone(), 1 << 20),
        PutOptions::default(),
    )
    .await
    .unwrap();
    let chunks = s.object_chunks("damage", "obj", None).await.unwrap().len();
    // Flip a byte in the body of every shard on one node; delete every
    // shard on another (on another site).
    for f in shard_files(&tg, "s0n0") {
        let mut b = std::fs::read(&f).unwrap();
        let mid = b.len() / 2;
        b[mid] ^= 0x40;
        std::fs::write(&f, b).unwrap();
    }
    for f in shard_files(&tg, "s1n0") {
        std::fs::remove_file(f).unwrap();
    }
    let back = read_all(
        s.get_object("damage", "obj", GetOptions::default())
            .await
            .unwrap()
            .body,
    )
    .await;
    assert_eq!(back, data, "any k good shards of each chunk are enough");
    let mut hints = Vec::new();
    while let Ok(h) = rx.try_recv() {
        hints.push(h);
    }
    assert!(!hints.is_empty() && hints.len() <= chunks, "{hints:?}");
    for h in &hints {
        assert!(h.corrupt.iter().all(|(_, node)| node == "s0n0"), "{h:?}");
        assert_eq!((h.erasure.data, h.erasure.parity), (4, 2));
    }
    assert!(
        hints.iter().any(|h| !h.corrupt.is_empty()),
        "a corrupt data shard was met"
    );
    assert!(
        hints.iter().any(|h| !h.missing.is_empty()),
        "a missing data shard was met"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_versions_and_crashed_puts_are_collected() {
    let tg = TestGrid::start(3, 2).await;
    let s = store_on(&tg, StoreConfig::default());
    s.create_bucket("gc-test", OWNER, None).await.unwrap();
    let gc_all = |tg: &TestGrid| {
        let nodes: Vec<_> = tg.nodes.iter().flatten().map(|n| n.node.clone()).collect();
        async move {
            let now = ::grid::clock::now_ms();
            // Grace 0: the first pass starts it, the second collects.
            for pass in 0..2 {
                for n in &nodes {
                    let n = n.clone();
                    tokio::task::spawn_blocking(move || n.gc_pass(now + pass, 0))
                        .await
                        .unwrap()
                        .unwrap();
                }
            }
        }
    };
    let keep = Data::bytes(3 << 20, 41);
    s.put_object(
        "gc-test",
        "keep",
        stream_of(keep.clone(), 1 << 20),
        PutOptions::default(),
    )
    .await
    .unwrap();
    let kept = stored_bytes(&tg).await;
    s.put_object(
        "gc-test",
        "gone",
        Data::new(5 << 20, 42).stream(),
        PutOptions::default(),
    )
    .await
    .unwrap();
    assert!(stored_bytes(&tg).await > kept);
    s.delete_object("gc-test", "gone", None).await.unwrap();
    gc_all(&tg).await;
    assert_eq!(
        stored_bytes(&tg).await,
        kept,
        "only the deleted object's shards went"
    );
    let back = read_all(
        s.get_object("gc-test", "keep", GetOptions::default())
            .await
            .unwrap()
            .body,
    )
    .await;
    assert_eq!(back, keep);

    // A gateway dies between storing chunks and writing the manifest.
    let (tx, body) = fed_body();
    let writer = s.clone();
    let put = tokio::spawn(async move {
        writer
            .put_object("gc-test", "never", body, PutOptions::default())
            .await
    });
    let mut data = Data::new(12 << 20, 43);
    for _ in 0..24 {
        if let Some(p) = data.next_piece() {
            tx.send(Ok(p)).await.unwrap();
        }
    }
    // Wait for chunks to land, then the crash.
    while stored_bytes(&tg).await == kept {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    put.abort();
    drop(tx);
    // Chunk tasks already running finish on their own; wait until quiet.
    let mut last = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = stored_bytes(&tg).await;
        if now == last {
            break;
        }
        last = now;
    }
    assert!(last > kept, "the crashed put left shards behind");
    assert!(matches!(
        s.get_object("gc-test", "never", GetOptions::default())
            .await,
        Err(Error::NoSuchKey { .. })
    ));
    // The node keeps them while referenced ...
    gc_all(&tg).await;
    assert_eq!(stored_bytes(&tg).await, last, "references protect shards");
    // ... until the sweep finds the references' version never existed.
    let mut removed = 0;
    for n in &tg.map.nodes {
        removed += s
            .sweep_orphan_refs(&n.id, Duration::ZERO)
            .await
            .unwrap()
            .removed;
    }
    assert!(removed > 0);
    gc_all(&tg).await;
    assert_eq!(
        stored_bytes(&tg).await,
        kept,
        "the crashed put's shards are collected"
    );
    let back = read_all(
        s.get_object("gc-test", "keep", GetOptions::default())
            .await
            .unwrap()
            .body,
    )
    .await;
    assert_eq!(back, keep, "a live object's references survive the sweep");
}
