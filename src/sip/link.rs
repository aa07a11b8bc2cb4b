//! The SIP side of one connection with the Access Edge, sans-IO: plaintext octets in,
//! plaintext octets and events out. The gateway's shell (`gateway::edge`) wraps it in TLS
//! and a thread; tests drive it on a simulated clock.
//!
//! What a [`Link`] does by itself (RFC 3261 §8.2, §17, RFC 5626 §4.4.1):
//! - frames the stream ([`Framer`]); answers CRLFCRLF pings with CRLF; when configured as
//!   the pinging side, sends CRLFCRLF every `keepalive` and closes when no pong comes back;
//! - answers what cannot be typed with 400 (or closes when the stream cannot be framed, after
//!   a 400 when there is something to answer), and refuses with [`validate_request`] (505,
//!   416, 483, 405/501 with Allow, 420 with Unsupported, 415 with Accept, 406);
//! - runs server and client transactions ([`Transactions`]): retransmitted requests are
//!   absorbed, 100 Trying goes out for INVITE, Timers B/F/H fire;
//! - CANCEL (§9.2): 200 to the CANCEL and 487 to the INVITE it matches, 481 when none does;
//!   an ACK that matches nothing is dropped (an ACK is never answered);
//! - BENOTIFY (MS-SIPRE): handed on without a server transaction, never answered;
//! - a request the transaction user leaves unanswered is answered 408 after
//!   [`TU_TIMEOUT`] ([`TU_INVITE_TIMEOUT`] for INVITE): nothing waits forever.
//!
//! What it hands on as [`LinkEvent`]s: every new request that passed those checks (the
//! transaction user answers it through [`Link::respond`]; target checks, OPTIONS, dialogs and
//! translation are the user's), responses of client transactions, and their failures.
//!
//! ```text
//!  handle_input(bytes) ─▶ Framer ─▶ Ping ─────────────────────────────▶ CRLF out
//!                                 ─▶ Invalid / untypable request ───────▶ 400 out
//!                                 ─▶ Request ─ validate ─ refusal ──────▶ 4xx/5xx out
//!                                               └─ Transactions ─ new ─▶ LinkEvent::Request
//!                                 ─▶ Response ─ Transactions ───────────▶ LinkEvent::Response
//!  send_request(builder) ─ Via + branch ─ Transactions ─────────────────▶ request out
//!  respond(key, builder) ─ Transactions ────────────────────────────────▶ response out
//! ```
//!
//! Calling order: `handle_input` / `send_request` / `respond` / `handle_timeout(now)` as
//! things happen; then drain `poll_transmit` (write everything) and `poll_event`; then
//! sleep until `poll_timeout`. After [`LinkEvent::Closed`] the caller writes what
//! `poll_transmit` still gives and closes the connection.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

use super::build::{response_to, response_to_context, BuildError, MessageBuilder};
use super::frame::{Frame, FrameConfig, FrameError, Framer};
use super::name;
use super::request::{Incoming, Method, Request, Response};
use super::status::StatusCode;
use super::transaction::{
    new_branch, ClientEvent, ClientKey, Event, RequestDisposition, ServerKey, Timer,
    TransactionError, Transactions,
};
use super::validate::{validate_request, Policy};

/// The Microsoft method for a NOTIFY that expects no response.
pub const BENOTIFY: &str = "BENOTIFY";

/// At most this many server transactions wait for the transaction user on one link; more
/// requests are answered 503 with Retry-After (the Edge retries, nothing is lost silently).
pub const MAX_PENDING_SERVER: usize = 1024;
/// At most this many client transactions run on one link.
pub const MAX_PENDING_CLIENT: usize = 4096;
/// A non-INVITE request the transaction user has not answered within this long is answered
/// 408 by the link (the peer's Timer F fires at 32 s; an answer must come before).
pub const TU_TIMEOUT: Duration = Duration::from_secs(30);
/// The same for INVITE (a session the far side may take time to accept).
pub const TU_INVITE_TIMEOUT: Duration = Duration::from_secs(180);
/// How long the pinging side waits for the pong (RFC 5626 §4.4.1 says 10 s).
pub const PONG_TIMEOUT: Duration = Duration::from_secs(10);

/// Fills a buffer with random bytes (branches, tags); injected so tests are deterministic.
pub type RandomSource = Box<dyn FnMut(&mut [u8]) + Send>;

