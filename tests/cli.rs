//! The binary's command line, run as a user would.

use std::process::Command;

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

    server.kill().unwrap();
    server.wait().unwrap();
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
}

/// `gridstore server DIR` on loopback ports the system picks, once it
/// says it is ready.
fn start_server(data: &std::path::Path) -> std::process::Child {
    use std::io::{BufRead, BufReader};
    let mut server = gridstore()
        .arg("server")
        .arg(data)
        .args(["--listen", "127.0.0.1:0", "--webdav-listen", "127.0.0.1:0"])
        .args(["--jobs-listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(server.stdout.take().unwrap()).lines();
    let ready = lines
        .by_ref()
        .map_while(Result::ok)
        .any(|l| l.starts_with("gridstore server ready"));
    assert!(ready, "the server never said it was ready");
    // Keep reading: the lines after the ready one (credentials) would
    // meet a closed pipe, and a failed print ends the server.
    std::thread::spawn(move || lines.for_each(drop));
    server
}

/// A second server on a directory in use is refused before it touches
/// it, and the first carries on.
#[test]
fn a_second_server_on_one_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("grid");
    let mut first = start_server(&data);
    let second = gridstore()
        .arg("server")
        .arg(&data)
        .args(["--listen", "127.0.0.1:0", "--webdav-listen", "127.0.0.1:0"])
        .args(["--jobs-listen", "127.0.0.1:0"])
        .output()
        .unwrap();
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
    first.kill().unwrap();
    first.wait().unwrap();
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
