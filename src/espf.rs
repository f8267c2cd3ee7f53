//! The ESPF status API client: tells PortaBilling how provisioning of an account went.
//!
//! `POST <ESPFD_ESPF_URL>/espf/v1/account/i/<i_account>/status` with `status`, `group` and
//! `message` (at most 4000 characters), form-urlencoded or JSON, authenticated with the
//! PortaBilling session's bearer token or with basic auth. PortaOne's pages disagree on the
//! body encoding and on the auth, so both are configurable (`ESPFD_ESPF_FORMAT`,
//! `ESPFD_ESPF_AUTH`).

use std::sync::Arc;

use serde_json::json;

use crate::config::{Config, EspfAuth, EspfFormat};
use crate::error::Error;
use crate::metrics::{Call, Metrics};
use crate::outbound::{self, Failure};
use crate::portabilling::PbClient;
use crate::util::{base64_encode, form_encode, truncate_chars};

/// Longest status message ESPF accepts.
pub const MAX_MESSAGE: usize = 4000;

/// A provisioning status as ESPF knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Provisioned.
    Ok,
    /// Accepted by the target, completion pending.
    InProgress,
    /// Failed for now; being retried.
    Retry,
    /// Failed for good.
    Failed,
}

impl Status {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::InProgress => "IN_PROGRESS",
            Status::Retry => "RETRY",
            Status::Failed => "FAILED",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Status> {
        match s {
            "OK" => Some(Status::Ok),
            "IN_PROGRESS" => Some(Status::InProgress),
            "RETRY" => Some(Status::Retry),
            "FAILED" => Some(Status::Failed),
            _ => None,
        }
    }
}

/// The client.
pub struct EspfClient {
    base: String,
    format: EspfFormat,
    auth: EspfAuth,
    group: String,
    agent: ureq::Agent,
    pb: Arc<PbClient>,
    /// Where call durations are counted.
    metrics: Arc<Metrics>,
}

impl EspfClient {
    /// Builds the client; the bearer token comes from `pb`'s session.
    pub fn new(config: &Config, pb: Arc<PbClient>) -> Result<EspfClient, Error> {
        Ok(EspfClient {
            base: config.espf_url.clone(),
            format: config.espf_format,
            auth: config.espf_auth,
            group: config.group.clone(),
            agent: outbound::agent(
                config.pb_timeout,
                config.workers + 2,
                config.pb_ca_file.as_deref(),
            )?,
            pb,
            metrics: Arc::new(Metrics::new()),
        })
    }

    /// Counts call durations in `metrics` (the service's registry).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> EspfClient {
        self.metrics = metrics;
        self
    }

    /// Reports `status` for `i_account`. A rejected bearer token (401) renews the session once.
    pub fn report(&self, i_account: i64, status: Status, message: &str) -> Result<(), Failure> {
        let message = truncate_chars(message, MAX_MESSAGE);
        let (content_type, body) = match self.format {
            EspfFormat::Form => (
                "application/x-www-form-urlencoded",
                format!(
                    "status={}&group={}&message={}",
                    status.as_str(),
                    form_encode(&self.group),
                    form_encode(message)
                ),
            ),
            EspfFormat::Json => (
                "application/json",
                json!({"status": status.as_str(), "group": self.group, "message": message})
                    .to_string(),
            ),
        };
        let url = format!("{}/espf/v1/account/i/{i_account}/status", self.base);
        let mut renewed = false;
        loop {
            let (auth, generation) = match self.auth {
                EspfAuth::Bearer => {
                    let (token, generation) =
                        self.pb.token().map_err(|e| e.into_failure("login"))?;
                    (format!("Bearer {token}"), Some(generation))
                }
                EspfAuth::Basic => {
                    let creds = format!(
                        "{}:{}",
                        self.pb.login_name(),
                        self.pb.password().unwrap_or("")
                    );
                    (format!("Basic {}", base64_encode(creds.as_bytes())), None)
                }
            };
            let _timer = self.metrics.timer(Call::Espf);
            let mut resp = self
                .agent
                .post(&url)
                .header("Content-Type", content_type)
                .header("Authorization", auth)
                .send(body.as_str())
                .map_err(|e| Failure::transient(format!("ESPF status API: {e}")))?;
            let code = resp.status().as_u16();
            let text = outbound::body_text(&mut resp, 64 * 1024).unwrap_or_default();
            match code {
                200..=299 => return Ok(()),
                401 if !renewed && generation.is_some() => {
                    renewed = true;
                    self.pb
                        .renew(generation)
                        .map_err(|e| e.into_failure("login"))?;
                }
                408 | 425 | 429 | 401 | 500..=599 => {
                    let mut f = Failure::transient(format!(
                        "ESPF status API: HTTP {code}: {}",
                        first_line(&text)
                    ));
                    f.retry_after = outbound::retry_after(
                        resp.headers()
                            .get("retry-after")
                            .and_then(|v| v.to_str().ok()),
                    );
                    return Err(f);
                }
                _ => {
                    return Err(Failure::permanent(format!(
                        "ESPF status API refused the report: HTTP {code}: {}",
                        first_line(&text)
                    )))
                }
            }
        }
    }
}

fn first_line(text: &str) -> &str {
    truncate_chars(text.lines().next().unwrap_or("").trim(), 300)
}
