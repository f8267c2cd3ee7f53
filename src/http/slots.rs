//! The listener's table of connections: who holds which of the `ESPFD_MAX_CONNECTIONS` slots,
//! how many each address holds, and which are idle.
//!
//! The limit must protect the service, not be the attack. So a connection counts as *idle*
//! while it waits for the first byte of a request (its first one, or the next on a
//! keep-alive connection; over TLS also before the handshake starts), and when a new
//! connection finds the limit reached, the connection idle the longest is closed to make
//! room instead of refusing the newcomer. Only when every slot is busy — in the middle of a
//! request, a handshake or a reply — is the newcomer refused. The same holds per address
//! (`ESPFD_MAX_CONNECTIONS_PER_ADDR`): at its cap, the address's own oldest idle connection
//! gives way, and no single address can hold more, so one host cannot take every slot.
//!
//! Pure bookkeeping behind the listener's mutex: no I/O here except closing an evicted
//! socket, which the caller does after releasing the lock.

use std::collections::HashMap;
use std::net::{IpAddr, TcpStream};
use std::time::Instant;

use crate::metrics::Refused;

struct Slot {
    ip: IpAddr,
    /// A clone of the connection's socket, to end it from outside its thread (eviction,
    /// shutdown); `None` when cloning failed.
    stream: Option<TcpStream>,
    /// Since when it has been waiting for a request's first byte; `None` while busy.
    idle_since: Option<Instant>,
}

/// A connection closed to make room: its address, and its socket for the caller to shut.
pub(crate) struct Evicted {
    pub ip: IpAddr,
    pub stream: Option<TcpStream>,
}

pub(crate) struct Slots {
    conns: HashMap<u64, Slot>,
    per_addr: HashMap<IpAddr, usize>,
    max: usize,
    max_per_addr: usize,
}

impl Slots {
    /// A table of `max` slots, at most `max_per_addr` of them per address.
    pub fn new(max: usize, max_per_addr: usize) -> Slots {
        let max = max.max(1);
        Slots {
            conns: HashMap::new(),
            per_addr: HashMap::new(),
            max,
            max_per_addr: max_per_addr.clamp(1, max),
        }
    }

    /// Gives connection `id` from `ip` a slot, as an idle one (nothing received yet), closing
    /// the oldest idle connection — of the same address when the address is at its cap —
    /// if that is what it takes. Refused when every slot in question is busy.
    pub fn admit(
        &mut self,
        id: u64,
        ip: IpAddr,
        stream: Option<TcpStream>,
        now: Instant,
    ) -> Result<Option<Evicted>, Refused> {
        let ip = ip.to_canonical();
        let mut evicted = None;
        if self.per_addr.get(&ip).copied().unwrap_or(0) >= self.max_per_addr {
            let oldest = self
                .oldest_idle(|s| s.ip == ip)
                .ok_or(Refused::MaxPerAddr)?;
            evicted = self.remove(oldest);
        }
        if evicted.is_none() && self.conns.len() >= self.max {
            let oldest = self.oldest_idle(|_| true).ok_or(Refused::MaxConnections)?;
            evicted = self.remove(oldest);
        }
        self.conns.insert(
            id,
            Slot {
                ip,
                stream,
                idle_since: Some(now),
            },
        );
        *self.per_addr.entry(ip).or_insert(0) += 1;
        Ok(evicted)
    }

    /// Marks `id` idle (waiting for a request) or busy. `false` when it no longer holds a
    /// slot (it was closed to make room): the connection must end.
    pub fn set_idle(&mut self, id: u64, idle: bool, now: Instant) -> bool {
        match self.conns.get_mut(&id) {
            Some(slot) => {
                slot.idle_since = idle.then_some(now);
                true
            }
            None => false,
        }
    }

    /// Frees `id`'s slot, if it still holds one.
    pub fn release(&mut self, id: u64) -> Option<TcpStream> {
        self.remove(id).and_then(|e| e.stream)
    }

    /// The sockets of every connection holding a slot.
    pub fn streams(&self) -> impl Iterator<Item = &TcpStream> {
        self.conns.values().filter_map(|s| s.stream.as_ref())
    }

