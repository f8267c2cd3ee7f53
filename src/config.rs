//! Configuration: environment → [`RawConfig`] → validated [`Config`] (one concept, long
//! because the list of every variable lives here).
//!
//! [`VARS`] is the single list of every variable espfd reads, with its default and meaning;
//! `espfd help env` prints it and [`RawConfig::from_lookup`] reads exactly those names. The rest
//! of the program only ever sees a [`Config`], whose values have been checked. A problem is
//! reported naming the variable at fault, before anything listens. Each default is written
//! there and nowhere else: `help env`, `contrib/espfd.env.example` (a test keeps it in step)
//! and [`Limits::default`] come from it.
//!
//! This module sits above the components: it builds each one's settings type (`PbSettings`,
//! `EspfSettings`, `ConnectorSettings`, `InboundAuth`, `Limits`, ...), defined where it is used,
//! and none of them imports it.
//!
//! Secrets may instead be given as `<NAME>_FILE`, the path of a file holding the value (one
//! trailing newline is dropped), so that they stay out of the process environment listing.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::connector::auth::{AuthSettings, ClientAuth, OAuthSettings};
use crate::connector::{ConnectorSettings, ConnectorSpec};
use crate::error::ConfigError;
use crate::espf::{EspfAuth, EspfFormat, EspfSettings};
use crate::filter::EventTypes;
use crate::http::{AllowList, Limits, TlsFiles};
use crate::ingress::InboundAuth;
use crate::logging::LogFormat;
use crate::outbound::{ClientCertFiles, OutboundTls};
use crate::portabilling::{PbSecret, PbSettings};
use crate::util::{parse_duration, Secret};

/// One environment variable: its name, default, whether it is a secret, and its meaning.
pub struct Var {
    /// The variable's name.
    pub name: &'static str,
    /// The default, or `None` when there is none (required or simply unset).
    pub default: Option<&'static str>,
    /// Secrets accept a `<NAME>_FILE` variant and are never printed.
    pub secret: bool,
    /// One line saying what the variable does.
    pub help: &'static str,
}

const fn var(name: &'static str, default: Option<&'static str>, help: &'static str) -> Var {
    Var {
        name,
        default,
        secret: false,
        help,
    }
}

const fn secret(name: &'static str, help: &'static str) -> Var {
    Var {
        name,
        default: None,
        secret: true,
        help,
    }
}

