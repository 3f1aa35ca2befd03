//! A node's local metadata store: RocksDB with one column family per table,
//! behind a small typed API. Every write is synced to the WAL before it
//! returns, because a node acknowledges a write only when it is durable.

use crate::record::{Record, RecordError};
use rocksdb::{
    BoundColumnFamily, ColumnFamilyDescriptor, Direction, IteratorMode, MultiThreaded, Options,
    TransactionDB, WriteOptions,
};
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

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DbError {
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
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
#[derive(Debug, Clone, PartialEq, Eq)]
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
    db: TransactionDB<MultiThreaded>,
    // Serialises compare-and-set against itself; plain writes need no lock
    // (RocksDB orders them), CAS needs read-compare-write to be atomic.
    cas: Mutex<()>,
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
    pub fn open(path: &Path) -> Result<Db, DbError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        // Manifests and refs are small and hot: keep the defaults modest so
        // a farm's small machine is not starved.
        opts.set_max_open_files(512);
        opts.set_keep_log_file_num(4);
        let cfs = Table::ALL
            .iter()
            .map(|t| ColumnFamilyDescriptor::new(t.name(), Options::default()));
        let db = TransactionDB::open_cf_descriptors(&opts, &Default::default(), path, cfs)?;
        let db = Db {
            db,
            cas: Mutex::new(()),
            changes: Mutex::new(ChangeFeed {
                id: rand::random::<u64>() | 1,
                head: 0,
                log: Default::default(),
            }),
        };
        db.check_format()?;
        Ok(db)
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

    fn cf(&self, table: Table) -> Arc<BoundColumnFamily<'_>> {
        self.db
            .cf_handle(table.name())
            .expect("every table's column family is created at open")
    }

    fn sync() -> WriteOptions {
        let mut w = WriteOptions::default();
        w.set_sync(true);
        w
    }

    pub fn get_raw(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, DbError> {
        Ok(self.db.get_cf(&self.cf(table), key)?)
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
        let txn = self.db.transaction_opt(&Self::sync(), &Default::default());
        txn.put_cf(&self.cf(table), key, value)?;
        txn.commit()?;
        self.fed([(table, key)]);
        Ok(())
    }

    pub fn delete(&self, table: Table, key: &[u8]) -> Result<(), DbError> {
        let txn = self.db.transaction_opt(&Self::sync(), &Default::default());
        txn.delete_cf(&self.cf(table), key)?;
        txn.commit()?;
        self.fed([(table, key)]);
        Ok(())
    }

    /// Apply every write of `batch` or none.
    pub fn write(&self, batch: Batch) -> Result<(), DbError> {
        let txn = self.db.transaction_opt(&Self::sync(), &Default::default());
        for (table, key, value) in &batch.ops {
            match value {
                Some(v) => txn.put_cf(&self.cf(*table), key, v)?,
                None => txn.delete_cf(&self.cf(*table), key)?,
            }
        }
        txn.commit()?;
        self.fed(batch.ops.iter().map(|(t, k, _)| (*t, k.as_slice())));
        Ok(())
    }

    /// [`Db::write`], except that a put over a value already held happens
    /// only if `replaces(table, new, held)`: checked and written in one
    /// transaction, each such row locked until the commit, so two writers
    /// of one key are ordered, never interleaved. Returns how many puts
    /// were skipped.
    pub fn write_if(
        &self,
        batch: Batch,
        replaces: impl Fn(Table, &[u8], &[u8]) -> bool,
    ) -> Result<usize, DbError> {
        let txn = self.db.transaction_opt(&Self::sync(), &Default::default());
        let mut applied: Vec<(Table, &[u8])> = Vec::with_capacity(batch.ops.len());
        let mut dropped = 0;
        for (table, key, value) in &batch.ops {
            let cf = self.cf(*table);
            match value {
                Some(v) => {
                    let held = txn.get_for_update_cf(&cf, key, true)?;
                    if held.is_some_and(|h| !replaces(*table, v, &h)) {
                        dropped += 1;
                        continue;
                    }
                    txn.put_cf(&cf, key, v)?
                }
                None => txn.delete_cf(&cf, key)?,
            }
            applied.push((*table, key.as_slice()));
        }
        txn.commit()?;
        self.fed(applied);
        Ok(dropped)
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
        let cf = self.cf(table);
        let iter = self
            .db
            .iterator_cf(&cf, IteratorMode::From(start, Direction::Forward));
        let mut items = Vec::new();
        for kv in iter {
            let (k, v) = kv?;
            if end.is_some_and(|e| k.as_ref() >= e) {
                return Ok(Page { items, next: None });
            }
            if items.len() == limit {
                return Ok(Page {
                    items,
                    next: Some(k.to_vec()),
                });
            }
            items.push((k.to_vec(), v.to_vec()));
        }
        Ok(Page { items, next: None })
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
        let _guard = self.cas.lock().unwrap_or_else(|p| p.into_inner());
        let txn = self.db.transaction_opt(&Self::sync(), &Default::default());
        let cf = self.cf(table);
        let current = txn.get_for_update_cf(&cf, key, true)?;
        if current.as_deref() != expected {
            return Ok(false);
        }
        match new {
            Some(v) => txn.put_cf(&cf, key, v)?,
            None => txn.delete_cf(&cf, key)?,
        }
        txn.commit()?;
        self.fed([(table, key)]);
        Ok(true)
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
