//! RocksDB, one column family per table, every write a pessimistic
//! transaction synced to the write-ahead log (whose group commit shares
//! one fsync between concurrent writers).

use super::{apply, storage, Cond, Op, Store, Writes};
use crate::db::{DbError, Page, Table};
use rocksdb::{
    BoundColumnFamily, ColumnFamilyDescriptor, Direction, IteratorMode, MultiThreaded, Options,
    TransactionDB, WriteOptions,
};
use std::path::Path;
use std::sync::{Arc, Mutex};

pub(crate) struct RocksStore {
    db: TransactionDB<MultiThreaded>,
    // Serialises compare-and-set commits: many writers of one hot key
    // would otherwise wait on its row lock and time out.
    cas: Mutex<()>,
}

impl RocksStore {
    pub fn open(dir: &Path) -> Result<RocksStore, DbError> {
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
        let db = TransactionDB::open_cf_descriptors(&opts, &Default::default(), dir, cfs)
            .map_err(storage)?;
        Ok(RocksStore {
            db,
            cas: Mutex::new(()),
        })
    }

    fn cf(&self, table: Table) -> Arc<BoundColumnFamily<'_>> {
        self.db
            .cf_handle(table.name())
            .expect("every table's column family is created at open")
    }
}

/// One pessimistic transaction of the store.
struct RocksTxn<'a> {
    store: &'a RocksStore,
    txn: &'a rocksdb::Transaction<'a, TransactionDB<MultiThreaded>>,
}

impl Writes for RocksTxn<'_> {
    fn held(&mut self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, DbError> {
        // Locks the row until the commit: the check and the write are one
        // step for every other writer.
        self.txn
            .get_for_update_cf(&self.store.cf(table), key, true)
            .map_err(storage)
    }

    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) -> Result<(), DbError> {
        self.txn
            .put_cf(&self.store.cf(table), key, value)
            .map_err(storage)
    }

    fn delete(&mut self, table: Table, key: &[u8]) -> Result<(), DbError> {
        self.txn
            .delete_cf(&self.store.cf(table), key)
            .map_err(storage)
    }
}

impl Store for RocksStore {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, DbError> {
        self.db.get_cf(&self.cf(table), key).map_err(storage)
    }

    fn scan(
        &self,
        table: Table,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Page, DbError> {
        let cf = self.cf(table);
        let iter = self
            .db
            .iterator_cf(&cf, IteratorMode::From(start, Direction::Forward));
        let mut items = Vec::new();
        for kv in iter {
            let (k, v) = kv.map_err(storage)?;
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

    fn commit(&self, ops: Vec<Op>) -> Result<Vec<bool>, DbError> {
        let _cas = ops
            .iter()
            .any(|op| matches!(op.cond, Cond::Holds(_)))
            .then(|| self.cas.lock().unwrap_or_else(|p| p.into_inner()));
        let mut sync = WriteOptions::default();
        sync.set_sync(true);
        let txn = self.db.transaction_opt(&sync, &Default::default());
        let applied = apply(
            &mut RocksTxn {
                store: self,
                txn: &txn,
            },
            &ops,
        )?;
        txn.commit().map_err(storage)?;
        Ok(applied)
    }
}
