//! Server dialback: keys (XEP-0185) and the `db:result` / `db:verify` elements (XEP-0220).
//!
//! Owns: computing and checking dialback keys, and converting the four forms of each dialback
//! element (request, valid, invalid, error) to and from [`Element`]s.
//!
//! Out of scope: when to send what (the S2S session state machines), finding the
//! authoritative server (DNS SRV), piggybacking bookkeeping (XEP-0220 §2.6; per session).
//!
//! ```text
//!  Originating (example.org)        Receiving (xmpp.example.com)       Authoritative (example.org)
//!   │── stream header, id ◀──────────────│                                    │
//!   │── <db:result from=o to=r>KEY ─────▶│                                    │
//!   │                                    │── <db:verify from=r to=o id=ID>KEY ▶│
//!   │                                    │◀─ <db:verify type='valid'|'invalid'>│
//!   │◀─ <db:result type='valid'|'invalid'>│                                    │
//! ```
//!
//! Key (XEP-0185 §3): `hex(HMAC-SHA256(key = hex(SHA256(secret)), msg = "receiving originating id"))`.
//! The HMAC key is the *hex text* of the SHA-256 digest, not its 32 raw bytes.

use std::fmt;

use ring::{digest, hmac};

use super::element::{Element, NS_DIALBACK, NS_SERVER};
use super::error::{StanzaError, StanzaErrorParseError};

/// Longest dialback key accepted, in bytes (a SHA-256 key is 64 hex digits).
pub const MAX_KEY_LEN: usize = 1024;

/// The dialback key for a stream (XEP-0185 §3).
///
/// `receiving` is the domain the stream was opened to, `originating` the domain that wants
/// to send, `stream_id` the id the receiving server gave the stream.
pub fn dialback_key(secret: &str, receiving: &str, originating: &str, stream_id: &str) -> String {
    let secret_hex = hex(digest::digest(&digest::SHA256, secret.as_bytes()).as_ref());
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret_hex.as_bytes());
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(receiving.as_bytes());
    ctx.update(b" ");
    ctx.update(originating.as_bytes());
    ctx.update(b" ");
    ctx.update(stream_id.as_bytes());
    hex(ctx.sign().as_ref())
}

/// Whether `key` (hex, either case) is the dialback key for these parameters. The tag is
/// compared in constant time (`ring::hmac::verify`).
pub fn verify_key(
    secret: &str,
    receiving: &str,
    originating: &str,
    stream_id: &str,
    key: &str,
) -> bool {
    let Some(tag) = unhex(key.trim()) else {
        return false;
    };
    let secret_hex = hex(digest::digest(&digest::SHA256, secret.as_bytes()).as_ref());
    let hkey = hmac::Key::new(hmac::HMAC_SHA256, secret_hex.as_bytes());
    let mut msg = Vec::with_capacity(receiving.len() + originating.len() + stream_id.len() + 2);
    msg.extend_from_slice(receiving.as_bytes());
    msg.push(b' ');
    msg.extend_from_slice(originating.as_bytes());
    msg.push(b' ');
    msg.extend_from_slice(stream_id.as_bytes());
    hmac::verify(&hkey, &msg, &tag).is_ok()
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        for nibble in [b >> 4, b & 0x0f] {
            out.push(char::from_digit(u32::from(nibble), 16).unwrap_or('0'));
        }
    }
    out
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 || text.len() > MAX_KEY_LEN {
        return None;
    }
    let nibble = |c: u8| {
        char::from(c)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
    };
    text.as_bytes()
        .chunks(2)
        .map(|pair| Some(nibble(*pair.first()?)? << 4 | nibble(*pair.get(1)?)?))
        .collect()
}

/// What a dialback element says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DialbackKind {
    /// A request carrying the key (no `type`).
    Request {
        /// The dialback key.
        key: String,
    },
    /// `type='valid'`.
    Valid,
    /// `type='invalid'`.
    Invalid,
    /// `type='error'` with the stanza error (XEP-0220 §2.4).
    Error(StanzaError),
}

/// `<db:result/>`: the originating server asks to be accepted for `from` → `to` (XEP-0220 §2.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbResult {
    /// Sender domain of the element.
    pub from: String,
    /// Recipient domain of the element.
    pub to: String,
    /// Request, answer or error.
    pub kind: DialbackKind,
}

/// `<db:verify/>`: the receiving server asks the authoritative server about a key (XEP-0220 §2.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbVerify {
    /// Sender domain of the element.
    pub from: String,
    /// Recipient domain of the element.
    pub to: String,
    /// The stream id the key was issued for.
    pub id: String,
    /// Request, answer or error.
    pub kind: DialbackKind,
}

/// Either dialback element, as read from a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dialback {
    /// `<db:result/>`.
    Result(DbResult),
    /// `<db:verify/>`.
    Verify(DbVerify),
}

