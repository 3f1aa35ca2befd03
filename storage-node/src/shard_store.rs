//! Content-addressed shard store on the local filesystem.
//!
//! Layout: `ROOT/shards/ab/cd/<64 hex of chunk id>.<index>`, where `ab` and
//! `cd` are the id's first two bytes (65 536 directories spread a few
//! million shards thinly). Paths are built only from a parsed 32-byte id and
//! a small index, never from caller text, so no request can name a file
//! outside the store.
//!
//! A write goes to `ROOT/tmp/`, is verified (header, length, BLAKE3) as it
//! streams, fsynced, renamed into place, and the directory fsynced: after a
//! crash a shard is either whole and visible or absent. Temp files left by
//! a crash are removed when the store opens.

use crate::file_io::IoBackend;
use codec::shard::StreamVerifier;
use metadata::model::CHUNK_ID_LEN;
pub use metadata::ShardKey;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("insufficient storage: {needed} bytes needed, {available} available")]
    InsufficientStorage { needed: u64, available: u64 },
    #[error("shard not found")]
    NotFound,
    #[error(transparent)]
    InvalidKey(#[from] metadata::InvalidShardKey),
    #[error("shard rejected: {0}")]
    Corrupt(String),
    #[error("range {offset}+{len} outside a shard of {shard_len} bytes")]
    InvalidRange {
        offset: u64,
        len: u64,
        shard_len: u64,
    },
    #[error("shard checksum differs from the one the put declared")]
    NotVouched,
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
}

#[derive(Debug, Clone)]
pub struct ShardStoreConfig {
    pub root: PathBuf,
    /// Most bytes of shards this node will hold; `None`: the disk decides.
    pub quota: Option<u64>,
    /// Free space always left on the filesystem, so the node refuses writes
    /// before the disk is full (the metadata store and the OS need room too).
    pub reserve_bytes: u64,
    /// `None`: detect io_uring, fall back to threads.
    pub io: Option<IoBackend>,
}

impl ShardStoreConfig {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            quota: None,
            reserve_bytes: 256 << 20,
            io: None,
        }
    }
}

/// Space figures for status and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Bytes of shards held (and reserved by writes in flight).
    pub used: u64,
    pub quota: Option<u64>,
    pub fs_free: u64,
    pub fs_total: u64,
    /// What a new write may still take.
    pub available: u64,
    /// Shards held.
    pub shards: u64,
}

pub struct ShardStore {
    root: PathBuf,
    shards: PathBuf,
    tmp: PathBuf,
    io: IoBackend,
    quota: Option<u64>,
    reserve: u64,
    used: Arc<AtomicU64>,
    count: AtomicU64,
    tmp_seq: AtomicU64,
    /// Whether to try [`read_cached`](Self::read_cached) at all.
    cached_reads: AtomicBool,
    /// Whether to try direct writes for [`put_own_parts`](Self::put_own_parts).
    direct_writes: AtomicBool,
}

impl ShardStore {
    /// Open (creating if needed) a store; removes temp files a crash left
    /// and counts the bytes held.
    pub fn open(cfg: ShardStoreConfig) -> Result<Self, StoreError> {
        let shards = cfg.root.join("shards");
        let tmp = cfg.root.join("tmp");
        fs::create_dir_all(&shards)?;
        fs::create_dir_all(&tmp)?;
        let mut stray = 0;
        for e in fs::read_dir(&tmp)? {
            fs::remove_file(e?.path())?;
            stray += 1;
        }
        if stray > 0 {
            tracing::warn!(count = stray, "removed partial shards left by a crash");
        }
        let io = cfg.io.unwrap_or_else(IoBackend::detect);
        let store = Self {
            root: cfg.root,
            shards,
            tmp,
            io,
            quota: cfg.quota,
            reserve: cfg.reserve_bytes,
            used: Arc::new(AtomicU64::new(0)),
            count: AtomicU64::new(0),
            tmp_seq: AtomicU64::new(0),
            cached_reads: AtomicBool::new(true),
            direct_writes: AtomicBool::new(true),
        };
        let (mut used, mut count) = (0, 0);
        for key in store.iter()? {
            used += fs::metadata(store.path(&key?))?.len();
            count += 1;
        }
        store.used.store(used, Ordering::SeqCst);
        store.count.store(count, Ordering::SeqCst);
        tracing::info!(root = %store.root.display(), io = io.name(), used, shards = count, "shard store open");
        Ok(store)
    }

