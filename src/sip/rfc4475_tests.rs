//! RFC 4475 (SIP torture test messages) as a test of the whole SIP message layer, and a
//! seeded mutation test that the parsers never panic.
//!
//! The 49 messages are read from `../shared/conformance/rfc4475/` beside the repository
//! (`$XSGW_SHARED_DIR/conformance/rfc4475/` when that variable is set); they are not copied
//! into the project. Each file gets two expected outcomes: as a datagram
//! ([`parse_message`] semantics) and alone on a TLS stream ([`Framer`]); they differ only
//! where the transport note of INDEX.md says they must (Content-Length framing).
//!
//! Decisions where RFC 4475 leaves a choice (the gateway is a UAS/B2BUA, not a proxy):
//! - `baddate`: Date is never interpreted, so the request is accepted.
//! - `regbadct`, `badaspec`, `baddn`: Contact/To/From are interpreted, so they are refused
//!   with 400 (strict parsing of what the gateway reads).
//! - `escruri`: refused with 400 (headers are not allowed in a Request-URI).
//! - `scalar02`: 400 for the CSeq (the overlarge Expires alone would saturate).
//! - REGISTER (`escnull`, `dblreq`, `unksm2`, `regaut01`, `cparam0x`, `regescrt`): the
//!   messages parse and type; the gateway is no registrar and answers 405.
//! - `intmeth`, `esc02`: valid unknown methods, answered 501.
//! - `mpart01`: valid; the gateway takes single-part bodies only and answers 415.
//! - `inv2543`: accepted as a datagram; on a stream there is no Content-Length, so the
//!   stream cannot be framed: 400, then close.
//! - `clerr`: as a datagram 400; on a stream the framer waits for the 9999 octets (the idle
//!   timer of the shell ends it).
//! - `ncl`, `mcl01`: on a stream the body length is unknown: 400, then close.
//! - `bcast`: a response; the gateway never routes responses by Via, so it cannot forward
//!   to the broadcast address.
//! - `badbranch`: accepted; the bare magic cookie is not taken as an RFC 3261 branch.

use std::path::PathBuf;

use super::build::{response_to_context, MessageBuilder};
use super::frame::{Frame, FrameConfig, FrameError, Framer, KeepaliveRole};
use super::header::NameAddr;
use super::message::{parse_message, AnswerContext, Message};
use super::name;
use super::request::{Incoming, Method, Request};
use super::status::StatusCode;
use super::uri::Scheme;
use super::validate::{validate_request, Policy};

fn dir() -> PathBuf {
    let base = match std::env::var_os("XSGW_SHARED_DIR") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared")),
    };
    base.join("conformance/rfc4475")
}

pub(super) fn load(file: &str) -> Vec<u8> {
    let path = dir().join(file);
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// What the gateway does with one message.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    /// A request that passes the policy.
    Accept,
    /// A request answered with this status.
    Answer(u16),
    /// A response that is taken.
    TakeResponse,
    /// A response that is dropped.
    DropResponse,
    /// Stream only: the stream is closed; `answered` when a 400 goes first.
    Close { answered: bool },
    /// Stream only: waiting for more octets.
    Wait,
    /// Stream only: several items.
    Items(Vec<Outcome>),
    /// Stream only: a lone CRLF.
    Pong,
}

use Outcome::*;

