//! The WebDAV gateway over HTTP on loopback, as a WebDAV client uses it:
//! Basic authentication with the S3 keys, buckets and folders as
//! collections (parents made with MKCOL before a PUT, as rclone does),
//! listings by PROPFIND Depth 1. Errors are read from HTTP statuses in
//! the context of the request (RFC 4918: a PUT or MKCOL whose parent is
//! missing is 409; here the only parent that can be missing is the
//! bucket, the adapter having made the folders).
//!
//! What WebDAV cannot express (versions, multipart uploads, flat or paged
//! listings) answers `FeError::Unsupported`, and [`Caps`] says so.

use super::frontend::*;
use super::http_client::{child_text, children, send, HttpClient, Reply};
use base64::Engine;
use bytes::Bytes;
use http::Method;

pub struct WebDav {
    base: String,
    auth: String,
    http: HttpClient,
}

fn method(name: &str) -> Method {
    Method::from_bytes(name.as_bytes()).unwrap()
}

/// `/bucket/key` with every path segment percent-encoded.
fn path(bucket: &str, key: &str) -> String {
    format!("/{}/{}", pct_encode(bucket, false), pct_encode(key, true))
}

/// The neutral error of a failed answer; `parent_missing` is what a 409
/// means for this request.
fn error_of(r: &Reply, parent_missing: FeError) -> FeError {
    match r.status {
        304 => FeError::NotModified,
        404 => FeError::NotFound,
        409 => parent_missing,
        412 => FeError::PreconditionFailed,
        416 => FeError::InvalidRange,
        s => FeError::Other(format!("{s}: {}", r.text())),
    }
}

fn cond_headers(c: &Cond) -> Vec<(String, String)> {
    let mut h = Vec::new();
    if let Some(t) = &c.if_match {
        h.push(("If-Match".to_string(), quote_tag(t)));
    }
    if let Some(t) = &c.if_none_match {
        h.push(("If-None-Match".to_string(), quote_tag(t)));
    }
    if let Some(t) = c.if_modified_since {
        h.push(("If-Modified-Since".to_string(), httpdate::fmt_http_date(t)));
    }
    h
}

fn etag_of(r: &Reply) -> FeResult<String> {
    r.header("etag")
        .map(unquote)
        .ok_or_else(|| FeError::Other(format!("no ETag in a {} answer", r.status)))
}

impl WebDav {
    pub fn new(addr: std::net::SocketAddr, user: &str, password: &str) -> Self {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        Self {
            base: format!("http://{addr}"),
            auth: format!("Basic {token}"),
            http: super::http_client::client(),
        }
    }

    async fn request(
        &self,
        method_name: &str,
        path: &str,
        mut headers: Vec<(String, String)>,
        body: Bytes,
    ) -> Reply {
        headers.push(("Authorization".to_string(), self.auth.clone()));
        let uri = format!("{}{}", self.base, path);
        send(&self.http, method(method_name), &uri, &headers, body).await
    }

    /// MKCOL every folder above `key` that is not there yet.
    async fn make_parents(&self, bucket: &str, key: &str) -> FeResult<()> {
        for (i, _) in key.match_indices('/') {
            let folder = &key[..=i];
            let r = self
                .request("MKCOL", &path(bucket, folder), Vec::new(), Bytes::new())
                .await;
            match r.status {
                // Made, or already there.
                201 | 405 => {}
                _ => return Err(error_of(&r, FeError::NoSuchBucket)),
            }
        }
        Ok(())
    }
}

