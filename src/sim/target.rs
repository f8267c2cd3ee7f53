//! The simulated HTTP provisioning target: `POST /target`.
//!
//! Stands for the external system espfd configures (an HSS, a PCRF, a CRM ...). It takes one
//! JSON document per event (`i_event`, `event_type`, `variables`, `entity`, ... — the README,
//! "What the target receives"), records it, and answers:
//!
//! 1. 400 if the body is not a JSON object with an integer (or numeric string) `i_event`;
//! 2. after `target_latency` plus any [`Sim::slow_target`](super::Sim::slow_target) delay
//!    for the document's entity — slept in this connection's thread, so other connections
//!    carry on;
//! 3. 503 for the configured fraction of calls (`target_failure_rate`);
//! 4. the next scripted reply for its `i_event`
//!    ([`Sim::script_target`](super::Sim::script_target)), with `Retry-After` when scripted;
//! 5. otherwise `200 provisioned <i_event>`.
//!
//! A completion callback scripted with [`Sim::script_callback`](super::Sim::script_callback)
//! is made before the reply or right after it is decided, whatever the reply.
//!
//! Before all that, when [`Sim::require_target_auth`](super::Sim::require_target_auth) asked
//! for a scheme, a call without the right credentials is recorded and answered 401 (with
//! `WWW-Authenticate`).
//!
//! Not here: idempotency (a repeated document is provisioned again, and recorded again — a
//! test can count them).

use std::time::Duration;

use serde_json::Value;

use super::{
    int_of, method_not_allowed, push_bounded, roll, Callback, CallbackTiming, Inner, TargetCall,
};
use crate::event::Event;
use crate::http::{Request, Response};
use crate::util::now_ms;

/// Answers `POST /target`.
pub(super) fn handle(inner: &Inner, req: &Request, started_ms: i64) -> Response {
    if req.method != "POST" {
        return method_not_allowed("POST");
    }
    let doc: Option<Value> = serde_json::from_slice(&req.body).ok();
    let i_event = doc
        .as_ref()
        .and_then(|d| d.get("i_event"))
        .and_then(|v| v.as_i64().or_else(|| int_of(v)));
    let keys = doc
        .as_ref()
        .map(|d| entity_keys(d, &req.body))
        .unwrap_or_default();
    let (seq, delay, failure_rate) = {
        let mut st = inner.state();
        let seq = st.next_target_seq;
        st.next_target_seq += 1;
        let limit = st.record_limit;
        push_bounded(
            &mut st.target_calls,
            (
                seq,
                TargetCall {
                    doc: doc.clone().unwrap_or(Value::Null),
                    i_event,
                    headers: req.headers.clone(),
                    started_ms,
                    finished_ms: 0,
                    status: 0,
                },
            ),
            limit,
        );
        let delay = keys
            .iter()
            .filter_map(|k| st.slow.get(k).copied())
            .max()
            .unwrap_or(Duration::ZERO);
        (seq, delay, st.target_failure_rate)
    };
    let resp = match refusal(inner, req) {
        Some(resp) => resp,
        None => decide(inner, doc.as_ref(), i_event, delay, failure_rate),
    };
    let (callback, replies) = {
        let mut st = inner.state();
        let cb = i_event.and_then(|i| Some((i, st.callbacks.remove(&i)?)));
        (cb, st.callback_replies.clone())
    };
    let record = move |i: i64, status: u16| {
        replies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((i, status));
    };
    if let Some((i, cb)) = &callback {
        if cb.timing == CallbackTiming::BeforeReply {
            record(*i, call_back(cb));
        }
    }
    let mut st = inner.state();
    if let Some((_, call)) = st.target_calls.iter_mut().rev().find(|(s, _)| *s == seq) {
        call.finished_ms = now_ms();
        call.status = resp.status;
    }
    if let Some((i, cb)) = callback.filter(|(_, cb)| cb.timing == CallbackTiming::AfterReply) {
        std::thread::spawn(move || record(i, call_back(&cb)));
    }
    resp
}

/// The credentials the simulated target requires ([`Sim::require_target_auth`](super::Sim::require_target_auth)).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum TargetAuth {
    /// Anyone (the default).
    #[default]
    None,
    /// `Authorization: Basic` of this user and password.
    Basic { user: String, password: String },
    /// `Authorization: Bearer <token>`.
    Bearer(String),
    /// This header (any case) with this value.
    Header(String, String),
    /// `Authorization: Bearer <a live token of the fake OAuth 2.0 endpoint>` (`/oauth/...`).
    OAuth,
}

/// 401 when the call lacks the credentials the target requires.
fn refusal(inner: &Inner, req: &Request) -> Option<Response> {
    let st = inner.state();
    let authorization = req.header("authorization").map(str::trim);
    let (good, scheme) = match &st.target_auth {
        TargetAuth::None => return None,
        TargetAuth::Basic { user, password } => {
            let want = format!(
                "Basic {}",
                crate::util::base64_encode(format!("{user}:{password}").as_bytes())
            );
            (authorization == Some(want.as_str()), "Basic")
        }
        TargetAuth::Bearer(token) => (
            authorization.and_then(|a| a.strip_prefix("Bearer ")) == Some(token.as_str()),
            "Bearer",
        ),
        TargetAuth::Header(name, value) => (
            req.header(name).map(str::trim) == Some(value.as_str()),
            "ApiKey",
        ),
        TargetAuth::OAuth => (st.dataverse.authorizes(authorization), "Bearer"),
    };
    (!good).then(|| {
        Response::text(401, "credentials missing or wrong")
            .with_header("WWW-Authenticate", format!("{scheme} realm=\"target\""))
    })
}

