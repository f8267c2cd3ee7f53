//! `espfd events`: list, show and replay stored events, straight from the store file.
//!
//! Works whether the service is running or not (SQLite WAL lets a second process read, and
//! the few writes of `replay` wait for the service's writer). Only `ESPFD_STATE_DIR` (or
//! `--state-dir`) is needed, not the whole configuration.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::config::env_or_default;
use crate::error::Error;
use crate::redact::printable;
use crate::store::{Reader, Replay, Source, State, StoredEvent};
use crate::util::format_rfc3339;

/// Usage of `espfd events`.
pub const USAGE: &str = "\
Usage:
  espfd events list [--failed | --state STATE] [--account I_ACCOUNT] [--source SOURCE]
                    [--limit N]
  espfd events show I_EVENT
  espfd events replay I_EVENT
  espfd events replay --failed [--account I_ACCOUNT]
Options:
  --state-dir DIR   the store's directory (default: ESPFD_STATE_DIR, else /var/lib/espfd)
States: queued, retry, report (status report owed), in_progress, done, failed,
  skipped (not provisioned: its type is not in ESPFD_EVENT_TYPES, or nothing to send).
Sources: espf (posted by ESPF), reconcile (queued by espfd reconcile; negative i_event).
A skipped event replayed by its I_EVENT is provisioned, whatever ESPFD_EVENT_TYPES says.
";

struct Args {
    state_dir: Option<PathBuf>,
    state: Option<State>,
    account: Option<i64>,
    source: Option<Source>,
    limit: usize,
    failed: bool,
    positional: Vec<String>,
}

fn parse(args: &[String]) -> Result<Args, Error> {
    let mut a = Args {
        state_dir: None,
        state: None,
        account: None,
        source: None,
        limit: 50,
        failed: false,
        positional: Vec::new(),
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| Error::Usage(format!("{name} needs a value\n{USAGE}")))
        };
        match arg.as_str() {
            "--state-dir" => a.state_dir = Some(PathBuf::from(value("--state-dir")?)),
            "--state" => {
                let s = value("--state")?;
                let Some(state) = State::parse(&s) else {
                    return Err(Error::Usage(format!("unknown state '{s}'\n{USAGE}")));
                };
                a.state = Some(state);
            }
            "--failed" => a.failed = true,
            "--source" => {
                let s = value("--source")?;
                let Some(source) = Source::parse(&s) else {
                    return Err(Error::Usage(format!("unknown source '{s}'\n{USAGE}")));
                };
                a.source = Some(source);
            }
            "--account" => {
                let v = value("--account")?;
                a.account = Some(
                    v.parse()
                        .map_err(|_| Error::Usage(format!("--account '{v}' is not a number")))?,
                );
            }
            "--limit" => {
                let v = value("--limit")?;
                a.limit = v
                    .parse()
                    .map_err(|_| Error::Usage(format!("--limit '{v}' is not a number")))?;
            }
            s if s.starts_with('-') => {
                return Err(Error::Usage(format!("unknown option {s}\n{USAGE}")))
            }
            s => a.positional.push(s.to_string()),
        }
    }
    Ok(a)
}

fn open(a: &Args) -> Result<Reader, Error> {
    open_store(a.state_dir.clone())
}

/// The store of `state_dir`, else of `ESPFD_STATE_DIR` (or its default), opened on a
/// connection of its own; an error if there is none yet. For the commands that work whether
/// the service runs or not (`events`, `pause`, `resume`).
pub(crate) fn open_store(state_dir: Option<PathBuf>) -> Result<Reader, Error> {
    let dir = state_dir
        .unwrap_or_else(|| PathBuf::from(env_or_default("ESPFD_STATE_DIR").unwrap_or_default()));
    let path = dir.join("espfd.db");
    if !path.is_file() {
        return Err(Error::Other(format!(
            "no event store at {} (set ESPFD_STATE_DIR or --state-dir)",
            path.display()
        )));
    }
    Reader::open(&path)
}

/// Runs `espfd events <args>`. The output is written once at the end; a reader that goes
/// away early (`espfd events show 7 | head -3`) ends the output quietly.
pub fn run(args: &[String]) -> Result<ExitCode, Error> {
    let mut out = String::new();
    let result = run_into(args, &mut out);
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(out.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            return Err(Error::io("cannot write to standard output", e))
        }
        _ => {}
    }
    result
}

/// Writes one line of output.
macro_rules! say {
    ($out:expr, $($arg:tt)*) => {{
        let _ = writeln!($out, $($arg)*);
    }};
}

