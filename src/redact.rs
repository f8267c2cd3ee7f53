//! Hiding subscriber data — names, e-mail addresses, phone numbers, IMSI — from log lines and
//! from `espfd events show` (`ESPFD_REDACT`).
//!
//! The configuration is a list of field names, matched without regard to case. A field's
//! value is replaced by [`MASK`]:
//! - in JSON ([`redact_json`]): at any depth, in objects and in arrays of objects;
//! - in text ([`redact_text`]), e.g. a log line quoting a target's reply: after `"name":`,
//!   `name=` or `name:` (quoted or bare values, JSON escaped once more included) and
//!   between `<name>` and `</name>`.
//!
//! The logger applies [`redact_text`] to every line (see `logging.rs`), whoever wrote it.
//! What it cannot see it cannot hide: a name that appears as free prose ("John Smith could
//! not be provisioned") is not recognised. Secrets are a different matter: they are never
//! passed to a log macro at all.
//!
//! [`printable`] escapes control characters, so that data from an event or a target's reply
//! cannot forge a log line (a newline) or drive the terminal (ESC, BEL) of whoever reads the
//! log or `espfd events` output.
//!
//! Not here: which fields PortaBilling returns.

use std::borrow::Cow;

use serde_json::Value;

/// What a hidden value is replaced with.
pub const MASK: &str = "***";

/// The default of `ESPFD_REDACT`: PortaBilling's personal fields of accounts and customers
/// (names, company, e-mail, phone and fax numbers, contacts, postal address) and the mobile
/// identifiers IMSI, MSISDN and ICCID.
pub const DEFAULT_FIELDS: &str = "firstname,midinit,lastname,companyname,email,phone1,phone2,\
faxnum,cont1,cont2,baddr1,baddr2,baddr3,baddr4,baddr5,city,zip,imsi,msisdn,iccid";

/// `text` with every control character (newline, carriage return, tab, ESC, BEL, NUL, DEL,
/// C1) written as an escape: `\n`, `\r`, `\t`, else `\u{1b}`; text without any is returned
/// as it is.
pub fn printable(text: &str) -> Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Parses an `ESPFD_REDACT` value: comma-separated field names, or `none`. Names are
/// lower-cased; empty items are ignored.
pub fn parse_fields(value: &str) -> Result<Vec<String>, String> {
    let value = value.trim();
    if value.eq_ignore_ascii_case("none") {
        return Ok(Vec::new());
    }
    let mut fields: Vec<String> = Vec::new();
    for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if !item
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(format!(
                "'{item}' is not a field name (letters, digits, _ and - only); use 'none' to redact nothing"
            ));
        }
        let item = item.to_ascii_lowercase();
        if !fields.contains(&item) {
            fields.push(item);
        }
    }
    if fields.is_empty() {
        return Err("is empty; give field names or 'none'".into());
    }
    Ok(fields)
}

fn listed(name: &str, fields: &[String]) -> bool {
    fields.iter().any(|f| f.eq_ignore_ascii_case(name))
}

/// A copy of `value` with every listed field's value replaced by [`MASK`], at any depth.
/// Null and empty-string values stay as they are: they reveal nothing.
pub fn redact_json(value: &Value, fields: &[String]) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let hidden =
                        listed(k, fields) && !matches!(v, Value::Null) && v.as_str() != Some("");
                    let v = if hidden {
                        Value::from(MASK)
                    } else {
                        redact_json(v, fields)
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(|v| redact_json(v, fields)).collect()),
        other => other.clone(),
    }
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

/// `text` with the values of listed fields replaced by [`MASK`]; borrowed when nothing
/// matched.
pub fn redact_text<'a>(text: &'a str, fields: &[String]) -> Cow<'a, str> {
    if fields.is_empty() {
        return Cow::Borrowed(text);
    }
    // ASCII lower-casing keeps every byte offset, so positions found in `lower` hold in `text`.
    let lower = text.to_ascii_lowercase();
    let b = lower.as_bytes();
    let mut spans: Vec<(usize, usize)> = Vec::new();
    for field in fields {
        let name = field.to_ascii_lowercase();
        if name.is_empty() {
            continue;
        }
        let mut from = 0;
        while let Some(pos) = lower[from..].find(&name) {
            let start = from + pos;
            let end = start + name.len();
            from = end;
            let before_ok = start == 0 || !is_word(b[start - 1]);
            let after_ok = end == b.len() || !is_word(b[end]);
            if before_ok && after_ok {
                if let Some(span) = value_span(b, start, end, &name) {
                    spans.push(span);
                }
            }
        }
    }
    if spans.is_empty() {
        return Cow::Borrowed(text);
    }
    spans.sort_unstable();
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for (s, e) in spans {
        if s < at {
            continue; // overlaps a span already hidden
        }
        out.push_str(&text[at..s]);
        out.push_str(MASK);
        at = e;
    }
    out.push_str(&text[at..]);
    Cow::Owned(out)
}

