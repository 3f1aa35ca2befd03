//! Storage audits, the gateway's side: challenge nodes for random slices of
//! shards placement says they hold, check the proofs against the checksums
//! writers recorded, and stop trusting a node that keeps failing.
//!
//! What is challenged: each round reads a page of chunk references, from a
//! random point of the key space, from every node; for each chunk, shard
//! `i`'s home under the current map is due to prove it, with the checksum
//! taken from a reference held by a node *other* than the one challenged
//! (the challenged node may lie about its own copy) and, where a third
//! holder exists, confirmed by it, so one lying node cannot frame another.
//! The node proves a random slice of the shard's checksummed bytes with a
//! bao proof (`codec::audit`), which verifies only against that checksum.
//!
//! What counts: a proof that does not verify, a refusal, a server error or
//! a time-out is a failed challenge. "Not found" is first a repair hint to
//! the node, and the same shard is asked for again after a few rounds: an
//! honest node that had lost it (or had not yet received it) has rebuilt it
//! by then; still "not found" is a failure. A node that could not be
//! reached at all is skipped (liveness marks it down and repair works
//! around it). A
//! node with `fail_threshold` failures within its last `window_rounds`
//! rounds is made [`NodeState::Untrusted`] by a membership change; the
//! nodes then rebuild its shards elsewhere as for a lost node.
//!
//! What is not challenged, so an honest node is not blamed for a shard on
//! its way to it: chunks written less than `settle` ago (a write may have
//! fallen back to another node), and shards whose home moved within
//! `settle` (reconciliation is still bringing them). A round that would
//! condemn more than half of the nodes it audited condemns none: that is
//! far likelier a fault of the auditor's than of half the farms at once.

use crate::store::ObjectStore;
use codec::ChunkId;
use grid::chunk_io::Grid;
use grid::node_api::RefQuery;
use grid::RpcError;
use metadata::model::{ChunkReference, ClusterMap, NodeState};
use metadata::ShardKey;
use rand::seq::SliceRandom;
use rand::{Rng, RngCore};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How often and how hard nodes are audited.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    /// Time between rounds (and the audit lease's renewal period).
    pub every: Duration,
    /// Challenges per node per round, at most (fewer when the references
    /// read name fewer of its shards).
    pub samples_per_node: usize,
    /// Bytes of shard proved per challenge (at most
    /// `codec::audit::MAX_SLICE_LEN`).
    pub slice_len: u64,
    /// Failed challenges within a node's last `window_rounds` rounds that
    /// make it untrusted.
    pub fail_threshold: u32,
    pub window_rounds: usize,
    /// Chunks younger than this, and shards whose home moved more recently,
    /// are not challenged.
    pub settle: Duration,
    /// References read from each node per round to choose from.
    pub refs_per_node: u32,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            every: Duration::from_secs(600),
            samples_per_node: 8,
            slice_len: 4096,
            fail_threshold: 3,
            window_rounds: 6,
            settle: Duration::from_secs(3600),
            refs_per_node: 256,
        }
    }
}

/// One node's results in a round.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeAudit {
    pub node: String,
    pub passed: u32,
    pub failed: u32,
    /// Challenges not answered at all (node unreachable).
    pub skipped: u32,
    /// Shards the node said it lacks for the first time: it is told to
    /// repair them and asked again after the recheck delay, when "not
    /// held" counts as a failure.
    pub rechecking: u32,
    /// Why challenges failed, the first few.
    pub failures: Vec<String>,
    /// Failures within its last `window_rounds` rounds, this one included.
    pub recent_failures: u32,
    /// Made untrusted by this round.
    pub untrusted: bool,
}

/// What one round did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditReport {
    /// Whether this gateway held the audit lease (only for the loop; a
    /// round run by hand always audits).
    pub held: bool,
    /// Map epoch audited against.
    pub epoch: u64,
    /// Every node that was due a challenge, by id.
    pub nodes: Vec<NodeAudit>,
    /// Set when the round found too many nodes failing to believe it.
    pub withheld: Option<String>,
}

