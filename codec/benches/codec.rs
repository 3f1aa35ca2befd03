//! Criterion benches of each codec stage and of the seal/open pipelines,
//! on 1 MiB chunks. `gridstore bench codec` measures the same things for
//! farm operators; these are for developers comparing changes.

use codec::{
    chunker::chunk_boundaries, ChunkerConfig, DomainKey, ErasureParams, Opener, SealConfig,
    SealedChunk, Sealer,
};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rand::{RngCore, SeedableRng};
use std::time::Duration;

const CHUNK: usize = 1 << 20;

fn random(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

fn text(len: usize) -> Vec<u8> {
    let line =
        b"2026-11-21T10:00:00Z GET bucket/object shard repaired on node 7 of site 3 in 12 ms\n";
    line.iter()
        .copied()
        .cycle()
        .take(len)
        .enumerate()
        .map(|(i, b)| {
            if i % 97 == 0 {
                b'0' + (i % 10) as u8
            } else {
                b
            }
        })
        .collect()
}

fn stages(c: &mut Criterion) {
    let mut g = c.benchmark_group("stage");
    g.throughput(Throughput::Bytes(CHUNK as u64));
    let data = random(CHUNK, 1);
    let domain = DomainKey::new([1; 32]);

    let mut dst = vec![0u8; CHUNK];
    g.bench_function("memcpy", |b| b.iter(|| dst.copy_from_slice(&data)));
    g.bench_function("blake3_keyed", |b| b.iter(|| domain.chunk_id(&data)));
    let big = random(16 * CHUNK, 2);
    g.throughput(Throughput::Bytes(big.len() as u64));
    g.bench_function("fastcdc_16MiB", |b| {
        b.iter(|| chunk_boundaries(ChunkerConfig::default(), &big).map(|v| v.len()))
    });
    g.throughput(Throughput::Bytes(CHUNK as u64));
    let txt = text(CHUNK);
    let mut zc = zstd::bulk::Compressor::new(codec::DEFAULT_ZSTD_LEVEL).unwrap();
    g.bench_function("zstd3_compress_text", |b| {
        b.iter(|| zc.compress(&txt).map(|v| v.len()))
    });
    let compressed = zstd::bulk::compress(&txt, codec::DEFAULT_ZSTD_LEVEL).unwrap();
    g.bench_function("zstd_decompress_text", |b| {
        b.iter(|| zstd::bulk::decompress(&compressed, CHUNK).map(|v| v.len()))
    });
    g.finish();
}

fn pipelines(c: &mut Criterion) {
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Bytes(CHUNK as u64));
    let domain = DomainKey::new([3; 32]);
    for (kind, data) in [("random", random(CHUNK, 3)), ("text", text(CHUNK))] {
        for (k, m) in [(4usize, 2usize), (8, 4), (10, 4)] {
            let label = format!("{kind}/{k}+{m}");
            let mut sealer =
                Sealer::new(SealConfig::new(ErasureParams::new(k, m).unwrap())).unwrap();
            let id = domain.chunk_id(&data);
            let mut out = SealedChunk::default();
            g.bench_with_input(BenchmarkId::new("seal", &label), &(), |b, _| {
                b.iter(|| sealer.seal_chunk(&domain, id, &data, &mut out).unwrap())
            });
            g.bench_with_input(BenchmarkId::new("id+seal", &label), &(), |b, _| {
                b.iter(|| sealer.seal_into(&domain, &data, &mut out).unwrap())
            });
            let shards = out.shards();
            let mut opener = Opener::new().unwrap();
            let mut plain = Vec::new();
            g.bench_with_input(BenchmarkId::new("open", &label), &(), |b, _| {
                b.iter(|| opener.open_into(&domain, &id, &shards, &mut plain).unwrap())
            });
            g.bench_with_input(BenchmarkId::new("open_m_data_lost", &label), &(), |b, _| {
                b.iter(|| {
                    opener
                        .open_into(&domain, &id, &shards[m..], &mut plain)
                        .unwrap()
                })
            });
        }
    }
    g.finish();
}

criterion_group! {
    name = codec;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(20);
    targets = stages, pipelines
}
criterion_main!(codec);
