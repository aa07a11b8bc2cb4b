//! The SIP shell: connections with the Access Edge over mutual TLS, each driving a sans-IO
//! [`crate::sip::link::Link`] in its own thread.
//!
//! ```text
//!            Edge ──TLS──▶ sip-listen ─▶ sip-in-N thread ──┐
//!  xsgw start ─▶ sip-edge-out thread ──TLS──▶ Edge ───────┤  each: driver::drive(Link)
//!                                                          │
//!   new request ─▶ target check (403 sips / 404 domain) ─▶ OPTIONS answered here (200)
//!                                                   └────▶ InboundRequest ─▶ sink (tests)
//!                                                                          or router
//!                                                                             (translator)
//!   EdgeHandle::send(request) ─▶ sip-edge-out ─▶ client transaction ─▶ ClientOutcome back
//! ```
//!
//! Inbound ([`serve_inbound`]): only the Edge's addresses and `[sip] allow_from` get past
//! accept ([`allow`], before any TLS byte); the TLS handshake must end within `[sip]
//! connect_timeout` of the accept, however slowly its bytes come; the Edge's client
//! certificate must chain to `[sip] ca`, name one of `[sip] edge_names` in its
//! subjectAltName (a wildcard only if listed as is) and, with `[sip] edge_pin`, hold a pinned
//! key (`crate::tls::names`); checked inside the handshake, a refusal is logged (rate-limited
//! per address) with what was presented.
//!
//! Outbound ([`outbound`]): one thread, started with the gateway, keeps a connection to
//! `[sip] edge` (names from `[hosts]` first, then DNS; every address in turn; capped
//! exponential backoff between rounds, each logged), presents the gateway certificate and
//! verifies the Edge's for the Edge name or one of `edge_names`, and its pin, by the same rules. Requests the gateway
//! originates go over it; their responses come back to whoever asked through a channel.
//!
//! Threads and rustls ([`driver`]): the connection thread owns the `rustls::Connection` and
//! is the only one to touch it. A second, tiny reader thread does nothing but blocking
//! `read(2)` on a clone of the socket and sends the raw TLS records through a bounded channel.
//! The owner `select!`s over those records, its command channel (responses from the
//! transaction user, requests to send) and the link's next timer, so a read that blocks for
//! minutes never delays a write, and no lock is shared: the reader never sees plaintext and
//! never writes. Writes happen in the owner under a write timeout.
//!
//! Transaction users: an [`InboundRequest`] goes to the sink installed with
//! [`super::GatewayOptions::sip_requests`] (tests), else to the router
//! ([`super::RouterEvent::SipRequest`]), whose translator (`crate::bridge`) answers it; a
//! router built without one answers with [`answer_untranslated`]: 480 with a Warning (481 in
//! a dialog) — never a 200 for something that goes nowhere. Requests the translator sends
//! ([`EdgeHandle::try_send_tagged`]) report their final outcome to the router as
//! [`super::RouterEvent::SipOutcome`].

pub mod allow;
mod driver;
pub mod outbound;
pub mod target;

use std::collections::HashSet;
use std::fmt;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};

use super::connection::Context;
use super::router::RouterEvent;
use crate::sip::link::LinkConfig;
use crate::sip::transaction::ServerKey;
use crate::sip::{
    response_to, FrameConfig, KeepaliveRole, Limits, MessageBuilder, Method, Request, Response,
    StatusCode,
};
use crate::tls;
use target::Target;

/// Capacity of each connection's command channel: transaction users block (backpressure)
/// rather than queue without bound.
pub const COMMAND_QUEUE: usize = 1024;

/// What a connection thread is asked to do.
#[derive(Debug)]
pub(crate) enum Command {
    /// Answer the server transaction `key`.
    Respond {
        key: ServerKey,
        response: Box<MessageBuilder>,
    },
    /// Start a client transaction; outcomes go to `reply`.
    Send {
        request: Box<MessageBuilder>,
        reply: Reply,
    },
    /// Send outside any transaction (the ACK of a 2xx).
    Stateless { request: Box<MessageBuilder> },
}

