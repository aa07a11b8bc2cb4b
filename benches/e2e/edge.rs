//! The SIP Access Edge: mutual TLS both ways with xsgw, many SIP users of contoso.test.
//!
//! - Its listener takes xsgw's own connection (xsgw's client certificate checked against the
//!   run's CA) and answers every request with 200 at once; a MESSAGE from the bench's
//!   partner ends its XMPP→SIP message as delivered.
//! - Its client connection to xsgw's SIP listener carries the SIP→XMPP MESSAGEs; a final
//!   response ends each (2xx delivered, anything else an error answer).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::pki_types::ServerName;
use xsgw::sip::{
    name, response_to, Frame, FrameConfig, Framer, KeepaliveRole, Message, Request, StatusCode,
};
use xsgw::tls::{load_roots, provider, Identity};

use crate::partner::{seq_after, USERS};
use crate::pki::{Pki, GATEWAY_FQDN, HOSTED, PARTNER};
use crate::pump::{self, Conn, Flow, Handler, Pumped};
use crate::tracker::{End, Tracker};

/// Commands for an Edge connection.
pub enum EdgeCmd {
    /// SIP→XMPP MESSAGEs, numbered (client connection only).
    Messages(Range<u64>),
    /// Close the connection at once after what came before, unread requests and all (a
    /// crash of the Edge: xsgw must answer what it had sent there with errors).
    Cut,
}

/// The Edge.
pub struct Edge {
    pub s2x: Arc<Tracker>,
    pub x2s: Arc<Tracker>,
    /// Final responses to the SIP→XMPP MESSAGEs, by status code.
    pub statuses: Mutex<BTreeMap<u16, u64>>,
    /// xsgw's connections to the Edge accepted (the first and every reconnection).
    pub accepted: AtomicU64,
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
    from_gateway: Mutex<Vec<Pumped<EdgeCmd>>>,
    to_gateway: Mutex<Option<Pumped<EdgeCmd>>>,
    stopping: AtomicBool,
}

impl Edge {
    /// Listens on `listen` for xsgw's connection.
    pub fn start(
        pki: &Pki,
        listen: SocketAddr,
        s2x: Arc<Tracker>,
        x2s: Arc<Tracker>,
    ) -> Result<(Arc<Edge>, SocketAddr), String> {
        let identity = Identity::load(&pki.path("edge.pem"), &pki.path("edge.key"))
            .map_err(|e| e.to_string())?;
        let roots = Arc::new(load_roots(&pki.path("ca.pem")).map_err(|e| e.to_string())?);
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::clone(&roots),
            provider(),
        )
        .build()
        .map_err(|e| e.to_string())?;
        let server = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(Arc::clone(
                &identity.key,
            ))));
        let client = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_client_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(Arc::clone(
                &identity.key,
            ))));
        let listener = TcpListener::bind(listen).map_err(|e| format!("{listen}: {e}"))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let edge = Arc::new(Edge {
            s2x,
            x2s,
            statuses: Mutex::new(BTreeMap::new()),
            accepted: AtomicU64::new(0),
            server: Arc::new(server),
            client: Arc::new(client),
            from_gateway: Mutex::new(Vec::new()),
            to_gateway: Mutex::new(None),
            stopping: AtomicBool::new(false),
        });
        let e = Arc::clone(&edge);
        std::thread::Builder::new()
            .name("edge-accept".into())
            .spawn(move || {
                for tcp in listener.incoming() {
                    if e.stopping.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(tcp) = tcp else { continue };
                    if let Err(err) = e.accept(tcp) {
                        eprintln!("edge: xsgw's connection failed to set up: {err}");
                    }
                }
            })
            .map_err(|e| e.to_string())?;
        Ok((edge, addr))
    }

    fn accept(self: &Arc<Self>, tcp: TcpStream) -> io::Result<()> {
        let mut conn = Conn::new(tcp)?;
        let tls =
            rustls::ServerConnection::new(Arc::clone(&self.server)).map_err(io::Error::other)?;
        conn.start_tls(rustls::Connection::Server(tls), &[])?;
        self.accepted.fetch_add(1, Ordering::SeqCst);
        let handler = SipHandler {
            edge: Arc::clone(self),
            framer: Framer::new(FrameConfig::default()),
        };
        let pumped = pump::spawn("edge-in", conn, handler)?;
        self.from_gateway.lock().unwrap().push(pumped);
        Ok(())
    }

    /// Opens the Edge's own connection to xsgw's SIP listener.
    pub fn connect(self: &Arc<Self>, gateway: SocketAddr) -> io::Result<()> {
        let tcp = TcpStream::connect_timeout(&gateway, Duration::from_secs(10))?;
        let mut conn = Conn::new(tcp)?;
        let name = ServerName::try_from(GATEWAY_FQDN).map_err(io::Error::other)?;
        let tls = rustls::ClientConnection::new(Arc::clone(&self.client), name)
            .map_err(io::Error::other)?;
        conn.start_tls(rustls::Connection::Client(tls), &[])?;
        let handler = SipHandler {
            edge: Arc::clone(self),
            framer: Framer::new(FrameConfig {
                keepalive: KeepaliveRole::Client,
                ..FrameConfig::default()
            }),
        };
        *self.to_gateway.lock().unwrap() = Some(pump::spawn("edge-out", conn, handler)?);
        Ok(())
    }

    /// Sends SIP→XMPP MESSAGEs on the Edge's connection to xsgw.
    pub fn send(&self, range: Range<u64>) -> bool {
        match &*self.to_gateway.lock().unwrap() {
            Some(p) => p.commands.send(EdgeCmd::Messages(range)).is_ok(),
            None => false,
        }
    }

    /// Cuts xsgw's connections to the Edge (xsgw reconnects with its backoff).
    pub fn cut_from_gateway(&self) {
        for p in self.from_gateway.lock().unwrap().drain(..) {
            let _ = p.commands.send(EdgeCmd::Cut);
        }
    }

    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        for p in self.from_gateway.lock().unwrap().drain(..) {
            p.cut();
        }
        if let Some(p) = self.to_gateway.lock().unwrap().take() {
            p.cut();
        }
    }
}

