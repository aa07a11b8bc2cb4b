//! The network primitives of `diagnose`: one TCP connect with a deadline whose failure is
//! classified the way an operator needs it (refused: nothing listens; silent: a firewall
//! drops it; unreachable: no route), address classes, and "is this address on this host".
//! Each probe sends at most one connection attempt per address: a public address is only
//! classified and tried once, never flooded.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

/// Why a TCP connection did not open.
#[derive(Debug)]
pub enum ConnectFailure {
    /// The host answered with a reset: nothing listens there (or a firewall rejects).
    Refused,
    /// No answer before the deadline: a firewall silently drops the traffic, or the host is down.
    Silent(Duration),
    /// The local stack has no route (ENETUNREACH, EHOSTUNREACH).
    Unreachable(io::Error),
    /// Anything else.
    Other(io::Error),
}

impl ConnectFailure {
    fn from_io(error: io::Error, waited: Duration) -> Self {
        match error.kind() {
            io::ErrorKind::ConnectionRefused => ConnectFailure::Refused,
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => ConnectFailure::Silent(waited),
            _ => match error.raw_os_error() {
                // ENETUNREACH, EHOSTUNREACH on Linux.
                Some(101) | Some(113) => ConnectFailure::Unreachable(error),
                _ => ConnectFailure::Other(error),
            },
        }
    }

    /// The operator's next step for a failure to reach `what` at `addr`.
    pub fn advice(&self, addr: SocketAddr, what: &str) -> String {
        match self {
            ConnectFailure::Refused => format!(
                "nothing accepts TCP on {addr}: check that {what} listens on port {} there, or that no firewall rejects it",
                addr.port()
            ),
            ConnectFailure::Silent(_) => format!(
                "open TCP {addr} from this host in every firewall between the DMZ host and {what} (it drops the traffic silently)"
            ),
            ConnectFailure::Unreachable(_) => format!(
                "this host has no route to {}: check its routing table and the address of {what}",
                addr.ip()
            ),
            ConnectFailure::Other(_) => format!("check the address and port of {what}"),
        }
    }
}

impl fmt::Display for ConnectFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectFailure::Refused => f.write_str("refused"),
            ConnectFailure::Silent(waited) => write!(
                f,
                "silent: no answer within {:.1} s (dropped by a firewall?)",
                waited.as_secs_f64()
            ),
            ConnectFailure::Unreachable(e) => write!(f, "unreachable: {e}"),
            ConnectFailure::Other(e) => write!(f, "{e}"),
        }
    }
}

/// One TCP connection attempt to `addr`, given up after `deadline`. The stream returned has
/// read and write timeouts of `deadline`.
pub fn connect(addr: SocketAddr, deadline: Duration) -> Result<TcpStream, ConnectFailure> {
    let started = Instant::now();
    match TcpStream::connect_timeout(&addr, deadline) {
        Ok(stream) => {
            let _ = stream.set_read_timeout(Some(deadline));
            let _ = stream.set_write_timeout(Some(deadline));
            let _ = stream.set_nodelay(true);
            Ok(stream)
        }
        Err(e) => Err(ConnectFailure::from_io(e, started.elapsed())),
    }
}

/// What kind of address a name resolved to, as far as reaching the Edge is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddrClass {
    /// 127.0.0.0/8, ::1.
    Loopback,
    /// RFC 1918, RFC 6598 (shared), link-local, IPv6 unique local: a perimeter address.
    Private,
    /// Anything routed on the Internet (documentation ranges included: they stand for one).
    Public,
    /// 0.0.0.0, multicast, broadcast: not a host.
    Unusable,
}

impl AddrClass {
    pub fn of(ip: IpAddr) -> AddrClass {
        match ip {
            IpAddr::V4(v4) => {
                let o = v4.octets();
                if v4.is_loopback() {
                    AddrClass::Loopback
                } else if v4.is_unspecified() || v4.is_multicast() || v4.is_broadcast() {
                    AddrClass::Unusable
                } else if v4.is_private()
                    || v4.is_link_local()
                    || (o[0] == 100 && (64..128).contains(&o[1]))
                {
                    AddrClass::Private
                } else {
                    AddrClass::Public
                }
            }
            IpAddr::V6(v6) => {
                let first = v6.segments()[0];
                if let Some(v4) = v6.to_ipv4_mapped() {
                    AddrClass::of(IpAddr::V4(v4))
                } else if v6.is_loopback() {
                    AddrClass::Loopback
                } else if v6.is_unspecified() || v6.is_multicast() {
                    AddrClass::Unusable
                } else if (first & 0xfe00) == 0xfc00 || (first & 0xffc0) == 0xfe80 {
                    AddrClass::Private
                } else {
                    AddrClass::Public
                }
            }
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AddrClass::Loopback => "loopback",
            AddrClass::Private => "private",
            AddrClass::Public => "public",
            AddrClass::Unusable => "not a host address",
        }
    }
}

/// True when `ip` is an address of this host (it can be bound). No packet is sent.
pub fn is_local_address(ip: IpAddr) -> bool {
    if ip.is_unspecified() {
        return false;
    }
    UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}

/// `a, b, c` for a list of displayable things.
pub fn list<T: fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(s: &str) -> AddrClass {
        AddrClass::of(s.parse().unwrap())
    }

    #[test]
    fn address_classes() {
        assert_eq!(class("127.0.10.30"), AddrClass::Loopback);
        assert_eq!(class("10.11.12.33"), AddrClass::Private);
        assert_eq!(class("172.16.0.1"), AddrClass::Private);
        assert_eq!(class("192.168.1.1"), AddrClass::Private);
        assert_eq!(class("100.64.0.1"), AddrClass::Private);
        assert_eq!(class("203.0.113.7"), AddrClass::Public);
        assert_eq!(class("8.8.8.8"), AddrClass::Public);
        assert_eq!(class("0.0.0.0"), AddrClass::Unusable);
        assert_eq!(class("fd00::1"), AddrClass::Private);
        assert_eq!(class("2001:db8::1"), AddrClass::Public);
        assert_eq!(class("::ffff:10.0.0.1"), AddrClass::Private);
        assert_eq!(class("::1"), AddrClass::Loopback);
    }

    #[test]
    fn refused_and_local() {
        // A port that was just free on loopback refuses.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        assert!(matches!(
            connect(addr, Duration::from_secs(1)),
            Err(ConnectFailure::Refused)
        ));
        assert!(is_local_address("127.0.0.1".parse().unwrap()));
        assert!(!is_local_address("203.0.113.7".parse().unwrap()));
        assert!(!is_local_address("0.0.0.0".parse().unwrap()));
    }
}
