//! The simulated PortaBilling, ESPF status API and provisioning target, in one process on
//! one TCP port.
//!
//! One concept, kept in one file although it is long: the simulator's shared state, its
//! router and the [`Sim`] handle tests drive it with. Each simulated API is a module of its
//! own, with the `Sim` methods that belong to it.
//!
//! Integration tests, `espfd demo` and `espfd simulate` run espfd against this instead of a
//! real PortaBilling. One [`Sim`] serves three things:
//!
//! | path | plays | file |
//! |---|---|---|
//! | `POST /rest/<Service>/<method>` | the PortaBilling JSON API: sessions, lookups, faults | `pb.rs` |
//! | `/espf/v1/...` | the ESPF API: status reports, service groups | `espf.rs` |
//! | `/api/...` | any HTTP API: requests recorded, replies scripted by path, else an echo | `scripted.rs` |
//! | `POST /target` | an HTTP provisioning target (an HSS, a CRM ...) | `target.rs` |
//! | `/_sim/...` | the simulator's own controls: change its records, take a side down | here, `pb.rs`, `outage.rs` |
//!
//! Behaviour follows what espfd's clients expect (`portabilling.rs`, `espf.rs`, `target/`); the
//! fixtures (`fixtures.rs`) are PortaOne's documentation examples plus a few made-up but
//! consistent records. Every
//! request is recorded so that a test can assert on what espfd sent, and the knobs on [`Sim`]
//! inject what a real deployment does to a client: latency, 503s, revoked sessions (a DR
//! failover), scripted target replies, slow entities, and whole outages of either side
//! (503, reset connections, a blackhole: [`UpstreamMode`]).
//!
//! What it is not: a PortaBilling. It knows the handful of methods espfd calls, keeps
//! everything in memory, signs nothing (its access tokens only look like JWTs) and trusts
//! its caller — it is a test double, never to be exposed to a network one does not control.

mod cai3g;
mod dataverse;
mod espf;
mod fixtures;
mod outage;
mod pb;
mod pyhss;
mod scripted;
mod stalker;
mod target;

use std::collections::{HashMap, VecDeque};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::http::{local_address, serve, Limits, Request, Response, Server};
use crate::util::{jitter_u64, now_ms};

pub use cai3g::{PASSWORD as CAI3G_PASSWORD, USER as CAI3G_USER};
pub use dataverse::{CLIENT_ID as DATAVERSE_CLIENT_ID, CLIENT_SECRET as DATAVERSE_CLIENT_SECRET};
pub use espf::PREDEFINED_GROUPS;
pub use outage::UpstreamMode;
pub use pb::{FAULT_INVALID_REQUEST, FAULT_UNKNOWN_METHOD};
pub use pyhss::PROVISIONING_KEY as PYHSS_PROVISIONING_KEY;
pub use stalker::{PASSWORD as STALKER_PASSWORD, USER as STALKER_USER};
pub use target::TargetAuth;

/// How a [`Sim`] behaves. Start from `SimConfig::default()` and change what a test needs.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The PortaBilling administrator login. Defaults to `espfd`.
    pub login: String,
    /// Its password. Defaults to `espfd-password`.
    pub password: String,
    /// Its API token, accepted by `Session/login` instead of the password (and as the
    /// password of ESPF basic auth). Defaults to `espfd-api-token`.
    pub token: String,
    /// Lifetime of an access token; `expires_in` and `expires_at` reflect it. Defaults to
    /// 3600 s.
    pub session_ttl: Duration,
    /// Added to every `/rest` call, login included. Defaults to 0.
    pub pb_latency: Duration,
    /// Fraction (0.0 to 1.0) of `/rest` calls other than `Session/login` answered
    /// `503 text/plain` with no fault body, like a web front end in trouble. Defaults to 0.
    pub pb_failure_rate: f64,
    /// Added to every target call. Defaults to 0.
    pub target_latency: Duration,
    /// Fraction (0.0 to 1.0) of target calls answered 503. Defaults to 0.
    pub target_failure_rate: f64,
    /// The ESPF service groups a status report may name. Predefined names
    /// ([`PREDEFINED_GROUPS`]) keep their ids 1..8; other names are custom groups with ids
    /// from 1001. Defaults to all the predefined groups.
    pub groups: Vec<String>,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            login: "espfd".into(),
            password: "espfd-password".into(),
            token: "espfd-api-token".into(),
            session_ttl: Duration::from_secs(3600),
            pb_latency: Duration::ZERO,
            pb_failure_rate: 0.0,
            target_latency: Duration::ZERO,
            target_failure_rate: 0.0,
            groups: PREDEFINED_GROUPS.iter().map(|g| g.to_string()).collect(),
        }
    }
}

