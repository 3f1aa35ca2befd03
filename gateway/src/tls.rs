//! TLS for the front ends (S3, WebDAV, job API), from a certificate chain
//! and key in PEM files, as a public CA or the operator's own issues them.
//! Without them the listeners speak plain HTTP, which is meant for
//! loopback (`gridstore server`'s quick start) or behind a TLS proxy.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    #[error("{path}: {reason}")]
    Pem { path: PathBuf, reason: String },
    #[error("{path}: no certificate in it")]
    NoCertificate { path: PathBuf },
    #[error("certificate and key do not go together: {0}")]
    Config(#[from] rustls::Error),
}

/// What a listener answers TLS with; cheap to clone.
pub type Acceptor = tokio_rustls::TlsAcceptor;

/// An acceptor for the chain in `cert` (PEM, leaf first) and the private
/// key in `key` (PEM: PKCS#8, PKCS#1 or SEC1). TLS 1.2 and 1.3 (S3 clients
/// in the field still speak 1.2), HTTP/2 and HTTP/1.1 by ALPN.
pub fn acceptor(cert: &Path, key: &Path) -> Result<Acceptor, TlsError> {
    let pem = |path: &Path| {
        let path = path.to_owned();
        move |e: rustls::pki_types::pem::Error| TlsError::Pem {
            path,
            reason: e.to_string(),
        }
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(pem(cert))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem(cert))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert.to_owned(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(pem(key))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
}
