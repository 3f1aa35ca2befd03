//! The gateway's multipart objects waiting for, or in, their stitch (see
//! [`crate::multipart_stitch`]): one stitch runs at a time, and callers
//! that count stored bytes can wait until none is left.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::{Notify, Semaphore, SemaphorePermit};

#[derive(Debug)]
pub(crate) struct StitchQueue {
    pending: AtomicUsize,
    idle: Notify,
    one_at_a_time: Semaphore,
}

impl Default for StitchQueue {
    fn default() -> Self {
        Self {
            pending: AtomicUsize::new(0),
            idle: Notify::new(),
            one_at_a_time: Semaphore::new(1),
        }
    }
}

impl StitchQueue {
    /// One more object queued, until the returned guard is dropped (also
    /// when its task panics, so waiters are never stranded).
    pub(crate) fn enqueue(self: &Arc<Self>) -> Queued {
        self.pending.fetch_add(1, Ordering::SeqCst);
        Queued(self.clone())
    }

    /// Wait until no object is queued.
    pub(crate) async fn settled(&self) {
        loop {
            let idle = self.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            if self.pending.load(Ordering::SeqCst) == 0 {
                return;
            }
            idle.await;
        }
    }
}

/// An object in the queue (see [`StitchQueue::enqueue`]).
pub(crate) struct Queued(Arc<StitchQueue>);

impl Queued {
    /// Wait for the queue's turn; `None` only if the queue was closed.
    pub(crate) async fn turn(&self) -> Option<SemaphorePermit<'_>> {
        self.0.one_at_a_time.acquire().await.ok()
    }
}

impl Drop for Queued {
    fn drop(&mut self) {
        if self.0.pending.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}