impl FrontEnd for WebDav {
    fn name(&self) -> &'static str {
        "WebDAV gateway"
    }

    fn caps(&self) -> Caps {
        Caps {
            versions: false,
            multipart: false,
            list_flat: false,
            list_pages: false,
            conditional_put: true,
            conditional_get: true,
            copy: true,
            missing_bucket_distinct: false,
        }
    }

    async fn create_bucket(&self, bucket: &str) -> FeResult<()> {
        let r = self
            .request(
                "MKCOL",
                &format!("/{}", pct_encode(bucket, false)),
                Vec::new(),
                Bytes::new(),
            )
            .await;
        match r.status {
            201 => Ok(()),
            // The store refuses the name (gateway: InvalidName → 403); a
            // MKCOL of a top-level collection has no other reason to be
            // forbidden to its own user.
            403 => Err(FeError::InvalidBucketName),
            _ => Err(error_of(
                &r,
                FeError::Other("MKCOL of a bucket: 409".into()),
            )),
        }
    }

    async fn put(&self, bucket: &str, key: &str, body: Bytes, cond: &Cond) -> FeResult<PutOut> {
        self.make_parents(bucket, key).await?;
        let r = self
            .request("PUT", &path(bucket, key), cond_headers(cond), body)
            .await;
        if !r.ok() {
            return Err(error_of(&r, FeError::NoSuchBucket));
        }
        Ok(PutOut {
            etag: r.header("etag").map(unquote),
            version_id: None,
        })
    }

    async fn get(&self, bucket: &str, key: &str, req: &GetReq) -> FeResult<Object> {
        if req.version.is_some() {
            return Err(FeError::Unsupported("versions"));
        }
        let mut headers = cond_headers(&req.cond);
        if let Some(r) = req.range {
            headers.push(("Range".to_string(), r.header()));
        }
        let r = self
            .request("GET", &path(bucket, key), headers, Bytes::new())
            .await;
        if !r.ok() {
            return Err(error_of(&r, FeError::Other("GET: 409".into())));
        }
        if req.range.is_some() != (r.status == 206) {
            return Err(FeError::Other(format!(
                "a {} answer to {:?}",
                r.status, req.range
            )));
        }
        let range = match r.header("content-range") {
            Some(v) => Some(
                parse_content_range(v)
                    .ok_or_else(|| FeError::Other(format!("bad Content-Range {v:?}")))?,
            ),
            None => None,
        };
        Ok(Object {
            etag: etag_of(&r)?,
            range,
            version_id: None,
            body: r.body.to_vec(),
        })
    }

    async fn head(&self, bucket: &str, key: &str) -> FeResult<Meta> {
        let r = self
            .request("HEAD", &path(bucket, key), Vec::new(), Bytes::new())
            .await;
        if !r.ok() {
            return Err(error_of(&r, FeError::Other("HEAD: 409".into())));
        }
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
        let folder_listing = req.delimiter.as_deref() == Some("/")
            && (req.prefix.is_empty() || req.prefix.ends_with('/'));
        if !folder_listing {
            return Err(FeError::Unsupported("listings other than a folder's"));
        }
        if req.max_keys.is_some() || req.token.is_some() {
            return Err(FeError::Unsupported("paged listings"));
        }
        let folder = path(bucket, &req.prefix);
        let r = self
            .request(
                "PROPFIND",
                &folder,
                vec![("Depth".to_string(), "1".to_string())],
                Bytes::new(),
            )
            .await;
        if r.status != 207 {
            return Err(error_of(&r, FeError::Other("PROPFIND: 409".into())));
        }
        let xml = xmltree::Element::parse(r.body.as_ref())
            .map_err(|e| FeError::Other(format!("unparsable multistatus ({e}): {}", r.text())))?;
        let folder = pct_decode(&folder);
        let mut page = ListPage::default();
        for resp in children(&xml, "response") {
            let href = child_text(resp, "href")
                .ok_or_else(|| FeError::Other(format!("a response without href: {}", r.text())))?;
            // An href may be a full URL or an absolute path.
            let href = match href.find("://") {
                Some(i) => href[i + 3..]
                    .find('/')
                    .map_or("/".to_string(), |j| href[i + 3 + j..].to_string()),
                None => href,
            };
            let href = pct_decode(&href);
            if href.trim_end_matches('/') == folder.trim_end_matches('/') {
                continue; // the folder itself
            }
            let Some(name) = href.strip_prefix(&folder) else {
                return Err(FeError::Other(format!("{href} is not under {folder}")));
            };
            let collection = children(resp, "propstat")
                .flat_map(|ps| children(ps, "prop"))
                .flat_map(|p| children(p, "resourcetype"))
                .any(|rt| children(rt, "collection").next().is_some());
            if collection || name.ends_with('/') {
                page.prefixes
                    .push(format!("{}{}/", req.prefix, name.trim_end_matches('/')));
            } else {
                page.keys.push(format!("{}{name}", req.prefix));
            }
        }
        // PROPFIND promises no order; S3 lists in key order.
        page.keys.sort();
        page.prefixes.sort();
        Ok(page)
    }

    async fn copy(
        &self,
        src_bucket: &str,
        src_key: &str,
        dst_bucket: &str,
        dst_key: &str,
    ) -> FeResult<()> {
        self.make_parents(dst_bucket, dst_key).await?;
        let headers = vec![
            ("Destination".to_string(), path(dst_bucket, dst_key)),
            ("Overwrite".to_string(), "T".to_string()),
        ];
        let r = self
            .request("COPY", &path(src_bucket, src_key), headers, Bytes::new())
            .await;
        if !r.ok() {
            return Err(error_of(&r, FeError::NoSuchBucket));
        }
        Ok(())
    }

    async fn delete(&self, bucket: &str, key: &str, version: Option<&str>) -> FeResult<Deleted> {
        if version.is_some() {
            return Err(FeError::Unsupported("versions"));
        }
        let r = self
            .request("DELETE", &path(bucket, key), Vec::new(), Bytes::new())
            .await;
        if !r.ok() {
            return Err(error_of(&r, FeError::Other("DELETE: 409".into())));
        }
        Ok(Deleted::default())
    }

    async fn set_versioning(&self, _bucket: &str, _enabled: bool) -> FeResult<()> {
        Err(FeError::Unsupported("versions"))
    }

    async fn list_versions(&self, _bucket: &str, _prefix: &str) -> FeResult<Vec<VersionEntry>> {
        Err(FeError::Unsupported("versions"))
    }

    async fn create_upload(&self, _bucket: &str, _key: &str) -> FeResult<String> {
        Err(FeError::Unsupported("multipart uploads"))
    }

    async fn upload_part(
        &self,
        _bucket: &str,
        _key: &str,
        _upload_id: &str,
        _part: u32,
        _body: Bytes,
    ) -> FeResult<String> {
        Err(FeError::Unsupported("multipart uploads"))
    }

    async fn complete_upload(
        &self,
        _bucket: &str,
        _key: &str,
        _upload_id: &str,
        _parts: &[(u32, String)],
    ) -> FeResult<String> {
        Err(FeError::Unsupported("multipart uploads"))
    }
}
