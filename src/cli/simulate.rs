//! `espfd simulate`: the simulated PortaBilling, ESPF API and target (`src/sim`) as a
//! standalone server, so that an operator can rehearse a deployment — env file, init script,
//! `espfd check`, `espfd send`, dashboards — without a PortaBilling.
//!
//! It prints the variables an espfd needs to use it as `export` lines on stdout, logs one
//! line per request on stderr (`POST /rest/Session/login → 200`), and on SIGINT or SIGTERM
//! prints a summary of what it received and exits 0.
//!
//! The simulator is a test double: it trusts its callers and keeps everything in memory.
//! Do not expose it beyond a network you control (the default address is loopback).

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::logging::LogFormat;
use crate::sim::{Sim, SimConfig, CONTROLS};
use crate::util::parse_duration;

/// `espfd simulate --help`.
pub const HELP: &str = "\
espfd simulate — simulated PortaBilling, ESPF API and provisioning target on one port

Usage: espfd simulate [options]

Options:
  --listen ADDR               address:port to serve on (default 127.0.0.1:8090; port 0 = any free port)
  --pb-latency DUR            delay added to every PortaBilling API call (default 0)
  --target-latency DUR        delay added to every target call (default 0)
  --pb-failure-rate F         fraction 0..1 of PortaBilling calls (not logins) answered 503 (default 0)
  --target-failure-rate F     fraction 0..1 of target calls answered 503 (default 0)
  --session-ttl DUR           lifetime of a PortaBilling access token (default 1h)
  --record-limit N            requests, target calls and status reports kept for the summary,
                              each (default 10000; the oldest are dropped)
  --group NAME                an extra (custom) ESPF service group; repeatable
                              (the predefined ones, VoIP, HSS, PCRF ..., always exist)
  -h, --help                  this text

Durations are seconds or a number with ms, s, m, h or d. The variables an espfd needs to use
the simulator are printed on stdout as export lines; each request is logged on stderr; SIGINT
(Ctrl-C) or SIGTERM prints a summary of what was received and exits.

