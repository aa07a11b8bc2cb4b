//! Listener threads: accept, admit or refuse, hand each admitted socket to its own thread.
//! Nothing slow happens here: TLS and stream set-up run in the connection thread; the only
//! wait is the SIP listener's occasional lookup of the Edge's name (see [`super::edge::allow`]).
//!
//! ```text
//!  accept ─▶ (sip) EdgeAllow: the Edge or [sip] allow_from? ── no ─▶ close before any TLS
//!         ─▶ Gate::admit: total, unauthenticated, per /24 or /64, per address ── over ─▶ refuse
//!         ─▶ spawn the connection thread with its Ticket and the accept time (its deadline)
//! ```
//!
//! Every refusal is a warning a stranger can cause at will, so it is rate-limited per source
//! address ([`REFUSALS_PER_MINUTE`] lines a minute, the next one counting those suppressed).

use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::admission::{Gate, Limits};
use super::connection::{self, Context};
use super::edge::allow::EdgeAllow;
use super::live::Watch;
use super::{threads, RunError, Side};
use crate::logsafe::{RateLimit, Suppressed};

/// Refusal lines logged per source address and minute.
pub const REFUSALS_PER_MINUTE: u32 = 2;
/// Source addresses whose refusals are remembered for rate-limiting.
const REFUSAL_KEYS: usize = 4096;

pub fn bind(addr: SocketAddr, key: &'static str) -> Result<TcpListener, RunError> {
    TcpListener::bind(addr).map_err(|error| RunError::Bind { key, addr, error })
}

/// The admission caps of a listener, from the configuration.
pub fn limits(side: Side, config: &crate::config::Config) -> Limits {
    match side {
        Side::Xmpp => Limits {
            total: config.xmpp.max_connections,
            unauthenticated: config.xmpp.max_unauthenticated,
            per_network: config.xmpp.max_unauthenticated_per_network,
            per_address: config.xmpp.max_unauthenticated_per_address,
        },
        // Half is kept for connections whose handshake and certificate check are done.
        Side::Sip => {
            let total = config.sip.max_connections;
            let unauthenticated = (total / 2).max(1);
            Limits {
                total,
                unauthenticated,
                per_network: unauthenticated,
                per_address: config.sip.max_unauthenticated_per_address,
            }
        }
    }
}

pub fn accept_loop(
    side: Side,
    listener: TcpListener,
    context: &Arc<Context>,
    stopping: &Arc<AtomicBool>,
) {
    let config = context.config();
    let gate = Gate::new(limits(side, &config));
    let mut watch = Watch::new(&context.live);
    let mut edge = (side == Side::Sip).then(|| {
        let mut allow = EdgeAllow::from_config(&config);
        allow.refresh(Instant::now());
        allow
    });
    let mut refusals: RateLimit<IpAddr> =
        RateLimit::new(REFUSALS_PER_MINUTE, Duration::from_secs(60), REFUSAL_KEYS);
    loop {
        let accepted = listener.accept();
        let now = Instant::now();
        if stopping.load(Ordering::SeqCst) {
            break;
        }
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(error) => {
                // EMFILE and friends: log and go on; the next accept may succeed.
                log::warn!("{side}: accept failed: {error}");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        if watch.changed(&context.live) {
            // A reload: the caps (and who else may reach 5061) for this connection on.
            let config = context.config();
            gate.set_limits(limits(side, &config));
            if let Some(edge) = edge.as_mut() {
                edge.set_allow_from(config.sip.allow_from.clone());
            }
        }
        let ip = peer.ip().to_canonical();
        if let Some(edge) = edge.as_mut() {
            if !edge.allows(ip, now) {
                if let Some(suppressed) = refusals.allow(&ip, now) {
                    log::warn!(
                        "{side} inbound from {peer} refused before TLS: not the Edge's address nor in [sip] allow_from{}",
                        Suppressed(suppressed)
                    );
                }
                close_now(stream);
                continue;
            }
        }
        let ticket = match gate.admit(ip) {
            Ok(ticket) => ticket,
            Err(refusal) => {
                if let Some(suppressed) = refusals.allow(&ip, now) {
                    log::warn!(
                        "{side} inbound from {peer} refused: {refusal}{}",
                        Suppressed(suppressed)
                    );
                }
                connection::refuse_over_limit(side, stream);
                continue;
            }
        };
        let id = super::router::next_connection_id();
        let name = format!("{side}-in-{id}");
        let context = Arc::clone(context);
        let stopping = Arc::clone(stopping);
        let threads = Arc::clone(&context.threads);
        match threads::spawn(name.clone(), threads::CONNECTION_STACK, move || {
            connection::serve_inbound(side, id, stream, peer, ticket, now, &context, &stopping)
        }) {
            Ok(handle) => threads.add(handle),
            Err(error) => {
                log::error!("{side} inbound from {peer} dropped: cannot start {name}: {error}")
            }
        }
    }
    log::info!(
        "{side} listener on {:?} stopped",
        listener.local_addr().ok()
    );
}

/// Closes a connection that may not exist at all, without reading or writing a byte.
fn close_now(stream: TcpStream) {
    let _ = stream.shutdown(std::net::Shutdown::Both);
}
