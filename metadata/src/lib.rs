//! gridstore's data model, its on-disk encoding, and placement.
//!
//! * [`model`]: buckets, object versions and manifests, multipart uploads
//!   and parts, chunk reference records, the cluster map.
//! * [`record`]: the versioned binary encoding every record is stored and
//!   sent in (protobuf wire format behind a one-byte schema tag, so fields
//!   can be added without breaking readers on either side).
//! * [`placement`]: which nodes hold a chunk's shards and a bucket's
//!   metadata replicas (weighted rendezvous hashing, spread over sites).
//! * [`replicated`]: the record kinds kept on metadata replicas, their
//!   tables and revisions.
//! * [`sealed`]: how gateways seal records so nodes store and merge them
//!   without reading them, and hash names out of record keys.
//! * [`db`]: a node's tables behind a small typed API, kept by redb or
//!   (with the `rocksdb` feature) RocksDB.
//! * [`shard_key`]: the address of one shard (chunk id, index).

pub mod db;
pub mod model;
pub mod owner_key;
pub mod placement;
pub mod record;
pub mod replicated;
pub mod sealed;
pub mod shard_key;
pub mod signing;

pub use record::{Record, RecordError};
pub use replicated::Replicated;
pub use shard_key::{InvalidShardKey, ShardKey, MAX_SHARDS};
