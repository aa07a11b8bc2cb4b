//! The fragment parser behind every stanza (`xmpp::stream::parse_fragment`: the scanner's
//! checks, then `xmpp::fragment`), as used on stored XML and on PIDF/isComposing bodies.
//!
//! Invariants: no panic; an element that parses, written back with `to_stream_xml`, parses
//! to the same element.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xsgw::xmpp::stream::{parse_fragment, StreamError};

fuzz_target!(|data: &[u8]| {
    let Ok(element) = parse_fragment(data) else {
        return;
    };
    let xml = element.to_stream_xml();
    match parse_fragment(xml.as_bytes()) {
        Ok(again) => assert_eq!(again, element, "written as {xml:?}"),
        Err(
            StreamError::TooLarge { .. }
            | StreamError::TooManyAttributes { .. }
            | StreamError::TooManyNodes { .. },
        ) => {}
        Err(err) => panic!("xsgw wrote {xml:?}, which does not parse: {err}"),
    }
});
