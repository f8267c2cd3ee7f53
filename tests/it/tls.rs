//! HTTPS: the three key encodings, TLS 1.2 and 1.3 only, a mismatched key refused at start,
//! reloading the certificate on SIGHUP while clients stay connected, the handshake timeout,
//! and a ClientHello followed by close_notify not making the process spin.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use espfd::service::Service;
use espfd::sim::{Sim, SimConfig};
use rustls::version::{TLS12, TLS13};

use crate::harness::{
    account_event, basic, eventually, raw_config, sim_env, Harness, TempDir, PASSWORD, USER,
};
use crate::harness::{Espfd, Test};
use crate::support::{
    get_on, https_agent, peer_cert, read_until_closed, tls_client, tls_connect, Certs, Key, Leaf,
};

fn https_harness(leaf: &Leaf, tweak: impl FnOnce(&mut espfd::config::RawConfig)) -> Harness {
    let (cert, key) = (
        leaf.cert.display().to_string(),
        leaf.key.display().to_string(),
    );
    Harness::with(|raw| {
        raw.set("ESPFD_TLS_CERT", cert).set("ESPFD_TLS_KEY", key);
        tweak(raw);
    })
}

fn addr(h: &Harness) -> SocketAddr {
    h.service.as_ref().unwrap().local_addr()
}

#[test]
fn https_serves_events_with_rsa_pkcs8_rsa_pkcs1_and_ec_sec1_keys() {
    let certs = Certs::new();
    for (i, kind) in [Key::RsaPkcs8, Key::RsaPkcs1, Key::EcSec1]
        .into_iter()
        .enumerate()
    {
        let leaf = certs.leaf(&format!("server{i}"), kind);
        let h = https_harness(&leaf, |_| {});
        let url = format!("https://{}/events", addr(&h));
        let body = account_event("Subscriber/Created", 100 + i as i64, 1000889);
        let mut resp = https_agent(&certs.ca)
            .post(&url)
            .header("Content-Type", "application/json")
            .header("Authorization", &basic(USER, PASSWORD))
            .send(body.as_str())
            .unwrap_or_else(|e| panic!("{kind:?}: {e}"));
        assert_eq!(resp.status().as_u16(), 200, "{kind:?}");
        assert_eq!(resp.body_mut().read_to_string().unwrap().trim(), "OK");
        assert!(
            h.reader().get(100 + i as i64).unwrap().is_some(),
            "{kind:?}"
        );

        // Plain HTTP on the HTTPS port gets no HTTP reply.
        let mut plain = TcpStream::connect(addr(&h)).unwrap();
        plain
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let (got, _) = read_until_closed(&mut plain, Duration::from_secs(5));
        assert!(!got.starts_with(b"HTTP/"), "{kind:?}");
    }
}

#[test]
fn tls_1_2_and_1_3_are_spoken_and_nothing_older() {
    let certs = Certs::new();
    let leaf = certs.leaf("server", Key::EcSec1);
    let h = https_harness(&leaf, |_| {});
    for version in [&TLS12, &TLS13] {
        let mut c = tls_connect(addr(&h), tls_client(&certs.ca, &[version])).unwrap();
        assert_eq!(c.conn.protocol_version(), Some(version.version));
        let (status, _, body) = get_on(&mut c, "/healthz");
        assert_eq!((status, body.trim()), (200, "ok"));
    }
    // A client that offers only TLS 1.0 is answered with a protocol_version alert.
    let mut old = TcpStream::connect(addr(&h)).unwrap();
    old.write_all(&client_hello([0x03, 0x01])).unwrap();
    let (got, closed) = read_until_closed(&mut old, Duration::from_secs(5));
    assert!(closed, "connection left open");
    assert_eq!(got.first(), Some(&0x15), "an alert record: {got:?}");
    assert_eq!(got.get(6), Some(&70), "protocol_version: {got:?}");
}

#[test]
fn a_key_that_does_not_match_the_certificate_stops_the_start_naming_both_files() {
    let certs = Certs::new();
    let a = certs.leaf("a", Key::RsaPkcs8);
    let b = certs.leaf("b", Key::RsaPkcs8);
    let ec = certs.leaf("ec", Key::EcSec1);
    let sim = Sim::start("127.0.0.1:0", SimConfig::default()).unwrap();
    for key in [&b.key, &ec.key] {
        let state = TempDir::new("mismatch");
        let mut raw = raw_config(&sim, &state);
        raw.set("ESPFD_TLS_CERT", a.cert.display().to_string())
            .set("ESPFD_TLS_KEY", key.display().to_string());
        let config = raw.validate().unwrap();
        let e = match Service::start(&config, None) {
            Ok(_) => panic!("started with the key of another certificate"),
            Err(e) => e.to_string(),
        };
        assert!(e.contains(&a.cert.display().to_string()), "{e}");
        assert!(e.contains(&key.display().to_string()), "{e}");
        assert!(e.contains("does not belong"), "{e}");
    }

    // The binary: a non-zero exit, the same message, nothing listening.
    let state = TempDir::new("mismatch-bin");
    let run = Test::new()
        .sim_env(&sim, &state)
        .env("ESPFD_TLS_CERT", a.cert.display().to_string())
        .env("ESPFD_TLS_KEY", b.key.display().to_string())
        .run();
    assert!(!run.0.status.success());
    let err = run.stderr();
    assert!(
        err.contains(&a.cert.display().to_string()) && err.contains(&b.key.display().to_string()),
        "{err}"
    );
}

