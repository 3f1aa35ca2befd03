//! Peak memory of one 1 GiB upload and download, read from the process's
//! high-water mark (VmHWM). The six nodes run as their own `gridstore node`
//! processes, so this process is the gateway alone; it is its own test
//! binary so nothing else runs in it.

mod support;

use ::grid::chunk_io::Grid;
use ::grid::ClientOptions;
use cluster::{GetOptions, PutOptions, StoreConfig};
use cluster::{MasterKey, ObjectStore};
use metadata::model::{ClusterMap, Node, NodeState};
use support::objects::{sha256_of, Data, OWNER};
use support::NodeProc;

fn peak_rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("procfs");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("VmHWM in /proc/self/status");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("VmHWM value");
    kib * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_1_gib_upload_peaks_under_128_mib() {
    const SIZE: u64 = 1 << 30;
    let dir = tempfile::tempdir().unwrap();
    let mut procs = Vec::new();
    let mut nodes = Vec::new();
    for site in 0..3 {
        for j in 0..2 {
            let id = format!("s{site}n{j}");
            let p = NodeProc::start_as(&dir.path().join(&id), &id, &format!("site-{site}"), "");
            nodes.push(Node {
                id,
                addr: p.addr.clone(),
                site: format!("site-{site}"),
                capacity_bytes: 1 << 40,
                state: NodeState::Up as i32,
                key: p.key.0.to_vec(),
                untrusted_reason: String::new(),
            });
            procs.push(p);
        }
    }
    let map = ClusterMap {
        epoch: 1,
        nodes,
        clients: vec![],
        ..ClusterMap::default()
    };
    let grid = Grid::new(map, ClientOptions::default());
    let s = ObjectStore::new(grid, MasterKey::from_bytes([1; 32]), StoreConfig::default());
    s.create_bucket("memory", OWNER, None).await.unwrap();
    let before = peak_rss_bytes();
    let put = s
        .put_object(
            "memory",
            "one-gib",
            Data::new(SIZE, 99).stream(),
            PutOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(put.size, SIZE);
    let after_put = peak_rss_bytes();
    let (sha, n) = sha256_of(
        s.get_object("memory", "one-gib", GetOptions::default())
            .await
            .unwrap()
            .body,
    )
    .await;
    assert_eq!(n, SIZE);
    assert_eq!(sha, Data::sha256(SIZE, 99));
    let after_get = peak_rss_bytes();
    eprintln!(
        "peak RSS: {} MiB before, {} MiB after the 1 GiB put, {} MiB after reading it back",
        before >> 20,
        after_put >> 20,
        after_get >> 20
    );
    assert!(after_put < 128 << 20, "peak RSS {} MiB", after_put >> 20);
    assert!(after_get < 128 << 20, "peak RSS {} MiB", after_get >> 20);
}
