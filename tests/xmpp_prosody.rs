//! The S2S engine against real Prosody (gmail.test) from the testbed, the gateway running
//! in-process with a test sink in place of the translator: both directions of stream set-up
//! in three variants (dialback in the clear; STARTTLS + dialback; STARTTLS + SASL EXTERNAL),
//! SRV order and fallback, a peer certificate that does not name its domain.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::testbed::{script, Testbed, PYTHON};
use crossbeam_channel::Receiver;
use xsgw::gateway::{Gateway, GatewayOptions, RouterEvent, XmppNotice};
use xsgw::xmpp::element::{Element, NS_SERVER};
use xsgw::xmpp::session::AuthMethod;

/// The gateway in this process, with its sink.
pub struct InProcess {
    pub gateway: Option<Gateway>,
    pub notices: Receiver<XmppNotice>,
}

impl InProcess {
    /// Starts xsgw with the testbed's configuration, `extra` lines added to `[xmpp]`.
    pub fn start(testbed: &Testbed, extra: &[&str]) -> InProcess {
        InProcess::start_with(testbed, extra, "")
    }

    /// [`InProcess::start`] with `sections` appended to the configuration.
    pub fn start_with(testbed: &Testbed, extra: &[&str], sections: &str) -> InProcess {
        InProcess::start_edited(testbed, extra, |text| text + sections, true)
    }

    /// [`InProcess::start`] with the configuration text passed through `edit`; with
    /// `with_sink` false the gateway runs as `Gateway::start` leaves it: no sink installed.
    pub fn start_edited(
        testbed: &Testbed,
        extra: &[&str],
        edit: impl FnOnce(String) -> String,
        with_sink: bool,
    ) -> InProcess {
        let _ = env_logger::builder()
            .is_test(true)
            .filter_level(log::LevelFilter::Info)
            .parse_default_env()
            .try_init();
        let mut text = testbed.gateway_config("info");
        let mut added = String::from("[xmpp]\n");
        for line in extra {
            added.push_str(line);
            added.push('\n');
        }
        text = edit(text.replacen("[xmpp]\n", &added, 1));
        let path = testbed.dir.join("xsgw.ini");
        std::fs::write(&path, &text).unwrap();
        let (config, mut report) = xsgw::config::parse(&text, &path).unwrap();
        let credentials = xsgw::config::validate(&config, &mut report);
        assert!(!report.has_errors(), "{:?}", report.lines());
        let (sink, notices) = crossbeam_channel::bounded(1024);
        let credentials = credentials.expect("credentials load");
        let gateway = if with_sink {
            Gateway::start_with(
                Arc::new(config),
                credentials,
                GatewayOptions {
                    xmpp_sink: Some(sink),
                    ..GatewayOptions::default()
                },
            )
        } else {
            Gateway::start(Arc::new(config), credentials)
        }
        .expect("gateway starts");
        InProcess {
            gateway: Some(gateway),
            notices,
        }
    }

    /// Sends a chat message from `from` (a hosted JID) to `to` (a remote JID).
    pub fn send_chat(&self, from: &str, to: &str, body: &str) {
        let stanza = Element::new("message", NS_SERVER)
            .with_attr("from", from)
            .with_attr("to", to)
            .with_attr("type", "chat")
            .with_attr("id", "xsgw-test-1")
            .with_child(Element::new("body", NS_SERVER).with_text(body));
        assert!(self.gateway.as_ref().unwrap().xmpp_sender().send(stanza));
    }

    /// The first notice matching `want` within `timeout`; others are kept in `seen`.
    pub fn wait_for(
        &self,
        seen: &mut Vec<XmppNotice>,
        timeout: Duration,
        want: impl Fn(&XmppNotice) -> bool,
    ) -> Option<XmppNotice> {
        if let Some(pos) = seen.iter().position(&want) {
            return Some(seen.remove(pos));
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.notices.recv_timeout(left) {
                Ok(n) if want(&n) => return Some(n),
                Ok(n) => seen.push(n),
                Err(_) => return None,
            }
        }
    }

