//! The simulated PortaBilling JSON API: `POST /rest/<Service>/<method>` (one concept: the
//! methods espfd calls and their faults, hence the length).
//!
//! Plays what espfd relies on (`portabilling.rs`, `cli/check.rs`): sessions
//! (`Session/login`, `refresh_access_token`, `logout`, `ping`), the three ways auth is
//! carried or missing, and the lookups of the four entity kinds. Replies are HTTP 200 with a
//! bare JSON object; every API error is HTTP 500 with `{"faultcode", "faultstring"}`, and only
//! the faultcodes are meant to be matched (the faultstrings are placeholders).
//!
//! Choices PortaBilling's documentation leaves open, made here:
//! - unknown service or method → [`FAULT_UNKNOWN_METHOD`], checked before authentication;
//! - a body that cannot be read (bad JSON, `params` not an object, multipart) →
//!   [`FAULT_INVALID_REQUEST`];
//! - missing or ill-typed lookup parameters → `Client.<Service>.<method>.invalid_params`;
//! - ids are accepted as JSON integers or numeric strings;
//! - `auth_info` with credentials instead of a session id (the spec's "form C") is not
//!   accepted: such a call faults `Client.check_auth.envelope_missed`;
//! - refresh tokens live until rotated, logged out or revoked; an access token stays valid
//!   until its own expiry even after a refresh (it is a JWT in real life).
//!
//! `SIMCard/get_card_list {i_account | imsi}` → `{"card_list": [...]}` and
//! `SIMCard/get_card_info {i_sim_card | imsi | iccid}` → `{"card_info": {...}}` follow names
//! that are not in public code (inferred from the `get_<x>_info` → `<x>_info` rule): the
//! simulator, templates and tests agree on them, a real installation may differ.
//!
//! Not here: realms and ports, brute-force lockout, file replies, any method espfd does not
//! call, and signatures — the access tokens only look like JWTs.

use serde_json::{json, Map, Value};

use super::{int_of, method_not_allowed, random_hex32, roll, AccessToken, Inner, Session, State};
use crate::http::{Request, Response};
use crate::util::{base64_encode, constant_time_eq, form_decode, format_utc, now_ms};

/// The faultcode for a service or method the simulator does not know (HTTP 500, like every
/// PortaBilling API error).
pub const FAULT_UNKNOWN_METHOD: &str = "Client.Generic.unknown_method";

/// The faultcode for a request body the simulator cannot read.
pub const FAULT_INVALID_REQUEST: &str = "Client.Generic.invalid_request";

/// Bad login or password/token.
const FAULT_AUTH_FAILED: &str = "Server.Session.auth_failed";
/// No `Authorization: Bearer` and no `auth_info.session_id`.
const FAULT_ENVELOPE_MISSED: &str = "Client.check_auth.envelope_missed";
/// Unknown, expired or revoked access token.
const FAULT_BAD_ACCESS_TOKEN: &str = "Client.Session.check_auth.failed_to_process_access_token";
/// Unknown or expired session id.
const FAULT_BAD_SESSION: &str = "Server.Session.check_auth.auth_failed";
/// Unknown refresh token.
const FAULT_REFRESH_FAILED: &str = "Server.Session.refresh_access_token.refresh_failed";
/// Logout of a session that is not valid.
const FAULT_LOGOUT_FAILED: &str = "Client.Session.logout.failed_to_process_access_token";

/// The `i_user` of the simulated administrator, returned by `Session/ping`.
const I_USER: i64 = 5;
/// Most rows a list method returns at once; PortaBilling rejects larger `limit`s.
const MAX_LIMIT: i64 = 1000;

/// A PortaBilling API error.
struct Fault {
    code: String,
    text: String,
}

impl Fault {
    fn new(code: &str, text: impl Into<String>) -> Fault {
        Fault {
            code: code.to_string(),
            text: text.into(),
        }
    }

