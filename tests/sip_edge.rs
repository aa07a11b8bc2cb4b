//! The SIP listener end to end, in process: a TLS client with the Edge's certificate sends
//! every method the Edge may send, and the RFC 4475 torture messages, through a real TLS
//! connection; the answers are checked on the wire. A channel stands in for the translator.

mod common;
mod sip_common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{free_port, Pki};
use sip_common::{log_mark, request, wait_log, EdgeClient, InProcess};
use xsgw::sip::{name, response_to, Frame, Message, Method, StatusCode};

const T: Duration = Duration::from_secs(5);

fn start(pki: &Pki, sink: bool) -> (InProcess, SocketAddr) {
    let sip = free_port();
    let config = pki.config(
        &format!("127.0.0.1:{}", free_port()),
        &format!("127.0.0.1:{sip}"),
        // Nothing listens there: the outbound connection retries in the background.
        &format!("127.0.0.1:{}", free_port()),
    );
    let gw = InProcess::start(&config, &pki.dir.0, sink);
    (gw, format!("127.0.0.1:{sip}").parse().unwrap())
}

fn edge(pki: &Pki, addr: SocketAddr) -> EdgeClient {
    EdgeClient::connect(
        addr,
        &pki.dir.path("internal-ca.pem"),
        &pki.dir.path("edge.pem"),
        &pki.dir.path("edge.key"),
    )
    .unwrap()
}

fn header(m: &Message, h: name::HeaderName) -> String {
    m.first(h)
        .and_then(|f| f.value_str().map(|v| v.into_owned()))
        .unwrap_or_default()
}

fn in_dialog(method: &str, call_id: &str, cseq: u32, extra: &str) -> Vec<u8> {
    let text = String::from_utf8(request(
        method,
        "sip:gw.contoso.test:5061;transport=tls",
        call_id,
        extra,
        "",
    ))
    .unwrap()
    .replace(
        "To: <sip:alice@gmail.test>",
        "To: <sip:alice@gmail.test>;tag=gwtag",
    )
    .replace(
        &format!("CSeq: 1 {method}"),
        &format!("CSeq: {cseq} {method}"),
    );
    text.into_bytes()
}

