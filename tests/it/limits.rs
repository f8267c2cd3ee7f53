//! The listener under pressure: hundreds of idle connections, a trickling client, a 1 MiB
//! header line, running out of file descriptors, the header-count and requests-per-connection
//! limits, and the IP allow-list.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use espfd::sim::{Sim, SimConfig};

use crate::harness::Espfd;
use crate::harness::{
    account_event, basic, eventually, post, sim_env, Harness, TempDir, Test, PASSWORD, USER,
};
use crate::support::{connect_from, peer_state, read_reply, read_until_closed, Peer};

fn addr(h: &Harness) -> SocketAddr {
    h.service.as_ref().unwrap().local_addr()
}

/// One `GET /healthz` on a new connection: the reply's status, or None if there was none.
fn health(addr: SocketAddr) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .ok()?;
    read_reply(&mut s).map(|r| r.0)
}

/// The environment for a spawned binary against `sim`, without ESPFD_LISTEN.
fn binary_env(sim: &Sim, state: &TempDir) -> Vec<(&'static str, String)> {
    sim_env(sim, state)
        .into_iter()
        .filter(|(k, _)| *k != "ESPFD_LISTEN")
        .collect()
}

#[test]
fn three_hundred_idle_connections_and_a_new_client_is_still_answered() {
    let h = Harness::start(); // ESPFD_MAX_CONNECTIONS 256
    let a = addr(&h);
    let idle: Vec<TcpStream> = (0..300).map(|_| TcpStream::connect(a).unwrap()).collect();
    // Until espfd has taken all 300 (236 closed to keep 127.0.0.1 at its 64), read from
    // another address, which evicts nobody.
    let from_another = || {
        let mut s = connect_from(Ipv4Addr::new(127, 0, 0, 2), a).ok()?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .ok()?;
        read_reply(&mut s).map(|r| r.2)
    };
    assert!(
        eventually(Duration::from_secs(10), || from_another().is_some_and(
            |m| m.contains("espfd_connections_closed_total{reason=\"idle_for_room\"} 236\n")
        )),
        "espfd did not take the 300 connections"
    );
    // Every held connection is idle, so room is made (a 503 would mean none was idle): the
    // new client is answered.
    assert_eq!(health(a), Some(200), "with 300 idle connections open");
    // All 301 come from 127.0.0.1, which may hold 64 (ESPFD_MAX_CONNECTIONS_PER_ADDR): the
    // oldest held ones were closed to make room, 236 for the others and 1 for the new
    // client, long before ESPFD_FIRST_BYTE_TIMEOUT would close any.
    let closed = || idle.iter().filter(|s| peer_state(s) != Peer::Open).count();
    assert!(
        eventually(Duration::from_secs(1), || closed() == 237),
        "{} held connections closed",
        closed()
    );
    // And counted so (the new client's slot was free again for the scrape).
    let scrape = crate::metrics::get(&format!("{}/metrics", h.base())).2;
    assert!(
        scrape.contains("espfd_connections_closed_total{reason=\"idle_for_room\"} 237\n"),
        "{scrape}"
    );
    drop(idle);
    assert!(eventually(Duration::from_secs(5), || health(a) == Some(200)));
    assert_eq!(
        h.post(&account_event("Subscriber/Updated", 1, 1000889)).0,
        200
    );
}

