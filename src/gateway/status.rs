//! What the router keeps for `xsgw status` and the metrics ([`Tracker`]), and what other
//! threads tell it for them ([`Observation`]).
//!
//! Owners of the numbers:
//! - The router (this [`Tracker`], a field of it): the connection registry's view of Edge
//!   connections and S2S streams, stanzas received by kind, requests from the Edge by method
//!   and partner domain, delivery latencies (it sees both ends of every transaction), error
//!   counts and the last few errors. The bridge keeps its message outcomes
//!   (`crate::bridge::Stats`); `s2s::XmppRoutes` the stanzas handed to each outbound stream
//!   and its queue.
//! - Each Edge connection's thread: its requests in and out, in a [`LinkCounters`] of plain
//!   relaxed atomics that only that thread writes (one writer, no ordering with anything
//!   else needed: a snapshot that reads a count one request late is still true). The router
//!   holds a clone of the `Arc` to read them for a snapshot and adds them to the totals when
//!   the connection ends.
//! - Failures seen by connection threads (TLS handshakes, authentication, DNS) reach the
//!   router as [`Observation`]s sent with `try_send`: a full router queue loses a count rather
//!   than slow a connection (a peer can cause failures at will).
//!
//! Everything here is bounded: the recent errors ([`crate::status::RECENT_ERRORS`]), the
//! per-partner "last request from the Edge" table ([`MAX_PARTNERS_SEEN`], oldest dropped),
//! the open-transaction start times ([`MAX_OPEN_TIMINGS`], beyond which latency is not
//! measured), and the error kinds and reasons (fixed sets of `&'static str`).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::Sender;

use super::router::{ConnId, RouterEvent};
use super::s2s::XmppEvent;
use crate::status::{
    Counters, EdgeConnection, ErrorRecord, Histogram, S2sStream, Snapshot, RECENT_ERRORS,
};
use crate::xmpp::session::AuthMethod;

/// Partner domains remembered for "last request from the Edge".
pub const MAX_PARTNERS_SEEN: usize = 1024;
/// Transactions whose start time is kept for the latency histogram, per direction.
pub const MAX_OPEN_TIMINGS: usize = 65_536;
/// Longest error detail kept.
const MAX_DETAIL: usize = 300;

/// Requests on one Edge connection. Written only by that connection's thread.
#[derive(Debug, Default)]
pub struct LinkCounters {
    pub requests_in: AtomicU64,
    pub requests_out: AtomicU64,
}

impl LinkCounters {
    pub fn count_in(&self) {
        self.requests_in.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count_out(&self) {
        self.requests_out.fetch_add(1, Ordering::Relaxed);
    }
}

/// What failed, for `xsgw_errors_total{kind}` and the last errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A TLS handshake on the SIP leg (5061, either direction).
    SipTls,
    /// A TLS handshake on an XMPP stream.
    XmppTls,
    /// An XMPP peer or stream not authenticated (dialback, SASL, policy).
    Auth,
    /// A DNS lookup that failed.
    Dns,
    /// The gateway's connection to the Edge could not be made or ended.
    Edge,
    /// A message or request not delivered (bounced, refused, failed transaction).
    Delivery,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::SipTls => "tls_sip",
            ErrorKind::XmppTls => "tls_xmpp",
            ErrorKind::Auth => "auth",
            ErrorKind::Dns => "dns",
            ErrorKind::Edge => "edge",
            ErrorKind::Delivery => "delivery",
        }
    }
}

/// What threads other than the router tell it for the status.
#[derive(Debug)]
#[non_exhaustive]
pub enum Observation {
    /// An Edge connection finished its TLS handshake (sent by its thread before its first
    /// request, after its `RouterEvent::Connected`).
    EdgeLink {
        peer: SocketAddr,
        outbound: bool,
        tls: String,
        certificate: String,
        counters: Arc<LinkCounters>,
    },
    /// Something failed. `reason` is one of a fixed set (a metric label); `detail` may quote
    /// a peer and is escaped wherever it is shown.
    Failure {
        kind: ErrorKind,
        reason: &'static str,
        subject: String,
        detail: String,
    },
    /// A DNS lookup for a partner or the Edge ended.
    DnsLookup { failed: bool },
}