/// What happens to a request sent with [`EdgeHandle::send`]: provisional responses, then
/// exactly one of `Final` or `Failed`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientOutcome {
    /// A 1xx.
    Provisional(Box<Response>),
    /// The final response.
    Final(Box<Response>),
    /// No final response: not connected, transport error or Timer B/F (the text says which).
    Failed(String),
}

/// Where the outcomes of a client transaction go.
#[derive(Debug, Clone)]
pub(crate) enum Reply {
    /// A channel of its own (provisional responses too), for [`EdgeHandle::send`].
    Channel(Sender<ClientOutcome>),
    /// The router, as [`RouterEvent::SipOutcome`] with `tag`; final outcomes only.
    Router {
        events: Sender<RouterEvent>,
        tag: u64,
    },
}

impl Reply {
    /// Hands on a 1xx. A channel's last slot is kept for the final outcome, so the final
    /// one always fits even when the requester reads nothing until then.
    pub(crate) fn provisional(&self, response: Box<Response>) {
        if let Reply::Channel(reply) = self {
            let room = reply.capacity().unwrap_or(usize::MAX);
            if reply.len() + 1 < room {
                let _ = reply.try_send(ClientOutcome::Provisional(response));
            }
        }
    }

    /// Hands on the final outcome. The router is waited for (it never waits for a
    /// connection thread, so this cannot deadlock, and an outcome is never lost).
    pub(crate) fn finish(&self, outcome: ClientOutcome) {
        match self {
            Reply::Channel(reply) => {
                let _ = reply.try_send(outcome);
            }
            Reply::Router { events, tag } => {
                let _ = events.send(RouterEvent::SipOutcome { tag: *tag, outcome });
            }
        }
    }
}

/// A way to send requests to the Edge over the gateway's outbound connection. Cheap to clone.
#[derive(Debug, Clone)]
pub struct EdgeHandle {
    commands: Sender<Command>,
    connected: Arc<AtomicBool>,
}

impl EdgeHandle {
    /// Sends `request` (no Via: the connection adds its own with a fresh branch) in a new
    /// client transaction. The receiver yields its [`ClientOutcome`]s.
    pub fn send(&self, request: MessageBuilder) -> Receiver<ClientOutcome> {
        let (reply, outcomes) = crossbeam_channel::bounded(8);
        let failed = reply.clone();
        if self
            .commands
            .send(Command::Send {
                request: Box::new(request),
                reply: Reply::Channel(reply),
            })
            .is_err()
        {
            let _ = failed.send(ClientOutcome::Failed("the gateway is stopping".into()));
        }
        outcomes
    }

    /// For the router: sends `request` without waiting; its final outcome comes back as
    /// [`RouterEvent::SipOutcome`] with `tag` through `events`. `Err` (nothing sent) when the
    /// connection's queue is full or the gateway is stopping.
    pub(crate) fn try_send_tagged(
        &self,
        request: MessageBuilder,
        tag: u64,
        events: &Sender<RouterEvent>,
    ) -> Result<(), &'static str> {
        self.commands
            .try_send(Command::Send {
                request: Box::new(request),
                reply: Reply::Router {
                    events: events.clone(),
                    tag,
                },
            })
            .map_err(|e| match e {
                crossbeam_channel::TrySendError::Full(_) => "the Edge connection is too busy",
                crossbeam_channel::TrySendError::Disconnected(_) => "the gateway is stopping",
            })
    }

    /// For the router: [`EdgeHandle::send_stateless`] without waiting.
    pub(crate) fn try_send_stateless(&self, request: MessageBuilder) -> bool {
        self.commands
            .try_send(Command::Stateless {
                request: Box::new(request),
            })
            .is_ok()
    }

    /// Sends an ACK for a 2xx (or another message without transaction).
    pub fn send_stateless(&self, request: MessageBuilder) -> bool {
        self.commands
            .send(Command::Stateless {
                request: Box::new(request),
            })
            .is_ok()
    }

    /// Whether the outbound connection is up now.
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::SeqCst)
    }
}

/// Where a received request must be answered: its connection and server transaction.
#[derive(Debug, Clone)]
pub struct Responder {
    commands: Sender<Command>,
    key: ServerKey,
}

