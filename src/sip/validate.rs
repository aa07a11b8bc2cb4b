//! The checks a UAS makes on a well-formed request before acting on it (RFC 3261 §8.2.1–
//! §8.2.3, the Max-Forwards and scheme checks of §16.3, Accept of §20.1), with the status
//! each refusal is answered with and the header that must go with it (Allow, Unsupported,
//! Accept, Accept-Encoding).
//!
//! Order of the checks: version (505), Request-URI headers (400), scheme (416),
//! Max-Forwards (483), method (501/405), Require (420), body encoding and type (415),
//! Accept (406). Out of scope: authentication, loop detection, dialog matching (481).
//!
//! An ACK is never answered: a refusal of an ACK is for logging only.

use std::fmt;

use super::build::{response_to, BuildError, MessageBuilder};
use super::request::{Method, Request};
use super::status::StatusCode;
use super::uri::Scheme;

/// What the gateway accepts; [`Policy::default`] is the gateway's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Methods handled. Others get 405 with Allow (a known method) or 501 (an unknown one).
    pub allowed_methods: Vec<Method>,
    /// Option tags supported; any other tag in Require gets 420 with Unsupported.
    pub supported_extensions: Vec<String>,
    /// Also check Proxy-Require (only when acting as a proxy; RFC 3261 §16.3 step 5).
    pub check_proxy_require: bool,
    /// URI schemes accepted in the Request-URI (lowercase); others get 416.
    pub uri_schemes: Vec<String>,
    /// Body media types accepted, `type/subtype` lowercase; others get 415 with Accept.
    pub accepted_content_types: Vec<String>,
    /// Content codings accepted besides `identity`; others get 415 with Accept-Encoding.
    pub accepted_encodings: Vec<String>,
    /// Refuse `Max-Forwards: 0` with 483. RFC 3261 §16.3 lets the element a request is for
    /// answer it anyway; the gateway refuses, as RFC 4475 `zeromf` expects.
    pub refuse_zero_max_forwards: bool,
    /// The body type a successful INVITE answer carries; an Accept that excludes it gets 406
    /// (RFC 4475 `sdp01`).
    pub invite_answer_type: Option<String>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            allowed_methods: vec![
                Method::Invite,
                Method::Ack,
                Method::Bye,
                Method::Cancel,
                Method::Options,
                Method::Message,
                Method::Info,
                Method::Subscribe,
                Method::Notify,
            ],
            supported_extensions: Vec::new(),
            check_proxy_require: false,
            uri_schemes: vec!["sip".into(), "sips".into()],
            accepted_content_types: [
                "application/sdp",
                "text/plain",
                "application/pidf+xml",
                "application/im-iscomposing+xml",
                "application/xml",
            ]
            .map(String::from)
            .to_vec(),
            accepted_encodings: Vec::new(),
            refuse_zero_max_forwards: true,
            invite_answer_type: Some("application/sdp".into()),
        }
    }
}

/// A request the policy refuses: the status to answer, why, and the headers the answer
/// must carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The status of the answer.
    pub status: StatusCode,
    /// Why, for logs (lowercase).
    pub why: &'static str,
    /// Headers the response must carry (`Unsupported`, `Accept`, `Allow`, ...).
    pub headers: Vec<(&'static str, String)>,
}

impl Refusal {
    fn new(status: StatusCode, why: &'static str) -> Refusal {
        Refusal {
            status,
            why,
            headers: Vec::new(),
        }
    }

    fn with(mut self, name: &'static str, value: String) -> Refusal {
        self.headers.push((name, value));
        self
    }

    /// The response to `req` for this refusal (RFC 3261 §8.2.6), headers included.
    pub fn response(
        &self,
        req: &Request,
        to_tag: Option<&str>,
    ) -> Result<MessageBuilder, BuildError> {
        let mut b = response_to(req, self.status, to_tag)?;
        for (n, v) in &self.headers {
            b.header(n, v)?;
        }
        Ok(b)
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.status, self.why)
    }
}

