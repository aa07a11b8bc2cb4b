//! Instant messages: XMPP `<message>` ⇄ SIP MESSAGE (RFC 7572), and the SDP of Microsoft-style
//! IM sessions (protocol notes §3).
//!
//! Owns: what a `<message>` becomes toward SIP ([`message_to_sip`] → [`OutgoingMessage`],
//! whose [`OutgoingMessage::add_to`] fills a [`MessageBuilder`]), what a SIP MESSAGE (or a
//! Microsoft typing INFO) becomes toward XMPP ([`sip_to_message`], [`info_to_message`]), and
//! the `m=message` offer/answer ([`parse_im_sdp`], [`im_answer`], [`im_offer`]).
//!
//! Out of scope: addresses (the router maps them with `address` first and hands the results
//! in), Via/From-tag/CSeq and transactions (the router and `sip::transaction`), dialogs and
//! when to open, reuse or close a session, and *when* to answer: the router answers the SIP
//! request 200 only once the stanza is on an authenticated stream (never promise early).
//!
//! ```text
//!  XMPP → SIP (RFC 7572 §4)                      SIP → XMPP (RFC 7572 §5)
//!  <message type='chat'|'normal' id=…>           MESSAGE sip:bob@… SIP/2.0
//!    <subject>S</subject>          ──▶  Subject: S                ──▶  <subject>S</subject>
//!    <body xml:lang='fr'>B</body>  ──▶  Content-Language: fr      ──▶  xml:lang='fr'
//!                                       Content-Type: text/plain; charset=UTF-8
//!                                       B (body)                  ──▶  <body>B</body>
//!    <thread>T</thread>            ──▶  Call-ID: T (if it is one) ──▶  <thread>Call-ID</thread>
//!  (type chat, or normal/absent)                                  ──▶  <message type='chat'>
//! ```
//!
//! Bodies: `text/plain` with `charset=UTF-8`, `us-ascii` or none is accepted; other charsets
//! and media types get 415 (answer with an `Accept` of [`ACCEPTED_TYPES`]);
//! `application/im-iscomposing+xml` becomes a chat-state message (see `typing`). A body over
//! [`ImLimits::max_body`] bytes is refused both ways (`policy-violation` / 413), never cut.
//! Characters XML cannot carry (C0 controls other than tab, CR, LF) arrive as U+FFFD; all
//! others, `< & " ' ]]>` and non-ASCII included, arrive intact.
//!
//! # Session mode SDP (Microsoft)
//! ```text
//!  Edge ─ INVITE, SDP  m=message 5060 sip null               ─▶ xsgw   parse_im_sdp
//!                      a=accept-types:text/plain application/im-iscomposing+xml
//!  Edge ◀ 200 OK, SDP  m=message 5060 sip sip:user@domain    ── xsgw   im_answer
//!                      a=accept-types:text/plain application/im-iscomposing+xml
//! ```
//! Offers with any other media line (audio, video, MSRP) are refused with 488: the gateway
//! carries text only, and refusing beats a half-answered session.

use std::fmt;
use std::net::IpAddr;

use crate::sip::{BuildError, MessageBuilder, Method, Request, StatusCode, Uri};
use crate::xmpp::element::{Element, NS_SERVER, NS_XML};
use crate::xmpp::error::StanzaErrorCondition;
use crate::xmpp::jid::Jid;

use super::typing::{
    IsComposing, KeyboardActivity, TypingError, ISCOMPOSING_CONTENT_TYPE,
    KEYBOARD_ACTIVITY_CONTENT_TYPE,
};

/// The Content-Type of every text MESSAGE xsgw sends.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; charset=UTF-8";
/// What xsgw accepts in a MESSAGE (for the `Accept` of a 415).
pub const ACCEPTED_TYPES: &str = "text/plain, application/im-iscomposing+xml";
/// Default for [`ImLimits::max_body`]: 64 KiB of UTF-8.
pub const DEFAULT_MAX_BODY: usize = 64 * 1024;
/// Longest subject, in bytes, either way.
pub const MAX_SUBJECT: usize = 1024;
/// Longest thread used as a Call-ID; longer ones are kept only in the stanza.
const MAX_CALL_ID: usize = 128;
/// Longest language tag copied between xml:lang and Content-Language.
const MAX_LANG: usize = 35;

/// Size bounds for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImLimits {
    /// Largest body, in bytes, either way (`[sip] max_message`).
    pub max_body: usize,
}

impl Default for ImLimits {
    fn default() -> Self {
        ImLimits {
            max_body: DEFAULT_MAX_BODY,
        }
    }
}

/// Why a message cannot be translated. Each variant names the SIP status (when a SIP request
/// is refused) and the XMPP condition (when a stanza is bounced).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ImError {
    // Local policy.
    /// A body or subject over its limit.
    TooLarge {
        /// `body` or `subject`.
        what: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    // Peer incompatible.
    /// A message type other than chat or normal (groupchat, headline, unknown).
    UnsupportedType {
        /// The type attribute.
        message_type: String,
    },
    /// A Content-Type other than text/plain and isComposing.
    UnsupportedMediaType {
        /// The media type received.
        media_type: String,
    },
    /// A text/plain charset other than UTF-8 or US-ASCII.
    UnsupportedCharset {
        /// The charset received.
        charset: String,
    },
    /// A Content-Encoding (compression) xsgw does not undo.
    UnsupportedEncoding {
        /// The coding received.
        coding: String,
    },
    /// A SIP request that is not a MESSAGE (or not an INFO, for typing).
    WrongMethod {
        /// The method received.
        method: String,
    },
    // Peer misbehaved.
    /// Not a `<message>` stanza.
    NotAMessage,
    /// A body without a Content-Type.
    NoContentType,
    /// A body, subject or language that is not UTF-8 (or not ASCII for `us-ascii`).
    NotUtf8,
    /// A bad typing document.
    Typing(TypingError),
    // Nothing to do.
    /// `type='error'`: never answered with an error (RFC 6120 §8.3.1); drop it.
    ErrorStanza,
    /// No body: a stanza with only a chat state (see `typing`) or nothing to carry; an empty
    /// SIP MESSAGE.
    NoBody,
    // Local fault.
    /// The SIP message could not be built (a header value the builder refused).
    Build(BuildError),
}

impl fmt::Display for ImError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImError::TooLarge { what, len, max } => {
                write!(f, "message {what} too large: {len} bytes, limit {max}")
            }
            ImError::UnsupportedType { message_type } => {
                write!(f, "message type {message_type:?} is not translated")
            }
            ImError::UnsupportedMediaType { media_type } => {
                write!(f, "media type {media_type:?} is not accepted")
            }
            ImError::UnsupportedCharset { charset } => {
                write!(f, "charset {charset:?} is not accepted")
            }
            ImError::UnsupportedEncoding { coding } => {
                write!(f, "content-encoding {coding:?} is not accepted")
            }
            ImError::WrongMethod { method } => write!(f, "method {method} carries no message"),
            ImError::NotAMessage => f.write_str("stanza is not a message"),
            ImError::NoContentType => f.write_str("body without content-type"),
            ImError::NotUtf8 => f.write_str("message text is not utf-8"),
            ImError::Typing(e) => write!(f, "{e}"),
            ImError::ErrorStanza => f.write_str("error stanzas are not translated"),
            ImError::NoBody => f.write_str("message has no body"),
            ImError::Build(e) => write!(f, "cannot build sip message: {e}"),
        }
    }
}

