//! The example templates of `contrib/templates/`, each run end to end (create, update,
//! delete) against the simulator's fake of the system it speaks, exactly as shipped: only
//! the variables of its header block are changed, to point at the simulator.

use std::path::{Path, PathBuf};
use std::time::Duration;

use espfd::sim::{
    Sim, SimConfig, CAI3G_PASSWORD, CAI3G_USER, DATAVERSE_CLIENT_ID, DATAVERSE_CLIENT_SECRET,
    PYHSS_PROVISIONING_KEY, STALKER_PASSWORD, STALKER_USER,
};
use espfd::store::StoredEvent;
use serde_json::{json, Value};

use crate::harness::{account_event, agent, basic, Harness, TempDir, Test};

/// Every example, by its template file.
const EXAMPLES: [&str; 5] = [
    "pyhss.http",
    "cai3g.http",
    "espfd-document.http",
    "stalker.http",
    "dataverse.http",
];

fn shipped(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("contrib/templates")
        .join(name)
}

/// The `# ESPFD_NAME=value` lines of an example's header comment.
fn header_block(name: &str) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(shipped(name)).unwrap();
    text.lines()
        .take_while(|l| l.starts_with('#'))
        .filter_map(|l| l.strip_prefix("# ESPFD_"))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (format!("ESPFD_{k}"), v.to_string()))
        .collect()
}

/// The names `f("NAME")` in `text`, for f = `setting` or `secret`.
fn names_read(text: &str, f: &str) -> Vec<String> {
    let call = format!("{f}(\"");
    text.match_indices(&call)
        .map(|(at, _)| {
            let rest = &text[at + call.len()..];
            rest[..rest.find('"').unwrap()].to_string()
        })
        .collect()
}

/// The template's text and that of every `< file` body it names.
fn all_text(name: &str) -> String {
    let mut text = std::fs::read_to_string(shipped(name)).unwrap();
    let bodies: Vec<String> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("< "))
        .map(str::to_string)
        .collect();
    for b in bodies {
        text.push_str(&std::fs::read_to_string(shipped(&b)).unwrap());
    }
    text
}

#[test]
fn every_example_lists_the_variables_it_needs() {
    for name in EXAMPLES {
        let block = header_block(name);
        let has = |k: &str| block.iter().any(|(n, _)| n == k);
        let text = all_text(name);
        let mut wanted: Vec<String> = names_read(&text, "setting")
            .into_iter()
            .map(|n| format!("ESPFD_SETTING_{n}"))
            .chain(
                names_read(&text, "secret")
                    .into_iter()
                    .map(|n| format!("ESPFD_SECRET_{n}")),
            )
            .collect();
        wanted.extend(["ESPFD_TARGET_TEMPLATE".into(), "ESPFD_TARGET_AUTH".into()]);
        for w in &wanted {
            assert!(
                has(w),
                "{name} reads {w} but its header does not list it: {block:?}"
            );
        }
        for (k, v) in &block {
            if k.starts_with("ESPFD_SETTING_") && k.ends_with("_URL")
                || k == "ESPFD_TARGET_OAUTH_URL"
            {
                let authority = v
                    .strip_prefix("https://")
                    .and_then(|r| r.split('/').next())
                    .unwrap_or("");
                let port = authority.rsplit_once(':').map(|(_, p)| p).unwrap_or("");
                // The templates append `/...` to a base URL: it ends without a slash.
                assert!(
                    !port.is_empty()
                        && port.bytes().all(|b| b.is_ascii_digit())
                        && !v.ends_with('/'),
                    "{name}: {k}={v} is not a full https://host:port[/path] URL without a trailing slash"
                );
            }
        }
        let auth = block
            .iter()
            .find(|(k, _)| k == "ESPFD_TARGET_AUTH")
            .map(|(_, v)| v.as_str());
        let needs: &[&str] = match auth {
            Some("basic") => &["ESPFD_TARGET_USER", "ESPFD_TARGET_PASSWORD"],
            Some("oauth2") => &[
                "ESPFD_TARGET_OAUTH_URL",
                "ESPFD_TARGET_OAUTH_CLIENT_ID",
                "ESPFD_TARGET_OAUTH_CLIENT_SECRET",
            ],
            Some("none") => &[],
            other => panic!("{name}: ESPFD_TARGET_AUTH={other:?}"),
        };
        for n in needs {
            assert!(has(n), "{name}: {n} missing for ESPFD_TARGET_AUTH={auth:?}");
        }
    }
}

