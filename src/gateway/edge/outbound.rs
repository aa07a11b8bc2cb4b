//! The gateway's own connection to `[sip] edge`, kept up by one thread (`sip-edge-out`).
//!
//! ```text
//!  resolve [sip] edge host: [hosts] first, then DNS (A/AAAA)
//!    └─ for each address: TCP connect (connect_timeout) ─ TLS, gateway certificate presented,
//!       Edge certificate checked for the host or [sip] edge_names (+ edge_pin) ─ driver::drive(Link)
//!  all addresses failed ─▶ wait BACKOFF_START · 2ⁿ (≤ BACKOFF_MAX), logged; then again
//!  connection ended     ─▶ Edge sent something or after STABLE: reconnect at once,
//!                          backoff reset;
//!                          sooner (refused after the handshake): backoff as above
//! ```
//!
//! While there is no connection, requests given to the [`EdgeHandle`] fail at once with
//! [`ClientOutcome::Failed`] (their sender bounces them): nothing waits silently.

use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use rustls::pki_types::ServerName;

use super::{driver, ClientOutcome, Command, EdgeHandle, COMMAND_QUEUE};
use crate::dns::{resolve_host, Resolver, StaticHosts};
use crate::gateway::connection::Context;
use crate::gateway::router::RouterEvent;
use crate::gateway::{threads, Side};
use crate::tls;

/// First wait after a failed round of connection attempts.
pub const BACKOFF_START: Duration = Duration::from_millis(500);
/// Longest wait between rounds.
pub const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// A connection that lasted this long, or on which the Edge sent anything, resets the
/// backoff: the Edge accepted us.
pub const STABLE: Duration = Duration::from_secs(10);
/// CRLF keepalive interval on the connection xsgw opened (RFC 5626 §4.4.1 suggests
/// 95–120 s for connection-oriented transports; Edges drop idle TLS after a few minutes).
pub const KEEPALIVE: Duration = Duration::from_secs(95);

/// Starts `sip-edge-out`. It stops when `stopping` is set (checked between attempts and
/// woken by the router closing the connection's socket at shutdown).
pub fn start(
    context: Arc<Context>,
    stopping: Arc<AtomicBool>,
) -> std::io::Result<(EdgeHandle, JoinHandle<Result<(), ()>>)> {
    let (commands_tx, commands) = crossbeam_channel::bounded(COMMAND_QUEUE);
    let connected = Arc::new(AtomicBool::new(false));
    let handle = EdgeHandle {
        commands: commands_tx.clone(),
        connected: Arc::clone(&connected),
    };
    let thread =
        threads::spawn_service("sip-edge-out".into(), threads::SERVICE_STACK, move || {
            run(&context, &stopping, &commands, commands_tx, &connected)
        })?;
    Ok((handle, thread))
}

fn resolver(context: &Context) -> Option<Resolver> {
    let config = context.config();
    let dns = &config.dns;
    if dns.servers.is_empty() {
        match Resolver::from_system() {
            Ok(r) => Some(r),
            Err(e) => {
                log::warn!("sip outbound: no DNS resolver from /etc/resolv.conf: {e}");
                None
            }
        }
    } else {
        Some(Resolver::new(dns.servers.clone(), dns.timeout, 2))
    }
}

fn hosts(context: &Context) -> StaticHosts {
    let mut hosts = StaticHosts::new();
    for (name, addrs) in &context.config().hosts {
        if let Err(e) = hosts.insert(name, addrs) {
            log::warn!("sip outbound: [hosts] {name} ignored: {e}");
        }
    }
    hosts
}

