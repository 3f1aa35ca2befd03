//! What every front end's listener does the same way (S3, WebDAV, the job
//! API): accept connections, serve each on its own task over HTTP/1.1 or
//! h2c (or, given TLS, h2 and HTTP/1.1 by ALPN), and on shutdown stop
//! accepting and give requests in flight a grace period before cutting
//! them off.

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use std::future::Future;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::tls::Acceptor;

/// How long requests in flight may run on after shutdown begins.
const GRACE: Duration = Duration::from_secs(10);

/// A client that has not finished its TLS handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Serve `service` on `listener` until `shutdown` resolves. `what` names
/// the front end in logs.
pub async fn serve<S, B>(
    listener: TcpListener,
    service: S,
    shutdown: impl Future<Output = ()>,
    what: &'static str,
) where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    serve_tls(listener, None, service, shutdown, what).await
}

/// [`serve`], over TLS when `tls` is given.
pub async fn serve_tls<S, B>(
    listener: TcpListener,
    tls: Option<Acceptor>,
    service: S,
    shutdown: impl Future<Output = ()>,
    what: &'static str,
) where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let mut conns = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of descriptors, most likely: wait rather than spin.
                        tracing::warn!(error = %e, listener = what, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let (svc, tls) = (service.clone(), tls.clone());
                conns.spawn(async move {
                    let builder = Builder::new(TokioExecutor::new());
                    let served = match tls {
                        None => builder.serve_connection(TokioIo::new(stream), svc).await,
                        // In the connection's task: a client slow to shake
                        // hands holds up no one else.
                        Some(tls) => match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(stream)).await {
                            Ok(Ok(stream)) => builder.serve_connection(TokioIo::new(stream), svc).await,
                            Ok(Err(e)) => {
                                tracing::debug!(error = %e, listener = what, "TLS handshake failed");
                                return;
                            }
                            Err(_) => return,
                        },
                    };
                    if let Err(e) = served {
                        tracing::debug!(error = %e, listener = what, "connection ended with an error");
                    }
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    let grace = tokio::time::sleep(GRACE);
    tokio::pin!(grace);
    loop {
        tokio::select! {
            _ = &mut grace => { conns.abort_all(); break; }
            next = conns.join_next() => if next.is_none() { break },
        }
    }
}

/// A listener serving in the background beside others.
pub struct Running {
    pub addr: std::net::SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Run `serve` (given the future that resolves on [`Running::stop`]) on
    /// its own task.
    pub fn spawn<F>(
        addr: std::net::SocketAddr,
        serve: impl FnOnce(std::pin::Pin<Box<dyn Future<Output = ()> + Send>>) -> F,
    ) -> Running
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(serve(Box::pin(async move {
            let _ = stopped.await;
        })));
        Running { addr, stop, task }
    }

    /// Stop accepting and wait for requests in flight (at most the grace
    /// period).
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}
