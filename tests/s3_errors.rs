//! The S3 gateway's error answers over HTTP on loopback, as AWS gives
//! them: every error names AWS's message for its code, tampered presigned
//! URLs are refused 403, legacy region names are accepted where AWS takes
//! them, and an outage names no node to the client.
//!
//! Requests are signed by rusty-s3 (SigV4 presigned URLs), by a SigV2
//! presigner and a SigV4 header signer written here from AWS's
//! specification; error answers are read with an XML parser.

mod support;

use bytes::Bytes;
use cluster::{ObjectStore, StoreConfig};
use gateway::errors::aws_message;
use gateway::server::{serve, service, GatewayConfig};
use http::{HeaderMap, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use support::grid::TestGrid;
use support::objects::store_on;
use url::Url;

const AK: &str = "GSS3ERRORS0000000001";
const SK: &str = "s3-errors-secret-0123456789";
const TTL: Duration = Duration::from_secs(600);

struct Gateway {
    addr: SocketAddr,
    http: Client<HttpConnector, Full<Bytes>>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn start(grid: &TestGrid) -> (Gateway, ObjectStore) {
    let store = store_on(grid, StoreConfig::default());
    store
        .create_user("s3-errors", false, Some(AK), Some(SK))
        .await
        .unwrap();
    let svc = service(store.clone(), &GatewayConfig::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve(listener, svc, async {
        let _ = stopped.await;
    }));
    let http = Client::builder(TokioExecutor::new()).build_http();
    let gw = Gateway {
        addr,
        http,
        _stop: stop,
    };
    (gw, store)
}

#[derive(Debug)]
struct Reply {
    status: u16,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The `<Code>` and `<Message>` of an error answer.
    fn error(&self) -> (String, String) {
        let doc = xmltree::Element::parse(self.body.as_ref())
            .unwrap_or_else(|e| panic!("{} is not XML ({e}): {}", self.status, self.text()));
        assert_eq!(doc.name, "Error", "{}", self.text());
        let text = |name: &str| {
            doc.get_child(name)
                .and_then(|c| c.get_text())
                .map(|t| t.into_owned())
                .unwrap_or_default()
        };
        (text("Code"), text("Message"))
    }

    /// Asserts an error answer with `status`, `code` and AWS's message.
    fn assert_aws_error(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "{code}: {}", self.text());
        let (got_code, message) = self.error();
        assert_eq!(got_code, code, "{}", self.text());
        let expected = aws_message(&code.parse().unwrap()).expect("a message for the code");
        assert_eq!(message, expected, "{}", self.text());
    }
}

impl Gateway {
    fn endpoint(&self) -> Url {
        Url::parse(&format!("http://{}", self.addr)).unwrap()
    }

    fn bucket(&self, name: &str, region: &str) -> Bucket {
        Bucket::new(
            self.endpoint(),
            UrlStyle::Path,
            name.to_string(),
            region.to_string(),
        )
        .unwrap()
    }

    async fn send(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Reply {
        let mut b = Request::builder().method(method.clone()).uri(url);
        if method != Method::GET && method != Method::HEAD {
            b = b.header(http::header::CONTENT_LENGTH, body.len());
        }
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = b.body(Full::new(Bytes::copy_from_slice(body))).unwrap();
        let resp = self.http.request(req).await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        Reply {
            status,
            headers,
            body,
        }
    }

    /// A bucket made with the tests' key, signed for us-east-1.
    async fn make_bucket(&self, name: &str) {
        let creds = Credentials::new(AK, SK);
        let b = self.bucket(name, "us-east-1");
        let url = b.create_bucket(&creds).sign(TTL);
        let r = self.send(Method::PUT, url.as_str(), &[], b"").await;
        assert_eq!(r.status, 200, "{}", r.text());
    }

    async fn put(&self, bucket: &str, key: &str, body: &[u8]) {
        let creds = Credentials::new(AK, SK);
        let b = self.bucket(bucket, "us-east-1");
        let url = b.put_object(Some(&creds), key).sign(TTL);
        let r = self.send(Method::PUT, url.as_str(), &[], body).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
}

/// Errors of every origin carry AWS's message: those s3s makes itself
/// (signatures, access keys, bucket names, anonymous access) and those
/// the gateway makes from the object layer's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_carry_aws_messages_by_code() {
    let grid = TestGrid::start(3, 2).await;
    let (gw, _store) = start(&grid).await;
    let creds = Credentials::new(AK, SK);
    gw.make_bucket("full").await;
    gw.put("full", "k", b"0123456789").await;

    // s3s's own refusals.
    let wrong_secret = Credentials::new(AK, "not-the-secret");
    let url = gw
        .bucket("full", "us-east-1")
        .get_object(Some(&wrong_secret), "k")
        .sign(TTL);
    let r = gw.send(Method::GET, url.as_str(), &[], b"").await;
    r.assert_aws_error(403, "SignatureDoesNotMatch");
    assert_eq!(
        r.error().1,
        "The request signature we calculated does not match the signature you provided. \
         Check your key and signing method."
    );

    let stranger = Credentials::new("GSNOSUCHKEY000000000", SK);
    let url = gw
        .bucket("full", "us-east-1")
        .get_object(Some(&stranger), "k")
        .sign(TTL);
    let r = gw.send(Method::GET, url.as_str(), &[], b"").await;
    r.assert_aws_error(403, "InvalidAccessKeyId");
    assert_eq!(
        r.error().1,
        "The AWS Access Key Id you provided does not exist in our records."
    );

    let url = gw.bucket("ab", "us-east-1").create_bucket(&creds).sign(TTL);
    let r = gw.send(Method::PUT, url.as_str(), &[], b"").await;
    r.assert_aws_error(400, "InvalidBucketName");
    assert_eq!(r.error().1, "The specified bucket is not valid.");

    let anonymous = format!("http://{}/full/k", gw.addr);
    let r = gw.send(Method::GET, &anonymous, &[], b"").await;
    r.assert_aws_error(403, "AccessDenied");

    // The gateway's, from the object layer's errors.
    let b = gw.bucket("full", "us-east-1");
    let url = b.get_object(Some(&creds), "missing").sign(TTL);
    let r = gw.send(Method::GET, url.as_str(), &[], b"").await;
    r.assert_aws_error(404, "NoSuchKey");

    let url = gw
        .bucket("no-such-bucket-here", "us-east-1")
        .get_object(Some(&creds), "k")
        .sign(TTL);
    let r = gw.send(Method::GET, url.as_str(), &[], b"").await;
    r.assert_aws_error(404, "NoSuchBucket");

    let url = b.delete_bucket(&creds).sign(TTL);
    let r = gw.send(Method::DELETE, url.as_str(), &[], b"").await;
    r.assert_aws_error(409, "BucketNotEmpty");

    let url = b.get_object(Some(&creds), "k").sign(TTL);
    let r = gw
        .send(
            Method::GET,
            url.as_str(),
            &[("range", "bytes=100-200")],
            b"",
        )
        .await;
    r.assert_aws_error(416, "InvalidRange");

    let mut get = b.get_object(Some(&creds), "k");
    get.headers_mut().insert("if-match", "\"0000\"");
    let url = get.sign(TTL);
    let r = gw
        .send(Method::GET, url.as_str(), &[("if-match", "\"0000\"")], b"")
        .await;
    r.assert_aws_error(412, "PreconditionFailed");

    let url = b
        .upload_part(Some(&creds), "k", 1, "no-such-upload")
        .sign(TTL);
    let r = gw.send(Method::PUT, url.as_str(), &[], b"part").await;
    r.assert_aws_error(404, "NoSuchUpload");

    // The request id is still stamped into the rewritten answer.
    let id = r.headers["x-amz-request-id"].to_str().unwrap().to_string();
    assert!(
        r.text().contains(&format!("<RequestId>{id}</RequestId>")),
        "{}",
        r.text()
    );
}

/// A presigned URL whose signature was tampered with is refused as a
/// wrong signature (403), whatever the tampering made of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_presigned_urls_are_refused_403() {
    let grid = TestGrid::start(3, 2).await;
    let (gw, _store) = start(&grid).await;
    gw.make_bucket("signed").await;
    gw.put("signed", "k", b"payload").await;
    let creds = Credentials::new(AK, SK);

    // SigV4.
    let url = gw
        .bucket("signed", "us-east-1")
        .get_object(Some(&creds), "k")
        .sign(TTL);
    let good = url.as_str().to_string();
    let r = gw.send(Method::GET, &good, &[], b"").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let sig = url
        .query_pairs()
        .find(|(k, _)| k == "X-Amz-Signature")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    let flipped = format!(
        "{}{}",
        &sig[..63],
        if sig.ends_with('0') { '1' } else { '0' }
    );
    for bad in [
        flipped,
        sig[..40].to_string(),
        format!("{sig}00"),
        sig.to_uppercase(),
        "not-a-signature".to_string(),
        String::new(),
    ] {
        let tampered = good.replace(
            &format!("X-Amz-Signature={sig}"),
            &format!("X-Amz-Signature={bad}"),
        );
        assert_ne!(tampered, good);
        let r = gw.send(Method::GET, &tampered, &[], b"").await;
        r.assert_aws_error(403, "SignatureDoesNotMatch");
    }

    // SigV2.
    let expires = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let v2 = |signature: &str| {
        format!(
            "http://{}/signed/k?AWSAccessKeyId={AK}&Expires={expires}&Signature={signature}",
            gw.addr
        )
    };
    let good = presign_v2(SK, "GET", "/signed/k", expires);
    let r = gw.send(Method::GET, &v2(&good), &[], b"").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let other = presign_v2("not-the-secret", "GET", "/signed/k", expires);
    for bad in [other.as_str(), "%FF%FE", "AAAA", ""] {
        let r = gw.send(Method::GET, &v2(bad), &[], b"").await;
        r.assert_aws_error(403, "SignatureDoesNotMatch");
    }
}

/// Legacy region names are accepted where AWS accepts them: in
/// CreateBucket's LocationConstraint (`US`, `EU`, empty) and in the
/// credential scope a client signs with (s3cmd's default configuration
/// signs with `US`), presigned or in the Authorization header.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_region_names_are_accepted() {
    let grid = TestGrid::start(3, 2).await;
    let (gw, _store) = start(&grid).await;
    let creds = Credentials::new(AK, SK);

    // rusty-s3 scopes its signature to the bucket's region and names it
    // as the LocationConstraint.
    for (bucket, region) in [("legacy-us", "US"), ("legacy-eu", "EU"), ("no-region", "")] {
        let b = gw.bucket(bucket, region);
        let create = b.create_bucket(&creds);
        let body = create.body();
        let url = create.sign(TTL);
        let r = gw
            .send(Method::PUT, url.as_str(), &[], body.as_bytes())
            .await;
        assert_eq!(r.status, 200, "{region:?}: {}", r.text());
        let url = b.put_object(Some(&creds), "k").sign(TTL);
        let r = gw.send(Method::PUT, url.as_str(), &[], b"v").await;
        assert_eq!(r.status, 200, "{region:?}: {}", r.text());
    }

    // A region AWS does not know is still refused in a LocationConstraint.
    let b = gw.bucket("elsewhere", "mars-north-1");
    let create = b.create_bucket(&creds);
    let body = create.body();
    let url = create.sign(TTL);
    let r = gw
        .send(Method::PUT, url.as_str(), &[], body.as_bytes())
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.error().0, "InvalidLocationConstraint", "{}", r.text());

    // Header-signed, as s3cmd signs: CreateBucket with no body, then an
    // upload and a read, all scoped to "US".
    let host = gw.addr.to_string();
    for (method, path, body) in [
        (Method::PUT, "/s3cmd-style", &b""[..]),
        (Method::PUT, "/s3cmd-style/some%20key", &b"hello"[..]),
        (Method::GET, "/s3cmd-style/some%20key", &b""[..]),
    ] {
        let headers = sign_v4_header(&method, &host, path, body, "US", SK);
        let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let url = format!("http://{host}{path}");
        let r = gw.send(method.clone(), &url, &h, body).await;
        assert_eq!(r.status, 200, "{method} {path}: {}", r.text());
        if method == Method::GET {
            assert_eq!(r.body.as_ref(), b"hello");
        }
    }
    // Scoped to "US" but signed with another secret: still refused.
    let headers = sign_v4_header(
        &Method::GET,
        &host,
        "/s3cmd-style/some%20key",
        b"",
        "US",
        "wrong",
    );
    let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let url = format!("http://{host}/s3cmd-style/some%20key");
    let r = gw.send(Method::GET, &url, &h, b"").await;
    r.assert_aws_error(403, "SignatureDoesNotMatch");
}

