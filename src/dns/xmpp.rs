//! Where to connect for an XMPP server-to-server stream (RFC 6120 §3.2) and for a plain host.
//!
//! Owns: [`resolve_xmpp_server`], [`resolve_host`], [`Target`], [`screen_targets`]. Written
//! against the [`Lookup`] trait, so it is tested with an in-memory fake as well as the real
//! resolver. In scope: a configured route override, `_xmpp-server._tcp` SRV ordered per
//! RFC 2782, target addresses from the SRV additional section or A/AAAA, the "service
//! decidedly not available" target `.`, the fallback to the domain's own A/AAAA on port 5269
//! (RFC 6120 §3.2.2), and the screen every address learned from DNS goes through before
//! anything connects to it (special-purpose ranges, the Edge, a bound on attempts). Out of
//! scope: `_xmpps-server` direct TLS (XEP-0368), connecting (the caller tries the screened
//! targets, then addresses, in order).
//!
//! ```text
//!  route override? ──yes──▶ [override host:port]  ([hosts] > A/AAAA)  (nothing else)
//!        │no
//!  IP literal? ───────yes─▶ [ip:5269]                                  (a configured partner)
//!        │no
//!  SRV _xmpp-server._tcp.<domain>
//!        ├─ records ───────▶ RFC 2782 order ─▶ [t1:p1, t2:p2, ...]   (addresses per target:
//!        │                                                            additional > A/AAAA)
//!        ├─ only "." ──────▶ Err(ServiceNotAvailable)                 (no fallback)
//!        ├─ NXDOMAIN/no data ▶ [<domain>:5269]                        (fallback to A/AAAA)
//!        └─ unanswered ────▶ Err(Unanswered)                          (DNS broken: say so)
//!  screen_targets: addresses from SRV/fallback through AddressPolicy (address.rs); at most
//!  MAX_ADDRS_PER_TARGET per DNS target, MAX_CONNECT_ATTEMPTS in all
//! ```
//!
//! `[hosts]` applies to names xsgw was configured with (a route's host here, the Edge in
//! `gateway::edge`), never to names a partner's DNS chose (SRV targets, the fallback): those
//! would let anybody's SRV record point xsgw at whatever the operator pinned.
//!
//! Falling back only on a *negative answer* is deliberate: when the DNS server is
//! unreachable, an A/AAAA query would fail the same way, and trying the domain's web host
//! on 5269 after a SERVFAIL would hide the real fault from the operator.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use super::address::{AddressPolicy, AddressRefusal};
use super::client::Lookup;
use super::error::DnsError;
use super::hosts::StaticHosts;
use super::name::normalize;
use super::srv::{self, RandomBelow, SrvOrder};

/// The default XMPP server-to-server port (RFC 6120 §14.7).
pub const XMPP_SERVER_PORT: u16 = 5269;
/// SRV targets resolved for one domain; the rest are dropped.
pub const MAX_XMPP_TARGETS: usize = 16;
/// Addresses tried for one target learned from DNS (e.g. one IPv4, one IPv6).
pub const MAX_ADDRS_PER_TARGET: usize = 2;
/// Connection attempts for one stream set-up, over all targets: with `[xmpp]
/// connect_timeout`, this bounds how long and how widely one domain can keep xsgw trying.
/// Six covers a published layout such as Gmail's (one priority-5 and four priority-20 hosts).
pub const MAX_CONNECT_ATTEMPTS: usize = 6;

/// Why a target is in the list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TargetOrigin {
    /// The operator's route override for the domain.
    RouteOverride,
    /// An SRV record.
    Srv,
    /// No SRV record: the domain itself on port 5269.
    Fallback,
    /// The domain is an IP literal (RFC 7622 §3.2), which only a `[partner]` section allows:
    /// the operator named the address.
    IpLiteral,
}

/// One place to connect to, in the order returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The host name (normalised) or IP literal; also the name to check the certificate
    /// against when it came from a secure source (RFC 6125 and RFC 7673 are the caller's).
    pub host: String,
    /// The port.
    pub port: u16,
    /// Addresses to try, in order (never empty).
    pub addrs: Vec<IpAddr>,
    /// Where this target came from.
    pub origin: TargetOrigin,
}

