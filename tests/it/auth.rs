//! The signature scheme over real sockets: the documented example inputs, signatures made
//! now, and every way a request can be refused; plus the debug line an operator reads.

use espfd::sim::{Sim, SimConfig};
use espfd::util::{base64_encode, format_http_date, now_ms};
use ring::hmac;

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use crate::harness::Espfd;
use crate::harness::{account_event, agent, basic, metric, sim_env, Harness, TempDir, USER};
use crate::support::read_reply;

const KEY_ID: &str = "test";
const KEY: &str = "signature";

/// HMAC-SHA1 of `text` with `key`, base64 with padding: what ESPF would send.
fn sign(key: &str, text: &str) -> String {
    let k = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, key.as_bytes());
    base64_encode(hmac::sign(&k, text.as_bytes()).as_ref())
}

fn header(key_id: &str, signature: &str) -> String {
    format!("Signature keyId=\"{key_id}\",algorithm=\"hmac-sha1\",signature=\"{signature}\"")
}

fn signature_harness(max_skew: &str) -> Harness {
    Harness::with(|raw| {
        raw.set("ESPFD_AUTH", "signature")
            .set("ESPFD_AUTH_KEY_ID", KEY_ID)
            .set("ESPFD_AUTH_KEY", KEY)
            .set("ESPFD_AUTH_MAX_SKEW", max_skew);
    })
}

/// POSTs an event with the given Authorization and Date headers; returns the reply status
/// and its WWW-Authenticate header.
fn post(
    h: &Harness,
    i_event: i64,
    authorization: Option<&str>,
    date: Option<&str>,
) -> (u16, Option<String>) {
    let mut req = agent()
        .post(&h.url())
        .header("Content-Type", "application/json");
    if let Some(a) = authorization {
        req = req.header("Authorization", a);
    }
    if let Some(d) = date {
        req = req.header("Date", d);
    }
    let resp = req
        .send(account_event("Subscriber/Updated", i_event, 1000889).as_str())
        .unwrap();
    let challenge = resp
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    (resp.status().as_u16(), challenge)
}

fn now_date(offset_secs: i64) -> String {
    format_http_date(now_ms() / 1000 + offset_secs)
}

#[test]
fn documented_inputs_verify_in_both_constructions_padded_and_unpadded() {
    const DATE: &str = "Thu, 12 Apr 2018 15:24:00 GMT";
    // The test's own signer agrees with the computed vectors (espf-protocol.md, 2.3).
    assert_eq!(
        sign(KEY, &format!("date: {DATE}")),
        "FHkFy/8bwxnoZGvTkmt8VqSBeSA="
    );
    assert_eq!(sign(KEY, DATE), "48+LtGkLvCsislw4FDSVCPirks8=");
    // That Date is years old: a skew of 100 000 days lets it through.
    let h = signature_harness("100000d");
    for (i, sig) in [
        "FHkFy/8bwxnoZGvTkmt8VqSBeSA=",
        "FHkFy/8bwxnoZGvTkmt8VqSBeSA",
        "48+LtGkLvCsislw4FDSVCPirks8=",
        "48+LtGkLvCsislw4FDSVCPirks8",
    ]
    .into_iter()
    .enumerate()
    {
        let (status, _) = post(&h, 10 + i as i64, Some(&header(KEY_ID, sig)), Some(DATE));
        assert_eq!(status, 200, "{sig}");
    }
    // `Date: ...` with a capital D is none of the accepted constructions.
    let (status, _) = post(
        &h,
        20,
        Some(&header(KEY_ID, "uNY5c/8zhWNxX5iIpYqgAKzDQaA=")),
        Some(DATE),
    );
    assert_eq!(status, 401);
    assert_eq!(h.reader().total_count().unwrap(), 4);
}

