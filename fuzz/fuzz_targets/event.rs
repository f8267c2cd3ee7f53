//! Event parsing (`espfd::event::Event::parse`) on arbitrary bytes.
//!
//! Besides "never panics": a refusal is a one-line reason (it becomes a 400 body), and an
//! accepted event has a non-negative `i_event`, an ordering key, and parses the same again
//! from its own re-serialised form.

#![no_main]

use espfd::event::Event;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match Event::parse(data) {
        Ok(ev) => {
            assert!(ev.i_event >= 0);
            assert!(!ev.event_type.trim().is_empty());
            assert!(!ev.ordering_key().is_empty());
            let again = serde_json::json!({"event_type": ev.event_type, "variables": ev.variables});
            let ev2 =
                Event::parse(again.to_string().as_bytes()).expect("re-serialised event parses");
            assert_eq!(ev2.i_event, ev.i_event);
            assert_eq!(ev2.ordering_key(), ev.ordering_key());
        }
        Err(reason) => {
            assert!(!reason.is_empty());
            assert!(!reason.contains('\n'), "{reason}");
        }
    }
});
