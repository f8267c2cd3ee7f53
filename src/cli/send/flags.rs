//! The command line of `espfd send`: flags as given ([`RawArgs`]), then checked, with the
//! service's environment variables as fallbacks, into the [`Plan`] the run follows.

use std::io::Read;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::ClientConfig;

use super::auth::SendAuth;
use super::body::BodySource;
use super::endpoint::Endpoint;
use super::tls::tls_config;
use super::usage;
use crate::error::Error;
use crate::ingress::signature::SigningString;
use crate::util::{now_ms, parse_duration};

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

/// A checked command line.
pub struct Plan {
    pub endpoint: Endpoint,
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
        let endpoint = Endpoint::parse(&url).map_err(|e| usage(format!("--url: {e}")))?;

        let tls = if endpoint.https {
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
            endpoint,
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
                    over: if self.sign_bare_date {
                        SigningString::BareDate
                    } else {
                        SigningString::Cavage
                    },
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
        assert_eq!(p.endpoint.url(), "http://127.0.0.1:9000/espf");

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
        let src = include_str!("flags.rs");
        let parser = &src
            [src.find("pub fn parse(").unwrap()..src.find("/// A checked command line.").unwrap()];
        let flags: Vec<&str> = parser
            .split('"')
            .filter(|s| s.starts_with("--") && s.len() > 2)
            .collect();
        assert!(flags.len() >= 20, "{flags:?}");
        for flag in flags {
            assert!(
                crate::cli::send::HELP.contains(flag),
                "{flag} is not in espfd send --help"
            );
        }
    }
}
