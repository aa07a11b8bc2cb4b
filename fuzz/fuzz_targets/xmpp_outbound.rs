//! The initiating side of an S2S stream (`xmpp::outbound::OutboundSession`), both for
//! stanzas and for a dialback `db:verify`, as the gateway's outbound thread drives it: the
//! peer's bytes in reads of random sizes, STARTTLS with a valid or invalid certificate,
//! stanzas queued before and after authentication, time moving on and deadlines firing.
//!
//! Invariants: no panic; every stanza handed to the session comes back exactly once, as
//! refused at `send`, written (after authentication only) or unsent; nothing comes out after
//! `Closed`; everything xsgw wrote is well-formed XML.
#![no_main]

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use xsgw::xmpp::element::{Element, NS_SERVER};
use xsgw::xmpp::outbound::{OutboundConfig, OutboundEvent, OutboundPurpose, OutboundSession, Want};
use xsgw::xmpp::session::DialbackSecret;
use xsgw::xmpp::stream::StreamLimits;
use xsgw_fuzz::{check_xmpp_output, chunks, Rng};

fn want(rng: &mut Rng) -> Want {
    match rng.below(3) {
        0 => Want::Required,
        1 => Want::Optional,
        _ => Want::Disabled,
    }
}

fn config(rng: &mut Rng) -> OutboundConfig {
    OutboundConfig {
        local: "a.example".into(),
        remote: "b.example".into(),
        tls: want(rng),
        sasl: want(rng),
        dialback: want(rng),
        tls_available: !rng.one_in(4),
        dialback_secret: DialbackSecret("s3cr3t".into()),
        handshake_timeout: Duration::from_secs(30),
        keepalive: Duration::from_secs(60),
        idle_timeout: Duration::from_secs(600),
        // The gateway's queue per outbound stream (gateway::s2s::OUTBOUND_QUEUE) is 256;
        // a small one reaches "full" too.
        max_queue: if rng.one_in(2) { 4 } else { 256 },
        limits: StreamLimits {
            max_stanza: if rng.one_in(2) { 4096 } else { 256 * 1024 },
            ..StreamLimits::default()
        },
    }
}

fn chat(n: u64) -> Element {
    Element::new("message", NS_SERVER)
        .with_attr("from", "u@a.example")
        .with_attr("to", "v@b.example")
        .with_attr("id", n.to_string())
        .with_child(Element::new("body", NS_SERVER).with_text(format!("<&'\"]]> {n}")))
}

fuzz_target!(|data: &[u8]| {
    let mut rng = Rng::from_input(data);
    let mut now = Instant::now();
    let purpose = if rng.one_in(4) {
        OutboundPurpose::Verify {
            stream_id: "in1".into(),
            key: "0123abcd".into(),
        }
    } else {
        OutboundPurpose::Stanzas
    };
    let mut session = OutboundSession::new(config(&mut rng), purpose, now);
    let mut out = Vec::new();
    let mut receipts = 0u64;
    let mut back: BTreeSet<u64> = BTreeSet::new();
    let take_back = |receipt: u64, back: &mut BTreeSet<u64>| {
        assert!(back.insert(receipt), "stanza {receipt} came back twice");
    };
    let mut authenticated = false;
    let mut closed = false;
    for read in chunks(data, &mut rng) {
        now += Duration::from_millis(rng.below(5000));
        for _ in 0..rng.below(3) {
            receipts += 1;
            if let Err((_, r)) = session.send_with(now, chat(receipts), Some(receipts)) {
                take_back(r.unwrap_or_default(), &mut back);
            }
        }
        if rng.one_in(16) {
            if let Some(deadline) = session.poll_timeout() {
                now = now.max(deadline);
                session.handle_timeout(now);
            }
        }
        session.handle_input(now, read);
        while let Some(event) = session.poll_event() {
            assert!(!closed, "event after Closed: {event:?}");
            match event {
                OutboundEvent::StartTls => {
                    let _ = session.take_tls_bytes();
                    session.handle_tls_established(now, !rng.one_in(3));
                }
                OutboundEvent::Authenticated { .. } => authenticated = true,
                OutboundEvent::Verified(_) => {}
                OutboundEvent::Closed(_) => {
                    assert!(session.is_closed());
                    closed = true;
                }
            }
        }
        session.poll_transmit(&mut out);
        for (receipt, _) in session.take_written() {
            assert!(
                authenticated,
                "stanza {receipt} written before authentication"
            );
            take_back(receipt, &mut back);
        }
    }
    session.close();
    session.poll_transmit(&mut out);
    for (receipt, _) in session.take_written() {
        take_back(receipt, &mut back);
    }
    for (_, receipt) in session.take_unsent() {
        take_back(receipt.unwrap_or_default(), &mut back);
    }
    let all: BTreeSet<u64> = (1..=receipts).collect();
    assert_eq!(back, all, "stanzas lost");
    check_xmpp_output(&out);
});
