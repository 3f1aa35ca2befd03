//! Metadata anti-entropy: the replicas of each bucket's records (and of the
//! root records: buckets, users, locks) converge after one of them missed
//! writes while it was down, or joined the replica set after a map change.
//!
//! Each node, for every group of records it is a replica of under its map,
//! compares each table's range with every other replica by digests:
//! one BLAKE3 over the range's keys and values from each side. Equal: done,
//! at the cost of two hashes on the wire. Different: the range is split
//! at 16 of this node's own keys and the sub-ranges compared the same way,
//! down to ranges of at most [`LEAF`] records here, which are merged record
//! by record. So nothing is copied when nothing differs, and about
//! log16(records) round trips find each difference.
//!
//! A merge keeps the record with the higher revision on both sides (equal
//! revisions with different bytes, which writers never produce, resolve to
//! the greater hash so both sides agree), written with compare-and-set so
//! a gateway's concurrent write is never overwritten by an older one.
//! Deletes are tombstone records and travel like any other; a record one
//! replica purged for good (an expired lock tombstone, the parts of a
//! closed upload) may come back from a replica that still has it until the
//! next purge removes it again.

use crate::node::{Node, NodeError};
use crate::repair::{blocking, fail, grid_of};
use grid::node_api::{KeyValue, RangeDigest};
use grid::replicas::ReplicaSet;
use grid::replicas::ROOT_PLACEMENT;
use grid::NodeClient;
use metadata::db::{prefix_end, Table};
use metadata::model::BUCKET_ID_LEN;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Ranges with at most this many records here are merged record by record.
pub const LEAF: u64 = 128;
/// Sub-ranges a differing range is split into.
const FANOUT: usize = 16;
/// Records read from a peer per call while merging.
const PAGE: u32 = 500;
/// Splitting stops this deep (16^6 ranges is far more than any table).
const MAX_DEPTH: u32 = 6;

/// Tables kept on the root replicas, whole.
const ROOT_TABLES: [Table; 5] = [
    Table::Buckets,
    Table::Users,
    Table::Locks,
    Table::Jobs,
    Table::JobTasks,
];
/// Tables keyed by bucket id, kept on that bucket's replicas.
const BUCKET_TABLES: [Table; 3] = [Table::Versions, Table::Uploads, Table::Parts];

/// What one anti-entropy pass found and did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// (group, peer) pairs compared.
    pub pairs: u64,
    /// Digest calls made.
    pub digests: u64,
    /// Records this node took from peers.
    pub pulled: u64,
    /// Records this node gave to peers.
    pub pushed: u64,
    /// Records peers served that the owner did not sign, left alone.
    pub refused: u64,
}

/// One table's key range `[start, end)` (`end` absent: the table's end).
type Range = (Table, Vec<u8>, Option<Vec<u8>>);
/// This node's and the peer's record of one key.
type Pair = (Option<Vec<u8>>, Option<Vec<u8>>);

impl Node {
    /// Visit every record of `table` in `[start, end)` in key order.
    fn each_in_range(
        &self,
        table: Table,
        start: &[u8],
        end: Option<&[u8]>,
        mut f: impl FnMut(&[u8], &[u8]),
    ) -> Result<(), NodeError> {
        let mut pos = start.to_vec();
        loop {
            let page = self.db.scan(table, &pos, end, 1000)?;
            for (k, v) in &page.items {
                f(k, v);
            }
            match page.next {
                Some(n) => pos = n,
                None => return Ok(()),
            }
        }
    }

    /// Digests of `[starts[i], starts[i + 1])`, the last up to `end` (the
    /// `meta:digest` call).
    pub fn range_digests(
        &self,
        table: Table,
        starts: &[Vec<u8>],
        end: Option<&[u8]>,
    ) -> Result<Vec<RangeDigest>, NodeError> {
        let mut out = Vec::with_capacity(starts.len());
        for (i, start) in starts.iter().enumerate() {
            let stop = starts.get(i + 1).map(Vec::as_slice).or(end);
            let mut h = blake3::Hasher::new();
            let mut count = 0u64;
            self.each_in_range(table, start, stop, |k, v| {
                count += 1;
                h.update(&(k.len() as u64).to_le_bytes());
                h.update(k);
                h.update(&(v.len() as u64).to_le_bytes());
                h.update(v);
            })?;
            out.push(RangeDigest {
                count,
                hash: h.finalize().as_bytes().to_vec(),
            });
        }
        Ok(out)
    }

