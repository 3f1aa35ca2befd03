//! What self-healing has seen and done, and the work asked of it: shared
//! by the node core (which readers, the scrubber and the RPC server hint
//! through) and the repair loop that drains it.

use grid::node_api::{DamagedChunk, MAX_DAMAGED_LISTED, MAX_DAMAGED_REFERRERS};
use metadata::model::Referrer;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// A damaged chunk nothing named again is retried after this long anyway:
/// shards may come back in ways no hint or map tells of (an operator
/// copying files back, a disk remounted).
pub const DAMAGED_RETRY: Duration = Duration::from_secs(3600);
/// The first pause of rebuilds for a full store; each pause with no
/// successful write since the last doubles, up to [`PAUSE_MAX`].
pub const PAUSE_MIN: Duration = Duration::from_secs(5);
pub const PAUSE_MAX: Duration = Duration::from_secs(320);

/// A chunk found with fewer than `k` good shards on the grid.
#[derive(Debug, Clone)]
pub struct Damaged {
    pub first_found_ms: u64,
    pub last_tried_ms: u64,
    /// When it was last tried, for [`DAMAGED_RETRY`].
    pub last_tried: Instant,
    /// Map epoch it was last tried under: a new map may bring shards back.
    pub epoch: u64,
    pub found: usize,
    pub needed: usize,
    /// The first referrers of its references (at most
    /// [`MAX_DAMAGED_REFERRERS`]), and how many there were.
    pub referrers: Vec<Referrer>,
    pub referrer_count: usize,
}

/// Rebuilds paused because the shard store is full.
#[derive(Default)]
struct Pause {
    until: Option<Instant>,
    until_ms: u64,
    /// The next pause's length; zero: [`PAUSE_MIN`].
    next: Duration,
}

/// What self-healing has seen and done, for `gridstore admin repair
/// status` and the metrics. Counters since start, gauges from the last
/// pass.
#[derive(Default)]
pub struct RepairState {
    /// Home shards found missing by the last pass (or waiting since).
    pub missing: AtomicU64,
    /// Rebuilds in progress now.
    pub rebuilding: AtomicU64,
    /// Home shards the last full pass left waiting for a down node.
    pub waiting: AtomicU64,
    /// Chunks the last full pass found with no spare shard left.
    pub at_risk: AtomicU64,
    pub rebuilt_shards: AtomicU64,
    pub rebuilt_bytes: AtomicU64,
    pub failed_rebuilds: AtomicU64,
    /// Shards this node held for another home and handed back.
    pub handed_back: AtomicU64,
    pub passes: AtomicU64,
    pub last_pass_ms: AtomicU64,
    /// Shards verified by the scrubber, and found corrupt by it.
    pub scrubbed_shards: AtomicU64,
    pub scrubbed_bytes: AtomicU64,
    pub corrupt_found: AtomicU64,
    /// Chunks to look at before anything else (reported by readers, or
    /// found corrupt by the scrubber).
    /// Chunk -> whether its local shards must be re-verified.
    hinted: Mutex<BTreeMap<[u8; 32], bool>>,
    /// Wakes the reconciliation loop early.
    pub wake: Notify,
    /// The next pass must look at every chunk (the map changed), not only
    /// the hinted ones.
    full: AtomicBool,
    /// Chunks that cannot be rebuilt now, by id.
    damaged: Mutex<BTreeMap<[u8; 32], Damaged>>,
    pause: Mutex<Pause>,
    /// Times rebuilds were paused for a full store.
    pub store_full_pauses: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section below leaves its data whole: a panic
    // elsewhere while holding the lock cannot have half-written it.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl RepairState {
    /// Ask for chunk `id` to be reconciled soon (`verify`: re-read and
    /// check its local shards, a reader found one bad).
    pub fn hint(&self, id: [u8; 32], verify: bool) {
        *lock(&self.hinted).entry(id).or_default() |= verify;
        self.wake.notify_one();
    }

    /// Ask for a full pass soon (a new map may have moved shard homes).
    pub fn request_full(&self) {
        self.full.store(true, Ordering::Relaxed);
        self.wake.notify_one();
    }

    /// Whether a full pass is asked for, without taking the request.
    pub fn full_requested(&self) -> bool {
        self.full.load(Ordering::Relaxed)
    }

    /// Whether a full pass was asked for since the last look.
    pub fn take_full(&self) -> bool {
        self.full.swap(false, Ordering::Relaxed)
    }

    /// The figures `status` reports.
    pub fn snapshot(&self, last_scrub_ms: u64) -> grid::node_api::RepairStatus {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        grid::node_api::RepairStatus {
            missing: get(&self.missing),
            rebuilding: get(&self.rebuilding),
            waiting: get(&self.waiting),
            at_risk: get(&self.at_risk),
            rebuilt_shards: get(&self.rebuilt_shards),
            rebuilt_bytes: get(&self.rebuilt_bytes),
            failed_rebuilds: get(&self.failed_rebuilds),
            handed_back: get(&self.handed_back),
            scrubbed_shards: get(&self.scrubbed_shards),
            corrupt_found: get(&self.corrupt_found),
            reconcile_passes: get(&self.passes),
            last_reconcile_ms: get(&self.last_pass_ms),
            last_scrub_ms,
            damaged_chunks: self.damaged_count() as u64,
            damaged: self.damaged_list(MAX_DAMAGED_LISTED),
            rebuilds_paused_until_ms: self.paused_until_ms(),
            store_full_pauses: get(&self.store_full_pauses),
        }
    }