    pub fn stop(mut self) {
        if let Some(gw) = self.gateway.take() {
            let _ = gw.events().send(RouterEvent::Shutdown);
            assert!(gw.wait(), "every gateway thread ended cleanly");
        }
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        if let Some(gw) = self.gateway.take() {
            let _ = gw.events().send(RouterEvent::Shutdown);
            let _ = gw.wait();
        }
    }
}

/// A logged-in XMPP user (testbed.py xmpp-recv), printing each message as a JSON line.
pub struct User {
    child: Child,
    lines: BufReader<ChildStdout>,
}

impl User {
    /// Logs `jid` in; once ready it sends `send_to` a message with `body` (if given).
    pub fn login(dir: &Path, jid: &str, send_to: Option<(&str, &str)>, count: u32) -> User {
        let mut cmd = Command::new(PYTHON);
        cmd.arg(script())
            .args(["xmpp-recv", "--user", jid, "--timeout", "20", "--count"])
            .arg(count.to_string())
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if let Some((to, body)) = send_to {
            cmd.args(["--send", to, "--body", body]);
        }
        let mut child = cmd.spawn().unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap());
        let mut user = User { child, lines };
        let first = user.next_line();
        assert!(
            first.contains("\"ready\": true"),
            "{jid} logged in: {first}"
        );
        user
    }

    pub fn next_line(&mut self) -> String {
        let mut line = String::new();
        let _ = self.lines.read_line(&mut line);
        line
    }

    /// The next message line, or what ended the wait.
    pub fn next_message(&mut self) -> String {
        loop {
            let line = self.next_line();
            if line.is_empty() || line.contains("\"message\"") || line.contains("\"done\"") {
                return line;
            }
        }
    }
}