#[test]
fn signatures_made_now_are_accepted_and_every_bad_one_gets_401() {
    let h = signature_harness("300");
    let date = now_date(0);
    let cavage = sign(KEY, &format!("date: {date}"));
    let bare = sign(KEY, &date);
    let unpadded = cavage.trim_end_matches('=').to_string();
    assert_ne!(unpadded, cavage, "a SHA-1 HMAC in base64 ends in padding");
    for (i, sig) in [&cavage, &bare, &unpadded].into_iter().enumerate() {
        assert_eq!(
            post(&h, 1 + i as i64, Some(&header(KEY_ID, sig)), Some(&date)).0,
            200
        );
    }
    // Within the skew either way.
    for (i, off) in [-200, 200].into_iter().enumerate() {
        let d = now_date(off);
        let sig = sign(KEY, &format!("date: {d}"));
        assert_eq!(
            post(&h, 5 + i as i64, Some(&header(KEY_ID, &sig)), Some(&d)).0,
            200
        );
    }

    let stale = now_date(-600);
    let future = now_date(600);
    let refused: Vec<(&str, Option<String>, Option<String>)> = vec![
        (
            "wrong key",
            Some(header(
                KEY_ID,
                &sign("another key", &format!("date: {date}")),
            )),
            Some(date.clone()),
        ),
        (
            "wrong keyId",
            Some(header("other", &cavage)),
            Some(date.clone()),
        ),
        (
            "wrong scheme",
            Some(format!("Basic {cavage}")),
            Some(date.clone()),
        ),
        (
            "signature of another Date",
            Some(header(KEY_ID, &cavage)),
            Some(now_date(-30)),
        ),
        ("missing Date", Some(header(KEY_ID, &cavage)), None),
        (
            "stale Date",
            Some(header(KEY_ID, &sign(KEY, &format!("date: {stale}")))),
            Some(stale.clone()),
        ),
        (
            "future Date beyond the skew",
            Some(header(KEY_ID, &sign(KEY, &format!("date: {future}")))),
            Some(future.clone()),
        ),
        (
            "other algorithm",
            Some(header(KEY_ID, &cavage).replace("hmac-sha1", "hmac-sha256")),
            Some(date.clone()),
        ),
        ("no Authorization", None, Some(date.clone())),
    ];
    for (i, (case, auth, d)) in refused.iter().enumerate() {
        let (status, challenge) = post(&h, 100 + i as i64, auth.as_deref(), d.as_deref());
        assert_eq!(status, 401, "{case}");
        assert_eq!(
            challenge.as_deref(),
            Some("Signature realm=\"espfd\",headers=\"date\""),
            "{case}"
        );
    }
    assert_eq!(
        h.reader().total_count().unwrap(),
        5,
        "nothing stored for refused requests"
    );
}

#[test]
fn signature_without_key_is_a_configuration_error() {
    let sim = Sim::start("127.0.0.1:0", SimConfig::default()).unwrap();
    let state = TempDir::new("sigcfg");
    let mut raw = crate::harness::raw_config(&sim, &state);
    raw.set("ESPFD_AUTH", "signature");
    assert_eq!(raw.validate().unwrap_err().var, "ESPFD_AUTH_KEY_ID");
    raw.set("ESPFD_AUTH_KEY_ID", KEY_ID);
    assert_eq!(raw.validate().unwrap_err().var, "ESPFD_AUTH_KEY");
    raw.set("ESPFD_AUTH_KEY", KEY)
        .set("ESPFD_AUTH_MAX_SKEW", "soon");
    assert_eq!(raw.validate().unwrap_err().var, "ESPFD_AUTH_MAX_SKEW");
}

#[test]
fn debug_log_shows_the_signing_strings_tried_but_never_the_key_or_expected_signature() {
    const SECRET: &str = "k3y-Zq9-never-logged";
    let sim = Sim::start("127.0.0.1:0", SimConfig::default()).unwrap();
    let state = TempDir::new("siglog");
    let mut env: Vec<(&str, String)> = sim_env(&sim, &state)
        .into_iter()
        .filter(|(k, _)| *k != "ESPFD_LISTEN")
        .collect();
    env.push(("ESPFD_AUTH", "signature".into()));
    env.push(("ESPFD_AUTH_KEY_ID", KEY_ID.into()));
    env.push(("ESPFD_AUTH_KEY", SECRET.into()));
    env.push(("RUST_LOG", "espfd=debug".into()));
    let d = Espfd::spawn(&env, None);
    let url = format!("http://{}/events", d.addr);
    let send = |auth: &str, date: &str, i_event: i64| {
        agent()
            .post(&url)
            .header("Authorization", auth)
            .header("Date", date)
            .send(account_event("Subscriber/Updated", i_event, 1000889).as_str())
            .unwrap()
            .status()
            .as_u16()
    };
    let date = now_date(0);
    let good = sign(SECRET, &format!("date: {date}"));
    let wrong = sign("what ESPF might use", &format!("date: {date}"));
    assert_eq!(send(&header(KEY_ID, &wrong), &date, 1), 401);
    assert_eq!(send(&header(KEY_ID, &good), &date, 2), 200);
    let log = d.log();
    let tried = format!("\"date: {date}\"");
    assert!(
        log.matches(&tried).count() >= 2 && log.contains(&format!("\"{date}\"")),
        "{log}"
    );
    assert!(log.contains("none matched"), "{log}");
    assert!(log.contains("matched the cavage default"), "{log}");
    assert!(!log.contains(SECRET), "the key was logged:\n{log}");
    for expected in [&good, &sign(SECRET, &date)] {
        assert!(
            !log.contains(expected.as_str()),
            "an expected signature was logged:\n{log}"
        );
    }
}

