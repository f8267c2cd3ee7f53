//! `espfd send`: the real binary against an in-process espfd (basic and custom auth, wrong
//! credentials, literal bodies, bad flags) and against a small TLS server of this file that
//! checks signatures the way the protocol notes describe (HMAC-SHA1 over `date: <Date>`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use espfd::http::Limits;
use espfd::http::{parse_request, Parsed};
use espfd::util::{base64_decode, now_ms, parse_http_date};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::harness::{Harness, TempDir, Test, PASSWORD, USER};

/// Runs `espfd send ARGS` with only `env` in its environment and `stdin` on its input.
fn send(args: &[&str], env: &[(&str, &str)], stdin: &[u8]) -> Output {
    let mut test = Test::new().args(&["send"]).args(args).stdin(stdin);
    for (k, v) in env {
        test = test.env(k, *v);
    }
    test.run().0
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn show(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        stdout(out),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn basic_auth_events_are_stored_and_the_counts_printed_match() {
    let h = Harness::start();
    let url = h.url();
    let out = send(
        &[
            &url,
            "--user",
            USER,
            "--password",
            PASSWORD,
            "--count",
            "30",
            "--concurrency",
            "4",
            "--account",
            "1000",
            "--accounts",
            "3",
            "--start-id",
            "9000",
        ],
        &[],
        b"",
    );
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(text.contains("reply 200: 30  (e.g. \"OK\")"), "{text}");
    assert!(!text.contains("reply 4"), "{text}");
    assert!(text.contains("result: all 30 replies were 200"), "{text}");
    for p in ["p50 ", "p90 ", "p99 ", "p99.9 ", "max ", "replies/s"] {
        assert!(text.contains(p), "{p} missing: {text}");
    }
    let reader = h.reader();
    assert_eq!(reader.total_count().unwrap(), 30);
    for i in 0..30 {
        let row = reader.get(9000 + i).unwrap().expect("every event stored");
        assert_eq!(row.event_type, "Subscriber/Updated");
        assert_eq!(row.entity, format!("account:{}", 1000 + i % 3));
    }
}

#[test]
fn secrets_and_url_come_from_the_service_variables() {
    let h = Harness::start();
    let dir = TempDir::new("send-env");
    let password_file = dir.0.join("password");
    std::fs::write(&password_file, format!("{PASSWORD}\n")).unwrap();
    let listen = h.service.as_ref().unwrap().local_addr().to_string();
    let out = send(
        &[
            "--count",
            "3",
            "--start-id",
            "100",
            "--event-type",
            "Customer/Updated",
        ],
        &[
            ("ESPFD_LISTEN", &listen),
            ("ESPFD_EVENTS_PATH", "/events"),
            ("ESPFD_AUTH_USER", USER),
            ("ESPFD_AUTH_PASSWORD_FILE", password_file.to_str().unwrap()),
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(stdout(&out).contains("reply 200: 3"), "{}", show(&out));
    assert_eq!(
        h.reader().get(101).unwrap().expect("stored").entity,
        "customer:1000"
    );
}

#[test]
fn wrong_credentials_get_401_and_nothing_is_stored() {
    let h = Harness::start();
    let url = h.url();
    // Deliberately wrong: 401 is what was asked for, so the exit status is 0.
    let out = send(
        &[
            &url,
            "--count",
            "5",
            "--concurrency",
            "2",
            "--wrong-credentials",
        ],
        &[("ESPFD_AUTH_USER", USER), ("ESPFD_AUTH_PASSWORD", PASSWORD)],
        b"",
    );
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(text.contains("reply 401: 5"), "{text}");
    assert!(text.contains("deliberately wrong credentials"), "{text}");
    assert!(
        !text.contains(PASSWORD),
        "the password is never printed: {text}"
    );

    // Wrong by mistake: the same 401s, but now they are a failure.
    let out = send(
        &[&url, "--user", USER, "--password", "not-it", "--count", "2"],
        &[],
        b"",
    );
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(stdout(&out).contains("reply 401: 2"), "{}", show(&out));
    assert!(
        stdout(&out).contains("result: 2 of 2 events did not get the expected 200"),
        "{}",
        show(&out)
    );
    assert_eq!(h.reader().total_count().unwrap(), 0);
}

#[test]
fn custom_scheme_right_and_wrong() {
    let h = Test::new()
        .env("ESPFD_AUTH", "custom")
        .env("ESPFD_AUTH_CUSTOM", "Plain passexample")
        .start();
    let url = h.url();
    let custom = [
        ("ESPFD_AUTH", "custom"),
        ("ESPFD_AUTH_CUSTOM", "Plain passexample"),
    ];
    let out = send(&[&url, "--count", "4", "--start-id", "1"], &custom, b"");
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(stdout(&out).contains("reply 200: 4"), "{}", show(&out));
    let out = send(
        &[
            &url,
            "--count",
            "4",
            "--start-id",
            "11",
            "--wrong-credentials",
        ],
        &custom,
        b"",
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(stdout(&out).contains("reply 401: 4"), "{}", show(&out));
    assert!(!stdout(&out).contains("passexample"), "{}", show(&out));
    assert_eq!(h.reader().total_count().unwrap(), 4);
}

#[test]
fn literal_body_from_standard_input() {
    let h = Harness::start();
    let url = h.url();
    let auth = ["--user", USER, "--password", PASSWORD];
    let body =
        br#"{"event_type":"DID/Updated","variables":{"number":"12065550123","i_event":"7618"}}"#;
    let out = send(
        &[&[url.as_str(), "--body", "-"][..], &auth].concat(),
        &[],
        body,
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let row = h.reader().get(7618).unwrap().expect("stored");
    assert_eq!(row.body.as_bytes(), body);
    assert_eq!(row.entity, "did:12065550123");

    // A body that is not an event: 400 with espfd's reason, and exit status 1.
    let out = send(
        &[&[url.as_str(), "--body", "-", "--count", "2"][..], &auth].concat(),
        &[],
        br#"{"event_type":"X/Y","variables":{}}"#,
    );
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        stdout(&out).contains("reply 400: 2  (e.g. \"variables.i_event is missing\")"),
        "{}",
        show(&out)
    );
}

#[test]
fn bad_command_lines_exit_64_with_a_clear_message() {
    let cases: &[(&[&str], &str)] = &[
        (&["--frobnicate"], "unknown flag --frobnicate"),
        (
            &["--count", "many", "--user", "u", "--password", "p"],
            "--count: 'many'",
        ),
        (
            &["--concurrency", "0", "--user", "u", "--password", "p"],
            "--concurrency",
        ),
        (
            &["--rate", "fast", "--user", "u", "--password", "p"],
            "--rate",
        ),
        (&["--auth", "digest"], "--auth: 'digest'"),
        (&["--auth", "signature", "--key", "k"], "--key-id"),
        (&["--auth", "basic"], "needs --user"),
        (
            &["https://127.0.0.1:1/", "--ca-file", "/nonexistent.pem"],
            "--ca-file",
        ),
        (&["--timeout"], "--timeout needs a value"),
    ];
    for (args, want) in cases {
        let out = send(args, &[], b"");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {}", show(&out));
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(err.contains("espfd send --help"), "{err}");
    }
    let out = send(&["--help"], &[], b"");
    assert_eq!(out.status.code(), Some(0));
    let help = stdout(&out);
    for flag in [
        "--url",
        "--ca-file",
        "--insecure",
        "--timeout",
        "--auth",
        "--user",
        "--password",
        "--custom",
        "--key-id",
        "--key",
        "--sign-bare-date",
        "--wrong-credentials",
        "--count",
        "--concurrency",
        "--rate",
        "--event-type",
        "--account",
        "--accounts",
        "--start-id",
        "--body",
    ] {
        assert!(help.contains(flag), "{flag} not in --help");
    }
}

#[test]
fn rate_spaces_the_requests_out() {
    let h = Harness::start();
    let url = h.url();
    let started = Instant::now();
    let out = send(
        &[
            &url,
            "--user",
            USER,
            "--password",
            PASSWORD,
            "--count",
            "6",
            "--rate",
            "20",
            "--concurrency",
            "3",
        ],
        &[],
        b"",
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(
        stdout(&out).contains("at most 20 events/s"),
        "{}",
        show(&out)
    );
    // Event n is not sent before n/20 s: a guaranteed minimum, not a performance figure.
    assert!(started.elapsed() >= Duration::from_millis(250));
}

// ---- HTTPS and signature, against a server of this file ----

/// A CA and a server certificate for localhost / 127.0.0.1 signed by it, made by openssl.
struct Certs {
    dir: TempDir,
}

impl Certs {
    fn make() -> Certs {
        let dir = TempDir::new("send-tls");
        std::fs::write(
            dir.0.join("leaf.ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        let d = dir.0.display().to_string();
        assert!(
            !d.contains(char::is_whitespace),
            "a temp dir without spaces: {d}"
        );
        let ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
        let steps = [
            format!("req -x509 {ec} -keyout {d}/ca.key -out {d}/ca.pem -days 2 -subj /CN=espfd-test-CA"),
            format!("req {ec} -keyout {d}/key.pem -out {d}/leaf.csr -subj /CN=localhost"),
            format!("x509 -req -in {d}/leaf.csr -CA {d}/ca.pem -CAkey {d}/ca.key -CAcreateserial -out {d}/cert.pem -days 2 -extfile {d}/leaf.ext"),
        ];
        for args in steps {
            let out = Command::new("openssl")
                .args(args.split_whitespace())
                .output()
                .expect(
                    "the openssl command is needed for the TLS tests (apt-get install openssl)",
                );
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Certs { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.0.join(name).to_str().unwrap().to_string()
    }
}

/// What the signature server saw.
#[derive(Default)]
struct Seen {
    valid: u64,
    invalid: u64,
    key_ids: Vec<String>,
    /// Why each invalid one was refused.
    reasons: Vec<String>,
}

/// An HTTPS server that answers 200 to requests whose `Authorization` is a valid signature
/// (key id `test`, key `signature`, HMAC-SHA1 over `date: <Date>`, a Date within a minute)
/// and 401 to anything else.
struct SignatureServer {
    addr: SocketAddr,
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
}

impl Drop for SignatureServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}

fn verify_signature(authorization: Option<&str>, date: Option<&str>) -> Result<String, String> {
    let auth = authorization.ok_or("no Authorization")?;
    let params = auth.strip_prefix("Signature ").ok_or("not a Signature")?;
    let param = |name: &str| -> Result<String, String> {
        params
            .split(',')
            .find_map(|p| p.trim().strip_prefix(&format!("{name}=\"")))
            .and_then(|v| v.strip_suffix('"'))
            .map(str::to_string)
            .ok_or(format!("no {name}"))
    };
    let key_id = param("keyId")?;
    if key_id != "test" || param("algorithm")? != "hmac-sha1" {
        return Err("wrong keyId or algorithm".into());
    }
    let date = date.ok_or("no Date")?;
    let when = parse_http_date(date).ok_or("bad Date")?;
    if (now_ms() / 1000 - when).abs() > 60 {
        return Err("stale Date".into());
    }
    let signature = base64_decode(&param("signature")?).ok_or("signature not base64")?;
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, b"signature");
    ring::hmac::verify(&key, format!("date: {date}").as_bytes(), &signature)
        .map_err(|_| "signature does not verify".to_string())?;
    Ok(key_id)
}

fn start_signature_server(certs: &Certs) -> SignatureServer {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(certs.path("cert.pem"))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(certs.path("key.pem")).unwrap();
    let config = Arc::new(
        rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap(),
    );
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let (seen2, stop2) = (seen.clone(), stop.clone());
    thread::spawn(move || {
        for stream in listener.incoming() {
            if stop2.load(Ordering::SeqCst) {
                return;
            }
            let Ok(stream) = stream else { continue };
            let (config, seen) = (config.clone(), seen2.clone());
            thread::spawn(move || serve_tls(stream, config, &seen));
        }
    });
    SignatureServer { addr, seen, stop }
}

fn serve_tls(stream: TcpStream, config: Arc<rustls::ServerConfig>, seen: &Mutex<Seen>) {
    let peer = stream.peer_addr().unwrap();
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let conn = rustls::ServerConnection::new(config).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, stream);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let request = loop {
            match parse_request(&buf, peer, &Limits::default()) {
                Ok(Parsed::Complete { request, len }) => {
                    buf.drain(..len);
                    break request;
                }
                Ok(Parsed::Incomplete { .. }) => match tls.read(&mut chunk) {
                    Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                    _ => return, // closed, close_notify, a TLS error (e.g. an untrusted cert)
                },
                Err(_) => return,
            }
        };
        let (status, body) =
            match verify_signature(request.header("authorization"), request.header("date")) {
                Ok(key_id) => {
                    let mut s = seen.lock().unwrap();
                    s.valid += 1;
                    s.key_ids.push(key_id);
                    (200, "OK\n")
                }
                Err(why) => {
                    let mut s = seen.lock().unwrap();
                    s.invalid += 1;
                    s.reasons.push(why);
                    (401, "unauthorized\n")
                }
            };
        let reply = format!(
            "HTTP/1.1 {status} X\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        if tls
            .write_all(reply.as_bytes())
            .and_then(|_| tls.flush())
            .is_err()
        {
            return;
        }
    }
}

#[test]
fn signature_over_https_verifies_and_wrong_keys_and_untrusted_certs_fail() {
    let certs = Certs::make();
    let server = start_signature_server(&certs);
    let url = format!("https://localhost:{}/events", server.addr.port());
    let ca = certs.path("ca.pem");
    let key_env = [
        ("ESPFD_AUTH_KEY_ID", "test"),
        ("ESPFD_AUTH_KEY", "signature"),
    ];

    let out = send(
        &[
            &url,
            "--ca-file",
            &ca,
            "--auth",
            "signature",
            "--count",
            "8",
            "--concurrency",
            "2",
        ],
        &key_env,
        b"",
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(stdout(&out).contains("reply 200: 8"), "{}", show(&out));
    assert!(
        !stdout(&out).contains("signature\""),
        "the key is never printed"
    );
    {
        let s = server.seen.lock().unwrap();
        assert_eq!((s.valid, s.invalid), (8, 0), "{:?}", s.reasons);
        assert!(s.key_ids.iter().all(|k| k == "test"));
    }

    // Keys from flags, deliberately wrong: the server's HMAC check refuses every one.
    let out = send(
        &[
            &url,
            "--ca-file",
            &ca,
            "--auth",
            "signature",
            "--key-id",
            "test",
            "--key",
            "signature",
            "--count",
            "3",
            "--wrong-credentials",
        ],
        &[],
        b"",
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(stdout(&out).contains("reply 401: 3"), "{}", show(&out));
    {
        let s = server.seen.lock().unwrap();
        assert_eq!(s.invalid, 3);
        assert!(
            s.reasons.iter().all(|r| r == "signature does not verify"),
            "{:?}",
            s.reasons
        );
    }

    // A CA file that does not hold the server's issuer: no request gets through.
    let out = send(
        &[
            &url,
            "--ca-file",
            &certs.path("cert.pem"),
            "--auth",
            "signature",
            "--count",
            "2",
        ],
        &key_env,
        b"",
    );
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(stdout(&out).contains("no reply: 2"), "{}", show(&out));
    assert!(stdout(&out).contains("certificate"), "{}", show(&out));

    // --insecure skips the certificate check (and nothing else).
    let out = send(
        &[
            &format!("https://127.0.0.1:{}/events", server.addr.port()),
            "--insecure",
            "--auth",
            "signature",
            "--count",
            "2",
        ],
        &key_env,
        b"",
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(server.seen.lock().unwrap().valid, 10);
}

/// `espfd send` against espfd's own HTTPS listener with signature auth: the two halves of
/// the product agree with each other, not only with test servers.
#[test]
fn send_and_the_ingress_agree_on_https_and_signatures() {
    let certs = crate::support::Certs::new();
    let leaf = certs.leaf("server", crate::support::Key::EcSec1);
    let h = crate::harness::Harness::with(|raw| {
        raw.set("ESPFD_TLS_CERT", leaf.cert.display().to_string())
            .set("ESPFD_TLS_KEY", leaf.key.display().to_string())
            .set("ESPFD_AUTH", "signature")
            .set("ESPFD_AUTH_KEY_ID", "test")
            .set("ESPFD_AUTH_KEY", "signature");
    });
    let url = format!(
        "https://{}/events",
        h.service.as_ref().unwrap().local_addr()
    );
    let ca = certs.ca.display().to_string();
    let run = |key: &str, extra: &[&str], start: &str| {
        let mut args = vec![
            url.as_str(),
            "--ca-file",
            ca.as_str(),
            "--auth",
            "signature",
        ];
        args.extend([
            "--key-id",
            "test",
            "--key",
            key,
            "--count",
            "5",
            "--start-id",
            start,
        ]);
        args.extend(extra);
        send(&args, &[], b"")
    };
    let out = run("signature", &[], "9100");
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(stdout(&out).contains("200"), "{}", show(&out));
    assert_eq!(h.reader().total_count().unwrap(), 5);

    let out = run("signature", &["--sign-bare-date"], "9200");
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(h.reader().total_count().unwrap(), 10);

    let out = run("not-the-key", &[], "9300");
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(stdout(&out).contains("401"), "{}", show(&out));
    assert_eq!(h.reader().total_count().unwrap(), 10);
}
