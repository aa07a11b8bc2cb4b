//! The XMPP partner server: `partner.bench.test` with many users, authenticating to xsgw like
//! a real server in both directions, on xsgw's own sans-IO sessions (`xsgw::xmpp`).
//!
//! - It accepts xsgw's outbound stream (STARTTLS, then SASL EXTERNAL with xsgw's certificate
//!   for contoso.test: [`InboundSession`]), takes the messages, and answers every
//!   `<iq type='get'/>` (xsgw's barrier ping, XEP-0199) with a result. The time from reading
//!   the ping to handing its answer to the outgoing stream is "the partner's own answer time".
//! - It opens its own stream to xsgw (STARTTLS, SASL EXTERNAL: [`OutboundSession`]) that
//!   carries its users' messages toward SIP and the ping answers; when that stream is cut it
//!   opens a new one and sends what was queued behind it.
//! - [`open_idle`]: one authenticated stream from another domain, held open and silent.

use std::fmt::Write as _;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use xsgw::config::Credentials;
use xsgw::tls::xmpp::XmppTls;
use xsgw::tls::{load_roots, Identity};
use xsgw::xmpp::element::{Element, NS_SERVER};
use xsgw::xmpp::outbound::{OutboundConfig, OutboundEvent, OutboundPurpose, OutboundSession, Want};
use xsgw::xmpp::session::{
    CertifiedFor, DialbackSecret, InboundConfig, InboundSession, SessionEvent, TlsPolicy,
};
use xsgw::xmpp::stream::StreamLimits;

use crate::pki::{Pki, HOSTED, PARTNER};
use crate::pump::{self, Conn, Flow, Handler, Pumped};
use crate::tracker::{End, Tracker};

/// Users on each side; message `seq` goes between user `seq % USERS` of both.
pub const USERS: u64 = 1000;

/// TLS for a partner domain, from its certificate and the run's CA.
pub fn xmpp_tls(pki: &Pki, name: &str) -> Result<XmppTls, String> {
    let cert = pki.path(&format!("{name}.pem"));
    let key = pki.path(&format!("{name}.key"));
    let identity = Identity::load(&cert, &key).map_err(|e| e.to_string())?;
    let roots = Arc::new(load_roots(&pki.path("ca.pem")).map_err(|e| e.to_string())?);
    let credentials = Credentials {
        sip: identity.clone(),
        sip_roots: Arc::clone(&roots),
        xmpp: Some(identity),
        xmpp_roots: roots,
    };
    XmppTls::new(&credentials)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| "no XMPP identity".to_string())
}

/// What goes out on the partner's stream to xsgw.
pub enum Out {
    /// Messages from the partner's users, numbered.
    Messages(Range<u64>),
    /// The answer to a ping read at `read_ns`.
    Pong {
        id: String,
        from: String,
        to: String,
        read_ns: u64,
    },
    /// Drop the stream after what came before: TCP ends without `</stream:stream>` (xsgw
    /// reads every stanza written before it).
    Cut,
}

struct Slot {
    commands: Option<Sender<Out>>,
    /// Commands waiting for a new stream.
    pending: Vec<Out>,
    pump: Option<Pumped<Out>>,
}

/// The partner server.
pub struct Partner {
    tls: XmppTls,
    gateway: SocketAddr,
    pub s2x: Arc<Tracker>,
    pub x2s: Arc<Tracker>,
    /// Pings answered: time from reading each to queuing its answer, in nanoseconds.
    pub answer_ns: Mutex<Vec<u64>>,
    /// SIP→XMPP messages read from xsgw's stream (seq set in `s2x` via `mark_seen`).
    pub received: AtomicU64,
    /// Pings (xsgw's delivery barriers) read.
    pub pings: AtomicU64,
    /// Streams from xsgw accepted and authenticated.
    pub inbound_streams: AtomicU64,
    /// Streams to xsgw opened (the first and every reopening).
    pub outbound_streams: AtomicU64,
    slot: Mutex<Slot>,
    inbound: Mutex<Vec<Pumped<()>>>,
    stopping: AtomicBool,
    next_id: AtomicU64,
}

