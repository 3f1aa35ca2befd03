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

fn seal_one(
    s: &mut Sealer,
    domain: &DomainKey,
    job: &SealJob<'_>,
    out: &mut SealedChunk,
) -> Result<()> {
    match job.id {
        Some(id) => s.seal_chunk(domain, id, job.data, out),
        None => s.seal_into(domain, job.data, out),
    }
}

/// Seal `inputs[i]` into `outs[i]` using one thread per sealer.
pub fn seal_batch(
    sealers: &mut [Sealer],
    domain: &DomainKey,
    inputs: &[SealJob<'_>],
    outs: &mut [SealedChunk],
) -> Vec<Result<()>> {
    assert_eq!(inputs.len(), outs.len(), "one output per input");
    let threads = sealers.len().max(1);
    if sealers.len() <= 1 || inputs.len() <= 1 {
        let Some(s) = sealers.first_mut() else {
            return vec![];
        };
        return inputs
            .iter()
            .zip(outs.iter_mut())
            .map(|(j, o)| seal_one(s, domain, j, o))
            .collect();
    }
    let mut results: Vec<Option<Result<()>>> = (0..inputs.len()).map(|_| None).collect();
    std::thread::scope(|scope| {
        let mut lanes: Vec<Vec<(usize, &mut SealedChunk)>> = (0..threads).map(|_| vec![]).collect();
        for (i, o) in outs.iter_mut().enumerate() {
            lanes[i % threads].push((i, o));
        }
        let handles: Vec<_> = sealers
            .iter_mut()
            .zip(lanes)
            .map(|(sealer, lane)| {
                scope.spawn(move || {
                    lane.into_iter()
                        .map(|(i, o)| (i, seal_one(sealer, domain, &inputs[i], o)))
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
        .map(|r| r.expect("every input sealed"))
        .collect()
}

/// One chunk to open: its id and its available shards.
pub struct OpenJob<'a, S> {
    pub id: ChunkId,
    pub shards: &'a [S],
}

/// Open each job into `outs[i]` using one thread per opener.
pub fn open_batch<S: AsRef<[u8]> + Sync>(
    openers: &mut [Opener],
    domain: &DomainKey,
    jobs: &[OpenJob<'_, S>],
    outs: &mut [Vec<u8>],
) -> Vec<Result<OpenReport>> {
    assert_eq!(jobs.len(), outs.len(), "one output per job");
    let threads = openers.len().max(1);
    if openers.len() <= 1 || jobs.len() <= 1 {
        let Some(o) = openers.first_mut() else {
            return vec![];
        };
        return jobs
            .iter()
            .zip(outs.iter_mut())
            .map(|(j, out)| o.open_into(domain, &j.id, j.shards, out))
            .collect();
    }
    let mut results: Vec<Option<Result<OpenReport>>> = (0..jobs.len()).map(|_| None).collect();
    std::thread::scope(|scope| {
        let mut lanes: Vec<Vec<(usize, &mut Vec<u8>)>> = (0..threads).map(|_| vec![]).collect();
        for (i, o) in outs.iter_mut().enumerate() {
            lanes[i % threads].push((i, o));
        }
        let handles: Vec<_> = openers
            .iter_mut()
            .zip(lanes)
            .map(|(opener, lane)| {
                scope.spawn(move || {
                    lane.into_iter()
                        .map(|(i, out)| {
                            let j = &jobs[i];
                            (i, opener.open_into(domain, &j.id, j.shards, out))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for h in handles {
            for (i, r) in h.join().expect("codec worker panicked") {
                results[i] = Some(r);
            }
        }
    });
    results
        .into_iter()
        .map(|r| r.expect("every job opened"))
        .collect()
}
