//! Checks that need no network peer: `config`, `fqdn.hostname`, `cert.names`, `cert.expiry`,
//! `listen` and `live` (the netstat view of a running xsgw, read from /proc).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use super::probe::is_local_address;
use super::report::Finding;
use super::Setup;
use crate::config::{Report, Requirement, Severity};
use crate::tls::x509::format_date;
use crate::tls::Identity;

/// Certificates expiring within this many days are warned about (as `xsgw check` does).
const EXPIRY_WARNING_DAYS: i64 = 30;

/// Places of `xsgw check` problems that `cert.names` and `cert.expiry` report instead.
const CERT_PLACES: [&str; 4] = ["[sip] cert", "[sip] key", "[xmpp] cert", "[xmpp] key"];
/// The place of `xsgw check`'s "fqdn is not this machine's name" warning.
const FQDN_PLACE: &str = "[gateway] fqdn";

/// `config`: every problem `xsgw check` finds, except those about certificates and the host
/// name, which have their own checks.
pub fn config(report: &Report, path: &Path) -> Finding {
    let mine: Vec<_> = report
        .problems
        .iter()
        .filter(|p| !CERT_PLACES.contains(&p.place.as_str()))
        .filter(|p| !(p.place == FQDN_PLACE && p.severity == Severity::Warning))
        .collect();
    let errors: Vec<_> = mine
        .iter()
        .filter(|p| p.severity == Severity::Error)
        .collect();
    let warnings: Vec<_> = mine
        .iter()
        .filter(|p| p.severity == Severity::Warning)
        .collect();
    let first = |p: &crate::config::Problem| match p.line {
        Some(line) => format!("line {line}: {} {}", p.place, p.message),
        None => format!("{} {}", p.place, p.message).trim().to_string(),
    };
    let fix = format!(
        "run `xsgw check -c {}`: it lists every problem with its line",
        path.display()
    );
    if let Some(e) = errors.first() {
        Finding::fail(
            "config",
            path.display().to_string(),
            format!(
                "{}: {} error(s), {} warning(s); first: {}",
                path.display(),
                errors.len(),
                warnings.len(),
                first(e)
            ),
            fix,
        )
    } else if let Some(w) = warnings.first() {
        Finding::warn(
            "config",
            path.display().to_string(),
            format!(
                "{}: usable, {} warning(s); first: {}",
                path.display(),
                warnings.len(),
                first(w)
            ),
            fix,
        )
    } else {
        Finding::ok(
            "config",
            path.display().to_string(),
            format!("{}: usable, as `xsgw check` says", path.display()),
        )
    }
}

/// A configuration that does not even parse: the one finding of the run.
pub fn config_unusable(error: &crate::config::ConfigError, path: &Path) -> Finding {
    let detail = match error {
        crate::config::ConfigError::Invalid(report) => {
            let first = report.lines().into_iter().next().unwrap_or_default();
            format!("{error}; first: {first}")
        }
        other => other.to_string(),
    };
    Finding::fail(
        "config",
        path.display().to_string(),
        format!("{detail}; no other check can run"),
        format!(
            "run `xsgw check -c {}` and correct each line it names",
            path.display()
        ),
    )
}

/// `fqdn.hostname`: `[gateway] fqdn` is this host's name (from `xsgw check`) and resolves to
/// an address of this host.
pub fn fqdn_hostname(setup: &Setup) -> Finding {
    let fqdn = &setup.config.gateway.fqdn;
    let why = "the Edge routes every partner domain to exactly this name, and its certificate check expects it";
    if let Some(p) = setup
        .report
        .problems
        .iter()
        .find(|p| p.place == FQDN_PLACE && p.severity == Severity::Warning)
    {
        return Finding::warn(
            "fqdn.hostname",
            fqdn.clone(),
            p.message.clone(),
            format!(
                "name this host {fqdn} (hostnamectl set-hostname {fqdn}, or {fqdn} first on its /etc/hosts line) or correct [gateway] fqdn: {why}"
            ),
        );
    }
    match setup.resolve(fqdn) {
        Ok(addrs) if addrs.iter().any(|ip| is_local_address(*ip)) => Finding::ok(
            "fqdn.hostname",
            fqdn.clone(),
            format!(
                "{fqdn} is this host's name and resolves to {} here",
                super::probe::list(&addrs)
            ),
        ),
        Ok(addrs) => Finding::warn(
            "fqdn.hostname",
            fqdn.clone(),
            format!(
                "{fqdn} resolves to {}, none of which is an address of this host",
                super::probe::list(&addrs)
            ),
            format!("make {fqdn} resolve to this host's perimeter address (DNS A record, and /etc/hosts on the Edge): {why}"),
        ),
        Err(e) => Finding::warn(
            "fqdn.hostname",
            fqdn.clone(),
            format!("{fqdn} does not resolve: {e}"),
            format!("add an A record for {fqdn} (this host's perimeter address) where the Edge resolves it: {why}"),
        ),
    }
}

