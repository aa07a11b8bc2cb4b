//! Outbound S2S streams: the per-domain-pair thread that carries our stanzas, and the short
//! verification stream an inbound dialback needs (XEP-0220 §2.1.2).
//!
//! Targets come from [`crate::dns::resolve_xmpp_server`] (route override, SRV in RFC 2782
//! order, fallback to the domain on 5269) through [`crate::dns::screen_targets`]: an address
//! a partner's DNS gave in a special-purpose range (loopback, private, ...) or of the Edge is
//! never connected to (unless `[federation] private_addresses = allow`; a route is used as
//! written), and at most [`crate::dns::MAX_CONNECT_ATTEMPTS`] addresses are tried per stream
//! set-up. Each is tried in order with `[xmpp] connect_timeout` while it has a slot under
//! `[xmpp] max_outbound_per_address`, and a target whose connection or set-up fails gives way
//! to the next. Stanzas wait in the thread's bounded channel and the session's bounded queue;
//! when no target works, every one of them is bounced: `remote-server-not-found` when no
//! server answered, the same whether an address was refused by the screen, closed (RST) or
//! silent (only the log tells them apart), `remote-server-timeout` when a server answered but
//! the stream never came up, `resource-constraint` when the addresses were at their cap.
//!
//! Receipts: every write goes through [`flush`], which takes the session's transmit buffer
//! and the receipts of the tracked stanzas in it together, and reports them to the router
//! ([`XmppEvent::Written`], one event per write) only after the write returned `Ok`; when the
//! write fails those stanzas are bounced (`remote-server-timeout`), never resent (some of
//! their bytes may have left). Stanzas never serialized keep their receipts through the
//! queues and resubmission.

use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{Receiver, TryRecvError};

use super::io::{Pipe, ReadOutcome};
use super::limits::{OutboundSlot, OutboundUse};
use super::{decide, Decision, Outgoing, Receipt, S2sContext, XmppEvent, OUTBOUND_POLL};
use crate::config::{AuthPolicy, Requirement};
use crate::dns::{resolve_xmpp_server, screen_targets, srv, AddressPolicy, Target, TargetOrigin};
use crate::gateway::live::Watch;
use crate::gateway::router::RouterEvent;
use crate::gateway::status::{failure, observe, ErrorKind, Observation};
use crate::gateway::Side;
use crate::logsafe::escaped;
use crate::xmpp::element::Element;
use crate::xmpp::error::StanzaErrorCondition;
use crate::xmpp::outbound::{
    OutboundClose, OutboundConfig, OutboundEvent, OutboundPurpose, OutboundSession, Want,
};
use crate::xmpp::session::DialbackVerdict;

fn want(r: Requirement) -> Want {
    match r {
        Requirement::Required => Want::Required,
        Requirement::Optional => Want::Optional,
        Requirement::Disabled => Want::Disabled,
    }
}

fn session_config(
    context: &S2sContext,
    local: &str,
    remote: &str,
    policy: AuthPolicy,
) -> OutboundConfig {
    let snapshot = context.config();
    let xmpp = &snapshot.xmpp;
    let limits = crate::xmpp::stream::StreamLimits {
        max_stanza: xmpp.max_stanza,
        ..Default::default()
    };
    OutboundConfig {
        local: local.to_owned(),
        remote: remote.to_owned(),
        tls: want(policy.tls),
        sasl: want(policy.sasl),
        dialback: want(policy.dialback),
        tls_available: context.tls().is_some(),
        dialback_secret: context.secret.clone(),
        handshake_timeout: xmpp.stream_timeout,
        keepalive: xmpp.keepalive,
        idle_timeout: xmpp.idle_timeout,
        max_queue: super::OUTBOUND_QUEUE,
        limits,
    }
}

/// Where to connect for `remote`, screened: what DNS (or the route) says, without the
/// addresses the policy refuses, within the attempt bounds. Refusals are logged for the
/// operator (rate-limited); the peer only ever sees that nothing answered.
fn targets(context: &S2sContext, remote: &str, route: Option<(String, u16)>) -> Vec<Target> {
    let mut rng = srv::system_random();
    let route = route.as_ref().map(|(h, p)| (h.as_str(), *p));
    let found =
        match resolve_xmpp_server(remote, route, &context.hosts, &context.resolver, &mut rng) {
            Ok(t) => {
                observe(&context.events, Observation::DnsLookup { failed: false });
                t
            }
            Err(e) => {
                observe(&context.events, Observation::DnsLookup { failed: true });
                failure(
                    &context.events,
                    ErrorKind::Dns,
                    "no_server_found",
                    remote,
                    e.to_string(),
                );
                context.log_limited(
                    log::Level::Warn,
                    "no server found",
                    format_args!("xmpp outbound {}: no server found: {e}", escaped(remote)),
                );
                return Vec::new();
            }
        };
    let named = |t: &Target| {
        matches!(
            t.origin,
            TargetOrigin::RouteOverride | TargetOrigin::IpLiteral
        )
    };
    // The Edge's addresses are looked up only when DNS chose something to screen.
    let policy = if found.iter().all(named) {
        AddressPolicy::default()
    } else {
        context.address_policy()
    };
    let screened = screen_targets(found, &policy);
    if let Some(first) = screened.refused.first() {
        let more = screened.refused.len() - 1;
        context.log_limited(
            log::Level::Warn,
            "address refused",
            format_args!(
                "xmpp outbound {}: not connecting to {} ({}): {}{}{}",
                escaped(remote),
                first.addr,
                escaped(&first.host),
                first.why,
                if more > 0 {
                    format!("; {more} more address(es) from its DNS refused")
                } else {
                    String::new()
                },
                if screened.targets.is_empty() {
                    "; nothing left to try"
                } else {
                    ""
                }
            ),
        );
    }
    if screened.dropped > 0 {
        log::debug!(
            "xmpp outbound {}: {} address(es) beyond the attempt bound not tried",
            escaped(remote),
            screened.dropped
        );
    }
    screened.targets
}

