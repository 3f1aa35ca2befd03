//! The on-disk and on-wire shard format.
//!
//! A shard is a fixed header followed by its body (a slice of the
//! Reed-Solomon stripe). The header is self-describing so that a node that
//! holds no key can verify, store, serve and rebuild a shard:
//!
//! ```text
//! offset size field
//!      0    4 magic "GSHD"
//!      4    1 format version (1)
//!      5    2 header length, little-endian (>= 112; longer headers carry
//!             future fields, covered by the checksum, ignored by v1 readers)
//!      7    1 AEAD algorithm (1 = ChaCha20-Poly1305)
//!      8    1 flags (bit 0: payload is zstd-compressed; others must be 0)
//!      9    1 k (data shards)
//!     10    1 m (parity shards)
//!     11    1 index of this shard (0..k are data, k..k+m parity)
//!     12    4 reserved, zero
//!     16   32 chunk id (keyed hash: reveals nothing about the content)
//!     48    8 plaintext length
//!     56    8 payload length (after compression, before encryption)
//!     64    4 body length of every shard of this chunk
//!     68   12 AEAD nonce
//!     80   32 BLAKE3 of header[0..80] (+ any extension) and the body
//! ```
//!
//! The checksum covers the header fields too, so a shard whose index or
//! lengths were altered fails verification exactly like a flipped body byte.

use crate::erasure::{ErasureParams, MAX_SHARDS};
use crate::error::{CodecError, Result};
use crate::keys::ChunkId;

pub const MAGIC: [u8; 4] = *b"GSHD";
pub const FORMAT_VERSION: u8 = 1;
/// Header length written by this version.
pub const HEADER_LEN: usize = 112;
const CHECKSUM_LEN: usize = 32;
/// Largest header a reader accepts, so a forged length cannot make it skip
/// arbitrary amounts of a buffer.
const MAX_HEADER_LEN: usize = 4096;

/// Shard bodies are padded to this multiple so SIMD Reed-Solomon runs on
/// whole vectors.
pub(crate) const BODY_ALIGN: usize = 64;

/// Authentication tag length of the AEAD.
pub(crate) const TAG_LEN: usize = 16;

pub const FLAG_COMPRESSED: u8 = 0b0000_0001;
const KNOWN_FLAGS: u8 = FLAG_COMPRESSED;

/// The AEAD that sealed the payload. Recorded per shard so that a faster
/// algorithm can be added without breaking existing data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum AeadAlgorithm {
    ChaCha20Poly1305 = 1,
}

impl AeadAlgorithm {
    fn from_u8(v: u8) -> Result<Self> {
        match v {
            1 => Ok(Self::ChaCha20Poly1305),
            _ => Err(CodecError::BadHeader("unknown AEAD algorithm")),
        }
    }
}

/// Parsed shard header. Every field but `index` and `checksum` is shared by
/// all shards of one chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardHeader {
    pub aead: AeadAlgorithm,
    pub flags: u8,
    pub params: ErasureParams,
    pub index: u8,
    pub chunk_id: ChunkId,
    pub plaintext_len: u64,
    pub payload_len: u64,
    pub body_len: u32,
    pub nonce: [u8; 12],
    pub checksum: [u8; 32],
    /// Length of the header as written (v1 writes HEADER_LEN).
    pub header_len: usize,
}

impl ShardHeader {
    pub fn compressed(&self) -> bool {
        self.flags & FLAG_COMPRESSED != 0
    }

    /// Total length of the shard (header + body).
    pub fn shard_len(&self) -> usize {
        self.header_len + self.body_len as usize
    }

    /// Whether two shards describe the same chunk the same way.
    pub fn same_chunk(&self, other: &ShardHeader) -> bool {
        self.aead == other.aead
            && self.flags == other.flags
            && self.params == other.params
            && self.chunk_id == other.chunk_id
            && self.plaintext_len == other.plaintext_len
            && self.payload_len == other.payload_len
            && self.body_len == other.body_len
            && self.nonce == other.nonce
    }

