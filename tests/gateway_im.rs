//! Chat through xsgw between real peers: XMPP users on Prosody (gmail.test, alias
//! googlemail.test) and SIP users behind Kamailio (the Access Edge), played by the testbed's
//! peers (tests/testbed/README.md, "Peers for tests"). Each test brings one testbed up and
//! checks what the users on both sides would see: page-mode messages and their errors, typing
//! notifications, IM sessions opened from either side, refusals of what must not be relayed,
//! and that a SIP sender never gets 200 for a message the XMPP user did not get.

mod common;

use std::time::Duration;

use common::peers::{json_int, json_str, objects, run_peer, start_gateway, Peer};
use common::testbed::Testbed;

/// Every character XML, SIP or JSON could mangle: markup, a CDATA end, quotes, accents, CJK
/// and a character outside the BMP (a surrogate pair in UTF-16, four bytes in UTF-8).
const TRICKY: &str = "héllo < & \" ' ]]> 日本 😀";

/// An RFC 3994 isComposing document saying the user is typing.
const IS_COMPOSING_ACTIVE: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
<isComposing xmlns=\"urn:ietf:params:xml:ns:im-iscomposing\"><state>active</state>\
<contenttype>text/plain</contenttype><refresh>60</refresh></isComposing>";

const SECOND: Duration = Duration::from_secs(1);

/// What `sip-send` reported: the final status of each MESSAGE, in order (`None`: timeout).
fn finals(result: &[String]) -> Vec<Option<i64>> {
    let line = result.last().map(String::as_str).unwrap_or("");
    let Some(list) = line.split("\"finals\": [").nth(1) else {
        return Vec::new();
    };
    let list = list.split(']').next().unwrap_or("");
    list.split("{\"code\": ")
        .skip(1)
        .map(|entry| entry.split(',').next().and_then(|c| c.parse().ok()))
        .collect()
}

/// `sip-send` from a SIP user; its one JSON line.
fn sip_send(testbed: &Testbed, args: &[&str]) -> String {
    let mut all = vec!["sip-send", "--timeout", "15"];
    all.extend_from_slice(args);
    let lines = run_peer(testbed, &all);
    assert!(lines.len() == 1, "sip-send printed one line, not {lines:?}");
    lines[0].clone()
}

fn code(result: &str) -> Option<i64> {
    json_int(result, "code")
}

/// Stanzas an `xmpp-recv` printed, with the given `kind` (message, chatstate, error).
fn stanzas<'a>(lines: &'a [String], kind: &str) -> Vec<&'a String> {
    let kind = format!("\"kind\": \"{kind}\"");
    objects(lines, "message")
        .into_iter()
        .filter(|l| l.contains(&kind))
        .collect()
}

/// Requests a `sip-recv` printed, with the given method.
fn requests<'a>(lines: &'a [String], method: &str) -> Vec<&'a String> {
    let method = format!("\"method\": \"{method}\"");
    objects(lines, "request")
        .into_iter()
        .filter(|l| l.contains(&method))
        .collect()
}

fn body(line: &str) -> String {
    json_str(line, "body").unwrap_or_default()
}