/// Tells the router, never waiting (see the module documentation).
pub fn observe(events: &Sender<RouterEvent>, observation: Observation) {
    let _ = events.try_send(RouterEvent::Observed(observation));
}

/// A failure, told to the router.
pub fn failure(
    events: &Sender<RouterEvent>,
    kind: ErrorKind,
    reason: &'static str,
    subject: impl Into<String>,
    detail: impl Into<String>,
) {
    observe(
        events,
        Observation::Failure {
            kind,
            reason,
            subject: subject.into(),
            detail: detail.into(),
        },
    );
}

/// The reason label of a failed TLS handshake, from its description.
pub fn tls_reason(timed_out: bool, description: &str) -> &'static str {
    let d = description.to_ascii_lowercase();
    if timed_out || d.contains("timed out") || d.contains("within") {
        "timeout"
    } else if d.contains("certificate") || d.contains("pin") || d.contains("name") {
        "certificate"
    } else if d.contains("version") || d.contains("cipher") || d.contains("protocol") {
        "protocol"
    } else if d.contains("closed") || d.contains("eof") || d.contains("reset") {
        "closed"
    } else {
        "other"
    }
}

struct EdgeEntry {
    outbound: bool,
    peer: SocketAddr,
    tls: String,
    certificate: String,
    since: u64,
    counters: Arc<LinkCounters>,
}

struct StreamEntry {
    conn: Option<ConnId>,
    auth: &'static str,
    tls: bool,
    peer: SocketAddr,
    since: u64,
    stanzas_in: u64,
}

/// An outbound stream as the S2S table sees it.
#[derive(Debug, Clone)]
pub struct OutboundView {
    pub local: String,
    pub remote: String,
    pub queued: u64,
    pub sent: u64,
    /// When its thread started, seconds since the epoch.
    pub since: u64,
}

/// What the bridge contributes to a snapshot.
#[derive(Debug, Clone, Copy, Default)]
pub struct BridgeView {
    pub stats: crate::bridge::Stats,
    pub subscriptions: u64,
    pub sessions: u64,
    pub quota_refusals: u64,
    pub presence_cache_bytes: u64,
}

/// The router's status bookkeeping. See the module documentation.
pub struct Tracker {
    started: Instant,
    started_epoch: u64,
    config_file: String,
    config_loaded: u64,
    edge: HashMap<ConnId, EdgeEntry>,
    closed_requests_in: u64,
    closed_requests_out: u64,
    /// Keyed by (partner, our domain, outbound).
    streams: BTreeMap<(String, String, bool), StreamEntry>,
    edge_requests: HashMap<String, u64>,
    stanzas: BTreeMap<(&'static str, &'static str), u64>,
    sip_requests: BTreeMap<&'static str, u64>,
    dns_lookups: u64,
    dns_failures: u64,
    errors: BTreeMap<(&'static str, &'static str), u64>,
    recent: VecDeque<ErrorRecord>,
    sip_started: HashMap<u64, Instant>,
    edge_started: HashMap<u64, Instant>,
    latency_in: Histogram,
    latency_out: Histogram,
}

/// Seconds since the epoch.
pub fn epoch() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn stanza_kind(name: &str) -> &'static str {
    match name {
        "message" => "message",
        "presence" => "presence",
        "iq" => "iq",
        _ => "other",
    }
}

fn method_label(method: &str) -> &'static str {
    const KNOWN: [&str; 12] = [
        "MESSAGE",
        "INVITE",
        "ACK",
        "BYE",
        "CANCEL",
        "INFO",
        "OPTIONS",
        "SUBSCRIBE",
        "NOTIFY",
        "BENOTIFY",
        "SERVICE",
        "UPDATE",
    ];
    KNOWN.into_iter().find(|m| *m == method).unwrap_or("other")
}

impl Tracker {
    /// The connections carrying an authenticated inbound stream of a partner `refused` says
    /// no to (after a reload): the router wakes them so they close politely.
    pub fn inbound_connections_of(&self, refused: impl Fn(&str) -> bool) -> Vec<ConnId> {
        self.streams
            .iter()
            .filter(|((remote, _, outbound), _)| !outbound && refused(remote))
            .filter_map(|(_, entry)| entry.conn)
            .collect()
    }

