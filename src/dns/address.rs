//! Which addresses xsgw may connect to for a partner: the one place that says so.
//!
//! Owns: [`classify`] (pure: the special-purpose range an address is in, if any),
//! [`AddressPolicy`] and its verdict [`AddressRefusal`]. Used for every outbound S2S
//! connection whose address came from DNS (SRV targets, the additional section, the A/AAAA
//! fallback; `crate::dns::screen_targets`), for stanza streams and dialback verification
//! alike. Addresses the operator named (a `[partner] route`, an IP-literal partner) are never
//! screened. Out of scope: resolving the Edge's name (the caller hands its addresses in).
//!
//! Why: in open federation anybody picks the domain xsgw connects to (`db:result from=`),
//! and that domain's DNS picks the address and port. Without this screen xsgw would connect
//! for them to its own loopback, the DMZ's private networks or the Edge (SSRF, port scans).
//!
//! IPv6 forms that carry an IPv4 address (`::ffff:a.b.c.d` mapped, `::a.b.c.d` compatible,
//! `64:ff9b::a.b.c.d` NAT64) are judged by that IPv4 address.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The special-purpose ranges xsgw refuses for partners (unless allowed), or `Public`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AddressClass {
    /// Anything else: a partner's server may be there.
    Public,
    /// 127.0.0.0/8, ::1.
    Loopback,
    /// RFC 1918 (10/8, 172.16/12, 192.168/16) and the deprecated IPv6 site-local fec0::/10.
    Private,
    /// 169.254/16, fe80::/10.
    LinkLocal,
    /// fc00::/7 (RFC 4193).
    UniqueLocal,
    /// 100.64/10, carrier-grade NAT (RFC 6598).
    SharedCgnat,
    /// 224/4, ff00::/8.
    Multicast,
    /// 0.0.0.0/8 ("this network"; 0.0.0.0 reaches the local host on Linux), ::.
    Unspecified,
    /// 255.255.255.255.
    Broadcast,
    /// 240/4 but the broadcast address (reserved, RFC 1112).
    Reserved,
}

impl AddressClass {
    /// A short name for log lines.
    pub fn name(self) -> &'static str {
        match self {
            Self::Public => "public",
            Self::Loopback => "loopback",
            Self::Private => "private",
            Self::LinkLocal => "link-local",
            Self::UniqueLocal => "unique-local",
            Self::SharedCgnat => "shared (CGNAT)",
            Self::Multicast => "multicast",
            Self::Unspecified => "unspecified",
            Self::Broadcast => "broadcast",
            Self::Reserved => "reserved",
        }
    }
}

impl fmt::Display for AddressClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The IPv4 address an IPv6 address carries, for the forms that reach an IPv4 host:
/// mapped (`::ffff:0:0/96`), compatible (`::/96`, but `::` and `::1`) and NAT64
/// (`64:ff9b::/96`, RFC 6052).
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let v4 = || {
        let o = ip.octets();
        Ipv4Addr::new(o[12], o[13], o[14], o[15])
    };
    match s {
        [0, 0, 0, 0, 0, 0xffff, _, _] => Some(v4()),
        [0, 0, 0, 0, 0, 0, 0, 0] | [0, 0, 0, 0, 0, 0, 0, 1] => None,
        [0, 0, 0, 0, 0, 0, _, _] => Some(v4()),
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(v4()),
        _ => None,
    }
}

fn classify_v4(ip: Ipv4Addr) -> AddressClass {
    let [a, b, ..] = ip.octets();
    match (a, b) {
        _ if ip == Ipv4Addr::BROADCAST => AddressClass::Broadcast,
        (0, _) => AddressClass::Unspecified,
        (127, _) => AddressClass::Loopback,
        (10, _) | (172, 16..=31) | (192, 168) => AddressClass::Private,
        (169, 254) => AddressClass::LinkLocal,
        (100, 64..=127) => AddressClass::SharedCgnat,
        (224..=239, _) => AddressClass::Multicast,
        (240..=255, _) => AddressClass::Reserved,
        _ => AddressClass::Public,
    }
}

