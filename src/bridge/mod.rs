//! The translator's state, without I/O: which SIP request waits for which stanza, which XMPP
//! message waits for which SIP transaction, the IM sessions, the presence subscriptions
//! (`presence.rs`), and the timers of all of them.
//!
//! The router thread owns one [`Bridge`] and feeds it what happens on either side
//! (`handle_*`); the bridge answers with [`Action`]s (send a stanza, start a SIP transaction,
//! answer a SIP request) which the router carries out, and with [`Bridge::poll_timeout`] for
//! when to call [`Bridge::handle_timeout`]. The per-message mappings live in
//! `crate::translate`; this module decides *when* and *where*.
//!
//! ```text
//!  SIP → XMPP   MESSAGE ─▶ stanza (id xsgw…) ─▶ written on an authenticated stream?
//!                   │                           └▶ then a ping to the partner's domain (barrier)
//!                   │   200 ◀── barrier answered, and no error came back for the stanza before
//!                   │   4xx ◀── error stanza for it, or the stream failed (mapped, RFC 7247 §7)
//!                   └── 408 ◀── nothing of that within [sip] delivery_timeout
//!  XMPP → SIP   <message/> ─▶ MESSAGE (page) or MESSAGE in an IM session ─▶ final response
//!                   2xx: delivered; error: <message type='error'/> to the sender (RFC 7247 §7)
//! ```
//!
//! Never promise early: XMPP has no delivery receipt between servers, so "written to the
//! stream" is not yet "accepted". A server answers a message it refuses (unknown user, policy)
//! with an error stanza at once, and answers every IQ get (RFC 6120 §8.2.3); both come back
//! in order on its stream to us. So after the stanzas are written, the bridge sends one
//! XEP-0199 ping to the partner's domain; when its answer (result or error) arrives, every
//! stanza written before it that drew no error was accepted, and only then is its SIP request
//! answered 200. One ping is in flight per domain pair at a time, so under load it covers
//! many messages; the cost is one round trip to the partner's server.
//!
//! Answers are matched by id *and* domain: stanza and ping ids are `xsgw-` and 128 bits from
//! the bridge's random source (no counter to follow), and an error stanza or ping answer
//! counts only when it comes from the domain the stanza or ping was sent to; another partner
//! that learnt an id cannot answer a message for someone else.
//!
//! Addresses (RFC 7247 §5, `translate::address`): SIP users are seen from XMPP as bare JIDs
//! (`sip:bob@contoso.com` ⇄ `bob@contoso.com`); XMPP resources are not shown to SIP: the From
//! of a MESSAGE is the sender's bare address, and messages from SIP go to the bare JID, which
//! the partner's server delivers to the user's resources (RFC 6121 §8.5.2). A GRUU in a
//! Request-URI becomes the resource. Anything that does not map gets the mapped error.
//!
//! Sessions (Microsoft style, protocol notes §3): an INVITE from the Edge with an IM SDP is
//! answered at once (a session promises nothing about messages), unless it carries the first
//! message itself (`Ms-Text-Format: …; ms-body=<base64>`, as Lync clients do): then its 200
//! waits for that message to be accepted like a MESSAGE would, and an error refuses the
//! INVITE with the mapped status. MESSAGE and INFO typing
//! inside it are translated like page-mode ones; BYE ends it and tells XMPP `<gone/>`. Toward
//! SIP, `[sip] im_mode` chooses page or session per partner; `auto` starts in page mode and
//! remembers SIP domains whose Edge refuses it. A session either side opened carries the
//! conversation's messages; `<gone/>` or `[sip] session_idle` ends it with BYE.
//!
//! Out of scope: sockets, threads and the registry of pending SIP server transactions (the
//! router keeps those by [`RequestId`]) and files (the changed subscriptions are handed to the
//! router to save, [`Action::SaveSubscriptions`]). Presence lives in `presence.rs` (its cache
//! in `presence_cache.rs`) beside IM in `im.rs`; both share the bridge's tags, timers and
//! actions, the start of the SIP requests they send outside a dialog (`outside_dialog.rs`),
//! and the per-partner quotas and stanza rate of `quota.rs`.

