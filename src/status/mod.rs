//! What the running gateway reports about itself: the [`Snapshot`] the router builds on
//! request (`xsgw status`, the metrics endpoint, `xsgw diagnose`'s `live`), and its three
//! renderings: text for people ([`text`]), JSON for scripts ([`json`]) and the Prometheus
//! text exposition format ([`prometheus`]). Pure: no socket, thread or clock here; times come
//! in the snapshot, so the formats are tested exactly.
//!
//! ```text
//!  xsgw status ──unix socket──▶ control thread ──RouterEvent::Status(reply)──▶ router
//!  GET /metrics ──TCP──────────▶ metrics thread ─┘   (builds a Snapshot from what it owns)
//!               ◀── text | JSON | Prometheus (rendered here) ◀──────────────────┘
//! ```
//!
//! Everything shown that a peer chose (certificate names, partner domains, error details) is
//! escaped for a terminal in the text form (`crate::logsafe::escaped`) and as JSON requires in
//! the JSON form; Prometheus label values are escaped as its format requires.

pub mod json;
pub mod prometheus;

use std::fmt::Write as _;
use std::time::Duration;

use crate::logsafe::escaped;

/// How many recent errors a snapshot carries.
pub const RECENT_ERRORS: usize = 16;

/// Upper bounds (seconds) of the delivery-latency histogram's buckets (`+Inf` is implied).
pub const LATENCY_BUCKETS: [f64; 10] = [0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// The gateway's state at one moment, as the router sees it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub version: String,
    pub pid: u32,
    /// When the gateway started, seconds since the epoch.
    pub started: u64,
    /// When the snapshot was taken, seconds since the epoch.
    pub now: u64,
    pub uptime: Duration,
    /// The configuration file and when it was loaded (seconds since the epoch).
    pub config_file: String,
    pub config_loaded: u64,
    /// Whether the gateway's own connection to the Edge is up.
    pub edge_connected: bool,
    pub edge: Vec<EdgeConnection>,
    pub streams: Vec<S2sStream>,
    /// Per partner domain: when the Edge last sent us a request for it (seconds since the
    /// epoch), newest first.
    pub edge_requests: Vec<(String, u64)>,
    pub subscriptions: u64,
    pub sessions: u64,
    /// Bytes of partner presence cached (all partners).
    pub presence_cache_bytes: u64,
    pub counters: Counters,
    /// The last few errors, oldest first.
    pub errors: Vec<ErrorRecord>,
    /// Delivery latency: `sip_to_xmpp` (SIP request to its final response) and `xmpp_to_sip`
    /// (request sent to the Edge for a stanza to its final response).
    pub latency: Vec<(&'static str, Histogram)>,
}

/// One connection with the Access Edge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeConnection {
    /// `inbound` (the Edge connected to us) or `outbound` (ours).
    pub direction: &'static str,
    pub peer: String,
    /// `TLSv1_3`, or empty before the handshake finished.
    pub tls: String,
    /// The names in the Edge's certificate.
    pub certificate: String,
    pub since: u64,
    pub requests_in: u64,
    pub requests_out: u64,
}

/// One S2S stream (or, `state = connecting`, an outbound stream being set up).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S2sStream {
    pub partner: String,
    /// Our domain.
    pub local: String,
    /// `inbound` or `outbound`.
    pub direction: &'static str,
    /// `authenticated` or `connecting`.
    pub state: &'static str,
    /// `dialback`, `sasl-external`, or empty while connecting.
    pub auth: String,
    pub tls: bool,
    pub peer: String,
    pub since: u64,
    pub stanzas_in: u64,
    pub stanzas_out: u64,
    /// Stanzas waiting for the stream's thread (outbound only).
    pub queue: u64,
}

