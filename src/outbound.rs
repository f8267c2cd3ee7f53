//! Outbound HTTP: building ureq agents (timeouts, pool, CAs, client certificate), and the
//! classified result every outbound call ends in.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use ureq::tls::{Certificate, ClientCert, PemItem, PrivateKey, RootCerts, TlsConfig};
use ureq::Agent;

use crate::error::{ConfigError, Error};
use crate::upstream::Upstream;

/// The TLS side of an outbound agent: the CAs it trusts and the certificate it shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboundTls {
    /// PEM CAs to trust instead of the public web roots. Defaults to none (the web roots).
    pub ca_file: Option<PathBuf>,
    /// The variable that names `ca_file`, for its error messages (`ESPFD_PB_CA_FILE`,
    /// `ESPFD_TARGET_CA_FILE`).
    pub ca_var: &'static str,
    /// A client certificate for mutual TLS. Defaults to none.
    pub client_cert: Option<ClientCertFiles>,
}

/// A client certificate chain (client certificate first) and its private key, PEM files
/// (`ESPFD_TARGET_TLS_CERT`, `ESPFD_TARGET_TLS_KEY`; the key PKCS#8, PKCS#1 or SEC1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Builds an agent with explicit timeouts, a connection pool of at least `pool` idle
/// connections per host, and either the public web roots or the CAs of `ca_file`
/// (`ESPFD_PB_CA_FILE`). Replies of every status are returned as replies (not errors) so
/// callers classify them.
pub fn agent(total: Duration, pool: usize, ca_file: Option<&Path>) -> Result<Agent, Error> {
    let tls = OutboundTls {
        ca_file: ca_file.map(Path::to_path_buf),
        ca_var: "ESPFD_PB_CA_FILE",
        client_cert: None,
    };
    agent_with(total, pool, &tls)
}

/// [`agent`] with the CAs and client certificate of `tls`. A file that cannot be read or
/// holds nothing usable is a configuration error naming its variable.
pub fn agent_with(total: Duration, pool: usize, tls: &OutboundTls) -> Result<Agent, Error> {
    let roots = match &tls.ca_file {
        None => RootCerts::WebPki,
        Some(path) => RootCerts::Specific(Arc::new(pem_certs(tls.ca_var, path)?)),
    };
    let client_cert = tls.client_cert.as_ref().map(client_cert).transpose()?;
    let config = Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(total))
        .timeout_connect(Some(total.min(Duration::from_secs(5))))
        .max_idle_connections(pool.max(4) * 2)
        .max_idle_connections_per_host(pool.max(4))
        .max_redirects(0)
        .user_agent(concat!("espfd/", env!("CARGO_PKG_VERSION")))
        .tls_config(
            TlsConfig::builder()
                .root_certs(roots)
                .client_cert(client_cert)
                .build(),
        )
        .build();
    Ok(config.into())
}

fn config_error(var: &str, reason: String) -> Error {
    Error::Config(ConfigError {
        var: var.to_string(),
        reason,
    })
}

/// The PEM certificates in `path` (at least one), named by `var`.
fn pem_certs(var: &str, path: &Path) -> Result<Vec<Certificate<'static>>, Error> {
    let pem = std::fs::read(path)
        .map_err(|e| config_error(var, format!("cannot read {}: {e}", path.display())))?;
    let certs: Vec<Certificate<'static>> = ureq::tls::parse_pem(&pem)
        .filter_map(|item| match item {
            Ok(PemItem::Certificate(c)) => Some(c),
            _ => None,
        })
        .collect();
    if certs.is_empty() {
        return Err(config_error(
            var,
            format!("{} holds no PEM certificate", path.display()),
        ));
    }
    Ok(certs)
}

