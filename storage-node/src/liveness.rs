//! Liveness: heartbeats between nodes, and new cluster-map epochs that mark
//! an unreachable node down (and a returning one up) with no coordinator.
//!
//! Every node asks every peer for its status each heartbeat. The answer
//! carries the peer's map epoch, so a node that missed a map change pulls
//! the newer map from whoever has it (maps spread by this anti-entropy,
//! not only by the proposer's push). A change is proposed only by the
//! node with the lowest id among those it sees alive, and only while it
//! sees a strict majority of the map's nodes (itself included): a node cut
//! off in a minority partition never marks the majority down. Two
//! proposers racing (after a partition heals) may publish different maps
//! under one epoch; [`Node::offer_map`] then keeps the one with the
//! greater hash everywhere, so the grid converges on one map.
//!
//! A change takes effect only with the signatures of a strict majority of
//! the map's nodes (`grid::signed_map`): the proposer asks every peer it
//! reaches for a vote ([`vote`]), and each signs only what its own
//! heartbeats show. One farm alone, however it lies, marks no one down.
//!
//! This is deliberately not consensus: a map change only moves where
//! shards should be rebuilt, and every write is checked against the
//! shards actually stored, so a wrong "down" costs repair traffic, never
//! data. The well-kept crates for agreement (openraft, chitchat) would
//! bring a log or a UDP gossip layer that this one-record state does not
//! need (docs/architecture.md, "Self-healing").

use crate::node::{Node, NodeError};
use crate::peer_view::Seen;
use crate::repair::grid_of;
use metadata::model::LivenessVote;
use metadata::model::{ClusterMap, NodeState};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use crate::outage::{lost_delay, LivenessConfig};

/// What this node has seen of its peers.
pub struct Liveness {
    cfg: LivenessConfig,
    started: Instant,
    /// Last successful heartbeat per peer; first failure after it.
    last_ok: HashMap<String, Instant>,
    /// Peers answering since (for a node coming back).
    up_since: HashMap<String, Instant>,
    /// Clients of the peers, kept across rounds so heartbeats reuse their
    /// connections; remade only for nodes whose address a new map changed.
    grid: Option<grid::chunk_io::Grid>,
    /// When the node last said it has no map.
    last_no_map_warning: Option<Instant>,
}

const NO_MAP_WARNING_EVERY: Duration = Duration::from_secs(60);

/// This node's signature for `proposal`, a liveness change of the map it
/// holds, if its own heartbeats show the same: every node it marks down
/// unheard from for the down timeout (less a heartbeat), every node it
/// marks up answering steadily, this node not down. Anything else is
/// refused.
pub fn vote(node: &Node, proposal: &ClusterMap) -> Result<LivenessVote, NodeError> {
    let current = node
        .cluster_map()?
        .ok_or_else(|| NodeError::Refused("this node holds no cluster map".into()))?;
    if proposal.epoch <= current.epoch {
        return Err(NodeError::Refused(format!(
            "map {} is not newer than the held {}",
            proposal.epoch, current.epoch
        )));
    }
    if !grid::signed_map::liveness_only(&current, proposal) {
        return Err(NodeError::Unauthorised(
            "not only a liveness change of the map this node holds".into(),
        ));
    }
    let seen = node
        .peers
        .fresh()
        .ok_or_else(|| NodeError::Refused("no recent heartbeats of its own to judge by".into()))?;
    for p in &proposal.nodes {
        let was = current.nodes.iter().find(|c| c.id == p.id).map(|c| c.state);
        if was == Some(p.state) {
            continue;
        }
        let agrees = if p.id == node.id {
            p.state == NodeState::Up as i32
        } else if p.state == NodeState::Down as i32 {
            !seen.alive(&p.id)
        } else if p.state == NodeState::Lost as i32 {
            // Judged on the held map, the proposal's base: the same sites
            // out for proposer and voter.
            let delay = lost_delay(&current, &p.id, &seen.cfg);
            seen.unheard(&p.id) >= delay.saturating_sub(seen.cfg.heartbeat)
        } else {
            p.state == NodeState::Up as i32 && seen.steady.contains(&p.id)
        };
        if !agrees {
            return Err(NodeError::Refused(format!(
                "this node does not see {} as the proposal says",
                p.id
            )));
        }
    }
    Ok(grid::signed_map::vote(&node.identity, &node.id, proposal))
}

impl Liveness {
    pub fn new(cfg: LivenessConfig) -> Self {
        Self {
            cfg,
            started: Instant::now(),
            last_ok: HashMap::new(),
            up_since: HashMap::new(),
            grid: None,
            last_no_map_warning: None,
        }
    }

