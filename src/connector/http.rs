//! The URL connector: `POST <ESPFD_TARGET_URL>` of the event document.
//!
//! Replies are judged by the default lists ([`Judge::default`]): 202 → accepted
//! (IN_PROGRESS), other 2xx → done (OK); 408, 425, 429, 5xx, timeouts and connection errors
//! → transient (with `Retry-After` honoured); anything else → permanent. The reply body's
//! first 4000 characters become the message.

use super::judge::{Judge, Verdict};
use super::send::{OutRequest, Reply, Sender};
use super::{ConnectorSettings, Outcome};
use crate::enrich::Context;
use crate::error::Error;
use crate::espf::MAX_MESSAGE;
use crate::outbound::Failure;
use crate::util::truncate_chars;

/// The URL connector.
pub struct UrlConnector {
    url: String,
    sender: Sender,
    judge: Judge,
}

impl UrlConnector {
    /// Builds the connector for `url`.
    pub fn new(url: &str, settings: &ConnectorSettings) -> Result<UrlConnector, Error> {
        Ok(UrlConnector {
            url: url.to_string(),
            sender: Sender::new(settings)?,
            judge: Judge::defaults().clone(),
        })
    }

    /// Sends the context's document.
    pub fn deliver(&self, context: &Context<'_>) -> Outcome {
        let req = OutRequest {
            method: "POST".into(),
            url: self.url.clone(),
            headers: vec![
                ("Content-Type".into(), "application/json".into()),
                ("Idempotency-Key".into(), context.i_event().to_string()),
            ],
            body: context.document.clone().into_bytes(),
        };
        match self.sender.send(&req, true) {
            Ok(reply) => judge(&self.judge, &reply),
            Err(f) => Outcome::Failed(f),
        }
    }

    /// Whether the target answers at all (`espfd check`); see [`Sender::probe`].
    pub fn probe(&self) -> Result<u16, String> {
        self.sender.probe(&self.url)
    }
}

/// What a reply makes of the delivery, with the reply's body as the message.
pub(super) fn judge(judge: &Judge, reply: &Reply) -> Outcome {
    let text = truncate_chars(reply.body.trim(), MAX_MESSAGE).to_string();
    match judge.verdict(reply.status) {
        Verdict::Ok if reply.status == 202 => Outcome::Accepted(if text.is_empty() {
            "accepted by target".into()
        } else {
            text
        }),
        Verdict::Ok => Outcome::Done(if text.is_empty() {
            "provisioned".into()
        } else {
            text
        }),
        Verdict::Transient => Outcome::Failed(Failure {
            retry_after: reply.retry_after,
            ..Failure::transient(with_code(reply.status, &text))
        }),
        Verdict::Permanent => Outcome::Failed(Failure::permanent(with_code(reply.status, &text))),
    }
}

/// `target answered HTTP <code>: <text>`, within the status message's length.
pub(super) fn with_code(code: u16, text: &str) -> String {
    let text = format!("target answered HTTP {code}: {text}");
    truncate_chars(text.trim_end_matches([' ', ':']), MAX_MESSAGE).to_string()
}