/// One request the simulator received, whatever its path.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// `POST`, `GET`, ...
    pub method: String,
    /// The path without the query string.
    pub path: String,
    /// Header names (lower-cased) and values, in arrival order. Secrets included: this is
    /// test data.
    pub headers: Vec<(String, String)>,
    /// The body as text (lossy UTF-8).
    pub body: String,
    /// Arrival time, milliseconds since the epoch.
    pub at_ms: i64,
}

impl Recorded {
    /// The first header named `name` (case-insensitive), if any.
    pub fn header(&self, name: &str) -> Option<&str> {
        header_in(&self.headers, name)
    }
}

/// One `POST /target`.
#[derive(Debug, Clone)]
pub struct TargetCall {
    /// The posted document; `Value::Null` when the body was not JSON.
    pub doc: Value,
    /// `doc["i_event"]` when it is an integer (negative for a reconcile event) or a numeric
    /// string.
    pub i_event: Option<i64>,
    /// Header names (lower-cased) and values, in arrival order.
    pub headers: Vec<(String, String)>,
    /// Arrival time, milliseconds since the epoch.
    pub started_ms: i64,
    /// When the reply was ready; 0 while the call is still in progress (slowed down).
    pub finished_ms: i64,
    /// The status answered; 0 while the call is still in progress.
    pub status: u16,
}

impl TargetCall {
    /// Whether the reply has been decided.
    pub fn is_finished(&self) -> bool {
        self.status != 0
    }

    /// The first header named `name` (case-insensitive), if any.
    pub fn header(&self, name: &str) -> Option<&str> {
        header_in(&self.headers, name)
    }
}

/// One accepted ESPF status report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusReport {
    /// The account, from the path (or resolved from the account ID for `/account/<id>/status`).
    pub i_account: i64,
    /// `OK`, `IN_PROGRESS`, `RETRY` or `FAILED`.
    pub status: String,
    /// The service group name.
    pub group: String,
    /// The message; empty when none was sent.
    pub message: String,
    /// `form` or `json`: how the body was encoded.
    pub content_type: String,
    /// `bearer` or `basic`: how the call authenticated.
    pub auth: String,
    /// Arrival time, milliseconds since the epoch.
    pub at_ms: i64,
}

/// A session minted by `Session/login`.
#[derive(Debug, Clone)]
struct Session {
    /// The refresh token currently valid for it (rotated on every refresh).
    refresh_token: String,
    /// When its newest access token expires; `auth_info.session_id` is valid until then.
    expires_at_ms: i64,
}

/// An access token and what it belongs to.
#[derive(Debug, Clone)]
struct AccessToken {
    session_id: String,
    expires_at_ms: i64,
}

/// An ESPF service group.
#[derive(Debug, Clone)]
struct Group {
    i_group: i64,
    name: String,
    is_custom: bool,
}

/// A scripted target reply: status and optional `Retry-After` value.
type Scripted = (u16, Option<String>);

/// Everything that changes while the simulator runs, behind one mutex.
struct State {
    pb_failure_rate: f64,
    target_failure_rate: f64,
    sessions: HashMap<String, Session>,
    tokens: HashMap<String, AccessToken>,
    logins: usize,
    requests: VecDeque<Recorded>,
    target_calls: VecDeque<(u64, TargetCall)>,
    next_target_seq: u64,
    statuses: VecDeque<StatusReport>,
    record_limit: Option<usize>,
    scripts: HashMap<i64, VecDeque<Scripted>>,
    slow: HashMap<String, Duration>,
    pb_faults: HashMap<String, VecDeque<String>>,
    accounts: HashMap<i64, Value>,
    customers: HashMap<i64, Value>,
    invoices: HashMap<i64, Value>,
    dids: Vec<Value>,
    sim_cards: Vec<Value>,
    groups: Vec<Group>,
    /// Added to every ESPF status report before it is answered.
    status_delay: Duration,
    /// Status reports are answered 503 while set.
    status_down: bool,
    /// What `POST /target` requires of a caller.
    target_auth: target::TargetAuth,
    /// Completion callbacks the target makes, by i_event.
    callbacks: HashMap<i64, Callback>,
    /// The replies espfd gave to those callbacks: (i_event, HTTP status; 0 for no reply).
    /// Shared with the threads that make the callbacks after the reply.
    callback_replies: Arc<Mutex<Vec<(i64, u16)>>>,
    /// The fake PyHSS's subscribers (`/pyhss`).
    pyhss: pyhss::PyHss,
    /// The fake Stalker portal's accounts (`/stalker_portal/api`).
    stalker: stalker::Stalker,
    /// The fake OAuth 2.0 token endpoint and Dataverse Web API (`/oauth`, `/dataverse`).
    dataverse: dataverse::Dataverse,
    /// The fake CAI3G HLR's sessions and subscribers (`/CAI3G1.2/services/CAI3G1.2`).
    cai3g: cai3g::Cai3g,
    /// Replies scripted for `/api/` (`scripted.rs`).
    scripted: scripted::Scripted,
}

