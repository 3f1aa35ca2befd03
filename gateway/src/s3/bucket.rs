//! Buckets: create, delete, head, list; location and versioning.

use super::acl::is_public_acl;
use super::{owner, S3Gateway};
use crate::convert;
use crate::errors::to_s3;
use cluster::VersioningState;
use s3s::dto::*;
use s3s::{s3_error, S3Request, S3Response, S3Result};

/// Whether CreateBucket may name `location`: the store's region, or what
/// clients send for "the default location" (AWS's us-east-1 takes an
/// empty constraint or the legacy `US`; s3cmd configured for `EU` sends
/// `EU`). The store has one location, so a legacy name can only mean it.
fn accepted_location(location: &str, region: &str) -> bool {
    matches!(location, "" | "US" | "EU") || location == region
}

impl S3Gateway {
    pub(super) async fn handle_list_buckets(
        &self,
        req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        let me = Self::caller(&req)?.to_string();
        let admin = matches!(self.auth.lookup(&me).await?, Some((_, true)));
        let buckets = self.store.list_buckets().await.map_err(to_s3)?;
        let after = req.input.continuation_token.clone().unwrap_or_default();
        let prefix = req.input.prefix.clone().unwrap_or_default();
        let max = req
            .input
            .max_buckets
            .map_or(usize::MAX, |m| m.clamp(1, 10_000) as usize);
        let mut mine = buckets
            .into_iter()
            .filter(|b| (admin || b.owner == me) && b.name.starts_with(&prefix) && b.name > after);
        let list: Vec<Bucket> = mine
            .by_ref()
            .take(max)
            .map(|b| Bucket {
                bucket_region: Some(self.region.clone()),
                creation_date: Some(convert::timestamp(b.created_ms)),
                name: Some(b.name),
            })
            .collect();
        let more = mine.next().is_some();
        let token = list.last().and_then(|b| b.name.clone()).filter(|_| more);
        Ok(S3Response::new(ListBucketsOutput {
            buckets: Some(list),
            owner: Some(owner(&me)),
            continuation_token: token,
            prefix: req.input.prefix,
        }))
    }

    pub(super) async fn handle_create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        let _slot = self.slot(&req)?;
        let me = Self::caller(&req)?.to_string();
        if let Some(loc) = req
            .input
            .create_bucket_configuration
            .as_ref()
            .and_then(|c| c.location_constraint.as_ref())
        {
            if !accepted_location(loc.as_str(), &self.region) {
                return Err(s3_error!(
                    InvalidLocationConstraint,
                    "The specified location constraint is not valid: this store's region is {}",
                    self.region
                ));
            }
        }
        match self.store.create_bucket(&req.input.bucket, &me, None).await {
            Ok(_) => {}
            // us-east-1 answers a repeated create by the owner with 200.
            Err(cluster::Error::BucketAlreadyOwnedByYou(_)) if self.region == "us-east-1" => {}
            Err(e) => return Err(to_s3(e)),
        }
        if let Some(acl) = &req.input.acl {
            self.store
                .set_public(&req.input.bucket, is_public_acl(acl.as_str())?)
                .await
                .map_err(to_s3)?;
        }
        Ok(S3Response::new(CreateBucketOutput {
            location: Some(format!("/{}", req.input.bucket)),
        }))
    }

    pub(super) async fn handle_delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        let _slot = self.slot(&req)?;
        Self::caller(&req)?;
        self.authorize(&req, &req.input.bucket).await?;
        self.store
            .delete_bucket(&req.input.bucket)
            .await
            .map_err(to_s3)?;
        Ok(S3Response::new(DeleteBucketOutput::default()))
    }

    pub(super) async fn handle_head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        self.authorize(&req, &req.input.bucket).await?;
        Ok(S3Response::new(HeadBucketOutput {
            bucket_region: Some(self.region.clone()),
            ..Default::default()
        }))
    }

    pub(super) async fn handle_get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        self.authorize(&req, &req.input.bucket).await?;
        // us-east-1 is reported as an empty constraint, as AWS does.
        let loc = (self.region != "us-east-1")
            .then(|| BucketLocationConstraint::from(self.region.clone()));
        Ok(S3Response::new(GetBucketLocationOutput {
            location_constraint: loc,
        }))
    }

    pub(super) async fn handle_get_bucket_versioning(
        &self,
        req: S3Request<GetBucketVersioningInput>,
    ) -> S3Result<S3Response<GetBucketVersioningOutput>> {
        let handle = self.authorize(&req, &req.input.bucket).await?;
        let status = match handle.versioning() {
            VersioningState::Unversioned => None,
            VersioningState::Enabled => Some(BucketVersioningStatus::from_static(
                BucketVersioningStatus::ENABLED,
            )),
            VersioningState::Suspended => Some(BucketVersioningStatus::from_static(
                BucketVersioningStatus::SUSPENDED,
            )),
        };
        Ok(S3Response::new(GetBucketVersioningOutput {
            status,
            ..Default::default()
        }))
    }

    pub(super) async fn handle_put_bucket_versioning(
        &self,
        req: S3Request<PutBucketVersioningInput>,
    ) -> S3Result<S3Response<PutBucketVersioningOutput>> {
        Self::caller(&req)?;
        self.authorize(&req, &req.input.bucket).await?;
        let state = match req
            .input
            .versioning_configuration
            .status
            .as_ref()
            .map(|s| s.as_str())
        {
            Some("Enabled") => VersioningState::Enabled,
            Some("Suspended") => VersioningState::Suspended,
            _ => {
                return Err(s3_error!(
                    MalformedXML,
                    "versioning status must be Enabled or Suspended"
                ))
            }
        };
        self.store
            .set_versioning(&req.input.bucket, state)
            .await
            .map_err(to_s3)?;
        Ok(S3Response::new(PutBucketVersioningOutput::default()))
    }
}
