//! How many shard bytes repair may move per second: through this node, and
//! over the link its site shares with the rest of the grid.
//!
//! A farm's uplink is one home or school connection shared by every node
//! on it. When a site comes back from an outage, or many nodes rebuild at
//! once, per-node limits alone let a site's nodes together fill that link
//! and starve the rest of the grid of it. So each node also takes its
//! share (the site's budget divided among the site's serving nodes) for
//! every byte that crosses the site boundary: shards fetched from another
//! site for a rebuild, and shards handed back to a home on another site.
//! The shares need no coordination between nodes: together they never
//! pass the site's budget, at the price of leaving unused any share a
//! quiet node does not need.

use metadata::model::{ClusterMap, NodeState};
use std::time::Duration;
use tokio::time::Instant;

/// Budget per second for one node's repair traffic; 0: no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RepairRates {
    /// Shard bytes per second this node fetches for rebuilds.
    pub node_bytes_per_sec: u64,
    /// Shard bytes per second this node's whole site may move across its
    /// link (this node takes an equal share with its site's serving nodes).
    pub site_bytes_per_sec: u64,
}

/// A token bucket with no burst: each take books the time its bytes need
/// at the rate and waits until the bytes booked before it are through.
#[derive(Debug)]
struct Throttle {
    per_sec: u64,
    next: tokio::sync::Mutex<Instant>,
}

impl Throttle {
    fn new(per_sec: u64) -> Self {
        Self {
            per_sec,
            next: tokio::sync::Mutex::new(Instant::now()),
        }
    }

    async fn take(&self, bytes: u64) {
        if self.per_sec == 0 {
            return;
        }
        let wait = {
            let mut next = self.next.lock().await;
            let now = Instant::now();
            let start = (*next).max(now);
            *next = start + Duration::from_secs_f64(bytes as f64 / self.per_sec as f64);
            start.saturating_duration_since(now)
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

/// One node's repair budget under one cluster map.
#[derive(Debug)]
pub struct RepairBudget {
    node: Throttle,
    site: Throttle,
    my_site: String,
    /// Site of every node in the map, to tell which peers are across the link.
    sites: Vec<(String, String)>,
}

impl RepairBudget {
    /// The budget of node `me` under `map`.
    pub fn new(map: &ClusterMap, me: &str, rates: RepairRates) -> Self {
        let site_of = |id: &str| {
            map.nodes
                .iter()
                .find(|n| n.id == id)
                .map(|n| n.site.clone())
                .unwrap_or_default()
        };
        let my_site = site_of(me);
        let serving = |s: i32| s == NodeState::Up as i32 || s == NodeState::Draining as i32;
        let site_nodes = map
            .nodes
            .iter()
            .filter(|n| n.site == my_site && (n.id == me || serving(n.state)))
            .count()
            .max(1) as u64;
        let share = match rates.site_bytes_per_sec {
            0 => 0,
            // Never 0 (which would mean "no limit") however many nodes share it.
            s => (s / site_nodes).max(1),
        };
        Self {
            node: Throttle::new(rates.node_bytes_per_sec),
            site: Throttle::new(share),
            my_site,
            sites: map
                .nodes
                .iter()
                .map(|n| (n.id.clone(), n.site.clone()))
                .collect(),
        }
    }

    /// This node's share of its site's budget, bytes per second; 0: no limit.
    pub fn site_share(&self) -> u64 {
        self.site.per_sec
    }

    /// Whether `peer` sits on another site than this node (a peer not in
    /// the map counts as remote: its traffic is not known to be local).
    pub fn across_link(&self, peer: &str) -> bool {
        self.sites
            .iter()
            .find(|(id, _)| id == peer)
            .is_none_or(|(_, site)| *site != self.my_site)
    }

    /// Wait until `bytes` fetched from `peer` for a rebuild fit the budget.
    pub async fn fetch(&self, peer: &str, bytes: u64) {
        self.node.take(bytes).await;
        if self.across_link(peer) {
            self.site.take(bytes).await;
        }
    }

    /// Wait until `bytes` sent to `peer` (a shard handed back to its
    /// home) fit the budget. Only the site link is charged: the node
    /// budget bounds what rebuilds pull from peers.
    pub async fn send(&self, peer: &str, bytes: u64) {
        if self.across_link(peer) {
            self.site.take(bytes).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metadata::model::Node;

    fn map() -> ClusterMap {
        let node = |id: &str, site: &str, state: NodeState| Node {
            id: id.into(),
            site: site.into(),
            state: state as i32,
            ..Node::default()
        };
        ClusterMap {
            nodes: vec![
                node("a1", "a", NodeState::Up),
                node("a2", "a", NodeState::Up),
                node("a3", "a", NodeState::Lost),
                node("b1", "b", NodeState::Up),
            ],
            ..ClusterMap::default()
        }
    }

    #[test]
    fn the_site_budget_is_shared_among_the_sites_serving_nodes() {
        let rates = RepairRates {
            node_bytes_per_sec: 0,
            site_bytes_per_sec: 1000,
        };
        // a3 is lost: a1 and a2 share site a's link.
        assert_eq!(RepairBudget::new(&map(), "a1", rates).site_share(), 500);
        assert_eq!(RepairBudget::new(&map(), "b1", rates).site_share(), 1000);
        let none = RepairRates::default();
        assert_eq!(RepairBudget::new(&map(), "a1", none).site_share(), 0);
    }

    #[test]
    fn only_peers_on_other_sites_are_across_the_link() {
        let b = RepairBudget::new(&map(), "a1", RepairRates::default());
        assert!(!b.across_link("a2"));
        assert!(!b.across_link("a3"));
        assert!(b.across_link("b1"));
        assert!(b.across_link("not-in-the-map"));
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn cross_site_bytes_wait_for_the_site_share_and_local_ones_do_not() {
        let rates = RepairRates {
            node_bytes_per_sec: 0,
            site_bytes_per_sec: 2000,
        };
        // Share: 1000 bytes per second (a1 and a2 serve on site a).
        let b = RepairBudget::new(&map(), "a1", rates);
        let t0 = Instant::now();
        for _ in 0..10 {
            b.fetch("a2", 1000).await;
        }
        assert_eq!(
            Instant::now() - t0,
            Duration::ZERO,
            "same-site fetches are free"
        );
        for _ in 0..3 {
            b.fetch("b1", 1000).await;
        }
        b.send("b1", 1000).await;
        // The clock is paused: it moves only by the throttle's sleeps. The
        // first booking starts at once, each later one a second after.
        assert_eq!(Instant::now() - t0, Duration::from_secs(3));
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn the_node_budget_charges_every_fetch() {
        let rates = RepairRates {
            node_bytes_per_sec: 500,
            site_bytes_per_sec: 0,
        };
        let b = RepairBudget::new(&map(), "a1", rates);
        let t0 = Instant::now();
        b.fetch("a2", 500).await;
        b.fetch("a2", 500).await;
        b.fetch("a2", 500).await;
        b.send("b1", 10_000).await;
        assert_eq!(Instant::now() - t0, Duration::from_secs(2));
    }
}
