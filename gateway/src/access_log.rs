//! One S3 or WebDAV request from its first byte to the last byte of its
//! answer: what the access log line and the request metrics say of it.
//!
//! An [`Exchange`] is shared by the request body, the answer body and the
//! task serving the request; when the last of them lets go (the answer
//! fully sent, or the client gone) it writes one INFO line on the
//! `gridstore::access` target and, for an error, one line with its
//! message: WARN for a 5xx (something for the operator), DEBUG for a 4xx
//! (the client's business). What the S3 layers learn on the way (the
//! operation and bucket once s3s has resolved them, the grid's own words
//! for a failure that clients only see as "InternalError") reaches the
//! exchange through a task-local, so no handler needs to carry it.

use crate::metrics::{Finished, FrontMetrics, InFlight};
use bytes::Buf;
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

/// The access log's tracing target.
pub const TARGET: &str = "gridstore::access";

/// Which front end served a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    S3,
    WebDav,
}

impl Api {
    fn name(self) -> &'static str {
        match self {
            Api::S3 => "s3",
            Api::WebDav => "webdav",
        }
    }
}

/// What is learnt of a request while it is served.
#[derive(Debug, Default)]
struct Detail {
    operation: Option<String>,
    bucket: Option<String>,
    access_key: Option<String>,
    status: u16,
    /// S3's error code (or the status, for WebDAV).
    code: Option<String>,
    /// The answer's message, for the error line.
    message: Option<String>,
    /// Words for the operator that the answer does not carry.
    cause: Option<String>,
}

pub struct Exchange {
    api: Api,
    request_id: String,
    started: Instant,
    received: AtomicU64,
    sent: AtomicU64,
    detail: Mutex<Detail>,
    metrics: Arc<FrontMetrics>,
    _in_flight: InFlight,
}

tokio::task_local! {
    static CURRENT: Arc<Exchange>;
}

impl Exchange {
    pub fn begin(api: Api, request_id: String, metrics: &Arc<FrontMetrics>) -> Arc<Self> {
        Arc::new(Self {
            api,
            request_id,
            started: Instant::now(),
            received: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            detail: Mutex::new(Detail::default()),
            metrics: metrics.clone(),
            _in_flight: metrics.begin(),
        })
    }

    fn detail(&self) -> std::sync::MutexGuard<'_, Detail> {
        self.detail.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Run `f` with this exchange as the one [`note_request`] and
    /// [`note_cause`] report to.
    pub async fn scope<F: std::future::Future>(self: &Arc<Self>, f: F) -> F::Output {
        CURRENT.scope(self.clone(), f).await
    }

    /// What the request was, as far as the front end knows it before
    /// handing it on (WebDAV: the method, the first path segment, the
    /// caller).
    pub fn set_request(&self, operation: &str, bucket: Option<&str>, access_key: Option<&str>) {
        let mut d = self.detail();
        d.operation = Some(operation.to_string());
        d.bucket = bucket.map(str::to_string);
        if access_key.is_some() {
            d.access_key = access_key.map(str::to_string);
        }
    }

    /// The answer's status, and for an error its code and message.
    pub fn set_answer(&self, status: u16, error: Option<(String, String)>) {
        let mut d = self.detail();
        d.status = status;
        if let Some((code, message)) = error {
            d.code = Some(code);
            d.message = Some(message);
        }
    }

    /// The request body, counted as it is read.
    pub fn count_request<B>(self: &Arc<Self>, body: B) -> Counted<B> {
        Counted {
            inner: body,
            exchange: self.clone(),
            outgoing: false,
        }
    }

    /// The answer body, counted as it is sent.
    pub fn count_answer<B>(self: &Arc<Self>, body: B) -> Counted<B> {
        Counted {
            inner: body,
            exchange: self.clone(),
            outgoing: true,
        }
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        let elapsed = self.started.elapsed();
        let received = self.received.load(Ordering::Relaxed);
        let sent = self.sent.load(Ordering::Relaxed);
        let mut d = std::mem::take(&mut *self.detail());
        if d.status == 0 {
            // No answer was made: the client went away (the serving future
            // was dropped). Logged as nginx does, 499.
            d.status = 499;
            d.code = Some("ClientClosedRequest".into());
            d.message = Some("the client closed the connection before the answer".into());
        }
        // Refused before s3s resolved it (a bad signature, a malformed
        // request): no operation name to give.
        let operation = d.operation.as_deref().unwrap_or("unknown");
        let access_key = d.access_key.as_deref().unwrap_or("anonymous");
        let bucket = d.bucket.as_deref().unwrap_or("");
        let duration_ms = elapsed.as_millis() as u64;
        // Counted before the line is written: whoever reads the line
        // finds the request in /metrics.
        self.metrics.record(&Finished {
            what: operation,
            status: d.status,
            error: (d.status >= 400).then(|| d.code.as_deref().unwrap_or("unknown")),
            received,
            sent,
            elapsed,
        });
        tracing::info!(
            target: TARGET,
            api = self.api.name(),
            request_id = %self.request_id,
            access_key,
            operation,
            bucket,
            status = d.status,
            bytes_in = received,
            bytes_out = sent,
            duration_ms,
        );
        if d.status >= 400 {
            let code = d.code.as_deref().unwrap_or("");
            let message = match (&d.message, &d.cause) {
                (Some(m), Some(c)) => format!("{m}: {c}"),
                (Some(m), None) => m.clone(),
                (None, Some(c)) => c.clone(),
                (None, None) => String::new(),
            };
            if d.status >= 500 {
                tracing::warn!(
                    request_id = %self.request_id,
                    operation,
                    status = d.status,
                    "{} {operation} failed: {code} {message}",
                    self.api.name()
                );
            } else {
                tracing::debug!(
                    request_id = %self.request_id,
                    operation,
                    status = d.status,
                    "{} {operation} refused: {code} {message}",
                    self.api.name()
                );
            }
        }
    }
}

