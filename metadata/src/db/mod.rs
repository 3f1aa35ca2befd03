//! A node's local metadata store: one table per record kind, behind a
//! small typed API, kept by one of the [`Engine`]s. Every write is on disk
//! before it returns, because a node acknowledges a write only when it is
//! durable.

mod engine;

use crate::record::{Record, RecordError};
use engine::{Cond, Op, Store};
pub use engine::{Engine, Replaces};
use std::path::Path;
use std::sync::{Arc, Mutex};

/// The tables. Keys within a table sort bytewise; each table's key layout
/// is owned by the code that writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Table {
    Buckets,
    /// Object versions (manifests), keyed by bucket id, key, version.
    Versions,
    Uploads,
    Parts,
    /// Chunk reference records held by this node.
    ChunkRefs,
    /// Cluster map, node identity, and other single records.
    System,
    /// Gateway users and their access keys (secrets sealed by gateways).
    Users,
    /// WebDAV locks, shared by every gateway (a lock taken through one
    /// gateway must stop a write through another).
    Locks,
    /// Data-mining jobs: one record per job (its spec and progress).
    Jobs,
    /// The tasks of those jobs, keyed under their job's key.
    JobTasks,
}

impl Table {
    pub const ALL: [Table; 10] = [
        Table::Buckets,
        Table::Versions,
        Table::Uploads,
        Table::Parts,
        Table::ChunkRefs,
        Table::System,
        Table::Users,
        Table::Locks,
        Table::Jobs,
        Table::JobTasks,
    ];

    /// Position in [`Table::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    pub fn name(&self) -> &'static str {
        match self {
            Table::Buckets => "buckets",
            Table::Versions => "versions",
            Table::Uploads => "uploads",
            Table::Parts => "parts",
            Table::ChunkRefs => "chunk_refs",
            Table::System => "system",
            Table::Users => "users",
            Table::Locks => "locks",
            Table::Jobs => "jobs",
            Table::JobTasks => "job_tasks",
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum DbError {
    /// The engine failed to read or write (I/O error, corrupt file).
    #[error("metadata store: {0}")]
    Storage(#[source] Arc<dyn std::error::Error + Send + Sync>),
    /// The directory is kept by an engine this build does not have.
    #[error(
        "{dir}: metadata kept by {engine}, which this gridstore was built without \
         (build with `--features {engine}`, or move the directory away)"
    )]
    EngineMissing { dir: String, engine: Engine },
    /// The directory is kept by another engine than the one asked for.
    #[error("{dir}: metadata kept by {found}, not {wanted}")]
    EngineMismatch {
        dir: String,
        found: Engine,
        wanted: Engine,
    },
    #[error("record in {table}: {source}")]
    Record {
        table: &'static str,
        source: RecordError,
    },
    #[error("scan limit must be at least 1")]
    ZeroLimit,
    /// The directory was written by a gridstore whose records this one
    /// does not read (or reads differently): refused rather than mixed.
    #[error(
        "metadata written in data format {found}, this gridstore reads format {DATA_FORMAT}: \
         move the data directory away or run the gridstore that wrote it"
    )]
    Format { found: String },
}

/// The format of what a node stores: 2 = sealed records under hashed keys;
/// 3 = records, chunk references and the cluster map signed by the owner
/// (a node would refuse a format-2 peer's unsigned records and maps).
/// Bumped for any change an older reader would misread.
pub const DATA_FORMAT: u64 = 3;
const FORMAT_KEY: &[u8] = b"data_format";

/// One page of a range scan, and where the next page starts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Page {
    pub items: Vec<(Vec<u8>, Vec<u8>)>,
    /// First key of the next page; `None` when the range is exhausted.
    pub next: Option<Vec<u8>>,
}

/// An atomic group of writes across tables.
#[derive(Default)]
pub struct Batch {
    ops: Vec<(Table, Vec<u8>, Option<Vec<u8>>)>,
}

impl Batch {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn put<R: Record>(&mut self, table: Table, key: &[u8], record: &R) -> &mut Self {
        self.put_raw(table, key, record.encode_record())
    }

    pub fn put_raw(&mut self, table: Table, key: &[u8], value: Vec<u8>) -> &mut Self {
        self.ops.push((table, key.to_vec(), Some(value)));
        self
    }