/// Addresses of `name`: an IP literal as is, else the static hosts table, else A/AAAA.
pub fn resolve_host(
    name: &str,
    hosts: &StaticHosts,
    lookup: &dyn Lookup,
) -> Result<Vec<IpAddr>, DnsError> {
    if let Ok(ip) = name.parse::<IpAddr>() {
        return Ok(vec![ip]);
    }
    if let Some(addrs) = hosts.get(name) {
        log::debug!("dns: {name} from the static hosts table");
        return Ok(addrs.to_vec());
    }
    lookup.lookup_ip(name)
}

/// The ordered list of targets for an XMPP server-to-server connection to `domain`.
///
/// `route_override` (host, port), when given, is the only target; `hosts` (the `[hosts]`
/// table) is consulted for its host only. `rng` drives the RFC 2782 weighted order (see
/// [`srv::RandomBelow`]; use [`srv::system_random`] in production). The result is what DNS
/// says, unscreened: pass it through [`screen_targets`] before connecting.
///
/// # Blocking
/// Runs the DNS lookups in the calling thread: one SRV lookup, then one A/AAAA lookup per
/// target that the additional section does not cover (at most [`MAX_CONNECT_ATTEMPTS`] of
/// them, as no more addresses are ever tried), each under the resolver's deadline.
pub fn resolve_xmpp_server(
    domain: &str,
    route_override: Option<(&str, u16)>,
    hosts: &StaticHosts,
    lookup: &dyn Lookup,
    rng: RandomBelow<'_>,
) -> Result<Vec<Target>, DnsError> {
    if let Some((host, port)) = route_override {
        let host = match host.parse::<IpAddr>() {
            Ok(ip) => ip.to_string(),
            Err(_) => normalize(host)?,
        };
        let addrs = resolve_host(&host, hosts, lookup)?;
        return Ok(vec![Target {
            host,
            port,
            addrs,
            origin: TargetOrigin::RouteOverride,
        }]);
    }
    let literal = domain
        .strip_prefix('[')
        .and_then(|d| d.strip_suffix(']'))
        .unwrap_or(domain);
    if let Ok(ip) = literal.parse::<IpAddr>() {
        // An IP-literal domain (RFC 7622 §3.2) has no SRV records.
        return Ok(vec![Target {
            host: ip.to_string(),
            port: XMPP_SERVER_PORT,
            addrs: vec![ip],
            origin: TargetOrigin::IpLiteral,
        }]);
    }
    let domain = normalize(domain)?;
    let srv_name = format!("_xmpp-server._tcp.{domain}");
    let answer = match lookup.lookup_srv(&srv_name) {
        Ok(answer) => answer,
        Err(srv_error) if srv_error.is_negative_answer() => {
            log::debug!("dns: {srv_error}; falling back to A/AAAA of {domain}");
            return fallback(&domain, lookup, srv_error);
        }
        Err(error) => return Err(error),
    };
    let mut ordered = match srv::order(answer.records, rng) {
        SrvOrder::Targets(records) => records,
        SrvOrder::NotAvailable => {
            return Err(DnsError::ServiceNotAvailable {
                name: srv_name,
                server: Some(answer.server),
            })
        }
        SrvOrder::NoRecords => {
            let srv_error = DnsError::NoData {
                name: srv_name,
                query_type: super::error::QueryType::Srv,
                server: Some(answer.server),
            };
            log::debug!("dns: {srv_error}; falling back to A/AAAA of {domain}");
            return fallback(&domain, lookup, srv_error);
        }
    };
    if ordered.len() > MAX_XMPP_TARGETS {
        log::debug!(
            "dns: {srv_name} has {} targets, using the first {MAX_XMPP_TARGETS}",
            ordered.len()
        );
        ordered.truncate(MAX_XMPP_TARGETS);
    }

    // One lookup per distinct host, even when it is listed with several ports, and no more
    // lookups than connection attempts could use.
    let mut known: HashMap<String, Result<Vec<IpAddr>, ()>> = HashMap::new();
    let mut failures = Vec::new();
    let mut targets = Vec::with_capacity(ordered.len());
    let mut lookups = 0;
    for record in ordered {
        let addrs = match known.get(&record.target) {
            Some(result) => result.clone(),
            None => {
                // Never [hosts]: the partner's DNS chose this name.
                let result = match answer.hints.get(&record.target) {
                    Some(addrs) if !addrs.is_empty() => Ok(addrs.clone()),
                    _ if lookups >= MAX_CONNECT_ATTEMPTS => {
                        log::debug!(
                            "dns: SRV target {} of {srv_name} not looked up: {MAX_CONNECT_ATTEMPTS} lookups done",
                            record.target
                        );
                        continue;
                    }
                    _ => {
                        lookups += 1;
                        lookup_addresses(&record.target, lookup)
                    }
                };
                let kept = result.as_ref().map(Clone::clone).map_err(|_| ());
                if let Err(error) = result {
                    log::debug!("dns: SRV target {} of {srv_name}: {error}", record.target);
                    failures.push((record.target.clone(), error));
                }
                known.insert(record.target.clone(), kept.clone());
                kept
            }
        };
        if let Ok(addrs) = addrs {
            targets.push(Target {
                host: record.target,
                port: record.port,
                addrs,
                origin: TargetOrigin::Srv,
            });
        }
    }
    if targets.is_empty() {
        return Err(DnsError::TargetsUnresolved {
            name: srv_name,
            failures,
        });
    }
    Ok(targets)
}

