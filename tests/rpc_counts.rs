//! What one S3 request costs the nodes, counted by the nodes themselves
//! (their request metrics) on an in-process grid: a small-object PUT and a
//! GET through the S3 gateway, signed by a real S3 client (rusty-s3), read
//! the bucket record with one quorum read each, anonymous reads of a
//! public bucket included.

mod support;

use bytes::Bytes;
use cluster::StoreConfig;
use gateway::server::{serve, service, GatewayConfig};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};
use std::collections::BTreeMap;
use std::time::Duration;
use support::grid::TestGrid;
use support::objects::store_on;
use tokio::net::TcpListener;

const ACCESS_KEY: &str = "rpccounter";
const SECRET: &str = "rpc-count-secret-key";

/// Every node's request counters, summed over the grid: `op` -> count,
/// plus `record_reads:<table>` -> count.
fn counters(grid: &TestGrid) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for n in grid.nodes.iter().flatten() {
        for line in n.node.metrics.render().lines() {
            let Some((name, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let label = |key: &str| {
                let start = name.find(&format!("{key}=\""))? + key.len() + 2;
                let end = name[start..].find('"')? + start;
                Some(name[start..end].to_string())
            };
            let key = if name.starts_with("gridstore_node_requests_total{") {
                label("op")
            } else if name.starts_with("gridstore_node_record_reads_total{") {
                label("table").map(|t| format!("record_reads:{t}"))
            } else {
                None
            };
            if let Some(k) = key {
                *out.entry(k).or_default() += value as u64;
            }
        }
    }
    out
}

fn diff(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0)))
        .filter(|(_, v)| *v > 0)
        .collect()
}

/// The counters a request moved. Requests a quorum call no longer waits
/// for may still be arriving when the client has its answer: the count is
/// taken once the grid has been quiet for a moment.
async fn cost_of<F: std::future::Future<Output = ()>>(
    grid: &TestGrid,
    request: F,
) -> BTreeMap<String, u64> {
    let before = counters(grid);
    request.await;
    let mut last = counters(grid);
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = counters(grid);
        if now == last {
            return diff(&before, &now);
        }
        last = now;
    }
}

fn quorum_reads_of_buckets(cost: &BTreeMap<String, u64>, replicas: u64, quorum: u64) -> u64 {
    let reads = cost.get("record_reads:buckets").copied().unwrap_or(0);
    // A quorum read asks every replica and returns at the quorum: each
    // read reaches between `quorum` and `replicas` nodes.
    assert!(
        reads == 0 || reads >= quorum,
        "{reads} bucket-record reads is not a whole quorum read: {cost:?}"
    );
    reads.div_ceil(replicas)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_put_and_get_read_the_bucket_record_once() {
    let grid = TestGrid::start(3, 2).await;
    let store = store_on(&grid, StoreConfig::default());
    let replicas = StoreConfig::default().metadata_replicas as u64;
    let quorum = replicas / 2 + 1;
    store
        .ensure_user("counter", false, ACCESS_KEY, SECRET)
        .await
        .unwrap();
    store
        .create_bucket("counted", ACCESS_KEY, None)
        .await
        .unwrap();
    store.create_bucket("open", ACCESS_KEY, None).await.unwrap();
    store.set_public("open", true).await.unwrap();

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let svc = service(store.clone(), &GatewayConfig::default());
    let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve(listener, svc, async {
        let _ = stopped.await;
    }));
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let endpoint = url::Url::parse(&format!("http://{addr}")).unwrap();
    let creds = Credentials::new(ACCESS_KEY, SECRET);
    let body = Bytes::from(vec![7u8; 4096]);

    let send = |method: Method, url: url::Url, body: Bytes| {
        let client = client.clone();
        async move {
            let req = Request::builder()
                .method(method)
                .uri(url.as_str())
                .body(Full::new(body))
                .unwrap();
            let resp = client.request(req).await.unwrap();
            let status = resp.status();
            let bytes = resp.into_body().collect().await.unwrap().to_bytes();
            (status, bytes)
        }
    };

    let counted = Bucket::new(endpoint.clone(), UrlStyle::Path, "counted", "us-east-1").unwrap();
    let open = Bucket::new(endpoint, UrlStyle::Path, "open", "us-east-1").unwrap();
    let ttl = Duration::from_secs(600);

    // Warm the connection pool and the gateway so the counts are the
    // request's own.
    let url = counted.put_object(Some(&creds), "warm").sign(ttl);
    assert_eq!(send(Method::PUT, url, body.clone()).await.0, StatusCode::OK);
    let url = open.put_object(Some(&creds), "shared").sign(ttl);
    assert_eq!(send(Method::PUT, url, body.clone()).await.0, StatusCode::OK);

    let url = counted.put_object(Some(&creds), "small").sign(ttl);
    let put = cost_of(&grid, async {
        let (status, _) = send(Method::PUT, url, body.clone()).await;
        assert_eq!(status, StatusCode::OK);
    })
    .await;
    let url = counted.get_object(Some(&creds), "small").sign(ttl);
    let get = cost_of(&grid, async {
        let (status, got) = send(Method::GET, url, Bytes::new()).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(got, body);
    })
    .await;
    let url = open.get_object(None, "shared").sign(ttl);
    let anonymous = cost_of(&grid, async {
        let (status, got) = send(Method::GET, url, Bytes::new()).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(got, body);
    })
    .await;

    let all = |c: &BTreeMap<String, u64>| {
        c.iter()
            .filter(|(k, _)| !k.starts_with("record_reads:"))
            .map(|(_, v)| v)
            .sum::<u64>()
    };
    eprintln!("4 KiB PUT: {} node RPCs {put:?}", all(&put));
    eprintln!("4 KiB GET: {} node RPCs {get:?}", all(&get));
    eprintln!(
        "anonymous 4 KiB GET: {} node RPCs {anonymous:?}",
        all(&anonymous)
    );
    assert_eq!(
        quorum_reads_of_buckets(&put, replicas, quorum),
        1,
        "{put:?}"
    );
    assert_eq!(
        quorum_reads_of_buckets(&get, replicas, quorum),
        1,
        "{get:?}"
    );
    assert_eq!(
        quorum_reads_of_buckets(&anonymous, replicas, quorum),
        1,
        "{anonymous:?}"
    );
}
