//! Outbound authentication: what the URL connector and every template step add to a request
//! for the target (`ESPFD_TARGET_AUTH`): HTTP Basic, a bearer token, one fixed header, or an
//! OAuth 2.0 access token obtained with the client-credentials grant (RFC 6749 §4.4).
//!
//! The OAuth 2.0 token is one for all workers, kept in a [`TokenCache`]: fetched by one worker
//! at a time, renewed before it expires (`expires_in` less max(60 s, 10 %); after
//! `ESPFD_TARGET_OAUTH_TTL` when the reply has no `expires_in`), and renewed once when the
//! target answers 401 to it (`Auth::reauthorize`). A token endpoint that refuses the client
//! (4xx) is logged plainly, naming the variables to check, and asked again only after a pause
//! that grows from 5 s to 5 min, as a refused PortaBilling login is; until then every send
//! fails transiently, so the events wait and are retried.
//!
//! Secrets (the password, tokens, the client secret, access tokens) are [`Secret`]s: never in a
//! log line, a `Debug` output or a [`Failure`] message.
//!
//! Not here: the TLS side (CAs, client certificate; `outbound::agent_with`), sending and
//! judging the reply (`send.rs`, `judge.rs`).

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use serde_json::Value;
use ureq::Agent;

use super::send::OutRequest;
use crate::outbound::{self, Failure};
use crate::token::{Fetched, TokenCache};
use crate::util::{base64_encode, form_encode, now_ms, Secret};

/// The configured outbound authentication (`ESPFD_TARGET_AUTH` and its variables).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum AuthSettings {
    /// Nothing added (`none`, the default).
    #[default]
    None,
    /// `Authorization: Basic` of `ESPFD_TARGET_USER` and `ESPFD_TARGET_PASSWORD`.
    Basic { user: String, password: Secret },
    /// `Authorization: Bearer <ESPFD_TARGET_TOKEN>`.
    Bearer(Secret),
    /// The header line of `ESPFD_TARGET_HEADER`, split at its first `:`.
    Header { name: String, value: Secret },
    /// An OAuth 2.0 access token (client credentials), as `Authorization: Bearer`.
    OAuth2(OAuthSettings),
}

impl AuthSettings {
    /// The secret values of the scheme, for what shows a request to mask them.
    pub fn secrets(&self) -> Vec<&Secret> {
        match self {
            AuthSettings::None => vec![],
            AuthSettings::Basic { password, .. } => vec![password],
            AuthSettings::Bearer(token) => vec![token],
            AuthSettings::Header { value, .. } => vec![value],
            AuthSettings::OAuth2(o) => vec![&o.client_secret],
        }
    }
}

/// OAuth 2.0 client credentials (`ESPFD_TARGET_OAUTH_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthSettings {
    /// The token endpoint (`ESPFD_TARGET_OAUTH_URL`).
    pub url: String,
    /// `ESPFD_TARGET_OAUTH_CLIENT_ID`.
    pub client_id: String,
    /// `ESPFD_TARGET_OAUTH_CLIENT_SECRET`.
    pub client_secret: Secret,
    /// `ESPFD_TARGET_OAUTH_SCOPE`; none sent when unset.
    pub scope: Option<String>,
    /// How the client authenticates (`ESPFD_TARGET_OAUTH_CLIENT_AUTH`). Defaults to basic.
    pub client_auth: ClientAuth,
    /// A token's life when the reply has no `expires_in` (`ESPFD_TARGET_OAUTH_TTL`).
    /// Defaults to 5 minutes.
    pub ttl: Duration,
}

/// Where the client's id and secret go in the token request (RFC 6749 §2.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// An `Authorization: Basic` header of the form-urlencoded id and secret.
    Basic,
    /// `client_id` and `client_secret` fields in the form body.
    Post,
}

/// The variables to check when the token endpoint refuses the client.
const CHECK_VARS: &str =
    "check ESPFD_TARGET_OAUTH_CLIENT_ID, ESPFD_TARGET_OAUTH_CLIENT_SECRET and ESPFD_TARGET_OAUTH_URL";
