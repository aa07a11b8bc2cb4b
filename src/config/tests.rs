//! Stage-1 tests: every error path that needs no file system, and the sample file kept true
//! to the key table.

use super::*;

const MINIMAL: &str = "\
[gateway]
fqdn = gw.contoso.test
sip_domains = contoso.test, fabrikam.test

[sip]
edge = sip.contoso.test:5061

[partner gmail.test]
aliases = googlemail.test
";

fn parse_text(text: &str) -> Result<Config, Report> {
    match parse(text, Path::new("test.ini")) {
        Ok((config, _)) => Ok(config),
        Err(ConfigError::Invalid(report)) => Err(report),
        Err(other) => panic!("unexpected {other}"),
    }
}

fn errors_of(text: &str) -> Vec<String> {
    let report = parse_text(text).expect_err("configuration should be refused");
    report
        .lines()
        .into_iter()
        .filter(|l| l.contains(": error: "))
        .collect()
}

#[test]
fn minimal_configuration_takes_defaults() {
    let config = parse_text(MINIMAL).unwrap();
    assert_eq!(config.gateway.fqdn, "gw.contoso.test");
    assert_eq!(
        config.gateway.sip_domains,
        ["contoso.test", "fabrikam.test"]
    );
    assert_eq!(config.xmpp.listen, "0.0.0.0:5269".parse().unwrap());
    assert_eq!(config.xmpp.public_name, "gw.contoso.test");
    assert_eq!(config.xmpp.max_stanza, 256 * 1024);
    assert_eq!(config.xmpp.stream_timeout, Duration::from_secs(60));
    assert_eq!(config.xmpp.keepalive, Duration::from_secs(300));
    assert_eq!(config.xmpp.idle_timeout, Duration::from_secs(600));
    assert_eq!(config.xmpp.max_connections, 1000);
    assert_eq!(config.xmpp.max_per_partner, 20);
    assert_eq!(config.xmpp.max_outbound, 500);
    assert_eq!(config.xmpp.max_outbound_per_address, 64);
    assert!(!config.federation.allow_private_addresses);
    assert!(config.sip.edge_pin.is_empty(), "no pin by default");
    assert_eq!(config.xmpp.handshake_timeout, Duration::from_secs(30));
    assert_eq!(
        (
            config.xmpp.max_unauthenticated,
            config.xmpp.max_unauthenticated_per_network,
            config.xmpp.max_unauthenticated_per_address
        ),
        (200, 32, 8)
    );
    assert_eq!(config.sip.max_connections, 64);
    assert_eq!(config.sip.max_unauthenticated_per_address, 4);
    assert!(config.sip.allow_from.is_empty());
    assert!(!config.xmpp.log_bodies);
    assert_eq!(config.xmpp.ca, TrustAnchors::System);
    assert_eq!(config.sip.edge_names, ["sip.contoso.test"]);
    assert_eq!(config.sip.max_message, 64 * 1024);
    assert_eq!(config.federation.mode, FederationMode::Allowlist);
    assert_eq!(config.partners.len(), 1);
    assert_eq!(
        config.partner("googlemail.test").unwrap().domain,
        "gmail.test"
    );
    assert_eq!(
        config.partner("GoogleMail.TEST.").unwrap().domain,
        "gmail.test"
    );
    assert!(config.partner("example.test").is_none());
    assert_eq!(config.line("[sip] edge"), Some(6));
    assert_eq!(config.line("[partner gmail.test]"), Some(8));
}

#[test]
fn partner_policy_overrides_inherit_the_rest() {
    let text = format!("{MINIMAL}tls = required\n[xmpp]\ndialback = disabled\n");
    let config = parse_text(&text).unwrap();
    let policy = config.policy_for(&config.partners[0]);
    assert_eq!(policy.tls, Requirement::Required);
    assert_eq!(policy.sasl, Requirement::Optional);
    assert_eq!(policy.dialback, Requirement::Disabled);
}

#[test]
fn missing_required_keys_are_named() {
    let errors = errors_of("[gateway]\nstate_dir = /tmp\n");
    let text = errors.join("\n");
    assert!(text.contains("[gateway] fqdn: missing"), "{text}");
    assert!(text.contains("[gateway] sip_domains: missing"), "{text}");
    assert!(text.contains("[sip] edge: missing"), "{text}");
}

