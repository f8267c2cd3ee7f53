//! The `Authorization` header `espfd send` puts on each request, for each of ESPF's schemes,
//! and the deliberately wrong variant of each. The signature itself is computed by
//! [`crate::ingress::signature`], the code the ingress verifies it with.

use crate::ingress::signature::{self, SigningString};
use crate::util::base64_encode;

/// How requests authenticate.
#[derive(Clone, PartialEq, Eq)]
pub enum SendAuth {
    /// No `Authorization` header.
    None,
    /// `Basic base64(user:password)`.
    Basic { user: String, password: String },
    /// The whole `Authorization` value.
    Custom { value: String },
    /// HMAC-SHA1 over `date: <Date>` (or the bare Date value), base64.
    Signature {
        key_id: String,
        key: Vec<u8>,
        over: SigningString,
    },
}

impl std::fmt::Debug for SendAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl SendAuth {
    /// The `Authorization` value for a request carrying `Date: <date>`.
    pub fn authorization(&self, date: &str) -> Option<String> {
        match self {
            SendAuth::None => None,
            SendAuth::Basic { user, password } => Some(format!(
                "Basic {}",
                base64_encode(format!("{user}:{password}").as_bytes())
            )),
            SendAuth::Custom { value } => Some(value.clone()),
            SendAuth::Signature { key_id, key, over } => {
                Some(signature::authorization(key_id, key, date, *over))
            }
        }
    }

    /// The same scheme with credentials that are certainly wrong.
    pub(super) fn wrong(&self) -> SendAuth {
        match self {
            SendAuth::None => SendAuth::None,
            SendAuth::Basic { user, password } => SendAuth::Basic {
                user: user.clone(),
                password: format!("{password}-wrong"),
            },
            SendAuth::Custom { value } => SendAuth::Custom {
                value: format!("{value}-wrong"),
            },
            SendAuth::Signature { key_id, key, over } => SendAuth::Signature {
                key_id: key_id.clone(),
                key: [key.as_slice(), b"-wrong"].concat(),
                over: *over,
            },
        }
    }

    /// What is printed about the credentials: never a password or key.
    pub(super) fn describe(&self) -> String {
        match self {
            SendAuth::None => "no auth".into(),
            SendAuth::Basic { user, .. } => format!("basic auth as user '{user}'"),
            SendAuth::Custom { value } => {
                let scheme = value.split(' ').next().unwrap_or("");
                format!("custom auth '{scheme} ...'")
            }
            SendAuth::Signature { key_id, over, .. } => format!(
                "signature auth, keyId '{key_id}', signing {}",
                match over {
                    SigningString::BareDate => "the bare Date",
                    SigningString::Cavage => "'date: <Date>'",
                }
            ),
        }
    }
}