/// First pause after the token endpoint refused the client; doubles up to
/// [`REFUSED_PAUSE_MAX_MS`].
const REFUSED_PAUSE_MS: i64 = 5_000;
const REFUSED_PAUSE_MAX_MS: i64 = 300_000;
/// Renew at least this long before `expires_in` runs out (and at least 10 % of it before).
const RENEW_MARGIN_MS: i64 = 60_000;
/// Largest token endpoint reply read.
const MAX_TOKEN_REPLY: u64 = 64 * 1024;

/// The authentication a [`super::send::Sender`] applies.
pub(super) enum Auth {
    None,
    /// Basic, bearer and header: one header whose value never changes.
    Fixed {
        name: String,
        value: Secret,
        what: &'static str,
    },
    OAuth2(Box<OAuth>),
}

/// An OAuth 2.0 client: its settings, the shared token, and the last refusal.
pub(super) struct OAuth {
    settings: OAuthSettings,
    agent: Agent,
    token: TokenCache<Token>,
    refused: Mutex<Option<Refusal>>,
}

/// An access token and the lifetime its endpoint gave it.
#[derive(Clone)]
struct Token {
    access: Secret,
    expires_in: Option<i64>,
}

/// The last refusal of the token endpoint, and until when it is not asked again.
struct Refusal {
    until: i64,
    pause: i64,
    why: String,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Auth {
    /// The authentication `settings` describe; the token endpoint is reached with `agent`
    /// (the target's, so its CAs and client certificate apply there too).
    pub(super) fn new(settings: &AuthSettings, agent: &Agent) -> Auth {
        match settings {
            AuthSettings::None => Auth::None,
            AuthSettings::Basic { user, password } => Auth::Fixed {
                name: "Authorization".into(),
                value: Secret(format!(
                    "Basic {}",
                    base64_encode(format!("{user}:{}", password.0).as_bytes())
                )),
                what: "HTTP Basic",
            },
            AuthSettings::Bearer(token) => Auth::Fixed {
                name: "Authorization".into(),
                value: Secret(format!("Bearer {}", token.0)),
                what: "a bearer token",
            },
            AuthSettings::Header { name, value } => Auth::Fixed {
                name: name.clone(),
                value: value.clone(),
                what: "a fixed header",
            },
            AuthSettings::OAuth2(s) => Auth::OAuth2(Box::new(OAuth {
                settings: s.clone(),
                agent: agent.clone(),
                token: TokenCache::new(),
                refused: Mutex::new(None),
            })),
        }
    }

    /// The header this authentication sets.
    pub(super) fn header_name(&self) -> Option<&str> {
        match self {
            Auth::None => None,
            Auth::Fixed { name, .. } => Some(name),
            Auth::OAuth2(_) => Some("Authorization"),
        }
    }

    /// The header to add to `req` — none when there is no authentication or the request sets
    /// that header itself — and, for an OAuth 2.0 token, its generation (for
    /// [`Auth::reauthorize`] after a 401).
    pub(super) fn header_for(
        &self,
        req: &OutRequest,
    ) -> Result<Option<(String, Secret, Option<u64>)>, Failure> {
        let Some(name) = self.header_name() else {
            return Ok(None);
        };
        if req.header(name).is_some() {
            return Ok(None);
        }
        match self {
            Auth::None => Ok(None),
            Auth::Fixed { name, value, .. } => Ok(Some((name.clone(), value.clone(), None))),
            Auth::OAuth2(o) => {
                let (token, generation) = o.token.get(|_| o.fetch())?;
                Ok(Some((
                    "Authorization".into(),
                    Secret(format!("Bearer {}", token.access.0)),
                    Some(generation),
                )))
            }
        }
    }

    /// After the target answered 401 to the token of `generation`: a new token (unless
    /// another worker already got one), as the header to send the request again with.
    pub(super) fn reauthorize(&self, generation: u64) -> Result<(String, Secret), Failure> {
        let Auth::OAuth2(o) = self else {
            return Err(Failure::permanent("no OAuth 2.0 token to renew"));
        };
        let (token, _) = o.token.renew(Some(generation), |_| o.fetch())?;
        Ok((
            "Authorization".into(),
            Secret(format!("Bearer {}", token.access.0)),
        ))
    }

    /// For `espfd check`: with OAuth 2.0 a token fetched now; otherwise what is configured.
    pub(super) fn check(&self) -> Result<String, String> {
        match self {
            Auth::None => Ok("no outbound authentication (ESPFD_TARGET_AUTH=none)".into()),
            Auth::Fixed { name, what, .. } => {
                Ok(format!("outbound authentication: {what} ({name})"))
            }
            Auth::OAuth2(o) => {
                let (token, _) = o.token.get(|_| o.fetch()).map_err(|f| f.message)?;
                Ok(match token.expires_in {
                    Some(s) => format!(
                        "OAuth 2.0 token fetched from {} (expires in {s} s)",
                        o.settings.url
                    ),
                    None => format!(
                        "OAuth 2.0 token fetched from {} (no expires_in; renewed after ESPFD_TARGET_OAUTH_TTL, {} s)",
                        o.settings.url,
                        o.settings.ttl.as_secs()
                    ),
                })
            }
        }
    }
}

impl OAuth {
    /// Asks the token endpoint for a new token (client credentials grant), unless it refused
    /// the client less than its pause ago.
    fn fetch(&self) -> Result<Fetched<Token>, Failure> {
        let s = &self.settings;
        if let Some(r) = lock(&self.refused).as_ref() {
            let now = now_ms();
            if now < r.until {
                return Err(Failure::transient(format!(
                    "OAuth 2.0 token endpoint {} refused the client ({}); {CHECK_VARS}; next attempt in {} s",
                    s.url,
                    r.why,
                    (r.until - now) / 1000 + 1
                )));
            }
        }
        let mut body = String::from("grant_type=client_credentials");
        if let Some(scope) = &s.scope {
            body.push_str(&format!("&scope={}", form_encode(scope)));
        }
        let mut req = self
            .agent
            .post(&s.url)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .header("Accept", "application/json");
        match s.client_auth {
            ClientAuth::Basic => {
                // RFC 6749 §2.3.1: each form-urlencoded, then joined by ':' for Basic.
                let pair = format!(
                    "{}:{}",
                    form_encode(&s.client_id),
                    form_encode(&s.client_secret.0)
                );
                req = req.header(
                    "Authorization",
                    format!("Basic {}", base64_encode(pair.as_bytes())),
                );
            }
            ClientAuth::Post => body.push_str(&format!(
                "&client_id={}&client_secret={}",
                form_encode(&s.client_id),
                form_encode(&s.client_secret.0)
            )),
        }
        let mut resp = req
            .send(body.as_str())
            .map_err(|e| Failure::transient(format!("OAuth 2.0 token endpoint {}: {e}", s.url)))?;
        let status = resp.status().as_u16();
        let text = outbound::body_text(&mut resp, MAX_TOKEN_REPLY).unwrap_or_default();
        let reply: Option<Value> = serde_json::from_str(&text).ok();
        match status {
            200..=299 => {
                let reply = reply.unwrap_or(Value::Null);
                let Some(access) = reply.get("access_token").and_then(Value::as_str) else {
                    return Err(Failure::transient(format!(
                        "OAuth 2.0 token endpoint {} answered HTTP {status} without an access_token",
                        s.url
                    )));
                };
                let expires_in = reply.get("expires_in").and_then(|v| {
                    v.as_i64()
                        .or_else(|| v.as_str().and_then(|t| t.trim().parse().ok()))
                });
                *lock(&self.refused) = None;
                let now = now_ms();
                log::info!(
                    "OAuth 2.0: token fetched from {} ({})",
                    s.url,
                    match expires_in {
                        Some(e) => format!("expires in {e} s"),
                        None => format!("no expires_in; used for {} s", s.ttl.as_secs()),
                    }
                );
                Ok((
                    Token {
                        access: Secret(access.to_string()),
                        expires_in,
                    },
                    Some(renew_at(expires_in, s.ttl, now)),
                ))
            }
            400..=499 if status != 408 && status != 429 => {
                let why = self.scrub(&refusal_reason(status, reply.as_ref()));
                let mut refused = lock(&self.refused);
                let pause = refused.as_ref().map_or(REFUSED_PAUSE_MS, |r| {
                    (r.pause * 2).min(REFUSED_PAUSE_MAX_MS)
                });
                log::error!(
                    "OAuth 2.0 token endpoint {} refused the client {} ({why}); {CHECK_VARS}; next attempt in {} s",
                    s.url,
                    s.client_id,
                    pause / 1000
                );
                *refused = Some(Refusal {
                    until: now_ms() + pause,
                    pause,
                    why: why.clone(),
                });
                Err(Failure::transient(format!(
                    "OAuth 2.0 token endpoint {} refused the client ({why}); {CHECK_VARS}",
                    s.url
                )))
            }
            _ => Err(Failure::transient(format!(
                "OAuth 2.0 token endpoint {} answered HTTP {status}",
                s.url
            ))),
        }
    }

