//! A typed client for one storage node's RPC (see [`crate::node_api`]).
//!
//! One `NodeClient` per node; it is cheap to clone and keeps a pool of
//! connections: TLS 1.3 (see [`crate::tls`]) to the key the cluster map
//! pins for the node, carrying HTTP/1.1, or HTTP/2 when asked.

use crate::node_api::{self as api, MetaOp};
use crate::tls::{Identity, IdentityKey};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use metadata::db::Table;
use metadata::model::{ChunkReference, ClusterMap};
use metadata::{Record, ShardKey};
use std::time::Duration;

pub type BodyError = Box<dyn std::error::Error + Send + Sync>;
/// The request body type the client sends.
pub type RequestBody = BoxBody<Bytes, BodyError>;
/// What a node's server answers with: whole or streamed.
pub type ResponseBody = BoxBody<Bytes, BodyError>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RpcError {
    #[error("node {node} unreachable: {reason}")]
    Unreachable { node: String, reason: String },
    #[error("node {node} timed out after {after:?}")]
    Timeout { node: String, after: Duration },
    #[error("node refused our credentials: {0}")]
    Unauthorized(String),
    #[error("not found")]
    NotFound,
    #[error("node has insufficient storage: {0}")]
    InsufficientStorage(String),
    #[error("node rejected the request ({status}): {message}")]
    Rejected { status: u16, message: String },
    #[error("node failed ({status}): {message}")]
    Server { status: u16, message: String },
    #[error("malformed response from node: {0}")]
    BadResponse(String),
    /// The map gives no usable key for the node: nothing is sent to an
    /// address whose holder cannot be checked.
    #[error("node at {node} has no identity key in the cluster map: {reason}")]
    Unpinned { node: String, reason: String },
}

impl RpcError {
    /// Whether another attempt (or another node) might succeed: the node
    /// could not be reached or failed, rather than refusing the request.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            RpcError::Unreachable { .. } | RpcError::Timeout { .. } | RpcError::Server { .. }
        )
    }
}

#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Speak HTTP/2 (negotiated by ALPN) instead of HTTP/1.1.
    pub http2: bool,
    /// Who this client is to the nodes (its TLS client certificate); by
    /// default the process's ephemeral identity ([`Identity::ephemeral`]),
    /// which nodes holding a map accept only if the map lists it.
    pub identity: Option<Identity>,
    /// Limit on one call, body included.
    pub timeout: Duration,
    pub connect_timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            http2: false,
            identity: None,
            timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(5),
        }
    }
}

#[derive(Clone)]
pub struct NodeClient {
    /// `Err`: why no call can be made (no usable pin, no identity).
    http: Result<Client<HttpsConnector<HttpConnector>, RequestBody>, String>,
    pin: Option<IdentityKey>,
    /// `host:port`
    addr: String,
    timeout: Duration,
}

impl std::fmt::Debug for NodeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeClient")
            .field("addr", &self.addr)
            .finish()
    }
}

/// Response bodies larger than this are refused (a shard plus slack).
const MAX_RESPONSE_BYTES: usize = api::MAX_SHARD_BYTES as usize;

pub fn full_body(b: impl Into<Bytes>) -> RequestBody {
    Full::new(b.into()).map_err(|e| match e {}).boxed()
}

impl NodeClient {
    /// A client of the node at `addr` whose identity key is `pin` (as the
    /// cluster map carries it: 32 bytes; anything else makes every call
    /// fail with [`RpcError::Unpinned`]).
    pub fn new(addr: impl Into<String>, pin: &[u8], opts: ClientOptions) -> Self {
        let pin = IdentityKey::from_bytes(pin);
        let http = match pin {
            None => Err("no 32-byte key".to_string()),
            Some(pin) => Self::connect_with(pin, &opts),
        };
        Self {
            http,
            pin,
            addr: addr.into(),
            timeout: opts.timeout,
        }
    }

