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
        text = text.replacen("[xmpp]\n", &added, 1);
        let path = testbed.dir.join("xsgw.ini");
        std::fs::write(&path, &text).unwrap();
        let (config, mut report) = xsgw::config::parse(&text, &path).unwrap();
        let credentials = xsgw::config::validate(&config, &mut report);
        assert!(!report.has_errors(), "{:?}", report.lines());
        let (sink, notices) = crossbeam_channel::bounded(1024);
        let gateway = Gateway::start_with(
            Arc::new(config),
            credentials.expect("credentials load"),
            GatewayOptions {
                xmpp_sink: Some(sink),
            },
        )
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
    let gw = InProcess::start(&testbed, &[]);
    let mut alice = User::login(&testbed.dir, "alice@gmail.test", None, 1);
    gw.send_chat("carol@contoso.test", "alice@gmail.test", "via alt1");
    let line = alice.next_message();
    assert!(line.contains("via alt1"), "alice received it: {line}");
    let mut seen = Vec::new();
    let outbound = gw
        .wait_for(&mut seen, WAIT, |n| authenticated(n, true).is_some())
        .and_then(|n| authenticated(&n, true))
        .expect("outbound authenticated");
    assert_eq!(outbound.2, "127.0.10.21:5269".parse().unwrap());
    gw.stop();
}