impl std::error::Error for ImError {}

impl ImError {
    /// The SIP final response when a SIP request is refused for this reason.
    pub fn sip_status(&self) -> StatusCode {
        match self {
            ImError::TooLarge { .. } => StatusCode::REQUEST_ENTITY_TOO_LARGE,
            ImError::UnsupportedMediaType { .. }
            | ImError::UnsupportedCharset { .. }
            | ImError::UnsupportedEncoding { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ImError::WrongMethod { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ImError::UnsupportedType { .. }
            | ImError::NotAMessage
            | ImError::NoContentType
            | ImError::NotUtf8
            | ImError::ErrorStanza
            | ImError::NoBody => StatusCode::BAD_REQUEST,
            ImError::Typing(e) => e.sip_status(),
            ImError::Build(_) => StatusCode::SERVER_INTERNAL_ERROR,
        }
    }

    /// The XMPP condition when a stanza is bounced for this reason; `None` means drop it
    /// without a bounce (an error stanza, or a stanza with nothing to carry).
    pub fn stanza_condition(&self) -> Option<StanzaErrorCondition> {
        use StanzaErrorCondition as C;
        Some(match self {
            ImError::TooLarge { .. } => C::PolicyViolation,
            ImError::UnsupportedType { .. } | ImError::WrongMethod { .. } => {
                C::FeatureNotImplemented
            }
            ImError::UnsupportedMediaType { .. }
            | ImError::UnsupportedCharset { .. }
            | ImError::UnsupportedEncoding { .. } => C::NotAcceptable,
            ImError::NotAMessage | ImError::NoContentType | ImError::NotUtf8 => C::BadRequest,
            ImError::Typing(e) => e.stanza_condition(),
            ImError::Build(_) => C::InternalServerError,
            ImError::ErrorStanza | ImError::NoBody => return None,
        })
    }
}

impl From<TypingError> for ImError {
    fn from(e: TypingError) -> Self {
        ImError::Typing(e)
    }
}

impl From<BuildError> for ImError {
    fn from(e: BuildError) -> Self {
        ImError::Build(e)
    }
}

/// The SIP MESSAGE to send for an XMPP `<message>`: everything but the transaction fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingMessage {
    /// From URI (mapped from the stanza's `from` by the router).
    pub from: Uri,
    /// Request-URI and To (mapped from the stanza's `to`).
    pub to: Uri,
    /// The text, sent as [`TEXT_CONTENT_TYPE`].
    pub body: String,
    /// `Subject`, single line (CR, LF and tab became spaces).
    pub subject: Option<String>,
    /// The XMPP `<thread>`, as received.
    pub thread: Option<String>,
    /// The thread when it can serve as the Call-ID as is; `None` means the router makes one
    /// (and keeps the thread ↔ Call-ID pair if it wants replies threaded).
    pub call_id: Option<String>,
    /// `Content-Language` from the body's (or the message's) `xml:lang`, when it is a tag.
    pub content_language: Option<String>,
    /// The stanza `id`: what the router addresses a bounce to when the SIP request fails.
    pub id: Option<String>,
}

impl OutgoingMessage {
    /// Adds Subject, Content-Language, Content-Type and the body to `builder`, which the
    /// router started with `MessageBuilder::request(&Method::Message, &self.to)` and filled
    /// with Via, Max-Forwards, From (with tag), To, Call-ID and CSeq.
    pub fn add_to(&self, builder: &mut MessageBuilder) -> Result<(), ImError> {
        if let Some(subject) = &self.subject {
            builder.header("Subject", subject)?;
        }
        if let Some(lang) = &self.content_language {
            builder.header("Content-Language", lang)?;
        }
        builder.body(TEXT_CONTENT_TYPE, self.body.as_bytes().to_vec())?;
        Ok(())
    }
}

/// A language tag as RFC 5646 spells it at its simplest: letters, digits and `-`, 1–35 bytes.
fn language_tag(s: &str) -> Option<String> {
    let s = s.trim();
    let ok = !s.is_empty()
        && s.len() <= MAX_LANG
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !s.starts_with('-');
    ok.then(|| s.to_owned())
}

/// A thread usable verbatim as a Call-ID (`word [@ word]`, a conservative subset).
fn call_id_for(thread: &str) -> Option<String> {
    let is_word = |w: &str| {
        !w.is_empty()
            && w.bytes().all(|b| {
                b.is_ascii_alphanumeric()
                    || matches!(
                        b,
                        b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
                    )
            })
    };
    let ok = thread.len() <= MAX_CALL_ID
        && match thread.split_once('@') {
            Some((a, b)) => is_word(a) && is_word(b),
            None => is_word(thread),
        };
    ok.then(|| thread.to_owned())
}

fn single_line(s: &str) -> String {
    s.chars()
        .map(|c| {
            if matches!(c, '\r' | '\n' | '\t') {
                ' '
            } else {
                c
            }
        })
        .collect()
}

/// Translates an XMPP `<message>` (type chat, normal or absent) into the SIP MESSAGE to send.
/// `from` and `to` are the already mapped addresses. A stanza without a body gives
/// [`ImError::NoBody`]: check [`ChatState::of_message`](super::typing::ChatState::of_message) for typing first.
pub fn message_to_sip(
    message: &Element,
    from: Uri,
    to: Uri,
    limits: &ImLimits,
) -> Result<OutgoingMessage, ImError> {
    if message.name != "message" || message.namespace != NS_SERVER {
        return Err(ImError::NotAMessage);
    }
    match message.attr("type") {
        None | Some("chat") | Some("normal") => {}
        Some("error") => return Err(ImError::ErrorStanza),
        Some(other) => {
            return Err(ImError::UnsupportedType {
                message_type: other.to_owned(),
            })
        }
    }
    let message_lang = message.lang();
    let bodies: Vec<&Element> = message
        .elements()
        .filter(|e| e.is("body", NS_SERVER))
        .collect();
    // RFC 6121 §5.2.3: several bodies differ only in language; pick the default one.
    let body = bodies
        .iter()
        .find(|b| b.lang().is_none() || b.lang() == message_lang)
        .or(bodies.first())
        .ok_or(ImError::NoBody)?;
    let text = body.text();
    if text.is_empty() {
        return Err(ImError::NoBody);
    }
    if text.len() > limits.max_body {
        return Err(ImError::TooLarge {
            what: "body",
            len: text.len(),
            max: limits.max_body,
        });
    }
    let subject = match message.child("subject", NS_SERVER) {
        Some(s) => {
            let s = s.text();
            if s.len() > MAX_SUBJECT {
                return Err(ImError::TooLarge {
                    what: "subject",
                    len: s.len(),
                    max: MAX_SUBJECT,
                });
            }
            Some(single_line(&s)).filter(|s| !s.trim().is_empty())
        }
        None => None,
    };
    let thread = message
        .child("thread", NS_SERVER)
        .map(Element::text)
        .filter(|t| !t.is_empty());
    Ok(OutgoingMessage {
        from,
        to,
        call_id: thread.as_deref().and_then(call_id_for),
        thread,
        body: text,
        subject,
        content_language: body.lang().or(message_lang).and_then(language_tag),
        id: message.attr("id").map(str::to_owned),
    })
}

/// What a SIP MESSAGE becomes toward XMPP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FromSip {
    /// A text message: `<message type='chat'>` with a body.
    Message(Element),
    /// An isComposing indication, as a chat-state-only `<message type='chat'>`; the router
    /// may keep `indication.active_for()` to lapse it to `paused` itself.
    Typing {
        /// The stanza to send.
        stanza: Element,
        /// The document received.
        indication: IsComposing,
    },
}

