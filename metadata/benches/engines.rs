//! The metadata engines side by side, on the record sizes a node stores
//! (a sealed manifest of a small object is about 400 bytes). Every write
//! is durable (fsync), so the write cases measure the disk as much as the
//! engine: compare engines within one run, on one machine.
//!
//! `cargo bench -p gridstore-metadata --bench engines` measures redb;
//! add `--features rocksdb` (with `ROCKSDB_LIB_DIR`, see README) for both.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use metadata::db::{Batch, Db, Engine, Table};
use std::sync::Arc;
use std::time::{Duration, Instant};

const RECORD: usize = 400;

fn key(i: u64) -> [u8; 32] {
    *blake3::hash(&i.to_le_bytes()).as_bytes()
}

fn filled(engine: Engine, n: u64) -> (tempfile::TempDir, Arc<Db>) {
    let dir = tempfile::tempdir_in(std::env::var_os("GRIDSTORE_BENCH_DIR").unwrap_or(".".into()))
        .expect("temp dir");
    let db = Db::open_with(dir.path(), engine).expect("open");
    for first in (0..n).step_by(1000) {
        let mut b = Batch::new();
        for i in first..(first + 1000).min(n) {
            b.put_raw(Table::Versions, &key(i), vec![7; RECORD]);
        }
        db.write(b).expect("fill");
    }
    (dir, Arc::new(db))
}

fn engines(c: &mut Criterion) {
    let mut g = c.benchmark_group("metadata");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(5));
    for engine in Engine::compiled() {
        let (_dir, db) = filled(engine, 100_000);
        g.throughput(Throughput::Elements(1));
        let mut i = 1_000_000u64;
        g.bench_function(BenchmarkId::new("put_1_writer", engine), |b| {
            b.iter(|| {
                i += 1;
                db.put_raw(Table::Versions, &key(i), &[7; RECORD])
                    .expect("put")
            })
        });
        // Sixteen writers at once, as sixteen clients' PUTs reach a node:
        // time per write, all writers together.
        let mut base = 2_000_000u64;
        g.bench_function(BenchmarkId::new("put_16_writers", engine), |b| {
            b.iter_custom(|iters| {
                let per = iters.div_ceil(16).max(1);
                base += 16 * per;
                let start = Instant::now();
                std::thread::scope(|s| {
                    for w in 0..16 {
                        let db = &db;
                        s.spawn(move || {
                            for j in 0..per {
                                let k = key(base + w * per + j);
                                db.put_raw(Table::Versions, &k, &[7; RECORD]).expect("put");
                            }
                        });
                    }
                });
                start.elapsed().mul_f64(iters as f64 / (16 * per) as f64)
            })
        });
        let mut r = 0u64;
        g.bench_function(BenchmarkId::new("get", engine), |b| {
            b.iter(|| {
                r = (r + 7919) % 100_000;
                db.get_raw(Table::Versions, &key(r)).expect("get")
            })
        });
        g.throughput(Throughput::Elements(1000));
        let mut s = 0u64;
        g.bench_function(BenchmarkId::new("scan_1000", engine), |b| {
            b.iter(|| {
                s = (s + 104_729) % 100_000;
                let page = db
                    .scan(Table::Versions, &key(s)[..2], None, 1000)
                    .expect("scan");
                assert!(!page.items.is_empty());
                page
            })
        });
    }
    g.finish();
}

criterion_group!(benches, engines);
criterion_main!(benches);
