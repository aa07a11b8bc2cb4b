//! XMPP addresses (RFC 7622) and JID escaping (XEP-0106).
//!
//! Owns: parsing `localpart@domainpart/resourcepart` with per-part limits, normalising the
//! parts so equal addresses compare equal, and the XEP-0106 escaping used when a SIP user
//! part holds characters a localpart cannot.
//!
//! ```text
//!  "Juliet@Example.COM./Balcony"  →  local "juliet", domain "example.com", resource "Balcony"
//!  "at&t guy" (SIP user)          →  escape_local → "at\26t\20guy"
//! ```
//!
//! Scope and simplifications (say so when it matters):
//! - Domains are ASCII only: case-folded, final dot stripped (§3.2), labels of letters,
//!   digits, `-` and `_`, or an IP literal. Internationalised domains (IDNA2008, RFC 5891)
//!   are refused with [`JidError::NonAsciiDomain`]; give the A-label (`xn--…`) instead.
//! - Localparts get the UsernameCaseMapped rules approximately: characters RFC 7622 §3.3.1
//!   forbids are refused, controls are refused, and case is folded with Unicode lowercasing
//!   (no NFC normalisation, no full PRECIS class check).
//! - Resourceparts are kept as given (OpaqueString, §3.4) apart from refusing controls.

use std::fmt;
use std::str::FromStr;

/// Longest part of a JID, in bytes (RFC 7622 §3.2, §3.3, §3.4).
pub const MAX_PART_LEN: usize = 1023;

/// A parsed, normalised JID.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Jid {
    local: Option<String>,
    domain: String,
    resource: Option<String>,
}

/// Which part of a JID an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JidPart {
    /// Before `@`.
    Local,
    /// The domain.
    Domain,
    /// After `/`.
    Resource,
}

impl fmt::Display for JidPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            JidPart::Local => "localpart",
            JidPart::Domain => "domainpart",
            JidPart::Resource => "resourcepart",
        })
    }
}

/// Why a string is not a JID.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum JidError {
    /// A part is present (its separator is there) but empty, or the domain is missing.
    Empty {
        /// The empty part.
        part: JidPart,
    },
    /// A part longer than [`MAX_PART_LEN`] bytes.
    TooLarge {
        /// The part.
        part: JidPart,
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A character the part may not hold.
    BadChar {
        /// The part.
        part: JidPart,
        /// The character.
        c: char,
    },
    /// A domain with non-ASCII characters (IDNA is not supported; use the `xn--` form).
    NonAsciiDomain,
    /// A domain label that is empty or longer than 63 bytes, or a malformed IP literal.
    BadDomainLabel,
    /// A localpart that XEP-0106 cannot escape (begins or ends with a space).
    UnescapableSpace,
}

impl fmt::Display for JidError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JidError::Empty { part } => write!(f, "empty {part}"),
            JidError::TooLarge { part, len, max } => {
                write!(f, "{part} too large: {len} bytes, limit {max}")
            }
            JidError::BadChar { part, c } => write!(f, "character {c:?} not allowed in {part}"),
            JidError::NonAsciiDomain => f.write_str("non-ascii domain (give the xn-- form)"),
            JidError::BadDomainLabel => f.write_str("malformed domain"),
            JidError::UnescapableSpace => f.write_str("localpart begins or ends with a space"),
        }
    }
}

impl std::error::Error for JidError {}

impl Jid {
    /// Builds a JID from parts, validating and normalising each.
    pub fn new(
        local: Option<&str>,
        domain: &str,
        resource: Option<&str>,
    ) -> Result<Self, JidError> {
        Ok(Jid {
            local: local.map(normalise_local).transpose()?,
            domain: normalise_domain(domain)?,
            resource: resource.map(check_resource).transpose()?,
        })
    }

    /// A bare domain JID.
    pub fn from_domain(domain: &str) -> Result<Self, JidError> {
        Jid::new(None, domain, None)
    }

    /// The localpart, normalised.
    pub fn local(&self) -> Option<&str> {
        self.local.as_deref()
    }

    /// The domainpart, lowercased, without a final dot.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The resourcepart.
    pub fn resource(&self) -> Option<&str> {
        self.resource.as_deref()
    }

    /// The JID without its resource.
    pub fn bare(&self) -> Jid {
        Jid {
            local: self.local.clone(),
            domain: self.domain.clone(),
            resource: None,
        }
    }

    /// Whether there is no resource.
    pub fn is_bare(&self) -> bool {
        self.resource.is_none()
    }

    /// The JID with `resource` as its resourcepart.
    pub fn with_resource(&self, resource: &str) -> Result<Jid, JidError> {
        Ok(Jid {
            local: self.local.clone(),
            domain: self.domain.clone(),
            resource: Some(check_resource(resource)?),
        })
    }
}

impl FromStr for Jid {
    type Err = JidError;

