//! The event filter (`ESPFD_EVENT_TYPES`): which event types this espfd provisions.
//!
//! A list of patterns, comma-separated; `*` matches any run of characters, `/` included
//! (`Subscriber/*`, `SIM/*`, `Account/Status/*`), and there is no other wildcard. Matching is
//! case-sensitive, as ESPF's event types are. The ingress asks [`EventTypes::matches`] of
//! every event; one that matches no pattern is answered 200 and stored as `skipped` there,
//! and never reaches a worker. This module only decides; it does not know the store.
//!
//! Matching takes time linear in the event type per pattern (a greedy glob: the pieces
//! between stars are found leftmost, in order), so a hostile pattern such as `*a*a*a*a*b`
//! cannot make the ingress backtrack.

use std::fmt;

/// The parsed `ESPFD_EVENT_TYPES`: at least one pattern, each non-empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventTypes {
    patterns: Vec<String>,
}

/// Characters other glob dialects read as wildcards. Refused rather than taken literally:
/// no ESPF event type contains them, so a pattern with one would silently match nothing.
const NOT_WILDCARDS: [char; 5] = ['?', '[', ']', '{', '}'];

impl EventTypes {
    /// Every event type (the default, `*`).
    pub fn all() -> EventTypes {
        EventTypes {
            patterns: vec!["*".into()],
        }
    }

    /// Parses the variable's value; the error is the reason, for a config error naming
    /// `ESPFD_EVENT_TYPES`. Spaces around the commas are ignored.
    pub fn parse(value: &str) -> Result<EventTypes, String> {
        let mut patterns: Vec<String> = Vec::new();
        for (n, raw) in value.split(',').enumerate() {
            let p = raw.trim_matches(' ');
            let which = format!("pattern {} ('{}')", n + 1, crate::redact::printable(p));
            if p.is_empty() {
                return Err(format!(
                    "pattern {} is empty (two commas in a row, or one at an end) in '{}'",
                    n + 1,
                    crate::redact::printable(value)
                ));
            }
            if let Some(c) = p.chars().find(|c| c.is_control()) {
                return Err(format!(
                    "{which} contains the control character U+{:04X}; no event type can",
                    c as u32
                ));
            }
            if let Some(c) = p.chars().find(|c| NOT_WILDCARDS.contains(c)) {
                return Err(format!(
                    "{which} contains '{c}', which is not a wildcard here and is in no ESPF \
                     event type; the only wildcard is * (e.g. Subscriber/*)"
                ));
            }
            if p.trim().is_empty() {
                // The ingress refuses an event type that is only white space.
                return Err(format!("{which} is only white space and can never match"));
            }
            if !patterns.iter().any(|q| q == p) {
                patterns.push(p.to_string());
            }
        }
        Ok(EventTypes { patterns })
    }

    /// Whether `event_type` matches one of the patterns.
    pub fn matches(&self, event_type: &str) -> bool {
        self.patterns.iter().any(|p| glob(p, event_type))
    }

    /// Whether every event type matches (some pattern is all stars).
    pub fn takes_all(&self) -> bool {
        self.patterns.iter().any(|p| p.chars().all(|c| c == '*'))
    }
}

/// The patterns as an operator would write them: `Subscriber/*, SIM/*`.
impl fmt::Display for EventTypes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.patterns.join(", "))
    }
}

