//! The two ways to ask the running gateway how it is: the control socket (`xsgw status`) and
//! the optional Prometheus endpoint (`[metrics] listen`). Each is one thread serving one
//! client at a time; each asks the router for a snapshot with [`super::status::ask`], which
//! never blocks the router (a `try_send`, then a bounded wait), and renders it
//! ([`crate::status`]).
//!
//! The control socket is a Unix stream socket, [`CONTROL_SOCKET`] under `[gateway]
//! state_dir` (not `/run/xsgw/`): the state directory already exists, belongs to the service
//! user and is not world-readable (0750), under systemd, the init script and in tests alike,
//! while `/run/xsgw/` would need root (or `RuntimeDirectory=`) to create. The socket itself
//! is mode 0600: only the service user (and root) may ask (it is bound with the process's
//! umask, then set to 0600 at once; the 0750 state directory keeps other users out of that
//! moment too). There is no network listener for it. Protocol: one request line (`status`,
//! `status json`, or `status live` for `xsgw diagnose`; at most [`MAX_REQUEST`] bytes within
//! [`CLIENT_DEADLINE`]), then the answer, then the server closes.
//!
//! The metrics endpoint is a small HTTP/1.1 responder: `GET /metrics` only (404 for other
//! paths, 405 for other methods, 400 for what is not HTTP), request head at most
//! [`MAX_REQUEST_HEAD`] bytes within [`CLIENT_DEADLINE`], `Connection: close` after each
//! answer. A slow or hostile client holds the thread at most the deadlines (a few seconds)
//! and never the router.
//!
//! Both threads poll their non-blocking listener every [`ACCEPT_POLL`] and stop when the
//! gateway's stop flag is set; the control thread then removes its socket file.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use super::router::RouterEvent;
use super::status::ask;
use crate::logsafe::RateLimit;

/// The control socket's file name under `[gateway] state_dir`.
pub const CONTROL_SOCKET: &str = "control.sock";
/// Longest control request line.
pub const MAX_REQUEST: usize = 64;
/// Longest HTTP request head (request line and headers).
pub const MAX_REQUEST_HEAD: usize = 4096;
/// Time a client has to send its request, and to take the answer.
pub const CLIENT_DEADLINE: Duration = Duration::from_secs(2);
/// How often a listener looks for a client and at the stop flag.
pub const ACCEPT_POLL: Duration = Duration::from_millis(100);

/// Where the control socket of the gateway using `state_dir` is.
pub fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join(CONTROL_SOCKET)
}

/// Binds the control socket at `path` (mode 0600), replacing a stale socket file left by a
/// gateway that did not stop cleanly. Refuses when another gateway answers on it, and when
/// something other than a socket is there.
pub fn bind_control(path: &Path) -> std::io::Result<UnixListener> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "a file that is not a socket is in the way",
            ));
        }
        if UnixStream::connect(path).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                "another xsgw answers on it",
            ));
        }
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Binds the metrics endpoint.
pub fn bind_metrics(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let listener = TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Serves `xsgw status` until the gateway stops; then removes the socket file.
pub fn serve_control(
    listener: UnixListener,
    path: &Path,
    events: &Sender<RouterEvent>,
    stopping: &AtomicBool,
) {
    while !stopping.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                if let Err(e) = answer_control(stream, events) {
                    log::debug!("control socket: a client went away: {e}");
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(ACCEPT_POLL),
            Err(e) => {
                log::warn!("control socket {}: accept failed: {e}", path.display());
                std::thread::sleep(ACCEPT_POLL);
            }
        }
    }
    let _ = std::fs::remove_file(path);
}

/// Reads up to `max` bytes until `end` is seen, within `deadline`.
fn read_until(
    stream: &mut impl Read,
    set_timeout: &mut dyn FnMut(Duration) -> std::io::Result<()>,
    end: &[u8],
    max: usize,
) -> std::io::Result<Vec<u8>> {
    let deadline = Instant::now() + CLIENT_DEADLINE;
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    while !got.windows(end.len()).any(|w| w == end) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        set_timeout(left)?;
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        got.extend_from_slice(buf.get(..n).unwrap_or_default());
        if got.len() > max {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("request longer than {max} bytes"),
            ));
        }
    }
    Ok(got)
}

fn answer_control(mut stream: UnixStream, events: &Sender<RouterEvent>) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    let reader = stream.try_clone()?;
    let request = read_until(
        &mut &reader,
        &mut |d| reader.set_read_timeout(Some(d)),
        b"\n",
        MAX_REQUEST,
    )?;
    stream.set_write_timeout(Some(CLIENT_DEADLINE))?;
    let request = String::from_utf8_lossy(&request);
    let answer = match request.trim() {
        "status" | "status text" => ask(events).map(|s| crate::status::text(&s)),
        "status json" => ask(events).map(|s| crate::status::json::snapshot(&s)),
        // For `xsgw diagnose`: Edge connections, pid, then the one-line summary.
        "status live" => ask(events)
            .map(|s| format!("{}\t{}\t{}\n", s.edge.len(), s.pid, crate::status::live(&s))),
        _ => {
            stream.write_all(b"error: unknown request; expected `status` or `status json`\n")?;
            return Ok(());
        }
    };
    match answer {
        Some(text) => stream.write_all(text.as_bytes()),
        None => stream.write_all(b"error: the router did not answer in time (busy)\n"),
    }
}

