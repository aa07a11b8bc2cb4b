//! Connection threads: one per accepted socket, owning it for its whole life.
//!
//! SIP: the mutual-TLS handshake with the Edge (client certificate chained to `[sip] ca` and
//! naming one of `[sip] edge_names`), with a log line naming what was presented when refused.
//! XMPP: the S2S engine is the next issue; until then an inbound stream is answered with a
//! well-formed stream error so a partner sees a clear refusal instead of a hang.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use super::router::{ConnId, RouterEvent};
use super::{ConnectionSlot, Side};
use crate::config::{Config, Credentials};
use crate::tls;

/// What every connection thread shares, read-only.
pub struct Context {
    pub config: Arc<Config>,
    pub events: Sender<RouterEvent>,
    pub sip_server: Arc<rustls::ServerConfig>,
}

impl Context {
    pub fn new(
        config: Arc<Config>,
        credentials: Credentials,
        events: Sender<RouterEvent>,
    ) -> Result<Self, rustls::Error> {
        let sip_server = tls::sip_server_config(&credentials)?;
        Ok(Context {
            config,
            events,
            sip_server,
        })
    }
}

/// Called by a listener when the connection limit is reached: the peer gets told why.
pub fn refuse_over_limit(side: Side, mut stream: TcpStream) {
    if side == Side::Xmpp {
        let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
        let _ = stream.write_all(&stream_error("resource-constraint", "too many connections"));
    }
    let _ = stream.shutdown(Shutdown::Both);
}

pub fn serve_inbound(
    side: Side,
    id: ConnId,
    stream: TcpStream,
    peer: SocketAddr,
    slot: ConnectionSlot,
    context: &Context,
) {
    let _slot = slot;
    match stream.try_clone() {
        Ok(waker) => {
            let _ = context.events.send(RouterEvent::Connected {
                id,
                side,
                peer,
                waker,
            });
        }
        Err(error) => {
            log::warn!("{side} inbound {peer}: cannot register connection: {error}");
            return;
        }
    }
    log::info!("{side} inbound connection {id} from {peer}");
    let outcome = match side {
        Side::Sip => serve_sip(stream, peer, context),
        Side::Xmpp => serve_xmpp_placeholder(stream, context),
    };
    log::info!("{side} inbound connection {id} from {peer} closed: {outcome}");
    let _ = context.events.send(RouterEvent::Disconnected { id });
}

fn stream_error(condition: &str, text: &str) -> Vec<u8> {
    format!(
        "<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>\
         <stream:error><{condition} xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>\
         <text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>{text}</text></stream:error></stream:stream>"
    )
    .into_bytes()
}

/// Until the S2S engine exists: wait for the peer's stream header (bounded by
/// `stream_timeout`), answer with `<undefined-condition/>` and close.
fn serve_xmpp_placeholder(mut stream: TcpStream, context: &Context) -> String {
    let deadline = Instant::now() + context.config.xmpp.stream_timeout;
    let mut buf = [0u8; 4096];
    let mut seen = 0usize;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return "no stream header before [xmpp] stream_timeout".into();
        }
        let _ = stream.set_read_timeout(Some(left));
        match stream.read(&mut buf) {
            Ok(0) => return "peer closed".into(),
            Ok(n) => {
                seen += n;
                if buf[..n].contains(&b'>') || seen > 4096 {
                    let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
                    let _ = stream.write_all(&stream_error(
                        "undefined-condition",
                        "server-to-server streams are not served by this xsgw build yet",
                    ));
                    let _ = stream.shutdown(Shutdown::Both);
                    return "refused: S2S engine not available in this build".into();
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(e) => return format!("read error: {e}"),
        }
    }
}

/// Mutual TLS with the Edge, then (until the SIP engine exists) a read loop that keeps the
/// connection open and answers RFC 5626 CRLF keepalives.
fn serve_sip(mut tcp: TcpStream, peer: SocketAddr, context: &Context) -> String {
    let handshake_deadline = context.config.sip.connect_timeout;
    let _ = tcp.set_read_timeout(Some(handshake_deadline));
    let _ = tcp.set_write_timeout(Some(handshake_deadline));
    let mut tls = match rustls::ServerConnection::new(Arc::clone(&context.sip_server)) {
        Ok(c) => c,
        Err(e) => return format!("TLS set-up failed: {e}"),
    };
    while tls.is_handshaking() {
        if let Err(error) = tls.complete_io(&mut tcp) {
            let reason = tls::describe_handshake_failure(&error, &context.config.sip.ca);
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
