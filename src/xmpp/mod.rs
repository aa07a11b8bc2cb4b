//! XMPP server-to-server: XML streams, stanzas, dialback (RFC 6120, XEP-0220, XEP-0185).
//!
//! Layers, bottom up:
//! - [`element`]: namespaced element tree and serializer.
//! - [`stream`]: bytes → `Start | Stanza | Whitespace | End`, restricted XML, limits.
//! - [`error`]: stream and stanza error condition tables and elements.
//! - [`dialback`]: dialback keys and the `db:result` / `db:verify` elements.
//! - [`jid`]: addresses (RFC 7622) and XEP-0106 escaping.
//! - [`session`]: the inbound S2S session state machine (sans-IO).

pub mod dialback;
pub mod element;
pub mod error;
mod fragment;
pub mod jid;
pub mod session;
pub mod stream;
