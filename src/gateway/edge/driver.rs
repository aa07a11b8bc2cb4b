//! One Edge connection after the handshake: the owner thread's loop around a
//! [`Link`], and its reader thread (see the parent module for why it is split this way).
//!
//! Loop: wait for raw TLS octets, a command or the link's timer → feed rustls / the link →
//! write what the link produced (through rustls, under a write timeout) → act on the link's
//! events → again. Ends when the peer closes, the socket fails, rustls reports an error (its
//! alert is written first) or the link closes (its last answers are written first).

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use super::{link_config, system_random, ClientOutcome, Command, Reply, RequestFront, Responder};
use crate::gateway::connection::Context;
use crate::gateway::router::RouterEvent;
use crate::gateway::status::{LinkCounters, Observation};
use crate::gateway::threads;
use crate::sip::link::{Link, LinkEvent};
use crate::sip::transaction::{ClientKey, ServerKey};

/// A write that the peer does not take within this long ends the connection.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Raw records queued between the reader thread and the owner (backpressure beyond).
const RAW_QUEUE: usize = 16;
/// Plaintext drained from rustls per step.
const PLAINTEXT_CHUNK: usize = 16 * 1024;

pub(crate) struct Params<'a> {
    pub peer: SocketAddr,
    pub direction: &'static str,
    pub context: &'a Context,
    /// True on the connection xsgw opened: it sends the keepalive pings.
    pub pinging: bool,
    pub commands: &'a Receiver<Command>,
    /// Kept by the loop so `commands` never reports "disconnected" while it runs.
    pub commands_tx: Sender<Command>,
}

enum Raw {
    Data(Vec<u8>),
    Eof,
    Error(std::io::Error),
}

/// How a connection ended.
pub(crate) struct Ended {
    /// Why, for the log line.
    pub why: String,
    /// Whether the peer sent any SIP (or keepalive) octets: it accepted the connection.
    pub heard: bool,
}

