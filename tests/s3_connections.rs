//! The S3 gateway's HTTP connections against raw, hand-driven clients on
//! loopback: what happens to a connection when a request's body is never
//! sent, so that a client reusing it cannot have its next request garbled.

mod support;

use cluster::StoreConfig;
use gateway::server::{serve, service, GatewayConfig};
use std::time::Duration;
use support::grid::TestGrid;
use support::objects::store_on;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn start_gateway(
    grid: &TestGrid,
) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let store = store_on(grid, StoreConfig::default());
    let svc = service(store, &GatewayConfig::default());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve(listener, svc, async {
        let _ = rx.await;
    }));
    (addr, tx)
}

/// Everything the server sends until it closes the connection (or 10 s).
async fn read_until_close(conn: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(10), conn.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => panic!(
                "connection still open 10 s after a refused 100-continue request; read so far:\n{}",
                String::from_utf8_lossy(&out)
            ),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A client that sends `Expect: 100-continue` and gets a final error
/// instead of "100 Continue" never sends the body (RFC 9110). The next
/// request it writes on that connection must not be read as that body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_continue_request_closes_its_connection() {
    let grid = TestGrid::start(3, 2).await;
    let (addr, _stop) = start_gateway(&grid).await;

    let mut conn = TcpStream::connect(addr).await.unwrap();
    let refused = format!(
        "PUT /no-such-bucket-here/key HTTP/1.1\r\nHost: {addr}\r\n\
         Expect: 100-continue\r\nContent-Length: 1\r\n\r\n"
    );
    conn.write_all(refused.as_bytes()).await.unwrap();
    // The next request goes out at once, as a pipelining or fast client
    // would send it, so hyper finds it already buffered.
    let next = format!("GET /another-missing-bucket/ HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    conn.write_all(next.as_bytes()).await.unwrap();

    let got = read_until_close(&mut conn).await;
    let lower = got.to_ascii_lowercase();
    assert!(got.starts_with("HTTP/1.1 404"), "first response: {got}");
    assert!(lower.contains("nosuchbucket"), "first response: {got}");
    assert!(
        lower.contains("connection: close"),
        "no Connection: close in {got}"
    );
    // One response only: the second request was never parsed, so it could
    // not have lost its first byte to the first one's body.
    assert_eq!(got.matches("HTTP/1.1 ").count(), 1, "responses: {got}");
}

/// An ordinary request without `Expect` keeps its connection alive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_without_continue_keep_the_connection() {
    let grid = TestGrid::start(3, 2).await;
    let (addr, _stop) = start_gateway(&grid).await;

    let mut conn = TcpStream::connect(addr).await.unwrap();
    let two = format!(
        "GET /missing-one/ HTTP/1.1\r\nHost: {addr}\r\n\r\n\
         GET /missing-two/ HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    );
    conn.write_all(two.as_bytes()).await.unwrap();
    let got = read_until_close(&mut conn).await;
    assert_eq!(got.matches("HTTP/1.1 404").count(), 2, "responses: {got}");
    assert_eq!(got.matches("NoSuchBucket").count(), 2, "responses: {got}");
}
