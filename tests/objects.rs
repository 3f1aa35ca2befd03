//! The object layer on an in-process grid of 6 nodes on 3 sites (real
//! metadata store, real RPC on loopback): round trips, ranges, buckets, versions,
//! listing, multipart, copies, conditional reads and concurrent writers.

mod support;

use cluster::{
    ByteRange, ChecksumAlgorithm, CompletedPart, Conditions, CopyOptions, Error, GetOptions,
    ListObjectsParams, ListVersionsParams, MultipartOptions, ObjectStore, PartOptions, PutOptions,
    StoreConfig, VersioningState,
};
use sha2::{Digest, Sha256};
use support::grid::TestGrid;
use support::objects::{read_all, sha256_of, store_on, stream_of, Data, OWNER};

async fn put_bytes(s: &ObjectStore, bucket: &str, key: &str, data: &[u8]) -> cluster::PutResult {
    s.put_object(
        bucket,
        key,
        stream_of(data.to_vec(), 65_536),
        PutOptions::default(),
    )
    .await
    .unwrap()
}

async fn get_bytes(s: &ObjectStore, bucket: &str, key: &str, opts: GetOptions) -> Vec<u8> {
    read_all(s.get_object(bucket, key, opts).await.unwrap().body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trips_from_0_bytes_to_100_mib() {
    let tg = TestGrid::start(3, 2).await;
    let s = store_on(&tg, StoreConfig::default());
    s.create_bucket("sizes", OWNER, None).await.unwrap();
    let sizes: [u64; 10] = [
        0,
        1,
        16 * 1024 - 1,
        16 * 1024,
        16 * 1024 + 1,
        256 * 1024,
        (1 << 20) + 7,
        4 << 20,
        17 << 20,
        100 << 20,
    ];
    for (i, &size) in sizes.iter().enumerate() {
        let key = format!("obj-{size}");
        let opts = PutOptions {
            checksums: vec![ChecksumAlgorithm::Crc32c, ChecksumAlgorithm::Sha256],
            ..PutOptions::default()
        };
        let put = s
            .put_object("sizes", &key, Data::new(size, i as u64).stream(), opts)
            .await
            .unwrap();
        assert_eq!(put.size, size);
        assert_eq!(
            put.version_id, None,
            "unversioned buckets make null versions"
        );
        let want = Data::sha256(size, i as u64);
        assert_eq!(
            put.checksums["SHA256"],
            cluster::checksum::b64(&want),
            "the SHA256 the store computed is the data's"
        );
        let got = s
            .get_object("sizes", &key, GetOptions::default())
            .await
            .unwrap();
        assert_eq!(got.info.size, size);
        assert_eq!(got.info.etag, put.etag);
        let (sha, n) = sha256_of(got.body).await;
        assert_eq!(n, size);
        assert_eq!(sha, want, "size {size}");
        let chunks = s.object_chunks("sizes", &key, None).await.unwrap();
        if size <= 16 * 1024 {
            assert!(chunks.is_empty(), "{size} bytes are inline");
        } else {
            assert_eq!(chunks.iter().map(|c| c.1).sum::<u64>(), size);
        }
    }
    // The MD5 ETag of a single-part object is the MD5 of its bytes.
    let small = Data::bytes(1000, 77);
    let put = put_bytes(&s, "sizes", "md5", &small).await;
    let md5 = {
        use md5_check::compute;
        compute(&small)
    };
    assert_eq!(put.etag, md5);
}

mod md5_check {
    /// MD5 through the checksum module's digest (the store's own path is
    /// what is under test; this uses the `md-5` crate directly).
    pub fn compute(data: &[u8]) -> String {
        let mut d = cluster::checksum::Digests::new(&[]);
        d.update(data);
        hex::encode(d.finish().md5)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_at_chunk_boundaries_fetch_the_right_bytes() {
    let tg = TestGrid::start(3, 2).await;
    let s = store_on(&tg, StoreConfig::default());
    s.create_bucket("ranges", OWNER, None).await.unwrap();
    let data = Data::bytes(9 << 20, 5);
    put_bytes(&s, "ranges", "big", &data).await;
    let chunks = s.object_chunks("ranges", "big", None).await.unwrap();
    assert!(chunks.len() >= 3, "9 MiB makes several chunks: {chunks:?}");
    let size = data.len() as u64;
    let mut cases = vec![
        ByteRange::FromTo(0, 0),
        ByteRange::FromTo(0, size - 1),
        ByteRange::FromTo(0, size + 100),
        ByteRange::From(size - 1),
        ByteRange::Last(1),
        ByteRange::Last(size + 5),
    ];
    for &(off, _) in chunks.iter().skip(1) {
        cases.push(ByteRange::FromTo(off - 1, off));
        cases.push(ByteRange::FromTo(off, off));
        cases.push(ByteRange::FromTo(off - 1, off - 1));
        cases.push(ByteRange::FromTo(off - 10, off + 10));
        cases.push(ByteRange::From(off));
    }
    // Across three chunks.
    cases.push(ByteRange::FromTo(chunks[0].1 - 3, chunks[2].0 + 3));
    for r in cases {
        let (start, end) = r.resolve(size).unwrap();
        let got = s
            .get_object(
                "ranges",
                "big",
                GetOptions {
                    range: Some(r),
                    ..GetOptions::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(got.range, Some((start, end)));
        let bytes = read_all(got.body).await;
        assert_eq!(bytes, &data[start as usize..end as usize], "{r:?}");
    }
    for bad in [
        ByteRange::From(size),
        ByteRange::FromTo(size, size + 5),
        ByteRange::Last(0),
    ] {
        let e = s
            .get_object(
                "ranges",
                "big",
                GetOptions {
                    range: Some(bad),
                    ..GetOptions::default()
                },
            )
            .await
            .err()
            .unwrap();
        assert!(
            matches!(e, Error::InvalidRange { size: s } if s == size),
            "{bad:?}: {e}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buckets_follow_s3_rules() {
    let tg = TestGrid::start(3, 2).await;
    let s = store_on(&tg, StoreConfig::default());
    assert!(matches!(
        s.create_bucket("Bad_Name", OWNER, None).await,
        Err(Error::InvalidName(_))
    ));
    let info = s.create_bucket("alpha", OWNER, None).await.unwrap();
    assert_eq!(info.versioning, VersioningState::Unversioned);
    assert_eq!(
        (info.erasure.data, info.erasure.parity),
        (4, 2),
        "6 nodes on 3 sites"
    );
    assert!(matches!(
        s.create_bucket("alpha", OWNER, None).await,
        Err(Error::BucketAlreadyOwnedByYou(_))
    ));
    assert!(matches!(
        s.create_bucket("alpha", "someone-else", None).await,
        Err(Error::BucketAlreadyExists(_))
    ));
    s.create_bucket("beta", OWNER, Some(cluster::ErasureSpec::new(2, 1)))
        .await
        .unwrap();
    let names: Vec<String> = s
        .list_buckets()
        .await
        .unwrap()
        .into_iter()
        .map(|b| b.name)
        .collect();
    assert_eq!(names, ["alpha", "beta"]);
    assert_eq!(s.head_bucket("beta").await.unwrap().erasure.parity, 1);

    put_bytes(&s, "alpha", "k", b"x").await;
    assert!(matches!(
        s.delete_bucket("alpha").await,
        Err(Error::BucketNotEmpty(_))
    ));
    s.delete_object("alpha", "k", None).await.unwrap();
    s.delete_bucket("alpha").await.unwrap();
    assert!(matches!(
        s.head_bucket("alpha").await,
        Err(Error::NoSuchBucket(_))
    ));
    assert!(matches!(
        s.put_object("alpha", "k", stream_of(vec![1], 1), PutOptions::default())
            .await,
        Err(Error::NoSuchBucket(_))
    ));
    // The name is free again, as a new bucket (empty).
    s.create_bucket("alpha", "someone-else", None)
        .await
        .unwrap();
    let page = s
        .list_objects(
            "alpha",
            &ListObjectsParams {
                max_keys: 10,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(page.objects.is_empty());
    // Another gateway (a second store on the same grid) sees the same.
    let other = store_on(&tg, StoreConfig::default());
    assert_eq!(
        other.head_bucket("alpha").await.unwrap().owner,
        "someone-else"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versioning_delete_markers_and_null_versions() {
    let tg = TestGrid::start(3, 2).await;
    let s = store_on(&tg, StoreConfig::default());
    s.create_bucket("ver", OWNER, None).await.unwrap();

    // Unversioned: a put replaces the single null version.
    put_bytes(&s, "ver", "plain", b"one").await;
    put_bytes(&s, "ver", "plain", b"two").await;
    let versions = s
        .list_object_versions(
            "ver",
            &ListVersionsParams {
                max_keys: 100,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(versions.versions.len(), 1);
    assert_eq!(versions.versions[0].version_id, "null");
    assert_eq!(
        get_bytes(&s, "ver", "plain", GetOptions::default()).await,
        b"two"
    );

    s.set_versioning("ver", VersioningState::Enabled)
        .await
        .unwrap();
    let v1 = put_bytes(&s, "ver", "doc", b"version 1").await;
    let v2 = put_bytes(&s, "ver", "doc", b"version 2").await;
    let (v1, v2) = (v1.version_id.unwrap(), v2.version_id.unwrap());
    assert!(v2 > v1, "version ids sort by time");
    assert_eq!(
        get_bytes(&s, "ver", "doc", GetOptions::default()).await,
        b"version 2"
    );
    let old = GetOptions {
        version: Some(v1.clone()),
        ..GetOptions::default()
    };
    assert_eq!(get_bytes(&s, "ver", "doc", old.clone()).await, b"version 1");

    let del = s.delete_object("ver", "doc", None).await.unwrap();
    assert!(del.delete_marker);
    let marker = del.version_id.unwrap();
    match s.get_object("ver", "doc", GetOptions::default()).await {
        Err(Error::NoSuchKey { delete_marker, .. }) => {
            assert_eq!(delete_marker, Some(marker.clone()))
        }
        other => panic!("expected NoSuchKey, got {:?}", other.map(|g| g.info)),
    }
    assert!(matches!(
        s.head_object(
            "ver",
            "doc",
            &GetOptions {
                version: Some(marker.clone()),
                ..GetOptions::default()
            }
        )
        .await,
        Err(Error::DeleteMarker { .. })
    ));
    // Old versions stay readable by id.
    assert_eq!(get_bytes(&s, "ver", "doc", old.clone()).await, b"version 1");
    let listed = s
        .list_objects(
            "ver",
            &ListObjectsParams {
                max_keys: 100,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let keys: Vec<&str> = listed.objects.iter().map(|o| o.key.as_str()).collect();
    assert_eq!(keys, ["plain"], "a delete marker hides the key");
    let versions = s
        .list_object_versions(
            "ver",
            &ListVersionsParams {
                prefix: "doc".into(),
                max_keys: 100,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let seen: Vec<(String, bool, bool)> = versions
        .versions
        .iter()
        .map(|v| (v.version_id.clone(), v.is_latest, v.delete_marker))
        .collect();
    assert_eq!(
        seen,
        [
            (marker.clone(), true, true),
            (v2.clone(), false, false),
            (v1.clone(), false, false)
        ]
    );
    // Deleting the marker brings the object back.
    s.delete_object("ver", "doc", Some(&marker)).await.unwrap();
    assert_eq!(
        get_bytes(&s, "ver", "doc", GetOptions::default()).await,
        b"version 2"
    );
    // Deleting a specific version removes only it.
    s.delete_object("ver", "doc", Some(&v2)).await.unwrap();
    assert_eq!(
        get_bytes(&s, "ver", "doc", GetOptions::default()).await,
        b"version 1"
    );
    assert!(matches!(
        s.get_object(
            "ver",
            "doc",
            GetOptions {
                version: Some(v2.clone()),
                ..GetOptions::default()
            }
        )
        .await,
        Err(Error::NoSuchVersion { .. })
    ));

    // Suspended: new writes replace the null version, ids stay.
    s.set_versioning("ver", VersioningState::Suspended)
        .await
        .unwrap();
    let n1 = put_bytes(&s, "ver", "doc", b"null one").await;
    assert_eq!(n1.version_id, None);
    put_bytes(&s, "ver", "doc", b"null two").await;
    let versions = s
        .list_object_versions(
            "ver",
            &ListVersionsParams {
                prefix: "doc".into(),
                max_keys: 100,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let ids: Vec<&str> = versions
        .versions
        .iter()
        .map(|v| v.version_id.as_str())
        .collect();
    assert_eq!(ids, ["null", v1.as_str()]);
    assert_eq!(
        get_bytes(
            &s,
            "ver",
            "doc",
            GetOptions {
                version: Some("null".into()),
                ..GetOptions::default()
            }
        )
        .await,
        b"null two"
    );
    // A delete in a suspended bucket is a null delete marker.
    let d = s.delete_object("ver", "doc", None).await.unwrap();
    assert_eq!(d.version_id.as_deref(), Some("null"));
    assert!(d.delete_marker);
    assert!(matches!(
        s.get_object("ver", "doc", GetOptions::default()).await,
        Err(Error::NoSuchKey { .. })
    ));
    assert_eq!(get_bytes(&s, "ver", "doc", old).await, b"version 1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_5000_keys_with_delimiters_and_pages() {
    let tg = TestGrid::start(3, 2).await;
    let s = store_on(&tg, StoreConfig::default());
    s.create_bucket("many", OWNER, None).await.unwrap();
    let mut keys: Vec<String> = (0..5000)
        .map(|i| match i % 4 {
            0 => format!("top-{i:05}"),
            1 => format!("dir{}/file-{i:05}", i % 7),
            2 => format!("dir{}/sub{}/file-{i:05}", i % 7, i % 3),
            _ => format!("deep/a/b/c/{i:05}"),
        })
        .collect();
    let mut tasks = tokio::task::JoinSet::new();
    let chunks: Vec<Vec<String>> = keys.chunks(200).map(|c| c.to_vec()).collect();
    for batch in chunks {
        let s = s.clone();
        tasks.spawn(async move {
            for k in batch {
                put_bytes(&s, "many", &k, k.as_bytes()).await;
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    keys.sort();

    // Every key, in order, in pages of 333.
    let mut all = Vec::new();
    let mut after = None;
    let mut pages = 0;
    loop {
        let page = s
            .list_objects(
                "many",
                &ListObjectsParams {
                    start_after: after.clone(),
                    max_keys: 333,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        pages += 1;
        all.extend(page.objects.iter().map(|o| o.key.clone()));
        if !page.is_truncated {
            break;
        }
        after = page.next_start_after.clone();
    }
    assert_eq!(pages, 5000usize.div_ceil(333));
    assert_eq!(all, keys);

    // Root with "/": the dirs and "deep/" roll up.
    let page = s
        .list_objects(
            "many",
            &ListObjectsParams {
                delimiter: Some("/".into()),
                max_keys: 1000,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let mut prefixes: Vec<String> = (0..7).map(|d| format!("dir{d}/")).collect();
    prefixes.insert(0, "deep/".into());
    assert_eq!(page.common_prefixes, prefixes);
    assert_eq!(page.objects.len(), 1000 - prefixes.len());
    assert!(page.is_truncated, "1250 top-level keys do not fit one page");

    // Delimited pages resume after a common prefix.
    let mut seen_prefixes = Vec::new();
    let mut seen_objects = 0;
    let mut after = None;
    loop {
        let page = s
            .list_objects(
                "many",
                &ListObjectsParams {
                    prefix: "dir3/".into(),
                    delimiter: Some("/".into()),
                    start_after: after.clone(),
                    max_keys: 50,
                },
            )
            .await
            .unwrap();
        seen_prefixes.extend(page.common_prefixes.clone());
        seen_objects += page.objects.len();
        if !page.is_truncated {
            break;
        }
        after = page.next_start_after.clone();
    }
    assert_eq!(seen_prefixes, ["dir3/sub0/", "dir3/sub1/", "dir3/sub2/"]);
    let direct = keys
        .iter()
        .filter(|k| k.starts_with("dir3/") && !k["dir3/".len()..].contains('/'))
        .count();
    assert_eq!(seen_objects, direct);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_out_of_order_missing_and_too_small_parts() {
    let tg = TestGrid::start(3, 2).await;
    let cfg = StoreConfig {
        min_part_size: 1 << 20,
        ..StoreConfig::default()
    };
    let s = store_on(&tg, cfg);
    s.create_bucket("multi", OWNER, None).await.unwrap();
    let opts = MultipartOptions {
        content_type: Some("application/x-test".into()),
        checksum_algorithm: Some(ChecksumAlgorithm::Crc32),
        ..MultipartOptions::default()
    };
    let up = s
        .create_multipart_upload("multi", "assembled", OWNER, opts)
        .await
        .unwrap();
    let parts: Vec<Vec<u8>> = vec![
        Data::bytes((1 << 20) + 5, 1),
        Data::bytes(3 << 20, 2),
        Data::bytes(1000, 3),
    ];
    let mut etags = vec![String::new(); 3];
    for i in [2usize, 0, 1] {
        let p = s
            .upload_part(
                "multi",
                "assembled",
                &up.upload_id,
                i as u32 + 1,
                stream_of(parts[i].clone(), 100_000),
                PartOptions::default(),
            )
            .await
            .unwrap();
        etags[i] = p.etag;
    }
    let listed = s
        .list_parts("multi", "assembled", &up.upload_id, None, 1000)
        .await
        .unwrap();
    assert_eq!(
        listed
            .parts
            .iter()
            .map(|p| p.part_number)
            .collect::<Vec<_>>(),
        [1, 2, 3]
    );
    let uploads = s
        .list_multipart_uploads("multi", "", None, None, None, 100)
        .await
        .unwrap();
    assert_eq!(uploads.uploads.len(), 1);

    let completed = |nums: &[u32]| -> Vec<CompletedPart> {
        nums.iter()
            .map(|n| CompletedPart {
                part_number: *n,
                etag: format!(
                    "\"{}\"",
                    etags.get(*n as usize - 1).cloned().unwrap_or_default()
                ),
            })
            .collect()
    };
    // Out of order in the request.
    assert!(matches!(
        s.complete_multipart_upload("multi", "assembled", &up.upload_id, &completed(&[2, 1, 3]))
            .await,
        Err(Error::InvalidPartOrder)
    ));
    // A part never uploaded.
    let mut missing = completed(&[1, 2]);
    missing.push(CompletedPart {
        part_number: 4,
        etag: etags[0].clone(),
    });
    assert!(matches!(
        s.complete_multipart_upload("multi", "assembled", &up.upload_id, &missing)
            .await,
        Err(Error::InvalidPart { part: 4 })
    ));
    // A wrong ETag.
    let mut wrong = completed(&[1, 2, 3]);
    wrong[1].etag = "\"00000000000000000000000000000000\"".into();
    assert!(matches!(
        s.complete_multipart_upload("multi", "assembled", &up.upload_id, &wrong)
            .await,
        Err(Error::InvalidPart { part: 2 })
    ));
    // Part 3 (1000 bytes) is fine last, too small in the middle.
    assert!(matches!(
        s.complete_multipart_upload("multi", "assembled", &up.upload_id, &completed(&[1, 3, 2]))
            .await,
        Err(Error::InvalidPartOrder)
    ));
    let too_small = s
        .create_multipart_upload("multi", "small", OWNER, MultipartOptions::default())
        .await
        .unwrap();
    for (n, len) in [(1u32, 1000u64), (2, 2000)] {
        s.upload_part(
            "multi",
            "small",
            &too_small.upload_id,
            n,
            Data::new(len, 9).stream(),
            PartOptions::default(),
        )
        .await
        .unwrap();
    }
    let small_parts = s
        .list_parts("multi", "small", &too_small.upload_id, None, 10)
        .await
        .unwrap();
    let small_done: Vec<CompletedPart> = small_parts
        .parts
        .iter()
        .map(|p| CompletedPart {
            part_number: p.part_number,
            etag: p.etag.clone(),
        })
        .collect();
    assert!(matches!(
        s.complete_multipart_upload("multi", "small", &too_small.upload_id, &small_done)
            .await,
        Err(Error::EntityTooSmall { part: 1, .. })
    ));
    s.abort_multipart_upload("multi", "small", &too_small.upload_id)
        .await
        .unwrap();
    assert!(matches!(
        s.list_parts("multi", "small", &too_small.upload_id, None, 10)
            .await,
        Err(Error::NoSuchUpload(_))
    ));

    let done = s
        .complete_multipart_upload("multi", "assembled", &up.upload_id, &completed(&[1, 2, 3]))
        .await
        .unwrap();
    assert!(done.etag.ends_with("-3"), "{}", done.etag);
    assert!(done.checksums["CRC32"].ends_with("-3"));
    let whole: Vec<u8> = parts.concat();
    let got = s
        .get_object("multi", "assembled", GetOptions::default())
        .await
        .unwrap();
    assert_eq!(got.info.etag, done.etag);
    assert_eq!(got.info.content_type, "application/x-test");
    assert_eq!(got.info.parts, 3);
    assert_eq!(read_all(got.body).await, whole);
    // Part 2 alone, by part number.
    let p2 = get_bytes(
        &s,
        "multi",
        "assembled",
        GetOptions {
            part_number: Some(2),
            ..GetOptions::default()
        },
    )
    .await;
    assert_eq!(p2, parts[1]);
    // HEAD by part number names the same bytes.
    let head = s
        .head_object(
            "multi",
            "assembled",
            &GetOptions {
                part_number: Some(2),
                ..GetOptions::default()
            },
        )
        .await
        .unwrap();
    let start = parts[0].len() as u64;
    assert_eq!(
        head.part_range,
        Some((start, start + parts[1].len() as u64))
    );
    // Completing again (a client retry) gets the first answer; the upload
    // itself is gone.
    let again = s
        .complete_multipart_upload("multi", "assembled", &up.upload_id, &completed(&[1, 2, 3]))
        .await
        .unwrap();
    assert_eq!(again.etag, done.etag);
    assert!(matches!(
        s.list_parts("multi", "assembled", &up.upload_id, None, 10)
            .await,
        Err(Error::NoSuchUpload(_))
    ));
    let uploads = s
        .list_multipart_uploads("multi", "", None, None, None, 100)
        .await
        .unwrap();
    assert!(uploads.uploads.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_puts_to_one_key_leave_one_intact_winner() {
    let tg = TestGrid::start(3, 2).await;
    let s = store_on(&tg, StoreConfig::default());
    s.create_bucket("race", OWNER, None).await.unwrap();
    let payloads: Vec<Vec<u8>> = (0..8).map(|i| Data::bytes(300_000 + i * 1000, i)).collect();
    let mut tasks = tokio::task::JoinSet::new();
    for p in payloads.clone() {
        // Each writer through its own gateway (clock, connections).
        let s = store_on(&tg, StoreConfig::default());
        tasks.spawn(async move {
            s.put_object(
                "race",
                "contended",
                stream_of(p, 50_000),
                PutOptions::default(),
            )
            .await
            .unwrap()
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    let got = get_bytes(&s, "race", "contended", GetOptions::default()).await;
    assert!(
        payloads.contains(&got),
        "the object is exactly one writer's data"
    );
    let versions = s
        .list_object_versions(
            "race",
            &ListVersionsParams {
                max_keys: 100,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(versions.versions.len(), 1, "one null version survives");
    let head = s
        .head_object("race", "contended", &GetOptions::default())
        .await
        .unwrap();
    assert_eq!(head.size, got.len() as u64);
}

/// Uploads share one write budget smaller than a single chunk: each chunk
/// waits for the whole budget, so chunks of all uploads go one at a time,
/// and every upload still finishes with its exact bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_share_a_write_budget_smaller_than_a_chunk() {
    let tg = TestGrid::start(3, 2).await;
    let s = store_on(
        &tg,
        StoreConfig {
            write_bytes_in_flight: 1,
            ..StoreConfig::default()
        },
    );
    s.create_bucket("budget", OWNER, None).await.unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..6u64 {
        let s = s.clone();
        tasks.spawn(async move {
            let key = format!("k{i}");
            let put = s
                .put_object(
                    "budget",
                    &key,
                    Data::new(3 << 20, i).stream(),
                    PutOptions::default(),
                )
                .await
                .unwrap();
            assert_eq!(put.size, 3 << 20);
            (key, i)
        });
    }
    while let Some(r) = tasks.join_next().await {
        let (key, seed) = r.unwrap();
        let got = get_bytes(&s, "budget", &key, GetOptions::default()).await;
        assert!(got == Data::bytes(3 << 20, seed), "{key}: other bytes");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_reads_and_copies() {
    let tg = TestGrid::start(3, 2).await;
    let s = store_on(&tg, StoreConfig::default());
    s.create_bucket("cond", OWNER, None).await.unwrap();
    s.create_bucket("other", OWNER, None).await.unwrap();
    let data = Data::bytes(2 << 20, 11);
    let put = put_bytes(&s, "cond", "src", &data).await;
    let etag = put.etag.clone();
    let with = |c: Conditions| GetOptions {
        conditions: c,
        ..GetOptions::default()
    };
    let now = put.last_modified_ms;
    let cases: Vec<(Conditions, &str)> = vec![
        (
            Conditions {
                if_match: Some(format!("\"{etag}\"")),
                ..Default::default()
            },
            "ok",
        ),
        (
            Conditions {
                if_match: Some("\"nope\"".into()),
                ..Default::default()
            },
            "412",
        ),
        (
            Conditions {
                if_none_match: Some(format!("\"{etag}\"")),
                ..Default::default()
            },
            "304",
        ),
        (
            Conditions {
                if_none_match: Some("*".into()),
                ..Default::default()
            },
            "304",
        ),
        (
            Conditions {
                if_modified_since_ms: Some(now + 10_000),
                ..Default::default()
            },
            "304",
        ),
        (
            Conditions {
                if_modified_since_ms: Some(now - 10_000),
                ..Default::default()
            },
            "ok",
        ),
        (
            Conditions {
                if_unmodified_since_ms: Some(now - 10_000),
                ..Default::default()
            },
            "412",
        ),
        (
            Conditions {
                if_match: Some(etag.clone()),
                if_unmodified_since_ms: Some(now - 10_000),
                ..Default::default()
            },
            "ok",
        ),
    ];
    for (c, want) in cases {
        let r = s.head_object("cond", "src", &with(c.clone())).await;
        let got = match r {
            Ok(_) => "ok",
            Err(Error::PreconditionFailed) => "412",
            Err(Error::NotModified { .. }) => "304",
            Err(e) => panic!("{c:?}: {e}"),
        };
        assert_eq!(got, want, "{c:?}");
    }

    // Same bucket: a new manifest over the same chunks, no new shards.
    let before = support::objects::stored_bytes(&tg).await;
    let copy = s
        .copy_object("cond", "src", "cond", "copy", CopyOptions::default())
        .await
        .unwrap();
    assert_eq!(copy.etag, etag);
    assert_eq!(
        support::objects::stored_bytes(&tg).await,
        before,
        "no data moved"
    );
    assert_eq!(
        get_bytes(&s, "cond", "copy", GetOptions::default()).await,
        data
    );
    // The copy outlives its source.
    s.delete_object("cond", "src", None).await.unwrap();
    assert_eq!(
        get_bytes(&s, "cond", "copy", GetOptions::default()).await,
        data
    );
    // Another bucket is another key domain: the data is re-sealed.
    s.copy_object("cond", "copy", "other", "moved", CopyOptions::default())
        .await
        .unwrap();
    assert_eq!(
        get_bytes(&s, "other", "moved", GetOptions::default()).await,
        data
    );
    assert!(support::objects::stored_bytes(&tg).await > before);
    // Copy-source conditions fail with 412, never 304.
    let cond = CopyOptions {
        source_conditions: Conditions {
            if_none_match: Some(etag.clone()),
            ..Default::default()
        },
        ..CopyOptions::default()
    };
    assert!(matches!(
        s.copy_object("cond", "copy", "cond", "again", cond).await,
        Err(Error::PreconditionFailed)
    ));
    assert!(matches!(
        s.copy_object("cond", "copy", "cond", "copy", CopyOptions::default())
            .await,
        Err(Error::InvalidArgument(_))
    ));
    let sha = Sha256::digest(&data);
    let (got_sha, _) = sha256_of(
        s.get_object("other", "moved", GetOptions::default())
            .await
            .unwrap()
            .body,
    )
    .await;
    assert_eq!(got_sha.as_slice(), sha.as_slice());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_classes_choose_the_erasure_shape_and_stale_uploads_go() {
    let tg = TestGrid::start(3, 2).await;
    let s = store_on(&tg, StoreConfig::default());
    s.create_bucket("classes", OWNER, None).await.unwrap();
    let data = Data::bytes(3 << 20, 61);
    let before = support::objects::stored_bytes(&tg).await;
    s.put_object(
        "classes",
        "rr",
        stream_of(data.clone(), 1 << 20),
        PutOptions {
            storage_class: Some("REDUCED_REDUNDANCY".into()),
            ..PutOptions::default()
        },
    )
    .await
    .unwrap();
    let rr = support::objects::stored_bytes(&tg).await - before;
    // 4+1 stores 1.25x the data (plus headers and padding), 4+2 1.5x.
    let ratio = rr as f64 / data.len() as f64;
    assert!(
        (1.2..1.3).contains(&ratio),
        "REDUCED_REDUNDANCY stored {ratio:.3}x"
    );
    let head = s
        .head_object("classes", "rr", &GetOptions::default())
        .await
        .unwrap();
    assert_eq!(head.storage_class, "REDUCED_REDUNDANCY");
    assert_eq!(
        get_bytes(&s, "classes", "rr", GetOptions::default()).await,
        data
    );
    assert!(matches!(
        s.put_object(
            "classes",
            "bad",
            stream_of(vec![1], 1),
            PutOptions {
                storage_class: Some("NO_SUCH_CLASS".into()),
                ..PutOptions::default()
            },
        )
        .await,
        Err(Error::InvalidArgument(_))
    ));

    // An upload left unfinished is aborted once older than the age given.
    let up = s
        .create_multipart_upload("classes", "abandoned", OWNER, MultipartOptions::default())
        .await
        .unwrap();
    s.upload_part(
        "classes",
        "abandoned",
        &up.upload_id,
        1,
        Data::new(2 << 20, 62).stream(),
        PartOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(
        s.abort_stale_uploads(std::time::Duration::from_secs(3600))
            .await
            .unwrap(),
        0
    );
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    assert_eq!(
        s.abort_stale_uploads(std::time::Duration::from_millis(10))
            .await
            .unwrap(),
        1
    );
    assert!(matches!(
        s.list_parts("classes", "abandoned", &up.upload_id, None, 10)
            .await,
        Err(Error::NoSuchUpload(_))
    ));
}
