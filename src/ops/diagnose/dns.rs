//! The DNS checks: `dns.hosted-srv` (the record partners use to find us) and
//! `dns.partner-srv` (how xsgw finds each partner), with the resolver, `[hosts]` and the
//! RFC 2782 ordering of `crate::dns`, exactly as the gateway uses them.

use std::net::IpAddr;

use super::probe::{self, is_local_address};
use super::report::Finding;
use super::Setup;
use crate::dns::srv::{self, SrvOrder, SrvRecord};
use crate::dns::{DnsError, MAX_XMPP_TARGETS, XMPP_SERVER_PORT};

/// A place to connect to for a partner, in the order xsgw tries them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartnerTarget {
    pub host: String,
    pub port: u16,
    pub addrs: Vec<IpAddr>,
}

/// The targets found for one partner (empty when none could be found).
#[derive(Debug, Clone)]
pub struct PartnerTargets {
    pub domain: String,
    pub targets: Vec<PartnerTarget>,
}

fn show(record: &SrvRecord) -> String {
    format!(
        "{} {} {}:{}",
        record.priority, record.weight, record.target, record.port
    )
}

/// The records of `_xmpp-server._tcp.<domain>` in RFC 2782 order.
fn ordered_srv(setup: &Setup, domain: &str) -> Result<SrvOrder, DnsError> {
    let resolver = setup.resolver.as_ref().ok_or(DnsError::NoServers)?;
    let answer = resolver.lookup_srv(&format!("_xmpp-server._tcp.{domain}"))?;
    let mut rng = srv::system_random();
    Ok(srv::order(answer.records, &mut rng))
}

/// `dns.hosted-srv`, one finding per hosted SIP domain.
pub fn hosted_srv(setup: &Setup) -> Vec<Finding> {
    let config = &setup.config;
    let listen = config.xmpp.listen;
    let public_name = &config.xmpp.public_name;
    let public_addrs = setup.resolve(public_name).unwrap_or_default();
    let ours = |ip: &IpAddr| {
        if listen.ip().is_unspecified() {
            is_local_address(*ip) || public_addrs.contains(ip)
        } else {
            *ip == listen.ip() || public_addrs.contains(ip)
        }
    };
    let mut out = Vec::new();
    for domain in &config.gateway.sip_domains {
        let name = format!("_xmpp-server._tcp.{domain}");
        let publish = format!(
            "publish `{name}. SRV 10 0 {} {public_name}.` in the public DNS zone of {domain} ({public_name} = [xmpp] public_name, resolving to this gateway)",
            listen.port()
        );
        let records = match ordered_srv(setup, domain) {
            Ok(SrvOrder::Targets(records)) => records,
            Ok(SrvOrder::NotAvailable) => {
                out.push(Finding::fail(
                    "dns.hosted-srv",
                    domain.clone(),
                    format!("{name} says the service is not available (target \".\"): partners will not federate with {domain}"),
                    publish,
                ));
                continue;
            }
            Ok(SrvOrder::NoRecords) => {
                out.push(Finding::fail(
                    "dns.hosted-srv",
                    domain.clone(),
                    format!(
                        "{name} has no SRV record: partners cannot find the gateway for {domain}"
                    ),
                    publish,
                ));
                continue;
            }
            Err(e) if e.is_negative_answer() => {
                out.push(Finding::fail(
                    "dns.hosted-srv",
                    domain.clone(),
                    format!(
                        "no SRV record {name} ({e}): partners cannot find the gateway for {domain}"
                    ),
                    format!("{publish} (this host asked its own DNS servers; with split-horizon DNS, publish it where partners look: the public zone)"),
                ));
                continue;
            }
            Err(e) => {
                out.push(Finding::warn(
                    "dns.hosted-srv",
                    domain.clone(),
                    format!("{name} could not be looked up: {e}"),
                    "check [dns] servers (or /etc/resolv.conf); partners use the public DNS, which this host may not see",
                ));
                continue;
            }
        };
        let mut good = Vec::new();
        let mut bad = Vec::new();
        for record in records.iter().take(MAX_XMPP_TARGETS) {
            let addrs = setup.resolve(&record.target);
            match addrs {
                Ok(addrs) if addrs.iter().any(&ours) => {
                    if record.port == listen.port()
                        || addrs.iter().any(|ip| public_addrs.contains(ip))
                    {
                        good.push(format!("{} ({})", show(record), probe::list(&addrs)));
                    } else {
                        bad.push(format!(
                            "{} ({}): port {}, but [xmpp] listen is on {}",
                            show(record),
                            probe::list(&addrs),
                            record.port,
                            listen.port()
                        ));
                    }
                }
                Ok(addrs) => bad.push(format!(
                    "{} ({}): not this gateway nor {public_name}",
                    show(record),
                    probe::list(&addrs)
                )),
                Err(e) => bad.push(format!("{}: {e}", show(record))),
            }
        }
        if bad.is_empty() {
            out.push(Finding::ok(
                "dns.hosted-srv",
                domain.clone(),
                format!("{name} → {}", good.join(", ")),
            ));
        } else {
            out.push(Finding::fail(
                "dns.hosted-srv",
                domain.clone(),
                format!(
                    "{name} leads elsewhere: {}{}",
                    bad.join("; "),
                    if good.is_empty() {
                        String::new()
                    } else {
                        format!(" (good: {})", good.join(", "))
                    }
                ),
                format!("{publish}; remove the other targets"),
            ));
        }
    }
    out
}