/// The variables to run `name` against `sim`: its header block, with each base URL
/// replaced by the fake's and `overrides` on top. Authentication variables whose value is
/// `none` are left out (the default).
fn example_env(name: &str, overrides: &[(&str, String)]) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = header_block(name)
        .into_iter()
        .filter(|(k, v)| !(k == "ESPFD_TARGET_AUTH" && v == "none"))
        .collect();
    env.retain(|(k, _)| k != "ESPFD_TARGET_TEMPLATE");
    env.push((
        "ESPFD_TARGET_TEMPLATE".into(),
        shipped(name).display().to_string(),
    ));
    for (k, v) in overrides {
        assert!(
            env.iter().any(|(n, _)| n == k),
            "{name}'s header does not list {k}"
        );
        env.retain(|(n, _)| n != k);
        env.push((k.to_string(), v.clone()));
    }
    env
}

/// Starts espfd in-process with the example `name` against `sim`.
fn start(sim: Sim, name: &str, overrides: &[(&str, String)]) -> Harness {
    let env = example_env(name, overrides);
    Harness::with_sim(sim, |raw| {
        raw.unset("ESPFD_TARGET_URL");
        for (k, v) in &env {
            raw.set(k, v.clone());
        }
    })
}

/// Posts an event for `i_account`, waits until it is final, and returns the stored row.
fn event(h: &Harness, event_type: &str, i_event: i64, i_account: i64) -> StoredEvent {
    let (code, reply) = h.post(&account_event(event_type, i_event, i_account));
    assert_eq!(code, 200, "{reply}");
    h.wait_finished(&[i_event], Duration::from_secs(20));
    h.reader().get(i_event).unwrap().expect("stored")
}

fn assert_done(row: &StoredEvent) {
    assert_eq!(
        (row.state.to_string(), row.status.as_deref()),
        ("done".to_string(), Some("OK")),
        "{:?}",
        row.message
    );
}

/// `METHOD path` of each request the simulator received under `prefix`, then forgets them.
fn calls(h: &Harness, prefix: &str) -> Vec<String> {
    let calls = h
        .sim
        .requests()
        .iter()
        .filter(|r| r.path.starts_with(prefix))
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    h.sim.clear_records();
    calls
}

#[test]
fn pyhss_creates_updates_and_deletes_the_subscriber() {
    let sim = Sim::start("127.0.0.1:0", SimConfig::default()).unwrap();
    let url = format!("{}/pyhss", sim.url());
    let h = start(
        sim,
        "pyhss.http",
        &[
            ("ESPFD_SETTING_PYHSS_URL", url),
            ("ESPFD_SECRET_PYHSS_KEY", PYHSS_PROVISIONING_KEY.into()),
        ],
    );
    // Account 277147 holds SIM card 9001: IMSI 250991234567890, MSISDN 79123456789.
    let row = event(&h, "Subscriber/Created", 1, 277147);
    assert_done(&row);
    assert_eq!(h.sim.statuses()[0].status, "OK");
    assert_eq!(
        calls(&h, "/pyhss/"),
        [
            "GET /pyhss/subscriber/imsi/250991234567890",
            "PUT /pyhss/subscriber/"
        ]
    );
    let subs = h.sim.pyhss_subscribers();
    assert_eq!(subs.len(), 1);
    let id = subs[0]["subscriber_id"].as_i64().unwrap();
    assert_eq!(
        (&subs[0]["imsi"], &subs[0]["msisdn"], &subs[0]["enabled"]),
        (
            &json!("250991234567890"),
            &json!("79123456789"),
            &json!(true)
        )
    );

    let mut account = account_277147();
    account["blocked"] = json!("Y");
    h.sim.put_account(account);
    assert_done(&event(&h, "Subscriber/Updated", 2, 277147));
    assert_eq!(
        calls(&h, "/pyhss/"),
        [
            "GET /pyhss/subscriber/imsi/250991234567890".to_string(),
            format!("PATCH /pyhss/subscriber/{id}")
        ]
    );
    let subs = h.sim.pyhss_subscribers();
    assert_eq!((subs.len(), &subs[0]["enabled"]), (1, &json!(false)));

    assert_done(&event(&h, "Subscriber/Deleted", 3, 277147));
    assert_eq!(
        calls(&h, "/pyhss/"),
        [
            "GET /pyhss/subscriber/imsi/250991234567890".to_string(),
            format!("DELETE /pyhss/subscriber/{id}")
        ]
    );
    assert!(h.sim.pyhss_subscribers().is_empty());
}

