//! Outbound authentication and TLS to the target (README, "Outbound authentication and
//! TLS"): what the target receives for each `ESPFD_TARGET_AUTH` scheme, the OAuth 2.0 token's
//! life (one for all events, renewed before expiry and once after a 401, a refusing token
//! endpoint waited out), an HTTPS target behind a private CA and one that requires a client
//! certificate, the configuration errors, and no secret in any log line.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use espfd::pipeline::Step;
use espfd::sim::{Sim, SimConfig, TargetAuth, DATAVERSE_CLIENT_ID};
use espfd::util::{base64_encode, form_decode, form_encode};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, ServerConnection, StreamOwned};

use crate::harness::{
    account_event, basic, eventually, post, Harness, TempDir, Test, PASSWORD, USER,
};
use crate::support::{read_reply, Certs, Key, Leaf};

const WAIT: Duration = Duration::from_secs(20);
/// The fixture account every event here is about.
const ACCOUNT: i64 = 2984;

fn sim() -> Sim {
    Sim::start("127.0.0.1:0", SimConfig::default()).unwrap()
}

/// The fake token endpoint of `sim`.
fn token_url(sim: &Sim) -> String {
    format!("{}/oauth/tenant/oauth2/v2.0/token", sim.url())
}

/// Requests the token endpoint received (granted or not).
fn token_requests(sim: &Sim) -> Vec<espfd::sim::Recorded> {
    sim.requests_to("/oauth/tenant/oauth2/v2.0/token")
}

/// espfd with OAuth 2.0 against `sim`'s token endpoint, client secret `secret`.
fn oauth(sim: &Sim, secret: &str) -> Test {
    Test::new()
        .env("ESPFD_TARGET_AUTH", "oauth2")
        .env("ESPFD_TARGET_OAUTH_URL", token_url(sim))
        .env("ESPFD_TARGET_OAUTH_CLIENT_ID", DATAVERSE_CLIENT_ID)
        .env("ESPFD_TARGET_OAUTH_CLIENT_SECRET", secret)
}

/// Posts one event for [`ACCOUNT`] and waits until it finishes; its final state.
fn deliver(h: &Harness, i_event: i64) -> &'static str {
    assert_eq!(
        h.post(&account_event("Subscriber/Updated", i_event, ACCOUNT))
            .0,
        200
    );
    finished_state(&h.wait_finished(&[i_event], WAIT), i_event)
}

fn finished_state(steps: &[Step], i_event: i64) -> &'static str {
    steps
        .iter()
        .find_map(|s| match s {
            Step::Finished {
                i_event: i, state, ..
            } if *i == i_event => Some(*state),
            _ => None,
        })
        .unwrap()
}

/// The `Authorization` header of each target call for `i_event`, with its status.
fn target_auth(sim: &Sim, i_event: i64) -> Vec<(Option<String>, u16)> {
    sim.target_calls()
        .iter()
        .filter(|c| c.i_event == Some(i_event))
        .map(|c| (c.header("authorization").map(str::to_string), c.status))
        .collect()
}

/// The ESPF statuses reported so far, in order.
fn statuses(sim: &Sim) -> Vec<String> {
    sim.statuses().into_iter().map(|s| s.status).collect()
}

/// Waits for `n` `Retrying` steps of `i_event`; returns the last one's reason.
fn wait_retries(h: &Harness, i_event: i64, n: usize) -> String {
    let mut reasons = Vec::new();
    let deadline = std::time::Instant::now() + WAIT;
    while reasons.len() < n && std::time::Instant::now() < deadline {
        if let Ok(Step::Retrying {
            i_event: i, reason, ..
        }) = h.steps.recv_timeout(Duration::from_millis(50))
        {
            if i == i_event {
                reasons.push(reason);
            }
        }
    }
    assert!(
        reasons.len() >= n,
        "only {} retries: {reasons:?}",
        reasons.len()
    );
    reasons.pop().unwrap()
}

// ---------------------------------------------------------------------------------------------
// Fixed credentials

