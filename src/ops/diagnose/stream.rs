//! `partner.stream` (`--deep`): an S2S stream to each partner, opened and authenticated as
//! the gateway would (the outbound session core `xmpp::outbound`, STARTTLS with the XMPP
//! leg's client configuration `tls::xmpp::XmppTls`, SASL EXTERNAL or dialback as policy
//! says), then closed politely without a stanza: nothing reaches a user.
//!
//! A dialback round trip proves more than the stream: the partner connects back to our
//! `_xmpp-server._tcp` target on 5269 to verify the key, so it also proves that the partner
//! can reach us (the "telnet from outside" check, done by the partner itself). The key is
//! made with the gateway's own dialback secret (read, never created here), so a running xsgw
//! answers that verification; when xsgw is not running, nobody does, and the fix says so.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use super::dns::PartnerTargets;
use super::probe;
use super::report::Finding;
use super::Setup;
use crate::config::{Credentials, Requirement};
use crate::tls::xmpp::XmppTls;
use crate::xmpp::outbound::{
    OutboundClose, OutboundConfig, OutboundEvent, OutboundPurpose, OutboundSession, Want,
};
use crate::xmpp::session::{AuthMethod, DialbackSecret};

/// The longest a stream may take to authenticate (a dialback round trip included).
pub const STREAM_DEADLINE: Duration = Duration::from_secs(8);

fn want(r: Requirement) -> Want {
    match r {
        Requirement::Required => Want::Required,
        Requirement::Optional => Want::Optional,
        Requirement::Disabled => Want::Disabled,
    }
}

/// The gateway's dialback secret when its file is readable; else a random one (a dialback
/// then cannot be verified by anybody: said in the fix).
fn secret(setup: &Setup) -> (String, bool) {
    let path = &setup.config.xmpp.dialback_secret;
    let from_file = std::fs::read(path)
        .ok()
        .filter(|b| b.len() <= 4096)
        .and_then(|b| String::from_utf8(b).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| s.len() >= crate::gateway::state::MIN_SECRET_LEN);
    match from_file {
        Some(s) => (s, true),
        None => {
            let mut b = [0u8; 32];
            use ring::rand::SecureRandom;
            let _ = ring::rand::SystemRandom::new().fill(&mut b);
            (b.iter().map(|x| format!("{x:02x}")).collect(), false)
        }
    }
}

/// One finding per partner; the streams run at once, each bounded by [`STREAM_DEADLINE`].
pub fn checks(
    setup: &Setup,
    credentials: Option<&Credentials>,
    partners: &[PartnerTargets],
) -> Vec<Finding> {
    let tls = credentials.and_then(|c| XmppTls::new(c).ok().flatten());
    let (secret, secret_known) = secret(setup);
    std::thread::scope(|scope| {
        let handles: Vec<_> = partners
            .iter()
            .map(|p| {
                let tls = tls.clone();
                let secret = secret.clone();
                scope.spawn(move || one(setup, tls.as_ref(), &secret, secret_known, p))
            })
            .collect();
        handles.into_iter().filter_map(|h| h.join().ok()).collect()
    })
}

