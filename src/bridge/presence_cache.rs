//! The last known presence of watched XMPP users, per resource, for the PIDF of the NOTIFYs
//! their SIP watchers get. Bounded in bytes per partner and in total, forgetting the least
//! recently updated user first.
//!
//! Only users some SIP user watches (an inbound subscription pending or active) are cached;
//! presence of anybody else is not kept (`presence.rs` decides). Bytes are accounted
//! honestly: every string's allocated capacity (strings are shrunk to their length when
//! stored) plus a fixed overhead per entry, resource and status for the structures around
//! them ([`ENTRY_OVERHEAD`], [`RESOURCE_OVERHEAD`], [`STATUS_OVERHEAD`]), so the sum is an
//! upper bound of the heap the cache holds, not an estimate from the stanza's size.
//!
//! An entry bigger than its partner's whole budget is not kept at all (its watchers' next
//! NOTIFY says what the stanza said, from the stanza, but nothing is remembered).

use std::collections::{BTreeMap, HashMap};

use crate::translate::presence::XmppPresence;

/// Bytes counted per cached user beyond its strings: its slot in the map, the map of
/// resources, and its place in the two recency orders (whose keys copy the JID: counted).
pub const ENTRY_OVERHEAD: usize = 256;
/// Bytes counted per resource beyond its strings: a B-tree slot and the presence struct.
pub const RESOURCE_OVERHEAD: usize = 64 + std::mem::size_of::<XmppPresence>();
/// Bytes counted per `<status>` beyond its strings.
pub const STATUS_OVERHEAD: usize = std::mem::size_of::<crate::translate::presence::Status>();

/// One user's presence: resource → last presence.
pub type Resources = BTreeMap<String, XmppPresence>;

struct Entry {
    partner: String,
    resources: Resources,
    bytes: usize,
    tick: u64,
}

#[derive(Default)]
struct PartnerUse {
    bytes: usize,
    /// Recency order of this partner's users.
    order: BTreeMap<u64, String>,
}

/// See the module documentation.
#[derive(Default)]
pub(super) struct PresenceCache {
    entries: HashMap<String, Entry>,
    /// Recency order of all users.
    order: BTreeMap<u64, String>,
    partners: HashMap<String, PartnerUse>,
    total: usize,
    tick: u64,
}

/// What [`PresenceCache::update`] had to forget to stay within the budgets.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Evicted {
    /// Users forgotten because their partner was over its budget.
    pub partner: usize,
    /// Users forgotten because the cache was over its total.
    pub total: usize,
    /// The updated user's presence when it is bigger than a whole budget by itself: not
    /// kept, handed back.
    pub refused: Option<Resources>,
}

fn presence_bytes(p: &XmppPresence) -> usize {
    p.lang.as_ref().map_or(0, String::capacity)
        + p.statuses
            .iter()
            .map(|s| {
                STATUS_OVERHEAD + s.text.capacity() + s.lang.as_ref().map_or(0, String::capacity)
            })
            .sum::<usize>()
}

fn shrink(p: &mut XmppPresence) {
    if let Some(l) = p.lang.as_mut() {
        l.shrink_to_fit();
    }
    p.statuses.shrink_to_fit();
    for s in &mut p.statuses {
        s.text.shrink_to_fit();
        if let Some(l) = s.lang.as_mut() {
            l.shrink_to_fit();
        }
    }
}

fn entry_bytes(jid: &str, partner: &str, resources: &Resources) -> usize {
    ENTRY_OVERHEAD
        + 3 * jid.len()
        + partner.len()
        + resources
            .iter()
            .map(|(r, p)| RESOURCE_OVERHEAD + r.capacity() + presence_bytes(p))
            .sum::<usize>()
}

impl PresenceCache {
    /// The cached presence of `jid` (bare, lowercase).
    pub(super) fn get(&self, jid: &str) -> Option<&Resources> {
        self.entries.get(jid).map(|e| &e.resources)
    }

    /// Bytes accounted for `partner`.
    pub(super) fn partner_bytes(&self, partner: &str) -> usize {
        self.partners.get(partner).map_or(0, |p| p.bytes)
    }

    /// Bytes accounted in all.
    pub(super) fn total_bytes(&self) -> usize {
        self.total
    }

    /// Users cached.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Forgets `jid`.
    pub(super) fn remove(&mut self, jid: &str) {
        self.take(jid);
    }

    fn take(&mut self, jid: &str) -> Option<Resources> {
        let e = self.entries.remove(jid)?;
        self.order.remove(&e.tick);
        self.total -= e.bytes;
        if let Some(p) = self.partners.get_mut(&e.partner) {
            p.bytes -= e.bytes;
            p.order.remove(&e.tick);
            if p.order.is_empty() {
                self.partners.remove(&e.partner);
            }
        }
        Some(e.resources)
    }