    pub fn new(config_file: &std::path::Path) -> Self {
        let now = epoch();
        Tracker {
            started: Instant::now(),
            started_epoch: now,
            config_file: config_file.display().to_string(),
            config_loaded: now,
            edge: HashMap::new(),
            closed_requests_in: 0,
            closed_requests_out: 0,
            streams: BTreeMap::new(),
            edge_requests: HashMap::new(),
            stanzas: BTreeMap::new(),
            sip_requests: BTreeMap::new(),
            dns_lookups: 0,
            dns_failures: 0,
            errors: BTreeMap::new(),
            recent: VecDeque::new(),
            sip_started: HashMap::new(),
            edge_started: HashMap::new(),
            latency_in: Histogram::default(),
            latency_out: Histogram::default(),
        }
    }

    /// An Edge connection `id` (found by the router from its peer address) is up.
    pub fn edge_link(&mut self, id: ConnId, observation: Observation) {
        if let Observation::EdgeLink {
            peer,
            outbound,
            tls,
            certificate,
            counters,
        } = observation
        {
            self.edge.insert(
                id,
                EdgeEntry {
                    outbound,
                    peer,
                    tls,
                    certificate,
                    since: epoch(),
                    counters,
                },
            );
        }
    }

    /// Connection `id` ended.
    pub fn disconnected(&mut self, id: ConnId) {
        if let Some(e) = self.edge.remove(&id) {
            self.closed_requests_in += e.counters.requests_in.load(Ordering::Relaxed);
            self.closed_requests_out += e.counters.requests_out.load(Ordering::Relaxed);
        }
        self.streams.retain(|_, s| s.conn != Some(id));
    }

    /// What an XMPP event (on its way to the S2S table) changes in the status.
    pub fn xmpp_event(&mut self, event: &XmppEvent) {
        match event {
            XmppEvent::Authenticated {
                outbound,
                local,
                remote,
                method,
                tls,
                peer,
                conn,
            } => {
                let auth = match method {
                    AuthMethod::SaslExternal => "sasl-external",
                    AuthMethod::Dialback => "dialback",
                };
                self.streams.insert(
                    (remote.clone(), local.clone(), *outbound),
                    StreamEntry {
                        conn: *conn,
                        auth,
                        tls: *tls,
                        peer: *peer,
                        since: epoch(),
                        stanzas_in: 0,
                    },
                );
            }
            XmppEvent::Inbound(s) => self.stanza_in(&s.local, &s.remote, &s.stanza.name),
            XmppEvent::OutboundEnded { local, remote, .. } => {
                self.streams.remove(&(remote.clone(), local.clone(), true));
            }
            XmppEvent::Bounce {
                stanza, condition, ..
            } => self.failed(
                ErrorKind::Delivery,
                "xmpp_bounce",
                stanza.attr("to").unwrap_or_default(),
                format!("<{}/> bounced: {condition}", stanza.name),
            ),
            _ => {}
        }
    }

    /// A stanza arrived on an authenticated inbound stream.
    fn stanza_in(&mut self, local: &str, remote: &str, name: &str) {
        *self.stanzas.entry(("in", stanza_kind(name))).or_default() += 1;
        if let Some(s) = self
            .streams
            .get_mut(&(remote.to_owned(), local.to_owned(), false))
        {
            s.stanzas_in += 1;
        }
    }

    /// The translator sent a stanza.
    pub fn stanza_out(&mut self, name: &str) {
        *self.stanzas.entry(("out", stanza_kind(name))).or_default() += 1;
    }

    /// A request from the Edge for `partner` (its Request-URI's domain); `id` when it waits
    /// for an answer.
    pub fn sip_request(&mut self, method: &str, partner: &str, id: Option<u64>, now: Instant) {
        *self.sip_requests.entry(method_label(method)).or_default() += 1;
        let partner = partner.to_ascii_lowercase();
        if !self.edge_requests.contains_key(&partner)
            && self.edge_requests.len() >= MAX_PARTNERS_SEEN
        {
            if let Some(oldest) = self
                .edge_requests
                .iter()
                .min_by_key(|(_, at)| **at)
                .map(|(d, _)| d.clone())
            {
                self.edge_requests.remove(&oldest);
            }
        }
        self.edge_requests.insert(partner, epoch());
        if let Some(id) = id {
            if self.sip_started.len() < MAX_OPEN_TIMINGS {
                self.sip_started.insert(id, now);
            }
        }
    }

