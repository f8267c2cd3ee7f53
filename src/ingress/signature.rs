//! The signature scheme's HMAC-SHA1 of the `Date` (`ESPFD_AUTH=signature`), computed in one
//! place for both sides: the ingress verifies it (`auth.rs`), `espfd send` signs with it.
//!
//! PortaOne's "Appendix A": `Authorization: Signature keyId="..",algorithm="hmac-sha1",
//! signature=".."`, an HMAC-SHA1 with the shared key over the `Date` header. PortaOne does not
//! document the exact signing string, and its published example value matches none of the
//! obvious constructions for its documented inputs (see README), so there are two: the
//! draft-cavage default, `date: <Date>`, and the bare `Date` value. Parsing a presented
//! header is the ingress's business, not this module's.

use ring::hmac;

use crate::util::base64_encode;

/// What the HMAC is computed over, given the `Date` header's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigningString {
    /// `date: <Date>`, draft-cavage's default; what `espfd send` signs unless told otherwise.
    Cavage,
    /// The bare `Date` value (`espfd send --sign-bare-date`).
    BareDate,
}

impl SigningString {
    /// Both, in the order the ingress tries them.
    pub const ALL: [SigningString; 2] = [SigningString::Cavage, SigningString::BareDate];

    /// The text signed for a request carrying `Date: <date>`.
    pub fn of(self, date: &str) -> String {
        match self {
            SigningString::Cavage => format!("date: {date}"),
            SigningString::BareDate => date.to_string(),
        }
    }

    /// How the debug log names it.
    pub fn name(self) -> &'static str {
        match self {
            SigningString::Cavage => "cavage default",
            SigningString::BareDate => "bare Date value",
        }
    }
}

/// The raw HMAC-SHA1 of `text` with `key`: the signature, before base64.
pub fn sign(key: &[u8], text: &str) -> Vec<u8> {
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, key);
    hmac::sign(&key, text.as_bytes()).as_ref().to_vec()
}

/// The `Authorization` value for a request carrying `Date: <date>`:
/// `Signature keyId="..",algorithm="hmac-sha1",signature=".."`, base64 with padding.
pub fn authorization(key_id: &str, key: &[u8], date: &str, over: SigningString) -> String {
    format!(
        "Signature keyId=\"{key_id}\",algorithm=\"hmac-sha1\",signature=\"{}\"",
        base64_encode(&sign(key, &over.of(date)))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_of_the_documented_inputs() {
        // The ESPF protocol notes' example: key "signature", key ID "test".
        let date = "Thu, 12 Apr 2018 15:24:00 GMT";
        assert_eq!(
            authorization("test", b"signature", date, SigningString::Cavage),
            "Signature keyId=\"test\",algorithm=\"hmac-sha1\",signature=\"FHkFy/8bwxnoZGvTkmt8VqSBeSA=\""
        );
        assert!(
            authorization("test", b"signature", date, SigningString::BareDate)
                .ends_with("signature=\"48+LtGkLvCsislw4FDSVCPirks8=\"")
        );
    }
}
