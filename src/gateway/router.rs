//! The router thread: the one owner of gateway state.
//!
//! Today it owns the registry of live connections and the lifecycle (reload, shutdown); the
//! translation issues add routes, sessions and subscriptions here, fed by the same channel.

use std::collections::HashMap;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};

use super::{Side, SHUTDOWN_GRACE};
use crate::config::Config;

/// Identifies one connection for the life of the process.
pub type ConnId = u64;

static NEXT_CONNECTION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// A fresh connection id. One allocator for every kind of connection (inbound, outbound,
/// XMPP, SIP): the router's registry is keyed by it, so two kinds must never share a range.
pub fn next_connection_id() -> ConnId {
    NEXT_CONNECTION.fetch_add(1, Ordering::Relaxed)
}

/// What the router is told.
#[derive(Debug)]
#[non_exhaustive]
pub enum RouterEvent {
    /// A connection thread started serving `peer`. `waker` is a clone of its socket, used only
    /// to wake its blocked read at shutdown.
    Connected {
        id: ConnId,
        side: Side,
        peer: SocketAddr,
        waker: TcpStream,
    },
    /// The connection thread is finishing.
    Disconnected { id: ConnId },
    /// The XMPP server-to-server side: stanzas in and out, bounces, stream lifecycle.
    Xmpp(super::s2s::XmppEvent),
    /// A request from the Edge for the translator; answer it through the request itself.
    SipRequest(Box<super::edge::InboundRequest>),
    /// SIGHUP: re-read the configuration (not yet supported: logged).
    Reload,
    /// SIGTERM/SIGINT: stop accepting, close connections politely, return.
    Shutdown,
}

struct Connection {
    side: Side,
    peer: SocketAddr,
    since: Instant,
    waker: TcpStream,
}

/// Gateway state and the loop that owns it.
pub struct Router {
    config: Arc<Config>,
    stopping: Arc<AtomicBool>,
    listener_addrs: Vec<SocketAddr>,
    connections: HashMap<ConnId, Connection>,
    xmpp: Option<super::s2s::XmppRoutes>,
}

impl Router {
    pub fn new(
        config: Arc<Config>,
        stopping: Arc<AtomicBool>,
        listener_addrs: Vec<SocketAddr>,
    ) -> Self {
        Router {
            config,
            stopping,
            listener_addrs,
            connections: HashMap::new(),
            xmpp: None,
        }
    }

    /// Gives the router the XMPP S2S table (outbound streams, the stanza sink).
    pub(super) fn with_xmpp(mut self, routes: super::s2s::XmppRoutes) -> Self {
        self.xmpp = Some(routes);
        self
    }

    /// Runs until [`RouterEvent::Shutdown`] (or every sender is gone), then shuts down.
    pub fn run(mut self, inbox: Receiver<RouterEvent>) {
        while let Ok(event) = inbox.recv() {
            match event {
                RouterEvent::Shutdown => break,
                RouterEvent::Reload => log::warn!(
                    "SIGHUP received: configuration reload is not supported yet; restart xsgw to apply changes to {}",
                    self.config.source.display()
                ),
                other => self.track(other),
            }
        }
        self.shut_down(&inbox);
    }

    fn track(&mut self, event: RouterEvent) {
        match event {
            RouterEvent::Connected {
                id,
                side,
                peer,
                waker,
            } => {
                self.connections.insert(
                    id,
                    Connection {
                        side,
                        peer,
                        since: Instant::now(),
                        waker,
                    },
                );
            }
            RouterEvent::Disconnected { id } => {
                if let Some(c) = self.connections.remove(&id) {
                    log::debug!(
                        "{} connection {id} with {} ended after {:?}",
                        c.side,
                        c.peer,
                        c.since.elapsed()
                    );
                }
            }
            RouterEvent::Xmpp(event) => {
                if let Some(xmpp) = self.xmpp.as_mut() {
                    let _ = xmpp.handle(event);
                }
            }
            // Until the translator (issue 5) takes these: a clear refusal, never a 200.
            RouterEvent::SipRequest(inbound) => {
                super::edge::answer_untranslated(&inbound, &self.config.gateway.fqdn)
            }
            RouterEvent::Reload | RouterEvent::Shutdown => {}
        }
    }

    fn shut_down(&mut self, inbox: &Receiver<RouterEvent>) {
        log::info!(
            "shutting down: closing {} connection(s), waiting up to {:?}",
            self.connections.len(),
            SHUTDOWN_GRACE
        );
        self.stopping.store(true, Ordering::SeqCst);
        for addr in &self.listener_addrs {
            wake_listener(*addr);
        }
        // A thread that registered before `stopping` was set may still have its `Connected`
        // in the queue: take everything queued now, so no connection is left unwoken.
        // (One that registers after `stopping` was set sees the flag and closes itself.)
        for event in inbox.try_iter().collect::<Vec<_>>() {
            self.track(event);
        }
        for c in self.connections.values() {
            // Wakes the owner thread's blocked read; it then closes its stream itself.
            let _ = c.waker.shutdown(Shutdown::Read);
        }
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        while !self.connections.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            match inbox.recv_timeout(left) {
                Ok(RouterEvent::Connected { waker, .. }) => {
                    let _ = waker.shutdown(Shutdown::Read);
                }
                Ok(event) => self.track(event),
                Err(RecvTimeoutError::Timeout) => {
                    log::warn!(
                        "{} connection(s) did not close within {:?}; leaving them",
                        self.connections.len(),
                        SHUTDOWN_GRACE
                    );
                    for c in self.connections.values() {
                        let _ = c.waker.shutdown(Shutdown::Both);
                    }
                    break;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
    }
}

/// A blocked `accept()` only returns when a connection arrives: make one.
fn wake_listener(addr: SocketAddr) {
    let mut target = addr;
    if target.ip().is_unspecified() {
        target.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let _ = TcpStream::connect_timeout(&target, Duration::from_secs(1));
}
