//! The object layer's errors as S3 answers them: AWS's code, status and
//! message.

use cluster::naming::NameError;
use cluster::Error;
use http::{HeaderMap, HeaderValue};
use s3s::{S3Error, S3ErrorCode};

/// AWS's message for `code`, as S3 writes it in an error's `<Message>`.
///
/// Clients print the message beside the code (aws-cli, boto3 and s3cmd
/// show "Unknown" when there is none), and operators search for AWS's
/// wording, so every error the gateway answers carries one: errors made
/// here, and those s3s makes itself (signatures, parsing), which it leaves
/// without a message and [`fill_in_message`] completes on the way out.
pub fn aws_message(code: &S3ErrorCode) -> Option<&'static str> {
    use S3ErrorCode as C;
    Some(match code {
        C::AccessDenied => "Access Denied",
        C::AccessControlListNotSupported => "The bucket does not allow ACLs",
        C::AuthorizationHeaderMalformed => {
            "The authorization header that you provided is not valid."
        }
        C::AuthorizationQueryParametersError => {
            "Query-string authentication version 4 requires the X-Amz-Algorithm, \
             X-Amz-Credential, X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, \
             and X-Amz-Expires parameters."
        }
        C::BadDigest => "The Content-MD5 you specified did not match what we received.",
        C::BucketAlreadyExists => {
            "The requested bucket name is not available. The bucket namespace is shared \
             by all users of the system. Please select a different name and try again."
        }
        C::BucketAlreadyOwnedByYou => {
            "Your previous request to create the named bucket succeeded and you already own it."
        }
        C::BucketNotEmpty => "The bucket you tried to delete is not empty",
        C::CredentialsNotSupported => "This request does not support credentials.",
        C::EntityTooLarge => "Your proposed upload exceeds the maximum allowed object size.",
        C::EntityTooSmall => {
            "Your proposed upload is smaller than the minimum allowed object size."
        }
        C::ExpiredToken => "The provided token has expired.",
        C::IllegalLocationConstraintException => {
            "The unspecified location constraint is incompatible for the region specific \
             endpoint this request was sent to."
        }
        C::IncompleteBody => {
            "You did not provide the number of bytes specified by the Content-Length HTTP header."
        }
        C::InternalError => "We encountered an internal error. Please try again.",
        C::InvalidAccessKeyId => {
            "The AWS Access Key Id you provided does not exist in our records."
        }
        C::InvalidArgument => "Invalid Argument",
        C::InvalidBucketName => "The specified bucket is not valid.",
        C::InvalidBucketState => "The request is not valid with the current state of the bucket.",
        C::InvalidDigest => "The Content-MD5 you specified is not valid.",
        C::InvalidEncryptionAlgorithmError => {
            "The Encryption request you specified is not valid. The valid value is AES256."
        }
        C::InvalidLocationConstraint => "The specified location constraint is not valid.",
        C::InvalidObjectState => "The operation is not valid for the current state of the object.",
        C::InvalidPart => {
            "One or more of the specified parts could not be found. The part may not have been \
             uploaded, or the specified entity tag may not match the part's entity tag."
        }
        C::InvalidPartOrder => {
            "The list of parts was not in ascending order. Parts must be ordered by part number."
        }
        C::InvalidPolicyDocument => {
            "The content of the form does not meet the conditions specified in the policy document."
        }
        C::InvalidRange => "The requested range is not satisfiable",
        C::InvalidRequest => "Invalid Request",
        C::InvalidStorageClass => "The storage class you specified is not valid.",
        C::InvalidTag => "The tag provided was not a valid tag.",
        C::InvalidToken => "The provided token is malformed or otherwise invalid.",
        C::InvalidURI => "Couldn't parse the specified URI.",
        C::KeyTooLongError => "Your key is too long.",
        C::MalformedPOSTRequest => {
            "The body of your POST request is not well-formed multipart/form-data."
        }
        C::MalformedXML => {
            "The XML you provided was not well-formed or did not validate against our \
             published schema."
        }
        C::MaxMessageLengthExceeded => "Your request was too big.",
        C::MetadataTooLarge => "Your metadata headers exceed the maximum allowed metadata size.",
        C::MethodNotAllowed => "The specified method is not allowed against this resource.",
        C::MissingContentLength => "You must provide the Content-Length HTTP header.",
        C::MissingRequestBodyError => "Request Body is empty",
        C::MissingSecurityHeader => "Your request is missing a required header.",
        C::NoSuchBucket => "The specified bucket does not exist",
        C::NoSuchBucketPolicy => "The bucket policy does not exist",
        C::NoSuchCORSConfiguration => "The CORS configuration does not exist",
        C::NoSuchKey => "The specified key does not exist.",
        C::NoSuchLifecycleConfiguration => "The lifecycle configuration does not exist",
        C::NoSuchTagSet => "The TagSet does not exist",
        C::NoSuchUpload => {
            "The specified upload does not exist. The upload ID may be invalid, or the upload \
             may have been aborted or completed."
        }
        C::NoSuchVersion => "The specified version does not exist.",
        C::NoSuchWebsiteConfiguration => {
            "The specified bucket does not have a website configuration"
        }
        C::NotImplemented => "A header you provided implies functionality that is not implemented.",
        C::NotModified => "Not Modified",
        C::ObjectLockConfigurationNotFoundError => {
            "Object Lock configuration does not exist for this bucket"
        }
        C::OperationAborted => {
            "A conflicting conditional operation is currently in progress against this \
             resource. Try again."
        }
        C::PreconditionFailed => "At least one of the pre-conditions you specified did not hold",
        C::RequestIsNotMultiPartContent => {
            "Bucket POST must be of the enclosure-type multipart/form-data."
        }
        C::RequestTimeTooSkewed => {
            "The difference between the request time and the current time is too large."
        }
        C::RequestTimeout => {
            "Your socket connection to the server was not read from or written to within \
             the timeout period."
        }
        C::ServerSideEncryptionConfigurationNotFoundError => {
            "The server side encryption configuration was not found"
        }
        C::ServiceUnavailable => "Service is unable to handle request.",
        C::SignatureDoesNotMatch => {
            "The request signature we calculated does not match the signature you provided. \
             Check your key and signing method."
        }
        C::SlowDown => "Please reduce your request rate.",
        C::TooManyBuckets => "You have attempted to create more buckets than allowed",
        C::UnexpectedContent => "This request does not support content",
        // s3s has no variant for it: it comes as a custom code.
        C::Custom(c) if &c[..] == "XAmzContentSHA256Mismatch" => {
            "The provided 'x-amz-content-sha256' header does not match what was computed."
        }
        _ => return None,
    })
}

