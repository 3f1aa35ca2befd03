//! S3 operations over the object layer. s3s has parsed, authenticated and
//! validated the request; this maps it to `ObjectStore` calls and back.

use crate::auth::StoreAuth;
use crate::convert::{self, HDR_PREFIX};
use crate::errors::to_s3;
use bytes::Bytes;
use cluster::{
    ChecksumAlgorithm, CompletedPart as DoneP, CopyOptions, GetOptions, ListObjectsParams,
    ListVersionsParams, MultipartOptions, ObjectStore, PartOptions, PutOptions, Trailer,
    VersioningState,
};
use futures_util::{StreamExt, TryStreamExt};
use s3s::dto::*;
use s3s::{s3_error, S3Request, S3Response, S3Result, S3};
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::Semaphore;

const MAX_PUT_BYTES: i64 = 5 << 30;

/// The S3 front end of one gateway.
pub struct S3Gateway {
    store: ObjectStore,
    auth: Arc<StoreAuth>,
    region: String,
    /// Requests in progress; beyond it clients get SlowDown (503) so
    /// memory stays bounded under a flood.
    slots: Arc<Semaphore>,
}

impl S3Gateway {
    pub fn new(
        store: ObjectStore,
        auth: Arc<StoreAuth>,
        region: &str,
        max_requests: usize,
    ) -> Self {
        Self {
            store,
            auth,
            region: region.to_string(),
            slots: Arc::new(Semaphore::new(max_requests.max(1))),
        }
    }

    fn slot(&self) -> S3Result<tokio::sync::OwnedSemaphorePermit> {
        self.slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| s3_error!(SlowDown, "too many requests in progress"))
    }

    fn caller<T>(req: &S3Request<T>) -> S3Result<&str> {
        req.credentials
            .as_ref()
            .map(|c| c.access_key.as_str())
            .ok_or_else(|| s3_error!(AccessDenied))
    }

    /// The bucket is the caller's (or the caller is an admin); anonymous
    /// callers passed the access check only for reads of public buckets.
    async fn authorize<T>(
        &self,
        req: &S3Request<T>,
        bucket: &str,
    ) -> S3Result<cluster::BucketInfo> {
        let info = self.store.head_bucket(bucket).await.map_err(to_s3)?;
        let Some(creds) = &req.credentials else {
            return Ok(info);
        };
        if info.owner == creds.access_key {
            return Ok(info);
        }
        match self.auth.lookup(&creds.access_key).await? {
            Some((_, true)) => Ok(info),
            _ => Err(s3_error!(
                AccessDenied,
                "the bucket belongs to another user"
            )),
        }
    }

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
}

fn owner(id: &str) -> Owner {
    Owner {
        display_name: Some(id.to_string()),
        id: Some(id.to_string()),
    }
}

fn body_stream(
    body: Option<StreamingBlob>,
) -> impl futures_util::Stream<Item = Result<Bytes, String>> + Send + Unpin {
    match body {
        Some(b) => b.map_err(|e| e.to_string()).left_stream(),
        None => futures_util::stream::empty().right_stream(),
    }
}

fn trailer_of<T>(req: &S3Request<T>) -> Option<Trailer> {
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

/// Content-Type and the standard headers S3 stores, as metadata.
fn stored_metadata(
    metadata: Option<Metadata>,
    std_headers: [(&str, Option<String>); 5],
) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = metadata.unwrap_or_default().into_iter().collect();
    for (name, v) in std_headers {
        if let Some(v) = v {
            out.insert(format!("{HDR_PREFIX}{name}"), v);
        }
    }
    out
}

fn parse_tagging(header: Option<&str>) -> S3Result<BTreeMap<String, String>> {
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

fn strip_aws_chunked(v: Option<String>) -> Option<String> {
    let v = v?;
    let kept: Vec<&str> = v
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty() && !e.eq_ignore_ascii_case("aws-chunked"))
        .collect();
    (!kept.is_empty()).then(|| kept.join(", "))
}