    /// The translator answered request `id` from the Edge.
    pub fn sip_answered(&mut self, id: u64, now: Instant) {
        if let Some(at) = self.sip_started.remove(&id) {
            self.latency_in.observe(now.saturating_duration_since(at));
        }
    }

    /// The translator sent a request to the Edge.
    pub fn edge_request_sent(&mut self, tag: u64, now: Instant) {
        if self.edge_started.len() < MAX_OPEN_TIMINGS {
            self.edge_started.insert(tag, now);
        }
    }

    /// A request sent to the Edge ended: `status` its final status, `None` when it failed.
    pub fn edge_request_ended(&mut self, tag: u64, status: Option<u16>, why: &str, now: Instant) {
        if let Some(at) = self.edge_started.remove(&tag) {
            self.latency_out.observe(now.saturating_duration_since(at));
        }
        match status {
            Some(s) if s < 300 => {}
            Some(s) => self.failed(
                ErrorKind::Delivery,
                "sip_error_response",
                "",
                format!("the Edge answered {s}"),
            ),
            None => self.failed(
                ErrorKind::Delivery,
                "sip_transaction_failed",
                "",
                why.to_owned(),
            ),
        }
    }

    /// Counts an error and keeps it among the last few.
    pub fn failed(&mut self, kind: ErrorKind, reason: &'static str, subject: &str, detail: String) {
        *self.errors.entry((kind.as_str(), reason)).or_default() += 1;
        if self.recent.len() >= RECENT_ERRORS {
            self.recent.pop_front();
        }
        let mut detail = detail;
        if detail.len() > MAX_DETAIL {
            let mut cut = MAX_DETAIL;
            while !detail.is_char_boundary(cut) {
                cut -= 1;
            }
            detail.truncate(cut);
            detail.push('…');
        }
        self.recent.push_back(ErrorRecord {
            at: epoch(),
            kind: kind.as_str(),
            reason,
            subject: subject.chars().take(MAX_DETAIL).collect(),
            detail,
        });
    }

    /// An observation other than `EdgeLink` (which needs the router's registry).
    pub fn observed(&mut self, observation: Observation) {
        match observation {
            Observation::Failure {
                kind,
                reason,
                subject,
                detail,
            } => self.failed(kind, reason, &subject, detail),
            Observation::DnsLookup { failed } => {
                self.dns_lookups += 1;
                if failed {
                    self.dns_failures += 1;
                }
            }
            Observation::EdgeLink { .. } => {}
        }
    }