    fn from_str(s: &str) -> Result<Self, JidError> {
        // RFC 7622 §3.1: the first '/' starts the resource; the first '@' before it ends the local.
        let (rest, resource) = match s.split_once('/') {
            Some((rest, resource)) => (rest, Some(resource)),
            None => (s, None),
        };
        let (local, domain) = match rest.split_once('@') {
            Some((local, domain)) => (Some(local), domain),
            None => (None, rest),
        };
        Jid::new(local, domain, resource)
    }
}

impl fmt::Display for Jid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(local) = &self.local {
            write!(f, "{local}@")?;
        }
        f.write_str(&self.domain)?;
        if let Some(resource) = &self.resource {
            write!(f, "/{resource}")?;
        }
        Ok(())
    }
}

fn check_len(part: JidPart, s: &str) -> Result<(), JidError> {
    if s.is_empty() {
        return Err(JidError::Empty { part });
    }
    if s.len() > MAX_PART_LEN {
        return Err(JidError::TooLarge {
            part,
            len: s.len(),
            max: MAX_PART_LEN,
        });
    }
    Ok(())
}

fn normalise_local(s: &str) -> Result<String, JidError> {
    check_len(JidPart::Local, s)?;
    if let Some(c) = s.chars().find(|&c| {
        matches!(c, '"' | '&' | '\'' | '/' | ':' | '<' | '>' | '@')
            || c.is_whitespace()
            || c.is_control()
    }) {
        return Err(JidError::BadChar {
            part: JidPart::Local,
            c,
        });
    }
    let folded = if s.is_ascii() {
        s.to_ascii_lowercase()
    } else {
        s.to_lowercase()
    };
    check_len(JidPart::Local, &folded)?;
    Ok(folded)
}

fn normalise_domain(s: &str) -> Result<String, JidError> {
    let s = s.strip_suffix('.').unwrap_or(s);
    check_len(JidPart::Domain, s)?;
    if !s.is_ascii() {
        return Err(JidError::NonAsciiDomain);
    }
    if let Some(inner) = s.strip_prefix('[') {
        // IPv6 literal (RFC 7622 §3.2 allows IP-literal).
        let inner = inner.strip_suffix(']').ok_or(JidError::BadDomainLabel)?;
        return match inner.parse::<std::net::Ipv6Addr>() {
            Ok(addr) => Ok(format!("[{addr}]")),
            Err(_) => Err(JidError::BadDomainLabel),
        };
    }
    for label in s.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(JidError::BadDomainLabel);
        }
        if let Some(c) = label
            .chars()
            .find(|&c| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        {
            return Err(JidError::BadChar {
                part: JidPart::Domain,
                c,
            });
        }
    }
    Ok(s.to_ascii_lowercase())
}

fn check_resource(s: &str) -> Result<String, JidError> {
    check_len(JidPart::Resource, s)?;
    if let Some(c) = s.chars().find(|c| c.is_control()) {
        return Err(JidError::BadChar {
            part: JidPart::Resource,
            c,
        });
    }
    Ok(s.to_owned())
}

/// The XEP-0106 escape table: character and its escape sequence.
const ESCAPES: [(char, &str); 10] = [
    (' ', "\\20"),
    ('"', "\\22"),
    ('&', "\\26"),
    ('\'', "\\27"),
    ('/', "\\2f"),
    (':', "\\3a"),
    ('<', "\\3c"),
    ('>', "\\3e"),
    ('@', "\\40"),
    ('\\', "\\5c"),
];

fn escape_at(s: &str) -> Option<char> {
    let seq = s.get(..3)?;
    ESCAPES
        .iter()
        .find(|(_, e)| e.eq_ignore_ascii_case(seq))
        .map(|&(c, _)| c)
}

