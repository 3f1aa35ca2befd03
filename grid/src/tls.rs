//! Identities and TLS for node RPC.
//!
//! Every process that speaks node RPC (nodes, gateways, admin tools) has an
//! identity: an Ed25519 key pair and a self-signed certificate for it. Its
//! public identity is the SHA-256 of the certificate's SubjectPublicKeyInfo
//! ([`IdentityKey`]); the cluster map lists each node's and each trusted
//! client's. There is no certificate authority: a client accepts a node
//! only if its key is the one the map pins for that node, and a node accepts
//! a client only if its key is in the map it holds (see [`ClientPolicy`]).
//! Names and validity dates in the certificates are never looked at; the
//! handshake signature always is, with the provider's own verification.
//!
//! Connections are TLS 1.3 only, HTTP/1.1 or HTTP/2 by ALPN.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::ParsedCertificate;
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{
    ClientConfig, DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme,
};
use sha2::{Digest, Sha256};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

/// Files of an identity directory.
const KEY_FILE: &str = "key.der";
const CERT_FILE: &str = "cert.der";

pub const ALPN_H2: &[u8] = b"h2";
pub const ALPN_HTTP1: &[u8] = b"http/1.1";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot make a key pair and certificate: {0}")]
    Generate(String),
    #[error("{path}: not a usable identity: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    #[error("not an identity key (64 hex digits): {0:?}")]
    BadKey(String),
}

/// A public identity: SHA-256 of a certificate's SubjectPublicKeyInfo.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdentityKey(pub [u8; 32]);

impl IdentityKey {
    /// The key of a DER certificate.
    pub fn of_cert(cert: &CertificateDer<'_>) -> Result<IdentityKey, rustls::Error> {
        let parsed = ParsedCertificate::try_from(cert)?;
        Ok(IdentityKey::of_spki(
            parsed.subject_public_key_info().as_ref(),
        ))
    }

    pub fn of_spki(spki_der: &[u8]) -> IdentityKey {
        IdentityKey(Sha256::digest(spki_der).into())
    }

    /// The key of an Ed25519 public key (what its certificate's
    /// SubjectPublicKeyInfo hashes to).
    pub fn of_ed25519(public_key: &[u8]) -> IdentityKey {
        // SEQUENCE { SEQUENCE { OID 1.3.101.112 } BIT STRING (32 bytes) }
        const PREFIX: [u8; 12] = [
            0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
        ];
        let mut h = Sha256::new();
        h.update(PREFIX);
        h.update(public_key);
        IdentityKey(h.finalize().into())
    }

    /// As the cluster map carries it (`None` unless exactly 32 bytes).
    pub fn from_bytes(b: &[u8]) -> Option<IdentityKey> {
        b.try_into().ok().map(IdentityKey)
    }

    pub fn from_hex(s: &str) -> Result<IdentityKey, IdentityError> {
        let bytes = hex::decode(s.trim()).map_err(|_| IdentityError::BadKey(s.into()))?;
        Self::from_bytes(&bytes).ok_or_else(|| IdentityError::BadKey(s.into()))
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for IdentityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for IdentityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdentityKey({})", self.to_hex())
    }
}

/// A key pair and its certificate, ready for TLS. Cheap to clone.
#[derive(Clone)]
pub struct Identity {
    certified: Arc<CertifiedKey>,
    key: IdentityKey,
    /// The same key pair, for signing what is not a TLS handshake
    /// (liveness votes on cluster maps).
    signer: Arc<ring::signature::Ed25519KeyPair>,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Identity").field(&self.key).finish()
    }
}

