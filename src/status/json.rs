//! A small JSON writer (no crate: a handful of objects do not need one), shared by
//! `xsgw diagnose --json` and `xsgw status --json`, and the snapshot as one JSON object.

use std::fmt::Write as _;

use super::Snapshot;

/// A JSON string literal (RFC 8259 §7): quote, backslash and control characters escaped.
pub fn json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' || c == '\u{2028}' || c == '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Builds one object: `{"a":1,"b":"x"}`.
struct Object<'a> {
    out: &'a mut String,
    first: bool,
}

impl<'a> Object<'a> {
    fn new(out: &'a mut String) -> Self {
        out.push('{');
        Object { out, first: true }
    }

    fn key(&mut self, key: &str) -> &mut String {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        json_string(self.out, key);
        self.out.push(':');
        self.out
    }

    fn str(&mut self, key: &str, value: &str) -> &mut Self {
        json_string(self.key(key), value);
        self
    }

    fn num(&mut self, key: &str, value: impl std::fmt::Display) -> &mut Self {
        let _ = write!(self.key(key), "{value}");
        self
    }

    fn bool(&mut self, key: &str, value: bool) -> &mut Self {
        self.key(key).push_str(if value { "true" } else { "false" });
        self
    }

    /// An array of objects, each written by `item`.
    fn array<T>(&mut self, key: &str, items: &[T], item: impl Fn(&mut Object<'_>, &T)) {
        let out = self.key(key);
        out.push('[');
        for (i, t) in items.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let mut o = Object::new(out);
            item(&mut o, t);
            o.end();
        }
        out.push(']');
    }

    fn end(self) {
        self.out.push('}');
    }
}

/// The snapshot as one JSON object (and a newline): the same content as [`super::text`].
pub fn snapshot(s: &Snapshot) -> String {
    let mut out = String::new();
    let mut o = Object::new(&mut out);
    o.str("version", &s.version)
        .num("pid", s.pid)
        .num("started", s.started)
        .num("now", s.now)
        .num("uptime_seconds", s.uptime.as_secs())
        .str("config_file", &s.config_file)
        .num("config_loaded", s.config_loaded)
        .bool("edge_connected", s.edge_connected);
    o.array("edge", &s.edge, |o, e| {
        o.str("direction", e.direction)
            .str("peer", &e.peer)
            .str("tls", &e.tls)
            .str("certificate", &e.certificate)
            .num("since", e.since)
            .num("requests_in", e.requests_in)
            .num("requests_out", e.requests_out);
    });
    o.array("streams", &s.streams, |o, t| {
        o.str("partner", &t.partner)
            .str("local", &t.local)
            .str("direction", t.direction)
            .str("state", t.state)
            .str("auth", &t.auth)
            .bool("tls", t.tls)
            .str("peer", &t.peer)
            .num("since", t.since)
            .num("stanzas_in", t.stanzas_in)
            .num("stanzas_out", t.stanzas_out)
            .num("queue", t.queue);
    });
    o.array("edge_requests", &s.edge_requests, |o, (domain, at)| {
        o.str("partner", domain).num("last", at);
    });
    o.num("subscriptions", s.subscriptions)
        .num("sessions", s.sessions)
        .num("presence_cache_bytes", s.presence_cache_bytes);
    {
        let c = &s.counters;
        let out = o.key("counters");
        let mut k = Object::new(out);
        k.array("messages", &c.messages, |o, (d, r, n)| {
            o.str("direction", d).str("outcome", r).num("count", n);
        });
        k.num("typing", c.typing)
            .num("sessions_opened", c.sessions_opened)
            .num("quota_refusals", c.quota_refusals);
        k.array("stanzas", &c.stanzas, |o, (d, kind, n)| {
            o.str("direction", d).str("kind", kind).num("count", n);
        });
        k.array("sip_requests", &c.sip_requests, |o, (m, n)| {
            o.str("method", m).num("count", n);
        });
        k.num("edge_requests_in", c.edge_requests_in)
            .num("edge_requests_out", c.edge_requests_out)
            .num("dns_lookups", c.dns_lookups)
            .num("dns_failures", c.dns_failures);
        k.array("errors", &c.errors, |o, (kind, reason, n)| {
            o.str("kind", kind).str("reason", reason).num("count", n);
        });
        k.end();
    }
    o.array("latency", &s.latency, |o, (direction, h)| {
        o.str("direction", direction)
            .num("count", h.count)
            .num("sum_seconds", h.sum);
    });
    o.array("errors", &s.errors, |o, e| {
        o.num("at", e.at)
            .str("kind", e.kind)
            .str("reason", e.reason)
            .str("subject", &e.subject)
            .str("detail", &e.detail);
    });
    o.end();
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_json_requires() {
        let mut s = String::new();
        json_string(&mut s, "\u{1}\n\u{7f}\u{2028}\"\\");
        assert_eq!(s, "\"\\u0001\\n\\u007f\\u2028\\\"\\\\\"");
    }

    #[test]
    fn snapshot_is_one_line_with_every_part() {
        let j = snapshot(&super::super::tests::sample());
        assert_eq!(j.lines().count(), 1);
        assert!(j.starts_with("{\"version\":\"0.1.0\",\"pid\":42,"));
        assert!(j.contains("\"edge\":[{\"direction\":\"outbound\",\"peer\":\"10.0.0.5:5061\",\"tls\":\"TLSv1_3\",\"certificate\":\"edge.contoso.com\""));
        assert!(j.contains("\"partner\":\"gmail.test\\n\""));
        assert!(j.contains("\"auth\":\"dialback\",\"tls\":true"));
        assert!(j.contains(
            "\"messages\":[{\"direction\":\"sip_to_xmpp\",\"outcome\":\"delivered\",\"count\":7}]"
        ));
        assert!(j.contains("\"detail\":\"bad\\ncert\""));
        assert!(j.ends_with("}]}\n"));
        // Balanced: every object and array closed.
        assert_eq!(j.matches('{').count(), j.matches('}').count());
        assert_eq!(j.matches('[').count(), j.matches(']').count());
    }
}
