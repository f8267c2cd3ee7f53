//! The front door, one router for every path of the listener: ESPF's events path, the
//! completion callback `/events/<i_event>/status`, `/healthz`, `/readyz` and `/metrics`;
//! ESPF authentication, event validation and the durable hand-off. The bodies of `/readyz`
//! and `/metrics` are in `health.rs`; the reply codes of ESPF's POSTs (those refused from
//! their head before `100 Continue` too) and the 401s of the callback are counted here.
//!
//! Replies to ESPF (the README, "What espfd answers ESPF"): 200 once the event is on disk or is a
//! repeat of a stored `i_event` (an event whose type `ESPFD_EVENT_TYPES` leaves out is stored
//! too, as `skipped`, and no worker ever sees it); 401 for bad credentials; 400 with a
//! one-line reason for a body that is not a valid event; 413 for a body over the limit (from
//! the HTTP layer); 404/405 for wrong paths and methods; 503 with `Retry-After` when the
//! store cannot take it. Never a 500 for bad input.

mod auth;
mod health;
pub mod signature;

pub use auth::{check as check_auth, Denied, InboundAuth};
pub use health::{Health, PB_FRESH, PROBE_EVERY, PROBE_PATIENCE, STORE_WAIT};

use std::sync::Arc;

use crossbeam_channel::Sender;

use crate::error::Error;
use crate::event::Event;
use crate::filter::EventTypes;
use crate::http::{Handler, Request, Response};
use crate::metrics::{AuthEndpoint, Metrics};
use crate::pipeline::{Step, Wakers};
use crate::store::{Completed, Completion, Inserted, NewEvent, State, Store};
use crate::util::{constant_time_eq, now_ms, Secret, Throttled};

/// Failed-authentication log lines: at most one a second, with a count of the rest, so that
/// a flood of wrong credentials cannot fill the disk the store shares. Process-wide (one
/// service per process in production).
static AUTH_LOG: std::sync::Mutex<Throttled> = std::sync::Mutex::new(Throttled::new());
/// The same for the completion callback's refusals, so that a flood on one endpoint does
/// not hide the other's.
static CALLBACK_AUTH_LOG: std::sync::Mutex<Throttled> = std::sync::Mutex::new(Throttled::new());

/// The ingress request handler.
pub struct Ingress {
    pub events_path: String,
    pub auth: InboundAuth,
    /// The event types to provision (`ESPFD_EVENT_TYPES`); others are stored as skipped.
    pub event_types: EventTypes,
    pub store: Store,
    pub wakers: Wakers,
    pub observer: Option<Sender<Step>>,
    /// Bearer token of the completion callback; `None` turns the endpoint off.
    pub callback_token: Option<Secret>,
    /// Answers `/readyz` and `/metrics`.
    pub health: Health,
    /// The service's registry: reply codes of the events path, failed authentications.
    pub metrics: Arc<Metrics>,
}

impl Handler for Ingress {
    fn handle(&self, req: Request) -> Response {
        // GET and HEAD (the HTTP layer leaves the body out of a HEAD reply).
        let get = matches!(req.method.as_str(), "GET" | "HEAD");
        let path = req.path.as_str();
        match path {
            "/metrics" if get => return self.health.metrics(),
            "/readyz" if get => return self.health.readyz(),
            "/metrics" | "/readyz" => return use_get(),
            _ => {}
        }
        if path == self.events_path {
            if req.method != "POST" {
                return Response::text(405, "use POST").with_header("Allow", "POST");
            }
            let resp = self.event(req);
            self.metrics.event_received(resp.status);
            return resp;
        }
        if let Some(id) = path
            .strip_prefix("/events/")
            .and_then(|p| p.strip_suffix("/status"))
        {
            let id = id.to_string();
            return self.completion(&id, req);
        }
        match path {
            "/healthz" if get => Response::text(200, "ok"),
            "/healthz" => use_get(),
            _ => Response::text(404, "not found"),
        }
    }

