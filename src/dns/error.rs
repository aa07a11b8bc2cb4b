//! The DNS layer's error type.
//!
//! Owns: [`DnsError`] and the per-server failure reasons in [`ServerFailure`]. The variants are
//! grouped so that an operator can tell the two questions apart that matter when federation
//! breaks: "does the name have the record?" (a *negative answer*: [`DnsError::NxDomain`],
//! [`DnsError::NoData`], [`DnsError::ServiceNotAvailable`]) and "could we ask at all?"
//! ([`DnsError::Unanswered`], [`DnsError::NoServers`]). Every variant names the name and, where
//! one answered, the server.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The record types this layer asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum QueryType {
    /// IPv4 address (RFC 1035).
    A,
    /// IPv6 address (RFC 3596).
    Aaaa,
    /// Service location (RFC 2782).
    Srv,
    /// Both A and AAAA: an address lookup as a whole.
    Address,
}

impl fmt::Display for QueryType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::A => "A",
            Self::Aaaa => "AAAA",
            Self::Srv => "SRV",
            Self::Address => "A/AAAA",
        })
    }
}

/// Why one server did not give a usable answer to one query.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerFailure {
    /// No valid response within the time given to this server; `ignored` counts datagrams that
    /// arrived but did not match the query (wrong id, question or source) or did not decode.
    Timeout {
        /// Responses dropped because they did not match or did not decode.
        ignored: u32,
    },
    /// The server answered with an error code other than NXDOMAIN (SERVFAIL, REFUSED, ...).
    Rcode {
        /// The numeric RCODE.
        code: u16,
        /// Its mnemonic, e.g. "Server Failure".
        name: &'static str,
    },
    /// A socket error talking to the server (the `io::ErrorKind` and its text).
    Io {
        /// The error kind, kept so callers can match on it.
        kind: io::ErrorKind,
        /// The error's text.
        text: String,
    },
    /// The TCP answer (after a truncated UDP one) could not be read or decoded.
    BadTcpAnswer {
        /// What went wrong.
        reason: String,
    },
}

impl ServerFailure {
    pub(crate) fn io(error: &io::Error) -> Self {
        Self::Io {
            kind: error.kind(),
            text: error.to_string(),
        }
    }
}

impl fmt::Display for ServerFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Timeout { ignored: 0 } => f.write_str("timed out"),
            Self::Timeout { ignored } => {
                write!(f, "timed out ({ignored} non-matching responses ignored)")
            }
            Self::Rcode { code, name } => write!(f, "answered rcode {code} ({name})"),
            Self::Io { text, .. } => write!(f, "socket error: {text}"),
            Self::BadTcpAnswer { reason } => write!(f, "bad answer over tcp: {reason}"),
        }
    }
}

/// An error from name validation, the resolver configuration or a lookup.
#[derive(Debug)]
#[non_exhaustive]
pub enum DnsError {
    // --- negative answers: the DNS said "no" ---
    /// The name does not exist (NXDOMAIN) according to `server`.
    NxDomain {
        /// The name asked about (after CNAMEs, the name that does not exist).
        name: String,
        /// The record type asked.
        query_type: QueryType,
        /// The server that answered.
        server: SocketAddr,
    },
    /// The name exists but has no record of the type asked (NOERROR with no answer).
    NoData {
        /// The name asked about.
        name: String,
        /// The record type asked.
        query_type: QueryType,
        /// The server that answered (`None` when the answer came from the static hosts table).
        server: Option<SocketAddr>,
    },
    /// The SRV record set is a single target `.`: the domain says it offers no such service
    /// (RFC 2782, "service decidedly not available").
    ServiceNotAvailable {
        /// The SRV name, e.g. `_xmpp-server._tcp.example.com`.
        name: String,
        /// The server that answered.
        server: Option<SocketAddr>,
    },

    // --- the DNS could not be asked ---
    /// No server gave a usable answer before the lookup's deadline; one entry per server tried.
    Unanswered {
        /// The name asked about.
        name: String,
        /// The record type asked.
        query_type: QueryType,
        /// Time spent on the lookup.
        elapsed: Duration,
        /// The last failure seen from each server, in the order servers were tried.
        failures: Vec<(SocketAddr, ServerFailure)>,
    },
    /// The resolver has no name server configured.
    NoServers,
    /// Local randomness (query ids) was unavailable.
    Random,