#[test]
fn unknown_section_and_key_get_suggestions() {
    let text =
        format!("{MINIMAL}[xmp]\nlisten = 1.2.3.4:5269\n[xmpp]\ndialbak = optional\nedge = x:1\n");
    let errors = errors_of(&text);
    let joined = errors.join("\n");
    assert!(
        joined.contains("test.ini:10: error: [xmp]: unknown section; did you mean [xmpp]?"),
        "{joined}"
    );
    assert!(
        joined.contains(
            "test.ini:13: error: [xmpp] dialbak: unknown key in [xmpp]; did you mean `dialback`?"
        ),
        "{joined}"
    );
    assert!(
        joined.contains(
            "test.ini:14: error: [xmpp] edge: unknown key in [xmpp]; this key belongs in [sip]"
        ),
        "{joined}"
    );
}

#[test]
fn every_bad_value_is_reported_at_once() {
    let text = "\
[gateway]
fqdn = not_a_host
sip_domains = contoso.test
[xmpp]
tls = requird
max_stanza = huge
stream_timeout = 0s
keepalive = soon
log_bodies = maybe
listen = 5269
[sip]
edge = sip.contoso.test
[federation]
mode = closed
[dns]
servers = 10.0.0.2, dns.example
[log]
level = loud
";
    let errors = errors_of(text);
    let joined = errors.join("\n");
    for expected in [
        "test.ini:2: error: [gateway] fqdn: `not_a_host` is not a valid DNS name",
        "test.ini:5: error: [xmpp] tls: `requird` is not a policy; expected required, optional or disabled",
        "test.ini:6: error: [xmpp] max_stanza: `huge` is not a size",
        "test.ini:7: error: [xmpp] stream_timeout: must be longer than zero",
        "test.ini:8: error: [xmpp] keepalive: `soon` is not a duration",
        "test.ini:9: error: [xmpp] log_bodies: `maybe` is not a boolean",
        "test.ini:10: error: [xmpp] listen: `5269` is not an address:port",
        "test.ini:12: error: [sip] edge: `sip.contoso.test` has no port",
        "test.ini:14: error: [federation] mode: `closed` is not a federation mode",
        "test.ini:16: error: [dns] servers: `dns.example` is not a DNS server address",
        "test.ini:18: error: [log] level: `loud` is not a log level",
    ] {
        assert!(joined.contains(expected), "missing `{expected}` in:\n{joined}");
    }
    assert_eq!(errors.len(), 11, "{joined}");
}

#[test]
fn repeated_sections_and_keys_are_errors() {
    let text =
        format!("{MINIMAL}[gateway]\nstate_dir = /tmp\n[sip]\nedge = a.test:1\nedge = b.test:1\n");
    let joined = errors_of(&text).join("\n");
    assert!(
        joined.contains("test.ini:10: error: [gateway]: section repeated (first at line 1)"),
        "{joined}"
    );
    assert!(
        joined.contains("test.ini:14: error: [sip] edge: key repeated (first at line 13)"),
        "{joined}"
    );
}

#[test]
fn partner_sections_are_checked() {
    let text = format!(
        "{MINIMAL}tls = sometimes\nroute = nowhere\n[partner]\n[partner bad_domain]\n[partner ok.test]\naliases = fine.test, -bad.test\nlimit = 3\n"
    );
    let joined = errors_of(&text).join("\n");
    assert!(
        joined
            .contains("test.ini:10: error: [partner gmail.test] tls: `sometimes` is not a policy"),
        "{joined}"
    );
    assert!(
        joined.contains("test.ini:11: error: [partner gmail.test] route: `nowhere` has no port"),
        "{joined}"
    );
    assert!(
        joined.contains("test.ini:12: error: [partner]: needs the domain"),
        "{joined}"
    );
    assert!(
        joined.contains(
            "test.ini:13: error: [partner bad_domain]: `bad_domain` is not a valid DNS name"
        ),
        "{joined}"
    );
    assert!(
        joined.contains(
            "test.ini:15: error: [partner ok.test] aliases: `-bad.test` is not a valid DNS name"
        ),
        "{joined}"
    );
    assert!(
        joined.contains("test.ini:16: error: [partner ok.test] limit: unknown key in [partner]"),
        "{joined}"
    );
}

