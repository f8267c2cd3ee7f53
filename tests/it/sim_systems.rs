//! The simulator's fakes of real provisioning APIs (PyHSS, the Stalker portal) and its SIM
//! card look-ups, over loopback, as the project's notes on those systems describe them: what
//! a templated connector will have to cope with (success judged from a 200's body, `null`
//! for "not found", update by the system's own id, form bodies, their own authentication).

use espfd::sim::{Sim, SimConfig, PYHSS_PROVISIONING_KEY, STALKER_PASSWORD, STALKER_USER};
use serde_json::{json, Value};

use crate::harness::{agent, basic};

fn call(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<(&str, &str)>,
) -> (u16, Value) {
    let mut req = ureq::http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = match body {
        Some((ct, b)) => agent().run(req.header("Content-Type", ct).body(b.to_string()).unwrap()),
        None => agent().run(req.body(()).unwrap()),
    };
    let mut resp = resp.unwrap();
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[test]
fn pyhss_creates_looks_up_updates_and_deletes_subscribers_by_its_own_id() {
    let sim = Sim::start("127.0.0.1:0", SimConfig::default()).unwrap();
    let base = format!("{}/pyhss", sim.url());
    let key = [("Provisioning-Key", PYHSS_PROVISIONING_KEY)];
    let sub = r#"{"imsi": "250991234567890", "msisdn": "79123456789", "enabled": true, "auc_id": 1, "default_apn": 1, "apn_list": "1"}"#;

    let (code, body) = call(
        "PUT",
        &format!("{base}/subscriber/"),
        &[],
        Some(("application/json", sub)),
    );
    assert_eq!(code, 401);
    assert_eq!(body["Result"], "Unauthorized - Provisioning-Key Invalid");

    // Unknown IMSI: 200 with a null body, not 404.
    let (code, body) = call(
        "GET",
        &format!("{base}/subscriber/imsi/250991234567890"),
        &key,
        None,
    );
    assert_eq!((code, body), (200, Value::Null));

    let (code, created) = call(
        "PUT",
        &format!("{base}/subscriber/"),
        &key,
        Some(("application/json", sub)),
    );
    assert_eq!(code, 200, "{created}");
    let id = created["subscriber_id"].as_i64().expect("an id");
    assert_eq!(created["msisdn"], "79123456789");
    let (code, body) = call(
        "PUT",
        &format!("{base}/subscriber/"),
        &key,
        Some(("application/json", sub)),
    );
    assert_eq!(code, 400);
    assert_eq!(body["result"], "Failed");
    assert!(
        body["reason"].as_str().unwrap().contains("integrity"),
        "{body}"
    );

    let (code, found) = call(
        "GET",
        &format!("{base}/subscriber/imsi/250991234567890"),
        &key,
        None,
    );
    assert_eq!((code, found["subscriber_id"].as_i64()), (200, Some(id)));
    let (code, found) = call(
        "GET",
        &format!("{base}/subscriber/msisdn/79123456789"),
        &key,
        None,
    );
    assert_eq!((code, found["subscriber_id"].as_i64()), (200, Some(id)));

    let (code, updated) = call(
        "PATCH",
        &format!("{base}/subscriber/{id}"),
        &key,
        Some(("application/json", r#"{"enabled": false}"#)),
    );
    assert_eq!(code, 200);
    assert_eq!(
        (updated["enabled"].clone(), updated["imsi"].clone()),
        (json!(false), json!("250991234567890"))
    );
    assert_eq!(sim.pyhss_subscribers()[0]["enabled"], false);

    let (code, _) = call(
        "PATCH",
        &format!("{base}/subscriber/999"),
        &key,
        Some(("application/json", "{}")),
    );
    assert_eq!(code, 404);
    let (code, body) = call("DELETE", &format!("{base}/subscriber/{id}"), &key, None);
    assert_eq!((code, body), (200, json!({"Result": "OK"})));
    assert!(sim.pyhss_subscribers().is_empty());
    let (code, _) = call(
        "PUT",
        &format!("{base}/subscriber/"),
        &key,
        Some(("application/json", r#"{"imsi": "25099x"}"#)),
    );
    assert_eq!(code, 400, "an IMSI is digits");
}

#[test]
fn stalker_answers_200_with_the_outcome_in_the_body_and_takes_form_bodies() {
    let sim = Sim::start("127.0.0.1:0", SimConfig::default()).unwrap();
    let base = format!("{}/stalker_portal/api/accounts", sim.url());
    let auth = basic(STALKER_USER, STALKER_PASSWORD);
    let h = [("Authorization", auth.as_str())];
    let form = "application/x-www-form-urlencoded";

    let wrong = basic(STALKER_USER, "nope");
    let (code, _) = call("GET", &base, &[("Authorization", wrong.as_str())], None);
    assert_eq!(code, 401);

    let (code, body) = call("GET", &format!("{base}/1000889"), &h, None);
    assert_eq!(
        (code, body),
        (
            200,
            json!({"status": "ERROR", "error": "Account not found"})
        )
    );

    let new = "login=12065550100&password=s%26cret&full_name=Cascade+Dental&account_number=1000889&tariff_plan=basic&status=1&stb_mac=00%3A1A%3A79%3A00%3A00%3A01";
    let (code, body) = call("POST", &base, &h, Some((form, new)));
    assert_eq!((code, body["status"].clone()), (200, json!("OK")), "{body}");
    let (code, body) = call("POST", &base, &h, Some((form, new)));
    assert_eq!(
        (code, body),
        (
            200,
            json!({"status": "ERROR", "error": "Login already in use"})
        )
    );
    let (_, body) = call(
        "POST",
        &base,
        &h,
        Some(("application/json", r#"{"login":"x"}"#)),
    );
    assert_eq!(body["status"], "ERROR", "JSON is not what it takes");

    // By account number and by MAC; the password is never shown.
    for id in ["1000889", "00:1A:79:00:00:01"] {
        let (code, body) = call("GET", &format!("{base}/{id}"), &h, None);
        assert_eq!(code, 200);
        assert_eq!(body["results"][0]["full_name"], "Cascade Dental", "{body}");
        assert!(body["results"][0].get("password").is_none());
    }
    assert_eq!(sim.stalker_accounts()[0]["password"], "s&cret");

    let (_, body) = call(
        "PUT",
        &format!("{base}/1000889"),
        &h,
        Some((form, "status=0&tariff_plan=premium")),
    );
    assert_eq!(body["status"], "OK");
    assert_eq!(sim.stalker_accounts()[0]["status"], "0");
    assert_eq!(sim.stalker_accounts()[0]["tariff_plan"], "premium");
    let (_, body) = call(
        "PUT",
        &format!("{base}/1000889"),
        &h,
        Some((form, "colour=blue")),
    );
    assert_eq!(body["status"], "ERROR", "unknown fields are refused");

    let (_, body) = call("DELETE", &format!("{base}/1000889"), &h, None);
    assert_eq!(body["status"], "OK");
    assert!(sim.stalker_accounts().is_empty());
}

#[test]
fn sim_cards_are_found_by_account_imsi_or_iccid() {
    let sim = Sim::start("127.0.0.1:0", SimConfig::default()).unwrap();
    let login = crate::harness::post(
        &format!("{}/rest/Session/login", sim.url()),
        None,
        r#"{"params":{"login":"espfd","password":"espfd-password"}}"#,
    );
    let token: Value = serde_json::from_str(&login.1).unwrap();
    let bearer = format!("Bearer {}", token["access_token"].as_str().unwrap());
    let pb = |method: &str, params: &str| -> Value {
        let (code, body) = crate::harness::post(
            &format!("{}/rest/SIMCard/{method}", sim.url()),
            Some(&bearer),
            &format!(r#"{{"params":{params}}}"#),
        );
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    };
    let list = pb("get_card_list", r#"{"i_account": 277147}"#);
    assert_eq!(list["card_list"][0]["imsi"], "250991234567890");
    assert_eq!(list["card_list"].as_array().unwrap().len(), 1);
    assert_eq!(
        pb("get_card_list", r#"{"i_account": 1}"#)["card_list"],
        json!([])
    );
    assert_eq!(
        pb("get_card_list", r#"{"imsi": "250991234567891"}"#)["card_list"][0]["i_account"],
        2984
    );
    assert_eq!(
        pb("get_card_info", r#"{"iccid": "8970199123456789014"}"#)["card_info"]["status"],
        "available"
    );
    assert_eq!(
        pb("get_card_info", r#"{"i_sim_card": 9001}"#)["card_info"]["msisdn"],
        "79123456789"
    );
    assert_eq!(pb("get_card_info", r#"{"imsi": "0"}"#), json!({}));
}

#[test]
fn dataverse_issues_client_credentials_tokens_and_upserts_by_alternate_key() {
    use espfd::sim::{DATAVERSE_CLIENT_ID, DATAVERSE_CLIENT_SECRET};
    use espfd::util::{base64_encode, form_encode};
    let sim = Sim::start("127.0.0.1:0", SimConfig::default()).unwrap();
    let token_url = format!("{}/oauth/contoso/oauth2/v2.0/token", sim.url());
    let form = "application/x-www-form-urlencoded";
    let grant = "grant_type=client_credentials&scope=https%3A%2F%2Forg.crm.dynamics.com%2F.default";

    // RFC 6749 §2.3.1: id and secret form-urlencoded, then Basic.
    let basic_client = format!(
        "Basic {}",
        base64_encode(
            format!(
                "{}:{}",
                form_encode(DATAVERSE_CLIENT_ID),
                form_encode(DATAVERSE_CLIENT_SECRET)
            )
            .as_bytes()
        )
    );
    let (code, tok) = call(
        "POST",
        &token_url,
        &[("Authorization", basic_client.as_str())],
        Some((form, grant)),
    );
    assert_eq!(code, 200, "{tok}");
    assert_eq!(tok["token_type"], "Bearer");
    assert_eq!(tok["expires_in"], 3600);
    // The same secret unencoded in the header is wrong (its ':' splits it).
    let raw = format!(
        "Basic {}",
        base64_encode(format!("{DATAVERSE_CLIENT_ID}:{DATAVERSE_CLIENT_SECRET}").as_bytes())
    );
    let (code, body) = call(
        "POST",
        &token_url,
        &[("Authorization", raw.as_str())],
        Some((form, grant)),
    );
    assert_eq!((code, body), (401, json!({"error": "invalid_client"})));
    // client_secret_post.
    let post = format!(
        "{grant}&client_id={}&client_secret={}",
        form_encode(DATAVERSE_CLIENT_ID),
        form_encode(DATAVERSE_CLIENT_SECRET)
    );
    assert_eq!(call("POST", &token_url, &[], Some((form, &post))).0, 200);
    let (code, body) = call("POST", &token_url, &[], Some((form, "grant_type=password")));
    assert_eq!(
        (code, body["error"].clone()),
        (400, json!("unsupported_grant_type"))
    );
    assert_eq!(sim.oauth_tokens_issued(), 2);

    let bearer = format!("Bearer {}", tok["access_token"].as_str().unwrap());
    let h = [("Authorization", bearer.as_str())];
    let contact = format!(
        "{}/dataverse/api/data/v9.2/contacts(espfd_iaccount=1000889)",
        sim.url()
    );
    let json_ct = "application/json";
    assert_eq!(call("PATCH", &contact, &[], Some((json_ct, "{}"))).0, 401);
    let update_only = [("Authorization", bearer.as_str()), ("If-Match", "*")];
    assert_eq!(
        call(
            "PATCH",
            &contact,
            &update_only,
            Some((json_ct, r#"{"lastname":"x"}"#))
        )
        .0,
        404
    );
    assert_eq!(
        call(
            "PATCH",
            &contact,
            &h,
            Some((json_ct, r#"{"lastname":"Lopez","telephone1":"1"}"#))
        )
        .0,
        204
    );
    assert_eq!(
        call(
            "PATCH",
            &contact,
            &update_only,
            Some((json_ct, r#"{"telephone1":"2"}"#))
        )
        .0,
        204
    );
    let create_only = [("Authorization", bearer.as_str()), ("If-None-Match", "*")];
    assert_eq!(
        call("PATCH", &contact, &create_only, Some((json_ct, "{}"))).0,
        412
    );
    let (code, record) = call("GET", &contact, &h, None);
    assert_eq!(
        (code, record),
        (200, json!({"lastname": "Lopez", "telephone1": "2"}))
    );
    assert_eq!(
        sim.dataverse_records("contacts")[0].0,
        "espfd_iaccount=1000889"
    );
    let quoted = format!(
        "{}/dataverse/api/data/v9.2/contacts(emailaddress1='o''brien%40example.com')",
        sim.url()
    );
    assert_eq!(call("PATCH", &quoted, &h, Some((json_ct, "{}"))).0, 204);
    assert!(sim
        .dataverse_records("contacts")
        .iter()
        .any(|(k, _)| k == "emailaddress1=o'brien@example.com"));

    sim.revoke_oauth_tokens();
    assert_eq!(call("GET", &contact, &h, None).0, 401);
    let (_, tok) = call("POST", &token_url, &[], Some((form, &post)));
    let bearer = format!("Bearer {}", tok["access_token"].as_str().unwrap());
    assert_eq!(
        call(
            "DELETE",
            &contact,
            &[("Authorization", bearer.as_str())],
            None
        )
        .0,
        204
    );
    assert_eq!(
        call("GET", &contact, &[("Authorization", bearer.as_str())], None).0,
        404
    );
}

/// A CAI3G request envelope, as a client writes it (its own prefixes).
fn soap(session: Option<&str>, body: &str) -> String {
    let header = session
        .map(|s| format!("<soapenv:Header><cai3:SessionId>{s}</cai3:SessionId></soapenv:Header>"))
        .unwrap_or_default();
    format!(
        r#"<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:cai3="http://schemas.ericsson.com/cai3g1.2/">{header}<soapenv:Body>{body}</soapenv:Body></soapenv:Envelope>"#
    )
}

#[test]
fn cai3g_logs_in_and_creates_sets_gets_deletes_subscribers_with_soap_faults() {
    use espfd::sim::{CAI3G_PASSWORD, CAI3G_USER};
    let sim = Sim::start("127.0.0.1:0", SimConfig::default()).unwrap();
    let url = format!("{}/CAI3G1.2/services/CAI3G1.2", sim.url());
    let xml = "text/xml; charset=utf-8";
    let op = |action: &str, body: String| -> (u16, String) {
        let (code, v) = call(
            "POST",
            &url,
            &[("SOAPAction", &format!("\"CAI3G#{action}\""))],
            Some((xml, &body)),
        );
        (code, v.as_str().unwrap_or_default().to_string())
    };
    let (code, text) = op("Login", soap(None, &format!("<cai3:Login><cai3:userId>{CAI3G_USER}</cai3:userId><cai3:pwd>wrong</cai3:pwd></cai3:Login>")));
    assert_eq!(code, 500);
    assert!(text.contains("Fault") && text.contains(">3001<"), "{text}");
    let (code, text) = op("Login", soap(None, &format!("<cai3:Login><cai3:userId>{CAI3G_USER}</cai3:userId><cai3:pwd>{CAI3G_PASSWORD}</cai3:pwd></cai3:Login>")));
    assert_eq!(code, 200, "{text}");
    let session = text
        .split("sessionId>")
        .nth(1)
        .unwrap()
        .trim_end_matches("</cai3:")
        .to_string();
    assert_eq!(sim.cai3g_logins(), 1);

    let mo = |verb: &str, attrs: &str| {
        format!("<cai3:{verb}><cai3:MOType>SubscriberData@http://schemas.ericsson.com/pg/hlr/13.5/</cai3:MOType><cai3:MOId><msisdn>46701234567</msisdn></cai3:MOId><cai3:MOAttributes>{attrs}</cai3:MOAttributes></cai3:{verb}>")
    };
    let (code, text) = op("Create", soap(None, &mo("Create", "")));
    assert_eq!(code, 500);
    assert!(text.contains(">1001<"), "no session: {text}");
    let (code, _) = op("Set", soap(Some(&session), &mo("Set", "<imsi>1</imsi>")));
    assert_eq!(code, 500, "Set of an unknown subscriber");
    assert_eq!(
        op(
            "Create",
            soap(
                Some(&session),
                &mo("Create", "<imsi>240991234567890</imsi>")
            )
        )
        .0,
        200
    );
    let (code, text) = op("Create", soap(Some(&session), &mo("Create", "")));
    assert_eq!(code, 500);
    assert!(text.contains(">4001<"), "{text}");
    assert_eq!(
        op(
            "Set",
            soap(Some(&session), &mo("Set", "<imsi>240991234567891</imsi>"))
        )
        .0,
        200
    );
    let (code, text) = op("Get", soap(Some(&session), &mo("Get", "")));
    assert_eq!(code, 200);
    assert!(text.contains("<imsi>240991234567891</imsi>"), "{text}");
    assert_eq!(
        sim.cai3g_subscribers(),
        vec![(
            "46701234567".to_string(),
            "<imsi>240991234567891</imsi>".to_string()
        )]
    );

    sim.end_cai3g_sessions();
    assert!(op("Get", soap(Some(&session), &mo("Get", "")))
        .1
        .contains(">1001<"));
}
