//! Character classes and small lexers of the SIP grammar (RFC 3261 §25.1) shared by the
//! header and URI parsers: tokens, quoted strings, LWS, generic parameters, comma lists.
//!
//! In scope: byte-level recognisers over one *unfolded* header value (see
//! `unfold`). Out of scope: anything that knows what a header means.

use std::borrow::Cow;

/// `token` characters: alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~".
pub(crate) fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
        )
}

/// `unreserved`: alphanum / mark.
pub(crate) fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'_' | b'.' | b'!' | b'~' | b'*' | b'\'' | b'(' | b')'
        )
}

/// `user-unreserved` of a SIP URI user part.
pub(crate) fn is_user_unreserved(b: u8) -> bool {
    matches!(b, b'&' | b'=' | b'+' | b'$' | b',' | b';' | b'?' | b'/')
}

/// Characters of a SIP URI password besides `unreserved` and escapes.
pub(crate) fn is_password_extra(b: u8) -> bool {
    matches!(b, b'&' | b'=' | b'+' | b'$' | b',')
}

/// `param-unreserved` of a SIP URI parameter.
pub(crate) fn is_param_unreserved(b: u8) -> bool {
    matches!(b, b'[' | b']' | b'/' | b':' | b'&' | b'+' | b'$')
}

/// `hnv-unreserved` of a SIP URI header name or value.
pub(crate) fn is_hnv_unreserved(b: u8) -> bool {
    matches!(b, b'[' | b']' | b'/' | b'?' | b':' | b'+' | b'$')
}

/// SP or HTAB.
pub(crate) fn is_ws(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// True when `s` is a non-empty `token`.
pub(crate) fn is_token_str(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_token(b))
}

/// Strips SP/HTAB from both ends.
pub(crate) fn trim_ws(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if is_ws(*first) {
            s = rest;
        } else {
            break;
        }
    }
    while let [rest @ .., last] = s {
        if is_ws(*last) {
            s = rest;
        } else {
            break;
        }
    }
    s
}

/// Replaces each line fold (CRLF followed by SP/HTAB, RFC 3261 §7.3.1) by a single SP.
/// Borrows when the value has no fold, which is the common case.
pub(crate) fn unfold(raw: &[u8]) -> Cow<'_, [u8]> {
    if !raw.contains(&b'\n') {
        return Cow::Borrowed(raw);
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while let Some(&b) = raw.get(i) {
        if b == b'\r' && raw.get(i + 1) == Some(&b'\n') {
            i += 2;
            while raw.get(i).is_some_and(|&c| is_ws(c)) {
                i += 1;
            }
            out.push(b' ');
        } else {
            out.push(b);
            i += 1;
        }
    }
    Cow::Owned(out)
}

/// Splits a header value at the commas that separate list elements: commas inside a quoted
/// string or between `<` and `>` do not count. Elements are trimmed; empty elements are kept
/// so that callers can refuse them.
pub(crate) fn split_list(value: &[u8]) -> ListIter<'_> {
    ListIter { rest: Some(value) }
}

/// Iterator of [`split_list`].
pub(crate) struct ListIter<'a> {
    rest: Option<&'a [u8]>,
}

impl<'a> Iterator for ListIter<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let s = self.rest?;
        let mut in_quote = false;
        let mut in_angle = false;
        let mut i = 0;
        while let Some(&b) = s.get(i) {
            if in_quote {
                match b {
                    b'\\' => i += 1,
                    b'"' => in_quote = false,
                    _ => {}
                }
            } else {
                match b {
                    b'"' => in_quote = true,
                    b'<' => in_angle = true,
                    b'>' => in_angle = false,
                    b',' if !in_angle => {
                        self.rest = s.get(i + 1..);
                        return Some(trim_ws(s.get(..i).unwrap_or_default()));
                    }
                    _ => {}
                }
            }
            i += 1;
        }
        self.rest = None;
        Some(trim_ws(s))
    }
}

/// Why a value does not match the grammar; kept small, the caller adds which header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SyntaxError {
    /// The value ended where more was required.
    UnexpectedEnd,
    /// A byte the grammar does not allow at this place.
    UnexpectedByte {
        /// Offset in the (unfolded) value.
        at: usize,
    },
    /// A quoted string has no closing quote.
    UnterminatedQuote,
    /// A `%` not followed by two hexadecimal digits where an escape is required.
    BadEscape,
    /// A number is out of its allowed range.
    NumberOutOfRange,
    /// Text that must be UTF-8 is not.
    NotUtf8,
    /// An empty element, parameter name or value.
    Empty,
}

