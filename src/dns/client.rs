//! A blocking stub resolver: DNS messages built and parsed with hickory-proto, sent over std
//! UDP and TCP sockets in the calling thread.
//!
//! Owns: [`Resolver`] (servers, per-try timeout, attempts, overall deadline), [`SrvAnswer`],
//! and the [`Lookup`] trait that `xmpp` resolution is written against.
//!
//! In scope: RFC 1035 §4.2 (UDP first, TCP when the answer is truncated, 2-byte length prefix),
//! RFC 5452 §9.1 (random query id from `ring::rand::SystemRandom`, random source port from the
//! kernel's ephemeral range, answers accepted only if id, question and source address match),
//! RFC 6891 EDNS(0) with a 1232-byte UDP payload (retried without EDNS on FORMERR), CNAME chains
//! inside one answer (RFC 1034 §3.6.2, bounded by [`MAX_CNAME_LINKS`]), SRV additional-section
//! addresses (RFC 2782) returned as hints.
//! Out of scope: caching, search domains (every name is fully qualified), DNSSEC validation,
//! DNS over TLS/HTTPS, re-querying a CNAME target the recursive server did not chase (a stub
//! sets RD=1 and trusts the server to follow chains).
//!
//! ```text
//!  lookup ──▶ for attempt in 1..=attempts, for server in servers (until the deadline):
//!               UDP query ──▶ matching answer? ──TC──▶ same query over TCP
//!                               │ NOERROR/NXDOMAIN ─▶ done (negative answers are answers)
//!                               │ SERVFAIL/REFUSED/timeout ─▶ next server
//! ```

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, RData, Record, RecordType};
use ring::rand::{SecureRandom, SystemRandom};

use super::error::{DnsError, QueryType, ServerFailure};
use super::name::{from_wire_name, normalize, to_wire_name};
use super::resolv_conf::ResolvConf;
use super::srv::{SrvRecord, MAX_SRV_RECORDS};

/// The EDNS(0) UDP payload size we advertise (DNS flag day 2020 recommendation).
pub const EDNS_UDP_PAYLOAD: u16 = 1232;
/// CNAME links followed inside one answer.
pub const MAX_CNAME_LINKS: usize = 8;
/// Name servers a resolver uses; more are ignored.
pub const MAX_SERVERS: usize = 8;
/// Rounds over the servers.
pub const MAX_ATTEMPTS: u32 = 5;
/// Addresses returned for one name (A and AAAA together).
pub const MAX_ADDRS: usize = 64;
/// Largest resolv.conf read by [`Resolver::from_resolv_conf`].
const MAX_RESOLV_CONF_FILE: u64 = 64 * 1024;
/// The shortest time we wait on a socket; a zero timeout means "forever" to std.
const MIN_WAIT: Duration = Duration::from_millis(1);

/// The lookups the XMPP resolution needs; implemented by [`Resolver`], and by fakes in tests.
pub trait Lookup {
    /// Looks up the SRV record set of `name`.
    fn lookup_srv(&self, name: &str) -> Result<SrvAnswer, DnsError>;
    /// Looks up the A and AAAA records of `name`.
    fn lookup_ip(&self, name: &str) -> Result<Vec<IpAddr>, DnsError>;
}

/// A non-empty SRV record set and what came with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SrvAnswer {
    /// The SRV name asked (normalised).
    pub name: String,
    /// The records, in the order received (order them with [`super::srv::order`]).
    pub records: Vec<SrvRecord>,
    /// Addresses of SRV targets found in the additional section, by normalised target name.
    /// A hint only: a target missing here is looked up with A/AAAA.
    pub hints: HashMap<String, Vec<IpAddr>>,
    /// The server that answered.
    pub server: SocketAddr,
}

/// A blocking stub resolver. Cheap to share between threads by reference; each lookup uses
/// its own sockets.
#[derive(Debug)]
pub struct Resolver {
    servers: Vec<SocketAddr>,
    timeout: Duration,
    attempts: u32,
    deadline: Duration,
    edns: bool,
    random: SystemRandom,
}

/// The validated answer to one question, CNAMEs followed.
struct Resolved {
    records: Vec<Record>,
    additionals: Vec<Record>,
    server: SocketAddr,
}

impl Resolver {
    /// A resolver asking `servers` in order, waiting up to `timeout` for each, making
    /// `attempts` rounds (clamped to 1..=5). The overall deadline of one lookup defaults to
    /// `timeout × attempts × servers`; change it with [`Resolver::with_deadline`].
    pub fn new(mut servers: Vec<SocketAddr>, timeout: Duration, attempts: u32) -> Self {
        servers.truncate(MAX_SERVERS);
        let timeout = timeout.max(MIN_WAIT);
        let attempts = attempts.clamp(1, MAX_ATTEMPTS);
        let rounds = attempts.saturating_mul(u32::try_from(servers.len()).unwrap_or(1).max(1));
        Self {
            deadline: timeout.saturating_mul(rounds),
            servers,
            timeout,
            attempts,
            edns: true,
            random: SystemRandom::new(),
        }
    }

    /// A resolver configured from `/etc/resolv.conf`.
    pub fn from_system() -> Result<Self, DnsError> {
        Self::from_resolv_conf(Path::new("/etc/resolv.conf"))
    }

    /// A resolver configured from a file in resolv.conf format.
    pub fn from_resolv_conf(path: &Path) -> Result<Self, DnsError> {
        let read_error = |error| DnsError::ReadConfig {
            path: path.to_owned(),
            error,
        };
        let file = std::fs::File::open(path).map_err(read_error)?;
        let mut text = String::new();
        file.take(MAX_RESOLV_CONF_FILE + 1)
            .read_to_string(&mut text)
            .map_err(read_error)?;
        let conf = ResolvConf::parse(&text)?;
        Ok(Self::from_conf(&conf))
    }