/// (file, INDEX section, as a datagram, alone on a stream; `None` = same as datagram)
const CASES: &[(&str, &str, Outcome, Option<Outcome>)] = &[
    // 3.1.1 valid
    ("wsinv.dat", "3.1.1.1", Accept, None),
    ("intmeth.dat", "3.1.1.2", Answer(501), None),
    ("esc01.dat", "3.1.1.3", Accept, None),
    ("escnull.dat", "3.1.1.4", Answer(405), None),
    ("esc02.dat", "3.1.1.5", Answer(501), None),
    ("lwsdisp.dat", "3.1.1.6", Accept, None),
    ("longreq.dat", "3.1.1.7", Accept, None),
    ("dblreq.dat", "3.1.1.8", Answer(405), None),
    ("semiuri.dat", "3.1.1.9", Accept, None),
    ("transports.dat", "3.1.1.10", Accept, None),
    ("mpart01.dat", "3.1.1.11", Answer(415), None),
    ("unreason.dat", "3.1.1.12", TakeResponse, None),
    ("noreason.dat", "3.1.1.13", TakeResponse, None),
    // 3.1.2 invalid
    ("badinv01.dat", "3.1.2.1", Answer(400), None),
    ("clerr.dat", "3.1.2.2", Answer(400), Some(Wait)),
    (
        "ncl.dat",
        "3.1.2.3",
        Answer(400),
        Some(Close { answered: true }),
    ),
    ("scalar02.dat", "3.1.2.4", Answer(400), None),
    ("scalarlg.dat", "3.1.2.5", DropResponse, None),
    ("quotbal.dat", "3.1.2.6", Answer(400), None),
    ("ltgtruri.dat", "3.1.2.7", Answer(400), None),
    ("lwsruri.dat", "3.1.2.8", Answer(400), None),
    ("lwsstart.dat", "3.1.2.9", Answer(400), None),
    ("trws.dat", "3.1.2.10", Answer(400), None),
    ("escruri.dat", "3.1.2.11", Answer(400), None),
    ("baddate.dat", "3.1.2.12", Accept, None),
    ("regbadct.dat", "3.1.2.13", Answer(400), None),
    ("badaspec.dat", "3.1.2.14", Answer(400), None),
    ("baddn.dat", "3.1.2.15", Answer(400), None),
    ("badvers.dat", "3.1.2.16", Answer(505), None),
    ("mismatch01.dat", "3.1.2.17", Answer(400), None),
    ("mismatch02.dat", "3.1.2.18", Answer(400), None),
    ("bigcode.dat", "3.1.2.19", DropResponse, None),
    // 3.2 transaction layer
    ("badbranch.dat", "3.2.1", Accept, None),
    // 3.3 application layer
    ("insuf.dat", "3.3.1", Answer(400), None),
    ("unkscm.dat", "3.3.2", Answer(416), None),
    ("novelsc.dat", "3.3.3", Answer(416), None),
    ("unksm2.dat", "3.3.4", Answer(405), None),
    ("bext01.dat", "3.3.5", Answer(420), None),
    ("invut.dat", "3.3.6", Answer(415), None),
    ("regaut01.dat", "3.3.7", Answer(405), None),
    ("multi01.dat", "3.3.8", Answer(400), None),
    (
        "mcl01.dat",
        "3.3.9",
        Answer(400),
        Some(Close { answered: true }),
    ),
    ("bcast.dat", "3.3.10", TakeResponse, None),
    ("zeromf.dat", "3.3.11", Answer(483), None),
    ("cparam01.dat", "3.3.12", Answer(405), None),
    ("cparam02.dat", "3.3.13", Answer(405), None),
    ("regescrt.dat", "3.3.14", Answer(405), None),
    ("sdp01.dat", "3.3.15", Answer(406), None),
    // 3.4 backward compatibility
    (
        "inv2543.dat",
        "3.4.1",
        Accept,
        Some(Close { answered: true }),
    ),
];

const VALID: &[&str] = &[
    "wsinv.dat",
    "intmeth.dat",
    "esc01.dat",
    "escnull.dat",
    "esc02.dat",
    "lwsdisp.dat",
    "longreq.dat",
    "dblreq.dat",
    "semiuri.dat",
    "transports.dat",
    "mpart01.dat",
    "unreason.dat",
    "noreason.dat",
];

/// Decides about one parsed message, and checks that every answer we would send parses.
fn decide(m: Message) -> Outcome {
    match Incoming::from_message(m) {
        Ok(Incoming::Request(req)) => match validate_request(&req, &Policy::default()) {
            Ok(()) => Accept,
            Err(refusal) => {
                let bytes = refusal.response(&req, Some("gw")).unwrap().to_bytes();
                let resp = parse_message(&bytes).unwrap();
                assert_eq!(resp.status(), Some(refusal.status.as_u16()));
                Answer(refusal.status.as_u16())
            }
        },
        Ok(Incoming::Response(_)) => TakeResponse,
        Err(e) => match e.answer {
            Some(ctx) => answer_400(&ctx),
            None => DropResponse,
        },
    }
}