Serves: POST /rest/<Service>/<method> (PortaBilling API), /espf/v1/... (ESPF API: status
reports, GET groups), POST /target (the provisioning target) and fakes of real systems
(/pyhss, /stalker_portal, /oauth + /dataverse, /CAI3G1.2), and controls to change its records
and take either side down while it runs (no authentication, same port):
  POST   /_sim/account/<i_account> {fields}  merge fields into that account, creating it if
                                            unknown, e.g. {\"blocked\": \"Y\"}, {\"bill_status\": \"C\"},
                                            {\"h323_password\": \"...\"}
  DELETE /_sim/account/<i_account>           PortaBilling no longer knows it (lookups answer {})
  POST   /_sim/target {\"mode\": M}            the target and the fakes of real systems:
                                            M = \"up\" answer normally, \"503\" answer 503,
                                            \"reset\" close each connection without a reply,
                                            \"blackhole\" never answer (the requests held get
                                            503 when the mode leaves blackhole)
  POST   /_sim/portabilling {\"mode\": M}      the same for the PortaBilling and ESPF APIs
                                            (/rest, /espf); /_sim keeps answering in every mode
  GET    /_sim/target, /_sim/portabilling    the current mode and how many requests are held
The accounts 1000889 (open), 1000890 (blocked), 1000891 (closed), 277147 and 2984 exist at
the start, each with an h323_password. A test double: it keeps everything in memory and
trusts its callers; keep it on a network you control.
";

/// What the command line asked for.
#[derive(Debug)]
struct Options {
    listen: String,
    sim: SimConfig,
    record_limit: usize,
}

fn usage(message: String) -> Error {
    Error::Usage(format!("simulate: {message}; see espfd simulate --help"))
}

/// Parses the flags; `Ok(None)` means `--help` was asked for.
fn parse(args: &[String]) -> Result<Option<Options>, Error> {
    let mut opts = Options {
        listen: "127.0.0.1:8090".into(),
        sim: SimConfig::default(),
        record_limit: 10_000,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        if arg == "-h" || arg == "--help" {
            return Ok(None);
        }
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (arg.as_str(), None),
        };
        let known = [
            "--listen",
            "--pb-latency",
            "--target-latency",
            "--pb-failure-rate",
            "--target-failure-rate",
            "--session-ttl",
            "--record-limit",
            "--group",
        ];
        if !known.contains(&flag) {
            return Err(usage(format!("unknown option '{arg}'")));
        }
        let value = match inline {
            Some(v) => v,
            None => it
                .next()
                .cloned()
                .ok_or_else(|| usage(format!("{flag} needs a value")))?,
        };
        let duration = |v: &str| {
            parse_duration(v).ok_or_else(|| {
                usage(format!(
                    "{flag} '{v}' is not a duration (e.g. 250ms, 2s, 1h)"
                ))
            })
        };
        let rate = |v: &str| match v.parse::<f64>() {
            Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
            _ => Err(usage(format!("{flag} '{v}' is not a fraction from 0 to 1"))),
        };
        match flag {
            "--listen" => opts.listen = value,
            "--pb-latency" => opts.sim.pb_latency = duration(&value)?,
            "--target-latency" => opts.sim.target_latency = duration(&value)?,
            "--pb-failure-rate" => opts.sim.pb_failure_rate = rate(&value)?,
            "--target-failure-rate" => opts.sim.target_failure_rate = rate(&value)?,
            "--session-ttl" => {
                opts.sim.session_ttl = duration(&value)?;
                if opts.sim.session_ttl < Duration::from_secs(1) {
                    return Err(usage("--session-ttl must be at least 1s".into()));
                }
            }
            "--record-limit" => {
                opts.record_limit = match value.parse::<usize>() {
                    Ok(n) if n > 0 => n,
                    _ => {
                        return Err(usage(format!(
                            "--record-limit '{value}' is not a positive number"
                        )))
                    }
                }
            }
            "--group" => {
                let name = value.trim();
                if name.is_empty() || name.chars().count() > 64 {
                    return Err(usage("--group needs a name of 1 to 64 characters".into()));
                }
                opts.sim.groups.push(name.to_string());
            }
            _ => unreachable!("flag checked against the list above"),
        }
    }
    Ok(Some(opts))
}

/// A value as a POSIX shell word: bare when it is safe, else in single quotes.
fn shell_word(v: &str) -> String {
    let safe = !v.is_empty()
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"@%+=:,./-_".contains(&b));
    if safe {
        v.to_string()
    } else {
        format!("'{}'", v.replace('\'', r"'\''"))
    }
}

/// The `export` lines for an espfd that uses `sim`.
fn exports(sim: &Sim) -> String {
    let mut out = String::new();
    for (name, value) in sim.espfd_env() {
        out.push_str(&format!("export {name}={}\n", shell_word(&value)));
    }
    out
}

/// Runs `espfd simulate <args>` until SIGINT or SIGTERM.
pub fn run(args: &[String]) -> Result<ExitCode, Error> {
    let Some(opts) = parse(args)? else {
        print!("{HELP}");
        return Ok(ExitCode::SUCCESS);
    };
    crate::logging::init(LogFormat::Text);
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, stop.clone())
            .map_err(|e| Error::io("cannot install signal handlers", e))?;
    }
    let sim = Sim::start(&opts.listen, opts.sim)
        .map_err(|e| Error::io(format!("simulate: cannot listen on {}", opts.listen), e))?;
    sim.set_record_limit(Some(opts.record_limit));
    let started = Instant::now();

    println!(
        "# espfd simulate: PortaBilling API, ESPF API and target at {}",
        sim.url()
    );
    println!("# the environment of an espfd that uses it (in an env file, leave out 'export'):");
    print!("{}", exports(&sim));
    println!("# also set ESPFD_AUTH_USER, ESPFD_AUTH_PASSWORD and ESPFD_STATE_DIR for that espfd.");
    println!(
        "# change an account: curl -X POST -d '{{\"blocked\": \"Y\"}}' {}/_sim/account/1000889 (DELETE removes it)",
        sim.url()
    );
    println!(
        "# take the target down: curl -X POST -d '{{\"mode\": \"blackhole\"}}' {}/_sim/target \
         (modes: up, 503, reset, blackhole; GET shows the mode)",
        sim.url()
    );
    println!(
        "# take PortaBilling and the ESPF API down: curl -X POST -d '{{\"mode\": \"503\"}}' {}/_sim/portabilling",
        sim.url()
    );
    println!("# every control (espfd simulate --help says more):");
    for line in CONTROLS.lines() {
        println!("#   {line}");
    }
    println!("# SIGINT (Ctrl-C) or SIGTERM stops the simulator and prints what it received.");
    use std::io::Write as _;
    let _ = std::io::stdout().flush();

    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(100));
    }
    print!("{}", summary(&sim, started.elapsed(), opts.record_limit));
    let _ = std::io::stdout().flush();
    sim.shutdown();
    Ok(ExitCode::SUCCESS)
}

