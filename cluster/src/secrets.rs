//! Keys held by gateways only: the cluster master key, the bucket keys
//! derived from it, and customer keys (SSE-C) that arrive with a request.
//! None of them is ever sent to a storage node.

use base64::Engine;
use codec::{ChunkId, ChunkKey, DomainKey};
use md5::{Digest, Md5};
use metadata::sealed::RecordKeys;
use metadata::signing::OwnerKey;
use std::sync::Arc;

const BUCKET_KEY_CONTEXT: &str = "gridstore 2026-11 bucket key v1";
const PASSPHRASE_CONTEXT: &str = "gridstore 2026-11 master key from passphrase v1";
const CUSTOMER_CHUNK_CONTEXT: &str = "gridstore 2026-11 sse-c chunk key v1";
const ROOT_RECORDS_CONTEXT: &str = "gridstore 2026-12 root record keys v1";
const BUCKET_RECORDS_CONTEXT: &str = "gridstore 2026-12 bucket record keys v1";
const MAP_SIGNING_CONTEXT: &str = "gridstore 2026-12 cluster map signing key v1";

/// The environment variable a gateway reads its master key from.
pub const MASTER_KEY_ENV: &str = "GRIDSTORE_MASTER_KEY";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    #[error("master key must be 64 hex digits or a passphrase of at least 32 characters")]
    WeakMasterKey,
    #[error("{MASTER_KEY_ENV} is not set")]
    NoMasterKey,
    #[error("customer key must be 32 bytes, base64-encoded")]
    BadCustomerKey,
    #[error("customer key MD5 does not match the key")]
    CustomerKeyDigest,
}

fn derive(master: &[u8; 32], context: &str, material: &[u8]) -> [u8; 32] {
    let mut m = Vec::with_capacity(32 + material.len());
    m.extend_from_slice(master);
    m.extend_from_slice(material);
    blake3::derive_key(context, &m)
}

/// The cluster master key. Every bucket's data key derives from it, so
/// losing it loses the data: back it up like the data itself.
#[derive(Clone)]
pub struct MasterKey([u8; 32], Arc<OwnerKey>);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl MasterKey {
    pub fn from_bytes(b: [u8; 32]) -> Self {
        // Made once: deriving an Ed25519 key pair costs a scalar
        // multiplication, and every record sealed is signed with it.
        let owner = OwnerKey::from_seed(&derive(&b, MAP_SIGNING_CONTEXT, b""));
        Self(b, Arc::new(owner))
    }

    /// 64 hex digits are the key itself; anything else is a passphrase of
    /// at least 32 characters run through a KDF.
    pub fn from_text(s: &str) -> Result<Self, KeyError> {
        let s = s.trim();
        let mut b = [0u8; 32];
        if s.len() == 64 && hex::decode_to_slice(s, &mut b).is_ok() {
            return Ok(Self::from_bytes(b));
        }
        if s.chars().count() < 32 {
            return Err(KeyError::WeakMasterKey);
        }
        Ok(Self::from_bytes(blake3::derive_key(
            PASSPHRASE_CONTEXT,
            s.as_bytes(),
        )))
    }

    pub fn from_env() -> Result<Self, KeyError> {
        let v = std::env::var(MASTER_KEY_ENV).map_err(|_| KeyError::NoMasterKey)?;
        Self::from_text(&v)
    }

    /// A fresh random key, as 64 hex digits (for `gridstore server` on
    /// first start).
    pub fn generate_text() -> String {
        hex::encode(rand::random::<[u8; 32]>())
    }

    /// A 32-byte key for `context` and `material`, derived from the master
    /// key (for gateway-held secrets other than bucket data).
    pub fn derive(&self, context: &str, material: &[u8]) -> [u8; 32] {
        derive(&self.0, context, material)
    }

    /// The key domain of one bucket: chunk ids, chunk keys and chunking
    /// all differ between buckets, so nodes cannot correlate their data.
    pub fn bucket_domain(&self, bucket_id: &[u8]) -> DomainKey {
        let mut material = Vec::with_capacity(32 + bucket_id.len());
        material.extend_from_slice(&self.0);
        material.extend_from_slice(bucket_id);
        DomainKey::new(blake3::derive_key(BUCKET_KEY_CONTEXT, &material))
    }

