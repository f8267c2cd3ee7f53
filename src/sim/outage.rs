//! Outage switches: `/_sim/target` and `/_sim/portabilling` make one side of the simulator
//! answer 503, reset its connections or hold its requests unanswered, so that an operator, a
//! test or a benchmark can rehearse what espfd does when the system behind it goes down.
//!
//! Two sides, each with its own [`UpstreamMode`]:
//!
//! | side | paths |
//! |---|---|
//! | PortaBilling | `/rest/...` (the PortaBilling API), `/espf/...` (the ESPF API) |
//! | target | `/target` and every fake of a real system (`/pyhss`, `/stalker_portal`, `/oauth`, `/dataverse`, `/CAI3G1.2` ...): every path but those above, `/_sim/...` and `/` |
//!
//! `/_sim/...` and `/` answer in every mode, so the switch can always be turned back.
//!
//! A held (blackholed) request keeps its connection thread waiting on a condition variable,
//! not the simulator's state lock: other requests, held or not, carry on. The simulator cannot
//! see a client give up on a held request (it never reads the socket again), so held requests
//! are bounded: at most [`MAX_HELD`] per side, the oldest closed without a reply to make room
//! for a new one; leaving blackhole answers every held request 503 (and closes it); stopping
//! the simulator closes them without a reply.
//!
//! Not here: partial outages (a fraction of calls failing, latency): those are `SimConfig`'s
//! failure rates and latencies.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::{Condvar, Mutex, MutexGuard};

use serde_json::{json, Value};

use super::method_not_allowed;
use crate::http::{Request, Response};

/// Most requests held at once on one side. Each holds a connection thread and a connection
/// slot of the simulator's listener (whose limit, `SIM_MAX_CONNECTIONS`, leaves room above
/// both sides' held requests for the controls and the other side).
pub(super) const MAX_HELD: usize = 256;

/// How one side of the simulator (the PortaBilling and ESPF APIs, or the target and the fakes
/// of real systems) answers: [`Sim::set_pb_mode`](super::Sim::set_pb_mode),
/// [`Sim::set_target_mode`](super::Sim::set_target_mode), `POST /_sim/portabilling` and
/// `POST /_sim/target`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UpstreamMode {
    /// Answers normally (`"up"`, the default).
    #[default]
    Up,
    /// Answers every request `503 Service Unavailable` with a short text body, no
    /// `Retry-After` (`"503"`), like a front end whose back end is down.
    Unavailable,
    /// Reads each request, then closes the connection without a byte of reply (`"reset"`):
    /// the client sees a connection error, not an HTTP status.
    Reset,
    /// Reads each request and never answers it while the mode lasts (`"blackhole"`), like a
    /// host that went silent: the client waits until its own timeout. Leaving the mode
    /// answers the held requests 503.
    Blackhole,
}

impl UpstreamMode {
    /// Every mode, in the order the controls list them.
    pub const ALL: [UpstreamMode; 4] = [
        UpstreamMode::Up,
        UpstreamMode::Unavailable,
        UpstreamMode::Reset,
        UpstreamMode::Blackhole,
    ];

    /// The name the controls use: `up`, `503`, `reset` or `blackhole`.
    pub fn name(self) -> &'static str {
        match self {
            UpstreamMode::Up => "up",
            UpstreamMode::Unavailable => "503",
            UpstreamMode::Reset => "reset",
            UpstreamMode::Blackhole => "blackhole",
        }
    }

    /// The mode named `name` (exactly as [`UpstreamMode::name`] spells it).
    pub fn from_name(name: &str) -> Option<UpstreamMode> {
        UpstreamMode::ALL.into_iter().find(|m| m.name() == name)
    }
}

impl fmt::Display for UpstreamMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which switch a path is behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Side {
    /// `/rest/...` and `/espf/...`.
    Pb,
    /// `/target` and the fakes of real systems.
    Target,
}

impl Side {
    /// The side `path` belongs to; `None` for the controls and the index, which always answer.
    pub(super) fn of(path: &str) -> Option<Side> {
        if path == "/" || path.starts_with("/_sim/") || path == "/_sim" {
            None
        } else if path.starts_with("/rest/") || path.starts_with("/espf/") {
            Some(Side::Pb)
        } else {
            Some(Side::Target)
        }
    }

    /// How the controls and log lines name it.
    fn name(self) -> &'static str {
        match self {
            Side::Pb => "portabilling",
            Side::Target => "target",
        }
    }
}

/// One side's switch and its held requests.
#[derive(Debug, Default)]
struct SideState {
    mode: UpstreamMode,
    /// Tickets of the requests held right now, oldest first.
    held: BTreeSet<u64>,
    /// Bumped each time the side leaves blackhole: a held request that wakes to a new
    /// generation was released (answered 503), one that wakes to the same was pushed out to
    /// make room (closed without a reply).
    generation: u64,
}