/// `code` with AWS's message, or with `fallback` for a code AWS has no
/// fixed message for.
pub fn aws_error(
    code: S3ErrorCode,
    fallback: impl Into<std::borrow::Cow<'static, str>>,
) -> S3Error {
    match aws_message(&code) {
        Some(m) => S3Error::with_message(code, m),
        None => S3Error::with_message(code, fallback),
    }
}

/// Completes an error answer that has no `<Message>` (s3s makes those for
/// what it refuses itself: signatures, access keys, parsing) with AWS's
/// message for its code. The answer is read back with an XML parser and
/// written again by s3s, so status, headers and other elements stay as
/// they were; a body that is not whole in memory is never touched.
pub fn fill_in_message(resp: &mut s3s::HttpResponse) {
    if resp.status().is_success() {
        return;
    }
    let Some(xml) = resp.body().bytes() else {
        return;
    };
    let Ok(doc) = xmltree::Element::parse(xml.as_ref()) else {
        return;
    };
    if doc.name != "Error" {
        return;
    }
    let text = |name: &str| {
        doc.get_child(name)
            .and_then(|c| c.get_text())
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
    };
    let Some(code) = text("Code") else {
        return;
    };
    if text("Message").is_some() {
        return;
    }
    let Ok(code) = code.parse::<S3ErrorCode>();
    let Some(message) = aws_message(&code) else {
        return;
    };
    let mut e = S3Error::with_message(code, message);
    if let Some(id) = text("RequestId") {
        e.set_request_id(id);
    }
    let Some(body) = e.to_http_response().ok().and_then(|r| r.body().bytes()) else {
        return;
    };
    resp.headers_mut()
        .insert(http::header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    *resp.body_mut() = s3s::Body::from(body);
}

/// The code and message of an error answer, read from its XML (s3s
/// writes errors whole, so the body is in memory); the status alone for
/// one without a body (HEAD). None for a success.
pub fn code_and_message(resp: &s3s::HttpResponse) -> Option<(String, String)> {
    let status = resp.status();
    if status.is_success() || status.is_redirection() {
        return None;
    }
    let parsed = resp
        .body()
        .bytes()
        .and_then(|xml| xmltree::Element::parse(xml.as_ref()).ok())
        .filter(|doc| doc.name == "Error");
    let text = |doc: &xmltree::Element, name: &str| {
        doc.get_child(name)
            .and_then(|c| c.get_text())
            .map(|t| t.trim().to_string())
    };
    Some(match parsed {
        Some(doc) => (
            text(&doc, "Code").unwrap_or_else(|| status.as_str().to_string()),
            text(&doc, "Message").unwrap_or_default(),
        ),
        None => (
            status.as_str().to_string(),
            status.canonical_reason().unwrap_or("").to_string(),
        ),
    })
}

/// Whether the object layer's own words are the message for `code`: AWS
/// words these codes case by case, so its generic sentence would drop the
/// only useful part.
fn detail_is_the_message(code: &S3ErrorCode) -> bool {
    matches!(
        code,
        S3ErrorCode::InvalidArgument | S3ErrorCode::InvalidRequest
    )
}

pub fn to_s3(e: Error) -> S3Error {
    let (code, headers): (S3ErrorCode, Vec<(&'static str, String)>) = match &e {
        Error::InvalidName(NameError::Bucket(_)) => (S3ErrorCode::InvalidBucketName, vec![]),
        Error::InvalidName(NameError::Key(reason)) if reason.contains("longer") => {
            (S3ErrorCode::KeyTooLongError, vec![])
        }
        Error::InvalidName(NameError::Key(_)) => (S3ErrorCode::InvalidArgument, vec![]),
        Error::NoSuchBucket(_) => (S3ErrorCode::NoSuchBucket, vec![]),
        Error::BucketAlreadyExists(_) => (S3ErrorCode::BucketAlreadyExists, vec![]),
        Error::BucketAlreadyOwnedByYou(_) => (S3ErrorCode::BucketAlreadyOwnedByYou, vec![]),
        Error::BucketNotEmpty(_) => (S3ErrorCode::BucketNotEmpty, vec![]),
        Error::NoSuchKey {
            delete_marker: Some(v),
            ..
        } => (
            S3ErrorCode::NoSuchKey,
            vec![
                ("x-amz-delete-marker", "true".into()),
                ("x-amz-version-id", v.clone()),
            ],
        ),
        Error::NoSuchKey { .. } => (
            S3ErrorCode::NoSuchKey,
            vec![("x-amz-delete-marker", "false".into())],
        ),
        Error::NoSuchVersion { .. } => (S3ErrorCode::NoSuchVersion, vec![]),
        Error::DeleteMarker { version, .. } => (
            S3ErrorCode::MethodNotAllowed,
            vec![
                ("x-amz-delete-marker", "true".into()),
                ("x-amz-version-id", version.clone()),
            ],
        ),
        Error::NoSuchUpload(_) => (S3ErrorCode::NoSuchUpload, vec![]),
        Error::InvalidRange { .. } => (S3ErrorCode::InvalidRange, vec![]),
        Error::PreconditionFailed => (S3ErrorCode::PreconditionFailed, vec![]),
        Error::NotModified { etag, .. } => (
            S3ErrorCode::NotModified,
            vec![("etag", format!("\"{etag}\""))],
        ),
        Error::InvalidPart { .. } => (S3ErrorCode::InvalidPart, vec![]),
        Error::InvalidPartOrder => (S3ErrorCode::InvalidPartOrder, vec![]),
        Error::EntityTooSmall { .. } => (S3ErrorCode::EntityTooSmall, vec![]),
        Error::EntityTooLarge { .. } => (S3ErrorCode::EntityTooLarge, vec![]),
        Error::BadDigest { .. } => (S3ErrorCode::BadDigest, vec![]),
        Error::InvalidArgument(m) if m.contains("storage class") => {
            (S3ErrorCode::InvalidStorageClass, vec![])
        }
        Error::InvalidArgument(_) | Error::Key(_) => (S3ErrorCode::InvalidArgument, vec![]),
        Error::CustomerKeyRequired => (S3ErrorCode::InvalidRequest, vec![]),
        Error::CustomerKeyMismatch => (S3ErrorCode::AccessDenied, vec![]),
        Error::Body(_) => (S3ErrorCode::IncompleteBody, vec![]),
        // What failed inside the grid (which node, at which address, for
        // which chunk) is for the operator's log, not for clients: the
        // answer says what happened and the request id ties it to the log.
        // The request's error line (crate::access_log) carries them.
        Error::Chunk(_) | Error::Metadata(_) => {
            if !crate::access_log::note_cause(&e) {
                tracing::warn!(error = %e, "grid unavailable");
            }
            return aws_error(S3ErrorCode::ServiceUnavailable, "");
        }
        // Corrupt, Internal, and whatever the object layer adds later.
        _ => {
            if !crate::access_log::note_cause(&e) {
                tracing::error!(error = %e, "internal error");
            }
            return aws_error(S3ErrorCode::InternalError, "");
        }
    };
    let mut err = if detail_is_the_message(&code) {
        S3Error::with_message(code, e.to_string())
    } else {
        aws_error(code, e.to_string())
    };
    if !headers.is_empty() {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            if let Ok(v) = HeaderValue::from_str(&v) {
                h.insert(k, v);
            }
        }
        err.set_headers(h);
    }
    // s3s logs an operation's error with its source: the object layer's
    // own words (which part, which size) stay in the operator's log.
    err.set_source(Box::new(e));
    err
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

    fn message_of(resp: &s3s::HttpResponse) -> Option<String> {
        let body = resp.body().bytes().expect("whole body");
        let doc = xmltree::Element::parse(body.as_ref()).expect("XML");
        doc.get_child("Message")
            .and_then(|m| m.get_text())
            .map(|t| t.into_owned())
    }

    #[test]
    fn answers_without_a_message_get_aws_s_and_keep_the_rest() {
        let mut e = S3Error::new(S3ErrorCode::SignatureDoesNotMatch);
        let mut h = HeaderMap::new();
        h.insert("x-amz-delete-marker", HeaderValue::from_static("true"));
        e.set_headers(h);
        let mut resp = e.to_http_response().expect("serialised");
        assert_eq!(message_of(&resp), None);
        fill_in_message(&mut resp);
        assert_eq!(resp.status(), http::StatusCode::FORBIDDEN);
        assert_eq!(resp.headers()["x-amz-delete-marker"], "true");
        assert_eq!(
            message_of(&resp).as_deref(),
            aws_message(&S3ErrorCode::SignatureDoesNotMatch)
        );
        let len = resp.body().bytes().expect("whole body").len();
        assert_eq!(
            resp.headers()[http::header::CONTENT_LENGTH],
            len.to_string().as_str()
        );

        // A message of its own stays.
        let mut resp = S3Error::with_message(S3ErrorCode::InvalidRequest, "why exactly")
            .to_http_response()
            .expect("serialised");
        fill_in_message(&mut resp);
        assert_eq!(message_of(&resp).as_deref(), Some("why exactly"));
    }

    #[test]
    fn object_layer_errors_speak_aws() {
        let e = to_s3(Error::NoSuchBucket("photos".into()));
        assert_eq!(e.message(), Some("The specified bucket does not exist"));
        let e = to_s3(Error::InvalidArgument("max-keys must be positive".into()));
        assert_eq!(
            e.message(),
            Some("invalid argument: max-keys must be positive")
        );
    }
}
