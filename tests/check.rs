//! `xsgw check` as an operator runs it: good and broken configurations, every error path of
//! the foundation issue, exit codes.

mod common;

use common::{run_xsgw, stdout, Pki};

fn check(path: &str) -> (i32, String) {
    let out = run_xsgw(&["check", "-c", path]);
    (out.status.code().unwrap_or(-1), stdout(&out))
}

fn good(pki: &Pki) -> String {
    pki.config(
        "127.0.0.1:15269",
        "127.0.0.1:15061",
        "sip.contoso.test:5061",
    )
}

#[test]
fn a_good_configuration_is_usable_and_summarised() {
    let pki = Pki::new("check-good");
    let path = pki.write_config("xsgw.ini", &good(&pki));
    let (code, out) = check(&path);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("xsgw.ini: usable"), "{out}");
    assert!(
        out.contains("gateway     gw.contoso.test for SIP domains contoso.test, fabrikam.test"),
        "{out}"
    );
    assert!(
        out.contains("gateway.pem names gw.contoso.test, valid until"),
        "{out}"
    );
    assert!(out.contains("partner     gmail.test (aliases googlemail.test): tls optional, sasl optional, dialback optional, found by SRV"), "{out}");
    assert!(
        out.contains("federation  allowlist, private addresses from DNS refused"),
        "{out}"
    );
    assert!(
        out.contains("outbound    at most 500 streams, 64 per address"),
        "{out}"
    );
    // This machine is not called gw.contoso.test: a warning, not an error.
    assert!(
        out.contains("warning: [gateway] fqdn: `gw.contoso.test` is not this machine's name"),
        "{out}"
    );
}

#[test]
fn the_sample_file_is_usable_given_its_files() {
    let pki = Pki::new("check-sample");
    pki.ca
        .issue("sample-gw", "xmpp.jds.local", &["xmpp.jds.local"]);
    pki.ca.issue(
        "sample-xmpp",
        "contoso.com",
        &["contoso.com", "xmpp.contoso.com"],
    );
    let sample =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/etc/xsgw.ini")).unwrap();
    let text = sample
        .replace("/etc/xsgw/gateway.pem", &pki.path("sample-gw.pem"))
        .replace("/etc/xsgw/gateway.key", &pki.path("sample-gw.key"))
        .replace("/etc/xsgw/xmpp.pem", &pki.path("sample-xmpp.pem"))
        .replace("/etc/xsgw/xmpp.key", &pki.path("sample-xmpp.key"))
        .replace("/etc/xsgw/internal-ca.pem", &pki.path("internal-ca.pem"))
        .replace("/var/lib/xsgw", &pki.path("state"));
    let path = pki.write_config("sample.ini", &text);
    let (code, out) = check(&path);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("usable (2 warnings)"), "{out}"); // fqdn is not this host; no state dir yet
    assert!(
        !out.contains("does not name contoso.com"),
        "unexpected: {out}"
    );
}

#[test]
fn sip_certificate_must_name_the_fqdn() {
    let pki = Pki::new("check-fqdn");
    let text = good(&pki).replace("fqdn = gw.contoso.test", "fqdn = other.contoso.test");
    let (code, out) = check(&pki.write_config("x.ini", &text));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(":19: error: [sip] cert: certificate"), "{out}");
    assert!(
        out.contains("names gw.contoso.test but not `other.contoso.test`"),
        "{out}"
    );
    assert!(out.contains("[gateway] fqdn must appear in its subjectAltName, because the Edge routes to and checks exactly that name"), "{out}");
    assert!(out.contains("not usable: 1 error"), "{out}");
}

#[test]
fn a_common_name_alone_is_usable_with_a_warning() {
    let pki = Pki::new("check-cn");
    pki.ca.issue("cn-only", "gw.contoso.test", &[]);
    let text = good(&pki).replace(&pki.path("gateway."), &pki.path("cn-only."));
    let (code, out) = check(&pki.write_config("x.ini", &text));
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("warning: [sip] cert: certificate")
            && out.contains("names `gw.contoso.test` only in its CN, without a subjectAltName"),
        "{out}"
    );
}

#[test]
fn edge_pin_is_checked_for_form_and_for_keys_no_edge_can_hold() {
    let pki = Pki::new("check-pin");
    let pin_of = |file: &str| {
        let der = xsgw::tls::load_certs(&pki.dir.path(file)).unwrap();
        xsgw::tls::names::SpkiPin::of_certificate(&der[0])
            .unwrap()
            .to_string()
    };
    let with_pin = |pins: &str| {
        good(&pki).replace(
            "edge_names = sip.contoso.test\n",
            &format!("edge_names = sip.contoso.test\nedge_pin = {pins}\n"),
        )
    };
    // The Edge's own key, and a second one for a rollover: usable, and said.
    let edge = pin_of("edge.pem");
    let next = pin_of("rogue.pem");
    let (code, out) = check(&pki.write_config("ok.ini", &with_pin(&format!("{edge}, {next}"))));
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(
            "(certificate must name sip.contoso.test in its subjectAltName, its key one of 2 pins)"
        ),
        "{out}"
    );
    // Malformed: refused with its line.
    let (code, out) = check(&pki.write_config("bad.ini", &with_pin("sha256/AAAA")));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("bad.ini:19: error: [sip] edge_pin:"), "{out}");
    assert!(
        out.contains("holds 3 bytes; a SHA-256 pin holds 32"),
        "{out}"
    );
    // The CA's key or the gateway's own: no Edge could ever match.
    for (file, what) in [
        ("internal-ca.pem", "is the key of a CA certificate in"),
        ("gateway.pem", "is the key of the gateway's own certificate"),
    ] {
        let (code, out) = check(&pki.write_config("x.ini", &with_pin(&pin_of(file))));
        assert_eq!(code, 1, "{file}: {out}");
        assert!(out.contains("error: [sip] edge_pin: sha256/"), "{out}");
        assert!(out.contains(what), "{file}: {out}");
    }
}

