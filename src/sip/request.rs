//! The validated layer over [`Message`]: a [`Request`] or [`Response`] holding, typed, what
//! the gateway uses (RFC 3261 §8.1.1 mandatory headers, §20). The received [`Message`] stays
//! inside, so unknown and Microsoft headers (`Ms-Conversation-ID`, ...) remain reachable in
//! order through [`Request::message`].
//!
//! A request whose headers parse but are semantically bad gives a [`MessageError`] that
//! carries an [`AnswerContext`], so the caller can still send the 400 (house style #10).
//! Policy checks that lead to other status codes (416, 420, 415, 483, 505, ...) are in
//! [`super::validate`].

use std::fmt;

use super::grammar::{is_token_str, split_list, trim_ws, SyntaxError};
use super::header::{delta_seconds, CSeq, Contact, MediaType, NameAddr, TokenParams, Via};
use super::message::{AnswerContext, Message};
use super::name::{self, HeaderName};
use super::status::StatusCode;
use super::uri::Uri;

/// A request method (case-sensitive, RFC 3261 §7.1).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Method {
    /// INVITE
    Invite,
    /// ACK
    Ack,
    /// BYE
    Bye,
    /// CANCEL
    Cancel,
    /// OPTIONS
    Options,
    /// REGISTER
    Register,
    /// MESSAGE (RFC 3428)
    Message,
    /// INFO (RFC 6086)
    Info,
    /// SUBSCRIBE (RFC 6665)
    Subscribe,
    /// NOTIFY (RFC 6665)
    Notify,
    /// PUBLISH (RFC 3903)
    Publish,
    /// REFER (RFC 3515)
    Refer,
    /// PRACK (RFC 3262)
    Prack,
    /// UPDATE (RFC 3311)
    Update,
    /// Any other token.
    Other(String),
}

impl Method {
    /// The method named by the token `s` (which must be a token, see [`Method::from_token`]).
    fn known(s: &str) -> Option<Method> {
        Some(match s {
            "INVITE" => Method::Invite,
            "ACK" => Method::Ack,
            "BYE" => Method::Bye,
            "CANCEL" => Method::Cancel,
            "OPTIONS" => Method::Options,
            "REGISTER" => Method::Register,
            "MESSAGE" => Method::Message,
            "INFO" => Method::Info,
            "SUBSCRIBE" => Method::Subscribe,
            "NOTIFY" => Method::Notify,
            "PUBLISH" => Method::Publish,
            "REFER" => Method::Refer,
            "PRACK" => Method::Prack,
            "UPDATE" => Method::Update,
            _ => return None,
        })
    }

    /// The method for a token; `None` when `s` is not a token.
    pub fn from_token(s: &str) -> Option<Method> {
        if !is_token_str(s.as_bytes()) {
            return None;
        }
        Some(Method::known(s).unwrap_or_else(|| Method::Other(s.to_owned())))
    }

    /// The method name.
    pub fn as_str(&self) -> &str {
        match self {
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Options => "OPTIONS",
            Method::Register => "REGISTER",
            Method::Message => "MESSAGE",
            Method::Info => "INFO",
            Method::Subscribe => "SUBSCRIBE",
            Method::Notify => "NOTIFY",
            Method::Publish => "PUBLISH",
            Method::Refer => "REFER",
            Method::Prack => "PRACK",
            Method::Update => "UPDATE",
            Method::Other(s) => s,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a parsed message is not a usable request or response.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HeaderError {
    /// A mandatory header is missing (RFC 4475 `insuf`).
    Missing {
        /// Canonical header name.
        header: &'static str,
    },
    /// A single-valued header occurs more than once (`multi01`, `mcl01`).
    Repeated {
        /// Canonical header name.
        header: &'static str,
    },
    /// A header value does not match its grammar.
    Malformed {
        /// Canonical header name.
        header: &'static str,
        /// What is wrong.
        error: SyntaxError,
    },
    /// The Request-URI is not an absolute URI (`ltgtruri`, `lwsruri`).
    BadRequestUri(SyntaxError),
    /// The CSeq method differs from the request method (`mismatch01`, `mismatch02`).
    CSeqMethodMismatch,
    /// A request was expected and a response was given, or the other way round.
    WrongKind,
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderError::Missing { header } => write!(f, "missing {header}"),
            HeaderError::Repeated { header } => write!(f, "more than one {header}"),
            HeaderError::Malformed { header, error } => write!(f, "malformed {header}: {error}"),
            HeaderError::BadRequestUri(e) => write!(f, "bad request-uri: {e}"),
            HeaderError::CSeqMethodMismatch => {
                f.write_str("cseq method differs from the request method")
            }
            HeaderError::WrongKind => f.write_str("request and response confused"),
        }
    }
}

impl std::error::Error for HeaderError {}

/// A [`HeaderError`] with what is needed to answer it: for a request, the 400 Bad Request
/// built by [`super::build::response_to_context`]; for a response, nothing (it is dropped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageError {
    /// What is wrong.
    pub error: HeaderError,
    /// Via/From/To/Call-ID/CSeq of a request; `None` for a response.
    pub answer: Option<Box<AnswerContext>>,
}