/// Escapes a string for use as a localpart (XEP-0106 §4.2). A backslash is escaped only when
/// it starts something that would read as an escape sequence. Fails for leading or trailing
/// spaces, which XEP-0106 does not allow to be escaped.
pub fn escape_local(s: &str) -> Result<String, JidError> {
    if s.starts_with(' ') || s.ends_with(' ') {
        return Err(JidError::UnescapableSpace);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for (i, c) in s.char_indices() {
        match ESCAPES.iter().find(|(e, _)| *e == c) {
            Some(('\\', seq)) => {
                if s.get(i..).and_then(escape_at).is_some() {
                    out.push_str(seq);
                } else {
                    out.push('\\');
                }
            }
            Some((_, seq)) => out.push_str(seq),
            None => out.push(c),
        }
    }
    Ok(out)
}

/// Reverses [`escape_local`] (XEP-0106 §4.3): each of the ten escape sequences becomes its
/// character; any other backslash is kept.
pub fn unescape_local(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find('\\') {
        out.push_str(rest.get(..pos).unwrap_or_default());
        let tail = rest.get(pos..).unwrap_or_default();
        match escape_at(tail) {
            Some(c) => {
                out.push(c);
                rest = tail.get(3..).unwrap_or_default();
            }
            None => {
                out.push('\\');
                rest = tail.get(1..).unwrap_or_default();
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jid(s: &str) -> Jid {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn parses_and_normalises() {
        let j = jid("Juliet@Example.COM./Balcony");
        assert_eq!(j.local(), Some("juliet"));
        assert_eq!(j.domain(), "example.com");
        assert_eq!(j.resource(), Some("Balcony"));
        assert_eq!(j.to_string(), "juliet@example.com/Balcony");
        assert_eq!(j.bare().to_string(), "juliet@example.com");
        assert!(j.bare().is_bare());
        assert_eq!(jid("example.com"), Jid::from_domain("EXAMPLE.com").unwrap());
        assert_eq!(jid("a@b/c/d@e").resource(), Some("c/d@e"));
        assert_eq!(jid("ÉLODIE@example.com").local(), Some("élodie"));
        assert_eq!(jid("[::1]").domain(), "[::1]");
        assert_eq!(jid("x@[2001:DB8::1]").domain(), "[2001:db8::1]");
        assert_eq!(
            jid("example.com/r").with_resource("s").unwrap().to_string(),
            "example.com/s"
        );
    }

    #[test]
    fn refuses_bad_jids() {
        let cases: &[(&str, JidError)] = &[
            (
                "",
                JidError::Empty {
                    part: JidPart::Domain,
                },
            ),
            (
                "@example.com",
                JidError::Empty {
                    part: JidPart::Local,
                },
            ),
            (
                "a@example.com/",
                JidError::Empty {
                    part: JidPart::Resource,
                },
            ),
            (
                "a@",
                JidError::Empty {
                    part: JidPart::Domain,
                },
            ),
            (
                "a b@example.com",
                JidError::BadChar {
                    part: JidPart::Local,
                    c: ' ',
                },
            ),
            (
                "a:b@example.com",
                JidError::BadChar {
                    part: JidPart::Local,
                    c: ':',
                },
            ),
            (
                "a@b@example.com",
                JidError::BadChar {
                    part: JidPart::Domain,
                    c: '@',
                },
            ),
            (
                "a@exa mple.com",
                JidError::BadChar {
                    part: JidPart::Domain,
                    c: ' ',
                },
            ),
            ("a@bücher.example", JidError::NonAsciiDomain),
            ("a@example..com", JidError::BadDomainLabel),
            ("a@[::1", JidError::BadDomainLabel),
            ("a@[nope]", JidError::BadDomainLabel),
            (
                "a@example.com/x\u{7}",
                JidError::BadChar {
                    part: JidPart::Resource,
                    c: '\u{7}',
                },
            ),
        ];
        for (s, expected) in cases {
            assert_eq!(s.parse::<Jid>().as_ref(), Err(expected), "{s}");
        }
        let long = "a".repeat(1024);
        assert_eq!(
            format!("{long}@example.com").parse::<Jid>(),
            Err(JidError::TooLarge {
                part: JidPart::Local,
                len: 1024,
                max: 1023
            })
        );
        assert_eq!(
            format!("example.com/{long}").parse::<Jid>(),
            Err(JidError::TooLarge {
                part: JidPart::Resource,
                len: 1024,
                max: 1023
            })
        );
        let label = "a".repeat(64);
        assert_eq!(
            format!("{label}.example").parse::<Jid>(),
            Err(JidError::BadDomainLabel)
        );
        let ok = format!("{}@example.com/{}", "a".repeat(1023), "r".repeat(1023));
        assert!(ok.parse::<Jid>().is_ok());
    }

    /// The examples of XEP-0106 §5 (localparts only).
    const XEP0106: &[(&str, &str)] = &[
        ("space cadet", "space\\20cadet"),
        ("call me \"ishmael\"", "call\\20me\\20\\22ishmael\\22"),
        ("at&t guy", "at\\26t\\20guy"),
        ("d'artagnan", "d\\27artagnan"),
        ("/.fanboy", "\\2f.fanboy"),
        ("::foo::", "\\3a\\3afoo\\3a\\3a"),
        ("<foo>", "\\3cfoo\\3e"),
        ("user@host", "user\\40host"),
        ("c:\\net", "c\\3a\\net"),
        ("c:\\\\net", "c\\3a\\\\net"),
        ("c:\\cool stuff", "c\\3a\\cool\\20stuff"),
        ("c:\\5commas", "c\\3a\\5c5commas"),
    ];

    #[test]
    fn xep0106_examples() {
        for (raw, escaped) in XEP0106 {
            assert_eq!(escape_local(raw).as_deref(), Ok(*escaped), "{raw}");
            assert_eq!(unescape_local(escaped), *raw, "{escaped}");
            let j = jid(&format!("{escaped}@example.com"));
            assert_eq!(j.local(), Some(*escaped));
        }
        assert_eq!(escape_local(" lead"), Err(JidError::UnescapableSpace));
        assert_eq!(escape_local("trail "), Err(JidError::UnescapableSpace));
        assert_eq!(unescape_local("a\\2F\\zz\\"), "a/\\zz\\");
        assert_eq!(unescape_local("é\\20ü"), "é ü");
    }
}
