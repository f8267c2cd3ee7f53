//! `espfd send`: POST events to a running espfd the way ESPF does, with any of ESPF's three
//! auth schemes (or deliberately wrong credentials), over HTTP or HTTPS; one event or a
//! load, with reply codes, latency percentiles and throughput printed at the end.
//!
//! It is what an operator uses to check a configuration before pointing ESPF at it: the
//! secrets may come from the same environment variables the service reads. The sending is
//! done by [`super::load`]. One file per concept: `flags.rs` parses the command line into
//! [`RawArgs`] and checks it into a [`Plan`] that the rest of the command uses; `auth.rs`
//! writes the `Authorization` headers (the signature is computed by
//! [`crate::ingress::signature`], the same code that verifies it); `endpoint.rs` parses the
//! URL; `tls.rs` builds the TLS client; `body.rs` is the event template; this file runs the
//! load and prints its report.

mod auth;
mod body;
mod endpoint;
mod flags;
mod tls;

use std::net::ToSocketAddrs;
use std::process::ExitCode;
use std::sync::Arc;

use rustls::pki_types::ServerName;

pub use auth::SendAuth;
pub use body::{event_body, BodySource};
pub use endpoint::Endpoint;
pub use flags::{Plan, RawArgs};

use super::load::{self, LoadSpec, Tls};
use crate::error::Error;

/// `espfd send --help`.
pub const HELP: &str = "\
espfd send — POST events to a running espfd the way ESPF does, and report the replies

Usage:
  espfd send [URL] [options]

Target:
  URL, --url URL           events URL, http:// or https:// (path defaults to /events);
                           default: built from ESPFD_LISTEN and ESPFD_EVENTS_PATH
                           (https when ESPFD_TLS_CERT is set), else http://127.0.0.1:8080/events
  --ca-file PEM            https: trust the CA certificates in this PEM file
                           (default: /etc/ssl/certs/ca-certificates.crt when it exists)
  --insecure               https: do not verify the server's certificate (testing only)
  --timeout DURATION       connect, read and write timeout per request (default 30s)

Authentication (secrets default to the variables the service reads):
  --auth SCHEME            basic | custom | signature | none (default: ESPFD_AUTH, else basic)
  --user USER              basic: user (default: ESPFD_AUTH_USER)
  --password PASSWORD      basic: password (default: ESPFD_AUTH_PASSWORD[_FILE])
  --custom 'TYPE CREDS'    custom: the whole Authorization value, e.g. 'Plain passexample'
                           (default: ESPFD_AUTH_CUSTOM[_FILE])
  --key-id ID              signature: key ID (default: ESPFD_AUTH_KEY_ID)
  --key KEY                signature: shared key (default: ESPFD_AUTH_KEY[_FILE]); each request
                           gets a fresh Date header and
                           Authorization: Signature keyId=\"ID\",algorithm=\"hmac-sha1\",signature=\"..\"
                           with HMAC-SHA1 over 'date: <Date>', base64
  --sign-bare-date         signature: sign the bare Date value instead of 'date: <Date>'
  --wrong-credentials      send deliberately wrong credentials of the chosen scheme
                           (every reply is then expected to be 401)

Load:
  --count N                events to send (default 1)
  --concurrency C          parallel keep-alive connections (default 1)
  --rate R                 events per second over all connections (default: as fast as possible)

Events (default: Subscriber/Updated for account 1000):
  --event-type TYPE        e.g. Subscriber/Created, Customer/Updated, DID/Updated
  --account N              entity id: i_account (Subscriber/Account/SIM/other types),
                           i_customer (Customer), i_invoice and i_customer (Invoice),
                           number (DID)
  --accounts K             spread the events over K entities N, N+1, ... N+K-1 (default 1)
  --start-id ID            i_event of the first event, then ID+1, ... (default: the current
                           Unix time x 1000000, so that repeated runs send new events)
  --body FILE|-            send this file (or standard input) as it is, for every event,
                           instead of the template

  --help, -h               this text

Prints the number of replies per status code (with the first reply body of each), latency
percentiles (p50, p90, p99, p99.9, max; the first request on a connection includes connecting
and the TLS handshake) and throughput. Passwords and keys are never printed; flags are visible
to other users in the process list, the environment variables are not.

