//! The byte pipe under an S2S session: TCP, then TLS after STARTTLS, with deadlines.
//!
//! One thread owns the socket and the rustls `Connection` (sans-IO form: `read_tls`,
//! `process_new_packets`, `write_tls`); reads end at a deadline the session core chose, so no
//! timeout ever reaches the XML parser (it only sees bytes already read).

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

/// What a read produced.
#[derive(Debug)]
pub enum ReadOutcome {
    /// Bytes (plaintext) were read into the buffer.
    Data(usize),
    /// The deadline passed with nothing to read.
    Deadline,
    /// The peer closed the connection (or TLS with close_notify).
    Eof,
}

/// Longest single write wait: a peer that stops reading is cut off.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// TCP, or TCP with TLS.
pub struct Pipe {
    socket: TcpStream,
    tls: Option<rustls::Connection>,
    /// Writes fail after this (the handshake deadline of a stream not yet authenticated).
    write_deadline: Option<Instant>,
}

impl Pipe {
    pub fn new(socket: TcpStream) -> Self {
        let _ = socket.set_nodelay(true);
        let _ = socket.set_write_timeout(Some(WRITE_TIMEOUT));
        Pipe {
            socket,
            tls: None,
            write_deadline: None,
        }
    }

    /// Writes wait at most until `deadline` (and never longer than the usual write timeout);
    /// `None`: the usual write timeout only.
    pub fn set_write_deadline(&mut self, deadline: Option<Instant>) {
        if self.write_deadline != deadline {
            self.write_deadline = deadline;
            let _ = self.socket.set_write_timeout(Some(WRITE_TIMEOUT));
        }
    }

    /// Arms the socket's write timeout for the write about to happen.
    fn arm_write(&self) -> io::Result<()> {
        let Some(deadline) = self.write_deadline else {
            return Ok(());
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "write deadline passed",
            ));
        }
        self.socket.set_write_timeout(Some(left.min(WRITE_TIMEOUT)))
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The peer's certificate chain once TLS is up.
    pub fn peer_certificates(&self) -> Option<&[rustls::pki_types::CertificateDer<'static>]> {
        self.tls.as_ref().and_then(|c| c.peer_certificates())
    }

    /// Runs the TLS handshake on this socket, `early` being bytes already read that belong
    /// to TLS, until done or `deadline`.
    pub fn start_tls(
        &mut self,
        conn: impl Into<rustls::Connection>,
        early: &[u8],
        deadline: Instant,
    ) -> io::Result<()> {
        let mut conn = conn.into();
        if !early.is_empty() {
            let mut rest = early;
            while !rest.is_empty() {
                conn.read_tls(&mut rest)?;
                conn.process_new_packets().map_err(invalid)?;
            }
        }
        let done = handshake(&mut conn, &mut self.socket, deadline);
        let _ = self.socket.set_write_timeout(Some(WRITE_TIMEOUT));
        done?;
        self.tls = Some(conn);
        Ok(())
    }

    /// Reads what is available, waiting until `deadline` at most. TLS records are read only
    /// once rustls has handed over every plaintext byte it held, so rustls never holds more
    /// than the plaintext of one record (16 KiB) besides the record being received.
    pub fn read(&mut self, buf: &mut [u8], deadline: Instant) -> io::Result<ReadOutcome> {
        loop {
            let Some(conn) = self.tls.as_mut() else {
                if set_deadline(&self.socket, deadline).is_err() {
                    return Ok(ReadOutcome::Deadline);
                }
                return match self.socket.read(buf) {
                    Ok(0) => Ok(ReadOutcome::Eof),
                    Ok(n) => Ok(ReadOutcome::Data(n)),
                    Err(e) if is_timeout(&e) => Ok(ReadOutcome::Deadline),
                    Err(e) => Err(e),
                };
            };
            match conn.reader().read(buf) {
                Ok(0) => return Ok(ReadOutcome::Eof),
                Ok(n) => return Ok(ReadOutcome::Data(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(ReadOutcome::Eof),
                Err(e) => return Err(e),
            }
            while conn.wants_write() {
                conn.write_tls(&mut self.socket)?;
            }
            if set_deadline(&self.socket, deadline).is_err() {
                return Ok(ReadOutcome::Deadline);
            }
            match conn.read_tls(&mut self.socket) {
                Ok(0) => return Ok(ReadOutcome::Eof),
                Ok(_) => {
                    if let Err(e) = conn.process_new_packets() {
                        let _ = conn.write_tls(&mut self.socket);
                        return Err(invalid(e));
                    }
                }
                Err(e) if is_timeout(&e) => return Ok(ReadOutcome::Deadline),
                Err(e) => return Err(e),
            }
        }
    }

    /// Writes all of `bytes` (encrypted once TLS is up).
    pub fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.arm_write()?;
        match self.tls.as_mut() {
            None => self.socket.write_all(bytes),
            Some(conn) => {
                conn.writer().write_all(bytes)?;
                while conn.wants_write() {
                    conn.write_tls(&mut self.socket)?;
                }
                Ok(())
            }
        }
    }

    /// Closes politely: TLS close_notify, then the socket.
    pub fn close(mut self) {
        if let Some(conn) = self.tls.as_mut() {
            conn.send_close_notify();
            while conn.wants_write() {
                if conn.write_tls(&mut self.socket).is_err() {
                    break;
                }
            }
        }
        let _ = self.socket.shutdown(Shutdown::Both);
    }
}

/// Runs a TLS handshake on `socket` until it is done or `deadline` passes, however slowly the
/// peer's bytes come: one read at a time, each bounded by what is left (`complete_io` would
/// loop over reads until the handshake ends, each read with a fresh timeout, so a peer
/// dripping a byte now and then would hold it for ever). The alert rustls queued on a
/// failure is sent before returning. Leaves the socket's timeouts set to what was left.
pub fn handshake(
    conn: &mut rustls::Connection,
    socket: &mut TcpStream,
    deadline: Instant,
) -> io::Result<()> {
    let timed_out = || io::Error::new(io::ErrorKind::TimedOut, "TLS handshake deadline passed");
    while conn.is_handshaking() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(timed_out());
        }
        socket.set_write_timeout(Some(left))?;
        while conn.wants_write() {
            conn.write_tls(socket)?;
        }
        if !conn.is_handshaking() {
            break;
        }
        set_deadline(socket, deadline).map_err(|_| timed_out())?;
        match conn.read_tls(socket) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "peer closed during the TLS handshake",
                ))
            }
            Ok(_) => {}
            Err(e) if is_timeout(&e) => return Err(timed_out()),
            Err(e) => return Err(e),
        }
        if let Err(e) = conn.process_new_packets() {
            // Send the alert rustls queued, so the peer learns why.
            let _ = conn.write_tls(socket);
            return Err(invalid(e));
        }
    }
    while conn.wants_write() {
        conn.write_tls(socket)?;
    }
    Ok(())
}

fn set_deadline(socket: &TcpStream, deadline: Instant) -> io::Result<()> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(io::Error::new(io::ErrorKind::TimedOut, "deadline passed"));
    }
    socket.set_read_timeout(Some(left))
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

fn invalid(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}
