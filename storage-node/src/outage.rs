//! How long a peer may be out of touch before it is marked down (reads
//! and writes go around it) and then lost (its shards are rebuilt
//! elsewhere): the settings, and the rule both the proposer of a liveness
//! change and every voter judge by.

use metadata::model::{ClusterMap, NodeState};
use std::time::Duration;

/// Heartbeat settings.
#[derive(Debug, Clone, Copy)]
pub struct LivenessConfig {
    pub heartbeat: Duration,
    /// Unreachable this long: marked down (reads and writes route around
    /// it; its shards wait).
    pub down_after: Duration,
    /// Unreachable this long, when only one site has nodes down or lost:
    /// marked lost (its shards are rebuilt elsewhere). See [`lost_delay`].
    pub lost_after: Duration,
}

impl Default for LivenessConfig {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_secs(5),
            down_after: Duration::from_secs(25),
            lost_after: Duration::from_secs(1200),
        }
    }
}

/// How long `candidate` must be unreachable to be marked lost under
/// `map`: `lost_after`, halved for every other site that has a node down
/// or lost (a site counts once however many of its nodes are out, so a
/// farm's router restart is one event), never below `down_after`. One
/// farm rebooting costs no rebuild; several out at once leave chunks
/// closer to their last spare, so their shards are rebuilt sooner. (Chunks
/// already at their last spare do not wait at all: the repair pass
/// rebuilds them while their node is only down.)
pub fn lost_delay(map: &ClusterMap, candidate: &str, cfg: &LivenessConfig) -> Duration {
    let out = |n: &&metadata::model::Node| {
        n.id == candidate || n.state == NodeState::Down as i32 || n.state == NodeState::Lost as i32
    };
    let mut sites: Vec<&str> = map
        .nodes
        .iter()
        .filter(out)
        .map(|n| n.site.as_str())
        .collect();
    sites.sort_unstable();
    sites.dedup();
    let halvings = sites.len().saturating_sub(1).min(16) as u32;
    (cfg.lost_after / 2u32.pow(halvings)).max(cfg.down_after)
}

#[cfg(test)]
mod tests {
    use super::*;
    use metadata::model::Node;

    fn map(states: &[(&str, &str, NodeState)]) -> ClusterMap {
        ClusterMap {
            epoch: 1,
            nodes: states
                .iter()
                .map(|(id, site, state)| Node {
                    id: id.to_string(),
                    site: site.to_string(),
                    state: *state as i32,
                    ..Node::default()
                })
                .collect(),
            ..ClusterMap::default()
        }
    }

    #[test]
    fn the_lost_delay_halves_per_other_site_out_and_stops_at_down_after() {
        use NodeState::*;
        let cfg = LivenessConfig {
            heartbeat: Duration::from_secs(5),
            down_after: Duration::from_secs(25),
            lost_after: Duration::from_secs(1200),
        };
        let s = Duration::from_secs;
        // Alone, or beside a node of its own site: the full delay.
        let m = map(&[("a1", "a", Up), ("a2", "a", Down), ("b1", "b", Up)]);
        assert_eq!(lost_delay(&m, "a1", &cfg), s(1200));
        // One other site out (down or lost): half; two: a quarter.
        let m = map(&[("a1", "a", Down), ("b1", "b", Lost), ("c1", "c", Up)]);
        assert_eq!(lost_delay(&m, "a1", &cfg), s(600));
        let m = map(&[("a1", "a", Down), ("b1", "b", Lost), ("c1", "c", Down)]);
        assert_eq!(lost_delay(&m, "a1", &cfg), s(300));
        // Untrusted and removed nodes are not outages.
        let m = map(&[
            ("a1", "a", Down),
            ("b1", "b", Untrusted),
            ("c1", "c", Removed),
        ]);
        assert_eq!(lost_delay(&m, "a1", &cfg), s(1200));
        // Never below the down timeout.
        let many: Vec<(String, String)> = (0..12)
            .map(|i| (format!("n{i}"), format!("s{i}")))
            .collect();
        let states: Vec<(&str, &str, NodeState)> = many
            .iter()
            .map(|(n, site)| (n.as_str(), site.as_str(), Down))
            .collect();
        assert_eq!(lost_delay(&map(&states), "n0", &cfg), s(25));
    }
}