    /// The keys that seal the records kept on the root replicas (buckets,
    /// users, locks) and hash their names.
    pub fn root_record_keys(&self) -> RecordKeys {
        RecordKeys::new(&self.derive(ROOT_RECORDS_CONTEXT, b"")).signing_with(self.owner_key())
    }

    /// The owner's cluster-map signing key: whoever holds the master key
    /// (gateways, `gridstore admin`) may change the map; no farm can.
    pub fn owner_key(&self) -> Arc<OwnerKey> {
        self.1.clone()
    }

    /// The keys that seal one bucket's records (versions, uploads, parts)
    /// and hash its object keys.
    pub fn bucket_record_keys(&self, bucket_id: &[u8]) -> RecordKeys {
        RecordKeys::new(&self.derive(BUCKET_RECORDS_CONTEXT, bucket_id))
            .signing_with(self.owner_key())
    }
}

/// A customer-provided key (SSE-C). Chunks sealed with it get random ids,
/// so they never dedup with anything: equal content must not be
/// observable across keys.
#[derive(Clone)]
pub struct CustomerKey {
    key: [u8; 32],
    md5_b64: String,
}

impl std::fmt::Debug for CustomerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CustomerKey(md5 {})", self.md5_b64)
    }
}

impl CustomerKey {
    pub fn new(key: [u8; 32]) -> Self {
        let md5_b64 = base64::engine::general_purpose::STANDARD.encode(Md5::digest(key));
        Self { key, md5_b64 }
    }

    /// From the S3 headers: the base64 key and, if given, its base64 MD5.
    pub fn from_headers(key_b64: &str, md5_b64: Option<&str>) -> Result<Self, KeyError> {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(key_b64.trim())
            .map_err(|_| KeyError::BadCustomerKey)?;
        let key: [u8; 32] = raw.try_into().map_err(|_| KeyError::BadCustomerKey)?;
        let k = Self::new(key);
        if md5_b64.is_some_and(|m| m.trim() != k.md5_b64) {
            return Err(KeyError::CustomerKeyDigest);
        }
        Ok(k)
    }

    /// What manifests store to recognise the key (never the key).
    pub fn md5_b64(&self) -> &str {
        &self.md5_b64
    }

    /// The AEAD key of one chunk: unique per chunk (ids are random), so
    /// a fixed nonce is never reused under one key.
    pub fn chunk_key(&self, id: &ChunkId) -> ChunkKey {
        let mut h = blake3::Hasher::new_derive_key(CUSTOMER_CHUNK_CONTEXT);
        h.update(&self.key);
        h.update(&id.0);
        ChunkKey::from_bytes(*h.finalize().as_bytes())
    }
}

/// How one object's chunks are sealed.
#[derive(Clone, Debug)]
pub enum Sealing {
    /// Convergent encryption in the bucket's domain (dedup applies).
    Domain(DomainKey),
    /// A customer key (SSE-C); the domain is still used for chunking.
    Customer(DomainKey, CustomerKey),
}

impl Sealing {
    pub fn domain(&self) -> &DomainKey {
        match self {
            Sealing::Domain(d) | Sealing::Customer(d, _) => d,
        }
    }

    pub fn dedup(&self) -> bool {
        matches!(self, Sealing::Domain(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn master_key_forms() {
        assert!(MasterKey::from_text("short").is_err());
        let hex_key = "00".repeat(32);
        assert_eq!(MasterKey::from_text(&hex_key).unwrap().0, [0u8; 32]);
        let a = MasterKey::from_text("a passphrase that is long enough!").unwrap();
        let b = MasterKey::from_text("a passphrase that is long enough?").unwrap();
        assert_ne!(a.0, b.0);
        // Bucket domains differ per bucket.
        let d1 = a.bucket_domain(&[1; 16]).chunk_id(b"x");
        let d2 = a.bucket_domain(&[2; 16]).chunk_id(b"x");
        assert_ne!(d1, d2);
    }

    #[test]
    fn customer_key_md5_checked() {
        let k = CustomerKey::new([7; 32]);
        let b64 = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        assert!(CustomerKey::from_headers(&b64, Some(k.md5_b64())).is_ok());
        assert_eq!(
            CustomerKey::from_headers(&b64, Some("AAAA")).unwrap_err(),
            KeyError::CustomerKeyDigest
        );
        assert_eq!(
            CustomerKey::from_headers("AAAA", None).unwrap_err(),
            KeyError::BadCustomerKey
        );
    }
}
