//! Small helpers that do not deserve a crate: base64, form encoding, clocks, hashing,
//! jitter and HTTP dates.
//!
//! Each of these is a few lines; pulling in a crate for them would cost more in review and
//! supply-chain surface than the code below.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with `=` padding.
pub fn base64_encode(input: &[u8]) -> String {
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Standard base64, padding optional. `None` on any character outside the alphabet.
pub fn base64_decode(input: &str) -> Option<Vec<u8>> {
    let trimmed = input.trim_end_matches('=');
    let mut out = Vec::with_capacity(trimmed.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in trimmed.bytes() {
        let v = B64.iter().position(|&x| x == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    // A single dangling sextet cannot encode a byte.
    if trimmed.len() % 4 == 1 {
        return None;
    }
    Some(out)
}

/// `application/x-www-form-urlencoded` encoding of one value.
pub fn form_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for &b in value.as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Decodes a form-urlencoded body into pairs. Invalid escapes are kept literally.
pub fn form_decode(body: &str) -> Vec<(String, String)> {
    fn decode(s: &str) -> String {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len() => {
                    match (hex_val(bytes[i + 1]), hex_val(bytes[i + 2])) {
                        (Some(h), Some(l)) => {
                            out.push(h << 4 | l);
                            i += 2;
                        }
                        _ => out.push(b'%'),
                    }
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    fn hex_val(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|v| v as u8)
    }
    body.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(pair), String::new()),
        })
        .collect()
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// 64-bit FNV-1a; stable across runs and versions, used to map an entity to a lane.
pub fn fnv1a(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// A cheap, non-cryptographic random number for backoff jitter (xorshift seeded per call
/// from the clock and a counter). Jitter only spreads retries; it protects nothing.
pub fn jitter_u64() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0x9e37_79b9_7f4a_7c15);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut x = nanos ^ COUNTER.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}

/// Formats milliseconds since the epoch as `YYYY-MM-DD HH:MM:SS` UTC, PortaBilling's format.
pub fn format_utc(ms: i64) -> String {
    let (y, mo, d, h, mi, s) = civil(ms.div_euclid(1000));
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}")
}

/// Formats milliseconds since the epoch as RFC 3339 UTC with milliseconds.
pub fn format_rfc3339(ms: i64) -> String {
    let (y, mo, d, h, mi, s) = civil(ms.div_euclid(1000));
    let frac = ms.rem_euclid(1000);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{frac:03}Z")
}

/// Formats seconds since the epoch as an HTTP date (IMF-fixdate).
pub fn format_http_date(secs: i64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (y, mo, d, h, mi, s) = civil(secs);
    let wd = DAYS[secs.div_euclid(86_400).rem_euclid(7) as usize];
    format!(
        "{wd}, {d:02} {} {y:04} {h:02}:{mi:02}:{s:02} GMT",
        MONTHS[(mo - 1) as usize]
    )
}

/// Parses an IMF-fixdate (`Thu, 12 Apr 2018 15:24:00 GMT`) into seconds since the epoch.
pub fn parse_http_date(value: &str) -> Option<i64> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let rest = value.trim().split_once(", ")?.1;
    let parts: Vec<&str> = rest.split(' ').collect();
    if parts.len() != 5 || parts[4] != "GMT" {
        return None;
    }
    let day: i64 = parts[0].parse().ok()?;
    let month = MONTHS.iter().position(|m| *m == parts[1])? as i64 + 1;
    let year: i64 = parts[2].parse().ok().filter(|y| (1..=9999).contains(y))?;
    let hms: Vec<i64> = parts[3]
        .split(':')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    if hms.len() != 3 || !(1..=31).contains(&day) || hms[0] > 23 || hms[1] > 59 || hms[2] > 60 {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hms[0] * 3600 + hms[1] * 60 + hms[2])
}

/// Parses PortaBilling's `YYYY-MM-DD HH:MM:SS` (UTC) into milliseconds since the epoch.
pub fn parse_utc(value: &str) -> Option<i64> {
    let (date, time) = value.trim().split_once(' ')?;
    let d: Vec<i64> = date
        .split('-')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let t: Vec<i64> = time
        .split(':')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    if d.len() != 3 || t.len() != 3 || !(1..=9999).contains(&d[0]) {
        return None;
    }
    Some((days_from_civil(d[0], d[1], d[2]) * 86_400 + t[0] * 3600 + t[1] * 60 + t[2]) * 1000)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// (year, month, day, hour, minute, second) of seconds since the epoch, UTC.
fn civil(secs: i64) -> (i64, i64, i64, i64, i64, i64) {
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, sod / 3600, sod % 3600 / 60, sod % 60)
}

/// Parses a duration: a number of seconds, or a number with `ms`, `s`, `m`, `h` or `d`.
pub fn parse_duration(value: &str) -> Option<Duration> {
    let v = value.trim();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let n: u64 = num.parse().ok()?;
    let ms = match unit {
        "ms" => n,
        "" | "s" => n.checked_mul(1000)?,
        "m" => n.checked_mul(60_000)?,
        "h" => n.checked_mul(3_600_000)?,
        "d" => n.checked_mul(86_400_000)?,
        _ => return None,
    };
    Some(Duration::from_millis(ms))
}

