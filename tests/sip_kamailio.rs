//! The SIP leg against a real Access Edge: Kamailio from the testbed (mutual TLS on 5061,
//! SIP users behind it played by SIPp at 127.0.10.40), the gateway in this process with a
//! channel standing in for the translator.
//!
//! Covered: mutual TLS both ways with the right certificates; Kamailio presenting a
//! certificate from another CA, with a name not in `edge_names` or for `*.contoso.test` is
//! refused with a log line that says so; an `edge_pin` that is not Kamailio's key refuses it,
//! a rollover pair holding it does not; the gateway presenting the wrong certificate, distrusting the Edge's CA, or
//! expecting another Edge name fails with a log line; transactions for MESSAGE, INVITE/ACK/
//! INFO/MESSAGE/BYE, SUBSCRIBE (SIPp through Kamailio) and OPTIONS/MESSAGE sent by the
//! gateway; Kamailio restarted under traffic → the gateway reconnects by itself.

mod common;
mod sip_common;

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::testbed::Testbed;
use sip_common::{log_mark, wait_log, InProcess};
use xsgw::gateway::{ClientOutcome, EdgeHandle};
use xsgw::sip::dialog::Dialog;
use xsgw::sip::{parse_message, response_to, MessageBuilder, Method, Request, StatusCode, Uri};

const T: Duration = Duration::from_secs(10);

fn sipp(testbed: &Testbed, log: &str, args: &[&str]) -> Child {
    let scenario = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/testbed/sipp/");
    let out = std::fs::File::create(testbed.dir.join(format!("logs/{log}.log"))).unwrap();
    Command::new("sipp")
        .arg("-sf")
        .arg(format!("{scenario}{}", args[0]))
        .args([
            "-nostdin",
            "-m",
            "1",
            "-timeout",
            "15s",
            "-timeout_error",
            "-t",
            "u1",
        ])
        .args(["-i", "127.0.10.40", "-p", "5060"])
        .args(&args[1..])
        .current_dir(testbed.dir.join("run"))
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("sipp is installed (make test installs the testbed)")
}