    fn reply(self) -> Response {
        Response::json(
            500,
            &json!({"faultcode": self.code, "faultstring": self.text}),
        )
    }
}

/// The methods served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Login,
    Refresh,
    Logout,
    Ping,
    AccountInfo,
    AccountFeatures,
    CustomerInfo,
    InvoiceInfo,
    NumberList,
    AccountList,
    CardList,
    CardInfo,
    Version,
}

impl Method {
    fn of(service: &str, method: &str) -> Option<Method> {
        Some(match (service, method) {
            ("Session", "login") => Method::Login,
            ("Session", "refresh_access_token") => Method::Refresh,
            ("Session", "logout") => Method::Logout,
            ("Session", "ping") => Method::Ping,
            ("Account", "get_account_info") => Method::AccountInfo,
            ("Account", "get_service_features") => Method::AccountFeatures,
            ("Customer", "get_customer_info") => Method::CustomerInfo,
            ("Invoice", "get_invoice_info") => Method::InvoiceInfo,
            ("DID", "get_number_list") => Method::NumberList,
            ("Account", "get_account_list") => Method::AccountList,
            ("SIMCard", "get_card_list") => Method::CardList,
            ("SIMCard", "get_card_info") => Method::CardInfo,
            ("Generic", "get_version") => Method::Version,
            _ => return None,
        })
    }
}

/// The decoded request body.
struct Body {
    params: Map<String, Value>,
    auth_info: Option<Map<String, Value>>,
}

/// Answers `POST /rest/<rest>`.
pub(super) fn handle(inner: &Inner, req: &Request, rest: &str) -> Response {
    let trimmed = rest.strip_suffix('/').unwrap_or(rest);
    let mut parts = trimmed.split('/');
    let (service, method) = match (parts.next(), parts.next(), parts.next()) {
        (Some(s), Some(m), None) if !s.is_empty() && !m.is_empty() => (s, m),
        _ => return Response::text(404, format!("no such path: {}", req.path)),
    };
    if req.method != "POST" {
        return method_not_allowed("POST");
    }
    if !inner.cfg.pb_latency.is_zero() {
        std::thread::sleep(inner.cfg.pb_latency);
    }
    let Some(which) = Method::of(service, method) else {
        return Fault::new(
            FAULT_UNKNOWN_METHOD,
            format!("Unknown method {service}/{method}"),
        )
        .reply();
    };
    if which != Method::Login && roll(inner.state().pb_failure_rate) {
        return Response::text(503, "Service Temporarily Unavailable");
    }
    let body = match parse_body(req) {
        Ok(b) => b,
        Err(f) => return f.reply(),
    };
    let result = match which {
        Method::Login => login(inner, &body.params),
        Method::Refresh => refresh(inner, &body.params),
        Method::Logout => logout(inner, req, &body.params),
        Method::Ping => Ok(ping(inner, req, &body.params)),
        _ => authorized(inner, req, &body, service, method, which),
    };
    match result {
        Ok(v) => Response::json(200, &v),
        Err(f) => f.reply(),
    }
}

