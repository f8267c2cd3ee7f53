//! Connectors to the external system being provisioned (the "target").
//!
//! A connector receives one JSON document per event (see [`document`]) and answers with an
//! [`Outcome`]. The HTTP connector is in `http.rs`, the exec connector in `exec.rs`.

mod exec;
mod http;

pub use exec::{ExecTarget, EX_TEMPFAIL};
pub use http::HttpTarget;

use std::time::Duration;

use crate::error::Error;

use serde_json::{json, Map, Value};

use crate::outbound::Failure;

/// Where events are delivered (`ESPFD_TARGET_URL` or `ESPFD_TARGET_EXEC`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetSpec {
    /// `POST` of the event document to this URL.
    Http(String),
    /// This shell command, with the event document on stdin.
    Exec(String),
}

/// What the connector needs, built by `config`.
#[derive(Debug, Clone)]
pub struct TargetSettings {
    /// Which connector, and where.
    pub spec: TargetSpec,
    /// Total time for one call of the HTTP connector (`ESPFD_TARGET_TIMEOUT`).
    pub timeout: Duration,
    /// Time for one run of the exec connector (`ESPFD_EXEC_TIMEOUT`).
    pub exec_timeout: Duration,
    /// Calls made at once (the workers).
    pub pool: usize,
    /// Variables removed from the exec connector's environment: espfd's own secrets.
    pub hidden_env: Vec<String>,
}

/// What the target made of one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Provisioned; the message goes to ESPF.
    Done(String),
    /// Accepted; the final status arrives later.
    Accepted(String),
    /// Did not work, transiently or for good.
    Failed(Failure),
}

/// One event as handed to a connector.
pub struct Delivery<'a> {
    pub i_event: i64,
    pub event_type: &'a str,
    pub entity_kind: Option<&'a str>,
    pub entity_id: Option<&'a str>,
    pub i_account: Option<i64>,
    pub attempt: i64,
    pub group: &'a str,
    /// The JSON document of [`document`].
    pub document: &'a [u8],
}

/// The configured connector.
pub enum Target {
    /// `ESPFD_TARGET_URL`.
    Http(HttpTarget),
    /// `ESPFD_TARGET_EXEC`.
    Exec(ExecTarget),
}

impl Target {
    /// Builds the connector the settings name.
    pub fn new(settings: &TargetSettings) -> Result<Target, Error> {
        Ok(match &settings.spec {
            TargetSpec::Http(url) => {
                Target::Http(HttpTarget::new(url, settings.timeout, settings.pool)?)
            }
            TargetSpec::Exec(cmd) => Target::Exec(ExecTarget::new(
                cmd,
                settings.exec_timeout,
                settings.hidden_env.clone(),
            )),
        })
    }

    /// Delivers one event.
    pub fn deliver(&self, d: &Delivery<'_>) -> Outcome {
        match self {
            Target::Http(t) => t.deliver(d.i_event, d.document),
            Target::Exec(t) => t.deliver(d),
        }
    }
}

/// The document sent to the target for one event.
#[allow(clippy::too_many_arguments)]
pub fn document(
    i_event: i64,
    event_type: &str,
    variables: &Map<String, Value>,
    received_at: &str,
    attempt: i64,
    group: &str,
    entity_kind: Option<&str>,
    entity: Option<Value>,
) -> Value {
    let entity = match (entity_kind, entity) {
        (Some(kind), Some(Value::Object(mut record))) => {
            record.insert("kind".into(), Value::from(kind));
            Value::Object(record)
        }
        _ => Value::Null,
    };
    json!({
        "i_event": i_event,
        "event_type": event_type,
        "variables": variables,
        "received_at": received_at,
        "attempt": attempt,
        "group": group,
        "entity": entity,
    })
}
