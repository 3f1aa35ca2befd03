//! Listing a bucket's objects: ListObjects (V1 and V2) and
//! ListObjectVersions.

use super::{owner, S3Gateway};
use crate::convert;
use crate::errors::to_s3;
use cluster::{ListObjectsParams, ListVersionsParams};
use s3s::dto::*;
use s3s::{s3_error, S3Request, S3Response, S3Result};

fn max_keys(v: Option<i32>) -> usize {
    v.map_or(1000, |m| m.clamp(0, 1000) as usize)
}

/// The listing asked for `encoding-type=url`.
pub(super) fn url_encoding(e: &Option<EncodingType>) -> bool {
    e.as_ref().is_some_and(|e| e.as_str() == "url")
}

fn objects_of(objects: &[cluster::ObjectInfo], url: bool, owner_id: Option<&str>) -> Vec<Object> {
    objects
        .iter()
        .map(|o| Object {
            e_tag: Some(convert::etag(&o.etag)),
            key: Some(convert::encode_key(&o.key, url)),
            last_modified: Some(convert::timestamp(o.last_modified_ms)),
            owner: owner_id.map(owner),
            size: Some(o.size as i64),
            storage_class: Some(ObjectStorageClass::from(o.storage_class.clone())),
            ..Default::default()
        })
        .collect()
}

pub(super) fn prefixes_of(prefixes: &[String], url: bool) -> Vec<CommonPrefix> {
    prefixes
        .iter()
        .map(|p| CommonPrefix {
            prefix: Some(convert::encode_key(p, url)),
        })
        .collect()
}