    /// One heartbeat round: ask every peer, adopt a newer map if one has
    /// it, and propose a new epoch if this node is the proposer and a
    /// node's state must change. Returns the epoch proposed, if any.
    pub async fn round(&mut self, node: &Arc<Node>) -> Result<Option<u64>, NodeError> {
        let n = node.clone();
        let Some(map) = tokio::task::spawn_blocking(move || n.cluster_map())
            .await
            .map_err(|e| NodeError::Refused(e.to_string()))??
        else {
            // Nothing heals, follows or syncs without a map: say so where
            // an operator looks first, once a minute.
            if self
                .last_no_map_warning
                .is_none_or(|t| t.elapsed() >= NO_MAP_WARNING_EVERY)
            {
                self.last_no_map_warning = Some(Instant::now());
                tracing::warn!(
                    "no cluster map yet: this node stores what it is sent but does not \
                     repair, scrub against peers or sync metadata until a gateway hands it \
                     the first map (gridstore gateway does at start; or gridstore admin node seed)"
                );
            }
            return Ok(None);
        };
        let grid = self.grid_for(node, &map);
        let now = Instant::now();
        let mut newest: Option<(u64, String)> = None;
        let mut probes = tokio::task::JoinSet::new();
        for peer in map.nodes.iter().filter(|p| p.id != node.id) {
            if peer.state == NodeState::Removed as i32 {
                continue;
            }
            let Some(client) = grid.client(&peer.id).cloned() else {
                continue;
            };
            let id = peer.id.clone();
            let timeout = self.cfg.heartbeat.max(Duration::from_secs(2));
            probes.spawn(async move {
                let r = tokio::time::timeout(timeout, client.status()).await;
                (id, r.ok().and_then(|r| r.ok()))
            });
        }
        while let Some(done) = probes.join_next().await {
            let Ok((id, status)) = done else { continue };
            match status {
                Some(s) => {
                    self.last_ok.insert(id.clone(), now);
                    self.up_since.entry(id.clone()).or_insert(now);
                    if s.map_epoch > map.epoch
                        && newest.as_ref().is_none_or(|(e, _)| s.map_epoch > *e)
                    {
                        newest = Some((s.map_epoch, id));
                    }
                }
                None => {
                    self.up_since.remove(&id);
                }
            }
        }
        node.peers.set(Seen {
            at: now,
            fresh_for: self.cfg.heartbeat * 3,
            last_ok: self.last_ok.clone(),
            started: self.started,
            cfg: self.cfg,
            vote_down_after: self
                .cfg
                .down_after
                .saturating_sub(self.cfg.heartbeat)
                .max(self.cfg.heartbeat),
            steady: self
                .up_since
                .iter()
                .filter(|(_, t)| now.duration_since(**t) >= self.cfg.heartbeat * 2)
                .map(|(id, _)| id.clone())
                .collect(),
        });
        if let Some((_, holder)) = newest {
            if let Some(client) = grid.client(&holder) {
                if let Ok(Some(m)) = client.get_map().await {
                    let n = node.clone();
                    let (kept, epoch) = tokio::task::spawn_blocking(move || n.offer_map(&m))
                        .await
                        .map_err(|e| NodeError::Refused(e.to_string()))??;
                    if kept {
                        tracing::info!(epoch, from = %holder, "newer cluster map adopted");
                    }
                }
            }
            // Decide on the newest map next round.
            return Ok(None);
        }
        self.propose(node, &map, now).await
    }

    /// Votes for `proposal`: this node's own and those of the peers in
    /// `reachable` that agree, asked all at once.
    async fn gather_votes(
        &self,
        node: &Arc<Node>,
        grid: &grid::chunk_io::Grid,
        proposal: &ClusterMap,
        reachable: &[&str],
    ) -> Vec<LivenessVote> {
        let mut votes = Vec::new();
        match vote(node, proposal) {
            Ok(v) => votes.push(v),
            Err(e) => tracing::warn!(error = %e, "this node does not vote for its own proposal"),
        }
        let timeout = self.cfg.heartbeat.max(Duration::from_secs(2));
        let asks = reachable
            .iter()
            .filter(|id| **id != node.id)
            .filter_map(|id| grid.client(id).map(|c| (*id, c)))
            .map(|(id, c)| async move {
                match tokio::time::timeout(timeout, c.map_vote(proposal)).await {
                    Ok(Ok(v)) => Some(v),
                    Ok(Err(e)) => {
                        tracing::debug!(node = %id, error = %e, "no vote");
                        None
                    }
                    Err(_) => None,
                }
            });
        votes.extend(
            futures_util::future::join_all(asks)
                .await
                .into_iter()
                .flatten(),
        );
        votes
    }