#[test]
fn basic_auth_reaches_the_target() {
    let sim = sim();
    sim.require_target_auth(TargetAuth::Basic {
        user: "provisioning".into(),
        password: "pa:ss word".into(),
    });
    let h = Test::new()
        .env("ESPFD_TARGET_AUTH", "basic")
        .env("ESPFD_TARGET_USER", "provisioning")
        .env("ESPFD_TARGET_PASSWORD", "pa:ss word")
        .start_on(sim);
    assert_eq!(deliver(&h, 9101), "done");
    assert_eq!(
        target_auth(&h.sim, 9101),
        [(Some(basic("provisioning", "pa:ss word")), 200)]
    );
    assert_eq!(statuses(&h.sim), ["OK"]);
}

#[test]
fn bearer_token_reaches_the_target() {
    let sim = sim();
    sim.require_target_auth(TargetAuth::Bearer("t0k3n-abc".into()));
    let h = Test::new()
        .env("ESPFD_TARGET_AUTH", "bearer")
        .env("ESPFD_TARGET_TOKEN", "t0k3n-abc")
        .start_on(sim);
    assert_eq!(deliver(&h, 9111), "done");
    assert_eq!(
        target_auth(&h.sim, 9111),
        [(Some("Bearer t0k3n-abc".into()), 200)]
    );
    assert_eq!(statuses(&h.sim), ["OK"]);
}

#[test]
fn header_line_reaches_the_target() {
    let sim = sim();
    sim.require_target_auth(TargetAuth::Header("X-API-Key".into(), "abc123".into()));
    let h = Test::new()
        .env("ESPFD_TARGET_AUTH", "header")
        .env("ESPFD_TARGET_HEADER", "X-API-Key: abc123")
        .start_on(sim);
    assert_eq!(deliver(&h, 9121), "done");
    let call = &h.sim.target_calls()[0];
    assert_eq!(call.header("x-api-key"), Some("abc123"));
    assert_eq!(call.header("authorization"), None);
    assert_eq!(statuses(&h.sim), ["OK"]);
}

#[test]
fn without_credentials_the_target_refuses_and_the_event_fails() {
    // The simulated target does check: the tests above could otherwise pass on nothing.
    let sim = sim();
    sim.require_target_auth(TargetAuth::Bearer("t0k3n-abc".into()));
    let h = Test::new()
        .env("ESPFD_TARGET_AUTH", "bearer")
        .env("ESPFD_TARGET_TOKEN", "another-token")
        .start_on(sim);
    assert_eq!(deliver(&h, 9131), "failed");
    assert_eq!(
        target_auth(&h.sim, 9131),
        [(Some("Bearer another-token".into()), 401)]
    );
    assert_eq!(statuses(&h.sim), ["FAILED"]);
}

// ---------------------------------------------------------------------------------------------
// OAuth 2.0

#[test]
fn one_oauth_token_serves_every_event_and_the_secret_is_encoded_per_rfc_6749() {
    let secret = "s+e%c:r et/=";
    let sim = sim();
    sim.set_oauth_client(DATAVERSE_CLIENT_ID, secret);
    sim.require_target_auth(TargetAuth::OAuth);
    let h = oauth(&sim, secret)
        .env(
            "ESPFD_TARGET_OAUTH_SCOPE",
            "https://crm.example.net/.default",
        )
        .start_on(sim);
    for i_event in 9201..9206 {
        assert_eq!(
            h.post(&account_event("Subscriber/Updated", i_event, ACCOUNT))
                .0,
            200
        );
    }
    h.wait_finished(&[9201, 9202, 9203, 9204, 9205], WAIT);

    let requests = token_requests(&h.sim);
    assert_eq!(requests.len(), 1, "one token for five events: {requests:?}");
    assert_eq!(h.sim.oauth_tokens_issued(), 1);
    // RFC 6749 §2.3.1: id and secret form-urlencoded, then joined by ':' for HTTP Basic.
    let pair = format!(
        "{}:{}",
        form_encode(DATAVERSE_CLIENT_ID),
        form_encode(secret)
    );
    assert_eq!(pair, "espfd-client:s%2Be%25c%3Ar+et%2F%3D");
    assert_eq!(
        requests[0].header("authorization"),
        Some(format!("Basic {}", base64_encode(pair.as_bytes())).as_str())
    );
    let form = form_decode(&requests[0].body);
    assert!(
        form.contains(&("grant_type".into(), "client_credentials".into())),
        "{form:?}"
    );
    assert!(form.contains(&("scope".into(), "https://crm.example.net/.default".into())));
    assert!(!form.iter().any(|(k, _)| k == "client_secret"), "{form:?}");

    let calls = h.sim.target_calls();
    assert_eq!(calls.len(), 5);
    let first = calls[0].header("authorization").unwrap().to_string();
    assert!(first.starts_with("Bearer dv."), "{first}");
    assert!(calls
        .iter()
        .all(|c| c.header("authorization") == Some(first.as_str()) && c.status == 200));
    assert_eq!(statuses(&h.sim), ["OK"; 5]);
}