    fn connect_with(
        pin: IdentityKey,
        opts: &ClientOptions,
    ) -> Result<Client<HttpsConnector<HttpConnector>, RequestBody>, String> {
        let identity = match &opts.identity {
            Some(i) => i.clone(),
            None => Identity::ephemeral().map_err(|e| e.to_string())?,
        };
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(opts.connect_timeout));
        connector.enforce_http(false);
        let https = HttpsConnectorBuilder::new()
            .with_tls_config(identity.client_config(pin))
            .https_only();
        let https = if opts.http2 {
            https.enable_http2().wrap_connector(connector)
        } else {
            https.enable_http1().wrap_connector(connector)
        };
        Ok(Client::builder(TokioExecutor::new())
            .http2_only(opts.http2)
            .pool_idle_timeout(Duration::from_secs(30))
            .build(https))
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The node's key this client checks, if the map gave one.
    pub fn pin(&self) -> Option<IdentityKey> {
        self.pin
    }

    /// A request for `path_and_query` on this node; a shard put also
    /// declares `shard_checksum` (see [`api::HEADER_SHARD_CHECKSUM`]).
    /// Public so tests and tools can send what the typed calls would not
    /// (streamed or cut bodies, a checksum the body does not carry).
    pub fn request(
        &self,
        method: Method,
        path_and_query: &str,
        shard_checksum: Option<[u8; 32]>,
        content_len: u64,
        body: RequestBody,
    ) -> Result<Request<RequestBody>, RpcError> {
        let mut b = Request::builder()
            .method(method)
            .uri(format!("https://{}{}", self.addr, path_and_query))
            .header(http::header::CONTENT_LENGTH, content_len);
        if let Some(c) = shard_checksum {
            b = b.header(api::HEADER_SHARD_CHECKSUM, hex::encode(c));
        }
        b.body(body)
            .map_err(|e| RpcError::BadResponse(format!("cannot build request: {e}")))
    }

    /// Send a request as is; the caller reads the response.
    pub async fn send(&self, req: Request<RequestBody>) -> Result<Response<Incoming>, RpcError> {
        tokio::time::timeout(self.timeout, self.send_untimed(req))
            .await
            .map_err(|_| self.timed_out())?
    }

    async fn send_untimed(
        &self,
        req: Request<RequestBody>,
    ) -> Result<Response<Incoming>, RpcError> {
        let http = self.http.as_ref().map_err(|reason| RpcError::Unpinned {
            node: self.addr.clone(),
            reason: reason.clone(),
        })?;
        http.request(req).await.map_err(|e| RpcError::Unreachable {
            node: self.addr.clone(),
            reason: error_chain(&e),
        })
    }

    fn timed_out(&self) -> RpcError {
        RpcError::Timeout {
            node: self.addr.clone(),
            after: self.timeout,
        }
    }

    /// Send, check the status and collect the response body, all within
    /// the call's timeout.
    async fn call(
        &self,
        method: Method,
        path_and_query: &str,
        body: Bytes,
    ) -> Result<Bytes, RpcError> {
        self.call_declaring(method, path_and_query, None, body)
            .await
    }

    async fn call_declaring(
        &self,
        method: Method,
        path_and_query: &str,
        shard_checksum: Option<[u8; 32]>,
        body: Bytes,
    ) -> Result<Bytes, RpcError> {
        let len = body.len() as u64;
        let req = self.request(method, path_and_query, shard_checksum, len, full_body(body))?;
        let work = async {
            let resp = self.send_untimed(req).await?;
            read_response(resp).await
        };
        tokio::time::timeout(self.timeout, work)
            .await
            .map_err(|_| self.timed_out())?
    }

    async fn call_record<Resp: Record>(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
    ) -> Result<Resp, RpcError> {
        let bytes = self.call(method, path, body).await?;
        Resp::decode_record(&bytes).map_err(|e| RpcError::BadResponse(e.to_string()))
    }

