//! A fake of Microsoft Dataverse's Web API behind an OAuth 2.0 client-credentials token
//! endpoint (Microsoft Entra), as the project's notes on Dataverse describe them:
//!
//! - `POST /oauth/<tenant>/oauth2/v2.0/token` with the form
//!   `grant_type=client_credentials&scope=...` and the client's credentials either in an
//!   `Authorization: Basic` header (RFC 6749 §2.3.1: id and secret form-urlencoded, then
//!   joined by `:`) or as `client_id` and `client_secret` form fields → 200
//!   `{"access_token", "token_type": "Bearer", "expires_in"}` (no refresh token in this
//!   flow); wrong credentials → 401 `{"error": "invalid_client"}`; another grant type → 400
//!   `{"error": "unsupported_grant_type"}`.
//! - `PATCH /dataverse/api/data/v9.2/<entityset>(<key>=<value>)` with a JSON object is an
//!   upsert → 204; with `If-Match: *` update-only (404 when missing), with `If-None-Match: *`
//!   create-only (412 when present). `GET` → 200 and the record, `DELETE` → 204; unknown →
//!   404. Values are numbers or `'quoted'` strings (`''` for a quote).
//! - Every data call needs `Authorization: Bearer <a token it issued, not expired and not
//!   revoked>`; else 401 `{"error": {"code": "0x80040220", "message": ...}}`.
//!
//! [`Sim::set_oauth_ttl`](super::Sim::set_oauth_ttl) shortens the tokens' lifetime and
//! [`Sim::revoke_oauth_tokens`](super::Sim::revoke_oauth_tokens) invalidates the issued ones,
//! to rehearse renewal before expiry and the one renewal after a 401.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde_json::{json, Map, Value};

use super::{method_not_allowed, random_hex32, Inner};
use crate::http::{Request, Response};
use crate::util::{base64_decode, constant_time_eq, form_decode, now_ms};

/// The client id the token endpoint accepts.
pub const CLIENT_ID: &str = "espfd-client";
/// Its secret; the characters `:`, `/`, `+` and `=` need §2.3.1's encoding in a Basic header.
pub const CLIENT_SECRET: &str = "dv:secret/+=";

/// The token endpoint's and the Web API's state.
#[derive(Debug)]
pub(super) struct Dataverse {
    /// Issued access tokens and when each expires (unix ms).
    tokens: HashMap<String, i64>,
    pub(super) issued: usize,
    pub(super) ttl: Duration,
    /// The client id and secret the token endpoint accepts.
    client: (String, String),
    /// Records by entity set, then by `key=value` as written in the path (unquoted).
    records: BTreeMap<String, BTreeMap<String, Map<String, Value>>>,
}

impl Default for Dataverse {
    fn default() -> Self {
        Dataverse {
            tokens: HashMap::new(),
            issued: 0,
            ttl: Duration::from_secs(3600),
            client: (CLIENT_ID.into(), CLIENT_SECRET.into()),
            records: BTreeMap::new(),
        }
    }
}

impl Dataverse {
    /// The records of `entity_set`: (`key=value`, record).
    pub(super) fn records(&self, entity_set: &str) -> Vec<(String, Value)> {
        self.records
            .get(entity_set)
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), Value::Object(v.clone())))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub(super) fn revoke(&mut self) {
        self.tokens.clear();
    }

    /// Whether `Authorization: <header>` carries a token this endpoint issued, not expired and
    /// not revoked.
    pub(super) fn authorizes(&self, header: Option<&str>) -> bool {
        let bearer = header
            .and_then(|h| h.trim().strip_prefix("Bearer "))
            .unwrap_or("");
        self.tokens
            .get(bearer.trim())
            .is_some_and(|&exp| exp > now_ms())
    }
}

/// Answers `/oauth/<rest>`.
pub(super) fn token(inner: &Inner, req: &Request, rest: &str) -> Response {
    let segs: Vec<&str> = rest.split('/').collect();
    if !matches!(segs.as_slice(), [_tenant, "oauth2", "v2.0", "token"]) {
        return Response::text(404, format!("no such path: {}", req.path));
    }
    if req.method != "POST" {
        return method_not_allowed("POST");
    }
    let form = form_decode(&req.body_text());
    let field = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    if field("grant_type").as_deref() != Some("client_credentials") {
        return Response::json(400, &json!({"error": "unsupported_grant_type"}));
    }
    let from_header = req.header("authorization").and_then(basic_client);
    let (id, secret) = match from_header {
        Some(pair) => pair,
        None => (
            field("client_id").unwrap_or_default(),
            field("client_secret").unwrap_or_default(),
        ),
    };
    let mut st = inner.state();
    let (want_id, want_secret) = &st.dataverse.client;
    let good = constant_time_eq(id.as_bytes(), want_id.as_bytes())
        & constant_time_eq(secret.as_bytes(), want_secret.as_bytes());
    if !good {
        return Response::json(401, &json!({"error": "invalid_client"}));
    }
    let dv = &mut st.dataverse;
    let token = format!("dv.{}", random_hex32());
    let ttl = dv.ttl;
    dv.tokens
        .insert(token.clone(), now_ms() + ttl.as_millis() as i64);
    dv.issued += 1;
    Response::json(
        200,
        &json!({"access_token": token, "token_type": "Bearer", "expires_in": ttl.as_secs()}),
    )
}

