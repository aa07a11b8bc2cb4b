//! SIP transactions over a reliable transport (RFC 3261 §17, TLS toward the Edge), sans-IO.
//!
//! In scope: client and server transactions for INVITE and non-INVITE requests, matching
//! by branch with the RFC 2543 fallback (§17.1.3, §17.2.3), the timers that matter on a
//! reliable transport, 100 Trying for INVITE, branch generation from an injected random
//! source. Out of scope: retransmission timers A, E, G (unreliable transports only), Timer
//! C and everything a proxy does, the RFC 6026 Accepted state, dialogs, CANCEL generation.
//!
//! On a reliable transport Timers D, I, J and K are zero, so Completed/Confirmed states end
//! at once. The timers kept are B (INVITE client, no response), F (non-INVITE client, no
//! final response) and H (INVITE server, no ACK for a non-2xx final), all 64·T1 = 32 s.
//!
//! ```text
//!  INVITE client:  Calling ─1xx─▶ Proceeding ─2xx─▶ Terminated (TU sends the ACK)
//!                     │  └──────3xx-6xx──▶ ACK sent ─▶ Terminated
//!                     └─Timer B─▶ TimedOut
//!  INVITE server:  Proceeding (100 Trying sent) ─2xx─▶ Terminated
//!                     └─3xx-6xx─▶ Completed ─ACK─▶ Terminated;  Completed ─Timer H─▶ TimedOut
//!  non-INVITE:     Trying ─1xx─▶ Proceeding ─final─▶ Terminated;  client: Timer F ─▶ TimedOut
//! ```
//!
//! Calling order for [`Transactions`] (one table per connection): `send_request` /
//! `handle_request` / `handle_response` / `respond` / `handle_timeout(now)` as things
//! happen, then drain `poll_transmit` and `poll_event`, then sleep until `poll_timeout`.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

use super::build::{response_to, MessageBuilder};
use super::grammar::split_list;
use super::header::{NameAddr, MAGIC_COOKIE};
use super::message::{parse_message, Message};
use super::name;
use super::request::{Method, Request, Response};
use super::status::StatusCode;

/// RFC 3261 T1, the round-trip estimate.
pub const T1: Duration = Duration::from_millis(500);

/// 64·T1: Timers B, F and H.
pub const TIMEOUT_64_T1: Duration = Duration::from_millis(64 * 500);

/// A transaction timer that matters on a reliable transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Timer {
    /// INVITE client: no response at all.
    B,
    /// Non-INVITE client: no final response.
    F,
    /// INVITE server: no ACK for a non-2xx final response.
    H,
}

impl fmt::Display for Timer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Timer::B => "transaction timer b",
            Timer::F => "transaction timer f",
            Timer::H => "transaction timer h",
        })
    }
}

/// Why a transaction operation is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransactionError {
    /// The octets given are not a well-formed request.
    NotARequest,
    /// The request's top Via has no RFC 3261 branch (we only send unique branches).
    NoBranch,
    /// A client transaction with this branch and method already exists.
    DuplicateBranch,
    /// The builder given to `respond` is a request, not a response.
    NotAResponse,
    /// The transaction has already sent its final response, or has ended.
    AlreadyFinal,
    /// No transaction has this key.
    UnknownTransaction,
    /// ACK is never answered and has no server transaction.
    AckHasNoTransaction,
}

impl fmt::Display for TransactionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TransactionError::NotARequest => "octets are not a well-formed request",
            TransactionError::NoBranch => "top via has no rfc 3261 branch",
            TransactionError::DuplicateBranch => "branch already in use",
            TransactionError::NotAResponse => "a request was given where a response is needed",
            TransactionError::AlreadyFinal => "final response already sent",
            TransactionError::UnknownTransaction => "no such transaction",
            TransactionError::AckHasNoTransaction => "ack has no server transaction",
        })
    }
}

impl std::error::Error for TransactionError {}

/// A new branch: the magic cookie and 128 random bits from `random` (the shell passes
/// `ring::rand::SystemRandom`; tests pass a seeded generator), hex-encoded.
pub fn new_branch(random: &mut impl FnMut(&mut [u8])) -> String {
    let mut bytes = [0u8; 16];
    random(&mut bytes);
    let mut s = String::with_capacity(MAGIC_COOKIE.len() + 32);
    s.push_str(MAGIC_COOKIE);
    for b in bytes {
        s.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        s.push(char::from(b"0123456789abcdef"[usize::from(b & 0xf)]));
    }
    s
}

/// Matches a response to a client transaction (§17.1.3): top Via branch and CSeq method.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientKey {
    /// The branch we generated.
    pub branch: String,
    /// The CSeq method.
    pub method: String,
}

impl ClientKey {
    /// The key a response belongs to.
    pub fn of_response(resp: &Response) -> Option<ClientKey> {
        Some(ClientKey {
            branch: resp.branch()?.to_owned(),
            method: resp.cseq.method.clone(),
        })
    }
}

