//! Connection threads: one per accepted socket, owning it for its whole life. This file
//! registers the connection with the router and hands it to the protocol shell:
//! [`super::edge`] for SIP from the Access Edge, [`super::s2s`] for XMPP server-to-server.

use std::io::Write;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use super::admission::Ticket;
use super::live::{ConfigCell, Live};
use super::router::{ConnId, RouterEvent};
use super::Side;
use crate::config::{Config, Credentials};
use crate::logsafe::escaped;

/// What every connection thread shares, read-only.
pub struct Context {
    /// The configuration and TLS configurations in force (replaced by the router on reload):
    /// read once per connection.
    pub live: Arc<ConfigCell>,
    pub events: Sender<RouterEvent>,
    /// What XMPP S2S threads share.
    pub xmpp: Arc<super::s2s::S2sContext>,
    /// When set, requests from the Edge go here instead of the router (in-process tests).
    pub sip_requests: Option<Sender<super::edge::InboundRequest>>,
    /// Every connection thread started, joined by `Gateway::wait`.
    pub threads: Arc<super::threads::ThreadSet>,
    /// Failed TLS handshakes on 5061 are logged at most [`TLS_REFUSALS_PER_MINUTE`] times a
    /// minute per address (a client can cause them at will).
    pub tls_refusals: crate::logsafe::SharedRateLimit<std::net::IpAddr>,
}

/// See [`Context::tls_refusals`].
pub const TLS_REFUSALS_PER_MINUTE: u32 = 5;

impl Context {
    /// The configuration in force now.
    pub fn config(&self) -> Arc<Config> {
        self.live.config()
    }

    pub fn new(
        config: Arc<Config>,
        credentials: Credentials,
        events: Sender<RouterEvent>,
        dialback_secret: String,
        stopping: Arc<AtomicBool>,
    ) -> Result<Self, rustls::Error> {
        let live = Arc::new(ConfigCell::new(Live::build(config, &credentials)?));
        let threads = Arc::new(super::threads::ThreadSet::default());
        let xmpp = Arc::new(super::s2s::S2sContext::new(
            Arc::clone(&live),
            dialback_secret,
            events.clone(),
            super::s2s::Lifecycle {
                stopping,
                threads: Arc::clone(&threads),
            },
        ));
        Ok(Context {
            live,
            events,
            xmpp,
            sip_requests: None,
            threads,
            tls_refusals: crate::logsafe::SharedRateLimit::new(
                TLS_REFUSALS_PER_MINUTE,
                Duration::from_secs(60),
                4096,
            ),
        })
    }
}

/// Called by a listener when an admission cap refuses a connection: an XMPP peer gets told
/// why (a stream error in a stream of its own), a SIP peer is closed.
pub fn refuse_over_limit(side: Side, mut stream: TcpStream) {
    if side == Side::Xmpp {
        let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
        let _ = stream.write_all(&super::s2s::stream_error(
            "resource-constraint",
            "too many connections",
        ));
    }
    let _ = stream.shutdown(Shutdown::Both);
}

/// Runs one admitted connection to its end. `accepted` starts its handshake deadline;
/// `ticket` moves to the authenticated count when the protocol shell says so and is
/// released when this returns.
#[allow(clippy::too_many_arguments)]
pub fn serve_inbound(
    side: Side,
    id: ConnId,
    stream: TcpStream,
    peer: SocketAddr,
    mut ticket: Ticket,
    accepted: Instant,
    context: &Context,
    stopping: &AtomicBool,
) {
    match stream.try_clone() {
        Ok(waker) => {
            let _ = context.events.send(RouterEvent::Connected {
                id,
                side,
                peer,
                waker,
            });
        }
        Err(error) => {
            log::warn!("{side} inbound {peer}: cannot register connection: {error}");
            return;
        }
    }
    // Registered after shutdown began: the router may never wake this thread.
    if stopping.load(Ordering::SeqCst) {
        let _ = context.events.send(RouterEvent::Disconnected { id });
        return;
    }
    log::info!("{side} inbound connection {id} from {peer}");
    let outcome = match side {
        Side::Sip => super::edge::serve_inbound(stream, peer, context, &mut ticket, accepted),
        Side::Xmpp => {
            super::s2s::serve_inbound(stream, peer, id, &context.xmpp, &mut ticket, accepted)
        }
    };
    // The outcome may quote the peer (a stream error's text): escaped and cut.
    log::info!(
        "{side} inbound connection {id} from {peer} closed: {}",
        escaped(&outcome)
    );
    let _ = context.events.send(RouterEvent::Disconnected { id });
}
