//! The XMPP server-to-server shell: the threads that run S2S streams around the sans-IO
//! sessions of `crate::xmpp` ([`crate::xmpp::session::InboundSession`],
//! [`crate::xmpp::outbound::OutboundSession`]), and the router's S2S table ([`XmppRoutes`]).
//!
//! ```text
//!  xmpp-listen ─accept─▶ xmpp-in-N (inbound.rs): TCP ─▶ STARTTLS ─▶ InboundSession
//!                              │ db:result from a peer: an outbound stream (outbound::verify,
//!                              │ in this thread) to the claimed domain's servers, db:verify
//!                              └─ authenticated stanzas ─▶ router ─▶ XmppRoutes ─▶ sink
//!  router: XmppEvent::Send ─▶ XmppRoutes ── stream for (from, to) domains? ── no ─▶ spawn
//!     or SendTracked           xmpp-out-<domain> (outbound.rs): SRV order, connect, STARTTLS,
//!                              SASL EXTERNAL or dialback, bounded queue, keepalive, idle close
//!                              ├─ tracked stanzas written to the socket ─▶ XmppEvent::Written
//!                              └─ on failure every queued stanza ─▶ XmppEvent::Bounce
//! ```
//!
//! Delivery receipts ("never promise early"): a stanza sent with
//! [`XmppEvent::SendTracked`] carries a [`Receipt`] the router chose, through the channel to
//! its outbound thread, the session's queue, a resubmission after a stream that worked then
//! broke, and any bounce. [`XmppRoutes::handle`] answers for it exactly once with a
//! [`Delivery`]: `Written` once the write of its bytes to an authenticated stream returned
//! (the bytes are with the kernel, not yet acknowledged by the peer: XMPP S2S has no
//! acknowledgement without XEP-0198, which is out of scope), or `Failed` with the stanza and
//! the condition, wherever it failed (policy, full queue, no thread, no stream, a failed
//! write). A failed tracked stanza is not answered with an error stanza: the router answers
//! the SIP side itself. Untracked stanzas ([`XmppEvent::Send`]) bounce to their sender as
//! before. Written receipts are batched per socket write.
//!
//! In scope: the federation policy (allowlist/open/block, per-partner tls/sasl/dialback and
//! route, IP-literal domains refused unless they are partners, [`decide`]), `max_per_partner`,
//! the outbound caps (`max_outbound`: a stanza needing a new stream over it fails with
//! `resource-constraint`; `max_outbound_per_address`; verifications hold at most half of
//! each; `limits.rs`), the address screen for
//! what a partner's DNS says (`crate::dns::screen_targets`, with the Edge's addresses
//! resolved here), the timeouts from `[xmpp]`, registering every connection with the router
//! so shutdown can wake it. Out of scope: translation (the router
//! hands inbound stanzas, [`Delivery::Inbound`], to `crate::bridge`; in-process tests install
//! a sink instead, [`XmppNotice`]).
//!
//! Choices:
//! - One outbound stream per (hosted domain, remote domain) pair, no dialback piggybacking
//!   (see `crate::xmpp::outbound`).
//! - Certificates are judged after the handshake (`crate::tls::xmpp`): a peer with an
//!   unverifiable certificate still gets TLS and dialback (unless `tls = required`), and
//!   SASL EXTERNAL only happens with a certificate valid for the domain.
//! - An outbound thread waits on its socket and its queue by polling the queue every
//!   [`OUTBOUND_POLL`] (a blocking socket cannot be woken by a channel); a gateway has few
//!   outbound streams, so the wake-ups cost little, and a stanza waits at most that long.
//! - Inbound dialback verification runs in the inbound thread: only that peer waits for it.
//! - Shutdown: every outbound stream (stanza or verification) looks at the gateway's stop
//!   flag ([`Lifecycle`]) at least every [`OUTBOUND_POLL`], closes politely and tries no
//!   further target, so a verification the router cannot wake (it does not register its
//!   socket) still ends; outbound threads go into the gateway's `ThreadSet`, which
//!   `Gateway::wait` joins. Still bounded only by its own timeout: a thread inside
//!   `connect_timeout` or a DNS query (`[dns] timeout`) at shutdown.
//! - `dialback = required` (per partner or in `[xmpp]`) means what the Lync/Skype knob means:
//!   every domain pair is authenticated with Server Dialback, and SASL EXTERNAL alone does
//!   not satisfy it. Inbound, SASL EXTERNAL is not offered to such a partner; outbound,
//!   dialback is used even when the peer offers EXTERNAL. `sasl = required` means the
//!   opposite (certificates only, no dialback), so the two together are refused by config
//!   validation rather than given a "both must pass" meaning no common server implements.
//! - A tracked stanza whose stream broke after it was handed to the session but before it
//!   was written goes round again like any queued stanza (resubmitted after a stream that
//!   worked, bounced otherwise); once written it is never resent, so a receipt is answered
//!   once and a stanza is never duplicated by the gateway.
//! - Accepted inbound stanzas go to the translator ([`Delivery::Inbound`]), or to a test's
//!   sink when one is installed; a full sink never drops one in silence: its sender gets
//!   `<resource-constraint/>` with a text, sent over an outbound stream to the sender's
//!   domain like any other stanza. Error stanzas and IQ results are never answered
//!   (RFC 6120 §8.3.1, §8.2.3).

