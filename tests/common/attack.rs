//! A bounded connection-flood attacker for admission tests: a Python child (no new crate; std
//! cannot bind a source address before connecting) that opens many TCP connections from one
//! loopback source address, holds them idle, drips bytes on a few, reconnects what the
//! server closes, and reports what it saw as one JSON line. Bounded in count
//! (`max_connects`) and time (`duration`); it only ever connects to the address it is given,
//! which tests keep on 127.0.0.0/8.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::peers::json_int;
use super::testbed::PYTHON;

const SCRIPT: &str = r#"
import json, resource, selectors, socket, ssl, sys, time
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
want = 4096 if hard == resource.RLIM_INFINITY else min(hard, 4096)
if soft != resource.RLIM_INFINITY and soft < want:
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
src, host, port, idle_n, drip_n, every, duration, max_connects, mode, redial = sys.argv[1:11]
port, idle_n, drip_n, max_connects = int(port), int(idle_n), int(drip_n), int(max_connects)
every, duration, redial = float(every), float(duration), float(redial)
if mode == "tls":
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    bio_in, bio_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = ctx.wrap_bio(bio_in, bio_out, server_hostname="gw.contoso.test")
    try:
        client.do_handshake()
    except ssl.SSLWantReadError:
        pass
    payload = bio_out.read()
else:
    payload = (b"<?xml version='1.0'?><stream:stream xmlns='jabber:server' "
               b"xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' "
               b"to='contoso.test' from='attacker.test' version='1.0'>")
sel = selectors.DefaultSelector()
st = dict(connects=0, failed=0, closed_idle=0, closed_drip=0, max_life_idle_ms=0,
          max_life_drip_ms=0, min_life_drip_ms=10**9, drip_admitted=0, with_data=0, resource_constraint=0,
          connection_timeout=0, max_old_open=0, oldest_open_ms=0, open_at_end=0)
start = time.monotonic()
redials = []
def settle(key):
    s, d = key.fileobj, key.data
    try:
        chunk = s.recv(65536)
    except BlockingIOError:
        return
    except OSError:
        chunk = b""
    if chunk:
        d["data"] = (d["data"] + chunk)[:8192]
        return
    life = int((time.monotonic() - d["opened"]) * 1000)
    kind = d["kind"]
    st["closed_" + kind] += 1
    st["max_life_%s_ms" % kind] = max(st["max_life_%s_ms" % kind], life)
    if kind == "drip" and life >= 1000 and b"resource-constraint" not in d["data"]:
        # A dripper the server admitted: refused ones are closed at once with
        # <resource-constraint/> (seen late when this loop is busy, so the error decides).
        st["drip_admitted"] += 1
        st["min_life_drip_ms"] = min(st["min_life_drip_ms"], life)
    if d["data"]:
        st["with_data"] += 1
    if b"resource-constraint" in d["data"]:
        st["resource_constraint"] += 1
    if b"connection-timeout" in d["data"]:
        st["connection_timeout"] += 1
    sel.unregister(s)
    s.close()
    redials.append((time.monotonic() + redial, kind))
def open_one(kind):
    if st["connects"] + st["failed"] >= max_connects:
        return
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((src, 0))
    s.settimeout(2)
    try:
        s.connect((host, port))
    except OSError:
        st["failed"] += 1
        s.close()
        return
    s.setblocking(False)
    st["connects"] += 1
    now = time.monotonic()
    sel.register(s, selectors.EVENT_READ, {"kind": kind, "opened": now, "next": now, "sent": 0, "data": b""})
def drain(wait):
    # Reads every close the server sent by now, so lifetimes are measured when they end.
    events = sel.select(timeout=wait)
    while events:
        for key, _ in events:
            settle(key)
        events = sel.select(timeout=0)
for _ in range(drip_n):
    open_one("drip")
for i in range(idle_n):
    open_one("idle")
    if i % 16 == 0:
        drain(0)
