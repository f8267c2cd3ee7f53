//! The crate's error type.

use std::fmt;
use std::io;

/// A configuration problem, naming the variable at fault. `config` reports it; it lives here,
/// below every module, so that the components that read files named by a variable (the TLS
/// certificate, say) can report it too without importing `config`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The variable at fault.
    pub var: String,
    /// What is wrong with it.
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.var, self.reason)
    }
}

impl std::error::Error for ConfigError {}

/// What can go wrong outside of event processing (whose failures are
/// `outbound::Failure`).
#[derive(Debug)]
pub enum Error {
    /// A configuration value is missing or invalid; names the variable.
    Config(ConfigError),
    /// The event store (SQLite) failed; says which operation.
    Store { op: &'static str, detail: String },
    /// The store file is damaged (SQLite's quick check failed, or it is not a database):
    /// espfd does not start on it. A person must recover it (README, "Recovering a damaged
    /// store"), so the exit code is the one supervisors do not restart (78).
    Corrupt { path: String, detail: String },
    /// The store's write queue is full; the caller should answer 503 and let ESPF retry.
    Overloaded,
    /// The store has been shut down.
    Closed,
    /// An I/O operation failed; `context` says which and on what.
    Io { context: String, source: io::Error },
    /// A command-line usage problem.
    Usage(String),
    /// Anything else, already phrased for the operator.
    Other(String),
}

impl Error {
    /// An [`Error::Io`] with context.
    pub fn io(context: impl Into<String>, source: io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config(e) => write!(f, "configuration: {e}"),
            Error::Store { op, detail } => write!(f, "event store: {op}: {detail}"),
            Error::Corrupt { path, detail } => write!(
                f,
                "event store {path} is damaged ({detail}); espfd does not start on it. Stop \
                 espfd, keep the file, and recover it as the README says (Recovering a damaged \
                 store)"
            ),
            Error::Overloaded => f.write_str("event store: write queue full"),
            Error::Closed => f.write_str("event store: shut down"),
            Error::Io { context, source } => write!(f, "{context}: {source}"),
            Error::Usage(m) | Error::Other(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Error {}

impl From<ConfigError> for Error {
    fn from(e: ConfigError) -> Error {
        Error::Config(e)
    }
}