/// `dns.partner-srv`, one finding per partner domain and alias; and the targets of each
/// partner's own domain, for `partner.reachable`.
pub fn partner_srv(setup: &Setup) -> (Vec<Finding>, Vec<PartnerTargets>) {
    let config = &setup.config;
    let mut findings = Vec::new();
    let mut all = Vec::new();
    for partner in &config.partners {
        if let Some(route) = &partner.route {
            let (finding, targets) = match setup.resolve(&route.host) {
                Ok(addrs) => (
                    Finding::ok(
                        "dns.partner-srv",
                        partner.domain.clone(),
                        format!(
                            "[partner {}] route {route} → {} (SRV not used)",
                            partner.domain,
                            probe::list(&addrs)
                        ),
                    ),
                    vec![PartnerTarget {
                        host: route.host.clone(),
                        port: route.port,
                        addrs,
                    }],
                ),
                Err(e) => (
                    Finding::fail(
                        "dns.partner-srv",
                        partner.domain.clone(),
                        format!(
                            "[partner {}] route {route} does not resolve: {e}",
                            partner.domain
                        ),
                        format!(
                            "correct [partner {}] route, or add `{} = <address>` to [hosts]",
                            partner.domain, route.host
                        ),
                    ),
                    Vec::new(),
                ),
            };
            findings.push(finding);
            all.push(PartnerTargets {
                domain: partner.domain.clone(),
                targets,
            });
            continue;
        }
        for (i, domain) in std::iter::once(&partner.domain)
            .chain(partner.aliases.iter())
            .enumerate()
        {
            let (finding, targets) = one_partner(setup, domain);
            findings.push(finding);
            if i == 0 {
                all.push(PartnerTargets {
                    domain: domain.clone(),
                    targets,
                });
            }
        }
    }
    (findings, all)
}

fn one_partner(setup: &Setup, domain: &str) -> (Finding, Vec<PartnerTarget>) {
    let name = format!("_xmpp-server._tcp.{domain}");
    let route_fix =
        format!("ask {domain} to publish {name}, or set `route = host:port` in [partner {domain}]");
    let records = match ordered_srv(setup, domain) {
        Ok(SrvOrder::Targets(records)) => records,
        Ok(SrvOrder::NotAvailable) => {
            return (
                Finding::fail(
                    "dns.partner-srv",
                    domain,
                    format!("{name} says {domain} offers no server-to-server XMPP (target \".\")"),
                    route_fix,
                ),
                Vec::new(),
            )
        }
        Ok(SrvOrder::NoRecords) => return fallback(setup, domain, "no SRV record", &route_fix),
        Err(e) if e.is_negative_answer() => {
            return fallback(setup, domain, &e.to_string(), &route_fix)
        }
        Err(e) => {
            return (
                Finding::fail(
                    "dns.partner-srv",
                    domain,
                    format!("{name} could not be looked up: {e}"),
                    "check [dns] servers (or /etc/resolv.conf) and that this host may send DNS queries (UDP and TCP 53)",
                ),
                Vec::new(),
            )
        }
    };
    let mut shown = Vec::new();
    let mut targets = Vec::new();
    for record in records.iter().take(MAX_XMPP_TARGETS) {
        match setup.resolve(&record.target) {
            Ok(addrs) => {
                shown.push(format!("{} ({})", show(record), probe::list(&addrs)));
                targets.push(PartnerTarget {
                    host: record.target.clone(),
                    port: record.port,
                    addrs,
                });
            }
            Err(e) => shown.push(format!("{} (does not resolve: {e})", show(record))),
        }
    }
    let detail = format!("{name} (priority weight target:port): {}", shown.join(", "));
    let finding = if targets.is_empty() {
        Finding::fail(
            "dns.partner-srv",
            domain,
            detail,
            format!("none of the targets resolves: {route_fix}"),
        )
    } else {
        Finding::ok("dns.partner-srv", domain, detail)
    };
    (finding, targets)
}

fn fallback(
    setup: &Setup,
    domain: &str,
    why: &str,
    route_fix: &str,
) -> (Finding, Vec<PartnerTarget>) {
    match setup.resolve(domain) {
        Ok(addrs) => (
            Finding::ok(
                "dns.partner-srv",
                domain,
                format!(
                    "no SRV ({why}); A/AAAA fallback {domain}:{XMPP_SERVER_PORT} → {}",
                    probe::list(&addrs)
                ),
            ),
            vec![PartnerTarget {
                host: domain.to_string(),
                port: XMPP_SERVER_PORT,
                addrs,
            }],
        ),
        Err(e) => (
            Finding::fail(
                "dns.partner-srv",
                domain,
                format!("no SRV ({why}) and no A/AAAA fallback ({e}): {domain} cannot be reached"),
                route_fix,
            ),
            Vec::new(),
        ),
    }
}
