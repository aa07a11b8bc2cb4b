//! The lossless view of one SIP message (RFC 3261 §7): start line, header fields in their
//! original order with their original names, and the body bytes.
//!
//! Guarantees of a [`Message`]:
//! - [`Message::as_bytes`] is exactly the received octets of this message (leading CRLFs and,
//!   for a datagram, octets beyond Content-Length excluded).
//! - the start line is a well-formed Request-Line (`token SP 1*VCHAR SP SIP/d.d`, single
//!   spaces) or Status-Line (`SIP/d.d SP 3DIGIT SP reason`, code 100–699);
//! - every header name is a `token`; values are split from names but not interpreted; folded
//!   values are unfolded on access ([`Field::value`]) and never contain CR or LF;
//! - at most one Content-Length value (repeated equal values are tolerated here and refused
//!   by the typed layer), and the body is exactly that long.
//!
//! In scope: §7.1–7.5 syntax, limits, [`AnswerContext`] for answering what cannot be parsed
//! (house style #10). Out of scope: meaning of header values ([`super::header`],
//! [`super::request`]), stream framing ([`super::frame`]).

use std::borrow::Cow;
use std::fmt;

use super::grammar::{is_token, is_token_str, is_ws, split_list, trim_ws, unfold};
use super::name::{self, HeaderName};

/// Size and count limits applied while parsing and framing (house style #13).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest message, start line to end of body, in octets.
    pub max_message_len: usize,
    /// Most header fields (lines that are not continuations).
    pub max_headers: usize,
    /// Longest single physical line, in octets, without its CRLF.
    pub max_line_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_len: 65_536,
            max_headers: 200,
            max_line_len: 8_192,
        }
    }
}

/// Which limit of [`Limits`] was exceeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Limit {
    /// [`Limits::max_message_len`].
    MessageLength,
    /// [`Limits::max_headers`].
    HeaderCount,
    /// [`Limits::max_line_len`].
    LineLength,
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Limit::MessageLength => "message length",
            Limit::HeaderCount => "header count",
            Limit::LineLength => "line length",
        })
    }
}

/// Why octets are not a SIP message.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParseError {
    /// A configured limit was exceeded.
    TooLarge {
        /// The limit.
        limit: Limit,
        /// The length or count seen (at least).
        len: usize,
        /// The configured maximum.
        max: usize,
    },
    /// The octets end before the empty line that ends the header section.
    UnterminatedHeaders,
    /// A line ends in a bare LF or a CR is not followed by LF (line number, 1-based).
    BareLineEnd {
        /// 1-based line number.
        line: usize,
    },
    /// The first line is neither a Request-Line nor a Status-Line.
    BadStartLine {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A header line has no colon, or its name is not a token (line number, 1-based).
    BadHeaderLine {
        /// 1-based line number.
        line: usize,
    },
    /// Content-Length is not a non-negative decimal number.
    BadContentLength,
    /// Several Content-Length fields disagree.
    ConflictingContentLength,
    /// The body is shorter than Content-Length says.
    BodyTruncated {
        /// Content-Length.
        declared: usize,
        /// Octets actually present after the header section.
        available: usize,
    },
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::TooLarge { limit, len, max } => {
                write!(f, "{limit} {len} exceeds the limit of {max}")
            }
            ParseError::UnterminatedHeaders => f.write_str("header section is not terminated"),
            ParseError::BareLineEnd { line } => write!(f, "line {line} does not end in crlf"),
            ParseError::BadStartLine { reason } => write!(f, "bad start line: {reason}"),
            ParseError::BadHeaderLine { line } => write!(f, "bad header line {line}"),
            ParseError::BadContentLength => f.write_str("content-length is not a number"),
            ParseError::ConflictingContentLength => {
                f.write_str("several content-length values disagree")
            }
            ParseError::BodyTruncated {
                declared,
                available,
            } => write!(
                f,
                "body has {available} octets, content-length says {declared}"
            ),
        }
    }
}

impl std::error::Error for ParseError {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    pub(crate) start: usize,
    pub(crate) end: usize,
}

impl Span {
    fn get(self, raw: &[u8]) -> &[u8] {
        raw.get(self.start..self.end).unwrap_or_default()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    Request {
        method: Span,
        uri: Span,
        version: Span,
    },
    Response {
        version: Span,
        code: u16,
        reason: Span,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RawField {
    name: Span,
    value: Span,
}

/// One parsed SIP message; see the module documentation for its guarantees.
#[derive(Clone, PartialEq, Eq)]
pub struct Message {
    raw: Vec<u8>,
    start: Start,
    fields: Vec<RawField>,
    body: Span,
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("raw", &String::from_utf8_lossy(&self.raw))
            .finish()
    }
}

/// One header field of a [`Message`], borrowed.
#[derive(Debug, Clone, Copy)]
pub struct Field<'a> {
    name: &'a str,
    raw_value: &'a [u8],
}

impl<'a> Field<'a> {
    /// The name exactly as received (`v`, `VIA`, `Ms-Conversation-ID`...).
    pub fn name(&self) -> &'a str {
        self.name
    }

