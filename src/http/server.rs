//! Listener, connection threads and the request reader: one connection's life, from accept
//! to close, which is why it is kept in one file.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::allow::AllowList;
use super::limits::Limits;
use super::parse::{parse_request, request_head, Parsed};
use super::slots::Slots;
use super::tls::{self, Tls, Transport};
use super::{local_address, reason, Request, Response};
use crate::metrics::{Closed, Metrics, Refused};
use crate::util::Throttled;

/// Stack of a connection thread: parsing and handling need little, and many may exist.
const CONNECTION_STACK: usize = 256 * 1024;
/// After an error reply, how much of what the client still sends is read and discarded, and
/// for how long, so that the reply is not lost to a TCP reset ("lingering close").
const LINGER_BYTES: usize = 256 * 1024;
const LINGER_TIME: Duration = Duration::from_secs(1);

/// Something that answers requests. Must not panic: a panic is answered with 500 in debug
/// builds and aborts the process in release builds.
pub trait Handler: Send + Sync + 'static {
    /// Answers one request.
    fn handle(&self, req: Request) -> Response;

    /// Looks at a request's head before the client is asked for the body: called when a
    /// request with `Expect: 100-continue` has its head complete and its body still to come.
    /// `head` has an empty body. A reply returned here is sent instead of `100 Continue`
    /// (the body is never asked for, and the connection is closed after the reply); `None`
    /// lets the request go on. The default lets every request go on.
    fn precheck(&self, head: &Request) -> Option<Response> {
        let _ = head;
        None
    }
}

impl<F> Handler for F
where
    F: Fn(Request) -> Response + Send + Sync + 'static,
{
    fn handle(&self, req: Request) -> Response {
        self(req)
    }
}

/// What the listener needs besides its handler.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Limits and timeouts.
    pub limits: Limits,
    /// HTTPS: `None` serves plain HTTP.
    pub tls: Option<Arc<Tls>>,
    /// Peers allowed to connect; the default allows everyone.
    pub allow_from: AllowList,
    /// Where refused and closed connections are counted: the service's registry for the
    /// ingress; `None` (not counted) for the simulators.
    pub metrics: Option<Arc<Metrics>>,
}

struct Shared {
    limits: Limits,
    tls: Option<Arc<Tls>>,
    allow_from: AllowList,
    handler: Arc<dyn Handler>,
    metrics: Option<Arc<Metrics>>,
    stop: AtomicBool,
    /// Connection threads running (an evicted connection's thread may outlive its slot by
    /// the moment it takes to notice).
    active: AtomicUsize,
    next_id: AtomicU64,
    /// Who holds the slots, with clones of their sockets, so that eviction and shutdown can
    /// end idle reads at once.
    slots: Mutex<Slots>,
}

impl Shared {
    fn closed(&self, why: Closed) {
        if let Some(m) = &self.metrics {
            m.connection_closed(why);
        }
    }

    fn refused(&self, why: Refused) {
        if let Some(m) = &self.metrics {
            m.connection_refused(why);
        }
    }
}

/// A running server. Dropping it stops it.
pub struct Server {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl Server {
    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted since the start, those then refused for the connection limits
    /// included (not those the allow-list refused): what a benchmark divides by time for
    /// connection attempts per second.
    pub fn accepted_connections(&self) -> u64 {
        self.shared.next_id.load(Ordering::Relaxed)
    }

    /// Open connections right now.
    pub fn active_connections(&self) -> usize {
        self.shared.active.load(Ordering::SeqCst)
    }