    /// `start` and up to `parts - 1` of this node's keys in `(start, end)`
    /// that cut the range into parts of about equal record counts.
    fn split_range(
        &self,
        table: Table,
        start: &[u8],
        end: Option<&[u8]>,
        count: u64,
        parts: usize,
    ) -> Result<Vec<Vec<u8>>, NodeError> {
        let step = (count / parts as u64).max(1);
        let mut starts = vec![start.to_vec()];
        let mut seen = 0u64;
        self.each_in_range(table, start, end, |k, _| {
            if seen > 0 && seen.is_multiple_of(step) && starts.len() < parts && k > start {
                starts.push(k.to_vec());
            }
            seen += 1;
        })?;
        Ok(starts)
    }

    /// The bucket ids this node holds records of in `table`.
    fn bucket_ids(&self, table: Table) -> Result<Vec<Vec<u8>>, NodeError> {
        let mut ids = Vec::new();
        let mut pos: Vec<u8> = Vec::new();
        loop {
            let page = self.db.scan(table, &pos, None, 1)?;
            let Some((k, _)) = page.items.first() else {
                return Ok(ids);
            };
            if k.len() < BUCKET_ID_LEN {
                // Not a bucket-keyed record; step past it.
                pos = k.clone();
                pos.push(0);
                continue;
            }
            let id = k[..BUCKET_ID_LEN].to_vec();
            match prefix_end(&id) {
                Some(next) => pos = next,
                None => {
                    ids.push(id);
                    return Ok(ids);
                }
            }
            ids.push(id);
        }
    }
}

/// One anti-entropy pass: every group this node replicates, with every
/// other replica. `replicas` must be the gateways' `metadata_replicas`.
pub async fn sync_pass(
    node: &Arc<Node>,
    replicas: usize,
    stop: &AtomicBool,
) -> Result<SyncReport, NodeError> {
    let mut report = SyncReport::default();
    let n = node.clone();
    let Some(map) = blocking(move || Ok(n.cluster_map()?)).await? else {
        return Ok(report);
    };
    let grid = grid_of(node, map);
    let mut groups: Vec<(Vec<u8>, Vec<Range>)> = vec![(
        ROOT_PLACEMENT.to_vec(),
        ROOT_TABLES.iter().map(|t| (*t, Vec::new(), None)).collect(),
    )];
    let n = node.clone();
    let ids = blocking(move || {
        let mut ids = std::collections::BTreeSet::new();
        for t in BUCKET_TABLES {
            ids.extend(n.bucket_ids(t)?);
        }
        Ok(ids)
    })
    .await?;
    for id in ids {
        let end = prefix_end(&id);
        let ranges = BUCKET_TABLES
            .iter()
            .map(|t| (*t, id.clone(), end.clone()))
            .collect();
        groups.push((id, ranges));
    }
    for (item, ranges) in groups {
        let Ok(set) = ReplicaSet::place(&grid, &item, replicas) else {
            continue;
        };
        if !set.nodes.contains(&node.id) {
            continue;
        }
        for peer in set.nodes.iter().filter(|p| **p != node.id) {
            if stop.load(Ordering::Relaxed) {
                return Ok(report);
            }
            let Some(client) = grid.client(peer) else {
                continue;
            };
            report.pairs += 1;
            for (table, start, end) in &ranges {
                let r = sync_range(
                    node,
                    client,
                    *table,
                    start.clone(),
                    end.clone(),
                    0,
                    &mut report,
                )
                .await;
                if let Err(e) = r {
                    // Down or unreachable: the next pass tries again.
                    tracing::debug!(%peer, table = table.name(), error = %e, "anti-entropy skipped a peer");
                    break;
                }
            }
        }
    }
    Ok(report)
}

type Step<'a> = Pin<Box<dyn Future<Output = Result<(), NodeError>> + Send + 'a>>;

