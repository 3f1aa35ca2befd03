//! The chunks of a completed multipart object: those content-defined
//! chunking of the whole byte stream gives, so versions dedup whatever
//! part size a client chose.
//!
//! Each part is chunked on its own as it arrives, so its first chunk
//! starts and its last chunk ends at a part edge, where chunking the whole
//! stream would not cut. Inside a part the chunker soon falls back into
//! step with the whole stream's: its cuts depend only on the bytes since
//! the last cut, so once the two cut at the same place they cut alike up
//! to the part's end. Completion therefore re-chunks only the bytes around
//! each edge: from the start of a part's last chunk (a cut the whole
//! stream makes too) through the next part until a cut lands on one of
//! that part's own cuts. That is about two chunks per edge, read back,
//! re-chunked and stored (chunks already stored, from an earlier version,
//! are only referenced). The part's other chunks are taken as they are.
//!
//! Edges are stitched in parallel, each over the one part after it and
//! each assuming the stream is in step at its start, as it is when the
//! edge before fell into step within its part. When one did not (a part
//! too small to hold a cut), its stitch carries on, part by part, in
//! order, and the guesses it overtakes are dropped (their references
//! released). Each stitch holds under two maximum-size chunks of
//! plaintext, so memory is bounded whatever the part count.
//!
//! Stitching runs after completion has answered, in the background (one
//! object at a time per gateway), so completion takes the same short time
//! whatever the part count: re-reading and re-storing two chunks per edge
//! costs about what uploading them did, minutes for 10,000 parts. The
//! object is committed with its parts' chunks; the stitch then rewrites the
//! manifest with the stream's chunks if it still names the parts' chunks.
//! The references to chunks the manifest no longer names are left to the
//! orphan sweep ([`crate::gc`]), which removes a version's references to
//! chunks it does not name: a rewrite racing the stitch (a tag update that
//! read the manifest before) may put the parts' chunks back, and then it is
//! the stitched ones that go. A gateway that stops mid-stitch leaves the
//! object as its parts cut it: correct, only deduplicated less.

use crate::chunk_stream::{self, PendingRefs, ReadKey, WriteCtx};
use crate::error::{Error, Result};
use crate::layout;
use crate::store::{BucketHandle, ObjectStore};
use crate::version_id::VersionId;
use codec::{Chunker, ChunkerConfig};
use futures_util::{StreamExt, TryStreamExt};
use metadata::model::{ChunkRef, ObjectVersion, Referrer};
use std::collections::HashSet;

/// Edges stitched at once.
const EDGES_AT_ONCE: usize = 4;

/// A stitch in progress: the chunker, fed from a cut of the stream on,
/// and the chunks it decided so far, stored and referenced.
struct Stitch {
    chunker: Chunker,
    /// Offset in the object of the chunker's first byte.
    start: u64,
    stored: PendingRefs,
}

/// The part number of the referrer a stitch stores its chunks under until
/// the manifest names them. No upload has it (parts are 1 to 10,000), so
/// these references never share a slot with the version's own (one per
/// chunk and referrer) and releasing them cannot take one the manifest
/// needs; the orphan sweep removes whatever a stopped stitch leaves.
pub(crate) const STITCH_PART: u32 = u32::MAX;

impl ObjectStore {
    /// Stitch the part edges of version `vid` of `key`, a completed
    /// multipart object, in the background.
    pub(crate) fn stitch_later(&self, b: BucketHandle, key: String, vid: VersionId) {
        let store = self.clone();
        let queued = self.inner.stitching.enqueue();
        tokio::spawn(async move {
            if let Some(_turn) = queued.turn().await {
                if let Err(e) = store.stitch_version(&b, &key, vid).await {
                    tracing::warn!(
                        error = %e,
                        "re-cutting a multipart object's part edges failed; it keeps its parts' chunks"
                    );
                }
            }
        });
    }

    /// Wait until every multipart object this gateway completed has been
    /// stitched (for tests and benchmarks that count stored bytes).
    pub async fn stitching_settled(&self) {
        self.inner.stitching.settled().await;
    }

