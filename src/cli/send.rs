//! `espfd send`: POST events to a running espfd the way ESPF does, with any of ESPF's three
//! auth schemes (or deliberately wrong credentials), over HTTP or HTTPS; one event or a
//! load, with reply codes, latency percentiles and throughput printed at the end.
//!
//! It is what an operator uses to check a configuration before pointing ESPF at it: the
//! secrets may come from the same environment variables the service reads. The sending is
//! done by [`super::load`]; this file is the command line, the auth headers, the TLS client
//! configuration and the event template. Flags are parsed by hand into [`RawArgs`], then
//! checked into a [`Plan`] that the rest of the command uses.

use std::io::Read;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use ring::hmac;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::load::{self, LoadSpec, Tls};
use crate::error::Error;
use crate::util::{base64_encode, now_ms, parse_duration};

/// `espfd send --help`.
pub const HELP: &str = "\
espfd send — POST events to a running espfd the way ESPF does, and report the replies

Usage:
  espfd send [URL] [options]

Target:
  URL, --url URL           events URL, http:// or https:// (path defaults to /events);
                           default: built from ESPFD_LISTEN and ESPFD_EVENTS_PATH
                           (https when ESPFD_TLS_CERT is set), else http://127.0.0.1:8080/events
  --ca-file PEM            https: trust the CA certificates in this PEM file
                           (default: /etc/ssl/certs/ca-certificates.crt when it exists)
  --insecure               https: do not verify the server's certificate (testing only)
  --timeout DURATION       connect, read and write timeout per request (default 30s)

Authentication (secrets default to the variables the service reads):
  --auth SCHEME            basic | custom | signature | none (default: ESPFD_AUTH, else basic)
  --user USER              basic: user (default: ESPFD_AUTH_USER)
  --password PASSWORD      basic: password (default: ESPFD_AUTH_PASSWORD[_FILE])
  --custom 'TYPE CREDS'    custom: the whole Authorization value, e.g. 'Plain passexample'
                           (default: ESPFD_AUTH_CUSTOM[_FILE])
  --key-id ID              signature: key ID (default: ESPFD_AUTH_KEY_ID)
  --key KEY                signature: shared key (default: ESPFD_AUTH_KEY[_FILE]); each request
                           gets a fresh Date header and
                           Authorization: Signature keyId=\"ID\",algorithm=\"hmac-sha1\",signature=\"..\"
                           with HMAC-SHA1 over 'date: <Date>', base64
  --sign-bare-date         signature: sign the bare Date value instead of 'date: <Date>'
  --wrong-credentials      send deliberately wrong credentials of the chosen scheme
                           (every reply is then expected to be 401)

Load:
  --count N                events to send (default 1)
  --concurrency C          parallel keep-alive connections (default 1)
  --rate R                 events per second over all connections (default: as fast as possible)

Events (default: Subscriber/Updated for account 1000):
  --event-type TYPE        e.g. Subscriber/Created, Customer/Updated, DID/Updated
  --account N              entity id: i_account (Subscriber/Account/SIM/other types),
                           i_customer (Customer), i_invoice and i_customer (Invoice),
                           number (DID)
  --accounts K             spread the events over K entities N, N+1, ... N+K-1 (default 1)
  --start-id ID            i_event of the first event, then ID+1, ... (default: the current
                           Unix time x 1000000, so that repeated runs send new events)
  --body FILE|-            send this file (or standard input) as it is, for every event,
                           instead of the template

  --help, -h               this text

Prints the number of replies per status code (with the first reply body of each), latency
percentiles (p50, p90, p99, p99.9, max; the first request on a connection includes connecting
and the TLS handshake) and throughput. Passwords and keys are never printed; flags are visible
to other users in the process list, the environment variables are not.

Exit status: 0 when every event got the expected reply (200, or 401 with
--wrong-credentials), 1 otherwise, 64 for a bad command line.

Examples:
  espfd send --user espf --password secret
  espfd send https://espfd.example.net:8443/events --ca-file ca.pem --auth custom \\
      --custom 'Plain passexample' --count 10000 --concurrency 16 --rate 500
  ESPFD_AUTH_KEY_ID=test ESPFD_AUTH_KEY=signature espfd send --auth signature