fn answer_400(ctx: &AnswerContext) -> Outcome {
    let bytes = response_to_context(ctx, StatusCode::BAD_REQUEST, None, Some("gw"))
        .unwrap()
        .to_bytes();
    let resp = parse_message(&bytes).unwrap();
    assert_eq!(resp.status(), Some(400));
    assert_eq!(
        resp.first(name::CALL_ID)
            .and_then(|f| f.value_str())
            .map(|v| v.into_owned()),
        ctx.call_id
    );
    Answer(400)
}

fn datagram_outcome(bytes: &[u8]) -> Outcome {
    match parse_message(bytes) {
        Ok(m) => decide(m),
        Err(_) => match AnswerContext::salvage(bytes) {
            Some(ctx) => answer_400(&ctx),
            None => DropResponse,
        },
    }
}

fn frame_outcome(frame: Frame) -> Outcome {
    match frame {
        Frame::Message(m) => decide(m),
        Frame::Invalid {
            answer: Some(ctx), ..
        } => answer_400(&ctx),
        Frame::Invalid { answer: None, .. } => DropResponse,
        Frame::Ping => Items(vec![]),
        Frame::Pong => Pong,
    }
}

/// Runs a whole stream through a framer.
fn run_stream(bytes: &[u8], role: KeepaliveRole) -> (Vec<Frame>, usize, Option<FrameError>) {
    let mut f = Framer::new(FrameConfig {
        keepalive: role,
        ..FrameConfig::default()
    });
    f.push(bytes);
    let mut frames = Vec::new();
    loop {
        match f.next_frame() {
            Ok(Some(fr)) => frames.push(fr),
            Ok(None) => return (frames, f.buffered(), None),
            Err(e) => return (frames, f.buffered(), Some(e)),
        }
    }
}

fn stream_outcome(bytes: &[u8]) -> Outcome {
    let (frames, left, err) = run_stream(bytes, KeepaliveRole::Server);
    let mut items: Vec<Outcome> = frames.into_iter().map(frame_outcome).collect();
    if let Some(e) = err {
        if let Some(ctx) = e.answer() {
            answer_400(ctx);
        }
        items.push(Close {
            answered: e.answer().is_some(),
        });
    } else if left > 0 {
        items.push(Wait);
    }
    if items.len() == 1 {
        items.pop().unwrap_or(Wait)
    } else {
        Items(items)
    }
}

#[test]
fn index_and_directory_list_the_same_49_files() {
    let index = String::from_utf8(load("INDEX.md")).unwrap();
    let mut in_index: Vec<&str> = index
        .split(|c: char| c.is_whitespace() || c == '|')
        .filter(|w| w.ends_with(".dat"))
        .collect();
    in_index.sort_unstable();
    let mut in_table: Vec<&str> = CASES.iter().map(|c| c.0).collect();
    in_table.sort_unstable();
    assert_eq!(in_index, in_table);
    let mut on_disk: Vec<String> = std::fs::read_dir(dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".dat"))
        .collect();
    on_disk.sort_unstable();
    assert_eq!(on_disk, in_table);
    assert_eq!(in_table.len(), 49);
    for (file, section, ..) in CASES {
        assert!(
            index.contains(&format!("| {file} | {section} |")),
            "{file} {section}"
        );
    }
}