    /// Re-cut the part edges of one version and point its manifest at the
    /// chunks the whole stream gives. Returns whether the manifest changed.
    async fn stitch_version(&self, b: &BucketHandle, key: &str, vid: VersionId) -> Result<bool> {
        let table_key = layout::version_key(b.id(), &b.key_hash(key), &vid);
        let versions = self.bucket_table::<ObjectVersion>(b);
        let Some(v) = versions.get(&table_key).await? else {
            return Ok(false);
        };
        if v.purged || v.delete_marker || !v.sse_customer_key_md5.is_empty() {
            return Ok(false);
        }
        let Some(placed) = parts_of(&v) else {
            return Ok(false);
        };
        let Some(erasure) = v.chunks.first().and_then(|c| c.erasure) else {
            return Ok(false);
        };
        let referrer = crate::versions::referrer_of(b, &v);
        let ctx = WriteCtx {
            io: self.chunk_io(),
            sealing: b.sealing(None),
            erasure,
            referrer: Referrer {
                part_number: STITCH_PART,
                ..referrer.clone()
            },
            algorithms: Vec::new(),
            inline_threshold: 0,
        };
        let cdc = self.inner.cfg.chunker.with_seed(b.domain.cdc_seed());
        let read = ReadKey::Domain(b.domain.clone());
        // On an error, `stitched` is dropped and its references released.
        let (whole, stitched) = stitch(&ctx, &read, cdc, placed).await?;
        if same_chunks(&whole, &v.chunks) {
            stitched.release().await;
            return Ok(false);
        }
        // Read again just before the rewrite, so a change made meanwhile
        // (deleted, retagged) is not undone.
        let Some(mut now) = versions.get(&table_key).await? else {
            stitched.release().await;
            return Ok(false);
        };
        if now.purged || !same_chunks(&now.chunks, &v.chunks) {
            stitched.release().await;
            return Ok(false);
        }
        // The version's references to the stitched chunks it does not
        // name yet (one per chunk and referrer: those it names have one).
        let mut named: HashSet<&[u8]> = v.chunks.iter().map(|c| c.id.as_slice()).collect();
        let new: Vec<ChunkRef> = stitched
            .chunks()
            .iter()
            .filter(|c| named.insert(c.id.as_slice()))
            .cloned()
            .collect();
        let refs = chunk_stream::add_refs(&self.chunk_io(), &referrer, &new).await?;
        now.chunks = whole;
        now.revision = self.revision();
        let written = self.write_version(b, &now).await;
        refs.settle(written).await?;
        stitched.release().await;
        tracing::debug!(
            parts = v.part_sizes.len(),
            chunks = now.chunks.len(),
            "multipart object re-cut at its part edges"
        );
        Ok(true)
    }
}

fn same_chunks(a: &[ChunkRef], b: &[ChunkRef]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.id == y.id && x.offset == y.offset)
}

/// A version's chunks by the part they fall in (offsets from the object's
/// start), or `None` when a chunk crosses a part edge: already stitched.
fn parts_of(v: &ObjectVersion) -> Option<Vec<Vec<ChunkRef>>> {
    if v.part_sizes.len() < 2 {
        return None;
    }
    let mut chunks = v.chunks.iter().peekable();
    let mut start = 0u64;
    let mut placed = Vec::with_capacity(v.part_sizes.len());
    for size in &v.part_sizes {
        let end = start + size;
        let mut part = Vec::new();
        while let Some(c) = chunks.next_if(|c| c.offset < end) {
            if c.offset + c.len > end {
                return None;
            }
            part.push(c.clone());
        }
        placed.push(part);
        start = end;
    }
    chunks.peek().is_none().then_some(placed)
}