fn now_epoch() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// `cert.names` and `cert.expiry`, for the SIP certificate and (when TLS is used) the XMPP one.
pub fn certificates(setup: &Setup) -> Vec<Finding> {
    let config = &setup.config;
    let fqdn = &config.gateway.fqdn;
    let mut names = Vec::new();
    let mut expiry = Vec::new();
    match Identity::load(&config.sip.cert, &config.sip.key) {
        Ok(sip) => {
            let all = sip.summary.all_names().join(", ");
            let leaf = sip.key.cert.first();
            let sans = leaf.map(crate::tls::names::san_names).unwrap_or_default();
            let in_cn = sip
                .summary
                .common_names
                .iter()
                .any(|cn| cn.eq_ignore_ascii_case(fqdn));
            let get = format!(
                "get a certificate with DNS:{fqdn} in its subjectAltName from the internal CA and set [sip] cert and [sip] key to it"
            );
            if leaf.is_some_and(|leaf| crate::tls::names::names_host(leaf, fqdn)) {
                names.push(Finding::ok(
                    "cert.names",
                    fqdn.clone(),
                    format!(
                        "[sip] cert {} names {all}, including [gateway] fqdn {fqdn}",
                        sip.cert_path.display()
                    ),
                ));
            } else if sans.is_empty() && in_cn {
                names.push(Finding::warn(
                    "cert.names",
                    fqdn.clone(),
                    format!(
                        "[sip] cert {} names {fqdn} only in its CN, without a subjectAltName: peers that follow RFC 6125 never read the CN",
                        sip.cert_path.display()
                    ),
                    get,
                ));
            } else {
                names.push(Finding::fail(
                    "cert.names",
                    fqdn.clone(),
                    format!(
                        "[sip] cert {} names {}, not [gateway] fqdn {fqdn}: the Edge refuses or misroutes us",
                        sip.cert_path.display(),
                        if all.is_empty() { "nothing" } else { &all }
                    ),
                    format!("{get}, or correct [gateway] fqdn if {fqdn} is wrong"),
                ));
            }
            expiry.push(validity("[sip] cert", &sip));
        }
        Err(e) => names.push(Finding::fail(
            "cert.names",
            fqdn.clone(),
            format!("[sip] cert/key cannot be loaded: {e}"),
            "set [sip] cert and [sip] key to the gateway's PEM certificate chain and key",
        )),
    }
    let tls_used = config.xmpp.policy.tls != Requirement::Disabled
        || config
            .partners
            .iter()
            .any(|p| config.policy_for(p).tls != Requirement::Disabled);
    if tls_used {
        let domains = config.gateway.sip_domains.join(", ");
        match Identity::load(&config.xmpp.cert, &config.xmpp.key) {
            Ok(xmpp) => {
                let all = xmpp.summary.all_names().join(", ");
                let unnamed: Vec<&str> = config
                    .gateway
                    .sip_domains
                    .iter()
                    .filter(|d| {
                        !xmpp
                            .key
                            .cert
                            .first()
                            .is_some_and(|leaf| crate::tls::names::names_host(leaf, d))
                    })
                    .map(String::as_str)
                    .collect();
                if unnamed.is_empty() {
                    names.push(Finding::ok(
                        "cert.names",
                        domains.clone(),
                        format!("[xmpp] cert {} names every hosted domain ({all})", xmpp.cert_path.display()),
                    ));
                } else {
                    names.push(Finding::warn(
                        "cert.names",
                        unnamed.join(", "),
                        format!(
                            "[xmpp] cert {} names {all}, not {}: partners that check certificates fall back to dialback or refuse TLS",
                            xmpp.cert_path.display(),
                            unnamed.join(", ")
                        ),
                        format!(
                            "get an XMPP certificate naming {} (SAN) from a CA partners trust, and set [xmpp] cert and key",
                            config.gateway.sip_domains.join(", ")
                        ),
                    ));
                }
                expiry.push(validity("[xmpp] cert", &xmpp));
            }
            Err(e) => names.push(Finding::fail(
                "cert.names",
                domains,
                format!("[xmpp] cert/key cannot be loaded: {e}"),
                "set [xmpp] cert and [xmpp] key to the XMPP certificate chain and key, or tls = disabled everywhere",
            )),
        }
    }
    names.extend(expiry);
    names
}

