//! What an ESPF event is: parsing and validating the POSTed body, and which PortaBilling
//! entity it is about.
//!
//! ESPF sends `{"event_type": "...", "variables": {"i_event": ..., ...}}`. Ids arrive as JSON
//! numbers or as numeric strings (PortaOne's own examples use both), so both are accepted.
//! Unknown event types and unknown variables are kept as they came.

use serde_json::{Map, Value};

/// The kind of PortaBilling entity an event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntityKind {
    /// An account (`Subscriber/*`, `Account/*`, `SIM/*`, or any event naming `i_account`).
    Account,
    /// A customer.
    Customer,
    /// An invoice.
    Invoice,
    /// A DID number.
    Did,
}

impl EntityKind {
    /// The name used in ordering keys and in the target document.
    pub fn name(self) -> &'static str {
        match self {
            EntityKind::Account => "account",
            EntityKind::Customer => "customer",
            EntityKind::Invoice => "invoice",
            EntityKind::Did => "did",
        }
    }
}

/// The entity an event names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntityRef {
    /// Its kind.
    pub kind: EntityKind,
    /// `i_account`, `i_customer`, `i_invoice` as decimal text, or the DID number.
    pub id: String,
}

/// A validated event.
#[derive(Debug, Clone)]
pub struct Event {
    /// ESPF's unique event id.
    pub i_event: i64,
    /// e.g. `Subscriber/Updated`.
    pub event_type: String,
    /// The variables as received.
    pub variables: Map<String, Value>,
    /// The entity to look up, if the event names one.
    pub entity: Option<EntityRef>,
}

impl Event {
    /// Parses and validates a body POSTed by ESPF. The error is a one-line reason for a 400
    /// reply. ESPF's `i_event`s are positive: 0 and below are refused, because espfd's own
    /// reconcile events (`espfd reconcile`) are numbered from -1 down and must never meet one.
    pub fn parse(body: &[u8]) -> Result<Event, String> {
        let ev = Event::parse_stored(body)?;
        if ev.i_event <= 0 {
            return Err(NOT_POSITIVE.into());
        }
        Ok(ev)
    }

    /// Parses a stored body: as [`Event::parse`], but a negative `i_event` (a reconcile
    /// event queued by `espfd reconcile`) is accepted.
    pub fn parse_stored(body: &[u8]) -> Result<Event, String> {
        let value: Value =
            serde_json::from_slice(body).map_err(|e| format!("body is not JSON: {e}"))?;
        let Value::Object(mut top) = value else {
            return Err("body is not a JSON object".into());
        };
        let event_type = match top.get("event_type") {
            Some(Value::String(s)) if s.chars().any(char::is_control) => {
                return Err(control_char("event_type", s))
            }
            Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
            Some(Value::String(_)) => return Err("event_type is empty".into()),
            Some(_) => return Err("event_type is not a string".into()),
            None => return Err("event_type is missing".into()),
        };
        let variables = match top.remove("variables") {
            Some(Value::Object(m)) => m,
            Some(_) => return Err("variables is not an object".into()),
            None => return Err("variables is missing".into()),
        };
        let i_event = match variables.get("i_event") {
            Some(v) => signed_id_of(v).ok_or(NOT_POSITIVE)?,
            None => return Err("variables.i_event is missing".into()),
        };
        let entity = entity_of(&event_type, &variables)?;
        Ok(Event {
            i_event,
            event_type,
            variables,
            entity,
        })
    }

    /// The key that orders this event's processing: events with the same key run one at a
    /// time in arrival order. Events naming no entity are independent of each other.
    pub fn ordering_key(&self) -> String {
        match &self.entity {
            Some(e) => format!("{}:{}", e.kind.name(), e.id),
            None => format!("event:{}", self.i_event),
        }
    }

    /// Whether this is a reconcile event queued by `espfd reconcile` (negative `i_event`),
    /// not one of ESPF's.
    pub fn is_reconcile(&self) -> bool {
        self.i_event < 0
    }

    /// The account whose provisioning status is reported to ESPF, if the event names one.
    pub fn i_account(&self) -> Option<i64> {
        self.variables.get("i_account").and_then(id_of)
    }
}

/// Why an `i_event` is refused at intake.
const NOT_POSITIVE: &str = "variables.i_event is not a positive integer";

/// An `i_event` as stored: a JSON number or a numeric string, negative for reconcile events.
fn signed_id_of(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => match s.trim().strip_prefix('-') {
            Some(rest) => id_of(&Value::from(rest)).map(|n| -n),
            None => id_of(v),
        },
        _ => None,
    }
}

/// An id given as a JSON number or a numeric string; `None` if neither or negative.
pub fn id_of(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().filter(|n| *n >= 0),
        Value::String(s) => {
            let s = s.trim();
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            s.parse().ok()
        }
        _ => None,
    }
}

/// The reason for refusing a value with a control character: which one, and where.
fn control_char(what: &str, value: &str) -> String {
    let c = value.chars().find(|c| c.is_control()).unwrap_or('\0');
    format!(
        "{what} contains the control character U+{:04X}; ids and event types cannot",
        c as u32
    )
}

