//! Typed values of the headers the gateway interprets (RFC 3261 §20, §25.1; RFC 6665 for
//! Event and Subscription-State): name-addr/addr-spec (From, To, Contact, Route,
//! Record-Route), Via, CSeq, media types, Event, Subscription-State.
//!
//! Each parser takes one *unfolded* list element and refuses what the grammar refuses; the
//! RFC 4475 cases each parser is strict about are named beside it. Every type has a
//! `Display` that writes it back in canonical form and parses to the same value.
//! Out of scope: authentication headers, Date, Warning and the rest (kept raw).

use std::fmt;

use super::grammar::{
    ascii_or_utf8, is_token, is_ws, parse_decimal, parse_params, quote, unquote, Cursor, Params,
    SyntaxError,
};
use super::uri::Uri;

/// `name-addr` or `addr-spec` with header parameters (From, To, Contact, Route,
/// Record-Route, Reply-To).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr {
    /// The display name, unquoted (`None` when absent).
    pub display_name: Option<String>,
    /// The URI.
    pub uri: Uri,
    /// Header parameters (`tag`, `expires`, `q`, ...).
    pub params: Params,
}

impl NameAddr {
    /// A name-addr with no parameters.
    pub fn new(display_name: Option<&str>, uri: Uri) -> NameAddr {
        NameAddr {
            display_name: display_name.map(str::to_owned),
            uri,
            params: Params::default(),
        }
    }

    /// The `tag` parameter.
    pub fn tag(&self) -> Option<&str> {
        self.params.get("tag")
    }

    /// Sets the `tag` parameter; the tag must be a token.
    pub fn set_tag(&mut self, tag: &str) -> Result<(), SyntaxError> {
        if tag.is_empty() || !tag.bytes().all(is_token) {
            return Err(SyntaxError::UnexpectedByte { at: 0 });
        }
        self.params.set("tag", Some(tag));
        Ok(())
    }

    /// Parses one element. Strict about: unterminated quotes (`quotbal`), LWS inside `<>`
    /// (`badaspec`), non-token display names (`baddn`), `?` or `,` in an addr-spec without
    /// `<>` (`regbadct`), empty parameters (`badinv01`).
    pub fn parse(value: &[u8]) -> Result<NameAddr, SyntaxError> {
        let mut c = Cursor::new(value);
        c.skip_ws();
        let mut display_name = None;
        let uri_text: &[u8];
        let start = c.pos();
        if c.peek() == Some(b'"') {
            display_name = Some(unquote(c.quoted_raw()?)?);
            c.skip_ws();
            uri_text = angle(&mut c)?;
        } else if c.peek() == Some(b'<') {
            uri_text = angle(&mut c)?;
        } else {
            // Either `*(token LWS) <addr-spec>` or a bare addr-spec.
            let mut words_end = start;
            loop {
                let t = c.take_while(is_token);
                if t.is_empty() {
                    break;
                }
                words_end = c.pos();
                c.skip_ws();
                if c.peek() == Some(b'<') || !c.peek().is_some_and(is_token) {
                    break;
                }
            }
            if c.peek() == Some(b'<') {
                let words = value.get(start..words_end).unwrap_or_default();
                display_name = Some(ascii_or_utf8(words)?);
                uri_text = angle(&mut c)?;
            } else {
                // addr-spec: ends at the first ';' (header parameters follow) or white space.
                c = Cursor::new(value);
                c.skip_ws();
                let spec = c.take_while(|b| b != b';' && !is_ws(b));
                if spec.iter().any(|&b| b == b'?' || b == b',') {
                    return Err(SyntaxError::UnexpectedByte { at: start });
                }
                uri_text = spec;
            }
        }
        let uri = Uri::parse(std::str::from_utf8(uri_text).map_err(|_| SyntaxError::NotUtf8)?)?;
        let params = parse_params(&mut c)?;
        Ok(NameAddr {
            display_name,
            uri,
            params,
        })
    }
}

