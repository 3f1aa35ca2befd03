//! One conformance suite (tests/conformance/cases.rs), run against every
//! front end of the store, each on its own in-process grid of 6 nodes on
//! 3 sites:
//!
//! - the object layer, `cluster::ObjectStore`, called in process;
//! - the S3 gateway over HTTP on loopback, through a real S3 client
//!   (rusty-s3's SigV4 presigned requests on hyper);
//! - the WebDAV gateway over HTTP on loopback, with Basic authentication,
//!   for what WebDAV can express.
//!
//! Each front end is an adapter implementing `FrontEnd`
//! (tests/conformance/frontend.rs): neutral calls in, neutral results and
//! errors out, so every case asserts the same things of all three. Run
//! with `--nocapture` to see each front end's table of cases.

mod support;

#[path = "conformance/cases.rs"]
mod cases;
#[path = "conformance/frontend.rs"]
mod frontend;
#[path = "conformance/http_client.rs"]
mod http_client;
#[path = "conformance/object_layer.rs"]
mod object_layer;
#[path = "conformance/s3.rs"]
mod s3;
#[path = "conformance/webdav.rs"]
mod webdav;

use cluster::{ObjectStore, StoreConfig};
use support::grid::TestGrid;
use support::objects::{store_on, OWNER};

/// The user the gateways authenticate (S3 SigV4, WebDAV Basic).
const AK: &str = "GSCONFORMANCE0000001";
const SK: &str = "conformance-secret-0123456789";

async fn store_with_user(tg: &TestGrid) -> ObjectStore {
    let store = store_on(tg, StoreConfig::default());
    store
        .create_user("conformance", false, Some(AK), Some(SK))
        .await
        .unwrap();
    store
}

/// The round trip's big object did span several chunks (what the case
/// calls multi-chunk), whichever front end wrote it: it is larger than the
/// chunker's hard maximum (4 MiB), so this holds whatever the bucket's
/// chunking seed.
async fn assert_multi_chunk(store: &ObjectStore) {
    let chunks = store
        .object_chunks(cases::ROUND_TRIP_BUCKET, cases::BIG_KEY, None)
        .await
        .unwrap();
    assert!(
        chunks.len() >= 2,
        "the round trip's big object is one chunk: {chunks:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_layer_conforms() {
    let tg = TestGrid::start(3, 2).await;
    let store = store_on(&tg, StoreConfig::default());
    let fe = object_layer::ObjectLayer::new(store.clone(), OWNER);
    let report = cases::run(&fe).await;
    report.finish(&[]);
    assert_multi_chunk(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_gateway_conforms() {
    use gateway::server::{serve, service, GatewayConfig};
    let tg = TestGrid::start(3, 2).await;
    let store = store_with_user(&tg).await;
    let svc = service(store.clone(), &GatewayConfig::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve(listener, svc, async {
        let _ = stopped.await;
    }));

    let fe = s3::S3::new(addr, AK, SK);
    let report = cases::run(&fe).await;
    drop(fe);
    let _ = stop.send(());
    report.finish(&[]);
    assert_multi_chunk(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webdav_gateway_conforms() {
    let tg = TestGrid::start(3, 2).await;
    let store = store_with_user(&tg).await;
    let dav = gateway::webdav::server::start("127.0.0.1:0".parse().unwrap(), store.clone())
        .await
        .unwrap();

    let fe = webdav::WebDav::new(dav.addr, AK, SK);
    let report = cases::run(&fe).await;
    drop(fe);
    dav.stop().await;
    // WebDAV has no versions or multipart uploads, and lists one folder
    // at a time, whole.
    report.finish(&["list_flat", "list_pages", "multipart", "versions"]);
    assert_multi_chunk(&store).await;
}