";

/// The schemes `--auth` accepts.
const SCHEMES: &str = "basic, custom, signature, none";

/// The command line as given, nothing checked yet beyond "is this a flag we know".
#[derive(Debug, Default)]
pub struct RawArgs {
    pub help: bool,
    pub url: Option<String>,
    pub ca_file: Option<String>,
    pub insecure: bool,
    pub timeout: Option<String>,
    pub auth: Option<String>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub custom: Option<String>,
    pub key_id: Option<String>,
    pub key: Option<String>,
    pub sign_bare_date: bool,
    pub wrong_credentials: bool,
    pub count: Option<String>,
    pub concurrency: Option<String>,
    pub rate: Option<String>,
    pub event_type: Option<String>,
    pub account: Option<String>,
    pub accounts: Option<String>,
    pub start_id: Option<String>,
    pub body: Option<String>,
}

fn usage(msg: impl std::fmt::Display) -> Error {
    Error::Usage(format!("send: {msg}; see espfd send --help"))
}

impl RawArgs {
    /// Splits the arguments after `send` into flags. `--flag value` and `--flag=value` both
    /// work; one positional argument is the URL.
    pub fn parse(args: &[String]) -> Result<RawArgs, Error> {
        let mut raw = RawArgs::default();
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let (flag, inline) = match arg.split_once('=') {
                Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
                _ => (arg.as_str(), None),
            };
            let switch = |on: &mut bool| -> Result<(), Error> {
                if inline.is_some() {
                    return Err(usage(format!("{flag} takes no value")));
                }
                *on = true;
                Ok(())
            };
            let slot: &mut Option<String> = match flag {
                "--help" | "-h" => {
                    switch(&mut raw.help)?;
                    continue;
                }
                "--insecure" => {
                    switch(&mut raw.insecure)?;
                    continue;
                }
                "--sign-bare-date" => {
                    switch(&mut raw.sign_bare_date)?;
                    continue;
                }
                "--wrong-credentials" => {
                    switch(&mut raw.wrong_credentials)?;
                    continue;
                }
                "--url" => &mut raw.url,
                "--ca-file" => &mut raw.ca_file,
                "--timeout" => &mut raw.timeout,
                "--auth" => &mut raw.auth,
                "--user" => &mut raw.user,
                "--password" => &mut raw.password,
                "--custom" => &mut raw.custom,
                "--key-id" => &mut raw.key_id,
                "--key" => &mut raw.key,
                "--count" => &mut raw.count,
                "--concurrency" => &mut raw.concurrency,
                "--rate" => &mut raw.rate,
                "--event-type" => &mut raw.event_type,
                "--account" => &mut raw.account,
                "--accounts" => &mut raw.accounts,
                "--start-id" => &mut raw.start_id,
                "--body" => &mut raw.body,
                f if f.starts_with('-') && f != "-" => {
                    return Err(usage(format!("unknown flag {f}")));
                }
                _ => {
                    if raw.url.is_some() {
                        return Err(usage(format!("unexpected argument '{arg}'")));
                    }
                    raw.url = Some(arg.clone());
                    continue;
                }
            };
            let value = match inline {
                Some(v) => v,
                None => it
                    .next()
                    .cloned()
                    .ok_or_else(|| usage(format!("{flag} needs a value")))?,
            };
            *slot = Some(value);
        }
        Ok(raw)
    }
}

/// How requests authenticate.
#[derive(Clone, PartialEq, Eq)]
pub enum SendAuth {
    /// No `Authorization` header.
    None,
    /// `Basic base64(user:password)`.
    Basic { user: String, password: String },
    /// The whole `Authorization` value.
    Custom { value: String },
    /// HMAC-SHA1 over `date: <Date>` (or the bare Date value), base64.
    Signature {
        key_id: String,
        key: Vec<u8>,
        bare_date: bool,
    },
}

impl std::fmt::Debug for SendAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl SendAuth {
    /// The `Authorization` value for a request carrying `Date: <date>`.
    pub fn authorization(&self, date: &str) -> Option<String> {
        match self {
            SendAuth::None => None,
            SendAuth::Basic { user, password } => Some(format!(
                "Basic {}",
                base64_encode(format!("{user}:{password}").as_bytes())
            )),
            SendAuth::Custom { value } => Some(value.clone()),
            SendAuth::Signature {
                key_id,
                key,
                bare_date,
            } => Some(signature_authorization(key_id, key, date, *bare_date)),
        }
    }

