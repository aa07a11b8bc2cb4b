//! Typing notifications: XEP-0085 chat states ⇄ RFC 3994 isComposing (as RFC 7573 maps them)
//! and Microsoft's INFO `<KeyboardActivity>`.
//!
//! Owns: [`ChatState`] read from and written into `<message>` stanzas; the
//! `application/im-iscomposing+xml` document ([`IsComposing`], RFC 3994 §3–§5) and the
//! Microsoft `application/xml` INFO body ([`KeyboardActivity`]) parsed and written, bounded;
//! the mapping between them ([`chat_state_to_sip`], [`IsComposing::chat_state`],
//! [`KeyboardActivity::chat_state`]).
//!
//! Out of scope: timers. The router keeps them, using [`IsComposing::active_for`] (how long a
//! received `active` holds before it lapses to idle) and [`REFRESH_SECS`] (how often it must
//! repeat an `active` it sends while the XMPP user keeps composing).
//!
//! ```text
//!  XMPP (XEP-0085)                         SIP (RFC 3994)              SIP (Microsoft INFO)
//!  <composing/>                 ────▶      state active, refresh 90    status="type"
//!  <paused/> <inactive/> <active/> ──▶     state idle                  status="idle"
//!  <gone/>                      ────▶      (no document: the session ends, BYE)
//!  <composing/>                 ◀────      state active                status="type"
//!  <paused/>                    ◀────      state idle                  status="idle"
//! ```
//!
//! `idle` becomes `<paused/>`, not `<active/>`: RFC 3994 sends `idle` when a user who was
//! composing stops, which is what XEP-0085 calls paused.
//!
//! Parsing strips an optional BOM and XML declaration (UTF-8 only), then uses the XMPP element
//! parser, so DTDs, comments, processing instructions and entity tricks are refused as they
//! are on a stream. Input is capped at [`MAX_DOCUMENT`] bytes; work is linear in it.

use std::fmt;
use std::time::Duration;

use crate::sip::StatusCode;
use crate::xmpp::element::{Element, Scope, NS_SERVER};
use crate::xmpp::error::StanzaErrorCondition;
use crate::xmpp::stream::parse_fragment;

/// XEP-0085 namespace.
pub const NS_CHATSTATES: &str = "http://jabber.org/protocol/chatstates";
/// RFC 3994 namespace.
pub const NS_ISCOMPOSING: &str = "urn:ietf:params:xml:ns:im-iscomposing";
/// RFC 3994 media type.
pub const ISCOMPOSING_CONTENT_TYPE: &str = "application/im-iscomposing+xml";
/// Media type of Microsoft's INFO typing body.
pub const KEYBOARD_ACTIVITY_CONTENT_TYPE: &str = "application/xml";
/// Largest typing document accepted, in bytes (a real one is under 400).
pub const MAX_DOCUMENT: usize = 4 * 1024;
/// The refresh interval xsgw announces in an `active` document: it repeats `active` this
/// often while the XMPP user is still composing (RFC 3994 §3.2 recommends 90 s).
pub const REFRESH_SECS: u32 = 90;
/// How long a received `active` without a refresh holds (RFC 3994 §4.2: 120 s).
pub const DEFAULT_ACTIVE_SECS: u32 = 120;
/// The largest refresh honoured; a longer one is clamped, so a peer cannot pin "composing".
pub const MAX_REFRESH_SECS: u32 = 3600;
/// Longest `lastactive` / `contenttype` text kept.
const MAX_FIELD: usize = 128;

/// Why a typing document was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TypingError {
    // Local policy.
    /// The document is larger than [`MAX_DOCUMENT`].
    TooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    // Peer misbehaved.
    /// Not well-formed, restricted or non-UTF-8 XML.
    NotXml {
        /// What was wrong.
        detail: String,
    },
    /// Well-formed, but not an `isComposing` / `KeyboardActivity` document.
    WrongRoot {
        /// The root element's name.
        name: String,
    },
    /// The state is missing or not one of the defined values.
    BadState,
    /// A `refresh` that is not a positive number of seconds.
    BadRefresh,
    /// A `lastactive` or `contenttype` value longer than 128 bytes.
    FieldTooLong,
}