/// Reads `<addr-spec>` with no white space inside the brackets.
fn angle<'a>(c: &mut Cursor<'a>) -> Result<&'a [u8], SyntaxError> {
    c.expect(b'<')?;
    let inner = c.take_while(|b| b != b'>');
    if !c.eat(b'>') {
        return Err(SyntaxError::UnexpectedEnd);
    }
    if inner.is_empty() {
        return Err(SyntaxError::Empty);
    }
    Ok(inner)
}

impl fmt::Display for NameAddr {
    /// Always the `name-addr` form (`<...>`), which is unambiguous for every URI.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = String::new();
        if let Some(d) = &self.display_name {
            // A display name that cannot be quoted (CR/LF/NUL) is refused at build time;
            // here it is dropped rather than written.
            if quote(d, &mut s).is_ok() {
                s.push(' ');
            } else {
                s.clear();
            }
        }
        s.push('<');
        s.push_str(self.uri.as_str());
        s.push('>');
        self.params.write(&mut s);
        f.write_str(&s)
    }
}

/// One Contact element: `*` or a name-addr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Contact {
    /// `Contact: *` (REGISTER only).
    Star,
    /// A contact address.
    Addr(NameAddr),
}

impl Contact {
    /// Parses one Contact list element.
    pub fn parse(value: &[u8]) -> Result<Contact, SyntaxError> {
        if super::grammar::trim_ws(value) == b"*" {
            Ok(Contact::Star)
        } else {
            NameAddr::parse(value).map(Contact::Addr)
        }
    }
}

impl fmt::Display for Contact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Contact::Star => f.write_str("*"),
            Contact::Addr(a) => a.fmt(f),
        }
    }
}

/// One Via element (RFC 3261 §20.42).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    /// protocol-name, normally `SIP`.
    pub protocol: String,
    /// protocol-version, normally `2.0`.
    pub version: String,
    /// transport, uppercased (`TLS`, `TCP`, `UDP`, or any token).
    pub transport: String,
    /// sent-by host (IPv6 references keep their brackets).
    pub host: String,
    /// sent-by port.
    pub port: Option<u16>,
    /// via-params in order (`branch`, `received`, `rport`, ...).
    pub params: Params,
}

/// The RFC 3261 branch magic cookie (§8.1.1.7).
pub const MAGIC_COOKIE: &str = "z9hG4bK";

impl Via {
    /// The `branch` parameter.
    pub fn branch(&self) -> Option<&str> {
        self.params.get("branch")
    }

    /// True when the branch starts with the magic cookie *and* has something after it; a
    /// bare cookie (RFC 4475 `badbranch`) cannot be unique, so such a request is matched
    /// with the RFC 2543 rules instead.
    pub fn has_rfc3261_branch(&self) -> bool {
        self.branch()
            .is_some_and(|b| b.len() > MAGIC_COOKIE.len() && b.starts_with(MAGIC_COOKIE))
    }

    /// `host[:port]` as written in sent-by.
    pub fn sent_by(&self) -> String {
        match self.port {
            Some(p) => format!("{}:{p}", self.host),
            None => self.host.clone(),
        }
    }

