//! The simulator (`src/sim`) driven over real loopback sockets with ureq, as espfd and the
//! other integration tests see it. Not here: espfd itself, which the other files drive
//! against the simulator.

use std::time::Duration;

use serde_json::{json, Value};

use espfd::sim::{Sim, SimConfig, FAULT_INVALID_REQUEST, FAULT_UNKNOWN_METHOD};
use espfd::util::{base64_decode, base64_encode, form_encode};

use crate::harness::agent;

/// What came back.
struct Reply {
    status: u16,
    body: String,
    content_type: String,
    retry_after: Option<String>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    fn faultcode(&self) -> String {
        assert_eq!(
            self.status, 500,
            "expected a fault, got {} {}",
            self.status, self.body
        );
        assert!(
            self.content_type.starts_with("application/json"),
            "{}",
            self.content_type
        );
        self.json()["faultcode"].as_str().unwrap_or("").to_string()
    }
}

fn start() -> Sim {
    start_with(SimConfig::default())
}

fn start_with(cfg: SimConfig) -> Sim {
    Sim::start("127.0.0.1:0", cfg).expect("simulator starts")
}

fn send(method: &str, url: &str, headers: &[(&str, &str)], body: &str) -> Reply {
    let agent = agent();
    let result = if method == "GET" {
        let mut r = agent.get(url);
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        r.call()
    } else if method == "DELETE" {
        let mut r = agent.delete(url);
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        r.call()
    } else {
        let mut r = agent.post(url);
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        r.send(body)
    };
    let mut resp = result.expect("request completes");
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let content_type = header("content-type").unwrap_or_default();
    let retry_after = header("retry-after");
    let status = resp.status().as_u16();
    let body = resp.body_mut().read_to_string().expect("readable body");
    Reply {
        status,
        body,
        content_type,
        retry_after,
    }
}

fn post_json(url: &str, headers: &[(&str, &str)], body: &Value) -> Reply {
    let mut h = vec![("Content-Type", "application/json")];
    h.extend_from_slice(headers);
    send("POST", url, &h, &body.to_string())
}

/// `POST /rest/<call>` with `{"params": params}` and an optional bearer token.
fn rest(sim: &Sim, call: &str, params: Value, bearer: Option<&str>) -> Reply {
    let url = format!("{}/rest/{call}", sim.url());
    let auth = bearer.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
    post_json(&url, &headers, &json!({ "params": params }))
}

/// A successful login with the default password; the whole reply.
fn login(sim: &Sim) -> Value {
    let r = rest(
        sim,
        "Session/login",
        json!({"login": "espfd", "password": "espfd-password"}),
        None,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
}

fn token_of(session: &Value) -> String {
    session["access_token"]
        .as_str()
        .expect("access_token")
        .to_string()
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64_encode(format!("{user}:{password}").as_bytes())
    )
}

fn status_url(sim: &Sim, i_account: &str) -> String {
    format!("{}/espf/v1/account/i/{i_account}/status", sim.url())
}

fn post_form(url: &str, auth: &str, body: &str) -> Reply {
    send(
        "POST",
        url,
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Authorization", auth),
        ],
        body,
    )
}

#[test]
fn login_accepts_password_or_token_and_rejects_bad_credentials() {
    let sim = start();
    let s = login(&sim);
    for key in ["session_id", "access_token", "refresh_token", "expires_at"] {
        assert!(
            s[key].as_str().is_some_and(|v| !v.is_empty()),
            "{key} in {s}"
        );
    }
    assert_eq!(s["expires_in"], 3600);
    let sid = s["session_id"].as_str().unwrap_or("");
    assert!(
        sid.len() == 32 && sid.bytes().all(|b| b.is_ascii_hexdigit()),
        "{sid}"
    );
    // "YYYY-MM-DD HH:MM:SS", about an hour from now.
    let at = s["expires_at"].as_str().unwrap_or("");
    let at_ms = espfd::util::parse_utc(at).expect("expires_at parses");
    let ahead = at_ms - espfd::util::now_ms();
    assert!((3_590_000..=3_601_000).contains(&ahead), "{at}");
    // The access token looks like a JWT whose exp matches expires_at.
    let parts: Vec<&str> = s["access_token"]
        .as_str()
        .unwrap_or("")
        .split('.')
        .collect();
    assert_eq!(parts.len(), 3);
    let claims: Value = serde_json::from_slice(
        &base64_decode(&parts[1].replace('-', "+").replace('_', "/")).expect("base64url"),
    )
    .expect("claims are JSON");
    assert_eq!(claims["exp"].as_i64(), Some(at_ms / 1000));
    assert_eq!(claims["login"], "espfd");

    let by_token = rest(
        &sim,
        "Session/login/",
        json!({"login": "espfd", "token": "espfd-api-token"}),
        None,
    );
    assert_eq!(by_token.status, 200, "{}", by_token.body);
    let t2 = by_token.json();
    assert_ne!(t2["access_token"], s["access_token"]);
    assert_ne!(t2["session_id"], s["session_id"]);
    assert_ne!(t2["refresh_token"], s["refresh_token"]);
    assert_eq!(sim.logins(), 2);

    for params in [
        json!({"login": "espfd", "password": "wrong"}),
        json!({"login": "espfd", "password": "ESPFD-PASSWORD"}),
        json!({"login": "other", "password": "espfd-password"}),
        json!({"login": "espfd", "token": "espfd-password"}),
        json!({"login": "espfd"}),
        json!({}),
    ] {
        let r = rest(&sim, "Session/login", params.clone(), None);
        assert_eq!(r.faultcode(), "Server.Session.auth_failed", "{params}");
    }
    assert_eq!(sim.logins(), 2);
}