/// A request from the Edge for the transaction user (the translator, or a test's sink).
#[derive(Debug)]
pub struct InboundRequest {
    /// The request.
    pub request: Box<Request>,
    /// The Edge address it came from.
    pub peer: SocketAddr,
    /// False for BENOTIFY, which is never answered.
    pub expects_response: bool,
    responder: Responder,
}

/// The connection that received a request is gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionGone;

impl fmt::Display for ConnectionGone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the connection that carried the request is closed")
    }
}

impl std::error::Error for ConnectionGone {}

/// Why [`InboundRequest::try_respond`] did not hand the response on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RespondError {
    /// The connection that carried the request is closed.
    Gone,
    /// Its queue is full (the Edge does not read): the Edge's transaction will time out.
    Busy,
}

impl InboundRequest {
    /// Sends `response` in the request's server transaction (build it with
    /// [`crate::sip::response_to`]). A second final response is refused by the transaction.
    pub fn respond(&self, response: MessageBuilder) -> Result<(), ConnectionGone> {
        self.responder
            .commands
            .send(Command::Respond {
                key: self.responder.key.clone(),
                response: Box::new(response),
            })
            .map_err(|_| ConnectionGone)
    }
}

impl InboundRequest {
    /// [`InboundRequest::respond`] without waiting, for the router, which must never block on
    /// a connection thread.
    pub fn try_respond(&self, response: MessageBuilder) -> Result<(), RespondError> {
        self.responder
            .commands
            .try_send(Command::Respond {
                key: self.responder.key.clone(),
                response: Box::new(response),
            })
            .map_err(|e| match e {
                crossbeam_channel::TrySendError::Full(_) => RespondError::Busy,
                crossbeam_channel::TrySendError::Disconnected(_) => RespondError::Gone,
            })
    }
}

/// The router's answer while no translator exists: 481 inside a dialog (xsgw holds none
/// yet), otherwise 480 with a Warning saying why. Nothing is answered 200.
pub fn answer_untranslated(inbound: &InboundRequest, fqdn: &str) {
    if !inbound.expects_response {
        return;
    }
    let req = &inbound.request;
    let tag = random_tag();
    let built = if req.to.tag().is_some() {
        response_to(req, StatusCode::CALL_DOES_NOT_EXIST, Some(&tag))
    } else {
        response_to(req, StatusCode::TEMPORARILY_UNAVAILABLE, Some(&tag)).and_then(|mut b| {
            b.header(
                "Warning",
                &format!("399 {fqdn} \"translation to XMPP is not available in this build\""),
            )?;
            Ok(b)
        })
    };
    match built {
        Ok(b) => {
            if inbound.respond(b).is_err() {
                log::debug!(
                    "sip: {} {} not answered: connection closed",
                    req.method,
                    req.call_id
                );
            }
        }
        Err(e) => log::warn!("sip: cannot answer {} {}: {e}", req.method, req.call_id),
    }
}

/// At most this many refused domains are remembered per connection for the once-only log.
const MAX_LOGGED_DOMAINS: usize = 1024;