/// Canned ACLs gridstore honours: private, or anonymous reads.
fn is_public_acl(acl: &str) -> S3Result<bool> {
    match acl {
        "private" | "bucket-owner-full-control" | "bucket-owner-read" => Ok(false),
        "public-read" => Ok(true),
        other => Err(s3_error!(
            NotImplemented,
            "canned ACL {other} is not supported"
        )),
    }
}

fn storage_class(s: Option<StorageClass>) -> Option<String> {
    s.map(|c| c.as_str().to_string())
}

fn max_keys(v: Option<i32>) -> usize {
    v.map_or(1000, |m| m.clamp(0, 1000) as usize)
}

fn url_encoding(e: &Option<EncodingType>) -> bool {
    e.as_ref().is_some_and(|e| e.as_str() == "url")
}

fn copy_source(src: &CopySource) -> S3Result<(String, String, Option<String>)> {
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

macro_rules! fill_checksums {
    ($out:expr, $map:expr) => {{
        let f = convert::checksum_fields($map);
        $out.checksum_crc32 = f.crc32;
        $out.checksum_crc32c = f.crc32c;
        $out.checksum_crc64nvme = f.crc64nvme;
        $out.checksum_sha1 = f.sha1;
        $out.checksum_sha256 = f.sha256;
    }};
}

// Every S3 input names these headers alike; the macros read them from any.

/// The SSE-C customer key an input carries.
macro_rules! customer_key {
    ($i:expr) => {
        convert::customer_key(
            $i.sse_customer_algorithm.as_deref(),
            $i.sse_customer_key.as_deref(),
            $i.sse_customer_key_md5.as_deref(),
        )
    };
}

/// The SSE-C customer key of a copy source.
macro_rules! copy_source_customer_key {
    ($i:expr) => {
        convert::customer_key(
            $i.copy_source_sse_customer_algorithm.as_deref(),
            $i.copy_source_sse_customer_key.as_deref(),
            $i.copy_source_sse_customer_key_md5.as_deref(),
        )
    };
}

/// The x-amz-checksum-* values an input carries.
macro_rules! sent_checksums {
    ($i:expr) => {
        convert::sent_checksums(
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
        stored_metadata(
            $i.metadata.clone(),
            [
                ("cache-control", $i.cache_control.clone()),
                ("content-disposition", $i.content_disposition.clone()),
                (
                    "content-encoding",
                    strip_aws_chunked($i.content_encoding.clone()),
                ),
                ("content-language", $i.content_language.clone()),
                (
                    "expires",
                    $i.expires.as_ref().map(|t| convert::millis(t).to_string()),
                ),
            ],
        )
    };
}

/// The read options of a GetObject or HeadObject input.
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

/// What GetObject and HeadObject both answer about an object.
struct ObjectHeaders {
    metadata: Option<Metadata>,
    content_type: String,
    cache_control: Option<String>,
    content_disposition: Option<String>,
    content_encoding: Option<String>,
    content_language: Option<String>,
    expires: Option<Timestamp>,
    parts_count: Option<i32>,
    storage_class: Option<StorageClass>,
    version_id: Option<String>,
    sse_customer_algorithm: Option<String>,
}

impl ObjectHeaders {
    /// `asked_version`: the request named a version (S3 then echoes even
    /// "null"); `asked_part`: it named a part number.
    fn of(info: &cluster::ObjectInfo, asked_version: bool, asked_part: bool) -> Self {
        let (user, std_headers) = convert::split_metadata(info);
        Self {
            metadata: (!user.is_empty()).then_some(user),
            content_type: if info.content_type.is_empty() {
                "binary/octet-stream".to_string()
            } else {
                info.content_type.clone()
            },
            cache_control: std_headers.get("cache-control").cloned(),
            content_disposition: std_headers.get("content-disposition").cloned(),
            content_encoding: std_headers.get("content-encoding").cloned(),
            content_language: std_headers.get("content-language").cloned(),
            expires: std_headers
                .get("expires")
                .and_then(|v| v.parse::<u64>().ok())
                .map(convert::timestamp),
            parts_count: (info.parts > 0 && asked_part).then_some(info.parts as i32),
            storage_class: (info.storage_class != "STANDARD")
                .then(|| StorageClass::from(info.storage_class.clone())),
            version_id: (info.version_id != "null" || asked_version)
                .then(|| info.version_id.clone()),
            sse_customer_algorithm: info.sse_customer_key_md5.as_ref().map(|_| "AES256".into()),
        }
    }
}

#[async_trait::async_trait]
impl S3 for S3Gateway {
    async fn list_buckets(
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

    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        let _slot = self.slot()?;
        let me = Self::caller(&req)?.to_string();
        if let Some(loc) = req
            .input
            .create_bucket_configuration
            .as_ref()
            .and_then(|c| c.location_constraint.as_ref())
        {
            if loc.as_str() != self.region && !(loc.as_str().is_empty()) {
                return Err(s3_error!(
                    InvalidLocationConstraint,
                    "this store's region is {}",
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

    async fn delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        let _slot = self.slot()?;
        Self::caller(&req)?;
        self.authorize(&req, &req.input.bucket).await?;
        self.store
            .delete_bucket(&req.input.bucket)
            .await
            .map_err(to_s3)?;
        Ok(S3Response::new(DeleteBucketOutput::default()))
    }

    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        self.authorize(&req, &req.input.bucket).await?;
        Ok(S3Response::new(HeadBucketOutput {
            bucket_region: Some(self.region.clone()),
            ..Default::default()
        }))
    }

    async fn get_bucket_location(
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

    async fn get_bucket_versioning(
        &self,
        req: S3Request<GetBucketVersioningInput>,
    ) -> S3Result<S3Response<GetBucketVersioningOutput>> {
        self.authorize(&req, &req.input.bucket).await?;
        let b = self
            .store
            .head_bucket(&req.input.bucket)
            .await
            .map_err(to_s3)?;
        let status = match b.versioning {
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

    async fn put_bucket_versioning(
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

    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        let _slot = self.slot()?;
        Self::caller(&req)?;
        self.authorize(&req, &req.input.bucket).await?;
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
            .put_object(&i.bucket, &i.key, body_stream(i.body), opts)
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

    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        let slot = self.slot()?;
        self.authorize(&req, &req.input.bucket).await?;
        let i = req.input;
        let opts = read_options!(i, i.range.as_ref().map(convert::range));
        let got = self
            .store
            .get_object(&i.bucket, &i.key, opts)
            .await
            .map_err(to_s3)?;
        let info = got.info;
        let h = ObjectHeaders::of(&info, i.version_id.is_some(), i.part_number.is_some());
        let length = got.range.map_or(info.size, |(s, e)| e - s);
        let body = BodyWithSlot {
            body: std::sync::Mutex::new(got.body),
            _slot: slot,
        };
        let mut out = GetObjectOutput {
            accept_ranges: Some("bytes".into()),
            body: Some(StreamingBlob::wrap(body)),
            content_length: Some(length as i64),
            content_range: got
                .range
                .map(|(s, e)| format!("bytes {s}-{}/{}", e.saturating_sub(1), info.size)),
            content_type: Some(i.response_content_type.unwrap_or(h.content_type)),
            cache_control: i.response_cache_control.or(h.cache_control),
            content_disposition: i.response_content_disposition.or(h.content_disposition),
            content_encoding: i.response_content_encoding.or(h.content_encoding),
            content_language: i.response_content_language.or(h.content_language),
            e_tag: Some(convert::etag(&info.etag)),
            expires: h.expires,
            last_modified: Some(convert::timestamp(info.last_modified_ms)),
            metadata: h.metadata,
            parts_count: h.parts_count,
            storage_class: h.storage_class,
            tag_count: (!info.tags.is_empty()).then_some(info.tags.len() as i32),
            version_id: h.version_id,
            sse_customer_algorithm: h.sse_customer_algorithm,
            sse_customer_key_md5: info.sse_customer_key_md5.clone(),
            ..Default::default()
        };
        if i.checksum_mode.is_some() && got.range.is_none() {
            fill_checksums!(out, &info.checksums);
            out.checksum_type = convert::checksum_type(&info.checksums);
        }
        Ok(S3Response::new(out))
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        self.authorize(&req, &req.input.bucket).await?;
        let i = req.input;
        let opts = read_options!(i, None);
        let info = self
            .store
            .head_object(&i.bucket, &i.key, &opts)
            .await
            .map_err(to_s3)?;
        let h = ObjectHeaders::of(&info, i.version_id.is_some(), i.part_number.is_some());
        let size = match i.range.as_ref().map(convert::range) {
            Some(r) => {
                let (s, e) = r.resolve(info.size).map_err(to_s3)?;
                e - s
            }
            None => info.size,
        };
        let mut out = HeadObjectOutput {
            accept_ranges: Some("bytes".into()),
            content_length: Some(size as i64),
            content_type: Some(h.content_type),
            cache_control: h.cache_control,
            content_disposition: h.content_disposition,
            content_encoding: h.content_encoding,
            content_language: h.content_language,
            e_tag: Some(convert::etag(&info.etag)),
            expires: h.expires,
            last_modified: Some(convert::timestamp(info.last_modified_ms)),
            metadata: h.metadata,
            parts_count: h.parts_count,
            storage_class: h.storage_class,
            version_id: h.version_id,
            sse_customer_algorithm: h.sse_customer_algorithm,
            sse_customer_key_md5: info.sse_customer_key_md5.clone(),
            ..Default::default()
        };
        if i.checksum_mode.is_some() {
            fill_checksums!(out, &info.checksums);
            out.checksum_type = convert::checksum_type(&info.checksums);
        }
        Ok(S3Response::new(out))
    }

    /// What HEAD knows, as XML, limited to the attributes asked for. Parts
    /// are counted only: the manifest keeps part sizes, not each part's
    /// ETag or checksum, so no per-part list is given.
    async fn get_object_attributes(
        &self,
        req: S3Request<GetObjectAttributesInput>,
    ) -> S3Result<S3Response<GetObjectAttributesOutput>> {
        self.authorize(&req, &req.input.bucket).await?;
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
            .head_object(&i.bucket, &i.key, &opts)
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
            version_id: (info.version_id != "null" || i.version_id.is_some())
                .then(|| info.version_id.clone()),
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

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        let _slot = self.slot()?;
        Self::caller(&req)?;
        self.authorize(&req, &req.input.bucket).await?;
        let i = req.input;
        let r = self
            .store
            .delete_object(&i.bucket, &i.key, i.version_id.as_deref())
            .await
            .map_err(to_s3)?;
        Ok(S3Response::new(DeleteObjectOutput {
            delete_marker: r.delete_marker.then_some(true),
            version_id: r.version_id,
            ..Default::default()
        }))
    }

    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let _slot = self.slot()?;
        Self::caller(&req)?;
        self.authorize(&req, &req.input.bucket).await?;
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
                let bucket = i.bucket.clone();
                async move {
                    let r = store
                        .delete_object(&bucket, &o.key, o.version_id.as_deref())
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

    async fn copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        let _slot = self.slot()?;
        Self::caller(&req)?;
        let (src_bucket, src_key, src_version) = copy_source(&req.input.copy_source)?;
        self.authorize(&req, &src_bucket).await?;
        self.authorize(&req, &req.input.bucket).await?;
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
            source_customer_key: copy_source_customer_key!(i)?,
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
            .copy_object(&src_bucket, &src_key, &i.bucket, &i.key, opts)
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

    async fn list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        let _slot = self.slot()?;
        let bucket_info = self.authorize(&req, &req.input.bucket).await?;
        let i = req.input;
        let url = url_encoding(&i.encoding_type);
        let page = self
            .store
            .list_objects(
                &i.bucket,
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
            contents: Some(objects_of(&page.objects, url, Some(&bucket_info.owner))),
            common_prefixes: Some(prefixes_of(&page.common_prefixes, url)),
            delimiter: i.delimiter.filter(|d| !d.is_empty()),
            next_marker,
            encoding_type: i.encoding_type,
            ..Default::default()
        }))
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        let _slot = self.slot()?;
        let bucket_info = self.authorize(&req, &req.input.bucket).await?;
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
                &i.bucket,
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
                fetch_owner.then_some(bucket_info.owner.as_str()),
            )),
            common_prefixes: Some(prefixes_of(&page.common_prefixes, url)),
            delimiter: i.delimiter.filter(|d| !d.is_empty()),
            encoding_type: i.encoding_type,
            start_after: i.start_after.map(|s| convert::encode_key(&s, url)),
            ..Default::default()
        }))
    }

    async fn list_object_versions(
        &self,
        req: S3Request<ListObjectVersionsInput>,
    ) -> S3Result<S3Response<ListObjectVersionsOutput>> {
        let _slot = self.slot()?;
        let bucket_info = self.authorize(&req, &req.input.bucket).await?;
        let i = req.input;
        let url = url_encoding(&i.encoding_type);
        let page = self
            .store
            .list_object_versions(
                &i.bucket,
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
                    owner: Some(owner(&bucket_info.owner)),
                    version_id: Some(v.version_id),
                });
            } else {
                versions.push(ObjectVersion {
                    e_tag: Some(convert::etag(&v.etag)),
                    is_latest: Some(v.is_latest),
                    key: Some(convert::encode_key(&v.key, url)),
                    last_modified: Some(convert::timestamp(v.last_modified_ms)),
                    size: Some(v.size as i64),
                    owner: Some(owner(&bucket_info.owner)),
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

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let _slot = self.slot()?;
        let me = Self::caller(&req)?.to_string();
        self.authorize(&req, &req.input.bucket).await?;
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
            .create_multipart_upload(&i.bucket, &i.key, &me, opts)
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

    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        let _slot = self.slot()?;
        Self::caller(&req)?;
        self.authorize(&req, &req.input.bucket).await?;
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
                &i.bucket,
                &i.key,
                &i.upload_id,
                i.part_number.max(0) as u32,
                body_stream(i.body),
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

    async fn upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        let _slot = self.slot()?;
        Self::caller(&req)?;
        let (src_bucket, src_key, src_version) = copy_source(&req.input.copy_source)?;
        self.authorize(&req, &src_bucket).await?;
        self.authorize(&req, &req.input.bucket).await?;
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
                &src_bucket,
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
                    customer_key: copy_source_customer_key!(i)?,
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
                &i.bucket,
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

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let _slot = self.slot()?;
        Self::caller(&req)?;
        self.authorize(&req, &req.input.bucket).await?;
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
            .complete_multipart_upload_if(&i.bucket, &i.key, &i.upload_id, &parts, &conditions)
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

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        Self::caller(&req)?;
        self.authorize(&req, &req.input.bucket).await?;
        let i = req.input;
        self.store
            .abort_multipart_upload(&i.bucket, &i.key, &i.upload_id)
            .await
            .map_err(to_s3)?;
        Ok(S3Response::new(AbortMultipartUploadOutput::default()))
    }

    async fn list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        let me = Self::caller(&req)?.to_string();
        self.authorize(&req, &req.input.bucket).await?;
        let i = req.input;
        let max = i.max_parts.map_or(1000, |m| m.clamp(0, 1000) as usize);
        let page = self
            .store
            .list_parts(
                &i.bucket,
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

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        Self::caller(&req)?;
        self.authorize(&req, &req.input.bucket).await?;
        let i = req.input;
        let url = url_encoding(&i.encoding_type);
        let max = i.max_uploads.map_or(1000, |m| m.clamp(0, 1000) as usize);
        let page = self
            .store
            .list_multipart_uploads(
                &i.bucket,
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

    async fn get_bucket_acl(
        &self,
        req: S3Request<GetBucketAclInput>,
    ) -> S3Result<S3Response<GetBucketAclOutput>> {
        let info = self.authorize(&req, &req.input.bucket).await?;
        let (owner, grants) = Self::acl(&info.owner, info.public);
        Ok(S3Response::new(GetBucketAclOutput { grants, owner }))
    }

    async fn put_bucket_acl(
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

    async fn get_object_acl(
        &self,
        req: S3Request<GetObjectAclInput>,
    ) -> S3Result<S3Response<GetObjectAclOutput>> {
        let info = self.authorize(&req, &req.input.bucket).await?;
        self.store
            .head_object(
                &req.input.bucket,
                &req.input.key,
                &GetOptions {
                    version: req.input.version_id.clone(),
                    ..GetOptions::default()
                },
            )
            .await
            .map_err(to_s3)?;
        let (owner, grants) = Self::acl(&info.owner, info.public);
        Ok(S3Response::new(GetObjectAclOutput {
            grants,
            owner,
            ..Default::default()
        }))
    }

    async fn put_object_acl(
        &self,
        req: S3Request<PutObjectAclInput>,
    ) -> S3Result<S3Response<PutObjectAclOutput>> {
        Self::caller(&req)?;
        let info = self.authorize(&req, &req.input.bucket).await?;
        // Objects share their bucket's access: an ACL that says the same
        // is accepted, one that would differ is refused, never ignored.
        let wanted = match &req.input.acl {
            Some(acl) => is_public_acl(acl.as_str())?,
            None => info.public,
        };
        if wanted != info.public {
            return Err(s3_error!(
                NotImplemented,
                "per-object ACLs are not supported; set the bucket's ACL"
            ));
        }
        Ok(S3Response::new(PutObjectAclOutput::default()))
    }

    async fn get_object_tagging(
        &self,
        req: S3Request<GetObjectTaggingInput>,
    ) -> S3Result<S3Response<GetObjectTaggingOutput>> {
        self.authorize(&req, &req.input.bucket).await?;
        let i = req.input;
        let info = self
            .store
            .head_object(
                &i.bucket,
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
            version_id: (info.version_id != "null").then_some(info.version_id),
        }))
    }

    async fn put_object_tagging(
        &self,
        req: S3Request<PutObjectTaggingInput>,
    ) -> S3Result<S3Response<PutObjectTaggingOutput>> {
        Self::caller(&req)?;
        self.authorize(&req, &req.input.bucket).await?;
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
            .set_object_tags(&i.bucket, &i.key, i.version_id.as_deref(), tags)
            .await
            .map_err(to_s3)?;
        Ok(S3Response::new(PutObjectTaggingOutput {
            version_id: (v != "null").then_some(v),
        }))
    }

    async fn delete_object_tagging(
        &self,
        req: S3Request<DeleteObjectTaggingInput>,
    ) -> S3Result<S3Response<DeleteObjectTaggingOutput>> {
        Self::caller(&req)?;
        self.authorize(&req, &req.input.bucket).await?;
        let i = req.input;
        let v = self
            .store
            .set_object_tags(&i.bucket, &i.key, i.version_id.as_deref(), BTreeMap::new())
            .await
            .map_err(to_s3)?;
        Ok(S3Response::new(DeleteObjectTaggingOutput {
            version_id: (v != "null").then_some(v),
        }))
    }
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

fn prefixes_of(prefixes: &[String], url: bool) -> Vec<CommonPrefix> {
    prefixes
        .iter()
        .map(|p| CommonPrefix {
            prefix: Some(convert::encode_key(p, url)),
        })
        .collect()
}

/// An object body for s3s (which wants `Sync`), holding the request's
/// slot for as long as the body streams.
struct BodyWithSlot {
    // Only ever reached through `&mut self` (`get_mut`): never locked.
    body: std::sync::Mutex<cluster::ObjectBody>,
    _slot: tokio::sync::OwnedSemaphorePermit,
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
