//! DNS for finding XMPP partners and the Edge: SRV ordering (RFC 2782) and a blocking client.

mod client;
mod error;
#[cfg(test)]
mod fake_server;
mod hosts;
mod name;
mod resolv_conf;
pub mod srv;

pub use client::{Lookup, Resolver, SrvAnswer};
pub use error::{DnsError, QueryType, ServerFailure};
pub use hosts::StaticHosts;
pub use name::normalize;
pub use resolv_conf::ResolvConf;
