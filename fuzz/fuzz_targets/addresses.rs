//! Addresses from either side: JIDs (`xmpp::jid::Jid`, RFC 7622, from stanza `from`/`to`)
//! and SIP URIs (`sip::Uri`, from Request-URI, From, To), and their mapping both ways
//! (`translate::address`, RFC 7247 §5 with XEP-0106 escaping), which decides who a message is
//! from and for ("no open relay").
//!
//! Invariants: no panic; a JID written out parses to the same JID; a URI mapped to a JID and
//! back to a URI maps to the same JID again; a JID mapped to a SIP URI never maps back to
//! another JID (an answer would reach someone else): the same bare JID (with its resource as
//! GRUU: the same full JID), or none where XEP-0106 cannot express it (`a\20@b.example`
//! unescapes to a trailing space, which no escaped localpart may have).
#![no_main]

use libfuzzer_sys::fuzz_target;
use xsgw::sip::Uri;
use xsgw::translate::address::{jid_to_sip, jid_to_sip_gruu, sip_to_jid};
use xsgw::xmpp::jid::Jid;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(jid) = text.parse::<Jid>() {
        let written = jid.to_string();
        assert_eq!(
            written.parse::<Jid>().ok(),
            Some(jid.clone()),
            "written as {written:?}"
        );
        if let Ok(uri) = jid_to_sip(&jid) {
            let again = Uri::parse(uri.as_str())
                .unwrap_or_else(|e| panic!("{jid} became {uri}, which does not parse: {e}"));
            if let Ok(back) = sip_to_jid(&again) {
                assert_eq!(back, jid.bare(), "{jid} via {uri}");
            }
        }
        if let Ok(uri) = jid_to_sip_gruu(&jid) {
            if let Ok(back) = sip_to_jid(&uri) {
                assert_eq!(back, jid, "{jid} via {uri}");
            }
        }
    }
    if let Ok(uri) = Uri::parse(text) {
        if let Ok(jid) = sip_to_jid(&uri) {
            let back = jid_to_sip_gruu(&jid)
                .unwrap_or_else(|e| panic!("{uri} became {jid}, which maps to no URI: {e}"));
            assert_eq!(
                sip_to_jid(&back).ok(),
                Some(jid.clone()),
                "{uri} became {jid}, then {back}"
            );
        }
    }
});
