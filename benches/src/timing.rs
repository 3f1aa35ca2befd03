use std::time::{Duration, Instant};

/// How long to measure: `rounds` rounds of at least `round` each; the
/// reported figure is the median round, robust to a noisy neighbour.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub rounds: usize,
    pub round: Duration,
}

impl Timing {
    pub fn full() -> Self {
        Self {
            rounds: 7,
            round: Duration::from_millis(80),
        }
    }

    /// For smoke tests of the harness itself: figures are meaningless.
    pub fn quick() -> Self {
        Self {
            rounds: 1,
            round: Duration::from_millis(2),
        }
    }

    /// Median throughput in GB/s (10^9 bytes per second) of `f`, which
    /// processes `bytes` bytes per call.
    pub fn gbps(&self, bytes: usize, mut f: impl FnMut()) -> f64 {
        f(); // warm caches, grow buffers
        let mut rates: Vec<f64> = (0..self.rounds.max(1))
            .map(|_| {
                let start = Instant::now();
                let mut calls = 0u64;
                while calls == 0 || start.elapsed() < self.round {
                    f();
                    calls += 1;
                }
                (bytes as f64 * calls as f64) / start.elapsed().as_secs_f64() / 1e9
            })
            .collect();
        rates.sort_by(f64::total_cmp);
        rates[rates.len() / 2]
    }
}

/// A named workload for `Timing::interleaved`.
pub struct Case<'a> {
    pub bytes: usize,
    pub run: &'a mut dyn FnMut(),
}

impl Timing {
    /// Measure several workloads in alternation, round by round, and return
    /// each one's throughput per round (GB/s). Ratios between workloads taken
    /// round by round cancel the slow drifts of a shared machine (another
    /// tenant's burst lands on both sides of the ratio).
    pub fn interleaved(&self, cases: &mut [Case<'_>]) -> Vec<Vec<f64>> {
        for c in cases.iter_mut() {
            (c.run)();
        }
        let mut rates = vec![Vec::with_capacity(self.rounds); cases.len()];
        for _ in 0..self.rounds.max(1) {
            for (c, r) in cases.iter_mut().zip(rates.iter_mut()) {
                let start = Instant::now();
                let mut calls = 0u64;
                while calls == 0 || start.elapsed() < self.round {
                    (c.run)();
                    calls += 1;
                }
                r.push((c.bytes as f64 * calls as f64) / start.elapsed().as_secs_f64() / 1e9);
            }
        }
        rates
    }
}

/// Median of a non-empty sample.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Median over rounds of `a[i] / b[i]`.
pub fn median_ratio(a: &[f64], b: &[f64]) -> f64 {
    median(a.iter().zip(b).map(|(x, y)| x / y).collect())
}
