//! The object layer every front end uses: [`ObjectStore`] turns byte
//! streams into sealed, erasure-coded chunks on the grid and back, with
//! buckets, versions, listing, multipart uploads, dedup and garbage
//! collection. Below it: the node RPC (its authentication [`rpc_auth`],
//! protocol [`node_api`], shared with the server in `storage-node`, and
//! typed client [`node_client`]), chunk I/O ([`chunk_io`]) and metadata
//! replica sets ([`replicas`]).

pub mod checksum;
pub mod chunk_io;
mod chunk_stream;
pub mod erasure_default;
pub mod error;
pub mod gc;
pub mod jobs;
pub mod layout;
mod listing;
pub mod locks;
pub mod map_follow;
pub mod membership;
mod multipart;
pub mod naming;
pub mod node_api;
pub mod node_client;
mod objects;
mod repair_hints;
pub mod replicas;
pub mod rpc_auth;
pub mod secrets;
mod store;
pub mod users;
pub mod version_id;
mod versions;

pub use checksum::ChecksumAlgorithm;
pub use error::{Error, Result};
pub use listing::{ListObjectsPage, ListObjectsParams, ListVersionsPage, ListVersionsParams};
pub use metadata::model::{ErasureSpec, VersioningState};
pub use multipart::{
    CompletedPart, ListPartsPage, ListUploadsPage, MultipartOptions, PartInfo, PartOptions,
    UploadInfo,
};
pub use node_client::{ClientOptions, NodeClient, NodeError};
pub use objects::{
    ByteRange, Conditions, CopyOptions, GetOptions, GetResult, ObjectBody, ObjectInfo, PutOptions,
    PutResult, Trailer,
};
pub use secrets::{CustomerKey, MasterKey};
pub use store::{BucketInfo, ObjectStore, RepairHint, StoreConfig};
pub use versions::DeleteResult;