impl Partner {
    /// Listens on `listen` for xsgw's streams; opens its own to `gateway`.
    pub fn start(
        pki: &Pki,
        listen: SocketAddr,
        gateway: SocketAddr,
        s2x: Arc<Tracker>,
        x2s: Arc<Tracker>,
    ) -> Result<(Arc<Partner>, SocketAddr), String> {
        let listener = TcpListener::bind(listen).map_err(|e| format!("{listen}: {e}"))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let partner = Arc::new(Partner {
            tls: xmpp_tls(pki, "partner")?,
            gateway,
            s2x,
            x2s,
            answer_ns: Mutex::new(Vec::new()),
            received: AtomicU64::new(0),
            pings: AtomicU64::new(0),
            inbound_streams: AtomicU64::new(0),
            outbound_streams: AtomicU64::new(0),
            slot: Mutex::new(Slot {
                commands: None,
                pending: Vec::new(),
                pump: None,
            }),
            inbound: Mutex::new(Vec::new()),
            stopping: AtomicBool::new(false),
            next_id: AtomicU64::new(0),
        });
        let p = Arc::clone(&partner);
        std::thread::Builder::new()
            .name("partner-accept".into())
            .spawn(move || {
                for tcp in listener.incoming() {
                    if p.stopping.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(tcp) = tcp else { continue };
                    let p = Arc::clone(&p);
                    let _ =
                        std::thread::Builder::new()
                            .name("partner-in".into())
                            .spawn(move || {
                                if let Err(e) = p.accept(tcp) {
                                    eprintln!("partner: a stream from xsgw failed to set up: {e}");
                                }
                            });
                }
            })
            .map_err(|e| e.to_string())?;
        Ok((partner, addr))
    }

    fn accept(self: &Arc<Self>, tcp: TcpStream) -> io::Result<()> {
        let mut config = InboundConfig::new([PARTNER.to_string()], "bench".into());
        config.tls = TlsPolicy::Required;
        config.dialback = false;
        config.sasl = true;
        config.dialback_secret = DialbackSecret("bench-partner".into());
        config.idle_timeout = Duration::from_secs(24 * 3600);
        config.limits = StreamLimits::default();
        let me = Arc::clone(self);
        let mut session = InboundSession::new(
            config,
            Instant::now(),
            Box::new(move || format!("p{}", me.next_id.fetch_add(1, Ordering::Relaxed))),
        );
        let mut conn = Conn::new(tcp)?;
        let mut out = Vec::new();
        let mut buf = Vec::new();
        loop {
            session.poll_transmit(&mut out);
            if !out.is_empty() {
                conn.write_all(&out)?;
                out.clear();
            }
            let mut authenticated = false;
            let mut acted = false;
            while let Some(event) = session.poll_event() {
                match event {
                    SessionEvent::StartTls => {
                        acted = true;
                        let early = session.take_tls_bytes();
                        let tls = self.tls.accept().map_err(io::Error::other)?;
                        conn.start_tls(rustls::Connection::Server(tls), &early)?;
                        let peer = conn.tls.as_ref().and_then(|t| t.peer_certificates());
                        let certified = self.tls.verified_peer(peer).ok().map(|cert| {
                            Box::new(move |domain: &str| cert.is_valid_for(domain)) as CertifiedFor
                        });
                        session.handle_tls_established(Instant::now(), certified);
                    }
                    SessionEvent::Authenticated { .. } => authenticated = true,
                    SessionEvent::Closed(reason) => {
                        return Err(io::Error::other(format!("closed: {reason:?}")))
                    }
                    SessionEvent::VerifyDialback { .. } | SessionEvent::Stanza { .. } => {}
                }
            }
            if authenticated {
                break;
            }
            if acted {
                continue;
            }
            buf.clear();
            if conn.read(&mut buf)? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            session.handle_input(Instant::now(), &buf);
        }
        self.inbound_streams.fetch_add(1, Ordering::SeqCst);
        let handler = FromGateway {
            session,
            partner: Arc::clone(self),
        };
        let pumped = pump::spawn("partner-in", conn, handler)?;
        self.inbound.lock().unwrap().push(pumped);
        Ok(())
    }

    /// Opens the partner's stream to xsgw (blocking until authenticated).
    pub fn connect(self: &Arc<Self>) -> io::Result<()> {
        let (conn, session) = open_stream(&self.tls, self.gateway, PARTNER, HOSTED)?;
        self.outbound_streams.fetch_add(1, Ordering::SeqCst);
        let handler = ToGateway {
            session,
            partner: Arc::clone(self),
        };
        let pumped = pump::spawn("partner-out", conn, handler)?;
        let mut slot = self.slot.lock().unwrap();
        for command in slot.pending.drain(..) {
            let _ = pumped.commands.send(command);
        }
        slot.commands = Some(pumped.commands.clone());
        slot.pump = Some(pumped);
        Ok(())
    }

