//! The IM-session SDP of an INVITE or its answer (`translate::im::parse_im_sdp`).
//!
//! Invariants: no panic; the answer xsgw builds to an offer it accepts parses again, with
//! the types both sides carry.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};

use libfuzzer_sys::fuzz_target;
use xsgw::sip::Uri;
use xsgw::translate::im::{im_answer, parse_im_sdp};

fuzz_target!(|data: &[u8]| {
    let Ok(offer) = parse_im_sdp(data) else {
        return;
    };
    let types = offer.common_types();
    let Ok(local) = Uri::parse("sip:bob@b.example") else {
        return;
    };
    let address = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    if let Ok(answer) = im_answer(&offer, &local, address) {
        let parsed = parse_im_sdp(answer.as_bytes())
            .unwrap_or_else(|e| panic!("xsgw would answer {answer:?}: {e}"));
        assert_eq!(parsed.path.as_deref(), Some(local.as_str()));
        assert_eq!(parsed.common_types(), types);
    }
});
