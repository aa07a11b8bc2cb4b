//! Attack: steering xsgw at internal hosts (SSRF) and scanning ports through it, in open
//! federation. The attacker is an unauthenticated S2S peer that sends `db:result` for a
//! domain of its choice; the domain's DNS (a scripted server, `[dns] servers`) points at
//! loopback and private addresses, by SRV, by the additional section, by the A/AAAA fallback,
//! or the domain is an IP literal. The real `xsgw` binary runs, as an operator would run it.
//!
//! What a user checks: with `private_addresses = refuse` (the default) no connection reaches
//! the listeners the test opens where DNS points, the peer gets the same answer every time
//! (`remote-server-not-found`) and the log says why; a `[partner] route` to loopback is still
//! used. With `allow`, the loopback listener is connected to (so the test can fail), yet a
//! refused-by-rule target (the Edge's address), a name pinned only in `[hosts]`, a closed
//! port and a silent one all give the peer that same answer.
//!
//! Everything listens on 127.0.0.0/8 outside the testbed's 127.0.10.0/24; xsgw listens on
//! 127.0.31.10 so that 127.0.0.1 is not one of its own addresses.

mod common;
#[allow(dead_code)]
#[path = "../src/dns/fake_server.rs"]
mod fake_server;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::process::Running;
use common::{free_port, Pki};
use fake_server::{FakeDns, Reply};
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

const GATEWAY_IP: &str = "127.0.31.10";
/// Where `[hosts]` puts the Edge (sip.contoso.test): never connected to for a partner.
const EDGE_IP: &str = "127.0.31.2";
/// The fallback A record and the IP-literal domain: port 5269 on it.
const LITERAL_IP: &str = "127.0.31.1";

/// A TCP listener that counts the connections made to it and closes each at once.
struct Recorder {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
}

