//! Writing whole objects: PutObject and CopyObject, and what their
//! requests share with multipart uploads (bodies, trailers, storage
//! classes, copy sources).

use super::tagging::parse_tagging;
use super::S3Gateway;
use crate::convert;
use crate::errors::to_s3;
use cluster::{ChecksumAlgorithm, CopyOptions, PutOptions, Trailer};
use s3s::dto::*;
use s3s::{s3_error, S3Request, S3Response, S3Result};
use std::collections::BTreeMap;
use std::sync::Arc;

const MAX_PUT_BYTES: i64 = 5 << 30;

/// The x-amz-checksum-* trailers of an aws-chunked body, read once the
/// body has been.
pub(super) fn trailer_of<T>(req: &S3Request<T>) -> Option<Trailer> {
    let handle = req.trailing_headers.clone()?;
    Some(Trailer(Arc::new(move || {
        let mut out = BTreeMap::new();
        handle.read(|h| {
            for a in ChecksumAlgorithm::ALL {
                let name = format!("x-amz-checksum-{}", a.name().to_ascii_lowercase());
                if let Some(v) = h.get(name.as_str()).and_then(|v| v.to_str().ok()) {
                    out.insert(a.name().to_string(), v.to_string());
                }
            }
        });
        out
    })))
}

pub(super) fn storage_class(s: Option<StorageClass>) -> Option<String> {
    s.map(|c| c.as_str().to_string())
}

/// Bucket, key and version of an x-amz-copy-source.
pub(super) fn copy_source(src: &CopySource) -> S3Result<(String, String, Option<String>)> {
    match src {
        CopySource::Bucket {
            bucket,
            key,
            version_id,
        } => Ok((
            bucket.to_string(),
            key.to_string(),
            version_id.as_ref().map(|v| v.to_string()),
        )),
        _ => Err(s3_error!(NotImplemented, "access point copy sources")),
    }
}

impl S3Gateway {
    pub(super) async fn handle_put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        let _slot = self.slot(&req)?;
        Self::caller(&req)?;
        let handle = self.authorize(&req, &req.input.bucket).await?;
        let trailer = trailer_of(&req);
        let algorithms = convert::requested_algorithms(
            &req.headers,
            req.input.checksum_algorithm.as_ref().map(|a| a.as_str()),
        );
        let i = req.input;
        // S3's limit for one PUT; larger objects go by multipart.
        if i.content_length.is_some_and(|l| l > MAX_PUT_BYTES) {
            return Err(s3_error!(EntityTooLarge, "a single PUT is at most 5 GiB"));
        }
        let expected = sent_checksums!(i);
        let customer = customer_key!(i)?;
        let opts = PutOptions {
            content_type: i.content_type.clone(),
            user_metadata: stored_metadata!(i),
            storage_class: storage_class(i.storage_class),
            checksums: algorithms,
            content_md5: convert::content_md5(i.content_md5.as_ref())?,
            expected_checksums: expected,
            customer_key: customer.clone(),
            tags: parse_tagging(i.tagging.as_deref())?,
            trailer,
            write_conditions: convert::conditions(
                i.if_match.as_ref(),
                i.if_none_match.as_ref(),
                None,
                None,
            ),
        };
        let r = self
            .store
            .put_object(&handle, &i.key, self.body(i.body), opts)
            .await
            .map_err(to_s3)?;
        let mut out = PutObjectOutput {
            checksum_type: (!r.checksums.is_empty())
                .then(|| ChecksumType::from_static(ChecksumType::FULL_OBJECT)),
            e_tag: Some(convert::etag(&r.etag)),
            version_id: r.version_id,
            size: Some(r.size as i64),
            ..Default::default()
        };
        fill_checksums!(out, &r.checksums);
        if let Some(k) = customer {
            out.sse_customer_algorithm = Some("AES256".into());
            out.sse_customer_key_md5 = Some(k.md5_b64().to_string());
        }
        Ok(S3Response::new(out))
    }

    pub(super) async fn handle_copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        let _slot = self.slot(&req)?;
        Self::caller(&req)?;
        let (src_bucket, src_key, src_version) = copy_source(&req.input.copy_source)?;
        let src = self.authorize(&req, &src_bucket).await?;
        let handle = self.authorize(&req, &req.input.bucket).await?;
        let i = req.input;
        let replace = i
            .metadata_directive
            .as_ref()
            .is_some_and(|d| d.as_str() == "REPLACE");
        if src_bucket == i.bucket
            && src_key == i.key
            && src_version.is_none()
            && !replace
            && i.storage_class.is_none()
            && i.sse_customer_key.is_none()
        {
            return Err(s3_error!(
                InvalidRequest,
                "This copy request is illegal because it is trying to copy an object to itself without changing the object's metadata, storage class, website redirect location or encryption attributes."
            ));
        }
        let replace_tags = i
            .tagging_directive
            .as_ref()
            .is_some_and(|d| d.as_str() == "REPLACE");
        let opts = CopyOptions {
            source_version: src_version.clone(),
            source_conditions: convert::conditions(
                i.copy_source_if_match.as_ref(),
                i.copy_source_if_none_match.as_ref(),
                i.copy_source_if_modified_since.as_ref(),
                i.copy_source_if_unmodified_since.as_ref(),
            ),
            source_customer_key: convert::customer_key(
                i.copy_source_sse_customer_algorithm.as_deref(),
                i.copy_source_sse_customer_key.as_deref(),
                i.copy_source_sse_customer_key_md5.as_deref(),
            )?,
            replace_metadata: replace.then(|| (i.content_type.clone(), stored_metadata!(i))),
            replace_tags: if replace_tags {
                Some(parse_tagging(i.tagging.as_deref())?)
            } else {
                None
            },
            storage_class: storage_class(i.storage_class.clone()),
            customer_key: customer_key!(i)?,
        };
        let r = self
            .store
            .copy_object(&src, &src_key, &handle, &i.key, opts)
            .await
            .map_err(to_s3)?;
        let mut result = CopyObjectResult {
            e_tag: Some(convert::etag(&r.etag)),
            last_modified: Some(convert::timestamp(r.last_modified_ms)),
            ..Default::default()
        };
        fill_checksums!(result, &r.checksums);
        Ok(S3Response::new(CopyObjectOutput {
            copy_object_result: Some(result),
            copy_source_version_id: src_version,
            version_id: r.version_id,
            ..Default::default()
        }))
    }
}
