//! The admin listener's read-only status page: a static page (HTML, CSS
//! and script compiled into the binary, nothing fetched from elsewhere)
//! that draws `/status.json` every few seconds. The JSON says what the
//! gateway sees: the nodes of its map by site, their liveness, space,
//! repair and audit figures (from the same status calls as `gridstore
//! admin status`), and the last warnings and errors it logged. No bucket
//! or object names: the listener is unauthenticated.

use cluster::node_status::{self, NodeAnswer};
use cluster::ObjectStore;
use serde_json::{json, Value};
use std::time::Duration;

pub const INDEX_HTML: &str = include_str!("index.html");
pub const STYLE_CSS: &str = include_str!("status.css");
pub const SCRIPT_JS: &str = include_str!("status.js");

/// A node that has not answered by then is shown as not answering: the
/// page refreshes every few seconds and must not wait on one hung node.
const NODE_TIMEOUT: Duration = Duration::from_secs(3);

/// How long the health check's quorum read may take.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether this gateway can read its metadata: one single-record quorum
/// read (an access key no one has), the cheapest read that needs a
/// quorum of the metadata replicas to answer. Err says why not, in one
/// line.
pub async fn health(store: &ObjectStore) -> Result<(), String> {
    match tokio::time::timeout(HEALTH_TIMEOUT, store.user_secret("GSHEALTHCHECK")).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(one_line(&format!("metadata quorum unreadable: {e}"))),
        Err(_) => Err(format!(
            "metadata quorum unreadable: no answer within {} s",
            HEALTH_TIMEOUT.as_secs()
        )),
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// What `/status.json` answers.
pub async fn status_json(store: &ObjectStore) -> Value {
    let (answers, health) = tokio::join!(
        node_status::gather(store, Some(NODE_TIMEOUT)),
        health(store)
    );
    let grid = store.grid();
    let map = grid.map();
    let audits = store.audit_stats().snapshot();
    let unheard = unheard_by_peers(&answers);
    let mut sites: Vec<(String, Vec<Value>)> = Vec::new();
    for (node, answer) in &answers {
        let st = answer.as_ref().ok();
        let repair = st.and_then(|s| s.repair.as_ref()).map(|r| {
            let now = grid::clock::now_ms();
            json!({
                "missing": r.missing,
                "waiting": r.waiting,
                "at_risk": r.at_risk,
                "rebuilding": r.rebuilding,
                "rebuilt_shards": r.rebuilt_shards,
                "failed_rebuilds": r.failed_rebuilds,
                "handed_back": r.handed_back,
                "scrubbed_shards": r.scrubbed_shards,
                "corrupt_found": r.corrupt_found,
                "damaged_chunks": r.damaged_chunks,
                "last_reconcile_ms": (r.last_reconcile_ms > 0).then_some(r.last_reconcile_ms),
                "last_scrub_ms": (r.last_scrub_ms > 0).then_some(r.last_scrub_ms),
                "rebuilds_paused_until_ms":
                    (r.rebuilds_paused_until_ms > now).then_some(r.rebuilds_paused_until_ms),
            })
        });
        let (passed, failed) = audits.get(&node.id).copied().unwrap_or_default();
        let row = json!({
            "id": node.id,
            "site": node.site,
            "addr": node.addr,
            "state": node_status::state_name(node.state),
            "untrusted_reason": (!node.untrusted_reason.is_empty()).then_some(&node.untrusted_reason),
            "answered": st.is_some(),
            "error": answer.as_ref().err(),
            "version": st.map(|s| &s.version),
            "map_epoch": st.map(|s| s.map_epoch),
            "shards": st.map(|s| s.shard_count),
            "used_bytes": st.map(|s| s.used_bytes),
            "capacity_bytes": st.map(|s| s.capacity_bytes),
            "available_bytes": st.map(|s| s.available_bytes),
            "unheard_ms": unheard.get(node.id.as_str()),
            "repair": repair,
            "audits": { "passed": passed, "failed": failed },
        });
        match sites.iter_mut().find(|(s, _)| *s == node.site) {
            Some((_, nodes)) => nodes.push(row),
            None => sites.push((node.site.clone(), vec![row])),
        }
    }
    json!({
        "time_ms": grid::clock::now_ms(),
        "gateway": {
            "version": env!("CARGO_PKG_VERSION"),
            "map_epoch": map.epoch,
            "healthy": health.is_ok(),
            "health": health.err().unwrap_or_else(|| "ok".into()),
        },
        "sites": sites
            .into_iter()
            .map(|(name, nodes)| json!({ "name": name, "nodes": nodes }))
            .collect::<Vec<_>>(),
        "recent_errors": crate::recent_errors::recent(),
    })
}

/// The longest any answering node has gone without hearing from each
/// peer, by its heartbeats.
fn unheard_by_peers(answers: &[NodeAnswer]) -> std::collections::HashMap<&str, u64> {
    let mut out = std::collections::HashMap::new();
    for p in answers
        .iter()
        .filter_map(|(_, a)| a.as_ref().ok())
        .flat_map(|s| &s.unheard)
    {
        let e = out.entry(p.node_id.as_str()).or_insert(0);
        *e = (*e).max(p.unheard_ms);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The page is served from the binary to browsers that may have no
    /// route out: it must not load anything from elsewhere.
    #[test]
    fn the_page_names_no_other_host() {
        for text in [INDEX_HTML, STYLE_CSS, SCRIPT_JS] {
            assert!(!text.contains("http://"), "{text}");
            assert!(!text.contains("https://"), "{text}");
            assert!(!text.contains("//cdn"), "{text}");
        }
        assert!(INDEX_HTML.contains("status.js"));
        assert!(INDEX_HTML.contains("status.css"));
    }
}