    /// Queues a command for the stream to xsgw (kept while it is being reopened).
    pub fn send(&self, command: Out) {
        let mut slot = self.slot.lock().unwrap();
        let command = match &slot.commands {
            Some(tx) => match tx.send(command) {
                Ok(()) => return,
                Err(e) => e.0,
            },
            None => command,
        };
        slot.pending.push(command);
    }

    fn outbound_closed(self: &Arc<Self>, unsent: Vec<Out>) {
        {
            let mut slot = self.slot.lock().unwrap();
            slot.commands = None;
            slot.pending.splice(0..0, unsent);
        }
        if self.stopping.load(Ordering::SeqCst) {
            return;
        }
        let me = Arc::clone(self);
        let _ = std::thread::Builder::new()
            .name("partner-redial".into())
            .spawn(move || {
                // xsgw may be restarting between phases: quiet for the first few seconds.
                let mut attempts = 0u32;
                while !me.stopping.load(Ordering::SeqCst) {
                    match me.connect() {
                        Ok(()) => return,
                        Err(e) => {
                            attempts += 1;
                            if attempts % 100 == 0 {
                                eprintln!("partner: reopening the stream to xsgw: {e}");
                            }
                            std::thread::sleep(Duration::from_millis(50));
                        }
                    }
                }
            });
    }

    /// Cuts the partner's stream to xsgw (it reopens at once).
    pub fn cut_outbound(&self) {
        self.send(Out::Cut);
    }

    /// Cuts the streams xsgw opened to the partner (xsgw opens a new one for its next stanza).
    pub fn cut_inbound(&self) {
        for pumped in self.inbound.lock().unwrap().drain(..) {
            pumped.cut();
        }
    }

    /// Closes everything.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.cut_inbound();
        let mut slot = self.slot.lock().unwrap();
        slot.commands = None;
        if let Some(p) = slot.pump.take() {
            p.cut();
        }
    }
}

/// Opens an authenticated stream from `local` to `remote` at `addr`: STARTTLS, then SASL
/// EXTERNAL with the certificate of `tls` (dialback is not offered to xsgw's side).
pub fn open_stream(
    tls: &XmppTls,
    addr: SocketAddr,
    local: &str,
    remote: &str,
) -> io::Result<(Conn, OutboundSession)> {
    let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
    let mut conn = Conn::new(tcp)?;
    let config = OutboundConfig {
        local: local.into(),
        remote: remote.into(),
        tls: Want::Required,
        sasl: Want::Required,
        dialback: Want::Disabled,
        tls_available: true,
        dialback_secret: DialbackSecret("bench-partner".into()),
        handshake_timeout: Duration::from_secs(60),
        keepalive: Duration::from_secs(24 * 3600),
        idle_timeout: Duration::from_secs(24 * 3600),
        max_queue: 16,
        limits: StreamLimits::default(),
    };
    let mut session = OutboundSession::new(config, OutboundPurpose::Stanzas, Instant::now());
    let mut out = Vec::new();
    let mut buf = Vec::new();
    loop {
        session.poll_transmit(&mut out);
        if !out.is_empty() {
            conn.write_all(&out)?;
            out.clear();
        }
        let mut ready = false;
        let mut acted = false;
        while let Some(event) = session.poll_event() {
            match event {
                OutboundEvent::StartTls => {
                    let early = session.take_tls_bytes();
                    let client = tls.connect(remote).map_err(io::Error::other)?;
                    conn.start_tls(rustls::Connection::Client(client), &early)?;
                    let chain = conn.tls.as_ref().and_then(|t| t.peer_certificates());
                    let valid = tls.verify_server(chain, remote).is_ok();
                    session.handle_tls_established(Instant::now(), valid);
                    acted = true;
                }
                OutboundEvent::Authenticated { .. } => ready = true,
                OutboundEvent::Closed(why) => {
                    return Err(io::Error::other(format!("{local} → {remote}: {why:?}")))
                }
                OutboundEvent::Verified(_) => {}
            }
        }
        if ready {
            session.poll_transmit(&mut out);
            if !out.is_empty() {
                conn.write_all(&out)?;
            }
            return Ok((conn, session));
        }
        if acted {
            continue;
        }
        buf.clear();
        if conn.read(&mut buf)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        session.handle_input(Instant::now(), &buf);
    }
}