/// The lookups: authentication first, then any injected fault, then the answer.
fn authorized(
    inner: &Inner,
    req: &Request,
    body: &Body,
    service: &str,
    method: &str,
    which: Method,
) -> Result<Value, Fault> {
    let mut st = inner.state();
    check_auth(&st, req, body.auth_info.as_ref())?;
    let call = format!("{service}/{method}");
    if let Some(code) = st.pb_faults.get_mut(&call).and_then(|q| q.pop_front()) {
        return Err(Fault::new(&code, format!("Injected fault for {call}")));
    }
    let p = &body.params;
    let bad = |why: &str| {
        Fault::new(
            &format!("Client.{service}.{method}.invalid_params"),
            why.to_string(),
        )
    };
    match which {
        Method::AccountInfo => {
            let found = if let Some(v) = p.get("i_account") {
                let id = int_of(v).ok_or_else(|| bad("i_account must be an integer"))?;
                st.accounts.get(&id).cloned()
            } else if let Some(v) = p.get("id") {
                let id = v.as_str().ok_or_else(|| bad("id must be a string"))?;
                st.accounts
                    .values()
                    .find(|a| a.get("id").and_then(Value::as_str) == Some(id))
                    .cloned()
            } else {
                return Err(bad("i_account or id is required"));
            };
            Ok(match found {
                Some(mut info) => {
                    shape_features(&mut info, p);
                    json!({ "account_info": info })
                }
                None => json!({}),
            })
        }
        Method::AccountFeatures => {
            let id = p
                .get("i_account")
                .and_then(int_of)
                .ok_or_else(|| bad("i_account is required and must be an integer"))?;
            Ok(match st.accounts.get(&id) {
                Some(a) => {
                    let features = a.get("service_features").cloned().unwrap_or(json!([]));
                    json!({ "service_features": features })
                }
                None => json!({}),
            })
        }
        Method::CustomerInfo => {
            let id = p
                .get("i_customer")
                .and_then(int_of)
                .ok_or_else(|| bad("i_customer is required and must be an integer"))?;
            Ok(match st.customers.get(&id) {
                Some(c) => json!({ "customer_info": c }),
                None => json!({}),
            })
        }
        Method::InvoiceInfo => {
            let found = if let Some(v) = p.get("i_invoice") {
                let id = int_of(v).ok_or_else(|| bad("i_invoice must be an integer"))?;
                st.invoices.get(&id).cloned()
            } else if let Some(v) = p.get("invoice_number") {
                let number = v
                    .as_str()
                    .ok_or_else(|| bad("invoice_number must be a string"))?;
                let customer = match p.get("i_customer") {
                    Some(c) => Some(int_of(c).ok_or_else(|| bad("i_customer must be an integer"))?),
                    None => None,
                };
                st.invoices
                    .values()
                    .find(|i| {
                        i.get("invoice_number").and_then(Value::as_str) == Some(number)
                            && customer.is_none_or(|c| {
                                i.get("i_customer").and_then(Value::as_i64) == Some(c)
                            })
                    })
                    .cloned()
            } else {
                return Err(bad("i_invoice or invoice_number is required"));
            };
            Ok(match found {
                Some(i) => json!({ "invoice_info": i }),
                None => json!({}),
            })
        }
        Method::NumberList => number_list(&st, p, &bad),
        Method::AccountList => account_list(&st, p, &bad),
        Method::CardList => {
            let cards = &st.sim_cards;
            let list: Vec<Value> = if let Some(v) = p.get("i_account") {
                let id = int_of(v).ok_or_else(|| bad("i_account must be an integer"))?;
                cards
                    .iter()
                    .filter(|c| c.get("i_account").and_then(Value::as_i64) == Some(id))
                    .cloned()
                    .collect()
            } else if let Some(v) = p.get("imsi") {
                let imsi = v.as_str().ok_or_else(|| bad("imsi must be a string"))?;
                cards
                    .iter()
                    .filter(|c| c.get("imsi").and_then(Value::as_str) == Some(imsi))
                    .cloned()
                    .collect()
            } else {
                return Err(bad("i_account or imsi is required"));
            };
            Ok(json!({ "card_list": list }))
        }
        Method::CardInfo => {
            let (field, value) = ["i_sim_card", "imsi", "iccid"]
                .iter()
                .find_map(|f| p.get(*f).map(|v| (*f, v.clone())))
                .ok_or_else(|| bad("i_sim_card, imsi or iccid is required"))?;
            let found = st.sim_cards.iter().find(|c| match (&value, c.get(field)) {
                (Value::String(want), Some(Value::String(have))) => want == have,
                (want, Some(have)) => int_of(want).is_some() && int_of(want) == int_of(have),
                _ => false,
            });
            Ok(match found {
                Some(c) => json!({ "card_info": c }),
                None => json!({}),
            })
        }
        Method::Version => Ok(json!({ "version": "espfd simulator" })),
        Method::Login | Method::Refresh | Method::Logout | Method::Ping => {
            // Routed before authentication; never reaches here, but answer sanely anyway.
            Err(Fault::new(FAULT_UNKNOWN_METHOD, call))
        }
    }
}