mod inbound;
pub mod io;
mod limits;
mod outbound;

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Sender, TrySendError};

use super::live::ConfigCell;
use super::router::RouterEvent;
use super::threads::ThreadSet;
use crate::config::{AuthPolicy, Config, FederationMode, Requirement};
use crate::dns::{resolve_host, AddressPolicy, Resolver, StaticHosts};
use crate::logsafe::{escaped, SharedRateLimit, Suppressed};
use crate::tls::xmpp::XmppTls;
use crate::xmpp::element::Element;
use crate::xmpp::error::{error_reply, StanzaError, StanzaErrorCondition, StreamErrorCondition};
use crate::xmpp::jid::Jid;
use crate::xmpp::session::{AuthMethod, DialbackSecret};

pub(super) use inbound::serve_inbound;
use limits::{OutboundLimits, OutboundUse};

/// A stanza that arrived on an authenticated inbound stream, addresses checked.
#[derive(Debug, Clone)]
pub struct InboundStanza {
    /// Our domain it is addressed to.
    pub local: String,
    /// The authenticated peer domain it comes from.
    pub remote: String,
    /// The stanza.
    pub stanza: Element,
}

/// Chosen by whoever sends a tracked stanza ([`XmppEvent::SendTracked`]) and handed back in
/// exactly one [`Delivery`]; opaque to the S2S side (uniqueness is the sender's business).
pub type Receipt = u64;

/// A stanza for an outbound stream's thread, with its receipt when tracked.
type Outgoing = (Element, Option<Receipt>);

/// What became of tracked stanzas, for the router to answer the SIP side.
#[derive(Debug, Clone)]
#[non_exhaustive]
// Read by the router once it answers SIP from receipts (the integration step).
pub enum Delivery {
    /// An authenticated inbound stanza, for the translator.
    Inbound(InboundStanza),
    /// These stanzas' bytes were written to their authenticated outbound streams.
    Written(Vec<Receipt>),
    /// This stanza will not be sent; no error stanza was made for it.
    Failed {
        /// Its receipt.
        receipt: Receipt,
        /// The stanza as it was to be sent.
        stanza: Element,
        /// Why, as an XMPP stanza error condition.
        condition: StanzaErrorCondition,
    },
}

/// What the S2S side tells the router.
#[derive(Debug)]
#[non_exhaustive]
pub enum XmppEvent {
    /// An authenticated stanza from a peer.
    Inbound(InboundStanza),
    /// A stanza to send to a remote domain (from the translator, or a test).
    Send(Element),
    /// A stanza to send whose fate comes back as a `Delivery` with `receipt`.
    SendTracked {
        /// The stanza.
        stanza: Element,
        /// Handed back in the `Delivery`.
        receipt: Receipt,
    },
    /// A stanza that could not be delivered; its sender gets an error stanza, or, when
    /// tracked, the router a `Delivery::Failed`.
    Bounce {
        /// The stanza as it was to be sent.
        stanza: Element,
        /// Why.
        condition: StanzaErrorCondition,
        /// Its receipt when it was sent tracked.
        receipt: Option<Receipt>,
    },
    /// The write of these tracked stanzas to an authenticated outbound stream succeeded.
    Written {
        /// Their receipts, in the order written.
        receipts: Vec<Receipt>,
    },
    /// A domain pair was authenticated on a stream.
    Authenticated {
        /// `true` for a stream we opened.
        outbound: bool,
        /// Our domain.
        local: String,
        /// The peer's domain.
        remote: String,
        /// How.
        method: AuthMethod,
        /// Whether the stream runs over TLS.
        tls: bool,
        /// The peer's address.
        peer: SocketAddr,
        /// The connection it runs on (for `xsgw status`), when registered with the router.
        conn: Option<super::router::ConnId>,
    },
    /// An outbound stream thread stopped taking stanzas.
    OutboundEnded {
        /// Our domain.
        local: String,
        /// The peer's domain.
        remote: String,
        /// Which thread (the table may already hold a newer one).
        stream: u64,
    },
}

/// What the router hands on for the XMPP side while there is no translator (a test sink).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum XmppNotice {
    /// An authenticated inbound stanza.
    Stanza(InboundStanza),
    /// The error stanza for an undeliverable stanza, addressed to its sender.
    Bounced(Element),
    /// A domain pair was authenticated (for observability and tests).
    Authenticated {
        /// `true` for a stream we opened.
        outbound: bool,
        /// Our domain.
        local: String,
        /// The peer's domain.
        remote: String,
        /// How.
        method: AuthMethod,
        /// Whether the stream runs over TLS.
        tls: bool,
        /// The peer's address.
        peer: SocketAddr,
    },
}

