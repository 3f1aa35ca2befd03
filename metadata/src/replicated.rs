//! The record kinds kept on metadata replicas: which table each lives in,
//! and which of two states of a record is the newer one.
//!
//! Replicas never overwrite a record with an older state: every write
//! carries a revision (a hybrid logical clock reading) and a delete is a
//! tombstone, so merging the answers of several replicas, or two replicas'
//! tables during anti-entropy, is "keep the highest revision". This is the
//! one place that knows how to read a revision out of each kind.

use crate::db::Table;
use crate::model::{
    Bucket, JobRecord, JobTaskRecord, Lock, MultipartUpload, ObjectVersion, Part, User,
};
use crate::Record;

/// A record kind stored on replica sets and merged by revision.
pub trait Replicated: Record + Clone + Send + Sync + 'static {
    /// The table the kind lives in.
    const TABLE: Table;
    /// What error messages call a record of this kind.
    const WHAT: &'static str;
    /// Orders two states of the same record: the higher one wins.
    fn revision(&self) -> u64;
}

macro_rules! replicated {
    ($($kind:ty => $table:expr, $what:literal;)*) => {
        $(impl Replicated for $kind {
            const TABLE: Table = $table;
            const WHAT: &'static str = $what;
            fn revision(&self) -> u64 {
                self.revision
            }
        })*

        /// The revision of a sealed record of `table` (read from its clear
        /// header, so nodes need no key); `None` for bytes that are not a
        /// sealed record, and for tables whose records are not merged by
        /// revision (chunk references, the system table).
        pub fn revision_of(table: Table, bytes: &[u8]) -> Option<u64> {
            $(if table == <$kind as Replicated>::TABLE {
                return crate::sealed::revision(bytes);
            })*
            None
        }
    };
}

replicated! {
    Bucket => Table::Buckets, "bucket";
    ObjectVersion => Table::Versions, "version";
    MultipartUpload => Table::Uploads, "upload";
    Part => Table::Parts, "part";
    User => Table::Users, "user";
    Lock => Table::Locks, "lock";
    JobRecord => Table::Jobs, "job";
    JobTaskRecord => Table::JobTasks, "job task";
}

/// Whether a write of `new` should replace `held` on a replica: for a
/// table merged by revision only if it is newer. Writes reach a replica
/// late (the straggler of a quorum write, a read repair sent before a
/// newer write); applied blindly they would put back an older state than
/// one a quorum acknowledged. Other tables take what they are given.
pub fn replaces(table: Table, new: &[u8], held: &[u8]) -> bool {
    if revision_of(table, new).is_none() {
        return true;
    }
    new != held && newer(table, new, held)
}

/// Whether `a` should replace `b` (two encodings of one record of
/// `table`). An undecodable record loses to a decodable one; equal
/// revisions with different bytes, which writers never produce, resolve
/// the same way on every replica (by hash), so merges still agree.
pub fn newer(table: Table, a: &[u8], b: &[u8]) -> bool {
    match (revision_of(table, a), revision_of(table, b)) {
        (Some(x), Some(y)) if x != y => x > y,
        (Some(_), None) => true,
        (None, Some(_)) => false,
        _ => blake3::hash(a).as_bytes() > blake3::hash(b).as_bytes(),
    }
}