#[test]
fn key_must_match_certificate() {
    let pki = Pki::new("check-key");
    let text = good(&pki).replace(&pki.path("gateway.key"), &pki.path("edge.key"));
    let (code, out) = check(&pki.write_config("x.ini", &text));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("error: [sip] cert: the key"), "{out}");
    assert!(
        out.contains("edge.key does not belong to the certificate"),
        "{out}"
    );
}

#[test]
fn unreadable_and_non_pem_files_are_named() {
    let pki = Pki::new("check-files");
    std::fs::write(pki.dir.path("junk.pem"), "this is not PEM\n").unwrap();
    let text = good(&pki)
        .replace(&pki.path("gateway.pem"), &pki.path("missing.pem"))
        .replace(&pki.path("xmpp.key"), &pki.path("junk.pem"))
        .replace(
            &format!("ca = {}\ndialback", pki.path("internal-ca.pem")),
            &format!("ca = {}\ndialback", pki.path("nowhere.pem")),
        );
    let (code, out) = check(&pki.write_config("x.ini", &text));
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("error: [sip] cert: cannot read") && out.contains("missing.pem"),
        "{out}"
    );
    assert!(
        out.contains("error: [xmpp] key:") && out.contains("junk.pem holds no PEM private key"),
        "{out}"
    );
    assert!(
        out.contains("error: [xmpp] ca: cannot read") && out.contains("nowhere.pem"),
        "{out}"
    );
    assert!(out.contains("not usable: 3 errors"), "{out}");
}

#[test]
fn policies_that_cannot_authenticate_anybody_are_refused() {
    let pki = Pki::new("check-policy");
    let text = good(&pki).replace(
        "stream_timeout = 3s",
        "stream_timeout = 3s\ntls = disabled\nsasl = required",
    ) + "[partner closed.test]\nsasl = disabled\ndialback = disabled\n";
    let (code, out) = check(&pki.write_config("x.ini", &text));
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("error: [xmpp]: sasl = required needs TLS"),
        "{out}"
    );
    assert!(out.contains("error: [partner closed.test]: no partner could ever authenticate: sasl and dialback are both disabled"), "{out}");
}

#[test]
fn domains_must_be_unique() {
    let pki = Pki::new("check-dup");
    let text = good(&pki) + "[partner googlemail.test]\n[partner fabrikam.test]\n[partner other.test]\naliases = gmail.test\n";
    let (code, out) = check(&pki.write_config("x.ini", &text));
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("`googlemail.test` is already named by [partner gmail.test] aliases"),
        "{out}"
    );
    assert!(
        out.contains("`fabrikam.test` is already named by [gateway] sip_domains"),
        "{out}"
    );
    assert!(
        out.contains("`gmail.test` is already named by [partner gmail.test]"),
        "{out}"
    );
}

#[test]
fn every_problem_is_listed_at_once() {
    let pki = Pki::new("check-all");
    let text = good(&pki)
        .replace("fqdn = gw.contoso.test", "fqdn = gw_contoso")
        .replace("edge = sip.contoso.test:5061", "edge = sip.contoso.test")
        .replace("[log]", "[logging]")
        + "[partner -bad-.test]\n";
    let (code, out) = check(&pki.write_config("x.ini", &text));
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("[gateway] fqdn: `gw_contoso` is not a valid DNS name"),
        "{out}"
    );
    assert!(
        out.contains("[sip] edge: `sip.contoso.test` has no port"),
        "{out}"
    );
    assert!(
        out.contains("[logging]: unknown section; did you mean [log]?"),
        "{out}"
    );
    assert!(
        out.contains("[partner -bad-.test]: `-bad-.test` is not a valid DNS name"),
        "{out}"
    );
    assert!(out.contains("not usable: 4 errors"), "{out}");
}

#[test]
fn command_line_and_file_errors_have_sysadmin_exit_codes() {
    let out = run_xsgw(&["check", "-c", "/nonexistent/xsgw.ini"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("cannot read configuration /nonexistent/xsgw.ini"));
    let out = run_xsgw(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(common::stderr(&out).contains("unknown command `frobnicate`"));
    let out = run_xsgw(&["version"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).starts_with("xsgw "));
    let out = run_xsgw(&["help"]);
    assert!(stdout(&out).contains("xsgw check [-c FILE]"));
}

#[test]
fn certificate_problems_are_reported_alongside_typos() {
    let pki = Pki::new("check-both");
    let text = good(&pki)
        .replace("fqdn = gw.contoso.test", "fqdn = xsgw.contoso.test")
        .replace("stream_timeout = 3s", "stream_timout = 3s");
    let (code, out) = check(&pki.write_config("x.ini", &text));
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("[xmpp] stream_timout: unknown key in [xmpp]; did you mean `stream_timeout`?"),
        "{out}"
    );
    assert!(
        out.contains("names gw.contoso.test but not `xsgw.contoso.test`"),
        "{out}"
    );
    assert!(out.contains("not usable: 2 errors"), "{out}");
}
