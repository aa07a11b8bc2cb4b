//! What the fuzz targets share: a deterministic pseudo-random source derived from the input,
//! so that the same input always splits into the same chunks (a crash reproduces), and the
//! splitting of an input into reads the way a socket delivers them.
//!
//! The input itself is not consumed for these choices: seeds stay plain protocol bytes (an
//! RFC 4475 message, a stream capture), and every mutation of them also changes the split.

#![forbid(unsafe_code)]

/// xorshift64*: small, fast, good enough to pick chunk sizes and event orders.
pub struct Rng(u64);

impl Rng {
    /// A generator seeded from every byte of `data` (FNV-1a).
    pub fn from_input(data: &[u8]) -> Rng {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for &b in data {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        Rng(h | 1)
    }

    /// The next 64 random bits.
    pub fn bits(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.bits() % n
    }

    /// True with probability 1/`n`.
    pub fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }
}

/// Splits `data` into the reads a socket might deliver: all at once, byte by byte, or runs of
/// random length with a preferred scale (small runs find split-dependent bugs, large ones are
/// what real peers send).
pub fn chunks<'a>(data: &'a [u8], rng: &mut Rng) -> Vec<&'a [u8]> {
    let scale: u64 = match rng.below(5) {
        0 => return vec![data],
        1 => 1,
        2 => 8,
        3 => 64,
        _ => 1024,
    };
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let len = usize::try_from(1 + rng.below(scale))
            .unwrap_or(1)
            .min(rest.len());
        let (head, tail) = rest.split_at(len);
        out.push(head);
        rest = tail;
    }
    out
}

/// Checks that what xsgw wrote on an XMPP stream is well-formed for its peer: each stream
/// xsgw opened (from one `<?xml` to the next: a restart after STARTTLS or SASL) read by
/// xsgw's own stream parser gives no error. Peer-supplied text that was not escaped, or a
/// stanza cut in half, shows here.
pub fn check_xmpp_output(out: &[u8]) {
    use xsgw::xmpp::stream::{StreamLimits, StreamParser};
    let mut starts: Vec<usize> = out
        .windows(5)
        .enumerate()
        .filter(|(_, w)| *w == b"<?xml")
        .map(|(i, _)| i)
        .collect();
    starts.push(out.len());
    if starts.first() != Some(&0) {
        starts.insert(0, 0);
    }
    for pair in starts.windows(2) {
        let segment = out.get(pair[0]..pair[1]).unwrap_or_default();
        if segment.is_empty() {
            continue;
        }
        let mut parser = StreamParser::new(StreamLimits::default());
        if let Err(e) = parser.feed(segment) {
            panic!("xsgw wrote {:?}: {e}", String::from_utf8_lossy(segment));
        }
        loop {
            match parser.next_event() {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => panic!("xsgw wrote {:?}: {e}", String::from_utf8_lossy(segment)),
            }
        }
    }
}

/// What the gateway does with a SIP message it framed, with the invariants that must hold:
/// - written in canonical form it parses again to the same start line, fields and body;
/// - typed ([`xsgw::sip::Incoming::from_message`]); a request is checked against the
///   gateway's policy ([`xsgw::sip::link::LinkConfig::gateway_policy`]);
/// - every answer xsgw would send (the refusal, a 200, or the 400 for what could not be
///   typed) is itself a SIP response that parses and types.
pub fn check_sip_message(m: &xsgw::sip::Message) {
    use xsgw::sip::link::LinkConfig;
    use xsgw::sip::validate::validate_request;
    use xsgw::sip::{name, parse_message_with, response_to, response_to_context, Incoming};
    use xsgw::sip::{Limits, StatusCode};

    let mut canonical = Vec::new();
    m.write_canonical(&mut canonical);
    let roomy = Limits {
        max_message_len: usize::MAX,
        max_headers: usize::MAX,
        max_line_len: usize::MAX,
    };
    let again = parse_message_with(&canonical, &roomy).unwrap_or_else(|e| {
        panic!(
            "canonical form {:?} does not parse: {e}",
            String::from_utf8_lossy(&canonical)
        )
    });
    let fields = |m: &xsgw::sip::Message| -> Vec<(String, Vec<u8>)> {
        m.fields()
            .filter(|f| !f.is(name::CONTENT_LENGTH))
            .map(|f| {
                (
                    name::canonical(f.name()).to_ascii_lowercase(),
                    f.value().into_owned(),
                )
            })
            .collect()
    };
    assert_eq!(again.start_line(), m.start_line());
    assert_eq!(fields(&again), fields(m));
    assert_eq!(again.body(), m.body());

    match Incoming::from_message(m.clone()) {
        Ok(Incoming::Request(req)) => {
            let answer = match validate_request(&req, &LinkConfig::gateway_policy()) {
                Ok(()) => response_to(&req, StatusCode::OK, Some("t1")),
                Err(refusal) => refusal.response(&req, Some("t1")),
            };
            if let Ok(answer) = answer {
                check_our_response(&answer.to_bytes(), true);
            }
        }
        Ok(Incoming::Response(_)) => {}
        Err(e) => {
            if let Some(ctx) = e.answer.as_ref() {
                if let Ok(answer) = response_to_context(ctx, e.status(), None, Some("t1")) {
                    check_our_response(&answer.to_bytes(), false);
                }
            }
        }
    }
}

/// A response xsgw would send parses as a response; when it answers a request that typed
/// (`typed`), it types too (a 400 built from salvaged fields may lack what the request
/// lacked, RFC 4475 `insuf`).
pub fn check_our_response(bytes: &[u8], typed: bool) {
    use xsgw::sip::{parse_message, Incoming};
    let show = || String::from_utf8_lossy(bytes).into_owned();
    let m = parse_message(bytes).unwrap_or_else(|e| panic!("xsgw would send {:?}: {e}", show()));
    assert!(m.status().is_some(), "xsgw would send {:?}", show());
    if typed {
        match Incoming::from_message(m) {
            Ok(Incoming::Response(_)) => {}
            other => panic!("xsgw would send {:?}: {other:?}", show()),
        }
    }
}
