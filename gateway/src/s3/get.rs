//! Reading objects: GetObject, HeadObject (which answer the same headers,
//! filled once by [`ObjectHeaders`]) and GetObjectAttributes.

use super::S3Gateway;
use crate::convert;
use crate::errors::to_s3;
use bytes::Bytes;
use cluster::{GetOptions, ObjectInfo};
use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result};
use std::collections::BTreeMap;

/// The read options of a GetObject or HeadObject input (two s3s types
/// with these same-named fields and no trait in common, hence a macro).
macro_rules! read_options {
    ($i:expr, $range:expr) => {
        GetOptions {
            version: $i.version_id.clone(),
            range: $range,
            part_number: $i.part_number.map(|p| p.max(0) as u32),
            conditions: convert::conditions(
                $i.if_match.as_ref(),
                $i.if_none_match.as_ref(),
                $i.if_modified_since.as_ref(),
                $i.if_unmodified_since.as_ref(),
            ),
            customer_key: customer_key!($i)?,
        }
    };
}

/// The version id an answer shows: `asked` is whether the request named
/// a version (S3 then echoes even "null").
fn shown_version(info: &ObjectInfo, asked: bool) -> Option<String> {
    (info.version_id != "null" || asked).then(|| info.version_id.clone())
}

/// Every header GetObject and HeadObject both answer about an object, in
/// the outputs' own field types.
struct ObjectHeaders {
    accept_ranges: Option<String>,
    content_length: Option<i64>,
    content_type: Option<String>,
    cache_control: Option<String>,
    content_disposition: Option<String>,
    content_encoding: Option<String>,
    content_language: Option<String>,
    e_tag: Option<ETag>,
    expires: Option<Timestamp>,
    last_modified: Option<Timestamp>,
    metadata: Option<Metadata>,
    parts_count: Option<i32>,
    storage_class: Option<StorageClass>,
    version_id: Option<String>,
    sse_customer_algorithm: Option<String>,
    sse_customer_key_md5: Option<String>,
    /// Empty unless [`ObjectHeaders::add_checksums`] was called.
    checksums: BTreeMap<String, String>,
    checksum_type: Option<ChecksumType>,
}

impl ObjectHeaders {
    /// `length`: the bytes the answer covers; `asked_version`: the request
    /// named a version; `asked_part`: it named a part number.
    fn of(info: &ObjectInfo, length: u64, asked_version: bool, asked_part: bool) -> Self {
        let (user, std_headers) = convert::split_metadata(info);
        Self {
            accept_ranges: Some("bytes".into()),
            content_length: Some(length as i64),
            content_type: Some(if info.content_type.is_empty() {
                "binary/octet-stream".to_string()
            } else {
                info.content_type.clone()
            }),
            cache_control: std_headers.get("cache-control").cloned(),
            content_disposition: std_headers.get("content-disposition").cloned(),
            content_encoding: std_headers.get("content-encoding").cloned(),
            content_language: std_headers.get("content-language").cloned(),
            e_tag: Some(convert::etag(&info.etag)),
            expires: std_headers
                .get("expires")
                .and_then(|v| v.parse::<u64>().ok())
                .map(convert::timestamp),
            last_modified: Some(convert::timestamp(info.last_modified_ms)),
            metadata: (!user.is_empty()).then_some(user),
            parts_count: (info.parts > 0 && asked_part).then_some(info.parts as i32),
            storage_class: (info.storage_class != "STANDARD")
                .then(|| StorageClass::from(info.storage_class.clone())),
            version_id: shown_version(info, asked_version),
            sse_customer_algorithm: info.sse_customer_key_md5.as_ref().map(|_| "AES256".into()),
            sse_customer_key_md5: info.sse_customer_key_md5.clone(),
            checksums: BTreeMap::new(),
            checksum_type: None,
        }
    }

    /// The stored checksums and their type, for x-amz-checksum-mode.
    fn add_checksums(&mut self, info: &ObjectInfo) {
        self.checksums = info.checksums.clone();
        self.checksum_type = convert::checksum_type(&info.checksums);
    }
}

/// `From<ObjectHeaders>` for GetObjectOutput and HeadObjectOutput, which
/// s3s makes two types with these same-named fields and no trait in
/// common: a macro writes the move once for both. The destructuring names
/// every field, so a header added to `ObjectHeaders` does not compile
/// until it is moved here too.
macro_rules! from_object_headers {
    ($($output:ty),+) => {$(
        impl From<ObjectHeaders> for $output {
            fn from(h: ObjectHeaders) -> Self {
                let ObjectHeaders {
                    accept_ranges,
                    content_length,
                    content_type,
                    cache_control,
                    content_disposition,
                    content_encoding,
                    content_language,
                    e_tag,
                    expires,
                    last_modified,
                    metadata,
                    parts_count,
                    storage_class,
                    version_id,
                    sse_customer_algorithm,
                    sse_customer_key_md5,
                    checksums,
                    checksum_type,
                } = h;
                let mut out = Self {
                    accept_ranges,
                    content_length,
                    content_type,
                    cache_control,
                    content_disposition,
                    content_encoding,
                    content_language,
                    e_tag,
                    expires,
                    last_modified,
                    metadata,
                    parts_count,
                    storage_class,
                    version_id,
                    sse_customer_algorithm,
                    sse_customer_key_md5,
                    checksum_type,
                    ..Default::default()
                };
                fill_checksums!(out, &checksums);
                out
            }
        }
    )+};
}

from_object_headers!(GetObjectOutput, HeadObjectOutput);

