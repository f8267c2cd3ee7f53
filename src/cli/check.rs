//! `espfd check`: validates the configuration, then tries every connection the service needs
//! and prints one line per check:
//!
//! ```text
//! ok   <what>
//! FAIL <what>: <reason> (fix <VARIABLE>)
//! ```
//!
//! Checks, in order: the configuration; the state directory (writable, the store opens); the
//! TLS files when `ESPFD_TLS_CERT` / `ESPFD_TLS_KEY` are set (readable PEM; the service
//! validates them fully at start); PortaBilling `Session/login` with the configured
//! credentials and a harmless lookup (`Account/get_account_info` of `i_account` 0); the ESPF
//! API (`GET /espf/v1/groups` with the auth the service uses, and `ESPFD_GROUP` in the list);
//! the target's authentication (with OAuth 2.0: a token fetched from the token endpoint); the
//! target (an HTTP `OPTIONS`: any HTTP answer means reachable).
//!
//! After the configuration's line, an `ok` line says which event types are provisioned
//! (`ESPFD_EVENT_TYPES`), since a filter that leaves out too much is silent otherwise.
//!
//! Exit code: 0 when every check passed, 1 when one failed, 78 for a configuration error
//! (then nothing else is tried).
//!
//! It changes nothing: no event is sent to the target, no status to ESPF, and a store that
//! does not exist yet is not created (SQLite is tried on a scratch file in the directory
//! instead), so running it as root does not leave root-owned files for the service.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use std::sync::Arc;

use serde_json::json;
use ureq::tls::{parse_pem, PemItem};

use crate::config::{Config, RawConfig};
use crate::connector::send::Sender;
use crate::connector::template::Mode;
use crate::connector::{ConnectorSettings, ConnectorSpec, TemplateConnector, UrlConnector};
use crate::enrich::Context;
use crate::error::Error;
use crate::espf::{EspfAuth, EspfClient, GroupsError};
use crate::event::Event;
use crate::portabilling::{PbClient, PbError, PbSecret};
use crate::store::Reader;
use crate::util::now_ms;

/// Longest wait for one connection check.
const MAX_WAIT: Duration = Duration::from_secs(10);

