//! Signed requests that s3s would refuse for the wrong reason, mended
//! before s3s sees them. s3s still checks every signature: nothing here
//! lets a request through that s3s would not verify on its own terms.

use crate::auth::StoreAuth;
use http::uri::PathAndQuery;
use http::{HeaderValue, Request, Uri};
use ring::hmac;
use sha2::{Digest, Sha256};

/// Region names AWS's us-east-1 endpoint accepts in a SigV4 credential
/// scope besides its own: s3cmd's default configuration
/// (`bucket_location = US`) signs with "US", and configurations written
/// when locations were coarse with "EU".
const LEGACY_REGIONS: [&str; 2] = ["US", "EU"];

/// A well-formed SigV4 signature that matches no request.
const NO_V4_SIGNATURE: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// A well-formed SigV2 signature (base64 of a SHA-1 HMAC) that matches no
/// request.
const NO_V2_SIGNATURE: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAA%3D";

/// Mends `req` in place; `region` is the scope a legacy-scoped request is
/// signed again for (one s3s accepts).
pub(crate) async fn mend<B>(req: &mut Request<B>, auth: &StoreAuth, region: &str) {
    mend_malformed_presigned_signature(req);
    rescope_legacy_region(req, auth, region).await;
}

/// A presigned URL whose signature cannot be one at all (V4: not 64
/// lower-case hex digits; V2: not text once decoded) makes s3s answer 400
/// as if a parameter were missing, where AWS answers 403
/// SignatureDoesNotMatch as for any other wrong signature. The value is
/// swapped for a well-formed one that matches nothing, so s3s runs its
/// usual checks in its usual order (expiry, access key, signature) and
/// refuses the signature as AWS does.
fn mend_malformed_presigned_signature<B>(req: &mut Request<B>) {
    let Some(query) = req.uri().query() else {
        return;
    };
    let mut changed = false;
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| {
            let (name, value) = form_decoded(pair);
            let malformed = match name.as_str() {
                "X-Amz-Signature" => !is_v4_signature(&value),
                // s3s decodes the V2 signature a second time.
                "Signature" => urlencoding::decode(&value).is_err(),
                _ => false,
            };
            if !malformed {
                return pair.to_string();
            }
            changed = true;
            let none = if name == "Signature" {
                NO_V2_SIGNATURE
            } else {
                NO_V4_SIGNATURE
            };
            format!("{name}={none}")
        })
        .collect();
    if changed {
        set_query(req, &pairs.join("&"));
    }
}

fn is_v4_signature(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// One `name=value` of a query, decoded as s3s decodes it
/// (`application/x-www-form-urlencoded`).
fn form_decoded(pair: &str) -> (String, String) {
    form_urlencoded::parse(pair.as_bytes())
        .next()
        .map(|(n, v)| (n.into_owned(), v.into_owned()))
        .unwrap_or_default()
}

fn set_query<B>(req: &mut Request<B>, query: &str) {
    let pq = format!("{}?{query}", req.uri().path());
    let mut parts = req.uri().clone().into_parts();
    let Ok(pq) = PathAndQuery::try_from(pq) else {
        return;
    };
    parts.path_and_query = Some(pq);
    if let Ok(uri) = Uri::from_parts(parts) {
        *req.uri_mut() = uri;
    }
}

/// A SigV4 credential: `AK/YYYYMMDD/REGION/SERVICE/aws4_request`.
struct Credential<'a> {
    access_key: &'a str,
    date: &'a str,
    region: &'a str,
    service: &'a str,
}

impl<'a> Credential<'a> {
    fn parse(s: &'a str) -> Option<Self> {
        let mut it = s.split('/');
        let c = Credential {
            access_key: it.next()?,
            date: it.next()?,
            region: it.next()?,
            service: it.next()?,
        };
        (it.next() == Some("aws4_request") && it.next().is_none()).then_some(c)
    }

    fn with_region(&self, region: &str) -> String {
        format!(
            "{}/{}/{region}/{}/aws4_request",
            self.access_key, self.date, self.service
        )
    }
}

/// What a SigV4 request signs, however it carries its signature.
struct Signed {
    presigned: bool,
    credential: String,
    signed_headers: String,
    signature: String,
    amz_date: String,
}

