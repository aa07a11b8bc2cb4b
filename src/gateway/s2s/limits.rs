//! Outbound caps: how many outbound S2S streams may run at once, in all and per address.
//!
//! Owns: [`OutboundLimits`] (the counts, behind one mutex shared by the router and the
//! connection threads) and [`OutboundSlot`] (one counted stream or connection, given back on
//! drop, so no path can leak a count). A stanza stream holds a stream slot from the moment the
//! router starts its thread until the thread ends; a dialback verification holds one while it
//! runs; each TCP connection to a partner holds an address slot while it is open.
//! `[xmpp] max_outbound` and `max_outbound_per_address` set the caps.
//!
//! Verifications are asked for by unauthenticated peers, at will: they may hold at most half
//! of each cap ([`OutboundUse::Verification`]), so strangers can never take every slot from
//! the stanza streams of partners (nor every connection to a partner's server address).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// What an outbound slot is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutboundUse {
    /// A stream carrying our stanzas (the router started it).
    Stanzas,
    /// A dialback verification an inbound peer asked for: at most half of each cap.
    Verification,
}

/// Counts of one kind: (stanza streams, verifications).
#[derive(Debug, Default, Clone, Copy)]
struct Pair {
    stanzas: usize,
    verifications: usize,
}

impl Pair {
    fn total(self) -> usize {
        self.stanzas + self.verifications
    }

    fn of(&mut self, what: OutboundUse) -> &mut usize {
        match what {
            OutboundUse::Stanzas => &mut self.stanzas,
            OutboundUse::Verification => &mut self.verifications,
        }
    }

    /// Takes one under `max` (verifications under half of it, at least one).
    fn take(&mut self, what: OutboundUse, max: usize) -> bool {
        if self.total() >= max
            || (what == OutboundUse::Verification && self.verifications >= (max / 2).max(1))
        {
            return false;
        }
        *self.of(what) += 1;
        true
    }

    fn give_back(&mut self, what: OutboundUse) {
        let n = self.of(what);
        *n = n.saturating_sub(1);
    }
}

#[derive(Debug, Default)]
struct Counts {
    streams: Pair,
    per_address: HashMap<IpAddr, Pair>,
}

/// The outbound caps and what is counted against them.
#[derive(Debug)]
pub struct OutboundLimits {
    counts: Arc<Mutex<Counts>>,
    /// The caps, replaced on reload ([`OutboundLimits::set_caps`]); slots already taken
    /// over a lowered cap are kept until given back.
    max_streams: AtomicUsize,
    max_per_address: AtomicUsize,
}

/// One counted outbound stream, or one connection to an address; released on drop.
#[derive(Debug)]
pub struct OutboundSlot {
    counts: Arc<Mutex<Counts>>,
    what: OutboundUse,
    /// `None`: a stream slot; `Some`: a connection to this address.
    address: Option<IpAddr>,
}

impl OutboundLimits {
    pub fn new(max_streams: usize, max_per_address: usize) -> Self {
        OutboundLimits {
            counts: Arc::new(Mutex::new(Counts::default())),
            max_streams: AtomicUsize::new(max_streams),
            max_per_address: AtomicUsize::new(max_per_address),
        }
    }

    /// New caps (a reload): they apply to the next slot taken.
    pub fn set_caps(&self, max_streams: usize, max_per_address: usize) {
        self.max_streams.store(max_streams, Ordering::Relaxed);
        self.max_per_address
            .store(max_per_address, Ordering::Relaxed);
    }

    /// A stream slot, or `None` at `max_outbound` (verifications: at half of it).
    pub fn stream(&self, what: OutboundUse) -> Option<OutboundSlot> {
        let mut counts = self.counts.lock().ok()?;
        if !counts
            .streams
            .take(what, self.max_streams.load(Ordering::Relaxed))
        {
            return None;
        }
        Some(OutboundSlot {
            counts: Arc::clone(&self.counts),
            what,
            address: None,
        })
    }