/// Counters since start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// (direction, outcome, count): `sip_to_xmpp` delivered/refused, `xmpp_to_sip`
    /// delivered/bounced.
    pub messages: Vec<(&'static str, &'static str, u64)>,
    pub typing: u64,
    pub sessions_opened: u64,
    /// Requests and stanzas refused because a partner was over a `[quota]`.
    pub quota_refusals: u64,
    /// (direction `in`/`out`, stanza kind `message`/`presence`/`iq`, count).
    pub stanzas: Vec<(&'static str, &'static str, u64)>,
    /// Requests from the Edge by method (`MESSAGE`, `SUBSCRIBE`, ...; `other` beyond those).
    pub sip_requests: Vec<(&'static str, u64)>,
    /// Requests on Edge connections, closed ones included.
    pub edge_requests_in: u64,
    pub edge_requests_out: u64,
    pub dns_lookups: u64,
    pub dns_failures: u64,
    /// (kind, reason, count), e.g. (`tls_sip`, `certificate`, 3).
    pub errors: Vec<(&'static str, &'static str, u64)>,
}

/// One recent error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorRecord {
    pub at: u64,
    pub kind: &'static str,
    pub reason: &'static str,
    /// The peer address or domain concerned.
    pub subject: String,
    pub detail: String,
}

/// A cumulative histogram over [`LATENCY_BUCKETS`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    /// Observations at or below each bucket's bound (not cumulative here; see
    /// [`Histogram::cumulative`]).
    pub buckets: [u64; LATENCY_BUCKETS.len()],
    pub count: u64,
    pub sum: f64,
}

impl Histogram {
    pub fn observe(&mut self, value: Duration) {
        let seconds = value.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|b| seconds <= *b) {
            if let Some(slot) = self.buckets.get_mut(i) {
                *slot += 1;
            }
        }
        self.count += 1;
        self.sum += seconds;
    }

    /// (bound, observations at or below it), as Prometheus wants them.
    pub fn cumulative(&self) -> Vec<(f64, u64)> {
        let mut total = 0;
        LATENCY_BUCKETS
            .iter()
            .zip(self.buckets.iter())
            .map(|(bound, n)| {
                total += n;
                (*bound, total)
            })
            .collect()
    }
}

/// `2026-12-02 16:40:05 UTC` for seconds since the epoch.
pub fn utc(epoch: u64) -> String {
    let epoch = i64::try_from(epoch).unwrap_or(i64::MAX);
    let day = epoch.rem_euclid(86_400);
    format!(
        "{} {:02}:{:02}:{:02} UTC",
        crate::tls::x509::format_date(epoch),
        day / 3600,
        day % 3600 / 60,
        day % 60
    )
}

/// `3d 4h`, `5m 2s`: a duration as an operator reads it.
pub fn age(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
    }
}

fn ago(now: u64, then: u64) -> String {
    age(Duration::from_secs(now.saturating_sub(then)))
}

