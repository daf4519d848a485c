//! The rustls client configurations a relay uses.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::path::Path;
use std::sync::Arc;

/// The bundle Debian/Ubuntu (`ca-certificates`) and Alpine keep the system roots in.
pub const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A config that checks the server's certificate against `roots`.
pub fn verifying(roots: RootCertStore) -> Result<Arc<ClientConfig>, String> {
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// A config that encrypts but accepts any certificate: for `insecure = true`, and for
/// opportunistic STARTTLS, where a failed check could only make us fall back to plain text
/// (as Postfix's `smtp_tls_security_level = may` does, which does not verify either).
pub fn unverified() -> Result<Arc<ClientConfig>, String> {
    let provider = provider();
    let verifier = AcceptAnyCert {
        algorithms: provider.signature_verification_algorithms,
    };
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Loads the trust anchors: every certificate in `ca_file`, or the system bundle.
pub fn load_roots(ca_file: Option<&Path>) -> Result<RootCertStore, String> {
    let path = ca_file.unwrap_or(Path::new(SYSTEM_ROOTS));
    let what = if ca_file.is_some() {
        "ca_file"
    } else {
        "system CA bundle"
    };
    let iter = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{what} {}: cannot read: {e}", path.display()))?;
    let mut roots = RootCertStore::empty();
    for cert in iter {
        let cert =
            cert.map_err(|e| format!("{what} {}: bad PEM certificate: {e}", path.display()))?;
        // A bundle may hold certificates webpki cannot use as anchors; skip those rather
        // than refuse the whole bundle, but a ca_file the operator wrote must be usable.
        if let Err(e) = roots.add(cert)
            && ca_file.is_some()
        {
            return Err(format!(
                "{what} {}: unusable certificate: {e}",
                path.display()
            ));
        }
    }
    if roots.is_empty() {
        return Err(format!(
            "{what} {}: no PEM certificate found (expected -----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    Ok(roots)
}

/// The name to send in SNI and to check the certificate against; IP addresses become
/// `ServerName::IpAddress`.
pub fn server_name(name: &str) -> Result<ServerName<'static>, String> {
    let bare = name
        .strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .unwrap_or(name);
    ServerName::try_from(bare.to_string())
        .map_err(|e| format!("\"{name}\" is not a valid TLS server name: {e}"))
}

#[derive(Debug)]
struct AcceptAnyCert {
    /// Handshake signatures are still checked: skipping them would accept a server that
    /// does not even hold the key of the certificate it sent.
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