#[test]
fn oauth_client_credentials_can_go_in_the_body() {
    let secret = "p+o%s:t";
    let sim = sim();
    sim.set_oauth_client(DATAVERSE_CLIENT_ID, secret);
    sim.require_target_auth(TargetAuth::OAuth);
    let h = oauth(&sim, secret)
        .env("ESPFD_TARGET_OAUTH_CLIENT_AUTH", "post")
        .start_on(sim);
    assert_eq!(deliver(&h, 9211), "done");
    let requests = token_requests(&h.sim);
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].header("authorization"), None);
    let form = form_decode(&requests[0].body);
    assert!(
        form.contains(&("client_id".into(), DATAVERSE_CLIENT_ID.into())),
        "{form:?}"
    );
    assert!(
        form.contains(&("client_secret".into(), secret.into())),
        "{form:?}"
    );
    assert_eq!(statuses(&h.sim), ["OK"]);
}

#[test]
fn oauth_token_is_renewed_before_it_expires() {
    let sim = sim();
    // A 61 s token is renewed after 1 s (a minute before it expires): the target, which
    // would accept the old token for another minute, never sees an expired one.
    sim.set_oauth_ttl(Duration::from_secs(61));
    sim.require_target_auth(TargetAuth::OAuth);
    let h = oauth(&sim, espfd::sim::DATAVERSE_CLIENT_SECRET).start_on(sim);
    assert_eq!(deliver(&h, 9221), "done");
    assert_eq!(h.sim.oauth_tokens_issued(), 1);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(deliver(&h, 9222), "done");
    assert_eq!(h.sim.oauth_tokens_issued(), 2, "renewed before use");
    let (first, second) = (target_auth(&h.sim, 9221), target_auth(&h.sim, 9222));
    assert_eq!((first.len(), first[0].1), (1, 200));
    assert_eq!((second.len(), second[0].1), (1, 200), "no 401 on the way");
    assert_ne!(
        first[0].0, second[0].0,
        "the second event has the new token"
    );
}

#[test]
fn revoked_oauth_token_is_renewed_once_and_the_event_is_ok_without_retry() {
    let sim = sim();
    sim.require_target_auth(TargetAuth::OAuth);
    let h = oauth(&sim, espfd::sim::DATAVERSE_CLIENT_SECRET).start_on(sim);
    assert_eq!(deliver(&h, 9231), "done");
    h.sim.revoke_oauth_tokens();
    assert_eq!(
        h.post(&account_event("Subscriber/Updated", 9232, ACCOUNT))
            .0,
        200
    );
    let steps = h.wait_finished(&[9232], WAIT);
    assert_eq!(finished_state(&steps, 9232), "done");
    assert!(
        !steps.iter().any(|s| matches!(s, Step::Retrying { .. })),
        "{steps:?}"
    );
    let calls = target_auth(&h.sim, 9232);
    assert_eq!(calls.iter().map(|c| c.1).collect::<Vec<_>>(), [401, 200]);
    assert_ne!(calls[0].0, calls[1].0, "sent again with a new token");
    assert_eq!(h.sim.oauth_tokens_issued(), 2);
    assert_eq!(statuses(&h.sim), ["OK", "OK"], "no RETRY reported");
}

