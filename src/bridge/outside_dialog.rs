//! The start of every SIP request the bridge sends outside a dialog (a page-mode MESSAGE, the
//! INVITE of an IM session, a new SUBSCRIBE or fetch): request line, From with our new tag, To,
//! Call-ID and CSeq 1, for IM (`im.rs`) and presence (`presence.rs`) alike.
//!
//! Owns: how those first headers look and where their randomness comes from (the bridge's
//! random source: 64-bit tags, 96-bit Call-IDs under `[gateway] fqdn`). Out of scope: the
//! headers and body each request adds after them, and requests inside a dialog
//! (`crate::sip::dialog`).

use super::Bridge;
use crate::sip::{MessageBuilder, Method, Uri};

/// From, To, Call-ID and CSeq of a request outside any dialog; returns our From tag.
pub(super) fn fresh_request(
    b: &mut Bridge,
    method: &Method,
    from: &Uri,
    to: &Uri,
    call_id: Option<String>,
) -> Result<(MessageBuilder, String, String), crate::sip::BuildError> {
    let tag = b.random_hex(8);
    let call_id = call_id.unwrap_or_else(|| format!("{}@{}", b.random_hex(12), b.config.fqdn));
    let mut m = MessageBuilder::request(method, to);
    m.header("From", &format!("<{from}>;tag={tag}"))?
        .header("To", &format!("<{to}>"))?
        .header("Call-ID", &call_id)?
        .header("CSeq", &format!("1 {}", method.as_str()))?;
    Ok((m, tag, call_id))
}