impl MessageError {
    /// The status to answer a request with: always 400 at this layer.
    pub fn status(&self) -> StatusCode {
        StatusCode::BAD_REQUEST
    }
}

impl fmt::Display for MessageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.error.fmt(f)
    }
}

impl std::error::Error for MessageError {}

/// Reads header values of a message, one list element at a time.
struct Reader<'m> {
    m: &'m Message,
}

impl Reader<'_> {
    fn single(&self, h: HeaderName) -> Result<Option<std::borrow::Cow<'_, [u8]>>, HeaderError> {
        let mut it = self.m.all(h);
        let first = it.next();
        if it.next().is_some() {
            return Err(HeaderError::Repeated {
                header: h.canonical,
            });
        }
        Ok(first.map(|f| f.value()))
    }

    fn required<T>(
        &self,
        h: HeaderName,
        parse: impl Fn(&[u8]) -> Result<T, SyntaxError>,
    ) -> Result<T, HeaderError> {
        self.optional(h, parse)?.ok_or(HeaderError::Missing {
            header: h.canonical,
        })
    }

    fn optional<T>(
        &self,
        h: HeaderName,
        parse: impl Fn(&[u8]) -> Result<T, SyntaxError>,
    ) -> Result<Option<T>, HeaderError> {
        match self.single(h)? {
            None => Ok(None),
            Some(v) => parse(&v).map(Some).map_err(|error| HeaderError::Malformed {
                header: h.canonical,
                error,
            }),
        }
    }

    /// Every element of every field of `h`; an empty element is malformed.
    fn list<T>(
        &self,
        h: HeaderName,
        parse: impl Fn(&[u8]) -> Result<T, SyntaxError>,
    ) -> Result<Vec<T>, HeaderError> {
        let mut out = Vec::new();
        for f in self.m.all(h) {
            let v = f.value();
            for item in split_list(&v) {
                let parsed = if item.is_empty() {
                    Err(SyntaxError::Empty)
                } else {
                    parse(item)
                };
                out.push(parsed.map_err(|error| HeaderError::Malformed {
                    header: h.canonical,
                    error,
                })?);
            }
        }
        Ok(out)
    }

    /// Token lists (Require, Supported, ...): empty elements skipped, which allows an empty
    /// header (`Supported:`).
    fn tokens(&self, h: HeaderName) -> Result<Vec<String>, HeaderError> {
        let mut out = Vec::new();
        for f in self.m.all(h) {
            let v = f.value();
            for item in split_list(&v).filter(|i| !i.is_empty()) {
                if !is_token_str(item) {
                    return Err(HeaderError::Malformed {
                        header: h.canonical,
                        error: SyntaxError::UnexpectedByte { at: 0 },
                    });
                }
                out.push(String::from_utf8_lossy(item).into_owned());
            }
        }
        Ok(out)
    }

    fn call_id(&self) -> Result<String, HeaderError> {
        self.required(name::CALL_ID, |v| {
            let v = trim_ws(v);
            if v.is_empty() {
                return Err(SyntaxError::Empty);
            }
            if let Some(at) = v.iter().position(|&b| !b.is_ascii_graphic()) {
                return Err(SyntaxError::UnexpectedByte { at });
            }
            Ok(String::from_utf8_lossy(v).into_owned())
        })
    }

    fn accept(&self) -> Result<Option<Vec<MediaType>>, HeaderError> {
        if self.m.first(name::ACCEPT).is_none() {
            return Ok(None);
        }
        let mut out = Vec::new();
        for f in self.m.all(name::ACCEPT) {
            let v = f.value();
            for item in split_list(&v).filter(|i| !i.is_empty()) {
                out.push(
                    MediaType::parse(item).map_err(|error| HeaderError::Malformed {
                        header: name::ACCEPT.canonical,
                        error,
                    })?,
                );
            }
        }
        Ok(Some(out))
    }

    fn common(&self) -> Result<Common, HeaderError> {
        // Content-Length is framed by the message layer; here only its repetition matters.
        self.single(name::CONTENT_LENGTH)?;
        let via = self.list(name::VIA, Via::parse)?;
        if via.is_empty() {
            return Err(HeaderError::Missing {
                header: name::VIA.canonical,
            });
        }
        Ok(Common {
            via,
            from: self.required(name::FROM, NameAddr::parse)?,
            to: self.required(name::TO, NameAddr::parse)?,
            call_id: self.call_id()?,
            cseq: self.required(name::CSEQ, CSeq::parse)?,
            contact: self.list(name::CONTACT, Contact::parse)?,
            record_route: self.list(name::RECORD_ROUTE, NameAddr::parse)?,
            content_type: self.optional(name::CONTENT_TYPE, MediaType::parse)?,
            // RFC 3261 §20.19: a malformed Expires is treated as 3600.
            expires: self
                .single(name::EXPIRES)?
                .map(|v| delta_seconds(&v).unwrap_or(3600)),
            event: self.optional(name::EVENT, TokenParams::parse)?,
            subscription_state: self.optional(name::SUBSCRIPTION_STATE, TokenParams::parse)?,
            require: self.tokens(name::REQUIRE)?,
            supported: self.tokens(name::SUPPORTED)?,
        })
    }
}

