//! The IP allow-list of the listener (`ESPFD_ALLOW_FROM`): which peers may open a connection.
//!
//! It is checked right after `accept`, before a byte of the connection is read; a peer it does
//! not list is closed at once. It is a network-level filter, not authentication: ESPF must
//! still present its credentials.

use std::fmt;
use std::net::IpAddr;

/// A list of networks (CIDR blocks). Empty means everyone is allowed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    nets: Vec<Net>,
}

/// One network: an address with its host bits cleared, and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Net {
    addr: IpAddr,
    prefix: u8,
}

impl AllowList {
    /// Parses a comma-separated list of CIDR blocks or single addresses, IPv4 or IPv6, e.g.
    /// `10.0.0.0/8, 192.0.2.7, ::1/128`. Host bits below the prefix are ignored. An empty
    /// string is the empty list (everyone allowed). The error names the entry at fault.
    pub fn parse(list: &str) -> Result<AllowList, String> {
        let mut nets = Vec::new();
        for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            nets.push(Net::parse(entry)?);
        }
        Ok(AllowList { nets })
    }

    /// Whether the list is empty, that is, every peer is allowed.
    pub fn allows_everyone(&self) -> bool {
        self.nets.is_empty()
    }

    /// Whether a peer at `ip` may connect. An IPv4 peer reaching an IPv6 socket
    /// (`::ffff:a.b.c.d`) is matched as the IPv4 address it is.
    pub fn permits(&self, ip: IpAddr) -> bool {
        if self.nets.is_empty() {
            return true;
        }
        let ip = ip.to_canonical();
        self.nets.iter().any(|n| n.contains(ip))
    }
}

impl fmt::Display for AllowList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.nets.is_empty() {
            return f.write_str("everyone");
        }
        for (i, n) in self.nets.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{}/{}", n.addr, n.prefix)?;
        }
        Ok(())
    }
}

impl Net {
    fn parse(entry: &str) -> Result<Net, String> {
        let (addr_s, prefix_s) = match entry.split_once('/') {
            Some((a, p)) => (a.trim(), Some(p.trim())),
            None => (entry, None),
        };
        let addr: IpAddr = addr_s
            .parse()
            .map_err(|_| format!("'{entry}' is not an IP address or CIDR block"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix_s {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => return Err(format!("'{entry}': prefix length must be 0 to {max}")),
            },
        };
        Ok(Net {
            addr: mask(addr, prefix),
            prefix,
        })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => {
                mask(ip, self.prefix) == self.addr
            }
            _ => false,
        }
    }
}

/// `addr` with every bit after the first `prefix` cleared.
fn mask(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let bits = u32::from(a);
            let m = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4((bits & m).into())
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            let m = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6((bits & m).into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn empty_list_allows_everyone() {
        let l = AllowList::parse("").unwrap();
        assert!(l.allows_everyone());
        assert!(l.permits(ip("203.0.113.9")));
        assert!(l.permits(ip("2001:db8::1")));
        assert_eq!(AllowList::parse(" , ").unwrap(), l);
    }

    #[test]
    fn ipv4_and_ipv6_blocks_and_single_addresses() {
        let l = AllowList::parse("10.0.0.0/8, 192.0.2.7,::1/128,2001:db8::/32").unwrap();
        assert!(l.permits(ip("10.255.1.2")));
        assert!(!l.permits(ip("11.0.0.1")));
        assert!(l.permits(ip("192.0.2.7")));
        assert!(!l.permits(ip("192.0.2.8")));
        assert!(l.permits(ip("::1")));
        assert!(!l.permits(ip("::2")));
        assert!(l.permits(ip("2001:db8:ffff::9")));
        assert!(!l.permits(ip("2001:db9::1")));
        // An IPv4 peer on an IPv6 socket is matched as IPv4.
        assert!(l.permits(ip("::ffff:10.1.2.3")));
        assert!(!l.permits(ip("::ffff:11.1.2.3")));
        assert_eq!(
            l.to_string(),
            "10.0.0.0/8, 192.0.2.7/32, ::1/128, 2001:db8::/32"
        );
    }

    #[test]
    fn zero_prefix_and_host_bits() {
        let l = AllowList::parse("0.0.0.0/0").unwrap();
        assert!(l.permits(ip("198.51.100.1")));
        assert!(!l.permits(ip("::1")), "an IPv4 block does not match IPv6");
        let l = AllowList::parse("192.168.1.77/24").unwrap();
        assert!(l.permits(ip("192.168.1.3")));
        assert_eq!(l.to_string(), "192.168.1.0/24");
    }

    #[test]
    fn invalid_entries_are_named() {
        for bad in [
            "10.0.0.0/33",
            "::1/129",
            "example.com",
            "10.0.0/8",
            "1.2.3.4/x",
            "/8",
        ] {
            let e = AllowList::parse(&format!("127.0.0.1,{bad}")).unwrap_err();
            assert!(e.contains(bad), "{bad}: {e}");
        }
    }
}
