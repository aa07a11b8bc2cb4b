//! The XMPP server-to-server shell: the connection threads that run XMPP streams.
//!
//! The S2S engine (the sans-IO session in `crate::xmpp`, STARTTLS, dialback, outbound streams)
//! is the next issue; until then an inbound stream is answered with a well-formed stream error,
//! so a partner sees a clear refusal (and bounces its queued stanzas) instead of a hang.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use super::connection::Context;

pub(super) fn stream_error(condition: &str, text: &str) -> Vec<u8> {
    format!(
        "<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>\
         <stream:error><{condition} xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>\
         <text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>{text}</text></stream:error></stream:stream>"
    )
    .into_bytes()
}

/// Until the S2S engine exists: wait for the peer's stream header (bounded by
/// `stream_timeout`), answer with `<undefined-condition/>` and close.
pub(super) fn serve_inbound(mut stream: TcpStream, context: &Context) -> String {
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