impl Drop for User {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const WAIT: Duration = Duration::from_secs(20);

fn is_stanza_from(n: &XmppNotice, remote: &str, body: &str) -> bool {
    matches!(n, XmppNotice::Stanza(s) if s.remote == remote
        && s.stanza.child("body", NS_SERVER).is_some_and(|b| b.text() == body))
}

fn authenticated(n: &XmppNotice, outbound: bool) -> Option<(AuthMethod, bool, SocketAddr)> {
    match n {
        XmppNotice::Authenticated {
            outbound: o,
            method,
            tls,
            peer,
            remote,
            ..
        } if *o == outbound && remote == "gmail.test" => Some((*method, *tls, *peer)),
        _ => None,
    }
}

/// Both directions with real Prosody; returns (inbound, outbound) (method, tls, peer).
fn both_directions(
    testbed: &Testbed,
    gw: &InProcess,
) -> (
    (AuthMethod, bool, SocketAddr),
    (AuthMethod, bool, SocketAddr),
) {
    let mut seen = Vec::new();
    let token_in = format!("to-xsgw-{}", std::process::id());
    // Inbound: alice@gmail.test writes to carol@contoso.test; Prosody finds xsgw by SRV.
    let mut alice = User::login(
        &testbed.dir,
        "alice@gmail.test",
        Some(("carol@contoso.test", &token_in)),
        1,
    );
    let got = gw.wait_for(&mut seen, WAIT, |n| {
        is_stanza_from(n, "gmail.test", &token_in)
    });
    assert!(got.is_some(), "alice's stanza reached the sink: {seen:?}");
    let inbound = gw
        .wait_for(&mut seen, WAIT, |n| authenticated(n, false).is_some())
        .and_then(|n| authenticated(&n, false))
        .expect("inbound authenticated notice");

    // Outbound: xsgw sends to alice; it opens its own stream to gmail.test.
    let token_out = format!("from-xsgw-{}", std::process::id());
    gw.send_chat("carol@contoso.test/gw", "alice@gmail.test", &token_out);
    let line = alice.next_message();
    assert!(
        line.contains(&token_out) && line.contains("carol@contoso.test"),
        "alice received xsgw's message: {line} (sink: {seen:?})"
    );
    let outbound = gw
        .wait_for(&mut seen, WAIT, |n| authenticated(n, true).is_some())
        .and_then(|n| authenticated(&n, true))
        .expect("outbound authenticated notice");
    assert!(
        !seen.iter().any(|n| matches!(n, XmppNotice::Bounced(_))),
        "nothing bounced: {seen:?}"
    );
    (inbound, outbound)
}

#[test]
fn sasl_external_both_ways_and_srv_priority_order() {
    let testbed = Testbed::up("s2s-external", &[]);
    let gw = InProcess::start(&testbed, &[]);
    let (inbound, outbound) = both_directions(&testbed, &gw);
    assert_eq!((inbound.0, inbound.1), (AuthMethod::SaslExternal, true));
    assert_eq!((outbound.0, outbound.1), (AuthMethod::SaslExternal, true));
    // Priority 5 (xmpp-server.l.gmail.test, 127.0.10.5) before the priority-20 alt hosts.
    assert_eq!(outbound.2, "127.0.10.5:5269".parse().unwrap());

    // A second hosted domain gets its own stream to the same remote domain.
    let mut bob = User::login(&testbed.dir, "bob@gmail.test", None, 1);
    gw.send_chat("dave@fabrikam.test", "bob@gmail.test", "from fabrikam");
    let line = bob.next_message();
    assert!(
        line.contains("from fabrikam") && line.contains("dave@fabrikam.test"),
        "{line}"
    );
    let mut seen = Vec::new();
    let second = gw.wait_for(&mut seen, WAIT, |n| {
        matches!(n, XmppNotice::Authenticated { outbound: true, local, .. } if local == "fabrikam.test")
    });
    assert!(
        second.is_some(),
        "fabrikam.test → gmail.test authenticated: {seen:?}"
    );
    gw.stop();
}

#[test]
fn dialback_in_the_clear_both_ways() {
    let testbed = Testbed::up("s2s-dialback", &[]);
    let gw = InProcess::start(&testbed, &["tls = disabled"]);
    let (inbound, outbound) = both_directions(&testbed, &gw);
    assert_eq!((inbound.0, inbound.1), (AuthMethod::Dialback, false));
    assert_eq!((outbound.0, outbound.1), (AuthMethod::Dialback, false));
    gw.stop();
}

#[test]
fn starttls_and_dialback_both_ways() {
    let testbed = Testbed::up("s2s-tls-dialback", &[]);
    let gw = InProcess::start(&testbed, &["sasl = disabled"]);
    let (inbound, outbound) = both_directions(&testbed, &gw);
    assert_eq!((inbound.0, inbound.1), (AuthMethod::Dialback, true));
    assert_eq!((outbound.0, outbound.1), (AuthMethod::Dialback, true));
    gw.stop();
}

#[test]
fn dialback_required_for_a_partner_is_used_though_external_would_work() {
    // The default testbed, where SASL EXTERNAL is used both ways (see above).
    let testbed = Testbed::up("s2s-dialback-required", &[]);
    let gw = InProcess::start_edited(
        &testbed,
        &[],
        |text| {
            text.replacen(
                "[partner gmail.test]\n",
                "[partner gmail.test]\ndialback = required\n",
                1,
            )
        },
        true,
    );
    let (inbound, outbound) = both_directions(&testbed, &gw);
    assert_eq!((inbound.0, inbound.1), (AuthMethod::Dialback, true));
    assert_eq!((outbound.0, outbound.1), (AuthMethod::Dialback, true));
    gw.stop();
}

#[test]
fn without_a_sink_an_inbound_message_goes_to_the_translator_and_its_failure_comes_back() {
    let testbed = Testbed::up("s2s-no-sink", &[]);
    let gw = InProcess::start_edited(&testbed, &[], |text| text, false);
    let out = testbed.command(&[
        "xmpp-send",
        "--sender",
        "alice@gmail.test",
        "--receiver",
        "bob@gmail.test",
        "--remote",
        "someone@contoso.test",
        "--wait",
        "9",
    ]);
    // The translator sends it on to the Edge; no SIP user answers at 127.0.10.40, so
    // Kamailio's transaction times out (408) and alice gets the mapped error, not silence.
    let json = String::from_utf8_lossy(&out.stdout);
    let errors = json.split("\"errors\": [").nth(1).unwrap_or("");
    assert!(
        errors.contains("\"from\": \"someone@contoso.test\"")
            && errors.contains("remote-server-timeout")
            && errors.contains("SIP 408"),
        "alice got her message back as an error: {json}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    gw.stop();
}

/// Names of this process's threads whose name starts with `prefix` (/proc/self/task/*/comm).
fn threads_named(prefix: &str) -> Vec<String> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|name| name.trim().to_string())
        .filter(|name| name.starts_with(prefix))
        .collect()
}