    pub fn io_backend(&self) -> IoBackend {
        self.io
    }

    fn dir(&self, key: &ShardKey) -> PathBuf {
        self.chunk_dir(&key.chunk)
    }

    /// Where every shard of `chunk` is.
    fn chunk_dir(&self, chunk: &[u8; CHUNK_ID_LEN]) -> PathBuf {
        self.shards
            .join(format!("{:02x}", chunk[0]))
            .join(format!("{:02x}", chunk[1]))
    }

    /// Where a shard's file is (whether or not it exists). For tools and
    /// tests that look under the store; everything else goes through it.
    pub fn shard_path(&self, key: &ShardKey) -> PathBuf {
        self.path(key)
    }

    fn path(&self, key: &ShardKey) -> PathBuf {
        self.dir(key).join(key.to_name())
    }

    pub fn usage(&self) -> Result<Usage, StoreError> {
        let (fs_free, fs_total) = fs_space(&self.root)?;
        let used = self.used.load(Ordering::SeqCst);
        let by_disk = fs_free.saturating_sub(self.reserve);
        let by_quota = self.quota.map_or(u64::MAX, |q| q.saturating_sub(used));
        Ok(Usage {
            used,
            quota: self.quota,
            fs_free,
            fs_total,
            available: by_disk.min(by_quota),
            shards: self.count.load(Ordering::SeqCst),
        })
    }

