//! Framing SIP messages on a stream (TLS toward the Edge): RFC 3261 §18.3 and §7.5, and the
//! RFC 5626 §4.4.1 CRLF keepalive.
//!
//! On a stream the Content-Length header is the only message boundary, so a message without
//! a usable Content-Length cannot be framed: that is a [`FrameError`] and the shell closes
//! the connection (after answering 400 when [`FrameError::answer`] gives something to
//! answer with). A message that is framed but does not parse is *not* fatal: it comes out
//! as [`Frame::Invalid`] and the stream goes on.
//!
//! ```text
//!  client                                server
//!    │ ── CRLF CRLF (ping) ───────────────▶ │   Frame::Ping → shell writes CRLF
//!    │ ◀───────────────────── CRLF (pong) ─ │   Frame::Pong
//! ```
//!
//! Call order: append received octets to a buffer, call [`try_parse`] until it returns
//! `(0, None)`, drop the consumed octets each time; or use [`Framer`], which does that.

use std::fmt;

use super::message::{
    find_head_end_from, lenient_content_length, parse_head_section, AnswerContext, HeadScan, Limit,
    Limits, Message, ParseError,
};

/// What this side of the connection is for the RFC 5626 keepalive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeepaliveRole {
    /// The peer sends pings (CRLFCRLF) and expects a pong. A CRLF at the end of the buffer
    /// is held until the next octets show whether it starts a ping, so results do not
    /// depend on how the stream was split.
    #[default]
    Server,
    /// We send pings; the peer answers CRLF, reported as [`Frame::Pong`] as soon as it
    /// arrives. A CRLFCRLF received in one piece is still a [`Frame::Ping`]; split, it is
    /// two pongs.
    Client,
}

/// Configuration of the framer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FrameConfig {
    /// Size limits.
    pub limits: Limits,
    /// Keepalive role.
    pub keepalive: KeepaliveRole,
}

/// One item found on the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A complete, syntactically valid message.
    Message(Message),
    /// A framed message that does not parse; the stream continues. For something that looks
    /// like a request, `answer` holds what a 400 needs.
    Invalid {
        /// Why it does not parse.
        error: ParseError,
        /// Via/From/To/Call-ID/CSeq, when the octets look like a request.
        answer: Option<Box<AnswerContext>>,
    },
    /// A CRLFCRLF keepalive ping: answer with CRLF.
    Ping,
    /// A CRLF: a keepalive pong, or a stray line end between messages (§7.5).
    Pong,
}

/// The stream cannot be framed any further: close it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameError {
    /// A size limit was exceeded before the message was complete.
    TooLarge {
        /// Which limit.
        limit: Limit,
        /// Length or count seen (at least).
        len: usize,
        /// The configured maximum.
        max: usize,
    },
    /// A line in the header section ends in a bare LF or CR.
    BareLineEnd {
        /// 1-based line number.
        line: usize,
    },
    /// The first line holds control characters: this is not SIP.
    NotSip,
    /// No Content-Length: the end of the body is unknown (`inv2543` on a stream).
    MissingContentLength {
        /// What a 400 needs, when the message looks like a request.
        answer: Option<Box<AnswerContext>>,
    },
    /// Content-Length is not a non-negative number (`ncl`).
    BadContentLength {
        /// What a 400 needs, when the message looks like a request.
        answer: Option<Box<AnswerContext>>,
    },
    /// Several Content-Length values disagree (`mcl01`).
    ConflictingContentLength {
        /// What a 400 needs, when the message looks like a request.
        answer: Option<Box<AnswerContext>>,
    },
}

impl FrameError {
    /// What a 400 Bad Request sent before closing needs, if the octets were a request.
    pub fn answer(&self) -> Option<&AnswerContext> {
        match self {
            FrameError::MissingContentLength { answer }
            | FrameError::BadContentLength { answer }
            | FrameError::ConflictingContentLength { answer } => answer.as_deref(),
            FrameError::TooLarge { .. } | FrameError::BareLineEnd { .. } | FrameError::NotSip => {
                None
            }
        }
    }
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::TooLarge { limit, len, max } => {
                write!(f, "{limit} {len} exceeds the limit of {max}")
            }
            FrameError::BareLineEnd { line } => write!(f, "line {line} does not end in crlf"),
            FrameError::NotSip => f.write_str("stream does not carry sip"),
            FrameError::MissingContentLength { .. } => {
                f.write_str("content-length missing on a stream")
            }
            FrameError::BadContentLength { .. } => f.write_str("content-length is not a number"),
            FrameError::ConflictingContentLength { .. } => {
                f.write_str("several content-length values disagree")
            }
        }
    }
}

