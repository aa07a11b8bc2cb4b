//! Typing notifications from SIP: RFC 3994 isComposing documents and Microsoft
//! `KeyboardActivity` INFO bodies (`translate::typing`).
//!
//! Invariants: no panic; what xsgw writes back (`to_xml`) parses to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xsgw::translate::typing::{IsComposing, KeyboardActivity};

fuzz_target!(|data: &[u8]| {
    if let Ok(doc) = IsComposing::parse(data) {
        let xml = doc.to_xml();
        let again = IsComposing::parse(xml.as_bytes())
            .unwrap_or_else(|e| panic!("xsgw wrote {xml:?}: {e}"));
        assert_eq!(again, doc, "written as {xml:?}");
        let _ = doc.chat_state();
        let _ = doc.active_for();
    }
    if let Ok(activity) = KeyboardActivity::parse(data) {
        let xml = activity.to_xml();
        assert_eq!(KeyboardActivity::parse(xml.as_bytes()).ok(), Some(activity));
    }
});