/// The text `xsgw status` prints.
pub fn text(s: &Snapshot) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "xsgw {} (pid {}), up {} since {}",
        s.version,
        s.pid,
        age(s.uptime),
        utc(s.started)
    );
    let _ = writeln!(
        out,
        "configuration: {} (loaded {})",
        escaped(&s.config_file),
        utc(s.config_loaded)
    );
    let _ = writeln!(
        out,
        "\nEdge connections: {} (ours {})",
        s.edge.len(),
        if s.edge_connected { "up" } else { "down" }
    );
    for e in &s.edge {
        let _ = writeln!(
            out,
            "  {:<8} {:<22} {:<8} cert {}  since {} ({} ago)  requests in {} out {}",
            e.direction,
            e.peer,
            if e.tls.is_empty() { "-" } else { &e.tls },
            escaped(if e.certificate.is_empty() {
                "-"
            } else {
                &e.certificate
            }),
            utc(e.since),
            ago(s.now, e.since),
            e.requests_in,
            e.requests_out
        );
    }
    let _ = writeln!(out, "\nS2S streams: {}", s.streams.len());
    for t in &s.streams {
        let _ = writeln!(
            out,
            "  {:<24} {:<8} {:<13} {:<13} TLS {:<3} {:<22} since {} ({} ago)  stanzas in {} out {}  queue {}  (for {})",
            escaped(&t.partner).to_string(),
            t.direction,
            t.state,
            if t.auth.is_empty() { "-" } else { &t.auth },
            if t.tls { "yes" } else { "no" },
            t.peer,
            utc(t.since),
            ago(s.now, t.since),
            t.stanzas_in,
            t.stanzas_out,
            t.queue,
            escaped(&t.local)
        );
    }
    if !s.edge_requests.is_empty() {
        let _ = writeln!(out, "\nLast request from the Edge, per partner domain:");
        for (domain, at) in &s.edge_requests {
            let _ = writeln!(
                out,
                "  {:<24} {} ({} ago)",
                escaped(domain).to_string(),
                utc(*at),
                ago(s.now, *at)
            );
        }
    }
    let _ = writeln!(
        out,
        "\nHeld: {} presence subscription(s), {} IM session(s), {} bytes of presence cached",
        s.subscriptions, s.sessions, s.presence_cache_bytes
    );
    let c = &s.counters;
    let _ = writeln!(out, "\nSince start:");
    for (direction, outcome, n) in &c.messages {
        let _ = writeln!(out, "  messages {direction:<12} {outcome:<10} {n}");
    }
    let _ = writeln!(
        out,
        "  typing notifications {}, IM sessions opened {}, refused over a quota {}",
        c.typing, c.sessions_opened, c.quota_refusals
    );
    let stanzas: Vec<String> = c
        .stanzas
        .iter()
        .map(|(d, k, n)| format!("{k} {d} {n}"))
        .collect();
    let _ = writeln!(out, "  XMPP stanzas: {}", none_or(&stanzas));
    let methods: Vec<String> = c
        .sip_requests
        .iter()
        .map(|(m, n)| format!("{m} {n}"))
        .collect();
    let _ = writeln!(out, "  SIP requests from the Edge: {}", none_or(&methods));
    let _ = writeln!(
        out,
        "  Edge requests in {} out {}; DNS lookups {} ({} failed)",
        c.edge_requests_in, c.edge_requests_out, c.dns_lookups, c.dns_failures
    );
    let errors: Vec<String> = c
        .errors
        .iter()
        .map(|(k, r, n)| format!("{k}/{r} {n}"))
        .collect();
    let _ = writeln!(out, "  errors: {}", none_or(&errors));
    for (direction, h) in &s.latency {
        if h.count > 0 {
            let _ = writeln!(
                out,
                "  delivery latency {direction}: {} measured, mean {:.3} s",
                h.count,
                h.sum / h.count as f64
            );
        }
    }
    let _ = writeln!(out, "\nLast errors: {}", s.errors.len());
    for e in &s.errors {
        let _ = writeln!(
            out,
            "  {}  {}/{}  {}: {}",
            utc(e.at),
            e.kind,
            e.reason,
            escaped(&e.subject),
            escaped(&e.detail)
        );
    }
    out
}

/// One line for `xsgw diagnose`'s `live` check: the Edge connections, the S2S streams and,
/// per partner domain, when the Edge last sent us a request (which proves the Edge's route
/// for that partner points at this gateway).
pub fn live(s: &Snapshot) -> String {
    let edge: Vec<String> = s
        .edge
        .iter()
        .map(|e| {
            format!(
                "{} {} ({}, {})",
                e.direction,
                e.peer,
                if e.tls.is_empty() { "-" } else { &e.tls },
                escaped(&e.certificate)
            )
        })
        .collect();
    let streams: Vec<String> = s
        .streams
        .iter()
        .map(|t| {
            format!(
                "{} {} {}{}",
                escaped(&t.partner),
                t.direction,
                if t.auth.is_empty() { t.state } else { &t.auth },
                if t.peer.is_empty() {
                    String::new()
                } else {
                    format!(" {}", t.peer)
                }
            )
        })
        .collect();
    let seen: Vec<String> = s
        .edge_requests
        .iter()
        .map(|(d, at)| format!("{} {} ago", escaped(d), ago(s.now, *at)))
        .collect();
    format!(
        "xsgw pid {}, up {}: Edge connections: {}; S2S streams: {}; last request from the Edge per partner domain: {}",
        s.pid,
        age(s.uptime),
        none_or(&edge),
        none_or(&streams),
        if seen.is_empty() {
            "none yet (the Edge has not sent us a request since start)".to_owned()
        } else {
            seen.join(", ")
        }
    )
}

