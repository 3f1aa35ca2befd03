//! Listing objects and versions: prefix, delimiter (common prefixes),
//! markers and page sizes as S3 defines them.
//!
//! Record keys carry object keys only as keyed hashes, so nodes cannot
//! order them: listings walk the gateway's ordered index of the bucket
//! (`crate::list_index`), kept current from the replicas' change feeds.
//! Uploads, which are few, are listed from a full read of the bucket's
//! upload records into a bounded ordered set ([`FirstItems`]).

use crate::error::{Error, Result};
use crate::layout;
use crate::list_index::{
    slim, walk, BucketIndex, Objects, Visit, MAX_CHANGES, MAX_INDEXED_OBJECTS,
};
use crate::objects::{info_of, ObjectInfo};
use crate::store::BucketRef;
use crate::store::{BucketHandle, ObjectStore};
use crate::version_id::VersionId;
use grid::node_api::ChangesReply;
use grid::table::Table;
use metadata::db::Table as DbTable;
use metadata::model::ObjectVersion;
use metadata::sealed::NAME_HASH_LEN;
use std::collections::BTreeMap;
use std::collections::HashMap;
use std::time::Instant;

/// Most keys one page may return (S3's limit).
pub const MAX_KEYS: usize = 1000;

#[derive(Debug, Clone, Default)]
pub struct ListObjectsParams {
    pub prefix: String,
    pub delimiter: Option<String>,
    /// Start after this key (ListObjects' marker, V2's start-after or the
    /// decoded continuation token).
    pub start_after: Option<String>,
    /// Clamped to 1000.
    pub max_keys: usize,
}

#[derive(Debug, Clone, Default)]
pub struct ListObjectsPage {
    pub objects: Vec<ObjectInfo>,
    pub common_prefixes: Vec<String>,
    pub is_truncated: bool,
    /// The last key or common prefix returned: where the next page starts.
    pub next_start_after: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct ListVersionsParams {
    pub prefix: String,
    pub delimiter: Option<String>,
    pub key_marker: Option<String>,
    pub version_id_marker: Option<String>,
    pub max_keys: usize,
}

#[derive(Debug, Clone, Default)]
pub struct ListVersionsPage {
    /// Versions and delete markers, by key, newest first within a key.
    pub versions: Vec<ObjectInfo>,
    pub common_prefixes: Vec<String>,
    pub is_truncated: bool,
    pub next_key_marker: Option<String>,
    pub next_version_id_marker: Option<String>,
}

/// The common prefix `key` rolls up into, if any.
pub(crate) fn common_prefix(prefix: &str, delimiter: Option<&str>, key: &str) -> Option<String> {
    let d = delimiter.filter(|d| !d.is_empty())?;
    let rest = key.get(prefix.len()..)?;
    let i = rest.find(d)?;
    Some(format!("{prefix}{}", &rest[..i + d.len()]))
}

/// The first `max` items of a listing, in order, out of items met in any
/// order: records are keyed by name hashes, so a listing reads the
/// bucket's records in hash order and keeps only what the page can still
/// use (at most `max + 1` items, the extra one saying "truncated").
pub(crate) struct FirstItems<K, V> {
    max: usize,
    items: BTreeMap<K, V>,
}

impl<K: Ord, V> FirstItems<K, V> {
    pub(crate) fn new(max: usize) -> Self {
        Self {
            max,
            items: BTreeMap::new(),
        }
    }

    /// Offer an item, made only if the page can use it; an equal key
    /// already held is kept (common prefixes arrive once per key under
    /// them).
    pub(crate) fn offer(&mut self, key: K, make: impl FnOnce() -> V) {
        if self.items.len() > self.max
            && self.items.last_key_value().is_some_and(|(k, _)| key >= *k)
        {
            return;
        }
        self.items.entry(key).or_insert_with(make);
        if self.items.len() > self.max + 1 {
            self.items.pop_last();
        }
    }

    /// Whether the page and the one item that says "truncated" are held:
    /// for items offered in order, nothing later can make the page.
    pub(crate) fn is_full(&self) -> bool {
        self.items.len() > self.max
    }

