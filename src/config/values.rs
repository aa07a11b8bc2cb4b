//! Parsers for the value types of the INI file: durations, sizes, booleans, policies, DNS names,
//! addresses. Each returns a message that says what was expected, for `file:line` errors.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// `required | optional | disabled`, the three-way knob admins know from the Lync XMPP gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Requirement {
    Required,
    Optional,
    Disabled,
}

impl Requirement {
    pub fn as_str(self) -> &'static str {
        match self {
            Requirement::Required => "required",
            Requirement::Optional => "optional",
            Requirement::Disabled => "disabled",
        }
    }
}

impl std::fmt::Display for Requirement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `host:port` pair whose host is a DNS name or an IP literal (`[v6]:port` for IPv6).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPort {
    pub host: String,
    pub port: u16,
}

impl std::fmt::Display for HostPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

pub fn requirement(value: &str) -> Result<Requirement, String> {
    match value.to_ascii_lowercase().as_str() {
        "required" => Ok(Requirement::Required),
        "optional" => Ok(Requirement::Optional),
        "disabled" => Ok(Requirement::Disabled),
        _ => Err(format!(
            "`{value}` is not a policy; expected required, optional or disabled"
        )),
    }
}

pub fn boolean(value: &str) -> Result<bool, String> {
    match value.to_ascii_lowercase().as_str() {
        "yes" | "true" | "on" | "1" => Ok(true),
        "no" | "false" | "off" | "0" => Ok(false),
        _ => Err(format!("`{value}` is not a boolean; expected yes or no")),
    }
}

/// `90`, `90s`, `500ms`, `5m`, `8h`, `1d`. A bare number is seconds.
pub fn duration(value: &str) -> Result<Duration, String> {
    let err = || {
        format!(
            "`{value}` is not a duration; expected a number with a unit, e.g. 500ms, 60s, 5m, 8h"
        )
    };
    let split = value
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(value.len());
    let (digits, unit) = value.split_at(split);
    let number: u64 = digits.parse().map_err(|_| err())?;
    let millis_per_unit: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(err()),
    };
    number
        .checked_mul(millis_per_unit)
        .map(Duration::from_millis)
        .ok_or_else(err)
}

/// `65536`, `64KiB`, `1MiB`, `64k`, `2M`. Units are binary (KiB = 1024) whichever way written,
/// because the bounds they set are buffer sizes.
pub fn size(value: &str) -> Result<usize, String> {
    let err = || {
        format!("`{value}` is not a size; expected bytes or a number with KiB or MiB, e.g. 256KiB")
    };
    let split = value
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(value.len());
    let (digits, unit) = value.split_at(split);
    let number: usize = digits.parse().map_err(|_| err())?;
    let multiplier: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1024,
        "m" | "mb" | "mib" => 1024 * 1024,
        _ => return Err(err()),
    };
    number.checked_mul(multiplier).ok_or_else(err)
}

pub fn count(value: &str) -> Result<usize, String> {
    value
        .replace('_', "")
        .parse()
        .map_err(|_| format!("`{value}` is not a whole number"))
}

/// Checks a DNS name as used for domains and host names (RFC 1035 §2.3.4, RFC 1123 §2.1):
/// labels of 1–63 letters, digits and hyphens, not starting or ending with a hyphen, at most
/// 253 characters. Returns it lowercased without a trailing dot. IDNs must be given as A-labels.
pub fn dns_name(value: &str) -> Result<String, String> {
    let name = value
        .strip_suffix('.')
        .unwrap_or(value)
        .to_ascii_lowercase();
    if name.is_empty() {
        return Err("a DNS name is needed here".into());
    }
    if name.len() > 253 {
        return Err(format!(
            "`{value}` is {} characters long; a DNS name has at most 253",
            name.len()
        ));
    }
    for label in name.split('.') {
        let problem = if label.is_empty() {
            Some("has an empty label")
        } else if label.len() > 63 {
            Some("has a label longer than 63 characters")
        } else if label.starts_with('-') || label.ends_with('-') {
            Some("has a label starting or ending with `-`")
        } else if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            Some("may hold only letters, digits, `-` and `.` (write an IDN as its xn-- form)")
        } else {
            None
        };
        if let Some(problem) = problem {
            return Err(format!("`{value}` is not a valid DNS name: it {problem}"));
        }
    }
    Ok(name)
}