fn check_encoding(request: &Request) -> Result<(), ImError> {
    match request
        .content_encoding
        .iter()
        .find(|c| !c.eq_ignore_ascii_case("identity"))
    {
        Some(coding) => Err(ImError::UnsupportedEncoding {
            coding: coding.clone(),
        }),
        None => Ok(()),
    }
}

fn base_message(from: &Jid, to: &Jid, request: &Request) -> Element {
    Element::new("message", NS_SERVER)
        .with_attr("type", "chat")
        .with_attr("from", from.to_string())
        .with_attr("to", to.to_string())
        .with_child(Element::new("thread", NS_SERVER).with_text(request.call_id.as_str()))
}

fn unquote(v: &str) -> &str {
    let v = v.trim();
    v.strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(v)
}

/// Translates a SIP MESSAGE (in or out of a dialog) into the stanza to send. `from` and `to`
/// are the already mapped addresses; the stanza gets no `id` (the router adds one if it
/// wants delivery errors to find their way back).
pub fn sip_to_message(
    request: &Request,
    from: &Jid,
    to: &Jid,
    limits: &ImLimits,
) -> Result<FromSip, ImError> {
    if request.method != Method::Message {
        return Err(ImError::WrongMethod {
            method: request.method.as_str().to_owned(),
        });
    }
    let body = request.body();
    if body.is_empty() {
        return Err(ImError::NoBody);
    }
    if body.len() > limits.max_body {
        return Err(ImError::TooLarge {
            what: "body",
            len: body.len(),
            max: limits.max_body,
        });
    }
    check_encoding(request)?;
    let media = request
        .content_type
        .as_ref()
        .ok_or(ImError::NoContentType)?;
    let (_, ct_sub) = ISCOMPOSING_CONTENT_TYPE.split_once('/').unwrap_or_default();
    if media.is("application", ct_sub) {
        let indication = IsComposing::parse(body)?;
        let stanza =
            base_message(from, to, request).with_child(indication.chat_state().to_element());
        return Ok(FromSip::Typing { stanza, indication });
    }
    if !media.is("text", "plain") {
        return Err(ImError::UnsupportedMediaType {
            media_type: format!("{}/{}", media.type_, media.subtype),
        });
    }
    let ascii_only = match media.params.get("charset").map(unquote) {
        None => false,
        Some(c) if c.eq_ignore_ascii_case("utf-8") => false,
        Some(c) if c.eq_ignore_ascii_case("us-ascii") => true,
        Some(c) => {
            return Err(ImError::UnsupportedCharset {
                charset: c.to_owned(),
            })
        }
    };
    let text = std::str::from_utf8(body).map_err(|_| ImError::NotUtf8)?;
    if ascii_only && !text.is_ascii() {
        return Err(ImError::NotUtf8);
    }
    let mut stanza = base_message(from, to, request);
    if let Some(field) = request.message().get("Subject") {
        let subject = field.value_str().ok_or(ImError::NotUtf8)?;
        if subject.len() > MAX_SUBJECT {
            return Err(ImError::TooLarge {
                what: "subject",
                len: subject.len(),
                max: MAX_SUBJECT,
            });
        }
        if !subject.trim().is_empty() {
            stanza
                .children
                .insert(0, element_node("subject", subject.trim()));
        }
    }
    let lang = request
        .header("Content-Language")
        .and_then(|v| v.split(',').next().and_then(language_tag));
    if let Some(lang) = lang {
        stanza.set_attr_ns("lang", NS_XML, lang);
    }
    // Body before thread, as clients write it.
    let body_at = stanza.children.len().saturating_sub(1);
    stanza.children.insert(body_at, element_node("body", text));
    Ok(FromSip::Message(stanza))
}

fn element_node(name: &str, text: &str) -> crate::xmpp::element::Node {
    crate::xmpp::element::Node::Element(Element::new(name, NS_SERVER).with_text(text))
}

/// Translates a Microsoft typing INFO (`application/xml` `<KeyboardActivity>`) into a
/// chat-state message. Other INFO bodies give [`ImError::UnsupportedMediaType`] (or a typing
/// error), which the router answers (415/400) or ignores as it sees fit.
pub fn info_to_message(request: &Request, from: &Jid, to: &Jid) -> Result<Element, ImError> {
    if request.method != Method::Info {
        return Err(ImError::WrongMethod {
            method: request.method.as_str().to_owned(),
        });
    }
    check_encoding(request)?;
    let media = request
        .content_type
        .as_ref()
        .ok_or(ImError::NoContentType)?;
    let (ct_type, ct_sub) = KEYBOARD_ACTIVITY_CONTENT_TYPE
        .split_once('/')
        .unwrap_or_default();
    if !media.is(ct_type, ct_sub) {
        return Err(ImError::UnsupportedMediaType {
            media_type: format!("{}/{}", media.type_, media.subtype),
        });
    }
    let activity = KeyboardActivity::parse(request.body())?;
    Ok(base_message(from, to, request).with_child(activity.chat_state().to_element()))
}

/// The first message of a Microsoft IM session, carried in the INVITE itself:
/// `Ms-Text-Format: text/plain; charset=UTF-8; msgr=…; ms-body=<base64>` (MS-SIPRE). `None`
/// when the INVITE carries none; otherwise the message, as [`sip_to_message`] would make it
/// from a MESSAGE with that body (same limits, charset rules and refusals).
pub fn invite_first_message(
    request: &Request,
    from: &Jid,
    to: &Jid,
    limits: &ImLimits,
) -> Result<Option<Element>, ImError> {
    let Some(value) = request.header("Ms-Text-Format") else {
        return Ok(None);
    };
    // Parsed by hand: base64 values end in `=`, which the media-type grammar refuses
    // unquoted, and Microsoft does not quote them.
    let mut parts = value.split(';').map(str::trim);
    let media_type = parts.next().unwrap_or_default().to_ascii_lowercase();
    let mut encoded = None;
    let mut charset = None;
    for part in parts {
        if let Some((name, v)) = part.split_once('=') {
            match name.trim().to_ascii_lowercase().as_str() {
                "ms-body" => encoded = Some(unquote(v)),
                "charset" => charset = Some(unquote(v)),
                _ => {}
            }
        }
    }
    let Some(encoded) = encoded else {
        return Ok(None);
    };
    if media_type != "text/plain" {
        return Err(ImError::UnsupportedMediaType { media_type });
    }
    // Base64 grows by 4/3: refuse before decoding what could not fit anyway.
    if encoded.len() / 4 * 3 > limits.max_body {
        return Err(ImError::TooLarge {
            what: "body",
            len: encoded.len() / 4 * 3,
            max: limits.max_body,
        });
    }
    let bytes = crate::base64::decode(encoded, limits.max_body.saturating_mul(2))
        .ok_or(ImError::NotUtf8)?;
    if bytes.is_empty() {
        return Ok(None);
    }
    if bytes.len() > limits.max_body {
        return Err(ImError::TooLarge {
            what: "body",
            len: bytes.len(),
            max: limits.max_body,
        });
    }
    match charset {
        None => {}
        Some(c) if c.eq_ignore_ascii_case("utf-8") || c.eq_ignore_ascii_case("us-ascii") => {}
        Some(c) => {
            return Err(ImError::UnsupportedCharset {
                charset: c.to_owned(),
            })
        }
    }
    let text = String::from_utf8(bytes).map_err(|_| ImError::NotUtf8)?;
    let mut stanza = base_message(from, to, request);
    let body_at = stanza.children.len().saturating_sub(1);
    stanza.children.insert(body_at, element_node("body", &text));
    Ok(Some(stanza))
}

