//! Checking the credentials ESPF sends with each event.
//!
//! All comparisons take time independent of where the presented value differs.
//!
//! The signature scheme (PortaOne's "Appendix A"): the header's parameters are parsed here,
//! the HMAC-SHA1 is computed by `signature.rs` (which `espfd send` signs with too). We accept
//! both signing strings it knows, the draft-cavage default `date: <Date>` and the bare `Date`
//! value; the debug log says which signing strings were tried and which one matched.

use std::fmt;
use std::time::Duration;

use super::signature::{self, SigningString};
use crate::util::{base64_decode, constant_time_eq, parse_http_date};

/// How ESPF must authenticate its POSTs (`ESPFD_AUTH` and the `ESPFD_AUTH_*` values).
#[derive(Clone, PartialEq, Eq)]
pub enum InboundAuth {
    /// `Authorization: Basic base64(user:password)`.
    Basic { user: String, password: String },
    /// The whole `Authorization` value, e.g. `Plain passexample`.
    Custom { value: String },
    /// `Authorization: Signature keyId="..",algorithm="hmac-sha1",signature=".."`: HMAC-SHA1
    /// with `key` over the `Date` header, which must be within `max_skew` of now.
    Signature {
        key_id: String,
        key: String,
        max_skew: Duration,
    },
    /// No authentication (must be chosen explicitly).
    None,
}

impl fmt::Debug for InboundAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InboundAuth::Basic { user, .. } => {
                write!(f, "Basic {{ user: {user:?}, password: <redacted> }}")
            }
            InboundAuth::Custom { .. } => write!(f, "Custom {{ value: <redacted> }}"),
            InboundAuth::Signature {
                key_id, max_skew, ..
            } => write!(
                f,
                "Signature {{ key_id: {key_id:?}, key: <redacted>, max_skew: {max_skew:?} }}"
            ),
            InboundAuth::None => write!(f, "None"),
        }
    }
}

/// Why a request was not let in. The text goes to the log, never a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied(pub &'static str);

/// Checks the `Authorization` header against the configured scheme. `date` is the request's
/// `Date` header and `now` the current time in seconds since the epoch; only the signature
/// scheme uses them.
pub fn check(
    auth: &InboundAuth,
    authorization: Option<&str>,
    date: Option<&str>,
    now: i64,
) -> Result<(), Denied> {
    match auth {
        InboundAuth::None => Ok(()),
        InboundAuth::Signature {
            key_id,
            key,
            max_skew,
        } => check_signature(key_id, key, max_skew.as_secs(), authorization, date, now),
        InboundAuth::Basic { user, password } => {
            let (scheme, cred) = split_scheme(authorization)?;
            if !scheme.eq_ignore_ascii_case("basic") {
                return Err(Denied("Authorization is not Basic"));
            }
            let decoded =
                base64_decode(cred.trim()).ok_or(Denied("Basic credentials are not base64"))?;
            let expected = format!("{user}:{password}");
            if constant_time_eq(&decoded, expected.as_bytes()) {
                Ok(())
            } else {
                Err(Denied("wrong user or password"))
            }
        }
        InboundAuth::Custom { value: expected } => {
            // The scheme name is compared case-insensitively, the credentials exactly; the
            // credentials are everything after the first space.
            let (scheme, cred) = split_scheme(authorization)?;
            let (want_scheme, want_cred) = expected.split_once(' ').unwrap_or((expected, ""));
            let scheme_ok = scheme.eq_ignore_ascii_case(want_scheme);
            let cred_ok = constant_time_eq(cred.trim().as_bytes(), want_cred.trim().as_bytes());
            if scheme_ok && cred_ok {
                Ok(())
            } else {
                Err(Denied("wrong custom credentials"))
            }
        }
    }
}

/// Splits an `Authorization` value into its scheme and what follows the first space.
fn split_scheme(authorization: Option<&str>) -> Result<(&str, &str), Denied> {
    authorization
        .ok_or(Denied("no Authorization header"))?
        .trim()
        .split_once(' ')
        .ok_or(Denied("Authorization has no credentials"))
}

