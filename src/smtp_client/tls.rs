//! The rustls client configurations: checking (system roots or a CA file) and not.

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use std::path::Path;
use std::sync::Arc;

/// The bundle Debian/Ubuntu (`ca-certificates`) and Alpine keep the system roots in.
pub const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Trust anchors, and the certificates of the operator's own `ca_file`.
pub struct Roots {
    pub store: RootCertStore,
    /// Empty for the system bundle.
    pub ca_file_certs: Vec<CertificateDer<'static>>,
}

/// A config that checks the server's certificate against `roots`.
pub fn verifying(roots: Roots) -> Result<Arc<ClientConfig>, String> {
    let provider = provider();
    let webpki =
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots.store), provider.clone())
            .build()
            .map_err(|e| format!("TLS setup: {e}"))?;
    let verifier = WebPkiOrCaFileCert {
        webpki,
        ca_file_certs: roots.ca_file_certs,
    };
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
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
pub fn load_roots(ca_file: Option<&Path>) -> Result<Roots, String> {
    let path = ca_file.unwrap_or(Path::new(SYSTEM_ROOTS));
    let what = if ca_file.is_some() {
        "ca_file"
    } else {
        "system CA bundle"
    };
    let iter = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{what} {}: cannot read: {e}", path.display()))?;
    let mut roots = RootCertStore::empty();
    let mut ca_file_certs = Vec::new();
    for cert in iter {
        let cert =
            cert.map_err(|e| format!("{what} {}: bad PEM certificate: {e}", path.display()))?;
        if ca_file.is_some() {
            ca_file_certs.push(cert.clone());
        }
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
    Ok(Roots {
        store: roots,
        ca_file_certs,
    })
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

/// The webpki check, plus: a server that presents exactly a certificate of `ca_file` is
/// trusted when the name matches. That is the self-signed certificate of a private
/// upstream (Dovecot, Postfix) given as its own CA; `openssl req -x509` marks such a
/// certificate as a CA, which webpki refuses as the server's own (`CaUsedAsEndEntity`),
/// while OpenSSL-based clients (Postfix's `smtp_tls_CAfile`, Python) accept it.
#[derive(Debug)]
struct WebPkiOrCaFileCert {
    webpki: Arc<WebPkiServerVerifier>,
    ca_file_certs: Vec<CertificateDer<'static>>,
}

impl ServerCertVerifier for WebPkiOrCaFileCert {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            // Only `Other` (where CaUsedAsEndEntity lands): webpki checks the validity
            // dates before the CA flag, so an expired certificate still fails as Expired.
            Err(rustls::Error::InvalidCertificate(CertificateError::Other(_)))
                if self
                    .ca_file_certs
                    .iter()
                    .any(|c| c.as_ref() == end_entity.as_ref()) =>
            {
                let cert = ParsedCertificate::try_from(end_entity)?;
                rustls::client::verify_server_name(&cert, server_name)?;
                Ok(ServerCertVerified::assertion())
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
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
