//! Checks of the Prometheus text format the nodes and gateways serve, and
//! a plain HTTP GET to fetch it with.

use std::path::Path;
use std::process::Command;

/// A plain HTTP/1.1 GET: (status line and headers, body).
pub fn http_get(addr: &str, path: &str) -> (String, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    (head.to_string(), body.to_string())
}

/// What `promtool check metrics` finds in `text` ("" when nothing), or
/// None when there is no promtool on this machine.
pub fn promtool(text: &str) -> Option<String> {
    use std::io::Write;
    // Where the test machines have it, else wherever PATH finds one.
    let program = if Path::new("/usr/local/bin/promtool").exists() {
        "/usr/local/bin/promtool"
    } else {
        "promtool"
    };
    let mut child = Command::new(program)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .ok()?;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let found = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() || !found.is_empty(),
        "promtool failed silently"
    );
    Some(found.trim().to_string())
}

/// The text format's rules promtool checks, by hand: each family has
/// non-empty HELP then TYPE, each sample belongs to the family declared
/// before it, names are lower snake case, counters end in `_total`, and
/// values are numbers.
pub fn lint_exposition(text: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let mut help: Option<String> = None;
    let mut family: Option<(String, String)> = None;
    let mut families = std::collections::HashSet::new();
    let good_name = |n: &str| {
        !n.is_empty()
            && !n.starts_with(|c: char| c.is_ascii_digit())
            && n.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == ':')
    };
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            match rest.split_once(' ') {
                Some((name, h)) if !h.trim().is_empty() => help = Some(name.to_string()),
                _ => problems.push(format!("empty HELP: {line}")),
            }
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let Some((name, kind)) = rest.split_once(' ') else {
                problems.push(format!("bad TYPE: {line}"));
                continue;
            };
            if help.as_deref() != Some(name) {
                problems.push(format!("no HELP before {line}"));
            }
            if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                problems.push(format!("unknown type: {line}"));
            }
            if kind == "counter" && !name.ends_with("_total") {
                problems.push(format!("counter not named _total: {line}"));
            }
            if !good_name(name) {
                problems.push(format!("bad name: {line}"));
            }
            if !families.insert(name.to_string()) {
                problems.push(format!("family declared twice: {line}"));
            }
            family = Some((name.to_string(), kind.to_string()));
        } else if line.starts_with('#') {
            problems.push(format!("stray comment: {line}"));
        } else {
            let name = line.split(['{', ' ']).next().unwrap_or("");
            let value = line.rsplit(' ').next().unwrap_or("");
            let belongs = family.as_ref().is_some_and(|(f, kind)| {
                name == f
                    || (matches!(kind.as_str(), "histogram" | "summary")
                        && ["_bucket", "_sum", "_count"]
                            .iter()
                            .any(|s| name.strip_suffix(s) == Some(f.as_str())))
            });
            if !belongs {
                problems.push(format!("sample outside its family: {line}"));
            }
            if value.parse::<f64>().is_err() && !["+Inf", "-Inf", "NaN"].contains(&value) {
                problems.push(format!("bad value: {line}"));
            }
        }
    }
    if families.is_empty() {
        problems.push("no metric families".into());
    }
    problems
}
