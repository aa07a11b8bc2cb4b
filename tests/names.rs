//! Authentication edges over real TLS, in process, with certificates from the same internal
//! CA as the Edge's (openssl, `common::Pki`):
//!
//! - On `[sip] listen`, a client certificate for `*.contoso.test`, for another name, or naming
//!   the Edge only in its CN is refused (with the reason logged) unless `edge_names` lists
//!   that very name; a listed wildcard accepts the wildcard certificate, not the names under it.
//! - `[sip] edge_pin`: the Edge's certificate with a wrong pin is refused, with the right pin
//!   (or one of a rollover pair) accepted, in both directions (the gateway's own connection
//!   to a stand-in Edge too); outbound, a wildcard server certificate is not the Edge either.
//! - On 5269, a peer whose certificate names the partner in its CN but not in its SAN is not
//!   offered SASL EXTERNAL (one naming it in its SAN is).
//!
//! The Edge and its attacker connect from the Edge's address (127.0.0.1 here, `[sip] edge`),
//! as a stolen or mis-issued internal certificate would: past any address filter, up to the
//! name check.

mod common;
mod sip_common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{free_port, Pki};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use sip_common::{log_mark, wait_log, InProcess};
use xsgw::tls::names::SpkiPin;

const T: Duration = Duration::from_secs(5);

fn pki() -> Pki {
    let pki = Pki::new("names");
    pki.ca
        .issue("wildcard", "*.contoso.test", &["*.contoso.test"]);
    pki.ca.issue("cn-only", "sip.contoso.test", &[]);
    pki.ca
        .issue("cn-not-san", "sip.contoso.test", &["other.contoso.test"]);
    pki
}

fn pin_of(pki: &Pki, name: &str) -> String {
    let der = xsgw::tls::load_certs(&pki.dir.path(&format!("{name}.pem"))).unwrap();
    SpkiPin::of_certificate(&der[0]).unwrap().to_string()
}

/// A gateway whose Edge is `edge` (host:port), with extra `[sip]` lines; returns it and its
/// SIP listener.
fn gateway(pki: &Pki, edge: &str, sip_extra: &str, tail: &str) -> (InProcess, SocketAddr) {
    let sip: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let config = pki
        .config(
            &format!("127.0.0.1:{}", free_port()),
            &sip.to_string(),
            edge,
        )
        .replace("edge_names = sip.contoso.test\n", &format!("{sip_extra}\n"));
    let gw = InProcess::start(&format!("{config}{tail}"), &pki.dir.0, true);
    (gw, sip)
}

/// Connects to the SIP listener holding `cert` and sends a keepalive: Ok when the pong comes
/// back (taken for the Edge). The local address names the attempt in the gateway's log.
fn as_edge(
    pki: &Pki,
    sip: SocketAddr,
    cert: &str,
    tls13: bool,
) -> (SocketAddr, Result<(), String>) {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(pki.dir.path("internal-ca.pem")).unwrap())
        .unwrap();
    let versions: &[&rustls::SupportedProtocolVersion] = if tls13 {
        &[&rustls::version::TLS13]
    } else {
        &[&rustls::version::TLS12]
    };
    let config = rustls::ClientConfig::builder_with_provider(xsgw::tls::provider())
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(
            vec![CertificateDer::from_pem_file(pki.dir.path(&format!("{cert}.pem"))).unwrap()],
            PrivateKeyDer::from_pem_file(pki.dir.path(&format!("{cert}.key"))).unwrap(),
        )
        .unwrap();
    let mut conn = rustls::ClientConnection::new(
        Arc::new(config),
        ServerName::try_from("gw.contoso.test").unwrap(),
    )
    .unwrap();
    let mut tcp = TcpStream::connect(sip).unwrap();
    let local = tcp.local_addr().unwrap();
    tcp.set_read_timeout(Some(T)).unwrap();
    let mut stream = rustls::Stream::new(&mut conn, &mut tcp);
    let outcome = stream
        .write_all(b"\r\n\r\n")
        .and_then(|()| {
            let mut pong = [0u8; 2];
            stream.read_exact(&mut pong).map(|()| pong)
        })
        .map_err(|e| e.to_string())
        .and_then(|pong| match &pong {
            b"\r\n" => Ok(()),
            other => Err(format!("not a pong: {other:?}")),
        });
    (local, outcome)
}