/// Every variable espfd reads, in the order `espfd help env` shows them.
pub const VARS: &[Var] = &[
    var("ESPFD_LISTEN", Some("0.0.0.0:8080"), "address and port the listener binds (ingress for ESPF, health, metrics)"),
    var("ESPFD_EVENTS_PATH", Some("/events"), "path ESPF POSTs events to; set the EventSender URL to http://<host>:<port><path>"),
    var("ESPFD_AUTH", Some("basic"), "how ESPF authenticates: basic | custom | signature | none (none must be chosen explicitly)"),
    var("ESPFD_AUTH_USER", None, "basic auth: user name ESPF sends (required with ESPFD_AUTH=basic)"),
    secret("ESPFD_AUTH_PASSWORD", "basic auth: password ESPF sends (required with ESPFD_AUTH=basic)"),
    secret("ESPFD_AUTH_CUSTOM", "custom auth: the whole Authorization value ESPF sends, e.g. 'Plain passexample'"),
    var("ESPFD_AUTH_KEY_ID", None, "signature auth: the key ID ESPF sends as keyId (required with ESPFD_AUTH=signature)"),
    secret("ESPFD_AUTH_KEY", "signature auth: the signature key (HMAC-SHA1 secret) (required with ESPFD_AUTH=signature)"),
    var("ESPFD_AUTH_MAX_SKEW", Some("300"), "signature auth: how far the signed Date header may be from espfd's clock"),
    var("ESPFD_TLS_CERT", None, "HTTPS: PEM file with the certificate chain, server certificate first (with ESPFD_TLS_KEY; reloaded on SIGHUP)"),
    var("ESPFD_TLS_KEY", None, "HTTPS: PEM file with the private key: PKCS#8, PKCS#1 (RSA) or SEC1 (EC) (with ESPFD_TLS_CERT)"),
    var("ESPFD_ALLOW_FROM", None, "comma-separated addresses/CIDR blocks allowed to connect, e.g. 10.0.0.0/8,::1 (default: everyone)"),
    var("ESPFD_PB_URL", None, "PortaBilling web server, e.g. https://pb.example.net (required); the API is under /rest"),
    var("ESPFD_PB_LOGIN", None, "PortaBilling API user (administrator realm) (required)"),
    secret("ESPFD_PB_PASSWORD", "password of ESPFD_PB_LOGIN (this or ESPFD_PB_TOKEN is required)"),
    secret("ESPFD_PB_TOKEN", "API token of ESPFD_PB_LOGIN, used instead of the password when set"),
    var("ESPFD_PB_CA_FILE", None, "PEM file of CA certificates to trust for PortaBilling and ESPF (default: public web roots)"),
    var("ESPFD_PB_TIMEOUT", Some("15s"), "total time allowed for one PortaBilling or ESPF API call"),
    var("ESPFD_ESPF_URL", None, "ESPF API base URL for status reports (default: ESPFD_PB_URL)"),
    var("ESPFD_ESPF_FORMAT", Some("form"), "body of status reports: form (x-www-form-urlencoded) | json"),
    var("ESPFD_ESPF_AUTH", Some("bearer"), "status report auth: bearer (PortaBilling session token) | basic (ESPFD_PB_LOGIN + ESPFD_PB_PASSWORD)"),
    var("ESPFD_GROUP", None, "ESPF service group the statuses are reported for, e.g. HSS (required)"),
    var("ESPFD_EVENT_TYPES", Some("*"), "event types to provision, comma-separated; * matches any run of characters, / included (e.g. Subscriber/*, SIM/*); others are answered 200 and stored as skipped"),
    var("ESPFD_TARGET_URL", None, "external system endpoint that receives one JSON document per event (this or ESPFD_TARGET_EXEC is required)"),
    var("ESPFD_TARGET_EXEC", None, "command (run by /bin/sh -c) that gets the event document on stdin; exit 0 = OK, 75 = retry later, other = failed"),
    var("ESPFD_TARGET_TEMPLATE", None, "request template file (.http, MiniJinja) that speaks the external system's own API; one of ESPFD_TARGET_URL, _EXEC, _TEMPLATE is required"),
    var("ESPFD_EXEC_TIMEOUT", Some("60s"), "time allowed for one run of ESPFD_TARGET_EXEC before it is killed (and retried)"),
    secret("ESPFD_CALLBACK_TOKEN", "bearer token a target must send to POST /events/<i_event>/status (asynchronous completion); unset = endpoint off"),
    var("ESPFD_ASYNC_TIMEOUT", Some("1h"), "how long an IN_PROGRESS event waits for its completion callback before it is FAILED"),
    var("ESPFD_TARGET_TIMEOUT", Some("30s"), "total time allowed for one call to the target"),
    var("ESPFD_TARGET_AUTH", Some("none"), "how espfd authenticates to the target (URL and template connectors): none | basic | bearer | header | oauth2"),
    var("ESPFD_TARGET_USER", None, "basic: user name sent to the target (required with ESPFD_TARGET_AUTH=basic)"),
    secret("ESPFD_TARGET_PASSWORD", "basic: password sent to the target (required with ESPFD_TARGET_AUTH=basic)"),
    secret("ESPFD_TARGET_TOKEN", "bearer: token sent as 'Authorization: Bearer <token>' (required with ESPFD_TARGET_AUTH=bearer)"),
    secret("ESPFD_TARGET_HEADER", "header: one whole header line sent to the target, e.g. 'X-API-Key: abc' (required with ESPFD_TARGET_AUTH=header)"),
    var("ESPFD_TARGET_OAUTH_URL", None, "oauth2: the token endpoint (client credentials grant), http:// or https:// (required with ESPFD_TARGET_AUTH=oauth2)"),
    var("ESPFD_TARGET_OAUTH_CLIENT_ID", None, "oauth2: the client id (required with ESPFD_TARGET_AUTH=oauth2)"),
    secret("ESPFD_TARGET_OAUTH_CLIENT_SECRET", "oauth2: the client secret (required with ESPFD_TARGET_AUTH=oauth2)"),
    var("ESPFD_TARGET_OAUTH_SCOPE", None, "oauth2: the scope asked for, e.g. https://org.crm.dynamics.com/.default (default: none sent)"),
    var("ESPFD_TARGET_OAUTH_CLIENT_AUTH", Some("basic"), "oauth2: how the client authenticates to the token endpoint: basic (Authorization header) | post (client_id and client_secret in the body)"),
    var("ESPFD_TARGET_OAUTH_TTL", Some("5m"), "oauth2: how long a token is used when the token endpoint gives no expires_in"),
    var("ESPFD_TARGET_CA_FILE", None, "PEM file of CA certificates to trust for the target and its token endpoint (default: public web roots)"),
    var("ESPFD_TARGET_TLS_CERT", None, "mutual TLS: PEM file with the client certificate chain, client certificate first (with ESPFD_TARGET_TLS_KEY)"),
    var("ESPFD_TARGET_TLS_KEY", None, "mutual TLS: PEM file with the client certificate's private key: PKCS#8, PKCS#1 (RSA) or SEC1 (EC) (with ESPFD_TARGET_TLS_CERT)"),
    var("ESPFD_WORKERS", Some("4"), "worker threads (lanes); one entity's events always go to the same lane"),
    var("ESPFD_STATE_DIR", Some("/var/lib/espfd"), "directory of the event store (espfd.db); must be writable"),
    var("ESPFD_RETRY_MAX_AGE", Some("24h"), "how long a failing event is retried (from its arrival) before it is FAILED"),
    var("ESPFD_RETENTION", Some("30d"), "how long finished events (done, failed, skipped) stay in the store before they are deleted"),
    var("ESPFD_RETRY_INITIAL", Some("2s"), "delay before the first retry; each further retry waits twice as long (with jitter)"),
    var("ESPFD_RETRY_MAX_DELAY", Some("10m"), "longest delay between two retries"),
    var("ESPFD_COALESCE", Some("off"), "on: when an entity has several events queued, deliver once for the newest and finish the older ones as coalesced (for targets that upsert the current state); off: every event is delivered"),
    var("ESPFD_BREAKER_FAILURES", Some("5"), "transient failures in a row after which an upstream (portabilling, target, espf) counts as down: one probe at a time (every 1-5 s) until it answers, and no attempts spent meanwhile"),
    var("ESPFD_SHUTDOWN_GRACE", Some("10s"), "on SIGTERM/SIGINT, time allowed for work in flight before it is left in the store for the next start"),
    var("ESPFD_MAX_CONNECTIONS", Some("256"), "most simultaneous inbound connections; at it, the oldest idle one is closed to make room, else new ones get 503"),
    var("ESPFD_MAX_CONNECTIONS_PER_ADDR", Some("64"), "most simultaneous inbound connections from one client address (same rule at it); behind a proxy set it to ESPFD_MAX_CONNECTIONS"),
    var("ESPFD_FIRST_BYTE_TIMEOUT", Some("5s"), "time a new connection has to send its first byte (HTTPS: to start the handshake, then its first request); at most ESPFD_IDLE_TIMEOUT"),
    var("ESPFD_MAX_BODY", Some("65536"), "largest accepted request body in bytes; larger gets 413"),
    var("ESPFD_MAX_HEADER", Some("8192"), "largest accepted request head (request line + headers) in bytes; larger gets 431"),
    var("ESPFD_MAX_HEADERS", Some("64"), "most header lines in one request; more gets 431"),
    var("ESPFD_MAX_REQUESTS_PER_CONNECTION", Some("10000"), "requests served on one keep-alive connection before espfd closes it"),
    var("ESPFD_TLS_HANDSHAKE_TIMEOUT", Some("10s"), "time allowed for a client to complete the TLS handshake"),
    var("ESPFD_READ_TIMEOUT", Some("10s"), "time allowed to receive one whole request once it has started"),
    var("ESPFD_IDLE_TIMEOUT", Some("60s"), "how long an idle keep-alive connection is kept open"),
    var("ESPFD_WRITE_TIMEOUT", Some("10s"), "time allowed to send one reply"),
    var("ESPFD_LOG_FORMAT", Some("text"), "log line format: text | json"),
    var("ESPFD_REDACT", Some(crate::redact::DEFAULT_FIELDS), "subscriber-data fields whose values logs and 'espfd events show' hide (comma-separated), or none"),
    var("RUST_LOG", Some("info"), "log level filter: error | warn | info | debug | trace (per module: espfd=debug)"),
];

/// Looks a variable up by name in [`VARS`].
fn find_var(name: &str) -> Option<&'static Var> {
    VARS.iter().find(|v| v.name == name)
}

/// One variable as the process environment has it; empty counts as unset. espfd reads its
/// environment only through here: [`RawConfig::from_env`] for the service and `check`, and
/// the commands that need a few variables and no whole configuration (`events`, `send`).
pub fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// One variable as the process environment has it, else its default in [`VARS`].
pub fn env_or_default(name: &str) -> Option<String> {
    env_var(name).or_else(|| find_var(name)?.default.map(str::to_string))
}

fn err(var: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        var: var.to_string(),
        reason: reason.into(),
    }
}

/// The secret held in the file `path`, named by the variable `file_var`: its content less one
/// trailing newline (`\n` or `\r\n`). A file that holds nothing else is an error, as an
/// empty variable would be: an empty password must never become the password.
pub fn read_secret_file(file_var: &str, path: &str) -> Result<String, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| err(file_var, format!("cannot read {path}: {e}")))?;
    let text = text.strip_suffix('\n').unwrap_or(&text);
    let text = text.strip_suffix('\r').unwrap_or(text);
    if text.trim().is_empty() {
        return Err(err(
            file_var,
            format!("{path} is empty; put the secret in it, or unset {file_var}"),
        ));
    }
    Ok(text.to_string())
}