/// What every S2S thread shares, read-only but for two small counters.
pub struct S2sContext {
    /// The configuration and TLS in force (the router replaces it on reload): read once per
    /// stream and per policy decision, see [`S2sContext::config`].
    pub live: Arc<ConfigCell>,
    pub secret: DialbackSecret,
    /// `[gateway] sip_domains`, lowercased: the domains served here.
    pub hosted: HashSet<String>,
    pub resolver: Resolver,
    pub hosts: StaticHosts,
    pub events: Sender<RouterEvent>,
    /// Authenticated inbound streams per peer domain (`max_per_partner`).
    per_partner: Mutex<HashMap<String, usize>>,
    /// Policy refusals logged at warn level: once an hour per domain, and a few a minute in
    /// all, so a peer rotating made-up domains cannot flood the log.
    refused: SharedRateLimit<String>,
    refused_total: SharedRateLimit<()>,
    /// `max_per_partner` refusals: two lines a minute per partner domain.
    partner_quota_log: SharedRateLimit<String>,
    /// `max_outbound` and `max_outbound_per_address`.
    outbound: OutboundLimits,
    /// The Edge's and our own addresses, never connected to for a partner's DNS; resolved
    /// when first needed (in a connection thread) and kept until the instant given.
    protected: Mutex<Option<(Instant, Vec<IpAddr>)>>,
    /// Lines a peer can cause at will (refused addresses, caps, failed connects), per kind.
    log_limit: SharedRateLimit<&'static str>,
    lifecycle: Lifecycle,
}

/// What S2S threads share with the gateway's lifecycle.
pub struct Lifecycle {
    /// Set when shutdown begins: outbound threads stop trying targets and close their stream.
    pub stopping: Arc<AtomicBool>,
    /// Where outbound stream threads are kept for `Gateway::wait` to join.
    pub threads: Arc<ThreadSet>,
}

impl std::fmt::Debug for S2sContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S2sContext")
            .field("hosted", &self.hosted)
            .finish_non_exhaustive()
    }
}

/// The stanzas waiting for one outbound stream (the channel to its thread) are bounded by this.
pub const OUTBOUND_QUEUE: usize = 256;
/// How often an outbound thread looks at its queue while blocked on the socket.
pub const OUTBOUND_POLL: Duration = Duration::from_millis(20);
/// How long the Edge's resolved addresses are trusted before they are looked up again.
const PROTECTED_FRESH: Duration = Duration::from_secs(300);
/// Lines of one kind a peer can cause, per minute; the next says how many were suppressed.
const LOG_LINES_PER_MINUTE: u32 = 10;

static NEXT_STREAM: AtomicU64 = AtomicU64::new(1 << 40);

impl S2sContext {
    pub fn new(
        live: Arc<ConfigCell>,
        secret: String,
        events: Sender<RouterEvent>,
        lifecycle: Lifecycle,
    ) -> Self {
        let config = live.config();
        let resolver = if config.dns.servers.is_empty() {
            Resolver::from_system().unwrap_or_else(|e| {
                log::warn!("xmpp: no usable /etc/resolv.conf ({e}); asking 127.0.0.1");
                Resolver::new(
                    vec![SocketAddr::from(([127, 0, 0, 1], 53))],
                    config.dns.timeout,
                    2,
                )
            })
        } else {
            Resolver::new(config.dns.servers.clone(), config.dns.timeout, 2)
        };
        let mut hosts = StaticHosts::new();
        for (name, addrs) in &config.hosts {
            if let Err(e) = hosts.insert(name, addrs) {
                log::warn!("[hosts] {name}: {e}");
            }
        }
        S2sContext {
            hosted: config.hosted_domains(),
            secret: DialbackSecret(secret),
            resolver,
            hosts,
            events,
            per_partner: Mutex::new(HashMap::new()),
            refused: SharedRateLimit::new(1, Duration::from_secs(3600), 10_000),
            refused_total: SharedRateLimit::new(LOG_LINES_PER_MINUTE, Duration::from_secs(60), 1),
            partner_quota_log: SharedRateLimit::new(2, Duration::from_secs(60), 1024),
            outbound: OutboundLimits::new(
                config.xmpp.max_outbound,
                config.xmpp.max_outbound_per_address,
            ),
            protected: Mutex::new(None),
            log_limit: SharedRateLimit::new(LOG_LINES_PER_MINUTE, Duration::from_secs(60), 64),
            live,
            lifecycle,
        }
    }

    /// The configuration in force now (a read of the cell: once per stream or decision).
    pub fn config(&self) -> Arc<Config> {
        self.live.config()
    }

    /// The XMPP leg's TLS in force now, for a new handshake.
    pub fn tls(&self) -> Option<Arc<XmppTls>> {
        self.live.current().xmpp_tls.clone()
    }

    /// Logs a line a peer can cause at will, at most [`LOG_LINES_PER_MINUTE`] per `kind`.
    fn log_limited(&self, level: log::Level, kind: &'static str, line: std::fmt::Arguments<'_>) {
        if let Some(suppressed) = self.log_limit.allow(&kind, Instant::now()) {
            log::log!(level, "{line}{}", Suppressed(suppressed));
        }
    }

    /// What addresses learned from a partner's DNS may be connected to: `[federation]
    /// private_addresses`, and never the Edge's addresses (`[sip] edge` through `[hosts]` or
    /// DNS, looked up here, in the calling connection thread, at most every few minutes) or
    /// our own listening ones.
    fn address_policy(&self) -> AddressPolicy {
        AddressPolicy {
            allow_private: self.config().federation.allow_private_addresses,
            protected: self.protected_addresses(),
        }
    }