    // --- bad input or answers ---
    /// The name is not a valid host name (RFC 1035 §2.3.4, RFC 1123 §2.1).
    InvalidName {
        /// The name as given (shortened if huge).
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An input exceeded a limit.
    TooLarge {
        /// What was too large.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A CNAME chain was longer than the limit or looped.
    CnameChain {
        /// The name first asked about.
        name: String,
        /// The limit on links followed.
        max: usize,
    },
    /// A query could not be encoded (a bug, or a name hickory refuses).
    Encode {
        /// The name being asked about.
        name: String,
        /// The encoder's message.
        reason: String,
    },
    /// A resolver configuration file could not be read.
    ReadConfig {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        error: io::Error,
    },

    // --- the XMPP-level resolution (see `resolve_xmpp_server`) ---
    /// Neither SRV nor the A/AAAA fallback yielded an address for an XMPP domain.
    NoXmppAddress {
        /// The XMPP domain.
        domain: String,
        /// Why SRV gave nothing (a negative answer).
        srv: Box<DnsError>,
        /// Why the fallback to the domain's own A/AAAA failed.
        fallback: Box<DnsError>,
    },
    /// SRV named targets, but none of their addresses could be found.
    TargetsUnresolved {
        /// The SRV name.
        name: String,
        /// Each target and why it failed.
        failures: Vec<(String, DnsError)>,
    },
}

impl DnsError {
    /// True for answers that say the record does not exist (NXDOMAIN, no data); false for
    /// failures to get an answer at all. Callers fall back only on negative answers.
    pub fn is_negative_answer(&self) -> bool {
        matches!(self, Self::NxDomain { .. } | Self::NoData { .. })
    }

    pub(crate) fn invalid_name(name: &str, reason: &'static str) -> Self {
        const SHOWN: usize = 80;
        let name = if name.len() > SHOWN {
            let mut end = SHOWN;
            while !name.is_char_boundary(end) {
                end -= 1;
            }
            format!("{}...", &name[..end])
        } else {
            name.to_owned()
        };
        Self::InvalidName { name, reason }
    }
}

fn write_at(f: &mut fmt::Formatter<'_>, server: &Option<SocketAddr>) -> fmt::Result {
    match server {
        Some(server) => write!(f, " at {server}"),
        None => f.write_str(" in the static hosts table"),
    }
}

impl fmt::Display for DnsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NxDomain {
                name,
                query_type,
                server,
            } => write!(
                f,
                "{name} does not exist (NXDOMAIN for {query_type} at {server})"
            ),
            Self::NoData {
                name,
                query_type,
                server,
            } => {
                write!(f, "no {query_type} record for {name}")?;
                write_at(f, server)
            }
            Self::ServiceNotAvailable { name, server } => {
                write!(
                    f,
                    "{name} has the SRV target \".\": the domain says it has no such service"
                )?;
                write_at(f, server)
            }
            Self::Unanswered {
                name,
                query_type,
                elapsed,
                failures,
            } => {
                write!(
                    f,
                    "no answer for {query_type} {name} after {} ms",
                    elapsed.as_millis()
                )?;
                for (i, (server, failure)) in failures.iter().enumerate() {
                    let sep = if i == 0 { ": " } else { "; " };
                    write!(f, "{sep}{server} {failure}")?;
                }
                Ok(())
            }
            Self::NoServers => f.write_str("no dns server configured"),
            Self::Random => f.write_str("system random number generator failed"),
            Self::InvalidName { name, reason } => {
                write!(f, "invalid dns name {name:?}: {reason}")
            }
            Self::TooLarge { what, len, max } => {
                write!(f, "{what} too large: {len} > {max}")
            }
            Self::CnameChain { name, max } => {
                write!(f, "cname chain from {name} loops or is longer than {max}")
            }
            Self::Encode { name, reason } => {
                write!(f, "cannot encode a query for {name}: {reason}")
            }
            Self::ReadConfig { path, error } => {
                write!(f, "cannot read {}: {error}", path.display())
            }
            Self::NoXmppAddress {
                domain,
                srv,
                fallback,
            } => write!(
                f,
                "no address for xmpp domain {domain}: {srv}; fell back to A/AAAA: {fallback}"
            ),
            Self::TargetsUnresolved { name, failures } => {
                write!(f, "no SRV target of {name} has an address")?;
                for (i, (target, error)) in failures.iter().enumerate() {
                    let sep = if i == 0 { ": " } else { "; " };
                    write!(f, "{sep}{target}: {error}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for DnsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::ReadConfig { error, .. } => Some(error),
            Self::NoXmppAddress { fallback, .. } => Some(fallback.as_ref()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_server_and_name() {
        let server: SocketAddr = "10.0.0.2:53".parse().unwrap();
        let e = DnsError::NoData {
            name: "_xmpp-server._tcp.example.com".into(),
            query_type: QueryType::Srv,
            server: Some(server),
        };
        assert_eq!(
            e.to_string(),
            "no SRV record for _xmpp-server._tcp.example.com at 10.0.0.2:53"
        );
        assert!(e.is_negative_answer());

        let e = DnsError::Unanswered {
            name: "example.com".into(),
            query_type: QueryType::A,
            elapsed: Duration::from_millis(400),
            failures: vec![
                (server, ServerFailure::Timeout { ignored: 1 }),
                (
                    "10.0.0.3:53".parse().unwrap(),
                    ServerFailure::Rcode {
                        code: 2,
                        name: "Server Failure",
                    },
                ),
            ],
        };
        assert_eq!(
            e.to_string(),
            "no answer for A example.com after 400 ms: 10.0.0.2:53 timed out \
             (1 non-matching responses ignored); 10.0.0.3:53 answered rcode 2 (Server Failure)"
        );
        assert!(!e.is_negative_answer());
    }

    #[test]
    fn invalid_name_is_shortened_on_a_char_boundary() {
        let long = "é".repeat(100);
        match DnsError::invalid_name(&long, "too long") {
            DnsError::InvalidName { name, .. } => assert!(name.len() <= 83),
            other => panic!("unexpected {other:?}"),
        }
    }
}
