//! The Edge checks: `edge.resolve`, `edge.reachable`, `edge.mtls`, `edge.allowed`,
//! `edge.federation-port`.
//!
//! ```text
//!  [sip] edge host ─ [hosts] first, then DNS ─ classify (loopback/private ok, public fail)
//!   └─ TCP to each address in turn (one attempt each, short deadline) ─ first that opens
//!      └─ TLS with the SIP leg's own client configuration (tls::sip::sip_client_config)
//!         ├─ ok ───────────────▶ OPTIONS sip:<hosted domain> From sip:xsgw-diagnose@<partner>
//!         ├─ wrong name only ──▶ again with a chain-only verifier: who is this? then OPTIONS
//!         └─ other failure ────▶ named (CA, version/cipher, not TLS at all)
//!  OPTIONS answer: 2xx allowed · 403 allow list lacks our FQDN · 401/407 internal interface
//! ```
//!
//! Only OPTIONS is sent, to a domain (no user): nothing reaches a SIP user. The result of each
//! exchange is first an [`EdgeProbe`]; the findings are derived from it by pure functions.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;

use super::probe::{self, AddrClass, ConnectFailure};
use super::report::Finding;
use super::Setup;
use crate::config::Credentials;
use crate::sip::frame::{FrameConfig, KeepaliveRole};
use crate::sip::link::{Link, LinkConfig, LinkEvent};
use crate::sip::message::Limits;
use crate::sip::{MessageBuilder, Method, Uri};

/// At most this many of the Edge's addresses are tried.
const MAX_EDGE_ADDRS: usize = 4;
/// At most this many names of the Edge's certificate are shown.
const MAX_NAMES_SHOWN: usize = 8;
/// The local part of the OPTIONS sender: no user has it.
const PROBE_USER: &str = "xsgw-diagnose";

/// How the TLS handshake ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handshake {
    /// Completed with the SIP leg's configuration.
    Ok,
    /// The Edge's certificate chains to `[sip] ca` but names neither the edge host nor
    /// `[sip] edge_names`; `names` were found on a second, chain-only handshake.
    WrongName,
    /// Not issued by `[sip] ca`.
    UnknownIssuer,
    /// Its key is none of `[sip] edge_pin` (the reason as the SIP leg says it).
    NotPinned(String),
    /// A TLS version or cipher suite mismatch (as named by rustls or the Edge's alert).
    Incompatible(String),
    /// The Edge sent an alert during the handshake (it refused us).
    Alert(String),
    /// The port answered something that is not TLS, closed at once, or said nothing.
    NotTls(String),
    /// Anything else.
    Other(String),
}

/// What the Edge answered to the OPTIONS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// A final response.
    Response {
        code: u16,
        reason: String,
        /// The schemes of WWW-Authenticate / Proxy-Authenticate, if any.
        challenge: Vec<String>,
    },
    /// A TLS alert after the handshake (TLS 1.3: our certificate refused).
    Alert(String),
    /// The connection closed before an answer.
    Closed,
    /// No final answer before the deadline.
    Silent(Duration),
    /// The request could not be sent or the answer not read.
    Error(String),
}

/// Everything learnt on one Edge address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeProbe {
    pub addr: SocketAddr,
    pub handshake: Handshake,
    /// Names on the Edge's certificate (when the handshake got that far).
    pub names: Vec<String>,
    /// `TLSv1_3 TLS13_AES_256_GCM_SHA384`.
    pub tls: String,
    /// `None` when no OPTIONS was sent.
    pub answer: Option<Answer>,
}

