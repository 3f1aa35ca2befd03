//! The gateway's Prometheus metrics, served on the admin listener's
//! `/metrics`: S3 requests by operation and WebDAV requests by method
//! (counts by status, errors, latency, bytes, requests in flight), and
//! what the gateway sees of the grid (storage audit challenges per node,
//! nodes per state in the map it follows). Labels never carry bucket or
//! object names: the listener is unauthenticated.

use cluster::ObjectStore;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::time::Duration;

pub use grid::metrics_text::CONTENT_TYPE;

/// Label pairs: the two front ends name their first label differently
/// (`operation` for S3, `method` for WebDAV) but share everything else.
type Labels = Vec<(&'static str, String)>;

/// One front end's request figures.
#[derive(Debug)]
pub struct FrontMetrics {
    /// The name of the label saying what a request was.
    what: &'static str,
    requests: Family<Labels, Counter>,
    errors: Family<Labels, Counter>,
    duration: Family<Labels, Histogram>,
    received: Family<Labels, Counter>,
    sent: Family<Labels, Counter>,
    in_flight: Gauge,
}

/// One finished request, as [`FrontMetrics::record`] counts it.
pub struct Finished<'a> {
    pub what: &'a str,
    pub status: u16,
    /// S3's error code, or the status for WebDAV; `None` for a success.
    pub error: Option<&'a str>,
    pub received: u64,
    pub sent: u64,
    pub elapsed: Duration,
}

impl FrontMetrics {
    pub(crate) fn new(what: &'static str) -> Self {
        Self {
            what,
            requests: Family::default(),
            errors: Family::default(),
            // 1 ms .. ~65 s: a HEAD on a warm gateway to a multi-GiB GET.
            duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.001, 2.0, 17))
            }),
            received: Family::default(),
            sent: Family::default(),
            in_flight: Gauge::default(),
        }
    }

    fn register(&self, registry: &mut Registry, front: &str) {
        let by = self.what;
        registry.register(
            "requests",
            format!("{front} requests by {by} and HTTP status"),
            self.requests.clone(),
        );
        registry.register(
            "errors",
            format!("{front} requests answered with an error, by {by} and error code"),
            self.errors.clone(),
        );
        registry.register(
            "request_duration_seconds",
            format!("{front} request time by {by}, until the last byte of the answer"),
            self.duration.clone(),
        );
        registry.register(
            "received_bytes",
            format!("{front} request body bytes received, by {by}"),
            self.received.clone(),
        );
        registry.register(
            "sent_bytes",
            format!("{front} answer body bytes sent, by {by}"),
            self.sent.clone(),
        );
        registry.register(
            "in_flight_requests",
            format!("{front} requests being served"),
            self.in_flight.clone(),
        );
    }

    /// A request began; it counts as in flight until the guard is dropped.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.inc();
        InFlight(self.clone())
    }

    /// Requests being served now.
    pub fn in_flight(&self) -> i64 {
        self.in_flight.get()
    }

    pub fn record(&self, f: &Finished<'_>) {
        let what = vec![(self.what, f.what.to_string())];
        let mut with_status = what.clone();
        with_status.push(("status", f.status.to_string()));
        self.requests.get_or_create(&with_status).inc();
        if let Some(code) = f.error {
            let mut with_code = what.clone();
            with_code.push(("code", code.to_string()));
            self.errors.get_or_create(&with_code).inc();
        }
        self.duration
            .get_or_create(&what)
            .observe(f.elapsed.as_secs_f64());
        self.received.get_or_create(&what).inc_by(f.received);
        self.sent.get_or_create(&what).inc_by(f.sent);
    }
}

/// Holds one request in the in-flight gauge.
pub struct InFlight(Arc<FrontMetrics>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.dec();
    }
}

/// Every metric of one gateway.
#[derive(Debug)]
pub struct GatewayMetrics {
    registry: Registry,
    pub s3: Arc<FrontMetrics>,
    pub webdav: Arc<FrontMetrics>,
}

impl GatewayMetrics {
    pub fn new(store: ObjectStore) -> Arc<Self> {
        let s3 = Arc::new(FrontMetrics::new("operation"));
        let webdav = Arc::new(FrontMetrics::new("method"));
        let mut registry = Registry::with_prefix("gridstore_gateway");
        s3.register(registry.sub_registry_with_prefix("s3"), "S3");
        webdav.register(registry.sub_registry_with_prefix("webdav"), "WebDAV");
        registry.register_collector(Box::new(GridView(store)));
        Arc::new(Self {
            registry,
            s3,
            webdav,
        })
    }

    /// The Prometheus text exposition format (0.0.4), served with
    /// [`CONTENT_TYPE`].
    pub fn render(&self) -> String {
        render(&self.registry)
    }
}

fn render(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, registry);
    grid::metrics_text::classic_text(&out)
}

/// The storage audit counters alone, as the job listener's `/metrics`
/// has served them since before the admin listener existed.
pub fn audit_text(store: &ObjectStore) -> String {
    let mut registry = Registry::with_prefix("gridstore_gateway");
    registry.register_collector(Box::new(Audits(store.clone())));
    render(&registry)
}

/// Read at each scrape from the store: the audit counters live in the
/// store (the auditor adds to them), the map changes as nodes come and go.
struct GridView(ObjectStore);

impl std::fmt::Debug for GridView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GridView")
    }
}

impl Collector for GridView {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        encode_audits(&self.0, &mut encoder)?;
        let grid = self.0.grid();
        let map = grid.map();
        let mut states = std::collections::BTreeMap::<String, i64>::new();
        // Every state named, at 0 when no node is in it, so a query for
        // `state="down"` has a series to compare against.
        for s in ["up", "down", "draining", "lost", "untrusted"] {
            states.insert(s.to_string(), 0);
        }
        for n in &map.nodes {
            *states
                .entry(cluster::node_status::state_name(n.state))
                .or_default() += 1;
        }
        let mut family = encoder.encode_descriptor(
            "nodes",
            "Nodes of the cluster map this gateway follows, by state",
            None,
            MetricType::Gauge,
        )?;
        for (state, count) in &states {
            let labels = [("state", state.as_str())];
            ConstGauge::new(*count).encode(family.encode_family(&labels)?)?;
        }
        let epoch = encoder.encode_descriptor(
            "cluster_map_epoch",
            "Epoch of the cluster map this gateway follows",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(i64::try_from(map.epoch).unwrap_or(i64::MAX)).encode(epoch)
    }
}

struct Audits(ObjectStore);

impl std::fmt::Debug for Audits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Audits")
    }
}

impl Collector for Audits {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        encode_audits(&self.0, &mut encoder)
    }
}

fn encode_audits(
    store: &ObjectStore,
    encoder: &mut DescriptorEncoder,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(
        "audits",
        "Storage audit challenges by node and result",
        None,
        MetricType::Counter,
    )?;
    for (node, (passed, failed)) in store.audit_stats().snapshot() {
        for (result, n) in [("passed", passed), ("failed", failed)] {
            let labels = [("node", node.as_str()), ("result", result)];
            ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
        }
    }
    Ok(())
}
