//! `make bench`: throughput of the protocol cores on one core, printed as figures.
//!
//! Figures on this shared 2-core machine are noisy: compare ratios within one run, not
//! numbers across runs. The targets (DEVELOPERS.md): 50k messages/s each way on 2 cores with
//! TLS on both legs, so each parser must stay well above that on one core.

use std::hint::black_box;
use std::time::Instant;

use xsgw::bridge::{Action, Bridge, BridgeConfig, SipOutcome};
use xsgw::sip::{Frame, FrameConfig, Framer, Request};
use xsgw::xmpp::element::{Element, NS_SERVER};
use xsgw::xmpp::stream::{StreamEvent, StreamLimits, StreamParser};

const SIP_MESSAGE: &[u8] = b"MESSAGE sip:alice@gmail.test SIP/2.0\r\n\
Via: SIP/2.0/TLS 127.0.10.30:5061;branch=z9hG4bK776asdhds;rport\r\n\
Via: SIP/2.0/UDP 127.0.10.40:5060;branch=z9hG4bK1a2b;received=127.0.10.40\r\n\
Max-Forwards: 69\r\n\
Record-Route: <sip:127.0.10.30:5061;transport=tls;r2=on;lr>\r\n\
From: \"Bob\" <sip:bob@contoso.test>;tag=49583\r\n\
To: <sip:alice@gmail.test>\r\n\
Call-ID: asd88asd77a@127.0.10.40\r\n\
CSeq: 2 MESSAGE\r\n\
Content-Type: text/plain; charset=UTF-8\r\n\
Ms-Conversation-ID: AdS1zQ2Jqkpe3cZMQWaa4H2hUUHcbA==\r\n\
Content-Length: 38\r\n\
\r\n\
Hello Alice, are you there? & <yes> ok";

const STANZA: &[u8] =
    b"<message from='alice@gmail.test/phone' to='bob@contoso.test' type='chat' id='m1'>\
<body>Wherefore art thou, Romeo? &amp; more text here to be realistic</body>\
<active xmlns='http://jabber.org/protocol/chatstates'/></message>";

const STREAM_HEADER: &[u8] = b"<stream:stream xmlns='jabber:server' \
xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' \
to='contoso.test' from='gmail.test' version='1.0'>";

fn report(what: &str, n: usize, started: Instant) -> f64 {
    let secs = started.elapsed().as_secs_f64();
    let rate = n as f64 / secs;
    println!("{what:<44} {n:>9} in {secs:>6.3} s = {rate:>10.0} /s");
    rate
}

fn sip_framed_and_typed(n: usize) -> f64 {
    let batch: Vec<u8> = SIP_MESSAGE.repeat(1000);
    let started = Instant::now();
    let mut count = 0usize;
    for _ in 0..n / 1000 {
        let mut framer = Framer::new(FrameConfig::default());
        for chunk in batch.chunks(16 * 1024) {
            framer.push(chunk);
            while let Ok(Some(frame)) = framer.next_frame() {
                if let Frame::Message(m) = frame {
                    let request = Request::from_message(m).expect("valid request");
                    black_box(request.body().len());
                    count += 1;
                }
            }
        }
    }
    assert_eq!(count, n, "every message framed");
    report("SIP: requests framed and typed", n, started)
}

fn xmpp_stanzas(n: usize) -> f64 {
    let batch: Vec<u8> = STANZA.repeat(100);
    let mut parser = StreamParser::new(StreamLimits::default());
    parser.feed(STREAM_HEADER).expect("header fits");
    assert!(matches!(
        parser.next_event(),
        Ok(Some(StreamEvent::Start(_)))
    ));
    let started = Instant::now();
    let mut count = 0usize;
    for _ in 0..n / 100 {
        for chunk in batch.chunks(4096) {
            parser.feed(chunk).expect("within limits");
            while let Some(event) = parser.next_event().expect("well-formed") {
                if let StreamEvent::Stanza(stanza) = event {
                    black_box(&stanza);
                    count += 1;
                }
            }
        }
    }
    assert_eq!(count, n, "every stanza parsed");
    report("XMPP: stanzas scanned and parsed", n, started)
}

fn bridge() -> Bridge {
    let text = "[gateway]\nfqdn = gw.contoso.test\nsip_domains = contoso.test\n\
                [sip]\nedge = sip.contoso.test:5061\nim_mode = page\n[partner gmail.test]\n\
                [quota]\nsubscriptions = 200000\nwaiting_deliveries = 100000\nstanza_rate = 0\n";
    let config = xsgw::config::parse(text, std::path::Path::new("bench.ini"))
        .expect("bench config")
        .0;
    let mut n = 0u64;
    Bridge::new(
        BridgeConfig::from_config(&config).expect("fqdn"),
        Box::new(move |buf: &mut [u8]| {
            for b in buf.iter_mut() {
                n = n
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                *b = (n >> 56) as u8;
            }
        }),
        Instant::now(),
        0,
    )
}