    /// The value as received, folds included, without leading and trailing white space.
    pub fn raw_value(&self) -> &'a [u8] {
        self.raw_value
    }

    /// The value with folds replaced by a single space.
    pub fn value(&self) -> Cow<'a, [u8]> {
        unfold(self.raw_value)
    }

    /// [`Field::value`] as text, when it is UTF-8.
    pub fn value_str(&self) -> Option<Cow<'a, str>> {
        match self.value() {
            Cow::Borrowed(b) => std::str::from_utf8(b).ok().map(Cow::Borrowed),
            Cow::Owned(v) => String::from_utf8(v).ok().map(Cow::Owned),
        }
    }

    /// True when this field is the known header `h` (full or compact name).
    pub fn is(&self, h: HeaderName) -> bool {
        h.matches(self.name.as_bytes())
    }
}

impl Message {
    /// True for a request, false for a response.
    pub fn is_request(&self) -> bool {
        matches!(self.start, Start::Request { .. })
    }

    fn text(&self, span: Span) -> &str {
        // Start-line parts other than the reason phrase were checked to be ASCII.
        std::str::from_utf8(span.get(&self.raw)).unwrap_or_default()
    }

    /// The method of a request, as received (case-sensitive, RFC 3261 §7.1).
    pub fn method(&self) -> Option<&str> {
        match self.start {
            Start::Request { method, .. } => Some(self.text(method)),
            Start::Response { .. } => None,
        }
    }

    /// The Request-URI of a request, raw.
    pub fn request_uri(&self) -> Option<&str> {
        match self.start {
            Start::Request { uri, .. } => Some(self.text(uri)),
            Start::Response { .. } => None,
        }
    }

    /// The SIP-Version of the start line (`SIP/2.0`, or e.g. `SIP/7.0` for RFC 4475 `badvers`).
    pub fn version(&self) -> &str {
        match self.start {
            Start::Request { version, .. } | Start::Response { version, .. } => self.text(version),
        }
    }

    /// True when the version is SIP/2.0 (the literal is case-insensitive, RFC 5234 §2.3).
    pub fn is_sip_2_0(&self) -> bool {
        self.version().eq_ignore_ascii_case("SIP/2.0")
    }

    /// The status code of a response.
    pub fn status(&self) -> Option<u16> {
        match self.start {
            Start::Response { code, .. } => Some(code),
            Start::Request { .. } => None,
        }
    }

    /// The reason phrase of a response, raw octets (usually UTF-8).
    pub fn reason(&self) -> Option<&[u8]> {
        match self.start {
            Start::Response { reason, .. } => Some(reason.get(&self.raw)),
            Start::Request { .. } => None,
        }
    }

    /// The start line without its CRLF.
    pub fn start_line(&self) -> &[u8] {
        let end = self.raw.windows(2).position(|w| w == b"\r\n").unwrap_or(0);
        self.raw.get(..end).unwrap_or_default()
    }

    fn field(&self, f: &RawField) -> Field<'_> {
        Field {
            name: std::str::from_utf8(f.name.get(&self.raw)).unwrap_or_default(),
            raw_value: f.value.get(&self.raw),
        }
    }

    /// All header fields in order.
    pub fn fields(&self) -> impl Iterator<Item = Field<'_>> {
        self.fields.iter().map(|f| self.field(f))
    }

    /// The number of header fields.
    pub fn field_count(&self) -> usize {
        self.fields.len()
    }

    /// All fields of the known header `h`, in order.
    pub fn all(&self, h: HeaderName) -> impl Iterator<Item = Field<'_>> {
        self.fields().filter(move |f| f.is(h))
    }

    /// The first field of the known header `h`.
    pub fn first(&self, h: HeaderName) -> Option<Field<'_>> {
        self.all(h).next()
    }

    /// The first field named `name` (any header, known or not; case-insensitive, compact
    /// forms of known headers resolved).
    pub fn get(&self, name: &str) -> Option<Field<'_>> {
        self.fields()
            .find(|f| name::same(f.name.as_bytes(), name.as_bytes()))
    }

    /// The body octets.
    pub fn body(&self) -> &[u8] {
        self.body.get(&self.raw)
    }

    /// The whole message exactly as received.
    pub fn as_bytes(&self) -> &[u8] {
        &self.raw
    }

    /// Appends the message in canonical form: the start line as received, full header names,
    /// unfolded values, one `Content-Length` computed from the body (placed last), CRLF line
    /// ends. Parsing the output gives the same start line, fields (Content-Length aside) and
    /// body.
    pub fn write_canonical(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.start_line());
        out.extend_from_slice(b"\r\n");
        for f in self.fields() {
            if f.is(name::CONTENT_LENGTH) {
                continue;
            }
            out.extend_from_slice(name::canonical(f.name).as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(&f.value());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"Content-Length: ");
        out.extend_from_slice(self.body().len().to_string().as_bytes());
        out.extend_from_slice(b"\r\n\r\n");
        out.extend_from_slice(self.body());
    }
}

