//! Chat through xsgw between real peers: XMPP users on Prosody (gmail.test, alias
//! googlemail.test) and SIP users behind Kamailio (the Access Edge), played by the testbed's
//! peers (tests/testbed/README.md, "Peers for tests"). Each test brings one testbed up and
//! checks what the users on both sides would see: page-mode messages and their errors, typing
//! notifications, IM sessions opened from either side, refusals of what must not be relayed,
//! and that a SIP sender never gets 200 for a message the XMPP user did not get.

mod common;

use std::time::Duration;

use common::peers::{
    finals, json_int, json_str, objects, requests, run_peer, stanzas, start_gateway, Peer,
};
use common::testbed::Testbed;

/// Every character XML, SIP or JSON could mangle: markup, a CDATA end, quotes, accents, CJK
/// and a character outside the BMP (a surrogate pair in UTF-16, four bytes in UTF-8).
const TRICKY: &str = "héllo < & \" ' ]]> 日本 😀";

/// An RFC 3994 isComposing document saying the user is typing.
const IS_COMPOSING_ACTIVE: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
<isComposing xmlns=\"urn:ietf:params:xml:ns:im-iscomposing\"><state>active</state>\
<contenttype>text/plain</contenttype><refresh>60</refresh></isComposing>";

const SECOND: Duration = Duration::from_secs(1);

/// `sip-send` from a SIP user; its one JSON line.
fn sip_send(testbed: &Testbed, args: &[&str]) -> String {
    let mut all = vec!["sip-send", "--timeout", "15"];
    all.extend_from_slice(args);
    let lines = run_peer(testbed, &all);
    assert!(lines.len() == 1, "sip-send printed one line, not {lines:?}");
    lines[0].clone()
}

/// The final status of the last MESSAGE `sip-send` sent (`None`: it timed out).
fn code(result: &str) -> Option<i64> {
    finals(result).last().copied().flatten()
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
        finals(&result),
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

    // googlemail.test is an alias of gmail.test ([partner] aliases): carol@googlemail.test
    // chats with bob both ways under her own address.
    let users = Peer::start(&testbed, &["sip-recv", "--count", "1", "--timeout", "15"]);
    users.wait_ready();
    let carol = Peer::start(
        &testbed,
        &[
            "xmpp-recv",
            "--user",
            "carol@googlemail.test",
            "--send",
            "bob@contoso.test",
            "--body",
            "from the alias",
            "--count",
            "1",
            "--timeout",
            "15",
        ],
    );
    carol.wait_ready();
    let result = sip_send(
        &testbed,
        &[
            "--to",
            "sip:carol@googlemail.test",
            "--body",
            "to the alias",
        ],
    );
    assert_eq!(
        code(&result),
        Some(200),
        "bob's message to carol@googlemail.test is accepted: {result}"
    );
    let seen = carol.finish(20 * SECOND);
    assert!(
        stanzas(&seen, "message")
            .iter()
            .any(|l| body(l) == "to the alias"),
        "carol gets bob's message (it was answered 200): {seen:?}"
    );
    let seen = users.finish(20 * SECOND);
    assert!(
        requests(&seen, "MESSAGE")
            .iter()
            .any(|l| body(l) == "from the alias"
                && json_str(l, "from").as_deref() == Some("sip:carol@googlemail.test")),
        "bob gets carol's message from sip:carol@googlemail.test: {seen:?}"
    );
    drop(gw);
}