    // --- damaged chunks -------------------------------------------------

    /// Chunks known damaged now.
    pub fn damaged_count(&self) -> usize {
        lock(&self.damaged).len()
    }

    /// The first `limit` damaged chunks, in chunk id order, as a status
    /// lists them.
    pub fn damaged_list(&self, limit: usize) -> Vec<DamagedChunk> {
        lock(&self.damaged)
            .iter()
            .take(limit)
            .map(|(id, d)| DamagedChunk {
                chunk_id: id.to_vec(),
                first_found_ms: d.first_found_ms,
                last_tried_ms: d.last_tried_ms,
                shards_found: u32::try_from(d.found).unwrap_or(u32::MAX),
                shards_needed: u32::try_from(d.needed).unwrap_or(u32::MAX),
                referrers: d.referrers.clone(),
                referrer_count: d.referrer_count as u64,
            })
            .collect()
    }

    pub fn is_damaged(&self, id: &[u8; 32]) -> bool {
        lock(&self.damaged).contains_key(id)
    }

    /// What is known of damaged chunk `id`.
    pub fn damaged(&self, id: &[u8; 32]) -> Option<Damaged> {
        lock(&self.damaged).get(id).cloned()
    }

    /// Whether chunk `id` is to be left alone by a pass under map `epoch`:
    /// it was found damaged under this very map, less than
    /// [`DAMAGED_RETRY`] ago. A hint naming it is the caller's business
    /// (a hinted chunk is always tried).
    pub(crate) fn damaged_rests(&self, id: &[u8; 32], epoch: u64) -> bool {
        lock(&self.damaged)
            .get(id)
            .is_some_and(|d| d.epoch == epoch && d.last_tried.elapsed() < DAMAGED_RETRY)
    }

    /// Record that a rebuild of `id` found `found` good shards of the
    /// `needed`; `true` when it was not known damaged before (the caller
    /// then says so loudly, once).
    pub(crate) fn mark_damaged(
        &self,
        id: [u8; 32],
        epoch: u64,
        found: usize,
        needed: usize,
        referrers: impl IntoIterator<Item = Referrer>,
    ) -> bool {
        let now_ms = grid::clock::now_ms();
        let mut all = referrers.into_iter();
        let listed: Vec<Referrer> = all.by_ref().take(MAX_DAMAGED_REFERRERS).collect();
        let referrer_count = listed.len() + all.count();
        let mut damaged = lock(&self.damaged);
        let first_found_ms = damaged.get(&id).map_or(now_ms, |d| d.first_found_ms);
        damaged
            .insert(
                id,
                Damaged {
                    first_found_ms,
                    last_tried_ms: now_ms,
                    last_tried: Instant::now(),
                    epoch,
                    found,
                    needed,
                    referrers: listed,
                    referrer_count,
                },
            )
            .is_none()
    }

    /// Chunk `id` is no longer damaged (rebuilt, or no business of this
    /// node's any more); `true` if it was.
    pub(crate) fn clear_damaged(&self, id: &[u8; 32]) -> bool {
        lock(&self.damaged).remove(id).is_some()
    }

    /// Forget damaged chunks a complete pass did not meet (their references
    /// are gone) unless tried since `since` (found during that pass).
    pub(crate) fn retain_damaged(&self, since: Instant, met: impl Fn(&[u8; 32]) -> bool) {
        lock(&self.damaged).retain(|id, d| met(id) || d.last_tried >= since);
    }

    // --- full store -----------------------------------------------------

    /// How long rebuilds stay paused for a full store; `None`: not paused.
    pub fn rebuilds_paused(&self) -> Option<Duration> {
        let until = lock(&self.pause).until?;
        let left = until.saturating_duration_since(Instant::now());
        (!left.is_zero()).then_some(left)
    }

    /// Until when rebuilds are paused (ms since the epoch); 0: they are not.
    pub fn paused_until_ms(&self) -> u64 {
        let p = lock(&self.pause);
        match p.until {
            Some(u) if u > Instant::now() => p.until_ms,
            _ => 0,
        }
    }

    /// The store refused a rebuilt shard (or has no room for one): pause
    /// rebuilds, each pause in a row twice as long as the last. Returns the
    /// pause when one starts now, `None` when one was running already
    /// (another rebuild found the store full at the same time).
    pub(crate) fn pause_rebuilds(&self) -> Option<Duration> {
        let mut p = lock(&self.pause);
        let now = Instant::now();
        if p.until.is_some_and(|u| u > now) {
            return None;
        }
        let length = if p.next.is_zero() { PAUSE_MIN } else { p.next };
        p.until = Some(now + length);
        p.until_ms = grid::clock::now_ms().saturating_add(length.as_millis() as u64);
        p.next = (length * 2).min(PAUSE_MAX);
        drop(p);
        self.store_full_pauses.fetch_add(1, Ordering::Relaxed);
        Some(length)
    }