/// `/_sim/account/<i_account>`: `POST` a JSON object to merge its fields into the account
/// (created with just `i_account` if unknown; `i_account` itself cannot change), `DELETE` to
/// forget it. Answers the record after the change (200), or `{"i_account", "removed"}`.
/// Not PortaBilling's API: no authentication, like the rest of `/_sim/`.
pub(super) fn control_account(inner: &Inner, req: &Request, arg: &str) -> Response {
    let i_account = match arg.parse::<i64>() {
        Ok(n) if n > 0 && !arg.starts_with('+') => n,
        _ => {
            return Response::text(
                400,
                format!(
                    "use /_sim/account/<i_account> (a positive integer), not {:?}",
                    req.path
                ),
            )
        }
    };
    match req.method.as_str() {
        "POST" => {
            let fields = match serde_json::from_str::<Value>(&req.body_text()) {
                Ok(Value::Object(fields)) => fields,
                _ => {
                    return Response::text(400, "the body must be a JSON object of account fields")
                }
            };
            let mut st = inner.state();
            let record = st
                .accounts
                .entry(i_account)
                .or_insert_with(|| json!({ "i_account": i_account }));
            if let Some(obj) = record.as_object_mut() {
                obj.extend(fields);
                obj.insert("i_account".into(), json!(i_account));
            }
            Response::json(200, record)
        }
        "DELETE" => {
            let removed = inner.state().accounts.remove(&i_account).is_some();
            Response::json(200, &json!({ "i_account": i_account, "removed": removed }))
        }
        _ => method_not_allowed("POST, DELETE"),
    }
}

/// `DID/get_number_list`: `number` (a pattern with `%` and `_`, so an exact number matches
/// itself), `i_customer`, `limit` (at most 1000), `offset`, `get_total`.
fn number_list(
    st: &State,
    p: &Map<String, Value>,
    bad: &dyn Fn(&str) -> Fault,
) -> Result<Value, Fault> {
    let pattern = match p.get("number") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(_) => return Err(bad("number must be a string")),
    };
    let customer = match p.get("i_customer") {
        None | Some(Value::Null) => None,
        Some(v) => Some(int_of(v).ok_or_else(|| bad("i_customer must be an integer"))?),
    };
    let (limit, offset) = paging(p, bad)?;
    let matching: Vec<&Value> = st
        .dids
        .iter()
        .filter(|d| match &pattern {
            Some(pat) => d
                .get("number")
                .and_then(Value::as_str)
                .is_some_and(|n| like(pat, n)),
            None => true,
        })
        .filter(|d| match customer {
            Some(c) => d.get("i_customer").and_then(Value::as_i64) == Some(c),
            None => true,
        })
        .collect();
    let total = matching.len();
    let page: Vec<Value> = matching
        .into_iter()
        .skip(offset)
        .take(limit.unwrap_or(usize::MAX))
        .cloned()
        .collect();
    let mut out = json!({ "number_list": page });
    if p.get("get_total").and_then(int_of) == Some(1) {
        out["total"] = json!(total);
    }
    Ok(out)
}