#[test]
fn a_client_sending_one_byte_a_second_does_not_delay_another() {
    let h = Test::new().env("ESPFD_READ_TIMEOUT", "4s").start();
    let a = addr(&h);
    let trickler = std::thread::spawn(move || {
        let mut s = TcpStream::connect(a).unwrap();
        let request = b"POST /events HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}";
        for b in request.iter() {
            if s.write_all(&[*b]).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut reply = String::new();
        let _ = s.read_to_string(&mut reply);
        reply
    });
    std::thread::sleep(Duration::from_millis(1500));
    let auth = basic(USER, PASSWORD);
    // Each event is answered while the trickler is still connected, its request unfinished.
    for i in 0..5 {
        let body = account_event("Subscriber/Updated", 10 + i, 1000889);
        assert_eq!(post(&h.url(), Some(&auth), &body).0, 200);
        assert!(!trickler.is_finished(), "event {i} waited for the trickler");
        std::thread::sleep(Duration::from_millis(300));
    }
    let reply = trickler.join().unwrap();
    assert!(
        reply.starts_with("HTTP/1.1 408"),
        "the trickler is cut off at ESPFD_READ_TIMEOUT: {reply:?}"
    );
}

#[test]
fn one_mib_header_lines_get_431_and_memory_stays_flat() {
    let sim = Sim::start("127.0.0.1:0", SimConfig::default()).unwrap();
    let state = TempDir::new("bighead");
    let mut env = binary_env(&sim, &state);
    env.push(("RUST_LOG", "warn".into()));
    let d = Espfd::spawn(&env, None);
    let huge = |n: usize| {
        let mut r = format!("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big-{n}: ").into_bytes();
        r.resize(r.len() + (1 << 20), b'a');
        r.extend_from_slice(b"\r\n\r\n");
        r
    };
    // Sends `huge` from one thread while reading the reply in this one.
    let exchange = move |addr: SocketAddr, n: usize| -> String {
        let s = TcpStream::connect(addr).unwrap();
        let mut w = s.try_clone().unwrap();
        let writer = std::thread::spawn(move || {
            let _ = w.write_all(&huge(n));
        });
        let mut r = s;
        r.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut head = [0u8; 12];
        let got = r
            .read_exact(&mut head)
            .map(|_| String::from_utf8_lossy(&head).into_owned());
        drop(r);
        let _ = writer.join();
        got.unwrap_or_else(|e| format!("no reply: {e}"))
    };
    // Warm up the connection code (thread stacks, allocator arenas) before measuring.
    for n in 0..8 {
        assert_eq!(exchange(d.addr, n), "HTTP/1.1 431");
    }
    let rss_before = d.vm_kib("VmRSS");
    let peak_before = d.vm_kib("VmHWM");
    // 64 of them, 16 at a time: a server that buffered the line would need 16 MiB at once.
    for round in 0..4 {
        let handles: Vec<_> = (0..16)
            .map(|i| {
                let addr = d.addr;
                std::thread::spawn(move || exchange(addr, round * 16 + i))
            })
            .collect();
        for h in handles {
            assert_eq!(h.join().unwrap(), "HTTP/1.1 431");
        }
    }
    let rss_after = d.vm_kib("VmRSS");
    let peak_after = d.vm_kib("VmHWM");
    assert!(
        peak_after.saturating_sub(peak_before) < 8 * 1024,
        "peak memory grew from {peak_before} KiB to {peak_after} KiB"
    );
    assert!(
        rss_after.saturating_sub(rss_before) < 8 * 1024,
        "resident memory grew from {rss_before} KiB to {rss_after} KiB"
    );
    assert_eq!(health(d.addr), Some(200));
}

#[test]
fn running_out_of_file_descriptors_does_not_stop_the_listener() {
    let sim = Sim::start("127.0.0.1:0", SimConfig::default()).unwrap();
    let state = TempDir::new("emfile");
    let mut env = binary_env(&sim, &state);
    env.push(("RUST_LOG", "warn".into()));
    let mut d = Espfd::spawn(&env, Some("ulimit -n 64"));
    // Open connections until espfd reports that accept failed.
    let mut held = Vec::new();
    let emfile = eventually(Duration::from_secs(20), || {
        if let Ok(s) = TcpStream::connect_timeout(&d.addr, Duration::from_millis(500)) {
            held.push(s);
        }
        d.log().contains("accept failed")
    });
    assert!(
        emfile,
        "no accept failure after {} connections:\n{}",
        held.len(),
        d.log()
    );
    assert!(d.log().contains("Too many open files"), "{}", d.log());
    assert!(held.len() < 200, "{} connections held", held.len());
    drop(held);
    // Once the connections are gone, espfd serves again: health and a stored event.
    assert!(
        eventually(Duration::from_secs(15), || health(d.addr) == Some(200)),
        "{}",
        d.log()
    );
    let url = format!("http://{}/events", d.addr);
    let body = account_event("Subscriber/Updated", 1, 1000889);
    assert_eq!(post(&url, Some(&basic(USER, PASSWORD)), &body).0, 200);
    assert!(d.running());
}

#[test]
fn header_count_and_requests_per_connection_are_limited() {
    let h = Test::new()
        .env("ESPFD_MAX_HEADERS", "10")
        .env("ESPFD_MAX_REQUESTS_PER_CONNECTION", "3")
        .start();
    let a = addr(&h);
    let with_headers = |n: usize| {
        let mut s = TcpStream::connect(a).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let extra: String = (0..n - 2).map(|i| format!("X-{i}: y\r\n")).collect();
        s.write_all(
            format!("GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{extra}\r\n")
                .as_bytes(),
        )
        .unwrap();
        read_reply(&mut s).map(|r| r.0)
    };
    assert_eq!(with_headers(10), Some(200));
    assert_eq!(with_headers(11), Some(431));

    // Four requests pipelined on one connection: three answered, the third says it closes.
    let mut s = TcpStream::connect(a).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(&b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n".repeat(4))
        .unwrap();
    let replies: Vec<_> = std::iter::from_fn(|| read_reply(&mut s)).collect();
    assert_eq!(replies.len(), 3, "{replies:?}");
    assert!(replies.iter().all(|r| r.0 == 200));
    assert!(!replies[1].1.contains("Connection: close"));
    assert!(
        replies[2].1.contains("Connection: close"),
        "{}",
        replies[2].1
    );
}

#[test]
fn the_allow_list_refuses_other_peers_before_reading_and_serves_listed_ones() {
    let from2 = Ipv4Addr::new(127, 0, 0, 2);
    let request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let h = Test::new().env("ESPFD_ALLOW_FROM", "127.0.0.2/32").start();
    let a = addr(&h);
    // From 127.0.0.1: closed at once, no reply.
    let mut s = TcpStream::connect(a).unwrap();
    let _ = s.write_all(request);
    let (got, closed) = read_until_closed(&mut s, Duration::from_secs(5));
    assert!(
        closed && got.is_empty(),
        "got {:?}",
        String::from_utf8_lossy(&got)
    );
    // From 127.0.0.2: served.
    let mut s = connect_from(from2, a).expect("a socket bound to 127.0.0.2");
    s.write_all(request).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(read_reply(&mut s).map(|r| r.0), Some(200));
    drop(h);

    // The other way round, with an IPv6 entry in the list too.
    let h = Test::new()
        .env("ESPFD_ALLOW_FROM", "10.0.0.0/8, 127.0.0.1, ::1/128")
        .start();
    let a = addr(&h);
    assert_eq!(health(a), Some(200));
    let mut s = connect_from(from2, a).unwrap();
    let _ = s.write_all(request);
    let (got, closed) = read_until_closed(&mut s, Duration::from_secs(5));
    assert!(
        closed && got.is_empty(),
        "got {:?}",
        String::from_utf8_lossy(&got)
    );
}