fn entity_of(event_type: &str, vars: &Map<String, Value>) -> Result<Option<EntityRef>, String> {
    let group = event_type.split('/').next().unwrap_or("");
    let by_group = match group {
        "Subscriber" | "Account" | "SIM" => Some((EntityKind::Account, "i_account")),
        "Customer" => Some((EntityKind::Customer, "i_customer")),
        "Invoice" => Some((EntityKind::Invoice, "i_invoice")),
        "DID" => Some((EntityKind::Did, "number")),
        _ => None,
    };
    let candidates = [
        (EntityKind::Account, "i_account"),
        (EntityKind::Customer, "i_customer"),
        (EntityKind::Invoice, "i_invoice"),
        (EntityKind::Did, "number"),
    ];
    for (kind, var) in by_group.into_iter().chain(candidates) {
        let Some(v) = vars.get(var) else { continue };
        let id = if kind == EntityKind::Did {
            match v {
                Value::String(s) if s.chars().any(char::is_control) => {
                    return Err(control_char(&format!("variables.{var}"), s))
                }
                Value::String(s) if !s.trim().is_empty() && s.len() <= 64 => s.trim().to_string(),
                Value::Number(n) if n.is_u64() => n.to_string(),
                _ => return Err(format!("variables.{var} is not a phone number")),
            }
        } else {
            id_of(v)
                .ok_or_else(|| format!("variables.{var} is not a non-negative integer"))?
                .to_string()
        };
        return Ok(Some(EntityRef { kind, id }));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_examples_parse() {
        let e = Event::parse(br#"{"event_type": "Subscriber/Updated", "variables": {"i_event": "5", "i_account": "1000889"}}"#).unwrap();
        assert_eq!(e.i_event, 5);
        assert_eq!(e.ordering_key(), "account:1000889");
        assert_eq!(e.i_account(), Some(1_000_889));

        let e = Event::parse(br#"{"event_type": "Invoice/Updated", "variables": {"i_customer": 6392, "i_invoice": 450013, "i_event": 7617}}"#).unwrap();
        assert_eq!(e.ordering_key(), "invoice:450013");
        assert_eq!(e.i_account(), None);

        let e = Event::parse(br#"{"event_type": "DID/Updated", "variables": {"number": "12065550123", "i_event": 7618}}"#).unwrap();
        assert_eq!(
            e.entity,
            Some(EntityRef {
                kind: EntityKind::Did,
                id: "12065550123".into()
            })
        );

        let e = Event::parse(br#"{"event_type": "SIM/Updated", "variables": {"i_env": 3, "i_event": 999999, "i_account": 277147, "event_time": "2025-05-01 12:00:00"}}"#).unwrap();
        assert_eq!(e.ordering_key(), "account:277147");
        assert_eq!(e.variables["event_time"], "2025-05-01 12:00:00");

        let e = Event::parse(br#"{"event_type": "Account/BalanceChanged", "variables": {"i_event": 7620, "billing_entity_id": 277147}}"#).unwrap();
        assert_eq!(e.entity, None);
        assert_eq!(e.ordering_key(), "event:7620");
    }

    #[test]
    fn stored_reconcile_events_parse_with_their_negative_ids() {
        let body =
            br#"{"event_type":"Reconcile/Account","variables":{"i_account":1000889,"i_event":-3}}"#;
        let e = Event::parse_stored(body).unwrap();
        assert_eq!((e.i_event, e.is_reconcile()), (-3, true));
        assert_eq!(e.ordering_key(), "account:1000889");
        assert_eq!(e.i_account(), Some(1_000_889));
        assert!(Event::parse(body).unwrap_err().contains("positive"));
        assert!(
            Event::parse_stored(br#"{"event_type":"X/Y","variables":{"i_event":"-"}}"#).is_err()
        );
    }

    #[test]
    fn bad_bodies_get_a_reason() {
        let cases: &[(&[u8], &str)] = &[
            (b"NotAJsonBody", "not JSON"),
            (b"{\"event_type\": \"Subscriber/Updated\", \"variables\": {\"i_event\": \"5\"\n\"i_account\": \"1\"}}", "not JSON"),
            (b"{}", "event_type is missing"),
            (b"[]", "not a JSON object"),
            (br#"{"variables":{}}"#, "event_type is missing"),
            (br#"{"event_type":""}"#, "event_type is empty"),
            (br#"{"event_type":5,"variables":{}}"#, "not a string"),
            (br#"{"event_type":"X/Y","variables":[]}"#, "variables is not an object"),
            (br#"{"event_type":"X/Y","variables":{}}"#, "i_event is missing"),
            (br#"{"event_type":"X/Y","variables":{"i_event":"5a"}}"#, "i_event is not"),
            (br#"{"event_type":"X/Y","variables":{"i_event":-1}}"#, "i_event is not a positive integer"),
            (br#"{"event_type":"X/Y","variables":{"i_event":0}}"#, "i_event is not a positive integer"),
            (br#"{"event_type":"X/Y","variables":{"i_event":"-7"}}"#, "i_event is not a positive integer"),
            (br#"{"event_type":"X/Y","variables":{"i_event":1.5}}"#, "i_event is not"),
            (br#"{"event_type":"Subscriber/Created","variables":{"i_event":1,"i_account":{}}}"#, "i_account is not"),
            (br#"{"event_type":"Subscriber/Updated\u0000","variables":{"i_event":1}}"#, "event_type contains the control character U+0000"),
            (br#"{"event_type":"X\nINFO forged","variables":{"i_event":1}}"#, "U+000A"),
            (br#"{"event_type":"DID/Updated","variables":{"i_event":1,"number":"1206\u001b[2J"}}"#, "variables.number contains the control character U+001B"),
        ];
        for (body, want) in cases {
            let err = Event::parse(body).unwrap_err();
            assert!(
                err.contains(want),
                "{} -> {err}",
                String::from_utf8_lossy(body)
            );
            assert!(!err.contains('\n'));
        }
    }
}
