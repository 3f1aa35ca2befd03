//! `gridstore bench s3` against a real S3 server in this process: s3s-fs
//! (the s3s project's file-system backend, with signature checking on),
//! so the load generator is tested independently of our own gateway.
//! Runs are short and nothing here asserts a speed.

use bench::s3_load::{self, S3Args, S3BenchError, S3Report};
use clap::Parser;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;
use std::net::SocketAddr;
use std::path::Path;
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::runtime::Runtime;

const ACCESS: &str = "bench-access";
const SECRET: &str = "bench-secret-0123456789";

/// An s3s-fs server on 127.0.0.1, stopped with its runtime.
struct Server {
    addr: SocketAddr,
    root: TempDir,
    _runtime: Runtime,
}

impl Server {
    fn start() -> Self {
        let root = tempfile::tempdir().expect("temp dir");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let fs = s3s_fs::FileSystem::new(root.path()).expect("s3s-fs");
        let mut builder = S3ServiceBuilder::new(fs);
        builder.set_auth(SimpleAuth::from_single(ACCESS, SECRET));
        let service = builder.build();
        let listener = runtime
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        runtime.spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                // Without it, a response written as head then body waits
                // out the client's delayed ACK: 40 ms per small GET.
                let _ = socket.set_nodelay(true);
                let service = service.clone();
                tokio::spawn(async move {
                    let _ = ConnBuilder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(socket), service)
                        .await;
                });
            }
        });
        Self {
            addr,
            root,
            _runtime: runtime,
        }
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Objects the server holds in `bucket` (s3s-fs keeps one file per
    /// object and leaves empty directories behind).
    fn objects(&self, bucket: &str) -> usize {
        fn count(dir: &Path) -> usize {
            std::fs::read_dir(dir)
                .map(|entries| {
                    entries
                        .flatten()
                        .map(|e| {
                            let path = e.path();
                            if path.is_dir() {
                                count(&path)
                            } else {
                                1
                            }
                        })
                        .sum()
                })
                .unwrap_or(0)
        }
        count(&self.root.path().join(bucket))
    }
}

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: S3Args,
}

/// Parses the options as the command line would.
fn args(endpoint: &str, extra: &[&str]) -> S3Args {
    let mut argv = vec![
        "s3",
        "--endpoint",
        endpoint,
        "--access-key",
        ACCESS,
        "--secret-key",
        SECRET,
        "--concurrency",
        "4",
        "--timeout",
        "20s",
        "--json",
    ];
    if !extra.contains(&"--duration") {
        argv.extend_from_slice(&["--duration", "1s"]);
    }
    argv.extend_from_slice(extra);
    Cli::try_parse_from(argv).expect("valid options").args
}

/// The JSON `--json` prints, with the fields scripts rely on.
fn check_json(report: &S3Report, op: &str) -> serde_json::Value {
    let json = serde_json::to_value(report).expect("report serializes");
    for field in [
        "ops_per_s",
        "mib_per_s",
        "p50_ms",
        "p99_ms",
        "max_ms",
        "duration_s",
    ] {
        assert!(json[field].is_f64(), "{field} missing in {json}");
    }
    for field in ["ops", "errors", "size", "concurrency"] {
        assert!(json[field].is_u64(), "{field} missing in {json}");
    }
    assert_eq!(json["op"], op);
    assert_eq!(json["concurrency"], 4);
    assert!(json["by_op"].is_array());
    json
}

fn assert_clean_run(report: &S3Report) {
    assert!(report.total.ops > 0, "no operations: {report:?}");
    assert_eq!(report.total.errors, 0, "errors: {report:?}");
    assert!(report.first_error.is_none(), "{report:?}");
    assert!(report.warnings.is_empty(), "{report:?}");
    assert!(report.total.p50_ms > 0.0 && report.total.p50_ms <= report.total.p99_ms);
    assert!(report.total.p99_ms <= report.total.max_ms);
    let per_op: u64 = report.by_op.iter().map(|o| o.stats.ops).sum();
    assert_eq!(per_op, report.total.ops);
}

#[test]
fn put_uploads_and_cleans_up() {
    let server = Server::start();
    let args = args(&server.endpoint(), &["--op", "put", "--size", "4KiB"]);
    let report = s3_load::run(&args).expect("put run");
    assert_clean_run(&report);
    let json = check_json(&report, "put");
    assert_eq!(json["size"], 4096);
    assert_eq!(report.total.bytes, report.total.ops * 4096);
    assert!(report.total.mib_per_s > 0.0);
    // The bucket was created, and the objects the run wrote are gone.
    assert!(server.root.path().join("gridstore-bench").is_dir());
    assert_eq!(server.objects("gridstore-bench"), 0);
    // The table shows the same run.
    let table = s3_load::table(&report);
    assert!(table.contains("put") && table.contains("ops/s"), "{table}");
}

#[test]
fn keep_leaves_the_objects() {
    let server = Server::start();
    let args = args(
        &server.endpoint(),
        &[
            "--op", "put", "--size", "1KiB", "--bucket", "kept", "--keep",
        ],
    );
    let report = s3_load::run(&args).expect("put run");
    assert_clean_run(&report);
    assert_eq!(server.objects("kept") as u64, report.total.ops);
    let kept = report.kept.as_deref().expect("where the objects are");
    assert!(kept.starts_with("s3://kept/gridstore-bench-"), "{kept}");
}