#[test]
fn a_session_the_sip_user_opens_carries_the_chat_both_ways() {
    let testbed = Testbed::up("im-sip-session", &[]);
    let gw = start_gateway(&testbed, &testbed.gateway_config("debug"));

    // alice is online; bob opens an IM session (Lync style), types, writes twice, and waits
    // for alice's reply.
    let alice = Peer::start(
        &testbed,
        &[
            "xmpp-recv",
            "--user",
            "alice@gmail.test",
            "--count",
            "2",
            "--timeout",
            "20",
        ],
    );
    alice.wait_ready();
    let bob = Peer::start(
        &testbed,
        &[
            "sip-session",
            "--to",
            "sip:alice@gmail.test",
            "--typing",
            "--message",
            TRICKY,
            "--message",
            "second",
            "--linger",
            "10",
            "--expect",
            "1",
        ],
    );
    let invite = bob.wait_for("{\"invite\": ", 10 * SECOND);
    assert_eq!(
        json_int(&invite, "code"),
        Some(200),
        "bob's IM session is accepted: {invite}"
    );
    assert_eq!(
        json_str(&invite, "content_type").as_deref(),
        Some("application/sdp"),
        "the 200 carries an SDP answer: {invite}"
    );
    assert!(
        body(&invite).contains("m=message "),
        "the SDP answer offers an IM (m=message) stream: {invite}"
    );
    let alice = alice.finish(20 * SECOND);
    // The session is open when alice answers (from her phone, another resource): her reply
    // must go inside it.
    let phone = run_peer(
        &testbed,
        &[
            "xmpp-recv",
            "--user",
            "alice@gmail.test",
            "--send",
            "bob@contoso.test",
            "--body",
            "reply ü < &",
            "--count",
            "1",
            "--count-kind",
            "chatstate",
            "--timeout",
            "10",
        ],
    );
    assert!(
        stanzas(&phone, "error").is_empty(),
        "alice's reply in the session does not bounce: {phone:?}"
    );
    // Once her reply is in, bob's client ends the session (BYE): alice sees him leave.
    assert!(
        stanzas(&phone, "chatstate").iter().any(|l| {
            json_str(l, "state").as_deref() == Some("gone")
                && json_str(l, "from").as_deref() == Some("bob@contoso.test")
        }),
        "bob's BYE reaches alice as chat state gone: {phone:?}"
    );
    let seen = bob.finish(30 * SECOND);
    let summary = seen.last().cloned().unwrap_or_default();
    let call_id = json_str(&summary, "call_id").unwrap_or_default();

    let sent = objects(&seen, "sent");
    assert!(
        sent.iter()
            .filter(|l| json_str(l, "method").as_deref() != Some("BYE"))
            .all(|l| json_int(l, "code") == Some(200)),
        "bob's typing INFO and both MESSAGEs in the session are answered 200: {seen:?}"
    );
    let typing = stanzas(&alice, "chatstate");
    assert!(
        typing
            .iter()
            .any(|l| json_str(l, "state").as_deref() == Some("composing")),
        "alice sees bob typing (his INFO KeyboardActivity): {alice:?}"
    );
    let bodies: Vec<String> = stanzas(&alice, "message").iter().map(|l| body(l)).collect();
    assert_eq!(
        bodies,
        vec![TRICKY.to_string(), "second".to_string()],
        "alice gets bob's session messages, in order and intact (each was answered 200): {alice:?}"
    );

    let from_alice = objects(&seen, "request");
    let reply = from_alice
        .iter()
        .find(|l| json_str(l, "method").as_deref() == Some("MESSAGE"))
        .unwrap_or_else(|| panic!("alice's reply reaches bob inside his session: {seen:?}"));
    assert_eq!(
        body(reply),
        "reply ü < &",
        "bob gets alice's reply intact: {reply}"
    );
    assert_eq!(
        json_str(reply, "call_id"),
        Some(call_id.clone()),
        "alice's reply is in bob's session (same Call-ID), not a page-mode MESSAGE: {reply}"
    );
    assert!(
        summary.contains("\"received\": [{\"method\": \"MESSAGE\""),
        "sip-session counts alice's reply as received in the dialog: {summary}"
    );
    drop(gw);
}

/// The testbed's gateway configuration with `line` added to the `[partner gmail.test]` section.
fn with_partner_setting(testbed: &Testbed, line: &str) -> String {
    let config = testbed.gateway_config("debug");
    assert!(config.contains("aliases = googlemail.test\n"), "{config}");
    config.replacen(
        "aliases = googlemail.test\n",
        &format!("aliases = googlemail.test\n{line}\n"),
        1,
    )
}

#[test]
fn in_session_mode_an_xmpp_user_opens_one_session_for_the_conversation() {
    let testbed = Testbed::up("im-xmpp-session", &[]);
    let gw = start_gateway(
        &testbed,
        &with_partner_setting(&testbed, "im_mode = session"),
    );

    // bob answers the INVITE and the MESSAGEs; INVITE + 2 MESSAGE + BYE.
    let users = Peer::start(&testbed, &["sip-recv", "--count", "4", "--timeout", "25"]);
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
            "bob@contoso.test",
            "--body",
            TRICKY,
            "--count",
            "1",
            "--timeout",
            "4",
        ],
    );
    assert!(
        stanzas(&alice, "error").is_empty(),
        "alice's messages in session mode do not bounce: {alice:?}"
    );
    // She closes the chat window.
    run_peer(
        &testbed,
        &[
            "xmpp-recv",
            "--user",
            "alice@gmail.test",
            "--send",
            "bob@contoso.test",
            "--no-body",
            "--send-state",
            "gone",
            "--count",
            "1",
            "--timeout",
            "2",
        ],
    );
    let seen = users.finish(40 * SECOND);

    let invites = requests(&seen, "INVITE");
    assert_eq!(
        invites.len(),
        1,
        "alice's two messages to bob open one IM session (one INVITE): {seen:?}"
    );
    let invite = invites[0];
    assert!(
        json_str(invite, "content_type").as_deref() == Some("application/sdp")
            && body(invite).contains("m=message "),
        "the INVITE offers an IM session (SDP m=message): {invite}"
    );
    let call_id = json_str(invite, "call_id");
    let texts: Vec<&String> = requests(&seen, "MESSAGE")
        .into_iter()
        .filter(|l| json_str(l, "content_type").as_deref() == Some("text/plain; charset=UTF-8"))
        .collect();
    assert_eq!(
        texts.len(),
        2,
        "bob gets both of alice's messages: {seen:?}"
    );
    for text in &texts {
        assert_eq!(body(text), TRICKY, "bob gets alice's text intact: {text}");
        assert_eq!(
            json_str(text, "call_id"),
            call_id,
            "alice's message comes inside the session (the INVITE's Call-ID): {text}"
        );
    }
    let byes = requests(&seen, "BYE");
    assert!(
        byes.iter().any(|l| json_str(l, "call_id") == call_id),
        "alice closing the chat (<gone/>) ends bob's session with BYE: {seen:?}"
    );
    drop(gw);
}

