//! DNS for finding XMPP partners and the Edge: SRV ordering (RFC 2782) and a blocking client.
//!
//! xsgw looks up `_xmpp-server._tcp.<domain>` SRV records to reach XMPP partners
//! (RFC 6120 §3.2) and the Access Edge by its host name. hickory's resolver is async-only,
//! so this module builds and parses messages with `hickory-proto` and sends them over std
//! blocking UDP/TCP sockets in the calling thread (a connection thread, never the router).
//!
//! ```text
//!  resolve_xmpp_server(domain, route override, [hosts], resolver, rng)
//!        │                 xmpp.rs: override > SRV (ordered) > fallback <domain>:5269
//!        ├── srv::order ── srv.rs: RFC 2782 priority + weighted order, pure
//!        └── Lookup ────── client.rs: Resolver (UDP, TCP on TC, ids, validation, deadline)
//!                           ├── resolv_conf.rs: /etc/resolv.conf nameservers, timeout, attempts
//!                           └── name.rs: validation, normal form (lowercase, no trailing dot)
//!  screen_targets ──────── xmpp.rs: every address learned from DNS through AddressPolicy
//!        └── classify ──── address.rs: loopback, private, link-local, ULA, CGNAT, ... (pure)
//!  StaticHosts ─────────── hosts.rs: the [hosts] section, for names xsgw was configured with
//! ```
//!
//! In scope: SRV, A, AAAA, CNAME chains within an answer, EDNS(0) payload size, NXDOMAIN vs
//! no data vs unanswered in [`DnsError`]. Out of scope: caching (lookups happen once per
//! outgoing stream), DNSSEC/DANE, search domains, `/etc/hosts`, `_xmpps-server` (XEP-0368).
//!
//! Errors tell an operator which of two things is wrong: [`DnsError::is_negative_answer`] is
//! true when the DNS answered "no such record" (fix the zone), false when no server answered
//! (fix reachability or the resolver); each names the name and the server asked.
//!
//! # Example
//! ```no_run
//! use std::time::Duration;
//! use xsgw::dns::{resolve_xmpp_server, srv, Resolver, StaticHosts};
//!
//! let resolver = Resolver::from_system()?; // or Resolver::new(servers, timeout, attempts)
//! let mut hosts = StaticHosts::new();
//! hosts.insert("edge.corp.example", &["192.0.2.10".parse()?])?;
//!
//! let mut rng = srv::system_random();
//! let found = resolve_xmpp_server("gmail.com", None, &hosts, &resolver, &mut rng)?;
//! // Never connect to what a partner's DNS says without the screen (SSRF).
//! let policy = xsgw::dns::AddressPolicy::default();
//! for target in xsgw::dns::screen_targets(found, &policy).targets {
//!     // try target.addrs in order on target.port; then the next target
//!     println!("{}:{} {:?}", target.host, target.port, target.addrs);
//! }
//! let edge = xsgw::dns::resolve_host("edge.corp.example", &hosts, &resolver)?;
//! # let _ = (edge, Duration::ZERO);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod address;
// Shell: the blocking resolver owns its UDP and TCP sockets and reads the clock for its
// deadlines, in the calling connection thread.
#[allow(clippy::disallowed_methods, clippy::disallowed_types)]
mod client;
mod error;
// Also compiled into integration tests (tests/attack_ssrf.rs) by path.
#[cfg(test)]
pub(crate) mod fake_server;
mod hosts;
mod name;
mod resolv_conf;
pub mod srv;
mod xmpp;

pub use address::{classify, AddressClass, AddressPolicy, AddressRefusal};
#[doc(hidden)]
pub use client::{decode_answer, DecodedAnswer};
pub use client::{Lookup, Resolver, SrvAnswer};
pub use error::{DnsError, QueryType, ServerFailure};
pub use hosts::StaticHosts;
pub use name::normalize;
pub use resolv_conf::ResolvConf;
pub use xmpp::{
    resolve_host, resolve_xmpp_server, screen_targets, RefusedAddress, Screened, Target,
    TargetOrigin, MAX_ADDRS_PER_TARGET, MAX_CONNECT_ATTEMPTS, MAX_XMPP_TARGETS, XMPP_SERVER_PORT,
};