fn check_signature(
    key_id: &str,
    key: &str,
    max_skew: u64,
    authorization: Option<&str>,
    date: Option<&str>,
    now: i64,
) -> Result<(), Denied> {
    let (scheme, params) = split_scheme(authorization)?;
    if !scheme.eq_ignore_ascii_case("signature") {
        return Err(Denied("Authorization is not Signature"));
    }
    let params = parse_params(params).ok_or(Denied("Signature parameters are malformed"))?;
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    };
    let presented_id = param("keyId").ok_or(Denied("Signature has no keyId"))?;
    let presented = param("signature").ok_or(Denied("Signature has no signature"))?;
    if param("algorithm").is_some_and(|a| !a.eq_ignore_ascii_case("hmac-sha1")) {
        return Err(Denied("Signature algorithm is not hmac-sha1"));
    }
    if param("headers").is_some_and(|h| !h.trim().eq_ignore_ascii_case("date")) {
        return Err(Denied("Signature covers headers other than date"));
    }
    if !constant_time_eq(presented_id.as_bytes(), key_id.as_bytes()) {
        return Err(Denied("wrong Signature keyId"));
    }
    let date = date
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .ok_or(Denied("no Date header (the signature signs it)"))?;
    let presented_tag = base64_decode(presented.trim()).ok_or(Denied("signature is not base64"))?;

    let candidates = SigningString::ALL.map(|over| (over.name(), over.of(date)));
    // constant_time_eq takes the same time wherever the values differ.
    let matched = candidates
        .iter()
        .find(|(_, text)| constant_time_eq(&signature::sign(key.as_bytes(), text), &presented_tag));
    // For operators checking their ESPF's signing: what was tried and what matched. Never the
    // key or an expected signature; the presented one only when it matched nothing.
    match matched {
        Some((name, text)) => log::debug!(
            "signature auth: signing strings tried: {:?}, {:?}; matched the {name}: {text:?}",
            candidates[0].1,
            candidates[1].1
        ),
        None => log::debug!(
            "signature auth: signing strings tried: {:?} ({}), {:?} ({}); none matched the \
             presented signature {presented:?}",
            candidates[0].1,
            candidates[0].0,
            candidates[1].1,
            candidates[1].0
        ),
    }
    if matched.is_none() {
        return Err(Denied("wrong signature"));
    }
    let sent = parse_http_date(date).ok_or(Denied("Date is not an HTTP date"))?;
    let off = now - sent;
    if off.unsigned_abs() > max_skew {
        log::debug!(
            "signature auth: Date {date:?} is {off} s from espfd's clock, over the {max_skew} s \
             of ESPFD_AUTH_MAX_SKEW"
        );
        return Err(Denied("Date is further from now than ESPFD_AUTH_MAX_SKEW"));
    }
    Ok(())
}

