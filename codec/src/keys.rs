//! Chunk identity and per-chunk keys.
//!
//! A chunk's id is a BLAKE3 hash of its plaintext *keyed* with the key
//! domain's secret: a storage node that guesses some content cannot compute
//! its id and so cannot confirm the guess. The chunk's encryption key is
//! derived from the same secret and the id, which gives convergent encryption
//! inside a key domain (identical chunks seal identically and dedup) while
//! different domains never share keys or ids.

use std::fmt;

const CHUNK_KEY_CONTEXT: &str = "gridstore 2026-11 chunk key v1";
const ID_KEY_CONTEXT: &str = "gridstore 2026-11 chunk id key v1";
const CDC_SEED_CONTEXT: &str = "gridstore 2026-11 cdc seed v1";

/// The secret of one key domain (usually one bucket). Held by gateways only.
#[derive(Clone)]
pub struct DomainKey {
    id_key: [u8; 32],
    enc_key: [u8; 32],
    secret: [u8; 32],
}

impl DomainKey {
    /// Wrap a 32-byte secret. Sub-keys for hashing and encryption are derived
    /// with BLAKE3's KDF so that neither use can leak the other.
    pub fn new(secret: [u8; 32]) -> Self {
        Self {
            id_key: blake3::derive_key(ID_KEY_CONTEXT, &secret),
            enc_key: blake3::derive_key(CHUNK_KEY_CONTEXT, &secret),
            secret,
        }
    }

    /// Keyed BLAKE3 of the plaintext: the chunk's identity inside this domain.
    pub fn chunk_id(&self, plaintext: &[u8]) -> ChunkId {
        let mut h = blake3::Hasher::new_keyed(&self.id_key);
        // One-shot large inputs use BLAKE3's multi-block SIMD path either way;
        // update() keeps the crate free of rayon and global thread pools.
        h.update(plaintext);
        ChunkId(*h.finalize().as_bytes())
    }

    /// The AEAD key for one chunk: keyed BLAKE3 of the id under the domain's
    /// encryption sub-key.
    pub fn chunk_key(&self, id: &ChunkId) -> ChunkKey {
        ChunkKey(*blake3::keyed_hash(&self.enc_key, &id.0).as_bytes())
    }

    /// A gear seed for content-defined chunking, so that chunk boundaries
    /// (and therefore shard sizes, which nodes can see) differ between
    /// domains and do not fingerprint well-known files.
    pub fn cdc_seed(&self) -> u64 {
        let k = blake3::derive_key(CDC_SEED_CONTEXT, &self.secret);
        u64::from_le_bytes([k[0], k[1], k[2], k[3], k[4], k[5], k[6], k[7]])
    }
}

impl fmt::Debug for DomainKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DomainKey(..)")
    }
}

/// A chunk's content address inside its key domain.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChunkId(pub [u8; 32]);

impl ChunkId {
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn to_hex(&self) -> String {
        let mut s = String::with_capacity(64);
        for b in self.0 {
            s.push_str(&format!("{b:02x}"));
        }
        s
    }
}

impl fmt::Debug for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChunkId({})", self.to_hex())
    }
}

impl fmt::Display for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// The AEAD key of one chunk. Never leaves a gateway.
#[derive(Clone)]
pub struct ChunkKey(pub(crate) [u8; 32]);

impl ChunkKey {
    /// For keys that do not come from a domain, such as SSE-C customer keys
    /// (which opt out of dedup).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw key, for handing one chunk's key (and nothing broader) to a
    /// node that must open that chunk: a job task gets the keys of exactly
    /// the chunks it reads, never its bucket's domain secret.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0
    }
}

impl fmt::Debug for ChunkKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ChunkKey(..)")
    }
}
