//! Ordered listings over records that nodes cannot order.
//!
//! Version records are keyed by `bucket id ‖ h(key) ‖ !version`, so a node
//! returns a bucket's objects in hash order. A gateway that lists a bucket
//! reads it once, keeps the objects sorted by key in memory, and from then
//! on only asks the bucket's replicas what changed: every node keeps a
//! change feed of the version keys written to it (`metadata::db::Changes`,
//! in memory, one per node process), and the gateway re-reads exactly the
//! objects whose keys appear there.
//!
//! Why this is never behind an acknowledged write: a write is acknowledged
//! once a write quorum stored it and appended it to their feeds; a refresh
//! reads the feeds of at least a read quorum of the replicas, and every
//! read quorum meets every write quorum. A position is read from each
//! replica before the full read, so a write the read missed is after the
//! position. A replica whose feed restarted, or that forgot the position
//! (it keeps the last `2^18` writes), or a change of the replica set sends
//! the gateway back to a full read.
//!
//! Memory: about the size of the version records without their chunk
//! lists, per indexed bucket; at most [`MAX_INDEXED_OBJECTS`] objects over
//! all buckets (least recently listed buckets are dropped first). A bucket
//! larger than that is listed by a full read each time.

use crate::error::{Error, Result};
use crate::store::{BucketHandle, ObjectStore};
use grid::node_api::ChangesReply;
use grid::table::Table;
use metadata::db::Table as DbTable;
use metadata::model::ObjectVersion;
use metadata::sealed::NAME_HASH_LEN;
use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Objects kept over all indexed buckets of one gateway.
pub const MAX_INDEXED_OBJECTS: usize = 4_000_000;
/// Changed keys read from one replica in one refresh; more than that and
/// a full read is cheaper.
const MAX_CHANGES: u32 = 10_000;

/// Objects of one bucket by key: the versions that are not purged, newest
/// first, without their chunk lists.
pub(crate) type Objects = BTreeMap<String, Vec<ObjectVersion>>;

struct BucketIndex {
    /// The replica set the positions belong to.
    replicas: Vec<String>,
    /// Per replica: feed id and position.
    positions: HashMap<String, (u64, u64)>,
    objects: Objects,
    by_hash: HashMap<[u8; NAME_HASH_LEN], String>,
    last_used: Instant,
}

/// One bucket's index, absent until first listed or after it was dropped;
/// listings of one bucket through one gateway take turns.
type Slot = Arc<tokio::sync::Mutex<Option<BucketIndex>>>;

/// The listing indexes of one gateway, per bucket id.
#[derive(Default)]
pub(crate) struct ListIndexes {
    buckets: Mutex<HashMap<Vec<u8>, Slot>>,
}

impl ListIndexes {
    fn slot(&self, bucket_id: &[u8]) -> Slot {
        let mut map = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(bucket_id.to_vec()).or_default().clone()
    }

    /// Keep the total under the budget: drop the least recently used
    /// indexes (not `keep`, the one in use).
    fn trim(&self, keep: &[u8]) {
        let map = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let mut sizes: Vec<(Instant, usize, Vec<u8>)> = map
            .iter()
            .filter(|(id, _)| id.as_slice() != keep)
            .filter_map(|(id, slot)| {
                let guard = slot.try_lock().ok()?;
                let ix = guard.as_ref()?;
                Some((ix.last_used, ix.objects.len(), id.clone()))
            })
            .collect();
        let mut total: usize = sizes.iter().map(|s| s.1).sum();
        sizes.sort();
        for (_, n, id) in sizes {
            if total <= MAX_INDEXED_OBJECTS / 2 {
                break;
            }
            if let Some(slot) = map.get(&id) {
                if let Ok(mut g) = slot.try_lock() {
                    *g = None;
                    total -= n;
                }
            }
        }
    }
}

/// What a listing visit asks of the source after an object.
pub(crate) enum Visit {
    Continue,
    /// Nothing at or past this object can make it onto the page.
    Stop,
    /// Skip every key starting with this (a common prefix now listed).
    SkipPrefix(String),
}

fn slim(mut v: ObjectVersion) -> ObjectVersion {
    v.chunks = Vec::new();
    v.inline_data = Vec::new();
    v
}