/// Runs `session` on `pipe` until it closes or the connection breaks. `queue` feeds stanzas
/// while the stream runs; `on_event` sees every session event but `StartTls`.
fn drive(
    context: &S2sContext,
    pipe: &mut Pipe,
    session: &mut OutboundSession,
    queue: Option<&Receiver<Outgoing>>,
    who: &str,
    on_event: &mut dyn FnMut(&OutboundEvent),
) -> Result<(), String> {
    let mut buf = vec![0u8; 16 * 1024];
    let mut out = Vec::new();
    let remote = session.remote().to_owned();
    // Stale at first: a stanza stream looks at the policy once more when it starts.
    let mut watch = Watch::stale();
    loop {
        if context.stopping() && !session.is_closed() {
            // Shutdown: close politely now rather than wait for the router to wake us.
            session.close();
        } else if queue.is_some() && !session.is_closed() && watch.changed(&context.live) {
            // A reload refused this partner: close; what waits goes back to the router, which
            // refuses it with the new configuration (tracked stanzas get their SIP error).
            if let Decision::Refuse { why, .. } = decide(&context.config(), &remote) {
                log::info!("{who}: closing: refused by the reloaded configuration ({why})");
                session.close();
            }
        }
        while let Some(event) = session.poll_event() {
            if event == OutboundEvent::StartTls {
                flush(context, pipe, session, &mut out)?;
                let Some(tls) = context.tls() else {
                    return Err("STARTTLS without TLS configuration".into());
                };
                let conn = tls.connect(&remote).map_err(|e| format!("TLS: {e}"))?;
                let early = session.take_tls_bytes();
                // Within the session's own handshake deadline (a verification's is what is
                // left of the inbound stream's), never a new one.
                let deadline = session
                    .poll_timeout()
                    .unwrap_or_else(|| Instant::now() + context.config().xmpp.stream_timeout);
                pipe.start_tls(conn, &early, deadline)
                    .map_err(|e| format!("TLS handshake with {remote} failed: {e}"))?;
                let valid = match tls.verify_server(pipe.peer_certificates(), &remote) {
                    Ok(()) => {
                        log::debug!("{who}: TLS up, certificate valid for {remote}");
                        true
                    }
                    Err(why) => {
                        log::info!("{who}: TLS up but {why}: no SASL EXTERNAL, dialback only");
                        false
                    }
                };
                session.handle_tls_established(Instant::now(), valid);
                continue;
            }
            on_event(&event);
            if let OutboundEvent::Closed(_) = event {
                // A failed write here has bounced its tracked stanzas already.
                let _ = flush(context, pipe, session, &mut out);
                return Ok(());
            }
        }
        flush(context, pipe, session, &mut out)?;
        // Woken every OUTBOUND_POLL at least, to see the queue and the stop flag.
        let deadline = session
            .poll_timeout()
            .unwrap_or_else(|| Instant::now() + OUTBOUND_POLL)
            .min(Instant::now() + OUTBOUND_POLL);
        if let Some(queue) = queue {
            loop {
                match queue.try_recv() {
                    Ok((stanza, receipt)) => {
                        if let Err((stanza, receipt)) =
                            session.send_with(Instant::now(), stanza, receipt)
                        {
                            bounce(
                                context,
                                stanza,
                                receipt,
                                StanzaErrorCondition::ResourceConstraint,
                            );
                        }
                    }
                    Err(TryRecvError::Empty) => break,
                    // The router let go of this pair: finish politely.
                    Err(TryRecvError::Disconnected) => {
                        session.close();
                        break;
                    }
                }
            }
            if session.is_closed() {
                // Closed by the drain above: the top of the loop writes and reports it.
                continue;
            }
            flush(context, pipe, session, &mut out)?;
        }
        match pipe.read(&mut buf, deadline) {
            Ok(ReadOutcome::Data(n)) => {
                session.handle_input(Instant::now(), buf.get(..n).unwrap_or_default())
            }
            Ok(ReadOutcome::Deadline) => session.handle_timeout(Instant::now()),
            Ok(ReadOutcome::Eof) => {
                // The peer left, or shutdown woke our read: close our side politely.
                session.close();
                let _ = flush(context, pipe, session, &mut out);
                return Err("connection closed".into());
            }
            Err(e) => return Err(format!("read error: {e}")),
        }
    }
}

