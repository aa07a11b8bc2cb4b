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
//! The line is checked: `clippy.toml` forbids clock reads, thread spawn and sleep, sockets,
//! channels and locks, and this crate denies them everywhere except in the shell modules that
//! allow them on their `mod` line (`gateway`, `ops::diagnose`, `ops::status`, `dns`'s
//! blocking client, `logsafe`'s shared rate limit, the certificate-expiry clock of
//! `config`'s stage 2); `make lint` runs it. A new module is a core until said otherwise.
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
// The core/shell line: no clock, thread, socket, channel or lock outside the shell modules
// (clippy.toml lists what and why; those modules allow it on their `mod` line).
#![cfg_attr(not(test), deny(clippy::disallowed_methods, clippy::disallowed_types))]

pub mod base64;
pub mod bridge;
pub mod config;
pub mod dns;
// The shell: listener and connection threads, sockets, channels, the router's clock.
#[allow(clippy::disallowed_methods, clippy::disallowed_types)]
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
