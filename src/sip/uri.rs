//! URIs as SIP carries them (RFC 3261 §19.1, §25.1): `sip:`/`sips:` parsed into user,
//! password, host, port, uri-parameters and headers; any other absolute URI (`tel:`, `im:`,
//! `http:`, unknown schemes, RFC 4475 `unksm2`) kept opaque.
//!
//! The raw text is kept exactly as received; components are slices of it and `%` escapes
//! are decoded only on request ([`Uri::user_decoded`]). Out of scope: URI comparison
//! (§19.1.4) and `tel:` subscriber syntax.

use std::borrow::Cow;
use std::fmt;

use super::grammar::{
    check_escaped, is_hnv_unreserved, is_param_unreserved, is_password_extra, is_unreserved,
    is_user_unreserved, percent_decode, percent_encode, SyntaxError,
};

/// The scheme of a URI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `sip:`
    Sip,
    /// `sips:`
    Sips,
    /// `tel:` (kept opaque).
    Tel,
    /// Any other scheme (kept opaque); see [`Uri::scheme_str`].
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Span {
    start: usize,
    end: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct SipParts {
    user: Option<Span>,
    password: Option<Span>,
    host: Span,
    port: Option<u16>,
    /// `;a=b;c` without the leading `;` (empty span when none).
    params: Span,
    /// `x=y&z=w` without the `?`.
    headers: Option<Span>,
}

/// An absolute URI; `sip:`/`sips:` ones are parsed into components.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uri {
    raw: String,
    scheme: Scheme,
    scheme_len: usize,
    sip: Option<SipParts>,
}

fn is_scheme_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.')
}

fn is_host_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'.'
}

/// Characters allowed in the opaque part of a non-SIP absolute URI: visible ASCII except the
/// delimiters that would end it inside a header (`<`, `>`, `"`) and space.
fn is_opaque_char(b: u8) -> bool {
    b.is_ascii_graphic() && !matches!(b, b'<' | b'>' | b'"')
}

fn is_param_char(b: u8) -> bool {
    is_unreserved(b) || is_param_unreserved(b)
}

fn is_hnv_char(b: u8) -> bool {
    is_unreserved(b) || is_hnv_unreserved(b)
}

impl Uri {
    /// Parses an absolute URI.
    pub fn parse(s: &str) -> Result<Uri, SyntaxError> {
        let b = s.as_bytes();
        let colon = b
            .iter()
            .position(|&c| c == b':')
            .ok_or(SyntaxError::UnexpectedEnd)?;
        let scheme = b.get(..colon).unwrap_or_default();
        match scheme.first() {
            Some(c) if c.is_ascii_alphabetic() => {}
            _ => return Err(SyntaxError::UnexpectedByte { at: 0 }),
        }
        if let Some(at) = scheme.iter().position(|&c| !is_scheme_char(c)) {
            return Err(SyntaxError::UnexpectedByte { at });
        }
        let kind = if scheme.eq_ignore_ascii_case(b"sip") {
            Scheme::Sip
        } else if scheme.eq_ignore_ascii_case(b"sips") {
            Scheme::Sips
        } else if scheme.eq_ignore_ascii_case(b"tel") {
            Scheme::Tel
        } else {
            Scheme::Other
        };
        let rest_start = colon + 1;
        let sip = match kind {
            Scheme::Sip | Scheme::Sips => Some(parse_sip(b, rest_start)?),
            Scheme::Tel | Scheme::Other => {
                let rest = b.get(rest_start..).unwrap_or_default();
                if rest.is_empty() {
                    return Err(SyntaxError::UnexpectedEnd);
                }
                if let Some(at) = rest.iter().position(|&c| !is_opaque_char(c)) {
                    return Err(SyntaxError::UnexpectedByte {
                        at: rest_start + at,
                    });
                }
                None
            }
        };
        Ok(Uri {
            raw: s.to_owned(),
            scheme: kind,
            scheme_len: colon,
            sip,
        })
    }

