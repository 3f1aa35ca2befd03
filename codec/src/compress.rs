//! zstd with a cheap incompressibility probe.
//!
//! Encrypted, already-compressed and media data make up most of a backup
//! grid, and running the full compressor over them costs more than every
//! other stage of sealing together. A few kilobytes sampled across the chunk
//! predict the outcome well; the full pass runs only when the sample shrinks.

use crate::error::{CodecError, Result};

/// Bytes sampled from each of `SAMPLES` evenly spaced places in the chunk.
const SAMPLE_LEN: usize = 4096;
const SAMPLES: usize = 4;
/// Chunks smaller than this skip the probe and try the real thing.
const PROBE_MIN: usize = 64 * 1024;

pub(crate) struct Compressor {
    level: i32,
    zc: zstd::bulk::Compressor<'static>,
    zd: zstd::bulk::Decompressor<'static>,
    sample: Vec<u8>,
    sample_out: Vec<u8>,
}

/// Smallest saving worth a decompression pass on every read: 1/32 of the
/// chunk (about 3 %).
fn worth_it(original: usize, compressed: usize) -> bool {
    compressed + original / 32 < original
}

impl Compressor {
    pub(crate) fn new(level: i32) -> Result<Self> {
        if level != 0 && !zstd::compression_level_range().contains(&level) {
            return Err(CodecError::InvalidCompressionLevel(level));
        }
        let zc = zstd::bulk::Compressor::new(level.max(1))
            .map_err(|_| CodecError::InvalidCompressionLevel(level))?;
        let zd =
            zstd::bulk::Decompressor::new().map_err(|e| CodecError::Decompress(e.to_string()))?;
        Ok(Self {
            level,
            zc,
            zd,
            sample: Vec::with_capacity(SAMPLE_LEN * SAMPLES),
            sample_out: vec![0u8; SAMPLE_LEN * SAMPLES],
        })
    }

    fn probably_compressible(&mut self, input: &[u8]) -> bool {
        if input.len() < PROBE_MIN {
            return true;
        }
        self.sample.clear();
        let stride = (input.len() - SAMPLE_LEN) / (SAMPLES - 1);
        for i in 0..SAMPLES {
            let at = i * stride;
            self.sample.extend_from_slice(&input[at..at + SAMPLE_LEN]);
        }
        match self
            .zc
            .compress_to_buffer(&self.sample, &mut self.sample_out[..])
        {
            Ok(n) => worth_it(self.sample.len(), n),
            Err(_) => false,
        }
    }

    /// Compress `input` into `out` (which must be at least `input.len()`
    /// long). Returns the compressed length, or `None` when the data should be
    /// stored raw (level 0, incompressible, or not shrinking enough).
    pub(crate) fn compress(&mut self, input: &[u8], out: &mut [u8]) -> Option<usize> {
        if self.level == 0 || input.is_empty() || !self.probably_compressible(input) {
            return None;
        }
        let limit = input.len() - input.len() / 32;
        // A destination smaller than the input makes zstd give up as soon as
        // the output would not fit: the "does not shrink" case costs no more
        // than the attempt.
        match self.zc.compress_to_buffer(input, &mut out[..limit]) {
            Ok(n) if worth_it(input.len(), n) => Some(n),
            _ => None,
        }
    }

    /// Decompress exactly `expected` bytes into `out` (cleared first).
    pub(crate) fn decompress(
        &mut self,
        input: &[u8],
        expected: usize,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        out.clear();
        out.reserve(expected);
        let n = self
            .zd
            .decompress_to_buffer(input, out)
            .map_err(|e| CodecError::Decompress(e.to_string()))?;
        if n != expected {
            return Err(CodecError::Decompress(format!(
                "{n} bytes decompressed, {expected} expected"
            )));
        }
        Ok(())
    }
}
