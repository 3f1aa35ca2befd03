//! Opening a chunk from any k valid shards, and rebuilding lost shards
//! without keys.

use crate::aead;
use crate::compress::Compressor;
use crate::erasure::{Coder, ErasureParams};
use crate::error::{CodecError, Result};
use crate::keys::{ChunkId, ChunkKey, DomainKey};
use crate::seal::MAX_CHUNK_LEN;
use crate::shard::{self, ShardHeader, VerifiedShard, TAG_LEN};

/// A shard that could not be used, by its position in the caller's slice.
/// Gateways report these to the repair queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedShard {
    pub position: usize,
    pub error: CodecError,
}

/// What happened while opening: which shards were rejected and which indices
/// were reconstructed from parity.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenReport {
    pub rejected: Vec<RejectedShard>,
    pub reconstructed: Vec<usize>,
}

/// The shards chosen to decode a chunk: the common header and, per shard
/// index, the body to use.
struct Selection<'a> {
    header: ShardHeader,
    bodies: Vec<Option<&'a [u8]>>,
    report: OpenReport,
}

/// A verified shard of the requested chunk, kept for the slow path.
struct Candidate<'a> {
    position: usize,
    header: ShardHeader,
    body: &'a [u8],
}

/// Attempts (each one AEAD pass over the chunk) the slow path makes before
/// giving up: any 2 liars among 20 shards, any 4 among 12, bounded so a
/// dishonest node cannot turn reads into a denial of service.
const MAX_SEARCH_ATTEMPTS: usize = 1024;

/// Every shard of chunk `id` that passes its checksum, and the rejects.
fn candidates<'a, S: AsRef<[u8]>>(
    id: &ChunkId,
    shards: &'a [S],
) -> (Vec<Candidate<'a>>, Vec<RejectedShard>) {
    let mut good = Vec::new();
    let mut rejected = Vec::new();
    for (position, s) in shards.iter().enumerate() {
        match check_shard(id, s.as_ref(), Check::Checksum) {
            Ok(v) => good.push(Candidate {
                position,
                header: v.header,
                body: v.body,
            }),
            Err(error) => rejected.push(RejectedShard { position, error }),
        }
    }
    (good, rejected)
}

/// Calls `f` with k-subsets of `0..n` in lexicographic order until it
/// returns true or `budget` subsets were tried.
fn for_each_subset(
    n: usize,
    k: usize,
    budget: &mut usize,
    mut f: impl FnMut(&[usize]) -> bool,
) -> bool {
    if k > n {
        return false;
    }
    let mut idx: Vec<usize> = (0..k).collect();
    loop {
        if *budget == 0 {
            return false;
        }
        *budget -= 1;
        if f(&idx) {
            return true;
        }
        // Advance to the next combination.
        let mut i = k;
        loop {
            if i == 0 {
                return false;
            }
            i -= 1;
            if idx[i] < n - k + i {
                break;
            }
            if i == 0 {
                return false;
            }
        }
        idx[i] += 1;
        for j in i + 1..k {
            idx[j] = idx[j - 1] + 1;
        }
    }
}

/// How `select` checks a shard before using it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Check {
    /// Hash the body: for rebuilds, which have no key to authenticate with.
    Checksum,
    /// Parse and length-check only, where something downstream covers
    /// every body. Opens: the AEAD (plus the zero-padding check)
    /// authenticates every byte of the data stripe, and so every body that
    /// went into it, whether used directly or through reconstruction; a
    /// failure sends the open down the slow path, which hashes every shard
    /// to name the bad ones. Rebuilds with known checksums: see
    /// [`Rebuilder::rebuild_expecting`]. This keeps a BLAKE3 pass off both.
    Parse,
}

