//! A fake of Ericsson's CAI3G 1.2 SOAP provisioning interface (HLR/HSS subscriber data), as
//! the project's notes on public CAI3G client code describe it:
//!
//! - `POST /CAI3G1.2/services/CAI3G1.2`, SOAP 1.1, the operation in `SOAPAction`
//!   (`CAI3G#Login`, `CAI3G#Create`, `CAI3G#Set`, `CAI3G#Get`, `CAI3G#Delete`,
//!   `CAI3G#Logout`; quoted or not).
//! - `Login` with `<userId>` and `<pwd>` → a reply whose body holds `<sessionId>` and
//!   `<baseSequenceId>`; the other operations carry `<SessionId>` in the SOAP header. Element
//!   names are matched without their namespace prefix, which varies between deployments.
//! - `Create` / `Set` / `Get` / `Delete` name the subscriber by `<MOId><msisdn>...</msisdn>`
//!   and carry `<MOAttributes>`; `Get` answers them back. `Create` of an existing subscriber
//!   and `Set`, `Get` or `Delete` of an unknown one fail.
//! - Errors are HTTP 500 with a SOAP Fault whose `<detail>` holds a `Cai3gFault`
//!   (`<faultcode>`, `<reasonText>`). A missing, unknown or ended session is faultcode 1001
//!   (one of the codes clients treat as "log in again"). The codes for a refused login (3001),
//!   an existing (4001) or unknown (4006) subscriber are this fake's choice: the notes do
//!   not give them.
//!
//! [`Sim::end_cai3g_sessions`](super::Sim::end_cai3g_sessions) ends every session, to
//! rehearse a connector logging in again.

use std::collections::{BTreeMap, HashSet};

use super::{method_not_allowed, random_hex32, Inner};
use crate::http::{Request, Response};
use crate::util::constant_time_eq;

/// The user the fake accepts at `Login`.
pub const USER: &str = "espfd-cai3g";
/// Its password.
pub const PASSWORD: &str = "cai3g-password";

/// The fake's sessions and subscribers.
#[derive(Debug, Default)]
pub(super) struct Cai3g {
    sessions: HashSet<String>,
    pub(super) logins: usize,
    /// The `MOAttributes` XML of each subscriber, by MSISDN.
    subscribers: BTreeMap<String, String>,
}

impl Cai3g {
    /// Every subscriber: (MSISDN, its `MOAttributes` as sent).
    pub(super) fn subscribers(&self) -> Vec<(String, String)> {
        self.subscribers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    pub(super) fn end_sessions(&mut self) {
        self.sessions.clear();
    }
}

/// The text inside the first element whose local name (the part after any `prefix:`) is
/// `local`; `None` without one.
fn element<'a>(xml: &'a str, local: &str) -> Option<&'a str> {
    let mut from = 0;
    while let Some(at) = xml[from..].find('<') {
        let start = from + at + 1;
        let tag_end = start + xml[start..].find('>')?;
        let tag = &xml[start..tag_end];
        from = tag_end;
        if tag.starts_with('/') || tag.starts_with('?') || tag.starts_with('!') {
            continue;
        }
        let name = tag.split(|c: char| c.is_whitespace() || c == '/').next()?;
        if name.rsplit(':').next() != Some(local) {
            continue;
        }
        if tag.ends_with('/') {
            return Some("");
        }
        let body_start = tag_end + 1;
        let mut search = body_start;
        while let Some(close) = xml[search..].find("</") {
            let close_start = search + close + 2;
            let close_end = close_start + xml[close_start..].find('>')?;
            let close_name = xml[close_start..close_end].trim();
            if close_name.rsplit(':').next() == Some(local) {
                return Some(&xml[body_start..search + close]);
            }
            search = close_end;
        }
        return None;
    }
    None
}

/// Escapes text for an XML element.
fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn envelope(body: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<S:Envelope xmlns:S=\"http://schemas.xmlsoap.org/soap/envelope/\" xmlns:cai3=\"http://schemas.ericsson.com/cai3g1.2/\"><S:Body>{body}</S:Body></S:Envelope>"
    )
}

fn reply(body: String) -> Response {
    let mut r = Response::text(200, envelope(&body));
    r.headers = vec![("Content-Type".into(), "text/xml; charset=utf-8".into())];
    r
}

fn fault(code: u32, reason: &str) -> Response {
    let body = format!(
        "<S:Fault><faultcode>S:Server</faultcode><faultstring>{}</faultstring><detail><cai3:Cai3gFault><cai3:faultcode>{code}</cai3:faultcode><cai3:reasonText>{}</cai3:reasonText></cai3:Cai3gFault></detail></S:Fault>",
        escape(reason),
        escape(reason)
    );
    let mut r = Response::text(500, envelope(&body));
    r.headers = vec![("Content-Type".into(), "text/xml; charset=utf-8".into())];
    r
}