/// Splits `keyId="test",algorithm="hmac-sha1",signature="..."` into name/value pairs.
/// Values are quoted or bare; `None` on a malformed list or a repeated name.
fn parse_params(list: &str) -> Option<Vec<(&str, &str)>> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    let mut rest = list.trim();
    while !rest.is_empty() {
        let (name, after) = rest.split_once('=')?;
        let name = name.trim();
        if name.is_empty() || name.contains([',', ' ', '"']) {
            return None;
        }
        let after = after.trim_start();
        let (value, tail) = match after.strip_prefix('"') {
            Some(quoted) => {
                let end = quoted.find('"')?;
                (&quoted[..end], &quoted[end + 1..])
            }
            None => {
                let end = after.find(',').unwrap_or(after.len());
                (after[..end].trim(), &after[end..])
            }
        };
        if out.iter().any(|(k, _)| k.eq_ignore_ascii_case(name)) {
            return None;
        }
        out.push((name, value));
        let tail = tail.trim_start();
        rest = match tail.strip_prefix(',') {
            Some(t) => t.trim_start(),
            None if tail.is_empty() => "",
            None => return None,
        };
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check1(auth: &InboundAuth, authorization: Option<&str>) -> Result<(), Denied> {
        check(auth, authorization, None, 0)
    }

    /// The documented example inputs (espf-protocol.md, section 2.3).
    const DATE: &str = "Thu, 12 Apr 2018 15:24:00 GMT";
    const DATE_SECS: i64 = 1_523_546_640;

    fn signature_auth() -> InboundAuth {
        InboundAuth::Signature {
            key_id: "test".into(),
            key: "signature".into(),
            max_skew: std::time::Duration::from_secs(300),
        }
    }

    fn sig(signature: &str) -> String {
        format!("Signature keyId=\"test\",algorithm=\"hmac-sha1\",signature=\"{signature}\"")
    }

    #[test]
    fn signature_matches_the_computed_vectors() {
        let auth = signature_auth();
        let ok = |h: &str| check(&auth, Some(h), Some(DATE), DATE_SECS);
        // cavage default `date: <Date>` and the bare Date value, padded and unpadded.
        assert_eq!(ok(&sig("FHkFy/8bwxnoZGvTkmt8VqSBeSA=")), Ok(()));
        assert_eq!(ok(&sig("FHkFy/8bwxnoZGvTkmt8VqSBeSA")), Ok(()));
        assert_eq!(ok(&sig("48+LtGkLvCsislw4FDSVCPirks8=")), Ok(()));
        assert_eq!(ok(&sig("48+LtGkLvCsislw4FDSVCPirks8")), Ok(()));
        // `Date: ...` with a capital D is not a construction we accept.
        assert_eq!(
            ok(&sig("uNY5c/8zhWNxX5iIpYqgAKzDQaA=")),
            Err(Denied("wrong signature"))
        );
        // Spacing and order of the parameters do not matter; a headers="date" list is fine.
        assert_eq!(
            ok("Signature signature=\"FHkFy/8bwxnoZGvTkmt8VqSBeSA=\", headers=\"date\", keyId=\"test\""),
            Ok(())
        );
    }

    #[test]
    fn signature_refusals() {
        let auth = signature_auth();
        let good = sig("FHkFy/8bwxnoZGvTkmt8VqSBeSA=");
        let at = |h: Option<&str>, date: Option<&str>, now: i64| check(&auth, h, date, now);
        assert_eq!(at(Some(&good), Some(DATE), DATE_SECS + 300), Ok(()));
        assert_eq!(at(Some(&good), Some(DATE), DATE_SECS - 300), Ok(()));
        let stale = Err(Denied("Date is further from now than ESPFD_AUTH_MAX_SKEW"));
        assert_eq!(at(Some(&good), Some(DATE), DATE_SECS + 301), stale);
        assert_eq!(at(Some(&good), Some(DATE), DATE_SECS - 301), stale);
        assert!(at(Some(&good), None, DATE_SECS).is_err());
        assert!(at(Some(&good), Some("yesterday"), DATE_SECS).is_err());
        assert!(at(None, Some(DATE), DATE_SECS).is_err());
        for bad in [
            sig("GHkFy/8bwxnoZGvTkmt8VqSBeSA="),
            sig("not base64!"),
            good.replace("keyId=\"test\"", "keyId=\"other\""),
            good.replace("hmac-sha1", "hmac-sha256"),
            good.replace("Signature ", "Basic "),
            "Signature keyId=\"test\"".to_string(),
            "Signature keyId=\"test\",signature=\"unterminated".to_string(),
            "Signature keyId=\"test\",keyId=\"test\",signature=\"FHkFy/8bwxnoZGvTkmt8VqSBeSA=\""
                .to_string(),
            good.replace("algorithm", "headers=\"(request-target) date\",algorithm"),
        ] {
            assert!(at(Some(&bad), Some(DATE), DATE_SECS).is_err(), "{bad}");
        }
        let other_key = InboundAuth::Signature {
            key_id: "test".into(),
            key: "Signature".into(),
            max_skew: std::time::Duration::from_secs(300),
        };
        assert!(check(&other_key, Some(&good), Some(DATE), DATE_SECS).is_err());
    }

    #[test]
    fn basic_matches_the_documented_example() {
        let auth = InboundAuth::Basic {
            user: "username".into(),
            password: "secret".into(),
        };
        assert_eq!(check1(&auth, Some("Basic dXNlcm5hbWU6c2VjcmV0")), Ok(()));
        assert_eq!(check1(&auth, Some("basic dXNlcm5hbWU6c2VjcmV0")), Ok(()));
        assert!(check1(&auth, Some("Basic dXNlcm5hbWU6c2VjcmV1")).is_err());
        assert!(check1(&auth, Some("Basic !!!")).is_err());
        assert!(check1(&auth, Some("SingleLine")).is_err());
        assert!(check1(&auth, Some("Plain dXNlcm5hbWU6c2VjcmV0")).is_err());
        assert!(check1(&auth, None).is_err());
    }

    #[test]
    fn custom_matches_the_documented_example() {
        let auth = InboundAuth::Custom {
            value: "Plain passexample".into(),
        };
        assert_eq!(check1(&auth, Some("Plain passexample")), Ok(()));
        assert!(check1(&auth, Some("Plain passexamplf")).is_err());
        assert!(check1(&auth, Some("Other passexample")).is_err());
        assert!(check1(&auth, Some("Plain")).is_err());
        assert!(check1(&auth, None).is_err());
    }
}