/// `limit` (at most 1000; larger is refused, as one PortaBilling client reports) and
/// `offset` of a list method.
fn paging(
    p: &Map<String, Value>,
    bad: &dyn Fn(&str) -> Fault,
) -> Result<(Option<usize>, usize), Fault> {
    let limit = match p.get("limit") {
        None | Some(Value::Null) => None,
        Some(v) => match int_of(v) {
            Some(n) if (0..=MAX_LIMIT).contains(&n) => Some(n as usize),
            _ => return Err(bad("limit must be an integer from 0 to 1000")),
        },
    };
    let offset = match p.get("offset") {
        None | Some(Value::Null) => 0,
        Some(v) => match int_of(v) {
            Some(n) if n >= 0 => usize::try_from(n).unwrap_or(usize::MAX),
            _ => return Err(bad("offset must be a non-negative integer")),
        },
    };
    Ok((limit, offset))
}

/// `Account/get_account_list`: `i_customer`, `id` (a pattern with `%` and `_`),
/// `get_not_closed_accounts`, `limit` (at most 1000), `offset`, `get_total`; the reply's
/// `account_list` holds the matching account records (closed ones too, unless
/// `get_not_closed_accounts` is 1). The pages partition the accounts in `i_account` order,
/// but the rows of each page come shuffled, as PortaBilling guarantees no order: a walk must
/// not rely on any.
fn account_list(
    st: &State,
    p: &Map<String, Value>,
    bad: &dyn Fn(&str) -> Fault,
) -> Result<Value, Fault> {
    let pattern = match p.get("id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(bad("id must be a string")),
    };
    let customer = match p.get("i_customer") {
        None | Some(Value::Null) => None,
        Some(v) => Some(int_of(v).ok_or_else(|| bad("i_customer must be an integer"))?),
    };
    let not_closed = p.get("get_not_closed_accounts").and_then(int_of) == Some(1);
    let (limit, offset) = paging(p, bad)?;
    let mut matching: Vec<(&i64, &Value)> = st
        .accounts
        .iter()
        .filter(|(_, a)| match &pattern {
            Some(pat) => a
                .get("id")
                .and_then(Value::as_str)
                .is_some_and(|id| like(pat, id)),
            None => true,
        })
        .filter(|(_, a)| {
            customer.is_none_or(|c| a.get("i_customer").and_then(Value::as_i64) == Some(c))
        })
        .filter(|(_, a)| !not_closed || a.get("bill_status").and_then(Value::as_str) != Some("C"))
        .collect();
    matching.sort_by_key(|(id, _)| **id);
    let total = matching.len();
    let mut page: Vec<Value> = matching
        .into_iter()
        .skip(offset)
        .take(limit.unwrap_or(usize::MAX))
        .map(|(_, a)| a.clone())
        .collect();
    shuffle(&mut page);
    let mut out = json!({ "account_list": page });
    if p.get("get_total").and_then(int_of) == Some(1) {
        out["total"] = json!(total);
    }
    Ok(out)
}