/// The special-purpose range `ip` is in, or [`AddressClass::Public`]. Pure.
pub fn classify(ip: IpAddr) -> AddressClass {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = embedded_v4(v6) {
                return classify_v4(v4);
            }
            let first = v6.segments()[0];
            match first {
                _ if v6.is_unspecified() => AddressClass::Unspecified,
                _ if v6.is_loopback() => AddressClass::Loopback,
                0xfe80..=0xfebf => AddressClass::LinkLocal,
                0xfec0..=0xfeff => AddressClass::Private,
                0xfc00..=0xfdff => AddressClass::UniqueLocal,
                0xff00..=0xffff => AddressClass::Multicast,
                _ => AddressClass::Public,
            }
        }
    }
}

/// `ip` with an IPv4 address carried in IPv6 turned back into IPv4, for comparing addresses.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => embedded_v4(v6).map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Why an address learned from DNS is not connected to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddressRefusal {
    /// In a special-purpose range and `[federation] private_addresses = refuse`.
    Range(AddressClass),
    /// One of the Edge's or xsgw's own addresses (refused whatever `private_addresses` says).
    Protected,
}

impl fmt::Display for AddressRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Range(class) => write!(
                f,
                "a {class} address ([federation] private_addresses = refuse)"
            ),
            Self::Protected => f.write_str("one of the Edge's or xsgw's own addresses"),
        }
    }
}

/// What may be connected to, for addresses a partner's DNS chose.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AddressPolicy {
    /// `[federation] private_addresses = allow`: special-purpose ranges are allowed.
    pub allow_private: bool,
    /// Never connected to for a partner unless a route names them: the Edge's addresses and
    /// xsgw's own listening addresses.
    pub protected: Vec<IpAddr>,
}