/// When the simulated target calls espfd's completion endpoint, relative to its own reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallbackTiming {
    /// Before the target's reply is sent: the delivery is still in flight in espfd.
    BeforeReply,
    /// As soon as the reply is decided, from another thread, racing its way to espfd.
    AfterReply,
}

/// A completion callback the simulated target makes for one event.
#[derive(Debug, Clone)]
struct Callback {
    url: String,
    token: String,
    timing: CallbackTiming,
    body: String,
}

/// What the request handler shares with the [`Sim`] handle.
struct Inner {
    cfg: SimConfig,
    state: Mutex<State>,
    /// The outage switches, with their own lock: a held request must not hold `state`.
    outages: outage::Outages,
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the state half-updated in a way that
        // matters to a test double; keep serving.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Answers one request: records it, then routes by path.
    fn handle(&self, req: Request) -> Response {
        let at_ms = now_ms();
        {
            let mut st = self.state();
            let limit = st.record_limit;
            push_bounded(
                &mut st.requests,
                Recorded {
                    method: req.method.clone(),
                    path: req.path.clone(),
                    headers: req.headers.clone(),
                    body: req.body_text(),
                    at_ms,
                },
                limit,
            );
        }
        let side = outage::Side::of(&req.path);
        let resp = match side.and_then(|side| self.outages.intercept(side)) {
            Some(outage) => outage,
            None => self.route(&req, at_ms),
        };
        // Only `espfd simulate` installs a logger alongside a simulator: one line per request.
        if resp.no_reply {
            log::info!("{} {} → closed without a reply", req.method, req.path);
        } else {
            log::info!("{} {} → {}", req.method, req.path, resp.status);
        }
        resp
    }

    fn route(&self, req: &Request, at_ms: i64) -> Response {
        let path = req.path.as_str();
        if let Some(rest) = path.strip_prefix("/rest/") {
            return pb::handle(self, req, rest);
        }
        if let Some(rest) = path.strip_prefix("/espf/v1/") {
            return espf::handle(self, req, rest, at_ms);
        }
        if path == "/target" || path == "/target/" {
            return target::handle(self, req, at_ms);
        }
        if let Some(rest) = path.strip_prefix("/_sim/") {
            return self.control(req, rest);
        }
        if let Some(rest) = path.strip_prefix("/pyhss/") {
            return pyhss::handle(self, req, rest);
        }
        if let Some(rest) = path.strip_prefix("/stalker_portal/api/") {
            return stalker::handle(self, req, rest);
        }
        if let Some(rest) = path.strip_prefix("/oauth/") {
            return dataverse::token(self, req, rest);
        }
        if let Some(rest) = path.strip_prefix("/dataverse/") {
            return dataverse::data(self, req, rest);
        }
        if path.starts_with("/api/") {
            return scripted::handle(self, req);
        }
        if path == "/CAI3G1.2/services/CAI3G1.2" {
            return cai3g::handle(self, req);
        }
        if path == "/" {
            if req.method != "GET" && req.method != "HEAD" {
                return method_not_allowed("GET");
            }
            return Response::text(200, format!("{INDEX}{CONTROLS}"));
        }
        Response::text(404, format!("no such path: {path}"))
    }