impl std::fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SyntaxError::UnexpectedEnd => f.write_str("unexpected end of value"),
            SyntaxError::UnexpectedByte { at } => write!(f, "unexpected byte at offset {at}"),
            SyntaxError::UnterminatedQuote => f.write_str("unterminated quoted string"),
            SyntaxError::BadEscape => f.write_str("bad %-escape"),
            SyntaxError::NumberOutOfRange => f.write_str("number out of range"),
            SyntaxError::NotUtf8 => f.write_str("text is not utf-8"),
            SyntaxError::Empty => f.write_str("empty element"),
        }
    }
}

impl std::error::Error for SyntaxError {}

/// A forward-only reader over one unfolded value.
pub(crate) struct Cursor<'a> {
    s: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(s: &'a [u8]) -> Self {
        Cursor { s, pos: 0 }
    }

    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    pub(crate) fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    pub(crate) fn at_end(&self) -> bool {
        self.pos >= self.s.len()
    }

    pub(crate) fn error(&self) -> SyntaxError {
        if self.at_end() {
            SyntaxError::UnexpectedEnd
        } else {
            SyntaxError::UnexpectedByte { at: self.pos }
        }
    }

    pub(crate) fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    pub(crate) fn expect(&mut self, b: u8) -> Result<(), SyntaxError> {
        if self.eat(b) {
            Ok(())
        } else {
            Err(self.error())
        }
    }

    /// Skips SP/HTAB (values are unfolded, so this is LWS); returns whether any was skipped.
    pub(crate) fn skip_ws(&mut self) -> bool {
        let start = self.pos;
        while self.peek().is_some_and(is_ws) {
            self.pos += 1;
        }
        self.pos > start
    }

    pub(crate) fn take_while(&mut self, pred: impl Fn(u8) -> bool) -> &'a [u8] {
        let start = self.pos;
        while self.peek().is_some_and(&pred) {
            self.pos += 1;
        }
        self.s.get(start..self.pos).unwrap_or_default()
    }

    /// A non-empty token.
    pub(crate) fn token(&mut self) -> Result<&'a [u8], SyntaxError> {
        let t = self.take_while(is_token);
        if t.is_empty() {
            Err(self.error())
        } else {
            Ok(t)
        }
    }

    /// A quoted string, returned raw with its quotes. The cursor must be at the `"`.
    pub(crate) fn quoted_raw(&mut self) -> Result<&'a [u8], SyntaxError> {
        let start = self.pos;
        self.expect(b'"')?;
        loop {
            match self.peek() {
                None => return Err(SyntaxError::UnterminatedQuote),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(self.s.get(start..self.pos).unwrap_or_default());
                }
                Some(b'\\') => {
                    // quoted-pair = "\" (%x00-09 / %x0B-0C / %x0E-7F)
                    match self.s.get(self.pos + 1) {
                        None => return Err(SyntaxError::UnterminatedQuote),
                        Some(&c) if c == b'\r' || c == b'\n' || c >= 0x80 => {
                            return Err(SyntaxError::UnexpectedByte { at: self.pos + 1 })
                        }
                        Some(_) => self.pos += 2,
                    }
                }
                // qdtext = LWS / %x21 / %x23-5B / %x5D-7E / UTF8-NONASCII
                Some(c) if c == b' ' || c == b'\t' || c >= 0x21 && c != 0x7f => self.pos += 1,
                Some(_) => return Err(self.error()),
            }
        }
    }
}

/// Removes the quotes and quoted-pair backslashes of a raw quoted string (as returned by
/// [`Cursor::quoted_raw`]); the result must be UTF-8.
pub(crate) fn unquote(raw: &[u8]) -> Result<String, SyntaxError> {
    let inner = raw
        .strip_prefix(b"\"")
        .and_then(|r| r.strip_suffix(b"\""))
        .ok_or(SyntaxError::UnterminatedQuote)?;
    let mut out = Vec::with_capacity(inner.len());
    let mut escaped = false;
    for &b in inner {
        if escaped {
            out.push(b);
            escaped = false;
        } else if b == b'\\' {
            escaped = true;
        } else {
            out.push(b);
        }
    }
    String::from_utf8(out).map_err(|_| SyntaxError::NotUtf8)
}

