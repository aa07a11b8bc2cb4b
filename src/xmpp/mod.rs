//! XMPP server-to-server: XML streams, stanzas, dialback (RFC 6120, XEP-0220, XEP-0185).
//!
//! Everything here is sans-IO: bytes and `now: Instant` in, bytes and events out.
//!
//! Layers, bottom up:
//! - [`element`]: namespaced element tree and its serializer (`Element::to_stream_xml`).
//! - [`stream`]: `StreamParser`: bytes → `Start | Stanza | Whitespace | End`, restricted XML
//!   refused, every input bounded (`StreamLimits`); `StreamHeader::to_xml` for our side.
//! - `fragment` (private): the parser for one delimited stanza that `stream` uses.
//! - `parse_error` (private): `StreamError`, why a stream cannot be read further, returned by
//!   both `stream` and `fragment` (published as `stream::StreamError`).
//! - [`error`]: stream and stanza error condition tables, `<stream:error>` and `<error/>`
//!   elements, `error_reply`.
//! - [`dialback`]: dialback keys (`dialback_key`, `verify_key`) and `db:result` / `db:verify`.
//! - [`jid`]: addresses (RFC 7622) and XEP-0106 escaping.
//! - [`session`]: `InboundSession`, the receiving side of an S2S stream (state machine),
//!   with per-peer policy (`PeerPolicy`) applied at the stream header and each `db:result`.
//! - [`outbound`]: `OutboundSession`, the initiating side: STARTTLS, SASL EXTERNAL or
//!   dialback, the bounded queue, keepalive and idle close; also the receiving server's
//!   `db:verify` stream (`OutboundPurpose::Verify`).
//!
//! ```text
//!  shell thread: read ─▶ InboundSession::handle_input ─▶ StreamParser ─▶ fragment ─▶ Element
//!                write ◀─ poll_transmit ◀─ Element::to_stream_xml     poll_event ─▶ router
//!  router ─▶ OutboundSession::send ─▶ poll_transmit ─▶ write      (shells: crate::gateway::s2s)
//! ```

pub mod dialback;
pub mod element;
pub mod error;
mod fragment;
pub mod jid;
pub mod outbound;
mod parse_error;
pub mod session;
pub mod stream;