fn one(
    setup: &Setup,
    tls: Option<&XmppTls>,
    secret: &str,
    secret_known: bool,
    partner: &PartnerTargets,
) -> Finding {
    let config = &setup.config;
    let domain = &partner.domain;
    let Some(local) = config.gateway.sip_domains.first().cloned() else {
        return Finding::warn(
            "partner.stream",
            domain.clone(),
            "not tested: no hosted domain",
            "",
        );
    };
    let policy = config
        .partner(domain)
        .map(|p| config.policy_for(p))
        .unwrap_or(config.xmpp.policy);
    let deadline = setup.deadline(config.xmpp.connect_timeout);
    let mut stream = None;
    let mut tried = Vec::new();
    'targets: for t in &partner.targets {
        for ip in t.addrs.iter().take(2) {
            let addr = SocketAddr::new(*ip, t.port);
            match probe::connect(addr, deadline) {
                Ok(s) => {
                    stream = Some((addr, s));
                    break 'targets;
                }
                Err(e) => tried.push(format!("{addr} {e}")),
            }
        }
    }
    let Some((addr, tcp)) = stream else {
        return Finding::warn(
            "partner.stream",
            domain.clone(),
            format!("not tested: no target opens ({})", tried.join("; ")),
            "fix partner.reachable first",
        );
    };
    let session_config = OutboundConfig {
        local: local.clone(),
        remote: domain.clone(),
        tls: want(policy.tls),
        sasl: want(policy.sasl),
        dialback: want(policy.dialback),
        tls_available: tls.is_some(),
        dialback_secret: DialbackSecret(secret.to_string()),
        handshake_timeout: STREAM_DEADLINE.min(config.xmpp.stream_timeout),
        keepalive: config.xmpp.keepalive,
        idle_timeout: config.xmpp.idle_timeout,
        max_queue: 1,
        limits: crate::xmpp::stream::StreamLimits {
            max_stanza: config.xmpp.max_stanza,
            ..Default::default()
        },
    };
    let outcome = drive(tcp, session_config, tls, domain);
    let via = format!("{local} → {domain} via {addr}");
    let callback = format!(
        "the partner must reach _xmpp-server._tcp.{local} on port {} and get its dialback key verified: check dns.hosted-srv, open inbound TCP {} in the DMZ firewall, and run xsgw{}",
        config.xmpp.listen.port(),
        config.xmpp.listen.port(),
        if secret_known {
            String::new()
        } else {
            format!(" (its dialback secret {} does not exist yet)", config.xmpp.dialback_secret.display())
        }
    );
    match outcome {
        Outcome::Authenticated { method, tls, cert } => {
            let how = match method {
                AuthMethod::SaslExternal => "SASL EXTERNAL (certificates)".to_string(),
                AuthMethod::Dialback => format!(
                    "dialback: the partner verified our key, so it reaches us back on {}",
                    config.xmpp.listen.port()
                ),
            };
            Finding::ok(
                "partner.stream",
                domain.clone(),
                format!(
                    "{via}: authenticated by {how}, {}{}",
                    if tls { "over TLS" } else { "without TLS" },
                    cert.map(|c| format!("; {c}")).unwrap_or_default()
                ),
            )
        }
        Outcome::Closed(OutboundClose::HandshakeTimeout) => Finding::fail(
            "partner.stream",
            domain.clone(),
            format!(
                "{via}: not authenticated within {} s",
                STREAM_DEADLINE.as_secs()
            ),
            callback,
        ),
        Outcome::Closed(OutboundClose::Refused(why)) => Finding::fail(
            "partner.stream",
            domain.clone(),
            format!("{via}: refused: {}", crate::logsafe::escaped(&why)),
            if why.contains("dialback") {
                callback
            } else {
                format!("compare [partner {domain}] tls/sasl/dialback with what {domain} requires, and [xmpp] cert with what it trusts")
            },
        ),
        Outcome::Closed(OutboundClose::PeerError(e)) => Finding::fail(
            "partner.stream",
            domain.clone(),
            format!(
                "{via}: the partner ended the stream: {}{}",
                e.condition
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "unknown condition".into()),
                e.text
                    .map(|t| format!(" ({})", crate::logsafe::escaped(&t)))
                    .unwrap_or_default()
            ),
            callback,
        ),
        Outcome::Closed(other) => Finding::fail(
            "partner.stream",
            domain.clone(),
            format!("{via}: stream ended before authentication: {other:?}"),
            "see the partner's answer in `xsgw run` debug logs",
        ),
        Outcome::Failed(why) => Finding::fail(
            "partner.stream",
            domain.clone(),
            format!("{via}: {why}"),
            format!(
                "check [xmpp] cert and [xmpp] ca against {domain}'s certificate and TLS settings"
            ),
        ),
    }
}

enum Outcome {
    Authenticated {
        method: AuthMethod,
        tls: bool,
        cert: Option<String>,
    },
    Closed(OutboundClose),
    Failed(String),
}