/// The five Edge findings.
pub fn checks(setup: &Setup, credentials: Option<&Credentials>) -> Vec<Finding> {
    let config = &setup.config;
    let edge = &config.sip.edge;
    let subject = edge.to_string();
    let (resolve, addrs) = resolve(setup);
    let mut out = vec![resolve];
    let untested = |id: &'static str, why: &str| {
        Finding::warn(
            id,
            subject.clone(),
            format!("not tested: {why}"),
            "fix the failures above first",
        )
    };
    // A public address is only classified: xsgw must never reach the Edge that way, and
    // diagnose sends nothing there (no handshake with whoever answers on the Internet).
    let perimeter: Vec<IpAddr> = addrs
        .iter()
        .copied()
        .filter(|ip| matches!(AddrClass::of(*ip), AddrClass::Loopback | AddrClass::Private))
        .collect();
    if perimeter.is_empty() {
        let why = if addrs.is_empty() {
            "the Edge's name does not resolve"
        } else {
            "the Edge's name resolves to no perimeter address (see edge.resolve); public addresses are not probed"
        };
        for id in [
            "edge.reachable",
            "edge.mtls",
            "edge.allowed",
            "edge.federation-port",
        ] {
            out.push(untested(id, why));
        }
        return out;
    }
    let addrs = perimeter;
    let deadline = setup.deadline(config.sip.connect_timeout);
    let mut failures = Vec::new();
    let mut opened = None;
    for ip in addrs.iter().take(MAX_EDGE_ADDRS) {
        let addr = SocketAddr::new(*ip, edge.port);
        match probe::connect(addr, deadline) {
            Ok(stream) => {
                opened = Some((addr, stream));
                break;
            }
            Err(e) => failures.push((addr, e)),
        }
    }
    let Some((addr, stream)) = opened else {
        out.push(unreachable(setup, &failures));
        for id in ["edge.mtls", "edge.allowed", "edge.federation-port"] {
            out.push(untested(id, "no TCP connection to the Edge"));
        }
        return out;
    };
    let mut detail = format!("TCP to {addr} opens");
    if !failures.is_empty() {
        let tried: Vec<String> = failures.iter().map(|(a, e)| format!("{a} {e}")).collect();
        detail.push_str(&format!(" (before it: {})", tried.join("; ")));
    }
    out.push(Finding::ok("edge.reachable", subject.clone(), detail));
    let Some(credentials) = credentials else {
        for id in ["edge.mtls", "edge.allowed", "edge.federation-port"] {
            out.push(untested(
                id,
                "[sip] cert, key or ca cannot be loaded (see config and cert.names)",
            ));
        }
        return out;
    };
    let result = exchange(setup, credentials, addr, stream, deadline);
    out.extend(judge(setup, &result));
    out
}

/// `edge.resolve` and the addresses to try.
fn resolve(setup: &Setup) -> (Finding, Vec<IpAddr>) {
    let config = &setup.config;
    let host = &config.sip.edge.host;
    let subject = host.clone();
    let from_hosts = setup.hosts.get(host).is_some();
    let literal = host.parse::<IpAddr>().is_ok();
    let addrs = match setup.resolve(host) {
        Ok(a) => a,
        Err(e) => {
            return (
                Finding::fail(
                    "edge.resolve",
                    subject,
                    format!("{host} does not resolve: {e}"),
                    format!("add `{host} = <the Edge's perimeter address>` to [hosts]"),
                ),
                Vec::new(),
            )
        }
    };
    let classes: Vec<String> = addrs
        .iter()
        .map(|ip| format!("{ip} ({})", AddrClass::of(*ip).as_str()))
        .collect();
    let source = if literal {
        "an address in [sip] edge"
    } else if from_hosts {
        "from [hosts]"
    } else {
        "from DNS"
    };
    let public: Vec<&IpAddr> = addrs
        .iter()
        .filter(|ip| matches!(AddrClass::of(**ip), AddrClass::Public | AddrClass::Unusable))
        .collect();
    let finding = if !public.is_empty() {
        Finding::fail(
            "edge.resolve",
            subject,
            format!(
                "{host} resolves to {} {source}: {} is not a perimeter address (the Edge's public side, or a missing hosts entry)",
                classes.join(", "),
                probe::list(&public)
            ),
            if from_hosts {
                format!("[hosts]: set `{host} = <the Edge's perimeter address>` (its federation interface on the DMZ side), not its public address")
            } else {
                format!("add `{host} = <the Edge's perimeter address>` to [hosts], so xsgw reaches the Edge on its federation interface inside the perimeter")
            },
        )
    } else if !from_hosts && !literal {
        Finding::warn(
            "edge.resolve",
            subject,
            format!("{host} resolves to {} {source}, not from [hosts]", classes.join(", ")),
            format!("add `{host} = {}` to [hosts] so the Edge is found even when DNS answers differently", probe::list(&addrs)),
        )
    } else {
        Finding::ok(
            "edge.resolve",
            subject,
            format!("{host} resolves to {} {source}", classes.join(", ")),
        )
    };
    (finding, addrs)
}

