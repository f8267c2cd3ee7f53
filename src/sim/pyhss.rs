//! A fake of PyHSS's REST API (an HSS and PCRF), under `/pyhss`: the subscriber resource as
//! the project's notes on PyHSS describe it (read from its `apiService.py` and provisioning
//! docs), for templated connectors and their tests to provision.
//!
//! - `PUT /pyhss/subscriber/` with a JSON object creates a subscriber: 200 and the object with
//!   its `subscriber_id`; an IMSI already there → 400
//!   `{"result": "Failed", "reason": "A database integrity error occurred: ..."}`.
//! - `PATCH /pyhss/subscriber/<subscriber_id>` merges the fields → 200 and the object.
//! - `DELETE /pyhss/subscriber/<subscriber_id>` → 200 `{"Result": "OK"}`.
//! - `GET /pyhss/subscriber/<subscriber_id>`, `GET /pyhss/subscriber/imsi/<imsi>`,
//!   `GET /pyhss/subscriber/msisdn/<msisdn>`: the object; an unknown IMSI or MSISDN is
//!   **200 with the body `null`**, as PyHSS's code reads — a connector must treat that as
//!   "not found". An unknown id is 404 `{"result": "Failed", "reason": "..."}` (our choice;
//!   the notes do not say).
//! - Every call needs `Provisioning-Key: <PROVISIONING_KEY>` (PyHSS with
//!   `lock_provisioning` on); else 401 `{"Result": "Unauthorized - Provisioning-Key Invalid"}`.
//!
//! `imsi` must be a string of 1 to 15 digits. Not here: `/auc/`, `/apn/`, `/ims_subscriber/`,
//! paging of `/subscriber/list`.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use super::{method_not_allowed, Inner};
use crate::http::{Request, Response};
use crate::util::constant_time_eq;

/// The `Provisioning-Key` the fake accepts.
pub const PROVISIONING_KEY: &str = "pyhss-provisioning-key";

/// The fake's subscribers, by `subscriber_id`.
#[derive(Debug, Default)]
pub(super) struct PyHss {
    subscribers: BTreeMap<i64, Map<String, Value>>,
    next_id: i64,
}

impl PyHss {
    /// Every subscriber, in id order.
    pub(super) fn subscribers(&self) -> Vec<Value> {
        self.subscribers
            .values()
            .cloned()
            .map(Value::Object)
            .collect()
    }

    fn by(&self, field: &str, value: &str) -> Option<&Map<String, Value>> {
        self.subscribers
            .values()
            .find(|s| s.get(field).and_then(Value::as_str) == Some(value))
    }

    fn imsi_taken(&self, imsi: &str, except: Option<i64>) -> bool {
        self.subscribers.iter().any(|(id, s)| {
            Some(*id) != except && s.get("imsi").and_then(Value::as_str) == Some(imsi)
        })
    }
}

fn failed(status: u16, reason: String) -> Response {
    Response::json(status, &json!({"result": "Failed", "reason": reason}))
}

fn valid_imsi(v: Option<&Value>) -> Result<Option<&str>, Response> {
    match v {
        None => Ok(None),
        Some(Value::String(s))
            if (1..=15).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit()) =>
        {
            Ok(Some(s))
        }
        Some(_) => Err(failed(
            400,
            "imsi must be a string of 1 to 15 digits".into(),
        )),
    }
}

fn object(req: &Request) -> Result<Map<String, Value>, Response> {
    match serde_json::from_slice::<Value>(&req.body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(failed(400, "the body must be a JSON object".into())),
        Err(e) => Err(failed(400, format!("the body is not JSON: {e}"))),
    }
}

/// Answers `/pyhss/<rest>`.
pub(super) fn handle(inner: &Inner, req: &Request, rest: &str) -> Response {
    let key = req.header("provisioning-key").unwrap_or("");
    if !constant_time_eq(key.as_bytes(), PROVISIONING_KEY.as_bytes()) {
        return Response::json(
            401,
            &json!({"Result": "Unauthorized - Provisioning-Key Invalid"}),
        );
    }
    let segs: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
    let mut st = inner.state();
    let hss = &mut st.pyhss;
    match (req.method.as_str(), segs.as_slice()) {
        ("PUT", ["subscriber"]) => {
            let mut sub = match object(req) {
                Ok(m) => m,
                Err(r) => return r,
            };
            let imsi = match valid_imsi(sub.get("imsi")) {
                Ok(Some(i)) => i.to_string(),
                Ok(None) => return failed(400, "imsi is required".into()),
                Err(r) => return r,
            };
            if hss.imsi_taken(&imsi, None) {
                return failed(
                    400,
                    "A database integrity error occurred: UNIQUE constraint failed: subscriber.imsi"
                        .into(),
                );
            }
            hss.next_id += 1;
            let id = hss.next_id;
            sub.insert("subscriber_id".into(), id.into());
            hss.subscribers.insert(id, sub.clone());
            Response::json(200, &Value::Object(sub))
        }
        ("GET", ["subscriber", "imsi", imsi]) => Response::json(
            200,
            &hss.by("imsi", imsi)
                .cloned()
                .map_or(Value::Null, Value::Object),
        ),
        ("GET", ["subscriber", "msisdn", msisdn]) => Response::json(
            200,
            &hss.by("msisdn", msisdn)
                .cloned()
                .map_or(Value::Null, Value::Object),
        ),
        (method, ["subscriber", id]) => {
            let Ok(id) = id.parse::<i64>() else {
                return failed(404, format!("no subscriber with subscriber_id {id}"));
            };
            if !hss.subscribers.contains_key(&id) {
                return failed(404, format!("no subscriber with subscriber_id {id}"));
            }
            match method {
                "GET" => Response::json(200, &Value::Object(hss.subscribers[&id].clone())),
                "PATCH" => {
                    let fields = match object(req) {
                        Ok(m) => m,
                        Err(r) => return r,
                    };
                    match valid_imsi(fields.get("imsi")) {
                        Ok(Some(imsi)) if hss.imsi_taken(imsi, Some(id)) => {
                            return failed(
                                400,
                                "A database integrity error occurred: UNIQUE constraint failed: subscriber.imsi"
                                    .into(),
                            )
                        }
                        Ok(_) => {}
                        Err(r) => return r,
                    }
                    let sub = hss.subscribers.get_mut(&id).expect("checked above");
                    for (k, v) in fields {
                        if k != "subscriber_id" {
                            sub.insert(k, v);
                        }
                    }
                    Response::json(200, &Value::Object(sub.clone()))
                }
                "DELETE" => {
                    hss.subscribers.remove(&id);
                    Response::json(200, &json!({"Result": "OK"}))
                }
                _ => method_not_allowed("GET, PATCH, DELETE"),
            }
        }
        (_, ["subscriber"]) => method_not_allowed("PUT"),
        _ => failed(404, format!("no such PyHSS path: {}", req.path)),
    }
}

/// What a test or `espfd simulate` reads and changes of this fake.
impl super::Sim {
    /// The fake PyHSS's subscribers, in `subscriber_id` order.
    pub fn pyhss_subscribers(&self) -> Vec<Value> {
        self.inner.state().pyhss.subscribers()
    }
}