/// Fisher–Yates with a xorshift seeded from the clock: a different order at every call.
fn shuffle<T>(items: &mut [T]) {
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut x = (nanos ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1;
    for i in (1..items.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        items.swap(i, (x % (i as u64 + 1)) as usize);
    }
}

/// SQL `LIKE` without escapes: `%` any run of characters, `_` exactly one.
fn like(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    // Where the last `%` was and which text position it is currently standing for.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some('%') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(&c) if c == '_' || c == t[ti] => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p[pi.min(p.len())..].iter().all(|&c| c == '%')
}

/// Applies `without_service_features` and `get_service_features` to an account record.
fn shape_features(info: &mut Value, p: &Map<String, Value>) {
    let Some(obj) = info.as_object_mut() else {
        return;
    };
    if p.get("without_service_features").is_some_and(truthy) {
        obj.remove("service_features");
        return;
    }
    let Some(wanted) = p.get("get_service_features").and_then(Value::as_array) else {
        return;
    };
    let names: Vec<&str> = wanted.iter().filter_map(Value::as_str).collect();
    if let Some(Value::Array(features)) = obj.get_mut("service_features") {
        features.retain(|f| {
            f.get("name")
                .and_then(Value::as_str)
                .is_some_and(|n| names.contains(&n))
        });
    }
}

/// A PortaBilling boolean-ish flag: `1`, `"1"`, `true`, `"Y"`.
fn truthy(v: &Value) -> bool {
    match v {
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_i64().is_some_and(|n| n != 0),
        Value::String(s) => matches!(s.as_str(), "1" | "Y" | "y"),
        _ => false,
    }
}

/// Reads `{"params", "auth_info"}` from a JSON or form-urlencoded body.
fn parse_body(req: &Request) -> Result<Body, Fault> {
    let ct = req
        .header("content-type")
        .unwrap_or("")
        .to_ascii_lowercase();
    let text = req.body_text();
    let invalid = |why: String| Fault::new(FAULT_INVALID_REQUEST, why);
    if ct.contains("multipart/form-data") {
        return Err(invalid(
            "multipart/form-data is not supported by the simulator".into(),
        ));
    }
    if text.trim().is_empty() {
        return Ok(Body {
            params: Map::new(),
            auth_info: None,
        });
    }
    let is_json = if ct.contains("json") {
        true
    } else if ct.contains("x-www-form-urlencoded") {
        false
    } else {
        text.trim_start().starts_with('{')
    };
    let (params, auth_info) = if is_json {
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| invalid(format!("request body is not valid JSON: {e}")))?;
        let Value::Object(mut top) = v else {
            return Err(invalid("request body must be a JSON object".into()));
        };
        (top.remove("params"), top.remove("auth_info"))
    } else {
        let mut params = None;
        let mut auth_info = None;
        for (k, v) in form_decode(&text) {
            let slot = match k.as_str() {
                "params" => &mut params,
                "auth_info" => &mut auth_info,
                _ => continue,
            };
            if slot.is_none() {
                let parsed: Value = serde_json::from_str(&v)
                    .map_err(|e| invalid(format!("form field {k} is not valid JSON: {e}")))?;
                *slot = Some(parsed);
            }
        }
        (params, auth_info)
    };
    let params = match params {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m,
        Some(_) => return Err(invalid("params must be a JSON object".into())),
    };
    let auth_info = match auth_info {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) => Some(m),
        Some(_) => return Err(invalid("auth_info must be a JSON object".into())),
    };
    Ok(Body { params, auth_info })
}

/// Checks the `Authorization: Bearer` header, else `auth_info.session_id`.
fn check_auth(
    st: &State,
    req: &Request,
    auth_info: Option<&Map<String, Value>>,
) -> Result<(), Fault> {
    let now = now_ms();
    if let Some(token) = bearer_of(req) {
        if token_valid(st, token, now) {
            return Ok(());
        }
        return Err(Fault::new(
            FAULT_BAD_ACCESS_TOKEN,
            "Authentification failed",
        ));
    }
    if let Some(sid) = auth_info.and_then(|a| a.get("session_id")) {
        let valid = sid
            .as_str()
            .and_then(|s| st.sessions.get(s))
            .is_some_and(|s| s.expires_at_ms > now);
        if valid {
            return Ok(());
        }
        return Err(Fault::new(FAULT_BAD_SESSION, "Authentification failed"));
    }
    Err(Fault::new(
        FAULT_ENVELOPE_MISSED,
        "Authentication information is missing",
    ))
}

/// The token of an `Authorization: Bearer <token>` header (possibly empty), if the header
/// uses that scheme.
fn bearer_of(req: &Request) -> Option<&str> {
    let h = req.header("authorization")?.trim();
    let (scheme, rest) = h.split_once(' ').unwrap_or((h, ""));
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
}

/// Whether `token` is a live access token of a live session.
fn token_valid(st: &State, token: &str, now: i64) -> bool {
    st.tokens
        .get(token)
        .is_some_and(|t| t.expires_at_ms > now && st.sessions.contains_key(&t.session_id))
}

