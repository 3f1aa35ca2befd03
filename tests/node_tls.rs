//! TLS on node RPC against real `gridstore node` processes on 127.0.0.1:
//! clients must show a certificate the node's cluster map lists, and must
//! find the node's certificate to be the one the map pins.

mod support;

use ::grid::node_api as api;
use ::grid::tls::{Identity, IdentityKey};
use ::grid::{ClientOptions, NodeClient, RpcError};
use metadata::model::{ClusterMap, Node, NodeState};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use std::path::Path;
use std::sync::Arc;
use support::*;

fn entry(n: &NodeProc) -> Node {
    Node {
        id: n.id.clone(),
        addr: n.addr.clone(),
        site: "farm-a".into(),
        capacity_bytes: 1 << 30,
        state: NodeState::Up as i32,
        key: n.key.0.to_vec(),
        untrusted_reason: String::new(),
    }
}

fn identity_files(n: &NodeProc) -> (Vec<u8>, Vec<u8>) {
    let dir = n.dir.join("data").join("identity");
    (
        std::fs::read(dir.join("cert.der")).unwrap(),
        std::fs::read(dir.join("key.der")).unwrap(),
    )
}

fn client_as(n: &NodeProc, identity: Identity) -> NodeClient {
    let opts = ClientOptions {
        identity: Some(identity),
        ..ClientOptions::default()
    };
    NodeClient::new(&n.addr, &n.key.0, opts)
}

/// Whether a call failed at the connection (refused by TLS), not by a
/// status the node answered with.
fn refused_by_tls(r: Result<impl std::fmt::Debug, RpcError>) -> String {
    match r {
        Err(RpcError::Unreachable { reason, .. }) => reason,
        other => panic!("expected a refused connection, got {other:?}"),
    }
}