/// The byte range of the value that follows the field name at `start..end`, if the name is
/// used as a key there.
fn value_span(b: &[u8], start: usize, end: usize, name: &str) -> Option<(usize, usize)> {
    // <name>value</name>
    if start > 0 && b[start - 1] == b'<' && b.get(end) == Some(&b'>') {
        let from = end + 1;
        let close = format!("</{name}>");
        let len = find(b, from, close.as_bytes())?;
        return (len > 0).then_some((from, from + len));
    }
    let mut i = end;
    // The key's closing quote: ", \" or '.
    if b[i..].starts_with(b"\\\"") {
        i += 2;
    } else if matches!(b.get(i), Some(b'"') | Some(b'\'')) {
        i += 1;
    }
    i = skip_spaces(b, i);
    if !matches!(b.get(i), Some(b':') | Some(b'=')) {
        return None;
    }
    i = skip_spaces(b, i + 1);
    let rest = &b[i..];
    let (from, len) = if rest.starts_with(b"\\\"") {
        (i + 2, find(b, i + 2, b"\\\"")?)
    } else if rest.first() == Some(&b'"') {
        (i + 1, closing_quote(b, i + 1)?)
    } else if rest.first() == Some(&b'\'') {
        (i + 1, find(b, i + 1, b"'")?)
    } else if rest.starts_with(b"null") {
        return None;
    } else {
        let len = rest
            .iter()
            .position(|&c| c.is_ascii_whitespace() || b",;&}]\"'<>\\".contains(&c) || c == b')')
            .unwrap_or(rest.len());
        (i, len)
    };
    (len > 0).then_some((from, from + len))
}

fn skip_spaces(b: &[u8], mut i: usize) -> usize {
    while b.get(i).is_some_and(|c| *c == b' ' || *c == b'\t') {
        i += 1;
    }
    i
}

/// Offset (from `from`) of the first `needle`.
fn find(b: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    b.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
}

/// Length of a JSON string's contents starting at `from`, up to its unescaped closing quote.
fn closing_quote(b: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'"' => return Some(i - from),
            _ => i += 1,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    #[test]
    fn control_characters_are_escaped() {
        assert!(matches!(super::printable("plain text"), Cow::Borrowed(_)));
        assert_eq!(
            super::printable("a\nb\r\tc\u{1b}[2J\u{7}\u{0}\u{7f}\u{9b}é"),
            "a\\nb\\r\\tc\\u{1b}[2J\\u{7}\\u{0}\\u{7f}\\u{9b}é"
        );
    }

    use super::*;
    use serde_json::json;

    fn fields(s: &str) -> Vec<String> {
        parse_fields(s).unwrap()
    }

    #[test]
    fn parses_the_setting() {
        assert_eq!(
            fields("FirstName, email,,email"),
            vec!["firstname", "email"]
        );
        assert!(fields("none").is_empty());
        assert!(fields(DEFAULT_FIELDS).contains(&"imsi".to_string()));
        assert!(parse_fields("first name").is_err());
        assert!(parse_fields(" , ").is_err());
    }

    #[test]
    fn json_fields_are_hidden_at_any_depth() {
        let doc = json!({
            "i_event": 7615,
            "entity": {"kind": "account", "i_account": 2984, "firstname": "Ana", "LastName": "Lopez",
                       "email": "a@example.com", "phone1": "", "companyname": null,
                       "sims": [{"imsi": 250011234567890u64, "state": "active"}]},
            "variables": {"email": {"nested": "x"}}
        });
        let out = redact_json(&doc, &fields(DEFAULT_FIELDS));
        assert_eq!(out["entity"]["firstname"], MASK);
        assert_eq!(out["entity"]["LastName"], MASK, "names match without case");
        assert_eq!(out["entity"]["email"], MASK);
        assert_eq!(out["entity"]["phone1"], "", "empty values reveal nothing");
        assert_eq!(out["entity"]["companyname"], Value::Null);
        assert_eq!(out["entity"]["sims"][0]["imsi"], MASK);
        assert_eq!(out["entity"]["sims"][0]["state"], "active");
        assert_eq!(out["variables"]["email"], MASK);
        assert_eq!(out["i_event"], 7615);
        assert_eq!(redact_json(&doc, &[]), doc);
    }

    #[test]
    fn text_forms_are_hidden() {
        let f = fields("firstname,email,phone1,imsi");
        let cases = [
            (
                r#"target answered HTTP 400: {"firstname":"Ana","id":"x","email" : "a@b.c"}"#,
                r#"target answered HTTP 400: {"firstname":"***","id":"x","email" : "***"}"#,
            ),
            (
                r#"{"firstname":"A \"quoted\" name","phone1":12065550100}"#,
                r#"{"firstname":"***","phone1":***}"#,
            ),
            (
                r#"msg="{\"firstname\":\"Ana\",\"x\":1}""#,
                r#"msg="{\"firstname\":\"***\",\"x\":1}""#,
            ),
            ("imsi=250011234567890 msisdn=1", "imsi=*** msisdn=1"),
            ("EMAIL: a@b.c; ok", "EMAIL: ***; ok"),
            (
                "<Email>a@b.c</Email><imsi></imsi>",
                "<Email>***</Email><imsi></imsi>",
            ),
            ("firstname='Ana'", "firstname='***'"),
        ];
        for (input, want) in cases {
            assert_eq!(redact_text(input, &f), want, "{input}");
        }
    }

    #[test]
    fn text_without_keys_is_untouched() {
        let f = fields(DEFAULT_FIELDS);
        for text in [
            "i_event=7615 Subscriber/Created OK: provisioned 7615",
            "check the email field",
            r#"{"myemail":"x","email_verified":true,"companyname":null}"#,
            "email",
            "",
        ] {
            assert!(matches!(redact_text(text, &f), Cow::Borrowed(_)), "{text}");
        }
    }
}
