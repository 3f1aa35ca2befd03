//! `gridstore bench codec`: each codec stage alone and the whole seal and
//! open pipelines, on random and on text-like data, for several RS shapes.

use crate::{median, median_ratio, Case, Timing};
use codec::parallel::{open_batch, seal_batch, OpenJob, SealJob};
use codec::{
    chunker::chunk_boundaries, ChunkId, ChunkerConfig, DomainKey, ErasureParams, Opener,
    SealConfig, SealedChunk, Sealer,
};
use rand::{Rng, RngCore, SeedableRng};
use serde::Serialize;

pub const CHUNK: usize = 1 << 20;
/// Distinct chunks cycled through, so stages read from memory rather than
/// re-hashing one L2-resident buffer.
const POOL: usize = 16;
pub const SHAPES: [(usize, usize); 3] = [(4, 2), (8, 4), (10, 4)];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DataKind {
    Random,
    Text,
}

/// One measured figure.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub stage: String,
    pub data: DataKind,
    /// "k+m" for stages that depend on the erasure shape.
    pub rs: Option<String>,
    pub threads: usize,
    pub gbps: f64,
}

/// The whole report; the top-level fields are RS(4,2), random data, 1 MiB
/// chunks, single core unless named otherwise.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub chunk_bytes: usize,
    pub memcpy_gbps: f64,
    pub aead_gbps: f64,
    pub seal_gbps: f64,
    pub open_gbps: f64,
    pub seal_2threads_gbps: f64,
    pub open_2threads_gbps: f64,
    /// Chunk id (keyed BLAKE3 of the plaintext) plus seal: everything a new
    /// chunk costs on the write path.
    pub id_seal_gbps: f64,
    pub id_seal_2threads_gbps: f64,
    /// The AEAD alone on two threads: the machine's own scaling ceiling.
    pub aead_2threads_gbps: f64,
    /// seal (of a chunk whose id is known) / AEAD alone (target >= 0.45).
    pub seal_vs_aead: f64,
    /// open / AEAD alone (target >= 0.55).
    pub open_vs_aead: f64,
    /// seal with two threads / seal with one (target >= 1.7).
    pub seal_2threads_scaling: f64,
    /// AEAD two threads / one: what this machine allows (a busy neighbour on
    /// the second core shows up here first).
    pub aead_2threads_scaling: f64,
    pub rows: Vec<Row>,
}

fn pool(kind: DataKind) -> Vec<Vec<u8>> {
    let mut r = rand::rngs::StdRng::seed_from_u64(7);
    (0..POOL)
        .map(|_| match kind {
            DataKind::Random => {
                let mut v = vec![0u8; CHUNK];
                r.fill_bytes(&mut v);
                v
            }
            DataKind::Text => text(&mut r, CHUNK),
        })
        .collect()
}

/// Log-like text: words, numbers and timestamps; zstd gets about 3-4x.
fn text(r: &mut impl Rng, len: usize) -> Vec<u8> {
    const WORDS: [&str; 24] = [
        "GET", "PUT", "object", "bucket", "shard", "repair", "node", "site", "farm", "ok",
        "latency", "bytes", "user", "version", "chunk", "request", "from", "to", "the", "error",
        "retry", "scrub", "lease", "epoch",
    ];
    let mut v = Vec::with_capacity(len + 64);
    while v.len() < len {
        v.extend_from_slice(
            format!(
                "2026-11-{:02}T{:02}:{:02}:{:02}Z ",
                r.gen_range(1..30),
                r.gen_range(0..24),
                r.gen_range(0..60),
                r.gen_range(0..60)
            )
            .as_bytes(),
        );
        for _ in 0..r.gen_range(4..12) {
            v.extend_from_slice(WORDS[r.gen_range(0..WORDS.len())].as_bytes());
            v.push(b' ');
        }
        v.extend_from_slice(format!("{}\n", r.gen_range(0..100_000)).as_bytes());
    }
    v.truncate(len);
    v
}

struct Runner {
    timing: Timing,
    rows: Vec<Row>,
}