    /// A connection slot for `ip`, or `None` at `max_outbound_per_address` (verifications:
    /// at half of it). IPv4 in IPv6 (`::ffff:a.b.c.d`) counts as the IPv4 address.
    pub fn address(&self, ip: IpAddr, what: OutboundUse) -> Option<OutboundSlot> {
        let ip = ip.to_canonical();
        let mut counts = self.counts.lock().ok()?;
        if !counts
            .per_address
            .entry(ip)
            .or_default()
            .take(what, self.max_per_address.load(Ordering::Relaxed))
        {
            if counts.per_address.get(&ip).is_some_and(|p| p.total() == 0) {
                counts.per_address.remove(&ip);
            }
            return None;
        }
        Some(OutboundSlot {
            counts: Arc::clone(&self.counts),
            what,
            address: Some(ip),
        })
    }

    /// Stream slots in use.
    #[cfg(test)]
    pub fn streams(&self) -> usize {
        self.counts.lock().map_or(0, |c| c.streams.total())
    }
}

impl Drop for OutboundSlot {
    fn drop(&mut self) {
        // A poisoned lock means a panic elsewhere already; the count no longer matters.
        let Ok(mut counts) = self.counts.lock() else {
            return;
        };
        match self.address {
            None => counts.streams.give_back(self.what),
            Some(ip) => {
                if let Some(pair) = counts.per_address.get_mut(&ip) {
                    pair.give_back(self.what);
                    if pair.total() == 0 {
                        counts.per_address.remove(&ip);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use OutboundUse::{Stanzas, Verification};

    #[test]
    fn stream_slots_are_capped_and_given_back() {
        let limits = OutboundLimits::new(2, 8);
        let a = limits.stream(Stanzas).expect("first");
        let b = limits.stream(Stanzas).expect("second");
        assert!(limits.stream(Stanzas).is_none(), "over max_outbound");
        assert!(limits.stream(Verification).is_none(), "over max_outbound");
        assert_eq!(limits.streams(), 2);
        drop(a);
        let c = limits.stream(Stanzas).expect("one was given back");
        drop((b, c));
        assert_eq!(limits.streams(), 0);
    }

    #[test]
    fn verifications_leave_half_of_each_cap_to_stanza_streams() {
        let limits = OutboundLimits::new(4, 4);
        let verifying: Vec<_> = std::iter::from_fn(|| limits.stream(Verification)).collect();
        assert_eq!(verifying.len(), 2, "half of max_outbound");
        let stanzas: Vec<_> = std::iter::from_fn(|| limits.stream(Stanzas)).collect();
        assert_eq!(stanzas.len(), 2, "the rest is the stanza streams'");

        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let verifying: Vec<_> = std::iter::from_fn(|| limits.address(ip, Verification)).collect();
        assert_eq!(verifying.len(), 2, "half of max_outbound_per_address");
        assert!(limits.address(ip, Stanzas).is_some());
        // A cap of 1 still lets one verification through.
        let tiny = OutboundLimits::new(1, 1);
        assert!(tiny.stream(Verification).is_some());
    }

    #[test]
    fn address_slots_are_per_address_and_independent_of_streams() {
        let limits = OutboundLimits::new(1, 2);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let _stream = limits.stream(Stanzas).unwrap();
        let a1 = limits.address(ip("192.0.2.1"), Stanzas).unwrap();
        let _a2 = limits.address(ip("::ffff:192.0.2.1"), Stanzas).unwrap();
        assert!(
            limits.address(ip("192.0.2.1"), Stanzas).is_none(),
            "the mapped form is the same address"
        );
        let _b = limits
            .address(ip("192.0.2.2"), Stanzas)
            .expect("another address");
        drop(a1);
        assert!(limits.address(ip("192.0.2.1"), Stanzas).is_some());
        assert_eq!(limits.counts.lock().unwrap().per_address.len(), 2);
        // Refused addresses leave no entry behind.
        let full = OutboundLimits::new(1, 1);
        let _held = full.address(ip("192.0.2.9"), Stanzas).unwrap();
        assert!(full.address(ip("192.0.2.9"), Verification).is_none());
        assert_eq!(full.counts.lock().unwrap().per_address.len(), 1);
    }
}