/// Parse (and, with `Check::Checksum`, hash) one shard and check that it
/// belongs to chunk `id` and declares a chunk size a reader may allocate.
fn check_shard<'a>(id: &ChunkId, bytes: &'a [u8], check: Check) -> Result<VerifiedShard<'a>> {
    let v = match check {
        Check::Checksum => shard::verify(bytes)?,
        Check::Parse => shard::parse(bytes)?,
    };
    if v.header.chunk_id != *id {
        return Err(CodecError::CorruptShard {
            index: v.header.index as usize,
            reason: "belongs to another chunk",
        });
    }
    if v.header.plaintext_len > MAX_CHUNK_LEN as u64 {
        return Err(CodecError::BadHeader("plaintext length over the limit"));
    }
    Ok(v)
}

/// Check shards until k valid ones of chunk `id` are found, data shards
/// first (they make reconstruction unnecessary). Shards beyond the first k
/// valid ones are not examined. A shard that fails its check, belongs to
/// another chunk or disagrees with the others counts as missing.
fn select<'a, S: AsRef<[u8]>>(
    id: &ChunkId,
    shards: &'a [S],
    check: Check,
) -> Result<Selection<'a>> {
    let mut report = OpenReport::default();
    let mut order: Vec<(usize, usize)> = Vec::with_capacity(shards.len());
    for (position, s) in shards.iter().enumerate() {
        match ShardHeader::parse(s.as_ref()) {
            Ok(h) => order.push((h.index as usize, position)),
            Err(error) => report.rejected.push(RejectedShard { position, error }),
        }
    }
    order.sort_unstable();

    let mut reference: Option<ShardHeader> = None;
    let mut bodies: Vec<Option<&'a [u8]>> = Vec::new();
    let mut valid = 0usize;
    for (index, position) in order {
        if let Some(r) = &reference {
            if valid >= r.params.data() {
                break;
            }
            if bodies.get(index).is_some_and(|b| b.is_some()) {
                continue; // a duplicate of an index we already hold
            }
        }
        let v = match check_shard(id, shards[position].as_ref(), check) {
            Ok(v) => v,
            Err(error) => {
                report.rejected.push(RejectedShard { position, error });
                continue;
            }
        };
        match &reference {
            None => {
                bodies = vec![None; v.header.params.total()];
                reference = Some(v.header.clone());
            }
            Some(r) if !r.same_chunk(&v.header) => {
                report.rejected.push(RejectedShard {
                    position,
                    error: CodecError::MismatchedShards,
                });
                continue;
            }
            Some(_) => {}
        }
        bodies[index] = Some(v.body);
        valid += 1;
    }
    let Some(header) = reference else {
        return Err(CodecError::TooFewShards {
            valid: 0,
            needed: 1,
        });
    };
    let needed = header.params.data();
    if valid < needed {
        return Err(CodecError::TooFewShards { valid, needed });
    }
    Ok(Selection {
        header,
        bodies,
        report,
    })
}

/// Copy the selected bodies into `work` (k + m slots, or only k when every
/// data shard is present) and reconstruct what is missing.
fn assemble(
    coders: &mut CoderCache,
    sel: &mut Selection<'_>,
    work: &mut Vec<u8>,
    data_only: bool,
) -> Result<()> {
    let params = sel.header.params;
    let body_len = sel.header.body_len as usize;
    let (k, n) = (params.data(), params.total());
    let data_complete = sel.bodies[..k].iter().all(Option::is_some);
    if data_only && data_complete {
        // The common read: append the data bodies, so a fresh buffer is
        // never zero-filled first (a memset of every chunk showed in
        // profiles of large GETs).
        work.clear();
        work.reserve(k * body_len);
        for b in sel.bodies[..k].iter().flatten() {
            work.extend_from_slice(b);
        }
        return Ok(());
    }
    // Stale bytes from the last chunk may stay in the slots: present ones
    // are overwritten below, missing ones by the coder (its first pass
    // over an output multiplies rather than accumulates).
    work.resize(n * body_len, 0);
    for (i, b) in sel.bodies.iter().enumerate() {
        if let Some(b) = b {
            work[i * body_len..(i + 1) * body_len].copy_from_slice(b);
        }
    }
    let present: Vec<bool> = sel.bodies.iter().map(Option::is_some).collect();
    coders
        .get(params)?
        .reconstruct(work, body_len, &present, data_only)?;
    sel.report.reconstructed = present
        .iter()
        .enumerate()
        .filter(|(i, p)| !**p && (!data_only || *i < k))
        .map(|(i, _)| i)
        .collect();
    Ok(())
}