    /// Parses one Via element: `sent-protocol LWS sent-by *(SEMI via-params)`, with LWS
    /// allowed around `/` and `:` (RFC 4475 `wsinv`). Any protocol name, version and
    /// transport token is accepted (`transports`, `badvers`).
    pub fn parse(value: &[u8]) -> Result<Via, SyntaxError> {
        let mut c = Cursor::new(value);
        c.skip_ws();
        let protocol = c.token()?;
        c.skip_ws();
        c.expect(b'/')?;
        c.skip_ws();
        let version = c.token()?;
        c.skip_ws();
        c.expect(b'/')?;
        c.skip_ws();
        let transport = c.token()?;
        if !c.skip_ws() {
            return Err(c.error());
        }
        let host = if c.peek() == Some(b'[') {
            let h = c.take_while(|b| b == b'[' || b.is_ascii_hexdigit() || b == b':' || b == b'.');
            if !c.eat(b']') {
                return Err(c.error());
            }
            let mut s = ascii_or_utf8(h)?;
            s.push(']');
            s
        } else {
            let h = c.take_while(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
            if h.is_empty() {
                return Err(c.error());
            }
            ascii_or_utf8(h)?
        };
        c.skip_ws();
        let port = if c.eat(b':') {
            c.skip_ws();
            let d = c.take_while(|b| b.is_ascii_digit());
            Some(
                u16::try_from(parse_decimal(d, u64::from(u16::MAX))?)
                    .map_err(|_| SyntaxError::NumberOutOfRange)?,
            )
        } else {
            None
        };
        let params = parse_params(&mut c)?;
        Ok(Via {
            protocol: ascii_or_utf8(protocol)?,
            version: ascii_or_utf8(version)?,
            transport: ascii_or_utf8(transport)?.to_ascii_uppercase(),
            host,
            port,
            params,
        })
    }
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = format!(
            "{}/{}/{} {}",
            self.protocol,
            self.version,
            self.transport,
            self.sent_by()
        );
        self.params.write(&mut s);
        f.write_str(&s)
    }
}

/// CSeq (RFC 3261 §20.16).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CSeq {
    /// Sequence number, below 2^31.
    pub seq: u32,
    /// Method, case-sensitive.
    pub method: String,
}

impl CSeq {
    /// Parses `1*DIGIT LWS Method`; a number of 2^31 or more is refused (`scalar02`).
    pub fn parse(value: &[u8]) -> Result<CSeq, SyntaxError> {
        let mut c = Cursor::new(value);
        c.skip_ws();
        let digits = c.take_while(|b| b.is_ascii_digit());
        let seq = parse_decimal(digits, (1 << 31) - 1)?;
        if !c.skip_ws() {
            return Err(c.error());
        }
        let method = c.token()?;
        c.skip_ws();
        if !c.at_end() {
            return Err(c.error());
        }
        Ok(CSeq {
            seq: u32::try_from(seq).map_err(|_| SyntaxError::NumberOutOfRange)?,
            method: ascii_or_utf8(method)?,
        })
    }
}

impl fmt::Display for CSeq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.seq, self.method)
    }
}

/// A media type with parameters (Content-Type, one Accept element).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaType {
    /// Type, lowercased (`application`, or `*` in Accept).
    pub type_: String,
    /// Subtype, lowercased (`sdp`, or `*`).
    pub subtype: String,
    /// Parameters (`charset`, `boundary`, `q`, ...).
    pub params: Params,
}

impl MediaType {
    /// Parses `m-type SLASH m-subtype *(SEMI m-parameter)`.
    pub fn parse(value: &[u8]) -> Result<MediaType, SyntaxError> {
        let mut c = Cursor::new(value);
        c.skip_ws();
        let t = c.token()?;
        c.skip_ws();
        c.expect(b'/')?;
        c.skip_ws();
        let s = c.token()?;
        let params = parse_params(&mut c)?;
        Ok(MediaType {
            type_: ascii_or_utf8(t)?.to_ascii_lowercase(),
            subtype: ascii_or_utf8(s)?.to_ascii_lowercase(),
            params,
        })
    }

    /// True when this type is `type/subtype` (no parameters compared).
    pub fn is(&self, type_: &str, subtype: &str) -> bool {
        self.type_.eq_ignore_ascii_case(type_) && self.subtype.eq_ignore_ascii_case(subtype)
    }

    /// True when this (possibly wildcard, Accept-style) range covers `type/subtype`.
    pub fn covers(&self, type_: &str, subtype: &str) -> bool {
        (self.type_ == "*" || self.type_.eq_ignore_ascii_case(type_))
            && (self.subtype == "*" || self.subtype.eq_ignore_ascii_case(subtype))
    }
}

impl fmt::Display for MediaType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = format!("{}/{}", self.type_, self.subtype);
        self.params.write(&mut s);
        f.write_str(&s)
    }
}