    /// The same scheme with credentials that are certainly wrong.
    fn wrong(&self) -> SendAuth {
        match self {
            SendAuth::None => SendAuth::None,
            SendAuth::Basic { user, password } => SendAuth::Basic {
                user: user.clone(),
                password: format!("{password}-wrong"),
            },
            SendAuth::Custom { value } => SendAuth::Custom {
                value: format!("{value}-wrong"),
            },
            SendAuth::Signature {
                key_id,
                key,
                bare_date,
            } => SendAuth::Signature {
                key_id: key_id.clone(),
                key: [key.as_slice(), b"-wrong"].concat(),
                bare_date: *bare_date,
            },
        }
    }

    /// What is printed about the credentials: never a password or key.
    fn describe(&self) -> String {
        match self {
            SendAuth::None => "no auth".into(),
            SendAuth::Basic { user, .. } => format!("basic auth as user '{user}'"),
            SendAuth::Custom { value } => {
                let scheme = value.split(' ').next().unwrap_or("");
                format!("custom auth '{scheme} ...'")
            }
            SendAuth::Signature {
                key_id, bare_date, ..
            } => format!(
                "signature auth, keyId '{key_id}', signing {}",
                if *bare_date {
                    "the bare Date"
                } else {
                    "'date: <Date>'"
                }
            ),
        }
    }
}

/// `Signature keyId="..",algorithm="hmac-sha1",signature=".."`: HMAC-SHA1 with `key` over
/// `date: <date>` (draft-cavage's default signing string), or over the bare `date` value,
/// base64 with padding. See the ESPF protocol notes, section 2.3.
pub fn signature_authorization(key_id: &str, key: &[u8], date: &str, bare_date: bool) -> String {
    let signing_string = if bare_date {
        date.to_string()
    } else {
        format!("date: {date}")
    };
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, key);
    let tag = hmac::sign(&key, signing_string.as_bytes());
    format!(
        "Signature keyId=\"{key_id}\",algorithm=\"hmac-sha1\",signature=\"{}\"",
        base64_encode(tag.as_ref())
    )
}

/// Where the events go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `https://` rather than `http://`.
    pub https: bool,
    /// The host as written, without brackets around an IPv6 address.
    pub host: String,
    /// The port, 80 / 443 by default.
    pub port: u16,
    /// The path (with any query), `/events` when the URL has none.
    pub path: String,
}