/// Runs `espfd check` on the process environment.
pub fn run() -> Result<ExitCode, Error> {
    let mut report = Report::default();
    let config = match RawConfig::from_env().and_then(|raw| raw.validate()) {
        Ok(c) => c,
        Err(e) => {
            report.fail("configuration", &e.reason, &e.var);
            return Ok(ExitCode::from(78));
        }
    };
    // The target's CA file and client certificate are read when its agent is built: a file
    // that holds nothing usable is a configuration error like any other, exit 78.
    if let ConnectorSpec::Http(_) = &config.connector.spec {
        if let Err(Error::Config(e)) = Sender::new(&config.connector) {
            report.fail("configuration", &e.reason, &e.var);
            return Ok(ExitCode::from(78));
        }
    }
    report.ok("configuration");
    report.ok(&event_types(&config));
    check_state_dir(&mut report, &config);
    if let Some(files) = &config.tls {
        check_tls(&mut report, &files.cert, &files.key);
    }
    // A template that does not load is a configuration error, as at start.
    let template = match &config.connector.spec {
        ConnectorSpec::Template(path) => match load_template(&config, path) {
            Ok(t) => {
                report.ok(&format!(
                    "template {} ({} steps)",
                    path.display(),
                    t.steps()
                ));
                Some(t)
            }
            Err(Error::Config(e)) => {
                report.fail("template", &e.reason, &e.var);
                return Ok(ExitCode::from(78));
            }
            Err(e) => {
                report.fail("template", &e.to_string(), "ESPFD_TARGET_TEMPLATE");
                return Ok(ExitCode::from(78));
            }
        },
        _ => None,
    };
    let pb = check_portabilling(&mut report, &config);
    check_espf(&mut report, &config, pb);
    match &template {
        Some(t) => check_template(&mut report, &config, t),
        None => check_target(&mut report, &config),
    }
    Ok(if report.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The filter in effect, as `check` prints it: `event types: Subscriber/*, SIM/*`.
fn event_types(config: &Config) -> String {
    let types = &config.event_types;
    if types.takes_all() {
        format!("event types: {types} (every event is provisioned)")
    } else {
        format!("event types: {types} (others are stored as skipped; ESPFD_EVENT_TYPES)")
    }
}

/// The printed report.
#[derive(Default)]
struct Report {
    failed: usize,
}

impl Report {
    fn ok(&mut self, what: &str) {
        self.line(format!("ok   {what}"));
    }

    fn fail(&mut self, what: &str, reason: &str, var: &str) {
        self.failed += 1;
        self.line(format!("FAIL {what}: {reason} (fix {var})"));
    }

    fn line(&self, text: String) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{text}");
        let _ = out.flush();
    }
}

/// Whether this process runs as root (the owner of `/proc/self` is the effective user).
fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn check_state_dir(report: &mut Report, config: &Config) {
    let dir = &config.state_dir;
    let what = format!("state directory {}", dir.display());
    if dir.exists() && !dir.is_dir() {
        return report.fail(&what, "exists but is not a directory", "ESPFD_STATE_DIR");
    }
    if let Err(e) = std::fs::create_dir_all(dir) {
        return report.fail(&what, &format!("cannot create it: {e}"), "ESPFD_STATE_DIR");
    }
    let scratch = dir.join(format!(".espfd-check-{}", std::process::id()));
    let written = std::fs::write(&scratch, b"espfd check\n");
    let _ = std::fs::remove_file(&scratch);
    if let Err(e) = written {
        return report.fail(&what, &format!("not writable: {e}"), "ESPFD_STATE_DIR");
    }
    let db = dir.join("espfd.db");
    let store = if db.exists() {
        open_existing_store(&db)
    } else {
        try_sqlite(dir).map(|()| "no store yet; espfd.db is created at the first start".into())
    };
    let root = if running_as_root() {
        "; checked as root: the service's user must be able to write it too"
    } else {
        ""
    };
    match store {
        Ok(detail) => report.ok(&format!("{what} is writable ({detail}{root})")),
        Err(reason) => report.fail(&what, &reason, "ESPFD_STATE_DIR"),
    }
}

/// Opens the service's store read-write and takes its write lock for a moment.
fn open_existing_store(db: &Path) -> Result<String, String> {
    OpenOptions::new()
        .append(true)
        .open(db)
        .map_err(|e| format!("{} is not writable: {e}", db.display()))?;
    let reader = Reader::open(db).map_err(|e| e.to_string())?;
    reader
        .check_writable(Duration::from_secs(5))
        .map_err(|e| e.to_string())?;
    let total = reader.total_count().map_err(|e| e.to_string())?;
    let open = reader.open_count().map_err(|e| e.to_string())?;
    Ok(format!("store espfd.db opens: {total} events, {open} open"))
}

/// Creates, writes and removes a scratch SQLite database in `dir`, the way the store is kept
/// (WAL journal).
fn try_sqlite(dir: &Path) -> Result<(), String> {
    let path = dir.join(format!(".espfd-check-{}.db", std::process::id()));
    let result = (|| -> rusqlite::Result<()> {
        let conn = rusqlite::Connection::open(&path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.execute_batch("CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (1);")?;
        Ok(())
    })();
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.clone().into_os_string();
        p.push(suffix);
        let _ = std::fs::remove_file(p);
    }
    result.map_err(|e| format!("SQLite cannot keep a database here: {e}"))
}

fn check_tls(report: &mut Report, cert: &Path, key: &Path) {
    let mut readable = true;
    for (path, want_key, var) in [
        (cert, false, "ESPFD_TLS_CERT"),
        (key, true, "ESPFD_TLS_KEY"),
    ] {
        let what = format!(
            "TLS {} {}",
            if want_key { "key" } else { "certificate" },
            path.display()
        );
        match pem_summary(path, want_key) {
            Ok(detail) => report.ok(&format!("{what} ({detail})")),
            Err(reason) => {
                readable = false;
                report.fail(&what, &reason, var)
            }
        }
    }
    if readable {
        // The same loading the service does: key type, and that key and certificate match.
        match crate::http::Tls::load(cert, key) {
            Ok(t) => report.ok(&format!(
                "TLS key matches the certificate (SHA-256 {})",
                t.fingerprint()
            )),
            Err(e) => report.fail("TLS key and certificate", &e.to_string(), "ESPFD_TLS_KEY"),
        }
    }
}

/// Reads a PEM file and says what it holds: certificates, or one private key.
fn pem_summary(path: &Path, want_key: bool) -> Result<String, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read it: {e}"))?;
    let (mut certs, mut keys) = (0, 0);
    for item in parse_pem(&bytes) {
        match item.map_err(|e| format!("not valid PEM: {e}"))? {
            // DER always starts with a SEQUENCE; anything else is not a certificate at all.
            PemItem::Certificate(c) if c.der().first() == Some(&0x30) => certs += 1,
            PemItem::Certificate(_) => return Err("a CERTIFICATE block is not DER".into()),
            PemItem::PrivateKey(_) => keys += 1,
            _ => {}
        }
    }
    match (want_key, certs, keys) {
        (false, 0, _) => Err("holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into()),
        (false, n, _) => Ok(format!("{n} certificate{}", if n == 1 { "" } else { "s" })),
        (true, _, 0) => Err("holds no PEM private key (PKCS#8, PKCS#1 or SEC1)".into()),
        (true, _, 1) => Ok("1 private key".into()),
        (true, _, n) => Err(format!("holds {n} private keys; give exactly one")),
    }
}

/// Variable that holds the PortaBilling secret in use.
fn secret_var(config: &Config) -> &'static str {
    match config.pb.secret {
        PbSecret::Password(_) => "ESPFD_PB_PASSWORD",
        PbSecret::Token(_) => "ESPFD_PB_TOKEN",
    }
}