    /// Start a job task on this node (see [`crate::task`]). The response
    /// is returned once its head arrives: its body is the task's frame
    /// stream, which lasts as long as the task, so only sending is under
    /// the call's timeout. A failure status is read and returned as an
    /// error.
    pub async fn run_task(
        &self,
        req: &crate::task::TaskRequest,
    ) -> Result<Response<Incoming>, RpcError> {
        let body = Bytes::from(req.encode_record());
        let path = crate::task::TASK_RUN;
        let len = body.len() as u64;
        let request = self.request(Method::POST, path, None, len, full_body(body))?;
        self.start_task(request).await
    }

    /// Start a task whose request streams (see [`crate::task`]): `frames`
    /// yields a `FRAME_REQUEST`, then the inputs as `FRAME_INPUT`s while
    /// the task already runs; its end ends the program's input.
    pub async fn run_task_streaming(
        &self,
        frames: tokio::sync::mpsc::Receiver<Result<Bytes, BodyError>>,
    ) -> Result<Response<Incoming>, RpcError> {
        let body = http_body_util::BodyExt::boxed(ChannelBody::new(frames));
        let mut request = self.request(Method::POST, crate::task::TASK_RUN, None, 0, body)?;
        // Its length is known only at its end: sent chunked.
        request.headers_mut().remove(http::header::CONTENT_LENGTH);
        self.start_task(request).await
    }

    async fn start_task(
        &self,
        request: Request<RequestBody>,
    ) -> Result<Response<Incoming>, RpcError> {
        let resp = self.send(request).await?;
        if !resp.status().is_success() {
            return Err(read_response(resp)
                .await
                .err()
                .unwrap_or(RpcError::BadResponse("unexpected status".into())));
        }
        Ok(resp)
    }

    // --- shards ---------------------------------------------------------

    /// Store a shard. The node verifies it before it acknowledges.
    pub async fn put_shard(&self, key: &ShardKey, shard: Bytes) -> Result<(), RpcError> {
        let checksum = api::shard_checksum(&shard);
        self.call_declaring(Method::PUT, &api::shard_path(key), Some(checksum), shard)
            .await
            .map(drop)
    }

    /// A whole shard (`None`) or `len` bytes at `offset`.
    pub async fn get_shard(
        &self,
        key: &ShardKey,
        range: Option<(u64, u64)>,
    ) -> Result<Bytes, RpcError> {
        let mut path = api::shard_path(key);
        if let Some((offset, len)) = range {
            path.push_str(&format!("?offset={offset}&len={len}"));
        }
        self.call(Method::GET, &path, Bytes::new()).await
    }

