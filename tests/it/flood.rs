//! The connection limit protects the service instead of being the attack (issue 8, item 1):
//! one address holding the limit's worth of silent connections and of slowly-polling
//! keep-alive connections does not keep another client's event from a 200, over HTTP and
//! HTTPS; a connection that sends nothing is closed at ESPFD_FIRST_BYTE_TIMEOUT; refusals
//! and closures are counted in /metrics.
//!
//! Each test runs the real binary, a process of its own, so its metrics hold exactly what
//! the test did to it. The attacker connects from 127.0.0.1, the real client from
//! 127.0.0.2 (all of 127.0.0.0/8 is loopback on Linux).

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use espfd::sim::{Sim, SimConfig};
use rustls::version::TLS13;
use rustls::ClientConfig;

use crate::harness::Espfd;
use crate::harness::{account_event, basic, eventually, sim_env, TempDir, PASSWORD, USER};
use crate::support::{
    connect_from, peer_state, read_reply, tls_client, tls_handshake, Certs, Key, Peer,
};

const CLIENT: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

/// `Espfd::spawn` knows the binary is up by connecting once from 127.0.0.1 and closing; if
/// espfd has not yet seen that close when the flood starts, that idle connection is the
/// first to make room, and is counted without being one of the attacker's.
const SPAWN_PROBE: u64 = 1;

/// Whether `counted` closures account for the `seen` ones the attacker saw.
fn accounts_for(counted: u64, seen: usize) -> bool {
    (seen as u64..=seen as u64 + SPAWN_PROBE).contains(&counted)
}