impl Recorder {
    fn bind(addr: &str) -> Recorder {
        let listener = TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&accepted);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                count.fetch_add(1, Ordering::SeqCst);
                drop(conn);
            }
        });
        Recorder { addr, accepted }
    }

    fn count(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// A port that accepts no connection and answers no SYN: a listener whose accept queue is
/// full (backlog 0, one connection queued), held by a python3 child the test kills.
struct Silent {
    child: Child,
    port: u16,
}

impl Silent {
    fn start() -> Silent {
        let script = "import socket,sys\n\
            l=socket.socket(); l.bind(('127.0.0.1',0)); l.listen(0)\n\
            f=socket.create_connection(l.getsockname())\n\
            print(l.getsockname()[1], flush=True)\n\
            sys.stdin.read()\n";
        let mut child = Command::new(common::testbed::PYTHON)
            .args(["-c", script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line.trim().parse().expect("python3 printed its port");
        Silent { child, port }
    }
}

impl Drop for Silent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The scripted zone: `evil.test` names pointing wherever the test needs.
struct Zone {
    loopback_port: u16,
    hint_port: u16,
    edge_port: u16,
    pinned_port: u16,
    closed_port: u16,
    silent_port: u16,
}

fn start_dns(zone: Zone) -> FakeDns {
    FakeDns::start(move |query, _| {
        use fake_server as f;
        let mut reply = f::response(query, ResponseCode::NoError);
        let name = f::qname(query);
        let srv = |reply: &mut hickory_proto::op::Message, target: &str, port: u16| {
            reply.add_answer(f::srv(&name, 0, 0, port, target));
        };
        match (name.as_str(), f::qtype(query)) {
            ("_xmpp-server._tcp.loopback.evil.test.", RecordType::SRV) => {
                srv(&mut reply, "a.loopback.evil.test.", zone.loopback_port)
            }
            ("a.loopback.evil.test.", RecordType::A) => {
                reply.add_answer(f::a("a.loopback.evil.test.", "127.0.0.1"));
            }
            ("_xmpp-server._tcp.private.evil.test.", RecordType::SRV) => {
                srv(&mut reply, "a.private.evil.test.", 6379)
            }
            ("a.private.evil.test.", RecordType::A) => {
                reply.add_answer(f::a("a.private.evil.test.", "10.255.255.1"));
                reply.add_answer(f::a("a.private.evil.test.", "192.168.255.1"));
            }
            ("a.private.evil.test.", RecordType::AAAA) => {
                reply.add_answer(f::aaaa("a.private.evil.test.", "fd00::1"));
            }
            ("_xmpp-server._tcp.hint.evil.test.", RecordType::SRV) => {
                srv(&mut reply, "h.hint.evil.test.", zone.hint_port);
                reply.add_additional(f::a("h.hint.evil.test.", "127.0.0.1"));
            }
            ("fallback.evil.test.", RecordType::A) => {
                reply.add_answer(f::a("fallback.evil.test.", LITERAL_IP));
            }
            ("_xmpp-server._tcp.edge.evil.test.", RecordType::SRV) => {
                srv(&mut reply, "e.edge.evil.test.", zone.edge_port)
            }
            ("e.edge.evil.test.", RecordType::A) => {
                reply.add_answer(f::a("e.edge.evil.test.", EDGE_IP));
            }
            // Pinned in xsgw's [hosts] only: DNS does not know it.
            ("_xmpp-server._tcp.pinned.evil.test.", RecordType::SRV) => {
                srv(&mut reply, "p.pinned.evil.test.", zone.pinned_port)
            }
            ("_xmpp-server._tcp.closed.evil.test.", RecordType::SRV) => {
                srv(&mut reply, "c.closed.evil.test.", zone.closed_port)
            }
            ("c.closed.evil.test.", RecordType::A) => {
                reply.add_answer(f::a("c.closed.evil.test.", "127.0.0.1"));
            }
            ("_xmpp-server._tcp.silent.evil.test.", RecordType::SRV) => {
                srv(&mut reply, "s.silent.evil.test.", zone.silent_port)
            }
            ("s.silent.evil.test.", RecordType::A) => {
                reply.add_answer(f::a("s.silent.evil.test.", "127.0.0.1"));
            }
            (n, _) if n.ends_with(".evil.test.") && !n.starts_with("_xmpp") => {
                // Known names without this record type: no data.
                if !matches!(
                    n,
                    "a.loopback.evil.test."
                        | "a.private.evil.test."
                        | "e.edge.evil.test."
                        | "c.closed.evil.test."
                        | "s.silent.evil.test."
                        | "fallback.evil.test."
                ) {
                    reply.metadata.response_code = ResponseCode::NXDomain;
                }
            }
            _ => reply.metadata.response_code = ResponseCode::NXDomain,
        }
        vec![Reply::Message(reply)]
    })
}

/// xsgw in open federation with the scripted DNS; `extra` is appended.
fn start_gateway(pki: &Pki, dns: &FakeDns, private: &str, extra: &str) -> (Running, SocketAddr) {
    let xmpp: SocketAddr = format!("{GATEWAY_IP}:{}", free_port()).parse().unwrap();
    let text = pki
        .config(
            &xmpp.to_string(),
            &format!("{GATEWAY_IP}:{}", free_port()),
            "sip.contoso.test:5061",
        )
        .replacen(
            "stream_timeout = 3s\n",
            "stream_timeout = 5s\nconnect_timeout = 1s\n",
            1,
        )
        .replacen("level = debug", "level = info", 1);
    let text = format!(
        "{text}
[federation]
mode = open
private_addresses = {private}

[hosts]
sip.contoso.test = {EDGE_IP}
p.pinned.evil.test = 127.0.0.1

[dns]
servers = {dns}
timeout = 1s
{extra}",
        dns = dns.addr
    );
    let path = pki.write_config(&format!("xsgw-{private}.ini"), &text);
    let running = Running::start(Path::new(&path), None);
    running.wait_for("started: XMPP on");
    (running, xmpp)
}

const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:server' \
    xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' \
    from='attacker.evil.test' to='contoso.test' version='1.0'>";

fn read_until(socket: &mut TcpStream, seen: &mut String, any_of: &[&str]) {
    let mut buf = [0u8; 4096];
    while !any_of.iter().any(|w| seen.contains(w)) {
        let n = socket
            .read(&mut buf)
            .unwrap_or_else(|e| panic!("reading: {e}; so far: {seen}"));
        assert!(n > 0, "closed before {any_of:?}: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
}

/// An unauthenticated peer asks xsgw to verify a dialback key for `domain`; returns xsgw's
/// answer with the domain replaced by `DOMAIN`, and how long it took.
fn dialback_for(gateway: SocketAddr, domain: &str) -> (String, Duration) {
    let mut socket = TcpStream::connect(gateway).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    socket.write_all(HEADER.as_bytes()).unwrap();
    let mut seen = String::new();
    read_until(&mut socket, &mut seen, &["</stream:features>"]);
    let start = seen.len();
    let started = Instant::now();
    socket
        .write_all(
            format!("<db:result from='{domain}' to='contoso.test'>0123456789abcdef</db:result>")
                .as_bytes(),
        )
        .unwrap();
    read_until(
        &mut socket,
        &mut seen,
        &["</db:result>", "</stream:stream>"],
    );
    let took = started.elapsed();
    let answer = seen[start..].replace(domain, "DOMAIN");
    let _ = socket.write_all(b"</stream:stream>");
    (answer, took)
}

#[test]
fn refused_targets_get_no_connection_and_the_same_answer() {
    let pki = Pki::new("ssrf-refuse");
    let loopback = Recorder::bind("127.0.0.1:0");
    let hint = Recorder::bind("127.0.0.1:0");
    let literal = Recorder::bind(&format!("{LITERAL_IP}:5269"));
    let routed = Recorder::bind("127.0.0.1:0");
    let dns = start_dns(Zone {
        loopback_port: loopback.addr.port(),
        hint_port: hint.addr.port(),
        edge_port: 9,
        pinned_port: 9,
        closed_port: 9,
        silent_port: 9,
    });
    let extra = format!("\n[partner routed.test]\nroute = {}\n", routed.addr);
    let (gw, xmpp) = start_gateway(&pki, &dns, "refuse", &extra);

    let (first, _) = dialback_for(xmpp, "loopback.evil.test");
    assert!(
        first.contains("type='error'") && first.contains("<remote-server-not-found"),
        "{first}"
    );
    for domain in [
        "private.evil.test",
        "hint.evil.test",
        "fallback.evil.test",
        LITERAL_IP,
        "[::1]",
        "[::ffff:127.0.0.1]",
    ] {
        let (answer, took) = dialback_for(xmpp, domain);
        assert_eq!(answer, first, "{domain}: the same answer as for the others");
        assert!(
            took < Duration::from_secs(1),
            "{domain}: {took:?}, no connect tried"
        );
    }
    assert_eq!(loopback.count(), 0, "SRV to 127.0.0.1: no connection");
    assert_eq!(hint.count(), 0, "additional-section hint: no connection");
    assert_eq!(
        literal.count(),
        0,
        "A fallback and IP literal: no connection"
    );

    // The operator's log says why, once per cause (rate-limited), with the address.
    gw.wait_for(&format!(
        "not connecting to {} (a.loopback.evil.test): a loopback address ([federation] private_addresses = refuse)",
        loopback.addr
    ));
    gw.wait_for("not connecting to 10.255.255.1:6379 (a.private.evil.test): a private address");
    gw.wait_for(&format!(
        "not connecting to {} (h.hint.evil.test): a loopback address",
        hint.addr
    ));
    gw.wait_for("refused: an IP-literal domain without a [partner] section");

    // A route the operator wrote is used as written, loopback or not.
    let (answer, _) = dialback_for(xmpp, "routed.test");
    assert_eq!(routed.count(), 1, "the route was connected to: {answer}");
    assert!(answer.contains("<remote-server-timeout"), "{answer}");
}

#[test]
fn with_allow_loopback_is_reached_but_the_edge_and_hosts_pins_are_not() {
    let pki = Pki::new("ssrf-allow");
    let loopback = Recorder::bind("127.0.0.1:0");
    let edge = Recorder::bind(&format!("{EDGE_IP}:0"));
    let pinned = Recorder::bind("127.0.0.1:0");
    let silent = Silent::start();
    let closed_port = free_port();
    let dns = start_dns(Zone {
        loopback_port: loopback.addr.port(),
        hint_port: 9,
        edge_port: edge.addr.port(),
        pinned_port: pinned.addr.port(),
        closed_port,
        silent_port: silent.port,
    });
    let (gw, xmpp) = start_gateway(&pki, &dns, "allow", "");

    // Allowed: the connection is made (the listener closes it, so the stream fails).
    let (answer, _) = dialback_for(xmpp, "loopback.evil.test");
    assert_eq!(loopback.count(), 1, "{answer}");
    assert!(answer.contains("<remote-server-timeout"), "{answer}");

    // Refused by rule (the Edge's address), not in DNS (pinned in [hosts] only), closed
    // (RST), silent (no SYN answered within connect_timeout): one answer for all.
    let (first, _) = dialback_for(xmpp, "edge.evil.test");
    assert!(first.contains("<remote-server-not-found"), "{first}");
    for domain in ["pinned.evil.test", "closed.evil.test", "silent.evil.test"] {
        let (answer, _) = dialback_for(xmpp, domain);
        assert_eq!(answer, first, "{domain}");
    }
    assert_eq!(edge.count(), 0, "the Edge's address is never a partner's");
    assert_eq!(
        pinned.count(),
        0,
        "[hosts] is not consulted for SRV targets"
    );
    gw.wait_for(&format!(
        "not connecting to {} (e.edge.evil.test): one of the Edge's or xsgw's own addresses",
        edge.addr
    ));
    // The log tells closed from silent; the peer could not.
    let line = gw.wait_for(&format!("cannot connect to 127.0.0.1:{closed_port}"));
    assert!(line.contains("refused"), "{line}");
    let line = gw.wait_for(&format!("cannot connect to 127.0.0.1:{}", silent.port));
    assert!(line.contains("timed out"), "{line}");
    drop(silent);
}