    fn protected_addresses(&self) -> Vec<IpAddr> {
        let now = Instant::now();
        if let Ok(cached) = self.protected.lock() {
            if let Some((until, addrs)) = cached.as_ref() {
                if now < *until {
                    return addrs.clone();
                }
            }
        }
        let config = self.config();
        let mut addrs: Vec<IpAddr> = [config.xmpp.listen, config.sip.listen]
            .iter()
            .map(SocketAddr::ip)
            .filter(|ip| !ip.is_unspecified())
            .collect();
        let edge = &config.sip.edge.host;
        let fresh = match resolve_host(edge, &self.hosts, &self.resolver) {
            Ok(found) => {
                addrs.extend(found);
                PROTECTED_FRESH
            }
            Err(e) => {
                log::warn!("xmpp: the Edge's addresses are unknown ({e}); asked again in 30 s");
                Duration::from_secs(30)
            }
        };
        if let Ok(mut cached) = self.protected.lock() {
            *cached = Some((now + fresh, addrs.clone()));
        }
        addrs
    }

    /// Whether gateway shutdown has begun.
    fn stopping(&self) -> bool {
        self.lifecycle.stopping.load(Ordering::SeqCst)
    }

    /// Logs a policy refusal at warn level once an hour per domain (and a few a minute in
    /// all), otherwise at debug.
    fn log_refusal(&self, direction: &str, domain: &str, why: &str) {
        let now = Instant::now();
        let first = self
            .refused
            .allow(&domain.to_ascii_lowercase(), now)
            .is_some();
        let total = if first {
            self.refused_total.allow(&(), now)
        } else {
            None
        };
        let domain = escaped(domain);
        match total {
            Some(suppressed) => log::warn!(
                "xmpp {direction} {domain}: refused: {why} (further refusals of {domain} logged at debug for an hour){}",
                Suppressed(suppressed)
            ),
            None => log::debug!("xmpp {direction} {domain}: refused: {why}"),
        }
    }

    /// Counts an authenticated inbound stream from `domain`; `None` over `max_per_partner`.
    fn partner_slot(self: &Arc<Self>, domain: &str) -> Option<PartnerSlot> {
        let max = self.config().xmpp.max_per_partner;
        let mut map = self.per_partner.lock().ok()?;
        let n = map.entry(domain.to_owned()).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(PartnerSlot {
            context: Arc::clone(self),
            domain: domain.to_owned(),
        })
    }
}

/// One counted inbound stream of a partner; freed on drop.
struct PartnerSlot {
    context: Arc<S2sContext>,
    domain: String,
}

impl Drop for PartnerSlot {
    fn drop(&mut self) {
        if let Ok(mut map) = self.context.per_partner.lock() {
            if let Some(n) = map.get_mut(&self.domain) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    map.remove(&self.domain);
                }
            }
        }
    }
}

/// What local policy says about a peer domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Talk to it with this policy; `route` overrides DNS.
    Allow {
        policy: AuthPolicy,
        route: Option<(String, u16)>,
    },
    /// Refuse, with the stream error to send and a reason for the log. `unreachable`: a
    /// domain never connected to (an IP literal); a peer's dialback for it is answered, and
    /// stanzas to it bounce, exactly as when none of a domain's servers answers
    /// (`remote-server-not-found`), so a refused target looks like a closed or silent one.
    Refuse {
        condition: StreamErrorCondition,
        why: &'static str,
        unreachable: bool,
    },
}

/// Whether `domain` is an IP literal (`10.0.0.5`, `[::1]`) or looks like one to some
/// resolver (an all-digit last label: `127.1`, `2130706433`; no top-level domain is
/// all digits).
pub fn is_ip_literal(domain: &str) -> bool {
    let bare = domain
        .strip_prefix('[')
        .and_then(|d| d.strip_suffix(']'))
        .unwrap_or(domain);
    bare.parse::<IpAddr>().is_ok()
        || domain.contains(':')
        || domain
            .rsplit('.')
            .next()
            .is_some_and(|last| !last.is_empty() && last.bytes().all(|b| b.is_ascii_digit()))
}

/// Federation policy for `domain` (lowercase, no trailing dot): `[federation] block` first,
/// then a `[partner]` section (by name or alias), then IP literals (refused without a
/// partner section, in either mode: nothing a peer sends may name an address for xsgw to
/// connect to), then `[federation] mode`.
pub fn decide(config: &Config, domain: &str) -> Decision {
    let domain = domain.strip_suffix('.').unwrap_or(domain);
    if config
        .federation
        .block
        .iter()
        .any(|b| b.eq_ignore_ascii_case(domain))
    {
        return Decision::Refuse {
            condition: StreamErrorCondition::PolicyViolation,
            why: "listed in [federation] block",
            unreachable: false,
        };
    }
    if let Some(partner) = config.partner(domain) {
        return Decision::Allow {
            policy: config.policy_for(partner),
            route: partner.route.as_ref().map(|r| (r.host.clone(), r.port)),
        };
    }
    if is_ip_literal(domain) {
        return Decision::Refuse {
            condition: StreamErrorCondition::PolicyViolation,
            why: "an IP-literal domain without a [partner] section",
            unreachable: true,
        };
    }
    match config.federation.mode {
        FederationMode::Open => Decision::Allow {
            policy: config.xmpp.policy,
            route: None,
        },
        FederationMode::Allowlist => Decision::Refuse {
            condition: StreamErrorCondition::PolicyViolation,
            why: "no [partner] section and [federation] mode = allowlist",
            unreachable: false,
        },
    }
}

fn requirement_enabled(r: Requirement) -> bool {
    r != Requirement::Disabled
}

