//! Connectors to the external system being provisioned (the "target").
//!
//! A connector receives one JSON document per event (see [`document`]) and answers with an
//! [`Outcome`]. The HTTP connector is in `http.rs`, the exec connector in `exec.rs`.

mod exec;
mod http;

pub use exec::{ExecTarget, EX_TEMPFAIL};
pub use http::HttpTarget;

use crate::config::{Config, TargetSpec};
use crate::error::Error;

use serde_json::{json, Map, Value};

use crate::outbound::Failure;

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
    /// Builds the connector the configuration names.
    pub fn from_config(config: &Config) -> Result<Target, Error> {
        Ok(match &config.target {
            TargetSpec::Http(url) => {
                Target::Http(HttpTarget::new(url, config.target_timeout, config.workers)?)
            }
            TargetSpec::Exec(cmd) => Target::Exec(ExecTarget::new(cmd, config.exec_timeout)),
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
