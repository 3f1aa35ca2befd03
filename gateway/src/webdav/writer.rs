//! Files open for writing. A whole-file PUT streams straight into
//! `put_object` through a small channel (the body is never held); a write
//! at offsets (Content-Range PUT, SabreDAV PATCH, append) is staged in a
//! sparse temporary file and committed on flush as one new version made
//! of the staged ranges and, between them, the old version's bytes.

use super::meta::{fs_error, Meta};
use bytes::{Buf, Bytes};
use cluster::{ByteRange, GetOptions, ObjectInfo, ObjectStore, PutOptions, PutResult};
use dav_server::fs::{DavFile, DavMetaData, FsError, FsFuture, FsResult};
use futures_util::{FutureExt, StreamExt};
use std::io::SeekFrom;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Body pieces in flight between the request and the object layer.
const CHANNEL_DEPTH: usize = 4;
/// Read size when a staged file is committed.
const STAGE_READ: usize = 256 * 1024;

enum Msg {
    Data(Bytes),
    /// The body is complete; without it the stream ends in an error, so a
    /// dropped request never commits a truncated object.
    Done,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct BodyError(String);

type Upload = JoinHandle<cluster::Result<PutResult>>;

/// Start `put_object` on a stream fed by the returned sender.
fn spawn_put(
    store: ObjectStore,
    bucket: String,
    key: String,
    opts: PutOptions,
) -> (mpsc::Sender<Msg>, Upload) {
    let (tx, rx) = mpsc::channel::<Msg>(CHANNEL_DEPTH);
    let body = futures_util::stream::unfold(Some(rx), |rx| async move {
        let mut rx = rx?;
        match rx.recv().await {
            Some(Msg::Data(b)) => Some((Ok(b), Some(rx))),
            Some(Msg::Done) => None,
            None => Some((Err(BodyError("upload ended before its body".into())), None)),
        }
    })
    .boxed();
    let task = tokio::spawn(async move { store.put_object(&bucket, &key, body, opts).await });
    (tx, task)
}

async fn finish(task: Upload) -> FsResult<PutResult> {
    match task.await {
        Ok(r) => r.map_err(fs_error),
        Err(_) => Err(FsError::GeneralFailure),
    }
}

fn meta_of(r: &PutResult) -> Meta {
    Meta::file_parts(r.size, r.last_modified_ms, r.etag.clone())
}

/// A whole-file write streamed into one `put_object`.
pub(crate) struct StreamWriter {
    tx: Option<mpsc::Sender<Msg>>,
    task: Option<Upload>,
    written: u64,
    /// Content-Length of the PUT: anything else is not committed.
    expected: Option<u64>,
    done: Option<PutResult>,
}

impl std::fmt::Debug for StreamWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamWriter")
            .field("written", &self.written)
            .finish()
    }
}

impl StreamWriter {
    pub(crate) fn start(
        store: ObjectStore,
        bucket: String,
        key: String,
        opts: PutOptions,
        expected: Option<u64>,
    ) -> Self {
        let (tx, task) = spawn_put(store, bucket, key, opts);
        Self {
            tx: Some(tx),
            task: Some(task),
            written: 0,
            expected,
            done: None,
        }
    }

    async fn write(&mut self, b: Bytes) -> FsResult<()> {
        if b.is_empty() {
            return Ok(());
        }
        let Some(tx) = &self.tx else {
            return Err(FsError::GeneralFailure);
        };
        self.written += b.len() as u64;
        if tx.send(Msg::Data(b)).await.is_err() {
            // The upload stopped early: its error is the answer.
            self.tx = None;
            return match self.task.take() {
                Some(t) => finish(t).await.and(Err(FsError::GeneralFailure)),
                None => Err(FsError::GeneralFailure),
            };
        }
        Ok(())
    }

    async fn commit(&mut self) -> FsResult<()> {
        if self.done.is_some() {
            return Ok(());
        }
        let (Some(tx), Some(task)) = (self.tx.take(), self.task.take()) else {
            return Err(FsError::GeneralFailure);
        };
        if self.expected.is_some_and(|n| n != self.written) {
            // Dropping the sender without Done fails the upload.
            drop(tx);
            let _ = finish(task).await;
            return Err(FsError::GeneralFailure);
        }
        // A closed channel here means the upload already failed; its
        // result says why.
        let _ = tx.send(Msg::Done).await;
        drop(tx);
        self.done = Some(finish(task).await?);
        Ok(())
    }
}

