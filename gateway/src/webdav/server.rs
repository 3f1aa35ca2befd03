//! The WebDAV listener: HTTP/1.1 on hyper, every request authenticated
//! with HTTP Basic (access key id as the user name, secret key as the
//! password: what rclone, cadaver, davfs2, Windows and macOS can send),
//! then handed to dav-server with the caller attached.

use super::fs::{Caller, GridFs};
use super::lock::GridLs;
use crate::access_log::{Api, Counted, Exchange};
use crate::admission::{Admission, AdmissionConfig};
use crate::auth::StoreAuth;
use crate::metrics::GatewayMetrics;
use base64::Engine;
use cluster::ObjectStore;
use dav_server::body::Body;
use dav_server::DavHandler;
use futures_util::StreamExt;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use tokio::net::TcpListener;

const REALM: &str = "Basic realm=\"gridstore\", charset=\"UTF-8\"";

/// Requests handled at once; beyond it clients get 503 and retry.
const MAX_REQUESTS: usize = 256;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WebDavError {
    #[error("cannot listen for WebDAV on {addr} (webdav_listen, --webdav-listen): {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// The dav-server handler over `store`: its filesystem and lock system.
pub fn handler(store: ObjectStore) -> DavHandler<Caller> {
    DavHandler::builder()
        .filesystem(Box::new(GridFs::new(store.clone())))
        .locksystem(Box::new(GridLs::new(store)))
        .build_handler()
}

/// Equal in time independent of where the inputs differ (or of their
/// lengths: both sides are hashed first).
pub(crate) fn same_secret(given: &str, stored: &str) -> bool {
    let a = Sha256::digest(given.as_bytes());
    let b = Sha256::digest(stored.as_bytes());
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// The `(user, password)` of a Basic Authorization header.
pub(crate) fn basic_credentials<B>(req: &Request<B>) -> Option<(String, String)> {
    let value = req
        .headers()
        .get(http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, b64) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (user, pass) = text.split_once(':')?;
    Some((user.to_string(), pass.to_string()))
}

enum Verdict {
    Caller(Caller),
    Refused,
    Unavailable,
}

async fn authenticate<B>(auth: &StoreAuth, req: &Request<B>) -> Verdict {
    let Some((user, pass)) = basic_credentials(req) else {
        return Verdict::Refused;
    };
    match auth.lookup(&user).await {
        Ok(Some((secret, admin))) if same_secret(&pass, &secret) => Verdict::Caller(Caller {
            access_key: user,
            admin,
        }),
        Ok(Some(_)) => Verdict::Refused,
        Ok(None) => {
            // Same work as for a known key, so timing does not tell
            // which access keys exist.
            let _ = same_secret(&pass, "");
            Verdict::Refused
        }
        Err(_) => Verdict::Unavailable,
    }
}

fn status(code: StatusCode, text: &'static str) -> Response<Body> {
    let mut r = Response::new(Body::from(text));
    *r.status_mut() = code;
    r
}

/// The first segment of a WebDAV path: the bucket, for the access log.
fn bucket_of(path: &str) -> Option<String> {
    let first = path.trim_start_matches('/').split('/').next()?;
    let name = urlencoding::decode(first).ok()?;
    (!name.is_empty()).then(|| name.into_owned())
}

/// One request, counted and logged (see [`crate::access_log`]).
async fn measured(
    req: Request<hyper::body::Incoming>,
    dav: DavHandler<Caller>,
    auth: Arc<StoreAuth>,
    admission: Arc<Admission>,
    metrics: Arc<GatewayMetrics>,
) -> Response<Counted<Body>> {
    let request_id = format!("{:016X}", rand::random::<u64>());
    let exchange = Exchange::begin(Api::WebDav, request_id, &metrics.webdav);
    let bucket = bucket_of(req.uri().path());
    exchange.set_request(req.method().as_str(), bucket.as_deref(), None);
    let resp = exchange
        .scope(handle(req, dav, auth, admission, &exchange))
        .await;
    let status = resp.status();
    let error = (status.as_u16() >= 400).then(|| {
        (
            status.as_str().to_string(),
            status.canonical_reason().unwrap_or("").to_string(),
        )
    });
    exchange.set_answer(status.as_u16(), error);
    resp.map(|b| exchange.count_answer(b))
}

async fn handle(
    req: Request<hyper::body::Incoming>,
    dav: DavHandler<Caller>,
    auth: Arc<StoreAuth>,
    admission: Arc<Admission>,
    exchange: &Arc<Exchange>,
) -> Response<Body> {
    match authenticate(&auth, &req).await {
        Verdict::Caller(c) => {
            let bucket = bucket_of(req.uri().path());
            exchange.set_request(
                req.method().as_str(),
                bucket.as_deref(),
                Some(&c.access_key),
            );
            // As on S3: one key holds at most its share of the slots, and a
            // body that stalls or trickles is cut off (the write then fails
            // instead of committing a truncated object).
            let Ok(_slot) = admission.admit(Some(&c.access_key)) else {
                return status(StatusCode::SERVICE_UNAVAILABLE, "busy, retry later\n");
            };
            let principal = c.access_key.clone();
            let (parts, body) = req.into_parts();
            let paced = admission
                .paced(exchange.count_request(body).into_data_stream())
                .map(|r| r.map(Frame::data).map_err(std::io::Error::other));
            let req = Request::from_parts(parts, StreamBody::new(paced));
            dav.handle_guarded(req, principal, c).await
        }
        Verdict::Refused => {
            let mut r = status(StatusCode::UNAUTHORIZED, "authentication required\n");
            r.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static(REALM),
            );
            r
        }
        Verdict::Unavailable => status(
            StatusCode::SERVICE_UNAVAILABLE,
            "access keys unreadable, retry later\n",
        ),
    }
}

/// Accept connections on `listener` until `shutdown` resolves, then stop
/// accepting and give requests in flight a grace period.
pub async fn serve(
    listener: TcpListener,
    store: ObjectStore,
    shutdown: impl std::future::Future<Output = ()>,
) {
    serve_tls(listener, None, store, shutdown).await
}

/// [`serve`], over TLS when `tls` is given.
pub async fn serve_tls(
    listener: TcpListener,
    tls: Option<crate::tls::Acceptor>,
    store: ObjectStore,
    shutdown: impl std::future::Future<Output = ()>,
) {
    serve_with(listener, tls, store, default_admission(), shutdown).await
}

/// The WebDAV listener's limits when none are given: the S3 defaults with
/// its own bound.
pub fn default_admission() -> AdmissionConfig {
    AdmissionConfig {
        max_requests: MAX_REQUESTS,
        ..AdmissionConfig::default()
    }
}

/// [`serve_tls`] with the limits of `admission`.
pub async fn serve_with(
    listener: TcpListener,
    tls: Option<crate::tls::Acceptor>,
    store: ObjectStore,
    admission: AdmissionConfig,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let metrics = GatewayMetrics::new(store.clone());
    serve_measured(listener, tls, store, admission, metrics, shutdown).await
}

/// [`serve_with`], counting requests in `metrics`.
pub async fn serve_measured(
    listener: TcpListener,
    tls: Option<crate::tls::Acceptor>,
    store: ObjectStore,
    admission: AdmissionConfig,
    metrics: Arc<GatewayMetrics>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let dav = handler(store.clone());
    let auth = Arc::new(StoreAuth::new(store));
    let admission = Arc::new(Admission::new(admission));
    let svc = hyper::service::service_fn(move |req| {
        let (dav, auth, admission, metrics) = (
            dav.clone(),
            auth.clone(),
            admission.clone(),
            metrics.clone(),
        );
        async move {
            Ok::<_, std::convert::Infallible>(measured(req, dav, auth, admission, metrics).await)
        }
    });
    crate::listener::serve_tls(listener, tls, svc, shutdown, "WebDAV").await;
}

/// A WebDAV listener running beside the S3 one.
pub use crate::listener::Running;

/// Bind `addr` and serve WebDAV on it in the background.
pub async fn start(addr: std::net::SocketAddr, store: ObjectStore) -> Result<Running, WebDavError> {
    start_tls(addr, store, None).await
}

/// [`start`], over TLS when `tls` is given.
pub async fn start_tls(
    addr: std::net::SocketAddr,
    store: ObjectStore,
    tls: Option<crate::tls::Acceptor>,
) -> Result<Running, WebDavError> {
    start_with(addr, store, tls, default_admission()).await
}

/// [`start_tls`] with the limits of `admission`.
pub async fn start_with(
    addr: std::net::SocketAddr,
    store: ObjectStore,
    tls: Option<crate::tls::Acceptor>,
    admission: AdmissionConfig,
) -> Result<Running, WebDavError> {
    let metrics = GatewayMetrics::new(store.clone());
    start_measured(addr, store, tls, admission, metrics).await
}

/// [`start_with`], counting requests in `metrics` (shared with the S3
/// front end and served by the admin listener).
pub async fn start_measured(
    addr: std::net::SocketAddr,
    store: ObjectStore,
    tls: Option<crate::tls::Acceptor>,
    admission: AdmissionConfig,
    metrics: Arc<GatewayMetrics>,
) -> Result<Running, WebDavError> {
    let listener = bind(addr).await?;
    let addr = listener
        .local_addr()
        .map_err(|source| WebDavError::Listen { addr, source })?;
    Ok(Running::spawn(addr, |stopped| {
        serve_measured(listener, tls, store, admission, metrics, stopped)
    }))
}

/// Bind `addr` for [`serve`].
pub async fn bind(addr: std::net::SocketAddr) -> Result<TcpListener, WebDavError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| WebDavError::Listen { addr, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_header_parsing_and_secret_compare() {
        let hdr = base64::engine::general_purpose::STANDARD.encode("AK:se:cret");
        let req = Request::builder()
            .header("authorization", format!("Basic {hdr}"))
            .body(())
            .unwrap();
        assert_eq!(
            basic_credentials(&req),
            Some(("AK".to_string(), "se:cret".to_string()))
        );
        let bearer = Request::builder()
            .header("authorization", "Bearer x")
            .body(())
            .unwrap();
        assert_eq!(basic_credentials(&bearer), None);
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("", "abc"));
    }
}
