//! Admission at the S3 and WebDAV gateways, over real connections: one
//! access key holding requests open with bodies that never come cannot
//! lock other keys out, and bodies that stall or trickle are cut off so
//! their slots come back.

mod support;

use bytes::Bytes;
use cluster::StoreConfig;
use gateway::admission::AdmissionConfig;
use gateway::server::{serve, service, GatewayConfig};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};
use std::time::Duration;
use support::grid::TestGrid;
use support::objects::store_on;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const TTL: Duration = Duration::from_secs(600);

/// A PUT whose headers promise 1 MiB and whose body sends `first` and
/// then nothing: the connection, to read the answer from later.
async fn stalled_put(addr: std::net::SocketAddr, url: &url::Url, first: &[u8]) -> TcpStream {
    let mut conn = TcpStream::connect(addr).await.unwrap();
    let target = &url[url::Position::BeforePath..];
    let head = format!(
        "PUT {target} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\n\r\n",
        1 << 20
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.write_all(first).await.unwrap();
    conn
}

/// The status line the server sends before closing, if any within `limit`.
async fn answer(conn: &mut TcpStream, limit: Duration) -> Option<String> {
    let mut buf = vec![0u8; 4096];
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, conn.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => {
                got.extend_from_slice(&buf[..n]);
                if got.windows(2).any(|w| w == b"\r\n") {
                    break;
                }
            }
        }
    }
    let text = String::from_utf8_lossy(&got).into_owned();
    text.lines().next().map(str::to_string)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_key_with_stalled_bodies_cannot_lock_out_another() {
    let grid = TestGrid::start(3, 2).await;
    let store = store_on(&grid, StoreConfig::default());
    store
        .ensure_user("slow", false, "slowkey", "slow-secret-key")
        .await
        .unwrap();
    store
        .ensure_user("neighbour", false, "neighbourkey", "neighbour-secret")
        .await
        .unwrap();
    store.create_bucket("slow", "slowkey", None).await.unwrap();
    store
        .create_bucket("neighbour", "neighbourkey", None)
        .await
        .unwrap();

    let cfg = GatewayConfig {
        admission: AdmissionConfig {
            max_requests: 8,
            max_requests_per_key: Some(4),
            body_idle_timeout: Duration::from_secs(4),
            body_min_bytes_per_sec: 1024,
            body_grace: Duration::from_secs(1),
        },
        ..GatewayConfig::default()
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve(listener, service(store.clone(), &cfg), async {
        let _ = stopped.await;
    }));
    let endpoint = url::Url::parse(&format!("http://{addr}")).unwrap();
    let slow = Bucket::new(endpoint.clone(), UrlStyle::Path, "slow", "us-east-1").unwrap();
    let neighbour = Bucket::new(endpoint, UrlStyle::Path, "neighbour", "us-east-1").unwrap();
    let slow_key = Credentials::new("slowkey", "slow-secret-key");
    let neighbour_key = Credentials::new("neighbourkey", "neighbour-secret");
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let put = |url: url::Url, body: Bytes| {
        let client = client.clone();
        async move {
            let req = Request::builder()
                .method(Method::PUT)
                .uri(url.as_str())
                .body(Full::new(body))
                .unwrap();
            let resp = client.request(req).await.unwrap();
            let status = resp.status();
            let text = resp.into_body().collect().await.unwrap().to_bytes();
            (status, String::from_utf8_lossy(&text).into_owned())
        }
    };

    // The slow key takes its whole share with bodies that never come.
    let mut stalled = Vec::new();
    for i in 0..4 {
        let url = slow
            .put_object(Some(&slow_key), &format!("stalled-{i}"))
            .sign(TTL);
        stalled.push(stalled_put(addr, &url, b"x").await);
    }
    // Let the gateway reach the handlers (where the slots are taken).
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Past its share, the slow key is told to slow down...
    let url = slow.put_object(Some(&slow_key), "one-more").sign(TTL);
    let (status, text) = put(url, Bytes::from_static(b"hello")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{text}");
    assert!(text.contains("SlowDown"), "{text}");
    // ... while another key is served.
    let url = neighbour
        .put_object(Some(&neighbour_key), "served")
        .sign(TTL);
    let (status, text) = put(url, Bytes::from(vec![5u8; 4096])).await;
    assert_eq!(status, StatusCode::OK, "{text}");

    // The stalled bodies are cut off with an error answer...
    for conn in &mut stalled {
        let line = answer(conn, Duration::from_secs(30)).await;
        let line = line.expect("a stalled body got no answer");
        assert!(
            line.starts_with("HTTP/1.1 4") || line.starts_with("HTTP/1.1 5"),
            "{line}"
        );
    }
    // ... and their slots come back: the slow key is served again.
    let url = slow.put_object(Some(&slow_key), "after").sign(TTL);
    let (status, text) = put(url, Bytes::from_static(b"after")).await;
    assert_eq!(status, StatusCode::OK, "{text}");

    // A body trickling in (a byte every 300 ms) is cut off too, long
    // before it could finish, though it never stalls for the idle time.
    let url = slow.put_object(Some(&slow_key), "trickle").sign(TTL);
    let mut conn = stalled_put(addr, &url, b"x").await;
    let mut cut = None;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        if conn.write_all(b"x").await.is_err() {
            break;
        }
        if let Some(line) = answer(&mut conn, Duration::from_millis(10)).await {
            cut = Some(line);
            break;
        }
    }
    let line = match cut {
        Some(l) => l,
        None => answer(&mut conn, Duration::from_secs(10))
            .await
            .expect("a trickling body got no answer"),
    };
    assert!(
        line.starts_with("HTTP/1.1 4") || line.starts_with("HTTP/1.1 5"),
        "{line}"
    );
    let params = cluster::ListObjectsParams {
        max_keys: 1000,
        ..Default::default()
    };
    let listed = store.list_objects("slow", &params).await.unwrap();
    let keys: Vec<_> = listed.objects.iter().map(|o| o.key.as_str()).collect();
    assert_eq!(keys, ["after"], "no cut-off body was stored");
}

