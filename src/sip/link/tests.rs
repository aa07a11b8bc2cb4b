use super::*;
use crate::sip::frame::KeepaliveRole;
use crate::sip::message::parse_message;
use crate::sip::uri::Uri;

fn rng() -> RandomSource {
    let mut s: u64 = 0x9e37_79b9_7f4a_7c15;
    Box::new(move |buf: &mut [u8]| {
        for b in buf {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            *b = s as u8;
        }
    })
}

fn config(keepalive: Option<Duration>) -> LinkConfig {
    LinkConfig {
        frame: FrameConfig {
            keepalive: if keepalive.is_some() {
                KeepaliveRole::Client
            } else {
                KeepaliveRole::Server
            },
            ..FrameConfig::default()
        },
        policy: LinkConfig::gateway_policy(),
        keepalive,
        via_sent_by: "gw.contoso.test:5061".into(),
    }
}

fn request(method: &str, extra: &str, body: &str) -> Vec<u8> {
    format!(
        "{method} sip:alice@gmail.test SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.10.30:5061;branch=z9hG4bK{method}1\r\nMax-Forwards: 69\r\nFrom: <sip:bob@contoso.test>;tag=f1\r\nTo: <sip:alice@gmail.test>\r\nCall-ID: c1\r\nCSeq: 1 {method}\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn out(link: &mut Link) -> Vec<Vec<u8>> {
    let mut all = Vec::new();
    let mut m = Vec::new();
    while link.poll_transmit(&mut m) {
        all.push(std::mem::take(&mut m));
    }
    all
}

fn statuses(link: &mut Link) -> Vec<u16> {
    out(link)
        .iter()
        .map(|b| parse_message(b).unwrap().status().unwrap())
        .collect()
}

fn events(link: &mut Link) -> Vec<LinkEvent> {
    std::iter::from_fn(|| link.poll_event()).collect()
}

#[test]
fn ping_is_answered_with_pong() {
    let now = Instant::now();
    let mut link = Link::new(now, config(None), rng());
    link.handle_input(now, b"\r\n\r\n");
    assert_eq!(out(&mut link), vec![b"\r\n".to_vec()]);
}

#[test]
fn new_request_goes_to_the_user_and_is_answered_once() {
    let now = Instant::now();
    let mut link = Link::new(now, config(None), rng());
    let msg = request("MESSAGE", "Content-Type: text/plain\r\n", "hi");
    link.handle_input(now, &msg);
    let ev = events(&mut link);
    let LinkEvent::Request {
        key,
        request,
        expects_response: true,
    } = &ev[0]
    else {
        panic!("{ev:?}")
    };
    assert_eq!(request.body(), b"hi");
    // A retransmission is absorbed.
    link.handle_input(now, &msg);
    assert!(events(&mut link).is_empty());
    let b = response_to(request, StatusCode::OK, Some("t1")).unwrap();
    link.respond(now, key, &b).unwrap();
    assert_eq!(statuses(&mut link), vec![200]);
    assert!(link.respond(now, key, &b).is_err());
}

#[test]
fn invite_gets_trying_and_cancel_gets_200_and_487() {
    let now = Instant::now();
    let mut link = Link::new(now, config(None), rng());
    link.handle_input(now, &request("INVITE", "", ""));
    assert_eq!(statuses(&mut link), vec![100]);
    let _ = events(&mut link);
    let cancel = String::from_utf8(request("INVITE", "", ""))
        .unwrap()
        .replacen("INVITE sip", "CANCEL sip", 1)
        .replace("CSeq: 1 INVITE", "CSeq: 1 CANCEL");
    link.handle_input(now, cancel.as_bytes());
    assert_eq!(statuses(&mut link), vec![200, 487]);
    assert!(matches!(
        events(&mut link)[..],
        [LinkEvent::Cancelled { .. }]
    ));
}

#[test]
fn cancel_without_invite_gets_481() {
    let now = Instant::now();
    let mut link = Link::new(now, config(None), rng());
    link.handle_input(now, &request("CANCEL", "", ""));
    assert_eq!(statuses(&mut link), vec![481]);
}

#[test]
fn refusals_carry_their_headers() {
    let now = Instant::now();
    let mut link = Link::new(now, config(None), rng());
    link.handle_input(now, &request("REGISTER", "", ""));
    let sent = out(&mut link);
    let text = String::from_utf8(sent[0].clone()).unwrap();
    assert!(text.starts_with("SIP/2.0 405 "), "{text}");
    assert!(text.contains("Allow: INVITE, ACK, BYE, CANCEL, OPTIONS, MESSAGE, INFO, SUBSCRIBE, NOTIFY, BENOTIFY\r\n"), "{text}");
    link.handle_input(now, &request("FOO", "", ""));
    assert_eq!(statuses(&mut link), vec![501]);
    link.handle_input(now, &request("MESSAGE", "Require: nope\r\n", ""));
    assert_eq!(statuses(&mut link), vec![420]);
    let zero = String::from_utf8(request("OPTIONS", "", ""))
        .unwrap()
        .replace("Max-Forwards: 69", "Max-Forwards: 0");
    link.handle_input(now, zero.as_bytes());
    assert_eq!(statuses(&mut link), vec![483]);
    let ev = events(&mut link);
    assert_eq!(
        ev.iter()
            .filter(|e| matches!(e, LinkEvent::Refused { .. }))
            .count(),
        4
    );
}

#[test]
fn benotify_is_handed_on_without_transaction() {
    let now = Instant::now();
    let mut link = Link::new(now, config(None), rng());
    link.handle_input(now, &request("BENOTIFY", "Event: presence\r\n", ""));
    assert!(out(&mut link).is_empty());
    assert!(matches!(
        events(&mut link)[..],
        [LinkEvent::Request {
            expects_response: false,
            ..
        }]
    ));
}

#[test]
fn unframable_stream_is_answered_then_closed() {
    let now = Instant::now();
    let mut link = Link::new(now, config(None), rng());
    link.handle_input(
        now,
        b"MESSAGE sip:a@gmail.test SIP/2.0\r\nVia: SIP/2.0/TLS h;branch=z9hG4bKx\r\nFrom: <sip:b@c>;tag=1\r\nTo: <sip:a@gmail.test>\r\nCall-ID: x\r\nCSeq: 1 MESSAGE\r\nContent-Length: -3\r\n\r\n",
    );
    assert_eq!(statuses(&mut link), vec![400]);
    assert!(matches!(
        events(&mut link).last(),
        Some(LinkEvent::Closed(LinkError::Framing(_)))
    ));
    assert!(link.is_closed());
}

#[test]
fn request_out_gets_via_and_its_response_comes_back() {
    let now = Instant::now();
    let mut link = Link::new(now, config(None), rng());
    let mut b = MessageBuilder::request(
        &Method::Message,
        &Uri::parse("sip:bob@contoso.test").unwrap(),
    );
    b.header("From", "<sip:alice@gmail.test>;tag=a")
        .unwrap()
        .header("To", "<sip:bob@contoso.test>")
        .unwrap()
        .header("Call-ID", "k1")
        .unwrap()
        .header("CSeq", "1 MESSAGE")
        .unwrap();
    let key = link.send_request(now, b).unwrap();
    let sent = out(&mut link);
    let req = Request::from_message(parse_message(&sent[0]).unwrap()).unwrap();
    let via = req.top_via().unwrap();
    assert_eq!(via.sent_by(), "gw.contoso.test:5061");
    assert_eq!(req.max_forwards, Some(70));
    let resp = response_to(&req, StatusCode::OK, Some("b"))
        .unwrap()
        .to_bytes();
    link.handle_input(now, &resp);
    match &events(&mut link)[..] {
        [LinkEvent::Response { key: k, response }] => {
            assert_eq!(k, &key);
            assert_eq!(response.status, StatusCode::OK);
        }
        other => panic!("{other:?}"),
    }
    // Timer F for an unanswered one.
    let mut b = MessageBuilder::request(
        &Method::Options,
        &Uri::parse("sip:sip.contoso.test").unwrap(),
    );
    b.header("From", "<sip:gw.contoso.test>;tag=a")
        .unwrap()
        .header("To", "<sip:sip.contoso.test>")
        .unwrap()
        .header("Call-ID", "k2")
        .unwrap()
        .header("CSeq", "1 OPTIONS")
        .unwrap();
    link.send_request(now, b).unwrap();
    let at = link.poll_timeout().unwrap();
    link.handle_timeout(at);
    assert!(matches!(
        events(&mut link)[..],
        [LinkEvent::ClientFailed {
            timer: Some(Timer::F),
            ..
        }]
    ));
}

#[test]
fn keepalive_pings_and_closes_without_pong() {
    let now = Instant::now();
    let every = Duration::from_secs(30);
    let mut link = Link::new(now, config(Some(every)), rng());
    assert_eq!(link.poll_timeout(), Some(now + every));
    link.handle_timeout(now + every);
    assert_eq!(out(&mut link), vec![b"\r\n\r\n".to_vec()]);
    link.handle_input(now + every, b"\r\n");
    assert_eq!(link.poll_timeout(), Some(now + every + every));
    link.handle_timeout(now + every + every);
    let _ = out(&mut link);
    let dead = now + every + every + PONG_TIMEOUT;
    link.handle_timeout(dead);
    assert!(matches!(
        events(&mut link)[..],
        [LinkEvent::Closed(LinkError::KeepaliveTimeout)]
    ));
}

#[test]
fn any_split_gives_the_same_answers() {
    let mut stream = Vec::new();
    stream.extend_from_slice(b"\r\n\r\n");
    stream.extend_from_slice(&request(
        "MESSAGE",
        "Content-Type: text/plain; charset=UTF-8\r\n",
        "h\u{e9}llo",
    ));
    stream.extend_from_slice(&request("REGISTER", "", ""));
    stream.extend_from_slice(&request("INVITE", "", ""));
    let now = Instant::now();
    let whole = {
        let mut link = Link::new(now, config(None), rng());
        link.handle_input(now, &stream);
        (out(&mut link), events(&mut link).len())
    };
    assert_eq!(whole.0.len(), 3, "pong, 405, 100");
    for cut in 0..=stream.len() {
        let mut link = Link::new(now, config(None), rng());
        link.handle_input(now, &stream[..cut]);
        link.handle_input(now, &stream[cut..]);
        let got = (out(&mut link), events(&mut link).len());
        assert_eq!(got.0.len(), whole.0.len(), "cut at {cut}");
        assert_eq!(got.1, whole.1, "cut at {cut}");
    }
}

#[test]
fn unanswered_requests_get_408_in_time() {
    let now = Instant::now();
    let mut link = Link::new(now, config(None), rng());
    link.handle_input(
        now,
        &request("MESSAGE", "Content-Type: text/plain\r\n", "hi"),
    );
    link.handle_input(now, &request("INVITE", "", ""));
    assert_eq!(statuses(&mut link), vec![100]);
    let _ = events(&mut link);
    assert_eq!(link.poll_timeout(), Some(now + TU_TIMEOUT));
    link.handle_timeout(now + TU_TIMEOUT);
    assert_eq!(statuses(&mut link), vec![408]);
    assert_eq!(link.poll_timeout(), Some(now + TU_INVITE_TIMEOUT));
    link.handle_timeout(now + TU_INVITE_TIMEOUT);
    assert_eq!(statuses(&mut link), vec![408]);
    assert!(matches!(
        events(&mut link)[..],
        [LinkEvent::Refused { .. }, LinkEvent::Refused { .. }]
    ));
}
