//! Conversions between s3s's types and the object layer's.

use cluster::{ByteRange, ChecksumAlgorithm, Conditions, CustomerKey, ObjectInfo};
use s3s::dto::{ChecksumType, ETag, ETagCondition, Metadata, Range, Timestamp};
use s3s::{S3Error, S3ErrorCode, S3Result};
use std::collections::BTreeMap;

/// Standard headers S3 stores with an object, kept in its metadata map
/// under names no `x-amz-meta-*` header can produce.
const HDR_PREFIX: &str = "\u{1}h:";

pub fn timestamp(ms: u64) -> Timestamp {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    Timestamp::from(t)
}

pub fn millis(t: &Timestamp) -> u64 {
    let t: time::OffsetDateTime = t.clone().into();
    (t.unix_timestamp_nanos() / 1_000_000).max(0) as u64
}

pub fn etag(hex: &str) -> ETag {
    ETag::Strong(hex.to_string())
}

fn condition(c: &ETagCondition) -> String {
    match c {
        ETagCondition::Any => "*".to_string(),
        ETagCondition::ETag(e) => e.value().to_string(),
    }
}

pub fn conditions(
    if_match: Option<&ETagCondition>,
    if_none_match: Option<&ETagCondition>,
    if_modified_since: Option<&Timestamp>,
    if_unmodified_since: Option<&Timestamp>,
) -> Conditions {
    Conditions {
        if_match: if_match.map(condition),
        if_none_match: if_none_match.map(condition),
        if_modified_since_ms: if_modified_since.map(millis),
        if_unmodified_since_ms: if_unmodified_since.map(millis),
    }
}

pub fn range(r: &Range) -> ByteRange {
    match *r {
        Range::Int {
            first,
            last: Some(last),
        } => ByteRange::FromTo(first, last),
        Range::Int { first, last: None } => ByteRange::From(first),
        Range::Suffix { length } => ByteRange::Last(length),
    }
}

pub fn customer_key(
    algorithm: Option<&str>,
    key: Option<&str>,
    md5: Option<&str>,
) -> S3Result<Option<CustomerKey>> {
    match (algorithm, key) {
        (None, None) => Ok(None),
        (Some("AES256"), Some(k)) => CustomerKey::from_headers(k, md5)
            .map(Some)
            .map_err(|e| S3Error::with_message(S3ErrorCode::InvalidArgument, e.to_string())),
        _ => Err(S3Error::with_message(
            S3ErrorCode::InvalidArgument,
            "SSE-C needs the AES256 algorithm and a key",
        )),
    }
}

/// The checksums a request carries in headers (name → base64).
pub fn sent_checksums(
    crc32: Option<&String>,
    crc32c: Option<&String>,
    crc64nvme: Option<&String>,
    sha1: Option<&String>,
    sha256: Option<&String>,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (alg, v) in [
        (ChecksumAlgorithm::Crc32, crc32),
        (ChecksumAlgorithm::Crc32c, crc32c),
        (ChecksumAlgorithm::Crc64Nvme, crc64nvme),
        (ChecksumAlgorithm::Sha1, sha1),
        (ChecksumAlgorithm::Sha256, sha256),
    ] {
        if let Some(v) = v {
            out.insert(alg.name().to_string(), v.clone());
        }
    }
    out
}

