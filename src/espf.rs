//! The ESPF status API client: tells PortaBilling how provisioning of an account went.
//!
//! `POST <ESPFD_ESPF_URL>/espf/v1/account/i/<i_account>/status` with `status`, `group` and
//! `message` (at most 4000 characters), form-urlencoded or JSON, authenticated with the
//! PortaBilling session's bearer token or with basic auth. PortaOne's pages disagree on the
//! body encoding and on the auth, so both are configurable (`ESPFD_ESPF_FORMAT`,
//! `ESPFD_ESPF_AUTH`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::connector::judge::{Judge, Verdict};
use crate::error::Error;
use crate::metrics::{Call, Metrics};
use crate::outbound::{self, Failure};
use crate::portabilling::{PbClient, PbError};
use crate::upstream::{Admit, Upstream};
use crate::util::{base64_encode, form_encode, truncate_chars, Secret};

/// Longest status message ESPF accepts.
pub const MAX_MESSAGE: usize = 4000;

/// Body encoding of ESPF status reports (`ESPFD_ESPF_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EspfFormat {
    /// `application/x-www-form-urlencoded`.
    Form,
    /// `application/json`.
    Json,
}

/// Authentication of ESPF status reports (`ESPFD_ESPF_AUTH`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EspfAuth {
    /// The PortaBilling session's access token.
    Bearer,
    /// Basic auth with the PortaBilling login and password (`ESPFD_PB_LOGIN`,
    /// `ESPFD_PB_PASSWORD`), which `config` copies here.
    Basic { login: String, password: Secret },
}

/// What the status client needs, built by `config`.
#[derive(Debug, Clone)]
pub struct EspfSettings {
    /// Base URL of the ESPF API (`ESPFD_ESPF_URL`, else `ESPFD_PB_URL`), no trailing `/`.
    pub url: String,
    /// Body encoding of status reports.
    pub format: EspfFormat,
    /// How reports are authenticated.
    pub auth: EspfAuth,
    /// The service group reported for (`ESPFD_GROUP`).
    pub group: String,
    /// CAs to trust instead of the public web roots (`ESPFD_PB_CA_FILE`).
    pub ca_file: Option<PathBuf>,
    /// Total time for one call (`ESPFD_PB_TIMEOUT`).
    pub timeout: Duration,
    /// Connections kept per host: as many as calls made at once.
    pub pool: usize,
}

/// Why the list of service groups could not be had (see [`EspfClient::groups`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupsError {
    /// Bearer auth needs the PortaBilling session, and logging in failed.
    Login(PbError),
    /// No reply: connection refused, timeout, TLS trouble.
    Transport(String),
    /// A reply other than 200, with its first line.
    Status { code: u16, text: String },
    /// A 200 reply without a `group_list`.
    NoGroupList,
}

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
    /// The PortaBilling session whose access token bearer auth sends.
    pb: Arc<PbClient>,
    /// Where call durations are counted.
    metrics: Arc<Metrics>,
}

impl EspfClient {
    /// Builds the client; with bearer auth the token comes from `pb`'s session.
    pub fn new(settings: &EspfSettings, pb: Arc<PbClient>) -> Result<EspfClient, Error> {
        Ok(EspfClient {
            base: settings.url.clone(),
            format: settings.format,
            auth: settings.auth.clone(),
            group: settings.group.clone(),
            agent: outbound::agent(settings.timeout, settings.pool, settings.ca_file.as_deref())?,
            pb,
            metrics: Arc::new(Metrics::new()),
        })
    }