struct Common {
    via: Vec<Via>,
    from: NameAddr,
    to: NameAddr,
    call_id: String,
    cseq: CSeq,
    contact: Vec<Contact>,
    record_route: Vec<NameAddr>,
    content_type: Option<MediaType>,
    expires: Option<u32>,
    event: Option<TokenParams>,
    subscription_state: Option<TokenParams>,
    require: Vec<String>,
    supported: Vec<String>,
}

/// A request with the fields the gateway uses, typed. Public fields are what was received;
/// the original octets stay in [`Request::message`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    message: Message,
    /// Method.
    pub method: Method,
    /// Request-URI (any absolute URI; the scheme is checked by validation).
    pub uri: Uri,
    /// Via elements, top first (at least one).
    pub via: Vec<Via>,
    /// From.
    pub from: NameAddr,
    /// To.
    pub to: NameAddr,
    /// Call-ID.
    pub call_id: String,
    /// CSeq (its method equals `method`).
    pub cseq: CSeq,
    /// Max-Forwards (0–255); `None` when absent (RFC 2543 requests, `inv2543`).
    pub max_forwards: Option<u8>,
    /// Contact elements.
    pub contact: Vec<Contact>,
    /// Route elements, in order.
    pub route: Vec<NameAddr>,
    /// Record-Route elements, in order.
    pub record_route: Vec<NameAddr>,
    /// Content-Type.
    pub content_type: Option<MediaType>,
    /// Content-Encoding tokens.
    pub content_encoding: Vec<String>,
    /// Accept: `None` when absent, `Some(empty)` when present and empty.
    pub accept: Option<Vec<MediaType>>,
    /// Expires in seconds (saturating; malformed counts as 3600).
    pub expires: Option<u32>,
    /// Event (RFC 6665).
    pub event: Option<TokenParams>,
    /// Subscription-State (RFC 6665).
    pub subscription_state: Option<TokenParams>,
    /// Require option tags.
    pub require: Vec<String>,
    /// Proxy-Require option tags.
    pub proxy_require: Vec<String>,
    /// Supported option tags (`ms-...` ones included).
    pub supported: Vec<String>,
}

impl Request {
    /// Types a parsed message; see [`HeaderError`] for what is refused. Mandatory: Via,
    /// From, To, Call-ID, CSeq (Max-Forwards is optional for RFC 2543 peers).
    pub fn from_message(message: Message) -> Result<Request, MessageError> {
        match Request::build(&message) {
            Ok(parts) => Ok(parts.with(message)),
            Err(error) => Err(MessageError {
                error,
                answer: AnswerContext::from_message(&message).map(Box::new),
            }),
        }
    }

