//! The inbound S2S session, sans-IO: the receiving side of a server-to-server stream.
//!
//! Owns: the stream header checks, feature advertisement, STARTTLS and SASL EXTERNAL
//! negotiation (RFC 6120 §5, §6; XEP-0178), the receiving and authoritative roles of
//! dialback (XEP-0220 §2.1–2.2, keys from XEP-0185), the authenticated domain pairs
//! (piggybacking, XEP-0220 §2.6), stanza address checks (RFC 6120 §8.1.1.2, §4.9.3.9), the
//! handshake and idle deadlines, and closing (§4.4).
//!
//! Out of scope: sockets, TLS records and certificate verification (the shell gives what the
//! verified certificate is valid for through [`InboundSession::handle_tls_established`], as a
//! [`CertifiedFor`] answered by webpki), asking the
//! authoritative server (the shell does it on an outbound stream and answers with
//! [`InboundSession::handle_dialback_verdict`]), routing stanzas, XEP-0288 bidirectional
//! streams (an inbound stream only carries stanzas toward us).
//!
//! ```text
//!  peer (originating)                      xsgw (receiving)              shell / router
//!   │── <stream:stream to=R from=O> ─────────▶│
//!   │◀─ <stream:stream id=I> <features> ──────│  STARTTLS per policy; dialback
//!   │── <starttls/> ──────────────────────────▶│
//!   │◀─ <proceed/> ───────────────────────────│── StartTls ──────────────────▶ TLS handshake
//!   │                                          │◀─ handle_tls_established(certified)
//!   │── <stream:stream> (restart) ────────────▶│
//!   │◀─ <stream:stream id=I2> <features> ─────│  EXTERNAL only if the cert is valid for O
//!   │── <db:result from=O to=R>KEY ───────────▶│── VerifyDialback ────────────▶ db:verify to O
//!   │                                          │◀─ handle_dialback_verdict(valid)
//!   │◀─ <db:result type='valid'/> ─────────────│── Authenticated ─────────────▶
//!   │── <message from=u@O to=v@R> ────────────▶│── Stanza ────────────────────▶ router
//! ```
//!
//! # Calling order (the shell's loop)
//!
//! 1. [`InboundSession::new`] with `now` once the TCP connection is accepted.
//! 2. Loop: read with a deadline of [`InboundSession::poll_timeout`]; on bytes call
//!    [`InboundSession::handle_input`], on deadline [`InboundSession::handle_timeout`];
//!    then drain [`InboundSession::poll_event`] and write what
//!    [`InboundSession::poll_transmit`] appends.
//! 3. On [`SessionEvent::StartTls`]: write the pending output (it ends with `<proceed/>`)
//!    in the clear, give [`InboundSession::take_tls_bytes`] to the TLS server connection as
//!    its first input, run the handshake, then call
//!    [`InboundSession::handle_tls_established`]; from then on feed decrypted bytes.
//! 4. On [`SessionEvent::VerifyDialback`]: ask the authoritative server, then call
//!    [`InboundSession::handle_dialback_verdict`] (on timeout, with an error verdict).
//! 5. After [`SessionEvent::Closed`]: write the pending output, close TLS and the socket.

use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

use super::dialback::{verify_key, DbResult, DbVerify, Dialback, DialbackKind};
use super::element::{Element, NS_DIALBACK, NS_SERVER, NS_STREAMS};
use super::error::{
    stream_error_element, ReceivedStreamError, StanzaError, StanzaErrorCondition,
    StreamErrorCondition,
};
use super::jid::Jid;
use super::stream::{StreamEvent, StreamHeader, StreamLimits, StreamParser, STREAM_CLOSE};

/// Longest base64 authorization identity accepted in SASL EXTERNAL (a JID domain fits
/// many times over).
const MAX_AUTHZID_B64: usize = 4096;

/// Namespace of STARTTLS (RFC 6120 §5.4).
pub const NS_TLS: &str = "urn:ietf:params:xml:ns:xmpp-tls";
/// Namespace of SASL (RFC 6120 §6.4).
pub const NS_SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
/// Namespace of the dialback stream feature (XEP-0220 §2.5).
pub const NS_DIALBACK_FEATURE: &str = "urn:xmpp:features:dialback";

/// Whether STARTTLS is offered and whether it is required before authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsPolicy {
    /// Offered with `<required/>`; nothing but STARTTLS is accepted before TLS.
    Required,
    /// Offered; dialback is also accepted in the clear.
    Optional,
    /// Not offered.
    NotSupported,
}

/// The shared dialback secret; its `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct DialbackSecret(pub String);

impl fmt::Debug for DialbackSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DialbackSecret(..)")
    }
}

/// What local policy says about a peer domain (federation mode, block list, partner policy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerDecision {
    /// Refuse streams and dialback from this domain with this condition.
    Refuse(StreamErrorCondition),
    /// A domain the gateway never connects to (an IP literal with no partner section): a
    /// stream header from it is refused with this condition, and a `db:result` for it is
    /// answered `<remote-server-not-found/>` at once, exactly as when none of a domain's
    /// servers answers, so a peer cannot tell a refused target from a closed or silent one.
    Unreachable(StreamErrorCondition),
    /// Accept, with this partner's policy.
    Accept {
        /// STARTTLS policy.
        tls: TlsPolicy,
        /// Whether SASL EXTERNAL may be offered.
        sasl: bool,
        /// Whether dialback is offered and accepted.
        dialback: bool,
    },
}

/// The policy lookup the shell gives the session (called with a lowercased domain).
#[derive(Clone)]
pub struct PeerPolicy(pub std::sync::Arc<dyn Fn(&str) -> PeerDecision + Send + Sync>);

impl fmt::Debug for PeerPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PeerPolicy(..)")
    }
}

