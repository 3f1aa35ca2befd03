//! Content-defined chunking (FastCDC, 2020 variant).
//!
//! Boundaries depend only on nearby content, so inserting or removing bytes
//! moves the boundaries around the edit and nowhere else: a new version of a
//! large file shares almost all its chunks with the old one.
//!
//! [`Chunker`] is a push API: feed byte slices of any size as they arrive
//! from a network body and take whole chunks out. It buffers at most one
//! maximum-size chunk plus the last slice fed. [`ReadChunker`] drives it from
//! any `std::io::Read`. Both give exactly the boundaries that chunking the
//! whole input at once would give.

use crate::error::{CodecError, Result};
use fastcdc::v2020;
use std::io::Read;

/// Chunk size bounds. FastCDC's normalised chunking keeps most chunks near
/// `avg`; `min` and `max` are hard limits (only the final chunk of an input
/// may be shorter than `min`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkerConfig {
    pub min: usize,
    pub avg: usize,
    pub max: usize,
    /// Gear-table seed. Different seeds give different boundaries; a key
    /// domain's seed (`DomainKey::cdc_seed`) hides chunk sizes of known files.
    pub seed: u64,
}

impl Default for ChunkerConfig {
    fn default() -> Self {
        Self {
            min: 256 * 1024,
            avg: 1024 * 1024,
            max: 4 * 1024 * 1024,
            seed: 0,
        }
    }
}

impl ChunkerConfig {
    pub fn new(min: usize, avg: usize, max: usize) -> Result<Self> {
        let c = Self {
            min,
            avg,
            max,
            seed: 0,
        };
        c.validate()?;
        Ok(c)
    }

    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    pub fn validate(&self) -> Result<()> {
        let err = |reason| CodecError::InvalidChunker {
            min: self.min,
            avg: self.avg,
            max: self.max,
            reason,
        };
        if !(v2020::MINIMUM_MIN as usize..=v2020::MINIMUM_MAX as usize).contains(&self.min) {
            return Err(err("min must be within 64 B ..= 1 MiB"));
        }
        if !(v2020::AVERAGE_MIN as usize..=v2020::AVERAGE_MAX as usize).contains(&self.avg) {
            return Err(err("avg must be within 256 B ..= 4 MiB"));
        }
        if !(v2020::MAXIMUM_MIN as usize..=v2020::MAXIMUM_MAX as usize).contains(&self.max) {
            return Err(err("max must be within 1 KiB ..= 16 MiB"));
        }
        if !(self.min <= self.avg && self.avg <= self.max) {
            return Err(err("need min <= avg <= max"));
        }
        Ok(())
    }
}

/// Precomputed masks and gear tables for one configuration.
#[derive(Clone)]
struct Cutter {
    cfg: ChunkerConfig,
    mask_s: u64,
    mask_l: u64,
    gear: Box<[u64; 256]>,
    gear_ls: Box<[u64; 256]>,
}

impl Cutter {
    fn new(cfg: ChunkerConfig) -> Result<Self> {
        cfg.validate()?;
        let bits = v2020::logarithm2(cfg.avg as u32);
        let norm = v2020::Normalization::Level1.bits();
        let (gear, gear_ls) = v2020::get_gear_with_seed(cfg.seed);
        Ok(Self {
            cfg,
            mask_s: v2020::MASKS[(bits + norm) as usize],
            mask_l: v2020::MASKS[(bits - norm) as usize],
            gear,
            gear_ls,
        })
    }

    /// Length of the chunk starting at `data[0]`. Only meaningful when
    /// `data` holds at least `max` bytes or the rest of the input.
    fn cut(&self, data: &[u8]) -> usize {
        let (_, len) = v2020::cut_gear(
            data,
            self.cfg.min,
            self.cfg.avg,
            self.cfg.max,
            self.mask_s,
            self.mask_l,
            self.mask_s << 1,
            self.mask_l << 1,
            &self.gear,
            &self.gear_ls,
        );
        len
    }
}

/// Buffer capacity beyond one maximum-size chunk (which a cut may need
/// whole), in halves of one: the bound on a chunker's memory (beyond the
/// largest slice pushed at once). Every upload holds one chunker, all of
/// whose buffer gets written, so this is paid per concurrent upload.
const BUFFER_SLACK_HALVES: usize = 1;

/// Incremental chunker: `push` bytes, then take chunks with `next_chunk`
/// until it returns `None`; after the last `push`, call `finish` and drain.
pub struct Chunker {
    cutter: Cutter,
    buf: Vec<u8>,
    /// Start of the bytes not yet returned as a chunk.
    pos: usize,
    finished: bool,
    offset: u64,
}