/// The header fields needed to answer a request that could not be fully parsed
/// (RFC 3261 §8.2.6.2: Via, From, To, Call-ID and CSeq are copied into the response).
/// Values are unfolded and trimmed; a value holding CR, LF, NUL or non-UTF-8 is left out
/// so that an answer can never carry it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AnswerContext {
    /// Every Via field value, in order.
    pub via: Vec<String>,
    /// The first From value.
    pub from: Option<String>,
    /// The first To value.
    pub to: Option<String>,
    /// The first Call-ID value.
    pub call_id: Option<String>,
    /// The first CSeq value.
    pub cseq: Option<String>,
}

/// `<uri>;params` of a name-addr value: from the first `<` outside a quoted string.
fn without_display_name(value: &str) -> Option<&str> {
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in value.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '<' if !quoted => return value.get(i..),
            _ => {}
        }
    }
    None
}

impl AnswerContext {
    fn add(&mut self, name: &[u8], value: &[u8]) {
        let value = unfold(trim_ws(value));
        let Ok(mut text) = std::str::from_utf8(&value) else {
            return;
        };
        let address = name::FROM.matches(name) || name::TO.matches(name);
        if address && text.contains('\0') {
            // A NUL in a From/To display name (a quoted-pair, RFC 4475 `intmeth`): answer
            // without the display name, as the builder does with typed values. From and To
            // compare by URI and parameters (RFC 3261 §19.3), and an answer lacking them is
            // no answer (found by the `sip_frame` fuzz target).
            text = without_display_name(text).unwrap_or(text);
        }
        if text.bytes().any(|b| b == 0 || b == b'\r' || b == b'\n') {
            return;
        }
        let slot = if name::VIA.matches(name) {
            self.via.push(text.to_owned());
            return;
        } else if name::FROM.matches(name) {
            &mut self.from
        } else if name::TO.matches(name) {
            &mut self.to
        } else if name::CALL_ID.matches(name) {
            &mut self.call_id
        } else if name::CSEQ.matches(name) {
            &mut self.cseq
        } else {
            return;
        };
        if slot.is_none() {
            *slot = Some(text.to_owned());
        }
    }

    /// Collects the answer fields of a parsed request (`None` for a response).
    pub fn from_message(m: &Message) -> Option<AnswerContext> {
        if !m.is_request() {
            return None;
        }
        let mut ctx = AnswerContext::default();
        for f in m.fields() {
            ctx.add(f.name.as_bytes(), f.raw_value);
        }
        Some(ctx)
    }

    /// Collects the answer fields from the header section of something that looks like a
    /// request but did not parse: lines are read leniently, bad lines skipped. `None` when
    /// the first line looks like a response (responses are never answered) or nothing
    /// useful was found.
    pub fn salvage(head: &[u8]) -> Option<AnswerContext> {
        let head = skip_leading_crlf(head);
        if head.len() >= 4
            && head
                .get(..4)
                .is_some_and(|p| p.eq_ignore_ascii_case(b"SIP/"))
        {
            return None;
        }
        let mut ctx = AnswerContext::default();
        let mut lines = head.split(|&b| b == b'\n').skip(1).peekable();
        while let Some(line) = lines.next() {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.is_empty() {
                break;
            }
            if line.first().is_some_and(|&b| is_ws(b)) {
                continue;
            }
            let mut logical: Cow<[u8]> = Cow::Borrowed(line);
            while let Some(next) = lines.peek() {
                if !next.first().is_some_and(|&b| is_ws(b)) {
                    break;
                }
                let next = next.strip_suffix(b"\r").unwrap_or(next);
                let owned = logical.to_mut();
                owned.push(b' ');
                owned.extend_from_slice(trim_ws(next));
                lines.next();
            }
            if let Some(colon) = logical.iter().position(|&b| b == b':') {
                let (name, value) = logical.split_at(colon);
                ctx.add(trim_ws(name), value.get(1..).unwrap_or_default());
            }
        }
        if ctx == AnswerContext::default() {
            None
        } else {
            Some(ctx)
        }
    }

