//! Versions dedup whatever client wrote them: a multipart object is cut
//! into the chunks that chunking its whole stream gives, so a second
//! version with a small edit adds about what a single PUT would, whatever
//! the part size, the order parts arrive in, or whether either version
//! came as one PUT.

mod support;

use bytes::Bytes;
use cluster::{
    ByteRange, CompletedPart, GetOptions, MultipartOptions, ObjectStore, PartOptions, PutOptions,
    StoreConfig, VersioningState,
};
use futures_util::StreamExt;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use sha2::{Digest, Sha256};
use std::convert::Infallible;
use std::time::Duration;
use support::grid::TestGrid;
use support::objects::{object, read_all, store_on, Data, OWNER};

const MIB: usize = 1 << 20;

/// How an object is uploaded.
#[derive(Debug, Clone, Copy)]
enum Upload {
    Single,
    /// Parts of this many MiB, sent in shuffled order, two at a time.
    Parts(usize),
}

/// The first version, and the second: the same with 1 KiB inserted in
/// the middle.
fn versions() -> (Vec<u8>, Vec<u8>) {
    let a = Data::bytes(64 * MIB as u64, 2101);
    let mut b = a.clone();
    let insert = Data::bytes(1024, 2102);
    let mid = a.len() / 2 + 12_345;
    b.splice(mid..mid, insert);
    (a, b)
}

fn stream(data: Bytes) -> impl futures_util::Stream<Item = Result<Bytes, Infallible>> + Unpin {
    // Network-sized pieces, as a gateway hands them over.
    let pieces: Vec<Result<Bytes, Infallible>> = (0..data.len())
        .step_by(64 << 10)
        .map(|i| Ok(data.slice(i..(i + (64 << 10)).min(data.len()))))
        .collect();
    futures_util::stream::iter(pieces)
}

async fn upload(s: &ObjectStore, bucket: &str, key: &str, data: &[u8], how: Upload, seed: u64) {
    let data = Bytes::copy_from_slice(data);
    let Upload::Parts(mib) = how else {
        s.put_object(bucket, key, stream(data), PutOptions::default())
            .await
            .unwrap();
        return;
    };
    let u = s
        .create_multipart_upload(bucket, key, OWNER, MultipartOptions::default())
        .await
        .unwrap();
    let size = mib * MIB;
    let mut numbers: Vec<u32> = (1..=data.len().div_ceil(size) as u32).collect();
    numbers.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
    let mut etags = std::collections::BTreeMap::new();
    for pair in numbers.chunks(2) {
        let sends = pair.iter().map(|&n| {
            let start = (n as usize - 1) * size;
            let part = data.slice(start..(start + size).min(data.len()));
            let upload_id = u.upload_id.clone();
            async move {
                let p = s
                    .upload_part(
                        bucket,
                        key,
                        &upload_id,
                        n,
                        stream(part),
                        PartOptions::default(),
                    )
                    .await
                    .unwrap();
                (n, p.etag)
            }
        });
        for (n, etag) in futures_util::future::join_all(sends).await {
            etags.insert(n, etag);
        }
    }
    let parts: Vec<CompletedPart> = etags
        .into_iter()
        .map(|(part_number, etag)| CompletedPart { part_number, etag })
        .collect();
    s.complete_multipart_upload(bucket, key, &u.upload_id, &parts)
        .await
        .unwrap();
}

/// Let the background stitches end, then collect every reference to a
/// chunk its version no longer names and every shard no reference names
/// (the parts' edge chunks the stitch re-cut); the shard bytes stored.
async fn settled_bytes(tg: &TestGrid, s: &ObjectStore) -> u64 {
    s.stitching_settled().await;
    for n in &tg.map.nodes {
        s.sweep_orphan_refs(&n.id, Duration::ZERO).await.unwrap();
    }
    let now = ::grid::clock::now_ms();
    for n in tg.nodes.iter().flatten() {
        // The first pass marks, the second (later) deletes.
        n.gc_pass(now, 0).await.unwrap();
        n.gc_pass(now + 1, 0).await.unwrap();
    }
    support::objects::stored_bytes(tg).await
}