#[test]
fn shutdown_joins_every_s2s_thread_within_the_grace_period() {
    let testbed = Testbed::up("s2s-shutdown", &[]);
    // slow.test's authoritative server accepts and never answers: a dialback verification
    // toward it keeps an inbound thread waiting on a stream the router does not know of.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let mut gw = InProcess::start_with(
        &testbed,
        &[],
        &format!("\n[partner slow.test]\nroute = 127.0.0.1:{port}\n"),
    );
    both_directions(&testbed, &gw);
    let mut fake = FakePeer::connect("slow.test");
    fake.read_until("</stream:features>");
    fake.send("<db:result from='slow.test' to='contoso.test'>0123456789abcdef</db:result>");
    silent.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + WAIT;
    let _verifying = loop {
        match silent.accept() {
            Ok((socket, _)) => break socket,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("no verification stream toward slow.test: {e}"),
        }
    };
    let running = threads_named("xmpp-");
    assert!(
        running.iter().any(|n| n.starts_with("xmpp-in-"))
            && running.iter().any(|n| n.starts_with("xmpp-out-")),
        "inbound and outbound stream threads run: {running:?}"
    );
    let gateway = gw.gateway.take().unwrap();
    let started = Instant::now();
    let _ = gateway.events().send(RouterEvent::Shutdown);
    let clean = gateway.wait();
    let took = started.elapsed();
    let left = threads_named("xmpp-");
    assert!(left.is_empty(), "xmpp threads left after wait(): {left:?}");
    assert!(
        took < xsgw::gateway::SHUTDOWN_GRACE,
        "wait() returned after {took:?}"
    );
    assert!(clean, "every gateway thread ended cleanly");
    drop(fake);
}

#[test]
fn peer_certificate_without_its_domain_gets_no_external_and_completes_dialback() {
    // Prosody presents wrongname.pem (rogue.contoso.test, from the good CA) on s2s and tries
    // SASL EXTERNAL first when offered.
    let testbed = Testbed::up("s2s-wrongname", &["--prosody-s2s-cert", "wrongname"]);
    let gw = InProcess::start(&testbed, &[]);
    let (inbound, outbound) = both_directions(&testbed, &gw);
    assert_eq!((inbound.0, inbound.1), (AuthMethod::Dialback, true));
    assert_eq!((outbound.0, outbound.1), (AuthMethod::Dialback, true));
    gw.stop();
}