    /// Builds `sip:` (or `sips:`) `[user@]host[:port]`, %-escaping every user byte that a
    /// SIP user part cannot hold (RFC 3261 §25.1 `user`), so no input can change the URI's
    /// structure. `host` must be a hostname, IPv4 address or `[IPv6]` reference.
    pub fn sip(
        secure: bool,
        user: Option<&str>,
        host: &str,
        port: Option<u16>,
    ) -> Result<Uri, SyntaxError> {
        let mut s = String::with_capacity(8 + host.len() + user.map_or(0, str::len) * 3);
        s.push_str(if secure { "sips:" } else { "sip:" });
        if let Some(user) = user {
            if user.is_empty() {
                return Err(SyntaxError::Empty);
            }
            percent_encode(
                user.as_bytes(),
                |b| is_unreserved(b) || is_user_unreserved(b),
                &mut s,
            );
            s.push('@');
        }
        let host_start = s.len();
        s.push_str(host);
        if let Some(port) = port {
            s.push(':');
            s.push_str(&port.to_string());
        }
        let uri = Uri::parse(&s)?;
        // The host must be exactly what was given: no parameters or headers smuggled in.
        match &uri.sip {
            Some(p)
                if p.host.start == host_start
                    && p.host.end == host_start + host.len()
                    && p.params.start == p.params.end
                    && p.headers.is_none() =>
            {
                Ok(uri)
            }
            _ => Err(SyntaxError::UnexpectedByte { at: 0 }),
        }
    }

    /// Returns this URI with `;name[=value]` appended (name and value are %-escaped).
    pub fn with_param(&self, name: &str, value: Option<&str>) -> Result<Uri, SyntaxError> {
        if self.sip.is_none() || self.headers().is_some() || name.is_empty() {
            return Err(SyntaxError::UnexpectedByte { at: 0 });
        }
        let mut s = self.raw.clone();
        s.push(';');
        percent_encode(name.as_bytes(), is_param_char, &mut s);
        if let Some(v) = value {
            s.push('=');
            percent_encode(v.as_bytes(), is_param_char, &mut s);
        }
        Uri::parse(&s)
    }

    fn slice(&self, span: Span) -> &str {
        self.raw.get(span.start..span.end).unwrap_or_default()
    }

    /// The URI exactly as received.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// The scheme kind.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// The scheme as written (e.g. `soap.beep`).
    pub fn scheme_str(&self) -> &str {
        self.raw.get(..self.scheme_len).unwrap_or_default()
    }

    /// True for `sip:` and `sips:` URIs.
    pub fn is_sip(&self) -> bool {
        self.sip.is_some()
    }

    /// The user part, raw (escapes not decoded).
    pub fn user(&self) -> Option<&str> {
        let p = self.sip.as_ref()?;
        p.user.map(|s| self.slice(s))
    }

    /// The user part with `%XX` escapes decoded (may hold any byte, NUL included).
    pub fn user_decoded(&self) -> Option<Cow<'_, [u8]>> {
        // The parser checked every escape, so decoding cannot fail here.
        self.user().and_then(|u| percent_decode(u).ok())
    }

    /// The password, raw.
    pub fn password(&self) -> Option<&str> {
        let p = self.sip.as_ref()?;
        p.password.map(|s| self.slice(s))
    }

    /// The host (an IPv6 reference keeps its brackets); empty for non-SIP URIs.
    pub fn host(&self) -> &str {
        match &self.sip {
            Some(p) => self.slice(p.host),
            None => "",
        }
    }

    /// The port, when given.
    pub fn port(&self) -> Option<u16> {
        self.sip.as_ref().and_then(|p| p.port)
    }

    /// The uri-parameters in order, raw: `(name, value)`.
    pub fn params(&self) -> impl Iterator<Item = (&str, Option<&str>)> {
        let text = match &self.sip {
            Some(p) if p.params.end > p.params.start => self.slice(p.params),
            _ => "",
        };
        text.split(';')
            .filter(|p| !p.is_empty())
            .map(|p| match p.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (p, None),
            })
    }

    /// The raw value of the first uri-parameter named `name` (`Some("")` for a flag).
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.unwrap_or(""))
    }

    /// The headers component (after `?`), raw.
    pub fn headers(&self) -> Option<&str> {
        let p = self.sip.as_ref()?;
        p.headers.map(|s| self.slice(s))
    }
}

impl fmt::Display for Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

