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
