//! Outbound HTTP: building ureq agents, and the classified result every outbound call ends in.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig};
use ureq::Agent;

use crate::error::Error;
use crate::upstream::Upstream;

/// Builds an agent with explicit timeouts, a connection pool of at least `pool` idle
/// connections per host, and either the public web roots or the CAs of `ca_file`.
/// Replies of every status are returned as replies (not errors) so callers classify them.
pub fn agent(total: Duration, pool: usize, ca_file: Option<&Path>) -> Result<Agent, Error> {
    let roots = match ca_file {
        None => RootCerts::WebPki,
        Some(path) => {
            let pem = std::fs::read(path).map_err(|e| {
                Error::io(
                    format!("ESPFD_PB_CA_FILE: cannot read {}", path.display()),
                    e,
                )
            })?;
            let certs: Vec<Certificate<'static>> = ureq::tls::parse_pem(&pem)
                .filter_map(|item| match item {
                    Ok(PemItem::Certificate(c)) => Some(c),
                    _ => None,
                })
                .collect();
            if certs.is_empty() {
                return Err(Error::Other(format!(
                    "ESPFD_PB_CA_FILE: {} holds no PEM certificate",
                    path.display()
                )));
            }
            RootCerts::Specific(Arc::new(certs))
        }
    };
    let config = Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(total))
        .timeout_connect(Some(total.min(Duration::from_secs(5))))
        .max_idle_connections(pool.max(4) * 2)
        .max_idle_connections_per_host(pool.max(4))
        .max_redirects(0)
        .user_agent(concat!("espfd/", env!("CARGO_PKG_VERSION")))
        .tls_config(TlsConfig::builder().root_certs(roots).build())
        .build();
    Ok(config.into())
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
