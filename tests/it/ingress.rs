//! Every row of the ingress reply table (README, "What espfd answers ESPF").

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use espfd::http::Limits;
use espfd::ingress::{Health, InboundAuth, Ingress};
use espfd::metrics::Metrics;
use espfd::portabilling::PbClient;
use espfd::sim::{Sim, SimConfig};
use espfd::store::Store;

use crate::harness::{
    account_event, agent, basic, post, raw_config, Harness, TempDir, Test, PASSWORD, USER,
};

#[test]
fn valid_event_is_stored_before_200_and_repeat_is_200_without_second_row() {
    let h = Harness::start();
    let body = account_event("Subscriber/Created", 7615, 1000889);
    let (code, text) = h.post(&body);
    assert_eq!((code, text.trim()), (200, "OK"));
    // The 200 came after the commit: a fresh read connection sees the row at once.
    let row = h
        .reader()
        .get(7615)
        .unwrap()
        .expect("stored before the 200");
    assert_eq!(row.event_type, "Subscriber/Created");
    assert_eq!(row.entity, "account:1000889");

    let (code, _) = h.post(&body);
    assert_eq!(code, 200);
    assert_eq!(h.reader().total_count().unwrap(), 1);
}

#[test]
fn bad_credentials_get_401_with_basic_challenge() {
    let h = Harness::start();
    let body = account_event("Subscriber/Created", 1, 1000889);
    for auth in [
        None,
        Some(basic(USER, "wrong")),
        Some(basic("other", PASSWORD)),
        Some("Plain passexample".to_string()),
        Some("SingleLine".to_string()),
    ] {
        let mut req = agent()
            .post(&h.url())
            .header("Content-Type", "application/json");
        if let Some(a) = &auth {
            req = req.header("Authorization", a);
        }
        let resp = req.send(body.as_str()).unwrap();
        assert_eq!(resp.status().as_u16(), 401, "{auth:?}");
        assert_eq!(
            resp.headers()
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok()),
            Some("Basic realm=\"espfd\"")
        );
    }
    assert_eq!(
        h.reader().total_count().unwrap(),
        0,
        "nothing stored for refused requests"
    );
}

#[test]
fn custom_auth_accepts_the_configured_value_only() {
    let h = Test::new()
        .env("ESPFD_AUTH", "custom")
        .env("ESPFD_AUTH_CUSTOM", "Plain passexample")
        .start();
    let body = account_event("Subscriber/Created", 2, 1000889);
    assert_eq!(post(&h.url(), Some("Plain passexample"), &body).0, 200);
    assert_eq!(post(&h.url(), Some("Plain passexamplE"), &body).0, 401);
    assert_eq!(post(&h.url(), Some(&basic(USER, PASSWORD)), &body).0, 401);
}