/// Prefix of the template connector's plain settings, `setting(NAME)` in a template.
pub const SETTING_PREFIX: &str = "ESPFD_SETTING_";
/// Prefix of the template connector's secrets, `secret(NAME)` in a template.
pub const SECRET_PREFIX: &str = "ESPFD_SECRET_";

/// The variables as found, with `_FILE` secrets already read; nothing validated yet.
#[derive(Debug, Default, Clone)]
pub struct RawConfig {
    values: HashMap<&'static str, String>,
    /// `ESPFD_SETTING_<NAME>` by NAME.
    settings: BTreeMap<String, String>,
    /// `ESPFD_SECRET_<NAME>` (or the file `ESPFD_SECRET_<NAME>_FILE` names) by NAME.
    secrets: BTreeMap<String, Secret>,
}

impl RawConfig {
    /// Reads the process environment: every variable of [`VARS`], and every
    /// `ESPFD_SETTING_*` and `ESPFD_SECRET_*`.
    pub fn from_env() -> Result<RawConfig, ConfigError> {
        let mut raw = RawConfig::from_lookup(env_var)?;
        let names: Vec<String> = std::env::vars_os()
            .filter_map(|(k, _)| k.into_string().ok())
            .collect();
        raw.read_prefixed(&names, env_var)?;
        Ok(raw)
    }

    /// Reads the template connector's `ESPFD_SETTING_*` and `ESPFD_SECRET_*` among `names`.
    pub fn read_prefixed(
        &mut self,
        names: &[String],
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<(), ConfigError> {
        for name in names {
            let Some(value) = lookup(name).filter(|v| !v.is_empty()) else {
                continue;
            };
            if let Some(key) = name.strip_prefix(SETTING_PREFIX) {
                self.settings.insert(key.to_string(), value);
            } else if let Some(key) = name.strip_prefix(SECRET_PREFIX) {
                let (key, secret) = match key.strip_suffix("_FILE") {
                    Some(key) => {
                        if lookup(&format!("{SECRET_PREFIX}{key}")).is_some() {
                            return Err(err(
                                name,
                                format!("set either {SECRET_PREFIX}{key} or {name}, not both"),
                            ));
                        }
                        (key, read_secret_file(name, &value)?)
                    }
                    None => (key, value),
                };
                self.secrets.insert(key.to_string(), Secret(secret));
            }
        }
        for key in self.settings.keys().chain(self.secrets.keys()) {
            let ok = !key.is_empty()
                && key
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
            if !ok {
                return Err(err(
                    &format!("ESPFD_SETTING_{key} / ESPFD_SECRET_{key}"),
                    "a name after the prefix is upper-case letters, digits and _",
                ));
            }
        }
        Ok(())
    }

    /// Reads every variable of [`VARS`] through `lookup`; tests pass a map.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<RawConfig, ConfigError> {
        let mut values = HashMap::new();
        for v in VARS {
            let direct = lookup(v.name).filter(|s| !s.is_empty());
            let value = if v.secret {
                let file_var = format!("{}_FILE", v.name);
                match (direct, lookup(&file_var).filter(|s| !s.is_empty())) {
                    (Some(_), Some(_)) => {
                        return Err(err(
                            v.name,
                            format!("set either {} or {file_var}, not both", v.name),
                        ))
                    }
                    (Some(d), None) => Some(d),
                    (None, Some(path)) => Some(read_secret_file(&file_var, &path)?),
                    (None, None) => None,
                }
            } else {
                direct
            };
            if let Some(value) = value.or_else(|| v.default.map(str::to_string)) {
                values.insert(v.name, value);
            }
        }
        Ok(RawConfig {
            values,
            ..RawConfig::default()
        })
    }

    /// Sets a value (used by `espfd demo` and tests to build a configuration in code);
    /// `ESPFD_SETTING_*` and `ESPFD_SECRET_*` names too.
    pub fn set(&mut self, name: &str, value: impl Into<String>) -> &mut Self {
        if let Some(key) = name.strip_prefix(SETTING_PREFIX) {
            self.settings.insert(key.to_string(), value.into());
            return self;
        }
        if let Some(key) = name.strip_prefix(SECRET_PREFIX) {
            self.secrets.insert(key.to_string(), Secret(value.into()));
            return self;
        }
        let var = find_var(name).unwrap_or_else(|| panic!("unknown variable {name}"));
        self.values.insert(var.name, value.into());
        self
    }

