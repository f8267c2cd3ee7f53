//! Rendering: the MiniJinja environment of a template file, and one step rendered into a
//! request.
//!
//! Every `{{ }}` output is written between two private-use characters ([`OPEN`], [`CLOSE`])
//! by the environment's formatter. After rendering, the text is split into head (request line
//! and headers, up to the first empty line) and body; a CR or LF between the markers in the
//! head is a value trying to start a header of its own, and the step fails. The markers are
//! then removed. Characters equal to the markers are removed from the values themselves, so
//! subscriber data cannot forge them.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Arc;

use minijinja::syntax::SyntaxConfig;
use minijinja::{
    AutoEscape, Environment, Error as JinjaError, ErrorKind, UndefinedBehavior, Value,
};

use super::parse::{self, Step};
use crate::connector::send::OutRequest;
use crate::util::{format_rfc3339, now_ms, Secret};

/// Instructions one render may run before it is stopped (an endless loop, a huge `range`).
pub const FUEL: u64 = 100_000;

/// Starts a `{{ }}` output in rendered text.
const OPEN: char = '\u{E000}';
/// Ends it.
const CLOSE: char = '\u{E001}';

/// The name a step's source is registered under in the environment.
pub fn step_template(step: &Step) -> String {
    format!("#step{}", step.number)
}

/// The environment for one template file: its steps and body files as templates, the
/// functions and filters of the contract, strict undefined, fuel, escaping by extension.
pub fn environment(
    steps: &[Step],
    bodies: &[(String, String)],
    settings: Arc<BTreeMap<String, String>>,
    secrets: Arc<BTreeMap<String, Secret>>,
    debug: bool,
) -> Result<Environment<'static>, JinjaError> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::SemiStrict);
    env.set_fuel(Some(FUEL));
    env.set_debug(debug);
    env.set_syntax(
        SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .keep_trailing_newline(true)
            .build()?,
    );
    env.set_auto_escape_callback(escape_for);
    env.set_formatter(|out, state, value| {
        let text = match state.auto_escape() {
            _ if value.is_safe() => value.to_string(),
            AutoEscape::Json => serde_json::to_string(value).map_err(|e| {
                JinjaError::new(ErrorKind::BadSerialization, format!("not JSON: {e}"))
            })?,
            AutoEscape::Custom(name) if name == "xml" => xml_escape(&value.to_string()),
            _ => value.to_string(),
        };
        out.write_char(OPEN)?;
        out.write_str(&text.replace([OPEN, CLOSE], ""))?;
        out.write_char(CLOSE)?;
        Ok(())
    });
    env.add_function("setting", move |name: &str| -> Result<String, JinjaError> {
        settings.get(name).cloned().ok_or_else(|| {
            JinjaError::new(
                ErrorKind::InvalidOperation,
                format!("setting(\"{name}\"): ESPFD_SETTING_{name} is not set"),
            )
        })
    });
    env.add_function("secret", move |name: &str| -> Result<String, JinjaError> {
        secrets.get(name).map(|s| s.0.clone()).ok_or_else(|| {
            JinjaError::new(
                ErrorKind::InvalidOperation,
                format!("secret(\"{name}\"): neither ESPFD_SECRET_{name} nor ESPFD_SECRET_{name}_FILE is set"),
            )
        })
    });
    env.add_function("now", || format_rfc3339(now_ms()));
    env.add_function("uuid", uuid_v4);
    env.add_filter("xml_text", |xml: &str, name: &str| -> Value {
        xml_text(xml, name)
            .map(Value::from)
            .unwrap_or(Value::from(()))
    });
    for step in steps {
        env.add_template_owned(step_template(step), step.text.clone())?;
    }
    for (name, text) in bodies {
        env.add_template_owned(name.clone(), text.clone())?;
    }
    Ok(env)
}

fn escape_for(name: &str) -> AutoEscape {
    if name.ends_with(".json") {
        AutoEscape::Json
    } else if name.ends_with(".xml") {
        AutoEscape::Custom("xml".into())
    } else {
        AutoEscape::None
    }
}

/// The `Content-Type` espfd sets for a `< file` body, by its extension.
pub fn content_type(file: &str) -> Option<&'static str> {
    if file.ends_with(".json") {
        Some("application/json")
    } else if file.ends_with(".xml") {
        Some("text/xml; charset=utf-8")
    } else {
        None
    }
}