/// One idle stream from `i<n>.idle.bench.test`, authenticated and then left silent.
pub fn open_idle(tls: &XmppTls, addr: SocketAddr, n: usize) -> io::Result<Conn> {
    let local = format!("i{n}.{}", crate::pki::IDLE_SUFFIX);
    open_stream(tls, addr, &local, HOSTED).map(|(conn, _)| conn)
}

/// The stream xsgw opened to the partner.
struct FromGateway {
    session: InboundSession,
    partner: Arc<Partner>,
}

/// The number after `prefix` in `text`.
pub fn seq_after(text: &str, prefix: &str) -> Option<u64> {
    let rest = &text[text.find(prefix)? + prefix.len()..];
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

impl FromGateway {
    fn stanza(&mut self, element: Element) {
        let p = &self.partner;
        match element.name.as_str() {
            "message" => {
                if element.attr("type") == Some("error") {
                    if let Some(seq) = element.attr("id").and_then(|id| seq_after(id, "x")) {
                        p.x2s.end(seq, End::Error);
                    }
                } else if let Some(seq) = element
                    .child("body", NS_SERVER)
                    .and_then(|b| seq_after(&b.text(), "bench s2x "))
                {
                    p.received.fetch_add(1, Ordering::Relaxed);
                    p.s2x.mark_seen(seq);
                }
            }
            "iq" if element.attr("type") == Some("get") => {
                let read_ns = p.s2x.now_ns();
                p.pings.fetch_add(1, Ordering::Relaxed);
                p.send(Out::Pong {
                    id: element.attr("id").unwrap_or_default().to_string(),
                    from: element.attr("to").unwrap_or_default().to_string(),
                    to: element.attr("from").unwrap_or_default().to_string(),
                    read_ns,
                });
            }
            _ => {}
        }
    }
}

impl Handler for FromGateway {
    type Command = ();

    fn on_input(&mut self, plain: &[u8], out: &mut Vec<u8>) -> bool {
        if !plain.is_empty() {
            self.session.handle_input(Instant::now(), plain);
        }
        let mut open = true;
        while let Some(event) = self.session.poll_event() {
            match event {
                SessionEvent::Stanza { element, .. } => self.stanza(element),
                SessionEvent::Closed(_) => open = false,
                _ => {}
            }
        }
        self.session.poll_transmit(out);
        open
    }

    fn on_command(&mut self, _: (), _: &mut Vec<u8>) -> Flow {
        Flow::Continue
    }

    fn on_closed(&mut self, _: Vec<()>) {}
}

/// The partner's stream to xsgw.
struct ToGateway {
    session: OutboundSession,
    partner: Arc<Partner>,
}

impl Handler for ToGateway {
    type Command = Out;

    fn on_input(&mut self, plain: &[u8], out: &mut Vec<u8>) -> bool {
        if !plain.is_empty() {
            self.session.handle_input(Instant::now(), plain);
        }
        let mut open = true;
        while let Some(event) = self.session.poll_event() {
            if let OutboundEvent::Closed(_) = event {
                open = false;
            }
        }
        self.session.poll_transmit(out);
        open
    }

    fn on_command(&mut self, command: Out, out: &mut Vec<u8>) -> Flow {
        let mut text = String::new();
        match command {
            Out::Messages(range) => {
                let now = self.partner.x2s.now_ns();
                for seq in range {
                    let k = seq % USERS;
                    let _ = write!(
                        text,
                        "<message from='u{k}@{PARTNER}/bench' to='s{k}@{HOSTED}' type='chat' id='x{seq}'>\
                         <body>bench x2s {seq}</body></message>"
                    );
                    self.partner.x2s.mark_sent(seq, now);
                }
            }
            Out::Pong {
                id,
                from,
                to,
                read_ns,
            } => {
                let attr = |v: &str| xsgw::xmpp::element::escape(v, true);
                let _ = write!(
                    text,
                    "<iq type='result' id='{}' from='{}' to='{}'/>",
                    attr(&id),
                    attr(&from),
                    attr(&to)
                );
                let answered = self.partner.s2x.now_ns().saturating_sub(read_ns);
                self.partner.answer_ns.lock().unwrap().push(answered);
            }
            Out::Cut => return Flow::HalfClose,
        }
        out.extend_from_slice(text.as_bytes());
        Flow::Continue
    }

    fn on_closed(&mut self, unsent: Vec<Out>) {
        let unsent = unsent
            .into_iter()
            .filter(|c| !matches!(c, Out::Cut))
            .collect();
        self.partner.outbound_closed(unsent);
    }
}
