//! The inbound S2S connection thread: runs an [`InboundSession`] over TCP, then TLS after
//! `<proceed/>`, and hands authenticated stanzas to the router. A peer's `db:result` is
//! verified here, in this thread, on an outbound stream to the claimed domain's
//! authoritative servers (the peer waits for the verdict anyway, and only this stream waits).
//!
//! Before the first domain pair authenticates, the stream is a stranger's: one deadline from
//! accept (`[xmpp] handshake_timeout`, kept by the session) bounds the header, STARTTLS's TLS
//! handshake, every dialback verification and SASL, and every write; reads take only what
//! keeps the session within its 16 KiB pre-authentication buffer. At the first pair the
//! admission ticket moves to the authenticated count (`crate::gateway::admission`). A
//! stream refused at authentication (`max_per_partner`) forwards nothing it sent.

use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::io::{Pipe, ReadOutcome};
use super::{
    decide, outbound, random_id, requirement_enabled, Decision, InboundStanza, S2sContext,
    XmppEvent,
};
use crate::config::{AuthPolicy, Requirement};
use crate::gateway::admission::Ticket;
use crate::gateway::live::Watch;
use crate::gateway::router::RouterEvent;
use crate::gateway::status::{failure, tls_reason, ErrorKind};
use crate::logsafe::{escaped, Suppressed};
use crate::xmpp::error::StreamErrorCondition;
use crate::xmpp::session::{
    CertifiedFor, InboundConfig, InboundSession, PeerDecision, PeerPolicy, SessionEvent, TlsPolicy,
};

/// The read buffer of an inbound stream (before authentication only part of it is used,
/// see `InboundSession::read_limit`).
const READ_BUFFER: usize = 16 * 1024;

/// The read wait when the session has no deadline of its own (it always has one: the
/// handshake or idle timeout); not a poll.
const IDLE_WAIT: Duration = Duration::from_secs(3600);

/// How long the closing stream error may take to write, after any deadline.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// A partner over `max_per_partner` can make this happen at will: two lines a minute per
/// partner domain, the next one counting those suppressed.
fn log_quota(context: &S2sContext, who: &str, remote: &str, max: usize) {
    if let Some(suppressed) = context
        .partner_quota_log
        .allow(&remote.to_owned(), Instant::now())
    {
        log::warn!(
            "{who}: {remote} refused: more than [xmpp] max_per_partner = {max} streams{}",
            Suppressed(suppressed)
        );
    }
}

fn tls_policy(r: Requirement, available: bool) -> TlsPolicy {
    match r {
        _ if !available => TlsPolicy::NotSupported,
        Requirement::Required => TlsPolicy::Required,
        Requirement::Optional => TlsPolicy::Optional,
        Requirement::Disabled => TlsPolicy::NotSupported,
    }
}

/// dialback = required: the partner authenticates every domain pair with dialback, so
/// SASL EXTERNAL is not offered (sasl = required together with it is refused by config
/// validation).
fn sasl_offered(policy: AuthPolicy) -> bool {
    requirement_enabled(policy.sasl) && policy.dialback != Requirement::Required
}

/// sasl = required: certificates only, so dialback is not offered.
fn dialback_offered(policy: AuthPolicy) -> bool {
    requirement_enabled(policy.dialback) && policy.sasl != Requirement::Required
}

fn session_config(
    context: &Arc<S2sContext>,
    peer: SocketAddr,
    tls_available: bool,
) -> InboundConfig {
    // The configuration in force when the stream was accepted; policy decisions below read
    // the one in force when they are made.
    let snapshot = context.config();
    let xmpp = &snapshot.xmpp;
    let mut config = InboundConfig::new(context.hosted.iter().cloned(), context.secret.0.clone());
    config.tls = tls_policy(xmpp.policy.tls, tls_available);
    config.sasl = sasl_offered(xmpp.policy);
    config.dialback = dialback_offered(xmpp.policy);
    config.handshake_timeout = xmpp.handshake_timeout;
    config.idle_timeout = xmpp.idle_timeout;
    config.limits.max_stanza = xmpp.max_stanza;
    let policy_context = Arc::clone(context);
    config.peer_policy = Some(PeerPolicy(Arc::new(move |domain: &str| {
        match decide(&policy_context.config(), domain) {
            Decision::Refuse {
                condition,
                why,
                unreachable,
            } => {
                // `domain` is a validated domainpart (the session checks before asking).
                policy_context.log_refusal(&format!("inbound {peer}"), domain, why);
                if unreachable {
                    PeerDecision::Unreachable(condition)
                } else {
                    PeerDecision::Refuse(condition)
                }
            }
            Decision::Allow { policy, .. } => PeerDecision::Accept {
                tls: tls_policy(policy.tls, tls_available),
                sasl: sasl_offered(policy),
                dialback: dialback_offered(policy),
            },
        }
    })));
    config
}

