//! Garbage collection on the gateway side: chunk references whose referrer
//! never came to be (a gateway crashed between storing chunks and writing
//! the manifest) or is gone (a delete that crashed before dropping its
//! references) are removed once older than a grace period. Nodes then
//! collect shards that stay unreferenced for their own grace period
//! (`storage-node`'s gc), so nothing a crash leaves behind is kept forever.

use crate::error::Result;
use crate::layout;
use crate::node_api::RefQuery;
use crate::replicas::{self, ReplicaSet};
use crate::store::{version_revision, ObjectStore};
use crate::version_id::VersionId;
use metadata::db::Table;
use metadata::model::{ChunkReference, MultipartUpload, ObjectVersion, Referrer};
use metadata::Record;
use std::collections::HashMap;
use std::time::Duration;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepReport {
    pub refs_seen: u64,
    pub removed: u64,
}

impl ObjectStore {
    /// Whether `r` names a version or an open upload that exists. Unsure
    /// (a quorum not reached) counts as alive: a reference removed wrongly
    /// loses data, one kept wrongly only waits for the next sweep.
    async fn referrer_alive(&self, r: &Referrer) -> bool {
        let Ok(set) =
            ReplicaSet::place(&self.grid(), &r.bucket_id, self.config().metadata_replicas)
        else {
            return true;
        };
        if r.part_number == 0 {
            let Some(vid) = VersionId::from_slice(&r.version) else {
                return false;
            };
            let key = layout::version_key(&r.bucket_id, &r.key, &vid);
            match replicas::read(&self.grid(), &set, Table::Versions, &key).await {
                Ok(answers) => match replicas::pick_latest(answers, version_revision).0 {
                    Some(b) => ObjectVersion::decode_record(&b).map_or(true, |v| !v.purged),
                    None => false,
                },
                Err(_) => true,
            }
        } else {
            let key = layout::upload_key(&r.bucket_id, &r.key, &r.version);
            let rev = |b: &[u8]| MultipartUpload::decode_record(b).ok().map(|u| u.revision);
            match replicas::read(&self.grid(), &set, Table::Uploads, &key).await {
                Ok(answers) => match replicas::pick_latest(answers, rev).0 {
                    Some(b) => MultipartUpload::decode_record(&b).map_or(true, |u| !u.closed),
                    None => false,
                },
                Err(_) => true,
            }
        }
    }

    /// Remove the orphaned references held by `node_id` that are older than
    /// `grace`.
    pub async fn sweep_orphan_refs(&self, node_id: &str, grace: Duration) -> Result<SweepReport> {
        let mut report = SweepReport::default();
        let Some(client) = self.grid().client(node_id).cloned() else {
            return Ok(report);
        };
        let cutoff = crate::rpc_auth::now_ms().saturating_sub(grace.as_millis() as u64);
        let mut alive: HashMap<Vec<u8>, bool> = HashMap::new();
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
                let ok = match alive.get(&id) {
                    Some(ok) => *ok,
                    None => {
                        let ok = self.referrer_alive(&referrer).await;
                        if alive.len() > 100_000 {
                            alive.clear();
                        }
                        alive.insert(id, ok);
                        ok
                    }
                };
                if !ok {
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

trait CacheKey {
    fn encode_to_vec_for_cache(&self) -> Vec<u8>;
}

impl CacheKey for Referrer {
    fn encode_to_vec_for_cache(&self) -> Vec<u8> {
        ChunkReference::table_key(&[], self)
    }
}
