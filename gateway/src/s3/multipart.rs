//! Multipart uploads: create, upload a part (or copy one), complete,
//! abort, and list parts and uploads.

use super::list::{prefixes_of, url_encoding};
use super::put::{copy_source, storage_class, trailer_of};
use super::tagging::parse_tagging;
use super::{owner, S3Gateway};
use crate::convert;
use crate::errors::to_s3;
use cluster::{
    ChecksumAlgorithm, CompletedPart as DoneP, GetOptions, MultipartOptions, PartOptions,
};
use futures_util::TryStreamExt;
use s3s::dto::*;
use s3s::{s3_error, S3Request, S3Response, S3Result};

impl S3Gateway {
    pub(super) async fn handle_create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let _slot = self.slot(&req)?;
        let me = Self::caller(&req)?.to_string();
        let handle = self.authorize(&req, &req.input.bucket).await?;
        let i = req.input;
        let algorithm = i
            .checksum_algorithm
            .as_ref()
            .and_then(|a| ChecksumAlgorithm::from_name(a.as_str()));
        let customer = customer_key!(i)?;
        let opts = MultipartOptions {
            content_type: i.content_type.clone(),
            user_metadata: stored_metadata!(i),
            storage_class: storage_class(i.storage_class),
            checksum_algorithm: algorithm,
            customer_key: customer.clone(),
            tags: parse_tagging(i.tagging.as_deref())?,
        };
        let up = self
            .store
            .create_multipart_upload(&handle, &i.key, &me, opts)
            .await
            .map_err(to_s3)?;
        Ok(S3Response::new(CreateMultipartUploadOutput {
            bucket: Some(i.bucket),
            key: Some(i.key),
            upload_id: Some(up.upload_id),
            checksum_algorithm: i.checksum_algorithm,
            sse_customer_algorithm: customer.as_ref().map(|_| "AES256".into()),
            sse_customer_key_md5: customer.map(|k| k.md5_b64().to_string()),
            ..Default::default()
        }))
    }

    pub(super) async fn handle_upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        let _slot = self.slot(&req)?;
        Self::caller(&req)?;
        let handle = self.authorize(&req, &req.input.bucket).await?;
        let trailer = trailer_of(&req);
        let algorithms = convert::requested_algorithms(
            &req.headers,
            req.input.checksum_algorithm.as_ref().map(|a| a.as_str()),
        );
        let i = req.input;
        let opts = PartOptions {
            content_md5: convert::content_md5(i.content_md5.as_ref())?,
            expected_checksums: sent_checksums!(i),
            customer_key: customer_key!(i)?,
            checksums: algorithms,
            trailer,
        };
        let p = self
            .store
            .upload_part(
                &handle,
                &i.key,
                &i.upload_id,
                i.part_number.max(0) as u32,
                self.body(i.body),
                opts,
            )
            .await
            .map_err(to_s3)?;
        let mut out = UploadPartOutput {
            e_tag: Some(convert::etag(&p.etag)),
            ..Default::default()
        };
        fill_checksums!(out, &p.checksums);
        Ok(S3Response::new(out))
    }

    pub(super) async fn handle_upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        let _slot = self.slot(&req)?;
        Self::caller(&req)?;
        let (src_bucket, src_key, src_version) = copy_source(&req.input.copy_source)?;
        let src = self.authorize(&req, &src_bucket).await?;
        let handle = self.authorize(&req, &req.input.bucket).await?;
        let i = req.input;
        let range = match &i.copy_source_range {
            Some(r) => {
                let bad = || {
                    s3_error!(
                        InvalidArgument,
                        "x-amz-copy-source-range must be bytes=first-last"
                    )
                };
                let r = r.strip_prefix("bytes=").ok_or_else(bad)?;
                let (a, b) = r.split_once('-').ok_or_else(bad)?;
                let a: u64 = a.parse().map_err(|_| bad())?;
                let b: u64 = b.parse().map_err(|_| bad())?;
                if b < a {
                    return Err(bad());
                }
                Some(cluster::ByteRange::FromTo(a, b))
            }
            None => None,
        };
        let src = self
            .store
            .get_object(
                &src,
                &src_key,
                GetOptions {
                    version: src_version.clone(),
                    range,
                    part_number: None,
                    conditions: convert::conditions(
                        i.copy_source_if_match.as_ref(),
                        i.copy_source_if_none_match.as_ref(),
                        i.copy_source_if_modified_since.as_ref(),
                        i.copy_source_if_unmodified_since.as_ref(),
                    ),
                    customer_key: convert::customer_key(
                        i.copy_source_sse_customer_algorithm.as_deref(),
                        i.copy_source_sse_customer_key.as_deref(),
                        i.copy_source_sse_customer_key_md5.as_deref(),
                    )?,
                },
            )
            .await
            .map_err(|e| match e {
                cluster::Error::NotModified { .. } => s3_error!(PreconditionFailed),
                e => to_s3(e),
            })?;
        if let (Some(cluster::ByteRange::FromTo(_, last)), Some((_, end))) = (range, src.range) {
            // S3 refuses a copy range that runs past the source.
            if last + 1 > end {
                return Err(s3_error!(
                    InvalidRange,
                    "the copy range runs past the source object"
                ));
            }
        }
        let body = src.body.map_err(|e| e.to_string());
        let p = self
            .store
            .upload_part(
                &handle,
                &i.key,
                &i.upload_id,
                i.part_number.max(0) as u32,
                body,
                PartOptions {
                    customer_key: customer_key!(i)?,
                    ..PartOptions::default()
                },
            )
            .await
            .map_err(to_s3)?;
        Ok(S3Response::new(UploadPartCopyOutput {
            copy_part_result: Some(CopyPartResult {
                e_tag: Some(convert::etag(&p.etag)),
                last_modified: Some(convert::timestamp(p.last_modified_ms)),
                ..Default::default()
            }),
            copy_source_version_id: src_version,
            ..Default::default()
        }))
    }

    pub(super) async fn handle_complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let _slot = self.slot(&req)?;
        Self::caller(&req)?;
        let handle = self.authorize(&req, &req.input.bucket).await?;
        let i = req.input;
        let parts: Vec<DoneP> = i
            .multipart_upload
            .and_then(|m| m.parts)
            .unwrap_or_default()
            .into_iter()
            .map(|p| DoneP {
                part_number: p.part_number.unwrap_or(0).max(0) as u32,
                etag: p.e_tag.map(|e| e.value().to_string()).unwrap_or_default(),
            })
            .collect();
        if parts.is_empty() {
            return Err(s3_error!(MalformedXML, "no parts listed"));
        }
        let conditions =
            convert::conditions(i.if_match.as_ref(), i.if_none_match.as_ref(), None, None);
        let r = self
            .store
            .complete_multipart_upload_if(&handle, &i.key, &i.upload_id, &parts, &conditions)
            .await
            .map_err(to_s3)?;
        // A whole-object checksum the client sent must match ours.
        let sent = sent_checksums!(i);
        let bare = |v: &str| v.split('-').next().unwrap_or("").trim().to_string();
        for (name, v) in &sent {
            if r.checksums.get(name).map(|ours| bare(ours)) != Some(bare(v)) {
                return Err(s3_error!(
                    BadDigest,
                    "the {name} checksum sent does not match the object's"
                ));
            }
        }
        let mut out = CompleteMultipartUploadOutput {
            checksum_type: (!r.checksums.is_empty())
                .then(|| ChecksumType::from_static(ChecksumType::COMPOSITE)),
            bucket: Some(i.bucket.clone()),
            key: Some(i.key.clone()),
            e_tag: Some(convert::etag(&r.etag)),
            location: Some(format!("/{}/{}", i.bucket, i.key)),
            version_id: r.version_id,
            ..Default::default()
        };
        fill_checksums!(out, &r.checksums);
        Ok(S3Response::new(out))
    }

    pub(super) async fn handle_abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        Self::caller(&req)?;
        let handle = self.authorize(&req, &req.input.bucket).await?;
        let i = req.input;
        self.store
            .abort_multipart_upload(&handle, &i.key, &i.upload_id)
            .await
            .map_err(to_s3)?;
        Ok(S3Response::new(AbortMultipartUploadOutput::default()))
    }

    pub(super) async fn handle_list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        let me = Self::caller(&req)?.to_string();
        let handle = self.authorize(&req, &req.input.bucket).await?;
        let i = req.input;
        let max = i.max_parts.map_or(1000, |m| m.clamp(0, 1000) as usize);
        let page = self
            .store
            .list_parts(
                &handle,
                &i.key,
                &i.upload_id,
                i.part_number_marker.map(|m| m.max(0) as u32),
                max,
            )
            .await
            .map_err(to_s3)?;
        let parts = page
            .parts
            .iter()
            .map(|p| {
                let mut part = Part {
                    e_tag: Some(convert::etag(&p.etag)),
                    last_modified: Some(convert::timestamp(p.last_modified_ms)),
                    part_number: Some(p.part_number as i32),
                    size: Some(p.size as i64),
                    ..Default::default()
                };
                fill_checksums!(part, &p.checksums);
                part
            })
            .collect();
        Ok(S3Response::new(ListPartsOutput {
            bucket: Some(i.bucket),
            key: Some(i.key),
            upload_id: Some(i.upload_id),
            is_truncated: Some(page.is_truncated),
            max_parts: Some(max as i32),
            next_part_number_marker: page.next_part_number_marker.map(|n| n as i32),
            part_number_marker: i.part_number_marker,
            parts: Some(parts),
            owner: Some(owner(&me)),
            initiator: Some(Initiator {
                display_name: Some(me.clone()),
                id: Some(me),
            }),
            storage_class: Some(StorageClass::from_static(StorageClass::STANDARD)),
            ..Default::default()
        }))
    }

    pub(super) async fn handle_list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        Self::caller(&req)?;
        let handle = self.authorize(&req, &req.input.bucket).await?;
        let i = req.input;
        let url = url_encoding(&i.encoding_type);
        let max = i.max_uploads.map_or(1000, |m| m.clamp(0, 1000) as usize);
        let page = self
            .store
            .list_multipart_uploads(
                &handle,
                i.prefix.as_deref().unwrap_or(""),
                i.delimiter.as_deref().filter(|d| !d.is_empty()),
                i.key_marker.as_deref().filter(|k| !k.is_empty()),
                i.upload_id_marker.as_deref().filter(|k| !k.is_empty()),
                max,
            )
            .await
            .map_err(to_s3)?;
        let uploads = page
            .uploads
            .iter()
            .map(|u| MultipartUpload {
                initiated: Some(convert::timestamp(u.initiated_ms)),
                initiator: Some(Initiator {
                    display_name: Some(u.owner.clone()),
                    id: Some(u.owner.clone()),
                }),
                key: Some(convert::encode_key(&u.key, url)),
                owner: Some(owner(&u.owner)),
                storage_class: Some(StorageClass::from(u.storage_class.clone())),
                upload_id: Some(u.upload_id.clone()),
                ..Default::default()
            })
            .collect();
        Ok(S3Response::new(ListMultipartUploadsOutput {
            bucket: Some(i.bucket),
            common_prefixes: Some(prefixes_of(&page.common_prefixes, url)),
            delimiter: i.delimiter,
            encoding_type: i.encoding_type,
            is_truncated: Some(page.is_truncated),
            key_marker: i.key_marker,
            max_uploads: Some(max as i32),
            next_key_marker: page.next_key_marker,
            next_upload_id_marker: page.next_upload_id_marker,
            prefix: i.prefix,
            upload_id_marker: i.upload_id_marker,
            uploads: Some(uploads),
            ..Default::default()
        }))
    }
}