/// `cert` is refused on the listener in both TLS versions, the log saying `why` for the
/// first attempt. (Refusals are warnings a peer can trigger at will, rate-limited per source
/// address: each gateway below logs at most two of them from 127.0.0.1.)
fn refused(pki: &Pki, sip: SocketAddr, cert: &str, why: &str) {
    let mark = log_mark();
    let (local, outcome) = as_edge(pki, sip, cert, true);
    assert!(outcome.is_err(), "{cert} (TLS 1.3) was taken for the Edge");
    wait_log(
        mark,
        &[&format!("sip inbound {local}: TLS refused: {why}")],
        T,
    );
    let (_, outcome) = as_edge(pki, sip, cert, false);
    assert!(outcome.is_err(), "{cert} (TLS 1.2) was taken for the Edge");
}

fn accepted(pki: &Pki, sip: SocketAddr, cert: &str) {
    for tls13 in [true, false] {
        let mark = log_mark();
        let (local, outcome) = as_edge(pki, sip, cert, tls13);
        assert_eq!(outcome, Ok(()), "{cert} (TLS 1.3: {tls13})");
        wait_log(
            mark,
            &[&format!("sip inbound {local}: mutual TLS established")],
            T,
        );
    }
}

#[test]
fn on_the_sip_listener_only_names_in_edge_names_count_a_wildcard_only_as_itself() {
    let pki = pki();
    let edge = format!("127.0.0.1:{}", free_port());
    let nothing = "nothing (no DNS name in its subjectAltName; the CN is not used)";

    for pair in [
        [
            ("wildcard", "*.contoso.test"),
            ("rogue", "rogue.contoso.test"),
        ],
        [("cn-only", nothing), ("cn-not-san", "other.contoso.test")],
    ] {
        let (mut gw, sip) = gateway(&pki, &edge, "edge_names = sip.contoso.test", "");
        accepted(&pki, sip, "edge");
        for (cert, names) in pair {
            refused(
                &pki,
                sip,
                cert,
                &format!("certificate names {names}, none of [sip] edge_names (sip.contoso.test)"),
            );
        }
        assert!(gw.stop());
    }

    // The wildcard listed as is: that certificate is accepted, not the names it would match.
    let (mut gw, sip) = gateway(
        &pki,
        &edge,
        "edge_names = sip.contoso.test, *.contoso.test",
        "",
    );
    accepted(&pki, sip, "edge");
    accepted(&pki, sip, "wildcard");
    for (cert, names) in [
        ("rogue", "rogue.contoso.test"),
        ("cn-not-san", "other.contoso.test"),
    ] {
        refused(
            &pki,
            sip,
            cert,
            &format!("certificate names {names}, none of [sip] edge_names (sip.contoso.test, *.contoso.test)"),
        );
    }
    assert!(gw.stop());

    // Another name, once configured, is accepted.
    let (mut gw, sip) = gateway(&pki, &edge, "edge_names = rogue.contoso.test", "");
    accepted(&pki, sip, "rogue");
    refused(
        &pki,
        sip,
        "edge",
        "certificate names sip.contoso.test, none of [sip] edge_names (rogue.contoso.test)",
    );
    assert!(gw.stop());
}

