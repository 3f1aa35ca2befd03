//! The binary's command line, run as a user would.

mod support;

use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};
use support::exposition::{http_get, lint_exposition, promtool};
use support::server::Server;

fn gridstore() -> Command {
    Command::new(env!("CARGO_BIN_EXE_gridstore"))
}

#[test]
fn help_lists_the_subcommands() {
    let out = gridstore().arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("bench"), "{text}");
}

#[test]
fn unknown_subcommand_fails_cleanly() {
    let out = gridstore().arg("frobnicate").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unrecognized subcommand"));
}

#[test]
fn bench_codec_json_has_the_headline_figures() {
    let out = gridstore()
        .args(["bench", "codec", "--json", "--quick"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for key in [
        "memcpy_gbps",
        "aead_gbps",
        "seal_gbps",
        "open_gbps",
        "seal_2threads_gbps",
    ] {
        let g = v[key].as_f64().unwrap_or_else(|| panic!("{key} missing"));
        assert!(g > 0.0 && g.is_finite(), "{key} = {g}");
    }
    let rows = v["rows"].as_array().unwrap();
    for stage in [
        "memcpy",
        "cdc",
        "blake3",
        "zstd_compress",
        "aead_chacha20poly1305",
        "rs_encode",
        "seal",
        "open",
    ] {
        assert!(rows.iter().any(|r| r["stage"] == stage), "no {stage} row");
    }
    for rs in ["4+2", "8+4", "10+4"] {
        for data in ["random", "text"] {
            assert!(
                rows.iter()
                    .any(|r| r["stage"] == "seal" && r["rs"] == rs && r["data"] == data),
                "no seal row for {rs} {data}"
            );
        }
    }
}

#[test]
fn bench_node_json_reports_every_pair() {
    let dir = tempfile::tempdir().unwrap();
    let out = gridstore()
        .args(["bench", "node", "--json", "--quick", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["shard_bytes"].as_u64().unwrap() >> 20, 1, "1 MiB shards");
    for pair in [
        "put",
        "get",
        "get_cached",
        "durable_create",
        "put_parallel",
        "get_parallel",
    ] {
        for field in ["raw_gbps", "rpc_gbps", "ratio"] {
            let g = v[pair][field]
                .as_f64()
                .unwrap_or_else(|| panic!("{pair}.{field} missing"));
            assert!(g > 0.0 && g.is_finite(), "{pair}.{field} = {g}");
        }
    }
    // The bench cleans up after itself.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

/// `admin status` answers with the exit status scripts read: 0 with every
/// node up, non-zero once they are gone (here: with the server that ran
/// them), each down node named.
#[test]
fn admin_status_fails_when_nodes_are_down() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("grid");
    let mut server = start_server(&data);

    let status = || {
        gridstore()
            .args(["admin", "--dir"])
            .arg(&data)
            .arg("status")
            .output()
            .unwrap()
    };
    let up = status();
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&up.stdout)
            .lines()
            .filter(|l| l.contains("\tup\t"))
            .count(),
        6
    );

    server.kill();
    let down = status();
    assert!(!down.status.success(), "exit 0 with every node down");
    let out = String::from_utf8_lossy(&down.stdout);
    assert_eq!(
        out.lines().filter(|l| l.contains("\tDOWN")).count(),
        6,
        "{out}"
    );
    assert!(
        String::from_utf8_lossy(&down.stderr).contains("6 of 6 nodes did not answer"),
        "{}",
        String::from_utf8_lossy(&down.stderr)
    );

    // The JSON says the same, node by node.
    let out = admin(&data, &["status", "--json"]);
    assert_fails(&out, "status --json");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    for n in v["nodes"].as_array().unwrap() {
        assert_eq!(n["up"], false, "{n}");
        assert!(n["error"].is_string() && n["shards"].is_null(), "{n}");
    }

    // Every command that needs the nodes fails with one line.
    for args in [
        &["repair", "status"][..],
        &["repair", "status", "--json"],
        &["audit"],
        &["audit", "--json"],
        &["node", "list"],
        &["node", "list", "--json"],
        &["node", "seed"],
        &["node", "drain", "node-1"],
        &["key", "list"],
        &["key", "list", "--json"],
        &["key", "create", "--name", "x"],
        &["key", "delete", "GSNOSUCHKEY"],
        &["bucket", "list"],
        &["bucket", "list", "--json"],
        &["bucket", "create", "logs", "--owner", "GSNOSUCHKEY"],
        &["bucket", "delete", "logs"],
        &["bucket", "public", "logs", "on"],
    ] {
        assert_fails(&admin(&data, args), &args.join(" "));
    }
}

/// `gridstore server DIR` with its usual log.
fn start_server(data: &Path) -> Server {
    Server::start(data, "info")
}

/// `gridstore admin --dir DATA ARGS...`.
fn admin(data: &Path, args: &[&str]) -> Output {
    gridstore()
        .args(["admin", "--dir"])
        .arg(data)
        .args(args)
        .output()
        .unwrap()
}

/// A successful run's stdout as JSON.
fn json(data: &Path, args: &[&str]) -> Value {
    let out = admin(data, args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{args:?} printed no JSON ({e}):\n{}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// A failed run: exit status 1 and one readable line on stderr, no panic
/// and no Debug dump.
fn assert_fails(out: &Output, what: &str) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{what}: {err}");
    assert_eq!(err.lines().count(), 1, "{what}: not one line:\n{err}");
    assert!(err.starts_with("gridstore admin: "), "{what}: {err}");
    assert!(
        !err.contains("panicked") && !err.contains(" { ") && !err.contains("Error("),
        "{what}: {err}"
    );
    err
}

fn u64_field(v: &Value, field: &str) -> u64 {
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} is no unsigned number in {v}"))
}

fn str_field<'a>(v: &'a Value, field: &str) -> &'a str {
    v[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} is no string in {v}"))
}