/// Configuration of one link.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// Framing limits and keepalive role.
    pub frame: FrameConfig,
    /// Checks on received requests.
    pub policy: Policy,
    /// Send a CRLFCRLF ping this often (the side that opened the connection); `None` to
    /// only answer pings.
    pub keepalive: Option<Duration>,
    /// The `sent-by` of the Via this side puts on its requests (`host:port`), and the
    /// transport token (`TLS`).
    pub via_sent_by: String,
}

impl LinkConfig {
    /// The policy of the gateway toward the Edge: the methods of the issue, BENOTIFY too.
    pub fn gateway_policy() -> Policy {
        let mut p = Policy::default();
        p.allowed_methods.push(Method::Other(BENOTIFY.into()));
        // A sips: Request-URI is refused by the transaction user with 403 and a log line
        // naming it; the scheme is known, so 416 would be wrong.
        p
    }
}

/// Why the link must be closed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LinkError {
    /// The stream cannot be framed any further.
    Framing(FrameError),
    /// No pong within [`PONG_TIMEOUT`] after our ping.
    KeepaliveTimeout,
}

impl fmt::Display for LinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkError::Framing(e) => write!(f, "framing: {e}"),
            LinkError::KeepaliveTimeout => {
                write!(f, "no keepalive pong within {} s", PONG_TIMEOUT.as_secs())
            }
        }
    }
}

impl std::error::Error for LinkError {}

/// Why a request could not be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendError {
    /// The builder holds a response.
    NotARequest,
    /// A header could not be added.
    Build(BuildError),
    /// The transaction layer refused it.
    Transaction(TransactionError),
    /// [`MAX_PENDING_CLIENT`] transactions are already running.
    TooManyTransactions {
        /// The limit.
        max: usize,
    },
    /// The link is closed.
    Closed,
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::NotARequest => f.write_str("a response was given where a request is needed"),
            SendError::Build(e) => write!(f, "cannot build the request: {e}"),
            SendError::Transaction(e) => write!(f, "transaction layer: {e}"),
            SendError::TooManyTransactions { max } => {
                write!(f, "{max} client transactions already running")
            }
            SendError::Closed => f.write_str("the connection is closed"),
        }
    }
}

impl std::error::Error for SendError {}

/// What the link reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEvent {
    /// A new request for the transaction user; answer it with [`Link::respond`] under `key`
    /// (BENOTIFY: `expects_response` is false and no answer is possible).
    Request {
        /// The server transaction.
        key: ServerKey,
        /// The request.
        request: Box<Request>,
        /// False for BENOTIFY.
        expects_response: bool,
    },
    /// An INVITE was cancelled: 487 has been sent; a later answer from the transaction user
    /// is refused with [`TransactionError::AlreadyFinal`].
    Cancelled {
        /// The INVITE's server transaction.
        key: ServerKey,
    },
    /// An ACK outside any transaction (the ACK of a 2xx: the dialog's business).
    Ack(Box<Request>),
    /// A response in a client transaction (provisional or final).
    Response {
        /// The client transaction.
        key: ClientKey,
        /// The response.
        response: Box<Response>,
    },
    /// A client transaction ended without a final response.
    ClientFailed {
        /// The client transaction.
        key: ClientKey,
        /// Timer B/F, or `None` for a transport error.
        timer: Option<Timer>,
    },
    /// A server transaction timed out (Timer H: no ACK).
    ServerTimedOut {
        /// The server transaction.
        key: ServerKey,
    },
    /// A request was refused by the link itself (for the shell's log line).
    Refused {
        /// The status sent (or that would have been sent, for an ACK).
        status: StatusCode,
        /// Why, lowercase.
        why: String,
        /// Method and Call-ID when known.
        summary: String,
    },
    /// A stray response (no client transaction matches): dropped.
    StrayResponse(Box<Response>),
    /// The link must close; write out what `poll_transmit` gives first.
    Closed(LinkError),
}

/// The sans-IO SIP connection; see the module documentation.
pub struct Link {
    config: LinkConfig,
    framer: Framer,
    transactions: Transactions,
    transmit: VecDeque<Vec<u8>>,
    events: VecDeque<LinkEvent>,
    random: RandomSource,
    next_ping: Option<Instant>,
    pong_deadline: Option<Instant>,
    /// Server transactions handed to the transaction user, with the time by which it must
    /// have answered finally.
    awaiting_user: HashMap<ServerKey, Instant>,
    closed: bool,
}

impl fmt::Debug for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Link")
            .field("transactions", &self.transactions.len())
            .field("closed", &self.closed)
            .finish()
    }
}