/// SIP MESSAGE → stanza → written → ping answered → 200, a ping covering each 100 messages
/// (what a busy domain pair sees).
fn bridge_sip_to_xmpp(n: usize) -> f64 {
    let mut b = bridge();
    let request = Request::from_message(xsgw::sip::message::parse_message(SIP_MESSAGE).unwrap())
        .expect("valid request");
    let now = Instant::now();
    let started = Instant::now();
    let mut answered = 0usize;
    let mut receipts = Vec::with_capacity(100);
    let mut id = 0u64;
    for _ in 0..n / 100 {
        for _ in 0..100 {
            id += 1;
            b.handle_sip_request(now, id, &request);
            while let Some(action) = b.poll_action() {
                if let Action::SendStanza {
                    receipt: Some(r), ..
                } = action
                {
                    receipts.push(r);
                }
            }
        }
        b.handle_written(now, &receipts);
        receipts.clear();
        let mut ping = None;
        while let Some(action) = b.poll_action() {
            if let Action::SendStanza { stanza, .. } = action {
                ping = stanza.attr("id").map(str::to_owned);
            }
        }
        let pong = Element::new("iq", NS_SERVER)
            .with_attr("type", "result")
            .with_attr("from", "gmail.test")
            .with_attr("to", "contoso.test")
            .with_attr("id", ping.expect("a ping per batch"));
        b.handle_stanza(now, "contoso.test", "gmail.test", pong);
        while let Some(action) = b.poll_action() {
            if matches!(action, Action::Respond { .. }) {
                answered += 1;
            }
        }
    }
    assert_eq!(answered, n, "every request answered");
    report("bridge: SIP MESSAGE → stanza → 200", n, started)
}

/// Stanza → page-mode MESSAGE → 200 from the Edge.
fn bridge_xmpp_to_sip(n: usize) -> f64 {
    let mut b = bridge();
    let stanza = xsgw::xmpp::stream::parse_fragment(STANZA).expect("stanza");
    let ok = xsgw::sip::Response::from_message(
        xsgw::sip::message::parse_message(
            b"SIP/2.0 200 OK\r\nVia: SIP/2.0/TLS gw.contoso.test:5061;branch=z9hG4bKa\r\n\
From: <sip:alice@gmail.test>;tag=1\r\nTo: <sip:bob@contoso.test>;tag=2\r\n\
Call-ID: x\r\nCSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n",
        )
        .unwrap(),
    )
    .expect("response");
    let now = Instant::now();
    let started = Instant::now();
    for _ in 0..n {
        b.handle_stanza(now, "contoso.test", "gmail.test", stanza.clone());
        while let Some(action) = b.poll_action() {
            if let Action::SendSip { tag, request } = action {
                black_box(request.to_bytes());
                b.handle_sip_outcome(now, tag, SipOutcome::Final(Box::new(ok.clone())));
            }
        }
    }
    assert_eq!(
        b.stats().xmpp_to_sip_delivered,
        n as u64,
        "every message delivered"
    );
    report("bridge: stanza → SIP MESSAGE (bytes) → 200", n, started)
}

/// Presence from XMPP users to SIP users who watch them: each stanza becomes one NOTIFY with
/// PIDF, with `subscribers` approved subscriptions in the table (lookups are per pair).
fn bridge_presence_to_notify(subscribers: usize, n: usize) -> f64 {
    let mut b = bridge();
    let now = Instant::now();
    for i in 0..subscribers {
        let text = format!(
            "SUBSCRIBE sip:x{i}@gmail.test SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.10.30:5061;branch=z9hG4bKs{i}\r\n\
Max-Forwards: 69\r\nFrom: <sip:u{i}@contoso.test>;tag=t{i}\r\nTo: <sip:x{i}@gmail.test>\r\n\
Call-ID: c{i}\r\nCSeq: 1 SUBSCRIBE\r\nContact: <sip:u{i}@127.0.10.40>\r\nEvent: presence\r\n\
Expires: 3600\r\nContent-Length: 0\r\n\r\n"
        );
        let request =
            Request::from_message(xsgw::sip::message::parse_message(text.as_bytes()).unwrap())
                .expect("SUBSCRIBE");
        b.handle_sip_request(now, i as u64, &request);
        let approve = Element::new("presence", NS_SERVER)
            .with_attr("type", "subscribed")
            .with_attr("from", format!("x{i}@gmail.test"))
            .with_attr("to", format!("u{i}@contoso.test"));
        b.handle_stanza(now, "contoso.test", "gmail.test", approve);
        while b.poll_action().is_some() {}
    }
    assert_eq!(b.subscriptions(), subscribers);
    let started = Instant::now();
    let mut notifies = 0usize;
    for k in 0..n {
        let i = k % subscribers;
        let presence = Element::new("presence", NS_SERVER)
            .with_attr("from", format!("x{i}@gmail.test/phone"))
            .with_attr("to", format!("u{i}@contoso.test"))
            .with_child(Element::new("show", NS_SERVER).with_text("away"))
            .with_child(Element::new("status", NS_SERVER).with_text("In a meeting"));
        b.handle_stanza(now, "contoso.test", "gmail.test", presence);
        while let Some(action) = b.poll_action() {
            if let Action::SendSip { tag, request } = action {
                black_box(request.to_bytes());
                notifies += 1;
                b.handle_sip_outcome(now, tag, SipOutcome::Failed("bench".into()));
            }
        }
    }
    assert_eq!(notifies, n, "one NOTIFY per presence");
    report(
        &format!("bridge: presence → NOTIFY ({subscribers} subs)"),
        n,
        started,
    )
}