/// One coder per erasure shape seen; chunks of a bucket share one shape, so
/// this is almost always a single entry.
#[derive(Default)]
struct CoderCache {
    coders: Vec<Coder>,
}

impl CoderCache {
    fn get(&mut self, params: ErasureParams) -> Result<&Coder> {
        if let Some(i) = self.coders.iter().position(|c| c.params() == params) {
            return Ok(&self.coders[i]);
        }
        if self.coders.len() >= 8 {
            self.coders.remove(0);
        }
        self.coders.push(Coder::new(params)?);
        Ok(self.coders.last().expect("just pushed"))
    }
}

/// Run `f` with this thread's [`Opener`], made on first use. Callers on a
/// shared thread pool (the gateway's blocking pool opens every chunk it
/// reads) keep one decompressor, coder set and work buffer per thread
/// instead of allocating them for each chunk.
pub fn with_opener<T>(f: impl FnOnce(&mut Opener) -> Result<T>) -> Result<T> {
    thread_local! {
        static OPENER: std::cell::RefCell<Option<Opener>> = const { std::cell::RefCell::new(None) };
    }
    OPENER.with(|cell| {
        // A re-entrant call (never made today) gets a fresh opener rather
        // than a panic.
        let Ok(mut slot) = cell.try_borrow_mut() else {
            return f(&mut Opener::new()?);
        };
        if slot.is_none() {
            *slot = Some(Opener::new()?);
        }
        f(slot.as_mut().expect("filled above"))
    })
}

/// Opens chunks; keeps its decompressor, coders and work buffer between
/// calls. One per thread.
pub struct Opener {
    coders: CoderCache,
    compressor: Compressor,
    work: Vec<u8>,
}

impl Opener {
    pub fn new() -> Result<Self> {
        Ok(Self {
            coders: CoderCache::default(),
            // The level only matters for compression; 1 is always valid.
            compressor: Compressor::new(1)?,
            work: Vec::new(),
        })
    }

    /// Open chunk `id` of `domain` from any subset of its shards.
    pub fn open<S: AsRef<[u8]>>(
        &mut self,
        domain: &DomainKey,
        id: &ChunkId,
        shards: &[S],
    ) -> Result<(Vec<u8>, OpenReport)> {
        let mut out = Vec::new();
        let report = self.open_into(domain, id, shards, &mut out)?;
        Ok((out, report))
    }

    /// Like `open`, writing the plaintext into `out` (replacing its content)
    /// and reusing its allocation.
    pub fn open_into<S: AsRef<[u8]>>(
        &mut self,
        domain: &DomainKey,
        id: &ChunkId,
        shards: &[S],
        out: &mut Vec<u8>,
    ) -> Result<OpenReport> {
        // No BLAKE3 pass over the plaintext: the key is derived from the id
        // under the domain's secret and the id is in the associated data, so
        // a stripe that authenticates was sealed by a holder of the domain
        // key for this very id. Rehashing cost 6 % of a large GET's CPU and
        // could only catch a sealer handed the wrong id, which
        // `Sealer::seal_chunk` asserts against in debug builds (every test).
        self.open_with_key(id, &domain.chunk_key(id), shards, out)
    }

    /// Open under an explicit key (SSE-C). The chunk id is matched against the
    /// shard headers but cannot be recomputed without a domain.
    pub fn open_with_key<S: AsRef<[u8]>>(
        &mut self,
        id: &ChunkId,
        key: &ChunkKey,
        shards: &[S],
        out: &mut Vec<u8>,
    ) -> Result<OpenReport> {
        let mut sel = match select(id, shards, Check::Parse) {
            Ok(sel) => sel,
            // Without hashing, a damaged header can pass for the reference
            // shape and make the honest shards look mismatched: let the slow
            // path, which hashes everything, decide.
            Err(CodecError::TooFewShards { needed, .. }) => {
                return self.search(key, id, shards, needed, out)
            }
            Err(e) => return Err(e),
        };
        match self.decrypt(key, id, &mut sel, out) {
            Err(CodecError::AuthenticationFailed) => {
                self.search(key, id, shards, sel.header.params.data(), out)
            }
            Err(e) => Err(e),
            Ok(()) => Ok(sel.report),
        }
    }

