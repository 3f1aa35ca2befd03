//! Reed-Solomon parameters and the coder.

use crate::error::{CodecError, Result};
use reed_solomon_erasure::galois_8::ReedSolomon;

/// Largest k + m accepted. GF(2^8) allows 256; beyond 64 shards per chunk the
/// per-shard header and the reconstruction matrix stop paying for themselves,
/// and the shard index must fit one header byte.
pub const MAX_SHARDS: usize = 64;

/// k data shards plus m parity shards; any k of them rebuild the chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ErasureParams {
    k: u8,
    m: u8,
}

impl ErasureParams {
    pub fn new(k: usize, m: usize) -> Result<Self> {
        if k == 0 || k + m > MAX_SHARDS {
            return Err(CodecError::InvalidErasure {
                k,
                m,
                max: MAX_SHARDS,
            });
        }
        Ok(Self {
            k: k as u8,
            m: m as u8,
        })
    }

    pub fn data(&self) -> usize {
        self.k as usize
    }

    pub fn parity(&self) -> usize {
        self.m as usize
    }

    pub fn total(&self) -> usize {
        self.data() + self.parity()
    }
}

/// Wraps the Reed-Solomon coder; m = 0 (no parity) is handled here because
/// the library rejects it, and it is a legitimate choice for scratch data.
pub(crate) struct Coder {
    params: ErasureParams,
    rs: Option<ReedSolomon>,
}

impl Coder {
    pub(crate) fn new(params: ErasureParams) -> Result<Self> {
        let rs = if params.parity() == 0 {
            None
        } else {
            Some(
                ReedSolomon::new(params.data(), params.parity())
                    .map_err(|e| CodecError::ReedSolomon(format!("{e:?}")))?,
            )
        };
        Ok(Self { params, rs })
    }

    pub(crate) fn params(&self) -> ErasureParams {
        self.params
    }

    /// Fill the parity shards from the data shards. `bodies` holds all
    /// k + m shard bodies back to back, each `shard_len` long.
    pub(crate) fn encode(&self, bodies: &mut [u8], shard_len: usize) -> Result<()> {
        let Some(rs) = &self.rs else { return Ok(()) };
        let (data, parity) = bodies.split_at_mut(self.params.data() * shard_len);
        let data: Vec<&[u8]> = data.chunks_exact(shard_len).collect();
        let mut parity: Vec<&mut [u8]> = parity.chunks_exact_mut(shard_len).collect();
        rs.encode_sep(&data, &mut parity)
            .map_err(|e| CodecError::ReedSolomon(format!("{e:?}")))
    }

    /// Recompute missing shards in place. `bodies` holds k + m slots of
    /// `shard_len` bytes; `present[i]` says which hold valid data. With
    /// `data_only`, parity shards are left alone (what a reader needs).
    pub(crate) fn reconstruct(
        &self,
        bodies: &mut [u8],
        shard_len: usize,
        present: &[bool],
        data_only: bool,
    ) -> Result<()> {
        let valid = present.iter().filter(|p| **p).count();
        let needed = self.params.data();
        if valid < needed {
            return Err(CodecError::TooFewShards { valid, needed });
        }
        let missing_data = present[..needed].iter().any(|p| !p);
        let missing_any = present.iter().any(|p| !p);
        if !(missing_data || (!data_only && missing_any)) {
            return Ok(());
        }
        let Some(rs) = &self.rs else {
            // m = 0 and every data shard present: nothing to rebuild. (The
            // count check above already rejected a missing one.)
            return Ok(());
        };
        let mut slots: Vec<(&mut [u8], bool)> = bodies
            .chunks_exact_mut(shard_len)
            .zip(present.iter().copied())
            .collect();
        let r = if data_only {
            rs.reconstruct_data(&mut slots)
        } else {
            rs.reconstruct(&mut slots)
        };
        r.map_err(|e| CodecError::ReedSolomon(format!("{e:?}")))
    }
}
