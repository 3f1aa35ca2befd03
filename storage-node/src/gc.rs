//! Node-local garbage collection of unreferenced shards.
//!
//! A node keeps a chunk's shards while it holds at least one reference to
//! the chunk (`Table::ChunkRefs`). Shards with none are left over by uploads
//! that failed half-way or belong to objects since deleted; they are
//! deleted once they have gone unreferenced for a grace period, which
//! covers shards that arrive before their references and reads of a chunk
//! that has just lost its last one.
//!
//! When a chunk was first seen unreferenced is kept in `Table::System`
//! under `gc/unref/<chunk id>` (milliseconds since the epoch, big-endian),
//! so the grace survives restarts and passes need not remember anything.
//!
//! Gateways add a chunk's references *before* asking whether the node holds
//! its shards (dedup), so a chunk must never be deleted after a reference
//! write has returned. [`Node::add_references`] and the last look at a
//! chunk's references before its deletion both hold [`Node`]'s `gc_lock`:
//! either the reference lands first and the chunk is kept, or the shards
//! are gone before the gateway can see them and it uploads them again.

use crate::node::{Node, NodeError};
use crate::shard_store::StoreError;
use metadata::db::{Batch, DbError, Table};
use metadata::model::CHUNK_ID_LEN;
use metadata::{ShardKey, MAX_SHARDS};
use std::sync::atomic::{AtomicBool, Ordering};

const MARK_PREFIX: &[u8] = b"gc/unref/";
/// Marks checked per read of the mark table when dropping stale ones.
const MARK_PAGE: usize = 1024;

/// What one garbage collection pass found and did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Chunks of which the node holds at least one shard.
    pub chunks_seen: u64,
    /// Of those, chunks without any reference on this node (within or past
    /// their grace period).
    pub unreferenced: u64,
    pub deleted_shards: u64,
    /// Bytes of the deleted shards, headers included.
    pub freed_bytes: u64,
}

/// The key of `chunk`'s "unreferenced since" mark.
fn mark_key(chunk: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(MARK_PREFIX.len() + chunk.len());
    k.extend_from_slice(MARK_PREFIX);
    k.extend_from_slice(chunk);
    k
}

/// When a mark says its chunk lost its references; `None` for a value
/// this code never writes (it is then written again, restarting the grace).
fn mark_since(value: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(value.try_into().ok()?))
}

impl Node {
    /// One garbage collection pass at time `now_ms` (milliseconds since
    /// the epoch): mark chunks held without references, forget marks of
    /// chunks referenced again or no longer held, and delete the shards of
    /// chunks marked at least `grace_ms` ago. Blocking (file and metadata
    /// I/O); run it off the async reactor.
    pub fn gc_pass(&self, now_ms: u64, grace_ms: u64) -> Result<GcReport, NodeError> {
        self.gc_pass_until(now_ms, grace_ms, &AtomicBool::new(false))
    }

    /// [`gc_pass`](Self::gc_pass), ending early (with what it did so far)
    /// once `stop` is set, so a node shutting down need not wait for a
    /// pass over a large store. Whatever a pass leaves undone, the next one
    /// does.
    pub fn gc_pass_until(
        &self,
        now_ms: u64,
        grace_ms: u64,
        stop: &AtomicBool,
    ) -> Result<GcReport, NodeError> {
        let mut report = GcReport::default();
        // The store lists shards in chunk-id order with a chunk's shards
        // next to each other (its file names share the 64-hex prefix), so
        // remembering the last chunk is enough to visit each chunk once
        // without holding the list of a large store.
        let mut last: Option<[u8; CHUNK_ID_LEN]> = None;
        for key in self.store.iter()? {
            let chunk = key?.chunk;
            if last == Some(chunk) {
                continue;
            }
            last = Some(chunk);
            if stop.load(Ordering::Relaxed) {
                return Ok(report);
            }
            self.gc_chunk(&chunk, now_ms, grace_ms, &mut report)?;
        }
        self.drop_stale_marks(stop)?;
        Ok(report)
    }

    /// Store chunk references (the `refs:add` call): `batch` holds their
    /// writes, `chunks` the ids they refer to. Once this returns, the
    /// chunks are kept as long as the references stand, and should they
    /// lose them later their grace period starts afresh.
    pub fn add_references(&self, mut batch: Batch, chunks: &[Vec<u8>]) -> Result<(), DbError> {
        let _gc = self.gc_guard();
        for chunk in chunks {
            let key = mark_key(chunk);
            // Look first: a delete of every referenced chunk's (usually
            // absent) mark would fill the system table with tombstones.
            if self.db.get_raw(Table::System, &key)?.is_some() {
                batch.delete(Table::System, &key);
            }
        }
        // Peers repeat references (every surviving home pushes a chunk's
        // to its new home): those already here cost no write.
        self.db.write_changed(batch)
    }

    fn is_referenced(&self, chunk: &[u8]) -> Result<bool, DbError> {
        let page = self.db.scan_prefix(Table::ChunkRefs, chunk, None, 1)?;
        Ok(!page.items.is_empty())
    }