#[test]
fn every_method_the_edge_may_send_completes_its_transaction() {
    let pki = Pki::new("sip-methods");
    let (mut gw, addr) = start(&pki, true);
    let mut c = edge(&pki, addr);

    // RFC 5626 keepalive.
    c.send(b"\r\n\r\n").unwrap();
    assert_eq!(c.recv(T).unwrap(), Some(Frame::Pong));

    // MESSAGE: delivered with its Microsoft headers, answered by the transaction user.
    c.send(&request(
        "MESSAGE",
        "sip:alice@gmail.test",
        "m1",
        "Ms-Conversation-ID: AdC1\r\nContent-Type: text/plain; charset=UTF-8\r\n",
        "hello",
    ))
    .unwrap();
    let got = gw.next_request(T);
    assert_eq!(got.request.method, Method::Message);
    assert_eq!(got.request.body(), b"hello");
    assert_eq!(
        got.request.header("Ms-Conversation-ID").as_deref(),
        Some("AdC1")
    );
    got.respond(response_to(&got.request, StatusCode::OK, Some("gwtag")).unwrap())
        .unwrap();
    assert_eq!(c.final_status(T), 200);

    // INVITE (IM session): 100 Trying from the transaction layer, 200 from the user, ACK,
    // INFO (typing) and BYE in the dialog.
    let sdp = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=session\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=message 5060 sip null\r\na=accept-types:text/plain\r\n";
    c.send(&request(
        "INVITE",
        "sip:alice@gmail.test",
        "i1",
        "Content-Type: application/sdp\r\n",
        sdp,
    ))
    .unwrap();
    assert_eq!(c.message(T).status(), Some(100));
    let invite = gw.next_request(T);
    assert_eq!(invite.request.method, Method::Invite);
    let mut ok = response_to(&invite.request, StatusCode::OK, Some("gwtag")).unwrap();
    ok.header("Contact", "<sip:gw.contoso.test:5061;transport=tls>")
        .unwrap();
    invite.respond(ok).unwrap();
    let answer = c.message(T);
    assert_eq!(answer.status(), Some(200));
    assert!(header(&answer, name::TO).contains("tag=gwtag"));
    c.send(&in_dialog("ACK", "i1", 1, "")).unwrap();
    let ack = gw.next_request(T);
    assert_eq!(ack.request.method, Method::Ack);
    assert!(!ack.expects_response);
    for (method, cseq, extra) in [
        ("INFO", 2, "Content-Type: application/xml\r\n"),
        ("BYE", 3, ""),
    ] {
        c.send(&in_dialog(method, "i1", cseq, extra)).unwrap();
        let r = gw.next_request(T);
        assert_eq!(r.request.method.as_str(), method);
        r.respond(response_to(&r.request, StatusCode::OK, None).unwrap())
            .unwrap();
        assert_eq!(c.final_status(T), 200, "{method}");
    }

    // CANCEL of a pending INVITE: 200 for the CANCEL, 487 for the INVITE; the user's late
    // answer goes nowhere.
    c.send(&request("INVITE", "sip:alice@gmail.test", "i2", "", ""))
        .unwrap();
    assert_eq!(c.message(T).status(), Some(100));
    let pending = gw.next_request(T);
    let cancel = String::from_utf8(request("INVITE", "sip:alice@gmail.test", "i2", "", ""))
        .unwrap()
        .replacen("INVITE sip:", "CANCEL sip:", 1)
        .replace("CSeq: 1 INVITE", "CSeq: 1 CANCEL");
    c.send(cancel.as_bytes()).unwrap();
    let mut seen = vec![c.final_status(T), c.final_status(T)];
    seen.sort();
    assert_eq!(seen, vec![200, 487]);
    let _ = pending.respond(response_to(&pending.request, StatusCode::OK, Some("late")).unwrap());
    // A CANCEL that matches nothing.
    let stray = cancel
        .replace("Call-ID: i2", "Call-ID: nothing")
        .replace("z9hG4bKi2INVITE", "z9hG4bKnothing");
    c.send(stray.as_bytes()).unwrap();
    assert_eq!(c.final_status(T), 481);

    // SUBSCRIBE / NOTIFY (RFC 6665) and BENOTIFY (never answered).
    c.send(&request(
        "SUBSCRIBE",
        "sip:alice@gmail.test",
        "s1",
        "Event: presence\r\nExpires: 3600\r\nAccept: application/pidf+xml\r\n",
        "",
    ))
    .unwrap();
    let sub = gw.next_request(T);
    let mut ok = response_to(&sub.request, StatusCode::OK, Some("gwtag")).unwrap();
    ok.header("Expires", "3600").unwrap();
    sub.respond(ok).unwrap();
    assert_eq!(c.final_status(T), 200);
    c.send(&in_dialog(
        "NOTIFY",
        "s1",
        2,
        "Event: presence\r\nSubscription-State: active;expires=3600\r\n",
    ))
    .unwrap();
    let notify = gw.next_request(T);
    assert_eq!(notify.request.method, Method::Notify);
    notify
        .respond(response_to(&notify.request, StatusCode::OK, None).unwrap())
        .unwrap();
    assert_eq!(c.final_status(T), 200);
    c.send(&in_dialog(
        "BENOTIFY",
        "s1",
        3,
        "Event: presence\r\nSubscription-State: active\r\n",
    ))
    .unwrap();
    let benotify = gw.next_request(T);
    assert!(!benotify.expects_response);
    // Nothing is sent for it: the next thing on the wire is the OPTIONS answer.

    // OPTIONS to the gateway: answered by the gateway itself.
    c.send(&request("OPTIONS", "sip:gw.contoso.test", "o1", "", ""))
        .unwrap();
    let options = c.message(T);
    assert_eq!(options.status(), Some(200));
    assert!(
        header(&options, name::ALLOW).contains("BENOTIFY"),
        "{options:?}"
    );
    assert!(options.first(name::ACCEPT).is_some());
    assert!(options.first(name::SUPPORTED).is_some());

    // Refusals, each with its status.
    let mark = log_mark();
    for (method, uri, extra, body, status) in [
        ("PUBLISH", "sip:alice@gmail.test", "", "", 405),
        ("REGISTER", "sip:gmail.test", "", "", 405),
        ("FOO", "sip:alice@gmail.test", "", "", 501),
        ("MESSAGE", "sips:alice@gmail.test", "", "", 403),
        ("MESSAGE", "sip:alice@example.org", "", "", 404),
        ("MESSAGE", "sip:carol@example.org", "", "", 404),
        (
            "MESSAGE",
            "sip:alice@gmail.test",
            "Require: nope\r\n",
            "",
            420,
        ),
        (
            "MESSAGE",
            "sip:alice@gmail.test",
            "Content-Type: application/octet-stream\r\n",
            "x",
            415,
        ),
        ("MESSAGE", "foo:alice@gmail.test", "", "", 416),
    ] {
        c.send(&request(
            method,
            uri,
            &format!("r{status}{method}"),
            extra,
            body,
        ))
        .unwrap();
        let m = c.message(T);
        assert_eq!(m.status(), Some(status), "{method} {uri}");
        if status == 405 {
            assert!(header(&m, name::ALLOW).contains("MESSAGE"));
        }
    }
    let zero = String::from_utf8(request("MESSAGE", "sip:alice@gmail.test", "mf0", "", ""))
        .unwrap()
        .replace("Max-Forwards: 70", "Max-Forwards: 0");
    c.send(zero.as_bytes()).unwrap();
    assert_eq!(c.final_status(T), 483);
    let line = wait_log(mark, &["for domain `example.org` with 404"], T);
    assert!(line.contains("127.0.0.1"), "{line}");
    assert_eq!(
        sip_common::count_log(mark, "for domain `example.org`"),
        1,
        "logged once per peer and domain"
    );
    wait_log(mark, &["sips:…@gmail.test with 403"], T);
    assert!(gw.stop(), "every thread ended cleanly");
}