#[test]
fn page_mode_messages_and_errors_reach_the_other_side() {
    let testbed = Testbed::up("im-page", &[]);
    let gw = start_gateway(&testbed, &testbed.gateway_config("debug"));

    // alice is offline: Prosody stores the message, so bob is told it was delivered.
    let result = sip_send(
        &testbed,
        &[
            "--to",
            "sip:alice@gmail.test",
            "--body",
            "while you were away",
        ],
    );
    assert_eq!(
        code(&result),
        Some(200),
        "bob's message to offline alice is accepted (Prosody keeps it for her): {result}"
    );

    // A user Prosody does not have: bob is told, with the XMPP reason.
    let result = sip_send(&testbed, &["--to", "sip:nobody@gmail.test", "--body", "hi"]);
    assert_eq!(
        code(&result),
        Some(403),
        "bob's message to an unknown XMPP user is refused: {result}"
    );
    let warning = json_str(&result, "warning").unwrap_or_default();
    assert!(
        warning.contains("service-unavailable"),
        "bob's client shows why (Warning with the XMPP condition): {result}"
    );

    // alice logs in: the stored message, then live ones with every tricky character, then
    // bob's typing notification (RFC 3994) as an XEP-0085 chat state.
    let alice = Peer::start(
        &testbed,
        &[
            "xmpp-recv",
            "--user",
            "alice@gmail.test",
            "--count",
            "3",
            "--timeout",
            "20",
        ],
    );
    alice.wait_ready();
    let result = sip_send(
        &testbed,
        &[
            "--to",
            "sip:alice@gmail.test",
            "--content-type",
            "application/im-iscomposing+xml",
            "--body",
            IS_COMPOSING_ACTIVE,
        ],
    );
    assert_eq!(
        code(&result),
        Some(200),
        "bob's typing notification is accepted: {result}"
    );
    alice.wait_for("\"state\": \"composing\"", 10 * SECOND);
    let result = sip_send(
        &testbed,
        &[
            "--to",
            "sip:alice@gmail.test",
            "--body",
            TRICKY,
            "--count",
            "2",
        ],
    );
    assert_eq!(
        finals(&[result.clone()]),
        vec![Some(200), Some(200)],
        "bob's two messages to online alice are answered 200 each: {result}"
    );
    let seen = alice.finish(30 * SECOND);
    let messages = stanzas(&seen, "message");
    let bodies: Vec<String> = messages.iter().map(|l| body(l)).collect();
    assert!(
        bodies.iter().any(|b| b == "while you were away"),
        "alice gets the message bob sent while she was offline (it was answered 200): {seen:?}"
    );
    assert_eq!(
        bodies.iter().filter(|b| *b == TRICKY).count(),
        2,
        "alice gets both of bob's messages, every character intact (both were answered 200): {seen:?}"
    );
    assert!(
        messages
            .iter()
            .all(|l| json_str(l, "from").as_deref() == Some("bob@contoso.test")),
        "alice sees the messages from bob@contoso.test: {seen:?}"
    );
    let typing = stanzas(&seen, "chatstate");
    assert!(
        typing
            .iter()
            .any(|l| json_str(l, "state").as_deref() == Some("composing")
                && json_str(l, "from").as_deref() == Some("bob@contoso.test")),
        "alice sees bob typing: {seen:?}"
    );

    // XMPP → SIP: alice writes to bob (answers 200), to nobody (404) and busy (486); before
    // her message she is typing.
    let users = Peer::start(
        &testbed,
        &[
            "sip-recv",
            "--count",
            "6",
            "--timeout",
            "20",
            "--status-for",
            "nobody=404",
            "--status-for",
            "busy=486",
        ],
    );
    users.wait_ready();
    let alice = run_peer(
        &testbed,
        &[
            "xmpp-recv",
            "--user",
            "alice@gmail.test",
            "--send",
            "bob@contoso.test",
            "--send",
            "nobody@contoso.test",
            "--send",
            "busy@contoso.test",
            "--send-state",
            "composing",
            "--body",
            TRICKY,
            "--count",
            "2",
            "--timeout",
            "20",
        ],
    );
    let seen = users.finish(30 * SECOND);
    let messages = requests(&seen, "MESSAGE");
    let to_bob: Vec<&&String> = messages
        .iter()
        .filter(|l| json_str(l, "request_uri").as_deref() == Some("sip:bob@contoso.test"))
        .collect();
    let text = to_bob
        .iter()
        .find(|l| json_str(l, "content_type").as_deref() == Some("text/plain; charset=UTF-8"));
    let text = text.unwrap_or_else(|| {
        panic!("bob gets alice's message as text/plain; charset=UTF-8: {seen:?}")
    });
    assert_eq!(body(text), TRICKY, "bob gets alice's text intact: {text}");
    assert_eq!(
        json_str(text, "from").as_deref(),
        Some("sip:alice@gmail.test"),
        "bob sees the message from alice's bare address: {text}"
    );
    let typing = to_bob
        .iter()
        .find(|l| json_str(l, "content_type").as_deref() == Some("application/im-iscomposing+xml"))
        .unwrap_or_else(|| panic!("bob is told alice is typing (RFC 3994 MESSAGE): {seen:?}"));
    assert!(
        body(typing).contains("<state>active</state>"),
        "alice's composing is an isComposing with state active: {typing}"
    );

    let errors = stanzas(&alice, "error");
    let condition_from = |jid: &str| {
        errors
            .iter()
            .find(|l| json_str(l, "from").as_deref() == Some(jid))
            .and_then(|l| json_str(l, "condition"))
    };
    assert_eq!(
        condition_from("nobody@contoso.test").as_deref(),
        Some("item-not-found"),
        "alice's message to an unknown SIP user (404) bounces as item-not-found: {alice:?}"
    );
    assert_eq!(
        condition_from("busy@contoso.test").as_deref(),
        Some("recipient-unavailable"),
        "alice's message to a busy SIP user (486) bounces as recipient-unavailable: {alice:?}"
    );
    assert!(
        errors
            .iter()
            .all(|l| !l.contains("\"from\": \"bob@contoso.test\"")),
        "alice's message that bob got does not bounce: {alice:?}"
    );
    drop(gw);
}
