//! Connectors to the external system being provisioned (the "target").
//!
//! A connector receives one [`Context`] per attempt (the event, PortaBilling's record of its
//! entity, the attempt, the group and the JSON document; see [`crate::enrich`]) and answers
//! with an [`Outcome`]. The URL connector is in `http.rs`, the exec connector in `exec.rs`,
//! the template connector in `template/`. The URL and template connectors send through one
//! [`send::Sender`] (agent, outbound authentication) and judge replies with [`judge`].

pub mod auth;
mod exec;
mod http;
pub mod judge;
pub mod send;
pub mod template;

pub use auth::AuthSettings;
pub use exec::{ExecConnector, EX_TEMPFAIL};
pub use http::UrlConnector;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::enrich::Context;
use crate::error::Error;
use crate::outbound::{Failure, OutboundTls};
use crate::portabilling::PbClient;
use crate::util::Secret;
pub use template::TemplateConnector;

/// Where events are delivered (`ESPFD_TARGET_URL`, `ESPFD_TARGET_EXEC` or
/// `ESPFD_TARGET_TEMPLATE`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectorSpec {
    /// `POST` of the event document to this URL.
    Http(String),
    /// This shell command, with the event document on stdin.
    Exec(String),
    /// The requests of this template file.
    Template(PathBuf),
}

/// What the connector needs, built by `config`.
#[derive(Debug, Clone)]
pub struct ConnectorSettings {
    /// Which connector, and where.
    pub spec: ConnectorSpec,
    /// Total time for one call of the HTTP connector (`ESPFD_TARGET_TIMEOUT`).
    pub timeout: Duration,
    /// Time for one run of the exec connector (`ESPFD_EXEC_TIMEOUT`).
    pub exec_timeout: Duration,
    /// Calls made at once (the workers).
    pub pool: usize,
    /// Variables removed from the exec connector's environment: espfd's own secrets.
    pub hidden_env: Vec<String>,
    /// `ESPFD_SETTING_<NAME>` by NAME, for templates.
    pub settings: BTreeMap<String, String>,
    /// `ESPFD_SECRET_<NAME>` by NAME, for templates.
    pub secrets: BTreeMap<String, Secret>,
    /// What the URL and template connectors add to a request (`ESPFD_TARGET_AUTH`, ...).
    /// Defaults to none.
    pub auth: AuthSettings,
    /// CAs and client certificate for the target (`ESPFD_TARGET_CA_FILE`,
    /// `ESPFD_TARGET_TLS_CERT`, `ESPFD_TARGET_TLS_KEY`). Defaults to the public web roots and
    /// no client certificate.
    pub tls: OutboundTls,
}

/// What the target made of one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Provisioned; the message goes to ESPF.
    Done(String),
    /// Accepted; the final status arrives later.
    Accepted(String),
    /// Did not work, transiently or for good.
    Failed(Failure),
    /// Not for this connector (a template that sent no request); nothing is reported.
    Skipped(String),
}

/// The configured connector.
pub enum Connector {
    /// `ESPFD_TARGET_URL`.
    Http(UrlConnector),
    /// `ESPFD_TARGET_EXEC`.
    Exec(ExecConnector),
    /// `ESPFD_TARGET_TEMPLATE`.
    Template(Box<TemplateConnector>),
}

impl Connector {
    /// Builds the connector the settings name; a template's `pb()` asks `pb`.
    pub fn new(settings: &ConnectorSettings, pb: Arc<PbClient>) -> Result<Connector, Error> {
        Ok(match &settings.spec {
            ConnectorSpec::Http(url) => Connector::Http(UrlConnector::new(url, settings)?),
            ConnectorSpec::Exec(cmd) => Connector::Exec(ExecConnector::new(
                cmd,
                settings.exec_timeout,
                settings.hidden_env.clone(),
            )),
            ConnectorSpec::Template(path) => Connector::Template(Box::new(
                TemplateConnector::load(path, settings, pb, false)?,
            )),
        })
    }

    /// Delivers one event.
    pub fn deliver(&self, context: &Context<'_>) -> Outcome {
        match self {
            Connector::Http(t) => t.deliver(context),
            Connector::Exec(t) => t.deliver(context),
            Connector::Template(t) => t.deliver(context),
        }
    }
}