    /// Changes `jid`'s resources with `f` (starting from nothing when not cached), makes it
    /// the most recently updated, then forgets the least recently updated users of `partner`
    /// beyond `partner_budget` bytes and of all partners beyond `total_budget`.
    pub(super) fn update(
        &mut self,
        jid: &str,
        partner: &str,
        partner_budget: usize,
        total_budget: usize,
        f: impl FnOnce(&mut Resources),
    ) -> Evicted {
        let mut resources = self.take(jid).unwrap_or_default();
        f(&mut resources);
        let mut evicted = Evicted::default();
        if resources.is_empty() {
            return evicted;
        }
        resources.values_mut().for_each(shrink);
        let bytes = entry_bytes(jid, partner, &resources);
        if bytes > partner_budget.min(total_budget) {
            evicted.partner += 1;
            evicted.refused = Some(resources);
            return evicted;
        }
        self.tick += 1;
        let tick = self.tick;
        self.entries.insert(
            jid.to_owned(),
            Entry {
                partner: partner.to_owned(),
                resources,
                bytes,
                tick,
            },
        );
        self.order.insert(tick, jid.to_owned());
        let use_ = self.partners.entry(partner.to_owned()).or_default();
        use_.bytes += bytes;
        use_.order.insert(tick, jid.to_owned());
        self.total += bytes;
        while self.partner_bytes(partner) > partner_budget {
            let Some(oldest) = self
                .partners
                .get(partner)
                .and_then(|p| p.order.values().next().cloned())
            else {
                break;
            };
            self.remove(&oldest);
            evicted.partner += 1;
        }
        while self.total > total_budget {
            let Some(oldest) = self.order.values().next().cloned() else {
                break;
            };
            self.remove(&oldest);
            evicted.total += 1;
        }
        evicted
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::translate::presence::{PresenceKind, Status};

    fn available(status: &str) -> XmppPresence {
        let mut p = XmppPresence::new(PresenceKind::Available);
        p.statuses.push(Status {
            text: status.to_owned(),
            lang: None,
        });
        p
    }

    fn set(resource: &str, p: XmppPresence) -> impl FnOnce(&mut Resources) {
        let resource = resource.to_owned();
        move |r: &mut Resources| {
            r.insert(resource, p);
        }
    }

    #[test]
    fn bytes_are_accounted_and_given_back() {
        let mut c = PresenceCache::default();
        c.update(
            "a@x.test",
            "x.test",
            1 << 20,
            1 << 20,
            set("r", available("hi")),
        );
        let one = c.total_bytes();
        assert_eq!(
            one,
            ENTRY_OVERHEAD + 3 * 8 + 6 + RESOURCE_OVERHEAD + 1 + STATUS_OVERHEAD + 2
        );
        assert_eq!(c.partner_bytes("x.test"), one);
        // Replacing the presence does not add up.
        c.update(
            "a@x.test",
            "x.test",
            1 << 20,
            1 << 20,
            set("r", available("ho")),
        );
        assert_eq!(c.total_bytes(), one);
        c.remove("a@x.test");
        assert_eq!(
            (c.total_bytes(), c.partner_bytes("x.test"), c.len()),
            (0, 0, 0)
        );
    }

    #[test]
    fn least_recently_updated_goes_first_per_partner_and_in_total() {
        let mut c = PresenceCache::default();
        let put = |c: &mut PresenceCache, jid: &str, partner: &str, budget: usize| {
            c.update(jid, partner, budget, 3000, set("r", available("status")))
        };
        let size = {
            let mut probe = PresenceCache::default();
            put(&mut probe, "u1@a.test", "a.test", usize::MAX);
            probe.total_bytes()
        };
        let budget = size * 2 + size / 2; // room for two users of a.test
        put(&mut c, "u1@a.test", "a.test", budget);
        put(&mut c, "u2@a.test", "a.test", budget);
        put(&mut c, "u1@a.test", "a.test", budget); // u1 is now the most recent
        let ev = put(&mut c, "u3@a.test", "a.test", budget);
        assert_eq!((ev.partner, ev.total, ev.refused), (1, 0, None));
        assert!(
            c.get("u2@a.test").is_none(),
            "u2 was the least recently updated"
        );
        assert!(c.get("u1@a.test").is_some() && c.get("u3@a.test").is_some());
        assert!(c.partner_bytes("a.test") <= budget);
        // The total (3000 bytes here) evicts across partners, oldest first.
        let mut n = 0;
        while c.total_bytes() + size <= 3000 {
            put(&mut c, &format!("v{n}@b.test"), "b.test", usize::MAX);
            n += 1;
        }
        let ev = put(&mut c, "w@b.test", "b.test", usize::MAX);
        assert_eq!(ev.total, 1);
        assert!(c.get("u1@a.test").is_none(), "the oldest of all went first");
        assert!(c.total_bytes() <= 3000);
    }

    #[test]
    fn an_entry_over_the_budget_is_not_kept() {
        let mut c = PresenceCache::default();
        let ev = c.update(
            "a@x.test",
            "x.test",
            100,
            1 << 20,
            set("r", available("hi")),
        );
        assert_eq!(ev.partner, 1);
        assert!(ev.refused.is_some_and(|r| r.contains_key("r")));
        assert_eq!((c.len(), c.total_bytes()), (0, 0));
    }
}
