//! Serving the S3 service on hyper: HTTP/1.1 (and h2c), one task per
//! connection, stopped by a shutdown signal.

use crate::access_log::{Api, Exchange};
use crate::admission::AdmissionConfig;
use crate::auth::{PublicReadAccess, StoreAuth};
use crate::metrics::GatewayMetrics;
use crate::S3Gateway;
use cluster::ObjectStore;
use s3s::service::S3ServiceBuilder;
use std::sync::Arc;
use tokio::net::TcpListener;

/// Gateway settings.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub region: String,
    /// Requests in progress (in all and per key) and request body pacing.
    pub admission: AdmissionConfig,
    /// Host names for virtual-hosted-style requests (`bucket.HOST`).
    pub domain: Option<String>,
    /// Where requests are counted; shared with the WebDAV front end and
    /// the admin listener. None: a set of its own.
    pub metrics: Option<Arc<GatewayMetrics>>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            region: "us-east-1".into(),
            admission: AdmissionConfig::default(),
            domain: None,
            metrics: None,
        }
    }
}

/// The S3 front end: the s3s service, and what [`serve`] does around it
/// (mending signed requests before s3s, completing errors after).
#[derive(Clone)]
pub struct S3Front {
    s3: s3s::service::S3Service,
    auth: Arc<StoreAuth>,
    /// The credential scope a request signed for a legacy region name is
    /// signed again for: one s3s accepts.
    scope_region: String,
    metrics: Arc<GatewayMetrics>,
}

impl S3Front {
    /// Where this front end counts its requests.
    pub fn metrics(&self) -> Arc<GatewayMetrics> {
        self.metrics.clone()
    }
}

/// The S3 front end for `store`.
pub fn service(store: ObjectStore, cfg: &GatewayConfig) -> S3Front {
    let auth = Arc::new(StoreAuth::new(store.clone()));
    let metrics = cfg
        .metrics
        .clone()
        .unwrap_or_else(|| GatewayMetrics::new(store.clone()));
    let scope_region = match s3s::region::Region::new(cfg.region.as_str().into()) {
        Ok(r) => r.as_str().to_string(),
        Err(_) => "us-east-1".to_string(),
    };
    let gateway = S3Gateway::new(
        store.clone(),
        auth.clone(),
        &cfg.region,
        cfg.admission.clone(),
    );
    let mut b = S3ServiceBuilder::new(gateway);
    b.set_auth(SharedAuth(auth.clone()));
    b.set_access(PublicReadAccess::new(store));
    if let Some(domain) = &cfg.domain {
        if let Ok(host) = s3s::host::SingleDomain::new(domain) {
            b.set_host(host);
        }
    }
    S3Front {
        s3: b.build(),
        auth,
        scope_region,
        metrics,
    }
}

struct SharedAuth(Arc<StoreAuth>);

#[async_trait::async_trait]
impl s3s::auth::S3Auth for SharedAuth {
    async fn get_secret_key(&self, access_key: &str) -> s3s::S3Result<s3s::auth::SecretKey> {
        self.0.get_secret_key(access_key).await
    }
}

/// The longest a presigned URL may live (AWS: 7 days).
const MAX_PRESIGN_SECS: i64 = 604_800;

/// A presigned URL whose lifetime is out of AWS's range is refused as
/// AWS does (403), before the signature is even looked at: negative or
/// zero lifetimes, or longer than seven days.
fn presign_refusal(uri: &http::Uri) -> Option<s3s::HttpResponse> {
    let query = uri.query()?;
    let value = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("X-Amz-Expires="))?;
    match value.parse::<i64>() {
        Ok(secs) if (1..=MAX_PRESIGN_SECS).contains(&secs) => None,
        _ => {
            let e = s3s::S3Error::with_message(
                s3s::S3ErrorCode::AccessDenied,
                "X-Amz-Expires must be between 1 and 604800 seconds",
            );
            e.to_http_response().ok()
        }
    }
}

/// CORS is not configurable yet: a preflight is answered as S3 answers
/// one for a bucket without CORS rules (400 without an Origin, 403 with).
fn preflight_refusal<B>(req: &http::Request<B>) -> Option<s3s::HttpResponse> {
    if req.method() != http::Method::OPTIONS {
        return None;
    }
    let e = if req.headers().contains_key(http::header::ORIGIN) {
        s3s::S3Error::with_message(
            s3s::S3ErrorCode::AccessDenied,
            "CORSResponse: CORS is not enabled for this bucket",
        )
    } else {
        s3s::S3Error::with_message(
            s3s::S3ErrorCode::InvalidRequest,
            "Insufficient information. Origin request header needed.",
        )
    };
    e.to_http_response().ok()
}

