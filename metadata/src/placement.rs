//! Placement: which nodes hold a chunk's shards, and which hold a bucket's
//! metadata replicas.
//!
//! Rendezvous (highest random weight) hashing, one draw per shard index:
//! shard `i` goes to a site chosen by rendezvous among the least-used sites,
//! then to the node of that site with the highest capacity-weighted score
//! for `(chunk, i)` that is not already chosen. Every gateway and node
//! computes the same answer from the same map with no coordination, and a
//! map change moves only the shards whose winner changed (about 1/N of
//! them when one of N nodes is added).
//!
//! Down, draining and removed nodes still take part in the draws; a draw
//! they win is then made again among the placeable nodes. So a node going
//! down (or draining) moves exactly the shards it held, whatever the sites
//! look like, coming back up moves them home again, and removing a drained
//! node moves nothing.
//!
//! Site spread: each draw goes to a site holding the fewest of the item's
//! shards so far, so `n` shards over `s` sites use `min(n, s)` sites and no
//! site holds more than `ceil(n / s)` (which is at most `m` whenever
//! `s >= ceil(n / m)`), unless a site runs out of nodes and the others must
//! take its share.

use crate::model::{ClusterMap, Node};

/// Why no placement could be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlacementError {
    #[error("need {needed} placeable nodes, the map has {available}")]
    NotEnoughNodes { needed: usize, available: usize },
}

const CHUNK_DOMAIN: &[u8] = b"gridstore placement chunk v1";
const BUCKET_DOMAIN: &[u8] = b"gridstore placement bucket v1";

/// Draw `index` of `item`: the hash state every name scored in the draw
/// starts from. Hashed once per draw rather than once per name, which
/// halves the hashing (a chunk's prefix is a whole BLAKE3 block): a node
/// reconciling after a map change places every chunk it holds twice.
#[derive(Clone)]
struct Draw(blake3::Hasher);

impl Draw {
    fn new(domain: &[u8], item: &[u8], index: usize) -> Self {
        let mut h = blake3::Hasher::new();
        h.update(domain);
        h.update(&(item.len() as u32).to_le_bytes());
        h.update(item);
        h.update(&(index as u32).to_le_bytes());
        Self(h)
    }

    /// A uniform value in (0, 1) for this draw against `name`.
    fn uniform(&self, name: &[u8]) -> f64 {
        let mut h = self.0.clone();
        h.update(name);
        let b = h.finalize();
        let mut x = [0u8; 8];
        x.copy_from_slice(&b.as_bytes()[..8]);
        // 53 random bits, strictly inside (0, 1).
        ((u64::from_le_bytes(x) >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// Weighted-rendezvous score `-w / ln(u)`: a node with twice the
    /// capacity wins twice as often.
    fn node_score(&self, node: &Node) -> f64 {
        let u = self.uniform(node.id.as_bytes());
        // Capacity in GiB as the weight, so the float stays well-conditioned.
        let w = (node.capacity_bytes as f64 / (1u64 << 30) as f64).max(1e-6);
        -w / u.ln()
    }
}

/// Pick `n` distinct placeable nodes, one draw per index.
///
/// The draws run over every node of the map, placeable or not; then each
/// pick that is not placeable (down, draining, removed) is replaced by a
/// draw among the placeable nodes left. A node going down or draining so
/// moves only its own shards, and removing a drained node moves nothing.
/// Drawing among the placeable nodes alone would change the site balance
/// every later draw sees: in a site of two nodes, one dying would move
/// about as many other shards as it held.
fn pick<'a>(
    map: &'a ClusterMap,
    domain: &[u8],
    item: &[u8],
    n: usize,
) -> Result<Vec<&'a Node>, PlacementError> {
    let draws = draws(domain, item, n);
    let drawn = drawn(map, &draws);
    complete(map, &draws, &drawn, n)
}

fn draws(domain: &[u8], item: &[u8], n: usize) -> Vec<Draw> {
    (0..n).map(|i| Draw::new(domain, item, i)).collect()
}

/// The winners of `draws` over every node of the map, placeable or not,
/// as positions in `map.nodes`: the same for any map listing the same
/// nodes (ids, sites, capacities) in the same order, whatever their states.
fn drawn(map: &ClusterMap, draws: &[Draw]) -> Vec<usize> {
    let listed: Vec<&Node> = map.nodes.iter().collect();
    let mut drawn: Vec<&Node> = Vec::with_capacity(draws.len());
    for d in draws {
        match draw(&listed, d, &drawn) {
            Some(node) => drawn.push(node),
            None => break,
        }
    }
    drawn
        .into_iter()
        .filter_map(|won| map.nodes.iter().position(|n| std::ptr::eq(n, won)))
        .collect()
}

/// The pick under `map` from the winners `drawn` of `draws` over its
/// nodes: winners that are not placeable replaced (see [`pick`]).
fn complete<'a>(
    map: &'a ClusterMap,
    draws: &[Draw],
    drawn: &[usize],
    n: usize,
) -> Result<Vec<&'a Node>, PlacementError> {
    let eligible: Vec<&Node> = map.nodes.iter().filter(|n| n.placeable()).collect();
    if eligible.len() < n {
        return Err(PlacementError::NotEnoughNodes {
            needed: n,
            available: eligible.len(),
        });
    }
    let mut chosen: Vec<Option<&Node>> = drawn
        .iter()
        .map(|&i| Some(&map.nodes[i]).filter(|n| n.placeable()))
        .collect();
    chosen.resize(n, None);
    // A replacement may go to any node in a site under the spread cap,
    // not only to the emptiest site: after a death in a site of two, the
    // partner would otherwise inherit every shard its site must keep and
    // rebuild them alone while the other nodes idle.
    let cap = site_cap(map, n);
    for index in 0..n {
        if chosen[index].is_none() {
            let kept: Vec<&Node> = chosen.iter().flatten().copied().collect();
            let d = &draws[index];
            chosen[index] =
                draw_under(&eligible, d, &kept, cap).or_else(|| draw(&eligible, d, &kept));
        }
    }
    // `eligible` has at least `n` nodes, so every index found one.
    Ok(chosen.into_iter().flatten().collect())
}