/// A shard a node is due to prove.
#[derive(Debug, Clone)]
struct Challenge {
    node: String,
    key: ShardKey,
    root: [u8; 32],
    shard_len: u64,
    /// Shards of the chunk (k + m).
    total: usize,
    /// The reference that named the checksum: given to a node that says
    /// it lacks the shard, so it knows to rebuild it.
    reference: ChunkReference,
    /// Who vouched for `root`.
    source: String,
}

enum Outcome {
    Passed,
    Failed(String),
    /// "Not found": a failure only if it persists (see `recheck`).
    Missing,
    Skipped,
}

/// Runs rounds; keeps each node's recent failures between them.
pub struct Auditor {
    store: ObjectStore,
    cfg: AuditConfig,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Failures per round, newest last, per node.
    history: HashMap<String, VecDeque<u32>>,
    /// Maps seen, with when each was first seen, oldest first.
    maps: VecDeque<(Instant, ClusterMap)>,
    /// Shards a node said it lacks, by (node, shard name): when it first
    /// said so, and the challenge to repeat.
    pending: HashMap<(String, String), (Instant, Challenge)>,
}

impl Auditor {
    pub fn new(store: ObjectStore, cfg: AuditConfig) -> Self {
        Self {
            store,
            cfg,
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Run a round every `cfg.every` until the task is dropped, when this
    /// gateway holds the audit lease (one gateway of a grid audits at a
    /// time, so nodes are not challenged once per gateway).
    pub async fn run(self, holder: String) {
        let mut tick = tokio::time::interval(self.cfg.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match self.store.hold_duty("audit", &holder, self.cfg.every).await {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "audit lease unreadable; retried next round");
                    continue;
                }
            }
            let r = self.audit_once().await;
            for n in r.nodes.iter().filter(|n| n.failed > 0) {
                tracing::warn!(node = %n.node, failed = n.failed, passed = n.passed,
                    recent = n.recent_failures, why = ?n.failures, "storage audit failures");
            }
            tracing::debug!(epoch = r.epoch, nodes = r.nodes.len(), "audit round");
        }
    }