fn unreachable(setup: &Setup, failures: &[(SocketAddr, ConnectFailure)]) -> Finding {
    let edge = &setup.config.sip.edge;
    let tried: Vec<String> = failures.iter().map(|(a, e)| format!("{a} {e}")).collect();
    let detail = format!("no TCP connection to the Edge {edge}: {}", tried.join("; "));
    let all_refused = failures
        .iter()
        .all(|(_, e)| matches!(e, ConnectFailure::Refused));
    let fix = match failures.first() {
        Some(_) if all_refused => format!(
            "nothing listens on port {}: set [sip] edge to the Edge's federation listener (host:5061 on the perimeter side), or start it",
            edge.port
        ),
        Some((addr, e)) => e.advice(*addr, "the Edge"),
        None => "check [sip] edge".into(),
    };
    Finding::fail("edge.reachable", edge.to_string(), detail, fix)
}

/// TLS with the SIP leg's configuration on `stream`, then (again with a chain-only verifier
/// when only the name was wrong) one OPTIONS.
fn exchange(
    setup: &Setup,
    credentials: &Credentials,
    addr: SocketAddr,
    stream: TcpStream,
    deadline: Duration,
) -> EdgeProbe {
    let config = &setup.config;
    let host = config.sip.edge.host.clone();
    let mut result = EdgeProbe {
        addr,
        handshake: Handshake::Ok,
        names: Vec::new(),
        tls: String::new(),
        answer: None,
    };
    let client = match crate::tls::sip::sip_client_config(credentials, &config.sip) {
        Ok(c) => c,
        Err(e) => {
            result.handshake = Handshake::Other(format!("TLS set-up: {e}"));
            return result;
        }
    };
    let (handshake, conn) = handshake(client, &host, stream, deadline);
    result.handshake = handshake;
    let conn = match (&result.handshake, conn) {
        (Handshake::Ok, Some(conn)) => conn,
        (Handshake::WrongName, _) => {
            let Ok(stream) = probe::connect(addr, deadline) else {
                return result;
            };
            match handshake_chain_only(credentials, &host, stream, deadline) {
                (Handshake::Ok, Some(conn)) => conn,
                _ => return result,
            }
        }
        _ => return result,
    };
    let (mut tls, mut tcp) = conn;
    if let Some(leaf) = tls.peer_certificates().and_then(|c| c.first()) {
        if let Ok(summary) = crate::tls::x509::summarize(leaf) {
            // A certificate may carry many names; a handful tells who this is.
            result.names = summary
                .all_names()
                .iter()
                .take(MAX_NAMES_SHOWN)
                .map(|s| s.to_string())
                .collect();
        }
    }
    result.tls = format!(
        "{} {}",
        tls.protocol_version()
            .map(|v| format!("{v:?}"))
            .unwrap_or_default(),
        tls.negotiated_cipher_suite()
            .map(|s| format!("{:?}", s.suite()))
            .unwrap_or_default()
    );
    result.answer = Some(options(setup, &mut tls, &mut tcp, deadline));
    let _ = tcp.shutdown(std::net::Shutdown::Both);
    result
}

type Conn = (rustls::ClientConnection, TcpStream);

fn handshake(
    client: Arc<rustls::ClientConfig>,
    host: &str,
    mut tcp: TcpStream,
    deadline: Duration,
) -> (Handshake, Option<Conn>) {
    let name = match ServerName::try_from(host.to_owned()) {
        Ok(n) => n,
        Err(e) => return (Handshake::Other(format!("bad name {host}: {e}")), None),
    };
    let mut tls = match rustls::ClientConnection::new(client, name) {
        Ok(t) => t,
        Err(e) => return (Handshake::Other(format!("TLS set-up: {e}")), None),
    };
    let until = Instant::now() + deadline;
    while tls.is_handshaking() {
        if Instant::now() >= until {
            return (
                Handshake::NotTls(format!(
                    "no TLS handshake within {:.1} s",
                    deadline.as_secs_f64()
                )),
                None,
            );
        }
        if let Err(error) = tls.complete_io(&mut tcp) {
            let _ = tls.write_tls(&mut tcp);
            return (classify_handshake_error(&error, deadline), None);
        }
    }
    (Handshake::Ok, Some((tls, tcp)))
}

