//! One SIP message as a datagram (`sip::parse_message`: RFC 3261 §7 syntax and limits), then
//! typing (`sip::Incoming`: mandatory headers, §20 values), the gateway's UAS checks
//! (`sip::validate::validate_request`) and, for a MESSAGE, its translation to an XMPP
//! `<message/>` (`translate::im::sip_to_message`), with the limits the gateway configures.
//!
//! Invariants: no panic; see [`xsgw_fuzz::check_sip_message`]; a translated message
//! serialises to XML that parses back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xsgw::sip::{parse_message, Incoming, Method};
use xsgw::translate::im::{sip_to_message, FromSip, ImLimits};
use xsgw::xmpp::jid::Jid;
use xsgw::xmpp::stream::parse_fragment;
use xsgw_fuzz::check_sip_message;

fuzz_target!(|data: &[u8]| {
    let Ok(m) = parse_message(data) else {
        return;
    };
    check_sip_message(&m);
    let Ok(Incoming::Request(req)) = Incoming::from_message(m) else {
        return;
    };
    if req.method != Method::Message {
        return;
    }
    let (Ok(from), Ok(to)) = (
        "alice@a.example".parse::<Jid>(),
        "bob@b.example".parse::<Jid>(),
    ) else {
        return;
    };
    let stanza = match sip_to_message(&req, &from, &to, &ImLimits::default()) {
        Ok(FromSip::Message(stanza)) | Ok(FromSip::Typing { stanza, .. }) => stanza,
        Err(_) => return,
    };
    let xml = stanza.to_stream_xml();
    assert!(
        parse_fragment(xml.as_bytes()).is_ok(),
        "xsgw would write {xml:?}"
    );
});