    /// `true` if the shard was there.
    pub async fn delete_shard(&self, key: &ShardKey) -> Result<bool, RpcError> {
        match self
            .call(Method::DELETE, &api::shard_path(key), Bytes::new())
            .await
        {
            Ok(_) => Ok(true),
            Err(RpcError::NotFound) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// For each key, the stored shard's length, or 0 if the node lacks it.
    pub async fn has_shards(&self, keys: &[ShardKey]) -> Result<Vec<u64>, RpcError> {
        let body = api::ShardList::new(keys).encode_record();
        let r: api::ShardLengths = self
            .call_record(Method::POST, api::SHARDS_HAVE, body.into())
            .await?;
        expect_len(r.lens, keys.len())
    }

    /// A storage audit challenge: the node's bao proof of `len` bytes at
    /// `offset` of the shard's checksummed bytes, unverified (the caller
    /// checks it with `codec::audit::verify_slice` against the checksum it
    /// trusts, never one this node reports). `NotFound` if it lacks the
    /// shard.
    pub async fn prove_shard(
        &self,
        key: &ShardKey,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>, RpcError> {
        let body = api::ProveRequest::new(key, offset, len).encode_record();
        let r: api::ShardProof = self
            .call_record(Method::POST, api::SHARDS_PROVE, body.into())
            .await?;
        Ok(r.proof)
    }

    /// Ask the node to reconcile these shards' chunks soon instead of at
    /// its next pass; `verify` when they were read and found bad.
    pub async fn repair_hint(&self, keys: &[ShardKey], verify: bool) -> Result<(), RpcError> {
        let body = api::RepairHints::new(keys, verify).encode_record();
        self.call(Method::POST, api::REPAIR_HINT, body.into())
            .await
            .map(drop)
    }

    pub async fn delete_shards(&self, keys: &[ShardKey]) -> Result<Vec<bool>, RpcError> {
        let body = api::ShardList::new(keys).encode_record();
        let r: api::Deleted = self
            .call_record(Method::POST, api::SHARDS_DELETE, body.into())
            .await?;
        expect_len(r.deleted, keys.len())
    }

    // --- metadata records -----------------------------------------------

    pub async fn meta_get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, RpcError> {
        match self
            .call(Method::GET, &api::meta_path(table, key), Bytes::new())
            .await
        {
            Ok(b) => Ok(Some(b.to_vec())),
            Err(RpcError::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn meta_put(&self, table: Table, key: &[u8], value: Vec<u8>) -> Result<(), RpcError> {
        self.call(Method::PUT, &api::meta_path(table, key), value.into())
            .await
            .map(drop)
    }

    pub async fn meta_delete(&self, table: Table, key: &[u8]) -> Result<(), RpcError> {
        self.call(Method::DELETE, &api::meta_path(table, key), Bytes::new())
            .await
            .map(drop)
    }

    /// Apply every op or none.
    pub async fn meta_batch(&self, ops: Vec<MetaOp>) -> Result<(), RpcError> {
        let body = api::MetaBatch { ops }.encode_record();
        self.call(Method::POST, api::META_BATCH, body.into())
            .await
            .map(drop)
    }

    pub async fn meta_scan(
        &self,
        table: Table,
        start: &[u8],
        end: Option<&[u8]>,
        limit: u32,
    ) -> Result<api::ScanPage, RpcError> {
        let req = api::ScanRequest {
            table: api::table_to_wire(table),
            start: start.to_vec(),
            end: end.map(<[u8]>::to_vec),
            limit,
        };
        self.call_record(Method::POST, api::META_SCAN, req.encode_record().into())
            .await
    }

    /// Keys of `table` under `prefix` written since `since` (feed id,
    /// position) of the node's change feed (see [`api::ChangesRequest`]).
    pub async fn meta_changes(
        &self,
        table: Table,
        prefix: &[u8],
        since: Option<(u64, u64)>,
        limit: u32,
    ) -> Result<api::ChangesReply, RpcError> {
        let req = api::ChangesRequest {
            table: api::table_to_wire(table),
            prefix: prefix.to_vec(),
            feed: since.map(|s| s.0),
            since: since.map_or(0, |s| s.1),
            limit,
        };
        self.call_record(Method::POST, api::META_CHANGES, req.encode_record().into())
            .await
    }

    /// Digests of consecutive ranges (see [`api::DigestRequest`]).
    pub async fn meta_digest(
        &self,
        table: Table,
        starts: Vec<Vec<u8>>,
        end: Option<Vec<u8>>,
    ) -> Result<Vec<api::RangeDigest>, RpcError> {
        let n = starts.len();
        let req = api::DigestRequest {
            table: api::table_to_wire(table),
            starts,
            end,
        };
        let r: api::DigestReply = self
            .call_record(Method::POST, api::META_DIGEST, req.encode_record().into())
            .await?;
        expect_len(r.ranges, n)
    }

    pub async fn meta_cas(
        &self,
        table: Table,
        key: &[u8],
        expected: Option<Vec<u8>>,
        new: Option<Vec<u8>>,
    ) -> Result<api::CasResult, RpcError> {
        let req = api::CasRequest {
            table: api::table_to_wire(table),
            key: key.to_vec(),
            expected,
            new,
        };
        self.call_record(Method::POST, api::META_CAS, req.encode_record().into())
            .await
    }

    // --- chunk references -------------------------------------------------

    pub async fn refs_add(&self, refs: Vec<ChunkReference>) -> Result<(), RpcError> {
        let body = api::RefList { refs }.encode_record();
        self.call(Method::POST, api::REFS_ADD, body.into())
            .await
            .map(drop)
    }

    /// Remove references (matched by chunk id and referrer); removing one
    /// that is not there is not an error.
    pub async fn refs_remove(&self, refs: Vec<ChunkReference>) -> Result<(), RpcError> {
        let body = api::RefList { refs }.encode_record();
        self.call(Method::POST, api::REFS_REMOVE, body.into())
            .await
            .map(drop)
    }

    pub async fn refs_list(&self, query: api::RefQuery) -> Result<api::RefPage, RpcError> {
        self.call_record(Method::POST, api::REFS_LIST, query.encode_record().into())
            .await
    }

    // --- node -----------------------------------------------------------

    pub async fn status(&self) -> Result<api::NodeStatus, RpcError> {
        self.call_record(Method::GET, api::STATUS, Bytes::new())
            .await
    }

    pub async fn get_map(&self) -> Result<Option<ClusterMap>, RpcError> {
        match self.call_record(Method::GET, api::MAP, Bytes::new()).await {
            Ok(m) => Ok(Some(m)),
            Err(RpcError::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Offer a map; the node keeps it only if its epoch is newer.
    pub async fn put_map(&self, map: &ClusterMap) -> Result<api::MapAccepted, RpcError> {
        self.call_record(Method::PUT, api::MAP, map.encode_record().into())
            .await
    }

    /// Ask a node to sign `map`, a liveness change, with its identity; it
    /// refuses unless it sees the same up and down itself.
    pub async fn map_vote(
        &self,
        map: &ClusterMap,
    ) -> Result<metadata::model::LivenessVote, RpcError> {
        self.call_record(Method::POST, api::MAP_VOTE, map.encode_record().into())
            .await
    }
}

/// A body fed through a channel: for streaming a body produced elsewhere
/// (a blocking reader, a test pausing mid-stream).
pub struct ChannelBody {
    rx: tokio::sync::mpsc::Receiver<Result<Bytes, BodyError>>,
}

impl ChannelBody {
    pub fn new(rx: tokio::sync::mpsc::Receiver<Result<Bytes, BodyError>>) -> Self {
        Self { rx }
    }
}

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BodyError>>> {
        self.rx
            .poll_recv(cx)
            .map(|o| o.map(|r| r.map(http_body::Frame::data)))
    }
}

fn expect_len<T>(v: Vec<T>, n: usize) -> Result<Vec<T>, RpcError> {
    if v.len() == n {
        Ok(v)
    } else {
        Err(RpcError::BadResponse(format!(
            "{} answers for {n} keys",
            v.len()
        )))
    }
}

/// Collect a response body, or turn an error status into a [`RpcError`].
pub async fn read_response(resp: Response<Incoming>) -> Result<Bytes, RpcError> {
    let status = resp.status();
    let body = Limited::new(resp.into_body(), MAX_RESPONSE_BYTES)
        .collect()
        .await
        .map_err(|e| RpcError::BadResponse(format!("reading body: {e}")))?
        .to_bytes();
    if status.is_success() {
        return Ok(body);
    }
    let message = String::from_utf8_lossy(&body[..body.len().min(1024)]).into_owned();
    Err(match status {
        StatusCode::UNAUTHORIZED => RpcError::Unauthorized(message),
        StatusCode::NOT_FOUND => RpcError::NotFound,
        StatusCode::INSUFFICIENT_STORAGE => RpcError::InsufficientStorage(message),
        s if s.is_client_error() => RpcError::Rejected {
            status: s.as_u16(),
            message,
        },
        s => RpcError::Server {
            status: s.as_u16(),
            message,
        },
    })
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