#[test]
fn a_second_401_after_a_new_oauth_token_fails_the_event() {
    let sim = sim();
    // A target that wants something else than the OAuth token: 401 to every token.
    sim.require_target_auth(TargetAuth::Bearer("not-an-oauth-token".into()));
    let h = oauth(&sim, espfd::sim::DATAVERSE_CLIENT_SECRET).start_on(sim);
    assert_eq!(deliver(&h, 9241), "failed");
    let calls = target_auth(&h.sim, 9241);
    assert_eq!(calls.iter().map(|c| c.1).collect::<Vec<_>>(), [401, 401]);
    assert_eq!(h.sim.oauth_tokens_issued(), 2, "one renewal, not a loop");
    assert_eq!(statuses(&h.sim), ["FAILED"]);
}

#[test]
fn a_refusing_token_endpoint_makes_events_wait_and_is_not_hammered() {
    let sim = sim();
    sim.require_target_auth(TargetAuth::OAuth);
    let h = oauth(&sim, "wrong-secret").start_on(sim);
    assert_eq!(
        h.post(&account_event("Subscriber/Updated", 9251, ACCOUNT))
            .0,
        200
    );
    let reason = wait_retries(&h, 9251, 3);
    for var in [
        "ESPFD_TARGET_OAUTH_CLIENT_ID",
        "ESPFD_TARGET_OAUTH_CLIENT_SECRET",
        "ESPFD_TARGET_OAUTH_URL",
    ] {
        assert!(reason.contains(var), "{reason}");
    }
    assert!(
        reason.contains("invalid_client") && !reason.contains("wrong-secret"),
        "{reason}"
    );
    // Three attempts, retried within a second or so; the endpoint is asked again only after
    // its refusal pause (5 s at first).
    let asked = token_requests(&h.sim).len();
    assert!(
        asked < 3,
        "the token endpoint was asked {asked} times for 3 attempts"
    );
    assert!(
        h.sim.target_calls().is_empty(),
        "nothing is sent without a token"
    );
    let reported = statuses(&h.sim);
    assert!(
        reported.iter().all(|s| s == "RETRY") && !reported.is_empty(),
        "{reported:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// TLS

/// An HTTPS front for `sim`'s target: TLS with `leaf`, asking for a client certificate issued
/// by `client_ca` when given; each request is passed on to the simulator over plain HTTP and
/// its reply back, one request per connection. Returns the target URL.
fn https_target(sim: &Sim, leaf: &Leaf, client_ca: Option<&Path>) -> String {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&leaf.cert)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_file(&leaf.key).unwrap();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(ca).unwrap() {
                roots.add(c.unwrap()).unwrap();
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = Arc::new(builder.with_single_cert(chain, key).unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let upstream = sim.addr();
    std::thread::spawn(move || {
        for tcp in listener.incoming().flatten() {
            let config = config.clone();
            std::thread::spawn(move || {
                let _ = relay(tcp, config, upstream);
            });
        }
    });
    format!("https://127.0.0.1:{port}/target")
}

/// One request from a TLS client, relayed to `upstream` and its reply back, then closed.
fn relay(tcp: TcpStream, config: Arc<ServerConfig>, upstream: SocketAddr) -> io::Result<()> {
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut tls = StreamOwned::new(
        ServerConnection::new(config).map_err(io::Error::other)?,
        tcp,
    );
    let mut request = Vec::new();
    let mut byte = [0u8; 1];
    while !request.ends_with(b"\r\n\r\n") {
        tls.read_exact(&mut byte)?;
        request.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&request).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().unwrap_or(0));
    let mut body = vec![0u8; length];
    tls.read_exact(&mut body)?;
    request.extend_from_slice(&body);
    let mut up = TcpStream::connect(upstream)?;
    up.write_all(&request)?;
    let (_, head, body) = read_reply(&mut up).ok_or_else(|| io::Error::other("no reply"))?;
    let mut out = String::new();
    for line in head.lines().filter(|l| !l.is_empty()) {
        if !line.to_ascii_lowercase().starts_with("connection:") {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    out.push_str("Connection: close\r\n\r\n");
    out.push_str(&body);
    tls.write_all(out.as_bytes())?;
    tls.conn.send_close_notify();
    tls.flush()
}

#[test]
fn an_https_target_behind_a_private_ca_is_trusted_with_its_ca_file() {
    let certs = Certs::new();
    let leaf = certs.leaf("target", Key::EcSec1);

    // Without the CA file the public roots do not know it: the event waits.
    let sim1 = sim();
    let url = https_target(&sim1, &leaf, None);
    let h = Test::new().env("ESPFD_TARGET_URL", url).start_on(sim1);
    assert_eq!(
        h.post(&account_event("Subscriber/Updated", 9301, ACCOUNT))
            .0,
        200
    );
    let reason = wait_retries(&h, 9301, 1);
    assert!(h.sim.target_calls().is_empty(), "{reason}");

    let sim2 = sim();
    let url = https_target(&sim2, &leaf, None);
    let h = Test::new()
        .env("ESPFD_TARGET_URL", url)
        .env("ESPFD_TARGET_CA_FILE", certs.ca.display().to_string())
        .start_on(sim2);
    assert_eq!(deliver(&h, 9302), "done");
    assert_eq!(h.sim.target_calls().len(), 1);
    assert_eq!(statuses(&h.sim), ["OK"]);
}

#[test]
fn a_target_requiring_a_client_certificate_gets_the_configured_one() {
    let certs = Certs::new();
    let leaf = certs.leaf("target", Key::EcSec1);
    let ca = certs.ca.display().to_string();

    // No client certificate: the handshake fails, nothing reaches the target, the event waits.
    let sim1 = sim();
    let url = https_target(&sim1, &leaf, Some(&certs.ca));
    let h = Test::new()
        .env("ESPFD_TARGET_URL", url)
        .env("ESPFD_TARGET_CA_FILE", &ca)
        .start_on(sim1);
    assert_eq!(
        h.post(&account_event("Subscriber/Updated", 9311, ACCOUNT))
            .0,
        200
    );
    wait_retries(&h, 9311, 1);
    assert!(h.sim.target_calls().is_empty());

    // With one, in each key encoding espfd accepts.
    for (n, kind) in [Key::EcSec1, Key::RsaPkcs1, Key::RsaPkcs8]
        .into_iter()
        .enumerate()
    {
        let client = certs.client_leaf(&format!("client{n}"), kind);
        let sim = sim();
        let url = https_target(&sim, &leaf, Some(&certs.ca));
        let h = Test::new()
            .env("ESPFD_TARGET_URL", url)
            .env("ESPFD_TARGET_CA_FILE", &ca)
            .env("ESPFD_TARGET_TLS_CERT", client.cert.display().to_string())
            .env("ESPFD_TARGET_TLS_KEY", client.key.display().to_string())
            .start_on(sim);
        let i_event = 9312 + n as i64;
        assert_eq!(deliver(&h, i_event), "done", "{kind:?}");
        assert_eq!(h.sim.target_calls().len(), 1);
        assert_eq!(statuses(&h.sim), ["OK"]);
    }
}

// ---------------------------------------------------------------------------------------------
// Configuration errors, check, logs

#[test]
fn configuration_errors_name_the_variable_in_check_and_at_start() {
    let sim = sim();
    let state = TempDir::new("outbound-config");
    let certs = Certs::new();
    let server = certs.leaf("a", Key::EcSec1);
    let other = certs.client_leaf("b", Key::EcSec1);
    let junk = state.0.join("junk.pem");
    std::fs::write(&junk, "not a certificate\n").unwrap();
    let path = |p: &Path| p.display().to_string();
    let cases: Vec<(Vec<(&str, String)>, &str)> = vec![
        (
            vec![("ESPFD_TARGET_AUTH", "digest".into())],
            "ESPFD_TARGET_AUTH",
        ),
        (
            vec![
                ("ESPFD_TARGET_AUTH", "basic".into()),
                ("ESPFD_TARGET_PASSWORD", "pw".into()),
            ],
            "ESPFD_TARGET_USER",
        ),
        (
            vec![
                ("ESPFD_TARGET_AUTH", "header".into()),
                ("ESPFD_TARGET_HEADER", "X-API-Key abc".into()),
            ],
            "ESPFD_TARGET_HEADER",
        ),
        (
            vec![
                ("ESPFD_TARGET_AUTH", "oauth2".into()),
                (
                    "ESPFD_TARGET_OAUTH_URL",
                    "ftp://login.example.net/token".into(),
                ),
                ("ESPFD_TARGET_OAUTH_CLIENT_ID", "id".into()),
                ("ESPFD_TARGET_OAUTH_CLIENT_SECRET", "s".into()),
            ],
            "ESPFD_TARGET_OAUTH_URL",
        ),
        (
            vec![("ESPFD_TARGET_TLS_CERT", path(&server.cert))],
            "ESPFD_TARGET_TLS_KEY",
        ),
        (
            vec![("ESPFD_TARGET_CA_FILE", "/nonexistent/ca.pem".into())],
            "ESPFD_TARGET_CA_FILE",
        ),
        // Read when the agent is built, still a configuration error.
        (
            vec![("ESPFD_TARGET_CA_FILE", path(&junk))],
            "ESPFD_TARGET_CA_FILE",
        ),
        (
            vec![
                ("ESPFD_TARGET_TLS_CERT", path(&server.cert)),
                ("ESPFD_TARGET_TLS_KEY", path(&other.key)),
            ],
            "ESPFD_TARGET_TLS_KEY",
        ),
        (
            vec![
                ("ESPFD_TARGET_URL", String::new()),
                ("ESPFD_TARGET_EXEC", "/bin/true".into()),
                ("ESPFD_TARGET_AUTH", "bearer".into()),
                ("ESPFD_TARGET_TOKEN", "t".into()),
            ],
            "ESPFD_TARGET_TOKEN",
        ),
    ];
    for (vars, var) in cases {
        let mut test = Test::new().sim_env(&sim, &state);
        for (k, v) in &vars {
            test = if v.is_empty() {
                test.unset(k)
            } else {
                test.env(k, v.clone())
            };
        }
        let check = test.clone().args(&["check"]).run().code(78);
        assert!(
            check.stdout().contains(&format!("(fix {var})")),
            "{vars:?}: {}",
            check.stdout()
        );
        let start = test.run().code(78);
        assert!(start.stderr().contains(var), "{vars:?}: {}", start.stderr());
        // "abc" is the header line's secret: a malformed line is not quoted back.
        assert!(!check.stdout().contains("abc") && !start.stderr().contains("abc"));
    }
}

#[test]
fn check_fetches_an_oauth_token_and_says_so() {
    let sim = sim();
    let state = TempDir::new("outbound-check");
    let run = oauth(&sim, espfd::sim::DATAVERSE_CLIENT_SECRET)
        .sim_env(&sim, &state)
        .args(&["check"])
        .run()
        .code(0);
    let line = format!(
        "ok   OAuth 2.0 token fetched from {} (expires in 3600 s)",
        token_url(&sim)
    );
    assert!(run.stdout().contains(&line), "{}", run.stdout());
    assert_eq!(sim.oauth_tokens_issued(), 1);

    let run = oauth(&sim, "wrong-secret")
        .sim_env(&sim, &state)
        .args(&["check"])
        .run()
        .code(1);
    let fail = run
        .stdout()
        .lines()
        .find(|l| l.starts_with("FAIL OAuth 2.0 token"))
        .unwrap_or_else(|| panic!("{}", run.stdout()))
        .to_string();
    assert!(
        fail.contains("ESPFD_TARGET_OAUTH_CLIENT_SECRET") && !fail.contains("wrong-secret"),
        "{fail}"
    );
}

/// Runs the binary at `RUST_LOG=trace` with `test`'s variables against `sim`, sends one event
/// and waits until ESPF got `status` for it; returns the log.
fn trace_log(sim: &Sim, test: Test, i_event: i64, status: &str) -> String {
    let state = TempDir::new("outbound-log");
    let mut d = test.sim_env(sim, &state).env("RUST_LOG", "trace").spawn();
    let url = format!("http://{}/events", d.addr);
    let body = account_event("Subscriber/Updated", i_event, ACCOUNT);
    assert_eq!(post(&url, Some(&basic(USER, PASSWORD)), &body).0, 200);
    let reported = eventually(WAIT, || sim.statuses().iter().any(|s| s.status == status));
    d.signal(libc::SIGTERM);
    d.wait();
    let log = d.log();
    assert!(reported, "no {status} reported; log:\n{log}");
    log
}

#[test]
fn no_secret_reaches_the_log_even_at_trace() {
    let secret = "cl1ent+sec%ret:x";
    let forms = |s: &str| vec![s.to_string(), form_encode(s)];

    // A refusing token endpoint: the log says what to check, without the secret.
    let sim1 = sim();
    let log = trace_log(&sim1, oauth(&sim1, secret), 9401, "RETRY");
    for var in [
        "ESPFD_TARGET_OAUTH_CLIENT_ID",
        "ESPFD_TARGET_OAUTH_CLIENT_SECRET",
        "ESPFD_TARGET_OAUTH_URL",
    ] {
        assert!(log.contains(var), "{var} not named:\n{log}");
    }
    let basic_pair =
        base64_encode(format!("{}:{}", DATAVERSE_CLIENT_ID, form_encode(secret)).as_bytes());
    for s in forms(secret).into_iter().chain([basic_pair]) {
        assert!(!log.contains(&s), "{s} in the log:\n{log}");
    }

    // A working OAuth 2.0 client (secret in the body): neither it nor the token is logged.
    let sim2 = sim();
    sim2.set_oauth_client(DATAVERSE_CLIENT_ID, secret);
    sim2.require_target_auth(TargetAuth::OAuth);
    let test = oauth(&sim2, secret).env("ESPFD_TARGET_OAUTH_CLIENT_AUTH", "post");
    let log = trace_log(&sim2, test, 9402, "OK");
    let token = sim2.target_calls()[0]
        .header("authorization")
        .unwrap()
        .trim_start_matches("Bearer ")
        .to_string();
    assert!(log.contains("OAuth 2.0: token fetched"), "{log}");
    for s in forms(secret).into_iter().chain([token]) {
        assert!(!log.contains(&s), "{s} in the log:\n{log}");
    }

    // The fixed schemes.
    let schemes: [(&str, &str, &str, TargetAuth); 3] = [
        (
            "basic",
            "ESPFD_TARGET_PASSWORD",
            "b4sic-pass",
            TargetAuth::Basic {
                user: "u".into(),
                password: "b4sic-pass".into(),
            },
        ),
        (
            "bearer",
            "ESPFD_TARGET_TOKEN",
            "be4rer-token",
            TargetAuth::Bearer("be4rer-token".into()),
        ),
        (
            "header",
            "ESPFD_TARGET_HEADER",
            "X-API-Key: he4der-key",
            TargetAuth::Header("X-API-Key".into(), "he4der-key".into()),
        ),
    ];
    for (n, (scheme, var, value, auth)) in schemes.into_iter().enumerate() {
        let sim = sim();
        sim.require_target_auth(auth);
        let test = Test::new()
            .env("ESPFD_TARGET_AUTH", scheme)
            .env("ESPFD_TARGET_USER", "u")
            .env(var, value);
        let test = if scheme == "basic" {
            test
        } else {
            test.unset("ESPFD_TARGET_USER")
        };
        let log = trace_log(&sim, test, 9410 + n as i64, "OK");
        let secret = value.trim_start_matches("X-API-Key: ");
        assert!(
            !log.contains(secret),
            "{scheme}: {secret} in the log:\n{log}"
        );
        let encoded = base64_encode(format!("u:{secret}").as_bytes());
        assert!(
            !log.contains(&encoded),
            "{scheme}: encoded secret in the log:\n{log}"
        );
    }
}
