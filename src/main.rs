//! The `espfd` command: parse the command line, build the configuration, run, exit.

use std::process::ExitCode;

use espfd::cli::{self, USAGE};
use espfd::config::{help_env, RawConfig};
use espfd::error::Error;
use espfd::service;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("espfd: {e}");
            match e {
                Error::Usage(_) => ExitCode::from(64),
                Error::Config(_) | Error::Corrupt { .. } => ExitCode::from(78),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

fn run(args: &[String]) -> Result<ExitCode, Error> {
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    match words.as_slice() {
        [] | ["run"] => {
            let config = RawConfig::from_env()?.validate()?;
            service::run(&config)?;
            Ok(ExitCode::SUCCESS)
        }
        ["demo"] => cli::demo::run(),
        ["events", ..] => cli::events::run(&args[1..]),
        ["pause", ..] => cli::pause::pause(&args[1..]),
        ["resume", ..] => cli::pause::resume(&args[1..]),
        ["reconcile", ..] => cli::reconcile::run(&args[1..]),
        ["check"] => cli::check::run(),
        ["render", ..] => cli::render::run(&args[1..]),
        ["simulate", ..] => cli::simulate::run(&args[1..]),
        ["send", ..] => cli::send::run(&args[1..]),
        ["help", "env"] => {
            print!("{}", help_env());
            Ok(ExitCode::SUCCESS)
        }
        ["help"] | ["--help"] | ["-h"] => {
            print!("{USAGE}");
            Ok(ExitCode::SUCCESS)
        }
        ["--version"] | ["-V"] => {
            println!("espfd {}", env!("CARGO_PKG_VERSION"));
            Ok(ExitCode::SUCCESS)
        }
        _ => Err(Error::Usage(format!(
            "unknown command '{}'; see espfd --help",
            args.join(" ")
        ))),
    }
}