// ---------------------------------------------------------------------------------------
// SDP for IM sessions.

/// Largest SDP body accepted.
pub const MAX_SDP: usize = 8 * 1024;
/// Most SDP lines accepted.
pub const MAX_SDP_LINES: usize = 128;
/// Most accept-types entries kept.
const MAX_ACCEPT_TYPES: usize = 32;
/// The port Microsoft endpoints put on `m=message` (meaningless for proto `sip`).
pub const IM_SDP_PORT: u16 = 5060;
/// The types xsgw carries in a session, in answer order.
pub const IM_SESSION_TYPES: &[&str] = &["text/plain", ISCOMPOSING_CONTENT_TYPE];

/// Why an SDP offer/answer for an IM session is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SdpError {
    /// Larger than [`MAX_SDP`].
    TooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// More lines than [`MAX_SDP_LINES`].
    TooManyLines {
        /// The limit.
        max: usize,
    },
    /// Not UTF-8.
    NotUtf8,
    /// A line that is not `x=value`, or a bad `v=`/`m=` line.
    Malformed {
        /// 1-based line number.
        line: usize,
    },
    /// No `m=message ... sip ...` line.
    NoMessageMedia,
    /// A media line xsgw does not carry (audio, video, MSRP, a second message line).
    OtherMedia {
        /// `media proto` of the line.
        media: String,
    },
    /// The offer accepts no type xsgw can send (text/plain).
    NoCommonType,
}

impl fmt::Display for SdpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SdpError::TooLarge { len, max } => {
                write!(f, "sdp too large: {len} bytes, limit {max}")
            }
            SdpError::TooManyLines { max } => write!(f, "sdp has more than {max} lines"),
            SdpError::NotUtf8 => f.write_str("sdp is not utf-8"),
            SdpError::Malformed { line } => write!(f, "sdp line {line} is malformed"),
            SdpError::NoMessageMedia => f.write_str("sdp offers no message media"),
            SdpError::OtherMedia { media } => write!(f, "sdp media {media:?} is not supported"),
            SdpError::NoCommonType => f.write_str("sdp accepts no type in common"),
        }
    }
}

impl std::error::Error for SdpError {}

impl SdpError {
    /// The SIP status for the INVITE: 488 for what is well-formed but unwanted, 400 for
    /// malformed, 413 for size.
    pub fn sip_status(&self) -> StatusCode {
        match self {
            SdpError::TooLarge { .. } | SdpError::TooManyLines { .. } => {
                StatusCode::REQUEST_ENTITY_TOO_LARGE
            }
            SdpError::NotUtf8 | SdpError::Malformed { .. } => StatusCode::BAD_REQUEST,
            SdpError::NoMessageMedia | SdpError::OtherMedia { .. } | SdpError::NoCommonType => {
                StatusCode::NOT_ACCEPTABLE_HERE
            }
        }
    }

    /// The XMPP condition, should one be needed.
    pub fn stanza_condition(&self) -> StanzaErrorCondition {
        match self {
            SdpError::TooLarge { .. } | SdpError::TooManyLines { .. } => {
                StanzaErrorCondition::PolicyViolation
            }
            SdpError::NotUtf8 | SdpError::Malformed { .. } => StanzaErrorCondition::BadRequest,
            SdpError::NoMessageMedia | SdpError::OtherMedia { .. } | SdpError::NoCommonType => {
                StanzaErrorCondition::NotAcceptable
            }
        }
    }
}

/// The `m=message` part of an IM session's SDP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImSdp {
    /// The port (ignored for proto `sip`, echoed for form's sake).
    pub port: u16,
    /// The fourth field: `None` for `null` (an offer), the peer's URI text in an answer.
    pub path: Option<String>,
    /// `a=accept-types` entries, lowercased (session- and media-level); empty when absent.
    pub accept_types: Vec<String>,
}

impl ImSdp {
    /// The types both sides carry, in xsgw's order; text/plain is assumed when the offer
    /// lists none (Microsoft always lists them).
    pub fn common_types(&self) -> Vec<&'static str> {
        if self.accept_types.is_empty() {
            return vec!["text/plain"];
        }
        IM_SESSION_TYPES
            .iter()
            .copied()
            .filter(|ours| {
                let (t, s) = ours.split_once('/').unwrap_or_default();
                self.accept_types.iter().any(|a| match a.split_once('/') {
                    Some((at, as_)) => (at == "*" || at == t) && (as_ == "*" || as_ == s),
                    None => a == "*",
                })
            })
            .collect()
    }
}

/// Parses an IM-session SDP (offer or answer). Exactly one media line, `m=message <port>
/// sip <null|uri>`; anything else is refused.
pub fn parse_im_sdp(body: &[u8]) -> Result<ImSdp, SdpError> {
    if body.len() > MAX_SDP {
        return Err(SdpError::TooLarge {
            len: body.len(),
            max: MAX_SDP,
        });
    }
    let text = std::str::from_utf8(body).map_err(|_| SdpError::NotUtf8)?;
    let mut found: Option<ImSdp> = None;
    let mut accept_types = Vec::new();
    let mut saw_version = false;
    for (i, raw) in text.split('\n').enumerate() {
        let n = i + 1;
        if n > MAX_SDP_LINES {
            return Err(SdpError::TooManyLines { max: MAX_SDP_LINES });
        }
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if line.is_empty() {
            continue;
        }
        let (kind, value) = line
            .split_once('=')
            .ok_or(SdpError::Malformed { line: n })?;
        if kind.len() != 1 || line.contains(['\r', '\0']) {
            return Err(SdpError::Malformed { line: n });
        }
        if !saw_version {
            if kind != "v" || value != "0" {
                return Err(SdpError::Malformed { line: n });
            }
            saw_version = true;
            continue;
        }
        match kind {
            "m" => {
                let fields: Vec<&str> = value.split(' ').filter(|f| !f.is_empty()).collect();
                let (Some(media), Some(port), Some(proto)) =
                    (fields.first(), fields.get(1), fields.get(2))
                else {
                    return Err(SdpError::Malformed { line: n });
                };
                let port = port.split('/').next().unwrap_or_default();
                let port: u16 = port.parse().map_err(|_| SdpError::Malformed { line: n })?;
                let is_ours = media.eq_ignore_ascii_case("message")
                    && proto.eq_ignore_ascii_case("sip")
                    && found.is_none();
                if !is_ours {
                    return Err(SdpError::OtherMedia {
                        media: format!("{media} {proto}").chars().take(64).collect(),
                    });
                }
                let path = match fields.get(3) {
                    Some(p) if p.eq_ignore_ascii_case("null") => None,
                    Some(p) => Some((*p).to_owned()),
                    None => return Err(SdpError::Malformed { line: n }),
                };
                found = Some(ImSdp {
                    port,
                    path,
                    accept_types: Vec::new(),
                });
            }
            "a" => {
                if let Some(list) = value.strip_prefix("accept-types:") {
                    for t in list.split(' ').filter(|t| !t.is_empty()) {
                        if accept_types.len() < MAX_ACCEPT_TYPES && t.len() <= 128 {
                            accept_types.push(t.to_ascii_lowercase());
                        }
                    }
                }
            }
            _ => {}
        }
    }
    if !saw_version {
        return Err(SdpError::Malformed { line: 1 });
    }
    let mut sdp = found.ok_or(SdpError::NoMessageMedia)?;
    sdp.accept_types = accept_types;
    Ok(sdp)
}