/// Matches a request to a server transaction (§17.2.3).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ServerKey {
    /// The top Via has an RFC 3261 branch: branch, sent-by and method (ACK counts as INVITE).
    Rfc3261 {
        /// Branch.
        branch: String,
        /// sent-by, host lowercased.
        sent_by: String,
        /// Method, `INVITE` for an ACK.
        method: String,
    },
    /// RFC 2543 peers (no or bare cookie, RFC 4475 `badbranch`, `inv2543`).
    Rfc2543 {
        /// Request-URI.
        request_uri: String,
        /// From tag.
        from_tag: String,
        /// To tag of the request (empty for an initial INVITE and its ACK).
        to_tag: String,
        /// Call-ID.
        call_id: String,
        /// CSeq number.
        cseq: u32,
        /// Method, `INVITE` for an ACK.
        method: String,
        /// The whole top Via, as typed and written back.
        top_via: String,
    },
}

impl ServerKey {
    /// The key of a received request. For an ACK of the RFC 2543 kind the To tag is left
    /// empty: it is the tag of our response, checked by the transaction.
    pub fn of_request(req: &Request) -> Option<ServerKey> {
        let via = req.top_via()?;
        let method = match req.method {
            Method::Ack => "INVITE".to_owned(),
            ref m => m.as_str().to_owned(),
        };
        if via.has_rfc3261_branch() {
            let mut sent_by = via.host.to_ascii_lowercase();
            if let Some(p) = via.port {
                sent_by.push(':');
                sent_by.push_str(&p.to_string());
            }
            return Some(ServerKey::Rfc3261 {
                branch: via.branch()?.to_owned(),
                sent_by,
                method,
            });
        }
        let to_tag = match req.method {
            Method::Ack => String::new(),
            _ => req.to.tag().unwrap_or("").to_owned(),
        };
        Some(ServerKey::Rfc2543 {
            request_uri: req.uri.as_str().to_owned(),
            from_tag: req.from.tag().unwrap_or("").to_owned(),
            to_tag,
            call_id: req.call_id.clone(),
            cseq: req.cseq.seq,
            method,
            top_via: via.to_string(),
        })
    }

    /// The same key for another method: a CANCEL's key with `INVITE` finds the INVITE it
    /// cancels (§9.2).
    pub fn with_method(&self, method: &str) -> ServerKey {
        let mut k = self.clone();
        match &mut k {
            ServerKey::Rfc3261 { method: m, .. } | ServerKey::Rfc2543 { method: m, .. } => {
                *m = method.to_owned();
            }
        }
        k
    }
}

/// What a client transaction tells its user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    /// A response for the user: provisional, or final (for a 2xx to INVITE the user sends
    /// the ACK; for other finals the transaction has sent it).
    Response(Box<Response>),
    /// No (final) response in time.
    TimedOut(Timer),
    /// The transport failed (§17.1.4); the shell reports it.
    TransportError,
}

/// What a server transaction tells its user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerEvent {
    /// The ACK for our non-2xx final response never came.
    TimedOut(Timer),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientState {
    /// INVITE: Calling; non-INVITE: Trying.
    Started,
    Proceeding,
    Terminated,
}

/// A client transaction (§17.1) on a reliable transport.
#[derive(Debug)]
pub struct ClientTransaction {
    key: ClientKey,
    request: Request,
    invite: bool,
    state: ClientState,
    deadline: Option<(Timer, Instant)>,
    transmit: VecDeque<Vec<u8>>,
    events: VecDeque<ClientEvent>,
}

impl ClientTransaction {
    /// Starts a transaction for `request` (the octets to send, as built): they are parsed to
    /// learn what the transaction needs and queued for transmission. The top Via must carry
    /// an RFC 3261 branch (see [`new_branch`]).
    pub fn start(now: Instant, request: Vec<u8>) -> Result<ClientTransaction, TransactionError> {
        let req = parse_message(&request)
            .ok()
            .and_then(|m| Request::from_message(m).ok())
            .ok_or(TransactionError::NotARequest)?;
        if req.method == Method::Ack {
            return Err(TransactionError::AckHasNoTransaction);
        }
        if !req.top_via().is_some_and(|v| v.has_rfc3261_branch()) {
            return Err(TransactionError::NoBranch);
        }
        let key = ClientKey {
            branch: req.branch().unwrap_or_default().to_owned(),
            method: req.method.as_str().to_owned(),
        };
        let invite = req.method == Method::Invite;
        let timer = if invite { Timer::B } else { Timer::F };
        Ok(ClientTransaction {
            key,
            request: req,
            invite,
            state: ClientState::Started,
            deadline: Some((timer, now + TIMEOUT_64_T1)),
            transmit: VecDeque::from([request]),
            events: VecDeque::new(),
        })
    }

    /// The key responses are matched with.
    pub fn key(&self) -> &ClientKey {
        &self.key
    }

    /// The request this transaction sent.
    pub fn request(&self) -> &Request {
        &self.request
    }

    /// Feeds a response that matched [`ClientTransaction::key`].
    pub fn handle_response(&mut self, _now: Instant, resp: Response) {
        if self.state == ClientState::Terminated {
            return;
        }
        if resp.status.is_provisional() {
            self.state = ClientState::Proceeding;
            if self.invite {
                // Timer B only guards the Calling state.
                self.deadline = None;
            }
        } else {
            if self.invite && !resp.status.is_success() {
                if let Some(ack) = self.ack_for(&resp) {
                    self.transmit.push_back(ack);
                }
            }
            // Completed lasts Timer D / K, zero on a reliable transport.
            self.state = ClientState::Terminated;
            self.deadline = None;
        }
        self.events.push_back(ClientEvent::Response(Box::new(resp)));
    }

