//! Log set-up: env_logger with our own line formats (`ESPFD_LOG_FORMAT=text|json`).
//!
//! Every line about an event carries `i_event=<n>`, so `grep i_event=7615` tells its story;
//! in JSON lines the number is also a field of its own, `"i_event": 7615`. Secrets are never
//! passed to a log macro anywhere in the crate. Subscriber data that reaches a line anyway —
//! a target quoting the record back in an error reply, say — is hidden here, for every line
//! whoever wrote it, according to `ESPFD_REDACT` (see `redact.rs`).
//!
//! Text lines escape control characters ([`printable`]): a newline in an event's data cannot
//! start a forged line. JSON lines are escaped by JSON itself.
//!
//! Other crates' lines are let through at info and above only, whatever `RUST_LOG` says:
//! below that, the HTTP client dumps whole requests and replies (session tokens, subscriber
//! records) in 16-byte hex lines that no redaction can recognise.

use std::io::Write;

use crate::redact::{printable, redact_text};
use crate::util::{format_rfc3339, now_ms};

/// Log line format (`ESPFD_LOG_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the logger once, without redaction; later calls do nothing. `RUST_LOG` sets the
/// filter (default info).
pub fn init(format: LogFormat) {
    install(format, Vec::new());
}

/// Installs the logger as the configuration says (`ESPFD_LOG_FORMAT`, `ESPFD_REDACT`):
/// format, and the field names whose values are hidden.
pub fn init_for(format: LogFormat, redact: &[String]) {
    install(format, redact.to_vec());
}

fn install(format: LogFormat, redact: Vec<String>) {
    let mut builder =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    match format {
        LogFormat::Text => builder.format(move |buf, record| {
            let msg = record.args().to_string();
            writeln!(
                buf,
                "{} {:<5} {}: {}",
                format_rfc3339(now_ms()),
                record.level(),
                record.target(),
                printable(&redact_text(&msg, &redact))
            )
        }),
        LogFormat::Json => builder.format(move |buf, record| {
            let msg = record.args().to_string();
            let msg = redact_text(&msg, &redact);
            let mut line = serde_json::json!({
                "ts": format_rfc3339(now_ms()),
                "level": record.level().as_str(),
                "target": record.target(),
                "msg": msg,
            });
            if let Some(id) = i_event_of(&msg) {
                line["i_event"] = id.into();
            }
            writeln!(buf, "{line}")
        }),
    };
    let logger = builder.build();
    let max = logger.filter();
    if log::set_boxed_logger(Box::new(OwnDetail(logger))).is_ok() {
        log::set_max_level(max);
    }
}

/// The logger, less other crates' debug and trace lines.
struct OwnDetail(env_logger::Logger);

impl log::Log for OwnDetail {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        shown(metadata.target(), metadata.level()) && self.0.enabled(metadata)
    }

    fn log(&self, record: &log::Record<'_>) {
        if shown(record.target(), record.level()) {
            self.0.log(record);
        }
    }

    fn flush(&self) {
        self.0.flush();
    }
}

/// Whether a line of `level` from `target` may be written at all.
fn shown(target: &str, level: log::Level) -> bool {
    let own = target == "espfd" || target.starts_with("espfd::");
    own || level <= log::Level::Info
}

/// The number after the first `i_event=` in a message.
fn i_event_of(msg: &str) -> Option<i64> {
    msg.split("i_event=")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|d| d.parse::<i64>().ok())
}

#[cfg(test)]
mod tests {
    use super::{i_event_of, shown};
    use log::Level;

    #[test]
    fn other_crates_stop_at_info() {
        assert!(shown("espfd::pipeline", Level::Trace));
        assert!(shown("espfd", Level::Debug));
        assert!(shown("ureq::unversioned::transport", Level::Info));
        assert!(!shown("ureq::unversioned::transport", Level::Debug));
        assert!(!shown("ureq_proto::client", Level::Trace));
        assert!(!shown("espfdx", Level::Debug));
    }

    #[test]
    fn i_event_is_found_in_the_message() {
        assert_eq!(i_event_of("i_event=7615 stored"), Some(7615));
        assert_eq!(i_event_of("worker 2: i_event=12, attempt 3"), Some(12));
        assert_eq!(i_event_of("no event here"), None);
        assert_eq!(i_event_of("i_event=x"), None);
    }
}
