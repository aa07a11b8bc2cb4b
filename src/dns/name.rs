//! Host and service names: validation and the one normal form used everywhere in `dns`.
//!
//! Owns: [`normalize`] (lowercase ASCII, no trailing dot, at most 253 characters, labels of
//! 1..=63 characters from `a-z 0-9 - _`; RFC 1035 §2.3.4, RFC 1123 §2.1, `_` for SRV owner
//! names per RFC 2782) and the conversions to and from hickory's `Name`.
//! Out of scope: IDNA. Internationalised domains must be given in their A-label (`xn--`) form;
//! a non-ASCII name is refused with a reason saying so.

use hickory_proto::rr::Name;

use super::error::DnsError;

/// Longest name in presentation form without the trailing dot (RFC 1035 §2.3.4: 255 octets
/// on the wire).
pub const MAX_NAME_LEN: usize = 253;
/// Longest label (RFC 1035 §2.3.4).
pub const MAX_LABEL_LEN: usize = 63;

/// Validates `name` and returns it lowercased without a trailing dot.
///
/// ```
/// use xsgw::dns::normalize;
/// assert_eq!(normalize("XMPP.Example.COM.").unwrap(), "xmpp.example.com");
/// assert!(normalize("a..b").is_err());
/// ```
pub fn normalize(name: &str) -> Result<String, DnsError> {
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    if trimmed.is_empty() {
        return Err(DnsError::invalid_name(name, "empty name"));
    }
    if trimmed.len() > MAX_NAME_LEN {
        return Err(DnsError::invalid_name(name, "longer than 253 characters"));
    }
    if !trimmed.is_ascii() {
        return Err(DnsError::invalid_name(
            name,
            "not ASCII (give internationalised names in their xn-- form)",
        ));
    }
    for label in trimmed.split('.') {
        if label.is_empty() {
            return Err(DnsError::invalid_name(name, "empty label"));
        }
        if label.len() > MAX_LABEL_LEN {
            return Err(DnsError::invalid_name(
                name,
                "label longer than 63 characters",
            ));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(DnsError::invalid_name(
                name,
                "characters other than letters, digits, '-' and '_'",
            ));
        }
    }
    Ok(trimmed.to_ascii_lowercase())
}

/// A normalised name as a fully qualified hickory `Name` (no search domains are ever applied).
pub(crate) fn to_wire_name(normalized: &str) -> Result<Name, DnsError> {
    Name::from_labels(normalized.split('.').map(str::as_bytes)).map_err(|e| DnsError::Encode {
        name: normalized.to_owned(),
        reason: e.to_string(),
    })
}

/// A name from an answer in the normal form, for comparisons. Names that would not pass
/// [`normalize`] (odd bytes escaped by hickory) still compare correctly: they just never
/// equal a name we asked for.
pub(crate) fn from_wire_name(name: &Name) -> String {
    let mut text = name.to_ascii();
    if text.ends_with('.') && text.len() > 1 {
        text.pop();
    }
    text.make_ascii_lowercase();
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_case_and_trailing_dot() {
        assert_eq!(normalize("Example.COM").unwrap(), "example.com");
        assert_eq!(normalize("example.com.").unwrap(), "example.com");
        assert_eq!(
            normalize("_xmpp-server._tcp.example.com").unwrap(),
            "_xmpp-server._tcp.example.com"
        );
        assert_eq!(normalize("localhost").unwrap(), "localhost");
    }

    #[test]
    fn refuses_bad_names() {
        for bad in [
            "",
            ".",
            "..",
            "a..b",
            ".a",
            "a b",
            "exa\u{e9}mple.com",
            "a/b",
            "a.b..",
        ] {
            assert!(
                matches!(normalize(bad), Err(DnsError::InvalidName { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn length_limits() {
        let label63 = "a".repeat(63);
        assert!(normalize(&label63).is_ok());
        assert!(normalize(&"a".repeat(64)).is_err());
        // 4 * 63 + 3 dots = 255 > 253
        let long = [label63.as_str(); 4].join(".");
        assert!(normalize(&long).is_err());
        // exactly 253: 3 * 63 + 3 dots + 61
        let exact = format!("{l}.{l}.{l}.{}", "b".repeat(61), l = label63);
        assert_eq!(exact.len(), 253);
        assert!(normalize(&exact).is_ok());
        assert!(normalize(&format!("{exact}.")).is_ok());
    }

    #[test]
    fn wire_round_trip() {
        let wire = to_wire_name("_xmpp-server._tcp.example.com").unwrap();
        assert!(wire.is_fqdn());
        assert_eq!(from_wire_name(&wire), "_xmpp-server._tcp.example.com");
        let upper = Name::from_ascii("XMPP.Example.com.").unwrap();
        assert_eq!(from_wire_name(&upper), "xmpp.example.com");
        assert_eq!(from_wire_name(&Name::root()), ".");
    }
}