    /// The ACK for a non-2xx final response to our INVITE (§17.1.1.3).
    fn ack_for(&self, resp: &Response) -> Option<Vec<u8>> {
        let m: &Message = self.request.message();
        let text = |f: super::message::Field<'_>| f.value_str().map(|v| v.into_owned());
        let top_via_field = text(m.first(name::VIA)?)?;
        let top_via = split_list(top_via_field.as_bytes()).next()?;
        let to = text(resp.message().first(name::TO)?)?;
        let mut b = MessageBuilder::request(&Method::Ack, &self.request.uri);
        b.header(name::VIA.canonical, std::str::from_utf8(top_via).ok()?)
            .ok()?;
        b.header(name::MAX_FORWARDS.canonical, "70").ok()?;
        for f in m.all(name::ROUTE) {
            b.header(name::ROUTE.canonical, &text(f)?).ok()?;
        }
        b.header(name::FROM.canonical, &text(m.first(name::FROM)?)?)
            .ok()?;
        b.header(name::TO.canonical, &to).ok()?;
        b.header(name::CALL_ID.canonical, &self.request.call_id)
            .ok()?;
        b.header(
            name::CSEQ.canonical,
            &format!("{} ACK", self.request.cseq.seq),
        )
        .ok()?;
        Some(b.to_bytes())
    }

    /// Fires the timer if `now` has reached it.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some((timer, at)) = self.deadline {
            if now >= at {
                self.deadline = None;
                self.state = ClientState::Terminated;
                self.events.push_back(ClientEvent::TimedOut(timer));
            }
        }
    }

    /// The connection failed: the transaction ends (§17.1.4).
    pub fn handle_transport_error(&mut self) {
        if self.state != ClientState::Terminated {
            self.state = ClientState::Terminated;
            self.deadline = None;
            self.events.push_back(ClientEvent::TransportError);
        }
    }

    /// When [`ClientTransaction::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadline.map(|(_, at)| at)
    }

    /// Appends the next message to send to `out`; false when there is none.
    pub fn poll_transmit(&mut self, out: &mut Vec<u8>) -> bool {
        match self.transmit.pop_front() {
            Some(m) => {
                out.extend_from_slice(&m);
                true
            }
            None => false,
        }
    }

    /// The next event for the user.
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    /// True once the transaction has ended (its events may still be pending).
    pub fn is_terminated(&self) -> bool {
        self.state == ClientState::Terminated
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ServerState {
    /// Non-INVITE before any response.
    Trying,
    Proceeding,
    /// INVITE after a non-2xx final: waiting for the ACK.
    Completed,
    Terminated,
}

/// A server transaction (§17.2) on a reliable transport.
#[derive(Debug)]
pub struct ServerTransaction {
    request: Request,
    invite: bool,
    state: ServerState,
    last_response: Option<Vec<u8>>,
    response_to_tag: Option<String>,
    deadline: Option<(Timer, Instant)>,
    transmit: VecDeque<Vec<u8>>,
    events: VecDeque<ServerEvent>,
}

impl ServerTransaction {
    /// Creates the transaction for a new request; an INVITE is answered 100 Trying at once
    /// (§17.2.1, the TU may take longer than 200 ms).
    pub fn new(_now: Instant, request: Request) -> Result<ServerTransaction, TransactionError> {
        if request.method == Method::Ack {
            return Err(TransactionError::AckHasNoTransaction);
        }
        let invite = request.method == Method::Invite;
        let mut t = ServerTransaction {
            invite,
            state: if invite {
                ServerState::Proceeding
            } else {
                ServerState::Trying
            },
            last_response: None,
            response_to_tag: None,
            deadline: None,
            transmit: VecDeque::new(),
            events: VecDeque::new(),
            request,
        };
        if invite {
            if let Ok(b) = response_to(&t.request, StatusCode::TRYING, None) {
                let bytes = b.to_bytes();
                t.last_response = Some(bytes.clone());
                t.transmit.push_back(bytes);
            }
        }
        Ok(t)
    }

    /// The request that created the transaction.
    pub fn request(&self) -> &Request {
        &self.request
    }

    /// Sends a response built by the user (normally from [`response_to`]).
    pub fn respond(
        &mut self,
        now: Instant,
        response: &MessageBuilder,
    ) -> Result<(), TransactionError> {
        let status = response.status().ok_or(TransactionError::NotAResponse)?;
        if matches!(self.state, ServerState::Completed | ServerState::Terminated) {
            return Err(TransactionError::AlreadyFinal);
        }
        let bytes = response.to_bytes();
        self.transmit.push_back(bytes.clone());
        self.last_response = Some(bytes);
        if status.is_provisional() {
            self.state = ServerState::Proceeding;
            return Ok(());
        }
        if self.invite && !status.is_success() {
            self.response_to_tag = response
                .headers()
                .find(|(n, _)| name::TO.matches(n.as_bytes()))
                .and_then(|(_, v)| NameAddr::parse(v.as_bytes()).ok())
                .and_then(|to| to.tag().map(str::to_owned));
            self.state = ServerState::Completed;
            self.deadline = Some((Timer::H, now + TIMEOUT_64_T1));
        } else {
            // 2xx to INVITE: the TU owns it (§17.2.1). Non-INVITE: Timer J is zero.
            self.state = ServerState::Terminated;
            self.deadline = None;
        }
        Ok(())
    }

    /// Feeds a request matched to this transaction: a retransmission (answered with the
    /// last response again) or the ACK for a non-2xx final response.
    pub fn handle_request(&mut self, _now: Instant, req: &Request) {
        if req.method == Method::Ack {
            if self.state == ServerState::Completed {
                // Confirmed lasts Timer I, zero on a reliable transport.
                self.state = ServerState::Terminated;
                self.deadline = None;
            }
            return;
        }
        if matches!(self.state, ServerState::Proceeding | ServerState::Completed) {
            if let Some(last) = &self.last_response {
                self.transmit.push_back(last.clone());
            }
        }
    }

    /// True when `ack` is the ACK of our non-2xx response (RFC 2543 matching also compares
    /// the To tag with the one we sent).
    fn acks_our_response(&self, ack: &Request) -> bool {
        match &self.response_to_tag {
            Some(tag) => ack.to.tag() == Some(tag.as_str()),
            None => true,
        }
    }

    /// Fires the timer if `now` has reached it.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some((timer, at)) = self.deadline {
            if now >= at {
                self.deadline = None;
                self.state = ServerState::Terminated;
                self.events.push_back(ServerEvent::TimedOut(timer));
            }
        }
    }

    /// When [`ServerTransaction::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadline.map(|(_, at)| at)
    }

    /// Appends the next message to send to `out`; false when there is none.
    pub fn poll_transmit(&mut self, out: &mut Vec<u8>) -> bool {
        match self.transmit.pop_front() {
            Some(m) => {
                out.extend_from_slice(&m);
                true
            }
            None => false,
        }
    }

    /// The next event for the user.
    pub fn poll_event(&mut self) -> Option<ServerEvent> {
        self.events.pop_front()
    }

    /// True once the transaction has ended.
    pub fn is_terminated(&self) -> bool {
        self.state == ServerState::Terminated
    }
}

