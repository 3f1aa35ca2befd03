//! The owner's signing key: what lets a node tell the owner's word from a
//! farm's without being able to speak it.
//!
//! One Ed25519 key pair, derived from the master key (gateways and admin
//! tools hold it; nodes never do), signs cluster maps, sealed records
//! (`crate::sealed`) and chunk references (`crate::signing`). Nodes learn
//! the public half from the cluster map (`ClusterMap::owner_key`). Each
//! kind of message is signed under its own context string, so a signature
//! over one can never pass for another.

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
