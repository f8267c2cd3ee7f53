//! The bodies `espfd send` posts: the event template (one event type, an entity id spread
//! over `--accounts`, consecutive `i_event`s) or a file sent as it is.

use std::sync::Arc;

/// What each request carries as its body.
#[derive(Clone)]
pub enum BodySource {
    /// The event template.
    Template {
        event_type: String,
        account: u64,
        accounts: u64,
        start_id: u64,
    },
    /// These bytes, unchanged, for every request.
    Literal(Arc<Vec<u8>>),
}

impl BodySource {
    /// The body of request `n`.
    pub fn body(&self, n: u64) -> Vec<u8> {
        match self {
            BodySource::Literal(bytes) => bytes.as_ref().clone(),
            BodySource::Template {
                event_type,
                account,
                accounts,
                start_id,
            } => event_body(
                event_type,
                start_id.saturating_add(n),
                account.saturating_add(n % accounts),
            ),
        }
    }
}

/// An event of `event_type` naming entity `id` in the variable its group uses.
pub fn event_body(event_type: &str, i_event: u64, id: u64) -> Vec<u8> {
    let group = event_type.split('/').next().unwrap_or("");
    let variables = match group {
        "Customer" => serde_json::json!({"i_event": i_event, "i_customer": id}),
        "Invoice" => serde_json::json!({"i_event": i_event, "i_customer": id, "i_invoice": id}),
        "DID" => serde_json::json!({"i_event": i_event, "number": id.to_string()}),
        _ => serde_json::json!({"i_event": i_event, "i_account": id}),
    };
    serde_json::json!({"event_type": event_type, "variables": variables})
        .to_string()
        .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_name_the_entity_of_their_group() {
        let body = |t: &str| -> serde_json::Value {
            serde_json::from_slice(&event_body(t, 7, 42)).unwrap()
        };
        assert_eq!(body("Subscriber/Created")["variables"]["i_account"], 42);
        assert_eq!(body("Customer/Updated")["variables"]["i_customer"], 42);
        assert_eq!(body("Invoice/Updated")["variables"]["i_invoice"], 42);
        assert_eq!(body("DID/Updated")["variables"]["number"], "42");
        for t in ["Subscriber/Created", "Customer/Updated", "DID/Deleted"] {
            let e = crate::event::Event::parse(&event_body(t, 7, 42)).unwrap();
            assert_eq!(e.i_event, 7);
        }
        let spread = BodySource::Template {
            event_type: "Subscriber/Updated".into(),
            account: 100,
            accounts: 3,
            start_id: 10,
        };
        let ids: Vec<(i64, Option<i64>)> = (0..4)
            .map(|n| {
                let e = crate::event::Event::parse(&spread.body(n)).unwrap();
                (e.i_event, e.i_account())
            })
            .collect();
        assert_eq!(
            ids,
            [
                (10, Some(100)),
                (11, Some(101)),
                (12, Some(102)),
                (13, Some(100))
            ]
        );
    }
}