fn run(
    context: &Context,
    stopping: &AtomicBool,
    commands: &Receiver<Command>,
    commands_tx: crossbeam_channel::Sender<Command>,
    connected: &AtomicBool,
) {
    // [sip] edge, [hosts] and [dns] need a restart; certificates and CA files are taken
    // again for every connection attempt (a reload applies at the next one).
    let edge = context.config().sip.edge.clone();
    let hosts = hosts(context);
    let resolver = resolver(context);
    let mut backoff = BACKOFF_START;
    let mut round = 0u32;
    while !stopping.load(Ordering::SeqCst) {
        round += 1;
        let addrs: Vec<IpAddr> = match &resolver {
            Some(r) => match resolve_host(&edge.host, &hosts, r) {
                Ok(a) => {
                    crate::gateway::status::observe(
                        &context.events,
                        crate::gateway::status::Observation::DnsLookup { failed: false },
                    );
                    a
                }
                Err(e) => {
                    crate::gateway::status::observe(
                        &context.events,
                        crate::gateway::status::Observation::DnsLookup { failed: true },
                    );
                    crate::gateway::status::failure(
                        &context.events,
                        crate::gateway::status::ErrorKind::Dns,
                        "edge_not_resolved",
                        edge.host.clone(),
                        e.to_string(),
                    );
                    log::warn!("sip outbound: cannot resolve the Edge {}: {e}", edge.host);
                    Vec::new()
                }
            },
            None => hosts
                .get(&edge.host)
                .map(<[IpAddr]>::to_vec)
                .or_else(|| edge.host.parse().ok().map(|ip| vec![ip]))
                .unwrap_or_default(),
        };
        let mut served = false;
        for ip in &addrs {
            if stopping.load(Ordering::SeqCst) {
                break;
            }
            let addr = SocketAddr::new(*ip, edge.port);
            match connect(context, &edge.host, addr) {
                Ok((tls, tcp)) => {
                    served = true;
                    let since = Instant::now();
                    let id = crate::gateway::router::next_connection_id();
                    if let Ok(waker) = tcp.try_clone() {
                        let _ = context.events.send(RouterEvent::Connected {
                            id,
                            side: Side::Sip,
                            peer: addr,
                            waker,
                        });
                    }
                    // Registered after shutdown began: the router may never wake us.
                    if stopping.load(Ordering::SeqCst) {
                        let _ = context.events.send(RouterEvent::Disconnected { id });
                        break;
                    }
                    connected.store(true, Ordering::SeqCst);
                    let ended = driver::drive(
                        rustls::Connection::Client(tls),
                        tcp,
                        driver::Params {
                            peer: addr,
                            direction: "outbound",
                            context,
                            pinging: true,
                            commands,
                            commands_tx: commands_tx.clone(),
                        },
                    );
                    connected.store(false, Ordering::SeqCst);
                    let outcome = ended.why;
                    let _ = context.events.send(RouterEvent::Disconnected { id });
                    if stopping.load(Ordering::SeqCst) {
                        log::info!(
                            "sip outbound {addr}: connection to the Edge closed for shutdown"
                        );
                    } else if ended.heard || since.elapsed() >= STABLE {
                        backoff = BACKOFF_START;
                        round = 0;
                        log::warn!(
                            "sip outbound {addr}: connection to the Edge ended: {outcome}; reconnecting"
                        );
                    } else {
                        // Refused right after the handshake (e.g. the Edge rejects our
                        // certificate under TLS 1.3): no reconnection storm.
                        log::warn!(
                            "sip outbound {addr}: connection to the Edge ended after {} ms: {outcome}; next attempt in {} ms",
                            since.elapsed().as_millis(),
                            backoff.as_millis()
                        );
                        wait_refusing(commands, stopping, backoff);
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                    }
                    break;
                }
                Err(why) => {
                    let (kind, reason) = if why.starts_with("TLS handshake") {
                        (
                            crate::gateway::status::ErrorKind::SipTls,
                            crate::gateway::status::tls_reason(false, &why),
                        )
                    } else {
                        (crate::gateway::status::ErrorKind::Edge, "connect")
                    };
                    crate::gateway::status::failure(
                        &context.events,
                        kind,
                        reason,
                        addr.to_string(),
                        format!("outbound: {why}"),
                    );
                    log::warn!(
                        "sip outbound {addr}: cannot connect to the Edge {}: {why}",
                        edge
                    )
                }
            }
        }
        if served || stopping.load(Ordering::SeqCst) {
            continue;
        }
        log::warn!(
            "sip outbound: the Edge {edge} is unreachable ({} address(es) tried, attempt {round}); next attempt in {} ms",
            addrs.len(),
            backoff.as_millis()
        );
        wait_refusing(commands, stopping, backoff);
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
    log::info!("sip outbound: stopped");
}

/// Waits `pause` (or until stopping) while failing every request handed in meanwhile.
fn wait_refusing(commands: &Receiver<Command>, stopping: &AtomicBool, pause: Duration) {
    let until = Instant::now() + pause;
    while !stopping.load(Ordering::SeqCst) {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        if let Ok(Command::Send { reply, .. }) =
            commands.recv_timeout(left.min(Duration::from_millis(100)))
        {
            reply.finish(ClientOutcome::Failed(
                "not connected to the Edge (reconnecting)".into(),
            ));
        }
    }
}

fn connect(
    context: &Context,
    host: &str,
    addr: SocketAddr,
) -> Result<(rustls::ClientConnection, TcpStream), String> {
    let live = context.live.current();
    let Some(sip_tls) = &live.sip_tls else {
        return Err("no SIP TLS configuration".into());
    };
    let client_config = &sip_tls.client;
    let timeout = live.config.sip.connect_timeout;
    let mut tcp = TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("TCP: {e}"))?;
    let _ = tcp.set_read_timeout(Some(timeout));
    let _ = tcp.set_write_timeout(Some(timeout));
    let name =
        ServerName::try_from(host.to_owned()).map_err(|e| format!("bad name {host}: {e}"))?;
    let mut tls = rustls::ClientConnection::new(Arc::clone(client_config), name)
        .map_err(|e| format!("TLS set-up: {e}"))?;
    while tls.is_handshaking() {
        if let Err(error) = tls.complete_io(&mut tcp) {
            let _ = tls.write_tls(&mut tcp);
            return Err(format!(
                "TLS handshake failed: {}",
                tls::sip::describe_client_failure(&error, host, &live.config.sip.ca)
            ));
        }
    }
    let names = tls
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|leaf| tls::names::san_names(leaf).join(", "))
        .unwrap_or_default();
    log::info!(
        "sip outbound {addr}: connected to the Edge {host} over mutual TLS ({:?}), Edge certificate names {names}",
        tls.protocol_version()
    );
    Ok((tls, tcp))
}
