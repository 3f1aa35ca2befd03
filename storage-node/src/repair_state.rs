//! What self-healing has seen and done, and the work asked of it: shared
//! by the node core (which readers, the scrubber and the RPC server hint
//! through) and the repair loop that drains it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use tokio::sync::Notify;

/// What self-healing has seen and done, for `gridstore admin repair
/// status` and the metrics. Counters since start, gauges from the last
/// pass.
#[derive(Default)]
pub struct RepairState {
    /// Home shards found missing by the last pass (or waiting since).
    pub missing: AtomicU64,
    /// Rebuilds in progress now.
    pub rebuilding: AtomicU64,
    pub rebuilt_shards: AtomicU64,
    pub rebuilt_bytes: AtomicU64,
    pub failed_rebuilds: AtomicU64,
    /// Shards this node held for another home and handed back.
    pub handed_back: AtomicU64,
    pub passes: AtomicU64,
    pub last_pass_ms: AtomicU64,
    /// Shards verified by the scrubber, and found corrupt by it.
    pub scrubbed_shards: AtomicU64,
    pub scrubbed_bytes: AtomicU64,
    pub corrupt_found: AtomicU64,
    /// Chunks to look at before anything else (reported by readers, or
    /// found corrupt by the scrubber).
    /// Chunk -> whether its local shards must be re-verified.
    hinted: Mutex<BTreeMap<[u8; 32], bool>>,
    /// Wakes the reconciliation loop early.
    pub wake: Notify,
    /// The next pass must look at every chunk (the map changed), not only
    /// the hinted ones.
    full: AtomicBool,
}

impl RepairState {
    /// Ask for chunk `id` to be reconciled soon (`verify`: re-read and
    /// check its local shards, a reader found one bad).
    pub fn hint(&self, id: [u8; 32], verify: bool) {
        *self
            .hinted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(id)
            .or_default() |= verify;
        self.wake.notify_one();
    }

    /// Ask for a full pass soon (a new map may have moved shard homes).
    pub fn request_full(&self) {
        self.full.store(true, Ordering::Relaxed);
        self.wake.notify_one();
    }

    /// Whether a full pass is asked for, without taking the request.
    pub fn full_requested(&self) -> bool {
        self.full.load(Ordering::Relaxed)
    }

    /// Whether a full pass was asked for since the last look.
    pub fn take_full(&self) -> bool {
        self.full.swap(false, Ordering::Relaxed)
    }

    /// The figures `status` reports.
    pub fn snapshot(&self, last_scrub_ms: u64) -> grid::node_api::RepairStatus {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        grid::node_api::RepairStatus {
            missing: get(&self.missing),
            rebuilding: get(&self.rebuilding),
            rebuilt_shards: get(&self.rebuilt_shards),
            rebuilt_bytes: get(&self.rebuilt_bytes),
            failed_rebuilds: get(&self.failed_rebuilds),
            handed_back: get(&self.handed_back),
            scrubbed_shards: get(&self.scrubbed_shards),
            corrupt_found: get(&self.corrupt_found),
            reconcile_passes: get(&self.passes),
            last_reconcile_ms: get(&self.last_pass_ms),
            last_scrub_ms,
        }
    }

    pub(crate) fn has_hints(&self) -> bool {
        !self
            .hinted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    }

    pub(crate) fn take_hints(&self) -> BTreeMap<[u8; 32], bool> {
        std::mem::take(&mut *self.hinted.lock().unwrap_or_else(|p| p.into_inner()))
    }
}
