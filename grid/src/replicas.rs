//! Metadata on replica sets: writes acknowledged by a write quorum, reads
//! and ordered scans merged from a read quorum.
//!
//! A bucket's records (versions, uploads, parts) live on `R` nodes chosen
//! by hashing the bucket id; the bucket directory lives on `R` nodes chosen
//! by hashing a fixed name. With `W + Rq > R` every read quorum meets every
//! write quorum, so a read sees the newest acknowledged write. Records are
//! never overwritten in place by an older state: every mutable record
//! carries a revision (a hybrid logical clock reading) and a delete is a
//! tombstone, so merging replies means "keep the highest revision".
//! Replicas that missed a write are repaired when a read notices (read
//! repair) and by anti-entropy (the repair daemon).

use crate::chunk_io::Grid;
use crate::node_api::{KeyValue, MetaOp};
use crate::node_client::RpcError;
use metadata::db::Table;
use metadata::placement;
use metadata::replicated::revision_of;
use std::collections::VecDeque;
use std::sync::Arc;
use tokio::task::JoinSet;

/// Where every bucket's record lives: the root replicas are chosen by
/// hashing this name.
pub const ROOT_PLACEMENT: &[u8] = b"gridstore bucket directory";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MetaError {
    #[error("metadata {op}: {acks} of {needed} replicas answered ({detail})")]
    Quorum {
        op: &'static str,
        acks: usize,
        needed: usize,
        detail: String,
    },
    #[error("metadata placement: {0}")]
    Placement(#[from] placement::PlacementError),
    /// A quorum answered, but the winning record does not decode.
    #[error("stored {what} record is unreadable: {source}")]
    Corrupt {
        what: &'static str,
        source: metadata::RecordError,
    },
}

/// The nodes holding one item's metadata and the quorums over them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaSet {
    pub nodes: Vec<String>,
    pub write_quorum: usize,
    pub read_quorum: usize,
}

impl ReplicaSet {
    /// `replicas` nodes (fewer if the map has fewer) on distinct sites
    /// where possible, chosen by hashing `item`.
    pub fn place(grid: &Grid, item: &[u8], replicas: usize) -> Result<ReplicaSet, MetaError> {
        let placeable = grid.map().nodes.iter().filter(|n| n.placeable()).count();
        let r = replicas.min(placeable).max(1);
        let nodes: Vec<String> = placement::bucket_replicas(grid.map(), item, r)?
            .into_iter()
            .map(|n| n.id.clone())
            .collect();
        let write_quorum = r / 2 + 1;
        Ok(ReplicaSet {
            nodes,
            write_quorum,
            read_quorum: r + 1 - write_quorum,
        })
    }
}

