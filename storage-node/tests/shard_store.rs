//! The shard store against a real filesystem in a temp dir, once per I/O
//! backend (io_uring where the kernel allows it, plain threads always).

use codec::{DomainKey, ErasureParams, SealConfig, SealedChunk, Sealer};
use rand::{RngCore, SeedableRng};
use std::collections::BTreeSet;
use storage_node::{IoBackend, ShardKey, ShardStore, ShardStoreConfig, StoreError};

fn backends() -> Vec<IoBackend> {
    let mut v = vec![IoBackend::Threads];
    if IoBackend::detect() == IoBackend::Uring {
        v.push(IoBackend::Uring);
    } else {
        eprintln!("io_uring refused by this kernel: testing the thread backend only");
    }
    v
}

fn open(dir: &std::path::Path, io: IoBackend, quota: Option<u64>) -> ShardStore {
    let mut cfg = ShardStoreConfig::new(dir);
    cfg.io = Some(io);
    cfg.quota = quota;
    cfg.reserve_bytes = 0;
    ShardStore::open(cfg).unwrap()
}

fn sealed(seed: u64, len: usize) -> SealedChunk {
    let mut data = vec![0u8; len];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut data);
    Sealer::new(SealConfig::new(ErasureParams::new(4, 2).unwrap()))
        .unwrap()
        .seal(&DomainKey::new([1; 32]), &data)
        .unwrap()
}

fn key(s: &SealedChunk, i: usize) -> ShardKey {
    ShardKey::new(s.id().0, i).unwrap()
}

#[test]
fn put_read_range_delete() {
    for io in backends() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), io, None);
        assert_eq!(store.io_backend(), io);
        let c = sealed(1, 300_000);
        for i in 0..c.shard_count() {
            store.put(key(&c, i), &c.shard(i)).unwrap();
        }
        for i in 0..c.shard_count() {
            let k = key(&c, i);
            assert!(store.contains(&k));
            assert_eq!(store.read(&k, None).unwrap(), c.shard(i), "{io:?}");
            assert_eq!(store.shard_len(&k).unwrap(), c.shard(i).len() as u64);
            let part = store.read(&k, Some((100, 1000))).unwrap();
            assert_eq!(part, &c.shard(i)[100..1100]);
            store.verify(&k).unwrap();
        }
        let k0 = key(&c, 0);
        let len = c.shard(0).len() as u64;
        assert!(matches!(
            store.read(&k0, Some((len - 10, 11))),
            Err(StoreError::InvalidRange { .. })
        ));
        assert!(matches!(
            store.read(&k0, Some((u64::MAX, 2))),
            Err(StoreError::InvalidRange { .. })
        ));
        let used = store.usage().unwrap().used;
        assert_eq!(used, len * 6);
        assert_eq!(store.usage().unwrap().shards, 6);
        assert!(store.delete(&k0).unwrap());
        assert!(!store.delete(&k0).unwrap());
        assert!(matches!(store.read(&k0, None), Err(StoreError::NotFound)));
        assert_eq!(store.usage().unwrap().used, len * 5);
        // Idempotent re-put of an identical shard does not double count.
        store.put(key(&c, 1), &c.shard(1)).unwrap();
        assert_eq!(store.usage().unwrap().used, len * 5);
        assert_eq!(store.usage().unwrap().shards, 5);
    }
}

#[test]
fn bad_shards_are_refused_and_leave_nothing() {
    for io in backends() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), io, None);
        let c = sealed(2, 50_000);
        let good = c.shard(2);

        let mut flipped = good.clone();
        flipped[500] ^= 1;
        let truncated = &good[..good.len() - 1];
        let cases: Vec<(ShardKey, &[u8], &str)> = vec![
            (key(&c, 2), &flipped, "checksum"),
            (key(&c, 3), &good, "stored under another index"),
            (ShardKey::new([9; 32], 2).unwrap(), &good, "another chunk"),
            (key(&c, 2), b"not a shard at all, just text", "garbage"),
        ];
        for (k, bytes, what) in cases {
            let err = store.put(k, bytes).unwrap_err();
            assert!(matches!(err, StoreError::Corrupt(_)), "{what}: {err}");
            assert!(!store.contains(&k), "{what}");
        }
        // Declared longer than sent: commit refuses.
        let mut w = store.writer(key(&c, 2), good.len() as u64).unwrap();
        w.write(truncated).unwrap();
        assert!(matches!(w.commit(), Err(StoreError::Corrupt(_))));
        // More than declared: refused at write.
        let mut w = store.writer(key(&c, 2), 10).unwrap();
        assert!(matches!(w.write(&good), Err(StoreError::Corrupt(_))));
        drop(w);
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0
        );
        assert_eq!(store.usage().unwrap().used, 0, "reservations released");
        assert_eq!(store.iter().unwrap().count(), 0);
    }
}

