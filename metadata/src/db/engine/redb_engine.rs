//! The pure-Rust engine: one redb file per node, every table a redb table
//! of byte keys and values.
//!
//! redb runs one write transaction at a time and each durable commit costs
//! an fsync, so writers that arrive together commit together: while one
//! group commits, the next queues; when it is done, one waiting writer
//! takes the whole queue and commits it in one transaction, and one fsync
//! acknowledges them all (each commit still applies all of its writes or
//! none, in arrival order, and sees the ones before it). This is the group
//! commit RocksDB does in its write-ahead log.

use super::{apply, storage, Op, Store, Writes};
use crate::db::{DbError, Page, Table};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

pub(crate) const FILE_NAME: &str = "metadata.redb";

/// Pages redb keeps in memory. Records are small and a farm's machine is
/// small; the OS page cache holds the rest.
const CACHE_BYTES: usize = 16 << 20;

type Def = TableDefinition<'static, &'static [u8], &'static [u8]>;

fn def(table: Table) -> Def {
    TableDefinition::new(table.name())
}

/// The result a group's leader leaves for each of its commits.
type Slot = Arc<Mutex<Option<Result<Vec<bool>, DbError>>>>;

struct Pending {
    ops: Vec<Op>,
    slot: Slot,
}

pub(crate) struct RedbStore {
    db: Database,
    writers: Mutex<Writers>,
    /// Signalled when a group is done.
    group_done: Condvar,
}

#[derive(Default)]
struct Writers {
    /// Commits waiting for the next group.
    queue: Vec<Pending>,
    /// A group is committing.
    committing: bool,
}

/// Ends a leader's turn, even if it panics: every commit of its group
/// gets an answer, and the next group may start.
struct Turn<'a> {
    store: &'a RedbStore,
    slots: Vec<Slot>,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        for slot in &self.slots {
            let mut s = lock(slot);
            if s.is_none() {
                *s = Some(Err(DbError::Storage(Arc::new(std::io::Error::other(
                    "the commit grouped with this one failed before writing it",
                )))));
            }
        }
        lock(&self.store.writers).committing = false;
        self.store.group_done.notify_all();
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl RedbStore {
    pub fn open(dir: &Path) -> Result<RedbStore, DbError> {
        std::fs::create_dir_all(dir).map_err(storage)?;
        let db = redb::Builder::new()
            .set_cache_size(CACHE_BYTES)
            .create(dir.join(FILE_NAME))
            .map_err(storage)?;
        // Create every table now so readers never meet a missing one.
        let txn = db.begin_write().map_err(storage)?;
        for t in Table::ALL {
            txn.open_table(def(t)).map_err(storage)?;
        }
        txn.commit().map_err(storage)?;
        Ok(RedbStore {
            db,
            writers: Mutex::default(),
            group_done: Condvar::new(),
        })
    }

    /// Run `group` in one transaction and one fsync; the result of each.
    fn run_group(&self, group: &[Pending]) -> Result<Vec<Vec<bool>>, DbError> {
        let mut txn = self.db.begin_write().map_err(storage)?;
        txn.set_durability(Durability::Immediate).map_err(storage)?;
        let results = {
            let mut tables = Tables {
                txn: &txn,
                open: (0..Table::ALL.len()).map(|_| None).collect(),
            };
            group
                .iter()
                .map(|p| apply(&mut tables, &p.ops))
                .collect::<Result<Vec<_>, _>>()?
        };
        txn.commit().map_err(storage)?;
        Ok(results)
    }
}

/// The tables of one write transaction, each opened when first written:
/// redb lets a transaction hold one handle per table.
struct Tables<'t> {
    txn: &'t redb::WriteTransaction,
    open: Vec<Option<redb::Table<'t, &'static [u8], &'static [u8]>>>,
}

impl<'t> Tables<'t> {
    fn table(
        &mut self,
        table: Table,
    ) -> Result<&mut redb::Table<'t, &'static [u8], &'static [u8]>, DbError> {
        let slot = &mut self.open[table.index()];
        if slot.is_none() {
            *slot = Some(self.txn.open_table(def(table)).map_err(storage)?);
        }
        Ok(slot.as_mut().expect("opened above"))
    }
}

impl Writes for Tables<'_> {
    fn held(&mut self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, DbError> {
        let t = self.table(table)?;
        let held = t.get(key).map_err(storage)?.map(|v| v.value().to_vec());
        Ok(held)
    }

    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) -> Result<(), DbError> {
        self.table(table)?.insert(key, value).map_err(storage)?;
        Ok(())
    }

    fn delete(&mut self, table: Table, key: &[u8]) -> Result<(), DbError> {
        self.table(table)?.remove(key).map_err(storage)?;
        Ok(())
    }
}

impl Store for RedbStore {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, DbError> {
        let txn = self.db.begin_read().map_err(storage)?;
        let t = txn.open_table(def(table)).map_err(storage)?;
        let value = t.get(key).map_err(storage)?.map(|v| v.value().to_vec());
        Ok(value)
    }

    fn scan(
        &self,
        table: Table,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Page, DbError> {
        let txn = self.db.begin_read().map_err(storage)?;
        let t = txn.open_table(def(table)).map_err(storage)?;
        let upper = match end {
            Some(e) if e <= start => return Ok(Page::default()),
            Some(e) => std::ops::Bound::Excluded(e),
            None => std::ops::Bound::Unbounded,
        };
        let mut items = Vec::new();
        for kv in t
            .range((std::ops::Bound::Included(start), upper))
            .map_err(storage)?
        {
            let (k, v) = kv.map_err(storage)?;
            if items.len() == limit {
                return Ok(Page {
                    items,
                    next: Some(k.value().to_vec()),
                });
            }
            items.push((k.value().to_vec(), v.value().to_vec()));
        }
        Ok(Page { items, next: None })
    }

    fn commit(&self, ops: Vec<Op>) -> Result<Vec<bool>, DbError> {
        let slot: Slot = Arc::default();
        let mut writers = lock(&self.writers);
        writers.queue.push(Pending {
            ops,
            slot: slot.clone(),
        });
        loop {
            if let Some(done) = lock(&slot).take() {
                return done;
            }
            if writers.committing {
                writers = self
                    .group_done
                    .wait(writers)
                    .unwrap_or_else(|p| p.into_inner());
                continue;
            }
            // Lead: commit everything queued, this writer's commit with it.
            writers.committing = true;
            let group = std::mem::take(&mut writers.queue);
            drop(writers);
            let turn = Turn {
                store: self,
                slots: group.iter().map(|p| p.slot.clone()).collect(),
            };
            match self.run_group(&group) {
                Ok(results) => {
                    for (slot, r) in turn.slots.iter().zip(results) {
                        *lock(slot) = Some(Ok(r));
                    }
                }
                Err(e) => {
                    for slot in &turn.slots {
                        *lock(slot) = Some(Err(e.clone()));
                    }
                }
            }
            drop(turn);
            writers = lock(&self.writers);
        }
    }
}
