//! Background duties of the gateways: removing chunk references a crashed
//! write left behind (the orphan sweep, see [`crate::gc`]) and aborting
//! multipart uploads abandoned for too long. Every gateway runs the loop;
//! a lease decides which one does the work, so that any number of
//! gateways can serve a grid, none of them special, and the duties go on
//! when one of them is lost.
//!
//! The lease is a lock record on the root replicas (as WebDAV locks,
//! under a path no WebDAV path can take): each gateway writes its own
//! candidacy with an expiry and lists the live candidacies with a quorum;
//! the holder is the live candidate with the smallest id. Every read
//! quorum meets every write quorum, so gateways that see each other agree
//! on the holder; a holder that stops renewing lapses after the lease
//! time and the next candidate takes over. In the moment two views
//! differ, two gateways may both sweep: both duties are idempotent and
//! check liveness before they remove anything, so that costs work, not
//! data.

use crate::error::Result;
use crate::store::ObjectStore;
use metadata::model::Lock;
use std::collections::BTreeMap;
use std::time::Duration;

/// Where duty leases live among the lock records: WebDAV lock paths start
/// with `/`, so a listing of theirs never meets these.
const DUTY_PREFIX: &str = "\u{1}gridstore/duty/";

/// The gateway duties and how often they run.
#[derive(Debug, Clone)]
pub struct DutyConfig {
    /// Time between two rounds (and the lease's renewal period).
    pub every: Duration,
    /// A chunk reference whose write never committed is removed once it
    /// is this old.
    pub orphan_grace: Duration,
    /// An unfinished multipart upload is aborted once it is this old.
    pub upload_max_age: Duration,
}

impl Default for DutyConfig {
    fn default() -> Self {
        Self {
            every: Duration::from_secs(3600),
            orphan_grace: Duration::from_secs(86_400),
            upload_max_age: Duration::from_secs(7 * 86_400),
        }
    }
}

/// What one round did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DutyReport {
    /// Whether this gateway held the lease (and so did the work).
    pub held: bool,
    pub orphan_refs_removed: u64,
    pub uploads_aborted: usize,
    /// Nodes whose sweep failed (retried next round).
    pub failed_nodes: Vec<String>,
}

/// How long a candidacy renewed every `every` lasts: three rounds, so a
/// holder missing one renewal keeps the lease.
pub fn duty_ttl(every: Duration) -> Duration {
    every.saturating_mul(3).max(Duration::from_secs(3))
}

impl ObjectStore {
    /// Renew this gateway's candidacy for `duty` and say whether it holds
    /// the lease (see [`duty_ttl`]).
    pub async fn hold_duty(&self, duty: &str, holder: &str, every: Duration) -> Result<bool> {
        let now = grid::clock::now_ms();
        let ttl = duty_ttl(every);
        let path = format!("{DUTY_PREFIX}{duty}");
        self.put_lock(&Lock {
            path,
            token: holder.to_string(),
            principal: holder.to_string(),
            expires_ms: now + ttl.as_millis() as u64,
            timeout_secs: ttl.as_secs(),
            ..Lock::default()
        })
        .await?;
        let holders = self.duty_holders_at(duty, now).await?;
        Ok(holders.get(duty).map(String::as_str) == Some(holder))
    }

    /// Withdraw this gateway's candidacy for `duty` (a finished job, or a
    /// race lost to a smaller id), so that it cannot become the holder
    /// later by outliving the winner.
    pub async fn release_duty(&self, duty: &str, holder: &str) -> Result<()> {
        self.remove_lock(&Lock {
            path: format!("{DUTY_PREFIX}{duty}"),
            token: holder.to_string(),
            principal: holder.to_string(),
            ..Lock::default()
        })
        .await
    }

    /// The duties under `prefix` that have a live candidate, each with its
    /// holder (the smallest live candidacy), from one quorum listing.
    pub async fn duty_holders(&self, prefix: &str) -> Result<BTreeMap<String, String>> {
        self.duty_holders_at(prefix, grid::clock::now_ms()).await
    }

    /// [`ObjectStore::duty_holders`], counting candidacies live at `now_ms`.
    async fn duty_holders_at(&self, prefix: &str, now_ms: u64) -> Result<BTreeMap<String, String>> {
        let full = format!("{DUTY_PREFIX}{prefix}");
        let mut out: BTreeMap<String, String> = BTreeMap::new();
        for l in self.list_locks(&full, now_ms).await? {
            let duty = l.path[DUTY_PREFIX.len()..].to_string();
            let e = out.entry(duty).or_insert_with(|| l.token.clone());
            if l.token < *e {
                *e = l.token;
            }
        }
        Ok(out)
    }

    /// One round of the duties, done only if this gateway holds the lease.
    pub async fn run_duties_once(&self, holder: &str, cfg: &DutyConfig) -> Result<DutyReport> {
        let mut report = DutyReport::default();
        if !self.hold_duty("housekeeping", holder, cfg.every).await? {
            return Ok(report);
        }
        report.held = true;
        let nodes: Vec<String> = self
            .grid()
            .map()
            .nodes
            .iter()
            .filter(|n| n.state != metadata::model::NodeState::Removed as i32)
            .map(|n| n.id.clone())
            .collect();
        for node in nodes {
            match self.sweep_orphan_refs(&node, cfg.orphan_grace).await {
                Ok(r) => report.orphan_refs_removed += r.removed,
                Err(e) => {
                    tracing::warn!(%node, error = %e, "orphan sweep failed; retried next round");
                    report.failed_nodes.push(node);
                }
            }
        }
        report.uploads_aborted = self.abort_stale_uploads(cfg.upload_max_age).await?;
        Ok(report)
    }

    /// Run the duties every `cfg.every` until the task is dropped. The
    /// first round runs at once, so a gateway restarted after a crash
    /// cleans up what the crash left as soon as the grace allows.
    pub async fn run_duties(self, holder: String, cfg: DutyConfig) {
        let mut tick = tokio::time::interval(cfg.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match self.run_duties_once(&holder, &cfg).await {
                Ok(r) if r.orphan_refs_removed > 0 || r.uploads_aborted > 0 => tracing::info!(
                    removed_refs = r.orphan_refs_removed,
                    aborted_uploads = r.uploads_aborted,
                    "housekeeping: crash leftovers collected"
                ),
                Ok(r) => tracing::debug!(held = r.held, "housekeeping round"),
                Err(e) => {
                    tracing::warn!(error = %e, "housekeeping round failed; retried next round")
                }
            }
        }
    }
}