    /// The items of the page in order, and whether more followed.
    pub(crate) fn finish(mut self) -> (Vec<(K, V)>, bool) {
        let truncated = self.items.len() > self.max;
        if truncated {
            self.items.pop_last();
        }
        (self.items.into_iter().collect(), truncated)
    }
}

/// Whether a listing that resumes after `marker` has passed `key`: keys up
/// to the marker, and every key under it when the marker is a common
/// prefix (a key ending with the delimiter always rolls up into one).
fn before_resume(prefix: &str, delimiter: Option<&str>, marker: &str, key: &str) -> bool {
    key <= marker
        || (key.starts_with(marker)
            && common_prefix(prefix, delimiter, marker).as_deref() == Some(marker))
}

enum Listed<T> {
    Prefix,
    Item(T),
}

impl ObjectStore {
    /// Call `each` with every object of `b` that has versions left: its
    /// versions that are not purged, newest first. Objects come in hash
    /// order; the bucket is read a page at a time from a read quorum.
    pub(crate) async fn for_each_object(
        &self,
        b: &BucketHandle,
        mut each: impl FnMut(&[ObjectVersion]),
    ) -> Result<()> {
        let (start, end) = layout::bucket_range(b.id());
        let mut scan = self
            .bucket_table::<ObjectVersion>(b)
            .scan(start, end)
            .with_page(1000);
        let object_len = b.id().len() + NAME_HASH_LEN;
        let mut object: Vec<u8> = Vec::new();
        let mut versions: Vec<ObjectVersion> = Vec::new();
        while let Some((raw, v)) = scan.next().await? {
            let this = raw.get(..object_len).unwrap_or(&raw);
            if this != object.as_slice() {
                if !versions.is_empty() {
                    each(&versions);
                    versions.clear();
                }
                object = this.to_vec();
            }
            if !v.purged {
                versions.push(v);
            }
        }
        if !versions.is_empty() {
            each(&versions);
        }
        scan.repair_stale();
        Ok(())
    }

    pub async fn list_objects(
        &self,
        bucket: impl Into<BucketRef<'_>>,
        params: &ListObjectsParams,
    ) -> Result<ListObjectsPage> {
        let b = self.bucket(bucket).await?;
        let max = params.max_keys.min(MAX_KEYS);
        let mut page = ListObjectsPage::default();
        if max == 0 {
            return Ok(page);
        }
        let prefix = params.prefix.as_str();
        let delimiter = params.delimiter.as_deref();
        let marker = params.start_after.as_deref();
        let from = marker.map_or(prefix, |m| m.max(prefix));
        let mut first = FirstItems::new(max);
        self.visit_objects(&b, from, |key, versions| {
            if !key.starts_with(prefix) {
                return Visit::Stop;
            }
            if let Some(m) = marker {
                if before_resume(prefix, delimiter, m, key) {
                    return match key.starts_with(m) && key != m {
                        true => Visit::SkipPrefix(m.to_string()),
                        false => Visit::Continue,
                    };
                }
            }
            let latest = &versions[0];
            if latest.delete_marker {
                return Visit::Continue;
            }
            let next = match common_prefix(prefix, delimiter, key) {
                Some(cp) => {
                    first.offer(cp.clone(), || Listed::Prefix);
                    Visit::SkipPrefix(cp)
                }
                None => {
                    first.offer(key.to_string(), || Listed::Item(info_of(latest, true)));
                    Visit::Continue
                }
            };
            if first.is_full() {
                Visit::Stop
            } else {
                next
            }
        })
        .await?;
        let (items, truncated) = first.finish();
        page.is_truncated = truncated;
        if truncated {
            page.next_start_after = items.last().map(|(k, _)| k.clone());
        }
        for (name, item) in items {
            match item {
                Listed::Prefix => page.common_prefixes.push(name),
                Listed::Item(info) => page.objects.push(info),
            }
        }
        Ok(page)
    }