#[test]
fn srv_falls_back_to_the_next_target_when_priority_5_refuses() {
    // Prosody listens on alt1 (127.0.10.21, priority 20) only: 127.0.10.5:5269 refuses.
    let testbed = Testbed::up("s2s-fallback", &["--prosody-s2s", "127.0.10.21"]);
    let gw = InProcess::start(&testbed, &["idle_timeout = 1s", "keepalive = 1s"]);
    let mut alice = User::login(&testbed.dir, "alice@gmail.test", None, 2);
    gw.send_chat("carol@contoso.test", "alice@gmail.test", "via alt1");
    let line = alice.next_message();
    assert!(line.contains("via alt1"), "alice received it: {line}");
    let mut seen = Vec::new();
    let outbound = gw
        .wait_for(&mut seen, WAIT, |n| authenticated(n, true).is_some())
        .and_then(|n| authenticated(&n, true))
        .expect("outbound authenticated");
    assert_eq!(outbound.2, "127.0.10.21:5269".parse().unwrap());

    // idle_timeout closes the stream politely; the next stanza opens a new one.
    std::thread::sleep(Duration::from_millis(1800));
    gw.send_chat("carol@contoso.test", "alice@gmail.test", "after idle");
    let line = alice.next_message();
    assert!(line.contains("after idle"), "alice received it: {line}");
    assert!(
        gw.wait_for(&mut seen, WAIT, |n| authenticated(n, true).is_some())
            .is_some(),
        "a second outbound stream was authenticated"
    );
    gw.stop();
}

/// A hand-driven S2S peer toward the gateway, in the clear or over TLS.
struct FakePeer {
    plain: Option<std::net::TcpStream>,
    tls: Option<rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>>,
    seen: String,
}

const GATEWAY_XMPP: &str = "127.0.10.100:5269";

fn header(from: &str) -> String {
    format!(
        "<?xml version='1.0'?><stream:stream xmlns='jabber:server' \
         xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' \
         from='{from}' to='contoso.test' version='1.0'>"
    )
}

impl FakePeer {
    fn connect(from: &str) -> FakePeer {
        let socket = std::net::TcpStream::connect(GATEWAY_XMPP).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut peer = FakePeer {
            plain: Some(socket),
            tls: None,
            seen: String::new(),
        };
        peer.send(&header(from));
        peer
    }

    fn send(&mut self, text: &str) {
        use std::io::Write;
        let result = match (&mut self.tls, &mut self.plain) {
            (Some(tls), _) => tls.write_all(text.as_bytes()).and_then(|_| tls.flush()),
            (None, Some(plain)) => plain.write_all(text.as_bytes()),
            _ => unreachable!(),
        };
        result.unwrap();
    }

    /// Reads until `needle` appears in what was received since the last call; returns that.
    fn read_until(&mut self, needle: &str) -> String {
        use std::io::Read;
        let deadline = Instant::now() + WAIT;
        let mut buf = [0u8; 4096];
        while !self.seen.contains(needle) {
            assert!(
                Instant::now() < deadline,
                "no `{needle}` from the gateway; got: {}",
                self.seen
            );
            let n = match (&mut self.tls, &mut self.plain) {
                (Some(tls), _) => tls.read(&mut buf),
                (None, Some(plain)) => plain.read(&mut buf),
                _ => unreachable!(),
            };
            match n {
                Ok(0) => break,
                Ok(n) => self.seen.push_str(&String::from_utf8_lossy(&buf[..n])),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => break,
            }
        }
        let end = self
            .seen
            .find(needle)
            .map(|i| i + needle.len())
            .unwrap_or_else(|| panic!("connection ended without `{needle}`: {}", self.seen));
        let got = self.seen[..end].to_string();
        self.seen.drain(..end);
        got
    }