/// Account 277147 of the simulator's fixtures, as `Account/get_account_info` has it.
fn account_277147() -> Value {
    json!({
        "i_account": 277147, "id": "79123456789@msisdn", "i_customer": 6392,
        "product_name": "Mobile residential", "bill_status": "O", "blocked": "N",
        "firstname": "Lee", "lastname": "Park", "email": "", "phone1": "", "companyname": "",
        "h323_password": "Lp0rk-7147",
    })
}

#[test]
fn cai3g_logs_in_then_creates_sets_and_deletes_with_xml_escaping() {
    let sim = Sim::start("127.0.0.1:0", SimConfig::default()).unwrap();
    let mut account = account_277147();
    account["product_name"] = json!("Voice & Data <5G> \"plus\"");
    sim.put_account(account.clone());
    let url = format!("{}/CAI3G1.2/services/CAI3G1.2", sim.url());
    let h = start(
        sim,
        "cai3g.http",
        &[
            ("ESPFD_SETTING_CAI3G_URL", url),
            ("ESPFD_SECRET_CAI3G_USER", CAI3G_USER.into()),
            ("ESPFD_SECRET_CAI3G_PASSWORD", CAI3G_PASSWORD.into()),
        ],
    );
    let actions = |h: &Harness| -> Vec<String> {
        let a = h
            .sim
            .requests_to("/CAI3G1.2/services/CAI3G1.2")
            .iter()
            .map(|r| r.header("soapaction").unwrap_or("").to_string())
            .collect();
        h.sim.clear_records();
        a
    };

    let row = event(&h, "Subscriber/Created", 1, 277147);
    assert_done(&row);
    assert_eq!(
        row.message.as_deref(),
        Some("the HLR has applied the change")
    );
    let sent = h.sim.requests_to("/CAI3G1.2/services/CAI3G1.2");
    assert_eq!(actions(&h), ["CAI3G#Login", "CAI3G#Get", "CAI3G#Create"]);
    let create = &sent[2];
    assert_eq!(
        create.header("content-type"),
        Some("text/xml; charset=utf-8")
    );
    assert!(create.body.starts_with("<?xml"), "{}", create.body);
    let subs = h.sim.cai3g_subscribers();
    assert_eq!(subs.len(), 1);
    let (msisdn, attrs) = &subs[0];
    assert_eq!(msisdn, "79123456789");
    assert!(
        attrs.contains("<hlr:imsi>250991234567890</hlr:imsi>"),
        "{attrs}"
    );
    assert!(
        attrs.contains("<hlr:profile>Voice &amp; Data &lt;5G&gt; &quot;plus&quot;</hlr:profile>"),
        "{attrs}"
    );
    assert_eq!(
        espfd::connector::template::xml_text(attrs, "profile").as_deref(),
        Some("Voice & Data <5G> \"plus\"")
    );
    assert!(attrs.contains("<hlr:obo>0</hlr:obo>"), "{attrs}");

    account["blocked"] = json!("Y");
    h.sim.put_account(account);
    assert_done(&event(&h, "Subscriber/Updated", 2, 277147));
    assert_eq!(actions(&h), ["CAI3G#Login", "CAI3G#Get", "CAI3G#Set"]);
    let subs = h.sim.cai3g_subscribers();
    assert!(subs[0].1.contains("<hlr:obo>1</hlr:obo>"), "{:?}", subs);

    assert_done(&event(&h, "Subscriber/Deleted", 3, 277147));
    assert_eq!(actions(&h), ["CAI3G#Login", "CAI3G#Get", "CAI3G#Delete"]);
    assert!(h.sim.cai3g_subscribers().is_empty());
    assert_eq!(h.sim.cai3g_logins(), 3, "one session per attempt");

    // Deleting again: the HLR has nothing; done, and nothing more is sent.
    let row = event(&h, "Subscriber/Deleted", 4, 277147);
    assert_done(&row);
    assert_eq!(
        row.message.as_deref(),
        Some("the HLR has no such subscriber")
    );
    assert_eq!(actions(&h), ["CAI3G#Login", "CAI3G#Get"]);
}

