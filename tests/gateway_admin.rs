//! The gateway's admin listener and access log, on a real `gridstore
//! server`: after a few S3 requests, `/health` answers ok, `/metrics`
//! counts them by operation and status (and passes promtool when it is
//! installed), `/status.json` lists every node, the status page loads
//! nothing from elsewhere, and stderr has one access line per request and
//! a readable line for a refused one.

mod support;

use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};
use serde_json::Value;
use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;
use support::exposition::{lint_exposition, promtool};
use support::server::Server;

const TTL: Duration = Duration::from_secs(600);

/// `gridstore server DIR`, its 4xx error lines (at debug) in its log.
fn start_server(data: &Path) -> Server {
    Server::start(data, "info,gateway::access_log=debug")
}

struct Reply {
    status: u16,
    head: String,
    body: String,
}

/// One HTTP/1.1 request on its own connection.
fn http(method: &str, addr: &str, target: &str, body: &[u8]) -> Reply {
    http_with(method, addr, target, "", body)
}

/// [`http`] with more header lines (each ending in CRLF).
fn http_with(method: &str, addr: &str, target: &str, headers: &str, body: &[u8]) -> Reply {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\n{headers}Connection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Reply {
        status,
        head: head.to_string(),
        body: body.to_string(),
    }
}

/// The path and query of a presigned URL.
fn target(url: &url::Url) -> String {
    match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    }
}

/// Bucket `name` on the server's S3 listener, path style.
fn bucket_on(server: &Server, name: &str) -> Bucket {
    Bucket::new(
        url::Url::parse(&format!("http://{}", server.s3)).unwrap(),
        UrlStyle::Path,
        name.to_string(),
        "us-east-1".to_string(),
    )
    .unwrap()
}

fn get(addr: &str, path: &str) -> Reply {
    http("GET", addr, path, b"")
}

#[test]
fn admin_listener_reports_requests_and_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(&dir.path().join("grid"));
    let creds = Credentials::new(server.access_key.clone(), server.secret_key.clone());
    let bucket = bucket_on(&server, "admin-test");

    let url = bucket.create_bucket(&creds).sign(TTL);
    let r = http("PUT", &server.s3, &target(&url), b"");
    assert_eq!(r.status, 200, "{}{}", r.head, r.body);
    let url = bucket.put_object(Some(&creds), "hello.txt").sign(TTL);
    let r = http("PUT", &server.s3, &target(&url), b"hello, admin");
    assert_eq!(r.status, 200, "{}{}", r.head, r.body);
    let url = bucket.get_object(Some(&creds), "hello.txt").sign(TTL);
    let r = get(&server.s3, &target(&url));
    assert_eq!(r.status, 200, "{}", r.head);
    assert!(r.body.contains("hello, admin"), "{}", r.body);
    let url = bucket.get_object(Some(&creds), "missing.txt").sign(TTL);
    let r = get(&server.s3, &target(&url));
    assert_eq!(r.status, 404, "{}{}", r.head, r.body);

    // WebDAV: one refused, one listing.
    assert_eq!(http("PROPFIND", &server.webdav, "/", b"").status, 401);
    let basic = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        format!("{}:{}", server.access_key, server.secret_key),
    );
    let r = http_with(
        "PROPFIND",
        &server.webdav,
        "/admin-test/",
        &format!("Authorization: Basic {basic}\r\nDepth: 1\r\n"),
        b"",
    );
    assert_eq!(r.status, 207, "{}{}", r.head, r.body);

    // Health: the metadata quorum answers.
    let r = get(&server.admin, "/health");
    assert_eq!(r.status, 200, "{}{}", r.head, r.body);
    assert_eq!(r.body.trim(), "ok");

    // Metrics: the requests above, by operation and status, in a text
    // format promtool accepts. The access line (and the count) is written
    // once the answer is gone: wait for the last one first.
    server
        .log_line(|l| l.contains("gridstore::access") && l.contains("status=404"))
        .unwrap_or_else(|| panic!("no access line for the 404:\n{}", server.log_text()));
    server
        .log_line(|l| l.contains("gridstore::access") && l.contains("status=207"))
        .unwrap_or_else(|| panic!("no access line for the 207:\n{}", server.log_text()));
    let r = get(&server.admin, "/metrics");
    assert_eq!(r.status, 200, "{}", r.head);
    assert!(
        r.head
            .to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{}",
        r.head
    );
    let text = r.body;
    for sample in [
        "gridstore_gateway_s3_requests_total{operation=\"CreateBucket\",status=\"200\"} 1",
        "gridstore_gateway_s3_requests_total{operation=\"PutObject\",status=\"200\"} 1",
        "gridstore_gateway_s3_requests_total{operation=\"GetObject\",status=\"200\"} 1",
        "gridstore_gateway_s3_requests_total{operation=\"GetObject\",status=\"404\"} 1",
        "gridstore_gateway_s3_errors_total{operation=\"GetObject\",code=\"NoSuchKey\"} 1",
        "gridstore_gateway_s3_received_bytes_total{operation=\"PutObject\"} 12",
        "gridstore_gateway_s3_request_duration_seconds_count{operation=\"PutObject\"} 1",
        "gridstore_gateway_nodes{state=\"up\"} 6",
        "gridstore_gateway_webdav_requests_total{method=\"PROPFIND\",status=\"401\"} 1",
        "gridstore_gateway_webdav_requests_total{method=\"PROPFIND\",status=\"207\"} 1",
        "gridstore_gateway_webdav_errors_total{method=\"PROPFIND\",code=\"401\"} 1",
    ] {
        assert!(text.contains(sample), "no {sample} in\n{text}");
    }
    for family in [
        "# TYPE gridstore_gateway_s3_in_flight_requests gauge",
        "# TYPE gridstore_gateway_s3_sent_bytes_total counter",
        "# TYPE gridstore_gateway_webdav_requests_total counter",
        "# TYPE gridstore_gateway_audits_total counter",
    ] {
        assert!(text.contains(family), "no {family} in\n{text}");
    }
    let problems = lint_exposition(&text);
    assert!(problems.is_empty(), "{problems:#?}\n{text}");
    if let Some(found) = promtool(&text) {
        assert!(found.is_empty(), "promtool check metrics: {found}\n{text}");
    }

    // status.json: every node of the server, by site, with its state.
    let r = get(&server.admin, "/status.json");
    assert_eq!(r.status, 200, "{}", r.head);
    let v: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["gateway"]["healthy"], true, "{v}");
    let nodes: Vec<&Value> = v["sites"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["nodes"].as_array().unwrap())
        .collect();
    let mut ids: Vec<&str> = nodes.iter().map(|n| n["id"].as_str().unwrap()).collect();
    ids.sort();
    assert_eq!(
        ids,
        ["node-0", "node-1", "node-2", "node-3", "node-4", "node-5"]
    );
    assert_eq!(v["sites"].as_array().unwrap().len(), 3, "{v}");
    for n in &nodes {
        assert_eq!(n["state"], "up", "{n}");
        assert_eq!(n["answered"], true, "{n}");
        assert!(n["capacity_bytes"].as_u64().unwrap() > 0, "{n}");
        assert!(n["repair"].is_object(), "{n}");
    }
    assert!(
        !r.body.contains("admin-test") && !r.body.contains("hello.txt"),
        "bucket or object names on the admin listener: {}",
        r.body
    );

    // The page and what it loads come from the listener, nothing else.
    let page = get(&server.admin, "/");
    assert_eq!(page.status, 200, "{}", page.head);
    assert!(page.head.to_ascii_lowercase().contains("text/html"));
    assert!(page.body.contains("<html"), "{}", page.body);
    for (path, reply) in [
        ("/", page),
        ("/status.js", get(&server.admin, "/status.js")),
        ("/status.css", get(&server.admin, "/status.css")),
    ] {
        assert_eq!(reply.status, 200, "{path}: {}", reply.head);
        for external in ["http://", "https://", "//cdn", "@import"] {
            assert!(
                !reply.body.contains(external),
                "{path} names {external}:\n{}",
                reply.body
            );
        }
    }
    assert_eq!(get(&server.admin, "/nothing").status, 404);
    assert_eq!(http("POST", &server.admin, "/health", b"").status, 405);
}

