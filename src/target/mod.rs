//! Connectors to the external system being provisioned (the "target").
//!
//! A connector receives one JSON document per event (see [`document`]) and answers with an
//! [`Outcome`]. The HTTP connector is in `http.rs`.

mod http;

pub use http::HttpTarget;

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
