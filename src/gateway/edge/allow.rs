//! Who may open a TCP connection to `[sip] listen`: the Edge's addresses and `[sip]
//! allow_from`, decided at accept, before any TLS byte (a stranger never reaches the TLS
//! stack nor holds a handshake slot).
//!
//! The Edge's addresses are what `[sip] edge` names: an IP literal as is, its `[hosts]`
//! entry, else A/AAAA from DNS. DNS answers are taken at start and refreshed at most once
//! every [`REFRESH_EVERY`], only when an address not yet allowed connects (the Edge moved),
//! under a deadline of [`DNS_DEADLINE`], so accept never waits long and a stranger cannot
//! make the listener query DNS more than once a minute. A failed refresh keeps the last
//! answer.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::config::values::IpNet;
use crate::config::Config;
use crate::dns::Resolver;

/// Least time between two DNS lookups of the Edge's name.
pub const REFRESH_EVERY: Duration = Duration::from_secs(60);
/// Longest wait for one lookup of the Edge's name in the accept loop.
pub const DNS_DEADLINE: Duration = Duration::from_secs(2);

/// Looks the Edge's name up (A/AAAA).
pub type EdgeLookup = Box<dyn FnMut(&str) -> Result<Vec<IpAddr>, String> + Send>;

/// The addresses allowed to connect to the SIP listener. Owned by the listener thread.
pub struct EdgeAllow {
    edge_host: String,
    allow_from: Vec<IpNet>,
    /// From the configuration: the IP literal or the `[hosts]` entry of the Edge.
    fixed: Vec<IpAddr>,
    /// From DNS (empty when the Edge's addresses are fixed).
    resolved: Vec<IpAddr>,
    /// `None` when the Edge's addresses are fixed.
    lookup: Option<EdgeLookup>,
    refreshed: Option<Instant>,
}

impl std::fmt::Debug for EdgeAllow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgeAllow")
            .field("edge_host", &self.edge_host)
            .field("allow_from", &self.allow_from)
            .field("fixed", &self.fixed)
            .field("resolved", &self.resolved)
            .finish_non_exhaustive()
    }
}

impl EdgeAllow {
    /// From the configuration; DNS through `[dns]` (or /etc/resolv.conf) when the Edge is a
    /// name without a `[hosts]` entry.
    pub fn from_config(config: &Config) -> Self {
        let host = &config.sip.edge.host;
        let fixed: Option<Vec<IpAddr>> =
            host.parse::<IpAddr>().ok().map(|ip| vec![ip]).or_else(|| {
                config
                    .hosts
                    .iter()
                    .find(|(name, _)| name.eq_ignore_ascii_case(host))
                    .map(|(_, addrs)| addrs.clone())
            });
        let lookup: Option<EdgeLookup> = match fixed {
            Some(_) => None,
            None => {
                let dns = &config.dns;
                let resolver = if dns.servers.is_empty() {
                    Resolver::from_system()
                        .map_err(|e| {
                            log::warn!(
                                "sip listener: no DNS resolver for the Edge {host} ({e}); only [sip] allow_from may connect"
                            )
                        })
                        .ok()
                } else {
                    Some(Resolver::new(dns.servers.clone(), dns.timeout, 1))
                };
                resolver.map(|r| {
                    let r = r.with_deadline(dns.timeout.min(DNS_DEADLINE));
                    Box::new(move |name: &str| r.lookup_ip(name).map_err(|e| e.to_string()))
                        as EdgeLookup
                })
            }
        };
        EdgeAllow::new(
            host,
            config.sip.allow_from.clone(),
            fixed.unwrap_or_default(),
            lookup,
        )
    }

    pub fn new(
        edge_host: &str,
        allow_from: Vec<IpNet>,
        fixed: Vec<IpAddr>,
        lookup: Option<EdgeLookup>,
    ) -> Self {
        EdgeAllow {
            edge_host: edge_host.to_owned(),
            allow_from,
            fixed: fixed.into_iter().map(|ip| ip.to_canonical()).collect(),
            resolved: Vec::new(),
            lookup,
            refreshed: None,
        }
    }

    /// A reloaded `[sip] allow_from` (the Edge's own addresses need a restart to change).
    pub fn set_allow_from(&mut self, allow_from: Vec<IpNet>) {
        self.allow_from = allow_from;
    }

