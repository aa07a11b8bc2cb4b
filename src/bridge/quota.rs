//! Per-partner-domain quotas, so that one partner (hostile or broken) never shuts the others
//! out: what each partner domain may hold at once (subscriptions, pending subscriptions, IM
//! sessions, deliveries waiting for their barrier, presence-cache bytes), and a stanza rate
//! per partner domain (a token bucket driven by the `now` the bridge is given, never a clock
//! read here). The gateway-wide bounds (`MAX_SUBSCRIPTIONS`, `MAX_SESSIONS`, `MAX_WAITING`,
//! `[quota] presence_cache_total`) stay in force over all partners together.
//!
//! A partner is its `[partner]` domain with its aliases (counts of `googlemail.com` and
//! `gmail.com` add up); a domain without a section (open federation) is its own partner with
//! the `[quota]` values.
//!
//! What the peer is told when a quota is hit:
//! - XMPP: the stanza that would pass it is answered `resource-constraint` (RFC 6120
//!   §8.3.3.18: "the server lacks the system resources necessary to service the request"),
//!   never dropped. Only error stanzas and IQ results are not refused by the rate: they
//!   answer what xsgw sent (a barrier ping, a message), so they are bounded by our own
//!   traffic, and refusing them would turn a busy partner's accepted messages into timeouts.
//! - SIP (a request from the Edge toward the partner): **403** with a Warning for the
//!   subscription quotas, because they stay full until users act (unsubscribe, approve) and a
//!   retry would meet the same answer, and 403 is what the project maps a refused service to
//!   (README); **503 with Retry-After** for IM sessions and waiting deliveries, because those
//!   drain by themselves (sessions end after `[sip] session_idle`, deliveries within
//!   `[sip] delivery_timeout`) and the Edge may retry after that time or elsewhere
//!   (RFC 3261 §21.5.4).
//!
//! Each refusal is logged as a warning at most once a minute per (partner, quota), with the
//! count of refusals not logged ([`crate::logsafe::RateLimit`]): the partner can trigger
//! these at will.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::time::{Duration, Instant};

use crate::config::{Config, Quota};
use crate::logsafe::{escaped, RateLimit, Suppressed};

/// One log line per (partner, quota) per this window.
const LOG_WINDOW: Duration = Duration::from_secs(60);
/// (partner, quota) pairs remembered by the log limiter and partners with a token bucket.
const MAX_TRACKED: usize = 10_000;

/// Which quota a partner hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuotaKind {
    /// `subscriptions`.
    Subscriptions,
    /// `pending_subscriptions`.
    PendingSubscriptions,
    /// `im_sessions`.
    ImSessions,
    /// `waiting_deliveries`.
    WaitingDeliveries,
    /// `stanza_rate` / `stanza_burst`.
    StanzaRate,
    /// `presence_cache` (presence is forgotten, least recently updated first; nothing is
    /// refused).
    PresenceCache,
}

impl QuotaKind {
    /// The configuration key.
    pub fn key(self) -> &'static str {
        match self {
            QuotaKind::Subscriptions => "subscriptions",
            QuotaKind::PendingSubscriptions => "pending_subscriptions",
            QuotaKind::ImSessions => "im_sessions",
            QuotaKind::WaitingDeliveries => "waiting_deliveries",
            QuotaKind::StanzaRate => "stanza_rate",
            QuotaKind::PresenceCache => "presence_cache",
        }
    }
}

impl fmt::Display for QuotaKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key())
    }
}

/// The quotas of every partner, from the configuration.
#[derive(Debug, Clone)]
pub struct QuotaConfig {
    /// `[quota]`: partners without a section of their own.
    pub default: Quota,
    /// Partner domain or alias (lowercase) → (the partner's domain, its quota).
    pub partners: HashMap<String, (String, Quota)>,
    /// `[quota] presence_cache_total`.
    pub presence_cache_total: usize,
}

impl Default for QuotaConfig {
    /// Quotas that never bind (tests of other things).
    fn default() -> Self {
        QuotaConfig {
            default: Quota {
                subscriptions: usize::MAX,
                pending_subscriptions: usize::MAX,
                im_sessions: usize::MAX,
                waiting_deliveries: usize::MAX,
                presence_cache: usize::MAX,
                stanza_rate: 0,
                stanza_burst: 0,
            },
            partners: HashMap::new(),
            presence_cache_total: usize::MAX,
        }
    }
}