/// A name a partner's DNS chose: an IP literal as is (an SRV target may be one), else A/AAAA.
fn lookup_addresses(name: &str, lookup: &dyn Lookup) -> Result<Vec<IpAddr>, DnsError> {
    match name.parse::<IpAddr>() {
        Ok(ip) => Ok(vec![ip]),
        Err(_) => lookup.lookup_ip(name),
    }
}

fn fallback(
    domain: &str,
    lookup: &dyn Lookup,
    srv_error: DnsError,
) -> Result<Vec<Target>, DnsError> {
    match lookup_addresses(domain, lookup) {
        Ok(addrs) => Ok(vec![Target {
            host: domain.to_owned(),
            port: XMPP_SERVER_PORT,
            addrs,
            origin: TargetOrigin::Fallback,
        }]),
        Err(fallback) => Err(DnsError::NoXmppAddress {
            domain: domain.to_owned(),
            srv: Box::new(srv_error),
            fallback: Box::new(fallback),
        }),
    }
}

/// An address [`screen_targets`] left out because of the [`AddressPolicy`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefusedAddress {
    /// The target's host name, as DNS gave it.
    pub host: String,
    /// The address and the target's port.
    pub addr: SocketAddr,
    /// Why.
    pub why: AddressRefusal,
}

/// What [`screen_targets`] kept, and what it left out.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Screened {
    /// The targets to try, in order, each with at least one address.
    pub targets: Vec<Target>,
    /// Addresses learned from DNS that the policy refuses.
    pub refused: Vec<RefusedAddress>,
    /// Addresses allowed but left out by the attempt bounds (or listed twice).
    pub dropped: usize,
}