    /// One round now: challenge every up node, record the results, mark
    /// the nodes past the threshold untrusted.
    pub async fn audit_once(&self) -> AuditReport {
        let grid = self.store.grid();
        // The newest map the nodes hold: an admin tool's own map may be old.
        let map = match grid::membership::current_map(&grid, &self.store.owner_key()).await {
            Ok(m) if m.epoch >= grid.map().epoch => m,
            _ => grid.map().clone(),
        };
        let grid = grid.with_map(map.clone());
        let settled = self.settled_map(&map);
        let settled = grid.with_map(settled);
        let mut report = AuditReport {
            held: true,
            epoch: map.epoch,
            ..AuditReport::default()
        };
        let mut due = self.challenges(&grid, &settled).await;
        self.add_rechecks(&grid, &mut due);
        let results = futures_util::future::join_all(
            due.into_iter()
                .map(|(node, cs)| self.challenge_node(&grid, node, cs)),
        )
        .await;
        let mut condemned = Vec::new();
        let mut hints = Vec::new();
        {
            let mut st = self.state();
            let recheck = self.recheck_after();
            for (mut n, passed, missing) in results {
                for key in passed {
                    st.pending.remove(&(n.node.clone(), key.to_name()));
                }
                for c in missing {
                    let id = (n.node.clone(), c.key.to_name());
                    match st.pending.get(&id) {
                        Some((first, _)) if first.elapsed() >= recheck => {
                            n.failed += 1;
                            if n.failures.len() < 4 {
                                n.failures.push(format!(
                                    "shard {}: not held, {} s after it was first asked for",
                                    c.key.to_name(),
                                    first.elapsed().as_secs()
                                ));
                            }
                            st.pending.remove(&id);
                        }
                        Some(_) => n.rechecking += 1,
                        None => {
                            n.rechecking += 1;
                            hints.push((n.node.clone(), c.clone()));
                            st.pending.insert(id, (Instant::now(), c));
                        }
                    }
                }
                let h = st.history.entry(n.node.clone()).or_default();
                h.push_back(n.failed);
                while h.len() > self.cfg.window_rounds.max(1) {
                    h.pop_front();
                }
                n.recent_failures = h.iter().sum();
                if n.recent_failures >= self.cfg.fail_threshold.max(1) {
                    condemned.push(n.node.clone());
                }
                self.store.audit_stats().add(&n.node, n.passed, n.failed);
                report.nodes.push(n);
            }
        }
        // An honest node told of a shard it lacks rebuilds it at once; it
        // is given the reference too, in case it never had it (then it
        // could not know the shard was its to hold).
        for (node, ch) in hints {
            if let Some(c) = grid.client(&node) {
                let told = match c.refs_add(vec![ch.reference.clone()]).await {
                    Ok(()) => c.repair_hint(&[ch.key], false).await,
                    Err(e) => Err(e),
                };
                if let Err(e) = told {
                    tracing::debug!(%node, error = %e, "audit repair hint not delivered");
                }
            }
        }
        if !condemned.is_empty() && condemned.len() * 2 > report.nodes.len() {
            let why = format!(
                "{} of {} audited nodes failed past the threshold: suspecting the audit, \
                 not the farms; none marked untrusted",
                condemned.len(),
                report.nodes.len()
            );
            tracing::error!("{why}");
            report.withheld = Some(why);
            condemned.clear();
        }
        for id in condemned {
            let Some(n) = report.nodes.iter_mut().find(|n| n.node == id) else {
                continue;
            };
            let reason = format!(
                "failed {} storage audit challenges in its last {} audit rounds (last: {})",
                n.recent_failures,
                self.cfg.window_rounds.max(1),
                n.failures.first().map_or("-", String::as_str)
            );
            let change = grid::membership::Change::Untrust {
                node: id.clone(),
                reason: reason.clone(),
            };
            match grid::membership::apply(&grid, &self.store.owner_key(), change).await {
                Ok(m) => {
                    tracing::error!(node = %id, epoch = m.epoch, %reason, "node marked untrusted");
                    n.untrusted = true;
                    let mut st = self.state();
                    st.history.remove(&id);
                    st.pending.retain(|(node, _), _| *node != id);
                    self.store.set_map(m);
                }
                Err(e) => tracing::error!(node = %id, error = %e, "cannot mark node untrusted"),
            }
        }
        report
    }

    /// The map homes must have had `settle` ago too for a shard to be
    /// challenged: the newest one seen at least that long ago, or the
    /// oldest seen when the auditor is younger than that.
    fn settled_map(&self, map: &ClusterMap) -> ClusterMap {
        let now = Instant::now();
        let mut st = self.state();
        if st.maps.back().is_none_or(|(_, m)| m.epoch < map.epoch) {
            st.maps.push_back((now, map.clone()));
        }
        let settled_at = now.checked_sub(self.cfg.settle);
        // Keep one map from before the settle window, and those after.
        while st.maps.len() > 1
            && settled_at.is_some_and(|t| st.maps.get(1).is_some_and(|(seen, _)| *seen <= t))
        {
            st.maps.pop_front();
        }
        // The front is now the newest map seen at or before `settled_at`,
        // or the oldest seen when none was seen that early.
        st.maps
            .front()
            .map_or_else(|| map.clone(), |(_, m)| m.clone())
    }

