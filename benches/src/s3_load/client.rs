//! The few S3 calls the load generator makes. rusty-s3 signs every request
//! as a SigV4 presigned URL and parses the XML answers; hyper carries them.

use super::body::{ObjectBody, ReqBody};
use super::S3BenchError;
use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_LENGTH};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper_rustls::{ConfigBuilderExt, HttpsConnector};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rusty_s3::actions::{ListObjectsV2, ListObjectsV2Response, ObjectIdentifier};
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use url::Url;

/// How long a signed URL stays valid. Requests are signed just before they
/// are sent, so this only has to outlast clock skew and a slow upload
/// starting.
const SIGNATURE_TTL: Duration = Duration::from_secs(3600);
/// A listing or error body larger than this is not an S3 answer.
const MAX_XML: usize = 16 << 20;
/// How much of an error body an error message quotes.
const ERROR_QUOTE: usize = 300;

/// One failed request, as the report shows it.
#[derive(Debug, Clone)]
pub(crate) struct OpError(pub(crate) String);

impl fmt::Display for OpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl OpError {
    fn new(what: impl fmt::Display) -> Self {
        Self(what.to_string())
    }
}

pub(crate) struct S3 {
    http: Client<HttpsConnector<HttpConnector>, ReqBody>,
    bucket: Bucket,
    credentials: Credentials,
}

