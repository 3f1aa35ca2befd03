//! Authentication of node RPC with the cluster secret.
//!
//! Every request carries three headers:
//!
//! * `x-gs-time`: milliseconds since the Unix epoch when it was signed;
//! * `x-gs-nonce`: 16 random bytes, hex;
//! * `x-gs-content-hash`: BLAKE3 of the body, hex (the empty body's hash
//!   for bodiless requests);
//! * `authorization: GS1 <hex tag>`, the tag being keyed BLAKE3 (a MAC)
//!   under a key derived from the cluster secret, over the method, the path
//!   and query, the time, the nonce and the content hash.
//!
//! A server accepts a request only if the tag matches, the time is within
//! the skew window, and the nonce was not seen inside that window (so a
//! captured request cannot be replayed at all, inside or outside the
//! window). The body is checked against the signed hash as it streams in,
//! before anything it carries is committed.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub const HEADER_TIME: &str = "x-gs-time";
pub const HEADER_NONCE: &str = "x-gs-nonce";
pub const HEADER_CONTENT_HASH: &str = "x-gs-content-hash";
pub const HEADER_AUTHORIZATION: &str = "authorization";
const SCHEME: &str = "GS1 ";
const KEY_CONTEXT: &str = "gridstore 2026-11 node rpc mac v1";

/// How far a request's time may be from the server's clock.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    #[error("missing header {0}")]
    Missing(&'static str),
    #[error("malformed header {0}")]
    Malformed(&'static str),
    #[error("request time outside the allowed window")]
    Expired,
    #[error("request already seen (replay)")]
    Replayed,
    #[error("signature does not match")]
    BadSignature,
    #[error("body does not match its signed hash")]
    BodyMismatch,
}

/// The MAC key, derived from the cluster secret (never the secret itself).
#[derive(Clone)]
pub struct RpcKey([u8; 32]);

impl RpcKey {
    pub fn from_secret(secret: &[u8]) -> Self {
        Self(blake3::derive_key(KEY_CONTEXT, secret))
    }
}

impl std::fmt::Debug for RpcKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RpcKey(..)")
    }
}

/// The signed headers of one request, as (name, value) pairs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedHeaders {
    pub time_ms: u64,
    pub nonce: [u8; 16],
    pub content_hash: [u8; 32],
    pub tag: [u8; 32],
}