impl ObjectStore {
    /// Visit the objects of `b` whose keys are at least `from`, in key
    /// order, each with its versions that are not purged (newest first),
    /// until `visit` says stop.
    pub(crate) async fn visit_objects(
        &self,
        b: &BucketHandle,
        from: &str,
        mut visit: impl FnMut(&str, &[ObjectVersion]) -> Visit,
    ) -> Result<()> {
        let slot = self.inner.list_indexes.slot(b.id());
        let mut guard = slot.lock().await;
        let fresh = match guard.take() {
            Some(ix) => self.refresh(b, ix).await?,
            None => None,
        };
        let ix = match fresh {
            Some(ix) => ix,
            None => match self.build_index(b).await? {
                Some(ix) => ix,
                None => {
                    // Too large to keep: an ordered pass over a full read.
                    let objects = self.read_objects(b).await?;
                    walk(&objects, from, &mut visit);
                    return Ok(());
                }
            },
        };
        let ix = guard.insert(ix);
        ix.last_used = Instant::now();
        walk(&ix.objects, from, &mut visit);
        let big = ix.objects.len() > MAX_INDEXED_OBJECTS / 8;
        drop(guard);
        if big {
            self.inner.list_indexes.trim(b.id());
        }
        Ok(())
    }

    /// Every object of `b` by key, from a read quorum.
    async fn read_objects(&self, b: &BucketHandle) -> Result<Objects> {
        let mut objects = Objects::new();
        self.for_each_object(b, |versions| {
            let key = versions[0].key.clone();
            objects.insert(key, versions.iter().cloned().map(slim).collect());
        })
        .await?;
        Ok(objects)
    }

    /// Ask the feeds of `asks` (replica, position) at once; the replies
    /// of those that answered, without waiting long for a hung one.
    async fn ask_feeds(
        &self,
        b: &BucketHandle,
        asks: Vec<(String, Option<(u64, u64)>)>,
        limit: u32,
    ) -> Vec<(String, ChangesReply)> {
        let grid = self.grid();
        let mut calls = tokio::task::JoinSet::new();
        let asked: Vec<String> = asks.iter().map(|(n, _)| n.clone()).collect();
        for (node, since) in asks {
            let Some(client) = grid.client(&node).cloned() else {
                continue;
            };
            let prefix = b.id().to_vec();
            calls.spawn(async move {
                let reply = client
                    .meta_changes(DbTable::Versions, &prefix, since, limit)
                    .await;
                (node, reply)
            });
        }
        let (answers, _) = grid.join_calls(&mut calls, &asked, |r| r.is_ok()).await;
        answers
            .into_iter()
            .filter_map(|(n, r)| Some((n, r.ok()?)))
            .collect()
    }

    /// Where each replica's feed is now, from every replica that answers;
    /// `None` if fewer than a read quorum did.
    async fn feed_positions(&self, b: &BucketHandle) -> Option<HashMap<String, (u64, u64)>> {
        let asks = b.replicas.nodes.iter().map(|n| (n.clone(), None)).collect();
        let positions: HashMap<String, (u64, u64)> = self
            .ask_feeds(b, asks, 0)
            .await
            .into_iter()
            .map(|(n, c)| (n, (c.feed, c.head)))
            .collect();
        (positions.len() >= b.replicas.read_quorum).then_some(positions)
    }

    async fn build_index(&self, b: &BucketHandle) -> Result<Option<BucketIndex>> {
        let Some(positions) = self.feed_positions(b).await else {
            // Without positions no index can be kept current; the listing
            // still works from a full read (which needs a read quorum too).
            return Ok(None);
        };
        let objects = self.read_objects(b).await?;
        if objects.len() > MAX_INDEXED_OBJECTS / 2 {
            return Ok(None);
        }
        let by_hash = objects.keys().map(|k| (b.key_hash(k), k.clone())).collect();
        Ok(Some(BucketIndex {
            replicas: b.replicas.nodes.clone(),
            positions,
            objects,
            by_hash,
            last_used: Instant::now(),
        }))
    }