/// Policy for inbound streams.
#[derive(Debug, Clone)]
pub struct InboundConfig {
    /// Domains served here, lowercased; a stream or stanza to any other is refused.
    pub hosted: HashSet<String>,
    /// STARTTLS policy.
    pub tls: TlsPolicy,
    /// Whether dialback is offered and accepted.
    pub dialback: bool,
    /// Whether SASL EXTERNAL may be offered (still only for a certificate valid for the peer).
    pub sasl: bool,
    /// Per-peer policy, applied at the stream header's `from` and at each `db:result`'s
    /// `from`; a refused domain gets the condition as a stream error. `None`: accept all.
    pub peer_policy: Option<PeerPolicy>,
    /// Secret for answering `db:verify` as the authoritative server (XEP-0185).
    pub dialback_secret: DialbackSecret,
    /// Time from accept until the first domain pair is authenticated.
    pub handshake_timeout: Duration,
    /// Time without any input before the stream is closed.
    pub idle_timeout: Duration,
    /// Most dialback requests waiting for a verdict at once.
    pub max_pending_dialback: usize,
    /// Most authenticated domain pairs on one stream.
    pub max_domain_pairs: usize,
    /// Stream parser limits.
    pub limits: StreamLimits,
}

impl InboundConfig {
    /// Defaults matching the deployment notes: stream establishment 60 s, inactivity 600 s.
    pub fn new(hosted: impl IntoIterator<Item = String>, secret: String) -> Self {
        InboundConfig {
            hosted: hosted.into_iter().map(|d| d.to_ascii_lowercase()).collect(),
            tls: TlsPolicy::Optional,
            dialback: true,
            sasl: true,
            peer_policy: None,
            dialback_secret: DialbackSecret(secret),
            handshake_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(600),
            max_pending_dialback: 16,
            max_domain_pairs: 64,
            limits: StreamLimits::default(),
        }
    }
}

/// How a domain pair was authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    /// SASL EXTERNAL with a certificate valid for the domain (XEP-0178).
    SaslExternal,
    /// Dialback (XEP-0220).
    Dialback,
}

/// The answer to a [`SessionEvent::VerifyDialback`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DialbackVerdict {
    /// The authoritative server said `valid`.
    Valid,
    /// The authoritative server said `invalid`.
    Invalid,
    /// It could not be asked (e.g. `remote-server-not-found`, `remote-server-timeout`).
    Error(StanzaErrorCondition),
}

/// A deadline the session keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerKind {
    /// From accept until the first authenticated pair.
    Handshake,
    /// Since the last input.
    Idle,
}

/// Why the session closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// The peer sent `</stream:stream>`.
    PeerClosed,
    /// The peer sent a stream error.
    PeerError(ReceivedStreamError),
    /// We sent a stream error.
    LocalError {
        /// The condition sent.
        condition: StreamErrorCondition,
        /// Detail for the log.
        detail: String,
    },
    /// A deadline passed (a `connection-timeout` stream error was sent).
    Timeout(TimerKind),
    /// The shell asked to close (e.g. shutdown).
    LocalClose,
}

/// What the session tells the shell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent {
    /// `<proceed/>` is queued: write it, then start the TLS server handshake.
    StartTls,
    /// A domain pair may now send stanzas on this stream.
    Authenticated {
        /// Our hosted domain.
        local: String,
        /// The peer's domain.
        remote: String,
        /// How.
        method: AuthMethod,
    },
    /// Ask the authoritative server of `remote` whether `key` is valid (XEP-0220 §2.1.2).
    VerifyDialback {
        /// Our hosted domain (the receiving server).
        local: String,
        /// The domain claimed by the peer (the originating server).
        remote: String,
        /// The key received.
        key: String,
        /// This stream's id, for the `db:verify` `id` attribute.
        stream_id: String,
    },
    /// A stanza from an authenticated pair, addresses checked.
    Stanza {
        /// Our domain the stanza is addressed to.
        local: String,
        /// The authenticated peer domain it comes from.
        remote: String,
        /// The stanza.
        element: Element,
    },
    /// The stream is finished; write pending output and close the connection.
    Closed(CloseReason),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for the peer's stream header (first, or after a restart).
    ExpectHeader,
    /// Our header and features are sent; waiting for negotiation or stanzas.
    ExpectNegotiation,
    /// `<proceed/>` sent; waiting for the shell to finish the TLS handshake.
    ExpectTlsEstablished,
    /// Done.
    Closed,
}

/// Whether the peer's verified certificate is valid for a domain. The shell answers with
/// webpki's name validation (`crate::tls::names::VerifiedCert`: subjectAltName only, the
/// issuing CAs' name constraints applied, a `*` leftmost label for one label, never the CN).
pub type CertifiedFor = Box<dyn Fn(&str) -> bool + Send>;

/// The receiving side of one inbound S2S connection. See the module doc for the calling order.
pub struct InboundSession {
    config: InboundConfig,
    new_id: Box<dyn FnMut() -> String + Send>,
    parser: StreamParser,
    state: State,
    out: Vec<u8>,
    events: VecDeque<SessionEvent>,
    header: Option<StreamHeader>,
    stream_id: String,
    header_sent: bool,
    tls_active: bool,
    certified_for: Option<CertifiedFor>,
    external_offered: bool,
    sasl_done: bool,
    pairs: Vec<(String, String)>,
    pending: Vec<(String, String)>,
    handshake_deadline: Option<Instant>,
    idle_deadline: Instant,
}

impl fmt::Debug for InboundSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InboundSession")
            .field("state", &self.state)
            .field("stream_id", &self.stream_id)
            .field("tls_active", &self.tls_active)
            .field("pairs", &self.pairs)
            .finish_non_exhaustive()
    }
}

impl InboundSession {
    /// A session for a freshly accepted connection. `new_id` makes a fresh unpredictable
    /// stream id for each stream (first and after every restart; XEP-0185 §4 relies on it).
    pub fn new(
        config: InboundConfig,
        now: Instant,
        new_id: Box<dyn FnMut() -> String + Send>,
    ) -> Self {
        let parser = StreamParser::new(config.limits.clone());
        let handshake_deadline = Some(now + config.handshake_timeout);
        let idle_deadline = now + config.idle_timeout;
        InboundSession {
            config,
            new_id,
            parser,
            state: State::ExpectHeader,
            out: Vec::new(),
            events: VecDeque::new(),
            header: None,
            stream_id: String::new(),
            header_sent: false,
            tls_active: false,
            certified_for: None,
            external_offered: false,
            sasl_done: false,
            pairs: Vec::new(),
            pending: Vec::new(),
            handshake_deadline,
            idle_deadline,
        }
    }

    /// Whether the session has closed (after [`SessionEvent::Closed`]).
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// The current stream id (empty before the first header).
    pub fn stream_id(&self) -> &str {
        &self.stream_id
    }

    /// Whether TLS is established on this connection.
    pub fn is_tls(&self) -> bool {
        self.tls_active
    }