fn validity(place: &str, identity: &Identity) -> Finding {
    let now = now_epoch();
    let s = &identity.summary;
    let path = identity.cert_path.display();
    let subject = s
        .all_names()
        .first()
        .map(|n| n.to_string())
        .unwrap_or_default();
    let renew = format!("renew {path} ({place}) and restart xsgw");
    if s.not_after < now {
        Finding::fail(
            "cert.expiry",
            subject,
            format!("{place} {path} expired on {}", format_date(s.not_after)),
            renew,
        )
    } else if s.not_before > now {
        Finding::fail(
            "cert.expiry",
            subject,
            format!(
                "{place} {path} is not valid before {}",
                format_date(s.not_before)
            ),
            "check this host's clock (NTP), or the certificate's dates",
        )
    } else if s.not_after - now < EXPIRY_WARNING_DAYS * 86_400 {
        Finding::warn(
            "cert.expiry",
            subject,
            format!(
                "{place} {path} expires on {} ({} days)",
                format_date(s.not_after),
                (s.not_after - now) / 86_400
            ),
            renew,
        )
    } else {
        Finding::ok(
            "cert.expiry",
            subject,
            format!(
                "{place} {path} valid until {} ({} days)",
                format_date(s.not_after),
                (s.not_after - now) / 86_400
            ),
        )
    }
}

/// A process holding a listening socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub pid: u32,
    pub command: String,
}