/// A second server on a directory in use is refused before it touches
/// it, and the first carries on.
#[test]
fn a_second_server_on_one_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("grid");
    let first = start_server(&data);
    let second = Server::command(&data).output().unwrap();
    assert!(!second.status.success(), "a second server started");
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(err.contains("in use by another gridstore server"), "{err}");
    let status = gridstore()
        .args(["admin", "--dir"])
        .arg(&data)
        .arg("status")
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "the first server's nodes: {}",
        String::from_utf8_lossy(&status.stdout)
    );
    drop(first);
}

/// A port in use is reported before the data directory is created.
#[test]
fn a_port_in_use_fails_before_the_directory_is_made() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("grid");
    let out = gridstore()
        .arg("server")
        .arg(&data)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args([
            "--webdav-listen",
            "127.0.0.1:0",
            "--jobs-listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot listen for S3") && err.contains("--listen"),
        "{err}"
    );
    assert!(!data.exists(), "the data directory was made");
}

/// Every listing prints one JSON object with `--json`: the fields scripts
/// read, numbers as numbers, sizes in bytes.
#[test]
fn admin_listings_print_json() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("grid");
    let server = start_server(&data);
    let created = admin(&data, &["key", "create", "--name", "alice"]);
    assert!(created.status.success());
    let owner = server.access_key.as_str();
    let ok = |args: &[&str]| {
        let out = admin(&data, args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    ok(&[
        "bucket",
        "create",
        "logs",
        "--owner",
        owner,
        "--erasure",
        "2+1",
    ]);
    ok(&["bucket", "public", "logs", "on"]);

    let status = json(&data, &["status", "--json"]);
    let nodes = status["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 6);
    for n in nodes {
        assert_eq!(n["up"], true, "{n}");
        assert!(n["error"].is_null(), "{n}");
        str_field(n, "id");
        str_field(n, "site");
        str_field(n, "addr");
        u64_field(n, "shards");
        u64_field(n, "used_bytes");
        assert!(u64_field(n, "available_bytes") > 0, "{n}");
        assert!(u64_field(n, "capacity_bytes") > 0, "{n}");
        assert!(u64_field(n, "map_epoch") > 0, "{n}");
    }

    let map = json(&data, &["node", "list", "--json"]);
    assert!(u64_field(&map, "epoch") > 0);
    let nodes = map["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 6);
    for n in nodes {
        assert_eq!(str_field(n, "state"), "up");
        assert_eq!(u64_field(n, "capacity_bytes"), 1 << 40);
        assert_eq!(str_field(n, "key").len(), 64, "{n}");
        assert!(n["untrusted_reason"].is_null(), "{n}");
        str_field(n, "addr");
        str_field(n, "site");
    }
    let clients = map["clients"].as_array().unwrap();
    assert!(clients.iter().any(|c| c["role"] == "gateway"), "{map}");

    let keys = json(&data, &["key", "list", "--json"]);
    let keys = keys["keys"].as_array().unwrap();
    let alice = keys.iter().find(|k| k["name"] == "alice").expect("alice");
    assert_eq!(alice["admin"], false);
    assert!(str_field(alice, "access_key").starts_with("GS"));
    assert!(u64_field(alice, "created_ms") > 0);
    let root = keys
        .iter()
        .find(|k| k["access_key"] == owner)
        .expect("root");
    assert_eq!(root["admin"], true);

    let buckets = json(&data, &["bucket", "list", "--json"]);
    let logs = &buckets["buckets"][0];
    assert_eq!(str_field(logs, "name"), "logs");
    assert_eq!(str_field(logs, "owner"), owner);
    assert_eq!(u64_field(&logs["erasure"], "data"), 2);
    assert_eq!(u64_field(&logs["erasure"], "parity"), 1);
    assert_eq!(str_field(logs, "versioning"), "unversioned");
    assert_eq!(logs["public"], true);
    u64_field(logs, "created_ms");

    let repair = json(&data, &["repair", "status", "--json"]);
    let nodes = repair["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 6);
    for n in nodes {
        assert_eq!(n["answered"], true, "{n}");
        assert_eq!(str_field(n, "state"), "up");
        u64_field(n, "map_epoch");
        let r = &n["repair"];
        for field in [
            "missing",
            "waiting",
            "at_risk",
            "rebuilding",
            "rebuilt_shards",
            "rebuilt_bytes",
            "failed_rebuilds",
            "handed_back",
            "scrubbed_shards",
            "corrupt_found",
            "damaged_chunks",
        ] {
            u64_field(r, field);
        }
        assert!(r["damaged"].is_array(), "{r}");
    }
    assert!(repair["out_of_touch"].as_array().unwrap().is_empty());
    assert!(repair["untrusted"].as_array().unwrap().is_empty());

    let audit = json(&data, &["audit", "--json"]);
    assert!(u64_field(&audit, "epoch") > 0);
    let nodes = audit["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 6);
    for n in nodes {
        str_field(n, "id");
        for field in [
            "passed",
            "failed",
            "skipped",
            "rechecking",
            "recent_failures",
        ] {
            u64_field(n, field);
        }
        assert!(
            ["ok", "nothing to challenge"].contains(&str_field(n, "result")),
            "{n}"
        );
    }
    assert!(audit["withheld"].is_null());

    // People get the same figures, sizes in one binary unit system.
    let table = String::from_utf8(admin(&data, &["node", "list"]).stdout).unwrap();
    assert_eq!(table.matches("\t1.0 TiB").count(), 6, "{table}");
    let table = String::from_utf8(admin(&data, &["status"]).stdout).unwrap();
    let sizes: Vec<&str> = table
        .lines()
        .flat_map(|l| l.split('\t'))
        .filter_map(|f| f.strip_suffix(" used").or(f.strip_suffix(" available")))
        .collect();
    assert_eq!(sizes.len(), 12, "{table}");
    for size in sizes {
        assert!(is_size(size), "{size:?} in\n{table}");
    }

    // Failures against a live grid: one line, exit status 1.
    let err = assert_fails(
        &admin(&data, &["key", "delete", "GSNOSUCHKEY"]),
        "key delete",
    );
    assert!(err.contains("no access key GSNOSUCHKEY"), "{err}");
    assert_fails(
        &admin(&data, &["bucket", "delete", "no-such-bucket"]),
        "bucket delete",
    );
    let err = assert_fails(
        &admin(
            &data,
            &[
                "bucket",
                "create",
                "other",
                "--owner",
                owner,
                "--erasure",
                "4",
            ],
        ),
        "bad erasure",
    );
    assert!(err.contains("4+2"), "{err}");
    let missing = dir.path().join("nothing-here");
    assert_fails(&admin(&missing, &["status"]), "not a server directory");
    drop(server);
}

/// "512 B" or "1.5 GiB": what the one size formatter prints.
fn is_size(s: &str) -> bool {
    match s.split_once(' ') {
        Some((n, "B")) => n.parse::<u64>().is_ok(),
        Some((n, unit)) => {
            ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"].contains(&unit)
                && n.split_once('.').is_some_and(|(_, d)| d.len() == 1)
                && n.parse::<f64>().is_ok()
        }
        None => false,
    }
}

/// `gridstore admin --help` and every subcommand's `--help` succeed and
/// say what the command does.
#[test]
fn every_admin_subcommand_has_help() {
    fn commands(help: &str) -> Vec<String> {
        help.lines()
            .skip_while(|l| !l.starts_with("Commands:"))
            .skip(1)
            .take_while(|l| !l.trim().is_empty())
            .filter_map(|l| l.split_whitespace().next())
            .filter(|c| *c != "help")
            .map(str::to_string)
            .collect()
    }
    let mut todo = vec![vec!["admin".to_string()]];
    let mut seen = 0;
    while let Some(path) = todo.pop() {
        let out = gridstore().args(&path).arg("--help").output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{path:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let about = text.lines().next().unwrap_or("");
        assert!(
            about.len() > 10 && !about.starts_with("Usage:"),
            "{path:?} has no description:\n{text}"
        );
        // Every argument and option line carries its own text.
        for line in text
            .lines()
            .skip_while(|l| !(l.starts_with("Arguments:") || l.starts_with("Options:")))
            .filter(|l| l.starts_with("  ") && l.trim_start().starts_with(['-', '<', '[']))
        {
            assert!(
                line.trim().contains("  "),
                "{path:?}: no help for {line:?}\n{text}"
            );
        }
        for c in commands(&text) {
            let mut sub = path.clone();
            sub.push(c);
            todo.push(sub);
        }
        seen += 1;
    }
    // admin, its groups and their subcommands.
    assert!(seen >= 20, "only {seen} commands found");
}

/// A node's and the gateway's `/metrics`, scraped as Prometheus would:
/// every family has HELP and TYPE, names follow the conventions, and
/// `promtool check metrics` passes when it is installed.
#[test]
fn metrics_pass_the_exposition_checks() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("grid");
    let server = start_server(&data);
    // Some traffic, so the request counters have samples.
    assert!(admin(&data, &["key", "list"]).status.success());

    let map = json(&data, &["node", "list", "--json"]);
    let node = &map["nodes"][0];
    let key = grid::tls::IdentityKey::from_hex(str_field(node, "key")).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (status, node_text) =
        rt.block_on(support::probe_get(str_field(node, "addr"), key, "/metrics"));
    assert_eq!(status, 200);
    assert!(
        node_text.contains("gridstore_node_requests_total{"),
        "{node_text}"
    );

    let (head, gateway_text) = http_get(&server.jobs, "/metrics");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    assert!(
        gateway_text.contains("gridstore_gateway_audits_total"),
        "{gateway_text}"
    );

    for (what, text) in [("node", &node_text), ("gateway", &gateway_text)] {
        let problems = lint_exposition(text);
        assert!(problems.is_empty(), "{what}: {problems:#?}\n{text}");
        if let Some(found) = promtool(text) {
            assert!(
                found.is_empty(),
                "{what}: promtool check metrics: {found}\n{text}"
            );
        }
    }
    drop(server);
}
