//! The listener's limits and timeouts: how many connections, how large a request, how long
//! each step may take.
//!
//! Each field is set by one environment variable, named on the field. The defaults are
//! written once, in `config::VARS` (`espfd help env` prints them), and [`Limits::default`]
//! is built from that list by `config`, which sits above this module; the simulators and
//! tests that run a listener without a configuration use it.

use std::time::Duration;

/// Limits and timeouts of one listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Most simultaneous connections (`ESPFD_MAX_CONNECTIONS`).
    pub max_connections: usize,
    /// Most simultaneous connections from one IP address, never more than `max_connections`
    /// (`ESPFD_MAX_CONNECTIONS_PER_ADDR`).
    pub max_connections_per_addr: usize,
    /// Time a new connection has to send its first byte (over TLS: the first byte of the
    /// handshake, then the first byte of its first request), at most `idle_timeout`
    /// (`ESPFD_FIRST_BYTE_TIMEOUT`).
    pub first_byte_timeout: Duration,
    /// Largest request body in bytes (`ESPFD_MAX_BODY`).
    pub max_body: usize,
    /// Largest request head in bytes (`ESPFD_MAX_HEADER`).
    pub max_header: usize,
    /// Most header lines in one request (`ESPFD_MAX_HEADERS`).
    pub max_headers: usize,
    /// Requests served on one connection before it is closed
    /// (`ESPFD_MAX_REQUESTS_PER_CONNECTION`).
    pub max_requests_per_connection: usize,
    /// Time to receive one whole request (`ESPFD_READ_TIMEOUT`).
    pub read_timeout: Duration,
    /// Time an idle keep-alive connection is kept (`ESPFD_IDLE_TIMEOUT`).
    pub idle_timeout: Duration,
    /// Time to send one reply (`ESPFD_WRITE_TIMEOUT`).
    pub write_timeout: Duration,
    /// Time for a client to complete the TLS handshake (`ESPFD_TLS_HANDSHAKE_TIMEOUT`).
    pub tls_handshake_timeout: Duration,
}
