//! `xsgw run` as a process: start-up, pidfile, signals, orderly shutdown, refusal to start,
//! and the mutual-TLS gate on the SIP listener.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::process::Running;
use common::{free_port, Pki};

fn start_gateway(pki: &Pki) -> (Running, u16, u16) {
    let (xmpp, sip) = (free_port(), free_port());
    let config = pki.config(
        &format!("127.0.0.1:{xmpp}"),
        &format!("127.0.0.1:{sip}"),
        "sip.contoso.test:5061",
    );
    // The tests play the Edge from 127.0.0.1, which sip.contoso.test does not resolve to.
    let config = config.replace("[sip]\n", "[sip]\nallow_from = 127.0.0.1\n");
    let path = pki.write_config("xsgw.ini", &config);
    let running = Running::start(Path::new(&path), Some(&pki.dir.path("xsgw.pid")));
    running.wait_for("started: XMPP on");
    (running, xmpp, sip)
}

#[test]
fn sigterm_stops_politely_with_exit_0_and_removes_the_pidfile() {
    let pki = Pki::new("run-term");
    let (mut gw, _, sip) = start_gateway(&pki);
    let pid = std::fs::read_to_string(pki.dir.path("xsgw.pid")).unwrap();
    assert_eq!(pid.trim(), gw.child.id().to_string());
    let secret = pki.dir.path("state/dialback.secret");
    assert!(
        secret.exists(),
        "the dialback secret is generated at first start"
    );
    // An open connection must not hold shutdown up beyond the grace period.
    let idle = TcpStream::connect(("127.0.0.1", sip)).unwrap();
    gw.wait_for("sip inbound connection");
    let t0 = Instant::now();
    gw.signal("TERM");
    assert_eq!(gw.wait_exit(Duration::from_secs(10)), 0);
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "shutdown took {:?}",
        t0.elapsed()
    );
    gw.wait_for("SIGTERM received: stopping");
    gw.wait_for("stopped");
    assert!(!pki.dir.path("xsgw.pid").exists(), "pidfile removed");
    drop(idle);
}

#[test]
fn sighup_is_logged_and_the_gateway_keeps_running() {
    let pki = Pki::new("run-hup");
    let (mut gw, _, _) = start_gateway(&pki);
    gw.signal("HUP");
    gw.wait_for("SIGHUP received");
    assert!(
        gw.child.try_wait().unwrap().is_none(),
        "still running after SIGHUP"
    );
    gw.signal("INT");
    assert_eq!(gw.wait_exit(Duration::from_secs(10)), 0);
}

#[test]
fn a_bug_in_the_router_ends_the_process_so_its_supervisor_restarts_it() {
    let pki = Pki::new("run-bug");
    let (xmpp, sip) = (free_port(), free_port());
    let config = pki.config(
        &format!("127.0.0.1:{xmpp}"),
        &format!("127.0.0.1:{sip}"),
        "sip.contoso.test:5061",
    );
    let path = pki.write_config("xsgw.ini", &config);
    // Debug builds only: the router panics when it handles SIGHUP.
    let mut gw = Running::start_with_env(
        Path::new(&path),
        Some(&pki.dir.path("xsgw.pid")),
        &[("XSGW_TEST_PANIC", "router")],
    );
    gw.wait_for("started: XMPP on");
    let t0 = Instant::now();
    gw.signal("HUP");
    // Not 0 (systemd's Restart=on-failure and the init script restart it), not 1 (a
    // configuration problem), and within a second: no silent outage with listeners open.
    assert_eq!(gw.wait_exit(Duration::from_secs(5)), 70);
    assert!(
        t0.elapsed() < Duration::from_secs(1),
        "took {:?}",
        t0.elapsed()
    );
    let line = gw.wait_for("service thread router stopped by a bug");
    assert!(line.contains("ERROR"), "{line}");
    assert!(
        TcpStream::connect(("127.0.0.1", xmpp)).is_err(),
        "nothing listens on 5269 any more"
    );
}

