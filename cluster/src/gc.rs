//! Garbage collection on the gateway side: chunk references whose referrer
//! never came to be (a gateway crashed between storing chunks and writing
//! the manifest), is gone (a delete that crashed before dropping its
//! references) or no longer names the chunk (a manifest rewritten with
//! other chunks, as a multipart stitch does) are removed once older than a
//! grace period. Nodes then
//! collect shards that stay unreferenced for their own grace period
//! (`storage-node`'s gc), so nothing a crash leaves behind is kept forever.

use crate::error::Result;
use crate::layout;
use crate::store::ObjectStore;
use crate::version_id::VersionId;
use grid::node_api::RefQuery;
use grid::replicas::ReplicaSet;
use grid::table::Table;
use metadata::model::{ChunkReference, MultipartUpload, ObjectVersion, Referrer};
use metadata::sealed::NAME_HASH_LEN;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepReport {
    pub refs_seen: u64,
    pub removed: u64,
}

impl ObjectStore {
    /// Which chunks `r` still names: those of the version it is, or all
    /// for an open upload. Unsure (a quorum not reached) counts as all: a
    /// reference removed wrongly loses data, one kept wrongly only waits
    /// for the next sweep.
    async fn referrer_names_now(&self, r: &Referrer) -> Named {
        if r.part_number == crate::multipart_stitch::STITCH_PART {
            // A stitch's own, kept only while it runs (within the grace).
            return Named::Nothing;
        }
        let Ok(set) =
            ReplicaSet::place(&self.grid(), &r.bucket_id, self.config().metadata_replicas)
        else {
            return Named::All;
        };
        let Ok(key_hash) = <[u8; NAME_HASH_LEN]>::try_from(r.key_hash.as_slice()) else {
            return Named::Nothing;
        };
        let keys = self.inner.master.bucket_record_keys(&r.bucket_id);
        if r.part_number == 0 {
            let Some(vid) = VersionId::from_slice(&r.version) else {
                return Named::Nothing;
            };
            let key = layout::version_key(&r.bucket_id, &key_hash, &vid);
            match Table::<ObjectVersion>::new(self.grid(), set, keys)
                .get(&key)
                .await
            {
                Ok(Some(v)) if !v.purged => {
                    Named::Chunks(v.chunks.into_iter().map(|c| c.id).collect())
                }
                Ok(_) => Named::Nothing,
                // Unreadable counts as alive, as an unreachable quorum does.
                Err(_) => Named::All,
            }
        } else {
            let key = layout::upload_key(&r.bucket_id, &key_hash, &r.version);
            match Table::<MultipartUpload>::new(self.grid(), set, keys)
                .get(&key)
                .await
            {
                Ok(Some(u)) if !u.closed => Named::All,
                Ok(_) => Named::Nothing,
                Err(_) => Named::All,
            }
        }
    }

    /// Every bucket's name by its id (tombstones included: a damaged
    /// chunk may outlive its bucket's record), read once for
    /// [`ObjectStore::referrer_names`].
    pub async fn bucket_names_by_id(&self) -> Result<HashMap<Vec<u8>, String>> {
        let mut scan = self
            .root_table::<metadata::model::Bucket>()?
            .scan(Vec::new(), None);
        let mut names = HashMap::new();
        while let Some((_, b)) = scan.next().await? {
            names.insert(b.id, b.name);
        }
        Ok(names)
    }

    /// Which bucket and object key a chunk referrer names, for operators
    /// (nodes only know the key's hash): `None` when the bucket or the
    /// record is gone or unreadable. `buckets` is
    /// [`ObjectStore::bucket_names_by_id`].
    pub async fn referrer_names(
        &self,
        r: &Referrer,
        buckets: &HashMap<Vec<u8>, String>,
    ) -> Option<(String, String)> {
        let bucket = buckets.get(&r.bucket_id)?.clone();
        let key_hash = <[u8; NAME_HASH_LEN]>::try_from(r.key_hash.as_slice()).ok()?;
        let set =
            ReplicaSet::place(&self.grid(), &r.bucket_id, self.config().metadata_replicas).ok()?;
        let keys = self.inner.master.bucket_record_keys(&r.bucket_id);
        let key = if r.part_number == 0 {
            let vid = VersionId::from_slice(&r.version)?;
            let k = layout::version_key(&r.bucket_id, &key_hash, &vid);
            Table::<ObjectVersion>::new(self.grid(), set, keys)
                .get(&k)
                .await
                .ok()??
                .key
        } else {
            let k = layout::upload_key(&r.bucket_id, &key_hash, &r.version);
            Table::<MultipartUpload>::new(self.grid(), set, keys)
                .get(&k)
                .await
                .ok()??
                .key
        };
        Some((bucket, key))
    }

    /// Remove the orphaned references held by `node_id` that are older than
    /// `grace`.
    pub async fn sweep_orphan_refs(&self, node_id: &str, grace: Duration) -> Result<SweepReport> {
        let mut report = SweepReport::default();
        let Some(client) = self.grid().client(node_id).cloned() else {
            return Ok(report);
        };
        let cutoff = grid::clock::now_ms().saturating_sub(grace.as_millis() as u64);
        let mut alive: HashMap<Vec<u8>, Arc<Named>> = HashMap::new();
        let mut start_after = None;
        loop {
            let page = client
                .refs_list(RefQuery {
                    chunk_id: None,
                    start_after: start_after.clone(),
                    limit: 1000,
                })
                .await
                .map_err(|e| crate::Error::Internal(format!("listing references: {e}")))?;
            let mut dead: Vec<ChunkReference> = Vec::new();
            for r in page.refs {
                report.refs_seen += 1;
                if r.created_ms > cutoff {
                    continue;
                }
                let Some(referrer) = r.referrer.clone() else {
                    continue;
                };
                let id = referrer.encode_to_vec_for_cache();
                let named = match alive.get(&id) {
                    Some(n) => n.clone(),
                    None => {
                        let n = Arc::new(self.referrer_names_now(&referrer).await);
                        if alive.len() > 10_000 {
                            alive.clear();
                        }
                        alive.insert(id, n.clone());
                        n
                    }
                };
                if !named.names(&r.chunk_id) {
                    dead.push(r);
                }
            }
            if !dead.is_empty() {
                report.removed += dead.len() as u64;
                client
                    .refs_remove(dead)
                    .await
                    .map_err(|e| crate::Error::Internal(format!("removing references: {e}")))?;
            }
            match page.next_after {
                Some(n) => start_after = Some(n),
                None => break,
            }
        }
        Ok(report)
    }
}

/// The chunks a referrer names.
enum Named {
    Nothing,
    All,
    Chunks(HashSet<Vec<u8>>),
}

impl Named {
    fn names(&self, chunk: &[u8]) -> bool {
        match self {
            Named::Nothing => false,
            Named::All => true,
            Named::Chunks(ids) => ids.contains(chunk),
        }
    }
}

trait CacheKey {
    fn encode_to_vec_for_cache(&self) -> Vec<u8>;
}

impl CacheKey for Referrer {
    fn encode_to_vec_for_cache(&self) -> Vec<u8> {
        ChunkReference::table_key(&[], self)
    }
}