/// Two nodes under one map that lists them and this test process.
async fn two_nodes(root: &Path) -> (NodeProc, NodeProc) {
    let a = NodeProc::start_as(&root.join("a"), "a", "farm-a", "");
    let b = NodeProc::start_as(&root.join("b"), "b", "farm-a", "");
    let map = signed_map(ClusterMap {
        epoch: 1,
        nodes: vec![entry(&a), entry(&b)],
        clients: test_clients(),
        ..ClusterMap::default()
    });
    for n in [&a, &b] {
        assert!(n.client().put_map(&map).await.unwrap().accepted);
    }
    (a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_identity_printed_is_the_one_the_node_serves_with() {
    let root = tempfile::tempdir().unwrap();
    let a = NodeProc::start_as(&root.path().join("a"), "a", "farm-a", "");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gridstore"))
        .args(["node", "--identity", "--config"])
        .arg(&a.config)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let printed = String::from_utf8(out.stdout).unwrap();
    assert_eq!(IdentityKey::from_hex(printed.trim()).unwrap(), a.key);
    assert!(a.log().contains(&a.key.to_hex()), "logged at start");
    // Kept across restarts: the map's pin stays true.
    let mut a = a;
    a.signal(libc::SIGTERM);
    a.wait(std::time::Duration::from_secs(20));
    let before = a.key;
    a.restart();
    assert_eq!(a.key, before);
    a.client().status().await.unwrap();
    use std::os::unix::fs::PermissionsExt;
    let key_file = a.dir.join("data").join("identity").join("key.der");
    let mode = std::fs::metadata(key_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the private key is the owner's only");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_the_map_does_not_list_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let a = NodeProc::start_as(&root.path().join("a"), "a", "farm-a", "");
    // Before any map, any certificate will do (the first map must come
    // from somewhere; the request is still signed).
    let stranger = client_as(&a, Identity::generate().unwrap());
    stranger.status().await.unwrap();

    let b = NodeProc::start_as(&root.path().join("b"), "b", "farm-a", "");
    let map = signed_map(ClusterMap {
        epoch: 1,
        nodes: vec![entry(&a), entry(&b)],
        clients: test_clients(),
        ..ClusterMap::default()
    });
    a.client().put_map(&map).await.unwrap();
    // A new connection: the one above was admitted under no map.
    let stranger = client_as(&a, Identity::generate().unwrap());
    let why = refused_by_tls(stranger.status().await);
    assert!(why.contains("AccessDenied"), "{why}");
    assert!(a.log().contains("refused a client"), "{}", a.log());
    // Nothing else gets through either: with no shared secret left, the
    // certificate is all a caller has to show.
    let chunk = sealed(20_000, 2, 1, 3);
    let k = shard_key(&chunk, 0);
    a.client()
        .put_shard(&k, chunk.shard(0).into())
        .await
        .unwrap();
    let fresh = shard_key(&chunk, 1);
    refused_by_tls(stranger.put_shard(&fresh, chunk.shard(1).into()).await);
    refused_by_tls(stranger.delete_shard(&k).await);
    refused_by_tls(stranger.get_shard(&k, None).await);
    refused_by_tls(stranger.get_map().await);
    assert_eq!(a.client().has_shards(&[k, fresh]).await.unwrap()[1], 0);
    assert_ne!(a.client().has_shards(&[k]).await.unwrap()[0], 0);
    // Listed ones get in: this process, and a peer node with its own
    // identity (as repair and heartbeats call).
    a.client().status().await.unwrap();
    let (cert, key) = identity_files(&b);
    let as_b = client_as(&a, Identity::from_der(cert, key).unwrap());
    assert_eq!(as_b.status().await.unwrap().node_id, "a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_showing_another_nodes_certificate_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let (a, b) = two_nodes(root.path()).await;
    // b's certificate (which a's map lists) with a key that is not b's:
    // the handshake signature cannot match the certificate.
    let (b_cert, _) = identity_files(&b);
    let other = tempfile::tempdir().unwrap();
    Identity::load_or_create(other.path()).unwrap();
    let wrong_key = std::fs::read(other.path().join("key.der")).unwrap();
    let signer = ::grid::tls::provider()
        .key_provider
        .load_private_key(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(wrong_key)))
        .unwrap();
    let forged = CertifiedKey::new(vec![CertificateDer::from(b_cert)], signer);
    let tls = rustls::ClientConfig::builder_with_provider(::grid::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer))
        .with_client_cert_resolver(Arc::new(SingleCertAndKey::from(forged)));
    // TLS 1.3 clients finish their side of the handshake first; the
    // server's verdict on the client's signature arrives as an alert on
    // the first read. Nothing is written, so nothing unread on the server
    // turns its close into a reset that could swallow the alert.
    let tcp = tokio::net::TcpStream::connect(&a.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("gridstore").unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
    let verdict = match connector.connect(name, tcp).await {
        Err(e) => e.to_string(),
        Ok(mut stream) => {
            use tokio::io::AsyncReadExt;
            let mut buf = [0u8; 64];
            match stream.read(&mut buf).await {
                Err(e) => e.to_string(),
                Ok(n) => panic!("a forged certificate was accepted ({n} bytes read)"),
            }
        }
    };
    // The server's answer to a handshake signature that does not verify.
    assert!(verdict.contains("DecryptError"), "{verdict}");
    // And without any certificate: probes only.
    let (status, _) = probe_get(&a.addr, a.key, "/health").await;
    assert_eq!(status, 200);
    let (status, text) = probe_get(&a.addr, a.key, api::STATUS).await;
    assert_eq!(status, 401, "{text}");
    assert!(text.contains("client certificate"), "{text}");
}

/// Every call of the protocol (one request each, bodies that would do
/// something were they let in), as (method, path, body).
fn every_call(chunk: &codec::SealedChunk) -> Vec<(http::Method, String, Vec<u8>)> {
    use ::grid::node_api::{RefQuery, ShardList};
    use http::Method;
    use metadata::db::Table;
    use metadata::Record;
    let k0 = shard_key(chunk, 0);
    let k1 = shard_key(chunk, 1);
    let keys = ShardList::new(&[k0]).encode_record();
    let meta = api::meta_path(Table::Buckets, b"k");
    vec![
        (Method::PUT, api::shard_path(&k1), chunk.shard(1)),
        (Method::GET, api::shard_path(&k0), vec![]),
        (Method::DELETE, api::shard_path(&k0), vec![]),
        (Method::POST, api::SHARDS_HAVE.into(), keys.clone()),
        (Method::POST, api::SHARDS_DELETE.into(), keys.clone()),
        (Method::POST, api::SHARDS_PROVE.into(), vec![]),
        (Method::GET, meta.clone(), vec![]),
        (Method::PUT, meta.clone(), b"x".to_vec()),
        (Method::DELETE, meta, vec![]),
        (Method::POST, api::META_BATCH.into(), vec![]),
        (Method::POST, api::META_SCAN.into(), vec![]),
        (Method::POST, api::META_CAS.into(), vec![]),
        (Method::POST, api::META_DIGEST.into(), vec![]),
        (Method::POST, api::META_CHANGES.into(), vec![]),
        (Method::POST, api::REFS_ADD.into(), vec![]),
        (Method::POST, api::REFS_REMOVE.into(), vec![]),
        (
            Method::POST,
            api::REFS_LIST.into(),
            RefQuery::default().encode_record(),
        ),
        (Method::GET, api::STATUS.into(), vec![]),
        (Method::GET, api::MAP.into(), vec![]),
        (Method::PUT, api::MAP.into(), vec![]),
        (Method::POST, api::MAP_VOTE.into(), vec![]),
        (Method::POST, api::REPAIR_HINT.into(), keys),
        (Method::POST, ::grid::task::TASK_RUN.into(), vec![]),
        // Unknown calls too: a 404 would tell a stranger what exists.
        (Method::GET, "/v1/nope".into(), vec![]),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_client_certificate_only_probes_are_answered() {
    let root = tempfile::tempdir().unwrap();
    let (a, _b) = two_nodes(root.path()).await;
    // And a node before its first map, when it takes any certificate.
    let lone = NodeProc::start_as(&root.path().join("lone"), "lone", "farm-a", "");
    let chunk = sealed(20_000, 2, 1, 5);
    let k0 = shard_key(&chunk, 0);
    for n in [&a, &lone] {
        let c = n.client();
        c.put_shard(&k0, chunk.shard(0).into()).await.unwrap();
        for (method, path, payload) in every_call(&chunk) {
            let (status, text) =
                probe_call(&n.addr, n.key, method.clone(), &path, payload.into()).await;
            assert_eq!(status, 401, "{} {method} {path}: {text}", n.id);
            assert!(text.contains("client certificate"), "{text}");
        }
        for path in [api::HEALTH, api::METRICS] {
            assert_eq!(probe_get(&n.addr, n.key, path).await.0, 200, "{path}");
        }
        // Nothing changed: the shard is there, and only it.
        let held = c.has_shards(&[k0, shard_key(&chunk, 1)]).await.unwrap();
        assert_eq!(held, vec![chunk.shard(0).len() as u64, 0], "{}", n.id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_certificate_is_not_the_pinned_one_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let (a, b) = two_nodes(root.path()).await;
    // a's address with b's key: whoever answers there is not b.
    let wrong = NodeClient::new(&a.addr, &b.key.0, ClientOptions::default());
    let why = refused_by_tls(wrong.status().await);
    assert!(why.to_lowercase().contains("certificate"), "{why}");
    // No key in the map: no call at all, and it says why.
    let unpinned = NodeClient::new(&a.addr, &[], ClientOptions::default());
    assert!(matches!(
        unpinned.status().await,
        Err(RpcError::Unpinned { .. })
    ));
    // HTTP/2 by ALPN works as HTTP/1.1 does.
    assert_eq!(a.client_h2().status().await.unwrap().node_id, "a");
}

/// Takes any server certificate: the forged-client test is about what the
/// server does.
#[derive(Debug)]
struct AnyServer;

impl rustls::client::danger::ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        ::grid::tls::provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusting_and_distrusting_a_client_takes_effect_on_every_node() {
    use ::grid::membership::{apply, Change};
    let root = tempfile::tempdir().unwrap();
    let (a, b) = two_nodes(root.path()).await;
    let map = a.client().get_map().await.unwrap().unwrap();
    let grid = ::grid::Grid::new(map, ClientOptions::default());
    let gw = Identity::generate().unwrap();
    assert!(client_as(&a, gw.clone()).status().await.is_err());
    let kept = client_as(&a, gw.clone());

    apply(&grid, &owner(), Change::Trust(gw.as_gateway("gw2")))
        .await
        .unwrap();
    for n in [&a, &b] {
        assert_eq!(
            client_as(n, gw.clone()).status().await.unwrap().node_id,
            n.id
        );
    }
    // A connection opened while trusted, kept in the pool.
    kept.status().await.unwrap();
    apply(&grid, &owner(), Change::Distrust(gw.key().0.to_vec()))
        .await
        .unwrap();
    assert!(
        matches!(kept.status().await, Err(RpcError::Unauthorized(_))),
        "an open connection outlived its client's trust"
    );
    for n in [&a, &b] {
        refused_by_tls(client_as(n, gw.clone()).status().await);
    }
    // A malformed key changes nothing.
    let bad = apply(&grid, &owner(), Change::Distrust(vec![1; 3])).await;
    assert!(bad.is_ok(), "distrusting what is not there holds already");
    let bad = apply(
        &grid,
        &owner(),
        Change::Trust(metadata::model::ClientIdentity {
            key: vec![1; 3],
            ..Default::default()
        }),
    )
    .await;
    assert!(bad.is_err());
}