    fn gc_chunk(
        &self,
        chunk: &[u8; CHUNK_ID_LEN],
        now_ms: u64,
        grace_ms: u64,
        report: &mut GcReport,
    ) -> Result<(), NodeError> {
        report.chunks_seen += 1;
        let key = mark_key(chunk);
        if self.is_referenced(chunk)? {
            if self.db.get_raw(Table::System, &key)?.is_some() {
                self.db.delete(Table::System, &key)?;
            }
            return Ok(());
        }
        report.unreferenced += 1;
        let since = self
            .db
            .get_raw(Table::System, &key)?
            .as_deref()
            .and_then(mark_since);
        // A clock set back makes `since` lie ahead: the chunk then waits
        // for the clock to catch up rather than going early.
        if since.is_some_and(|s| now_ms.saturating_sub(s) < grace_ms) {
            return Ok(());
        }
        let _gc = self.gc_guard();
        // References written since the look above win; under the lock no
        // more can arrive until the decision below is carried out.
        if self.is_referenced(chunk)? {
            self.db.delete(Table::System, &key)?;
            return Ok(());
        }
        if since.is_none() {
            // Under the lock too: a reference written between the look above
            // and this write would not clear the mark, and the chunk would
            // get less than a full grace should it lose that reference.
            self.db
                .put_raw(Table::System, &key, &now_ms.to_be_bytes())?;
            return Ok(());
        }
        let (mut shards, mut bytes) = (0u64, 0u64);
        // Every index, not only those listed: a shard stored after the
        // listing belongs to the same unreferenced chunk.
        for index in 0..MAX_SHARDS {
            let shard = ShardKey {
                chunk: *chunk,
                index: index as u8,
            };
            let len = match self.store.shard_len(&shard) {
                Ok(len) => len,
                Err(StoreError::NotFound) => continue,
                Err(e) => return Err(e.into()),
            };
            if self.store.delete(&shard)? {
                shards += 1;
                bytes += len;
                self.metrics.gc_deleted_shards.inc();
                self.metrics.gc_freed_bytes.inc_by(len);
            }
        }
        // Last, so a pass cut short by an error leaves the chunk marked and
        // the next pass finishes it without a new grace period.
        self.db.delete(Table::System, &key)?;
        report.deleted_shards += shards;
        report.freed_bytes += bytes;
        tracing::debug!(
            chunk = %hex::encode(chunk),
            shards,
            bytes,
            "deleted unreferenced chunk"
        );
        Ok(())
    }