/// The client certificate of `files`, checked here because ureq would only find a key that
/// does not belong to the certificate at the first handshake, and then panic.
fn client_cert(files: &ClientCertFiles) -> Result<ClientCert, Error> {
    const CERT: &str = "ESPFD_TARGET_TLS_CERT";
    const KEY: &str = "ESPFD_TARGET_TLS_KEY";
    let chain = pem_certs(CERT, &files.cert)?;
    let (cert_name, key_name) = (files.cert.display(), files.key.display());
    let key_pem = std::fs::read(&files.key)
        .map_err(|e| config_error(KEY, format!("cannot read {key_name}: {e}")))?;
    let key = PrivateKey::from_pem(&key_pem).map_err(|e| {
        config_error(
            KEY,
            format!(
                "{key_name} holds no usable private key (PKCS#8, PKCS#1 or SEC1 PEM expected): {e}"
            ),
        )
    })?;
    let key_der = PrivateKeyDer::try_from(key.der().to_vec())
        .map_err(|e| config_error(KEY, format!("{key_name}: unusable key: {e}")))?;
    let signing_key = rustls::crypto::ring::default_provider()
        .key_provider
        .load_private_key(key_der)
        .map_err(|e| config_error(KEY, format!("{key_name}: unusable key: {e}")))?;
    let der_chain = chain
        .iter()
        .map(|c| CertificateDer::from(c.der().to_vec()))
        .collect();
    match CertifiedKey::new(der_chain, signing_key).keys_match() {
        Ok(()) => Ok(ClientCert::new_with_certs(&chain, key)),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            Err(config_error(
                KEY,
                format!("the key in {key_name} does not belong to the certificate in {cert_name} ({CERT})"),
            ))
        }
        Err(e) => Err(config_error(
            CERT,
            format!("{cert_name} and {KEY} {key_name}: cannot check that the key belongs to the certificate: {e}"),
        )),
    }
}

/// Reads a reply body as text, at most `limit` bytes.
pub fn body_text(
    resp: &mut ureq::http::Response<ureq::Body>,
    limit: u64,
) -> Result<String, String> {
    resp.body_mut()
        .with_config()
        .limit(limit)
        .lossy_utf8(true)
        .read_to_string()
        .map_err(|e| format!("reading the reply failed: {e}"))
}

/// Parses a `Retry-After` value: delay-seconds or an HTTP date.
pub fn retry_after(value: Option<&str>) -> Option<Duration> {
    let v = value?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = crate::util::parse_http_date(v)?;
    let now = crate::util::now_ms() / 1000;
    Some(Duration::from_secs(at.saturating_sub(now).max(0) as u64))
}

/// Why one step of processing an event did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Worth retrying later (timeouts, connection errors, 5xx, ...).
    pub transient: bool,
    /// What happened, for the status message and the log.
    pub message: String,
    /// The server asked for this delay before the next try.
    pub retry_after: Option<Duration>,
    /// The upstream that failed, when the caller knows it (`None`: the target).
    pub upstream: Option<Upstream>,
    /// Nothing was sent: this upstream is down (its breaker is open). The event was not
    /// attempted and spends no attempt.
    pub down: bool,
}

impl Failure {
    /// A failure worth retrying.
    pub fn transient(message: impl Into<String>) -> Failure {
        Failure {
            transient: true,
            message: message.into(),
            retry_after: None,
            upstream: None,
            down: false,
        }
    }

    /// Not sent, because `upstream` is down; `why` it went down.
    pub fn down(upstream: Upstream, why: &str) -> Failure {
        Failure {
            upstream: Some(upstream),
            down: true,
            ..Failure::transient(format!(
                "{upstream} down ({why}); waiting for it to come back"
            ))
        }
    }

    /// The same failure, blamed on `upstream`.
    pub fn from(self, upstream: Upstream) -> Failure {
        Failure {
            upstream: Some(upstream),
            ..self
        }
    }

    /// A failure that retrying will not fix.
    pub fn permanent(message: impl Into<String>) -> Failure {
        Failure {
            transient: false,
            ..Failure::transient(message)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        assert_eq!(retry_after(Some("7")), Some(Duration::from_secs(7)));
        assert_eq!(
            retry_after(Some("Thu, 01 Jan 1970 00:00:00 GMT")),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after(Some("soon")), None);
        assert_eq!(retry_after(None), None);
    }
}