impl S3Gateway {
    pub(super) async fn handle_list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        let _slot = self.slot(&req)?;
        let handle = self.authorize(&req, &req.input.bucket).await?;
        let i = req.input;
        let url = url_encoding(&i.encoding_type);
        let page = self
            .store
            .list_objects(
                &handle,
                &ListObjectsParams {
                    prefix: i.prefix.clone().unwrap_or_default(),
                    delimiter: i.delimiter.clone().filter(|d| !d.is_empty()),
                    start_after: i.marker.clone().filter(|m| !m.is_empty()),
                    max_keys: max_keys(i.max_keys),
                },
            )
            .await
            .map_err(to_s3)?;
        // V1 gives NextMarker only with a delimiter (clients use the last
        // key otherwise).
        let next_marker = page
            .next_start_after
            .clone()
            .filter(|_| page.is_truncated && i.delimiter.is_some())
            .map(|m| convert::encode_key(&m, url));
        Ok(S3Response::new(ListObjectsOutput {
            name: Some(i.bucket),
            prefix: Some(i.prefix.unwrap_or_default()),
            marker: Some(convert::encode_key(&i.marker.unwrap_or_default(), url)),
            max_keys: Some(max_keys(i.max_keys) as i32),
            is_truncated: Some(page.is_truncated),
            contents: Some(objects_of(&page.objects, url, Some(handle.owner()))),
            common_prefixes: Some(prefixes_of(&page.common_prefixes, url)),
            delimiter: i.delimiter.filter(|d| !d.is_empty()),
            next_marker,
            encoding_type: i.encoding_type,
            ..Default::default()
        }))
    }

    pub(super) async fn handle_list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        let _slot = self.slot(&req)?;
        let handle = self.authorize(&req, &req.input.bucket).await?;
        let i = req.input;
        let url = url_encoding(&i.encoding_type);
        let after = match &i.continuation_token {
            Some(t) => Some(
                cluster::checksum::unb64(t)
                    .and_then(|b| String::from_utf8(b).ok())
                    .ok_or_else(|| s3_error!(InvalidArgument, "invalid continuation token"))?,
            ),
            None => i.start_after.clone().filter(|s| !s.is_empty()),
        };
        let page = self
            .store
            .list_objects(
                &handle,
                &ListObjectsParams {
                    prefix: i.prefix.clone().unwrap_or_default(),
                    delimiter: i.delimiter.clone().filter(|d| !d.is_empty()),
                    start_after: after,
                    max_keys: max_keys(i.max_keys),
                },
            )
            .await
            .map_err(to_s3)?;
        let count = page.objects.len() + page.common_prefixes.len();
        let fetch_owner = i.fetch_owner.unwrap_or(false);
        Ok(S3Response::new(ListObjectsV2Output {
            name: Some(i.bucket),
            prefix: Some(i.prefix.unwrap_or_default()),
            max_keys: Some(max_keys(i.max_keys) as i32),
            key_count: Some(count as i32),
            continuation_token: i.continuation_token,
            is_truncated: Some(page.is_truncated),
            next_continuation_token: page
                .next_start_after
                .as_ref()
                .filter(|_| page.is_truncated)
                .map(|k| cluster::checksum::b64(k.as_bytes())),
            contents: Some(objects_of(
                &page.objects,
                url,
                fetch_owner.then_some(handle.owner()),
            )),
            common_prefixes: Some(prefixes_of(&page.common_prefixes, url)),
            delimiter: i.delimiter.filter(|d| !d.is_empty()),
            encoding_type: i.encoding_type,
            start_after: i.start_after.map(|s| convert::encode_key(&s, url)),
            ..Default::default()
        }))
    }

    pub(super) async fn handle_list_object_versions(
        &self,
        req: S3Request<ListObjectVersionsInput>,
    ) -> S3Result<S3Response<ListObjectVersionsOutput>> {
        let _slot = self.slot(&req)?;
        let handle = self.authorize(&req, &req.input.bucket).await?;
        let i = req.input;
        let url = url_encoding(&i.encoding_type);
        let page = self
            .store
            .list_object_versions(
                &handle,
                &ListVersionsParams {
                    prefix: i.prefix.clone().unwrap_or_default(),
                    delimiter: i.delimiter.clone().filter(|d| !d.is_empty()),
                    key_marker: i.key_marker.clone().filter(|k| !k.is_empty()),
                    version_id_marker: i.version_id_marker.clone(),
                    max_keys: max_keys(i.max_keys),
                },
            )
            .await
            .map_err(to_s3)?;
        let mut versions = Vec::new();
        let mut markers = Vec::new();
        for v in page.versions {
            if v.delete_marker {
                markers.push(DeleteMarkerEntry {
                    is_latest: Some(v.is_latest),
                    key: Some(convert::encode_key(&v.key, url)),
                    last_modified: Some(convert::timestamp(v.last_modified_ms)),
                    owner: Some(owner(handle.owner())),
                    version_id: Some(v.version_id),
                });
            } else {
                versions.push(ObjectVersion {
                    e_tag: Some(convert::etag(&v.etag)),
                    is_latest: Some(v.is_latest),
                    key: Some(convert::encode_key(&v.key, url)),
                    last_modified: Some(convert::timestamp(v.last_modified_ms)),
                    size: Some(v.size as i64),
                    owner: Some(owner(handle.owner())),
                    storage_class: Some(ObjectVersionStorageClass::from(v.storage_class.clone())),
                    version_id: Some(v.version_id),
                    ..Default::default()
                });
            }
        }
        Ok(S3Response::new(ListObjectVersionsOutput {
            common_prefixes: Some(prefixes_of(&page.common_prefixes, url)),
            delete_markers: Some(markers),
            delimiter: i.delimiter.filter(|d| !d.is_empty()),
            encoding_type: i.encoding_type,
            is_truncated: Some(page.is_truncated),
            key_marker: i.key_marker,
            max_keys: Some(max_keys(i.max_keys) as i32),
            name: Some(i.bucket),
            next_key_marker: page.next_key_marker.map(|k| convert::encode_key(&k, url)),
            next_version_id_marker: page.next_version_id_marker,
            prefix: i.prefix,
            version_id_marker: i.version_id_marker,
            versions: Some(versions),
            ..Default::default()
        }))
    }
}
