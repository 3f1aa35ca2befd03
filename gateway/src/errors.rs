//! The object layer's errors as S3 answers them: AWS's code and status.

use cluster::naming::NameError;
use cluster::Error;
use http::{HeaderMap, HeaderValue};
use s3s::{S3Error, S3ErrorCode};

fn with_headers(mut e: S3Error, pairs: &[(&'static str, &str)]) -> S3Error {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        if let Ok(v) = HeaderValue::from_str(v) {
            h.insert(*k, v);
        }
    }
    e.set_headers(h);
    e
}

pub fn to_s3(e: Error) -> S3Error {
    let msg = e.to_string();
    let code = match &e {
        Error::InvalidName(NameError::Bucket(_)) => S3ErrorCode::InvalidBucketName,
        Error::InvalidName(NameError::Key(reason)) if reason.contains("longer") => {
            S3ErrorCode::KeyTooLongError
        }
        Error::InvalidName(NameError::Key(_)) => S3ErrorCode::InvalidArgument,
        Error::NoSuchBucket(_) => S3ErrorCode::NoSuchBucket,
        Error::BucketAlreadyExists(_) => S3ErrorCode::BucketAlreadyExists,
        Error::BucketAlreadyOwnedByYou(_) => S3ErrorCode::BucketAlreadyOwnedByYou,
        Error::BucketNotEmpty(_) => S3ErrorCode::BucketNotEmpty,
        Error::NoSuchKey {
            delete_marker: Some(v),
            ..
        } => {
            let err = S3Error::with_message(S3ErrorCode::NoSuchKey, msg);
            return with_headers(
                err,
                &[("x-amz-delete-marker", "true"), ("x-amz-version-id", v)],
            );
        }
        Error::NoSuchKey { .. } => {
            let err = S3Error::with_message(S3ErrorCode::NoSuchKey, msg);
            return with_headers(err, &[("x-amz-delete-marker", "false")]);
        }
        Error::NoSuchVersion { .. } => S3ErrorCode::NoSuchVersion,
        Error::DeleteMarker { version, .. } => {
            let err = S3Error::with_message(S3ErrorCode::MethodNotAllowed, msg.clone());
            return with_headers(
                err,
                &[
                    ("x-amz-delete-marker", "true"),
                    ("x-amz-version-id", version.as_str()),
                ],
            );
        }
        Error::NoSuchUpload(_) => S3ErrorCode::NoSuchUpload,
        Error::InvalidRange { .. } => S3ErrorCode::InvalidRange,
        Error::PreconditionFailed => S3ErrorCode::PreconditionFailed,
        Error::NotModified { etag, .. } => {
            let err = S3Error::new(S3ErrorCode::NotModified);
            let quoted = format!("\"{etag}\"");
            return with_headers(err, &[("etag", quoted.as_str())]);
        }
        Error::InvalidPart { .. } => S3ErrorCode::InvalidPart,
        Error::InvalidPartOrder => S3ErrorCode::InvalidPartOrder,
        Error::EntityTooSmall { .. } => S3ErrorCode::EntityTooSmall,
        Error::EntityTooLarge { .. } => S3ErrorCode::EntityTooLarge,
        Error::BadDigest { .. } => S3ErrorCode::BadDigest,
        Error::InvalidArgument(m) if m.contains("storage class") => {
            S3ErrorCode::InvalidStorageClass
        }
        Error::InvalidArgument(_) | Error::Key(_) => S3ErrorCode::InvalidArgument,
        Error::CustomerKeyRequired => S3ErrorCode::InvalidRequest,
        Error::CustomerKeyMismatch => S3ErrorCode::AccessDenied,
        Error::Body(_) => S3ErrorCode::IncompleteBody,
        // What failed inside the grid (which node, at which address, for
        // which chunk) is for the operator's log, not for clients: the
        // answer says what happened and the request id ties it to the log.
        Error::Chunk(_) | Error::Metadata(_) => {
            tracing::warn!(error = %e, "grid unavailable");
            return S3Error::with_message(
                S3ErrorCode::ServiceUnavailable,
                "too few storage nodes answered in time; retry later",
            );
        }
        // Corrupt, Internal, and whatever the object layer adds later.
        _ => {
            tracing::error!(error = %e, "internal error");
            return S3Error::with_message(
                S3ErrorCode::InternalError,
                "internal error; the gateway's log has the details under this request id",
            );
        }
    };
    S3Error::with_message(code, msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use grid::replicas::MetaError;

    #[test]
    fn grid_failures_name_no_node_to_clients() {
        let e = Error::Metadata(MetaError::Quorum {
            op: "read",
            acks: 1,
            needed: 2,
            detail: "node n2 unreachable: 127.0.0.1:7002 connection refused".into(),
        });
        let s3 = to_s3(e);
        assert_eq!(*s3.code(), S3ErrorCode::ServiceUnavailable);
        let msg = s3.message().unwrap_or_default();
        assert!(!msg.contains("127.0.0.1") && !msg.contains("n2"), "{msg}");
        let internal = to_s3(Error::Internal("node n5 at 10.0.0.5:7000 said no".into()));
        let msg = internal.message().unwrap_or_default();
        assert!(!msg.contains("10.0.0.5") && !msg.contains("n5"), "{msg}");
    }
}