impl QuotaConfig {
    /// The quotas `config` sets.
    pub fn from_config(config: &Config) -> QuotaConfig {
        let mut partners = HashMap::new();
        for p in &config.partners {
            let quota = config.quota_for(&p.domain);
            let name = p.domain.to_ascii_lowercase();
            for d in std::iter::once(&p.domain).chain(&p.aliases) {
                partners.insert(d.to_ascii_lowercase(), (name.clone(), quota));
            }
        }
        QuotaConfig {
            default: config.quota.per_partner,
            partners,
            presence_cache_total: config.quota.presence_cache_total,
        }
    }

    /// The partner `domain` belongs to (its `[partner]` domain, else itself) and its quota.
    pub fn partner(&self, domain: &str) -> (String, Quota) {
        let domain = domain.to_ascii_lowercase();
        match self.partners.get(&domain) {
            Some((name, quota)) => (name.clone(), *quota),
            None => (domain, self.default),
        }
    }
}

/// The domain of a bare JID or address of record (`user@domain` → `domain`).
pub(super) fn domain_of(jid: &str) -> &str {
    jid.rsplit_once('@').map_or(jid, |(_, d)| d)
}

/// Counters per partner (by domain as seen, aliases added up when asked).
#[derive(Debug, Default)]
pub(super) struct Counts(HashMap<String, usize>);

impl Counts {
    pub(super) fn add(&mut self, domain: &str) {
        *self.0.entry(domain.to_ascii_lowercase()).or_default() += 1;
    }

    pub(super) fn sub(&mut self, domain: &str) {
        if let Entry::Occupied(mut e) = self.0.entry(domain.to_ascii_lowercase()) {
            *e.get_mut() = e.get().saturating_sub(1);
            if *e.get() == 0 {
                e.remove();
            }
        }
    }

    /// The count of `partner` (its domain and aliases).
    pub(super) fn of(&self, config: &QuotaConfig, partner: &str) -> usize {
        let members = config
            .partners
            .iter()
            .filter(|(_, (name, _))| name == partner)
            .map(|(d, _)| d.as_str());
        let mut n = 0;
        let mut any = false;
        for d in members {
            any = true;
            n += self.0.get(d).copied().unwrap_or(0);
        }
        if !any {
            n = self.0.get(partner).copied().unwrap_or(0);
        }
        n
    }
}

/// A map whose entries each belong to a partner domain, counted per domain as they come and
/// go, so that a quota check costs O(1) whatever the map's size.
pub(super) struct Counted<K, V> {
    map: HashMap<K, V>,
    counts: Counts,
}

/// What a [`Counted`] map's value says about its partner domain.
pub(super) trait Partnered<K> {
    /// The partner domain the entry `key` → `self` belongs to.
    fn partner_domain<'a>(&'a self, key: &'a K) -> &'a str;
}

impl<K, V> Default for Counted<K, V> {
    fn default() -> Self {
        Counted {
            map: HashMap::new(),
            counts: Counts::default(),
        }
    }
}

impl<K: Hash + Eq, V: Partnered<K>> Counted<K, V> {
    pub(super) fn insert(&mut self, key: K, value: V) -> Option<V> {
        self.counts.add(value.partner_domain(&key));
        let old = self.map.remove(&key);
        if let Some(old) = &old {
            self.counts.sub(old.partner_domain(&key));
        }
        self.map.insert(key, value);
        old
    }

    pub(super) fn remove(&mut self, key: &K) -> Option<V> {
        let old = self.map.remove(key)?;
        self.counts.sub(old.partner_domain(key));
        Some(old)
    }

    pub(super) fn get(&self, key: &K) -> Option<&V> {
        self.map.get(key)
    }

    /// The value, mutable; it must stay with the same partner domain.
    pub(super) fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        self.map.get_mut(key)
    }

    pub(super) fn contains_key(&self, key: &K) -> bool {
        self.map.contains_key(key)
    }

    pub(super) fn len(&self) -> usize {
        self.map.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.map.iter()
    }

    pub(super) fn keys(&self) -> impl Iterator<Item = &K> {
        self.map.keys()
    }

    /// How many entries belong to `partner` (with its aliases).
    pub(super) fn count(&self, config: &QuotaConfig, partner: &str) -> usize {
        self.counts.of(config, partner)
    }
}

/// A token bucket: `rate` tokens a second up to `burst`.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The quotas' moving parts: token buckets and the log limiter.
pub(super) struct QuotaState {
    buckets: HashMap<String, Bucket>,
    log: RateLimit<(String, QuotaKind)>,
    /// Refusals so far, for tests and counters.
    pub(super) refused: u64,
}