#[test]
fn edge_pin_inbound_wrong_refused_right_or_rollover_accepted() {
    let pki = pki();
    let edge = format!("127.0.0.1:{}", free_port());
    let (right, wrong) = (pin_of(&pki, "edge"), pin_of(&pki, "rogue"));

    let (mut gw, sip) = gateway(
        &pki,
        &edge,
        &format!("edge_names = sip.contoso.test\nedge_pin = {wrong}"),
        "",
    );
    refused(
        &pki,
        sip,
        "edge",
        &format!("certificate key {right} is not one of the 1 [sip] edge_pin value(s)"),
    );
    assert!(gw.stop());

    let (mut gw, sip) = gateway(
        &pki,
        &edge,
        &format!("edge_names = sip.contoso.test\nedge_pin = {right}"),
        "",
    );
    accepted(&pki, sip, "edge");
    assert!(gw.stop());

    // Rollover: old and new key listed; a certificate with a third key is still refused
    // although its name is accepted.
    let (mut gw, sip) = gateway(
        &pki,
        &edge,
        &format!("edge_names = sip.contoso.test, *.contoso.test\nedge_pin = {wrong}, {right}"),
        "",
    );
    accepted(&pki, sip, "edge");
    refused(
        &pki,
        sip,
        "wildcard",
        &format!(
            "certificate key {} is not one of the 2 [sip] edge_pin value(s)",
            pin_of(&pki, "wildcard")
        ),
    );
    assert!(gw.stop());
}

/// A stand-in Edge on `listener` presenting `cert`; the handshake's outcome.
fn stand_in_edge(pki: &Pki, listener: &TcpListener, cert: &str) -> Result<(), String> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(pki.dir.path("internal-ca.pem")).unwrap())
        .unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        xsgw::tls::provider(),
    )
    .build()
    .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(xsgw::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![CertificateDer::from_pem_file(pki.dir.path(&format!("{cert}.pem"))).unwrap()],
            PrivateKeyDer::from_pem_file(pki.dir.path(&format!("{cert}.key"))).unwrap(),
        )
        .unwrap();
    let (mut tcp, _) = listener.accept().unwrap();
    tcp.set_read_timeout(Some(T)).unwrap();
    let mut conn = rustls::ServerConnection::new(Arc::new(config)).unwrap();
    // The gateway judges our certificate before it sends its own (TLS 1.2 and 1.3): a
    // handshake completed here is one it accepted.
    let deadline = Instant::now() + T;
    while conn.is_handshaking() {
        if Instant::now() > deadline {
            return Err("handshake not completed".into());
        }
        conn.complete_io(&mut tcp).map_err(|e| e.to_string())?;
    }
    Ok(())
}

#[test]
fn edge_pin_and_names_on_the_gateway_own_connection_to_the_edge() {
    let pki = pki();
    let (right, wrong) = (pin_of(&pki, "edge"), pin_of(&pki, "rogue"));
    let hosts = "\n[hosts]\nsip.contoso.test = 127.0.0.1\n";
    for (cert, sip_extra, expected) in [
        (
            "edge",
            format!("edge_names = sip.contoso.test\nedge_pin = {wrong}"),
            format!("TLS handshake failed: certificate key {right} is not one of the 1 [sip] edge_pin value(s)"),
        ),
        (
            "wildcard",
            "edge_names = pool.contoso.test".to_string(),
            "TLS handshake failed: the Edge's certificate does not name sip.contoso.test nor any of [sip] edge_names (pool.contoso.test); it names *.contoso.test".to_string(),
        ),
    ] {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mark = log_mark();
        let (mut gw, _) = gateway(&pki, &format!("sip.contoso.test:{port}"), &sip_extra, hosts);
        let edge_side = stand_in_edge(&pki, &listener, cert);
        drop(listener);
        assert!(edge_side.is_err(), "{cert}: the gateway went on");
        wait_log(
            mark,
            &[
                &format!("sip outbound 127.0.0.1:{port}: cannot connect to the Edge sip.contoso.test:{port}"),
                &expected,
            ],
            T,
        );
        assert!(gw.stop());
    }
    // The right pin, or one of a rollover pair: connected.
    for pins in [right.clone(), format!("{wrong}, {right}")] {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mark = log_mark();
        let (mut gw, _) = gateway(
            &pki,
            &format!("sip.contoso.test:{port}"),
            &format!("edge_names = sip.contoso.test\nedge_pin = {pins}"),
            hosts,
        );
        assert_eq!(stand_in_edge(&pki, &listener, "edge"), Ok(()), "{pins}");
        drop(listener);
        wait_log(
            mark,
            &[&format!("sip outbound 127.0.0.1:{port}: connected to the Edge sip.contoso.test over mutual TLS")],
            T,
        );
        assert!(gw.stop());
    }
}