impl fmt::Display for TypingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TypingError::TooLarge { len, max } => {
                write!(f, "typing document too large: {len} bytes, limit {max}")
            }
            TypingError::NotXml { detail } => write!(f, "typing document is not xml: {detail}"),
            TypingError::WrongRoot { name } => {
                write!(f, "unexpected typing document root {name:?}")
            }
            TypingError::BadState => f.write_str("typing state missing or unknown"),
            TypingError::BadRefresh => f.write_str("refresh is not a positive integer"),
            TypingError::FieldTooLong => f.write_str("typing document field too long"),
        }
    }
}

impl std::error::Error for TypingError {}

impl TypingError {
    /// The SIP status to answer the MESSAGE/INFO with: 413 for size, else 400.
    pub fn sip_status(&self) -> StatusCode {
        match self {
            TypingError::TooLarge { .. } => StatusCode::REQUEST_ENTITY_TOO_LARGE,
            TypingError::NotXml { .. }
            | TypingError::WrongRoot { .. }
            | TypingError::BadState
            | TypingError::BadRefresh
            | TypingError::FieldTooLong => StatusCode::BAD_REQUEST,
        }
    }

    /// The XMPP condition, should one be needed: `policy-violation` for size, else `bad-request`.
    pub fn stanza_condition(&self) -> StanzaErrorCondition {
        match self {
            TypingError::TooLarge { .. } => StanzaErrorCondition::PolicyViolation,
            TypingError::NotXml { .. }
            | TypingError::WrongRoot { .. }
            | TypingError::BadState
            | TypingError::BadRefresh
            | TypingError::FieldTooLong => StanzaErrorCondition::BadRequest,
        }
    }
}

/// An XEP-0085 chat state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChatState {
    /// `<active/>`: taking part in the chat.
    Active,
    /// `<composing/>`: typing.
    Composing,
    /// `<paused/>`: was typing, stopped.
    Paused,
    /// `<inactive/>`: not paying attention.
    Inactive,
    /// `<gone/>`: left the conversation.
    Gone,
}

impl ChatState {
    /// Every state.
    pub const ALL: &'static [ChatState] = &[
        ChatState::Active,
        ChatState::Composing,
        ChatState::Paused,
        ChatState::Inactive,
        ChatState::Gone,
    ];

    /// The element name.
    pub fn wire_name(self) -> &'static str {
        match self {
            ChatState::Active => "active",
            ChatState::Composing => "composing",
            ChatState::Paused => "paused",
            ChatState::Inactive => "inactive",
            ChatState::Gone => "gone",
        }
    }

    /// The state for an element name.
    pub fn from_wire(name: &str) -> Option<ChatState> {
        ChatState::ALL
            .iter()
            .copied()
            .find(|s| s.wire_name() == name)
    }

    /// The chat-state child element, e.g. `<composing xmlns='http://jabber.org/protocol/chatstates'/>`.
    pub fn to_element(self) -> Element {
        Element::new(self.wire_name(), NS_CHATSTATES)
    }

    /// The chat state carried by a `<message>`, if any (the first one).
    pub fn of_message(message: &Element) -> Option<ChatState> {
        message
            .elements()
            .filter(|e| e.namespace == NS_CHATSTATES)
            .find_map(|e| ChatState::from_wire(&e.name))
    }
}

/// What a chat state becomes toward SIP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SipTyping {
    /// isComposing `active` / KeyboardActivity `type`.
    Composing,
    /// isComposing `idle` / KeyboardActivity `idle`.
    Idle,
    /// No document: the conversation is over (BYE in session mode; nothing in page mode).
    EndSession,
}

/// Maps an XEP-0085 chat state toward SIP (RFC 7573 §4; see the table in the module doc).
pub fn chat_state_to_sip(state: ChatState) -> SipTyping {
    match state {
        ChatState::Composing => SipTyping::Composing,
        ChatState::Paused | ChatState::Inactive | ChatState::Active => SipTyping::Idle,
        ChatState::Gone => SipTyping::EndSession,
    }
}

impl SipTyping {
    /// The RFC 3994 document to send, `None` for [`SipTyping::EndSession`]. An `active` one
    /// announces [`REFRESH_SECS`] and `text/plain`.
    pub fn to_iscomposing(self) -> Option<IsComposing> {
        match self {
            SipTyping::Composing => Some(IsComposing {
                state: ComposingState::Active,
                last_active: None,
                content_type: Some("text/plain".to_owned()),
                refresh: Some(REFRESH_SECS),
            }),
            SipTyping::Idle => Some(IsComposing {
                state: ComposingState::Idle,
                last_active: None,
                content_type: Some("text/plain".to_owned()),
                refresh: None,
            }),
            SipTyping::EndSession => None,
        }
    }

