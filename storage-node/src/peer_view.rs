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
        let seen = self.last_ok.get(id).copied().unwrap_or(self.started);
        seen.elapsed() < self.vote_down_after
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
