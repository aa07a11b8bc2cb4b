//! `partner.reachable`: one TCP connection to each address of each partner target, all at
//! once (one thread per address, bounded), each with the short deadline. Refused and silent
//! (firewall) are told apart.

use std::net::SocketAddr;
use std::time::Duration;

use super::dns::PartnerTargets;
use super::probe::{self, ConnectFailure};
use super::report::Finding;

/// At most this many addresses of one target are tried (xsgw tries them in order).
const MAX_ADDRS_PER_TARGET: usize = 2;
/// At most this many connection attempts run at once.
const MAX_PARALLEL: usize = 32;

/// The outcome of one attempt.
#[derive(Debug)]
pub struct Attempt {
    pub host: String,
    pub addr: SocketAddr,
    pub result: Result<(), ConnectFailure>,
}

/// Connects to every address of every target of every partner; in the order given.
pub fn probe_all(partners: &[PartnerTargets], deadline: Duration) -> Vec<Vec<Attempt>> {
    let mut jobs: Vec<(usize, String, SocketAddr)> = Vec::new();
    for (i, p) in partners.iter().enumerate() {
        for t in &p.targets {
            for ip in t.addrs.iter().take(MAX_ADDRS_PER_TARGET) {
                jobs.push((i, t.host.clone(), SocketAddr::new(*ip, t.port)));
            }
        }
    }
    let mut results: Vec<Vec<Attempt>> = partners.iter().map(|_| Vec::new()).collect();
    for chunk in jobs.chunks(MAX_PARALLEL) {
        let done: Vec<(usize, Attempt)> = std::thread::scope(|scope| {
            let handles: Vec<_> = chunk
                .iter()
                .map(|(i, host, addr)| {
                    scope.spawn(move || {
                        let result = probe::connect(*addr, deadline).map(drop);
                        (
                            *i,
                            Attempt {
                                host: host.clone(),
                                addr: *addr,
                                result,
                            },
                        )
                    })
                })
                .collect();
            handles.into_iter().filter_map(|h| h.join().ok()).collect()
        });
        for (i, attempt) in done {
            results[i].push(attempt);
        }
    }
    results
}

/// `partner.reachable` for one partner, from its attempts (in xsgw's order).
pub fn reachable(partner: &PartnerTargets, attempts: &[Attempt]) -> Finding {
    let domain = &partner.domain;
    if attempts.is_empty() {
        return Finding::warn(
            "partner.reachable",
            domain.clone(),
            "not tested: no target address (see dns.partner-srv)",
            "fix dns.partner-srv first",
        );
    }
    let shown: Vec<String> = attempts
        .iter()
        .map(|a| match &a.result {
            Ok(()) => format!("{} {} open", a.host, a.addr),
            Err(e) => format!("{} {} {e}", a.host, a.addr),
        })
        .collect();
    let first_open = attempts.first().is_some_and(|a| a.result.is_ok());
    let any_open = attempts.iter().any(|a| a.result.is_ok());
    if first_open {
        Finding::ok("partner.reachable", domain.clone(), shown.join("; "))
    } else if any_open {
        Finding::warn(
            "partner.reachable",
            domain.clone(),
            format!("only fallback targets open: {}", shown.join("; ")),
            "xsgw reaches the partner, after waiting for the preferred target; check the firewall for the ones that fail, or tell the partner",
        )
    } else {
        let silent = attempts
            .iter()
            .find(|a| matches!(a.result, Err(ConnectFailure::Silent(_))));
        let fix = match silent {
            Some(a) => format!(
                "open outbound TCP {} (and the partner's other targets) from this host in the DMZ firewall: it drops the connection silently",
                a.addr
            ),
            None => match attempts.first() {
                Some(a) => match &a.result {
                    Err(ConnectFailure::Refused) => format!(
                        "nothing accepts TCP on {}: the partner's server is down or its SRV/route is wrong (check [partner {domain}] route), or a firewall rejects port {}",
                        a.addr,
                        a.addr.port()
                    ),
                    Err(e) => e.advice(a.addr, "the partner's server"),
                    Ok(()) => String::new(),
                },
                None => String::new(),
            },
        };
        Finding::fail(
            "partner.reachable",
            domain.clone(),
            format!("no target opens: {}", shown.join("; ")),
            fix,
        )
    }
}
