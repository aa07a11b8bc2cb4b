//! Admission at accept: how many connections each listener holds, and how many of them have
//! not authenticated yet, in all, per network and per address.
//!
//! ```text
//!  accept ─▶ Gate::admit(peer ip) ── over a cap ─▶ Refusal (listener refuses, rate-limited log)
//!              │ Ticket (unauthenticated: counted in total, unauthenticated, network, address)
//!              ▼
//!  connection thread ── first domain pair / Edge certificate accepted ─▶ Ticket::authenticated
//!              │ (counted in total only: strangers can never take these slots)
//!              ▼
//!  thread ends, whatever the reason ─▶ Ticket dropped ─▶ counts released
//! ```
//!
//! Unauthenticated connections may hold at most `unauthenticated` of the `total` slots, so
//! the rest is a reserve only authenticated partner streams (and the Edge) use; one network
//! (/24 IPv4, /64 IPv6) and one address get less still, so one host or one hosting provider
//! cannot take the unauthenticated share either. [`Admission`] is the plain counting core
//! (unit-tested without threads); [`Gate`] shares it between a listener and its connection
//! threads behind a mutex held for a few map operations.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::config::values::IpNet;

/// The caps of one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// All connections.
    pub total: usize,
    /// Connections not authenticated yet, together.
    pub unauthenticated: usize,
    /// Not authenticated yet, from one /24 or /64.
    pub per_network: usize,
    /// Not authenticated yet, from one address.
    pub per_address: usize,
}

/// Which cap refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// Every slot is taken.
    Total { max: usize },
    /// The unauthenticated share is taken (the rest is kept for authenticated streams).
    Unauthenticated { max: usize },
    /// The peer's /24 or /64 holds its share.
    Network { network: IpNet, max: usize },
    /// The peer's address holds its share.
    Address { max: usize },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Total { max } => write!(f, "{max} connections already open"),
            Refusal::Unauthenticated { max } => write!(
                f,
                "{max} unauthenticated connections already open (the rest is kept for authenticated ones)"
            ),
            Refusal::Network { network, max } => write!(
                f,
                "{max} unauthenticated connections already open from {network}"
            ),
            Refusal::Address { max } => write!(
                f,
                "{max} unauthenticated connections already open from this address"
            ),
        }
    }
}

/// The network an address is counted in: its /24 (IPv4, IPv4-mapped IPv6 included) or /64.
pub fn network_of(ip: IpAddr) -> IpNet {
    let ip = ip.to_canonical();
    let prefix = if ip.is_ipv4() { 24 } else { 64 };
    IpNet {
        addr: IpNet::masked(ip, prefix).unwrap_or(ip),
        prefix,
    }
}

/// The counts of one listener. Maps hold only keys with a non-zero count, so they are
/// bounded by `limits.unauthenticated`.
#[derive(Debug)]
pub struct Admission {
    limits: Limits,
    total: usize,
    unauthenticated: usize,
    per_network: HashMap<IpAddr, usize>,
    per_address: HashMap<IpAddr, usize>,
}

impl Admission {
    pub fn new(limits: Limits) -> Self {
        Admission {
            limits,
            total: 0,
            unauthenticated: 0,
            per_network: HashMap::new(),
            per_address: HashMap::new(),
        }
    }

    /// Counts a new unauthenticated connection from `ip`, or says which cap refuses it.
    pub fn admit(&mut self, ip: IpAddr) -> Result<(), Refusal> {
        let ip = ip.to_canonical();
        let network = network_of(ip);
        let l = self.limits;
        if self.total >= l.total {
            return Err(Refusal::Total { max: l.total });
        }
        if self.unauthenticated >= l.unauthenticated {
            return Err(Refusal::Unauthenticated {
                max: l.unauthenticated,
            });
        }
        if self.per_network.get(&network.addr).copied().unwrap_or(0) >= l.per_network {
            return Err(Refusal::Network {
                network,
                max: l.per_network,
            });
        }
        if self.per_address.get(&ip).copied().unwrap_or(0) >= l.per_address {
            return Err(Refusal::Address { max: l.per_address });
        }
        self.total += 1;
        self.unauthenticated += 1;
        *self.per_network.entry(network.addr).or_insert(0) += 1;
        *self.per_address.entry(ip).or_insert(0) += 1;
        Ok(())
    }

