//! xsgw in the deployment it is built for, with real peers from the testbed: Kamailio as the
//! Access Edge reaches xsgw over mutual TLS when a SIP user writes to gmail.test, and Prosody
//! (gmail.test) finds xsgw by SRV, opens a server-to-server stream to it, authenticates and
//! delivers a message, which reaches the SIP user through the Edge. The chat itself (both
//! directions, errors, sessions, typing) is checked in `gateway_im.rs`.

mod common;

use std::time::Duration;

use common::peers::{json_str, requests, run_peer, start_gateway, Peer};
use common::testbed::Testbed;

#[test]
fn real_peers_reach_the_gateway_on_both_legs() {
    let testbed = Testbed::up("deployment", &[]);
    let mut gw = start_gateway(&testbed, &testbed.gateway_config("debug"));

    // SIP leg: bob@contoso.test writes to alice@gmail.test; Kamailio routes gmail.test to
    // gw.contoso.test over TLS with the Edge certificate, which xsgw verifies.
    let result = run_peer(
        &testbed,
        &["sip-send", "--to", "sip:alice@gmail.test", "--timeout", "3"],
    )
    .join("\n");
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

    // XMPP leg: alice@gmail.test writes to carol@contoso.test; Prosody finds
    // _xmpp-server._tcp.contoso.test -> xmpp.contoso.test:5269 (127.0.10.100) through the
    // testbed DNS and opens a stream to xsgw, which translates the message into a SIP
    // MESSAGE that the Edge delivers to carol's SIP client.
    let carol = Peer::start(&testbed, &["sip-recv", "--count", "1", "--timeout", "15"]);
    carol.wait_ready();
    let result = run_peer(
        &testbed,
        &[
            "xmpp-send",
            "--sender",
            "alice@gmail.test",
            "--receiver",
            "bob@gmail.test",
            "--remote",
            "carol@contoso.test",
            "--body",
            "hello carol",
            "--wait",
            "2",
        ],
    )
    .join("\n");
    assert!(
        result.contains("\"login\": {\"alice\": true"),
        "alice logged in: {result}"
    );
    gw.wait_for("xmpp inbound connection");
    // Prosody authenticates with SASL EXTERNAL (the test CA's gmail.pem).
    let line = gw.wait_for("gmail.test authenticated toward contoso.test");
    assert!(line.contains("SaslExternal"), "{line}");
    let seen = carol.finish(Duration::from_secs(30));
    let message = requests(&seen, "MESSAGE")
        .into_iter()
        .find(|l| json_str(l, "content_type").as_deref() == Some("text/plain; charset=UTF-8"))
        .unwrap_or_else(|| panic!("carol's SIP client gets alice's message: {seen:?}"));
    assert_eq!(
        json_str(message, "body").as_deref(),
        Some("hello carol"),
        "{message}"
    );
    assert_eq!(
        json_str(message, "from").as_deref(),
        Some("sip:alice@gmail.test"),
        "carol sees it from alice: {message}"
    );
    assert_eq!(
        json_str(message, "request_uri").as_deref(),
        Some("sip:carol@contoso.test"),
        "{message}"
    );
    assert!(
        !result.contains("\"from\": \"carol@contoso.test\""),
        "alice's message was delivered, so nothing bounces back to her: {result}"
    );
    gw.signal("TERM");
    assert_eq!(gw.wait_exit(Duration::from_secs(10)), 0);
}