print(json.dumps({"opened": st["connects"], "failed": st["failed"]}), flush=True)
while time.monotonic() - start < duration:
    now = time.monotonic()
    for key in list(sel.get_map().values()):
        d = key.data
        if d["kind"] == "drip" and now >= d["next"] and d["sent"] < len(payload):
            try:
                key.fileobj.send(payload[d["sent"]:d["sent"] + 1])
                d["sent"] += 1
            except OSError:
                pass
            d["next"] = now + every
    n = 0
    while redials and redials[0][0] <= now:
        open_one(redials.pop(0)[1])
        n += 1
        if n % 16 == 0:
            drain(0)
    drain(0.05)
    # Only what the server still holds once every close it sent is read.
    now = time.monotonic()
    old = sum(1 for k in sel.get_map().values() if now - k.data["opened"] >= 1.5)
    st["max_old_open"] = max(st["max_old_open"], old)
now = time.monotonic()
for key in list(sel.get_map().values()):
    st["open_at_end"] += 1
    st["oldest_open_ms"] = max(st["oldest_open_ms"], int((now - key.data["opened"]) * 1000))
    key.fileobj.close()
st["summary"] = 1
print(json.dumps(st), flush=True)
"#;

/// What to drip on the dripping connections.
#[derive(Debug, Clone, Copy)]
pub enum Drip {
    /// An XMPP stream header, byte by byte.
    XmppHeader,
    /// A real TLS ClientHello, byte by byte.
    TlsHello,
}

/// The attack's parameters.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Loopback source address, e.g. `127.0.20.1` (never 127.0.10.0/24: the testbed's).
    pub source: &'static str,
    /// Target `host:port` split.
    pub host: String,
    pub port: u16,
    /// Connections held idle (opened after the dripping ones).
    pub idle: usize,
    /// Connections that get one byte every `every`.
    pub drippers: usize,
    pub drip: Drip,
    pub every: Duration,
    /// How long the attack lasts.
    pub duration: Duration,
    /// Most connection attempts in all.
    pub max_connects: usize,
    /// A connection the server closed is opened again this much later.
    pub redial: Duration,
}

/// A running attack.
pub struct Attack {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

/// What the attacker saw (times in milliseconds).
#[derive(Debug, Default, Clone)]
pub struct Report {
    pub line: String,
}

impl Report {
    /// A number from the summary (0 when absent).
    pub fn get(&self, key: &str) -> i64 {
        json_int(&self.line, key).unwrap_or(0)
    }
}

impl Attack {
    pub fn start(plan: &Plan) -> Attack {
        let mut child = Command::new(PYTHON)
            .arg("-c")
            .arg(SCRIPT)
            .args([
                plan.source.to_string(),
                plan.host.clone(),
                plan.port.to_string(),
                plan.idle.to_string(),
                plan.drippers.to_string(),
                plan.every.as_secs_f64().to_string(),
                plan.duration.as_secs_f64().to_string(),
                plan.max_connects.to_string(),
                match plan.drip {
                    Drip::XmppHeader => "xmpp",
                    Drip::TlsHello => "tls",
                }
                .to_string(),
                plan.redial.as_secs_f64().to_string(),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 runs the attacker");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Attack { child, lines }
    }

    /// Waits until the first wave is open; returns how many connections it made.
    pub fn wait_opened(&self, within: Duration) -> i64 {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(line) = self
                .lines
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains("\"opened\""))
            {
                return json_int(line, "opened").unwrap_or(0);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("the attacker opened nothing within {within:?}");
    }

    /// Waits for the attack's end (at most `within`) and its report.
    pub fn finish(mut self, within: Duration) -> Report {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::thread::sleep(Duration::from_millis(100));
        let line = self
            .lines
            .lock()
            .unwrap()
            .iter()
            .find(|l| l.contains("\"summary\""))
            .cloned()
            .expect("the attacker reports");
        Report { line }
    }
}

impl Drop for Attack {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
