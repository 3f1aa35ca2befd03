//! What the WebDAV filesystem and its writers both need of an object: its
//! metadata as dav-server sees it, and the object layer's errors as WebDAV
//! statuses.

use cluster::{Error, ObjectInfo};
use dav_server::fs::{DavMetaData, FsError, FsResult};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The object layer's error as the nearest WebDAV status.
pub(crate) fn fs_error(e: Error) -> FsError {
    match e {
        Error::NoSuchBucket(_)
        | Error::NoSuchKey { .. }
        | Error::NoSuchVersion { .. }
        | Error::DeleteMarker { .. } => FsError::NotFound,
        Error::BucketAlreadyExists(_) | Error::BucketAlreadyOwnedByYou(_) => FsError::Exists,
        Error::InvalidName(_) | Error::InvalidArgument(_) | Error::BucketNotEmpty(_) => {
            FsError::Forbidden
        }
        Error::CustomerKeyRequired | Error::CustomerKeyMismatch => FsError::Forbidden,
        Error::EntityTooLarge { .. } => FsError::TooLarge,
        e => {
            // The request's error line (crate::access_log) carries it.
            if !crate::access_log::note_cause(&e) {
                tracing::warn!(error = %e, "WebDAV request failed in the object layer");
            }
            FsError::GeneralFailure
        }
    }
}

fn time_of(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// Metadata of a file (an object) or a folder (a bucket or a prefix).
#[derive(Debug, Clone)]
pub(crate) struct Meta {
    pub(crate) dir: bool,
    len: u64,
    pub(crate) modified_ms: u64,
    etag: Option<String>,
}

impl Meta {
    pub(crate) fn file(info: &ObjectInfo) -> Meta {
        Meta {
            dir: false,
            len: info.size,
            modified_ms: info.last_modified_ms,
            etag: Some(info.etag.clone()),
        }
    }

    pub(crate) fn file_parts(len: u64, modified_ms: u64, etag: String) -> Meta {
        Meta {
            dir: false,
            len,
            modified_ms,
            etag: Some(etag),
        }
    }

    pub(crate) fn dir(modified_ms: u64) -> Meta {
        Meta {
            dir: true,
            len: 0,
            modified_ms,
            etag: None,
        }
    }
}

impl DavMetaData for Meta {
    fn len(&self) -> u64 {
        self.len
    }

    fn modified(&self) -> FsResult<SystemTime> {
        Ok(time_of(self.modified_ms))
    }

    fn is_dir(&self) -> bool {
        self.dir
    }

    fn etag(&self) -> Option<String> {
        match &self.etag {
            Some(e) => Some(e.clone()),
            None => Some(format!("{:x}", self.modified_ms)),
        }
    }

    fn created(&self) -> FsResult<SystemTime> {
        Ok(time_of(self.modified_ms))
    }
}
