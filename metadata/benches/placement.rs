//! Placement cost per chunk. Every node reconciling after a map change
//! places each chunk it references (under the new map and the previous
//! one), and every gateway read and write places its chunk, so this is
//! paid thousands of times per second during a rebuild.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use metadata::model::NodeState;
use metadata::placement::{chunk_nodes, chunk_order};

#[path = "../tests/support/mod.rs"]
mod support;
use support::map;

fn placement(c: &mut Criterion) {
    let mut g = c.benchmark_group("placement");
    g.throughput(Throughput::Elements(1));
    let ids: Vec<[u8; 32]> = (0..1024u64)
        .map(|i| *blake3::hash(&i.to_le_bytes()).as_bytes())
        .collect();
    for (sites, per_site) in [(4usize, 2usize), (16, 4)] {
        let all_up = map(&vec![per_site; sites]);
        let mut one_down = all_up.clone();
        one_down.nodes[1].state = NodeState::Down as i32;
        let label = format!("{}x{}", sites, per_site);
        for (what, m) in [("up", &all_up), ("one_down", &one_down)] {
            let mut i = 0;
            g.bench_with_input(
                BenchmarkId::new(format!("chunk_nodes_4+2_{what}"), &label),
                m,
                |b, m| {
                    b.iter(|| {
                        i = (i + 1) % ids.len();
                        chunk_nodes(m, &ids[i], 6).expect("placement")
                    })
                },
            );
        }
        let mut i = 0;
        g.bench_with_input(
            BenchmarkId::new("chunk_order_4+2", &label),
            &all_up,
            |b, m| {
                b.iter(|| {
                    i = (i + 1) % ids.len();
                    chunk_order(m, &ids[i], 6).expect("order")
                })
            },
        );
    }
    g.finish();
}

criterion_group!(benches, placement);
criterion_main!(benches);
