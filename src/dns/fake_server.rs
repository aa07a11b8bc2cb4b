//! A scripted DNS server on 127.0.0.1 for tests: UDP and TCP on the same ephemeral port, in
//! threads, answering with whatever the test's handler returns. Test-only.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::{rdata, Name, RData, Record, RecordType};

/// How the query arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// One thing the server sends back.
pub enum Reply {
    /// A message, from the server's own address.
    Message(Message),
    /// A message sent from another socket (another port): must be ignored by the client.
    FromOtherPort(Message),
    /// Raw bytes (garbage).
    Raw(Vec<u8>),
    /// TCP only: the framed message written in pieces of this many bytes, flushed apart.
    Chunked(Message, usize),
    /// TCP only: the length prefix and half the message, then nothing for this long.
    Stall(Message, Duration),
}

type Handler = dyn Fn(&Message, Transport) -> Vec<Reply> + Send + Sync;

pub struct FakeDns {
    pub addr: SocketAddr,
    pub udp_queries: Arc<AtomicUsize>,
    pub tcp_queries: Arc<AtomicUsize>,
    /// Every query received (decoded), in order.
    pub log: Arc<Mutex<Vec<Message>>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl FakeDns {
    pub fn start(
        handler: impl Fn(&Message, Transport) -> Vec<Reply> + Send + Sync + 'static,
    ) -> Self {
        let (udp, tcp) = bind_pair();
        let addr = udp.local_addr().unwrap();
        let handler: Arc<Handler> = Arc::new(handler);
        let stop = Arc::new(AtomicBool::new(false));
        let udp_queries = Arc::new(AtomicUsize::new(0));
        let tcp_queries = Arc::new(AtomicUsize::new(0));
        let log = Arc::new(Mutex::new(Vec::new()));

        let udp_thread = {
            let (handler, stop, count, log) = (
                handler.clone(),
                stop.clone(),
                udp_queries.clone(),
                log.clone(),
            );
            std::thread::spawn(move || {
                udp.set_read_timeout(Some(Duration::from_millis(20)))
                    .unwrap();
                let other = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
                let mut buf = [0u8; 4096];
                while !stop.load(Ordering::Relaxed) {
                    let Ok((len, from)) = udp.recv_from(&mut buf) else {
                        continue;
                    };
                    let Ok(query) = Message::from_vec(&buf[..len]) else {
                        continue;
                    };
                    count.fetch_add(1, Ordering::SeqCst);
                    log.lock().unwrap().push(query.clone());
                    for reply in handler(&query, Transport::Udp) {
                        let _ = match reply {
                            Reply::Message(m) => udp.send_to(&m.to_vec().unwrap(), from),
                            Reply::FromOtherPort(m) => other.send_to(&m.to_vec().unwrap(), from),
                            Reply::Raw(bytes) => udp.send_to(&bytes, from),
                            Reply::Chunked(m, _) | Reply::Stall(m, _) => {
                                udp.send_to(&m.to_vec().unwrap(), from)
                            }
                        };
                    }
                }
            })
        };
        let tcp_thread = {
            let (handler, stop, count, log) = (
                handler.clone(),
                stop.clone(),
                tcp_queries.clone(),
                log.clone(),
            );
            std::thread::spawn(move || {
                tcp.set_nonblocking(true).unwrap();
                while !stop.load(Ordering::Relaxed) {
                    match tcp.accept() {
                        Ok((stream, _)) => {
                            serve_tcp(stream, &*handler, &count, &log);
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        };
        Self {
            addr,
            udp_queries,
            tcp_queries,
            log,
            stop,
            threads: vec![udp_thread, tcp_thread],
        }
    }
}

impl Drop for FakeDns {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

fn serve_tcp(
    mut stream: TcpStream,
    handler: &Handler,
    count: &AtomicUsize,
    log: &Mutex<Vec<Message>>,
) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let mut prefix = [0u8; 2];
    if stream.read_exact(&mut prefix).is_err() {
        return;
    }
    let mut body = vec![0u8; usize::from(u16::from_be_bytes(prefix))];
    if stream.read_exact(&mut body).is_err() {
        return;
    }
    let Ok(query) = Message::from_vec(&body) else {
        return;
    };
    count.fetch_add(1, Ordering::SeqCst);
    log.lock().unwrap().push(query.clone());
    let _ = stream.set_nodelay(true);
    for reply in handler(&query, Transport::Tcp) {
        let (bytes, chunk, stall) = match reply {
            Reply::Message(m) | Reply::FromOtherPort(m) => (m.to_vec().unwrap(), usize::MAX, None),
            Reply::Raw(bytes) => (bytes, usize::MAX, None),
            Reply::Chunked(m, chunk) => (m.to_vec().unwrap(), chunk.max(1), None),
            Reply::Stall(m, pause) => (m.to_vec().unwrap(), usize::MAX, Some(pause)),
        };
        let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&bytes);
        if let Some(pause) = stall {
            let _ = stream.write_all(&framed[..2 + bytes.len() / 2]);
            std::thread::sleep(pause);
            return;
        }
        for piece in framed.chunks(chunk) {
            if stream.write_all(piece).is_err() {
                return;
            }
            let _ = stream.flush();
            if chunk != usize::MAX {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
    }
}

/// UDP and TCP sockets on the same 127.0.0.1 port.
fn bind_pair() -> (UdpSocket, TcpListener) {
    for _ in 0..50 {
        let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = udp.local_addr().unwrap().port();
        if let Ok(tcp) = TcpListener::bind((Ipv4Addr::LOCALHOST, port)) {
            return (udp, tcp);
        }
    }
    panic!("no free udp+tcp port pair on 127.0.0.1");
}

// --- helpers to build answers ---

pub fn name(text: &str) -> Name {
    Name::from_ascii(text).unwrap()
}

/// A response to `query` with its id and question, RD/RA set.
pub fn response(query: &Message, code: ResponseCode) -> Message {
    let mut message = Message::new(query.metadata.id, MessageType::Response, OpCode::Query);
    message.metadata.recursion_desired = query.metadata.recursion_desired;
    message.metadata.recursion_available = true;
    message.metadata.response_code = code;
    message.add_queries(query.queries.iter().cloned());
    message
}

pub fn qname(query: &Message) -> String {
    query.queries[0].name.to_ascii().to_lowercase()
}

pub fn qtype(query: &Message) -> RecordType {
    query.queries[0].query_type
}

pub fn a(owner: &str, ip: &str) -> Record {
    Record::from_rdata(name(owner), 300, RData::A(rdata::A(ip.parse().unwrap())))
}

pub fn aaaa(owner: &str, ip: &str) -> Record {
    Record::from_rdata(
        name(owner),
        300,
        RData::AAAA(rdata::AAAA(ip.parse().unwrap())),
    )
}

pub fn srv(owner: &str, priority: u16, weight: u16, port: u16, target: &str) -> Record {
    Record::from_rdata(
        name(owner),
        300,
        RData::SRV(rdata::SRV::new(priority, weight, port, name(target))),
    )
}

pub fn cname(owner: &str, target: &str) -> Record {
    Record::from_rdata(name(owner), 300, RData::CNAME(rdata::CNAME(name(target))))
}