/// Why a dialback element could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DialbackError {
    /// The element is not `db:result` or `db:verify`.
    NotDialback,
    /// A required attribute is absent or empty.
    MissingAttribute {
        /// The attribute's name.
        name: &'static str,
    },
    /// The `type` attribute is not `valid`, `invalid` or `error`.
    UnknownType {
        /// The value received.
        value: String,
    },
    /// A request without a key.
    EmptyKey,
    /// A key longer than [`MAX_KEY_LEN`].
    TooLarge {
        /// Key length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// `type='error'` without a readable `<error/>` child.
    BadError(StanzaErrorParseError),
}

impl fmt::Display for DialbackError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DialbackError::NotDialback => f.write_str("not a dialback element"),
            DialbackError::MissingAttribute { name } => {
                write!(f, "dialback element without '{name}'")
            }
            DialbackError::UnknownType { value } => write!(f, "unknown dialback type '{value}'"),
            DialbackError::EmptyKey => f.write_str("dialback request without a key"),
            DialbackError::TooLarge { len, max } => {
                write!(f, "dialback key too large: {len} bytes, limit {max}")
            }
            DialbackError::BadError(e) => write!(f, "dialback error: {e}"),
        }
    }
}

impl std::error::Error for DialbackError {}

fn kind_into(element: Element, kind: &DialbackKind) -> Element {
    match kind {
        DialbackKind::Request { key } => element.with_text(key.as_str()),
        DialbackKind::Valid => element.with_attr("type", "valid"),
        DialbackKind::Invalid => element.with_attr("type", "invalid"),
        DialbackKind::Error(err) => element
            .with_attr("type", "error")
            .with_child(err.to_element(NS_SERVER)),
    }
}

fn kind_from(element: &Element) -> Result<DialbackKind, DialbackError> {
    match element.attr("type") {
        None => {
            let key = element.text();
            let key = key.trim();
            if key.is_empty() {
                return Err(DialbackError::EmptyKey);
            }
            if key.len() > MAX_KEY_LEN {
                return Err(DialbackError::TooLarge {
                    len: key.len(),
                    max: MAX_KEY_LEN,
                });
            }
            Ok(DialbackKind::Request {
                key: key.to_owned(),
            })
        }
        Some("valid") => Ok(DialbackKind::Valid),
        Some("invalid") => Ok(DialbackKind::Invalid),
        Some("error") => {
            // COMPAT: the <error/> child is in the content namespace per XEP-0220 examples;
            // some servers put it in the dialback namespace.
            let error = element
                .child("error", NS_SERVER)
                .map(|e| StanzaError::from_element(e, NS_SERVER))
                .or_else(|| {
                    element
                        .child("error", NS_DIALBACK)
                        .map(|e| StanzaError::from_element(e, NS_DIALBACK))
                })
                .unwrap_or(Err(StanzaErrorParseError::NotAnError))
                .map_err(DialbackError::BadError)?;
            Ok(DialbackKind::Error(error))
        }
        Some(other) => Err(DialbackError::UnknownType {
            value: other.to_owned(),
        }),
    }
}

fn required(element: &Element, name: &'static str) -> Result<String, DialbackError> {
    match element.attr(name) {
        Some(v) if !v.is_empty() => Ok(v.to_owned()),
        _ => Err(DialbackError::MissingAttribute { name }),
    }
}

impl DbResult {
    /// The `<db:result/>` element.
    pub fn to_element(&self) -> Element {
        let e = Element::new("result", NS_DIALBACK)
            .with_attr("from", self.from.as_str())
            .with_attr("to", self.to.as_str());
        kind_into(e, &self.kind)
    }
}

impl DbVerify {
    /// The `<db:verify/>` element.
    pub fn to_element(&self) -> Element {
        let e = Element::new("verify", NS_DIALBACK)
            .with_attr("from", self.from.as_str())
            .with_attr("to", self.to.as_str())
            .with_attr("id", self.id.as_str());
        kind_into(e, &self.kind)
    }
}

impl Dialback {
    /// Reads a `db:result` or `db:verify` element.
    pub fn from_element(element: &Element) -> Result<Self, DialbackError> {
        if element.namespace != NS_DIALBACK {
            return Err(DialbackError::NotDialback);
        }
        match element.name.as_str() {
            "result" => Ok(Dialback::Result(DbResult {
                from: required(element, "from")?,
                to: required(element, "to")?,
                kind: kind_from(element)?,
            })),
            "verify" => Ok(Dialback::Verify(DbVerify {
                from: required(element, "from")?,
                to: required(element, "to")?,
                id: required(element, "id")?,
                kind: kind_from(element)?,
            })),
            _ => Err(DialbackError::NotDialback),
        }
    }