    /// `ix` brought up to date, or `None` when only a full read can.
    async fn refresh(&self, b: &BucketHandle, mut ix: BucketIndex) -> Result<Option<BucketIndex>> {
        if ix.replicas != b.replicas.nodes {
            return Ok(None);
        }
        let asks = ix
            .positions
            .iter()
            .map(|(n, p)| (n.clone(), Some(*p)))
            .collect();
        let mut answered = 0;
        let mut changed: Vec<[u8; NAME_HASH_LEN]> = Vec::new();
        for (node, c) in self.ask_feeds(b, asks, MAX_CHANGES).await {
            if !c.complete {
                return Ok(None);
            }
            answered += 1;
            ix.positions.insert(node, (c.feed, c.head));
            for k in c.keys {
                if let Some(h) = k
                    .get(b.id().len()..b.id().len() + NAME_HASH_LEN)
                    .and_then(|h| <[u8; NAME_HASH_LEN]>::try_from(h).ok())
                {
                    changed.push(h);
                }
            }
        }
        if answered < b.replicas.read_quorum {
            return Ok(None);
        }
        changed.sort_unstable();
        changed.dedup();
        for h in changed {
            let versions = self.object_versions_by_hash(b, &h).await?;
            if let Some(old) = ix.by_hash.remove(&h) {
                ix.objects.remove(&old);
            }
            if let Some(first) = versions.first() {
                let key = first.key.clone();
                if b.key_hash(&key) != h {
                    return Err(Error::Corrupt(
                        "version record under another key's hash".into(),
                    ));
                }
                ix.by_hash.insert(h, key.clone());
                ix.objects
                    .insert(key, versions.into_iter().map(slim).collect());
            }
        }
        Ok(Some(ix))
    }

    /// The versions of the object whose key hashes to `h` that are not
    /// purged, newest first, from a read quorum.
    async fn object_versions_by_hash(
        &self,
        b: &BucketHandle,
        h: &[u8; NAME_HASH_LEN],
    ) -> Result<Vec<ObjectVersion>> {
        let table: Table<ObjectVersion> = self.bucket_table(b);
        let start = crate::layout::object_prefix(b.id(), h);
        let end = crate::layout::after_object(b.id(), h);
        let mut scan = table.scan(start, end).with_page(64);
        let mut out = Vec::new();
        while let Some((_, v)) = scan.next().await? {
            if !v.purged {
                out.push(v);
            }
        }
        scan.repair_stale();
        Ok(out)
    }
}

/// Visit `objects` from `from` on, in order, as `visit` steers.
fn walk(objects: &Objects, from: &str, visit: &mut impl FnMut(&str, &[ObjectVersion]) -> Visit) {
    let mut range = objects.range::<str, _>((Bound::Included(from), Bound::Unbounded));
    // A prefix to skip key by key, when no string bounds it from above.
    let mut skip: Option<String> = None;
    while let Some((key, versions)) = range.next() {
        if let Some(p) = &skip {
            if key.starts_with(p.as_str()) {
                continue;
            }
            skip = None;
        }
        match visit(key, versions) {
            Visit::Continue => {}
            Visit::Stop => return,
            Visit::SkipPrefix(p) => {
                match metadata::db::prefix_end(p.as_bytes()).and_then(|e| String::from_utf8(e).ok())
                {
                    Some(end) => {
                        range = objects
                            .range::<str, _>((Bound::Included(end.as_str()), Bound::Unbounded));
                    }
                    None => skip = Some(p),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn objects(keys: &[&str]) -> Objects {
        keys.iter()
            .map(|k| {
                let v = ObjectVersion {
                    key: k.to_string(),
                    ..Default::default()
                };
                (k.to_string(), vec![v])
            })
            .collect()
    }

    #[test]
    fn a_walk_skips_prefixes_and_stops() {
        let o = objects(&[
            "a/1",
            "a/2",
            "b",
            "c/\u{10ffff}x",
            "c/\u{10ffff}y",
            "d",
            "e",
        ]);
        let mut seen = Vec::new();
        walk(&o, "a", &mut |k, _| {
            seen.push(k.to_string());
            match k {
                "a/1" => Visit::SkipPrefix("a/".into()),
                "c/\u{10ffff}x" => Visit::SkipPrefix("c/\u{10ffff}".into()),
                "d" => Visit::Stop,
                _ => Visit::Continue,
            }
        });
        assert_eq!(seen, ["a/1", "b", "c/\u{10ffff}x", "d"]);
    }
}
