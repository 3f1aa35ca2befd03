//! Storage audits: a proof that a node holds a shard, checked by a caller
//! who holds only the shard's checksum.
//!
//! A shard's checksum is plain BLAKE3 over one contiguous byte string, the
//! *checksummed bytes*: the header up to its checksum field (with any header
//! extension) followed by the body. BLAKE3's root hash is also the root of a
//! `bao` verified-streaming tree over those bytes, so a node can answer a
//! challenge for any slice of them with the slice and the sibling hashes on
//! its path to the root, and the challenger checks that against the
//! checksum the writer recorded, without the rest of the shard. Computing
//! the sibling hashes needs every byte of the shard, so a node that dropped
//! it cannot answer, and a node that kept only part of it fails whenever the
//! slice or a sibling subtree falls in what it dropped.

use crate::error::{CodecError, Result};
use crate::shard::ShardHeader;
use std::io::{Cursor, Read};

const CHECKSUM_LEN: usize = 32;

/// Largest slice a challenge may ask for: enough to cover a few bao chunks
/// (1 KiB each), small enough that a proof stays a small message.
pub const MAX_SLICE_LEN: u64 = 64 * 1024;

/// Length of the checksummed bytes of a shard of `shard_len` bytes (header
/// included): everything but the checksum itself. `None` for a length too
/// short to be a shard.
pub fn checksummed_len(shard_len: u64) -> Option<u64> {
    shard_len
        .checked_sub(CHECKSUM_LEN as u64)
        .filter(|l| *l >= (crate::shard::HEADER_LEN - CHECKSUM_LEN) as u64)
}

/// The bytes a shard's checksum covers (see the module doc). The header
/// must parse and the buffer be exactly as long as it declares; the
/// checksum itself is not checked here (a proof over damaged bytes fails
/// at the challenger, which is the point).
pub fn checksummed(shard: &[u8]) -> Result<Vec<u8>> {
    let header = ShardHeader::parse(shard)?;
    if shard.len() != header.shard_len() {
        return Err(CodecError::CorruptShard {
            index: header.index as usize,
            reason: if shard.len() < header.shard_len() {
                "truncated"
            } else {
                "trailing bytes"
            },
        });
    }
    let sum_at = header.header_len - CHECKSUM_LEN;
    let mut out = Vec::with_capacity(shard.len() - CHECKSUM_LEN);
    out.extend_from_slice(&shard[..sum_at]);
    out.extend_from_slice(&shard[header.header_len..]);
    Ok(out)
}

/// A slice proof made by the node that holds the shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SliceProof {
    /// The bao slice: the slice's bytes interleaved with the hashes that
    /// tie them to the root.
    pub proof: Vec<u8>,
    /// Whether the root of the bytes proved is the checksum in the shard's
    /// own header: `false` means the shard rotted (or was altered) on disk,
    /// and the proof will be refused.
    pub intact: bool,
}

fn check_slice(offset: u64, len: u64, total: u64) -> Result<()> {
    if len == 0 || len > MAX_SLICE_LEN || offset >= total || total - offset < len {
        return Err(CodecError::SliceOutOfRange { offset, len, total });
    }
    Ok(())
}

/// Prove `len` bytes at `offset` of the checksummed bytes of `shard` (a
/// whole shard as stored). The outboard tree is computed here and dropped:
/// nodes store no outboards, so every proof costs one pass over the shard.
pub fn prove_slice(shard: &[u8], offset: u64, len: u64) -> Result<SliceProof> {
    let header = ShardHeader::parse(shard)?;
    let bytes = checksummed(shard)?;
    check_slice(offset, len, bytes.len() as u64)?;
    let (outboard, root) = bao::encode::outboard(&bytes);
    let mut extractor = bao::encode::SliceExtractor::new_outboard(
        Cursor::new(&bytes[..]),
        Cursor::new(&outboard[..]),
        offset,
        len,
    );
    let mut proof = Vec::new();
    // Reads from memory over a tree made from the same bytes: an error
    // here is a bug in the extractor, reported rather than trusted.
    extractor
        .read_to_end(&mut proof)
        .map_err(|_| CodecError::BadProof("slice extraction failed"))?;
    Ok(SliceProof {
        proof,
        intact: root.as_bytes() == &header.checksum,
    })
}