    /// A POST to the events path with `Expect: 100-continue` and wrong credentials is
    /// answered 401 before its body is asked for, and counted as received with that code.
    fn precheck(&self, head: &Request) -> Option<Response> {
        if head.path == self.events_path && head.method == "POST" {
            let resp = self.authenticate(head).err()?;
            self.metrics.event_received(resp.status);
            return Some(resp);
        }
        None
    }
}

/// The 405 of the paths that take GET and HEAD only.
fn use_get() -> Response {
    Response::text(405, "use GET").with_header("Allow", "GET, HEAD")
}

impl Ingress {
    /// `POST /events/<i_event>/status`: a target's asynchronous completion of an event it
    /// accepted with 202.
    fn completion(&self, id: &str, req: Request) -> Response {
        let Some(token) = &self.callback_token else {
            return Response::text(
                404,
                "completion callbacks are off (set ESPFD_CALLBACK_TOKEN)",
            );
        };
        if req.method != "POST" {
            return Response::text(405, "use POST").with_header("Allow", "POST");
        }
        let presented = req
            .header("authorization")
            .and_then(|v| v.trim().split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim().as_bytes())
            .unwrap_or(b"");
        if !constant_time_eq(presented, token.0.as_bytes()) {
            self.metrics.auth_failed(AuthEndpoint::Callback);
            let more = CALLBACK_AUTH_LOG
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .tick();
            if let Some(more) = more {
                log::warn!(
                    "completion callback from {} refused: bad bearer token{more}",
                    req.peer.ip()
                );
            }
            return Response::text(401, "unauthorized").with_header("WWW-Authenticate", "Bearer");
        }
        let Some(i_event) = crate::event::id_of(&serde_json::Value::from(id)) else {
            return Response::text(404, "no such event");
        };
        let body: serde_json::Value = match serde_json::from_slice(&req.body) {
            Ok(v) => v,
            Err(e) => return Response::text(400, format!("body is not JSON: {e}")),
        };
        let status = match body.get("status").and_then(|s| s.as_str()) {
            Some(s @ ("OK" | "FAILED")) => s.to_string(),
            _ => return Response::text(400, "status must be \"OK\" or \"FAILED\""),
        };
        let message = match body.get("message") {
            None | Some(serde_json::Value::Null) => String::new(),
            Some(serde_json::Value::String(m)) => {
                crate::util::truncate_chars(m, crate::espf::MAX_MESSAGE).to_string()
            }
            Some(_) => return Response::text(400, "message must be a string"),
        };
        let completion = Completion {
            i_event,
            status: status.clone(),
            message,
        };
        match self.store.complete(completion) {
            Ok(Completed::Applied { lane }) => {
                log::info!("i_event={i_event} completion callback: {status}");
                self.wakers.wake(lane);
                Response::text(200, "OK")
            }
            Ok(Completed::Early) => {
                log::info!(
                    "i_event={i_event} completion callback: {status} (recorded; reported once \
                     IN_PROGRESS is)"
                );
                Response::text(200, "OK")
            }
            Ok(Completed::AlreadyRecorded) => {
                Response::text(409, "a completion for this event was already recorded")
            }
            Ok(Completed::TooLate) => {
                log::warn!(
                    "i_event={i_event} completion callback ({status}) refused: it came after \
                     ESPFD_ASYNC_TIMEOUT; the event is reported FAILED"
                );
                Response::text(
                    409,
                    "too late: the event's ESPFD_ASYNC_TIMEOUT has passed; it is reported FAILED",
                )
            }
            Ok(Completed::NotFound) => Response::text(404, "no such event"),
            Ok(Completed::NotInProgress(state)) => Response::text(
                409,
                format!("event is {state}, not waiting for a completion"),
            ),
            Err(e) => {
                log::error!("i_event={i_event} completion callback refused with 503: {e}");
                Response::text(503, "event store unavailable, retry later")
                    .with_header("Retry-After", "5")
            }
        }
    }