fn classify_handshake_error(error: &std::io::Error, deadline: Duration) -> Handshake {
    use rustls::{AlertDescription as A, CertificateError as C, Error as E};
    let inner = error.get_ref().and_then(|e| e.downcast_ref::<E>());
    match inner.and_then(crate::tls::names::EdgeCertError::from_rustls) {
        Some(crate::tls::names::EdgeCertError::NotNamed { .. }) => return Handshake::WrongName,
        Some(pin @ crate::tls::names::EdgeCertError::NotPinned { .. }) => {
            return Handshake::NotPinned(pin.to_string())
        }
        _ => {}
    }
    match inner {
        Some(E::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. })) => {
            Handshake::WrongName
        }
        Some(E::InvalidCertificate(C::UnknownIssuer | C::BadSignature)) => Handshake::UnknownIssuer,
        Some(E::AlertReceived(alert @ (A::ProtocolVersion | A::InsufficientSecurity))) => {
            Handshake::Incompatible(format!("the Edge answered alert {alert:?}: no TLS version or cipher suite in common (xsgw offers TLS 1.2 and 1.3 with AEAD suites)"))
        }
        Some(E::AlertReceived(A::HandshakeFailure)) => Handshake::Incompatible(
            "the Edge answered alert HandshakeFailure: no cipher suite or signature scheme in common, or it refused our certificate".into(),
        ),
        Some(E::AlertReceived(alert)) => Handshake::Alert(format!("{alert:?}")),
        Some(E::PeerIncompatible(why)) => Handshake::Incompatible(format!("{why:?}")),
        Some(E::InvalidMessage(why)) => {
            Handshake::NotTls(format!("the port answered something that is not TLS ({why:?})"))
        }
        Some(other) => Handshake::Other(other.to_string()),
        None => match error.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => Handshake::NotTls(
                format!("no TLS answer within {:.1} s", deadline.as_secs_f64()),
            ),
            std::io::ErrorKind::UnexpectedEof
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::ConnectionAborted => {
                Handshake::NotTls("the port closed the connection during the TLS handshake".into())
            }
            _ => Handshake::Other(error.to_string()),
        },
    }
}

fn handshake_chain_only(
    credentials: &Credentials,
    host: &str,
    stream: TcpStream,
    deadline: Duration,
) -> (Handshake, Option<Conn>) {
    let config = crate::tls::sip::chain_only_client_config(credentials);
    match config {
        Ok(config) => handshake(config, host, stream, deadline),
        Err(e) => (Handshake::Other(e.to_string()), None),
    }
}

fn random(buf: &mut [u8]) {
    use ring::rand::SecureRandom;
    let _ = ring::rand::SystemRandom::new().fill(buf);
}