    /// Start writing a shard of `len` bytes (header included). The space is
    /// reserved now, so concurrent writers cannot together overrun the quota.
    pub fn writer(&self, key: ShardKey, len: u64) -> Result<ShardWriter<'_>, StoreError> {
        self.reserve_space(len)?;
        let reservation = Reservation {
            used: self.used.clone(),
            bytes: len,
        };
        let seq = self.tmp_seq.fetch_add(1, Ordering::Relaxed);
        let tmp_path = self.tmp.join(format!("{}.{}.tmp", key.to_name(), seq));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp_path)?;
        Ok(ShardWriter {
            store: self,
            key,
            declared: len,
            file,
            tmp_path,
            written: 0,
            verifier: StreamVerifier::new(),
            own: None,
            reservation: Some(reservation),
            vouched: None,
        })
    }

    fn reserve_space(&self, len: u64) -> Result<(), StoreError> {
        let (fs_free, _) = fs_space(&self.root)?;
        let by_disk = fs_free.saturating_sub(self.reserve);
        loop {
            let used = self.used.load(Ordering::SeqCst);
            let by_quota = self.quota.map_or(u64::MAX, |q| q.saturating_sub(used));
            let available = by_disk.min(by_quota);
            if len > available {
                return Err(StoreError::InsufficientStorage {
                    needed: len,
                    available,
                });
            }
            if self
                .used
                .compare_exchange(used, used + len, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
            {
                return Ok(());
            }
        }
    }

    /// Store a whole shard from memory.
    pub fn put(&self, key: ShardKey, shard: &[u8]) -> Result<(), StoreError> {
        let mut w = self.writer(key, shard.len() as u64)?;
        w.write(shard)?;
        w.commit()
    }

    /// Store a shard whose header checksum this process has just computed
    /// (a rebuild) or verified (a copy checked on arrival) over these very
    /// bytes: the header is checked as for any shard, the body is not
    /// hashed a second time.
    pub fn put_own(&self, key: ShardKey, shard: &[u8]) -> Result<(), StoreError> {
        let split = codec::shard::ShardHeader::parse(shard)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?
            .header_len
            .min(shard.len());
        self.put_own_parts(key, &shard[..split], &shard[split..])
    }

    /// [`put_own`](Self::put_own) for a shard held as its header and its
    /// body apart (a rebuilder's work buffer), written without joining them.
    pub fn put_own_parts(
        &self,
        key: ShardKey,
        header: &[u8],
        body: &[u8],
    ) -> Result<(), StoreError> {
        let parsed = codec::shard::ShardHeader::parse(header)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let len = header.len() + body.len();
        if parsed.header_len != header.len() || parsed.shard_len() != len {
            return Err(StoreError::Corrupt(
                "shard length differs from its header".into(),
            ));
        }
        check_identity(&key, &parsed)?;
        let mut w = self.writer(key, len as u64)?;
        w.own = Some(parsed);
        w.write_cold(&[header, body])?;
        w.commit()
    }

    pub fn contains(&self, key: &ShardKey) -> bool {
        self.path(key).is_file()
    }

    /// Length of a stored shard, header included.
    pub fn shard_len(&self, key: &ShardKey) -> Result<u64, StoreError> {
        match fs::metadata(self.path(key)) {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(StoreError::NotFound),
            Err(e) => Err(e.into()),
        }
    }

    /// Open a stored shard for reading (in pieces, for streaming).
    pub fn open_shard(&self, key: &ShardKey) -> Result<ShardReader, StoreError> {
        let file = match File::open(self.path(key)) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(StoreError::NotFound),
            Err(e) => return Err(e.into()),
        };
        let len = file.metadata()?.len();
        Ok(ShardReader {
            file,
            len,
            io: self.io,
        })
    }

    /// Whether shards this process made are written around the page cache
    /// (false once the filesystem refused a direct write).
    pub fn direct_writes(&self) -> bool {
        self.direct_writes.load(Ordering::Relaxed)
    }

    /// Read `len` bytes at `offset` (the whole shard with `None`).
    pub fn read(&self, key: &ShardKey, range: Option<(u64, u64)>) -> Result<Vec<u8>, StoreError> {
        let reader = self.open_shard(key)?;
        let (offset, len) = reader.check_range(range)?;
        reader.read(offset, len)
    }

    /// Read `len` bytes at `offset` (the whole shard with `None`) if the
    /// kernel can serve them from memory without waiting on the disk,
    /// for at most `max_len` bytes: `Ok(None)` when it cannot (read with
    /// [`read`](Self::read) on a thread that may block), and also for a
    /// shard that is absent or a range outside it, which the ordinary
    /// read then reports.
    pub fn read_cached(
        &self,
        key: &ShardKey,
        range: Option<(u64, u64)>,
        max_len: u64,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        use crate::file_io::cached::{self, Cached};
        if !self.cached_reads.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let unsupported = || {
            self.cached_reads.store(false, Ordering::Relaxed);
            tracing::info!(
                "cached reads unsupported here; every read goes through the blocking pool"
            );
            Ok(None)
        };
        let file = match cached::open(&self.path(key)) {
            Ok(Cached::Hit(f)) => f,
            Ok(Cached::Miss) => return Ok(None),
            Ok(Cached::Unsupported) => return unsupported(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let reader = ShardReader {
            len: file.metadata()?.len(),
            file,
            io: self.io,
        };
        let Ok((offset, len)) = reader.check_range(range) else {
            return Ok(None);
        };
        if len > max_len {
            return Ok(None);
        }
        match cached::read(&reader.file, len as usize, offset)? {
            Cached::Hit(bytes) => Ok(Some(bytes)),
            Cached::Miss => Ok(None),
            Cached::Unsupported => unsupported(),
        }
    }

    /// Re-read a shard and check it (what the scrubber does).
    pub fn verify(&self, key: &ShardKey) -> Result<(), StoreError> {
        let bytes = self.read(key, None)?;
        let v = codec::shard::verify(&bytes).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        check_identity(key, &v.header)
    }

    /// Remove a shard; `false` if it was not there.
    pub fn delete(&self, key: &ShardKey) -> Result<bool, StoreError> {
        let path = self.path(key);
        let len = match fs::metadata(&path) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e.into()),
        };
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e.into()),
        }
        sync_dir(&self.dir(key))?;
        self.used.fetch_sub(len, Ordering::SeqCst);
        self.count.fetch_sub(1, Ordering::SeqCst);
        Ok(true)
    }

    /// The shards of `chunk` held here, as (index, length with header), in
    /// index order. One directory listing: a chunk's shards share a
    /// directory, so this costs one `getdents` where asking for each index
    /// would cost a path lookup per index.
    pub fn held(&self, chunk: &[u8; CHUNK_ID_LEN]) -> Result<Vec<(usize, u64)>, StoreError> {
        let entries = match fs::read_dir(self.chunk_dir(chunk)) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut held = Vec::new();
        for entry in entries {
            let entry = entry?;
            let Some(key) = entry
                .file_name()
                .to_str()
                .and_then(|n| ShardKey::from_name(n).ok())
            else {
                continue;
            };
            if key.chunk != *chunk {
                continue;
            }
            match entry.metadata() {
                Ok(m) => held.push((usize::from(key.index), m.len())),
                // Deleted since the listing.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
        }
        held.sort_unstable();
        Ok(held)
    }

    /// Every shard held, in directory order (for the scrubber and the
    /// reconciliation pass). Entries that are not shards are skipped.
    pub fn iter(
        &self,
    ) -> Result<impl Iterator<Item = Result<ShardKey, StoreError>> + '_, StoreError> {
        let top = sorted_dir(&self.shards)?;
        Ok(top.into_iter().flat_map(move |a| {
            let inner: Vec<Result<ShardKey, StoreError>> = match sorted_dir(&a) {
                Err(e) => vec![Err(e)],
                Ok(mids) => mids
                    .into_iter()
                    .flat_map(|b| match sorted_dir(&b) {
                        Err(e) => vec![Err(e)],
                        Ok(files) => files
                            .into_iter()
                            .filter_map(|f| ShardKey::from_name(f.file_name()?.to_str()?).ok())
                            .map(Ok)
                            .collect(),
                    })
                    .collect(),
            };
            inner
        }))
    }
}