    pub async fn list_object_versions(
        &self,
        bucket: impl Into<BucketRef<'_>>,
        params: &ListVersionsParams,
    ) -> Result<ListVersionsPage> {
        let b = self.bucket(bucket).await?;
        let max = params.max_keys.min(MAX_KEYS);
        let mut page = ListVersionsPage::default();
        if max == 0 {
            return Ok(page);
        }
        let prefix = params.prefix.as_str();
        let delimiter = params.delimiter.as_deref();
        // With a version id marker the listing resumes after that version
        // of the key marker (older versions of it follow); without one,
        // after the key marker as in ListObjects.
        let version_marker = match (
            &params.key_marker,
            params
                .version_id_marker
                .as_deref()
                .filter(|v| !v.is_empty()),
        ) {
            (Some(km), Some(vm)) => {
                let vid = if vm == "null" {
                    self.versions_of(&b, km)
                        .await?
                        .iter()
                        .find(|v| v.null_version)
                        .and_then(|v| VersionId::from_slice(&v.version_id))
                } else {
                    VersionId::from_text(vm)
                };
                Some(vid.ok_or_else(|| {
                    Error::InvalidArgument(format!("invalid version id marker {vm:?}"))
                })?)
            }
            _ => None,
        };
        let key_marker = params.key_marker.as_deref();
        let from = key_marker.map_or(prefix, |m| m.max(prefix));
        let mut first = FirstItems::new(max);
        self.visit_objects(&b, from, |key, versions| {
            if !key.starts_with(prefix) {
                return Visit::Stop;
            }
            let cp = common_prefix(prefix, delimiter, key);
            for (i, v) in versions.iter().enumerate() {
                if let Some(km) = key_marker {
                    let passed = match &version_marker {
                        Some(vm) => key < km || (key == km && v.version_id.as_slice() >= &vm.0[..]),
                        None => before_resume(prefix, delimiter, km, key),
                    };
                    if passed {
                        continue;
                    }
                }
                match &cp {
                    Some(cp) => {
                        first.offer((cp.clone(), Vec::new()), || Listed::Prefix);
                        return match first.is_full() {
                            true => Visit::Stop,
                            false => Visit::SkipPrefix(cp.clone()),
                        };
                    }
                    None => {
                        let newest_first: Vec<u8> = v.version_id.iter().map(|b| !b).collect();
                        first.offer((key.to_string(), newest_first), || {
                            Listed::Item(info_of(v, i == 0))
                        });
                        if first.is_full() {
                            return Visit::Stop;
                        }
                    }
                }
            }
            Visit::Continue
        })
        .await?;
        let (items, truncated) = first.finish();
        page.is_truncated = truncated;
        for ((name, _), item) in items {
            match item {
                Listed::Prefix => {
                    page.next_key_marker = Some(name.clone());
                    page.next_version_id_marker = None;
                    page.common_prefixes.push(name);
                }
                Listed::Item(info) => {
                    page.next_key_marker = Some(name);
                    page.next_version_id_marker = Some(info.version_id.clone());
                    page.versions.push(info);
                }
            }
        }
        if !page.is_truncated {
            page.next_key_marker = None;
            page.next_version_id_marker = None;
        }
        Ok(page)
    }
}

/// Keeping the gateway's listing indexes (`crate::list_index`) current.
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
                Ok(ix) => ix,
                Err(objects) => {
                    // Not kept: an ordered pass over the full read made.
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

    /// A new index of `b`, or, when none can be kept (no read quorum of
    /// feed positions, or too many objects), the objects of the full read
    /// it made, for this one listing.
    async fn build_index(
        &self,
        b: &BucketHandle,
    ) -> Result<std::result::Result<BucketIndex, Objects>> {
        // Positions are read before the objects: a write the read misses
        // is after them.
        let positions = self.feed_positions(b).await;
        let objects = self.read_objects(b).await?;
        let Some(positions) = positions.filter(|_| objects.len() <= MAX_INDEXED_OBJECTS / 2) else {
            return Ok(Err(objects));
        };
        let by_hash = objects.keys().map(|k| (b.key_hash(k), k.clone())).collect();
        Ok(Ok(BucketIndex {
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