fn parse_sip(b: &[u8], start: usize) -> Result<SipParts, SyntaxError> {
    let rest = b.get(start..).unwrap_or_default();
    // Neither the host nor parameters nor headers may hold a raw '@', and user and password
    // must escape it, so the first '@' ends the userinfo (RFC 4475 `intmeth`, `semiuri`).
    let (user, password, host_start) = match rest.iter().position(|&c| c == b'@') {
        Some(at) => {
            let userinfo = rest.get(..at).unwrap_or_default();
            let (u, pw) = match userinfo.iter().position(|&c| c == b':') {
                Some(colon) => (
                    Span {
                        start,
                        end: start + colon,
                    },
                    Some(Span {
                        start: start + colon + 1,
                        end: start + at,
                    }),
                ),
                None => (
                    Span {
                        start,
                        end: start + at,
                    },
                    None,
                ),
            };
            let user_bytes = b.get(u.start..u.end).unwrap_or_default();
            if user_bytes.is_empty() {
                return Err(SyntaxError::Empty);
            }
            check_escaped(user_bytes, |c| is_unreserved(c) || is_user_unreserved(c))
                .map_err(|e| shift(e, u.start))?;
            if let Some(pw) = pw {
                check_escaped(b.get(pw.start..pw.end).unwrap_or_default(), |c| {
                    is_unreserved(c) || is_password_extra(c)
                })
                .map_err(|e| shift(e, pw.start))?;
            }
            (Some(u), pw, start + at + 1)
        }
        None => (None, None, start),
    };
    // hostport
    let mut i = host_start;
    if b.get(i) == Some(&b'[') {
        while let Some(&c) = b.get(i) {
            i += 1;
            if c == b']' {
                break;
            }
            if !(c == b'[' || c.is_ascii_hexdigit() || c == b':' || c == b'.') {
                return Err(SyntaxError::UnexpectedByte { at: i - 1 });
            }
        }
        if b.get(i.wrapping_sub(1)) != Some(&b']') || i - host_start < 3 {
            return Err(SyntaxError::UnexpectedEnd);
        }
    } else {
        while b.get(i).is_some_and(|&c| is_host_char(c)) {
            i += 1;
        }
        if i == host_start {
            return Err(if i >= b.len() {
                SyntaxError::UnexpectedEnd
            } else {
                SyntaxError::UnexpectedByte { at: i }
            });
        }
    }
    let host = Span {
        start: host_start,
        end: i,
    };
    let mut port = None;
    if b.get(i) == Some(&b':') {
        i += 1;
        let ds = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        let digits = b.get(ds..i).unwrap_or_default();
        let n = super::grammar::parse_decimal(digits, u64::from(u16::MAX))?;
        port = Some(u16::try_from(n).map_err(|_| SyntaxError::NumberOutOfRange)?);
    }
    // uri-parameters
    let params_start = i;
    while b.get(i) == Some(&b';') {
        i += 1;
        let ns = i;
        while b.get(i).is_some_and(|&c| c != b';' && c != b'?') {
            i += 1;
        }
        let param = b.get(ns..i).unwrap_or_default();
        let (name, value) = match param.iter().position(|&c| c == b'=') {
            Some(eq) => (param.get(..eq).unwrap_or_default(), param.get(eq + 1..)),
            None => (param, None),
        };
        if name.is_empty() || value.is_some_and(<[u8]>::is_empty) {
            return Err(SyntaxError::Empty);
        }
        check_escaped(name, is_param_char).map_err(|e| shift(e, ns))?;
        if let Some(v) = value {
            check_escaped(v, is_param_char).map_err(|e| shift(e, ns))?;
        }
    }
    let params = Span {
        start: (params_start + 1).min(i),
        end: i,
    };
    let headers = if b.get(i) == Some(&b'?') {
        let hs = i + 1;
        let text = b.get(hs..).unwrap_or_default();
        for h in text.split(|&c| c == b'&') {
            let eq = h
                .iter()
                .position(|&c| c == b'=')
                .ok_or(SyntaxError::UnexpectedEnd)?;
            let (name, value) = (
                h.get(..eq).unwrap_or_default(),
                h.get(eq + 1..).unwrap_or_default(),
            );
            if name.is_empty() {
                return Err(SyntaxError::Empty);
            }
            check_escaped(name, is_hnv_char).map_err(|e| shift(e, hs))?;
            check_escaped(value, is_hnv_char).map_err(|e| shift(e, hs))?;
        }
        i = b.len();
        Some(Span { start: hs, end: i })
    } else {
        None
    };
    if i != b.len() {
        return Err(SyntaxError::UnexpectedByte { at: i });
    }
    Ok(SipParts {
        user,
        password,
        host,
        port,
        params,
        headers,
    })
}