    /// The snapshot, from what the tracker holds and what the bridge and S2S table say.
    pub fn snapshot(&self, bridge: Option<BridgeView>, outbound: &[OutboundView]) -> Snapshot {
        let now = epoch();
        let mut edge: Vec<EdgeConnection> = self
            .edge
            .values()
            .map(|e| EdgeConnection {
                direction: if e.outbound { "outbound" } else { "inbound" },
                peer: e.peer.to_string(),
                tls: e.tls.clone(),
                certificate: e.certificate.clone(),
                since: e.since,
                requests_in: e.counters.requests_in.load(Ordering::Relaxed),
                requests_out: e.counters.requests_out.load(Ordering::Relaxed),
            })
            .collect();
        edge.sort_by(|a, b| (a.direction, a.since).cmp(&(b.direction, b.since)));
        let mut streams: Vec<S2sStream> = self
            .streams
            .iter()
            .map(|((remote, local, out), s)| {
                let view = outbound
                    .iter()
                    .find(|v| *out && v.local == *local && v.remote == *remote);
                S2sStream {
                    partner: remote.clone(),
                    local: local.clone(),
                    direction: if *out { "outbound" } else { "inbound" },
                    state: "authenticated",
                    auth: s.auth.to_owned(),
                    tls: s.tls,
                    peer: s.peer.to_string(),
                    since: s.since,
                    stanzas_in: s.stanzas_in,
                    stanzas_out: view.map_or(0, |v| v.sent),
                    queue: view.map_or(0, |v| v.queued),
                }
            })
            .collect();
        for v in outbound {
            let key = (v.remote.clone(), v.local.clone(), true);
            if !self.streams.contains_key(&key) {
                streams.push(S2sStream {
                    partner: v.remote.clone(),
                    local: v.local.clone(),
                    direction: "outbound",
                    state: "connecting",
                    auth: String::new(),
                    tls: false,
                    peer: String::new(),
                    since: v.since,
                    stanzas_in: 0,
                    stanzas_out: v.sent,
                    queue: v.queued,
                });
            }
        }
        streams.sort_by(|a, b| {
            (&a.partner, &a.local, a.direction).cmp(&(&b.partner, &b.local, b.direction))
        });
        let mut edge_requests: Vec<(String, u64)> = self
            .edge_requests
            .iter()
            .map(|(d, at)| (d.clone(), *at))
            .collect();
        edge_requests.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let b = bridge.unwrap_or_default();
        let s = b.stats;
        let counters = Counters {
            messages: vec![
                ("sip_to_xmpp", "delivered", s.sip_to_xmpp_delivered),
                ("sip_to_xmpp", "refused", s.sip_to_xmpp_refused),
                ("xmpp_to_sip", "delivered", s.xmpp_to_sip_delivered),
                ("xmpp_to_sip", "bounced", s.xmpp_to_sip_bounced),
            ],
            typing: s.typing,
            sessions_opened: s.sessions_opened,
            quota_refusals: b.quota_refusals,
            stanzas: self
                .stanzas
                .iter()
                .map(|((d, k), n)| (*d, *k, *n))
                .collect(),
            sip_requests: self.sip_requests.iter().map(|(m, n)| (*m, *n)).collect(),
            edge_requests_in: self.closed_requests_in
                + edge.iter().map(|e| e.requests_in).sum::<u64>(),
            edge_requests_out: self.closed_requests_out
                + edge.iter().map(|e| e.requests_out).sum::<u64>(),
            dns_lookups: self.dns_lookups,
            dns_failures: self.dns_failures,
            errors: self.errors.iter().map(|((k, r), n)| (*k, *r, *n)).collect(),
        };
        Snapshot {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            pid: std::process::id(),
            started: self.started_epoch,
            now,
            uptime: self.started.elapsed(),
            config_file: self.config_file.clone(),
            config_loaded: self.config_loaded,
            edge_connected: self.edge.values().any(|e| e.outbound),
            edge,
            streams,
            edge_requests,
            subscriptions: b.subscriptions,
            sessions: b.sessions,
            presence_cache_bytes: b.presence_cache_bytes,
            counters,
            errors: self.recent.iter().cloned().collect(),
            latency: vec![
                ("sip_to_xmpp", self.latency_in.clone()),
                ("xmpp_to_sip", self.latency_out.clone()),
            ],
        }
    }
}

/// How long a status request waits for the router.
pub const ROUTER_ANSWER: Duration = Duration::from_secs(2);

