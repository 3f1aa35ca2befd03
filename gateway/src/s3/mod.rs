//! S3 operations over the object layer. s3s has parsed, authenticated and
//! validated the request; this maps it to `ObjectStore` calls and back.
//!
//! s3s wants one `impl S3`: here each of its methods hands the request to
//! an inherent `handle_*` method in the file of its operation family.

use crate::admission::{Admission, AdmissionConfig, Slot};
use crate::auth::StoreAuth;
use crate::errors::to_s3;
use cluster::{BucketHandle, ObjectStore};
use s3s::dto::*;
use s3s::{s3_error, S3Request, S3Response, S3Result, S3};
use std::sync::Arc;

// s3s generates each operation's input and output as a struct of its own:
// the headers several operations share (the SSE-C key, x-amz-checksum-*,
// the standard headers S3 stores) are same-named fields of a dozen types
// with no trait in common. Reading or writing them on any of those types
// therefore takes a macro; each one only names the fields and hands them
// to (or takes them from) a function in `convert`, which does the work.
// They are defined before the `mod` lines below so the family files see
// them.

/// Sets the five x-amz-checksum-* fields of an output from stored
/// checksums (name → base64).
macro_rules! fill_checksums {
    ($out:expr, $map:expr) => {{
        let f = $crate::convert::checksum_fields($map);
        $out.checksum_crc32 = f.crc32;
        $out.checksum_crc32c = f.crc32c;
        $out.checksum_crc64nvme = f.crc64nvme;
        $out.checksum_sha1 = f.sha1;
        $out.checksum_sha256 = f.sha256;
    }};
}

/// The SSE-C customer key an input carries.
macro_rules! customer_key {
    ($i:expr) => {
        $crate::convert::customer_key(
            $i.sse_customer_algorithm.as_deref(),
            $i.sse_customer_key.as_deref(),
            $i.sse_customer_key_md5.as_deref(),
        )
    };
}

/// The x-amz-checksum-* values an input carries.
macro_rules! sent_checksums {
    ($i:expr) => {
        $crate::convert::sent_checksums(
            $i.checksum_crc32.as_ref(),
            $i.checksum_crc32c.as_ref(),
            $i.checksum_crc64nvme.as_ref(),
            $i.checksum_sha1.as_ref(),
            $i.checksum_sha256.as_ref(),
        )
    };
}

/// User metadata and the standard headers S3 keeps with an object.
macro_rules! stored_metadata {
    ($i:expr) => {
        $crate::convert::stored_metadata(
            $i.metadata.clone(),
            $i.cache_control.clone(),
            $i.content_disposition.clone(),
            $i.content_encoding.clone(),
            $i.content_language.clone(),
            $i.expires.as_ref(),
        )
    };
}

mod acl;
mod bucket;
mod delete;
mod get;
mod list;
mod multipart;
mod put;
mod tagging;

/// The S3 front end of one gateway.
pub struct S3Gateway {
    store: ObjectStore,
    auth: Arc<StoreAuth>,
    region: String,
    /// Requests in progress, per key and in all, and body pacing.
    admission: Arc<Admission>,
}

impl S3Gateway {
    pub fn new(
        store: ObjectStore,
        auth: Arc<StoreAuth>,
        region: &str,
        admission: AdmissionConfig,
    ) -> Self {
        Self {
            store,
            auth,
            region: region.to_string(),
            admission: Arc::new(Admission::new(admission)),
        }
    }

    /// A place among the requests in progress for this request's key;
    /// beyond the bounds the client gets SlowDown (503) and retries.
    fn slot<T>(&self, req: &S3Request<T>) -> S3Result<Slot> {
        let key = req.credentials.as_ref().map(|c| c.access_key.as_str());
        self.admission
            .admit(key)
            .map_err(|e| s3_error!(SlowDown, "{e}"))
    }

    /// A request body as the object layer reads it (none: empty), cut off
    /// if it stalls or trickles.
    fn body(
        &self,
        body: Option<StreamingBlob>,
    ) -> impl futures_util::Stream<Item = Result<bytes::Bytes, String>> + Send + Unpin {
        match body {
            Some(b) => futures_util::future::Either::Left(self.admission.paced(b)),
            None => futures_util::future::Either::Right(futures_util::stream::empty()),
        }
    }

    fn caller<T>(req: &S3Request<T>) -> S3Result<&str> {
        req.credentials
            .as_ref()
            .map(|c| c.access_key.as_str())
            .ok_or_else(|| s3_error!(AccessDenied))
    }

