//! The HTTP client the S3 and WebDAV adapters share: hyper-util's pooled
//! client on plain HTTP, whole bodies in and out.

use bytes::Bytes;
use http::{HeaderMap, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

pub fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A whole answer.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Sends one request and reads its whole answer. A transport failure is
/// a panic: the suite runs on loopback against servers it started.
pub async fn send(
    client: &HttpClient,
    method: Method,
    uri: &str,
    headers: &[(String, String)],
    body: Bytes,
) -> Reply {
    let mut b = Request::builder().method(method.clone()).uri(uri);
    // S3 refuses a PUT or POST without a length, and hyper leaves it out
    // for empty bodies.
    if method != Method::GET && method != Method::HEAD {
        b = b.header(http::header::CONTENT_LENGTH, body.len());
    }
    for (k, v) in headers {
        b = b.header(k.as_str(), v.as_str());
    }
    let req = b.body(Full::new(body)).expect("a valid request");
    let resp = client
        .request(req)
        .await
        .unwrap_or_else(|e| panic!("{method} {uri}: {e:?}"));
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .unwrap_or_else(|e| panic!("{method} {uri}: reading the body: {e}"))
        .to_bytes();
    Reply {
        status,
        headers,
        body,
    }
}

/// Children of `el` named `name` (local name; namespaces ignored).
pub fn children<'a>(
    el: &'a xmltree::Element,
    name: &'a str,
) -> impl Iterator<Item = &'a xmltree::Element> + 'a {
    el.children
        .iter()
        .filter_map(|n| n.as_element())
        .filter(move |e| e.name == name)
}

/// The text of `el`'s child `name`, if any.
pub fn child_text(el: &xmltree::Element, name: &str) -> Option<String> {
    children(el, name)
        .next()
        .and_then(|c| c.get_text())
        .map(|t| t.into_owned())
}