    /// Removes a value, defaults included (used to switch the target kind in code).
    pub fn unset(&mut self, name: &str) -> &mut Self {
        self.values.remove(name);
        self
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    fn required(&self, name: &str) -> Result<&str, ConfigError> {
        self.get(name)
            .ok_or_else(|| err(name, "is required but not set"))
    }

    fn duration(&self, name: &str) -> Result<Duration, ConfigError> {
        let v = self.required(name)?;
        match parse_duration(v) {
            Some(d) if !d.is_zero() => Ok(d),
            _ => Err(err(
                name,
                format!("'{v}' is not a positive duration (e.g. 30, 30s, 5m, 24h)"),
            )),
        }
    }

    fn number(&self, name: &str, min: u64, max: u64) -> Result<u64, ConfigError> {
        let v = self.required(name)?;
        match v.trim().parse::<u64>() {
            Ok(n) if (min..=max).contains(&n) => Ok(n),
            _ => Err(err(
                name,
                format!("'{v}' is not a whole number from {min} to {max}"),
            )),
        }
    }

    fn url(&self, name: &str, value: &str) -> Result<String, ConfigError> {
        let v = value.trim().trim_end_matches('/');
        let rest = v
            .strip_prefix("http://")
            .or_else(|| v.strip_prefix("https://"))
            .ok_or_else(|| err(name, format!("'{v}' must start with http:// or https://")))?;
        if rest.is_empty() || rest.starts_with('/') || rest.contains(char::is_whitespace) {
            return Err(err(name, format!("'{v}' has no host")));
        }
        Ok(v.to_string())
    }

    /// The listener's limits (`ESPFD_MAX_*` and the inbound timeouts).
    fn limits(&self) -> Result<Limits, ConfigError> {
        Ok(Limits {
            max_connections: self.number("ESPFD_MAX_CONNECTIONS", 1, 100_000)? as usize,
            max_connections_per_addr: self.number("ESPFD_MAX_CONNECTIONS_PER_ADDR", 1, 100_000)?
                as usize,
            first_byte_timeout: self.duration("ESPFD_FIRST_BYTE_TIMEOUT")?,
            max_body: self.number("ESPFD_MAX_BODY", 256, 64 << 20)? as usize,
            max_header: self.number("ESPFD_MAX_HEADER", 512, 1 << 20)? as usize,
            max_headers: self.number("ESPFD_MAX_HEADERS", 4, 1000)? as usize,
            max_requests_per_connection: self.number(
                "ESPFD_MAX_REQUESTS_PER_CONNECTION",
                1,
                10_000_000,
            )? as usize,
            read_timeout: self.duration("ESPFD_READ_TIMEOUT")?,
            idle_timeout: self.duration("ESPFD_IDLE_TIMEOUT")?,
            write_timeout: self.duration("ESPFD_WRITE_TIMEOUT")?,
            tls_handshake_timeout: self.duration("ESPFD_TLS_HANDSHAKE_TIMEOUT")?,
        })
    }

    /// The outbound authentication and TLS of the target (`ESPFD_TARGET_AUTH` ...
    /// `ESPFD_TARGET_TLS_KEY`). They apply to HTTP connectors only: with `ESPFD_TARGET_EXEC`
    /// any of them set is an error, as is a variable of another scheme than the chosen one
    /// (`ESPFD_TARGET_TOKEN` with `ESPFD_TARGET_AUTH=none`, say: it would be silently
    /// unused). Messages never quote a secret.
    fn target_auth(
        &self,
        spec: &ConnectorSpec,
    ) -> Result<(AuthSettings, OutboundTls), ConfigError> {
        const SCHEME_VARS: &[(&str, &str)] = &[
            ("ESPFD_TARGET_USER", "basic"),
            ("ESPFD_TARGET_PASSWORD", "basic"),
            ("ESPFD_TARGET_TOKEN", "bearer"),
            ("ESPFD_TARGET_HEADER", "header"),
            ("ESPFD_TARGET_OAUTH_URL", "oauth2"),
            ("ESPFD_TARGET_OAUTH_CLIENT_ID", "oauth2"),
            ("ESPFD_TARGET_OAUTH_CLIENT_SECRET", "oauth2"),
            ("ESPFD_TARGET_OAUTH_SCOPE", "oauth2"),
        ];
        const TLS_VARS: &[&str] = &[
            "ESPFD_TARGET_CA_FILE",
            "ESPFD_TARGET_TLS_CERT",
            "ESPFD_TARGET_TLS_KEY",
        ];
        let scheme = self.required("ESPFD_TARGET_AUTH")?;
        if let ConnectorSpec::Exec(_) = spec {
            let set = SCHEME_VARS
                .iter()
                .map(|(v, _)| *v)
                .chain(TLS_VARS.iter().copied())
                .find(|v| self.get(v).is_some());
            let set = set.or((scheme != "none").then_some("ESPFD_TARGET_AUTH"));
            if let Some(var) = set {
                return Err(err(
                    var,
                    "applies to ESPFD_TARGET_URL only; a command (ESPFD_TARGET_EXEC) authenticates itself: unset it",
                ));
            }
            return Ok((AuthSettings::None, OutboundTls::default()));
        }
        if !["none", "basic", "bearer", "header", "oauth2"].contains(&scheme) {
            return Err(err(
                "ESPFD_TARGET_AUTH",
                format!("'{scheme}' is not one of none, basic, bearer, header, oauth2"),
            ));
        }
        if let Some((var, _)) = SCHEME_VARS
            .iter()
            .find(|(v, s)| *s != scheme && self.get(v).is_some())
        {
            return Err(err(
                var,
                format!("is set but ESPFD_TARGET_AUTH is {scheme}; set ESPFD_TARGET_AUTH to the scheme it belongs to, or unset it"),
            ));
        }
        let needed = |var: &str| {
            self.get(var)
                .ok_or_else(|| err(var, format!("is required with ESPFD_TARGET_AUTH={scheme}")))
        };
        // What goes into a header may hold no line break (it would start another header) nor
        // any other control character but tab (no HTTP library sends it).
        let controls = |s: &str| s.chars().any(|c| c.is_control() && c != '\t');
        let auth = match scheme {
            "basic" => {
                let user = needed("ESPFD_TARGET_USER")?;
                if user.contains(':') || controls(user) {
                    return Err(err(
                        "ESPFD_TARGET_USER",
                        "may not contain ':' or a control character (HTTP Basic joins user and password with ':')",
                    ));
                }
                AuthSettings::Basic {
                    user: user.to_string(),
                    password: Secret(needed("ESPFD_TARGET_PASSWORD")?.to_string()),
                }
            }
            "bearer" => {
                let token = needed("ESPFD_TARGET_TOKEN")?;
                if controls(token) {
                    return Err(err(
                        "ESPFD_TARGET_TOKEN",
                        "may not contain a line break or another control character",
                    ));
                }
                AuthSettings::Bearer(Secret(token.trim().to_string()))
            }
            "header" => {
                let line = needed("ESPFD_TARGET_HEADER")?;
                if controls(line) {
                    return Err(err(
                        "ESPFD_TARGET_HEADER",
                        "may not contain a line break or another control character: it is one header line 'Name: value'",
                    ));
                }
                let Some((name, value)) = line.split_once(':') else {
                    return Err(err(
                        "ESPFD_TARGET_HEADER",
                        "is not a header line 'Name: value' (it has no ':')",
                    ));
                };
                let name = name.trim();
                let token_char =
                    |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
                if name.is_empty() || !name.chars().all(token_char) {
                    return Err(err(
                        "ESPFD_TARGET_HEADER",
                        "the part before ':' is not a header name (letters, digits and -, no spaces)",
                    ));
                }
                if value.trim().is_empty() {
                    return Err(err(
                        "ESPFD_TARGET_HEADER",
                        format!("{name} has an empty value"),
                    ));
                }
                AuthSettings::Header {
                    name: name.to_string(),
                    value: Secret(value.trim().to_string()),
                }
            }
            "oauth2" => {
                let url = self.url("ESPFD_TARGET_OAUTH_URL", needed("ESPFD_TARGET_OAUTH_URL")?)?;
                let client_auth = match self.required("ESPFD_TARGET_OAUTH_CLIENT_AUTH")? {
                    "basic" => ClientAuth::Basic,
                    "post" => ClientAuth::Post,
                    other => {
                        return Err(err(
                            "ESPFD_TARGET_OAUTH_CLIENT_AUTH",
                            format!("'{other}' is not one of basic, post"),
                        ))
                    }
                };
                AuthSettings::OAuth2(OAuthSettings {
                    url,
                    client_id: needed("ESPFD_TARGET_OAUTH_CLIENT_ID")?.to_string(),
                    client_secret: Secret(needed("ESPFD_TARGET_OAUTH_CLIENT_SECRET")?.to_string()),
                    scope: self.get("ESPFD_TARGET_OAUTH_SCOPE").map(str::to_string),
                    client_auth,
                    ttl: self.duration("ESPFD_TARGET_OAUTH_TTL")?,
                })
            }
            _ => AuthSettings::None,
        };
        let file = |var: &str| -> Result<Option<PathBuf>, ConfigError> {
            match self.get(var) {
                None => Ok(None),
                Some(p) => match std::fs::File::open(p) {
                    Ok(f) if f.metadata().is_ok_and(|m| m.is_file()) => Ok(Some(PathBuf::from(p))),
                    Ok(_) => Err(err(var, format!("{p} is not a file"))),
                    Err(e) => Err(err(var, format!("cannot read {p}: {e}"))),
                },
            }
        };
        let client_cert = match (file("ESPFD_TARGET_TLS_CERT")?, file("ESPFD_TARGET_TLS_KEY")?) {
            (Some(cert), Some(key)) => Some(ClientCertFiles { cert, key }),
            (None, None) => None,
            (Some(_), None) => {
                return Err(err(
                    "ESPFD_TARGET_TLS_KEY",
                    "is required when ESPFD_TARGET_TLS_CERT is set (set both for mutual TLS, or neither)",
                ))
            }
            (None, Some(_)) => {
                return Err(err(
                    "ESPFD_TARGET_TLS_CERT",
                    "is required when ESPFD_TARGET_TLS_KEY is set (set both for mutual TLS, or neither)",
                ))
            }
        };
        let tls = OutboundTls {
            ca_file: file("ESPFD_TARGET_CA_FILE")?,
            ca_var: "ESPFD_TARGET_CA_FILE",
            client_cert,
        };
        Ok((auth, tls))
    }

    /// Validates everything and builds the [`Config`] the service runs with.
    pub fn validate(&self) -> Result<Config, ConfigError> {
        let listen_s = self.required("ESPFD_LISTEN")?;
        let listen: SocketAddr = listen_s.parse().map_err(|_| {
            err(
                "ESPFD_LISTEN",
                format!("'{listen_s}' is not an address:port such as 0.0.0.0:8080"),
            )
        })?;

        let events_path = self.required("ESPFD_EVENTS_PATH")?.to_string();
        if !events_path.starts_with('/') || events_path.contains(char::is_whitespace) {
            return Err(err(
                "ESPFD_EVENTS_PATH",
                format!("'{events_path}' must be a path starting with /"),
            ));
        }
        if matches!(events_path.as_str(), "/healthz" | "/readyz" | "/metrics") {
            return Err(err(
                "ESPFD_EVENTS_PATH",
                format!("'{events_path}' is reserved"),
            ));
        }

        let auth = match self.required("ESPFD_AUTH")? {
            "basic" => {
                let user = self.required("ESPFD_AUTH_USER")?.to_string();
                if user.contains(':') {
                    return Err(err("ESPFD_AUTH_USER", "must not contain ':'"));
                }
                let password = self.required("ESPFD_AUTH_PASSWORD")?.to_string();
                InboundAuth::Basic { user, password }
            }
            "custom" => {
                let value = self.required("ESPFD_AUTH_CUSTOM")?;
                match value.split_once(' ') {
                    Some((scheme, cred)) if !scheme.is_empty() && !cred.is_empty() => {}
                    _ => {
                        return Err(err(
                            "ESPFD_AUTH_CUSTOM",
                            "must be '<type> <credentials>', e.g. 'Plain passexample'",
                        ))
                    }
                }
                InboundAuth::Custom {
                    value: value.to_string(),
                }
            }
            "signature" => {
                let key_id = self.required("ESPFD_AUTH_KEY_ID")?.to_string();
                if key_id.contains(['"', '\\']) {
                    return Err(err("ESPFD_AUTH_KEY_ID", "must not contain '\"' or '\\'"));
                }
                InboundAuth::Signature {
                    key_id,
                    key: self.required("ESPFD_AUTH_KEY")?.to_string(),
                    max_skew: self.duration("ESPFD_AUTH_MAX_SKEW")?,
                }
            }
            "none" => InboundAuth::None,
            other => {
                return Err(err(
                    "ESPFD_AUTH",
                    format!("'{other}' is not one of basic, custom, signature, none"),
                ))
            }
        };

        let tls = match (self.get("ESPFD_TLS_CERT"), self.get("ESPFD_TLS_KEY")) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: PathBuf::from(cert),
                key: PathBuf::from(key),
            }),
            (None, None) => None,
            (Some(_), None) => {
                return Err(err(
                    "ESPFD_TLS_KEY",
                    "is required when ESPFD_TLS_CERT is set (set both for HTTPS, or neither)",
                ))
            }
            (None, Some(_)) => {
                return Err(err(
                    "ESPFD_TLS_CERT",
                    "is required when ESPFD_TLS_KEY is set (set both for HTTPS, or neither)",
                ))
            }
        };
        let allow_from = AllowList::parse(self.get("ESPFD_ALLOW_FROM").unwrap_or(""))
            .map_err(|e| err("ESPFD_ALLOW_FROM", e))?;

        let pb_url = self.url("ESPFD_PB_URL", self.required("ESPFD_PB_URL")?)?;
        let pb_login = self.required("ESPFD_PB_LOGIN")?.to_string();
        let pb_secret = match (self.get("ESPFD_PB_TOKEN"), self.get("ESPFD_PB_PASSWORD")) {
            (Some(t), _) => PbSecret::Token(t.to_string()),
            (None, Some(p)) => PbSecret::Password(p.to_string()),
            (None, None) => {
                return Err(err(
                    "ESPFD_PB_PASSWORD",
                    "is required (or set ESPFD_PB_TOKEN)",
                ))
            }
        };
        let pb_ca_file = match self.get("ESPFD_PB_CA_FILE") {
            Some(p) => {
                let path = PathBuf::from(p);
                if !path.is_file() {
                    return Err(err(
                        "ESPFD_PB_CA_FILE",
                        format!("{p} is not a readable file"),
                    ));
                }
                Some(path)
            }
            None => None,
        };
        let espf_url = match self.get("ESPFD_ESPF_URL") {
            Some(u) => self.url("ESPFD_ESPF_URL", u)?,
            None => pb_url.clone(),
        };
        let espf_format = match self.required("ESPFD_ESPF_FORMAT")? {
            "form" => EspfFormat::Form,
            "json" => EspfFormat::Json,
            other => {
                return Err(err(
                    "ESPFD_ESPF_FORMAT",
                    format!("'{other}' is not one of form, json"),
                ))
            }
        };
        let espf_auth =
            match self.required("ESPFD_ESPF_AUTH")? {
                "bearer" => EspfAuth::Bearer,
                "basic" => match &pb_secret {
                    PbSecret::Password(password) => EspfAuth::Basic {
                        login: pb_login.clone(),
                        password: Secret(password.clone()),
                    },
                    PbSecret::Token(_) => return Err(err(
                        "ESPFD_ESPF_AUTH",
                        "basic needs ESPFD_PB_PASSWORD (an API token cannot be sent as basic auth)",
                    )),
                },
                other => {
                    return Err(err(
                        "ESPFD_ESPF_AUTH",
                        format!("'{other}' is not one of bearer, basic"),
                    ))
                }
            };
        let group = self.required("ESPFD_GROUP")?.to_string();
        let event_types = EventTypes::parse(self.required("ESPFD_EVENT_TYPES")?)
            .map_err(|reason| err("ESPFD_EVENT_TYPES", reason))?;
        let workers = self.number("ESPFD_WORKERS", 1, 256)? as usize;
        let pb_timeout = self.duration("ESPFD_PB_TIMEOUT")?;
        let chosen: Vec<&str> = [
            "ESPFD_TARGET_URL",
            "ESPFD_TARGET_EXEC",
            "ESPFD_TARGET_TEMPLATE",
        ]
        .into_iter()
        .filter(|name| self.get(name).is_some_and(|v| !v.trim().is_empty()))
        .collect();
        let target = match chosen.as_slice() {
            ["ESPFD_TARGET_URL"] => ConnectorSpec::Http(
                self.url("ESPFD_TARGET_URL", self.required("ESPFD_TARGET_URL")?)?,
            ),
            ["ESPFD_TARGET_EXEC"] => {
                ConnectorSpec::Exec(self.required("ESPFD_TARGET_EXEC")?.to_string())
            }
            [_] => ConnectorSpec::Template(PathBuf::from(
                self.required("ESPFD_TARGET_TEMPLATE")?,
            )),
            [] => {
                return Err(err(
                    "ESPFD_TARGET_URL",
                    "is required (or set ESPFD_TARGET_EXEC or ESPFD_TARGET_TEMPLATE)",
                ))
            }
            [_, second, ..] => {
                return Err(err(
                    second,
                    format!(
                        "set exactly one of ESPFD_TARGET_URL, ESPFD_TARGET_EXEC, ESPFD_TARGET_TEMPLATE (set: {})",
                        chosen.join(", ")
                    ),
                ))
            }
        };

        let (target_auth, target_tls) = self.target_auth(&target)?;

        let log_format = match self.required("ESPFD_LOG_FORMAT")? {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                return Err(err(
                    "ESPFD_LOG_FORMAT",
                    format!("'{other}' is not one of text, json"),
                ))
            }
        };

        let redact = crate::redact::parse_fields(self.required("ESPFD_REDACT")?)
            .map_err(|reason| err("ESPFD_REDACT", reason))?;

        Ok(Config {
            listen,
            events_path,
            auth,
            tls,
            allow_from,
            // The ESPF API is reached like PortaBilling: same CAs, same time limit, and as
            // many calls at once as there are workers, plus room for /readyz and a login.
            espf: EspfSettings {
                url: espf_url,
                format: espf_format,
                auth: espf_auth,
                group: group.clone(),
                ca_file: pb_ca_file.clone(),
                timeout: pb_timeout,
                pool: workers + 2,
            },
            pb: PbSettings {
                url: pb_url,
                login: pb_login,
                secret: pb_secret,
                ca_file: pb_ca_file,
                timeout: pb_timeout,
                pool: workers + 2,
            },
            group,
            event_types,
            connector: ConnectorSettings {
                spec: target,
                timeout: self.duration("ESPFD_TARGET_TIMEOUT")?,
                exec_timeout: self.duration("ESPFD_EXEC_TIMEOUT")?,
                pool: workers,
                hidden_env: VARS
                    .iter()
                    .filter(|v| v.secret)
                    .map(|v| v.name.to_string())
                    .chain(self.secrets.keys().map(|k| format!("{SECRET_PREFIX}{k}")))
                    .flat_map(|name| [format!("{name}_FILE"), name])
                    .collect(),
                settings: self.settings.clone(),
                secrets: self.secrets.clone(),
                auth: target_auth,
                tls: target_tls,
            },
            callback_token: self
                .get("ESPFD_CALLBACK_TOKEN")
                .map(|t| Secret(t.to_string())),
            async_timeout: self.duration("ESPFD_ASYNC_TIMEOUT")?,
            shutdown_grace: self.duration("ESPFD_SHUTDOWN_GRACE")?,
            workers,
            state_dir: PathBuf::from(self.required("ESPFD_STATE_DIR")?),
            retry_max_age: self.duration("ESPFD_RETRY_MAX_AGE")?,
            retention: self.duration("ESPFD_RETENTION")?,
            retry_initial: self.duration("ESPFD_RETRY_INITIAL")?,
            retry_max_delay: self.duration("ESPFD_RETRY_MAX_DELAY")?,
            breaker_failures: self.number("ESPFD_BREAKER_FAILURES", 1, 1000)? as u32,
            coalesce: match self.required("ESPFD_COALESCE")? {
                "on" => true,
                "off" => false,
                other => {
                    return Err(err(
                        "ESPFD_COALESCE",
                        format!("'{other}' is not one of on, off"),
                    ))
                }
            },
            limits: self.limits()?,
            log_format,
            redact,
        })
    }
}

