//! The router thread: the one owner of gateway state.
//!
//! It owns the registry of live connections, the lifecycle (reload, shutdown), the XMPP S2S
//! table (`s2s::XmppRoutes`) and the translator ([`crate::bridge::Bridge`]) with the
//! SIP server transactions it has yet to answer. It carries out the bridge's actions and
//! never waits for a connection thread: everything it hands to one goes by `try_send`, and
//! what does not fit is answered as a failure at once (connection threads, in turn, may wait
//! for the router, so the two can never wait for each other).

use std::collections::HashMap;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use super::edge::{random_tag, ClientOutcome, EdgeHandle, InboundRequest, RespondError};
use super::live::{ConfigCell, Live};
use super::s2s::{Delivery, XmppEvent};
use super::{Side, SHUTDOWN_GRACE};
use crate::bridge::{Action, Answer, Bridge, RequestId, SipOutcome, SubscriptionChange};
use crate::config::Config;
use crate::sip::response_to;

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
    /// The final outcome of a request the translator sent to the Edge.
    SipOutcome {
        tag: u64,
        outcome: super::edge::ClientOutcome,
    },
    /// `xsgw status` or the metrics endpoint: the router answers with a snapshot by
    /// `try_send` (the asker waits a bounded time; the router never waits for it).
    Status(Sender<crate::status::Snapshot>),
    /// Something other threads saw, for the status (Edge links, failures, DNS lookups).
    Observed(super::status::Observation),
    /// SIGHUP: re-read and check the configuration file; apply it if usable.
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
    /// Where the configuration in force is published for connection threads (the router is
    /// its one writer); `None` in tests without a gateway around the router.
    live: Option<Arc<ConfigCell>>,
    stopping: Arc<AtomicBool>,
    listener_addrs: Vec<SocketAddr>,
    connections: HashMap<ConnId, Connection>,
    xmpp: Option<super::s2s::XmppRoutes>,
    translator: Option<Translator>,
    /// What `xsgw status` and the metrics show (super::status).
    status: super::status::Tracker,
}

/// The bridge and what the router needs to carry out its actions.
struct Translator {
    bridge: Bridge,
    edge: EdgeHandle,
    /// The router's own inbox, for outcomes of requests sent to the Edge.
    events: Sender<RouterEvent>,
    /// Requests from the Edge the bridge has yet to answer.
    pending: HashMap<RequestId, InboundRequest>,
    next_request: RequestId,
    /// To the state writer thread: changes of the presence subscriptions to save.
    saver: Sender<Vec<SubscriptionChange>>,
    /// Changes the writer had no room for yet (sent before any newer ones).
    unsaved: Vec<SubscriptionChange>,
}

impl Translator {
    /// Hands the writer the changes not yet handed over; keeps them when it is busy (the next
    /// event tries again). `wait` (at shutdown) waits a little for room instead.
    fn hand_to_writer(&mut self, wait: bool) {
        if self.unsaved.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.unsaved);
        let sent = if wait {
            self.saver
                .send_timeout(batch, SHUTDOWN_GRACE)
                .map_err(|e| e.into_inner())
        } else {
            self.saver.try_send(batch).map_err(|e| e.into_inner())
        };
        if let Err(batch) = sent {
            self.unsaved = batch;
            if self.unsaved.len() > crate::bridge::MAX_SUBSCRIPTIONS {
                // Bounded while the writer is stuck: only the last change of each counts.
                let mut seen = std::collections::HashSet::new();
                let mut kept: Vec<SubscriptionChange> = std::mem::take(&mut self.unsaved)
                    .into_iter()
                    .rev()
                    .filter(|c| seen.insert(c.key().to_owned()))
                    .collect();
                kept.reverse();
                self.unsaved = kept;
            }
            if wait {
                log::error!(
                    "{} presence subscription change(s) not saved: the state writer did not take them",
                    self.unsaved.len()
                );
            }
        }
    }
}

impl Router {
    pub fn new(
        config: Arc<Config>,
        stopping: Arc<AtomicBool>,
        listener_addrs: Vec<SocketAddr>,
    ) -> Self {
        Router {
            status: super::status::Tracker::new(&config.source),
            config,
            live: None,
            stopping,
            listener_addrs,
            connections: HashMap::new(),
            xmpp: None,
            translator: None,
        }
    }

    /// Gives the router the translator: requests from the Edge and stanzas from partners are
    /// translated and carried over `edge` and the S2S table.
    pub(super) fn with_translator(
        mut self,
        bridge: Bridge,
        edge: EdgeHandle,
        events: Sender<RouterEvent>,
        saver: Sender<Vec<SubscriptionChange>>,
    ) -> Self {
        self.translator = Some(Translator {
            bridge,
            edge,
            events,
            pending: HashMap::new(),
            next_request: 1,
            saver,
            unsaved: Vec::new(),
        });
        self
    }

