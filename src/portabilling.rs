//! The PortaBilling JSON API client and its one shared session.
//!
//! Calls are `POST <base>/rest/<Service>/<method>` with `{"params": {...}}` and
//! `Authorization: Bearer <access_token>`. All workers share one session: it is opened once,
//! refreshed shortly before it expires, and opened again only when PortaBilling answers with
//! one of the auth faultcodes — and then by one thread only (single flight); the others wait
//! and use the new token. A call that hits an auth fault is retried once with the new token.
//! The session is kept in a [`TokenCache`], the mechanism the target's OAuth 2.0 token uses.
//!
//! Not here: what to do with a failure (the pipeline decides), ESPF status calls (`espf.rs`).

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::{json, Value};

use crate::error::Error;
use crate::event::{EntityKind, EntityRef};
use crate::metrics::{Call, Metrics};
use crate::outbound::{self, Failure};
use crate::token::{Fetched, Previous, TokenCache};
use crate::upstream::{Admit, Upstream, Upstreams, DEFAULT_BREAKER_FAILURES};
use crate::util::{now_ms, parse_utc};

/// Faultcodes that mean "the session is not valid": log in again and retry once.
pub const AUTH_FAULTS: &[&str] = &[
    "Server.Session.check_auth.auth_failed",
    "Client.Session.check_auth.failed_to_process_access_token",
    "Client.Session.check_auth.failed_to_process_jwt",
    "Client.check_auth.envelope_missed",
];

/// Refresh at most this long before the access token expires (and at most a fifth of its
/// lifetime before, so a short-lived token is not refreshed on every call).
const REFRESH_MARGIN_MS: i64 = 60_000;
/// First pause after PortaBilling refused a login; doubles up to [`LOGIN_BACKOFF_MAX_MS`].
/// PortaBilling locks an account out after repeated failed logins, so never hammer it.
const LOGIN_BACKOFF_MS: i64 = 5_000;
const LOGIN_BACKOFF_MAX_MS: i64 = 300_000;
/// Largest reply body read from PortaBilling.
const MAX_REPLY: u64 = 8 << 20;

/// The PortaBilling credential (`ESPFD_PB_PASSWORD` or `ESPFD_PB_TOKEN`).
#[derive(Clone, PartialEq, Eq)]
pub enum PbSecret {
    /// Login with a password.
    Password(String),
    /// Login with an API token.
    Token(String),
}

impl fmt::Debug for PbSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PbSecret::Password(_) => f.write_str("Password(<redacted>)"),
            PbSecret::Token(_) => f.write_str("Token(<redacted>)"),
        }
    }
}

/// What the client needs, built by `config`.
#[derive(Debug, Clone)]
pub struct PbSettings {
    /// The web server (`ESPFD_PB_URL`), no trailing `/`; the API is under `/rest`.
    pub url: String,
    /// The API user (`ESPFD_PB_LOGIN`).
    pub login: String,
    /// Its password or token.
    pub secret: PbSecret,
    /// CAs to trust instead of the public web roots (`ESPFD_PB_CA_FILE`).
    pub ca_file: Option<PathBuf>,
    /// Total time for one call (`ESPFD_PB_TIMEOUT`).
    pub timeout: Duration,
    /// Connections kept per host: as many as calls made at once.
    pub pool: usize,
}

/// What a call to PortaBilling ended in, short of a result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PbError {
    /// No usable reply: connection refused, timeout, a 5xx without faultcode, invalid JSON.
    Transport(String),
    /// An API fault (HTTP 500 with a faultcode).
    Fault { code: String, text: String },
    /// Session/login was refused (wrong login, password or token; locked out).
    LoginRefused { code: String, text: String },
    /// Not sent: PortaBilling is down (its breaker is open); why it went down.
    Down(String),
}

impl PbError {
    /// Classifies the error for the pipeline.
    pub fn into_failure(self, what: &str) -> Failure {
        let failure = match self {
            PbError::Transport(m) => Failure::transient(format!("PortaBilling {what}: {m}")),
            PbError::Fault { code, text } => {
                Failure::permanent(format!("PortaBilling {what}: {code}: {text}"))
            }
            // Wrong credentials are fixed by the operator, not by time, but the events must
            // not be lost meanwhile: retry, and say plainly what is wrong.
            PbError::LoginRefused { code, text } => Failure::transient(format!(
                "PortaBilling login refused ({code}: {text}); check ESPFD_PB_LOGIN and ESPFD_PB_PASSWORD/ESPFD_PB_TOKEN"
            )),
            PbError::Down(why) => return Failure::down(Upstream::PortaBilling, &why),
        };
        failure.from(Upstream::PortaBilling)
    }
}