fn summarize(errors: &[(String, RpcError)]) -> String {
    if errors.is_empty() {
        return "no errors".into();
    }
    errors
        .iter()
        .map(|(n, e)| format!("{n}: {e}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Apply `ops` atomically on each replica; done once a write quorum has
/// applied them. The other replicas' writes finish in the background.
pub async fn write(grid: &Grid, set: &ReplicaSet, ops: Vec<MetaOp>) -> Result<(), MetaError> {
    let mut tasks = JoinSet::new();
    for node in &set.nodes {
        let client = grid.client(node).cloned();
        let node = node.clone();
        let ops = ops.clone();
        tasks.spawn(async move {
            let r = match client {
                Some(c) => c.meta_batch(ops).await,
                None => Err(not_in_map(&node)),
            };
            (node, r)
        });
    }
    let mut acks = 0;
    let mut errors = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let Ok((node, r)) = joined else { continue };
        match r {
            Ok(()) => {
                acks += 1;
                if acks >= set.write_quorum {
                    tasks.detach_all();
                    return Ok(());
                }
            }
            Err(e) => errors.push((node, e)),
        }
    }
    Err(MetaError::Quorum {
        op: "write",
        acks,
        needed: set.write_quorum,
        detail: summarize(&errors),
    })
}

fn not_in_map(node: &str) -> RpcError {
    RpcError::Unreachable {
        node: node.to_string(),
        reason: "not in the cluster map".into(),
    }
}

/// One key from a read quorum: each answering replica's value (None where
/// it has none), with the replica's id.
pub async fn read(
    grid: &Grid,
    set: &ReplicaSet,
    table: Table,
    key: &[u8],
) -> Result<Vec<(String, Option<Vec<u8>>)>, MetaError> {
    let mut tasks = JoinSet::new();
    for node in &set.nodes {
        let client = grid.client(node).cloned();
        let node = node.clone();
        let key = key.to_vec();
        tasks.spawn(async move {
            let r = match client {
                Some(c) => c.meta_get(table, &key).await,
                None => Err(not_in_map(&node)),
            };
            (node, r)
        });
    }
    let mut answers = Vec::new();
    let mut errors = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let Ok((node, r)) = joined else { continue };
        match r {
            Ok(v) => {
                answers.push((node, v));
                if answers.len() >= set.read_quorum {
                    // The quorum decides; a straggler could only add a
                    // replica that agrees with it or lags behind it. Its
                    // call finishes in the background (bounded by the RPC
                    // timeout): dropped mid-answer, it would take its
                    // pooled connection down with it, and the next call
                    // to that node would pay a new TLS handshake.
                    tasks.detach_all();
                    return Ok(answers);
                }
            }
            Err(e) => errors.push((node, e)),
        }
    }
    Err(MetaError::Quorum {
        op: "read",
        acks: answers.len(),
        needed: set.read_quorum,
        detail: summarize(&errors),
    })
}

/// The winner among replica answers: the highest revision, a present value
/// beating an absent one. Replicas holding something else are returned for
/// read repair.
pub fn pick_latest(
    answers: Vec<(String, Option<Vec<u8>>)>,
    table: Table,
) -> (Option<Vec<u8>>, Vec<String>) {
    let mut best: Option<(u64, Vec<u8>)> = None;
    for (_, v) in &answers {
        if let Some(v) = v {
            let Some(r) = revision_of(table, v) else {
                continue;
            };
            if best.as_ref().is_none_or(|(br, _)| r > *br) {
                best = Some((r, v.clone()));
            }
        }
    }
    let winner = best.map(|(_, v)| v);
    let stale = answers
        .into_iter()
        .filter(|(_, v)| winner.is_some() && v.as_ref() != winner.as_ref())
        .map(|(n, _)| n)
        .collect();
    (winner, stale)
}

/// Write `value` at `key` on `nodes` in the background (read repair).
pub fn repair(grid: &Grid, nodes: Vec<String>, table: Table, key: Vec<u8>, value: Vec<u8>) {
    for node in nodes {
        if let Some(c) = grid.client(&node).cloned() {
            let (key, value) = (key.clone(), value.clone());
            tokio::spawn(async move {
                if let Err(e) = c.meta_put(table, &key, value).await {
                    tracing::debug!(%node, error = %e, "read repair failed");
                }
            });
        }
    }
}

struct Cursor {
    node: String,
    buf: VecDeque<KeyValue>,
    /// Where the next page starts; `None` once the replica has no more.
    next: Option<Vec<u8>>,
}

/// An ordered scan of `[start, end)` merged over a read quorum of
/// replicas: each key once, with the value of the highest revision.
/// Pages are fetched as the merge consumes them, so memory stays at one
/// page per replica however large the range.
pub struct MergedScan {
    grid: Arc<Grid>,
    table: Table,
    end: Option<Vec<u8>>,
    page: u32,
    need: usize,
    cursors: Vec<Cursor>,
    /// Replicas that differed from the merged value, for read repair.
    pub stale: Vec<(String, Vec<u8>, Vec<u8>)>,
    /// Whether a (key, value) is authentic; asked only where replicas
    /// disagree, so a farm's made-up record neither wins by its revision
    /// nor adds a key.
    valid: Option<Validator>,
}

/// See [`MergedScan::validated_by`].
pub type Validator = Arc<dyn Fn(&[u8], &[u8]) -> bool + Send + Sync>;

impl MergedScan {
    pub fn new(
        grid: Arc<Grid>,
        set: &ReplicaSet,
        table: Table,
        start: Vec<u8>,
        end: Option<Vec<u8>>,
    ) -> Self {
        Self {
            grid,
            table,
            end,
            page: 500,
            need: set.read_quorum,
            cursors: set
                .nodes
                .iter()
                .map(|n| Cursor {
                    node: n.clone(),
                    buf: VecDeque::new(),
                    next: Some(start.clone()),
                })
                .collect(),
            stale: Vec::new(),
            valid: None,
        }
    }

    /// Check records with `valid` wherever the replicas disagree.
    pub fn validated_by(mut self, valid: Validator) -> Self {
        self.valid = Some(valid);
        self
    }

    /// Items per page asked of each replica.
    pub fn with_page(mut self, page: u32) -> Self {
        self.page = page.clamp(1, crate::node_api::MAX_ITEMS as u32);
        self
    }

    /// Continue from `start` (skipping what lies before it).
    pub fn seek(&mut self, start: Vec<u8>) {
        for c in &mut self.cursors {
            c.buf.clear();
            c.next = Some(start.clone());
        }
    }

    /// Refill every cursor whose buffer ran dry, in parallel. A replica
    /// that fails is dropped; below a read quorum the scan fails.
    async fn fill(&mut self) -> Result<(), MetaError> {
        // A replica that hung lately is left out at once while the others
        // still make a quorum.
        while self.cursors.len() > self.need {
            let Some(i) = self
                .cursors
                .iter()
                .position(|c| self.grid.is_suspect(&c.node))
            else {
                break;
            };
            self.cursors.remove(i);
        }
        let mut tasks = JoinSet::new();
        for (i, c) in self.cursors.iter().enumerate() {
            if !c.buf.is_empty() {
                continue;
            }
            let Some(start) = c.next.clone() else {
                continue;
            };
            let client = self.grid.client(&c.node).cloned();
            let node = c.node.clone();
            let (table, end, page) = (self.table, self.end.clone(), self.page);
            tasks.spawn(async move {
                let r = match client {
                    Some(cl) => cl.meta_scan(table, &start, end.as_deref(), page).await,
                    None => Err(not_in_map(&node)),
                };
                (node, (i, r))
            });
        }
        let mut failed = Vec::new();
        let mut errors = Vec::new();
        let asked: Vec<String> = self
            .cursors
            .iter()
            .filter(|c| c.buf.is_empty() && c.next.is_some())
            .map(|c| c.node.clone())
            .collect();
        // A replica far slower than the others is dropped from the scan,
        // as a failed one is, so a hung node does not stall a listing.
        let (answers, left_behind) = self
            .grid
            .join_calls(&mut tasks, &asked, |(_, r)| r.is_ok())
            .await;
        for node in left_behind {
            if let Some(i) = self.cursors.iter().position(|c| c.node == node) {
                failed.push(i);
            }
            errors.push((
                node.clone(),
                RpcError::Unreachable {
                    node,
                    reason: "far slower than the other replicas; left out of the scan".into(),
                },
            ));
        }
        for (_, (i, r)) in answers {
            match r {
                Ok(page) => {
                    let c = &mut self.cursors[i];
                    c.buf.extend(page.items);
                    c.next = page.next;
                }
                Err(e) => {
                    errors.push((self.cursors[i].node.clone(), e));
                    failed.push(i);
                }
            }
        }
        if !failed.is_empty() {
            failed.sort_unstable();
            for i in failed.into_iter().rev() {
                self.cursors.remove(i);
            }
            if self.cursors.len() < self.need {
                return Err(MetaError::Quorum {
                    op: "scan",
                    acks: self.cursors.len(),
                    needed: self.need,
                    detail: summarize(&errors),
                });
            }
        }
        Ok(())
    }

    /// The next key in order and its merged value.
    pub async fn next(&mut self) -> Result<Option<(Vec<u8>, Vec<u8>)>, MetaError> {
        loop {
            self.fill().await?;
            let Some(min) = self
                .cursors
                .iter()
                .filter_map(|c| c.buf.front().map(|kv| kv.key.clone()))
                .min()
            else {
                return Ok(None);
            };
            let mut seen: Vec<(String, Vec<u8>)> = Vec::new();
            let mut missing: Vec<String> = Vec::new();
            for c in &mut self.cursors {
                if c.buf.front().is_some_and(|kv| kv.key == min) {
                    if let Some(kv) = c.buf.pop_front() {
                        seen.push((c.node.clone(), kv.value));
                    }
                } else {
                    missing.push(c.node.clone());
                }
            }
            let agree = missing.is_empty() && seen.windows(2).all(|w| w[0].1 == w[1].1);
            let mut best: Option<(u64, Vec<u8>)> = None;
            for (node, v) in &seen {
                if !agree && self.valid.as_ref().is_some_and(|ok| !ok(&min, v)) {
                    tracing::warn!(%node, table = self.table.name(), "a replica served a record no key holder sealed; ignored");
                    continue;
                }
                let rev = revision_of(self.table, v).unwrap_or(0);
                if best.as_ref().is_none_or(|(r, _)| rev > *r) {
                    best = Some((rev, v.clone()));
                }
            }
            // Only made-up records under this key: no key at all.
            let Some((_, value)) = best else { continue };
            for (node, v) in seen {
                if v != value {
                    self.stale.push((node, min.clone(), value.clone()));
                }
            }
            for node in missing {
                self.stale.push((node, min.clone(), value.clone()));
            }
            // Bounded: repair is a courtesy, not a queue.
            self.stale.truncate(1000);
            return Ok(Some((min, value)));
        }
    }

    /// Send the merged values to the replicas that lacked them.
    pub fn repair_stale(&mut self) {
        for (node, key, value) in self.stale.drain(..) {
            repair(&self.grid, vec![node], self.table, key, value);
        }
    }
}
