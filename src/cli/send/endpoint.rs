//! The URL `espfd send` posts to, parsed by hand: scheme, host, port and path are all it
//! needs (named `Endpoint` so as not to be mistaken for the provisioning target).

/// Where the events go: an `http[s]://host[:port][/path]` URL taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `https://` rather than `http://`.
    pub https: bool,
    /// The host as written, without brackets around an IPv6 address.
    pub host: String,
    /// The port, 80 / 443 by default.
    pub port: u16,
    /// The path (with any query), `/events` when the URL has none.
    pub path: String,
}

impl Endpoint {
    /// Parses `http[s]://host[:port][/path]`.
    pub fn parse(url: &str) -> Result<Endpoint, String> {
        let (https, rest) = if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else {
            return Err(format!("'{url}' must start with http:// or https://"));
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/events"),
        };
        let default_port = if https { 443 } else { 80 };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("'{url}': unclosed '[' in the host"))?;
            match after.strip_prefix(':') {
                Some(p) => (h, Some(p)),
                None if after.is_empty() => (h, None),
                None => return Err(format!("'{url}': unexpected text after ']'")),
            }
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        let port = match port {
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("'{url}': '{p}' is not a port"))?,
            None => default_port,
        };
        if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '@') {
            return Err(format!("'{url}' has no usable host"));
        }
        if path.contains(|c: char| c.is_whitespace() || c.is_control()) {
            return Err(format!(
                "'{url}': the path contains spaces or control characters"
            ));
        }
        Ok(Endpoint {
            https,
            host: host.to_string(),
            port,
            path: path.to_string(),
        })
    }

    /// The URL, for printing.
    pub fn url(&self) -> String {
        format!(
            "{}://{}{}",
            if self.https { "https" } else { "http" },
            self.host_header(),
            self.path
        )
    }

    /// The `Host` header value.
    pub fn host_header(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let default = if self.https { 443 } else { 80 };
        if self.port == default {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let t = Endpoint::parse("https://espfd.example.net/events").unwrap();
        assert_eq!((t.https, t.port, t.path.as_str()), (true, 443, "/events"));
        let t = Endpoint::parse("http://[::1]:8080").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("::1", 8080, "/events")
        );
        assert_eq!(t.url(), "http://[::1]:8080/events");
        for bad in [
            "ftp://x",
            "http://",
            "http://host:0/",
            "http://host:99999",
            "http://a b/",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }
}