/// What the simulator received, for the operator at the end.
fn summary(sim: &Sim, ran: Duration, record_limit: usize) -> String {
    let requests = sim.requests();
    let mut by_path: BTreeMap<String, usize> = BTreeMap::new();
    for r in &requests {
        // Status paths name an account; group them.
        let path = match r.path.strip_prefix("/espf/v1/account/") {
            Some(_) => "/espf/v1/account/.../status".to_string(),
            None => r.path.clone(),
        };
        *by_path.entry(format!("{} {path}", r.method)).or_default() += 1;
    }
    let mut statuses: BTreeMap<String, usize> = BTreeMap::new();
    for s in sim.statuses() {
        *statuses.entry(s.status).or_default() += 1;
    }
    let mut replies: BTreeMap<u16, usize> = BTreeMap::new();
    for c in sim.target_calls().iter().filter(|c| c.is_finished()) {
        *replies.entry(c.status).or_default() += 1;
    }
    let join = |m: Vec<String>| {
        if m.is_empty() {
            "none".to_string()
        } else {
            m.join(", ")
        }
    };
    let mut out = format!(
        "\nespfd simulate: stopped after {} s; received {} requests",
        ran.as_secs(),
        requests.len()
    );
    if requests.len() >= record_limit {
        out.push_str(&format!(
            " (only the newest {record_limit} of each kind are kept: --record-limit)"
        ));
    }
    out.push('\n');
    for (k, n) in &by_path {
        out.push_str(&format!("  {n:>7}  {k}\n"));
    }
    out.push_str(&format!("  PortaBilling logins: {}\n", sim.logins()));
    out.push_str(&format!(
        "  ESPF status reports: {}\n",
        join(statuses.iter().map(|(s, n)| format!("{s} {n}")).collect())
    ));
    out.push_str(&format!(
        "  target documents: {} (replies: {})\n",
        sim.target_calls_total(),
        join(
            replies
                .iter()
                .map(|(s, n)| format!("HTTP {s} × {n}"))
                .collect()
        )
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn flags_parse() {
        let o = parse(&args(
            "--listen 0.0.0.0:9000 --pb-latency 250ms --target-latency=1s --pb-failure-rate 0.1 \
             --target-failure-rate 1 --session-ttl 5m --record-limit 50 --group IOT",
        ))
        .unwrap()
        .unwrap();
        assert_eq!(o.listen, "0.0.0.0:9000");
        assert_eq!(o.sim.pb_latency, Duration::from_millis(250));
        assert_eq!(o.sim.target_latency, Duration::from_secs(1));
        assert_eq!(o.sim.pb_failure_rate, 0.1);
        assert_eq!(o.sim.target_failure_rate, 1.0);
        assert_eq!(o.sim.session_ttl, Duration::from_secs(300));
        assert_eq!(o.record_limit, 50);
        assert!(o.sim.groups.contains(&"IOT".to_string()));
        assert!(o.sim.groups.contains(&"HSS".to_string()));

        let d = parse(&[]).unwrap().unwrap();
        assert_eq!(d.listen, "127.0.0.1:8090");
        assert_eq!(d.record_limit, 10_000);
        assert!(parse(&args("--help")).unwrap().is_none());
    }

    #[test]
    fn bad_flags_are_usage_errors() {
        for bad in [
            "--frobnicate",
            "--listen",
            "--pb-failure-rate 2",
            "--target-failure-rate x",
            "--pb-latency soon",
            "--record-limit 0",
            "--session-ttl 0",
            "--group",
            "extra",
        ] {
            assert!(matches!(parse(&args(bad)), Err(Error::Usage(_))), "{bad}");
        }
    }

    #[test]
    fn shell_words_are_quoted_when_needed() {
        assert_eq!(shell_word("http://127.0.0.1:8090"), "http://127.0.0.1:8090");
        assert_eq!(shell_word("espfd-password"), "espfd-password");
        assert_eq!(shell_word("a b"), "'a b'");
        assert_eq!(shell_word("it's"), r"'it'\''s'");
        assert_eq!(shell_word(""), "''");
    }
}
