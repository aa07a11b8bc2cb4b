//! Presence between XMPP users on Prosody and SIP users behind Kamailio, through xsgw
//! (RFC 8048): subscriptions both ways, updates, refusal, no leak, refresh, expiry and a
//! restart after `kill -9`. The peers are the testbed's `xmpp-presence` (slixmpp, auto-approval
//! off) and `sip-presence` (a SIP user that is watched, or watches, via the Edge).

mod common;

use std::time::Duration;

use common::peers::{start_gateway, Peer};
use common::testbed::Testbed;

const T: Duration = Duration::from_secs(15);

fn sip_user(testbed: &Testbed, args: &[&str]) -> Peer {
    let mut all = vec!["sip-presence"];
    all.extend_from_slice(args);
    let p = Peer::start_interactive(testbed, &all);
    p.wait_ready();
    p
}

fn xmpp_user(testbed: &Testbed, jid: &str, args: &[&str]) -> Peer {
    let mut all = vec!["xmpp-presence", "--user", jid, "--available"];
    all.extend_from_slice(args);
    let p = Peer::start_interactive(testbed, &all);
    p.wait_ready();
    p
}

/// The subscriptions saved under `state_dir` as a restart reads them: the snapshot
/// `subscriptions` with the changes in `subscriptions.journal` applied (`+line`, `-key`, the
/// key being a line's direction, SIP user and XMPP user).
fn saved_subscriptions(state_dir: &std::path::Path) -> Vec<String> {
    let read = |name: &str| std::fs::read_to_string(state_dir.join(name)).unwrap_or_default();
    let key = |line: &str| {
        let f: Vec<&str> = line.split(' ').collect();
        format!("{} {} {}", f[1], f[4], f[5])
    };
    let mut lines = std::collections::BTreeMap::new();
    for line in read("subscriptions")
        .lines()
        .filter(|l| !l.starts_with('#'))
    {
        lines.insert(key(line), line.to_owned());
    }
    for record in read("subscriptions.journal").lines() {
        if let Some(line) = record.strip_prefix('+') {
            lines.insert(key(line), line.to_owned());
        } else if let Some(k) = record.strip_prefix('-') {
            lines.remove(k);
        }
    }
    lines.into_values().collect()
}

/// Waits up to `within` and checks that nothing matching `texts` was printed since `mark`.
fn nothing_since(peer: &Peer, mark: usize, texts: &[&str], within: Duration) {
    std::thread::sleep(within);
    assert!(
        !peer.printed_since(mark, texts),
        "leak: {texts:?} after line {mark}:\n{}",
        peer.transcript()
    );
}

