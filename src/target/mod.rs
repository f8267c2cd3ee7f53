//! Connectors to the external system being provisioned (the "target").
//!
//! A connector receives one [`Context`] per attempt (the event, PortaBilling's record of its
//! entity, the attempt, the group and the JSON document; see [`crate::enrich`]) and answers
//! with an [`Outcome`]. The HTTP connector is in `http.rs`, the exec connector in `exec.rs`.

mod exec;
mod http;

pub use exec::{ExecTarget, EX_TEMPFAIL};
pub use http::HttpTarget;

use crate::config::{Config, TargetSpec};
use crate::enrich::Context;
use crate::error::Error;
use crate::outbound::Failure;

/// What the target made of one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Provisioned; the message goes to ESPF.
    Done(String),
    /// Accepted; the final status arrives later.
    Accepted(String),
    /// Did not work, transiently or for good.
    Failed(Failure),
}

/// The configured connector.
pub enum Target {
    /// `ESPFD_TARGET_URL`.
    Http(HttpTarget),
    /// `ESPFD_TARGET_EXEC`.
    Exec(ExecTarget),
}

impl Target {
    /// Builds the connector the configuration names.
    pub fn from_config(config: &Config) -> Result<Target, Error> {
        Ok(match &config.target {
            TargetSpec::Http(url) => {
                Target::Http(HttpTarget::new(url, config.target_timeout, config.workers)?)
            }
            TargetSpec::Exec(cmd) => Target::Exec(ExecTarget::new(cmd, config.exec_timeout)),
        })
    }

    /// Delivers one event.
    pub fn deliver(&self, context: &Context<'_>) -> Outcome {
        match self {
            Target::Http(t) => t.deliver(context),
            Target::Exec(t) => t.deliver(context),
        }
    }
}