    /// Re-establishes the presence subscriptions saved in `text` (read at start-up).
    pub(super) fn restore_subscriptions(&mut self, text: &str, source: &std::path::Path) {
        let Some(t) = self.translator.as_mut() else {
            return;
        };
        let (taken, refused) = t.bridge.restore_subscriptions(Instant::now(), text);
        for why in &refused {
            log::warn!("{}: {why}: subscription ignored", source.display());
        }
        if taken > 0 {
            log::info!(
                "restored {taken} presence subscription(s) from {}",
                source.display()
            );
        }
    }

    /// Gives the router the cell it publishes reloaded configurations in.
    pub(super) fn with_live(mut self, live: Arc<ConfigCell>) -> Self {
        self.live = Some(live);
        self
    }

    /// Gives the router the XMPP S2S table (outbound streams, the stanza sink).
    pub(super) fn with_xmpp(mut self, routes: super::s2s::XmppRoutes) -> Self {
        self.xmpp = Some(routes);
        self
    }

    /// Runs until [`RouterEvent::Shutdown`] (or every sender is gone), then shuts down.
    pub fn run(mut self, inbox: Receiver<RouterEvent>) {
        self.carry_out();
        loop {
            let timeout = self.translator.as_ref().and_then(|t| {
                // Changes the writer had no room for are offered again within a second.
                let retry =
                    (!t.unsaved.is_empty()).then(|| Instant::now() + Duration::from_secs(1));
                [t.bridge.poll_timeout(), retry].into_iter().flatten().min()
            });
            let event = match timeout {
                Some(at) => match inbox.recv_deadline(at) {
                    Ok(event) => event,
                    Err(RecvTimeoutError::Timeout) => {
                        if let Some(t) = self.translator.as_mut() {
                            t.bridge.handle_timeout(Instant::now());
                        }
                        self.carry_out();
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => break,
                },
                None => match inbox.recv() {
                    Ok(event) => event,
                    Err(_) => break,
                },
            };
            match event {
                RouterEvent::Shutdown => break,
                RouterEvent::Reload => {
                    super::threads::test_panic_point("router");
                    self.reload();
                }
                other => self.track(other),
            }
            self.carry_out();
        }
        if let Some(t) = self.translator.as_mut() {
            t.bridge.shut_down(Instant::now());
        }
        self.carry_out();
        if let Some(t) = self.translator.as_mut() {
            t.hand_to_writer(true);
        }
        if let Some(t) = &self.translator {
            let s = t.bridge.stats();
            log::info!(
                "translated: SIP → XMPP {} delivered, {} refused; XMPP → SIP {} delivered, {} bounced; {} typing notifications, {} IM session(s); {} presence subscription(s) held",
                s.sip_to_xmpp_delivered,
                s.sip_to_xmpp_refused,
                s.xmpp_to_sip_delivered,
                s.xmpp_to_sip_bounced,
                s.typing,
                s.sessions_opened,
                t.bridge.subscriptions()
            );
        }
        self.shut_down(&inbox);
    }

    /// Re-reads the configuration file and runs both stages of `xsgw check` on it (nothing is
    /// locked meanwhile); when it is usable, publishes it and applies it here. When it is not,
    /// every error is logged (one line each, `file:line`) and nothing changes.
    fn reload(&mut self) {
        let path = self.config.source.clone();
        let Some(live) = self.live.clone() else {
            log::warn!(
                "reload of {} not possible here: no configuration cell",
                path.display()
            );
            return;
        };
        log::info!("SIGHUP received: reloading {}", path.display());
        let (mut new, credentials, report) = match crate::config::check_file(&path) {
            Ok(checked) => checked,
            Err(e) => {
                if let crate::config::ConfigError::Invalid(report) = &e {
                    // One line per problem, `file:line: error: ...` (warnings as warnings).
                    for line in report.lines() {
                        if line.contains(": warning: ") {
                            log::warn!("{line}");
                        } else {
                            log::error!("{line}");
                        }
                    }
                }
                log::error!(
                    "{} not reloaded: {e}; still running on the configuration in force",
                    path.display()
                );
                return;
            }
        };
        for line in report.lines() {
            log::warn!("{line}");
        }
        let changes = crate::config::diff(&self.config, &new);
        crate::config::keep_restart_only(&self.config, &mut new);
        let new = Arc::new(new);
        let snapshot = match Live::build(Arc::clone(&new), &credentials) {
            Ok(snapshot) => snapshot,
            Err(e) => {
                log::error!(
                    "{} not reloaded: cannot set up TLS: {e}; still running on the configuration in force",
                    path.display()
                );
                return;
            }
        };
        live.publish(snapshot);
        self.config = Arc::clone(&new);
        if let Some(xmpp) = self.xmpp.as_mut() {
            for (local, remote) in xmpp.reconfigure(Arc::clone(&new)) {
                log::info!(
                    "xmpp outbound {local} → {remote}: closing: refused by the reloaded configuration"
                );
            }
        }
        // Inbound streams of partners refused now: their threads block on a read, so wake
        // them (a read shutdown, as at shutdown); each then sees the new configuration and
        // closes with <policy-violation/>. No stream polls for reloads.
        let refused = self.status.inbound_connections_of(|remote| {
            matches!(
                super::s2s::decide(&new, remote),
                super::s2s::Decision::Refuse { .. }
            )
        });
        for id in refused {
            if let Some(c) = self.connections.get(&id) {
                let _ = c.waker.shutdown(std::net::Shutdown::Read);
            }
        }
        if let Some(t) = self.translator.as_mut() {
            match crate::bridge::BridgeConfig::from_config(&new) {
                Ok(bridge_config) => t.bridge.reconfigure(bridge_config),
                // fqdn is restart-only and was usable at start: cannot happen.
                Err(e) => log::error!("translator keeps its configuration: {e}"),
            }
        }
        // Logged at the more verbose of the two levels, so the line shows either way.
        let level = new.log.level;
        log::set_max_level(log::max_level().max(level).max(log::LevelFilter::Info));
        let note = match crate::ops::logging::set_level(log::max_level()) {
            Err(why) => format!(" ({why})"),
            Ok(()) => String::new(),
        };
        log::info!("reloaded {}: {changes}{note}", path.display());
        let _ = crate::ops::logging::set_level(level);
    }

    /// Carries out what the bridge asked for, until it asks nothing more.
    fn carry_out(&mut self) {
        let Some(t) = self.translator.as_mut() else {
            return;
        };
        t.hand_to_writer(false);
        while let Some(action) = t.bridge.poll_action() {
            match action {
                Action::Respond { request, answer } => {
                    self.status.sip_answered(request, Instant::now());
                    if let Some(inbound) = t.pending.remove(&request) {
                        respond(&inbound, answer, &self.config.gateway.fqdn);
                    }
                }
                Action::SendSip { tag, request } => {
                    self.status.edge_request_sent(tag, Instant::now());
                    if let Err(why) = t.edge.try_send_tagged(*request, tag, &t.events) {
                        self.status
                            .edge_request_ended(tag, None, why, Instant::now());
                        t.bridge.handle_sip_outcome(
                            Instant::now(),
                            tag,
                            SipOutcome::Failed(why.into()),
                        );
                    }
                }
                Action::SendSipStateless { request } => {
                    if !t.edge.try_send_stateless(*request) {
                        log::info!("sip: ACK not sent: the Edge connection is busy or gone");
                    }
                }
                Action::SaveSubscriptions(changes) => {
                    t.unsaved.extend(changes);
                    t.hand_to_writer(false);
                }
                Action::SendStanza { stanza, receipt } => {
                    self.status.stanza_out(&stanza.name);
                    let event = match receipt {
                        Some(receipt) => XmppEvent::SendTracked { stanza, receipt },
                        None => XmppEvent::Send(stanza),
                    };
                    if let Some(xmpp) = self.xmpp.as_mut() {
                        if let Some(delivery) = xmpp.handle(event) {
                            deliver(&mut t.bridge, delivery);
                        }
                    }
                }
            }
        }
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
                self.status.disconnected(id);
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
                self.status.xmpp_event(&event);
                let delivery = self.xmpp.as_mut().and_then(|xmpp| xmpp.handle(event));
                match (delivery, self.translator.as_mut()) {
                    (Some(delivery), Some(t)) => deliver(&mut t.bridge, delivery),
                    (Some(_), None) => {}
                    (None, _) => {}
                }
            }
            RouterEvent::SipRequest(inbound) => match self.translator.as_mut() {
                Some(t) => {
                    let id = t.next_request;
                    t.next_request += 1;
                    let now = Instant::now();
                    self.status.sip_request(
                        inbound.request.method.as_str(),
                        inbound.request.uri.host(),
                        inbound.expects_response.then_some(id),
                        now,
                    );
                    if inbound.expects_response {
                        // Kept until the bridge answers; it reads the request where it lies.
                        let kept = t.pending.entry(id).or_insert(*inbound);
                        t.bridge.handle_sip_request(now, id, &kept.request);
                    } else {
                        t.bridge.handle_sip_request(now, id, &inbound.request);
                    }
                }
                // Without a translator: a clear refusal, never a 200.
                None => super::edge::answer_untranslated(&inbound, &self.config.gateway.fqdn),
            },
            RouterEvent::SipOutcome { tag, outcome } => {
                let (status, why) = match &outcome {
                    ClientOutcome::Final(r) => (Some(r.status.as_u16()), String::new()),
                    ClientOutcome::Failed(why) => (None, why.clone()),
                    ClientOutcome::Provisional(_) => (Some(100), String::new()),
                };
                if status != Some(100) {
                    self.status
                        .edge_request_ended(tag, status, &why, Instant::now());
                }
                if let Some(t) = self.translator.as_mut() {
                    let outcome = match outcome {
                        ClientOutcome::Final(r) => SipOutcome::Final(r),
                        ClientOutcome::Failed(why) => SipOutcome::Failed(why),
                        ClientOutcome::Provisional(_) => return,
                    };
                    t.bridge.handle_sip_outcome(Instant::now(), tag, outcome);
                }
            }
            RouterEvent::Status(reply) => {
                let bridge = self.translator.as_ref().map(|t| super::status::BridgeView {
                    stats: t.bridge.stats(),
                    subscriptions: t.bridge.subscriptions() as u64,
                    sessions: t.bridge.sessions() as u64,
                    quota_refusals: t.bridge.quota_refusals(),
                    presence_cache_bytes: t.bridge.presence_cache_bytes("").1 as u64,
                });
                let outbound = self
                    .xmpp
                    .as_ref()
                    .map(|x| x.outbound_view())
                    .unwrap_or_default();
                let _ = reply.try_send(self.status.snapshot(bridge, &outbound));
            }
            RouterEvent::Observed(observation) => {
                if let super::status::Observation::EdgeLink { peer, .. } = &observation {
                    // Its `Connected` came first, from the same thread.
                    let id = self
                        .connections
                        .iter()
                        .filter(|(_, c)| c.side == Side::Sip && c.peer == *peer)
                        .map(|(id, _)| *id)
                        .max();
                    if let Some(id) = id {
                        self.status.edge_link(id, observation);
                    }
                } else {
                    self.status.observed(observation);
                }
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

/// Hands what became of tracked stanzas to the bridge.
fn deliver(bridge: &mut Bridge, delivery: Delivery) {
    let now = Instant::now();
    match delivery {
        Delivery::Written(receipts) => bridge.handle_written(now, &receipts),
        Delivery::Failed {
            receipt,
            condition,
            stanza,
        } => {
            log::debug!(
                "xmpp: tracked <{}/> to {} failed: {condition}",
                stanza.name,
                stanza.attr("to").unwrap_or("?")
            );
            bridge.handle_xmpp_failed(now, receipt, condition)
        }
        Delivery::Inbound(stanza) => {
            bridge.handle_stanza(now, &stanza.local, &stanza.remote, stanza.stanza)
        }
    }
}

/// Sends the bridge's answer to a request from the Edge.
fn respond(inbound: &InboundRequest, answer: Answer, fqdn: &str) {
    let req = &inbound.request;
    let built = match answer {
        Answer::Built(b) => Ok(*b),
        Answer::Busy {
            retry_after,
            warning,
        } => response_to(
            req,
            crate::sip::StatusCode::SERVICE_UNAVAILABLE,
            Some(&random_tag()),
        )
        .and_then(|mut b| {
            b.header("Retry-After", &retry_after.to_string())?;
            b.header(
                "Warning",
                &format!("399 {fqdn} \"{}\"", warning_text(&warning)),
            )?;
            Ok(b)
        }),
        Answer::Status { status, warning } => response_to(req, status, Some(&random_tag()))
            .and_then(|mut b| {
                if let Some(text) = warning {
                    b.header(
                        "Warning",
                        &format!("399 {fqdn} \"{}\"", warning_text(&text)),
                    )?;
                }
                Ok(b)
            }),
    };
    match built {
        Ok(b) => match inbound.try_respond(b) {
            Ok(()) => {}
            Err(RespondError::Gone) => log::info!(
                "sip: {} {} not answered: its connection closed",
                req.method,
                req.call_id
            ),
            Err(RespondError::Busy) => log::warn!(
                "sip: {} {} not answered: the Edge connection's queue is full",
                req.method,
                req.call_id
            ),
        },
        Err(e) => log::warn!("sip: cannot answer {} {}: {e}", req.method, req.call_id),
    }
}

/// A Warning's quoted text: no quote, backslash or control character, at most 200 bytes.
fn warning_text(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        if out.len() >= 200 {
            out.push_str("...");
            break;
        }
        out.push(match c {
            '"' => '\'',
            '\\' => '/',
            c if c.is_control() => ' ',
            c => c,
        });
    }
    out
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