impl Runner {
    fn record(
        &mut self,
        stage: &str,
        data: DataKind,
        rs: Option<(usize, usize)>,
        threads: usize,
        gbps: f64,
    ) -> f64 {
        self.rows.push(Row {
            stage: stage.to_string(),
            data,
            rs: rs.map(|(k, m)| format!("{k}+{m}")),
            threads,
            gbps,
        });
        gbps
    }
}

/// Run every measurement. Takes tens of seconds with `Timing::full()`.
pub fn run(timing: Timing) -> Report {
    let mut r = Runner {
        timing,
        rows: Vec::new(),
    };
    let domain = DomainKey::new([42u8; 32]);
    for kind in [DataKind::Random, DataKind::Text] {
        let chunks = pool(kind);
        let t = r.timing;
        let mut i = 0;
        let mut next = || {
            i = (i + 1) % POOL;
            i
        };

        let mut dst = vec![0u8; CHUNK];
        let g = t.gbps(CHUNK, || dst.copy_from_slice(&chunks[next()]));
        r.record("memcpy", kind, None, 1, g);

        let whole: Vec<u8> = chunks.concat();
        let cdc = ChunkerConfig::default();
        let g = t.gbps(whole.len(), || {
            std::hint::black_box(chunk_boundaries(cdc, &whole).map(|b| b.len()).ok());
        });
        r.record("cdc", kind, None, 1, g);

        let g = t.gbps(CHUNK, || {
            std::hint::black_box(domain.chunk_id(&chunks[next()]));
        });
        r.record("blake3", kind, None, 1, g);

        let mut zc = zstd::bulk::Compressor::new(codec::DEFAULT_ZSTD_LEVEL).expect("zstd level");
        let mut zout = vec![0u8; zstd::zstd_safe::compress_bound(CHUNK)];
        let g = t.gbps(CHUNK, || {
            std::hint::black_box(zc.compress_to_buffer(&chunks[next()], &mut zout[..]).ok());
        });
        r.record("zstd_compress", kind, None, 1, g);
        if kind == DataKind::Text {
            let compressed =
                zstd::bulk::compress(&chunks[0], codec::DEFAULT_ZSTD_LEVEL).expect("zstd");
            let mut zd = zstd::bulk::Decompressor::new().expect("zstd");
            let mut plain = vec![0u8; CHUNK];
            let g = t.gbps(CHUNK, || {
                std::hint::black_box(zd.decompress_to_buffer(&compressed, &mut plain[..]).ok());
            });
            r.record("zstd_decompress", kind, None, 1, g);
        }

        let key = aead_key();
        let mut buf = vec![0u8; CHUNK];
        let g = t.gbps(CHUNK, || aead_once(&key, &chunks[next()], &mut buf));
        r.record("aead_chacha20poly1305", kind, None, 1, g);

        for (k, m) in SHAPES {
            let rs_shape = Some((k, m));
            let params = ErasureParams::new(k, m).expect("valid shape");
            let shard = (CHUNK / k).div_ceil(64) * 64;
            let rs = reed_solomon_erasure::galois_8::ReedSolomon::new(k, m).expect("rs");
            let mut stripe: Vec<Vec<u8>> = (0..k + m)
                .map(|i| chunks[i % POOL][..shard].to_vec())
                .collect();
            let g = t.gbps(CHUNK, || {
                let (d, p) = stripe.split_at_mut(k);
                std::hint::black_box(rs.encode_sep(d, p).ok());
            });
            r.record("rs_encode", kind, rs_shape, 1, g);
            let mut slots: Vec<(Vec<u8>, bool)> =
                stripe.iter().map(|s| (s.clone(), true)).collect();
            let g = t.gbps(CHUNK, || {
                for s in slots.iter_mut().take(m) {
                    s.1 = false;
                }
                std::hint::black_box(rs.reconstruct_data(&mut slots).ok());
            });
            r.record(&format!("rs_reconstruct_{m}_lost"), kind, rs_shape, 1, g);

            // "seal" is the stage the write path runs on a chunk that the
            // dedup check found new: its id is already known. "id+seal"
            // includes computing that id (the keyed BLAKE3 pass).
            let ids: Vec<ChunkId> = chunks.iter().map(|c| domain.chunk_id(c)).collect();
            let mut sealer = Sealer::new(SealConfig::new(params)).expect("sealer");
            let mut out = SealedChunk::default();
            let g = t.gbps(CHUNK, || {
                let j = next();
                sealer
                    .seal_chunk(&domain, ids[j], &chunks[j], &mut out)
                    .expect("seal");
            });
            r.record("seal", kind, rs_shape, 1, g);
            let g = t.gbps(CHUNK, || {
                sealer
                    .seal_into(&domain, &chunks[next()], &mut out)
                    .expect("seal");
            });
            r.record("id+seal", kind, rs_shape, 1, g);

            let sealed: Vec<SealedChunk> = chunks
                .iter()
                .map(|c| sealer.seal(&domain, c).expect("seal"))
                .collect();
            let shards: Vec<Vec<Vec<u8>>> = sealed.iter().map(|s| s.shards()).collect();
            let mut opener = Opener::new().expect("opener");
            let mut plain = Vec::with_capacity(CHUNK);
            let g = t.gbps(CHUNK, || {
                let j = next();
                opener
                    .open_into(&domain, &sealed[j].id(), &shards[j], &mut plain)
                    .expect("open");
            });
            r.record("open", kind, rs_shape, 1, g);
            let degraded: Vec<Vec<Vec<u8>>> = shards.iter().map(|s| s[m..].to_vec()).collect();
            let g = t.gbps(CHUNK, || {
                let j = next();
                opener
                    .open_into(&domain, &sealed[j].id(), &degraded[j], &mut plain)
                    .expect("open");
            });
            r.record(&format!("open_{m}_data_lost"), kind, rs_shape, 1, g);

            let mut sealers: Vec<Sealer> = (0..2)
                .map(|_| Sealer::new(SealConfig::new(params)).expect("sealer"))
                .collect();
            let mut outs: Vec<SealedChunk> = (0..POOL).map(|_| SealedChunk::default()).collect();
            for (stage, with_ids) in [("seal", true), ("id+seal", false)] {
                let jobs: Vec<SealJob<'_>> = chunks
                    .iter()
                    .zip(&ids)
                    .map(|(c, id)| SealJob {
                        id: with_ids.then_some(*id),
                        data: c,
                    })
                    .collect();
                let g = t.gbps(CHUNK * POOL, || {
                    for res in seal_batch(&mut sealers, &domain, &jobs, &mut outs) {
                        res.expect("seal");
                    }
                });
                r.record(stage, kind, rs_shape, 2, g);
            }
            let mut openers: Vec<Opener> = (0..2).map(|_| Opener::new().expect("opener")).collect();
            let jobs: Vec<OpenJob<'_, Vec<u8>>> = open_jobs(&sealed, &shards);
            let mut plains: Vec<Vec<u8>> = vec![Vec::new(); POOL];
            let g = t.gbps(CHUNK * POOL, || {
                for res in open_batch(&mut openers, &domain, &jobs, &mut plains) {
                    res.expect("open");
                }
            });
            r.record("open", kind, rs_shape, 2, g);
        }
    }
    let h = headline(r.timing, &domain);
    Report {
        chunk_bytes: CHUNK,
        memcpy_gbps: h.memcpy,
        aead_gbps: h.aead,
        seal_gbps: h.seal,
        open_gbps: h.open,
        seal_2threads_gbps: h.seal2,
        open_2threads_gbps: h.open2,
        id_seal_gbps: h.id_seal,
        id_seal_2threads_gbps: h.id_seal2,
        aead_2threads_gbps: h.aead2,
        seal_vs_aead: h.seal_vs_aead,
        open_vs_aead: h.open_vs_aead,
        seal_2threads_scaling: h.seal_scaling,
        aead_2threads_scaling: h.aead_scaling,
        rows: r.rows,
    }
}