impl Signed {
    fn of<B>(req: &Request<B>) -> Option<Self> {
        if let Some(query) = req.uri().query() {
            let qs: Vec<(String, String)> = query.split('&').map(form_decoded).collect();
            let get = |name: &str| {
                let mut found = qs.iter().filter(|(n, _)| n == name);
                let v = found.next().map(|(_, v)| v.clone());
                // s3s takes each parameter only once: leave doubles to it.
                v.filter(|_| found.next().is_none())
            };
            if let Some(signature) = get("X-Amz-Signature") {
                return (get("X-Amz-Algorithm")? == "AWS4-HMAC-SHA256").then_some(Self {
                    presigned: true,
                    credential: get("X-Amz-Credential")?,
                    signed_headers: get("X-Amz-SignedHeaders")?,
                    signature,
                    amz_date: get("X-Amz-Date")?,
                });
            }
        }
        let auth = req
            .headers()
            .get(http::header::AUTHORIZATION)?
            .to_str()
            .ok()?;
        let fields = auth.strip_prefix("AWS4-HMAC-SHA256 ")?;
        let mut credential = None;
        let mut signed_headers = None;
        let mut signature = None;
        for field in fields.split(',') {
            match field.trim().split_once('=')? {
                ("Credential", v) => credential = Some(v.to_string()),
                ("SignedHeaders", v) => signed_headers = Some(v.to_string()),
                ("Signature", v) => signature = Some(v.to_string()),
                _ => return None,
            }
        }
        Some(Self {
            presigned: false,
            credential: credential?,
            signed_headers: signed_headers?,
            signature: signature?,
            amz_date: req.headers().get("x-amz-date")?.to_str().ok()?.to_string(),
        })
    }
}

/// s3s parses a credential scope's region as `[a-z0-9-]+` after it has
/// verified the signature, and refuses anything else ("invalid credential
/// region"), with nothing to configure. A request scoped to a legacy
/// region name is therefore verified here, with the scope the client
/// signed, and only if it verifies is it signed again, with the same
/// secret, for `region`; s3s then verifies that signature as usual. A
/// request that does not verify here goes on as it came, and s3s refuses
/// it as it would any other. aws-chunked bodies sign every chunk with the
/// scope and cannot be signed again here: they go on as they came too.
async fn rescope_legacy_region<B>(req: &mut Request<B>, auth: &StoreAuth, region: &str) {
    let Some(signed) = Signed::of(req) else {
        return;
    };
    let Some(cred) = Credential::parse(&signed.credential) else {
        return;
    };
    if !LEGACY_REGIONS.contains(&cred.region) {
        return;
    }
    let payload = if signed.presigned {
        "UNSIGNED-PAYLOAD".to_string()
    } else {
        match req
            .headers()
            .get("x-amz-content-sha256")
            .and_then(|v| v.to_str().ok())
        {
            Some(p) if !p.starts_with("STREAMING-") => p.to_string(),
            _ => return,
        }
    };
    let Ok(Some((secret, _))) = auth.lookup(cred.access_key).await else {
        return;
    };
    let Ok(given) = hex::decode(&signed.signature) else {
        return;
    };
    let headers = canonical_headers(req, &signed.signed_headers);
    let mut qs: Vec<(String, String)> = match req.uri().query() {
        Some(q) => q
            .split('&')
            .filter(|p| !p.is_empty())
            .map(form_decoded)
            .collect(),
        None => Vec::new(),
    };
    if signed.presigned {
        qs.retain(|(n, _)| n != "X-Amz-Signature");
    }
    let decoded_path = urlencoding::decode(req.uri().path())
        .map(|p| uri_encode(&p, false))
        .unwrap_or_default();
    // s3s tries the path decoded and encoded again first, then as sent.
    let verified = [decoded_path.as_str(), req.uri().path()]
        .iter()
        .any(|path| {
            let canonical = canonical_request(req.method(), path, &qs, &headers, &payload);
            let key = signing_key(&secret, cred.date, cred.region, cred.service);
            let sts = string_to_sign(&signed.amz_date, &cred, cred.region, &canonical);
            hmac::verify(&key, sts.as_bytes(), &given).is_ok()
        });
    if !verified {
        tracing::debug!(
            access_key = cred.access_key,
            region = cred.region,
            "legacy-region signature does not verify; left to s3s"
        );
        return;
    }

    let new_credential = cred.with_region(region);
    if signed.presigned {
        for (n, v) in &mut qs {
            if n == "X-Amz-Credential" {
                v.clone_from(&new_credential);
            }
        }
    }
    let canonical = canonical_request(req.method(), &decoded_path, &qs, &headers, &payload);
    let key = signing_key(&secret, cred.date, region, cred.service);
    let sts = string_to_sign(&signed.amz_date, &cred, region, &canonical);
    let signature = hex::encode(hmac::sign(&key, sts.as_bytes()));

    if signed.presigned {
        let Some(query) = req.uri().query() else {
            return;
        };
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match form_decoded(pair).0.as_str() {
                "X-Amz-Credential" => {
                    format!("X-Amz-Credential={}", uri_encode(&new_credential, true))
                }
                "X-Amz-Signature" => format!("X-Amz-Signature={signature}"),
                _ => pair.to_string(),
            })
            .collect();
        set_query(req, &pairs.join("&"));
    } else {
        let value = format!(
            "AWS4-HMAC-SHA256 Credential={new_credential}, SignedHeaders={}, Signature={signature}",
            signed.signed_headers
        );
        if let Ok(v) = HeaderValue::from_str(&value) {
            req.headers_mut().insert(http::header::AUTHORIZATION, v);
        }
    }
}

