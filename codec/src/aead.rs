//! ChaCha20-Poly1305 (RFC 8439) through `ring`.
//!
//! `ring` was chosen over RustCrypto's `chacha20poly1305` by measurement
//! (benches/README.md): 1.98 vs 1.33 GiB/s per core on this grid's reference
//! machine. Both implement the same IETF construction, so the choice does not
//! touch the shard format; a test checks the two agree byte for byte.

use crate::error::{CodecError, Result};
use crate::keys::{ChunkId, ChunkKey};
use crate::shard::TAG_LEN;
use ring::aead::{Aad, LessSafeKey, Nonce, Tag, UnboundKey, CHACHA20_POLY1305};

/// Associated data: the header fields a reader trusts when it sizes buffers
/// and decides whether to decompress. Binding them to the tag means a node
/// that edits them (and recomputes the unkeyed shard checksum) is caught.
pub(crate) fn associated_data(
    id: &ChunkId,
    plaintext_len: u64,
    payload_len: u64,
    flags: u8,
) -> [u8; 57] {
    let mut ad = [0u8; 57];
    ad[0..8].copy_from_slice(b"GSHDv1\0\0");
    ad[8..40].copy_from_slice(&id.0);
    ad[40..48].copy_from_slice(&plaintext_len.to_le_bytes());
    ad[48..56].copy_from_slice(&payload_len.to_le_bytes());
    ad[56] = flags;
    ad
}

fn key(k: &ChunkKey) -> Result<LessSafeKey> {
    UnboundKey::new(&CHACHA20_POLY1305, &k.0)
        .map(LessSafeKey::new)
        .map_err(|_| CodecError::AuthenticationFailed)
}

/// Encrypt `buf` in place and return the tag.
pub(crate) fn seal(
    k: &ChunkKey,
    nonce: [u8; 12],
    ad: &[u8],
    buf: &mut [u8],
) -> Result<[u8; TAG_LEN]> {
    let tag: Tag = key(k)?
        .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(ad), buf)
        .map_err(|_| CodecError::AuthenticationFailed)?;
    let mut out = [0u8; TAG_LEN];
    out.copy_from_slice(tag.as_ref());
    Ok(out)
}

/// Decrypt `buf` (ciphertext followed by its tag) in place; on success the
/// first `buf.len() - TAG_LEN` bytes are the plaintext.
pub(crate) fn open(k: &ChunkKey, nonce: [u8; 12], ad: &[u8], buf: &mut [u8]) -> Result<()> {
    key(k)?
        .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(ad), buf)
        .map(|_| ())
        .map_err(|_| CodecError::AuthenticationFailed)
}
