//! Serving the S3 service on hyper: HTTP/1.1 (and h2c), one task per
//! connection, stopped by a shutdown signal.

use crate::auth::{PublicReadAccess, StoreAuth};
use crate::S3Gateway;
use cluster::ObjectStore;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use s3s::service::S3ServiceBuilder;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// Gateway settings.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub region: String,
    /// Requests handled at once before SlowDown.
    pub max_requests: usize,
    /// Host names for virtual-hosted-style requests (`bucket.HOST`).
    pub domain: Option<String>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            region: "us-east-1".into(),
            max_requests: 256,
            domain: None,
        }
    }
}

/// The s3s service for `store`.
pub fn service(store: ObjectStore, cfg: &GatewayConfig) -> s3s::service::S3Service {
    let auth = Arc::new(StoreAuth::new(store.clone()));
    let gateway = S3Gateway::new(store.clone(), auth.clone(), &cfg.region, cfg.max_requests);
    let mut b = S3ServiceBuilder::new(gateway);
    b.set_auth(SharedAuth(auth));
    b.set_access(PublicReadAccess::new(store));
    if let Some(domain) = &cfg.domain {
        if let Ok(host) = s3s::host::SingleDomain::new(domain) {
            b.set_host(host);
        }
    }
    b.build()
}

struct SharedAuth(Arc<StoreAuth>);

#[async_trait::async_trait]
impl s3s::auth::S3Auth for SharedAuth {
    async fn get_secret_key(&self, access_key: &str) -> s3s::S3Result<s3s::auth::SecretKey> {
        self.0.get_secret_key(access_key).await
    }
}

/// Accept connections on `listener` until `shutdown` resolves, then stop
/// accepting and let requests in flight finish.
pub async fn serve(
    listener: TcpListener,
    service: s3s::service::S3Service,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let mut conns = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let svc = service.clone();
                conns.spawn(async move {
                    let builder = Builder::new(TokioExecutor::new());
                    if let Err(e) = builder
                        .serve_connection(TokioIo::new(stream), svc)
                        .await
                    {
                        tracing::debug!(error = %e, "S3 connection ended with an error");
                    }
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    let grace = tokio::time::sleep(std::time::Duration::from_secs(10));
    tokio::pin!(grace);
    loop {
        tokio::select! {
            _ = &mut grace => { conns.abort_all(); break; }
            next = conns.join_next() => if next.is_none() { break },
        }
    }
}
