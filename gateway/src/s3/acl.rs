//! Canned ACLs: a bucket is private or publicly readable, and its objects
//! share its access.

use super::{owner, S3Gateway};
use crate::errors::to_s3;
use cluster::GetOptions;
use s3s::dto::*;
use s3s::{s3_error, S3Request, S3Response, S3Result};

/// Canned ACLs gridstore honours: private, or anonymous reads.
pub(super) fn is_public_acl(acl: &str) -> S3Result<bool> {
    match acl {
        "private" | "bucket-owner-full-control" | "bucket-owner-read" => Ok(false),
        "public-read" => Ok(true),
        other => Err(s3_error!(
            NotImplemented,
            "canned ACL {other} is not supported"
        )),
    }
}

/// The owner and grants an ACL answer shows.
fn acl(owner_id: &str, public: bool) -> (Option<Owner>, Option<Vec<Grant>>) {
    let mut grants = vec![Grant {
        grantee: Some(Grantee {
            display_name: Some(owner_id.to_string()),
            email_address: None,
            id: Some(owner_id.to_string()),
            type_: Type::from_static(Type::CANONICAL_USER),
            uri: None,
        }),
        permission: Some(Permission::from_static(Permission::FULL_CONTROL)),
    }];
    if public {
        grants.push(Grant {
            grantee: Some(Grantee {
                display_name: None,
                email_address: None,
                id: None,
                type_: Type::from_static(Type::GROUP),
                uri: Some("http://acs.amazonaws.com/groups/global/AllUsers".into()),
            }),
            permission: Some(Permission::from_static(Permission::READ)),
        });
    }
    (Some(owner(owner_id)), Some(grants))
}

impl S3Gateway {
    pub(super) async fn handle_get_bucket_acl(
        &self,
        req: S3Request<GetBucketAclInput>,
    ) -> S3Result<S3Response<GetBucketAclOutput>> {
        let handle = self.authorize(&req, &req.input.bucket).await?;
        let (owner, grants) = acl(handle.owner(), handle.is_public());
        Ok(S3Response::new(GetBucketAclOutput { grants, owner }))
    }

    pub(super) async fn handle_put_bucket_acl(
        &self,
        req: S3Request<PutBucketAclInput>,
    ) -> S3Result<S3Response<PutBucketAclOutput>> {
        Self::caller(&req)?;
        self.authorize(&req, &req.input.bucket).await?;
        let public = match &req.input.acl {
            Some(acl) => is_public_acl(acl.as_str())?,
            None => return Err(s3_error!(NotImplemented, "only canned ACLs are supported")),
        };
        self.store
            .set_public(&req.input.bucket, public)
            .await
            .map_err(to_s3)?;
        Ok(S3Response::new(PutBucketAclOutput::default()))
    }

    pub(super) async fn handle_get_object_acl(
        &self,
        req: S3Request<GetObjectAclInput>,
    ) -> S3Result<S3Response<GetObjectAclOutput>> {
        let handle = self.authorize(&req, &req.input.bucket).await?;
        self.store
            .head_object(
                &handle,
                &req.input.key,
                &GetOptions {
                    version: req.input.version_id.clone(),
                    ..GetOptions::default()
                },
            )
            .await
            .map_err(to_s3)?;
        let (owner, grants) = acl(handle.owner(), handle.is_public());
        Ok(S3Response::new(GetObjectAclOutput {
            grants,
            owner,
            ..Default::default()
        }))
    }

    pub(super) async fn handle_put_object_acl(
        &self,
        req: S3Request<PutObjectAclInput>,
    ) -> S3Result<S3Response<PutObjectAclOutput>> {
        Self::caller(&req)?;
        let handle = self.authorize(&req, &req.input.bucket).await?;
        // Objects share their bucket's access: an ACL that says the same
        // is accepted, one that would differ is refused, never ignored.
        let wanted = match &req.input.acl {
            Some(acl) => is_public_acl(acl.as_str())?,
            None => handle.is_public(),
        };
        if wanted != handle.is_public() {
            return Err(s3_error!(
                NotImplemented,
                "per-object ACLs are not supported; set the bucket's ACL"
            ));
        }
        Ok(S3Response::new(PutObjectAclOutput::default()))
    }
}