/// Asks the router for a snapshot without ever blocking it: `None` when its queue is full or
/// it did not answer within [`ROUTER_ANSWER`].
pub fn ask(events: &Sender<RouterEvent>) -> Option<Snapshot> {
    let (reply, answer) = crossbeam_channel::bounded(1);
    events.try_send(RouterEvent::Status(reply)).ok()?;
    answer.recv_timeout(ROUTER_ANSWER).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_reload_finds_the_inbound_connections_of_refused_partners_only() {
        let mut t = Tracker::new(std::path::Path::new("/etc/xsgw/xsgw.ini"));
        for (conn, remote, outbound) in [
            (Some(1), "gmail.test", false),
            (Some(2), "gmail.test", true),
            (Some(3), "jabber.test", false),
        ] {
            t.xmpp_event(&XmppEvent::Authenticated {
                conn,
                outbound,
                local: "contoso.test".into(),
                remote: remote.into(),
                method: AuthMethod::Dialback,
                tls: true,
                peer: addr("127.0.0.1:4000"),
            });
        }
        // Outbound streams close through the S2S table, not by a wake-up.
        assert_eq!(t.inbound_connections_of(|d| d == "gmail.test"), vec![1]);
        assert!(t.inbound_connections_of(|_| false).is_empty());
    }

    #[test]
    fn streams_follow_their_connection_and_counters_survive_it() {
        let mut t = Tracker::new(std::path::Path::new("/etc/xsgw/xsgw.ini"));
        let counters = Arc::new(LinkCounters::default());
        t.edge_link(
            7,
            Observation::EdgeLink {
                peer: addr("10.0.0.5:5061"),
                outbound: true,
                tls: "TLSv1_3".into(),
                certificate: "edge.test".into(),
                counters: Arc::clone(&counters),
            },
        );
        counters.count_in();
        counters.count_out();
        counters.count_out();
        t.xmpp_event(&XmppEvent::Authenticated {
            conn: Some(9),
            outbound: false,
            local: "contoso.test".into(),
            remote: "gmail.test".into(),
            method: AuthMethod::Dialback,
            tls: true,
            peer: addr("127.0.0.1:4000"),
        });
        t.stanza_in("contoso.test", "gmail.test", "message");
        let view = [OutboundView {
            local: "contoso.test".into(),
            remote: "gmail.test".into(),
            queued: 2,
            sent: 5,
            since: 1,
        }];
        let s = t.snapshot(None, &view);
        assert!(s.edge_connected);
        assert_eq!(s.edge[0].requests_out, 2);
        assert_eq!(s.streams.len(), 2);
        assert_eq!(s.streams[0].direction, "inbound");
        assert_eq!(s.streams[0].auth, "dialback");
        assert_eq!(s.streams[0].stanzas_in, 1);
        assert_eq!(s.streams[1].state, "connecting");
        assert_eq!(s.streams[1].queue, 2);
        t.disconnected(9);
        t.disconnected(7);
        let s = t.snapshot(None, &[]);
        assert!(s.streams.is_empty() && s.edge.is_empty() && !s.edge_connected);
        assert_eq!(s.counters.edge_requests_in, 1);
        assert_eq!(s.counters.edge_requests_out, 2);
    }

    #[test]
    fn latency_errors_and_partners_are_bounded() {
        let mut t = Tracker::new(std::path::Path::new("x.ini"));
        let start = Instant::now();
        t.sip_request("MESSAGE", "Gmail.Test", Some(1), start);
        t.sip_answered(1, start + Duration::from_millis(300));
        t.sip_answered(1, start + Duration::from_millis(300));
        t.edge_request_sent(5, start);
        t.edge_request_ended(5, Some(404), "", start + Duration::from_secs(1));
        for i in 0..40 {
            t.failed(
                ErrorKind::SipTls,
                "certificate",
                "127.0.30.1",
                format!("n{i}"),
            );
        }
        let s = t.snapshot(None, &[]);
        assert_eq!(s.latency[0].1.count, 1);
        assert_eq!(s.latency[1].1.count, 1);
        assert_eq!(s.edge_requests[0].0, "gmail.test");
        assert_eq!(s.counters.sip_requests, vec![("MESSAGE", 1)]);
        assert_eq!(s.errors.len(), RECENT_ERRORS);
        assert_eq!(s.errors.last().map(|e| e.detail.as_str()), Some("n39"));
        assert!(s.counters.errors.contains(&("tls_sip", "certificate", 40)));
        assert!(s
            .counters
            .errors
            .contains(&("delivery", "sip_error_response", 1)));
        for i in 0..(MAX_PARTNERS_SEEN + 10) {
            t.sip_request("FOO", &format!("p{i}.test"), None, start);
        }
        assert_eq!(t.edge_requests.len(), MAX_PARTNERS_SEEN);
        assert!(t.sip_requests.contains_key("other"));
    }

    #[test]
    fn tls_reasons() {
        assert_eq!(tls_reason(true, ""), "timeout");
        assert_eq!(
            tls_reason(false, "invalid peer certificate: UnknownIssuer"),
            "certificate"
        );
        assert_eq!(
            tls_reason(false, "peer is incompatible: no common version"),
            "protocol"
        );
        assert_eq!(tls_reason(false, "weird"), "other");
    }
}