fn subscribe_request(i: usize, domain: &str) -> Request {
    let text = format!(
        "SUBSCRIBE sip:x{i}@{domain} SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.10.30:5061;branch=z9hG4bKs{i}\r\n\
Max-Forwards: 69\r\nFrom: <sip:u{i}@contoso.test>;tag=t{i}\r\nTo: <sip:x{i}@{domain}>\r\n\
Call-ID: c{i}\r\nCSeq: 1 SUBSCRIBE\r\nContact: <sip:u{i}@127.0.10.40>\r\nEvent: presence\r\n\
Expires: 3600\r\nContent-Length: 0\r\n\r\n"
    );
    Request::from_message(xsgw::sip::message::parse_message(text.as_bytes()).unwrap())
        .expect("SUBSCRIBE")
}

/// The router thread's cost of one subscription change (a new SUBSCRIBE and its save) with
/// `held` subscriptions in the table, each change a second after the last (saves are at most
/// once a second): median and worst of `changes`, in milliseconds. What the router spends
/// here, every message waiting in its inbox waits too.
fn bridge_subscription_change(held: usize, changes: usize) -> (f64, f64) {
    let mut b = bridge();
    let mut now = Instant::now();
    for i in 0..held {
        b.handle_sip_request(now, i as u64, &subscribe_request(i, "gmail.test"));
        let approve = Element::new("presence", NS_SERVER)
            .with_attr("type", "subscribed")
            .with_attr("from", format!("x{i}@gmail.test"))
            .with_attr("to", format!("u{i}@contoso.test"));
        b.handle_stanza(now, "contoso.test", "gmail.test", approve);
        while b.poll_action().is_some() {}
    }
    assert_eq!(b.subscriptions(), held);
    // What the set-up changed is saved first: each change below is measured alone.
    now += std::time::Duration::from_millis(1100);
    b.flush(now);
    while b.poll_action().is_some() {}
    let mut costs = Vec::with_capacity(changes);
    let mut saved = 0usize;
    for k in 0..changes {
        now += std::time::Duration::from_millis(1100);
        let request = subscribe_request(held + k, "gmail.test");
        let started = Instant::now();
        b.handle_sip_request(now, (held + k) as u64, &request);
        while let Some(action) = b.poll_action() {
            if matches!(action, Action::SaveSubscriptions(..)) {
                saved += 1;
            }
            black_box(action);
        }
        costs.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    assert_eq!(saved, changes, "each change saved");
    costs.sort_by(|a, b| a.total_cmp(b));
    let (median, worst) = (costs[changes / 2], costs[changes - 1]);
    println!(
        "{:<44} median {median:>8.3} ms, worst {worst:>8.3} ms",
        format!("bridge: 1 subscription change ({held} subs)")
    );
    (median, worst)
}

fn main() {
    println!("xsgw protocol cores, one thread each (noisy machine: compare ratios)");
    let sip = sip_framed_and_typed(200_000);
    let xmpp = xmpp_stanzas(200_000);
    let to_xmpp = bridge_sip_to_xmpp(200_000);
    let to_sip = bridge_xmpp_to_sip(200_000);
    let small = bridge_presence_to_notify(100, 100_000);
    let large = bridge_presence_to_notify(20_000, 100_000);
    println!(
        "presence with 20,000 subscriptions runs at {:.2}x the speed with 100",
        large / small
    );
    let (_, few) = bridge_subscription_change(1_000, 20);
    let (_, many) = bridge_subscription_change(199_980, 20);
    println!(
        "router time per subscription change, worst: {few:.3} ms with 1,000 subscriptions, {many:.3} ms with 200,000"
    );
    let target = 50_000.0;
    println!(
        "headroom over the 50k/s target: SIP {:.1}x, XMPP {:.1}x, bridge SIP→XMPP {:.1}x, XMPP→SIP {:.1}x",
        sip / target,
        xmpp / target,
        to_xmpp / target,
        to_sip / target
    );
}
