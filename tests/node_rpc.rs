//! Node RPC against a real `gridstore node` process on 127.0.0.1 with a real
//! metadata store and shard files in a temp dir: every call, HTTP/1.1 and HTTP/2,
//! declared shard checksums, malformed requests, and capacity. Who may
//! connect at all is `node_tls.rs`.

mod support;

use ::grid::node_api::{self as api, MetaOp, RefQuery};
use ::grid::node_client::{read_response, RequestBody};
use ::grid::{NodeClient, RpcError};
use bytes::Bytes;
use http::Method;
use metadata::db::Table;
use metadata::model::{
    Bucket, ChunkReference, ClusterMap, ErasureSpec, Node, NodeState, ObjectVersion, Referrer,
    BUCKET_ID_LEN, VERSION_ID_LEN,
};
use metadata::ShardKey;
use support::*;

fn bucket(name: &str) -> Bucket {
    Bucket {
        name: name.into(),
        id: vec![name.len() as u8; BUCKET_ID_LEN],
        owner: "GKtest".into(),
        created_ms: 1,
        versioning: 0,
        erasure: Some(ErasureSpec::new(4, 2)),
        ..Default::default()
    }
}

fn version(key: &str, v: u8) -> ObjectVersion {
    ObjectVersion {
        bucket: "b".into(),
        key: key.into(),
        version_id: vec![v; VERSION_ID_LEN],
        inline_data: b"hello".to_vec(),
        size: 5,
        ..Default::default()
    }
}

/// Records as a gateway seals them (nodes take nothing else).
fn seal<R: metadata::Replicated>(table: Table, key: &[u8], r: &R) -> Vec<u8> {
    record_keys().seal(table, key, r.revision(), r)
}

fn record_keys() -> metadata::sealed::RecordKeys {
    metadata::sealed::RecordKeys::new(&[0x5e; 32])
}

fn reference(chunk: [u8; 32], key: &str) -> ChunkReference {
    let mut r = ChunkReference {
        chunk_id: chunk.to_vec(),
        erasure: Some(ErasureSpec::new(2, 1)),
        shard_len: 100,
        referrer: Some(Referrer {
            bucket_id: vec![1; BUCKET_ID_LEN],
            key_hash: blake3::hash(key.as_bytes()).as_bytes()[..16].to_vec(),
            version: vec![2; VERSION_ID_LEN],
            part_number: 0,
        }),
        created_ms: 5,
        ..ChunkReference::default()
    };
    owner().sign_reference(&mut r);
    r
}

fn map(epoch: u64) -> ClusterMap {
    signed_map(ClusterMap {
        epoch,
        nodes: vec![Node {
            id: "n1".into(),
            addr: "127.0.0.1:1".into(),
            site: "farm-a".into(),
            capacity_bytes: 1 << 30,
            state: NodeState::Up as i32,
            key: vec![],
            untrusted_reason: String::new(),
        }],
        clients: test_clients(),
        ..ClusterMap::default()
    })
}