/// XML escaping of text and attribute values.
pub fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// The text of the first element of `xml` whose local name is `name` (namespace prefixes
/// ignored), entities decoded; `None` when there is no such element.
pub fn xml_text(xml: &str, name: &str) -> Option<String> {
    let mut rest = xml;
    while let Some(at) = rest.find('<') {
        rest = &rest[at + 1..];
        if rest.starts_with(['/', '?', '!']) {
            continue;
        }
        let end = rest.find(|c: char| c.is_whitespace() || c == '>' || c == '/')?;
        let tag = &rest[..end];
        let local = tag.rsplit(':').next().unwrap_or(tag);
        if local != name {
            continue;
        }
        let close = rest.find('>')?;
        if rest[..close].ends_with('/') {
            return Some(String::new());
        }
        let body = &rest[close + 1..];
        let text = &body[..body.find('<').unwrap_or(body.len())];
        return Some(xml_unescape(text));
    }
    None
}

fn xml_unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let Some(semi) = rest.find(';') else { break };
        let entity = &rest[1..semi];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            e if e.starts_with("#x") || e.starts_with("#X") => u32::from_str_radix(&e[2..], 16)
                .ok()
                .and_then(char::from_u32),
            e if e.starts_with('#') => e[1..].parse().ok().and_then(char::from_u32),
            _ => None,
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &rest[semi + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// A random (version 4) UUID.
fn uuid_v4() -> String {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 16];
    if ring::rand::SystemRandom::new().fill(&mut b).is_err() {
        // The OS random source is not there; fall back to the jitter source, still unique
        // enough for a request id.
        for (i, chunk) in b.chunks_mut(8).enumerate() {
            chunk.copy_from_slice(&(crate::util::jitter_u64() ^ i as u64).to_le_bytes());
        }
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// A step rendered: nothing to send, or a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rendered {
    /// Only blank and comment lines: the step is not sent.
    Nothing,
    /// The request, and the `< file` its body came from.
    Request(OutRequest, Option<String>),
}

/// One physical line of rendered text, markers removed; `broken` when a value written into
/// it held a CR or LF, `valued` when any `{{ }}` value was written into it.
struct Line {
    text: String,
    broken: bool,
    valued: bool,
}

/// Splits rendered text into lines at the line breaks of the template itself.
fn lines(rendered: &str) -> Vec<Line> {
    let mut out = vec![];
    let mut cur = Line {
        text: String::new(),
        broken: false,
        valued: false,
    };
    let mut inside = false;
    for c in rendered.chars() {
        match c {
            OPEN => {
                inside = true;
                cur.valued = true;
            }
            CLOSE => inside = false,
            '\n' if !inside => out.push(std::mem::replace(
                &mut cur,
                Line {
                    text: String::new(),
                    broken: false,
                    valued: false,
                },
            )),
            '\r' | '\n' => {
                cur.broken |= inside;
                cur.text.push(c);
            }
            c => cur.text.push(c),
        }
    }
    if !cur.text.is_empty() || cur.broken {
        out.push(cur);
    }
    out
}

/// Removes the output markers.
pub fn clean(rendered: &str) -> String {
    rendered.replace([OPEN, CLOSE], "")
}

/// Turns a step's rendered text into its request. `label` names the step in errors.
pub fn request(rendered: &str, label: &str) -> Result<Rendered, String> {
    let all = lines(rendered);
    let mut it = all
        .into_iter()
        .skip_while(|l| (l.text.trim().is_empty() && !l.broken) || parse::is_comment(&l.text))
        .peekable();
    let Some(first) = it.next() else {
        return Ok(Rendered::Nothing);
    };
    if first.broken {
        return Err(format!(
            "{label}: a value written into the request line holds a line break (CR or LF); refused"
        ));
    }
    let mut words = first.text.split_whitespace();
    let (method, url) = match (words.next(), words.next(), words.next(), words.next()) {
        (Some(m), Some(u), None, None) => (m, u),
        (Some(m), Some(u), Some(v), None) if v.starts_with("HTTP/") => (m, u),
        _ => {
            return Err(format!(
                "{label}: the request line '{}' is not METHOD URL",
                crate::util::truncate_chars(first.text.trim(), 200)
            ))
        }
    };
    if !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(format!(
            "{label}: '{method}' is not an HTTP method (GET, PUT, PATCH, ...)"
        ));
    }
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(format!(
            "{label}: the URL must start with http:// or https:// (a setting such as setting(\"HSS_URL\") usually gives the base)"
        ));
    }
    let mut headers = Vec::new();
    for line in it.by_ref() {
        if line.text.trim().is_empty() && !line.broken {
            break;
        }
        if parse::is_comment(&line.text) && !line.broken {
            continue;
        }
        let (name, value) = line
            .text
            .split_once(':')
            .unwrap_or((line.text.as_str(), ""));
        let name = name.trim();
        if line.broken {
            return Err(format!(
                "{label}: a value written into header {} holds a line break (CR or LF); refused",
                crate::util::truncate_chars(name, 100)
            ));
        }
        let token = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !token || !line.text.contains(':') {
            return Err(format!(
                "{label}: '{}' is not a header line (Name: value)",
                crate::util::truncate_chars(line.text.trim(), 200)
            ));
        }
        headers.push((name.to_string(), value.trim().to_string()));
    }
    let body: Vec<Line> = it.collect();
    let start = body.iter().position(|l| !l.text.trim().is_empty());
    let end = body.iter().rposition(|l| !l.text.trim().is_empty());
    let (body, file) = match (start, end) {
        (Some(s), Some(e)) => {
            // `< file` is the template's own text, never a value: subscriber data that
            // renders as `< other.json` stays an inline body.
            let file = (s == e && !body[s].valued && !body[s].text.contains('\n'))
                .then(|| parse::body_file(&body[s].text))
                .flatten()
                .map(str::to_string);
            let text: Vec<&str> = body[s..=e].iter().map(|l| l.text.as_str()).collect();
            (text.join("\n"), file)
        }
        _ => (String::new(), None),
    };
    Ok(Rendered::Request(
        OutRequest {
            method: method.to_string(),
            url: url.to_string(),
            headers,
            body: if file.is_some() {
                Vec::new()
            } else {
                body.into_bytes()
            },
        },
        file,
    ))
}

