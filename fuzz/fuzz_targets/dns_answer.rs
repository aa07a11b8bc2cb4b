//! DNS answers as the resolver reads them (`dns::decode_answer`: hickory-proto's decoder, the
//! match against the question, CNAME chains, SRV records and additional-section hints,
//! A/AAAA addresses).
//!
//! Invariants: no panic; what comes out stays within the resolver's bounds (SRV records,
//! addresses per name) and hints only name targets of the SRV set.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xsgw::dns::{decode_answer, DecodedAnswer};

/// `dns::srv::MAX_SRV_RECORDS` and `dns::client::MAX_ADDRS`.
const MAX_ADDRS: usize = 64;

fuzz_target!(|data: &[u8]| {
    match decode_answer(data) {
        Some(Ok(DecodedAnswer::Srv(answer))) => {
            assert!(answer.records.len() <= xsgw::dns::srv::MAX_SRV_RECORDS);
            for (target, addrs) in &answer.hints {
                assert!(answer.records.iter().any(|r| &r.target == target));
                assert!(!addrs.is_empty() && addrs.len() <= MAX_ADDRS);
            }
        }
        Some(Ok(DecodedAnswer::Addresses(addrs))) => assert!(addrs.len() <= MAX_ADDRS),
        Some(Err(_)) | None => {}
    }
});
