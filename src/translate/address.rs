//! Address mapping between SIP URIs and JIDs (RFC 7247 §5, XEP-0106, RFC 7622).
//!
//! Owns: turning a `sip:` URI into a JID ([`sip_to_jid`]) and a JID into a `sip:` URI
//! ([`jid_to_sip`], [`jid_to_sip_gruu`]), refusing whatever does not map cleanly with an
//! [`AddressError`] that names the protocol error to send. Never a guess.
//!
//! Out of scope: which domains are hosted or federated, aliases, relay checks (the router's
//! job); `tel:` numbers; SIP URI comparison (RFC 3261 §19.1.4).
//!
//! # SIP → XMPP (RFC 7247 §5.3)
//!
//! 1. Only `sip:`. `sips:` promises TLS on every hop to the end, which XMPP S2S cannot
//!    keep, so it is refused (416), as are `tel:` and every other scheme.
//! 2. The user part is %-decoded; it must be UTF-8 without control characters (NUL, CR,
//!    LF...), not empty, and not begin or end with a space (XEP-0106 §4 cannot escape those).
//! 3. What a localpart cannot hold (`space " & ' / : < > @ \`) is escaped with XEP-0106.
//! 4. The host becomes the domainpart, case-folded; the port, `user=phone`, `transport` and
//!    other parameters and URI headers are dropped: they say how to reach a SIP hop, not who.
//! 5. A GRUU's `;gr=<value>` (RFC 5627) becomes the resource; a bare `;gr` flag (a
//!    temporary GRUU, whose identity lives in the user part) gives a bare JID.
//!
//! A password in the URI is refused: it is deprecated (RFC 3261 §19.1.1) and has no place in
//! a JID.
//!
//! # XMPP → SIP (RFC 7247 §5.2)
//!
//! 1. The localpart is XEP-0106 unescaped, then %-encoded by [`Uri::sip`] for every byte a
//!    SIP user part cannot hold (`#%[\]^{|}`, the backquote, `:`, `@`, space, the
//!    octets of non-ASCII UTF-8).
//! 2. The domainpart (already case-folded by [`Jid`]) becomes the host; no port.
//! 3. A JID without a localpart (a server) has no SIP user and is refused, and so is a
//!    localpart that is not the escaped form of what it unescapes to (`a\5cb`, which
//!    unescapes like `a\b`; `a\20`, a trailing space): it would not map back to itself.
//! 4. The resource is dropped by [`jid_to_sip`] (a SIP user is addressed as a whole, like a
//!    bare JID); [`jid_to_sip_gruu`] keeps it as `;gr=` for the cases where the router must
//!    address one device (a reply inside a session with a full JID).
//!
//! SIP Contact addresses are never mapped: they locate a device for routing, while the
//! identity is the From/To/Request-URI (a GRUU being the one device identity that is).
//!
//! Localparts are case-folded by [`Jid`] (RFC 7622 §3.3), so `sip:Alice@example.com` maps
//! to `alice@example.com` and back to `sip:alice@example.com`.
//!
//! # Worked examples
//!
//! ```text
//!  SIP URI                                      JID
//!  ───────────────────────────────────────────  ─────────────────────────────────────
//!  sip:juliet@example.com                       juliet@example.com
//!  sip:Juliet@Example.COM:5061;transport=tls    juliet@example.com
//!  sip:d'artagnan@example.com                   d\27artagnan@example.com
//!  sip:at%26t%20guy@example.com                 at\26t\20guy@example.com
//!  sip:%C3%A9lodie@example.com                  élodie@example.com
//!  sip:a%2Fb@example.com                        a\2fb@example.com
//!  sip:c%3A%5Cnet@example.com                   c\3a\net@example.com
//!  sip:romeo@example.net;gr=urn:uuid:f81d       romeo@example.net/urn:uuid:f81d
//!  sips:juliet@example.com                      refused: 416 (secure scheme)
//!  tel:+15551234                                refused: 416 (not sip:)
//!  sip:example.com                              refused: 404 (no user part)
//!  sip:a%00b@example.com                        refused: 404 (control character)
//!  sip:%20lead@example.com                      refused: 404 (space at the edge)
//!
//!  JID                                          SIP URI
//!  ───────────────────────────────────────────  ─────────────────────────────────────
//!  romeo@example.net                            sip:romeo@example.net
//!  romeo@example.net/orchard                    sip:romeo@example.net (gruu: ;gr=orchard)
//!  space\20cadet@example.net                    sip:space%20cadet@example.net
//!  c\3a\cool@example.net                        sip:c%3A%5Ccool@example.net
//!  c\3a\5ccool@example.net                      refused: jid-malformed (c:\cool is c\3a\cool)
//!  élodie@example.net                           sip:%C3%A9lodie@example.net
//!  example.net                                  refused: jid-malformed (no localpart)
//! ```