/// `listen`: each listener can be bound, or is bound by a running xsgw. Returns the findings
/// and the xsgw processes found holding them (for `live`).
pub fn listen(setup: &Setup, sockets: &[Socket]) -> (Vec<Finding>, Vec<Owner>) {
    let config = &setup.config;
    let mut findings = Vec::new();
    let mut running = Vec::new();
    for (place, addr) in [
        ("[xmpp] listen", config.xmpp.listen),
        ("[sip] listen", config.sip.listen),
    ] {
        let subject = addr.to_string();
        match TcpListener::bind(addr) {
            Ok(listener) => {
                drop(listener);
                findings.push(Finding::ok(
                    "listen",
                    subject,
                    format!("{place} {addr} can be bound (nothing listens there now)"),
                ));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                let owner = listening_owner(sockets, addr);
                match owner {
                    Some(o) if o.command == "xsgw" => {
                        findings.push(Finding::ok(
                            "listen",
                            subject,
                            format!("{place} {addr} is bound by the running xsgw (pid {})", o.pid),
                        ));
                        if !running.contains(&o) {
                            running.push(o);
                        }
                    }
                    Some(o) => findings.push(Finding::fail(
                        "listen",
                        subject,
                        format!("{place} {addr} is taken by {} (pid {})", o.command, o.pid),
                        format!("stop {} or change {place}", o.command),
                    )),
                    None => findings.push(Finding::fail(
                        "listen",
                        subject,
                        format!("{place} {addr} is taken by another program"),
                        format!("find it with `ss -ltnp 'sport = :{}'`; stop it or change {place}", addr.port()),
                    )),
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::AddrNotAvailable => {
                findings.push(Finding::fail(
                    "listen",
                    subject,
                    format!("{place} {addr}: {} is not an address of this host", addr.ip()),
                    format!("set {place} to an address of this host (or 0.0.0.0:{})", addr.port()),
                ))
            }
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                findings.push(Finding::fail(
                    "listen",
                    subject,
                    format!("{place} {addr}: permission denied ({e})"),
                    "ports below 1024 need CAP_NET_BIND_SERVICE (the systemd unit grants it); run diagnose as the service user or root",
                ))
            }
            Err(e) => findings.push(Finding::fail(
                "listen",
                subject,
                format!("{place} {addr} cannot be bound: {e}"),
                format!("check {place}"),
            )),
        }
    }
    (findings, running)
}

/// `live`: what the running xsgw holds. From its control socket when it answers (`status`,
/// the answer to `status live`: Edge connection count, pid, one line with the Edge
/// connections, S2S streams and per partner domain the Edge's last request); else the
/// netstat view from /proc.
pub fn live(
    setup: &Setup,
    sockets: &[Socket],
    running: &[Owner],
    edge_addrs: &[IpAddr],
    status: Option<&str>,
) -> Finding {
    let config = &setup.config;
    if let Some(answer) = status {
        let mut fields = answer.trim_end().splitn(3, '\t');
        let (edges, pid, detail) = (fields.next(), fields.next(), fields.next());
        if let (Some(edges), Some(pid), Some(detail)) = (edges, pid, detail) {
            let subject = format!("pid {pid}");
            return if edges == "0" {
                Finding::warn(
                    "live",
                    subject,
                    detail,
                    "xsgw has no connection with the Edge: see its log (`sip outbound` lines) and edge.* above",
                )
            } else {
                Finding::ok("live", subject, detail)
            };
        }
    }
    let Some(xsgw) = running.first() else {
        return Finding::warn(
            "live",
            "",
            format!(
                "xsgw is not running here (no xsgw process listens on {} or {}): no live Edge connection or S2S stream to show",
                config.xmpp.listen, config.sip.listen
            ),
            "start xsgw (systemctl start xsgw) and run diagnose again to see its connections (or run `xsgw status`)",
        );
    };
    let inodes = socket_inodes(xsgw.pid);
    let mut edge = Vec::new();
    let mut s2s_in = Vec::new();
    let mut s2s_out = Vec::new();
    for s in sockets
        .iter()
        .filter(|s| s.state == ESTABLISHED && inodes.contains(&s.inode))
    {
        if s.local.port() == config.sip.listen.port() {
            edge.push(format!("in from {}", s.remote));
        } else if s.remote.port() == config.sip.edge.port
            && (edge_addrs.is_empty() || edge_addrs.contains(&s.remote.ip()))
        {
            edge.push(format!("out to {}", s.remote));
        } else if s.local.port() == config.xmpp.listen.port() {
            s2s_in.push(s.remote.to_string());
        } else {
            s2s_out.push(s.remote.to_string());
        }
    }
    let or_none = |v: &[String]| {
        if v.is_empty() {
            "none".to_string()
        } else {
            v.join(", ")
        }
    };
    let detail = format!(
        "xsgw pid {}: Edge connections: {}; S2S streams in from: {}; S2S streams out to: {} (its control socket did not answer: run diagnose as the service user or root for the per-partner last Edge request)",
        xsgw.pid,
        or_none(&edge),
        or_none(&s2s_in),
        or_none(&s2s_out)
    );
    if edge.is_empty() {
        Finding::warn(
            "live",
            format!("pid {}", xsgw.pid),
            detail,
            "xsgw has no connection with the Edge: see its log (`sip outbound` lines) and edge.* above",
        )
    } else {
        Finding::ok("live", format!("pid {}", xsgw.pid), detail)
    }
}

/// TCP state numbers of /proc/net/tcp.
const ESTABLISHED: u8 = 0x01;
const LISTEN: u8 = 0x0a;

/// One line of /proc/net/tcp or tcp6.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Socket {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub state: u8,
    pub inode: u64,
}

/// At most this many sockets are read from /proc (a busy host has thousands; xsgw's are few).
const MAX_SOCKETS: usize = 100_000;

