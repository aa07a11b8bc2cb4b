//! XMPP server-to-server: XML streams, stanzas, dialback (RFC 6120, XEP-0220, XEP-0185).
//!
//! Layers, bottom up:
//! - [`element`]: namespaced element tree and serializer.
//! - [`stream`]: bytes → `Start | Stanza | Whitespace | End`, restricted XML, limits.
//! - [`error`]: stream and stanza error condition tables and elements.

pub mod element;
pub mod error;
pub mod stream;
