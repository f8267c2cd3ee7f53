//! The simulated ESPF API under `/espf/v1`: what `espf.rs` and `espfd check` call.
//!
//! - `POST /espf/v1/account/i/<i_account>/status` and `POST /espf/v1/account/<id>/status`:
//!   a provisioning status report, form-urlencoded or JSON according to `Content-Type` (the
//!   docs disagree on which, so both are accepted), with `status` (`OK`, `IN_PROGRESS`,
//!   `RETRY`, `FAILED`), `group` (a known service group) and an optional `message` of at most
//!   4000 characters. Accepted reports are recorded and answered `200 {"success": 1}`.
//! - `GET /espf/v1/groups`: the service groups, shaped like the documented example
//!   (`i_group` as a string, `is_custom` a boolean).
//! - `POST /espf/v1/group/create` with `name`: registers a custom group (ids from 1001).
//!
//! Every call authenticates with `Authorization: Bearer <live PortaBilling access token>` or
//! `Basic base64(login:password)` (the API token is accepted as the password too); anything
//! else is 401. Validation errors are 400, an unknown account ID 404, all with a JSON body
//! `{"error": "..."}` — the real bodies are undocumented. Checked in that order: route,
//! method, auth, body.
//!
//! [`Sim::set_status_delay`](super::Sim::set_status_delay) and
//! [`Sim::set_status_down`](super::Sim::set_status_down) slow status reports down or answer
//! them 503, for rehearsing a slow or absent ESPF API.
//!
//! Not here: deleting groups (path undocumented), reading statuses back (tests use
//! `Sim::statuses`), any effect of a status on PortaBilling.

use serde_json::{json, Map, Value};

use super::{method_not_allowed, pb, push_bounded, Group, Inner, StatusReport};
use crate::http::{Request, Response};
use crate::util::{base64_decode, constant_time_eq, form_decode};

/// PortaBilling's predefined service groups, in the order of their ids 1..8 (only 1–3 are
/// documented; the rest follow the documented list order).
pub const PREDEFINED_GROUPS: [&str; 8] = [
    "VoIP",
    "HSS",
    "PCRF",
    "IPTV",
    "WiMAX",
    "Netaccess",
    "NumberPortability",
    "LawfulInterception",
];

/// The statuses a report may carry.
const STATUSES: [&str; 4] = ["OK", "IN_PROGRESS", "RETRY", "FAILED"];
/// Longest status message, in characters.
const MAX_MESSAGE: usize = 4000;
/// Longest group name, in characters.
const MAX_GROUP_NAME: usize = 64;
/// First id of a custom group (the documented example is `IOT` = 1001).
const FIRST_CUSTOM_ID: i64 = 1001;

/// The group registry for the configured names: predefined names keep their ids, others
/// become custom groups numbered from 1001. Duplicates and empty names are dropped.
pub(super) fn groups_from(names: &[String]) -> Vec<Group> {
    let mut out: Vec<Group> = Vec::new();
    let mut next_custom = FIRST_CUSTOM_ID;
    for name in names {
        if name.is_empty() || out.iter().any(|g| &g.name == name) {
            continue;
        }
        let group = match PREDEFINED_GROUPS.iter().position(|p| p == name) {
            Some(i) => Group {
                i_group: i as i64 + 1,
                name: name.clone(),
                is_custom: false,
            },
            None => {
                next_custom += 1;
                Group {
                    i_group: next_custom - 1,
                    name: name.clone(),
                    is_custom: true,
                }
            }
        };
        out.push(group);
    }
    out
}

