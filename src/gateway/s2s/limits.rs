//! Outbound caps: how many outbound S2S streams may run at once, in all and per address.
//!
//! Owns: [`OutboundLimits`] (the counts, behind one mutex shared by the router and the
//! connection threads) and [`OutboundSlot`] (one counted stream or connection, given back on
//! drop, so no path can leak a count). A stanza stream holds a stream slot from the moment the
//! router starts its thread until the thread ends; a dialback verification holds one while it
//! runs; each TCP connection to a partner holds an address slot while it is open.
//! `[xmpp] max_outbound` and `max_outbound_per_address` set the caps.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

#[derive(Debug, Default)]
struct Counts {
    streams: usize,
    per_address: HashMap<IpAddr, usize>,
}

/// The outbound caps and what is counted against them.
#[derive(Debug)]
pub struct OutboundLimits {
    counts: Arc<Mutex<Counts>>,
    max_streams: usize,
    max_per_address: usize,
}

/// One counted outbound stream, or one connection to an address; released on drop.
#[derive(Debug)]
pub struct OutboundSlot {
    counts: Arc<Mutex<Counts>>,
    /// `None`: a stream slot; `Some`: a connection to this address.
    address: Option<IpAddr>,
}

impl OutboundLimits {
    pub fn new(max_streams: usize, max_per_address: usize) -> Self {
        OutboundLimits {
            counts: Arc::new(Mutex::new(Counts::default())),
            max_streams,
            max_per_address,
        }
    }

    /// A stream slot, or `None` at `max_outbound`.
    pub fn stream(&self) -> Option<OutboundSlot> {
        let mut counts = self.counts.lock().ok()?;
        if counts.streams >= self.max_streams {
            return None;
        }
        counts.streams += 1;
        Some(OutboundSlot {
            counts: Arc::clone(&self.counts),
            address: None,
        })
    }

    /// A connection slot for `ip`, or `None` at `max_outbound_per_address`. IPv4 in IPv6
    /// (`::ffff:a.b.c.d`) counts as the IPv4 address.
    pub fn address(&self, ip: IpAddr) -> Option<OutboundSlot> {
        let ip = ip.to_canonical();
        let mut counts = self.counts.lock().ok()?;
        let n = counts.per_address.entry(ip).or_insert(0);
        if *n >= self.max_per_address {
            return None;
        }
        *n += 1;
        Some(OutboundSlot {
            counts: Arc::clone(&self.counts),
            address: Some(ip),
        })
    }

    /// Stream slots in use.
    #[cfg(test)]
    pub fn streams(&self) -> usize {
        self.counts.lock().map_or(0, |c| c.streams)
    }
}

impl Drop for OutboundSlot {
    fn drop(&mut self) {
        // A poisoned lock means a panic elsewhere already; the count no longer matters.
        let Ok(mut counts) = self.counts.lock() else {
            return;
        };
        match self.address {
            None => counts.streams = counts.streams.saturating_sub(1),
            Some(ip) => {
                if let Some(n) = counts.per_address.get_mut(&ip) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
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

    #[test]
    fn stream_slots_are_capped_and_given_back() {
        let limits = OutboundLimits::new(2, 8);
        let a = limits.stream().expect("first");
        let b = limits.stream().expect("second");
        assert!(limits.stream().is_none(), "over max_outbound");
        assert_eq!(limits.streams(), 2);
        drop(a);
        let c = limits.stream().expect("one was given back");
        drop((b, c));
        assert_eq!(limits.streams(), 0);
    }

    #[test]
    fn address_slots_are_per_address_and_independent_of_streams() {
        let limits = OutboundLimits::new(1, 2);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let _stream = limits.stream().unwrap();
        let a1 = limits.address(ip("192.0.2.1")).unwrap();
        let _a2 = limits.address(ip("::ffff:192.0.2.1")).unwrap();
        assert!(
            limits.address(ip("192.0.2.1")).is_none(),
            "the mapped form is the same address"
        );
        let _b = limits.address(ip("192.0.2.2")).expect("another address");
        drop(a1);
        assert!(limits.address(ip("192.0.2.1")).is_some());
        assert_eq!(limits.counts.lock().unwrap().per_address.len(), 2);
    }
}