#[test]
fn espfd_document_sends_what_the_url_connector_sends() {
    // The URL connector's document for an event...
    let by_url = Harness::start();
    assert_done(&event(&by_url, "Subscriber/Updated", 7, 1000889));
    let want = by_url.sim.target_calls()[0].doc.clone();
    assert_eq!(want["i_event"], json!(7), "{want}");

    // ... and the template's, for the same event.
    let sim = Sim::start("127.0.0.1:0", SimConfig::default()).unwrap();
    let target = sim.target_url();
    let h = start(
        sim,
        "espfd-document.http",
        &[("ESPFD_SETTING_TARGET_URL", target)],
    );
    assert_done(&event(&h, "Subscriber/Updated", 7, 1000889));
    let calls = h.sim.target_calls();
    assert_eq!(calls.len(), 1);
    let mut got = calls[0].doc.clone();
    let mut want = want;
    // The times differ between the two runs; everything else is the same.
    for doc in [&mut got, &mut want] {
        let o = doc.as_object_mut().unwrap();
        assert!(o.remove("received_at").is_some(), "{doc}");
    }
    assert_eq!(got, want);
    assert_eq!(calls[0].header("content-type"), Some("application/json"));
    assert_eq!(calls[0].header("idempotency-key"), Some("7"));
}

/// `espfd check` with the example's header block pointed at the simulator: the sample
/// render (an account PortaBilling does not know) and every other check pass.
fn check_passes(name: &str, overrides: &[(&str, String)]) {
    let sim = Sim::start("127.0.0.1:0", SimConfig::default()).unwrap();
    let state = TempDir::new("shipped-check");
    let overrides: Vec<(&str, String)> = overrides
        .iter()
        .map(|(k, v)| (*k, v.replace("{sim}", &sim.url())))
        .collect();
    let mut test = Test::new()
        .args(&["check"])
        .sim_env(&sim, &state)
        .unset("ESPFD_TARGET_URL");
    for (k, v) in example_env(name, &overrides) {
        test = test.env(&k, v);
    }
    let run = test.run();
    let out = run.stdout();
    assert_eq!(
        run.0.status.code(),
        Some(0),
        "{name}:\n{out}{}",
        run.stderr()
    );
    assert!(
        out.lines().any(|l| l.starts_with("ok   template ")
            && l.contains("renders a sample Subscriber/Updated event")),
        "{name}:\n{out}"
    );
    assert!(
        !provisioned_anything(&sim),
        "{name}: check sent a request to the external system"
    );
}

/// Whether anything reached the external system's API on `sim`: PortaBilling, ESPF, OPTIONS
/// probes and the OAuth 2.0 token endpoint (check fetches a token) do not count.
fn provisioned_anything(sim: &Sim) -> bool {
    sim.requests().iter().any(|r| {
        !(r.path.starts_with("/rest/")
            || r.path.starts_with("/espf/")
            || r.path.starts_with("/oauth/")
            || r.method == "OPTIONS")
    })
}

#[test]
fn the_examples_pass_the_sample_render_of_espfd_check() {
    check_passes(
        "pyhss.http",
        &[("ESPFD_SETTING_PYHSS_URL", "{sim}/pyhss".into())],
    );
    check_passes(
        "cai3g.http",
        &[(
            "ESPFD_SETTING_CAI3G_URL",
            "{sim}/CAI3G1.2/services/CAI3G1.2".into(),
        )],
    );
    check_passes(
        "espfd-document.http",
        &[("ESPFD_SETTING_TARGET_URL", "{sim}/target".into())],
    );
}

// The two examples below rely on outbound authentication (`ESPFD_TARGET_AUTH=basic` and
// `oauth2`), which espfd adds to every step not marked `# @no-auth`; the templates carry no
// credentials of their own.