/// Algorithms named by `x-amz-checksum-algorithm`, `x-amz-sdk-checksum-
/// algorithm` or announced in `x-amz-trailer`.
pub fn requested_algorithms(
    headers: &http::HeaderMap,
    explicit: Option<&str>,
) -> Vec<ChecksumAlgorithm> {
    let mut out: Vec<ChecksumAlgorithm> = explicit
        .and_then(ChecksumAlgorithm::from_name)
        .into_iter()
        .collect();
    for name in ["x-amz-sdk-checksum-algorithm", "x-amz-checksum-algorithm"] {
        if let Some(a) = headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(ChecksumAlgorithm::from_name)
        {
            out.push(a);
        }
    }
    if let Some(t) = headers.get("x-amz-trailer").and_then(|v| v.to_str().ok()) {
        for part in t.split(',') {
            if let Some(a) = part
                .trim()
                .strip_prefix("x-amz-checksum-")
                .and_then(ChecksumAlgorithm::from_name)
            {
                out.push(a);
            }
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// Decode Content-MD5 (base64 of 16 bytes).
pub fn content_md5(v: Option<&String>) -> S3Result<Option<[u8; 16]>> {
    let Some(v) = v else { return Ok(None) };
    cluster::checksum::unb64(v)
        .and_then(|b| <[u8; 16]>::try_from(b.as_slice()).ok())
        .map(Some)
        .ok_or_else(|| {
            S3Error::with_message(
                S3ErrorCode::InvalidDigest,
                "Content-MD5 is not a base64 MD5",
            )
        })
}

/// The stored checksums as the five optional output fields.
pub struct ChecksumFields {
    pub crc32: Option<String>,
    pub crc32c: Option<String>,
    pub crc64nvme: Option<String>,
    pub sha1: Option<String>,
    pub sha256: Option<String>,
}

pub fn checksum_fields(map: &BTreeMap<String, String>) -> ChecksumFields {
    let get = |a: ChecksumAlgorithm| map.get(a.name()).cloned();
    ChecksumFields {
        crc32: get(ChecksumAlgorithm::Crc32),
        crc32c: get(ChecksumAlgorithm::Crc32c),
        crc64nvme: get(ChecksumAlgorithm::Crc64Nvme),
        sha1: get(ChecksumAlgorithm::Sha1),
        sha256: get(ChecksumAlgorithm::Sha256),
    }
}

/// The checksum type S3 names for stored checksums: COMPOSITE for a
/// multipart object's digest of its parts' digests (stored as `…-N`, as
/// S3 writes it), FULL_OBJECT for a digest of the whole body.
pub fn checksum_type(map: &BTreeMap<String, String>) -> Option<ChecksumType> {
    let v = map.values().next()?;
    let composite = v
        .rsplit_once('-')
        .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    Some(ChecksumType::from_static(if composite {
        ChecksumType::COMPOSITE
    } else {
        ChecksumType::FULL_OBJECT
    }))
}

/// User metadata and the standard headers S3 keeps with an object, as one
/// map to store (the inverse of [`split_metadata`]).
pub fn stored_metadata(
    metadata: Option<Metadata>,
    cache_control: Option<String>,
    content_disposition: Option<String>,
    content_encoding: Option<String>,
    content_language: Option<String>,
    expires: Option<&Timestamp>,
) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = metadata.unwrap_or_default().into_iter().collect();
    for (name, v) in [
        ("cache-control", cache_control),
        ("content-disposition", content_disposition),
        ("content-encoding", strip_aws_chunked(content_encoding)),
        ("content-language", content_language),
        ("expires", expires.map(|t| millis(t).to_string())),
    ] {
        if let Some(v) = v {
            out.insert(format!("{HDR_PREFIX}{name}"), v);
        }
    }
    out
}

/// Content-Encoding without the `aws-chunked` of the upload's framing.
fn strip_aws_chunked(v: Option<String>) -> Option<String> {
    let v = v?;
    let kept: Vec<&str> = v
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty() && !e.eq_ignore_ascii_case("aws-chunked"))
        .collect();
    (!kept.is_empty()).then(|| kept.join(", "))
}

/// Split stored metadata into user metadata and the standard headers.
pub fn split_metadata(
    info: &ObjectInfo,
) -> (
    std::collections::HashMap<String, String>,
    BTreeMap<String, String>,
) {
    let mut user = std::collections::HashMap::new();
    let mut std_headers = BTreeMap::new();
    for (k, v) in &info.user_metadata {
        match k.strip_prefix(HDR_PREFIX) {
            Some(h) => {
                std_headers.insert(h.to_string(), v.clone());
            }
            None => {
                user.insert(k.clone(), v.clone());
            }
        }
    }
    (user, std_headers)
}

/// URL-encode a key for `encoding-type=url` listings.
pub fn encode_key(key: &str, url: bool) -> String {
    if url {
        // As AWS: everything but unreserved characters and '/'.
        urlencoding::encode(key).replace("%2F", "/")
    } else {
        key.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::checksum_type;
    use std::collections::BTreeMap;

    fn of(v: &str) -> Option<String> {
        let map = BTreeMap::from([("SHA256".to_string(), v.to_string())]);
        checksum_type(&map).map(|t| t.as_str().to_string())
    }

    #[test]
    fn composite_checksums_are_the_ones_with_a_part_count() {
        assert_eq!(checksum_type(&BTreeMap::new()), None);
        // base64 has no '-', so only a part count can follow one
        assert_eq!(
            of("uWBwpe1dxI4Vw8Gf0X9ynOdw/SS6VBzfWm9giiv1sf4=-3").as_deref(),
            Some("COMPOSITE")
        );
        assert_eq!(
            of("275VF5loJr1YYawit0XSHREhkFXYkkPKGuoK0x9VKxI=").as_deref(),
            Some("FULL_OBJECT")
        );
        assert_eq!(of("abc=-").as_deref(), Some("FULL_OBJECT"));
    }
}
