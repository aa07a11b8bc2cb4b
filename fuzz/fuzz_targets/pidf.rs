//! PIDF presence documents of NOTIFY bodies (`translate::pidf::Pidf::parse`, RFC 3863 with
//! the data model and RPID parts xsgw reads).
//!
//! Invariants: no panic; a document xsgw accepted and writes back (`to_xml`) parses to the
//! same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xsgw::translate::pidf::Pidf;

fuzz_target!(|data: &[u8]| {
    let Ok(pidf) = Pidf::parse(data) else {
        return;
    };
    if let Ok(xml) = pidf.to_xml() {
        let again =
            Pidf::parse(xml.as_bytes()).unwrap_or_else(|e| panic!("xsgw wrote {xml:?}: {e}"));
        assert_eq!(again, pidf, "written as {xml:?}");
    }
});