/// The one crypto provider of every connection: ring, TLS 1.3, with
/// AES-128-GCM preferred. Shards are already sealed end to end; the
/// transport's cipher is paid on every byte a node sends or receives, and
/// AES-128 costs about 30 % less CPU than AES-256 with AES-NI at a strength
/// TLS 1.3 makes mandatory to implement.
pub fn provider() -> Arc<CryptoProvider> {
    static P: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    P.get_or_init(|| {
        let mut p = rustls::crypto::ring::default_provider();
        p.cipher_suites
            .sort_by_key(|s| s.suite() != rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
        Arc::new(p)
    })
    .clone()
}

impl Identity {
    /// From a certificate and its PKCS#8 private key (checked to match).
    pub fn from_der(cert: Vec<u8>, key: Vec<u8>) -> Result<Identity, rustls::Error> {
        let cert = CertificateDer::from(cert);
        let key_id = IdentityKey::of_cert(&cert)?;
        let signer = ring::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(&key)
            .map_err(|e| rustls::Error::General(format!("not an Ed25519 key: {e}")))?;
        if IdentityKey::of_ed25519(ring::signature::KeyPair::public_key(&signer).as_ref()) != key_id
        {
            return Err(rustls::Error::General(
                "the key is not the certificate's".into(),
            ));
        }
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key));
        let certified = CertifiedKey::from_der(vec![cert], key, &provider())?;
        Ok(Identity {
            certified: Arc::new(certified),
            key: key_id,
            signer: Arc::new(signer),
        })
    }

    /// A fresh identity kept nowhere.
    pub fn generate() -> Result<Identity, IdentityError> {
        let (cert, key) = generate_der()?;
        Ok(Identity::from_der(cert, key)?)
    }

    /// The identity kept in `dir` (`key.der`, owner-only, and `cert.der`),
    /// made there on first use.
    pub fn load_or_create(dir: &Path) -> Result<Identity, IdentityError> {
        if dir.join(KEY_FILE).exists() {
            return Identity::load(dir);
        }
        create_in(dir)?;
        Identity::load(dir)
    }

    /// The identity kept in `dir`; an error if there is none.
    pub fn load(dir: &Path) -> Result<Identity, IdentityError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read(&path).map_err(|source| IdentityError::Io { path, source })
        };
        let (key, cert) = (read(KEY_FILE)?, read(CERT_FILE)?);
        Identity::from_der(cert, key).map_err(|e| IdentityError::Invalid {
            path: dir.to_owned(),
            reason: e.to_string(),
        })
    }

    /// This process's own identity when it was given none: made once,
    /// kept in memory. Good only with nodes that hold no map yet or whose
    /// map lists it (tests, benches).
    pub fn ephemeral() -> Result<Identity, IdentityError> {
        static E: OnceLock<Identity> = OnceLock::new();
        if let Some(i) = E.get() {
            return Ok(i.clone());
        }
        let made = Identity::generate()?;
        Ok(E.get_or_init(|| made).clone())
    }

    /// Sign `message` with this identity's key (Ed25519).
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        let mut out = [0u8; 64];
        out.copy_from_slice(self.signer.sign(message).as_ref());
        out
    }

    /// The Ed25519 public key whose certificate this is.
    pub fn public_key(&self) -> Vec<u8> {
        ring::signature::KeyPair::public_key(&*self.signer)
            .as_ref()
            .to_vec()
    }

    pub fn key(&self) -> IdentityKey {
        self.key
    }

    pub fn cert(&self) -> &CertificateDer<'static> {
        &self.certified.cert[0]
    }

    /// This identity as a cluster map lists a gateway.
    pub fn as_gateway(&self, name: &str) -> metadata::model::ClientIdentity {
        metadata::model::ClientIdentity {
            name: name.to_string(),
            key: self.key.0.to_vec(),
            role: metadata::model::ClientRole::Gateway as i32,
        }
    }

    /// TLS for calls to the node whose key is `pin`, presenting this
    /// identity (ALPN is left to the HTTP connector).
    pub fn client_config(&self, pin: IdentityKey) -> ClientConfig {
        let p = provider();
        ClientConfig::builder_with_provider(p.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            // The ring provider supports TLS 1.3: this cannot fail.
            .unwrap_or_else(|_| unreachable_tls13())
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedServer { pin, provider: p }))
            .with_client_cert_resolver(Arc::new(SingleCertAndKey::from(self.certified.clone())))
    }

    /// TLS for a node's RPC listener: this identity, TLS 1.3, h2 or
    /// HTTP/1.1. A client certificate is asked for; one whose key
    /// `policy` refuses ends the handshake. Clients without one get
    /// through the handshake (probes: `/health`, `/metrics`) and the
    /// server refuses them every call.
    pub fn server_config(&self, policy: Arc<dyn ClientPolicy>) -> ServerConfig {
        let p = provider();
        let mut cfg = ServerConfig::builder_with_provider(p.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap_or_else(|_| unreachable_tls13())
            .with_client_cert_verifier(Arc::new(PinnedClients {
                policy,
                provider: p,
            }))
            .with_cert_resolver(Arc::new(SingleCertAndKey::from(self.certified.clone())));
        cfg.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP1.to_vec()];
        cfg
    }
}

/// TLS for a probe of the node whose key is `pin` (`/health`,
/// `/metrics`): no client certificate, so nodes answer nothing else.
pub fn probe_config(pin: IdentityKey) -> ClientConfig {
    let p = provider();
    ClientConfig::builder_with_provider(p.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap_or_else(|_| unreachable_tls13())
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedServer { pin, provider: p }))
        .with_no_client_auth()
}

fn unreachable_tls13() -> ! {
    unreachable!("the ring provider supports TLS 1.3")
}

