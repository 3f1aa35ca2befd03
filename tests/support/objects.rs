//! An object store over an in-process grid, and streams of known data.
#![allow(dead_code)]

use super::grid::TestGrid;
use bytes::Bytes;
use cluster::{ObjectBody, ObjectStore, StoreConfig};
use futures_util::StreamExt;
use rand::{RngCore, SeedableRng};
use sha2::{Digest, Sha256};
use std::convert::Infallible;

pub const OWNER: &str = "test-owner";

pub fn store_on(grid: &TestGrid, cfg: StoreConfig) -> ObjectStore {
    ObjectStore::new(grid.grid(), super::master(), cfg)
}

/// Deterministic pseudo-random bytes, produced piece by piece so a test
/// can stream gigabytes without holding them.
pub struct Data {
    rng: rand::rngs::StdRng,
    left: u64,
    piece: usize,
}

impl Data {
    pub fn new(len: u64, seed: u64) -> Self {
        Self {
            rng: rand::rngs::StdRng::seed_from_u64(seed),
            left: len,
            piece: 256 * 1024 + 17,
        }
    }

    pub fn next_piece(&mut self) -> Option<Bytes> {
        if self.left == 0 {
            return None;
        }
        let n = (self.piece as u64).min(self.left) as usize;
        let mut b = vec![0u8; n];
        self.rng.fill_bytes(&mut b);
        self.left -= n as u64;
        Some(Bytes::from(b))
    }

    /// The whole remaining data as a stream.
    pub fn stream(mut self) -> impl futures_util::Stream<Item = Result<Bytes, Infallible>> + Unpin {
        futures_util::stream::iter(std::iter::from_fn(move || self.next_piece().map(Ok)))
    }

    pub fn sha256(len: u64, seed: u64) -> [u8; 32] {
        let mut d = Data::new(len, seed);
        let mut h = Sha256::new();
        while let Some(p) = d.next_piece() {
            h.update(&p);
        }
        h.finalize().into()
    }

    pub fn bytes(len: u64, seed: u64) -> Vec<u8> {
        let mut d = Data::new(len, seed);
        let mut out = Vec::with_capacity(len as usize);
        while let Some(p) = d.next_piece() {
            out.extend_from_slice(&p);
        }
        out
    }
}

/// A stream of `data` in pieces of `piece` bytes.
pub fn stream_of(
    data: Vec<u8>,
    piece: usize,
) -> impl futures_util::Stream<Item = Result<Bytes, Infallible>> + Unpin {
    let data = Bytes::from(data);
    let pieces: Vec<Bytes> = (0..data.len())
        .step_by(piece.max(1))
        .map(|s| data.slice(s..(s + piece).min(data.len())))
        .collect();
    futures_util::stream::iter(pieces.into_iter().map(Ok))
}

pub async fn read_all(mut body: ObjectBody) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(piece) = body.next().await {
        out.extend_from_slice(&piece.expect("object body"));
    }
    out
}

/// The latest version of `key`, whole.
pub async fn object(s: &ObjectStore, bucket: &str, key: &str) -> Vec<u8> {
    read_all(
        s.get_object(bucket, key, cluster::GetOptions::default())
            .await
            .unwrap()
            .body,
    )
    .await
}

pub async fn sha256_of(mut body: ObjectBody) -> ([u8; 32], u64) {
    let mut h = Sha256::new();
    let mut n = 0;
    while let Some(piece) = body.next().await {
        let piece = piece.expect("object body");
        n += piece.len() as u64;
        h.update(&piece);
    }
    (h.finalize().into(), n)
}

/// Bytes of shard files on every live node.
pub async fn stored_bytes(grid: &TestGrid) -> u64 {
    let mut total = 0;
    for id in grid.map.nodes.iter().map(|n| n.id.clone()) {
        if let Some(c) = grid.grid().client(&id) {
            if let Ok(s) = c.status().await {
                total += s.used_bytes;
            }
        }
    }
    total
}