    /// What each up node is due to prove this round.
    async fn challenges(&self, grid: &Grid, settled: &Grid) -> BTreeMap<String, Vec<Challenge>> {
        let map = grid.map();
        let up: HashSet<&str> = map
            .nodes
            .iter()
            .filter(|n| n.state == NodeState::Up as i32)
            .map(|n| n.id.as_str())
            .collect();
        let now_ms = grid::clock::now_ms();
        let settle_ms = self.cfg.settle.as_millis() as u64;
        let pages = map
            .nodes
            .iter()
            .filter(|n| n.state == NodeState::Up as i32 || n.state == NodeState::Draining as i32)
            .filter_map(|n| Some((n.id.clone(), grid.client(&n.id)?.clone())))
            .map(|(id, c)| async move {
                let refs = random_refs(&c, self.cfg.refs_per_node).await;
                (id, refs)
            });
        let pages = futures_util::future::join_all(pages).await;
        let mut due: BTreeMap<String, Vec<Challenge>> = BTreeMap::new();
        let mut seen = HashSet::new();
        for (source, refs) in pages {
            for r in refs {
                let Ok(chunk) = <[u8; 32]>::try_from(r.chunk_id.as_slice()) else {
                    continue;
                };
                let Some(total) = r.erasure.as_ref().map(|e| e.total()) else {
                    continue;
                };
                if r.shard_hashes.len() != total
                    || r.shard_len == 0
                    || r.created_ms.saturating_add(settle_ms) > now_ms
                {
                    continue;
                }
                let (now_homes, then_homes) =
                    grid.shard_homes_beside(settled, &ChunkId(chunk), total);
                let (Ok(homes), Ok(then)) = (now_homes, then_homes) else {
                    continue;
                };
                for (i, home) in homes.iter().enumerate() {
                    if home == &source || !up.contains(home.as_str()) || then.get(i) != Some(home) {
                        continue;
                    }
                    let Ok(root) = <[u8; 32]>::try_from(r.shard_hashes[i].as_slice()) else {
                        continue;
                    };
                    let Ok(key) = ShardKey::new(chunk, i) else {
                        continue;
                    };
                    if !seen.insert((home.clone(), chunk, i)) {
                        continue;
                    }
                    due.entry(home.clone()).or_default().push(Challenge {
                        node: home.clone(),
                        key,
                        root,
                        shard_len: u64::from(r.shard_len),
                        total,
                        reference: r.clone(),
                        source: source.clone(),
                    });
                }
            }
        }
        let mut rng = rand::thread_rng();
        for cs in due.values_mut() {
            cs.shuffle(&mut rng);
            cs.truncate(self.cfg.samples_per_node);
        }
        // Up nodes nothing was found for still appear, with no challenge.
        for id in up {
            due.entry(id.to_string()).or_default();
        }
        due
    }

    /// Challenge one node; returns its results, the shards it proved and
    /// those it said it lacks.
    async fn challenge_node(
        &self,
        grid: &Grid,
        node: String,
        cs: Vec<Challenge>,
    ) -> (NodeAudit, Vec<ShardKey>, Vec<Challenge>) {
        let mut out = NodeAudit {
            node,
            ..NodeAudit::default()
        };
        let (mut proved, mut missing) = (Vec::new(), Vec::new());
        for c in cs {
            match self.challenge(grid, &c).await {
                Outcome::Passed => {
                    out.passed += 1;
                    proved.push(c.key);
                }
                Outcome::Skipped => out.skipped += 1,
                Outcome::Missing => missing.push(c),
                Outcome::Failed(why) => {
                    out.failed += 1;
                    if out.failures.len() < 4 {
                        out.failures
                            .push(format!("shard {}: {why}", c.key.to_name()));
                    }
                }
            }
        }
        (out, proved, missing)
    }

    /// How long a node may take to rebuild a shard it was told it lacks:
    /// three rounds, within 5 s and an hour. An honest node's rebuild of
    /// one hinted chunk takes seconds; a farm that dropped the shard and
    /// does not rebuild it fails the recheck.
    fn recheck_after(&self) -> Duration {
        (self.cfg.every * 3).clamp(Duration::from_secs(5), Duration::from_secs(3600))
    }