#[test]
fn keys_cannot_escape_the_store() {
    let bad = [
        "../../../../etc/passwd",
        "..",
        "",
        &"A".repeat(64),
        &"0".repeat(63),
        &"0".repeat(65),
        &format!("{}/", "0".repeat(63)),
        &format!("{}\0", "0".repeat(63)),
    ];
    for b in bad {
        assert!(ShardKey::from_hex(b, 0).is_err(), "{b:?}");
        assert!(ShardKey::from_name(&format!("{b}.0")).is_err(), "{b:?}");
    }
    assert!(ShardKey::from_hex(&"0".repeat(64), 64).is_err());
    for name in ["0a", "+1", "01", "1 ", "", "99999999999999999999"] {
        let n = format!("{}.{name}", "0a".repeat(32));
        assert!(ShardKey::from_name(&n).is_err(), "{n:?}");
    }
    let k = ShardKey::from_hex(&"0a".repeat(32), 63).unwrap();
    assert_eq!(ShardKey::from_name(&k.to_name()), Ok(k));
}

#[test]
fn quota_refuses_writes_and_keeps_reads() {
    for io in backends() {
        let dir = tempfile::tempdir().unwrap();
        let c = sealed(3, 200_000);
        let one = c.shard(0).len() as u64;
        let store = open(dir.path(), io, Some(one * 2 + one / 2));
        store.put(key(&c, 0), &c.shard(0)).unwrap();
        store.put(key(&c, 1), &c.shard(1)).unwrap();
        let err = store.put(key(&c, 2), &c.shard(2)).unwrap_err();
        assert!(
            matches!(err, StoreError::InsufficientStorage { .. }),
            "{err}"
        );
        assert_eq!(store.read(&key(&c, 0), None).unwrap(), c.shard(0));
        store.delete(&key(&c, 1)).unwrap();
        store.put(key(&c, 2), &c.shard(2)).unwrap();
    }
}

#[test]
fn reopen_cleans_temp_files_and_recounts() {
    for io in backends() {
        let dir = tempfile::tempdir().unwrap();
        let c = sealed(4, 100_000);
        {
            let store = open(dir.path(), io, None);
            for i in 0..3 {
                store.put(key(&c, i), &c.shard(i)).unwrap();
            }
            // A write in flight when the process dies.
            let mut w = store.writer(key(&c, 3), c.shard(3).len() as u64).unwrap();
            w.write(&c.shard(3)[..1000]).unwrap();
            std::mem::forget(w);
        }
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            1
        );
        let store = open(dir.path(), io, None);
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0
        );
        assert!(!store.contains(&key(&c, 3)));
        assert_eq!(store.usage().unwrap().used, 3 * c.shard(0).len() as u64);
        assert_eq!(store.usage().unwrap().shards, 3);
        let listed: BTreeSet<ShardKey> = store.iter().unwrap().map(|k| k.unwrap()).collect();
        assert_eq!(listed, (0..3).map(|i| key(&c, i)).collect());
    }
}

#[test]
fn scrub_finds_bitrot_on_disk() {
    for io in backends() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), io, None);
        let c = sealed(5, 80_000);
        store.put(key(&c, 4), &c.shard(4)).unwrap();
        let k = key(&c, 4);
        let hex = k.chunk_hex();
        let path = dir
            .path()
            .join("shards")
            .join(&hex[0..2])
            .join(&hex[2..4])
            .join(format!("{hex}.4"));
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[3000] ^= 0x40;
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(store.verify(&k), Err(StoreError::Corrupt(_))));
        // Junk files in the tree are not mistaken for shards.
        std::fs::write(path.with_file_name("notes.txt"), b"x").unwrap();
        std::fs::write(path.with_file_name(format!("{hex}.04")), b"x").unwrap();
        assert_eq!(store.iter().unwrap().count(), 1);
    }
}

#[test]
fn reads_stop_at_end_of_file_and_held_lists_one_chunk() {
    for io in backends() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let f = std::fs::File::open(&path).unwrap();
        assert_eq!(
            io.read_vec_at(&f, 1000, 5).unwrap(),
            &data[5..1005],
            "{io:?}"
        );
        // Past the end: what is there, then nothing.
        assert_eq!(
            io.read_vec_at(&f, 10_000, 195_000).unwrap(),
            &data[195_000..]
        );
        assert!(io.read_vec_at(&f, 10, 300_000).unwrap().is_empty());

        let store = open(dir.path(), io, None);
        let (a, b) = (sealed(7, 100_000), sealed(8, 100_000));
        for i in [0, 2, 5] {
            store.put(key(&a, i), &a.shard(i)).unwrap();
        }
        store.put(key(&b, 1), &b.shard(1)).unwrap();
        let held = store.held(&a.id().0).unwrap();
        let want: Vec<(usize, u64)> = [0, 2, 5]
            .iter()
            .map(|&i| (i, a.shard(i).len() as u64))
            .collect();
        assert_eq!(held, want, "{io:?}");
        assert!(store.held(&sealed(9, 10).id().0).unwrap().is_empty());
    }
}

