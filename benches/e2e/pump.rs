//! Blocking TLS connections for the load generators.
//!
//! Two phases per connection. While it is set up (STARTTLS, SASL, the SIP handshake) one
//! thread reads and writes the socket itself through [`Conn`]. Then [`spawn`] hands it to a
//! pump: a reader thread that only moves raw bytes from the socket into a channel, and an
//! owner thread that holds the rustls state and the protocol [`Handler`], blocks on that
//! channel and on its command channel (no polling), and writes everything the handler
//! produced in one wake-up in one TLS write, so that the generator is not the bottleneck.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use crossbeam_channel::{bounded, select, unbounded, Sender};

/// A connection being set up: plain, then TLS once [`Conn::start_tls`] succeeded.
pub struct Conn {
    pub tcp: TcpStream,
    pub tls: Option<rustls::Connection>,
}

fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl Conn {
    pub fn new(tcp: TcpStream) -> io::Result<Conn> {
        tcp.set_nodelay(true)?;
        tcp.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(Conn { tcp, tls: None })
    }

    /// Writes plaintext (through TLS when it is up).
    pub fn write_all(&mut self, plain: &[u8]) -> io::Result<()> {
        match &mut self.tls {
            None => self.tcp.write_all(plain),
            Some(tls) => {
                tls.writer().write_all(plain)?;
                while tls.wants_write() {
                    tls.write_tls(&mut self.tcp)?;
                }
                Ok(())
            }
        }
    }

    /// Appends some plaintext to `buf`, blocking; `Ok(0)` when the peer closed.
    pub fn read(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
        let mut chunk = [0u8; 16 * 1024];
        let Some(tls) = &mut self.tls else {
            let n = self.tcp.read(&mut chunk)?;
            buf.extend_from_slice(&chunk[..n]);
            return Ok(n);
        };
        loop {
            match tls.reader().read(&mut chunk) {
                Ok(n) => {
                    buf.extend_from_slice(&chunk[..n]);
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            if tls.read_tls(&mut self.tcp)? == 0 {
                return Ok(0);
            }
            tls.process_new_packets().map_err(tls_error)?;
            while tls.wants_write() {
                tls.write_tls(&mut self.tcp)?;
            }
        }
    }

    /// Runs the TLS handshake; `early` are bytes already read that belong to it.
    pub fn start_tls(&mut self, mut tls: rustls::Connection, early: &[u8]) -> io::Result<()> {
        let mut rd = early;
        while !rd.is_empty() {
            tls.read_tls(&mut rd)?;
            tls.process_new_packets().map_err(tls_error)?;
        }
        while tls.is_handshaking() {
            tls.complete_io(&mut self.tcp)?;
        }
        while tls.wants_write() {
            tls.write_tls(&mut self.tcp)?;
        }
        self.tls = Some(tls);
        Ok(())
    }
}

/// The protocol side of a pumped connection; runs on the owner thread.
pub trait Handler: Send + 'static {
    type Command: Send + 'static;
    /// Plaintext from the peer (once at the start with what the set-up left pending, maybe
    /// nothing).
    /// Appends what to write to `out`; `false` closes the connection.
    fn on_input(&mut self, plain: &[u8], out: &mut Vec<u8>) -> bool;
    /// A command from the generator; appends what to write to `out`.
    fn on_command(&mut self, command: Self::Command, out: &mut Vec<u8>) -> Flow;
    /// The connection ended; `unsent` are the commands still queued (to be sent again).
    fn on_closed(&mut self, unsent: Vec<Self::Command>);
}

/// What a command leaves of the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// Write what is pending, then close at once (what the peer sent and was not read is
    /// discarded, with a TCP reset: a crash).
    Close,
    /// Write what is pending, then end the TCP stream (FIN, no stream close, no TLS
    /// close_notify) and read until the peer closes: a connection dropped mid-stream, with
    /// nothing written lost on the way.
    HalfClose,
}

/// A pumped connection: its command channel, and the socket to cut it ("dropped mid-run").
pub struct Pumped<C> {
    pub commands: Sender<C>,
    tcp: TcpStream,
}

impl<C> Pumped<C> {
    /// Cuts the connection at the TCP level, as a crash or a network failure would.
    pub fn cut(&self) {
        let _ = self.tcp.shutdown(Shutdown::Both);
    }
}

/// Most commands folded into one write.
const BATCH: usize = 512;

