//! The node's Prometheus metrics, served at `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub op: &'static str,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabels {
    pub op: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TableLabels {
    pub table: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabels {
    pub peer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RepairLabels {
    pub what: &'static str,
}

pub struct Metrics {
    registry: Registry,
    /// Self-healing figures (see [`crate::repair_state::RepairState`]):
    /// the counters copied in at each scrape, the damaged chunks and the
    /// full-store pause set by the repair loop as they change.
    pub repair: Family<RepairLabels, Gauge>,
    /// Peers unheard from for a heartbeat or more, set at each scrape.
    pub peer_unheard_seconds: Family<PeerLabels, Gauge>,
    pub peer_lost_in_seconds: Family<PeerLabels, Gauge>,
    pub requests: Family<RequestLabels, Counter>,
    /// Single-record metadata reads by table: what a quorum read costs
    /// each replica (a bucket lookup is one per replica asked).
    pub record_reads: Family<TableLabels, Counter>,
    pub duration: Family<OpLabels, Histogram>,
    pub auth_failures: Counter,
    pub bytes_received: Counter,
    pub bytes_sent: Counter,
    pub shards: Gauge,
    pub used_bytes: Gauge,
    pub free_bytes: Gauge,
    pub available_bytes: Gauge,
    pub map_epoch: Gauge,
    pub gc_deleted_shards: Counter,
    pub gc_freed_bytes: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("gridstore_node");
        let requests = Family::<RequestLabels, Counter>::default();
        let duration = Family::<OpLabels, Histogram>::new_with_constructor(|| {
            // 100 µs .. ~100 s
            Histogram::new(exponential_buckets(1e-4, 4.0, 11))
        });
        let m = Self {
            repair: Family::default(),
            peer_unheard_seconds: Family::default(),
            peer_lost_in_seconds: Family::default(),
            requests,
            record_reads: Family::default(),
            duration,
            auth_failures: Counter::default(),
            bytes_received: Counter::default(),
            bytes_sent: Counter::default(),
            shards: Gauge::default(),
            used_bytes: Gauge::default(),
            free_bytes: Gauge::default(),
            available_bytes: Gauge::default(),
            map_epoch: Gauge::default(),
            gc_deleted_shards: Counter::default(),
            gc_freed_bytes: Counter::default(),
            registry: Registry::default(),
        };
        registry.register(
            "requests",
            "RPC requests by operation and HTTP status",
            m.requests.clone(),
        );
        registry.register(
            "record_reads",
            "Single-record metadata reads by table",
            m.record_reads.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "RPC request handling time by operation",
            m.duration.clone(),
        );
        registry.register(
            "auth_failures",
            "Requests refused: no admitted client certificate, or a call its identity may not make",
            m.auth_failures.clone(),
        );
        registry.register(
            "received_bytes",
            "Shard and record bytes received",
            m.bytes_received.clone(),
        );
        registry.register(
            "sent_bytes",
            "Shard and record bytes sent",
            m.bytes_sent.clone(),
        );
        registry.register("shards", "Shards held", m.shards.clone());
        registry.register("used_bytes", "Bytes of shards held", m.used_bytes.clone());
        registry.register(
            "fs_free_bytes",
            "Free bytes on the data filesystem",
            m.free_bytes.clone(),
        );
        registry.register(
            "available_bytes",
            "Bytes a new shard write may still take (quota and reserve applied)",
            m.available_bytes.clone(),
        );
        registry.register(
            "cluster_map_epoch",
            "Epoch of the cluster map held",
            m.map_epoch.clone(),
        );
        registry.register(
            "gc_deleted_shards",
            "Shards deleted by garbage collection (unreferenced past the grace period)",
            m.gc_deleted_shards.clone(),
        );
        registry.register(
            "gc_freed_bytes",
            "Bytes of shards deleted by garbage collection",
            m.gc_freed_bytes.clone(),
        );
        registry.register(
            "repair",
            "Self-healing: shards missing, rebuilding, waiting for a down node, chunks with no spare shard left, rebuilt (count, bytes), failed rebuilds, handed back, scrubbed (count, bytes), corrupt found, damaged chunks (too few shards to rebuild), rebuilds paused for a full store (1/0) and such pauses",
            m.repair.clone(),
        );
        registry.register(
            "peer_unheard_seconds",
            "Peers this node has not heard from for a heartbeat or more: seconds since their last answer",
            m.peer_unheard_seconds.clone(),
        );
        registry.register(
            "peer_lost_in_seconds",
            "Peers this node has not heard from: seconds until it would mark them lost (their shards then rebuilt elsewhere); 0 when due",
            m.peer_lost_in_seconds.clone(),
        );
        Self { registry, ..m }
    }

    /// Set the self-healing figure `what` (`gridstore_node_repair{what=..}`).
    pub fn set_repair(&self, what: &'static str, value: u64) {
        self.repair
            .get_or_create(&RepairLabels { what })
            .set(value.min(i64::MAX as u64) as i64);
    }

    /// The Prometheus text exposition format (0.0.4), served with
    /// [`CONTENT_TYPE`].
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        grid::metrics_text::classic_text(&out)
    }
}

/// What [`Metrics::render`] writes.
pub use grid::metrics_text::CONTENT_TYPE;

#[cfg(test)]
mod tests {
    use super::*;

    /// Every sample belongs to a family declared just before it, with help
    /// and a type, under the sample's own name (or its histogram base).
    #[test]
    fn every_family_has_help_and_type_under_its_sample_names() {
        let m = Metrics::new();
        m.requests
            .get_or_create(&RequestLabels {
                op: "put_shard",
                status: 201,
            })
            .inc();
        m.duration
            .get_or_create(&OpLabels { op: "put_shard" })
            .observe(0.01);
        m.auth_failures.inc();
        m.set_repair("missing", 3);
        let text = m.render();
        assert!(!text.contains("# EOF"), "{text}");
        let mut helped = std::collections::HashSet::new();
        let mut typed = std::collections::HashMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').unwrap();
                assert!(!help.is_empty(), "{line}");
                helped.insert(name.to_string());
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert!(helped.contains(name), "TYPE before HELP: {line}");
                if kind == "counter" {
                    assert!(name.ends_with("_total"), "{line}");
                }
                typed.insert(name.to_string(), kind.to_string());
            } else {
                let name = line.split(['{', ' ']).next().unwrap();
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| {
                        name.strip_suffix(s)
                            .filter(|f| typed.get(*f).is_some_and(|k| k == "histogram"))
                    })
                    .unwrap_or(name);
                assert!(typed.contains_key(family), "no TYPE for {line}");
            }
        }
        assert_eq!(typed["gridstore_node_requests_total"], "counter");
        assert_eq!(
            typed["gridstore_node_request_duration_seconds"],
            "histogram"
        );
    }
}