/// Writes what the session has to send; reports the tracked stanzas in it as written only
/// when the write succeeded, and bounces them when it failed.
fn flush(
    context: &S2sContext,
    pipe: &mut Pipe,
    session: &mut OutboundSession,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    session.poll_transmit(out);
    // Taken with the buffer: exactly the tracked stanzas whose bytes are in `out`.
    let written = session.take_written();
    let result = pipe.write_all(out);
    out.clear();
    match result {
        Ok(()) => {
            if !written.is_empty() {
                let receipts = written.into_iter().map(|(receipt, _)| receipt).collect();
                let _ = context
                    .events
                    .send(RouterEvent::Xmpp(XmppEvent::Written { receipts }));
            }
            Ok(())
        }
        Err(e) => {
            for (receipt, stanza) in written {
                bounce(
                    context,
                    stanza,
                    Some(receipt),
                    StanzaErrorCondition::RemoteServerTimeout,
                );
            }
            Err(format!("write error: {e}"))
        }
    }
}

/// Why [`connect`] gave no connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unconnected {
    /// The address has `max_outbound_per_address` connections already: not tried.
    Capped,
    /// Refused (RST), unreachable or silent until `connect_timeout`.
    Failed,
}

/// A TCP connection to `addr` within `[xmpp] connect_timeout` (or `limit` when shorter),
/// counted against `max_outbound_per_address` while the slot lives.
fn connect(
    context: &S2sContext,
    addr: SocketAddr,
    what: OutboundUse,
    who: &str,
    limit: Option<std::time::Duration>,
) -> Result<(TcpStream, OutboundSlot), Unconnected> {
    let Some(slot) = context.outbound.address(addr.ip(), what) else {
        context.log_limited(
            log::Level::Warn,
            "max_outbound_per_address",
            format_args!(
                "{who}: {addr} skipped: [xmpp] max_outbound_per_address = {} streams to it already (verifications: half)",
                context.config().xmpp.max_outbound_per_address
            ),
        );
        return Err(Unconnected::Capped);
    };
    let timeout = limit.map_or(context.config().xmpp.connect_timeout, |l| {
        l.min(context.config().xmpp.connect_timeout)
    });
    match TcpStream::connect_timeout(&addr, timeout) {
        Ok(s) => Ok((s, slot)),
        Err(e) => {
            // Says which: refused (closed port), timed out (silent), unreachable.
            context.log_limited(
                log::Level::Info,
                "cannot connect",
                format_args!("{who}: cannot connect to {addr}: {e}"),
            );
            Err(Unconnected::Failed)
        }
    }
}

fn register(context: &S2sContext, socket: &TcpStream, addr: SocketAddr) -> Option<u64> {
    let waker = socket.try_clone().ok()?;
    let id = crate::gateway::router::next_connection_id();
    let _ = context.events.send(RouterEvent::Connected {
        id,
        side: Side::Xmpp,
        peer: addr,
        waker,
    });
    Some(id)
}

fn unregister(context: &S2sContext, id: Option<u64>) {
    if let Some(id) = id {
        let _ = context.events.send(RouterEvent::Disconnected { id });
    }
}

fn bounce(
    context: &S2sContext,
    stanza: Element,
    receipt: Option<Receipt>,
    condition: StanzaErrorCondition,
) {
    let _ = context.events.send(RouterEvent::Xmpp(XmppEvent::Bounce {
        stanza,
        condition,
        receipt,
    }));
}