Exit status: 0 when every event got the expected reply (200, or 401 with
--wrong-credentials), 1 otherwise, 64 for a bad command line.

Examples:
  espfd send --user espf --password secret
  espfd send https://espfd.example.net:8443/events --ca-file ca.pem --auth custom \\
      --custom 'Plain passexample' --count 10000 --concurrency 16 --rate 500
  ESPFD_AUTH_KEY_ID=test ESPFD_AUTH_KEY=signature espfd send --auth signature
";

/// A usage error of `espfd send`, pointing at its help.
fn usage(msg: impl std::fmt::Display) -> Error {
    Error::Usage(format!("send: {msg}; see espfd send --help"))
}

/// `espfd send ARGS...`.
pub fn run(args: &[String]) -> Result<ExitCode, Error> {
    let raw = RawArgs::parse(args)?;
    if raw.help {
        print!("{HELP}");
        return Ok(ExitCode::SUCCESS);
    }
    let plan = raw.validate(&crate::config::env_var)?;
    let addr = (plan.endpoint.host.as_str(), plan.endpoint.port)
        .to_socket_addrs()
        .map_err(|e| Error::Other(format!("send: cannot resolve {}: {e}", plan.endpoint.host)))?
        .next()
        .ok_or_else(|| Error::Other(format!("send: {} has no address", plan.endpoint.host)))?;
    let tls = match &plan.tls {
        None => None,
        Some(config) => Some(Tls {
            config: config.clone(),
            server_name: ServerName::try_from(plan.endpoint.host.clone()).map_err(|e| {
                usage(format!(
                    "--url: '{}' is not a TLS server name: {e}",
                    plan.endpoint.host
                ))
            })?,
        }),
    };
    let expected: u16 = if plan.wrong_credentials { 401 } else { 200 };

    println!(
        "espfd send: {} event{} to {} ({}{}), {} connection{}, {}",
        plan.count,
        if plan.count == 1 { "" } else { "s" },
        plan.endpoint.url(),
        plan.auth.describe(),
        if plan.wrong_credentials {
            ", deliberately wrong credentials"
        } else {
            ""
        },
        plan.concurrency.min(plan.count as usize),
        if plan.concurrency.min(plan.count as usize) == 1 {
            ""
        } else {
            "s"
        },
        match plan.rate {
            Some(r) => format!("at most {r} events/s"),
            None => "as fast as possible".into(),
        }
    );

    let body = plan.body.clone();
    let auth = plan.auth.clone();
    let spec = LoadSpec {
        host: plan.endpoint.host_header(),
        tls,
        connections: plan.concurrency,
        rate: plan.rate,
        timeout: plan.timeout,
        headers: Arc::new(move |_, date| {
            auth.authorization(date)
                .map(|a| ("Authorization".to_string(), a))
                .into_iter()
                .collect()
        }),
        ..LoadSpec::new(addr, &plan.endpoint.path, plan.count, move |n| body.body(n))
    };
    let report = load::run(spec);

    for (code, n) in &report.codes {
        let example = report.examples.get(code).map(String::as_str).unwrap_or("");
        println!("reply {code}: {n}  (e.g. {example:?})");
    }
    if report.errors > 0 {
        println!(
            "no reply: {} (first error: {})",
            report.errors,
            report.first_error.as_deref().unwrap_or("?")
        );
    }
    if report.latencies_us.is_empty() {
        println!("latency: no replies");
    } else {
        println!("latency: {}", report.latency_line());
    }
    println!(
        "throughput: {:.1} replies/s ({} replies in {:.3} s)",
        report.throughput(),
        report.latencies_us.len(),
        report.elapsed.as_secs_f64()
    );
    let as_expected = report.codes.get(&expected).copied().unwrap_or(0);
    if as_expected == plan.count {
        println!(
            "result: all {} replies were {expected}, as expected",
            plan.count
        );
        Ok(ExitCode::SUCCESS)
    } else {
        println!(
            "result: {} of {} events did not get the expected {expected}",
            plan.count - as_expected,
            plan.count
        );
        Ok(ExitCode::FAILURE)
    }
}
