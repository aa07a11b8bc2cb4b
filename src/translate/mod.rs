//! Translation between XMPP and SIP, as pure functions: no I/O, no threads, no clocks.
//!
//! - [`address`]: JID ⇄ SIP URI (RFC 7247 §5, XEP-0106, RFC 7622).
//! - [`errors`]: XMPP stanza errors ⇄ SIP status codes (RFC 7247 §7), one table each way.
//! - [`im`]: `<message>` ⇄ SIP MESSAGE (RFC 7572), SDP for IM sessions.
//! - [`typing`]: XEP-0085 chat states ⇄ RFC 3994 isComposing and Microsoft KeyboardActivity.
//! - [`pidf`]: PIDF (RFC 3863) with RPID (RFC 4480) parsing and writing, bounded.
//! - [`presence`]: `<presence>` ⇄ PIDF and subscription states (RFC 8048).
//!
//! The router calls these; they return values or typed errors that map to protocol errors.

pub mod address;
pub mod errors;
pub mod im;
pub mod pidf;
pub mod presence;
pub mod typing;