/// What [`Transactions::handle_request`] did with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestDisposition {
    /// A new request: a server transaction now exists under this key; the user answers
    /// through [`Transactions::respond`].
    New(ServerKey),
    /// A retransmission or the ACK of a non-2xx response: handled here.
    Absorbed,
    /// An ACK matching no transaction (the ACK of a 2xx): for the dialog layer.
    AckForDialog(Box<Request>),
    /// The request has no top Via: it cannot be answered; drop it.
    Unmatchable,
}

/// An event of one transaction, with its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// From a client transaction.
    Client(ClientKey, ClientEvent),
    /// From a server transaction.
    Server(ServerKey, ServerEvent),
}

/// All transactions of one connection.
///
/// # DoS warning
/// `handle_timeout` and `poll_timeout` visit every transaction; the shell bounds their
/// number (one table per connection, a cap on concurrent requests).
#[derive(Debug, Default)]
pub struct Transactions {
    clients: HashMap<ClientKey, ClientTransaction>,
    servers: HashMap<ServerKey, ServerTransaction>,
    transmit: VecDeque<Vec<u8>>,
    events: VecDeque<Event>,
}

impl Transactions {
    /// An empty table.
    pub fn new() -> Transactions {
        Transactions::default()
    }

    /// Number of live transactions (client, server).
    pub fn len(&self) -> (usize, usize) {
        (self.clients.len(), self.servers.len())
    }

    /// True when there is no live transaction.
    pub fn is_empty(&self) -> bool {
        self.clients.is_empty() && self.servers.is_empty()
    }

    fn drain_client(&mut self, key: &ClientKey) {
        let Some(t) = self.clients.get_mut(key) else {
            return;
        };
        let mut m = Vec::new();
        while t.poll_transmit(&mut m) {
            self.transmit.push_back(std::mem::take(&mut m));
        }
        while let Some(e) = t.poll_event() {
            self.events.push_back(Event::Client(key.clone(), e));
        }
        if t.is_terminated() {
            self.clients.remove(key);
        }
    }

    fn drain_server(&mut self, key: &ServerKey) {
        let Some(t) = self.servers.get_mut(key) else {
            return;
        };
        let mut m = Vec::new();
        while t.poll_transmit(&mut m) {
            self.transmit.push_back(std::mem::take(&mut m));
        }
        while let Some(e) = t.poll_event() {
            self.events.push_back(Event::Server(key.clone(), e));
        }
        if t.is_terminated() {
            self.servers.remove(key);
        }
    }

    /// Starts a client transaction for the request octets (see [`ClientTransaction::start`]).
    pub fn send_request(
        &mut self,
        now: Instant,
        request: Vec<u8>,
    ) -> Result<ClientKey, TransactionError> {
        let t = ClientTransaction::start(now, request)?;
        let key = t.key().clone();
        if self.clients.contains_key(&key) {
            return Err(TransactionError::DuplicateBranch);
        }
        self.clients.insert(key.clone(), t);
        self.drain_client(&key);
        Ok(key)
    }