#[test]
fn a_message_the_xmpp_side_cannot_take_is_refused_never_200() {
    let pki = Pki::new("sip-router");
    let (mut gw, addr) = start(&pki, false);
    let mut c = edge(&pki, addr);
    c.send(&request(
        "MESSAGE",
        "sip:alice@gmail.test",
        "m1",
        "Content-Type: text/plain\r\n",
        "hi",
    ))
    .unwrap();
    // No XMPP server for gmail.test can be reached from here: the translator tries, fails
    // and says so with the mapped status (remote-server-not-found 404, -timeout 408).
    let m = c.message(Duration::from_secs(30));
    assert!(
        matches!(m.status(), Some(404) | Some(408)),
        "never a 200 for a message that goes nowhere: {m:?}"
    );
    assert!(
        header(&m, name::WARNING).contains("XMPP error remote-server-"),
        "{m:?}"
    );
    c.send(&in_dialog("BYE", "nodialog", 2, "")).unwrap();
    assert_eq!(c.final_status(T), 481);
    assert!(gw.stop());
}

/// What the listener must do with each RFC 4475 message arriving alone on a TLS stream (the
/// stream column of src/sip/rfc4475_tests.rs; a request that passes the SIP checks reaches
/// the target check, and the torture domains are not federated: 404).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    Status(u16),
    /// A response from the Edge's side: taken or dropped, never answered.
    Nothing,
    /// 400, then the stream is closed (it cannot be framed any further).
    Close400,
    /// Content-Length promises more: the listener waits.
    Waits,
}
use Expect::*;

const TORTURE: &[(&str, Expect)] = &[
    ("wsinv.dat", Status(404)),
    ("intmeth.dat", Status(501)),
    ("esc01.dat", Status(404)),
    ("escnull.dat", Status(405)),
    ("esc02.dat", Status(501)),
    ("lwsdisp.dat", Status(404)),
    ("longreq.dat", Status(404)),
    ("dblreq.dat", Status(405)),
    ("semiuri.dat", Status(404)),
    ("transports.dat", Status(404)),
    ("mpart01.dat", Status(415)),
    ("unreason.dat", Nothing),
    ("noreason.dat", Nothing),
    ("badinv01.dat", Status(400)),
    ("clerr.dat", Waits),
    ("ncl.dat", Close400),
    ("scalar02.dat", Status(400)),
    ("scalarlg.dat", Nothing),
    ("quotbal.dat", Status(400)),
    ("ltgtruri.dat", Status(400)),
    ("lwsruri.dat", Status(400)),
    ("lwsstart.dat", Status(400)),
    ("trws.dat", Status(400)),
    ("escruri.dat", Status(400)),
    ("baddate.dat", Status(404)),
    ("regbadct.dat", Status(400)),
    ("badaspec.dat", Status(400)),
    ("baddn.dat", Status(400)),
    ("badvers.dat", Status(505)),
    ("mismatch01.dat", Status(400)),
    ("mismatch02.dat", Status(400)),
    ("bigcode.dat", Nothing),
    ("badbranch.dat", Status(404)),
    ("insuf.dat", Status(400)),
    ("unkscm.dat", Status(416)),
    ("novelsc.dat", Status(416)),
    ("unksm2.dat", Status(405)),
    ("bext01.dat", Status(420)),
    ("invut.dat", Status(415)),
    ("regaut01.dat", Status(405)),
    ("multi01.dat", Status(400)),
    ("mcl01.dat", Close400),
    ("bcast.dat", Nothing),
    ("zeromf.dat", Status(483)),
    ("cparam01.dat", Status(405)),
    ("cparam02.dat", Status(405)),
    ("regescrt.dat", Status(405)),
    ("sdp01.dat", Status(406)),
    ("inv2543.dat", Close400),
];

