//! Request bodies, and object contents that cost almost nothing to make.
//!
//! Every object must be distinct, or a deduplicating store (gridstore
//! stores a chunk it has already seen as one more reference) would be
//! measured storing references. Generating fresh random bytes per object
//! would cost about as much CPU as the request itself, so each worker makes
//! one random block once and every object streams slices of it, each
//! segment led by a tag naming the run, the object and the segment. No two
//! segments of any two objects are equal, and a segment is shorter than
//! any content-defined chunk, so no chunk of one object matches another.
//! The slices are views of the worker's block: a request holds no copy.

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Bytes between tags; well under the smallest chunk gridstore's CDC
/// cuts, and large enough that the tags are noise beside the data.
const SEGMENT: u64 = 64 << 10;
/// The largest random block a worker keeps: objects larger than this
/// reuse it, segment by segment, behind fresh tags.
pub(crate) const MAX_BLOCK: u64 = 1 << 20;
const TAG_LEN: usize = 24;

/// What a request carries.
pub(crate) enum ReqBody {
    Empty,
    /// A small body built in one piece (a bucket configuration, a batch
    /// delete); taken when sent.
    Full(Option<Bytes>),
    Object(ObjectBody),
}

impl ReqBody {
    pub(crate) fn full(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        if bytes.is_empty() {
            Self::Empty
        } else {
            Self::Full(Some(bytes))
        }
    }
}

/// An object's contents, streamed from a worker's random block.
pub(crate) struct ObjectBody {
    block: Bytes,
    run: u64,
    object: u64,
    /// Offset of the body's first byte in the object (a part's start).
    from: u64,
    /// Offset just past the body's last byte.
    len: u64,
    /// Bytes handed out so far (including `pending`).
    sent: u64,
    /// The block slice to send after the tag just sent.
    pending: Option<Bytes>,
}

impl ObjectBody {
    /// `block` must hold at least `min(len, MAX_BLOCK)` bytes; `run` and
    /// `object` together must be unique to this object.
    pub(crate) fn new(block: Bytes, run: u64, object: u64, len: u64) -> Self {
        debug_assert!(block.len() as u64 >= len.min(MAX_BLOCK));
        Self {
            block,
            run,
            object,
            from: 0,
            len,
            sent: 0,
            pending: None,
        }
    }

    pub(crate) fn len(&self) -> u64 {
        self.len - self.from
    }

    /// The same object as bodies of `part_size` bytes each (the last may
    /// be shorter), for a multipart upload. `part_size` is rounded up to a
    /// whole number of segments, so each part's bytes are those the whole
    /// object would carry at its offsets.
    pub(crate) fn parts(self, part_size: u64) -> Vec<ObjectBody> {
        let size = part_size.div_ceil(SEGMENT).max(1) * SEGMENT;
        (self.from..self.len)
            .step_by(size as usize)
            .map(|start| ObjectBody {
                block: self.block.clone(),
                run: self.run,
                object: self.object,
                from: start,
                len: (start + size).min(self.len),
                sent: start,
                pending: None,
            })
            .collect()
    }

    fn next_frame(&mut self) -> Option<Bytes> {
        if let Some(slice) = self.pending.take() {
            return Some(slice);
        }
        if self.sent >= self.len {
            return None;
        }
        let index = self.sent / SEGMENT;
        let segment = SEGMENT.min(self.len - self.sent);
        let mut tag = [0u8; TAG_LEN];
        tag[..8].copy_from_slice(&self.run.to_le_bytes());
        tag[8..16].copy_from_slice(&self.object.to_le_bytes());
        tag[16..].copy_from_slice(&index.to_le_bytes());
        let tag_len = (TAG_LEN as u64).min(segment);
        let rest = segment - tag_len;
        if rest > 0 {
            let block = self.block.len() as u64;
            // Shift by segment so consecutive segments differ past the tag
            // too, wrapping to the start where the slice would overrun.
            let mut start = (index * SEGMENT) % block;
            if start + rest > block {
                start = 0;
            }
            // Both bounds are within the block, which lives in memory.
            self.pending = Some(self.block.slice(start as usize..(start + rest) as usize));
        }
        self.sent += segment;
        Some(Bytes::copy_from_slice(&tag[..tag_len as usize]))
    }
}

impl Body for ReqBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let frame = match self.get_mut() {
            Self::Empty => None,
            Self::Full(bytes) => bytes.take(),
            Self::Object(object) => object.next_frame(),
        };
        Poll::Ready(frame.map(|data| Ok(Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Empty => true,
            Self::Full(bytes) => bytes.is_none(),
            Self::Object(object) => object.pending.is_none() && object.sent >= object.len,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Empty => SizeHint::with_exact(0),
            Self::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Self::Object(object) => {
                let pending = object.pending.as_ref().map_or(0, |p| p.len() as u64);
                SizeHint::with_exact(object.len - object.sent + pending)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::collections::HashSet;

    fn collect(body: ObjectBody) -> Vec<u8> {
        let mut body = ReqBody::Object(body);
        let expected = body.size_hint().exact();
        let mut out = Vec::new();
        let mut cx = Context::from_waker(std::task::Waker::noop());
        while let Poll::Ready(Some(Ok(frame))) = Pin::new(&mut body).poll_frame(&mut cx) {
            if let Ok(data) = frame.into_data() {
                out.extend_from_slice(&data);
            }
        }
        assert!(body.is_end_stream());
        assert_eq!(expected, Some(out.len() as u64));
        out
    }

    fn block(len: u64) -> Bytes {
        (0..len.min(MAX_BLOCK)).map(|i| (i * 7 + 3) as u8).collect()
    }

    #[test]
    fn parts_carry_the_whole_objects_bytes() {
        let len = 5 * SEGMENT + 1000;
        let whole = collect(ObjectBody::new(block(len), 1, 2, len));
        for part_size in [1, SEGMENT, 2 * SEGMENT, 3 * SEGMENT - 5, len, 10 * len] {
            let parts = ObjectBody::new(block(len), 1, 2, len).parts(part_size);
            let lens: Vec<u64> = parts.iter().map(ObjectBody::len).collect();
            let joined: Vec<u8> = parts.into_iter().flat_map(collect).collect();
            assert_eq!(joined, whole, "part size {part_size}");
            assert_eq!(lens.iter().sum::<u64>(), len);
        }
    }

    #[test]
    fn lengths_are_exact() {
        for len in [
            0,
            1,
            23,
            24,
            25,
            4096,
            SEGMENT,
            SEGMENT + 1,
            3 * MAX_BLOCK + 17,
        ] {
            let out = collect(ObjectBody::new(block(len), 1, 2, len));
            assert_eq!(out.len() as u64, len);
        }
    }

    #[test]
    fn objects_and_segments_differ() {
        let len = 2 * MAX_BLOCK;
        let b = block(len);
        let one = collect(ObjectBody::new(b.clone(), 9, 1, len));
        let two = collect(ObjectBody::new(b, 9, 2, len));
        assert_ne!(one, two);
        let mut seen = HashSet::new();
        for segment in one
            .chunks(SEGMENT as usize)
            .chain(two.chunks(SEGMENT as usize))
        {
            assert!(seen.insert(segment.to_vec()), "a segment repeats");
        }
    }

    #[tokio::test]
    async fn body_ext_reads_it_all() {
        let len = SEGMENT * 3 + 5;
        let body = ReqBody::Object(ObjectBody::new(block(len), 3, 4, len));
        let Ok(collected) = body.collect().await;
        assert_eq!(collected.to_bytes().len() as u64, len);
    }
}
