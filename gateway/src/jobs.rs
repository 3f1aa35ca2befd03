//! The job API: HTTP/1.1 with JSON bodies on its own listener
//! (127.0.0.1:9002 by default), authenticated as WebDAV is, with HTTP
//! Basic (access key id, secret key), over `cluster::jobs::JobManager`.
//!
//! | call | answer |
//! |---|---|
//! | `POST /v1/jobs` (a [`SubmitRequest`]) | `{"id": ...}` |
//! | `GET /v1/jobs` | the caller's jobs (an admin's: all) |
//! | `GET /v1/jobs/<id>[?wait=SECS]` | its status (after it finished or SECS passed) |
//! | `GET /v1/jobs/<id>/logs[?key=KEY]` | stderr of failed tasks, or of task KEY (text) |
//! | `POST /v1/jobs/<id>/cancel` | its status |
//! | `GET /metrics` | storage audits per node (Prometheus); no credentials, as the nodes' probes. The admin listener serves them too, with the rest of the gateway's metrics |
//!
//! [`client`] is the other side, for `gridstore job`.

use crate::auth::StoreAuth;
use crate::webdav::server::{basic_credentials, same_secret};
use bytes::Bytes;
use cluster::jobs::{
    JobError, JobManager, JobSpec, JobStatus, Placement, ProgramFile, ProgramSpec, TaskLimits,
    TaskStatus,
};
use cluster::ObjectStore;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// Largest submit body.
const MAX_BODY: usize = 1 << 20;
/// Longest `?wait=`.
const MAX_WAIT_SECS: u64 = 300;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JobsApiError {
    #[error("cannot listen for the job API on {addr} (jobs_listen, --jobs-listen): {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// A program as the API names it: argv and files fetched from the grid
/// (`bucket/key`, placed in the task directory under the key's last part).
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct ProgramBody {
    pub argv: Vec<String>,
    #[serde(default)]
    pub files: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct SubmitRequest {
    pub bucket: String,
    #[serde(default)]
    pub prefix: String,
    pub out_bucket: String,
    #[serde(default)]
    pub out_prefix: String,
    pub map: ProgramBody,
    #[serde(default)]
    pub reduce: Option<ProgramBody>,
    #[serde(default)]
    pub timeout_secs: Option<u64>,
    #[serde(default)]
    pub cpu_secs: Option<u64>,
    #[serde(default)]
    pub memory_mb: Option<u64>,
    /// "locality" (default) or "random" (the baseline).
    #[serde(default)]
    pub placement: Option<String>,
    #[serde(default)]
    pub per_node: Option<usize>,
    #[serde(default)]
    pub max_attempts: Option<u32>,
}

fn program(p: &ProgramBody) -> Result<ProgramSpec, String> {
    let files = p
        .files
        .iter()
        .map(|f| {
            f.split_once('/')
                .filter(|(b, k)| !b.is_empty() && !k.is_empty())
                .map(|(b, k)| ProgramFile {
                    bucket: b.into(),
                    key: k.into(),
                })
                .ok_or_else(|| format!("program file {f:?} is not BUCKET/KEY"))
        })
        .collect::<Result<_, _>>()?;
    Ok(ProgramSpec {
        argv: p.argv.clone(),
        files,
    })
}

impl SubmitRequest {
    fn spec(&self, owner: &str, admin: bool) -> Result<JobSpec, String> {
        let mut s = JobSpec::new(
            owner,
            &self.bucket,
            &self.prefix,
            &self.out_bucket,
            &self.out_prefix,
        );
        s.admin = admin;
        s.map = program(&self.map)?;
        s.reduce = self.reduce.as_ref().map(program).transpose()?;
        let d = TaskLimits::default();
        s.limits = TaskLimits {
            timeout_secs: self.timeout_secs.unwrap_or(d.timeout_secs),
            cpu_secs: self.cpu_secs.unwrap_or(d.cpu_secs),
            memory_mb: self.memory_mb.unwrap_or(d.memory_mb),
        };
        s.placement = match self.placement.as_deref() {
            None | Some("locality") => Placement::Locality,
            Some("random") => Placement::Random,
            Some(other) => return Err(format!("placement {other:?}: locality or random")),
        };
        if let Some(n) = self.per_node {
            s.per_node = n;
        }
        if let Some(n) = self.max_attempts {
            s.max_attempts = n;
        }
        Ok(s)
    }
}

fn opt(f: Option<f64>) -> Value {
    f.map_or(Value::Null, Value::from)
}

fn task_json(t: &TaskStatus) -> Value {
    json!({
        "key": t.key,
        "phase": t.phase.name(),
        "node": t.node,
        "attempts": t.attempts,
        "outcome": t.outcome,
        "stderr": t.stderr,
    })
}

/// A job's status as the API answers it.
pub fn status_json(s: &JobStatus) -> Value {
    let l = &s.locality;
    json!({
        "id": s.id,
        "owner": s.owner,
        "phase": s.phase.name(),
        "finished": s.phase.finished(),
        "placement": s.placement.name(),
        "bucket": s.bucket, "prefix": s.prefix,
        "out_bucket": s.out_bucket, "out_prefix": s.out_prefix,
        "reduce_key": s.reduce_key,
        "listed": s.listed,
        "tasks": {
            "total": s.total(), "pending": s.pending, "running": s.running,
            "done": s.done, "failed": s.failed, "cancelled": s.cancelled,
            "retries": s.retries,
        },
        "locality": {
            "local_fraction": opt(l.local_fraction()),
            "site_fraction": opt(l.site_fraction()),
            "ceiling_local_fraction": opt(l.ceiling_local_fraction()),
            "ceiling_site_fraction": opt(l.ceiling_site_fraction()),
            "random_local_fraction": opt(l.random_local_fraction()),
            "random_site_fraction": opt(l.random_site_fraction()),
            "bytes_local": l.local, "bytes_site": l.site, "bytes_remote": l.remote,
            "bytes_inline": l.inline,
        },
        "error": s.error,
        "failures": s.failures.iter().map(task_json).collect::<Vec<_>>(),
        "reduce": s.reduce.as_ref().map(task_json),
        "summary": s.summary(),
    })
}

fn metrics_reply(text: String) -> Response<String> {
    let mut r = Response::new(text);
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
    );
    r
}

fn reply(status: StatusCode, body: impl Into<Bytes>, json: bool) -> Response<String> {
    let bytes: Bytes = body.into();
    let mut r = Response::new(String::from_utf8_lossy(&bytes).into_owned());
    *r.status_mut() = status;
    let ct = if json {
        "application/json"
    } else {
        "text/plain; charset=utf-8"
    };
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(ct),
    );
    r
}