fn torture_dir() -> std::path::PathBuf {
    let base = match std::env::var_os("XSGW_SHARED_DIR") {
        Some(d) => std::path::PathBuf::from(d),
        None => std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared")),
    };
    base.join("conformance/rfc4475")
}

#[test]
fn rfc4475_through_a_real_tls_connection() {
    let pki = Pki::new("sip-4475");
    let (mut gw, addr) = start(&pki, false);
    let files = std::fs::read_dir(torture_dir())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "dat"))
        })
        .count();
    assert_eq!(
        files,
        TORTURE.len(),
        "every torture file has an expectation"
    );
    for &(file, expect) in TORTURE {
        let bytes = std::fs::read(torture_dir().join(file)).unwrap();
        let mut c = edge(&pki, addr);
        c.send(&bytes).unwrap();
        match expect {
            Status(s) => assert_eq!(c.final_status(T), s, "{file}"),
            Nothing | Waits => {
                // A ping behind it: the pong must be the first thing to come back (for
                // `Waits` the ping is taken as body octets, so nothing comes at all).
                c.send(b"\r\n\r\n").unwrap();
                let got = c.recv(Duration::from_millis(400));
                if expect == Nothing {
                    assert_eq!(got, Ok(Some(Frame::Pong)), "{file}");
                } else {
                    assert_eq!(got, Ok(None), "{file}: still waiting for the body");
                }
            }
            Close400 => {
                assert_eq!(c.final_status(T), 400, "{file}");
                let mut end = Ok(None);
                for _ in 0..20 {
                    end = c.recv(Duration::from_millis(100));
                    if end.is_err() {
                        break;
                    }
                }
                assert!(end.is_err(), "{file}: the stream is closed after the 400");
            }
        }
    }
    assert!(gw.stop());
}

/// A stand-in Edge accepting the gateway's outbound connection: mutual TLS with the Edge's
/// certificate, client certificate required from the internal CA.
fn fake_edge_accept(
    pki: &Pki,
    listener: &std::net::TcpListener,
) -> rustls::StreamOwned<rustls::ServerConnection, std::net::TcpStream> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use std::sync::Arc;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(pki.dir.path("internal-ca.pem")).unwrap())
        .unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![CertificateDer::from_pem_file(pki.dir.path("edge.pem")).unwrap()],
            PrivateKeyDer::from_pem_file(pki.dir.path("edge.key")).unwrap(),
        )
        .unwrap();
    let (mut tcp, _) = listener.accept().unwrap();
    tcp.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut conn = rustls::ServerConnection::new(Arc::new(config)).unwrap();
    let deadline = std::time::Instant::now() + T;
    while conn.is_handshaking() {
        match conn.complete_io(&mut tcp) {
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) && std::time::Instant::now() < deadline => {}
            Err(e) => panic!("fake Edge handshake: {e}"),
        }
    }
    rustls::StreamOwned::new(conn, tcp)
}