#[test]
fn an_xmpp_user_watches_a_sip_user_until_unsubscribing_and_a_refused_one_sees_nothing() {
    let testbed = Testbed::up("presence-out", &[]);
    let _gw = start_gateway(&testbed, &testbed.gateway_config("debug"));
    let mut bob = sip_user(
        &testbed,
        &[
            "--user",
            "sip:bob@contoso.test",
            "--user",
            "sip:dave@contoso.test",
            "--note",
            "At my desk",
        ],
    );
    let mut alice = xmpp_user(&testbed, "alice@gmail.test", &[]);

    let (a, b) = (alice.mark(), bob.mark());
    alice.send(r#"{"cmd": "subscribe", "to": "bob@contoso.test"}"#);
    let subscribe = bob.wait_since(b, &["\"method\": \"SUBSCRIBE\"", "\"request\""], T);
    assert!(
        subscribe.contains("\"event\": \"presence\"") && subscribe.contains("application/pidf+xml"),
        "SUBSCRIBE for presence, PIDF accepted: {subscribe}"
    );
    alice.wait_since(
        a,
        &["\"type\": \"subscribed\"", "\"from\": \"bob@contoso.test\""],
        T,
    );
    alice.wait_since(
        a,
        &[
            "\"from\": \"bob@contoso.test",
            "\"type\": null",
            "\"status\": \"At my desk\"",
        ],
        T,
    );

    // Online → away → offline, each with its status text.
    let a = alice.mark();
    bob.send(r#"{"cmd": "publish", "user": "sip:bob@contoso.test", "basic": "open", "note": "In a meeting", "activity": "away"}"#);
    alice.wait_since(
        a,
        &["\"show\": \"away\"", "\"status\": \"In a meeting\""],
        T,
    );
    // alice logs in a second time: her server probes bob, xsgw fetches bob's state (a
    // one-shot SUBSCRIBE) and the new session sees him at once.
    let b = bob.mark();
    let second = xmpp_user(&testbed, "alice@gmail.test", &["--resource", "tablet"]);
    second.wait_for("In a meeting", T);
    let fetch = bob.wait_since(b, &["\"method\": \"SUBSCRIBE\"", "\"request\""], T);
    assert!(
        fetch.contains("\"expires\": \"0\"") && fetch.contains("\"to_tag\": null"),
        "a probe is a one-shot SUBSCRIBE Expires 0 in a new dialog: {fetch}"
    );
    drop(second);

    let a = alice.mark();
    bob.send(r#"{"cmd": "publish", "user": "sip:bob@contoso.test", "basic": "closed", "note": "Gone home"}"#);
    alice.wait_since(
        a,
        &["\"type\": \"unavailable\"", "\"status\": \"Gone home\""],
        T,
    );

    // Unsubscribe: SUBSCRIBE Expires 0 on the SIP side, no more presence on the XMPP side.
    let b = bob.mark();
    alice.send(r#"{"cmd": "unsubscribe", "to": "bob@contoso.test"}"#);
    let unsubscribe = bob.wait_since(b, &["\"method\": \"SUBSCRIBE\"", "\"request\""], T);
    assert!(
        unsubscribe.contains("\"expires\": \"0\""),
        "unsubscribe is Expires 0: {unsubscribe}"
    );
    std::thread::sleep(Duration::from_secs(1));
    let a = alice.mark();
    bob.send(r#"{"cmd": "publish", "user": "sip:bob@contoso.test", "basic": "open", "note": "Back again"}"#);
    nothing_since(
        &alice,
        a,
        &["\"from\": \"bob@contoso.test"],
        Duration::from_secs(2),
    );

    // dave refuses (403): alice is told `unsubscribed` and never sees dave's presence.
    let b = bob.mark();
    bob.send(r#"{"cmd": "subscribe-status", "code": 403}"#);
    bob.wait_since(b, &["\"ack\"", "subscribe-status"], T);
    let a = alice.mark();
    alice.send(r#"{"cmd": "subscribe", "to": "dave@contoso.test"}"#);
    alice.wait_since(
        a,
        &[
            "\"type\": \"unsubscribed\"",
            "\"from\": \"dave@contoso.test\"",
        ],
        T,
    );
    let a = alice.mark();
    bob.send(
        r#"{"cmd": "publish", "user": "sip:dave@contoso.test", "basic": "open", "note": "secret"}"#,
    );
    nothing_since(
        &alice,
        a,
        &["\"from\": \"dave@contoso.test"],
        Duration::from_secs(2),
    );
}

#[test]
fn a_sip_user_watches_an_xmpp_user_who_approves_updates_and_then_refuses() {
    let testbed = Testbed::up("presence-in", &[]);
    let _gw = start_gateway(&testbed, &testbed.gateway_config("debug"));
    let mut alice = xmpp_user(&testbed, "alice@gmail.test", &["--status", "Reading mail"]);
    let mut carol = sip_user(
        &testbed,
        &["--user", "sip:carol@contoso.test", "--port", "0"],
    );

    let (a, c) = (alice.mark(), carol.mark());
    carol.send(r#"{"cmd": "subscribe", "to": "sip:alice@gmail.test", "expires": 600}"#);
    carol.wait_since(c, &["\"response\"", "\"code\": 200"], T);
    carol.wait_since(c, &["\"notify\"", "\"subscription_state\": \"pending"], T);
    alice.wait_since(
        a,
        &[
            "\"type\": \"subscribe\"",
            "\"from\": \"carol@contoso.test\"",
        ],
        T,
    );
    // Nothing about alice reaches carol before she approves.
    assert!(
        !carol.printed_since(c, &["\"basic\": \"open\""]),
        "no presence before approval:\n{}",
        carol.transcript()
    );

    let c = carol.mark();
    alice.send(r#"{"cmd": "approve", "to": "carol@contoso.test"}"#);
    carol.wait_since(
        c,
        &[
            "\"notify\"",
            "\"subscription_state\": \"active",
            "\"basic\": \"open\"",
            "Reading mail",
        ],
        T,
    );

    let c = carol.mark();
    alice.send(r#"{"cmd": "presence", "show": "dnd", "status": "Busy < & > ü"}"#);
    let busy = carol.wait_since(c, &["\"notify\"", "Busy < & > ü"], T);
    assert!(busy.contains("busy"), "dnd arrives as RPID busy: {busy}");
    let c = carol.mark();
    alice.send(r#"{"cmd": "unavailable", "status": "Off for today"}"#);
    carol.wait_since(
        c,
        &["\"notify\"", "\"basic\": \"closed\"", "Off for today"],
        T,
    );

    // Refusal: NOTIFY terminated;reason=rejected, then nothing more.
    let c = carol.mark();
    alice.send(r#"{"cmd": "refuse", "to": "carol@contoso.test"}"#);
    carol.wait_since(
        c,
        &[
            "\"notify\"",
            "\"subscription_state\": \"terminated;reason=rejected",
        ],
        T,
    );
    let c = carol.mark();
    alice.send(r#"{"cmd": "presence", "status": "Back"}"#);
    nothing_since(&carol, c, &["\"notify\""], Duration::from_secs(2));
}

#[test]
fn subscriptions_survive_kill_9_and_keep_flowing_both_ways() {
    let testbed = Testbed::up("presence-restart", &[]);
    let config = testbed.gateway_config("debug");
    let mut gw = start_gateway(&testbed, &config);
    let mut bob = sip_user(&testbed, &["--user", "sip:bob@contoso.test"]);
    let mut carol = sip_user(
        &testbed,
        &["--user", "sip:carol@contoso.test", "--port", "0"],
    );
    let mut alice = xmpp_user(&testbed, "alice@gmail.test", &[]);

    // alice watches bob; carol watches alice.
    let a = alice.mark();
    alice.send(r#"{"cmd": "subscribe", "to": "bob@contoso.test"}"#);
    alice.wait_since(a, &["\"type\": \"subscribed\""], T);
    let a = alice.mark();
    carol.send(r#"{"cmd": "subscribe", "to": "sip:alice@gmail.test", "expires": 3600}"#);
    alice.wait_since(a, &["\"type\": \"subscribe\""], T);
    let c = carol.mark();
    alice.send(r#"{"cmd": "approve", "to": "carol@contoso.test"}"#);
    carol.wait_since(c, &["\"subscription_state\": \"active"], T);
    // Give the state writer its second (it writes at most once a second).
    std::thread::sleep(Duration::from_millis(1500));
    let saved = saved_subscriptions(&testbed.dir.join("xsgw-state"));
    assert_eq!(saved.len(), 2, "{saved:?}");

    gw.signal("KILL");
    gw.wait_exit(Duration::from_secs(5));
    let gw = start_gateway(&testbed, &config);
    gw.wait_for("restored 2 presence subscription(s)");

    // Nobody re-subscribes: bob's update reaches alice, alice's reaches carol.
    let a = alice.mark();
    bob.send(r#"{"cmd": "publish", "basic": "open", "note": "After the restart"}"#);
    alice.wait_since(
        a,
        &["\"from\": \"bob@contoso.test", "After the restart"],
        Duration::from_secs(20),
    );
    let c = carol.mark();
    alice.send(r#"{"cmd": "presence", "show": "away", "status": "Also after it"}"#);
    carol.wait_since(c, &["\"notify\"", "Also after it"], Duration::from_secs(20));
}

#[test]
fn refresh_before_expiry_481_re_establishes_and_an_unrefreshed_subscription_expires() {
    let testbed = Testbed::up("presence-refresh", &[]);
    let _gw = start_gateway(&testbed, &testbed.gateway_config("debug"));
    // bob grants 60 s only: xsgw must refresh at about 48 s.
    let mut bob = sip_user(
        &testbed,
        &["--user", "sip:bob@contoso.test", "--max-expires", "60"],
    );
    let mut carol = sip_user(
        &testbed,
        &["--user", "sip:carol@contoso.test", "--port", "0"],
    );
    let mut alice = xmpp_user(&testbed, "alice@gmail.test", &[]);

    let a = alice.mark();
    alice.send(r#"{"cmd": "subscribe", "to": "bob@contoso.test"}"#);
    alice.wait_since(a, &["\"type\": \"subscribed\""], T);
    // carol subscribes to alice for 60 s and never refreshes.
    let a = alice.mark();
    carol.send(r#"{"cmd": "subscribe", "to": "sip:alice@gmail.test", "expires": 60}"#);
    alice.wait_since(a, &["\"type\": \"subscribe\""], T);
    let c = carol.mark();
    alice.send(r#"{"cmd": "approve", "to": "carol@contoso.test"}"#);
    carol.wait_since(c, &["\"subscription_state\": \"active"], T);

    // First refresh, in the dialog, before the 60 s run out.
    let b = bob.mark();
    let refresh = bob.wait_since(
        b,
        &["\"request\"", "\"method\": \"SUBSCRIBE\"", "\"to_tag\": \""],
        Duration::from_secs(58),
    );
    assert!(refresh.contains("\"expires\": \"3600\""), "{refresh}");
    let a = alice.mark();
    bob.send(r#"{"cmd": "publish", "basic": "open", "note": "Still here"}"#);
    alice.wait_since(a, &["Still here"], T);

    // carol's subscription was not refreshed: it ends with timeout.
    carol.wait_since(
        c,
        &["\"notify\"", "terminated;reason=timeout"],
        Duration::from_secs(30),
    );

    // The next refresh is refused with 481: xsgw subscribes again in a new dialog.
    let b = bob.mark();
    bob.send(r#"{"cmd": "refresh-status", "code": 481}"#);
    bob.wait_since(b, &["\"ack\"", "refresh-status"], T);
    let b = bob.mark();
    bob.wait_since(
        b,
        &[
            "\"request\"",
            "\"method\": \"SUBSCRIBE\"",
            "\"to_tag\": null",
        ],
        Duration::from_secs(60),
    );
    let a = alice.mark();
    bob.send(r#"{"cmd": "publish", "basic": "open", "note": "Re-established"}"#);
    alice.wait_since(a, &["Re-established"], T);
}
