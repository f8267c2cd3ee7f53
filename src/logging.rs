//! Log set-up: env_logger with our own line formats (`ESPFD_LOG_FORMAT=text|json`).
//!
//! Every line about an event carries `i_event=<n>`, so `grep i_event=7615` tells its story.
//! Secrets are never passed to a log macro anywhere in the crate.

use std::io::Write;

use crate::config::LogFormat;
use crate::util::{format_rfc3339, now_ms};

/// Installs the logger once; later calls do nothing. `RUST_LOG` sets the filter (default info).
pub fn init(format: LogFormat) {
    let mut builder =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    match format {
        LogFormat::Text => builder.format(|buf, record| {
            writeln!(
                buf,
                "{} {:<5} {}: {}",
                format_rfc3339(now_ms()),
                record.level(),
                record.target(),
                record.args()
            )
        }),
        LogFormat::Json => builder.format(|buf, record| {
            let msg = record.args().to_string();
            let mut line = serde_json::json!({
                "ts": format_rfc3339(now_ms()),
                "level": record.level().as_str(),
                "target": record.target(),
                "msg": msg,
            });
            if let Some(id) = msg
                .split("i_event=")
                .nth(1)
                .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|d| d.parse::<i64>().ok())
            {
                line["i_event"] = id.into();
            }
            writeln!(buf, "{line}")
        }),
    };
    let _ = builder.try_init();
}
