//! Writing SIP messages: a builder that produces canonical octets (full header names, CRLF
//! line ends, a Content-Length computed from the body), and responses to requests as
//! RFC 3261 §8.2.6 says (Via, From, To with a tag, Call-ID and CSeq copied).
//!
//! Safety: no value can split a header or a line. Header names must be tokens; values and
//! reason phrases holding CR, LF or NUL are refused when they are added; typed values
//! ([`super::header::NameAddr`], [`super::uri::Uri`]) quote display names and %-escape user
//! parts themselves. Content-Length cannot be set by hand.
//! Out of scope: Via/branch creation (transaction layer), SDP.

use std::fmt;

use super::grammar::is_token_str;
use super::message::AnswerContext;
use super::name;
use super::request::{Method, Request};
use super::status::StatusCode;
use super::uri::Uri;

/// Why a message cannot be built.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BuildError {
    /// A header name is not a token.
    BadName {
        /// The name given.
        name: String,
    },
    /// A header value or reason phrase holds CR, LF or NUL.
    ForbiddenByte {
        /// The header (or `reason phrase`).
        header: String,
    },
    /// Content-Length is computed from the body and cannot be set.
    ComputedHeader,
    /// A tag that is not a token.
    BadTag,
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::BadName { name } => write!(f, "header name {name:?} is not a token"),
            BuildError::ForbiddenByte { header } => {
                write!(f, "{header} holds cr, lf or nul")
            }
            BuildError::ComputedHeader => f.write_str("content-length is computed, not set"),
            BuildError::BadTag => f.write_str("tag is not a token"),
        }
    }
}

impl std::error::Error for BuildError {}

fn check_value(header: &str, value: &str) -> Result<(), BuildError> {
    if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
        return Err(BuildError::ForbiddenByte {
            header: header.to_owned(),
        });
    }
    Ok(())
}

