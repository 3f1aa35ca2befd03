//! Positional file I/O through io_uring when the kernel allows it, plain
//! system calls otherwise. Both backends have the same semantics (full
//! writes, short reads only at end of file, fsync), and the shard store's
//! tests run against each.

use std::cell::RefCell;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoBackend {
    /// io_uring, one small ring per thread.
    Uring,
    /// pread/pwrite/fsync on the calling thread.
    Threads,
}

impl IoBackend {
    /// io_uring if a ring can be created and a no-op completes (seccomp
    /// filters, old kernels and `kernel.io_uring_disabled` all refuse it).
    pub fn detect() -> IoBackend {
        match uring::probe() {
            Ok(()) => IoBackend::Uring,
            Err(e) => {
                tracing::info!(error = %e, "io_uring unavailable, using thread I/O");
                IoBackend::Threads
            }
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            IoBackend::Uring => "io_uring",
            IoBackend::Threads => "threads",
        }
    }

    /// Write all of `buf` at `offset`.
    pub fn write_all_at(&self, file: &File, buf: &[u8], offset: u64) -> io::Result<()> {
        match self {
            IoBackend::Threads => file.write_all_at(buf, offset),
            IoBackend::Uring => uring::write_all_at(file, buf, offset),
        }
    }

    /// Up to `len` bytes from `offset` in a new buffer (fewer only at end
    /// of file). The buffer is not zeroed first: for a whole-shard read,
    /// zeroing cost about as much as the copy from the page cache.
    pub fn read_vec_at(&self, file: &File, len: usize, offset: u64) -> io::Result<Vec<u8>> {
        read_new(len, offset, |ptr, want, at| match self {
            IoBackend::Threads => {
                // SAFETY: `ptr` is valid for `want` bytes of writes (see
                // `read_new`) and pread writes at most that many.
                let r =
                    unsafe { libc::pread(file.as_raw_fd(), ptr.cast(), want, at as libc::off_t) };
                if r < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(r as usize)
                }
            }
            IoBackend::Uring => uring::read_raw(file, ptr, want, at),
        })
    }

    pub fn sync_all(&self, file: &File) -> io::Result<()> {
        match self {
            IoBackend::Threads => file.sync_all(),
            IoBackend::Uring => uring::fsync(file),
        }
    }
}