    /// Serialise the fields before the checksum into `out[..80]`.
    pub(crate) fn write_fields(&self, out: &mut [u8; HEADER_LEN]) {
        out[0..4].copy_from_slice(&MAGIC);
        out[4] = FORMAT_VERSION;
        out[5..7].copy_from_slice(&(HEADER_LEN as u16).to_le_bytes());
        out[7] = self.aead as u8;
        out[8] = self.flags;
        out[9] = self.params.data() as u8;
        out[10] = self.params.parity() as u8;
        out[11] = self.index;
        out[12..16].fill(0);
        out[16..48].copy_from_slice(&self.chunk_id.0);
        out[48..56].copy_from_slice(&self.plaintext_len.to_le_bytes());
        out[56..64].copy_from_slice(&self.payload_len.to_le_bytes());
        out[64..68].copy_from_slice(&self.body_len.to_le_bytes());
        out[68..80].copy_from_slice(&self.nonce);
    }

    /// Serialise the header, computing the checksum over it and `body`.
    pub fn encode(&mut self, body: &[u8]) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        self.write_fields(&mut out);
        let mut h = blake3::Hasher::new();
        h.update(&out[..HEADER_LEN - CHECKSUM_LEN]);
        h.update(body);
        self.checksum = *h.finalize().as_bytes();
        self.header_len = HEADER_LEN;
        out[HEADER_LEN - CHECKSUM_LEN..].copy_from_slice(&self.checksum);
        out
    }

    /// Parse a header from the start of `bytes` without verifying the
    /// checksum. Structural problems (magic, version, lengths, parameters)
    /// are reported here; body integrity is `verify`'s job.
    pub fn parse(bytes: &[u8]) -> Result<ShardHeader> {
        if bytes.len() < 7 {
            return Err(CodecError::BadHeader("shorter than the fixed header"));
        }
        if bytes[0..4] != MAGIC {
            return Err(CodecError::BadHeader("bad magic"));
        }
        if bytes[4] != FORMAT_VERSION {
            return Err(CodecError::UnsupportedVersion(bytes[4]));
        }
        let header_len = u16::from_le_bytes([bytes[5], bytes[6]]) as usize;
        if !(HEADER_LEN..=MAX_HEADER_LEN).contains(&header_len) {
            return Err(CodecError::BadHeader("header length out of range"));
        }
        if bytes.len() < header_len {
            return Err(CodecError::BadHeader("shorter than its header length"));
        }
        let aead = AeadAlgorithm::from_u8(bytes[7])?;
        let flags = bytes[8];
        if flags & !KNOWN_FLAGS != 0 {
            return Err(CodecError::BadHeader("unknown flags"));
        }
        let (k, m, index) = (bytes[9] as usize, bytes[10] as usize, bytes[11]);
        let params = ErasureParams::new(k, m)
            .map_err(|_| CodecError::BadHeader("invalid erasure parameters"))?;
        if index as usize >= params.total() || params.total() > MAX_SHARDS {
            return Err(CodecError::BadHeader("shard index out of range"));
        }
        if bytes[12..16] != [0; 4] {
            return Err(CodecError::BadHeader("reserved bytes set"));
        }
        let u64_at = |o: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[o..o + 8]);
            u64::from_le_bytes(b)
        };
        let mut chunk_id = [0u8; 32];
        chunk_id.copy_from_slice(&bytes[16..48]);
        let plaintext_len = u64_at(48);
        let payload_len = u64_at(56);
        let body_len = u32::from_le_bytes([bytes[64], bytes[65], bytes[66], bytes[67]]);
        let mut nonce = [0u8; 12];
        nonce.copy_from_slice(&bytes[68..80]);
        let mut checksum = [0u8; 32];
        checksum.copy_from_slice(&bytes[header_len - CHECKSUM_LEN..header_len]);

        // The stripe must be able to hold the sealed payload, and a raw
        // payload is the plaintext itself.
        let stripe = body_len as u64 * k as u64;
        if payload_len + TAG_LEN as u64 > stripe {
            return Err(CodecError::BadHeader("payload larger than the stripe"));
        }
        if flags & FLAG_COMPRESSED == 0 && payload_len != plaintext_len {
            return Err(CodecError::BadHeader(
                "raw payload length differs from plaintext",
            ));
        }
        if !(body_len as usize).is_multiple_of(BODY_ALIGN) {
            return Err(CodecError::BadHeader("body length not aligned"));
        }
        Ok(ShardHeader {
            aead,
            flags,
            params,
            index,
            chunk_id: ChunkId(chunk_id),
            plaintext_len,
            payload_len,
            body_len,
            nonce,
            checksum,
            header_len,
        })
    }
}

