//! A grid started as separately deployed processes are: `gridstore node`
//! processes from their own configs (no map handed to them by anyone) and
//! a `gridstore gateway` from its config and map file. The gateway gives
//! the nodes their first map, after which liveness works (a killed node
//! is marked down with no command), and it collects what a crashed writer
//! leaves behind (an orphaned chunk reference, an abandoned multipart
//! upload), as `gridstore server` does.

mod support;

use bytes::Bytes;
use cluster::{MasterKey, ObjectStore, PartOptions, StoreConfig};
use grid::chunk_io::Grid;
use grid::node_api::RefQuery;
use grid::ClientOptions;
use metadata::model::{
    ChunkReference, ErasureSpec, NodeState, Referrer, BUCKET_ID_LEN, VERSION_ID_LEN,
};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use support::shards::wait_for;
use support::NodeProc;

const MASTER: &str = "4242424242424242424242424242424242424242424242424242424242424242";

struct GatewayProc(Child);

impl Drop for GatewayProc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Write the gateway's config in `dir`; returns its path.
fn gateway_config(dir: &Path, map: &Path, extra: &str) -> std::path::PathBuf {
    let config = dir.join("gw.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\nwebdav_listen = \"127.0.0.1:0\"\njobs_listen = \"127.0.0.1:0\"\n\
             admin_listen = \"127.0.0.1:0\"\n\
             cluster_map = {map:?}\nmaster_key = {MASTER:?}\n{extra}",
        ),
    )
    .unwrap();
    config
}

