//! Who gets served when the gateway is busy, and how long a request may
//! take to send its body.
//!
//! Requests in progress are bounded (memory stays bounded under a flood);
//! beyond the bound clients get 503 SlowDown and retry. Within it, one
//! access key may hold at most a share of the slots, so a single key (a
//! runaway client, or one opening requests and never sending their
//! bodies) cannot lock every other user out. And a request body must keep
//! arriving: a body that stalls, or trickles in far below any real
//! client's pace, is cut off and its slot freed, as nginx's
//! `client_body_timeout` and Garage's body timeouts do.

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// Limits on requests in progress and on request bodies.
#[derive(Debug, Clone)]
pub struct AdmissionConfig {
    /// Requests in progress at once, all keys together.
    pub max_requests: usize,
    /// Requests in progress at once for one access key (anonymous
    /// requests share one); `None`: half of `max_requests`.
    pub max_requests_per_key: Option<usize>,
    /// A body that sends nothing for this long is cut off.
    pub body_idle_timeout: Duration,
    /// After `body_grace`, a body must have averaged at least this many
    /// bytes per second since it started.
    pub body_min_bytes_per_sec: u64,
    pub body_grace: Duration,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        Self {
            max_requests: 256,
            max_requests_per_key: None,
            body_idle_timeout: Duration::from_secs(30),
            body_min_bytes_per_sec: 1024,
            body_grace: Duration::from_secs(10),
        }
    }
}

/// A request's place among those in progress; released when dropped.
pub struct Slot {
    _all: OwnedSemaphorePermit,
    _key: OwnedSemaphorePermit,
}

/// Why a request was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refused {
    #[error("too many requests in progress")]
    Busy,
    #[error("too many requests in progress for this access key")]
    KeyBusy,
}

/// The slots of one gateway.
pub struct Admission {
    cfg: AdmissionConfig,
    all: Arc<Semaphore>,
    per_key: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl Admission {
    pub fn new(cfg: AdmissionConfig) -> Self {
        Self {
            all: Arc::new(Semaphore::new(cfg.max_requests.max(1))),
            per_key: Mutex::new(HashMap::new()),
            cfg,
        }
    }

    pub fn config(&self) -> &AdmissionConfig {
        &self.cfg
    }

    fn key_share(&self) -> usize {
        self.cfg
            .max_requests_per_key
            .unwrap_or(self.cfg.max_requests / 2)
            .clamp(1, self.cfg.max_requests.max(1))
    }

    /// A slot for a request of `key` (`None`: anonymous), or why not.
    pub fn admit(&self, key: Option<&str>) -> Result<Slot, Refused> {
        let sem = {
            let mut map = self.per_key.lock().unwrap_or_else(|p| p.into_inner());
            // Keys with nothing in flight hold no memory: drop their entry
            // when the map grows (a key's permits all returned means no
            // request of it is running).
            if map.len() > 1024 {
                let share = self.key_share();
                map.retain(|_, s| s.available_permits() < share);
            }
            map.entry(key.unwrap_or("").to_string())
                .or_insert_with(|| Arc::new(Semaphore::new(self.key_share())))
                .clone()
        };
        let key_permit = sem.try_acquire_owned().map_err(|_| Refused::KeyBusy)?;
        let all = self
            .all
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refused::Busy)?;
        Ok(Slot {
            _all: all,
            _key: key_permit,
        })
    }

    /// `body`, cut off with an error once it stalls for the idle timeout
    /// or falls below the minimum rate after the grace period.
    pub fn paced<S, E>(&self, body: S) -> impl Stream<Item = Result<Bytes, String>> + Send + Unpin
    where
        S: Stream<Item = Result<Bytes, E>> + Send + Unpin + 'static,
        E: std::fmt::Display,
    {
        let cfg = self.cfg.clone();
        let start = Instant::now();
        Box::pin(futures_util::stream::unfold(
            (body, 0u64, false),
            move |(mut body, received, done)| {
                let cfg = cfg.clone();
                async move {
                    if done {
                        return None;
                    }
                    let next = match tokio::time::timeout(cfg.body_idle_timeout, body.next()).await
                    {
                        Err(_) => {
                            let e = format!(
                                "request body stalled: nothing received for {} s",
                                cfg.body_idle_timeout.as_secs()
                            );
                            return Some((Err(e), (body, received, true)));
                        }
                        Ok(None) => return None,
                        Ok(Some(Err(e))) => {
                            return Some((Err(e.to_string()), (body, received, true)))
                        }
                        Ok(Some(Ok(bytes))) => bytes,
                    };
                    let received = received + next.len() as u64;
                    let elapsed = start.elapsed();
                    if elapsed > cfg.body_grace {
                        let floor = cfg.body_min_bytes_per_sec as f64 * elapsed.as_secs_f64();
                        if (received as f64) < floor {
                            let e = format!(
                                "request body too slow: {received} bytes in {:.0} s, below {} bytes/s",
                                elapsed.as_secs_f64(),
                                cfg.body_min_bytes_per_sec
                            );
                            return Some((Err(e), (body, received, true)));
                        }
                    }
                    Some((Ok(next), (body, received, false)))
                }
            },
        ))
    }
}
