//! The owner's signing key: what lets a node tell the owner's word from a
//! farm's without being able to speak it.
//!
//! One Ed25519 key pair, derived from the master key (gateways and admin
//! tools hold it; nodes never do), signs cluster maps (see
//! `grid::signed_map`), sealed records (`crate::sealed`) and chunk
//! references. Nodes learn the public half from the cluster map
//! (`ClusterMap::owner_key`). Each kind of message is signed under its own
//! context string, so a signature over one can never pass for another.

use crate::model::{ChunkReference, ClusterMap, NodeState};
use crate::Record;
use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};

/// Signature contexts, one per kind of signed thing.
pub const MAP_CONTEXT: &str = "gridstore 2026-12 cluster map v1";
pub const MEMBERSHIP_CONTEXT: &str = "gridstore 2026-12 cluster map membership v1";
pub const RECORD_CONTEXT: &str = "gridstore 2026-12 sealed record v1";
pub const REFERENCE_CONTEXT: &str = "gridstore 2026-12 chunk reference v1";
pub const SHARD_HASHES_CONTEXT: &str = "gridstore 2026-12 shard hashes v1";

/// Length of a signature.
pub const SIGNATURE_LEN: usize = 64;

/// The owner's signing key.
pub struct OwnerKey {
    pair: Ed25519KeyPair,
}

impl std::fmt::Debug for OwnerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OwnerKey({})", hex::encode(self.public()))
    }
}

impl OwnerKey {
    /// The key whose secret half is `seed` (32 bytes from the master key).
    pub fn from_seed(seed: &[u8; 32]) -> OwnerKey {
        OwnerKey {
            // Any 32 bytes are a valid Ed25519 seed.
            pair: Ed25519KeyPair::from_seed_unchecked(seed)
                .unwrap_or_else(|_| unreachable!("any 32 bytes are an Ed25519 seed")),
        }
    }

    pub fn public(&self) -> Vec<u8> {
        self.pair.public_key().as_ref().to_vec()
    }

    /// Sign `digest` (a BLAKE3 of what is signed) under `context`.
    pub fn sign_digest(&self, context: &str, digest: &[u8; 32]) -> [u8; SIGNATURE_LEN] {
        let mut out = [0u8; SIGNATURE_LEN];
        out.copy_from_slice(self.pair.sign(&message(context, digest)).as_ref());
        out
    }

    /// Sign `map` as the owner: its owner key, both owner signatures, and
    /// no votes (the owner's word needs none).
    pub fn sign(&self, map: &mut ClusterMap) {
        map.owner_key = self.public();
        map.votes.clear();
        map.membership_signature = self
            .sign_digest(MEMBERSHIP_CONTEXT, &membership_digest(map))
            .to_vec();
        map.owner_signature = self.sign_digest(MAP_CONTEXT, &full_digest(map)).to_vec();
    }

    /// Sign reference `r` (and its shard hashes, if it has them).
    pub fn sign_reference(&self, r: &mut ChunkReference) {
        r.signature = self
            .sign_digest(REFERENCE_CONTEXT, &reference_digest(r))
            .to_vec();
        r.hashes_signature = if r.shard_hashes.is_empty() {
            Vec::new()
        } else {
            self.sign_digest(SHARD_HASHES_CONTEXT, &hashes_digest(r))
                .to_vec()
        };
    }

    /// `map` signed, as a new value.
    pub fn signed(&self, mut map: ClusterMap) -> ClusterMap {
        self.sign(&mut map);
        map
    }
}

/// What is signed: the context, a NUL, the digest.
pub fn message(context: &str, digest: &[u8; 32]) -> Vec<u8> {
    let mut m = Vec::with_capacity(context.len() + 33);
    m.extend_from_slice(context.as_bytes());
    m.push(0);
    m.extend_from_slice(digest);
    m
}

/// Whether `signature` is `public`'s over `digest` under `context`.
pub fn verifies(public: &[u8], context: &str, digest: &[u8; 32], signature: &[u8]) -> bool {
    UnparsedPublicKey::new(&ED25519, public)
        .verify(&message(context, digest), signature)
        .is_ok()
}

fn unsigned(map: &ClusterMap) -> ClusterMap {
    let mut m = map.clone();
    m.owner_signature.clear();
    m.membership_signature.clear();
    m.votes.clear();
    m
}

/// What the owner's and the nodes' map signatures cover: the whole map
/// but the signatures.
pub fn full_digest(map: &ClusterMap) -> [u8; 32] {
    *blake3::hash(&unsigned(map).encode_record()).as_bytes()
}

/// What the owner's membership signature covers: the map without its
/// epoch, with down nodes counted as up. Equal for two maps exactly when
/// they differ only in epoch and up/down states.
pub fn membership_digest(map: &ClusterMap) -> [u8; 32] {
    let mut m = unsigned(map);
    m.epoch = 0;
    for n in &mut m.nodes {
        if n.state == NodeState::Down as i32 {
            n.state = NodeState::Up as i32;
        }
    }
    *blake3::hash(&m.encode_record()).as_bytes()
}

/// What a reference's signature covers: chunk, erasure, referrer and
/// creation time.
pub fn reference_digest(r: &ChunkReference) -> [u8; 32] {
    let covered = ChunkReference {
        chunk_id: r.chunk_id.clone(),
        erasure: r.erasure,
        referrer: r.referrer.clone(),
        created_ms: r.created_ms,
        ..ChunkReference::default()
    };
    *blake3::hash(&covered.encode_record()).as_bytes()
}

/// What a reference's hashes signature covers: chunk, erasure, shard
/// length and shard hashes (not the referrer: any reference of the chunk
/// may carry them).
pub fn hashes_digest(r: &ChunkReference) -> [u8; 32] {
    let covered = ChunkReference {
        chunk_id: r.chunk_id.clone(),
        erasure: r.erasure,
        shard_len: r.shard_len,
        shard_hashes: r.shard_hashes.clone(),
        ..ChunkReference::default()
    };
    *blake3::hash(&covered.encode_record()).as_bytes()
}

/// Whether the owner with public key `owner` signed reference `r`, and
/// its shard hashes if it carries any.
pub fn reference_verifies(r: &ChunkReference, owner: &[u8]) -> bool {
    verifies(owner, REFERENCE_CONTEXT, &reference_digest(r), &r.signature)
        && (r.shard_hashes.is_empty()
            || verifies(
                owner,
                SHARD_HASHES_CONTEXT,
                &hashes_digest(r),
                &r.hashes_signature,
            ))
}