    /// A resolver from parsed resolv.conf settings.
    pub fn from_conf(conf: &ResolvConf) -> Self {
        Self::new(conf.nameservers.clone(), conf.timeout, conf.attempts)
    }

    /// Sets the overall deadline of one lookup (both queries of [`Resolver::lookup_ip`]).
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline.max(MIN_WAIT);
        self
    }

    /// Turns EDNS(0) off (for servers or middleboxes that mishandle it).
    pub fn without_edns(mut self) -> Self {
        self.edns = false;
        self
    }

    /// The servers asked, in order.
    pub fn servers(&self) -> &[SocketAddr] {
        &self.servers
    }

    /// Looks up the SRV record set of `name` (e.g. `_xmpp-server._tcp.example.com`).
    ///
    /// A set that is only the target `.` is returned as is; [`super::srv::order`] turns it
    /// into "not available". An empty set is [`DnsError::NoData`].
    pub fn lookup_srv(&self, name: &str) -> Result<SrvAnswer, DnsError> {
        let name = normalize(name)?;
        let deadline = Instant::now() + self.deadline;
        let resolved = self.resolve(&name, QueryType::Srv, deadline, None)?;
        Ok(srv_answer(name, resolved))
    }

    /// Looks up the addresses of `name`: A then AAAA (IPv4 first in the result), under one
    /// deadline. An IP literal is returned as is, without a query. If one of the two queries
    /// fails but the other found addresses, those are returned (the failure logged at debug).
    pub fn lookup_ip(&self, name: &str) -> Result<Vec<IpAddr>, DnsError> {
        if let Ok(ip) = name.parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        let name = normalize(name)?;
        let deadline = Instant::now() + self.deadline;
        let v4 = self.resolve(&name, QueryType::A, deadline, None);
        if let Err(error @ DnsError::NxDomain { .. }) = v4 {
            // The name does not exist; asking for AAAA would only repeat that.
            return Err(error);
        }
        // Ask the server that just answered first: a dead first server then costs one
        // timeout per lookup, not one per query.
        let answered = v4.as_ref().ok().map(|r| r.server);
        let v6 = self.resolve(&name, QueryType::Aaaa, deadline, answered);
        let mut addrs = Vec::new();
        for result in [&v4, &v6] {
            match result {
                Ok(resolved) => add_addresses(&mut addrs, &resolved.records),
                Err(error) => log::debug!("dns: {error}"),
            }
        }
        if !addrs.is_empty() {
            return Ok(addrs);
        }
        Err(combine_address_errors(&name, v4, v6))
    }

    /// Asks the servers for `name`/`query_type` and follows CNAMEs inside the answer.
    fn resolve(
        &self,
        name: &str,
        query_type: QueryType,
        deadline: Instant,
        prefer: Option<SocketAddr>,
    ) -> Result<Resolved, DnsError> {
        let (message, server) = self.query(name, query_type, deadline, prefer)?;
        follow_answer(message, server, name, query_type)
    }

    /// One question: every server in order (`prefer` first), `attempts` rounds, until an
    /// answer (NOERROR or NXDOMAIN) or the deadline.
    fn query(
        &self,
        name: &str,
        query_type: QueryType,
        deadline: Instant,
        prefer: Option<SocketAddr>,
    ) -> Result<(Message, SocketAddr), DnsError> {
        if self.servers.is_empty() {
            return Err(DnsError::NoServers);
        }
        let started = Instant::now();
        let question = Question {
            name: name.to_owned(),
            wire_name: to_wire_name(name)?,
            record_type: record_type(query_type),
        };
        let mut order: Vec<SocketAddr> = prefer.into_iter().collect();
        order.extend(self.servers.iter().filter(|s| Some(**s) != prefer));
        let mut failures: Vec<(SocketAddr, ServerFailure)> = Vec::new();
        'rounds: for attempt in 1..=self.attempts {
            for &server in &order {
                let now = Instant::now();
                if now >= deadline {
                    break 'rounds;
                }
                let try_deadline = deadline.min(now + self.timeout);
                log::debug!("dns: {query_type} {name} -> {server} (attempt {attempt})");
                let outcome = self.ask(server, &question, try_deadline);
                match outcome {
                    Ok(message) => return Ok((message, server)),
                    Err(Ok(failure)) => {
                        log::debug!("dns: {query_type} {name} at {server}: {failure}");
                        match failures.iter_mut().find(|(s, _)| *s == server) {
                            Some(entry) => entry.1 = failure,
                            None => failures.push((server, failure)),
                        }
                    }
                    Err(Err(fatal)) => return Err(fatal),
                }
            }
        }
        Err(DnsError::Unanswered {
            name: name.to_owned(),
            query_type,
            elapsed: started.elapsed(),
            failures,
        })
    }

    /// One server, one try: UDP (EDNS, then plain on FORMERR), then TCP if truncated.
    /// `Err(Ok(_))` is this server's failure; `Err(Err(_))` ends the lookup.
    fn ask(
        &self,
        server: SocketAddr,
        question: &Question,
        try_deadline: Instant,
    ) -> Result<Message, Result<ServerFailure, DnsError>> {
        let mut edns = self.edns;
        loop {
            let id = self.random_id().map_err(Err)?;
            let query = build_query(id, question, edns).map_err(Err)?;
            let mut message =
                udp_exchange(server, &query, id, question, try_deadline).map_err(Ok)?;
            if message.metadata.truncation {
                log::debug!(
                    "dns: truncated answer for {} from {server}, retrying over tcp",
                    question.name
                );
                message = tcp_exchange(server, &query, id, question, try_deadline).map_err(Ok)?;
            }
            match message.metadata.response_code {
                ResponseCode::NoError | ResponseCode::NXDomain => return Ok(message),
                // RFC 6891 §7: a server that does not know EDNS may answer FORMERR.
                ResponseCode::FormErr if edns => {
                    log::debug!("dns: {server} refused EDNS, retrying without");
                    edns = false;
                }
                code => {
                    return Err(Ok(ServerFailure::Rcode {
                        code: u16::from(code),
                        name: code.to_str(),
                    }))
                }
            }
        }
    }

    fn random_id(&self) -> Result<u16, DnsError> {
        let mut bytes = [0u8; 2];
        self.random.fill(&mut bytes).map_err(|_| DnsError::Random)?;
        Ok(u16::from_be_bytes(bytes))
    }
}

