//! The HTTP connector: `POST <ESPFD_TARGET_URL>` of the event document.
//!
//! Replies: 202 → accepted (IN_PROGRESS), other 2xx → done (OK); 408, 425, 429, 5xx,
//! timeouts and connection errors → transient (with `Retry-After` honoured); other 4xx (and
//! anything else) → permanent. The reply body's first 4000 characters become the message.

use std::time::Duration;

use super::Outcome;
use crate::enrich::Context;
use crate::error::Error;
use crate::espf::MAX_MESSAGE;
use crate::outbound::{self, Failure};
use crate::util::truncate_chars;

/// The HTTP connector.
pub struct UrlConnector {
    url: String,
    agent: ureq::Agent,
}

impl UrlConnector {
    /// Builds the connector; `pool` is the number of workers calling it at once.
    pub fn new(url: &str, timeout: Duration, pool: usize) -> Result<UrlConnector, Error> {
        Ok(UrlConnector {
            url: url.to_string(),
            agent: outbound::agent(timeout, pool, None)?,
        })
    }

    /// Sends the context's document.
    pub fn deliver(&self, context: &Context<'_>) -> Outcome {
        let sent = self
            .agent
            .post(&self.url)
            .header("Content-Type", "application/json")
            .header("Idempotency-Key", context.i_event().to_string())
            .send(context.document.as_bytes());
        let mut resp = match sent {
            Ok(r) => r,
            Err(e) => return Outcome::Failed(Failure::transient(format!("target: {e}"))),
        };
        let code = resp.status().as_u16();
        let retry_after = outbound::retry_after(
            resp.headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok()),
        );
        let body = outbound::body_text(&mut resp, 64 * 1024).unwrap_or_default();
        let text = truncate_chars(body.trim(), MAX_MESSAGE).to_string();
        match code {
            202 => Outcome::Accepted(if text.is_empty() {
                "accepted by target".into()
            } else {
                text
            }),
            200..=299 => Outcome::Done(if text.is_empty() {
                "provisioned".into()
            } else {
                text
            }),
            408 | 425 | 429 | 500..=599 => Outcome::Failed(Failure {
                transient: true,
                message: with_code(code, &text),
                retry_after,
            }),
            _ => Outcome::Failed(Failure::permanent(with_code(code, &text))),
        }
    }

    /// Whether the target answers at all: an `OPTIONS` to its URL, which provisions nothing
    /// (`espfd check`). Any HTTP reply counts; its status code is returned.
    pub fn probe(&self) -> Result<u16, String> {
        match self.agent.options(&self.url).call() {
            Ok(resp) => Ok(resp.status().as_u16()),
            Err(e) => Err(e.to_string()),
        }
    }
}

fn with_code(code: u16, text: &str) -> String {
    let text = format!("target answered HTTP {code}: {text}");
    truncate_chars(text.trim_end_matches([' ', ':']), MAX_MESSAGE).to_string()
}
