//! SIP toward the Access Edge: messages, framing, validation, transactions, dialogs (RFC 3261),
//! and the sans-IO connection ([`link`]) that ties them together.
//!
//! This module is sans-IO: it turns octets into typed messages and typed messages into
//! octets; it owns no socket, thread or clock.
//!
//! ```text
//!  TLS bytes ─▶ frame::try_parse ─▶ Frame::{Message, Invalid, Ping, Pong}
//!                                        │
//!                     message::Message (lossless view: start line, fields, body)
//!                                        │  request::Request::from_message  ── 400 (MessageError + AnswerContext)
//!                                        ▼
//!                     request::Request / Response (typed)
//!                                        │  validate::validate_request  ── 505/483/416/405/420/415/406
//!                                        ▼
//!                     transaction::Transactions (§17) ◀─▶ the gateway ─▶ build::MessageBuilder ─▶ octets
//! ```
//!
//! Layers and scope:
//! - `grammar` (private), [`name`], [`uri`], [`header`]: RFC 3261 §25 grammar, header
//!   names, URIs, typed header values.
//! - [`message`]: the lossless view and [`message::parse_message`] (datagram semantics,
//!   fuzzing entry point); [`frame`]: stream framing by Content-Length and RFC 5626 keepalive.
//! - [`request`]: validated [`request::Request`] / [`request::Response`].
//! - [`validate`]: the policy checks of a UAS (RFC 3261 §8.2).
//! - [`build`]: canonical serialization and responses to requests (§8.2.6).
//! - [`status`]: status codes and reason phrases.
//! - [`transaction`]: client and server transactions over a reliable transport (§17).
//! - [`dialog`]: dialogs for INVITE sessions and subscriptions (§12, RFC 6665).
//! - [`link`]: one connection with the Edge: framing, keepalive, refusals, transactions.
//!
//! Out of scope here: SDP, authentication, proxying.

pub mod build;
pub mod dialog;
pub mod frame;
mod grammar;
pub mod header;
pub mod link;
pub mod message;
pub mod name;
pub mod request;
pub mod status;
pub mod transaction;
pub mod uri;
pub mod validate;

#[cfg(test)]
mod rfc4475_tests;

pub use build::{response_to, response_to_context, BuildError, MessageBuilder};
pub use frame::{try_parse, Frame, FrameConfig, FrameError, Framer, KeepaliveRole};
pub use grammar::{Param, Params, SyntaxError};
pub use header::{CSeq, Contact, MediaType, NameAddr, TokenParams, Via};
pub use message::{
    parse_message, parse_message_with, AnswerContext, Limit, Limits, Message, ParseError,
};
pub use request::{HeaderError, Incoming, MessageError, Method, Request, Response};
pub use status::StatusCode;
pub use uri::{Scheme, Uri};
pub use validate::{validate_request, Policy, Refusal};
