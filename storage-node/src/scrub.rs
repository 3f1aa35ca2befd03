//! Scrubbing: every shard's checksum re-verified on a schedule, so bitrot
//! is found before a read needs the shard.
//!
//! A pass walks the shard store in chunk order, re-reads each shard and
//! checks it (header, checksum, identity). A shard that fails is deleted
//! and its chunk handed to reconciliation ([`crate::repair`]), which
//! rebuilds it from peers. Passes are rate-limited (bytes per second) and
//! resumable: the last chunk finished is kept in the system table, so a
//! restart goes on where the last run stopped instead of starting over.

use crate::node::{Node, NodeError};
use crate::shard_store::StoreError;
use metadata::db::Table;
use metadata::model::CHUNK_ID_LEN;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The last chunk whose shards the current pass has verified.
const CURSOR_KEY: &[u8] = b"scrub/cursor";
/// When the last full pass finished (ms since the epoch, big-endian).
const DONE_KEY: &[u8] = b"scrub/last_done_ms";
/// Chunks between cursor saves.
const SAVE_EVERY: u64 = 64;

/// What one scrub pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScrubReport {
    pub shards: u64,
    pub bytes: u64,
    /// Shards that failed verification (and were deleted for rebuild).
    pub corrupt: u64,
    /// Whether the pass reached the end of the store (else it was stopped
    /// and the next one resumes).
    pub complete: bool,
}

impl Node {
    /// When the last complete scrub pass ended, if any.
    pub fn scrub_last_done_ms(&self) -> Result<Option<u64>, metadata::db::DbError> {
        Ok(self
            .db
            .get_raw(Table::System, DONE_KEY)?
            .and_then(|v| v.try_into().ok().map(u64::from_be_bytes)))
    }

    /// Scrub from the saved cursor to the end of the store, reading at most
    /// `bytes_per_sec` (0: no limit). Blocking; run it off the reactor.
    pub fn scrub_pass(
        &self,
        bytes_per_sec: u64,
        stop: &AtomicBool,
    ) -> Result<ScrubReport, NodeError> {
        let mut report = ScrubReport::default();
        let cursor: Option<[u8; CHUNK_ID_LEN]> = self
            .db
            .get_raw(Table::System, CURSOR_KEY)?
            .and_then(|v| v.try_into().ok());
        let started = Instant::now();
        let mut current: Option<[u8; CHUNK_ID_LEN]> = None;
        let mut chunks_done = 0u64;
        for key in self.store.iter()? {
            let key = key?;
            // Chunk order is byte order of the ids: skip what was done.
            if cursor.is_some_and(|c| key.chunk <= c) {
                continue;
            }
            if current != Some(key.chunk) {
                let stopping = stop.load(Ordering::Relaxed);
                if let Some(done) = current {
                    chunks_done += 1;
                    if stopping || chunks_done.is_multiple_of(SAVE_EVERY) {
                        self.db.put_raw(Table::System, CURSOR_KEY, &done)?;
                    }
                }
                if stopping {
                    return Ok(report);
                }
                current = Some(key.chunk);
            }
            let len = match self.store.shard_len(&key) {
                Ok(l) => l,
                // Deleted since the listing (collected, handed back).
                Err(StoreError::NotFound) => continue,
                Err(e) => return Err(e.into()),
            };
            match self.store.verify(&key) {
                Ok(()) => {}
                Err(StoreError::NotFound) => continue,
                Err(StoreError::Corrupt(reason)) => {
                    report.corrupt += 1;
                    self.repair.corrupt_found.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(shard = %key, %reason, "scrub: corrupt shard deleted for rebuild");
                    self.store.delete(&key)?;
                    // Deleted: a presence check finds it missing.
                    self.repair.hint(key.chunk, false);
                }
                Err(e) => return Err(e.into()),
            }
            report.shards += 1;
            report.bytes += len;
            self.repair.scrubbed_shards.fetch_add(1, Ordering::Relaxed);
            self.repair.scrubbed_bytes.fetch_add(len, Ordering::Relaxed);
            if bytes_per_sec > 0 {
                // Stay on the budget line: sleep off any lead over it.
                let due = Duration::from_secs_f64(report.bytes as f64 / bytes_per_sec as f64);
                if let Some(ahead) = due.checked_sub(started.elapsed()) {
                    std::thread::sleep(ahead.min(Duration::from_secs(5)));
                }
            }
        }
        self.db.delete(Table::System, CURSOR_KEY)?;
        self.db.put_raw(
            Table::System,
            DONE_KEY,
            &grid::clock::now_ms().to_be_bytes(),
        )?;
        report.complete = true;
        Ok(report)
    }
}
