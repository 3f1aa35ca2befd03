//! Sealed records: how a gateway stores a record on nodes that must learn
//! nothing from it.
//!
//! A node stores, merges and hands back records it cannot read. All it may
//! see of one is the table, an opaque key and the revision (so replicas can
//! keep the newest state without a key); the rest is XChaCha20-Poly1305
//! under a key derived from the master key (per bucket for a bucket's
//! records). The associated data binds the ciphertext to its table, its
//! record key and its revision, so a node cannot move a record to another
//! key, pass an old state off under a new revision, or splice two records.
//!
//! ```text
//! 0      tag (SIGNED_TAG; SEALED_TAG without the signature)
//! 1..9   revision, big endian (what replicas merge by)
//! 9..33  nonce (random: XChaCha's 24 bytes make collisions negligible)
//! 33..   ciphertext of the record's plain encoding, then the 16-byte tag
//! last 64 the owner's Ed25519 signature over table, key and all the above
//! ```
//!
//! The AEAD lets a gateway refuse what it did not seal; the signature lets
//! a node, which holds no key, refuse a record a farm made up when it
//! arrives from a peer (anti-entropy), so a forged record never spreads
//! and never outranks the real one by a made-up revision.
//!
//! Record keys reveal no names either: where a key would hold a name, it
//! holds [`RecordKeys::name_hash`], a keyed hash only key holders can
//! compute.

use crate::db::Table;
use crate::owner_key::{self as signing, OwnerKey, SIGNATURE_LEN};
use crate::record::{Record, RecordError};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use std::sync::Arc;

/// The first byte of a sealed record.
pub const SEALED_TAG: u8 = 2;
/// The first byte of a sealed record that carries the owner's signature.
pub const SIGNED_TAG: u8 = 3;
const HEADER_LEN: usize = 1 + 8;
const NONCE_LEN: usize = 24;
const AEAD_TAG_LEN: usize = 16;
/// Bytes a sealed record adds to the plain encoding.
pub const OVERHEAD: usize = HEADER_LEN + NONCE_LEN + AEAD_TAG_LEN;
/// Length of a name hash inside record keys.
pub const NAME_HASH_LEN: usize = 16;

const SEAL_CONTEXT: &str = "gridstore 2026-12 record seal key v1";
const NAME_CONTEXT: &str = "gridstore 2026-12 record name key v1";
const AAD_CONTEXT: &[u8] = b"gridstore sealed record v1";

/// The keys of one record domain (the root records, or one bucket's).
#[derive(Clone)]
pub struct RecordKeys {
    seal: XChaCha20Poly1305,
    names: [u8; 32],
    /// Signs what is sealed, so nodes can check it (see the module doc).
    signer: Option<Arc<OwnerKey>>,
}

impl std::fmt::Debug for RecordKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RecordKeys(..)")
    }
}

/// What the kinds of names hashed into record keys are, so that equal
/// strings of different kinds never share a hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum NameKind {
    Bucket = 1,
    Object = 2,
    User = 3,
    LockPath = 4,
    Job = 5,
    JobTask = 6,
}

impl RecordKeys {
    /// Keys derived from a 32-byte domain secret (itself derived from the
    /// master key by the gateway).
    pub fn new(secret: &[u8; 32]) -> Self {
        let seal = blake3::derive_key(SEAL_CONTEXT, secret);
        Self {
            seal: XChaCha20Poly1305::new(&seal.into()),
            names: blake3::derive_key(NAME_CONTEXT, secret),
            signer: None,
        }
    }

    /// These keys, signing every record they seal with `owner`.
    pub fn signing_with(mut self, owner: Arc<OwnerKey>) -> Self {
        self.signer = Some(owner);
        self
    }

    /// The keyed hash that stands for `name` in record keys.
    pub fn name_hash(&self, kind: NameKind, name: &[u8]) -> [u8; NAME_HASH_LEN] {
        let mut h = blake3::Hasher::new_keyed(&self.names);
        h.update(&[kind as u8]);
        h.update(name);
        let mut out = [0u8; NAME_HASH_LEN];
        out.copy_from_slice(&h.finalize().as_bytes()[..NAME_HASH_LEN]);
        out
    }