fn shift(e: SyntaxError, by: usize) -> SyntaxError {
    match e {
        SyntaxError::UnexpectedByte { at } => SyntaxError::UnexpectedByte { at: at + by },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sip_components() {
        let u =
            Uri::parse("sip:alice:pw@Example.com:5061;transport=tls;lr?subject=x&h=%20").unwrap();
        assert_eq!(u.scheme(), Scheme::Sip);
        assert_eq!(u.user(), Some("alice"));
        assert_eq!(u.password(), Some("pw"));
        assert_eq!(u.host(), "Example.com");
        assert_eq!(u.port(), Some(5061));
        assert_eq!(u.param("TRANSPORT"), Some("tls"));
        assert_eq!(u.param("lr"), Some(""));
        assert_eq!(u.headers(), Some("subject=x&h=%20"));
        assert_eq!(
            u.to_string(),
            "sip:alice:pw@Example.com:5061;transport=tls;lr?subject=x&h=%20"
        );
    }

    #[test]
    fn torture_user_parts() {
        let u = Uri::parse("sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com").unwrap();
        assert_eq!(
            u.user(),
            Some("1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*")
        );
        assert_eq!(
            u.password(),
            Some("&it+has=1,weird!*pas$wo~d_too.(doesn't-it)")
        );
        assert_eq!(u.host(), "example.com");
        let u = Uri::parse("sip:user;par=u%40example.net@example.com").unwrap();
        assert_eq!(u.user(), Some("user;par=u%40example.net"));
        assert_eq!(&*u.user_decoded().unwrap(), b"user;par=u@example.net");
        let u = Uri::parse("sip:null-%00-null@example.com").unwrap();
        assert_eq!(&*u.user_decoded().unwrap(), b"null-\0-null");
        let u = Uri::parse("sip:[2001:db8::10]:5070").unwrap();
        assert_eq!(u.host(), "[2001:db8::10]");
        assert_eq!(u.port(), Some(5070));
    }

    #[test]
    fn other_schemes_are_opaque() {
        let u = Uri::parse("soap.beep://192.0.2.103:3002").unwrap();
        assert_eq!(u.scheme(), Scheme::Other);
        assert_eq!(u.scheme_str(), "soap.beep");
        assert!(!u.is_sip());
        assert_eq!(Uri::parse("tel:+1-555").unwrap().scheme(), Scheme::Tel);
    }

    #[test]
    fn refusals() {
        for bad in [
            "<sip:user@example.com>",
            "sip:user@example.com; lr",
            "sip:",
            "sip:@host",
            "sip:us%zzer@host",
            "sip:host:99999",
            "sip:host;;lr",
            "sip:host;a=",
            "sip:ho st",
            "sip:host?",
            "1sip:x",
            "nocolon",
            "x:",
            "sip:[::1",
        ] {
            assert!(Uri::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn builder_escapes_user_and_refuses_smuggling() {
        let u = Uri::sip(false, Some("a b@c#%"), "example.com", Some(5061)).unwrap();
        assert_eq!(u.as_str(), "sip:a%20b%40c%23%25@example.com:5061");
        assert_eq!(&*u.user_decoded().unwrap(), b"a b@c#%");
        assert_eq!(Uri::parse(u.as_str()).unwrap(), u);
        assert!(Uri::sip(false, None, "example.com;maddr=evil", None).is_err());
        assert!(Uri::sip(false, None, "example.com\r\nX: y", None).is_err());
        assert!(Uri::sip(false, Some(""), "example.com", None).is_err());
        let g = u.with_param("gr", Some("res/1 2")).unwrap();
        assert_eq!(g.param("gr"), Some("res/1%202"));
    }
}