/// The session's tokens; kept in a [`TokenCache`] with their refresh time and generation.
#[derive(Clone)]
struct Session {
    access_token: String,
    refresh_token: Option<String>,
}

/// The client. Share it behind an `Arc`.
pub struct PbClient {
    base: String,
    login: String,
    secret: PbSecret,
    agent: ureq::Agent,
    /// The one session, opened and renewed by one thread at a time.
    session: TokenCache<Session>,
    logins: AtomicU64,
    refused: Mutex<Option<Refusal>>,
    /// Unix ms of PortaBilling's last answer (a result or a fault); 0 before the first.
    answered_at: AtomicI64,
    /// Since when (unix ms) and why calls have failed without an answer from PortaBilling
    /// (connection refused, timeout, HTTP error without a fault); `None` after an answer.
    unreachable: Mutex<Option<(i64, String)>>,
    /// Where logins and call durations are counted.
    metrics: Arc<Metrics>,
    /// The breakers: PortaBilling's gates every call made here.
    upstreams: Arc<Upstreams>,
}

/// The last refused login, and until when no new attempt is made.
struct Refusal {
    until: i64,
    pause: i64,
    code: String,
    text: String,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl PbClient {
    /// Builds the client; no network traffic yet.
    pub fn new(settings: &PbSettings) -> Result<PbClient, Error> {
        let agent = outbound::agent(settings.timeout, settings.pool, settings.ca_file.as_deref())?;
        Ok(PbClient {
            base: settings.url.clone(),
            login: settings.login.clone(),
            secret: settings.secret.clone(),
            agent,
            session: TokenCache::new(),
            logins: AtomicU64::new(0),
            refused: Mutex::new(None),
            answered_at: AtomicI64::new(0),
            unreachable: Mutex::new(None),
            metrics: Arc::new(Metrics::new()),
            upstreams: Arc::new(Upstreams::new(DEFAULT_BREAKER_FAILURES)),
        })
    }

    /// Counts logins and call durations in `metrics` (the service's registry) rather than
    /// in a registry of the client's own that no scrape reads.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> PbClient {
        self.metrics = metrics;
        self
    }

    /// Successful logins so far.
    pub fn logins(&self) -> u64 {
        self.logins.load(Ordering::Relaxed)
    }

    /// When PortaBilling last answered (a result or a fault), unix ms; `None` before the
    /// first answer. `/readyz` reads it.
    pub fn last_answer_ms(&self) -> Option<i64> {
        Some(self.answered_at.load(Ordering::Relaxed)).filter(|&t| t > 0)
    }

    /// Since when (unix ms) and why PortaBilling has not answered, counted from the first
    /// call that failed without an answer after the last one that had one; `None` while it
    /// answers. `/readyz` reads it.
    pub fn unreachable(&self) -> Option<(i64, String)> {
        lock(&self.unreachable).clone()
    }

    /// A valid access token and its generation, logging in or refreshing if needed.
    pub fn token(&self) -> Result<(String, u64), PbError> {
        self.session
            .get(|previous| self.new_session(previous))
            .map(|(s, generation)| (s.access_token, generation))
    }

    /// Replaces the session unless another thread already did since `stale` was seen.
    /// `stale` None means "there is no session yet".
    pub fn renew(&self, stale: Option<u64>) -> Result<(String, u64), PbError> {
        self.session
            .renew(stale, |previous| self.new_session(previous))
            .map(|(s, generation)| (s.access_token, generation))
    }

    /// A new session in place of `previous`: an expiring (not rejected) token is refreshed;
    /// a rejected one, or a refresh that fails, means a new login.
    fn new_session(
        &self,
        previous: Option<Previous<Session>>,
    ) -> Result<Fetched<Session>, PbError> {
        let previous_refresh = previous
            .as_ref()
            .and_then(|p| p.value.refresh_token.clone());
        let refreshed = match previous {
            Some(p) if p.expiring => p.value.refresh_token.and_then(|rt| {
                self.post(
                    "Session",
                    "refresh_access_token",
                    &json!({"params": {"refresh_token": rt}}),
                    None,
                )
                .ok()
            }),
            _ => None,
        };
        let reply = match refreshed {
            Some(r) => r,
            None => self.open_session()?,
        };
        let Some(access_token) = reply.get("access_token").and_then(Value::as_str) else {
            return Err(PbError::Transport(
                "session reply has no access_token".into(),
            ));
        };
        let session = Session {
            access_token: access_token.to_string(),
            refresh_token: reply
                .get("refresh_token")
                .and_then(Value::as_str)
                .map(str::to_string)
                .or(previous_refresh),
        };
        Ok((session, refresh_at(&reply, now_ms())))
    }