/// A parsed and checksum-verified shard borrowed from a caller's buffer.
#[derive(Debug, Clone)]
pub struct VerifiedShard<'a> {
    pub header: ShardHeader,
    pub body: &'a [u8],
}

/// Parse and verify one shard: the header must be well formed, the buffer
/// exactly header + body long, and the checksum must match.
pub fn verify(bytes: &[u8]) -> Result<VerifiedShard<'_>> {
    let v = parse(bytes)?;
    let mut h = blake3::Hasher::new();
    h.update(&bytes[..v.header.header_len - CHECKSUM_LEN]);
    h.update(v.body);
    if h.finalize().as_bytes() != &v.header.checksum {
        return Err(CodecError::CorruptShard {
            index: v.header.index as usize,
            reason: "checksum mismatch",
        });
    }
    Ok(v)
}

/// Parse a shard and check its length, without hashing the body. For
/// readers that authenticate the body by other means (the AEAD).
pub(crate) fn parse(bytes: &[u8]) -> Result<VerifiedShard<'_>> {
    let header = ShardHeader::parse(bytes)?;
    if bytes.len() != header.shard_len() {
        return Err(CodecError::CorruptShard {
            index: header.index as usize,
            reason: if bytes.len() < header.shard_len() {
                "truncated"
            } else {
                "trailing bytes"
            },
        });
    }
    let body = &bytes[header.header_len..];
    Ok(VerifiedShard { header, body })
}

/// Verifies a shard arriving in pieces (a network body), holding only its
/// header: storage nodes check every shard before committing it to disk.
#[derive(Default)]
pub struct StreamVerifier {
    head: Vec<u8>,
    header: Option<ShardHeader>,
    hasher: blake3::Hasher,
    body_seen: u64,
}

impl StreamVerifier {
    pub fn new() -> Self {
        Self::default()
    }

    /// The parsed header, once enough bytes arrived.
    pub fn header(&self) -> Option<&ShardHeader> {
        self.header.as_ref()
    }

    /// Feed the next bytes. Fails as soon as the header is malformed or the
    /// shard grows past the length its header declares.
    pub fn update(&mut self, mut data: &[u8]) -> Result<()> {
        while self.header.is_none() && !data.is_empty() {
            // First the 7 bytes that give the header length, then the rest.
            let want = if self.head.len() < 7 {
                7
            } else {
                u16::from_le_bytes([self.head[5], self.head[6]]) as usize
            };
            let take = (want - self.head.len()).min(data.len());
            self.head.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.head.len() == 7 {
                if self.head[0..4] != MAGIC {
                    return Err(CodecError::BadHeader("bad magic"));
                }
                let len = u16::from_le_bytes([self.head[5], self.head[6]]) as usize;
                if !(HEADER_LEN..=MAX_HEADER_LEN).contains(&len) {
                    return Err(CodecError::BadHeader("header length out of range"));
                }
            } else if self.head.len() == want {
                let header = ShardHeader::parse(&self.head)?;
                self.hasher
                    .update(&self.head[..header.header_len - CHECKSUM_LEN]);
                self.header = Some(header);
            }
        }
        let Some(h) = &self.header else {
            return Ok(());
        };
        self.body_seen += data.len() as u64;
        if self.body_seen > h.body_len as u64 {
            return Err(CodecError::CorruptShard {
                index: h.index as usize,
                reason: "trailing bytes",
            });
        }
        self.hasher.update(data);
        Ok(())
    }

    /// Check that the whole shard arrived and its checksum matches.
    pub fn finish(self) -> Result<ShardHeader> {
        let Some(h) = self.header else {
            return Err(CodecError::BadHeader("shorter than the fixed header"));
        };
        if self.body_seen != h.body_len as u64 {
            return Err(CodecError::CorruptShard {
                index: h.index as usize,
                reason: "truncated",
            });
        }
        if self.hasher.finalize().as_bytes() != &h.checksum {
            return Err(CodecError::CorruptShard {
                index: h.index as usize,
                reason: "checksum mismatch",
            });
        }
        Ok(h)
    }
}
