//! gridstore's codec: the pure transforms every byte goes through.
//!
//! ```text
//! seal: plaintext ─ keyed BLAKE3 ─▶ chunk id
//!                 └ zstd (skipped when it does not shrink)
//!                   └ ChaCha20-Poly1305 (key from domain secret + chunk id)
//!                     └ Reed-Solomon k + m ─▶ shards, each header + body + BLAKE3
//! open: any k shards ─ verify ─ reconstruct ─ decrypt ─ decompress ─ check id
//! ```
//!
//! No I/O, no async, no global state: callers own the threads. A [`Sealer`]
//! or [`Opener`] per thread keeps its buffers and contexts across chunks;
//! [`parallel`] spreads a batch over scoped threads.
//!
//! A storage node needs no key for anything it does with shards:
//! [`shard::verify`] checks one, [`Rebuilder`] recreates lost ones.

mod aead;
pub mod audit;
pub mod chunker;
mod compress;
mod erasure;
mod error;
mod keys;
mod open;
pub mod parallel;
mod seal;
pub mod shard;

pub use chunker::{Chunk, Chunker, ChunkerConfig, ReadChunker};
pub use erasure::{ErasureParams, MAX_SHARDS};
pub use error::{CodecError, Result};
pub use keys::{ChunkId, ChunkKey, DomainKey};
pub use open::{with_opener, OpenReport, Opener, Rebuilder, RejectedShard};
pub use seal::{SealConfig, SealedChunk, Sealer, DEFAULT_ZSTD_LEVEL, MAX_CHUNK_LEN};