    /// Clients for `map`, reusing those of the last round.
    fn grid_for(&mut self, node: &Node, map: &ClusterMap) -> grid::chunk_io::Grid {
        let grid = match self.grid.take() {
            Some(g) if g.map() == map => g,
            Some(g) => g.with_map(map.clone()),
            None => grid_of(node, map.clone()),
        };
        self.grid = Some(grid.clone());
        grid
    }

    /// How long `id` has not answered a heartbeat (since this loop started,
    /// for one never heard from).
    fn unheard(&self, id: &str, now: Instant) -> Duration {
        let seen = self.last_ok.get(id).copied().unwrap_or(self.started);
        now.duration_since(seen)
    }

    async fn propose(
        &mut self,
        node: &Arc<Node>,
        map: &ClusterMap,
        now: Instant,
    ) -> Result<Option<u64>, NodeError> {
        let counted: Vec<&metadata::model::Node> = map
            .nodes
            .iter()
            .filter(|p| p.state != NodeState::Removed as i32)
            .collect();
        let reachable: Vec<&str> = counted
            .iter()
            .filter(|p| p.id == node.id || self.up_since.contains_key(&p.id))
            .map(|p| p.id.as_str())
            .collect();
        if reachable.len() * 2 <= counted.len() {
            return Ok(None);
        }
        let proposer = reachable.iter().min().copied();
        if proposer != Some(node.id.as_str()) {
            return Ok(None);
        }
        // Not before this node has had time to hear from everyone.
        if now.duration_since(self.started) < self.cfg.down_after {
            return Ok(None);
        }
        let mut next = map.clone();
        let mut changed = Vec::new();
        // The proposer itself is plainly alive: a map that says otherwise
        // (it was down and came back) is corrected by its own proposal.
        for me in next.nodes.iter_mut().filter(|p| p.id == node.id) {
            if me.state == NodeState::Down as i32 || me.state == NodeState::Lost as i32 {
                me.state = NodeState::Up as i32;
                changed.push(format!("{} up", me.id));
            }
        }
        for p in next.nodes.iter_mut().filter(|p| p.id != node.id) {
            let up = p.state == NodeState::Up as i32;
            let down = p.state == NodeState::Down as i32;
            let lost = p.state == NodeState::Lost as i32;
            let unheard = self.unheard(&p.id, now);
            if (up || down) && unheard >= lost_delay(map, &p.id, &self.cfg) {
                p.state = NodeState::Lost as i32;
                changed.push(format!("{} lost", p.id));
            } else if up && unheard >= self.cfg.down_after {
                p.state = NodeState::Down as i32;
                changed.push(format!("{} down", p.id));
            } else if (down || lost)
                && self
                    .up_since
                    .get(&p.id)
                    .is_some_and(|t| now.duration_since(*t) >= self.cfg.heartbeat * 2)
            {
                // Back and answering steadily: up again; reconciliation
                // moves its shards home and collects the stale ones.
                p.state = NodeState::Up as i32;
                changed.push(format!("{} up", p.id));
            }
        }
        if changed.is_empty() {
            return Ok(None);
        }
        next.epoch = map.epoch + 1;
        next.owner_signature.clear();
        next.votes.clear();
        let grid = self.grid_for(node, map);
        next.votes = self.gather_votes(node, &grid, &next, &reachable).await;
        if let Err(e) = grid::signed_map::verify(&next, Some(&map.owner_key)) {
            tracing::info!(epoch = next.epoch, changes = %changed.join(", "), error = %e,
                "liveness change not agreed by a majority yet");
            return Ok(None);
        }
        let n = node.clone();
        let m = next.clone();
        tokio::task::spawn_blocking(move || n.offer_map(&m))
            .await
            .map_err(|e| NodeError::Refused(e.to_string()))??;
        tracing::warn!(epoch = next.epoch, changes = %changed.join(", "), votes = next.votes.len(), "cluster map changed");
        let grid = self.grid_for(node, &next);
        // All at once: one at a time, a peer that is down (the usual news)
        // would hold the others' copy back by its connect timeout, and
        // with it the start of their repairs.
        let pushes = next
            .nodes
            .iter()
            .filter(|p| p.id != node.id)
            .filter_map(|p| grid.client(&p.id).map(|c| (p.id.as_str(), c)))
            .map(|(id, c)| {
                let next = &next;
                async move {
                    if let Err(e) = c.put_map(next).await {
                        tracing::debug!(node = %id, error = %e, "map push failed; it will pull");
                    }
                }
            });
        futures_util::future::join_all(pushes).await;
        Ok(Some(next.epoch))
    }
}