/// A random tag or id: 16 hex digits from the system's random source.
pub fn random_tag() -> String {
    let mut b = [0u8; 8];
    system_random(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Fills `buf` from the system's random source (the clock if that fails): tags, branches,
/// Call-IDs for the SIP links and the translator.
pub fn system_random(buf: &mut [u8]) {
    use ring::rand::SecureRandom;
    if ring::rand::SystemRandom::new().fill(buf).is_err() {
        // Branches and tags must be unique, not secret: the clock is good enough then.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (nanos >> ((i % 16) * 8)) as u8;
        }
    }
}

/// The link configuration of the gateway's connections; `pinging` for the side that opened
/// the connection (RFC 5626 §4.4.1: the client sends the pings).
pub(crate) fn link_config(context: &Context, pinging: bool) -> LinkConfig {
    let config = context.config();
    let limits = Limits {
        max_message_len: config.sip.max_message,
        max_headers: config.sip.max_headers,
        ..Limits::default()
    };
    LinkConfig {
        frame: FrameConfig {
            limits,
            keepalive: if pinging {
                KeepaliveRole::Client
            } else {
                KeepaliveRole::Server
            },
        },
        policy: LinkConfig::gateway_policy(),
        keepalive: pinging.then_some(outbound::KEEPALIVE),
        via_sent_by: format!("{}:{}", config.gateway.fqdn, config.sip.listen.port()),
    }
}

/// What a connection thread does with a new request: the checks that need the
/// configuration, OPTIONS, then the transaction user.
pub(crate) struct RequestFront<'a> {
    pub context: &'a Context,
    /// The configuration requests are judged by: the connection's snapshot, taken again
    /// when a reload published a new one (`watch`).
    pub config: Arc<crate::config::Config>,
    pub watch: crate::gateway::live::Watch,
    pub peer: SocketAddr,
    pub direction: &'static str,
    /// Refused domains already logged on this connection (logged once per peer and domain).
    pub logged: HashSet<String>,
}

impl RequestFront<'_> {
    /// True the first time `what` is seen (and while fewer than [`MAX_LOGGED_DOMAINS`] are
    /// remembered: beyond, the log would be flooded anyway, so nothing more is logged).
    fn first_time(&mut self, what: String) -> bool {
        self.logged.len() < MAX_LOGGED_DOMAINS && self.logged.insert(what)
    }

    pub fn handle(&mut self, request: Box<Request>, expects_response: bool, responder: Responder) {
        if self.watch.changed(&self.context.live) {
            self.config = self.context.config();
        }
        let peer = self.peer;
        let dir = self.direction;
        let config = Arc::clone(&self.config);
        let refuse = |status: StatusCode, reason: &str| {
            if !expects_response {
                return;
            }
            let built = response_to(&request, status, Some(&random_tag())).and_then(|mut b| {
                b.header(
                    "Warning",
                    &format!("399 {} \"{reason}\"", config.gateway.fqdn),
                )?;
                Ok(b)
            });
            if let Ok(b) = built {
                let _ = responder.commands.send(Command::Respond {
                    key: responder.key.clone(),
                    response: Box::new(b),
                });
            }
        };
        match target::classify(&request.uri, &config) {
            Target::Sips(domain) => {
                if self.first_time(format!("sips:{domain}")) {
                    log::warn!(
                        "sip {dir} {peer}: refused {} for sips:…@{domain} with 403: xsgw cannot keep sips end to end over XMPP (logged once per domain)",
                        request.method
                    );
                }
                refuse(StatusCode::FORBIDDEN, "sips targets are not served");
            }
            Target::Unknown(domain) => {
                if self.first_time(domain.clone()) {
                    log::warn!(
                        "sip {dir} {peer}: refused {} for domain `{domain}` with 404: not a federated XMPP domain (check [partner] sections and the Edge's routes; logged once per domain)",
                        request.method
                    );
                }
                refuse(
                    StatusCode::NOT_FOUND,
                    "domain not federated by this gateway",
                );
            }
            Target::Gateway | Target::Federated(_)
                if request.method == Method::Options && request.to.tag().is_none() =>
            {
                let built =
                    response_to(&request, StatusCode::OK, Some(&random_tag())).and_then(|mut b| {
                        let policy = LinkConfig::gateway_policy();
                        let allow: Vec<&str> =
                            policy.allowed_methods.iter().map(Method::as_str).collect();
                        b.header("Allow", &allow.join(", "))?
                            .header("Accept", &policy.accepted_content_types.join(", "))?
                            .header("Supported", "")?;
                        Ok(b)
                    });
                if let Ok(b) = built {
                    let _ = responder.commands.send(Command::Respond {
                        key: responder.key,
                        response: Box::new(b),
                    });
                }
            }
            Target::Gateway if request.to.tag().is_none() => refuse(
                StatusCode::NOT_FOUND,
                "no user at the gateway's own address",
            ),
            Target::Gateway | Target::Federated(_) => {
                let inbound = InboundRequest {
                    request,
                    peer,
                    expects_response,
                    responder,
                };
                self.deliver(inbound);
            }
        }
    }

    fn deliver(&self, inbound: InboundRequest) {
        log::debug!(
            "sip {} {}: {} {} to the transaction user",
            self.direction,
            self.peer,
            inbound.request.method,
            inbound.request.call_id
        );
        if let Some(sink) = &self.context.sip_requests {
            if let Err(e) = sink.send(inbound) {
                answer_untranslated(&e.into_inner(), &self.config.gateway.fqdn);
            }
            return;
        }
        if let Err(e) = self
            .context
            .events
            .send(RouterEvent::SipRequest(Box::new(inbound)))
        {
            if let RouterEvent::SipRequest(inbound) = e.into_inner() {
                answer_untranslated(&inbound, &self.config.gateway.fqdn);
            }
        }
    }
}

