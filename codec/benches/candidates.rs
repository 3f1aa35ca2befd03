//! Library candidates for the two stages a crate choice decides: Reed-Solomon
//! (reed-solomon-erasure vs reed-solomon-simd) and ChaCha20-Poly1305 (RustCrypto
//! vs ring). The figures and the choice are recorded in benches/README.md.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rand::RngCore;
use std::time::Duration;

const CHUNK: usize = 1 << 20;

fn random(len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rand::thread_rng().fill_bytes(&mut v);
    v
}

fn aead(c: &mut Criterion) {
    let mut g = c.benchmark_group("aead_1MiB");
    g.throughput(Throughput::Bytes(CHUNK as u64));
    let key = [7u8; 32];
    let mut buf = random(CHUNK);

    g.bench_function("rustcrypto_chacha20poly1305_seal", |b| {
        use chacha20poly1305::aead::{AeadInPlace, KeyInit};
        let cipher = chacha20poly1305::ChaCha20Poly1305::new(&key.into());
        let nonce = [0u8; 12];
        b.iter(|| {
            cipher
                .encrypt_in_place_detached(&nonce.into(), b"", &mut buf)
                .expect("seal")
        })
    });
    g.bench_function("ring_chacha20poly1305_seal", |b| {
        use ring::aead::{LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};
        let k = LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &key).expect("key"));
        b.iter(|| {
            k.seal_in_place_separate_tag(
                Nonce::assume_unique_for_key([0u8; 12]),
                ring::aead::Aad::empty(),
                &mut buf,
            )
            .expect("seal")
        })
    });
    g.finish();
}

fn reed_solomon(c: &mut Criterion) {
    let mut g = c.benchmark_group("rs_1MiB");
    g.throughput(Throughput::Bytes(CHUNK as u64));
    for (k, m) in [(4usize, 2usize), (8, 4), (10, 4)] {
        // Shards are padded to 64 bytes, as the codec does (reed-solomon-simd
        // also needs an even length).
        let shard = (CHUNK / k).div_ceil(64) * 64;
        let data: Vec<Vec<u8>> = (0..k).map(|_| random(shard)).collect();
        let label = format!("{k}+{m}");

        let rse = reed_solomon_erasure::galois_8::ReedSolomon::new(k, m).expect("rs");
        let mut parity = vec![vec![0u8; shard]; m];
        g.bench_with_input(BenchmarkId::new("erasure_encode", &label), &(), |b, _| {
            b.iter(|| rse.encode_sep(&data, &mut parity).expect("encode"))
        });
        g.bench_with_input(BenchmarkId::new("simd_encode", &label), &(), |b, _| {
            let mut enc = reed_solomon_simd::ReedSolomonEncoder::new(k, m, shard).expect("enc");
            b.iter(|| {
                enc.reset(k, m, shard).expect("reset");
                for d in &data {
                    enc.add_original_shard(d).expect("add");
                }
                let r = enc.encode().expect("encode");
                r.recovery(0).map(|s| s.len())
            })
        });

        for lost in 1..=m {
            // Lose the first `lost` data shards: the worst case, since every
            // lost one must be recomputed from parity.
            let mut all: Vec<Vec<u8>> = data.clone();
            all.extend(parity.iter().cloned());
            g.bench_with_input(
                BenchmarkId::new(format!("erasure_reconstruct_lost{lost}"), &label),
                &(),
                |b, _| {
                    let mut work: Vec<(Vec<u8>, bool)> =
                        all.iter().map(|s| (s.clone(), true)).collect();
                    b.iter(|| {
                        for w in work.iter_mut().take(lost) {
                            w.1 = false;
                        }
                        rse.reconstruct_data(&mut work).expect("reconstruct")
                    })
                },
            );
            let simd_parity = reed_solomon_simd::encode(k, m, &data).expect("encode");
            g.bench_with_input(
                BenchmarkId::new(format!("simd_reconstruct_lost{lost}"), &label),
                &(),
                |b, _| {
                    let mut dec =
                        reed_solomon_simd::ReedSolomonDecoder::new(k, m, shard).expect("dec");
                    b.iter(|| {
                        dec.reset(k, m, shard).expect("reset");
                        for (i, d) in data.iter().enumerate().skip(lost) {
                            dec.add_original_shard(i, d).expect("add");
                        }
                        for (i, p) in simd_parity.iter().enumerate().take(lost) {
                            dec.add_recovery_shard(i, p).expect("add");
                        }
                        dec.decode()
                            .expect("decode")
                            .restored_original_iter()
                            .count()
                    })
                },
            );
        }
    }
    g.finish();
}

criterion_group! {
    name = candidates;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(20);
    targets = aead, reed_solomon
}
criterion_main!(candidates);