/// The signed headers, as s3s canonicalises them: named in the order the
/// signature lists them, each value trimmed with inner whitespace
/// collapsed, repeated headers joined with commas; a named header the
/// request lacks is left out (HTTP/2 carries Host as the authority).
fn canonical_headers<B>(req: &Request<B>, signed: &str) -> Vec<(String, String)> {
    let mut names: Vec<&str> = signed.split(';').collect();
    names.sort_unstable();
    let mut out = Vec::new();
    for name in names {
        if name == "authorization" {
            continue;
        }
        let values: Vec<String> = req
            .headers()
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        if !values.is_empty() {
            out.push((name.to_string(), values.join(",")));
        } else if name == "host" && req.version() >= http::Version::HTTP_2 {
            if let Some(a) = req.uri().authority() {
                out.push((name.to_string(), a.as_str().to_string()));
            }
        }
    }
    out
}

fn canonical_request(
    method: &http::Method,
    path: &str,
    query: &[(String, String)],
    headers: &[(String, String)],
    payload: &str,
) -> String {
    let mut sorted: Vec<(String, String)> = query.to_vec();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut encoded: Vec<(String, String)> = sorted
        .iter()
        .map(|(n, v)| (uri_encode(n, true), uri_encode(v, true)))
        .collect();
    encoded.sort_by(|a, b| a.0.cmp(&b.0));
    let query = encoded
        .iter()
        .map(|(n, v)| format!("{n}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let mut canonical_headers = String::new();
    for (n, v) in headers {
        canonical_headers.push_str(&format!("{n}:{v}\n"));
    }
    let names = headers
        .iter()
        .map(|(n, _)| n.as_str())
        .collect::<Vec<_>>()
        .join(";");
    format!(
        "{}\n{path}\n{query}\n{canonical_headers}\n{names}\n{payload}",
        method.as_str()
    )
}

fn string_to_sign(amz_date: &str, cred: &Credential<'_>, region: &str, canonical: &str) -> String {
    format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{}/{region}/{}/aws4_request\n{}",
        cred.date,
        cred.service,
        hex::encode(Sha256::digest(canonical.as_bytes()))
    )
}

fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> hmac::Key {
    let step = |key: &[u8], data: &str| {
        hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data.as_bytes())
    };
    let k = step(format!("AWS4{secret}").as_bytes(), date);
    let k = step(k.as_ref(), region);
    let k = step(k.as_ref(), service);
    let k = step(k.as_ref(), "aws4_request");
    hmac::Key::new(hmac::HMAC_SHA256, k.as_ref())
}

/// SigV4's URI encoding: everything but unreserved characters (and `/`
/// unless `encode_slash`) as upper-case `%XX`.
fn uri_encode(s: &str, encode_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'~' | b'.' => {
                out.push(char::from(b))
            }
            b'/' if !encode_slash => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// AWS's published SigV4 example (GET Object with a Range header).
    #[test]
    fn canonicalisation_matches_aws_example() {
        let req = Request::get("https://examplebucket.s3.amazonaws.com/test.txt")
            .header("host", "examplebucket.s3.amazonaws.com")
            .header("range", "bytes=0-9")
            .header(
                "x-amz-content-sha256",
                "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            )
            .header("x-amz-date", "20130524T000000Z")
            .body(())
            .expect("a request");
        let headers = canonical_headers(&req, "host;range;x-amz-content-sha256;x-amz-date");
        let canonical = canonical_request(
            req.method(),
            "/test.txt",
            &[],
            &headers,
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        );
        let cred = Credential::parse("AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request")
            .expect("a credential");
        let key = signing_key(
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            cred.date,
            cred.region,
            cred.service,
        );
        let sts = string_to_sign("20130524T000000Z", &cred, cred.region, &canonical);
        assert_eq!(
            hex::encode(hmac::sign(&key, sts.as_bytes())),
            "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
    }

    #[test]
    fn malformed_presigned_signatures_become_wrong_ones() {
        let mut req = Request::get("/b/k?X-Amz-Signature=zz&X-Amz-Date=1")
            .body(())
            .expect("a request");
        mend_malformed_presigned_signature(&mut req);
        assert_eq!(
            req.uri().query(),
            Some(format!("X-Amz-Signature={NO_V4_SIGNATURE}&X-Amz-Date=1").as_str())
        );
        let mut req = Request::get("/b/k?Signature=%25FF&Expires=1")
            .body(())
            .expect("a request");
        mend_malformed_presigned_signature(&mut req);
        assert_eq!(
            req.uri().query(),
            Some(format!("Signature={NO_V2_SIGNATURE}&Expires=1").as_str())
        );
        let good = format!("/b/k?X-Amz-Signature={}", "a".repeat(64));
        let mut req = Request::get(good.as_str()).body(()).expect("a request");
        mend_malformed_presigned_signature(&mut req);
        assert_eq!(req.uri().to_string(), good);
    }
}