#[test]
fn access_log_has_one_line_per_request() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(&dir.path().join("grid"));
    let creds = Credentials::new(server.access_key.clone(), server.secret_key.clone());
    let bucket = bucket_on(&server, "logged");
    let url = bucket.create_bucket(&creds).sign(TTL);
    assert_eq!(http("PUT", &server.s3, &target(&url), b"").status, 200);
    let url = bucket.put_object(Some(&creds), "k").sign(TTL);
    let put = http("PUT", &server.s3, &target(&url), b"0123456789");
    assert_eq!(put.status, 200);
    let request_id = put
        .head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .starts_with("x-amz-request-id:")
                .then(|| l.split_once(':').unwrap().1.trim().to_string())
        })
        .expect("no request id");
    let url = bucket.get_object(Some(&creds), "absent").sign(TTL);
    assert_eq!(get(&server.s3, &target(&url)).status, 404);
    // Anonymous, and refused.
    let r = get(&server.s3, "/logged/k");
    assert_eq!(r.status, 403, "{}{}", r.head, r.body);

    let line = server
        .log_line(|l| l.contains("gridstore::access") && l.contains(&request_id))
        .unwrap_or_else(|| panic!("no access line for {request_id}:\n{}", server.log_text()));
    assert!(line.contains(" INFO "), "{line}");
    for field in [
        format!("access_key=\"{}\"", server.access_key),
        "operation=\"PutObject\"".to_string(),
        "bucket=\"logged\"".to_string(),
        "status=200".to_string(),
        "bytes_in=10".to_string(),
        "bytes_out=0".to_string(),
        "duration_ms=".to_string(),
        "api=\"s3\"".to_string(),
    ] {
        assert!(line.contains(&field), "no {field} in {line}");
    }
    assert_eq!(
        server.log_count(|l| l.contains(&request_id)),
        1,
        "{}",
        server.log_text()
    );

    let anonymous = server
        .log_line(|l| l.contains("gridstore::access") && l.contains("status=403"))
        .unwrap_or_else(|| panic!("no access line for the 403:\n{}", server.log_text()));
    assert!(
        anonymous.contains("access_key=\"anonymous\""),
        "{anonymous}"
    );
    assert!(anonymous.contains("operation=\"GetObject\""), "{anonymous}");

    // A refused request: one readable line with its message, no Rust
    // structures, no ERROR.
    let refused = server
        .log_line(|l| l.contains("refused: NoSuchKey"))
        .unwrap_or_else(|| panic!("no error line for the 404:\n{}", server.log_text()));
    assert!(refused.contains("DEBUG"), "{refused}");
    assert!(
        refused.contains("The specified key does not exist."),
        "{refused}"
    );
    let log = server.log_text();
    assert!(!log.contains(" ERROR "), "{log}");
    assert!(!log.contains("S3Error"), "{log}");
}