#[test]
fn hosts_entries_are_checked() {
    let text = format!("{MINIMAL}[hosts]\nsip.contoso.test = 10.11.12.33, ::1\nbad name = 1.2.3.4\nedge.test = sip.contoso.test\n");
    let joined = errors_of(&text).join("\n");
    assert!(joined.contains("test.ini:12: error"), "{joined}");
    assert!(joined.contains("test.ini:13: error: [hosts] edge.test: `sip.contoso.test` is not an IPv4 or IPv6 address"), "{joined}");
    let ok = parse_text(&format!(
        "{MINIMAL}[hosts]\nSIP.contoso.test = 10.11.12.33, ::1\n"
    ))
    .unwrap();
    assert_eq!(ok.hosts["sip.contoso.test"].len(), 2);
}

#[test]
fn syntax_errors_carry_lines() {
    let joined = errors_of("fqdn = x\n[gateway\n").join("\n");
    assert!(
        joined.contains("test.ini:1: error: `fqdn` comes before any [section] header"),
        "{joined}"
    );
    assert!(
        joined.contains("test.ini:2: error: section header"),
        "{joined}"
    );
}

/// The annotated sample documents every key of the table with the same default, and
/// parses without an error.
#[test]
fn sample_file_documents_every_key_with_its_default() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("etc/xsgw.ini");
    let text = std::fs::read_to_string(&path).unwrap();
    parse(&text, &path).unwrap_or_else(|e| match e {
        ConfigError::Invalid(report) => panic!("etc/xsgw.ini does not parse:\n{report}"),
        other => panic!("{other}"),
    });
    let (sections, _) = ini::parse(&text);
    let lines: Vec<&str> = text.lines().collect();
    for def in keys::KEYS {
        let section = sections
            .iter()
            .find(|s| s.name == def.section)
            .unwrap_or_else(|| panic!("etc/xsgw.ini has no [{}] section", def.section));
        let entry = section
            .entries
            .iter()
            .find(|e| e.key == def.name)
            .unwrap_or_else(|| panic!("etc/xsgw.ini does not show [{}] {}", def.section, def.name));
        // The nearest comment block above the key documents it.
        let mut comment = String::new();
        let mut at = entry.line - 1;
        while at > 0 && !lines[at - 1].trim_start().starts_with(';') {
            at -= 1;
        }
        while at > 0 && lines[at - 1].trim_start().starts_with(';') {
            comment.insert_str(0, lines[at - 1]);
            at -= 1;
        }
        let expected = match def.default {
            None => "REQUIRED".to_string(),
            Some("") => "empty".to_string(),
            Some(default) => default.to_string(),
        };
        assert!(
            comment.contains(&expected),
            "[{}] {}: its comment in etc/xsgw.ini should state `{expected}`; found: {comment}",
            def.section,
            def.name
        );
    }
}

#[test]
fn sasl_and_dialback_both_required_is_refused() {
    let text = format!("{MINIMAL}sasl = required\ndialback = required\n");
    let config = parse_text(&text).unwrap();
    let mut report = Report::default();
    let _ = super::validate(&config, &mut report);
    let lines = report.lines().join("\n");
    assert!(
        lines.contains("[partner gmail.test]: sasl and dialback are both required"),
        "{lines}"
    );
    assert!(report.has_errors());
}

#[test]
fn private_addresses_and_outbound_caps() {
    let text = format!(
        "{MINIMAL}[xmpp]\nmax_outbound = 10\nmax_outbound_per_address = 11\n\
         [federation]\nmode = open\nprivate_addresses = Allow\n"
    );
    let config = parse_text(&text).unwrap();
    assert!(config.federation.allow_private_addresses);
    assert_eq!(
        (
            config.xmpp.max_outbound,
            config.xmpp.max_outbound_per_address
        ),
        (10, 11)
    );
    let mut report = Report::new(Path::new("test.ini"));
    let _ = super::validate(&config, &mut report);
    let lines = report.lines().join("\n");
    assert!(
        lines.contains("test.ini:12: warning: [xmpp] max_outbound_per_address: 11 is more than max_outbound = 10"),
        "{lines}"
    );
    assert!(
        lines.contains(
            "test.ini:15: warning: [federation] private_addresses: allow in open federation"
        ),
        "{lines}"
    );
    // In allowlist mode (a lab, the testbed) allow is no warning.
    let config = parse_text(&format!(
        "{MINIMAL}[federation]\nprivate_addresses = allow\n"
    ))
    .unwrap();
    let mut report = Report::new(Path::new("test.ini"));
    let _ = super::validate(&config, &mut report);
    assert!(
        !report.lines().join("\n").contains("private_addresses"),
        "{:?}",
        report.lines()
    );

    let joined = errors_of(&format!(
        "{MINIMAL}[xmpp]\nmax_outbound = 0\n[federation]\nprivate_addresses = sometimes\n"
    ))
    .join("\n");
    assert!(
        joined.contains("test.ini:11: error: [xmpp] max_outbound: must be at least 1"),
        "{joined}"
    );
    assert!(
        joined.contains("test.ini:13: error: [federation] private_addresses: `sometimes` is not allowed here; expected refuse or allow"),
        "{joined}"
    );
}