impl Target {
    /// Parses `http[s]://host[:port][/path]`.
    pub fn parse(url: &str) -> Result<Target, String> {
        let (https, rest) = if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else {
            return Err(format!("'{url}' must start with http:// or https://"));
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/events"),
        };
        let default_port = if https { 443 } else { 80 };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("'{url}': unclosed '[' in the host"))?;
            match after.strip_prefix(':') {
                Some(p) => (h, Some(p)),
                None if after.is_empty() => (h, None),
                None => return Err(format!("'{url}': unexpected text after ']'")),
            }
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        let port = match port {
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("'{url}': '{p}' is not a port"))?,
            None => default_port,
        };
        if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '@') {
            return Err(format!("'{url}' has no usable host"));
        }
        if path.contains(|c: char| c.is_whitespace() || c.is_control()) {
            return Err(format!(
                "'{url}': the path contains spaces or control characters"
            ));
        }
        Ok(Target {
            https,
            host: host.to_string(),
            port,
            path: path.to_string(),
        })
    }

    /// The URL, for printing.
    pub fn url(&self) -> String {
        format!(
            "{}://{}{}",
            if self.https { "https" } else { "http" },
            self.host_header(),
            self.path
        )
    }

    /// The `Host` header value.
    fn host_header(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let default = if self.https { 443 } else { 80 };
        if self.port == default {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

/// The URL the service described by the environment listens on.
fn url_from_env(env: &dyn Fn(&str) -> Option<String>) -> String {
    let listen = env("ESPFD_LISTEN").unwrap_or_else(|| "127.0.0.1:8080".into());
    let listen = match listen.parse::<SocketAddr>() {
        Ok(a) => crate::http::local_address(a).to_string(),
        Err(_) => listen,
    };
    let path = env("ESPFD_EVENTS_PATH").unwrap_or_else(|| "/events".into());
    let scheme = if env("ESPFD_TLS_CERT").is_some() {
        "https"
    } else {
        "http"
    };
    format!("{scheme}://{listen}{path}")
}

/// A secret from `NAME` or the file named by `NAME_FILE` (one trailing newline dropped).
fn env_secret(env: &dyn Fn(&str) -> Option<String>, name: &str) -> Result<Option<String>, Error> {
    if let Some(v) = env(name) {
        return Ok(Some(v));
    }
    let file_var = format!("{name}_FILE");
    match env(&file_var) {
        Some(path) => crate::config::read_secret_file(&file_var, &path)
            .map(Some)
            .map_err(|e| usage(format!("{}: {}", e.var, e.reason))),
        None => Ok(None),
    }
}

/// What each request carries as its body.
#[derive(Clone)]
pub enum BodySource {
    /// The event template.
    Template {
        event_type: String,
        account: u64,
        accounts: u64,
        start_id: u64,
    },
    /// These bytes, unchanged, for every request.
    Literal(Arc<Vec<u8>>),
}

impl BodySource {
    /// The body of request `n`.
    pub fn body(&self, n: u64) -> Vec<u8> {
        match self {
            BodySource::Literal(bytes) => bytes.as_ref().clone(),
            BodySource::Template {
                event_type,
                account,
                accounts,
                start_id,
            } => event_body(
                event_type,
                start_id.saturating_add(n),
                account.saturating_add(n % accounts),
            ),
        }
    }
}

/// An event of `event_type` naming entity `id` in the variable its group uses.
pub fn event_body(event_type: &str, i_event: u64, id: u64) -> Vec<u8> {
    let group = event_type.split('/').next().unwrap_or("");
    let variables = match group {
        "Customer" => serde_json::json!({"i_event": i_event, "i_customer": id}),
        "Invoice" => serde_json::json!({"i_event": i_event, "i_customer": id, "i_invoice": id}),
        "DID" => serde_json::json!({"i_event": i_event, "number": id.to_string()}),
        _ => serde_json::json!({"i_event": i_event, "i_account": id}),
    };
    serde_json::json!({"event_type": event_type, "variables": variables})
        .to_string()
        .into_bytes()
}

/// A checked command line.
pub struct Plan {
    pub target: Target,
    pub auth: SendAuth,
    pub wrong_credentials: bool,
    pub tls: Option<Arc<ClientConfig>>,
    pub timeout: Duration,
    pub count: u64,
    pub concurrency: usize,
    pub rate: Option<f64>,
    pub body: BodySource,
}

fn number<T: std::str::FromStr + PartialOrd + std::fmt::Display>(
    flag: &str,
    value: Option<&str>,
    default: T,
    min: T,
    max: T,
) -> Result<T, Error> {
    let Some(v) = value else { return Ok(default) };
    match v.trim().parse::<T>() {
        Ok(n) if n >= min && n <= max => Ok(n),
        _ => Err(usage(format!(
            "{flag}: '{v}' is not a whole number from {min} to {max}"
        ))),
    }
}

impl RawArgs {
    /// Checks everything; `env` looks up environment variables (tests pass a map).
    pub fn validate(self, env: &dyn Fn(&str) -> Option<String>) -> Result<Plan, Error> {
        let url = self.url.clone().unwrap_or_else(|| url_from_env(env));
        let target = Target::parse(&url).map_err(|e| usage(format!("--url: {e}")))?;

        let tls = if target.https {
            Some(tls_config(self.ca_file.as_deref(), self.insecure)?)
        } else if self.ca_file.is_some() || self.insecure {
            return Err(usage(
                "--ca-file and --insecure apply to https:// URLs only",
            ));
        } else {
            None
        };
        let timeout = match &self.timeout {
            None => Duration::from_secs(30),
            Some(v) => parse_duration(v).filter(|d| !d.is_zero()).ok_or_else(|| {
                usage(format!(
                    "--timeout: '{v}' is not a positive duration (e.g. 500ms, 30s)"
                ))
            })?,
        };

        let auth = self.auth(env)?;

        let count = number("--count", self.count.as_deref(), 1u64, 1, 1_000_000_000)?;
        let concurrency = number(
            "--concurrency",
            self.concurrency.as_deref(),
            1usize,
            1,
            4096,
        )?;
        let rate = match &self.rate {
            None => None,
            Some(v) => Some(
                v.trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|r| r.is_finite() && *r > 0.0)
                    .ok_or_else(|| {
                        usage(format!(
                            "--rate: '{v}' is not a positive number of events per second"
                        ))
                    })?,
            ),
        };

        let body = match &self.body {
            Some(file) => {
                let template_flags = [
                    ("--event-type", &self.event_type),
                    ("--account", &self.account),
                    ("--accounts", &self.accounts),
                    ("--start-id", &self.start_id),
                ];
                if let Some((flag, _)) = template_flags.iter().find(|(_, v)| v.is_some()) {
                    return Err(usage(format!(
                        "--body sends the file as it is; {flag} cannot be combined with it"
                    )));
                }
                let mut bytes = Vec::new();
                let read = if file == "-" {
                    std::io::stdin().read_to_end(&mut bytes).map(|_| ())
                } else {
                    std::fs::read(file).map(|b| bytes = b)
                };
                read.map_err(|e| usage(format!("--body: cannot read {file}: {e}")))?;
                BodySource::Literal(Arc::new(bytes))
            }
            None => {
                let event_type = self
                    .event_type
                    .clone()
                    .unwrap_or_else(|| "Subscriber/Updated".into());
                if event_type.trim().is_empty() {
                    return Err(usage("--event-type: must not be empty"));
                }
                let default_start = (now_ms() / 1000).max(0) as u64 * 1_000_000;
                BodySource::Template {
                    event_type,
                    account: number(
                        "--account",
                        self.account.as_deref(),
                        1000u64,
                        0,
                        i64::MAX as u64 / 2,
                    )?,
                    accounts: number(
                        "--accounts",
                        self.accounts.as_deref(),
                        1u64,
                        1,
                        1_000_000_000,
                    )?,
                    start_id: number(
                        "--start-id",
                        self.start_id.as_deref(),
                        default_start,
                        0,
                        i64::MAX as u64 / 2,
                    )?,
                }
            }
        };

        Ok(Plan {
            target,
            auth,
            wrong_credentials: self.wrong_credentials,
            tls,
            timeout,
            count,
            concurrency,
            rate,
            body,
        })
    }

    /// The scheme and its secrets, from flags or the service's variables.
    fn auth(&self, env: &dyn Fn(&str) -> Option<String>) -> Result<SendAuth, Error> {
        let scheme = self
            .auth
            .clone()
            .or_else(|| env("ESPFD_AUTH"))
            .unwrap_or_else(|| "basic".into());
        let wrong = self.wrong_credentials;
        // With --wrong-credentials nothing needs to be configured: made-up values are wrong
        // anyway, and known ones are made wrong below.
        let need = |value: Option<String>, what: &str, made_up: &str| -> Result<String, Error> {
            match value {
                Some(v) if !v.is_empty() => Ok(v),
                _ if wrong => Ok(made_up.to_string()),
                _ => Err(usage(format!("{scheme} auth needs {what}"))),
            }
        };
        let auth = match scheme.as_str() {
            "none" => {
                if wrong {
                    return Err(usage(
                        "--wrong-credentials needs a scheme with credentials (basic, custom or signature)",
                    ));
                }
                SendAuth::None
            }
            "basic" => {
                let user = need(
                    self.user.clone().or_else(|| env("ESPFD_AUTH_USER")),
                    "--user (or ESPFD_AUTH_USER)",
                    "espfd-send",
                )?;
                if user.contains(':') {
                    return Err(usage("--user: must not contain ':'"));
                }
                let password = need(
                    self.password
                        .clone()
                        .map_or_else(|| env_secret(env, "ESPFD_AUTH_PASSWORD"), |p| Ok(Some(p)))?,
                    "--password (or ESPFD_AUTH_PASSWORD)",
                    "",
                )?;
                SendAuth::Basic { user, password }
            }
            "custom" => {
                let value = need(
                    self.custom
                        .clone()
                        .map_or_else(|| env_secret(env, "ESPFD_AUTH_CUSTOM"), |c| Ok(Some(c)))?,
                    "--custom 'TYPE CREDENTIALS' (or ESPFD_AUTH_CUSTOM)",
                    "Plain espfd-send",
                )?;
                match value.split_once(' ') {
                    Some((t, c)) if !t.is_empty() && !c.trim().is_empty() => {}
                    _ => {
                        return Err(usage(
                            "--custom: must be '<type> <credentials>', e.g. 'Plain passexample'",
                        ))
                    }
                }
                SendAuth::Custom { value }
            }
            "signature" => {
                let key_id = need(
                    self.key_id.clone().or_else(|| env("ESPFD_AUTH_KEY_ID")),
                    "--key-id (or ESPFD_AUTH_KEY_ID)",
                    "espfd-send",
                )?;
                if key_id.contains(['"', '\r', '\n']) {
                    return Err(usage("--key-id: must not contain quotes or line breaks"));
                }
                let key = need(
                    self.key
                        .clone()
                        .map_or_else(|| env_secret(env, "ESPFD_AUTH_KEY"), |k| Ok(Some(k)))?,
                    "--key (or ESPFD_AUTH_KEY)",
                    "",
                )?;
                SendAuth::Signature {
                    key_id,
                    key: key.into_bytes(),
                    bare_date: self.sign_bare_date,
                }
            }
            other => return Err(usage(format!("--auth: '{other}' is not one of {SCHEMES}"))),
        };
        if self.sign_bare_date && !matches!(auth, SendAuth::Signature { .. }) {
            return Err(usage("--sign-bare-date applies to --auth signature only"));
        }
        if let SendAuth::Custom { value } = &auth {
            if value.contains(['\r', '\n']) {
                return Err(usage("--custom: must not contain line breaks"));
            }
        }
        Ok(if wrong { auth.wrong() } else { auth })
    }
}

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
fn tls_config(ca_file: Option<&str>, insecure: bool) -> Result<Arc<ClientConfig>, Error> {
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

/// `espfd send ARGS...`.
pub fn run(args: &[String]) -> Result<ExitCode, Error> {
    let raw = RawArgs::parse(args)?;
    if raw.help {
        print!("{HELP}");
        return Ok(ExitCode::SUCCESS);
    }
    let plan = raw.validate(&crate::config::env_var)?;
    let addr = (plan.target.host.as_str(), plan.target.port)
        .to_socket_addrs()
        .map_err(|e| Error::Other(format!("send: cannot resolve {}: {e}", plan.target.host)))?
        .next()
        .ok_or_else(|| Error::Other(format!("send: {} has no address", plan.target.host)))?;
    let tls = match &plan.tls {
        None => None,
        Some(config) => Some(Tls {
            config: config.clone(),
            server_name: ServerName::try_from(plan.target.host.clone()).map_err(|e| {
                usage(format!(
                    "--url: '{}' is not a TLS server name: {e}",
                    plan.target.host
                ))
            })?,
        }),
    };
    let expected: u16 = if plan.wrong_credentials { 401 } else { 200 };

    println!(
        "espfd send: {} event{} to {} ({}{}), {} connection{}, {}",
        plan.count,
        if plan.count == 1 { "" } else { "s" },
        plan.target.url(),
        plan.auth.describe(),
        if plan.wrong_credentials {
            ", deliberately wrong credentials"
        } else {
            ""
        },
        plan.concurrency.min(plan.count as usize),
        if plan.concurrency.min(plan.count as usize) == 1 {
            ""
        } else {
            "s"
        },
        match plan.rate {
            Some(r) => format!("at most {r} events/s"),
            None => "as fast as possible".into(),
        }
    );

    let body = plan.body.clone();
    let auth = plan.auth.clone();
    let spec = LoadSpec {
        host: plan.target.host_header(),
        tls,
        connections: plan.concurrency,
        rate: plan.rate,
        timeout: plan.timeout,
        headers: Arc::new(move |_, date| {
            auth.authorization(date)
                .map(|a| ("Authorization".to_string(), a))
                .into_iter()
                .collect()
        }),
        ..LoadSpec::new(addr, &plan.target.path, plan.count, move |n| body.body(n))
    };
    let report = load::run(spec);

    for (code, n) in &report.codes {
        let example = report.examples.get(code).map(String::as_str).unwrap_or("");
        println!("reply {code}: {n}  (e.g. {example:?})");
    }
    if report.errors > 0 {
        println!(
            "no reply: {} (first error: {})",
            report.errors,
            report.first_error.as_deref().unwrap_or("?")
        );
    }
    if report.latencies_us.is_empty() {
        println!("latency: no replies");
    } else {
        println!("latency: {}", report.latency_line());
    }
    println!(
        "throughput: {:.1} replies/s ({} replies in {:.3} s)",
        report.throughput(),
        report.latencies_us.len(),
        report.elapsed.as_secs_f64()
    );
    let as_expected = report.codes.get(&expected).copied().unwrap_or(0);
    if as_expected == plan.count {
        println!(
            "result: all {} replies were {expected}, as expected",
            plan.count
        );
        Ok(ExitCode::SUCCESS)
    } else {
        println!(
            "result: {} of {} events did not get the expected {expected}",
            plan.count - as_expected,
            plan.count
        );
        Ok(ExitCode::FAILURE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn plan(list: &[&str], env: &[(&str, &str)]) -> Result<Plan, Error> {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        RawArgs::parse(&args(list))?.validate(&|n| env.get(n).cloned())
    }

    #[test]
    fn signature_matches_the_values_computed_for_the_documented_inputs() {
        // espf-protocol.md section 2.3: key "signature", key ID "test".
        let date = "Thu, 12 Apr 2018 15:24:00 GMT";
        assert_eq!(
            signature_authorization("test", b"signature", date, false),
            "Signature keyId=\"test\",algorithm=\"hmac-sha1\",signature=\"FHkFy/8bwxnoZGvTkmt8VqSBeSA=\""
        );
        assert!(signature_authorization("test", b"signature", date, true)
            .ends_with("signature=\"48+LtGkLvCsislw4FDSVCPirks8=\""));
    }

    #[test]
    fn basic_matches_the_documented_example_and_wrong_differs() {
        let p = plan(&["--user", "username", "--password", "secret"], &[]).unwrap();
        assert_eq!(
            p.auth.authorization("x").unwrap(),
            "Basic dXNlcm5hbWU6c2VjcmV0"
        );
        let w = plan(
            &[
                "--user=username",
                "--password=secret",
                "--wrong-credentials",
            ],
            &[],
        )
        .unwrap();
        assert_ne!(w.auth.authorization("x"), p.auth.authorization("x"));
        assert!(w.wrong_credentials);
    }

    #[test]
    fn secrets_come_from_the_service_variables() {
        let p = plan(
            &[],
            &[
                ("ESPFD_AUTH", "custom"),
                ("ESPFD_AUTH_CUSTOM", "Plain passexample"),
                ("ESPFD_LISTEN", "0.0.0.0:9000"),
                ("ESPFD_EVENTS_PATH", "/espf"),
            ],
        )
        .unwrap();
        assert_eq!(p.auth.authorization("x").unwrap(), "Plain passexample");
        assert_eq!(p.target.url(), "http://127.0.0.1:9000/espf");

        let dir = std::env::temp_dir().join(format!("espfd-send-key-{}", std::process::id()));
        std::fs::write(&dir, "signature\n").unwrap();
        let p = plan(
            &["--auth", "signature"],
            &[
                ("ESPFD_AUTH_KEY_ID", "test"),
                ("ESPFD_AUTH_KEY_FILE", dir.to_str().unwrap()),
            ],
        )
        .unwrap();
        let _ = std::fs::remove_file(&dir);
        assert!(p
            .auth
            .authorization("Thu, 12 Apr 2018 15:24:00 GMT")
            .unwrap()
            .ends_with("FHkFy/8bwxnoZGvTkmt8VqSBeSA=\""));
        // The description printed never holds the secret.
        assert!(!format!("{:?}", p.auth).contains("signature\""));
    }

    #[test]
    fn urls() {
        let t = Target::parse("https://espfd.example.net/events").unwrap();
        assert_eq!((t.https, t.port, t.path.as_str()), (true, 443, "/events"));
        let t = Target::parse("http://[::1]:8080").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("::1", 8080, "/events")
        );
        assert_eq!(t.url(), "http://[::1]:8080/events");
        for bad in [
            "ftp://x",
            "http://",
            "http://host:0/",
            "http://host:99999",
            "http://a b/",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn templates_name_the_entity_of_their_group() {
        let body = |t: &str| -> serde_json::Value {
            serde_json::from_slice(&event_body(t, 7, 42)).unwrap()
        };
        assert_eq!(body("Subscriber/Created")["variables"]["i_account"], 42);
        assert_eq!(body("Customer/Updated")["variables"]["i_customer"], 42);
        assert_eq!(body("Invoice/Updated")["variables"]["i_invoice"], 42);
        assert_eq!(body("DID/Updated")["variables"]["number"], "42");
        for t in ["Subscriber/Created", "Customer/Updated", "DID/Deleted"] {
            let e = crate::event::Event::parse(&event_body(t, 7, 42)).unwrap();
            assert_eq!(e.i_event, 7);
        }
        let spread = BodySource::Template {
            event_type: "Subscriber/Updated".into(),
            account: 100,
            accounts: 3,
            start_id: 10,
        };
        let ids: Vec<(i64, Option<i64>)> = (0..4)
            .map(|n| {
                let e = crate::event::Event::parse(&spread.body(n)).unwrap();
                (e.i_event, e.i_account())
            })
            .collect();
        assert_eq!(
            ids,
            [
                (10, Some(100)),
                (11, Some(101)),
                (12, Some(102)),
                (13, Some(100))
            ]
        );
    }

    #[test]
    fn bad_command_lines_are_usage_errors_naming_the_flag() {
        let cases: &[(&[&str], &str)] = &[
            (&["--frobnicate"], "--frobnicate"),
            (&["--count"], "--count needs a value"),
            (
                &["--count", "x", "--user", "u", "--password", "p"],
                "--count",
            ),
            (
                &["--count", "0", "--user", "u", "--password", "p"],
                "--count",
            ),
            (
                &["--rate", "-1", "--user", "u", "--password", "p"],
                "--rate",
            ),
            (&["--auth", "digest"], "--auth"),
            (&["--auth", "basic"], "--user"),
            (&["--auth", "custom", "--custom", "Plain"], "--custom"),
            (&["--auth", "signature", "--key-id", "k"], "--key"),
            (
                &["--auth", "none", "--wrong-credentials"],
                "--wrong-credentials",
            ),
            (&["--url", "http://x/", "--insecure"], "--insecure"),
            (&["--url", "ftp://x/"], "--url"),
            (&["--insecure=yes"], "--insecure"),
            (&["a", "b"], "unexpected argument"),
            (
                &[
                    "--body",
                    "/nonexistent/espfd",
                    "--user",
                    "u",
                    "--password",
                    "p",
                ],
                "--body",
            ),
            (
                &[
                    "--body",
                    "-",
                    "--account",
                    "5",
                    "--user",
                    "u",
                    "--password",
                    "p",
                ],
                "--account",
            ),
            (
                &["--user", "u", "--password", "p", "--sign-bare-date"],
                "--sign-bare-date",
            ),
        ];
        for (list, want) in cases {
            match plan(list, &[]) {
                Err(Error::Usage(m)) => assert!(m.contains(want), "{list:?}: {m}"),
                Err(e) => panic!("{list:?}: not a usage error: {e}"),
                Ok(_) => panic!("{list:?}: accepted"),
            }
        }
    }

    #[test]
    fn help_names_every_flag() {
        let src = include_str!("send.rs");
        let parser = &src[src.find("pub fn parse(").unwrap()
            ..src.find("/// How requests authenticate").unwrap()];
        let flags: Vec<&str> = parser
            .split('"')
            .filter(|s| s.starts_with("--") && s.len() > 2)
            .collect();
        assert!(flags.len() >= 20, "{flags:?}");
        for flag in flags {
            assert!(HELP.contains(flag), "{flag} is not in espfd send --help");
        }
    }
}