/// The thread of the outbound stream `local` → `remote`, started by the router with its
/// first stanza in `queue`.
pub fn run(
    context: &Arc<S2sContext>,
    local: &str,
    remote: &str,
    stream: u64,
    queue: Receiver<Outgoing>,
) {
    let who = format!("xmpp outbound {local} → {}", escaped(remote));
    let (policy, route) = match decide(&context.config(), remote) {
        Decision::Allow { policy, route } => (policy, route),
        Decision::Refuse { why, .. } => {
            log::info!("{who}: refused by policy: {why}");
            return finish(
                context,
                local,
                remote,
                stream,
                queue,
                false,
                StanzaErrorCondition::RemoteServerNotFound,
            );
        }
    };
    let mut carried: Vec<Outgoing> = Vec::new();
    let mut answered = false;
    let mut capped = false;
    let mut worked = false;
    'targets: for target in targets(context, remote, route) {
        for addr in target
            .addrs
            .iter()
            .map(|ip| SocketAddr::new(*ip, target.port))
        {
            if context.stopping() {
                break 'targets;
            }
            let (socket, _address_slot) =
                match connect(context, addr, OutboundUse::Stanzas, &who, None) {
                    Ok(connected) => connected,
                    Err(Unconnected::Capped) => {
                        capped = true;
                        continue;
                    }
                    Err(Unconnected::Failed) => continue,
                };
            answered = true;
            let id = register(context, &socket, addr);
            log::info!("{who}: connected to {} ({addr})", target.host);
            let mut pipe = Pipe::new(socket);
            let config = session_config(context, local, remote, policy);
            let mut session =
                OutboundSession::new(config, OutboundPurpose::Stanzas, Instant::now());
            for (stanza, receipt) in carried.drain(..) {
                if let Err((s, r)) = session.send_with(Instant::now(), stanza, receipt) {
                    bounce(context, s, r, StanzaErrorCondition::ResourceConstraint);
                }
            }
            let mut authenticated = false;
            let mut closed = None;
            let result = drive(
                context,
                &mut pipe,
                &mut session,
                Some(&queue),
                &who,
                &mut |event| match event {
                    OutboundEvent::Authenticated { method, tls } => {
                        authenticated = true;
                        log::info!("{who}: authenticated by {method:?} via {addr}");
                        let _ = context
                            .events
                            .send(RouterEvent::Xmpp(XmppEvent::Authenticated {
                                outbound: true,
                                local: local.to_owned(),
                                remote: remote.to_owned(),
                                method: *method,
                                tls: *tls,
                                peer: addr,
                                conn: id,
                            }));
                    }
                    OutboundEvent::Closed(reason) => closed = Some(reason.clone()),
                    _ => {}
                },
            );
            pipe.close();
            unregister(context, id);
            // Serialized but never flushed (drive left early): never on the wire, so they go
            // round again like the unsent ones.
            carried.extend(
                session
                    .take_written()
                    .into_iter()
                    .map(|(receipt, stanza)| (stanza, Some(receipt))),
            );
            carried.extend(session.take_unsent());
            if !authenticated {
                let why = match (&result, &closed) {
                    (Err(e), _) => e.clone(),
                    (Ok(()), Some(reason)) => format!("{reason:?}"),
                    _ => "closed".to_owned(),
                };
                let reason = if why.contains("TLS") {
                    "outbound_tls"
                } else {
                    "outbound_not_authenticated"
                };
                failure(
                    &context.events,
                    ErrorKind::Auth,
                    reason,
                    remote,
                    format!("via {addr}: {why}"),
                );
            }
            match (&result, &closed) {
                (Err(e), _) => log::info!("{who}: stream via {addr} ended: {e}"),
                (Ok(()), Some(reason)) => log::info!("{who}: stream via {addr} closed: {reason:?}"),
                _ => {}
            }
            if authenticated {
                worked = true;
                break 'targets;
            }
            if matches!(closed, Some(OutboundClose::LocalClose)) {
                break 'targets;
            }
        }
    }
    let condition = condition_for(answered, capped);
    for (stanza, receipt) in carried {
        if worked {
            resubmit(context, stanza, receipt);
        } else {
            bounce(context, stanza, receipt, condition);
        }
    }
    finish(context, local, remote, stream, queue, worked, condition);
}

/// The one condition for a failed set-up: a server answered TCP (`remote-server-timeout`),
/// else an address was at its cap (`resource-constraint`), else nothing answered, whether
/// refused by the address screen, closed or silent (`remote-server-not-found`).
fn condition_for(answered: bool, capped: bool) -> StanzaErrorCondition {
    if answered {
        StanzaErrorCondition::RemoteServerTimeout
    } else if capped {
        StanzaErrorCondition::ResourceConstraint
    } else {
        StanzaErrorCondition::RemoteServerNotFound
    }
}

fn resubmit(context: &S2sContext, stanza: Element, receipt: Option<Receipt>) {
    let event = match receipt {
        Some(receipt) => XmppEvent::SendTracked { stanza, receipt },
        None => XmppEvent::Send(stanza),
    };
    let _ = context.events.send(RouterEvent::Xmpp(event));
}

/// Tells the router this thread takes no more stanzas, then hands back what is still queued:
/// resubmitted after a stream that worked (the next one reopens), bounced after a failure.
fn finish(
    context: &S2sContext,
    local: &str,
    remote: &str,
    stream: u64,
    queue: Receiver<Outgoing>,
    worked: bool,
    condition: StanzaErrorCondition,
) {
    let _ = context
        .events
        .send(RouterEvent::Xmpp(XmppEvent::OutboundEnded {
            local: local.to_owned(),
            remote: remote.to_owned(),
            stream,
        }));
    // Ends when the router drops its sender (on OutboundEnded) or at shutdown.
    while let Ok((stanza, receipt)) = queue.recv() {
        if worked {
            resubmit(context, stanza, receipt);
        } else {
            bounce(context, stanza, receipt, condition);
        }
    }
}

/// Most connection attempts (addresses tried) of one dialback verification.
pub const MAX_VERIFY_ATTEMPTS: usize = 4;

