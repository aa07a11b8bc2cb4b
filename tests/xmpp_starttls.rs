//! STARTTLS on an inbound stream without the testbed: a peer that pipelines its TLS
//! ClientHello right behind `<starttls/>` (in the same write) still gets a TLS stream — the
//! bytes after `<starttls/>` reach TLS, none is lost or parsed as XML — and, holding a
//! certificate from `[xmpp] ca` that names its domain, authenticates with SASL EXTERNAL and
//! gets a stanza to the router's sink.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::{free_port, Pki};
use xsgw::gateway::{Gateway, GatewayOptions, RouterEvent, XmppNotice};
use xsgw::xmpp::session::AuthMethod;

const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:server' \
    xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' \
    from='gmail.test' to='contoso.test' version='1.0'>";
const PROCEED: &str = "<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>";

/// Reads from `tls` until `needle` has been seen; returns everything read.
fn tls_read_until(
    tls: &mut rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
    needle: &str,
) -> String {
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    while !seen.contains(needle) {
        let n = tls.read(&mut buf).expect("read over TLS");
        assert!(n > 0, "closed before `{needle}`: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    seen
}

#[test]
fn pipelined_client_hello_and_sasl_external_reach_the_sink() {
    let pki = Pki::new("xmpp-starttls");
    pki.ca.issue("gmail", "gmail.test", &["gmail.test"]);
    let port = free_port();
    let text = pki.config(
        &format!("127.0.0.1:{port}"),
        &format!("127.0.0.1:{}", free_port()),
        "sip.contoso.test:5061",
    );
    let path = Path::new(&pki.write_config("xsgw.ini", &text)).to_path_buf();
    let (config, mut report) = xsgw::config::parse(&text, &path).unwrap();
    let credentials = xsgw::config::validate(&config, &mut report).expect("credentials");
    let (sink, notices) = crossbeam_channel::bounded(64);
    let gw = Gateway::start_with(
        Arc::new(config),
        credentials,
        GatewayOptions {
            xmpp_sink: Some(sink),
            ..GatewayOptions::default()
        },
    )
    .unwrap();

    let mut socket = TcpStream::connect(("127.0.0.1", port)).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let roots = xsgw::tls::load_roots(&pki.ca.cert()).unwrap();
    let certs = xsgw::tls::load_certs(&pki.dir.path("gmail.pem")).unwrap();
    let key = xsgw::tls::load_key(&pki.dir.path("gmail.key")).unwrap();
    let tls_config = rustls::ClientConfig::builder_with_provider(xsgw::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)
        .unwrap();
    let mut conn =
        rustls::ClientConnection::new(Arc::new(tls_config), "contoso.test".try_into().unwrap())
            .unwrap();

    // Header, <starttls/> and the ClientHello in one write, before any answer.
    let mut first =
        format!("{HEADER}<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>").into_bytes();
    conn.write_tls(&mut first).unwrap();
    socket.write_all(&first).unwrap();

    // Everything up to <proceed/> is XML; what follows belongs to TLS.
    let mut plain = Vec::new();
    let mut buf = [0u8; 4096];
    let split = loop {
        let n = socket.read(&mut buf).unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&plain));
        plain.extend_from_slice(&buf[..n]);
        if let Some(i) = plain
            .windows(PROCEED.len())
            .position(|w| w == PROCEED.as_bytes())
        {
            break i + PROCEED.len();
        }
    };
    let text = String::from_utf8_lossy(&plain[..split]).into_owned();
    assert!(
        text.contains("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'"),
        "{text}"
    );
    let mut rest = &plain[split..];
    while !rest.is_empty() {
        conn.read_tls(&mut rest).unwrap();
        conn.process_new_packets().unwrap();
    }
    let mut tls = rustls::StreamOwned::new(conn, socket);
    tls.write_all(HEADER.as_bytes()).unwrap();
    let features = tls_read_until(&mut tls, "</stream:features>");
    assert!(
        features.contains("<mechanism>EXTERNAL</mechanism>"),
        "certificate valid for gmail.test: EXTERNAL offered: {features}"
    );
    assert!(!features.contains("starttls"), "{features}");
    tls.write_all(b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>Z21haWwudGVzdA==</auth>")
        .unwrap();
    tls_read_until(&mut tls, "<success");
    tls.write_all(HEADER.as_bytes()).unwrap();
    tls_read_until(&mut tls, "</stream:features>");
    tls.write_all(
        "<message from='alice@gmail.test/x' to='carol@contoso.test' type='chat'><body>caf\u{e9}</body></message>"
            .as_bytes(),
    )
    .unwrap();

    let mut authenticated = false;
    let stanza = loop {
        match notices.recv_timeout(Duration::from_secs(10)) {
            Ok(XmppNotice::Stanza(s)) => break s,
            Ok(XmppNotice::Authenticated {
                method,
                tls,
                remote,
                ..
            }) => {
                assert_eq!(
                    (method, tls, remote.as_str()),
                    (AuthMethod::SaslExternal, true, "gmail.test")
                );
                authenticated = true;
            }
            Ok(other) => panic!("unexpected {other:?}"),
            Err(e) => panic!("no stanza reached the sink: {e}"),
        }
    };
    assert!(authenticated);
    assert_eq!(
        (stanza.local.as_str(), stanza.remote.as_str()),
        ("contoso.test", "gmail.test")
    );
    assert_eq!(
        stanza
            .stanza
            .child("body", xsgw::xmpp::element::NS_SERVER)
            .map(|b| b.text()),
        Some("caf\u{e9}".to_owned())
    );

    let _ = gw.events().send(RouterEvent::Shutdown);
    assert!(gw.wait(), "every thread ended cleanly");
}
