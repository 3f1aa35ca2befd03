//! Farms learn nothing from what they store or carry: every name and every
//! piece of metadata a user gives the store (bucket names, object keys,
//! user metadata, tags, content types, storage classes, checksums, the
//! SSE-C key's MD5, multipart uploads in progress, user names, WebDAV
//! locks) and every digest of an object's plaintext is absent from the
//! nodes' data directories (raw files, and every record read back through
//! the metadata store, so an engine that compresses is searched too) and from the traffic
//! between the gateway and the nodes. Each canary is searched as raw
//! bytes, hex and base64.

mod support;

use base64::Engine;
use cluster::checksum::ChecksumAlgorithm;
use cluster::locks::Lock;
use cluster::{CustomerKey, MultipartOptions, ObjectStore, PartOptions, PutOptions, StoreConfig};
use grid::chunk_io::Grid;
use grid::ClientOptions;
use md5::Md5;
use metadata::db::{Db, Table};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::grid::TestGrid;
use support::objects::{stream_of, Data, OWNER};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Every byte that crossed the proxies, both ways.
type Capture = Arc<Mutex<Vec<u8>>>;

/// A TCP proxy in front of `target` that records everything it carries.
async fn capturing_proxy(target: String, capture: Capture) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = TcpStream::connect(&target).await else {
                continue;
            };
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            tokio::spawn(pump(cr, sw, capture.clone()));
            tokio::spawn(pump(sr, cw, capture.clone()));
        }
    });
    addr
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    capture: Capture,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                capture.lock().unwrap().extend_from_slice(&buf[..n]);
                if to.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown().await;
}

/// The forms a secret could take on disk or on the wire.
fn encodings(secret: &[u8]) -> Vec<Vec<u8>> {
    let mut out = vec![
        secret.to_vec(),
        hex::encode(secret).into_bytes(),
        hex::encode_upper(secret).into_bytes(),
    ];
    // Base64 of a secret inside a longer value depends on its alignment:
    // search the part of each of the three alignments that does not
    // depend on its neighbours.
    for engine in [
        base64::engine::general_purpose::STANDARD,
        base64::engine::general_purpose::URL_SAFE,
    ] {
        for shift in 0..3usize {
            let mut padded = vec![0u8; shift];
            padded.extend_from_slice(secret);
            let text = engine.encode(&padded);
            let skip = (shift * 4).div_ceil(3);
            let keep = text.len().saturating_sub(4);
            if keep > skip + 4 {
                out.push(text.as_bytes()[skip..keep].to_vec());
            }
        }
    }
    out
}

/// Every canary in every form, searched in one pass per haystack.
struct Needles {
    names: Vec<String>,
    /// The canary each pattern is a form of.
    owner: Vec<usize>,
    matcher: aho_corasick::AhoCorasick,
}

impl Needles {
    fn new(canaries: &[(String, Vec<u8>)]) -> Self {
        let mut owner = Vec::new();
        let mut patterns = Vec::new();
        for (i, (_, value)) in canaries.iter().enumerate() {
            for form in encodings(value) {
                owner.push(i);
                patterns.push(form);
            }
        }
        Self {
            names: canaries.iter().map(|(n, _)| n.clone()).collect(),
            owner,
            matcher: aho_corasick::AhoCorasick::new(&patterns).unwrap(),
        }
    }

    fn find(&self, haystack: &[u8]) -> Vec<String> {
        let mut hits: Vec<String> = self
            .matcher
            .find_overlapping_iter(haystack)
            .map(|m| self.names[self.owner[m.pattern().as_usize()]].clone())
            .collect();
        hits.sort();
        hits.dedup();
        hits
    }
}