/// Runs the session until it is authenticated or over, then closes politely.
fn drive(
    mut tcp: TcpStream,
    config: OutboundConfig,
    tls: Option<&XmppTls>,
    remote: &str,
) -> Outcome {
    let started = Instant::now();
    let until = started + config.handshake_timeout + Duration::from_secs(1);
    let mut session = OutboundSession::new(config, OutboundPurpose::Stanzas, started);
    let mut conn: Option<rustls::ClientConnection> = None;
    let mut cert_note = None;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    let outcome = 'run: loop {
        while let Some(event) = session.poll_event() {
            match event {
                OutboundEvent::StartTls => {
                    if let Err(e) = write(&mut tcp, conn.as_mut(), &mut session, &mut out) {
                        break 'run Outcome::Failed(e);
                    }
                    let Some(tls) = tls else {
                        break 'run Outcome::Failed("STARTTLS without [xmpp] cert".into());
                    };
                    let mut c = match tls.connect(remote) {
                        Ok(c) => c,
                        Err(e) => break 'run Outcome::Failed(format!("TLS: {e}")),
                    };
                    let early = session.take_tls_bytes();
                    let mut rest = &early[..];
                    while !rest.is_empty() {
                        if c.read_tls(&mut rest).is_err() || c.process_new_packets().is_err() {
                            break 'run Outcome::Failed("TLS handshake failed".into());
                        }
                    }
                    while c.is_handshaking() {
                        let left = until.saturating_duration_since(Instant::now());
                        if left.is_zero() {
                            break 'run Outcome::Failed(
                                "TLS handshake not completed in time".into(),
                            );
                        }
                        let _ = tcp.set_read_timeout(Some(left));
                        if let Err(e) = c.complete_io(&mut tcp) {
                            let _ = c.write_tls(&mut tcp);
                            break 'run Outcome::Failed(format!(
                                "TLS handshake with {remote} failed: {e}"
                            ));
                        }
                    }
                    let valid = tls.verify_server(c.peer_certificates(), remote);
                    cert_note = Some(match &valid {
                        Ok(()) => format!(
                            "its certificate is valid for {remote} ({})",
                            c.protocol_version()
                                .map(|v| format!("{v:?}"))
                                .unwrap_or_default()
                        ),
                        Err(why) => format!("{why} (dialback only)"),
                    });
                    conn = Some(c);
                    session.handle_tls_established(Instant::now(), valid.is_ok());
                }
                OutboundEvent::Authenticated { method, tls } => {
                    break 'run Outcome::Authenticated {
                        method,
                        tls,
                        cert: cert_note.clone(),
                    }
                }
                OutboundEvent::Closed(why) => break 'run Outcome::Closed(why),
                OutboundEvent::Verified(_) => {}
            }
        }
        if let Err(e) = write(&mut tcp, conn.as_mut(), &mut session, &mut out) {
            break Outcome::Failed(e);
        }
        let now = Instant::now();
        if now >= until {
            break Outcome::Closed(OutboundClose::HandshakeTimeout);
        }
        let wake = session.poll_timeout().unwrap_or(until).min(until);
        let left = wake
            .saturating_duration_since(now)
            .max(Duration::from_millis(10));
        let _ = tcp.set_read_timeout(Some(left));
        match read(&mut tcp, conn.as_mut(), &mut buf) {
            Ok(Some(0)) => {
                session.handle_input(Instant::now(), &[]);
                break Outcome::Closed(OutboundClose::PeerClosed);
            }
            Ok(Some(n)) => session.handle_input(Instant::now(), &buf[..n]),
            Ok(None) => session.handle_timeout(Instant::now()),
            Err(e) => break Outcome::Failed(e),
        }
    };
    // Politely: </stream:stream>, close_notify, then the socket.
    session.close();
    let _ = write(&mut tcp, conn.as_mut(), &mut session, &mut out);
    if let Some(c) = conn.as_mut() {
        c.send_close_notify();
        let _ = c.write_tls(&mut tcp);
    }
    let _ = tcp.shutdown(Shutdown::Both);
    outcome
}

fn write(
    tcp: &mut TcpStream,
    conn: Option<&mut rustls::ClientConnection>,
    session: &mut OutboundSession,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    out.clear();
    session.poll_transmit(out);
    if out.is_empty() {
        return Ok(());
    }
    match conn {
        None => tcp.write_all(out).map_err(|e| format!("write: {e}")),
        Some(c) => {
            c.writer()
                .write_all(out)
                .map_err(|e| format!("write: {e}"))?;
            while c.wants_write() {
                c.write_tls(tcp).map_err(|e| format!("write: {e}"))?;
            }
            Ok(())
        }
    }
}

/// `Some(n)` bytes read (0: closed), `None` at the deadline.
fn read(
    tcp: &mut TcpStream,
    conn: Option<&mut rustls::ClientConnection>,
    buf: &mut [u8],
) -> Result<Option<usize>, String> {
    let timeout = |e: &std::io::Error| {
        matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        )
    };
    let Some(c) = conn else {
        return match tcp.read(buf) {
            Ok(n) => Ok(Some(n)),
            Err(e) if timeout(&e) => Ok(None),
            Err(e) => Err(format!("read: {e}")),
        };
    };
    loop {
        match c.reader().read(buf) {
            Ok(n) => return Ok(Some(n)),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => return Ok(Some(0)),
        }
        match c.read_tls(tcp) {
            Ok(0) => return Ok(Some(0)),
            Ok(_) => c
                .process_new_packets()
                .map(drop)
                .map_err(|e| format!("TLS: {e}"))?,
            Err(e) if timeout(&e) => return Ok(None),
            Err(e) => return Err(format!("read: {e}")),
        }
    }
}
