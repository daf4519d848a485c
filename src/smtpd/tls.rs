//! Server-side TLS: a rustls acceptor from PEM files.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;
use tokio_rustls::TlsAcceptor;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("certificate file {path}: {message}")]
    Cert { path: String, message: String },
    #[error("key file {path}: {message}")]
    Key { path: String, message: String },
    #[error("TLS setup with {cert} and {key}: {message}")]
    Config {
        cert: String,
        key: String,
        message: String,
    },
}

/// Loads the certificate chain and key. Called at start and on every SIGHUP, so a renewed
/// certificate is picked up without a restart.
pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, TlsError> {
    let cert_err = |message: String| TlsError::Cert {
        path: cert.display().to_string(),
        message,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| cert_err(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| cert_err(e.to_string()))?;
    if certs.is_empty() {
        return Err(cert_err("no PEM certificate found".into()));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key {
        path: key.display().to_string(),
        message: format!("{e} (expected an unencrypted PEM private key)"),
    })?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key_der))
    .map_err(|e| TlsError::Config {
        cert: cert.display().to_string(),
        key: key.display().to_string(),
        message: e.to_string(),
    })?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// "TLSv1.3 TLS13_AES_256_GCM_SHA384" for logs and the Received header.
pub fn describe(conn: &rustls::ServerConnection) -> String {
    let version = match conn.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".to_string(),
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".to_string(),
        Some(v) => format!("{v:?}"),
        None => "TLS".to_string(),
    };
    match conn.negotiated_cipher_suite() {
        Some(cs) => format!("{version} {:?}", cs.suite()),
        None => version,
    }
}
