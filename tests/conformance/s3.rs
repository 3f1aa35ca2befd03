//! The S3 gateway over HTTP on loopback, through a real S3 client:
//! rusty-s3 signs every request as a SigV4 presigned URL and parses its
//! XML answers; hyper carries them. Errors are read from the answer's
//! `<Code>` (or its status when an answer has no body: HEAD, 304).

use super::frontend::*;
use super::http_client::{child_text, children, send, HttpClient, Reply};
use bytes::Bytes;
use http::Method;
use rusty_s3::actions::{CompleteMultipartUploadResponse, CreateMultipartUpload, ListObjectsV2};
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};
use std::time::Duration;
use url::Url;

const TTL: Duration = Duration::from_secs(3600);
const REGION: &str = "us-east-1";

pub struct S3 {
    endpoint: Url,
    creds: Credentials,
    http: HttpClient,
}

impl S3 {
    pub fn new(addr: std::net::SocketAddr, access_key: &str, secret_key: &str) -> Self {
        Self {
            endpoint: Url::parse(&format!("http://{addr}")).unwrap(),
            creds: Credentials::new(access_key, secret_key),
            http: super::http_client::client(),
        }
    }

    fn bucket(&self, name: &str) -> Bucket {
        Bucket::new(
            self.endpoint.clone(),
            UrlStyle::Path,
            name.to_string(),
            REGION,
        )
        .expect("a bucket URL")
    }

    /// Signs `action` with `headers` among the signed ones (names in
    /// lower case), then sends it with those headers.
    async fn call<'a, A: S3Action<'a>>(
        &self,
        mut action: A,
        method: Method,
        headers: &'a [(String, String)],
        body: Bytes,
    ) -> Reply {
        for (k, v) in headers {
            action.headers_mut().insert(k.as_str(), v.as_str());
        }
        let url = action.sign(TTL);
        send(&self.http, method, url.as_str(), headers, body).await
    }

    /// A request rusty-s3 has no action for, signed with its public
    /// signing function (bucket-level, query parameters sorted by name).
    async fn call_bucket(
        &self,
        bucket: &str,
        method: Method,
        query: &[(&str, &str)],
        body: Bytes,
    ) -> Reply {
        let b = self.bucket(bucket);
        let signing_method = match method {
            Method::GET => rusty_s3::Method::Get,
            Method::PUT => rusty_s3::Method::Put,
            _ => unreachable!("only GET and PUT are used"),
        };
        let url = rusty_s3::signing::sign(
            &jiff::Timestamp::now(),
            signing_method,
            b.base_url().clone(),
            self.creds.key(),
            self.creds.secret(),
            None,
            REGION,
            TTL.as_secs(),
            query.iter().copied(),
            std::iter::empty::<(&str, &str)>(),
        );
        send(&self.http, method, url.as_str(), &[], body).await
    }
}

fn cond_headers(c: &Cond) -> Vec<(String, String)> {
    let mut h = Vec::new();
    if let Some(t) = &c.if_match {
        h.push(("if-match".to_string(), quote_tag(t)));
    }
    if let Some(t) = &c.if_none_match {
        h.push(("if-none-match".to_string(), quote_tag(t)));
    }
    if let Some(t) = c.if_modified_since {
        h.push(("if-modified-since".to_string(), httpdate::fmt_http_date(t)));
    }
    h
}

fn parse_xml(r: &Reply) -> Result<xmltree::Element, FeError> {
    xmltree::Element::parse(r.body.as_ref())
        .map_err(|e| FeError::Other(format!("unparsable XML ({e}): {}", r.text())))
}

/// The neutral error of a failed answer.
fn error_of(r: &Reply) -> FeError {
    let code = xmltree::Element::parse(r.body.as_ref())
        .ok()
        .filter(|e| e.name == "Error")
        .and_then(|e| child_text(&e, "Code"));
    match code.as_deref() {
        Some("NoSuchKey") => FeError::NotFound,
        Some("NoSuchBucket") => FeError::NoSuchBucket,
        Some("NoSuchVersion") => FeError::NoSuchVersion,
        Some("MethodNotAllowed") if r.header("x-amz-delete-marker") == Some("true") => {
            FeError::DeleteMarker
        }
        Some("PreconditionFailed") => FeError::PreconditionFailed,
        Some("NotModified") => FeError::NotModified,
        Some("InvalidRange") => FeError::InvalidRange,
        Some("InvalidBucketName") => FeError::InvalidBucketName,
        Some(other) => FeError::Other(format!("{} {other}: {}", r.status, r.text())),
        // No body: HEAD answers, 304.
        None => match r.status {
            304 => FeError::NotModified,
            // HEAD cannot say which of key or bucket is missing.
            404 => FeError::NotFound,
            405 if r.header("x-amz-delete-marker") == Some("true") => FeError::DeleteMarker,
            412 => FeError::PreconditionFailed,
            416 => FeError::InvalidRange,
            s => FeError::Other(format!("{s} without an S3 error body: {}", r.text())),
        },
    }
}