struct Headline {
    memcpy: f64,
    aead: f64,
    aead2: f64,
    seal: f64,
    seal2: f64,
    id_seal: f64,
    id_seal2: f64,
    open: f64,
    open2: f64,
    seal_vs_aead: f64,
    open_vs_aead: f64,
    seal_scaling: f64,
    aead_scaling: f64,
}

/// One open job per sealed chunk, over its shards.
fn open_jobs<'a>(sealed: &[SealedChunk], shards: &'a [Vec<Vec<u8>>]) -> Vec<OpenJob<'a, Vec<u8>>> {
    sealed
        .iter()
        .zip(shards)
        .map(|(s, sh)| OpenJob {
            id: s.id(),
            shards: sh,
        })
        .collect()
}

fn aead_key() -> ring::aead::LessSafeKey {
    ring::aead::LessSafeKey::new(
        ring::aead::UnboundKey::new(&ring::aead::CHACHA20_POLY1305, &[9u8; 32]).expect("key"),
    )
}

/// Copy a chunk in and seal it in place: the AEAD stage alone, reading fresh
/// data as the pipeline does (the sealer makes the same copy).
fn aead_once(key: &ring::aead::LessSafeKey, src: &[u8], buf: &mut [u8]) {
    buf.copy_from_slice(src);
    std::hint::black_box(
        key.seal_in_place_separate_tag(
            ring::aead::Nonce::assume_unique_for_key([0u8; 12]),
            ring::aead::Aad::empty(),
            buf,
        )
        .ok(),
    );
}