    /// `/_sim/<what>/...`: what `espfd simulate` lets an operator or a test change while it
    /// runs (the README, "Rehearse without PortaBilling"). One arm per control; each answers 404
    /// for paths it does not know and 405 for other methods.
    fn control(&self, req: &Request, rest: &str) -> Response {
        let rest = rest.trim_end_matches('/');
        let (what, arg) = rest.split_once('/').unwrap_or((rest, ""));
        match what {
            "account" => pb::control_account(self, req, arg),
            "target" => self.outages.control(req, outage::Side::Target, arg),
            "portabilling" => self.outages.control(req, outage::Side::Pb, arg),
            _ => Response::text(404, format!("no such control: {}\n{CONTROLS}", req.path)),
        }
    }
}

/// The `/_sim/` controls, for `GET /`, 404s and `espfd simulate --help`.
pub const CONTROLS: &str = "\
POST   /_sim/account/<i_account> {fields}  merge fields into that account (created if unknown)
DELETE /_sim/account/<i_account>           remove the account (lookups then answer {})
POST   /_sim/target {\"mode\": M}            the target and the fakes of real systems: M is up, 503,
                                           reset (close without a reply) or blackhole (never answer)
POST   /_sim/portabilling {\"mode\": M}      the same for the PortaBilling and ESPF APIs (/rest, /espf)
GET    /_sim/target, /_sim/portabilling    the current mode and how many requests are held
";

/// What `GET /` answers: a reminder of what is served here.
const INDEX: &str = "espfd simulator\n\
POST /rest/<Service>/<method>          PortaBilling JSON API (Session, Account, Customer, Invoice, DID, Generic)\n\
POST /espf/v1/account/i/<i_account>/status   ESPF status report\n\
POST /espf/v1/account/<id>/status      ESPF status report by account ID\n\
GET  /espf/v1/groups                   ESPF service groups\n\
POST /espf/v1/group/create             register a custom service group\n\
POST /target                           HTTP provisioning target\n\
PUT|PATCH|GET|DELETE /pyhss/subscriber/...   a fake PyHSS (HSS) REST API (header Provisioning-Key)\n\
GET|POST|PUT|DELETE /stalker_portal/api/accounts[/<id>]   a fake Stalker/Ministra IPTV portal (Basic auth)\n\
POST /oauth/<tenant>/oauth2/v2.0/token   a fake OAuth 2.0 client-credentials token endpoint\n\
PATCH|GET|DELETE /dataverse/api/data/v9.2/<set>(<key>=<value>)   a fake Dataverse Web API (Bearer)\n\
POST /CAI3G1.2/services/CAI3G1.2       a fake Ericsson CAI3G 1.2 SOAP HLR (Login, Create, Set, Get, Delete, Logout)\n";

/// A running simulator. Dropping it stops the server too; [`Sim::shutdown`] does it
/// explicitly.
pub struct Sim {
    addr: SocketAddr,
    inner: Arc<Inner>,
    server: Server,
}

impl Sim {
    /// Binds `addr` (e.g. `127.0.0.1:0` for any free port) and starts serving with `cfg`,
    /// the fixtures loaded.
    pub fn start(addr: &str, cfg: SimConfig) -> std::io::Result<Sim> {
        let listener = TcpListener::bind(addr)?;
        let bound = listener.local_addr()?;
        let state = State {
            pb_failure_rate: cfg.pb_failure_rate,
            target_failure_rate: cfg.target_failure_rate,
            sessions: HashMap::new(),
            tokens: HashMap::new(),
            logins: 0,
            requests: VecDeque::new(),
            target_calls: VecDeque::new(),
            next_target_seq: 0,
            statuses: VecDeque::new(),
            record_limit: None,
            scripts: HashMap::new(),
            slow: HashMap::new(),
            pb_faults: HashMap::new(),
            accounts: fixtures::accounts(),
            customers: fixtures::customers(),
            invoices: fixtures::invoices(),
            dids: fixtures::dids(),
            sim_cards: fixtures::sim_cards(),
            groups: espf::groups_from(&cfg.groups),
            status_delay: Duration::ZERO,
            status_down: false,
            target_auth: target::TargetAuth::None,
            callbacks: HashMap::new(),
            callback_replies: Arc::default(),
            pyhss: pyhss::PyHss::default(),
            stalker: stalker::Stalker::default(),
            dataverse: dataverse::Dataverse::default(),
            cai3g: cai3g::Cai3g::default(),
            scripted: scripted::Scripted::default(),
        };
        let inner = Arc::new(Inner {
            cfg,
            state: Mutex::new(state),
            outages: outage::Outages::default(),
        });
        // Target documents carry whole PortaBilling records (a detailed account is ~45 KB);
        // give them room beyond the ingress default. Every client is usually on loopback, one
        // address: the per-address limit is the whole limit, which leaves room for the
        // controls above the requests a blackhole holds (`outage::MAX_HELD` per side).
        let limits = Limits {
            max_body: 1024 * 1024,
            max_connections: SIM_MAX_CONNECTIONS,
            max_connections_per_addr: SIM_MAX_CONNECTIONS,
            ..Limits::default()
        };
        let handler = inner.clone();
        let server = serve(
            listener,
            limits,
            Arc::new(move |req: Request| handler.handle(req)),
        )?;
        // A wildcard bind is reachable on loopback; a URL naming 0.0.0.0 is not portable.
        let addr = local_address(bound);
        Ok(Sim {
            addr,
            inner,
            server,
        })
    }

    /// The base URL, e.g. `http://127.0.0.1:40123`: the PortaBilling URL (`ESPFD_PB_URL`)
    /// and the ESPF API URL (`ESPFD_ESPF_URL`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The provisioning target's URL (`ESPFD_TARGET_URL`): [`Sim::url`] + `/target`.
    pub fn target_url(&self) -> String {
        format!("{}/target", self.url())
    }

    /// The address served (loopback when bound to a wildcard address).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The variables an espfd needs to use this simulator: PortaBilling URL and
    /// credentials, the service group (HSS if configured, else the first group) and the
    /// target URL. `espfd simulate`, the demo, the tests and the benchmark all start from it.
    pub fn espfd_env(&self) -> Vec<(&'static str, String)> {
        let cfg = self.config();
        let group = cfg
            .groups
            .iter()
            .find(|g| g.as_str() == "HSS")
            .or(cfg.groups.first())
            .cloned()
            .unwrap_or_else(|| "HSS".into());
        vec![
            ("ESPFD_PB_URL", self.url()),
            ("ESPFD_PB_LOGIN", cfg.login.clone()),
            ("ESPFD_PB_PASSWORD", cfg.password.clone()),
            ("ESPFD_GROUP", group),
            ("ESPFD_TARGET_URL", self.target_url()),
        ]
    }

    /// The configuration it was started with (failure rates as at start).
    pub fn config(&self) -> &SimConfig {
        &self.inner.cfg
    }

    /// Invalidates every session, access token and refresh token issued so far, like a
    /// failover to a DR site: bearer calls then fault with
    /// `Client.Session.check_auth.failed_to_process_access_token`, session ids with
    /// `Server.Session.check_auth.auth_failed`, refreshes with
    /// `Server.Session.refresh_access_token.refresh_failed`.
    pub fn revoke_sessions(&self) {
        let mut st = self.inner.state();
        st.sessions.clear();
        st.tokens.clear();
    }

    /// Successful `Session/login` calls so far.
    pub fn logins(&self) -> usize {
        self.inner.state().logins
    }

    /// Every request received, in arrival order (the newest ones only, after
    /// [`Sim::set_record_limit`]).
    pub fn requests(&self) -> Vec<Recorded> {
        self.inner.state().requests.iter().cloned().collect()
    }

    /// Requests received at `path`, ignoring a trailing slash: e.g.
    /// `sim.requests_to("/rest/Account/get_account_info")`.
    pub fn requests_to(&self, path: &str) -> Vec<Recorded> {
        let want = path.trim_end_matches('/');
        self.inner
            .state()
            .requests
            .iter()
            .filter(|r| r.path.trim_end_matches('/') == want)
            .cloned()
            .collect()
    }

    /// Every `POST /target`, in arrival order, including calls still in progress.
    pub fn target_calls(&self) -> Vec<TargetCall> {
        self.inner
            .state()
            .target_calls
            .iter()
            .map(|(_, c)| c.clone())
            .collect()
    }

    /// How many target calls arrived since the start, whatever the record limit kept.
    pub fn target_calls_total(&self) -> u64 {
        self.inner.state().next_target_seq
    }

    /// Every accepted ESPF status report, in arrival order.
    pub fn statuses(&self) -> Vec<StatusReport> {
        self.inner.state().statuses.iter().cloned().collect()
    }

    /// Forgets the recorded requests, target calls and status reports (not sessions, not
    /// the login count).
    pub fn clear_records(&self) {
        let mut st = self.inner.state();
        st.requests.clear();
        st.target_calls.clear();
        st.statuses.clear();
    }

    /// Keeps at most `max` entries in each record (requests, target calls, statuses),
    /// dropping the oldest; `None` (the default) keeps everything. For long runs of
    /// `espfd simulate`.
    pub fn set_record_limit(&self, max: Option<usize>) {
        let mut st = self.inner.state();
        st.record_limit = max;
        if let Some(max) = max {
            trim_front(&mut st.requests, max);
            trim_front(&mut st.target_calls, max);
            trim_front(&mut st.statuses, max);
        }
    }

    /// The next target calls whose document has this `i_event` answer `replies` in order —
    /// each a status and an optional `Retry-After` value — then the default 200. Replaces
    /// any script left for that event.
    pub fn script_target(&self, i_event: i64, replies: &[(u16, Option<&str>)]) {
        let script = replies
            .iter()
            .map(|(s, r)| (*s, r.map(str::to_string)))
            .collect();
        self.inner.state().scripts.insert(i_event, script);
    }

    /// Target calls about this entity take `delay` before answering. The key is
    /// `account:<i_account>`, `customer:<i_customer>`, `invoice:<i_invoice>` or
    /// `did:<number>`, matched against the document's `entity` and its event's variables.
    /// A zero delay removes the rule.
    pub fn slow_target(&self, entity_key: &str, delay: Duration) {
        let mut st = self.inner.state();
        if delay.is_zero() {
            st.slow.remove(entity_key);
        } else {
            st.slow.insert(entity_key.to_string(), delay);
        }
    }

    /// The next call of `call` (e.g. `Account/get_account_info`) answers HTTP 500 with
    /// `faultcode` (after authentication succeeded). Several calls queue up in order.
    pub fn pb_fault_next(&self, call: &str, faultcode: &str) {
        self.inner
            .state()
            .pb_faults
            .entry(call.trim_matches('/').to_string())
            .or_default()
            .push_back(faultcode.to_string());
    }

    /// Inserts or replaces the account `info["i_account"]` (what
    /// `Account/get_account_info` returns as `account_info`). Ignored without an integer
    /// `i_account`.
    pub fn put_account(&self, info: Value) {
        if let Some(id) = info.get("i_account").and_then(Value::as_i64) {
            self.inner.state().accounts.insert(id, info);
        }
    }

    /// Removes an account: lookups then answer `{}`, like a purged account.
    pub fn remove_account(&self, i_account: i64) {
        self.inner.state().accounts.remove(&i_account);
    }

    /// Inserts or replaces the customer `info["i_customer"]`. Ignored without an integer
    /// `i_customer`.
    pub fn put_customer(&self, info: Value) {
        if let Some(id) = info.get("i_customer").and_then(Value::as_i64) {
            self.inner.state().customers.insert(id, info);
        }
    }

    /// Removes a customer.
    pub fn remove_customer(&self, i_customer: i64) {
        self.inner.state().customers.remove(&i_customer);
    }

    /// Inserts or replaces the invoice `info["i_invoice"]`. Ignored without an integer
    /// `i_invoice`.
    pub fn put_invoice(&self, info: Value) {
        if let Some(id) = info.get("i_invoice").and_then(Value::as_i64) {
            self.inner.state().invoices.insert(id, info);
        }
    }

    /// Removes an invoice.
    pub fn remove_invoice(&self, i_invoice: i64) {
        self.inner.state().invoices.remove(&i_invoice);
    }

    /// Inserts or replaces the DID record whose `number` is `info["number"]` (an element of
    /// `DID/get_number_list`'s `number_list`). Ignored without a string `number`.
    pub fn put_did(&self, info: Value) {
        let Some(number) = info
            .get("number")
            .and_then(Value::as_str)
            .map(str::to_string)
        else {
            return;
        };
        let mut st = self.inner.state();
        st.dids
            .retain(|d| d.get("number").and_then(Value::as_str) != Some(number.as_str()));
        st.dids.push(info);
    }

    /// Removes a DID number.
    pub fn remove_did(&self, number: &str) {
        self.inner
            .state()
            .dids
            .retain(|d| d.get("number").and_then(Value::as_str) != Some(number));
    }

    /// Changes the fraction of `/rest` calls (not `Session/login`) answered 503.
    pub fn set_pb_failure_rate(&self, r: f64) {
        self.inner.state().pb_failure_rate = r;
    }

    /// Changes the fraction of target calls answered 503.
    pub fn set_target_failure_rate(&self, r: f64) {
        self.inner.state().target_failure_rate = r;
    }

    /// Switches the target and the fakes of real systems (every path but `/rest`, `/espf`,
    /// `/_sim` and `/`) to `mode`, like `POST /_sim/target`. Leaving
    /// [`UpstreamMode::Blackhole`] answers the requests it held 503.
    pub fn set_target_mode(&self, mode: UpstreamMode) {
        self.inner.outages.set(outage::Side::Target, mode);
    }

    /// Switches the PortaBilling and ESPF APIs (`/rest/...`, `/espf/...`) to `mode`, like
    /// `POST /_sim/portabilling`. Leaving [`UpstreamMode::Blackhole`] answers the requests it
    /// held 503.
    pub fn set_pb_mode(&self, mode: UpstreamMode) {
        self.inner.outages.set(outage::Side::Pb, mode);
    }

    /// The target side's mode.
    pub fn target_mode(&self) -> UpstreamMode {
        self.inner.outages.mode(outage::Side::Target)
    }

    /// The PortaBilling side's mode.
    pub fn pb_mode(&self) -> UpstreamMode {
        self.inner.outages.mode(outage::Side::Pb)
    }

    /// Target-side requests held unanswered right now (blackhole): the calls espfd has in
    /// flight while the target is down (at most 256; the oldest give way).
    pub fn target_held(&self) -> usize {
        self.inner.outages.held(outage::Side::Target)
    }

    /// PortaBilling-side requests (`/rest`, `/espf`) held unanswered right now (blackhole).
    pub fn pb_held(&self) -> usize {
        self.inner.outages.held(outage::Side::Pb)
    }

    /// TCP connections the simulator accepted since it started, on its one port (both sides
    /// and the controls): divided by time, the connection attempts per second a client made.
    pub fn connections_accepted(&self) -> u64 {
        self.server.accepted_connections()
    }

    /// Polls `cond` every 10 ms until it holds (`true`) or `timeout` passes (`false`).
    pub fn wait_for(&self, timeout: Duration, cond: impl Fn(&Sim) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if cond(self) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops serving: no new connections, idle ones closed, and up to 2 s for replies in
    /// progress.
    pub fn shutdown(mut self) {
        self.inner.outages.stop();
        self.server.shutdown(Duration::from_secs(2));
    }
}

impl Drop for Sim {
    /// Lets go of held requests first, so that the listener does not wait for them (its own
    /// drop, right after, stops it).
    fn drop(&mut self) {
        self.inner.outages.stop();
    }
}

/// The simulator's connection limit, from any address. Above both sides' held requests
/// (`outage::MAX_HELD` each) with room for the controls and a busy espfd.
const SIM_MAX_CONNECTIONS: usize = 1024;

/// The first header named `name` (case-insensitive) in `headers`.
fn header_in<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Appends to a record, dropping the oldest entries beyond `limit`.
fn push_bounded<T>(q: &mut VecDeque<T>, item: T, limit: Option<usize>) {
    q.push_back(item);
    if let Some(max) = limit {
        trim_front(q, max);
    }
}

/// Drops the oldest entries until at most `max` remain.
fn trim_front<T>(q: &mut VecDeque<T>, max: usize) {
    while q.len() > max {
        q.pop_front();
    }
}

/// Whether a call picked at random falls in the failing fraction `rate`.
fn roll(rate: f64) -> bool {
    if rate.is_nan() || rate <= 0.0 {
        return false;
    }
    if rate >= 1.0 {
        return true;
    }
    let unit = (jitter_u64() >> 11) as f64 / ((1u64 << 53) as f64);
    unit < rate
}

/// 32 random-looking hex digits, like PortaBilling's session ids and refresh tokens.
fn random_hex32() -> String {
    format!("{:016x}{:016x}", jitter_u64(), jitter_u64())
}

/// 405 naming the allowed methods.
fn method_not_allowed(allow: &str) -> Response {
    Response::text(405, format!("method not allowed; use {allow}")).with_header("Allow", allow)
}

/// An integer given as a JSON number or a numeric string (PortaBilling's Perl side is
/// lenient about that); `None` otherwise. Same rule as the ingress applies to event ids.
fn int_of(v: &Value) -> Option<i64> {
    crate::event::id_of(v)
}