mod im;
mod outside_dialog;
mod presence;
mod presence_cache;
#[cfg(test)]
mod presence_tests;
mod quota;
#[cfg(test)]
mod quota_tests;
#[cfg(test)]
mod tests;

pub use presence::MAX_SUBSCRIPTIONS;
pub use quota::{QuotaConfig, QuotaKind};

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::config::{Config, ImMode};
use crate::sip::dialog::DialogId;
use crate::sip::{MessageBuilder, Request, Response, StatusCode, Uri};
use crate::translate::im::ImLimits;
use crate::xmpp::element::Element;
use crate::xmpp::error::StanzaErrorCondition;

/// Where tags, branches and Call-IDs come from (the system's random source in the gateway).
pub type RandomSource = Box<dyn FnMut(&mut [u8]) + Send>;

/// The router's handle on a request from the Edge that waits for an answer.
pub type RequestId = u64;
/// Identifies a stanza the bridge asked to be written with a delivery receipt.
pub type Receipt = u64;
/// Identifies a SIP client transaction the bridge started.
pub type TxTag = u64;

/// At most this many SIP requests wait for the XMPP side at once; more are answered 500.
pub const MAX_WAITING: usize = 100_000;
/// At most this many XMPP messages wait for a SIP final response at once.
pub const MAX_SIP_TRANSACTIONS: usize = 100_000;
/// At most this many IM sessions exist at once.
pub const MAX_SESSIONS: usize = 50_000;
/// How often idle sessions are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(15);

/// What the bridge needs from the configuration.
#[derive(Debug, Clone)]
pub struct BridgeConfig {
    /// `[gateway] fqdn`, for Warning headers and Call-IDs.
    pub fqdn: String,
    /// `[gateway] sip_domains`, lowercased.
    pub hosted: HashSet<String>,
    /// Our Contact in dialogs: `sip:<fqdn>:<port>;transport=tls`.
    pub contact: Uri,
    /// Via sent-by of requests sent outside a transaction (ACK).
    pub via_sent_by: String,
    /// The address written in SDP `o=`/`c=` lines.
    pub sdp_address: IpAddr,
    /// `[sip] im_mode`.
    pub im_mode: ImMode,
    /// `[partner] im_mode`, by partner domain and alias (lowercase).
    pub partner_modes: HashMap<String, ImMode>,
    /// `[sip] delivery_timeout`.
    pub delivery_timeout: Duration,
    /// `[sip] session_idle`.
    pub session_idle: Duration,
    /// Message size bound (`[sip] max_message`).
    pub limits: ImLimits,
    /// `[quota]` and the partners' overrides.
    pub quotas: QuotaConfig,
}

impl BridgeConfig {
    /// The bridge's view of `config`; `Err` if `[gateway] fqdn` cannot be a SIP host (config
    /// validation prevents that).
    pub fn from_config(config: &Config) -> Result<BridgeConfig, crate::sip::SyntaxError> {
        let port = config.sip.listen.port();
        let fqdn = config.gateway.fqdn.clone();
        let contact = Uri::parse(&format!("sip:{fqdn}:{port};transport=tls"))?;
        let sdp_address = match config.sip.listen.ip() {
            ip if ip.is_unspecified() => IpAddr::from([127, 0, 0, 1]),
            ip => ip,
        };
        let mut partner_modes = HashMap::new();
        for partner in &config.partners {
            if let Some(mode) = partner.im_mode {
                partner_modes.insert(partner.domain.to_ascii_lowercase(), mode);
                for alias in &partner.aliases {
                    partner_modes.insert(alias.to_ascii_lowercase(), mode);
                }
            }
        }
        Ok(BridgeConfig {
            hosted: config.hosted_domains(),
            contact,
            via_sent_by: format!("{fqdn}:{port}"),
            fqdn,
            sdp_address,
            im_mode: config.sip.im_mode,
            partner_modes,
            delivery_timeout: config.sip.delivery_timeout,
            session_idle: config.sip.session_idle,
            limits: ImLimits {
                max_body: config.sip.max_message,
            },
            quotas: QuotaConfig::from_config(config),
        })
    }

    /// The IM mode toward SIP for messages from `partner_domain`.
    pub fn mode_for(&self, partner_domain: &str) -> ImMode {
        self.partner_modes
            .get(&partner_domain.to_ascii_lowercase())
            .copied()
            .unwrap_or(self.im_mode)
    }

