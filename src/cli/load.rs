//! A keep-alive HTTP/1.1 load generator for event POSTs: used by `espfd send` and by the
//! ingest benchmark.
//!
//! Each connection is one thread that sends a request, reads the whole reply, and records
//! the latency; with a rate, request `n` is not sent before `n / rate` seconds into the run.
//! Connections are plain TCP or TLS (rustls over the same `TcpStream`), and every request
//! gets a fresh `Date` header plus the headers a caller computes for it (the signature scheme
//! signs that `Date`). It speaks just enough HTTP for espfd's replies (`Content-Length`
//! bodies); it is not a general HTTP client.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};

/// The extra headers of request `n` (0-based), given the `Date` value it carries.
pub type HeaderFn = Arc<dyn Fn(u64, &str) -> Vec<(String, String)> + Send + Sync>;

/// The body of request `n` (0-based).
pub type BodyFn = Arc<dyn Fn(u64) -> Vec<u8> + Send + Sync>;

/// TLS for every connection.
#[derive(Clone)]
pub struct Tls {
    /// The client configuration (roots or the insecure verifier, ring provider).
    pub config: Arc<ClientConfig>,
    /// The name the server's certificate must carry; also sent as SNI when it is a DNS name.
    pub server_name: ServerName<'static>,
}

/// What to send.
pub struct LoadSpec {
    /// The server's address.
    pub addr: SocketAddr,
    /// The `Host` header. [`LoadSpec::new`] sets the address.
    pub host: String,
    /// The events path, e.g. `/events`.
    pub path: String,
    /// TLS, or `None` for plain HTTP.
    pub tls: Option<Tls>,
    /// Parallel keep-alive connections.
    pub connections: usize,
    /// Requests in all.
    pub total: u64,
    /// Requests per second over all connections; `None` for as fast as possible.
    pub rate: Option<f64>,
    /// Connect, read and write timeout of each request. [`LoadSpec::new`] sets 30 s.
    pub timeout: Duration,
    /// The body of request `n`.
    pub body: BodyFn,
    /// The headers of request `n` besides `Host`, `Content-Type`, `Content-Length` and `Date`,
    /// e.g. `Authorization`. [`LoadSpec::new`] sets none.
    pub headers: HeaderFn,
}

impl LoadSpec {
    /// `total` POSTs of `body(n)` to `path` on `addr` over one plain connection, as fast as
    /// possible, with no extra headers; change the fields for more.
    pub fn new(
        addr: SocketAddr,
        path: &str,
        total: u64,
        body: impl Fn(u64) -> Vec<u8> + Send + Sync + 'static,
    ) -> LoadSpec {
        LoadSpec {
            addr,
            host: addr.to_string(),
            path: path.to_string(),
            tls: None,
            connections: 1,
            total,
            rate: None,
            timeout: Duration::from_secs(30),
            body: Arc::new(body),
            headers: Arc::new(|_, _| Vec::new()),
        }
    }
}

/// The same header on every request.
pub fn fixed_header(name: &str, value: &str) -> HeaderFn {
    let header = (name.to_string(), value.to_string());
    Arc::new(move |_, _| vec![header.clone()])
}

/// What came back.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// Replies by status code.
    pub codes: BTreeMap<u16, u64>,
    /// The first reply body seen for each status code, at most 200 characters.
    pub examples: BTreeMap<u16, String>,
    /// Requests that got no reply (connection or TLS errors).
    pub errors: u64,
    /// The first of those errors.
    pub first_error: Option<String>,
    /// Wall time of the whole run.
    pub elapsed: Duration,
    /// Latency of each answered request, in microseconds, sorted.
    pub latencies_us: Vec<u32>,
}