    /// `record` sealed for `key` of `table`, carrying `revision` in clear.
    pub fn seal<R: Record>(&self, table: Table, key: &[u8], revision: u64, record: &R) -> Vec<u8> {
        let plain = record.encode_record();
        let mut out = Vec::with_capacity(plain.len() + OVERHEAD + SIGNATURE_LEN);
        out.push(if self.signer.is_some() {
            SIGNED_TAG
        } else {
            SEALED_TAG
        });
        out.extend_from_slice(&revision.to_be_bytes());
        let nonce: [u8; NONCE_LEN] = rand::random();
        out.extend_from_slice(&nonce);
        let aad = aad(table, key, &out[..HEADER_LEN]);
        // Encryption fails only for messages beyond 2^38 bytes.
        let sealed = self
            .seal
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &plain,
                    aad: &aad,
                },
            )
            .expect("record far below the AEAD's message limit");
        out.extend_from_slice(&sealed);
        if let Some(owner) = &self.signer {
            let sig = owner.sign_digest(signing::RECORD_CONTEXT, &record_digest(table, key, &out));
            out.extend_from_slice(&sig);
        }
        out
    }

    /// The record sealed at `key` of `table`; fails on anything a key
    /// holder did not seal for exactly that place and revision.
    pub fn open<R: Record>(
        &self,
        table: Table,
        key: &[u8],
        bytes: &[u8],
    ) -> Result<R, RecordError> {
        check_envelope(bytes)?;
        let bytes = unsigned_part(bytes);
        let (head, rest) = bytes.split_at(HEADER_LEN);
        let (nonce, body) = rest.split_at(NONCE_LEN);
        let plain = self
            .seal
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: body,
                    aad: &aad(table, key, head),
                },
            )
            .map_err(|_| RecordError::Unauthentic)?;
        R::decode_record(&plain)
    }
}

fn aad(table: Table, key: &[u8], head: &[u8]) -> Vec<u8> {
    let name = table.name().as_bytes();
    let mut a = Vec::with_capacity(AAD_CONTEXT.len() + name.len() + key.len() + 8 + head.len());
    a.extend_from_slice(AAD_CONTEXT);
    a.extend_from_slice(&(name.len() as u32).to_be_bytes());
    a.extend_from_slice(name);
    a.extend_from_slice(&(key.len() as u32).to_be_bytes());
    a.extend_from_slice(key);
    a.extend_from_slice(head);
    a
}

/// Whether `bytes` has the shape of a sealed record (what a node can check
/// without the key).
pub fn check_envelope(bytes: &[u8]) -> Result<(), RecordError> {
    let (&tag, _) = bytes.split_first().ok_or(RecordError::Empty)?;
    let min = match tag {
        SEALED_TAG => OVERHEAD,
        SIGNED_TAG => OVERHEAD + SIGNATURE_LEN,
        _ => return Err(RecordError::UnsupportedVersion(tag)),
    };
    if bytes.len() < min {
        return Err(RecordError::Malformed("sealed record too short".into()));
    }
    Ok(())
}

/// A sealed record without its signature, if it has one.
fn unsigned_part(bytes: &[u8]) -> &[u8] {
    if bytes.first() == Some(&SIGNED_TAG) {
        &bytes[..bytes.len() - SIGNATURE_LEN]
    } else {
        bytes
    }
}

fn record_digest(table: Table, key: &[u8], unsigned: &[u8]) -> [u8; 32] {
    let name = table.name().as_bytes();
    let mut h = blake3::Hasher::new();
    h.update(&(name.len() as u32).to_be_bytes());
    h.update(name);
    h.update(&(key.len() as u32).to_be_bytes());
    h.update(key);
    h.update(unsigned);
    *h.finalize().as_bytes()
}

/// Whether `bytes`, found at `key` of `table`, was sealed and signed by
/// the owner whose public key is `owner`: what a node checks before it
/// takes a record from a peer. It says nothing of the contents, which
/// only key holders can open.
pub fn verify_signed(
    table: Table,
    key: &[u8],
    bytes: &[u8],
    owner: &[u8],
) -> Result<(), RecordError> {
    check_envelope(bytes)?;
    if bytes[0] != SIGNED_TAG {
        return Err(RecordError::Unauthentic);
    }
    let (unsigned, sig) = bytes.split_at(bytes.len() - SIGNATURE_LEN);
    let digest = record_digest(table, key, unsigned);
    if signing::verifies(owner, signing::RECORD_CONTEXT, &digest, sig) {
        Ok(())
    } else {
        Err(RecordError::Unauthentic)
    }
}