async fn shard_calls(c: &NodeClient, seed: u64) {
    let chunk = sealed(300_000, 4, 2, seed);
    let keys: Vec<ShardKey> = (0..6).map(|i| shard_key(&chunk, i)).collect();
    for (i, k) in keys.iter().enumerate() {
        c.put_shard(k, chunk.shard(i).into()).await.unwrap();
    }
    // Idempotent: the same shard again is fine.
    c.put_shard(&keys[0], chunk.shard(0).into()).await.unwrap();

    for (i, k) in keys.iter().enumerate() {
        assert_eq!(c.get_shard(k, None).await.unwrap(), chunk.shard(i));
    }
    let whole = chunk.shard(3);
    let part = c.get_shard(&keys[3], Some((100, 5000))).await.unwrap();
    assert_eq!(&part[..], &whole[100..5100]);
    let tail = c
        .get_shard(&keys[3], Some((whole.len() as u64 - 7, 7)))
        .await
        .unwrap();
    assert_eq!(&tail[..], &whole[whole.len() - 7..]);
    let past_end = c
        .get_shard(&keys[3], Some((whole.len() as u64 - 7, 8)))
        .await;
    assert!(
        matches!(past_end, Err(RpcError::Rejected { status: 416, .. })),
        "{past_end:?}"
    );

    let absent = ShardKey::new([0xee; 32], 1).unwrap();
    let mut asked = keys.clone();
    asked.push(absent);
    let lens = c.has_shards(&asked).await.unwrap();
    assert_eq!(lens.len(), 7);
    for (i, l) in lens.iter().take(6).enumerate() {
        assert_eq!(*l, chunk.shard(i).len() as u64);
    }
    assert_eq!(lens[6], 0);
    assert!(matches!(
        c.get_shard(&absent, None).await,
        Err(RpcError::NotFound)
    ));

    assert!(c.delete_shard(&keys[0]).await.unwrap());
    assert!(!c.delete_shard(&keys[0]).await.unwrap());
    assert_eq!(
        c.delete_shards(&[keys[0], keys[1], keys[2]]).await.unwrap(),
        vec![false, true, true]
    );
    assert_eq!(
        c.has_shards(&keys).await.unwrap()[..4],
        [0, 0, 0, chunk.shard(3).len() as u64]
    );
}

async fn record_calls(c: &NodeClient, run: &str) {
    let b = bucket("photos");
    assert_eq!(
        c.meta_get(Table::Buckets, format!("{run}photos").as_bytes())
            .await
            .unwrap(),
        None
    );
    c.meta_put(
        Table::Buckets,
        format!("{run}photos").as_bytes(),
        seal(Table::Buckets, format!("{run}photos").as_bytes(), &b),
    )
    .await
    .unwrap();
    let got = c
        .meta_get(Table::Buckets, format!("{run}photos").as_bytes())
        .await
        .unwrap()
        .unwrap();
    let opened: Bucket = record_keys()
        .open(Table::Buckets, format!("{run}photos").as_bytes(), &got)
        .unwrap();
    assert_eq!(opened, b);
    c.meta_delete(Table::Buckets, format!("{run}photos").as_bytes())
        .await
        .unwrap();
    assert_eq!(
        c.meta_get(Table::Buckets, format!("{run}photos").as_bytes())
            .await
            .unwrap(),
        None
    );

    // A batch is all or nothing: one bad record refuses the whole batch.
    let good: Vec<MetaOp> = (0..25u8)
        .map(|i| {
            let key = format!("{run}obj-{i:02}");
            MetaOp::put(
                Table::Versions,
                key.as_bytes(),
                seal(Table::Versions, key.as_bytes(), &version(&key, i)),
            )
        })
        .collect();
    let mut bad = good.clone();
    bad.push(MetaOp::put(
        Table::Versions,
        b"zzz",
        b"\x01garbage".to_vec(),
    ));
    assert!(matches!(
        c.meta_batch(bad).await,
        Err(RpcError::Rejected { status: 400, .. })
    ));
    assert_eq!(
        c.meta_get(Table::Versions, format!("{run}obj-00").as_bytes())
            .await
            .unwrap(),
        None
    );
    c.meta_batch(good).await.unwrap();
    c.meta_batch(vec![MetaOp::delete(
        Table::Versions,
        format!("{run}obj-24").as_bytes(),
    )])
    .await
    .unwrap();

    // Paginated range scan, in key order, over [obj-05, obj-20).
    let mut seen = Vec::new();
    let mut start = format!("{run}obj-05").into_bytes();
    let end = format!("{run}obj-20").into_bytes();
    loop {
        let page = c
            .meta_scan(Table::Versions, &start, Some(&end), 4)
            .await
            .unwrap();
        assert!(page.items.len() <= 4);
        for kv in &page.items {
            let v: ObjectVersion = record_keys()
                .open(Table::Versions, &kv.key, &kv.value)
                .unwrap();
            assert_eq!(v.key.as_bytes(), &kv.key[..]);
            seen.push(v.key);
        }
        match page.next {
            Some(n) => start = n,
            None => break,
        }
    }
    let want: Vec<String> = (5..20).map(|i| format!("{run}obj-{i:02}")).collect();
    assert_eq!(seen, want);
    let rest = c
        .meta_scan(
            Table::Versions,
            format!("{run}obj-2").as_bytes(),
            Some(format!("{run}obj-3").as_bytes()),
            100,
        )
        .await
        .unwrap();
    assert_eq!(rest.items.len(), 4, "obj-20..obj-23; obj-24 was deleted");

    // Compare-and-set: create if absent, swap on match, refuse on mismatch.
    let key = format!("{run}cas");
    let v1 = seal(Table::Versions, key.as_bytes(), &version("cas", 1));
    let v2 = seal(Table::Versions, key.as_bytes(), &version("cas", 2));
    let cas = |expected: Option<&Vec<u8>>, new: Option<&Vec<u8>>| {
        c.meta_cas(
            Table::Versions,
            key.as_bytes(),
            expected.cloned(),
            new.cloned(),
        )
    };
    let r = cas(None, Some(&v1)).await.unwrap();
    assert!(r.swapped);
    assert_eq!(r.current.as_ref(), Some(&v1));
    let r = cas(None, Some(&v2)).await.unwrap();
    assert!(!r.swapped, "the key exists");
    assert_eq!(r.current.as_ref(), Some(&v1));
    let r = cas(Some(&v2), None).await.unwrap();
    assert!(!r.swapped, "expected value differs");
    let r = cas(Some(&v1), Some(&v2)).await.unwrap();
    assert!(r.swapped);
    let r = cas(Some(&v2), None).await.unwrap();
    assert!(r.swapped);
    assert_eq!(r.current, None);
}