/// Chunk the whole object's stream would give, from its parts' chunks (in
/// order, offsets from the object's start), storing the chunks stitched
/// across edges under `ctx.referrer`. Returns the object's chunks and the
/// references added for the stitched ones.
async fn stitch(
    ctx: &WriteCtx,
    key: &ReadKey,
    cdc: ChunkerConfig,
    placed: Vec<Vec<ChunkRef>>,
) -> Result<(Vec<ChunkRef>, PendingRefs)> {
    // An empty part (only the last may be) adds no bytes and no edge.
    let placed: Vec<Vec<ChunkRef>> = placed.into_iter().filter(|p| !p.is_empty()).collect();
    let mut kept = PendingRefs::new(&ctx.io, ctx.referrer.clone(), Vec::new());
    let mut out: Vec<ChunkRef> = Vec::new();
    // Guesses overtaken by a stitch that carried on, released at the end.
    let mut dropped: Vec<PendingRefs> = Vec::new();
    // Where chunks taken as they are resume: (part, chunk).
    let mut at = (0usize, 0usize);
    let mut carried: Option<Stitch> = None;
    // Edge e sits before part e (1..len) and starts at part e-1's last chunk.
    let edges = futures_util::stream::iter(1..placed.len())
        .map(|e| stitch_edge(ctx, key, cdc, &placed, e))
        .buffered(EDGES_AT_ONCE);
    futures_util::pin_mut!(edges);
    let mut e = 0;
    while let Some((guess, resumed)) = edges.try_next().await? {
        e += 1;
        if let Some(mut st) = carried.take() {
            // Still out of step at this edge: the guess was wrong.
            dropped.push(guess.stored);
            match advance(ctx, key, &placed, e, &mut st).await? {
                Some(j) => {
                    finish_stitch(&mut out, &mut kept, st);
                    at = (e, j);
                }
                None => carried = Some(st),
            }
            continue;
        }
        let last = placed[e - 1].len() - 1;
        out.extend_from_slice(&placed[e - 1][at.1..last]);
        match resumed {
            Some(j) => {
                finish_stitch(&mut out, &mut kept, guess);
                at = (e, j);
            }
            None => carried = Some(guess),
        }
    }
    match carried {
        Some(mut st) => {
            // Out of step to the end: the last chunk ends with the object.
            st.chunker.finish();
            while store_decided(ctx, &mut st).await?.is_some() {}
            finish_stitch(&mut out, &mut kept, st);
        }
        None => {
            if let Some(p) = placed.get(at.0) {
                out.extend_from_slice(&p[at.1..]);
            }
        }
    }
    // A reference is one per chunk and referrer: a dropped guess that cut
    // a chunk the object keeps (once in step, stitches cut alike) must not
    // take that reference away with it.
    let named: HashSet<&[u8]> = out.iter().map(|c| c.id.as_slice()).collect();
    for mut d in dropped {
        d.keep_where(|c| named.contains(c.id.as_slice()));
        d.release().await;
    }
    Ok((out, kept))
}

fn finish_stitch(out: &mut Vec<ChunkRef>, kept: &mut PendingRefs, st: Stitch) {
    out.extend_from_slice(st.stored.chunks());
    kept.absorb(st.stored);
}

/// Stitch edge `edge` over the part after it, assuming the stream cuts at
/// the start of the part before's last chunk. Returns the stitch and, if
/// it fell into step, the index of the first chunk of part `edge` that is
/// the stream's as it is.
async fn stitch_edge(
    ctx: &WriteCtx,
    key: &ReadKey,
    cdc: ChunkerConfig,
    placed: &[Vec<ChunkRef>],
    edge: usize,
) -> Result<(Stitch, Option<usize>)> {
    let tail = placed[edge - 1]
        .last()
        .ok_or_else(|| Error::Internal("part without chunks".into()))?;
    let mut st = Stitch {
        chunker: Chunker::new(cdc).map_err(|e| Error::Internal(format!("chunker: {e}")))?,
        start: tail.offset,
        stored: PendingRefs::new(&ctx.io, ctx.referrer.clone(), Vec::new()),
    };
    // On an error the stitch is dropped, and with it (in the background)
    // the references it added.
    st.chunker
        .push(&chunk_stream::fetch_chunk(&ctx.io, key, tail).await?);
    let resumed = advance(ctx, key, placed, edge, &mut st).await?;
    Ok((st, resumed))
}

/// Feed part `pi` to the stitch, storing the chunks it decides, until one
/// ends where the part cut on its own. Returns the index of the part's
/// first chunk after that cut, or `None` if the part ended first.
async fn advance(
    ctx: &WriteCtx,
    key: &ReadKey,
    placed: &[Vec<ChunkRef>],
    pi: usize,
    st: &mut Stitch,
) -> Result<Option<usize>> {
    let part = &placed[pi];
    // A part's last chunk ends at the part's edge, not at a cut of the
    // stream's, unless that edge is the object's end.
    let own_cuts = if pi + 1 == placed.len() {
        &part[..]
    } else {
        &part[..part.len() - 1]
    };
    for c in part {
        st.chunker
            .push(&chunk_stream::fetch_chunk(&ctx.io, key, c).await?);
        while let Some(end) = store_decided(ctx, st).await? {
            if let Some(j) = own_cuts.iter().position(|o| o.offset + o.len == end) {
                return Ok(Some(j + 1));
            }
        }
    }
    Ok(None)
}

/// Store the next chunk the stitch has decided, if any; returns its end in
/// the object.
async fn store_decided(ctx: &WriteCtx, st: &mut Stitch) -> Result<Option<u64>> {
    let Some(c) = st.chunker.next_decided_chunk() else {
        return Ok(None);
    };
    let offset = st.start + c.offset;
    let end = offset + c.data.len() as u64;
    let plain = bytes::Bytes::copy_from_slice(c.data);
    let r = chunk_stream::store_chunk(ctx.clone(), offset, plain).await?;
    st.stored.push(r);
    Ok(Some(end))
}