#[test]
fn stalker_creates_updates_and_deletes_the_iptv_account_judged_by_the_body() {
    let sim = Sim::start("127.0.0.1:0", SimConfig::default()).unwrap();
    let url = format!("{}/stalker_portal/api", sim.url());
    let h = start(
        sim,
        "stalker.http",
        &[
            ("ESPFD_SETTING_STALKER_URL", url.clone()),
            ("ESPFD_TARGET_USER", STALKER_USER.into()),
            ("ESPFD_TARGET_PASSWORD", STALKER_PASSWORD.into()),
        ],
    );
    let basic_auth = basic(STALKER_USER, STALKER_PASSWORD);
    let authenticated = |h: &Harness| {
        h.sim
            .requests()
            .iter()
            .filter(|r| r.path.starts_with("/stalker_portal/"))
            .all(|r| r.header("authorization") == Some(basic_auth.as_str()))
    };

    assert_done(&event(&h, "Subscriber/Created", 1, 1000889));
    assert!(authenticated(&h));
    let form = h.sim.requests_to("/stalker_portal/api/accounts")[0].clone();
    assert_eq!(
        form.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(
        calls(&h, "/stalker_portal/"),
        [
            "GET /stalker_portal/api/accounts/1000889",
            "POST /stalker_portal/api/accounts"
        ]
    );
    let accounts = h.sim.stalker_accounts();
    assert_eq!(accounts.len(), 1);
    for (field, want) in [
        ("login", "12065550100"),
        ("account_number", "1000889"),
        ("full_name", "Sam Okafor"),
        ("password", "c4sc4de-0100"),
        ("phone", "12065550100"),
        ("status", "1"),
    ] {
        assert_eq!(accounts[0][field], json!(want), "{field}: {accounts:?}");
    }

    let mut info: Value = json!({
        "i_account": 1000889, "id": "12065550100", "i_customer": 6392, "bill_status": "O",
        "blocked": "Y", "firstname": "Sam", "lastname": "Okafor-Reyes", "phone1": "12065550100",
        "companyname": "Cascade Networks LLC", "h323_password": "c4sc4de-0100",
    });
    h.sim.put_account(info.clone());
    assert_done(&event(&h, "Subscriber/Updated", 2, 1000889));
    assert!(authenticated(&h));
    assert_eq!(
        calls(&h, "/stalker_portal/"),
        [
            "GET /stalker_portal/api/accounts/1000889",
            "PUT /stalker_portal/api/accounts/1000889"
        ]
    );
    let accounts = h.sim.stalker_accounts();
    assert_eq!(
        (
            accounts.len(),
            &accounts[0]["status"],
            &accounts[0]["full_name"]
        ),
        (1, &json!("0"), &json!("Sam Okafor-Reyes"))
    );

    assert_done(&event(&h, "Subscriber/Deleted", 3, 1000889));
    assert_eq!(
        calls(&h, "/stalker_portal/"),
        [
            "GET /stalker_portal/api/accounts/1000889",
            "DELETE /stalker_portal/api/accounts/1000889"
        ]
    );
    assert!(h.sim.stalker_accounts().is_empty());

    // The portal answers 200 {"status": "ERROR"} when the login is taken: FAILED, with its
    // words as the message.
    let taken = post_form(
        &format!("{url}/accounts"),
        &basic_auth,
        "login=12065550100&account_number=555",
    );
    assert_eq!(taken["status"], "OK", "{taken}");
    info["blocked"] = json!("N");
    h.sim.put_account(info);
    let row = event(&h, "Subscriber/Created", 4, 1000889);
    assert_eq!(
        (row.state.to_string(), row.status.as_deref()),
        ("failed".to_string(), Some("FAILED"))
    );
    let message: Value = serde_json::from_str(row.message.as_deref().unwrap()).unwrap();
    assert_eq!(
        message,
        json!({"status": "ERROR", "error": "Login already in use"})
    );
    assert_eq!(row.attempts, 1, "a false @ok-if is permanent");
}

/// POSTs a form with HTTP Basic; returns the JSON reply.
fn post_form(url: &str, authorization: &str, form: &str) -> Value {
    let mut resp = agent()
        .post(url)
        .header("Authorization", authorization)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .send(form)
        .unwrap();
    serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap()
}

#[test]
fn dataverse_upserts_by_alternate_key_with_an_oauth2_token() {
    let sim = Sim::start("127.0.0.1:0", SimConfig::default()).unwrap();
    let base = sim.url();
    let h = start(
        sim,
        "dataverse.http",
        &[
            (
                "ESPFD_SETTING_DATAVERSE_URL",
                format!("{base}/dataverse/api/data/v9.2"),
            ),
            (
                "ESPFD_TARGET_OAUTH_URL",
                format!("{base}/oauth/contoso/oauth2/v2.0/token"),
            ),
            ("ESPFD_TARGET_OAUTH_CLIENT_ID", DATAVERSE_CLIENT_ID.into()),
            (
                "ESPFD_TARGET_OAUTH_CLIENT_SECRET",
                DATAVERSE_CLIENT_SECRET.into(),
            ),
        ],
    );
    let path = "/dataverse/api/data/v9.2/contacts(espfd_iaccount=1000889)";

    assert_done(&event(&h, "Subscriber/Created", 1, 1000889));
    let sent = h.sim.requests_to(path);
    assert_eq!(sent.len(), 1, "{:?}", h.sim.requests());
    assert!(
        sent[0]
            .header("authorization")
            .is_some_and(|a| a.starts_with("Bearer dv.")),
        "{:?}",
        sent[0].headers
    );
    assert_eq!(sent[0].header("content-type"), Some("application/json"));
    assert_eq!(calls(&h, "/dataverse/"), [format!("PATCH {path}")]);
    let records = h.sim.dataverse_records("contacts");
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].0, "espfd_iaccount=1000889");
    assert_eq!(
        records[0].1,
        json!({
            "firstname": "Sam", "lastname": "Okafor",
            "emailaddress1": "frontdesk@cascade.example.com", "telephone1": "12065550100",
            "espfd_blocked": false,
        })
    );

    h.sim.put_account(json!({
        "i_account": 1000889, "id": "12065550100", "i_customer": 6392, "bill_status": "O",
        "blocked": "Y", "firstname": "Sam", "lastname": "O\u{2019}Kafor \"Jr\"",
        "email": "sam@cascade.example.com",
    }));
    assert_done(&event(&h, "Subscriber/Updated", 2, 1000889));
    assert_eq!(calls(&h, "/dataverse/"), [format!("PATCH {path}")]);
    let records = h.sim.dataverse_records("contacts");
    assert_eq!(records.len(), 1, "the same contact, updated");
    assert_eq!(
        (&records[0].1["lastname"], &records[0].1["espfd_blocked"]),
        (&json!("O\u{2019}Kafor \"Jr\""), &json!(true))
    );

    assert_done(&event(&h, "Subscriber/Deleted", 3, 1000889));
    assert_eq!(calls(&h, "/dataverse/"), [format!("DELETE {path}")]);
    assert!(h.sim.dataverse_records("contacts").is_empty());
    // Deleting what is gone is done too (404 is in the step's @ok).
    assert_done(&event(&h, "Subscriber/Deleted", 4, 1000889));
    assert_eq!(h.sim.oauth_tokens_issued(), 1, "one token for every event");
}

#[test]
fn stalker_and_dataverse_pass_the_sample_render_of_espfd_check() {
    check_passes(
        "stalker.http",
        &[
            (
                "ESPFD_SETTING_STALKER_URL",
                "{sim}/stalker_portal/api".into(),
            ),
            ("ESPFD_TARGET_USER", STALKER_USER.into()),
            ("ESPFD_TARGET_PASSWORD", STALKER_PASSWORD.into()),
        ],
    );
    check_passes(
        "dataverse.http",
        &[
            (
                "ESPFD_SETTING_DATAVERSE_URL",
                "{sim}/dataverse/api/data/v9.2".into(),
            ),
            (
                "ESPFD_TARGET_OAUTH_URL",
                "{sim}/oauth/contoso/oauth2/v2.0/token".into(),
            ),
            ("ESPFD_TARGET_OAUTH_CLIENT_ID", DATAVERSE_CLIENT_ID.into()),
            (
                "ESPFD_TARGET_OAUTH_CLIENT_SECRET",
                DATAVERSE_CLIENT_SECRET.into(),
            ),
        ],
    );
}