/// A message under construction; header order is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageBuilder {
    start: String,
    status: Option<StatusCode>,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl MessageBuilder {
    /// A request `METHOD uri SIP/2.0`. A parsed [`Uri`] holds no white space or control
    /// characters, so it cannot break the request line.
    pub fn request(method: &Method, uri: &Uri) -> MessageBuilder {
        MessageBuilder {
            start: format!("{} {} SIP/2.0", method.as_str(), uri.as_str()),
            status: None,
            headers: Vec::with_capacity(12),
            body: Vec::new(),
        }
    }

    /// A response with the registered reason phrase.
    pub fn response(status: StatusCode) -> MessageBuilder {
        MessageBuilder {
            start: format!("SIP/2.0 {} {}", status.as_u16(), status.reason_phrase()),
            status: Some(status),
            headers: Vec::with_capacity(12),
            body: Vec::new(),
        }
    }

    /// A response with a reason phrase of our own.
    pub fn response_with_reason(
        status: StatusCode,
        reason: &str,
    ) -> Result<MessageBuilder, BuildError> {
        check_value("reason phrase", reason)?;
        Ok(MessageBuilder {
            start: format!("SIP/2.0 {} {reason}", status.as_u16()),
            status: Some(status),
            headers: Vec::with_capacity(12),
            body: Vec::new(),
        })
    }

    /// Appends a header. Known names are written in canonical form (`i` → `Call-ID`).
    pub fn header(&mut self, name: &str, value: &str) -> Result<&mut Self, BuildError> {
        if !is_token_str(name.as_bytes()) {
            return Err(BuildError::BadName {
                name: name.to_owned(),
            });
        }
        if name::CONTENT_LENGTH.matches(name.as_bytes()) {
            return Err(BuildError::ComputedHeader);
        }
        check_value(name, value)?;
        self.headers.push((
            name::canonical(name).to_owned(),
            value.trim_matches([' ', '\t']).to_owned(),
        ));
        Ok(self)
    }

    /// Inserts a header before every other (a Via added by the transport side goes on top).
    pub fn prepend_header(&mut self, name: &str, value: &str) -> Result<&mut Self, BuildError> {
        self.header(name, value)?;
        if let Some(last) = self.headers.pop() {
            self.headers.insert(0, last);
        }
        Ok(self)
    }

    /// Appends a header whose value is a typed value's canonical form.
    pub fn header_display(
        &mut self,
        name: &str,
        value: &impl fmt::Display,
    ) -> Result<&mut Self, BuildError> {
        self.header(name, &value.to_string())
    }

    /// Sets the body and its Content-Type.
    pub fn body(&mut self, content_type: &str, body: Vec<u8>) -> Result<&mut Self, BuildError> {
        self.headers
            .retain(|(n, _)| !name::CONTENT_TYPE.matches(n.as_bytes()));
        self.header(name::CONTENT_TYPE.canonical, content_type)?;
        self.body = body;
        Ok(self)
    }

    /// The status of a response; `None` for a request.
    pub fn status(&self) -> Option<StatusCode> {
        self.status
    }

    /// The headers added so far, canonical names.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &str)> {
        self.headers.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// Appends the message to `out`.
    pub fn write(&self, out: &mut Vec<u8>) {
        out.reserve(self.start.len() + 64 * self.headers.len() + self.body.len() + 32);
        out.extend_from_slice(self.start.as_bytes());
        out.extend_from_slice(b"\r\n");
        for (n, v) in &self.headers {
            out.extend_from_slice(n.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(v.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"Content-Length: ");
        out.extend_from_slice(self.body.len().to_string().as_bytes());
        out.extend_from_slice(b"\r\n\r\n");
        out.extend_from_slice(&self.body);
    }

    /// The message as octets.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write(&mut out);
        out
    }
}

fn has_tag(to: &str) -> bool {
    // The To value was parsed (or salvaged); a `;tag=` outside `<...>` is its tag.
    let after_uri = match to.rfind('>') {
        Some(i) => to.get(i..).unwrap_or_default(),
        None => to,
    };
    after_uri
        .to_ascii_lowercase()
        .split(';')
        .skip(1)
        .any(|p| p.split('=').next().unwrap_or_default().trim() == "tag")
}

fn copy_dialog_headers(
    b: &mut MessageBuilder,
    ctx: &AnswerContext,
    status: StatusCode,
    to_tag: Option<&str>,
) -> Result<(), BuildError> {
    let (via, from, to, call_id, cseq) = (
        &ctx.via,
        ctx.from.as_deref(),
        ctx.to.as_deref(),
        ctx.call_id.as_deref(),
        ctx.cseq.as_deref(),
    );
    for v in via {
        b.header(name::VIA.canonical, v)?;
    }
    if let Some(from) = from {
        b.header(name::FROM.canonical, from)?;
    }
    if let Some(to) = to {
        match to_tag {
            // §8.2.6.2: a tag is added unless the request had one; never on 100 Trying.
            Some(tag) if status != StatusCode::TRYING && !has_tag(to) => {
                if !is_token_str(tag.as_bytes()) {
                    return Err(BuildError::BadTag);
                }
                b.header(name::TO.canonical, &format!("{to};tag={tag}"))?;
            }
            _ => {
                b.header(name::TO.canonical, to)?;
            }
        }
    }
    if let Some(c) = call_id {
        b.header(name::CALL_ID.canonical, c)?;
    }
    if let Some(c) = cseq {
        b.header(name::CSEQ.canonical, c)?;
    }
    Ok(())
}

/// A response to `req` (RFC 3261 §8.2.6): the Via fields in order, From, To (with `to_tag`
/// added when the request's To had none and the status is not 100), Call-ID and CSeq, all
/// copied as received. Add further headers and a body to the returned builder.
pub fn response_to(
    req: &Request,
    status: StatusCode,
    to_tag: Option<&str>,
) -> Result<MessageBuilder, BuildError> {
    // from_message gives Some for every request.
    let ctx = AnswerContext::from_message(req.message()).unwrap_or_default();
    let mut b = MessageBuilder::response(status);
    copy_dialog_headers(&mut b, &ctx, status, to_tag)?;
    Ok(b)
}

/// A response (normally 400) to a request that could not be parsed or typed, from the
/// fields salvaged into `ctx` ([`super::frame::Frame::Invalid`],
/// [`super::request::MessageError`]).
pub fn response_to_context(
    ctx: &AnswerContext,
    status: StatusCode,
    reason: Option<&str>,
    to_tag: Option<&str>,
) -> Result<MessageBuilder, BuildError> {
    let mut b = match reason {
        Some(r) => MessageBuilder::response_with_reason(status, r)?,
        None => MessageBuilder::response(status),
    };
    copy_dialog_headers(&mut b, ctx, status, to_tag)?;
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::header::NameAddr;
    use crate::sip::message::parse_message;

    const INVITE: &[u8] = b"INVITE sip:alice@contoso.com SIP/2.0\r\n\
v: SIP/2.0/TLS edge.contoso.com;branch=z9hG4bKa, SIP/2.0/TLS fe.contoso.com;branch=z9hG4bKb\r\n\
Via: SIP/2.0/TLS pool.contoso.com;branch=z9hG4bKc\r\n\
f: \"Bob\" <sip:bob@contoso.com>;tag=f1\r\n\
t: <sip:alice@contoso.com>\r\n\
i: call-1\r\n\
CSeq: 7 INVITE\r\n\
Max-Forwards: 70\r\n\
l: 0\r\n\
\r\n";

    #[test]
    fn response_copies_dialog_headers_and_parses_back() {
        let req = Request::from_message(parse_message(INVITE).unwrap()).unwrap();
        let mut b = response_to(&req, StatusCode::OK, Some("gw1")).unwrap();
        b.header("Contact", "<sip:gw.example.com;transport=tls>")
            .unwrap()
            .body("application/sdp", b"v=0\r\n".to_vec())
            .unwrap();
        let bytes = b.to_bytes();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.starts_with("SIP/2.0 200 OK\r\nVia: SIP/2.0/TLS edge.contoso.com;branch=z9hG4bKa, SIP/2.0/TLS fe.contoso.com;branch=z9hG4bKb\r\nVia: SIP/2.0/TLS pool.contoso.com;branch=z9hG4bKc\r\nFrom: \"Bob\" <sip:bob@contoso.com>;tag=f1\r\nTo: <sip:alice@contoso.com>;tag=gw1\r\nCall-ID: call-1\r\nCSeq: 7 INVITE\r\n"), "{text}");
        assert!(text.ends_with("Content-Length: 5\r\n\r\nv=0\r\n"));
        let resp =
            crate::sip::request::Response::from_message(parse_message(&bytes).unwrap()).unwrap();
        assert_eq!(resp.via.len(), 3);
        assert_eq!(resp.to.tag(), Some("gw1"));
        assert_eq!(resp.from.tag(), Some("f1"));
        assert_eq!(resp.call_id, "call-1");
        assert_eq!(resp.body(), b"v=0\r\n");

        let trying = response_to(&req, StatusCode::TRYING, Some("gw1"))
            .unwrap()
            .to_bytes();
        let resp =
            crate::sip::request::Response::from_message(parse_message(&trying).unwrap()).unwrap();
        assert_eq!(resp.to.tag(), None);
    }

    #[test]
    fn existing_to_tag_is_kept() {
        let with_tag = String::from_utf8(INVITE.to_vec()).unwrap().replace(
            "t: <sip:alice@contoso.com>",
            "t: <sip:alice@contoso.com>;tag=old",
        );
        let req = Request::from_message(parse_message(with_tag.as_bytes()).unwrap()).unwrap();
        let bytes = response_to(&req, StatusCode::OK, Some("new"))
            .unwrap()
            .to_bytes();
        let resp =
            crate::sip::request::Response::from_message(parse_message(&bytes).unwrap()).unwrap();
        assert_eq!(resp.to.tag(), Some("old"));
        assert!(!has_tag("<sip:a@b;tag=x>"));
        assert!(has_tag("sip:a@b;TAG=x"));
        assert!(has_tag("<sip:a@b> ; tag = x"));
        assert!(!has_tag("<sip:a@b>;tagged=x"));
    }

    #[test]
    fn nothing_can_split_a_line() {
        let mut b = MessageBuilder::response(StatusCode::OK);
        assert!(matches!(
            b.header("Subject", "hi\r\nVia: evil"),
            Err(BuildError::ForbiddenByte { .. })
        ));
        assert!(b.header("Subject", "nul\0").is_err());
        assert!(b.header("Bad Name", "x").is_err());
        assert!(b.header("Bad:Name", "x").is_err());
        assert_eq!(b.header("l", "5"), Err(BuildError::ComputedHeader));
        assert!(b.body("text/plain\r\nX: y", vec![]).is_err());
        assert!(MessageBuilder::response_with_reason(StatusCode::OK, "ok\r\n").is_err());
        let ctx = AnswerContext {
            call_id: Some("c".into()),
            to: Some("<sip:a@b>".into()),
            ..AnswerContext::default()
        };
        assert_eq!(
            response_to_context(&ctx, StatusCode::BAD_REQUEST, None, Some("bad tag")),
            Err(BuildError::BadTag)
        );
    }

    #[test]
    fn request_with_typed_values_parses_back() {
        let uri = Uri::sip(false, Some("bob smith#1"), "contoso.com", None).unwrap();
        let mut from = NameAddr::new(
            Some("Alice \"The\" \\Great\\"),
            Uri::sip(false, Some("alice"), "gmail.com", None).unwrap(),
        );
        from.set_tag("t1").unwrap();
        let mut b = MessageBuilder::request(&Method::Message, &uri);
        b.header("Via", "SIP/2.0/TLS gw.example.com;branch=z9hG4bK1")
            .unwrap()
            .header_display("From", &from)
            .unwrap()
            .header_display("To", &NameAddr::new(None, uri.clone()))
            .unwrap()
            .header("i", "c1")
            .unwrap()
            .header("CSeq", "1 MESSAGE")
            .unwrap()
            .header("Max-Forwards", "70")
            .unwrap()
            .header("Ms-Conversation-ID", "abc")
            .unwrap()
            .body("text/plain; charset=UTF-8", "héllo".as_bytes().to_vec())
            .unwrap();
        let bytes = b.to_bytes();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.starts_with("MESSAGE sip:bob%20smith%231@contoso.com SIP/2.0\r\n"));
        assert!(text.contains("\r\nCall-ID: c1\r\n"));
        let req = Request::from_message(parse_message(&bytes).unwrap()).unwrap();
        assert_eq!(req.from, from);
        assert_eq!(&*req.uri.user_decoded().unwrap(), b"bob smith#1");
        assert_eq!(req.header("ms-conversation-id").as_deref(), Some("abc"));
        assert_eq!(req.body(), "héllo".as_bytes());
    }

    #[test]
    fn answer_from_salvaged_context() {
        let head = b"INVITE  sip:a@b SIP/2.0\r\nVia: SIP/2.0/TLS h;branch=z9hG4bK9\r\nFrom: <sip:c@d>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: k\r\nCSeq: 4 INVITE\r\n\r\n";
        let ctx = AnswerContext::salvage(head).unwrap();
        let bytes = response_to_context(
            &ctx,
            StatusCode::BAD_REQUEST,
            Some("Bad Request-Line"),
            Some("x"),
        )
        .unwrap()
        .to_bytes();
        let resp =
            crate::sip::request::Response::from_message(parse_message(&bytes).unwrap()).unwrap();
        assert_eq!(resp.status, StatusCode::BAD_REQUEST);
        assert_eq!(resp.reason, "Bad Request-Line");
        assert_eq!(resp.branch(), Some("z9hG4bK9"));
        assert_eq!(resp.to.tag(), Some("x"));
        assert_eq!(resp.cseq.seq, 4);
    }
}
