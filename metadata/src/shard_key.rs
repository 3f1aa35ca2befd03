//! The address of one shard: chunk id and shard index.

use crate::model::CHUNK_ID_LEN;
use std::fmt;

/// Most shards a chunk can have: the codec's limit, re-exported so the
/// data model checks the same bound the erasure coder enforces.
pub use codec::MAX_SHARDS;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid shard key: {0}")]
pub struct InvalidShardKey(pub &'static str);

/// One shard's address. Keys order by chunk id, then index.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShardKey {
    pub chunk: [u8; CHUNK_ID_LEN],
    pub index: u8,
}

impl ShardKey {
    pub fn new(chunk: [u8; CHUNK_ID_LEN], index: usize) -> Result<Self, InvalidShardKey> {
        if index >= MAX_SHARDS {
            return Err(InvalidShardKey("shard index out of range"));
        }
        Ok(Self {
            chunk,
            index: index as u8,
        })
    }

    /// Parse a chunk id given as exactly 64 lowercase hex digits (one
    /// spelling per id, so a shard has exactly one file name and URL).
    pub fn from_hex(chunk_hex: &str, index: usize) -> Result<Self, InvalidShardKey> {
        Self::new(chunk_from_hex(chunk_hex)?, index)
    }

    pub fn chunk_hex(&self) -> String {
        hex::encode(self.chunk)
    }

    /// `<64 hex>.<index>`: the shard's file name and URL segment.
    pub fn to_name(&self) -> String {
        format!("{}.{}", self.chunk_hex(), self.index)
    }

    /// Inverse of [`to_name`](Self::to_name); refuses every other spelling
    /// ("07", "+7", uppercase hex).
    pub fn from_name(name: &str) -> Result<Self, InvalidShardKey> {
        let (hex, index_text) = name
            .split_once('.')
            .ok_or(InvalidShardKey("expected <chunk hex>.<index>"))?;
        let index: usize = index_text
            .parse()
            .map_err(|_| InvalidShardKey("shard index is not a number"))?;
        if index.to_string() != index_text {
            return Err(InvalidShardKey("shard index not in canonical form"));
        }
        Self::from_hex(hex, index)
    }
}

impl fmt::Debug for ShardKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ShardKey({})", self.to_name())
    }
}

impl fmt::Display for ShardKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_name())
    }
}

/// A chunk id from exactly 64 lowercase hex digits.
pub fn chunk_from_hex(chunk_hex: &str) -> Result<[u8; CHUNK_ID_LEN], InvalidShardKey> {
    if chunk_hex.len() != 2 * CHUNK_ID_LEN {
        return Err(InvalidShardKey("chunk id must be 64 hex digits"));
    }
    if chunk_hex.bytes().any(|c| c.is_ascii_uppercase()) {
        return Err(InvalidShardKey("chunk id must be lowercase hex"));
    }
    let mut chunk = [0u8; CHUNK_ID_LEN];
    hex::decode_to_slice(chunk_hex, &mut chunk)
        .map_err(|_| InvalidShardKey("chunk id must be lowercase hex"))?;
    Ok(chunk)
}
