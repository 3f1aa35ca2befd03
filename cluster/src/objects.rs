//! Objects: put, get (ranges, part numbers, conditions), head and copy.

use crate::checksum::{self, ChecksumAlgorithm};
use crate::chunk_stream::{self, PendingRefs, ReadKey, WriteCtx};
use crate::error::{Error, Result};
use crate::naming;
use crate::secrets::CustomerKey;
use crate::store::BucketRef;
use crate::store::{BucketHandle, ObjectStore};
use crate::version_id::VersionId;
use bytes::Bytes;
use futures_util::Stream;
use metadata::model::{ObjectVersion, Referrer, VersioningState};
use std::collections::BTreeMap;

pub use crate::chunk_stream::ObjectBody;

/// What S3 shows of one object version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    /// "null" for the null version, else 32 hex digits.
    pub version_id: String,
    pub is_latest: bool,
    pub delete_marker: bool,
    pub size: u64,
    /// Hex MD5 (single part) or S3's multipart form `<hex>-<parts>`,
    /// without quotes.
    pub etag: String,
    pub content_type: String,
    pub user_metadata: BTreeMap<String, String>,
    pub last_modified_ms: u64,
    pub storage_class: String,
    /// Algorithm name → base64 digest.
    pub checksums: BTreeMap<String, String>,
    /// Parts of a multipart object (0 for a single-part one).
    pub parts: usize,
    pub tags: BTreeMap<String, String>,
    /// The MD5 of the customer key it is sealed with, if any.
    pub sse_customer_key_md5: Option<String>,
    /// The bytes `[start, end)` of the part a HEAD asked for by number.
    pub part_range: Option<(u64, u64)>,
}

pub(crate) fn version_text(v: &ObjectVersion) -> String {
    if v.null_version {
        "null".to_string()
    } else {
        VersionId::from_slice(&v.version_id).map_or_else(String::new, |id| id.to_text())
    }
}

pub(crate) fn info_of(v: &ObjectVersion, is_latest: bool) -> ObjectInfo {
    ObjectInfo {
        key: v.key.clone(),
        version_id: version_text(v),
        is_latest,
        delete_marker: v.delete_marker,
        size: v.size,
        etag: v.etag.clone(),
        content_type: v.content_type.clone(),
        user_metadata: v.user_metadata.clone(),
        last_modified_ms: v.created_ms,
        storage_class: if v.storage_class.is_empty() {
            "STANDARD".to_string()
        } else {
            v.storage_class.clone()
        },
        checksums: v.checksums.clone(),
        parts: v.part_sizes.len(),
        tags: v.tags.clone(),
        sse_customer_key_md5: (!v.sse_customer_key_md5.is_empty())
            .then(|| v.sse_customer_key_md5.clone()),
        part_range: None,
    }
}

#[derive(Debug, Clone, Default)]
pub struct PutOptions {
    pub content_type: Option<String>,
    pub user_metadata: BTreeMap<String, String>,
    pub storage_class: Option<String>,
    /// Checksums to compute and store.
    pub checksums: Vec<ChecksumAlgorithm>,
    /// Content-MD5 the client sent: the write fails if the data differs.
    pub content_md5: Option<[u8; 16]>,
    /// Checksums the client sent (name → base64): checked the same way.
    pub expected_checksums: BTreeMap<String, String>,
    pub customer_key: Option<CustomerKey>,
    pub tags: BTreeMap<String, String>,
    /// Checksums that arrive after the body (HTTP trailers of aws-chunked
    /// uploads): read once the body has ended, checked before the write
    /// is committed. Their algorithms belong in `checksums`.
    pub trailer: Option<Trailer>,
    /// Conditional write (If-Match / If-None-Match against the current
    /// object), checked before the data is read and again at commit.
    pub write_conditions: Conditions,
}

/// A source of checksums known only after the body (name → base64).
#[derive(Clone)]
pub struct Trailer(pub std::sync::Arc<dyn Fn() -> BTreeMap<String, String> + Send + Sync>);

impl std::fmt::Debug for Trailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Trailer(..)")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutResult {
    /// None when the write made a null version (S3 then sends no id).
    pub version_id: Option<String>,
    pub etag: String,
    pub size: u64,
    pub checksums: BTreeMap<String, String>,
    pub last_modified_ms: u64,
}