    /// The connection from `ip` authenticated: it leaves the unauthenticated counts.
    pub fn authenticate(&mut self, ip: IpAddr) {
        let ip = ip.to_canonical();
        self.unauthenticated = self.unauthenticated.saturating_sub(1);
        decrement(&mut self.per_network, network_of(ip).addr);
        decrement(&mut self.per_address, ip);
    }

    /// The connection from `ip` ended.
    pub fn release(&mut self, ip: IpAddr, authenticated: bool) {
        if !authenticated {
            self.authenticate(ip);
        }
        self.total = self.total.saturating_sub(1);
    }

    /// (all, unauthenticated) connections now.
    #[cfg(test)]
    pub fn counts(&self) -> (usize, usize) {
        (self.total, self.unauthenticated)
    }

    /// Unauthenticated connections from `ip` and from its network now.
    #[cfg(test)]
    pub fn unauthenticated_from(&self, ip: IpAddr) -> (usize, usize) {
        let ip = ip.to_canonical();
        (
            self.per_address.get(&ip).copied().unwrap_or(0),
            self.per_network
                .get(&network_of(ip).addr)
                .copied()
                .unwrap_or(0),
        )
    }
}

fn decrement(map: &mut HashMap<IpAddr, usize>, key: IpAddr) {
    if let Some(n) = map.get_mut(&key) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            map.remove(&key);
        }
    }
}

/// One listener's [`Admission`], shared by the listener (admits) and the connection threads
/// (their [`Ticket`]s report authentication and the end).
#[derive(Debug, Clone)]
pub struct Gate(Arc<Mutex<Admission>>);

impl Gate {
    pub fn new(limits: Limits) -> Self {
        Gate(Arc::new(Mutex::new(Admission::new(limits))))
    }

    fn lock(&self) -> MutexGuard<'_, Admission> {
        // Nothing panics while holding it; a poisoned lock still holds valid counts.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// New caps (a reload): they apply to the next connection admitted; connections already
    /// over a lowered cap are kept.
    pub fn set_limits(&self, limits: Limits) {
        self.lock().limits = limits;
    }

    /// A ticket for a new connection from `ip`, or the cap that refuses it.
    pub fn admit(&self, ip: IpAddr) -> Result<Ticket, Refusal> {
        self.lock().admit(ip)?;
        Ok(Ticket {
            gate: self.clone(),
            ip,
            authenticated: false,
        })
    }

    /// (all, unauthenticated) connections now.
    #[cfg(test)]
    pub fn counts(&self) -> (usize, usize) {
        self.lock().counts()
    }
}

/// One admitted connection; dropping it releases its counts.
#[derive(Debug)]
pub struct Ticket {
    gate: Gate,
    ip: IpAddr,
    authenticated: bool,
}