    fn open_session(&self) -> Result<Value, PbError> {
        if let Some(r) = lock(&self.refused).as_ref() {
            if now_ms() < r.until {
                return Err(PbError::LoginRefused {
                    code: r.code.clone(),
                    text: format!(
                        "{} (next login attempt in {} s)",
                        r.text,
                        (r.until - now_ms()) / 1000 + 1
                    ),
                });
            }
        }
        let params = match &self.secret {
            PbSecret::Password(p) => json!({"login": self.login, "password": p}),
            PbSecret::Token(t) => json!({"login": self.login, "token": t}),
        };
        match self.post("Session", "login", &json!({ "params": params }), None) {
            Ok(v) => {
                *lock(&self.refused) = None;
                self.logins.fetch_add(1, Ordering::Relaxed);
                self.metrics.login();
                log::info!("PortaBilling: logged in as {}", self.login);
                Ok(v)
            }
            Err(PbError::Fault { code, text }) => {
                let mut refused = lock(&self.refused);
                let pause = refused.as_ref().map_or(LOGIN_BACKOFF_MS, |r| {
                    (r.pause * 2).min(LOGIN_BACKOFF_MAX_MS)
                });
                log::error!(
                    "PortaBilling refused the login of {} ({code}: {text}); check ESPFD_PB_LOGIN and ESPFD_PB_PASSWORD/ESPFD_PB_TOKEN; next attempt in {} s",
                    self.login,
                    pause / 1000
                );
                *refused = Some(Refusal {
                    until: now_ms() + pause,
                    pause,
                    code: code.clone(),
                    text: text.clone(),
                });
                Err(PbError::LoginRefused { code, text })
            }
            Err(e) => Err(e),
        }
    }

    /// Calls `<Service>/<method>` with `params`, renewing the session once on an auth fault.
    pub fn call(&self, service: &str, method: &str, params: Value) -> Result<Value, PbError> {
        let body = json!({ "params": params });
        let (token, generation) = self.token()?;
        match self.post(service, method, &body, Some(&token)) {
            Err(PbError::Fault { code, .. }) if AUTH_FAULTS.contains(&code.as_str()) => {
                log::info!("PortaBilling: session rejected ({code}); logging in again");
                let (token, _) = self.renew(Some(generation))?;
                self.post(service, method, &body, Some(&token))
            }
            other => other,
        }
    }

    fn post(
        &self,
        service: &str,
        method: &str,
        body: &Value,
        bearer: Option<&str>,
    ) -> Result<Value, PbError> {
        let breaker = &self.upstreams.portabilling;
        if let Admit::Down(why) = breaker.admit() {
            return Err(PbError::Down(why));
        }
        let result = self.post_once(service, method, body, bearer);
        let mut unreachable = lock(&self.unreachable);
        match &result {
            Err(PbError::Transport(why)) => {
                if unreachable.is_none() {
                    *unreachable = Some((now_ms(), why.clone()));
                }
                breaker.failure(why);
            }
            _ => {
                *unreachable = None;
                breaker.success();
            }
        }
        result
    }

    /// Shares the service's upstream breakers (by default the client has its own).
    pub fn with_upstreams(mut self, upstreams: Arc<Upstreams>) -> PbClient {
        self.upstreams = upstreams;
        self
    }

    /// The breakers this client reports to.
    pub fn upstreams(&self) -> &Arc<Upstreams> {
        &self.upstreams
    }

