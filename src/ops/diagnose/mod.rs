//! `xsgw diagnose`: finds the classic deployment mistakes, on the DMZ host, with or without a
//! running xsgw. One finding per line (`ok|warn|fail  <id>  <what was found>`, and a `fix:`
//! line for warn/fail) or one JSON object per line; exit 0 when nothing failed, 1 otherwise.
//!
//! ```text
//!  config ── xsgw check's two stages ─┬─ config, fqdn.hostname, cert.names, cert.expiry
//!                                     ├─ listen, live ............ local.rs (binds, /proc,
//!                                     │                            xsgw status's control socket)
//!          in parallel, each probe    ├─ dns.hosted-srv ........... dns.rs  (crate::dns)
//!          under a short deadline:    ├─ dns.partner-srv → partner.reachable ... partner.rs
//!                                     ├─ partner.stream (--deep) .. stream.rs (xmpp::outbound)
//!                                     └─ edge.* ................... edge.rs (tls::sip, sip::link)
//!  findings ── report.rs: text or JSON (pure)
//! ```
//!
//! Check ids are stable: scripts and tests depend on them ([`IDS`]). Every network check has
//! a deadline of at most [`PROBE_DEADLINE`] (or the configured, shorter, timeout); the
//! independent probes run at once, so the run takes a few seconds when peers answer and is
//! bounded when they do not. Nothing sent reaches a user: TCP connects, TLS handshakes,
//! SIP OPTIONS to a domain, and with `--deep` an S2S stream that is authenticated and closed
//! without a stanza.

mod dns;
mod edge;
mod local;
mod partner;
mod probe;
pub mod report;
mod stream;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use report::Finding;

use crate::config::{Config, Credentials, Report};
use crate::dns::{resolve_host, Resolver, StaticHosts};

/// Every check id, in the order they are printed.
pub const IDS: [&str; 15] = [
    "config",
    "fqdn.hostname",
    "cert.names",
    "cert.expiry",
    "listen",
    "dns.hosted-srv",
    "dns.partner-srv",
    "partner.reachable",
    "partner.stream",
    "edge.resolve",
    "edge.reachable",
    "edge.mtls",
    "edge.allowed",
    "edge.federation-port",
    "live",
];

/// The longest any single network probe waits (TCP connect, TLS handshake, an answer).
pub const PROBE_DEADLINE: Duration = Duration::from_secs(3);
/// The longest one DNS lookup (A and AAAA together) may take.
const DNS_DEADLINE: Duration = Duration::from_secs(4);

/// What `xsgw diagnose` was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub config: PathBuf,
    pub json: bool,
    /// Check ids or groups (`edge` = every `edge.*`); empty: all.
    pub only: Vec<String>,
    /// Also open an S2S stream to each partner (`partner.stream`).
    pub deep: bool,
}

/// Is `word` a check id or a group of them (`edge`, `dns`, `cert`, `partner`)?
pub fn known_selector(word: &str) -> bool {
    IDS.iter().any(|id| selects(word, id))
}

fn selects(word: &str, id: &str) -> bool {
    id == word
        || id
            .strip_prefix(word)
            .is_some_and(|rest| rest.starts_with('.'))
}

/// What every check needs: the configuration as `xsgw check` reads it, and name resolution
/// as the gateway does it (`[hosts]` first, then DNS).
pub struct Setup {
    pub path: PathBuf,
    pub config: Config,
    /// Both stages' problems.
    pub report: Report,
    pub hosts: StaticHosts,
    pub resolver: Option<Resolver>,
}

impl Setup {
    /// Addresses of `name` as xsgw finds them: an IP literal, `[hosts]`, then A/AAAA.
    pub fn resolve(&self, name: &str) -> Result<Vec<IpAddr>, String> {
        if let Ok(ip) = name.parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        if let Some(addrs) = self.hosts.get(name) {
            return Ok(addrs.to_vec());
        }
        match &self.resolver {
            Some(r) => resolve_host(name, &self.hosts, r).map_err(|e| e.to_string()),
            None => Err(
                "no DNS server configured ([dns] servers empty and /etc/resolv.conf unusable)"
                    .into(),
            ),
        }
    }

    /// The deadline of one probe: the configured timeout, at most [`PROBE_DEADLINE`].
    pub fn deadline(&self, configured: Duration) -> Duration {
        configured.min(PROBE_DEADLINE)
    }
}

/// Runs the checks and prints them; the process exit status.
pub fn diagnose(options: &Options) -> i32 {
    let findings = run(options);
    if options.json {
        print!("{}", report::json(&findings));
    } else {
        print!("{}", report::text(&findings));
    }
    report::exit_status(&findings)
}