async fn ref_calls(c: &NodeClient, run: u8) {
    let a = [0xa0 + run; 32];
    let b = [0xb0 + run; 32];
    let refs_a: Vec<ChunkReference> = (0..7).map(|i| reference(a, &format!("k{i}"))).collect();
    c.refs_add(refs_a.clone()).await.unwrap();
    c.refs_add(vec![reference(b, "other")]).await.unwrap();
    // Adding the same reference again is idempotent.
    c.refs_add(vec![refs_a[0].clone()]).await.unwrap();

    let mut listed = Vec::new();
    let mut after = None;
    loop {
        let page = c
            .refs_list(RefQuery {
                chunk_id: Some(a.to_vec()),
                start_after: after,
                limit: 3,
            })
            .await
            .unwrap();
        listed.extend(page.refs);
        match page.next_after {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert_eq!(listed.len(), 7);
    assert!(listed.iter().all(|r| r.chunk_id == a));

    let all = c
        .refs_list(RefQuery {
            chunk_id: None,
            start_after: None,
            limit: 100,
        })
        .await
        .unwrap();
    assert_eq!(all.next_after, None);
    let ours = |r: &&ChunkReference| r.chunk_id == a || r.chunk_id == b;
    assert_eq!(all.refs.iter().filter(ours).count(), 8);

    c.refs_remove(refs_a[..6].to_vec()).await.unwrap();
    c.refs_remove(refs_a[..1].to_vec()).await.unwrap();
    let left = c
        .refs_list(RefQuery {
            chunk_id: Some(a.to_vec()),
            start_after: None,
            limit: 100,
        })
        .await
        .unwrap();
    assert_eq!(left.refs, refs_a[6..].to_vec());
}

async fn node_calls(c: &NodeClient) {
    let s = c.status().await.unwrap();
    assert_eq!(s.node_id, "n1");
    assert_eq!(s.site, "farm-a");
    assert_eq!(s.version, env!("CARGO_PKG_VERSION"));
    assert!(s.capacity_bytes > 0 && s.fs_free_bytes > 0);
    assert!(["io_uring", "threads"].contains(&s.io_backend.as_str()));

    let before = c.get_map().await.unwrap().map_or(0, |m| m.epoch);
    let m = map(before + 2);
    let r = c.put_map(&m).await.unwrap();
    assert!(r.accepted);
    assert_eq!(r.epoch, before + 2);
    let r = c.put_map(&map(before + 1)).await.unwrap();
    assert!(!r.accepted, "an older map never replaces a newer one");
    assert_eq!(r.epoch, before + 2);
    assert_eq!(c.get_map().await.unwrap(), Some(m));
    assert_eq!(c.status().await.unwrap().map_epoch, before + 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_round_trips_over_http1_and_http2() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProc::start(dir.path(), "");
    for (run, c) in [(1, node.client()), (2, node.client_h2())] {
        shard_calls(&c, run.into()).await;
        record_calls(&c, &format!("run{run}-")).await;
        ref_calls(&c, run).await;
        node_calls(&c).await;
    }
    let s = node.client().status().await.unwrap();
    assert_eq!(s.shard_count, 2 * 3, "three of six shards left per chunk");

    // Probes and Prometheus need no credentials (nor a client
    // certificate).
    let plain = hyper_get(&node, "/health").await;
    assert_eq!(plain.0, 200);
    let (status, text) = hyper_get(&node, "/metrics").await;
    assert_eq!(status, 200);
    for want in [
        "gridstore_node_requests_total{op=\"put_shard\",status=\"201\"}",
        "gridstore_node_shards 6",
        "gridstore_node_received_bytes_total",
        "gridstore_node_available_bytes",
        "gridstore_node_request_duration_seconds_bucket",
    ] {
        assert!(text.contains(want), "{want} missing from\n{text}");
    }
}

/// An unauthenticated GET, without a client certificate.
async fn hyper_get(node: &NodeProc, path: &str) -> (u16, String) {
    probe_get(&node.addr, node.key, path).await
}

async fn send_put(c: &NodeClient, req: http::Request<RequestBody>) -> Result<Bytes, RpcError> {
    read_response(c.send(req).await?).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_put_must_carry_the_checksum_it_declares() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProc::start(dir.path(), "");
    let c = node.client();
    let chunk = sealed(50_000, 2, 1, 9);
    let k0 = shard_key(&chunk, 0);
    let path0 = api::shard_path(&k0);
    let shard0 = Bytes::from(chunk.shard(0));
    // A valid shard of the same chunk and index (sealed with another
    // erasure shape): it verifies on its own, with another checksum.
    let twin = sealed(50_000, 2, 2, 9);
    assert_eq!(twin.id(), chunk.id());
    let twin0 = Bytes::from(twin.shard(0));
    assert_ne!(twin0, shard0);
    let declared = |d: [u8; 32], b: &Bytes| {
        c.request(
            Method::PUT,
            &path0,
            Some(d),
            b.len() as u64,
            body(b.clone()),
        )
        .unwrap()
    };

    // Declaring nothing, or something that is no checksum.
    let req = c
        .request(
            Method::PUT,
            &path0,
            None,
            shard0.len() as u64,
            body(shard0.clone()),
        )
        .unwrap();
    let r = send_put(&c, req).await;
    assert!(
        matches!(&r, Err(RpcError::Rejected { status: 400, message }) if message.contains(api::HEADER_SHARD_CHECKSUM)),
        "{r:?}"
    );
    let mut req = declared([0; 32], &shard0);
    req.headers_mut()
        .insert(api::HEADER_SHARD_CHECKSUM, "zz".parse().unwrap());
    let r = send_put(&c, req).await;
    assert!(
        matches!(&r, Err(RpcError::Rejected { status: 400, message }) if message.contains("malformed")),
        "{r:?}"
    );
    // Another shard than the one declared, whole and valid, either way.
    let own = |b: &Bytes| api::shard_checksum(b);
    for (d, b) in [(own(&shard0), &twin0), (own(&twin0), &shard0)] {
        let r = send_put(&c, declared(d, b)).await;
        assert!(
            matches!(&r, Err(RpcError::Rejected { status: 400, message }) if message.contains("declared")),
            "{r:?}"
        );
    }
    // The declared shard, damaged on the way: its own checksum fails.
    let mut damaged = chunk.shard(0);
    let last = damaged.len() - 1;
    damaged[last] ^= 1;
    let r = send_put(&c, declared(own(&shard0), &Bytes::from(damaged))).await;
    assert!(
        matches!(r, Err(RpcError::Rejected { status: 400, .. })),
        "{r:?}"
    );

    // None of it left anything, and the shard as declared goes in.
    assert_eq!(c.has_shards(&[k0]).await.unwrap(), vec![0]);
    let tmp: Vec<_> = std::fs::read_dir(dir.path().join("data/tmp"))
        .unwrap()
        .collect();
    assert!(tmp.is_empty(), "temp files left: {tmp:?}");
    send_put(&c, declared(own(&shard0), &shard0)).await.unwrap();
    assert_eq!(c.get_shard(&k0, None).await.unwrap(), shard0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_config_with_a_cluster_secret_still_runs() {
    let dir = tempfile::tempdir().unwrap();
    let old = "cluster_secret = \"test-cluster-secret-0123456789\"";
    let node = NodeProc::start(dir.path(), old);
    let c = node.client();
    let chunk = sealed(20_000, 2, 1, 12);
    c.put_shard(&shard_key(&chunk, 0), chunk.shard(0).into())
        .await
        .unwrap();
    assert_eq!(c.status().await.unwrap().shard_count, 1);
    let log = node.log();
    assert_eq!(log.matches("no longer used").count(), 1, "{log}");
    assert!(log.contains("cluster_secret"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_ids_paths_and_bodies_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProc::start(dir.path(), "");
    let c = node.client();
    let chunk = sealed(20_000, 2, 1, 4);
    let shard = Bytes::from(chunk.shard(0));
    let hex = chunk.id().to_hex();

    let bad_paths = [
        "/v1/shards/../../../etc/passwd".to_owned(),
        "/v1/shards/..%2f..%2fetc%2fpasswd.0".to_owned(),
        format!("/v1/shards/{hex}"),
        format!("/v1/shards/{hex}.64"),
        format!("/v1/shards/{hex}.01"),
        format!("/v1/shards/{hex}.-1"),
        format!("/v1/shards/{}.0", hex.to_uppercase()),
        format!("/v1/shards/{hex}00.0"),
        format!("/v1/shards/{}.0", &hex[2..]),
        format!("/v1/shards/{}.0", "a".repeat(4096)),
        format!("/v1/shards/{hex}.0/../x"),
    ];
    for p in &bad_paths {
        let req = request(&node.addr, Method::PUT, p, &shard)
            .body(body(shard.clone()))
            .unwrap();
        let s = status_of(&c, req).await;
        assert_eq!(s, 400, "PUT {p}");
        let req = request(&node.addr, Method::GET, p, &[])
            .body(body(Bytes::new()))
            .unwrap();
        assert_eq!(status_of(&c, req).await, 400, "GET {p}");
    }
    for p in [
        "/v1/meta/system/6e6f64655f6964",
        "/v1/meta/chunk_refs/00",
        "/v1/meta/nope/00",
        "/v1/meta/buckets/zz",
        "/v1/meta/buckets/",
        "/v1/meta/buckets",
    ] {
        let req = request(&node.addr, Method::GET, p, &[])
            .body(body(Bytes::new()))
            .unwrap();
        assert_eq!(status_of(&c, req).await, 400, "GET {p}");
    }
    let req = request(&node.addr, Method::GET, "/v1/nope", &[])
        .body(body(Bytes::new()))
        .unwrap();
    assert_eq!(status_of(&c, req).await, 404);

    // Bodies: a shard filed under another index, garbage, a truncated
    // shard, a record that does not decode, a too-large body.
    let k0 = shard_key(&chunk, 0);
    let k1 = shard_key(&chunk, 1);
    let wrong = c.put_shard(&k1, shard.clone()).await;
    assert!(
        matches!(wrong, Err(RpcError::Rejected { status: 400, .. })),
        "{wrong:?}"
    );
    let garbage = c.put_shard(&k0, Bytes::from(vec![0x5a; 5000])).await;
    assert!(
        matches!(garbage, Err(RpcError::Rejected { status: 400, .. })),
        "{garbage:?}"
    );
    let cut = c.put_shard(&k0, shard.slice(..shard.len() - 1)).await;
    assert!(
        matches!(cut, Err(RpcError::Rejected { status: 400, .. })),
        "{cut:?}"
    );
    let mut flipped = chunk.shard(0);
    flipped[200] ^= 0x10;
    let bitrot = c.put_shard(&k0, flipped.into()).await;
    assert!(
        matches!(bitrot, Err(RpcError::Rejected { status: 400, .. })),
        "{bitrot:?}"
    );
    assert_eq!(c.has_shards(&[k0, k1]).await.unwrap(), vec![0, 0]);
    let rec = c
        .meta_put(Table::Versions, b"k", b"\x01\xff\xff\xff".to_vec())
        .await;
    assert!(
        matches!(rec, Err(RpcError::Rejected { status: 400, .. })),
        "{rec:?}"
    );
    let future_version = c.meta_put(Table::Versions, b"k", b"\x09abc".to_vec()).await;
    assert!(matches!(
        future_version,
        Err(RpcError::Rejected { status: 400, .. })
    ));

    // A declared length over the limit is refused before any body byte is
    // read (the body here never comes).
    let path = api::shard_path(&k0);
    let (_tx, never) = channel_body();
    let mut req = request(&node.addr, Method::PUT, &path, &[])
        .body(never)
        .unwrap();
    req.headers_mut().insert(
        http::header::CONTENT_LENGTH,
        (api::MAX_SHARD_BYTES + 1).into(),
    );
    assert_eq!(status_of(&c, req).await, 413);
    let (_tx2, never) = channel_body();
    let mut req = request(&node.addr, Method::POST, api::META_BATCH, &[])
        .body(never)
        .unwrap();
    req.headers_mut().insert(
        http::header::CONTENT_LENGTH,
        (api::MAX_MESSAGE_BYTES + 1).into(),
    );
    assert_eq!(status_of(&c, req).await, 413);

    // Still healthy and consistent after all that.
    c.put_shard(&k0, shard).await.unwrap();
    assert_eq!(c.status().await.unwrap().shard_count, 1);
    let entries: Vec<_> = std::fs::read_dir(dir.path().join("data/tmp"))
        .unwrap()
        .collect();
    assert!(entries.is_empty(), "temp files left: {entries:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_quota_writes_get_507_and_reads_continue() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProc::start(dir.path(), "quota_bytes = 3_500_000\nreserve_bytes = 0");
    let c = node.client();
    let mut stored = Vec::new();
    let mut refused = None;
    for seed in 0..10 {
        let chunk = sealed(1 << 20, 1, 0, 100 + seed);
        let k = shard_key(&chunk, 0);
        match c.put_shard(&k, chunk.shard(0).into()).await {
            Ok(()) => stored.push((k, chunk.shard(0))),
            Err(RpcError::InsufficientStorage(msg)) => {
                refused = Some((k, chunk.shard(0), msg));
                break;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(stored.len(), 3, "3 x 1 MiB fit in 3.5 MB, the 4th does not");
    let (k, shard, msg) = refused.expect("quota never reached");
    assert!(msg.contains("insufficient storage"), "{msg}");
    assert_eq!(c.has_shards(&[k]).await.unwrap(), vec![0]);
    for (k, s) in &stored {
        assert_eq!(c.get_shard(k, None).await.unwrap(), *s);
    }
    let status = c.status().await.unwrap();
    assert!(status.available_bytes < shard.len() as u64);
    assert_eq!(status.capacity_bytes, 3_500_000);
    // Records still go through (they live in the metadata store, not the quota).
    c.meta_put(
        Table::Buckets,
        b"b",
        seal(Table::Buckets, b"b", &bucket("b")),
    )
    .await
    .unwrap();
    // Freeing space lets writes in again.
    assert!(c.delete_shard(&stored[0].0).await.unwrap());
    c.put_shard(&k, shard.into()).await.unwrap();
}
