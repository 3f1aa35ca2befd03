//! Storage audit counters of one gateway, for its `/metrics`: kept apart
//! from the auditor so the store that owns them need not know the auditor.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

/// Challenges passed and failed per node since the process started, for
/// the gateway's `/metrics`.
#[derive(Debug, Default)]
pub struct AuditStats(Mutex<BTreeMap<String, (u64, u64)>>);

impl AuditStats {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, (u64, u64)>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn add(&self, node: &str, passed: u32, failed: u32) {
        let mut m = self.lock();
        let e = m.entry(node.to_string()).or_default();
        e.0 += u64::from(passed);
        e.1 += u64::from(failed);
    }

    /// (passed, failed) per node.
    pub fn snapshot(&self) -> BTreeMap<String, (u64, u64)> {
        self.lock().clone()
    }
}
