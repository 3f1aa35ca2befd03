//! Lock records (WebDAV locks) on the root replicas, so that a lock taken
//! through one gateway holds against writes through every other.
//!
//! This module only stores and lists records; what conflicts with what is
//! the front end's rule. Taking a lock safely across gateways is
//! "write, then list": a gateway writes its record with a quorum, lists
//! the locks with a quorum, and keeps its lock only if no conflicting
//! live lock is listed. Of two racing gateways the one whose write
//! finished last always sees the other (its read quorum meets the other's
//! write quorum), so at most one wins; both may lose, and then both
//! withdraw and their clients retry.

use crate::error::Result;
use crate::store::ObjectStore;
use grid::table::Table;
pub use metadata::model::Lock;
use metadata::sealed::{NameKind, RecordKeys};

/// Tombstones of locks that lapsed this long ago are deleted outright: by
/// then a stale replica bringing the live record back would bring back a
/// lock that has already expired.
const TOMBSTONE_KEEP_MS: u64 = 3_600_000;

/// `h(path) ‖ h(token)`: one record per lock, named by nothing a node can
/// read. Listings read every lock record (locks are few and short-lived)
/// and filter by path after opening them.
fn lock_key(keys: &RecordKeys, path: &str, token: &str) -> Vec<u8> {
    let mut k = keys.name_hash(NameKind::LockPath, path.as_bytes()).to_vec();
    k.extend_from_slice(&keys.name_hash(NameKind::LockPath, token.as_bytes()));
    k
}

impl ObjectStore {
    /// Store `lock` (new or refreshed) with a write quorum. Its revision is
    /// set here, so a later write always outranks an earlier one.
    pub async fn put_lock(&self, lock: &Lock) -> Result<()> {
        let mut l = lock.clone();
        l.revision = self.revision();
        l.deleted = false;
        self.write_lock(&l).await
    }

    /// Withdraw `lock` (unlock, or a lost race): a tombstone.
    pub async fn remove_lock(&self, lock: &Lock) -> Result<()> {
        let mut l = lock.clone();
        l.revision = self.revision();
        l.deleted = true;
        self.write_lock(&l).await
    }

    async fn write_lock(&self, l: &Lock) -> Result<()> {
        let locks = self.root_table::<Lock>()?;
        let key = lock_key(&self.inner.root_keys, &l.path, &l.token);
        Ok(locks.put(&key, l).await?)
    }

    /// The live (not withdrawn, not lapsed at `now_ms`) locks whose path
    /// starts with `prefix`, read from a quorum. Old tombstones met on the
    /// way are deleted.
    pub async fn list_locks(&self, prefix: &str, now_ms: u64) -> Result<Vec<Lock>> {
        let locks = self.root_table::<Lock>()?;
        let mut scan = locks.scan(Vec::new(), None).with_page(1000);
        let mut live = Vec::new();
        let mut purge = Vec::new();
        while let Some((key, l)) = scan.next().await? {
            if l.expires_ms.saturating_add(TOMBSTONE_KEEP_MS) < now_ms {
                purge.push(Table::<Lock>::delete_op(&key));
            } else if !l.deleted && l.expires_ms > now_ms && l.path.starts_with(prefix) {
                live.push(l);
            }
        }
        scan.repair_stale();
        if !purge.is_empty() {
            // Housekeeping only: a failure leaves them for the next listing.
            tokio::spawn(async move {
                if let Err(e) = locks.apply(purge).await {
                    tracing::debug!(error = %e, "old lock records not purged");
                }
            });
        }
        Ok(live)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_keys_name_nothing_and_differ_per_lock() {
        let keys = RecordKeys::new(&[5; 32]);
        let a = lock_key(&keys, "/bucket/secret-name", "token-1");
        assert_eq!(a.len(), 32);
        assert!(!a.windows(6).any(|w| w == b"secret"));
        assert_ne!(a, lock_key(&keys, "/bucket/secret-name", "token-2"));
        assert_ne!(a, lock_key(&keys, "/bucket/other", "token-1"));
    }
}