impl DavFile for StreamWriter {
    fn metadata(&mut self) -> FsFuture<'_, Box<dyn DavMetaData>> {
        async move {
            match &self.done {
                Some(r) => {
                    let m: Box<dyn DavMetaData> = Box::new(meta_of(r));
                    Ok(m)
                }
                None => Err(FsError::GeneralFailure),
            }
        }
        .boxed()
    }

    fn write_buf(&mut self, mut buf: Box<dyn Buf + Send>) -> FsFuture<'_, ()> {
        let b = buf.copy_to_bytes(buf.remaining());
        self.write(b).boxed()
    }

    fn write_bytes(&mut self, buf: Bytes) -> FsFuture<'_, ()> {
        self.write(buf).boxed()
    }

    fn read_bytes(&mut self, _count: usize) -> FsFuture<'_, Bytes> {
        async move { Err(FsError::Forbidden) }.boxed()
    }

    fn seek(&mut self, pos: SeekFrom) -> FsFuture<'_, u64> {
        // A streamed upload only goes forward; staying put is fine.
        let here = self.written;
        async move {
            match pos {
                SeekFrom::Start(n) if n == here => Ok(here),
                SeekFrom::Current(0) => Ok(here),
                _ => Err(FsError::NotImplemented),
            }
        }
        .boxed()
    }

    fn flush(&mut self) -> FsFuture<'_, ()> {
        self.commit().boxed()
    }
}

/// Written byte ranges, `[start, end)`, sorted and merged.
#[derive(Debug, Default)]
struct Ranges(Vec<(u64, u64)>);

impl Ranges {
    fn add(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        let (mut s, mut e) = (start, end);
        let mut out = Vec::with_capacity(self.0.len() + 1);
        for &(a, b) in &self.0 {
            if b < s || a > e {
                out.push((a, b));
            } else {
                s = s.min(a);
                e = e.max(b);
            }
        }
        out.push((s, e));
        out.sort_unstable();
        self.0 = out;
    }

    /// `[0, size)` cut into (start, end, staged) pieces.
    fn pieces(&self, size: u64) -> Vec<(u64, u64, bool)> {
        let mut out = Vec::new();
        let mut at = 0;
        for &(a, b) in &self.0 {
            let (a, b) = (a.min(size), b.min(size));
            if a > at {
                out.push((at, a, false));
            }
            if b > a {
                out.push((a, b, true));
            }
            at = at.max(b);
        }
        if at < size {
            out.push((at, size, false));
        }
        out
    }
}

/// Writes at offsets, staged until flush.
pub(crate) struct StagedWriter {
    store: ObjectStore,
    bucket: String,
    key: String,
    opts: PutOptions,
    base: Option<ObjectInfo>,
    file: tokio::fs::File,
    pos: u64,
    size: u64,
    staged: Ranges,
    done: Option<PutResult>,
}

impl std::fmt::Debug for StagedWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StagedWriter")
            .field("key", &self.key)
            .field("size", &self.size)
            .finish()
    }
}

impl StagedWriter {
    pub(crate) fn new(
        store: ObjectStore,
        bucket: String,
        key: String,
        opts: PutOptions,
        base: Option<ObjectInfo>,
    ) -> std::io::Result<Self> {
        // Unlinked at creation: nothing is left behind by a crash.
        let file = tokio::fs::File::from_std(tempfile::tempfile()?);
        let size = base.as_ref().map_or(0, |b| b.size);
        Ok(Self {
            store,
            bucket,
            key,
            opts,
            base,
            file,
            pos: 0,
            size,
            staged: Ranges::default(),
            done: None,
        })
    }

    async fn write(&mut self, b: Bytes) -> FsResult<()> {
        if self.done.is_some() {
            return Err(FsError::GeneralFailure);
        }
        let io = |e: std::io::Error| {
            tracing::warn!(error = %e, "WebDAV staging file");
            FsError::GeneralFailure
        };
        self.file
            .seek(SeekFrom::Start(self.pos))
            .await
            .map_err(io)?;
        self.file.write_all(&b).await.map_err(io)?;
        let end = self.pos + b.len() as u64;
        self.staged.add(self.pos, end);
        self.pos = end;
        self.size = self.size.max(end);
        Ok(())
    }