/// What an operator runs to learn the key to list for a process.
fn identity_of(what: &str, config: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_gridstore"))
        .args([what, "--identity", "--config"])
        .arg(config)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A map file naming `nodes` (with their keys) and trusting the gateway
/// configured by `gateway` and this test process.
fn write_map(path: &Path, nodes: &[&NodeProc], gateway: &Path) {
    let mut text = String::from("epoch = 1\n");
    for (i, n) in nodes.iter().enumerate() {
        text.push_str(&format!(
            "[[nodes]]\nid = {:?}\naddr = {:?}\nsite = \"site-{}\"\nkey = {:?}\n",
            n.id,
            n.addr,
            i / 2,
            identity_of("node", &n.config),
        ));
    }
    text.push_str(&format!(
        "[[clients]]\nname = \"gw\"\nkey = {:?}\n[[clients]]\nname = \"tests\"\nrole = \"admin\"\nkey = {:?}\n",
        identity_of("gateway", gateway),
        support::me().key().to_hex(),
    ));
    std::fs::write(path, text).unwrap();
}

fn start_gateway(dir: &Path, config: &Path) -> (GatewayProc, String) {
    let (gateway, s3, _admin) = start_gateway_with_admin(dir, config);
    (gateway, s3)
}

/// [`start_gateway`], with the admin listener's address as well.
fn start_gateway_with_admin(dir: &Path, config: &Path) -> (GatewayProc, String, String) {
    let log = std::fs::File::create(dir.join("gateway.log")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_gridstore"))
        .args(["gateway", "--config"])
        .arg(config)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut printed = Vec::new();
    // Up to the admin listener's line, the last of the start-up lines.
    for _ in 0..4 {
        let mut line = String::new();
        if out.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        printed.push(line.trim().to_string());
    }
    // Keep reading: a closed pipe would make the gateway's next print fail.
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    let address = |prefix: &str| {
        let rest = printed.iter().find_map(|l| l.strip_prefix(prefix))?;
        let rest = rest
            .strip_prefix("http://")
            .or_else(|| rest.strip_prefix("https://"))?;
        rest.split(['/', ' ']).next().map(str::to_string)
    };
    let (Some(s3), Some(admin)) = (
        address("gridstore gateway ready: S3 on "),
        address("admin on "),
    ) else {
        let _ = child.kill();
        panic!(
            "gateway did not start: {printed:?}\n{}",
            std::fs::read_to_string(dir.join("gateway.log")).unwrap_or_default()
        );
    };
    (GatewayProc(child), s3, admin)
}

/// Six node processes on three sites and a gateway process, as README's
/// "Running separate processes" starts them; returns once the gateway has
/// handed every node the first map.
async fn start_grid(root: &Path) -> (Vec<NodeProc>, GatewayProc, metadata::model::ClusterMap) {
    let fast = "[repair]\nheartbeat_secs = 1\ndown_after_secs = 3\nreconcile_interval_secs = 1\n\
                anti_entropy_interval_secs = 1\nscrub_interval_secs = 0\n";
    let nodes: Vec<NodeProc> = (0..6)
        .map(|i| {
            let (id, site) = (format!("n{i}"), format!("site-{}", i / 2));
            NodeProc::start_as(&root.join(&id), &id, &site, fast)
        })
        .collect();
    for n in &nodes {
        assert_eq!(
            n.client().get_map().await.unwrap(),
            None,
            "a node starts without a map"
        );
    }
    let map_path = root.join("map.toml");
    // As an old gw.toml had them: ignored, and the gateway still starts.
    let retired = "cluster_secret = \"test-cluster-secret-0123456789\"\n\
                   cluster_secret_file = \"no-such-file\"\n";
    let config = gateway_config(
        root,
        &map_path,
        &format!(
            "housekeeping_secs = 1\norphan_grace_secs = 2\nupload_max_age_secs = 2\n{retired}"
        ),
    );
    write_map(&map_path, &nodes.iter().collect::<Vec<_>>(), &config);

    let (gateway, s3_addr) = start_gateway(root, &config);
    assert!(!s3_addr.is_empty());

    // The first map reaches every node with no command.
    let clients: Vec<_> = nodes.iter().map(|n| n.client()).collect();
    let seeded = wait_for(Duration::from_secs(30), || async {
        for c in &clients {
            if !matches!(c.get_map().await, Ok(Some(_))) {
                return false;
            }
        }
        true
    })
    .await;
    assert!(seeded, "nodes never got the first map from the gateway");
    let map = clients[0].get_map().await.unwrap().unwrap();
    (nodes, gateway, map)
}

fn store_for(map: &metadata::model::ClusterMap, opts: ClientOptions) -> ObjectStore {
    let grid = Grid::new(map.clone(), opts);
    ObjectStore::new(
        grid,
        MasterKey::from_text(MASTER).unwrap(),
        StoreConfig::default(),
    )
}

fn body_of(
    data: &[u8],
) -> impl futures_util::Stream<Item = Result<Bytes, std::convert::Infallible>> + Unpin {
    futures_util::stream::iter([Ok(Bytes::copy_from_slice(data))])
}

async fn read_all(store: &ObjectStore, bucket: &str, key: &str) -> Vec<u8> {
    let got = store
        .get_object(bucket, key, Default::default())
        .await
        .unwrap();
    futures_util::TryStreamExt::try_concat(futures_util::TryStreamExt::map_ok(got.body, |b| {
        b.to_vec()
    }))
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_seeds_the_first_map_and_collects_crash_leftovers() {
    let root = tempfile::tempdir().unwrap();
    let (nodes, _gateway, map) = start_grid(root.path()).await;
    let clients: Vec<_> = nodes.iter().map(|n| n.client()).collect();

    // An object layer in the test, as a second gateway would have.
    let store = store_for(&map, ClientOptions::default());
    store
        .create_bucket("leftovers", "owner", None)
        .await
        .unwrap();
    let body = support::objects::Data::bytes(3 << 20, 7);
    store
        .put_object(
            "leftovers",
            "kept",
            futures_util::stream::iter([Ok::<_, std::convert::Infallible>(Bytes::from(
                body.clone(),
            ))]),
            Default::default(),
        )
        .await
        .unwrap();

    // A crashed multipart upload: created, one part, never completed.
    let upload = store
        .create_multipart_upload("leftovers", "abandoned", "owner", Default::default())
        .await
        .unwrap();
    store
        .upload_part(
            "leftovers",
            "abandoned",
            &upload.upload_id,
            1,
            futures_util::stream::iter([Ok::<_, std::convert::Infallible>(Bytes::from(
                vec![1u8; 1 << 20],
            ))]),
            PartOptions::default(),
        )
        .await
        .unwrap();
    // A crashed PUT: a chunk reference whose version was never written.
    let orphan = ChunkReference {
        chunk_id: vec![9; 32],
        erasure: Some(ErasureSpec::new(2, 1)),
        shard_len: 4096,
        referrer: Some(Referrer {
            bucket_id: vec![3; BUCKET_ID_LEN],
            key_hash: vec![5; 16],
            version: vec![4; VERSION_ID_LEN],
            part_number: 0,
        }),
        created_ms: grid::clock::now_ms(),
        ..ChunkReference::default()
    };
    clients[1].refs_add(vec![orphan]).await.unwrap();

    let swept = wait_for(Duration::from_secs(60), || async {
        let refs = clients[1]
            .refs_list(RefQuery {
                chunk_id: Some(vec![9; 32]),
                start_after: None,
                limit: 10,
            })
            .await;
        let uploads = store
            .list_multipart_uploads("leftovers", "", None, None, None, 10)
            .await;
        matches!(refs, Ok(p) if p.refs.is_empty())
            && matches!(uploads, Ok(p) if p.uploads.is_empty())
    })
    .await;
    assert!(
        swept,
        "the gateway's housekeeping did not collect the orphaned reference and the stale upload; log:\n{}",
        std::fs::read_to_string(root.path().join("gateway.log")).unwrap_or_default()
    );

    // With a map, liveness works: a node killed is marked down by the
    // others, and what was acknowledged still reads back.
    nodes[5].signal(libc::SIGKILL);
    let marked = wait_for(Duration::from_secs(60), || async {
        matches!(clients[0].get_map().await, Ok(Some(m))
            if m.nodes.iter().any(|n| n.id == "n5" && n.state == NodeState::Down as i32))
    })
    .await;
    assert!(marked, "a killed node was never marked down");
    let got = store
        .get_object("leftovers", "kept", Default::default())
        .await
        .unwrap();
    let bytes: Vec<u8> =
        futures_util::TryStreamExt::try_concat(futures_util::TryStreamExt::map_ok(got.body, |b| {
            b.to_vec()
        }))
        .await
        .unwrap();
    assert_eq!(bytes, body);
}

/// A node that hangs (SIGSTOP: connections accepted by the kernel, never
/// answered) is read and written around: with an RPC timeout of ten
/// minutes, every PUT and GET still completes, long before that timeout
/// could fire. The latencies seen are printed, not asserted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_node_is_read_and_written_around() {
    let root = tempfile::tempdir().unwrap();
    let (nodes, _gateway, map) = start_grid(root.path()).await;
    let patient = ClientOptions {
        timeout: Duration::from_secs(600),
        ..ClientOptions::default()
    };
    let store = store_for(&map, patient);
    store.create_bucket("hung", "owner", None).await.unwrap();
    let data = support::objects::Data::bytes(2 << 20, 11);
    for i in 0..6 {
        store
            .put_object(
                "hung",
                &format!("before-{i}"),
                body_of(&data),
                Default::default(),
            )
            .await
            .unwrap();
    }

    nodes[3].signal(libc::SIGSTOP);
    let mut took = Vec::new();
    let work = async {
        for i in 0..6 {
            let t = std::time::Instant::now();
            assert_eq!(read_all(&store, "hung", &format!("before-{i}")).await, data);
            took.push(("get", t.elapsed()));
            let t = std::time::Instant::now();
            store
                .put_object(
                    "hung",
                    &format!("during-{i}"),
                    body_of(&data),
                    Default::default(),
                )
                .await
                .unwrap();
            took.push(("put", t.elapsed()));
        }
    };
    // Ten minutes is the RPC timeout: finishing at all well before it
    // means nothing waited for the hung node.
    let finished = tokio::time::timeout(Duration::from_secs(300), work).await;
    nodes[3].signal(libc::SIGCONT);
    assert!(finished.is_ok(), "requests waited for the hung node");
    for (op, t) in &took {
        eprintln!("{op} while a node hung: {} ms", t.as_millis());
    }
    for i in 0..6 {
        assert_eq!(read_all(&store, "hung", &format!("during-{i}")).await, data);
    }
}

/// A gateway whose `metadata_replicas` disagrees with its nodes' refuses
/// to start, saying which node and which settings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_disagreeing_on_metadata_replicas_refuses_to_start() {
    let root = tempfile::tempdir().unwrap();
    let node = NodeProc::start_as(&root.path().join("n0"), "n0", "site-0", "");
    let map_path = root.path().join("map.toml");
    let config = gateway_config(root.path(), &map_path, "metadata_replicas = 5\n");
    write_map(&map_path, &[&node], &config);
    let out = Command::new(env!("CARGO_BIN_EXE_gridstore"))
        .args(["gateway", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("metadata_replicas is 5 here but 3 on node n0"),
        "{err}"
    );
}

/// PEM of DER `bytes` under `label`.
fn pem(label: &str, bytes: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

/// With `tls_cert` and `tls_key`, the S3, WebDAV, job and admin listeners
/// speak TLS only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn front_ends_serve_tls_when_given_a_certificate() {
    let root = tempfile::tempdir().unwrap();
    let node = NodeProc::start_as(&root.path().join("n0"), "n0", "site-0", "");
    // Any certificate will do; the client below pins its key.
    let made = root.path().join("web-identity");
    let web = ::grid::tls::Identity::load_or_create(&made).unwrap();
    let cert = std::fs::read(made.join("cert.der")).unwrap();
    let key = std::fs::read(made.join("key.der")).unwrap();
    std::fs::write(root.path().join("web.crt"), pem("CERTIFICATE", &cert)).unwrap();
    std::fs::write(root.path().join("web.key"), pem("PRIVATE KEY", &key)).unwrap();
    let map_path = root.path().join("map.toml");
    let config = gateway_config(
        root.path(),
        &map_path,
        "tls_cert = \"web.crt\"\ntls_key = \"web.key\"\n",
    );
    write_map(&map_path, &[&node], &config);
    let (_gateway, s3_addr, admin_addr) = start_gateway_with_admin(root.path(), &config);

    let mut tcp = hyper_util::client::legacy::connect::HttpConnector::new();
    tcp.enforce_http(false);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(::grid::tls::probe_config(web.key()))
        .https_or_http()
        .enable_http1()
        .wrap_connector(tcp);
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build::<_, http_body_util::Empty<Bytes>>(https);
    // Anonymous: S3 refuses, but over TLS.
    let resp = client
        .request(
            http::Request::get(format!("https://{s3_addr}/"))
                .body(http_body_util::Empty::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    // Plain HTTP on the same port gets no HTTP answer.
    let plain = client
        .request(
            http::Request::get(format!("http://{s3_addr}/"))
                .body(http_body_util::Empty::new())
                .unwrap(),
        )
        .await;
    assert!(plain.is_err(), "{plain:?}");
    // The admin listener too.
    let resp = client
        .request(
            http::Request::get(format!("https://{admin_addr}/metrics"))
                .body(http_body_util::Empty::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let plain = client
        .request(
            http::Request::get(format!("http://{admin_addr}/metrics"))
                .body(http_body_util::Empty::new())
                .unwrap(),
        )
        .await;
    assert!(plain.is_err(), "{plain:?}");
}