fn resolver(config: &Config) -> Option<Resolver> {
    let dns = &config.dns;
    let resolver = if dns.servers.is_empty() {
        Resolver::from_system().ok()?
    } else {
        Resolver::new(dns.servers.clone(), dns.timeout, 2)
    };
    Some(resolver.with_deadline(dns.timeout.saturating_mul(2).min(DNS_DEADLINE)))
}

fn hosts(config: &Config) -> StaticHosts {
    let mut hosts = StaticHosts::new();
    for (name, addrs) in &config.hosts {
        // A bad entry is reported by `config`; the rest still count.
        let _ = hosts.insert(name, addrs);
    }
    hosts
}

/// Every finding selected by `options`, in the order of [`IDS`].
pub fn run(options: &Options) -> Vec<Finding> {
    let wanted = |id: &str| {
        if id == "partner.stream" && !options.deep {
            return options.only.iter().any(|w| w == id);
        }
        options.only.is_empty() || options.only.iter().any(|w| selects(w, id))
    };
    let path: &Path = &options.config;
    let (config, mut report) = match crate::config::load(path) {
        Ok(loaded) => loaded,
        Err(error) => return vec![local::config_unusable(&error, path)],
    };
    let credentials: Option<Credentials> = crate::config::validate(&config, &mut report);
    let setup = Setup {
        path: path.to_path_buf(),
        hosts: hosts(&config),
        resolver: resolver(&config),
        config,
        report,
    };
    let setup = &setup;
    let credentials = credentials.as_ref();

    let mut found: Vec<Finding> = Vec::new();
    if wanted("config") {
        found.push(local::config(&setup.report, &setup.path));
    }
    let want_partners =
        wanted("dns.partner-srv") || wanted("partner.reachable") || wanted("partner.stream");
    let want_edge = IDS.iter().any(|id| id.starts_with("edge.") && wanted(id));
    std::thread::scope(|scope| {
        let edge = want_edge.then(|| scope.spawn(move || edge::checks(setup, credentials)));
        let hosted = wanted("dns.hosted-srv").then(|| scope.spawn(move || dns::hosted_srv(setup)));
        let fqdn =
            wanted("fqdn.hostname").then(|| scope.spawn(move || local::fqdn_hostname(setup)));
        let mut partner_findings = Vec::new();
        if want_partners {
            let (srv, targets) = dns::partner_srv(setup);
            partner_findings.extend(srv);
            let deadline = setup.deadline(setup.config.xmpp.connect_timeout);
            let streams = wanted("partner.stream").then(|| {
                let targets = targets.clone();
                scope.spawn(move || stream::checks(setup, credentials, &targets))
            });
            if wanted("partner.reachable") {
                let attempts = partner::probe_all(&targets, deadline);
                for (p, a) in targets.iter().zip(&attempts) {
                    partner_findings.push(partner::reachable(p, a));
                }
            }
            if let Some(h) = streams {
                partner_findings.extend(h.join().unwrap_or_default());
            }
        }
        if let Some(h) = fqdn {
            found.extend(h.join().ok());
        }
        if wanted("cert.names") || wanted("cert.expiry") {
            found.extend(local::certificates(setup));
        }
        let (sockets, running) = if wanted("listen") || wanted("live") {
            let sockets = local::tcp_sockets();
            let (listen, running) = local::listen(setup, &sockets);
            found.extend(listen);
            (sockets, running)
        } else {
            (Vec::new(), Vec::new())
        };
        if let Some(h) = hosted {
            found.extend(h.join().unwrap_or_default());
        }
        found.extend(partner_findings);
        if let Some(h) = edge {
            found.extend(h.join().unwrap_or_default());
        }
        if wanted("live") {
            let edge_addrs = setup
                .resolve(&setup.config.sip.edge.host)
                .unwrap_or_default();
            // The running gateway's own view when its control socket answers; else /proc.
            let status =
                crate::ops::status::ask(&setup.config.gateway.state_dir, "status live").ok();
            found.push(local::live(
                setup,
                &sockets,
                &running,
                &edge_addrs,
                status.as_deref(),
            ));
        }
    });
    found.retain(|f| wanted(f.id));
    let rank = |id: &str| IDS.iter().position(|i| *i == id).unwrap_or(IDS.len());
    found.sort_by_key(|f| rank(f.id));
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_are_ids_or_groups() {
        assert!(known_selector("edge.mtls"));
        assert!(known_selector("edge"));
        assert!(known_selector("dns"));
        assert!(known_selector("live"));
        assert!(!known_selector("edg"));
        assert!(!known_selector("edge.mtl"));
        assert!(selects("partner", "partner.stream"));
        assert!(!selects("partner.reach", "partner.reachable"));
    }
}
