//! Counting operations and their latencies while workers run.

use hdrhistogram::Histogram;
use serde::Serialize;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// Latencies are kept in microseconds up to an hour (longer ones count as
/// an hour), to three significant digits: about 200 KiB per histogram
/// whatever the run's length.
const MAX_LATENCY_US: u64 = 3_600_000_000;
const MIB: f64 = (1u64 << 20) as f64;

/// One kind of request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Get,
    Put,
    Stat,
    Delete,
    List,
}

impl Kind {
    pub(crate) const ALL: [Kind; 5] = [Kind::Get, Kind::Put, Kind::Stat, Kind::Delete, Kind::List];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Get => "get",
            Kind::Put => "put",
            Kind::Stat => "stat",
            Kind::Delete => "delete",
            Kind::List => "list",
        }
    }
}

/// Figures for a set of operations (all of them, or one kind).
#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    /// Operations that succeeded.
    pub ops: u64,
    /// Operations that failed (an error status, a broken connection, a
    /// short body, a timeout); not in `ops` nor in the latencies.
    pub errors: u64,
    /// Object bytes moved (uploaded or downloaded) by successful ops.
    pub bytes: u64,
    pub ops_per_s: f64,
    /// MiB (2^20 bytes) of object data per second.
    pub mib_per_s: f64,
    /// Latency of a whole successful operation, body included.
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

struct Tally {
    latency: Histogram<u64>,
    ops: u64,
    errors: u64,
    bytes: u64,
    keys: u64,
}

impl Tally {
    fn stats(&self, elapsed: Duration) -> Stats {
        let secs = elapsed.as_secs_f64().max(f64::MIN_POSITIVE);
        let ms = |us: u64| us as f64 / 1000.0;
        let empty = self.latency.is_empty();
        Stats {
            ops: self.ops,
            errors: self.errors,
            bytes: self.bytes,
            ops_per_s: self.ops as f64 / secs,
            mib_per_s: self.bytes as f64 / MIB / secs,
            p50_ms: if empty {
                0.0
            } else {
                ms(self.latency.value_at_quantile(0.5))
            },
            p99_ms: if empty {
                0.0
            } else {
                ms(self.latency.value_at_quantile(0.99))
            },
            max_ms: if empty { 0.0 } else { ms(self.latency.max()) },
            mean_ms: if empty {
                0.0
            } else {
                self.latency.mean() / 1000.0
            },
        }
    }
}

/// What finished operations report.
pub(crate) enum Outcome {
    Done { bytes: u64, keys: u64 },
    Failed(String),
}

/// Shared by all workers. An operation takes tens of microseconds at the
/// very least, so one short lock per operation costs nothing measurable,
/// and keeps memory at a few histograms whatever the concurrency.
pub(crate) struct Recorder {
    kinds: [Mutex<Tally>; 5],
    total: Mutex<Tally>,
    first_error: Mutex<Option<String>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A worker that panicked mid-update leaves counts that are still
    // counts.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Recorder {
    pub(crate) fn new() -> Result<Self, hdrhistogram::CreationError> {
        let tally = || -> Result<Mutex<Tally>, hdrhistogram::CreationError> {
            Ok(Mutex::new(Tally {
                latency: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)?,
                ops: 0,
                errors: 0,
                bytes: 0,
                keys: 0,
            }))
        };
        Ok(Self {
            kinds: [tally()?, tally()?, tally()?, tally()?, tally()?],
            total: tally()?,
            first_error: Mutex::new(None),
        })
    }

    fn slot(&self, kind: Kind) -> &Mutex<Tally> {
        // Discriminants are 0..5 in declaration order.
        &self.kinds[kind as usize]
    }

    pub(crate) fn record(&self, kind: Kind, latency: Duration, outcome: Outcome) {
        let us = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        for slot in [self.slot(kind), &self.total] {
            let mut tally = lock(slot);
            match &outcome {
                Outcome::Done { bytes, keys } => {
                    tally.ops += 1;
                    tally.bytes += bytes;
                    tally.keys += keys;
                    tally.latency.saturating_record(us);
                }
                Outcome::Failed(_) => tally.errors += 1,
            }
        }
        if let Outcome::Failed(message) = outcome {
            let mut first = lock(&self.first_error);
            if first.is_none() {
                *first = Some(format!("{}: {message}", kind.name()));
            }
        }
    }

    pub(crate) fn total(&self, elapsed: Duration) -> Stats {
        lock(&self.total).stats(elapsed)
    }

    /// The kinds that ran, in a fixed order.
    pub(crate) fn by_kind(&self, elapsed: Duration) -> Vec<(Kind, Stats)> {
        Kind::ALL
            .iter()
            .filter_map(|&kind| {
                let tally = lock(self.slot(kind));
                (tally.ops + tally.errors > 0).then(|| (kind, tally.stats(elapsed)))
            })
            .collect()
    }

    pub(crate) fn keys_listed(&self) -> u64 {
        lock(self.slot(Kind::List)).keys
    }

    pub(crate) fn first_error(&self) -> Option<String> {
        lock(&self.first_error).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures() {
        let recorder = Recorder::new().expect("constant bounds");
        for ms in 1..=100 {
            recorder.record(
                Kind::Get,
                Duration::from_millis(ms),
                Outcome::Done {
                    bytes: 1 << 20,
                    keys: 0,
                },
            );
        }
        recorder.record(
            Kind::Put,
            Duration::from_millis(5),
            Outcome::Failed("boom".into()),
        );
        let total = recorder.total(Duration::from_secs(2));
        assert_eq!(total.ops, 100);
        assert_eq!(total.errors, 1);
        assert!((total.ops_per_s - 50.0).abs() < 1e-9);
        assert!((total.mib_per_s - 50.0).abs() < 1e-9);
        assert!((total.p50_ms - 50.0).abs() < 0.1, "{}", total.p50_ms);
        assert!((total.p99_ms - 99.0).abs() < 0.1, "{}", total.p99_ms);
        assert!((total.max_ms - 100.0).abs() < 0.1, "{}", total.max_ms);
        let kinds: Vec<Kind> = recorder
            .by_kind(Duration::from_secs(2))
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(kinds, [Kind::Get, Kind::Put]);
        assert_eq!(recorder.first_error().as_deref(), Some("put: boom"));
    }
}