    fn build(m: &Message) -> Result<RequestParts, HeaderError> {
        let (Some(method), Some(uri)) = (m.method(), m.request_uri()) else {
            return Err(HeaderError::WrongKind);
        };
        let method = Method::from_token(method).ok_or(HeaderError::WrongKind)?;
        let uri = Uri::parse(uri).map_err(HeaderError::BadRequestUri)?;
        let r = Reader { m };
        let common = r.common()?;
        if common.cseq.method != method.as_str() {
            return Err(HeaderError::CSeqMethodMismatch);
        }
        let max_forwards = r.optional(name::MAX_FORWARDS, |v| {
            super::grammar::parse_decimal(trim_ws(v), 255)
                .and_then(|n| u8::try_from(n).map_err(|_| SyntaxError::NumberOutOfRange))
        })?;
        Ok(RequestParts {
            method,
            uri,
            common,
            max_forwards,
            route: r.list(name::ROUTE, NameAddr::parse)?,
            content_encoding: r.tokens(name::CONTENT_ENCODING)?,
            accept: r.accept()?,
            proxy_require: r.tokens(name::PROXY_REQUIRE)?,
        })
    }

    /// The message as received.
    pub fn message(&self) -> &Message {
        &self.message
    }

    /// The body.
    pub fn body(&self) -> &[u8] {
        self.message.body()
    }

    /// The top Via.
    pub fn top_via(&self) -> Option<&Via> {
        self.via.first()
    }

    /// The branch of the top Via.
    pub fn branch(&self) -> Option<&str> {
        self.top_via().and_then(Via::branch)
    }

    /// The first field named `name` (any header), unfolded, as text.
    pub fn header(&self, name: &str) -> Option<std::borrow::Cow<'_, str>> {
        self.message.get(name).and_then(|f| f.value_str())
    }
}

struct RequestParts {
    method: Method,
    uri: Uri,
    common: Common,
    max_forwards: Option<u8>,
    route: Vec<NameAddr>,
    content_encoding: Vec<String>,
    accept: Option<Vec<MediaType>>,
    proxy_require: Vec<String>,
}

impl RequestParts {
    fn with(self, message: Message) -> Request {
        let c = self.common;
        Request {
            message,
            method: self.method,
            uri: self.uri,
            via: c.via,
            from: c.from,
            to: c.to,
            call_id: c.call_id,
            cseq: c.cseq,
            max_forwards: self.max_forwards,
            contact: c.contact,
            route: self.route,
            record_route: c.record_route,
            content_type: c.content_type,
            content_encoding: self.content_encoding,
            accept: self.accept,
            expires: c.expires,
            event: c.event,
            subscription_state: c.subscription_state,
            require: c.require,
            proxy_require: self.proxy_require,
            supported: c.supported,
        }
    }
}

/// A response with the fields the gateway uses, typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    message: Message,
    /// Status code.
    pub status: StatusCode,
    /// Reason phrase (invalid UTF-8 replaced).
    pub reason: String,
    /// Via elements, top first.
    pub via: Vec<Via>,
    /// From.
    pub from: NameAddr,
    /// To (with the UAS tag on most responses).
    pub to: NameAddr,
    /// Call-ID.
    pub call_id: String,
    /// CSeq: the method tells which transaction this answers.
    pub cseq: CSeq,
    /// Contact elements.
    pub contact: Vec<Contact>,
    /// Record-Route elements.
    pub record_route: Vec<NameAddr>,
    /// Content-Type.
    pub content_type: Option<MediaType>,
    /// Expires.
    pub expires: Option<u32>,
    /// Event.
    pub event: Option<TokenParams>,
    /// Subscription-State.
    pub subscription_state: Option<TokenParams>,
    /// Require.
    pub require: Vec<String>,
    /// Supported.
    pub supported: Vec<String>,
}

impl Response {
    /// Types a parsed response; errors carry no answer (responses are dropped, RFC 3261
    /// §18.1.2). Strict about an overlarge CSeq (`scalarlg`).
    pub fn from_message(message: Message) -> Result<Response, MessageError> {
        let fail = |error| MessageError {
            error,
            answer: None,
        };
        let Some(code) = message.status() else {
            return Err(fail(HeaderError::WrongKind));
        };
        let status = StatusCode::new(code).ok_or(fail(HeaderError::WrongKind))?;
        let c = Reader { m: &message }.common().map_err(fail)?;
        let reason = String::from_utf8_lossy(message.reason().unwrap_or_default()).into_owned();
        Ok(Response {
            status,
            reason,
            via: c.via,
            from: c.from,
            to: c.to,
            call_id: c.call_id,
            cseq: c.cseq,
            contact: c.contact,
            record_route: c.record_route,
            content_type: c.content_type,
            expires: c.expires,
            event: c.event,
            subscription_state: c.subscription_state,
            require: c.require,
            supported: c.supported,
            message,
        })
    }