#[derive(Debug, Default)]
struct Switches {
    pb: SideState,
    target: SideState,
    next_ticket: u64,
    /// The simulator is stopping: every held request is closed, none is held any more.
    stopping: bool,
}

impl Switches {
    fn side(&mut self, side: Side) -> &mut SideState {
        match side {
            Side::Pb => &mut self.pb,
            Side::Target => &mut self.target,
        }
    }

    fn side_ref(&self, side: Side) -> &SideState {
        match side {
            Side::Pb => &self.pb,
            Side::Target => &self.target,
        }
    }
}

/// Both switches, behind their own lock (never the simulator's state lock, which a held
/// request must not keep from others).
#[derive(Debug, Default)]
pub(super) struct Outages {
    switches: Mutex<Switches>,
    woken: Condvar,
}

impl Outages {
    fn lock(&self) -> MutexGuard<'_, Switches> {
        self.switches.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The mode of `side`.
    pub(super) fn mode(&self, side: Side) -> UpstreamMode {
        self.lock().side_ref(side).mode
    }

    /// Requests of `side` held right now.
    pub(super) fn held(&self, side: Side) -> usize {
        self.lock().side_ref(side).held.len()
    }

    /// Sets the mode of `side`; the previous mode and how many held requests that released.
    pub(super) fn set(&self, side: Side, mode: UpstreamMode) -> (UpstreamMode, usize) {
        let mut sw = self.lock();
        let s = sw.side(side);
        let previous = std::mem::replace(&mut s.mode, mode);
        let mut released = 0;
        if previous == UpstreamMode::Blackhole && mode != UpstreamMode::Blackhole {
            released = s.held.len();
            s.held.clear();
            s.generation += 1;
            self.woken.notify_all();
        }
        (previous, released)
    }

    /// Closes every held request without a reply and holds none from now on: the simulator
    /// is stopping, and its listener waits for its connection threads.
    pub(super) fn stop(&self) {
        let mut sw = self.lock();
        sw.stopping = true;
        sw.pb.held.clear();
        sw.target.held.clear();
        self.woken.notify_all();
    }

    /// What a request of `side` gets instead of its normal answer, if anything: `None` when
    /// the side is up. In blackhole this waits until the request is released.
    pub(super) fn intercept(&self, side: Side) -> Option<Response> {
        let sw = self.lock();
        match sw.side_ref(side).mode {
            UpstreamMode::Up => None,
            UpstreamMode::Unavailable => Some(Response::text(
                503,
                format!("simulated outage: {} is down (mode 503)", side.name()),
            )),
            UpstreamMode::Reset => Some(Response::no_reply()),
            UpstreamMode::Blackhole if sw.stopping => Some(Response::no_reply()),
            UpstreamMode::Blackhole => Some(self.hold(sw, side)),
        }
    }

    /// Holds one request until its side leaves blackhole (503), it is pushed out by newer
    /// ones or the simulator stops (no reply).
    fn hold(&self, mut sw: MutexGuard<'_, Switches>, side: Side) -> Response {
        let ticket = sw.next_ticket;
        sw.next_ticket += 1;
        let s = sw.side(side);
        if s.held.len() >= MAX_HELD {
            // The oldest is the likeliest to have been given up by its client already.
            s.held.pop_first();
            self.woken.notify_all();
        }
        s.held.insert(ticket);
        let generation = s.generation;
        while !sw.stopping && sw.side_ref(side).held.contains(&ticket) {
            sw = self.woken.wait(sw).unwrap_or_else(|p| p.into_inner());
        }
        sw.side(side).held.remove(&ticket);
        if !sw.stopping && sw.side_ref(side).generation != generation {
            Response::text(
                503,
                format!(
                    "simulated outage: {} left blackhole; this request was held and not served",
                    side.name()
                ),
            )
            .closing()
        } else {
            Response::no_reply()
        }
    }

    /// `GET` or `POST /_sim/target` and `/_sim/portabilling`.
    pub(super) fn control(&self, req: &Request, side: Side, arg: &str) -> Response {
        if !arg.is_empty() {
            return Response::text(
                404,
                format!("no such control: {}\n{}", req.path, super::CONTROLS),
            );
        }
        match req.method.as_str() {
            "GET" | "HEAD" => {
                let sw = self.lock();
                let s = sw.side_ref(side);
                Response::json(200, &json!({ "mode": s.mode.name(), "held": s.held.len() }))
            }
            "POST" => {
                let Some(mode) = requested_mode(&req.body) else {
                    return Response::text(
                        400,
                        format!(
                            "the body must be a JSON object {{\"mode\": ...}}, the mode one of {}",
                            accepted()
                        ),
                    );
                };
                let (previous, released) = self.set(side, mode);
                log::info!("{} mode: {previous} → {mode}", side.name());
                Response::json(
                    200,
                    &json!({
                        "mode": mode.name(),
                        "previous": previous.name(),
                        "released": released,
                    }),
                )
            }
            _ => method_not_allowed("GET, POST"),
        }
    }
}