#[test]
fn reload_swaps_the_certificate_for_new_connections_and_keeps_open_ones() {
    let certs = Certs::new();
    let first = certs.leaf("first", Key::RsaPkcs8);
    let second = certs.leaf("second", Key::EcSec1);
    let live = certs.leaf("live", Key::RsaPkcs1);
    first.install(&live);
    let h = https_harness(&live, |_| {});
    let service = h.service.as_ref().unwrap();
    let client = tls_client(&certs.ca, &[&TLS13, &TLS12]);

    let mut open = tls_connect(addr(&h), client.clone()).unwrap();
    assert_eq!(peer_cert(&open), first.der());
    assert_eq!(get_on(&mut open, "/healthz").0, 200);

    // What SIGHUP does.
    second.install(&live);
    service.reload().unwrap();
    let mut fresh = tls_connect(addr(&h), client.clone()).unwrap();
    assert_eq!(
        peer_cert(&fresh),
        second.der(),
        "new connections get the new one"
    );
    assert_eq!(get_on(&mut fresh, "/healthz").0, 200);
    assert_eq!(
        get_on(&mut open, "/healthz").0,
        200,
        "the open connection goes on"
    );

    // A bad file: the reload fails naming it, and the previous certificate stays in use.
    std::fs::write(&live.key, "-----BEGIN PRIVATE KEY-----\nnonsense\n").unwrap();
    let e = service.reload().unwrap_err().to_string();
    assert!(e.contains(&live.key.display().to_string()), "{e}");
    // A key that belongs to another certificate is refused the same way.
    std::fs::copy(&first.key, &live.key).unwrap();
    let e = service.reload().unwrap_err().to_string();
    assert!(e.contains("does not belong"), "{e}");
    let mut after = tls_connect(addr(&h), client).unwrap();
    assert_eq!(peer_cert(&after), second.der());
    assert_eq!(get_on(&mut after, "/healthz").0, 200);
    assert_eq!(get_on(&mut open, "/healthz").0, 200);
}

#[test]
fn sighup_to_the_binary_reloads_the_certificate_without_closing_the_listener() {
    let certs = Certs::new();
    let first = certs.leaf("first", Key::EcSec1);
    let second = certs.leaf("second", Key::RsaPkcs8);
    let live = certs.leaf("live", Key::EcSec1);
    first.install(&live);
    let sim = Sim::start("127.0.0.1:0", SimConfig::default()).unwrap();
    let state = TempDir::new("hup");
    let mut env: Vec<(&str, String)> = sim_env(&sim, &state)
        .into_iter()
        .filter(|(k, _)| *k != "ESPFD_LISTEN")
        .collect();
    env.push(("ESPFD_TLS_CERT", live.cert.display().to_string()));
    env.push(("ESPFD_TLS_KEY", live.key.display().to_string()));
    env.push(("RUST_LOG", "info".into()));
    let mut d = Espfd::spawn(&env, None);
    let client = tls_client(&certs.ca, &[&TLS13, &TLS12]);
    let mut open = tls_connect(d.addr, client.clone()).unwrap();
    assert_eq!(peer_cert(&open), first.der());

    second.install(&live);
    d.signal(libc::SIGHUP);
    assert!(
        eventually(Duration::from_secs(10), || {
            tls_connect(d.addr, client.clone()).is_ok_and(|c| peer_cert(&c) == second.der())
        }),
        "new connections did not get the new certificate:\n{}",
        d.log()
    );
    assert!(d.running());
    assert_eq!(get_on(&mut open, "/healthz").0, 200);
    assert!(d.log().contains("TLS certificate reloaded"), "{}", d.log());

    // A broken file on the next SIGHUP: logged, and the service goes on with what it had.
    std::fs::write(&live.cert, "garbage\n").unwrap();
    d.signal(libc::SIGHUP);
    assert!(
        eventually(Duration::from_secs(10), || d
            .log()
            .contains("still serving the previous certificate")),
        "{}",
        d.log()
    );
    assert!(d.running());
    let c = tls_connect(d.addr, client).unwrap();
    assert_eq!(peer_cert(&c), second.der());
}

#[test]
fn a_client_that_never_finishes_the_handshake_is_cut_off_by_the_handshake_timeout() {
    let certs = Certs::new();
    let leaf = certs.leaf("server", Key::EcSec1);
    let h = https_harness(&leaf, |raw| {
        raw.set("ESPFD_TLS_HANDSHAKE_TIMEOUT", "1s")
            .set("ESPFD_IDLE_TIMEOUT", "60s");
    });
    let mut silent = TcpStream::connect(addr(&h)).unwrap();
    let mut partial = TcpStream::connect(addr(&h)).unwrap();
    partial
        .write_all(&client_hello([0x03, 0x03])[..20])
        .unwrap();
    for s in [&mut silent, &mut partial] {
        let (_, closed) = read_until_closed(s, Duration::from_secs(10));
        assert!(closed, "still open well past ESPFD_TLS_HANDSHAKE_TIMEOUT");
    }
    // And the listener still serves.
    let mut c = tls_connect(addr(&h), tls_client(&certs.ca, &[&TLS13])).unwrap();
    assert_eq!(get_on(&mut c, "/healthz").0, 200);
}