fn sorted_dir(dir: &Path) -> Result<Vec<PathBuf>, StoreError> {
    let mut v = Vec::new();
    for e in fs::read_dir(dir)? {
        v.push(e?.path());
    }
    v.sort();
    Ok(v)
}

fn check_identity(key: &ShardKey, h: &codec::shard::ShardHeader) -> Result<(), StoreError> {
    if h.chunk_id.0 != key.chunk || h.index != key.index {
        return Err(StoreError::Corrupt(
            "shard header names another chunk or index".into(),
        ));
    }
    Ok(())
}

fn fs_space(path: &Path) -> Result<(u64, u64), StoreError> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| StoreError::Io(io::Error::new(io::ErrorKind::InvalidInput, e)))?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a valid out-pointer.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error().into());
    }
    let frsize = st.f_frsize as u64;
    Ok((st.f_bavail as u64 * frsize, st.f_blocks as u64 * frsize))
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// An open stored shard. The file stays readable even if the shard is
/// deleted meanwhile (unlinked files live on while open).
pub struct ShardReader {
    file: File,
    len: u64,
    io: IoBackend,
}

impl ShardReader {
    /// Length of the shard, header included.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// `(offset, len)` of `range` (the whole shard for `None`), if it lies
    /// inside the shard.
    pub fn check_range(&self, range: Option<(u64, u64)>) -> Result<(u64, u64), StoreError> {
        let (offset, len) = range.unwrap_or((0, self.len));
        if offset.checked_add(len).is_none_or(|end| end > self.len) {
            return Err(StoreError::InvalidRange {
                offset,
                len,
                shard_len: self.len,
            });
        }
        Ok((offset, len))
    }

    /// Exactly `len` bytes at `offset`, which must be inside the shard.
    pub fn read(&self, offset: u64, len: u64) -> Result<Vec<u8>, StoreError> {
        self.check_range(Some((offset, len)))?;
        let buf = self.io.read_vec_at(&self.file, len as usize, offset)?;
        if buf.len() as u64 != len {
            return Err(StoreError::Io(io::Error::from(
                io::ErrorKind::UnexpectedEof,
            )));
        }
        Ok(buf)
    }
}

/// Space reserved by a write in flight; released unless the write commits.
struct Reservation {
    used: Arc<AtomicU64>,
    bytes: u64,
}

impl Reservation {
    /// The write committed: the bytes stay counted as used.
    fn keep(mut self) {
        self.bytes = 0;
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.used.fetch_sub(self.bytes, Ordering::SeqCst);
    }
}

/// A shard being written. Dropping it without `commit` leaves nothing.
pub struct ShardWriter<'a> {
    store: &'a ShardStore,
    key: ShardKey,
    declared: u64,
    file: File,
    tmp_path: PathBuf,
    written: u64,
    verifier: StreamVerifier,
    /// The header of a shard this process made or verified (see
    /// `put_own`): its body is not hashed again.
    own: Option<codec::shard::ShardHeader>,
    reservation: Option<Reservation>,
    vouched: Option<[u8; 32]>,
}