    /// A rebuilt shard was stored: the next pause, if any, starts short
    /// again.
    pub(crate) fn store_took_shard(&self) {
        lock(&self.pause).next = Duration::ZERO;
    }

    pub(crate) fn has_hints(&self) -> bool {
        !lock(&self.hinted).is_empty()
    }

    pub(crate) fn take_hints(&self) -> BTreeMap<[u8; 32], bool> {
        std::mem::take(&mut *lock(&self.hinted))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// End the running pause as if its time had passed.
    fn expire(s: &RepairState) {
        lock(&s.pause).until = Some(Instant::now());
    }

    #[test]
    fn pauses_double_up_to_the_cap_and_a_stored_shard_starts_them_short_again() {
        let s = RepairState::default();
        assert_eq!(s.rebuilds_paused(), None);
        assert_eq!(s.paused_until_ms(), 0);
        let mut lengths = Vec::new();
        for _ in 0..9 {
            lengths.push(s.pause_rebuilds().unwrap());
            assert!(s.rebuilds_paused().is_some());
            assert!(s.paused_until_ms() > 0);
            // Others finding the store full meanwhile start no pause.
            assert_eq!(s.pause_rebuilds(), None);
            expire(&s);
        }
        let secs: Vec<u64> = lengths.iter().map(Duration::as_secs).collect();
        assert_eq!(secs, [5, 10, 20, 40, 80, 160, 320, 320, 320]);
        assert_eq!(s.store_full_pauses.load(Ordering::Relaxed), 9);
        assert_eq!(s.rebuilds_paused(), None);
        assert_eq!(s.paused_until_ms(), 0);
        s.store_took_shard();
        assert_eq!(s.pause_rebuilds(), Some(PAUSE_MIN));
    }

    fn referrer(key: &str) -> Referrer {
        Referrer {
            bucket_id: vec![1; 16],
            key_hash: blake3::hash(key.as_bytes()).as_bytes()[..16].to_vec(),
            version: vec![2; 16],
            part_number: 0,
        }
    }

    #[test]
    fn a_damaged_chunk_rests_under_the_map_it_was_found_under() {
        let s = RepairState::default();
        let id = [3; 32];
        assert!(!s.damaged_rests(&id, 1));
        assert!(s.mark_damaged(id, 1, 2, 4, [referrer("a")]));
        assert!(s.damaged_rests(&id, 1));
        assert!(!s.damaged_rests(&id, 2), "a new map has it tried again");
        // Found damaged again: not new, first found kept.
        let first = s.damaged(&id).unwrap().first_found_ms;
        assert!(!s.mark_damaged(id, 2, 1, 4, [referrer("a")]));
        let d = s.damaged(&id).unwrap();
        assert_eq!((d.first_found_ms, d.found, d.epoch), (first, 1, 2));
        // After the long wait, tried again whatever the map.
        lock(&s.damaged).get_mut(&id).unwrap().last_tried =
            Instant::now().checked_sub(DAMAGED_RETRY).unwrap();
        assert!(!s.damaged_rests(&id, 2));
        assert!(s.clear_damaged(&id));
        assert!(!s.clear_damaged(&id));
        assert_eq!(s.damaged_count(), 0);
    }

    #[test]
    fn the_status_lists_a_bounded_number_of_chunks_and_referrers() {
        let s = RepairState::default();
        for i in 0..(MAX_DAMAGED_LISTED + 5) {
            let mut id = [0; 32];
            id[..8].copy_from_slice(&(i as u64).to_be_bytes());
            let refs = (0..MAX_DAMAGED_REFERRERS + 3).map(|r| referrer(&r.to_string()));
            s.mark_damaged(id, 1, 0, 4, refs);
        }
        let st = s.snapshot(0);
        assert_eq!(st.damaged_chunks, (MAX_DAMAGED_LISTED + 5) as u64);
        assert_eq!(st.damaged.len(), MAX_DAMAGED_LISTED);
        assert_eq!(st.damaged[0].chunk_id, vec![0; 32]);
        assert_eq!(st.damaged[0].referrers.len(), MAX_DAMAGED_REFERRERS);
        assert_eq!(
            st.damaged[0].referrer_count,
            (MAX_DAMAGED_REFERRERS + 3) as u64
        );
    }

    #[test]
    fn a_complete_pass_forgets_damaged_chunks_it_did_not_meet_unless_just_found() {
        let s = RepairState::default();
        let (met, gone) = ([1; 32], [2; 32]);
        s.mark_damaged(met, 1, 0, 4, []);
        s.mark_damaged(gone, 1, 0, 4, []);
        let started = Instant::now();
        let found_during = [3; 32];
        s.mark_damaged(found_during, 1, 0, 4, []);
        s.retain_damaged(started, |id| *id == met);
        assert!(s.is_damaged(&met));
        assert!(!s.is_damaged(&gone));
        assert!(s.is_damaged(&found_during));
    }
}