    /// Resolves the Edge's name now (at start); logs what it found.
    pub fn refresh(&mut self, now: Instant) {
        let Some(lookup) = self.lookup.as_mut() else {
            return;
        };
        self.refreshed = Some(now);
        match lookup(&self.edge_host) {
            Ok(addrs) => {
                let addrs: Vec<IpAddr> = addrs.into_iter().map(|ip| ip.to_canonical()).collect();
                if addrs != self.resolved {
                    log::info!(
                        "sip listener: the Edge {} is at {addrs:?}; connections are accepted from there{}",
                        self.edge_host,
                        self.also()
                    );
                }
                self.resolved = addrs;
            }
            Err(e) => log::warn!(
                "sip listener: cannot resolve the Edge {} ({e}); keeping {:?}{}",
                self.edge_host,
                self.resolved,
                self.also()
            ),
        }
    }

    fn also(&self) -> String {
        if self.allow_from.is_empty() {
            String::new()
        } else {
            let nets: Vec<String> = self.allow_from.iter().map(IpNet::to_string).collect();
            format!(" and from [sip] allow_from {}", nets.join(", "))
        }
    }

    fn matches(&self, ip: IpAddr) -> bool {
        self.fixed.contains(&ip)
            || self.resolved.contains(&ip)
            || self.allow_from.iter().any(|net| net.contains(ip))
    }

    /// Whether `ip` may connect. An unknown address may trigger one refresh of the Edge's
    /// addresses if the last one is older than [`REFRESH_EVERY`].
    pub fn allows(&mut self, ip: IpAddr, now: Instant) -> bool {
        let ip = ip.to_canonical();
        if self.matches(ip) {
            return true;
        }
        let due = self
            .refreshed
            .map_or(true, |t| now.saturating_duration_since(t) >= REFRESH_EVERY);
        if self.lookup.is_some() && due {
            self.refresh(now);
            return self.matches(ip);
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn fixed_addresses_and_allow_from_need_no_dns() {
        let nets = vec![crate::config::values::ip_net("10.20.0.0/16").unwrap()];
        let mut allow = EdgeAllow::new("sip.contoso.test", nets, vec![ip("192.0.2.30")], None);
        let now = Instant::now();
        assert!(allow.allows(ip("192.0.2.30"), now));
        assert!(allow.allows(ip("::ffff:192.0.2.30"), now));
        assert!(allow.allows(ip("10.20.3.4"), now));
        assert!(!allow.allows(ip("192.0.2.31"), now));
        assert!(!allow.allows(ip("127.0.0.1"), now));
    }

    #[test]
    fn dns_is_asked_at_most_once_a_minute_and_a_failure_keeps_the_last_answer() {
        let answers = Arc::new(Mutex::new(vec![Ok(vec![ip("192.0.2.30")])]));
        let asked = Arc::new(AtomicUsize::new(0));
        let lookup: EdgeLookup = {
            let answers = Arc::clone(&answers);
            let asked = Arc::clone(&asked);
            Box::new(move |name| {
                assert_eq!(name, "sip.contoso.test");
                asked.fetch_add(1, Ordering::SeqCst);
                answers
                    .lock()
                    .unwrap()
                    .pop()
                    .unwrap_or(Err("timed out".into()))
            })
        };
        let mut allow = EdgeAllow::new("sip.contoso.test", Vec::new(), Vec::new(), Some(lookup));
        let t0 = Instant::now();
        allow.refresh(t0);
        assert_eq!(asked.load(Ordering::SeqCst), 1);
        assert!(allow.allows(ip("192.0.2.30"), t0));
        // Strangers within the minute: no lookup.
        for n in 0..100 {
            assert!(!allow.allows(ip(&format!("198.51.100.{n}")), t0 + Duration::from_secs(59)));
        }
        assert_eq!(asked.load(Ordering::SeqCst), 1);
        // The Edge moved: the next unknown address after a minute looks again.
        answers.lock().unwrap().push(Ok(vec![ip("192.0.2.40")]));
        assert!(allow.allows(ip("192.0.2.40"), t0 + Duration::from_secs(61)));
        assert_eq!(asked.load(Ordering::SeqCst), 2);
        assert!(!allow.allows(ip("192.0.2.30"), t0 + Duration::from_secs(62)));
        // A failed lookup keeps the last answer.
        assert!(!allow.allows(ip("198.51.100.1"), t0 + Duration::from_secs(200)));
        assert_eq!(asked.load(Ordering::SeqCst), 3);
        assert!(allow.allows(ip("192.0.2.40"), t0 + Duration::from_secs(201)));
    }
}