/// The validated configuration of the service.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub events_path: String,
    pub auth: InboundAuth,
    /// HTTPS when set.
    pub tls: Option<TlsFiles>,
    /// Peers allowed to connect (empty: everyone).
    pub allow_from: AllowList,
    /// The PortaBilling API client's settings (`ESPFD_PB_*`).
    pub pb: PbSettings,
    /// The ESPF status client's settings (`ESPFD_ESPF_*`, `ESPFD_GROUP`, and the PortaBilling
    /// CA file and time limit).
    pub espf: EspfSettings,
    /// The ESPF service group statuses are reported for (`ESPFD_GROUP`).
    pub group: String,
    /// The event types this espfd provisions (`ESPFD_EVENT_TYPES`); the others are stored
    /// as skipped at intake.
    pub event_types: EventTypes,
    /// The connector's settings (`ESPFD_TARGET_*`, `ESPFD_EXEC_TIMEOUT`).
    pub connector: ConnectorSettings,
    pub callback_token: Option<Secret>,
    pub async_timeout: Duration,
    pub shutdown_grace: Duration,
    pub workers: usize,
    pub state_dir: PathBuf,
    pub retry_max_age: Duration,
    pub retention: Duration,
    pub retry_initial: Duration,
    pub retry_max_delay: Duration,
    /// `ESPFD_BREAKER_FAILURES`.
    pub breaker_failures: u32,
    /// `ESPFD_COALESCE=on`.
    pub coalesce: bool,
    pub limits: Limits,
    pub log_format: LogFormat,
    /// Field names whose values are hidden in logs (lower-case; empty for `none`).
    pub redact: Vec<String>,
}