/// From the S3 access check: the operation s3s resolved, the bucket it
/// names and who signed. Nothing outside a request.
pub fn note_request(operation: &str, bucket: Option<&str>, access_key: Option<&str>) {
    let _ = CURRENT.try_with(|x| x.set_request(operation, bucket, access_key));
}

/// Why a request failed, in words for the operator only (which node,
/// which chunk). Returns false outside a request, where the caller should
/// log it itself.
pub fn note_cause(cause: &dyn std::fmt::Display) -> bool {
    CURRENT
        .try_with(|x| {
            let mut d = x.detail();
            if d.cause.is_none() {
                d.cause = Some(cause.to_string());
            }
        })
        .is_ok()
}

pin_project_lite::pin_project! {
    /// A body whose data bytes are added to its exchange's count.
    pub struct Counted<B> {
        #[pin]
        inner: B,
        exchange: Arc<Exchange>,
        outgoing: bool,
    }
}

impl<B: Body> Body for Counted<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                let counter = if *this.outgoing {
                    &this.exchange.sent
                } else {
                    &this.exchange.received
                };
                counter.fetch_add(data.remaining() as u64, Ordering::Relaxed);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    /// (level, target, rendered fields) of every event.
    #[derive(Clone, Default)]
    struct Seen(Arc<Mutex<Vec<(tracing::Level, String, String)>>>);

    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Seen {
        fn on_event(
            &self,
            event: &tracing::Event<'_>,
            _cx: tracing_subscriber::layer::Context<'_, S>,
        ) {
            struct Fields(String);
            impl tracing::field::Visit for Fields {
                fn record_debug(
                    &mut self,
                    field: &tracing::field::Field,
                    value: &dyn std::fmt::Debug,
                ) {
                    self.0.push_str(&format!("{}={:?} ", field.name(), value));
                }
            }
            let mut f = Fields(String::new());
            event.record(&mut f);
            let meta = event.metadata();
            self.0
                .lock()
                .unwrap()
                .push((*meta.level(), meta.target().to_string(), f.0));
        }
    }

    #[tokio::test]
    async fn a_failed_request_logs_one_access_line_and_one_warning() {
        let seen = Seen::default();
        let _guard =
            tracing::subscriber::set_default(tracing_subscriber::registry().with(seen.clone()));
        let metrics = Arc::new(FrontMetrics::new("operation"));
        let x = Exchange::begin(Api::S3, "0123456789ABCDEF".into(), &metrics);
        x.scope(async {
            note_request("GetObject", Some("photos"), Some("GSKEY"));
            assert!(note_cause(&"node n3 (10.0.0.3:7070) did not answer"));
        })
        .await;
        x.set_answer(
            503,
            Some(("ServiceUnavailable".into(), "Please retry.".into())),
        );
        let body = x.count_answer(http_body_util::Full::new(bytes::Bytes::from_static(b"xml")));
        drop(x);
        assert!(
            seen.0.lock().unwrap().is_empty(),
            "logged before the answer went"
        );
        let mut body = Box::pin(body);
        while std::future::poll_fn(|cx| body.as_mut().poll_frame(cx))
            .await
            .is_some()
        {}
        drop(body);

        let events = seen.0.lock().unwrap().clone();
        assert_eq!(events.len(), 2, "{events:?}");
        let (level, target, fields) = &events[0];
        assert_eq!((*level, target.as_str()), (tracing::Level::INFO, TARGET));
        for f in [
            "request_id=0123456789ABCDEF",
            "access_key=\"GSKEY\"",
            "operation=\"GetObject\"",
            "bucket=\"photos\"",
            "status=503",
            "bytes_out=3",
        ] {
            assert!(fields.contains(f), "no {f} in {fields}");
        }
        let (level, _, fields) = &events[1];
        assert_eq!(*level, tracing::Level::WARN);
        assert!(
            fields.contains("ServiceUnavailable Please retry.: node n3"),
            "{fields}"
        );
        assert_eq!(metrics.in_flight(), 0);
        // Outside a request the caller logs the cause itself.
        assert!(!note_cause(&"no request"));
    }
}