    /// Authenticated `(local, remote)` domain pairs.
    pub fn domain_pairs(&self) -> &[(String, String)] {
        &self.pairs
    }

    /// Appends bytes to write to the peer.
    pub fn poll_transmit(&mut self, buf: &mut Vec<u8>) {
        buf.append(&mut self.out);
    }

    /// The next event for the shell.
    pub fn poll_event(&mut self) -> Option<SessionEvent> {
        self.events.pop_front()
    }

    /// The earliest deadline, for the socket read timeout.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.state == State::Closed {
            return None;
        }
        Some(match self.handshake_deadline {
            Some(h) => h.min(self.idle_deadline),
            None => self.idle_deadline,
        })
    }

    /// Fires deadlines that have passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.state == State::Closed {
            return;
        }
        let timer = match self.handshake_deadline {
            Some(h) if now >= h => TimerKind::Handshake,
            _ if now >= self.idle_deadline => TimerKind::Idle,
            _ => return,
        };
        self.send_stream_error(StreamErrorCondition::ConnectionTimeout, None);
        self.close_with(CloseReason::Timeout(timer));
    }

    /// Bytes received from the peer (decrypted once TLS is up).
    pub fn handle_input(&mut self, now: Instant, bytes: &[u8]) {
        if self.state == State::Closed {
            return;
        }
        self.idle_deadline = now + self.config.idle_timeout;
        if let Err(e) = self.parser.feed(bytes) {
            self.fail(e.condition(), &e.to_string());
            return;
        }
        self.process();
    }

    /// The bytes received after `<starttls/>`, which belong to the TLS layer.
    pub fn take_tls_bytes(&mut self) -> Vec<u8> {
        self.parser.take_unconsumed()
    }

    /// TLS is established. `certified` says which domains the peer's certificate is valid
    /// for, if its chain verified (`None` otherwise); SASL EXTERNAL is offered only for a
    /// stream whose `from` it is valid for.
    pub fn handle_tls_established(&mut self, now: Instant, certified: Option<CertifiedFor>) {
        if self.state != State::ExpectTlsEstablished {
            return;
        }
        self.idle_deadline = now + self.config.idle_timeout;
        self.tls_active = true;
        self.certified_for = certified;
        self.restart();
        // The peer may have sent its new header with the handshake's last flight.
        self.process();
    }

    /// The authoritative server's answer for a [`SessionEvent::VerifyDialback`].
    pub fn handle_dialback_verdict(&mut self, local: &str, remote: &str, verdict: DialbackVerdict) {
        if self.state == State::Closed {
            return;
        }
        let Some(pos) = self
            .pending
            .iter()
            .position(|(l, r)| l == local && r == remote)
        else {
            return;
        };
        self.pending.swap_remove(pos);
        let kind = match &verdict {
            DialbackVerdict::Valid => DialbackKind::Valid,
            DialbackVerdict::Invalid => DialbackKind::Invalid,
            DialbackVerdict::Error(c) => DialbackKind::Error(StanzaError::new(*c)),
        };
        let reply = DbResult {
            from: local.to_owned(),
            to: remote.to_owned(),
            kind,
        };
        self.send_element(&reply.to_element());
        if verdict == DialbackVerdict::Valid {
            self.authenticate(local, remote, AuthMethod::Dialback);
        }
    }

    /// Closes the stream from our side, with a stream error if `condition` is given.
    pub fn close(&mut self, condition: Option<StreamErrorCondition>) {
        if self.state == State::Closed {
            return;
        }
        if let Some(c) = condition {
            self.send_stream_error(c, None);
        }
        self.close_with(CloseReason::LocalClose);
    }

    fn process(&mut self) {
        while matches!(self.state, State::ExpectHeader | State::ExpectNegotiation) {
            match self.parser.next_event() {
                Ok(None) => break,
                Ok(Some(StreamEvent::Whitespace)) => {}
                Ok(Some(StreamEvent::Start(header))) => self.on_header(header),
                Ok(Some(StreamEvent::Stanza(element))) => self.on_element(element),
                Ok(Some(StreamEvent::End)) => {
                    self.close_with(CloseReason::PeerClosed);
                }
                Err(e) => self.fail(e.condition(), &e.to_string()),
            }
        }
    }

    fn on_header(&mut self, header: StreamHeader) {
        self.stream_id = (self.new_id)();
        let local = header.to.as_deref().map(str::to_ascii_lowercase);
        let legacy = header
            .version_numbers()
            .map_or(true, |(major, _)| major < 1);
        let mut ours = StreamHeader::new_s2s(
            local.as_deref(),
            header.from.as_deref(),
            Some(&self.stream_id),
        );
        if legacy {
            ours.version = None;
        }
        self.out.extend_from_slice(ours.to_xml().as_bytes());
        self.header_sent = true;
        self.header = Some(header);
        match local.as_deref() {
            Some(l)
                if !self
                    .config
                    .hosted
                    .contains(l.strip_suffix('.').unwrap_or(l)) =>
            {
                return self.fail(
                    StreamErrorCondition::HostUnknown,
                    "stream to a domain not served here",
                );
            }
            _ => {}
        }
        if let Some(from) = self.header.as_ref().and_then(|h| h.from.as_deref()) {
            let from = from.to_ascii_lowercase();
            if let Err((condition, _)) = self.apply_peer_policy(&from) {
                return self.fail(condition, "peer domain refused by federation policy");
            }
        }
        if legacy && self.config.tls == TlsPolicy::Required {
            return self.fail(
                StreamErrorCondition::PolicyViolation,
                "TLS required; peer speaks pre-1.0 streams",
            );
        }
        if legacy && !self.config.dialback {
            return self.fail(
                StreamErrorCondition::UnsupportedVersion,
                "pre-1.0 stream and dialback disabled",
            );
        }
        self.state = State::ExpectNegotiation;
        if !legacy {
            let features = self.features();
            self.send_element(&features);
        }
    }

    /// Looks the peer up in the policy; on accept, its policy governs this stream. A refusal
    /// says whether the domain is one never connected to ([`PeerDecision::Unreachable`]).
    fn apply_peer_policy(&mut self, domain: &str) -> Result<(), (StreamErrorCondition, bool)> {
        let Some(policy) = self.config.peer_policy.clone() else {
            return Ok(());
        };
        match (policy.0)(domain.strip_suffix('.').unwrap_or(domain)) {
            PeerDecision::Refuse(condition) => Err((condition, false)),
            PeerDecision::Unreachable(condition) => Err((condition, true)),
            PeerDecision::Accept {
                tls,
                sasl,
                dialback,
            } => {
                // TLS already running stays running, whatever this peer's policy says.
                if !self.tls_active {
                    self.config.tls = tls;
                }
                self.config.sasl = sasl;
                self.config.dialback = dialback;
                Ok(())
            }
        }
    }

    fn starttls_offered(&self) -> bool {
        !self.tls_active && self.config.tls != TlsPolicy::NotSupported
    }

    fn tls_missing(&self) -> bool {
        !self.tls_active && self.config.tls == TlsPolicy::Required
    }

    fn features(&mut self) -> Element {
        let mut features = Element::new("features", NS_STREAMS);
        if self.starttls_offered() {
            let mut starttls = Element::new("starttls", NS_TLS);
            if self.config.tls == TlsPolicy::Required {
                starttls = starttls.with_child(Element::new("required", NS_TLS));
            }
            features = features.with_child(starttls);
        }
        let from = self.header.as_ref().and_then(|h| h.from.clone());
        self.external_offered = self.tls_active
            && self.config.sasl
            && !self.sasl_done
            && self.header.as_ref().is_some_and(|h| h.to.is_some())
            && from.as_deref().is_some_and(|f| {
                self.certified_for
                    .as_ref()
                    .is_some_and(|valid_for| valid_for(f))
            });
        if self.external_offered {
            features = features.with_child(
                Element::new("mechanisms", NS_SASL)
                    .with_child(Element::new("mechanism", NS_SASL).with_text("EXTERNAL")),
            );
        }
        if self.config.dialback && !self.tls_missing() {
            features = features.with_child(
                Element::new("dialback", NS_DIALBACK_FEATURE)
                    .with_child(Element::new("errors", NS_DIALBACK_FEATURE)),
            );
        }
        features
    }

    fn on_element(&mut self, element: Element) {
        match element.namespace.as_str() {
            NS_TLS if element.name == "starttls" => self.on_starttls(),
            NS_SASL if element.name == "auth" => self.on_sasl_auth(&element),
            NS_DIALBACK => self.on_dialback(&element),
            NS_STREAMS if element.name == "error" => {
                let received =
                    ReceivedStreamError::from_element(&element).unwrap_or(ReceivedStreamError {
                        condition: None,
                        text: None,
                    });
                self.close_with(CloseReason::PeerError(received));
            }
            NS_SERVER if matches!(element.name.as_str(), "message" | "presence" | "iq") => {
                self.on_stanza(element)
            }
            _ => self.fail(
                StreamErrorCondition::UnsupportedStanzaType,
                "unknown top-level element",
            ),
        }
    }

    fn on_starttls(&mut self) {
        if !self.starttls_offered() {
            self.send_element(&Element::new("failure", NS_TLS));
            return self.close_with(CloseReason::LocalError {
                condition: StreamErrorCondition::UndefinedCondition,
                detail: "starttls not offered".into(),
            });
        }
        self.send_element(&Element::new("proceed", NS_TLS));
        self.state = State::ExpectTlsEstablished;
        self.events.push_back(SessionEvent::StartTls);
    }

    fn on_sasl_auth(&mut self, element: &Element) {
        let failure = |condition: &str| {
            Element::new("failure", NS_SASL).with_child(Element::new(condition, NS_SASL))
        };
        if !self.external_offered || element.attr("mechanism") != Some("EXTERNAL") {
            return self.send_element(&failure("invalid-mechanism"));
        }
        let (Some(local), Some(remote)) = (
            self.header
                .as_ref()
                .and_then(|h| h.to.as_deref())
                .map(str::to_ascii_lowercase),
            self.header
                .as_ref()
                .and_then(|h| h.from.as_deref())
                .map(str::to_ascii_lowercase),
        ) else {
            return self.send_element(&failure("not-authorized"));
        };
        // XEP-0178 §3: the authzid is empty ("=") or the peer's domain.
        let text = element.text();
        let authzid_ok = match text.trim() {
            "" | "=" => true,
            b64 => crate::base64::decode(b64, MAX_AUTHZID_B64)
                .is_some_and(|raw| raw.eq_ignore_ascii_case(remote.as_bytes())),
        };
        if !authzid_ok {
            return self.send_element(&failure("invalid-authzid"));
        }
        self.send_element(&Element::new("success", NS_SASL));
        self.sasl_done = true;
        self.external_offered = false;
        self.authenticate(&local, &remote, AuthMethod::SaslExternal);
        self.restart();
    }

    fn on_dialback(&mut self, element: &Element) {
        if !self.config.dialback {
            return self.fail(
                StreamErrorCondition::UnsupportedStanzaType,
                "dialback is disabled",
            );
        }
        if self.tls_missing() {
            return self.fail(
                StreamErrorCondition::PolicyViolation,
                "TLS is required before dialback",
            );
        }
        let request = match Dialback::from_element(element) {
            Ok(d) => d,
            Err(e) => return self.fail(StreamErrorCondition::InvalidXml, &e.to_string()),
        };
        match request {
            Dialback::Result(DbResult {
                from,
                to,
                kind: DialbackKind::Request { key },
            }) => {
                let (local, remote) = (to.to_ascii_lowercase(), from.to_ascii_lowercase());
                let error = |c| DbResult {
                    from: local.clone(),
                    to: remote.clone(),
                    kind: DialbackKind::Error(StanzaError::new(c)),
                };
                if !self.config.hosted.contains(&local) {
                    return self
                        .send_element(&error(StanzaErrorCondition::ItemNotFound).to_element());
                }
                if Jid::from_domain(&remote).is_err() {
                    return self
                        .send_element(&error(StanzaErrorCondition::BadRequest).to_element());
                }
                match self.apply_peer_policy(&remote) {
                    Ok(()) => {}
                    // Answered like a failed verification, with nothing connected to.
                    Err((_, true)) => {
                        return self.send_element(
                            &error(StanzaErrorCondition::RemoteServerNotFound).to_element(),
                        )
                    }
                    Err((condition, false)) => {
                        return self.fail(condition, "peer domain refused by federation policy")
                    }
                }
                if !self.config.dialback {
                    return self.fail(
                        StreamErrorCondition::PolicyViolation,
                        "dialback disabled for this peer",
                    );
                }
                if self.tls_missing() {
                    return self.fail(
                        StreamErrorCondition::PolicyViolation,
                        "TLS is required for this peer before dialback",
                    );
                }
                if self.pairs.iter().any(|(l, r)| *l == local && *r == remote) {
                    let valid = DbResult {
                        from: local,
                        to: remote,
                        kind: DialbackKind::Valid,
                    };
                    return self.send_element(&valid.to_element());
                }
                if self.pending.len() >= self.config.max_pending_dialback
                    || self.pairs.len() >= self.config.max_domain_pairs
                {
                    return self.send_element(
                        &error(StanzaErrorCondition::ResourceConstraint).to_element(),
                    );
                }
                if !self
                    .pending
                    .iter()
                    .any(|(l, r)| *l == local && *r == remote)
                {
                    self.pending.push((local.clone(), remote.clone()));
                    self.events.push_back(SessionEvent::VerifyDialback {
                        local,
                        remote,
                        key,
                        stream_id: self.stream_id.clone(),
                    });
                }
            }
            Dialback::Verify(DbVerify {
                from,
                to,
                id,
                kind: DialbackKind::Request { key },
            }) => {
                // We are the authoritative server for `to`; `from` is the receiving server
                // that got the key on a stream we opened with id `id`.
                let (ours, theirs) = (to.to_ascii_lowercase(), from.to_ascii_lowercase());
                let kind = if !self.config.hosted.contains(&ours) {
                    DialbackKind::Error(StanzaError::new(StanzaErrorCondition::ItemNotFound))
                } else if verify_key(&self.config.dialback_secret.0, &theirs, &ours, &id, &key) {
                    DialbackKind::Valid
                } else {
                    DialbackKind::Invalid
                };
                self.send_element(
                    &DbVerify {
                        from: ours,
                        to: theirs,
                        id,
                        kind,
                    }
                    .to_element(),
                );
            }
            // Answers belong on the streams we initiated, not on an inbound one.
            _ => self.fail(
                StreamErrorCondition::UnsupportedStanzaType,
                "dialback answer on an inbound stream",
            ),
        }
    }

    fn on_stanza(&mut self, element: Element) {
        if self.pairs.is_empty() {
            return self.fail(
                StreamErrorCondition::NotAuthorized,
                "stanza before authentication",
            );
        }
        let domain_of = |attr: &str| {
            element
                .attr(attr)
                .and_then(|v| v.parse::<Jid>().ok())
                .map(|j| j.domain().to_owned())
        };
        let (Some(remote), Some(local)) = (domain_of("from"), domain_of("to")) else {
            return self.fail(
                StreamErrorCondition::ImproperAddressing,
                "stanza without valid 'from' and 'to'",
            );
        };
        if !self.pairs.iter().any(|(_, r)| *r == remote) {
            return self.fail(
                StreamErrorCondition::InvalidFrom,
                "'from' domain not authenticated on this stream",
            );
        }
        if !self.pairs.iter().any(|(l, r)| *l == local && *r == remote) {
            return self.fail(
                StreamErrorCondition::HostUnknown,
                "'to' domain not authenticated for this sender",
            );
        }
        self.events.push_back(SessionEvent::Stanza {
            local,
            remote,
            element,
        });
    }

    fn authenticate(&mut self, local: &str, remote: &str, method: AuthMethod) {
        if self.pairs.iter().any(|(l, r)| l == local && r == remote) {
            return;
        }
        self.pairs.push((local.to_owned(), remote.to_owned()));
        self.handshake_deadline = None;
        self.events.push_back(SessionEvent::Authenticated {
            local: local.to_owned(),
            remote: remote.to_owned(),
            method,
        });
    }

    /// Stream restart (RFC 6120 §4.3.3): a new header from the peer, a new id from us.
    fn restart(&mut self) {
        self.parser.reset();
        self.header = None;
        self.header_sent = false;
        self.state = State::ExpectHeader;
    }

    fn send_element(&mut self, element: &Element) {
        self.out
            .extend_from_slice(element.to_stream_xml().as_bytes());
    }

    fn send_stream_error(&mut self, condition: StreamErrorCondition, text: Option<&str>) {
        if !self.header_sent {
            // RFC 6120 §4.9.1.3: open our stream first so the error has a stream to live in.
            self.stream_id = (self.new_id)();
            let header = StreamHeader::new_s2s(None, None, Some(&self.stream_id));
            self.out.extend_from_slice(header.to_xml().as_bytes());
            self.header_sent = true;
        }
        self.send_element(&stream_error_element(condition, text));
    }

    fn fail(&mut self, condition: StreamErrorCondition, detail: &str) {
        self.send_stream_error(condition, None);
        self.close_with(CloseReason::LocalError {
            condition,
            detail: detail.to_owned(),
        });
    }

    fn close_with(&mut self, reason: CloseReason) {
        if self.state == State::Closed {
            return;
        }
        if !self.header_sent {
            self.stream_id = (self.new_id)();
            let header = StreamHeader::new_s2s(None, None, Some(&self.stream_id));
            self.out.extend_from_slice(header.to_xml().as_bytes());
        }
        self.out.extend_from_slice(STREAM_CLOSE.as_bytes());
        self.state = State::Closed;
        self.pending.clear();
        self.events.push_back(SessionEvent::Closed(reason));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xmpp::dialback::dialback_key;

    fn base64_decode(text: &str) -> Option<Vec<u8>> {
        crate::base64::decode(text, MAX_AUTHZID_B64)
    }

    const SECRET: &str = "s3cr3tf0rd14lb4ck";

    /// A certificate valid for exactly these domains (name matching itself is webpki's,
    /// tested in `crate::tls::names`).
    fn valid_for(domains: &'static [&'static str]) -> Option<CertifiedFor> {
        Some(Box::new(move |d: &str| domains.contains(&d)))
    }

    fn config(tls: TlsPolicy) -> InboundConfig {
        let mut c = InboundConfig::new(["xmpp.example.com".to_owned()], SECRET.to_owned());
        c.tls = tls;
        c
    }

    fn session(tls: TlsPolicy, now: Instant) -> InboundSession {
        let mut n = 0u32;
        InboundSession::new(
            config(tls),
            now,
            Box::new(move || {
                n += 1;
                format!("id{n}")
            }),
        )
    }

    fn drain(s: &mut InboundSession) -> (String, Vec<SessionEvent>) {
        let mut out = Vec::new();
        s.poll_transmit(&mut out);
        let mut events = Vec::new();
        while let Some(e) = s.poll_event() {
            events.push(e);
        }
        (String::from_utf8(out).unwrap(), events)
    }

    const PEER_HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:server' \
        xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' \
        to='xmpp.example.com' from='example.org' version='1.0'>";

    const DIALBACK_CONVERSATION: &str =
        "<?xml version='1.0'?><stream:stream xmlns='jabber:server' \
        xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' \
        to='xmpp.example.com' from='example.org' version='1.0'>\
        <db:result from='example.org' to='xmpp.example.com'>abc</db:result>";

    #[test]
    fn dialback_flow_at_every_split() {
        let input = DIALBACK_CONVERSATION.as_bytes();
        for cut in 0..=input.len() {
            let now = Instant::now();
            let mut s = session(TlsPolicy::Optional, now);
            s.handle_input(now, &input[..cut]);
            s.handle_input(now, &input[cut..]);
            let (out, events) = drain(&mut s);
            assert!(
                out.starts_with("<?xml version='1.0'?><stream:stream"),
                "{out}"
            );
            assert!(out.contains("id='id1'"));
            assert!(out.contains("from='xmpp.example.com' to='example.org'"));
            assert!(out.contains(
                "<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>\
                 <dialback xmlns='urn:xmpp:features:dialback'><errors/></dialback></stream:features>"
            ));
            assert!(!out.contains("mechanisms"));
            assert_eq!(
                events,
                vec![SessionEvent::VerifyDialback {
                    local: "xmpp.example.com".into(),
                    remote: "example.org".into(),
                    key: "abc".into(),
                    stream_id: "id1".into(),
                }],
                "split at {cut}"
            );
        }
    }

    #[test]
    fn dialback_verdict_then_stanzas() {
        let now = Instant::now();
        let mut s = session(TlsPolicy::Optional, now);
        s.handle_input(now, DIALBACK_CONVERSATION.as_bytes());
        drain(&mut s);
        s.handle_dialback_verdict("xmpp.example.com", "example.org", DialbackVerdict::Valid);
        let (out, events) = drain(&mut s);
        assert_eq!(
            out,
            "<db:result from='xmpp.example.com' to='example.org' type='valid'/>"
        );
        assert!(matches!(
            &events[..],
            [SessionEvent::Authenticated {
                method: AuthMethod::Dialback,
                ..
            }]
        ));
        assert_eq!(s.poll_timeout(), Some(now + Duration::from_secs(600)));
        s.handle_input(now, b"<message from='juliet@example.org/x' to='romeo@XMPP.example.com' type='chat'><body>hi</body></message>");
        let (_, events) = drain(&mut s);
        let [SessionEvent::Stanza {
            local,
            remote,
            element,
        }] = &events[..]
        else {
            panic!("{events:?}")
        };
        assert_eq!(
            (local.as_str(), remote.as_str()),
            ("xmpp.example.com", "example.org")
        );
        assert_eq!(element.child("body", NS_SERVER).unwrap().text(), "hi");
        // A sender domain that was never authenticated.
        s.handle_input(
            now,
            b"<message from='mallory@evil.example' to='romeo@xmpp.example.com'/>",
        );
        let (out, events) = drain(&mut s);
        assert!(
            out.contains("<invalid-from xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"),
            "{out}"
        );
        assert!(out.ends_with("</stream:stream>"));
        assert!(matches!(
            &events[..],
            [SessionEvent::Closed(CloseReason::LocalError {
                condition: StreamErrorCondition::InvalidFrom,
                ..
            })]
        ));
        assert!(s.is_closed());
    }

    #[test]
    fn invalid_dialback_and_stanza_before_auth() {
        let now = Instant::now();
        let mut s = session(TlsPolicy::Optional, now);
        s.handle_input(now, DIALBACK_CONVERSATION.as_bytes());
        drain(&mut s);
        s.handle_dialback_verdict("xmpp.example.com", "example.org", DialbackVerdict::Invalid);
        let (out, events) = drain(&mut s);
        assert_eq!(
            out,
            "<db:result from='xmpp.example.com' to='example.org' type='invalid'/>"
        );
        assert!(events.is_empty());
        s.handle_input(
            now,
            b"<message from='a@example.org' to='b@xmpp.example.com'/>",
        );
        let (out, _) = drain(&mut s);
        assert!(
            out.contains("<not-authorized xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"),
            "{out}"
        );
    }

    #[test]
    fn authoritative_role_answers_db_verify() {
        let now = Instant::now();
        let mut s = session(TlsPolicy::Optional, now);
        let key = dialback_key(SECRET, "example.org", "xmpp.example.com", "S1");
        let input = format!(
            "{}<db:verify from='example.org' to='xmpp.example.com' id='S1'>{key}</db:verify>\
             <db:verify from='example.org' to='xmpp.example.com' id='S2'>{key}</db:verify>\
             <db:verify from='example.org' to='other.example' id='S1'>{key}</db:verify>",
            PEER_HEADER.replace(
                "to='xmpp.example.com' from='example.org'",
                "to='xmpp.example.com'"
            )
        );
        s.handle_input(now, input.as_bytes());
        let (out, events) = drain(&mut s);
        assert!(events.is_empty(), "{events:?}");
        assert!(
            out.contains(
                "<db:verify from='xmpp.example.com' to='example.org' id='S1' type='valid'/>"
            ),
            "{out}"
        );
        assert!(out.contains(
            "<db:verify from='xmpp.example.com' to='example.org' id='S2' type='invalid'/>"
        ));
        assert!(out.contains("<db:verify from='other.example' to='example.org' id='S1' type='error'><error type='cancel'><item-not-found"));
    }

    #[test]
    fn starttls_then_sasl_external() {
        let now = Instant::now();
        let mut s = session(TlsPolicy::Required, now);
        s.handle_input(now, PEER_HEADER.as_bytes());
        let (out, _) = drain(&mut s);
        assert!(out.contains("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls></stream:features>"), "{out}");
        assert!(!out.contains("dialback xmlns"));
        s.handle_input(
            now,
            b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>\x16\x03\x01",
        );
        let (out, events) = drain(&mut s);
        assert_eq!(out, "<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
        assert_eq!(events, vec![SessionEvent::StartTls]);
        assert_eq!(s.take_tls_bytes(), b"\x16\x03\x01");
        s.handle_tls_established(now, valid_for(&["example.org"]));
        s.handle_input(now, PEER_HEADER.as_bytes());
        let (out, _) = drain(&mut s);
        assert!(out.contains("id='id2'"), "{out}");
        assert!(out.contains("<mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>EXTERNAL</mechanism></mechanisms>"));
        assert!(out.contains("<dialback xmlns='urn:xmpp:features:dialback'><errors/></dialback>"));
        assert!(!out.contains("starttls"));
        // authzid = base64("example.org"), and the restarted header in the same read.
        let auth = format!("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>ZXhhbXBsZS5vcmc=</auth>{PEER_HEADER}");
        s.handle_input(now, auth.as_bytes());
        let (out, events) = drain(&mut s);
        assert!(
            out.starts_with("<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/><?xml"),
            "{out}"
        );
        assert!(out.contains("id='id3'"));
        assert!(!out.contains("mechanisms"));
        assert_eq!(
            events,
            vec![SessionEvent::Authenticated {
                local: "xmpp.example.com".into(),
                remote: "example.org".into(),
                method: AuthMethod::SaslExternal
            }]
        );
        s.handle_input(
            now,
            b"<presence from='a@example.org' to='b@xmpp.example.com'/>",
        );
        assert!(matches!(drain(&mut s).1[..], [SessionEvent::Stanza { .. }]));
    }

    /// The restarted stream after TLS (EXTERNAL, restart, a stanza) at every split.
    #[test]
    fn sasl_flow_at_every_split() {
        let run = |parts: &[&[u8]]| {
            let now = Instant::now();
            let mut s = session(TlsPolicy::Optional, now);
            s.handle_input(
                now,
                format!("{PEER_HEADER}<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
                    .as_bytes(),
            );
            drain(&mut s);
            s.handle_tls_established(now, valid_for(&["example.org"]));
            for part in parts {
                s.handle_input(now, part);
            }
            drain(&mut s)
        };
        let input = format!(
            "{PEER_HEADER}<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>=</auth>\
             {PEER_HEADER}<presence from='a@example.org' to='b@xmpp.example.com'><status>\u{e9}t\u{e9}</status></presence>"
        );
        let input = input.as_bytes();
        let whole = run(&[input]);
        assert_eq!(whole.1.len(), 2, "{:?}", whole.1);
        assert!(matches!(whole.1[1], SessionEvent::Stanza { .. }));
        for cut in 0..=input.len() {
            assert_eq!(
                run(&[&input[..cut], &input[cut..]]),
                whole,
                "split at {cut}"
            );
        }
    }

    #[test]
    fn external_not_offered_without_matching_certificate() {
        let now = Instant::now();
        let mut s = session(TlsPolicy::Optional, now);
        s.handle_input(
            now,
            format!("{PEER_HEADER}<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>").as_bytes(),
        );
        drain(&mut s);
        s.handle_tls_established(now, valid_for(&["other.example", "xmpp.example.org"]));
        s.handle_input(now, PEER_HEADER.as_bytes());
        let (out, _) = drain(&mut s);
        assert!(!out.contains("EXTERNAL"), "{out}");
        s.handle_input(
            now,
            b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>=</auth>",
        );
        let (out, events) = drain(&mut s);
        assert_eq!(
            out,
            "<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><invalid-mechanism/></failure>"
        );
        assert!(events.is_empty());
    }

    #[test]
    fn tls_required_refuses_dialback_in_the_clear() {
        let now = Instant::now();
        let mut s = session(TlsPolicy::Required, now);
        s.handle_input(now, DIALBACK_CONVERSATION.as_bytes());
        let (out, events) = drain(&mut s);
        assert!(out.contains("<policy-violation"), "{out}");
        assert!(matches!(
            &events[..],
            [SessionEvent::Closed(CloseReason::LocalError {
                condition: StreamErrorCondition::PolicyViolation,
                ..
            })]
        ));
    }

    #[test]
    fn unknown_host_gets_header_then_error() {
        let now = Instant::now();
        let mut s = session(TlsPolicy::Optional, now);
        s.handle_input(
            now,
            PEER_HEADER
                .replace("to='xmpp.example.com'", "to='nope.example'")
                .as_bytes(),
        );
        let (out, events) = drain(&mut s);
        assert!(out.starts_with("<?xml"), "{out}");
        assert!(out.contains("<host-unknown xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"));
        assert!(out.ends_with("</stream:error></stream:stream>"));
        assert!(matches!(&events[..], [SessionEvent::Closed(_)]));
    }

    #[test]
    fn bad_xml_before_header_still_opens_our_stream() {
        let now = Instant::now();
        let mut s = session(TlsPolicy::Optional, now);
        s.handle_input(now, b"<!-- hi -->");
        let (out, events) = drain(&mut s);
        assert!(out.starts_with("<?xml"));
        assert!(out.contains("<restricted-xml"));
        assert!(matches!(
            &events[..],
            [SessionEvent::Closed(CloseReason::LocalError {
                condition: StreamErrorCondition::RestrictedXml,
                ..
            })]
        ));
    }

    #[test]
    fn deadlines() {
        let now = Instant::now();
        let mut s = session(TlsPolicy::Optional, now);
        assert_eq!(s.poll_timeout(), Some(now + Duration::from_secs(60)));
        s.handle_timeout(now + Duration::from_secs(59));
        assert!(!s.is_closed());
        s.handle_timeout(now + Duration::from_secs(60));
        let (out, events) = drain(&mut s);
        assert!(out.contains("<connection-timeout"));
        assert_eq!(
            events,
            vec![SessionEvent::Closed(CloseReason::Timeout(
                TimerKind::Handshake
            ))]
        );
        assert_eq!(s.poll_timeout(), None);
    }

    #[test]
    fn peer_close_and_peer_error() {
        let now = Instant::now();
        let mut s = session(TlsPolicy::Optional, now);
        s.handle_input(now, format!("{PEER_HEADER}</stream:stream>").as_bytes());
        let (out, events) = drain(&mut s);
        assert!(out.ends_with("</stream:features></stream:stream>"), "{out}");
        assert_eq!(events, vec![SessionEvent::Closed(CloseReason::PeerClosed)]);

        let mut s = session(TlsPolicy::Optional, now);
        s.handle_input(
            now,
            format!("{PEER_HEADER}<stream:error><conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>").as_bytes(),
        );
        let (_, events) = drain(&mut s);
        assert_eq!(
            events,
            vec![SessionEvent::Closed(CloseReason::PeerError(
                ReceivedStreamError {
                    condition: Some(StreamErrorCondition::Conflict),
                    text: None
                }
            ))]
        );
    }

    #[test]
    fn legacy_peer_gets_no_features() {
        let now = Instant::now();
        let mut s = session(TlsPolicy::Optional, now);
        s.handle_input(
            now,
            PEER_HEADER
                .replace("from='example.org' version='1.0'>", "from='example.org'>")
                .as_bytes(),
        );
        let (out, _) = drain(&mut s);
        assert!(!out.contains("features"), "{out}");
        assert_eq!(
            out.matches("version=").count(),
            1,
            "only the xml declaration: {out}"
        );
    }

    #[test]
    fn helpers() {
        assert_eq!(
            base64_decode("ZXhhbXBsZS5vcmc="),
            Some(b"example.org".to_vec())
        );
        assert_eq!(base64_decode("YQ=="), Some(b"a".to_vec()));
        assert_eq!(base64_decode("YWI="), Some(b"ab".to_vec()));
        assert_eq!(base64_decode("YWJj"), Some(b"abc".to_vec()));
        assert_eq!(base64_decode("Y==="), None);
        assert_eq!(base64_decode("YQ==YWJj"), None);
        assert_eq!(base64_decode("Y!=="), None);
    }

    /// No input makes the session panic, and it never emits output after closing.
    #[test]
    fn random_inputs_never_panic() {
        let mut seed = 0x1234_5678_9ABC_DEF1u64;
        let mut rng = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let base = format!(
            "{PEER_HEADER}<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>\
             <db:result from='example.org' to='xmpp.example.com'>k</db:result>\
             <auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>=</auth>\
             <message from='a@example.org' to='b@xmpp.example.com'/></stream:stream>"
        );
        for _ in 0..1000 {
            let mut input = base.clone().into_bytes();
            for _ in 0..3 {
                let pos = (rng() as usize) % input.len();
                input[pos] = b"<>/='\" x:"[(rng() as usize) % 9];
            }
            let now = Instant::now();
            let mut s = session(TlsPolicy::Optional, now);
            s.handle_input(now, &input);
            if s.poll_event() == Some(SessionEvent::StartTls) {
                s.handle_tls_established(now, valid_for(&["example.org"]));
            }
            s.handle_dialback_verdict("xmpp.example.com", "example.org", DialbackVerdict::Valid);
            s.handle_input(now, &input);
            s.handle_timeout(now + Duration::from_secs(3600));
            assert!(s.is_closed());
        }
    }

    fn with_policy(decide: fn(&str) -> PeerDecision) -> InboundSession {
        let mut c = config(TlsPolicy::Optional);
        c.peer_policy = Some(PeerPolicy(std::sync::Arc::new(decide)));
        InboundSession::new(c, Instant::now(), Box::new(|| "id".to_owned()))
    }

    #[test]
    fn peer_policy_refuses_at_the_header() {
        let mut s = with_policy(|_| PeerDecision::Refuse(StreamErrorCondition::PolicyViolation));
        s.handle_input(Instant::now(), PEER_HEADER.as_bytes());
        let (out, events) = drain(&mut s);
        assert!(out.contains("<policy-violation"), "{out}");
        assert!(!out.contains("<stream:features"), "{out}");
        assert!(matches!(events.as_slice(), [SessionEvent::Closed(_)]));
    }

    #[test]
    fn peer_policy_sets_this_streams_features() {
        let mut s = with_policy(|domain| {
            assert_eq!(domain, "example.org");
            PeerDecision::Accept {
                tls: TlsPolicy::Required,
                sasl: false,
                dialback: false,
            }
        });
        s.handle_input(Instant::now(), PEER_HEADER.as_bytes());
        let (out, _) = drain(&mut s);
        assert!(out.contains("<required/>"), "{out}");
        assert!(!out.contains("urn:xmpp:features:dialback"), "{out}");
        // A db:result for a domain the policy refuses ends the stream.
        let mut s = with_policy(|domain| {
            if domain == "example.org" {
                PeerDecision::Accept {
                    tls: TlsPolicy::Optional,
                    sasl: true,
                    dialback: true,
                }
            } else {
                PeerDecision::Refuse(StreamErrorCondition::HostUnknown)
            }
        });
        s.handle_input(
            Instant::now(),
            format!(
                "{PEER_HEADER}<db:result from='blocked.example' to='xmpp.example.com'>k</db:result>"
            )
            .as_bytes(),
        );
        let (out, events) = drain(&mut s);
        assert!(out.contains("<host-unknown"), "{out}");
        assert!(!events
            .iter()
            .any(|e| matches!(e, SessionEvent::VerifyDialback { .. })));
    }

    #[test]
    fn unreachable_domain_gets_the_failed_verification_answer_and_no_verification() {
        let mut s = with_policy(|domain| {
            if domain == "10.0.0.5" {
                PeerDecision::Unreachable(StreamErrorCondition::PolicyViolation)
            } else {
                PeerDecision::Accept {
                    tls: TlsPolicy::Optional,
                    sasl: false,
                    dialback: true,
                }
            }
        });
        s.handle_input(
            Instant::now(),
            format!("{PEER_HEADER}<db:result from='10.0.0.5' to='xmpp.example.com'>k</db:result>")
                .as_bytes(),
        );
        let (out, events) = drain(&mut s);
        assert!(
            out.contains("type='error'") && out.contains("<remote-server-not-found"),
            "{out}"
        );
        assert!(!out.contains("<stream:error"), "the stream goes on: {out}");
        assert!(!events
            .iter()
            .any(|e| matches!(e, SessionEvent::VerifyDialback { .. })));
        // As the stream header's from, it is refused.
        let mut s =
            with_policy(|_| PeerDecision::Unreachable(StreamErrorCondition::PolicyViolation));
        s.handle_input(Instant::now(), PEER_HEADER.as_bytes());
        let (out, _) = drain(&mut s);
        assert!(out.contains("<policy-violation"), "{out}");
    }
}
