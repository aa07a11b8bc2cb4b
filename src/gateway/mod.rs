//! The running gateway: listener threads, connection threads, the router thread, and the
//! process lifecycle (start, reload, orderly shutdown).
//!
//! ```text
//!  signals ──Shutdown/Reload──▶ router ◀──Connected/Disconnected── connection threads
//!                                 │ owns: connection registry, S2S table, the translator
//!                                 │       (crate::bridge: pending deliveries, IM sessions)
//!  xmpp-listen / sip-listen ──accept──▶ admission (admission.rs; 5061: edge/allow.rs)
//!                          ──▶ spawn connection thread (one per socket, with its Ticket)
//!  sip-edge-out ──▶ the gateway's own connection to [sip] edge (reconnects with backoff)
//!  Edge requests ──RouterEvent::SipRequest──▶ router (translator) or GatewayOptions sink
//! ```
//!
//! Ownership: the router owns every piece of gateway state; a connection thread owns its
//! socket. The only thing shared is a clone of each socket's handle given to the router, so it
//! can wake a blocked read at shutdown (`shutdown(2)`), and the listeners' stop flag.
//!
//! Reload (SIGHUP): the router reads and checks the file, then publishes the new
//! configuration and TLS configurations in [`live::ConfigCell`], the one place connection
//! threads read them from (see there why a shared snapshot); what cannot change live is
//! kept at its old value and logged as needing a restart ([`crate::config::RESTART_ONLY`]).
//!
//! Shutdown: the router stops the listeners (flag, then a connection to each to wake its
//! blocked `accept`), asks every connection to close, waits for them up to
//! [`SHUTDOWN_GRACE`], and returns; [`Gateway::wait`] then joins every thread: router,
//! listeners, and (from a `threads::ThreadSet`) every connection thread and XMPP outbound
//! stream thread, which see the stop flag and end within another [`SHUTDOWN_GRACE`].

mod admission;
mod connection;
pub mod control;
mod edge;
mod listener;
pub mod live;
pub mod router;
mod s2s;
pub mod state;
pub mod status;
pub mod threads;

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::Sender;

use crate::config::{Config, Credentials};
pub use edge::{ClientOutcome, ConnectionGone, EdgeHandle, InboundRequest};
pub use router::RouterEvent;
pub use s2s::{InboundStanza, XmppEvent, XmppNotice};

/// How long shutdown waits for connections to close before leaving anyway.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Capacity of the router's inbound channel: connection threads block (backpressure) rather
/// than queue without bound when the router falls behind.
pub const ROUTER_QUEUE: usize = 4096;

/// Which side of the gateway a connection or listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// Server-to-server XMPP streams (port 5269).
    Xmpp,
    /// Mutual-TLS SIP with the Access Edge (port 5061).
    Sip,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Xmpp => "xmpp",
            Side::Sip => "sip",
        })
    }
}

/// Why the gateway could not start.
#[derive(Debug)]
#[non_exhaustive]
pub enum RunError {
    /// A listening socket could not be opened.
    Bind {
        key: &'static str,
        addr: SocketAddr,
        error: std::io::Error,
    },
    /// The state directory or dialback secret could not be prepared.
    State(state::StateError),
    /// A thread could not be started (out of memory or process limits).
    Spawn { name: String, error: std::io::Error },
    /// The TLS configuration could not be built from the loaded certificates.
    Tls(String),
    /// The control socket (`xsgw status`) could not be opened.
    Control {
        path: std::path::PathBuf,
        error: std::io::Error,
    },
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunError::Bind { key, addr, error } => {
                let hint = match error.kind() {
                    std::io::ErrorKind::AddrInUse => "; another process listens there (ss -ltnp)",
                    std::io::ErrorKind::AddrNotAvailable => {
                        "; no interface of this host has that address"
                    }
                    std::io::ErrorKind::PermissionDenied => {
                        "; ports below 1024 need privileges xsgw should not have"
                    }
                    _ => "",
                };
                write!(f, "cannot listen on {addr} ({key}): {error}{hint}")
            }
            RunError::State(e) => e.fmt(f),
            RunError::Spawn { name, error } => write!(f, "cannot start thread {name}: {error}"),
            RunError::Tls(e) => write!(f, "cannot set up TLS: {e}"),
            RunError::Control { path, error } => write!(
                f,
                "cannot open the control socket {} (for xsgw status): {error}; is another xsgw using [gateway] state_dir?",
                path.display()
            ),
        }
    }
}

impl std::error::Error for RunError {}

/// The presence subscriptions, under `[gateway] state_dir`.
pub const SUBSCRIPTIONS_FILE: &str = "subscriptions";

/// How many batches of subscription changes may wait for the state writer.
pub const SAVE_QUEUE: usize = 64;