/// Writes `text` as a quoted string, escaping `"`, `\` and the other control characters
/// as quoted-pairs. CR and LF cannot be carried by a quoted string, and NUL is refused with
/// them (a header value from elsewhere may hold none of the three).
pub(crate) fn quote(text: &str, out: &mut String) -> Result<(), SyntaxError> {
    out.push('"');
    for (i, c) in text.char_indices() {
        match c {
            '\r' | '\n' | '\0' => return Err(SyntaxError::UnexpectedByte { at: i }),
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '\t' => out.push(c),
            c if c.is_ascii_control() => {
                out.push('\\');
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    out.push('"');
    Ok(())
}

/// One generic parameter (`name[=value]`); the value is kept raw (quotes included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    /// Parameter name as received.
    pub name: String,
    /// Raw value; `None` for a flag parameter such as `lr` or `rport`.
    pub value: Option<String>,
}

/// An ordered parameter list with case-insensitive lookup by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params(pub Vec<Param>);

impl Params {
    /// The raw value of the first parameter named `name` (`Some("")` for a flag).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|p| p.name.eq_ignore_ascii_case(name))
            .map(|p| p.value.as_deref().unwrap_or(""))
    }

    /// True when a parameter named `name` is present.
    pub fn contains(&self, name: &str) -> bool {
        self.0.iter().any(|p| p.name.eq_ignore_ascii_case(name))
    }

    /// Sets (replacing) or adds a parameter. The caller guarantees token syntax.
    pub(crate) fn set(&mut self, name: &str, value: Option<&str>) {
        let value = value.map(str::to_owned);
        if let Some(p) = self
            .0
            .iter_mut()
            .find(|p| p.name.eq_ignore_ascii_case(name))
        {
            p.value = value;
        } else {
            self.0.push(Param {
                name: name.to_owned(),
                value,
            });
        }
    }

    /// Appends `;name[=value]` for each parameter.
    pub(crate) fn write(&self, out: &mut String) {
        for p in &self.0 {
            out.push(';');
            out.push_str(&p.name);
            if let Some(v) = &p.value {
                out.push('=');
                out.push_str(v);
            }
        }
    }
}

/// Characters of a generic parameter value that is not quoted: token, plus the host
/// characters `[`, `]` and `:` (IPv6 references).
fn is_gen_value(b: u8) -> bool {
    is_token(b) || matches!(b, b'[' | b']' | b':')
}

/// Parses `*( SEMI generic-param )` up to the end of the value
/// (`SEMI = SWS ";" SWS`, `EQUAL = SWS "=" SWS`).
pub(crate) fn parse_params(c: &mut Cursor<'_>) -> Result<Params, SyntaxError> {
    let mut params = Vec::new();
    loop {
        c.skip_ws();
        if c.at_end() {
            return Ok(Params(params));
        }
        c.expect(b';')?;
        c.skip_ws();
        let name = c.token()?;
        c.skip_ws();
        let value = if c.eat(b'=') {
            c.skip_ws();
            let v = if c.peek() == Some(b'"') {
                c.quoted_raw()?
            } else {
                let v = c.take_while(is_gen_value);
                if v.is_empty() {
                    return Err(c.error());
                }
                v
            };
            Some(ascii_or_utf8(v)?)
        } else {
            None
        };
        params.push(Param {
            name: ascii_or_utf8(name)?,
            value,
        });
    }
}

/// Owned UTF-8 text of a grammar element.
pub(crate) fn ascii_or_utf8(b: &[u8]) -> Result<String, SyntaxError> {
    std::str::from_utf8(b)
        .map(str::to_owned)
        .map_err(|_| SyntaxError::NotUtf8)
}

/// Parses a decimal number of at most `max`; leading zeros are allowed (RFC 4475 `wsinv`).
pub(crate) fn parse_decimal(digits: &[u8], max: u64) -> Result<u64, SyntaxError> {
    if digits.is_empty() {
        return Err(SyntaxError::Empty);
    }
    let mut n: u64 = 0;
    for (i, &d) in digits.iter().enumerate() {
        if !d.is_ascii_digit() {
            return Err(SyntaxError::UnexpectedByte { at: i });
        }
        n = n
            .checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(d - b'0')))
            .filter(|&n| n <= max)
            .ok_or(SyntaxError::NumberOutOfRange)?;
    }
    Ok(n)
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes `%XX` escapes. Borrows when there is no `%`.
pub(crate) fn percent_decode(s: &str) -> Result<Cow<'_, [u8]>, SyntaxError> {
    if !s.contains('%') {
        return Ok(Cow::Borrowed(s.as_bytes()));
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if c == b'%' {
            let hi = b.get(i + 1).copied().and_then(hex_val);
            let lo = b.get(i + 2).copied().and_then(hex_val);
            match (hi, lo) {
                (Some(hi), Some(lo)) => out.push(hi << 4 | lo),
                _ => return Err(SyntaxError::BadEscape),
            }
            i += 3;
        } else {
            out.push(c);
            i += 1;
        }
    }
    Ok(Cow::Owned(out))
}