fn json_reply(status: StatusCode, v: &Value) -> Response<String> {
    reply(status, v.to_string(), true)
}

fn error_reply(status: StatusCode, message: impl std::fmt::Display) -> Response<String> {
    json_reply(status, &json!({ "error": message.to_string() }))
}

fn job_error(e: JobError) -> Response<String> {
    let status = match &e {
        JobError::NoSuchJob(_) => StatusCode::NOT_FOUND,
        JobError::AccessDenied(_) => StatusCode::FORBIDDEN,
        JobError::Invalid(_) => StatusCode::BAD_REQUEST,
        JobError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        JobError::Store(cluster::Error::NoSuchBucket(_)) => StatusCode::NOT_FOUND,
        JobError::Store(e) if e.is_unavailable() => StatusCode::SERVICE_UNAVAILABLE,
        JobError::Store(_) => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error_reply(status, e)
}

fn query(req: &Request<Incoming>, name: &str) -> Option<String> {
    req.uri().query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then(|| urlencoding::decode(v).map(|s| s.into_owned()).ok())?
    })
}

async fn read_body(req: Request<Incoming>) -> Result<Vec<u8>, String> {
    use hyper::body::Body;
    let mut body = req.into_body();
    let mut out = Vec::new();
    while let Some(frame) =
        std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await
    {
        let frame = frame.map_err(|e| e.to_string())?;
        if let Ok(data) = frame.into_data() {
            out.extend_from_slice(&data);
            if out.len() > MAX_BODY {
                return Err("request body too large".into());
            }
        }
    }
    Ok(out)
}