impl Lookup for Resolver {
    fn lookup_srv(&self, name: &str) -> Result<SrvAnswer, DnsError> {
        Resolver::lookup_srv(self, name)
    }

    fn lookup_ip(&self, name: &str) -> Result<Vec<IpAddr>, DnsError> {
        Resolver::lookup_ip(self, name)
    }
}

/// The records of type `query_type` for `name` in a validated answer, following CNAMEs
/// inside it (at most [`MAX_CNAME_LINKS`]); NXDOMAIN or no data otherwise.
fn follow_answer(
    message: Message,
    server: SocketAddr,
    name: &str,
    query_type: QueryType,
) -> Result<Resolved, DnsError> {
    let wanted = record_type(query_type);
    let mut current = name.to_owned();
    for _ in 0..=MAX_CNAME_LINKS {
        let records: Vec<Record> = message
            .answers
            .iter()
            .filter(|r| r.record_type() == wanted && from_wire_name(&r.name) == current)
            .cloned()
            .collect();
        if !records.is_empty() {
            return Ok(Resolved {
                records,
                additionals: message.additionals,
                server,
            });
        }
        let alias = message.answers.iter().find_map(|r| match &r.data {
            RData::CNAME(target) if from_wire_name(&r.name) == current => {
                Some(from_wire_name(target))
            }
            _ => None,
        });
        match alias {
            Some(target) => {
                log::debug!("dns: {current} is an alias for {target}");
                current = target;
            }
            None if message.metadata.response_code == ResponseCode::NXDomain => {
                return Err(DnsError::NxDomain {
                    name: current,
                    query_type,
                    server,
                })
            }
            None => {
                return Err(DnsError::NoData {
                    name: current,
                    query_type,
                    server: Some(server),
                })
            }
        }
    }
    Err(DnsError::CnameChain {
        name: name.to_owned(),
        max: MAX_CNAME_LINKS,
    })
}

/// The SRV records of a validated answer, with the additional-section addresses of their
/// targets as hints (each list bounded by [`MAX_ADDRS`]).
fn srv_answer(name: String, resolved: Resolved) -> SrvAnswer {
    let mut records = Vec::new();
    for record in resolved.records.iter().take(MAX_SRV_RECORDS) {
        if let RData::SRV(srv) = &record.data {
            records.push(SrvRecord {
                priority: srv.priority,
                weight: srv.weight,
                port: srv.port,
                target: from_wire_name(&srv.target),
            });
        }
    }
    let mut hints: HashMap<String, Vec<IpAddr>> = HashMap::new();
    for record in &resolved.additionals {
        let owner = from_wire_name(&record.name);
        if !records.iter().any(|r| r.target == owner) {
            continue;
        }
        if let Some(ip) = address_of(record) {
            let addrs = hints.entry(owner).or_default();
            if addrs.len() < MAX_ADDRS && !addrs.contains(&ip) {
                addrs.push(ip);
            }
        }
    }
    SrvAnswer {
        name,
        records,
        hints,
        server: resolved.server,
    }
}

/// What [`decode_answer`] took from an answer.
#[doc(hidden)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodedAnswer {
    /// An SRV record set and its hints, as [`Resolver::lookup_srv`] returns it.
    Srv(SrvAnswer),
    /// The addresses of an A or AAAA answer, as [`Resolver::lookup_ip`] collects them.
    Addresses(Vec<IpAddr>),
}

/// Received octets through every step a lookup takes with an answer: hickory's decoder, the
/// match against the question (id, type, class, name), the response code, CNAMEs followed,
/// then the records taken (SRV with address hints, or addresses; bounded). The question is
/// the one the octets carry, so that arbitrary input reaches every step. `None`: the octets
/// would be ignored (undecodable, not an answer, a question we never ask, a server failure).
/// For the fuzz target `dns_answer`; the resolver does not call it.
#[doc(hidden)]
pub fn decode_answer(bytes: &[u8]) -> Option<Result<DecodedAnswer, DnsError>> {
    let message = Message::from_vec(bytes).ok()?;
    let asked = message.queries.first()?;
    let query_type = match asked.query_type {
        RecordType::SRV => QueryType::Srv,
        RecordType::A => QueryType::A,
        RecordType::AAAA => QueryType::Aaaa,
        _ => return None,
    };
    let name = normalize(&from_wire_name(&asked.name)).ok()?;
    let question = Question {
        wire_name: to_wire_name(&name).ok()?,
        name,
        record_type: record_type(query_type),
    };
    if !is_answer_to(&message, message.metadata.id, &question) {
        return None;
    }
    if !matches!(
        message.metadata.response_code,
        ResponseCode::NoError | ResponseCode::NXDomain
    ) {
        return None;
    }
    let server = SocketAddr::from((Ipv4Addr::LOCALHOST, 53));
    let resolved = match follow_answer(message, server, &question.name, query_type) {
        Ok(resolved) => resolved,
        Err(e) => return Some(Err(e)),
    };
    Some(Ok(match query_type {
        QueryType::Srv => DecodedAnswer::Srv(srv_answer(question.name, resolved)),
        _ => {
            let mut addrs = Vec::new();
            add_addresses(&mut addrs, &resolved.records);
            DecodedAnswer::Addresses(addrs)
        }
    }))
}