/// An HTTP byte range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// `bytes=a-b` (inclusive).
    FromTo(u64, u64),
    /// `bytes=a-`
    From(u64),
    /// `bytes=-n`: the last n bytes.
    Last(u64),
}

impl ByteRange {
    /// `[start, end)` within an object of `size` bytes.
    pub fn resolve(&self, size: u64) -> Result<(u64, u64)> {
        let bad = Error::InvalidRange { size };
        match *self {
            ByteRange::FromTo(a, b) if a <= b && a < size => Ok((a, b.saturating_add(1).min(size))),
            ByteRange::From(a) if a < size => Ok((a, size)),
            ByteRange::Last(n) if n > 0 && size > 0 => Ok((size - n.min(size), size)),
            _ => Err(bad),
        }
    }
}

/// Conditional request headers (times in ms since the epoch; HTTP dates
/// have second resolution, so comparisons are in whole seconds).
#[derive(Debug, Clone, Default)]
pub struct Conditions {
    pub if_match: Option<String>,
    pub if_none_match: Option<String>,
    pub if_modified_since_ms: Option<u64>,
    pub if_unmodified_since_ms: Option<u64>,
}

fn etag_matches(list: &str, etag: &str) -> bool {
    list.split(',').any(|t| {
        let t = t.trim();
        let t = t.strip_prefix("W/").unwrap_or(t);
        t == "*" || t.trim_matches('"') == etag
    })
}