    /// Connections holding a slot.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    /// The idle connection, among those `which` selects, idle the longest (the lowest id
    /// among equals, so that the choice does not depend on the map's order).
    fn oldest_idle(&self, which: impl Fn(&Slot) -> bool) -> Option<u64> {
        self.conns
            .iter()
            .filter(|(_, s)| which(s))
            .filter_map(|(id, s)| s.idle_since.map(|t| (t, *id)))
            .min()
            .map(|(_, id)| id)
    }

    fn remove(&mut self, id: u64) -> Option<Evicted> {
        let slot = self.conns.remove(&id)?;
        if let Some(n) = self.per_addr.get_mut(&slot.ip) {
            *n -= 1;
            if *n == 0 {
                self.per_addr.remove(&slot.ip);
            }
        }
        Some(Evicted {
            ip: slot.ip,
            stream: slot.stream,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_oldest_idle_connection_makes_room_and_busy_ones_never_do() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut s = Slots::new(3, 3);
        for id in 0..3 {
            assert!(s.admit(id, ip("10.0.0.1"), None, at(id)).unwrap().is_none());
        }
        // 1 busy, 0 and 2 idle: 0 has been idle the longest.
        assert!(s.set_idle(1, false, at(10)));
        let e = s.admit(3, ip("10.0.0.2"), None, at(11)).unwrap().unwrap();
        assert_eq!(e.ip, ip("10.0.0.1"));
        assert!(!s.set_idle(0, false, at(12)), "0 was closed");
        // 2 goes idle again later than 3 arrived: 3 is now the oldest idle.
        assert!(s.set_idle(2, true, at(13)));
        s.admit(4, ip("10.0.0.3"), None, at(14)).unwrap().unwrap();
        assert!(!s.set_idle(3, true, at(15)));
        assert_eq!(s.len(), 3);
        // Everyone busy: refused.
        for id in [1, 2, 4] {
            s.set_idle(id, false, at(16));
        }
        assert!(matches!(
            s.admit(5, ip("10.0.0.4"), None, at(17)),
            Err(Refused::MaxConnections)
        ));
        s.release(4);
        assert!(s.admit(5, ip("10.0.0.4"), None, at(18)).unwrap().is_none());
    }

    #[test]
    fn one_address_cannot_take_every_slot() {
        let t0 = Instant::now();
        let mut s = Slots::new(8, 2);
        s.admit(0, ip("10.0.0.1"), None, t0).unwrap();
        s.admit(1, ip("10.0.0.1"), None, t0).unwrap();
        // At its cap the address's own oldest idle connection gives way...
        let e = s.admit(2, ip("10.0.0.1"), None, t0).unwrap().unwrap();
        assert_eq!(e.ip, ip("10.0.0.1"));
        // ... and when both are busy, its next one is refused while others get in.
        s.set_idle(1, false, t0);
        s.set_idle(2, false, t0);
        assert!(matches!(
            s.admit(3, ip("10.0.0.1"), None, t0),
            Err(Refused::MaxPerAddr)
        ));
        // An IPv4 peer on an IPv6 socket is the same address.
        assert!(matches!(
            s.admit(3, ip("::ffff:10.0.0.1"), None, t0),
            Err(Refused::MaxPerAddr)
        ));
        assert!(s.admit(3, ip("10.0.0.2"), None, t0).unwrap().is_none());
        // Releasing frees the address's share too.
        s.release(1);
        assert!(s.admit(4, ip("10.0.0.1"), None, t0).unwrap().is_none());
    }

    #[test]
    fn the_per_address_cap_is_at_most_the_limit() {
        let t0 = Instant::now();
        let mut s = Slots::new(2, 100);
        s.admit(0, ip("10.0.0.1"), None, t0).unwrap();
        s.admit(1, ip("10.0.0.1"), None, t0).unwrap();
        s.set_idle(0, false, t0);
        s.set_idle(1, false, t0);
        assert!(matches!(
            s.admit(2, ip("10.0.0.1"), None, t0),
            Err(Refused::MaxPerAddr)
        ));
    }
}