const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:server' \
    xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' \
    from='gmail.test' to='contoso.test' version='1.0'>";

/// Reads until `needle`; everything read.
fn read_until(r: &mut impl Read, needle: &str) -> String {
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    while !seen.contains(needle) {
        let n = r.read(&mut buf).expect("read");
        assert!(n > 0, "closed before `{needle}`: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    seen
}

/// The features a peer claiming gmail.test gets after STARTTLS with `cert`.
fn features_after_starttls(pki: &Pki, port: u16, cert: &str) -> String {
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(T)).unwrap();
    tcp.write_all(HEADER.as_bytes()).unwrap();
    read_until(&mut tcp, "</stream:features>");
    tcp.write_all(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        .unwrap();
    read_until(&mut tcp, "<proceed");
    let config = rustls::ClientConfig::builder_with_provider(xsgw::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(xsgw::tls::load_roots(&pki.ca.cert()).unwrap())
        .with_client_auth_cert(
            xsgw::tls::load_certs(&pki.dir.path(&format!("{cert}.pem"))).unwrap(),
            xsgw::tls::load_key(&pki.dir.path(&format!("{cert}.key"))).unwrap(),
        )
        .unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), "contoso.test".try_into().unwrap())
        .unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    tls.write_all(HEADER.as_bytes()).unwrap();
    read_until(&mut tls, "</stream:features>")
}

#[test]
fn sasl_external_is_offered_only_when_the_san_names_the_partner() {
    let pki = Pki::new("names-sasl");
    pki.ca.issue("gmail", "gmail.test", &["gmail.test"]);
    pki.ca
        .issue("cn-partner", "gmail.test", &["mail.unrelated.test"]);
    pki.ca.issue("cn-only-partner", "gmail.test", &[]);
    let port = free_port();
    let text = pki.config(
        &format!("127.0.0.1:{port}"),
        &format!("127.0.0.1:{}", free_port()),
        "sip.contoso.test:5061",
    );
    let path = Path::new(&pki.write_config("xsgw.ini", &text)).to_path_buf();
    let (config, mut report) = xsgw::config::parse(&text, &path).unwrap();
    let credentials = xsgw::config::validate(&config, &mut report).expect("credentials");
    let (sink, _notices) = crossbeam_channel::bounded(64);
    let gw = xsgw::gateway::Gateway::start_with(
        Arc::new(config),
        credentials,
        xsgw::gateway::GatewayOptions {
            xmpp_sink: Some(sink),
            ..xsgw::gateway::GatewayOptions::default()
        },
    )
    .unwrap();

    let features = features_after_starttls(&pki, port, "gmail");
    assert!(
        features.contains("<mechanism>EXTERNAL</mechanism>"),
        "SAN gmail.test: EXTERNAL offered: {features}"
    );
    for cert in ["cn-partner", "cn-only-partner"] {
        let features = features_after_starttls(&pki, port, cert);
        assert!(
            !features.contains("EXTERNAL"),
            "{cert}: CN gmail.test is not a name for SASL EXTERNAL: {features}"
        );
        assert!(
            features.contains("urn:xmpp:features:dialback"),
            "{cert}: dialback still offered: {features}"
        );
    }

    let _ = gw.events().send(xsgw::gateway::RouterEvent::Shutdown);
    assert!(gw.wait(), "every thread ended cleanly");
}
