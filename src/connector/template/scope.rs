//! What a template sees: the names of the contract's table, built from one attempt's
//! [`Context`], the replies of earlier steps, and `pb()` with its per-attempt cache.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use minijinja::value::{Object, Serde};
use minijinja::{Error as JinjaError, ErrorKind, State, Value};

use crate::connector::send::Reply;
use crate::enrich::Context;
use crate::outbound::Failure;
use crate::portabilling::PbClient;
use crate::util::format_rfc3339;

/// The names every step of an attempt sees, `steps` aside.
pub type Base = BTreeMap<&'static str, Value>;

/// `event`, `group`, `entity` and its kind's name, `document` and `pb`. The record is
/// converted once and shared by `entity`, its kind's name and `document.entity`.
pub fn base(context: &Context<'_>, pb: &PbCalls) -> Base {
    let ev = context.event;
    let entity = match (context.entity_kind(), &context.record) {
        (Some(kind), Some(serde_json::Value::Object(record))) => {
            let mut map: BTreeMap<String, Value> = record
                .iter()
                .map(|(k, v)| (k.clone(), Value::from(Serde(v))))
                .collect();
            map.insert("kind".into(), Value::from(kind));
            Value::from(map)
        }
        _ => Value::from(()),
    };
    let event = Value::from(Serde(serde_json::json!({
        "i_event": ev.i_event,
        "event_type": ev.event_type,
        "variables": ev.variables,
        "received_at": format_rfc3339(context.received_at),
        "attempt": context.attempt,
        "coalesced": context.coalesced_json(),
    })));
    // The URL connector's document, field for field (see Context::new).
    let mut document: BTreeMap<String, Value> = BTreeMap::new();
    for key in [
        "i_event",
        "event_type",
        "variables",
        "received_at",
        "attempt",
        "coalesced",
    ] {
        document.insert(key.into(), event.get_attr(key).unwrap_or_default());
    }
    document.insert("group".into(), Value::from(context.group));
    document.insert("entity".into(), entity.clone());
    let mut base = Base::new();
    base.insert("event", event);
    base.insert("group", Value::from(context.group));
    for kind in ["account", "customer", "invoice", "did"] {
        let mine = context.entity_kind() == Some(kind) && !entity.is_none();
        base.insert(
            kind,
            if mine {
                entity.clone()
            } else {
                Value::from(())
            },
        );
    }
    base.insert("entity", entity);
    base.insert("document", Value::from(document));
    base.insert("pb", Value::from_dyn_object(pb.0.clone()));
    base
}

/// The base names plus `steps`.
pub fn with_steps(base: &Base, steps: &BTreeMap<String, Value>) -> Value {
    let mut all: BTreeMap<String, Value> = base
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    all.insert("steps".into(), Value::from(steps.clone()));
    Value::from(all)
}

/// A scope plus `response`, for `@ok-if` and `@message`.
pub fn with_response(scope: &Value, response: &Value) -> Value {
    let mut all: BTreeMap<String, Value> = BTreeMap::new();
    if let Ok(keys) = scope.try_iter() {
        for k in keys {
            if let (Some(name), Ok(v)) = (k.as_str(), scope.get_item(&k)) {
                all.insert(name.to_string(), v);
            }
        }
    }
    all.insert("response".into(), response.clone());
    Value::from(all)
}

/// A reply as templates see it: `status`, `headers` (lower-case names), `body`, `json`.
pub fn reply(reply: &Reply) -> Value {
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in &reply.headers {
        headers
            .entry(name.clone())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(value)
            })
            .or_insert_with(|| value.clone());
    }
    let json: serde_json::Value =
        serde_json::from_str(&reply.body).unwrap_or(serde_json::Value::Null);
    Value::from(Serde(serde_json::json!({
        "status": reply.status,
        "headers": headers,
        "body": reply.body,
        "json": json,
    })))
}

/// `pb(method, params)` for one attempt: read-only methods, each distinct call made once,
/// and the first failure kept so the attempt is classified like a failed lookup.
#[derive(Clone)]
pub struct PbCalls(Arc<PbObject>);

pub struct PbObject {
    pb: Arc<PbClient>,
    cache: Mutex<BTreeMap<String, Value>>,
    failure: Mutex<Option<Failure>>,
}

impl fmt::Debug for PbObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("pb")
    }
}

impl PbCalls {
    /// A fresh cache over `pb`.
    pub fn new(pb: Arc<PbClient>) -> PbCalls {
        PbCalls(Arc::new(PbObject {
            pb,
            cache: Mutex::new(BTreeMap::new()),
            failure: Mutex::new(None),
        }))
    }

    /// The failure of a `pb()` call in this attempt, if one failed.
    pub fn failure(&self) -> Option<Failure> {
        self.0
            .failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

fn invalid(message: String) -> JinjaError {
    JinjaError::new(ErrorKind::InvalidOperation, message)
}

impl Object for PbObject {
    fn call(
        self: &Arc<Self>,
        _state: &mut State<'_, '_>,
        args: &[Value],
    ) -> Result<Value, JinjaError> {
        let (method, params) = match args {
            [m] => (m, None),
            [m, p] => (m, Some(p)),
            _ => return Err(invalid("pb() takes a method and its params: pb(\"Product/get_product_info\", {\"i_product\": 1})".into())),
        };
        let Some(method) = method.as_str() else {
            return Err(invalid(
                "pb(): the method is a string such as \"Product/get_product_info\"".into(),
            ));
        };
        let Some((service, name)) = method.split_once('/') else {
            return Err(invalid(format!(
                "pb(\"{method}\"): a method is Service/method, e.g. Product/get_product_info"
            )));
        };
        // Both parts are plain names: nothing that a URL would read as a separator, a
        // query or an escape (`%2F`), so a call is exactly the method it names.
        let plain =
            |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !plain(service) || !plain(name) || !name.starts_with("get_") {
            return Err(invalid(format!(
                "pb(\"{method}\"): only read-only methods (Service/get_...) may be called"
            )));
        }
        let params: serde_json::Value = match params {
            None => serde_json::json!({}),
            Some(p) if p.is_none() => serde_json::json!({}),
            Some(p) => serde_json::to_value(p)
                .map_err(|e| invalid(format!("pb(\"{method}\"): params: {e}")))?,
        };
        if !params.is_object() {
            return Err(invalid(format!(
                "pb(\"{method}\"): params must be a mapping, e.g. {{\"i_product\": 1}}"
            )));
        }
        let key = format!("{method} {params}");
        if let Some(hit) = self
            .cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return Ok(hit.clone());
        }
        match self.pb.call(service, name, params) {
            Ok(result) => {
                let value = Value::from(Serde(&result));
                self.cache
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(key, value.clone());
                Ok(value)
            }
            Err(e) => {
                let failure = e.into_failure(&format!("pb(\"{method}\")"));
                let message = failure.message.clone();
                self.failure
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get_or_insert(failure);
                Err(invalid(message))
            }
        }
    }
}