/// Check a slice proof against the checksum the shard was written with
/// (`root`), for the slice that was asked for. Returns the slice's bytes.
/// Anything but exactly `len` verified bytes is refused: a proof for other
/// bytes, another shard or another slice, a truncated or padded proof, a
/// slice past the end of a shorter shard.
pub fn verify_slice(proof: &[u8], root: &[u8; 32], offset: u64, len: u64) -> Result<Vec<u8>> {
    if len == 0 || len > MAX_SLICE_LEN {
        return Err(CodecError::SliceOutOfRange {
            offset,
            len,
            total: 0,
        });
    }
    let hash = blake3::Hash::from_bytes(*root);
    let mut decoder = bao::decode::SliceDecoder::new(proof, &hash, offset, len);
    let mut out = Vec::with_capacity(len as usize);
    decoder
        .read_to_end(&mut out)
        .map_err(|_| CodecError::BadProof("does not verify against the recorded checksum"))?;
    if out.len() as u64 != len {
        return Err(CodecError::BadProof("slice shorter than asked"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DomainKey, ErasureParams, SealConfig, Sealer};
    use rand::{RngCore, SeedableRng};

    fn shards() -> Vec<Vec<u8>> {
        let key = DomainKey::new([7; 32]);
        // Incompressible, so each shard is about 50 KiB: many bao chunks.
        let mut data = vec![0u8; 200_000];
        rand::rngs::StdRng::seed_from_u64(5).fill_bytes(&mut data);
        let mut sealer = Sealer::new(SealConfig::new(ErasureParams::new(4, 2).unwrap())).unwrap();
        let sealed = sealer.seal(&key, &data).unwrap();
        (0..6)
            .map(|i| [sealed.header(i), sealed.body(i)].concat())
            .collect()
    }

    fn checksum(shard: &[u8]) -> [u8; 32] {
        ShardHeader::parse(shard).unwrap().checksum
    }

    #[test]
    fn checksummed_bytes_hash_to_the_checksum() {
        for s in shards() {
            let bytes = checksummed(&s).unwrap();
            assert_eq!(bytes.len() as u64, checksummed_len(s.len() as u64).unwrap());
            assert_eq!(blake3::hash(&bytes).as_bytes(), &checksum(&s));
        }
    }

    #[test]
    fn a_proof_round_trips_anywhere_in_the_shard() {
        let s = &shards()[1];
        let total = checksummed_len(s.len() as u64).unwrap();
        let want = checksummed(s).unwrap();
        for (offset, len) in [
            (0, 1),
            (0, 4096),
            (70, 100),
            (1023, 2),
            (total - 1, 1),
            (total - 5000, 5000),
        ] {
            let p = prove_slice(s, offset, len).unwrap();
            assert!(p.intact);
            let got = verify_slice(&p.proof, &checksum(s), offset, len).unwrap();
            assert_eq!(got, want[offset as usize..(offset + len) as usize]);
        }
    }

    #[test]
    fn a_flipped_byte_is_refused_wherever_it_is() {
        let s = &shards()[0];
        let root = checksum(s);
        let total = checksummed_len(s.len() as u64).unwrap();
        // In the slice asked for, far from it, and in the header.
        for flip in [5_000usize, s.len() - 1, 20] {
            let mut bad = s.clone();
            bad[flip] ^= 0x40;
            let p = prove_slice(&bad, 4096, 1024).unwrap();
            assert!(!p.intact);
            assert!(
                verify_slice(&p.proof, &root, 4096, 1024).is_err(),
                "flip at {flip}"
            );
        }
        // A flipped byte in the proof itself.
        let mut p = prove_slice(s, 0, 1024).unwrap().proof;
        let last = p.len() - 1;
        p[last] ^= 1;
        assert!(verify_slice(&p, &root, 0, 1024).is_err());
        assert!(total > 4096 + 1024);
    }

    #[test]
    fn a_truncated_shard_or_proof_is_refused() {
        let s = &shards()[2];
        let root = checksum(s);
        // The node cannot even parse a cut shard as one...
        let cut = &s[..s.len() - 1000];
        assert!(prove_slice(cut, 0, 100).is_err());
        // ...and a shard cut and re-labelled to its new length proves
        // bytes whose root is not the recorded one.
        let mut relabelled = cut.to_vec();
        let body_len = u32::from_le_bytes(relabelled[64..68].try_into().unwrap()) - 1024;
        relabelled.truncate(112 + body_len as usize);
        relabelled[64..68].copy_from_slice(&body_len.to_le_bytes());
        if let Ok(p) = prove_slice(&relabelled, 0, 100) {
            assert!(verify_slice(&p.proof, &root, 0, 100).is_err());
        }
        // A proof cut short.
        let p = prove_slice(s, 2048, 2048).unwrap().proof;
        assert!(verify_slice(&p[..p.len() - 1], &root, 2048, 2048).is_err());
        assert!(verify_slice(&p[..p.len() / 2], &root, 2048, 2048).is_err());
        assert!(verify_slice(&[], &root, 2048, 2048).is_err());
    }

    #[test]
    fn a_proof_for_another_shard_or_slice_is_refused() {
        let all = shards();
        let (a, b) = (&all[0], &all[3]);
        let p = prove_slice(b, 1000, 500).unwrap();
        assert!(p.intact);
        assert!(verify_slice(&p.proof, &checksum(a), 1000, 500).is_err());
        // The right shard, but not the slice asked for.
        let p = prove_slice(a, 0, 500).unwrap();
        assert!(verify_slice(&p.proof, &checksum(a), 8192, 500).is_err());
        // A same-index shard of another chunk.
        let other = {
            let key = DomainKey::new([8; 32]);
            let mut sealer =
                Sealer::new(SealConfig::new(ErasureParams::new(4, 2).unwrap())).unwrap();
            let mut data = vec![0u8; 200_000];
            rand::rngs::StdRng::seed_from_u64(6).fill_bytes(&mut data);
            let sealed = sealer.seal(&key, &data).unwrap();
            [sealed.header(0), sealed.body(0)].concat()
        };
        let p = prove_slice(&other, 0, 64).unwrap();
        assert!(verify_slice(&p.proof, &checksum(a), 0, 64).is_err());
    }

    #[test]
    fn slices_outside_the_shard_or_too_long_are_refused() {
        let s = &shards()[0];
        let total = checksummed_len(s.len() as u64).unwrap();
        assert!(prove_slice(s, total, 1).is_err());
        assert!(prove_slice(s, total - 10, 11).is_err());
        assert!(prove_slice(s, 0, 0).is_err());
        assert!(prove_slice(s, 0, MAX_SLICE_LEN + 1).is_err());
        // A proof of a real slice cannot pass for a longer one past the end.
        let p = prove_slice(s, total - 10, 10).unwrap();
        assert!(verify_slice(&p.proof, &checksum(s), total - 10, 20).is_err());
    }
}