fn sipp_ok(testbed: &Testbed, mut child: Child, log: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(
                status.success(),
                "sipp {log} failed ({status}); see {}",
                std::fs::read_to_string(testbed.dir.join(format!("logs/{log}.log")))
                    .unwrap_or_default()
                    .lines()
                    .rev()
                    .take(40)
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            return;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("sipp {log} did not finish");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn uac(testbed: &Testbed, scenario: &str, log: &str) {
    let child = sipp(testbed, log, &[scenario, "-s", "alice", "127.0.10.30:5060"]);
    sipp_ok(testbed, child, log);
}

fn request(method: Method, uri: &str, call_id: &str) -> MessageBuilder {
    let mut b = MessageBuilder::request(&method, &Uri::parse(uri).unwrap());
    b.header("From", "<sip:alice@gmail.test>;tag=gw1")
        .unwrap()
        .header("To", &format!("<{uri}>"))
        .unwrap()
        .header("Call-ID", call_id)
        .unwrap()
        .header("CSeq", &format!("1 {method}"))
        .unwrap();
    b
}

fn final_status(edge: &EdgeHandle, req: MessageBuilder) -> Result<u16, String> {
    let outcomes = edge.send(req);
    loop {
        match outcomes.recv_timeout(T) {
            Ok(ClientOutcome::Provisional(_)) => continue,
            Ok(ClientOutcome::Final(r)) => return Ok(r.status.as_u16()),
            Ok(ClientOutcome::Failed(why)) => return Err(why),
            Err(_) => return Err("no outcome".into()),
        }
    }
}

/// Answers every request the sink receives the way a translator that accepts everything
/// would: 200 (with Contact, so in-dialog requests come back to the gateway), nothing for
/// ACK and BENOTIFY. Counts what it answered per method.
fn answer_everything(
    gw: &InProcess,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<String>> {
    let requests = gw.requests.clone().unwrap();
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        while !stop.load(Ordering::SeqCst) {
            let Ok(r) = requests.recv_timeout(Duration::from_millis(50)) else {
                continue;
            };
            seen.push(r.request.method.to_string());
            if !r.expects_response {
                continue;
            }
            // Dialog-creating requests get the Record-Route set back (RFC 3261 §12.1.1).
            let contact = Uri::parse("sip:gw.contoso.test:5061;transport=tls").unwrap();
            let mut ok = if matches!(r.request.method, Method::Invite | Method::Subscribe) {
                Dialog::answer(&r.request, StatusCode::OK, "gwtag", &contact).unwrap()
            } else {
                response_to(&r.request, StatusCode::OK, Some("gwtag")).unwrap()
            };
            if r.request.method == Method::Subscribe {
                let expires = r.request.expires.unwrap_or(3600).to_string();
                ok.header("Expires", &expires).unwrap();
            }
            if r.request.method == Method::Invite {
                ok.body(
                    "application/sdp",
                    b"v=0\r\no=- 0 0 IN IP4 127.0.10.100\r\ns=session\r\nc=IN IP4 127.0.10.100\r\nt=0 0\r\nm=message 5061 sip sip:alice@gmail.test\r\n".to_vec(),
                )
                .unwrap();
            }
            let _ = r.respond(ok);
        }
        seen
    })
}

fn edit_kamailio_client_cert(testbed: &Testbed, cert: &str) {
    let path = testbed.dir.join("kamailio/tls.cfg");
    let text = std::fs::read_to_string(&path).unwrap();
    let (server, client) = text.split_once("[client:default]").unwrap();
    let pki = testbed.dir.join("pki");
    let client: String = client
        .lines()
        .map(|l| {
            if l.starts_with("certificate") {
                format!(
                    "certificate = {}",
                    pki.join(format!("{cert}.pem")).display()
                )
            } else if l.starts_with("private_key") {
                format!(
                    "private_key = {}",
                    pki.join(format!("{cert}.key")).display()
                )
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&path, format!("{server}[client:default]{client}\n")).unwrap();
    let out = testbed.command(&["restart", "kamailio"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn kamailio_as_the_edge() {
    let testbed = Testbed::up("sip-kamailio", &[]);
    let config = testbed.gateway_config("debug");
    let mark = log_mark();
    let mut gw = InProcess::start(&config, &testbed.dir, true);
    let edge = gw.gw().edge();

    // Outbound: mutual TLS with Kamailio, which checks the gateway's certificate and name.
    let line = wait_log(
        mark,
        &["connected to the Edge sip.contoso.test over mutual TLS"],
        T,
    );
    assert!(line.contains("127.0.10.30:5061"), "{line}");
    assert!(
        line.contains("Edge certificate names sip.contoso.test"),
        "{line}"
    );
    assert!(edge.is_connected());
    assert_eq!(
        final_status(
            &edge,
            request(Method::Options, "sip:sip.contoso.test", "o1")
        ),
        Ok(200)
    );
    // A MESSAGE from the gateway to a SIP user behind the Edge (SIPp answers 200).
    let uas = sipp(&testbed, "sipp-uas-1", &["uas-message.xml"]);
    std::thread::sleep(Duration::from_millis(300));
    let mut msg = request(Method::Message, "sip:bob@contoso.test", "m1");
    msg.body("text/plain", b"hello from xsgw".to_vec()).unwrap();
    assert_eq!(final_status(&edge, msg), Ok(200));
    sipp_ok(&testbed, uas, "sipp-uas-1");

    // Inbound: SIP users write through the Edge; Kamailio opens TLS to the gateway with its
    // Edge certificate; every transaction completes.
    let stop = Arc::new(AtomicBool::new(false));
    let answerer = answer_everything(&gw, Arc::clone(&stop));
    uac(&testbed, "uac-message.xml", "sipp-uac-message");
    let line = wait_log(
        mark,
        &["sip inbound 127.0.10.30:", "mutual TLS established"],
        T,
    );
    assert!(
        line.contains("Edge certificate names sip.contoso.test"),
        "{line}"
    );
    uac(&testbed, "uac-session.xml", "sipp-uac-session");
    uac(&testbed, "uac-subscribe.xml", "sipp-uac-subscribe");

    // A subscription the gateway makes (RFC 6665): SUBSCRIBE through the Edge, the user's
    // NOTIFY comes back in the dialog along the Record-Route set, and the gateway ends it
    // with an in-dialog SUBSCRIBE that follows the route set.
    let uas = sipp(&testbed, "sipp-uas-subscribe", &["uas-subscribe.xml"]);
    std::thread::sleep(Duration::from_millis(300));
    let mut sub = request(Method::Subscribe, "sip:bob@contoso.test", "sub1");
    sub.header("Contact", "<sip:gw.contoso.test:5061;transport=tls>")
        .unwrap()
        .header("Event", "presence")
        .unwrap()
        .header("Accept", "application/pidf+xml")
        .unwrap()
        .header("Expires", "3600")
        .unwrap();
    let notify_mark = log_mark();
    let outcomes = edge.send(sub.clone());
    let response = loop {
        match outcomes.recv_timeout(T).unwrap() {
            ClientOutcome::Provisional(_) => continue,
            ClientOutcome::Final(r) => break r,
            ClientOutcome::Failed(why) => panic!("SUBSCRIBE failed: {why}"),
        }
    };
    assert_eq!(response.status, StatusCode::OK);
    let mut sent = sub.clone();
    sent.prepend_header("Via", "SIP/2.0/TLS gw.contoso.test;branch=z9hG4bKsub1")
        .unwrap();
    let sent = Request::from_message(parse_message(&sent.to_bytes()).unwrap()).unwrap();
    let mut dialog = Dialog::uac(&sent, &response).unwrap();
    assert!(!dialog.route_set.is_empty(), "Kamailio record-routes");
    wait_log(notify_mark, &["NOTIFY", "to the transaction user"], T);
    let mut unsub = dialog.request(&Method::Subscribe).unwrap();
    unsub
        .header("Contact", "<sip:gw.contoso.test:5061;transport=tls>")
        .unwrap()
        .header("Event", "presence")
        .unwrap()
        .header("Expires", "0")
        .unwrap();
    assert_eq!(final_status(&edge, unsub), Ok(200));
    sipp_ok(&testbed, uas, "sipp-uas-subscribe");

    // Kamailio restarted under traffic: the gateway notices, reconnects by itself, and later
    // requests go through both ways.
    let sent = Arc::new(AtomicUsize::new(0));
    let traffic_stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let (edge, sent, stop) = (edge.clone(), Arc::clone(&sent), Arc::clone(&traffic_stop));
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let _ = final_status(
                    &edge,
                    request(Method::Options, "sip:sip.contoso.test", &format!("t{n}")),
                );
                sent.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let restart_mark = log_mark();
    let out = testbed.command(&["restart", "kamailio"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_log(
        restart_mark,
        &["sip outbound", "connection to the Edge ended"],
        T,
    );
    wait_log(
        restart_mark,
        &["connected to the Edge sip.contoso.test"],
        Duration::from_secs(20),
    );
    traffic_stop.store(true, Ordering::SeqCst);
    traffic.join().unwrap();
    assert!(
        sent.load(Ordering::SeqCst) > 3,
        "traffic ran during the restart"
    );
    assert_eq!(
        final_status(
            &edge,
            request(Method::Options, "sip:sip.contoso.test", "after")
        ),
        Ok(200)
    );
    let uas = sipp(&testbed, "sipp-uas-2", &["uas-message.xml"]);
    std::thread::sleep(Duration::from_millis(300));
    let mut msg = request(Method::Message, "sip:bob@contoso.test", "m2");
    msg.body("text/plain", b"after the restart".to_vec())
        .unwrap();
    assert_eq!(final_status(&edge, msg), Ok(200));
    sipp_ok(&testbed, uas, "sipp-uas-2");
    uac(&testbed, "uac-message.xml", "sipp-uac-message-2");

    // Kamailio presenting the wrong client certificate toward the gateway is refused, with
    // a log line naming what was presented.
    for (cert, expected) in [
        ("other", "is not issued by the CA in"),
        (
            "wrongname",
            "certificate names rogue.contoso.test, none of [sip] edge_names",
        ),
        // Any internal certificate for the whole domain is not the Edge either.
        (
            "wildcard",
            "certificate names *.contoso.test, none of [sip] edge_names",
        ),
    ] {
        edit_kamailio_client_cert(&testbed, cert);
        let m = log_mark();
        let child = sipp(
            &testbed,
            &format!("sipp-uac-{cert}"),
            &["uac-message.xml", "-s", "alice", "127.0.10.30:5060"],
        );
        let line = wait_log(m, &["sip inbound 127.0.10.30:", expected], T);
        assert!(line.contains("refused"), "{line}");
        let _ = child.wait_with_output();
    }
    edit_kamailio_client_cert(&testbed, "edge");

    stop.store(true, Ordering::SeqCst);
    let seen = answerer.join().unwrap();
    for method in [
        "MESSAGE",
        "INVITE",
        "ACK",
        "INFO",
        "BYE",
        "SUBSCRIBE",
        "NOTIFY",
    ] {
        assert!(
            seen.iter().any(|m| m == method),
            "{method} reached the user: {seen:?}"
        );
    }
    assert!(gw.stop(), "every thread ended cleanly");
    drop(gw);

    // The gateway's side of mutual TLS toward the Edge, each failure explained.
    let pki = testbed.dir.join("pki");
    let p = |f: &str| pki.join(f).display().to_string();
    let pin = |f: &str| {
        let der = xsgw::tls::load_certs(&pki.join(f)).unwrap();
        xsgw::tls::names::SpkiPin::of_certificate(&der[0])
            .unwrap()
            .to_string()
    };
    let pinned = |pins: &str| {
        config.replace(
            "edge_names = sip.contoso.test\n",
            &format!("edge_names = sip.contoso.test\nedge_pin = {pins}\n"),
        )
    };
    let wrong_pin = format!(
        "certificate key {} is not one of the 1 [sip] edge_pin value(s)",
        pin("edge.pem")
    );
    let cases: [(String, &[&str]); 4] = [
        // A certificate from another CA: Kamailio refuses the handshake.
        (
            config
                .replace(&p("gateway.pem"), &p("other.pem"))
                .replace(&p("gateway.key"), &p("other.key")),
            &["sip outbound 127.0.10.30:5061", "alert"],
        ),
        // The gateway does not trust the Edge's CA.
        (
            config.replace(
                &format!("[sip]\nlisten = 127.0.10.100:5061\nedge = sip.contoso.test:5061\nedge_names = sip.contoso.test\ncert = {}\nkey = {}\nca = {}", p("gateway.pem"), p("gateway.key"), p("ca.pem")),
                &format!("[sip]\nlisten = 127.0.10.100:5061\nedge = sip.contoso.test:5061\nedge_names = sip.contoso.test\ncert = {}\nkey = {}\nca = {}", p("gateway.pem"), p("gateway.key"), p("other-ca.pem")),
            ),
            &["sip outbound 127.0.10.30:5061", "not issued by the CA in"],
        ),
        // The Edge reached by address, its name not in edge_names.
        (
            config
                .replace("edge = sip.contoso.test:5061", "edge = 127.0.10.30:5061")
                .replace("edge_names = sip.contoso.test", "edge_names = pool.contoso.test"),
            &["sip outbound 127.0.10.30:5061", "does not name 127.0.10.30 nor any of [sip] edge_names"],
        ),
        // Kamailio's key is not the pinned one.
        (
            pinned(&pin("wrongname.pem")),
            &["sip outbound 127.0.10.30:5061", &wrong_pin],
        ),
    ];
    for (text, expected) in cases {
        assert_ne!(
            text, config,
            "the configuration was changed for {expected:?}"
        );
        let m = log_mark();
        let mut gw = InProcess::start(&text, &testbed.dir, false);
        wait_log(m, expected, T);
        assert!(gw.stop());
    }
    // With Kamailio's key among the pins (a rollover pair), the connection is made.
    let m = log_mark();
    let mut gw = InProcess::start(
        &pinned(&format!("{}, {}", pin("wrongname.pem"), pin("edge.pem"))),
        &testbed.dir,
        false,
    );
    wait_log(
        m,
        &["connected to the Edge sip.contoso.test over mutual TLS"],
        T,
    );
    assert!(gw.stop());
    // edge_names lets the Edge be reached by address when its certificate names it.
    let by_address = config.replace("edge = sip.contoso.test:5061", "edge = 127.0.10.30:5061");
    let m = log_mark();
    let mut gw = InProcess::start(&by_address, &testbed.dir, false);
    wait_log(m, &["connected to the Edge 127.0.10.30 over mutual TLS"], T);
    assert!(gw.stop());
}