impl LoadReport {
    /// Answered requests per second.
    pub fn throughput(&self) -> f64 {
        self.latencies_us.len() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The `p`-th percentile latency (0..=100) in milliseconds (nearest rank).
    pub fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return 0.0;
        }
        let idx = ((p / 100.0) * (self.latencies_us.len() - 1) as f64).round() as usize;
        f64::from(self.latencies_us[idx]) / 1000.0
    }

    /// `p50 1.20 ms, p90 ..., p99 ..., p99.9 ..., max ...`.
    pub fn latency_line(&self) -> String {
        format!(
            "p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
            self.percentile_ms(50.0),
            self.percentile_ms(90.0),
            self.percentile_ms(99.0),
            self.percentile_ms(99.9),
            self.percentile_ms(100.0),
        )
    }

    /// One-line summary.
    pub fn summary(&self) -> String {
        let codes: Vec<String> = self.codes.iter().map(|(c, n)| format!("{c}×{n}")).collect();
        format!(
            "{} replies in {:.2} s = {:.0}/s; latency {}; codes [{}]; errors {}",
            self.latencies_us.len(),
            self.elapsed.as_secs_f64(),
            self.throughput(),
            self.latency_line(),
            codes.join(", "),
            self.errors
        )
    }
}

/// Runs the load and returns what came back.
pub fn run(spec: LoadSpec) -> LoadReport {
    let spec = Arc::new(spec);
    let next = Arc::new(AtomicU64::new(0));
    let report = Arc::new(Mutex::new(LoadReport::default()));
    let started = Instant::now();
    let connections = spec.connections.clamp(1, spec.total.max(1) as usize);
    let threads: Vec<_> = (0..connections)
        .map(|_| {
            let (spec, next, report) = (spec.clone(), next.clone(), report.clone());
            thread::spawn(move || connection(&spec, &next, &report, started))
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    let mut r = std::mem::take(&mut *report.lock().unwrap_or_else(|p| p.into_inner()));
    r.elapsed = started.elapsed();
    r.latencies_us.sort_unstable();
    r
}

/// One connection, plain or TLS.
enum Conn {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Conn {
    fn open(spec: &LoadSpec) -> io::Result<Conn> {
        let s = TcpStream::connect_timeout(&spec.addr, spec.timeout)?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(spec.timeout))?;
        s.set_write_timeout(Some(spec.timeout))?;
        Ok(match &spec.tls {
            None => Conn::Plain(s),
            Some(tls) => {
                let conn = ClientConnection::new(tls.config.clone(), tls.server_name.clone())
                    .map_err(io::Error::other)?;
                // The handshake happens on the first write and read.
                Conn::Tls(Box::new(StreamOwned::new(conn, s)))
            }
        })
    }

    /// Says goodbye properly (TLS close_notify); errors do not matter any more.
    fn close(self) {
        if let Conn::Tls(mut s) = self {
            s.conn.send_close_notify();
            let _ = s.flush();
        }
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf),
            Conn::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.write(buf),
            Conn::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Conn::Plain(s) => s.flush(),
            Conn::Tls(s) => s.flush(),
        }
    }
}

/// The bytes of request `n`.
fn request_bytes(spec: &LoadSpec, n: u64) -> Vec<u8> {
    let body = (spec.body)(n);
    let date = crate::util::format_http_date(crate::util::now_ms() / 1000);
    let mut head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nDate: {date}\r\nContent-Length: {}\r\n",
        spec.path,
        spec.host,
        body.len()
    );
    for (name, value) in (spec.headers)(n, &date) {
        head.push_str(&name);
        head.push_str(": ");
        head.push_str(&value);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    let mut req = head.into_bytes();
    req.extend_from_slice(&body);
    req
}