    /// The Microsoft INFO body to send, `None` for [`SipTyping::EndSession`].
    pub fn to_keyboard_activity(self) -> Option<KeyboardActivity> {
        match self {
            SipTyping::Composing => Some(KeyboardActivity::Typing),
            SipTyping::Idle => Some(KeyboardActivity::Idle),
            SipTyping::EndSession => None,
        }
    }
}

/// The RFC 3994 `state` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ComposingState {
    /// The user is composing.
    Active,
    /// The user is not composing.
    Idle,
}

/// An `application/im-iscomposing+xml` document (RFC 3994 §5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsComposing {
    /// `<state>`.
    pub state: ComposingState,
    /// `<lastactive>` (an xs:dateTime, kept as text).
    pub last_active: Option<String>,
    /// `<contenttype>`: what is being composed.
    pub content_type: Option<String>,
    /// `<refresh>` in seconds (only meaningful with `active`).
    pub refresh: Option<u32>,
}

fn strip_prolog(body: &[u8], max: usize) -> Result<&[u8], TypingError> {
    if body.len() > max {
        return Err(TypingError::TooLarge {
            len: body.len(),
            max,
        });
    }
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let body = body.trim_ascii();
    let body = match body.strip_prefix(b"<?xml") {
        Some(rest) => {
            let end = rest
                .windows(2)
                .position(|w| w == b"?>")
                .ok_or_else(|| not_xml("unterminated xml declaration"))?;
            let decl = rest.get(..end).unwrap_or_default().to_ascii_lowercase();
            if let Some(at) = decl.windows(8).position(|w| w == b"encoding") {
                let value = decl.get(at + 8..).unwrap_or_default();
                let value: Vec<u8> = value
                    .iter()
                    .copied()
                    .filter(|b| !matches!(b, b'=' | b'"' | b'\'' | b' ' | b'\t' | b'\r' | b'\n'))
                    .collect();
                if value != b"utf-8" {
                    return Err(not_xml("encoding other than utf-8"));
                }
            }
            rest.get(end + 2..).unwrap_or_default().trim_ascii()
        }
        None => body,
    };
    Ok(body)
}

fn not_xml(detail: &str) -> TypingError {
    TypingError::NotXml {
        detail: detail.to_owned(),
    }
}

fn parse_document(body: &[u8]) -> Result<Element, TypingError> {
    let xml = strip_prolog(body, MAX_DOCUMENT)?;
    parse_fragment(xml).map_err(|e| TypingError::NotXml {
        detail: e.to_string(),
    })
}

fn bounded_text(e: &Element) -> Result<String, TypingError> {
    let t = e.text();
    let t = t.trim();
    if t.len() > MAX_FIELD {
        return Err(TypingError::FieldTooLong);
    }
    Ok(t.to_owned())
}