impl Link {
    /// A new link; `random` fills buffers with random bytes (branches and tags).
    pub fn new(now: Instant, config: LinkConfig, random: RandomSource) -> Link {
        Link {
            framer: Framer::new(config.frame),
            next_ping: config.keepalive.map(|k| now + k),
            config,
            transactions: Transactions::new(),
            transmit: VecDeque::new(),
            events: VecDeque::new(),
            random,
            pong_deadline: None,
            awaiting_user: HashMap::new(),
            closed: false,
        }
    }

    /// A fresh tag (To/From), 16 hex digits.
    pub fn new_tag(&mut self) -> String {
        let mut b = [0u8; 8];
        (self.random)(&mut b);
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    /// A fresh RFC 3261 branch.
    pub fn new_branch(&mut self) -> String {
        new_branch(&mut self.random)
    }

    /// Whether [`LinkEvent::Closed`] has been reported.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Plaintext octets received from the peer.
    pub fn handle_input(&mut self, now: Instant, bytes: &[u8]) {
        if self.closed {
            return;
        }
        self.framer.push(bytes);
        loop {
            match self.framer.next_frame() {
                Ok(None) => break,
                Ok(Some(frame)) => self.handle_frame(now, frame),
                Err(error) => {
                    if let Some(ctx) = error.answer() {
                        if !ctx.is_ack() {
                            let tag = self.new_tag();
                            if let Ok(b) = response_to_context(
                                ctx,
                                StatusCode::BAD_REQUEST,
                                Some(&reason_for(&error.to_string())),
                                Some(&tag),
                            ) {
                                self.transmit.push_back(b.to_bytes());
                            }
                        }
                    }
                    self.close(LinkError::Framing(error));
                    break;
                }
            }
        }
        self.drain(now);
    }

    fn close(&mut self, error: LinkError) {
        if !self.closed {
            self.closed = true;
            self.transactions.handle_transport_error();
            self.events.push_back(LinkEvent::Closed(error));
        }
    }

    fn refuse(&mut self, status: StatusCode, why: String, summary: String) {
        self.events.push_back(LinkEvent::Refused {
            status,
            why,
            summary,
        });
    }

    fn handle_frame(&mut self, now: Instant, frame: Frame) {
        match frame {
            Frame::Ping => self.transmit.push_back(b"\r\n".to_vec()),
            Frame::Pong => self.pong_deadline = None,
            Frame::Invalid { error, answer } => {
                let why = error.to_string();
                if let Some(ctx) = answer.filter(|c| !c.is_ack()) {
                    let tag = self.new_tag();
                    if let Ok(b) = response_to_context(
                        &ctx,
                        StatusCode::BAD_REQUEST,
                        Some(&reason_for(&why)),
                        Some(&tag),
                    ) {
                        self.transmit.push_back(b.to_bytes());
                    }
                    let summary = ctx.cseq.clone().unwrap_or_default();
                    self.refuse(StatusCode::BAD_REQUEST, why, summary);
                } else {
                    self.refuse(StatusCode::BAD_REQUEST, why, "dropped".into());
                }
            }
            Frame::Message(m) => match Incoming::from_message(m) {
                Ok(Incoming::Request(req)) => self.handle_request(now, *req),
                Ok(Incoming::Response(resp)) => {
                    if let Some(stray) = self.transactions.handle_response(now, *resp) {
                        self.events
                            .push_back(LinkEvent::StrayResponse(Box::new(stray)));
                    }
                }
                Err(e) => {
                    let status = e.status();
                    let why = e.to_string();
                    match e.answer.filter(|c| !c.is_ack()) {
                        Some(ctx) => {
                            let tag = self.new_tag();
                            if let Ok(b) = response_to_context(
                                &ctx,
                                status,
                                Some(&reason_for(&why)),
                                Some(&tag),
                            ) {
                                self.transmit.push_back(b.to_bytes());
                            }
                            let summary = ctx.cseq.clone().unwrap_or_default();
                            self.refuse(status, why, summary);
                        }
                        None => self.refuse(status, why, "dropped".into()),
                    }
                }
            },
        }
    }

    fn handle_request(&mut self, now: Instant, req: Request) {
        let summary = format!("{} {}", req.method, req.call_id);
        if let Err(refusal) = validate_request(&req, &self.config.policy) {
            if req.method != Method::Ack {
                let tag = self.new_tag();
                match refusal.response(&req, Some(&tag)) {
                    Ok(b) => self.transmit.push_back(b.to_bytes()),
                    Err(e) => log::debug!("sip: cannot answer {summary}: {e}"),
                }
            }
            self.refuse(refusal.status, refusal.why.to_string(), summary);
            return;
        }
        if matches!(&req.method, Method::Other(m) if m.eq_ignore_ascii_case(BENOTIFY)) {
            if let Some(key) = ServerKey::of_request(&req) {
                self.events.push_back(LinkEvent::Request {
                    key,
                    request: Box::new(req),
                    expects_response: false,
                });
            }
            return;
        }
        let is_new = !matches!(req.method, Method::Ack)
            && ServerKey::of_request(&req).is_some_and(|k| self.transactions.server(&k).is_none());
        if is_new && self.transactions.len().1 >= MAX_PENDING_SERVER {
            let tag = self.new_tag();
            if let Ok(mut b) = response_to(&req, StatusCode::SERVICE_UNAVAILABLE, Some(&tag)) {
                let _ = b.header("Retry-After", "5");
                self.transmit.push_back(b.to_bytes());
            }
            self.refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("{MAX_PENDING_SERVER} requests already pending"),
                summary,
            );
            return;
        }
        let cancel = req.method == Method::Cancel;
        match self.transactions.handle_request(now, req) {
            RequestDisposition::New(key) => {
                if cancel {
                    self.handle_cancel(now, key);
                    return;
                }
                if let Some(t) = self.transactions.server(&key) {
                    let request = Box::new(t.request().clone());
                    let wait = if request.method == Method::Invite {
                        TU_INVITE_TIMEOUT
                    } else {
                        TU_TIMEOUT
                    };
                    self.awaiting_user.insert(key.clone(), now + wait);
                    self.events.push_back(LinkEvent::Request {
                        key,
                        request,
                        expects_response: true,
                    });
                }
            }
            RequestDisposition::Absorbed => {}
            RequestDisposition::AckForDialog(ack) => self.events.push_back(LinkEvent::Ack(ack)),
            RequestDisposition::Unmatchable => {
                self.refuse(
                    StatusCode::BAD_REQUEST,
                    "request matches no transaction rule".into(),
                    summary,
                );
            }
        }
    }