#[test]
fn a_flood_of_wrong_credentials_is_counted_exactly_and_logged_once_a_second() {
    const WRONG: &str = "Wr0ng-flood-pw";
    const TOKEN: &str = "cb-token-flood-test";
    let sim = Sim::start("127.0.0.1:0", SimConfig::default()).unwrap();
    let state = TempDir::new("authflood");
    let mut env: Vec<(&str, String)> = sim_env(&sim, &state)
        .into_iter()
        .filter(|(k, _)| *k != "ESPFD_LISTEN")
        .collect();
    env.push(("ESPFD_CALLBACK_TOKEN", TOKEN.into()));
    env.push(("RUST_LOG", "info".into()));
    let d = Espfd::spawn(&env, None);
    let wrong = basic(USER, WRONG);
    let body = account_event("Subscriber/Updated", 1, 1000889);
    const CONNS: usize = 4;
    const EACH: usize = 500;
    const EARLY: usize = 50;
    let addr = d.addr;
    let senders: Vec<_> = (0..CONNS)
        .map(|_| {
            let (wrong, body) = (wrong.clone(), body.clone());
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(addr).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let req = format!(
                    "POST /events HTTP/1.1\r\nHost: x\r\nAuthorization: {wrong}\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                for _ in 0..EACH {
                    s.write_all(req.as_bytes()).unwrap();
                    assert_eq!(read_reply(&mut s).expect("a reply").0, 401);
                }
            })
        })
        .collect();
    for s in senders {
        s.join().unwrap();
    }
    // Refused before the body is asked for (Expect: 100-continue): counted the same.
    for _ in 0..EARLY {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            s,
            "POST /events HTTP/1.1\r\nHost: x\r\nAuthorization: {wrong}\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .unwrap();
        assert_eq!(read_reply(&mut s).expect("a reply").0, 401);
    }
    // A completion callback with the wrong bearer token.
    for i in 0..3 {
        let status = agent()
            .post(&format!("http://{addr}/events/{i}/status"))
            .header("Authorization", "Bearer not-the-token")
            .send("{\"status\":\"OK\"}")
            .unwrap()
            .status()
            .as_u16();
        assert_eq!(status, 401);
    }
    // The lines left out are counted in the next one logged, a second or more later.
    let mut extra = 0;
    let url = format!("http://{addr}/events");
    let counted = crate::harness::eventually(Duration::from_secs(10), || {
        extra += 1;
        assert_eq!(crate::harness::post(&url, Some(&wrong), &body).0, 401);
        std::thread::sleep(Duration::from_millis(100));
        d.log().contains("more like it not logged)")
    });
    assert!(
        counted,
        "no line with the count of those left out:\n{}",
        d.log()
    );
    let n = (CONNS * EACH + EARLY + extra) as f64;
    assert_eq!(
        metric(addr, "espfd_auth_failures_total{endpoint=\"events\"}"),
        n
    );
    assert_eq!(metric(addr, "espfd_events_received_total{code=\"401\"}"), n);
    assert_eq!(
        metric(addr, "espfd_auth_failures_total{endpoint=\"callback\"}"),
        3.0
    );

    let log = d.log();
    let lines = log
        .lines()
        .filter(|l| l.contains("event from") && l.contains("refused"))
        .count();
    assert!(lines >= 1, "the first failure is logged:\n{log}");
    // One line a second: the flood took well under N/20 seconds on any machine this runs
    // on; even a very slow one (N/20 s = 100+ s) would have failed other tests long before.
    assert!(
        lines * 20 < n as usize,
        "{lines} log lines for {n} failures:\n{}",
        &log[..log.len().min(4000)]
    );
    assert!(!log.contains(WRONG), "the wrong password was logged");
    assert!(!log.contains(&wrong), "the Authorization header was logged");
}
