//! Sealing one chunk: compress → encrypt → erasure-code → checksum.

use crate::aead;
use crate::compress::Compressor;
use crate::erasure::{Coder, ErasureParams};
use crate::error::{CodecError, Result};
use crate::keys::{ChunkId, ChunkKey, DomainKey};
use crate::shard::{AeadAlgorithm, ShardHeader, BODY_ALIGN, FLAG_COMPRESSED, HEADER_LEN, TAG_LEN};

/// Largest chunk the codec seals or opens. The chunker's maximum is 16 MiB;
/// the margin lets callers seal whole small objects as one chunk, while a
/// forged header can never make a reader allocate more than this.
pub const MAX_CHUNK_LEN: usize = 64 << 20;

/// Default zstd level: level 3 is zstd's own default, a good ratio at
/// several hundred MB/s on compressible data.
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SealConfig {
    pub erasure: ErasureParams,
    /// zstd level; 0 disables compression.
    pub zstd_level: i32,
}

impl SealConfig {
    pub fn new(erasure: ErasureParams) -> Self {
        Self {
            erasure,
            zstd_level: DEFAULT_ZSTD_LEVEL,
        }
    }
}

/// A sealed chunk: the k + m shards, each a header plus a body. Bodies live
/// in one buffer back to back, which is how they were encrypted and coded;
/// `shard()` joins a header and body for callers that want one buffer.
#[derive(Debug, Default, Clone)]
pub struct SealedChunk {
    pub(crate) id: Option<ChunkId>,
    pub(crate) headers: Vec<[u8; HEADER_LEN]>,
    pub(crate) bodies: Vec<u8>,
    pub(crate) body_len: usize,
    pub(crate) plaintext_len: usize,
    pub(crate) compressed: bool,
}

impl SealedChunk {
    /// The chunk id. Panics only if called on a `SealedChunk::default()` that
    /// was never filled, which is a programming error.
    pub fn id(&self) -> ChunkId {
        self.id.expect("SealedChunk used before sealing")
    }

    pub fn shard_count(&self) -> usize {
        self.headers.len()
    }

    /// `(k, m)`: data and parity shards (from the shard headers, bytes 9
    /// and 10 of the format).
    pub fn shape(&self) -> (usize, usize) {
        self.headers
            .first()
            .map_or((0, 0), |h| (h[9] as usize, h[10] as usize))
    }

    pub fn header(&self, index: usize) -> &[u8] {
        &self.headers[index]
    }

    pub fn body(&self, index: usize) -> &[u8] {
        &self.bodies[index * self.body_len..(index + 1) * self.body_len]
    }

    /// Header and body of shard `index` as one buffer (one copy).
    pub fn shard(&self, index: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(HEADER_LEN + self.body_len);
        v.extend_from_slice(self.header(index));
        v.extend_from_slice(self.body(index));
        v
    }

    /// Every shard as its own buffer, in index order.
    pub fn shards(&self) -> Vec<Vec<u8>> {
        (0..self.shard_count()).map(|i| self.shard(i)).collect()
    }

    pub fn plaintext_len(&self) -> usize {
        self.plaintext_len
    }

    pub fn compressed(&self) -> bool {
        self.compressed
    }

    /// Bytes stored across all shards, headers included.
    pub fn stored_len(&self) -> usize {
        self.shard_count() * (HEADER_LEN + self.body_len)
    }
}

/// Seals chunks, keeping its compressor context and coder between calls so
/// the hot path allocates nothing once warm (pass a recycled `SealedChunk`
/// to `seal_into`). One per thread.
pub struct Sealer {
    coder: Coder,
    compressor: Compressor,
}

impl Sealer {
    pub fn new(config: SealConfig) -> Result<Self> {
        Ok(Self {
            coder: Coder::new(config.erasure)?,
            compressor: Compressor::new(config.zstd_level)?,
        })
    }

    pub fn params(&self) -> ErasureParams {
        self.coder.params()
    }

    /// Compute the chunk id and seal with convergent encryption inside
    /// `domain`.
    pub fn seal(&mut self, domain: &DomainKey, plaintext: &[u8]) -> Result<SealedChunk> {
        let mut out = SealedChunk::default();
        self.seal_into(domain, plaintext, &mut out)?;
        Ok(out)
    }

