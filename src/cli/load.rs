//! A keep-alive HTTP/1.1 load generator for event POSTs: used by the ingest benchmark and by
//! `espfd send`.
//!
//! Each connection is one thread that sends a request, reads the whole reply, and records
//! the latency. It speaks just enough HTTP for espfd's replies (`Content-Length` bodies).

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// What to send.
pub struct LoadSpec {
    /// espfd's listener.
    pub addr: SocketAddr,
    /// The events path, e.g. `/events`.
    pub path: String,
    /// The whole `Authorization` value, if any.
    pub authorization: Option<String>,
    /// Parallel keep-alive connections.
    pub connections: usize,
    /// Requests in all.
    pub total: u64,
    /// Requests per second over all connections; `None` for as fast as possible.
    pub rate: Option<f64>,
    /// The body of request number `n` (0-based).
    pub body: Arc<dyn Fn(u64) -> String + Send + Sync>,
}

/// What came back.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// Replies by status code.
    pub codes: BTreeMap<u16, u64>,
    /// Requests that got no reply (connection errors), with one example message.
    pub errors: u64,
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

    /// The `p`-th percentile latency (0..=100) in milliseconds.
    pub fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return 0.0;
        }
        let idx = ((p / 100.0) * (self.latencies_us.len() - 1) as f64).round() as usize;
        f64::from(self.latencies_us[idx]) / 1000.0
    }

    /// One-line summary.
    pub fn summary(&self) -> String {
        let codes: Vec<String> = self.codes.iter().map(|(c, n)| format!("{c}×{n}")).collect();
        format!(
            "{} replies in {:.2} s = {:.0}/s; latency p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms; codes [{}]; errors {}",
            self.latencies_us.len(),
            self.elapsed.as_secs_f64(),
            self.throughput(),
            self.percentile_ms(50.0),
            self.percentile_ms(99.0),
            self.percentile_ms(99.9),
            self.percentile_ms(100.0),
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
    let threads: Vec<_> = (0..spec.connections.max(1))
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

fn connection(spec: &LoadSpec, next: &AtomicU64, report: &Mutex<LoadReport>, started: Instant) {
    let mut codes: BTreeMap<u16, u64> = BTreeMap::new();
    let mut lat = Vec::new();
    let mut errors = 0;
    let mut first_error = None;
    let mut stream: Option<TcpStream> = None;
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
        let body = (spec.body)(n);
        let mut req = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nDate: {}\r\nContent-Length: {}\r\n",
            spec.path,
            spec.addr,
            crate::util::format_http_date(crate::util::now_ms() / 1000),
            body.len()
        );
        if let Some(a) = &spec.authorization {
            req.push_str(&format!("Authorization: {a}\r\n"));
        }
        req.push_str("\r\n");
        req.push_str(&body);
        let t0 = Instant::now();
        let result = (|| -> io::Result<(u16, bool)> {
            if stream.is_none() {
                let s = TcpStream::connect_timeout(&spec.addr, Duration::from_secs(5))?;
                s.set_nodelay(true)?;
                s.set_read_timeout(Some(Duration::from_secs(30)))?;
                stream = Some(s);
            }
            let s = stream.as_mut().expect("connected above");
            s.write_all(req.as_bytes())?;
            read_reply(s, &mut buf)
        })();
        match result {
            Ok((code, close)) => {
                lat.push(t0.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                *codes.entry(code).or_default() += 1;
                if close {
                    stream = None;
                }
            }
            Err(e) => {
                errors += 1;
                first_error.get_or_insert_with(|| e.to_string());
                stream = None;
            }
        }
    }
    let mut r = report.lock().unwrap_or_else(|p| p.into_inner());
    for (c, n) in codes {
        *r.codes.entry(c).or_default() += n;
    }
    r.errors += errors;
    if r.first_error.is_none() {
        r.first_error = first_error;
    }
    r.latencies_us.extend(lat);
}

/// Reads one reply; returns its status and whether the server closes the connection.
fn read_reply(s: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<(u16, bool)> {
    buf.clear();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
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
    let code: u16 = head
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
    Ok((code, close))
}
