//! `gridstore node`: open the node, serve RPC until SIGTERM or SIGINT,
//! then finish the requests in flight.

use crate::config::NodeConfig;
use crate::node::{Node, NodeError};
use crate::rpc_server;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// Run a node until a signal stops it. Prints one line to stdout,
/// `gridstore node <id> listening on <addr>`, once it accepts requests
/// (scripts and tests wait for it; with port 0 it tells the port).
pub async fn run(cfg: NodeConfig) -> Result<(), NodeError> {
    // Install the handlers before anyone can learn we are up: a SIGTERM
    // that arrives first must stop us cleanly, not by the default action.
    let shutdown = shutdown_signal()?;
    let node = Arc::new(tokio::task::block_in_place(|| Node::open(&cfg))?);
    let listener = TcpListener::bind(cfg.listen)
        .await
        .map_err(|e| NodeError::Refused(format!("cannot listen on {}: {e}", cfg.listen)))?;
    let addr: SocketAddr = listener
        .local_addr()
        .map_err(|e| NodeError::Refused(format!("listener has no address: {e}")))?;
    tracing::info!(
        node = %node.id,
        site = %node.site,
        %addr,
        io = node.store.io_backend().name(),
        "node serving"
    );
    println!("gridstore node {} listening on {addr}", node.id);
    rpc_server::serve(
        listener,
        node,
        shutdown,
        Duration::from_secs(cfg.shutdown_grace_secs),
    )
    .await;
    tracing::info!("node stopped");
    Ok(())
}

fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>, NodeError> {
    use tokio::signal::unix::{signal, SignalKind};
    let handler =
        |kind| signal(kind).map_err(|e| NodeError::Refused(format!("cannot handle signals: {e}")));
    let mut term = handler(SignalKind::terminate())?;
    let mut int = handler(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
    })
}

/// A node serving on 127.0.0.1 inside this process: for in-process test
/// clusters and benchmarks (real RocksDB, real files, real RPC on
/// loopback; only the process is shared).
pub struct LocalNode {
    pub addr: SocketAddr,
    pub node: Arc<Node>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl LocalNode {
    /// Open and serve `cfg` (its `listen` address; port 0 picks one).
    pub async fn start(cfg: &NodeConfig) -> Result<LocalNode, NodeError> {
        let node = Arc::new(tokio::task::block_in_place(|| Node::open(cfg))?);
        let listener = TcpListener::bind(cfg.listen)
            .await
            .map_err(|e| NodeError::Refused(format!("cannot listen on {}: {e}", cfg.listen)))?;
        let addr = listener
            .local_addr()
            .map_err(|e| NodeError::Refused(format!("listener has no address: {e}")))?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(rpc_server::serve(
            listener,
            node.clone(),
            async {
                let _ = stopped.await;
            },
            Duration::from_secs(cfg.shutdown_grace_secs),
        ));
        Ok(LocalNode {
            addr,
            node,
            stop: Some(stop),
            task,
        })
    }

    /// Stop as on SIGTERM: refuse new connections, finish requests.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = (&mut self.task).await;
    }

    /// Vanish at once: the port closes and open connections drop mid-
    /// request (writes already handed to the disk still complete, as the
    /// kernel would finish them for a killed process).
    pub async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}