/// What we asked, to check answers against.
struct Question {
    name: String,
    wire_name: hickory_proto::rr::Name,
    record_type: RecordType,
}

fn record_type(query_type: QueryType) -> RecordType {
    match query_type {
        QueryType::A => RecordType::A,
        QueryType::Aaaa => RecordType::AAAA,
        QueryType::Srv => RecordType::SRV,
        // Not asked on the wire; resolve() is never called with it.
        QueryType::Address => RecordType::A,
    }
}

fn address_of(record: &Record) -> Option<IpAddr> {
    match &record.data {
        RData::A(a) => Some(IpAddr::V4(a.0)),
        RData::AAAA(aaaa) => Some(IpAddr::V6(aaaa.0)),
        _ => None,
    }
}

/// Appends the addresses of A/AAAA `records` not already in `addrs`, up to [`MAX_ADDRS`].
fn add_addresses(addrs: &mut Vec<IpAddr>, records: &[Record]) {
    for ip in records.iter().filter_map(address_of) {
        if addrs.len() < MAX_ADDRS && !addrs.contains(&ip) {
            addrs.push(ip);
        }
    }
}

/// The error of an address lookup that found nothing: an unanswered query outranks a
/// negative answer (the operator must fix reachability first), NXDOMAIN outranks no-data.
fn combine_address_errors(
    name: &str,
    v4: Result<Resolved, DnsError>,
    v6: Result<Resolved, DnsError>,
) -> DnsError {
    let rank = |e: &DnsError| match e {
        DnsError::NoData { .. } => 0,
        DnsError::NxDomain { .. } => 1,
        _ => 2,
    };
    match (v4.err(), v6.err()) {
        (Some(DnsError::NoData { server, .. }), Some(DnsError::NoData { .. })) => {
            DnsError::NoData {
                name: name.to_owned(),
                query_type: QueryType::Address,
                server,
            }
        }
        (Some(a), Some(b)) => {
            if rank(&b) > rank(&a) {
                b
            } else {
                a
            }
        }
        (Some(e), None) | (None, Some(e)) => e,
        // Both answered but neither had an address record of its type: the records were
        // filtered away, which means no data.
        (None, None) => DnsError::NoData {
            name: name.to_owned(),
            query_type: QueryType::Address,
            server: None,
        },
    }
}

fn build_query(id: u16, question: &Question, edns: bool) -> Result<Vec<u8>, DnsError> {
    let mut message = Message::new(id, MessageType::Query, OpCode::Query);
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(
        question.wire_name.clone(),
        question.record_type,
    ));
    if edns {
        let mut opt = Edns::new();
        opt.set_max_payload(EDNS_UDP_PAYLOAD);
        message.set_edns(opt);
    }
    message.to_vec().map_err(|e| DnsError::Encode {
        name: question.name.clone(),
        reason: e.to_string(),
    })
}

/// Whether `message` is the answer to our query: a response, our id, our single question
/// (RFC 5452 §9.1). Error answers without a question section are accepted, as some servers
/// send FORMERR/NOTIMP that way.
fn is_answer_to(message: &Message, id: u16, question: &Question) -> bool {
    if message.metadata.id != id
        || message.metadata.message_type != MessageType::Response
        || message.metadata.op_code != OpCode::Query
    {
        return false;
    }
    match message.queries.as_slice() {
        [] => !matches!(
            message.metadata.response_code,
            ResponseCode::NoError | ResponseCode::NXDomain
        ),
        [q] => {
            q.query_type == question.record_type
                && q.query_class == DNSClass::IN
                && from_wire_name(&q.name) == question.name
        }
        _ => false,
    }
}

fn remaining(deadline: Instant) -> Option<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    (!left.is_zero()).then(|| left.max(MIN_WAIT))
}