    fn is_hosted(&self, domain: &str) -> bool {
        self.hosted.contains(&domain.to_ascii_lowercase())
    }
}

/// How the router answers a request from the Edge.
#[derive(Debug)]
pub enum Answer {
    /// A final response with this status (To tag added by the router) and an optional
    /// Warning text (sent as `399 <fqdn> "text"`).
    Status {
        status: StatusCode,
        warning: Option<String>,
    },
    /// A response built here (an INVITE's 200 with SDP and Contact).
    Built(Box<MessageBuilder>),
    /// 503 with `Retry-After: retry_after` (seconds) and a Warning: a quota that drains by
    /// itself within that time (see `quota.rs`).
    Busy { retry_after: u32, warning: String },
}

/// What the router must do.
#[derive(Debug)]
pub enum Action {
    /// Answer the request `request` (its final response: the router forgets it then).
    Respond { request: RequestId, answer: Answer },
    /// Start a client transaction toward the Edge; its outcome comes back to
    /// [`Bridge::handle_sip_outcome`] with `tag`. The connection adds Via and Max-Forwards.
    SendSip {
        tag: TxTag,
        request: Box<MessageBuilder>,
    },
    /// Send outside any transaction (the ACK of a 2xx; it carries its own Via).
    SendSipStateless { request: Box<MessageBuilder> },
    /// Send a stanza to a partner; with a receipt, [`Bridge::handle_written`] or
    /// [`Bridge::handle_xmpp_failed`] follows.
    SendStanza {
        stanza: Element,
        receipt: Option<Receipt>,
    },
    /// Save these changes of the presence subscriptions (in order; a crash must leave each
    /// subscription as it was before or after a change, never half of it); the saved whole
    /// is read back with [`Bridge::restore_subscriptions`]. See [`SubscriptionChange`].
    SaveSubscriptions(Vec<SubscriptionChange>),
}

/// One change of the saved subscriptions, by the subscription's key (direction, SIP user,
/// XMPP user, escaped like the line: no space or control character).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubscriptionChange {
    /// The subscription `key` is now `line` (replacing any line of the same key).
    Put { key: String, line: String },
    /// The subscription `key` is gone.
    Remove { key: String },
}

impl SubscriptionChange {
    /// The subscription it changes.
    pub fn key(&self) -> &str {
        match self {
            SubscriptionChange::Put { key, .. } | SubscriptionChange::Remove { key } => key,
        }
    }
}

/// The end of a client transaction the bridge started.
#[derive(Debug, Clone)]
pub enum SipOutcome {
    /// The final response.
    Final(Box<Response>),
    /// No final response (not connected, transport error, Timer B/F): why.
    Failed(String),
}

/// Counters an operator (and the demo) can read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// SIP requests answered 200 after their stanza was accepted.
    pub sip_to_xmpp_delivered: u64,
    /// SIP requests answered with an error.
    pub sip_to_xmpp_refused: u64,
    /// XMPP messages whose SIP transaction ended 2xx.
    pub xmpp_to_sip_delivered: u64,
    /// XMPP messages bounced with an error stanza.
    pub xmpp_to_sip_bounced: u64,
    /// Typing notifications carried either way.
    pub typing: u64,
    /// IM sessions opened (either side).
    pub sessions_opened: u64,
}

/// The translator state. See the module documentation.
pub struct Bridge {
    config: BridgeConfig,
    random: RandomSource,
    actions: VecDeque<Action>,
    next_id: u64,
    im: im::ImState,
    /// Deadlines of waiting SIP requests, in insertion order (all are now + one constant).
    deadlines: VecDeque<(Instant, Receipt)>,
    next_sweep: Option<Instant>,
    stats: Stats,
    presence: presence::PresenceState,
    quota: quota::QuotaState,
    /// An instant and the wall-clock seconds it stands for, so persisted expiries survive
    /// a restart.
    clock: (Instant, u64),
}