#[test]
fn lookups_with_bearer_return_records_or_an_empty_object() {
    let sim = start();
    let token = token_of(&login(&sim));
    let t = Some(token.as_str());

    let r = rest(
        &sim,
        "Account/get_account_info",
        json!({"i_account": 2984, "without_service_features": 1, "detailed_info": 1}),
        t,
    );
    assert_eq!(r.status, 200);
    assert!(r.content_type.starts_with("application/json"));
    let info = &r.json()["account_info"];
    assert_eq!(info["id"], "6808881050@msisdn");
    assert_eq!(info["i_customer"], 2543);
    assert_eq!(info["balance"], 20.98506);
    assert_eq!(info["credit_limit"], Value::Null);
    assert!(info.get("service_features").is_none());

    let r = rest(
        &sim,
        "Account/get_account_info/",
        json!({"id": "6808881050@msisdn", "get_service_features": ["netaccess_policy"]}),
        t,
    );
    let features = &r.json()["account_info"]["service_features"];
    assert_eq!(features.as_array().map(Vec::len), Some(1));
    assert_eq!(features[0]["effective_flag_value"], "Y");

    // Unknown account: 200 and {}; an id given as a numeric string is read too.
    let r = rest(
        &sim,
        "Account/get_account_info",
        json!({"i_account": 999_999}),
        t,
    );
    assert_eq!((r.status, r.json()), (200, json!({})));
    let r = rest(
        &sim,
        "Account/get_account_info",
        json!({"i_account": "1000889"}),
        t,
    );
    assert_eq!(r.json()["account_info"]["i_customer"], 6392);

    let r = rest(
        &sim,
        "Customer/get_customer_info",
        json!({"i_customer": 2543}),
        t,
    );
    assert_eq!(r.json()["customer_info"]["name"], "PP Mobile test");
    let r = rest(
        &sim,
        "Customer/get_customer_info",
        json!({"i_customer": 1}),
        t,
    );
    assert_eq!(r.json(), json!({}));

    let r = rest(
        &sim,
        "Invoice/get_invoice_info",
        json!({"i_invoice": 450013}),
        t,
    );
    assert_eq!(r.json()["invoice_info"]["i_customer"], 6392);
    let r = rest(
        &sim,
        "Invoice/get_invoice_info",
        json!({"i_invoice": 7001}),
        t,
    );
    assert_eq!(r.json()["invoice_info"]["invoice_number"], "INV-2023-0042");
    let r = rest(&sim, "Invoice/get_invoice_info", json!({"i_invoice": 5}), t);
    assert_eq!(r.json(), json!({}));

    let r = rest(
        &sim,
        "DID/get_number_list",
        json!({"number": "16045550123", "limit": 10, "offset": 0}),
        t,
    );
    let list = r.json()["number_list"].clone();
    assert_eq!(list.as_array().map(Vec::len), Some(1));
    assert_eq!(list[0]["i_did_number"], 501);
    assert_eq!(list[0]["i_master_account"], 2984);
    let r = rest(
        &sim,
        "DID/get_number_list",
        json!({"number": "1206555012"}),
        t,
    );
    assert_eq!(r.json(), json!({"number_list": []}));
    let r = rest(
        &sim,
        "DID/get_number_list",
        json!({"number": "12065550123"}),
        t,
    );
    assert_eq!(r.json()["number_list"][0]["i_customer"], 6392);

    // Fixtures can be changed.
    sim.put_account(json!({"i_account": 2984, "id": "x", "bill_status": "C"}));
    let r = rest(
        &sim,
        "Account/get_account_info",
        json!({"i_account": 2984}),
        t,
    );
    assert_eq!(r.json()["account_info"]["bill_status"], "C");
    sim.remove_account(2984);
    let r = rest(
        &sim,
        "Account/get_account_info",
        json!({"i_account": 2984}),
        t,
    );
    assert_eq!(r.json(), json!({}));
}