fn run_into(args: &[String], out: &mut String) -> Result<ExitCode, Error> {
    if args
        .iter()
        .any(|a| a == "-h" || a == "--help" || a == "help")
    {
        out.push_str(USAGE);
        return Ok(ExitCode::SUCCESS);
    }
    let Some((sub, rest)) = args.split_first() else {
        return Err(Error::Usage(USAGE.to_string()));
    };
    let a = parse(rest)?;
    match sub.as_str() {
        "list" => {
            let state = if a.failed {
                Some(State::Failed)
            } else {
                a.state
            };
            let reader = open(&a)?;
            let rows = reader.list_from(state, a.account, a.source, a.limit)?;
            if let Some(p) = reader.paused()? {
                say!(
                    out,
                    "espfd is {p}; nothing goes upstream until espfd resume"
                );
            }
            say!(
                out,
                "{:<12} {:<11} {:<11} {:>4}  {:<24} {:<24} {:<22} message",
                "i_event",
                "state",
                "status",
                "try",
                "received",
                "entity",
                "event_type"
            );
            for r in &rows {
                say!(
                    out,
                    "{:<12} {:<11} {:<11} {:>4}  {:<24} {:<24} {:<22} {}",
                    r.i_event,
                    r.state,
                    r.status.as_deref().unwrap_or("-"),
                    r.attempts,
                    format_rfc3339(r.received_at),
                    printable(&r.entity),
                    printable(&r.event_type),
                    printable(crate::util::truncate_chars(
                        r.message.as_deref().unwrap_or(""),
                        80
                    ))
                );
            }
            eprintln!("{} event(s)", rows.len());
            Ok(ExitCode::SUCCESS)
        }
        "show" => {
            let [id] = a.positional.as_slice() else {
                return Err(Error::Usage(format!("show needs one I_EVENT\n{USAGE}")));
            };
            let i_event: i64 = id
                .parse()
                .map_err(|_| Error::Usage(format!("'{id}' is not an i_event")))?;
            let reader = open(&a)?;
            let Some(row) = reader.get(i_event)? else {
                return Err(Error::Other(format!(
                    "no event with i_event {i_event} in the store"
                )));
            };
            // Subscriber data is hidden as in the logs (ESPFD_REDACT).
            let setting = env_or_default("ESPFD_REDACT").unwrap_or_default();
            let fields = crate::redact::parse_fields(&setting)
                .map_err(|e| Error::Usage(format!("ESPFD_REDACT: {e}")))?;
            print_row(out, &row, &fields);
            say!(out, "attempts:");
            for (n, at, outcome, detail) in reader.attempts(i_event)? {
                let detail = crate::redact::redact_text(&detail, &fields);
                let detail = printable(&detail);
                say!(out, "  #{n} {} {outcome}: {detail}", format_rfc3339(at));
            }
            Ok(ExitCode::SUCCESS)
        }
        "replay" => {
            let which = match (a.positional.as_slice(), a.failed) {
                ([id], false) => Replay::One(
                    id.parse()
                        .map_err(|_| Error::Usage(format!("'{id}' is not an i_event")))?,
                ),
                ([], true) => Replay::Failed {
                    i_account: a.account,
                },
                _ => {
                    return Err(Error::Usage(format!(
                        "replay needs one I_EVENT or --failed\n{USAGE}"
                    )))
                }
            };
            let reader = open(&a)?;
            if let Replay::One(id) = which {
                match reader.get(id)? {
                    None => {
                        return Err(Error::Other(format!(
                            "no event with i_event {id} in the store"
                        )))
                    }
                    Some(r) if r.state.is_open() => {
                        return Err(Error::Other(format!(
                            "i_event {id} is still {} (not finished); nothing to replay",
                            r.state
                        )))
                    }
                    Some(r) if r.state == State::Skipped => say!(
                        out,
                        "i_event {id} was skipped ({}); replayed by its id, it goes to the \
                         connector whatever ESPFD_EVENT_TYPES says",
                        printable(r.message.as_deref().unwrap_or("no reason recorded"))
                    ),
                    Some(_) => {}
                }
            }
            let ids = reader.replay(which)?;
            for id in &ids {
                say!(out, "queued again: i_event {id}");
            }
            eprintln!(
                "{} event(s) queued again; a running espfd picks them up within a second",
                ids.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        other => Err(Error::Usage(format!(
            "unknown events command '{other}'\n{USAGE}"
        ))),
    }
}

fn print_row(out: &mut String, r: &StoredEvent, redact: &[String]) {
    say!(out, "i_event:      {}", r.i_event);
    say!(out, "event_type:   {}", printable(&r.event_type));
    say!(out, "entity:       {}", printable(&r.entity));
    say!(out, "state:        {}", r.state);
    say!(out, "status:       {}", r.status.as_deref().unwrap_or("-"));
    say!(
        out,
        "message:      {}",
        printable(&crate::redact::redact_text(
            r.message.as_deref().unwrap_or(""),
            redact
        ))
    );
    say!(out, "attempts:     {}", r.attempts);
    say!(out, "received_at:  {}", format_rfc3339(r.received_at));
    if matches!(r.state, State::Retry | State::Report | State::InProgress) {
        say!(out, "next_at:      {}", format_rfc3339(r.next_at));
    }
    if let Some(t) = r.finished_at {
        say!(out, "finished_at:  {}", format_rfc3339(t));
    }
    if let Some(t) = r.replayed_at {
        say!(out, "replayed_at:  {}", format_rfc3339(t));
    }
    let body = match serde_json::from_str::<serde_json::Value>(&r.body) {
        Ok(v) => crate::redact::redact_json(&v, redact).to_string(),
        Err(_) => crate::redact::redact_text(&r.body, redact).into_owned(),
    };
    say!(out, "body:         {}", printable(&body));
}