impl Conditions {
    /// RFC 9110 order: If-Match, else If-Unmodified-Since (412); then
    /// If-None-Match, else If-Modified-Since (304 for reads).
    pub(crate) fn check(&self, v: &ObjectVersion) -> Result<()> {
        let modified_s = v.created_ms / 1000;
        if let Some(m) = &self.if_match {
            if !etag_matches(m, &v.etag) {
                return Err(Error::PreconditionFailed);
            }
        } else if let Some(t) = self.if_unmodified_since_ms {
            if modified_s > t / 1000 {
                return Err(Error::PreconditionFailed);
            }
        }
        let not_modified = Error::NotModified {
            etag: v.etag.clone(),
            last_modified_ms: v.created_ms,
        };
        if let Some(m) = &self.if_none_match {
            if etag_matches(m, &v.etag) {
                return Err(not_modified);
            }
        } else if let Some(t) = self.if_modified_since_ms {
            if modified_s <= t / 1000 {
                return Err(not_modified);
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Default)]
pub struct GetOptions {
    /// A version id, "null", or None for the latest.
    pub version: Option<String>,
    pub range: Option<ByteRange>,
    /// One part of a multipart object (1-based).
    pub part_number: Option<u32>,
    pub conditions: Conditions,
    pub customer_key: Option<CustomerKey>,
}

pub struct GetResult {
    pub info: ObjectInfo,
    /// The bytes sent, `[start, end)`, when a range or part was asked.
    pub range: Option<(u64, u64)>,
    pub body: ObjectBody,
}

#[derive(Debug, Clone, Default)]
pub struct CopyOptions {
    pub source_version: Option<String>,
    /// copy-source-if-* headers: any failure is 412.
    pub source_conditions: Conditions,
    pub source_customer_key: Option<CustomerKey>,
    /// Some: REPLACE the metadata (content type, user metadata); None:
    /// COPY it from the source.
    pub replace_metadata: Option<(Option<String>, BTreeMap<String, String>)>,
    pub replace_tags: Option<BTreeMap<String, String>>,
    pub storage_class: Option<String>,
    pub customer_key: Option<CustomerKey>,
}

impl ObjectStore {
    /// Store `body` (any length, streamed) as `key` in `bucket`.
    pub async fn put_object<S, E>(
        &self,
        bucket: impl Into<BucketRef<'_>>,
        key: &str,
        body: S,
        opts: PutOptions,
    ) -> Result<PutResult>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Send + Unpin,
        E: std::fmt::Display,
    {
        naming::check_object_key(key)?;
        let b = self.bucket(bucket).await?;
        let erasure = self.erasure_for(&b.record, opts.storage_class.as_deref())?;
        self.check_write_conditions(&b, key, &opts.write_conditions)
            .await?;
        // Chunks are referenced under the id the write starts with; the
        // version takes a fresh id when it commits, so of two overlapping
        // writes the one that finishes last is the object (as S3).
        let write_id = self.inner.hlc.next();
        let referrer = Referrer {
            bucket_id: b.id().to_vec(),
            key_hash: b.key_hash(key).to_vec(),
            version: write_id.0.to_vec(),
            part_number: 0,
        };
        let mut algorithms = opts.checksums.clone();
        for name in opts.expected_checksums.keys() {
            let a = ChecksumAlgorithm::from_name(name).ok_or_else(|| {
                Error::InvalidArgument(format!("unknown checksum algorithm {name}"))
            })?;
            algorithms.push(a);
        }
        let ctx = WriteCtx {
            io: self.chunk_io(),
            sealing: b.sealing(opts.customer_key.as_ref()),
            erasure,
            referrer: referrer.clone(),
            algorithms,
            inline_threshold: self.inner.cfg.inline_threshold,
        };
        let written = chunk_stream::write_stream(ctx, body).await?;
        // The write-time references are released however this ends: on
        // success the version's own references have replaced them.
        let write_refs = written.refs;
        let committed: Result<_> = async {
            let mut expected = opts.expected_checksums.clone();
            if let Some(t) = &opts.trailer {
                expected.extend((t.0)());
            }
            verify_digests(&written.digests, opts.content_md5.as_ref(), &expected)?;
            self.check_write_conditions(&b, key, &opts.write_conditions)
                .await?;
            let vid = self.inner.hlc.next();
            let version_referrer = Referrer {
                version: vid.0.to_vec(),
                ..referrer.clone()
            };
            let chunks = write_refs.chunks().to_vec();
            let version_refs = if chunks.is_empty() {
                None
            } else {
                Some(chunk_stream::add_refs(&self.chunk_io(), &version_referrer, &chunks).await?)
            };
            let null = b.versioning() != VersioningState::Enabled;
            let v = ObjectVersion {
                bucket: b.name().to_string(),
                key: key.to_string(),
                version_id: vid.0.to_vec(),
                null_version: null,
                delete_marker: false,
                size: written.size,
                etag: hex::encode(written.digests.md5),
                content_type: opts.content_type.unwrap_or_default(),
                user_metadata: opts.user_metadata,
                chunks,
                inline_data: written.inline,
                created_ms: vid.time_ms(),
                storage_class: opts.storage_class.unwrap_or_default(),
                checksums: written.digests.checksums,
                revision: 0,
                purged: false,
                part_sizes: Vec::new(),
                sse_customer_key_md5: opts
                    .customer_key
                    .as_ref()
                    .map(|k| k.md5_b64().to_string())
                    .unwrap_or_default(),
                tags: opts.tags,
            };
            self.commit_version(&b, &v, version_refs).await?;
            Ok((v, vid, null))
        }
        .await;
        write_refs.release().await;
        let (v, vid, null) = committed?;
        Ok(PutResult {
            version_id: (!null).then(|| vid.to_text()),
            etag: v.etag,
            size: v.size,
            checksums: v.checksums,
            last_modified_ms: v.created_ms,
        })
    }

    /// S3 conditional writes against the current object: If-None-Match
    /// ("*" or an ETag) fails with 412 when it matches; If-Match fails with
    /// 404 when there is no object and 412 when the ETag differs.
    pub(crate) async fn check_write_conditions(
        &self,
        b: &BucketHandle,
        key: &str,
        c: &Conditions,
    ) -> Result<()> {
        if c.if_match.is_none() && c.if_none_match.is_none() {
            return Ok(());
        }
        let current = self
            .latest_version(b, key)
            .await?
            .filter(|v| !v.delete_marker);
        if let Some(m) = &c.if_match {
            match &current {
                None => {
                    return Err(Error::NoSuchKey {
                        bucket: b.name().to_string(),
                        key: key.to_string(),
                        delete_marker: None,
                    })
                }
                Some(v) if !etag_matches(m, &v.etag) => return Err(Error::PreconditionFailed),
                Some(_) => {}
            }
        }
        if let (Some(m), Some(v)) = (&c.if_none_match, &current) {
            if etag_matches(m, &v.etag) {
                return Err(Error::PreconditionFailed);
            }
        }
        Ok(())
    }

    /// Write a new version's manifest, which settles its chunk references
    /// (`refs`: none for an inline or empty object): kept once the
    /// manifest is written, released if it is not. A null version then
    /// replaces the previous null one.
    pub(crate) async fn commit_version(
        &self,
        b: &BucketHandle,
        v: &ObjectVersion,
        refs: Option<PendingRefs>,
    ) -> Result<()> {
        let written = self.write_version(b, v).await;
        match refs {
            Some(refs) => refs.settle(written).await?,
            None => written?,
        }
        if v.null_version {
            self.settle_null(b, &v.key).await?;
        }
        Ok(())
    }

    pub async fn head_object(
        &self,
        bucket: impl Into<BucketRef<'_>>,
        key: &str,
        opts: &GetOptions,
    ) -> Result<ObjectInfo> {
        let b = self.bucket(bucket).await?;
        let (v, latest) = self.find_version(&b, key, opts.version.as_deref()).await?;
        opts.conditions.check(&v)?;
        check_customer_key(&v, opts.customer_key.as_ref())?;
        let mut info = info_of(&v, latest);
        if let Some(p) = opts.part_number {
            info.part_range = Some(part_range(&v, p)?);
        }
        Ok(info)
    }

    pub async fn get_object(
        &self,
        bucket: impl Into<BucketRef<'_>>,
        key: &str,
        opts: GetOptions,
    ) -> Result<GetResult> {
        let b = self.bucket(bucket).await?;
        let (v, latest) = self.find_version(&b, key, opts.version.as_deref()).await?;
        opts.conditions.check(&v)?;
        let read_key = read_key(&b, &v, opts.customer_key.as_ref())?;
        let (start, end, ranged) = match (opts.part_number, opts.range) {
            (Some(p), _) => {
                let (s, e) = part_range(&v, p)?;
                (s, e, true)
            }
            (None, Some(r)) => {
                let (s, e) = r.resolve(v.size)?;
                (s, e, true)
            }
            (None, None) => (0, v.size, false),
        };
        let body = chunk_stream::read_stream(self.chunk_io(), &v, read_key, start, end);
        Ok(GetResult {
            info: info_of(&v, latest),
            range: ranged.then_some((start, end)),
            body,
        })
    }

    /// The chunk layout of a version, `(offset, length)` per chunk (empty
    /// for an inline object): for tools and tests.
    pub async fn object_chunks(
        &self,
        bucket: impl Into<BucketRef<'_>>,
        key: &str,
        version: Option<&str>,
    ) -> Result<Vec<(u64, u64)>> {
        let b = self.bucket(bucket).await?;
        let (v, _) = self.find_version(&b, key, version).await?;
        Ok(v.chunks.iter().map(|c| (c.offset, c.len)).collect())
    }

    /// Copy a version of `src_key` to `dst_key`. Inside one bucket (one key
    /// domain) and without customer keys no data moves: the new manifest
    /// references the same chunks. Otherwise the data is re-sealed under
    /// the destination's key as it streams through.
    pub async fn copy_object(
        &self,
        src_bucket: impl Into<BucketRef<'_>>,
        src_key: &str,
        dst_bucket: impl Into<BucketRef<'_>>,
        dst_key: &str,
        opts: CopyOptions,
    ) -> Result<PutResult> {
        naming::check_object_key(dst_key)?;
        let (src_bucket, dst_bucket) = (src_bucket.into(), dst_bucket.into());
        let same_bucket = src_bucket.name() == dst_bucket.name();
        let src = self.bucket(src_bucket).await?;
        let (v, _) = self
            .find_version(&src, src_key, opts.source_version.as_deref())
            .await?;
        opts.source_conditions.check(&v).map_err(|e| match e {
            Error::NotModified { .. } => Error::PreconditionFailed,
            e => e,
        })?;
        let same_place = same_bucket && src_key == dst_key;
        if same_place
            && opts.replace_metadata.is_none()
            && opts.replace_tags.is_none()
            && opts.storage_class.is_none()
            && opts.customer_key.is_none()
            && opts.source_customer_key.is_none()
        {
            return Err(Error::InvalidArgument(
                "copying an object to itself without changing it".into(),
            ));
        }
        let (content_type, user_metadata) = match &opts.replace_metadata {
            Some((ct, md)) => (ct.clone().unwrap_or_default(), md.clone()),
            None => (v.content_type.clone(), v.user_metadata.clone()),
        };
        let tags = opts.replace_tags.clone().unwrap_or_else(|| v.tags.clone());
        let dst = if same_bucket {
            src.clone()
        } else {
            self.bucket(dst_bucket).await?
        };
        let class_kept = opts
            .storage_class
            .as_ref()
            .is_none_or(|c| *c == v.storage_class);
        let server_side = dst.id() == src.id()
            && v.sse_customer_key_md5.is_empty()
            && opts.customer_key.is_none()
            && class_kept;
        if server_side {
            let vid = self.inner.hlc.next();
            let referrer = Referrer {
                bucket_id: dst.id().to_vec(),
                key_hash: dst.key_hash(dst_key).to_vec(),
                version: vid.0.to_vec(),
                part_number: 0,
            };
            let refs = chunk_stream::add_refs(&self.chunk_io(), &referrer, &v.chunks).await?;
            let null = dst.versioning() != VersioningState::Enabled;
            let mut copy = v.clone();
            copy.key = dst_key.to_string();
            copy.version_id = vid.0.to_vec();
            copy.null_version = null;
            copy.created_ms = vid.time_ms();
            copy.content_type = content_type;
            copy.user_metadata = user_metadata;
            copy.tags = tags;
            copy.revision = 0;
            self.commit_version(&dst, &copy, Some(refs)).await?;
            return Ok(PutResult {
                version_id: (!null).then(|| vid.to_text()),
                etag: copy.etag,
                size: copy.size,
                checksums: copy.checksums,
                last_modified_ms: copy.created_ms,
            });
        }
        let read_key = read_key(&src, &v, opts.source_customer_key.as_ref())?;
        let body = chunk_stream::read_stream(self.chunk_io(), &v, read_key, 0, v.size);
        let algorithms = v
            .checksums
            .keys()
            .filter_map(|n| ChecksumAlgorithm::from_name(n))
            .collect();
        let put = PutOptions {
            content_type: Some(content_type),
            user_metadata,
            storage_class: opts.storage_class.clone().or(Some(v.storage_class.clone())),
            checksums: algorithms,
            content_md5: None,
            expected_checksums: BTreeMap::new(),
            customer_key: opts.customer_key.clone(),
            tags,
            trailer: None,
            write_conditions: Conditions::default(),
        };
        self.put_object(dst_bucket, dst_key, body, put).await
    }
}

/// `[start, end)` of part `p` of `v`.
fn part_range(v: &ObjectVersion, p: u32) -> Result<(u64, u64)> {
    if v.part_sizes.is_empty() {
        return if p == 1 {
            Ok((0, v.size))
        } else {
            Err(Error::InvalidPart { part: p })
        };
    }
    let i = (p as usize)
        .checked_sub(1)
        .filter(|i| *i < v.part_sizes.len())
        .ok_or(Error::InvalidPart { part: p })?;
    let start: u64 = v.part_sizes[..i].iter().sum();
    Ok((start, start + v.part_sizes[i]))
}

fn check_customer_key(v: &ObjectVersion, given: Option<&CustomerKey>) -> Result<()> {
    match (v.sse_customer_key_md5.is_empty(), given) {
        (true, _) => Ok(()),
        (false, None) => Err(Error::CustomerKeyRequired),
        (false, Some(k)) if k.md5_b64() == v.sse_customer_key_md5 => Ok(()),
        (false, Some(_)) => Err(Error::CustomerKeyMismatch),
    }
}

fn read_key(b: &BucketHandle, v: &ObjectVersion, given: Option<&CustomerKey>) -> Result<ReadKey> {
    check_customer_key(v, given)?;
    Ok(match given {
        Some(k) if !v.sse_customer_key_md5.is_empty() => ReadKey::Customer(k.clone()),
        _ => ReadKey::Domain(b.domain.clone()),
    })
}

pub(crate) fn verify_digests(
    got: &checksum::DigestResult,
    md5: Option<&[u8; 16]>,
    expected: &BTreeMap<String, String>,
) -> Result<()> {
    if let Some(m) = md5 {
        if *m != got.md5 {
            return Err(Error::BadDigest {
                what: "Content-MD5".into(),
                detail: format!(
                    "sent {}, computed {}",
                    checksum::b64(m),
                    checksum::b64(&got.md5)
                ),
            });
        }
    }
    for (name, want) in expected {
        let key = ChecksumAlgorithm::from_name(name)
            .map(|a| a.name().to_string())
            .unwrap_or_else(|| name.clone());
        let have = got.checksums.get(&key).map(String::as_str).unwrap_or("");
        if have != want.trim() {
            return Err(Error::BadDigest {
                what: format!("x-amz-checksum-{}", key.to_ascii_lowercase()),
                detail: format!("sent {want}, computed {have}"),
            });
        }
    }
    Ok(())
}
