//! The outbound S2S session, sans-IO: the initiating side of a server-to-server stream.
//!
//! Owns: opening the stream (RFC 6120 §4.2), STARTTLS per policy (§5), SASL EXTERNAL when
//! offered and allowed (§6, XEP-0178), else dialback as the originating server (XEP-0220
//! §2.1.1, key from XEP-0185), the receiving server's `db:verify` on behalf of an inbound
//! stream (XEP-0220 §2.1.2, [`OutboundPurpose::Verify`]), the bounded queue of stanzas waiting
//! for the stream, whitespace keepalive (§4.6.1), the handshake and idle deadlines, closing.
//!
//! Out of scope: sockets, DNS, TLS records and certificate verification (the shell connects,
//! runs rustls with SNI = the remote domain and calls [`OutboundSession::handle_tls_established`]),
//! bouncing (the shell takes the unsent stanzas with [`OutboundSession::take_unsent`]).
//!
//! Receipts: a stanza may carry a receipt (an opaque `u64` the shell chose,
//! [`OutboundSession::send_tracked`]). It travels with the stanza through the queue and comes
//! back either from [`OutboundSession::take_unsent`] (never serialized) or from
//! [`OutboundSession::take_written`] (its bytes are in the transmit buffer). The session
//! cannot know whether those bytes reach the socket, so "written" is the shell's word to give:
//! it calls `take_written` right after [`OutboundSession::poll_transmit`] and reports the
//! receipts only once its write of that buffer succeeded (and bounces the stanzas otherwise).
//!
//! One stream per (local domain, remote domain) pair: no dialback piggybacking. Why: each
//! pair may need its own certificate check and policy, a failed pair cannot poison the others,
//! and a gateway serves a handful of domains, so the extra streams cost little.
//!
//! ```text
//!  xsgw (originating)                        peer (receiving)          peer's authoritative
//!   │── <stream:stream from=L to=R> ──────────▶│
//!   │◀─ <stream:stream id=I> <features> ───────│
//!   │── <starttls/> ─▶ ◀─ <proceed/> ── TLS (SNI=R, cert checked for R) ── restart
//!   │◀─ <features> <mechanisms>EXTERNAL ───────│
//!   │── <auth mechanism=EXTERNAL> ─▶ ◀─ <success/> ── restart ── Authenticated
//!   │        or, without EXTERNAL:
//!   │── <db:result from=L to=R>KEY(L,R,I) ────▶│── db:verify ──▶ (xsgw's inbound side)
//!   │◀─ <db:result type='valid'/> ─────────────│◀─ valid ────────
//!   │── queued stanzas ───────────────────────▶│
//! ```
//!
//! # Calling order (the shell's loop)
//! 1. Connect TCP; [`OutboundSession::new`] (the stream header is queued at once).
//! 2. Loop as for the inbound session: write [`OutboundSession::poll_transmit`], read with the
//!    deadline [`OutboundSession::poll_timeout`], [`OutboundSession::handle_input`] /
//!    [`OutboundSession::handle_timeout`], drain [`OutboundSession::poll_event`].
//! 3. On [`OutboundEvent::StartTls`]: the parser's leftover bytes go to TLS
//!    ([`OutboundSession::take_tls_bytes`]), run the client handshake, then
//!    [`OutboundSession::handle_tls_established`].
//! 4. [`OutboundSession::send`] (or [`OutboundSession::send_tracked`]) queues stanzas at any
//!    time (bounded); they are written once authenticated. After every `poll_transmit` take
//!    [`OutboundSession::take_written`]. After [`OutboundEvent::Closed`] take the unsent ones
//!    (with their receipts) and bounce them.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::dialback::{dialback_key, DbResult, DbVerify, Dialback, DialbackKind};
use super::element::{Element, NS_DIALBACK, NS_STREAMS};
use super::error::{stream_error_element, ReceivedStreamError, StreamErrorCondition};
use super::session::{AuthMethod, DialbackSecret, NS_DIALBACK_FEATURE, NS_SASL, NS_TLS};
use super::stream::{StreamEvent, StreamHeader, StreamLimits, StreamParser, STREAM_CLOSE};

/// How much a policy wants a mechanism (mirrors the configuration's three values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// Must be used; the stream fails without it.
    Required,
    /// Used when the peer offers it.
    Optional,
    /// Never used.
    Disabled,
}

/// What the stream is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutboundPurpose {
    /// Authenticate `local` to `remote` and carry stanzas.
    Stanzas,
    /// Ask `remote` (as authoritative server) whether `key` was issued for the inbound stream
    /// `stream_id` on which it claimed to be `remote` toward `local`; then close.
    Verify {
        /// The stream id of our inbound stream.
        stream_id: String,
        /// The key the peer sent there.
        key: String,
    },
}

