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
//! plaintext, so completion's memory is bounded whatever the part count.

use crate::chunk_stream::{self, PendingRefs, ReadKey, WriteCtx};
use crate::error::{Error, Result};
use codec::{Chunker, ChunkerConfig};
use futures_util::{StreamExt, TryStreamExt};
use metadata::model::{ChunkRef, Part};
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

/// Chunk the whole object's stream would give, from `parts`' chunks (in
/// order, offsets relative to each part), storing the chunks stitched
/// across edges under `ctx.referrer`. Returns the object's chunks (offsets
/// from its start) and the references added for the stitched ones.
pub(crate) async fn stitch(
    ctx: &WriteCtx,
    key: &ReadKey,
    cdc: ChunkerConfig,
    parts: &[&Part],
) -> Result<(Vec<ChunkRef>, PendingRefs)> {
    let mut base = 0u64;
    let placed: Vec<Vec<ChunkRef>> = parts
        .iter()
        .map(|p| {
            let chunks = p
                .chunks
                .iter()
                .map(|c| {
                    let mut c = c.clone();
                    c.offset += base;
                    c
                })
                .collect();
            base += p.size;
            chunks
        })
        // An empty part (only the last may be) adds no bytes and no edge.
        .filter(|chunks: &Vec<ChunkRef>| !chunks.is_empty())
        .collect();
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