/// Makes a completion callback; the HTTP status espfd answered, 0 without a reply.
fn call_back(cb: &Callback) -> u16 {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    agent
        .post(&cb.url)
        .header("Authorization", &format!("Bearer {}", cb.token))
        .header("Content-Type", "application/json")
        .send(cb.body.as_str())
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// The reply, after the delays.
fn decide(
    inner: &Inner,
    doc: Option<&Value>,
    i_event: Option<i64>,
    delay: Duration,
    failure_rate: f64,
) -> Response {
    if !doc.is_some_and(Value::is_object) {
        return Response::text(400, "body is not a JSON object");
    }
    let Some(i_event) = i_event else {
        return Response::text(400, "document has no integer i_event");
    };
    let pause = inner.cfg.target_latency.saturating_add(delay);
    if !pause.is_zero() {
        std::thread::sleep(pause);
    }
    if roll(failure_rate) {
        return Response::text(503, "target unavailable (simulated failure)");
    }
    let scripted = inner
        .state()
        .scripts
        .get_mut(&i_event)
        .and_then(|q| q.pop_front());
    match scripted {
        Some((200, retry_after)) => with_retry_after(provisioned(i_event), retry_after),
        Some((status, _)) if !(100..=599).contains(&status) => Response::text(
            500,
            format!("invalid scripted status {status} for event {i_event}"),
        ),
        Some((status, retry_after)) => with_retry_after(
            Response::text(
                status,
                format!("scripted reply {status} for event {i_event}"),
            ),
            retry_after,
        ),
        None => provisioned(i_event),
    }
}

/// The default reply.
fn provisioned(i_event: i64) -> Response {
    Response::text(200, format!("provisioned {i_event}"))
}

/// Adds `Retry-After` when one was scripted.
fn with_retry_after(resp: Response, retry_after: Option<String>) -> Response {
    match retry_after {
        Some(v) => resp.with_header("Retry-After", v),
        None => resp,
    }
}

/// The entity keys a document matches: `<kind>:<id>` from its `entity` object (`account` →
/// `i_account`, `customer` → `i_customer`, `invoice` → `i_invoice`, `did` → `number`), and
/// the ordering key of its event (which also covers a `null` entity, i.e. not found).
fn entity_keys(doc: &Value, raw: &[u8]) -> Vec<String> {
    let mut keys = Vec::new();
    if let Some(entity) = doc.get("entity").and_then(Value::as_object) {
        let kind = entity.get("kind").and_then(Value::as_str).unwrap_or("");
        let field = match kind {
            "account" => Some("i_account"),
            "customer" => Some("i_customer"),
            "invoice" => Some("i_invoice"),
            "did" => Some("number"),
            _ => None,
        };
        let id = field.and_then(|f| match entity.get(f) {
            Some(Value::String(s)) => Some(s.trim().to_string()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        });
        if let Some(id) = id {
            keys.push(format!("{kind}:{id}"));
        }
    }
    if let Ok(event) = Event::parse_stored(raw) {
        if event.entity.is_some() {
            keys.push(event.ordering_key());
        }
    }
    keys
}

/// Completion callbacks, scripted per event.
impl super::Sim {
    /// The next target call for `i_event` calls espfd back at
    /// `<espfd_base>/events/<i_event>/status` with `Bearer <token>` and
    /// `{"status": status, "message": message}`, at `timing` relative to its reply (which is
    /// whatever it would be otherwise: script a 202 to make it asynchronous). The reply espfd
    /// gives is in [`Sim::callback_replies`].
    pub fn script_callback(
        &self,
        i_event: i64,
        espfd_base: &str,
        token: &str,
        timing: CallbackTiming,
        status: &str,
        message: &str,
    ) {
        let callback = Callback {
            url: format!(
                "{}/events/{i_event}/status",
                espfd_base.trim_end_matches('/')
            ),
            token: token.to_string(),
            timing,
            body: serde_json::json!({ "status": status, "message": message }).to_string(),
        };
        self.inner.state().callbacks.insert(i_event, callback);
    }

    /// From now on target calls need `auth` (wrong or missing → 401); `TargetAuth::None`
    /// lifts the requirement.
    pub fn require_target_auth(&self, auth: TargetAuth) {
        self.inner.state().target_auth = auth;
    }

    /// The replies espfd gave to the target's completion callbacks, in the order they came:
    /// (i_event, HTTP status, 0 when the call failed without a reply).
    pub fn callback_replies(&self) -> Vec<(i64, u16)> {
        let replies = self.inner.state().callback_replies.clone();
        let list = replies.lock().unwrap_or_else(|p| p.into_inner()).clone();
        list
    }
}

#[cfg(test)]
mod tests {
    use super::entity_keys;
    use serde_json::json;

    #[test]
    fn entity_keys_come_from_the_entity_and_the_event() {
        let doc = json!({"i_event": 1, "event_type": "Invoice/Updated",
            "variables": {"i_event": 1, "i_customer": 6392, "i_invoice": 450013},
            "entity": {"kind": "invoice", "i_invoice": 450013, "i_customer": 6392}});
        let raw = doc.to_string();
        assert_eq!(
            entity_keys(&doc, raw.as_bytes()),
            vec!["invoice:450013", "invoice:450013"]
        );

        let doc = json!({"i_event": 2, "event_type": "Subscriber/Deleted",
            "variables": {"i_event": 2, "i_account": "1000889"}, "entity": null});
        let raw = doc.to_string();
        assert_eq!(entity_keys(&doc, raw.as_bytes()), vec!["account:1000889"]);

        let doc = json!({"i_event": 3, "entity": {"kind": "did", "number": "12065550123"}});
        let raw = doc.to_string();
        assert_eq!(entity_keys(&doc, raw.as_bytes()), vec!["did:12065550123"]);
    }
}