/// Whether `token` is a live access token; the ESPF API accepts those as bearer tokens.
pub(super) fn bearer_valid(inner: &Inner, token: &str) -> bool {
    token_valid(&inner.state(), token, now_ms())
}

/// `Session/login` with `login` + `password` or `login` + `token`.
fn login(inner: &Inner, p: &Map<String, Value>) -> Result<Value, Fault> {
    let cfg = &inner.cfg;
    let given = |k: &str| p.get(k).and_then(Value::as_str).unwrap_or("");
    let matches = |given: &str, want: &str| {
        !given.is_empty() && !want.is_empty() && constant_time_eq(given.as_bytes(), want.as_bytes())
    };
    let login_ok = matches(given("login"), &cfg.login);
    let secret_ok =
        matches(given("password"), &cfg.password) || matches(given("token"), &cfg.token);
    if !(login_ok && secret_ok) {
        return Err(Fault::new(
            FAULT_AUTH_FAILED,
            "The login or password is incorrect. Please note: your password is case sensitive.",
        ));
    }
    let mut st = inner.state();
    let session_id = unique(|s| st.sessions.contains_key(s));
    let refresh_token = unique(|s| st.sessions.values().any(|x| x.refresh_token == s));
    st.sessions.insert(
        session_id.clone(),
        Session {
            refresh_token: refresh_token.clone(),
            expires_at_ms: 0,
        },
    );
    let (access_token, expires_at_ms) = mint(&mut st, cfg, &session_id);
    st.logins += 1;
    Ok(json!({
        "session_id": session_id,
        "access_token": access_token,
        "refresh_token": refresh_token,
        "expires_at": format_utc(expires_at_ms),
        "expires_in": ttl_secs(cfg),
    }))
}

/// `Session/refresh_access_token`: a new access token and a rotated refresh token.
fn refresh(inner: &Inner, p: &Map<String, Value>) -> Result<Value, Fault> {
    let failed = || Fault::new(FAULT_REFRESH_FAILED, "Unable to refresh the access token");
    let given = p
        .get("refresh_token")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(failed)?;
    let mut st = inner.state();
    let session_id = st
        .sessions
        .iter()
        .find(|(_, s)| s.refresh_token == given)
        .map(|(id, _)| id.clone())
        .ok_or_else(failed)?;
    let refresh_token = unique(|s| st.sessions.values().any(|x| x.refresh_token == s));
    if let Some(s) = st.sessions.get_mut(&session_id) {
        s.refresh_token = refresh_token.clone();
    }
    let (access_token, expires_at_ms) = mint(&mut st, &inner.cfg, &session_id);
    Ok(json!({
        "access_token": access_token,
        "refresh_token": refresh_token,
        "expires_at": format_utc(expires_at_ms),
        "expires_in": ttl_secs(&inner.cfg),
    }))
}

/// The session a logout or ping names: `access_token` or `session_id` parameter, else the
/// bearer header. `None` when it names no live session.
fn named_session(st: &State, req: &Request, p: &Map<String, Value>) -> Option<String> {
    let now = now_ms();
    let by_token = |t: &str| {
        token_valid(st, t, now)
            .then(|| st.tokens.get(t).map(|t| t.session_id.clone()))
            .flatten()
    };
    if let Some(t) = p.get("access_token") {
        return t.as_str().and_then(by_token);
    }
    if let Some(s) = p.get("session_id") {
        let s = s.as_str()?;
        return st
            .sessions
            .get(s)
            .is_some_and(|x| x.expires_at_ms > now)
            .then(|| s.to_string());
    }
    bearer_of(req).and_then(by_token)
}

/// `Session/logout`: ends the session and every access token it issued.
fn logout(inner: &Inner, req: &Request, p: &Map<String, Value>) -> Result<Value, Fault> {
    let mut st = inner.state();
    let Some(session_id) = named_session(&st, req, p) else {
        return Err(Fault::new(
            FAULT_LOGOUT_FAILED,
            "Unable to process the access token",
        ));
    };
    st.sessions.remove(&session_id);
    st.tokens.retain(|_, t| t.session_id != session_id);
    Ok(json!({"success": 1}))
}