    /// Whether the salvaged CSeq names ACK (an ACK is never answered, RFC 3261 §17.2.1).
    pub fn is_ack(&self) -> bool {
        self.cseq.as_deref().is_some_and(|c| {
            c.split_ascii_whitespace()
                .nth(1)
                .is_some_and(|m| m.eq_ignore_ascii_case("ACK"))
        })
    }

    /// The top Via value (first element of the first Via field).
    pub fn top_via(&self) -> Option<&str> {
        let first = self.via.first()?;
        split_list(first.as_bytes())
            .next()
            .and_then(|v| std::str::from_utf8(v).ok())
    }
}

pub(crate) fn skip_leading_crlf(mut b: &[u8]) -> &[u8] {
    while let Some(rest) = b.strip_prefix(b"\r\n") {
        b = rest;
    }
    b
}

/// Progress of [`find_head_end`] over a growing buffer, so that octets already scanned are
/// not scanned again when more arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HeadScan {
    /// Offset of the first line not yet complete.
    line_start: usize,
    /// Its 1-based number.
    line_no: usize,
    /// Offset up to which that line has been searched for LF.
    searched: usize,
}

impl Default for HeadScan {
    fn default() -> Self {
        HeadScan {
            line_start: 0,
            line_no: 1,
            searched: 0,
        }
    }
}

/// Finds the end of the header section (the offset just after the empty line), checking the
/// line-length, bare-LF and message-length limits on the way. `Ok(None)`: not complete yet.
pub(crate) fn find_head_end(buf: &[u8], limits: &Limits) -> Result<Option<usize>, ParseError> {
    find_head_end_from(buf, limits, &mut HeadScan::default())
}

/// [`find_head_end`] resuming from `scan`, which must come from earlier calls on a prefix of
/// the same buffer.
pub(crate) fn find_head_end_from(
    buf: &[u8],
    limits: &Limits,
    scan: &mut HeadScan,
) -> Result<Option<usize>, ParseError> {
    loop {
        let from = scan.searched.max(scan.line_start);
        let found = buf
            .get(from..)
            .unwrap_or_default()
            .iter()
            .position(|&b| b == b'\n');
        let Some(lf) = found.map(|i| from + i - scan.line_start) else {
            scan.searched = buf.len();
            // A CR at the end may be the first half of the line's CRLF: not counted.
            let partial = buf.len().saturating_sub(scan.line_start)
                - usize::from(buf.len() > scan.line_start && buf.last() == Some(&b'\r'));
            if partial > limits.max_line_len {
                return Err(ParseError::TooLarge {
                    limit: Limit::LineLength,
                    len: partial,
                    max: limits.max_line_len,
                });
            }
            if buf.len() > limits.max_message_len {
                return Err(ParseError::TooLarge {
                    limit: Limit::MessageLength,
                    len: buf.len(),
                    max: limits.max_message_len,
                });
            }
            return Ok(None);
        };
        let rest = buf.get(scan.line_start..).unwrap_or_default();
        if lf == 0 || rest.get(lf - 1) != Some(&b'\r') {
            return Err(ParseError::BareLineEnd { line: scan.line_no });
        }
        let line_len = lf - 1;
        if line_len > limits.max_line_len {
            return Err(ParseError::TooLarge {
                limit: Limit::LineLength,
                len: line_len,
                max: limits.max_line_len,
            });
        }
        let next = scan.line_start + lf + 1;
        if next > limits.max_message_len {
            return Err(ParseError::TooLarge {
                limit: Limit::MessageLength,
                len: next,
                max: limits.max_message_len,
            });
        }
        if line_len == 0 && scan.line_no > 1 {
            return Ok(Some(next));
        }
        if line_len == 0 {
            return Err(ParseError::BadStartLine {
                reason: "empty start line",
            });
        }
        scan.line_start = next;
        scan.searched = next;
        scan.line_no += 1;
    }
}

fn parse_version(v: &[u8]) -> bool {
    // "SIP" "/" 1*DIGIT "." 1*DIGIT
    let Some(rest) = v
        .get(..4)
        .filter(|p| p.eq_ignore_ascii_case(b"SIP/"))
        .and_then(|_| v.get(4..))
    else {
        return false;
    };
    let mut parts = rest.split(|&b| b == b'.');
    let ok =
        |p: Option<&[u8]>| p.is_some_and(|p| !p.is_empty() && p.iter().all(u8::is_ascii_digit));
    ok(parts.next()) && ok(parts.next()) && parts.next().is_none()
}

