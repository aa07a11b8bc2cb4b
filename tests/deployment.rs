//! xsgw in the deployment it is built for, with real peers from the testbed: Kamailio as the
//! Access Edge reaches xsgw over mutual TLS when a SIP user writes to gmail.test, and Prosody
//! (gmail.test) finds xsgw by SRV, opens a server-to-server stream to it, authenticates and
//! delivers a stanza.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::testbed::{script, Testbed, PYTHON};

struct Gateway {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl Gateway {
    fn start(testbed: &Testbed) -> Gateway {
        let config = testbed.dir.join("xsgw.ini");
        std::fs::write(&config, testbed.gateway_config("debug")).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_xsgw"))
            .args(["run", "-c"])
            .arg(&config)
            .env_remove("RUST_LOG")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&log);
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let gw = Gateway { child, log };
        gw.wait_for("started: XMPP on 127.0.10.100:5269");
        gw
    }

    fn wait_for(&self, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(l) = self.log.lock().unwrap().iter().find(|l| l.contains(text)) {
                return l.clone();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "no xsgw log line with `{text}`:\n{}",
            self.log.lock().unwrap().join("\n")
        );
    }

    fn stop(mut self) -> i32 {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            assert!(Instant::now() < deadline, "xsgw did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn testbed_json(testbed: &Testbed, args: &[&str]) -> String {
    let out = Command::new(PYTHON)
        .arg(script())
        .args(args)
        .arg("--dir")
        .arg(&testbed.dir)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn real_peers_reach_the_gateway_on_both_legs() {
    let testbed = Testbed::up("deployment", &[]);
    let gw = Gateway::start(&testbed);

    // SIP leg: bob@contoso.test writes to alice@gmail.test; Kamailio routes gmail.test to
    // gw.contoso.test over TLS with the Edge certificate, which xsgw verifies.
    let result = testbed_json(
        &testbed,
        &["sip-send", "--to", "sip:alice@gmail.test", "--timeout", "3"],
    );
    assert!(result.contains("\"to\""), "sip-send ran: {result}");
    let line = gw.wait_for("mutual TLS established");
    assert!(
        line.contains("Edge certificate names sip.contoso.test"),
        "{line}"
    );
    assert!(
        line.contains("sip inbound 127.0.10.30:"),
        "the Edge connects from its own address: {line}"
    );

    // XMPP leg: alice@gmail.test writes to someone@contoso.test; Prosody finds
    // _xmpp-server._tcp.contoso.test -> xmpp.contoso.test:5269 (127.0.10.100) through the
    // testbed DNS and opens a stream to xsgw.
    let result = testbed_json(
        &testbed,
        &[
            "xmpp-send",
            "--sender",
            "alice@gmail.test",
            "--receiver",
            "bob@gmail.test",
            "--remote",
            "carol@contoso.test",
            "--wait",
            "2",
        ],
    );
    assert!(
        result.contains("\"login\": {\"alice\": true"),
        "alice logged in: {result}"
    );
    gw.wait_for("xmpp inbound connection");
    // Prosody authenticates (SASL EXTERNAL with the test CA's gmail.pem) and its stanza is
    // accepted by the router; no translator yet, so alice gets it back as an error (never
    // dropped in silence), over xsgw's own outbound stream to gmail.test.
    let line = gw.wait_for("gmail.test authenticated toward contoso.test");
    assert!(line.contains("SaslExternal"), "{line}");
    gw.wait_for("xmpp inbound gmail.test: <message/> for contoso.test not delivered");
    assert!(
        result.contains("\"from\": \"carol@contoso.test\"")
            && result.contains("service-unavailable"),
        "alice got her message back as an error: {result}"
    );
    assert_eq!(gw.stop(), 0);
}
