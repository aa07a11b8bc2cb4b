//! The inbound S2S connection thread: runs an [`InboundSession`] over TCP, then TLS after
//! `<proceed/>`, and hands authenticated stanzas to the router. A peer's `db:result` is
//! verified here, in this thread, on an outbound stream to the claimed domain's
//! authoritative servers (the peer waits for the verdict anyway, and only this stream waits).

use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::io::{Pipe, ReadOutcome};
use super::{
    decide, outbound, random_id, requirement_enabled, Decision, InboundStanza, S2sContext,
    XmppEvent,
};
use crate::config::{AuthPolicy, Requirement};
use crate::gateway::router::RouterEvent;
use crate::xmpp::error::StreamErrorCondition;
use crate::xmpp::session::{
    CertifiedFor, InboundConfig, InboundSession, PeerDecision, PeerPolicy, SessionEvent, TlsPolicy,
};

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

fn session_config(context: &Arc<S2sContext>, peer: SocketAddr) -> InboundConfig {
    let xmpp = &context.config.xmpp;
    let tls_available = context.tls.is_some();
    let mut config = InboundConfig::new(context.hosted.iter().cloned(), context.secret.0.clone());
    config.tls = tls_policy(xmpp.policy.tls, tls_available);
    config.sasl = sasl_offered(xmpp.policy);
    config.dialback = dialback_offered(xmpp.policy);
    config.handshake_timeout = xmpp.stream_timeout;
    config.idle_timeout = xmpp.idle_timeout;
    config.limits.max_stanza = xmpp.max_stanza;
    let policy_context = Arc::clone(context);
    config.peer_policy = Some(PeerPolicy(Arc::new(move |domain: &str| {
        match decide(&policy_context.config, domain) {
            Decision::Refuse {
                condition,
                why,
                unreachable,
            } => {
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
pub fn serve_inbound(stream: TcpStream, peer: SocketAddr, context: &Arc<S2sContext>) -> String {
    let config = session_config(context, peer);
    let mut session = InboundSession::new(config, Instant::now(), Box::new(random_id));
    let mut pipe = Pipe::new(stream);
    let mut buf = vec![0u8; 16 * 1024];
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
                    let Some(tls) = &context.tls else {
                        return "STARTTLS without TLS configuration".into();
                    };
                    let conn = match tls.accept() {
                        Ok(c) => c,
                        Err(e) => return format!("TLS set-up failed: {e}"),
                    };
                    let early = session.take_tls_bytes();
                    let deadline = Instant::now() + context.config.xmpp.stream_timeout;
                    if let Err(e) = pipe.start_tls(conn, &early, deadline) {
                        return format!("TLS handshake failed: {e}");
                    }
                    let certified: Option<CertifiedFor> =
                        match tls.verified_peer(pipe.peer_certificates()) {
                            Ok(cert) => {
                                log::debug!(
                                    "{who}: TLS up, peer certificate names {:?}",
                                    cert.dns_names()
                                );
                                Some(Box::new(move |domain: &str| cert.is_valid_for(domain)))
                            }
                            Err(why) => {
                                log::info!("{who}: TLS up; {why} (no SASL EXTERNAL)");
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
                            }));
                    } else {
                        log::warn!(
                            "{who}: {remote} refused: more than [xmpp] max_per_partner = {} streams",
                            context.config.xmpp.max_per_partner
                        );
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
                    let verdict = outbound::verify(context, &local, &remote, &stream_id, &key);
                    log::info!("{who}: dialback for {remote} → {local}: {verdict:?}");
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
        session.poll_transmit(&mut out);
        if let Err(e) = pipe.write_all(&out) {
            return format!("write error: {e}");
        }
        out.clear();
        let deadline = session
            .poll_timeout()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
        match pipe.read(&mut buf, deadline) {
            Ok(ReadOutcome::Data(n)) => {
                session.handle_input(Instant::now(), buf.get(..n).unwrap_or_default())
            }
            Ok(ReadOutcome::Deadline) => session.handle_timeout(Instant::now()),
            Ok(ReadOutcome::Eof) => {
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