/// A token with parameters: Event (RFC 6665 §8.2.1, `event-type *(SEMI event-param)`) and
/// Subscription-State (`substate-value *(SEMI subexp-params)`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenParams {
    /// The token, as received (compare case-insensitively).
    pub value: String,
    /// Parameters (`id`; `expires`, `reason`, `retry-after`).
    pub params: Params,
}

impl TokenParams {
    /// Parses `token *(SEMI generic-param)`.
    pub fn parse(value: &[u8]) -> Result<TokenParams, SyntaxError> {
        let mut c = Cursor::new(value);
        c.skip_ws();
        let t = c.token()?;
        let params = parse_params(&mut c)?;
        Ok(TokenParams {
            value: ascii_or_utf8(t)?,
            params,
        })
    }

    /// The `expires` parameter of a Subscription-State as seconds (saturating).
    pub fn expires(&self) -> Option<u32> {
        self.params
            .get("expires")
            .and_then(|v| delta_seconds(v.as_bytes()).ok())
    }
}

impl fmt::Display for TokenParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = self.value.clone();
        self.params.write(&mut s);
        f.write_str(&s)
    }
}

/// `delta-seconds`; values above 2^32-1 saturate (RFC 3261 §20.19, §25.1; `scalar02`).
pub fn delta_seconds(v: &[u8]) -> Result<u32, SyntaxError> {
    let v = super::grammar::trim_ws(v);
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return Err(SyntaxError::UnexpectedByte { at: 0 });
    }
    Ok(parse_decimal(v, u64::from(u32::MAX))
        .ok()
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or(u32::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::uri::Scheme;

    fn na(s: &str) -> Result<NameAddr, SyntaxError> {
        NameAddr::parse(s.as_bytes())
    }

    #[test]
    fn name_addr_forms() {
        let a =
            na(r#""J Rosenberg \\\""       <sip:jdrosen@example.com>  ;  tag = 98asjd8"#).unwrap();
        assert_eq!(a.display_name.as_deref(), Some("J Rosenberg \\\""));
        assert_eq!(a.uri.as_str(), "sip:jdrosen@example.com");
        assert_eq!(a.tag(), Some("98asjd8"));

        let a = na("caller<sip:caller@example.com>;tag=323").unwrap();
        assert_eq!(a.display_name.as_deref(), Some("caller"));
        let a = na("A. Bell <sip:a.g.bell@example.com>;tag=qweoiqpe").unwrap();
        assert_eq!(a.display_name.as_deref(), Some("A. Bell"));
        let a = na("sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n").unwrap();
        assert_eq!(a.display_name, None);
        assert_eq!(a.tag(), Some("1918181833n"));
        let a = na("sip:+19725552222@gw1.example.net;unknownparam").unwrap();
        assert_eq!(a.uri.as_str(), "sip:+19725552222@gw1.example.net");
        assert!(a.params.contains("unknownparam"));
        let a = na("<sip:+19725552222@gw1.example.net;unknownparam>").unwrap();
        assert_eq!(a.uri.param("unknownparam"), Some(""));
        assert!(a.params.0.is_empty());
        let a = na("isbn:2983792873").unwrap();
        assert_eq!(a.uri.scheme(), Scheme::Other);
        let a = na("<http://www.example.com>;tag=3234233").unwrap();
        assert_eq!(a.tag(), Some("3234233"));
    }

    #[test]
    fn name_addr_refusals() {
        for bad in [
            "\"Mr. J. User <sip:j.user@example.com>",
            "\"Watson, Thomas\" < sip:t.watson@example.org >",
            "Bell, Alexander <sip:a.g.bell@example.com>;tag=43",
            "sip:user@example.com?Route=%3Csip:sip.example.com%3E",
            "\"Joe\" <sip:joe@example.org>;;;;",
            "<sip:a@b",
            "<>",
            "",
        ] {
            assert!(na(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn name_addr_display_round_trips() {
        let mut a = NameAddr::new(
            Some("Quote \" and \\ back"),
            Uri::parse("sip:a@example.com").unwrap(),
        );
        a.set_tag("x1").unwrap();
        assert!(a.set_tag("bad tag").is_err());
        let s = a.to_string();
        assert_eq!(s, r#""Quote \" and \\ back" <sip:a@example.com>;tag=x1"#);
        assert_eq!(na(&s).unwrap(), a);
        let mut evil = a.clone();
        evil.display_name = Some("x\r\nVia: evil".into());
        assert!(!evil.to_string().contains('\n'));
    }

    #[test]
    fn via_forms() {
        let v = Via::parse(b"SIP  /   2.0 /UDP    192.0.2.2;branch=390skdjuw").unwrap();
        assert_eq!(v.transport, "UDP");
        assert_eq!(v.host, "192.0.2.2");
        assert_eq!(v.branch(), Some("390skdjuw"));
        assert!(!v.has_rfc3261_branch());
        let v =
            Via::parse(b"SIP  / 2.0  / TCP     spindle.example.com   ;  branch  =   z9hG4bK9ikj8")
                .unwrap();
        assert_eq!(v.host, "spindle.example.com");
        assert!(v.has_rfc3261_branch());
        let v = Via::parse(b"SIP/2.0/tls [2001:db8::9]:5061;received=192.0.2.1;rport").unwrap();
        assert_eq!(v.transport, "TLS");
        assert_eq!(v.sent_by(), "[2001:db8::9]:5061");
        assert_eq!(v.params.get("rport"), Some(""));
        assert_eq!(Via::parse(v.to_string().as_bytes()).unwrap(), v);
        let v = Via::parse(b"SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK").unwrap();
        assert!(!v.has_rfc3261_branch());
        for bad in [
            &b"SIP/2.0/UDP 192.0.2.15;;"[..],
            b"SIP/2.0 192.0.2.15",
            b"SIP/2.0/UDP",
            b"SIP/2.0/UDP host:99999",
            b"SIP/2.0/UDPhost",
        ] {
            assert!(Via::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn cseq_and_numbers() {
        assert_eq!(
            CSeq::parse(b"0009 INVITE").unwrap(),
            CSeq {
                seq: 9,
                method: "INVITE".into()
            }
        );
        assert!(CSeq::parse(b"36893488147419103232 REGISTER").is_err());
        assert!(CSeq::parse(b"2147483648 REGISTER").is_err());
        assert!(CSeq::parse(b"2147483647 REGISTER").is_ok());
        assert!(CSeq::parse(b"1INVITE").is_err());
        assert!(CSeq::parse(b"1 INVITE x").is_err());
        assert_eq!(delta_seconds(b"100000000000000000000000"), Ok(u32::MAX));
        assert_eq!(delta_seconds(b"3600"), Ok(3600));
        assert!(delta_seconds(b"-1").is_err());
    }

    #[test]
    fn media_types_and_events() {
        let m = MediaType::parse(b"Multipart/Mixed;boundary=7a9cbec02ceef655").unwrap();
        assert!(m.is("multipart", "mixed"));
        assert_eq!(m.params.get("boundary"), Some("7a9cbec02ceef655"));
        assert_eq!(MediaType::parse(m.to_string().as_bytes()).unwrap(), m);
        assert!(MediaType::parse(b"*/*").unwrap().covers("text", "plain"));
        assert!(MediaType::parse(b"application").is_err());
        let s = TokenParams::parse(b"active;expires=600").unwrap();
        assert_eq!(s.value, "active");
        assert_eq!(s.expires(), Some(600));
        let e = TokenParams::parse(b"presence;id=1").unwrap();
        assert_eq!(e.params.get("id"), Some("1"));
        for t in [s, e] {
            assert_eq!(TokenParams::parse(t.to_string().as_bytes()).unwrap(), t);
        }
        let t = TokenParams::parse(b"terminated ; reason = rejected").unwrap();
        assert_eq!(t.to_string(), "terminated;reason=rejected");
        assert!(TokenParams::parse(b"active;").is_err());
        assert_eq!(Contact::parse(b" * ").unwrap(), Contact::Star);
        assert_eq!(Contact::Star.to_string(), "*");
    }
}