/// Either Edge connection: answers requests, takes responses.
struct SipHandler {
    edge: Arc<Edge>,
    framer: Framer,
}

fn header(m: &Message, h: name::HeaderName) -> String {
    m.first(h)
        .and_then(|f| f.value_str().map(|v| v.into_owned()))
        .unwrap_or_default()
}

impl SipHandler {
    fn request(&mut self, m: Message, out: &mut Vec<u8>) {
        if let Some(seq) = std::str::from_utf8(m.body())
            .ok()
            .and_then(|b| seq_after(b, "bench x2s "))
        {
            self.edge.x2s.mark_seen(seq);
            self.edge.x2s.end(seq, End::Delivered);
        }
        if m.method() == Some("ACK") {
            return;
        }
        if let Ok(request) = Request::from_message(m) {
            if let Ok(response) = response_to(&request, StatusCode::OK, Some("edge")) {
                response.write(out);
            }
        }
    }

    fn response(&mut self, m: Message) {
        let Some(status) = m.status() else { return };
        if status < 200 {
            return;
        }
        let call_id = header(&m, name::CALL_ID);
        if let Some(seq) = seq_after(&call_id, "b") {
            let end = if (200..300).contains(&status) {
                End::Delivered
            } else {
                End::Error
            };
            self.edge.s2x.end(seq, end);
            *self
                .edge
                .statuses
                .lock()
                .unwrap()
                .entry(status)
                .or_default() += 1;
        }
    }
}

impl Handler for SipHandler {
    type Command = EdgeCmd;

    fn on_input(&mut self, plain: &[u8], out: &mut Vec<u8>) -> bool {
        self.framer.push(plain);
        loop {
            match self.framer.next_frame() {
                Ok(Some(Frame::Message(m))) => {
                    if m.is_request() {
                        self.request(m, out);
                    } else {
                        self.response(m);
                    }
                }
                Ok(Some(Frame::Ping)) => out.extend_from_slice(b"\r\n"),
                Ok(Some(_)) => {}
                Ok(None) => return true,
                Err(e) => {
                    eprintln!("edge: unframable input from xsgw, connection closed: {e}");
                    return false;
                }
            }
        }
    }

    fn on_command(&mut self, command: EdgeCmd, out: &mut Vec<u8>) -> Flow {
        match command {
            EdgeCmd::Messages(range) => {
                let now = self.edge.s2x.now_ns();
                let mut text = String::new();
                for seq in range {
                    let k = seq % USERS;
                    let body = format!("bench s2x {seq}");
                    let _ = write!(
                        text,
                        "MESSAGE sip:u{k}@{PARTNER} SIP/2.0\r\n\
                         Via: SIP/2.0/TLS 127.0.40.3:5061;branch=z9hG4bKb{seq}\r\n\
                         Max-Forwards: 70\r\n\
                         From: <sip:s{k}@{HOSTED}>;tag=t{seq}\r\n\
                         To: <sip:u{k}@{PARTNER}>\r\n\
                         Call-ID: b{seq}@edge.bench.test\r\n\
                         CSeq: 1 MESSAGE\r\n\
                         Content-Type: text/plain;charset=UTF-8\r\n\
                         Content-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    self.edge.s2x.mark_sent(seq, now);
                }
                out.extend_from_slice(text.as_bytes());
                Flow::Continue
            }
            EdgeCmd::Cut => Flow::Close,
        }
    }

    fn on_closed(&mut self, _: Vec<EdgeCmd>) {}
}
