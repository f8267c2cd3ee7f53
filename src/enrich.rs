//! From a stored event to the one [`Context`] every connector gets.
//!
//! For each attempt the worker looks the event's entity up in PortaBilling ([`lookup`]) and
//! builds one `Context`: the event, PortaBilling's record of its entity, the attempt number,
//! `ESPFD_GROUP` and the JSON document. Connectors take what they need from it — the HTTP
//! connector POSTs the document, the exec connector also sets environment variables from the
//! event — and nothing else, so a new connector is written against this type alone.
//!
//! Not here: the lookup's retries and session handling ([`crate::portabilling`]), and what a
//! connector's answer means ([`crate::connector::Outcome`]).

use serde_json::{json, Value};

use crate::event::Event;
use crate::outbound::Failure;
use crate::portabilling::PbClient;
use crate::util::format_rfc3339;

/// One attempt at one event, as handed to a connector.
#[derive(Debug, Clone)]
pub struct Context<'a> {
    /// The event as ESPF sent it.
    pub event: &'a Event,
    /// When espfd received it (unix ms).
    pub received_at: i64,
    /// This attempt's number, from 1.
    pub attempt: i64,
    /// `ESPFD_GROUP`.
    pub group: &'a str,
    /// PortaBilling's record of the event's entity, as read for this attempt; `None` when
    /// the event names no entity or PortaBilling does not know it.
    pub record: Option<Value>,
    /// The JSON document for the target (see [`Context::new`]).
    pub document: String,
    /// The older queued events of the entity this delivery stands for (`ESPFD_COALESCE`):
    /// `(i_event, event_type)` in arrival order; empty when nothing was coalesced.
    pub coalesced: Vec<(i64, String)>,
}

impl<'a> Context<'a> {
    /// The context of attempt `attempt` at `event`, received at `received_at` (unix ms),
    /// with the entity's PortaBilling `record`.
    ///
    /// The document is `{"i_event", "event_type", "variables", "received_at" (RFC 3339),
    /// "attempt", "group", "entity", "coalesced"}`, where `entity` is the record with its
    /// `kind` added (`account`, `customer`, `invoice`, `did`), or `null` if there is no
    /// record, and `coalesced` is empty (see [`Context::with_coalesced`]).
    pub fn new(
        event: &'a Event,
        received_at: i64,
        attempt: i64,
        group: &'a str,
        record: Option<Value>,
    ) -> Context<'a> {
        let mut context = Context {
            event,
            received_at,
            attempt,
            group,
            record,
            document: String::new(),
            coalesced: Vec::new(),
        };
        context.document = context.build_document();
        context
    }

    /// The record with its `kind` added, as the document has it; `null` without a record.
    fn entity(&self) -> Value {
        match (self.event.entity.as_ref(), &self.record) {
            (Some(e), Some(Value::Object(record))) => {
                let mut record = record.clone();
                record.insert("kind".into(), Value::from(e.kind.name()));
                Value::Object(record)
            }
            _ => Value::Null,
        }
    }

    /// The same context standing also for the older events `coalesced` (`ESPFD_COALESCE`);
    /// the document lists them.
    pub fn with_coalesced(mut self, coalesced: Vec<(i64, String)>) -> Context<'a> {
        if coalesced.is_empty() {
            return self;
        }
        self.coalesced = coalesced;
        self.document = self.build_document();
        self
    }

    /// The `coalesced` list as JSON: `[{"i_event", "event_type"}]`.
    pub fn coalesced_json(&self) -> Value {
        Value::Array(
            self.coalesced
                .iter()
                .map(|(i, t)| json!({"i_event": i, "event_type": t}))
                .collect(),
        )
    }

    fn build_document(&self) -> String {
        json!({
            "i_event": self.event.i_event,
            "event_type": self.event.event_type,
            "variables": self.event.variables,
            "received_at": format_rfc3339(self.received_at),
            "attempt": self.attempt,
            "group": self.group,
            "entity": self.entity(),
            "coalesced": self.coalesced_json(),
        })
        .to_string()
    }

    /// ESPF's id of the event.
    pub fn i_event(&self) -> i64 {
        self.event.i_event
    }

    /// The kind of entity the event names (`account`, `customer`, `invoice`, `did`).
    pub fn entity_kind(&self) -> Option<&'static str> {
        self.event.entity.as_ref().map(|e| e.kind.name())
    }

    /// The id of the entity the event names (decimal text, or the DID number).
    pub fn entity_id(&self) -> Option<&str> {
        self.event.entity.as_ref().map(|e| e.id.as_str())
    }

    /// The account whose status is reported to ESPF, if the event names one.
    pub fn i_account(&self) -> Option<i64> {
        self.event.i_account()
    }
}

/// Reads the event's entity from PortaBilling: `Ok(None)` when the event names none or
/// PortaBilling does not know it; a failure to ask is the attempt's failure.
pub fn lookup(pb: &PbClient, event: &Event) -> Result<Option<Value>, Failure> {
    let Some(entity) = &event.entity else {
        return Ok(None);
    };
    let found = pb
        .lookup(entity)
        .map_err(|err| err.into_failure("lookup"))?;
    log::debug!(
        "i_event={} looked up {}: {}",
        event.i_event,
        event.ordering_key(),
        if found.is_some() {
            "found"
        } else {
            "not found"
        }
    );
    Ok(found)
}