impl IsComposing {
    /// Parses a document; the first of each child counts, unknown children are ignored
    /// (RFC 3994 §5 allows extensions).
    pub fn parse(body: &[u8]) -> Result<IsComposing, TypingError> {
        let root = parse_document(body)?;
        if !root.is("isComposing", NS_ISCOMPOSING) {
            return Err(TypingError::WrongRoot { name: root.name });
        }
        let state = root
            .child("state", NS_ISCOMPOSING)
            .map(Element::text)
            .ok_or(TypingError::BadState)?;
        let state = match state.trim() {
            s if s.eq_ignore_ascii_case("active") => ComposingState::Active,
            s if s.eq_ignore_ascii_case("idle") => ComposingState::Idle,
            _ => return Err(TypingError::BadState),
        };
        let last_active = root
            .child("lastactive", NS_ISCOMPOSING)
            .map(bounded_text)
            .transpose()?;
        let content_type = root
            .child("contenttype", NS_ISCOMPOSING)
            .map(bounded_text)
            .transpose()?;
        let refresh = match root.child("refresh", NS_ISCOMPOSING) {
            Some(e) => {
                let t = bounded_text(e).map_err(|_| TypingError::BadRefresh)?;
                if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(TypingError::BadRefresh);
                }
                // Digits only: an overflow is just a very long refresh, clamped below.
                let n = t.parse::<u64>().unwrap_or(u64::MAX);
                if n == 0 {
                    return Err(TypingError::BadRefresh);
                }
                Some(u32::try_from(n.min(u64::from(MAX_REFRESH_SECS))).unwrap_or(MAX_REFRESH_SECS))
            }
            None => None,
        };
        Ok(IsComposing {
            state,
            last_active,
            content_type,
            refresh,
        })
    }

    /// Writes the document, with an XML declaration, as RFC 3994 §5 shows it.
    pub fn to_xml(&self) -> String {
        let mut root = Element::new("isComposing", NS_ISCOMPOSING);
        let state = match self.state {
            ComposingState::Active => "active",
            ComposingState::Idle => "idle",
        };
        root = root.with_child(Element::new("state", NS_ISCOMPOSING).with_text(state));
        if let Some(t) = &self.last_active {
            root =
                root.with_child(Element::new("lastactive", NS_ISCOMPOSING).with_text(t.as_str()));
        }
        if let Some(t) = &self.content_type {
            root =
                root.with_child(Element::new("contenttype", NS_ISCOMPOSING).with_text(t.as_str()));
        }
        if let Some(r) = self.refresh {
            root =
                root.with_child(Element::new("refresh", NS_ISCOMPOSING).with_text(r.to_string()));
        }
        let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        root.write_xml(&mut out, &no_namespace_scope());
        out
    }

    /// How long this indication holds before the receiver must treat it as `idle`: the
    /// refresh (clamped to [`MAX_REFRESH_SECS`]) or [`DEFAULT_ACTIVE_SECS`]; zero for `idle`.
    pub fn active_for(&self) -> Duration {
        match self.state {
            ComposingState::Active => Duration::from_secs(u64::from(
                self.refresh
                    .unwrap_or(DEFAULT_ACTIVE_SECS)
                    .min(MAX_REFRESH_SECS),
            )),
            ComposingState::Idle => Duration::ZERO,
        }
    }

    /// The XEP-0085 state to send toward XMPP.
    pub fn chat_state(&self) -> ChatState {
        match self.state {
            ComposingState::Active => ChatState::Composing,
            ComposingState::Idle => ChatState::Paused,
        }
    }
}

fn no_namespace_scope() -> Scope {
    Scope {
        default_ns: String::new(),
        prefixes: Vec::new(),
    }
}

/// Microsoft's INFO typing body: `<KeyboardActivity><status status="type"/></KeyboardActivity>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyboardActivity {
    /// `status="type"`.
    Typing,
    /// `status="idle"`.
    Idle,
}

impl KeyboardActivity {
    /// Parses the INFO body. The elements carry no namespace (our parser reads unprefixed
    /// names in the stream's default, `jabber:server`; both are accepted).
    pub fn parse(body: &[u8]) -> Result<KeyboardActivity, TypingError> {
        let root = parse_document(body)?;
        let plain = |e: &Element| e.namespace.is_empty() || e.namespace == NS_SERVER;
        if root.name != "KeyboardActivity" || !plain(&root) {
            return Err(TypingError::WrongRoot { name: root.name });
        }
        let status = root
            .elements()
            .find(|e| e.name == "status" && plain(e))
            .and_then(|e| e.attr("status"))
            .ok_or(TypingError::BadState)?;
        match status.trim() {
            s if s.eq_ignore_ascii_case("type") => Ok(KeyboardActivity::Typing),
            s if s.eq_ignore_ascii_case("idle") => Ok(KeyboardActivity::Idle),
            _ => Err(TypingError::BadState),
        }
    }

    /// Writes the INFO body as Microsoft clients send it.
    pub fn to_xml(self) -> String {
        let status = match self {
            KeyboardActivity::Typing => "type",
            KeyboardActivity::Idle => "idle",
        };
        let root = Element::new("KeyboardActivity", "")
            .with_child(Element::new("status", "").with_attr("status", status));
        let mut out = String::from("<?xml version=\"1.0\"?>");
        root.write_xml(&mut out, &no_namespace_scope());
        out
    }