    /// RFC 3261 §9.2: answer the CANCEL, and 487 the INVITE when it is still pending.
    fn handle_cancel(&mut self, now: Instant, key: ServerKey) {
        let invite_key = key.with_method(Method::Invite.as_str());
        let cancel = self.transactions.server(&key).map(|t| t.request().clone());
        let invite = self
            .transactions
            .server(&invite_key)
            .map(|t| t.request().clone());
        let Some(cancel) = cancel else { return };
        let tag = self.new_tag();
        match invite {
            Some(invite) => {
                if let Ok(b) = response_to(&cancel, StatusCode::OK, Some(&tag)) {
                    let _ = self.transactions.respond(now, &key, &b);
                }
                if let Ok(b) = response_to(&invite, StatusCode::REQUEST_TERMINATED, Some(&tag)) {
                    self.awaiting_user.remove(&invite_key);
                    if self.transactions.respond(now, &invite_key, &b).is_ok() {
                        self.events
                            .push_back(LinkEvent::Cancelled { key: invite_key });
                    }
                }
            }
            None => {
                if let Ok(b) = response_to(&cancel, StatusCode::CALL_DOES_NOT_EXIST, Some(&tag)) {
                    let _ = self.transactions.respond(now, &key, &b);
                }
                self.refuse(
                    StatusCode::CALL_DOES_NOT_EXIST,
                    "cancel matches no pending invite".into(),
                    format!("CANCEL {}", cancel.call_id),
                );
            }
        }
    }

    /// Answers the server transaction `key`.
    pub fn respond(
        &mut self,
        now: Instant,
        key: &ServerKey,
        response: &MessageBuilder,
    ) -> Result<(), TransactionError> {
        let r = self.transactions.respond(now, key, response);
        if response.status().is_some_and(|s| !s.is_provisional()) {
            self.awaiting_user.remove(key);
        }
        self.drain(now);
        r
    }

