//! Real `gridstore node` processes on 127.0.0.1 for the integration tests,
//! and in-process grids of nodes ([`grid`]).
#![allow(dead_code)]

pub mod exposition;
pub mod grid;
pub mod objects;
pub mod server;
pub mod shards;

use ::grid::node_api as api;
use ::grid::node_client::{full_body, BodyError, ChannelBody, RequestBody};
use ::grid::tls::{Identity, IdentityKey};
use ::grid::{ClientOptions, NodeClient};
use bytes::Bytes;
use codec::{DomainKey, ErasureParams, SealConfig, SealedChunk, Sealer};
use http::{Method, Request};
use http_body_util::BodyExt;
use metadata::ShardKey;
use rand::{RngCore, SeedableRng};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// The master key of the tests' object stores.
pub fn master() -> cluster::MasterKey {
    cluster::MasterKey::from_bytes([42; 32])
}

/// The owner's map key the tests sign their maps with (the master key's).
pub fn owner() -> std::sync::Arc<::grid::signed_map::OwnerKey> {
    master().owner_key()
}

/// `map` signed by the tests' owner.
pub fn signed_map(map: metadata::model::ClusterMap) -> metadata::model::ClusterMap {
    owner().signed(map)
}

/// Who the tests' clients are to the nodes: the process's ephemeral
/// identity, which `ClientOptions::default()` presents.
pub fn me() -> Identity {
    Identity::ephemeral().unwrap()
}

/// The clients a test map lists: this process.
pub fn test_clients() -> Vec<metadata::model::ClientIdentity> {
    vec![me().as_gateway("tests")]
}

/// `per_site` node processes on each of `sites` sites (ids `s{site}n{j}`,
/// sites `site-{site}`), each with `extra` in its config and pinned to its
/// first port (so a restart keeps the map's address), and the signed map
/// naming them, already handed to every one.
pub async fn proc_grid(
    root: &Path,
    sites: usize,
    per_site: usize,
    extra: &str,
) -> (Vec<NodeProc>, metadata::model::ClusterMap) {
    let mut procs = Vec::new();
    let mut nodes = Vec::new();
    for s in 0..sites {
        for j in 0..per_site {
            let id = format!("s{s}n{j}");
            let site = format!("site-{s}");
            let p = NodeProc::start_as(&root.join(&id), &id, &site, extra);
            p.pin_port();
            nodes.push(metadata::model::Node {
                id,
                addr: p.addr.clone(),
                site,
                capacity_bytes: 1 << 40,
                state: metadata::model::NodeState::Up as i32,
                key: p.key.0.to_vec(),
                ..Default::default()
            });
            procs.push(p);
        }
    }
    let map = signed_map(metadata::model::ClusterMap {
        epoch: 1,
        nodes,
        clients: test_clients(),
        ..Default::default()
    });
    for p in &procs {
        assert!(p.client().put_map(&map).await.unwrap().accepted);
    }
    (procs, map)
}

pub struct NodeProc {
    child: Option<Child>,
    pub id: String,
    pub addr: String,
    pub dir: PathBuf,
    pub config: PathBuf,
    /// Its identity key, read from its data directory.
    pub key: IdentityKey,
}

impl NodeProc {
    /// Start a node on a fresh port with its data in `dir/data`; `extra`
    /// is appended to the config (quota and the like).
    pub fn start(dir: &Path, extra: &str) -> NodeProc {
        Self::start_as(dir, "n1", "farm-a", extra)
    }

    /// A node with a given id and site.
    pub fn start_as(dir: &Path, id: &str, site: &str, extra: &str) -> NodeProc {
        std::fs::create_dir_all(dir).unwrap();
        let config = dir.join("node.toml");
        std::fs::write(
            &config,
            format!(
                "node_id = {id:?}\nsite = {site:?}\nlisten = \"127.0.0.1:0\"\n\
                 data_dir = {:?}\nshutdown_grace_secs = 20\n{extra}\n",
                dir.join("data")
            ),
        )
        .unwrap();
        Self::spawn(dir, config, id)
    }

