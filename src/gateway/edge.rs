//! The SIP shell: connections with the Access Edge over mutual TLS.
//!
//! Inbound: the Edge's client certificate must chain to `[sip] ca` and name one of
//! `[sip] edge_names`; a refusal is logged with what was presented. Until the SIP engine is
//! wired in, an accepted connection stays open and answers RFC 5626 CRLF keepalives.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;

use super::connection::Context;
use crate::tls;

/// Mutual TLS with the Edge, then (until the SIP engine exists) a read loop that keeps the
/// connection open and answers RFC 5626 CRLF keepalives.
pub(super) fn serve_inbound(mut tcp: TcpStream, peer: SocketAddr, context: &Context) -> String {
    let handshake_deadline = context.config.sip.connect_timeout;
    let _ = tcp.set_read_timeout(Some(handshake_deadline));
    let _ = tcp.set_write_timeout(Some(handshake_deadline));
    let mut tls = match rustls::ServerConnection::new(Arc::clone(&context.sip_server)) {
        Ok(c) => c,
        Err(e) => return format!("TLS set-up failed: {e}"),
    };
    while tls.is_handshaking() {
        if let Err(error) = tls.complete_io(&mut tcp) {
            let reason = tls::sip::describe_handshake_failure(&error, &context.config.sip.ca);
            log::warn!("sip inbound {peer}: TLS refused: {reason}");
            let _ = tls.write_tls(&mut tcp);
            return format!("TLS handshake failed: {reason}");
        }
    }
    let presented = tls
        .peer_certificates()
        .and_then(|certs| certs.first())
        .and_then(|leaf| tls::x509::summarize(leaf).ok());
    let Some(presented) = presented else {
        return "TLS peer presented no readable certificate".into();
    };
    let edge_names = &context.config.sip.edge_names;
    if !edge_names.iter().any(|n| presented.names_host(n)) {
        let names = presented.all_names().join(", ");
        log::warn!(
            "sip inbound {peer}: refused: certificate names {names}, none of [sip] edge_names ({}); only the Edge may connect",
            edge_names.join(", ")
        );
        tls.send_close_notify();
        let _ = tls.complete_io(&mut tcp);
        return format!("refused: certificate names {names}, not in edge_names");
    }
    log::info!(
        "sip inbound {peer}: mutual TLS established ({:?}), Edge certificate names {}",
        tls.protocol_version(),
        presented.all_names().join(", ")
    );
    // Idle Edge connections stay open; the Edge closes or keepalives them.
    let _ = tcp.set_read_timeout(None);
    let mut buf = vec![0u8; 16 * 1024];
    let mut conn = rustls::Stream::new(&mut tls, &mut tcp);
    loop {
        match conn.read(&mut buf) {
            Ok(0) => return "peer closed".into(),
            Ok(n) => {
                if &buf[..n] == b"\r\n\r\n" {
                    let _ = conn.write_all(b"\r\n");
                } else {
                    log::debug!(
                        "sip inbound {peer}: {n} bytes received (SIP engine not in this build)"
                    );
                }
            }
            Err(e) => return format!("read ended: {e}"),
        }
    }
}