    /// Put each shard a node said it lacks back among its challenges, while
    /// it is still that shard's home and up.
    fn add_rechecks(&self, grid: &Grid, due: &mut BTreeMap<String, Vec<Challenge>>) {
        let mut st = self.state();
        st.pending.retain(|(node, _), (_, c)| {
            let home = grid
                .shard_homes(&ChunkId(c.key.chunk), c.total)
                .ok()
                .and_then(|h| h.get(c.key.index as usize).cloned());
            match (home, due.get_mut(node)) {
                (Some(h), Some(cs)) if &h == node => {
                    cs.retain(|x| x.key != c.key);
                    cs.insert(0, c.clone());
                    true
                }
                _ => false,
            }
        });
    }

    async fn challenge(&self, grid: &Grid, c: &Challenge) -> Outcome {
        let Some(client) = grid.client(&c.node) else {
            return Outcome::Skipped;
        };
        if !self.corroborated(grid, c).await {
            return Outcome::Skipped;
        }
        let Some(total) = codec::audit::checksummed_len(c.shard_len) else {
            return Outcome::Skipped;
        };
        let len = self
            .cfg
            .slice_len
            .clamp(1, codec::audit::MAX_SLICE_LEN)
            .min(total);
        let offset = rand::thread_rng().gen_range(0..=total - len);
        match client.prove_shard(&c.key, offset, len).await {
            Ok(proof) => match codec::audit::verify_slice(&proof, &c.root, offset, len) {
                Ok(_) => Outcome::Passed,
                Err(e) => Outcome::Failed(e.to_string()),
            },
            Err(RpcError::NotFound) => Outcome::Missing,
            Err(RpcError::Unreachable { .. }) | Err(RpcError::Unpinned { .. }) => Outcome::Skipped,
            // Our own credentials: no fault of the node's.
            Err(RpcError::Unauthorized(_)) => Outcome::Skipped,
            Err(e) => Outcome::Failed(e.to_string()),
        }
    }

    /// Whether a third node (neither the challenged one nor the one whose
    /// reference named the checksum) agrees on it, where one holds the
    /// chunk's references; with no third holder answering, the source's
    /// word stands. A disagreement skips the challenge: one of the two
    /// holders lies, and neither is the node under audit.
    async fn corroborated(&self, grid: &Grid, c: &Challenge) -> bool {
        let homes = grid
            .shard_homes(&ChunkId(c.key.chunk), c.total)
            .unwrap_or_default();
        let Some(third) = homes
            .iter()
            .find(|h| **h != c.node && **h != c.source)
            .and_then(|h| grid.client(h))
        else {
            return true;
        };
        let q = RefQuery {
            chunk_id: Some(c.key.chunk.to_vec()),
            start_after: None,
            limit: 16,
        };
        match third.refs_list(q).await {
            Ok(page) if !page.refs.is_empty() => page.refs.iter().any(|r| {
                r.shard_hashes
                    .get(c.key.index as usize)
                    .is_some_and(|h| h.as_slice() == c.root)
            }),
            _ => true,
        }
    }
}

/// A page of a node's references from a random point of its table (chunk
/// ids are uniform), continued from the start when the page ran short.
async fn random_refs(client: &grid::NodeClient, limit: u32) -> Vec<ChunkReference> {
    let limit = limit.clamp(1, grid::node_api::MAX_ITEMS as u32);
    let mut start = vec![0u8; 32];
    rand::thread_rng().fill_bytes(&mut start);
    let mut refs = Vec::new();
    for start_after in [Some(start), None] {
        let q = RefQuery {
            chunk_id: None,
            start_after,
            limit: limit - refs.len() as u32,
        };
        match client.refs_list(q).await {
            Ok(page) => {
                let more = page.next_after.is_some();
                refs.extend(page.refs);
                if more || refs.len() >= limit as usize {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    refs
}