    /// Stops accepting, ends idle connections, and waits up to `grace` for requests in
    /// flight to be answered.
    pub fn shutdown(&mut self, grace: Duration) {
        let Some(accept) = self.accept.take() else {
            return;
        };
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept() with a connection of our own.
        let wake = local_address(self.addr);
        let _ = TcpStream::connect_timeout(&wake, Duration::from_secs(1));
        let _ = accept.join();
        for stream in lock(&self.shared.slots).streams() {
            let _ = stream.shutdown(Shutdown::Read);
        }
        let deadline = Instant::now() + grace;
        while self.shared.active.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown(Duration::from_secs(2));
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Serves `handler` on `listener` over plain HTTP until the returned [`Server`] is shut down
/// or dropped.
pub fn serve(
    listener: TcpListener,
    limits: Limits,
    handler: Arc<dyn Handler>,
) -> io::Result<Server> {
    serve_with(
        listener,
        Options {
            limits,
            ..Options::default()
        },
        handler,
    )
}

/// Serves `handler` on `listener` with TLS and an allow-list as `options` say.
pub fn serve_with(
    listener: TcpListener,
    options: Options,
    handler: Arc<dyn Handler>,
) -> io::Result<Server> {
    let addr = listener.local_addr()?;
    let slots = Slots::new(
        options.limits.max_connections,
        options.limits.max_connections_per_addr,
    );
    let shared = Arc::new(Shared {
        limits: options.limits,
        tls: options.tls,
        allow_from: options.allow_from,
        handler,
        metrics: options.metrics,
        stop: AtomicBool::new(false),
        active: AtomicUsize::new(0),
        next_id: AtomicU64::new(0),
        slots: Mutex::new(slots),
    });
    let s = shared.clone();
    let accept = thread::Builder::new()
        .name("accept".into())
        .spawn(move || accept_loop(listener, s))?;
    Ok(Server {
        addr,
        shared,
        accept: Some(accept),
    })
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut backoff = Duration::from_millis(5);
    let mut not_allowed = Throttled::new();
    let mut too_many = Throttled::new();
    let mut made_room = Throttled::new();
    loop {
        let (stream, peer) = match listener.accept() {
            Ok(pair) => {
                backoff = Duration::from_millis(5);
                pair
            }
            Err(e) => {
                if shared.stop.load(Ordering::SeqCst) {
                    return;
                }
                // EMFILE, ENFILE, ENOBUFS, ECONNABORTED...: none of them is a reason to stop
                // serving. Back off so that a persistent condition does not spin the CPU.
                log::warn!("accept failed: {e}; retrying in {} ms", backoff.as_millis());
                thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        if !shared.allow_from.permits(peer.ip()) {
            // Closed before a byte is read.
            drop(stream);
            shared.refused(Refused::AllowFrom);
            not_allowed.warn(|more| {
                log::warn!(
                    "connection from {} refused: not in ESPFD_ALLOW_FROM{more}",
                    peer.ip()
                )
            });
            continue;
        }
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        let admitted =
            lock(&shared.slots).admit(id, peer.ip(), stream.try_clone().ok(), Instant::now());
        match admitted {
            Ok(None) => {}
            Ok(Some(evicted)) => {
                // Its thread sees the end of its stream and exits; it was waiting for a
                // request, so nothing in flight is lost.
                if let Some(s) = evicted.stream {
                    let _ = s.shutdown(Shutdown::Both);
                }
                shared.closed(Closed::IdleForRoom);
                made_room.warn(|more| {
                    log::info!(
                        "connection limit reached: closed an idle connection from {} to make \
                         room for {peer} (ESPFD_MAX_CONNECTIONS, ESPFD_MAX_CONNECTIONS_PER_ADDR){more}",
                        evicted.ip
                    )
                });
            }
            Err(why) => {
                shared.refused(why);
                too_many.warn(|more| {
                    let (n, var) = match why {
                        Refused::MaxPerAddr => (
                            shared.limits.max_connections_per_addr.min(shared.limits.max_connections),
                            "ESPFD_MAX_CONNECTIONS_PER_ADDR",
                        ),
                        _ => (shared.limits.max_connections, "ESPFD_MAX_CONNECTIONS"),
                    };
                    let from = if why == Refused::MaxPerAddr {
                        " from its address"
                    } else {
                        ""
                    };
                    log::warn!(
                        "connection from {peer} refused: {n} connections open{from}, none idle ({var}){more}"
                    )
                });
                if shared.tls.is_none() {
                    refuse(stream);
                }
                // Over TLS a reply needs a handshake, which would need a thread: close instead.
                continue;
            }
        }
        shared.active.fetch_add(1, Ordering::SeqCst);
        let s = shared.clone();
        let spawned = thread::Builder::new()
            .name("conn".into())
            .stack_size(CONNECTION_STACK)
            .spawn(move || {
                let conn = ConnGuard { shared: &s, id };
                match &s.tls {
                    None => serve_connection(stream, peer, &conn),
                    Some(t) => {
                        // The handshake starts within the first-byte deadline, and from then
                        // on the slot is busy until the first request is awaited.
                        match first_byte(
                            &stream,
                            s.limits.first_byte_timeout.min(s.limits.idle_timeout),
                        ) {
                            FirstByte::Arrived => {}
                            FirstByte::Closed => {
                                log::debug!("{peer} closed without starting a TLS handshake");
                                return;
                            }
                            FirstByte::TimedOut => {
                                s.closed(Closed::FirstByteTimeout);
                                log::debug!(
                                    "{peer} sent nothing within ESPFD_FIRST_BYTE_TIMEOUT; closed"
                                );
                                return;
                            }
                        }
                        if !conn.busy() {
                            return;
                        }
                        match tls::accept(t, stream, s.limits.tls_handshake_timeout) {
                            Ok(stream) => serve_connection(stream, peer, &conn),
                            Err(f) if f.silent_close => {
                                log::debug!("{peer} closed without starting a TLS handshake")
                            }
                            Err(f) => log::info!("TLS handshake with {peer} failed: {}", f.why),
                        }
                    }
                }
            });
        if let Err(e) = spawned {
            log::warn!("cannot start a connection thread: {e}");
            shared.active.fetch_sub(1, Ordering::SeqCst);
            if let Some(stream) = lock(&shared.slots).release(id) {
                if shared.tls.is_none() {
                    refuse(stream);
                }
            }
        }
    }
}

/// What the first wait on a new connection saw.
enum FirstByte {
    Arrived,
    Closed,
    TimedOut,
}

/// Waits up to `timeout` for the first byte on `tcp` without consuming it.
fn first_byte(tcp: &TcpStream, timeout: Duration) -> FirstByte {
    if tcp.set_read_timeout(Some(timeout)).is_err() {
        return FirstByte::Closed;
    }
    let mut one = [0u8; 1];
    loop {
        return match tcp.peek(&mut one) {
            Ok(0) => FirstByte::Closed,
            Ok(_) => FirstByte::Arrived,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                FirstByte::TimedOut
            }
            Err(_) => FirstByte::Closed,
        };
    }
}

fn refuse(mut stream: TcpStream) {
    let _ = stream.set_write_timeout(Some(Duration::from_millis(200)));
    let body = "too many connections, retry later\n";
    let _ = write!(
        stream,
        "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

/// A connection thread's hold on its slot: marks it idle or busy, and frees it at the end.
struct ConnGuard<'a> {
    shared: &'a Shared,
    id: u64,
}

impl ConnGuard<'_> {
    /// Waiting for a request's first byte: the slot may be taken for a newcomer. `false`
    /// when it already was (the connection must end).
    fn idle(&self) -> bool {
        lock(&self.shared.slots).set_idle(self.id, true, Instant::now())
    }

    /// A request (or handshake) has started. `false` when the slot was taken meanwhile.
    fn busy(&self) -> bool {
        lock(&self.shared.slots).set_idle(self.id, false, Instant::now())
    }
}

impl Drop for ConnGuard<'_> {
    fn drop(&mut self) {
        lock(&self.shared.slots).release(self.id);
        self.shared.active.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What went wrong while reading a request.
enum ReadError {
    /// The peer closed, or its slot was taken for a newcomer while it was idle: close quietly.
    Gone,
    /// Nothing arrived while waiting for a request (the first-byte or idle timeout): close
    /// quietly.
    Silent,
    /// Reply with this status and close.
    Reply(u16, &'static str),
    /// The handler's pre-check refused the request from its head: send this and close.
    Refused(Response),
}

fn serve_connection<S: Transport>(mut stream: S, peer: SocketAddr, conn: &ConnGuard<'_>) {
    let shared = conn.shared;
    let limits = &shared.limits;
    let _ = stream.tcp().set_nodelay(true);
    let _ = stream.tcp().set_write_timeout(Some(limits.write_timeout));
    let mut buf: Vec<u8> = Vec::with_capacity(2048);
    for served in 1..=limits.max_requests_per_connection {
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        // A new connection's first request must start soon; later ones may wait as long as
        // an idle keep-alive connection is kept.
        let wait = if served == 1 {
            limits.first_byte_timeout.min(limits.idle_timeout)
        } else {
            limits.idle_timeout
        };
        let req = match read_request(&mut stream, &mut buf, peer, conn, wait) {
            Ok(req) => req,
            Err(ReadError::Gone) => break,
            Err(ReadError::Silent) => {
                if served == 1 {
                    shared.closed(Closed::FirstByteTimeout);
                    log::debug!("{peer} sent nothing within ESPFD_FIRST_BYTE_TIMEOUT; closed");
                }
                break;
            }
            Err(ReadError::Refused(resp)) => return reply_and_close(stream, &resp),
            Err(ReadError::Reply(status, why)) => {
                return reply_and_close(stream, &Response::text(status, why))
            }
        };
        let keep_alive = req.keep_alive;
        let http10 = req.version == 0;
        let head_only = req.method == "HEAD";
        let handler = shared.handler.clone();
        let resp =
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handler.handle(req))) {
                Ok(resp) => resp,
                Err(_) => Response::text(500, "internal error").closing(),
            };
        if resp.no_reply {
            // Dropping the socket closes it: a FIN, or a reset if the client sent more.
            return;
        }
        // The last request a connection may carry is answered with `Connection: close`.
        let keep = keep_alive
            && !resp.close
            && served < limits.max_requests_per_connection
            && !shared.stop.load(Ordering::SeqCst);
        if write_response(&mut stream, &resp, keep, http10, head_only).is_err() {
            return;
        }
        if !keep {
            break;
        }
    }
    stream.close();
}

/// Sends a reply that ends the connection (an error, a refusal) and closes it.
fn reply_and_close<S: Transport>(mut stream: S, resp: &Response) {
    if write_response(&mut stream, resp, false, false, false).is_ok() {
        linger(stream);
    }
}

/// Closes after an error reply without losing the reply: stop sending, then read and discard
/// what the client is still sending, for a short while. Closing a socket with unread data
/// makes the kernel send a reset, which can destroy the reply before the client reads it.
fn linger<S: Transport>(mut stream: S) {
    stream.close();
    let tcp = stream.tcp();
    let _ = tcp.shutdown(Shutdown::Write);
    let deadline = Instant::now() + LINGER_TIME;
    let mut chunk = [0u8; 8192];
    let mut discarded = 0;
    let mut tcp = tcp;
    while discarded < LINGER_BYTES {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || tcp.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match tcp.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => discarded += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// Reads one request. Waits up to `wait` for its first byte (the slot idle meanwhile), then
/// up to the read timeout for the whole request: a client that trickles bytes holds its slot
/// for at most that long.
fn read_request<S: Transport>(
    stream: &mut S,
    buf: &mut Vec<u8>,
    peer: SocketAddr,
    conn: &ConnGuard<'_>,
    wait: Duration,
) -> Result<Request, ReadError> {
    let shared = conn.shared;
    let limits = &shared.limits;
    let mut deadline: Option<Instant> = if buf.is_empty() {
        if !conn.idle() {
            return Err(ReadError::Gone);
        }
        None
    } else {
        // A pipelined request is already here.
        Some(Instant::now() + limits.read_timeout)
    };
    let mut needed = 1;
    // Whether the complete head has been looked at for `Expect: 100-continue`.
    let mut head_seen = false;
    loop {
        if buf.len() >= needed {
            match parse_request(buf, peer, limits) {
                Ok(Parsed::Complete { request, len }) => {
                    buf.drain(..len);
                    return Ok(request);
                }
                Ok(Parsed::Incomplete { needed: n }) => {
                    needed = n;
                    // The head is complete and the body is still to come: a client that
                    // asked for `Expect: 100-continue` waits for an answer before sending
                    // it. The handler sees the head first, so that a request it would refuse
                    // (bad credentials) is answered at once instead of being invited to send
                    // its body. An HTTP/1.0 client's expectation is ignored (RFC 9110, 10.1.1).
                    if !head_seen {
                        if let Some(head) = request_head(buf, peer, limits) {
                            head_seen = true;
                            let expects = head.version > 0
                                && head
                                    .header("expect")
                                    .is_some_and(|v| v.trim().eq_ignore_ascii_case("100-continue"));
                            if expects {
                                if let Some(resp) = precheck(shared, &head) {
                                    return Err(ReadError::Refused(resp));
                                }
                                if stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").is_err() {
                                    return Err(ReadError::Gone);
                                }
                            }
                        }
                    }
                }
                Err(r) => return Err(ReadError::Reply(r.status, r.reason)),
            }
        }
        let got = read_some(stream, buf, deadline, wait)?;
        if got == 0 {
            return Err(ReadError::Gone);
        }
        if deadline.is_none() {
            if !conn.busy() {
                return Err(ReadError::Gone);
            }
            deadline = Some(Instant::now() + limits.read_timeout);
        }
    }
}

/// The handler's pre-check of a head; a panic in it is a 500.
fn precheck(shared: &Shared, head: &Request) -> Option<Response> {
    let handler = shared.handler.clone();
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handler.precheck(head)))
        .unwrap_or_else(|_| Some(Response::text(500, "internal error")))
}

/// Reads what is available into `buf`. `deadline` None means "waiting up to `wait` for a new
/// request".
fn read_some<S: Transport>(
    stream: &mut S,
    buf: &mut Vec<u8>,
    deadline: Option<Instant>,
    wait: Duration,
) -> Result<usize, ReadError> {
    let timeout = match deadline {
        None => wait,
        Some(d) => d.saturating_duration_since(Instant::now()),
    };
    if timeout.is_zero() {
        return Err(ReadError::Reply(408, "request not received in time"));
    }
    let _ = stream.tcp().set_read_timeout(Some(timeout));
    let mut chunk = [0u8; 8192];
    loop {
        match stream.read(&mut chunk) {
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                return Ok(n);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(if deadline.is_none() {
                    ReadError::Silent
                } else {
                    ReadError::Reply(408, "request not received in time")
                });
            }
            Err(_) => return Err(ReadError::Gone),
        }
    }
}

/// Writes a reply in one write. A reply to HEAD carries the headers of the GET reply
/// (`Content-Length` included) but no body. An HTTP/1.0 client, whose connections close by
/// default, is told `Connection: keep-alive` when its connection stays open.
fn write_response<S: Transport>(
    stream: &mut S,
    resp: &Response,
    keep_alive: bool,
    http10: bool,
    head_only: bool,
) -> io::Result<()> {
    let mut out = Vec::with_capacity(128 + resp.body.len());
    let _ = write!(out, "HTTP/1.1 {} {}\r\n", resp.status, reason(resp.status));
    for (k, v) in &resp.headers {
        // Header values come from our own code; still, never let a CR/LF split the head.
        if k.contains(['\r', '\n']) || v.contains(['\r', '\n']) {
            continue;
        }
        let _ = write!(out, "{k}: {v}\r\n");
    }
    // A 204 has no body and, by RFC 9110 §8.6, no Content-Length.
    let no_content = resp.status == 204;
    if !no_content {
        let _ = write!(out, "Content-Length: {}\r\n", resp.body.len());
    }
    if !keep_alive {
        out.extend_from_slice(b"Connection: close\r\n");
    } else if http10 {
        out.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !head_only && !no_content {
        out.extend_from_slice(&resp.body);
    }
    stream.write_all(&out)?;
    stream.flush()
}
