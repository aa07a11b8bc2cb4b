//! SIP stream framing (`sip::Framer`, Content-Length and RFC 5626 keepalive) with the
//! gateway's limits (`[sip] max_message`, `max_headers` defaults), fed in reads of random
//! sizes, as the server or the pinging side; then every framed message through
//! [`xsgw_fuzz::check_sip_message`].
//!
//! Invariants: no panic; as the server side, frames do not depend on how the input was
//! split; at most `max_message_len` bytes are buffered; canonical form round trip; every
//! answer xsgw would send (400 for an invalid frame or before closing) parses.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xsgw::sip::StatusCode;
use xsgw::sip::{
    response_to_context, AnswerContext, Frame, FrameConfig, Framer, KeepaliveRole, Limits,
};
use xsgw_fuzz::{check_our_response, check_sip_message, chunks, Rng};

/// The frames, and when framing failed the answer sent before closing (the error itself may
/// name a different fault depending on how much was seen: a bad first line or a bare LF
/// further on; either closes the connection).
fn run(reads: &[&[u8]], config: FrameConfig) -> (Vec<Frame>, Option<Option<AnswerContext>>) {
    let mut framer = Framer::new(config);
    let mut frames = Vec::new();
    for read in reads {
        framer.push(read);
        loop {
            match framer.next_frame() {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(e) => {
                    if let Some(ctx) = e.answer() {
                        if let Ok(b) = response_to_context(ctx, StatusCode::BAD_REQUEST, None, None)
                        {
                            check_our_response(&b.to_bytes(), false);
                        }
                    }
                    return (frames, Some(e.answer().cloned()));
                }
            }
        }
        assert!(
            framer.buffered() <= config.limits.max_message_len + read.len(),
            "{} bytes buffered",
            framer.buffered()
        );
    }
    (frames, None)
}

fuzz_target!(|data: &[u8]| {
    let mut rng = Rng::from_input(data);
    let keepalive = if rng.one_in(3) {
        KeepaliveRole::Client
    } else {
        KeepaliveRole::Server
    };
    // The gateway's defaults (`[sip] max_message = 64KiB`, `max_headers = 200`), or small
    // ones so that every limit is reached by short inputs.
    let limits = if rng.one_in(2) {
        Limits::default()
    } else {
        Limits {
            max_message_len: 1024,
            max_headers: 16,
            max_line_len: 256,
        }
    };
    let config = FrameConfig { limits, keepalive };
    let reads = chunks(data, &mut rng);
    let (frames, error) = run(&reads, config);
    for frame in &frames {
        match frame {
            Frame::Message(m) => check_sip_message(m),
            Frame::Invalid {
                answer: Some(ctx), ..
            } => {
                if let Ok(b) = response_to_context(ctx, StatusCode::BAD_REQUEST, None, None) {
                    check_our_response(&b.to_bytes(), false);
                }
            }
            _ => {}
        }
    }
    if keepalive == KeepaliveRole::Server && reads.len() > 1 {
        assert_eq!(
            (frames, error),
            run(&[data], config),
            "frames depend on how the input was split"
        );
    }
});