/// Applies `policy` to every address learned from DNS (targets from SRV or the fallback;
/// those the operator named, a route or an IP-literal partner, pass as they are), and bounds
/// the attempts: at most [`MAX_ADDRS_PER_TARGET`] addresses per DNS target, the same address
/// and port once, [`MAX_CONNECT_ATTEMPTS`] in all. Pure: the caller logs what was left out.
pub fn screen_targets(targets: Vec<Target>, policy: &AddressPolicy) -> Screened {
    let mut screened = Screened::default();
    let mut kept: Vec<SocketAddr> = Vec::new();
    for mut target in targets {
        let named = matches!(
            target.origin,
            TargetOrigin::RouteOverride | TargetOrigin::IpLiteral
        );
        let mut addrs = Vec::with_capacity(target.addrs.len().min(MAX_ADDRS_PER_TARGET));
        for ip in target.addrs.drain(..) {
            let addr = SocketAddr::new(ip, target.port);
            if !named {
                if let Some(why) = policy.refusal(ip) {
                    screened.refused.push(RefusedAddress {
                        host: target.host.clone(),
                        addr,
                        why,
                    });
                    continue;
                }
            }
            let over_target = !named && addrs.len() >= MAX_ADDRS_PER_TARGET;
            if over_target || kept.len() >= MAX_CONNECT_ATTEMPTS || kept.contains(&addr) {
                screened.dropped += 1;
                continue;
            }
            kept.push(addr);
            addrs.push(ip);
        }
        if !addrs.is_empty() {
            target.addrs = addrs;
            screened.targets.push(target);
        }
    }
    screened
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::net::SocketAddr;
    use std::time::Duration;

    use super::*;
    use crate::dns::client::SrvAnswer;
    use crate::dns::error::{QueryType, ServerFailure};
    use crate::dns::srv::SrvRecord;

    const DNS: &str = "10.0.0.2:53";

    fn dns() -> SocketAddr {
        DNS.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// What the fake answers for a name.
    enum Canned {
        Srv(
            Vec<(u16, u16, u16, &'static str)>,
            Vec<(&'static str, &'static str)>,
        ),
        Ips(Vec<&'static str>),
        NxDomain,
        NoData,
        Unanswered,
    }

    #[derive(Default)]
    struct FakeLookup {
        zone: HashMap<&'static str, Canned>,
        asked: RefCell<Vec<String>>,
    }

    impl FakeLookup {
        fn with(mut self, name: &'static str, canned: Canned) -> Self {
            self.zone.insert(name, canned);
            self
        }

        fn negative(&self, name: &str, qt: QueryType) -> DnsError {
            match self.zone.get(name) {
                None | Some(Canned::NxDomain) => DnsError::NxDomain {
                    name: name.into(),
                    query_type: qt,
                    server: dns(),
                },
                Some(Canned::Unanswered) => DnsError::Unanswered {
                    name: name.into(),
                    query_type: qt,
                    elapsed: Duration::from_millis(200),
                    failures: vec![(dns(), ServerFailure::Timeout { ignored: 0 })],
                },
                _ => DnsError::NoData {
                    name: name.into(),
                    query_type: qt,
                    server: Some(dns()),
                },
            }
        }
    }

    impl Lookup for FakeLookup {
        fn lookup_srv(&self, name: &str) -> Result<SrvAnswer, DnsError> {
            self.asked.borrow_mut().push(format!("SRV {name}"));
            match self.zone.get(name) {
                Some(Canned::Srv(records, hints)) => {
                    let mut map: HashMap<String, Vec<IpAddr>> = HashMap::new();
                    for (host, addr) in hints {
                        map.entry((*host).into()).or_default().push(ip(addr));
                    }
                    Ok(SrvAnswer {
                        name: name.into(),
                        records: records
                            .iter()
                            .map(|&(priority, weight, port, target)| SrvRecord {
                                priority,
                                weight,
                                port,
                                target: target.into(),
                            })
                            .collect(),
                        hints: map,
                        server: dns(),
                    })
                }
                _ => Err(self.negative(name, QueryType::Srv)),
            }
        }

        fn lookup_ip(&self, name: &str) -> Result<Vec<IpAddr>, DnsError> {
            self.asked.borrow_mut().push(format!("IP {name}"));
            match self.zone.get(name) {
                Some(Canned::Ips(addrs)) => Ok(addrs.iter().map(|a| ip(a)).collect()),
                _ => Err(self.negative(name, QueryType::Address)),
            }
        }
    }

    fn hosts(entries: &[(&str, &str)]) -> StaticHosts {
        let mut table = StaticHosts::new();
        for (name, addr) in entries {
            table.insert(name, &[ip(addr)]).unwrap();
        }
        table
    }

    fn summary(targets: &[Target]) -> Vec<String> {
        targets
            .iter()
            .map(|t| {
                let addrs: Vec<String> = t.addrs.iter().map(IpAddr::to_string).collect();
                format!("{}:{} {}", t.host, t.port, addrs.join(","))
            })
            .collect()
    }

    #[test]
    fn route_override_is_the_only_target() {
        let lookup =
            FakeLookup::default().with("relay.corp.example", Canned::Ips(vec!["192.0.2.50"]));
        let targets = resolve_xmpp_server(
            "gmail.com",
            Some(("Relay.Corp.Example.", 5270)),
            &StaticHosts::new(),
            &lookup,
            &mut |_| 0,
        )
        .unwrap();
        assert_eq!(summary(&targets), ["relay.corp.example:5270 192.0.2.50"]);
        assert_eq!(targets[0].origin, TargetOrigin::RouteOverride);
        assert_eq!(*lookup.asked.borrow(), ["IP relay.corp.example"]);
    }

    #[test]
    fn route_override_ip_literal_and_hosts_need_no_dns() {
        let lookup = FakeLookup::default();
        let targets = resolve_xmpp_server(
            "gmail.com",
            Some(("192.0.2.9", 5269)),
            &StaticHosts::new(),
            &lookup,
            &mut |_| 0,
        )
        .unwrap();
        assert_eq!(summary(&targets), ["192.0.2.9:5269 192.0.2.9"]);
        let targets = resolve_xmpp_server(
            "gmail.com",
            Some(("relay", 5269)),
            &hosts(&[("RELAY", "192.0.2.10")]),
            &lookup,
            &mut |_| 0,
        )
        .unwrap();
        assert_eq!(summary(&targets), ["relay:5269 192.0.2.10"]);
        assert!(lookup.asked.borrow().is_empty());
    }

    #[test]
    fn srv_targets_in_order_with_addresses_from_each_source() {
        let lookup = FakeLookup::default()
            .with(
                "_xmpp-server._tcp.gmail.com",
                Canned::Srv(
                    vec![
                        (20, 0, 5269, "alt1.xmpp-server.l.google.com"),
                        (5, 0, 5269, "xmpp-server.l.google.com"),
                        (30, 0, 5269, "pinned.example"),
                    ],
                    vec![("xmpp-server.l.google.com", "192.0.2.1")],
                ),
            )
            .with(
                "alt1.xmpp-server.l.google.com",
                Canned::Ips(vec!["192.0.2.2", "2001:db8::2"]),
            )
            .with("pinned.example", Canned::Ips(vec!["192.0.2.4"]));
        let targets = resolve_xmpp_server(
            "GMail.com",
            None,
            // Never consulted for a name the partner's DNS chose.
            &hosts(&[("pinned.example", "192.0.2.3")]),
            &lookup,
            &mut |_| 0,
        )
        .unwrap();
        assert_eq!(
            summary(&targets),
            [
                "xmpp-server.l.google.com:5269 192.0.2.1",
                "alt1.xmpp-server.l.google.com:5269 192.0.2.2,2001:db8::2",
                "pinned.example:5269 192.0.2.4",
            ]
        );
        assert!(targets.iter().all(|t| t.origin == TargetOrigin::Srv));
        assert_eq!(
            *lookup.asked.borrow(),
            [
                "SRV _xmpp-server._tcp.gmail.com",
                "IP alt1.xmpp-server.l.google.com",
                "IP pinned.example"
            ]
        );
    }

    #[test]
    fn static_hosts_apply_to_routes_never_to_names_from_dns() {
        // An SRV target, with or without a hint, and the fallback name: [hosts] is not asked.
        let pinned = hosts(&[
            ("x.example.com", "198.51.100.1"),
            ("y.example.com", "198.51.100.2"),
            ("fallback.example", "198.51.100.3"),
            ("relay.example", "198.51.100.4"),
        ]);
        let lookup = FakeLookup::default()
            .with(
                "_xmpp-server._tcp.example.com",
                Canned::Srv(
                    vec![(0, 0, 5269, "x.example.com"), (1, 0, 5269, "y.example.com")],
                    vec![("x.example.com", "192.0.2.1")],
                ),
            )
            .with("y.example.com", Canned::Ips(vec!["192.0.2.2"]))
            .with("fallback.example", Canned::Ips(vec!["192.0.2.3"]));
        let targets =
            resolve_xmpp_server("example.com", None, &pinned, &lookup, &mut |_| 0).unwrap();
        assert_eq!(
            summary(&targets),
            [
                "x.example.com:5269 192.0.2.1",
                "y.example.com:5269 192.0.2.2"
            ]
        );
        let targets =
            resolve_xmpp_server("fallback.example", None, &pinned, &lookup, &mut |_| 0).unwrap();
        assert_eq!(summary(&targets), ["fallback.example:5269 192.0.2.3"]);
        // A route's host is the operator's name: [hosts] first.
        let targets = resolve_xmpp_server(
            "example.com",
            Some(("relay.example", 5270)),
            &pinned,
            &lookup,
            &mut |_| 0,
        )
        .unwrap();
        assert_eq!(summary(&targets), ["relay.example:5270 198.51.100.4"]);
    }

    #[test]
    fn weighted_order_uses_the_random_source() {
        let lookup = FakeLookup::default().with(
            "_xmpp-server._tcp.example.com",
            Canned::Srv(
                vec![
                    (10, 1, 5269, "a.example.com"),
                    (10, 3, 5269, "b.example.com"),
                ],
                vec![
                    ("a.example.com", "192.0.2.1"),
                    ("b.example.com", "192.0.2.2"),
                ],
            ),
        );
        let first = |draw: u32| {
            let targets = resolve_xmpp_server(
                "example.com",
                None,
                &StaticHosts::new(),
                &lookup,
                &mut |n| draw.min(n - 1),
            )
            .unwrap();
            targets[0].host.clone()
        };
        assert_eq!(first(0), "a.example.com");
        assert_eq!(first(1), "b.example.com");
        assert_eq!(first(3), "b.example.com");
    }

    #[test]
    fn dot_target_says_no_service() {
        let lookup = FakeLookup::default().with(
            "_xmpp-server._tcp.example.com",
            Canned::Srv(vec![(0, 0, 0, ".")], Vec::new()),
        );
        let error = resolve_xmpp_server(
            "example.com",
            None,
            &StaticHosts::new(),
            &lookup,
            &mut |_| 0,
        )
        .unwrap_err();
        assert!(
            matches!(error, DnsError::ServiceNotAvailable { .. }),
            "{error:?}"
        );
        assert_eq!(
            error.to_string(),
            "_xmpp-server._tcp.example.com has the SRV target \".\": the domain says it has no \
             such service at 10.0.0.2:53"
        );
        // No fallback to A/AAAA.
        assert_eq!(lookup.asked.borrow().len(), 1);
    }

    #[test]
    fn no_srv_falls_back_to_the_domain_on_5269() {
        for canned in [Canned::NxDomain, Canned::NoData] {
            let lookup = FakeLookup::default()
                .with("_xmpp-server._tcp.example.com", canned)
                .with("example.com", Canned::Ips(vec!["192.0.2.80"]));
            let targets = resolve_xmpp_server(
                "example.com.",
                None,
                &StaticHosts::new(),
                &lookup,
                &mut |_| 0,
            )
            .unwrap();
            assert_eq!(summary(&targets), ["example.com:5269 192.0.2.80"]);
            assert_eq!(targets[0].origin, TargetOrigin::Fallback);
        }
    }

    #[test]
    fn failed_fallback_carries_both_reasons() {
        let lookup = FakeLookup::default().with("_xmpp-server._tcp.example.com", Canned::NoData);
        let error = resolve_xmpp_server(
            "example.com",
            None,
            &StaticHosts::new(),
            &lookup,
            &mut |_| 0,
        )
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "no address for xmpp domain example.com: no SRV record for \
             _xmpp-server._tcp.example.com at 10.0.0.2:53; fell back to A/AAAA: example.com does \
             not exist (NXDOMAIN for A/AAAA at 10.0.0.2:53)"
        );
    }

    #[test]
    fn unreachable_dns_is_not_a_missing_record() {
        let lookup =
            FakeLookup::default().with("_xmpp-server._tcp.example.com", Canned::Unanswered);
        let error = resolve_xmpp_server(
            "example.com",
            None,
            &StaticHosts::new(),
            &lookup,
            &mut |_| 0,
        )
        .unwrap_err();
        assert!(matches!(error, DnsError::Unanswered { .. }), "{error:?}");
        assert_eq!(lookup.asked.borrow().len(), 1);
    }

    #[test]
    fn unresolvable_targets_are_skipped_or_reported() {
        let lookup = FakeLookup::default()
            .with(
                "_xmpp-server._tcp.example.com",
                Canned::Srv(
                    vec![
                        (0, 0, 5269, "gone.example.com"),
                        (0, 0, 5270, "gone.example.com"),
                        (1, 0, 5269, "ok.example.com"),
                    ],
                    Vec::new(),
                ),
            )
            .with("ok.example.com", Canned::Ips(vec!["192.0.2.5"]));
        let targets = resolve_xmpp_server(
            "example.com",
            None,
            &StaticHosts::new(),
            &lookup,
            &mut |_| 0,
        )
        .unwrap();
        assert_eq!(summary(&targets), ["ok.example.com:5269 192.0.2.5"]);
        // gone.example.com asked once despite two records.
        assert_eq!(lookup.asked.borrow().len(), 3);

        let lookup = FakeLookup::default().with(
            "_xmpp-server._tcp.example.com",
            Canned::Srv(vec![(0, 0, 5269, "gone.example.com")], Vec::new()),
        );
        let error = resolve_xmpp_server(
            "example.com",
            None,
            &StaticHosts::new(),
            &lookup,
            &mut |_| 0,
        )
        .unwrap_err();
        assert!(
            matches!(&error, DnsError::TargetsUnresolved { failures, .. } if failures.len() == 1),
            "{error:?}"
        );
    }

    #[test]
    fn ip_literal_domain_and_invalid_domain() {
        let lookup = FakeLookup::default();
        let targets =
            resolve_xmpp_server("192.0.2.44", None, &StaticHosts::new(), &lookup, &mut |_| 0)
                .unwrap();
        assert_eq!(summary(&targets), ["192.0.2.44:5269 192.0.2.44"]);
        assert_eq!(targets[0].origin, TargetOrigin::IpLiteral);
        let targets = resolve_xmpp_server(
            "[2001:db8::7]",
            None,
            &StaticHosts::new(),
            &lookup,
            &mut |_| 0,
        )
        .unwrap();
        assert_eq!(summary(&targets), ["2001:db8::7:5269 2001:db8::7"]);
        assert!(matches!(
            resolve_xmpp_server(
                "bad..domain",
                None,
                &StaticHosts::new(),
                &lookup,
                &mut |_| 0
            ),
            Err(DnsError::InvalidName { .. })
        ));
        assert!(lookup.asked.borrow().is_empty());
    }

    #[test]
    fn target_count_is_bounded() {
        let records: Vec<(u16, u16, u16, &'static str)> = (0..40)
            .map(|i| {
                (
                    i,
                    0,
                    5269,
                    &*Box::leak(format!("t{i}.example.com").into_boxed_str()),
                )
            })
            .collect();
        let hints: Vec<(&'static str, &'static str)> =
            records.iter().map(|r| (r.3, "192.0.2.1")).collect();
        let lookup = FakeLookup::default()
            .with("_xmpp-server._tcp.example.com", Canned::Srv(records, hints));
        let targets = resolve_xmpp_server(
            "example.com",
            None,
            &StaticHosts::new(),
            &lookup,
            &mut |_| 0,
        )
        .unwrap();
        assert_eq!(targets.len(), MAX_XMPP_TARGETS);
    }

    fn target(host: &str, port: u16, addrs: &[&str], origin: TargetOrigin) -> Target {
        Target {
            host: host.into(),
            port,
            addrs: addrs.iter().map(|a| ip(a)).collect(),
            origin,
        }
    }

    #[test]
    fn screen_refuses_special_addresses_from_dns_only() {
        use crate::dns::address::{AddressClass, AddressPolicy, AddressRefusal};
        let policy = AddressPolicy {
            allow_private: false,
            protected: vec![ip("203.0.113.30")],
        };
        let screened = screen_targets(
            vec![
                target(
                    "a.evil.example",
                    6379,
                    &["127.0.0.1", "10.0.0.5", "::ffff:192.168.1.1"],
                    TargetOrigin::Srv,
                ),
                target(
                    "edge.evil.example",
                    5061,
                    &["203.0.113.30"],
                    TargetOrigin::Srv,
                ),
                target(
                    "b.example",
                    5269,
                    &["fe80::1", "192.0.2.9"],
                    TargetOrigin::Srv,
                ),
                target(
                    "evil.example",
                    5269,
                    &["100.64.0.1"],
                    TargetOrigin::Fallback,
                ),
            ],
            &policy,
        );
        assert_eq!(summary(&screened.targets), ["b.example:5269 192.0.2.9"]);
        let refused: Vec<String> = screened
            .refused
            .iter()
            .map(|r| format!("{} {}", r.host, r.addr))
            .collect();
        assert_eq!(
            refused,
            [
                "a.evil.example 127.0.0.1:6379",
                "a.evil.example 10.0.0.5:6379",
                "a.evil.example [::ffff:192.168.1.1]:6379",
                "edge.evil.example 203.0.113.30:5061",
                "b.example [fe80::1]:5269",
                "evil.example 100.64.0.1:5269",
            ]
        );
        assert_eq!(
            screened.refused[0].why,
            AddressRefusal::Range(AddressClass::Loopback)
        );
        assert_eq!(screened.refused[3].why, AddressRefusal::Protected);

        // What the operator named passes: a route, an IP-literal partner.
        let named = screen_targets(
            vec![
                target(
                    "127.0.0.1",
                    5270,
                    &["127.0.0.1"],
                    TargetOrigin::RouteOverride,
                ),
                target("10.0.0.5", 5269, &["10.0.0.5"], TargetOrigin::IpLiteral),
            ],
            &policy,
        );
        assert_eq!(named.targets.len(), 2);
        assert!(named.refused.is_empty());

        // private_addresses = allow: ranges pass, the Edge still does not.
        let allow = AddressPolicy {
            allow_private: true,
            ..policy
        };
        let screened = screen_targets(
            vec![
                target("a.example", 5269, &["127.0.10.5"], TargetOrigin::Srv),
                target("edge.example", 5269, &["203.0.113.30"], TargetOrigin::Srv),
            ],
            &allow,
        );
        assert_eq!(summary(&screened.targets), ["a.example:5269 127.0.10.5"]);
        assert_eq!(screened.refused.len(), 1);
    }

    #[test]
    fn screen_bounds_the_attempts() {
        let many: Vec<String> = (1..=40).map(|i| format!("192.0.2.{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let mut targets: Vec<Target> = (0..16)
            .map(|i| target(&format!("t{i}.example"), 5269, &many, TargetOrigin::Srv))
            .collect();
        // The same address and port under another name is tried once.
        targets.insert(
            1,
            target("dup.example", 5269, &["192.0.2.1"], TargetOrigin::Srv),
        );
        let screened = screen_targets(targets, &AddressPolicy::default());
        let tried: usize = screened.targets.iter().map(|t| t.addrs.len()).sum();
        assert_eq!(tried, MAX_CONNECT_ATTEMPTS);
        assert!(screened
            .targets
            .iter()
            .all(|t| t.addrs.len() <= MAX_ADDRS_PER_TARGET));
        assert_eq!(
            summary(&screened.targets[..2]),
            [
                "t0.example:5269 192.0.2.1,192.0.2.2",
                "t1.example:5269 192.0.2.3,192.0.2.4"
            ]
        );
        assert_eq!(screened.dropped, 16 * 40 + 1 - MAX_CONNECT_ATTEMPTS);
        // A route keeps its failover addresses (up to the overall bound).
        let route = screen_targets(
            vec![target("relay", 5269, &many, TargetOrigin::RouteOverride)],
            &AddressPolicy::default(),
        );
        assert_eq!(route.targets[0].addrs.len(), MAX_CONNECT_ATTEMPTS);
    }

    #[test]
    fn address_lookups_are_bounded_by_the_attempts() {
        let records: Vec<(u16, u16, u16, &'static str)> = (0..12)
            .map(|i| {
                (
                    i,
                    0,
                    5269,
                    &*Box::leak(format!("n{i}.example.com").into_boxed_str()),
                )
            })
            .collect();
        let mut lookup = FakeLookup::default().with(
            "_xmpp-server._tcp.example.com",
            Canned::Srv(records, vec![("n11.example.com", "192.0.2.11")]),
        );
        for i in 0..11 {
            let name: &'static str = Box::leak(format!("n{i}.example.com").into_boxed_str());
            lookup = lookup.with(name, Canned::NxDomain);
        }
        let targets = resolve_xmpp_server(
            "example.com",
            None,
            &StaticHosts::new(),
            &lookup,
            &mut |_| 0,
        )
        .unwrap();
        // Six lookups (all failing), then only the hinted target.
        assert_eq!(summary(&targets), ["n11.example.com:5269 192.0.2.11"]);
        assert_eq!(lookup.asked.borrow().len(), 1 + MAX_CONNECT_ATTEMPTS);
    }

    /// The whole path over real sockets: SRV and A/AAAA from a scripted server on 127.0.0.1.
    #[test]
    fn end_to_end_with_the_resolver() {
        use crate::dns::client::Resolver;
        use crate::dns::fake_server::{self as fake, FakeDns, Reply};
        use hickory_proto::op::ResponseCode;
        use hickory_proto::rr::RecordType;

        let server = FakeDns::start(|query, _| {
            let mut reply = fake::response(query, ResponseCode::NoError);
            match (fake::qname(query).as_str(), fake::qtype(query)) {
                ("_xmpp-server._tcp.example.org.", RecordType::SRV) => {
                    reply.add_answer(fake::srv(
                        "_xmpp-server._tcp.example.org.",
                        0,
                        5,
                        5269,
                        "xmpp.example.org.",
                    ));
                }
                ("xmpp.example.org.", RecordType::A) => {
                    reply.add_answer(fake::a("xmpp.example.org.", "192.0.2.33"));
                }
                ("xmpp.example.org.", _) => {}
                _ => reply.metadata.response_code = ResponseCode::NXDomain,
            }
            vec![Reply::Message(reply)]
        });
        let resolver = Resolver::new(vec![server.addr], Duration::from_millis(200), 1);
        let mut rng = srv::system_random();
        let targets = resolve_xmpp_server(
            "example.org",
            None,
            &StaticHosts::new(),
            &resolver,
            &mut rng,
        )
        .unwrap();
        assert_eq!(summary(&targets), ["xmpp.example.org:5269 192.0.2.33"]);

        let error = resolve_xmpp_server(
            "nowhere.example",
            None,
            &StaticHosts::new(),
            &resolver,
            &mut rng,
        )
        .unwrap_err();
        assert!(matches!(error, DnsError::NoXmppAddress { .. }), "{error}");
    }
}
