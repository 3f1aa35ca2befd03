//! The object layer in process: `cluster::ObjectStore` called directly,
//! its `cluster::Error` variants mapped to the neutral errors.

use super::frontend::*;
use bytes::Bytes;
use cluster::naming::NameError;
use cluster::{
    ByteRange, CompletedPart, Conditions, CopyOptions, Error, GetOptions, ListObjectsParams,
    ListVersionsParams, MultipartOptions, ObjectStore, PartOptions, PutOptions, VersioningState,
};
use std::time::{Duration, UNIX_EPOCH};

pub struct ObjectLayer {
    store: ObjectStore,
    owner: String,
}

impl ObjectLayer {
    pub fn new(store: ObjectStore, owner: &str) -> Self {
        Self {
            store,
            owner: owner.to_string(),
        }
    }
}

fn map_err(e: Error) -> FeError {
    match e {
        Error::NoSuchKey { .. } => FeError::NotFound,
        Error::NoSuchBucket(_) => FeError::NoSuchBucket,
        Error::NoSuchVersion { .. } => FeError::NoSuchVersion,
        Error::DeleteMarker { .. } => FeError::DeleteMarker,
        Error::PreconditionFailed => FeError::PreconditionFailed,
        Error::NotModified { .. } => FeError::NotModified,
        Error::InvalidRange { .. } => FeError::InvalidRange,
        Error::InvalidName(NameError::Bucket(_)) => FeError::InvalidBucketName,
        e => FeError::Other(e.to_string()),
    }
}

fn conditions(c: &Cond) -> Conditions {
    Conditions {
        if_match: c.if_match.as_deref().map(quote_tag),
        if_none_match: c.if_none_match.as_deref().map(quote_tag),
        if_modified_since_ms: c
            .if_modified_since
            .map(|t| t.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64),
        if_unmodified_since_ms: None,
    }
}

/// The body in pieces of 256 KiB, as a network read would hand it over.
fn pieces(body: Bytes) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Unpin {
    let step = 256 * 1024;
    let parts: Vec<Result<Bytes, std::io::Error>> = (0..body.len())
        .step_by(step)
        .map(|s| Ok(body.slice(s..(s + step).min(body.len()))))
        .collect();
    futures_util::stream::iter(parts)
}

async fn read_all(mut body: cluster::ObjectBody) -> FeResult<Vec<u8>> {
    use futures_util::StreamExt;
    let mut out = Vec::new();
    while let Some(piece) = body.next().await {
        out.extend_from_slice(&piece.map_err(map_err)?);
    }
    Ok(out)
}

