mod common;

use codec::chunker::chunk_boundaries;
use codec::{Chunker, ChunkerConfig, CodecError, ReadChunker};
use common::*;
use proptest::prelude::*;

fn small() -> ChunkerConfig {
    ChunkerConfig::new(4096, 16384, 65536).unwrap()
}

fn push_boundaries(cfg: ChunkerConfig, data: &[u8], feeds: &[usize]) -> Vec<(usize, usize)> {
    let mut c = Chunker::new(cfg).unwrap();
    let mut out = Vec::new();
    let mut pos = 0;
    let mut f = feeds.iter().cycle();
    while pos < data.len() {
        let n = (*f.next().unwrap()).min(data.len() - pos);
        c.push(&data[pos..pos + n]);
        pos += n;
        while let Some(ch) = c.next_chunk() {
            out.push((ch.offset as usize, ch.data.len()));
            assert_eq!(
                ch.data,
                &data[ch.offset as usize..ch.offset as usize + ch.data.len()]
            );
        }
        assert!(c.pending() < cfg.max + n, "buffering bounded");
    }
    c.finish();
    while let Some(ch) = c.next_chunk() {
        out.push((ch.offset as usize, ch.data.len()));
    }
    out
}

/// As [`push_boundaries`], taking chunks as soon as they are decided.
fn decided_boundaries(cfg: ChunkerConfig, data: &[u8], feeds: &[usize]) -> Vec<(usize, usize)> {
    let mut c = Chunker::new(cfg).unwrap();
    let mut out = Vec::new();
    let mut pos = 0;
    let mut f = feeds.iter().cycle();
    while pos < data.len() {
        let n = (*f.next().unwrap()).min(data.len() - pos);
        c.push(&data[pos..pos + n]);
        pos += n;
        while let Some(ch) = c.next_decided_chunk() {
            out.push((ch.offset as usize, ch.data.len()));
            assert_eq!(
                ch.data,
                &data[ch.offset as usize..ch.offset as usize + ch.data.len()]
            );
        }
        assert_eq!(c.position() as usize + c.pending(), pos);
    }
    c.finish();
    while let Some(ch) = c.next_decided_chunk() {
        out.push((ch.offset as usize, ch.data.len()));
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn chunks_decided_early_have_the_same_boundaries(
        len in 0usize..600_000,
        seed in any::<u64>(),
        feeds in prop::collection::vec(1usize..70_000, 1..8),
    ) {
        let data = random_bytes(len, seed);
        let whole = chunk_boundaries(small(), &data).unwrap();
        prop_assert_eq!(decided_boundaries(small(), &data, &feeds), whole);
    }

    #[test]
    fn push_api_matches_whole_input(
        len in 0usize..600_000,
        seed in any::<u64>(),
        feeds in prop::collection::vec(1usize..100_000, 1..8),
    ) {
        let data = random_bytes(len, seed);
        let whole = chunk_boundaries(small(), &data).unwrap();
        prop_assert_eq!(push_boundaries(small(), &data, &feeds), whole.clone());
        let mut r = ReadChunker::new(&data[..], small()).unwrap();
        let mut via_read = Vec::new();
        while let Some(ch) = r.next_chunk().unwrap() {
            via_read.push((ch.offset as usize, ch.data.len()));
        }
        prop_assert_eq!(via_read, whole.clone());
        // Contiguous cover of the input, sizes within bounds.
        let mut pos = 0;
        for (i, &(off, n)) in whole.iter().enumerate() {
            prop_assert_eq!(off, pos);
            prop_assert!(n <= 65536);
            if i + 1 < whole.len() { prop_assert!(n >= 4096); }
            pos += n;
        }
        prop_assert_eq!(pos, data.len());
    }
}

#[test]
fn default_sizes_average_near_one_mib() {
    let data = random_bytes(64 << 20, 1);
    let b = chunk_boundaries(ChunkerConfig::default(), &data).unwrap();
    let avg = data.len() / b.len();
    assert!((512 << 10..2 << 20).contains(&avg), "average chunk {avg}");
    assert!(b
        .iter()
        .rev()
        .skip(1)
        .all(|&(_, n)| (256 << 10..=4 << 20).contains(&n)));
}

#[test]
fn insertion_near_start_keeps_later_boundaries() {
    let cfg = ChunkerConfig::default();
    let original = random_bytes(48 << 20, 2);
    let mut edited = original[..1000].to_vec();
    edited.extend_from_slice(b"a few inserted bytes near the start");
    edited.extend_from_slice(&original[1000..]);
    let shift = edited.len() - original.len();

    let before = chunk_boundaries(cfg, &original).unwrap();
    let after: std::collections::HashSet<(usize, usize)> = chunk_boundaries(cfg, &edited)
        .unwrap()
        .into_iter()
        .map(|(o, n)| (o - shift.min(o), n))
        .collect();
    let kept = before.iter().filter(|b| after.contains(b)).count();
    eprintln!("{kept} of {} chunks unchanged", before.len());
    // Only the chunk holding the insertion (and at most its neighbour) change.
    assert!(kept + 2 >= before.len(), "{kept} of {} kept", before.len());
}

#[test]
fn seed_changes_boundaries() {
    let data = random_bytes(8 << 20, 3);
    let a = chunk_boundaries(ChunkerConfig::default(), &data).unwrap();
    let b = chunk_boundaries(ChunkerConfig::default().with_seed(42), &data).unwrap();
    assert_ne!(a, b);
}

#[test]
fn invalid_sizes_are_rejected() {
    for (min, avg, max) in [(0, 1024, 4096), (8192, 4096, 16384), (1024, 4096, 64 << 20)] {
        assert!(matches!(
            ChunkerConfig::new(min, avg, max),
            Err(CodecError::InvalidChunker { .. })
        ));
    }
}