/// Checks that every byte is allowed by `allowed` or is part of a valid `%XX` escape.
pub(crate) fn check_escaped(s: &[u8], allowed: impl Fn(u8) -> bool) -> Result<(), SyntaxError> {
    let mut i = 0;
    while let Some(&c) = s.get(i) {
        if c == b'%' {
            let ok = s.get(i + 1).copied().and_then(hex_val).is_some()
                && s.get(i + 2).copied().and_then(hex_val).is_some();
            if !ok {
                return Err(SyntaxError::BadEscape);
            }
            i += 3;
        } else if allowed(c) {
            i += 1;
        } else {
            return Err(SyntaxError::UnexpectedByte { at: i });
        }
    }
    Ok(())
}

/// Appends `bytes` with every byte outside `allowed` written as `%XX`.
pub(crate) fn percent_encode(bytes: &[u8], allowed: impl Fn(u8) -> bool, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in bytes {
        if allowed(b) {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unfold_replaces_folds_with_one_space() {
        assert_eq!(&*unfold(b"a\r\n  b"), b"a b");
        assert_eq!(&*unfold(b"SIP  /   2.0\r\n /UDP"), b"SIP  /   2.0 /UDP");
        assert!(matches!(unfold(b"plain"), Cow::Borrowed(_)));
    }

    #[test]
    fn list_split_respects_quotes_and_angles() {
        let items: Vec<&[u8]> = split_list(br#""a,b" <sip:x;p=1,2>;q=1 , <sip:y> ,,"#).collect();
        assert_eq!(
            items,
            vec![&br#""a,b" <sip:x;p=1,2>;q=1"#[..], b"<sip:y>", b"", b""]
        );
        let one: Vec<&[u8]> = split_list(br#""a\",b""#).collect();
        assert_eq!(one.len(), 1);
    }

    #[test]
    fn params_allow_lws_around_separators() {
        let mut c = Cursor::new(b" ;   tag    = 19n ; lr ; q = 0.33;x=\"a b\"");
        let p = parse_params(&mut c).unwrap();
        assert_eq!(p.get("TAG"), Some("19n"));
        assert_eq!(p.get("lr"), Some(""));
        assert_eq!(p.get("q"), Some("0.33"));
        assert_eq!(p.get("x"), Some("\"a b\""));
        assert!(parse_params(&mut Cursor::new(b";;")).is_err());
        assert!(parse_params(&mut Cursor::new(b";a=")).is_err());
    }

    #[test]
    fn quoted_strings() {
        let mut c = Cursor::new(br#""J Rosenberg \\\"" rest"#);
        let raw = c.quoted_raw().unwrap();
        assert_eq!(unquote(raw).unwrap(), "J Rosenberg \\\"");
        assert_eq!(
            Cursor::new(b"\"open").quoted_raw(),
            Err(SyntaxError::UnterminatedQuote)
        );
        let mut s = String::new();
        quote("a\"b\\c", &mut s).unwrap();
        assert_eq!(s, r#""a\"b\\c""#);
        assert!(quote("a\r\nb", &mut String::new()).is_err());
        let mut s = String::new();
        quote("bel\x07 del\x7f tab\t", &mut s).unwrap();
        assert_eq!(s, "\"bel\\\x07 del\\\x7f tab\t\"");
        let mut c = Cursor::new(s.as_bytes());
        assert_eq!(
            unquote(c.quoted_raw().unwrap()).unwrap(),
            "bel\x07 del\x7f tab\t"
        );
    }

    #[test]
    fn decimals_and_escapes() {
        assert_eq!(parse_decimal(b"0068", 255), Ok(68));
        assert_eq!(
            parse_decimal(b"300", 255),
            Err(SyntaxError::NumberOutOfRange)
        );
        assert!(parse_decimal(b"99999999999999999999999999", u64::MAX).is_err());
        assert_eq!(&*percent_decode("%75se%72").unwrap(), b"user");
        assert!(percent_decode("%Z1").is_err());
        assert!(check_escaped(b"a%2", is_unreserved).is_err());
        let mut s = String::new();
        percent_encode(b"a b%", is_unreserved, &mut s);
        assert_eq!(s, "a%20b%25");
    }
}