    /// Checks an event's credentials; the 401 to send when they are wrong. A failure is
    /// counted (`espfd_auth_failures_total`) and logged, at most once a second.
    fn authenticate(&self, req: &Request) -> Result<(), Response> {
        let (authorization, date) = (req.header("authorization"), req.header("date"));
        let Err(denied) = check_auth(&self.auth, authorization, date, now_ms() / 1000) else {
            return Ok(());
        };
        self.metrics.auth_failed(AuthEndpoint::Events);
        let more = AUTH_LOG.lock().unwrap_or_else(|p| p.into_inner()).tick();
        if let Some(more) = more {
            log::warn!("event from {} refused: {}{more}", req.peer.ip(), denied.0);
        }
        let resp = Response::text(401, "unauthorized");
        Err(match self.auth {
            InboundAuth::Basic { .. } => {
                resp.with_header("WWW-Authenticate", "Basic realm=\"espfd\"")
            }
            InboundAuth::Signature { .. } => resp.with_header(
                "WWW-Authenticate",
                "Signature realm=\"espfd\",headers=\"date\"",
            ),
            _ => resp,
        })
    }

    fn event(&self, req: Request) -> Response {
        if let Err(resp) = self.authenticate(&req) {
            return resp;
        }
        let ev = match Event::parse(&req.body) {
            Ok(ev) => ev,
            Err(reason) => {
                log::warn!("event from {} rejected: {reason}", req.peer.ip());
                return Response::text(400, reason);
            }
        };
        let entity = ev.ordering_key();
        let new = NewEvent {
            i_event: ev.i_event,
            event_type: ev.event_type.clone(),
            // The body parsed as JSON, so it is UTF-8.
            body: String::from_utf8_lossy(&req.body).into_owned(),
            entity: entity.clone(),
            received_at: now_ms(),
        };
        // Left out by the filter: stored all the same (in the same durable commit, so that a
        // repeat is known as one and `espfd events show` finds it), but as finished.
        let skipped = (!self.event_types.matches(&ev.event_type)).then(|| {
            format!(
                "event type {} is not in ESPFD_EVENT_TYPES ({})",
                ev.event_type, self.event_types
            )
        });
        let stored = match &skipped {
            Some(reason) => self.store.insert_skipped(new, reason.clone()),
            None => self.store.insert(new),
        };
        match stored {
            Ok(inserted) => {
                match inserted {
                    Inserted::Stored { lane } => {
                        self.wakers.wake(lane);
                        log::debug!("i_event={} {} {entity} stored", ev.i_event, ev.event_type);
                    }
                    Inserted::Skipped => {
                        // Debug, not info: an instance that takes a few types of a busy
                        // system skips most events; the metric counts them.
                        self.metrics.event_finished(State::Skipped.as_str());
                        log::debug!(
                            "i_event={} {} {entity} stored as skipped: not in ESPFD_EVENT_TYPES",
                            ev.i_event,
                            ev.event_type
                        );
                    }
                    Inserted::Repeat => {
                        log::info!("i_event={} repeated delivery; already stored", ev.i_event)
                    }
                }
                if let Some(o) = &self.observer {
                    let _ = o.send(Step::Received {
                        i_event: ev.i_event,
                        event_type: ev.event_type,
                        entity,
                        repeat: inserted == Inserted::Repeat,
                    });
                    if let (Inserted::Skipped, Some(message)) = (inserted, skipped) {
                        let _ = o.send(Step::Finished {
                            i_event: ev.i_event,
                            state: State::Skipped.as_str(),
                            message,
                        });
                    }
                }
                Response::text(200, "OK")
            }
            Err(Error::Overloaded) => {
                log::warn!(
                    "i_event={} refused with 503: store write queue full",
                    ev.i_event
                );
                Response::text(503, "busy, retry later").with_header("Retry-After", "1")
            }
            Err(e) => {
                log::error!("i_event={} refused with 503: {e}", ev.i_event);
                Response::text(503, "event store unavailable, retry later")
                    .with_header("Retry-After", "5")
            }
        }
    }
}
