//! The erasure shape a bucket gets when it does not choose one.

use metadata::model::{ClusterMap, ErasureSpec};
use std::collections::BTreeSet;

/// The default (k, m) for a cluster: enough parity to lose one whole site
/// where there are at least three sites (so at most m shards per site with
/// k + m spread evenly), and at least one node otherwise, with k as large
/// as the nodes allow (less overhead) but at most 8 (a read touches k
/// nodes).
///
/// | placeable nodes | sites | default |
/// |---|---|---|
/// | 1 | 1 | 1+0 |
/// | 2 | any | 1+1 |
/// | 3 | any | 2+1 |
/// | 4 | 1-2 | 3+1 |
/// | 6 | 3 | 4+2 |
/// | 12 | 4 | 8+3 (9+3, k capped at 8) |
pub fn default_erasure(map: &ClusterMap) -> ErasureSpec {
    let placeable: Vec<_> = map.nodes.iter().filter(|n| n.placeable()).collect();
    let nodes = placeable.len() as u32;
    let sites = placeable
        .iter()
        .map(|n| n.site.as_str())
        .collect::<BTreeSet<_>>()
        .len() as u32;
    match nodes {
        0 | 1 => ErasureSpec::new(1, 0),
        2 => ErasureSpec::new(1, 1),
        _ => {
            // Shards per site when spread evenly; losing a site loses that
            // many, so m must cover it when there are >= 3 sites.
            let width = nodes.min(12);
            let m = if sites >= 3 {
                width.div_ceil(sites).max(1)
            } else {
                (width / 3).max(1)
            };
            let k = (width - m).clamp(1, 8);
            ErasureSpec::new(k, m)
        }
    }
}