/// Checks `req` against `policy`; see the module documentation for the order.
pub fn validate_request(req: &Request, policy: &Policy) -> Result<(), Refusal> {
    if !req.message().is_sip_2_0() {
        return Err(Refusal::new(
            StatusCode::VERSION_NOT_SUPPORTED,
            "sip version is not 2.0",
        ));
    }
    // RFC 3261 §19.1.1 (table): headers are not allowed in a Request-URI (`escruri`).
    if req.uri.headers().is_some() {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "request-uri carries headers",
        ));
    }
    let scheme = match req.uri.scheme() {
        Scheme::Sip => "sip",
        Scheme::Sips => "sips",
        Scheme::Tel => "tel",
        Scheme::Other => req.uri.scheme_str(),
    };
    if !policy
        .uri_schemes
        .iter()
        .any(|s| s.eq_ignore_ascii_case(scheme))
    {
        return Err(Refusal::new(
            StatusCode::UNSUPPORTED_URI_SCHEME,
            "request-uri scheme not supported",
        ));
    }
    if policy.refuse_zero_max_forwards && req.max_forwards == Some(0) {
        return Err(Refusal::new(StatusCode::TOO_MANY_HOPS, "max-forwards is 0"));
    }
    if !policy.allowed_methods.contains(&req.method) {
        let allow = policy
            .allowed_methods
            .iter()
            .map(Method::as_str)
            .collect::<Vec<_>>()
            .join(", ");
        return Err(match req.method {
            Method::Other(_) => Refusal::new(StatusCode::NOT_IMPLEMENTED, "unknown method"),
            _ => Refusal::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
        }
        .with("Allow", allow));
    }
    // §8.2.2.3: never 420 for ACK or CANCEL.
    if !matches!(req.method, Method::Ack | Method::Cancel) {
        let proxy: &[String] = if policy.check_proxy_require {
            &req.proxy_require
        } else {
            &[]
        };
        let unsupported: Vec<&str> = req
            .require
            .iter()
            .chain(proxy)
            .filter(|t| {
                !policy
                    .supported_extensions
                    .iter()
                    .any(|s| s.eq_ignore_ascii_case(t))
            })
            .map(String::as_str)
            .collect();
        if !unsupported.is_empty() {
            return Err(Refusal::new(
                StatusCode::BAD_EXTENSION,
                "required extension not supported",
            )
            .with("Unsupported", unsupported.join(", ")));
        }
    }
    if !req.body().is_empty() {
        let unknown_coding = req.content_encoding.iter().any(|e| {
            !e.eq_ignore_ascii_case("identity")
                && !policy
                    .accepted_encodings
                    .iter()
                    .any(|a| a.eq_ignore_ascii_case(e))
        });
        if unknown_coding {
            let mut codings = vec!["identity".to_owned()];
            codings.extend(policy.accepted_encodings.iter().cloned());
            return Err(Refusal::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "content-encoding not supported",
            )
            .with("Accept-Encoding", codings.join(", ")));
        }
        let acceptable = req.content_type.as_ref().is_some_and(|ct| {
            policy
                .accepted_content_types
                .iter()
                .any(|a| a.split_once('/').is_some_and(|(t, s)| ct.is(t, s)))
        });
        if !acceptable {
            return Err(Refusal::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "content-type missing or not supported",
            )
            .with("Accept", policy.accepted_content_types.join(", ")));
        }
    }
    if req.method == Method::Invite {
        if let (Some(answer), Some(accept)) = (&policy.invite_answer_type, &req.accept) {
            let (t, s) = answer.split_once('/').unwrap_or((answer, ""));
            if !accept.iter().any(|m| m.covers(t, s)) {
                return Err(Refusal::new(
                    StatusCode::NOT_ACCEPTABLE,
                    "accept excludes the session description type",
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::parse_message;

    fn check(extra: &str, method: &str, uri: &str, body: &str) -> Result<(), Refusal> {
        let text = format!(
            "{method} {uri} SIP/2.0\r\nVia: SIP/2.0/TLS h;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: x\r\nCSeq: 1 {method}\r\n{extra}Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let req = Request::from_message(parse_message(text.as_bytes()).unwrap()).unwrap();
        validate_request(&req, &Policy::default())
    }

    fn status(r: Result<(), Refusal>) -> u16 {
        r.map_or_else(|e| e.status.as_u16(), |()| 200)
    }

    #[test]
    fn each_check() {
        assert!(check("", "MESSAGE", "sip:c@d", "").is_ok());
        assert_eq!(
            status(check("Max-Forwards: 0\r\n", "OPTIONS", "sip:c@d", "")),
            483
        );
        assert_eq!(status(check("", "OPTIONS", "im:c@d", "")), 416);
        assert_eq!(status(check("", "OPTIONS", "sip:c@d?x=y", "")), 400);
        let e = check("", "REGISTER", "sip:c@d", "").unwrap_err();
        assert_eq!(e.status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(e.headers[0].0, "Allow");
        assert!(e.headers[0].1.starts_with("INVITE, ACK"));
        assert_eq!(status(check("", "FOO", "sip:c@d", "")), 501);
        let e = check("Require: a, b\r\n", "OPTIONS", "sip:c@d", "").unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_EXTENSION);
        assert_eq!(e.headers, vec![("Unsupported", "a, b".to_owned())]);
        assert!(check("Require: a\r\n", "CANCEL", "sip:c@d", "").is_ok());
        assert!(check("Proxy-Require: a\r\n", "OPTIONS", "sip:c@d", "").is_ok());
        let e = check(
            "Content-Type: application/x-foo\r\n",
            "MESSAGE",
            "sip:c@d",
            "hi",
        )
        .unwrap_err();
        assert_eq!(e.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert_eq!(e.headers[0].0, "Accept");
        assert_eq!(status(check("", "MESSAGE", "sip:c@d", "hi")), 415);
        assert_eq!(
            status(check(
                "Content-Type: text/plain\r\nContent-Encoding: gzip\r\n",
                "MESSAGE",
                "sip:c@d",
                "hi"
            )),
            415
        );
        assert!(check(
            "Content-Type: Text/Plain;charset=UTF-8\r\n",
            "MESSAGE",
            "sip:c@d",
            "hi"
        )
        .is_ok());
        assert_eq!(
            status(check("Accept: text/plain\r\n", "INVITE", "sip:c@d", "")),
            406
        );
        assert_eq!(status(check("Accept:\r\n", "INVITE", "sip:c@d", "")), 406);
        assert!(check("Accept: application/*\r\n", "INVITE", "sip:c@d", "").is_ok());
        assert!(check("Accept: text/plain\r\n", "MESSAGE", "sip:c@d", "").is_ok());
    }

    #[test]
    fn refusal_response_carries_its_headers() {
        let text = "OPTIONS sip:c@d SIP/2.0\r\nVia: SIP/2.0/TLS h;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\nRequire: foo\r\nl: 0\r\n\r\n";
        let req = Request::from_message(parse_message(text.as_bytes()).unwrap()).unwrap();
        let refusal = validate_request(&req, &Policy::default()).unwrap_err();
        let bytes = refusal.response(&req, Some("t")).unwrap().to_bytes();
        let resp =
            crate::sip::request::Response::from_message(parse_message(&bytes).unwrap()).unwrap();
        assert_eq!(resp.status, StatusCode::BAD_EXTENSION);
        assert_eq!(resp.header("Unsupported").as_deref(), Some("foo"));
        assert_eq!(resp.to.tag(), Some("t"));
    }
}
