//! `espfd reconcile`: re-provision accounts from PortaBilling, e.g. after the external
//! system lost data or a connector changed.
//!
//! Walks `Account/get_account_list` in pages of at most 1000 (the walk ends at the first
//! empty page; `get_total` only feeds the progress figure), collects and de-duplicates the
//! ids (rows come in no guaranteed order), then queues one `Reconcile/Account` event per
//! account straight into the store (`store/walk.rs`), in short transactions, whether the
//! service runs or not. The service processes them through its usual lanes, after ESPF's
//! events and at the walk's `--rate`. Needs the service's configuration (PortaBilling, the
//! state directory), like `espfd check`.

use std::collections::BTreeSet;
use std::process::ExitCode;

use serde_json::{json, Value};

use crate::config::RawConfig;
use crate::error::Error;
use crate::pipeline::DEFAULT_RATE;
use crate::portabilling::PbClient;
use crate::store::{Reader, Store};
use crate::util::now_ms;

/// Usage of `espfd reconcile`.
pub const USAGE: &str = "\
Usage:
  espfd reconcile (--all | --customer I_CUSTOMER | --id PATTERN) [--rate R] [--dry-run]
Queues one Reconcile/Account event per PortaBilling account (closed ones too), so that the
service provisions each account's current state again through its usual connector.
Options:
  --all             every account (required when neither --customer nor --id is given)
  --customer N      only the accounts of customer N (PortaBilling's i_customer)
  --id PATTERN      only accounts whose ID matches PortaBilling's SQL LIKE pattern (% and _)
  --rate R          events per second the service processes for this walk, in all lanes
                    (default 10; 0 = no limit); ESPF's events always go first
  --dry-run         print the accounts it would queue; queue nothing
  --batch N         events queued per store transaction (default 500)
An account whose earlier reconcile event is not finished yet is not queued again, so a walk
that was interrupted is completed by running it again. Uses the service's environment
(ESPFD_PB_*, ESPFD_STATE_DIR); the service may be running or stopped.
";

/// Most rows asked for per page: PortaBilling's own limit.
const PAGE: usize = 1000;
/// Pages in a row that bring no new account before the walk gives up on a PortaBilling that
/// seems to ignore `offset`.
const STALE_PAGES: usize = 3;

#[derive(Debug, Default)]
struct Args {
    all: bool,
    customer: Option<i64>,
    id: Option<String>,
    rate: Option<f64>,
    dry_run: bool,
    batch: Option<usize>,
}

impl Args {
    /// How the walk is described in its record and output.
    fn filter(&self) -> String {
        let mut parts = Vec::new();
        if let Some(c) = self.customer {
            parts.push(format!("--customer {c}"));
        }
        if let Some(id) = &self.id {
            parts.push(format!("--id {id}"));
        }
        if parts.is_empty() {
            parts.push("--all".into());
        }
        parts.join(" ")
    }
}

fn usage(why: &str) -> Error {
    Error::Usage(format!("{why}\n{USAGE}"))
}

/// `None` for `--help`.
fn parse(args: &[String]) -> Result<Option<Args>, Error> {
    let mut a = Args::default();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| usage(&format!("{name} needs a value")))
        };
        match arg.as_str() {
            "-h" | "--help" | "help" => return Ok(None),
            "--all" => a.all = true,
            "--dry-run" => a.dry_run = true,
            "--customer" => {
                let v = value("--customer")?;
                a.customer = Some(
                    v.parse()
                        .map_err(|_| usage(&format!("--customer '{v}' is not an i_customer")))?,
                );
            }
            "--id" => a.id = Some(value("--id")?),
            "--rate" => {
                let v = value("--rate")?;
                match v.parse::<f64>() {
                    Ok(r) if r.is_finite() && r >= 0.0 => a.rate = Some(r),
                    _ => return Err(usage(&format!("--rate '{v}' is not a number >= 0"))),
                }
            }
            "--batch" => {
                let v = value("--batch")?;
                match v.parse::<usize>() {
                    Ok(n) if n > 0 => a.batch = Some(n),
                    _ => return Err(usage(&format!("--batch '{v}' is not a positive number"))),
                }
            }
            other => return Err(usage(&format!("unexpected argument '{other}'"))),
        }
    }
    if !a.all && a.customer.is_none() && a.id.is_none() {
        return Err(usage(
            "which accounts? give --customer, --id or, for every account, --all",
        ));
    }
    Ok(Some(a))
}

