//! Work that must not run on an async thread (file and metadata I/O,
//! hashing and sealing whole chunks), in one place for every crate.

/// The blocking task panicked or was cancelled at shutdown.
#[derive(Debug, thiserror::Error)]
#[error("background task did not finish: {0}")]
pub struct BlockingError(#[from] tokio::task::JoinError);

/// Run `f` on tokio's blocking pool, inside the caller's tracing span:
/// several nodes may share a process (`gridstore server`, the benches,
/// the tests), and their log lines must still name the node.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, BlockingError> {
    let span = tracing::Span::current();
    Ok(tokio::task::spawn_blocking(move || span.in_scope(f)).await?)
}
