//! What every front end offers the conformance suite: a small object-store
//! API in front-end-neutral terms (after arrow-rs object_store's
//! integration suite), the capabilities that say which parts of it a
//! protocol can express, and one error enum each adapter maps its
//! protocol's errors to.

use bytes::Bytes;
use std::time::SystemTime;

/// A failed call, whatever the protocol said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeError {
    /// No such key (S3 NoSuchKey, HTTP/WebDAV 404, `Error::NoSuchKey`).
    NotFound,
    NoSuchBucket,
    NoSuchVersion,
    /// A read named a delete marker's version (S3: 405 MethodNotAllowed).
    DeleteMarker,
    PreconditionFailed,
    /// A conditional read whose condition says the copy is current (304).
    NotModified,
    InvalidRange,
    InvalidBucketName,
    /// The front end cannot express this call (its capabilities say so).
    Unsupported(&'static str),
    /// Anything else, as the protocol said it.
    Other(String),
}

impl std::fmt::Display for FeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}

pub type FeResult<T> = Result<T, FeError>;

/// Which parts of [`FrontEnd`] the protocol can express. A case that
/// needs a missing capability is skipped, and each front end's test says
/// exactly which cases it expects to skip.
#[derive(Debug, Clone, Copy)]
pub struct Caps {
    /// Versioning, version ids, delete markers, ListObjectVersions.
    pub versions: bool,
    /// Multipart uploads.
    pub multipart: bool,
    /// Listing without a delimiter, or under a prefix that is not a
    /// folder (`list/a` as opposed to `list/`).
    pub list_flat: bool,
    /// Listing in pages of a given size with a continuation token.
    pub list_pages: bool,
    /// If-Match / If-None-Match on writes.
    pub conditional_put: bool,
    /// If-Match / If-None-Match / If-Modified-Since on reads.
    pub conditional_get: bool,
    /// Server-side copy.
    pub copy: bool,
    /// A read from a missing bucket is told apart from a missing key
    /// (WebDAV has one 404 for both).
    pub missing_bucket_distinct: bool,
}

/// An HTTP byte range, as `Range: bytes=...` writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Range {
    /// `bytes=a-b`, both inclusive.
    FromTo(u64, u64),
    /// `bytes=a-`
    From(u64),
    /// `bytes=-n`
    Last(u64),
}

impl Range {
    pub fn header(&self) -> String {
        match *self {
            Range::FromTo(a, b) => format!("bytes={a}-{b}"),
            Range::From(a) => format!("bytes={a}-"),
            Range::Last(n) => format!("bytes=-{n}"),
        }
    }
}

/// Conditional request headers. ETags are given unquoted; adapters quote
/// them as their protocol wants (`*` is sent as it is).
#[derive(Debug, Clone, Default)]
pub struct Cond {
    pub if_match: Option<String>,
    pub if_none_match: Option<String>,
    pub if_modified_since: Option<SystemTime>,
}

#[derive(Debug, Clone, Default)]
pub struct GetReq {
    pub range: Option<Range>,
    pub version: Option<String>,
    pub cond: Cond,
}

#[derive(Debug, Clone, Default)]
pub struct PutOut {
    /// Unquoted; None when the protocol's answer does not carry one.
    pub etag: Option<String>,
    pub version_id: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Object {
    pub body: Vec<u8>,
    /// Unquoted.
    pub etag: String,
    /// `(first, last, total)` of a ranged answer (Content-Range).
    pub range: Option<(u64, u64, u64)>,
    pub version_id: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Meta {
    pub size: u64,
    /// Unquoted.
    pub etag: String,
    /// Whole seconds, as HTTP dates have them.
    pub last_modified: SystemTime,
}

#[derive(Debug, Clone, Default)]
pub struct ListReq {
    pub prefix: String,
    pub delimiter: Option<String>,
    pub max_keys: Option<usize>,
    /// The previous page's `next`.
    pub token: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListPage {
    pub keys: Vec<String>,
    pub prefixes: Vec<String>,
    /// Where the next page starts; None on the last page.
    pub next: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct VersionEntry {
    pub key: String,
    pub version_id: String,
    pub is_latest: bool,
    pub delete_marker: bool,
}

#[derive(Debug, Clone, Default)]
pub struct Deleted {
    pub delete_marker: bool,
    pub version_id: Option<String>,
}

/// One front end, as the suite drives it.
#[allow(async_fn_in_trait)]
pub trait FrontEnd {
    fn name(&self) -> &'static str;
    fn caps(&self) -> Caps;

    async fn create_bucket(&self, bucket: &str) -> FeResult<()>;
    async fn put(&self, bucket: &str, key: &str, body: Bytes, cond: &Cond) -> FeResult<PutOut>;
    async fn get(&self, bucket: &str, key: &str, req: &GetReq) -> FeResult<Object>;
    async fn head(&self, bucket: &str, key: &str) -> FeResult<Meta>;
    async fn list(&self, bucket: &str, req: &ListReq) -> FeResult<ListPage>;
    async fn copy(
        &self,
        src_bucket: &str,
        src_key: &str,
        dst_bucket: &str,
        dst_key: &str,
    ) -> FeResult<()>;
    async fn delete(&self, bucket: &str, key: &str, version: Option<&str>) -> FeResult<Deleted>;

    async fn set_versioning(&self, bucket: &str, enabled: bool) -> FeResult<()>;
    /// Every version and delete marker under `prefix`.
    async fn list_versions(&self, bucket: &str, prefix: &str) -> FeResult<Vec<VersionEntry>>;

    /// Returns the upload id.
    async fn create_upload(&self, bucket: &str, key: &str) -> FeResult<String>;
    /// Returns the part's ETag (unquoted).
    async fn upload_part(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        part: u32,
        body: Bytes,
    ) -> FeResult<String>;
    /// `parts`: (number, ETag); returns the object's ETag (unquoted).
    async fn complete_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        parts: &[(u32, String)],
    ) -> FeResult<String>;
}

/// An ETag without its quotes (and weak marker).
pub fn unquote(etag: &str) -> String {
    let e = etag.trim();
    let e = e.strip_prefix("W/").unwrap_or(e);
    e.trim_matches('"').to_string()
}

/// A conditional header's value: `*` as it is, an ETag quoted.
pub fn quote_tag(tag: &str) -> String {
    if tag == "*" {
        tag.to_string()
    } else {
        format!("\"{}\"", unquote(tag))
    }
}

/// `Content-Range: bytes a-b/n` as `(a, b, n)`.
pub fn parse_content_range(v: &str) -> Option<(u64, u64, u64)> {
    let rest = v.trim().strip_prefix("bytes ")?;
    let (span, total) = rest.split_once('/')?;
    let (a, b) = span.split_once('-')?;
    Some((a.parse().ok()?, b.parse().ok()?, total.parse().ok()?))
}

/// Percent-encodes everything but RFC 3986's unreserved characters (and
/// `/` when `keep_slash`).
pub fn pct_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        let plain = b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'.' | b'_' | b'~')
            || (keep_slash && b == b'/');
        if plain {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub fn pct_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