/// Runs the link until the connection ends.
pub(crate) fn drive(mut tls: rustls::Connection, mut tcp: TcpStream, p: Params<'_>) -> Ended {
    let Params {
        peer,
        direction,
        context,
        pinging,
        commands,
        commands_tx,
    } = p;
    let _ = tcp.set_read_timeout(None);
    let _ = tcp.set_write_timeout(Some(WRITE_TIMEOUT));
    let _ = tcp.set_nodelay(true);
    let (raw_tx, raw) = crossbeam_channel::bounded::<Raw>(RAW_QUEUE);
    let reader = match tcp.try_clone() {
        Ok(mut socket) => threads::spawn(
            format!("sip-read-{peer}"),
            threads::CONNECTION_STACK,
            move || {
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    let item = match socket.read(&mut buf) {
                        Ok(0) => Raw::Eof,
                        Ok(n) => Raw::Data(buf.get(..n).unwrap_or_default().to_vec()),
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        Err(e) => Raw::Error(e),
                    };
                    let last = !matches!(item, Raw::Data(_));
                    if raw_tx.send(item).is_err() || last {
                        break;
                    }
                }
            },
        ),
        Err(e) => {
            return Ended {
                why: format!("cannot clone the socket for reading: {e}"),
                heard: false,
            }
        }
    };
    let reader = match reader {
        Ok(handle) => handle,
        Err(e) => {
            return Ended {
                why: format!("cannot start the reader thread: {e}"),
                heard: false,
            }
        }
    };

    // For `xsgw status`: this connection's TLS and certificate, and its request counts
    // (written only here; see crate::gateway::status).
    let counters = std::sync::Arc::new(LinkCounters::default());
    // Sent like `Connected` (waiting if need be): the connection must show in the status.
    let _ = context
        .events
        .send(RouterEvent::Observed(Observation::EdgeLink {
            peer,
            outbound: pinging,
            tls: tls
                .protocol_version()
                .map(|v| format!("{v:?}"))
                .unwrap_or_default(),
            certificate: tls
                .peer_certificates()
                .and_then(|certs| certs.first())
                .map(crate::tls::names::san_names)
                .unwrap_or_default()
                .join(", "),
            counters: std::sync::Arc::clone(&counters),
        }));
    let mut link = Link::new(
        Instant::now(),
        link_config(context, pinging),
        Box::new(system_random),
    );
    let mut front = RequestFront {
        context,
        config: context.config(),
        watch: crate::gateway::live::Watch::new(&context.live),
        peer,
        direction,
        logged: HashSet::new(),
    };
    let mut pending: HashMap<ClientKey, Reply> = HashMap::new();
    let mut plaintext = vec![0u8; PLAINTEXT_CHUNK];
    let mut plaintext_seen = false;

    // The peer's first records may have arrived with its last handshake flight: rustls
    // holds them already, and no new octets may come to wake us.
    let mut first = Some(process(
        &mut tls,
        &mut tcp,
        &mut link,
        &mut plaintext,
        pinging,
        &mut plaintext_seen,
    ));
    let outcome = loop {
        let timer = match link.poll_timeout() {
            Some(at) => crossbeam_channel::at(at),
            None => crossbeam_channel::never(),
        };
        let mut ended: Option<String> = None;
        if let Some(early) = first.take() {
            ended = early;
        } else {
            crossbeam_channel::select! {
                recv(raw) -> item => match item {
                    Ok(Raw::Data(bytes)) => {
                        let mut rest: &[u8] = &bytes;
                        while !rest.is_empty() && ended.is_none() {
                            if let Err(e) = tls.read_tls(&mut rest) {
                                ended = Some(format!("TLS read failed: {e}"));
                                break;
                            }
                            ended = process(&mut tls, &mut tcp, &mut link, &mut plaintext, pinging, &mut plaintext_seen);
                        }
                    }
                    Ok(Raw::Eof) => ended = Some("peer closed the connection".into()),
                    Ok(Raw::Error(e)) => ended = Some(format!("read failed: {e}")),
                    Err(_) => ended = Some("reader thread ended".into()),
                },
                recv(commands) -> command => {
                    let now = Instant::now();
                    match command {
                        Ok(Command::Respond { key, response }) => {
                            if let Err(e) = link.respond(now, &key, &response) {
                                log::debug!("sip {direction} {peer}: response not sent: {e}");
                            }
                        }
                        Ok(Command::Send { request, reply }) => match link.send_request(now, *request) {
                            Ok(key) => {
                                counters.count_out();
                                pending.insert(key, reply);
                            }
                            Err(e) => reply.finish(ClientOutcome::Failed(e.to_string())),
                        },
                        Ok(Command::Stateless { request }) => link.send_stateless(&request),
                        Err(_) => {}
                    }
                },
                recv(timer) -> _ => link.handle_timeout(Instant::now()),
            }
        }

        let mut out = Vec::new();
        while link.poll_transmit(&mut out) {}
        if !out.is_empty() {
            if let Err(e) = tls.writer().write_all(&out) {
                ended.get_or_insert(format!("TLS write failed: {e}"));
            }
        }
        if let Err(e) = flush(&mut tls, &mut tcp) {
            ended.get_or_insert(format!("write failed: {e}"));
        }

        while let Some(event) = link.poll_event() {
            match event {
                LinkEvent::Request {
                    key,
                    request,
                    expects_response,
                } => {
                    counters.count_in();
                    let responder = Responder {
                        commands: commands_tx.clone(),
                        key,
                    };
                    front.handle(request, expects_response, responder);
                }
                LinkEvent::Cancelled { .. } => {
                    log::debug!("sip {direction} {peer}: INVITE cancelled by the Edge")
                }
                // The ACK of a 2xx belongs to the dialog: the transaction user's business.
                LinkEvent::Ack(ack) => match ServerKey::of_request(&ack) {
                    Some(key) => {
                        let responder = Responder {
                            commands: commands_tx.clone(),
                            key,
                        };
                        front.handle(ack, false, responder);
                    }
                    None => log::debug!("sip {direction} {peer}: ACK without Via dropped"),
                },
                LinkEvent::Response { key, response } => {
                    let last = !response.status.is_provisional();
                    if let Some(reply) = pending.get(&key) {
                        if last {
                            reply.finish(ClientOutcome::Final(response));
                        } else {
                            reply.provisional(response);
                        }
                    }
                    if last {
                        pending.remove(&key);
                    }
                }
                LinkEvent::ClientFailed { key, timer } => {
                    let why = match timer {
                        Some(t) => format!("no final response from the Edge ({t} fired)"),
                        None => "the connection to the Edge failed".into(),
                    };
                    log::info!(
                        "sip {direction} {peer}: {} {}: {why}",
                        key.method,
                        key.branch
                    );
                    if let Some(reply) = pending.remove(&key) {
                        reply.finish(ClientOutcome::Failed(why));
                    }
                }
                LinkEvent::ServerTimedOut { key } => {
                    log::info!("sip {direction} {peer}: no ACK for our final response ({key:?})")
                }
                LinkEvent::Refused {
                    status,
                    why,
                    summary,
                } => log::info!("sip {direction} {peer}: refused {summary}: {status} ({why})"),
                LinkEvent::StrayResponse(r) => log::debug!(
                    "sip {direction} {peer}: stray {} for {} dropped",
                    r.status,
                    r.call_id
                ),
                LinkEvent::Closed(e) => {
                    log::warn!("sip {direction} {peer}: closing: {e}");
                    ended.get_or_insert(format!("closed by xsgw: {e}"));
                }
            }
        }
        if let Some(why) = ended {
            break why;
        }
    };

    link.handle_transport_error(Instant::now());
    for (_, reply) in pending.drain() {
        reply.finish(ClientOutcome::Failed(format!(
            "the connection to the Edge ended: {outcome}"
        )));
    }
    tls.send_close_notify();
    let _ = flush(&mut tls, &mut tcp);
    let _ = tcp.shutdown(Shutdown::Both);
    drop(raw);
    let _ = reader.join();
    Ended {
        why: outcome,
        heard: plaintext_seen,
    }
}

/// Lets rustls process what it has read and feeds the plaintext to the link; `Some(why)`
/// when the connection must end.
fn process(
    tls: &mut rustls::Connection,
    tcp: &mut TcpStream,
    link: &mut Link,
    plaintext: &mut [u8],
    pinging: bool,
    seen: &mut bool,
) -> Option<String> {
    match tls.process_new_packets() {
        Ok(_) => loop {
            match tls.reader().read(plaintext) {
                Ok(0) => return Some("peer sent close_notify".into()),
                Ok(n) => {
                    *seen = true;
                    link.handle_input(Instant::now(), plaintext.get(..n).unwrap_or_default())
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return None,
                Err(e) => return Some(format!("TLS stream ended: {e}")),
            }
        },
        Err(e) => {
            // Flush the alert rustls queued, then close.
            let _ = tls.write_tls(tcp);
            let hint = match (&e, pinging) {
                // TLS 1.3: the Edge's refusal of our certificate arrives as an alert after a
                // handshake that looked complete.
                (rustls::Error::AlertReceived(_), true) => {
                    "; the Edge may not accept the gateway certificate ([sip] cert) or its CA"
                }
                _ => "",
            };
            Some(format!("TLS error: {e}{hint}"))
        }
    }
}

fn flush(tls: &mut rustls::Connection, tcp: &mut TcpStream) -> std::io::Result<()> {
    while tls.wants_write() {
        tls.write_tls(tcp)?;
    }
    tcp.flush()
}