/// Saves each batch of subscription changes it is handed (those waiting together), in order,
/// until the router lets go of its sender. It owns the saved table (`state.rs`): the router
/// only ever hands it what changed.
fn state_writer(
    mut store: state::SubscriptionStore,
    batches: crossbeam_channel::Receiver<Vec<crate::bridge::SubscriptionChange>>,
) {
    while let Ok(mut batch) = batches.recv() {
        while let Ok(more) = batches.try_recv() {
            batch.extend(more);
        }
        if let Err(e) = store.apply(&batch) {
            log::error!("presence subscriptions not saved: {e}; the next change tries again");
        }
    }
}

/// Start-up options beyond the configuration (for embedding and in-process tests).
#[derive(Debug, Default)]
pub struct GatewayOptions {
    /// Receives authenticated inbound XMPP stanzas, bounces and authentication notices
    /// instead of the translator (in-process tests; a full sink drops notices rather than
    /// block the router).
    pub xmpp_sink: Option<Sender<XmppNotice>>,
    /// Requests from the Edge go to this channel instead of the router (in-process tests
    /// acting as the translator).
    pub sip_requests: Option<Sender<InboundRequest>>,
}

/// Submits stanzas to remote XMPP domains through the router (as the translator does).
#[derive(Debug, Clone)]
pub struct XmppSender(Sender<RouterEvent>);

impl XmppSender {
    /// Queues `stanza` (its `from` a hosted domain, its `to` a remote one). `false` when the
    /// gateway has stopped.
    pub fn send(&self, stanza: crate::xmpp::element::Element) -> bool {
        self.0
            .send(RouterEvent::Xmpp(XmppEvent::Send(stanza)))
            .is_ok()
    }
}

/// A started gateway. Send [`RouterEvent::Shutdown`] through [`Gateway::events`] to stop it,
/// then [`Gateway::wait`].
pub struct Gateway {
    events: Sender<RouterEvent>,
    router: JoinHandle<Result<(), ()>>,
    listeners: Vec<JoinHandle<Result<(), ()>>>,
    /// Where the listeners actually listen (useful with port 0 in tests).
    pub xmpp_addr: SocketAddr,
    pub sip_addr: SocketAddr,
    edge: EdgeHandle,
    /// Connection threads (both sides) and XMPP outbound stream threads.
    threads: Arc<threads::ThreadSet>,
}

impl Gateway {
    /// Prepares state, binds both listeners and starts the router and listener threads.
    /// Binding happens before any thread starts, so a busy port fails start-up cleanly.
    pub fn start(config: Arc<Config>, credentials: Credentials) -> Result<Gateway, RunError> {
        Gateway::start_with(config, credentials, GatewayOptions::default())
    }