#[test]
fn every_message_gets_the_expected_outcome() {
    let mut failures = Vec::new();
    for (file, section, datagram, stream) in CASES {
        let bytes = load(file);
        let got = datagram_outcome(&bytes);
        if &got != datagram {
            failures.push(format!(
                "{file} ({section}) datagram: {got:?}, want {datagram:?}"
            ));
        }
        let want_stream = match (file, stream) {
            // Alone on a stream: the REGISTER, the stray CRLF, the INVITE, then the octets
            // beyond the INVITE's Content-Length ("C\r\n\r\n"), which cannot be framed.
            (&"dblreq.dat", _) => Items(vec![Answer(405), Pong, Accept, Close { answered: false }]),
            (_, Some(s)) => s.clone(),
            (_, None) => datagram.clone(),
        };
        let got = stream_outcome(&bytes);
        if got != want_stream {
            failures.push(format!(
                "{file} ({section}) stream: {got:?}, want {want_stream:?}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Field-by-field equality of two parses of the same message: names (canonical), values
/// (unfolded) and order, Content-Length aside.
fn same_fields(a: &Message, b: &Message) {
    let fields = |m: &Message| -> Vec<(String, Vec<u8>)> {
        m.fields()
            .filter(|f| !f.is(name::CONTENT_LENGTH))
            .map(|f| (name::canonical(f.name()).to_owned(), f.value().into_owned()))
            .collect()
    };
    assert_eq!(fields(a), fields(b));
    assert_eq!(a.start_line(), b.start_line());
    assert_eq!(a.body(), b.body());
}

#[test]
fn valid_messages_parse_losslessly_and_round_trip() {
    for file in VALID {
        let bytes = load(file);
        let m = parse_message(&bytes).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(bytes.starts_with(m.as_bytes()), "{file}: not lossless");
        let mut canonical = Vec::new();
        m.write_canonical(&mut canonical);
        let again = parse_message(&canonical).unwrap_or_else(|e| panic!("{file} again: {e}"));
        same_fields(&m, &again);
        // The canonical form frames on a stream, alone and in one piece.
        let (frames, left, err) = run_stream(&canonical, KeepaliveRole::Server);
        assert!(err.is_none() && left == 0 && frames.len() == 1, "{file}");
        // What the gateway keeps is the same from both parses.
        match (Incoming::from_message(m), Incoming::from_message(again)) {
            (Ok(Incoming::Request(a)), Ok(Incoming::Request(b))) => {
                assert_eq!(
                    (&a.method, &a.uri, &a.via, &a.from, &a.to, &a.call_id, &a.cseq),
                    (&b.method, &b.uri, &b.via, &b.from, &b.to, &b.call_id, &b.cseq),
                    "{file}"
                );
                assert_eq!(a.contact, b.contact);
                assert_eq!(a.route, b.route);
                // Typed values written back in their own canonical forms parse the same.
                let mut builder = MessageBuilder::request(&a.method, &a.uri);
                for v in &a.via {
                    builder.header_display("Via", v).unwrap();
                }
                builder
                    .header_display("From", &a.from)
                    .unwrap()
                    .header_display("To", &a.to)
                    .unwrap()
                    .header("Call-ID", &a.call_id)
                    .unwrap()
                    .header_display("CSeq", &a.cseq)
                    .unwrap();
                let rebuilt = builder.to_bytes();
                let c = Request::from_message(parse_message(&rebuilt).unwrap())
                    .unwrap_or_else(|e| panic!("{file} rebuilt: {e}"));
                // A display name holding NUL (`intmeth`) cannot be written by the builder,
                // which drops it rather than emit it.
                let writable = |n: &NameAddr| {
                    let mut n = n.clone();
                    if n.display_name.as_deref().is_some_and(|d| d.contains('\0')) {
                        n.display_name = None;
                    }
                    n
                };
                assert_eq!(
                    (&c.via, &c.from, &c.to, &c.cseq),
                    (&a.via, &writable(&a.from), &writable(&a.to), &a.cseq),
                    "{file}"
                );
            }
            (Ok(Incoming::Response(a)), Ok(Incoming::Response(b))) => {
                assert_eq!(
                    (a.status, &a.reason, &a.via, &a.cseq),
                    (b.status, &b.reason, &b.via, &b.cseq)
                );
            }
            other => panic!("{file}: {other:?}"),
        }
    }
}

fn request(file: &str) -> Request {
    Request::from_message(parse_message(&load(file)).unwrap()).unwrap()
}

#[test]
fn what_the_valid_messages_say() {
    let r = request("wsinv.dat");
    assert_eq!(r.method, Method::Invite);
    assert_eq!(r.to.tag(), Some("1918181833n"));
    assert_eq!(r.from.display_name.as_deref(), Some("J Rosenberg \\\""));
    assert_eq!(r.from.tag(), Some("98asjd8"));
    assert_eq!(r.max_forwards, Some(68));
    assert_eq!(r.cseq.seq, 9);
    assert_eq!(r.via.len(), 3);
    assert_eq!(r.branch(), Some("390skdjuw"));
    assert_eq!(r.via[1].branch(), Some("z9hG4bK9ikj8"));
    assert_eq!(r.via[2].host, "192.168.255.111");
    assert_eq!(r.route[0].uri.param("unknownwith"), Some("value"));
    assert_eq!(r.body().len(), 150);
    assert_eq!(
        r.header("NewFangledHeader").as_deref(),
        Some("newfangled value continued newfangled value")
    );
    assert_eq!(r.header("s").as_deref(), Some(""));
    match &r.contact[0] {
        super::header::Contact::Addr(a) => {
            assert_eq!(a.display_name.as_deref(), Some("Quoted string \"\""));
            assert_eq!(a.params.get("newparam"), Some("newvalue"));
            assert_eq!(a.params.get("q"), Some("0.33"));
        }
        other => panic!("{other:?}"),
    }

    let r = request("intmeth.dat");
    assert_eq!(
        r.method.as_str(),
        "!interesting-Method0123456789_*+`.%indeed'~"
    );
    assert_eq!(
        r.uri.password(),
        Some("&it+has=1,weird!*pas$wo~d_too.(doesn't-it)")
    );
    assert_eq!(
        r.to.display_name.as_deref(),
        Some("BEL:\x07 NUL:\0 DEL:\x7f")
    );
    assert_eq!(r.call_id, "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{");

    let r = request("esc01.dat");
    assert_eq!(&*r.uri.user_decoded().unwrap(), b"sips:user@example.com");
    assert_eq!(&*r.to.uri.user_decoded().unwrap(), b"user");
    let r = request("escnull.dat");
    assert_eq!(&*r.to.uri.user_decoded().unwrap(), b"null-\0-null");
    assert_eq!(r.contact.len(), 2);
    let r = request("esc02.dat");
    assert_eq!(r.method, Method::Other("RE%47IST%45R".into()));
    assert_eq!(r.contact.len(), 2, "C%6Fntact is not Contact");
    assert_eq!(r.from.display_name.as_deref(), Some("%Z%45"));
    assert_eq!(
        request("lwsdisp.dat").from.display_name.as_deref(),
        Some("caller")
    );
    let r = request("longreq.dat");
    assert_eq!(r.via.len(), 34);
    assert!(r.to.display_name.as_ref().unwrap().len() > 80);
    assert_eq!(
        request("semiuri.dat").uri.user(),
        Some("user;par=u%40example.net")
    );
    let r = request("transports.dat");
    let t: Vec<&str> = r.via.iter().map(|v| v.transport.as_str()).collect();
    assert_eq!(t, ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]);
    let r = request("mpart01.dat");
    assert!(r.content_type.as_ref().unwrap().is("multipart", "mixed"));
    assert_eq!(r.body().len(), 553);

    let m = parse_message(&load("unreason.dat")).unwrap();
    let reason = std::str::from_utf8(m.reason().unwrap()).unwrap();
    assert!(reason.starts_with("= 2**3 * 5**2 но"));
    assert_eq!(
        parse_message(&load("noreason.dat")).unwrap().reason(),
        Some(&b""[..])
    );
}

#[test]
fn what_the_application_cases_say() {
    assert!(!request("badbranch.dat")
        .top_via()
        .unwrap()
        .has_rfc3261_branch());
    let r = request("unksm2.dat");
    assert_eq!(r.to.uri.scheme_str(), "isbn");
    assert_eq!(r.from.uri.scheme_str(), "http");
    let r = request("bext01.dat");
    let refusal = validate_request(&r, &Policy::default()).unwrap_err();
    assert_eq!(
        refusal.headers,
        vec![(
            "Unsupported",
            "nothingSupportsThis, nothingSupportsThisEither".to_owned()
        )]
    );
    let proxy = Policy {
        check_proxy_require: true,
        ..Policy::default()
    };
    let refusal = validate_request(&r, &proxy).unwrap_err();
    assert!(refusal.headers[0]
        .1
        .ends_with("noProxiesSupportThis, norDoAnyProxiesSupportThis"));
    let refusal = validate_request(&request("invut.dat"), &Policy::default()).unwrap_err();
    assert_eq!(refusal.headers[0].0, "Accept");
    assert!(refusal.headers[0].1.contains("application/sdp"));
    let r = request("regaut01.dat");
    assert_eq!(
        r.header("Authorization").as_deref(),
        Some("NoOneKnowsThisScheme opaque-data=here")
    );
    let contact = |f| match request(f).contact.first() {
        Some(super::header::Contact::Addr(a)) => a.clone(),
        other => panic!("{other:?}"),
    };
    let c = contact("cparam01.dat");
    assert!(c.params.contains("unknownparam") && c.uri.param("unknownparam").is_none());
    let c = contact("cparam02.dat");
    assert!(!c.params.contains("unknownparam") && c.uri.param("unknownparam").is_some());
    let c = contact("regescrt.dat");
    assert_eq!(c.uri.headers(), Some("Route=%3Csip:sip.example.com%3E"));
    let m = parse_message(&load("bcast.dat")).unwrap();
    let resp = super::request::Response::from_message(m).unwrap();
    assert_eq!(resp.via[1].host, "255.255.255.255");
    let r = request("inv2543.dat");
    assert_eq!(r.branch(), None);
    assert_eq!(r.max_forwards, None);
    assert_eq!(r.uri.scheme(), Scheme::Sip);
    assert_eq!(r.body().len(), 105);
}

#[test]
fn every_file_frames_the_same_split_at_every_byte() {
    for (file, bytes) in all_files() {
        let (whole, left, err) = run_stream(&bytes, KeepaliveRole::Server);
        let mut f = Framer::new(FrameConfig::default());
        let mut got = Vec::new();
        let mut got_err = None;
        for b in &bytes {
            f.push(std::slice::from_ref(b));
            loop {
                match f.next_frame() {
                    Ok(Some(fr)) => got.push(fr),
                    Ok(None) => break,
                    Err(e) => {
                        got_err = Some(e);
                        break;
                    }
                }
            }
            if got_err.is_some() {
                break;
            }
        }
        assert_eq!(got, whole, "{file}");
        assert_eq!(got_err, err, "{file}");
        if err.is_none() {
            assert_eq!(f.buffered(), left, "{file}");
        }
    }
}

fn all_files() -> Vec<(&'static str, Vec<u8>)> {
    CASES.iter().map(|c| (c.0, load(c.0))).collect()
}

/// Everything a received octet string goes through; must never panic.
fn exercise(bytes: &[u8]) {
    if let Ok(m) = parse_message(bytes) {
        let mut canonical = Vec::new();
        m.write_canonical(&mut canonical);
        let again = parse_message(&canonical).unwrap_or_else(|e| {
            panic!(
                "canonical form does not parse: {e}: {:?}",
                String::from_utf8_lossy(&canonical)
            )
        });
        same_fields(&m, &again);
        let _ = decide(m);
    } else if let Some(ctx) = AnswerContext::salvage(bytes) {
        let _ = answer_400(&ctx);
    }
    for role in [KeepaliveRole::Server, KeepaliveRole::Client] {
        let (frames, ..) = run_stream(bytes, role);
        for f in frames {
            let _ = frame_outcome(f);
        }
    }
}

#[test]
fn no_panic_on_any_file_or_truncated_prefix() {
    for (file, bytes) in all_files() {
        for cut in 0..=bytes.len() {
            let prefix = &bytes[..cut];
            let _ = parse_message(prefix);
            let _ = AnswerContext::salvage(prefix);
            let (frames, ..) = run_stream(prefix, KeepaliveRole::Server);
            // A prefix never yields more than the whole file does.
            assert!(frames.len() <= 3, "{file} cut {cut}");
        }
        exercise(&bytes);
    }
}

#[test]
fn two_files_concatenated_frame_at_the_boundary_or_fail_cleanly() {
    let files = all_files();
    for (fa, a) in &files {
        let (frames_a, left_a, err_a) = run_stream(a, KeepaliveRole::Server);
        for (fb, b) in &files {
            let joined = [a.as_slice(), b.as_slice()].concat();
            let (frames, _, _) = run_stream(&joined, KeepaliveRole::Server);
            if left_a == 0 && err_a.is_none() {
                // `a` framed completely: `b` must come out exactly as it does alone.
                let (frames_b, left_b, err_b) = run_stream(b, KeepaliveRole::Server);
                let (all, left, err) = run_stream(&joined, KeepaliveRole::Server);
                let mut want = frames_a.clone();
                want.extend(frames_b);
                assert_eq!(all, want, "{fa} + {fb}");
                assert_eq!((left, err), (left_b, err_b), "{fa} + {fb}");
            } else if err_a.is_some() {
                // `a` breaks the stream by itself: the same error, after the same frames.
                let (all, _, err) = run_stream(&joined, KeepaliveRole::Server);
                assert_eq!(all, frames_a, "{fa} + {fb}");
                assert_eq!(err, err_a, "{fa} + {fb}");
            } else {
                // `a` waits for more octets (`clerr`): `b` is taken as its body, and what
                // came before is unchanged.
                assert!(frames.starts_with(&frames_a), "{fa} + {fb}");
            }
        }
    }
}

use crate::testing::Rng;

const INTERESTING: &[&[u8]] = &[
    b"\r\n",
    b"\r\n ",
    b"\r",
    b"\n",
    b"\0",
    b"\"",
    b"\\",
    b"<",
    b">",
    b",",
    b";",
    b":",
    b"=",
    b"%",
    b"%0",
    b"@",
    b"?",
    b" ",
    b"\t",
    b"\xff",
    b"\xc3",
    b"SIP/2.0",
    b"l: 5\r\n",
    b"Content-Length: 99999999999999999999\r\n",
    b"\r\n\r\n",
    b";tag=",
    b"sip:",
    b"[::1]",
];

fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..=rng.below(4) {
        let at = rng.below(v.len() + 1);
        match rng.below(6) {
            0 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] ^= 1 << rng.below(8);
            }
            1 if !v.is_empty() => {
                let end = (at + 1 + rng.below(16)).min(v.len());
                v.drain(at.min(end)..end);
            }
            2 => {
                let s = INTERESTING[rng.below(INTERESTING.len())];
                v.splice(at..at, s.iter().copied());
            }
            3 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] = rng.next() as u8;
            }
            4 if !v.is_empty() => {
                let start = rng.below(v.len());
                let end = (start + 1 + rng.below(40)).min(v.len());
                let chunk = v[start..end].to_vec();
                v.splice(at..at, chunk);
            }
            _ => v.truncate(at),
        }
    }
    v
}