/// Mutual TLS with the Edge, then the SIP link until either side closes.
/// Serves a connection the listener admitted (from the Edge's addresses or `[sip]
/// allow_from`). The TLS handshake must end within `[sip] connect_timeout` of `accepted`,
/// however slowly its bytes come; `ticket` counts as authenticated once the certificate
/// names the Edge.
pub(super) fn serve_inbound(
    mut tcp: TcpStream,
    peer: SocketAddr,
    context: &Context,
    ticket: &mut super::admission::Ticket,
    accepted: std::time::Instant,
) -> String {
    // This connection's snapshot: a reload changes certificates for later handshakes only.
    let live = context.live.current();
    let deadline = accepted + live.config.sip.connect_timeout;
    let Some(sip_tls) = &live.sip_tls else {
        return "TLS set-up failed: no SIP TLS configuration".into();
    };
    let mut tls = match rustls::ServerConnection::new(Arc::clone(&sip_tls.server)) {
        Ok(c) => rustls::Connection::Server(c),
        Err(e) => return format!("TLS set-up failed: {e}"),
    };
    // One deadline for the whole handshake, not one per read.
    if let Err(error) = super::s2s::io::handshake(&mut tls, &mut tcp, deadline) {
        let reason = if error.kind() == std::io::ErrorKind::TimedOut {
            "no TLS handshake within [sip] connect_timeout of the accept".to_owned()
        } else {
            tls::sip::describe_handshake_failure(&error, &live.config.sip.ca)
        };
        crate::gateway::status::failure(
            &context.events,
            crate::gateway::status::ErrorKind::SipTls,
            crate::gateway::status::tls_reason(
                error.kind() == std::io::ErrorKind::TimedOut,
                &reason,
            ),
            peer.ip().to_string(),
            format!("inbound: {reason}"),
        );
        log_handshake_failure(context, peer, &reason);
        return format!("TLS handshake failed: {reason}");
    }
    // The certificate's chain, names and pin were checked in the handshake
    // (`tls::sip::sip_server_config`): only the Edge gets here.
    let names = tls
        .peer_certificates()
        .and_then(|certs| certs.first())
        .map(tls::names::san_names)
        .unwrap_or_default();
    ticket.authenticated();
    log::info!(
        "sip inbound {peer}: mutual TLS established ({:?}), Edge certificate names {}",
        tls.protocol_version(),
        names.join(", ")
    );
    let (commands_tx, commands) = crossbeam_channel::bounded(COMMAND_QUEUE);
    let ended = driver::drive(
        tls,
        tcp,
        driver::Params {
            peer,
            direction: "inbound",
            context,
            pinging: false,
            commands: &commands,
            commands_tx,
        },
    );
    ended.why
}

/// A failed handshake on 5061 is a warning a client can cause at will: a few lines a minute
/// per address, the next one counting those suppressed.
fn log_handshake_failure(context: &Context, peer: SocketAddr, reason: &str) {
    use crate::logsafe::Suppressed;
    if let Some(suppressed) = context
        .tls_refusals
        .allow(&peer.ip(), std::time::Instant::now())
    {
        log::warn!(
            "sip inbound {peer}: TLS refused: {reason}{}",
            Suppressed(suppressed)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_hex_and_differ() {
        let (a, b) = (random_tag(), random_tag());
        assert_eq!(a.len(), 16);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
