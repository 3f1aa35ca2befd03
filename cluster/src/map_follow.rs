//! Gateways follow the cluster map the nodes agree on: when liveness marks
//! a node down (or up again) in a new epoch, reads, writes and metadata
//! quorums move to the nodes placement names under it, instead of working
//! around the dead node on every request.

use crate::store::{Inner, ObjectStore};
use std::sync::{Arc, Weak};
use std::time::Duration;

/// How often a gateway asks a node for its map epoch.
pub const FOLLOW_EVERY: Duration = Duration::from_secs(3);

impl ObjectStore {
    /// Poll the nodes (one answer per round, taking turns) and adopt any
    /// newer map they hold, from a background task that ends with the
    /// store (call inside a tokio runtime).
    pub fn following_map(self, every: Duration) -> Self {
        tokio::spawn(follow(Arc::downgrade(&self.inner), every));
        self
    }

    /// One round of [`following_map`](Self::following_map): ask nodes,
    /// starting at `turn`, until one answers; adopt its map if newer.
    /// Returns whether the map changed.
    pub async fn refresh_map(&self, turn: usize) -> bool {
        let grid = self.grid();
        let nodes = &grid.map().nodes;
        for i in 0..nodes.len() {
            let node = &nodes[(turn + i) % nodes.len()];
            let Some(client) = grid.client(&node.id) else {
                continue;
            };
            let Ok(Ok(status)) =
                tokio::time::timeout(Duration::from_secs(2), client.status()).await
            else {
                continue;
            };
            if status.map_epoch <= grid.map().epoch {
                return false;
            }
            let Ok(Some(map)) = client.get_map().await else {
                continue;
            };
            let epoch = map.epoch;
            if self.set_map(map) {
                tracing::info!(epoch, from = %node.id, "gateway follows a newer cluster map");
                return true;
            }
            return false;
        }
        false
    }
}

async fn follow(inner: Weak<Inner>, every: Duration) {
    let mut turn = 0usize;
    loop {
        tokio::time::sleep(every).await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let store = ObjectStore { inner };
        store.refresh_map(turn).await;
        turn = turn.wrapping_add(1);
    }
}
