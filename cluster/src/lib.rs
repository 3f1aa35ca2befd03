//! The object layer every front end uses: [`ObjectStore`] turns byte
//! streams into sealed, erasure-coded chunks on the grid and back, with
//! buckets, versions, listing, multipart uploads, dedup and garbage
//! collection. Below it, the `grid` crate: node RPC, chunk I/O across
//! nodes and metadata replica sets.

pub mod audit;
pub mod audit_stats;
pub mod checksum;
mod chunk_stream;
mod config;
pub mod duties;
pub mod erasure_default;
pub mod error;
pub mod gc;
pub mod jobs;
pub mod layout;
mod list_index;
mod listing;
pub mod locks;
pub mod map_follow;
mod multipart;
mod multipart_stitch;
pub mod naming;
pub mod node_status;
mod objects;
mod repair_hints;
pub mod secrets;
mod stitch_queue;
mod store;
pub mod users;
pub mod version_id;
mod versions;

pub use audit::{AuditConfig, AuditReport, Auditor};
pub use checksum::ChecksumAlgorithm;
pub use chunk_stream::RepairHint;
pub use config::StoreConfig;
pub use duties::{DutyConfig, DutyReport};
pub use error::{Error, Result};
pub use listing::{ListObjectsPage, ListObjectsParams, ListVersionsPage, ListVersionsParams};
pub use metadata::model::{ErasureSpec, VersioningState};
pub use multipart::{
    CompletedPart, ListPartsPage, ListUploadsPage, MultipartOptions, PartInfo, PartOptions,
    UploadInfo,
};
pub use objects::{
    ByteRange, Conditions, CopyOptions, GetOptions, GetResult, ObjectBody, ObjectInfo, PutOptions,
    PutResult, Trailer,
};
pub use secrets::{CustomerKey, MasterKey};
pub use store::{BucketHandle, BucketInfo, BucketRef, ObjectStore};
pub use versions::DeleteResult;