    /// Like `seal`, reusing `out`'s buffers.
    pub fn seal_into(
        &mut self,
        domain: &DomainKey,
        plaintext: &[u8],
        out: &mut SealedChunk,
    ) -> Result<()> {
        check_len(plaintext.len())?;
        let id = domain.chunk_id(plaintext);
        self.seal_chunk(domain, id, plaintext, out)
    }

    /// Seal a chunk whose id the caller already computed with
    /// `domain.chunk_id(plaintext)`. The write path computes the id first to
    /// ask whether the chunk is already stored, and seals only new chunks,
    /// so hashing again here would be waste. Reads do not rehash either (the
    /// AEAD binds the bytes to the id), so a wrong id is caught only by this
    /// assertion, which every test runs.
    pub fn seal_chunk(
        &mut self,
        domain: &DomainKey,
        id: ChunkId,
        plaintext: &[u8],
        out: &mut SealedChunk,
    ) -> Result<()> {
        debug_assert_eq!(
            domain.chunk_id(plaintext),
            id,
            "seal_chunk given a wrong id"
        );
        let key = domain.chunk_key(&id);
        // The key is unique to this content (derived from its keyed hash), so
        // a fixed nonce never encrypts two different plaintexts under one key.
        self.seal_with_key(id, &key, [0u8; 12], plaintext, out)
    }

    /// Seal under an explicit key and nonce (SSE-C and other keys outside a
    /// domain). The caller must never reuse a (key, nonce) pair for different
    /// plaintexts; `id` is stored as given.
    pub fn seal_with_key(
        &mut self,
        id: ChunkId,
        key: &ChunkKey,
        nonce: [u8; 12],
        plaintext: &[u8],
        out: &mut SealedChunk,
    ) -> Result<()> {
        check_len(plaintext.len())?;
        let params = self.coder.params();
        let (k, n) = (params.data(), params.total());

        // Size the buffer for the raw case; compression only shrinks it.
        let worst_body = body_len_for(plaintext.len(), k);
        let worst_total = worst_body * n;
        if out.bodies.len() < worst_total {
            out.bodies.resize(worst_total, 0);
        }

        let (payload_len, flags) = match self
            .compressor
            .compress(plaintext, &mut out.bodies[..plaintext.len()])
        {
            Some(n) => (n, FLAG_COMPRESSED),
            None => {
                out.bodies[..plaintext.len()].copy_from_slice(plaintext);
                (plaintext.len(), 0)
            }
        };

        let body_len = body_len_for(payload_len, k);
        let stripe = body_len * k;
        let total = body_len * n;
        out.bodies.truncate(total);

        let ad = aead::associated_data(&id, plaintext.len() as u64, payload_len as u64, flags);
        let tag = aead::seal(key, nonce, &ad, &mut out.bodies[..payload_len])?;
        out.bodies[payload_len..payload_len + TAG_LEN].copy_from_slice(&tag);
        // Padding is part of the coded stripe: it must be deterministic for
        // rebuilt shards to be byte-identical and for dedup to hold.
        out.bodies[payload_len + TAG_LEN..stripe].fill(0);

        self.coder.encode(&mut out.bodies, body_len)?;

        out.headers.clear();
        for index in 0..n {
            let mut h = ShardHeader {
                aead: AeadAlgorithm::ChaCha20Poly1305,
                flags,
                params,
                index: index as u8,
                chunk_id: id,
                plaintext_len: plaintext.len() as u64,
                payload_len: payload_len as u64,
                body_len: body_len as u32,
                nonce,
                checksum: [0; 32],
                header_len: HEADER_LEN,
            };
            let body = &out.bodies[index * body_len..(index + 1) * body_len];
            out.headers.push(h.encode(body));
        }
        out.id = Some(id);
        out.body_len = body_len;
        out.plaintext_len = plaintext.len();
        out.compressed = flags & FLAG_COMPRESSED != 0;
        Ok(())
    }
}

fn check_len(len: usize) -> Result<()> {
    if len > MAX_CHUNK_LEN {
        return Err(CodecError::ChunkTooLarge {
            len,
            max: MAX_CHUNK_LEN,
        });
    }
    Ok(())
}

/// Body length of each shard for a payload: the sealed payload (payload +
/// tag) split over k shards, rounded up to the SIMD alignment.
pub(crate) fn body_len_for(payload_len: usize, k: usize) -> usize {
    (payload_len + TAG_LEN).div_ceil(k).div_ceil(BODY_ALIGN) * BODY_ALIGN
}