async fn handle(
    req: Request<Incoming>,
    jobs: JobManager,
    auth: Arc<StoreAuth>,
) -> Response<String> {
    let Some((user, pass)) = basic_credentials(&req) else {
        return unauthorized();
    };
    let admin = match auth.lookup(&user).await {
        Ok(Some((secret, admin))) if same_secret(&pass, &secret) => admin,
        Ok(Some(_)) => return unauthorized(),
        Ok(None) => {
            // Same work as for a known key: timing does not tell.
            let _ = same_secret(&pass, "");
            return unauthorized();
        }
        Err(_) => return error_reply(StatusCode::SERVICE_UNAVAILABLE, "access keys unreadable"),
    };
    let path = req.uri().path().to_string();
    let parts: Vec<&str> = path
        .trim_start_matches("/v1/jobs")
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    if !path.starts_with("/v1/jobs") {
        return error_reply(StatusCode::NOT_FOUND, "no such call");
    }
    let method = req.method().clone();
    match (method, parts.as_slice()) {
        (http::Method::POST, []) => {
            let body = match read_body(req).await {
                Ok(b) => b,
                Err(e) => return error_reply(StatusCode::BAD_REQUEST, e),
            };
            let sub: SubmitRequest = match serde_json::from_slice(&body) {
                Ok(s) => s,
                Err(e) => return error_reply(StatusCode::BAD_REQUEST, e),
            };
            let spec = match sub.spec(&user, admin) {
                Ok(s) => s,
                Err(e) => return error_reply(StatusCode::BAD_REQUEST, e),
            };
            match jobs.submit(spec).await {
                Ok(id) => {
                    tracing::info!(job = %id, owner = %user, "job submitted");
                    json_reply(StatusCode::CREATED, &json!({ "id": id }))
                }
                Err(e) => job_error(e),
            }
        }
        (http::Method::GET, []) => match jobs.list(&user, admin).await {
            Ok(list) => {
                let list: Vec<Value> = list.iter().map(status_json).collect();
                json_reply(StatusCode::OK, &Value::from(list))
            }
            Err(e) => job_error(e),
        },
        (http::Method::GET, [id]) => {
            let wait = query(&req, "wait")
                .and_then(|w| w.parse::<u64>().ok())
                .unwrap_or(0)
                .min(MAX_WAIT_SECS);
            let s = if wait > 0 {
                jobs.wait(id, &user, admin, Duration::from_secs(wait)).await
            } else {
                jobs.status(id, &user, admin).await
            };
            match s {
                Ok(s) => json_reply(StatusCode::OK, &status_json(&s)),
                Err(e) => job_error(e),
            }
        }
        (http::Method::GET, [id, "logs"]) => {
            let key = query(&req, "key");
            match jobs.logs(id, &user, admin, key.as_deref()).await {
                Ok(text) => reply(StatusCode::OK, text, false),
                Err(e) => job_error(e),
            }
        }
        (http::Method::POST, [id, "cancel"]) => match jobs.cancel(id, &user, admin).await {
            Ok(s) => json_reply(StatusCode::OK, &status_json(&s)),
            Err(e) => job_error(e),
        },
        _ => error_reply(StatusCode::NOT_FOUND, "no such call"),
    }
}

fn unauthorized() -> Response<String> {
    let mut r = error_reply(StatusCode::UNAUTHORIZED, "authentication required");
    r.headers_mut().insert(
        http::header::WWW_AUTHENTICATE,
        http::HeaderValue::from_static("Basic realm=\"gridstore jobs\""),
    );
    r
}

/// The job API running in the background.
pub use crate::listener::Running;

/// Bind `addr` and serve the job API for `store` on it.
pub async fn start(
    addr: std::net::SocketAddr,
    store: ObjectStore,
) -> Result<Running, JobsApiError> {
    start_tls(addr, store, None).await
}

