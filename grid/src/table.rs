//! One record kind on one replica set, typed: the only way the object
//! layer reads and writes metadata. Quorum reads pick the newest revision
//! and repair the replicas that lag; writes wait for a write quorum; scans
//! merge a read quorum in key order. The quorum mechanics are in
//! [`crate::replicas`]; which table a kind lives in and how its revision is
//! read are in `metadata::replicated`.
//!
//! Records are sealed here and nowhere else (`metadata::sealed`): what goes
//! to a node is ciphertext bound to its table, key and revision, and what
//! comes back is opened and authenticated before anyone reads it.

use crate::chunk_io::Grid;
use crate::node_api::MetaOp;
use crate::replicas::{self, MergedScan, MetaError, ReplicaSet};
use metadata::sealed::RecordKeys;
use metadata::Replicated;
use std::marker::PhantomData;
use std::sync::Arc;

/// Records of kind `R` on the replica set that holds them.
pub struct Table<R> {
    grid: Arc<Grid>,
    set: ReplicaSet,
    keys: RecordKeys,
    kind: PhantomData<fn() -> R>,
}

impl<R> Clone for Table<R> {
    fn clone(&self) -> Self {
        Self {
            grid: self.grid.clone(),
            set: self.set.clone(),
            keys: self.keys.clone(),
            kind: PhantomData,
        }
    }
}

fn open<R: Replicated>(keys: &RecordKeys, key: &[u8], bytes: &[u8]) -> Result<R, MetaError> {
    keys.open(R::TABLE, key, bytes)
        .map_err(|source| MetaError::Corrupt {
            what: R::WHAT,
            source,
        })
}

impl<R: Replicated> Table<R> {
    /// Records of `set`, sealed and opened with `keys` (the root's, or
    /// the bucket's they belong to).
    pub fn new(grid: Arc<Grid>, set: ReplicaSet, keys: RecordKeys) -> Self {
        Self {
            grid,
            set,
            keys,
            kind: PhantomData,
        }
    }

    pub fn replicas(&self) -> &ReplicaSet {
        &self.set
    }

    /// The newest state of `key` a read quorum knows (tombstones included:
    /// what a deleted record means is the caller's to say). Replicas that
    /// answered with something older, or nothing, are sent the winner in
    /// the background.
    pub async fn get(&self, key: &[u8]) -> Result<Option<R>, MetaError> {
        let mut answers = replicas::read(&self.grid, &self.set, R::TABLE, key).await?;
        // A farm may answer with a record no key holder sealed, under a
        // revision made up to win: where the replicas disagree, what does
        // not open counts as nothing (and is repaired over). Where they
        // agree, the one open below is the check.
        if answers.windows(2).any(|w| w[0].1 != w[1].1) {
            for (_, v) in answers.iter_mut() {
                if v.as_ref()
                    .is_some_and(|b| open::<R>(&self.keys, key, b).is_err())
                {
                    *v = None;
                }
            }
        }
        let (winner, stale) = replicas::pick_latest(answers, R::TABLE);
        let Some(bytes) = winner else {
            return Ok(None);
        };
        let record = open(&self.keys, key, &bytes)?;
        if !stale.is_empty() {
            replicas::repair(&self.grid, stale, R::TABLE, key.to_vec(), bytes);
        }
        Ok(Some(record))
    }

    /// Store `record` at `key` on a write quorum.
    pub async fn put(&self, key: &[u8], record: &R) -> Result<(), MetaError> {
        self.apply(vec![self.put_op(key, record)]).await
    }

    /// Apply `ops` atomically on each replica of this set, done at a write
    /// quorum. The ops may touch other tables held by the same set (a
    /// bucket's versions, uploads and parts share one).
    pub async fn apply(&self, ops: Vec<MetaOp>) -> Result<(), MetaError> {
        replicas::write(&self.grid, &self.set, ops).await
    }

    /// The op that stores `record` (sealed) at `key`, for
    /// [`Table::apply`].
    pub fn put_op(&self, key: &[u8], record: &R) -> MetaOp {
        MetaOp::put(
            R::TABLE,
            key,
            self.keys.seal(R::TABLE, key, record.revision(), record),
        )
    }

    /// The op that removes `key` outright (not a tombstone: only for
    /// records no stale replica can bring back harmfully).
    pub fn delete_op(key: &[u8]) -> MetaOp {
        MetaOp::delete(R::TABLE, key)
    }

    /// Every record in `[start, end)` in key order, merged over a read
    /// quorum, fetched a page at a time.
    pub fn scan(&self, start: Vec<u8>, end: Option<Vec<u8>>) -> Scan<R> {
        let keys = self.keys.clone();
        let valid: replicas::Validator =
            Arc::new(move |key: &[u8], bytes: &[u8]| open::<R>(&keys, key, bytes).is_ok());
        Scan {
            inner: MergedScan::new(self.grid.clone(), &self.set, R::TABLE, start, end)
                .validated_by(valid),
            keys: self.keys.clone(),
            kind: PhantomData,
        }
    }
}

/// A merged, ordered scan of one record kind (see [`Table::scan`]).
pub struct Scan<R> {
    inner: MergedScan,
    keys: RecordKeys,
    kind: PhantomData<fn() -> R>,
}

impl<R: Replicated> Scan<R> {
    /// Items per page asked of each replica.
    pub fn with_page(mut self, page: u32) -> Self {
        self.inner = self.inner.with_page(page);
        self
    }

    /// Continue from `start` (skipping what lies before it).
    pub fn seek(&mut self, start: Vec<u8>) {
        self.inner.seek(start);
    }

    /// The next key in order and its newest record.
    pub async fn next(&mut self) -> Result<Option<(Vec<u8>, R)>, MetaError> {
        match self.inner.next().await? {
            Some((key, bytes)) => {
                let record = open(&self.keys, &key, &bytes)?;
                Ok(Some((key, record)))
            }
            None => Ok(None),
        }
    }

    /// Send the merged records to the replicas that lacked them.
    pub fn repair_stale(&mut self) {
        self.inner.repair_stale();
    }
}
