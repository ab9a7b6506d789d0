//! Server certificate trust: CA files, pinned certificates, and recognising TLS failures.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};

use crate::config::{ConfigError, TlsTrust};

/// Applies `trust` to the client builder, reading and checking any PEM file it names.
pub(crate) fn apply(
    builder: reqwest::ClientBuilder,
    trust: &TlsTrust,
) -> Result<reqwest::ClientBuilder, ConfigError> {
    match trust {
        TlsTrust::BuiltInRoots => Ok(builder),
        TlsTrust::CaFile(path) => {
            let certs = read_pem_certificates("CA", path)?;
            let mut builder = builder.tls_built_in_root_certs(false);
            for der in certs {
                let cert = reqwest::Certificate::from_der(der.as_ref())
                    .map_err(|source| ConfigError::Http { source })?;
                builder = builder.add_root_certificate(cert);
            }
            Ok(builder)
        }
        TlsTrust::PinnedCertificate(path) => {
            let pinned = read_pem_certificates("pinned certificate", path)?;
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let verifier = Arc::new(PinnedVerifier {
                pinned,
                provider: provider.clone(),
            });
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|source| ConfigError::Tls { source })?
                .dangerous()
                .with_custom_certificate_verifier(verifier)
                .with_no_client_auth();
            Ok(builder.use_preconfigured_tls(config))
        }
        TlsTrust::InsecureAcceptAny => {
            tracing::warn!("TLS certificate verification is OFF for this ONTAP connection");
            Ok(builder.danger_accept_invalid_certs(true))
        }
    }
}

/// Every certificate in a PEM file; at least one, each a parseable X.509 certificate.
fn read_pem_certificates(
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let bytes = std::fs::read(path).map_err(|source| ConfigError::ReadFile {
        what,
        path: path.to_path_buf(),
        source,
    })?;
    let pem_error = |reason: String| ConfigError::Pem {
        what,
        path: path.to_path_buf(),
        reason,
    };
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(format!("malformed PEM: {e}")))?;
    if certs.is_empty() {
        return Err(pem_error(
            "no -----BEGIN CERTIFICATE----- block found".to_string(),
        ));
    }
    // Base64 that decodes is not yet a certificate: parse each one now, so a corrupt file
    // is a clear configuration error instead of a handshake that can never succeed.
    for (index, der) in certs.iter().enumerate() {
        let mut probe = rustls::RootCertStore::empty();
        probe.add(der.clone()).map_err(|e| {
            pem_error(format!(
                "certificate #{} is not valid X.509: {e}",
                index + 1
            ))
        })?;
    }
    Ok(certs)
}

/// Trusts exactly the pinned certificates. Signatures in the handshake are still verified,
/// so a peer must hold the pinned certificate's private key.
#[derive(Debug)]
struct PinnedVerifier {
    pinned: Vec<CertificateDer<'static>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self
            .pinned
            .iter()
            .any(|pin| pin.as_ref() == end_entity.as_ref())
        {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Whether a transport error is a TLS failure (untrusted certificate, handshake refused).
/// Those are `Auth`: no retry helps until the trust configuration changes.
pub(crate) fn is_tls_failure(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = current {
        if e.downcast_ref::<rustls::Error>().is_some() {
            return true;
        }
        // `io::Error::source()` skips the error it wraps, and hyper-rustls reports handshake
        // failures as an `io::Error` wrapping the `rustls::Error`: look inside explicitly.
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if let Some(inner) = io.get_ref() {
                if is_tls_failure(inner) {
                    return true;
                }
            }
        }
        current = e.source();
    }
    false
}