#[test]
fn bad_lookup_parameters_fault_with_a_client_code() {
    let sim = start();
    let token = token_of(&login(&sim));
    let t = Some(token.as_str());
    let cases = [
        ("Account/get_account_info", json!({})),
        ("Account/get_account_info", json!({"i_account": "12a"})),
        ("Account/get_account_info", json!({"i_account": 1.5})),
        ("Account/get_account_info", json!({"id": 5})),
        ("Customer/get_customer_info", json!({})),
        ("Invoice/get_invoice_info", json!({"i_invoice": []})),
        ("DID/get_number_list", json!({"number": {}})),
        ("DID/get_number_list", json!({"limit": 1001})),
    ];
    for (call, params) in cases {
        let r = rest(&sim, call, params.clone(), t);
        let (service, method) = call.split_once('/').unwrap_or_default();
        assert_eq!(
            r.faultcode(),
            format!("Client.{service}.{method}.invalid_params"),
            "{call} {params}"
        );
    }
}

#[test]
fn calls_without_valid_auth_fault_with_the_documented_codes() {
    let sim = start();
    let url = format!("{}/rest/Account/get_account_info", sim.url());
    let params = json!({"i_account": 2984});

    let r = rest(&sim, "Account/get_account_info", params.clone(), None);
    assert_eq!(r.faultcode(), "Client.check_auth.envelope_missed");
    let r = rest(
        &sim,
        "Account/get_account_info",
        params.clone(),
        Some("nonsense"),
    );
    assert_eq!(
        r.faultcode(),
        "Client.Session.check_auth.failed_to_process_access_token"
    );
    let r = post_json(
        &url,
        &[],
        &json!({"params": params, "auth_info": {"session_id": "2cfc62c22529547256913502b270cc3c"}}),
    );
    assert_eq!(r.faultcode(), "Server.Session.check_auth.auth_failed");
    // Credentials in auth_info instead of a session are not accepted.
    let r = post_json(
        &url,
        &[],
        &json!({"params": params, "auth_info": {"login": "espfd", "password": "espfd-password"}}),
    );
    assert_eq!(r.faultcode(), "Client.check_auth.envelope_missed");
    // Unknown methods fault before auth is looked at.
    let r = rest(&sim, "Account/no_such_method", json!({}), None);
    assert_eq!(r.faultcode(), FAULT_UNKNOWN_METHOD);
    let r = rest(&sim, "Nope/get_info", json!({}), None);
    assert_eq!(r.faultcode(), FAULT_UNKNOWN_METHOD);
}

#[test]
fn revoked_sessions_fault_everywhere() {
    let sim = start();
    let s = login(&sim);
    let token = token_of(&s);
    let r = rest(
        &sim,
        "Account/get_account_info",
        json!({"i_account": 2984}),
        Some(&token),
    );
    assert_eq!(r.status, 200);

    sim.revoke_sessions();
    let r = rest(
        &sim,
        "Account/get_account_info",
        json!({"i_account": 2984}),
        Some(&token),
    );
    assert_eq!(
        r.faultcode(),
        "Client.Session.check_auth.failed_to_process_access_token"
    );
    let r = post_json(
        &format!("{}/rest/Account/get_account_info", sim.url()),
        &[],
        &json!({"params": {"i_account": 2984}, "auth_info": {"session_id": s["session_id"]}}),
    );
    assert_eq!(r.faultcode(), "Server.Session.check_auth.auth_failed");
    let r = rest(
        &sim,
        "Session/refresh_access_token",
        json!({"refresh_token": s["refresh_token"]}),
        None,
    );
    assert_eq!(
        r.faultcode(),
        "Server.Session.refresh_access_token.refresh_failed"
    );
    let r = rest(&sim, "Session/ping", json!({"access_token": token}), None);
    assert_eq!(r.json(), json!({"user_id": 0}));

    // A new login works again.
    let token = token_of(&login(&sim));
    let r = rest(
        &sim,
        "Account/get_account_info",
        json!({"i_account": 2984}),
        Some(&token),
    );
    assert_eq!(r.status, 200);
    assert_eq!(sim.logins(), 2);
}

