//! Cluster maps for the placement tests and bench.

use metadata::model::{ClusterMap, Node, NodeState};

/// A map of up nodes of equal capacity, `nodes_per_site[s]` of them on
/// site `s`.
pub fn map(nodes_per_site: &[usize]) -> ClusterMap {
    let mut nodes = Vec::new();
    for (s, &n) in nodes_per_site.iter().enumerate() {
        for i in 0..n {
            nodes.push(Node {
                id: format!("node-{s}-{i}"),
                addr: format!("127.0.0.1:{}", 7000 + nodes.len()),
                site: format!("site-{s}"),
                capacity_bytes: 1 << 40,
                state: NodeState::Up as i32,
                key: vec![],
                untrusted_reason: String::new(),
            });
        }
    }
    ClusterMap {
        epoch: 1,
        nodes,
        clients: vec![],
        ..ClusterMap::default()
    }
}
