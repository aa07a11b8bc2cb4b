//! Scenario tests of the bridge: both sides driven by hand, every action checked.

use std::path::Path;
use std::time::{Duration, Instant};

use super::*;
use crate::sip::message::parse_message;
use crate::xmpp::element::NS_SERVER;
use crate::xmpp::stream::parse_fragment;

const CONFIG: &str = "[gateway]
fqdn = gw.contoso.test
sip_domains = contoso.test, fabrikam.test
[sip]
listen = 127.0.10.100:5061
edge = sip.contoso.test:5061
delivery_timeout = 20s
session_idle = 10min
max_message = 4KiB
[partner gmail.test]
aliases = googlemail.test
";

pub(super) fn bridge_with(extra: &str) -> Bridge {
    let text = format!("{CONFIG}{extra}");
    let config = crate::config::parse(&text, Path::new("t.ini"))
        .expect("parses")
        .0;
    let mut n = 0u8;
    Bridge::new(
        BridgeConfig::from_config(&config).unwrap(),
        Box::new(move |buf: &mut [u8]| {
            for b in buf.iter_mut() {
                n = n.wrapping_add(1);
                *b = n;
            }
        }),
        Instant::now(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs(),
    )
}

pub(super) fn bridge() -> Bridge {
    bridge_with("")
}

pub(super) fn request(text: &str) -> Request {
    let text = text.replace('\n', "\r\n");
    Request::from_message(parse_message(text.as_bytes()).unwrap()).unwrap()
}

fn response(text: &str) -> Box<Response> {
    let text = text.replace('\n', "\r\n");
    Box::new(Response::from_message(parse_message(text.as_bytes()).unwrap()).unwrap())
}

pub(super) fn stanza(xml: &str) -> Element {
    parse_fragment(xml.as_bytes()).unwrap()
}

fn sip_message(call_id: &str, from: &str, to: &str, body: &str) -> Request {
    request(&format!(
        "MESSAGE {to} SIP/2.0\nVia: SIP/2.0/TLS 127.0.10.30:5061;branch=z9hG4bK{call_id}\nMax-Forwards: 69\nFrom: <{from}>;tag=f{call_id}\nTo: <{to}>\nCall-ID: {call_id}\nCSeq: 1 MESSAGE\nContent-Type: text/plain; charset=UTF-8\nContent-Length: {}\n\n{body}",
        body.len()
    ))
}

pub(super) fn actions(b: &mut Bridge) -> Vec<Action> {
    std::iter::from_fn(|| b.poll_action()).collect()
}

fn only<T>(mut v: Vec<T>) -> T {
    assert_eq!(v.len(), 1, "exactly one action expected");
    v.remove(0)
}

pub(super) fn status_of(action: &Action) -> (RequestId, u16, Option<String>) {
    match action {
        Action::Respond {
            request,
            answer: Answer::Status { status, warning },
        } => (*request, status.as_u16(), warning.clone()),
        Action::Respond {
            request,
            answer: Answer::Built(b),
        } => (*request, b.status().unwrap().as_u16(), None),
        Action::Respond {
            request,
            answer: Answer::Busy { warning, .. },
        } => (*request, 503, Some(warning.clone())),
        other => panic!("not a response: {other:?}"),
    }
}

fn stanza_of(action: Action) -> (Element, Option<Receipt>) {
    match action {
        Action::SendStanza { stanza, receipt } => (stanza, receipt),
        other => panic!("not a stanza: {other:?}"),
    }
}

fn sip_of(action: Action) -> (TxTag, String) {
    match action {
        Action::SendSip { tag, request } => (tag, String::from_utf8(request.to_bytes()).unwrap()),
        other => panic!("not a SIP request: {other:?}"),
    }
}

/// Sends bob's MESSAGE and returns the stanza and its receipt.
fn bob_writes(b: &mut Bridge, now: Instant, id: RequestId, body: &str) -> (Element, Receipt) {
    let req = sip_message(
        &format!("c{id}"),
        "sip:bob@contoso.test",
        "sip:alice@gmail.test",
        body,
    );
    b.handle_sip_request(now, id, &req);
    let (st, receipt) = stanza_of(only(actions(b)));
    (st, receipt.expect("tracked"))
}

/// Writes the stanza and returns the barrier ping's id.
fn written_then_ping(b: &mut Bridge, now: Instant, receipt: Receipt) -> String {
    b.handle_written(now, &[receipt]);
    let (ping, r) = stanza_of(only(actions(b)));
    assert_eq!(r, None);
    assert_eq!(ping.name, "iq");
    assert_eq!(ping.attr("type"), Some("get"));
    assert_eq!(ping.attr("from"), Some("contoso.test"));
    assert_eq!(ping.attr("to"), Some("gmail.test"));
    assert!(ping.child("ping", "urn:xmpp:ping").is_some());
    ping.attr("id").unwrap().to_owned()
}

fn pong(id: &str) -> Element {
    stanza(&format!(
        "<iq xmlns='jabber:server' type='result' from='gmail.test' to='contoso.test' id='{id}'/>"
    ))
}

#[test]
fn sip_message_is_answered_200_only_once_the_partner_accepted_it() {
    let mut b = bridge();
    let now = Instant::now();
    let body = "héllo < & \" ' ]]> 日本";
    let (st, receipt) = bob_writes(&mut b, now, 7, body);
    assert_eq!(st.attr("from"), Some("bob@contoso.test"));
    assert_eq!(st.attr("to"), Some("alice@gmail.test"));
    assert_eq!(st.attr("type"), Some("chat"));
    assert_eq!(st.child("body", NS_SERVER).unwrap().text(), body);
    // Written is not yet accepted: a ping follows, and nothing is answered.
    let ping = written_then_ping(&mut b, now, receipt);
    b.handle_stanza(now, "contoso.test", "gmail.test", pong(&ping));
    let (id, status, _) = status_of(&only(actions(&mut b)));
    assert_eq!((id, status), (7, 200));
    assert_eq!(b.stats().sip_to_xmpp_delivered, 1);
    // A late answer for the same ping does nothing.
    b.handle_stanza(now, "contoso.test", "gmail.test", pong(&ping));
    assert!(actions(&mut b).is_empty());
}

#[test]
fn an_error_for_the_stanza_before_the_ping_answer_is_mapped() {
    for (condition, want) in [
        ("item-not-found", 404),
        ("service-unavailable", 403),
        ("recipient-unavailable", 480),
        ("policy-violation", 403),
    ] {
        let mut b = bridge();
        let now = Instant::now();
        let (st, receipt) = bob_writes(&mut b, now, 1, "hi");
        let ping = written_then_ping(&mut b, now, receipt);
        let error = stanza(&format!(
            "<message xmlns='jabber:server' type='error' from='alice@gmail.test' to='bob@contoso.test' id='{}'><error type='cancel'><{condition} xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>",
            st.attr("id").unwrap()
        ));
        b.handle_stanza(now, "contoso.test", "gmail.test", error);
        let (_, status, warning) = status_of(&only(actions(&mut b)));
        assert_eq!(status, want, "{condition}");
        assert!(warning.unwrap().contains(condition));
        b.handle_stanza(now, "contoso.test", "gmail.test", pong(&ping));
        assert!(actions(&mut b).is_empty(), "answered once");
    }
}

#[test]
fn an_error_from_another_domain_does_not_answer_the_message() {
    let mut b = bridge_with("[partner evil.test]\n");
    let now = Instant::now();
    let (st, receipt) = bob_writes(&mut b, now, 1, "hi");
    let id = st.attr("id").unwrap().to_owned();
    let ping = written_then_ping(&mut b, now, receipt);
    // Another partner that learnt the id answers with an error, from its own stream (and
    // claiming the real recipient as sender): the message is not answered.
    for from in ["mallory@evil.test", "alice@gmail.test"] {
        let forged = stanza(&format!(
            "<message xmlns='jabber:server' type='error' from='{from}' to='bob@contoso.test' id='{id}'><error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>"
        ));
        b.handle_stanza(now, "contoso.test", "evil.test", forged);
        assert!(actions(&mut b).is_empty(), "{from}: nothing answered");
    }
    // Nor does its answer to our ping to gmail.test.
    let forged_pong = stanza(&format!(
        "<iq xmlns='jabber:server' type='result' from='evil.test' to='contoso.test' id='{ping}'/>"
    ));
    b.handle_stanza(now, "contoso.test", "evil.test", forged_pong);
    assert!(actions(&mut b).is_empty());
    // The real answer still comes through.
    b.handle_stanza(now, "contoso.test", "gmail.test", pong(&ping));
    let (request, status, _) = status_of(&only(actions(&mut b)));
    assert_eq!((request, status), (1, 200));
}

#[test]
fn stanza_and_ping_ids_carry_128_random_bits() {
    let mut b = bridge();
    let now = Instant::now();
    let (st, receipt) = bob_writes(&mut b, now, 1, "hi");
    let ping = written_then_ping(&mut b, now, receipt);
    // The test's random source counts 1, 2, 3...: sixteen bytes of it in each id, and
    // nothing else (no counter an attacker could follow).
    let id = st.attr("id").unwrap();
    assert_eq!(id, "xsgw-0102030405060708090a0b0c0d0e0f10");
    assert_eq!(ping, "xsgw-b1112131415161718191a1b1c1d1e1f20");
}

#[test]
fn a_ping_covers_what_was_written_before_it_and_the_next_waits() {
    let mut b = bridge();
    let now = Instant::now();
    let (_, r1) = bob_writes(&mut b, now, 1, "one");
    let ping1 = written_then_ping(&mut b, now, r1);
    let (_, r2) = bob_writes(&mut b, now, 2, "two");
    let (_, r3) = bob_writes(&mut b, now, 3, "three");
    b.handle_written(now, &[r2, r3]);
    assert!(actions(&mut b).is_empty(), "one ping in flight per pair");
    b.handle_stanza(now, "contoso.test", "gmail.test", pong(&ping1));
    let acts = actions(&mut b);
    assert_eq!(acts.len(), 2, "{acts:?}");
    assert_eq!(status_of(&acts[0]).0, 1);
    let (ping2, _) = stanza_of(acts.into_iter().nth(1).unwrap());
    b.handle_stanza(
        now,
        "contoso.test",
        "gmail.test",
        pong(ping2.attr("id").unwrap()),
    );
    let answered: Vec<(RequestId, u16)> = actions(&mut b)
        .iter()
        .map(|a| {
            let (id, s, _) = status_of(a);
            (id, s)
        })
        .collect();
    assert_eq!(answered, vec![(2, 200), (3, 200)]);
}

#[test]
fn a_failed_stream_or_no_answer_in_time_is_an_error_never_200() {
    let mut b = bridge();
    let now = Instant::now();
    let (_, r) = bob_writes(&mut b, now, 1, "hi");
    b.handle_xmpp_failed(now, r, StanzaErrorCondition::RemoteServerNotFound);
    assert_eq!(status_of(&only(actions(&mut b))).1, 404);

    let (_, r) = bob_writes(&mut b, now, 2, "hi");
    written_then_ping(&mut b, now, r);
    let at = b.poll_timeout().unwrap();
    assert!(at <= now + Duration::from_secs(20));
    b.handle_timeout(now + Duration::from_secs(19));
    assert!(actions(&mut b).is_empty());
    b.handle_timeout(now + Duration::from_secs(20));
    let (id, status, warning) = status_of(&only(actions(&mut b)));
    assert_eq!((id, status), (2, 408));
    assert!(warning.unwrap().contains("did not accept it within"));
}

#[test]
fn no_open_relay_and_no_guess_from_sip() {
    let mut b = bridge();
    let now = Instant::now();
    for (from, to, want, says) in [
        (
            "sip:bob@evil.test",
            "sip:alice@gmail.test",
            403,
            "not hosted",
        ),
        (
            "sip:bob@contoso.test",
            "sip:carol@fabrikam.test",
            404,
            "hosted SIP domain",
        ),
        (
            "sip:bob@contoso.test",
            "sip:%20alice@gmail.test",
            404,
            "cannot be mapped",
        ),
        (
            "sip:bob@contoso.test",
            "sip:a%00b@gmail.test",
            404,
            "cannot be mapped",
        ),
    ] {
        b.handle_sip_request(now, 1, &sip_message("r", from, to, "hi"));
        let (_, status, warning) = status_of(&only(actions(&mut b)));
        assert_eq!(status, want, "{from} → {to}");
        assert!(warning.unwrap().contains(says), "{from} → {to}");
    }
    // Over [sip] max_message: 413, not cut.
    let big = "x".repeat(5000);
    b.handle_sip_request(
        now,
        2,
        &sip_message("big", "sip:bob@contoso.test", "sip:alice@gmail.test", &big),
    );
    assert_eq!(status_of(&only(actions(&mut b))).1, 413);
    // Requests that only make sense in a dialog.
    let mut bye = sip_message("bye", "sip:bob@contoso.test", "sip:alice@gmail.test", "");
    bye.method = crate::sip::Method::Bye;
    b.handle_sip_request(now, 3, &bye);
    assert_eq!(status_of(&only(actions(&mut b))).1, 481);
}

fn alice_says(body: &str) -> Element {
    stanza(&format!(
        "<message xmlns='jabber:server' type='chat' id='m1' from='alice@gmail.test/phone' to='bob@contoso.test'><body>{}</body><active xmlns='http://jabber.org/protocol/chatstates'/></message>",
        crate::xmpp::element::escape(body, false)
    ))
}

pub(super) fn ok_to(request: &str, status: &str, extra: &str) -> Box<Response> {
    let call_id = request
        .lines()
        .find_map(|l| l.strip_prefix("Call-ID: "))
        .unwrap();
    let cseq = request
        .lines()
        .find_map(|l| l.strip_prefix("CSeq: "))
        .unwrap();
    let from = request
        .lines()
        .find_map(|l| l.strip_prefix("From: "))
        .unwrap();
    let to = request
        .lines()
        .find_map(|l| l.strip_prefix("To: "))
        .unwrap();
    response(&format!(
        "SIP/2.0 {status}\nVia: SIP/2.0/TLS gw.contoso.test:5061;branch=z9hG4bKx\nFrom: {from}\nTo: {to};tag=edge1\nCall-ID: {call_id}\nCSeq: {cseq}\n{extra}Content-Length: 0\n\n"
    ))
}

#[test]
fn xmpp_message_goes_as_page_mode_message_and_sip_errors_bounce() {
    let body = "to SIP: ü < & \" ' ]]>";
    for (status, condition) in [
        ("200 OK", None),
        ("404 Not Found", Some("item-not-found")),
        ("486 Busy Here", Some("recipient-unavailable")),
        ("603 Decline", Some("recipient-unavailable")),
    ] {
        let mut b = bridge_with("im_mode = page\n");
        let now = Instant::now();
        b.handle_stanza(now, "contoso.test", "gmail.test", alice_says(body));
        let (tag, text) = sip_of(only(actions(&mut b)));
        assert!(
            text.starts_with("MESSAGE sip:bob@contoso.test SIP/2.0\r\n"),
            "{text}"
        );
        assert!(text.contains("From: <sip:alice@gmail.test>;tag="), "{text}");
        assert!(text.contains("To: <sip:bob@contoso.test>\r\n"), "{text}");
        assert!(
            text.contains("Content-Type: text/plain; charset=UTF-8\r\n"),
            "{text}"
        );
        assert!(text.ends_with(&format!("\r\n\r\n{body}")), "{text}");
        b.handle_sip_outcome(now, tag, SipOutcome::Final(ok_to(&text, status, "")));
        let acts = actions(&mut b);
        match condition {
            None => assert!(acts.is_empty()),
            Some(c) => {
                let (err, _) = stanza_of(only(acts));
                assert_eq!(err.attr("type"), Some("error"));
                assert_eq!(err.attr("to"), Some("alice@gmail.test/phone"));
                assert_eq!(err.attr("from"), Some("bob@contoso.test"));
                assert_eq!(err.attr("id"), Some("m1"));
                let e = err.child("error", NS_SERVER).unwrap();
                assert!(e.elements().any(|x| x.name == c), "{status}: {err:?}");
            }
        }
    }
    let mut b = bridge_with("im_mode = page\n");
    let now = Instant::now();
    b.handle_stanza(now, "contoso.test", "gmail.test", alice_says("x"));
    let (tag, _) = sip_of(only(actions(&mut b)));
    b.handle_sip_outcome(now, tag, SipOutcome::Failed("Timer F".into()));
    let (err, _) = stanza_of(only(actions(&mut b)));
    assert!(err
        .child("error", NS_SERVER)
        .unwrap()
        .elements()
        .any(|x| x.name == "remote-server-timeout"));
}

#[test]
fn xmpp_message_over_max_message_is_refused_with_policy_violation() {
    let mut b = bridge();
    b.handle_stanza(
        Instant::now(),
        "contoso.test",
        "gmail.test",
        alice_says(&"y".repeat(5000)),
    );
    let (err, _) = stanza_of(only(actions(&mut b)));
    assert!(err
        .child("error", NS_SERVER)
        .unwrap()
        .elements()
        .any(|x| x.name == "policy-violation"));
}

/// Answers the INVITE in `text` 200 with a Contact and a Record-Route, as an Edge does.
fn invite_ok(text: &str) -> Box<Response> {
    ok_to(
        text,
        "200 OK",
        "Contact: <sip:bob@127.0.10.40:5060>\nRecord-Route: <sip:127.0.10.30:5061;transport=tls;lr>\nContent-Type: application/sdp\n",
    )
}

#[test]
fn auto_mode_switches_to_a_session_when_the_edge_refuses_page_mode() {
    let mut b = bridge();
    let now = Instant::now();
    b.handle_stanza(now, "contoso.test", "gmail.test", alice_says("first"));
    let (tag, text) = sip_of(only(actions(&mut b)));
    b.handle_sip_outcome(
        now,
        tag,
        SipOutcome::Final(ok_to(&text, "415 Unsupported Media Type", "")),
    );
    let (tag, invite) = sip_of(only(actions(&mut b)));
    assert!(
        invite.starts_with("INVITE sip:bob@contoso.test SIP/2.0"),
        "{invite}"
    );
    assert!(invite.contains("Content-Type: application/sdp"), "{invite}");
    assert!(invite.contains("m=message 5060 sip null"), "{invite}");
    assert!(invite.contains("Contact: <sip:gw.contoso.test:5061;transport=tls>"));
    // A second message while the INVITE is out waits for the session.
    b.handle_stanza(now, "contoso.test", "gmail.test", alice_says("second"));
    assert!(actions(&mut b).is_empty());
    b.handle_sip_outcome(now, tag, SipOutcome::Final(invite_ok(&invite)));
    let acts = actions(&mut b);
    assert_eq!(acts.len(), 3, "ACK and the two messages: {acts:?}");
    let mut acts = acts.into_iter();
    match acts.next().unwrap() {
        Action::SendSipStateless { request } => {
            let ack = String::from_utf8(request.to_bytes()).unwrap();
            assert!(
                ack.starts_with("ACK sip:bob@127.0.10.40:5060 SIP/2.0"),
                "{ack}"
            );
            assert!(
                ack.contains("Route: <sip:127.0.10.30:5061;transport=tls;lr>"),
                "{ack}"
            );
            assert!(ack.contains("Via: SIP/2.0/TLS gw.contoso.test:5061;branch=z9hG4bK"));
        }
        other => panic!("{other:?}"),
    }
    let call_id = |t: &str| {
        t.lines()
            .find(|l| l.starts_with("Call-ID"))
            .unwrap()
            .to_owned()
    };
    for want in ["first", "second"] {
        let (_, m) = sip_of(acts.next().unwrap());
        assert!(
            m.starts_with("MESSAGE sip:bob@127.0.10.40:5060 SIP/2.0"),
            "{m}"
        );
        assert!(m.contains(";tag=edge1"), "in the dialog: {m}");
        assert_eq!(call_id(&m), call_id(&invite));
        assert!(m.ends_with(want));
    }
    // The domain is remembered: a new conversation opens a session at once.
    b.handle_stanza(
        now,
        "contoso.test",
        "gmail.test",
        stanza("<message xmlns='jabber:server' type='chat' from='bob@gmail.test/x' to='carol@contoso.test'><body>hi</body></message>"),
    );
    let (_, text) = sip_of(only(actions(&mut b)));
    assert!(text.starts_with("INVITE sip:carol@contoso.test"), "{text}");
    // <gone/> ends alice's session with BYE.
    b.handle_stanza(
        now,
        "contoso.test",
        "gmail.test",
        stanza("<message xmlns='jabber:server' type='chat' from='alice@gmail.test/phone' to='bob@contoso.test'><gone xmlns='http://jabber.org/protocol/chatstates'/></message>"),
    );
    let (_, bye) = sip_of(only(actions(&mut b)));
    assert!(bye.starts_with("BYE sip:bob@127.0.10.40:5060"), "{bye}");
    assert_eq!(b.sessions(), 1, "carol's session is still being set up");
}

fn invite_from_bob(call_id: &str) -> Request {
    let sdp = "v=0\r\no=- 0 0 IN IP4 127.0.10.40\r\ns=session\r\nc=IN IP4 127.0.10.40\r\nt=0 0\r\nm=message 5060 sip null\r\na=accept-types:text/plain application/im-iscomposing+xml\r\n";
    request(&format!(
        "INVITE sip:alice@gmail.test SIP/2.0\nVia: SIP/2.0/TLS 127.0.10.30:5061;branch=z9hG4bKi\nMax-Forwards: 69\nFrom: <sip:bob@contoso.test>;tag=bobtag\nTo: <sip:alice@gmail.test>\nCall-ID: {call_id}\nCSeq: 1 INVITE\nContact: <sip:bob@127.0.10.40:5060>\nRecord-Route: <sip:127.0.10.30:5061;transport=tls;lr>\nContent-Type: application/sdp\nContent-Length: {}\n\n{sdp}",
        sdp.len()
    ).replace("\r\n", "\n"))
}

fn in_dialog(
    method: &str,
    call_id: &str,
    our_tag: &str,
    seq: u32,
    ctype: &str,
    body: &str,
) -> Request {
    request(&format!(
        "{method} sip:gw.contoso.test:5061;transport=tls SIP/2.0\nVia: SIP/2.0/TLS 127.0.10.30:5061;branch=z9hG4bK{method}{seq}\nMax-Forwards: 69\nFrom: <sip:bob@contoso.test>;tag=bobtag\nTo: <sip:alice@gmail.test>;tag={our_tag}\nCall-ID: {call_id}\nCSeq: {seq} {method}\nContent-Type: {ctype}\nContent-Length: {}\n\n{body}",
        body.len()
    ))
}

#[test]
fn a_session_the_sip_user_opens_carries_the_conversation_both_ways() {
    let mut b = bridge();
    let now = Instant::now();
    b.handle_sip_request(now, 1, &invite_from_bob("sess1"));
    let ok = match only(actions(&mut b)) {
        Action::Respond {
            request: 1,
            answer: Answer::Built(ok),
        } => String::from_utf8(ok.to_bytes()).unwrap(),
        other => panic!("{other:?}"),
    };
    assert!(ok.starts_with("SIP/2.0 200 OK"), "{ok}");
    assert!(
        ok.contains("m=message 5060 sip sip:alice@gmail.test"),
        "{ok}"
    );
    assert!(ok.contains("Record-Route: <sip:127.0.10.30:5061;transport=tls;lr>"));
    let our_tag = ok
        .lines()
        .find_map(|l| l.strip_prefix("To: <sip:alice@gmail.test>;tag="))
        .unwrap()
        .to_owned();
    // Typing (Microsoft INFO), then a message, inside the dialog.
    b.handle_sip_request(
        now,
        2,
        &in_dialog(
            "INFO",
            "sess1",
            &our_tag,
            2,
            "application/xml",
            "<?xml version=\"1.0\"?><KeyboardActivity><status status=\"type\"/></KeyboardActivity>",
        ),
    );
    let (typing, r) = stanza_of(only(actions(&mut b)));
    assert!(typing
        .child("composing", "http://jabber.org/protocol/chatstates")
        .is_some());
    b.handle_written(now, &[r.unwrap()]);
    assert_eq!(
        status_of(&only(actions(&mut b))).1,
        200,
        "typing: 200 once written"
    );
    b.handle_sip_request(
        now,
        3,
        &in_dialog(
            "MESSAGE",
            "sess1",
            &our_tag,
            3,
            "text/plain; charset=UTF-8",
            "in session",
        ),
    );
    let (msg, _) = stanza_of(only(actions(&mut b)));
    assert_eq!(msg.child("body", NS_SERVER).unwrap().text(), "in session");
    // Alice's reply goes inside the session, whatever the mode.
    b.handle_stanza(now, "contoso.test", "gmail.test", alice_says("reply"));
    let (_, reply) = sip_of(only(actions(&mut b)));
    assert!(
        reply.starts_with("MESSAGE sip:bob@127.0.10.40:5060 SIP/2.0"),
        "{reply}"
    );
    assert!(reply.contains("Call-ID: sess1\r\n"), "{reply}");
    assert!(
        reply.contains(&format!("From: <sip:alice@gmail.test>;tag={our_tag}")),
        "{reply}"
    );
    assert!(
        reply.contains("Route: <sip:127.0.10.30:5061;transport=tls;lr>"),
        "{reply}"
    );
    // A CSeq going backwards is refused.
    b.handle_sip_request(
        now,
        4,
        &in_dialog("MESSAGE", "sess1", &our_tag, 2, "text/plain", "old"),
    );
    assert_eq!(status_of(&only(actions(&mut b))).1, 500);
    // BYE: 200, and alice is told bob is gone.
    b.handle_sip_request(
        now,
        5,
        &in_dialog("BYE", "sess1", &our_tag, 9, "text/plain", ""),
    );
    let acts = actions(&mut b);
    assert_eq!(status_of(&acts[0]).1, 200);
    let (gone, _) = stanza_of(acts.into_iter().nth(1).unwrap());
    assert!(gone
        .child("gone", "http://jabber.org/protocol/chatstates")
        .is_some());
    assert_eq!(b.sessions(), 0);
    b.handle_sip_request(
        now,
        6,
        &in_dialog("MESSAGE", "sess1", &our_tag, 10, "text/plain", "late"),
    );
    assert_eq!(status_of(&only(actions(&mut b))).1, 481);
}

#[test]
fn idle_sessions_are_ended_with_bye() {
    let mut b = bridge();
    let now = Instant::now();
    b.handle_sip_request(now, 1, &invite_from_bob("idle"));
    actions(&mut b);
    assert_eq!(b.sessions(), 1);
    b.handle_timeout(now + Duration::from_secs(60));
    assert!(actions(&mut b).is_empty());
    let later = now + Duration::from_secs(601);
    b.handle_timeout(later);
    let (_, bye) = sip_of(only(actions(&mut b)));
    assert!(bye.starts_with("BYE sip:bob@127.0.10.40:5060"), "{bye}");
    assert_eq!(b.sessions(), 0);
}

#[test]
fn typing_crosses_both_ways_in_page_mode() {
    let mut b = bridge_with("im_mode = page\n");
    let now = Instant::now();
    b.handle_stanza(
        now,
        "contoso.test",
        "gmail.test",
        stanza("<message xmlns='jabber:server' type='chat' from='alice@gmail.test/p' to='bob@contoso.test'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>"),
    );
    let (_, text) = sip_of(only(actions(&mut b)));
    assert!(
        text.contains("Content-Type: application/im-iscomposing+xml"),
        "{text}"
    );
    assert!(text.contains("<state>active</state>"), "{text}");
    let doc = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><isComposing xmlns=\"urn:ietf:params:xml:ns:im-iscomposing\"><state>active</state><refresh>60</refresh></isComposing>";
    let mut req = sip_message("t", "sip:bob@contoso.test", "sip:alice@gmail.test", doc);
    req = request(
        &String::from_utf8(req.message().as_bytes().to_vec())
            .unwrap()
            .replace(
                "text/plain; charset=UTF-8",
                "application/im-iscomposing+xml",
            )
            .replace("\r\n", "\n"),
    );
    b.handle_sip_request(now, 1, &req);
    let (st, r) = stanza_of(only(actions(&mut b)));
    assert!(st
        .child("composing", "http://jabber.org/protocol/chatstates")
        .is_some());
    assert!(st.child("body", NS_SERVER).is_none());
    b.handle_written(now, &[r.unwrap()]);
    assert_eq!(status_of(&only(actions(&mut b))).1, 200);
    assert_eq!(b.stats().typing, 2);
}

#[test]
fn pings_and_disco_are_answered_other_iqs_refused_headlines_ignored() {
    let mut b = bridge();
    let now = Instant::now();
    b.handle_stanza(now, "contoso.test", "gmail.test", stanza("<iq xmlns='jabber:server' type='get' id='p1' from='gmail.test' to='contoso.test'><ping xmlns='urn:xmpp:ping'/></iq>"));
    let (r, _) = stanza_of(only(actions(&mut b)));
    assert_eq!(r.attr("type"), Some("result"));
    assert_eq!(r.attr("id"), Some("p1"));
    assert_eq!(r.attr("to"), Some("gmail.test"));
    b.handle_stanza(now, "contoso.test", "gmail.test", stanza("<iq xmlns='jabber:server' type='get' id='v1' from='alice@gmail.test/x' to='bob@contoso.test'><query xmlns='jabber:iq:version'/></iq>"));
    let (r, _) = stanza_of(only(actions(&mut b)));
    assert_eq!(r.attr("type"), Some("error"));
    b.handle_stanza(now, "contoso.test", "gmail.test", stanza("<message xmlns='jabber:server' type='headline' from='gmail.test' to='bob@contoso.test'><body>news</body></message>"));
    assert!(actions(&mut b).is_empty());
    b.handle_stanza(now, "contoso.test", "gmail.test", stanza("<message xmlns='jabber:server' type='groupchat' from='room@gmail.test/a' to='bob@contoso.test'><body>x</body></message>"));
    let (r, _) = stanza_of(only(actions(&mut b)));
    assert_eq!(r.attr("type"), Some("error"));
    // A message from outside the authenticated pair is never relayed.
    b.handle_stanza(now, "contoso.test", "gmail.test", stanza("<message xmlns='jabber:server' type='chat' from='eve@evil.test' to='bob@contoso.test'><body>x</body></message>"));
    assert!(actions(&mut b).is_empty());
}

#[test]
fn a_new_ping_follows_once_the_last_was_answered() {
    let mut b = bridge();
    let now = Instant::now();
    for round in 0..3 {
        let (_, r) = bob_writes(&mut b, now, round, "hi");
        let ping = written_then_ping(&mut b, now, r);
        b.handle_stanza(now, "contoso.test", "gmail.test", pong(&ping));
        assert_eq!(status_of(&only(actions(&mut b))).1, 200, "round {round}");
    }
}

#[test]
fn one_ping_covers_a_batch_written_at_once() {
    let mut b = bridge();
    let now = Instant::now();
    let receipts: Vec<Receipt> = (1..=5)
        .map(|i| bob_writes(&mut b, now, i, "hi").1)
        .collect();
    b.handle_written(now, &receipts);
    let (ping, _) = stanza_of(only(actions(&mut b)));
    b.handle_stanza(
        now,
        "contoso.test",
        "gmail.test",
        pong(ping.attr("id").unwrap()),
    );
    let acts = actions(&mut b);
    assert_eq!(acts.len(), 5, "five 200s and no second ping: {acts:?}");
    assert!(acts.iter().all(|a| status_of(a).1 == 200));
}

fn iscomposing_from_bob(id: RequestId, refresh: u32) -> Request {
    let doc = format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?><isComposing xmlns=\"urn:ietf:params:xml:ns:im-iscomposing\"><state>active</state><refresh>{refresh}</refresh></isComposing>");
    let req = sip_message(
        &format!("t{id}"),
        "sip:bob@contoso.test",
        "sip:alice@gmail.test",
        &doc,
    );
    request(
        &String::from_utf8(req.message().as_bytes().to_vec())
            .unwrap()
            .replace(
                "text/plain; charset=UTF-8",
                "application/im-iscomposing+xml",
            )
            .replace("\r\n", "\n"),
    )
}