/// Asks `remote`'s authoritative servers whether `key` is the one they gave for our inbound
/// stream `stream_id` (we are `local`, the receiving server). Everything happens before
/// `deadline` (the inbound stream's handshake deadline): at most [`MAX_VERIFY_ATTEMPTS`]
/// addresses, each connect and stream limited by what is left.
pub fn verify(
    context: &S2sContext,
    local: &str,
    remote: &str,
    stream_id: &str,
    key: &str,
    deadline: Instant,
) -> DialbackVerdict {
    let who = format!("xmpp dialback verify {local} → {}", escaped(remote));
    let (policy, route) = match decide(&context.config(), remote) {
        Decision::Allow { policy, route } => (policy, route),
        // Never connected to: answered like a domain none of whose servers answers.
        Decision::Refuse {
            unreachable: true, ..
        } => return DialbackVerdict::Error(StanzaErrorCondition::RemoteServerNotFound),
        Decision::Refuse { .. } => {
            return DialbackVerdict::Error(StanzaErrorCondition::NotAllowed);
        }
    };
    let Some(_stream_slot) = context.outbound.stream(OutboundUse::Verification) else {
        context.log_limited(
            log::Level::Warn,
            "max_outbound",
            format_args!(
                "{who}: not started: [xmpp] max_outbound = {} reached (verifications may hold half)",
                context.config().xmpp.max_outbound
            ),
        );
        return DialbackVerdict::Error(StanzaErrorCondition::ResourceConstraint);
    };
    let purpose = OutboundPurpose::Verify {
        stream_id: stream_id.to_owned(),
        key: key.to_owned(),
    };
    let mut answered = false;
    let mut capped = false;
    let mut attempts = 0;
    'targets: for target in targets(context, remote, route) {
        for addr in target
            .addrs
            .iter()
            .map(|ip| SocketAddr::new(*ip, target.port))
        {
            if context.stopping() {
                return DialbackVerdict::Error(StanzaErrorCondition::RemoteServerTimeout);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if attempts >= MAX_VERIFY_ATTEMPTS || left.is_zero() {
                log::info!(
                    "{who}: giving up after {attempts} attempt(s){}",
                    if left.is_zero() {
                        ", deadline passed"
                    } else {
                        ""
                    }
                );
                break 'targets;
            }
            attempts += 1;
            let (socket, _address_slot) =
                match connect(context, addr, OutboundUse::Verification, &who, Some(left)) {
                    Ok(connected) => connected,
                    Err(Unconnected::Capped) => {
                        capped = true;
                        continue;
                    }
                    Err(Unconnected::Failed) => continue,
                };
            answered = true;
            // The partner's TLS policy holds here too; the stream carries no stanza.
            let mut config = session_config(context, local, remote, policy);
            config.sasl = Want::Disabled;
            config.dialback = Want::Optional;
            config.handshake_timeout = deadline
                .saturating_duration_since(Instant::now())
                .max(std::time::Duration::from_millis(1));
            let mut pipe = Pipe::new(socket);
            let mut session = OutboundSession::new(config, purpose.clone(), Instant::now());
            let mut verdict = None;
            let result = drive(context, &mut pipe, &mut session, None, &who, &mut |event| {
                if let OutboundEvent::Verified(valid) = event {
                    verdict = Some(*valid);
                }
            });
            pipe.close();
            match (verdict, result) {
                (Some(true), _) => return DialbackVerdict::Valid,
                (Some(false), _) => return DialbackVerdict::Invalid,
                (None, Err(e)) => log::info!("{who}: via {addr}: {e}"),
                (None, Ok(())) => log::info!("{who}: via {addr}: no answer"),
            }
        }
    }
    DialbackVerdict::Error(condition_for(answered, capped))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::live::{ConfigCell, Live};
    use crate::gateway::s2s::Lifecycle;
    use crate::gateway::threads::ThreadSet;
    use crate::xmpp::element::NS_SERVER;
    use crossbeam_channel::RecvTimeoutError;
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::path::Path;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    /// peer.test's answer to our stream header: dialback only, no TLS.
    const PEER_OPEN: &[u8] = b"<?xml version='1.0'?><stream:stream xmlns='jabber:server' \
        xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' \
        from='peer.test' to='contoso.test' id='s1' version='1.0'>\
        <stream:features><dialback xmlns='urn:xmpp:features:dialback'/></stream:features>";
    const PEER_VALID: &[u8] = b"<db:result from='peer.test' to='contoso.test' type='valid'/>";

    fn context(port: u16) -> (Arc<S2sContext>, Receiver<RouterEvent>) {
        context_with(port, "")
    }

    /// [`context`] with `xmpp` lines added to `[xmpp]`.
    fn context_with(port: u16, xmpp: &str) -> (Arc<S2sContext>, Receiver<RouterEvent>) {
        context_config(
            xmpp,
            &format!("[partner peer.test]\nroute = 127.0.0.1:{port}\n"),
        )
    }

    /// A context for contoso.test with `xmpp` lines in `[xmpp]` and `sections` after `[sip]`.
    fn context_config(xmpp: &str, sections: &str) -> (Arc<S2sContext>, Receiver<RouterEvent>) {
        let text = format!(
            "[gateway]\nfqdn = gw.contoso.test\nsip_domains = contoso.test\n[xmpp]\ntls = optional\n{xmpp}\
             [sip]\nedge = sip.contoso.test:5061\nedge_names = sip.contoso.test\n{sections}"
        );
        context_from_text(&text)
    }

    fn chat(body: &str) -> Element {
        Element::new("message", NS_SERVER)
            .with_attr("from", "u@contoso.test")
            .with_attr("to", "v@peer.test")
            .with_child(Element::new("body", NS_SERVER).with_text(body))
    }

    fn read_until(peer: &mut TcpStream, seen: &mut String, what: &str) {
        let mut buf = [0u8; 4096];
        while !seen.contains(what) {
            let n = peer.read(&mut buf).expect("the gateway writes");
            assert!(n > 0, "closed before {what}: {seen}");
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    }

    /// The router events until `stop` says so (or 5 s pass), the Xmpp ones only.
    fn events_until(
        inbox: &Receiver<RouterEvent>,
        mut stop: impl FnMut(&XmppEvent) -> bool,
    ) -> Vec<XmppEvent> {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut seen = Vec::new();
        loop {
            match inbox.recv_deadline(deadline) {
                Ok(RouterEvent::Xmpp(event)) => {
                    let done = stop(&event);
                    seen.push(event);
                    if done {
                        return seen;
                    }
                }
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                    panic!("no end event; saw {seen:?}")
                }
            }
        }
    }

    #[test]
    fn tracked_stanzas_are_reported_written_after_the_write_and_only_then() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let (context, inbox) = context(listener.local_addr().unwrap().port());
        let (queue, rx) = crossbeam_channel::bounded(8);
        queue.send((chat("tracked"), Some(42))).unwrap();
        queue.send((chat("untracked"), None)).unwrap();
        let thread = {
            let context = Arc::clone(&context);
            std::thread::spawn(move || run(&context, "contoso.test", "peer.test", 1, rx))
        };
        let (mut peer, _) = listener.accept().unwrap();
        peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut seen = String::new();
        read_until(&mut peer, &mut seen, "<stream:stream");
        peer.write_all(PEER_OPEN).unwrap();
        read_until(&mut peer, &mut seen, "</db:result>");
        // Nothing is promised while the stream is not authenticated.
        assert!(!context_saw_written(&inbox), "written before auth");
        peer.write_all(PEER_VALID).unwrap();
        read_until(&mut peer, &mut seen, "<body>untracked</body>");
        let events = events_until(&inbox, |e| matches!(e, XmppEvent::Written { .. }));
        assert!(
            matches!(events.last(), Some(XmppEvent::Written { receipts }) if *receipts == vec![42]),
            "{events:?}"
        );
        // Sent on the ready stream: one more Written, for its own write.
        queue.send((chat("later"), Some(43))).unwrap();
        read_until(&mut peer, &mut seen, "<body>later</body>");
        let events = events_until(&inbox, |e| matches!(e, XmppEvent::Written { .. }));
        assert!(
            matches!(events.last(), Some(XmppEvent::Written { receipts }) if *receipts == vec![43]),
            "{events:?}"
        );
        context.lifecycle.stopping.store(true, Ordering::SeqCst);
        drop(queue);
        thread.join().unwrap();
        let rest: Vec<_> = inbox.try_iter().collect();
        assert!(
            !rest.iter().any(|e| matches!(
                e,
                RouterEvent::Xmpp(XmppEvent::Bounce { .. } | XmppEvent::Written { .. })
            )),
            "{rest:?}"
        );
    }

    fn context_saw_written(inbox: &Receiver<RouterEvent>) -> bool {
        inbox
            .try_iter()
            .any(|e| matches!(e, RouterEvent::Xmpp(XmppEvent::Written { .. })))
    }

    #[test]
    fn no_server_bounces_tracked_stanzas_with_their_receipts() {
        let port = {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let (context, inbox) = context(port);
        let (queue, rx) = crossbeam_channel::bounded(8);
        queue.send((chat("a"), Some(7))).unwrap();
        queue.send((chat("b"), None)).unwrap();
        drop(queue);
        run(&context, "contoso.test", "peer.test", 1, rx);
        let bounced: Vec<_> = inbox
            .try_iter()
            .filter_map(|e| match e {
                RouterEvent::Xmpp(XmppEvent::Bounce {
                    receipt, condition, ..
                }) => Some((receipt, condition)),
                RouterEvent::Xmpp(XmppEvent::Written { .. }) => panic!("written without a server"),
                _ => None,
            })
            .collect();
        assert_eq!(
            bounced,
            vec![
                (Some(7), StanzaErrorCondition::RemoteServerNotFound),
                (None, StanzaErrorCondition::RemoteServerNotFound)
            ]
        );
    }

    fn bounces(inbox: &Receiver<RouterEvent>) -> Vec<(Option<Receipt>, StanzaErrorCondition)> {
        inbox
            .try_iter()
            .filter_map(|e| match e {
                RouterEvent::Xmpp(XmppEvent::Bounce {
                    receipt, condition, ..
                }) => Some((receipt, condition)),
                RouterEvent::Xmpp(XmppEvent::Written { .. }) => panic!("written"),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn an_address_at_its_cap_is_not_connected_and_stanzas_bounce_resource_constraint() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let (context, inbox) = context_with(port, "max_outbound_per_address = 1\n");
        let held = context
            .outbound
            .address("127.0.0.1".parse().unwrap(), OutboundUse::Stanzas)
            .unwrap();
        let (queue, rx) = crossbeam_channel::bounded(8);
        queue.send((chat("a"), Some(9))).unwrap();
        drop(queue);
        run(&context, "contoso.test", "peer.test", 1, rx);
        assert_eq!(
            bounces(&inbox),
            vec![(Some(9), StanzaErrorCondition::ResourceConstraint)]
        );
        assert!(listener.accept().is_err(), "no connection was made");
        // A verification to that address is refused the same way, connecting nowhere.
        let verdict = verify(
            &context,
            "contoso.test",
            "peer.test",
            "id",
            "key",
            Instant::now() + Duration::from_secs(5),
        );
        assert_eq!(
            verdict,
            DialbackVerdict::Error(StanzaErrorCondition::ResourceConstraint)
        );
        assert!(listener.accept().is_err(), "no connection was made");
        drop(held);
        let verdict = std::thread::spawn({
            let context = Arc::clone(&context);
            move || {
                verify(
                    &context,
                    "contoso.test",
                    "peer.test",
                    "id",
                    "key",
                    Instant::now() + Duration::from_secs(5),
                )
            }
        });
        // With the slot given back, the verification connects.
        let deadline = Instant::now() + Duration::from_secs(5);
        let peer = loop {
            match listener.accept() {
                Ok((peer, _)) => break peer,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                Err(e) => panic!("no connection: {e}"),
            }
        };
        drop(peer);
        assert_eq!(
            verdict.join().unwrap(),
            DialbackVerdict::Error(StanzaErrorCondition::RemoteServerTimeout)
        );
    }

    #[test]
    fn over_max_outbound_a_verification_is_not_started() {
        let (context, _inbox) = context_with(9, "max_outbound = 1\n");
        let _held = context.outbound.stream(OutboundUse::Stanzas).unwrap();
        assert_eq!(
            verify(
                &context,
                "contoso.test",
                "peer.test",
                "id",
                "key",
                Instant::now() + Duration::from_secs(5),
            ),
            DialbackVerdict::Error(StanzaErrorCondition::ResourceConstraint)
        );
    }

    #[test]
    fn an_ip_literal_is_answered_like_an_unreachable_domain() {
        let (context, inbox) = context(9);
        assert_eq!(
            verify(
                &context,
                "contoso.test",
                "10.0.0.5",
                "id",
                "key",
                Instant::now() + Duration::from_secs(5),
            ),
            DialbackVerdict::Error(StanzaErrorCondition::RemoteServerNotFound)
        );
        let (queue, rx) = crossbeam_channel::bounded(8);
        queue.send((chat("a"), Some(1))).unwrap();
        drop(queue);
        run(&context, "contoso.test", "127.0.0.1", 1, rx);
        assert_eq!(
            bounces(&inbox),
            vec![(Some(1), StanzaErrorCondition::RemoteServerNotFound)]
        );
    }

    /// SRV for evil.test pointing at 127.0.0.1:`port` (by the additional section too).
    fn evil_dns(port: u16) -> crate::dns::fake_server::FakeDns {
        use crate::dns::fake_server::{self as fake, FakeDns, Reply};
        use hickory_proto::op::ResponseCode;
        use hickory_proto::rr::RecordType;
        FakeDns::start(move |query, _| {
            let mut reply = fake::response(query, ResponseCode::NoError);
            match (fake::qname(query).as_str(), fake::qtype(query)) {
                ("_xmpp-server._tcp.evil.test.", RecordType::SRV) => {
                    reply.add_answer(fake::srv(
                        "_xmpp-server._tcp.evil.test.",
                        0,
                        0,
                        port,
                        "x.evil.test.",
                    ));
                    reply.add_additional(fake::a("x.evil.test.", "127.0.0.1"));
                }
                _ => reply.metadata.response_code = ResponseCode::NXDomain,
            }
            vec![Reply::Message(reply)]
        })
    }

    /// A context from a whole configuration file's text.
    fn context_from_text(text: &str) -> (Arc<S2sContext>, Receiver<RouterEvent>) {
        let config = crate::config::parse(text, Path::new("test.ini"))
            .expect("parses")
            .0;
        let (events, inbox) = crossbeam_channel::unbounded();
        let lifecycle = Lifecycle {
            stopping: Arc::new(AtomicBool::new(false)),
            threads: Arc::new(ThreadSet::default()),
        };
        let context = S2sContext::new(
            Arc::new(ConfigCell::new(Live::without_sip(config, None))),
            "s".into(),
            events,
            lifecycle,
        );
        (Arc::new(context), inbox)
    }

    fn open_context(dns: SocketAddr, private: &str) -> (Arc<S2sContext>, Receiver<RouterEvent>) {
        let text = format!(
            "[gateway]\nfqdn = gw.contoso.test\nsip_domains = contoso.test\n[xmpp]\ntls = optional\n\
             [sip]\nedge = 192.0.2.30:5061\nedge_names = sip.contoso.test\n\
             [federation]\nmode = open\nprivate_addresses = {private}\n[dns]\nservers = {dns}\n"
        );
        context_from_text(&text)
    }

    #[test]
    fn stanzas_to_a_domain_whose_dns_points_at_loopback_bounce_not_found_without_a_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let dns = evil_dns(listener.local_addr().unwrap().port());
        let evil_chat = || {
            Element::new("message", NS_SERVER)
                .with_attr("from", "u@contoso.test")
                .with_attr("to", "v@evil.test")
        };
        let (context, inbox) = open_context(dns.addr, "refuse");
        let (queue, rx) = crossbeam_channel::bounded(8);
        queue.send((evil_chat(), Some(1))).unwrap();
        queue.send((evil_chat(), None)).unwrap();
        drop(queue);
        run(&context, "contoso.test", "evil.test", 1, rx);
        assert_eq!(
            bounces(&inbox),
            vec![
                (Some(1), StanzaErrorCondition::RemoteServerNotFound),
                (None, StanzaErrorCondition::RemoteServerNotFound)
            ]
        );
        assert!(listener.accept().is_err(), "no connection was made");

        // With private_addresses = allow the same DNS answer is connected to.
        let (context, inbox) = open_context(dns.addr, "allow");
        let (queue, rx) = crossbeam_channel::bounded(8);
        queue.send((evil_chat(), Some(2))).unwrap();
        drop(queue);
        let thread = std::thread::spawn(move || run(&context, "contoso.test", "evil.test", 1, rx));
        let deadline = Instant::now() + Duration::from_secs(5);
        let peer = loop {
            match listener.accept() {
                Ok((peer, _)) => break peer,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                Err(e) => panic!("no connection: {e}"),
            }
        };
        drop(peer);
        thread.join().unwrap();
        assert_eq!(
            bounces(&inbox),
            vec![(Some(2), StanzaErrorCondition::RemoteServerTimeout)]
        );
    }

    /// A context whose partner verify.test routes to `route.verify.test:port`, which
    /// `[hosts]` maps to `addrs`.
    fn verify_context(port: u16, addrs: &[&str]) -> Arc<S2sContext> {
        context_config(
            "",
            &format!(
            "[partner verify.test]\nroute = route.verify.test:{port}\n[hosts]\nroute.verify.test = {}\n",
                addrs.join(", ")
            ),
        )
        .0
    }

    /// Listeners on 127.0.0.2.. with one port; `None` if that port is taken somewhere.
    fn listeners(n: u8) -> Option<(u16, Vec<TcpListener>)> {
        let first = TcpListener::bind("127.0.0.2:0").ok()?;
        let port = first.local_addr().ok()?.port();
        let mut all = vec![first];
        for i in 3..2 + n {
            all.push(TcpListener::bind(("127.0.0.".to_owned() + &i.to_string(), port)).ok()?);
        }
        Some((port, all))
    }

    #[test]
    fn a_verification_tries_at_most_four_addresses() {
        let Some((port, servers)) = (0..5).find_map(|_| listeners(6)) else {
            panic!("no free port on 127.0.0.2-7");
        };
        let addrs: Vec<String> = (2..8).map(|i| format!("127.0.0.{i}")).collect();
        let addrs: Vec<&str> = addrs.iter().map(String::as_str).collect();
        let context = verify_context(port, &addrs);
        // Each server accepts and hangs up at once: every address is worth a try.
        let counts = Arc::new(std::sync::Mutex::new(vec![0usize; servers.len()]));
        let stop = Arc::new(AtomicBool::new(false));
        let server = {
            let counts = Arc::clone(&counts);
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                for s in &servers {
                    s.set_nonblocking(true).unwrap();
                }
                while !stop.load(Ordering::SeqCst) {
                    for (i, s) in servers.iter().enumerate() {
                        if let Ok((conn, _)) = s.accept() {
                            counts.lock().unwrap()[i] += 1;
                            drop(conn);
                        }
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
        };
        let verdict = verify(
            &context,
            "contoso.test",
            "verify.test",
            "id1",
            "key",
            Instant::now() + Duration::from_secs(5),
        );
        std::thread::sleep(Duration::from_millis(100));
        stop.store(true, Ordering::SeqCst);
        server.join().unwrap();
        assert_eq!(
            verdict,
            DialbackVerdict::Error(StanzaErrorCondition::RemoteServerTimeout)
        );
        assert_eq!(
            *counts.lock().unwrap(),
            vec![1, 1, 1, 1, 0, 0],
            "the first {MAX_VERIFY_ATTEMPTS} addresses, once each"
        );
    }

    #[test]
    fn a_verification_ends_at_the_inbound_streams_deadline() {
        // A server that accepts and never answers.
        let silent = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = silent.local_addr().unwrap().port();
        let context = verify_context(port, &["127.0.0.1"]);
        let t0 = Instant::now();
        let verdict = verify(
            &context,
            "contoso.test",
            "verify.test",
            "id1",
            "key",
            t0 + Duration::from_millis(800),
        );
        let took = t0.elapsed();
        assert_eq!(
            verdict,
            DialbackVerdict::Error(StanzaErrorCondition::RemoteServerTimeout)
        );
        assert!(
            took >= Duration::from_millis(700) && took < Duration::from_millis(1500),
            "ended with the deadline (0.8 s), not [xmpp] stream_timeout (60 s): {took:?}"
        );
        // A deadline already passed: no attempt at all.
        let t0 = Instant::now();
        let verdict = verify(&context, "contoso.test", "verify.test", "id1", "key", t0);
        assert_eq!(
            verdict,
            DialbackVerdict::Error(StanzaErrorCondition::RemoteServerNotFound)
        );
        assert!(t0.elapsed() < Duration::from_millis(200));
        drop(silent);
    }
}