    /// Reconstruct (if needed), decrypt and decompress one selection.
    fn decrypt(
        &mut self,
        key: &ChunkKey,
        id: &ChunkId,
        sel: &mut Selection<'_>,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        let h = sel.header.clone();
        let sealed_len = h.payload_len as usize + TAG_LEN;
        let stripe = h.params.data() * h.body_len as usize;
        let ad = aead::associated_data(id, h.plaintext_len, h.payload_len, h.flags);
        if h.compressed() {
            assemble(&mut self.coders, sel, &mut self.work, true)?;
            check_padding(&self.work[sealed_len..stripe])?;
            aead::open(key, h.nonce, &ad, &mut self.work[..sealed_len])?;
            self.compressor.decompress(
                &self.work[..h.payload_len as usize],
                h.plaintext_len as usize,
                out,
            )
        } else {
            // Raw payload: decrypt straight in the caller's buffer.
            assemble(&mut self.coders, sel, out, true)?;
            if let Err(e) = check_padding(&out[sealed_len..stripe])
                .and_then(|()| aead::open(key, h.nonce, &ad, &mut out[..sealed_len]))
            {
                out.clear();
                return Err(e);
            }
            out.truncate(h.plaintext_len as usize);
            Ok(())
        }
    }

    /// The slow path, taken only when the first k shards did not
    /// authenticate although each passed its checksum. The checksum is
    /// unkeyed, so a dishonest node can relabel or alter a shard and fix the
    /// checksum; only the AEAD notices. Try other k-subsets of the verified
    /// shards until one authenticates, then name the shards that disagree
    /// with the authenticated stripe.
    fn search<S: AsRef<[u8]>>(
        &mut self,
        key: &ChunkKey,
        id: &ChunkId,
        shards: &[S],
        needed: usize,
        out: &mut Vec<u8>,
    ) -> Result<OpenReport> {
        let (cands, rejected) = candidates(id, shards);
        let mut budget = MAX_SEARCH_ATTEMPTS;
        out.clear();
        // Shards that disagree on the chunk's shape are tried shape by shape,
        // the most common shape first.
        let mut shapes: Vec<&ShardHeader> = Vec::new();
        for c in &cands {
            if !shapes.iter().any(|h| h.same_chunk(&c.header)) {
                shapes.push(&c.header);
            }
        }
        shapes.sort_by_key(|h| {
            std::cmp::Reverse(cands.iter().filter(|c| c.header.same_chunk(h)).count())
        });
        for shape in shapes {
            let mut group: Vec<&Candidate<'_>> = cands
                .iter()
                .filter(|c| c.header.same_chunk(shape))
                .collect();
            group.sort_by_key(|c| c.header.index);
            let (k, n) = (shape.params.data(), shape.params.total());
            let mut winner: Option<Vec<usize>> = None;
            // Suspect the fewest shards first: exclude none, then each single
            // shard, then each pair... and decode from the first k distinct
            // indices left (data shards first). Liars are rare, so this
            // finds the honest set in few attempts.
            for excluded in 0..=group.len().saturating_sub(k) {
                let found = for_each_subset(group.len(), excluded, &mut budget, |out_set| {
                    let mut bodies = vec![None; n];
                    let mut used = Vec::with_capacity(k);
                    for (g, c) in group.iter().enumerate() {
                        let i = c.header.index as usize;
                        if used.len() == k || out_set.contains(&g) || bodies[i].is_some() {
                            continue;
                        }
                        bodies[i] = Some(c.body);
                        used.push(c.position);
                    }
                    if used.len() < k {
                        return false;
                    }
                    let mut sel = Selection {
                        header: shape.clone(),
                        bodies,
                        report: OpenReport::default(),
                    };
                    if self.decrypt(key, id, &mut sel, out).is_ok() {
                        winner = Some(used);
                        true
                    } else {
                        false
                    }
                });
                if found || budget == 0 {
                    break;
                }
            }
            let Some(good) = winner else { continue };
            let mut report = OpenReport {
                rejected,
                reconstructed: Vec::new(),
            };
            self.name_liars(shape, &cands, &good, &mut report)?;
            return Ok(report);
        }
        out.clear();
        // Fewer than k shards survive hashing: that, not the AEAD, is the
        // problem to report.
        if cands.is_empty() {
            return Err(CodecError::TooFewShards { valid: 0, needed });
        }
        if let Some((valid, needed)) = shapes_needed(&cands) {
            return Err(CodecError::TooFewShards { valid, needed });
        }
        Err(CodecError::AuthenticationFailed)
    }