    pub fn delete(&mut self, table: Table, key: &[u8]) -> &mut Self {
        self.ops.push((table, key.to_vec(), None));
        self
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

pub struct Db {
    store: Box<dyn Store>,
    engine: Engine,
    changes: Mutex<ChangeFeed>,
}

/// The tables whose writes the change feed records.
pub const FED_TABLES: [Table; 1] = [Table::Versions];
/// Writes the change feed remembers; a caller further behind reads again.
const FEED_CAPACITY: usize = 262_144;

/// Which keys of the fed tables were written, in order, since this process
/// opened the database: what lets a gateway keep a listing of a bucket
/// current without reading the bucket again (see `cluster::list_index`).
/// It lives in memory: a reader holding a position from another process
/// (another `feed` id) starts over. A key is appended after its write is
/// committed, so a position read before a scan is never past a write the
/// scan missed.
struct ChangeFeed {
    id: u64,
    head: u64,
    /// (sequence, table, key), oldest first, at most `FEED_CAPACITY`.
    log: std::collections::VecDeque<(u64, Table, Vec<u8>)>,
}

/// What changed under one key prefix since a position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changes {
    /// The feed (one per process that opened the database).
    pub feed: u64,
    /// The position to ask from next time.
    pub head: u64,
    /// Keys written after the position asked for, oldest first (repeats
    /// possible).
    pub keys: Vec<Vec<u8>>,
    /// False when the position was from another feed, or is older than
    /// what the feed remembers, or more than `limit` keys changed: the
    /// caller must read everything again.
    pub complete: bool,
}

impl Db {
    /// Open the metadata in `path`, with the engine that keeps it, or
    /// create it with [`Engine::DEFAULT`].
    pub fn open(path: &Path) -> Result<Db, DbError> {
        Db::open_with(path, Engine::of_dir(path).unwrap_or(Engine::DEFAULT))
    }

    /// Open or create the metadata in `path` with `engine`; refused if
    /// another engine keeps it.
    pub fn open_with(path: &Path, engine: Engine) -> Result<Db, DbError> {
        let dir = || path.display().to_string();
        if let Some(found) = Engine::of_dir(path).filter(|f| *f != engine) {
            return Err(DbError::EngineMismatch {
                dir: dir(),
                found,
                wanted: engine,
            });
        }
        let store: Box<dyn Store> = match engine {
            Engine::Redb => Box::new(engine::redb_engine::RedbStore::open(path)?),
            #[cfg(feature = "rocksdb")]
            Engine::RocksDb => Box::new(engine::rocksdb_engine::RocksStore::open(path)?),
            #[cfg(not(feature = "rocksdb"))]
            Engine::RocksDb => return Err(DbError::EngineMissing { dir: dir(), engine }),
        };
        let db = Db {
            store,
            engine,
            changes: Mutex::new(ChangeFeed {
                id: rand::random::<u64>() | 1,
                head: 0,
                log: Default::default(),
            }),
        };
        db.check_format()?;
        Ok(db)
    }

    /// The engine keeping this database.
    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// Stamp a new directory with [`DATA_FORMAT`]; refuse one that holds
    /// anything without that stamp.
    fn check_format(&self) -> Result<(), DbError> {
        match self.get_raw(Table::System, FORMAT_KEY)? {
            Some(v) if v == DATA_FORMAT.to_be_bytes() => Ok(()),
            Some(v) => Err(DbError::Format {
                found: <[u8; 8]>::try_from(v.as_slice())
                    .map(|b| u64::from_be_bytes(b).to_string())
                    .unwrap_or_else(|_| "unknown".into()),
            }),
            None => {
                for t in Table::ALL {
                    if !self.scan(t, &[], None, 1)?.items.is_empty() {
                        return Err(DbError::Format {
                            found: "1 (unmarked)".into(),
                        });
                    }
                }
                self.put_raw(Table::System, FORMAT_KEY, &DATA_FORMAT.to_be_bytes())
            }
        }
    }

    pub fn get_raw(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, DbError> {
        self.store.get(table, key)
    }

    pub fn get<R: Record>(&self, table: Table, key: &[u8]) -> Result<Option<R>, DbError> {
        match self.get_raw(table, key)? {
            None => Ok(None),
            Some(v) => R::decode_record(&v)
                .map(Some)
                .map_err(|source| DbError::Record {
                    table: table.name(),
                    source,
                }),
        }
    }

    pub fn put<R: Record>(&self, table: Table, key: &[u8], record: &R) -> Result<(), DbError> {
        self.put_raw(table, key, &record.encode_record())
    }

    pub fn put_raw(&self, table: Table, key: &[u8], value: &[u8]) -> Result<(), DbError> {
        let mut b = Batch::new();
        b.put_raw(table, key, value.to_vec());
        self.write(b)
    }

    pub fn delete(&self, table: Table, key: &[u8]) -> Result<(), DbError> {
        let mut b = Batch::new();
        b.delete(table, key);
        self.write(b)
    }

    /// Apply every write of `batch` or none.
    pub fn write(&self, batch: Batch) -> Result<(), DbError> {
        self.commit(batch, Cond::Always).map(|_| ())
    }

    /// [`Db::write`], except that a put over a value already held happens
    /// only if `replaces(table, new, held)`: checked and written in one
    /// transaction, so two writers of one key are ordered, never
    /// interleaved. Returns how many puts were skipped.
    pub fn write_if(&self, batch: Batch, replaces: Replaces) -> Result<usize, DbError> {
        let applied = self.commit(batch, Cond::Replaces(replaces))?;
        Ok(applied.iter().filter(|a| !**a).count())
    }

    /// Commit `batch` with every write under `cond`; feed what happened.
    fn commit(&self, batch: Batch, cond: Cond) -> Result<Vec<bool>, DbError> {
        let ops: Vec<Op> = batch
            .ops
            .into_iter()
            .map(|(table, key, value)| Op {
                table,
                key,
                value,
                cond: cond.clone(),
            })
            .collect();
        // The fed tables' writes, by position, to feed those that happen.
        let fed: Vec<(usize, Table, Vec<u8>)> = ops
            .iter()
            .enumerate()
            .filter(|(_, op)| FED_TABLES.contains(&op.table))
            .map(|(i, op)| (i, op.table, op.key.clone()))
            .collect();
        let applied = self.store.commit(ops)?;
        self.fed(
            fed.iter()
                .filter(|(i, _, _)| applied.get(*i).copied().unwrap_or(false))
                .map(|(_, t, k)| (*t, k.as_slice())),
        );
        Ok(applied)
    }

    /// Append committed writes of the fed tables to the change feed.
    fn fed<'a>(&self, writes: impl IntoIterator<Item = (Table, &'a [u8])>) {
        let mut writes = writes
            .into_iter()
            .filter(|(t, _)| FED_TABLES.contains(t))
            .peekable();
        if writes.peek().is_none() {
            return;
        }
        let mut feed = self.changes.lock().unwrap_or_else(|p| p.into_inner());
        for (t, k) in writes {
            feed.head += 1;
            let seq = feed.head;
            feed.log.push_back((seq, t, k.to_vec()));
            if feed.log.len() > FEED_CAPACITY {
                feed.log.pop_front();
            }
        }
    }