fn check(r: Reply) -> FeResult<Reply> {
    if r.ok() {
        Ok(r)
    } else {
        Err(error_of(&r))
    }
}

fn etag_of(r: &Reply) -> FeResult<String> {
    r.header("etag")
        .map(unquote)
        .ok_or_else(|| FeError::Other(format!("no ETag in a {} answer", r.status)))
}

impl FrontEnd for S3 {
    fn name(&self) -> &'static str {
        "S3 gateway"
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
        let b = self.bucket(bucket);
        let action = b.create_bucket(&self.creds);
        let body = Bytes::from(action.body());
        check(self.call(action, Method::PUT, &[], body).await).map(|_| ())
    }

    async fn put(&self, bucket: &str, key: &str, body: Bytes, cond: &Cond) -> FeResult<PutOut> {
        let b = self.bucket(bucket);
        let headers = cond_headers(cond);
        let r = check(
            self.call(
                b.put_object(Some(&self.creds), key),
                Method::PUT,
                &headers,
                body,
            )
            .await,
        )?;
        Ok(PutOut {
            etag: Some(etag_of(&r)?),
            version_id: r.header("x-amz-version-id").map(str::to_string),
        })
    }

    async fn get(&self, bucket: &str, key: &str, req: &GetReq) -> FeResult<Object> {
        let b = self.bucket(bucket);
        let mut action = b.get_object(Some(&self.creds), key);
        if let Some(v) = &req.version {
            action.query_mut().insert("versionId", v.clone());
        }
        let mut headers = cond_headers(&req.cond);
        if let Some(r) = req.range {
            headers.push(("range".to_string(), r.header()));
        }
        let r = check(self.call(action, Method::GET, &headers, Bytes::new()).await)?;
        let range = match r.header("content-range") {
            Some(v) => Some(
                parse_content_range(v)
                    .ok_or_else(|| FeError::Other(format!("bad Content-Range {v:?}")))?,
            ),
            None => None,
        };
        if req.range.is_some() != (r.status == 206) {
            return Err(FeError::Other(format!(
                "a {} answer to {:?}",
                r.status, req.range
            )));
        }
        Ok(Object {
            etag: etag_of(&r)?,
            range,
            version_id: r.header("x-amz-version-id").map(str::to_string),
            body: r.body.to_vec(),
        })
    }

    async fn head(&self, bucket: &str, key: &str) -> FeResult<Meta> {
        let b = self.bucket(bucket);
        let r = check(
            self.call(
                b.head_object(Some(&self.creds), key),
                Method::HEAD,
                &[],
                Bytes::new(),
            )
            .await,
        )?;
        let size = r
            .header("content-length")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| FeError::Other("HEAD without Content-Length".into()))?;
        let last_modified = r
            .header("last-modified")
            .and_then(|v| httpdate::parse_http_date(v).ok())
            .ok_or_else(|| FeError::Other("HEAD without Last-Modified".into()))?;
        Ok(Meta {
            size,
            etag: etag_of(&r)?,
            last_modified,
        })
    }

    async fn list(&self, bucket: &str, req: &ListReq) -> FeResult<ListPage> {
        let b = self.bucket(bucket);
        let mut action = b.list_objects_v2(Some(&self.creds));
        if !req.prefix.is_empty() {
            action.with_prefix(req.prefix.clone());
        }
        if let Some(d) = &req.delimiter {
            action.with_delimiter(d.clone());
        }
        if let Some(n) = req.max_keys {
            action.with_max_keys(n);
        }
        if let Some(t) = &req.token {
            action.with_continuation_token(t.clone());
        }
        let r = check(self.call(action, Method::GET, &[], Bytes::new()).await)?;
        let page = ListObjectsV2::parse_response(&r.text())
            .map_err(|e| FeError::Other(format!("ListObjectsV2 answer ({e}): {}", r.text())))?;
        Ok(ListPage {
            keys: page.contents.into_iter().map(|c| c.key).collect(),
            prefixes: page.common_prefixes.into_iter().map(|p| p.prefix).collect(),
            next: page.next_continuation_token,
        })
    }

    async fn copy(
        &self,
        src_bucket: &str,
        src_key: &str,
        dst_bucket: &str,
        dst_key: &str,
    ) -> FeResult<()> {
        let b = self.bucket(dst_bucket);
        let source = format!("/{}/{}", src_bucket, pct_encode(src_key, true));
        let headers = vec![("x-amz-copy-source".to_string(), source)];
        let r = check(
            self.call(
                b.put_object(Some(&self.creds), dst_key),
                Method::PUT,
                &headers,
                Bytes::new(),
            )
            .await,
        )?;
        // S3 may answer 200 and put the error in the body.
        let xml = parse_xml(&r)?;
        if xml.name == "Error" {
            return Err(error_of(&Reply { status: 500, ..r }));
        }
        Ok(())
    }

    async fn delete(&self, bucket: &str, key: &str, version: Option<&str>) -> FeResult<Deleted> {
        let b = self.bucket(bucket);
        let mut action = b.delete_object(Some(&self.creds), key);
        if let Some(v) = version {
            action.query_mut().insert("versionId", v.to_string());
        }
        let r = check(self.call(action, Method::DELETE, &[], Bytes::new()).await)?;
        Ok(Deleted {
            delete_marker: r.header("x-amz-delete-marker") == Some("true"),
            version_id: r.header("x-amz-version-id").map(str::to_string),
        })
    }

    async fn set_versioning(&self, bucket: &str, enabled: bool) -> FeResult<()> {
        let status = if enabled { "Enabled" } else { "Suspended" };
        let body = format!(
            "<VersioningConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
             <Status>{status}</Status></VersioningConfiguration>"
        );
        check(
            self.call_bucket(
                bucket,
                Method::PUT,
                &[("versioning", "")],
                Bytes::from(body),
            )
            .await,
        )
        .map(|_| ())
    }

    async fn list_versions(&self, bucket: &str, prefix: &str) -> FeResult<Vec<VersionEntry>> {
        let r = check(
            self.call_bucket(
                bucket,
                Method::GET,
                &[("prefix", prefix), ("versions", "")],
                Bytes::new(),
            )
            .await,
        )?;
        let xml = parse_xml(&r)?;
        let mut out = Vec::new();
        for (name, delete_marker) in [("Version", false), ("DeleteMarker", true)] {
            for v in children(&xml, name) {
                out.push(VersionEntry {
                    key: child_text(v, "Key").unwrap_or_default(),
                    version_id: child_text(v, "VersionId").unwrap_or_default(),
                    is_latest: child_text(v, "IsLatest").as_deref() == Some("true"),
                    delete_marker,
                });
            }
        }
        Ok(out)
    }

    async fn create_upload(&self, bucket: &str, key: &str) -> FeResult<String> {
        let b = self.bucket(bucket);
        let r = check(
            self.call(
                b.create_multipart_upload(Some(&self.creds), key),
                Method::POST,
                &[],
                Bytes::new(),
            )
            .await,
        )?;
        let resp = CreateMultipartUpload::parse_response(&r.text()).map_err(|e| {
            FeError::Other(format!("CreateMultipartUpload answer ({e}): {}", r.text()))
        })?;
        Ok(resp.upload_id().to_string())
    }

    async fn upload_part(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        part: u32,
        body: Bytes,
    ) -> FeResult<String> {
        let b = self.bucket(bucket);
        let action = b.upload_part(Some(&self.creds), key, part as u16, upload_id);
        let r = check(self.call(action, Method::PUT, &[], body).await)?;
        etag_of(&r)
    }

    async fn complete_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        parts: &[(u32, String)],
    ) -> FeResult<String> {
        // rusty-s3 numbers the parts 1, 2, ... in the order given.
        for (i, (n, _)) in parts.iter().enumerate() {
            assert_eq!(*n as usize, i + 1, "parts are completed as 1..=n");
        }
        let b = self.bucket(bucket);
        let quoted: Vec<String> = parts.iter().map(|(_, e)| quote_tag(e)).collect();
        let action = b.complete_multipart_upload(
            Some(&self.creds),
            key,
            upload_id,
            quoted.iter().map(String::as_str),
        );
        let url = action.sign(TTL);
        let body = Bytes::from(action.body());
        let r = check(send(&self.http, Method::POST, url.as_str(), &[], body).await)?;
        let xml = parse_xml(&r)?;
        if xml.name == "Error" {
            return Err(error_of(&Reply { status: 500, ..r }));
        }
        let done = CompleteMultipartUploadResponse::parse(&r.text()).map_err(|e| {
            FeError::Other(format!(
                "CompleteMultipartUpload answer ({e}): {}",
                r.text()
            ))
        })?;
        Ok(unquote(done.etag()))
    }
}