use std::fmt;

use crate::sip::{Scheme, StatusCode, Uri};
use crate::xmpp::error::StanzaErrorCondition;
use crate::xmpp::jid::{escape_local, unescape_local, Jid, JidError, JidPart, MAX_PART_LEN};

/// Why an address does not map. Each variant names the SIP status to answer with when the
/// address is the target of a SIP request, and the XMPP condition when it is the target of
/// a stanza.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AddressError {
    // Peer incompatible.
    /// A `sips:` URI: the gateway cannot keep TLS to the end on the XMPP side.
    SecureScheme,
    /// Not a SIP URI (`tel:`, `im:`, anything else).
    UnsupportedScheme {
        /// The scheme as written.
        scheme: String,
    },
    // Unmappable address.
    /// A SIP URI without a user part, or a JID without a localpart.
    NoUser,
    /// A SIP URI carrying a password.
    HasPassword,
    /// The decoded SIP user part is not UTF-8.
    NotUtf8,
    /// A control character (NUL, CR, LF, DEL...) in the user part or localpart.
    ControlChar {
        /// The character.
        c: char,
    },
    /// The user part begins or ends with a space, which XEP-0106 cannot escape.
    EdgeSpace,
    /// A character the localpart cannot hold even escaped (e.g. non-ASCII white space).
    BadChar {
        /// The character.
        c: char,
    },
    /// The host is not a valid XMPP domainpart.
    BadDomain,
    /// The GRUU value is not a valid resourcepart.
    BadResource,
    /// A part is longer than a JID part may be (1023 bytes, RFC 7622 §3.1).
    TooLarge {
        /// Which part.
        part: JidPart,
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The SIP URI could not be built from the JID (should not happen for a valid JID).
    SipSyntax,
    /// The localpart is not the XEP-0106 escaped form of what it unescapes to (`a\5cb`
    /// unescapes like `a\b`, or to a space at an edge): another JID, or none, would map
    /// back from the SIP URI, so an answer could reach someone else.
    NotCanonical,
}

impl fmt::Display for AddressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AddressError::SecureScheme => f.write_str("sips: uris are not mapped to xmpp"),
            AddressError::UnsupportedScheme { scheme } => {
                write!(f, "uri scheme {scheme:?} is not mapped to xmpp")
            }
            AddressError::NoUser => f.write_str("address has no user part"),
            AddressError::HasPassword => f.write_str("sip uri carries a password"),
            AddressError::NotUtf8 => f.write_str("user part is not utf-8"),
            AddressError::ControlChar { c } => {
                write!(f, "control character {c:?} in user part")
            }
            AddressError::EdgeSpace => f.write_str("user part begins or ends with a space"),
            AddressError::BadChar { c } => write!(f, "character {c:?} cannot be mapped"),
            AddressError::BadDomain => f.write_str("host is not a valid xmpp domain"),
            AddressError::BadResource => f.write_str("gruu is not a valid resource"),
            AddressError::TooLarge { part, len, max } => {
                write!(f, "{part} too large: {len} bytes, limit {max}")
            }
            AddressError::SipSyntax => f.write_str("no sip uri can be built for this jid"),
            AddressError::NotCanonical => {
                f.write_str("localpart is not in xep-0106 escaped form: it would not map back")
            }
        }
    }
}

impl std::error::Error for AddressError {}

impl AddressError {
    /// The SIP status for a request whose target (Request-URI/To) does not map: 416 for a
    /// scheme, 414 for length, 404 otherwise (no such XMPP user can exist). A router refusing
    /// an unmappable *From* should answer 403 instead.
    pub fn sip_status(&self) -> StatusCode {
        match self {
            AddressError::SecureScheme | AddressError::UnsupportedScheme { .. } => {
                StatusCode::UNSUPPORTED_URI_SCHEME
            }
            AddressError::TooLarge { .. } => StatusCode::REQUEST_URI_TOO_LONG,
            AddressError::NoUser
            | AddressError::HasPassword
            | AddressError::NotUtf8
            | AddressError::ControlChar { .. }
            | AddressError::EdgeSpace
            | AddressError::BadChar { .. }
            | AddressError::BadDomain
            | AddressError::BadResource
            | AddressError::SipSyntax
            | AddressError::NotCanonical => StatusCode::NOT_FOUND,
        }
    }