fn is_timeout(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

fn udp_exchange(
    server: SocketAddr,
    query: &[u8],
    id: u16,
    question: &Question,
    deadline: Instant,
) -> Result<Message, ServerFailure> {
    // Port 0: the kernel picks a random ephemeral source port per socket (RFC 5452 §9.2).
    let local: SocketAddr = match server {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local).map_err(|e| ServerFailure::io(&e))?;
    // Connected: the kernel drops datagrams from other sources and reports ICMP port
    // unreachable as ConnectionRefused, so a server with nothing listening fails at once.
    socket.connect(server).map_err(|e| ServerFailure::io(&e))?;
    socket.send(query).map_err(|e| ServerFailure::io(&e))?;
    // Larger than any answer to a 1232-byte EDNS query; a server ignoring EDNS still fits.
    let mut buffer = vec![0u8; 4096];
    let mut ignored = 0u32;
    loop {
        let Some(wait) = remaining(deadline) else {
            return Err(ServerFailure::Timeout { ignored });
        };
        socket
            .set_read_timeout(Some(wait))
            .map_err(|e| ServerFailure::io(&e))?;
        let (len, from) = match socket.recv_from(&mut buffer) {
            Ok(received) => received,
            Err(e) if is_timeout(&e) => return Err(ServerFailure::Timeout { ignored }),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(ServerFailure::io(&e)),
        };
        // Compare address and port only: a v6 scope id may be reported differently.
        if from.ip() != server.ip() || from.port() != server.port() {
            log::debug!("dns: ignored datagram from {from} while waiting for {server}");
            ignored = ignored.saturating_add(1);
            continue;
        }
        match buffer.get(..len).map(Message::from_vec) {
            Some(Ok(message)) if is_answer_to(&message, id, question) => return Ok(message),
            Some(Ok(message)) => {
                log::debug!(
                    "dns: ignored non-matching answer id {} from {server} (want {id})",
                    message.metadata.id
                );
                ignored = ignored.saturating_add(1);
            }
            Some(Err(e)) => {
                log::debug!("dns: ignored undecodable answer from {server}: {e}");
                ignored = ignored.saturating_add(1);
            }
            None => ignored = ignored.saturating_add(1),
        }
    }
}

fn tcp_exchange(
    server: SocketAddr,
    query: &[u8],
    id: u16,
    question: &Question,
    deadline: Instant,
) -> Result<Message, ServerFailure> {
    let timeout = || ServerFailure::Timeout { ignored: 0 };
    let io_failure = |e: io::Error| {
        if is_timeout(&e) {
            timeout()
        } else {
            ServerFailure::io(&e)
        }
    };
    let wait = remaining(deadline).ok_or_else(timeout)?;
    let mut stream = TcpStream::connect_timeout(&server, wait).map_err(io_failure)?;
    // Queries are far below 64 KiB: the name is at most 255 octets.
    let len = u16::try_from(query.len()).map_err(|_| ServerFailure::BadTcpAnswer {
        reason: "query too long".into(),
    })?;
    let mut framed = Vec::with_capacity(query.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(query);
    stream
        .set_write_timeout(Some(remaining(deadline).ok_or_else(timeout)?))
        .map_err(io_failure)?;
    stream.write_all(&framed).map_err(io_failure)?;

    let mut prefix = [0u8; 2];
    read_full(&mut stream, &mut prefix, deadline).map_err(io_failure)?;
    let len = usize::from(u16::from_be_bytes(prefix));
    let mut body = vec![0u8; len];
    read_full(&mut stream, &mut body, deadline).map_err(io_failure)?;
    let message = Message::from_vec(&body).map_err(|e| ServerFailure::BadTcpAnswer {
        reason: e.to_string(),
    })?;
    if !is_answer_to(&message, id, question) {
        return Err(ServerFailure::BadTcpAnswer {
            reason: format!(
                "answer does not match the query (id {} want {id})",
                message.metadata.id
            ),
        });
    }
    Ok(message)
}

/// `read_exact` under an overall deadline (each read gets only the time left).
fn read_full(stream: &mut TcpStream, buf: &mut [u8], deadline: Instant) -> io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        let wait = remaining(deadline).ok_or(io::ErrorKind::TimedOut)?;
        stream.set_read_timeout(Some(wait))?;
        let rest = buf.get_mut(filled..).unwrap_or_default();
        match stream.read(rest) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::fake_server::{self as fake, FakeDns, Reply, Transport};

    const SRV_NAME: &str = "_xmpp-server._tcp.example.com.";

    fn resolver(servers: &[&FakeDns]) -> Resolver {
        Resolver::new(
            servers.iter().map(|s| s.addr).collect(),
            Duration::from_millis(200),
            1,
        )
    }

    /// A small zone: SRV with an additional-section hint, A/AAAA, a CNAME, NXDOMAIN elsewhere.
    fn zone(query: &Message, _transport: Transport) -> Vec<Reply> {
        let mut reply = fake::response(query, ResponseCode::NoError);
        match (fake::qname(query).as_str(), fake::qtype(query)) {
            ("_xmpp-server._tcp.example.com.", RecordType::SRV) => {
                reply.add_answer(fake::srv(SRV_NAME, 5, 0, 5269, "xmpp1.example.com."));
                reply.add_answer(fake::srv(SRV_NAME, 20, 10, 5270, "XMPP2.example.com."));
                reply.add_additional(fake::a("xmpp1.example.com.", "192.0.2.1"));
                reply.add_additional(fake::aaaa("xmpp1.example.com.", "2001:db8::1"));
                reply.add_additional(fake::a("unrelated.example.net.", "192.0.2.99"));
            }
            ("host.example.com.", RecordType::A) => {
                reply.add_answer(fake::a("host.example.com.", "192.0.2.7"));
            }
            ("host.example.com.", RecordType::AAAA) => {
                reply.add_answer(fake::aaaa("host.example.com.", "2001:db8::7"));
            }
            ("v4only.example.com.", RecordType::A) => {
                reply.add_answer(fake::a("v4only.example.com.", "192.0.2.8"));
            }
            ("v4only.example.com.", _) | ("_xmpp-server._tcp.nosrv.example.com.", _) => {}
            ("alias.example.com.", RecordType::A) => {
                reply.add_answer(fake::cname("alias.example.com.", "mid.example.com."));
                reply.add_answer(fake::cname("mid.example.com.", "host.example.com."));
                reply.add_answer(fake::a("host.example.com.", "192.0.2.7"));
            }
            ("loop.example.com.", _) => {
                reply.add_answer(fake::cname("loop.example.com.", "loop2.example.com."));
                reply.add_answer(fake::cname("loop2.example.com.", "loop.example.com."));
            }
            _ => reply.metadata.response_code = ResponseCode::NXDomain,
        }
        vec![Reply::Message(reply)]
    }

    #[test]
    fn srv_with_additional_hints() {
        let server = FakeDns::start(zone);
        let answer = resolver(&[&server]).lookup_srv(SRV_NAME).unwrap();
        assert_eq!(answer.name, "_xmpp-server._tcp.example.com");
        assert_eq!(answer.server, server.addr);
        assert_eq!(
            answer.records,
            vec![
                SrvRecord {
                    priority: 5,
                    weight: 0,
                    port: 5269,
                    target: "xmpp1.example.com".into()
                },
                SrvRecord {
                    priority: 20,
                    weight: 10,
                    port: 5270,
                    target: "xmpp2.example.com".into()
                },
            ]
        );
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(answer.hints.len(), 1, "{:?}", answer.hints);
        assert_eq!(
            answer.hints["xmpp1.example.com"],
            vec![ip("192.0.2.1"), ip("2001:db8::1")]
        );
    }

    #[test]
    fn query_is_well_formed() {
        let server = FakeDns::start(zone);
        resolver(&[&server])
            .lookup_srv("_XMPP-server._tcp.Example.com")
            .unwrap();
        let log = server.log.lock().unwrap();
        let query = &log[0];
        assert!(query.metadata.recursion_desired);
        assert_eq!(query.queries.len(), 1);
        assert_eq!(query.queries[0].query_type, RecordType::SRV);
        assert_eq!(
            query.edns.as_ref().map(Edns::max_payload),
            Some(EDNS_UDP_PAYLOAD)
        );
    }

    #[test]
    fn ids_vary_between_queries() {
        let server = FakeDns::start(zone);
        let resolver = resolver(&[&server]);
        for _ in 0..8 {
            resolver.lookup_ip("host.example.com").unwrap();
        }
        let log = server.log.lock().unwrap();
        let mut ids: Vec<u16> = log.iter().map(|m| m.metadata.id).collect();
        ids.sort_unstable();
        ids.dedup();
        assert!(ids.len() >= 14, "{ids:?}");
    }

    #[test]
    fn a_and_aaaa() {
        let server = FakeDns::start(zone);
        let addrs = resolver(&[&server]).lookup_ip("HOST.example.com.").unwrap();
        assert_eq!(
            addrs,
            vec![
                "192.0.2.7".parse::<IpAddr>().unwrap(),
                "2001:db8::7".parse().unwrap()
            ]
        );
        assert_eq!(
            server.udp_queries.load(std::sync::atomic::Ordering::SeqCst),
            2
        );
    }

    #[test]
    fn one_family_missing_is_fine() {
        let server = FakeDns::start(zone);
        let addrs = resolver(&[&server])
            .lookup_ip("v4only.example.com")
            .unwrap();
        assert_eq!(addrs, vec!["192.0.2.8".parse::<IpAddr>().unwrap()]);
    }

    #[test]
    fn ip_literal_needs_no_query() {
        let server = FakeDns::start(zone);
        let addrs = resolver(&[&server]).lookup_ip("2001:db8::5").unwrap();
        assert_eq!(addrs, vec!["2001:db8::5".parse::<IpAddr>().unwrap()]);
        assert_eq!(
            server.udp_queries.load(std::sync::atomic::Ordering::SeqCst),
            0
        );
    }

    #[test]
    fn nxdomain_names_name_and_server() {
        let server = FakeDns::start(zone);
        let error = resolver(&[&server])
            .lookup_ip("missing.example.com")
            .unwrap_err();
        match &error {
            DnsError::NxDomain {
                name,
                server: at,
                query_type: QueryType::A,
            } => {
                assert_eq!(name, "missing.example.com");
                assert_eq!(*at, server.addr);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(error.is_negative_answer());
        // NXDOMAIN on A: AAAA is not asked.
        assert_eq!(
            server.udp_queries.load(std::sync::atomic::Ordering::SeqCst),
            1
        );
    }

    #[test]
    fn no_data_is_not_nxdomain() {
        let server = FakeDns::start(zone);
        let error = resolver(&[&server])
            .lookup_srv("_xmpp-server._tcp.nosrv.example.com")
            .unwrap_err();
        assert!(
            matches!(&error, DnsError::NoData { query_type: QueryType::Srv, server: Some(at), .. } if *at == server.addr),
            "{error:?}"
        );
        assert_eq!(
            error.to_string(),
            format!(
                "no SRV record for _xmpp-server._tcp.nosrv.example.com at {}",
                server.addr
            )
        );
    }

    #[test]
    fn cname_chain_followed() {
        let server = FakeDns::start(zone);
        let resolver = resolver(&[&server]);
        let resolved = resolver
            .resolve(
                "alias.example.com",
                QueryType::A,
                Instant::now() + Duration::from_secs(1),
                None,
            )
            .unwrap();
        assert_eq!(resolved.records.len(), 1);
        assert_eq!(
            address_of(&resolved.records[0]),
            Some("192.0.2.7".parse().unwrap())
        );
    }

    #[test]
    fn cname_loop_is_bounded() {
        let server = FakeDns::start(zone);
        let error = resolver(&[&server])
            .lookup_srv("loop.example.com")
            .unwrap_err();
        assert!(
            matches!(
                error,
                DnsError::CnameChain {
                    max: MAX_CNAME_LINKS,
                    ..
                }
            ),
            "{error:?}"
        );
    }

    #[test]
    fn truncated_udp_answer_retried_over_tcp() {
        let server = FakeDns::start(|query, transport| {
            let mut reply = fake::response(query, ResponseCode::NoError);
            match transport {
                Transport::Udp => reply.metadata.truncation = true,
                Transport::Tcp => {
                    for i in 0..40 {
                        reply.add_answer(fake::srv(
                            SRV_NAME,
                            10,
                            1,
                            5269,
                            &format!("xmpp{i}.example.com."),
                        ));
                    }
                }
            }
            vec![Reply::Message(reply)]
        });
        let answer = resolver(&[&server]).lookup_srv(SRV_NAME).unwrap();
        assert_eq!(answer.records.len(), 40);
        assert_eq!(
            server.udp_queries.load(std::sync::atomic::Ordering::SeqCst),
            1
        );
        assert_eq!(
            server.tcp_queries.load(std::sync::atomic::Ordering::SeqCst),
            1
        );
    }

    #[test]
    fn spoofed_answers_ignored_real_one_taken() {
        let server = FakeDns::start(|query, _| {
            let mut wrong_id = zone(query, Transport::Udp);
            let Some(Reply::Message(m)) = wrong_id.first_mut() else {
                unreachable!()
            };
            m.metadata.id = m.metadata.id.wrapping_add(1);
            let mut wrong_question = fake::response(query, ResponseCode::NoError);
            wrong_question.queries[0].name = fake::name("other.example.com.");
            let mut from_elsewhere = fake::response(query, ResponseCode::NoError);
            from_elsewhere.add_answer(fake::a("host.example.com.", "203.0.113.66"));
            let mut replies = wrong_id;
            replies.push(Reply::Message(wrong_question));
            replies.push(Reply::FromOtherPort(from_elsewhere));
            replies.push(Reply::Raw(vec![1, 2, 3]));
            replies.extend(zone(query, Transport::Udp));
            replies
        });
        let addrs = resolver(&[&server]).lookup_ip("host.example.com").unwrap();
        assert_eq!(
            addrs,
            vec![
                "192.0.2.7".parse::<IpAddr>().unwrap(),
                "2001:db8::7".parse().unwrap()
            ]
        );
    }

    #[test]
    fn wrong_id_only_times_out() {
        let server = FakeDns::start(|query, _| {
            let mut reply = fake::response(query, ResponseCode::NoError);
            reply.metadata.id = reply.metadata.id.wrapping_add(1);
            reply.add_answer(fake::a("host.example.com.", "203.0.113.66"));
            vec![Reply::Message(reply)]
        });
        let error = resolver(&[&server])
            .lookup_srv("host.example.com")
            .unwrap_err();
        match error {
            DnsError::Unanswered { failures, .. } => {
                assert_eq!(
                    failures,
                    vec![(server.addr, ServerFailure::Timeout { ignored: 1 })]
                );
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn silence_times_out_within_the_deadline() {
        let server = FakeDns::start(|_, _| Vec::new());
        let started = Instant::now();
        let error = resolver(&[&server])
            .lookup_ip("host.example.com")
            .unwrap_err();
        let elapsed = started.elapsed();
        // One deadline of 200 ms covers both the A and the AAAA query.
        assert!(elapsed >= Duration::from_millis(190), "{elapsed:?}");
        assert!(elapsed < Duration::from_millis(800), "{elapsed:?}");
        match &error {
            DnsError::Unanswered { name, failures, .. } => {
                assert_eq!(name, "host.example.com");
                assert_eq!(
                    failures[0],
                    (server.addr, ServerFailure::Timeout { ignored: 0 })
                );
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(!error.is_negative_answer());
        assert!(error.to_string().contains("timed out"), "{error}");
    }

    #[test]
    fn explicit_deadline_caps_attempts() {
        let server = FakeDns::start(|_, _| Vec::new());
        let resolver = Resolver::new(vec![server.addr], Duration::from_millis(200), 5)
            .with_deadline(Duration::from_millis(300));
        let started = Instant::now();
        assert!(resolver.lookup_srv(SRV_NAME).is_err());
        let elapsed = started.elapsed();
        assert!(elapsed < Duration::from_millis(700), "{elapsed:?}");
        assert_eq!(
            server.udp_queries.load(std::sync::atomic::Ordering::SeqCst),
            2
        );
    }

    #[test]
    fn servfail_then_next_server() {
        let failing = FakeDns::start(|query, _| {
            vec![Reply::Message(fake::response(
                query,
                ResponseCode::ServFail,
            ))]
        });
        let good = FakeDns::start(zone);
        let addrs = resolver(&[&failing, &good])
            .lookup_ip("host.example.com")
            .unwrap();
        assert_eq!(addrs.len(), 2);
    }

    #[test]
    fn all_servers_fail_each_reason_kept() {
        let failing = FakeDns::start(|query, _| {
            vec![Reply::Message(fake::response(query, ResponseCode::Refused))]
        });
        let silent = FakeDns::start(|_, _| Vec::new());
        let resolver = Resolver::new(
            vec![failing.addr, silent.addr],
            Duration::from_millis(100),
            2,
        );
        let error = resolver.lookup_srv(SRV_NAME).unwrap_err();
        match &error {
            DnsError::Unanswered {
                failures,
                query_type: QueryType::Srv,
                ..
            } => {
                assert_eq!(
                    failures,
                    &vec![
                        (
                            failing.addr,
                            ServerFailure::Rcode {
                                code: 5,
                                name: "Query Refused"
                            }
                        ),
                        (silent.addr, ServerFailure::Timeout { ignored: 0 }),
                    ]
                );
            }
            other => panic!("unexpected {other:?}"),
        }
        // Two rounds over both servers.
        assert_eq!(
            failing
                .udp_queries
                .load(std::sync::atomic::Ordering::SeqCst),
            2
        );
        assert_eq!(
            silent.udp_queries.load(std::sync::atomic::Ordering::SeqCst),
            2
        );
    }

    #[test]
    fn second_attempt_succeeds() {
        let seen = std::sync::atomic::AtomicUsize::new(0);
        let server = FakeDns::start(move |query, transport| {
            if seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                Vec::new()
            } else {
                zone(query, transport)
            }
        });
        let resolver = Resolver::new(vec![server.addr], Duration::from_millis(100), 2);
        assert!(resolver.lookup_srv(SRV_NAME).is_ok());
    }

    #[test]
    fn formerr_to_edns_retried_without() {
        let server = FakeDns::start(|query, transport| {
            if query.edns.is_some() {
                vec![Reply::Message(fake::response(query, ResponseCode::FormErr))]
            } else {
                zone(query, transport)
            }
        });
        assert!(resolver(&[&server]).lookup_srv(SRV_NAME).is_ok());
        assert_eq!(
            server.udp_queries.load(std::sync::atomic::Ordering::SeqCst),
            2
        );
    }

    #[test]
    fn invalid_names_refused_before_any_query() {
        let resolver = Resolver::new(Vec::new(), Duration::from_millis(10), 1);
        assert!(matches!(
            resolver.lookup_srv("a..b"),
            Err(DnsError::InvalidName { .. })
        ));
        assert!(matches!(
            resolver.lookup_srv("example.com"),
            Err(DnsError::NoServers)
        ));
    }

    #[test]
    fn from_resolv_conf_file() {
        let dir = std::env::temp_dir().join(format!("xsgw-dns-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("resolv.conf");
        std::fs::write(
            &path,
            "nameserver 127.0.0.1\noptions timeout:1 attempts:3\n",
        )
        .unwrap();
        let resolver = Resolver::from_resolv_conf(&path).unwrap();
        assert_eq!(resolver.servers(), &["127.0.0.1:53".parse().unwrap()]);
        assert_eq!(resolver.timeout, Duration::from_secs(1));
        assert_eq!(resolver.attempts, 3);
        assert_eq!(resolver.deadline, Duration::from_secs(3));
        let _ = std::fs::remove_dir_all(&dir);
        assert!(matches!(
            Resolver::from_resolv_conf(&dir.join("missing")),
            Err(DnsError::ReadConfig { .. })
        ));
    }

    #[test]
    fn combine_errors_prefers_unanswered() {
        let server: SocketAddr = "127.0.0.1:53".parse().unwrap();
        let no_data = |qt| DnsError::NoData {
            name: "x".into(),
            query_type: qt,
            server: Some(server),
        };
        let both = combine_address_errors(
            "x",
            Err(no_data(QueryType::A)),
            Err(no_data(QueryType::Aaaa)),
        );
        assert!(matches!(
            both,
            DnsError::NoData {
                query_type: QueryType::Address,
                ..
            }
        ));
        let unanswered = DnsError::Unanswered {
            name: "x".into(),
            query_type: QueryType::Aaaa,
            elapsed: Duration::ZERO,
            failures: Vec::new(),
        };
        let mixed = combine_address_errors("x", Err(no_data(QueryType::A)), Err(unanswered));
        assert!(matches!(mixed, DnsError::Unanswered { .. }));
    }

    #[test]
    fn closed_port_fails_fast_and_next_server_is_asked() {
        let closed = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap()
            .local_addr()
            .unwrap();
        let good = FakeDns::start(zone);
        let resolver = Resolver::new(vec![closed, good.addr], Duration::from_secs(2), 1);
        let started = Instant::now();
        let addrs = resolver.lookup_ip("host.example.com").unwrap();
        assert_eq!(addrs.len(), 2);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );

        let resolver = Resolver::new(vec![closed], Duration::from_millis(200), 1);
        match resolver.lookup_srv(SRV_NAME).unwrap_err() {
            DnsError::Unanswered { failures, .. } => {
                assert!(
                    matches!(
                        failures[0].1,
                        ServerFailure::Io {
                            kind: io::ErrorKind::ConnectionRefused,
                            ..
                        }
                    ),
                    "{failures:?}"
                );
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn aaaa_asks_the_server_that_answered_a_first() {
        let silent = FakeDns::start(|_, _| Vec::new());
        let good = FakeDns::start(zone);
        let addrs = Resolver::new(vec![silent.addr, good.addr], Duration::from_millis(150), 1)
            .lookup_ip("host.example.com")
            .unwrap();
        assert_eq!(addrs.len(), 2);
        // One timeout (for A), not a second one for AAAA.
        assert_eq!(
            silent.udp_queries.load(std::sync::atomic::Ordering::SeqCst),
            1
        );
    }

    #[test]
    fn bad_tcp_answer_moves_to_the_next_server() {
        let broken = FakeDns::start(|query, transport| {
            let mut reply = fake::response(query, ResponseCode::NoError);
            match transport {
                Transport::Udp => reply.metadata.truncation = true,
                Transport::Tcp => reply.metadata.id = reply.metadata.id.wrapping_add(1),
            }
            vec![Reply::Message(reply)]
        });
        let good = FakeDns::start(zone);
        let answer = resolver(&[&broken, &good]).lookup_srv(SRV_NAME).unwrap();
        assert_eq!(answer.server, good.addr);

        let error = resolver(&[&broken]).lookup_srv(SRV_NAME).unwrap_err();
        assert!(
            matches!(&error, DnsError::Unanswered { failures, .. }
                if matches!(failures[0].1, ServerFailure::BadTcpAnswer { .. })),
            "{error:?}"
        );
    }

    /// Truncated over UDP, then the TCP answer in pieces of `chunk` bytes or stalled.
    fn tcp_only(make: fn(Message) -> Reply) -> FakeDns {
        FakeDns::start(move |query, transport| match transport {
            Transport::Udp => {
                let mut reply = fake::response(query, ResponseCode::NoError);
                reply.metadata.truncation = true;
                vec![Reply::Message(reply)]
            }
            Transport::Tcp => match zone(query, transport).pop() {
                Some(Reply::Message(m)) => vec![make(m)],
                _ => Vec::new(),
            },
        })
    }

    #[test]
    fn tcp_answer_split_at_every_byte() {
        let server = tcp_only(|m| Reply::Chunked(m, 1));
        let answer = resolver(&[&server]).lookup_srv(SRV_NAME).unwrap();
        assert_eq!(answer.records.len(), 2);
        assert_eq!(answer.hints.len(), 1);
    }

    #[test]
    fn stalled_tcp_answer_times_out() {
        let server = tcp_only(|m| Reply::Stall(m, Duration::from_millis(600)));
        let started = Instant::now();
        let error = resolver(&[&server]).lookup_srv(SRV_NAME).unwrap_err();
        assert!(
            started.elapsed() < Duration::from_millis(550),
            "{:?}",
            started.elapsed()
        );
        assert!(
            matches!(&error, DnsError::Unanswered { failures, .. }
                if failures[0].1 == ServerFailure::Timeout { ignored: 0 }),
            "{error:?}"
        );
    }

    #[test]
    fn resolver_can_be_shared_between_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Resolver>();
        assert_send_sync::<DnsError>();
    }
}