    /// `text` with the client secret, however encoded, replaced by `***` (an endpoint's
    /// error text might echo what it was sent).
    fn scrub(&self, text: &str) -> String {
        let secret = &self.settings.client_secret.0;
        let mut out = text.to_string();
        for form in [secret.clone(), form_encode(secret)] {
            if !form.is_empty() {
                out = out.replace(&form, "***");
            }
        }
        out
    }
}

/// `HTTP 401: invalid_client: <error_description>`, from the endpoint's error reply.
fn refusal_reason(status: u16, reply: Option<&Value>) -> String {
    let field = |name: &str| {
        reply
            .and_then(|r| r.get(name))
            .and_then(Value::as_str)
            .map(|s| crate::util::truncate_chars(s, 200).to_string())
    };
    match (field("error"), field("error_description")) {
        (Some(e), Some(d)) => format!("HTTP {status}: {e}: {d}"),
        (Some(e), None) => format!("HTTP {status}: {e}"),
        _ => format!("HTTP {status}"),
    }
}

/// When a token fetched at `now` is renewed: `expires_in` less max(60 s, 10 %) — which for a
/// token of a minute or less is at once, i.e. each use fetches a new one — or after `ttl`
/// when the reply gave no `expires_in`.
fn renew_at(expires_in: Option<i64>, ttl: Duration, now: i64) -> i64 {
    match expires_in {
        Some(secs) => {
            let life = secs.max(0) * 1000;
            now + (life - RENEW_MARGIN_MS.max(life / 10)).max(0)
        }
        None => now + ttl.as_millis() as i64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_renewed_before_expires_in_or_after_the_ttl() {
        let ttl = Duration::from_secs(300);
        // An hour: 10 % (6 min) early.
        assert_eq!(renew_at(Some(3600), ttl, 0), 3_240_000);
        // Five minutes: a minute early.
        assert_eq!(renew_at(Some(300), ttl, 0), 240_000);
        // A minute or less: at once.
        assert_eq!(renew_at(Some(60), ttl, 1000), 1000);
        assert_eq!(renew_at(Some(5), ttl, 1000), 1000);
        // No expires_in: the TTL as it is.
        assert_eq!(renew_at(None, ttl, 1000), 301_000);
    }

    #[test]
    fn refusals_quote_the_endpoint_error() {
        let reply = serde_json::json!({"error": "invalid_client", "error_description": "bad"});
        assert_eq!(
            refusal_reason(401, Some(&reply)),
            "HTTP 401: invalid_client: bad"
        );
        assert_eq!(refusal_reason(403, None), "HTTP 403");
    }

    #[test]
    fn fixed_schemes_make_their_header_and_debug_hides_secrets() {
        let agent: Agent = Agent::config_builder().build().into();
        let basic = Auth::new(
            &AuthSettings::Basic {
                user: "Aladdin".into(),
                password: Secret("open sesame".into()),
            },
            &agent,
        );
        let req = OutRequest::default();
        let (name, value, generation) = basic.header_for(&req).unwrap().unwrap();
        // RFC 7617's example.
        assert_eq!(
            (name.as_str(), value.0.as_str(), generation),
            ("Authorization", "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==", None)
        );
        let header = Auth::new(
            &AuthSettings::Header {
                name: "X-API-Key".into(),
                value: Secret("abc".into()),
            },
            &agent,
        );
        assert_eq!(header.header_name(), Some("X-API-Key"));
        // A request that sets the header itself keeps its own.
        let own = OutRequest {
            headers: vec![("x-api-key".into(), "mine".into())],
            ..OutRequest::default()
        };
        assert!(header.header_for(&own).unwrap().is_none());
        let settings = AuthSettings::Bearer(Secret("t0ken".into()));
        assert!(!format!("{settings:?}").contains("t0ken"));
    }
}