/// Make `[start, end)` of `table` agree between this node and `peer`.
fn sync_range<'a>(
    node: &'a Arc<Node>,
    peer: &'a NodeClient,
    table: Table,
    start: Vec<u8>,
    end: Option<Vec<u8>>,
    depth: u32,
    report: &'a mut SyncReport,
) -> Step<'a> {
    Box::pin(async move {
        let (n, s, e) = (node.clone(), start.clone(), end.clone());
        let mine = blocking(move || n.range_digests(table, &[s], e.as_deref())).await?;
        let theirs = peer
            .meta_digest(table, vec![start.clone()], end.clone())
            .await
            .map_err(fail)?;
        report.digests += 1;
        if mine == theirs {
            return Ok(());
        }
        let here = mine.first().map_or(0, |d| d.count);
        if here <= LEAF || depth >= MAX_DEPTH {
            return merge_range(node, peer, table, start, end, report).await;
        }
        let (n, s, e) = (node.clone(), start.clone(), end.clone());
        let (starts, mine) = blocking(move || {
            let starts = n.split_range(table, &s, e.as_deref(), here, FANOUT)?;
            let mine = n.range_digests(table, &starts, e.as_deref())?;
            Ok((starts, mine))
        })
        .await?;
        let theirs = peer
            .meta_digest(table, starts.clone(), end.clone())
            .await
            .map_err(fail)?;
        report.digests += 1;
        for (i, (a, b)) in mine.iter().zip(&theirs).enumerate() {
            if a != b {
                let stop = starts.get(i + 1).cloned().or_else(|| end.clone());
                sync_range(
                    node,
                    peer,
                    table,
                    starts[i].clone(),
                    stop,
                    depth + 1,
                    report,
                )
                .await?;
            }
        }
        Ok(())
    })
}

/// Merge every record of `[start, end)` between this node and `peer`, the
/// peer's side read a page at a time.
async fn merge_range(
    node: &Arc<Node>,
    peer: &NodeClient,
    table: Table,
    start: Vec<u8>,
    end: Option<Vec<u8>>,
    report: &mut SyncReport,
) -> Result<(), NodeError> {
    let mut pos = start;
    loop {
        let page = peer
            .meta_scan(table, &pos, end.as_deref(), PAGE)
            .await
            .map_err(fail)?;
        let upto = page.next.clone().or_else(|| end.clone());
        let (n, p, u) = (node.clone(), pos.clone(), upto.clone());
        let local: Vec<(Vec<u8>, Vec<u8>)> = blocking(move || {
            let mut v = Vec::new();
            n.each_in_range(table, &p, u.as_deref(), |k, val| {
                v.push((k.to_vec(), val.to_vec()))
            })?;
            Ok(v)
        })
        .await?;
        merge_page(node, peer, table, local, page.items, report).await?;
        match page.next {
            Some(next) => pos = next,
            None => return Ok(()),
        }
    }
}

async fn merge_page(
    node: &Arc<Node>,
    peer: &NodeClient,
    table: Table,
    local: Vec<(Vec<u8>, Vec<u8>)>,
    remote: Vec<KeyValue>,
    report: &mut SyncReport,
) -> Result<(), NodeError> {
    // key -> (this node's record, the peer's record)
    let mut both: BTreeMap<Vec<u8>, Pair> = BTreeMap::new();
    for (k, v) in local {
        both.entry(k).or_default().0 = Some(v);
    }
    for kv in remote {
        both.entry(kv.key).or_default().1 = Some(kv.value);
    }
    // What a peer hands over is taken only if the owner signed it: a farm
    // serving made-up records must not spread them (see `metadata::sealed`).
    let n = node.clone();
    let owner = blocking(move || Ok(n.owner_key()?))
        .await?
        .unwrap_or_default();
    for (key, (mine, theirs)) in both {
        let theirs = match theirs {
            Some(t) if metadata::sealed::verify_signed(table, &key, &t, &owner).is_err() => {
                report.refused += 1;
                tracing::warn!(
                    table = table.name(),
                    "a peer served a record the owner did not sign; not taken"
                );
                None
            }
            t => t,
        };
        let take = match (&mine, &theirs) {
            (Some(a), Some(b)) if a == b => continue,
            (Some(a), Some(b)) => !metadata::replicated::newer(table, a, b),
            (None, Some(_)) => true,
            (Some(_), None) => false,
            (None, None) => continue,
        };
        if take {
            let (n, k, expected, new) = (node.clone(), key.clone(), mine.clone(), theirs.clone());
            let swapped = blocking(move || {
                Ok(n.db.compare_and_set(table, &k, expected.as_deref(), new.as_deref())?)
            })
            .await?;
            if swapped {
                report.pulled += 1;
            }
        } else {
            let r = peer
                .meta_cas(table, &key, theirs.clone(), mine.clone())
                .await
                .map_err(fail)?;
            if r.swapped {
                report.pushed += 1;
            }
        }
    }
    Ok(())
}