    /// The XEP-0085 state to send toward XMPP.
    pub fn chat_state(self) -> ChatState {
        match self {
            KeyboardActivity::Typing => ChatState::Composing,
            KeyboardActivity::Idle => ChatState::Paused,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 3994 §6 example (active, with lastactive, contenttype and refresh).
    const RFC3994_ACTIVE: &[u8] = b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>
<isComposing xmlns=\"urn:ietf:params:xml:ns:im-iscomposing\"
  xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\"
  xsi:schemaLocation=\"urn:ietf:params:xml:ns:im-composing iscomposing.xsd\">
  <state>active</state>
  <contenttype>text/plain</contenttype>
  <refresh>90</refresh>
</isComposing>
";

    const RFC3994_IDLE: &[u8] = b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>
<isComposing xmlns=\"urn:ietf:params:xml:ns:im-iscomposing\">
  <state>idle</state>
  <lastactive>2003-01-27T10:43:00Z</lastactive>
  <contenttype>audio</contenttype>
</isComposing>
";

    const MS_TYPE: &[u8] =
        b"<?xml version=\"1.0\"?><KeyboardActivity><status status=\"type\" /></KeyboardActivity>";
    const MS_IDLE: &[u8] =
        b"<?xml version=\"1.0\"?>\r\n<KeyboardActivity>\r\n<status status=\"idle\"/>\r\n</KeyboardActivity>\r\n";

    #[test]
    fn parses_rfc3994_examples() {
        let a = IsComposing::parse(RFC3994_ACTIVE).unwrap();
        assert_eq!(a.state, ComposingState::Active);
        assert_eq!(a.content_type.as_deref(), Some("text/plain"));
        assert_eq!(a.refresh, Some(90));
        assert_eq!(a.active_for(), Duration::from_secs(90));
        assert_eq!(a.chat_state(), ChatState::Composing);
        let i = IsComposing::parse(RFC3994_IDLE).unwrap();
        assert_eq!(i.state, ComposingState::Idle);
        assert_eq!(i.last_active.as_deref(), Some("2003-01-27T10:43:00Z"));
        assert_eq!(i.refresh, None);
        assert_eq!(i.active_for(), Duration::ZERO);
        assert_eq!(i.chat_state(), ChatState::Paused);
    }

    #[test]
    fn writes_and_reads_back() {
        for t in [SipTyping::Composing, SipTyping::Idle] {
            let doc = t.to_iscomposing().unwrap();
            let xml = doc.to_xml();
            assert!(
                xml.contains("xmlns='urn:ietf:params:xml:ns:im-iscomposing'"),
                "{xml}"
            );
            assert_eq!(IsComposing::parse(xml.as_bytes()), Ok(doc));
            let ka = t.to_keyboard_activity().unwrap();
            assert_eq!(KeyboardActivity::parse(ka.to_xml().as_bytes()), Ok(ka));
        }
        assert_eq!(
            KeyboardActivity::Typing.to_xml(),
            "<?xml version=\"1.0\"?><KeyboardActivity><status status='type'/></KeyboardActivity>"
        );
        let hostile = IsComposing {
            state: ComposingState::Active,
            last_active: Some("<&\"']]>".into()),
            content_type: Some("text/plain; x=\"ü\"".into()),
            refresh: Some(60),
        };
        assert_eq!(IsComposing::parse(hostile.to_xml().as_bytes()), Ok(hostile));
    }

    #[test]
    fn chat_states_map_both_ways() {
        assert_eq!(
            chat_state_to_sip(ChatState::Composing),
            SipTyping::Composing
        );
        assert_eq!(chat_state_to_sip(ChatState::Paused), SipTyping::Idle);
        assert_eq!(chat_state_to_sip(ChatState::Inactive), SipTyping::Idle);
        assert_eq!(chat_state_to_sip(ChatState::Active), SipTyping::Idle);
        assert_eq!(chat_state_to_sip(ChatState::Gone), SipTyping::EndSession);
        assert_eq!(SipTyping::EndSession.to_iscomposing(), None);
        assert_eq!(SipTyping::EndSession.to_keyboard_activity(), None);
        assert_eq!(
            SipTyping::Composing.to_iscomposing().unwrap().refresh,
            Some(REFRESH_SECS)
        );
        assert_eq!(
            KeyboardActivity::parse(MS_TYPE),
            Ok(KeyboardActivity::Typing)
        );
        assert_eq!(KeyboardActivity::parse(MS_IDLE), Ok(KeyboardActivity::Idle));
        assert_eq!(KeyboardActivity::Typing.chat_state(), ChatState::Composing);
        assert_eq!(KeyboardActivity::Idle.chat_state(), ChatState::Paused);
        // Round trip through SIP keeps "is typing" / "is not typing".
        for s in ChatState::ALL {
            if let Some(doc) = chat_state_to_sip(*s).to_iscomposing() {
                let back = doc.chat_state();
                assert_eq!(back == ChatState::Composing, *s == ChatState::Composing);
            }
        }
    }

    #[test]
    fn chat_state_in_message() {
        for s in ChatState::ALL {
            let m = Element::new("message", NS_SERVER)
                .with_child(Element::new("body", NS_SERVER).with_text("x"))
                .with_child(s.to_element());
            assert_eq!(ChatState::of_message(&m), Some(*s));
            let xml = m.to_stream_xml();
            let back = parse_fragment(xml.as_bytes()).unwrap();
            assert_eq!(ChatState::of_message(&back), Some(*s));
        }
        let m = Element::new("message", NS_SERVER)
            .with_child(Element::new("composing", "urn:other"))
            .with_child(Element::new("bogus", NS_CHATSTATES));
        assert_eq!(ChatState::of_message(&m), None);
    }

    #[test]
    fn refresh_bounds() {
        let doc = |r: &str| {
            format!(
                "<isComposing xmlns='{NS_ISCOMPOSING}'><state>active</state><refresh>{r}</refresh></isComposing>"
            )
        };
        let parse = |r: &str| IsComposing::parse(doc(r).as_bytes());
        assert_eq!(parse("0"), Err(TypingError::BadRefresh));
        assert_eq!(parse("-5"), Err(TypingError::BadRefresh));
        assert_eq!(parse(""), Err(TypingError::BadRefresh));
        assert_eq!(parse("1e3"), Err(TypingError::BadRefresh));
        assert_eq!(parse(" 60 ").unwrap().refresh, Some(60));
        assert_eq!(
            parse("99999999999999999999999").unwrap().refresh,
            Some(MAX_REFRESH_SECS)
        );
        assert_eq!(
            parse("7200").unwrap().active_for(),
            Duration::from_secs(u64::from(MAX_REFRESH_SECS))
        );
        let no_refresh = IsComposing::parse(
            format!("<isComposing xmlns='{NS_ISCOMPOSING}'><state>ACTIVE</state></isComposing>")
                .as_bytes(),
        )
        .unwrap();
        assert_eq!(no_refresh.active_for(), Duration::from_secs(120));
    }

    #[test]
    fn refuses_bad_documents() {
        type Case<'a> = (&'a [u8], fn(&TypingError) -> bool);
        let cases: &[Case] = &[
            (b"", |e| matches!(e, TypingError::NotXml { .. })),
            (b"not xml", |e| matches!(e, TypingError::NotXml { .. })),
            (b"<isComposing xmlns='urn:ietf:params:xml:ns:im-iscomposing'>", |e| {
                matches!(e, TypingError::NotXml { .. })
            }),
            (b"<isComposing><state>active</state></isComposing>", |e| {
                matches!(e, TypingError::WrongRoot { .. })
            }),
            (
                b"<isComposing xmlns='urn:ietf:params:xml:ns:im-iscomposing'/>",
                |e| *e == TypingError::BadState,
            ),
            (
                b"<isComposing xmlns='urn:ietf:params:xml:ns:im-iscomposing'><state>busy</state></isComposing>",
                |e| *e == TypingError::BadState,
            ),
            (
                b"<?xml version='1.0' encoding='ISO-8859-1'?><isComposing xmlns='urn:ietf:params:xml:ns:im-iscomposing'><state>idle</state></isComposing>",
                |e| matches!(e, TypingError::NotXml { .. }),
            ),
            (
                b"<!DOCTYPE x [<!ENTITY a 'b'>]><isComposing xmlns='urn:ietf:params:xml:ns:im-iscomposing'><state>idle</state></isComposing>",
                |e| matches!(e, TypingError::NotXml { .. }),
            ),
            (
                b"<isComposing xmlns='urn:ietf:params:xml:ns:im-iscomposing'><state>&xxe;</state></isComposing>",
                |e| matches!(e, TypingError::NotXml { .. }),
            ),
            (
                b"<isComposing xmlns='urn:ietf:params:xml:ns:im-iscomposing'><!-- c --><state>idle</state></isComposing>",
                |e| matches!(e, TypingError::NotXml { .. }),
            ),
            (b"<?xml version='1.0'", |e| matches!(e, TypingError::NotXml { .. })),
        ];
        for (input, check) in cases {
            let err = IsComposing::parse(input).unwrap_err();
            assert!(check(&err), "{:?}: {err}", String::from_utf8_lossy(input));
            assert!(matches!(err.sip_status().as_u16(), 400 | 413));
        }
        let big = vec![b' '; MAX_DOCUMENT + 1];
        let err = IsComposing::parse(&big).unwrap_err();
        assert_eq!(
            err,
            TypingError::TooLarge {
                len: MAX_DOCUMENT + 1,
                max: MAX_DOCUMENT
            }
        );
        assert_eq!(err.sip_status(), StatusCode::REQUEST_ENTITY_TOO_LARGE);
        assert_eq!(
            err.stanza_condition(),
            StanzaErrorCondition::PolicyViolation
        );
        let long = format!(
            "<isComposing xmlns='{NS_ISCOMPOSING}'><state>idle</state><lastactive>{}</lastactive></isComposing>",
            "9".repeat(200)
        );
        assert_eq!(
            IsComposing::parse(long.as_bytes()),
            Err(TypingError::FieldTooLong)
        );
        for bad in [
            &b"<KeyboardActivity><status status='run'/></KeyboardActivity>"[..],
            b"<KeyboardActivity/>",
            b"<KeyboardActivity xmlns='urn:x'><status status='type'/></KeyboardActivity>",
            b"<Other><status status='type'/></Other>",
        ] {
            assert!(KeyboardActivity::parse(bad).is_err());
        }
        assert!(KeyboardActivity::parse(RFC3994_ACTIVE).is_err());
        assert!(IsComposing::parse(MS_TYPE).is_err());
    }

    use crate::testing::Rng;

    const SPICE: &[&[u8]] = &[
        b"<",
        b">",
        b"&",
        b"'",
        b"\"",
        b"]]>",
        b"<!--",
        b"<?pi?>",
        b"&amp;",
        b"&#0;",
        b"\xC3",
        b"\xFF",
        b"\0",
        b"<state>",
        b"</state>",
        b"xmlns:a='x'",
        b"<![CDATA[",
        b"<a:b>",
    ];

    fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
        let mut v = input.to_vec();
        for _ in 0..=rng.below(4) {
            let at = rng.below(v.len() + 1);
            match rng.below(4) {
                0 if !v.is_empty() => {
                    let i = rng.below(v.len());
                    v[i] ^= 1 << rng.below(8);
                }
                1 => v.truncate(at),
                2 => {
                    let s = SPICE[rng.below(SPICE.len())];
                    v.splice(at..at, s.iter().copied());
                }
                _ => {
                    let end = (at + rng.below(16)).min(v.len());
                    v.drain(at..end);
                }
            }
        }
        v
    }