#[test]
fn an_active_indication_from_sip_lapses_to_paused_unless_a_message_ends_it() {
    let mut b = bridge();
    let now = Instant::now();
    b.handle_sip_request(now, 1, &iscomposing_from_bob(1, 60));
    let (st, r) = stanza_of(only(actions(&mut b)));
    assert!(st
        .child("composing", "http://jabber.org/protocol/chatstates")
        .is_some());
    b.handle_written(now, &[r.unwrap()]);
    assert_eq!(status_of(&only(actions(&mut b))).1, 200);
    b.handle_timeout(now + Duration::from_secs(59));
    let a = actions(&mut b);
    assert!(a.is_empty(), "{a:?}");
    b.handle_timeout(now + Duration::from_secs(60));
    let (paused, receipt) = stanza_of(only(actions(&mut b)));
    assert_eq!(receipt, None);
    assert_eq!(paused.attr("from"), Some("bob@contoso.test"));
    assert!(paused
        .child("paused", "http://jabber.org/protocol/chatstates")
        .is_some());

    // Composing, then the message itself: no paused afterwards.
    let mut b = bridge();
    b.handle_sip_request(now, 1, &iscomposing_from_bob(1, 60));
    actions(&mut b);
    bob_writes(&mut b, now, 2, "done typing");
    b.handle_timeout(now + Duration::from_secs(61));
    assert!(actions(&mut b).iter().all(|a| !matches!(a, Action::SendStanza { stanza, .. } if stanza.child("paused", "http://jabber.org/protocol/chatstates").is_some())));
}