    /// The element for either form.
    pub fn to_element(&self) -> Element {
        match self {
            Dialback::Result(r) => r.to_element(),
            Dialback::Verify(v) => v.to_element(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xmpp::error::StanzaErrorCondition;
    use crate::xmpp::stream::parse_fragment;

    const SECRET: &str = "s3cr3tf0rd14lb4ck";
    const KEY: &str = "37c69b1cf07a3f67c04a5ef5902fa5114f2c76fe4a2686482ba5b89323075643";

    #[test]
    fn xep0185_test_vector() {
        assert_eq!(
            dialback_key(SECRET, "xmpp.example.com", "example.org", "D60000229F"),
            KEY
        );
    }

    #[test]
    fn raw_digest_as_hmac_key_would_differ() {
        let raw = digest::digest(&digest::SHA256, SECRET.as_bytes());
        let key = hmac::Key::new(hmac::HMAC_SHA256, raw.as_ref());
        let wrong = hex(hmac::sign(&key, b"xmpp.example.com example.org D60000229F").as_ref());
        assert_ne!(wrong, KEY);
    }

    #[test]
    fn verification() {
        assert!(verify_key(
            SECRET,
            "xmpp.example.com",
            "example.org",
            "D60000229F",
            KEY
        ));
        assert!(verify_key(
            SECRET,
            "xmpp.example.com",
            "example.org",
            "D60000229F",
            &KEY.to_uppercase()
        ));
        assert!(!verify_key(
            SECRET,
            "xmpp.example.com",
            "example.org",
            "D60000229G",
            KEY
        ));
        assert!(!verify_key(
            "other",
            "xmpp.example.com",
            "example.org",
            "D60000229F",
            KEY
        ));
        assert!(!verify_key(
            SECRET,
            "xmpp.example.com",
            "example.org",
            "D60000229F",
            &KEY[..62]
        ));
        assert!(!verify_key(
            SECRET,
            "xmpp.example.com",
            "example.org",
            "D60000229F",
            "zz"
        ));
        assert!(!verify_key(
            SECRET,
            "xmpp.example.com",
            "example.org",
            "D60000229F",
            "é"
        ));
        assert!(!verify_key(
            SECRET,
            "xmpp.example.com",
            "example.org",
            "D60000229F",
            ""
        ));
        assert_eq!(unhex("0aFf"), Some(vec![0x0a, 0xff]));
        assert_eq!(unhex("0"), None);
    }

    fn round_trip(d: &Dialback) {
        let xml = d.to_element().to_stream_xml();
        let parsed = Dialback::from_element(&parse_fragment(xml.as_bytes()).unwrap()).unwrap();
        assert_eq!(&parsed, d, "{xml}");
    }

    #[test]
    fn elements_round_trip() {
        let kinds = [
            DialbackKind::Request {
                key: KEY.to_owned(),
            },
            DialbackKind::Valid,
            DialbackKind::Invalid,
            DialbackKind::Error(StanzaError::new(StanzaErrorCondition::ItemNotFound)),
        ];
        for kind in kinds {
            round_trip(&Dialback::Result(DbResult {
                from: "a.example".into(),
                to: "b.example".into(),
                kind: kind.clone(),
            }));
            round_trip(&Dialback::Verify(DbVerify {
                from: "a.example".into(),
                to: "b.example".into(),
                id: "D60000229F".into(),
                kind,
            }));
        }
    }

    #[test]
    fn wire_forms() {
        let r = DbResult {
            from: "example.org".into(),
            to: "xmpp.example.com".into(),
            kind: DialbackKind::Valid,
        };
        assert_eq!(
            r.to_element().to_stream_xml(),
            "<db:result from='example.org' to='xmpp.example.com' type='valid'/>"
        );
        let e = parse_fragment(
            b"<db:result from='target.tld' to='sender.tld' type='error'><error type='cancel'>\
              <item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></db:result>",
        )
        .unwrap();
        let Dialback::Result(r) = Dialback::from_element(&e).unwrap() else {
            panic!()
        };
        assert_eq!(
            r.kind,
            DialbackKind::Error(StanzaError::new(StanzaErrorCondition::ItemNotFound))
        );
    }

    #[test]
    fn bad_elements() {
        let cases: &[(&[u8], DialbackError)] = &[
            (
                b"<db:result to='b'>k</db:result>",
                DialbackError::MissingAttribute { name: "from" },
            ),
            (
                b"<db:verify from='a' to='b'>k</db:verify>",
                DialbackError::MissingAttribute { name: "id" },
            ),
            (
                b"<db:result from='a' to='b'> </db:result>",
                DialbackError::EmptyKey,
            ),
            (
                b"<db:result from='a' to='b' type='maybe'/>",
                DialbackError::UnknownType {
                    value: "maybe".into(),
                },
            ),
            (
                b"<db:result from='a' to='b' type='error'/>",
                DialbackError::BadError(StanzaErrorParseError::NotAnError),
            ),
            (b"<db:foo from='a' to='b'/>", DialbackError::NotDialback),
            (b"<result from='a' to='b'/>", DialbackError::NotDialback),
        ];
        for (xml, expected) in cases {
            let e = parse_fragment(xml).unwrap();
            assert_eq!(
                Dialback::from_element(&e).as_ref(),
                Err(expected),
                "{}",
                String::from_utf8_lossy(xml)
            );
        }
        let long = format!(
            "<db:result from='a' to='b'>{}</db:result>",
            "a".repeat(MAX_KEY_LEN + 1)
        );
        let e = parse_fragment(long.as_bytes()).unwrap();
        assert!(matches!(
            Dialback::from_element(&e),
            Err(DialbackError::TooLarge { .. })
        ));
    }
}
