//! Object tags: the x-amz-tagging header of writes and the ?tagging
//! operations.

use super::S3Gateway;
use crate::errors::to_s3;
use cluster::GetOptions;
use s3s::dto::*;
use s3s::{s3_error, S3Request, S3Response, S3Result};
use std::collections::BTreeMap;

/// The tags of an x-amz-tagging header (a URL-encoded query string).
pub(super) fn parse_tagging(header: Option<&str>) -> S3Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let Some(h) = header.filter(|h| !h.is_empty()) else {
        return Ok(out);
    };
    for pair in h.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = urlencoding::decode(k).map_err(|_| s3_error!(InvalidArgument, "bad tagging"))?;
        let v = urlencoding::decode(v).map_err(|_| s3_error!(InvalidArgument, "bad tagging"))?;
        out.insert(k.into_owned(), v.into_owned());
    }
    check_tags(&out)?;
    Ok(out)
}

fn check_tags(tags: &BTreeMap<String, String>) -> S3Result<()> {
    if tags.len() > 10 {
        return Err(s3_error!(InvalidTag, "at most 10 tags"));
    }
    if tags
        .iter()
        .any(|(k, v)| k.is_empty() || k.len() > 128 || v.len() > 256)
    {
        return Err(s3_error!(
            InvalidTag,
            "tag keys are 1-128 and values 0-256 characters"
        ));
    }
    Ok(())
}

/// A version id as the tagging answers show it: none for the null version.
fn non_null_version(v: String) -> Option<String> {
    (v != "null").then_some(v)
}

impl S3Gateway {
    pub(super) async fn handle_get_object_tagging(
        &self,
        req: S3Request<GetObjectTaggingInput>,
    ) -> S3Result<S3Response<GetObjectTaggingOutput>> {
        let handle = self.authorize(&req, &req.input.bucket).await?;
        let i = req.input;
        let info = self
            .store
            .head_object(
                &handle,
                &i.key,
                &GetOptions {
                    version: i.version_id.clone(),
                    ..GetOptions::default()
                },
            )
            .await
            .map_err(to_s3)?;
        let tag_set = info
            .tags
            .iter()
            .map(|(k, v)| Tag {
                key: Some(k.clone()),
                value: Some(v.clone()),
            })
            .collect();
        Ok(S3Response::new(GetObjectTaggingOutput {
            tag_set,
            version_id: non_null_version(info.version_id),
        }))
    }

    pub(super) async fn handle_put_object_tagging(
        &self,
        req: S3Request<PutObjectTaggingInput>,
    ) -> S3Result<S3Response<PutObjectTaggingOutput>> {
        Self::caller(&req)?;
        let handle = self.authorize(&req, &req.input.bucket).await?;
        let i = req.input;
        let mut tags = BTreeMap::new();
        for t in i.tagging.tag_set {
            let (Some(k), v) = (t.key, t.value) else {
                return Err(s3_error!(InvalidTag, "tag without a key"));
            };
            if tags.insert(k, v.unwrap_or_default()).is_some() {
                return Err(s3_error!(InvalidTag, "duplicate tag key"));
            }
        }
        check_tags(&tags)?;
        let v = self
            .store
            .set_object_tags(&handle, &i.key, i.version_id.as_deref(), tags)
            .await
            .map_err(to_s3)?;
        Ok(S3Response::new(PutObjectTaggingOutput {
            version_id: non_null_version(v),
        }))
    }

    pub(super) async fn handle_delete_object_tagging(
        &self,
        req: S3Request<DeleteObjectTaggingInput>,
    ) -> S3Result<S3Response<DeleteObjectTaggingOutput>> {
        Self::caller(&req)?;
        let handle = self.authorize(&req, &req.input.bucket).await?;
        let i = req.input;
        let v = self
            .store
            .set_object_tags(&handle, &i.key, i.version_id.as_deref(), BTreeMap::new())
            .await
            .map_err(to_s3)?;
        Ok(S3Response::new(DeleteObjectTaggingOutput {
            version_id: non_null_version(v),
        }))
    }
}