/// A comma-separated list; empty items are ignored, so `a, b,` is `[a, b]`.
pub fn list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(str::to_string)
        .collect()
}

pub fn socket_addr(value: &str) -> Result<SocketAddr, String> {
    value.parse().map_err(|_| {
        format!("`{value}` is not an address:port; expected e.g. 0.0.0.0:5269 or [::]:5269")
    })
}

/// `host:port` where host is a DNS name or an IP address (`[::1]:5061` for IPv6).
pub fn host_port(value: &str) -> Result<HostPort, String> {
    if let Ok(addr) = value.parse::<SocketAddr>() {
        return Ok(HostPort {
            host: addr.ip().to_string(),
            port: addr.port(),
        });
    }
    let Some((host, port)) = value.rsplit_once(':') else {
        return Err(format!(
            "`{value}` has no port; expected host:port, e.g. sip.contoso.com:5061"
        ));
    };
    let port: u16 = match port.parse() {
        Ok(p) if p > 0 => p,
        _ => return Err(format!("`{port}` in `{value}` is not a port (1–65535)")),
    };
    let host = dns_name(host)?;
    Ok(HostPort { host, port })
}

pub fn ip_addrs(value: &str) -> Result<Vec<IpAddr>, String> {
    let items = list(value);
    if items.is_empty() {
        return Err("an IP address is needed here".into());
    }
    items
        .iter()
        .map(|item| {
            item.parse::<IpAddr>()
                .map_err(|_| format!("`{item}` is not an IPv4 or IPv6 address"))
        })
        .collect()
}

/// A DNS server: `10.0.0.2` (port 53) or `10.0.0.2:5353` or `[2001:db8::1]:53`.
pub fn dns_server(value: &str) -> Result<SocketAddr, String> {
    if let Ok(ip) = value.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, 53));
    }
    value
        .parse()
        .map_err(|_| format!("`{value}` is not a DNS server address; expected an IP or IP:port"))
}

/// The edit distance used to suggest a key for a typo ("did you mean `dialback`?").
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current.push(substitution.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

/// An IP network in CIDR form (`10.0.0.0/8`, `2001:db8::/32`); a bare address is a /32 or
/// /128. Host bits are cleared, so `10.1.2.3/8` is `10.0.0.0/8`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    /// The network address (host bits zero).
    pub addr: IpAddr,
    /// The prefix length.
    pub prefix: u8,
}

impl IpNet {
    /// Whether `ip` is inside (an IPv4-mapped IPv6 address counts as its IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        IpNet::masked(ip.to_canonical(), self.prefix) == Some(self.addr)
    }

    /// `ip` with all but its first `prefix` bits cleared; `None` when `prefix` is too long
    /// for its family.
    pub fn masked(ip: IpAddr, prefix: u8) -> Option<IpAddr> {
        match ip {
            IpAddr::V4(v4) if prefix <= 32 => {
                let bits = u32::from(v4);
                let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                Some(IpAddr::V4((bits & mask).into()))
            }
            IpAddr::V6(v6) if prefix <= 128 => {
                let bits = u128::from(v6);
                let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
                Some(IpAddr::V6((bits & mask).into()))
            }
            _ => None,
        }
    }
}

impl std::fmt::Display for IpNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// One network: `192.0.2.0/24`, `2001:db8::/48`, or a single address.
pub fn ip_net(value: &str) -> Result<IpNet, String> {
    let (addr, prefix) = match value.split_once('/') {
        Some((addr, prefix)) => (addr, Some(prefix)),
        None => (value, None),
    };
    let addr: IpAddr = addr
        .trim()
        .parse()
        .map_err(|_| format!("`{value}` is not an address or network (e.g. 192.0.2.0/24)"))?;
    let addr = addr.to_canonical();
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        None => max,
        Some(p) => match p.trim().parse::<u8>() {
            Ok(p) if p <= max => p,
            _ => return Err(format!("`{value}`: the prefix length must be 0–{max}")),
        },
    };
    let addr = IpNet::masked(addr, prefix).ok_or_else(|| format!("`{value}`: bad prefix"))?;
    Ok(IpNet { addr, prefix })
}