/// Runs `espfd reconcile <args>`.
pub fn run(args: &[String]) -> Result<ExitCode, Error> {
    let Some(a) = parse(args)? else {
        print!("{USAGE}");
        return Ok(ExitCode::SUCCESS);
    };
    let config = RawConfig::from_env()?.validate()?;
    let pb = PbClient::new(&config.pb)?;
    let rate = a.rate.unwrap_or(DEFAULT_RATE);
    let accounts = walk(&pb, &a)?;
    let total = accounts.len();
    let path = config.state_dir.join("espfd.db");
    if !path.is_file() {
        // No service has run on this directory yet: make the store as it would.
        Store::open(&config.state_dir, config.workers)?.1.join();
    }
    let reader = Reader::open(&path)?;
    if a.dry_run {
        let open = reader.reconcile_open()?;
        let mut would = 0;
        for id in &accounts {
            if open.contains(id) {
                println!("i_account {id}: not queued, its reconcile event is not finished yet");
            } else {
                println!("i_account {id}: would be queued");
                would += 1;
            }
        }
        eprintln!(
            "dry run: {would} of {total} accounts would be queued ({}); nothing was queued",
            a.filter()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let lanes = reader.recorded_lanes()?.unwrap_or(config.workers);
    let walk = reader.begin_walk(&a.filter(), rate, total, now_ms())?;
    let list: Vec<i64> = accounts.into_iter().collect();
    let (mut queued, mut open, mut seen) = (0usize, 0usize, 0usize);
    for chunk in list.chunks(a.batch.unwrap_or(500)) {
        let done = reader.queue_reconcile(walk, chunk, lanes, now_ms())?;
        queued += done.queued.len();
        open += done.open.len();
        seen += chunk.len();
        eprintln!("queued {seen} of {total}, {}", pace(rate, queued));
    }
    reader.finish_walk(walk, now_ms())?;
    println!(
        "walk {walk} ({}): {queued} reconcile events queued, {open} accounts left out as their \
         earlier reconcile event is not finished; the service processes them at {}",
        a.filter(),
        rate_text(rate)
    );
    eprintln!(
        "a running espfd picks them up within 2 s, a stopped one at its next start; \
         espfd events list --source reconcile shows them"
    );
    Ok(ExitCode::SUCCESS)
}

/// Pages through `Account/get_account_list` with the filters of `a`; the ids found, once
/// each.
fn walk(pb: &PbClient, a: &Args) -> Result<BTreeSet<i64>, Error> {
    let mut ids = BTreeSet::new();
    let mut offset = 0usize;
    let mut total: Option<u64> = None;
    let mut stale = 0;
    loop {
        let mut params = json!({ "limit": PAGE, "offset": offset, "get_total": 1 });
        if let Some(c) = a.customer {
            params["i_customer"] = json!(c);
        }
        if let Some(id) = &a.id {
            params["id"] = json!(id);
        }
        let reply = pb
            .call("Account", "get_account_list", params)
            .map_err(|e| {
                Error::Other(
                    e.into_failure(&format!("Account/get_account_list at offset {offset}"))
                        .message,
                )
            })?;
        let rows = match reply.get("account_list") {
            Some(Value::Array(rows)) => rows,
            _ => {
                return Err(Error::Other(format!(
                    "PortaBilling: Account/get_account_list at offset {offset} answered without \
                     an account_list"
                )))
            }
        };
        if rows.is_empty() {
            break;
        }
        if total.is_none() {
            total = reply.get("total").and_then(Value::as_u64);
        }
        let before = ids.len();
        ids.extend(
            rows.iter()
                .filter_map(|r| r.get("i_account"))
                .filter_map(crate::event::id_of),
        );
        stale = if ids.len() == before { stale + 1 } else { 0 };
        if stale >= STALE_PAGES {
            return Err(Error::Other(format!(
                "PortaBilling: {STALE_PAGES} pages of Account/get_account_list in a row brought \
                 no new account (offset {offset}); nothing was queued"
            )));
        }
        offset += rows.len();
        match total {
            Some(t) => eprintln!("read {} of {t} accounts", ids.len()),
            None => eprintln!("read {} accounts", ids.len()),
        }
    }
    Ok(ids)
}

fn rate_text(rate: f64) -> String {
    if rate <= 0.0 {
        "no rate limit".into()
    } else {
        format!("{rate} per second")
    }
}

/// `rate 10 per second, about 4 min 10 s to process` for `n` events.
fn pace(rate: f64, n: usize) -> String {
    if rate <= 0.0 {
        return "no rate limit".into();
    }
    let secs = (n as f64 / rate).ceil() as u64;
    let left = match secs {
        s if s < 60 => format!("{s} s"),
        s if s < 3600 => format!("{} min {} s", s / 60, s % 60),
        s => format!("{} h {} min", s / 3600, (s % 3600) / 60),
    };
    format!("rate {}, about {left} left to process", rate_text(rate))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Result<Option<Args>, Error> {
        parse(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn a_bare_reconcile_is_refused_and_filters_are_described() {
        assert!(matches!(args(&[]), Err(Error::Usage(m)) if m.contains("--all")));
        assert!(matches!(args(&["--rate", "5"]), Err(Error::Usage(_))));
        assert!(matches!(
            args(&["--all", "--rate", "-1"]),
            Err(Error::Usage(_))
        ));
        assert!(matches!(
            args(&["--all", "--batch", "0"]),
            Err(Error::Usage(_))
        ));
        assert!(args(&["--help"]).unwrap().is_none());
        let a = args(&["--customer", "6392", "--id", "1206%"])
            .unwrap()
            .unwrap();
        assert_eq!(a.filter(), "--customer 6392 --id 1206%");
        assert_eq!(args(&["--all"]).unwrap().unwrap().filter(), "--all");
        assert_eq!(
            pace(10.0, 2500),
            "rate 10 per second, about 4 min 10 s left to process"
        );
        assert_eq!(pace(0.0, 2500), "no rate limit");
    }
}
