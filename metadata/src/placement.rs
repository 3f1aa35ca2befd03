//! Placement: which nodes hold a chunk's shards, and which hold a bucket's
//! metadata replicas.
//!
//! Rendezvous (highest random weight) hashing, one draw per shard index:
//! shard `i` goes to a site chosen by rendezvous among the least-used sites,
//! then to the node of that site with the highest capacity-weighted score
//! for `(chunk, i)` that is placeable and not already chosen. Every gateway and node computes the
//! same answer from the same map with no coordination, and a map change
//! moves only the shards whose winner changed (about 1/N of them when one
//! of N nodes comes or goes).
//!
//! Site spread: each draw goes to a site holding the fewest of the item's
//! shards so far, so `n` shards over `s` sites use `min(n, s)` sites and no
//! site holds more than `ceil(n / s)` (which is at most `m` whenever
//! `s >= ceil(n / m)`), unless a site runs out of nodes and the others must
//! take its share.

use crate::model::{ClusterMap, Node};
use std::collections::HashMap;

/// Why no placement could be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    #[error("need {needed} placeable nodes, the map has {available}")]
    NotEnoughNodes { needed: usize, available: usize },
}

const CHUNK_DOMAIN: &[u8] = b"gridstore placement chunk v1";
const BUCKET_DOMAIN: &[u8] = b"gridstore placement bucket v1";

/// A uniform value in (0, 1) for draw `index` of `item` against `name`.
fn uniform(domain: &[u8], item: &[u8], index: u32, name: &[u8]) -> f64 {
    let mut h = blake3::Hasher::new();
    h.update(domain);
    h.update(&(item.len() as u32).to_le_bytes());
    h.update(item);
    h.update(&index.to_le_bytes());
    h.update(name);
    let b = h.finalize();
    let mut x = [0u8; 8];
    x.copy_from_slice(&b.as_bytes()[..8]);
    // 53 random bits, strictly inside (0, 1).
    ((u64::from_le_bytes(x) >> 11) as f64 + 0.5) / (1u64 << 53) as f64
}

/// Weighted-rendezvous score `-w / ln(u)`: a node with twice the capacity
/// wins twice as often.
fn node_score(domain: &[u8], item: &[u8], index: u32, node: &Node) -> f64 {
    let u = uniform(domain, item, index, node.id.as_bytes());
    // Capacity in GiB as the weight, so the float stays well-conditioned.
    let w = (node.capacity_bytes as f64 / (1u64 << 30) as f64).max(1e-6);
    -w / u.ln()
}

/// Pick `n` distinct nodes, one draw per index. Each draw first picks a
/// site among those holding the fewest of this item's shards so far (so
/// the shards spread over as many sites as exist, evenly), by rendezvous
/// over site names; then the node within that site by weighted rendezvous.
/// A node joining or leaving a site only changes draws inside that site.
fn pick<'a>(
    map: &'a ClusterMap,
    domain: &[u8],
    item: &[u8],
    n: usize,
) -> Result<Vec<&'a Node>, PlacementError> {
    let eligible: Vec<&Node> = map.nodes.iter().filter(|n| n.placeable()).collect();
    if eligible.len() < n {
        return Err(PlacementError::NotEnoughNodes {
            needed: n,
            available: eligible.len(),
        });
    }
    let mut sites: Vec<&str> = eligible.iter().map(|e| e.site.as_str()).collect();
    sites.sort_unstable();
    sites.dedup();
    let mut used: HashMap<&str, usize> = HashMap::new();
    let mut free: HashMap<&str, usize> = HashMap::new();
    for e in &eligible {
        *free.entry(e.site.as_str()).or_default() += 1;
    }
    let mut taken = vec![false; eligible.len()];
    let mut chosen: Vec<&Node> = Vec::with_capacity(n);
    for index in 0..n as u32 {
        let open = sites.iter().filter(|s| free[**s] > 0);
        let fewest = open
            .clone()
            .map(|s| used.get(s).copied().unwrap_or(0))
            .min();
        let site = open
            .filter(|s| Some(used.get(*s).copied().unwrap_or(0)) == fewest)
            .max_by(|a, b| {
                uniform(domain, item, index, a.as_bytes())
                    .total_cmp(&uniform(domain, item, index, b.as_bytes()))
                    .then_with(|| b.cmp(a))
            })
            .copied()
            .expect("eligible.len() >= n leaves a site with a free node");
        let (i, _) = eligible
            .iter()
            .enumerate()
            .filter(|(i, e)| !taken[*i] && e.site == site)
            .map(|(i, e)| (i, node_score(domain, item, index, e)))
            .max_by(|a, b| {
                a.1.total_cmp(&b.1)
                    .then_with(|| eligible[b.0].id.cmp(&eligible[a.0].id))
            })
            .expect("the site has a free node");
        taken[i] = true;
        *used.entry(site).or_default() += 1;
        *free.entry(site).or_default() -= 1;
        chosen.push(eligible[i]);
    }
    Ok(chosen)
}

/// Nodes for the shards of a chunk: element `i` holds shard `i`.
pub fn chunk_nodes<'a>(
    map: &'a ClusterMap,
    chunk_id: &[u8],
    shards: usize,
) -> Result<Vec<&'a Node>, PlacementError> {
    pick(map, CHUNK_DOMAIN, chunk_id, shards)
}

/// Nodes holding the `replicas` copies of a bucket's metadata (object
/// index, manifests), on distinct sites whenever the map has enough.
pub fn bucket_replicas<'a>(
    map: &'a ClusterMap,
    bucket_id: &[u8],
    replicas: usize,
) -> Result<Vec<&'a Node>, PlacementError> {
    pick(map, BUCKET_DOMAIN, bucket_id, replicas)
}

/// The most shards one site may hold for the spread rule to be met, given
/// how many sites have placeable nodes: `m` when there are enough sites,
/// otherwise the best achievable spread.
pub fn site_cap(map: &ClusterMap, shards: usize) -> usize {
    let mut sites: Vec<&str> = map
        .nodes
        .iter()
        .filter(|n| n.placeable())
        .map(|n| n.site.as_str())
        .collect();
    sites.sort_unstable();
    sites.dedup();
    shards.div_ceil(sites.len().max(1))
}