/// The WebDAV listener cuts off a PUT body that stalls, and the object is
/// not created from the bytes that did arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_webdav_body_is_cut_off() {
    let tg = TestGrid::start(3, 2).await;
    let store = store_on(&tg, StoreConfig::default());
    store
        .create_user(
            "dav",
            false,
            Some("GSDAVSLOW00000000001"),
            Some("dav-secret-0123456789"),
        )
        .await
        .unwrap();
    store
        .create_bucket("slow", "GSDAVSLOW00000000001", None)
        .await
        .unwrap();
    let dav = gateway::webdav::server::start_with(
        "127.0.0.1:0".parse().unwrap(),
        store.clone(),
        None,
        AdmissionConfig {
            body_idle_timeout: Duration::from_secs(1),
            ..gateway::webdav::server::default_admission()
        },
    )
    .await
    .unwrap();
    use base64::Engine;
    let basic = base64::engine::general_purpose::STANDARD
        .encode("GSDAVSLOW00000000001:dav-secret-0123456789");
    let mut conn = TcpStream::connect(dav.addr).await.unwrap();
    let head = format!(
        "PUT /slow/stalled.bin HTTP/1.1\r\nHost: {}\r\nAuthorization: Basic {basic}\r\nContent-Length: {}\r\n\r\n",
        dav.addr,
        1 << 20
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.write_all(&[7u8; 1000]).await.unwrap();
    // The server ends the exchange itself (an error status, or closing the
    // connection); only a server that never gave up would let the client's
    // deadline pass.
    let mut got = Vec::new();
    let mut buf = vec![0u8; 4096];
    let ended = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the server kept waiting for the body");
    let status = String::from_utf8_lossy(&got)
        .lines()
        .next()
        .map(str::to_string);
    assert!(
        status
            .as_deref()
            .is_none_or(|s| !s.contains(" 201") && !s.contains(" 204")),
        "{status:?}"
    );
    let got = store
        .get_object("slow", "stalled.bin", Default::default())
        .await;
    assert!(got.is_err(), "a truncated body was committed");
}