impl Default for QuotaState {
    fn default() -> Self {
        QuotaState {
            buckets: HashMap::new(),
            log: RateLimit::new(1, LOG_WINDOW, MAX_TRACKED),
            refused: 0,
        }
    }
}

impl QuotaState {
    /// Takes a token from `partner`'s bucket; `false` when it is empty (over the rate).
    pub(super) fn take_token(&mut self, now: Instant, partner: &str, quota: &Quota) -> bool {
        if quota.stanza_rate == 0 {
            return true;
        }
        let (rate, burst) = (f64::from(quota.stanza_rate), f64::from(quota.stanza_burst));
        if !self.buckets.contains_key(partner) && self.buckets.len() >= MAX_TRACKED {
            // Forget buckets that are full again: they are the same as no bucket.
            self.buckets.retain(|_, b| {
                b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate < burst
            });
            if self.buckets.len() >= MAX_TRACKED {
                return true;
            }
        }
        let bucket = self.buckets.entry(partner.to_owned()).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(burst);
        bucket.at = bucket.at.max(now);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Records that `partner` hit `kind` (limit `limit`), and logs it if this (partner, quota)
    /// was not logged within the last minute.
    pub(super) fn hit(&mut self, now: Instant, partner: &str, kind: QuotaKind, limit: u64) {
        if kind != QuotaKind::PresenceCache {
            self.refused += 1;
        }
        let key = (partner.to_owned(), kind);
        if let Some(suppressed) = self.log.allow(&key, now) {
            let what = match kind {
                QuotaKind::PresenceCache => {
                    "presence of its least recently updated users forgotten"
                }
                _ => "refused",
            };
            log::warn!(
                "partner {}: quota {kind} = {limit} reached: {what}{}",
                escaped(partner),
                Suppressed(suppressed)
            );
        }
    }
}

/// Seconds to put in Retry-After for a quota that drains by itself within `d`.
pub(super) fn retry_after(d: Duration) -> u32 {
    u32::try_from(d.as_secs().clamp(1, 3600)).unwrap_or(3600)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quota(rate: u32, burst: u32) -> Quota {
        Quota {
            stanza_rate: rate,
            stanza_burst: burst,
            ..QuotaConfig::default().default
        }
    }

    #[test]
    fn token_bucket_follows_the_given_clock() {
        let mut q = QuotaState::default();
        let t0 = Instant::now();
        let quota = quota(10, 20);
        let taken = (0..30)
            .filter(|_| q.take_token(t0, "a.test", &quota))
            .count();
        assert_eq!(taken, 20, "the burst, then nothing at the same instant");
        // Half a second later: 5 more tokens.
        let t1 = t0 + Duration::from_millis(500);
        let taken = (0..30)
            .filter(|_| q.take_token(t1, "a.test", &quota))
            .count();
        assert_eq!(taken, 5);
        // Another partner has its own bucket.
        assert!(q.take_token(t1, "b.test", &quota));
        // A long pause refills to the burst, no more.
        let t2 = t1 + Duration::from_secs(3600);
        let taken = (0..30)
            .filter(|_| q.take_token(t2, "a.test", &quota))
            .count();
        assert_eq!(taken, 20);
        // Rate 0: no limit.
        assert!((0..10_000).all(|_| q.take_token(t2, "c.test", &quota_off())));
    }

    fn quota_off() -> Quota {
        quota(0, 0)
    }

    #[test]
    fn aliases_count_as_their_partner() {
        let text = "[gateway]\nfqdn = gw.contoso.test\nsip_domains = contoso.test\n\
                    [sip]\nedge = sip.contoso.test:5061\n[quota]\nsubscriptions = 7\n\
                    [partner gmail.test]\naliases = googlemail.test\nsubscriptions = 3\n";
        let config = crate::config::parse(text, std::path::Path::new("t.ini"))
            .unwrap()
            .0;
        let qc = QuotaConfig::from_config(&config);
        assert_eq!(qc.partner("GoogleMail.test").0, "gmail.test");
        assert_eq!(qc.partner("googlemail.test").1.subscriptions, 3);
        assert_eq!(qc.partner("other.test"), ("other.test".into(), qc.default));
        assert_eq!(qc.default.subscriptions, 7);
        let mut c = Counts::default();
        c.add("gmail.test");
        c.add("googlemail.test");
        c.add("other.test");
        assert_eq!(c.of(&qc, "gmail.test"), 2);
        assert_eq!(c.of(&qc, "other.test"), 1);
        c.sub("googlemail.test");
        assert_eq!(c.of(&qc, "gmail.test"), 1);
    }
}