/// Answers `/espf/v1/<rest>`.
pub(super) fn handle(inner: &Inner, req: &Request, rest: &str, at_ms: i64) -> Response {
    let segs: Vec<&str> = rest.strip_suffix('/').unwrap_or(rest).split('/').collect();
    match segs.as_slice() {
        ["groups"] => {
            if req.method != "GET" {
                return method_not_allowed("GET");
            }
            if authenticate(inner, req).is_none() {
                return unauthorized();
            }
            list_groups(inner)
        }
        ["group", "create"] => {
            if req.method != "POST" {
                return method_not_allowed("POST");
            }
            if authenticate(inner, req).is_none() {
                return unauthorized();
            }
            create_group(inner, req)
        }
        ["account", "i", id, "status"] => {
            if req.method != "POST" {
                return method_not_allowed("POST");
            }
            let Some(auth) = authenticate(inner, req) else {
                return unauthorized();
            };
            let i_account = match id.parse::<i64>() {
                Ok(n) if n > 0 && id.bytes().all(|b| b.is_ascii_digit()) => n,
                _ => {
                    return error(
                        400,
                        format!("i_account must be a positive integer, got {id:?}"),
                    )
                }
            };
            report(inner, req, i_account, auth, at_ms)
        }
        ["account", id, "status"] => {
            if req.method != "POST" {
                return method_not_allowed("POST");
            }
            let Some(auth) = authenticate(inner, req) else {
                return unauthorized();
            };
            let id = percent_decode(id);
            let found = inner
                .state()
                .accounts
                .values()
                .find(|a| a.get("id").and_then(Value::as_str) == Some(id.as_str()))
                .and_then(|a| a.get("i_account").and_then(Value::as_i64));
            match found {
                Some(i_account) => report(inner, req, i_account, auth, at_ms),
                None => error(404, format!("no account with ID {id:?}")),
            }
        }
        _ => error(404, format!("no such ESPF API path: {}", req.path)),
    }
}

/// How the call authenticated (`bearer` or `basic`), or `None`.
fn authenticate(inner: &Inner, req: &Request) -> Option<&'static str> {
    let h = req.header("authorization")?.trim();
    let (scheme, cred) = h.split_once(' ')?;
    let cred = cred.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return (!cred.is_empty() && pb::bearer_valid(inner, cred)).then_some("bearer");
    }
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(base64_decode(cred)?).ok()?;
    let (user, secret) = decoded.split_once(':')?;
    let cfg = &inner.cfg;
    let same = |a: &str, b: &str| !b.is_empty() && constant_time_eq(a.as_bytes(), b.as_bytes());
    let ok = same(user, &cfg.login) && (same(secret, &cfg.password) || same(secret, &cfg.token));
    ok.then_some("basic")
}

/// The 401 reply.
fn unauthorized() -> Response {
    error(401, "authentication failed".into())
        .with_header("WWW-Authenticate", "Basic realm=\"ESPF API\"")
}

/// An error reply with a JSON body.
fn error(status: u16, why: String) -> Response {
    Response::json(status, &json!({ "error": why }))
}

/// The body's fields as strings, and whether it was `json` or `form`.
fn fields(req: &Request) -> Result<(Map<String, Value>, &'static str), Response> {
    let ct = req
        .header("content-type")
        .unwrap_or("")
        .to_ascii_lowercase();
    if ct.contains("json") {
        match serde_json::from_slice::<Value>(&req.body) {
            Ok(Value::Object(m)) => Ok((m, "json")),
            Ok(_) => Err(error(400, "body must be a JSON object".into())),
            Err(e) => Err(error(400, format!("body is not valid JSON: {e}"))),
        }
    } else if ct.contains("application/x-www-form-urlencoded") {
        let mut m = Map::new();
        for (k, v) in form_decode(&req.body_text()) {
            m.entry(k).or_insert(Value::String(v));
        }
        Ok((m, "form"))
    } else {
        Err(error(
            400,
            "Content-Type must be application/x-www-form-urlencoded or application/json".into(),
        ))
    }
}

/// A string field: `Ok(None)` when absent or null, an error reply when not a string.
fn string_field(m: &Map<String, Value>, name: &str) -> Result<Option<String>, Response> {
    match m.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(error(400, format!("{name} must be a string"))),
    }
}