/// An error from MiniJinja as espfd shows it: `file line N: what`, naming the expression
/// for an undefined value. `source` is the template text the error's range points into and
/// `first_line` its first line's number in `file`. No values appear in it.
pub fn describe(err: &JinjaError, file: &str, source: &str, first_line: usize) -> String {
    let line = err.line().map(|l| l + first_line - 1);
    let at = match line {
        Some(l) => format!("{file} line {l}"),
        None => file.to_string(),
    };
    let expr = err
        .range()
        .and_then(|r| source.get(r))
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty() && s.len() <= 200);
    let what = match (err.kind(), &expr) {
        (ErrorKind::UndefinedError, Some(e)) => {
            format!("undefined value: {}", dotted_name(e).unwrap_or(e))
        }
        (ErrorKind::OutOfFuel, _) => {
            format!("the template ran too long (more than {FUEL} steps; an endless loop?)")
        }
        (_, Some(e)) => format!("{}: {}", err.detail().unwrap_or(&err.kind().to_string()), e),
        _ => err.detail().unwrap_or(&err.kind().to_string()).to_string(),
    };
    format!("{at}: {what}")
}

/// The first `a.b.c` name in an expression's text (the span MiniJinja points at may hold an
/// operator or a comparison around it).
fn dotted_name(expr: &str) -> Option<&str> {
    let is_start = |c: char| c.is_ascii_alphabetic() || c == '_';
    let is_part = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '.';
    let mut at = 0;
    while at < expr.len() {
        let rest = &expr[at..];
        let c = rest.chars().next()?;
        let prev_ok =
            at == 0 || !expr[..at].ends_with(|p: char| is_part(p) || p == '"' || p == '\'');
        if is_start(c) && prev_ok {
            let len = rest.find(|c: char| !is_part(c)).unwrap_or(rest.len());
            let word = rest[..len].trim_end_matches('.');
            if word.contains('.') {
                return Some(word);
            }
            at += len.max(1);
        } else {
            at += c.len_utf8();
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn undefined_names_are_found_in_their_span() {
        assert_eq!(
            dotted_name("or account.bill_status == \"C\""),
            Some("account.bill_status")
        );
        assert_eq!(
            dotted_name("steps.lookup.json.id | urlencode"),
            Some("steps.lookup.json.id")
        );
        assert_eq!(dotted_name("x + 1"), None);
    }

    fn wrap(s: &str) -> String {
        format!("{OPEN}{s}{CLOSE}")
    }

    #[test]
    fn head_body_and_comments() {
        let text = format!(
            "# @name x\n\nPOST {}/sub HTTP/1.1\n# a comment\nX-Key: {}\n\n\n{{\"a\": 1}}\n\n",
            wrap("http://h"),
            wrap("k")
        );
        let Rendered::Request(r, file) = request(&text, "step x").unwrap() else {
            panic!("nothing")
        };
        assert_eq!(
            (r.method.as_str(), r.url.as_str()),
            ("POST", "http://h/sub")
        );
        assert_eq!(r.headers, vec![("X-Key".to_string(), "k".to_string())]);
        assert_eq!(r.body, b"{\"a\": 1}");
        assert_eq!(file, None);
    }

    #[test]
    fn a_step_of_comments_is_nothing() {
        assert_eq!(
            request("# @name x\n\n// c\n\n", "s").unwrap(),
            Rendered::Nothing
        );
        assert_eq!(request("", "s").unwrap(), Rendered::Nothing);
    }

    #[test]
    fn line_breaks_from_values_are_refused_in_the_head_only() {
        let evil = wrap("a\r\nX-Admin: yes");
        let e = request(&format!("GET http://h/\nX-Name: {evil}\n"), "step lookup").unwrap_err();
        assert!(
            e.contains("step lookup") && e.contains("header X-Name"),
            "{e}"
        );
        let e = request(&format!("GET http://h/{evil}\n"), "step 2").unwrap_err();
        assert!(e.contains("request line"), "{e}");
        let ok = request(&format!("POST http://h/\n\nname={evil}\n"), "s").unwrap();
        let Rendered::Request(r, _) = ok else {
            panic!()
        };
        assert_eq!(r.body, b"name=a\r\nX-Admin: yes");
        // An empty value does not end the head early by itself being a line break.
        let e = request(&format!("GET http://h/\n{}\nX: 1\n", wrap("\n")), "s").unwrap_err();
        assert!(e.contains("line break"), "{e}");
    }

    #[test]
    fn body_files_and_bad_lines() {
        let Rendered::Request(r, file) = request("PUT http://h/\n\n< sub.json\n", "s").unwrap()
        else {
            panic!()
        };
        assert_eq!((file.as_deref(), r.body.len()), (Some("sub.json"), 0));
        // A value is never a body file, even one that reads like a `< file` line.
        let text = format!("PUT http://h/\n\n{}\n", wrap("< sub.json"));
        let Rendered::Request(r, file) = request(&text, "s").unwrap() else {
            panic!()
        };
        assert_eq!((file, r.body.as_slice()), (None, b"< sub.json".as_slice()));
        assert!(request("get http://h/\n", "s")
            .unwrap_err()
            .contains("HTTP method"));
        assert!(request("GET /relative\n", "s")
            .unwrap_err()
            .contains("http://"));
        assert!(request("GET http://h/ a b\n", "s")
            .unwrap_err()
            .contains("METHOD URL"));
        assert!(request("GET http://h/\nno colon\n", "s")
            .unwrap_err()
            .contains("header line"));
    }

    #[test]
    fn xml_text_finds_local_names() {
        let xml = "<?xml version=\"1.0\"?><S:Envelope><S:Header><cai3g:SessionId>ab&amp;c</cai3g:SessionId></S:Header><x/></S:Envelope>";
        assert_eq!(xml_text(xml, "SessionId").as_deref(), Some("ab&c"));
        assert_eq!(xml_text(xml, "x").as_deref(), Some(""));
        assert_eq!(xml_text(xml, "missing"), None);
        assert_eq!(xml_text("not xml", "a"), None);
        assert_eq!(xml_unescape("&#65;&#x42;&bogus;&"), "AB&bogus;&");
    }

    #[test]
    fn uuids_look_like_uuids() {
        let u = uuid_v4();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert_ne!(u, uuid_v4());
    }
}