/// `Session/ping`: `{"user_id": 5}` for a live session, `{"user_id": 0}` otherwise.
fn ping(inner: &Inner, req: &Request, p: &Map<String, Value>) -> Value {
    let st = inner.state();
    let user = if named_session(&st, req, p).is_some() {
        I_USER
    } else {
        0
    };
    json!({ "user_id": user })
}

/// Issues an access token for `session_id` and extends the session to its expiry. Drops
/// tokens that have expired, so that a long run does not accumulate them.
fn mint(st: &mut State, cfg: &super::SimConfig, session_id: &str) -> (String, i64) {
    let now = now_ms();
    let ttl_ms = i64::try_from(cfg.session_ttl.as_millis()).unwrap_or(i64::MAX / 4);
    let expires_at_ms = now.saturating_add(ttl_ms);
    st.tokens.retain(|_, t| t.expires_at_ms > now);
    let token = loop {
        let t = jwt_like(&cfg.login, now, expires_at_ms);
        if !st.tokens.contains_key(&t) {
            break t;
        }
    };
    st.tokens.insert(
        token.clone(),
        AccessToken {
            session_id: session_id.to_string(),
            expires_at_ms,
        },
    );
    if let Some(s) = st.sessions.get_mut(session_id) {
        s.expires_at_ms = s.expires_at_ms.max(expires_at_ms);
    }
    (token, expires_at_ms)
}

/// `expires_in`: the token lifetime in whole seconds, rounded up.
fn ttl_secs(cfg: &super::SimConfig) -> u64 {
    let ms = cfg.session_ttl.as_millis();
    u64::try_from(ms.div_ceil(1000)).unwrap_or(u64::MAX)
}

/// A fresh 32-hex-digit value for which `taken` is false.
fn unique(taken: impl Fn(&str) -> bool) -> String {
    loop {
        let v = random_hex32();
        if !taken(&v) {
            return v;
        }
    }
}

/// A string shaped like PortaBilling's RS256 access token: base64url header and claims
/// (`exp`, `iat`, `i_user`, `i_env`, `login`, `realm`, `aud`, `jti` ...) and a random,
/// meaningless "signature".
fn jwt_like(login: &str, now_ms: i64, exp_ms: i64) -> String {
    let header = json!({"alg": "RS256", "typ": "JWT"});
    let claims = json!({
        "exp": exp_ms.div_euclid(1000),
        "iat": now_ms.div_euclid(1000),
        "i_user": I_USER,
        "i_env": 1,
        "login": login,
        "realm": "admin",
        "scopes": "",
        "aud": ["portabilling-api", "portasip-api", "espf-api"],
        "jti": random_hex32(),
        "is_super_user": 0,
    });
    let signature = format!("{}{}", random_hex32(), random_hex32());
    format!(
        "{}.{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes()),
        b64url(signature.as_bytes())
    )
}

/// base64url without padding, as in JWTs.
fn b64url(data: &[u8]) -> String {
    base64_encode(data)
        .trim_end_matches('=')
        .replace('+', "-")
        .replace('/', "_")
}

#[cfg(test)]
mod tests {
    use super::like;

    #[test]
    fn like_matches_sql_patterns() {
        assert!(like("16045550123", "16045550123"));
        assert!(!like("1604555012", "16045550123"));
        assert!(!like("160455501234", "16045550123"));
        assert!(like("1604%", "16045550123"));
        assert!(like("%0123", "16045550123"));
        assert!(like("1_045550123", "16045550123"));
        assert!(like("%", ""));
        assert!(!like("_", ""));
        assert!(like("1%5%3", "16045550123"));
        assert!(!like("1%7%3", "16045550123"));
    }
}