#[test]
fn own_shards_are_checked_on_their_header() {
    for io in backends() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), io, None);
        let c = sealed(10, 100_000);
        // Stored under another index, or cut short: refused, nothing left.
        assert!(matches!(
            store.put_own(key(&c, 1), &c.shard(0)),
            Err(StoreError::Corrupt(_))
        ));
        let shard = c.shard(2);
        assert!(matches!(
            store.put_own(key(&c, 2), &shard[..shard.len() - 1]),
            Err(StoreError::Corrupt(_))
        ));
        assert!(!store.contains(&key(&c, 1)) && !store.contains(&key(&c, 2)));
        // Header and body apart: the split must be where the header says.
        let hl = codec::shard::ShardHeader::parse(&shard).unwrap().header_len;
        assert!(matches!(
            store.put_own_parts(key(&c, 2), &shard[..hl - 1], &shard[hl - 1..]),
            Err(StoreError::Corrupt(_))
        ));
        store
            .put_own_parts(key(&c, 3), &c.shard(3)[..hl], &c.shard(3)[hl..])
            .unwrap();
        store.verify(&key(&c, 3)).unwrap();
        store.put_own(key(&c, 2), &shard).unwrap();
        store.verify(&key(&c, 2)).unwrap();
        assert_eq!(store.read(&key(&c, 2), None).unwrap(), shard, "{io:?}");
    }
}

/// Cached reads answer from memory or not at all: the same bytes as a read
/// when they answer, nothing for an absent shard or a range outside it,
/// and nothing once the shard's pages have left the page cache.
#[test]
fn cached_reads_serve_memory_only() {
    use std::os::fd::AsRawFd;
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), IoBackend::Threads, None);
    let c = sealed(5, 300_000);
    let k = key(&c, 2);
    let shard = c.shard(2);
    let len = shard.len() as u64;
    store.put(k, &shard).unwrap();
    let Some(whole) = store.read_cached(&k, None, u64::MAX).unwrap() else {
        // tmpfs and some kernels cannot read without waiting: the
        // ordinary read then does it all (the other tests cover that).
        eprintln!("no cached reads on this filesystem or kernel");
        return;
    };
    assert_eq!(whole, shard);
    assert_eq!(
        store.read_cached(&k, Some((100, 1000)), u64::MAX).unwrap(),
        Some(shard[100..1100].to_vec())
    );
    // Longer than the caller takes this way, outside the shard, absent.
    assert_eq!(store.read_cached(&k, None, len - 1).unwrap(), None);
    assert_eq!(
        store
            .read_cached(&k, Some((len - 10, 11)), u64::MAX)
            .unwrap(),
        None
    );
    let other = key(&c, 3);
    assert_eq!(store.read_cached(&other, None, u64::MAX).unwrap(), None);
    // The file is clean after its fsync, so the kernel drops its pages.
    let f = std::fs::File::open(store.shard_path(&k)).unwrap();
    // SAFETY: plain advice on an open descriptor.
    let r = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(r, 0);
    assert_eq!(store.read_cached(&k, None, u64::MAX).unwrap(), None);
    assert_eq!(store.read(&k, None).unwrap(), shard);
}

/// Shards this process made are written around the page cache where the
/// filesystem allows: whole blocks directly, the last partial block
/// through the cache. Every length reads back whole, and (where both
/// direct writes and cached reads work) the shard is not left in memory.
#[test]
fn own_shards_of_any_length_are_written_around_the_page_cache() {
    for io in backends() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), io, None);
        for (seed, len) in [(1, 100), (2, 4096 * 4), (3, 65_536), (4, 300_000)] {
            let c = sealed(seed, len);
            for i in [0, 4] {
                let shard = c.shard(i);
                let hl = codec::shard::ShardHeader::parse(&shard).unwrap().header_len;
                let k = key(&c, i);
                store.put_own_parts(k, &shard[..hl], &shard[hl..]).unwrap();
                if store.direct_writes() && shard.len() >= 2 * 4096 {
                    // A cold shard: its first block was never cached
                    // (before anything reads it).
                    let first = store.read_cached(&k, Some((0, 4096)), u64::MAX).unwrap();
                    assert!(first.is_none(), "{io:?} {len}: first block cached");
                }
                store.verify(&k).unwrap();
                assert_eq!(store.read(&k, None).unwrap(), shard, "{io:?} {len}");
            }
        }
        // A plain put still goes through the page cache (a cached read
        // finds it where this kernel can tell).
        let c = sealed(9, 300_000);
        store.put(key(&c, 1), &c.shard(1)).unwrap();
        if let Some(cached) = store.read_cached(&key(&c, 1), None, u64::MAX).unwrap() {
            assert_eq!(cached, c.shard(1));
        }
    }
}