/// Hands a set-up connection to a reader and an owner thread.
pub fn spawn<H: Handler>(name: &str, conn: Conn, mut handler: H) -> io::Result<Pumped<H::Command>> {
    let Conn { tcp, tls } = conn;
    let mut tls = tls.ok_or_else(|| io::Error::other("pump needs TLS"))?;
    tcp.set_read_timeout(None)?;
    let mut reader = tcp.try_clone()?;
    let mut writer = tcp.try_clone()?;
    let handle = tcp.try_clone()?;
    let (raw_tx, raw_rx) = bounded::<Vec<u8>>(256);
    let (cmd_tx, cmd_rx) = unbounded::<H::Command>();
    std::thread::Builder::new()
        .name(format!("{name}-read"))
        .stack_size(64 * 1024)
        .spawn(move || {
            // One buffer for every read; only what was read is copied into the channel.
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match reader.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if raw_tx.send(buf[..n].to_vec()).is_err() {
                            break;
                        }
                    }
                }
            }
        })?;
    let label = name.to_string();
    std::thread::Builder::new()
        .name(format!("{name}-own"))
        .spawn(move || {
            let mut out = Vec::with_capacity(64 * 1024);
            let mut plain = Vec::with_capacity(64 * 1024);
            // What the set-up phase left decrypted inside rustls (a stream restart that came
            // with the SASL success, say): the peer may be waiting for our answer to it.
            let mut chunk = [0u8; 16 * 1024];
            while let Ok(n) = tls.reader().read(&mut chunk) {
                if n == 0 {
                    break;
                }
                plain.extend_from_slice(&chunk[..n]);
            }
            let mut open = handler.on_input(&plain, &mut out);
            plain.clear();
            if let Err(e) = write_plain(&mut tls, &mut writer, &out) {
                eprintln!("{label}: write failed, connection closed: {e}");
                open = false;
            }
            out.clear();
            let mut flow = Flow::Continue;
            while open {
                select! {
                    recv(cmd_rx) -> command => match command {
                        Ok(command) => {
                            flow = handler.on_command(command, &mut out);
                            for _ in 0..BATCH {
                                if flow != Flow::Continue {
                                    break;
                                }
                                match cmd_rx.try_recv() {
                                    Ok(command) => flow = handler.on_command(command, &mut out),
                                    Err(_) => break,
                                }
                            }
                            open = flow == Flow::Continue;
                        }
                        Err(_) => open = false,
                    },
                    recv(raw_rx) -> raw => match raw {
                        Ok(raw) => {
                            let more = decrypt(&mut tls, &raw, &mut plain);
                            if let Err(e) = &more {
                                eprintln!("{label}: TLS input refused, connection closed: {e}");
                            }
                            open = handler.on_input(&plain, &mut out) && more.unwrap_or(false);
                            plain.clear();
                        }
                        Err(_) => open = false,
                    },
                }
                if let Err(e) = write_plain(&mut tls, &mut writer, &out) {
                    eprintln!("{label}: write failed, connection closed: {e}");
                    open = false;
                }
                out.clear();
            }
            if flow == Flow::HalfClose {
                // The reader thread drains what the peer still sends until it closes.
                let _ = writer.shutdown(Shutdown::Write);
                while raw_rx.recv_timeout(Duration::from_secs(5)).is_ok() {}
            }
            let _ = writer.shutdown(Shutdown::Both);
            handler.on_closed(cmd_rx.try_iter().collect());
        })?;
    Ok(Pumped {
        commands: cmd_tx,
        tcp: handle,
    })
}

/// Encrypts and writes `plain` (rustls buffers a bounded amount at a time).
fn write_plain(tls: &mut rustls::Connection, tcp: &mut TcpStream, plain: &[u8]) -> io::Result<()> {
    let mut rest = plain;
    loop {
        let n = tls.writer().write(rest)?;
        rest = &rest[n..];
        while tls.wants_write() {
            tls.write_tls(tcp)?;
        }
        if rest.is_empty() {
            return Ok(());
        }
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
    }
}

/// Decrypts `raw` into `plain`; `Ok(false)` when the peer's close_notify came.
fn decrypt(tls: &mut rustls::Connection, raw: &[u8], plain: &mut Vec<u8>) -> io::Result<bool> {
    let mut rd = raw;
    let mut chunk = [0u8; 16 * 1024];
    while !rd.is_empty() {
        tls.read_tls(&mut rd)?;
        tls.process_new_packets().map_err(tls_error)?;
        loop {
            match tls.reader().read(&mut chunk) {
                Ok(0) => return Ok(false),
                Ok(n) => plain.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
    }
    Ok(true)
}
