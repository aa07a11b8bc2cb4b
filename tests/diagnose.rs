//! `xsgw diagnose` against the testbed's real peers (dnsmasq, Prosody, Kamailio as the Edge):
//! it passes on the testbed as set up (warnings only where a test host really differs from
//! production), and each classic deployment mistake, seeded one at a time, fails the check id
//! an operator would look at, with a fix line naming what to change. One testbed for all the
//! cases; every run is bounded (a silent partner and a public Edge address cost one short
//! deadline each), and the attackers' addresses are 127.0.20.x / 127.0.30.x.

mod common;

use std::time::{Duration, Instant};

use common::peers::Peer;
use common::testbed::Testbed;
use common::xsgw;

/// One line of the text output: status, id, what was found, and the fix line under it.
#[derive(Debug, Clone)]
struct Line {
    status: String,
    id: String,
    detail: String,
    fix: String,
}

struct Run {
    exit: i32,
    lines: Vec<Line>,
    text: String,
    took: Duration,
}

impl Run {
    /// The findings of check `id` (one per subject).
    fn of(&self, id: &str) -> Vec<&Line> {
        self.lines.iter().filter(|l| l.id == id).collect()
    }

    /// The one finding of `id` whose detail contains `about`, or panics with the output.
    fn find(&self, id: &str, about: &str) -> &Line {
        self.of(id)
            .into_iter()
            .find(|l| l.detail.contains(about))
            .unwrap_or_else(|| panic!("no {id} line about `{about}` in:\n{}", self.text))
    }

    /// Asserts that `id` failed for `about` with a fix containing each of `fix_names`.
    fn failed(&self, id: &str, about: &str, fix_names: &[&str]) -> &Line {
        let line = self.find(id, about);
        assert_eq!(line.status, "fail", "{id} should fail:\n{}", self.text);
        for name in fix_names {
            assert!(
                line.fix.contains(name),
                "the fix of {id} should name `{name}`:\n{}",
                self.text
            );
        }
        assert_eq!(self.exit, 1, "a failed check makes the exit status 1");
        line
    }
}

fn parse(text: &str) -> Vec<Line> {
    let mut lines: Vec<Line> = Vec::new();
    for raw in text.lines() {
        if let Some(fix) = raw.strip_prefix("      fix: ") {
            lines.last_mut().expect("a fix follows a finding").fix = fix.to_string();
            continue;
        }
        let mut words = raw.split_whitespace();
        let status = words.next().unwrap_or_default().to_string();
        let id = words.next().unwrap_or_default().to_string();
        assert!(
            ["ok", "warn", "fail"].contains(&status.as_str()),
            "unexpected line `{raw}` in:\n{text}"
        );
        lines.push(Line {
            status,
            id,
            detail: words.collect::<Vec<_>>().join(" "),
            fix: String::new(),
        });
    }
    lines
}

fn diagnose(testbed: &Testbed, name: &str, config: &str, args: &[&str]) -> Run {
    let path = testbed.dir.join(format!("{name}.ini"));
    std::fs::write(&path, config).unwrap();
    let started = Instant::now();
    let out = xsgw()
        .arg("diagnose")
        .arg("-c")
        .arg(&path)
        .args(args)
        .output()
        .unwrap();
    let took = started.elapsed();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("--- xsgw diagnose {name} {args:?} ({took:?}):\n{text}");
    Run {
        exit: out.status.code().unwrap_or(-1),
        lines: if args.contains(&"--json") {
            Vec::new()
        } else {
            parse(&text)
        },
        text,
        took,
    }
}