/// Serves `GET /metrics` until the gateway stops.
pub fn serve_metrics(listener: TcpListener, events: &Sender<RouterEvent>, stopping: &AtomicBool) {
    // A scraper that misbehaves is logged a few times a minute per address.
    let mut limit = RateLimit::new(3, Duration::from_secs(60), 256);
    while !stopping.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, peer)) => {
                if let Err(e) = answer_http(stream, events) {
                    if let Some(suppressed) = limit.allow(&peer.ip(), Instant::now()) {
                        log::info!(
                            "metrics: request from {peer} not answered: {e}{}",
                            crate::logsafe::Suppressed(suppressed)
                        );
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(ACCEPT_POLL),
            Err(e) => {
                log::warn!("metrics: accept failed: {e}");
                std::thread::sleep(ACCEPT_POLL);
            }
        }
    }
}

/// What the HTTP responder answers to a request head.
fn route(head: &[u8]) -> (u16, &'static str) {
    let line = head
        .split(|b| *b == b'\n')
        .next()
        .map(|l| String::from_utf8_lossy(l).trim_end().to_owned())
        .unwrap_or_default();
    let mut words = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (words.next(), words.next(), words.next(), words.next())
    else {
        return (400, "Bad Request");
    };
    if !version.starts_with("HTTP/1.") {
        return (400, "Bad Request");
    }
    let path = target.split('?').next().unwrap_or_default();
    match (method, path) {
        ("GET", "/metrics") => (200, "OK"),
        ("GET", _) => (404, "Not Found"),
        _ => (405, "Method Not Allowed"),
    }
}

fn answer_http(mut stream: TcpStream, events: &Sender<RouterEvent>) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    let reader = stream.try_clone()?;
    let head = read_until(
        &mut &reader,
        &mut |d| reader.set_read_timeout(Some(d)),
        b"\r\n\r\n",
        MAX_REQUEST_HEAD,
    );
    stream.set_write_timeout(Some(CLIENT_DEADLINE))?;
    let (status, reason) = match &head {
        Ok(h) => route(h),
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
            (431, "Request Header Fields Too Large")
        }
        Err(e) => return Err(std::io::Error::new(e.kind(), e.to_string())),
    };
    let (status, reason, content_type, body) = if status == 200 {
        match ask(events) {
            Some(s) => (
                200,
                reason,
                crate::status::prometheus::CONTENT_TYPE,
                crate::status::prometheus::render(&s),
            ),
            None => (
                503,
                "Service Unavailable",
                "text/plain; charset=utf-8",
                "the router did not answer in time\n".to_owned(),
            ),
        }
    } else {
        (
            status,
            reason,
            "text/plain; charset=utf-8",
            format!("{reason}: only GET /metrics is served here\n"),
        )
    };
    let answer = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(answer.as_bytes())?;
    let _ = stream.shutdown(std::net::Shutdown::Write);
    match head {
        Ok(_) if status < 500 && status != 200 => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("answered {status} {reason}"),
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_get_metrics_is_served() {
        assert_eq!(route(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").0, 200);
        assert_eq!(route(b"GET /metrics?x=1 HTTP/1.0\r\n\r\n").0, 200);
        assert_eq!(route(b"GET / HTTP/1.1\r\n\r\n").0, 404);
        assert_eq!(route(b"POST /metrics HTTP/1.1\r\n\r\n").0, 405);
        assert_eq!(route(b"\x16\x03\x01garbage").0, 400);
        assert_eq!(route(b"GET /metrics SIP/2.0\r\n\r\n").0, 400);
    }

    /// A router that answers status requests with an empty snapshot.
    fn fake_router() -> Sender<RouterEvent> {
        let (events, inbox) = crossbeam_channel::bounded(8);
        std::thread::spawn(move || {
            while let Ok(event) = inbox.recv() {
                if let RouterEvent::Status(reply) = event {
                    let _ = reply.try_send(crate::status::Snapshot::default());
                }
            }
        });
        events
    }

    fn http(addr: SocketAddr, request: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = s.write_all(request);
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        answer
    }

    #[test]
    fn metrics_are_served_and_oversized_requests_refused() {
        let listener = bind_metrics("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let stopping = std::sync::Arc::new(AtomicBool::new(false));
        let stop = std::sync::Arc::clone(&stopping);
        let events = fake_router();
        let server = std::thread::spawn(move || serve_metrics(listener, &events, &stop));
        let ok = http(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains("Content-Type: text/plain; version=0.0.4"));
        assert!(ok.contains("# TYPE xsgw_messages_total counter\n"));
        let mut big = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
        big.extend(std::iter::repeat_n(b'a', MAX_REQUEST_HEAD + 10));
        let refused = http(addr, &big);
        assert!(refused.starts_with("HTTP/1.1 431 "), "{refused}");
        stopping.store(true, Ordering::SeqCst);
        server.join().unwrap();
    }

    #[test]
    fn control_socket_is_private_and_replaces_a_stale_one() {
        let dir = std::env::temp_dir().join(format!("xsgw-control-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = socket_path(&dir);
        let first = bind_control(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // A live one is not taken over.
        assert!(bind_control(&path).is_err());
        drop(first);
        // A stale one (nobody listens) is.
        assert!(bind_control(&path).is_ok());
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, b"not a socket").unwrap();
        assert!(bind_control(&path).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