#[test]
fn under_systemd_log_lines_carry_syslog_priorities_and_no_timestamp() {
    use std::os::unix::fs::MetadataExt;
    let pki = Pki::new("run-journal");
    let config = pki.config(
        &format!("127.0.0.1:{}", free_port()),
        &format!("127.0.0.1:{}", free_port()),
        "sip.contoso.test:5061",
    );
    let path = pki.write_config("xsgw.ini", &config);
    // What systemd does: stderr is a stream whose device:inode JOURNAL_STREAM names.
    let log_path = pki.dir.path("journal.log");
    let stderr = std::fs::File::create(&log_path).unwrap();
    let meta = stderr.metadata().unwrap();
    let mut child = common::xsgw()
        .args(["run", "-c", &path])
        .env_remove("RUST_LOG")
        .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
        .stderr(stderr)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let started = loop {
        let text = std::fs::read_to_string(&log_path).unwrap();
        if let Some(line) = text.lines().find(|l| l.contains("started: XMPP on")) {
            break line.to_owned();
        }
        assert!(Instant::now() < deadline, "not started:\n{text}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert!(child.wait().unwrap().success());
    assert!(started.starts_with("<6>[main] xsgw "), "{started}");
    let text = std::fs::read_to_string(&log_path).unwrap();
    for line in text.lines() {
        let priority = line.get(..3).unwrap_or_default();
        assert!(
            ["<3>", "<4>", "<6>", "<7>"].contains(&priority),
            "every line starts with a priority: {line}"
        );
        assert!(!line.contains("Z INFO"), "no timestamp of our own: {line}");
    }
    // Without JOURNAL_STREAM (a terminal, a log file): our own timestamp and level words.
    let mut plain = Running::start(Path::new(&path), None);
    let line = plain.wait_for("started: XMPP on");
    assert!(line.contains("Z INFO  [main]"), "{line}");
    plain.signal("TERM");
    assert_eq!(plain.wait_exit(Duration::from_secs(10)), 0);
}

#[test]
fn a_busy_port_or_a_running_instance_stops_start_up_with_a_reason() {
    let pki = Pki::new("run-busy");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let config = pki.config(
        &format!("127.0.0.1:{port}"),
        &format!("127.0.0.1:{}", free_port()),
        "sip.contoso.test:5061",
    );
    let path = pki.write_config("busy.ini", &config);
    let mut gw = Running::start(Path::new(&path), Some(&pki.dir.path("busy.pid")));
    assert_eq!(gw.wait_exit(Duration::from_secs(10)), 1);
    gw.wait_for(&format!(
        "cannot listen on 127.0.0.1:{port} ([xmpp] listen)"
    ));

    let (mut first, _, _) = start_gateway(&pki);
    let mut second = Running::start(Path::new(&path), Some(&pki.dir.path("xsgw.pid")));
    assert_eq!(second.wait_exit(Duration::from_secs(10)), 1);
    second.wait_for("is xsgw already running?");
    first.signal("TERM");
    assert_eq!(first.wait_exit(Duration::from_secs(10)), 0);
}

#[test]
fn a_broken_configuration_is_refused_at_start() {
    let pki = Pki::new("run-broken");
    let config = pki
        .config("127.0.0.1:1", "127.0.0.1:2", "sip.contoso.test:5061")
        .replace("fqdn = gw.contoso.test", "fqdn = elsewhere.test");
    let path = pki.write_config("broken.ini", &config);
    let mut gw = Running::start(Path::new(&path), Some(&pki.dir.path("broken.pid")));
    assert_eq!(gw.wait_exit(Duration::from_secs(10)), 1);
    gw.wait_for("names gw.contoso.test but not `elsewhere.test`");
    gw.wait_for("not starting: fix the configuration");
}

/// A TLS client toward the SIP listener, with an optional client certificate.
fn sip_client(pki: &Pki, port: u16, client: Option<&str>, tls13: bool) -> std::io::Result<Vec<u8>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(pki.dir.path("internal-ca.pem")).unwrap())
        .unwrap();
    let versions: &[&rustls::SupportedProtocolVersion] = if tls13 {
        &[&rustls::version::TLS13]
    } else {
        &[&rustls::version::TLS12]
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots);
    let config = match client {
        Some(name) => {
            let chain =
                vec![CertificateDer::from_pem_file(pki.dir.path(&format!("{name}.pem"))).unwrap()];
            let key = PrivateKeyDer::from_pem_file(pki.dir.path(&format!("{name}.key"))).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    let server = ServerName::try_from("gw.contoso.test").unwrap();
    let mut conn = rustls::ClientConnection::new(Arc::new(config), server).unwrap();
    let mut tcp = TcpStream::connect(("127.0.0.1", port))?;
    tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut stream = rustls::Stream::new(&mut conn, &mut tcp);
    // RFC 5626 keepalive: a CRLFCRLF ping must come back as a CRLF pong.
    stream.write_all(b"\r\n\r\n")?;
    let mut pong = [0u8; 2];
    stream.read_exact(&mut pong)?;
    Ok(pong.to_vec())
}

#[test]
fn sip_listener_accepts_only_the_edge_certificate() {
    let pki = Pki::new("run-mtls");
    let (mut gw, _, sip) = start_gateway(&pki);
    for tls13 in [true, false] {
        let pong =
            sip_client(&pki, sip, Some("edge"), tls13).expect("the Edge's certificate is accepted");
        assert_eq!(pong, b"\r\n");
    }
    gw.wait_for("mutual TLS established (Some(TLSv1_3)), Edge certificate names sip.contoso.test");
    gw.wait_for("mutual TLS established (Some(TLSv1_2)), Edge certificate names sip.contoso.test");

    for tls13 in [true, false] {
        assert!(
            sip_client(&pki, sip, None, tls13).is_err(),
            "no client certificate is refused"
        );
        assert!(
            sip_client(&pki, sip, Some("impostor"), tls13).is_err(),
            "another CA is refused"
        );
        assert!(
            sip_client(&pki, sip, Some("rogue"), tls13).is_err(),
            "a name outside edge_names is refused"
        );
    }
    gw.wait_for("TLS refused: the peer presented no client certificate");
    gw.wait_for("TLS refused: the peer's certificate is not issued by the CA in");
    gw.wait_for("refused: certificate names rogue.contoso.test, none of [sip] edge_names (sip.contoso.test)");
    gw.signal("TERM");
    assert_eq!(gw.wait_exit(Duration::from_secs(10)), 0);
}

#[test]
fn xmpp_listener_opens_a_stream_with_features_for_a_partner() {
    let pki = Pki::new("run-xmpp");
    let (mut gw, xmpp, _) = start_gateway(&pki);
    let mut tcp = TcpStream::connect(("127.0.0.1", xmpp)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    tcp.write_all(b"<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' to='contoso.test' from='gmail.test' version='1.0'>").unwrap();
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&reply).contains("</stream:features>") {
        let n = tcp.read(&mut buf).unwrap();
        assert!(n > 0, "{}", String::from_utf8_lossy(&reply));
        reply.extend_from_slice(&buf[..n]);
    }
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.contains("from='contoso.test'"), "{reply}");
    assert!(reply.contains("urn:xmpp:features:dialback"), "{reply}");
    // A stanza before authentication ends the stream with a stream error.
    tcp.write_all(b"<message from='a@gmail.test' to='b@contoso.test'/>")
        .unwrap();
    let mut rest = String::new();
    let _ = tcp.read_to_string(&mut rest);
    assert!(rest.contains("<not-authorized"), "{rest}");
    assert!(rest.ends_with("</stream:stream>"), "{rest}");
    gw.signal("TERM");
    assert_eq!(gw.wait_exit(Duration::from_secs(10)), 0);
}