    fn spawn(dir: &Path, config: PathBuf, id: &str) -> NodeProc {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("node.log"))
            .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_gridstore"))
            .args(["node", "--config"])
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let announce = format!("gridstore node {id} listening on ");
        let Some(addr) = line.trim().strip_prefix(announce.as_str()) else {
            let _ = child.kill();
            panic!(
                "node did not start: {line:?}\n{}",
                std::fs::read_to_string(dir.join("node.log")).unwrap_or_default()
            );
        };
        let key = Identity::load(&dir.join("data").join("identity"))
            .unwrap()
            .key();
        NodeProc {
            key,
            id: id.to_owned(),
            addr: addr.to_owned(),
            child: Some(child),
            dir: dir.to_owned(),
            config,
        }
    }

    pub fn client(&self) -> NodeClient {
        NodeClient::new(&self.addr, &self.key.0, ClientOptions::default())
    }

    pub fn client_h2(&self) -> NodeClient {
        let opts = ClientOptions {
            http2: true,
            ..ClientOptions::default()
        };
        NodeClient::new(&self.addr, &self.key.0, opts)
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(self.pid(), sig) }, 0);
    }

    /// Wait for the process to exit (at most `limit`).
    pub fn wait(&mut self, limit: Duration) -> ExitStatus {
        let child = self.child.as_mut().unwrap();
        let deadline = Instant::now() + limit;
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                self.child = None;
                return s;
            }
            assert!(Instant::now() < deadline, "node did not exit in {limit:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn kill9(&mut self) {
        self.signal(libc::SIGKILL);
        self.wait(Duration::from_secs(10));
    }

    /// Start again on the same data directory (a new port).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop the node first");
        let again = Self::spawn(&self.dir, self.config.clone(), &self.id.clone());
        *self = again;
    }

    /// Keep this node's port across restarts (a cluster map names it).
    pub fn pin_port(&self) {
        let text = std::fs::read_to_string(&self.config).unwrap();
        let pinned = text.replace(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = {:?}", self.addr),
        );
        std::fs::write(&self.config, pinned).unwrap();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("node.log")).unwrap_or_default()
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut r = rand::rngs::StdRng::seed_from_u64(seed);
    let mut v = vec![0u8; len];
    r.fill_bytes(&mut v);
    v
}

/// A real sealed chunk of `len` random bytes.
pub fn sealed(len: usize, k: usize, m: usize, seed: u64) -> SealedChunk {
    let mut sealer = Sealer::new(SealConfig::new(ErasureParams::new(k, m).unwrap())).unwrap();
    sealer
        .seal(&DomainKey::new([7; 32]), &random_bytes(len, seed))
        .unwrap()
}

pub fn shard_key(c: &SealedChunk, i: usize) -> ShardKey {
    ShardKey::new(c.id().0, i).unwrap()
}

/// A request as the typed client would make it (a shard put declaring
/// the checksum its body carries), for tests that then send it with a
/// body the typed client never would (cut, paused, another one).
pub fn request(addr: &str, method: Method, path: &str, body: &[u8]) -> http::request::Builder {
    let mut b = Request::builder()
        .method(method.clone())
        .uri(format!("https://{addr}{path}"))
        .header(http::header::CONTENT_LENGTH, body.len());
    if method == Method::PUT && path.starts_with(api::SHARDS) {
        b = b.header(
            api::HEADER_SHARD_CHECKSUM,
            hex::encode(api::shard_checksum(body)),
        );
    }
    b
}

pub fn body(b: impl Into<Bytes>) -> RequestBody {
    full_body(b)
}

/// A request body fed by hand, to cut a stream or pause it mid-way.
pub fn channel_body() -> (mpsc::Sender<Result<Bytes, BodyError>>, RequestBody) {
    let (tx, rx) = mpsc::channel(4);
    (tx, ChannelBody::new(rx).boxed())
}

/// A GET over TLS to the node at `addr` whose key is `pin`, showing no
/// client certificate (as a monitoring probe would).
pub async fn probe_get(addr: &str, pin: IdentityKey, path: &str) -> (u16, String) {
    probe_call(addr, pin, Method::GET, path, Bytes::new()).await
}

/// Any call over TLS to the node at `addr` whose key is `pin`, showing no
/// client certificate.
pub async fn probe_call(
    addr: &str,
    pin: IdentityKey,
    method: Method,
    path: &str,
    payload: Bytes,
) -> (u16, String) {
    let mut tcp = hyper_util::client::legacy::connect::HttpConnector::new();
    tcp.enforce_http(false);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(::grid::tls::probe_config(pin))
        .https_only()
        .enable_http1()
        .wrap_connector(tcp);
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build::<_, RequestBody>(https);
    let req = request(addr, method, path, &payload)
        .body(body(payload))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

/// Status code of a raw request's response.
pub async fn status_of(client: &NodeClient, req: Request<RequestBody>) -> u16 {
    client.send(req).await.unwrap().status().as_u16()
}