    /// The XMPP condition for a stanza whose address does not map: `jid-malformed`.
    pub fn stanza_condition(&self) -> StanzaErrorCondition {
        StanzaErrorCondition::JidMalformed
    }
}

fn from_jid_error(e: JidError) -> AddressError {
    match e {
        JidError::Empty {
            part: JidPart::Local,
        } => AddressError::NoUser,
        JidError::Empty {
            part: JidPart::Resource,
        } => AddressError::BadResource,
        JidError::TooLarge { part, len, max } => AddressError::TooLarge { part, len, max },
        JidError::BadChar {
            part: JidPart::Local,
            c,
        } => AddressError::BadChar { c },
        JidError::BadChar {
            part: JidPart::Resource,
            ..
        } => AddressError::BadResource,
        JidError::UnescapableSpace => AddressError::EdgeSpace,
        _ => AddressError::BadDomain,
    }
}

/// Decodes `%XX` escapes of a raw URI parameter value; `None` when an escape is broken.
fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if c == b'%' {
            let hex = b.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(c);
            i += 1;
        }
    }
    Some(out)
}

/// Maps a SIP URI to a JID (RFC 7247 §5.3); see the module doc for the rules and examples.
pub fn sip_to_jid(uri: &Uri) -> Result<Jid, AddressError> {
    match uri.scheme() {
        Scheme::Sip => {}
        Scheme::Sips => return Err(AddressError::SecureScheme),
        Scheme::Tel | Scheme::Other => {
            return Err(AddressError::UnsupportedScheme {
                scheme: uri.scheme_str().to_owned(),
            })
        }
    }
    if uri.password().is_some() {
        return Err(AddressError::HasPassword);
    }
    let raw = uri.user_decoded().ok_or(AddressError::NoUser)?;
    if raw.is_empty() {
        return Err(AddressError::NoUser);
    }
    // Refuse early so the escaped form (up to 3x) is never built for a huge input.
    if raw.len() > MAX_PART_LEN {
        return Err(AddressError::TooLarge {
            part: JidPart::Local,
            len: raw.len(),
            max: MAX_PART_LEN,
        });
    }
    let user = std::str::from_utf8(&raw).map_err(|_| AddressError::NotUtf8)?;
    if let Some(c) = user.chars().find(|c| c.is_control()) {
        return Err(AddressError::ControlChar { c });
    }
    let local = escape_local(user).map_err(from_jid_error)?;
    let resource = match uri.param("gr") {
        Some(v) if !v.is_empty() => {
            let bytes = percent_decode(v).ok_or(AddressError::BadResource)?;
            Some(String::from_utf8(bytes).map_err(|_| AddressError::BadResource)?)
        }
        _ => None,
    };
    Jid::new(Some(&local), uri.host(), resource.as_deref()).map_err(from_jid_error)
}

/// Maps a JID to a SIP URI without its resource (RFC 7247 §5.2): the default, because a SIP
/// user is addressed as a whole and the Edge forks to the user's endpoints.
pub fn jid_to_sip(jid: &Jid) -> Result<Uri, AddressError> {
    let local = jid.local().ok_or(AddressError::NoUser)?;
    let user = unescape_local(local);
    if let Some(c) = user.chars().find(|c| c.is_control()) {
        return Err(AddressError::ControlChar { c });
    }
    // Only the one escaped form maps: else two JIDs share a SIP URI, and the answer to one
    // goes to the other (found by the `addresses` fuzz target).
    if escape_local(&user).as_deref() != Ok(local) {
        return Err(AddressError::NotCanonical);
    }
    Uri::sip(false, Some(&user), jid.domain(), None).map_err(|_| AddressError::SipSyntax)
}