    /// Counts call durations in `metrics` (the service's registry).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> EspfClient {
        self.metrics = metrics;
        self
    }

    /// The `Authorization` value, and for bearer auth the session generation it came from.
    fn authorization(&self) -> Result<(String, Option<u64>), PbError> {
        Ok(match &self.auth {
            EspfAuth::Bearer => {
                let (token, generation) = self.pb.token()?;
                (format!("Bearer {token}"), Some(generation))
            }
            EspfAuth::Basic { login, password } => {
                let creds = format!("{login}:{}", password.0);
                (format!("Basic {}", base64_encode(creds.as_bytes())), None)
            }
        })
    }

    /// The names of the service groups ESPF knows (`GET /espf/v1/groups`), asked with the auth
    /// reports use; `espfd check` looks for `ESPFD_GROUP` in it. A refused token is not
    /// renewed: the caller is told, and says the credentials are refused.
    pub fn groups(&self) -> Result<Vec<String>, GroupsError> {
        let (auth, _) = self.authorization().map_err(GroupsError::Login)?;
        let mut resp = self
            .agent
            .get(format!("{}/espf/v1/groups", self.base))
            .header("Accept", "application/json")
            .header("Authorization", auth)
            .call()
            .map_err(|e| GroupsError::Transport(e.to_string()))?;
        let code = resp.status().as_u16();
        let body = outbound::body_text(&mut resp, 1 << 20).unwrap_or_default();
        if code != 200 {
            return Err(GroupsError::Status {
                code,
                text: truncate_chars(body.lines().next().unwrap_or("").trim(), 200).to_string(),
            });
        }
        serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| {
                v.get("group_list")?.as_array().map(|list| {
                    list.iter()
                        .filter_map(|g| g.get("name")?.as_str().map(str::to_string))
                        .collect()
                })
            })
            .ok_or(GroupsError::NoGroupList)
    }

    /// While the ESPF API is down and a probe is due: asks it for its groups (no status is
    /// reported by this) and tells the breaker how that went. Does nothing otherwise.
    pub fn probe(&self) {
        let breaker = &self.pb.upstreams().espf;
        if breaker.down().is_none() || breaker.admit() != Admit::Probe {
            return;
        }
        match self.groups() {
            Err(GroupsError::Transport(why)) => {
                breaker.failure(&why);
            }
            Err(GroupsError::Status { code, .. })
                if Judge::defaults().verdict(code) == Verdict::Transient =>
            {
                breaker.failure(&format!("HTTP {code}"));
            }
            // The session could not be had: PortaBilling's trouble, not the ESPF API's.
            Err(GroupsError::Login(_)) => breaker.release(),
            _ => {
                breaker.success();
            }
        }
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
            let (auth, generation) = self.authorization().map_err(|e| e.into_failure("login"))?;
            let breaker = &self.pb.upstreams().espf;
            if let Admit::Down(why) = breaker.admit() {
                return Err(Failure::down(Upstream::Espf, &why));
            }
            let _timer = self.metrics.timer(Call::Espf);
            let sent = self
                .agent
                .post(&url)
                .header("Content-Type", content_type)
                .header("Authorization", auth)
                .send(body.as_str());
            let mut resp = match sent {
                Ok(resp) => resp,
                Err(e) => {
                    let why = e.to_string();
                    breaker.failure(&why);
                    return Err(
                        Failure::transient(format!("ESPF status API: {why}")).from(Upstream::Espf)
                    );
                }
            };
            let code = resp.status().as_u16();
            let text = outbound::body_text(&mut resp, 64 * 1024).unwrap_or_default();
            if code == 401 && !renewed && generation.is_some() {
                // It answered; the session is what failed.
                breaker.success();
                renewed = true;
                self.pb
                    .renew(generation)
                    .map_err(|e| e.into_failure("login"))?;
                continue;
            }
            // A 401 after a fresh session is the ESPF API's trouble, not the report's.
            let verdict = match Judge::defaults().verdict(code) {
                Verdict::Permanent if code == 401 => Verdict::Transient,
                v => v,
            };
            match verdict {
                Verdict::Transient => breaker.failure(&format!("HTTP {code}")),
                _ => breaker.success(),
            };
            match verdict {
                Verdict::Ok => return Ok(()),
                Verdict::Transient => {
                    let mut f = Failure::transient(format!(
                        "ESPF status API: HTTP {code}: {}",
                        first_line(&text)
                    ));
                    f.retry_after = outbound::retry_after(
                        resp.headers()
                            .get("retry-after")
                            .and_then(|v| v.to_str().ok()),
                    );
                    return Err(f.from(Upstream::Espf));
                }
                Verdict::Permanent => {
                    return Err(Failure::permanent(format!(
                        "ESPF status API refused the report: HTTP {code}: {}",
                        first_line(&text)
                    ))
                    .from(Upstream::Espf))
                }
            }
        }
    }
}

fn first_line(text: &str) -> &str {
    truncate_chars(text.lines().next().unwrap_or("").trim(), 300)
}