/// The router's S2S table: one outbound stream thread per (local, remote) domain pair.
pub struct XmppRoutes {
    context: Arc<S2sContext>,
    /// The router's own copy of the configuration in force, replaced by [`Self::reconfigure`]
    /// (policy decisions per stanza read this, not the shared cell).
    config: Arc<Config>,
    sink: Option<Sender<XmppNotice>>,
    streams: HashMap<(String, String), OutStream>,
}

struct OutStream {
    id: u64,
    queue: Sender<Outgoing>,
    /// Stanzas handed to its thread (`xsgw status`).
    sent: u64,
    /// When its thread was started, seconds since the epoch (`xsgw status`).
    since: u64,
}

impl XmppRoutes {
    pub fn new(context: Arc<S2sContext>, sink: Option<Sender<XmppNotice>>) -> Self {
        XmppRoutes {
            config: context.config(),
            context,
            sink,
            streams: HashMap::new(),
        }
    }

    /// Takes a reloaded configuration (already published in the cell) and lets go of the
    /// outbound streams to domains it refuses now: their threads see the new configuration
    /// too, close their stream and hand back every stanza still waiting, which is then
    /// refused here like any new one (tracked ones as [`Delivery::Failed`]). Returns the
    /// (local, remote) pairs let go of.
    pub fn reconfigure(&mut self, config: Arc<Config>) -> Vec<(String, String)> {
        self.context.outbound.set_caps(
            config.xmpp.max_outbound,
            config.xmpp.max_outbound_per_address,
        );
        self.config = config;
        let refused: Vec<(String, String)> = self
            .streams
            .keys()
            .filter(|(_, remote)| matches!(decide(&self.config, remote), Decision::Refuse { .. }))
            .cloned()
            .collect();
        for key in &refused {
            self.streams.remove(key);
        }
        refused
    }

    /// Handles one event in the router thread; never blocks. Returns what became of tracked
    /// stanzas, when this event decided it (each receipt is answered once).
    pub fn handle(&mut self, event: XmppEvent) -> Option<Delivery> {
        match event {
            XmppEvent::Inbound(stanza) => {
                // A test's sink takes the place of the translator.
                if self.sink.is_none() {
                    return Some(Delivery::Inbound(stanza));
                }
                if !self.notify(XmppNotice::Stanza(stanza.clone())) {
                    self.refuse_undeliverable(stanza, StanzaErrorCondition::ResourceConstraint);
                }
            }
            XmppEvent::Send(stanza) => return self.send(stanza, None),
            XmppEvent::SendTracked { stanza, receipt } => return self.send(stanza, Some(receipt)),
            XmppEvent::Bounce {
                stanza,
                condition,
                receipt,
            } => return self.bounce(stanza, receipt, condition),
            XmppEvent::Written { receipts } if receipts.is_empty() => {}
            XmppEvent::Written { receipts } => return Some(Delivery::Written(receipts)),
            XmppEvent::Authenticated {
                outbound,
                local,
                remote,
                method,
                tls,
                peer,
                ..
            } => {
                self.notify(XmppNotice::Authenticated {
                    outbound,
                    local,
                    remote,
                    method,
                    tls,
                    peer,
                });
            }
            XmppEvent::OutboundEnded {
                local,
                remote,
                stream,
            } => {
                let key = (local, remote);
                if self.streams.get(&key).is_some_and(|s| s.id == stream) {
                    // Dropping the sender lets the thread finish draining and exit.
                    self.streams.remove(&key);
                }
            }
        }
        None
    }

    /// Every outbound stream's thread: stanzas handed to it and still queued for it.
    pub fn outbound_view(&self) -> Vec<super::status::OutboundView> {
        self.streams
            .iter()
            .map(|((local, remote), s)| super::status::OutboundView {
                local: local.clone(),
                remote: remote.clone(),
                queued: s.queue.len() as u64,
                sent: s.sent,
                since: s.since,
            })
            .collect()
    }

    fn notify(&self, notice: XmppNotice) -> bool {
        match &self.sink {
            Some(sink) => sink.try_send(notice).is_ok(),
            None => false,
        }
    }

    /// An authenticated inbound stanza nobody can take: never dropped in silence, its sender
    /// gets an error stanza over our outbound stream to its domain (RFC 6120 §8.3).
    fn refuse_undeliverable(&mut self, inbound: InboundStanza, condition: StanzaErrorCondition) {
        let stanza = &inbound.stanza;
        let why = if condition == StanzaErrorCondition::ServiceUnavailable {
            "the gateway cannot deliver this yet: no translator is running"
        } else {
            "the gateway is too busy to take this now"
        };
        let reply = if answerable(stanza) {
            let error = StanzaError::new(condition)
                .with_text(why)
                .with_by(inbound.local.as_str());
            error_reply(stanza, &error)
        } else {
            None
        };
        log::info!(
            "xmpp inbound {}: <{}/> for {} not delivered ({why}); {}",
            inbound.remote,
            stanza.name,
            inbound.local,
            if reply.is_some() {
                "answered with an error"
            } else {
                "not answerable (an error or iq result), dropped"
            }
        );
        if let Some(reply) = reply {
            // Untracked: any failure bounces to the sink, never a Delivery.
            let _ = self.send(reply, None);
        }
    }

