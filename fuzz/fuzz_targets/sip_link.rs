//! One SIP connection with the Edge (`sip::link::Link`: framing, keepalive, the UAS checks,
//! transactions, CANCEL, 400/4xx answers) configured as the gateway configures it, fed in
//! reads of random sizes; the transaction user answers some requests at once, leaves others
//! to the link's own timeout; time moves on and timers fire.
//!
//! Invariants: no panic; everything xsgw writes frames as SIP responses (and keepalive).
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use xsgw::sip::link::{Link, LinkConfig, LinkEvent};
use xsgw::sip::StatusCode;
use xsgw::sip::{response_to, Frame, FrameConfig, Framer, KeepaliveRole, Limits};
use xsgw_fuzz::{chunks, Rng};

fn config(pinging: bool) -> LinkConfig {
    LinkConfig {
        frame: FrameConfig {
            limits: Limits::default(),
            keepalive: if pinging {
                KeepaliveRole::Client
            } else {
                KeepaliveRole::Server
            },
        },
        policy: LinkConfig::gateway_policy(),
        keepalive: pinging.then_some(Duration::from_secs(30)),
        via_sent_by: "xsgw.a.example:5061".into(),
    }
}

/// What xsgw wrote, read back as the Edge would read it.
fn check_output(out: &[u8]) {
    let mut framer = Framer::new(FrameConfig {
        limits: Limits::default(),
        keepalive: KeepaliveRole::Client,
    });
    framer.push(out);
    loop {
        match framer.next_frame() {
            Ok(None) => break,
            // xsgw only answers here: 400s copy what they could salvage, so typing may fail
            // for what the request lacked; the syntax must hold.
            Ok(Some(Frame::Message(m))) => assert!(m.status().is_some()),
            Ok(Some(Frame::Ping | Frame::Pong)) => {}
            Ok(Some(other)) => panic!("xsgw wrote {other:?}"),
            Err(e) => panic!("xsgw wrote {:?}: {e}", String::from_utf8_lossy(out)),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut rng = Rng::from_input(data);
    let mut now = Instant::now();
    let mut seed = rng.bits();
    let random = Box::new(move |buf: &mut [u8]| {
        for b in buf.iter_mut() {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            *b = (seed >> 56) as u8;
        }
    });
    let mut link = Link::new(now, config(rng.one_in(3)), random);
    let mut out = Vec::new();
    for read in chunks(data, &mut rng) {
        now += Duration::from_millis(rng.below(20_000));
        if rng.one_in(8) {
            if let Some(deadline) = link.poll_timeout() {
                now = now.max(deadline);
                link.handle_timeout(now);
            }
        }
        link.handle_input(now, read);
        while let Some(event) = link.poll_event() {
            if let LinkEvent::Request {
                key,
                request,
                expects_response: true,
            } = event
            {
                if !rng.one_in(3) {
                    let status = if rng.one_in(2) {
                        StatusCode::OK
                    } else {
                        StatusCode::NOT_FOUND
                    };
                    if let Ok(answer) = response_to(&request, status, Some("t1")) {
                        let _ = link.respond(now, &key, &answer);
                    }
                }
            }
        }
        while link.poll_transmit(&mut out) {}
    }
    // Every timer fires; requests left unanswered get the link's 408.
    for _ in 0..4 {
        now += Duration::from_secs(200);
        link.handle_timeout(now);
        while link.poll_event().is_some() {}
    }
    while link.poll_transmit(&mut out) {}
    check_output(&out);
});