    /// Re-encode the stripe from the authenticated subset and reject every
    /// other candidate whose header or body differs from it.
    fn name_liars(
        &mut self,
        shape: &ShardHeader,
        cands: &[Candidate<'_>],
        good: &[usize],
        report: &mut OpenReport,
    ) -> Result<()> {
        let n = shape.params.total();
        let body_len = shape.body_len as usize;
        let mut bodies = vec![None; n];
        for c in cands.iter().filter(|c| good.contains(&c.position)) {
            bodies[c.header.index as usize] = Some(c.body);
        }
        let mut sel = Selection {
            header: shape.clone(),
            bodies,
            report: OpenReport::default(),
        };
        assemble(&mut self.coders, &mut sel, &mut self.work, false)?;
        report.reconstructed = sel.report.reconstructed;
        for c in cands.iter().filter(|c| !good.contains(&c.position)) {
            let i = c.header.index as usize;
            let honest = c.header.same_chunk(shape)
                && self.work[i * body_len..(i + 1) * body_len] == *c.body;
            if !honest {
                report.rejected.push(RejectedShard {
                    position: c.position,
                    error: CodecError::CorruptShard {
                        index: i,
                        reason: "valid checksum but inconsistent with the authenticated stripe",
                    },
                });
            }
        }
        report.rejected.sort_by_key(|r| r.position);
        Ok(())
    }
}

/// When no shape of the chunk has k distinct verified shards: the best
/// (valid, needed) pair to report.
fn shapes_needed(cands: &[Candidate<'_>]) -> Option<(usize, usize)> {
    let mut best: Option<(usize, usize)> = None;
    for c in cands {
        let mut indices: Vec<u8> = cands
            .iter()
            .filter(|o| o.header.same_chunk(&c.header))
            .map(|o| o.header.index)
            .collect();
        indices.sort_unstable();
        indices.dedup();
        let needed = c.header.params.data();
        if indices.len() >= needed {
            return None;
        }
        if best.is_none_or(|(v, _)| indices.len() > v) {
            best = Some((indices.len(), needed));
        }
    }
    best
}

/// The stripe's padding after the tag is zero when sealed. The AEAD does
/// not cover it, so check it here: then every byte of every data shard is
/// authenticated, and a shard altered only in its padding cannot slip into
/// a rebuild.
fn check_padding(padding: &[u8]) -> Result<()> {
    if padding.iter().any(|&b| b != 0) {
        return Err(CodecError::AuthenticationFailed);
    }
    Ok(())
}

/// Rebuilds lost shards from surviving ones. Needs no key: it works on
/// ciphertext, which is what a storage node holds.
#[derive(Default)]
pub struct Rebuilder {
    coders: CoderCache,
    work: Vec<u8>,
}

impl Rebuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Produce shards `wanted` (indices) of chunk `id`, each as header + body,
    /// byte-identical to what the sealer wrote, from at least k valid shards.
    pub fn rebuild<S: AsRef<[u8]>>(
        &mut self,
        id: &ChunkId,
        shards: &[S],
        wanted: &[usize],
    ) -> Result<(Vec<Vec<u8>>, OpenReport)> {
        let mut out = Vec::with_capacity(wanted.len());
        let report = self.rebuild_with(id, shards, wanted, |_, header, body| {
            let mut shard = Vec::with_capacity(header.len() + body.len());
            shard.extend_from_slice(header);
            shard.extend_from_slice(body);
            out.push(shard);
            Ok::<(), CodecError>(())
        })?;
        Ok((out, report))
    }

    /// Like [`rebuild`](Self::rebuild), but hands each wanted shard to
    /// `each` as (index, header, body) straight from the work buffer, so a
    /// caller that writes it out copies it once, not twice.
    pub fn rebuild_with<S, E>(
        &mut self,
        id: &ChunkId,
        shards: &[S],
        wanted: &[usize],
        each: impl FnMut(usize, &[u8], &[u8]) -> std::result::Result<(), E>,
    ) -> std::result::Result<OpenReport, E>
    where
        S: AsRef<[u8]>,
        E: From<CodecError>,
    {
        self.rebuild_checked(id, shards, wanted, None, each)
    }

    /// Like [`rebuild_with`](Self::rebuild_with), for a caller that knows
    /// the checksum each wanted shard was written with (`wanted`: index and
    /// checksum): the inputs are parsed, not hashed, and each rebuilt shard
    /// must match its checksum before `each` sees it; a mismatch is
    /// [`CodecError::RebuiltMismatch`].
    ///
    /// Checking the outputs checks every input body: in an MDS code a shard
    /// rebuilt from k others is a combination of all k with non-zero
    /// coefficients (a zero one would make k-1 of them plus the rebuilt
    /// one a dependent set), and GF(2^8) has no zero divisors, so any byte
    /// changed in any input changes that byte of every rebuilt shard. That
    /// leaves one shard hashed per rebuilt shard instead of k + 1. The
    /// mismatch cannot say which input was bad: gather again, verifying
    /// each one.
    pub fn rebuild_expecting<S, E>(
        &mut self,
        id: &ChunkId,
        shards: &[S],
        wanted: &[(usize, [u8; 32])],
        each: impl FnMut(usize, &[u8], &[u8]) -> std::result::Result<(), E>,
    ) -> std::result::Result<OpenReport, E>
    where
        S: AsRef<[u8]>,
        E: From<CodecError>,
    {
        let (indexes, expected): (Vec<usize>, Vec<[u8; 32]>) = wanted.iter().copied().unzip();
        self.rebuild_checked(id, shards, &indexes, Some(&expected), each)
    }

    fn rebuild_checked<S, E>(
        &mut self,
        id: &ChunkId,
        shards: &[S],
        wanted: &[usize],
        expected: Option<&[[u8; 32]]>,
        mut each: impl FnMut(usize, &[u8], &[u8]) -> std::result::Result<(), E>,
    ) -> std::result::Result<OpenReport, E>
    where
        S: AsRef<[u8]>,
        E: From<CodecError>,
    {
        let check = if expected.is_some() {
            Check::Parse
        } else {
            Check::Checksum
        };
        let mut sel = select(id, shards, check)?;
        let n = sel.header.params.total();
        if let Some(&bad) = wanted.iter().find(|&&i| i >= n) {
            return Err(CodecError::CorruptShard {
                index: bad,
                reason: "requested index beyond k + m",
            }
            .into());
        }
        // Wanting only data shards, leave the parity the coder would also
        // recompute alone: half the coding work when one of two missing
        // shards is wanted.
        let data_only = wanted.iter().all(|&i| i < sel.header.params.data());
        assemble(&mut self.coders, &mut sel, &mut self.work, data_only)?;
        let body_len = sel.header.body_len as usize;
        for (j, &index) in wanted.iter().enumerate() {
            let body = &self.work[index * body_len..(index + 1) * body_len];
            let mut h = sel.header.clone();
            h.index = index as u8;
            let header = h.encode(body);
            if expected.is_some_and(|e| e[j] != h.checksum) {
                return Err(CodecError::RebuiltMismatch { index }.into());
            }
            each(index, &header, body)?;
        }
        Ok(sel.report)
    }
}
