//! Server-side TLS: a rustls acceptor from PEM files, the key possibly encrypted with a
//! passphrase from the environment.

mod key;
mod pem;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::Path;
use std::sync::Arc;
use tokio_rustls::TlsAcceptor;
use zeroize::Zeroizing;

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
/// certificate is picked up without a restart. `passphrase_env` is the listener's
/// `key_passphrase_env`: the variable is read here, each time, and only for an encrypted
/// key.
pub fn acceptor(
    cert: &Path,
    key: &Path,
    passphrase_env: Option<&str>,
) -> Result<TlsAcceptor, TlsError> {
    acceptor_with(cert, key, passphrase_env, |var| std::env::var_os(var))
}

/// [`acceptor`] with `env` to look a variable up (the process environment, but for tests).
fn acceptor_with(
    cert: &Path,
    key: &Path,
    passphrase_env: Option<&str>,
    env: impl Fn(&str) -> Option<OsString>,
) -> Result<TlsAcceptor, TlsError> {
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
    let key_der = private_key(key, passphrase_env, env)?;
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

/// The key file decoded, decrypted if it is encrypted. Errors name the file, and the
/// variable where the passphrase comes from (never the passphrase).
fn private_key(
    path: &Path,
    passphrase_env: Option<&str>,
    env: impl Fn(&str) -> Option<OsString>,
) -> Result<PrivateKeyDer<'static>, TlsError> {
    let err = |message: String| TlsError::Key {
        path: path.display().to_string(),
        message,
    };
    let text = Zeroizing::new(std::fs::read(path).map_err(|e| err(e.to_string()))?);
    let key = key::parse(&text).map_err(|e| err(e.to_string()))?;
    let (passphrase, var) = match (key.encryption(), passphrase_env) {
        (None, None) => (None, ""),
        (None, Some(var)) => {
            return Err(err(format!(
                "is not encrypted, but key_passphrase_env = {var:?} is set: remove \
                 key_passphrase_env, or give the encrypted key"
            )));
        }
        (Some(how), None) => {
            return Err(err(format!(
                "is encrypted ({how}), but key_passphrase_env is not set: set it to the \
                 name of the environment variable that holds the passphrase \
                 (key_passphrase_env = \"TLS_KEY_PASS\")"
            )));
        }
        (Some(_), Some(var)) => {
            // As bytes, as OpenSSL takes it (not necessarily UTF-8). Our copy is wiped
            // after use; the process environment keeps its own, as for every secret
            // from env.
            let value = match env(var) {
                None => Err("is not set in mailchute's environment"),
                Some(v) if v.is_empty() => Err("is empty"),
                Some(v) => Ok(Zeroizing::new(v.into_vec())),
            }
            .map_err(|m| {
                err(format!(
                    "is encrypted; the variable {var} that key_passphrase_env names for its \
                     passphrase {m}"
                ))
            })?;
            (Some(value), var)
        }
    };
    key.into_der(passphrase.as_ref().map(|p| p.as_slice()))
        .map_err(|e| match e {
            key::KeyError::WrongPassphrase => {
                err(format!("wrong passphrase (from env {var}) or corrupt key"))
            }
            other => err(other.to_string()),
        })
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

#[cfg(test)]
mod tests;
