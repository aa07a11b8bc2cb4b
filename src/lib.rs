//! xsgw: an XMPP ⇄ SIP federation gateway.
//!
//! ```text
//!  XMPP server ──5269 S2S (SRV _xmpp-server._tcp)──▶ xsgw ──SIP over mutual TLS, 5061──▶ Access Edge ──▶ SIP users
//!  (gmail.com)  ◀── dialback / STARTTLS+EXTERNAL ───      ◀── federation listener only ──
//! ```
//!
//! Architecture: synchronous and threaded. Protocol cores (`xmpp`, `sip`, `dns::srv`) take bytes
//! or events and return bytes or actions; they own no socket, thread or clock. The `gateway`
//! module is the shell: listener threads, one thread per connection, and one router thread that
//! owns routes, sessions and subscriptions; they talk over bounded `crossbeam-channel`s.
//!
//! ```text
//!  xmpp-listen ─accept─▶ xmpp-conn-N ─┐                ┌─ sip-conn-N ◀─accept─ sip-listen
//!                                     ├─▶ router ◀─────┤
//!  xmpp-out-<domain> ◀────────────────┘  (owns state)  └─▶ sip-edge (outbound to the Edge)
//! ```
//!
//! Module map:
//! - [`config`]: the INI file → typed, validated [`config::Config`]; every key defined once.
//! - [`dns`]: SRV ordering (RFC 2782, pure) and a blocking DNS client on hickory-proto.
//! - [`tls`]: certificate and key loading, certificate names (webpki: SAN only, name
//!   constraints; the Edge's wildcard and pin rules), rustls configurations.
//! - [`xmpp`]: XMPP server-to-server streams, stanzas, dialback.
//! - [`sip`]: SIP messages, transactions and dialogs.
//! - [`translate`]: XMPP ⇄ SIP mapping (addresses, errors, IM, typing, presence), pure.
//! - [`bridge`]: the translator's state without I/O (pending deliveries, IM sessions, timers),
//!   owned by the router.
//! - [`gateway`]: threads, channels, router and process lifecycle.
//! - [`logsafe`]: peer-supplied strings escaped for log lines; per-key log rate limits.
//! - [`status`]: what the running gateway reports (`xsgw status`, metrics), rendered
//!   as text, JSON and Prometheus exposition; pure.
//! - [`ops`]: the command line and the operator commands (`check`, `diagnose`, `version`).

#![forbid(unsafe_code)]

pub mod base64;
pub mod bridge;
pub mod config;
pub mod dns;
pub mod gateway;
pub mod logsafe;
pub mod ops;
pub mod sip;
pub mod status;
#[cfg(test)]
mod testing;
pub mod tls;
pub mod translate;
pub mod xmpp;
