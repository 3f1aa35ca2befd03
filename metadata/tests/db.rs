//! The metadata tables, on a real database in a temp dir, for every
//! engine this build has: each test runs once per engine.

use metadata::db::{prefix_end, Batch, Db, DbError, Engine, Table};
use metadata::model::{Bucket, VersioningState, BUCKET_ID_LEN};
use std::sync::Arc;

fn bucket(name: &str) -> Bucket {
    Bucket {
        name: name.into(),
        id: vec![1; BUCKET_ID_LEN],
        owner: "owner".into(),
        created_ms: 1,
        versioning: VersioningState::Enabled as i32,
        erasure: None,
        ..Default::default()
    }
}

fn typed_get_put_delete_and_reopen(engine: Engine) {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = Db::open_with(dir.path(), engine).unwrap();
        assert!(db.get::<Bucket>(Table::Buckets, b"a").unwrap().is_none());
        db.put(Table::Buckets, b"a", &bucket("a")).unwrap();
        db.put(Table::Buckets, b"b", &bucket("b")).unwrap();
        db.delete(Table::Buckets, b"b").unwrap();
        // Tables are separate key spaces.
        assert!(db.get_raw(Table::Versions, b"a").unwrap().is_none());
    }
    let db = Db::open_with(dir.path(), engine).unwrap();
    assert_eq!(
        db.get::<Bucket>(Table::Buckets, b"a").unwrap(),
        Some(bucket("a"))
    );
    assert!(db.get::<Bucket>(Table::Buckets, b"b").unwrap().is_none());
}

fn corrupt_record_is_a_typed_error(engine: Engine) {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open_with(dir.path(), engine).unwrap();
    db.put_raw(Table::Buckets, b"x", b"\x01\xff\xff").unwrap();
    assert!(matches!(
        db.get::<Bucket>(Table::Buckets, b"x"),
        Err(DbError::Record {
            table: "buckets",
            ..
        })
    ));
}

fn batches_are_atomic_across_tables(engine: Engine) {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open_with(dir.path(), engine).unwrap();
    db.put_raw(Table::Parts, b"old", b"1").unwrap();
    let mut b = Batch::new();
    b.put(Table::Buckets, b"k", &bucket("k"))
        .put_raw(Table::ChunkRefs, b"r", b"ref".to_vec())
        .delete(Table::Parts, b"old");
    assert_eq!(b.len(), 3);
    db.write(b).unwrap();
    assert!(db.get::<Bucket>(Table::Buckets, b"k").unwrap().is_some());
    assert_eq!(db.get_raw(Table::ChunkRefs, b"r").unwrap().unwrap(), b"ref");
    assert!(db.get_raw(Table::Parts, b"old").unwrap().is_none());
}

fn write_changed_applies_what_differs(engine: Engine) {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open_with(dir.path(), engine).unwrap();
    db.put_raw(Table::ChunkRefs, b"same", b"1").unwrap();
    db.put_raw(Table::ChunkRefs, b"changed", b"1").unwrap();
    db.put_raw(Table::Parts, b"gone", b"1").unwrap();
    let mut b = Batch::new();
    b.put_raw(Table::ChunkRefs, b"same", b"1".to_vec())
        .put_raw(Table::ChunkRefs, b"changed", b"2".to_vec())
        .put_raw(Table::ChunkRefs, b"new", b"3".to_vec())
        .delete(Table::Parts, b"gone");
    db.write_changed(b).unwrap();
    assert_eq!(
        db.get_raw(Table::ChunkRefs, b"same").unwrap().unwrap(),
        b"1"
    );
    assert_eq!(
        db.get_raw(Table::ChunkRefs, b"changed").unwrap().unwrap(),
        b"2"
    );
    assert_eq!(db.get_raw(Table::ChunkRefs, b"new").unwrap().unwrap(), b"3");
    assert!(db.get_raw(Table::Parts, b"gone").unwrap().is_none());
    // Only repeats: nothing to write, and nothing changes.
    let mut b = Batch::new();
    b.put_raw(Table::ChunkRefs, b"same", b"1".to_vec());
    db.write_changed(b).unwrap();
    db.write_changed(Batch::new()).unwrap();
    assert_eq!(
        db.get_raw(Table::ChunkRefs, b"same").unwrap().unwrap(),
        b"1"
    );
}