/// The mode a control body asks for: `{"mode": "<name>"}` (503 may be given as a number).
fn requested_mode(body: &[u8]) -> Option<UpstreamMode> {
    match serde_json::from_slice::<Value>(body).ok()?.get("mode")? {
        Value::String(s) => UpstreamMode::from_name(s),
        Value::Number(n) if n.as_u64() == Some(503) => Some(UpstreamMode::Unavailable),
        _ => None,
    }
}

/// The accepted mode names, quoted, for a 400.
fn accepted() -> String {
    UpstreamMode::ALL
        .iter()
        .map(|m| format!("\"{}\"", m.name()))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for m in UpstreamMode::ALL {
            assert_eq!(UpstreamMode::from_name(m.name()), Some(m));
        }
        assert_eq!(UpstreamMode::from_name("down"), None);
        assert_eq!(UpstreamMode::from_name("UP"), None);
        assert_eq!(UpstreamMode::default(), UpstreamMode::Up);
    }

    #[test]
    fn bodies_name_a_mode() {
        let m = |b: &str| requested_mode(b.as_bytes());
        assert_eq!(m(r#"{"mode": "blackhole"}"#), Some(UpstreamMode::Blackhole));
        assert_eq!(m(r#"{"mode": "503"}"#), Some(UpstreamMode::Unavailable));
        assert_eq!(m(r#"{"mode": 503}"#), Some(UpstreamMode::Unavailable));
        for bad in [
            r#"{"mode": "down"}"#,
            r#"{"mode": 500}"#,
            "{}",
            "[]",
            "up",
            "",
        ] {
            assert_eq!(m(bad), None, "{bad}");
        }
        assert_eq!(accepted(), r#""up", "503", "reset", "blackhole""#);
    }

    #[test]
    fn paths_belong_to_sides() {
        assert_eq!(Side::of("/rest/Session/login"), Some(Side::Pb));
        assert_eq!(Side::of("/espf/v1/groups"), Some(Side::Pb));
        for t in [
            "/target",
            "/pyhss/subscriber/imsi/1",
            "/stalker_portal/api/accounts",
            "/oauth/t/oauth2/v2.0/token",
            "/dataverse/api/data/v9.2/contacts",
            "/CAI3G1.2/services/CAI3G1.2",
        ] {
            assert_eq!(Side::of(t), Some(Side::Target), "{t}");
        }
        assert_eq!(Side::of("/_sim/target"), None);
        assert_eq!(Side::of("/"), None);
    }

    #[test]
    fn leaving_blackhole_releases_with_503_and_stopping_closes() {
        use std::sync::Arc;
        let o = Arc::new(Outages::default());
        o.set(Side::Target, UpstreamMode::Blackhole);
        let held = {
            let o = o.clone();
            std::thread::spawn(move || o.intercept(Side::Target).unwrap())
        };
        while o.held(Side::Target) == 0 {
            std::thread::yield_now();
        }
        assert_eq!(o.held(Side::Pb), 0);
        assert_eq!(
            o.set(Side::Target, UpstreamMode::Up),
            (UpstreamMode::Blackhole, 1)
        );
        let r = held.join().unwrap();
        assert_eq!((r.status, r.no_reply, r.close), (503, false, true));
        assert_eq!(o.held(Side::Target), 0);
        assert!(o.intercept(Side::Target).is_none());

        // Stopping closes held requests without a reply and holds no more.
        o.set(Side::Pb, UpstreamMode::Blackhole);
        let held = {
            let o = o.clone();
            std::thread::spawn(move || o.intercept(Side::Pb).unwrap())
        };
        while o.held(Side::Pb) == 0 {
            std::thread::yield_now();
        }
        o.stop();
        assert!(held.join().unwrap().no_reply);
        assert!(o.intercept(Side::Pb).unwrap().no_reply);
    }

    #[test]
    fn the_oldest_held_request_makes_room_without_a_reply() {
        use std::sync::Arc;
        let o = Arc::new(Outages::default());
        o.set(Side::Target, UpstreamMode::Blackhole);
        let spawn = || {
            let o = o.clone();
            std::thread::spawn(move || o.intercept(Side::Target).unwrap())
        };
        let mut threads: Vec<_> = (0..MAX_HELD).map(|_| spawn()).collect();
        while o.held(Side::Target) < MAX_HELD {
            std::thread::yield_now();
        }
        threads.push(spawn());
        // One is pushed out (closed, no reply) while the newcomer is held: still MAX_HELD.
        while threads.iter().filter(|t| t.is_finished()).count() == 0 {
            std::thread::yield_now();
        }
        assert_eq!(o.held(Side::Target), MAX_HELD);
        o.set(Side::Target, UpstreamMode::Reset);
        let replies: Vec<Response> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(replies.iter().filter(|r| r.no_reply).count(), 1);
        assert_eq!(replies.iter().filter(|r| r.status == 503).count(), MAX_HELD);
    }
}