/// Serves one accepted XMPP connection until it closes; returns how it ended, for the log.
///
/// Everything before the first authenticated domain pair, STARTTLS's handshake and dialback
/// verifications included, happens before `accepted + [xmpp] handshake_timeout` (the
/// session's deadline); `ticket` moves to the authenticated count at that first pair.
pub fn serve_inbound(
    stream: TcpStream,
    peer: SocketAddr,
    conn: crate::gateway::router::ConnId,
    context: &Arc<S2sContext>,
    ticket: &mut Ticket,
    accepted: Instant,
) -> String {
    // The TLS configuration of this connection: a reload changes it for later ones only.
    let tls = context.tls();
    let config = session_config(context, peer, tls.is_some());
    let mut watch = Watch::new(&context.live);
    let mut session = InboundSession::new(config, accepted, Box::new(random_id));
    let mut pipe = Pipe::new(stream);
    let mut buf = vec![0u8; READ_BUFFER];
    let mut out = Vec::new();
    let mut slots = Vec::new();
    let who = format!("xmpp inbound {peer}");
    loop {
        while let Some(event) = session.poll_event() {
            match event {
                SessionEvent::StartTls => {
                    session.poll_transmit(&mut out);
                    if let Err(e) = pipe.write_all(&out) {
                        return format!("write error: {e}");
                    }
                    out.clear();
                    let Some(tls) = &tls else {
                        return "STARTTLS without TLS configuration".into();
                    };
                    let conn = match tls.accept() {
                        Ok(c) => c,
                        Err(e) => return format!("TLS set-up failed: {e}"),
                    };
                    // At most pre_auth_buffer bytes, and within the handshake deadline.
                    let early = session.take_tls_bytes();
                    let deadline = session.handshake_deadline().unwrap_or_else(|| {
                        Instant::now() + context.config().xmpp.handshake_timeout
                    });
                    if let Err(e) = pipe.start_tls(conn, &early, deadline) {
                        let why = e.to_string();
                        failure(
                            &context.events,
                            ErrorKind::XmppTls,
                            tls_reason(e.kind() == std::io::ErrorKind::TimedOut, &why),
                            peer.ip().to_string(),
                            why.clone(),
                        );
                        return format!("TLS handshake failed: {why}");
                    }
                    let certified: Option<CertifiedFor> =
                        match tls.verified_peer(pipe.peer_certificates()) {
                            Ok(cert) => {
                                log::debug!(
                                    "{who}: TLS up, peer certificate names {}",
                                    escaped(&cert.dns_names().join(", "))
                                );
                                Some(Box::new(move |domain: &str| cert.is_valid_for(domain)))
                            }
                            Err(why) => {
                                // `why` may quote the peer's certificate.
                                log::info!("{who}: TLS up; {} (no SASL EXTERNAL)", escaped(&why));
                                None
                            }
                        };
                    session.handle_tls_established(Instant::now(), certified);
                }
                SessionEvent::Authenticated {
                    local,
                    remote,
                    method,
                } => {
                    // One slot per peer domain and stream, however many pairs it has.
                    let counted = slots
                        .iter()
                        .any(|s: &super::PartnerSlot| s.domain == remote);
                    let admitted = counted
                        || match context.partner_slot(&remote) {
                            Some(slot) => {
                                slots.push(slot);
                                true
                            }
                            None => false,
                        };
                    if admitted {
                        ticket.authenticated();
                        pipe.set_write_deadline(None);
                        log::info!(
                            "{who}: {remote} authenticated toward {local} by {method:?} (TLS: {})",
                            pipe.is_tls()
                        );
                        let _ = context
                            .events
                            .send(RouterEvent::Xmpp(XmppEvent::Authenticated {
                                outbound: false,
                                local,
                                remote,
                                method,
                                tls: pipe.is_tls(),
                                peer,
                                conn: Some(conn),
                            }));
                    } else {
                        let max = context.config().xmpp.max_per_partner;
                        log_quota(context, &who, &remote, max);
                        // Also discards what the peer sent after authenticating: nothing
                        // from a refused stream is forwarded.
                        session.close(Some(StreamErrorCondition::PolicyViolation));
                    }
                }
                SessionEvent::VerifyDialback {
                    local,
                    remote,
                    key,
                    stream_id,
                } => {
                    // Flush first: the peer should not wait for our features behind DNS.
                    session.poll_transmit(&mut out);
                    if let Err(e) = pipe.write_all(&out) {
                        return format!("write error: {e}");
                    }
                    out.clear();
                    // Within the handshake deadline for the first pair; a later pair gets
                    // a deadline of its own.
                    let deadline = session.handshake_deadline().unwrap_or_else(|| {
                        Instant::now() + context.config().xmpp.handshake_timeout
                    });
                    let verdict =
                        outbound::verify(context, &local, &remote, &stream_id, &key, deadline);
                    log::info!("{who}: dialback for {remote} → {local}: {verdict:?}");
                    if verdict != crate::xmpp::session::DialbackVerdict::Valid {
                        failure(
                            &context.events,
                            ErrorKind::Auth,
                            "dialback",
                            remote.as_str(),
                            format!("dialback for {remote} → {local}: {verdict:?}"),
                        );
                    }
                    session.handle_dialback_verdict(&local, &remote, verdict);
                }
                SessionEvent::Stanza {
                    local,
                    remote,
                    element,
                } => {
                    let _ =
                        context
                            .events
                            .send(RouterEvent::Xmpp(XmppEvent::Inbound(InboundStanza {
                                local,
                                remote,
                                stanza: element,
                            })));
                }
                SessionEvent::Closed(reason) => {
                    // The last words (a stream error) get a moment even after the deadline.
                    pipe.set_write_deadline(Some(Instant::now() + CLOSE_GRACE));
                    session.poll_transmit(&mut out);
                    let _ = pipe.write_all(&out);
                    pipe.close();
                    return format!("{reason:?}");
                }
                // SessionEvent is exhaustive today; future events are logged, not lost.
                #[allow(unreachable_patterns)]
                other => log::debug!("{who}: {other:?}"),
            }
        }
        // Before authentication a peer that does not read cannot hold us past the deadline.
        pipe.set_write_deadline(session.handshake_deadline());
        session.poll_transmit(&mut out);
        if let Err(e) = pipe.write_all(&out) {
            return format!("write error: {e}");
        }
        out.clear();
        let deadline = session
            .poll_timeout()
            .unwrap_or_else(|| Instant::now() + IDLE_WAIT);
        // Before authentication, only what keeps the session within its small buffer.
        let limit = session.read_limit().min(buf.len());
        match pipe.read(buf.get_mut(..limit).unwrap_or_default(), deadline) {
            Ok(ReadOutcome::Data(n)) => {
                session.handle_input(Instant::now(), buf.get(..n).unwrap_or_default())
            }
            Ok(ReadOutcome::Deadline) => session.handle_timeout(Instant::now()),
            Ok(ReadOutcome::Eof) => {
                // A reload that refuses a domain this stream carries: the router shut our
                // read side down to wake us; close politely with the reason.
                if !slots.is_empty() && watch.changed(&context.live) {
                    let config = context.config();
                    let refused = slots.iter().find_map(|s| match decide(&config, &s.domain) {
                        Decision::Refuse { why, .. } => Some((s.domain.clone(), why)),
                        Decision::Allow { .. } => None,
                    });
                    if let Some((domain, why)) = refused {
                        log::info!(
                            "{who}: closing the stream of {domain}: refused by the reloaded configuration ({why})"
                        );
                        pipe.set_write_deadline(Some(Instant::now() + CLOSE_GRACE));
                        session.close(Some(StreamErrorCondition::PolicyViolation));
                        session.poll_transmit(&mut out);
                        let _ = pipe.write_all(&out);
                        pipe.close();
                        return format!("refused by the reloaded configuration ({why})");
                    }
                }
                pipe.set_write_deadline(Some(Instant::now() + CLOSE_GRACE));
                session.close(None);
                session.poll_transmit(&mut out);
                let _ = pipe.write_all(&out);
                pipe.close();
                return "connection closed".into();
            }
            Err(e) => return format!("read error: {e}"),
        }
    }
}
