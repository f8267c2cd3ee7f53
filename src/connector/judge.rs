//! What an HTTP status means: lists of statuses (`200-299,404`), and the verdict on a reply.
//!
//! The URL connector judges with the defaults; a template step with its `# @ok` and
//! `# @retry` lists; the ESPF status client with the defaults (plus its own 401 rule).

use std::fmt;

/// Statuses that count as success unless a step says otherwise.
pub const DEFAULT_OK: &str = "200-299";
/// Statuses that are transient unless a step says otherwise.
pub const DEFAULT_RETRY: &str = "408,425,429,500-599";

/// A set of HTTP statuses written as `200-299,404`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusList {
    ranges: Vec<(u16, u16)>,
    text: String,
}

impl StatusList {
    /// Parses `200-299, 404`: statuses or ranges between 100 and 599, comma-separated.
    pub fn parse(text: &str) -> Result<StatusList, String> {
        let mut ranges = Vec::new();
        for item in text.split(',').map(str::trim) {
            if item.is_empty() {
                continue;
            }
            let (lo, hi) = match item.split_once('-') {
                Some((lo, hi)) => (status(lo)?, status(hi)?),
                None => (status(item)?, status(item)?),
            };
            if lo > hi {
                return Err(format!("'{item}' is an empty range"));
            }
            ranges.push((lo, hi));
        }
        if ranges.is_empty() {
            return Err(format!("'{text}' names no status"));
        }
        Ok(StatusList {
            ranges,
            text: text.trim().to_string(),
        })
    }

    /// Whether `code` is in the set.
    pub fn contains(&self, code: u16) -> bool {
        self.ranges.iter().any(|&(lo, hi)| lo <= code && code <= hi)
    }
}

impl fmt::Display for StatusList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

fn status(text: &str) -> Result<u16, String> {
    match text.trim().parse::<u16>() {
        Ok(code) if (100..=599).contains(&code) => Ok(code),
        _ => Err(format!("'{}' is not an HTTP status (100-599)", text.trim())),
    }
}

/// What a reply's status makes of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Success.
    Ok,
    /// Worth trying again later.
    Transient,
    /// Trying again will not help.
    Permanent,
}

/// The pair of lists a reply is judged by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judge {
    /// Success (`# @ok`).
    pub ok: StatusList,
    /// Transient when not ok (`# @retry`); anything else is permanent.
    pub retry: StatusList,
}

impl Default for Judge {
    fn default() -> Judge {
        Judge {
            ok: StatusList::parse(DEFAULT_OK).expect("default list"),
            retry: StatusList::parse(DEFAULT_RETRY).expect("default list"),
        }
    }
}

impl Judge {
    /// The default lists ([`DEFAULT_OK`], [`DEFAULT_RETRY`]), parsed once.
    pub fn defaults() -> &'static Judge {
        static DEFAULTS: std::sync::OnceLock<Judge> = std::sync::OnceLock::new();
        DEFAULTS.get_or_init(Judge::default)
    }

    /// The verdict on status `code`.
    pub fn verdict(&self, code: u16) -> Verdict {
        if self.ok.contains(code) {
            Verdict::Ok
        } else if self.retry.contains(code) {
            Verdict::Transient
        } else {
            Verdict::Permanent
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_read_statuses_and_ranges() {
        let l = StatusList::parse("200-299, 404").unwrap();
        assert!(l.contains(200) && l.contains(299) && l.contains(404));
        assert!(!l.contains(300) && !l.contains(403));
        assert!(StatusList::parse("").is_err());
        assert!(StatusList::parse("20x").is_err());
        assert!(StatusList::parse("299-200").is_err());
        assert!(StatusList::parse("99").is_err());
    }

    #[test]
    fn default_verdicts() {
        let j = Judge::default();
        assert_eq!(j.verdict(204), Verdict::Ok);
        assert_eq!(j.verdict(429), Verdict::Transient);
        assert_eq!(j.verdict(503), Verdict::Transient);
        assert_eq!(j.verdict(404), Verdict::Permanent);
        assert_eq!(j.verdict(301), Verdict::Permanent);
    }
}