    /// [`Gateway::start`] with [`GatewayOptions`].
    pub fn start_with(
        config: Arc<Config>,
        credentials: Credentials,
        options: GatewayOptions,
    ) -> Result<Gateway, RunError> {
        state::ensure_state_dir(&config.gateway.state_dir).map_err(RunError::State)?;
        let (secret, generated) =
            state::load_or_create_secret(&config.xmpp.dialback_secret).map_err(RunError::State)?;
        if generated {
            log::info!(
                "generated dialback secret {} (copy it to every instance that serves the same domains)",
                config.xmpp.dialback_secret.display()
            );
        }
        let xmpp = listener::bind(config.xmpp.listen, "[xmpp] listen")?;
        let sip = listener::bind(config.sip.listen, "[sip] listen")?;
        let xmpp_addr = xmpp.local_addr().map_err(|error| RunError::Bind {
            key: "[xmpp] listen",
            addr: config.xmpp.listen,
            error,
        })?;
        let sip_addr = sip.local_addr().map_err(|error| RunError::Bind {
            key: "[sip] listen",
            addr: config.sip.listen,
            error,
        })?;

        let control_path = control::socket_path(&config.gateway.state_dir);
        let control_socket =
            control::bind_control(&control_path).map_err(|error| RunError::Control {
                path: control_path.clone(),
                error,
            })?;
        let metrics = match config.metrics.listen {
            Some(addr) => Some(control::bind_metrics(addr).map_err(|error| RunError::Bind {
                key: "[metrics] listen",
                addr,
                error,
            })?),
            None => None,
        };

        let (events, inbox) = crossbeam_channel::bounded(ROUTER_QUEUE);
        let stopping = Arc::new(AtomicBool::new(false));
        let listener_addrs = vec![xmpp_addr, sip_addr];

        let mut context = connection::Context::new(
            Arc::clone(&config),
            credentials,
            events.clone(),
            secret,
            Arc::clone(&stopping),
        )
        .map_err(|e| RunError::Tls(e.to_string()))?;
        context.sip_requests = options.sip_requests;
        let context = Arc::new(context);
        let mut listeners = Vec::new();
        for (side, socket) in [(Side::Xmpp, xmpp), (Side::Sip, sip)] {
            let name = format!("{side}-listen");
            let context = Arc::clone(&context);
            let stopping = Arc::clone(&stopping);
            let handle = threads::spawn_service(name.clone(), threads::SERVICE_STACK, move || {
                listener::accept_loop(side, socket, &context, &stopping)
            })
            .map_err(|error| RunError::Spawn { name, error })?;
            listeners.push(handle);
        }

        {
            let events = events.clone();
            let stopping = Arc::clone(&stopping);
            let path = control_path.clone();
            listeners.push(
                threads::spawn_service("control".into(), threads::SERVICE_STACK, move || {
                    control::serve_control(control_socket, &path, &events, &stopping)
                })
                .map_err(|error| RunError::Spawn {
                    name: "control".into(),
                    error,
                })?,
            );
        }
        if let Some(listener) = metrics {
            let events = events.clone();
            let stopping = Arc::clone(&stopping);
            listeners.push(
                threads::spawn_service("metrics".into(), threads::SERVICE_STACK, move || {
                    control::serve_metrics(listener, &events, &stopping)
                })
                .map_err(|error| RunError::Spawn {
                    name: "metrics".into(),
                    error,
                })?,
            );
        }

        let xmpp_routes = s2s::XmppRoutes::new(Arc::clone(&context.xmpp), options.xmpp_sink);
        let (edge, edge_thread) =
            edge::outbound::start(Arc::clone(&context), Arc::clone(&stopping)).map_err(
                |error| RunError::Spawn {
                    name: "sip-edge-out".into(),
                    error,
                },
            )?;
        listeners.push(edge_thread);

        let bridge_config = crate::bridge::BridgeConfig::from_config(&config)
            .map_err(|e| RunError::Tls(format!("[gateway] fqdn cannot be a SIP host: {e}")))?;
        let unix_now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let bridge = crate::bridge::Bridge::new(
            bridge_config,
            Box::new(edge::system_random),
            std::time::Instant::now(),
            unix_now,
        );
        let subscriptions_file = config.gateway.state_dir.join(SUBSCRIPTIONS_FILE);
        let (store, saved) =
            state::SubscriptionStore::open(&subscriptions_file).map_err(RunError::State)?;
        let (saver, to_save) = crossbeam_channel::bounded(SAVE_QUEUE);
        listeners.push(
            threads::spawn_service("state-writer".into(), threads::SERVICE_STACK, move || {
                state_writer(store, to_save)
            })
            .map_err(|error| RunError::Spawn {
                name: "state-writer".into(),
                error,
            })?,
        );
        let mut router_state = router::Router::new(Arc::clone(&config), stopping, listener_addrs)
            .with_live(Arc::clone(&context.live))
            .with_xmpp(xmpp_routes)
            .with_translator(bridge, edge.clone(), events.clone(), saver);
        router_state.restore_subscriptions(&saved, &subscriptions_file);
        let router = threads::spawn_service("router".into(), threads::SERVICE_STACK, move || {
            router_state.run(inbox)
        })
        .map_err(|error| RunError::Spawn {
            name: "router".into(),
            error,
        })?;
        log::info!(
            "xsgw {} started: XMPP on {xmpp_addr}, SIP (mutual TLS) on {sip_addr}, Edge {}, hosted domains {}; control socket {}{}",
            env!("CARGO_PKG_VERSION"),
            config.sip.edge,
            config.gateway.sip_domains.join(", "),
            control_path.display(),
            config
                .metrics
                .listen
                .map_or(String::new(), |a| format!(", metrics on http://{a}/metrics"))
        );
        Ok(Gateway {
            events,
            router,
            listeners,
            xmpp_addr,
            sip_addr,
            edge,
            threads: Arc::clone(&context.threads),
        })
    }

    /// Sends requests to the Edge over the gateway's outbound connection.
    pub fn edge(&self) -> EdgeHandle {
        self.edge.clone()
    }

    /// A sender for lifecycle events (shutdown, reload) into the router.
    pub fn events(&self) -> Sender<RouterEvent> {
        self.events.clone()
    }

    /// A handle for sending stanzas to remote XMPP domains.
    pub fn xmpp_sender(&self) -> XmppSender {
        XmppSender(self.events.clone())
    }

    /// Waits until the router has finished shutting down, then joins the listeners and every
    /// connection and XMPP outbound thread, waiting for those at most [`SHUTDOWN_GRACE`] more.
    /// Returns `false` when a thread ended by a bug or was still running at that deadline.
    pub fn wait(self) -> bool {
        drop(self.events);
        let mut clean = matches!(self.router.join(), Ok(Ok(())));
        for listener in self.listeners {
            clean &= matches!(listener.join(), Ok(Ok(())));
        }
        // The listeners and the router are gone: no thread is added to the set any more.
        clean &= self
            .threads
            .join_all(std::time::Instant::now() + SHUTDOWN_GRACE);
        clean
    }
}
