//! Helpers for the SIP integration tests: the gateway in-process (with a sink standing in
//! for the translator), a log capture, and a TLS client playing the Edge.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use xsgw::gateway::{Gateway, GatewayOptions, InboundRequest, RouterEvent};
use xsgw::sip::{Frame, FrameConfig, Framer, KeepaliveRole, Message};

struct Capture;

static LINES: Mutex<Vec<String>> = Mutex::new(Vec::new());

impl log::Log for Capture {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.target().starts_with("xsgw")
    }
    fn log(&self, r: &log::Record) {
        if self.enabled(r.metadata()) {
            let line = format!("{} {}", r.level(), r.args());
            if std::env::var_os("XSGW_TEST_LOG").is_some() {
                eprintln!("{line}");
            }
            LINES.lock().unwrap_or_else(|e| e.into_inner()).push(line);
        }
    }
    fn flush(&self) {}
}

/// Installs the capturing logger (once per test binary).
pub fn init_log() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let _ = log::set_logger(&Capture);
        log::set_max_level(log::LevelFilter::Debug);
    });
}

/// Number of log lines so far (to search only what comes after).
pub fn log_mark() -> usize {
    LINES.lock().unwrap_or_else(|e| e.into_inner()).len()
}

/// Waits for a log line after `mark` containing every one of `parts`.
pub fn wait_log(mark: usize, parts: &[&str], within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        {
            let lines = LINES.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(l) = lines
                .iter()
                .skip(mark)
                .find(|l| parts.iter().all(|p| l.contains(p)))
            {
                return l.clone();
            }
            if Instant::now() > deadline {
                panic!(
                    "no log line with {parts:?}; log since mark:\n{}",
                    lines
                        .iter()
                        .skip(mark)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join("\n")
                );
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A gateway running in this process.
pub struct InProcess {
    pub gateway: Option<Gateway>,
    pub requests: Option<Receiver<InboundRequest>>,
}

impl InProcess {
    /// Starts a gateway from configuration text; with `sink`, requests from the Edge come
    /// to [`InProcess::requests`] instead of the router.
    pub fn start(config_text: &str, dir: &Path, sink: bool) -> InProcess {
        init_log();
        let path = dir.join("xsgw.ini");
        std::fs::write(&path, config_text).unwrap();
        let (config, mut report) = xsgw::config::load(&path).unwrap();
        let credentials = xsgw::config::validate(&config, &mut report);
        assert!(!report.has_errors(), "{:?}", report.lines());
        let (tx, rx) = crossbeam_channel::bounded(64);
        let options = GatewayOptions {
            sip_requests: sink.then_some(tx),
            ..GatewayOptions::default()
        };
        let gateway = Gateway::start_with(Arc::new(config), credentials.unwrap(), options).unwrap();
        InProcess {
            gateway: Some(gateway),
            requests: sink.then_some(rx),
        }
    }

    pub fn gw(&self) -> &Gateway {
        self.gateway.as_ref().unwrap()
    }

    /// The next request the sink received.
    pub fn next_request(&self, within: Duration) -> InboundRequest {
        self.requests
            .as_ref()
            .unwrap()
            .recv_timeout(within)
            .expect("a request reaches the transaction user")
    }

    /// Orderly shutdown; true when every thread ended cleanly.
    pub fn stop(&mut self) -> bool {
        match self.gateway.take() {
            Some(g) => {
                let _ = g.events().send(RouterEvent::Shutdown);
                g.wait()
            }
            None => true,
        }
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A TLS client playing the Edge toward the gateway's SIP listener.
pub struct EdgeClient {
    tls: rustls::ClientConnection,
    tcp: TcpStream,
    framer: Framer,
}

impl EdgeClient {
    /// Connects to `addr` presenting `cert`/`key` (PEM files), trusting `ca`.
    pub fn connect(
        addr: SocketAddr,
        ca: &Path,
        cert: &Path,
        key: &Path,
    ) -> std::io::Result<EdgeClient> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_file(ca).unwrap())
            .unwrap();
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_file(cert).unwrap()],
                PrivateKeyDer::from_pem_file(key).unwrap(),
            )
            .unwrap();
        let tls = rustls::ClientConnection::new(
            Arc::new(config),
            ServerName::try_from("gw.contoso.test").unwrap(),
        )
        .unwrap();
        let tcp = TcpStream::connect(addr)?;
        tcp.set_read_timeout(Some(Duration::from_millis(100)))?;
        Ok(EdgeClient {
            tls,
            tcp,
            framer: Framer::new(FrameConfig {
                keepalive: KeepaliveRole::Client,
                ..FrameConfig::default()
            }),
        })
    }

    pub fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let mut s = rustls::Stream::new(&mut self.tls, &mut self.tcp);
        s.write_all(bytes)?;
        s.flush()
    }

    /// The next frame from the gateway, `Ok(None)` when none within `within`, `Err` when the
    /// connection was closed.
    pub fn recv(&mut self, within: Duration) -> Result<Option<Frame>, String> {
        let deadline = Instant::now() + within;
        let mut buf = [0u8; 8192];
        loop {
            match self.framer.next_frame() {
                Ok(Some(f)) => return Ok(Some(f)),
                Ok(None) => {}
                Err(e) => return Err(format!("unframable answer: {e}")),
            }
            if Instant::now() > deadline {
                return Ok(None);
            }
            let mut s = rustls::Stream::new(&mut self.tls, &mut self.tcp);
            match s.read(&mut buf) {
                Ok(0) => return Err("closed".into()),
                Ok(n) => self.framer.push(&buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => return Err(format!("closed: {e}")),
            }
        }
    }

    /// The next SIP message (skipping pongs); panics when none comes within `within`.
    pub fn message(&mut self, within: Duration) -> Message {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv(left) {
                Ok(Some(Frame::Message(m))) => return m,
                Ok(Some(_)) => continue,
                Ok(None) => panic!("no message within {within:?}"),
                Err(e) => panic!("connection ended: {e}"),
            }
        }
    }

    /// The next final response (1xx skipped): its status.
    pub fn final_status(&mut self, within: Duration) -> u16 {
        loop {
            let m = self.message(within);
            let s = m.status().expect("a response");
            if s >= 200 {
                return s;
            }
        }
    }
}

/// A request from the Edge's side; `extra` header lines end in CRLF.
pub fn request(method: &str, uri: &str, call_id: &str, extra: &str, body: &str) -> Vec<u8> {
    format!(
        "{method} {uri} SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:5061;branch=z9hG4bK{call_id}{method}\r\nMax-Forwards: 70\r\nFrom: <sip:bob@contoso.test>;tag=ftag\r\nTo: <sip:alice@gmail.test>\r\nCall-ID: {call_id}\r\nCSeq: 1 {method}\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// How many log lines after `mark` contain `part`.
pub fn count_log(mark: usize, part: &str) -> usize {
    LINES
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .skip(mark)
        .filter(|l| l.contains(part))
        .count()
}
