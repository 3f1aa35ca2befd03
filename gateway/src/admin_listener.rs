//! The admin listener (127.0.0.1:9003 by default): read-only probes and
//! pages for operators and monitoring, without credentials.
//!
//! | call | answer |
//! |---|---|
//! | `GET /health` | 200 `ok` when the metadata quorum is readable, else 503 and why, in one line |
//! | `GET /metrics` | the gateway's Prometheus metrics ([`crate::metrics`]) |
//! | `GET /` | the status page ([`crate::status_page`]) |
//! | `GET /status.json` | what the status page draws |
//!
//! Nothing here needs a key because nothing here is secret: no bucket or
//! object names, no credentials, only counts, node ids and addresses, and
//! log lines stripped of object names. That is still more than the world
//! should see, so it binds loopback unless told otherwise; exposing it
//! wider needs a firewall in front.

use crate::metrics::GatewayMetrics;
use cluster::ObjectStore;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use std::sync::Arc;
use tokio::net::TcpListener;

pub use crate::listener::Running;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminListenError {
    #[error("cannot listen for admin pages on {addr} (admin_listen, --admin-listen): {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

fn answer(status: StatusCode, content_type: &'static str, body: String) -> Response<String> {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Probes and figures go stale at once; a cache would only mislead.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

fn page(content_type: &'static str, body: &'static str) -> Response<String> {
    let mut r = answer(StatusCode::OK, content_type, body.to_string());
    // The page loads its own script and style and nothing else.
    r.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'self'; frame-ancestors 'none'"),
    );
    r
}

const TEXT: &str = "text/plain; charset=utf-8";

async fn handle(
    req: Request<Incoming>,
    store: ObjectStore,
    metrics: Arc<GatewayMetrics>,
) -> Response<String> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = answer(
            StatusCode::METHOD_NOT_ALLOWED,
            TEXT,
            "read-only: GET or HEAD\n".into(),
        );
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    match req.uri().path() {
        "/health" => match crate::status_page::health(&store).await {
            Ok(()) => answer(StatusCode::OK, TEXT, "ok\n".into()),
            Err(why) => answer(StatusCode::SERVICE_UNAVAILABLE, TEXT, format!("{why}\n")),
        },
        "/metrics" => answer(
            StatusCode::OK,
            crate::metrics::CONTENT_TYPE,
            metrics.render(),
        ),
        "/" | "/index.html" => page("text/html; charset=utf-8", crate::status_page::INDEX_HTML),
        "/status.css" => page("text/css; charset=utf-8", crate::status_page::STYLE_CSS),
        "/status.js" => page(
            "text/javascript; charset=utf-8",
            crate::status_page::SCRIPT_JS,
        ),
        "/status.json" => answer(
            StatusCode::OK,
            "application/json",
            crate::status_page::status_json(&store).await.to_string(),
        ),
        _ => answer(StatusCode::NOT_FOUND, TEXT, "no such page\n".into()),
    }
}

/// Bind `addr` and serve the admin listener for `store` on it, over TLS
/// when `tls` is given (as the gateway's other listeners).
pub async fn start(
    addr: std::net::SocketAddr,
    store: ObjectStore,
    metrics: Arc<GatewayMetrics>,
    tls: Option<crate::tls::Acceptor>,
) -> Result<Running, AdminListenError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| AdminListenError::Listen { addr, source })?;
    let addr = listener
        .local_addr()
        .map_err(|source| AdminListenError::Listen { addr, source })?;
    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
        let (store, metrics) = (store.clone(), metrics.clone());
        async move { Ok::<_, std::convert::Infallible>(handle(req, store, metrics).await) }
    });
    Ok(Running::spawn(addr, |stopped| {
        crate::listener::serve_tls(listener, tls, svc, stopped, "admin")
    }))
}