fn scans_are_ordered_and_paginated(engine: Engine) {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open_with(dir.path(), engine).unwrap();
    let mut batch = Batch::new();
    for i in 0..2500u32 {
        batch.put_raw(
            Table::Versions,
            format!("bucket1/{i:05}").as_bytes(),
            i.to_le_bytes().to_vec(),
        );
    }
    batch.put_raw(Table::Versions, b"bucket0/z", vec![]);
    batch.put_raw(Table::Versions, b"bucket2/a", vec![]);
    db.write(batch).unwrap();

    let mut seen = Vec::new();
    let mut after: Option<Vec<u8>> = None;
    loop {
        let page = db
            .scan_prefix(Table::Versions, b"bucket1/", after.as_deref(), 1000)
            .unwrap();
        assert!(page.items.len() <= 1000);
        after = page.items.last().map(|(k, _)| k.clone());
        seen.extend(page.items.into_iter().map(|(k, _)| k));
        if page.next.is_none() {
            break;
        }
    }
    assert_eq!(seen.len(), 2500);
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "key order");
    assert!(seen.iter().all(|k| k.starts_with(b"bucket1/")));

    let page = db
        .scan(
            Table::Versions,
            b"bucket1/00100",
            Some(b"bucket1/00103"),
            10,
        )
        .unwrap();
    assert_eq!(page.items.len(), 3);
    assert_eq!(page.next, None);
    let page = db.scan(Table::Versions, b"bucket1/", None, 2).unwrap();
    assert_eq!(page.next.as_deref(), Some(&b"bucket1/00002"[..]));
    assert!(matches!(
        db.scan(Table::Versions, b"", None, 0),
        Err(DbError::ZeroLimit)
    ));
    assert_eq!(prefix_end(b"a\xff\xff"), Some(b"b".to_vec()));
    assert_eq!(prefix_end(b"\xff"), None);
}

