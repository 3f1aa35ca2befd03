//! The key-value engines a node's metadata can live in, behind the one
//! trait [`crate::db::Db`] drives. Every engine gives the same promises:
//! tables are separate key spaces sorted bytewise; a commit applies all of
//! its writes or none and is on disk before it returns; a conditional
//! write is checked against what the commit itself sees, so two writers of
//! one key are ordered, never interleaved.

use crate::db::{DbError, Page, Table};

pub(crate) mod redb_engine;
#[cfg(feature = "rocksdb")]
pub(crate) mod rocksdb_engine;

/// Which engine keeps a metadata directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Engine {
    /// redb: pure Rust, one file (`metadata.redb`), concurrent commits
    /// grouped into one fsync. Built always; new directories get it
    /// unless the build has the `rocksdb` feature.
    Redb,
    /// RocksDB, linked from the system's librocksdb (the `rocksdb` cargo
    /// feature).
    RocksDb,
}

impl Engine {
    /// What a directory with nothing in it is created with.
    pub const DEFAULT: Engine = if cfg!(feature = "rocksdb") {
        Engine::RocksDb
    } else {
        Engine::Redb
    };

    /// The engines this build can open.
    pub fn compiled() -> Vec<Engine> {
        let mut out = vec![Engine::Redb];
        if cfg!(feature = "rocksdb") {
            out.push(Engine::RocksDb);
        }
        out
    }

    pub fn name(self) -> &'static str {
        match self {
            Engine::Redb => "redb",
            Engine::RocksDb => "rocksdb",
        }
    }

    /// The engine whose files `dir` holds, if any.
    pub fn of_dir(dir: &std::path::Path) -> Option<Engine> {
        if dir.join(redb_engine::FILE_NAME).exists() {
            Some(Engine::Redb)
        } else if dir.join("CURRENT").exists() {
            Some(Engine::RocksDb)
        } else {
            None
        }
    }
}

impl std::fmt::Display for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Decides whether a put replaces the value already held under its key
/// (`new`, `held`): how replicas keep the newer of two revisions.
pub type Replaces = fn(Table, &[u8], &[u8]) -> bool;

/// When a write of a commit happens.
#[derive(Clone)]
pub(crate) enum Cond {
    Always,
    /// A put happens over a held value only if the function says it
    /// replaces it (deletes always happen).
    Replaces(Replaces),
    /// Only if the key holds exactly this (`None`: nothing).
    Holds(Option<Vec<u8>>),
}

/// One write of a commit: `value = None` deletes.
pub(crate) struct Op {
    pub table: Table,
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
    pub cond: Cond,
}

impl Op {
    /// Whether this write happens, given what its key holds now.
    pub fn applies(&self, held: Option<&[u8]>) -> bool {
        match &self.cond {
            Cond::Always => true,
            Cond::Replaces(replaces) => match (&self.value, held) {
                (Some(new), Some(held)) => replaces(self.table, new, held),
                _ => true,
            },
            Cond::Holds(expected) => expected.as_deref() == held,
        }
    }

    /// Whether the engine must read the key before deciding.
    pub fn reads(&self) -> bool {
        match &self.cond {
            Cond::Always => false,
            Cond::Replaces(_) => self.value.is_some(),
            Cond::Holds(_) => true,
        }
    }
}

/// What applying a commit needs of an engine's open transaction.
pub(crate) trait Writes {
    /// What `key` holds now, as this transaction sees it; an engine that
    /// locks rows locks this one until the commit.
    fn held(&mut self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, DbError>;
    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) -> Result<(), DbError>;
    fn delete(&mut self, table: Table, key: &[u8]) -> Result<(), DbError>;
}

/// Apply `ops` in order inside one transaction; whether each happened.
pub(crate) fn apply(txn: &mut impl Writes, ops: &[Op]) -> Result<Vec<bool>, DbError> {
    let mut applied = Vec::with_capacity(ops.len());
    for op in ops {
        if op.reads() && !op.applies(txn.held(op.table, &op.key)?.as_deref()) {
            applied.push(false);
            continue;
        }
        match &op.value {
            Some(v) => txn.put(op.table, &op.key, v)?,
            None => txn.delete(op.table, &op.key)?,
        }
        applied.push(true);
    }
    Ok(applied)
}

pub(crate) trait Store: Send + Sync {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, DbError>;

    /// Keys in `[start, end)` in order, at most `limit` (at least 1).
    fn scan(
        &self,
        table: Table,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Page, DbError>;

    /// Apply `ops` in order in one durable transaction; whether each
    /// happened.
    fn commit(&self, ops: Vec<Op>) -> Result<Vec<bool>, DbError>;
}

/// A storage error of an engine, shareable between the writers of one
/// group commit.
pub(crate) fn storage(e: impl std::error::Error + Send + Sync + 'static) -> DbError {
    DbError::Storage(std::sync::Arc::new(e))
}