impl std::error::Error for FrameError {}

fn salvage(head: &[u8]) -> Option<Box<AnswerContext>> {
    AnswerContext::salvage(head).map(Box::new)
}

fn content_length_error(e: ParseError, head: &[u8]) -> FrameError {
    match e {
        ParseError::ConflictingContentLength => FrameError::ConflictingContentLength {
            answer: salvage(head),
        },
        _ => FrameError::BadContentLength {
            answer: salvage(head),
        },
    }
}

fn too_large(limit: Limit, len: usize, max: usize) -> FrameError {
    FrameError::TooLarge { limit, len, max }
}

/// Finds the next item at the start of `buf`. Returns the number of octets it used and the
/// item; `(0, None)` means more octets are needed.
///
/// # DoS warning
/// While a message is incomplete each call rescans its header section: at most
/// `max_message_len` octets per call, so a peer sending one octet at a time costs quadratic
/// work. [`Framer`] resumes the scan where it stopped and does not rescan while waiting for
/// a body: linear work.
pub fn try_parse(buf: &[u8], config: &FrameConfig) -> Result<(usize, Option<Frame>), FrameError> {
    Ok(match step(buf, config, &mut HeadScan::default())? {
        Step::Item(used, frame) => (used, Some(frame)),
        Step::NeedMore | Step::NeedTotal(_) => (0, None),
    })
}

enum Step {
    Item(usize, Frame),
    NeedMore,
    /// The header section is read; the message is this long in total.
    NeedTotal(usize),
}

fn step(buf: &[u8], config: &FrameConfig, scan: &mut HeadScan) -> Result<Step, FrameError> {
    match buf {
        [] | [b'\r'] => return Ok(Step::NeedMore),
        [b'\r', b'\n', b'\r', b'\n', ..] => return Ok(Step::Item(4, Frame::Ping)),
        [b'\r', b'\n'] | [b'\r', b'\n', b'\r'] => {
            return Ok(match config.keepalive {
                KeepaliveRole::Server => Step::NeedMore,
                KeepaliveRole::Client => Step::Item(2, Frame::Pong),
            })
        }
        [b'\r', b'\n', ..] => return Ok(Step::Item(2, Frame::Pong)),
        _ => {}
    }
    let limits = &config.limits;
    // Refuse what cannot be SIP as soon as its first line is seen, rather than buffer it up
    // to the limit; whether the rest of the header section is there yet must not matter
    // (it did: found by the `sip_frame` fuzz target).
    let not_sip = || {
        buf.iter().position(|&b| b == b'\n').is_some_and(|lf| {
            let first = buf.get(..lf).unwrap_or_default();
            let first = first.strip_suffix(b"\r").unwrap_or(first);
            first.iter().any(|&b| b < 0x20 && b != b'\t' || b == 0x7f)
        })
    };
    let head_end = find_head_end_from(buf, limits, scan);
    if not_sip() {
        return Err(FrameError::NotSip);
    }
    let head_len = match head_end {
        Ok(Some(n)) => n,
        Ok(None) => return Ok(Step::NeedMore),
        Err(ParseError::TooLarge { limit, len, max }) => return Err(too_large(limit, len, max)),
        Err(ParseError::BareLineEnd { line }) => return Err(FrameError::BareLineEnd { line }),
        Err(_) => return Err(FrameError::NotSip),
    };
    let head_bytes = buf.get(..head_len).unwrap_or_default();
    let (body_len, parsed) = match parse_head_section(buf, head_len, limits) {
        Ok(head) => match head.content_length {
            Some(n) => (n, Ok(head)),
            None => {
                return Err(FrameError::MissingContentLength {
                    answer: salvage(head_bytes),
                })
            }
        },
        Err(e @ (ParseError::BadContentLength | ParseError::ConflictingContentLength)) => {
            return Err(content_length_error(e, head_bytes))
        }
        Err(e) => match lenient_content_length(head_bytes) {
            Ok(Some(n)) => (n, Err(e)),
            Ok(None) => {
                return Err(FrameError::MissingContentLength {
                    answer: salvage(head_bytes),
                })
            }
            Err(cl) => return Err(content_length_error(cl, head_bytes)),
        },
    };
    let total = head_len.saturating_add(body_len);
    if total > limits.max_message_len {
        return Err(too_large(
            Limit::MessageLength,
            total,
            limits.max_message_len,
        ));
    }
    if buf.len() < total {
        return Ok(Step::NeedTotal(total));
    }
    let frame = match parsed {
        Ok(head) => Frame::Message(head.into_message(buf, body_len)),
        Err(error) => Frame::Invalid {
            error,
            answer: salvage(head_bytes),
        },
    };
    Ok(Step::Item(total, frame))
}

