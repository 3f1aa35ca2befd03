//! Shared helpers for the codec's integration tests.
#![allow(dead_code)]

use codec::{DomainKey, ErasureParams, SealConfig, Sealer};
use rand::{Rng, RngCore, SeedableRng};

/// The (k, m) grid the issue names.
pub const GRID: [(usize, usize); 7] = [(1, 0), (1, 2), (2, 1), (4, 2), (8, 4), (10, 4), (16, 4)];

pub fn domain(seed: u8) -> DomainKey {
    DomainKey::new([seed; 32])
}

pub fn sealer(k: usize, m: usize) -> Sealer {
    Sealer::new(SealConfig::new(ErasureParams::new(k, m).unwrap())).unwrap()
}

pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut r = rand::rngs::StdRng::seed_from_u64(seed);
    let mut v = vec![0u8; len];
    r.fill_bytes(&mut v);
    v
}

/// Text-like bytes: words from a small vocabulary, compressible about 3x.
pub fn text_bytes(len: usize, seed: u64) -> Vec<u8> {
    const WORDS: [&str; 16] = [
        "grid", "shard", "farm", "object", "store", "the", "of", "and", "repair", "site", "chunk",
        "erasure", "bucket", "version", "node", "data",
    ];
    let mut r = rand::rngs::StdRng::seed_from_u64(seed);
    let mut v = Vec::with_capacity(len + 16);
    while v.len() < len {
        v.extend_from_slice(WORDS[r.gen_range(0..WORDS.len())].as_bytes());
        v.push(if r.gen_ratio(1, 12) { b'\n' } else { b' ' });
    }
    v.truncate(len);
    v
}

/// All k-element subsets of 0..n, in lexicographic order.
pub fn combinations(n: usize, k: usize) -> Vec<Vec<usize>> {
    let mut out = Vec::new();
    let mut idx: Vec<usize> = (0..k).collect();
    loop {
        out.push(idx.clone());
        let mut i = k;
        loop {
            if i == 0 {
                return out;
            }
            i -= 1;
            if idx[i] != i + n - k {
                break;
            }
            if i == 0 && idx[0] == n - k {
                return out;
            }
        }
        idx[i] += 1;
        for j in i + 1..k {
            idx[j] = idx[j - 1] + 1;
        }
    }
}

#[test]
fn combinations_counts() {
    assert_eq!(combinations(4, 2).len(), 6);
    assert_eq!(combinations(20, 16).len(), 4845);
    assert_eq!(combinations(3, 3), vec![vec![0, 1, 2]]);
    assert_eq!(combinations(1, 1), vec![vec![0]]);
}