fn parse_start(line: &[u8]) -> Result<Start, ParseError> {
    let bad = |reason| Err(ParseError::BadStartLine { reason });
    if line.iter().any(|&b| b < 0x20 && b != b'\t' || b == 0x7f) {
        return bad("control character");
    }
    if line.len() >= 4
        && line
            .get(..4)
            .is_some_and(|p| p.eq_ignore_ascii_case(b"SIP/"))
    {
        let sp = line.iter().position(|&b| b == b' ').unwrap_or(line.len());
        if !parse_version(line.get(..sp).unwrap_or_default()) {
            return bad("bad version");
        }
        let after = line.get(sp + 1..).unwrap_or_default();
        let code_digits = after.get(..3).unwrap_or_default();
        if code_digits.len() != 3 || !code_digits.iter().all(u8::is_ascii_digit) {
            return bad("status code is not three digits");
        }
        let code = code_digits
            .iter()
            .fold(0u16, |n, &d| n * 10 + u16::from(d - b'0'));
        if !(100..=699).contains(&code) {
            return bad("status code out of range");
        }
        // COMPAT: a missing SP before an empty reason phrase is accepted.
        let reason_start = match after.get(3) {
            None => sp + 4,
            Some(b' ') => sp + 5,
            Some(_) => return bad("status code is not three digits"),
        };
        return Ok(Start::Response {
            version: Span { start: 0, end: sp },
            code,
            reason: Span {
                start: reason_start.min(line.len()),
                end: line.len(),
            },
        });
    }
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(uri), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return bad("request line is not three parts separated by single spaces");
    };
    if !is_token_str(method) {
        return bad("method is not a token");
    }
    if uri.is_empty() || uri.iter().any(|&b| !b.is_ascii_graphic()) {
        return bad("bad request-uri");
    }
    if !parse_version(version) {
        return bad("bad version");
    }
    let m_end = method.len();
    let u_end = m_end + 1 + uri.len();
    Ok(Start::Request {
        method: Span {
            start: 0,
            end: m_end,
        },
        uri: Span {
            start: m_end + 1,
            end: u_end,
        },
        version: Span {
            start: u_end + 1,
            end: line.len(),
        },
    })
}

fn trim_span(raw: &[u8], mut s: Span) -> Span {
    // Leading white space and folds (`TO :\r\n sip:...`, RFC 4475 `wsinv`).
    loop {
        match raw.get(s.start) {
            Some(&b) if is_ws(b) && s.start < s.end => s.start += 1,
            Some(b'\r') if s.start + 1 < s.end => s.start += 2,
            _ => break,
        }
    }
    // Trailing white space, and the CRLF of a fold followed only by white space.
    while s.end > s.start {
        match raw.get(s.end - 1) {
            Some(&b) if is_ws(b) => s.end -= 1,
            Some(b'\n') if s.end - 1 > s.start => s.end -= 2,
            _ => break,
        }
    }
    s
}

/// Parses the start line and header fields of `head` (which ends with the empty line).
fn parse_head(head: &[u8], limits: &Limits) -> Result<(Start, Vec<RawField>), ParseError> {
    let first_end = head
        .windows(2)
        .position(|w| w == b"\r\n")
        .ok_or(ParseError::UnterminatedHeaders)?;
    let start = parse_start(head.get(..first_end).unwrap_or_default())?;
    let mut fields: Vec<RawField> = Vec::with_capacity(16);
    let mut pos = first_end + 2;
    let mut line_no = 1;
    loop {
        line_no += 1;
        let rest = head.get(pos..).unwrap_or_default();
        let len = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or(ParseError::UnterminatedHeaders)?;
        if len == 0 {
            return Ok((start, fields));
        }
        let line = rest.get(..len).unwrap_or_default();
        if line.iter().any(|&b| b == b'\r' || b == b'\n') {
            return Err(ParseError::BareLineEnd { line: line_no });
        }
        if line.first().is_some_and(|&b| is_ws(b)) {
            // Continuation line (RFC 3261 §7.3.1): extends the previous field's value.
            let Some(last) = fields.last_mut() else {
                return Err(ParseError::BadHeaderLine { line: line_no });
            };
            last.value = trim_span(
                head,
                Span {
                    start: last.value.start,
                    end: pos + len,
                },
            );
        } else {
            if fields.len() >= limits.max_headers {
                return Err(ParseError::TooLarge {
                    limit: Limit::HeaderCount,
                    len: fields.len() + 1,
                    max: limits.max_headers,
                });
            }
            let name_len = line.iter().position(|&b| !is_token(b)).unwrap_or(len);
            let mut colon = name_len;
            while line.get(colon).is_some_and(|&b| is_ws(b)) {
                colon += 1;
            }
            if name_len == 0 || line.get(colon) != Some(&b':') {
                return Err(ParseError::BadHeaderLine { line: line_no });
            }
            fields.push(RawField {
                name: Span {
                    start: pos,
                    end: pos + name_len,
                },
                value: trim_span(
                    head,
                    Span {
                        start: pos + colon + 1,
                        end: pos + len,
                    },
                ),
            });
        }
        pos += len + 2;
    }
}

