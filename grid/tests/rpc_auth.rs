use grid::rpc_auth::*;
use std::collections::HashMap;
use std::time::Duration;

fn headers(s: &SignedHeaders) -> HashMap<&'static str, String> {
    s.to_pairs().into_iter().collect()
}

fn verify(
    v: &Verifier,
    method: &str,
    path: &str,
    h: &HashMap<&'static str, String>,
    now: u64,
) -> Result<[u8; 32], AuthError> {
    v.verify_at(method, path, |name| h.get(name).map(|s| s.as_str()), now)
}

#[test]
fn signed_requests_verify_once() {
    let key = RpcKey::from_secret(b"cluster secret");
    let v = Verifier::new(key.clone(), DEFAULT_WINDOW);
    let body = b"shard bytes";
    let s = sign(
        &key,
        "PUT",
        "/v1/shards/ab/3",
        *blake3::hash(body).as_bytes(),
    );
    let h = headers(&s);
    let expected = verify(&v, "PUT", "/v1/shards/ab/3", &h, s.time_ms).unwrap();
    let mut check = BodyCheck::new(expected);
    check.update(&body[..5]);
    check.update(&body[5..]);
    check.finish().unwrap();
    // The very same request again: a replay.
    assert_eq!(
        verify(&v, "PUT", "/v1/shards/ab/3", &h, s.time_ms + 10),
        Err(AuthError::Replayed)
    );
}

#[test]
fn tampering_is_rejected() {
    let key = RpcKey::from_secret(b"cluster secret");
    let v = Verifier::new(key.clone(), DEFAULT_WINDOW);
    let s = sign(
        &key,
        "GET",
        "/v1/shards/ab/3?offset=0",
        *blake3::hash(b"").as_bytes(),
    );
    let h = headers(&s);
    let now = s.time_ms;
    assert_eq!(
        verify(&v, "DELETE", "/v1/shards/ab/3?offset=0", &h, now),
        Err(AuthError::BadSignature)
    );
    assert_eq!(
        verify(&v, "GET", "/v1/shards/ab/4?offset=0", &h, now),
        Err(AuthError::BadSignature)
    );
    for (name, bad) in [
        (HEADER_TIME, (s.time_ms + 1).to_string()),
        (HEADER_NONCE, "00".repeat(16)),
        (HEADER_CONTENT_HASH, "11".repeat(32)),
        (HEADER_AUTHORIZATION, format!("GS1 {}", "22".repeat(32))),
    ] {
        let mut t = h.clone();
        t.insert(name, bad);
        assert_eq!(
            verify(&v, "GET", "/v1/shards/ab/3?offset=0", &t, now),
            Err(AuthError::BadSignature),
            "{name}"
        );
    }
    // Another cluster's secret.
    let other = Verifier::new(RpcKey::from_secret(b"another"), DEFAULT_WINDOW);
    assert_eq!(
        verify(&other, "GET", "/v1/shards/ab/3?offset=0", &h, now),
        Err(AuthError::BadSignature)
    );
    // The body swapped after signing.
    let mut check = BodyCheck::new(s.content_hash);
    check.update(b"x");
    assert_eq!(check.finish(), Err(AuthError::BodyMismatch));
}

#[test]
fn missing_malformed_and_stale_headers() {
    let key = RpcKey::from_secret(b"k");
    let v = Verifier::new(key.clone(), Duration::from_secs(30));
    let s = sign(&key, "GET", "/v1/status", *blake3::hash(b"").as_bytes());
    let h = headers(&s);
    for name in [
        HEADER_TIME,
        HEADER_NONCE,
        HEADER_CONTENT_HASH,
        HEADER_AUTHORIZATION,
    ] {
        let mut t = h.clone();
        t.remove(name);
        assert_eq!(
            verify(&v, "GET", "/v1/status", &t, s.time_ms),
            Err(AuthError::Missing(name))
        );
        let mut t = h.clone();
        t.insert(name, "zz".into());
        assert_eq!(
            verify(&v, "GET", "/v1/status", &t, s.time_ms),
            Err(AuthError::Malformed(name))
        );
    }
    // Captured and replayed a minute later: outside the window.
    assert_eq!(
        verify(&v, "GET", "/v1/status", &h, s.time_ms + 60_000),
        Err(AuthError::Expired)
    );
    // Clock skew inside the window is fine.
    assert!(verify(&v, "GET", "/v1/status", &h, s.time_ms - 20_000).is_ok());
}

#[test]
fn nonce_memory_is_bounded_by_the_window() {
    let key = RpcKey::from_secret(b"k");
    let v = Verifier::new(key.clone(), Duration::from_secs(1));
    let hash = *blake3::hash(b"").as_bytes();
    let first = sign(&key, "GET", "/", hash);
    verify(&v, "GET", "/", &headers(&first), first.time_ms).unwrap();
    // Much later, the old nonce has been forgotten, and the old request is
    // refused as expired rather than remembered forever.
    let later = first.time_ms + 10_000;
    assert_eq!(
        verify(&v, "GET", "/", &headers(&first), later),
        Err(AuthError::Expired)
    );
}