/// The listener's limits when no variable is set: the defaults of [`VARS`], so that each is
/// written once. Implemented here rather than in `http`, which does not know the variables.
impl Default for Limits {
    fn default() -> Limits {
        RawConfig::from_lookup(|_| None)
            .and_then(|raw| raw.limits())
            .expect("the defaults in VARS are valid limits")
    }
}

/// The text of `espfd help env`.
pub fn help_env() -> String {
    let mut out = String::from(
        "espfd reads its configuration from these environment variables.\n\
         Secrets (marked *) may also be given as <NAME>_FILE, the path of a file holding the value.\n\
         Durations are seconds or a number with ms, s, m, h or d.\n\n",
    );
    for v in VARS {
        let star = if v.secret { "*" } else { "" };
        let default = v.default.unwrap_or("(none)");
        out.push_str(&format!(
            "{}{star}\n    default: {default}\n    {}\n",
            v.name, v.help
        ));
    }
    out.push_str(&format!(
        "{SETTING_PREFIX}<NAME>\n    default: (none)\n    a request template's setting(\"NAME\"), e.g. {SETTING_PREFIX}HSS_URL\n"
    ));
    out.push_str(&format!(
        "{SECRET_PREFIX}<NAME>*\n    default: (none)\n    a request template's secret(\"NAME\"); never shown, removed from an exec connector's environment\n"
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> HashMap<String, String> {
        [
            ("ESPFD_AUTH_USER", "espf"),
            ("ESPFD_AUTH_PASSWORD", "s3cret"),
            ("ESPFD_PB_URL", "https://pb.example.net/"),
            ("ESPFD_PB_LOGIN", "api"),
            ("ESPFD_PB_PASSWORD", "pw"),
            ("ESPFD_GROUP", "HSS"),
            ("ESPFD_TARGET_URL", "http://127.0.0.1:9000/provision"),
            ("ESPFD_CALLBACK_TOKEN", "cb-token-123"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    fn validate(map: &HashMap<String, String>) -> Result<Config, ConfigError> {
        RawConfig::from_lookup(|k| map.get(k).cloned())?.validate()
    }

    #[test]
    fn defaults_apply() {
        let c = validate(&base()).unwrap();
        assert_eq!(c.listen.to_string(), "0.0.0.0:8080");
        assert_eq!(c.events_path, "/events");
        assert_eq!(c.workers, 4);
        assert_eq!(c.espf.url, "https://pb.example.net");
        assert_eq!(c.limits.max_body, 65536);
        assert_eq!(c.retry_max_age, Duration::from_secs(86_400));
        assert_eq!(c.limits.max_headers, 64);
        assert_eq!(c.limits.max_requests_per_connection, 10_000);
        assert_eq!(c.limits.tls_handshake_timeout, Duration::from_secs(10));
        assert_eq!(c.limits.max_connections_per_addr, 64);
        assert_eq!(c.limits.first_byte_timeout, Duration::from_secs(5));
        assert_eq!(c.tls, None);
        assert!(c.allow_from.allows_everyone());
        // Listeners started without a configuration (simulators, tests) get the same limits.
        assert_eq!(Limits::default(), c.limits);
    }

    #[test]
    fn front_door_settings_parse() {
        let mut m = base();
        m.insert("ESPFD_ALLOW_FROM".into(), "10.0.0.0/8, ::1".into());
        m.insert("ESPFD_TLS_CERT".into(), "/etc/espfd/cert.pem".into());
        m.insert("ESPFD_TLS_KEY".into(), "/etc/espfd/key.pem".into());
        m.insert("ESPFD_AUTH".into(), "signature".into());
        m.insert("ESPFD_AUTH_KEY_ID".into(), "test".into());
        m.insert("ESPFD_AUTH_KEY".into(), "k3y".into());
        let c = validate(&m).unwrap();
        assert_eq!(c.allow_from.to_string(), "10.0.0.0/8, ::1/128");
        assert_eq!(
            c.tls.unwrap().cert,
            std::path::PathBuf::from("/etc/espfd/cert.pem")
        );
        assert_eq!(
            c.auth,
            InboundAuth::Signature {
                key_id: "test".into(),
                key: "k3y".into(),
                max_skew: Duration::from_secs(300)
            }
        );
        assert!(!format!("{:?}", c.auth).contains("k3y"));
    }

    #[test]
    fn event_types_default_to_all_and_bad_patterns_name_the_variable() {
        let c = validate(&base()).unwrap();
        assert!(c.event_types.takes_all());
        assert!(c.event_types.matches("Anything/New"));
        let mut m = base();
        m.insert("ESPFD_EVENT_TYPES".into(), " Subscriber/* , SIM/*".into());
        let c = validate(&m).unwrap();
        assert_eq!(c.event_types.to_string(), "Subscriber/*, SIM/*");
        assert!(!c.event_types.matches("Customer/Created"));
        for bad in ["Subscriber/*,,SIM/*", "SIM/?", "SIM/*,"] {
            m.insert("ESPFD_EVENT_TYPES".into(), bad.into());
            let e = validate(&m).unwrap_err();
            assert_eq!(e.var, "ESPFD_EVENT_TYPES", "{bad}: {}", e.reason);
        }
    }

    #[test]
    fn errors_name_the_variable() {
        for (var, value) in [
            ("ESPFD_LISTEN", "nonsense"),
            ("ESPFD_WORKERS", "0"),
            ("ESPFD_AUTH", "digest"),
            ("ESPFD_PB_URL", "pb.example.net"),
            ("ESPFD_ESPF_FORMAT", "xml"),
            ("ESPFD_READ_TIMEOUT", "soon"),
            ("ESPFD_TARGET_URL", "ftp://x"),
            ("ESPFD_ALLOW_FROM", "10.0.0.0/33"),
            ("ESPFD_ALLOW_FROM", "intranet"),
            ("ESPFD_MAX_HEADERS", "0"),
            ("ESPFD_MAX_REQUESTS_PER_CONNECTION", "0"),
            ("ESPFD_TLS_HANDSHAKE_TIMEOUT", "never"),
            ("ESPFD_MAX_CONNECTIONS_PER_ADDR", "0"),
            ("ESPFD_FIRST_BYTE_TIMEOUT", "0"),
            ("ESPFD_REDACT", "first name"),
        ] {
            let mut m = base();
            m.insert(var.into(), value.into());
            assert_eq!(validate(&m).unwrap_err().var, var, "{var}={value}");
        }
        // One of the two TLS files without the other names the missing one.
        for (set, missing) in [
            ("ESPFD_TLS_CERT", "ESPFD_TLS_KEY"),
            ("ESPFD_TLS_KEY", "ESPFD_TLS_CERT"),
        ] {
            let mut m = base();
            m.insert(set.into(), "/etc/espfd/x.pem".into());
            assert_eq!(validate(&m).unwrap_err().var, missing);
        }
        let mut m = base();
        m.remove("ESPFD_GROUP");
        assert_eq!(validate(&m).unwrap_err().var, "ESPFD_GROUP");
        let mut m = base();
        m.remove("ESPFD_AUTH_PASSWORD");
        assert_eq!(validate(&m).unwrap_err().var, "ESPFD_AUTH_PASSWORD");
    }

    #[test]
    fn target_auth_parses_and_its_errors_name_the_variable() {
        let with = |pairs: &[(&str, &str)]| {
            let mut m = base();
            for (k, v) in pairs {
                m.insert(k.to_string(), v.to_string());
            }
            validate(&m)
        };
        assert_eq!(
            validate(&base()).unwrap().connector.auth,
            AuthSettings::None
        );
        let c = with(&[
            ("ESPFD_TARGET_AUTH", "header"),
            ("ESPFD_TARGET_HEADER", "X-API-Key:  abc "),
        ])
        .unwrap();
        assert_eq!(
            c.connector.auth,
            AuthSettings::Header {
                name: "X-API-Key".into(),
                value: Secret("abc".into())
            }
        );
        let c = with(&[
            ("ESPFD_TARGET_AUTH", "oauth2"),
            (
                "ESPFD_TARGET_OAUTH_URL",
                "https://login.example.net/t/token",
            ),
            ("ESPFD_TARGET_OAUTH_CLIENT_ID", "id"),
            ("ESPFD_TARGET_OAUTH_CLIENT_SECRET", "oauth-s3cret"),
        ])
        .unwrap();
        let AuthSettings::OAuth2(o) = &c.connector.auth else {
            panic!("{:?}", c.connector.auth)
        };
        assert_eq!(
            (o.client_auth, o.ttl, o.scope.as_deref()),
            (ClientAuth::Basic, Duration::from_secs(300), None)
        );
        assert!(!format!("{c:?}").contains("oauth-s3cret"));
        for (pairs, var) in [
            (&[("ESPFD_TARGET_AUTH", "digest")][..], "ESPFD_TARGET_AUTH"),
            (
                &[
                    ("ESPFD_TARGET_AUTH", "basic"),
                    ("ESPFD_TARGET_PASSWORD", "p"),
                ][..],
                "ESPFD_TARGET_USER",
            ),
            (
                &[("ESPFD_TARGET_AUTH", "basic"), ("ESPFD_TARGET_USER", "u")][..],
                "ESPFD_TARGET_PASSWORD",
            ),
            (&[("ESPFD_TARGET_AUTH", "bearer")][..], "ESPFD_TARGET_TOKEN"),
            (
                &[
                    ("ESPFD_TARGET_AUTH", "header"),
                    ("ESPFD_TARGET_HEADER", "X-API-Key abc"),
                ][..],
                "ESPFD_TARGET_HEADER",
            ),
            (
                &[
                    ("ESPFD_TARGET_AUTH", "header"),
                    ("ESPFD_TARGET_HEADER", "X-Key: a\r\nX-Evil: b"),
                ][..],
                "ESPFD_TARGET_HEADER",
            ),
            (&[("ESPFD_TARGET_TOKEN", "t")][..], "ESPFD_TARGET_TOKEN"),
            (
                &[
                    ("ESPFD_TARGET_AUTH", "oauth2"),
                    ("ESPFD_TARGET_OAUTH_URL", "ftp://x/token"),
                    ("ESPFD_TARGET_OAUTH_CLIENT_ID", "id"),
                    ("ESPFD_TARGET_OAUTH_CLIENT_SECRET", "s"),
                ][..],
                "ESPFD_TARGET_OAUTH_URL",
            ),
            (
                &[
                    ("ESPFD_TARGET_AUTH", "oauth2"),
                    ("ESPFD_TARGET_OAUTH_URL", "https://x/token"),
                    ("ESPFD_TARGET_OAUTH_CLIENT_ID", "id"),
                ][..],
                "ESPFD_TARGET_OAUTH_CLIENT_SECRET",
            ),
            (
                &[("ESPFD_TARGET_TLS_CERT", "/etc/hostname")][..],
                "ESPFD_TARGET_TLS_KEY",
            ),
            (
                &[("ESPFD_TARGET_CA_FILE", "/nonexistent/ca.pem")][..],
                "ESPFD_TARGET_CA_FILE",
            ),
        ] {
            let e = with(pairs).unwrap_err();
            assert_eq!(e.var, var, "{pairs:?}: {e}");
            // No secret in the message, even the one in a malformed header line.
            assert!(
                !e.reason.contains("abc") && !e.reason.contains("X-Evil"),
                "{e}"
            );
        }
        // With a command as the connector, outbound settings are an error, not ignored.
        let mut m = base();
        m.remove("ESPFD_TARGET_URL");
        m.insert("ESPFD_TARGET_EXEC".into(), "/bin/true".into());
        m.insert("ESPFD_TARGET_CA_FILE".into(), "/etc/hostname".into());
        assert_eq!(validate(&m).unwrap_err().var, "ESPFD_TARGET_CA_FILE");
        m.remove("ESPFD_TARGET_CA_FILE");
        m.insert("ESPFD_TARGET_AUTH".into(), "bearer".into());
        assert_eq!(validate(&m).unwrap_err().var, "ESPFD_TARGET_AUTH");
    }

    #[test]
    fn secrets_come_from_files_and_not_both() {
        let dir = std::env::temp_dir().join(format!("espfd-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("pw");
        std::fs::write(&f, "from-file\n").unwrap();
        let mut m = base();
        m.remove("ESPFD_PB_PASSWORD");
        m.insert("ESPFD_PB_PASSWORD_FILE".into(), f.display().to_string());
        let c = validate(&m).unwrap();
        assert_eq!(c.pb.secret, PbSecret::Password("from-file".into()));
        m.insert("ESPFD_PB_PASSWORD".into(), "x".into());
        assert_eq!(validate(&m).unwrap_err().var, "ESPFD_PB_PASSWORD");
        let mut m = base();
        m.insert(
            "ESPFD_AUTH_PASSWORD_FILE".into(),
            "/nonexistent/espfd".into(),
        );
        m.remove("ESPFD_AUTH_PASSWORD");
        assert_eq!(validate(&m).unwrap_err().var, "ESPFD_AUTH_PASSWORD_FILE");
    }

    #[test]
    fn debug_output_hides_secrets() {
        let c = validate(&base()).unwrap();
        let text = format!("{c:?}");
        assert!(
            !text.contains("s3cret") && !text.contains("\"pw\"") && !text.contains("cb-token"),
            "{text}"
        );
    }

    #[test]
    fn help_shows_each_default_and_marks_secrets() {
        // What an operator reads: the default as written in VARS, "(none)" where there is
        // none, and a star on the secrets that accept <NAME>_FILE.
        let text = help_env();
        assert!(
            text.contains("\nESPFD_LISTEN\n    default: 0.0.0.0:8080\n    address and port"),
            "{text}"
        );
        assert!(
            text.contains("\nESPFD_PB_PASSWORD*\n    default: (none)\n    password of"),
            "{text}"
        );
        assert!(
            text.contains("\nESPFD_PB_LOGIN\n    default: (none)\n"),
            "{text}"
        );
        assert!(
            text.contains("\nESPFD_TARGET_OAUTH_CLIENT_SECRET*\n    default: (none)\n"),
            "{text}"
        );
    }
}
