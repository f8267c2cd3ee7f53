//! The front door: routes, ESPF authentication, event validation and the durable hand-off.
//!
//! Replies to ESPF (product.md, "Ingress contract"): 200 once the event is on disk or is a
//! repeat of a stored `i_event`; 401 for bad credentials; 400 with a one-line reason for a
//! body that is not a valid event; 413 for a body over the limit (from the HTTP layer);
//! 404/405 for wrong paths and methods; 503 with `Retry-After` when the store cannot take it.
//! Never a 500 for bad input.

mod auth;

pub use auth::{check as check_auth, Denied};

use crossbeam_channel::Sender;

use crate::config::InboundAuth;
use crate::error::Error;
use crate::event::Event;
use crate::http::{Handler, Request, Response};
use crate::pipeline::{Step, Wakers};
use crate::store::{Inserted, NewEvent, Store};
use crate::util::now_ms;

/// The ingress request handler.
pub struct Ingress {
    pub events_path: String,
    pub auth: InboundAuth,
    pub store: Store,
    pub wakers: Wakers,
    pub observer: Option<Sender<Step>>,
}

impl Handler for Ingress {
    fn handle(&self, req: Request) -> Response {
        let path = req.path.as_str();
        if path == self.events_path {
            if req.method != "POST" {
                return Response::text(405, "use POST").with_header("Allow", "POST");
            }
            return self.event(req);
        }
        match path {
            "/healthz" => match req.method.as_str() {
                "GET" | "HEAD" => Response::text(200, "ok"),
                _ => Response::text(405, "use GET").with_header("Allow", "GET, HEAD"),
            },
            _ => Response::text(404, "not found"),
        }
    }
}

impl Ingress {
    fn event(&self, req: Request) -> Response {
        let (authorization, date) = (req.header("authorization"), req.header("date"));
        if let Err(denied) = check_auth(&self.auth, authorization, date, now_ms() / 1000) {
            log::warn!("event from {} refused: {}", req.peer.ip(), denied.0);
            let resp = Response::text(401, "unauthorized");
            return match self.auth {
                InboundAuth::Basic { .. } => {
                    resp.with_header("WWW-Authenticate", "Basic realm=\"espfd\"")
                }
                InboundAuth::Signature { .. } => resp.with_header(
                    "WWW-Authenticate",
                    "Signature realm=\"espfd\",headers=\"date\"",
                ),
                _ => resp,
            };
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
        match self.store.insert(new) {
            Ok(inserted) => {
                let repeat = inserted == Inserted::Repeat;
                if let Inserted::Stored { lane } = inserted {
                    self.wakers.wake(lane);
                    log::debug!("i_event={} {} {entity} stored", ev.i_event, ev.event_type);
                } else {
                    log::info!("i_event={} repeated delivery; already stored", ev.i_event);
                }
                if let Some(o) = &self.observer {
                    let _ = o.send(Step::Received {
                        i_event: ev.i_event,
                        event_type: ev.event_type,
                        entity,
                        repeat,
                    });
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