/// Up to `len` bytes from `offset` in a new, unzeroed buffer, by calls of
/// `read(ptr, want, at)`, each of which may write at most `want` bytes at
/// `ptr` and returns how many it wrote; 0 is the end of the file, so the
/// buffer is shorter only there. Interrupted calls are retried.
fn read_new(
    len: usize,
    offset: u64,
    mut read: impl FnMut(*mut u8, usize, u64) -> io::Result<usize>,
) -> io::Result<Vec<u8>> {
    let mut buf: Vec<u8> = Vec::with_capacity(len);
    while buf.len() < len {
        let done = buf.len();
        let want = len - done;
        // Only a raw pointer to the spare capacity is handed out (to the
        // kernel): no reference to uninitialised bytes is ever made.
        let ptr = buf.spare_capacity_mut().as_mut_ptr().cast::<u8>();
        match read(ptr, want, offset + done as u64) {
            Ok(0) => break,
            // SAFETY: the call initialised `n <= want` bytes after the
            // `done` already there.
            Ok(n) => unsafe { buf.set_len(done + n.min(want)) },
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(buf)
}

mod uring {
    use super::*;
    use io_uring::{opcode, types, IoUring};

    thread_local! {
        // Rings are cheap (a few pages) and not Sync; one per thread avoids
        // any lock on the I/O path.
        static RING: RefCell<Option<IoUring>> = const { RefCell::new(None) };
    }

    fn with_ring<T>(f: impl FnOnce(&mut IoUring) -> io::Result<T>) -> io::Result<T> {
        RING.with(|cell| {
            let mut slot = cell.borrow_mut();
            if slot.is_none() {
                *slot = Some(IoUring::new(8)?);
            }
            f(slot.as_mut().expect("ring just created"))
        })
    }

    /// Submit one entry and wait for its completion; returns the result
    /// (bytes, or 0) or the errno as an error.
    fn run(entry: io_uring::squeue::Entry) -> io::Result<usize> {
        with_ring(|ring| {
            // SAFETY: the buffers the entry points to are borrowed by the
            // caller for the whole call, and we wait for the completion
            // before returning, so the kernel never sees a dangling pointer.
            unsafe {
                ring.submission()
                    .push(&entry)
                    .map_err(|_| io::Error::other("io_uring submission queue full"))?;
            }
            loop {
                match ring.submit_and_wait(1) {
                    Ok(_) => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            }
            let cqe = ring
                .completion()
                .next()
                .ok_or_else(|| io::Error::other("io_uring completion missing"))?;
            let res = cqe.result();
            if res < 0 {
                Err(io::Error::from_raw_os_error(-res))
            } else {
                Ok(res as usize)
            }
        })
    }

    pub(super) fn probe() -> io::Result<()> {
        run(opcode::Nop::new().build()).map(|_| ())
    }

    pub(super) fn write_all_at(file: &File, mut buf: &[u8], mut offset: u64) -> io::Result<()> {
        let fd = types::Fd(file.as_raw_fd());
        while !buf.is_empty() {
            // One op moves at most u32::MAX bytes; loop on short writes.
            let len = buf.len().min(1 << 30) as u32;
            let e = opcode::Write::new(fd, buf.as_ptr(), len)
                .offset(offset)
                .build();
            match run(e) {
                Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
                Ok(n) => {
                    buf = &buf[n..];
                    offset += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Read into `len` bytes at `ptr`, which the caller guarantees valid
    /// for writes for the whole call.
    pub(super) fn read_raw(
        file: &File,
        ptr: *mut u8,
        len: usize,
        offset: u64,
    ) -> io::Result<usize> {
        let len = len.min(1 << 30) as u32;
        let e = opcode::Read::new(types::Fd(file.as_raw_fd()), ptr, len)
            .offset(offset)
            .build();
        run(e)
    }

    pub(super) fn fsync(file: &File) -> io::Result<()> {
        run(opcode::Fsync::new(types::Fd(file.as_raw_fd())).build()).map(|_| ())
    }
}

/// Reads that never wait on the disk: served from the kernel's caches or
/// not at all. An async caller can answer a hot read on its own thread
/// and send only a cold one through the blocking pool (a trip there costs
/// two thread wake-ups, more than copying a shard from the page cache).
pub mod cached {
    use std::ffi::CString;
    use std::fs::File;
    use std::io;
    use std::os::fd::{AsRawFd, FromRawFd};
    use std::os::unix::ffi::OsStrExt;
    use std::path::Path;

    /// What a cached read found.
    #[derive(Debug)]
    pub enum Cached<T> {
        Hit(T),
        /// Not all of it is in memory (or the file is shorter).
        Miss,
        /// This kernel or filesystem cannot tell: no use asking again.
        Unsupported,
    }

    fn answer<T>(e: io::Error) -> io::Result<Cached<T>> {
        match e.raw_os_error() {
            Some(libc::EAGAIN) => Ok(Cached::Miss),
            // No openat2 or RWF_NOWAIT here (old kernel, seccomp filter,
            // filesystem without the flag).
            Some(libc::ENOSYS | libc::EINVAL | libc::EOPNOTSUPP | libc::E2BIG | libc::EPERM) => {
                Ok(Cached::Unsupported)
            }
            _ => Err(e),
        }
    }

    /// Open `path` read-only if every component of it is in the dentry
    /// cache (`openat2` with `RESOLVE_CACHED`, Linux 5.12+).
    pub fn open(path: &Path) -> io::Result<Cached<File>> {
        let c = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: open_how is plain data; all-zero is its documented
        // default before the fields are set.
        let mut how: libc::open_how = unsafe { std::mem::zeroed() };
        how.flags = (libc::O_RDONLY | libc::O_CLOEXEC) as u64;
        how.resolve = libc::RESOLVE_CACHED;
        // SAFETY: `c` is a NUL-terminated path and `how` a valid open_how
        // of the size passed; the kernel reads both during the call only.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                libc::AT_FDCWD,
                c.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        if fd < 0 {
            return answer(io::Error::last_os_error());
        }
        // SAFETY: the kernel just returned this descriptor to us alone.
        Ok(Cached::Hit(unsafe { File::from_raw_fd(fd as libc::c_int) }))
    }

    /// Exactly `len` bytes at `offset` if all of them are in the page cache
    /// (`preadv2` with `RWF_NOWAIT`).
    #[cfg(target_env = "gnu")]
    pub fn read(file: &File, len: usize, offset: u64) -> io::Result<Cached<Vec<u8>>> {
        let got = super::read_new(len, offset, |ptr, want, at| {
            let iov = libc::iovec {
                iov_base: ptr.cast(),
                iov_len: want,
            };
            // SAFETY: the iovec covers `want` bytes valid for writes (see
            // `read_new`), and the kernel writes at most that many.
            let r = unsafe {
                libc::preadv2(
                    file.as_raw_fd(),
                    &iov,
                    1,
                    at as libc::off_t,
                    libc::RWF_NOWAIT,
                )
            };
            if r < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(r as usize)
            }
        });
        match got {
            Ok(buf) if buf.len() == len => Ok(Cached::Hit(buf)),
            // The file ended first.
            Ok(_) => Ok(Cached::Miss),
            Err(e) => answer(e),
        }
    }

    #[cfg(not(target_env = "gnu"))]
    pub fn read(_file: &File, _len: usize, _offset: u64) -> io::Result<Cached<Vec<u8>>> {
        Ok(Cached::Unsupported)
    }
}

/// Writes that bypass the page cache (`O_DIRECT`), for shards nobody is
/// about to read: a rebuilt shard is cold. Through the page cache each
/// byte is copied into pages the kernel must first find and zero (and on
/// a VM whose free pages go back to the host, the host must fault in
/// too), and those pages then push hot shards out of the cache.
pub mod direct {
    use std::fs::{File, OpenOptions};
    use std::io;
    use std::os::unix::fs::OpenOptionsExt;
    use std::path::Path;
    use std::sync::Mutex;

    /// Offsets, lengths and buffer addresses of direct writes are
    /// multiples of this (the largest logical block size in use).
    pub const ALIGN: usize = 4096;

    /// Open `path` (an existing file) for direct writes. A filesystem
    /// without `O_DIRECT` fails this with an error [`refused`] matches.
    pub fn open(path: &Path) -> io::Result<File> {
        OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT | libc::O_CLOEXEC)
            .open(path)
    }

    /// The filesystem or device does not do direct I/O (or not with this
    /// alignment): write through the page cache instead.
    pub fn refused(e: &io::Error) -> bool {
        matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EOPNOTSUPP))
    }

    /// Aligned buffers kept between writes: a new one would be faulted in
    /// and zeroed page by page, the cost direct writes avoid.
    static BUFFERS: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());
    const KEPT: usize = 16;

    /// `parts` laid end to end, cut after the last whole block: `f` gets
    /// those bytes at an aligned address (nothing when they are shorter
    /// than a block). The rest is [`tail`]'s.
    pub fn with_blocks<T>(parts: &[&[u8]], f: impl FnOnce(&[u8]) -> T) -> T {
        let total: usize = parts.iter().map(|p| p.len()).sum();
        let whole = total / ALIGN * ALIGN;
        let mut buf = BUFFERS
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop()
            .unwrap_or_default();
        if buf.len() < whole + ALIGN {
            buf.resize(whole + ALIGN, 0);
        }
        let start = (ALIGN - buf.as_ptr() as usize % ALIGN) % ALIGN;
        let blocks = &mut buf[start..start + whole];
        let mut at = 0;
        for p in parts {
            let n = p.len().min(whole - at);
            blocks[at..at + n].copy_from_slice(&p[..n]);
            at += n;
        }
        let out = f(&buf[start..start + whole]);
        let mut kept = BUFFERS.lock().unwrap_or_else(|p| p.into_inner());
        if kept.len() < KEPT {
            kept.push(buf);
        }
        out
    }

    /// The bytes of `parts` (laid end to end) from `skip` on.
    pub fn tail<'a>(parts: &[&'a [u8]], mut skip: usize) -> Vec<&'a [u8]> {
        let mut out = Vec::new();
        for p in parts {
            if skip >= p.len() {
                skip -= p.len();
            } else {
                out.push(&p[skip..]);
                skip = 0;
            }
        }
        out
    }
}