fn compare_and_set_orders_concurrent_writers(engine: Engine) {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(Db::open_with(dir.path(), engine).unwrap());
    assert!(db
        .compare_and_set(Table::System, b"epoch", None, Some(b"0"))
        .unwrap());
    assert!(!db
        .compare_and_set(Table::System, b"epoch", None, Some(b"9"))
        .unwrap());
    // Eight threads each increment a counter 50 times through CAS retries:
    // no increment may be lost.
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let db = db.clone();
            std::thread::spawn(move || {
                for _ in 0..50 {
                    loop {
                        let cur = db.get_raw(Table::System, b"epoch").unwrap().unwrap();
                        let n: u64 = std::str::from_utf8(&cur).unwrap().parse().unwrap();
                        let next = (n + 1).to_string();
                        if db
                            .compare_and_set(
                                Table::System,
                                b"epoch",
                                Some(&cur),
                                Some(next.as_bytes()),
                            )
                            .unwrap()
                        {
                            break;
                        }
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(
        db.get_raw(Table::System, b"epoch").unwrap().unwrap(),
        b"400"
    );
    assert!(db
        .compare_and_set(Table::System, b"epoch", Some(b"400"), None)
        .unwrap());
    assert!(db.get_raw(Table::System, b"epoch").unwrap().is_none());
}

fn the_change_feed_names_every_write_after_a_position(engine: Engine) {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open_with(dir.path(), engine).unwrap();
    let start = db.changes(Table::Versions, b"b1", None, 100);
    assert!(start.complete && start.keys.is_empty());
    let pos = Some((start.feed, start.head));
    db.put_raw(Table::Versions, b"b1-x", b"1").unwrap();
    db.put_raw(Table::Versions, b"b2-x", b"1").unwrap();
    db.put_raw(Table::Buckets, b"b1-y", b"1").unwrap();
    let mut batch = Batch::new();
    batch.put_raw(Table::Versions, b"b1-z", b"2".to_vec());
    batch.delete(Table::Versions, b"b1-x");
    db.write(batch).unwrap();
    assert!(db
        .compare_and_set(Table::Versions, b"b1-w", None, Some(b"3"))
        .unwrap());
    let c = db.changes(Table::Versions, b"b1", pos, 100);
    assert!(c.complete);
    assert_eq!(
        c.keys,
        vec![
            b"b1-x".to_vec(),
            b"b1-z".to_vec(),
            b"b1-x".to_vec(),
            b"b1-w".to_vec()
        ]
    );
    // From the new head: nothing; over the limit, another feed's position
    // or one from the future: read everything again.
    let now = Some((c.feed, c.head));
    assert!(db.changes(Table::Versions, b"b1", now, 100).keys.is_empty());
    assert!(!db.changes(Table::Versions, b"b1", pos, 3).complete);
    assert!(
        !db.changes(Table::Versions, b"b1", Some((c.feed ^ 2, 0)), 100)
            .complete
    );
    assert!(
        !db.changes(Table::Versions, b"b1", Some((c.feed, c.head + 1)), 100)
            .complete
    );
    // A reopened database is a new feed.
    drop(db);
    let db = Db::open_with(dir.path(), engine).unwrap();
    assert!(!db.changes(Table::Versions, b"b1", now, 100).complete);
}

fn a_directory_of_another_format_is_refused(engine: Engine) {
    let dir = tempfile::tempdir().unwrap();
    drop(Db::open_with(dir.path(), engine).unwrap());
    // Rewrite the stamp as an older gridstore would have left no stamp:
    // records without it.
    {
        let db = Db::open_with(dir.path(), engine).unwrap();
        db.put_raw(Table::Buckets, b"k", b"v").unwrap();
        db.delete(Table::System, b"data_format").unwrap();
    }
    let err = Db::open_with(dir.path(), engine).err().expect("refused");
    assert!(matches!(err, DbError::Format { .. }), "{err}");
    assert!(err.to_string().contains("format"), "{err}");
}

/// A late write (a quorum write's straggler, a read repair) never puts an
/// older state of a record back over a newer one; newer ones, deletes and
/// tables not merged by revision are written as asked.
fn write_newest_keeps_the_newest_state(engine: Engine) {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open_with(dir.path(), engine).unwrap();
    let keys = metadata::sealed::RecordKeys::new(&[7; 32]);
    let sealed = |rev: u64, name: &str| keys.seal(Table::Buckets, b"k", rev, &bucket(name));
    let put = |v: Vec<u8>| {
        let mut b = Batch::new();
        b.put_raw(Table::Buckets, b"k", v);
        db.write_if(b, metadata::replicated::replaces).unwrap()
    };
    // Sealing draws a fresh nonce: each state is sealed once.
    let (ten, twenty, thirty) = (
        sealed(10, "ten"),
        sealed(20, "twenty"),
        sealed(30, "thirty"),
    );
    assert_eq!(put(ten.clone()), 0);
    assert_eq!(put(twenty.clone()), 0);
    // The revision-10 state arriving late is dropped.
    assert_eq!(put(ten), 1);
    assert_eq!(db.get_raw(Table::Buckets, b"k").unwrap(), Some(twenty));
    assert_eq!(put(thirty.clone()), 0);
    assert_eq!(db.get_raw(Table::Buckets, b"k").unwrap(), Some(thirty));
    // A delete is applied (purges of old tombstones).
    let mut b = Batch::new();
    b.delete(Table::Buckets, b"k");
    assert_eq!(db.write_if(b, metadata::replicated::replaces).unwrap(), 0);
    assert!(db.get_raw(Table::Buckets, b"k").unwrap().is_none());
    // Chunk references carry no revision: written as asked.
    let mut b = Batch::new();
    b.put_raw(Table::ChunkRefs, b"r", b"two".to_vec());
    db.write_if(b, metadata::replicated::replaces).unwrap();
    let mut b = Batch::new();
    b.put_raw(Table::ChunkRefs, b"r", b"one".to_vec());
    assert_eq!(db.write_if(b, metadata::replicated::replaces).unwrap(), 0);
    assert_eq!(
        db.get_raw(Table::ChunkRefs, b"r").unwrap(),
        Some(b"one".to_vec())
    );
}

/// Concurrent writers (committed in groups by engines that group):
/// every batch lands whole, and conditional writes in one group see the
/// writes grouped before them.
fn concurrent_batches_land_whole(engine: Engine) {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(Db::open_with(dir.path(), engine).unwrap());
    let threads: Vec<_> = (0..8u32)
        .map(|t| {
            let db = db.clone();
            std::thread::spawn(move || {
                for i in 0..100u32 {
                    let mut b = Batch::new();
                    let k = format!("{t}-{i}");
                    b.put_raw(Table::Parts, k.as_bytes(), vec![1]).put_raw(
                        Table::ChunkRefs,
                        k.as_bytes(),
                        vec![2],
                    );
                    db.write(b).unwrap();
                    // Every thread bumps one shared key: none is lost.
                    loop {
                        let cur = db.get_raw(Table::System, b"n").unwrap();
                        let n = cur
                            .as_deref()
                            .map_or(0, |c| u32::from_le_bytes(c.try_into().unwrap()));
                        if db
                            .compare_and_set(
                                Table::System,
                                b"n",
                                cur.as_deref(),
                                Some(&(n + 1).to_le_bytes()),
                            )
                            .unwrap()
                        {
                            break;
                        }
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    for table in [Table::Parts, Table::ChunkRefs] {
        let page = db.scan(table, b"", None, 10_000).unwrap();
        assert_eq!(page.items.len(), 800, "{table:?}");
    }
    assert_eq!(
        db.get_raw(Table::System, b"n").unwrap(),
        Some(800u32.to_le_bytes().to_vec())
    );
}

/// A directory is opened by the engine that keeps it; asked for another,
/// it is refused and left as it was.
fn the_engine_that_keeps_a_directory_opens_it(engine: Engine) {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = Db::open_with(dir.path(), engine).unwrap();
        db.put_raw(Table::Buckets, b"k", b"v").unwrap();
    }
    assert_eq!(Engine::of_dir(dir.path()), Some(engine));
    let db = Db::open(dir.path()).unwrap();
    assert_eq!(db.engine(), engine);
    assert_eq!(
        db.get_raw(Table::Buckets, b"k").unwrap(),
        Some(b"v".to_vec())
    );
    drop(db);
    for other in [Engine::Redb, Engine::RocksDb] {
        if other == engine {
            continue;
        }
        let err = Db::open_with(dir.path(), other).err().expect("refused");
        assert!(matches!(err, DbError::EngineMismatch { .. }), "{err}");
    }
    assert_eq!(Engine::of_dir(dir.path()), Some(engine));
}

/// Writes acknowledged before the process is killed (SIGKILL, mid-write
/// of the next ones) are all there when the directory is opened again.
fn acknowledged_writes_survive_a_kill(engine: Engine) {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "writer_until_killed",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("GRIDSTORE_DB_WRITER_DIR", dir.path())
        .env("GRIDSTORE_DB_WRITER_ENGINE", engine.name())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut acked = Vec::new();
    for line in out.lines() {
        let line = line.unwrap();
        if let Some(n) = line.strip_prefix("acked ") {
            acked.push(n.parse::<u32>().unwrap());
            if acked.len() == 400 {
                break;
            }
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(acked.len(), 400, "the writer stopped early");
    let db = Db::open_with(dir.path(), engine).unwrap();
    for n in acked {
        let k = format!("{n:08}");
        assert_eq!(
            db.get_raw(Table::Versions, k.as_bytes()).unwrap(),
            Some(vec![7; 512]),
            "acknowledged write {n} lost"
        );
    }
}

/// The child of `acknowledged_writes_survive_a_kill`: four threads write
/// until killed, printing each write once it returns.
#[test]
fn writer_until_killed() {
    let (Ok(dir), Ok(engine)) = (
        std::env::var("GRIDSTORE_DB_WRITER_DIR"),
        std::env::var("GRIDSTORE_DB_WRITER_ENGINE"),
    ) else {
        return; // Run as a test of its own: nothing to do.
    };
    let engine = Engine::compiled()
        .into_iter()
        .find(|e| e.name() == engine)
        .unwrap();
    let db = Arc::new(Db::open_with(std::path::Path::new(&dir), engine).unwrap());
    let next = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (db, next) = (db.clone(), next.clone());
            std::thread::spawn(move || loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let mut b = Batch::new();
                b.put_raw(Table::Versions, format!("{n:08}").as_bytes(), vec![7; 512]);
                db.write(b).unwrap();
                println!("acked {n}");
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
}

/// A build without RocksDB meets a directory RocksDB keeps: a clear
/// refusal that names the feature, and nothing written.
#[cfg(not(feature = "rocksdb"))]
#[test]
fn a_rocksdb_directory_needs_the_rocksdb_build() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("CURRENT"), "MANIFEST-000005\n").unwrap();
    let err = Db::open(dir.path()).err().expect("refused");
    assert!(matches!(err, DbError::EngineMissing { .. }), "{err}");
    assert!(err.to_string().contains("--features rocksdb"), "{err}");
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(left.len(), 1, "only CURRENT");
}

/// One module of tests per engine (`redb::…`, `rocksdb::…`), each test
/// one of the functions above on that engine.
macro_rules! on_every_engine {
    ($($test:ident),* $(,)?) => {
        mod redb {
            $(#[test]
            fn $test() {
                super::$test(metadata::db::Engine::Redb);
            })*
        }
        #[cfg(feature = "rocksdb")]
        mod rocksdb {
            $(#[test]
            fn $test() {
                super::$test(metadata::db::Engine::RocksDb);
            })*
        }
    };
}

on_every_engine!(
    typed_get_put_delete_and_reopen,
    corrupt_record_is_a_typed_error,
    batches_are_atomic_across_tables,
    write_changed_applies_what_differs,
    scans_are_ordered_and_paginated,
    compare_and_set_orders_concurrent_writers,
    the_change_feed_names_every_write_after_a_position,
    a_directory_of_another_format_is_refused,
    write_newest_keeps_the_newest_state,
    concurrent_batches_land_whole,
    the_engine_that_keeps_a_directory_opens_it,
    acknowledged_writes_survive_a_kill,
);