fn none_or(items: &[String]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> Snapshot {
        let mut h = Histogram::default();
        h.observe(Duration::from_millis(30));
        h.observe(Duration::from_millis(700));
        Snapshot {
            version: "0.1.0".into(),
            pid: 42,
            started: 1_764_000_000,
            now: 1_764_000_090,
            uptime: Duration::from_secs(90),
            config_file: "/etc/xsgw/xsgw.ini".into(),
            config_loaded: 1_764_000_000,
            edge_connected: true,
            edge: vec![EdgeConnection {
                direction: "outbound",
                peer: "10.0.0.5:5061".into(),
                tls: "TLSv1_3".into(),
                certificate: "edge.contoso.com".into(),
                since: 1_764_000_010,
                requests_in: 3,
                requests_out: 4,
            }],
            streams: vec![S2sStream {
                partner: "gmail.test\n".into(),
                local: "contoso.com".into(),
                direction: "inbound",
                state: "authenticated",
                auth: "dialback".into(),
                tls: true,
                peer: "127.0.0.1:4000".into(),
                since: 1_764_000_020,
                stanzas_in: 5,
                stanzas_out: 0,
                queue: 0,
            }],
            edge_requests: vec![("gmail.test".into(), 1_764_000_080)],
            subscriptions: 2,
            sessions: 1,
            presence_cache_bytes: 512,
            counters: Counters {
                messages: vec![("sip_to_xmpp", "delivered", 7)],
                errors: vec![("tls_sip", "certificate", 1)],
                ..Counters::default()
            },
            errors: vec![ErrorRecord {
                at: 1_764_000_050,
                kind: "tls_sip",
                reason: "certificate",
                subject: "127.0.30.1".into(),
                detail: "bad\ncert".into(),
            }],
            latency: vec![("sip_to_xmpp", h)],
        }
    }

    #[test]
    fn text_shows_each_part_and_escapes_peer_strings() {
        let t = text(&sample());
        assert!(t.starts_with("xsgw 0.1.0 (pid 42), up 1m 30s since 2025-11-24 "));
        assert!(t.contains("outbound 10.0.0.5:5061"));
        assert!(t.contains("cert edge.contoso.com"));
        assert!(t.contains("requests in 3 out 4"));
        assert!(t.contains("gmail.test\\n"), "{t}");
        assert!(t.contains("dialback"));
        assert!(t.contains("messages sip_to_xmpp  delivered  7"));
        assert!(t.contains("tls_sip/certificate 1"));
        assert!(t.contains("127.0.30.1: bad\\ncert"));
        assert!(!t.contains("bad\ncert"));
    }

    #[test]
    fn histogram_is_cumulative() {
        let mut h = Histogram::default();
        h.observe(Duration::from_millis(5));
        h.observe(Duration::from_millis(200));
        h.observe(Duration::from_secs(60));
        let c = h.cumulative();
        assert_eq!(c[0], (0.01, 1));
        assert_eq!(c[3], (0.25, 2));
        assert_eq!(c.last(), Some(&(30.0, 2)));
        assert_eq!(h.count, 3);
    }

    #[test]
    fn times_read_well() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(86_400 + 3661), "1970-01-02 01:01:01 UTC");
        assert_eq!(age(Duration::from_secs(3 * 86_400 + 4 * 3600)), "3d 4h");
    }
}