    /// An undeliverable stanza: tracked, handed back to the router as [`Delivery::Failed`];
    /// untracked, answered with an error stanza to its sender.
    fn bounce(
        &self,
        stanza: Element,
        receipt: Option<Receipt>,
        condition: StanzaErrorCondition,
    ) -> Option<Delivery> {
        log::info!(
            "xmpp: <{}/> from {} to {} bounced: {condition}{}",
            stanza.name,
            stanza.attr("from").unwrap_or("?"),
            stanza.attr("to").unwrap_or("?"),
            receipt.map_or(String::new(), |r| format!(" (receipt {r})"))
        );
        if let Some(receipt) = receipt {
            return Some(Delivery::Failed {
                receipt,
                stanza,
                condition,
            });
        }
        if let Some(reply) = error_reply(&stanza, &StanzaError::new(condition)) {
            self.notify(XmppNotice::Bounced(reply));
        }
        None
    }

    fn send(&mut self, stanza: Element, receipt: Option<Receipt>) -> Option<Delivery> {
        let domain_of = |attr: &str| {
            stanza
                .attr(attr)
                .and_then(|v| v.parse::<Jid>().ok())
                .map(|j| j.domain().to_ascii_lowercase())
        };
        let (Some(local), Some(remote)) = (domain_of("from"), domain_of("to")) else {
            return self.bounce(stanza, receipt, StanzaErrorCondition::JidMalformed);
        };
        if !self.context.hosted.contains(&local) || self.context.hosted.contains(&remote) {
            return self.bounce(stanza, receipt, StanzaErrorCondition::NotAllowed);
        }
        if let Decision::Refuse { why, .. } = decide(&self.config, &remote) {
            self.context.log_refusal("outbound", &remote, why);
            return self.bounce(stanza, receipt, StanzaErrorCondition::RemoteServerNotFound);
        }
        let key = (local, remote);
        let item = match self.streams.get_mut(&key) {
            Some(stream) => match stream.queue.try_send((stanza, receipt)) {
                Ok(()) => {
                    stream.sent += 1;
                    return None;
                }
                Err(TrySendError::Full((s, r))) => {
                    return self.bounce(s, r, StanzaErrorCondition::ResourceConstraint)
                }
                Err(TrySendError::Disconnected(item)) => {
                    self.streams.remove(&key);
                    item
                }
            },
            None => (stanza, receipt),
        };
        let Some(slot) = self.context.outbound.stream(OutboundUse::Stanzas) else {
            self.context.log_limited(
                log::Level::Warn,
                "max_outbound",
                format_args!(
                    "xmpp outbound {}: not started: [xmpp] max_outbound = {} streams are running",
                    escaped(&key.1),
                    self.config.xmpp.max_outbound
                ),
            );
            let (stanza, receipt) = item;
            return self.bounce(stanza, receipt, StanzaErrorCondition::ResourceConstraint);
        };
        let (tx, rx) = crossbeam_channel::bounded(OUTBOUND_QUEUE);
        let id = NEXT_STREAM.fetch_add(1, Ordering::Relaxed);
        let context = Arc::clone(&self.context);
        let (local, remote) = key.clone();
        let name = format!("xmpp-out-{remote}");
        match super::threads::spawn(name, super::threads::CONNECTION_STACK, move || {
            // Counted against max_outbound until the thread ends.
            let _slot = slot;
            outbound::run(&context, &local, &remote, id, rx)
        }) {
            Ok(handle) => {
                self.context.lifecycle.threads.add(handle);
                // Cannot fail: the channel is new and the thread holds the receiver.
                let sent = u64::from(tx.try_send(item).is_ok());
                self.streams.insert(
                    key,
                    OutStream {
                        id,
                        queue: tx,
                        sent,
                        since: super::status::epoch(),
                    },
                );
                None
            }
            Err(error) => {
                log::error!("xmpp outbound {}: cannot start a thread: {error}", key.1);
                let (stanza, receipt) = item;
                self.bounce(stanza, receipt, StanzaErrorCondition::ResourceConstraint)
            }
        }
    }
}

/// Whether an error stanza may answer `stanza` (RFC 6120 §8.3.1, §8.2.3): never an error
/// (`type='error'`, or anything carrying an `<error/>`), and of IQs only requests (`get`/`set`):
/// a `result` is not answered either.
fn answerable(stanza: &Element) -> bool {
    let kind = stanza.attr("type");
    if kind == Some("error") || stanza.elements().any(|e| e.name == "error") {
        return false;
    }
    match stanza.name.as_str() {
        "iq" => matches!(kind, Some("get") | Some("set")),
        "message" | "presence" => true,
        _ => false,
    }
}