impl Ticket {
    /// The connection authenticated (first domain pair, or the Edge's certificate): it no
    /// longer counts against the unauthenticated caps. Idempotent.
    pub fn authenticated(&mut self) {
        if !self.authenticated {
            self.authenticated = true;
            self.gate.lock().authenticate(self.ip);
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.gate.lock().release(self.ip, self.authenticated);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    const LIMITS: Limits = Limits {
        total: 10,
        unauthenticated: 6,
        per_network: 4,
        per_address: 2,
    };

    #[test]
    fn per_address_then_per_network_then_unauthenticated_total() {
        let mut a = Admission::new(LIMITS);
        a.admit(ip("192.0.2.1")).unwrap();
        a.admit(ip("192.0.2.1")).unwrap();
        assert_eq!(
            a.admit(ip("192.0.2.1")),
            Err(Refusal::Address { max: 2 }),
            "a third from one address"
        );
        a.admit(ip("192.0.2.2")).unwrap();
        a.admit(ip("192.0.2.200")).unwrap();
        assert_eq!(
            a.admit(ip("192.0.2.3")),
            Err(Refusal::Network {
                network: crate::config::values::ip_net("192.0.2.0/24").unwrap(),
                max: 4
            }),
            "a fifth from one /24"
        );
        // Another network is not affected by the first one's share, up to the total share.
        a.admit(ip("198.51.100.1")).unwrap();
        a.admit(ip("203.0.113.1")).unwrap();
        assert_eq!(a.counts(), (6, 6));
        assert_eq!(
            a.admit(ip("198.18.0.1")),
            Err(Refusal::Unauthenticated { max: 6 })
        );
    }

    #[test]
    fn authenticated_connections_use_the_reserve_and_free_the_unauthenticated_share() {
        let mut a = Admission::new(LIMITS);
        for n in 0..6 {
            a.admit(ip(&format!("10.{n}.0.1"))).unwrap();
        }
        assert!(a.admit(ip("10.9.0.1")).is_err(), "the share is full");
        // Two authenticate: they stay open but leave room for two strangers.
        a.authenticate(ip("10.0.0.1"));
        a.authenticate(ip("10.1.0.1"));
        assert_eq!(a.counts(), (6, 4));
        a.admit(ip("10.7.0.1")).unwrap();
        a.admit(ip("10.8.0.1")).unwrap();
        assert!(a.admit(ip("10.9.0.1")).is_err());
        // The reserve: strangers never get past `unauthenticated`, so the last slots are
        // there for streams that authenticate.
        for n in 2..6 {
            a.authenticate(ip(&format!("10.{n}.0.1")));
        }
        a.authenticate(ip("10.7.0.1"));
        a.authenticate(ip("10.8.0.1"));
        for n in 20..22 {
            a.admit(ip(&format!("10.{n}.0.1"))).unwrap();
        }
        assert_eq!(a.counts(), (10, 2));
        assert_eq!(a.admit(ip("10.30.0.1")), Err(Refusal::Total { max: 10 }));
        a.release(ip("10.0.0.1"), true);
        a.release(ip("10.20.0.1"), false);
        assert_eq!(a.counts(), (8, 1));
        a.admit(ip("10.30.0.1")).unwrap();
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let mut a = Admission::new(LIMITS);
        a.admit(ip("2001:db8:1:2::1")).unwrap();
        a.admit(ip("2001:db8:1:2::1")).unwrap();
        assert_eq!(
            a.admit(ip("2001:db8:1:2::1")),
            Err(Refusal::Address { max: 2 })
        );
        a.admit(ip("2001:db8:1:2:ffff::9")).unwrap();
        a.admit(ip("2001:db8:1:2:8000::1")).unwrap();
        assert!(
            matches!(a.admit(ip("2001:db8:1:2::77")), Err(Refusal::Network { network, .. }) if network.to_string() == "2001:db8:1:2::/64"),
            "every address of one /64 is one network"
        );
        a.admit(ip("2001:db8:1:3::1")).unwrap();
        assert_eq!(a.unauthenticated_from(ip("2001:db8:1:2::5")), (0, 4));
        // A listener on [::] sees IPv4 peers as ::ffff:a.b.c.d: the same counts.
        a.admit(ip("::ffff:192.0.2.1")).unwrap();
        assert_eq!(a.unauthenticated_from(ip("192.0.2.1")), (1, 1));
        a.release(ip("192.0.2.1"), false);
        assert_eq!(a.unauthenticated_from(ip("::ffff:192.0.2.1")), (0, 0));
        assert_eq!(
            network_of(ip("::ffff:192.0.2.77")).to_string(),
            "192.0.2.0/24"
        );
    }

    #[test]
    fn tickets_release_on_drop_and_authenticate_once() {
        let gate = Gate::new(LIMITS);
        let mut t = gate.admit(ip("192.0.2.1")).unwrap();
        let u = gate.admit(ip("192.0.2.1")).unwrap();
        assert!(gate.admit(ip("192.0.2.1")).is_err());
        t.authenticated();
        t.authenticated();
        assert_eq!(gate.counts(), (2, 1));
        let v = gate.admit(ip("192.0.2.1")).unwrap();
        drop(u);
        drop(t);
        assert_eq!(gate.counts(), (1, 1));
        drop(v);
        assert_eq!(gate.counts(), (0, 0));
        assert!(gate.lock().per_address.is_empty() && gate.lock().per_network.is_empty());
    }
}
