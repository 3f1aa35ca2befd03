//! Sealing and opening batches of chunks on several threads.
//!
//! Scoped threads, not a global pool: the codec owns no threads between
//! calls. Each thread uses its own `Sealer`/`Opener` (buffers reused) and
//! takes every n-th chunk, so results stay in input order.

use crate::error::Result;
use crate::keys::{ChunkId, DomainKey};
use crate::open::{OpenReport, Opener};
use crate::seal::{SealedChunk, Sealer};

/// One chunk to seal. `id` is the chunk's id if the caller computed it
/// already (for its dedup check); otherwise the sealer computes it.
#[derive(Clone, Copy)]
pub struct SealJob<'a> {
    pub id: Option<ChunkId>,
    pub data: &'a [u8],
}

/// One chunk to open: its id and its available shards.
pub struct OpenJob<'a, S> {
    pub id: ChunkId,
    pub shards: &'a [S],
}

/// Run `f(worker, i, &mut outs[i])` for every i, worker `w` taking the
/// indices `i % workers.len() == w`, one scoped thread per worker.
fn in_lanes<W: Send, O: Send, R: Send>(
    workers: &mut [W],
    outs: &mut [O],
    f: impl Fn(&mut W, usize, &mut O) -> R + Sync,
) -> Vec<R> {
    let n = workers.len();
    if n <= 1 || outs.len() <= 1 {
        let Some(w) = workers.first_mut() else {
            return Vec::new();
        };
        return outs
            .iter_mut()
            .enumerate()
            .map(|(i, o)| f(w, i, o))
            .collect();
    }
    let mut results: Vec<Option<R>> = (0..outs.len()).map(|_| None).collect();
    let mut lanes: Vec<Vec<(usize, &mut O)>> = (0..n).map(|_| Vec::new()).collect();
    for (i, o) in outs.iter_mut().enumerate() {
        lanes[i % n].push((i, o));
    }
    let f = &f;
    std::thread::scope(|scope| {
        let handles: Vec<_> = workers
            .iter_mut()
            .zip(lanes)
            .map(|(w, lane)| {
                scope.spawn(move || {
                    lane.into_iter()
                        .map(|(i, o)| (i, f(w, i, o)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for h in handles {
            // A panic in a worker is a codec bug; surface it rather than hide it.
            for (i, r) in h.join().expect("codec worker panicked") {
                results[i] = Some(r);
            }
        }
    });
    results
        .into_iter()
        .map(|r| r.expect("every lane reports every index"))
        .collect()
}

/// Seal `inputs[i]` into `outs[i]` using one thread per sealer.
pub fn seal_batch(
    sealers: &mut [Sealer],
    domain: &DomainKey,
    inputs: &[SealJob<'_>],
    outs: &mut [SealedChunk],
) -> Vec<Result<()>> {
    assert_eq!(inputs.len(), outs.len(), "one output per input");
    in_lanes(sealers, outs, |s, i, out| {
        let job = &inputs[i];
        match job.id {
            Some(id) => s.seal_chunk(domain, id, job.data, out),
            None => s.seal_into(domain, job.data, out),
        }
    })
}

/// Open each job into `outs[i]` using one thread per opener.
pub fn open_batch<S: AsRef<[u8]> + Sync>(
    openers: &mut [Opener],
    domain: &DomainKey,
    jobs: &[OpenJob<'_, S>],
    outs: &mut [Vec<u8>],
) -> Vec<Result<OpenReport>> {
    assert_eq!(jobs.len(), outs.len(), "one output per job");
    in_lanes(openers, outs, |o, i, out| {
        o.open_into(domain, &jobs[i].id, jobs[i].shards, out)
    })
}
