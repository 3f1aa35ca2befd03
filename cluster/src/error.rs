//! The object layer's error: what went wrong, in terms a front end maps
//! to its protocol's codes (S3 error codes, WebDAV statuses).

use crate::naming::NameError;
use crate::secrets::KeyError;
use grid::chunk_io::ChunkError;
use grid::replicas::MetaError;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(transparent)]
    InvalidName(#[from] NameError),
    #[error("bucket {0} does not exist")]
    NoSuchBucket(String),
    #[error("bucket {0} exists and belongs to someone else")]
    BucketAlreadyExists(String),
    #[error("bucket {0} exists and is yours")]
    BucketAlreadyOwnedByYou(String),
    #[error("bucket {0} is not empty")]
    BucketNotEmpty(String),
    #[error("no such key {key} in {bucket}")]
    NoSuchKey {
        bucket: String,
        key: String,
        /// Set when the latest version is a delete marker.
        delete_marker: Option<String>,
    },
    #[error("no version {version} of {key}")]
    NoSuchVersion { key: String, version: String },
    /// A read named a delete marker's version (S3 answers 405).
    #[error("version {version} of {key} is a delete marker")]
    DeleteMarker { key: String, version: String },
    #[error("no such upload {0}")]
    NoSuchUpload(String),
    #[error("range not satisfiable for an object of {size} bytes")]
    InvalidRange { size: u64 },
    #[error("precondition failed")]
    PreconditionFailed,
    #[error("not modified")]
    NotModified { etag: String, last_modified_ms: u64 },
    #[error("part {part} is missing or its ETag does not match")]
    InvalidPart { part: u32 },
    #[error("parts must be listed in ascending order")]
    InvalidPartOrder,
    #[error("part {part} is {size} bytes, below the {min}-byte minimum for all but the last part")]
    EntityTooSmall { part: u32, size: u64, min: u64 },
    #[error("object of {size} bytes exceeds the {max}-byte limit")]
    EntityTooLarge { size: u64, max: u64 },
    #[error("the {what} sent does not match the data ({detail})")]
    BadDigest { what: String, detail: String },
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("object is encrypted with a customer key; the request must give it")]
    CustomerKeyRequired,
    #[error("customer key does not match the object's")]
    CustomerKeyMismatch,
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("request body: {0}")]
    Body(String),
    #[error(transparent)]
    Chunk(#[from] ChunkError),
    #[error(transparent)]
    Metadata(MetaError),
    #[error("stored record is unreadable: {0}")]
    Corrupt(String),
    #[error("internal: {0}")]
    Internal(String),
}

impl From<MetaError> for Error {
    fn from(e: MetaError) -> Self {
        match e {
            // A record that does not decode is damage, not unavailability:
            // retrying will not help.
            MetaError::Corrupt { what, source } => Error::Corrupt(format!("{what}: {source}")),
            e => Error::Metadata(e),
        }
    }
}

impl Error {
    /// Whether the grid, not the request, is at fault and a retry later
    /// may succeed (S3: 503 SlowDown / 500 InternalError).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Error::Chunk(_) | Error::Metadata(_))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