/// With every node down, no answer names a node (its id or address),
/// to anonymous or signed clients, and a 503 says only that the service
/// is unavailable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_names_no_node() {
    let mut grid = TestGrid::start(3, 2).await;
    let (gw, _store) = start(&grid).await;
    gw.make_bucket("dark").await;
    gw.put("dark", "k", b"payload").await;
    let nodes: Vec<(String, String)> = grid
        .map
        .nodes
        .iter()
        .map(|n| (n.id.clone(), n.addr.clone()))
        .collect();
    for (id, _) in &nodes {
        grid.kill(id).await;
    }

    let creds = Credentials::new(AK, SK);
    let signed = gw
        .bucket("dark", "us-east-1")
        .get_object(Some(&creds), "k")
        .sign(TTL);
    let anonymous = format!("http://{}/dark/k", gw.addr);
    let list = format!("http://{}/", gw.addr);
    let signed_put = gw
        .bucket("dark", "us-east-1")
        .put_object(Some(&creds), "new")
        .sign(TTL);
    // A key the gateway has not looked up yet: its secret is on the nodes.
    let stranger = Credentials::new("GSNOTCACHED000000001", SK);
    let unknown = gw
        .bucket("dark", "us-east-1")
        .get_object(Some(&stranger), "k")
        .sign(TTL);
    let mut statuses = Vec::new();
    for (method, url, body) in [
        (Method::GET, signed.as_str(), &b""[..]),
        (Method::GET, unknown.as_str(), &b""[..]),
        (Method::PUT, signed_put.as_str(), &b"data"[..]),
        (Method::GET, anonymous.as_str(), &b""[..]),
        (Method::GET, list.as_str(), &b""[..]),
    ] {
        let r = gw.send(method.clone(), url, &[], body).await;
        assert!(r.status >= 400, "{method} {url}: {}", r.text());
        let all = format!("{:?} {}", r.headers, r.text());
        for (id, addr) in &nodes {
            assert!(
                !all.contains(addr.as_str()) && !all.contains(id.as_str()),
                "{method} {url} names node {id} ({addr}): {all}"
            );
        }
        assert!(!all.contains("127.0.0.1"), "{method} {url}: {all}");
        statuses.push(r.status);
        if r.status == 503 {
            r.assert_aws_error(503, "ServiceUnavailable");
        }
    }
    // Reads and writes, signed or anonymous, are an outage to the client
    // (503: retry); only listing the root is refused outright to anonymous
    // clients, as it needs no node.
    assert_eq!(statuses, [503, 503, 503, 503, 403], "{statuses:?}");
}