/// Policy and limits for one outbound stream.
#[derive(Debug, Clone)]
pub struct OutboundConfig {
    /// Our domain (the stream's `from`).
    pub local: String,
    /// The peer's domain (the stream's `to`, SNI, the name its certificate must carry).
    pub remote: String,
    /// STARTTLS policy.
    pub tls: Want,
    /// SASL EXTERNAL policy (only possible with TLS and our certificate).
    pub sasl: Want,
    /// Dialback policy; `Required` means dialback even when SASL EXTERNAL is offered.
    pub dialback: Want,
    /// Whether TLS can be started at all (an identity and TLS config exist).
    pub tls_available: bool,
    /// Secret for our dialback keys (XEP-0185).
    pub dialback_secret: DialbackSecret,
    /// From connect until authenticated (or verified).
    pub handshake_timeout: Duration,
    /// Whitespace ping after this long without writing.
    pub keepalive: Duration,
    /// Close politely after this long without a stanza either way.
    pub idle_timeout: Duration,
    /// Most stanzas waiting for the stream.
    pub max_queue: usize,
    /// Stream parser limits.
    pub limits: StreamLimits,
}

/// Why an outbound session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutboundClose {
    /// Idle for `idle_timeout`: closed politely; queued stanzas (none) are not lost.
    Idle,
    /// The handshake deadline passed.
    HandshakeTimeout,
    /// The peer refused to authenticate us (dialback invalid/error, SASL failure, no usable
    /// mechanism) or broke policy (no STARTTLS while required).
    Refused(String),
    /// The peer sent a stream error.
    PeerError(ReceivedStreamError),
    /// The peer closed its stream.
    PeerClosed,
    /// We found the peer's stream broken (bad XML, limits).
    ProtocolError(StreamErrorCondition, String),
    /// The shell asked (shutdown).
    LocalClose,
    /// A verification stream got its answer.
    Done,
}

/// What the session tells the shell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutboundEvent {
    /// `<proceed/>` received: run the TLS client handshake now.
    StartTls,
    /// The pair is authenticated; queued stanzas are being written.
    Authenticated {
        /// How.
        method: AuthMethod,
        /// Whether the stream runs over TLS.
        tls: bool,
    },
    /// The authoritative server's answer to our `db:verify` (`true` = valid).
    Verified(bool),
    /// The stream is over; write pending output and close.
    Closed(OutboundClose),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    ExpectHeader,
    ExpectFeatures,
    ExpectProceed,
    ExpectTlsEstablished,
    ExpectSaslResult,
    ExpectDbResult,
    ExpectDbVerify,
    Ready,
    Closed,
}

/// The initiating side of one S2S stream. See the module doc for the calling order.
#[derive(Debug)]
pub struct OutboundSession {
    config: OutboundConfig,
    purpose: OutboundPurpose,
    parser: StreamParser,
    state: State,
    out: Vec<u8>,
    events: VecDeque<OutboundEvent>,
    queue: VecDeque<(Element, Option<u64>)>,
    /// Tracked stanzas whose bytes went into `out` since the last `take_written`.
    written: Vec<(u64, Element)>,
    stream_id: String,
    tls_active: bool,
    cert_valid: bool,
    sasl_tried: bool,
    authenticated: Option<AuthMethod>,
    handshake_deadline: Option<Instant>,
    keepalive_deadline: Instant,
    idle_deadline: Instant,
}

impl OutboundSession {
    /// A session on a freshly connected socket; the stream header is queued.
    pub fn new(config: OutboundConfig, purpose: OutboundPurpose, now: Instant) -> Self {
        let parser = StreamParser::new(config.limits.clone());
        let mut s = OutboundSession {
            handshake_deadline: Some(now + config.handshake_timeout),
            keepalive_deadline: now + config.keepalive,
            idle_deadline: now + config.idle_timeout,
            config,
            purpose,
            parser,
            state: State::ExpectHeader,
            out: Vec::new(),
            events: VecDeque::new(),
            queue: VecDeque::new(),
            written: Vec::new(),
            stream_id: String::new(),
            tls_active: false,
            cert_valid: false,
            sasl_tried: false,
            authenticated: None,
        };
        s.open();
        s
    }

    /// The peer's domain.
    pub fn remote(&self) -> &str {
        &self.config.remote
    }

    /// Whether the session is over.
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// Whether stanzas flow (authenticated).
    pub fn is_ready(&self) -> bool {
        self.state == State::Ready && self.authenticated.is_some()
    }

    /// Queues a stanza; written at once when ready. `Err` hands it back when the queue is full
    /// or the session closed (the caller bounces it).
    pub fn send(&mut self, now: Instant, stanza: Element) -> Result<(), Element> {
        self.send_with(now, stanza, None).map_err(|(s, _)| s)
    }

    /// As [`OutboundSession::send`], for a stanza whose `receipt` comes back from
    /// [`OutboundSession::take_written`] once its bytes are in the transmit buffer.
    pub fn send_tracked(
        &mut self,
        now: Instant,
        stanza: Element,
        receipt: u64,
    ) -> Result<(), Element> {
        self.send_with(now, stanza, Some(receipt))
            .map_err(|(s, _)| s)
    }

    /// [`OutboundSession::send`] or [`OutboundSession::send_tracked`] as one call, for a shell
    /// that carries `(stanza, receipt)` items; `Err` hands the item back.
    pub fn send_with(
        &mut self,
        now: Instant,
        stanza: Element,
        receipt: Option<u64>,
    ) -> Result<(), (Element, Option<u64>)> {
        if self.state == State::Closed {
            return Err((stanza, receipt));
        }
        if self.is_ready() {
            self.idle_deadline = now + self.config.idle_timeout;
            self.write_stanza(now, stanza, receipt);
            return Ok(());
        }
        if self.queue.len() >= self.config.max_queue {
            return Err((stanza, receipt));
        }
        self.queue.push_back((stanza, receipt));
        Ok(())
    }