fn sdp_text(address: IpAddr, path: &str, types: &[&str]) -> String {
    let family = match address {
        IpAddr::V4(_) => "IP4",
        IpAddr::V6(_) => "IP6",
    };
    format!(
        "v=0\r\no=- 0 0 IN {family} {address}\r\ns=session\r\nc=IN {family} {address}\r\n\
         t=0 0\r\nm=message {IM_SDP_PORT} sip {path}\r\na=accept-types:{}\r\n",
        types.join(" ")
    )
}

/// The answer to an IM-session offer: `m=message 5060 sip <local_uri>` with the common
/// accept-types. Refuses an offer without text/plain (488). `address` fills `o=` and `c=`.
pub fn im_answer(offer: &ImSdp, local_uri: &Uri, address: IpAddr) -> Result<String, SdpError> {
    let types = offer.common_types();
    if !types.contains(&"text/plain") {
        return Err(SdpError::NoCommonType);
    }
    // A parsed Uri holds no white space or control characters: it cannot break the line.
    Ok(sdp_text(address, local_uri.as_str(), &types))
}

/// The offer xsgw sends when it opens an IM session toward SIP: `m=message 5060 sip null`.
pub fn im_offer(address: IpAddr) -> String {
    sdp_text(address, "null", IM_SESSION_TYPES)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::parse_message;
    use crate::translate::typing::ChatState;
    use crate::xmpp::element::Node;
    use crate::xmpp::stream::parse_fragment;
    use std::net::Ipv4Addr;

    #[test]
    fn the_first_message_of_a_microsoft_session_rides_in_the_invite() {
        let from: Jid = "bob@contoso.test".parse().unwrap();
        let to: Jid = "alice@gmail.test".parse().unwrap();
        // "héllo <&> 日本" in UTF-8, base64.
        let encoded = "aMOpbGxvIDwmPiDml6XmnKw=";
        let invite = |format: &str| {
            request(format!(
                "INVITE sip:alice@gmail.test SIP/2.0\r\nVia: SIP/2.0/TLS e:5061;branch=z9hG4bK1\r\nFrom: <sip:bob@contoso.test>;tag=1\r\nTo: <sip:alice@gmail.test>\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\n{format}Content-Length: 0\r\n\r\n"
            ).as_bytes())
        };
        let limits = ImLimits::default();
        let req = invite(&format!(
            "Ms-Text-Format: text/plain; charset=UTF-8;msgr=WAAtAE0AUwA;ms-body={encoded}\r\n"
        ));
        let stanza = invite_first_message(&req, &from, &to, &limits)
            .unwrap()
            .unwrap();
        assert_eq!(
            stanza.child("body", NS_SERVER).unwrap().text(),
            "héllo <&> 日本"
        );
        assert_eq!(stanza.attr("type"), Some("chat"));
        assert_eq!(
            invite_first_message(&invite(""), &from, &to, &limits),
            Ok(None)
        );
        let bad = invite("Ms-Text-Format: text/plain; charset=UTF-8; ms-body=!!!\r\n");
        assert!(invite_first_message(&bad, &from, &to, &limits).is_err());
        let small = ImLimits { max_body: 4 };
        assert!(matches!(
            invite_first_message(&req, &from, &to, &small),
            Err(ImError::TooLarge { .. })
        ));
    }

    const HOSTILE: &str = "< & \" ' ]]> &amp; <b>x</b> é 日本語 😀\r\n\ttab\n%41 \\";

    fn uri(s: &str) -> Uri {
        Uri::parse(s).unwrap()
    }

    fn jid(s: &str) -> Jid {
        s.parse().unwrap()
    }

    fn xmpp_message(body: &str) -> Element {
        Element::new("message", NS_SERVER)
            .with_attr("type", "chat")
            .with_attr("id", "m1")
            .with_attr("from", "romeo@example.net/orchard")
            .with_attr("to", "juliet@contoso.com")
            .with_child(Element::new("body", NS_SERVER).with_text(body))
    }

    fn headers(b: &mut MessageBuilder, call_id: &str) {
        b.header(
            "Via",
            "SIP/2.0/TLS xsgw.example.net:5061;branch=z9hG4bK776asdhds",
        )
        .unwrap()
        .header("Max-Forwards", "70")
        .unwrap()
        .header("From", "<sip:romeo@example.net>;tag=1928301774")
        .unwrap()
        .header("To", "<sip:juliet@contoso.com>")
        .unwrap()
        .header("Call-ID", call_id)
        .unwrap()
        .header("CSeq", "1 MESSAGE")
        .unwrap();
    }

    fn request(bytes: &[u8]) -> Request {
        Request::from_message(parse_message(bytes).unwrap()).unwrap()
    }

    fn sip_request(
        method: &str,
        content_type: Option<&str>,
        extra: &[(&str, &str)],
        body: &[u8],
    ) -> Request {
        let method = Method::from_token(method).unwrap();
        let mut b = MessageBuilder::request(&method, &uri("sip:juliet@contoso.com"));
        b.header(
            "Via",
            "SIP/2.0/TLS edge.contoso.com:5061;branch=z9hG4bKnashds8",
        )
        .unwrap()
        .header("Max-Forwards", "70")
        .unwrap()
        .header("From", "<sip:juliet@contoso.com>;tag=49583")
        .unwrap()
        .header("To", "<sip:romeo@example.net>")
        .unwrap()
        .header("Call-ID", "asd88asd77a@1.2.3.4")
        .unwrap()
        .header("CSeq", &format!("1 {}", method.as_str()))
        .unwrap();
        for (n, v) in extra {
            b.header(n, v).unwrap();
        }
        match content_type {
            Some(ct) => {
                b.body(ct, body.to_vec()).unwrap();
            }
            None => {
                assert!(body.is_empty());
            }
        }
        request(&b.to_bytes())
    }

    fn body_text(e: &Element) -> Option<String> {
        e.child("body", NS_SERVER).map(Element::text)
    }

    #[test]
    fn xmpp_to_sip_and_back_keeps_every_character() {
        let limits = ImLimits::default();
        let m = xmpp_message(HOSTILE);
        // The stanza as it arrives off the wire.
        let m = parse_fragment(m.to_stream_xml().as_bytes()).unwrap();
        let out = message_to_sip(
            &m,
            uri("sip:romeo@example.net"),
            uri("sip:juliet@contoso.com"),
            &limits,
        )
        .unwrap();
        assert_eq!(out.body, HOSTILE);
        assert_eq!(out.id.as_deref(), Some("m1"));
        let mut b = MessageBuilder::request(&Method::Message, &out.to);
        headers(&mut b, "c1@xsgw");
        out.add_to(&mut b).unwrap();
        let req = request(&b.to_bytes());
        assert_eq!(req.body(), HOSTILE.as_bytes());
        assert!(req.content_type.as_ref().unwrap().is("text", "plain"));
        // And the SIP message read back becomes the same text in XMPP.
        let back = sip_to_message(
            &req,
            &jid("romeo@example.net"),
            &jid("juliet@contoso.com"),
            &limits,
        )
        .unwrap();
        let FromSip::Message(stanza) = back else {
            panic!("not a message")
        };
        let reparsed = parse_fragment(stanza.to_stream_xml().as_bytes()).unwrap();
        assert_eq!(body_text(&reparsed).as_deref(), Some(HOSTILE));
        assert_eq!(reparsed.attr("type"), Some("chat"));
    }

    #[test]
    fn sip_to_xmpp_message_fields() {
        let req = sip_request(
            "MESSAGE",
            Some("text/plain; charset=\"UTF-8\""),
            &[
                ("Subject", "Café <plans> & \"more\""),
                ("Content-Language", "fr, en"),
            ],
            "Où êtes-vous ? ]]> <x/>".as_bytes(),
        );
        let FromSip::Message(m) = sip_to_message(
            &req,
            &jid("juliet@contoso.com"),
            &jid("romeo@example.net"),
            &ImLimits::default(),
        )
        .unwrap() else {
            panic!()
        };
        let xml = m.to_stream_xml();
        let m = parse_fragment(xml.as_bytes()).unwrap();
        assert_eq!(m.attr("from"), Some("juliet@contoso.com"));
        assert_eq!(m.attr("to"), Some("romeo@example.net"));
        assert_eq!(m.lang(), Some("fr"));
        assert_eq!(
            m.child("subject", NS_SERVER).map(Element::text).as_deref(),
            Some("Café <plans> & \"more\"")
        );
        assert_eq!(body_text(&m).as_deref(), Some("Où êtes-vous ? ]]> <x/>"));
        assert_eq!(
            m.child("thread", NS_SERVER).map(Element::text).as_deref(),
            Some("asd88asd77a@1.2.3.4")
        );
        let names: Vec<&str> = m.elements().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["subject", "body", "thread"]);
    }

    #[test]
    fn xmpp_to_sip_fields() {
        let mut m = Element::new("message", NS_SERVER)
            .with_child(Element::new("subject", NS_SERVER).with_text("line1\r\nline2"))
            .with_child({
                let mut b = Element::new("body", NS_SERVER).with_text("bonjour");
                b.set_attr_ns("lang", NS_XML, "fr");
                b
            })
            .with_child({
                let mut b = Element::new("body", NS_SERVER).with_text("hello");
                b.set_attr_ns("lang", NS_XML, "en");
                b
            })
            .with_child(
                Element::new("thread", NS_SERVER)
                    .with_text("e0ffe42b28561960c6b12b944a092794b9683a38"),
            );
        m.set_attr_ns("lang", NS_XML, "en");
        let out = message_to_sip(
            &m,
            uri("sip:a@example.net"),
            uri("sip:b@contoso.com"),
            &ImLimits::default(),
        )
        .unwrap();
        assert_eq!(out.body, "hello");
        assert_eq!(out.content_language.as_deref(), Some("en"));
        assert_eq!(out.subject.as_deref(), Some("line1  line2"));
        assert_eq!(out.call_id, out.thread);
        let mut b = MessageBuilder::request(&Method::Message, &out.to);
        headers(&mut b, out.call_id.as_deref().unwrap());
        out.add_to(&mut b).unwrap();
        let req = request(&b.to_bytes());
        assert_eq!(req.header("Subject").as_deref(), Some("line1  line2"));
        assert_eq!(req.header("Content-Language").as_deref(), Some("en"));
        assert_eq!(req.call_id, "e0ffe42b28561960c6b12b944a092794b9683a38");
        // Threads that are not Call-IDs, and languages that are not tags, are not copied.
        let m = xmpp_message("x")
            .with_child(Element::new("thread", NS_SERVER).with_text("a thread <with> spaces"));
        let mut m = m;
        m.set_attr_ns("lang", NS_XML, "en\r\nX-Evil: 1");
        let out =
            message_to_sip(&m, uri("sip:a@b.c"), uri("sip:d@e.f"), &ImLimits::default()).unwrap();
        assert_eq!(out.thread.as_deref(), Some("a thread <with> spaces"));
        assert_eq!(out.call_id, None);
        assert_eq!(out.content_language, None);
    }

    #[test]
    fn message_types() {
        let limits = ImLimits::default();
        let send = |m: &Element| message_to_sip(m, uri("sip:a@b.c"), uri("sip:d@e.f"), &limits);
        for t in ["chat", "normal"] {
            assert!(send(&xmpp_message("x").with_attr("type", t)).is_ok());
        }
        let mut untyped = xmpp_message("x");
        untyped.attributes.retain(|a| a.name != "type");
        assert!(send(&untyped).is_ok());
        let err = send(&xmpp_message("x").with_attr("type", "groupchat")).unwrap_err();
        assert_eq!(
            err.stanza_condition(),
            Some(StanzaErrorCondition::FeatureNotImplemented)
        );
        assert!(matches!(
            send(&xmpp_message("x").with_attr("type", "headline")),
            Err(ImError::UnsupportedType { .. })
        ));
        let err = send(&xmpp_message("x").with_attr("type", "error")).unwrap_err();
        assert_eq!(err, ImError::ErrorStanza);
        assert_eq!(err.stanza_condition(), None);
        let typing_only = Element::new("message", NS_SERVER)
            .with_attr("type", "chat")
            .with_child(ChatState::Composing.to_element());
        assert_eq!(send(&typing_only), Err(ImError::NoBody));
        assert_eq!(
            ChatState::of_message(&typing_only),
            Some(ChatState::Composing)
        );
        assert_eq!(send(&xmpp_message("")), Err(ImError::NoBody));
        assert_eq!(
            send(&Element::new("presence", NS_SERVER)),
            Err(ImError::NotAMessage)
        );
    }

    #[test]
    fn size_bound_both_ways() {
        let limits = ImLimits { max_body: 10 };
        let send = |body: &str| {
            message_to_sip(
                &xmpp_message(body),
                uri("sip:a@b.c"),
                uri("sip:d@e.f"),
                &limits,
            )
        };
        assert!(send("0123456789").is_ok());
        let err = send("01234567890").unwrap_err();
        assert_eq!(
            err,
            ImError::TooLarge {
                what: "body",
                len: 11,
                max: 10
            }
        );
        assert_eq!(
            err.stanza_condition(),
            Some(StanzaErrorCondition::PolicyViolation)
        );
        assert_eq!(err.sip_status(), StatusCode::REQUEST_ENTITY_TOO_LARGE);
        // Multi-byte characters count in bytes: 4 × 3 bytes = 12.
        assert!(matches!(
            send("日本語日"),
            Err(ImError::TooLarge { len: 12, .. })
        ));
        let (from, to) = (jid("a@b.c"), jid("d@e.f"));
        let ok = sip_request("MESSAGE", Some("text/plain"), &[], b"0123456789");
        assert!(sip_to_message(&ok, &from, &to, &limits).is_ok());
        let big = sip_request("MESSAGE", Some("text/plain"), &[], b"01234567890");
        let err = sip_to_message(&big, &from, &to, &limits).unwrap_err();
        assert_eq!(err.sip_status().as_u16(), 413);
        let subject = "s".repeat(MAX_SUBJECT + 1);
        let m = xmpp_message("x").with_child(Element::new("subject", NS_SERVER).with_text(subject));
        assert!(matches!(
            message_to_sip(&m, uri("sip:a@b.c"), uri("sip:d@e.f"), &ImLimits::default()),
            Err(ImError::TooLarge {
                what: "subject",
                ..
            })
        ));
    }

    #[test]
    fn sip_content_types_and_charsets() {
        let (from, to, limits) = (jid("a@b.c"), jid("d@e.f"), ImLimits::default());
        let run = |ct: Option<&str>, extra: &[(&str, &str)], body: &[u8]| {
            sip_to_message(
                &sip_request("MESSAGE", ct, extra, body),
                &from,
                &to,
                &limits,
            )
        };
        for ct in [
            "text/plain",
            "text/plain;charset=utf-8",
            "TEXT/PLAIN; charset=\"UTF-8\"",
            "text/plain; charset=us-ascii",
        ] {
            assert!(
                matches!(run(Some(ct), &[], b"hi"), Ok(FromSip::Message(_))),
                "{ct}"
            );
        }
        let status = |r: Result<FromSip, ImError>| r.unwrap_err().sip_status().as_u16();
        assert_eq!(
            status(run(Some("text/plain; charset=iso-8859-1"), &[], b"hi")),
            415
        );
        assert_eq!(status(run(Some("text/html"), &[], b"<b>hi</b>")), 415);
        assert_eq!(status(run(Some("message/cpim"), &[], b"x")), 415);
        assert_eq!(
            status(run(
                Some("text/plain"),
                &[("Content-Encoding", "gzip")],
                b"x"
            )),
            415
        );
        assert_eq!(status(run(Some("text/plain"), &[], b"\xFF\xFE")), 400);
        assert_eq!(
            status(run(
                Some("text/plain; charset=us-ascii"),
                &[],
                "é".as_bytes()
            )),
            400
        );
        assert_eq!(status(run(None, &[], b"")), 400);
        let err = run(Some("text/html"), &[], b"x").unwrap_err();
        assert_eq!(
            err.stanza_condition(),
            Some(StanzaErrorCondition::NotAcceptable)
        );
        // A NUL in a SIP body becomes U+FFFD in XML, the rest intact.
        let Ok(FromSip::Message(m)) = run(Some("text/plain"), &[], b"a\0b") else {
            panic!()
        };
        let m = parse_fragment(m.to_stream_xml().as_bytes()).unwrap();
        assert_eq!(body_text(&m).as_deref(), Some("a\u{FFFD}b"));
    }

    #[test]
    fn iscomposing_message_becomes_chat_state() {
        let doc = super::super::typing::SipTyping::Composing
            .to_iscomposing()
            .unwrap();
        let req = sip_request(
            "MESSAGE",
            Some(ISCOMPOSING_CONTENT_TYPE),
            &[],
            doc.to_xml().as_bytes(),
        );
        let FromSip::Typing { stanza, indication } =
            sip_to_message(&req, &jid("a@b.c"), &jid("d@e.f"), &ImLimits::default()).unwrap()
        else {
            panic!()
        };
        assert_eq!(indication, doc);
        let stanza = parse_fragment(stanza.to_stream_xml().as_bytes()).unwrap();
        assert_eq!(ChatState::of_message(&stanza), Some(ChatState::Composing));
        assert!(stanza.child("body", NS_SERVER).is_none());
        let bad = sip_request("MESSAGE", Some(ISCOMPOSING_CONTENT_TYPE), &[], b"<nope/>");
        let err =
            sip_to_message(&bad, &jid("a@b.c"), &jid("d@e.f"), &ImLimits::default()).unwrap_err();
        assert!(matches!(
            err,
            ImError::Typing(TypingError::WrongRoot { .. })
        ));
        assert_eq!(err.sip_status().as_u16(), 400);
    }

    #[test]
    fn keyboard_activity_info() {
        let body = KeyboardActivity::Typing.to_xml();
        let req = sip_request("INFO", Some("application/xml"), &[], body.as_bytes());
        let m = info_to_message(&req, &jid("a@b.c"), &jid("d@e.f")).unwrap();
        assert_eq!(ChatState::of_message(&m), Some(ChatState::Composing));
        let idle = sip_request(
            "INFO",
            Some("application/xml"),
            &[],
            KeyboardActivity::Idle.to_xml().as_bytes(),
        );
        let m = info_to_message(&idle, &jid("a@b.c"), &jid("d@e.f")).unwrap();
        assert_eq!(ChatState::of_message(&m), Some(ChatState::Paused));
        let other = sip_request("INFO", Some("application/dtmf-relay"), &[], b"Signal=1");
        assert_eq!(
            info_to_message(&other, &jid("a@b.c"), &jid("d@e.f"))
                .unwrap_err()
                .sip_status()
                .as_u16(),
            415
        );
        let msg = sip_request("MESSAGE", Some("text/plain"), &[], b"x");
        assert!(matches!(
            info_to_message(&msg, &jid("a@b.c"), &jid("d@e.f")),
            Err(ImError::WrongMethod { .. })
        ));
        assert_eq!(
            sip_to_message(&req, &jid("a@b.c"), &jid("d@e.f"), &ImLimits::default())
                .unwrap_err()
                .sip_status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
    }

    #[test]
    fn elements_are_well_ordered_nodes() {
        let req = sip_request("MESSAGE", Some("text/plain"), &[], b"x");
        let FromSip::Message(m) =
            sip_to_message(&req, &jid("a@b.c"), &jid("d@e.f"), &ImLimits::default()).unwrap()
        else {
            panic!()
        };
        assert!(m.children.iter().all(|n| matches!(n, Node::Element(_))));
        assert_eq!(m.lang(), None);
        assert!(m.child("subject", NS_SERVER).is_none());
    }

    /// A Microsoft Lync/OCS IM-session offer (protocol notes §3).
    const MS_OFFER: &[u8] = b"v=0\r\n\
o=- 0 0 IN IP4 10.0.0.5\r\n\
s=session\r\n\
c=IN IP4 10.0.0.5\r\n\
t=0 0\r\n\
m=message 5060 sip null\r\n\
a=accept-types:text/plain multipart/alternative image/gif text/rtf text/html application/x-ms-ink application/ms-imdn+xml text/x-msmsgsinvite application/im-iscomposing+xml\r\n";

    #[test]
    fn answers_a_microsoft_offer() {
        let offer = parse_im_sdp(MS_OFFER).unwrap();
        assert_eq!(offer.port, 5060);
        assert_eq!(offer.path, None);
        assert_eq!(
            offer.common_types(),
            ["text/plain", ISCOMPOSING_CONTENT_TYPE]
        );
        let answer = im_answer(
            &offer,
            &uri("sip:romeo@example.net"),
            IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)),
        )
        .unwrap();
        assert_eq!(
            answer,
            "v=0\r\no=- 0 0 IN IP4 192.0.2.7\r\ns=session\r\nc=IN IP4 192.0.2.7\r\nt=0 0\r\n\
             m=message 5060 sip sip:romeo@example.net\r\n\
             a=accept-types:text/plain application/im-iscomposing+xml\r\n"
        );
        let parsed = parse_im_sdp(answer.as_bytes()).unwrap();
        assert_eq!(parsed.path.as_deref(), Some("sip:romeo@example.net"));
        let offer = im_offer("2001:db8::1".parse().unwrap());
        assert!(offer.contains("c=IN IP6 2001:db8::1\r\n"));
        assert_eq!(parse_im_sdp(offer.as_bytes()).unwrap().path, None);
    }

    #[test]
    fn refuses_other_media_and_bad_sdp() {
        let with =
            |extra: &str| format!("v=0\r\no=- 0 0 IN IP4 1.2.3.4\r\ns=-\r\nt=0 0\r\n{extra}");
        let cases: &[(String, u16)] = &[
            (with("m=audio 49170 RTP/AVP 0\r\n"), 488),
            (
                with("m=message 5060 sip null\r\nm=audio 49170 RTP/AVP 0\r\n"),
                488,
            ),
            (
                with("m=message 7394 TCP/MSRP *\r\na=accept-types:text/plain\r\n"),
                488,
            ),
            (
                with("m=message 5060 sip null\r\nm=message 5060 sip null\r\n"),
                488,
            ),
            (with(""), 488),
            (
                with("m=message 5060 sip null\r\na=accept-types:text/html image/gif\r\n"),
                488,
            ),
            (with("m=message 99999 sip null\r\n"), 400),
            (with("m=message 5060 sip\r\n"), 400),
            (with("garbage\r\n"), 400),
            ("o=- 0 0 IN IP4 1.2.3.4\r\nv=0\r\n".to_owned(), 400),
            (String::new(), 400),
        ];
        for (sdp, status) in cases {
            let result = parse_im_sdp(sdp.as_bytes())
                .and_then(|o| im_answer(&o, &uri("sip:a@b.c"), IpAddr::V4(Ipv4Addr::LOCALHOST)));
            let err = result.unwrap_err();
            assert_eq!(err.sip_status().as_u16(), *status, "{sdp:?}: {err}");
        }
        assert_eq!(parse_im_sdp(b"v=0\r\n\xFF"), Err(SdpError::NotUtf8));
        let big = vec![b'a'; MAX_SDP + 1];
        assert_eq!(parse_im_sdp(&big).unwrap_err().sip_status().as_u16(), 413);
        let many = with(&"a=x\r\n".repeat(MAX_SDP_LINES));
        assert_eq!(
            parse_im_sdp(many.as_bytes()),
            Err(SdpError::TooManyLines { max: MAX_SDP_LINES })
        );
        // Wildcards and a missing accept-types list still get text/plain.
        let star = parse_im_sdp(with("m=message 5060 sip null\r\na=accept-types:*\r\n").as_bytes())
            .unwrap();
        assert_eq!(star.common_types(), IM_SESSION_TYPES);
        let text_star =
            parse_im_sdp(with("m=message 5060 sip null\r\na=accept-types:text/*\r\n").as_bytes())
                .unwrap();
        assert_eq!(text_star.common_types(), ["text/plain"]);
        let none = parse_im_sdp(with("m=message 5060 sip null\r\n").as_bytes()).unwrap();
        assert_eq!(none.common_types(), ["text/plain"]);
    }

    #[test]
    fn sdp_seeded_mutations_never_panic() {
        let mut state: u64 = 0x5D9_7572;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..5_000 {
            let mut v = MS_OFFER.to_vec();
            for _ in 0..(next() % 4 + 1) {
                let at = (next() as usize) % (v.len() + 1);
                match next() % 3 {
                    0 if at < v.len() => v[at] = (next() & 0xFF) as u8,
                    1 => v.truncate(at),
                    _ => v.insert(at, b"\r\n= /:m"[(next() % 7) as usize]),
                }
            }
            if let Ok(offer) = parse_im_sdp(&v) {
                if let Ok(answer) =
                    im_answer(&offer, &uri("sip:a@b.c"), IpAddr::V4(Ipv4Addr::LOCALHOST))
                {
                    assert!(parse_im_sdp(answer.as_bytes()).is_ok());
                }
            }
        }
    }

    /// Seeded mutations of a whole SIP MESSAGE: whatever the SIP parser accepts, the
    /// translation answers with a stanza or a typed error, never a panic.
    #[test]
    fn sip_message_seeded_mutations_never_panic() {
        let seed = {
            let body = "héllo <&> ]]>";
            let mut b = MessageBuilder::request(&Method::Message, &uri("sip:juliet@contoso.com"));
            headers(&mut b, "c1@xsgw");
            b.header("Subject", "s").unwrap();
            b.body("text/plain; charset=UTF-8", body.as_bytes().to_vec())
                .unwrap();
            b.to_bytes()
        };
        let mut state: u64 = 0x3428_7572;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let (from, to, limits) = (jid("a@b.c"), jid("d@e.f"), ImLimits { max_body: 64 });
        let mut translated = 0;
        for _ in 0..5_000 {
            let mut v = seed.clone();
            for _ in 0..(next() % 3 + 1) {
                let at = (next() as usize) % v.len();
                v[at] = (next() & 0xFF) as u8;
            }
            let Ok(m) = parse_message(&v) else { continue };
            let Ok(req) = Request::from_message(m) else {
                continue;
            };
            match sip_to_message(&req, &from, &to, &limits) {
                Ok(FromSip::Message(e)) | Ok(FromSip::Typing { stanza: e, .. }) => {
                    translated += 1;
                    assert!(parse_fragment(e.to_stream_xml().as_bytes()).is_ok());
                }
                Err(e) => assert!(e.sip_status().as_u16() >= 400),
            }
        }
        assert!(translated > 100, "{translated}");
    }

    #[test]
    fn errors_display_lowercase() {
        for e in [
            ImError::NoBody,
            ImError::NotUtf8,
            ImError::TooLarge {
                what: "body",
                len: 2,
                max: 1,
            },
        ] {
            let s = e.to_string();
            assert_eq!(s, s.to_lowercase());
        }
        let s = SdpError::NoCommonType.to_string();
        assert_eq!(s, s.to_lowercase());
    }
}