    /// Routes a received request (already validated by the message layer).
    pub fn handle_request(&mut self, now: Instant, req: Request) -> RequestDisposition {
        let Some(key) = ServerKey::of_request(&req) else {
            return RequestDisposition::Unmatchable;
        };
        if let Some(t) = self.servers.get_mut(&key) {
            if req.method == Method::Ack && !t.acks_our_response(&req) {
                return RequestDisposition::AckForDialog(Box::new(req));
            }
            t.handle_request(now, &req);
            self.drain_server(&key);
            return RequestDisposition::Absorbed;
        }
        if req.method == Method::Ack {
            return RequestDisposition::AckForDialog(Box::new(req));
        }
        match ServerTransaction::new(now, req) {
            Ok(t) => {
                self.servers.insert(key.clone(), t);
                self.drain_server(&key);
                RequestDisposition::New(key)
            }
            Err(_) => RequestDisposition::Unmatchable,
        }
    }

    /// The server transaction under `key` (its request, state).
    pub fn server(&self, key: &ServerKey) -> Option<&ServerTransaction> {
        self.servers.get(key)
    }

    /// Sends a response in the server transaction `key`.
    pub fn respond(
        &mut self,
        now: Instant,
        key: &ServerKey,
        response: &MessageBuilder,
    ) -> Result<(), TransactionError> {
        let t = self
            .servers
            .get_mut(key)
            .ok_or(TransactionError::UnknownTransaction)?;
        t.respond(now, response)?;
        self.drain_server(key);
        Ok(())
    }

    /// Routes a received response; gives it back when no transaction matches (a 2xx
    /// retransmission for the dialog layer, or a stray to drop, §17.1.3).
    pub fn handle_response(&mut self, now: Instant, resp: Response) -> Option<Response> {
        let Some(key) = ClientKey::of_response(&resp) else {
            return Some(resp);
        };
        match self.clients.get_mut(&key) {
            Some(t) => {
                t.handle_response(now, resp);
                self.drain_client(&key);
                None
            }
            None => Some(resp),
        }
    }

    /// The connection failed: every client transaction ends with
    /// [`ClientEvent::TransportError`], server transactions are dropped.
    pub fn handle_transport_error(&mut self) {
        let keys: Vec<ClientKey> = self.clients.keys().cloned().collect();
        for k in keys {
            if let Some(t) = self.clients.get_mut(&k) {
                t.handle_transport_error();
            }
            self.drain_client(&k);
        }
        self.servers.clear();
    }

    /// Fires every timer that `now` has reached.
    pub fn handle_timeout(&mut self, now: Instant) {
        let due = |at: Option<Instant>| at.is_some_and(|at| at <= now);
        let clients: Vec<ClientKey> = self
            .clients
            .iter()
            .filter(|(_, t)| due(t.poll_timeout()))
            .map(|(k, _)| k.clone())
            .collect();
        for k in clients {
            if let Some(t) = self.clients.get_mut(&k) {
                t.handle_timeout(now);
            }
            self.drain_client(&k);
        }
        let servers: Vec<ServerKey> = self
            .servers
            .iter()
            .filter(|(_, t)| due(t.poll_timeout()))
            .map(|(k, _)| k.clone())
            .collect();
        for k in servers {
            if let Some(t) = self.servers.get_mut(&k) {
                t.handle_timeout(now);
            }
            self.drain_server(&k);
        }
    }