/// A SigV2 query signature (base64 of HMAC-SHA1), URL-encoded.
fn presign_v2(secret: &str, method: &str, resource: &str, expires: u64) -> String {
    use base64::Engine;
    let sts = format!("{method}\n\n\n{expires}\n{resource}");
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret.as_bytes());
    let sig =
        base64::engine::general_purpose::STANDARD.encode(ring::hmac::sign(&key, sts.as_bytes()));
    url::form_urlencoded::byte_serialize(sig.as_bytes()).collect()
}

/// SigV4 Authorization-header signing as AWS specifies it (the path is
/// sent and signed already encoded; no query), scoped to `region`.
fn sign_v4_header(
    method: &Method,
    host: &str,
    path: &str,
    body: &[u8],
    region: &str,
    secret: &str,
) -> Vec<(&'static str, String)> {
    use ring::hmac;
    let now = jiff::Timestamp::now();
    let amz_date = now.strftime("%Y%m%dT%H%M%SZ").to_string();
    let date = &amz_date[..8];
    let payload = hex::encode(Sha256::digest(body));
    let canonical = format!(
        "{method}\n{path}\n\nhost:{host}\nx-amz-content-sha256:{payload}\nx-amz-date:{amz_date}\n\n\
         host;x-amz-content-sha256;x-amz-date\n{payload}"
    );
    let scope = format!("{date}/{region}/s3/aws4_request");
    let sts = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical.as_bytes()))
    );
    let mut key = format!("AWS4{secret}").into_bytes();
    for part in [date, region, "s3", "aws4_request"] {
        key = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &key), part.as_bytes())
            .as_ref()
            .to_vec();
    }
    let signature = hex::encode(hmac::sign(
        &hmac::Key::new(hmac::HMAC_SHA256, &key),
        sts.as_bytes(),
    ));
    vec![
        ("x-amz-date", amz_date.clone()),
        ("x-amz-content-sha256", payload),
        (
            "authorization",
            format!(
                "AWS4-HMAC-SHA256 Credential={AK}/{scope}, \
                 SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature={signature}"
            ),
        ),
    ]
}