    /// Sends a request in a new client transaction: a Via with this side's `sent-by` and a
    /// fresh branch goes on top, Max-Forwards 70 is added when missing. The builder must
    /// not carry a Via.
    pub fn send_request(
        &mut self,
        now: Instant,
        mut request: MessageBuilder,
    ) -> Result<ClientKey, SendError> {
        if self.closed {
            return Err(SendError::Closed);
        }
        if request.status().is_some() {
            return Err(SendError::NotARequest);
        }
        if self.transactions.len().0 >= MAX_PENDING_CLIENT {
            return Err(SendError::TooManyTransactions {
                max: MAX_PENDING_CLIENT,
            });
        }
        let branch = self.new_branch();
        let via = format!(
            "SIP/2.0/TLS {};branch={branch};rport",
            self.config.via_sent_by
        );
        request
            .prepend_header(name::VIA.canonical, &via)
            .map_err(SendError::Build)?;
        if !request
            .headers()
            .any(|(n, _)| name::MAX_FORWARDS.matches(n.as_bytes()))
        {
            request
                .header(name::MAX_FORWARDS.canonical, "70")
                .map_err(SendError::Build)?;
        }
        let key = self
            .transactions
            .send_request(now, request.to_bytes())
            .map_err(SendError::Transaction)?;
        self.drain(now);
        Ok(key)
    }

    /// Sends a message outside any transaction (the ACK of a 2xx, §13.2.2.4).
    pub fn send_stateless(&mut self, request: &MessageBuilder) {
        if !self.closed {
            self.transmit.push_back(request.to_bytes());
        }
    }

    /// The transport failed: client transactions fail, the link is closed.
    pub fn handle_transport_error(&mut self, now: Instant) {
        self.closed = true;
        self.awaiting_user.clear();
        self.transactions.handle_transport_error();
        self.drain(now);
    }

    /// Fires timers (transactions, keepalive).
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.closed {
            return;
        }
        self.transactions.handle_timeout(now);
        let overdue: Vec<ServerKey> = self
            .awaiting_user
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for key in overdue {
            self.awaiting_user.remove(&key);
            let Some(req) = self.transactions.server(&key).map(|t| t.request().clone()) else {
                continue;
            };
            let tag = self.new_tag();
            if let Ok(b) = response_to(&req, StatusCode::REQUEST_TIMEOUT, Some(&tag)) {
                if self.transactions.respond(now, &key, &b).is_ok() {
                    self.refuse(
                        StatusCode::REQUEST_TIMEOUT,
                        "the transaction user did not answer in time".into(),
                        format!("{} {}", req.method, req.call_id),
                    );
                }
            }
        }
        if self.pong_deadline.is_some_and(|d| d <= now) {
            self.pong_deadline = None;
            self.close(LinkError::KeepaliveTimeout);
        } else if let (Some(at), Some(every)) = (self.next_ping, self.config.keepalive) {
            if at <= now {
                self.transmit.push_back(b"\r\n\r\n".to_vec());
                self.next_ping = Some(now + every);
                if self.pong_deadline.is_none() {
                    self.pong_deadline = Some(now + PONG_TIMEOUT);
                }
            }
        }
        self.drain(now);
    }

    /// The next time [`Link::handle_timeout`] must be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.closed {
            return None;
        }
        [
            self.transactions.poll_timeout(),
            self.next_ping,
            self.pong_deadline,
            self.awaiting_user.values().min().copied(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Appends the next octets to send to `out`.
    pub fn poll_transmit(&mut self, out: &mut Vec<u8>) -> bool {
        match self.transmit.pop_front() {
            Some(m) => {
                out.extend_from_slice(&m);
                true
            }
            None => false,
        }
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<LinkEvent> {
        self.events.pop_front()
    }

    fn drain(&mut self, _now: Instant) {
        let mut out = Vec::new();
        while self.transactions.poll_transmit(&mut out) {
            self.transmit.push_back(std::mem::take(&mut out));
        }
        while let Some(e) = self.transactions.poll_event() {
            self.events.push_back(match e {
                Event::Client(key, ClientEvent::Response(response)) => {
                    LinkEvent::Response { key, response }
                }
                Event::Client(key, ClientEvent::TimedOut(t)) => LinkEvent::ClientFailed {
                    key,
                    timer: Some(t),
                },
                Event::Client(key, ClientEvent::TransportError) => {
                    LinkEvent::ClientFailed { key, timer: None }
                }
                Event::Server(key, _) => LinkEvent::ServerTimedOut { key },
            });
        }
    }
}

/// A reason phrase from an error text: printable ASCII only, bounded.
fn reason_for(why: &str) -> String {
    let mut s: String = why
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .take(120)
        .collect();
    if let Some(first) = s.get(..1) {
        let upper = first.to_ascii_uppercase();
        s.replace_range(..1, &upper);
    }
    if s.is_empty() {
        s.push_str("Bad Request");
    }
    s
}

#[cfg(test)]
mod tests;