impl S3Gateway {
    pub(super) async fn handle_get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        let slot = self.slot(&req)?;
        let handle = self.authorize(&req, &req.input.bucket).await?;
        let i = req.input;
        let opts = read_options!(i, i.range.as_ref().map(convert::range));
        let got = self
            .store
            .get_object(&handle, &i.key, opts)
            .await
            .map_err(to_s3)?;
        let info = got.info;
        let length = got.range.map_or(info.size, |(s, e)| e - s);
        let mut h = ObjectHeaders::of(
            &info,
            length,
            i.version_id.is_some(),
            i.part_number.is_some(),
        );
        if i.checksum_mode.is_some() && got.range.is_none() {
            h.add_checksums(&info);
        }
        // The response-* query parameters override the stored headers. (s3s
        // sets these headers again from the query after serializing, and
        // response-expires too, so this only keeps the output right alone.)
        h.content_type = i.response_content_type.or(h.content_type);
        h.cache_control = i.response_cache_control.or(h.cache_control);
        h.content_disposition = i.response_content_disposition.or(h.content_disposition);
        h.content_encoding = i.response_content_encoding.or(h.content_encoding);
        h.content_language = i.response_content_language.or(h.content_language);
        let body = BodyWithSlot {
            body: std::sync::Mutex::new(got.body),
            _slot: slot,
        };
        Ok(S3Response::new(GetObjectOutput {
            body: Some(StreamingBlob::wrap(body)),
            content_range: got
                .range
                .map(|(s, e)| format!("bytes {s}-{}/{}", e.saturating_sub(1), info.size)),
            tag_count: (!info.tags.is_empty()).then_some(info.tags.len() as i32),
            ..GetObjectOutput::from(h)
        }))
    }

    pub(super) async fn handle_head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        let handle = self.authorize(&req, &req.input.bucket).await?;
        let i = req.input;
        let opts = read_options!(i, None);
        let info = self
            .store
            .head_object(&handle, &i.key, &opts)
            .await
            .map_err(to_s3)?;
        // What a GET with the same headers would return.
        let range = match (info.part_range, i.range.as_ref().map(convert::range)) {
            (Some(part), _) => Some(part),
            (None, Some(r)) => Some(r.resolve(info.size).map_err(to_s3)?),
            (None, None) => None,
        };
        let size = range.map_or(info.size, |(s, e)| e - s);
        let mut h = ObjectHeaders::of(&info, size, i.version_id.is_some(), i.part_number.is_some());
        if i.checksum_mode.is_some() {
            h.add_checksums(&info);
        }
        Ok(S3Response::new(HeadObjectOutput {
            content_range: range
                .map(|(s, e)| format!("bytes {s}-{}/{}", e.saturating_sub(1), info.size)),
            ..HeadObjectOutput::from(h)
        }))
    }

    /// What HEAD knows, as XML, limited to the attributes asked for. Parts
    /// are counted only: the manifest keeps part sizes, not each part's
    /// ETag or checksum, so no per-part list is given.
    pub(super) async fn handle_get_object_attributes(
        &self,
        req: S3Request<GetObjectAttributesInput>,
    ) -> S3Result<S3Response<GetObjectAttributesOutput>> {
        let handle = self.authorize(&req, &req.input.bucket).await?;
        let i = req.input;
        let opts = GetOptions {
            version: i.version_id.clone(),
            range: None,
            part_number: None,
            conditions: convert::conditions(None, None, None, None),
            customer_key: customer_key!(i)?,
        };
        let info = self
            .store
            .head_object(&handle, &i.key, &opts)
            .await
            .map_err(to_s3)?;
        // SDKs send the list as one comma-separated header, which s3s
        // hands over as a single element.
        let wants = |name: &str| {
            i.object_attributes
                .iter()
                .flat_map(|a| a.as_str().split(','))
                .any(|a| a.trim() == name)
        };
        let mut out = GetObjectAttributesOutput {
            last_modified: Some(convert::timestamp(info.last_modified_ms)),
            version_id: shown_version(&info, i.version_id.is_some()),
            ..Default::default()
        };
        if wants(ObjectAttributes::ETAG) {
            out.e_tag = Some(convert::etag(&info.etag));
        }
        if wants(ObjectAttributes::OBJECT_SIZE) {
            out.object_size = Some(info.size as i64);
        }
        if wants(ObjectAttributes::STORAGE_CLASS) {
            out.storage_class = Some(StorageClass::from(info.storage_class.clone()));
        }
        if wants(ObjectAttributes::CHECKSUM) && !info.checksums.is_empty() {
            let mut c = Checksum {
                checksum_type: convert::checksum_type(&info.checksums),
                ..Default::default()
            };
            fill_checksums!(c, &info.checksums);
            out.checksum = Some(c);
        }
        if wants(ObjectAttributes::OBJECT_PARTS) && info.parts > 0 {
            out.object_parts = Some(GetObjectAttributesParts {
                total_parts_count: Some(info.parts as i32),
                ..Default::default()
            });
        }
        Ok(S3Response::new(out))
    }
}

/// An object body for s3s (which wants `Sync`), holding the request's
/// slot for as long as the body streams.
struct BodyWithSlot {
    // Only ever reached through `&mut self` (`get_mut`): never locked.
    body: std::sync::Mutex<cluster::ObjectBody>,
    _slot: crate::admission::Slot,
}

impl futures_util::Stream for BodyWithSlot {
    type Item = Result<Bytes, cluster::Error>;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let body = match this.body.get_mut() {
            Ok(b) => b,
            Err(poisoned) => poisoned.into_inner(),
        };
        body.as_mut().poll_next(cx)
    }
}