    /// Drop marks of chunks the node no longer holds (shards deleted or
    /// moved by other means), so the mark table does not grow without end.
    /// Such a chunk stored again later gets a grace period of its own.
    fn drop_stale_marks(&self, stop: &AtomicBool) -> Result<(), NodeError> {
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page =
                self.db
                    .scan_prefix(Table::System, MARK_PREFIX, after.as_deref(), MARK_PAGE)?;
            for (key, _) in &page.items {
                if stop.load(Ordering::Relaxed) {
                    return Ok(());
                }
                let chunk = key
                    .strip_prefix(MARK_PREFIX)
                    .and_then(|c| <[u8; CHUNK_ID_LEN]>::try_from(c).ok());
                let held = match chunk {
                    Some(chunk) => (0..MAX_SHARDS).any(|index| {
                        self.store.contains(&ShardKey {
                            chunk,
                            index: index as u8,
                        })
                    }),
                    // Not a key this module writes: nothing to keep it for.
                    None => false,
                };
                if !held {
                    self.db.delete(Table::System, key)?;
                }
            }
            if page.next.is_none() {
                return Ok(());
            }
            match page.items.last() {
                Some((key, _)) => after = Some(key.clone()),
                None => return Ok(()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{IoChoice, NodeConfig};
    use codec::{DomainKey, ErasureParams, SealConfig, SealedChunk, Sealer};
    use metadata::model::{ChunkReference, Referrer};
    use rand::{RngCore, SeedableRng};

    fn open(dir: &std::path::Path) -> Node {
        Node::open(&NodeConfig {
            node_id: "gc-test".into(),
            site: "farm-a".into(),
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.join("node"),
            quota_bytes: None,
            reserve_bytes: 0,
            io: IoChoice::Threads,
            shutdown_grace_secs: 1,
            gc_grace_secs: 86_400,
            gc_interval_secs: 0,
            repair: crate::config::RepairConfig::manual(),
            jobs: Default::default(),
        })
        .unwrap()
    }

    fn sealed(seed: u64) -> SealedChunk {
        let mut data = vec![0u8; 2_000];
        rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut data);
        Sealer::new(SealConfig::new(ErasureParams::new(2, 1).unwrap()))
            .unwrap()
            .seal(&DomainKey::new([3; 32]), &data)
            .unwrap()
    }

    fn store_all(node: &Node, c: &SealedChunk) {
        for i in 0..c.shard_count() {
            node.store
                .put(ShardKey::new(c.id().0, i).unwrap(), &c.shard(i))
                .unwrap();
        }
    }

    fn held(node: &Node, c: &SealedChunk) -> usize {
        (0..c.shard_count())
            .filter(|&i| node.store.contains(&ShardKey::new(c.id().0, i).unwrap()))
            .count()
    }

    fn mark(node: &Node, c: &SealedChunk) -> Option<Vec<u8>> {
        node.db
            .get_raw(Table::System, &mark_key(&c.id().0))
            .unwrap()
    }

    fn reference(c: &SealedChunk) -> ChunkReference {
        ChunkReference {
            chunk_id: c.id().0.to_vec(),
            referrer: Some(Referrer {
                bucket_id: vec![1; 16],
                key_hash: vec![1; 16],
                version: vec![2; 16],
                part_number: 0,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn each_chunk_is_visited_once_across_directories() {
        let dir = tempfile::tempdir().unwrap();
        let node = open(dir.path());
        let chunks: Vec<SealedChunk> = (0..40).map(sealed).collect();
        for c in &chunks {
            store_all(&node, c);
        }
        let first = node.gc_pass(1_000, 10).unwrap();
        assert_eq!(
            first,
            GcReport {
                chunks_seen: 40,
                unreferenced: 40,
                deleted_shards: 0,
                freed_bytes: 0
            }
        );
        let bytes: u64 = chunks
            .iter()
            .flat_map(|c| (0..c.shard_count()).map(|i| c.shard(i).len() as u64))
            .sum();
        let last = node.gc_pass(1_010, 10).unwrap();
        assert_eq!(last.deleted_shards, 120);
        assert_eq!(last.freed_bytes, bytes);
        assert_eq!(node.store.usage().unwrap().shards, 0);
        assert!(chunks.iter().all(|c| mark(&node, c).is_none()));
    }

    #[test]
    fn marks_of_chunks_no_longer_held_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let node = open(dir.path());
        let c = sealed(1);
        store_all(&node, &c);
        node.gc_pass(1_000, 10).unwrap();
        assert_eq!(mark(&node, &c), Some(1_000u64.to_be_bytes().to_vec()));
        for i in 0..c.shard_count() {
            node.store
                .delete(&ShardKey::new(c.id().0, i).unwrap())
                .unwrap();
        }
        // A mark under the prefix but of no chunk id this module writes.
        node.db
            .put_raw(Table::System, b"gc/unref/short", &[0; 8])
            .unwrap();
        let r = node.gc_pass(2_000, 10).unwrap();
        assert_eq!(r, GcReport::default());
        assert_eq!(mark(&node, &c), None);
        assert_eq!(
            node.db.get_raw(Table::System, b"gc/unref/short").unwrap(),
            None
        );
    }

    #[test]
    fn an_unreadable_mark_restarts_the_grace() {
        let dir = tempfile::tempdir().unwrap();
        let node = open(dir.path());
        let c = sealed(2);
        store_all(&node, &c);
        node.db
            .put_raw(Table::System, &mark_key(&c.id().0), b"bad")
            .unwrap();
        node.gc_pass(5_000, 10).unwrap();
        assert_eq!(held(&node, &c), 3);
        assert_eq!(mark(&node, &c), Some(5_000u64.to_be_bytes().to_vec()));
    }

    #[test]
    fn a_clock_set_back_delays_collection() {
        let dir = tempfile::tempdir().unwrap();
        let node = open(dir.path());
        let c = sealed(3);
        store_all(&node, &c);
        node.gc_pass(5_000, 10).unwrap();
        assert_eq!(node.gc_pass(1_000, 10).unwrap().deleted_shards, 0);
        assert_eq!(held(&node, &c), 3);
        assert_eq!(node.gc_pass(5_010, 10).unwrap().deleted_shards, 3);
    }

    #[test]
    fn a_stopped_pass_does_nothing_more() {
        let dir = tempfile::tempdir().unwrap();
        let node = open(dir.path());
        let c = sealed(4);
        store_all(&node, &c);
        let r = node
            .gc_pass_until(1_000, 0, &AtomicBool::new(true))
            .unwrap();
        assert_eq!(r, GcReport::default());
        assert_eq!(mark(&node, &c), None);
    }

    #[test]
    fn adding_a_reference_clears_the_mark() {
        let dir = tempfile::tempdir().unwrap();
        let node = open(dir.path());
        let c = sealed(5);
        store_all(&node, &c);
        node.gc_pass(1_000, 10).unwrap();
        assert!(mark(&node, &c).is_some());
        let r = reference(&c);
        let mut b = Batch::new();
        b.put(Table::ChunkRefs, &r.key().unwrap(), &r);
        node.add_references(b, std::slice::from_ref(&r.chunk_id))
            .unwrap();
        assert_eq!(mark(&node, &c), None);
        // The reference goes again: a full grace from the next pass.
        node.db.delete(Table::ChunkRefs, &r.key().unwrap()).unwrap();
        node.gc_pass(9_000, 10).unwrap();
        assert_eq!(held(&node, &c), 3);
        assert_eq!(node.gc_pass(9_010, 10).unwrap().deleted_shards, 3);
    }
}