/// A comma-separated list of networks (may be empty).
pub fn ip_nets(value: &str) -> Result<Vec<IpNet>, String> {
    list(value).iter().map(|item| ip_net(item)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(duration("8h"), Ok(Duration::from_secs(8 * 3600)));
        assert_eq!(duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(duration("60"), Ok(Duration::from_secs(60)));
        assert!(duration("ten seconds").is_err());
        assert!(duration("10 parsecs").is_err());
        assert!(duration("").is_err());
        assert!(duration("99999999999999999999d").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(size("256KiB"), Ok(256 * 1024));
        assert_eq!(size("64k"), Ok(64 * 1024));
        assert_eq!(size("1MiB"), Ok(1024 * 1024));
        assert_eq!(size("4096"), Ok(4096));
        assert!(size("1GiB").is_err());
        assert!(size("lots").is_err());
    }

    #[test]
    fn booleans_and_policies() {
        assert_eq!(boolean("yes"), Ok(true));
        assert_eq!(boolean("False"), Ok(false));
        assert!(boolean("maybe").is_err());
        assert_eq!(requirement("Required"), Ok(Requirement::Required));
        let err = requirement("requird").unwrap_err();
        assert!(err.contains("required, optional or disabled"), "{err}");
    }

    #[test]
    fn dns_names() {
        assert_eq!(dns_name("XMPP.jds.local."), Ok("xmpp.jds.local".into()));
        assert!(dns_name("bad_name.example").is_err());
        assert!(dns_name("-a.example").is_err());
        assert!(dns_name("a..example").is_err());
        assert!(dns_name(&"a".repeat(64)).is_err());
        assert!(dns_name("").is_err());
    }

    #[test]
    fn host_ports() {
        assert_eq!(
            host_port("sip.contoso.com:5061"),
            Ok(HostPort {
                host: "sip.contoso.com".into(),
                port: 5061
            })
        );
        assert_eq!(host_port("[::1]:5061").unwrap().host, "::1");
        assert_eq!(host_port("[::1]:5061").unwrap().to_string(), "[::1]:5061");
        assert!(host_port("sip.contoso.com").is_err());
        assert!(host_port("sip.contoso.com:0").is_err());
        assert!(host_port("sip.contoso.com:http").is_err());
    }

    #[test]
    fn dns_servers_default_to_port_53() {
        assert_eq!(dns_server("10.0.0.2"), Ok("10.0.0.2:53".parse().unwrap()));
        assert_eq!(
            dns_server("127.0.10.53:5353"),
            Ok("127.0.10.53:5353".parse().unwrap())
        );
        assert!(dns_server("dns.example").is_err());
    }

    #[test]
    fn edit_distances() {
        assert_eq!(edit_distance("dialbak", "dialback"), 1);
        assert_eq!(edit_distance("tls", "tls"), 0);
        assert_eq!(edit_distance("", "abc"), 3);
    }

    #[test]
    fn networks_in_cidr_form() {
        let net = ip_net("10.1.2.3/8").unwrap();
        assert_eq!(net.to_string(), "10.0.0.0/8");
        assert!(net.contains("10.255.0.1".parse().unwrap()));
        assert!(!net.contains("11.0.0.1".parse().unwrap()));
        // An IPv4-mapped IPv6 peer (a listener on [::]) counts as its IPv4 address.
        assert!(net.contains("::ffff:10.9.9.9".parse().unwrap()));
        let one = ip_net("192.0.2.7").unwrap();
        assert_eq!(one.prefix, 32);
        assert!(one.contains("192.0.2.7".parse().unwrap()));
        assert!(!one.contains("192.0.2.8".parse().unwrap()));
        let v6 = ip_net("2001:db8:1:2::5/64").unwrap();
        assert_eq!(v6.to_string(), "2001:db8:1:2::/64");
        assert!(v6.contains("2001:db8:1:2:ffff::1".parse().unwrap()));
        assert!(!v6.contains("2001:db8:1:3::1".parse().unwrap()));
        assert!(ip_net("0.0.0.0/0")
            .unwrap()
            .contains("203.0.113.9".parse().unwrap()));
        for bad in [
            "10.0.0.0/33",
            "2001:db8::/129",
            "host.example",
            "10.0.0.0/x",
            "",
        ] {
            assert!(ip_net(bad).is_err(), "{bad}");
        }
        assert_eq!(ip_nets("").unwrap(), vec![]);
        assert_eq!(ip_nets("10.0.0.0/8, 192.0.2.1").unwrap().len(), 2);
    }
}