fn hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    random(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The domain the OPTIONS appears to come from: the first partner (the Edge's allow list is
/// per partner domain).
fn probe_partner(setup: &Setup) -> String {
    setup
        .config
        .partners
        .first()
        .map(|p| p.domain.clone())
        .unwrap_or_else(|| "xsgw-diagnose.invalid".into())
}

/// One OPTIONS through the SIP link core; its final answer.
fn options(
    setup: &Setup,
    tls: &mut rustls::ClientConnection,
    tcp: &mut TcpStream,
    deadline: Duration,
) -> Answer {
    let config = &setup.config;
    let fqdn = &config.gateway.fqdn;
    let domain = config
        .gateway
        .sip_domains
        .first()
        .cloned()
        .unwrap_or_default();
    let partner = probe_partner(setup);
    let now = Instant::now();
    let link_config = LinkConfig {
        frame: FrameConfig {
            limits: Limits {
                max_message_len: config.sip.max_message,
                max_headers: config.sip.max_headers,
                ..Limits::default()
            },
            keepalive: KeepaliveRole::Client,
        },
        policy: LinkConfig::gateway_policy(),
        keepalive: None,
        via_sent_by: format!("{fqdn}:{}", config.sip.listen.port()),
    };
    let mut link = Link::new(now, link_config, Box::new(random));
    let uri = match Uri::parse(&format!("sip:{domain}")) {
        Ok(u) => u,
        Err(e) => return Answer::Error(format!("sip:{domain}: {e}")),
    };
    let mut request = MessageBuilder::request(&Method::Options, &uri);
    let built = request
        .header(
            "From",
            &format!("<sip:{PROBE_USER}@{partner}>;tag={}", hex(8)),
        )
        .and_then(|b| b.header("To", &format!("<sip:{domain}>")))
        .and_then(|b| b.header("Call-ID", &format!("{}@{fqdn}", hex(12))))
        .and_then(|b| b.header("CSeq", "1 OPTIONS"))
        .and_then(|b| {
            b.header(
                "Contact",
                &format!("<sip:{fqdn}:{};transport=tls>", config.sip.listen.port()),
            )
        })
        .and_then(|b| b.header("Accept", "application/sdp"))
        .and_then(|b| {
            b.header(
                "User-Agent",
                concat!("xsgw/", env!("CARGO_PKG_VERSION"), " diagnose"),
            )
        })
        .map(|_| ());
    if let Err(e) = built {
        return Answer::Error(e.to_string());
    }
    if let Err(e) = link.send_request(now, request) {
        return Answer::Error(e.to_string());
    }
    let until = now + deadline;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        out.clear();
        while link.poll_transmit(&mut out) {}
        if !out.is_empty() {
            if let Err(e) = tls.writer().write_all(&out) {
                return Answer::Error(e.to_string());
            }
        }
        while tls.wants_write() {
            if let Err(e) = tls.write_tls(tcp) {
                return Answer::Error(format!("write: {e}"));
            }
        }
        while let Some(event) = link.poll_event() {
            match event {
                LinkEvent::Response { response, .. } if !response.status.is_provisional() => {
                    let challenge = ["WWW-Authenticate", "Proxy-Authenticate"]
                        .iter()
                        .filter_map(|h| response.header(h))
                        .filter_map(|v| v.split_whitespace().next().map(str::to_string))
                        .collect();
                    return Answer::Response {
                        code: response.status.as_u16(),
                        reason: crate::logsafe::escaped(&response.reason).to_string(),
                        challenge,
                    };
                }
                LinkEvent::ClientFailed { .. } => return Answer::Closed,
                LinkEvent::Closed(e) => return Answer::Error(e.to_string()),
                _ => {}
            }
        }
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Answer::Silent(deadline);
        }
        let _ = tcp.set_read_timeout(Some(left));
        match tls.read_tls(tcp) {
            Ok(0) => return Answer::Closed,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Answer::Silent(deadline)
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Answer::Closed,
            Err(e) => return Answer::Error(e.to_string()),
        }
        match tls.process_new_packets() {
            Ok(_) => {}
            Err(rustls::Error::AlertReceived(alert)) => return Answer::Alert(format!("{alert:?}")),
            Err(e) => return Answer::Error(e.to_string()),
        }
        loop {
            match tls.reader().read(&mut buf) {
                Ok(0) => return Answer::Closed,
                Ok(n) => link.handle_input(Instant::now(), &buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(_) => return Answer::Closed,
            }
        }
    }
}

/// `edge.mtls`, `edge.allowed`, `edge.federation-port` from what one exchange found.
pub fn judge(setup: &Setup, probe: &EdgeProbe) -> Vec<Finding> {
    let config = &setup.config;
    let edge = &config.sip.edge;
    let subject = edge.to_string();
    let fqdn = &config.gateway.fqdn;
    let domain = config
        .gateway
        .sip_domains
        .first()
        .cloned()
        .unwrap_or_default();
    let partner = probe_partner(setup);
    let mut accepted: Vec<String> = vec![edge.host.clone()];
    for name in &config.sip.edge_names {
        if !accepted.contains(name) {
            accepted.push(name.clone());
        }
    }
    let names = if probe.names.is_empty() {
        "no name".to_string()
    } else {
        probe.names.join(", ")
    };
    let internal = "this is the Edge's internal interface; use its federation listener (5061 on the perimeter side)";
    let set_edge = format!(
        "set [sip] edge to the Edge's federation listener ({}:5061 on the perimeter side)",
        edge.host
    );
    let untested = |id: &'static str, why: &str| {
        Finding::warn(
            id,
            subject.clone(),
            format!("not tested: {why}"),
            "fix edge.mtls first",
        )
    };
    let addr = probe.addr;
    let mut out = Vec::new();
    // edge.mtls
    let mtls = match &probe.handshake {
        Handshake::Ok => match &probe.answer {
            Some(Answer::Alert(alert)) => Finding::fail(
                "edge.mtls",
                subject.clone(),
                format!("{addr}: the handshake completed ({}), then the Edge refused our certificate (alert {alert})", probe.tls),
                format!("the Edge must trust the internal CA that issued [sip] cert and accept the name {fqdn}: import that CA on the Edge"),
            ),
            _ => Finding::ok(
                "edge.mtls",
                subject.clone(),
                format!("{addr}: mutual TLS completes ({}); the Edge's certificate names {names} and chains to [sip] ca; the Edge accepts ours", probe.tls),
            ),
        },
        Handshake::WrongName => Finding::fail(
            "edge.mtls",
            subject.clone(),
            format!("{addr}: the Edge's certificate names {names}, not {}", accepted.join(" or ")),
            format!("if {names} is the Edge's federation name, add it to [sip] edge_names; if it is a pool or internal name, [sip] edge points at the internal interface (see edge.federation-port)"),
        ),
        Handshake::NotPinned(why) => Finding::fail(
            "edge.mtls",
            subject.clone(),
            format!("{addr}: {why}"),
            "if the Edge's key was renewed, add the pin of its new key to [sip] edge_pin; otherwise this is not the Edge",
        ),
        Handshake::UnknownIssuer => Finding::fail(
            "edge.mtls",
            subject.clone(),
            format!("{addr}: the Edge's certificate is not issued by the CA in {} ([sip] ca)", config.sip.ca.display()),
            format!("set [sip] ca to the PEM file of the internal CA that issued the Edge's certificate (now {})", config.sip.ca.display()),
        ),
        Handshake::Incompatible(why) => Finding::fail(
            "edge.mtls",
            subject.clone(),
            format!("{addr}: TLS version or cipher mismatch: {why}"),
            "enable TLS 1.2 (or 1.3) with ECDHE and AES-GCM or ChaCha20 suites on the Edge's federation listener",
        ),
        Handshake::Alert(alert) => Finding::fail(
            "edge.mtls",
            subject.clone(),
            format!("{addr}: the Edge refused the handshake (alert {alert})"),
            format!("the Edge must trust the internal CA that issued [sip] cert and accept {fqdn}: import that CA on the Edge"),
        ),
        Handshake::NotTls(why) => Finding::fail(
            "edge.mtls",
            subject.clone(),
            format!("{addr}: {why}"),
            set_edge.clone(),
        ),
        Handshake::Other(why) => Finding::fail(
            "edge.mtls",
            subject.clone(),
            format!("{addr}: TLS handshake failed: {why}"),
            "check [sip] ca, [sip] cert and the Edge's certificate",
        ),
    };
    out.push(mtls);
    // edge.allowed
    let from = format!("sip:{PROBE_USER}@{partner}");
    let allowed = match &probe.answer {
        None => untested("edge.allowed", "no TLS session with the Edge"),
        Some(Answer::Response { code, reason, .. }) if (200..300).contains(code) => Finding::ok(
            "edge.allowed",
            subject.clone(),
            format!("OPTIONS from {from} to sip:{domain} answered {code} {reason}: the Edge accepts federation traffic from {fqdn}"),
        ),
        Some(Answer::Response { code: 401 | 407, .. }) => {
            untested("edge.allowed", "the port asks for authentication (see edge.federation-port)")
        }
        Some(Answer::Response { code: 403, reason, .. }) => Finding::fail(
            "edge.allowed",
            subject.clone(),
            format!("OPTIONS from {from} to sip:{domain} answered 403 {reason}: the Edge does not accept federation traffic from {fqdn}"),
            format!("add {fqdn} to the Edge's allow list: the federated partner entry for {partner} must name exactly {fqdn} (= [gateway] fqdn and the name in [sip] cert) and route {partner} to it"),
        ),
        Some(Answer::Response { code, reason, .. }) => Finding::warn(
            "edge.allowed",
            subject.clone(),
            format!("OPTIONS from {from} to sip:{domain} answered {code} {reason}"),
            format!("expected 2xx: check that the Edge serves SIP domain {domain} and routes federation traffic from {partner} to it"),
        ),
        Some(Answer::Silent(d)) => Finding::warn(
            "edge.allowed",
            subject.clone(),
            format!("OPTIONS to sip:{domain} not answered within {:.1} s", d.as_secs_f64()),
            "see the Edge's log for the OPTIONS from xsgw-diagnose",
        ),
        Some(Answer::Alert(_)) => untested("edge.allowed", "the Edge refused our certificate"),
        Some(Answer::Closed) => Finding::fail(
            "edge.allowed",
            subject.clone(),
            format!("the Edge closed the connection instead of answering OPTIONS from {from}"),
            format!("check that the Edge trusts [sip] cert and lists {fqdn} for partner {partner}; its log says why"),
        ),
        Some(Answer::Error(e)) => Finding::warn(
            "edge.allowed",
            subject.clone(),
            format!("OPTIONS could not be completed: {e}"),
            "run again; see the Edge's log",
        ),
    };
    out.push(allowed);
    // edge.federation-port
    let challenge = match &probe.answer {
        Some(Answer::Response {
            code, challenge, ..
        }) if *code == 401 || *code == 407 || !challenge.is_empty() => Some(format!(
            "it answers {code} asking for {} authentication",
            if challenge.is_empty() {
                "user".to_string()
            } else {
                challenge.join("/")
            }
        )),
        _ => None,
    };
    let pool_name = probe.handshake == Handshake::WrongName;
    let port = match (&probe.handshake, challenge) {
        (Handshake::NotTls(why), _) => Finding::fail(
            "edge.federation-port",
            subject.clone(),
            format!("port {} is not a TLS federation listener: {why}", edge.port),
            set_edge.clone(),
        ),
        (_, Some(asks)) => Finding::fail(
            "edge.federation-port",
            subject.clone(),
            format!(
                "{addr}: {asks}{}: {internal}",
                if pool_name { format!(" and presents a certificate for {names}") } else { String::new() }
            ),
            set_edge.clone(),
        ),
        (Handshake::WrongName, None) => Finding::fail(
            "edge.federation-port",
            subject.clone(),
            format!("{addr} presents a certificate for {names}, not {}: a pool name means {internal}", accepted.join(" or ")),
            format!("{set_edge}; or, if {names} is the Edge's federation name, add it to [sip] edge_names"),
        ),
        (Handshake::Ok, None) if probe.answer.is_some() => Finding::ok(
            "edge.federation-port",
            subject.clone(),
            format!("{addr} answers as a federation listener: mutual TLS with the Edge's name, no authentication asked"),
        ),
        _ => untested("edge.federation-port", "no SIP answer from the port"),
    };
    out.push(port);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::diagnose::report::Status;

    const INI: &str = "[gateway]\nfqdn = gw.contoso.test\nsip_domains = contoso.test\nstate_dir = /tmp/xsgw-diagnose-test\n\n[xmpp]\nlisten = 127.0.10.100:5269\npublic_name = xmpp.contoso.test\ncert = /nonexistent/x.pem\nkey = /nonexistent/x.key\nca = system\n\n[sip]\nlisten = 127.0.10.100:5061\nedge = sip.contoso.test:5061\nedge_names = sip.contoso.test\ncert = /nonexistent/g.pem\nkey = /nonexistent/g.key\nca = /nonexistent/ca.pem\n\n[partner gmail.test]\n";

    fn setup() -> Setup {
        let (config, report) =
            crate::config::parse(INI, std::path::Path::new("t.ini")).expect("test config parses");
        Setup {
            path: "t.ini".into(),
            config,
            report,
            hosts: crate::dns::StaticHosts::new(),
            resolver: None,
        }
    }

    fn probe(handshake: Handshake, answer: Option<Answer>, names: &[&str]) -> EdgeProbe {
        EdgeProbe {
            addr: "127.0.10.30:5061".parse().unwrap(),
            handshake,
            names: names.iter().map(|s| s.to_string()).collect(),
            tls: "TLSv1_3 TLS13_AES_256_GCM_SHA384".into(),
            answer,
        }
    }

    fn response(code: u16, reason: &str, challenge: &[&str]) -> Option<Answer> {
        Some(Answer::Response {
            code,
            reason: reason.into(),
            challenge: challenge.iter().map(|s| s.to_string()).collect(),
        })
    }

    /// (mtls, allowed, federation-port) statuses.
    fn statuses(p: &EdgeProbe) -> (Status, Status, Status, Vec<Finding>) {
        let f = judge(&setup(), p);
        assert_eq!(
            f.iter().map(|f| f.id).collect::<Vec<_>>(),
            ["edge.mtls", "edge.allowed", "edge.federation-port"]
        );
        (f[0].status, f[1].status, f[2].status, f)
    }

    #[test]
    fn a_federation_listener_that_knows_us() {
        let (m, a, p, _) = statuses(&probe(
            Handshake::Ok,
            response(200, "OK", &[]),
            &["sip.contoso.test"],
        ));
        assert_eq!((m, a, p), (Status::Ok, Status::Ok, Status::Ok));
    }

    #[test]
    fn a_403_names_our_fqdn_for_the_allow_list() {
        let (m, a, p, f) = statuses(&probe(
            Handshake::Ok,
            response(403, "Forbidden", &[]),
            &["sip.contoso.test"],
        ));
        assert_eq!((m, a, p), (Status::Ok, Status::Fail, Status::Ok));
        assert!(f[1].fix.contains("gw.contoso.test") && f[1].fix.contains("allow list"));
        assert!(f[1].fix.contains("gmail.test"));
    }

    #[test]
    fn authentication_or_a_pool_certificate_mean_the_internal_interface() {
        for challenge in [&["NTLM", "Kerberos"][..], &["Digest"][..]] {
            let (_, a, p, f) = statuses(&probe(
                Handshake::Ok,
                response(401, "Unauthorized", challenge),
                &["sip.contoso.test"],
            ));
            assert_eq!((a, p), (Status::Warn, Status::Fail));
            assert!(f[2].detail.contains("internal interface"));
            assert!(f[2].detail.contains(challenge[0]));
            assert!(f[2].fix.contains("5061"));
        }
        let (_, _, p, f) = statuses(&probe(
            Handshake::Ok,
            response(407, "Proxy Authentication Required", &[]),
            &["sip.contoso.test"],
        ));
        assert_eq!(p, Status::Fail, "{f:?}");
        let (m, _, p, f) = statuses(&probe(
            Handshake::WrongName,
            response(200, "OK", &[]),
            &["pool01.contoso.test"],
        ));
        assert_eq!((m, p), (Status::Fail, Status::Fail));
        assert!(f[2].detail.contains("pool01.contoso.test"));
        assert!(f[0].fix.contains("[sip] edge_names"));
    }

    #[test]
    fn tls_failures_are_named() {
        let (m, a, p, f) = statuses(&probe(Handshake::UnknownIssuer, None, &[]));
        assert_eq!((m, a, p), (Status::Fail, Status::Warn, Status::Warn));
        assert!(f[0].fix.contains("[sip] ca"));
        let (m, _, p, f) = statuses(&probe(
            Handshake::NotTls("no TLS answer within 3.0 s".into()),
            None,
            &[],
        ));
        assert_eq!((m, p), (Status::Fail, Status::Fail));
        assert!(f[2].fix.contains("federation listener"));
        let (m, _, _, f) = statuses(&probe(
            Handshake::Incompatible("ProtocolVersion".into()),
            None,
            &[],
        ));
        assert_eq!(m, Status::Fail);
        assert!(f[0].detail.contains("version or cipher"));
        // TLS 1.3: the Edge refuses our certificate after the handshake, on the first read.
        let (m, a, _, f) = statuses(&probe(
            Handshake::Ok,
            Some(Answer::Alert("BadCertificate".into())),
            &["sip.contoso.test"],
        ));
        assert_eq!((m, a), (Status::Fail, Status::Warn));
        assert!(f[0].detail.contains("refused our certificate"));
    }
}