    #[test]
    fn seeded_mutations_never_panic() {
        let mut rng = Rng(0x5EED_0085_3994);
        let seeds: &[&[u8]] = &[RFC3994_ACTIVE, RFC3994_IDLE, MS_TYPE, MS_IDLE];
        for _ in 0..20_000 {
            let seed = seeds[rng.below(seeds.len())];
            let input = mutate(&mut rng, seed);
            if let Ok(doc) = IsComposing::parse(&input) {
                // Whatever is accepted writes back to something that parses the same.
                assert_eq!(IsComposing::parse(doc.to_xml().as_bytes()), Ok(doc));
            }
            if let Ok(ka) = KeyboardActivity::parse(&input) {
                assert_eq!(KeyboardActivity::parse(ka.to_xml().as_bytes()), Ok(ka));
            }
        }
    }

    #[test]
    fn every_truncation_is_refused_or_whole() {
        for seed in [RFC3994_ACTIVE, RFC3994_IDLE, MS_TYPE, MS_IDLE] {
            let whole_is = IsComposing::parse(seed).is_ok();
            let whole_ka = KeyboardActivity::parse(seed).is_ok();
            let end = seed.trim_ascii_end().len();
            for cut in 0..end {
                let part = &seed[..cut];
                assert!(IsComposing::parse(part).is_err() || !whole_is || cut >= end);
                assert!(KeyboardActivity::parse(part).is_err() || !whole_ka || cut >= end);
            }
        }
    }
}