/// Validates and records a status report for `i_account`.
fn report(inner: &Inner, req: &Request, i_account: i64, auth: &str, at_ms: i64) -> Response {
    let delay = inner.state().status_delay;
    if !delay.is_zero() {
        std::thread::sleep(delay);
    }
    if inner.state().status_down {
        return error(503, "ESPF API unavailable (simulated)".into());
    }
    let (m, content_type) = match fields(req) {
        Ok(f) => f,
        Err(resp) => return resp,
    };
    let read = |name| string_field(&m, name);
    let (status, group, message) = match (read("status"), read("group"), read("message")) {
        (Ok(s), Ok(g), Ok(msg)) => (s, g, msg.unwrap_or_default()),
        (Err(r), _, _) | (_, Err(r), _) | (_, _, Err(r)) => return r,
    };
    let Some(status) = status else {
        return error(400, "status is required".into());
    };
    if !STATUSES.contains(&status.as_str()) {
        return error(
            400,
            format!("invalid status {status:?}; expected OK, IN_PROGRESS, RETRY or FAILED"),
        );
    }
    let Some(group) = group else {
        return error(400, "group is required".into());
    };
    let chars = message.chars().count();
    if chars > MAX_MESSAGE {
        return error(
            400,
            format!("message is {chars} characters; at most {MAX_MESSAGE} are allowed"),
        );
    }
    let mut st = inner.state();
    if !st.groups.iter().any(|g| g.name == group) {
        return error(400, format!("unknown service group {group:?}"));
    }
    let limit = st.record_limit;
    push_bounded(
        &mut st.statuses,
        StatusReport {
            i_account,
            status,
            group,
            message,
            content_type: content_type.to_string(),
            auth: auth.to_string(),
            at_ms,
        },
        limit,
    );
    Response::json(200, &json!({"success": 1}))
}

/// `GET /espf/v1/groups`.
fn list_groups(inner: &Inner) -> Response {
    let st = inner.state();
    let list: Vec<Value> = st
        .groups
        .iter()
        .map(
            |g| json!({"i_group": g.i_group.to_string(), "name": g.name, "is_custom": g.is_custom}),
        )
        .collect();
    Response::json(200, &json!({ "group_list": list }))
}

/// `POST /espf/v1/group/create` with `name`.
fn create_group(inner: &Inner, req: &Request) -> Response {
    let (m, _) = match fields(req) {
        Ok(f) => f,
        Err(resp) => return resp,
    };
    let name = match string_field(&m, "name") {
        Ok(Some(n)) if !n.trim().is_empty() => n,
        Ok(_) => return error(400, "name is required".into()),
        Err(resp) => return resp,
    };
    if name.chars().count() > MAX_GROUP_NAME {
        return error(
            400,
            format!("name is longer than {MAX_GROUP_NAME} characters"),
        );
    }
    let mut st = inner.state();
    if st.groups.iter().any(|g| g.name == name) {
        return error(400, format!("service group {name:?} already exists"));
    }
    let i_group = st
        .groups
        .iter()
        .filter(|g| g.is_custom)
        .map(|g| g.i_group + 1)
        .max()
        .unwrap_or(FIRST_CUSTOM_ID);
    st.groups.push(Group {
        i_group,
        name: name.clone(),
        is_custom: true,
    });
    Response::json(200, &json!({"name": name, "i_group": i_group}))
}

/// Decodes `%XX` escapes of a path segment (`+` stays a plus); bad escapes stay literal.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |j: usize| b.get(j).and_then(|&c| (c as char).to_digit(16));
        match (b[i], hex(i + 1), hex(i + 2)) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A slow or absent ESPF API, for rehearsing one.
impl super::Sim {
    /// ESPF status reports take `delay` before they are answered (zero: at once).
    pub fn set_status_delay(&self, delay: std::time::Duration) {
        self.inner.state().status_delay = delay;
    }

    /// While `down`, ESPF status reports are answered 503 (and not recorded).
    pub fn set_status_down(&self, down: bool) {
        self.inner.state().status_down = down;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_groups_keep_predefined_ids_and_number_custom_ones() {
        let names: Vec<String> = ["HSS", "IOT", "VoIP", "HSS", "", "CRM"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let g = groups_from(&names);
        let got: Vec<(i64, &str, bool)> = g
            .iter()
            .map(|g| (g.i_group, g.name.as_str(), g.is_custom))
            .collect();
        assert_eq!(
            got,
            vec![
                (2, "HSS", false),
                (1001, "IOT", true),
                (1, "VoIP", false),
                (1002, "CRM", true)
            ]
        );
    }

    #[test]
    fn path_segments_are_percent_decoded() {
        assert_eq!(percent_decode("79123456789%40msisdn"), "79123456789@msisdn");
        assert_eq!(percent_decode("a+b%2"), "a+b%2");
        assert_eq!(percent_decode("%zz%"), "%zz%");
    }
}