/// The variable to fix for a transport error: the CA file for certificate trouble, else the URL.
fn transport_var(message: &str, url_var: &'static str) -> &'static str {
    let m = message.to_ascii_lowercase();
    if m.contains("certificate") || m.contains("unknownissuer") || m.contains("tls") {
        "ESPFD_PB_CA_FILE"
    } else {
        url_var
    }
}

/// Logs in and looks something up, with the service's own client. Returns the client, and
/// whether it logged in, for the ESPF check; `None` when the client could not be built.
fn check_portabilling(report: &mut Report, config: &Config) -> Option<(Arc<PbClient>, bool)> {
    let mut settings = config.pb.clone();
    settings.timeout = settings.timeout.min(MAX_WAIT);
    let what = format!(
        "PortaBilling login as {} at {}",
        settings.login, settings.url
    );
    let pb = match PbClient::new(&settings) {
        Ok(pb) => pb,
        Err(e) => {
            report.fail(&what, &e.to_string(), "ESPFD_PB_CA_FILE");
            return None;
        }
    };
    let pb = Arc::new(pb);
    match pb.token() {
        Ok(_) => {}
        Err(PbError::LoginRefused { code, text }) => {
            let reason = format!(
                "refused ({code}: {text}); the login name (ESPFD_PB_LOGIN) may be wrong too"
            );
            report.fail(&what, &reason, secret_var(config));
            return Some((pb, false));
        }
        Err(PbError::Transport(m) | PbError::Down(m)) => {
            let var = transport_var(&m, "ESPFD_PB_URL");
            report.fail(&what, &m, var);
            return Some((pb, false));
        }
        Err(PbError::Fault { code, text }) => {
            report.fail(&what, &format!("{code}: {text}"), "ESPFD_PB_URL");
            return Some((pb, false));
        }
    };
    report.ok(&what);
    let what = "PortaBilling lookup Account/get_account_info";
    match pb.call("Account", "get_account_info", json!({"i_account": 0})) {
        Ok(_) => report.ok(what),
        Err(PbError::Fault { code, text }) => report.fail(
            what,
            &format!(
                "{code}: {text}; the API user's role must allow reading accounts, customers, invoices and DIDs"
            ),
            "ESPFD_PB_LOGIN",
        ),
        Err(PbError::LoginRefused { code, text }) => {
            report.fail(what, &format!("login refused ({code}: {text})"), secret_var(config))
        }
        Err(PbError::Transport(m) | PbError::Down(m)) => {
            let var = transport_var(&m, "ESPFD_PB_URL");
            report.fail(what, &m, var)
        }
    }
    Some((pb, true))
}

/// Asks the ESPF API for its service groups with the service's own status client (its URL and
/// auth), and looks for `ESPFD_GROUP` among them. `pb` is what [`check_portabilling`] returned:
/// bearer auth needs its session, basic auth does not.
fn check_espf(report: &mut Report, config: &Config, pb: Option<(Arc<PbClient>, bool)>) {
    let mut settings = config.espf.clone();
    settings.timeout = settings.timeout.min(MAX_WAIT);
    settings.pool = 1;
    let what = format!("ESPF API {}/espf/v1/groups", settings.url);
    let pb = match (pb, &settings.auth) {
        (Some((_, false)) | None, EspfAuth::Bearer) => {
            return report.fail(
                &what,
                "not tried: it needs the PortaBilling session, whose login failed",
                secret_var(config),
            )
        }
        (Some((pb, _)), _) => pb,
        // The PortaBilling client could not be built (its CA file); the status client would
        // fail the same way, and this says why.
        (None, EspfAuth::Basic { .. }) => match PbClient::new(&config.pb) {
            Ok(pb) => Arc::new(pb),
            Err(e) => return report.fail(&what, &e.to_string(), "ESPFD_PB_CA_FILE"),
        },
    };
    let espf = match EspfClient::new(&settings, pb) {
        Ok(c) => c,
        Err(e) => return report.fail(&what, &e.to_string(), "ESPFD_PB_CA_FILE"),
    };
    let names = match espf.groups() {
        Ok(names) => names,
        Err(GroupsError::Login(e)) => {
            return report.fail(&what, &e.into_failure("login").message, secret_var(config))
        }
        Err(GroupsError::Transport(m)) => {
            let var = transport_var(&m, "ESPFD_ESPF_URL");
            return report.fail(&what, &m, var);
        }
        Err(GroupsError::Status { code, .. }) if code == 401 || code == 403 => {
            return report.fail(
                &what,
                &format!("HTTP {code}: the ESPF API refused the credentials"),
                "ESPFD_ESPF_AUTH",
            )
        }
        Err(GroupsError::Status { code: 404, .. }) => {
            return report.fail(
                &what,
                "HTTP 404: no ESPF API at this address",
                "ESPFD_ESPF_URL",
            )
        }
        Err(GroupsError::Status { code, text }) => {
            return report.fail(&what, &format!("HTTP {code}: {text}"), "ESPFD_ESPF_URL")
        }
        Err(GroupsError::NoGroupList) => {
            return report.fail(
                &what,
                "the reply has no group_list; is this PortaBilling's ESPF API?",
                "ESPFD_ESPF_URL",
            )
        }
    };
    if names.iter().any(|n| n == &config.group) {
        report.ok(&format!("{what}: service group {} exists", config.group));
    } else {
        report.fail(
            &what,
            &format!(
                "service group '{}' is not in PortaBilling's list ({}); use one of them or register it (POST /espf/v1/group/create)",
                config.group,
                names.join(", ")
            ),
            "ESPFD_GROUP",
        );
    }
}

/// The settings `check` talks to the target with: short waits, one connection.
fn check_settings(config: &Config) -> ConnectorSettings {
    ConnectorSettings {
        timeout: config.connector.timeout.min(MAX_WAIT),
        pool: 1,
        ..config.connector.clone()
    }
}

fn load_template(config: &Config, path: &std::path::Path) -> Result<TemplateConnector, Error> {
    let mut pb = config.pb.clone();
    pb.timeout = pb.timeout.min(MAX_WAIT);
    TemplateConnector::load(
        path,
        &check_settings(config),
        Arc::new(PbClient::new(&pb)?),
        true,
    )
}

/// Renders the template for a sample `Subscriber/Updated` event whose account PortaBilling
/// does not know (nothing is sent), then asks each host its URLs name whether it answers.
fn check_template(report: &mut Report, config: &Config, template: &TemplateConnector) {
    let event = Event::parse(
        br#"{"event_type":"Subscriber/Updated","variables":{"i_event":1,"i_account":1,"i_env":1}}"#,
    )
    .expect("the sample event parses");
    let context = Context::new(&event, now_ms(), 1, &config.group, None);
    let run = template.run(&context, Mode::DryRun);
    let what = format!(
        "template {} renders a sample Subscriber/Updated event (account not found)",
        template.file()
    );
    let failed = run.steps.iter().find(|s| {
        s.request.is_none()
            && s.note
                .as_deref()
                .is_some_and(|n| !n.contains("use --send") && !n.contains("renders to nothing"))
    });
    if let Some(step) = failed {
        let reason = step.note.clone().unwrap_or_default();
        return report.fail(&what, &reason, "ESPFD_TARGET_TEMPLATE");
    }
    let summary: Vec<String> = run
        .steps
        .iter()
        .map(|s| match (&s.request, &s.note) {
            (Some(r), _) => format!("{}: {}", s.label, r.method),
            (None, Some(n)) => format!("{}: {n}", s.label),
            (None, None) => s.label.clone(),
        })
        .collect();
    report.ok(&format!("{what}: {}", summary.join("; ")));
    check_target_auth(report, &check_settings(config));
    let mut origins: Vec<String> = run
        .steps
        .iter()
        .filter_map(|s| s.request.as_ref())
        .filter_map(|r| origin(&r.url))
        .collect();
    origins.dedup();
    origins.sort();
    origins.dedup();
    for url in origins {
        let what = format!("target host {url}");
        match template.sender().probe(&url) {
            Ok(code) => report.ok(&format!("{what} answers (HTTP {code} to OPTIONS)")),
            Err(e) => report.fail(
                &what,
                &format!("unreachable: {e}"),
                "ESPFD_SETTING_* (the template's base URLs)",
            ),
        }
    }
}

/// `https://host:port/` of a URL.
fn origin(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let host = rest.split(['/', '?', '#']).next()?;
    (!host.is_empty()).then(|| format!("{scheme}://{host}/"))
}

/// The target's outbound authentication: with OAuth 2.0 a token is fetched now (nothing is
/// sent to the target with it); the other schemes are only described.
fn check_target_auth(report: &mut Report, settings: &ConnectorSettings) {
    let sender = match Sender::new(settings) {
        Ok(s) => s,
        Err(e) => return report.fail("target authentication", &e.to_string(), "ESPFD_TARGET_AUTH"),
    };
    match sender.check_auth() {
        Ok(line) => report.ok(&line),
        Err(e) => report.fail(
            "OAuth 2.0 token",
            &e,
            "ESPFD_TARGET_OAUTH_CLIENT_ID, ESPFD_TARGET_OAUTH_CLIENT_SECRET or ESPFD_TARGET_OAUTH_URL",
        ),
    }
}

/// Reaches the target with the service's own connector, without provisioning anything: an
/// `OPTIONS` to the HTTP target; for a command, only that the program exists (running it
/// would provision something).
fn check_target(report: &mut Report, config: &Config) {
    match &config.connector.spec {
        ConnectorSpec::Http(url) => {
            let what = format!("target {url}");
            let target = match UrlConnector::new(url, &check_settings(config)) {
                Ok(t) => t,
                Err(e) => return report.fail(&what, &e.to_string(), "ESPFD_TARGET_URL"),
            };
            check_target_auth(report, &check_settings(config));
            match target.probe() {
                Ok(code) => report.ok(&format!("{what} answers (HTTP {code} to OPTIONS)")),
                Err(e) => report.fail(&what, &format!("unreachable: {e}"), "ESPFD_TARGET_URL"),
            }
        }
        // Checked by check_template.
        ConnectorSpec::Template(_) => {}
        ConnectorSpec::Exec(cmd) => {
            let what = format!("target command {cmd}");
            let program = cmd.split_whitespace().next().unwrap_or("");
            let found = std::process::Command::new("/bin/sh")
                .arg("-c")
                .arg("command -v \"$1\" >/dev/null 2>&1")
                .arg("sh")
                .arg(program)
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if found {
                report.ok(&format!("{what} (found {program})"));
            } else {
                report.fail(
                    &what,
                    &format!("'{program}' is not an executable command here"),
                    "ESPFD_TARGET_EXEC",
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::base64_encode;
    use std::path::PathBuf;

    fn temp(name: &str, contents: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("espfd-check-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, contents).unwrap();
        p
    }

    fn pem(label: &str, der: &[u8]) -> String {
        format!(
            "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
            base64_encode(der)
        )
    }

    #[test]
    fn pem_files_are_told_apart() {
        let cert = temp("cert.pem", &pem("CERTIFICATE", &[0x30, 0x82, 0x01, 0x0a]));
        let chain = temp(
            "chain.pem",
            &(pem("CERTIFICATE", &[0x30, 1]) + &pem("CERTIFICATE", &[0x30, 2])),
        );
        let key = temp("key.pem", &pem("PRIVATE KEY", &[0x30, 0x82, 0x01]));
        let ec = temp("ec.pem", &pem("EC PRIVATE KEY", &[0x30, 0x77]));
        let junk = temp("junk.pem", "hello\n");
        let not_der = temp("notder.pem", &pem("CERTIFICATE", b"hello"));
        assert_eq!(pem_summary(&cert, false).unwrap(), "1 certificate");
        assert_eq!(pem_summary(&chain, false).unwrap(), "2 certificates");
        assert_eq!(pem_summary(&key, true).unwrap(), "1 private key");
        assert_eq!(pem_summary(&ec, true).unwrap(), "1 private key");
        assert!(pem_summary(&key, false)
            .unwrap_err()
            .contains("no PEM certificate"));
        assert!(pem_summary(&cert, true)
            .unwrap_err()
            .contains("no PEM private key"));
        assert!(pem_summary(&junk, false).is_err());
        assert!(pem_summary(&not_der, false).is_err());
        assert!(pem_summary(Path::new("/nonexistent/espfd.pem"), false)
            .unwrap_err()
            .contains("cannot read"));
        let _ = std::fs::remove_dir_all(cert.parent().unwrap());
    }

    #[test]
    fn certificate_trouble_points_at_the_ca_file() {
        assert_eq!(
            transport_var(
                "io: invalid peer certificate: UnknownIssuer",
                "ESPFD_PB_URL"
            ),
            "ESPFD_PB_CA_FILE"
        );
        assert_eq!(
            transport_var("io: Connection refused (os error 111)", "ESPFD_ESPF_URL"),
            "ESPFD_ESPF_URL"
        );
    }
}