    /// The earliest timer.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let c = self
            .clients
            .values()
            .filter_map(ClientTransaction::poll_timeout);
        let s = self
            .servers
            .values()
            .filter_map(ServerTransaction::poll_timeout);
        c.chain(s).min()
    }

    /// Appends the next message to send to `out`, in the order they were produced.
    pub fn poll_transmit(&mut self, out: &mut Vec<u8>) -> bool {
        match self.transmit.pop_front() {
            Some(m) => {
                out.extend_from_slice(&m);
                true
            }
            None => false,
        }
    }

    /// The next event, in order.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::build::MessageBuilder;
    use crate::sip::uri::Uri;

    fn rng(seed: u64) -> impl FnMut(&mut [u8]) {
        let mut s = seed;
        move |buf: &mut [u8]| {
            for b in buf {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                *b = s as u8;
            }
        }
    }

    fn request_bytes(method: Method, branch: &str) -> Vec<u8> {
        let uri = Uri::parse("sip:alice@contoso.com").unwrap();
        let mut b = MessageBuilder::request(&method, &uri);
        b.header(
            "Via",
            &format!("SIP/2.0/TLS gw.example.com:5061;branch={branch}"),
        )
        .unwrap()
        .header("Max-Forwards", "70")
        .unwrap()
        .header("Route", "<sip:edge.contoso.com;lr>")
        .unwrap()
        .header("From", "<sip:bob@gmail.com>;tag=gw1")
        .unwrap()
        .header("To", "<sip:alice@contoso.com>")
        .unwrap()
        .header("Call-ID", "call-9")
        .unwrap()
        .header("CSeq", &format!("5 {method}"))
        .unwrap();
        b.to_bytes()
    }

    fn parse_req(bytes: &[u8]) -> Request {
        Request::from_message(parse_message(bytes).unwrap()).unwrap()
    }

    fn parse_resp(bytes: &[u8]) -> Response {
        Response::from_message(parse_message(bytes).unwrap()).unwrap()
    }

    /// The peer's answer to a request we sent.
    fn answer(req_bytes: &[u8], status: StatusCode) -> Response {
        let req = parse_req(req_bytes);
        parse_resp(&response_to(&req, status, Some("edge1")).unwrap().to_bytes())
    }

    fn drain(t: &mut Transactions) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut m = Vec::new();
        while t.poll_transmit(&mut m) {
            out.push(std::mem::take(&mut m));
        }
        out
    }

    #[test]
    fn branches_are_unique_and_cookied() {
        let mut r = rng(7);
        let a = new_branch(&mut r);
        let b = new_branch(&mut r);
        assert!(a.starts_with("z9hG4bK") && a.len() == 39);
        assert_ne!(a, b);
    }

    #[test]
    fn invite_client_failure_sends_ack() {
        let now = Instant::now();
        let mut t = Transactions::new();
        let branch = new_branch(&mut rng(1));
        let invite = request_bytes(Method::Invite, &branch);
        let key = t.send_request(now, invite.clone()).unwrap();
        assert_eq!(drain(&mut t), vec![invite.clone()]);
        assert_eq!(t.poll_timeout(), Some(now + TIMEOUT_64_T1));
        assert!(t
            .handle_response(now, answer(&invite, StatusCode::RINGING))
            .is_none());
        assert_eq!(t.poll_timeout(), None, "timer B ends with Calling");
        assert!(t
            .handle_response(now, answer(&invite, StatusCode::BUSY_HERE))
            .is_none());
        let sent = drain(&mut t);
        assert_eq!(sent.len(), 1);
        let ack = parse_req(&sent[0]);
        assert_eq!(ack.method, Method::Ack);
        assert_eq!(ack.branch(), Some(branch.as_str()));
        assert_eq!(ack.to.tag(), Some("edge1"));
        assert_eq!(ack.cseq.seq, 5);
        assert_eq!(ack.cseq.method, "ACK");
        assert_eq!(ack.route.len(), 1);
        assert_eq!(ack.uri.as_str(), "sip:alice@contoso.com");
        let events: Vec<Event> = std::iter::from_fn(|| t.poll_event()).collect();
        assert_eq!(events.len(), 2);
        assert!(
            matches!(&events[1], Event::Client(k, ClientEvent::Response(r)) if *k == key && r.status == StatusCode::BUSY_HERE)
        );
        assert!(t.is_empty());
    }

    #[test]
    fn invite_client_2xx_is_for_the_user_and_timer_b_fires() {
        let now = Instant::now();
        let mut t = Transactions::new();
        let invite = request_bytes(Method::Invite, "z9hG4bKa1");
        t.send_request(now, invite.clone()).unwrap();
        drain(&mut t);
        assert!(t
            .handle_response(now, answer(&invite, StatusCode::OK))
            .is_none());
        assert!(drain(&mut t).is_empty(), "the TU sends the ACK of a 2xx");
        assert!(t.is_empty());
        // A retransmitted 2xx goes back to the caller (dialog layer).
        assert!(t
            .handle_response(now, answer(&invite, StatusCode::OK))
            .is_some());

        let invite = request_bytes(Method::Invite, "z9hG4bKa2");
        t.send_request(now, invite).unwrap();
        t.handle_timeout(now + Duration::from_secs(31));
        assert!(!t.is_empty());
        t.handle_timeout(now + TIMEOUT_64_T1);
        let events: Vec<Event> = std::iter::from_fn(|| t.poll_event()).collect();
        assert!(matches!(
            events.last(),
            Some(Event::Client(_, ClientEvent::TimedOut(Timer::B)))
        ));
        assert!(t.is_empty());
    }

    #[test]
    fn non_invite_client_timer_f_runs_through_proceeding() {
        let now = Instant::now();
        let mut t = Transactions::new();
        let msg = request_bytes(Method::Message, "z9hG4bKm1");
        t.send_request(now, msg.clone()).unwrap();
        assert_eq!(
            t.send_request(now, msg.clone()),
            Err(TransactionError::DuplicateBranch)
        );
        t.handle_response(now, answer(&msg, StatusCode::TRYING));
        assert_eq!(t.poll_timeout(), Some(now + TIMEOUT_64_T1));
        t.handle_timeout(now + TIMEOUT_64_T1);
        let last = std::iter::from_fn(|| t.poll_event()).last();
        assert!(matches!(
            last,
            Some(Event::Client(_, ClientEvent::TimedOut(Timer::F)))
        ));
        // And a final response ends it without an ACK.
        let msg = request_bytes(Method::Message, "z9hG4bKm2");
        t.send_request(now, msg.clone()).unwrap();
        drain(&mut t);
        t.handle_response(now, answer(&msg, StatusCode::NOT_FOUND));
        assert!(drain(&mut t).is_empty());
        assert!(t.is_empty());
    }

    #[test]
    fn client_refuses_what_it_cannot_match() {
        let now = Instant::now();
        assert_eq!(
            ClientTransaction::start(now, request_bytes(Method::Message, "abc")).err(),
            Some(TransactionError::NoBranch)
        );
        assert_eq!(
            ClientTransaction::start(now, request_bytes(Method::Message, "z9hG4bK")).err(),
            Some(TransactionError::NoBranch)
        );
        assert_eq!(
            ClientTransaction::start(now, b"garbage".to_vec()).err(),
            Some(TransactionError::NotARequest)
        );
        let mut t = Transactions::new();
        t.send_request(now, request_bytes(Method::Options, "z9hG4bKo"))
            .unwrap();
        t.handle_transport_error();
        assert!(matches!(
            t.poll_event(),
            Some(Event::Client(_, ClientEvent::TransportError))
        ));
    }

    #[test]
    fn invite_server_trying_failure_ack() {
        let now = Instant::now();
        let mut t = Transactions::new();
        let invite = parse_req(&request_bytes(Method::Invite, "z9hG4bKs1"));
        let RequestDisposition::New(key) = t.handle_request(now, invite.clone()) else {
            panic!()
        };
        let sent = drain(&mut t);
        assert_eq!(parse_resp(&sent[0]).status, StatusCode::TRYING);
        assert_eq!(parse_resp(&sent[0]).to.tag(), None);
        // A retransmitted INVITE gets the last response again.
        assert_eq!(
            t.handle_request(now, invite.clone()),
            RequestDisposition::Absorbed
        );
        assert_eq!(drain(&mut t).len(), 1);
        let req = t.server(&key).unwrap().request().clone();
        let busy = response_to(&req, StatusCode::BUSY_HERE, Some("gwtag")).unwrap();
        t.respond(now, &key, &busy).unwrap();
        assert_eq!(parse_resp(&drain(&mut t)[0]).status, StatusCode::BUSY_HERE);
        assert_eq!(
            t.respond(now, &key, &busy),
            Err(TransactionError::AlreadyFinal)
        );
        assert_eq!(t.poll_timeout(), Some(now + TIMEOUT_64_T1));
        let ack_bytes = String::from_utf8(request_bytes(Method::Ack, "z9hG4bKs1"))
            .unwrap()
            .replace(
                "<sip:alice@contoso.com>\r\n",
                "<sip:alice@contoso.com>;tag=gwtag\r\n",
            );
        let ack = parse_req(ack_bytes.as_bytes());
        assert_eq!(
            t.handle_request(now, ack.clone()),
            RequestDisposition::Absorbed
        );
        assert!(t.is_empty());
        // An ACK with no transaction is the ACK of a 2xx: for the dialog layer.
        assert!(matches!(
            t.handle_request(now, ack),
            RequestDisposition::AckForDialog(_)
        ));
    }

    #[test]
    fn invite_server_timer_h() {
        let now = Instant::now();
        let mut t = Transactions::new();
        let invite = parse_req(&request_bytes(Method::Invite, "z9hG4bKs2"));
        let RequestDisposition::New(key) = t.handle_request(now, invite.clone()) else {
            panic!()
        };
        t.respond(
            now,
            &key,
            &response_to(&invite, StatusCode::DECLINE, Some("x")).unwrap(),
        )
        .unwrap();
        t.handle_timeout(now + TIMEOUT_64_T1);
        assert_eq!(
            std::iter::from_fn(|| t.poll_event()).last(),
            Some(Event::Server(key, ServerEvent::TimedOut(Timer::H)))
        );
        assert!(t.is_empty());
    }

    #[test]
    fn non_invite_server_ends_with_its_final_response() {
        let now = Instant::now();
        let mut t = Transactions::new();
        let msg = parse_req(&request_bytes(Method::Message, "z9hG4bKs3"));
        let RequestDisposition::New(key) = t.handle_request(now, msg.clone()) else {
            panic!()
        };
        assert!(drain(&mut t).is_empty(), "no 100 Trying for non-INVITE");
        let req_builder = MessageBuilder::request(&Method::Message, &msg.uri);
        assert_eq!(
            t.respond(now, &key, &req_builder),
            Err(TransactionError::NotAResponse)
        );
        t.respond(
            now,
            &key,
            &response_to(&msg, StatusCode::OK, Some("t")).unwrap(),
        )
        .unwrap();
        assert_eq!(drain(&mut t).len(), 1);
        assert!(t.is_empty());
        assert_eq!(
            t.respond(now, &key, &response_to(&msg, StatusCode::OK, None).unwrap()),
            Err(TransactionError::UnknownTransaction)
        );
    }

    #[test]
    fn rfc2543_matching() {
        let now = Instant::now();
        let mut t = Transactions::new();
        // RFC 4475 inv2543: no branch at all.
        let bytes = crate::sip::rfc4475_tests::load("inv2543.dat");
        let invite = parse_req(&bytes);
        let RequestDisposition::New(key) = t.handle_request(now, invite.clone()) else {
            panic!()
        };
        assert!(matches!(key, ServerKey::Rfc2543 { .. }));
        assert_eq!(
            t.handle_request(now, invite.clone()),
            RequestDisposition::Absorbed
        );
        let cancel_key = key.with_method("CANCEL");
        assert_ne!(cancel_key, key);
        t.respond(
            now,
            &key,
            &response_to(&invite, StatusCode::NOT_FOUND, Some("nf")).unwrap(),
        )
        .unwrap();
        // An ACK with another To tag is not ours.
        let ack_text = String::from_utf8(bytes.clone())
            .unwrap()
            .replace("INVITE sip:", "ACK sip:")
            .replace("56 INVITE", "56 ACK")
            .replace("user=phone\r\nCall-ID", "user=phone;tag=other\r\nCall-ID");
        let other = parse_req(ack_text.as_bytes());
        assert!(matches!(
            t.handle_request(now, other),
            RequestDisposition::AckForDialog(_)
        ));
        let ours = parse_req(ack_text.replace("tag=other", "tag=nf").as_bytes());
        assert_eq!(t.handle_request(now, ours), RequestDisposition::Absorbed);
        assert!(t.is_empty());
        // RFC 4475 badbranch: the bare cookie is matched the 2543 way too.
        let v = parse_req(&request_bytes(Method::Options, "z9hG4bK"));
        assert!(matches!(
            ServerKey::of_request(&v),
            Some(ServerKey::Rfc2543 { .. })
        ));
    }

    /// Moves everything `from` has to send through a stream framer, as the peer reads it.
    fn transfer(from: &mut Transactions, to: &mut crate::sip::frame::Framer) -> Vec<Message> {
        let mut wire = Vec::new();
        while from.poll_transmit(&mut wire) {}
        to.push(&wire);
        let mut out = Vec::new();
        while let Ok(Some(f)) = to.next_frame() {
            match f {
                crate::sip::frame::Frame::Message(m) => out.push(m),
                other => panic!("{other:?}"),
            }
        }
        out
    }

    #[test]
    fn a_pair_on_a_simulated_clock() {
        use crate::sip::frame::{FrameConfig, Framer};
        let mut now = Instant::now();
        let mut random = rng(42);
        let (mut uac, mut uas) = (Transactions::new(), Transactions::new());
        let (mut to_uac, mut to_uas) = (
            Framer::new(FrameConfig::default()),
            Framer::new(FrameConfig::default()),
        );

        // INVITE → 100 Trying, 486 → ACK (hop-by-hop, same branch).
        let branch = new_branch(&mut random);
        uac.send_request(now, request_bytes(Method::Invite, &branch))
            .unwrap();
        let got = transfer(&mut uac, &mut to_uas);
        assert_eq!(got.len(), 1);
        let RequestDisposition::New(key) =
            uas.handle_request(now, Request::from_message(got[0].clone()).unwrap())
        else {
            panic!()
        };
        let req = uas.server(&key).unwrap().request().clone();
        uas.respond(
            now,
            &key,
            &response_to(&req, StatusCode::BUSY_HERE, Some("uas")).unwrap(),
        )
        .unwrap();
        for m in transfer(&mut uas, &mut to_uac) {
            assert!(uac
                .handle_response(now, Response::from_message(m).unwrap())
                .is_none());
        }
        let statuses: Vec<u16> = std::iter::from_fn(|| uac.poll_event())
            .filter_map(|e| match e {
                Event::Client(_, ClientEvent::Response(r)) => Some(r.status.as_u16()),
                _ => None,
            })
            .collect();
        assert_eq!(statuses, [100, 486]);
        let acks = transfer(&mut uac, &mut to_uas);
        assert_eq!(acks[0].method(), Some("ACK"));
        let ack = Request::from_message(acks[0].clone()).unwrap();
        assert_eq!(uas.handle_request(now, ack), RequestDisposition::Absorbed);
        assert!(uac.is_empty() && uas.is_empty());

        // MESSAGE → 200.
        uac.send_request(
            now,
            request_bytes(Method::Message, &new_branch(&mut random)),
        )
        .unwrap();
        let m = transfer(&mut uac, &mut to_uas).remove(0);
        let RequestDisposition::New(key) =
            uas.handle_request(now, Request::from_message(m).unwrap())
        else {
            panic!()
        };
        let req = uas.server(&key).unwrap().request().clone();
        uas.respond(
            now,
            &key,
            &response_to(&req, StatusCode::OK, Some("u2")).unwrap(),
        )
        .unwrap();
        for m in transfer(&mut uas, &mut to_uac) {
            uac.handle_response(now, Response::from_message(m).unwrap());
        }
        assert!(
            matches!(uac.poll_event(), Some(Event::Client(_, ClientEvent::Response(r))) if r.status == StatusCode::OK)
        );
        assert!(uac.is_empty() && uas.is_empty());

        // OPTIONS nobody answers: jump the clock to the next deadline.
        uac.send_request(
            now,
            request_bytes(Method::Options, &new_branch(&mut random)),
        )
        .unwrap();
        transfer(&mut uac, &mut to_uas);
        while let Some(at) = uac.poll_timeout() {
            now = at;
            uac.handle_timeout(now);
        }
        assert!(matches!(
            uac.poll_event(),
            Some(Event::Client(_, ClientEvent::TimedOut(Timer::F)))
        ));
    }
}