fn spawn(extra: &[(&'static str, String)]) -> (Espfd, Sim, TempDir) {
    let sim = Sim::start("127.0.0.1:0", SimConfig::default()).unwrap();
    let state = TempDir::new("flood");
    let mut env: Vec<(&str, String)> = sim_env(&sim, &state)
        .into_iter()
        .filter(|(k, _)| *k != "ESPFD_LISTEN")
        .collect();
    env.push(("RUST_LOG", "warn".into()));
    env.extend(extra.iter().cloned());
    (Espfd::spawn(&env, None), sim, state)
}

/// A connection of the attacker, plain or TLS; its TCP socket is what is watched.
enum Conn {
    Plain(TcpStream),
    Tls(Box<crate::support::TlsClient>),
}

impl Conn {
    fn tcp(&self) -> &TcpStream {
        match self {
            Conn::Plain(s) => s,
            Conn::Tls(s) => &s.sock,
        }
    }
}

/// One request on a fresh connection from 127.0.0.2, over TLS when `tls` is given; the
/// reply's status (None: closed without one).
fn from_client(addr: SocketAddr, tls: Option<&Arc<ClientConfig>>, request: &[u8]) -> Option<u16> {
    let tcp = connect_from(CLIENT, addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    match tls {
        None => {
            let mut s = tcp;
            s.write_all(request).ok()?;
            read_reply(&mut s).map(|r| r.0)
        }
        Some(config) => {
            let mut s = tls_handshake(tcp, config.clone()).ok()?;
            s.write_all(request).ok()?;
            s.flush().ok()?;
            read_reply(&mut s).map(|r| r.0)
        }
    }
}

fn event_request(i_event: i64) -> Vec<u8> {
    let body = account_event("Subscriber/Updated", i_event, 1000889);
    format!(
        "POST /events HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        basic(USER, PASSWORD),
        body.len()
    )
    .into_bytes()
}

/// The value of `series` in the binary's /metrics, scraped from 127.0.0.2.
fn metric(addr: SocketAddr, tls: Option<&Arc<ClientConfig>>, series: &str) -> u64 {
    let tcp = connect_from(CLIENT, addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let req = b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let reply = match tls {
        None => {
            let mut s = tcp;
            s.write_all(req).unwrap();
            read_reply(&mut s)
        }
        Some(config) => {
            let mut s = tls_handshake(tcp, config.clone()).unwrap();
            s.write_all(req).unwrap();
            read_reply(&mut s)
        }
    };
    let (status, _, text) = reply.expect("a /metrics reply");
    assert_eq!(status, 200);
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("{series} not in\n{text}"))
        .parse()
        .unwrap()
}

/// `n` connections from 127.0.0.1 that never send a byte, then `n` that each send one
/// `GET /healthz` (after the handshake, over TLS) and then sit idle, as a client polling
/// every 45 s does between polls. Returns them all; a poller closed by espfd before its
/// reply (its slot given to a later one) is kept too.
fn attack(addr: SocketAddr, tls: Option<&Arc<ClientConfig>>, n: usize) -> Vec<Conn> {
    let mut conns = Vec::with_capacity(2 * n);
    for _ in 0..n {
        conns.push(Conn::Plain(TcpStream::connect(addr).unwrap()));
    }
    let poll = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    for _ in 0..n {
        let tcp = TcpStream::connect(addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        match tls {
            None => {
                let mut s = tcp;
                if s.write_all(poll).is_ok() {
                    if let Some((status, _, _)) = read_reply(&mut s) {
                        assert_eq!(status, 200);
                    }
                }
                conns.push(Conn::Plain(s));
            }
            Some(config) => match tls_handshake(tcp.try_clone().unwrap(), config.clone()) {
                Ok(mut s) => {
                    if s.write_all(poll).is_ok() && s.flush().is_ok() {
                        if let Some((status, _, _)) = read_reply(&mut s) {
                            assert_eq!(status, 200);
                        }
                    }
                    conns.push(Conn::Tls(Box::new(s)));
                }
                // Closed during the handshake to make room for a later one.
                Err(_) => conns.push(Conn::Plain(tcp)),
            },
        }
    }
    conns
}

/// The attacker's connections and what espfd did to each, once it did something.
struct Watch {
    conns: Vec<Conn>,
    /// `Some(true)`: refused with 503; `Some(false)`: closed without a reply.
    ended: Vec<Option<bool>>,
}

impl Watch {
    fn new(conns: Vec<Conn>) -> Watch {
        let ended = vec![None; conns.len()];
        Watch { conns, ended }
    }

    /// Looks at every connection not yet ended; returns (open, closed, refused).
    fn update(&mut self) -> (usize, usize, usize) {
        for (c, ended) in self.conns.iter().zip(self.ended.iter_mut()) {
            if ended.is_none() {
                if let Peer::Closed(got) = peer_state(c.tcp()) {
                    *ended = Some(got.starts_with(b"HTTP/1.1 503"));
                }
            }
        }
        let closed = self.ended.iter().filter(|e| **e == Some(false)).count();
        let refused = self.ended.iter().filter(|e| **e == Some(true)).count();
        (self.conns.len() - closed - refused, closed, refused)
    }
}

/// With the default limits (256, at most 64 per address): the attacker's address never holds
/// more than its share, so there is always room for another address.
#[test]
fn one_address_flooding_with_default_limits_leaves_room_for_the_real_client() {
    // Long first-byte and idle timeouts, so that every closure seen is one made for room.
    let (d, _sim, _state) = spawn(&[
        ("ESPFD_FIRST_BYTE_TIMEOUT", "10m".into()),
        ("ESPFD_IDLE_TIMEOUT", "10m".into()),
    ]);
    let mut watch = Watch::new(attack(d.addr, None, 256));
    assert_eq!(from_client(d.addr, None, &event_request(1)), Some(200));
    // Once espfd has taken in every connection, the attacker holds at most 64 of them, and
    // every closure and refusal it saw is counted.
    let closed_series = "espfd_connections_closed_total{reason=\"idle_for_room\"}";
    let refused_series = "espfd_connections_refused_total{reason=\"max_per_addr\"}";
    let mut seen = (0, 0, 0);
    let mut counted = (0, 0);
    let settled = eventually(Duration::from_secs(20), || {
        counted = (
            metric(d.addr, None, closed_series),
            metric(d.addr, None, refused_series),
        );
        seen = watch.update();
        seen.0 <= 64 && accounts_for(counted.0, seen.1) && counted.1 == seen.2 as u64
    });
    assert!(
        settled,
        "attacker (open, closed, refused): {seen:?}; counted (closed, refused): {counted:?}"
    );
    assert_eq!(seen.1 + seen.2, 512 - seen.0);
    assert_eq!(
        metric(
            d.addr,
            None,
            "espfd_connections_refused_total{reason=\"max_connections\"}"
        ),
        0
    );
    // And the real client is still answered.
    assert_eq!(from_client(d.addr, None, &event_request(2)), Some(200));
}

/// With no per-address cap (ESPFD_MAX_CONNECTIONS_PER_ADDR = ESPFD_MAX_CONNECTIONS, as
/// behind a proxy), idle connections are closed to make room.
fn idle_connections_make_room(tls: Option<(&Arc<ClientConfig>, &crate::support::Leaf)>) {
    let mut env = vec![
        ("ESPFD_MAX_CONNECTIONS", "32".to_string()),
        ("ESPFD_MAX_CONNECTIONS_PER_ADDR", "32".to_string()),
        ("ESPFD_FIRST_BYTE_TIMEOUT", "10m".into()),
        ("ESPFD_IDLE_TIMEOUT", "10m".into()),
    ];
    if let Some((_, leaf)) = tls {
        env.push(("ESPFD_TLS_CERT", leaf.cert.display().to_string()));
        env.push(("ESPFD_TLS_KEY", leaf.key.display().to_string()));
    }
    let (d, _sim, _state) = spawn(&env);
    let config = tls.map(|(c, _)| c);
    let mut watch = Watch::new(attack(d.addr, config, 32));
    assert_eq!(from_client(d.addr, config, &event_request(1)), Some(200));
    // Every scrape takes a slot too, from an idle attacker: look after it.
    let series = "espfd_connections_closed_total{reason=\"idle_for_room\"}";
    let mut seen = (0, 0, 0);
    let mut counted = 0;
    let settled = eventually(Duration::from_secs(20), || {
        counted = metric(d.addr, config, series);
        seen = watch.update();
        seen.0 <= 32 && accounts_for(counted, seen.1)
    });
    assert!(
        settled,
        "attacker (open, closed, refused): {seen:?}; counted closed: {counted}"
    );
    assert!(seen.1 >= 32, "{seen:?}");
    assert_eq!(
        seen.2, 0,
        "idle connections make room; nothing needs refusing"
    );
    assert_eq!(from_client(d.addr, config, &event_request(2)), Some(200));
}

#[test]
fn idle_connections_make_room_over_http() {
    idle_connections_make_room(None);
}

#[test]
fn idle_connections_make_room_over_https() {
    let certs = Certs::new();
    let leaf = certs.leaf("server", Key::EcSec1);
    let config = tls_client(&certs.ca, &[&TLS13]);
    idle_connections_make_room(Some((&config, &leaf)));
}

/// A connection that sends nothing is closed at ESPFD_FIRST_BYTE_TIMEOUT, long before the
/// idle timeout; over HTTPS before the handshake and after it.
#[test]
fn silent_connections_are_closed_at_the_first_byte_timeout() {
    let certs = Certs::new();
    let leaf = certs.leaf("server", Key::EcSec1);
    let config = tls_client(&certs.ca, &[&TLS13]);
    let (plain, _sim, _state) = spawn(&[
        ("ESPFD_FIRST_BYTE_TIMEOUT", "1s".into()),
        ("ESPFD_IDLE_TIMEOUT", "10m".into()),
    ]);
    let (https, _sim2, _state2) = spawn(&[
        ("ESPFD_FIRST_BYTE_TIMEOUT", "1s".into()),
        ("ESPFD_IDLE_TIMEOUT", "10m".into()),
        ("ESPFD_TLS_CERT", leaf.cert.display().to_string()),
        ("ESPFD_TLS_KEY", leaf.key.display().to_string()),
    ]);
    let silent = TcpStream::connect(plain.addr).unwrap();
    let silent_tls = TcpStream::connect(https.addr).unwrap();
    let handshaken = tls_handshake(TcpStream::connect(https.addr).unwrap(), config.clone())
        .expect("a handshake");
    // A keep-alive connection that has made a request is under the idle timeout instead.
    let mut kept = TcpStream::connect(plain.addr).unwrap();
    kept.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert_eq!(read_reply(&mut kept).map(|r| r.0), Some(200));

    for (name, s) in [
        ("plain", &silent),
        ("TLS, no ClientHello", &silent_tls),
        ("TLS, no request after the handshake", &handshaken.sock),
    ] {
        assert!(
            eventually(Duration::from_secs(20), || peer_state(s) != Peer::Open),
            "{name}: still open long after ESPFD_FIRST_BYTE_TIMEOUT"
        );
        assert_eq!(
            peer_state(s),
            Peer::Closed(Vec::new()),
            "{name}: closed silently"
        );
    }
    assert_eq!(peer_state(&kept), Peer::Open);
    let series = "espfd_connections_closed_total{reason=\"first_byte_timeout\"}";
    assert_eq!(metric(plain.addr, None, series), 1);
    assert_eq!(metric(https.addr, Some(&config), series), 2);
    // The kept connection still serves.
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert_eq!(read_reply(&mut kept).map(|r| r.0), Some(200));
}