    async fn commit(&mut self) -> FsResult<()> {
        if self.done.is_some() {
            return Ok(());
        }
        self.file
            .flush()
            .await
            .map_err(|_| FsError::GeneralFailure)?;
        let staged = self
            .file
            .try_clone()
            .await
            .map_err(|_| FsError::GeneralFailure)?;
        let (tx, task) = spawn_put(
            self.store.clone(),
            self.bucket.clone(),
            self.key.clone(),
            self.opts.clone(),
        );
        let fed = feed(
            tx,
            staged,
            self.staged.pieces(self.size),
            self.store.clone(),
            self.bucket.clone(),
            self.base.clone(),
        )
        .await;
        // The upload's own error, if any, says more than the feed's.
        let result = finish(task).await?;
        fed?;
        self.done = Some(result);
        Ok(())
    }
}

/// Send the new version's bytes in order: staged pieces from the file,
/// the rest from the old version (or zeros past its end, which is what a
/// sparse file reads as there).
async fn feed(
    tx: mpsc::Sender<Msg>,
    mut file: tokio::fs::File,
    pieces: Vec<(u64, u64, bool)>,
    store: ObjectStore,
    bucket: String,
    base: Option<ObjectInfo>,
) -> FsResult<()> {
    let base_size = base.as_ref().map_or(0, |b| b.size);
    let closed = || FsError::GeneralFailure;
    for (start, end, staged) in pieces {
        let old_end = if staged { start } else { end.min(base_size) };
        if let (Some(b), true) = (&base, old_end > start) {
            let r = store
                .get_object(
                    &bucket,
                    &b.key,
                    GetOptions {
                        version: Some(b.version_id.clone()),
                        range: Some(ByteRange::FromTo(start, old_end - 1)),
                        ..GetOptions::default()
                    },
                )
                .await
                .map_err(fs_error)?;
            let mut body = r.body;
            while let Some(piece) = body.next().await {
                let piece = piece.map_err(|_| closed())?;
                tx.send(Msg::Data(piece)).await.map_err(|_| closed())?;
            }
        }
        let from = start.max(old_end);
        if from < end {
            file.seek(SeekFrom::Start(from))
                .await
                .map_err(|_| closed())?;
            let mut left = end - from;
            while left > 0 {
                let n = left.min(STAGE_READ as u64) as usize;
                let mut buf = vec![0u8; n];
                file.read_exact(&mut buf).await.map_err(|_| closed())?;
                tx.send(Msg::Data(Bytes::from(buf)))
                    .await
                    .map_err(|_| closed())?;
                left -= n as u64;
            }
        }
    }
    tx.send(Msg::Done).await.map_err(|_| closed())?;
    Ok(())
}

impl DavFile for StagedWriter {
    fn metadata(&mut self) -> FsFuture<'_, Box<dyn DavMetaData>> {
        async move {
            match &self.done {
                Some(r) => {
                    let m: Box<dyn DavMetaData> = Box::new(meta_of(r));
                    Ok(m)
                }
                None => Err(FsError::GeneralFailure),
            }
        }
        .boxed()
    }

    fn write_buf(&mut self, mut buf: Box<dyn Buf + Send>) -> FsFuture<'_, ()> {
        let b = buf.copy_to_bytes(buf.remaining());
        self.write(b).boxed()
    }

    fn write_bytes(&mut self, buf: Bytes) -> FsFuture<'_, ()> {
        self.write(buf).boxed()
    }

    fn read_bytes(&mut self, _count: usize) -> FsFuture<'_, Bytes> {
        async move { Err(FsError::Forbidden) }.boxed()
    }

    fn seek(&mut self, pos: SeekFrom) -> FsFuture<'_, u64> {
        async move {
            let target = match pos {
                SeekFrom::Start(n) => n as i128,
                SeekFrom::End(d) => self.size as i128 + d as i128,
                SeekFrom::Current(d) => self.pos as i128 + d as i128,
            };
            self.pos = u64::try_from(target).map_err(|_| FsError::GeneralFailure)?;
            Ok(self.pos)
        }
        .boxed()
    }

    fn flush(&mut self) -> FsFuture<'_, ()> {
        self.commit().boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_merge_and_cut() {
        let mut r = Ranges::default();
        r.add(10, 20);
        r.add(30, 40);
        r.add(15, 32);
        assert_eq!(r.0, vec![(10, 40)]);
        r.add(40, 45);
        assert_eq!(r.0, vec![(10, 45)]);
        r.add(0, 2);
        assert_eq!(
            r.pieces(50),
            vec![
                (0, 2, true),
                (2, 10, false),
                (10, 45, true),
                (45, 50, false)
            ]
        );
        assert_eq!(r.pieces(5), vec![(0, 2, true), (2, 5, false)]);
    }
}