/// A buffer plus [`try_parse`]: feed octets with [`Framer::push`], take items with
/// [`Framer::next_frame`] until it returns `Ok(None)`.
#[derive(Debug, Default)]
pub struct Framer {
    config: FrameConfig,
    buf: Vec<u8>,
    /// Octets of `buf` already framed; removed in bulk on the next push so that many
    /// messages in one read cost no repeated moves.
    consumed: usize,
    /// When a header section has been read, the total length of the message being waited
    /// for (counted from `consumed`): no rescan until that many octets are buffered.
    waiting_for: Option<usize>,
    /// How far the header section of the next message has been scanned.
    scan: HeadScan,
}

impl Framer {
    /// A framer with this configuration.
    pub fn new(config: FrameConfig) -> Framer {
        Framer {
            config,
            buf: Vec::new(),
            consumed: 0,
            waiting_for: None,
            scan: HeadScan::default(),
        }
    }

    /// Appends received octets.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.consumed > 0 {
            self.buf.drain(..self.consumed.min(self.buf.len()));
            self.consumed = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Octets buffered and not yet framed.
    pub fn buffered(&self) -> usize {
        self.buf.len().saturating_sub(self.consumed)
    }

    /// The next item, `Ok(None)` when more octets are needed. After an error the stream
    /// must be closed; the framer's state is then unspecified.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        let pending = self.buf.get(self.consumed..).unwrap_or_default();
        if self.waiting_for.is_some_and(|need| pending.len() < need) {
            return Ok(None);
        }
        self.waiting_for = None;
        match step(pending, &self.config, &mut self.scan)? {
            Step::Item(used, frame) => {
                self.consumed = (self.consumed + used).min(self.buf.len());
                self.scan = HeadScan::default();
                Ok(Some(frame))
            }
            Step::NeedTotal(total) => {
                self.waiting_for = Some(total);
                Ok(None)
            }
            Step::NeedMore => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REQ: &[u8] = b"MESSAGE sip:a@b SIP/2.0\r\nVia: SIP/2.0/TLS h;branch=z9hG4bK1\r\nFrom: <sip:c@d>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: x\r\nCSeq: 1 MESSAGE\r\nContent-Length: 3\r\n\r\nabc";
    const RESP: &[u8] = b"SIP/2.0 200 OK\r\nVia: SIP/2.0/TLS h;branch=z9hG4bK1\r\nl: 0\r\n\r\n";

    fn all_at_once(stream: &[u8], config: FrameConfig) -> Result<Vec<Frame>, FrameError> {
        let mut f = Framer::new(config);
        f.push(stream);
        let mut out = Vec::new();
        while let Some(frame) = f.next_frame()? {
            out.push(frame);
        }
        Ok(out)
    }

    fn byte_by_byte(stream: &[u8], config: FrameConfig) -> Result<Vec<Frame>, FrameError> {
        let mut f = Framer::new(config);
        let mut out = Vec::new();
        for b in stream {
            f.push(std::slice::from_ref(b));
            while let Some(frame) = f.next_frame()? {
                out.push(frame);
            }
        }
        Ok(out)
    }

    /// Found by the `sip_frame` fuzz target: a start line with control characters closed
    /// the stream when read line by line, but was answered 400 (and the stream went on)
    /// when its header section arrived in one read.
    #[test]
    fn control_characters_in_the_start_line_close_however_split() {
        let mut stream = b"INVITE sip:a@b SIP/\x00\x002.0\r\n".to_vec();
        stream.extend_from_slice(
            REQ.get(REQ.iter().position(|&b| b == b'\n').unwrap() + 1..)
                .unwrap(),
        );
        let config = FrameConfig::default();
        assert_eq!(all_at_once(&stream, config), Err(FrameError::NotSip));
        assert_eq!(byte_by_byte(&stream, config), Err(FrameError::NotSip));
        // A bare LF further on does not change that.
        let bare = b"OPTIONS sip:a@b SIP/2.0\x01\r\nVia: x\nl: 0\r\n\r\n";
        assert_eq!(all_at_once(bare, config), Err(FrameError::NotSip));
        assert_eq!(byte_by_byte(bare, config), Err(FrameError::NotSip));
    }

    /// Found by the `sip_frame` fuzz target: a line of exactly `max_line_len` octets was
    /// refused as too long when a read ended between its CR and its LF, and accepted when
    /// it arrived whole.
    #[test]
    fn a_line_of_the_maximum_length_split_after_its_cr() {
        let config = FrameConfig {
            limits: Limits {
                max_line_len: 40,
                ..Limits::default()
            },
            keepalive: KeepaliveRole::Server,
        };
        let via = format!("Via: SIP/2.0/TLS h;branch=z9hG4bK{}", "x".repeat(7));
        assert_eq!(via.len(), 40);
        let text = String::from_utf8(REQ.to_vec()).unwrap();
        let stream = text.replace("Via: SIP/2.0/TLS h;branch=z9hG4bK1", &via);
        let whole = all_at_once(stream.as_bytes(), config).unwrap();
        assert!(matches!(whole.as_slice(), [Frame::Message(_)]));
        assert_eq!(byte_by_byte(stream.as_bytes(), config), Ok(whole));
        // One octet more is too long, however it arrives.
        let long = stream.replace(&via, &format!("{via}x"));
        let too_long = Err(FrameError::TooLarge {
            limit: Limit::LineLength,
            len: 41,
            max: 40,
        });
        assert_eq!(all_at_once(long.as_bytes(), config), too_long);
        assert_eq!(byte_by_byte(long.as_bytes(), config), too_long);
    }

    #[test]
    fn frames_messages_and_keepalives() {
        let mut stream = Vec::new();
        stream.extend_from_slice(b"\r\n\r\n");
        stream.extend_from_slice(REQ);
        stream.extend_from_slice(b"\r\n");
        stream.extend_from_slice(RESP);
        stream.extend_from_slice(b"\r\n\r\n");
        let frames = all_at_once(&stream, FrameConfig::default()).unwrap();
        assert_eq!(frames.len(), 5);
        assert_eq!(frames[0], Frame::Ping);
        assert!(matches!(&frames[1], Frame::Message(m) if m.body() == b"abc"));
        assert_eq!(frames[2], Frame::Pong);
        assert!(matches!(&frames[3], Frame::Message(m) if m.status() == Some(200)));
        assert_eq!(frames[4], Frame::Ping);
        assert_eq!(
            byte_by_byte(&stream, FrameConfig::default()).unwrap(),
            frames
        );
    }

    #[test]
    fn split_at_every_boundary_gives_the_same_frames() {
        let mut stream = Vec::new();
        stream.extend_from_slice(REQ);
        stream.extend_from_slice(b"\r\n\r\n");
        stream.extend_from_slice("SIP/2.0 200 Très bien\r\nl: 2\r\n\r\né".as_bytes());
        let whole = all_at_once(&stream, FrameConfig::default()).unwrap();
        assert_eq!(whole.len(), 3);
        for cut in 0..=stream.len() {
            let mut f = Framer::new(FrameConfig::default());
            let mut got = Vec::new();
            for part in [&stream[..cut], &stream[cut..]] {
                f.push(part);
                while let Some(frame) = f.next_frame().unwrap() {
                    got.push(frame);
                }
            }
            assert_eq!(got, whole, "cut at {cut}");
            assert_eq!(f.buffered(), 0);
        }
    }

    #[test]
    fn client_role_reports_pong_at_once() {
        let c = FrameConfig {
            keepalive: KeepaliveRole::Client,
            ..FrameConfig::default()
        };
        assert_eq!(try_parse(b"\r\n", &c).unwrap(), (2, Some(Frame::Pong)));
        assert_eq!(
            try_parse(b"\r\n", &FrameConfig::default()).unwrap(),
            (0, None)
        );
        assert_eq!(try_parse(b"\r\n\r\n", &c).unwrap(), (4, Some(Frame::Ping)));
    }

    #[test]
    fn incomplete_is_not_an_error() {
        for cut in 0..REQ.len() {
            assert_eq!(
                try_parse(&REQ[..cut], &FrameConfig::default()).unwrap(),
                (0, None),
                "{cut}"
            );
        }
    }

    #[test]
    fn unframeable_streams_are_errors_with_answers() {
        let missing = b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/TLS h\r\nCall-ID: q\r\n\r\n";
        let e = try_parse(missing, &FrameConfig::default()).unwrap_err();
        assert!(matches!(e, FrameError::MissingContentLength { .. }));
        assert_eq!(e.answer().unwrap().call_id.as_deref(), Some("q"));
        let neg = b"OPTIONS sip:a@b SIP/2.0\r\nCall-ID: q\r\nl: -5\r\n\r\n";
        assert!(matches!(
            try_parse(neg, &FrameConfig::default()),
            Err(FrameError::BadContentLength { answer: Some(_) })
        ));
        let resp = b"SIP/2.0 200 OK\r\nl: 1\r\nl: 2\r\n\r\n";
        assert_eq!(
            try_parse(resp, &FrameConfig::default()),
            Err(FrameError::ConflictingContentLength { answer: None })
        );
        assert_eq!(
            try_parse(b"\x16\x03\x01\x02\x00\x01\r\n", &FrameConfig::default()),
            Err(FrameError::NotSip)
        );
        assert_eq!(
            try_parse(
                b"OPTIONS sip:a@b SIP/2.0\nVia: x\n",
                &FrameConfig::default()
            ),
            Err(FrameError::BareLineEnd { line: 1 })
        );
    }

    #[test]
    fn limits_are_enforced_while_buffering() {
        let c = FrameConfig {
            limits: Limits {
                max_message_len: 64,
                max_headers: 4,
                max_line_len: 32,
            },
            ..FrameConfig::default()
        };
        let long_line = [b'A'; 40];
        assert!(matches!(
            try_parse(&long_line, &c),
            Err(FrameError::TooLarge {
                limit: Limit::LineLength,
                len: 40,
                max: 32
            })
        ));
        let big_body = b"OPTIONS sip:a@b SIP/2.0\r\nl: 100\r\n\r\n";
        assert!(matches!(
            try_parse(big_body, &c),
            Err(FrameError::TooLarge {
                limit: Limit::MessageLength,
                ..
            })
        ));
        let many: Vec<u8> = [&b"OPTIONS sip:a@b SIP/2.0\r\n"[..], &b"a: 1\r\n".repeat(20)].concat();
        assert!(matches!(
            try_parse(&many, &c),
            Err(FrameError::TooLarge {
                limit: Limit::MessageLength,
                ..
            })
        ));
    }

    #[test]
    fn syntax_errors_are_framed_and_answerable() {
        let bad = b"OPTIONS  sip:a@b SIP/2.0\r\nVia: SIP/2.0/TLS h;branch=z9hG4bKq\r\nCall-ID: q\r\nl: 2\r\n\r\nxyNEXT";
        let (used, frame) = try_parse(bad, &FrameConfig::default()).unwrap();
        assert_eq!(used, bad.len() - 4);
        match frame {
            Some(Frame::Invalid {
                error: ParseError::BadStartLine { .. },
                answer: Some(a),
            }) => assert_eq!(a.top_via(), Some("SIP/2.0/TLS h;branch=z9hG4bKq")),
            other => panic!("{other:?}"),
        }
        let bad_header = b"OPTIONS sip:a@b SIP/2.0\r\nno colon here\r\nl: 0\r\n\r\n";
        assert!(matches!(
            try_parse(bad_header, &FrameConfig::default()).unwrap(),
            (n, Some(Frame::Invalid { error: ParseError::BadHeaderLine { line: 2 }, .. })) if n == bad_header.len()
        ));
    }
}
