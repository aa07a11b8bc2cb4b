//! The XMPP stream scanner (`xmpp::stream::StreamParser`), fed in reads of random sizes with
//! the limits the gateway configures (`[xmpp] max_stanza` from its minimum to its default).
//!
//! Invariants: no panic; an event never consumes more than `max_stanza` bytes (header:
//! `max_header`); the events do not depend on how the input was split; every stanza written
//! back out with `to_stream_xml` parses to the same element.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xsgw::xmpp::stream::{parse_fragment, StreamError, StreamEvent, StreamLimits, StreamParser};
use xsgw_fuzz::{chunks, Rng};

fn limits(rng: &mut Rng) -> StreamLimits {
    let max_stanza = match rng.below(3) {
        0 => 4096,
        1 => 16 * 1024,
        _ => 256 * 1024,
    };
    StreamLimits {
        max_stanza,
        ..StreamLimits::default()
    }
}

/// Events with runs of whitespace folded (their number depends on the split), and the error
/// condition that ended the stream, if any.
fn run(data: &[u8], reads: &[&[u8]], limits: &StreamLimits) -> (Vec<StreamEvent>, Option<String>) {
    let mut parser = StreamParser::new(limits.clone());
    let mut events: Vec<StreamEvent> = Vec::new();
    let mut fed = 0usize;
    let mut consumed = 0usize;
    for read in reads {
        if let Err(e) = parser.feed(read) {
            return (events, Some(format!("{:?}", e.condition())));
        }
        fed += read.len();
        loop {
            match parser.next_event() {
                Ok(None) => break,
                Ok(Some(event)) => {
                    let now_consumed = fed - parser.unconsumed_len();
                    let len = now_consumed - consumed;
                    consumed = now_consumed;
                    match &event {
                        StreamEvent::Stanza(e) => {
                            assert!(
                                len <= limits.max_stanza,
                                "stanza of {len} bytes > max_stanza {}",
                                limits.max_stanza
                            );
                            round_trip(e);
                        }
                        StreamEvent::Start(_) => assert!(
                            len <= limits.max_header,
                            "header of {len} bytes > max_header {}",
                            limits.max_header
                        ),
                        _ => {}
                    }
                    if event == StreamEvent::Whitespace
                        && events.last() == Some(&StreamEvent::Whitespace)
                    {
                        continue;
                    }
                    events.push(event);
                }
                Err(e) => {
                    // Final: asked again, the same error.
                    assert_eq!(parser.next_event().err(), Some(e.clone()));
                    return (events, Some(format!("{:?}", e.condition())));
                }
            }
        }
    }
    assert_eq!(consumed + parser.unconsumed_len(), data.len());
    (events, None)
}

/// What xsgw writes for a parsed stanza parses back to the same element (limits aside: the
/// written form may need namespace declarations the received one had on the header).
fn round_trip(e: &xsgw::xmpp::element::Element) {
    let xml = e.to_stream_xml();
    match parse_fragment(xml.as_bytes()) {
        Ok(again) => assert_eq!(&again, e, "written as {xml:?}"),
        Err(
            StreamError::TooLarge { .. }
            | StreamError::TooManyAttributes { .. }
            | StreamError::TooManyNodes { .. },
        ) => {}
        Err(err) => panic!("xsgw wrote {xml:?}, which does not parse: {err}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let mut rng = Rng::from_input(data);
    let limits = limits(&mut rng);
    let reads = chunks(data, &mut rng);
    let split = run(data, &reads, &limits);
    if reads.len() > 1 {
        let whole = run(data, &[data], &limits);
        assert_eq!(split, whole, "events depend on how the input was split");
    }
});