/// A chunk borrowed from the chunker, with its offset in the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunk<'a> {
    pub offset: u64,
    pub data: &'a [u8],
}

impl Chunker {
    pub fn new(cfg: ChunkerConfig) -> Result<Self> {
        Ok(Self {
            buf: Vec::with_capacity(cfg.max + cfg.max / 2 * BUFFER_SLACK_HALVES),
            cutter: Cutter::new(cfg)?,
            pos: 0,
            finished: false,
            offset: 0,
        })
    }

    pub fn config(&self) -> ChunkerConfig {
        self.cutter.cfg
    }

    /// Append input. Panics if called after `finish` (a caller bug).
    pub fn push(&mut self, data: &[u8]) {
        assert!(!self.finished, "Chunker::push after finish");
        if self.pos > 0 && self.buf.len() + data.len() > self.buf.capacity() {
            // Drop what was already handed out. Compacting only when the
            // buffer is full moves under `max` bytes (in practice about
            // half an average chunk) per `max / 2` or more consumed:
            // memmove is cheap next to hashing and sealing those bytes.
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// Mark the end of input, so the remaining bytes can be cut.
    pub fn finish(&mut self) {
        self.finished = true;
    }

    /// Bytes held that have not been returned as chunks yet.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// The next whole chunk, if one can be decided with the input so far.
    pub fn next_chunk(&mut self) -> Option<Chunk<'_>> {
        let rest = &self.buf[self.pos..];
        if rest.is_empty() || (!self.finished && rest.len() < self.cutter.cfg.max) {
            return None;
        }
        let len = self.cutter.cut(rest);
        let start = self.pos;
        self.pos += len;
        let offset = self.offset;
        self.offset += len as u64;
        Some(Chunk {
            offset,
            data: &self.buf[start..start + len],
        })
    }
}

impl Chunker {
    /// Like [`Chunker::next_chunk`], but decides a chunk as soon as its
    /// end is certain rather than once `max` bytes are held: a boundary
    /// found before the end of the bytes held is the one more input would
    /// give too (the scan takes the first match). Boundaries are the same
    /// as `next_chunk` gives. Each call scans the pending bytes again, so
    /// feed it large slices (whole chunks), not network pieces.
    pub fn next_decided_chunk(&mut self) -> Option<Chunk<'_>> {
        let rest = &self.buf[self.pos..];
        if self.finished || rest.len() >= self.cutter.cfg.max {
            return self.next_chunk();
        }
        let len = self.cutter.cut(rest);
        if len >= rest.len() {
            return None;
        }
        let start = self.pos;
        self.pos += len;
        let offset = self.offset;
        self.offset += len as u64;
        Some(Chunk {
            offset,
            data: &self.buf[start..start + len],
        })
    }

    /// Input offset of the first byte not yet returned as a chunk.
    pub fn position(&self) -> u64 {
        self.offset
    }
}

/// Chunk boundaries of a whole in-memory input, as (offset, length).
pub fn chunk_boundaries(cfg: ChunkerConfig, data: &[u8]) -> Result<Vec<(usize, usize)>> {
    let cutter = Cutter::new(cfg)?;
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < data.len() {
        let len = cutter.cut(&data[pos..]);
        out.push((pos, len));
        pos += len;
    }
    Ok(out)
}

/// Chunks from a reader. Call `next_chunk` until it returns `Ok(None)`.
pub struct ReadChunker<R> {
    reader: R,
    chunker: Chunker,
    read_buf: Vec<u8>,
}

impl<R: Read> ReadChunker<R> {
    pub fn new(reader: R, cfg: ChunkerConfig) -> Result<Self> {
        Ok(Self {
            reader,
            chunker: Chunker::new(cfg)?,
            read_buf: vec![0u8; 256 * 1024],
        })
    }

    /// The next chunk, or `None` at the end of the input.
    pub fn next_chunk(&mut self) -> std::io::Result<Option<Chunk<'_>>> {
        loop {
            // Polonius-free borrow dance: decide first, then borrow for return.
            let ready =
                self.chunker.finished || self.chunker.pending() >= self.chunker.cutter.cfg.max;
            if ready {
                return Ok(self.chunker.next_chunk());
            }
            match self.reader.read(&mut self.read_buf) {
                Ok(0) => self.chunker.finish(),
                Ok(n) => self.chunker.push(&self.read_buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}
