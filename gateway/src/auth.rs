//! Who may do what: signatures are checked (by s3s) against the secret of
//! the access key stored in the cluster; anonymous requests may only read
//! buckets their owner made public; everything else about a bucket is for
//! its owner (or an admin), checked in [`crate::s3`].

use cluster::ObjectStore;
use s3s::access::{S3Access, S3AccessContext};
use s3s::auth::{S3Auth, SecretKey};
use s3s::path::S3Path;
use s3s::{s3_error, S3Result};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a looked-up secret is trusted before asking the cluster again
/// (a deleted key stops working within this time).
const CACHE_TTL: Duration = Duration::from_secs(10);

/// A looked-up access key: its secret and admin flag, or none.
type Lookup = Option<(String, bool)>;

pub struct StoreAuth {
    store: ObjectStore,
    cache: Mutex<HashMap<String, (Instant, Lookup)>>,
}

impl StoreAuth {
    pub fn new(store: ObjectStore) -> Self {
        Self {
            store,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The secret and admin flag of `access_key` (cached briefly).
    pub async fn lookup(&self, access_key: &str) -> S3Result<Option<(String, bool)>> {
        if let Ok(cache) = self.cache.lock() {
            if let Some((at, v)) = cache.get(access_key) {
                if at.elapsed() < CACHE_TTL {
                    return Ok(v.clone());
                }
            }
        }
        let v = self
            .store
            .user_secret(access_key)
            .await
            .map_err(crate::errors::to_s3)?;
        if let Ok(mut cache) = self.cache.lock() {
            // Bounded: unknown keys from a scanner must not fill memory.
            if cache.len() > 10_000 {
                cache.clear();
            }
            cache.insert(access_key.to_string(), (Instant::now(), v.clone()));
        }
        Ok(v)
    }
}

#[async_trait::async_trait]
impl S3Auth for StoreAuth {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        match self.lookup(access_key).await? {
            Some((secret, _)) => Ok(SecretKey::from(secret)),
            None => Err(s3_error!(InvalidAccessKeyId)),
        }
    }
}

/// Operations an anonymous client may run on a public bucket.
const PUBLIC_READS: [&str; 5] = [
    "GetObject",
    "HeadObject",
    "HeadBucket",
    "ListObjects",
    "ListObjectsV2",
];

pub struct PublicReadAccess {
    store: ObjectStore,
}

impl PublicReadAccess {
    pub fn new(store: ObjectStore) -> Self {
        Self { store }
    }
}

#[async_trait::async_trait]
impl S3Access for PublicReadAccess {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> S3Result<()> {
        // The one place that sees the resolved operation, the bucket and
        // the verified signer together: the access log takes them here.
        let path_bucket = match cx.s3_path() {
            S3Path::Bucket { bucket } | S3Path::Object { bucket, .. } => Some(&**bucket),
            S3Path::Root => None,
        };
        crate::access_log::note_request(
            cx.s3_op().name(),
            path_bucket,
            cx.credentials().map(|c| c.access_key.as_str()),
        );
        if cx.credentials().is_some() {
            return Ok(());
        }
        let bucket = match cx.s3_path() {
            S3Path::Bucket { bucket } | S3Path::Object { bucket, .. } => bucket.to_string(),
            S3Path::Root => return Err(s3_error!(AccessDenied)),
        };
        let handle = match self.store.open_bucket(&bucket).await {
            Ok(b) => b,
            // A missing bucket is no secret (its name is free for anyone).
            Err(cluster::Error::NoSuchBucket(_)) => return Err(s3_error!(NoSuchBucket)),
            // An outage is not a refusal: the client should retry, not
            // conclude the bucket is private.
            Err(e) if e.is_unavailable() => return Err(crate::errors::to_s3(e)),
            Err(_) => return Err(s3_error!(AccessDenied)),
        };
        if handle.is_public() && PUBLIC_READS.contains(&cx.s3_op().name()) {
            // The handler uses this lookup instead of making its own.
            cx.extensions_mut().insert(handle);
            Ok(())
        } else {
            Err(s3_error!(AccessDenied))
        }
    }
}