#[test]
fn get_reads_whole_multi_segment_objects() {
    let server = Server::start();
    // Larger than a body segment (64 KiB), not a multiple of it.
    let args = args(
        &server.endpoint(),
        &["--op", "get", "--size", "200KiB", "--objects", "12"],
    );
    let report = s3_load::run(&args).expect("get run");
    assert_clean_run(&report);
    check_json(&report, "get");
    assert_eq!(report.objects, 12);
    assert_eq!(report.total.bytes, report.total.ops * 200 * 1024);
    assert!(report.total.mib_per_s > 0.0);
    assert_eq!(server.objects("gridstore-bench"), 0);
}

#[test]
fn mixed_runs_every_kind_without_errors() {
    let server = Server::start();
    let args = args(
        &server.endpoint(),
        &[
            "--op",
            "mixed",
            "--size",
            "4KiB",
            "--objects",
            "20",
            "--duration",
            "2s",
        ],
    );
    let report = s3_load::run(&args).expect("mixed run");
    assert_clean_run(&report);
    let json = serde_json::to_value(&report).expect("report serializes");
    assert_eq!(json["op"], "mixed");
    let kinds: Vec<&str> = report.by_op.iter().map(|o| o.op.name()).collect();
    // With hundreds of operations at these odds, every kind occurs.
    assert!(
        kinds.contains(&"get") && kinds.contains(&"put"),
        "{kinds:?}"
    );
    for entry in json["by_op"].as_array().expect("array") {
        assert!(
            entry["op"].is_string() && entry["p99_ms"].is_f64(),
            "{entry}"
        );
    }
    assert_eq!(server.objects("gridstore-bench"), 0);
    let table = s3_load::table(&report);
    assert!(table.contains("total"), "{table}");
    println!("{table}");
}

#[test]
fn list_walks_the_prepared_objects() {
    let server = Server::start();
    let args = args(
        &server.endpoint(),
        &["--op", "list", "--size", "0", "--objects", "30"],
    );
    let report = s3_load::run(&args).expect("list run");
    assert_clean_run(&report);
    let json = check_json(&report, "list");
    // One page holds all 30, so every listing returns all of them.
    assert_eq!(report.keys_listed, Some(report.total.ops * 30));
    assert!(json["keys_per_s"].is_f64());
    assert_eq!(server.objects("gridstore-bench"), 0);
}

#[test]
fn wrong_secret_is_a_clear_error() {
    let server = Server::start();
    let mut args = args(&server.endpoint(), &["--op", "put"]);
    args.secret_key = Some("not-the-secret".into());
    match s3_load::run(&args) {
        Err(e @ S3BenchError::Bucket { .. }) => {
            assert!(e.to_string().contains("403"), "{e}");
        }
        other => panic!("expected a bucket error, got {:?}", other.map(|r| r.total)),
    }
}

#[test]
fn unreachable_endpoint_is_a_clear_error() {
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let args = args(&format!("http://127.0.0.1:{port}"), &["--op", "put"]);
    let error = s3_load::run(&args).expect_err("no server");
    assert!(matches!(error, S3BenchError::Bucket { .. }), "{error}");
}

#[test]
fn every_request_failing_is_an_error() {
    // A server that has the bucket but fails every object request.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let listener = runtime
        .block_on(TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    runtime.spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|request: http::Request<_>| async move {
                    let _: &hyper::body::Incoming = request.body();
                    let status = if request.method() == http::Method::HEAD {
                        http::StatusCode::OK
                    } else {
                        http::StatusCode::SERVICE_UNAVAILABLE
                    };
                    http::Response::builder()
                        .status(status)
                        .body(http_body_util::Full::new(bytes::Bytes::from_static(
                            b"try again later",
                        )))
                });
                let _ = ConnBuilder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(socket), service)
                    .await;
            });
        }
    });
    let args = args(
        &format!("http://{addr}"),
        // Small enough to be sent whole before the refusal comes back.
        &["--op", "put", "--size", "1KiB", "--duration", "300ms"],
    );
    match s3_load::run(&args) {
        Err(e @ S3BenchError::AllFailed { .. }) => {
            let message = e.to_string();
            assert!(
                message.contains("503") && message.contains("try again later"),
                "{message}"
            );
        }
        other => panic!(
            "expected every operation to fail, got {:?}",
            other.map(|r| r.total)
        ),
    }
}

#[test]
fn options_parse_like_warp() {
    let parsed = args(
        "http://127.0.0.1:9000",
        &["--size", "64MiB", "--duration", "1m30s", "--op", "mixed"],
    );
    assert_eq!(parsed.size, 64 << 20);
    assert_eq!(parsed.duration, std::time::Duration::from_secs(90));
    assert_eq!(parsed.bucket, "gridstore-bench");
    assert_eq!(parsed.region, "us-east-1");
    for bad in [
        ["--size", "lots"],
        ["--concurrency", "0"],
        ["--duration", "soon"],
        ["--op", "copy"],
    ] {
        let mut argv = vec!["s3", "--endpoint", "http://x"];
        argv.extend_from_slice(&bad);
        assert!(Cli::try_parse_from(argv).is_err(), "{bad:?} accepted");
    }
    // Rejected before any request.
    let too_big = args_with("--size", "6GiB");
    assert!(matches!(
        s3_load::run(&too_big),
        Err(S3BenchError::Options(_))
    ));
    let not_a_url = args("localhost:9000", &[]);
    assert!(matches!(
        s3_load::run(&not_a_url),
        Err(S3BenchError::Endpoint { .. })
    ));
}

fn args_with(flag: &str, value: &str) -> S3Args {
    args("http://127.0.0.1:9", &[flag, value])
}