/// Every TCP socket of this network namespace.
pub fn tcp_sockets() -> Vec<Socket> {
    let mut out = Vec::new();
    for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
        if let Ok(text) = std::fs::read_to_string(file) {
            out.extend(
                text.lines()
                    .skip(1)
                    .filter_map(parse_proc_tcp_line)
                    .take(MAX_SOCKETS),
            );
        }
    }
    out
}

fn parse_proc_tcp_line(line: &str) -> Option<Socket> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let local = parse_proc_addr(fields.get(1)?)?;
    let remote = parse_proc_addr(fields.get(2)?)?;
    let state = u8::from_str_radix(fields.get(3)?, 16).ok()?;
    let inode = fields.get(9)?.parse().ok()?;
    Some(Socket {
        local,
        remote,
        state,
        inode,
    })
}

/// `0100007F:1F90` (IPv4, host byte order words) or 32 hex digits for IPv6.
fn parse_proc_addr(text: &str) -> Option<SocketAddr> {
    let (ip, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let ip = match ip.len() {
        8 => IpAddr::V4(Ipv4Addr::from(
            u32::from_str_radix(ip, 16).ok()?.swap_bytes(),
        )),
        32 => {
            let mut bytes = [0u8; 16];
            for (i, chunk) in bytes.chunks_mut(4).enumerate() {
                let word = u32::from_str_radix(ip.get(i * 8..i * 8 + 8)?, 16).ok()?;
                chunk.copy_from_slice(&word.swap_bytes().to_be_bytes());
            }
            let v6 = Ipv6Addr::from(bytes);
            v6.to_ipv4_mapped()
                .map(IpAddr::V4)
                .unwrap_or(IpAddr::V6(v6))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// Socket inodes held by `pid` (readable for our own user's processes, or as root).
fn socket_inodes(pid: u32) -> Vec<u64> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .take(MAX_SOCKETS)
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().into_owned();
            l.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
        })
        .collect()
}

/// The process that listens on `addr` (or on the wildcard address with its port).
fn listening_owner(sockets: &[Socket], addr: SocketAddr) -> Option<Owner> {
    let inode = sockets
        .iter()
        .find(|s| {
            s.state == LISTEN
                && s.local.port() == addr.port()
                && (s.local.ip() == addr.ip() || s.local.ip().is_unspecified())
        })?
        .inode;
    let mut by_pid: HashMap<u32, String> = HashMap::new();
    for entry in std::fs::read_dir("/proc").ok()?.filter_map(Result::ok) {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if socket_inodes(pid).contains(&inode) {
            let command = std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .map(|c| c.trim().to_string())
                .unwrap_or_default();
            by_pid.insert(pid, command);
            break;
        }
    }
    by_pid
        .into_iter()
        .next()
        .map(|(pid, command)| Owner { pid, command })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_tcp_lines() {
        let v4 = "   0: 640A007F:1495 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 1 0000000000000000 100 0 0 10 0";
        let s = parse_proc_tcp_line(v4).unwrap();
        assert_eq!(s.local, "127.0.10.100:5269".parse().unwrap());
        assert_eq!(s.state, LISTEN);
        assert_eq!(s.inode, 12345);
        let v6 = "   1: 0000000000000000FFFF00001E0A007F:13C5 0000000000000000FFFF0000640A007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 777 1";
        let s = parse_proc_tcp_line(v6).unwrap();
        assert_eq!(s.local, "127.0.10.30:5061".parse().unwrap());
        assert_eq!(s.remote, "127.0.10.100:54321".parse().unwrap());
        assert_eq!(s.state, ESTABLISHED);
        let v6 = "   2: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 0 0 0 0 0 9 1";
        assert_eq!(
            parse_proc_tcp_line(v6).unwrap().local,
            "[::1]:8080".parse().unwrap()
        );
        assert_eq!(parse_proc_tcp_line("garbage"), None);
    }

    #[test]
    fn our_own_listener_is_found_with_its_process() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let owner = listening_owner(&tcp_sockets(), addr).expect("found in /proc");
        assert_eq!(owner.pid, std::process::id());
    }
}