/// Answers `/CAI3G1.2/services/CAI3G1.2`.
pub(super) fn handle(inner: &Inner, req: &Request) -> Response {
    if req.method != "POST" {
        return method_not_allowed("POST");
    }
    let action = req
        .header("soapaction")
        .unwrap_or("")
        .trim()
        .trim_matches('"')
        .to_string();
    let Some(op) = action.strip_prefix("CAI3G#") else {
        return fault(3000, &format!("unknown SOAPAction {action:?}"));
    };
    let xml = req.body_text();
    let Some(body) = element(&xml, "Body") else {
        return fault(3000, "not a SOAP envelope");
    };
    let mut st = inner.state();
    let hlr = &mut st.cai3g;
    if op == "Login" {
        let user = element(body, "userId").unwrap_or("");
        let pwd = element(body, "pwd").unwrap_or("");
        let good = constant_time_eq(user.trim().as_bytes(), USER.as_bytes())
            & constant_time_eq(pwd.as_bytes(), PASSWORD.as_bytes());
        if !good {
            return fault(3001, "Login failed: wrong userId or pwd");
        }
        let session = random_hex32();
        hlr.sessions.insert(session.clone());
        hlr.logins += 1;
        return reply(format!(
            "<cai3:LoginResponse><cai3:sessionId>{session}</cai3:sessionId><cai3:baseSequenceId>1</cai3:baseSequenceId></cai3:LoginResponse>"
        ));
    }
    let session = element(&xml, "Header")
        .and_then(|h| element(h, "SessionId"))
        .map(str::trim)
        .unwrap_or("");
    if !hlr.sessions.contains(session) {
        return fault(1001, "Session id is not valid");
    }
    if op == "Logout" {
        hlr.sessions.remove(session);
        return reply("<cai3:LogoutResponse/>".into());
    }
    let Some(msisdn) = element(body, "MOId")
        .and_then(|id| element(id, "msisdn"))
        .map(str::trim)
        .filter(|m| !m.is_empty() && m.bytes().all(|b| b.is_ascii_digit()))
    else {
        return fault(3002, "MOId needs an msisdn of digits");
    };
    let attributes = element(body, "MOAttributes").unwrap_or("").to_string();
    let msisdn = msisdn.to_string();
    let exists = hlr.subscribers.contains_key(&msisdn);
    let done = |name: &str| reply(format!("<cai3:{name}Response/>"));
    match op {
        "Create" if exists => fault(4001, &format!("subscriber {msisdn} already exists")),
        "Create" => {
            hlr.subscribers.insert(msisdn, attributes);
            done("Create")
        }
        "Set" | "Get" | "Delete" if !exists => {
            fault(4006, &format!("subscriber {msisdn} not found"))
        }
        "Set" => {
            hlr.subscribers.insert(msisdn, attributes);
            done("Set")
        }
        "Get" => reply(format!(
            "<cai3:GetResponse><cai3:MOAttributes>{}</cai3:MOAttributes></cai3:GetResponse>",
            hlr.subscribers[&msisdn]
        )),
        "Delete" => {
            hlr.subscribers.remove(&msisdn);
            done("Delete")
        }
        other => fault(3000, &format!("unknown operation {other}")),
    }
}

/// What a test or `espfd simulate` reads and changes of this fake.
impl super::Sim {
    /// The fake CAI3G HLR's subscribers: (MSISDN, the `MOAttributes` XML as sent).
    pub fn cai3g_subscribers(&self) -> Vec<(String, String)> {
        self.inner.state().cai3g.subscribers()
    }

    /// Successful CAI3G `Login`s so far.
    pub fn cai3g_logins(&self) -> usize {
        self.inner.state().cai3g.logins
    }

    /// Ends every CAI3G session: the next operation gets fault 1001.
    pub fn end_cai3g_sessions(&self) {
        self.inner.state().cai3g.end_sessions();
    }
}

#[cfg(test)]
mod tests {
    use super::element;

    #[test]
    fn elements_are_found_whatever_their_prefix() {
        let xml = r#"<soapenv:Envelope xmlns:soapenv="x"><soapenv:Header><cai3:SessionId>ab12</cai3:SessionId></soapenv:Header><soapenv:Body><Get><MOId><msisdn>4670</msisdn></MOId><empty/></Get></soapenv:Body></soapenv:Envelope>"#;
        assert_eq!(element(xml, "SessionId"), Some("ab12"));
        let body = element(xml, "Body").unwrap();
        assert_eq!(element(body, "msisdn"), Some("4670"));
        assert_eq!(element(body, "empty"), Some(""));
        assert_eq!(element(body, "missing"), None);
        assert_eq!(element("<a><b>unclosed", "b"), None);
    }
}
