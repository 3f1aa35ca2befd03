//! What a node's own heartbeats last showed of its peers: the ground for
//! its votes on liveness changes (`crate::liveness`), shared between the
//! liveness loop, which writes it, and the RPC server, which votes by it.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What this node's own heartbeats last showed: the ground for its votes,
/// shared between the liveness loop and the RPC server.
#[derive(Debug, Default)]
pub struct PeerView(Mutex<Option<Seen>>);

#[derive(Debug, Clone)]
pub(crate) struct Seen {
    pub(crate) at: Instant,
    /// Older than this, the view is no ground for a vote.
    pub(crate) fresh_for: Duration,
    /// When each peer last answered (the loop's start for one never
    /// heard from).
    pub(crate) last_ok: HashMap<String, Instant>,
    pub(crate) started: Instant,
    /// The settings the view was gathered under.
    pub(crate) cfg: crate::outage::LivenessConfig,
    /// Unheard from this long, a peer may be voted down: a heartbeat less
    /// than the proposer's timeout, since heartbeats run out of phase and a
    /// voter may have heard from a dead node up to one heartbeat later.
    pub(crate) vote_down_after: Duration,
    /// Answering steadily for two heartbeats or more.
    pub(crate) steady: HashSet<String>,
}

impl Seen {
    /// Whether `id` was heard from recently enough, as of now (not as of
    /// the last round: a proposal may come up to a heartbeat later).
    pub(crate) fn alive(&self, id: &str) -> bool {
        self.unheard(id) < self.vote_down_after
    }

    /// How long `id` has gone unheard from, as of now.
    pub(crate) fn unheard(&self, id: &str) -> Duration {
        self.last_ok
            .get(id)
            .copied()
            .unwrap_or(self.started)
            .elapsed()
    }
}

impl Seen {
    /// The peers of `map` unheard from for a heartbeat or more, and how
    /// long until this node would mark each lost.
    pub(crate) fn unheard_peers(
        &self,
        map: &metadata::model::ClusterMap,
        me: &str,
    ) -> Vec<grid::node_api::PeerUnheard> {
        let removed = metadata::model::NodeState::Removed as i32;
        map.nodes
            .iter()
            .filter(|n| n.id != me && n.state != removed)
            .filter_map(|n| {
                let unheard = self.unheard(&n.id);
                (unheard >= self.cfg.heartbeat).then(|| {
                    let delay = crate::outage::lost_delay(map, &n.id, &self.cfg);
                    grid::node_api::PeerUnheard {
                        node_id: n.id.clone(),
                        unheard_ms: unheard.as_millis() as u64,
                        lost_in_ms: delay.saturating_sub(unheard).as_millis() as u64,
                    }
                })
            })
            .collect()
    }
}

impl PeerView {
    pub(crate) fn set(&self, seen: Seen) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(seen);
    }

    pub(crate) fn fresh(&self) -> Option<Seen> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .filter(|s| s.at.elapsed() < s.fresh_for)
            .cloned()
    }
}
