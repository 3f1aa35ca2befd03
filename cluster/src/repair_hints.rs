//! Heal-on-read: what a read found missing or corrupt goes to the nodes
//! that should hold those shards, which reconcile the chunk at once rather
//! than at their next pass (or the next scrub).

use crate::chunk_stream::RepairHint;
use crate::store::ObjectStore;
use grid::chunk_io::Grid;
use metadata::ShardKey;
use std::collections::BTreeMap;
use tokio::sync::mpsc;

/// Hints waiting to be sent; beyond this, reads drop them (the nodes'
/// own passes find the damage anyway).
const QUEUE: usize = 1024;

impl ObjectStore {
    /// Send every damaged chunk a read meets to its shards' homes, from a
    /// background task (call inside a tokio runtime).
    pub fn with_repair_forwarding(self) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        let store = self.with_repair_queue(tx);
        tokio::spawn(forward(store.grid(), rx));
        store
    }
}

async fn forward(grid: std::sync::Arc<Grid>, mut rx: mpsc::Receiver<RepairHint>) {
    while let Some(h) = rx.recv().await {
        let Ok(homes) = grid.shard_homes(&h.chunk, h.erasure.total()) else {
            continue;
        };
        let mut by_node: BTreeMap<&str, Vec<ShardKey>> = BTreeMap::new();
        let damaged = h
            .missing
            .iter()
            .copied()
            .chain(h.corrupt.iter().map(|(i, _)| *i));
        for i in damaged {
            if let (Some(home), Ok(key)) = (homes.get(i), ShardKey::new(h.chunk.0, i)) {
                by_node.entry(home.as_str()).or_default().push(key);
            }
        }
        for (node, keys) in by_node {
            let Some(client) = grid.client(node) else {
                continue;
            };
            if let Err(e) = client.repair_hint(&keys, true).await {
                tracing::debug!(%node, error = %e, "repair hint not delivered");
            }
        }
    }
}