impl FrontEnd for ObjectLayer {
    fn name(&self) -> &'static str {
        "object layer"
    }

    fn caps(&self) -> Caps {
        Caps {
            versions: true,
            multipart: true,
            list_flat: true,
            list_pages: true,
            conditional_put: true,
            conditional_get: true,
            copy: true,
            missing_bucket_distinct: true,
        }
    }

    async fn create_bucket(&self, bucket: &str) -> FeResult<()> {
        self.store
            .create_bucket(bucket, &self.owner, None)
            .await
            .map(|_| ())
            .map_err(map_err)
    }

    async fn put(&self, bucket: &str, key: &str, body: Bytes, cond: &Cond) -> FeResult<PutOut> {
        let opts = PutOptions {
            write_conditions: conditions(cond),
            ..PutOptions::default()
        };
        let r = self
            .store
            .put_object(bucket, key, pieces(body), opts)
            .await
            .map_err(map_err)?;
        Ok(PutOut {
            etag: Some(r.etag),
            version_id: r.version_id,
        })
    }

    async fn get(&self, bucket: &str, key: &str, req: &GetReq) -> FeResult<Object> {
        let opts = GetOptions {
            version: req.version.clone(),
            range: req.range.map(|r| match r {
                Range::FromTo(a, b) => ByteRange::FromTo(a, b),
                Range::From(a) => ByteRange::From(a),
                Range::Last(n) => ByteRange::Last(n),
            }),
            conditions: conditions(&req.cond),
            ..GetOptions::default()
        };
        let got = self
            .store
            .get_object(bucket, key, opts)
            .await
            .map_err(map_err)?;
        let size = got.info.size;
        let version = got.info.version_id.clone();
        Ok(Object {
            etag: got.info.etag.clone(),
            range: got.range.map(|(s, e)| (s, e - 1, size)),
            version_id: (version != "null").then_some(version),
            body: read_all(got.body).await?,
        })
    }

    async fn head(&self, bucket: &str, key: &str) -> FeResult<Meta> {
        let info = self
            .store
            .head_object(bucket, key, &GetOptions::default())
            .await
            .map_err(map_err)?;
        Ok(Meta {
            size: info.size,
            etag: info.etag,
            last_modified: UNIX_EPOCH + Duration::from_secs(info.last_modified_ms / 1000),
        })
    }

    async fn list(&self, bucket: &str, req: &ListReq) -> FeResult<ListPage> {
        let page = self
            .store
            .list_objects(
                bucket,
                &ListObjectsParams {
                    prefix: req.prefix.clone(),
                    delimiter: req.delimiter.clone(),
                    start_after: req.token.clone(),
                    max_keys: req.max_keys.unwrap_or(1000),
                },
            )
            .await
            .map_err(map_err)?;
        Ok(ListPage {
            keys: page.objects.into_iter().map(|o| o.key).collect(),
            prefixes: page.common_prefixes,
            next: page.next_start_after.filter(|_| page.is_truncated),
        })
    }

    async fn copy(
        &self,
        src_bucket: &str,
        src_key: &str,
        dst_bucket: &str,
        dst_key: &str,
    ) -> FeResult<()> {
        self.store
            .copy_object(
                src_bucket,
                src_key,
                dst_bucket,
                dst_key,
                CopyOptions::default(),
            )
            .await
            .map(|_| ())
            .map_err(map_err)
    }

    async fn delete(&self, bucket: &str, key: &str, version: Option<&str>) -> FeResult<Deleted> {
        let d = self
            .store
            .delete_object(bucket, key, version)
            .await
            .map_err(map_err)?;
        Ok(Deleted {
            delete_marker: d.delete_marker,
            version_id: d.version_id,
        })
    }

    async fn set_versioning(&self, bucket: &str, enabled: bool) -> FeResult<()> {
        let state = if enabled {
            VersioningState::Enabled
        } else {
            VersioningState::Suspended
        };
        self.store
            .set_versioning(bucket, state)
            .await
            .map_err(map_err)
    }

    async fn list_versions(&self, bucket: &str, prefix: &str) -> FeResult<Vec<VersionEntry>> {
        let page = self
            .store
            .list_object_versions(
                bucket,
                &ListVersionsParams {
                    prefix: prefix.to_string(),
                    max_keys: 1000,
                    ..Default::default()
                },
            )
            .await
            .map_err(map_err)?;
        Ok(page
            .versions
            .into_iter()
            .map(|v| VersionEntry {
                key: v.key,
                version_id: v.version_id,
                is_latest: v.is_latest,
                delete_marker: v.delete_marker,
            })
            .collect())
    }

    async fn create_upload(&self, bucket: &str, key: &str) -> FeResult<String> {
        self.store
            .create_multipart_upload(bucket, key, &self.owner, MultipartOptions::default())
            .await
            .map(|u| u.upload_id)
            .map_err(map_err)
    }

    async fn upload_part(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        part: u32,
        body: Bytes,
    ) -> FeResult<String> {
        self.store
            .upload_part(
                bucket,
                key,
                upload_id,
                part,
                pieces(body),
                PartOptions::default(),
            )
            .await
            .map(|p| p.etag)
            .map_err(map_err)
    }

    async fn complete_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        parts: &[(u32, String)],
    ) -> FeResult<String> {
        let parts: Vec<CompletedPart> = parts
            .iter()
            .map(|(n, etag)| CompletedPart {
                part_number: *n,
                etag: quote_tag(etag),
            })
            .collect();
        self.store
            .complete_multipart_upload(bucket, key, upload_id, &parts)
            .await
            .map(|r| r.etag)
            .map_err(map_err)
    }
}