/// Whether the request asked for `100 Continue` before sending its body.
fn expects_continue<B>(req: &http::Request<B>) -> bool {
    req.headers()
        .get(http::header::EXPECT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
}

fn declares_empty_body<B>(req: &http::Request<B>) -> bool {
    req.headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim() == "0")
}

/// A request sent with `Expect: 100-continue` must not share its
/// connection with the next one unless its body was read, because the
/// two sides then disagree about where that body went:
///
/// - An empty body gets no interim "100 Continue" from hyper (there is
///   nothing to read), and botocore (aws-cli v1) then misreads the next
///   response on that connection (boto/botocore#3755): `aws s3 sync`
///   stalls a minute per empty file.
/// - A refused request (an error answered before its body was read) is
///   final for the client, which then never sends the body (RFC 9110
///   §10.1.1), but hyper, to keep the connection alive, still reads up to
///   Content-Length bytes "in case a tiny body was included": when the
///   next request is already buffered, its first bytes are eaten as that
///   body, and `POST` arrives as `OST` and fails its signature. Seen in
///   CI as SignatureDoesNotMatch on a CompleteMultipartUpload that
///   followed an UploadPart refused with NoSuchUpload.
///
/// Closing such a connection after its response sidesteps both.
fn must_close(expects_continue: bool, empty_body: bool, status: http::StatusCode) -> bool {
    expects_continue && (empty_body || !status.is_success())
}

/// A new request id: 16 upper-case hex digits, as AWS's look. Random
/// rather than a counter so ids from several gateways do not collide.
fn new_request_id() -> String {
    format!("{:016X}", rand::random::<u64>())
}

/// Every answer carries `x-amz-request-id`, and an error's XML names the
/// same id in `<RequestId>`, as AWS's do: clients log it, and SDKs read it
/// from either place (s3-tests' `test_object_requestid_matches_header_on_error`
/// compares the two). s3s sets neither, and errors come from s3s itself
/// (signatures, parsing) as well as from the gateway, so the id is added
/// here, on the way out. Only a body already whole in memory is touched
/// (s3s serialises errors in one piece); a streaming body is never read.
fn stamp_request_id(resp: &mut s3s::HttpResponse, id: &str) {
    if let Ok(v) = http::HeaderValue::from_str(id) {
        resp.headers_mut().insert("x-amz-request-id", v);
    }
    if resp.status().is_success() {
        return;
    }
    let Some(xml) = resp.body().bytes() else {
        return;
    };
    let Some(end) = find(&xml, b"</Error>") else {
        return;
    };
    if find(&xml, b"<RequestId>").is_some() {
        return;
    }
    let mut out = Vec::with_capacity(xml.len() + id.len() + 24);
    out.extend_from_slice(&xml[..end]);
    out.extend_from_slice(b"<RequestId>");
    out.extend_from_slice(id.as_bytes());
    out.extend_from_slice(b"</RequestId>");
    out.extend_from_slice(&xml[end..]);
    // The length changed: a stale Content-Length would cut the body short.
    resp.headers_mut().insert(
        http::header::CONTENT_LENGTH,
        http::HeaderValue::from(out.len()),
    );
    *resp.body_mut() = s3s::Body::from(out);
}

/// The access key a request says it is signed with (header or presigned
/// URL, SigV4 or V2), for the access log of a request refused before s3s
/// checked it; never trusted for anything else.
fn claimed_access_key<B>(req: &http::Request<B>) -> Option<String> {
    let from_header = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            if let Some((_, rest)) = v.split_once("Credential=") {
                rest.split('/').next()
            } else {
                v.strip_prefix("AWS ")?.split(':').next()
            }
        })
        .map(str::to_string);
    let from_query = || {
        req.uri().query()?.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            let v = urlencoding::decode(v).ok()?;
            match k {
                "X-Amz-Credential" => v.split('/').next().map(str::to_string),
                "AWSAccessKeyId" => Some(v.into_owned()),
                _ => None,
            }
        })
    };
    from_header
        .or_else(from_query)
        .filter(|k| !k.is_empty() && k.len() <= 128)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Accept connections on `listener` until `shutdown` resolves, then stop
/// accepting and let requests in flight finish.
pub async fn serve(
    listener: TcpListener,
    service: S3Front,
    shutdown: impl std::future::Future<Output = ()>,
) {
    serve_tls(listener, None, service, shutdown).await
}