    /// The message as received.
    pub fn message(&self) -> &Message {
        &self.message
    }

    /// The body.
    pub fn body(&self) -> &[u8] {
        self.message.body()
    }

    /// The branch of the top Via.
    pub fn branch(&self) -> Option<&str> {
        self.via.first().and_then(Via::branch)
    }

    /// The first field named `name` (any header), unfolded, as text.
    pub fn header(&self, name: &str) -> Option<std::borrow::Cow<'_, str>> {
        self.message.get(name).and_then(|f| f.value_str())
    }
}

/// A typed request or response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// A request.
    Request(Box<Request>),
    /// A response.
    Response(Box<Response>),
}

impl Incoming {
    /// Types a parsed message as whichever it is.
    pub fn from_message(m: Message) -> Result<Incoming, MessageError> {
        if m.is_request() {
            Request::from_message(m).map(|r| Incoming::Request(Box::new(r)))
        } else {
            Response::from_message(m).map(|r| Incoming::Response(Box::new(r)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::parse_message;

    const MESSAGE: &[u8] = b"MESSAGE sip:alice@contoso.com SIP/2.0\r\n\
Via: SIP/2.0/TLS edge.contoso.com:5061;branch=z9hG4bK1a2b;received=10.0.0.1\r\n\
Via: SIP/2.0/TLS fe.contoso.com;branch=z9hG4bKzz\r\n\
Max-Forwards: 69\r\n\
From: \"Bob\" <sip:bob@contoso.com>;tag=f1;epid=123\r\n\
To: <sip:alice@contoso.com>\r\n\
Call-ID: c1@contoso.com\r\n\
CSeq: 2 MESSAGE\r\n\
Ms-Conversation-ID: AdC1\r\n\
Supported: ms-dialog-route-set-update, timer\r\n\
Record-Route: <sip:edge.contoso.com:5061;transport=tls;lr>, <sip:fe.contoso.com;lr>\r\n\
Content-Type: text/plain; charset=UTF-8\r\n\
Content-Length: 5\r\n\
\r\n\
hello";

    #[test]
    fn typed_request() {
        let r = Request::from_message(parse_message(MESSAGE).unwrap()).unwrap();
        assert_eq!(r.method, Method::Message);
        assert_eq!(r.uri.user(), Some("alice"));
        assert_eq!(r.via.len(), 2);
        assert_eq!(r.branch(), Some("z9hG4bK1a2b"));
        assert_eq!(r.from.tag(), Some("f1"));
        assert_eq!(r.to.tag(), None);
        assert_eq!(r.cseq.seq, 2);
        assert_eq!(r.max_forwards, Some(69));
        assert_eq!(r.record_route.len(), 2);
        assert_eq!(r.supported, vec!["ms-dialog-route-set-update", "timer"]);
        assert!(r.content_type.as_ref().unwrap().is("text", "plain"));
        assert_eq!(r.body(), b"hello");
        assert_eq!(r.header("ms-conversation-id").as_deref(), Some("AdC1"));
        assert!(r.accept.is_none());
    }

    fn err(msg: &str) -> MessageError {
        Request::from_message(parse_message(msg.as_bytes()).unwrap()).unwrap_err()
    }

    #[test]
    fn refusals_carry_the_answer() {
        let base = "OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/TLS h;branch=z9hG4bKx\r\nFrom: <sip:c@d>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: x\r\n";
        let e = err(&format!("{base}CSeq: 1 INVITE\r\n\r\n"));
        assert_eq!(e.error, HeaderError::CSeqMethodMismatch);
        let ctx = e.answer.unwrap();
        assert_eq!(ctx.call_id.as_deref(), Some("x"));
        assert_eq!(ctx.cseq.as_deref(), Some("1 INVITE"));
        assert_eq!(
            err(&format!("{base}\r\n")).error,
            HeaderError::Missing { header: "CSeq" }
        );
        assert_eq!(
            err(&format!(
                "{base}CSeq: 1 OPTIONS\r\nMax-Forwards: 256\r\n\r\n"
            ))
            .error,
            HeaderError::Malformed {
                header: "Max-Forwards",
                error: SyntaxError::NumberOutOfRange
            }
        );
        assert_eq!(
            err(&format!("{base}CSeq: 1 OPTIONS\r\nCall-ID: y\r\n\r\n")).error,
            HeaderError::Repeated { header: "Call-ID" }
        );
        assert_eq!(
            err(&format!(
                "{base}CSeq: 1 OPTIONS\r\nl: 0\r\nContent-Length: 0\r\n\r\n"
            ))
            .error,
            HeaderError::Repeated {
                header: "Content-Length"
            }
        );
        assert!(matches!(
            err(&format!("{base}CSeq: 1 OPTIONS\r\nRoute: <sip:x>,\r\n\r\n")).error,
            HeaderError::Malformed {
                header: "Route",
                ..
            }
        ));
        let e = err("OPTIONS <sip:a@b> SIP/2.0\r\nVia: SIP/2.0/TLS h\r\n\r\n");
        assert!(matches!(e.error, HeaderError::BadRequestUri(_)));
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn typed_response() {
        let m = parse_message(b"SIP/2.0 200 OK\r\nVia: SIP/2.0/TLS gw.example.com;branch=z9hG4bKa\r\nFrom: <sip:x@y>;tag=1\r\nTo: <sip:a@b>;tag=2\r\nCall-ID: c\r\nCSeq: 3 SUBSCRIBE\r\nExpires: 600\r\nl: 0\r\n\r\n").unwrap();
        let r = Response::from_message(m).unwrap();
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.to.tag(), Some("2"));
        assert_eq!(r.cseq.method, "SUBSCRIBE");
        assert_eq!(r.expires, Some(600));
        assert_eq!(r.branch(), Some("z9hG4bKa"));
    }

    #[test]
    fn microsoft_headers_pass_in_order() {
        let text = "SUBSCRIBE sip:alice@contoso.com SIP/2.0\r\nVia: SIP/2.0/TLS e;branch=z9hG4bK5\r\nFrom: <sip:b@c>;tag=1\r\nTo: <sip:alice@contoso.com>\r\ni: s1\r\nCSeq: 1 SUBSCRIBE\r\nms-keep-alive: UAS; hop-hop=yes\r\nSupported: ms-benotify, ms-piggyback-first-notify\r\nk: com.microsoft.autoextend\r\nMs-Conversation-ID: x\r\nEvent: presence\r\nAccept: application/pidf+xml, application/msrtc-event-categories+xml\r\nExpires: 3600\r\nl: 0\r\n\r\n";
        let r = Request::from_message(parse_message(text.as_bytes()).unwrap()).unwrap();
        let names: Vec<&str> = r.message().fields().map(|f| f.name()).collect();
        assert_eq!(
            names,
            [
                "Via",
                "From",
                "To",
                "i",
                "CSeq",
                "ms-keep-alive",
                "Supported",
                "k",
                "Ms-Conversation-ID",
                "Event",
                "Accept",
                "Expires",
                "l"
            ]
        );
        assert_eq!(
            r.header("MS-KEEP-ALIVE").as_deref(),
            Some("UAS; hop-hop=yes")
        );
        assert_eq!(
            r.supported,
            [
                "ms-benotify",
                "ms-piggyback-first-notify",
                "com.microsoft.autoextend"
            ]
        );
        assert_eq!(r.event.as_ref().unwrap().value, "presence");
        assert_eq!(r.accept.as_ref().unwrap().len(), 2);
        assert_eq!(r.expires, Some(3600));
        let mut out = Vec::new();
        r.message().write_canonical(&mut out);
        let canonical = String::from_utf8(out).unwrap();
        assert!(canonical.contains("\r\nms-keep-alive: UAS; hop-hop=yes\r\nSupported: ms-benotify, ms-piggyback-first-notify\r\nSupported: com.microsoft.autoextend\r\nMs-Conversation-ID: x\r\n"));
        assert!(parse_message(canonical.as_bytes()).is_ok());
    }

    #[test]
    fn methods() {
        assert_eq!(Method::from_token("INVITE"), Some(Method::Invite));
        assert_eq!(
            Method::from_token("invite"),
            Some(Method::Other("invite".into()))
        );
        assert_eq!(Method::from_token("BAD METHOD"), None);
    }
}