#[test]
fn seeded_mutations_never_panic() {
    let files = all_files();
    // XSGW_FUZZ_ITERS / XSGW_FUZZ_SEED run it longer or elsewhere by hand.
    let iters = std::env::var("XSGW_FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4_000);
    let seed = std::env::var("XSGW_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x005E_ED0F_4475);
    let mut rng = Rng(seed);
    for _ in 0..iters {
        let (_, base) = &files[rng.below(files.len())];
        let m = mutate(&mut rng, base);
        exercise(&m);
    }
}

/// Whatever text a display name or user part holds, what the serializer writes stays on
/// one line and parses back to the same value.
#[test]
fn serializer_never_splits_lines_and_round_trips() {
    let mut rng = Rng(0x00C0_FFEE);
    let alphabet: Vec<char> = "aZ9 \t\"\\<>;,:@%?&=+$/\r\n\0\x07\x7fé€😀[]#^`{|}'~!*()"
        .chars()
        .collect();
    for _ in 0..3_000 {
        let len = rng.below(12);
        let text: String = (0..len)
            .map(|_| alphabet[rng.below(alphabet.len())])
            .collect();
        let forbidden = text.contains(['\r', '\n', '\0']);
        // Display name.
        let uri = super::uri::Uri::parse("sip:a@example.com").unwrap();
        let mut na = NameAddr::new(Some(&text), uri);
        na.set_tag("t1").unwrap();
        let written = na.to_string();
        assert!(!written.contains(['\r', '\n', '\0']), "{written:?}");
        let back =
            NameAddr::parse(written.as_bytes()).unwrap_or_else(|e| panic!("{written:?}: {e}"));
        if forbidden {
            assert_eq!(back.display_name, None);
        } else {
            assert_eq!(back, na, "{written:?}");
        }
        // User part.
        if !text.is_empty() {
            let u = super::uri::Uri::sip(false, Some(&text), "example.com", Some(5061)).unwrap();
            assert!(u.as_str().bytes().all(|b| b.is_ascii_graphic()), "{u}");
            let back = super::uri::Uri::parse(u.as_str()).unwrap();
            assert_eq!(&*back.user_decoded().unwrap(), text.as_bytes());
            assert_eq!(back.host(), "example.com");
        }
        // Header value through the builder.
        let mut b = MessageBuilder::response(StatusCode::OK);
        match b.header("Subject", &text) {
            Ok(_) => {
                assert!(!forbidden);
                let m = parse_message(&b.to_bytes()).unwrap();
                assert_eq!(m.field_count(), 2);
            }
            Err(_) => assert!(forbidden),
        }
    }
}