#[test]
fn edge_names_take_a_wildcard_as_is_and_edge_pin_a_list_of_pins() {
    let pin = "sha256/508u3rrEYbSxrsz/aGJ4rvToyNBlKU7pd1wsZxHCPAc=";
    let other = "sha256//AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    let text = MINIMAL.replace(
        "edge = sip.contoso.test:5061",
        &format!("edge = sip.contoso.test:5061\nedge_names = SIP.contoso.test, *.Contoso.test, 127.0.10.30\nedge_pin = {pin}, {other}"),
    );
    let config = parse_text(&text).unwrap();
    assert_eq!(
        config.sip.edge_names,
        ["sip.contoso.test", "*.contoso.test", "127.0.10.30"]
    );
    assert_eq!(
        config
            .sip
            .edge_pin
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        [pin, "sha256/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="]
    );
    for (names, pins, error) in [
        (
            "*.test",
            "",
            "a wildcard must stand for one label under a name of at least two labels",
        ),
        ("*.*.contoso.test", "", "is not a valid DNS name"),
        ("sip.*.test", "", "is not a valid DNS name"),
        (
            "sip.contoso.test",
            "sha256/AAAA",
            "holds 3 bytes; a SHA-256 pin holds 32",
        ),
        (
            "sip.contoso.test",
            "508u3rrEYbSxrsz/aGJ4rvToyNBlKU7pd1wsZxHCPAc=",
            "is not a pin: expected sha256/",
        ),
        (
            "sip.contoso.test",
            &format!("{pin},{pin}"),
            "is listed twice",
        ),
    ] {
        let text = MINIMAL.replace(
            "edge = sip.contoso.test:5061",
            &format!("edge = sip.contoso.test:5061\nedge_names = {names}\nedge_pin = {pins}"),
        );
        let errors = errors_of(&text).join("\n");
        assert!(errors.contains(error), "{names} / {pins}: {errors}");
        assert!(errors.contains("test.ini:"), "with its line: {errors}");
    }
}

#[test]
fn quotas_have_defaults_and_partner_overrides() {
    let text = format!(
        "{MINIMAL}subscriptions = 50000\nstanza_rate = 500\nstanza_burst = 5000\n\
         [quota]\npending_subscriptions = 300\npresence_cache = 2MiB\n"
    );
    let config = parse_text(&text).unwrap();
    let q = config.quota.per_partner;
    assert_eq!(
        (q.subscriptions, q.pending_subscriptions, q.im_sessions),
        (20000, 300, 5000)
    );
    assert_eq!((q.waiting_deliveries, q.presence_cache), (5000, 2 << 20));
    assert_eq!((q.stanza_rate, q.stanza_burst), (100, 1000));
    assert_eq!(config.quota.presence_cache_total, 128 << 20);
    // gmail.test (and its alias) override three keys and inherit the rest.
    let g = config.quota_for("googlemail.test");
    assert_eq!(
        (g.subscriptions, g.stanza_rate, g.stanza_burst),
        (50000, 500, 5000)
    );
    assert_eq!((g.pending_subscriptions, g.presence_cache), (300, 2 << 20));
    assert_eq!(config.quota_for("other.test"), q);
}

#[test]
fn bad_quota_values_are_reported() {
    let errors = errors_of(&format!(
        "{MINIMAL}im_sessions = 0\n[quota]\nstanza_rate = fast\npresence_cache = 9GiB\n"
    ));
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert!(errors
        .iter()
        .any(|e| e.contains("[partner gmail.test] im_sessions")));
    assert!(errors.iter().any(|e| e.contains("[quota] stanza_rate")));
    assert!(errors.iter().any(|e| e.contains("[quota] presence_cache")));
}
