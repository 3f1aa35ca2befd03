//! Parallel calls to several nodes (the shards of one chunk, the homes of
//! its references) and when to stop waiting for the slowest of them, so
//! that a hung node costs a request about a second instead of the RPC
//! timeout.

use std::time::Duration;
use tokio::task::JoinSet;

/// When to stop waiting for the slowest of a set of parallel calls. The
/// shards of one chunk are the same size and go to comparable nodes, so
/// one that takes many times longer than the first to finish is stuck, not
/// busy. Until something has answered there is nothing to compare with:
/// the calls' own timeout applies (a grid that is merely slow everywhere
/// must not turn every request into a failure).
pub struct Stragglers {
    started: tokio::time::Instant,
    deadline: tokio::time::Instant,
    first_done: bool,
}

impl Stragglers {
    /// Until a first answer: only the calls' own timeouts.
    const FIRST: Duration = Duration::from_secs(3600);
    /// The least the others get once one has answered.
    const AFTER_FIRST_MIN: Duration = Duration::from_secs(1);
    /// ... or this many times the first one's time, if longer.
    const AFTER_FIRST_FACTOR: u32 = 4;

    pub fn new() -> Self {
        let started = tokio::time::Instant::now();
        Self {
            started,
            deadline: started + Self::FIRST,
            first_done: false,
        }
    }

    pub fn deadline(&self) -> tokio::time::Instant {
        self.deadline
    }

    /// Note that one call succeeded.
    pub fn one_done(&mut self) {
        if self.first_done {
            return;
        }
        self.first_done = true;
        let took = self.started.elapsed();
        let allow = (took * Self::AFTER_FIRST_FACTOR).max(Self::AFTER_FIRST_MIN);
        self.deadline = tokio::time::Instant::now() + allow;
    }
}

impl Default for Stragglers {
    fn default() -> Self {
        Self::new()
    }
}

/// Collect the results of `tasks` until all are in or the rest are
/// stragglers (see [`Stragglers`]; `success` says which results count as
/// an answer). Stragglers are aborted; returns the results and how many
/// were abandoned.
pub async fn join_all_but_stragglers<T: 'static>(
    tasks: &mut JoinSet<T>,
    success: impl Fn(&T) -> bool,
) -> (Vec<T>, usize) {
    let mut out = Vec::new();
    let mut stragglers = Stragglers::new();
    loop {
        match tokio::time::timeout_at(stragglers.deadline(), tasks.join_next()).await {
            Ok(Some(Ok(r))) => {
                if success(&r) {
                    stragglers.one_done();
                }
                out.push(r);
            }
            Ok(Some(Err(_))) => continue,
            Ok(None) => return (out, 0),
            Err(_) => {
                let abandoned = tasks.len();
                tasks.abort_all();
                return (out, abandoned);
            }
        }
    }
}