/// Whether some chunk of `key` crosses one of its part edges (the stitch
/// re-cut it).
async fn stitched(s: &ObjectStore, bucket: &str, key: &str, part_size: u64) -> bool {
    s.object_chunks(bucket, key, None)
        .await
        .unwrap()
        .iter()
        .any(|&(offset, len)| offset / part_size != (offset + len - 1) / part_size)
}

/// The object reads back as `data`: whole, by ranges across chunk and
/// part edges, and by part number when it was uploaded in parts.
async fn reads_back(
    s: &ObjectStore,
    bucket: &str,
    key: &str,
    version: &str,
    data: &[u8],
    how: Upload,
) {
    let get = |range: Option<ByteRange>, part_number: Option<u32>| GetOptions {
        version: Some(version.to_string()),
        range,
        part_number,
        ..GetOptions::default()
    };
    let whole = read_all(
        s.get_object(bucket, key, get(None, None))
            .await
            .unwrap()
            .body,
    )
    .await;
    assert_eq!(
        Sha256::digest(&whole),
        Sha256::digest(data),
        "{key} {how:?} whole"
    );
    for (a, b) in [
        (0, 0),
        (MIB as u64 - 7, 3 * MIB as u64 + 11),
        (5 * MIB as u64 - 1, 5 * MIB as u64),
        (8 * MIB as u64 - 100, 16 * MIB as u64 + 100),
        (data.len() as u64 - 5000, data.len() as u64 - 1),
    ] {
        let got = read_all(
            s.get_object(bucket, key, get(Some(ByteRange::FromTo(a, b)), None))
                .await
                .unwrap()
                .body,
        )
        .await;
        assert_eq!(
            got,
            &data[a as usize..=b as usize],
            "{key} {how:?} bytes {a}-{b}"
        );
    }
    if let Upload::Parts(mib) = how {
        let size = mib * MIB;
        let count = data.len().div_ceil(size);
        for n in [1, count / 2 + 1, count] {
            let r = s
                .get_object(bucket, key, get(None, Some(n as u32)))
                .await
                .unwrap();
            assert_eq!(r.info.parts, count, "{key}: parts count");
            let got = read_all(r.body).await;
            let start = (n - 1) * size;
            let end = (start + size).min(data.len());
            assert!(got == data[start..end], "{key} {how:?} part {n}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_small_edit_adds_little_however_the_versions_were_uploaded() {
    let tg = TestGrid::start(3, 2).await;
    let s = store_on(&tg, StoreConfig::default());
    let (a, b) = versions();
    let cases = [
        (Upload::Parts(8), Upload::Parts(8)),
        (Upload::Parts(5), Upload::Parts(5)),
        (Upload::Parts(16), Upload::Parts(16)),
        (Upload::Single, Upload::Parts(8)),
        (Upload::Parts(8), Upload::Single),
    ];
    let mut report = Vec::new();
    for (i, (first, second)) in cases.into_iter().enumerate() {
        // Cuts are seeded per bucket, so what the edit costs is the size
        // of the one or two chunks around it in that bucket (up to 4 MiB,
        // 6 % of the file): about one bucket in thirty draws more than
        // 5 % even for single PUTs. A second bucket draws again; a
        // stitch that failed to dedup (12 % and more) fails both.
        let mut added = Vec::new();
        for attempt in 0..2u64 {
            // A bucket each: chunks dedup within a bucket only.
            let bucket = format!("dedup-{i}-{attempt}");
            let seed = i as u64 * 10 + attempt;
            s.create_bucket(&bucket, OWNER, None).await.unwrap();
            s.set_versioning(&bucket, VersioningState::Enabled)
                .await
                .unwrap();
            let empty = settled_bytes(&tg, &s).await;
            upload(&s, &bucket, "file", &a, first, seed).await;
            let one = settled_bytes(&tg, &s).await;
            upload(&s, &bucket, "file", &b, second, seed + 100).await;
            let two = settled_bytes(&tg, &s).await;
            added.push((two - one) as f64 / (one - empty) as f64);
            let versions = s
                .list_object_versions(
                    &bucket,
                    &cluster::ListVersionsParams {
                        max_keys: 10,
                        ..Default::default()
                    },
                )
                .await
                .unwrap();
            let ids: Vec<String> = versions
                .versions
                .iter()
                .map(|v| v.version_id.clone())
                .collect();
            assert_eq!(ids.len(), 2);
            // Newest first.
            reads_back(&s, &bucket, "file", &ids[1], &a, first).await;
            reads_back(&s, &bucket, "file", &ids[0], &b, second).await;
            if added.iter().any(|&x| x <= 0.05) {
                break;
            }
        }
        let shown: Vec<String> = added
            .iter()
            .map(|x| format!("{:.2} %", x * 100.0))
            .collect();
        report.push(format!(
            "{first:?} then {second:?}: the second adds {}",
            shown.join(", then ")
        ));
        assert!(
            added.iter().any(|&x| x <= 0.05),
            "{first:?} then {second:?}: the second version added {} of the first's \
             shard bytes",
            shown.join(" and ")
        );
    }
    println!("{}", report.join("\n"));
}

/// Parts too small to hold a cut of their own (the chunker's maximum is
/// above the part size) still give a whole object that reads back right.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parts_smaller_than_a_chunk_stitch_into_one_stream() {
    let tg = TestGrid::start(3, 2).await;
    let s = store_on(
        &tg,
        StoreConfig {
            min_part_size: 1,
            ..StoreConfig::default()
        },
    );
    s.create_bucket("small", OWNER, None).await.unwrap();
    let data = Data::bytes(9 * MIB as u64 + 777, 2103);
    let u = s
        .create_multipart_upload("small", "k", OWNER, MultipartOptions::default())
        .await
        .unwrap();
    // Parts of 300 KiB to 2.3 MiB, then an empty one.
    let mut parts = Vec::new();
    let (mut at, mut n) = (0usize, 1u32);
    while at < data.len() {
        let len = (300 << 10) + (n as usize * 700_001) % (2 * MIB);
        let end = (at + len).min(data.len());
        let p = s
            .upload_part(
                "small",
                "k",
                &u.upload_id,
                n,
                stream(Bytes::copy_from_slice(&data[at..end])),
                PartOptions::default(),
            )
            .await
            .unwrap();
        parts.push(CompletedPart {
            part_number: n,
            etag: p.etag,
        });
        at = end;
        n += 1;
    }
    let p = s
        .upload_part(
            "small",
            "k",
            &u.upload_id,
            n,
            stream(Bytes::new()),
            PartOptions::default(),
        )
        .await
        .unwrap();
    parts.push(CompletedPart {
        part_number: n,
        etag: p.etag,
    });
    s.complete_multipart_upload("small", "k", &u.upload_id, &parts)
        .await
        .unwrap();
    let r = s
        .get_object("small", "k", GetOptions::default())
        .await
        .unwrap();
    let mut body = r.body;
    let mut h = Sha256::new();
    while let Some(piece) = body.next().await {
        h.update(piece.unwrap());
    }
    assert_eq!(h.finalize(), Sha256::digest(&data));
    // The same bytes as one PUT: the multipart object added nothing new
    // but the shards of its empty-free stream, which the PUT now shares.
    let before = settled_bytes(&tg, &s).await;
    s.put_object(
        "small",
        "as-one",
        stream(Bytes::copy_from_slice(&data)),
        PutOptions::default(),
    )
    .await
    .unwrap();
    let after = settled_bytes(&tg, &s).await;
    assert_eq!(
        after, before,
        "the single PUT found every chunk already stored"
    );
}

/// Start an upload of `data` in 5 MiB parts; the parts to complete it with.
async fn parts_of(
    s: &ObjectStore,
    bucket: &str,
    key: &str,
    data: &[u8],
) -> (String, Vec<CompletedPart>) {
    let u = s
        .create_multipart_upload(bucket, key, OWNER, MultipartOptions::default())
        .await
        .unwrap();
    let mut parts = Vec::new();
    for (i, piece) in data.chunks(5 * MIB).enumerate() {
        let n = i as u32 + 1;
        let p = s
            .upload_part(
                bucket,
                key,
                &u.upload_id,
                n,
                stream(Bytes::copy_from_slice(piece)),
                PartOptions::default(),
            )
            .await
            .unwrap();
        parts.push(CompletedPart {
            part_number: n,
            etag: p.etag,
        });
    }
    (u.upload_id, parts)
}

/// The stitch after completion reads the parts' edge chunks back: with a
/// node dead it reads around it. With too few nodes to store, completion
/// fails with an error, the upload stays open, and completing it later
/// works.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn completion_reads_around_dead_nodes_and_fails_cleanly_without_enough() {
    let mut tg = TestGrid::start(3, 2).await;
    let s = store_on(&tg, StoreConfig::default());
    s.create_bucket("faults", OWNER, None).await.unwrap();
    let one = Data::bytes(17 * MIB as u64, 2104);
    let two = Data::bytes(17 * MIB as u64, 2105);
    let (id1, parts1) = parts_of(&s, "faults", "one", &one).await;
    let (id2, parts2) = parts_of(&s, "faults", "two", &two).await;
    let ids: Vec<String> = tg.map.nodes.iter().map(|n| n.id.clone()).collect();

    tg.kill(&ids[0]).await;
    s.complete_multipart_upload("faults", "one", &id1, &parts1)
        .await
        .unwrap();
    s.stitching_settled().await;
    assert!(
        stitched(&s, "faults", "one", 5 * MIB as u64).await,
        "the stitch ran around the dead node"
    );
    let got = object(&s, "faults", "one").await;
    assert!(got == one, "object one reads back");

    tg.kill(&ids[1]).await;
    tg.kill(&ids[2]).await;
    let failed = s
        .complete_multipart_upload("faults", "two", &id2, &parts2)
        .await;
    assert!(failed.is_err(), "completed with half the nodes dead");
    assert!(
        s.get_object("faults", "two", GetOptions::default())
            .await
            .is_err(),
        "a failed completion left an object"
    );

    for id in &ids[..3] {
        tg.restart(id).await;
    }
    let listed = s
        .list_parts("faults", "two", &id2, None, 100)
        .await
        .unwrap();
    assert_eq!(listed.parts.len(), parts2.len(), "the upload is still open");
    s.complete_multipart_upload("faults", "two", &id2, &parts2)
        .await
        .unwrap();
    let got = object(&s, "faults", "two").await;
    assert!(got == two, "object two reads back");
}

/// A rewrite of the manifest while the stitch runs (tags set right after
/// completion) is not undone, and the object reads back either way; a
/// version deleted before its stitch leaves nothing behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_stitch_keeps_what_changed_meanwhile() {
    let tg = TestGrid::start(3, 2).await;
    let s = store_on(&tg, StoreConfig::default());
    s.create_bucket("meanwhile", OWNER, None).await.unwrap();
    let data = Data::bytes(21 * MIB as u64, 2106);
    let empty = settled_bytes(&tg, &s).await;

    let (id, parts) = parts_of(&s, "meanwhile", "tagged", &data).await;
    s.complete_multipart_upload("meanwhile", "tagged", &id, &parts)
        .await
        .unwrap();
    let tags = std::collections::BTreeMap::from([("k".to_string(), "v".to_string())]);
    s.set_object_tags("meanwhile", "tagged", None, tags.clone())
        .await
        .unwrap();
    s.stitching_settled().await;
    let info = s
        .head_object("meanwhile", "tagged", &GetOptions::default())
        .await
        .unwrap();
    assert_eq!(info.tags, tags, "the tags set during the stitch");
    settled_bytes(&tg, &s).await;
    let got = object(&s, "meanwhile", "tagged").await;
    assert!(got == data, "the tagged object reads back");

    // Deleted before its stitch ran: the stitch finds no version.
    let (id, parts) = parts_of(&s, "meanwhile", "gone", &data).await;
    s.complete_multipart_upload("meanwhile", "gone", &id, &parts)
        .await
        .unwrap();
    s.delete_object("meanwhile", "gone", None).await.unwrap();
    s.delete_object("meanwhile", "tagged", None).await.unwrap();
    assert_eq!(
        settled_bytes(&tg, &s).await,
        empty,
        "nothing of either object is left"
    );
}