/// The client id and secret of an `Authorization: Basic` header, each form-decoded
/// (RFC 6749 §2.3.1).
fn basic_client(header: &str) -> Option<(String, String)> {
    let (scheme, cred) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(base64_decode(cred.trim())?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    let one = |s: &str| form_decode(&format!("v={s}")).pop().map(|(_, v)| v);
    Some((one(id)?, one(secret)?))
}

fn api_error(status: u16, message: &str) -> Response {
    Response::json(
        status,
        &json!({"error": {"code": "0x80040220", "message": message}}),
    )
}

/// `<entityset>(<key>=<value>)` → (entity set, `key=value` with the value unquoted).
fn target_of(path: &str) -> Option<(String, String)> {
    let (set, rest) = path.split_once('(')?;
    let inner = rest.strip_suffix(')')?;
    let (key, value) = inner.split_once('=')?;
    let value = match value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')) {
        Some(quoted) => quoted.replace("''", "'"),
        None if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => value.into(),
        None => return None,
    };
    let ok_name =
        |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    (ok_name(set) && ok_name(key)).then(|| (set.to_string(), format!("{key}={value}")))
}

/// Answers `/dataverse/<rest>`.
pub(super) fn data(inner: &Inner, req: &Request, rest: &str) -> Response {
    let Some(path) = rest.strip_prefix("api/data/v9.2/") else {
        return api_error(404, "no such resource");
    };
    let mut st = inner.state();
    let dv = &mut st.dataverse;
    if !dv.authorizes(req.header("authorization")) {
        return api_error(401, "The access token is missing, expired or revoked");
    }
    let percent_decoded = form_decode(&format!("p={}", path.replace('+', "%2B")))
        .pop()
        .map(|(_, v)| v)
        .unwrap_or_default();
    let Some((set, key)) = target_of(&percent_decoded) else {
        return api_error(400, "expected <entityset>(<key>=<value>)");
    };
    let table = dv.records.entry(set).or_default();
    match req.method.as_str() {
        "GET" => match table.get(&key) {
            Some(r) => Response::json(200, &Value::Object(r.clone())),
            None => api_error(404, "Does Not Exist"),
        },
        "DELETE" => match table.remove(&key) {
            Some(_) => Response::text(204, ""),
            None => api_error(404, "Does Not Exist"),
        },
        "PATCH" => {
            let fields = match serde_json::from_slice::<Value>(&req.body) {
                Ok(Value::Object(m)) => m,
                _ => return api_error(400, "the body must be a JSON object"),
            };
            let exists = table.contains_key(&key);
            if req.header("if-match").map(str::trim) == Some("*") && !exists {
                return api_error(404, "Does Not Exist");
            }
            if req.header("if-none-match").map(str::trim) == Some("*") && exists {
                return api_error(412, "A record with matching key values already exists");
            }
            let record = table.entry(key).or_default();
            for (k, v) in fields {
                record.insert(k, v);
            }
            Response::text(204, "")
        }
        _ => method_not_allowed("GET, PATCH, DELETE"),
    }
}

/// What a test or `espfd simulate` reads and changes of this fake.
impl super::Sim {
    /// The fake Dataverse's records of `entity_set`: (`key=value`, record).
    pub fn dataverse_records(&self, entity_set: &str) -> Vec<(String, Value)> {
        self.inner.state().dataverse.records(entity_set)
    }

    /// How many access tokens the fake OAuth 2.0 endpoint has issued.
    pub fn oauth_tokens_issued(&self) -> usize {
        self.inner.state().dataverse.issued
    }

    /// The lifetime of the access tokens issued from now on (`expires_in`).
    pub fn set_oauth_ttl(&self, ttl: Duration) {
        self.inner.state().dataverse.ttl = ttl;
    }

    /// The client id and secret the token endpoint accepts from now on (by default
    /// [`CLIENT_ID`] and [`CLIENT_SECRET`]).
    pub fn set_oauth_client(&self, id: &str, secret: &str) {
        self.inner.state().dataverse.client = (id.to_string(), secret.to_string());
    }

    /// Invalidates every access token issued so far: the next data call (and a target call
    /// under [`TargetAuth::OAuth`](super::TargetAuth::OAuth)) is 401.
    pub fn revoke_oauth_tokens(&self) {
        self.inner.state().dataverse.revoke();
    }
}