/// [`serve`], over TLS when `tls` is given.
pub async fn serve_tls(
    listener: TcpListener,
    tls: Option<crate::tls::Acceptor>,
    service: S3Front,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let guarded = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let front = service.clone();
        async move {
            let request_id = new_request_id();
            let exchange = Exchange::begin(Api::S3, request_id.clone(), &front.metrics.s3);
            // Until s3s has checked the signature, the key it claims.
            if let Some(key) = claimed_access_key(&req) {
                exchange.set_request("unknown", None, Some(&key));
            }
            if let Some(mut refusal) =
                presign_refusal(req.uri()).or_else(|| preflight_refusal(&req))
            {
                stamp_request_id(&mut refusal, &request_id);
                exchange.set_answer(
                    refusal.status().as_u16(),
                    crate::errors::code_and_message(&refusal),
                );
                return Ok::<_, s3s::HttpError>(refusal.map(|b| exchange.count_answer(b)));
            }
            let mut req = req;
            crate::signing::mend(&mut req, &front.auth, &front.scope_region).await;
            let expects = expects_continue(&req);
            let empty = declares_empty_body(&req);
            let req = req.map(|b| s3s::Body::http_body_unsync(exchange.count_request(b)));
            let mut resp = match exchange.scope(front.s3.call(req)).await {
                Ok(resp) => resp,
                // s3s could not answer at all; hyper drops the connection.
                Err(e) => {
                    let e: Box<dyn std::error::Error + Send + Sync> = e.into();
                    exchange.set_answer(500, Some(("InternalError".into(), e.to_string())));
                    return Err(s3s::HttpError::new(e));
                }
            };
            crate::errors::fill_in_message(&mut resp);
            stamp_request_id(&mut resp, &request_id);
            exchange.set_answer(
                resp.status().as_u16(),
                crate::errors::code_and_message(&resp),
            );
            if must_close(expects, empty, resp.status()) {
                resp.headers_mut().insert(
                    http::header::CONNECTION,
                    http::HeaderValue::from_static("close"),
                );
            }
            Ok(resp.map(|b| exchange.count_answer(b)))
        }
    });
    crate::listener::serve_tls(listener, tls, guarded, shutdown, "S3").await;
}

#[cfg(test)]
mod tests {
    use super::{must_close, new_request_id, stamp_request_id};
    use http::StatusCode;

    #[test]
    fn errors_name_the_request_id_of_their_header() {
        let id = new_request_id();
        assert_eq!(id.len(), 16);
        let mut resp = s3s::S3Error::with_message(s3s::S3ErrorCode::NoSuchKey, "gone")
            .to_http_response()
            .expect("serialised");
        stamp_request_id(&mut resp, &id);
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
        assert_eq!(resp.headers()["x-amz-request-id"], id.as_str());
        let body = resp.body().bytes().expect("whole body");
        let text = std::str::from_utf8(&body).expect("utf-8");
        assert!(
            text.contains(&format!("<RequestId>{id}</RequestId></Error>")),
            "{text}"
        );
        assert!(text.contains("<Code>NoSuchKey</Code>"), "{text}");
        assert_eq!(
            resp.headers()[http::header::CONTENT_LENGTH],
            body.len().to_string().as_str()
        );
        // Stamping twice (or a body that already has one) adds nothing.
        stamp_request_id(&mut resp, "OTHER");
        let again = resp.body().bytes().expect("whole body");
        assert_eq!(again, body);
    }

    #[test]
    fn successes_get_the_header_only() {
        let mut resp = s3s::HttpResponse::new(s3s::Body::from(b"<ok/>".to_vec()));
        stamp_request_id(&mut resp, "0123456789ABCDEF");
        assert_eq!(resp.headers()["x-amz-request-id"], "0123456789ABCDEF");
        assert_eq!(resp.body().bytes().expect("whole body").as_ref(), b"<ok/>");
    }

    #[test]
    fn connections_close_when_a_continue_body_may_be_unread() {
        assert!(must_close(true, true, StatusCode::OK));
        assert!(must_close(true, false, StatusCode::NOT_FOUND));
        assert!(must_close(true, false, StatusCode::FORBIDDEN));
        assert!(!must_close(true, false, StatusCode::OK));
        assert!(!must_close(false, false, StatusCode::NOT_FOUND));
        assert!(!must_close(false, true, StatusCode::OK));
    }
}