/// Compares two byte strings without revealing, through the time taken, where they differ
/// or whether their lengths differ: both sides are hashed (SHA-256) and the fixed-length
/// digests compared in full. Equal digests mean equal inputs (SHA-256 is collision
/// resistant). The time still grows with the inputs' lengths (hashing), as any comparison's
/// must; a secret of up to 55 bytes is one SHA-256 block whatever its length.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let da = ring::digest::digest(&ring::digest::SHA256, a);
    let db = ring::digest::digest(&ring::digest::SHA256, b);
    let mut diff = 0u8;
    for (x, y) in da.as_ref().iter().zip(db.as_ref()) {
        diff |= x ^ y;
    }
    std::hint::black_box(diff) == 0
}

/// A warning logged at most once a second, saying how many were left out meanwhile; a flood
/// of refused connections or of failed logins must not become a flood of log lines (a
/// disk-filling attack on the disk the store shares). Shared between threads behind a
/// `Mutex`: take the lock for [`Throttled::tick`] only, and log after releasing it.
#[derive(Debug, Default)]
pub struct Throttled {
    last: Option<std::time::Instant>,
    skipped: u64,
}

impl Throttled {
    /// A throttle that lets the next line through.
    pub const fn new() -> Throttled {
        Throttled {
            last: None,
            skipped: 0,
        }
    }

    /// Whether a line may be logged now: `Some(text)` to append to it — empty, or
    /// ` (N more like it not logged)` — or `None` when this one is to be left out (and
    /// counted for the next).
    pub fn tick(&mut self) -> Option<String> {
        let now = std::time::Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            self.skipped += 1;
            return None;
        }
        let more = match self.skipped {
            0 => String::new(),
            n => format!(" ({n} more like it not logged)"),
        };
        self.last = Some(now);
        self.skipped = 0;
        Some(more)
    }

    /// Calls `log` with the text of [`Throttled::tick`] when a line may be logged now.
    pub fn warn(&mut self, log: impl FnOnce(&str)) {
        if let Some(more) = self.tick() {
            log(&more);
        }
    }
}

/// Cuts a string to at most `max` characters, on a character boundary.
pub fn truncate_chars(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// A secret value; its `Debug` output is redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips_and_matches_the_documented_example() {
        assert_eq!(base64_encode(b"username:secret"), "dXNlcm5hbWU6c2VjcmV0");
        for s in ["", "f", "fo", "foo", "foob", "fooba", "foobar"] {
            let enc = base64_encode(s.as_bytes());
            assert_eq!(base64_decode(&enc).unwrap(), s.as_bytes());
            assert_eq!(
                base64_decode(enc.trim_end_matches('=')).unwrap(),
                s.as_bytes()
            );
        }
        assert!(base64_decode("a!==").is_none());
        assert!(base64_decode("a").is_none());
    }

    #[test]
    fn form_encoding_round_trips() {
        let v = "Submitted to HSS & co: 100% ü";
        let body = format!("message={}&x=1", form_encode(v));
        let pairs = form_decode(&body);
        assert_eq!(pairs[0], ("message".to_string(), v.to_string()));
        assert_eq!(pairs[1], ("x".to_string(), "1".to_string()));
        assert_eq!(form_decode("a=%zz%4")[0].1, "%zz%4");
    }

    #[test]
    fn dates_round_trip() {
        let secs = parse_http_date("Thu, 12 Apr 2018 15:24:00 GMT").unwrap();
        assert_eq!(secs, 1_523_546_640);
        assert_eq!(format_http_date(secs), "Thu, 12 Apr 2018 15:24:00 GMT");
        assert_eq!(format_utc(secs * 1000), "2018-04-12 15:24:00");
        assert_eq!(parse_utc("2018-04-12 15:24:00"), Some(secs * 1000));
        assert!(parse_http_date("12 Apr 2018").is_none());
        assert!(parse_http_date("Thu, 12 Foo 2018 15:24:00 GMT").is_none());
        assert!(parse_http_date("Thu, 12 Apr 99999999999999999 15:24:00 GMT").is_none());
        assert!(parse_utc("99999999999999999-01-01 00:00:00").is_none());
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("10"), Some(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("24h"), Some(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("5x"), None);
        assert_eq!(parse_duration(""), None);
    }

    #[test]
    fn constant_time_eq_compares_contents_of_any_length() {
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(b"espf:s3cret", b"espf:s3cret"));
        assert!(!constant_time_eq(b"espf:s3cret", b"espf:s3creT"));
        assert!(!constant_time_eq(b"espf:s3cret", b"espf:s3cret\0"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(!constant_time_eq(b"ab", b"a"));
    }

    #[test]
    fn throttled_lets_one_line_a_second_through_and_counts_the_rest() {
        let mut t = Throttled::new();
        assert_eq!(t.tick().as_deref(), Some(""));
        assert_eq!(t.tick(), None);
        assert_eq!(t.tick(), None);
        // As if a second had passed.
        t.last = Some(std::time::Instant::now() - Duration::from_millis(1001));
        assert_eq!(t.tick().as_deref(), Some(" (2 more like it not logged)"));
        assert_eq!(t.tick(), None);
    }

    #[test]
    fn truncation_respects_characters() {
        assert_eq!(truncate_chars("héllo", 2), "hé");
        assert_eq!(truncate_chars("hi", 10), "hi");
    }
}
