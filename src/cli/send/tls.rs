//! The TLS client of `espfd send`: TLS 1.2/1.3 with the ring provider, trusting a CA file,
//! the system bundle, or (`--insecure`) any certificate.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::usage;
use crate::error::Error;

/// A certificate verifier that accepts any server certificate: `--insecure`. It still checks
/// that the server holds the key of the certificate it showed (the handshake signature), but
/// not who issued the certificate nor which names it carries, so anyone in the path can
/// impersonate the server. For tests against a self-signed certificate only.
#[derive(Debug)]
struct DangerousAcceptAnyServerCert(Arc<CryptoProvider>);

impl ServerCertVerifier for DangerousAcceptAnyServerCert {
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
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
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
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The system's CA bundle on Debian-like systems, the default trust for https.
const SYSTEM_CA_FILE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// TLS 1.2/1.3 with the ring provider, trusting `ca_file` (or the system bundle), or nothing
/// at all with `insecure`.
pub(super) fn tls_config(
    ca_file: Option<&str>,
    insecure: bool,
) -> Result<Arc<ClientConfig>, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Other(format!("send: TLS setup: {e}")))?;
    let config = match (ca_file, insecure) {
        (Some(_), true) => return Err(usage("give --ca-file or --insecure, not both")),
        (None, true) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(DangerousAcceptAnyServerCert(provider)))
            .with_no_client_auth(),
        (file, false) => {
            let path = match file {
                Some(f) => f,
                None if Path::new(SYSTEM_CA_FILE).is_file() => SYSTEM_CA_FILE,
                None => {
                    return Err(usage(format!(
                        "an https:// URL needs --ca-file PEM (there is no {SYSTEM_CA_FILE}) or --insecure"
                    )))
                }
            };
            let mut roots = RootCertStore::empty();
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| usage(format!("--ca-file: cannot read {path}: {e}")))?;
            for cert in certs {
                let cert = cert.map_err(|e| usage(format!("--ca-file: {path}: not PEM: {e}")))?;
                roots
                    .add(cert)
                    .map_err(|e| usage(format!("--ca-file: {path}: unusable certificate: {e}")))?;
            }
            if roots.is_empty() {
                return Err(usage(format!("--ca-file: no certificates in {path}")));
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    };
    Ok(Arc::new(config))
}