/// Maps a JID to a SIP URI keeping a resource as the GRUU parameter `;gr=` (RFC 5627), for
/// when the router must reach one XMPP client (e.g. the answer to a full JID in a session).
/// A bare JID gives the same URI as [`jid_to_sip`].
pub fn jid_to_sip_gruu(jid: &Jid) -> Result<Uri, AddressError> {
    let uri = jid_to_sip(jid)?;
    match jid.resource() {
        Some(resource) => uri
            .with_param("gr", Some(resource))
            .map_err(|_| AddressError::SipSyntax),
        None => Ok(uri),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(s: &str) -> Uri {
        Uri::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn jid(s: &str) -> Jid {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    /// The SIP → XMPP rows of the module doc's worked examples.
    const SIP_TO_JID: &[(&str, &str)] = &[
        ("sip:juliet@example.com", "juliet@example.com"),
        (
            "sip:Juliet@Example.COM:5061;transport=tls",
            "juliet@example.com",
        ),
        ("sip:d'artagnan@example.com", "d\\27artagnan@example.com"),
        ("sip:at%26t%20guy@example.com", "at\\26t\\20guy@example.com"),
        ("sip:%C3%A9lodie@example.com", "élodie@example.com"),
        ("sip:a%2Fb@example.com", "a\\2fb@example.com"),
        ("sip:c%3A%5Cnet@example.com", "c\\3a\\net@example.com"),
        (
            "sip:romeo@example.net;gr=urn:uuid:f81d",
            "romeo@example.net/urn:uuid:f81d",
        ),
    ];

    const SIP_REFUSED: &[(&str, AddressError, u16)] = &[
        ("sips:juliet@example.com", AddressError::SecureScheme, 416),
        ("sip:example.com", AddressError::NoUser, 404),
        (
            "sip:a%00b@example.com",
            AddressError::ControlChar { c: '\0' },
            404,
        ),
        ("sip:%20lead@example.com", AddressError::EdgeSpace, 404),
    ];

    const JID_TO_SIP: &[(&str, &str)] = &[
        ("romeo@example.net", "sip:romeo@example.net"),
        ("romeo@example.net/orchard", "sip:romeo@example.net"),
        (
            "space\\20cadet@example.net",
            "sip:space%20cadet@example.net",
        ),
        ("c\\3a\\cool@example.net", "sip:c%3A%5Ccool@example.net"),
        ("élodie@example.net", "sip:%C3%A9lodie@example.net"),
    ];

    #[test]
    fn worked_examples_sip_to_jid() {
        for (u, j) in SIP_TO_JID {
            assert_eq!(sip_to_jid(&uri(u)), Ok(jid(j)), "{u}");
        }
        for (u, err, status) in SIP_REFUSED {
            let got = sip_to_jid(&uri(u));
            assert_eq!(got.as_ref(), Err(err), "{u}");
            assert_eq!(err.sip_status().as_u16(), *status, "{u}");
            assert_eq!(err.stanza_condition(), StanzaErrorCondition::JidMalformed);
        }
        let tel = sip_to_jid(&uri("tel:+15551234")).unwrap_err();
        assert_eq!(
            tel,
            AddressError::UnsupportedScheme {
                scheme: "tel".into()
            }
        );
        assert_eq!(tel.sip_status(), StatusCode::UNSUPPORTED_URI_SCHEME);
        assert!(sip_to_jid(&uri("im:juliet@example.com")).is_err());
    }

    #[test]
    fn worked_examples_jid_to_sip() {
        for (j, u) in JID_TO_SIP {
            assert_eq!(
                jid_to_sip(&jid(j)).map(|u| u.to_string()),
                Ok(u.to_string())
            );
        }
        assert_eq!(
            jid_to_sip_gruu(&jid("romeo@example.net/orchard")).map(|u| u.to_string()),
            Ok("sip:romeo@example.net;gr=orchard".to_owned())
        );
        assert_eq!(
            jid_to_sip_gruu(&jid("romeo@example.net")).map(|u| u.to_string()),
            Ok("sip:romeo@example.net".to_owned())
        );
        let err = jid_to_sip(&jid("example.net")).unwrap_err();
        assert_eq!(err, AddressError::NoUser);
        assert_eq!(err.stanza_condition(), StanzaErrorCondition::JidMalformed);
    }

    /// Found by the `addresses` fuzz target: `a\5cgasco` and `a\gasco` both unescape to
    /// `a\gasco` and so mapped to one SIP URI, whose answers went to the second JID.
    #[test]
    fn a_localpart_not_in_escaped_form_is_refused() {
        let canonical = jid("a\\gasco@example.com");
        let u = jid_to_sip(&canonical).unwrap();
        assert_eq!(u.as_str(), "sip:a%5Cgasco@example.com");
        assert_eq!(sip_to_jid(&u), Ok(canonical));
        for j in [
            "a\\5cgasco@example.com",
            "a\\5Cgasco@example.com",
            "tail\\20@example.com",
        ] {
            let err = jid_to_sip(&jid(j)).unwrap_err();
            assert_eq!(err, AddressError::NotCanonical, "{j}");
            assert_eq!(err.sip_status(), StatusCode::NOT_FOUND);
            assert_eq!(
                jid_to_sip_gruu(&jid(&format!("{j}/r"))),
                Err(AddressError::NotCanonical)
            );
        }
    }

    #[test]
    fn refuses_passwords_and_bad_hosts() {
        assert_eq!(
            sip_to_jid(&uri("sip:a:secret@example.com")),
            Err(AddressError::HasPassword)
        );
        assert_eq!(
            sip_to_jid(&uri(&format!("sip:a@{}.com", "h".repeat(64)))),
            Err(AddressError::BadDomain)
        );
        assert_eq!(
            sip_to_jid(&uri("sip:a@[::1]")),
            Ok(Jid::new(Some("a"), "[::1]", None).unwrap())
        );
        assert_eq!(
            sip_to_jid(&uri("sip:a%FF@example.com")),
            Err(AddressError::NotUtf8)
        );
        // A bare `;gr` (temporary GRUU) gives a bare JID.
        assert_eq!(
            sip_to_jid(&uri("sip:tgruu.7hs@example.com;gr")),
            Ok(jid("tgruu.7hs@example.com"))
        );
        assert_eq!(
            sip_to_jid(&uri("sip:a@example.com;gr=x%0Ay")),
            Err(AddressError::BadResource)
        );
        assert_eq!(
            sip_to_jid(&uri("sip:a@example.com;gr=%C3%A9t%C3%A9")),
            Ok(jid("a@example.com/été"))
        );
        // Non-ASCII white space: XEP-0106 has no escape for it.
        assert_eq!(
            sip_to_jid(&uri("sip:a%C2%A0b@example.com")),
            Err(AddressError::BadChar { c: '\u{a0}' })
        );
    }

    /// Every hostile character, as a SIP user part (escaped the way `Uri::sip` escapes it).
    const HOSTILE: &[&str] = &[
        "a<b",
        "a>b",
        "a\"b",
        "a'b",
        "a&b",
        "a@b",
        "a/b",
        "a:b",
        "a b",
        "a%b",
        "a\\b",
        "a\\20b",
        "a;b",
        "a?b",
        "a#b",
        "a[b]",
        "a^b",
        "a`b",
        "a{b}|",
        "ü",
        "日本語",
        "a]]>b",
        "😀",
    ];

    #[test]
    fn hostile_characters_round_trip() {
        for raw in HOSTILE {
            let u = Uri::sip(false, Some(raw), "example.com", None).unwrap();
            let j = sip_to_jid(&u).unwrap_or_else(|e| panic!("{raw}: {e}"));
            assert_eq!(j.domain(), "example.com");
            let local = j.local().unwrap();
            assert!(
                !local.contains(['<', '>', '"', '\'', '&', '@', '/', ':', ' ']),
                "{raw} -> {local}"
            );
            let back = jid_to_sip(&j).unwrap();
            let lowered = raw.to_lowercase();
            assert_eq!(
                std::str::from_utf8(&back.user_decoded().unwrap()).unwrap(),
                lowered,
                "{raw}"
            );
            assert_eq!(sip_to_jid(&back), Ok(j), "{raw}");
        }
    }

    #[test]
    fn control_characters_refused() {
        for c in ['\0', '\r', '\n', '\t', '\u{7f}', '\u{1b}', '\u{85}'] {
            let raw = format!("a{c}b");
            let u = Uri::sip(false, Some(&raw), "example.com", None).unwrap();
            assert_eq!(
                sip_to_jid(&u),
                Err(AddressError::ControlChar { c }),
                "{c:?}"
            );
        }
        for raw in [" a", "a ", " "] {
            let u = Uri::sip(false, Some(raw), "example.com", None).unwrap();
            assert_eq!(sip_to_jid(&u), Err(AddressError::EdgeSpace), "{raw:?}");
        }
    }

    #[test]
    fn very_long_user_refused_with_its_length() {
        let raw = "x".repeat(1024);
        let u = Uri::sip(false, Some(&raw), "example.com", None).unwrap();
        let err = sip_to_jid(&u).unwrap_err();
        assert_eq!(
            err,
            AddressError::TooLarge {
                part: JidPart::Local,
                len: 1024,
                max: 1023
            }
        );
        assert_eq!(err.sip_status(), StatusCode::REQUEST_URI_TOO_LONG);
        // Fits before escaping, too long after: still refused, never truncated.
        let raw = "&".repeat(400);
        let u = Uri::sip(false, Some(&raw), "example.com", None).unwrap();
        assert!(matches!(
            sip_to_jid(&u),
            Err(AddressError::TooLarge { len: 1200, .. })
        ));
        let ok = "x".repeat(1023);
        let u = Uri::sip(false, Some(&ok), "example.com", None).unwrap();
        let j = sip_to_jid(&u).unwrap();
        assert_eq!(jid_to_sip(&j).unwrap(), u);
        let big = "%41".repeat(100_000);
        let u = uri(&format!("sip:{big}@example.com"));
        assert!(matches!(
            sip_to_jid(&u),
            Err(AddressError::TooLarge { len: 100_000, .. })
        ));
    }

    #[test]
    fn jid_round_trips() {
        for j in [
            "juliet@example.com",
            "d\\27artagnan@example.com",
            "at\\26t\\20guy@example.com",
            "c\\3a\\net@example.com",
            "c\\3a\\5c5commas@example.com",
            "a\\zz@example.com",
            "élodie@example.com",
            "+15551234@example.com",
            "x@[2001:db8::1]",
        ] {
            let j = jid(j);
            let u = jid_to_sip(&j).unwrap();
            assert_eq!(sip_to_jid(&u), Ok(j.clone()), "{u}");
            let reparsed = uri(u.as_str());
            assert_eq!(sip_to_jid(&reparsed), Ok(j), "{u}");
        }
        let full = jid("romeo@example.net/balcony phone");
        let u = jid_to_sip_gruu(&full).unwrap();
        assert_eq!(u.as_str(), "sip:romeo@example.net;gr=balcony%20phone");
        assert_eq!(sip_to_jid(&u), Ok(full));
    }

    #[test]
    fn domain_case_folded() {
        assert_eq!(
            sip_to_jid(&uri("sip:A@EXAMPLE.Com")).unwrap().domain(),
            "example.com"
        );
        assert_eq!(
            jid_to_sip(&jid("a@EXAMPLE.com")).unwrap().host(),
            "example.com"
        );
    }

    /// Seeded random user parts: never a panic; whatever maps, maps back to itself.
    #[test]
    fn seeded_random_users_round_trip_or_refuse() {
        let mut state: u64 = 0x7247_0106;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        const PIECES: &[&str] = &[
            "a", "Z", "0", " ", "\\", "\\20", "\\5c", "@", "/", ":", "&", "'", "\"", "<", ">", "%",
            ";", "?", "\0", "\r", "\n", "é", "É", "ß", "İ", "\u{a0}", "😀", "]]>",
        ];
        let mut mapped = 0;
        for _ in 0..5_000 {
            let mut user = String::new();
            for _ in 0..=(next() % 12) {
                user.push_str(PIECES[(next() % PIECES.len() as u64) as usize]);
            }
            let u = Uri::sip(false, Some(&user), "example.com", None).unwrap();
            match sip_to_jid(&u) {
                Ok(j) => {
                    mapped += 1;
                    let back = jid_to_sip(&j).unwrap();
                    assert_eq!(sip_to_jid(&back).as_ref(), Ok(&j), "{user:?}");
                }
                Err(e) => {
                    assert!(
                        matches!(e.sip_status().as_u16(), 404 | 414),
                        "{user:?}: {e}"
                    );
                }
            }
        }
        assert!(mapped > 500, "{mapped}");
    }

    #[test]
    fn display_is_lowercase() {
        for e in [
            AddressError::SecureScheme,
            AddressError::NoUser,
            AddressError::ControlChar { c: '\0' },
            AddressError::TooLarge {
                part: JidPart::Local,
                len: 2,
                max: 1,
            },
        ] {
            let s = e.to_string();
            assert_eq!(s, s.to_lowercase());
        }
    }
}
