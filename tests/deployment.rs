//! xsgw in the deployment it is built for, with real peers from the testbed: Kamailio as the
//! Access Edge reaches xsgw over mutual TLS when a SIP user writes to gmail.test, and Prosody
//! (gmail.test) finds xsgw by SRV, opens a server-to-server stream to it, authenticates and
//! delivers a stanza.

mod common;

use std::process::Command;
use std::time::Duration;

use common::process::Running;
use common::testbed::{script, Testbed, PYTHON};

fn start_gateway(testbed: &Testbed) -> Running {
    let config = testbed.dir.join("xsgw.ini");
    std::fs::write(&config, testbed.gateway_config("debug")).unwrap();
    let gw = Running::start(&config, None);
    gw.wait_for("started: XMPP on 127.0.10.100:5269");
    gw
}

fn testbed_json(testbed: &Testbed, args: &[&str]) -> String {
    let out = Command::new(PYTHON)
        .arg(script())
        .args(args)
        .arg("--dir")
        .arg(&testbed.dir)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn real_peers_reach_the_gateway_on_both_legs() {
    let testbed = Testbed::up("deployment", &[]);
    let mut gw = start_gateway(&testbed);

    // SIP leg: bob@contoso.test writes to alice@gmail.test; Kamailio routes gmail.test to
    // gw.contoso.test over TLS with the Edge certificate, which xsgw verifies.
    let result = testbed_json(
        &testbed,
        &["sip-send", "--to", "sip:alice@gmail.test", "--timeout", "3"],
    );
    assert!(result.contains("\"to\""), "sip-send ran: {result}");
    let line = gw.wait_for("mutual TLS established");
    assert!(
        line.contains("Edge certificate names sip.contoso.test"),
        "{line}"
    );
    assert!(
        line.contains("sip inbound 127.0.10.30:"),
        "the Edge connects from its own address: {line}"
    );

    // XMPP leg: alice@gmail.test writes to someone@contoso.test; Prosody finds
    // _xmpp-server._tcp.contoso.test -> xmpp.contoso.test:5269 (127.0.10.100) through the
    // testbed DNS and opens a stream to xsgw.
    let result = testbed_json(
        &testbed,
        &[
            "xmpp-send",
            "--sender",
            "alice@gmail.test",
            "--receiver",
            "bob@gmail.test",
            "--remote",
            "carol@contoso.test",
            "--wait",
            "2",
        ],
    );
    assert!(
        result.contains("\"login\": {\"alice\": true"),
        "alice logged in: {result}"
    );
    gw.wait_for("xmpp inbound connection");
    // Prosody authenticates (SASL EXTERNAL with the test CA's gmail.pem) and its stanza is
    // accepted by the router; no translator yet, so alice gets it back as an error (never
    // dropped in silence), over xsgw's own outbound stream to gmail.test.
    let line = gw.wait_for("gmail.test authenticated toward contoso.test");
    assert!(line.contains("SaslExternal"), "{line}");
    gw.wait_for("xmpp inbound gmail.test: <message/> for contoso.test not delivered");
    assert!(
        result.contains("\"from\": \"carol@contoso.test\"")
            && result.contains("service-unavailable"),
        "alice got her message back as an error: {result}"
    );
    gw.signal("TERM");
    assert_eq!(gw.wait_exit(Duration::from_secs(10)), 0);
}