/// Whether every draw comes out the same under `a` and `b`: the same
/// nodes, in the same order, with the same sites and capacities (their
/// states may differ, as before and after a node goes down).
fn same_draws(a: &ClusterMap, b: &ClusterMap) -> bool {
    a.nodes.len() == b.nodes.len()
        && a.nodes
            .iter()
            .zip(&b.nodes)
            .all(|(x, y)| x.id == y.id && x.site == y.site && x.capacity_bytes == y.capacity_bytes)
}

/// [`chunk_nodes`] under two maps at once, `shards_a` under `a` and
/// `shards_b` under `b`. When the maps differ only in node states (a node
/// went down, came back, is draining), the draws over all nodes are made
/// once: a node reconciling after a map change asks both for every chunk
/// it holds, and the draws are nearly all of placement's cost.
#[allow(clippy::type_complexity)]
pub fn chunk_nodes_under_both<'a, 'b>(
    a: &'a ClusterMap,
    shards_a: usize,
    b: &'b ClusterMap,
    shards_b: usize,
    chunk_id: &[u8],
) -> (
    Result<Vec<&'a Node>, PlacementError>,
    Result<Vec<&'b Node>, PlacementError>,
) {
    if shards_a != shards_b || !same_draws(a, b) {
        return (
            chunk_nodes(a, chunk_id, shards_a),
            chunk_nodes(b, chunk_id, shards_b),
        );
    }
    let draws = draws(CHUNK_DOMAIN, chunk_id, shards_a);
    let drawn = drawn(a, &draws);
    (
        complete(a, &draws, &drawn, shards_a),
        complete(b, &draws, &drawn, shards_b),
    )
}

/// Draw `d` among `candidates` not in `taken`, in a site holding
/// fewer than `cap` of `taken`, by weighted rendezvous over those nodes
/// directly. Not site first: a dead node's site partner is then the only
/// node of a site that is nearly always under the cap, and it inherited
/// twice the others' share of the rebuilds, the last to finish. `None`
/// when no such site has a free candidate.
fn draw_under<'a>(
    candidates: &[&'a Node],
    d: &Draw,
    taken: &[&'a Node],
    cap: usize,
) -> Option<&'a Node> {
    let held = |site: &str| taken.iter().filter(|t| t.site == site).count();
    let open = candidates
        .iter()
        .copied()
        .filter(|n| !taken.iter().any(|t| t.id == n.id) && held(&n.site) < cap);
    best_node(open, d)
}

/// Draw `d` among `candidates` not in `taken`: first a site among
/// those with a free candidate that hold the fewest of `taken` (so an
/// item's shards spread over as many sites as exist, evenly), by
/// rendezvous over site names; then the node of that site by weighted
/// rendezvous. A node joining or leaving a site only changes draws inside
/// that site. `None` when every candidate is taken.
fn draw<'a>(candidates: &[&'a Node], d: &Draw, taken: &[&'a Node]) -> Option<&'a Node> {
    let held = |site: &str| taken.iter().filter(|t| t.site == site).count();
    let free: Vec<&Node> = candidates
        .iter()
        .copied()
        .filter(|n| !taken.iter().any(|t| t.id == n.id))
        .collect();
    let fewest = free.iter().map(|n| held(&n.site)).min()?;
    // Each site scored once: scoring inside the comparison hashed two
    // names per node, and placement runs for every chunk a node reconciles
    // and every chunk a gateway reads or writes.
    let mut sites: Vec<&str> = free
        .iter()
        .map(|n| n.site.as_str())
        .filter(|site| held(site) == fewest)
        .collect();
    sites.sort_unstable();
    sites.dedup();
    let (site, _) = sites
        .into_iter()
        .map(|s| (s, d.uniform(s.as_bytes())))
        .max_by(|a, b| a.1.total_cmp(&b.1).then_with(|| b.0.cmp(a.0)))?;
    best_node(free.into_iter().filter(|n| n.site == site), d)
}

/// The node of `nodes` with the highest weighted score in draw `d` (ties
/// to the smaller id).
fn best_node<'a>(nodes: impl Iterator<Item = &'a Node>, d: &Draw) -> Option<&'a Node> {
    nodes
        .map(|n| (n, d.node_score(n)))
        .max_by(|a, b| a.1.total_cmp(&b.1).then_with(|| b.0.id.cmp(&a.0.id)))
        .map(|(n, _)| n)
}

/// Every placeable node in chunk `chunk_id`'s order: its `homes` shard
/// homes first (as [`chunk_nodes`] gives them), then the others in the
/// order writes hand shards off to when a home is unavailable.
pub fn chunk_order<'a>(
    map: &'a ClusterMap,
    chunk_id: &[u8],
    homes: usize,
) -> Result<Vec<&'a Node>, PlacementError> {
    let eligible: Vec<&Node> = map.nodes.iter().filter(|n| n.placeable()).collect();
    let mut order = pick(map, CHUNK_DOMAIN, chunk_id, homes.min(eligible.len()))?;
    while let Some(next) = draw(
        &eligible,
        &Draw::new(CHUNK_DOMAIN, chunk_id, order.len()),
        &order,
    ) {
        order.push(next);
    }
    Ok(order)
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