/// [`start`], over TLS when `tls` is given.
pub async fn start_tls(
    addr: std::net::SocketAddr,
    store: ObjectStore,
    tls: Option<crate::tls::Acceptor>,
) -> Result<Running, JobsApiError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| JobsApiError::Listen { addr, source })?;
    let addr = listener
        .local_addr()
        .map_err(|source| JobsApiError::Listen { addr, source })?;
    let jobs = JobManager::new(store.clone());
    let auth = Arc::new(StoreAuth::new(store.clone()));
    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
        let (jobs, auth) = (jobs.clone(), auth.clone());
        // Counts per node id, no data: served like the nodes' probes. The
        // admin listener serves these and the request figures; this copy
        // stays for scrapers configured before it existed.
        let metrics = (req.method() == http::Method::GET && req.uri().path() == "/metrics")
            .then(|| crate::metrics::audit_text(&store));
        async move {
            Ok::<_, std::convert::Infallible>(match metrics {
                Some(text) => metrics_reply(text),
                None => handle(req, jobs, auth).await,
            })
        }
    });
    Ok(Running::spawn(addr, |stopped| {
        crate::listener::serve_tls(listener, tls, svc, stopped, "jobs")
    }))
}

/// The client side, for `gridstore job`.
pub mod client {
    use super::*;
    use base64::Engine;
    use hyper_util::client::legacy::Client;

    #[derive(Debug, thiserror::Error)]
    pub enum ClientError {
        #[error("cannot reach the job API at {endpoint}: {reason}")]
        Unreachable { endpoint: String, reason: String },
        #[error("{status}: {message}")]
        Refused { status: u16, message: String },
        #[error("unexpected answer: {0}")]
        BadResponse(String),
    }

    pub struct JobClient {
        endpoint: String,
        auth: String,
        http: Client<hyper_util::client::legacy::connect::HttpConnector, String>,
    }

    impl JobClient {
        /// `endpoint` like `http://127.0.0.1:9002`.
        pub fn new(endpoint: &str, access_key: &str, secret_key: &str) -> Self {
            let token = base64::engine::general_purpose::STANDARD
                .encode(format!("{access_key}:{secret_key}"));
            Self {
                endpoint: endpoint.trim_end_matches('/').to_string(),
                auth: format!("Basic {token}"),
                http: Client::builder(hyper_util::rt::TokioExecutor::new()).build_http(),
            }
        }

        /// One call; the body as text.
        pub async fn call(
            &self,
            method: &str,
            path: &str,
            body: Option<String>,
        ) -> Result<String, ClientError> {
            let unreachable = |reason: String| ClientError::Unreachable {
                endpoint: self.endpoint.clone(),
                reason,
            };
            let req = Request::builder()
                .method(method)
                .uri(format!("{}{path}", self.endpoint))
                .header(http::header::AUTHORIZATION, &self.auth)
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(body.unwrap_or_default())
                .map_err(|e| unreachable(e.to_string()))?;
            let resp = self
                .http
                .request(req)
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            let status = resp.status();
            let mut body = resp.into_body();
            let mut out = Vec::new();
            use hyper::body::Body;
            while let Some(frame) =
                std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await
            {
                let frame = frame.map_err(|e| ClientError::BadResponse(e.to_string()))?;
                if let Ok(d) = frame.into_data() {
                    out.extend_from_slice(&d);
                }
            }
            let text = String::from_utf8_lossy(&out).into_owned();
            if status.is_success() {
                return Ok(text);
            }
            let message = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(String::from))
                .unwrap_or(text);
            Err(ClientError::Refused {
                status: status.as_u16(),
                message,
            })
        }

        pub async fn call_json(
            &self,
            method: &str,
            path: &str,
            body: Option<String>,
        ) -> Result<Value, ClientError> {
            let text = self.call(method, path, body).await?;
            serde_json::from_str(&text).map_err(|e| ClientError::BadResponse(e.to_string()))
        }
    }
}
