use thiserror::Error;

/// Everything that can go wrong in the codec. Callers match on the variant:
/// a shortage of shards is a repair problem, an authentication failure is a
/// security problem, a bad header is a corrupt or foreign shard.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CodecError {
    #[error("invalid erasure parameters k={k} m={m}: need 1 <= k, 0 <= m, k + m <= {max}")]
    InvalidErasure { k: usize, m: usize, max: usize },

    #[error("invalid chunker sizes min={min} avg={avg} max={max}: {reason}")]
    InvalidChunker {
        min: usize,
        avg: usize,
        max: usize,
        reason: &'static str,
    },

    #[error("invalid zstd level {0}")]
    InvalidCompressionLevel(i32),

    #[error("chunk of {len} bytes exceeds the {max}-byte limit")]
    ChunkTooLarge { len: usize, max: usize },

    #[error("too few valid shards: {valid} valid, {needed} needed")]
    TooFewShards { valid: usize, needed: usize },

    #[error("shard {index} is corrupt: {reason}")]
    CorruptShard { index: usize, reason: &'static str },

    #[error("bad shard header: {0}")]
    BadHeader(&'static str),

    #[error("unsupported shard format version {0}")]
    UnsupportedVersion(u8),

    #[error("rebuilt shard {index} does not match the checksum it was written with: an input shard is corrupt")]
    RebuiltMismatch { index: usize },

    #[error("shards disagree on chunk parameters")]
    MismatchedShards,

    #[error("authentication failed: wrong key or tampered chunk")]
    AuthenticationFailed,

    #[error("decompression failed: {0}")]
    Decompress(String),

    #[error(
        "slice {offset}+{len} is not a slice of {total} checksummed shard bytes a proof may cover"
    )]
    SliceOutOfRange { offset: u64, len: u64, total: u64 },

    #[error("storage proof refused: {0}")]
    BadProof(&'static str),

    #[error("reed-solomon failure: {0}")]
    ReedSolomon(String),
}

pub type Result<T, E = CodecError> = std::result::Result<T, E>;