    /// Stanzas not written, with their receipts (after a failure: to bounce).
    pub fn take_unsent(&mut self) -> Vec<(Element, Option<u64>)> {
        self.queue.drain(..).collect()
    }

    /// The tracked stanzas serialized into the transmit buffer since the last call, with their
    /// receipts, oldest first. Call it right after [`OutboundSession::poll_transmit`]: they
    /// are in that buffer. The stanza comes back too, for the shell to bounce if its write of
    /// the buffer fails.
    pub fn take_written(&mut self) -> Vec<(u64, Element)> {
        std::mem::take(&mut self.written)
    }

    /// Appends bytes to write.
    pub fn poll_transmit(&mut self, buf: &mut Vec<u8>) {
        buf.append(&mut self.out);
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<OutboundEvent> {
        self.events.pop_front()
    }

    /// The earliest deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.state == State::Closed {
            return None;
        }
        let mut t = self.idle_deadline;
        if let Some(h) = self.handshake_deadline {
            t = t.min(h);
        }
        if self.is_ready() {
            t = t.min(self.keepalive_deadline);
        }
        Some(t)
    }

    /// Fires deadlines that have passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.state == State::Closed {
            return;
        }
        if self.handshake_deadline.is_some_and(|h| now >= h) {
            self.send_stream_error(StreamErrorCondition::ConnectionTimeout);
            return self.close_with(OutboundClose::HandshakeTimeout);
        }
        if now >= self.idle_deadline {
            return self.close_with(OutboundClose::Idle);
        }
        if self.is_ready() && now >= self.keepalive_deadline {
            self.out.push(b' ');
            self.keepalive_deadline = now + self.config.keepalive;
        }
    }

    /// Bytes from the peer (decrypted once TLS is up).
    pub fn handle_input(&mut self, now: Instant, bytes: &[u8]) {
        if self.state == State::Closed {
            return;
        }
        if let Err(e) = self.parser.feed(bytes) {
            return self.fail(e.condition(), e.to_string());
        }
        while !matches!(self.state, State::Closed | State::ExpectTlsEstablished) {
            match self.parser.next_event() {
                Ok(None) => break,
                Ok(Some(StreamEvent::Whitespace)) => {}
                Ok(Some(StreamEvent::Start(header))) => self.on_header(header),
                Ok(Some(StreamEvent::Stanza(element))) => self.on_element(now, element),
                Ok(Some(StreamEvent::End)) => self.close_with(OutboundClose::PeerClosed),
                Err(e) => self.fail(e.condition(), e.to_string()),
            }
        }
    }

    /// Bytes read after `<proceed/>`: they belong to TLS.
    pub fn take_tls_bytes(&mut self) -> Vec<u8> {
        self.parser.take_unconsumed()
    }

    /// The TLS handshake succeeded; `cert_valid` says whether the server's certificate
    /// verified for the remote domain. Without it SASL EXTERNAL is not attempted and
    /// `tls = required` refuses the stream (an unauthenticated peer is not "TLS" for policy).
    pub fn handle_tls_established(&mut self, _now: Instant, cert_valid: bool) {
        if self.state != State::ExpectTlsEstablished {
            return;
        }
        self.tls_active = true;
        self.cert_valid = cert_valid;
        if !cert_valid && self.config.tls == Want::Required {
            return self.refuse(format!(
                "TLS required but the certificate of {} is not valid for it",
                self.config.remote
            ));
        }
        self.restart();
    }

    /// Closes from our side (shutdown).
    pub fn close(&mut self) {
        self.close_with(OutboundClose::LocalClose);
    }

    fn open(&mut self) {
        let header =
            StreamHeader::new_s2s(Some(&self.config.local), Some(&self.config.remote), None);
        self.out.extend_from_slice(header.to_xml().as_bytes());
    }

    fn restart(&mut self) {
        self.parser.reset();
        self.state = State::ExpectHeader;
        self.open();
    }

    fn on_header(&mut self, header: StreamHeader) {
        if self.state != State::ExpectHeader {
            return self.fail(
                StreamErrorCondition::InvalidXml,
                "second stream header".into(),
            );
        }
        self.stream_id = header.id.clone().unwrap_or_default();
        let v1 = header
            .version_numbers()
            .is_some_and(|(major, _)| major >= 1);
        if self.authenticated.is_some() {
            // Restart after SASL success: the features carry nothing we need.
            self.state = State::ExpectFeatures;
            return;
        }
        if v1 {
            self.state = State::ExpectFeatures;
        } else {
            // Pre-1.0 peer: no features, dialback only (RFC 6120 §4.7.5).
            self.on_features(&Element::new("features", NS_STREAMS));
        }
    }

    fn on_element(&mut self, now: Instant, element: Element) {
        if element.is("error", NS_STREAMS) {
            let received =
                ReceivedStreamError::from_element(&element).unwrap_or(ReceivedStreamError {
                    condition: None,
                    text: None,
                });
            return self.close_with(OutboundClose::PeerError(received));
        }
        match self.state {
            State::ExpectFeatures if element.is("features", NS_STREAMS) => {
                if self.authenticated.is_some() {
                    self.become_ready(now);
                } else {
                    self.on_features(&element);
                }
            }
            State::ExpectProceed if element.is("proceed", NS_TLS) => {
                self.state = State::ExpectTlsEstablished;
                self.events.push_back(OutboundEvent::StartTls);
            }
            State::ExpectProceed => self.refuse("STARTTLS refused by the peer".into()),
            State::ExpectSaslResult if element.is("success", NS_SASL) => {
                self.authenticated = Some(AuthMethod::SaslExternal);
                self.handshake_deadline = None;
                self.restart();
            }
            State::ExpectSaslResult if element.is("failure", NS_SASL) => {
                if self.config.dialback != Want::Disabled && self.config.sasl != Want::Required {
                    self.start_dialback();
                } else {
                    self.refuse("SASL EXTERNAL failed and dialback is not allowed".into());
                }
            }
            _ if element.namespace == NS_DIALBACK => self.on_dialback(now, &element),
            // Stanzas on our outbound stream (no XEP-0288): nothing to do with them.
            State::Ready => {}
            _ => self.fail(
                StreamErrorCondition::UnsupportedStanzaType,
                format!("unexpected <{}/> during set-up", element.name),
            ),
        }
    }

    fn on_features(&mut self, features: &Element) {
        let starttls = features.child("starttls", NS_TLS).is_some();
        if !self.tls_active
            && starttls
            && self.config.tls_available
            && self.config.tls != Want::Disabled
        {
            self.write_raw(&Element::new("starttls", NS_TLS));
            self.state = State::ExpectProceed;
            return;
        }
        if !self.tls_active && self.config.tls == Want::Required {
            return self.refuse(if starttls {
                "TLS required but no certificate is configured".into()
            } else {
                "TLS required ([xmpp] tls) but the peer does not offer STARTTLS".into()
            });
        }
        if let OutboundPurpose::Verify { stream_id, key } = &self.purpose {
            let verify = DbVerify {
                from: self.config.local.clone(),
                to: self.config.remote.clone(),
                id: stream_id.clone(),
                kind: DialbackKind::Request { key: key.clone() },
            };
            self.write_raw(&verify.to_element());
            self.state = State::ExpectDbVerify;
            return;
        }
        let external = features
            .child("mechanisms", NS_SASL)
            .is_some_and(|m| m.elements().any(|e| e.text().trim() == "EXTERNAL"));
        if self.tls_active
            && self.cert_valid
            && external
            && !self.sasl_tried
            && self.config.sasl != Want::Disabled
            // dialback = required: every domain pair proves itself with dialback.
            && self.config.dialback != Want::Required
        {
            self.sasl_tried = true;
            let authzid = crate::base64::encode(self.config.local.as_bytes());
            self.write_raw(
                &Element::new("auth", NS_SASL)
                    .with_attr("mechanism", "EXTERNAL")
                    .with_text(authzid),
            );
            self.state = State::ExpectSaslResult;
            return;
        }
        if self.config.sasl == Want::Required {
            return self.refuse("SASL EXTERNAL required ([xmpp] sasl) but not offered".into());
        }
        // Prosody and ejabberd advertise the dialback feature; legacy peers do not but
        // still speak it when the stream declares the db prefix (XEP-0220 §2.5).
        let _advertised = features.child("dialback", NS_DIALBACK_FEATURE).is_some();
        if self.config.dialback == Want::Disabled {
            return self.refuse("no usable authentication: dialback disabled".into());
        }
        self.start_dialback();
    }

    fn start_dialback(&mut self) {
        let key = dialback_key(
            &self.config.dialback_secret.0,
            &self.config.remote,
            &self.config.local,
            &self.stream_id,
        );
        let result = DbResult {
            from: self.config.local.clone(),
            to: self.config.remote.clone(),
            kind: DialbackKind::Request { key },
        };
        self.write_raw(&result.to_element());
        self.state = State::ExpectDbResult;
    }

    fn on_dialback(&mut self, now: Instant, element: &Element) {
        let parsed = match Dialback::from_element(element) {
            Ok(d) => d,
            Err(e) => return self.fail(StreamErrorCondition::InvalidXml, e.to_string()),
        };
        match (self.state, parsed) {
            (State::ExpectDbResult, Dialback::Result(r))
                if r.from.eq_ignore_ascii_case(&self.config.remote)
                    && r.to.eq_ignore_ascii_case(&self.config.local) =>
            {
                match r.kind {
                    DialbackKind::Valid => {
                        self.authenticated = Some(AuthMethod::Dialback);
                        self.handshake_deadline = None;
                        self.become_ready(now);
                    }
                    DialbackKind::Invalid => self.refuse("dialback key judged invalid".into()),
                    DialbackKind::Error(e) => {
                        self.refuse(format!("dialback error: {}", e.condition))
                    }
                    DialbackKind::Request { .. } => self.fail(
                        StreamErrorCondition::UnsupportedStanzaType,
                        "db:result request on an outbound stream".into(),
                    ),
                }
            }
            (State::ExpectDbVerify, Dialback::Verify(v)) => {
                let valid = matches!(v.kind, DialbackKind::Valid)
                    && v.from.eq_ignore_ascii_case(&self.config.remote)
                    && v.to.eq_ignore_ascii_case(&self.config.local)
                    && matches!(&self.purpose, OutboundPurpose::Verify { stream_id, .. } if *stream_id == v.id);
                self.events.push_back(OutboundEvent::Verified(valid));
                self.close_with(OutboundClose::Done);
            }
            // A stray answer (e.g. for another pair): ignore, as XEP-0220 allows.
            _ => {}
        }
    }

    fn become_ready(&mut self, now: Instant) {
        self.state = State::Ready;
        self.idle_deadline = now + self.config.idle_timeout;
        if let Some(method) = self.authenticated {
            self.events.push_back(OutboundEvent::Authenticated {
                method,
                tls: self.tls_active,
            });
        }
        while let Some((stanza, receipt)) = self.queue.pop_front() {
            self.write_stanza(now, stanza, receipt);
        }
    }

    fn write_stanza(&mut self, now: Instant, stanza: Element, receipt: Option<u64>) {
        self.write_raw(&stanza);
        self.keepalive_deadline = now + self.config.keepalive;
        if let Some(receipt) = receipt {
            self.written.push((receipt, stanza));
        }
    }

    fn write_raw(&mut self, element: &Element) {
        self.out
            .extend_from_slice(element.to_stream_xml().as_bytes());
    }

    fn send_stream_error(&mut self, condition: StreamErrorCondition) {
        self.write_raw(&stream_error_element(condition, None));
    }

    fn refuse(&mut self, why: String) {
        self.send_stream_error(StreamErrorCondition::PolicyViolation);
        self.close_with(OutboundClose::Refused(why));
    }

    fn fail(&mut self, condition: StreamErrorCondition, detail: String) {
        self.send_stream_error(condition);
        self.close_with(OutboundClose::ProtocolError(condition, detail));
    }

    fn close_with(&mut self, reason: OutboundClose) {
        if self.state == State::Closed {
            return;
        }
        self.out.extend_from_slice(STREAM_CLOSE.as_bytes());
        self.state = State::Closed;
        self.events.push_back(OutboundEvent::Closed(reason));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xmpp::element::NS_SERVER;
    use crate::xmpp::session::{
        DialbackVerdict, InboundConfig, InboundSession, SessionEvent, TlsPolicy,
    };

    const SECRET_A: &str = "secret-of-a-example";
    const SECRET_B: &str = "secret-of-b-example";

    /// b.example's answer to our stream header: header, then features offering dialback only.
    const PEER_OPEN: &[u8] = b"<?xml version='1.0'?><stream:stream xmlns='jabber:server' \
        xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' \
        from='b.example' to='a.example' id='s1' version='1.0' xml:lang='en'>\
        <stream:features><dialback xmlns='urn:xmpp:features:dialback'><errors/></dialback>\
        </stream:features>";
    const PEER_VALID: &[u8] = b"<db:result from='b.example' to='a.example' type='valid'/>";
    /// A stanza on our outbound stream (ignored), with a two-byte UTF-8 character to split.
    const PEER_STRAY: &[u8] =
        "<message from='x@b.example' to='y@a.example'><body>caf\u{e9}</body></message> ".as_bytes();
    const PEER_TLS_OPEN: &[u8] = b"<?xml version='1.0'?><stream:stream xmlns='jabber:server' \
        xmlns:stream='http://etherx.jabber.org/streams' from='b.example' id='s2' version='1.0'>\
        <stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>\
        <dialback xmlns='urn:xmpp:features:dialback'/></stream:features>";
    const PEER_AFTER_TLS: &[u8] = b"<?xml version='1.0'?><stream:stream xmlns='jabber:server' \
        xmlns:stream='http://etherx.jabber.org/streams' from='b.example' id='s3' version='1.0'>\
        <stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>\
        <mechanism>EXTERNAL</mechanism></mechanisms>\
        <dialback xmlns='urn:xmpp:features:dialback'/></stream:features>";
    const PEER_AFTER_SASL: &[u8] = b"<?xml version='1.0'?><stream:stream xmlns='jabber:server' \
        xmlns:stream='http://etherx.jabber.org/streams' from='b.example' id='s4' version='1.0'>\
        <stream:features/>";

    fn config(tls: Want) -> OutboundConfig {
        OutboundConfig {
            local: "a.example".into(),
            remote: "b.example".into(),
            tls,
            sasl: Want::Optional,
            dialback: Want::Optional,
            tls_available: true,
            dialback_secret: DialbackSecret(SECRET_A.into()),
            handshake_timeout: Duration::from_secs(60),
            keepalive: Duration::from_secs(300),
            idle_timeout: Duration::from_secs(600),
            max_queue: 4,
            limits: StreamLimits::default(),
        }
    }

    fn chat(body: &str) -> Element {
        Element::new("message", NS_SERVER)
            .with_attr("from", "u@a.example")
            .with_attr("to", "v@b.example")
            .with_child(Element::new("body", NS_SERVER).with_text(body))
    }

    fn output(s: &mut OutboundSession) -> String {
        let mut out = Vec::new();
        s.poll_transmit(&mut out);
        String::from_utf8(out).unwrap()
    }

    fn events(s: &mut OutboundSession) -> Vec<OutboundEvent> {
        std::iter::from_fn(|| s.poll_event()).collect()
    }

    #[test]
    fn dialback_with_every_split_of_the_peer_bytes() {
        let all = [PEER_OPEN, PEER_VALID, PEER_STRAY].concat();
        let key = dialback_key(SECRET_A, "b.example", "a.example", "s1");
        for split in 0..=all.len() {
            let now = Instant::now();
            let mut s = OutboundSession::new(config(Want::Optional), OutboundPurpose::Stanzas, now);
            s.send(now, chat("queued")).unwrap();
            let opened = output(&mut s);
            assert!(opened.contains("from='a.example'") && opened.contains("to='b.example'"));
            let (first, rest) = all.split_at(split);
            s.handle_input(now, first);
            s.handle_input(now, rest);
            let out = output(&mut s);
            assert!(
                out.contains(&format!(
                    "<db:result from='a.example' to='b.example'>{key}</db:result>"
                )),
                "split {split}: {out}"
            );
            assert!(out.contains("<body>queued</body>"), "split {split}: {out}");
            assert_eq!(
                events(&mut s),
                vec![OutboundEvent::Authenticated {
                    method: AuthMethod::Dialback,
                    tls: false
                }],
                "split {split}"
            );
            assert!(s.is_ready());
        }
        // One byte at a time, through the UTF-8 character of the stray stanza.
        let now = Instant::now();
        let mut s = OutboundSession::new(config(Want::Optional), OutboundPurpose::Stanzas, now);
        for b in &all {
            s.handle_input(now, std::slice::from_ref(b));
        }
        assert!(s.is_ready() && !s.is_closed());
    }

    #[test]
    fn starttls_then_sasl_external_then_restart() {
        let now = Instant::now();
        let mut s = OutboundSession::new(config(Want::Optional), OutboundPurpose::Stanzas, now);
        output(&mut s);
        s.handle_input(now, PEER_TLS_OPEN);
        assert!(output(&mut s).contains("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"));
        s.handle_input(
            now,
            b"<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>\x16\x03",
        );
        assert_eq!(events(&mut s), vec![OutboundEvent::StartTls]);
        assert_eq!(
            s.take_tls_bytes(),
            b"\x16\x03",
            "bytes after <proceed/> go to TLS"
        );
        s.handle_tls_established(now, true);
        assert!(output(&mut s).starts_with("<?xml"), "stream restarted");
        s.handle_input(now, PEER_AFTER_TLS);
        let auth = output(&mut s);
        // base64("a.example")
        assert!(
            auth.contains("mechanism='EXTERNAL'>YS5leGFtcGxl</auth>"),
            "{auth}"
        );
        s.handle_input(now, b"<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>");
        assert!(output(&mut s).starts_with("<?xml"), "restart after SASL");
        s.send(now, chat("hi")).unwrap();
        assert!(
            output(&mut s).is_empty(),
            "not before the new stream's features"
        );
        s.handle_input(now, PEER_AFTER_SASL);
        assert!(output(&mut s).contains("<body>hi</body>"));
        assert_eq!(
            events(&mut s),
            vec![OutboundEvent::Authenticated {
                method: AuthMethod::SaslExternal,
                tls: true
            }]
        );
    }

    #[test]
    fn dialback_required_uses_dialback_though_external_is_offered() {
        let now = Instant::now();
        let mut c = config(Want::Optional);
        c.dialback = Want::Required;
        let mut s = OutboundSession::new(c, OutboundPurpose::Stanzas, now);
        s.handle_input(now, PEER_TLS_OPEN);
        s.handle_input(now, b"<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
        s.handle_tls_established(now, true);
        output(&mut s);
        s.handle_input(now, PEER_AFTER_TLS);
        let out = output(&mut s);
        assert!(!out.contains("EXTERNAL"), "{out}");
        let key = dialback_key(SECRET_A, "b.example", "a.example", "s3");
        assert!(
            out.contains(&format!(
                "<db:result from='a.example' to='b.example'>{key}</db:result>"
            )),
            "{out}"
        );
    }

    #[test]
    fn invalid_server_certificate_means_dialback_and_required_tls_refuses() {
        let now = Instant::now();
        let mut s = OutboundSession::new(config(Want::Optional), OutboundPurpose::Stanzas, now);
        s.handle_input(now, PEER_TLS_OPEN);
        s.handle_input(now, b"<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
        s.handle_tls_established(now, false);
        output(&mut s);
        s.handle_input(now, PEER_AFTER_TLS);
        let out = output(&mut s);
        assert!(
            !out.contains("EXTERNAL") && out.contains("<db:result"),
            "{out}"
        );

        let mut s = OutboundSession::new(config(Want::Required), OutboundPurpose::Stanzas, now);
        s.send(now, chat("kept")).unwrap();
        s.handle_input(now, PEER_TLS_OPEN);
        s.handle_input(now, b"<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
        s.handle_tls_established(now, false);
        assert!(matches!(
            events(&mut s).last(),
            Some(OutboundEvent::Closed(OutboundClose::Refused(_)))
        ));
        assert_eq!(s.take_unsent().len(), 1, "handed back for bouncing");
    }

    #[test]
    fn required_tls_without_starttls_offered_refuses() {
        let now = Instant::now();
        let mut s = OutboundSession::new(config(Want::Required), OutboundPurpose::Stanzas, now);
        s.send(now, chat("kept")).unwrap();
        s.handle_input(now, PEER_OPEN);
        let out = output(&mut s);
        assert!(!out.contains("<db:result"), "{out}");
        assert!(out.ends_with("</stream:stream>"));
        assert!(matches!(
            events(&mut s).as_slice(),
            [OutboundEvent::Closed(OutboundClose::Refused(_))]
        ));
        assert_eq!(s.take_unsent().len(), 1);
        assert!(s.send(now, chat("late")).is_err(), "closed: handed back");
    }

    #[test]
    fn dialback_invalid_or_error_refuses_and_keeps_the_queue() {
        for answer in [
            &b"<db:result from='b.example' to='a.example' type='invalid'/>"[..],
            b"<db:result from='b.example' to='a.example' type='error'><error type='cancel'>\
              <remote-server-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></db:result>",
        ] {
            let now = Instant::now();
            let mut s =
                OutboundSession::new(config(Want::Optional), OutboundPurpose::Stanzas, now);
            s.send(now, chat("one")).unwrap();
            s.handle_input(now, PEER_OPEN);
            s.handle_input(now, answer);
            assert!(matches!(
                events(&mut s).as_slice(),
                [OutboundEvent::Closed(OutboundClose::Refused(_))]
            ));
            assert_eq!(s.take_unsent().len(), 1);
        }
    }

    #[test]
    fn receipts_queued_before_auth_are_written_after_auth() {
        let now = Instant::now();
        let mut s = OutboundSession::new(config(Want::Optional), OutboundPurpose::Stanzas, now);
        s.send_tracked(now, chat("one"), 1).unwrap();
        s.send(now, chat("untracked")).unwrap();
        s.send_tracked(now, chat("two"), 2).unwrap();
        output(&mut s);
        assert!(
            s.take_written().is_empty(),
            "nothing serialized before auth"
        );
        s.handle_input(now, PEER_OPEN);
        output(&mut s);
        assert!(s.take_written().is_empty(), "dialback under way");
        s.handle_input(now, PEER_VALID);
        let out = output(&mut s);
        assert!(out.contains("<body>one</body>") && out.contains("<body>two</body>"));
        let written = s.take_written();
        let receipts: Vec<u64> = written.iter().map(|(r, _)| *r).collect();
        assert_eq!(
            receipts,
            vec![1, 2],
            "in order, the untracked one not listed"
        );
        assert_eq!(
            written[1].1.child("body", NS_SERVER).map(Element::text),
            Some("two".to_owned()),
            "the stanza comes back with its receipt"
        );
        assert!(s.take_written().is_empty(), "taken once");
        assert!(s.take_unsent().is_empty());
    }

    #[test]
    fn receipts_sent_when_ready_are_written_at_once() {
        let now = Instant::now();
        let mut s = OutboundSession::new(config(Want::Optional), OutboundPurpose::Stanzas, now);
        s.handle_input(now, PEER_OPEN);
        s.handle_input(now, PEER_VALID);
        output(&mut s);
        assert!(s.is_ready());
        s.send_tracked(now, chat("now"), 9).unwrap();
        assert!(s.send_with(now, chat("plain"), None).is_ok());
        assert!(output(&mut s).contains("<body>now</body>"));
        let receipts: Vec<u64> = s.take_written().into_iter().map(|(r, _)| r).collect();
        assert_eq!(receipts, vec![9]);
    }

    #[test]
    fn close_before_auth_hands_back_receipts_unwritten() {
        let now = Instant::now();
        let mut s = OutboundSession::new(config(Want::Optional), OutboundPurpose::Stanzas, now);
        s.send_tracked(now, chat("a"), 5).unwrap();
        s.send(now, chat("b")).unwrap();
        s.send_tracked(now, chat("c"), 6).unwrap();
        s.handle_input(now, PEER_OPEN);
        s.close();
        output(&mut s);
        assert!(s.take_written().is_empty());
        let unsent: Vec<Option<u64>> = s.take_unsent().into_iter().map(|(_, r)| r).collect();
        assert_eq!(unsent, vec![Some(5), None, Some(6)]);
        assert_eq!(
            s.send_with(now, chat("late"), Some(7)).map_err(|(_, r)| r),
            Err(Some(7)),
            "closed: handed back with its receipt"
        );
        // A full queue hands the receipt back too.
        let mut s = OutboundSession::new(config(Want::Optional), OutboundPurpose::Stanzas, now);
        for i in 0..4 {
            s.send_tracked(now, chat(&i.to_string()), i).unwrap();
        }
        assert!(s.send_with(now, chat("fifth"), Some(4)).is_err());
        assert!(s.send_tracked(now, chat("sixth"), 5).is_err());
    }

    #[test]
    fn queue_is_bounded() {
        let now = Instant::now();
        let mut s = OutboundSession::new(config(Want::Optional), OutboundPurpose::Stanzas, now);
        for i in 0..4 {
            s.send(now, chat(&i.to_string())).unwrap();
        }
        assert!(s.send(now, chat("fifth")).is_err());
    }

    #[test]
    fn timers_handshake_keepalive_idle() {
        let t0 = Instant::now();
        let mut s = OutboundSession::new(config(Want::Optional), OutboundPurpose::Stanzas, t0);
        assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(60)));
        s.handle_timeout(t0 + Duration::from_secs(60));
        assert_eq!(
            events(&mut s),
            vec![OutboundEvent::Closed(OutboundClose::HandshakeTimeout)]
        );
        assert!(output(&mut s).contains("<connection-timeout"));

        let mut s = OutboundSession::new(config(Want::Optional), OutboundPurpose::Stanzas, t0);
        s.handle_input(t0, PEER_OPEN);
        s.handle_input(t0, PEER_VALID);
        output(&mut s);
        events(&mut s);
        let keepalive = t0 + Duration::from_secs(300);
        assert_eq!(s.poll_timeout(), Some(keepalive));
        s.handle_timeout(keepalive);
        assert_eq!(output(&mut s), " ", "whitespace keepalive");
        s.handle_timeout(t0 + Duration::from_secs(600));
        assert_eq!(
            events(&mut s),
            vec![OutboundEvent::Closed(OutboundClose::Idle)]
        );
        assert_eq!(output(&mut s), "</stream:stream>", "closed politely");
    }

    /// Moves bytes between an outbound and an inbound session until both are quiet.
    fn transfer(out: &mut OutboundSession, inb: &mut InboundSession, now: Instant) {
        loop {
            let mut a = Vec::new();
            out.poll_transmit(&mut a);
            let mut b = Vec::new();
            inb.poll_transmit(&mut b);
            if a.is_empty() && b.is_empty() {
                return;
            }
            inb.handle_input(now, &a);
            out.handle_input(now, &b);
        }
    }

    fn counter_ids(prefix: &'static str) -> Box<dyn FnMut() -> String + Send> {
        let mut n = 0;
        Box::new(move || {
            n += 1;
            format!("{prefix}{n}")
        })
    }

    /// The XEP-0220 trio in memory: a.example (originating, this session) → b.example
    /// (receiving, an InboundSession) which verifies with a.example's authoritative server
    /// (an InboundSession holding a.example's secret) over a Verify-purpose OutboundSession.
    #[test]
    fn dialback_trio_in_memory() {
        let now = Instant::now();
        let mut originating =
            OutboundSession::new(config(Want::Disabled), OutboundPurpose::Stanzas, now);
        originating.send(now, chat("through")).unwrap();
        let mut receiving_config =
            InboundConfig::new(["b.example".to_owned()], SECRET_B.to_owned());
        receiving_config.tls = TlsPolicy::NotSupported;
        let mut receiving = InboundSession::new(receiving_config, now, counter_ids("in-"));
        transfer(&mut originating, &mut receiving, now);
        let verify = std::iter::from_fn(|| receiving.poll_event())
            .find_map(|e| match e {
                SessionEvent::VerifyDialback {
                    local,
                    remote,
                    key,
                    stream_id,
                } => Some((local, remote, key, stream_id)),
                _ => None,
            })
            .expect("the receiving server asks for verification");
        assert_eq!(
            (verify.0.as_str(), verify.1.as_str()),
            ("b.example", "a.example")
        );

        // The receiving server's verification stream to a.example's authoritative server.
        let mut verifier_config = config(Want::Disabled);
        verifier_config.local = "b.example".into();
        verifier_config.remote = "a.example".into();
        verifier_config.dialback_secret = DialbackSecret(SECRET_B.into());
        let mut verifier = OutboundSession::new(
            verifier_config,
            OutboundPurpose::Verify {
                stream_id: verify.3.clone(),
                key: verify.2.clone(),
            },
            now,
        );
        let mut authoritative_config =
            InboundConfig::new(["a.example".to_owned()], SECRET_A.to_owned());
        authoritative_config.tls = TlsPolicy::NotSupported;
        let mut authoritative =
            InboundSession::new(authoritative_config, now, counter_ids("auth-"));
        transfer(&mut verifier, &mut authoritative, now);
        let verdict = std::iter::from_fn(|| verifier.poll_event())
            .find_map(|e| match e {
                OutboundEvent::Verified(v) => Some(v),
                _ => None,
            })
            .expect("an answer");
        assert!(verdict, "a.example's own key is valid");

        receiving.handle_dialback_verdict(&verify.0, &verify.1, DialbackVerdict::Valid);
        transfer(&mut originating, &mut receiving, now);
        assert!(originating.is_ready());
        let stanza = std::iter::from_fn(|| receiving.poll_event()).find_map(|e| match e {
            SessionEvent::Stanza { element, .. } => Some(element),
            _ => None,
        });
        assert_eq!(
            stanza.and_then(|e| e.child("body", NS_SERVER).map(Element::text)),
            Some("through".to_owned())
        );

        // A key made with another secret is judged invalid by the authoritative server.
        let mut forged = OutboundSession::new(
            {
                let mut c = config(Want::Disabled);
                c.local = "b.example".into();
                c.remote = "a.example".into();
                c
            },
            OutboundPurpose::Verify {
                stream_id: verify.3.clone(),
                key: dialback_key("not-the-secret", "b.example", "a.example", &verify.3),
            },
            now,
        );
        let mut authoritative = InboundSession::new(
            {
                let mut c = InboundConfig::new(["a.example".to_owned()], SECRET_A.to_owned());
                c.tls = TlsPolicy::NotSupported;
                c
            },
            now,
            counter_ids("auth2-"),
        );
        transfer(&mut forged, &mut authoritative, now);
        assert!(
            std::iter::from_fn(|| forged.poll_event()).any(|e| e == OutboundEvent::Verified(false))
        );
    }

    #[test]
    fn base64_vectors() {
        // RFC 4648 §10.
        for (raw, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(crate::base64::encode(raw.as_bytes()), encoded);
        }
    }
}