/// The figures the targets are stated in (RS(4,2), random data, 1 MiB),
/// measured interleaved so their ratios hold on a noisy machine.
fn headline(t: Timing, domain: &DomainKey) -> Headline {
    let chunks = pool(DataKind::Random);
    let params = ErasureParams::new(4, 2).expect("valid shape");
    let ids: Vec<ChunkId> = chunks.iter().map(|c| domain.chunk_id(c)).collect();
    let key = aead_key();
    let mut sealer = Sealer::new(SealConfig::new(params)).expect("sealer");
    let sealed: Vec<SealedChunk> = chunks
        .iter()
        .map(|c| sealer.seal(domain, c).expect("seal"))
        .collect();
    let shards: Vec<Vec<Vec<u8>>> = sealed.iter().map(|s| s.shards()).collect();
    let new_sealer = || Sealer::new(SealConfig::new(params)).expect("sealer");
    let mut sealers: Vec<Sealer> = (0..2).map(|_| new_sealer()).collect();
    let mut sealers_b: Vec<Sealer> = (0..2).map(|_| new_sealer()).collect();
    let mut sealer_b = new_sealer();
    let mut sealer_c = new_sealer();
    let mut outs_b: Vec<SealedChunk> = (0..POOL).map(|_| SealedChunk::default()).collect();
    let mut openers: Vec<Opener> = (0..2).map(|_| Opener::new().expect("opener")).collect();
    let mut opener = Opener::new().expect("opener");
    let with_ids: Vec<SealJob<'_>> = chunks
        .iter()
        .zip(&ids)
        .map(|(c, id)| SealJob {
            id: Some(*id),
            data: c,
        })
        .collect();
    let without_ids: Vec<SealJob<'_>> = chunks
        .iter()
        .map(|c| SealJob { id: None, data: c })
        .collect();
    let open_jobs: Vec<OpenJob<'_, Vec<u8>>> = open_jobs(&sealed, &shards);

    let mut outs: Vec<SealedChunk> = (0..POOL).map(|_| SealedChunk::default()).collect();
    let mut plains: Vec<Vec<u8>> = vec![Vec::new(); POOL];
    let mut out = SealedChunk::default();
    let mut plain = Vec::with_capacity(CHUNK);
    let mut dst = vec![0u8; CHUNK];
    let mut buf1 = vec![0u8; CHUNK];
    let mut bufs = vec![vec![0u8; CHUNK]; 2];
    let mut out2 = SealedChunk::default();
    let mut out3 = SealedChunk::default();
    let (mut a, mut b, mut c, mut d, mut e) = (0, 0, 0, 0, 0);
    let step = |i: &mut usize| {
        *i = (*i + 1) % POOL;
        *i
    };
    let mut memcpy = || dst.copy_from_slice(&chunks[step(&mut a)]);
    let mut aead = || aead_once(&key, &chunks[step(&mut b)], &mut buf1);
    let mut aead2 = || {
        std::thread::scope(|s| {
            for (t, buf) in bufs.iter_mut().enumerate() {
                let (key, chunks) = (&key, &chunks);
                s.spawn(move || {
                    for j in (t..POOL).step_by(2) {
                        aead_once(key, &chunks[j], buf);
                    }
                });
            }
        })
    };
    let mut seal = || {
        let j = step(&mut c);
        sealer
            .seal_chunk(domain, ids[j], &chunks[j], &mut out)
            .expect("seal")
    };
    let mut id_seal = || {
        let j = step(&mut d);
        sealer_b
            .seal_into(domain, &chunks[j], &mut out2)
            .expect("seal")
    };
    let mut open = || {
        let j = step(&mut e);
        opener
            .open_into(domain, &sealed[j].id(), &shards[j], &mut plain)
            .expect("open");
    };
    let mut rates = t.interleaved(&mut [
        Case {
            bytes: CHUNK,
            run: &mut memcpy,
        },
        Case {
            bytes: CHUNK,
            run: &mut aead,
        },
        Case {
            bytes: CHUNK * POOL,
            run: &mut aead2,
        },
        Case {
            bytes: CHUNK,
            run: &mut seal,
        },
        Case {
            bytes: CHUNK,
            run: &mut id_seal,
        },
        Case {
            bytes: CHUNK,
            run: &mut open,
        },
    ]);
    let mut seal2 = || {
        for r in seal_batch(&mut sealers, domain, &with_ids, &mut outs) {
            r.expect("seal");
        }
    };
    let mut id_seal2 = || {
        for r in seal_batch(&mut sealers_b, domain, &without_ids, &mut outs_b) {
            r.expect("seal");
        }
    };
    let mut open2 = || {
        for r in open_batch(&mut openers, domain, &open_jobs, &mut plains) {
            r.expect("open");
        }
    };
    // The two-thread cases run in their own interleaved block, re-measuring
    // single-thread seal beside them for the scaling ratio.
    let mut seal1 = || {
        let j = step(&mut c);
        sealer_c
            .seal_chunk(domain, ids[j], &chunks[j], &mut out3)
            .expect("seal")
    };
    let more = t.interleaved(&mut [
        Case {
            bytes: CHUNK,
            run: &mut seal1,
        },
        Case {
            bytes: CHUNK * POOL,
            run: &mut seal2,
        },
        Case {
            bytes: CHUNK * POOL,
            run: &mut id_seal2,
        },
        Case {
            bytes: CHUNK * POOL,
            run: &mut open2,
        },
    ]);
    rates.extend(more);
    let m = |i: usize| median(rates[i].clone());
    Headline {
        memcpy: m(0),
        aead: m(1),
        aead2: m(2),
        seal: m(3),
        id_seal: m(4),
        open: m(5),
        seal2: m(7),
        id_seal2: m(8),
        open2: m(9),
        seal_vs_aead: median_ratio(&rates[3], &rates[1]),
        open_vs_aead: median_ratio(&rates[5], &rates[1]),
        seal_scaling: median_ratio(&rates[7], &rates[6]),
        aead_scaling: median_ratio(&rates[2], &rates[1]),
    }
}

/// The report as a fixed-width table.
pub fn table(report: &Report) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "{:<24} {:<7} {:<6} {:>7} {:>10}\n",
        "stage", "data", "rs", "threads", "GB/s"
    ));
    for row in &report.rows {
        s.push_str(&format!(
            "{:<24} {:<7} {:<6} {:>7} {:>10.2}\n",
            row.stage,
            format!("{:?}", row.data).to_lowercase(),
            row.rs.as_deref().unwrap_or("-"),
            row.threads,
            row.gbps
        ));
    }
    s.push_str(&format!(
        "\nRS(4,2), random data, 1 MiB chunks:\n  seal / AEAD alone   {:.2}  (target >= 0.45)\n  open / AEAD alone   {:.2}  (target >= 0.55)\n  seal 2 threads / 1  {:.2}  (target >= 1.70)\n  id+seal / AEAD      {:.2}  (seal including the chunk-id hash)\n  AEAD 2 threads / 1  {:.2}  (this machine's own ceiling)\n",
        report.seal_vs_aead, report.open_vs_aead, report.seal_2threads_scaling, report.id_seal_gbps / report.aead_gbps, report.aead_2threads_scaling
    ));
    s
}
