//! `xsgw status` and the metrics endpoint against real peers: Prosody (gmail.test) and
//! Kamailio (the Access Edge) from the testbed (tests/testbed/README.md). One testbed, one
//! gateway, traffic both ways, then what an operator checks: the Edge connections and both
//! Prosody streams with their authentication methods, the same in `--json`, counters that
//! move with traffic, a metrics page `promtool check metrics` accepts whose counters move
//! too, a control socket only the service user can use (0600), and `xsgw status` saying
//! plainly that xsgw is not running once it stopped (exit 1).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::peers::{finals, json_str, requests, run_peer, stanzas, start_gateway, Peer};
use common::testbed::Testbed;
use common::{free_port, run_xsgw, stderr, stdout};

const SECOND: Duration = Duration::from_secs(1);

/// `xsgw status -c config [--json]`: (exit code, stdout, stderr).
fn status(config: &str, json: bool) -> (i32, String, String) {
    let mut args = vec!["status", "-c", config];
    if json {
        args.push("--json");
    }
    let out = run_xsgw(&args);
    (out.status.code().unwrap_or(-1), stdout(&out), stderr(&out))
}

/// Polls `xsgw status` (text) until `ready` says yes, at most 20 s; the last answer.
fn status_until(config: &str, what: &str, ready: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (code, out, err) = status(config, false);
        assert_eq!(code, 0, "xsgw status answers while xsgw runs: {err}");
        if ready(&out) {
            return out;
        }
        assert!(
            Instant::now() < deadline,
            "{what}; xsgw status said:\n{out}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// GET /metrics: (status line, body).
fn scrape(addr: &str) -> (String, String) {
    let mut s = TcpStream::connect(addr).expect("the metrics endpoint accepts connections");
    s.set_read_timeout(Some(5 * SECOND)).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: xsgw\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    (
        head.lines().next().unwrap_or_default().to_owned(),
        body.to_owned(),
    )
}

/// The value of the sample `name{labels}` (exactly as written) in an exposition.
fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no sample {series} in:\n{metrics}"))
        .trim()
        .parse()
        .unwrap()
}

/// A number after `"key":` in a JSON text (the first one).
fn json_number(json: &str, key: &str) -> u64 {
    let at = json
        .find(&format!("\"{key}\":"))
        .unwrap_or_else(|| panic!("no {key} in {json}"));
    json[at + key.len() + 3..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap()
}

/// The JSON objects of the array `key` (flat objects only), as text.
fn json_objects(json: &str, key: &str) -> Vec<String> {
    let at = json
        .find(&format!("\"{key}\":["))
        .unwrap_or_else(|| panic!("no {key} in {json}"));
    let rest = &json[at + key.len() + 4..];
    let end = rest.find(']').unwrap();
    rest[..end]
        .split("},{")
        .filter(|o| !o.is_empty())
        .map(|o| o.trim_matches(['{', '}']).to_owned())
        .collect()
}

fn field(object: &str, key: &str) -> String {
    json_str(&format!("{{{}}}", object.replace("\":", "\": ")), key).unwrap_or_default()
}

/// `promtool check metrics` on `metrics`: (success, what it said).
fn promtool(metrics: &str) -> (bool, String) {
    let promtool = ["/usr/bin/promtool", "/usr/local/bin/promtool"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    let promtool = promtool.unwrap_or_else(|| {
        // The testbed installs it (package prometheus); try once more, then fail loudly.
        let _ = Command::new(common::testbed::PYTHON)
            .arg(common::testbed::script())
            .arg("install")
            .status();
        let p = PathBuf::from("/usr/bin/promtool");
        assert!(
            p.exists(),
            "promtool is missing and `testbed.py install` could not install Debian's prometheus package"
        );
        p
    });
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn status_and_metrics_show_the_live_gateway_and_move_with_traffic() {
    let testbed = Testbed::up("status", &[]);
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let config = testbed.gateway_config("info").replacen(
        "[log]\n",
        &format!("[metrics]\nlisten = {metrics_addr}\n\n[log]\n"),
        1,
    );
    let state_dir = config
        .lines()
        .find_map(|l| l.strip_prefix("state_dir = "))
        .unwrap()
        .to_owned();
    let mut gw = start_gateway(&testbed, &config);
    let ini = testbed.dir.join("xsgw.ini");
    let ini = ini.to_str().unwrap();

    // Only the service user may ask.
    let socket = PathBuf::from(&state_dir).join("control.sock");
    let mode = std::fs::metadata(&socket)
        .expect("the control socket exists under state_dir")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the control socket is mode 0600");

    // The gateway's own connection to the Edge shows once it is up.
    let before = status_until(ini, "the outbound Edge connection never showed", |s| {
        s.contains("(ours up)")
    });
    assert!(
        before.starts_with("xsgw ") && before.contains(&format!("configuration: {ini}")),
        "version, uptime and the configuration file: {before}"
    );
    let (line, metrics_before) = scrape(&metrics_addr);
    assert_eq!(line, "HTTP/1.1 200 OK");
    let delivered_before = sample(
        &metrics_before,
        "xsgw_messages_total{direction=\"sip_to_xmpp\",outcome=\"delivered\"}",
    );

    // A local client that connects and says nothing, on both, holds up neither the
    // gateway nor the next `xsgw status` for more than the 2 s request deadline.
    let silent_control = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    let silent_scraper = TcpStream::connect(&metrics_addr).unwrap();

    // SIP → XMPP: bob (SIP) writes to alice: an outbound stream to gmail.test.
    let lines = run_peer(
        &testbed,
        &[
            "sip-send",
            "--timeout",
            "15",
            "--to",
            "sip:alice@gmail.test",
            "--body",
            "status test",
        ],
    );
    assert_eq!(
        finals(&lines[0]).last().copied().flatten(),
        Some(200),
        "bob's message is accepted: {lines:?}"
    );
    // XMPP → SIP: alice (XMPP) writes to bob: an inbound stream from gmail.test.
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
            "hello from xmpp",
            "--count",
            "1",
            "--timeout",
            "6",
        ],
    );
    alice.wait_ready();
    let seen = users.finish(20 * SECOND);
    assert!(
        requests(&seen, "MESSAGE")
            .iter()
            .any(|l| json_str(l, "body").as_deref() == Some("hello from xmpp")),
        "bob gets alice's message: {seen:?}"
    );
    // alice waits out her timeout (nobody answers her).
    let _ = stanzas(&alice.finish(20 * SECOND), "message");

    drop((silent_control, silent_scraper));

    // Both Prosody streams, each with how it was authenticated.
    let text = status_until(ini, "both gmail.test streams never showed", |s| {
        s.lines().any(|l| {
            l.contains("gmail.test") && l.contains(" inbound ") && l.contains("authenticated")
        }) && s.lines().any(|l| {
            l.contains("gmail.test") && l.contains(" outbound ") && l.contains("authenticated")
        })
    });
    for direction in [" inbound ", " outbound "] {
        let line = text
            .lines()
            .find(|l| l.contains("gmail.test") && l.contains(direction))
            .unwrap();
        assert!(
            line.contains("dialback") || line.contains("sasl-external"),
            "the{direction}stream says how it was authenticated: {line}"
        );
    }
    assert!(
        text.contains("messages sip_to_xmpp  delivered  1")
            || text.contains("messages sip_to_xmpp  delivered  2"),
        "the delivered SIP → XMPP message is counted: {text}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains("messages xmpp_to_sip  delivered  ") && !l.ends_with(" 0")),
        "the delivered XMPP → SIP message is counted: {text}"
    );
    assert!(
        text.contains("Last request from the Edge, per partner domain:\n  gmail.test"),
        "when the Edge last sent a request for gmail.test: {text}"
    );

    // The JSON says the same.
    let (code, json, err) = status(ini, true);
    assert_eq!(code, 0, "{err}");
    println!("xsgw status:\n{text}\nxsgw status --json:\n{json}");
    assert_eq!(json.lines().count(), 1, "one JSON object: {json}");
    let streams = json_objects(&json, "streams");
    for direction in ["inbound", "outbound"] {
        let s = streams
            .iter()
            .find(|o| field(o, "partner") == "gmail.test" && field(o, "direction") == direction)
            .unwrap_or_else(|| panic!("the JSON has the {direction} gmail.test stream: {json}"));
        let auth = field(s, "auth");
        let in_text = text.lines().any(|l| {
            l.contains("gmail.test") && l.contains(&format!(" {direction} ")) && l.contains(&auth)
        });
        assert!(
            !auth.is_empty() && in_text,
            "the {direction} stream's authentication ({auth}) is the text's: {json}\n{text}"
        );
    }
    let edges = json_objects(&json, "edge");
    assert!(
        edges.iter().any(|e| field(e, "direction") == "outbound"
            && field(e, "tls").starts_with("TLSv1_")
            && !field(e, "certificate").is_empty()),
        "the Edge connection with its TLS version and certificate name: {json}"
    );
    assert!(
        json_number(&json, "edge_requests_in") >= 1 && json_number(&json, "edge_requests_out") >= 1,
        "requests from and to the Edge are counted: {json}"
    );
    for edge in &edges {
        let peer = field(edge, "peer");
        assert!(
            text.contains(&peer),
            "Edge connection {peer} is in the text too"
        );
    }

    // The metrics: valid for promtool, and the counters moved.
    let (line, metrics) = scrape(&metrics_addr);
    assert_eq!(line, "HTTP/1.1 200 OK");
    println!("GET /metrics:\n{metrics}");
    let (ok, said) = promtool(&metrics);
    assert!(
        ok,
        "promtool check metrics accepts the page: {said}\n{metrics}"
    );
    let delivered = sample(
        &metrics,
        "xsgw_messages_total{direction=\"sip_to_xmpp\",outcome=\"delivered\"}",
    );
    assert!(
        delivered > delivered_before,
        "xsgw_messages_total moved with traffic: {delivered_before} → {delivered}"
    );
    assert!(
        sample(
            &metrics,
            "xsgw_messages_total{direction=\"xmpp_to_sip\",outcome=\"delivered\"}"
        ) >= 1.0
    );
    assert!(
        sample(
            &metrics,
            "xsgw_delivery_latency_seconds_count{direction=\"sip_to_xmpp\"}"
        ) >= 1.0,
        "the SIP request's delivery latency is measured"
    );
    assert!(metrics.lines().any(|l| l.starts_with(
        "xsgw_s2s_streams{partner=\"gmail.test\",direction=\"inbound\",state=\"authenticated\"} "
    )));
    assert_eq!(sample(&metrics, "xsgw_edge_up"), 1.0);
    let (line, _) = {
        let mut s = TcpStream::connect(&metrics_addr).unwrap();
        s.set_read_timeout(Some(5 * SECOND)).unwrap();
        s.write_all(b"GET /admin HTTP/1.1\r\n\r\n").unwrap();
        let mut a = String::new();
        s.read_to_string(&mut a).unwrap();
        (a.lines().next().unwrap_or_default().to_owned(), a)
    };
    assert_eq!(line, "HTTP/1.1 404 Not Found", "only /metrics is served");

    // xsgw diagnose's `live` asks the running gateway too: its streams, and when the Edge
    // last sent us a request for gmail.test (the Edge's route for that partner is us).
    let out = run_xsgw(&["diagnose", "-c", ini, "--only", "live"]);
    let live = stdout(&out);
    assert!(
        live.starts_with("ok    live ")
            && live.contains("Edge connections: ")
            && live.contains("gmail.test inbound ")
            && live.contains("last request from the Edge per partner domain: gmail.test "),
        "diagnose's live check shows what xsgw status shows: {live}"
    );

    // Stopped: said plainly, exit 1.
    gw.signal("TERM");
    assert_eq!(gw.wait_exit(10 * SECOND), 0);
    assert!(
        !socket.exists(),
        "the control socket is removed at shutdown"
    );
    let (code, out, err) = status(ini, false);
    assert_eq!(code, 1, "xsgw status exits 1 when xsgw is not running");
    assert!(
        err.contains("xsgw is not running") && out.is_empty(),
        "it says so: {err}"
    );
}