#[test]
fn access_tokens_expire_after_the_ttl_and_refresh_rotates_the_refresh_token() {
    let sim = start_with(SimConfig {
        session_ttl: Duration::from_secs(1),
        ..SimConfig::default()
    });
    let s = login(&sim);
    assert_eq!(s["expires_in"], 1);
    let token = token_of(&s);
    let r = rest(
        &sim,
        "Account/get_account_info",
        json!({"i_account": 2984}),
        Some(&token),
    );
    assert_eq!(r.status, 200);

    std::thread::sleep(Duration::from_millis(1100));
    let r = rest(
        &sim,
        "Account/get_account_info",
        json!({"i_account": 2984}),
        Some(&token),
    );
    assert_eq!(
        r.faultcode(),
        "Client.Session.check_auth.failed_to_process_access_token"
    );
    let r = post_json(
        &format!("{}/rest/Account/get_account_info", sim.url()),
        &[],
        &json!({"params": {"i_account": 2984}, "auth_info": {"session_id": s["session_id"]}}),
    );
    assert_eq!(r.faultcode(), "Server.Session.check_auth.auth_failed");

    // The refresh token outlives the access token; refreshing rotates it.
    let r = rest(
        &sim,
        "Session/refresh_access_token",
        json!({"refresh_token": s["refresh_token"]}),
        None,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let fresh = r.json();
    assert_eq!(fresh["expires_in"], 1);
    assert!(fresh.get("session_id").is_none());
    assert_ne!(fresh["refresh_token"], s["refresh_token"]);
    let new_token = token_of(&fresh);
    assert_ne!(new_token, token);
    let r = rest(
        &sim,
        "Account/get_account_info",
        json!({"i_account": 2984}),
        Some(&new_token),
    );
    assert_eq!(r.status, 200);
    let r = rest(
        &sim,
        "Session/refresh_access_token",
        json!({"refresh_token": s["refresh_token"]}),
        None,
    );
    assert_eq!(
        r.faultcode(),
        "Server.Session.refresh_access_token.refresh_failed"
    );
    assert_eq!(sim.logins(), 1);
}

#[test]
fn form_encoded_requests_with_auth_info_session_id_are_served() {
    let sim = start();
    let url = format!("{}/rest/Session/login/", sim.url());
    let body = format!(
        "params={}",
        form_encode(r#"{"login":"espfd","password":"espfd-password"}"#)
    );
    let r = send(
        "POST",
        &url,
        &[("Content-Type", "application/x-www-form-urlencoded")],
        &body,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let sid = r.json()["session_id"].as_str().unwrap_or("").to_string();

    let body = format!(
        "auth_info={}&params={}",
        form_encode(&json!({ "session_id": sid }).to_string()),
        form_encode(r#"{"i_account":1000889,"get_included_services":1}"#)
    );
    let r = send(
        "POST",
        &format!("{}/rest/Account/get_account_info/", sim.url()),
        &[("Content-Type", "application/x-www-form-urlencoded")],
        &body,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["account_info"]["id"], "12065550100");

    let r = send(
        "POST",
        &format!("{}/rest/Account/get_account_info", sim.url()),
        &[("Content-Type", "application/x-www-form-urlencoded")],
        "params=%7Bnot-json",
    );
    assert_eq!(r.faultcode(), FAULT_INVALID_REQUEST);
}

#[test]
fn logout_ends_the_session_and_ping_reports_it() {
    let sim = start();
    let s = login(&sim);
    let token = token_of(&s);
    let r = rest(&sim, "Session/ping", json!({"access_token": token}), None);
    assert_eq!(r.json(), json!({"user_id": 5}));
    let r = rest(&sim, "Session/logout", json!({"access_token": token}), None);
    assert_eq!(r.json(), json!({"success": 1}));
    let r = rest(&sim, "Session/ping", json!({"access_token": token}), None);
    assert_eq!(r.json(), json!({"user_id": 0}));
    let r = rest(
        &sim,
        "Account/get_account_info",
        json!({"i_account": 2984}),
        Some(&token),
    );
    assert_eq!(
        r.faultcode(),
        "Client.Session.check_auth.failed_to_process_access_token"
    );
    let r = rest(&sim, "Session/logout", json!({"access_token": token}), None);
    assert_eq!(
        r.faultcode(),
        "Client.Session.logout.failed_to_process_access_token"
    );
}

#[test]
fn pb_failures_latency_and_injected_faults() {
    let sim = start_with(SimConfig {
        pb_failure_rate: 1.0,
        ..SimConfig::default()
    });
    // Login is never failed, so a client can always get a session.
    let token = token_of(&login(&sim));
    let r = rest(
        &sim,
        "Account/get_account_info",
        json!({"i_account": 2984}),
        Some(&token),
    );
    assert_eq!(r.status, 503);
    assert!(
        r.content_type.starts_with("text/plain"),
        "{}",
        r.content_type
    );
    assert!(!r.body.contains("faultcode"));

    sim.set_pb_failure_rate(0.0);
    sim.pb_fault_next("Account/get_account_info", "Server.Account.duplicate_id");
    let r = rest(
        &sim,
        "Account/get_account_info",
        json!({"i_account": 2984}),
        Some(&token),
    );
    assert_eq!(r.faultcode(), "Server.Account.duplicate_id");
    let r = rest(
        &sim,
        "Account/get_account_info",
        json!({"i_account": 2984}),
        Some(&token),
    );
    assert_eq!(r.status, 200);
}

#[test]
fn sim_account_control_changes_what_lookups_answer() {
    let sim = start();
    let token = token_of(&login(&sim));
    let info = |i_account: i64| {
        let r = rest(
            &sim,
            "Account/get_account_info",
            json!({ "i_account": i_account }),
            Some(&token),
        );
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()
    };
    let control = |method: &str, i_account: &str, body: &str| {
        let url = format!("{}/_sim/account/{i_account}", sim.url());
        send(method, &url, &[("Content-Type", "application/json")], body)
    };

    // The fixtures a connector needs: passwords, a blocked and a closed account.
    assert_eq!(
        info(1000889)["account_info"]["h323_password"],
        "c4sc4de-0100"
    );
    assert_eq!(info(1000890)["account_info"]["blocked"], "Y");
    assert_eq!(info(1000891)["account_info"]["bill_status"], "C");

    // POST merges: the fields sent change, the others stay, i_account cannot change.
    let r = control(
        "POST",
        "1000889",
        r#"{"blocked": "Y", "h323_password": "changed", "i_account": 7}"#,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["blocked"], "Y");
    let a = info(1000889)["account_info"].clone();
    assert_eq!(
        (
            &a["blocked"],
            &a["h323_password"],
            &a["id"],
            &a["i_account"]
        ),
        (
            &json!("Y"),
            &json!("changed"),
            &json!("12065550100"),
            &json!(1000889)
        )
    );
    assert_eq!(
        control("POST", "1000889", r#"{"bill_status": "C"}"#).status,
        200
    );
    assert_eq!(info(1000889)["account_info"]["bill_status"], "C");

    // An unknown account is created; DELETE makes lookups answer {} again.
    assert_eq!(info(4242), json!({}));
    let r = control(
        "POST",
        "4242",
        r#"{"id": "new-line", "h323_password": "pw"}"#,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        info(4242)["account_info"],
        json!({"i_account": 4242, "id": "new-line", "h323_password": "pw"})
    );
    let r = control("DELETE", "4242", "");
    assert_eq!((r.status, r.json()["removed"].clone()), (200, json!(true)));
    assert_eq!(info(4242), json!({}));
    assert_eq!(control("DELETE", "4242", "").json()["removed"], false);
    assert_eq!(control("DELETE", "1000890", "").status, 200);
    assert_eq!(info(1000890), json!({}));

    // What it refuses, and the router around it.
    assert_eq!(control("POST", "4242", "[1]").status, 400);
    assert_eq!(control("POST", "4242", "not json").status, 400);
    assert_eq!(control("POST", "abc", "{}").status, 400);
    assert_eq!(control("POST", "-1", "{}").status, 400);
    assert_eq!(control("GET", "4242", "").status, 405);
    assert_eq!(info(4242), json!({}), "nothing created by refused requests");
    let r = send("POST", &format!("{}/_sim/nothing", sim.url()), &[], "{}");
    assert_eq!(r.status, 404);
    assert!(r.body.contains("/_sim/account/<i_account>"), "{}", r.body);
    assert!(send("GET", &sim.url(), &[], "")
        .body
        .contains("/_sim/account"));
}

#[test]
fn unknown_paths_and_wrong_methods() {
    let sim = start();
    let base = sim.url();
    assert_eq!(send("GET", &format!("{base}/nope"), &[], "").status, 404);
    assert_eq!(
        send("POST", &format!("{base}/rest/Session"), &[], "").status,
        404
    );
    assert_eq!(
        send("POST", &format!("{base}/rest/a/b/c"), &[], "").status,
        404
    );
    assert_eq!(
        send("GET", &format!("{base}/rest/Session/login"), &[], "").status,
        405
    );
    assert_eq!(send("GET", &format!("{base}/target"), &[], "").status, 405);
    assert_eq!(
        send("POST", &format!("{base}/target/x"), &[], "{}").status,
        404
    );
    assert_eq!(
        send("POST", &format!("{base}/espf/v1/groups"), &[], "").status,
        405
    );
    assert_eq!(
        send("GET", &format!("{base}/espf/v1/nothing"), &[], "").status,
        404
    );
    assert_eq!(send("GET", &base, &[], "").status, 200);
}

#[test]
fn status_reports_are_accepted_as_form_or_json_with_basic_or_bearer() {
    let sim = start();
    let token = token_of(&login(&sim));
    let bearer = format!("Bearer {token}");

    let r = post_form(
        &status_url(&sim, "277147"),
        &basic("espfd", "espfd-password"),
        "status=IN_PROGRESS&group=HSS&message=Submitted%20to%20HSS",
    );
    assert_eq!((r.status, r.json()), (200, json!({"success": 1})));

    let r = post_json(
        &status_url(&sim, "277147"),
        &[("Authorization", bearer.as_str())],
        &json!({"status": "OK", "group": "HSS", "message": "Provisioned"}),
    );
    assert_eq!(r.status, 200, "{}", r.body);

    // By account ID, no message, basic with the API token.
    let r = post_form(
        &format!("{}/espf/v1/account/79123456789%40msisdn/status", sim.url()),
        &basic("espfd", "espfd-api-token"),
        "status=FAILED&group=PCRF",
    );
    assert_eq!(r.status, 200, "{}", r.body);

    // Exactly 4000 characters (multi-byte) is still fine.
    let long = "é".repeat(4000);
    let r = post_json(
        &status_url(&sim, "2984"),
        &[("Authorization", bearer.as_str())],
        &json!({"status": "RETRY", "group": "VoIP", "message": long}),
    );
    assert_eq!(r.status, 200, "{}", r.body);

    let got: Vec<(i64, String, String, String, String, String)> = sim
        .statuses()
        .into_iter()
        .map(|s| {
            (
                s.i_account,
                s.status,
                s.group,
                s.message.chars().take(20).collect(),
                s.content_type,
                s.auth,
            )
        })
        .collect();
    let want = |i: i64, st: &str, g: &str, m: &str, ct: &str, a: &str| {
        (
            i,
            st.to_string(),
            g.to_string(),
            m.to_string(),
            ct.to_string(),
            a.to_string(),
        )
    };
    assert_eq!(
        got,
        vec![
            want(
                277147,
                "IN_PROGRESS",
                "HSS",
                "Submitted to HSS",
                "form",
                "basic"
            ),
            want(277147, "OK", "HSS", "Provisioned", "json", "bearer"),
            want(277147, "FAILED", "PCRF", "", "form", "basic"),
            want(2984, "RETRY", "VoIP", &"é".repeat(20), "json", "bearer"),
        ]
    );
}

#[test]
fn status_reports_with_bad_auth_get_401() {
    let sim = start();
    let s = login(&sim);
    let url = status_url(&sim, "277147");
    let body = "status=OK&group=HSS";
    for auth in [
        String::new(),
        basic("espfd", "wrong"),
        basic("someone", "espfd-password"),
        "Basic !!!".to_string(),
        "Bearer not-a-token".to_string(),
        "Bearer".to_string(),
        "Plain espfd-password".to_string(),
    ] {
        let r = if auth.is_empty() {
            send(
                "POST",
                &url,
                &[("Content-Type", "application/x-www-form-urlencoded")],
                body,
            )
        } else {
            post_form(&url, &auth, body)
        };
        assert_eq!(r.status, 401, "{auth}");
    }
    let r = send("GET", &format!("{}/espf/v1/groups", sim.url()), &[], "");
    assert_eq!(r.status, 401);

    sim.revoke_sessions();
    let r = post_form(&url, &format!("Bearer {}", token_of(&s)), body);
    assert_eq!(r.status, 401);
    assert!(sim.statuses().is_empty());
}

#[test]
fn invalid_status_reports_get_400() {
    let sim = start();
    let auth = basic("espfd", "espfd-password");
    let too_long = format!("message={}", "x".repeat(4001));
    let cases: Vec<(String, &str, String)> = vec![
        (
            status_url(&sim, "277147"),
            "form",
            "status=OK&group=Nope".into(),
        ),
        (
            status_url(&sim, "277147"),
            "form",
            "status=OK&group=hss".into(),
        ),
        (
            status_url(&sim, "277147"),
            "form",
            "status=DONE&group=HSS".into(),
        ),
        (
            status_url(&sim, "277147"),
            "form",
            "status=ok&group=HSS".into(),
        ),
        (status_url(&sim, "277147"), "form", "group=HSS".into()),
        (status_url(&sim, "277147"), "form", "status=OK".into()),
        (
            status_url(&sim, "277147"),
            "form",
            format!("status=OK&group=HSS&{too_long}"),
        ),
        (
            status_url(&sim, "abc"),
            "form",
            "status=OK&group=HSS".into(),
        ),
        (status_url(&sim, "-1"), "form", "status=OK&group=HSS".into()),
        (status_url(&sim, "0"), "form", "status=OK&group=HSS".into()),
        (status_url(&sim, "277147"), "json", "{not json".into()),
        (status_url(&sim, "277147"), "json", r#"["OK"]"#.into()),
        (
            status_url(&sim, "277147"),
            "json",
            r#"{"status":1,"group":"HSS"}"#.into(),
        ),
        (
            status_url(&sim, "277147"),
            "text",
            "status=OK&group=HSS".into(),
        ),
    ];
    for (url, ct, body) in cases {
        let ct = match ct {
            "form" => "application/x-www-form-urlencoded",
            "json" => "application/json",
            _ => "text/plain",
        };
        let r = send(
            "POST",
            &url,
            &[("Content-Type", ct), ("Authorization", auth.as_str())],
            &body,
        );
        assert_eq!(r.status, 400, "{url} {body:.60}");
        assert!(r.json()["error"].as_str().is_some_and(|e| !e.is_empty()));
    }
    let r = post_form(
        &format!("{}/espf/v1/account/nobody%40x/status", sim.url()),
        &auth,
        "status=OK&group=HSS",
    );
    assert_eq!(r.status, 404);
    assert!(sim.statuses().is_empty());
}

#[test]
fn groups_are_listed_and_custom_ones_can_be_registered() {
    let sim = start_with(SimConfig {
        groups: vec!["VoIP".into(), "HSS".into(), "PCRF".into(), "IOT".into()],
        ..SimConfig::default()
    });
    let auth = basic("espfd", "espfd-password");
    let url = format!("{}/espf/v1/groups", sim.url());
    let r = send("GET", &url, &[("Authorization", auth.as_str())], "");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json(),
        json!({"group_list": [
            {"i_group": "1", "name": "VoIP", "is_custom": false},
            {"i_group": "2", "name": "HSS", "is_custom": false},
            {"i_group": "3", "name": "PCRF", "is_custom": false},
            {"i_group": "1001", "name": "IOT", "is_custom": true}
        ]})
    );
    // IPTV is predefined in PortaBilling but not configured here.
    let r = post_form(&status_url(&sim, "2984"), &auth, "status=OK&group=IPTV");
    assert_eq!(r.status, 400);

    let token = token_of(&login(&sim));
    let bearer = format!("Bearer {token}");
    let create = format!("{}/espf/v1/group/create", sim.url());
    let r = post_json(
        &create,
        &[("Authorization", bearer.as_str())],
        &json!({"name": "CRM"}),
    );
    assert_eq!(
        (r.status, r.json()),
        (200, json!({"name": "CRM", "i_group": 1002}))
    );
    let r = post_json(
        &create,
        &[("Authorization", bearer.as_str())],
        &json!({"name": "CRM"}),
    );
    assert_eq!(r.status, 400);
    let r = post_form(&status_url(&sim, "2984"), &auth, "status=OK&group=CRM");
    assert_eq!(r.status, 200);
}

#[test]
fn target_records_calls_and_follows_scripts() {
    let sim = start();
    let url = sim.target_url();
    let doc = json!({
        "i_event": 7615, "event_type": "Subscriber/Created",
        "variables": {"i_account": 1000889, "i_event": 7615},
        "received_at": "2025-05-01T12:00:00.000Z", "attempt": 1, "group": "HSS",
        "entity": {"kind": "account", "i_account": 1000889, "id": "12065550100"}
    });
    sim.script_target(7615, &[(503, Some("2")), (429, None), (202, None)]);
    let h = [("Idempotency-Key", "7615")];

    let r = post_json(&url, &h, &doc);
    assert_eq!((r.status, r.retry_after.as_deref()), (503, Some("2")));
    let r = post_json(&url, &h, &doc);
    assert_eq!((r.status, r.retry_after.as_deref()), (429, None));
    let r = post_json(&url, &h, &doc);
    assert_eq!(r.status, 202);
    let r = post_json(&url, &h, &doc);
    assert_eq!((r.status, r.body.trim()), (200, "provisioned 7615"));

    // Other events are not affected by that script.
    let mut other = doc.clone();
    other["i_event"] = json!(7616);
    assert_eq!(post_json(&url, &[], &other).status, 200);

    let calls = sim.target_calls();
    let statuses: Vec<u16> = calls.iter().map(|c| c.status).collect();
    assert_eq!(statuses, vec![503, 429, 202, 200, 200]);
    assert_eq!(calls[0].doc, doc);
    assert_eq!(calls[0].i_event, Some(7615));
    assert_eq!(calls[0].header("idempotency-key"), Some("7615"));
    assert_eq!(calls[4].i_event, Some(7616));
    assert!(calls
        .iter()
        .all(|c| c.is_finished() && c.finished_ms >= c.started_ms));

    // Not JSON, or no i_event: 400, still recorded.
    let r = send(
        "POST",
        &url,
        &[("Content-Type", "application/json")],
        "NotAJsonBody",
    );
    assert_eq!(r.status, 400);
    assert_eq!(
        post_json(&url, &[], &json!({"event_type": "X/Y"})).status,
        400
    );
    let calls = sim.target_calls();
    assert_eq!(calls.len(), 7);
    assert_eq!((calls[5].doc.clone(), calls[5].status), (Value::Null, 400));

    let posts = sim.requests_to("/target");
    assert_eq!(posts.len(), 7);
    assert_eq!(posts[0].method, "POST");
    assert_eq!(posts[0].header("content-type"), Some("application/json"));
    assert_eq!(
        serde_json::from_str::<Value>(&posts[0].body).ok(),
        Some(doc)
    );
}

#[test]
fn target_failure_rate_answers_503() {
    let sim = start_with(SimConfig {
        target_failure_rate: 1.0,
        ..SimConfig::default()
    });
    let doc = json!({"i_event": 1, "event_type": "Customer/Updated",
        "variables": {"i_event": 1, "i_customer": 6392}, "entity": null});
    sim.script_target(1, &[(200, None)]);
    assert_eq!(post_json(&sim.target_url(), &[], &doc).status, 503);
    sim.set_target_failure_rate(0.0);
    assert_eq!(post_json(&sim.target_url(), &[], &doc).status, 200);
}

#[test]
fn a_slow_entity_does_not_hold_up_other_connections() {
    let sim = start();
    sim.slow_target("account:277147", Duration::from_secs(3));
    let slow = json!({"i_event": 10, "event_type": "SIM/Updated",
        "variables": {"i_event": 10, "i_account": 277147}, "entity": null});
    let fast = json!({"i_event": 11, "event_type": "DID/Updated",
        "variables": {"i_event": 11, "number": "12065550123"},
        "entity": {"kind": "did", "number": "12065550123"}});
    let url = sim.target_url();
    let slow_call = std::thread::spawn(move || post_json(&url, &[], &slow).status);
    assert!(sim.wait_for(Duration::from_secs(5), |s| s.target_calls().len() == 1));
    assert_eq!(post_json(&sim.target_url(), &[], &fast).status, 200);

    let calls = sim.target_calls();
    assert_eq!(calls.len(), 2);
    assert!(
        !calls[0].is_finished(),
        "the slow call is still in progress"
    );
    assert_eq!((calls[1].i_event, calls[1].status), (Some(11), 200));
    assert_eq!(slow_call.join().ok(), Some(200));
    assert!(
        sim.wait_for(Duration::from_secs(1), |s| s.target_calls()[0].status
            == 200)
    );
}

#[test]
fn requests_are_recorded_in_order_and_limits_apply() {
    let sim = start();
    login(&sim);
    rest(
        &sim,
        "Account/get_account_info",
        json!({"i_account": 1}),
        None,
    );
    let reqs = sim.requests();
    let paths: Vec<&str> = reqs.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(
        paths,
        ["/rest/Session/login", "/rest/Account/get_account_info"]
    );
    assert!(reqs[0].body.contains("espfd-password"));
    assert!(reqs[0].at_ms <= reqs[1].at_ms);
    assert_eq!(sim.requests_to("/rest/Session/login/").len(), 1);

    sim.set_record_limit(Some(1));
    assert_eq!(sim.requests().len(), 1);
    send("GET", &sim.url(), &[], "");
    let reqs = sim.requests();
    assert_eq!((reqs.len(), reqs[0].path.as_str()), (1, "/"));
    sim.clear_records();
    assert!(sim.requests().is_empty());
    assert_eq!(sim.logins(), 1);
}

#[test]
fn odd_inputs_never_crash_a_handler() {
    let sim = start();
    let token = token_of(&login(&sim));
    let bearer = format!("Bearer {token}");
    let bodies = [
        "",
        "{",
        "[]",
        "null",
        "{\"params\": []}",
        "{\"params\": {\"i_account\": 18446744073709551616}}",
        "{\"params\": {\"i_account\": -5, \"id\": null}}",
        "{\"params\": {\"number\": \"%%__%\", \"offset\": 99999999999999999999}}",
        "{\"params\": {\"number\": \"%\", \"offset\": 9223372036854775807, \"limit\": 0}}",
        "{\"auth_info\": 5, \"params\": {}}",
        "params=%FF%FE&auth_info=%7B%7D",
        "\u{0}\u{1}binary",
    ];
    let paths = [
        "/rest/Session/login",
        "/rest/Session/refresh_access_token",
        "/rest/Session/logout",
        "/rest/Session/ping",
        "/rest/Account/get_account_info",
        "/rest/Account/get_service_features",
        "/rest/Customer/get_customer_info",
        "/rest/Invoice/get_invoice_info",
        "/rest/DID/get_number_list",
        "/rest/Generic/get_version",
        "/espf/v1/account/i/277147/status",
        "/espf/v1/account/%E0%A4/status",
        "/espf/v1/group/create",
        "/target",
    ];
    for path in paths {
        for body in bodies {
            for ct in [
                "application/json",
                "application/x-www-form-urlencoded",
                "text/plain",
            ] {
                let url = format!("{}{path}", sim.url());
                let r = send(
                    "POST",
                    &url,
                    &[("Content-Type", ct), ("Authorization", bearer.as_str())],
                    body,
                );
                if r.status == 500 {
                    // Only PortaBilling faults, never the server's panic reply.
                    assert!(path.starts_with("/rest/"), "{path} {body:?} -> {}", r.body);
                    r.faultcode();
                }
            }
        }
    }
    // The simulator is still healthy. (An empty Session/logout above ended the session its
    // bearer header named, as it should: log in again.)
    let token = token_of(&login(&sim));
    let r = rest(
        &sim,
        "Account/get_account_info",
        json!({"i_account": 2984}),
        Some(&token),
    );
    assert_eq!(r.status, 200);
}

#[test]
fn a_sim_can_be_shared_between_threads() {
    fn shareable<T: Send + Sync>() {}
    shareable::<Sim>();
}

#[test]
fn shutdown_stops_serving() {
    let sim = start();
    let addr = sim.addr();
    assert!(sim.url().ends_with(&addr.port().to_string()));
    assert_eq!(sim.target_url(), format!("{}/target", sim.url()));
    sim.shutdown();
    let refused = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500));
    assert!(refused.is_err());
}
