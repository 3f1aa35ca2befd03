//! The loopback ceiling for `gridstore bench s3`: an S3 server that does
//! no storage work. It speaks S3 through the same s3s protocol layer and
//! hyper server our gateway uses (SigV4 checked, XML, errors), keeps an
//! in-memory index of object names and sizes, drains every PUT body
//! without keeping it, and answers a GET with that many bytes from one
//! shared zeroed 1 MiB block. What the bench reaches against it is what
//! the protocol, the loopback network and the load generator itself allow
//! on this machine; no real store can beat it. (s3s-fs on a tmpfs was
//! tried first: it reads files in 4 KiB frames, which made its large GETs
//! slower than gridstore's, so it is no ceiling.)
//!
//! ```sh
//! cargo build --release -p gridstore-bench --example s3_null_server
//! target/release/examples/s3_null_server 127.0.0.1:9510 ACCESS SECRET
//! ```
//!
//! It runs until killed. Only what `gridstore bench s3` calls is served:
//! buckets (create, head), objects (put, get, head, delete, batch delete)
//! and ListObjectsV2; the rest answers NotImplemented.

use bytes::Bytes;
use futures_util::StreamExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::dto::*;
use s3s::service::S3ServiceBuilder;
use s3s::{s3_error, S3Request, S3Response, S3Result, S3};
use std::collections::{BTreeMap, HashSet};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use tokio::net::TcpListener;

/// GET bodies are sent in frames of this size, all slices of one block.
const FRAME: usize = 1 << 20;

struct NullStore {
    buckets: Mutex<HashSet<String>>,
    /// (bucket, key) -> (size, etag)
    objects: Mutex<BTreeMap<(String, String), (u64, ETag)>>,
    etags: AtomicU64,
    zeros: Bytes,
}

impl NullStore {
    fn bucket_exists(&self, bucket: &str) -> S3Result<()> {
        let known = self
            .buckets
            .lock()
            .map_err(|_| s3_error!(InternalError))?
            .contains(bucket);
        if known {
            Ok(())
        } else {
            Err(s3_error!(NoSuchBucket))
        }
    }

    fn lookup(&self, bucket: &str, key: &str) -> S3Result<(u64, ETag)> {
        self.bucket_exists(bucket)?;
        self.objects
            .lock()
            .map_err(|_| s3_error!(InternalError))?
            .get(&(bucket.to_string(), key.to_string()))
            .cloned()
            .ok_or_else(|| s3_error!(NoSuchKey))
    }
}