impl S3 {
    /// Path-style addressing: it works with IP endpoints, MinIO, s3s and
    /// our gateway, and AWS still serves it.
    pub(crate) fn new(
        endpoint: &str,
        region: &str,
        bucket: &str,
        credentials: Credentials,
        connections: usize,
        timeout: Duration,
    ) -> Result<Self, S3BenchError> {
        let bad_endpoint = |reason: String| S3BenchError::Endpoint {
            endpoint: endpoint.to_owned(),
            reason,
        };
        let url = Url::parse(endpoint).map_err(|e| bad_endpoint(e.to_string()))?;
        let bucket = Bucket::new(
            url.clone(),
            UrlStyle::Path,
            bucket.to_owned(),
            region.to_owned(),
        )
        .map_err(|e| bad_endpoint(format!("{e} (expected http://host:port or https://host)")))?;

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| bad_endpoint(format!("TLS setup: {e}")))?;
        // Plain-HTTP endpoints must work on hosts without a CA bundle.
        let tls = if url.scheme() == "https" {
            tls.with_native_roots()
                .map_err(|e| bad_endpoint(format!("TLS roots: {e}")))?
        } else {
            tls.with_root_certificates(rustls::RootCertStore::empty())
        }
        .with_no_client_auth();
        let mut http = HttpConnector::new();
        // Small requests would otherwise wait on Nagle's algorithm.
        http.set_nodelay(true);
        // A black-holed endpoint should fail the request, not hang it.
        http.set_connect_timeout(Some(timeout));
        http.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let http = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(connections)
            .build(connector);
        Ok(Self {
            http,
            bucket,
            credentials,
        })
    }

    async fn send(
        &self,
        method: Method,
        url: Url,
        body: ReqBody,
        headers: &[(&'static str, String)],
    ) -> Result<Response<Incoming>, OpError> {
        let uri = Uri::try_from(url.as_str()).map_err(OpError::new)?;
        let length = http_body::Body::size_hint(&body).exact().unwrap_or(0);
        // S3 refuses a PUT or POST without a length, even an empty one,
        // and hyper leaves it out for empty bodies.
        let needs_length = method == Method::PUT || method == Method::POST;
        let mut request = Request::builder().method(method).uri(uri);
        if needs_length {
            request = request.header(CONTENT_LENGTH, HeaderValue::from(length));
        }
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let request = request.body(body).map_err(OpError::new)?;
        self.http.request(request).await.map_err(|e| {
            // The useful part of a connection error is in its sources.
            let mut message = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(inner) = source {
                message.push_str(": ");
                message.push_str(&inner.to_string());
                source = inner.source();
            }
            OpError(message)
        })
    }

    /// Sends, and turns a non-2xx answer into an error quoting it.
    async fn call(
        &self,
        method: Method,
        url: Url,
        body: ReqBody,
        headers: &[(&'static str, String)],
    ) -> Result<Response<Incoming>, OpError> {
        let what = format!("{method} {}", url.path());
        let response = self.send(method, url, body, headers).await?;
        if response.status().is_success() {
            return Ok(response);
        }
        Err(status_error(&what, response).await)
    }

    async fn xml(
        &self,
        method: Method,
        url: Url,
        body: ReqBody,
        headers: &[(&'static str, String)],
    ) -> Result<String, OpError> {
        let response = self.call(method, url, body, headers).await?;
        let bytes = Limited::new(response.into_body(), MAX_XML)
            .collect()
            .await
            .map_err(|e| OpError(format!("reading the answer: {e}")))?
            .to_bytes();
        String::from_utf8(bytes.to_vec()).map_err(|_| OpError::new("the answer is not UTF-8"))
    }

    /// Creates the bucket unless it exists; true when it was created.
    pub(crate) async fn ensure_bucket(&self) -> Result<bool, OpError> {
        let head = self.bucket.head_bucket(Some(&self.credentials));
        let url = head.sign(SIGNATURE_TTL);
        let response = self.send(Method::HEAD, url, ReqBody::Empty, &[]).await?;
        match response.status() {
            s if s.is_success() => return Ok(false),
            StatusCode::NOT_FOUND => {}
            _ => return Err(status_error("HEAD bucket", response).await),
        }
        let create = self.bucket.create_bucket(&self.credentials);
        let url = create.sign(SIGNATURE_TTL);
        let body = ReqBody::full(create.body());
        let response = self.send(Method::PUT, url, body, &[]).await?;
        match response.status() {
            s if s.is_success() => Ok(true),
            // Created meanwhile by another run: BucketAlreadyOwnedByYou.
            // Someone else's bucket fails the first upload with a clear
            // AccessDenied instead.
            StatusCode::CONFLICT => Ok(false),
            _ => Err(status_error("create bucket", response).await),
        }
    }

    /// Uploads `body` as `key`; the bytes sent.
    pub(crate) async fn put(&self, key: &str, body: ObjectBody) -> Result<u64, OpError> {
        let len = body.len();
        let url = self
            .bucket
            .put_object(Some(&self.credentials), key)
            .sign(SIGNATURE_TTL);
        let response = self
            .call(Method::PUT, url, ReqBody::Object(body), &[])
            .await?;
        drain(response).await?;
        Ok(len)
    }

    /// Uploads `body` as `key` in parts of `part_size` bytes (a multiple
    /// of the body's segment), one after another; the bytes sent.
    pub(crate) async fn put_multipart(
        &self,
        key: &str,
        body: ObjectBody,
        part_size: u64,
    ) -> Result<u64, OpError> {
        let len = body.len();
        let create = self
            .bucket
            .create_multipart_upload(Some(&self.credentials), key)
            .sign(SIGNATURE_TTL);
        let xml = self.xml(Method::POST, create, ReqBody::Empty, &[]).await?;
        let created = rusty_s3::actions::CreateMultipartUpload::parse_response(&xml)
            .map_err(|e| OpError(format!("CreateMultipartUpload answer: {e}")))?;
        let upload_id = created.upload_id().to_string();
        let mut etags = Vec::new();
        for (i, part) in body.parts(part_size).into_iter().enumerate() {
            let number =
                u16::try_from(i + 1).map_err(|_| OpError::new("more than 65,535 parts"))?;
            let url = self
                .bucket
                .upload_part(Some(&self.credentials), key, number, &upload_id)
                .sign(SIGNATURE_TTL);
            let response = self
                .call(Method::PUT, url, ReqBody::Object(part), &[])
                .await?;
            let etag = response
                .headers()
                .get(http::header::ETAG)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| OpError::new("UploadPart answer without an ETag"))?
                .to_string();
            drain(response).await?;
            etags.push(etag);
        }
        let complete = self.bucket.complete_multipart_upload(
            Some(&self.credentials),
            key,
            &upload_id,
            etags.iter().map(String::as_str),
        );
        let url = complete.sign(SIGNATURE_TTL);
        let xml = self
            .xml(Method::POST, url, ReqBody::full(complete.body()), &[])
            .await?;
        // S3 may answer 200 with an error document when completion fails late.
        if xml.contains("<Error>") {
            return Err(OpError(format!("CompleteMultipartUpload: {xml}")));
        }
        Ok(len)
    }

    /// Downloads `key` and throws the bytes away; how many came.
    pub(crate) async fn get(&self, key: &str) -> Result<u64, OpError> {
        let url = self
            .bucket
            .get_object(Some(&self.credentials), key)
            .sign(SIGNATURE_TTL);
        let response = self.call(Method::GET, url, ReqBody::Empty, &[]).await?;
        drain(response).await
    }

    pub(crate) async fn head(&self, key: &str) -> Result<(), OpError> {
        let url = self
            .bucket
            .head_object(Some(&self.credentials), key)
            .sign(SIGNATURE_TTL);
        self.call(Method::HEAD, url, ReqBody::Empty, &[]).await?;
        Ok(())
    }

    pub(crate) async fn delete(&self, key: &str) -> Result<(), OpError> {
        let url = self
            .bucket
            .delete_object(Some(&self.credentials), key)
            .sign(SIGNATURE_TTL);
        let response = self.call(Method::DELETE, url, ReqBody::Empty, &[]).await?;
        drain(response).await?;
        Ok(())
    }

    /// One page (up to 1000 keys) of the keys under `prefix`.
    pub(crate) async fn list(
        &self,
        prefix: &str,
        delimiter: Option<&str>,
        continuation: Option<&str>,
    ) -> Result<ListObjectsV2Response, OpError> {
        let mut list = ListObjectsV2::new(&self.bucket, Some(&self.credentials));
        list.with_prefix(prefix);
        if let Some(d) = delimiter {
            list.with_delimiter(d);
        }
        if let Some(token) = continuation {
            list.with_continuation_token(token);
        }
        let url = list.sign(SIGNATURE_TTL);
        let xml = self.xml(Method::GET, url, ReqBody::Empty, &[]).await?;
        ListObjectsV2::parse_response(&xml).map_err(|e| OpError(format!("unreadable listing: {e}")))
    }

    /// Deletes up to 1000 keys in one request; the keys it could not delete.
    pub(crate) async fn delete_batch(&self, keys: Vec<String>) -> Result<usize, OpError> {
        let objects: Vec<ObjectIdentifier> = keys.into_iter().map(ObjectIdentifier::new).collect();
        let mut action = self
            .bucket
            .delete_objects(Some(&self.credentials), objects.iter());
        // Only failures are reported back.
        action.set_quiet(true);
        let url = action.sign(SIGNATURE_TTL);
        let (body, md5) = action.body_with_md5();
        let xml = self
            .xml(
                Method::POST,
                url,
                ReqBody::full(body),
                &[("content-md5", md5)],
            )
            .await?;
        let answer = rusty_s3::actions::DeleteObjectsResponse::parse(&xml)
            .map_err(|e| OpError(format!("unreadable delete answer: {e}")))?;
        Ok(answer.errors.len())
    }
}

/// Reads a body to its end, keeping nothing; the byte count.
async fn drain(response: Response<Incoming>) -> Result<u64, OpError> {
    let mut body = response.into_body();
    let mut bytes = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| OpError(format!("reading the body: {e}")))?;
        if let Some(data) = frame.data_ref() {
            bytes += data.len() as u64;
        }
    }
    Ok(bytes)
}

async fn status_error(what: &str, response: Response<Incoming>) -> OpError {
    let status = response.status();
    let body: Bytes = Limited::new(response.into_body(), MAX_XML)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    // The S3 error document as the server wrote it, on one line: naming
    // the code takes no parsing, and anything else is shown too.
    let text = String::from_utf8_lossy(&body);
    let mut quote: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if quote.len() > ERROR_QUOTE {
        let mut end = ERROR_QUOTE;
        while !quote.is_char_boundary(end) {
            end -= 1;
        }
        quote.truncate(end);
        quote.push('…');
    }
    if quote.is_empty() && status == StatusCode::FORBIDDEN {
        // HEAD answers carry no error document to say why.
        OpError(format!(
            "{what}: HTTP {status} (are the access key and secret key right?)"
        ))
    } else if quote.is_empty() {
        OpError(format!("{what}: HTTP {status}"))
    } else {
        OpError(format!("{what}: HTTP {status}: {quote}"))
    }
}