impl AddressPolicy {
    /// `None` when `ip` may be connected to, else why not. Pure.
    pub fn refusal(&self, ip: IpAddr) -> Option<AddressRefusal> {
        let ip = canonical(ip);
        if self.protected.iter().any(|p| canonical(*p) == ip) {
            return Some(AddressRefusal::Protected);
        }
        match classify(ip) {
            AddressClass::Public => None,
            _ if self.allow_private => None,
            class => Some(AddressRefusal::Range(class)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(s: &str) -> AddressClass {
        classify(s.parse().unwrap())
    }

    #[test]
    fn ipv4_ranges_and_their_edges() {
        use AddressClass::*;
        for (ip, want) in [
            ("0.0.0.0", Unspecified),
            ("0.255.255.255", Unspecified),
            ("1.0.0.0", Public),
            ("9.255.255.255", Public),
            ("10.0.0.0", Private),
            ("10.0.0.5", Private),
            ("10.255.255.255", Private),
            ("11.0.0.0", Public),
            ("100.63.255.255", Public),
            ("100.64.0.0", SharedCgnat),
            ("100.127.255.255", SharedCgnat),
            ("100.128.0.0", Public),
            ("126.255.255.255", Public),
            ("127.0.0.1", Loopback),
            ("127.0.10.5", Loopback),
            ("127.255.255.255", Loopback),
            ("128.0.0.0", Public),
            ("169.253.255.255", Public),
            ("169.254.0.0", LinkLocal),
            ("169.254.169.254", LinkLocal),
            ("169.255.0.0", Public),
            ("172.15.255.255", Public),
            ("172.16.0.0", Private),
            ("172.31.255.255", Private),
            ("172.32.0.0", Public),
            ("192.167.255.255", Public),
            ("192.168.0.0", Private),
            ("192.168.255.255", Private),
            ("192.169.0.0", Public),
            ("8.8.8.8", Public),
            ("223.255.255.255", Public),
            ("224.0.0.0", Multicast),
            ("239.255.255.255", Multicast),
            ("240.0.0.0", Reserved),
            ("255.255.255.254", Reserved),
            ("255.255.255.255", Broadcast),
        ] {
            assert_eq!(class(ip), want, "{ip}");
        }
    }

    #[test]
    fn ipv6_ranges_and_their_edges() {
        use AddressClass::*;
        for (ip, want) in [
            ("::", Unspecified),
            ("::1", Loopback),
            // ::/96 but :: and ::1 is the (deprecated) IPv4-compatible form: 0.0.0.2.
            ("::2", Unspecified),
            ("::1:0:0", Public),
            ("2001:db8::1", Public),
            ("2a00:1450:4001::1", Public),
            ("fbff:ffff::1", Public),
            ("fc00::", UniqueLocal),
            ("fd12:3456::1", UniqueLocal),
            ("fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", UniqueLocal),
            ("fe00::1", Public),
            ("fe7f:ffff::1", Public),
            ("fe80::", LinkLocal),
            ("fe80::1", LinkLocal),
            ("febf:ffff::1", LinkLocal),
            ("fec0::1", Private),
            ("feff::1", Private),
            ("ff00::", Multicast),
            ("ff02::1", Multicast),
            ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Multicast),
        ] {
            assert_eq!(class(ip), want, "{ip}");
        }
    }

    #[test]
    fn ipv6_forms_of_ipv4_are_judged_as_ipv4() {
        use AddressClass::*;
        for (ip, want) in [
            ("::ffff:10.0.0.1", Private),
            ("::ffff:127.0.0.1", Loopback),
            ("::ffff:0.0.0.0", Unspecified),
            ("::ffff:169.254.169.254", LinkLocal),
            ("::ffff:100.64.0.1", SharedCgnat),
            ("::ffff:255.255.255.255", Broadcast),
            ("::ffff:8.8.8.8", Public),
            ("::127.0.0.1", Loopback),
            ("::10.1.2.3", Private),
            ("::8.8.8.8", Public),
            ("64:ff9b::192.168.1.1", Private),
            ("64:ff9b::7f00:1", Loopback),
            ("64:ff9b::8.8.8.8", Public),
            // Not an embedding form: an ordinary global address.
            ("64:ff9c::7f00:1", Public),
            ("::1:ffff:7f00:1", Public),
        ] {
            assert_eq!(class(ip), want, "{ip}");
        }
    }

    #[test]
    fn policy_refuses_ranges_unless_allowed_and_protected_always() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let refuse = AddressPolicy {
            allow_private: false,
            protected: vec![ip("192.0.2.30"), ip("127.0.10.30")],
        };
        assert_eq!(refuse.refusal(ip("8.8.8.8")), None);
        assert_eq!(
            refuse.refusal(ip("10.0.0.5")),
            Some(AddressRefusal::Range(AddressClass::Private))
        );
        assert_eq!(
            refuse.refusal(ip("::ffff:127.0.0.1")),
            Some(AddressRefusal::Range(AddressClass::Loopback))
        );
        assert_eq!(
            refuse.refusal(ip("192.0.2.30")),
            Some(AddressRefusal::Protected)
        );
        // The Edge's address in its IPv6-mapped form is the same host.
        assert_eq!(
            refuse.refusal(ip("::ffff:192.0.2.30")),
            Some(AddressRefusal::Protected)
        );
        let allow = AddressPolicy {
            allow_private: true,
            ..refuse.clone()
        };
        assert_eq!(allow.refusal(ip("10.0.0.5")), None);
        assert_eq!(allow.refusal(ip("::1")), None);
        assert_eq!(allow.refusal(ip("127.0.10.5")), None);
        assert_eq!(
            allow.refusal(ip("127.0.10.30")),
            Some(AddressRefusal::Protected)
        );
        assert_eq!(
            AddressRefusal::Range(AddressClass::Loopback).to_string(),
            "a loopback address ([federation] private_addresses = refuse)"
        );
    }
}
