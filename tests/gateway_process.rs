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

fn start_gateway(dir: &Path, map: &Path) -> (GatewayProc, String) {
    let config = dir.join("gw.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\nwebdav_listen = \"127.0.0.1:0\"\njobs_listen = \"127.0.0.1:0\"\n\
             cluster_map = {map:?}\ncluster_secret = {:?}\nmaster_key = {MASTER:?}\n\
             housekeeping_secs = 1\norphan_grace_secs = 2\nupload_max_age_secs = 2\n",
            support::SECRET
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.join("gateway.log")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_gridstore"))
        .args(["gateway", "--config"])
        .arg(&config)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let Some(rest) = line
        .trim()
        .strip_prefix("gridstore gateway ready: S3 on http://")
    else {
        let _ = child.kill();
        panic!(
            "gateway did not start: {line:?}\n{}",
            std::fs::read_to_string(dir.join("gateway.log")).unwrap_or_default()
        );
    };
    let addr = rest
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    (GatewayProc(child), addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_seeds_the_first_map_and_collects_crash_leftovers() {
    let root = tempfile::tempdir().unwrap();
    let fast = "[repair]\nheartbeat_secs = 1\ndown_after_secs = 3\nreconcile_interval_secs = 1\n\
                anti_entropy_interval_secs = 1\nscrub_interval_secs = 0\n";
    let nodes: Vec<NodeProc> = (0..6)
        .map(|i| {
            let (id, site) = (format!("n{i}"), format!("site-{}", i / 2));
            NodeProc::start_as(&root.path().join(&id), &id, &site, fast)
        })
        .collect();
    for n in &nodes {
        assert_eq!(
            n.client().get_map().await.unwrap(),
            None,
            "a node starts without a map"
        );
    }
    let mut map_text = String::from("epoch = 1\n");
    for (i, n) in nodes.iter().enumerate() {
        map_text.push_str(&format!(
            "[[nodes]]\nid = {:?}\naddr = {:?}\nsite = \"site-{}\"\n",
            n.id,
            n.addr,
            i / 2
        ));
    }
    let map_path = root.path().join("map.toml");
    std::fs::write(&map_path, map_text).unwrap();

    let (_gateway, s3_addr) = start_gateway(root.path(), &map_path);
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

    // An object layer in the test, as a second gateway would have.
    let grid = Grid::new(map.clone(), support::key(), ClientOptions::default());
    let store = ObjectStore::new(
        grid,
        MasterKey::from_text(MASTER).unwrap(),
        StoreConfig::default(),
    );
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
            key: "crashed".into(),
            version: vec![4; VERSION_ID_LEN],
            part_number: 0,
        }),
        created_ms: grid::rpc_auth::now_ms(),
        shard_hashes: vec![],
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