/// Whether `text` matches `pattern`, where `*` matches any run of characters.
///
/// The piece before the first star must begin the text and the piece after the last star
/// must end it; the pieces between are each found leftmost, in order, in what lies between.
/// Taking the leftmost place never loses a match (it leaves the most room for the rest), so
/// there is no backtracking.
fn glob(pattern: &str, text: &str) -> bool {
    let Some((head, rest)) = pattern.split_once('*') else {
        return pattern == text;
    };
    let (middle, tail) = rest.rsplit_once('*').unwrap_or(("", rest));
    if text.len() < head.len() + tail.len() || !text.starts_with(head) || !text.ends_with(tail) {
        return false;
    }
    // Both ends are character boundaries: `text` starts with `head` and ends with `tail`.
    let mut inner = &text[head.len()..text.len() - tail.len()];
    for piece in middle.split('*').filter(|p| !p.is_empty()) {
        match inner.find(piece) {
            Some(at) => inner = &inner[at + piece.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::{glob, EventTypes};

    #[test]
    fn star_matches_any_run_slashes_included() {
        let t = EventTypes::parse("Subscriber/*, SIM/*,Account/Status/*").unwrap();
        for yes in [
            "Subscriber/Created",
            "Subscriber/",
            "Subscriber/Product/Changed",
            "SIM/Updated",
            "Account/Status/Blocked",
        ] {
            assert!(t.matches(yes), "{yes}");
        }
        for no in [
            "Customer/Created",
            "Subscriber",
            "subscriber/Created",
            "Account/Updated",
            "Account/Status",
            "XSIM/Updated",
            " SIM/Updated",
        ] {
            assert!(!t.matches(no), "{no}");
        }
        assert_eq!(t.to_string(), "Subscriber/*, SIM/*, Account/Status/*");
        assert!(!t.takes_all());
    }

    #[test]
    fn stars_anywhere() {
        for (p, text, want) in [
            ("*", "", true),
            ("*", "Anything/At/All", true),
            ("**", "x", true),
            ("*/Created", "Subscriber/Created", true),
            ("*/Created", "Subscriber/Created/Again", false),
            ("*Status*", "Account/Status/Blocked", true),
            ("A*B*C", "AxxBxxC", true),
            ("A*B*C", "ACB", false),
            ("a*a", "a", false),
            ("a*a", "aa", true),
            ("ab*ba", "aba", false),
            ("ab*ba", "abba", true),
            ("*ß*", "Straße/Updated", true),
            ("Subscriber/Created", "Subscriber/Created", true),
            ("Subscriber/Created", "Subscriber/Created2", false),
            ("a*b*c*d", "abdc", false),
        ] {
            assert_eq!(glob(p, text), want, "{p} ~ {text}");
        }
    }

    /// A backtracking matcher needs about C(n, k) steps for k stars against n characters
    /// that almost match; this one takes one pass per piece.
    #[test]
    fn a_hostile_pattern_is_answered_at_once() {
        let pattern = format!("{}b", "*a".repeat(50));
        let text = "a".repeat(100_000);
        let t = EventTypes::parse(&pattern).unwrap();
        assert!(!t.matches(&text));
        assert!(t.matches(&format!("{text}b")));
        // Also the case where every piece is found but the last one fails.
        assert!(!glob(&format!("{}*c", "*a".repeat(50)), &text));
    }

    #[test]
    fn every_pattern_is_checked() {
        let reason = |v: &str| EventTypes::parse(v).unwrap_err();
        assert!(reason("Subscriber/*,,SIM/*").contains("pattern 2 is empty"));
        assert!(reason("Subscriber/*,").contains("pattern 2 is empty"));
        assert!(reason(" , SIM/*").contains("pattern 1 is empty"));
        assert!(reason("SIM/*,Sub\tscriber/*").contains("control character U+0009"));
        assert!(reason("Subscriber/?reated").contains("'?'"));
        assert!(reason("Subscriber/[CU]*").contains("'['"));
        assert!(reason("SIM/*, \u{a0} ").contains("can never match"));
        // Repeats are dropped; the order stays as written.
        let t = EventTypes::parse("SIM/*, Subscriber/*, SIM/*").unwrap();
        assert_eq!(t.to_string(), "SIM/*, Subscriber/*");
        assert!(EventTypes::parse("*").unwrap().takes_all());
        assert_eq!(EventTypes::parse("*").unwrap(), EventTypes::all());
    }
}
