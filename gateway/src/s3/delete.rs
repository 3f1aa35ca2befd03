//! Object deletion, one key or many.

use super::S3Gateway;
use crate::errors::to_s3;
use futures_util::StreamExt;
use s3s::dto::*;
use s3s::{s3_error, S3Request, S3Response, S3Result};

impl S3Gateway {
    pub(super) async fn handle_delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        let _slot = self.slot(&req)?;
        Self::caller(&req)?;
        let handle = self.authorize(&req, &req.input.bucket).await?;
        let i = req.input;
        let r = self
            .store
            .delete_object(&handle, &i.key, i.version_id.as_deref())
            .await
            .map_err(to_s3)?;
        Ok(S3Response::new(DeleteObjectOutput {
            delete_marker: r.delete_marker.then_some(true),
            version_id: r.version_id,
            ..Default::default()
        }))
    }

    pub(super) async fn handle_delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let _slot = self.slot(&req)?;
        Self::caller(&req)?;
        let handle = self.authorize(&req, &req.input.bucket).await?;
        let i = req.input;
        if i.delete.objects.len() > 1000 {
            return Err(s3_error!(MalformedXML, "at most 1000 keys per request"));
        }
        let quiet = i.delete.quiet.unwrap_or(false);
        let mut deleted = Vec::new();
        let mut errors = Vec::new();
        // A few at a time: each delete is several quorum round trips.
        let results: Vec<_> = futures_util::stream::iter(i.delete.objects)
            .map(|o| {
                let store = self.store.clone();
                let handle = &handle;
                async move {
                    let r = store
                        .delete_object(handle, &o.key, o.version_id.as_deref())
                        .await;
                    (o, r)
                }
            })
            .buffer_unordered(8)
            .collect()
            .await;
        for (o, r) in results {
            match r {
                Ok(r) => {
                    if !quiet {
                        deleted.push(DeletedObject {
                            delete_marker: r.delete_marker.then_some(true),
                            delete_marker_version_id: r
                                .delete_marker
                                .then(|| r.version_id.clone())
                                .flatten()
                                .filter(|_| o.version_id.is_none()),
                            key: Some(o.key),
                            version_id: o.version_id,
                        });
                    }
                }
                Err(e) => {
                    let s3 = to_s3(e);
                    errors.push(Error {
                        code: Some(s3.code().as_str().to_string()),
                        key: Some(o.key),
                        message: s3.message().map(str::to_string),
                        version_id: o.version_id,
                    });
                }
            }
        }
        Ok(S3Response::new(DeleteObjectsOutput {
            deleted: Some(deleted),
            errors: (!errors.is_empty()).then_some(errors),
            ..Default::default()
        }))
    }
}