impl ShardWriter<'_> {
    /// Commit only if the shard's own checksum is `checksum`. A shard put
    /// declares its checksum up front, and a peer's put is allowed or not
    /// by it: the checksum covers every byte of the shard but itself, so a
    /// shard that verifies and carries that checksum is the one judged.
    pub fn expect_checksum(&mut self, checksum: [u8; 32]) {
        self.vouched = Some(checksum);
    }

    /// Append bytes; fails early on a bad header or too many bytes.
    pub fn write(&mut self, data: &[u8]) -> Result<(), StoreError> {
        if self.written + data.len() as u64 > self.declared {
            return Err(StoreError::Corrupt("more bytes than declared".into()));
        }
        if self.own.is_none() {
            self.verifier
                .update(data)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        }
        self.store.io.write_all_at(&self.file, data, self.written)?;
        self.written += data.len() as u64;
        Ok(())
    }

    /// Write the whole shard, `parts` end to end, around the page cache
    /// where the filesystem allows (see [`file_io::direct`]): for a shard
    /// this process made (rebuilt or copied), which nobody reads soon.
    fn write_cold(&mut self, parts: &[&[u8]]) -> Result<(), StoreError> {
        use crate::file_io::direct;
        let total: u64 = parts.iter().map(|p| p.len() as u64).sum();
        // Shorter than a block, it would all go through the cache anyway.
        let eligible = self.own.is_some()
            && self.written == 0
            && total == self.declared
            && total >= direct::ALIGN as u64;
        if eligible && self.store.direct_writes.load(Ordering::Relaxed) {
            match self.write_direct(parts) {
                Ok(()) => {
                    self.written = total;
                    return Ok(());
                }
                Err(e) if direct::refused(&e) => {
                    self.store.direct_writes.store(false, Ordering::Relaxed);
                    tracing::info!(error = %e, "direct writes refused here; writing through the page cache");
                }
                Err(e) => return Err(e.into()),
            }
        }
        for p in parts {
            self.write(p)?;
        }
        Ok(())
    }

    /// The whole blocks of `parts` through a second, `O_DIRECT` descriptor
    /// of the temp file, the rest (less than a block) through the usual
    /// one; `commit`'s fsync makes both durable.
    fn write_direct(&self, parts: &[&[u8]]) -> io::Result<()> {
        use crate::file_io::direct;
        let file = direct::open(&self.tmp_path)?;
        let io = self.store.io;
        let whole = direct::with_blocks(parts, |blocks| {
            io.write_all_at(&file, blocks, 0).map(|()| blocks.len())
        })?;
        let mut at = whole as u64;
        for piece in direct::tail(parts, whole) {
            io.write_all_at(&self.file, piece, at)?;
            at += piece.len() as u64;
        }
        Ok(())
    }

    /// Verify, make durable and publish the shard.
    pub fn commit(mut self) -> Result<(), StoreError> {
        if self.written != self.declared {
            return Err(StoreError::Corrupt(format!(
                "{} bytes received, {} declared",
                self.written, self.declared
            )));
        }
        let verifier = std::mem::take(&mut self.verifier);
        let header = match self.own.take() {
            Some(h) => h,
            None => verifier
                .finish()
                .map_err(|e| StoreError::Corrupt(e.to_string()))?,
        };
        check_identity(&self.key, &header)?;
        if self.vouched.is_some_and(|c| c != header.checksum) {
            return Err(StoreError::NotVouched);
        }
        self.store.io.sync_all(&self.file)?;
        let dir = self.store.dir(&self.key);
        if !dir.is_dir() {
            fs::create_dir_all(&dir)?;
            // New directories must themselves survive a crash.
            if let Some(parent) = dir.parent() {
                sync_dir(parent)?;
                if let Some(grand) = parent.parent() {
                    sync_dir(grand)?;
                }
            }
        }
        let target = self.store.path(&self.key);
        let replaced = target.exists();
        fs::rename(&self.tmp_path, &target)?;
        sync_dir(&dir)?;
        if let Some(r) = self.reservation.take() {
            // The bytes now belong to the stored shard and stay counted;
            // replacing an identical shard (content-addressed) adds none.
            if !replaced {
                r.keep();
                self.store.count.fetch_add(1, Ordering::SeqCst);
            }
        }
        Ok(())
    }
}

impl Drop for ShardWriter<'_> {
    fn drop(&mut self) {
        // After a successful commit the temp path no longer exists.
        let _ = fs::remove_file(&self.tmp_path);
    }
}