fn connection(spec: &LoadSpec, next: &AtomicU64, report: &Mutex<LoadReport>, started: Instant) {
    let mut codes: BTreeMap<u16, u64> = BTreeMap::new();
    let mut examples: BTreeMap<u16, String> = BTreeMap::new();
    let mut lat = Vec::new();
    let mut errors = 0;
    let mut first_error = None;
    let mut conn: Option<Conn> = None;
    let mut buf = Vec::with_capacity(4096);
    loop {
        let n = next.fetch_add(1, Ordering::Relaxed);
        if n >= spec.total {
            break;
        }
        if let Some(rate) = spec.rate {
            let due = started + Duration::from_secs_f64(n as f64 / rate);
            let now = Instant::now();
            if due > now {
                thread::sleep(due - now);
            }
        }
        let req = request_bytes(spec, n);
        let t0 = Instant::now();
        let result = (|| -> io::Result<Reply> {
            if conn.is_none() {
                conn = Some(Conn::open(spec)?);
            }
            let c = conn.as_mut().expect("connected above");
            c.write_all(&req)?;
            c.flush()?;
            read_reply(c, &mut buf)
        })();
        match result {
            Ok(reply) => {
                lat.push(t0.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                *codes.entry(reply.status).or_default() += 1;
                examples.entry(reply.status).or_insert_with(|| {
                    let text = String::from_utf8_lossy(&buf[reply.body_start..]);
                    crate::util::truncate_chars(text.trim(), 200).to_string()
                });
                if reply.close {
                    if let Some(c) = conn.take() {
                        c.close();
                    }
                }
            }
            Err(e) => {
                errors += 1;
                first_error.get_or_insert_with(|| e.to_string());
                conn = None;
            }
        }
    }
    if let Some(c) = conn {
        c.close();
    }
    let mut r = report.lock().unwrap_or_else(|p| p.into_inner());
    for (c, n) in codes {
        *r.codes.entry(c).or_default() += n;
    }
    for (c, text) in examples {
        r.examples.entry(c).or_insert(text);
    }
    r.errors += errors;
    if r.first_error.is_none() {
        r.first_error = first_error;
    }
    r.latencies_us.extend(lat);
}

/// A reply's status, where its body starts in the buffer, and whether the server closes.
struct Reply {
    status: u16,
    body_start: usize,
    close: bool,
}

/// Reads one reply into `buf` (head and body).
fn read_reply(s: &mut impl Read, buf: &mut Vec<u8>) -> io::Result<Reply> {
    buf.clear();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 64 * 1024 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "reply head over 64 KiB",
            ));
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed before a reply",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no status code"))?;
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let close = head.contains("connection: close");
    while buf.len() < head_end + len {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed mid-reply",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    buf.truncate(head_end + len);
    Ok(Reply {
        status,
        body_start: head_end,
        close,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_carry_a_date_and_the_computed_headers() {
        let mut spec = LoadSpec::new("127.0.0.1:8080".parse().unwrap(), "/events", 1, |n| {
            format!("{{\"n\":{n}}}").into_bytes()
        });
        spec.headers = Arc::new(|n, date| vec![("X-Test".into(), format!("{n} {date}"))]);
        let text = String::from_utf8(request_bytes(&spec, 7)).unwrap();
        let date = text
            .lines()
            .find_map(|l| l.strip_prefix("Date: "))
            .expect("a Date header");
        assert!(crate::util::parse_http_date(date).is_some(), "{date}");
        assert!(text.contains(&format!("X-Test: 7 {date}\r\n")), "{text}");
        assert!(text.starts_with("POST /events HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"));
        assert!(text.contains("Content-Length: 7\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\n{\"n\":7}"), "{text}");
    }

    #[test]
    fn replies_are_read_whole_and_close_is_noticed() {
        let mut buf = Vec::new();
        let mut input: &[u8] =
            b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 13\r\nConnection: close\r\n\r\nunauthorized\nHTTP/1.1 200";
        let r = read_reply(&mut input, &mut buf).unwrap();
        assert_eq!((r.status, r.close), (401, true));
        assert_eq!(&buf[r.body_start..], b"unauthorized\n");
        let mut short: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab";
        assert!(read_reply(&mut short, &mut buf).is_err());
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let r = LoadReport {
            latencies_us: (1..=1000).map(|i| i * 1000).collect(),
            ..LoadReport::default()
        };
        assert_eq!(r.percentile_ms(50.0), 501.0);
        assert_eq!(r.percentile_ms(90.0), 900.0);
        assert_eq!(r.percentile_ms(100.0), 1000.0);
        assert!(r.latency_line().starts_with("p50 501.00 ms, p90 900.00 ms"));
    }
}
