//! The one table of configuration keys: section, name, default and what it is for.
//!
//! `etc/xsgw.ini` documents every key here with the same default (a test holds them together),
//! and `xsgw check` uses the table to refuse unknown keys with a suggestion.

/// One key of the INI file.
#[derive(Debug, Clone, Copy)]
pub struct KeyDef {
    pub section: &'static str,
    pub name: &'static str,
    /// The value used when the key is absent; `None` means the key must be given.
    pub default: Option<&'static str>,
    pub doc: &'static str,
}

const fn key(
    section: &'static str,
    name: &'static str,
    default: Option<&'static str>,
    doc: &'static str,
) -> KeyDef {
    KeyDef {
        section,
        name,
        default,
        doc,
    }
}

/// Sections whose keys are names chosen by the operator, not taken from the table.
pub const FREE_SECTIONS: &[&str] = &["hosts"];

/// Sections that take an argument: `[partner gmail.com]`.
pub const ARGUMENT_SECTIONS: &[&str] = &["partner"];

pub const KEYS: &[KeyDef] = &[
    key("gateway", "fqdn", None,
        "this host's real FQDN: the SIP certificate must name it in CN or SAN and the Edge must route the partner domains to it"),
    key("gateway", "sip_domains", None,
        "hosted SIP domains, comma-separated; XMPP partners reach their users as user@domain"),
    key("gateway", "state_dir", Some("/var/lib/xsgw"),
        "subscription state and the generated dialback secret; must be writable by the xsgw user"),
    key("xmpp", "listen", Some("0.0.0.0:5269"),
        "address for server-to-server streams from XMPP partners"),
    key("xmpp", "public_name", Some(""),
        "the name _xmpp-server._tcp.<sip domain> points at (default: [gateway] fqdn)"),
    key("xmpp", "cert", Some("/etc/xsgw/xmpp.pem"),
        "certificate chain offered on STARTTLS; should name every hosted domain"),
    key("xmpp", "key", Some("/etc/xsgw/xmpp.key"), "private key of [xmpp] cert"),
    key("xmpp", "ca", Some("system"),
        "trust for partner certificates: system (compiled-in Mozilla roots) or a PEM file"),
    key("xmpp", "tls", Some("optional"), "STARTTLS policy for partners: required | optional | disabled"),
    key("xmpp", "sasl", Some("optional"),
        "SASL EXTERNAL (certificate) authentication: required | optional | disabled"),
    key("xmpp", "dialback", Some("optional"),
        "Server Dialback: required (no SASL EXTERNAL then) | optional | disabled"),
    key("xmpp", "dialback_secret", Some("/var/lib/xsgw/dialback.secret"),
        "secret for dialback keys, generated (mode 0600) when missing; share it between instances"),
    key("xmpp", "max_stanza", Some("256KiB"),
        "largest stanza accepted; a larger one ends the stream with policy-violation"),
    key("xmpp", "max_connections", Some("1000"), "all server-to-server streams together"),
    key("xmpp", "max_per_partner", Some("20"), "streams with one partner domain"),
    key("xmpp", "max_outbound", Some("500"),
        "outbound streams at once (stanza streams and dialback verifications); over it stanzas bounce with resource-constraint"),
    key("xmpp", "max_outbound_per_address", Some("64"),
        "outbound streams at once to one partner server address"),
    key("xmpp", "max_unauthenticated", Some("200"),
        "inbound streams not authenticated yet, together; the rest of max_connections is kept for authenticated ones"),
    key("xmpp", "max_unauthenticated_per_network", Some("32"),
        "inbound streams not authenticated yet from one /24 (IPv4) or /64 (IPv6)"),
    key("xmpp", "max_unauthenticated_per_address", Some("8"),
        "inbound streams not authenticated yet from one address"),
    key("xmpp", "handshake_timeout", Some("30s"),
        "an inbound stream not authenticated this long after accept is closed (TCP, STARTTLS, dialback, SASL; input never extends it)"),
    key("xmpp", "stream_timeout", Some("60s"),
        "an outbound stream not authenticated by then is closed"),
    key("xmpp", "connect_timeout", Some("10s"), "time allowed for each outbound TCP connect"),
    key("xmpp", "keepalive", Some("300s"), "whitespace ping on idle streams"),
    key("xmpp", "idle_timeout", Some("600s"), "idle streams are closed politely after this"),
    key("xmpp", "log_bodies", Some("no"), "message bodies never reach the log unless yes"),
    key("sip", "listen", Some("0.0.0.0:5061"), "mutual-TLS listener for the Edge"),
    key("sip", "edge", None,
        "host:port of the Edge's FEDERATION listener (never its internal interface)"),
    key("sip", "allow_from", Some(""),
        "addresses or networks (CIDR) allowed to connect to [sip] listen besides the Edge's own addresses, comma-separated"),
    key("sip", "max_connections", Some("64"), "connections on [sip] listen together"),
    key("sip", "max_unauthenticated_per_address", Some("4"),
        "connections from one address still in the TLS handshake"),
    key("sip", "edge_names", Some(""),
        "names accepted in the Edge's certificate (subjectAltName), comma-separated; a wildcard only if listed as is (default: the host of edge)"),
    key("sip", "edge_pin", Some(""),
        "sha256/<base64> pins of the Edge's public key (SubjectPublicKeyInfo), comma-separated; empty: no pin"),
    key("sip", "cert", Some("/etc/xsgw/gateway.pem"),
        "certificate chain issued to [gateway] fqdn by the internal CA"),
    key("sip", "key", Some("/etc/xsgw/gateway.key"), "private key of [sip] cert"),
    key("sip", "ca", Some("/etc/xsgw/internal-ca.pem"),
        "the internal CA that issued the Edge's certificate (PEM)"),
    key("sip", "max_message", Some("64KiB"),
        "largest SIP message accepted; larger ones are refused (413), never truncated"),
    key("sip", "max_headers", Some("200"), "most header fields in one SIP message"),
    key("sip", "connect_timeout", Some("10s"),
        "time allowed for each connect to the Edge, and for an inbound TLS handshake from its accept"),
    key("sip", "im_mode", Some("auto"),
        "how messages from XMPP reach SIP users: page (MESSAGE), session (INVITE, then MESSAGEs in the dialog) or auto (page, session for domains that refuse page mode)"),
    key("sip", "delivery_timeout", Some("20s"),
        "a SIP request waits this long for the XMPP side to accept its stanza, then gets 408"),
    key("sip", "session_idle", Some("10min"),
        "an IM session without traffic for this long is ended with BYE"),
    key("federation", "mode", Some("allowlist"),
        "allowlist: only [partner] domains; open: any domain except those in block"),
    key("federation", "block", Some(""), "domains refused in open mode, comma-separated"),
    key("federation", "private_addresses", Some("refuse"),
        "refuse: never connect to loopback, private, link-local, unique-local, CGNAT, multicast or the Edge's addresses a partner's DNS names (a [partner] route may); allow: lab networks"),
    key("partner", "aliases", Some(""),
        "other domains handled exactly like this one (googlemail.com for gmail.com)"),
    key("partner", "tls", Some(""), "overrides [xmpp] tls for this partner"),
    key("partner", "sasl", Some(""), "overrides [xmpp] sasl for this partner"),
    key("partner", "dialback", Some(""), "overrides [xmpp] dialback for this partner"),
    key("partner", "route", Some(""), "host:port used instead of the partner's SRV records"),
    key("partner", "im_mode", Some(""), "overrides [sip] im_mode for messages from this partner"),
    key("partner", "subscriptions", Some(""), "overrides [quota] subscriptions for this partner"),
    key("partner", "pending_subscriptions", Some(""),
        "overrides [quota] pending_subscriptions for this partner"),
    key("partner", "im_sessions", Some(""), "overrides [quota] im_sessions for this partner"),
    key("partner", "waiting_deliveries", Some(""),
        "overrides [quota] waiting_deliveries for this partner"),
    key("partner", "presence_cache", Some(""), "overrides [quota] presence_cache for this partner"),
    key("partner", "stanza_rate", Some(""), "overrides [quota] stanza_rate for this partner"),
    key("partner", "stanza_burst", Some(""), "overrides [quota] stanza_burst for this partner"),
    key("quota", "subscriptions", Some("20000"),
        "presence subscriptions (both directions) with the users of one partner domain"),
    key("quota", "pending_subscriptions", Some("1000"),
        "of those, subscriptions not yet approved"),
    key("quota", "im_sessions", Some("5000"), "IM sessions with the users of one partner domain"),
    key("quota", "waiting_deliveries", Some("5000"),
        "SIP requests to one partner domain waiting for its server to accept their stanza"),
    key("quota", "presence_cache", Some("16MiB"),
        "presence of one partner domain's watched users kept for NOTIFY bodies"),
    key("quota", "presence_cache_total", Some("128MiB"),
        "presence kept for all partner domains together"),
    key("quota", "stanza_rate", Some("100"),
        "stanzas per second accepted from one partner domain (0: no limit)"),
    key("quota", "stanza_burst", Some("1000"), "stanzas one partner domain may send at once"),
    key("dns", "servers", Some(""),
        "DNS servers (IP or IP:port), comma-separated; default: those in /etc/resolv.conf"),
    key("dns", "timeout", Some("3s"), "time allowed for one DNS lookup"),
    key("log", "level", Some("info"),
        "error | warn | info | debug | trace; the RUST_LOG environment variable overrides"),
];

/// The sections that exist, in the order the sample file presents them.
pub fn sections() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = Vec::new();
    for def in KEYS {
        if !names.contains(&def.section) {
            names.push(def.section);
        }
    }
    names.extend_from_slice(FREE_SECTIONS);
    names
}

pub fn find(section: &str, name: &str) -> Option<&'static KeyDef> {
    KEYS.iter()
        .find(|def| def.section == section && def.name == name)
}

/// The closest known name, for "did you mean" hints; only close matches are offered.
pub fn suggest<'a>(candidates: impl Iterator<Item = &'a str>, typo: &str) -> Option<&'a str> {
    candidates
        .map(|c| (super::values::edit_distance(c, typo), c))
        .filter(|(distance, c)| {
            *distance <= 2.max(c.len() / 3) || typo.starts_with(c) || c.starts_with(typo)
        })
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, c)| c)
}
