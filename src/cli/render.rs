//! `espfd render`: shows the request(s) the configured connector would send for one event —
//! a stored one, or one in a file — with the real PortaBilling lookup (or a record from a
//! file), and with `--send` sends them and shows the replies. Nothing is stored and nothing
//! is reported to ESPF, either way.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use serde_json::Value;

use crate::config::RawConfig;
use crate::connector::send::OutRequest;
use crate::connector::template::{Mode, Run};
use crate::connector::{ConnectorSpec, Outcome, TemplateConnector};
use crate::enrich::{self, Context};
use crate::error::Error;
use crate::event::Event;
use crate::portabilling::PbClient;
use crate::store::Reader;
use crate::util::{now_ms, truncate_chars};

/// `espfd render --help`.
pub const USAGE: &str = "\
espfd render — show the requests the connector would send for one event

Usage:
  espfd render I_EVENT [options]        an event in the store (ESPFD_STATE_DIR)
  espfd render --event FILE [options]   an event as ESPF would POST it (JSON)

Options:
  --entity FILE   use this record (JSON, with or without \"kind\") instead of looking the
                  entity up in PortaBilling; pb() in a template still asks PortaBilling
  --send          send the requests and show the replies and the outcome; still nothing is
                  stored and no status is reported to ESPF
  -h, --help      this text

The connector and its settings come from the environment, as for the service. Secrets and
the authentication header are shown as ***. Without --send, a step that needs the reply of an
earlier step says so. Exit 0 when everything asked for succeeded, 1 when a step failed,
78 when the template does not load.
";

#[derive(Default)]
struct Args {
    i_event: Option<i64>,
    event_file: Option<PathBuf>,
    entity_file: Option<PathBuf>,
    send: bool,
}

fn parse(args: &[String]) -> Result<Option<Args>, Error> {
    let mut a = Args::default();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = |flag: &str| -> Result<PathBuf, Error> {
            it.next().map(PathBuf::from).ok_or_else(|| {
                Error::Usage(format!("{flag} needs a file; see espfd render --help"))
            })
        };
        match arg.as_str() {
            "-h" | "--help" => return Ok(None),
            "--event" => a.event_file = Some(value("--event")?),
            "--entity" => a.entity_file = Some(value("--entity")?),
            "--send" => a.send = true,
            s if !s.starts_with('-') && a.i_event.is_none() => {
                a.i_event = Some(s.parse().map_err(|_| {
                    Error::Usage(format!("'{s}' is not an i_event; see espfd render --help"))
                })?)
            }
            s => {
                return Err(Error::Usage(format!(
                    "unknown argument '{s}'; see espfd render --help"
                )))
            }
        }
    }
    if a.i_event.is_some() == a.event_file.is_some() {
        return Err(Error::Usage(
            "give either I_EVENT or --event FILE; see espfd render --help".into(),
        ));
    }
    Ok(Some(a))
}

fn read_json(path: &PathBuf, what: &str) -> Result<Value, Error> {
    let text = std::fs::read(path)
        .map_err(|e| Error::io(format!("{what}: cannot read {}", path.display()), e))?;
    serde_json::from_slice(&text)
        .map_err(|e| Error::Other(format!("{what}: {} is not JSON: {e}", path.display())))
}