#[test]
fn invalid_bodies_get_400_with_a_reason_and_change_nothing() {
    let h = Harness::start();
    let cases = [
        ("NotAJsonBody", "not JSON"),
        ("{}", "event_type is missing"),
        (r#"{"variables":{}}"#, "event_type is missing"),
        (r#"{"event_type":""}"#, "event_type is empty"),
        (r#"{"event_type":"Subscriber/Created","variables":{"i_account":5}}"#, "i_event is missing"),
        (r#"{"event_type":"Subscriber/Created","variables":{"i_event":"x1"}}"#, "i_event is not"),
        (r#"{"event_type":"Subscriber/Created","variables":{"i_event":1,"i_account":true}}"#, "i_account is not"),
        // 0 and below are espfd's own (espfd reconcile numbers its events from -1 down).
        (r#"{"event_type":"Subscriber/Created","variables":{"i_event":0,"i_account":5}}"#, "i_event is not a positive integer"),
        (r#"{"event_type":"Subscriber/Created","variables":{"i_event":-1,"i_account":5}}"#, "i_event is not a positive integer"),
        (r#"{"event_type":"Reconcile/Account","variables":{"i_event":"-2","i_account":5}}"#, "i_event is not a positive integer"),
        ("{\"event_type\": \"Subscriber/Updated\",\n\"variables\": {\n\"i_event\": \"5\"\n\"i_account\": \"1000889\"\n}\n}", "not JSON"),
    ];
    for (body, reason) in cases {
        let (code, text) = h.post(body);
        assert_eq!(code, 400, "{body}");
        assert!(text.contains(reason), "{body} -> {text}");
        assert_eq!(text.trim().lines().count(), 1, "one-line reason: {text}");
    }
    assert_eq!(h.reader().total_count().unwrap(), 0);
}

#[test]
fn string_ids_and_unknown_types_and_variables_are_accepted_and_kept() {
    let h = Harness::start();
    let body = r#"{"event_type":"Account/Something/New","variables":{"i_event":"77","i_account":"1000889","curr_status":"used","extra":{"x":[1,2]}}}"#;
    assert_eq!(h.post(body).0, 200);
    let row = h.reader().get(77).unwrap().unwrap();
    assert_eq!(row.body, body, "the body is kept as it came");
    h.wait_finished(&[77], Duration::from_secs(10));
    let call = h
        .sim
        .target_calls()
        .into_iter()
        .find(|c| c.doc["i_event"] == 77)
        .unwrap();
    assert_eq!(call.doc["variables"]["curr_status"], "used");
    assert_eq!(call.doc["variables"]["extra"]["x"][1], 2);
}

#[test]
fn oversized_body_gets_413() {
    let h = Harness::start();
    let big = format!(
        r#"{{"event_type":"X/Y","variables":{{"i_event":1,"pad":"{}"}}}}"#,
        "a".repeat(70_000)
    );
    assert_eq!(h.post(&big).0, 413);
    assert_eq!(h.reader().total_count().unwrap(), 0);
}

#[test]
fn wrong_method_405_unknown_path_404_healthz_200() {
    let h = Harness::start();
    let resp = agent().get(&h.url()).call().unwrap();
    assert_eq!(resp.status().as_u16(), 405);
    assert_eq!(
        resp.headers().get("allow").and_then(|v| v.to_str().ok()),
        Some("POST")
    );
    let (code, _) = post(
        &format!("{}/nope", h.base()),
        Some(&basic(USER, PASSWORD)),
        "{}",
    );
    assert_eq!(code, 404);
    let mut resp = agent()
        .get(&format!("{}/healthz", h.base()))
        .call()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.body_mut().read_to_string().unwrap().trim(), "ok");
}

#[test]
fn store_unavailable_gets_503_with_retry_after() {
    // An ingress whose store writer has stopped: the store cannot take the event.
    let dir = TempDir::new("closed");
    let (store, writer) = Store::open(&dir.0, 1).unwrap();
    writer.join();
    let sim = Sim::start("127.0.0.1:0", SimConfig::default()).unwrap();
    let config = raw_config(&sim, &dir).validate().unwrap();
    let pb = Arc::new(PbClient::new(&config.pb).unwrap());
    let metrics = Arc::new(Metrics::new());
    let ingress = Ingress {
        events_path: "/events".into(),
        auth: InboundAuth::None,
        event_types: config.event_types.clone(),
        store: store.clone(),
        wakers: espfd::pipeline::Wakers::unconnected(1),
        observer: None,
        callback_token: None,
        health: Health::new(store.clone(), pb, metrics.clone()),
        metrics,
    };
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let server = espfd::http::serve(listener, Limits::default(), Arc::new(ingress)).unwrap();
    let url = format!("http://{}/events", server.local_addr());
    let resp = agent()
        .post(&url)
        .header("Content-Type", "application/json")
        .send(account_event("Subscriber/Created", 1, 1).as_str())
        .unwrap();
    assert_eq!(resp.status().as_u16(), 503);
    assert!(resp.headers().get("retry-after").is_some());
}

#[test]
fn connections_beyond_the_limit_get_a_quick_503() {
    let h = Test::new().env("ESPFD_MAX_CONNECTIONS", "2").start();
    let addr = h.service.as_ref().unwrap().local_addr();
    // Two connections in the middle of a request hold both slots (idle ones would be closed
    // to make room: limits.rs).
    let busy = || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(b"POST /events HTTP/1.1\r\nHost: x\r\n")
            .unwrap();
        s
    };
    let _a = busy();
    let _b = busy();
    std::thread::sleep(Duration::from_millis(100));
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut reply = String::new();
    let _ = c.read_to_string(&mut reply);
    assert!(reply.starts_with("HTTP/1.1 503"), "{reply}");
    assert!(reply.contains("Retry-After"), "{reply}");
    drop((_a, _b));
    // Slots free up again once those connections close.
    assert!(crate::harness::eventually(Duration::from_secs(3), || {
        let mut s = TcpStream::connect(addr).unwrap();
        let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let mut r = String::new();
        let _ = s.read_to_string(&mut r);
        r.starts_with("HTTP/1.1 200")
    }));
}