#[async_trait::async_trait]
impl S3 for NullStore {
    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        self.buckets
            .lock()
            .map_err(|_| s3_error!(InternalError))?
            .insert(req.input.bucket);
        Ok(S3Response::new(CreateBucketOutput::default()))
    }

    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        self.bucket_exists(&req.input.bucket)?;
        Ok(S3Response::new(HeadBucketOutput::default()))
    }

    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        let i = req.input;
        self.bucket_exists(&i.bucket)?;
        let mut size = 0u64;
        if let Some(mut body) = i.body {
            while let Some(frame) = body.next().await {
                let frame = frame.map_err(|e| s3_error!(IncompleteBody, "{e}"))?;
                size += frame.len() as u64;
            }
        }
        // Not an MD5: hashing is storage work this server leaves out.
        let etag = ETag::Strong(format!(
            "{:032x}",
            self.etags.fetch_add(1, Ordering::Relaxed)
        ));
        self.objects
            .lock()
            .map_err(|_| s3_error!(InternalError))?
            .insert((i.bucket, i.key), (size, etag.clone()));
        Ok(S3Response::new(PutObjectOutput {
            e_tag: Some(etag),
            ..Default::default()
        }))
    }

    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        let (size, etag) = self.lookup(&req.input.bucket, &req.input.key)?;
        let zeros = self.zeros.clone();
        let frames = size.div_ceil(FRAME as u64);
        let body = futures_util::stream::iter((0..frames).map(move |n| {
            let len = (size - n * FRAME as u64).min(FRAME as u64) as usize;
            Ok::<_, std::io::Error>(zeros.slice(..len))
        }));
        Ok(S3Response::new(GetObjectOutput {
            body: Some(StreamingBlob::wrap(body)),
            content_length: Some(size as i64),
            e_tag: Some(etag),
            ..Default::default()
        }))
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        let (size, etag) = self.lookup(&req.input.bucket, &req.input.key)?;
        Ok(S3Response::new(HeadObjectOutput {
            content_length: Some(size as i64),
            e_tag: Some(etag),
            ..Default::default()
        }))
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        self.bucket_exists(&req.input.bucket)?;
        self.objects
            .lock()
            .map_err(|_| s3_error!(InternalError))?
            .remove(&(req.input.bucket, req.input.key));
        Ok(S3Response::new(DeleteObjectOutput::default()))
    }

    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let i = req.input;
        self.bucket_exists(&i.bucket)?;
        let mut objects = self.objects.lock().map_err(|_| s3_error!(InternalError))?;
        let deleted = i
            .delete
            .objects
            .into_iter()
            .map(|o| {
                objects.remove(&(i.bucket.clone(), o.key.clone()));
                DeletedObject {
                    key: Some(o.key),
                    ..Default::default()
                }
            })
            .collect();
        Ok(S3Response::new(DeleteObjectsOutput {
            deleted: Some(deleted),
            ..Default::default()
        }))
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        let i = req.input;
        self.bucket_exists(&i.bucket)?;
        let prefix = i.prefix.clone().unwrap_or_default();
        let max = i.max_keys.unwrap_or(1000).clamp(1, 1000) as usize;
        // The token is the last key of the previous page.
        let after = i
            .continuation_token
            .clone()
            .or(i.start_after.clone())
            .unwrap_or_default();
        let objects = self.objects.lock().map_err(|_| s3_error!(InternalError))?;
        let mut page: Vec<Object> = Vec::new();
        let mut truncated = false;
        let from = (i.bucket.clone(), after.clone());
        for ((bucket, key), (size, etag)) in objects.range(from..) {
            if bucket != &i.bucket {
                break;
            }
            if key <= &after || !key.starts_with(&prefix) {
                continue;
            }
            if page.len() == max {
                truncated = true;
                break;
            }
            page.push(Object {
                key: Some(key.clone()),
                size: Some(*size as i64),
                e_tag: Some(etag.clone()),
                ..Default::default()
            });
        }
        let next = truncated
            .then(|| page.last().and_then(|o| o.key.clone()))
            .flatten();
        Ok(S3Response::new(ListObjectsV2Output {
            name: Some(i.bucket),
            prefix: i.prefix,
            max_keys: Some(max as i32),
            key_count: Some(page.len() as i32),
            continuation_token: i.continuation_token,
            is_truncated: Some(truncated),
            next_continuation_token: next,
            contents: Some(page),
            ..Default::default()
        }))
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [listen, access, secret] = args.as_slice() else {
        eprintln!("usage: s3_null_server ADDR ACCESS_KEY SECRET_KEY");
        return ExitCode::from(2);
    };
    let store = NullStore {
        buckets: Mutex::default(),
        objects: Mutex::default(),
        etags: AtomicU64::new(1),
        zeros: Bytes::from(vec![0u8; FRAME]),
    };
    let mut builder = S3ServiceBuilder::new(store);
    builder.set_auth(SimpleAuth::from_single(access.as_str(), secret.as_str()));
    let service = builder.build();
    let listener = match TcpListener::bind(listen.as_str()).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("s3_null_server: bind {listen}: {e}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!("s3_null_server: on http://{listen}");
    loop {
        let (socket, _) = match listener.accept().await {
            Ok(conn) => conn,
            // A failed accept (out of descriptors, a reset before accept)
            // concerns one connection, not the server.
            Err(_) => continue,
        };
        // As our gateway does: without it a response written as head then
        // body waits out the client's delayed ACK (40 ms per small GET).
        let _ = socket.set_nodelay(true);
        let service = service.clone();
        tokio::spawn(async move {
            let _ = ConnBuilder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(socket), service)
                .await;
        });
    }
}