    /// STARTTLS with `cert` as client certificate, then the stream restart; returns features.
    fn starttls(&mut self, testbed: &Testbed, cert: &str, from: &str) -> String {
        self.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
        self.read_until("<proceed");
        self.read_until("/>");
        let roots = xsgw::tls::load_roots(Path::new(testbed.get("PKI_CA_CERT"))).unwrap();
        let certs =
            xsgw::tls::load_certs(Path::new(testbed.get(&format!("PKI_{cert}_CERT")))).unwrap();
        let key = xsgw::tls::load_key(Path::new(testbed.get(&format!("PKI_{cert}_KEY")))).unwrap();
        let config = rustls::ClientConfig::builder_with_provider(xsgw::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(certs, key)
            .unwrap();
        let conn =
            rustls::ClientConnection::new(Arc::new(config), "contoso.test".try_into().unwrap())
                .unwrap();
        self.tls = Some(rustls::StreamOwned::new(conn, self.plain.take().unwrap()));
        self.send(&header(from));
        self.read_until("</stream:features>")
    }
}

fn no_stanza_reached_the_sink(gw: &InProcess) {
    std::thread::sleep(Duration::from_millis(200));
    let stanzas: Vec<_> = gw
        .notices
        .try_iter()
        .filter(|n| matches!(n, XmppNotice::Stanza(_)))
        .collect();
    assert!(stanzas.is_empty(), "nothing accepted: {stanzas:?}");
}

#[test]
fn fake_and_lying_peers_get_nothing_accepted() {
    let testbed = Testbed::up("s2s-fakes", &[]);
    let gw = InProcess::start(&testbed, &[]);

    // Claims gmail.test but cannot answer dialback: the gateway asks the real gmail.test
    // (Prosody, found by SRV), which says invalid; a stanza after that ends the stream.
    let mut fake = FakePeer::connect("gmail.test");
    let features = fake.read_until("</stream:features>");
    assert!(
        features.contains("urn:xmpp:features:dialback"),
        "{features}"
    );
    fake.send("<db:result from='gmail.test' to='contoso.test'>0123456789abcdef</db:result>");
    let verdict = fake.read_until("/>");
    assert!(
        verdict.contains("<db:result") && verdict.contains("invalid"),
        "{verdict}"
    );
    fake.send(
        "<message from='mallory@gmail.test' to='carol@contoso.test'><body>forged</body></message>",
    );
    let end = fake.read_until("</stream:stream>");
    assert!(end.contains("<not-authorized"), "{end}");

    // A domain without a [partner] section (allowlist): refused at the stream header.
    let mut stranger = FakePeer::connect("evil.test");
    let end = stranger.read_until("</stream:stream>");
    assert!(end.contains("<policy-violation"), "{end}");

    // Authenticated as gmail.test by SASL EXTERNAL (it holds gmail.pem), then lies in 'from'.
    let mut liar = FakePeer::connect("gmail.test");
    liar.read_until("</stream:features>");
    let features = liar.starttls(&testbed, "GMAIL", "gmail.test");
    assert!(
        features.contains("EXTERNAL"),
        "valid certificate: EXTERNAL offered: {features}"
    );
    liar.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>=</auth>");
    liar.read_until("<success");
    liar.send(&header("gmail.test"));
    liar.read_until("</stream:features>");
    liar.send(
        "<message from='eve@evil.test' to='carol@contoso.test'><body>forged</body></message>",
    );
    let end = liar.read_until("</stream:stream>");
    assert!(end.contains("<invalid-from"), "{end}");

    // A certificate from the right CA that names another domain: no EXTERNAL, dialback still.
    let mut rogue = FakePeer::connect("gmail.test");
    rogue.read_until("</stream:features>");
    let features = rogue.starttls(&testbed, "WRONGNAME", "gmail.test");
    assert!(!features.contains("EXTERNAL"), "{features}");
    assert!(
        features.contains("urn:xmpp:features:dialback"),
        "{features}"
    );

    no_stanza_reached_the_sink(&gw);
    gw.stop();
}

#[test]
fn required_and_disabled_policies_hold() {
    let testbed = Testbed::up("s2s-policies", &[]);

    // tls = required: STARTTLS is advertised as required and nothing else is accepted
    // before it; real Prosody (which does STARTTLS) still gets through.
    let gw = InProcess::start(&testbed, &["tls = required"]);
    let mut fake = FakePeer::connect("gmail.test");
    let features = fake.read_until("</stream:features>");
    assert!(features.contains("<required"), "{features}");
    assert!(
        !features.contains("urn:xmpp:features:dialback"),
        "{features}"
    );
    fake.send("<db:result from='gmail.test' to='contoso.test'>0123456789abcdef</db:result>");
    let end = fake.read_until("</stream:stream>");
    assert!(end.contains("<policy-violation"), "{end}");
    fake.send("<message from='x@gmail.test' to='carol@contoso.test'><body>x</body></message>");
    no_stanza_reached_the_sink(&gw);
    let (inbound, outbound) = both_directions(&testbed, &gw);
    assert!(inbound.1 && outbound.1, "TLS both ways");
    gw.stop();

    // dialback = disabled: not offered, and a db:result ends the stream.
    let gw = InProcess::start(&testbed, &["dialback = disabled"]);
    let mut fake = FakePeer::connect("gmail.test");
    let features = fake.read_until("</stream:features>");
    assert!(
        !features.contains("urn:xmpp:features:dialback"),
        "{features}"
    );
    fake.send("<db:result from='gmail.test' to='contoso.test'>0123456789abcdef</db:result>");
    let end = fake.read_until("</stream:stream>");
    assert!(!end.contains("valid"), "{end}");
    assert!(end.contains("<stream:error>"), "{end}");
    no_stanza_reached_the_sink(&gw);
    gw.stop();

    // max_per_partner = 1: a second authenticated stream from gmail.test is refused, the
    // first keeps working.
    let gw = InProcess::start(&testbed, &["max_per_partner = 1"]);
    let mut first = FakePeer::connect("gmail.test");
    first.read_until("</stream:features>");
    first.starttls(&testbed, "GMAIL", "gmail.test");
    first.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>=</auth>");
    first.read_until("<success");
    first.send(&header("gmail.test"));
    first.read_until("</stream:features>");
    let mut second = FakePeer::connect("gmail.test");
    second.read_until("</stream:features>");
    second.starttls(&testbed, "GMAIL", "gmail.test");
    second.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>=</auth>");
    let end = second.read_until("</stream:stream>");
    assert!(end.contains("<policy-violation"), "{end}");
    first.send(
        "<message from='a@gmail.test' to='carol@contoso.test'><body>still here</body></message>",
    );
    let mut seen = Vec::new();
    assert!(
        gw.wait_for(&mut seen, WAIT, |n| is_stanza_from(
            n,
            "gmail.test",
            "still here"
        ))
        .is_some(),
        "the first stream still carries stanzas: {seen:?}"
    );
    gw.stop();
}

fn bounced(n: &XmppNotice, to: &str) -> Option<String> {
    match n {
        XmppNotice::Bounced(e) if e.attr("from") == Some(to) => Some(e.to_stream_xml()),
        _ => None,
    }
}

#[test]
fn undeliverable_stanzas_bounce_to_their_sender() {
    let testbed = Testbed::up("s2s-bounce", &[]);
    // A server that accepts TCP and then says nothing (127.0.10.99), and a partner with no
    // DNS records at all.
    let silent = std::net::TcpListener::bind("127.0.10.99:5269").unwrap();
    let sections = "\n[partner silent.test]\nroute = 127.0.10.99:5269\n\n[partner nowhere.test]\n";
    let gw = InProcess::start_with(&testbed, &["stream_timeout = 2s"], sections);
    let mut seen = Vec::new();

    gw.send_chat("carol@contoso.test", "someone@nowhere.test", "one");
    let b = gw
        .wait_for(&mut seen, WAIT, |n| {
            bounced(n, "someone@nowhere.test").is_some()
        })
        .and_then(|n| bounced(&n, "someone@nowhere.test"))
        .expect("bounce from nowhere.test");
    assert!(
        b.contains("remote-server-not-found") && b.contains("to='carol@contoso.test'"),
        "{b}"
    );

    for i in 0..3 {
        gw.send_chat(
            "carol@contoso.test",
            "someone@silent.test",
            &format!("queued {i}"),
        );
    }
    let started = Instant::now();
    for _ in 0..3 {
        let b = gw
            .wait_for(&mut seen, WAIT, |n| {
                bounced(n, "someone@silent.test").is_some()
            })
            .and_then(|n| bounced(&n, "someone@silent.test"))
            .expect("every queued stanza bounces");
        assert!(b.contains("remote-server-timeout"), "{b}");
    }
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "after stream_timeout"
    );
    drop(silent);
    gw.stop();
}
