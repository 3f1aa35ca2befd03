//! Bucket and key names, version ids, default erasure shapes.

use cluster::erasure_default::default_erasure;
use cluster::naming::{check_bucket_name, check_object_key, NameError};
use cluster::version_id::{Hlc, VersionId, MAX_FORWARD_DRIFT_MS};
use metadata::model::{ClusterMap, ErasureSpec, Node, NodeState};
use proptest::prelude::*;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

#[test]
fn bucket_names_follow_s3_rules() {
    for ok in ["abc", "my-bucket", "my.bucket.2026", "a1b", &"a".repeat(63)] {
        assert_eq!(check_bucket_name(ok), Ok(()), "{ok}");
    }
    for bad in [
        "ab",
        &"a".repeat(64),
        "My-Bucket",
        "my_bucket",
        "-abc",
        "abc-",
        ".abc",
        "a..b",
        "192.168.1.1",
        "xn--abc",
        "sthree-x",
        "abc-s3alias",
        "abc--ol-s3",
        "ab c",
        "abc/def",
        "../etc",
        "ünï",
    ] {
        assert!(
            matches!(check_bucket_name(bad), Err(NameError::Bucket(_))),
            "{bad}"
        );
    }
}

#[test]
fn object_keys_are_bounded_utf8_without_nul() {
    for ok in [
        "a",
        "dir/sub/file.txt",
        "../../etc/passwd",
        "ünïcode ☃",
        &"k".repeat(1024),
    ] {
        assert_eq!(check_object_key(ok), Ok(()), "{ok}");
    }
    assert!(check_object_key("").is_err());
    assert!(check_object_key(&"k".repeat(1025)).is_err());
    assert!(check_object_key("a\0b").is_err());
    // 1024 bytes, not characters.
    assert!(check_object_key(&"é".repeat(513)).is_err());
}

static CLOCK: AtomicU64 = AtomicU64::new(1_800_000_000_000);
fn test_clock() -> u64 {
    CLOCK.load(Ordering::SeqCst)
}

#[test]
fn version_ids_increase_even_when_the_clock_stalls_or_steps_back() {
    let hlc = Hlc::with_clock([1; 8], test_clock);
    let mut last = hlc.next();
    for step in [0i64, 0, 5, -1000, 0, -1, 3, 0] {
        let now = CLOCK.load(Ordering::SeqCst) as i64 + step;
        CLOCK.store(now as u64, Ordering::SeqCst);
        for _ in 0..1000 {
            let id = hlc.next();
            assert!(id > last, "{id:?} <= {last:?}");
            last = id;
        }
    }
    // 8000 ids in a few ms of clock: the counter, then borrowed ms, carry it.
    assert!(last.time_ms() >= test_clock() - 1000);
}

#[test]
fn a_version_made_after_reading_another_sorts_after_it() {
    fn slow() -> u64 {
        1_000_000
    }
    fn fast() -> u64 {
        1_000_000 + 30_000
    }
    let behind = Hlc::with_clock([1; 8], slow);
    let ahead = Hlc::with_clock([2; 8], fast);
    let theirs = ahead.next();
    assert!(behind.next() < theirs, "clock skew alone orders wrongly");
    behind.observe(&theirs);
    assert!(behind.next() > theirs);

    // An id from a clock absurdly far ahead does not drag ours along.
    fn broken() -> u64 {
        1_000_000 + 10 * MAX_FORWARD_DRIFT_MS
    }
    let far = Hlc::with_clock([3; 8], broken).next();
    behind.observe(&far);
    assert!(behind.next().time_ms() < far.time_ms());
}

#[test]
fn ids_from_many_threads_and_gateways_are_unique() {
    let gateways: Vec<Arc<Hlc>> = (0..3).map(|_| Arc::new(Hlc::new())).collect();
    let mut all: Vec<VersionId> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..6)
            .map(|t| {
                let g = gateways[t % 3].clone();
                s.spawn(move || (0..5000).map(|_| g.next()).collect::<Vec<_>>())
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let n = all.len();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), n);
}

proptest! {
    #[test]
    fn version_id_text_round_trips(bytes in any::<[u8; 16]>()) {
        let id = VersionId(bytes);
        let text = id.to_text();
        prop_assert_eq!(text.len(), 32);
        prop_assert_eq!(VersionId::from_text(&text), Some(id));
        prop_assert_eq!(VersionId::from_text(&text.to_uppercase()).filter(|_| text.bytes().any(|c| c.is_ascii_alphabetic())), None);
    }
}

fn map(nodes: &[(&str, NodeState)]) -> ClusterMap {
    ClusterMap {
        epoch: 1,
        nodes: nodes
            .iter()
            .enumerate()
            .map(|(i, (site, state))| Node {
                id: format!("n{i}"),
                addr: String::new(),
                site: (*site).into(),
                capacity_bytes: 1 << 40,
                state: *state as i32,
                key: vec![],
                untrusted_reason: String::new(),
            })
            .collect(),
        clients: vec![],
        ..ClusterMap::default()
    }
}

/// (site, state) per node, and the (k, m) expected.
type ErasureCase = (&'static [(&'static str, NodeState)], (u32, u32));

#[test]
fn default_erasure_follows_cluster_size_and_sites() {
    use NodeState::*;
    let cases: [ErasureCase; 7] = [
        (&[("a", Up)], (1, 0)),
        (&[("a", Up), ("b", Up)], (1, 1)),
        (&[("a", Up), ("b", Up), ("c", Up)], (2, 1)),
        (&[("a", Up), ("a", Up), ("b", Up), ("b", Up)], (3, 1)),
        (
            &[
                ("a", Up),
                ("a", Up),
                ("b", Up),
                ("b", Up),
                ("c", Up),
                ("c", Up),
            ],
            (4, 2),
        ),
        // Nodes that are not placeable do not count.
        (
            &[
                ("a", Up),
                ("a", Down),
                ("b", Up),
                ("b", Draining),
                ("c", Up),
                ("c", Removed),
            ],
            (2, 1),
        ),
        (
            &[
                ("a", Up),
                ("a", Up),
                ("a", Up),
                ("b", Up),
                ("b", Up),
                ("b", Up),
                ("c", Up),
                ("c", Up),
                ("c", Up),
                ("d", Up),
                ("d", Up),
                ("d", Up),
            ],
            (8, 3),
        ),
    ];
    for (nodes, (k, m)) in cases {
        assert_eq!(
            default_erasure(&map(nodes)),
            ErasureSpec::new(k, m),
            "{nodes:?}"
        );
    }
}