impl SignedHeaders {
    pub fn to_pairs(&self) -> [(&'static str, String); 4] {
        [
            (HEADER_TIME, self.time_ms.to_string()),
            (HEADER_NONCE, hex::encode(self.nonce)),
            (HEADER_CONTENT_HASH, hex::encode(self.content_hash)),
            (
                HEADER_AUTHORIZATION,
                format!("{SCHEME}{}", hex::encode(self.tag)),
            ),
        ]
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn mac(
    key: &RpcKey,
    method: &str,
    path_and_query: &str,
    time_ms: u64,
    nonce: &[u8; 16],
    content_hash: &[u8; 32],
) -> [u8; 32] {
    let mut h = blake3::Hasher::new_keyed(&key.0);
    // Length-prefix the variable fields so no two requests share a string.
    for part in [method.as_bytes(), path_and_query.as_bytes()] {
        h.update(&(part.len() as u64).to_le_bytes());
        h.update(part);
    }
    h.update(&time_ms.to_le_bytes());
    h.update(nonce);
    h.update(content_hash);
    *h.finalize().as_bytes()
}

/// Sign a request whose body hashes to `content_hash`
/// (`blake3::hash(body)`; `blake3::hash(b"")` for no body).
pub fn sign(
    key: &RpcKey,
    method: &str,
    path_and_query: &str,
    content_hash: [u8; 32],
) -> SignedHeaders {
    sign_at(key, method, path_and_query, content_hash, now_ms())
}

/// [`sign`] with a given clock reading (for tests of the skew window and
/// for callers that correct a known clock offset).
pub fn sign_at(
    key: &RpcKey,
    method: &str,
    path_and_query: &str,
    content_hash: [u8; 32],
    time_ms: u64,
) -> SignedHeaders {
    let nonce: [u8; 16] = rand::random();
    SignedHeaders {
        time_ms,
        nonce,
        content_hash,
        tag: mac(key, method, path_and_query, time_ms, &nonce, &content_hash),
    }
}

/// Server side: checks signatures and remembers nonces for the window.
pub struct Verifier {
    key: RpcKey,
    window: Duration,
    seen: Mutex<Seen>,
}

#[derive(Default)]
struct Seen {
    by_nonce: HashMap<[u8; 16], u64>,
    order: VecDeque<([u8; 16], u64)>,
}

impl Verifier {
    pub fn new(key: RpcKey, window: Duration) -> Self {
        Self {
            key,
            window,
            seen: Mutex::new(Seen::default()),
        }
    }

    /// Check a request's headers (looked up by `header`). On success returns
    /// the body hash the request committed to; the caller must check the
    /// body against it (see [`BodyCheck`]) before acting on the body.
    pub fn verify<'a>(
        &self,
        method: &str,
        path_and_query: &str,
        header: impl Fn(&str) -> Option<&'a str>,
    ) -> Result<[u8; 32], AuthError> {
        self.verify_at(method, path_and_query, header, now_ms())
    }

    pub fn verify_at<'a>(
        &self,
        method: &str,
        path_and_query: &str,
        header: impl Fn(&str) -> Option<&'a str>,
        now: u64,
    ) -> Result<[u8; 32], AuthError> {
        let get = |name: &'static str| header(name).ok_or(AuthError::Missing(name));
        let time_ms: u64 = get(HEADER_TIME)?
            .parse()
            .map_err(|_| AuthError::Malformed(HEADER_TIME))?;
        let nonce: [u8; 16] =
            unhex(get(HEADER_NONCE)?).ok_or(AuthError::Malformed(HEADER_NONCE))?;
        let content_hash: [u8; 32] =
            unhex(get(HEADER_CONTENT_HASH)?).ok_or(AuthError::Malformed(HEADER_CONTENT_HASH))?;
        let tag: [u8; 32] = get(HEADER_AUTHORIZATION)?
            .strip_prefix(SCHEME)
            .and_then(unhex)
            .ok_or(AuthError::Malformed(HEADER_AUTHORIZATION))?;

        let expected = mac(
            &self.key,
            method,
            path_and_query,
            time_ms,
            &nonce,
            &content_hash,
        );
        // blake3::Hash compares in constant time.
        if blake3::Hash::from(expected) != blake3::Hash::from(tag) {
            return Err(AuthError::BadSignature);
        }
        let window = self.window.as_millis() as u64;
        if time_ms.abs_diff(now) > window {
            return Err(AuthError::Expired);
        }
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        // Forget nonces old enough that their requests are expired anyway.
        while let Some(&(n, t)) = seen.order.front() {
            if t + 2 * window >= now {
                break;
            }
            seen.order.pop_front();
            if seen.by_nonce.get(&n) == Some(&t) {
                seen.by_nonce.remove(&n);
            }
        }
        if seen.by_nonce.contains_key(&nonce) {
            return Err(AuthError::Replayed);
        }
        seen.by_nonce.insert(nonce, time_ms);
        seen.order.push_back((nonce, time_ms.max(now)));
        Ok(content_hash)
    }
}

/// Hashes a body as it streams and compares with the signed hash at the end.
pub struct BodyCheck {
    expected: [u8; 32],
    hasher: blake3::Hasher,
}

impl BodyCheck {
    pub fn new(expected: [u8; 32]) -> Self {
        Self {
            expected,
            hasher: blake3::Hasher::new(),
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        self.hasher.update(data);
    }

    pub fn finish(self) -> Result<(), AuthError> {
        if self.hasher.finalize() == blake3::Hash::from(self.expected) {
            Ok(())
        } else {
            Err(AuthError::BodyMismatch)
        }
    }
}

fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    let mut out = [0u8; N];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}