/// The body length declared by the Content-Length fields, if any.
fn declared_length(head: &[u8], fields: &[RawField]) -> Result<Option<usize>, ParseError> {
    let mut found: Option<usize> = None;
    for f in fields {
        if !name::CONTENT_LENGTH.matches(f.name.get(head)) {
            continue;
        }
        let v = unfold(f.value.get(head));
        let v = trim_ws(&v);
        if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
            return Err(ParseError::BadContentLength);
        }
        // Anything beyond usize is certainly beyond every limit.
        let n = super::grammar::parse_decimal(v, usize::MAX as u64)
            .ok()
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(usize::MAX);
        match found {
            Some(prev) if prev != n => return Err(ParseError::ConflictingContentLength),
            _ => found = Some(n),
        }
    }
    Ok(found)
}

/// The result of parsing a header section: everything but the body.
pub(crate) struct Head {
    start: Start,
    fields: Vec<RawField>,
    /// Offset of the first body octet.
    pub(crate) len: usize,
    /// Declared Content-Length.
    pub(crate) content_length: Option<usize>,
}

/// Parses the header section `buf[..head_len]` (as found by [`find_head_end`]).
pub(crate) fn parse_head_section(
    buf: &[u8],
    head_len: usize,
    limits: &Limits,
) -> Result<Head, ParseError> {
    let head = buf.get(..head_len).unwrap_or_default();
    let (start, fields) = parse_head(head, limits)?;
    let content_length = declared_length(head, &fields)?;
    Ok(Head {
        start,
        fields,
        len: head_len,
        content_length,
    })
}

/// Only the Content-Length of a header section, read leniently (for framing a message whose
/// header section does not parse).
pub(crate) fn lenient_content_length(head: &[u8]) -> Result<Option<usize>, ParseError> {
    let mut found: Option<usize> = None;
    for line in head.split(|&b| b == b'\n').skip(1) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.first().is_some_and(|&b| is_ws(b)) {
            continue;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (n, v) = line.split_at(colon);
        if !name::CONTENT_LENGTH.matches(trim_ws(n)) {
            continue;
        }
        let v = trim_ws(v.get(1..).unwrap_or_default());
        if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
            return Err(ParseError::BadContentLength);
        }
        let n = super::grammar::parse_decimal(v, usize::MAX as u64)
            .ok()
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(usize::MAX);
        match found {
            Some(prev) if prev != n => return Err(ParseError::ConflictingContentLength),
            _ => found = Some(n),
        }
    }
    Ok(found)
}

impl Head {
    /// Builds the message from `buf[..self.len + body_len]`.
    pub(crate) fn into_message(self, buf: &[u8], body_len: usize) -> Message {
        let end = (self.len + body_len).min(buf.len());
        Message {
            raw: buf.get(..end).unwrap_or_default().to_vec(),
            start: self.start,
            fields: self.fields,
            body: Span {
                start: self.len,
                end,
            },
        }
    }
}

/// Parses one complete message with datagram semantics (RFC 3261 §18.3): leading CRLFs are
/// skipped; without Content-Length the body is everything after the header section; octets
/// beyond Content-Length are discarded; a body shorter than Content-Length is an error.
///
/// Never panics, whatever the input: this is the fuzzing entry point.
pub fn parse_message(bytes: &[u8]) -> Result<Message, ParseError> {
    parse_message_with(bytes, &Limits::default())
}