fn files_under(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            files_under(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn crc32c_b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(crc32c::crc32c(data).to_be_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_name_metadata_or_digest_reaches_a_node() {
    let mut grid = TestGrid::start(3, 2).await;
    // The gateway reaches every node through a capturing proxy.
    let capture: Capture = Arc::default();
    let mut map = grid.map.clone();
    for n in &mut map.nodes {
        n.addr = capturing_proxy(n.addr.clone(), capture.clone()).await;
    }
    let opts = ClientOptions {
        timeout: Duration::from_secs(10),
        ..ClientOptions::default()
    };
    let store = ObjectStore::new(
        Grid::new(map, opts),
        cluster::MasterKey::from_bytes([42; 32]),
        StoreConfig::default(),
    );

    let mut canaries: Vec<(String, Vec<u8>)> = Vec::new();
    let mut canary = |what: &str, value: &str| {
        canaries.push((what.to_string(), value.as_bytes().to_vec()));
        value.to_string()
    };
    let bucket = canary("bucket name", "canarybucketqx7");
    let small_key = canary("object key", "canary-dir/canary-small-object.txt");
    let big_key = canary("object key (chunked)", "canary-dir/canary-large-object.bin");
    let ssec_key = canary("object key (SSE-C)", "canary-ssec-object");
    let meta_name = canary("user metadata name", "canarymetaname");
    let meta_value = canary("user metadata value", "canary-metadata-value");
    let tag_key = canary("tag key", "canary-tag-key");
    let tag_value = canary("tag value", "canary-tag-value");
    let content_type = canary("content type", "application/x-canary-type");
    let storage_class = canary("storage class", "REDUCED_REDUNDANCY");
    let upload_key = canary("multipart key", "canary-upload-in-progress");
    let upload_meta = canary("multipart metadata", "canary-upload-metadata");
    let user_name = canary("user name", "canary-user-name");
    let access_key = canary("access key id", "CANARYACCESSKEY7");
    let secret_key = canary("secret key", "canary-secret-key-value");
    let lock_path = canary("lock path", "/canarybucketqx7/canary-locked-file");
    let lock_owner = canary("lock owner", "<D:href>canary-lock-owner</D:href>");
    let lock_token = canary("lock token", "opaquelocktoken:canary-lock-token");

    store.create_bucket(&bucket, OWNER, None).await.unwrap();
    store
        .create_user(&user_name, false, Some(&access_key), Some(&secret_key))
        .await
        .unwrap();

    let put_opts = || PutOptions {
        content_type: Some(content_type.clone()),
        user_metadata: BTreeMap::from([(meta_name.clone(), meta_value.clone())]),
        storage_class: Some(storage_class.clone()),
        checksums: vec![ChecksumAlgorithm::Sha256, ChecksumAlgorithm::Crc32c],
        tags: BTreeMap::from([(tag_key.clone(), tag_value.clone())]),
        ..Default::default()
    };
    let mut plaintexts = Vec::new();
    for (key, len, seed) in [(&small_key, 3_000u64, 1u64), (&big_key, 3 << 20, 2)] {
        let data = Data::bytes(len, seed);
        store
            .put_object(&bucket, key, stream_of(data.clone(), 65_536), put_opts())
            .await
            .unwrap();
        plaintexts.push(data);
    }
    let customer = CustomerKey::new([0xc5; 32]);
    canaries.push((
        "SSE-C key MD5".into(),
        customer.md5_b64().as_bytes().to_vec(),
    ));
    let ssec_data = Data::bytes(40_000, 3);
    store
        .put_object(
            &bucket,
            &ssec_key,
            stream_of(ssec_data.clone(), 65_536),
            PutOptions {
                customer_key: Some(customer),
                ..put_opts()
            },
        )
        .await
        .unwrap();
    plaintexts.push(ssec_data);

    let upload = store
        .create_multipart_upload(
            &bucket,
            &upload_key,
            OWNER,
            MultipartOptions {
                content_type: Some(content_type.clone()),
                user_metadata: BTreeMap::from([(meta_name.clone(), upload_meta.clone())]),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let part_data = Data::bytes(5 << 20, 4);
    store
        .upload_part(
            &bucket,
            &upload_key,
            &upload.upload_id,
            1,
            stream_of(part_data.clone(), 65_536),
            PartOptions::default(),
        )
        .await
        .unwrap();
    plaintexts.push(part_data);

    store
        .put_lock(&Lock {
            path: lock_path.clone(),
            token: lock_token.clone(),
            principal: access_key.clone(),
            owner_xml: lock_owner.clone().into_bytes(),
            expires_ms: grid::clock::now_ms() + 600_000,
            timeout_secs: 600,
            deep: true,
            ..Default::default()
        })
        .await
        .unwrap();

    // The store reads all of it back.
    let listed = store
        .list_objects(
            &bucket,
            &cluster::ListObjectsParams {
                max_keys: 1000,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let keys: Vec<&str> = listed.objects.iter().map(|o| o.key.as_str()).collect();
    assert_eq!(
        keys,
        vec![big_key.as_str(), small_key.as_str(), ssec_key.as_str()]
    );
    assert_eq!(listed.objects[0].content_type, content_type);
    assert_eq!(listed.objects[0].user_metadata[&meta_name], meta_value);
    let uploads = store
        .list_multipart_uploads(&bucket, "", None, None, None, 10)
        .await
        .unwrap();
    assert_eq!(uploads.uploads.len(), 1);
    assert_eq!(uploads.uploads[0].key, upload_key);
    assert_eq!(
        store
            .list_locks("/canarybucketqx7/", grid::clock::now_ms())
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(store
        .list_users()
        .await
        .unwrap()
        .iter()
        .any(|u| u.name == user_name));

    for (i, data) in plaintexts.iter().enumerate() {
        canaries.push((format!("MD5 of plaintext {i}"), Md5::digest(data).to_vec()));
        canaries.push((
            format!("SHA-256 of plaintext {i}"),
            Sha256::digest(data).to_vec(),
        ));
        canaries.push((
            format!("CRC32C of plaintext {i}"),
            crc32c::crc32c(data).to_be_bytes().to_vec(),
        ));
        canaries.push((
            format!("CRC32C (base64) of plaintext {i}"),
            crc32c_b64(data).into_bytes(),
        ));
    }
    let needles = Needles::new(&canaries);
    // The search finds a canary in each form it looks for.
    let probe = canaries[0].1.clone();
    for form in [
        probe.clone(),
        hex::encode(&probe).into_bytes(),
        base64::engine::general_purpose::STANDARD
            .encode([b"x".as_slice(), &probe, b"yz"].concat())
            .into_bytes(),
    ] {
        let haystack = [b"..".as_slice(), &form, b".."].concat();
        assert_eq!(needles.find(&haystack), vec![canaries[0].0.clone()]);
    }

    // The traffic between the gateway and the nodes.
    let traffic = capture.lock().unwrap().clone();
    assert!(traffic.len() > 8 << 20, "the capture saw the writes");
    let hits = needles.find(&traffic);
    assert!(hits.is_empty(), "gateway-node traffic carries {hits:?}");

    // Every file of every node's data directory, as stored.
    let ids: Vec<String> = grid.map.nodes.iter().map(|n| n.id.clone()).collect();
    for id in &ids {
        grid.kill(id).await;
    }
    let mut files = Vec::new();
    files_under(grid.dir.path(), &mut files);
    assert!(files.len() > 20);
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        let hits = needles.find(&bytes);
        assert!(hits.is_empty(), "{} holds {hits:?}", f.display());
    }

    // Every record, read through the metadata store (so compressed blocks are
    // searched decompressed).
    let mut records = 0;
    for id in &ids {
        let db = Db::open(&grid.dir.path().join(id).join("meta")).unwrap();
        for table in Table::ALL {
            let mut start = Vec::new();
            loop {
                let page = db.scan(table, &start, None, 1000).unwrap();
                for (k, v) in &page.items {
                    records += 1;
                    for part in [k, v] {
                        let hits = needles.find(part);
                        assert!(
                            hits.is_empty(),
                            "{id} {}: a record holds {hits:?}",
                            table.name()
                        );
                    }
                }
                match page.next {
                    Some(n) => start = n,
                    None => break,
                }
            }
        }
    }
    assert!(records > 50, "{records} records read back");
}