    /// The bucket is the caller's (or the caller is an admin); anonymous
    /// callers passed the access check only for reads of public buckets.
    /// Returns the bucket for every call the request makes, so its record
    /// is read once per request (the access check of an anonymous request
    /// already read it, and left it in the request's extensions).
    async fn authorize<T>(&self, req: &S3Request<T>, bucket: &str) -> S3Result<BucketHandle> {
        let checked = req
            .extensions
            .get::<BucketHandle>()
            .filter(|b| b.name() == bucket);
        let handle = match checked {
            Some(b) => b.clone(),
            None => self.store.open_bucket(bucket).await.map_err(to_s3)?,
        };
        let Some(creds) = &req.credentials else {
            return Ok(handle);
        };
        if handle.owner() == creds.access_key {
            return Ok(handle);
        }
        match self.auth.lookup(&creds.access_key).await? {
            Some((_, true)) => Ok(handle),
            _ => Err(s3_error!(
                AccessDenied,
                "the bucket belongs to another user"
            )),
        }
    }
}

fn owner(id: &str) -> Owner {
    Owner {
        display_name: Some(id.to_string()),
        id: Some(id.to_string()),
    }
}

#[async_trait::async_trait]
impl S3 for S3Gateway {
    // Buckets: bucket.rs

    async fn list_buckets(
        &self,
        req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        self.handle_list_buckets(req).await
    }

    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        self.handle_create_bucket(req).await
    }

    async fn delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        self.handle_delete_bucket(req).await
    }

    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        self.handle_head_bucket(req).await
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        self.handle_get_bucket_location(req).await
    }

    async fn get_bucket_versioning(
        &self,
        req: S3Request<GetBucketVersioningInput>,
    ) -> S3Result<S3Response<GetBucketVersioningOutput>> {
        self.handle_get_bucket_versioning(req).await
    }

    async fn put_bucket_versioning(
        &self,
        req: S3Request<PutBucketVersioningInput>,
    ) -> S3Result<S3Response<PutBucketVersioningOutput>> {
        self.handle_put_bucket_versioning(req).await
    }

    // Writing objects: put.rs

    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        self.handle_put_object(req).await
    }

    async fn copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        self.handle_copy_object(req).await
    }

    // Reading objects: get.rs

    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        self.handle_get_object(req).await
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        self.handle_head_object(req).await
    }

    async fn get_object_attributes(
        &self,
        req: S3Request<GetObjectAttributesInput>,
    ) -> S3Result<S3Response<GetObjectAttributesOutput>> {
        self.handle_get_object_attributes(req).await
    }

    // Deleting objects: delete.rs

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        self.handle_delete_object(req).await
    }

    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        self.handle_delete_objects(req).await
    }

    // Listing objects: list.rs

    async fn list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        self.handle_list_objects(req).await
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        self.handle_list_objects_v2(req).await
    }

    async fn list_object_versions(
        &self,
        req: S3Request<ListObjectVersionsInput>,
    ) -> S3Result<S3Response<ListObjectVersionsOutput>> {
        self.handle_list_object_versions(req).await
    }

    // Multipart uploads: multipart.rs

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        self.handle_create_multipart_upload(req).await
    }

    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        self.handle_upload_part(req).await
    }

    async fn upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        self.handle_upload_part_copy(req).await
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        self.handle_complete_multipart_upload(req).await
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        self.handle_abort_multipart_upload(req).await
    }

    async fn list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        self.handle_list_parts(req).await
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        self.handle_list_multipart_uploads(req).await
    }

    // ACLs: acl.rs

    async fn get_bucket_acl(
        &self,
        req: S3Request<GetBucketAclInput>,
    ) -> S3Result<S3Response<GetBucketAclOutput>> {
        self.handle_get_bucket_acl(req).await
    }

    async fn put_bucket_acl(
        &self,
        req: S3Request<PutBucketAclInput>,
    ) -> S3Result<S3Response<PutBucketAclOutput>> {
        self.handle_put_bucket_acl(req).await
    }

    async fn get_object_acl(
        &self,
        req: S3Request<GetObjectAclInput>,
    ) -> S3Result<S3Response<GetObjectAclOutput>> {
        self.handle_get_object_acl(req).await
    }

    async fn put_object_acl(
        &self,
        req: S3Request<PutObjectAclInput>,
    ) -> S3Result<S3Response<PutObjectAclOutput>> {
        self.handle_put_object_acl(req).await
    }

    // Object tags: tagging.rs

    async fn get_object_tagging(
        &self,
        req: S3Request<GetObjectTaggingInput>,
    ) -> S3Result<S3Response<GetObjectTaggingOutput>> {
        self.handle_get_object_tagging(req).await
    }

    async fn put_object_tagging(
        &self,
        req: S3Request<PutObjectTaggingInput>,
    ) -> S3Result<S3Response<PutObjectTaggingOutput>> {
        self.handle_put_object_tagging(req).await
    }

    async fn delete_object_tagging(
        &self,
        req: S3Request<DeleteObjectTaggingInput>,
    ) -> S3Result<S3Response<DeleteObjectTaggingOutput>> {
        self.handle_delete_object_tagging(req).await
    }
}