#[test]
fn an_xmpp_user_still_composing_is_refreshed_toward_sip_until_paused() {
    let mut b = bridge_with("im_mode = page\n");
    let now = Instant::now();
    let state = |s: &str| {
        stanza(&format!("<message xmlns='jabber:server' type='chat' from='alice@gmail.test/p' to='bob@contoso.test'><{s} xmlns='http://jabber.org/protocol/chatstates'/></message>"))
    };
    b.handle_stanza(now, "contoso.test", "gmail.test", state("composing"));
    let (_, first) = sip_of(only(actions(&mut b)));
    assert!(first.contains("<refresh>90</refresh>"), "{first}");
    let at = now + Duration::from_secs(80);
    b.handle_timeout(at);
    let (_, again) = sip_of(only(actions(&mut b)));
    assert!(again.contains("<state>active</state>"), "{again}");
    b.handle_stanza(at, "contoso.test", "gmail.test", state("paused"));
    let (_, idle) = sip_of(only(actions(&mut b)));
    assert!(idle.contains("<state>idle</state>"), "{idle}");
    b.handle_timeout(at + Duration::from_secs(200));
    assert!(actions(&mut b).is_empty(), "no refresh after paused");
}

#[test]
fn a_first_message_in_the_invite_is_delivered_before_the_session_is_accepted() {
    let with_body = |call_id: &str| {
        let text = String::from_utf8(invite_from_bob(call_id).message().as_bytes().to_vec())
            .unwrap()
            .replace(
                "Content-Type: application/sdp",
                "Ms-Text-Format: text/plain; charset=UTF-8;msgr=WAAtAE0AUwA;ms-body=aGkgQWxpY2U=\r\nContent-Type: application/sdp",
            );
        request(&text.replace("\r\n", "\n"))
    };
    let mut b = bridge();
    let now = Instant::now();
    b.handle_sip_request(now, 1, &with_body("first"));
    let (st, r) = stanza_of(only(actions(&mut b)));
    assert_eq!(st.child("body", NS_SERVER).unwrap().text(), "hi Alice");
    let ping = written_then_ping(&mut b, now, r.unwrap());
    b.handle_stanza(now, "contoso.test", "gmail.test", pong(&ping));
    match only(actions(&mut b)) {
        Action::Respond {
            request: 1,
            answer: Answer::Built(ok),
        } => assert!(String::from_utf8(ok.to_bytes())
            .unwrap()
            .contains("m=message")),
        other => panic!("{other:?}"),
    }
    assert_eq!(b.sessions(), 1);

    // Refused on the XMPP side: the INVITE gets the error and no session stays.
    let mut b = bridge();
    b.handle_sip_request(now, 1, &with_body("refused"));
    let (_, r) = stanza_of(only(actions(&mut b)));
    b.handle_xmpp_failed(now, r.unwrap(), StanzaErrorCondition::RemoteServerNotFound);
    assert_eq!(status_of(&only(actions(&mut b))).1, 404);
    assert_eq!(b.sessions(), 0);
}

#[test]
fn at_shutdown_waiting_requests_are_answered_480_saying_what_is_known() {
    let mut b = bridge();
    let now = Instant::now();
    let (_, r1) = bob_writes(&mut b, now, 1, "sent, not confirmed");
    written_then_ping(&mut b, now, r1);
    bob_writes(&mut b, now, 2, "never sent");
    b.shut_down(now);
    let answers: Vec<(RequestId, u16, String)> = actions(&mut b)
        .iter()
        .filter(|a| matches!(a, Action::Respond { .. }))
        .map(|a| {
            let (id, status, warning) = status_of(a);
            (id, status, warning.unwrap_or_default())
        })
        .collect();
    assert_eq!(answers.len(), 2, "{answers:?}");
    assert!(answers.iter().all(|(_, s, _)| *s == 480));
    assert!(answers[0].2.contains("had not confirmed"), "{answers:?}");
    assert!(answers[1].2.contains("was not sent"), "{answers:?}");
}
