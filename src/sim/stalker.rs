//! A fake of the Ministra / Stalker portal's REST API v1 (IPTV middleware), under
//! `/stalker_portal/api`, as the project's notes on its `restapi/v1` code describe it:
//!
//! - `GET /stalker_portal/api/accounts`: every account; `GET .../accounts/<id>`: the
//!   accounts whose `stb_mac` or `account_number` is `<id>`;
//! - `POST .../accounts` creates (the login must be new), `PUT .../accounts/<id>` updates,
//!   `DELETE .../accounts/<id>` deletes. POST and PUT bodies are **form-urlencoded**, with
//!   the fields `login`, `password`, `full_name`, `phone`, `account_number`, `tariff_plan`,
//!   `status`, `stb_mac`, `comment`, `end_date`, `account_balance` (others are refused);
//! - authentication is HTTP Basic with [`USER`] and [`PASSWORD`]; wrong → 401 with
//!   `WWW-Authenticate`;
//! - every other reply is **HTTP 200**, `{"status": "OK", "results": ...}` or
//!   `{"status": "ERROR", "error": "Login already in use" | "Account not found" | ...}`: a
//!   connector must judge success from the body.
//!
//! Not here: the password is stored as given (the real portal hashes it) and never returned;
//! tariff plans, STB events and the other resources of the API.

use serde_json::{json, Map, Value};

use super::{method_not_allowed, Inner};
use crate::http::{Request, Response};
use crate::util::{base64_decode, constant_time_eq, form_decode};

/// The API user the fake accepts.
pub const USER: &str = "stalker-api";
/// Its password.
pub const PASSWORD: &str = "stalker-password";

/// The fields an account has.
const FIELDS: [&str; 11] = [
    "login",
    "password",
    "full_name",
    "phone",
    "account_number",
    "tariff_plan",
    "status",
    "stb_mac",
    "comment",
    "end_date",
    "account_balance",
];

/// The fake's accounts, in creation order.
#[derive(Debug, Default)]
pub(super) struct Stalker {
    accounts: Vec<Map<String, Value>>,
}

impl Stalker {
    /// Every account as stored (the password included: this is test data).
    pub(super) fn accounts(&self) -> Vec<Value> {
        self.accounts.iter().cloned().map(Value::Object).collect()
    }

    fn matching(&self, id: &str) -> Vec<usize> {
        (0..self.accounts.len())
            .filter(|&i| {
                let a = &self.accounts[i];
                ["stb_mac", "account_number"]
                    .iter()
                    .any(|f| a.get(*f).and_then(Value::as_str) == Some(id))
            })
            .collect()
    }
}

fn ok(results: Value) -> Response {
    Response::json(200, &json!({"status": "OK", "results": results}))
}

fn error(why: &str) -> Response {
    Response::json(200, &json!({"status": "ERROR", "error": why}))
}

/// An account as the API shows it: without the password.
fn shown(a: &Map<String, Value>) -> Value {
    let mut a = a.clone();
    a.remove("password");
    Value::Object(a)
}

fn authorized(req: &Request) -> bool {
    let Some(h) = req.header("authorization") else {
        return false;
    };
    let Some((scheme, cred)) = h.trim().split_once(' ') else {
        return false;
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return false;
    }
    let Some(decoded) = base64_decode(cred.trim()).and_then(|b| String::from_utf8(b).ok()) else {
        return false;
    };
    let Some((user, password)) = decoded.split_once(':') else {
        return false;
    };
    constant_time_eq(user.as_bytes(), USER.as_bytes())
        & constant_time_eq(password.as_bytes(), PASSWORD.as_bytes())
}

/// The form fields of a POST or PUT, or the reply refusing them.
fn form(req: &Request) -> Result<Map<String, Value>, Response> {
    let ct = req
        .header("content-type")
        .unwrap_or("")
        .to_ascii_lowercase();
    if !ct.starts_with("application/x-www-form-urlencoded") {
        return Err(error("the body must be application/x-www-form-urlencoded"));
    }
    let mut m = Map::new();
    for (k, v) in form_decode(&req.body_text()) {
        if !FIELDS.contains(&k.as_str()) {
            return Err(error(&format!("unknown field {k}")));
        }
        m.insert(k, Value::String(v));
    }
    Ok(m)
}

/// Answers `/stalker_portal/api/<rest>`.
pub(super) fn handle(inner: &Inner, req: &Request, rest: &str) -> Response {
    if !authorized(req) {
        return Response::text(401, "Unauthorized")
            .with_header("WWW-Authenticate", "Basic realm=\"Stalker API\"");
    }
    let segs: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
    let mut st = inner.state();
    let portal = &mut st.stalker;
    match (req.method.as_str(), segs.as_slice()) {
        ("GET", ["accounts"]) => ok(Value::Array(portal.accounts.iter().map(shown).collect())),
        ("POST", ["accounts"]) => {
            let fields = match form(req) {
                Ok(f) => f,
                Err(r) => return r,
            };
            let Some(login) = fields
                .get("login")
                .and_then(Value::as_str)
                .filter(|l| !l.is_empty())
            else {
                return error("login is required");
            };
            let taken = portal
                .accounts
                .iter()
                .any(|a| a.get("login").and_then(Value::as_str) == Some(login));
            if taken {
                return error("Login already in use");
            }
            portal.accounts.push(fields);
            ok(Value::Bool(true))
        }
        (method, ["accounts", id]) => {
            let found = portal.matching(id);
            if found.is_empty() {
                return error("Account not found");
            }
            match method {
                "GET" => ok(Value::Array(
                    found.iter().map(|&i| shown(&portal.accounts[i])).collect(),
                )),
                "PUT" => {
                    let fields = match form(req) {
                        Ok(f) => f,
                        Err(r) => return r,
                    };
                    if let Some(login) = fields.get("login").and_then(Value::as_str) {
                        let clash = portal.accounts.iter().enumerate().any(|(i, a)| {
                            !found.contains(&i)
                                && a.get("login").and_then(Value::as_str) == Some(login)
                        });
                        if clash {
                            return error("Login already in use");
                        }
                    }
                    for &i in &found {
                        for (k, v) in &fields {
                            portal.accounts[i].insert(k.clone(), v.clone());
                        }
                    }
                    ok(Value::Bool(true))
                }
                "DELETE" => {
                    let mut i = 0;
                    portal.accounts.retain(|_| {
                        i += 1;
                        !found.contains(&(i - 1))
                    });
                    ok(Value::Bool(true))
                }
                _ => method_not_allowed("GET, PUT, DELETE"),
            }
        }
        (_, ["accounts"]) => method_not_allowed("GET, POST"),
        _ => error(&format!("no such resource: {}", req.path)),
    }
}

/// What a test or `espfd simulate` reads and changes of this fake.
impl super::Sim {
    /// The fake Stalker portal's accounts, in creation order.
    pub fn stalker_accounts(&self) -> Vec<Value> {
        self.inner.state().stalker.accounts()
    }
}
