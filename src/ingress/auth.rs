//! Checking the credentials ESPF sends with each event.
//!
//! All comparisons take time independent of where the presented value differs.

use crate::config::InboundAuth;
use crate::util::{base64_decode, constant_time_eq};

/// Why a request was not let in. The text goes to the log, never a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied(pub &'static str);

/// Checks the `Authorization` header against the configured scheme.
pub fn check(auth: &InboundAuth, authorization: Option<&str>) -> Result<(), Denied> {
    match auth {
        InboundAuth::None => Ok(()),
        InboundAuth::Basic { user, password } => {
            let value = authorization
                .ok_or(Denied("no Authorization header"))?
                .trim();
            let (scheme, cred) = value
                .split_once(' ')
                .ok_or(Denied("Authorization has no credentials"))?;
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
            let value = authorization
                .ok_or(Denied("no Authorization header"))?
                .trim();
            // The scheme name is compared case-insensitively, the credentials exactly; the
            // credentials are everything after the first space.
            let (scheme, cred) = value
                .split_once(' ')
                .ok_or(Denied("Authorization has no credentials"))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_matches_the_documented_example() {
        let auth = InboundAuth::Basic {
            user: "username".into(),
            password: "secret".into(),
        };
        assert_eq!(check(&auth, Some("Basic dXNlcm5hbWU6c2VjcmV0")), Ok(()));
        assert_eq!(check(&auth, Some("basic dXNlcm5hbWU6c2VjcmV0")), Ok(()));
        assert!(check(&auth, Some("Basic dXNlcm5hbWU6c2VjcmV1")).is_err());
        assert!(check(&auth, Some("Basic !!!")).is_err());
        assert!(check(&auth, Some("SingleLine")).is_err());
        assert!(check(&auth, Some("Plain dXNlcm5hbWU6c2VjcmV0")).is_err());
        assert!(check(&auth, None).is_err());
    }

    #[test]
    fn custom_matches_the_documented_example() {
        let auth = InboundAuth::Custom {
            value: "Plain passexample".into(),
        };
        assert_eq!(check(&auth, Some("Plain passexample")), Ok(()));
        assert!(check(&auth, Some("Plain passexamplf")).is_err());
        assert!(check(&auth, Some("Other passexample")).is_err());
        assert!(check(&auth, Some("Plain")).is_err());
        assert!(check(&auth, None).is_err());
    }
}