/// The revision in a sealed record's clear header.
pub fn revision(bytes: &[u8]) -> Option<u64> {
    check_envelope(bytes).ok()?;
    let mut r = [0u8; 8];
    r.copy_from_slice(&bytes[1..HEADER_LEN]);
    Some(u64::from_be_bytes(r))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Bucket;

    fn bucket() -> Bucket {
        Bucket {
            name: "canary-bucket".into(),
            id: vec![7; crate::model::BUCKET_ID_LEN],
            owner: "owner".into(),
            revision: 42,
            ..Default::default()
        }
    }

    #[test]
    fn round_trip_hides_the_record_and_shows_the_revision() {
        let k = RecordKeys::new(&[1; 32]);
        let sealed = k.seal(Table::Buckets, b"key", 42, &bucket());
        assert_eq!(revision(&sealed), Some(42));
        assert!(!sealed.windows(6).any(|w| w == b"canary"));
        let back: Bucket = k.open(Table::Buckets, b"key", &sealed).unwrap();
        assert_eq!(back, bucket());
    }

    #[test]
    fn a_record_opens_only_where_and_as_it_was_sealed() {
        let k = RecordKeys::new(&[1; 32]);
        let sealed = k.seal(Table::Buckets, b"key", 42, &bucket());
        let other = RecordKeys::new(&[2; 32]);
        assert_eq!(
            other.open::<Bucket>(Table::Buckets, b"key", &sealed),
            Err(RecordError::Unauthentic)
        );
        assert!(k.open::<Bucket>(Table::Buckets, b"kez", &sealed).is_err());
        assert!(k.open::<Bucket>(Table::Users, b"key", &sealed).is_err());
        // A node raising the revision to win merges is caught.
        let mut bumped = sealed.clone();
        bumped[8] ^= 1;
        assert!(k.open::<Bucket>(Table::Buckets, b"key", &bumped).is_err());
        let mut flipped = sealed;
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(k.open::<Bucket>(Table::Buckets, b"key", &flipped).is_err());
        assert!(k.open::<Bucket>(Table::Buckets, b"key", &[]).is_err());
        assert!(k
            .open::<Bucket>(Table::Buckets, b"key", &bucket().encode_record())
            .is_err());
    }

    #[test]
    fn nodes_can_check_the_owner_signed_a_record_and_nothing_else() {
        let owner = Arc::new(OwnerKey::from_seed(&[5; 32]));
        let public = owner.public();
        let k = RecordKeys::new(&[1; 32]).signing_with(owner);
        let sealed = k.seal(Table::Buckets, b"key", 42, &bucket());
        assert_eq!(revision(&sealed), Some(42));
        verify_signed(Table::Buckets, b"key", &sealed, &public).unwrap();
        let back: Bucket = k.open(Table::Buckets, b"key", &sealed).unwrap();
        assert_eq!(back, bucket());
        // Moved, re-dated, altered, unsigned, or signed by another key.
        assert!(verify_signed(Table::Buckets, b"kez", &sealed, &public).is_err());
        assert!(verify_signed(Table::Users, b"key", &sealed, &public).is_err());
        for at in [1, 8, 20, sealed.len() - 70, sealed.len() - 1] {
            let mut t = sealed.clone();
            t[at] ^= 1;
            assert!(
                verify_signed(Table::Buckets, b"key", &t, &public).is_err(),
                "byte {at}"
            );
        }
        let plain = RecordKeys::new(&[1; 32]).seal(Table::Buckets, b"key", 43, &bucket());
        assert_eq!(
            verify_signed(Table::Buckets, b"key", &plain, &public),
            Err(RecordError::Unauthentic)
        );
        let farm = RecordKeys::new(&[1; 32]).signing_with(Arc::new(OwnerKey::from_seed(&[6; 32])));
        let forged = farm.seal(Table::Buckets, b"key", 99, &bucket());
        assert!(verify_signed(Table::Buckets, b"key", &forged, &public).is_err());
        assert!(verify_signed(Table::Buckets, b"key", &sealed[..40], &public).is_err());
    }

    #[test]
    fn name_hashes_depend_on_kind_name_and_key() {
        let k = RecordKeys::new(&[1; 32]);
        let a = k.name_hash(NameKind::Object, b"a");
        assert_eq!(a, k.name_hash(NameKind::Object, b"a"));
        assert_ne!(a, k.name_hash(NameKind::Bucket, b"a"));
        assert_ne!(a, k.name_hash(NameKind::Object, b"b"));
        assert_ne!(
            a,
            RecordKeys::new(&[2; 32]).name_hash(NameKind::Object, b"a")
        );
    }
}