/// A random stream id (XEP-0185 relies on it being unpredictable).
fn random_id() -> String {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    if ring::rand::SystemRandom::new().fill(&mut bytes).is_err() {
        // The system RNG failing is not survivable for dialback; a counter keeps ids unique.
        return format!("xsgw-{}", NEXT_STREAM.fetch_add(1, Ordering::Relaxed));
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A stream error in a stream of its own, for refusing before any session exists.
pub(super) fn stream_error(condition: &str, text: &str) -> Vec<u8> {
    format!(
        "<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>\
         <stream:error><{condition} xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>\
         <text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>{text}</text></stream:error></stream:stream>"
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const BASE: &str = "[gateway]
fqdn = gw.contoso.test
sip_domains = contoso.test
[xmpp]
tls = optional
[sip]
edge = sip.contoso.test:5061
edge_names = sip.contoso.test
[partner gmail.test]
aliases = googlemail.test
tls = required
sasl = disabled
route = 192.0.2.7:5270
";

    fn config(extra: &str) -> Config {
        let text = format!("{BASE}{extra}");
        crate::config::parse(&text, Path::new("test.ini"))
            .expect("parses")
            .0
    }

    #[test]
    fn only_requests_and_non_errors_are_answered_with_errors() {
        use crate::xmpp::element::NS_SERVER;
        let stanza = |name: &str, kind: Option<&str>| {
            Element::new(name, NS_SERVER)
                .with_attr("from", "a@gmail.test")
                .with_attr("to", "b@contoso.test")
                .with_opt_attr("type", kind)
        };
        for (name, kind, want) in [
            ("message", None, true),
            ("message", Some("chat"), true),
            ("message", Some("error"), false),
            ("presence", None, true),
            ("presence", Some("subscribe"), true),
            ("presence", Some("error"), false),
            ("iq", Some("get"), true),
            ("iq", Some("set"), true),
            ("iq", Some("result"), false),
            ("iq", Some("error"), false),
            ("iq", None, false),
        ] {
            assert_eq!(answerable(&stanza(name, kind)), want, "{name} {kind:?}");
        }
        let with_error = stanza("message", None).with_child(Element::new("error", NS_SERVER));
        assert!(!answerable(&with_error));
    }

    #[test]
    fn partner_policy_and_route_by_name_or_alias() {
        let c = config("");
        for domain in ["gmail.test", "GoogleMail.test.", "gmail.test."] {
            match decide(&c, domain) {
                Decision::Allow { policy, route } => {
                    assert_eq!(policy.tls, Requirement::Required, "{domain}");
                    assert_eq!(policy.sasl, Requirement::Disabled, "{domain}");
                    assert_eq!(policy.dialback, Requirement::Optional, "{domain}");
                    assert_eq!(route, Some(("192.0.2.7".to_owned(), 5270)), "{domain}");
                }
                other => panic!("{domain}: {other:?}"),
            }
        }
    }

    #[test]
    fn allowlist_open_and_block() {
        let allowlist = config("");
        assert!(matches!(
            decide(&allowlist, "jabber.test"),
            Decision::Refuse {
                condition: StreamErrorCondition::PolicyViolation,
                ..
            }
        ));
        let open = config("[federation]\nmode = open\nblock = spam.test\n");
        assert!(matches!(
            decide(&open, "jabber.test"),
            Decision::Allow { route: None, .. }
        ));
        assert!(matches!(
            decide(&open, "SPAM.test"),
            Decision::Refuse { .. }
        ));
        // The block list wins over a partner section.
        let blocked = config("[federation]\nmode = open\nblock = gmail.test\n");
        assert!(matches!(
            decide(&blocked, "gmail.test"),
            Decision::Refuse { .. }
        ));
    }

    #[test]
    fn ip_literal_domains_are_refused_unless_configured_as_partners() {
        for c in [
            config("[partner 192.0.2.99]\n"),
            config("[federation]\nmode = open\n[partner 192.0.2.99]\n"),
        ] {
            for domain in [
                "10.0.0.5",
                "10.0.0.5.",
                "127.0.0.1",
                "[::1]",
                "::1",
                "[::ffff:10.0.0.1]",
                "127.1",
                "2130706433",
                "0x7f.1",
            ] {
                assert!(
                    matches!(
                        decide(&c, domain),
                        Decision::Refuse {
                            condition: StreamErrorCondition::PolicyViolation,
                            unreachable: true,
                            ..
                        }
                    ),
                    "{domain}: {:?}",
                    decide(&c, domain)
                );
            }
            assert!(matches!(decide(&c, "192.0.2.99"), Decision::Allow { .. }));
        }
        // Digits are fine anywhere but the last label.
        let open = config("[federation]\nmode = open\n");
        assert!(matches!(decide(&open, "1und1.de"), Decision::Allow { .. }));
        assert!(matches!(
            decide(&open, "123.example"),
            Decision::Allow { .. }
        ));
    }

    #[test]
    fn over_max_outbound_a_stanza_needing_a_new_stream_fails_resource_constraint() {
        let (mut routes, notices) = routes("");
        // Every stream slot taken.
        let held: Vec<_> =
            std::iter::from_fn(|| routes.context.outbound.stream(OutboundUse::Stanzas)).collect();
        assert_eq!(held.len(), 500, "the default max_outbound");
        let (receipt, condition, _) = failed(routes.handle(XmppEvent::SendTracked {
            stanza: chat("u@contoso.test", "v@gmail.test"),
            receipt: 5,
        }));
        assert_eq!(
            (receipt, condition),
            (5, StanzaErrorCondition::ResourceConstraint)
        );
        assert!(routes.streams.is_empty(), "no thread started");
        assert!(routes
            .handle(XmppEvent::Send(chat("u@contoso.test", "v@gmail.test")))
            .is_none());
        match notices.try_recv() {
            Ok(XmppNotice::Bounced(reply)) => {
                let xml = reply.to_stream_xml();
                assert!(xml.contains("resource-constraint"), "{xml}");
            }
            other => panic!("{other:?}"),
        }
    }

    fn routes(extra: &str) -> (XmppRoutes, crossbeam_channel::Receiver<XmppNotice>) {
        let (events, _) = crossbeam_channel::unbounded();
        let lifecycle = Lifecycle {
            stopping: Arc::new(AtomicBool::new(false)),
            threads: Arc::new(ThreadSet::default()),
        };
        let context = S2sContext::new(
            Arc::new(ConfigCell::new(crate::gateway::live::Live::without_sip(
                config(extra),
                None,
            ))),
            "secret".into(),
            events,
            lifecycle,
        );
        let (sink, notices) = crossbeam_channel::unbounded();
        (XmppRoutes::new(Arc::new(context), Some(sink)), notices)
    }

    fn chat(from: &str, to: &str) -> Element {
        use crate::xmpp::element::NS_SERVER;
        Element::new("message", NS_SERVER)
            .with_attr("from", from)
            .with_attr("to", to)
            .with_child(Element::new("body", NS_SERVER).with_text("hi"))
    }

    fn failed(delivery: Option<Delivery>) -> (Receipt, StanzaErrorCondition, Element) {
        match delivery {
            Some(Delivery::Failed {
                receipt,
                stanza,
                condition,
            }) => (receipt, condition, stanza),
            other => panic!("not a failure: {other:?}"),
        }
    }

    #[test]
    fn tracked_refusals_come_back_as_failed_deliveries_not_error_stanzas() {
        let (mut routes, notices) = routes("");
        for (from, to, want) in [
            (
                "u@elsewhere.test",
                "v@gmail.test",
                StanzaErrorCondition::NotAllowed,
            ),
            (
                "u@contoso.test",
                "v@contoso.test",
                StanzaErrorCondition::NotAllowed,
            ),
            (
                "u@contoso.test",
                "v@jabber.test",
                StanzaErrorCondition::RemoteServerNotFound,
            ),
            (
                "no-at-all",
                "v@gmail.test",
                StanzaErrorCondition::NotAllowed,
            ),
        ] {
            let (receipt, condition, stanza) = failed(routes.handle(XmppEvent::SendTracked {
                stanza: chat(from, to),
                receipt: 17,
            }));
            assert_eq!((receipt, condition), (17, want), "{from} → {to}");
            assert_eq!(stanza.attr("to"), Some(to));
            assert!(
                notices.try_recv().is_err(),
                "no error stanza for a tracked one"
            );
            // Untracked, the same stanza is answered with an error stanza, as before.
            assert!(routes.handle(XmppEvent::Send(chat(from, to))).is_none());
            match notices.try_recv() {
                Ok(XmppNotice::Bounced(reply)) => assert_eq!(reply.attr("to"), Some(from)),
                other => panic!("{from} → {to}: {other:?}"),
            }
        }
    }

    #[test]
    fn bounces_and_written_receipts_become_deliveries() {
        let (mut routes, notices) = routes("");
        let (receipt, condition, _) = failed(routes.handle(XmppEvent::Bounce {
            stanza: chat("u@contoso.test", "v@gmail.test"),
            condition: StanzaErrorCondition::RemoteServerTimeout,
            receipt: Some(3),
        }));
        assert_eq!(
            (receipt, condition),
            (3, StanzaErrorCondition::RemoteServerTimeout)
        );
        assert!(notices.try_recv().is_err());
        assert!(routes
            .handle(XmppEvent::Bounce {
                stanza: chat("u@contoso.test", "v@gmail.test"),
                condition: StanzaErrorCondition::RemoteServerTimeout,
                receipt: None,
            })
            .is_none());
        assert!(matches!(notices.try_recv(), Ok(XmppNotice::Bounced(_))));
        match routes.handle(XmppEvent::Written {
            receipts: vec![4, 5],
        }) {
            Some(Delivery::Written(receipts)) => assert_eq!(receipts, vec![4, 5]),
            other => panic!("{other:?}"),
        }
        assert!(routes
            .handle(XmppEvent::Written { receipts: vec![] })
            .is_none());
    }

    #[test]
    fn a_full_stream_queue_fails_a_tracked_stanza_with_its_receipt() {
        let (mut routes, notices) = routes("");
        let (tx, rx) = crossbeam_channel::bounded(1);
        tx.try_send((chat("u@contoso.test", "v@gmail.test"), Some(1)))
            .unwrap();
        routes.streams.insert(
            ("contoso.test".into(), "gmail.test".into()),
            OutStream {
                id: 1,
                queue: tx,
                sent: 0,
                since: 0,
            },
        );
        let (receipt, condition, _) = failed(routes.handle(XmppEvent::SendTracked {
            stanza: chat("u@contoso.test", "v@gmail.test"),
            receipt: 2,
        }));
        assert_eq!(
            (receipt, condition),
            (2, StanzaErrorCondition::ResourceConstraint)
        );
        assert!(notices.try_recv().is_err());
        // With room, it is queued for the stream's thread with its receipt.
        rx.try_recv().unwrap();
        assert!(routes
            .handle(XmppEvent::SendTracked {
                stanza: chat("u@contoso.test", "v@gmail.test"),
                receipt: 3,
            })
            .is_none());
        assert_eq!(rx.try_recv().map(|(_, r)| r).ok(), Some(Some(3)));
    }

    #[test]
    fn stream_ids_are_random_hex() {
        let (a, b) = (random_id(), random_id());
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