/// [`parse_message`] with explicit limits.
pub fn parse_message_with(bytes: &[u8], limits: &Limits) -> Result<Message, ParseError> {
    let bytes = skip_leading_crlf(bytes);
    let head_len = match find_head_end(bytes, limits)? {
        Some(n) => n,
        None if bytes.len() > limits.max_message_len => {
            return Err(ParseError::TooLarge {
                limit: Limit::MessageLength,
                len: bytes.len(),
                max: limits.max_message_len,
            })
        }
        None => return Err(ParseError::UnterminatedHeaders),
    };
    let head = parse_head_section(bytes, head_len, limits)?;
    let available = bytes.len().saturating_sub(head_len);
    let body_len = match head.content_length {
        Some(n) if n > available => {
            return Err(ParseError::BodyTruncated {
                declared: n,
                available,
            })
        }
        Some(n) => n,
        None => available,
    };
    if head_len + body_len > limits.max_message_len {
        return Err(ParseError::TooLarge {
            limit: Limit::MessageLength,
            len: head_len + body_len,
            max: limits.max_message_len,
        });
    }
    Ok(head.into_message(bytes, body_len))
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPTIONS: &[u8] = b"OPTIONS sip:user@example.com SIP/2.0\r\n\
Via: SIP/2.0/TLS edge.example.com;branch=z9hG4bK776asdhds\r\n\
To: <sip:user@example.com>\r\n\
f: \"A\" <sip:a@example.net>;tag=1\r\n\
Call-ID: a84b4c76e66710\r\n\
CSeq: 63104 OPTIONS\r\n\
Ms-Conversation-ID: AcTs1234==\r\n\
Subject: two\r\n  lines\r\n\
Content-Length: 4\r\n\
\r\n\
body";

    /// Found by the `sip_frame` fuzz target on RFC 4475 `intmeth`: the 501 to this valid
    /// request had no To (its display name holds NUL) and so was no SIP response.
    #[test]
    fn answer_to_a_display_name_with_nul_keeps_the_address() {
        let request = b"FOO sip:a@example.com SIP/2.0\r\n\
Via: SIP/2.0/TCP h.example.com;branch=z9hG4bK1\r\n\
To: \"BEL:\\\x07 NUL:\\\x00 <\" <sip:a@example.com>;p=\"<\"\r\n\
From: \"\\\x00\" <sip:b@example.com>;tag=1\r\n\
Call-ID: c1\r\n\
CSeq: 1 FOO\r\n\
Max-Forwards: 70\r\n\
Content-Length: 0\r\n\r\n";
        let m = parse_message(request).unwrap();
        let ctx = AnswerContext::from_message(&m).unwrap();
        assert_eq!(ctx.to.as_deref(), Some("<sip:a@example.com>;p=\"<\""));
        assert_eq!(ctx.from.as_deref(), Some("<sip:b@example.com>;tag=1"));
        let req = crate::sip::Request::from_message(m).unwrap();
        let answer = crate::sip::response_to(&req, crate::sip::StatusCode::NOT_IMPLEMENTED, None)
            .unwrap()
            .to_bytes();
        let response = crate::sip::Response::from_message(parse_message(&answer).unwrap());
        assert!(response.is_ok(), "{}", String::from_utf8_lossy(&answer));
        // NUL anywhere else still keeps the value out of every answer.
        let mut ctx = AnswerContext::default();
        ctx.add(b"To", b"<sip:a@example.com>;p=\"\\\x00\"");
        ctx.add(b"Call-ID", b"a\x00b");
        assert_eq!(ctx, AnswerContext::default());
    }

    #[test]
    fn parses_request_and_keeps_everything() {
        let m = parse_message(OPTIONS).unwrap();
        assert!(m.is_request());
        assert_eq!(m.method(), Some("OPTIONS"));
        assert_eq!(m.request_uri(), Some("sip:user@example.com"));
        assert!(m.is_sip_2_0());
        assert_eq!(m.field_count(), 8);
        assert_eq!(m.as_bytes(), OPTIONS);
        assert_eq!(m.body(), b"body");
        assert_eq!(
            m.first(name::FROM).unwrap().raw_value(),
            b"\"A\" <sip:a@example.net>;tag=1"
        );
        assert_eq!(m.get("from").unwrap().name(), "f");
        assert_eq!(
            m.get("ms-conversation-id").unwrap().raw_value(),
            b"AcTs1234=="
        );
        let subject = m.first(name::SUBJECT).unwrap();
        assert_eq!(subject.raw_value(), b"two\r\n  lines");
        assert_eq!(&*subject.value(), b"two lines");
    }

    #[test]
    fn canonical_form_round_trips() {
        let m = parse_message(OPTIONS).unwrap();
        let mut out = Vec::new();
        m.write_canonical(&mut out);
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(text.contains("\r\nFrom: \"A\""));
        assert!(text.contains("\r\nSubject: two lines\r\n"));
        assert!(text.ends_with("Content-Length: 4\r\n\r\nbody"));
        let again = parse_message(&out).unwrap();
        assert_eq!(again.body(), m.body());
        assert_eq!(again.start_line(), m.start_line());
    }

    #[test]
    fn responses() {
        let m = parse_message(b"SIP/2.0 180 Ringing\r\nContent-Length: 0\r\n\r\n").unwrap();
        assert_eq!(m.status(), Some(180));
        assert_eq!(m.reason(), Some(&b"Ringing"[..]));
        let m = parse_message(b"SIP/2.0 100 \r\nl: 0\r\n\r\n").unwrap();
        assert_eq!(m.reason(), Some(&b""[..]));
        for bad in [
            &b"SIP/2.0 4294967301 x\r\n\r\n"[..],
            b"SIP/2.0 99 x\r\n\r\n",
            b"SIP/2.0 1000 x\r\n\r\n",
            b"SIP/x 200 OK\r\n\r\n",
        ] {
            assert!(
                matches!(parse_message(bad), Err(ParseError::BadStartLine { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn request_line_refusals() {
        for bad in [
            &b"INVITE  sip:a@b SIP/2.0\r\n\r\n"[..],
            b"INVITE sip:a@b SIP/2.0 \r\n\r\n",
            b"INVITE sip:a@b; lr SIP/2.0\r\n\r\n",
            b"INVITE sip:a@b\r\n\r\n",
            b"INV(TE sip:a@b SIP/2.0\r\n\r\n",
            b"INVITE sip:a@b SIP/2\r\n\r\n",
        ] {
            assert!(
                matches!(parse_message(bad), Err(ParseError::BadStartLine { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn header_line_refusals() {
        assert_eq!(
            parse_message(b"OPTIONS sip:a@b SIP/2.0\r\n folded first\r\n\r\n"),
            Err(ParseError::BadHeaderLine { line: 2 })
        );
        assert_eq!(
            parse_message(b"OPTIONS sip:a@b SIP/2.0\r\nno colon\r\n\r\n"),
            Err(ParseError::BadHeaderLine { line: 2 })
        );
        assert_eq!(
            parse_message(b"OPTIONS sip:a@b SIP/2.0\r\nA: b\nC: d\r\n\r\n"),
            Err(ParseError::BareLineEnd { line: 2 })
        );
    }

    #[test]
    fn content_length_rules() {
        let base = "OPTIONS sip:a@b SIP/2.0\r\n";
        let p = |h: &str, body: &str| parse_message(format!("{base}{h}\r\n{body}").as_bytes());
        assert_eq!(p("l: 2\r\n", "abXX").unwrap().body(), b"ab");
        assert_eq!(p("", "abc").unwrap().body(), b"abc");
        assert_eq!(
            p("Content-Length: -1\r\n", ""),
            Err(ParseError::BadContentLength)
        );
        assert_eq!(
            p("l: 1\r\nContent-Length: 2\r\n", "ab"),
            Err(ParseError::ConflictingContentLength)
        );
        assert_eq!(
            p("l: 9\r\n", "ab"),
            Err(ParseError::BodyTruncated {
                declared: 9,
                available: 2
            })
        );
        assert!(p("l: 99999999999999999999999\r\n", "ab").is_err());
    }

    #[test]
    fn limits_name_themselves() {
        let limits = Limits {
            max_message_len: 100,
            max_headers: 2,
            max_line_len: 40,
        };
        let many = b"OPTIONS sip:a@b SIP/2.0\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
        assert_eq!(
            parse_message_with(many, &limits),
            Err(ParseError::TooLarge {
                limit: Limit::HeaderCount,
                len: 3,
                max: 2
            })
        );
        let long = format!("OPTIONS sip:a@b SIP/2.0\r\nA: {}\r\n\r\n", "x".repeat(50));
        assert!(matches!(
            parse_message_with(long.as_bytes(), &limits),
            Err(ParseError::TooLarge {
                limit: Limit::LineLength,
                ..
            })
        ));
        let big = format!("OPTIONS sip:a@b SIP/2.0\r\nl: 90\r\n\r\n{}", "x".repeat(90));
        assert!(matches!(
            parse_message_with(big.as_bytes(), &limits),
            Err(ParseError::TooLarge {
                limit: Limit::MessageLength,
                ..
            })
        ));
        assert_eq!(
            ParseError::TooLarge {
                limit: Limit::MessageLength,
                len: 9,
                max: 8
            }
            .to_string(),
            "message length 9 exceeds the limit of 8"
        );
    }

    #[test]
    fn salvage_reads_what_it_can() {
        let head = b"INVITE <sip:bad> SIP/2.0\r\nVia: SIP/2.0/TLS h;branch=z9hG4bK1,\r\n SIP/2.0/TLS g\r\nbroken line\r\nf: <sip:a@b>;tag=9\r\nTo: <sip:c@d>\r\ni: id1\r\nCSeq: 1 INVITE\r\n\r\n";
        let ctx = AnswerContext::salvage(head).unwrap();
        assert_eq!(
            ctx.via,
            vec!["SIP/2.0/TLS h;branch=z9hG4bK1, SIP/2.0/TLS g"]
        );
        assert_eq!(ctx.top_via(), Some("SIP/2.0/TLS h;branch=z9hG4bK1"));
        assert_eq!(ctx.from.as_deref(), Some("<sip:a@b>;tag=9"));
        assert_eq!(ctx.to.as_deref(), Some("<sip:c@d>"));
        assert_eq!(ctx.call_id.as_deref(), Some("id1"));
        assert_eq!(ctx.cseq.as_deref(), Some("1 INVITE"));
        assert_eq!(
            AnswerContext::salvage(b"SIP/2.0 200 OK\r\nVia: x\r\n\r\n"),
            None
        );
    }
}
