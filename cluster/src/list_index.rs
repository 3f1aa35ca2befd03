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
//!
//! This module holds the indexes; reading and refreshing them through the
//! grid is `crate::listing`'s.

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
pub(crate) const MAX_CHANGES: u32 = 10_000;

/// Objects of one bucket by key: the versions that are not purged, newest
/// first, without their chunk lists.
pub(crate) type Objects = BTreeMap<String, Vec<ObjectVersion>>;

pub(crate) struct BucketIndex {
    /// The replica set the positions belong to.
    pub(crate) replicas: Vec<String>,
    /// Per replica: feed id and position.
    pub(crate) positions: HashMap<String, (u64, u64)>,
    pub(crate) objects: Objects,
    pub(crate) by_hash: HashMap<[u8; NAME_HASH_LEN], String>,
    pub(crate) last_used: Instant,
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
    pub(crate) fn slot(&self, bucket_id: &[u8]) -> Slot {
        let mut map = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(bucket_id.to_vec()).or_default().clone()
    }

    /// Keep the total under the budget: drop the least recently used
    /// indexes (not `keep`, the one in use).
    pub(crate) fn trim(&self, keep: &[u8]) {
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

pub(crate) fn slim(mut v: ObjectVersion) -> ObjectVersion {
    v.chunks = Vec::new();
    v.inline_data = Vec::new();
    v
}

/// Visit `objects` from `from` on, in order, as `visit` steers.
pub(crate) fn walk(
    objects: &Objects,
    from: &str,
    visit: &mut impl FnMut(&str, &[ObjectVersion]) -> Visit,
) {
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
