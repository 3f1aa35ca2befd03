//! The object layer's tunables.

use codec::ChunkerConfig;
use metadata::model::ErasureSpec;

/// Tunables of the object layer.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Copies of each bucket's metadata (and of the bucket directory).
    pub metadata_replicas: usize,
    /// Objects up to this size live inside their manifest.
    pub inline_threshold: usize,
    /// Content-defined chunk sizes (the seed is set per bucket).
    pub chunker: ChunkerConfig,
    /// Chunks of one upload being hashed, sealed or sent at once: the
    /// memory bound of an upload is about this many chunks.
    pub chunks_in_flight: usize,
    /// Plaintext bytes of chunks being sealed or sent at once across every
    /// upload through this store: what bounds a gateway's memory under
    /// many concurrent uploads (each also holds its chunker's buffer).
    pub write_bytes_in_flight: usize,
    /// S3's minimum size of every part but the last.
    pub min_part_size: u64,
    pub max_object_size: u64,
    /// The gateway's site: reads prefer shards held there.
    pub local_site: Option<String>,
    /// Erasure shape for buckets that do not choose one (None: from the
    /// cluster's size, see [`crate::erasure_default`]).
    pub default_erasure: Option<ErasureSpec>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            metadata_replicas: 3,
            inline_threshold: 16 * 1024,
            chunker: ChunkerConfig::default(),
            chunks_in_flight: 4,
            write_bytes_in_flight: 32 << 20,
            min_part_size: 5 << 20,
            max_object_size: 5 << 40,
            local_site: None,
            default_erasure: None,
        }
    }
}