    fn post_once(
        &self,
        service: &str,
        method: &str,
        body: &Value,
        bearer: Option<&str>,
    ) -> Result<Value, PbError> {
        let _timer = self.metrics.timer(Call::PortaBilling);
        let url = format!("{}/rest/{service}/{method}", self.base);
        let mut req = self
            .agent
            .post(&url)
            .header("Content-Type", "application/json")
            .header("Accept", "application/json");
        if let Some(t) = bearer {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        let started = std::time::Instant::now();
        let mut resp = req
            .send(body.to_string())
            .map_err(|e| PbError::Transport(format!("{service}/{method}: {e}")))?;
        let status = resp.status().as_u16();
        let text = outbound::body_text(&mut resp, MAX_REPLY).map_err(PbError::Transport)?;
        log::debug!(
            "PortaBilling {service}/{method}: {status} in {} ms",
            started.elapsed().as_millis()
        );
        if status == 200 || status == 500 {
            self.answered_at.store(now_ms(), Ordering::Relaxed);
        }
        let parsed: Option<Value> = serde_json::from_str(&text).ok();
        match (status, parsed) {
            (200, Some(v @ Value::Object(_))) => Ok(v),
            (200, _) => Err(PbError::Transport(format!(
                "{service}/{method}: reply is not a JSON object"
            ))),
            (500, Some(v)) if v.get("faultcode").is_some() => Err(PbError::Fault {
                code: v["faultcode"].as_str().unwrap_or("").to_string(),
                text: v
                    .get("faultstring")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
            }),
            (s, _) => Err(PbError::Transport(format!(
                "{service}/{method}: HTTP {s} without a fault"
            ))),
        }
    }

    /// Looks up the entity an event names. `Ok(None)` when PortaBilling does not know it
    /// (`{}` or an empty list), e.g. because it was deleted.
    pub fn lookup(&self, entity: &EntityRef) -> Result<Option<Value>, PbError> {
        let id = || -> Value {
            entity
                .id
                .parse::<i64>()
                .map(Value::from)
                .unwrap_or(Value::Null)
        };
        let (service, method, params, key) = match entity.kind {
            EntityKind::Account => (
                "Account",
                "get_account_info",
                json!({"i_account": id()}),
                "account_info",
            ),
            EntityKind::Customer => (
                "Customer",
                "get_customer_info",
                json!({"i_customer": id()}),
                "customer_info",
            ),
            EntityKind::Invoice => (
                "Invoice",
                "get_invoice_info",
                json!({"i_invoice": id()}),
                "invoice_info",
            ),
            EntityKind::Did => {
                let reply = self.call(
                    "DID",
                    "get_number_list",
                    json!({"number": entity.id, "limit": 10, "offset": 0}),
                )?;
                let found = reply
                    .get("number_list")
                    .and_then(Value::as_array)
                    .and_then(|list| {
                        list.iter().find(|d| {
                            d.get("number").and_then(Value::as_str) == Some(entity.id.as_str())
                        })
                    })
                    .cloned();
                return Ok(found);
            }
        };
        let reply = self.call(service, method, params)?;
        Ok(reply
            .get(key)
            .filter(|v| v.as_object().is_some_and(|o| !o.is_empty()))
            .cloned())
    }
}

/// When a session from this login/refresh reply should be renewed: before `expires_in`
/// seconds, else before `expires_at` (UTC), by at most a minute and at most a fifth of the
/// token's life. `None` when the reply gives neither (renewed only when rejected).
fn refresh_at(reply: &Value, now: i64) -> Option<i64> {
    let expires_at = reply
        .get("expires_in")
        .and_then(Value::as_i64)
        .map(|s| now + s * 1000)
        .or_else(|| {
            reply
                .get("expires_at")
                .and_then(Value::as_str)
                .and_then(parse_utc)
        })?;
    Some(expires_at - REFRESH_MARGIN_MS.min((expires_at - now).max(0) / 5))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_time_comes_from_expires_in_or_expires_at() {
        let now = parse_utc("2025-01-01 12:00:00").unwrap();
        // 48 h token: renewed a minute early.
        let r = refresh_at(&json!({"expires_in": 172_800}), now).unwrap();
        assert_eq!(r, now + 172_800_000 - 60_000);
        // Only expires_at (older releases): the same rule.
        let r = refresh_at(&json!({"expires_at": "2025-01-01 13:00:00"}), now).unwrap();
        assert_eq!(r, now + 3_600_000 - 60_000);
        // expires_in wins when both are there.
        let r = refresh_at(
            &json!({"expires_in": 900, "expires_at": "2030-01-01 00:00:00"}),
            now,
        )
        .unwrap();
        assert_eq!(r, now + 900_000 - 60_000);
        // A 2 s token is not renewed on every call: a fifth of its life early.
        assert_eq!(
            refresh_at(&json!({"expires_in": 2}), now).unwrap(),
            now + 1_600
        );
        assert_eq!(refresh_at(&json!({"access_token": "x"}), now), None);
    }
}