    /// The keys of `table` starting with `prefix` written after position
    /// `since` of feed `feed` (`None`: only where the feed is now), at most
    /// `limit` of them.
    pub fn changes(
        &self,
        table: Table,
        prefix: &[u8],
        since: Option<(u64, u64)>,
        limit: usize,
    ) -> Changes {
        let feed = self.changes.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Changes {
            feed: feed.id,
            head: feed.head,
            keys: Vec::new(),
            complete: true,
        };
        let Some((id, pos)) = since else {
            return out;
        };
        let oldest = feed.log.front().map_or(feed.head + 1, |e| e.0);
        if id != feed.id || pos > feed.head || pos + 1 < oldest {
            out.complete = false;
            return out;
        }
        let first = feed.log.partition_point(|e| e.0 <= pos);
        for (_, t, k) in feed.log.range(first..) {
            if *t == table && k.starts_with(prefix) {
                if out.keys.len() == limit {
                    out.keys.clear();
                    out.complete = false;
                    return out;
                }
                out.keys.push(k.clone());
            }
        }
        out
    }

    /// [`write`](Self::write) without the puts of values already stored
    /// as they are; nothing left, nothing written (no log sync). For
    /// writes that peers repeat: after a map change every surviving home
    /// of a chunk gives its new home the same references.
    pub fn write_changed(&self, mut batch: Batch) -> Result<(), DbError> {
        let mut kept = Vec::with_capacity(batch.ops.len());
        for (table, key, value) in batch.ops.drain(..) {
            if let Some(v) = &value {
                if self.get_raw(table, &key)?.as_deref() == Some(v.as_slice()) {
                    continue;
                }
            }
            kept.push((table, key, value));
        }
        if kept.is_empty() {
            return Ok(());
        }
        self.write(Batch { ops: kept })
    }

    /// Keys in `[start, end)` (`end = None`: to the end of the table) in key
    /// order, at most `limit` of them. Pass `next` back as `start` for the
    /// following page.
    pub fn scan(
        &self,
        table: Table,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Page, DbError> {
        if limit == 0 {
            return Err(DbError::ZeroLimit);
        }
        self.store.scan(table, start, end, limit)
    }

    /// Every key starting with `prefix`, paginated like `scan`.
    pub fn scan_prefix(
        &self,
        table: Table,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Page, DbError> {
        let end = prefix_end(prefix);
        let start = start_after.map_or_else(
            || prefix.to_vec(),
            |k| {
                let mut s = k.to_vec();
                s.push(0);
                s
            },
        );
        self.scan(table, &start, end.as_deref(), limit)
    }

    /// Set `key` to `new` (`None` deletes) only if its current value is
    /// `expected` (`None`: absent). Returns whether the swap happened. This
    /// is the primitive quorum writes use to order updates of one record.
    pub fn compare_and_set(
        &self,
        table: Table,
        key: &[u8],
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool, DbError> {
        let applied = self.store.commit(vec![Op {
            table,
            key: key.to_vec(),
            value: new.map(<[u8]>::to_vec),
            cond: Cond::Holds(expected.map(<[u8]>::to_vec)),
        }])?;
        let swapped = applied.first().copied().unwrap_or(false);
        if swapped {
            self.fed([(table, key)]);
        }
        Ok(swapped)
    }
}

/// The smallest key greater than every key starting with `prefix`, or
/// `None` if there is none (prefix of all 0xff).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}