/// `config` with the line `key = ...` of `[section]` replaced by `replacement` (panics if
/// absent).
fn set(config: &str, section: &str, key: &str, replacement: &str) -> String {
    let prefix = format!("{key} = ");
    let header = format!("[{section}]");
    let mut current = String::new();
    let mut replaced = false;
    let mut out = String::new();
    for line in config.lines() {
        if line.starts_with('[') {
            current = line.trim().to_string();
        }
        if current == header && line.starts_with(&prefix) {
            out.push_str(replacement);
            replaced = true;
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    assert!(replaced, "no `{key}` in [{section}]");
    out
}

#[test]
fn diagnose_passes_on_the_testbed_and_names_each_seeded_mistake() {
    let testbed = Testbed::up("diagnose", &[]);
    let good = testbed.gateway_config("info");
    // As after the first `xsgw run` (which creates it): not a mistake to report.
    std::fs::create_dir_all(testbed.dir.join("xsgw-state")).unwrap();

    // Everything right: nothing fails; warnings only for what a test host cannot be.
    let run = diagnose(&testbed, "good", &good, &[]);
    assert_eq!(run.exit, 0, "diagnose passes on the testbed:\n{}", run.text);
    for line in &run.lines {
        assert!(
            line.status == "ok" || ["fqdn.hostname", "live"].contains(&line.id.as_str()),
            "only fqdn.hostname and live may warn on the testbed:\n{}",
            run.text
        );
    }
    for id in [
        "config",
        "cert.names",
        "cert.expiry",
        "listen",
        "dns.hosted-srv",
        "dns.partner-srv",
        "partner.reachable",
        "edge.resolve",
        "edge.reachable",
        "edge.mtls",
        "edge.allowed",
        "edge.federation-port",
        "fqdn.hostname",
        "live",
    ] {
        assert!(!run.of(id).is_empty(), "no {id} line:\n{}", run.text);
    }
    assert_eq!(run.of("dns.hosted-srv").len(), 2, "one per hosted domain");
    run.find("dns.hosted-srv", "xmpp.contoso.test:5269");
    run.find("dns.partner-srv", "5 0 xmpp-server.l.gmail.test:5269");
    run.find("partner.reachable", "127.0.10.5:5269 open");
    run.find("edge.mtls", "names sip.contoso.test");
    run.find("edge.allowed", "answered 200");
    assert!(
        run.took < Duration::from_secs(10),
        "a few seconds when peers answer"
    );

    // JSON: one object per check with the five keys, strings escaped.
    let json = diagnose(
        &testbed,
        "good",
        &good,
        &["--json", "--only", "config", "edge.resolve"],
    );
    assert_eq!(json.exit, 0);
    let objects: Vec<&str> = json.text.lines().collect();
    assert_eq!(objects.len(), 2, "{}", json.text);
    assert!(objects[0].starts_with("{\"id\":\"config\",\"status\":\"ok\",\"subject\":\""));
    assert!(objects[1].starts_with(
        "{\"id\":\"edge.resolve\",\"status\":\"ok\",\"subject\":\"sip.contoso.test\",\"detail\":\""
    ));
    assert!(objects
        .iter()
        .all(|o| o.contains(",\"fix\":\"") && o.ends_with("\"}")));

    // --deep: a stream to Prosody, authenticated with certificates (SASL EXTERNAL), closed.
    let run = diagnose(
        &testbed,
        "good",
        &good,
        &["--deep", "--only", "partner.stream"],
    );
    assert_eq!(run.exit, 0, "{}", run.text);
    run.find("partner.stream", "authenticated by SASL EXTERNAL");
    // With dialback only, Prosody must reach us back on 5269, where nothing listens here
    // (xsgw is not running): the round trip fails, and the fix says what must be open.
    let dialback = good.replace(
        "[partner gmail.test]\n",
        "[partner gmail.test]\nsasl = disabled\n",
    );
    assert_ne!(dialback, good);
    let run = diagnose(
        &testbed,
        "dialback",
        &dialback,
        &["--deep", "--only", "partner.stream"],
    );
    run.failed(
        "partner.stream",
        "gmail.test",
        &["_xmpp-server._tcp.contoso.test", "5269", "run xsgw"],
    );
    assert!(
        run.took < Duration::from_secs(12),
        "bounded: {:?}",
        run.took
    );

    // The hosted domains' SRV: one missing, one leading to somebody else's server.
    let dns = set(
        &good,
        "gateway",
        "sip_domains",
        "sip_domains = contoso.test, tailspin.test, googlemail.test",
    );
    let dns = set(&dns, "partner gmail.test", "aliases", "aliases =");
    let run = diagnose(&testbed, "srv", &dns, &["--only", "dns.hosted-srv"]);
    run.failed(
        "dns.hosted-srv",
        "_xmpp-server._tcp.tailspin.test",
        &["_xmpp-server._tcp.tailspin.test", "xmpp.contoso.test"],
    );
    run.failed(
        "dns.hosted-srv",
        "xmpp-server.l.gmail.test",
        &["_xmpp-server._tcp.googlemail.test", "xmpp.contoso.test"],
    );
    assert_eq!(run.find("dns.hosted-srv", "contoso.test →").status, "ok");

    // Partners: one whose 5269 refuses, one behind a firewall that drops silently.
    let silent = Peer::start_interactive(
        &testbed,
        &["silent-listener", "--addr", "127.0.30.1", "--timeout", "60"],
    );
    silent.wait_ready();
    let port = common::peers::json_int(
        &silent.wait_for("\"ready\"", Duration::from_secs(5)),
        "port",
    )
    .expect("the silent listener's port");
    let partners = format!(
        "{good}\n[partner refused.test]\nroute = 127.0.20.1:5269\n\n[partner silent.test]\nroute = 127.0.30.1:{port}\n"
    );
    let run = diagnose(&testbed, "partners", &partners, &["--only", "partner"]);
    let refused = run.failed(
        "partner.reachable",
        "127.0.20.1:5269 refused",
        &["127.0.20.1:5269"],
    );
    assert!(refused.fix.contains("route"), "{}", run.text);
    let dropped = run.failed(
        "partner.reachable",
        &format!("127.0.30.1:{port} silent"),
        &["firewall"],
    );
    assert!(dropped.detail.contains("no answer within"), "{}", run.text);
    assert_eq!(
        run.find("partner.reachable", "127.0.10.5:5269 open").status,
        "ok"
    );
    assert!(run.took < Duration::from_secs(8), "bounded: {:?}", run.took);
    drop(silent);

    // The Edge's internal interface (pool certificate, Digest) instead of its federation listener.
    let internal_port = testbed.get("SIP_EDGE_INTERNAL_TLS_PORT").to_string();
    let internal = set(
        &good,
        "sip",
        "edge",
        &format!("edge = sip.contoso.test:{internal_port}"),
    );
    let run = diagnose(&testbed, "internal", &internal, &["--only", "edge"]);
    let line = run.failed(
        "edge.federation-port",
        "internal interface",
        &["federation listener", "5061"],
    );
    assert!(
        line.detail.contains("Digest") && line.detail.contains("pool01.contoso.test"),
        "{}",
        run.text
    );

    // A wrong port: plain SIP (5060), and one where nothing listens.
    let plain = set(&good, "sip", "edge", "edge = sip.contoso.test:5060");
    let run = diagnose(&testbed, "plain", &plain, &["--only", "edge"]);
    run.failed(
        "edge.federation-port",
        "not a TLS federation listener",
        &["5061"],
    );
    let closed = set(&good, "sip", "edge", "edge = sip.contoso.test:5069");
    let run = diagnose(&testbed, "closed", &closed, &["--only", "edge"]);
    run.failed("edge.reachable", "refused", &["[sip] edge", "5061"]);

    // The Edge's allow list lacks our FQDN (its certificate names the FQDN, the Edge does not know it).
    let unknown = set(&good, "gateway", "fqdn", "fqdn = rogue.contoso.test");
    let unknown = set(
        &unknown,
        "sip",
        "cert",
        &format!("cert = {}", testbed.get("PKI_WRONGNAME_CERT")),
    );
    let unknown = set(
        &unknown,
        "sip",
        "key",
        &format!("key = {}", testbed.get("PKI_WRONGNAME_KEY")),
    );
    let run = diagnose(
        &testbed,
        "allow",
        &unknown,
        &["--only", "edge", "cert.names"],
    );
    assert_eq!(run.of("cert.names")[0].status, "ok", "{}", run.text);
    assert_eq!(run.find("edge.mtls", "mutual TLS completes").status, "ok");
    run.failed(
        "edge.allowed",
        "403",
        &["rogue.contoso.test", "allow list", "gmail.test"],
    );

    // Our certificate issued to another name.
    let misnamed = set(&unknown, "gateway", "fqdn", "fqdn = gw.contoso.test");
    let run = diagnose(&testbed, "misnamed", &misnamed, &["--only", "cert"]);
    run.failed(
        "cert.names",
        "rogue.contoso.test",
        &["gw.contoso.test", "[sip] cert"],
    );

    // The Edge's name resolving to a public address: classified, tried once, bounded.
    let public = good.replace(
        &format!("sip.contoso.test = {}", testbed.get("GATEWAY_EDGE_ADDRESS")),
        "sip.contoso.test = 203.0.113.7",
    );
    assert_ne!(public, good);
    let run = diagnose(&testbed, "public", &public, &["--only", "edge"]);
    run.failed(
        "edge.resolve",
        "203.0.113.7 (public)",
        &["[hosts]", "perimeter"],
    );
    let reachable = run.of("edge.reachable");
    assert!(
        reachable[0].status == "warn" && reachable[0].detail.contains("not probed"),
        "nothing is sent to a public address:\n{}",
        run.text
    );
    assert!(run.took < Duration::from_secs(8), "bounded: {:?}", run.took);

    // A wrong CA for the Edge.
    let wrong_ca = set(
        &good,
        "sip",
        "ca",
        &format!("ca = {}", testbed.get("PKI_OTHER_CA_CERT")),
    );
    let run = diagnose(&testbed, "wrong-ca", &wrong_ca, &["--only", "edge"]);
    run.failed("edge.mtls", "not issued by the CA", &["[sip] ca"]);
}

#[test]
fn an_unusable_file_fails_config_alone_and_a_wrong_id_is_a_usage_error() {
    let dir = common::TempDir::new("diagnose-cli");
    let path = dir.path("bad.ini");
    std::fs::write(
        &path,
        "[gateway]\nfqdn = gw.example.test\n[xmpp]\nlisten = nowhere\n",
    )
    .unwrap();
    let out = xsgw().args(["diagnose", "-c"]).arg(&path).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let lines = parse(&text);
    assert_eq!(lines.len(), 1, "nothing else can run: {text}");
    assert_eq!(
        (lines[0].status.as_str(), lines[0].id.as_str()),
        ("fail", "config")
    );
    assert!(lines[0].fix.contains("xsgw check -c"), "{text}");

    let out = xsgw()
        .args(["diagnose", "--only", "edge.tls"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown check `edge.tls`") && err.contains("edge.mtls"),
        "{err}"
    );
}
