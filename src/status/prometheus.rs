//! The snapshot in the Prometheus text exposition format (version 0.0.4): the same numbers as
//! `xsgw status`, named by Prometheus conventions (`xsgw_` prefix, `_total` counters, base
//! units: seconds), each family with `# HELP` and `# TYPE`.
//!
//! Label values a peer chose (partner domains) are escaped as the format requires
//! (backslash, quote, newline); every other label value is one of a fixed set.

use std::fmt::Write as _;

use super::Snapshot;

/// The Content-Type of the exposition.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A label value: `\`, `"` and newline escaped.
fn label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// A family of one unlabelled sample: its HELP and TYPE lines, then the sample.
fn scalar(o: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    family(o, name, kind, help);
    let _ = writeln!(o, "{name} {value}");
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Every metric, one family after the other.
pub fn render(s: &Snapshot) -> String {
    let mut out = String::new();
    let o = &mut out;
    family(
        o,
        "xsgw_build_info",
        "gauge",
        "The running xsgw's version (always 1).",
    );
    let _ = writeln!(o, "xsgw_build_info{{version=\"{}\"}} 1", label(&s.version));
    scalar(
        o,
        "xsgw_start_time_seconds",
        "gauge",
        "When the gateway started, seconds since the epoch.",
        s.started,
    );
    scalar(
        o,
        "xsgw_config_loaded_time_seconds",
        "gauge",
        "When the configuration file was loaded, seconds since the epoch.",
        s.config_loaded,
    );

    let c = &s.counters;
    family(
        o,
        "xsgw_messages_total",
        "counter",
        "Messages translated, by direction and outcome.",
    );
    for (direction, outcome, n) in &c.messages {
        let _ = writeln!(
            o,
            "xsgw_messages_total{{direction=\"{direction}\",outcome=\"{outcome}\"}} {n}"
        );
    }
    scalar(
        o,
        "xsgw_typing_notifications_total",
        "counter",
        "Typing notifications carried either way.",
        c.typing,
    );
    scalar(
        o,
        "xsgw_im_sessions_opened_total",
        "counter",
        "IM sessions opened by either side.",
        c.sessions_opened,
    );
    scalar(
        o,
        "xsgw_im_sessions",
        "gauge",
        "IM sessions held now.",
        s.sessions,
    );
    scalar(
        o,
        "xsgw_presence_subscriptions",
        "gauge",
        "Presence subscriptions held now.",
        s.subscriptions,
    );
    scalar(
        o,
        "xsgw_presence_cache_bytes",
        "gauge",
        "Bytes of partner presence cached now (all partners).",
        s.presence_cache_bytes,
    );
    scalar(
        o,
        "xsgw_quota_refusals_total",
        "counter",
        "Requests and stanzas refused because a partner was over one of its [quota] limits.",
        c.quota_refusals,
    );
    family(
        o,
        "xsgw_xmpp_stanzas_total",
        "counter",
        "XMPP stanzas received from partners (in) and sent to them by the translator (out), by kind.",
    );
    for (direction, kind, n) in &c.stanzas {
        let _ = writeln!(
            o,
            "xsgw_xmpp_stanzas_total{{direction=\"{direction}\",kind=\"{kind}\"}} {n}"
        );
    }
    family(
        o,
        "xsgw_sip_requests_received_total",
        "counter",
        "SIP requests from the Edge handed to the translator, by method.",
    );
    for (method, n) in &c.sip_requests {
        let _ = writeln!(
            o,
            "xsgw_sip_requests_received_total{{method=\"{method}\"}} {n}"
        );
    }
    family(
        o,
        "xsgw_edge_requests_total",
        "counter",
        "SIP requests on Edge connections (closed ones included), by direction.",
    );
    let _ = writeln!(
        o,
        "xsgw_edge_requests_total{{direction=\"in\"}} {}",
        c.edge_requests_in
    );
    let _ = writeln!(
        o,
        "xsgw_edge_requests_total{{direction=\"out\"}} {}",
        c.edge_requests_out
    );
    family(
        o,
        "xsgw_edge_connections",
        "gauge",
        "Connections with the Access Edge now, by direction.",
    );
    for direction in ["inbound", "outbound"] {
        let n = s.edge.iter().filter(|e| e.direction == direction).count();
        let _ = writeln!(o, "xsgw_edge_connections{{direction=\"{direction}\"}} {n}");
    }
    scalar(
        o,
        "xsgw_edge_up",
        "gauge",
        "1 when the gateway's own connection to the Edge is up.",
        u8::from(s.edge_connected),
    );

    family(
        o,
        "xsgw_s2s_streams",
        "gauge",
        "XMPP server-to-server streams now, by partner domain, direction and state.",
    );
    let mut keys: Vec<(String, &str, &str)> = s
        .streams
        .iter()
        .map(|t| (label(&t.partner), t.direction, t.state))
        .collect();
    keys.sort();
    let mut i = 0;
    while i < keys.len() {
        let n = keys[i..].iter().take_while(|k| **k == keys[i]).count();
        let (partner, direction, state) = &keys[i];
        let _ = writeln!(
            o,
            "xsgw_s2s_streams{{partner=\"{partner}\",direction=\"{direction}\",state=\"{state}\"}} {n}"
        );
        i += n;
    }
    family(
        o,
        "xsgw_s2s_queue_depth",
        "gauge",
        "Stanzas waiting for an outbound stream, by partner domain.",
    );
    let mut queues: Vec<(String, u64)> = Vec::new();
    for t in s.streams.iter().filter(|t| t.direction == "outbound") {
        let partner = label(&t.partner);
        match queues.iter_mut().find(|(p, _)| *p == partner) {
            Some((_, q)) => *q += t.queue,
            None => queues.push((partner, t.queue)),
        }
    }
    queues.sort();
    for (partner, q) in queues {
        let _ = writeln!(o, "xsgw_s2s_queue_depth{{partner=\"{partner}\"}} {q}");
    }
    scalar(
        o,
        "xsgw_dns_lookups_total",
        "counter",
        "DNS lookups for partner servers and the Edge.",
        c.dns_lookups,
    );
    scalar(
        o,
        "xsgw_dns_failures_total",
        "counter",
        "DNS lookups that found nothing or failed.",
        c.dns_failures,
    );
    family(
        o,
        "xsgw_tls_failures_total",
        "counter",
        "Failed TLS handshakes, by side (sip, xmpp) and reason.",
    );
    for (kind, reason, n) in &c.errors {
        if let Some(side) = kind.strip_prefix("tls_") {
            let _ = writeln!(
                o,
                "xsgw_tls_failures_total{{side=\"{side}\",reason=\"{reason}\"}} {n}"
            );
        }
    }
    family(
        o,
        "xsgw_auth_failures_total",
        "counter",
        "XMPP peers not authenticated, by reason.",
    );
    for (kind, reason, n) in &c.errors {
        if *kind == "auth" {
            let _ = writeln!(o, "xsgw_auth_failures_total{{reason=\"{reason}\"}} {n}");
        }
    }
    family(
        o,
        "xsgw_errors_total",
        "counter",
        "Every error counted by xsgw status, by kind and reason.",
    );
    for (kind, reason, n) in &c.errors {
        let _ = writeln!(
            o,
            "xsgw_errors_total{{kind=\"{kind}\",reason=\"{reason}\"}} {n}"
        );
    }
    family(
        o,
        "xsgw_delivery_latency_seconds",
        "histogram",
        "From a SIP request to its final response: sip_to_xmpp (from the Edge, answered once the partner accepted the stanza), xmpp_to_sip (sent to the Edge for a stanza).",
    );
    for (direction, h) in &s.latency {
        for (bound, n) in h.cumulative() {
            let _ = writeln!(
                o,
                "xsgw_delivery_latency_seconds_bucket{{direction=\"{direction}\",le=\"{bound}\"}} {n}"
            );
        }
        let _ = writeln!(
            o,
            "xsgw_delivery_latency_seconds_bucket{{direction=\"{direction}\",le=\"+Inf\"}} {}",
            h.count
        );
        let _ = writeln!(
            o,
            "xsgw_delivery_latency_seconds_sum{{direction=\"{direction}\"}} {}",
            h.sum
        );
        let _ = writeln!(
            o,
            "xsgw_delivery_latency_seconds_count{{direction=\"{direction}\"}} {}",
            h.count
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_have_help_and_type_and_peer_labels_are_escaped() {
        let m = render(&super::super::tests::sample());
        for line in m.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap_or_default();
            let base = name
                .trim_end_matches("_bucket")
                .trim_end_matches("_sum")
                .trim_end_matches("_count");
            assert!(
                m.contains(&format!("# TYPE {base} ")) || m.contains(&format!("# TYPE {name} ")),
                "{name} has a TYPE"
            );
        }
        assert!(
            m.contains("xsgw_messages_total{direction=\"sip_to_xmpp\",outcome=\"delivered\"} 7\n")
        );
        assert!(m.contains(
            "xsgw_s2s_streams{partner=\"gmail.test\\n\",direction=\"inbound\",state=\"authenticated\"} 1\n"
        ));
        assert!(m.contains("xsgw_tls_failures_total{side=\"sip\",reason=\"certificate\"} 1\n"));
        assert!(m.contains(
            "xsgw_delivery_latency_seconds_bucket{direction=\"sip_to_xmpp\",le=\"0.05\"} 1\n"
        ));
        assert!(m.contains(
            "xsgw_delivery_latency_seconds_bucket{direction=\"sip_to_xmpp\",le=\"+Inf\"} 2\n"
        ));
        assert!(m.contains("xsgw_edge_connections{direction=\"outbound\"} 1\n"));
    }
}