#[test]
fn what_must_not_be_relayed_is_refused_with_a_reason() {
    let testbed = Testbed::up("im-refusals", &[]);
    let gw = start_gateway(&testbed, &testbed.gateway_config("debug"));

    let result = sip_send(&testbed, &["--to", "sip:x@jabber.test", "--body", "hi"]);
    assert_eq!(
        code(&result),
        Some(404),
        "a SIP user writing to a domain the gateway does not federate with (jabber.test) gets 404: {result}"
    );
    gw.wait_for("refused MESSAGE for domain `jabber.test` with 404");

    let result = sip_send(
        &testbed,
        &[
            "--from",
            "sip:bob@evil.test",
            "--to",
            "sip:alice@gmail.test",
            "--body",
            "hi",
        ],
    );
    assert_eq!(
        code(&result),
        Some(403),
        "a MESSAGE from a domain the gateway does not host (evil.test) is refused: {result}"
    );

    let result = sip_send(&testbed, &["--to", "sip:%20bob@gmail.test", "--body", "hi"]);
    assert_eq!(
        code(&result),
        Some(404),
        "a Request-URI that is no JID (user part ' bob') gets 404: {result}"
    );
    let warning = json_str(&result, "warning").unwrap_or_default();
    assert!(
        warning.contains("cannot be mapped"),
        "the sender's client shows that the address cannot be mapped: {result}"
    );

    // alice writes to northwind.test, whose SRV points at the gateway, which does not host it:
    // the gateway refuses the stream (it is no open relay) and alice gets an error.
    let result = run_peer(
        &testbed,
        &[
            "xmpp-send",
            "--sender",
            "alice@gmail.test",
            "--receiver",
            "bob@gmail.test",
            "--remote",
            "x@northwind.test",
            "--wait",
            "5",
        ],
    );
    let result = result.last().cloned().unwrap_or_default();
    assert!(
        result.contains("\"login\": {\"alice\": true"),
        "alice logged in: {result}"
    );
    gw.wait_for("stream to a domain not served here");
    assert!(
        result.contains("\"errors\": [{\"from\": \"x@northwind.test\""),
        "alice's message to x@northwind.test comes back as an error stanza: {result}"
    );
    drop(gw);
}

#[test]
fn with_the_partner_unreachable_no_sip_message_is_answered_200() {
    let testbed = Testbed::up("im-unreachable", &[]);
    let config = testbed
        .gateway_config("debug")
        .replacen("[sip]\n", "[sip]\ndelivery_timeout = 3s\n", 1)
        .replacen("[xmpp]\n", "[xmpp]\nconnect_timeout = 2s\n", 1);
    assert!(config.contains("delivery_timeout = 3s") && config.contains("connect_timeout = 2s"));
    let gw = start_gateway(&testbed, &config);

    // A stream to gmail.test exists: this message is accepted by Prosody.
    let result = sip_send(
        &testbed,
        &["--to", "sip:alice@gmail.test", "--body", "before"],
    );
    assert_eq!(
        code(&result),
        Some(200),
        "gmail.test is reachable at first: {result}"
    );

    // gmail.test's server hangs (SIGSTOP): the stream is open, the stanza is written, but
    // nothing is accepted; the gateway must not answer 200 on the strength of the write.
    let pid = std::fs::read_to_string(testbed.dir.join("pids/prosody.pid"))
        .unwrap()
        .trim()
        .to_string();
    signal_process(&pid, "STOP");
    let result = sip_send(
        &testbed,
        &["--to", "sip:alice@gmail.test", "--body", "hung"],
    );
    signal_process(&pid, "CONT");
    assert_eq!(
        code(&result),
        Some(408),
        "bob's message while gmail.test's server hangs times out (408), never 200: {result}"
    );
    assert!(
        json_str(&result, "warning").is_some_and(|w| w.contains("gw.contoso.test")),
        "the 408 is the gateway's ([sip] delivery_timeout 3s), before the Edge's 5 s timer: {result}"
    );

    // gmail.test's server goes away.
    signal_process(&pid, "TERM");
    let deadline = std::time::Instant::now() + 10 * SECOND;
    while std::path::Path::new(&format!("/proc/{pid}")).exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "Prosody {pid} did not stop"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for attempt in ["after the stream was lost", "while gmail.test stays down"] {
        let result = sip_send(
            &testbed,
            &["--to", "sip:alice@gmail.test", "--body", attempt],
        );
        assert!(
            matches!(code(&result), Some(404) | Some(408)),
            "bob's message {attempt} gets an error (404 or 408), never 200 (alice cannot have it): {result}"
        );
    }
    drop(gw);
}

/// Sends a signal (`STOP`, `CONT`, `TERM`) to a testbed service by pid with kill(1).
fn signal_process(pid: &str, name: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{name}"), pid])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{name} {pid}");
}