impl std::fmt::Debug for Bridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bridge")
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Bridge {
    /// A reloaded configuration: applies to what happens from now on (IM modes, timeouts,
    /// size bounds and `[quota]` of new requests and stanzas; a lowered quota refuses what
    /// comes next, nothing held is dropped); what is under way keeps its deadlines.
    pub fn reconfigure(&mut self, config: BridgeConfig) {
        self.config = config;
    }

    /// A bridge with `random` as the source of tags and Call-IDs, created at `now`, which is
    /// `unix_now` seconds after the Unix epoch on the wall clock (the caller reads both
    /// clocks; the bridge dates saved subscription expiries from them).
    pub fn new(config: BridgeConfig, random: RandomSource, now: Instant, unix_now: u64) -> Bridge {
        Bridge {
            config,
            random,
            actions: VecDeque::new(),
            next_id: 1,
            im: im::ImState::default(),
            deadlines: VecDeque::new(),
            next_sweep: None,
            stats: Stats::default(),
            presence: presence::PresenceState::default(),
            quota: quota::QuotaState::default(),
            clock: (now, unix_now),
        }
    }

    /// Sets which wall-clock second `now` is.
    #[cfg(test)]
    pub(crate) fn with_clock(mut self, now: Instant, unix_now: u64) -> Bridge {
        self.clock = (now, unix_now);
        self
    }

    /// Reads the presence subscriptions saved by [`Action::SaveSubscriptions`] and
    /// re-establishes them. Returns how many were read and one message per refused line.
    pub fn restore_subscriptions(&mut self, now: Instant, text: &str) -> (usize, Vec<String>) {
        let out = presence::restore(self, now, text);
        presence::maybe_save(self, now);
        out
    }

    /// The gateway is stopping: every SIP request still waiting for the XMPP side is answered
    /// now (480, with a Warning saying whether its stanza may have reached the partner),
    /// rather than left to the Edge's timer; then the subscriptions are saved.
    pub fn shut_down(&mut self, now: Instant) {
        im::shut_down(self);
        presence::flush(self, now);
    }

    /// Saves the presence subscriptions now if anything changed since the last save (at
    /// shutdown: nothing waits for the rate limit).
    pub fn flush(&mut self, now: Instant) {
        presence::flush(self, now);
    }

    /// How many presence subscriptions exist (both directions).
    pub fn subscriptions(&self) -> usize {
        self.presence.len()
    }

    /// The next thing to do.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When [`Bridge::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.deadlines.front().map(|(t, _)| *t),
            self.next_sweep,
            im::next_typing_timer(self),
            self.presence.next_timer(self.clock.0),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// What has crossed so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// How many IM sessions exist.
    pub fn sessions(&self) -> usize {
        self.im.sessions.len()
    }

    /// A request from the Edge (already checked by the connection: Request-URI in a federated
    /// domain, not `sips:`, OPTIONS answered). Every request but ACK gets exactly one
    /// [`Action::Respond`], now or later.
    pub fn handle_sip_request(&mut self, now: Instant, id: RequestId, request: &Request) {
        self.arm_sweep(now);
        match request.method {
            crate::sip::Method::Subscribe | crate::sip::Method::Notify => {
                presence::sip_request(self, now, id, request)
            }
            _ => im::sip_request(self, now, id, request),
        }
        presence::maybe_save(self, now);
    }

    /// The end of a client transaction started with [`Action::SendSip`].
    pub fn handle_sip_outcome(&mut self, now: Instant, tag: TxTag, outcome: SipOutcome) {
        if !presence::sip_outcome(self, now, tag, &outcome) {
            im::sip_outcome(self, now, tag, outcome);
        }
        presence::maybe_save(self, now);
    }

    /// An authenticated stanza from `remote` (a partner domain) to `local` (a hosted domain).
    /// Over the partner's stanza rate it is answered `resource-constraint` and goes no further.
    pub fn handle_stanza(&mut self, now: Instant, local: &str, remote: &str, stanza: Element) {
        self.arm_sweep(now);
        if !self.admit(now, remote, &stanza) {
            return;
        }
        im::stanza(self, now, local, remote, stanza);
        presence::maybe_save(self, now);
    }

    /// These stanzas are on an authenticated stream.
    pub fn handle_written(&mut self, _now: Instant, receipts: &[Receipt]) {
        im::written(self, receipts);
    }

    /// This stanza could not be sent.
    pub fn handle_xmpp_failed(
        &mut self,
        _now: Instant,
        receipt: Receipt,
        condition: StanzaErrorCondition,
    ) {
        im::xmpp_failed(self, receipt, condition, None);
    }

    /// Fires what is due.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(at, receipt)) = self.deadlines.front() {
            if at > now {
                break;
            }
            self.deadlines.pop_front();
            im::deadline(self, receipt);
        }
        im::typing_timers(self, now);
        presence::timers(self, now);
        if self.next_sweep.is_some_and(|t| t <= now) {
            im::sweep_sessions(self, now);
            self.next_sweep = (!self.im.sessions.is_empty()).then(|| now + SWEEP_EVERY);
        }
    }

    /// Requests refused so far because a partner was over one of its quotas.
    pub fn quota_refusals(&self) -> u64 {
        self.quota.refused
    }

    /// Bytes of presence cached for `partner` (its `[partner]` domain) and in all.
    pub fn presence_cache_bytes(&self, partner: &str) -> (usize, usize) {
        self.presence.cache_bytes(partner)
    }

    /// The stanza rate of the partner `remote`: `false` (and the stanza answered
    /// `resource-constraint`) when it is over. Errors and IQ results are not refused (see
    /// `quota.rs`).
    fn admit(&mut self, now: Instant, remote: &str, stanza: &Element) -> bool {
        let kind = stanza.attr("type");
        if kind == Some("error") || (stanza.name == "iq" && kind == Some("result")) {
            return true;
        }
        let (partner, q) = self.config.quotas.partner(remote);
        if self.quota.take_token(now, &partner, &q) {
            return true;
        }
        self.quota.hit(
            now,
            &partner,
            QuotaKind::StanzaRate,
            u64::from(q.stanza_rate),
        );
        self.refuse_stanza(stanza, QuotaKind::StanzaRate);
        false
    }

    /// Answers `stanza` with `resource-constraint` for `kind` (without its payload).
    fn refuse_stanza(&mut self, stanza: &Element, kind: QuotaKind) {
        use crate::xmpp::error::{error_reply, StanzaError};
        if stanza.name == "message" && stanza.attr("type") == Some("headline") {
            return; // RFC 6121 §5.2.2: never answered.
        }
        let text = match kind {
            QuotaKind::StanzaRate => "too many stanzas from your domain: slow down".to_owned(),
            kind => format!("your domain is at its {kind} quota at this gateway"),
        };
        let error = StanzaError::new(StanzaErrorCondition::ResourceConstraint).with_text(text);
        if let Some(mut reply) = error_reply(stanza, &error) {
            // The error alone: echoing a large payload back would amplify a flood.
            reply.children.retain(
                |c| matches!(c, crate::xmpp::element::Node::Element(e) if e.name == "error"),
            );
            self.send_stanza(reply, None);
        }
    }

    fn arm_sweep(&mut self, now: Instant) {
        if self.next_sweep.is_none() {
            self.next_sweep = Some(now + SWEEP_EVERY);
        }
    }

    fn fresh_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn random_hex(&mut self, bytes: usize) -> String {
        let mut b = vec![0u8; bytes];
        (self.random)(&mut b);
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    fn respond(&mut self, request: RequestId, status: StatusCode, warning: Option<String>) {
        self.actions.push_back(Action::Respond {
            request,
            answer: Answer::Status { status, warning },
        });
    }

    /// 503 with Retry-After: a quota that drains by itself within `retry`.
    fn respond_busy(&mut self, request: RequestId, retry: Duration, warning: String) {
        self.actions.push_back(Action::Respond {
            request,
            answer: Answer::Busy {
                retry_after: quota::retry_after(retry),
                warning,
            },
        });
    }

    fn send_stanza(&mut self, stanza: Element, receipt: Option<Receipt>) {
        self.actions
            .push_back(Action::SendStanza { stanza, receipt });
    }

    fn send_sip(&mut self, tag: TxTag, request: MessageBuilder) {
        self.actions.push_back(Action::SendSip {
            tag,
            request: Box::new(request),
        });
    }
}

/// A session is keyed by the two parties: (SIP address of record, bare JID), both lowercase
/// where case does not matter.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct PairKey {
    sip: String,
    xmpp: String,
}

/// Where a dialog belongs.
type DialogIndex = HashMap<DialogId, PairKey>;