#[test]
fn client_hello_then_close_notify_leaves_the_process_idle() {
    let certs = Certs::new();
    let leaf = certs.leaf("server", Key::RsaPkcs8);
    let sim = Sim::start("127.0.0.1:0", SimConfig::default()).unwrap();
    let state = TempDir::new("spin");
    let mut env: Vec<(&str, String)> = sim_env(&sim, &state)
        .into_iter()
        .filter(|(k, _)| *k != "ESPFD_LISTEN")
        .collect();
    env.push(("ESPFD_TLS_CERT", leaf.cert.display().to_string()));
    env.push(("ESPFD_TLS_KEY", leaf.key.display().to_string()));
    env.push(("ESPFD_TLS_HANDSHAKE_TIMEOUT", "4s".into()));
    env.push(("RUST_LOG", "warn".into()));
    let mut d = Espfd::spawn(&env, None);
    let hello = client_hello([0x03, 0x03]);

    // The hand-made ClientHello is a valid one: the server answers with its ServerHello.
    let mut a = TcpStream::connect(d.addr).unwrap();
    a.write_all(&hello).unwrap();
    let mut head = [0u8; 6];
    a.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    std::io::Read::read_exact(&mut a, &mut head).unwrap();
    assert_eq!(
        (head[0], head[1], head[2], head[5]),
        (0x16, 0x03, 0x03, 0x02),
        "a TLS 1.2 ServerHello"
    );
    // Then close_notify, with the socket left open: the case that made rustls 0.20 spin.
    a.write_all(&CLOSE_NOTIFY).unwrap();
    // And in one write, ClientHello and close_notify together.
    let mut b = TcpStream::connect(d.addr).unwrap();
    b.write_all(&[hello.as_slice(), &CLOSE_NOTIFY].concat())
        .unwrap();

    // While both connections are held open, the process stays idle. (rustls takes a TLS 1.2
    // close_notify during the handshake as a warning alert and waits for more, so the
    // connection lasts until the handshake timeout; it must wait, not spin.)
    let before = d.cpu_time();
    std::thread::sleep(Duration::from_secs(2));
    let used = d.cpu_time() - before;
    assert!(
        used < Duration::from_millis(500),
        "espfd used {used:?} of CPU in 2 s after ClientHello + close_notify (a spin?)"
    );
    // The handshake timeout ends both.
    for s in [&mut a, &mut b] {
        let (_, closed) = read_until_closed(s, Duration::from_secs(15));
        assert!(
            closed,
            "the connection outlived ESPFD_TLS_HANDSHAKE_TIMEOUT"
        );
    }
    let before = d.cpu_time();
    std::thread::sleep(Duration::from_secs(1));
    assert!(d.cpu_time() - before < Duration::from_millis(250));
    assert!(d.running());
}

/// A TLS close_notify alert record.
const CLOSE_NOTIFY: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x01, 0x00];

/// A minimal ClientHello offering `version` (TLS 1.2: 03 03) with the ECDHE suites rustls
/// supports, X25519 and P-256, and RSA and ECDSA signature algorithms.
fn client_hello(version: [u8; 2]) -> Vec<u8> {
    fn ext(out: &mut Vec<u8>, kind: u16, data: &[u8]) {
        out.extend_from_slice(&kind.to_be_bytes());
        out.extend_from_slice(&(data.len() as u16).to_be_bytes());
        out.extend_from_slice(data);
    }
    let mut body = Vec::new();
    body.extend_from_slice(&version);
    body.extend_from_slice(&[0x42; 32]); // random
    body.push(0); // no session id
    let suites: [u16; 6] = [0xc02f, 0xc030, 0xc02b, 0xc02c, 0xcca8, 0xcca9];
    body.extend_from_slice(&((suites.len() * 2) as u16).to_be_bytes());
    for s in suites {
        body.extend_from_slice(&s.to_be_bytes());
    }
    body.extend_from_slice(&[1, 0]); // compression: null
    let mut exts = Vec::new();
    ext(&mut exts, 0x000a, &[0x00, 0x04, 0x00, 0x1d, 0x00, 0x17]); // supported_groups
    ext(&mut exts, 0x000b, &[0x01, 0x00]); // ec_point_formats: uncompressed
    ext(
        &mut exts,
        0x000d, // signature_algorithms
        &[0x00, 0x08, 0x04, 0x01, 0x08, 0x04, 0x04, 0x03, 0x05, 0x01],
    );
    body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
    body.extend_from_slice(&exts);
    let mut handshake = vec![0x01]; // client_hello
    handshake.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    handshake.extend_from_slice(&body);
    let mut record = vec![0x16, version[0], version[1]];
    record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
    record.extend_from_slice(&handshake);
    record
}