fn generate_der() -> Result<(Vec<u8>, Vec<u8>), IdentityError> {
    let err = |e: rcgen::Error| IdentityError::Generate(e.to_string());
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).map_err(err)?;
    // The name is never checked (keys are pinned); rcgen wants one.
    let params = rcgen::CertificateParams::new(vec!["gridstore".to_string()]).map_err(err)?;
    let cert = params.self_signed(&key).map_err(err)?;
    Ok((cert.der().to_vec(), key.serialize_der()))
}

/// Make an identity in `dir`: written beside it, then renamed into place,
/// so a crash never leaves a key without its certificate.
fn create_in(dir: &Path) -> Result<(), IdentityError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| IdentityError::Io { path, source }
    };
    let (cert, key) = generate_der()?;
    let parent = dir.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(io(parent))?;
    let tmp = dir.with_extension(format!("tmp{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir(&tmp).map_err(io(&tmp))?;
    let write = |name: &str, bytes: &[u8], mode: u32| {
        let path = tmp.join(name);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&path)
            .map_err(io(&path))?;
        f.write_all(bytes).map_err(io(&path))?;
        f.sync_all().map_err(io(&path))
    };
    write(KEY_FILE, &key, 0o600)?;
    write(CERT_FILE, &cert, 0o644)?;
    match std::fs::rename(&tmp, dir) {
        Ok(()) => {}
        // Another process made it first: theirs stands.
        Err(_) if dir.join(KEY_FILE).exists() => {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        Err(e) => return Err(io(dir)(e)),
    }
    if let Ok(d) = std::fs::File::open(parent) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Which client keys a node accepts.
pub trait ClientPolicy: Send + Sync + fmt::Debug {
    fn accepts(&self, key: &IdentityKey) -> bool;
}

/// Accepts the server certificate whose key is the pinned one, whatever
/// its names or dates say.
#[derive(Debug)]
struct PinnedServer {
    pin: IdentityKey,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedServer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if IdentityKey::of_cert(end_entity)? == self.pin {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        tls12_refused()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        tls13_signature(&self.provider, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        schemes(&self.provider)
    }
}

/// Accepts a client certificate whose key the policy accepts.
#[derive(Debug)]
struct PinnedClients {
    policy: Arc<dyn ClientPolicy>,
    provider: Arc<CryptoProvider>,
}

impl ClientCertVerifier for PinnedClients {
    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let key = IdentityKey::of_cert(end_entity)?;
        if self.policy.accepts(&key) {
            Ok(ClientCertVerified::assertion())
        } else {
            tracing::warn!(client = %key, "refused a client whose key the cluster map does not list");
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        tls12_refused()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        tls13_signature(&self.provider, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        schemes(&self.provider)
    }
}

/// Both verifiers: only TLS 1.3 is offered, so a 1.2 signature is a
/// protocol violation.
fn tls12_refused() -> Result<HandshakeSignatureValid, rustls::Error> {
    Err(rustls::Error::PeerIncompatible(
        rustls::PeerIncompatible::Tls12NotOffered,
    ))
}

/// Both verifiers: the handshake signature is checked by the provider,
/// whatever the pin said about the key.
fn tls13_signature(
    provider: &CryptoProvider,
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    verify_tls13_signature(
        message,
        cert,
        dss,
        &provider.signature_verification_algorithms,
    )
}

fn schemes(provider: &CryptoProvider) -> Vec<SignatureScheme> {
    provider
        .signature_verification_algorithms
        .supported_schemes()
}

/// The peer's key on an established server-side connection, if it showed
/// a certificate.
pub fn peer_key(conn: &rustls::ServerConnection) -> Option<IdentityKey> {
    conn.peer_certificates()
        .and_then(|c| c.first())
        .and_then(|c| IdentityKey::of_cert(c).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_identity_is_the_same_after_reload() {
        let dir = std::env::temp_dir().join(format!("gridstore-id-{}", rand::random::<u64>()));
        let id_dir = dir.join("identity");
        let a = Identity::load_or_create(&id_dir).unwrap();
        let b = Identity::load_or_create(&id_dir).unwrap();
        assert_eq!(a.key(), b.key());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(id_dir.join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(IdentityKey::from_hex(&a.key().to_hex()).unwrap(), a.key());
        assert_ne!(Identity::generate().unwrap().key(), a.key());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn key_is_the_hash_of_the_public_key() {
        let (cert, key) = generate_der().unwrap();
        let pair = rcgen::KeyPair::try_from(key.as_slice()).unwrap();
        let id = Identity::from_der(cert, key).unwrap();
        assert_eq!(id.key(), IdentityKey::of_spki(&pair.public_key_der()));
    }
}
