//! Reload without a restart (`xsgw run` as a process, SIGHUP and `xsgw reload`): what an
//! operator sees in the log and what users on both sides see. The testbed's real peers
//! (Prosody as gmail.test and googlemail.test, Kamailio as the Edge) for what involves a
//! partner; a throwaway PKI without peers for the command and the log level.

mod common;

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::peers::{finals, json_str, requests, run_peer, start_gateway, Peer};
use common::process::Running;
use common::testbed::Testbed;
use common::{free_port, Pki};

const SECOND: Duration = Duration::from_secs(1);

/// `sip-send` from bob@contoso.test through the Edge; the final status (`None`: none came).
fn sip_send(testbed: &Testbed, to: &str, body: &str) -> Option<i64> {
    let lines = run_peer(
        testbed,
        &["sip-send", "--timeout", "15", "--to", to, "--body", body],
    );
    assert_eq!(lines.len(), 1, "sip-send prints one line: {lines:?}");
    finals(&lines[0]).last().copied().flatten()
}

/// Rewrites the gateway's configuration file and sends SIGHUP; waits for the outcome line.
fn reload(gw: &Running, path: &Path, text: &str, outcome: &str) -> String {
    let before = gw.log_lines().len();
    std::fs::write(path, text).unwrap();
    gw.signal("HUP");
    let deadline = Instant::now() + 20 * SECOND;
    while Instant::now() < deadline {
        if let Some(line) = gw
            .log_lines()
            .into_iter()
            .skip(before)
            .find(|l| l.contains(outcome))
        {
            return line;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!(
        "no `{outcome}` after SIGHUP; log:\n{}",
        gw.log_lines().join("\n")
    );
}

fn count(gw: &Running, texts: &[&str]) -> usize {
    gw.log_lines()
        .iter()
        .filter(|l| texts.iter().all(|t| l.contains(t)))
        .count()
}

/// Local ports of the established TCP connections to `peer` (`ss`, the netstat view).
fn established_to(peer: &str) -> Vec<String> {
    let out = Command::new("ss")
        .args(["-tnH", "state", "established", "dst", peer])
        .output()
        .expect("ss (iproute2) runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2).map(str::to_owned))
        .collect()
}

#[test]
fn a_broken_file_changes_nothing_and_a_new_partner_federates_without_dropping_the_stream() {
    let testbed = Testbed::up("reload-add", &[]);
    // gmail.test only: googlemail.test (the same Prosody) is not federated yet.
    let first = testbed
        .gateway_config("info")
        .replace("aliases = googlemail.test\n", "");
    let gw = start_gateway(&testbed, &first);
    let path = testbed.dir.join("xsgw.ini");

    assert_eq!(
        sip_send(&testbed, "sip:alice@gmail.test", "before"),
        Some(200),
        "bob's message to alice@gmail.test is delivered"
    );
    gw.wait_for("xmpp outbound contoso.test → gmail.test: authenticated");
    let prosody = "127.0.10.5:5269";
    let ports = established_to(prosody);
    assert!(
        !ports.is_empty(),
        "the stream to Prosody is established (ss)"
    );
    assert_eq!(
        sip_send(&testbed, "sip:carol@googlemail.test", "too early"),
        Some(404),
        "googlemail.test is not federated before the reload"
    );

    // A file with two errors: nothing changes, each error is logged with its line.
    let broken = format!("{first}[partner googlemail.test]\nsasl = sometimes\nfrobnicate = 1\n");
    let refused = reload(&gw, &path, &broken, "not reloaded");
    assert!(
        refused.contains("has 2 errors") && refused.contains("still running"),
        "{refused}"
    );
    let lines = broken.lines().count();
    for (line, what) in [(lines - 1, "sasl"), (lines, "frobnicate")] {
        let wanted = format!("xsgw.ini:{line}: error: [partner googlemail.test] {what}");
        assert_eq!(
            count(&gw, &[&wanted]),
            1,
            "one log line for the error at line {line}; log:\n{}",
            gw.log_lines().join("\n")
        );
    }
    assert_eq!(
        sip_send(&testbed, "sip:carol@googlemail.test", "still too early"),
        Some(404),
        "the broken file did not add googlemail.test"
    );

    // The same partner, written correctly: applied, said in one line.
    let added = format!("{first}[partner googlemail.test]\n");
    let line = reload(&gw, &path, &added, "reloaded /");
    assert!(line.contains("partners +googlemail.test"), "{line}");
    assert!(!line.contains("needs a restart"), "{line}");
    assert_eq!(
        sip_send(&testbed, "sip:carol@googlemail.test", "now federated"),
        Some(200),
        "bob's message to carol@googlemail.test is delivered after the reload"
    );
    assert_eq!(
        sip_send(&testbed, "sip:alice@gmail.test", "after"),
        Some(200),
        "alice@gmail.test still gets bob's messages"
    );
    // The stream to gmail.test was not dropped: one connection for the whole test.
    assert_eq!(
        count(
            &gw,
            &["xmpp outbound contoso.test → gmail.test: connected to"]
        ),
        1,
        "one outbound connection to gmail.test before and after; log:\n{}",
        gw.log_lines().join("\n")
    );
    assert_eq!(
        count(
            &gw,
            &["xmpp outbound contoso.test → gmail.test: stream via"]
        ),
        0,
        "the stream to gmail.test never ended"
    );
    let after = established_to(prosody);
    for port in &ports {
        assert!(
            after.contains(port),
            "the connection from {port} to Prosody is still established: {after:?}"
        );
    }
    drop(gw);
}

/// A partner server that accepts TCP and reads, never answering the stream header: stanzas
/// for it wait in xsgw. Returns its port and what it read when the connection ended.
fn silent_partner() -> (u16, std::sync::mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.30.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let Ok((mut socket, _)) = listener.accept() else {
            return;
        };
        let _ = socket.set_read_timeout(Some(30 * SECOND));
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = socket.read(&mut buf) {
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
        }
        let _ = tx.send(String::from_utf8_lossy(&seen).into_owned());
    });
    (port, rx)
}

#[test]
fn removing_partners_closes_their_streams_and_answers_what_waited() {
    let testbed = Testbed::up("reload-remove", &[]);
    let (port, partner_saw) = silent_partner();
    // jabber.test: the Edge routes it to the gateway; here its server never answers.
    let first = format!(
        "{}[partner jabber.test]\nroute = 127.0.30.1:{port}\n",
        testbed.gateway_config("info")
    );
    let gw = start_gateway(&testbed, &first);
    let path = testbed.dir.join("xsgw.ini");

    // Streams both ways with gmail.test: bob writes to alice, alice writes to bob.
    assert_eq!(
        sip_send(&testbed, "sip:alice@gmail.test", "hello"),
        Some(200)
    );
    let users = Peer::start(&testbed, &["sip-recv", "--count", "1", "--timeout", "15"]);
    users.wait_ready();
    let alice = Peer::start(
        &testbed,
        &[
            "xmpp-recv",
            "--user",
            "alice@gmail.test",
            "--send",
            "bob@contoso.test",
            "--body",
            "hello bob",
            "--count",
            "0",
            "--timeout",
            "3",
        ],
    );
    let got = users.finish(20 * SECOND);
    assert!(
        requests(&got, "MESSAGE")
            .iter()
            .any(|l| json_str(l, "body").as_deref() == Some("hello bob")),
        "bob gets alice's message over gmail.test's inbound stream: {got:?}"
    );
    alice.finish(10 * SECOND);
    gw.wait_for("gmail.test authenticated toward contoso.test");

    // bob's message to jabber.test waits for a stream that never comes up.
    let waiting = Peer::start(
        &testbed,
        &[
            "sip-send",
            "--timeout",
            "15",
            "--to",
            "sip:x@jabber.test",
            "--body",
            "waiting",
        ],
    );
    gw.wait_for("xmpp outbound contoso.test → jabber.test: connected to");

    // Both partners removed: gmail.test's streams close, the waiting message is answered.
    let removed = first
        .replace("[partner gmail.test]\naliases = googlemail.test\n", "")
        .replace(
            &format!("[partner jabber.test]\nroute = 127.0.30.1:{port}\n"),
            "",
        );
    let t0 = Instant::now();
    let line = reload(&gw, &path, &removed, "reloaded /");
    assert!(line.contains("partners -gmail.test -jabber.test"), "{line}");
    let result = waiting.finish(20 * SECOND);
    let status = finals(&result.join("\n")).last().copied().flatten();
    assert!(
        matches!(status, Some(code) if code >= 400),
        "bob's waiting message gets an error response, not silence: {result:?}"
    );
    assert!(
        t0.elapsed() < 10 * SECOND,
        "answered at the reload, not at a timeout ({:?})",
        t0.elapsed()
    );
    let said = partner_saw
        .recv_timeout(10 * SECOND)
        .expect("the silent partner's connection was closed");
    assert!(
        said.contains("<stream:stream") && said.contains("</stream:stream>"),
        "xsgw closed its stream to jabber.test politely: {said}"
    );
    gw.wait_for(
        "xmpp outbound contoso.test → gmail.test: closing: refused by the reloaded configuration",
    );
    let inbound =
        gw.wait_for("closing the stream of gmail.test: refused by the reloaded configuration");
    assert!(inbound.contains("xmpp inbound"), "{inbound}");
    assert_eq!(
        sip_send(&testbed, "sip:alice@gmail.test", "after"),
        Some(404),
        "gmail.test is not federated any more"
    );
    drop(gw);
}

fn pki_gateway(pki: &Pki, level: &str) -> (Running, String, u16) {
    let xmpp = free_port();
    let text = pki
        .config(
            &format!("127.0.0.1:{xmpp}"),
            &format!("127.0.0.1:{}", free_port()),
            "sip.contoso.test:5061",
        )
        .replace("level = debug", &format!("level = {level}"));
    let path = pki.write_config("xsgw.ini", &text);
    let gw = Running::start(Path::new(&path), Some(&pki.dir.path("xsgw.pid")));
    gw.wait_for("started: XMPP on");
    (gw, text, xmpp)
}

#[test]
fn xsgw_reload_checks_first_and_signals_only_a_usable_file() {
    let pki = Pki::new("reload-cmd");
    let (gw, text, xmpp) = pki_gateway(&pki, "info");
    let pidfile = pki.dir.path("xsgw.pid");
    let broken = pki.write_config("broken.ini", &format!("{text}[xmpp]\nmax_stanza = lots\n"));
    let out = common::run_xsgw(&[
        "reload",
        "-c",
        &broken,
        "--pidfile",
        pidfile.to_str().unwrap(),
    ]);
    let stderr = common::stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("broken.ini:"),
        "the error with its line: {stderr}"
    );
    assert!(stderr.contains("not signalled"), "{stderr}");
    std::thread::sleep(SECOND / 2);
    assert_eq!(
        count(&gw, &["SIGHUP received"]),
        0,
        "xsgw was not signalled"
    );

    // A usable file with a new listen address: reloaded, the address needs a restart.
    let moved = pki.write_config(
        "xsgw.ini",
        &text.replace(
            &format!("127.0.0.1:{xmpp}"),
            &format!("127.0.0.1:{}", free_port()),
        ),
    );
    let out = common::run_xsgw(&[
        "reload",
        "-c",
        &moved,
        "--pidfile",
        pidfile.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", common::stderr(&out));
    let line = gw.wait_for("reloaded /");
    assert!(line.contains("needs a restart: [xmpp] listen"), "{line}");
    assert!(
        TcpStream::connect(("127.0.0.1", xmpp)).is_ok(),
        "xsgw still listens on the old address"
    );
}

#[test]
fn a_log_level_change_takes_effect_at_the_reload() {
    let pki = Pki::new("reload-level");
    let (gw, text, xmpp) = pki_gateway(&pki, "info");
    let path = pki.dir.path("xsgw.ini");
    // The router logs a closed connection at debug level.
    let debug_line = "connection";
    let ended = |gw: &Running| count(gw, &["DEBUG", debug_line, "ended after"]);
    drop(TcpStream::connect(("127.0.0.1", xmpp)).unwrap());
    gw.wait_for("closed: connection closed");
    std::thread::sleep(SECOND / 2);
    assert_eq!(ended(&gw), 0, "no debug line at level info");

    let line = reload(
        &gw,
        &path,
        &text.replace("level = info", "level = debug"),
        "reloaded /",
    );
    assert!(line.contains("[log] level info→debug"), "{line}");
    drop(TcpStream::connect(("127.0.0.1", xmpp)).unwrap());
    let deadline = Instant::now() + 10 * SECOND;
    while ended(&gw) == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        ended(&gw),
        1,
        "debug lines appear after the reload; log:\n{}",
        gw.log_lines().join("\n")
    );
}