/// Reads the next frame from the fake Edge's stream.
fn fake_edge_frame(
    s: &mut rustls::StreamOwned<rustls::ServerConnection, std::net::TcpStream>,
    framer: &mut xsgw::sip::Framer,
) -> Frame {
    use std::io::Read;
    let deadline = std::time::Instant::now() + T;
    let mut buf = [0u8; 8192];
    loop {
        if let Some(f) = framer.next_frame().unwrap() {
            return f;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "nothing from the gateway"
        );
        match s.read(&mut buf) {
            Ok(0) => panic!("the gateway closed"),
            Ok(n) => framer.push(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("read: {e}"),
        }
    }
}

#[test]
fn outbound_connection_fails_over_backs_off_and_routes_responses_back() {
    use std::io::Write;
    use xsgw::gateway::ClientOutcome;
    use xsgw::sip::{MessageBuilder, Request, Uri};

    let pki = Pki::new("sip-outbound");
    let edge_port = free_port();
    let mut config = pki.config(
        &format!("127.0.0.1:{}", free_port()),
        &format!("127.0.0.1:{}", free_port()),
        &format!("sip.contoso.test:{edge_port}"),
    );
    // Two addresses for the Edge name: nothing listens on the first.
    config.push_str("\n[hosts]\nsip.contoso.test = 127.0.0.2, 127.0.0.1\n");
    let mark = log_mark();
    let gw = InProcess::start(&config, &pki.dir.0, true);
    let edge = gw.gw().edge();
    wait_log(
        mark,
        &[&format!("the Edge sip.contoso.test:{edge_port} is unreachable (2 address(es) tried, attempt 1); next attempt in 500 ms")],
        T,
    );
    wait_log(mark, &["attempt 2); next attempt in 1000 ms"], T);
    // Meanwhile a request fails at once instead of waiting.
    let mut options = MessageBuilder::request(
        &Method::Options,
        &Uri::parse("sip:sip.contoso.test").unwrap(),
    );
    options
        .header("From", "<sip:gw.contoso.test>;tag=g1")
        .unwrap()
        .header("To", "<sip:sip.contoso.test>")
        .unwrap()
        .header("Call-ID", "out1")
        .unwrap()
        .header("CSeq", "1 OPTIONS")
        .unwrap();
    match edge.send(options.clone()).recv_timeout(T).unwrap() {
        ClientOutcome::Failed(why) => assert!(why.contains("not connected"), "{why}"),
        other => panic!("{other:?}"),
    }

    // The Edge comes up on the second address.
    let listener = std::net::TcpListener::bind(("127.0.0.1", edge_port)).unwrap();
    let mut s = fake_edge_accept(&pki, &listener);
    let line = wait_log(
        mark,
        &["connected to the Edge sip.contoso.test over mutual TLS"],
        T,
    );
    assert!(line.contains(&format!("127.0.0.1:{edge_port}")), "{line}");
    wait_log(
        mark,
        &[&format!(
            "sip outbound 127.0.0.2:{edge_port}: cannot connect"
        )],
        T,
    );
    // It pings too, so it takes a lone CRLF as the pong.
    let mut framer = xsgw::sip::Framer::new(xsgw::sip::FrameConfig {
        keepalive: xsgw::sip::KeepaliveRole::Client,
        ..xsgw::sip::FrameConfig::default()
    });

    // A request from the gateway: Via with its name and a fresh branch; the response
    // comes back to whoever asked.
    let outcomes = edge.send(options);
    let Frame::Message(m) = fake_edge_frame(&mut s, &mut framer) else {
        panic!()
    };
    let req = Request::from_message(m).unwrap();
    assert_eq!(
        req.top_via().unwrap().sent_by(),
        format!("gw.contoso.test:{}", gw.gw().sip_addr.port())
    );
    assert!(req.branch().unwrap().starts_with("z9hG4bK"));
    s.write_all(
        &response_to(&req, StatusCode::OK, Some("e1"))
            .unwrap()
            .to_bytes(),
    )
    .unwrap();
    match outcomes.recv_timeout(T).unwrap() {
        ClientOutcome::Final(r) => assert_eq!(r.status, StatusCode::OK),
        other => panic!("{other:?}"),
    }

    // The Edge may send requests over the gateway's connection too; and pings.
    s.write_all(&request(
        "MESSAGE",
        "sip:alice@gmail.test",
        "in1",
        "Content-Type: text/plain\r\n",
        "hi",
    ))
    .unwrap();
    let got = gw.next_request(T);
    got.respond(response_to(&got.request, StatusCode::OK, Some("gw")).unwrap())
        .unwrap();
    let Frame::Message(m) = fake_edge_frame(&mut s, &mut framer) else {
        panic!()
    };
    assert_eq!(m.status(), Some(200));
    s.write_all(b"\r\n\r\n").unwrap();
    assert_eq!(fake_edge_frame(&mut s, &mut framer), Frame::Pong);
    drop(s);
    wait_log(mark, &["connection to the Edge ended"], T);
}