/// Runs `espfd render <args>`.
pub fn run(args: &[String]) -> Result<ExitCode, Error> {
    let Some(a) = parse(args)? else {
        print!("{USAGE}");
        return Ok(ExitCode::SUCCESS);
    };
    let config = RawConfig::from_env()?.validate()?;
    let (event, received_at, attempt) = match (&a.i_event, &a.event_file) {
        (Some(i), _) => {
            let path = config.state_dir.join("espfd.db");
            if !path.is_file() {
                return Err(Error::Other(format!(
                    "no event store at {} (set ESPFD_STATE_DIR)",
                    path.display()
                )));
            }
            let row = Reader::open(&path)?
                .get(*i)?
                .ok_or_else(|| Error::Other(format!("no event {i} in {}", path.display())))?;
            let event = row
                .event
                .clone()
                .map_err(|why| Error::Other(format!("event {i} no longer parses: {why}")))?;
            (event, row.received_at, row.attempts + 1)
        }
        (None, Some(file)) => {
            let body = serde_json::to_vec(&read_json(file, "--event")?).unwrap_or_default();
            let event = Event::parse(&body)
                .map_err(|why| Error::Other(format!("--event {}: {why}", file.display())))?;
            (event, now_ms(), 1)
        }
        (None, None) => unreachable!("parse() wants one of them"),
    };
    let pb = Arc::new(PbClient::new(&config.pb)?);
    let record = match &a.entity_file {
        Some(file) => match read_json(file, "--entity")? {
            Value::Object(mut m) => {
                m.remove("kind");
                Some(Value::Object(m))
            }
            _ => {
                return Err(Error::Other(format!(
                    "--entity {}: not a JSON object",
                    file.display()
                )))
            }
        },
        None => match enrich::lookup(&pb, &event) {
            Ok(r) => r,
            Err(f) => {
                println!("# PortaBilling lookup failed: {}", f.message);
                return Ok(ExitCode::FAILURE);
            }
        },
    };
    let context = Context::new(&event, received_at, attempt, &config.group, record);
    let mut out = String::new();
    let ok = match &config.connector.spec {
        ConnectorSpec::Template(path) => {
            let template = TemplateConnector::load(path, &config.connector, pb, true)?;
            let mode = if a.send { Mode::Send } else { Mode::DryRun };
            let run = template.run(&context, mode);
            show_run(&mut out, &template, &run, a.send)
        }
        ConnectorSpec::Http(url) => {
            let _ = writeln!(out, "### the URL connector\nPOST {url}\nContent-Type: application/json\nIdempotency-Key: {}\n\n{}", event.i_event, context.document);
            if a.send {
                let connector = crate::connector::UrlConnector::new(url, &config.connector)?;
                show_outcome(&mut out, &connector.deliver(&context))
            } else {
                true
            }
        }
        ConnectorSpec::Exec(cmd) => {
            let _ = writeln!(
                out,
                "### the exec connector\n$ {cmd}\n(standard input:)\n{}",
                context.document
            );
            if a.send {
                let _ = writeln!(out, "# --send runs nothing for the exec connector: it would provision for real outside espfd's view; run the command by hand with this input");
            }
            true
        }
    };
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(out.as_bytes());
    let _ = stdout.flush();
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Prints a template run; whether everything asked for succeeded.
fn show_run(out: &mut String, t: &TemplateConnector, run: &Run, sent: bool) -> bool {
    let mut ok = true;
    for step in &run.steps {
        let _ = writeln!(out, "### {}", step.label);
        if let Some(req) = &step.request {
            show_request(out, t, req, step.authenticated);
        }
        if let Some(reply) = &step.reply {
            let _ = writeln!(out, "# -> HTTP {}", reply.status);
            for (n, v) in &reply.headers {
                let _ = writeln!(out, "#    {n}: {}", t.mask(v));
            }
            let body = t.mask(reply.body.trim());
            if !body.is_empty() {
                for line in truncate_chars(&body, 4000).lines() {
                    let _ = writeln!(out, "#    {line}");
                }
            }
        }
        if let Some(note) = &step.note {
            let _ = writeln!(out, "# {note}");
            let harmless = note.contains("use --send") || note.contains("renders to nothing");
            ok &= harmless;
        }
        out.push('\n');
    }
    match &run.outcome {
        Some(outcome) if sent => ok &= show_outcome(out, outcome),
        Some(Outcome::Failed(f)) => {
            let _ = writeln!(out, "# outcome: FAILED: {}", f.message);
            ok = false;
        }
        _ if sent => {}
        _ => {
            let _ = writeln!(out, "# nothing sent (use --send to send these requests; still nothing is stored or reported)");
        }
    }
    ok
}

fn show_request(out: &mut String, t: &TemplateConnector, req: &OutRequest, authenticated: bool) {
    let _ = writeln!(out, "{} {}", req.method, t.mask(&req.url));
    for (n, v) in &req.headers {
        let _ = writeln!(out, "{n}: {}", t.mask(v));
    }
    if let Some(name) = t.auth_header().filter(|_| authenticated) {
        let _ = writeln!(out, "{name}: ***");
    }
    if !req.body.is_empty() {
        out.push('\n');
        let _ = writeln!(out, "{}", t.mask(&String::from_utf8_lossy(&req.body)));
    }
}

fn show_outcome(out: &mut String, outcome: &Outcome) -> bool {
    let (text, ok) = match outcome {
        Outcome::Done(m) => (format!("OK: {m}"), true),
        Outcome::Accepted(m) => (
            format!("IN_PROGRESS (202; the final status comes by callback): {m}"),
            true,
        ),
        Outcome::Skipped(m) => (format!("skipped: {m}"), true),
        Outcome::Failed(f) if f.transient => (format!("RETRY (transient): {}", f.message), false),
        Outcome::Failed(f) => (format!("FAILED: {}", f.message), false),
    };
    let _ = writeln!(out, "# outcome: {text}");
    ok
}
