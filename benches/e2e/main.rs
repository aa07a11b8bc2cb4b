//! `make bench`, end-to-end part: xsgw's own load generators around a real `xsgw` process.
//!
//! ```text
//!  Edge (edge.rs) ──mutual TLS──▶ xsgw (target/release/xsgw) ──S2S, STARTTLS+EXTERNAL──▶ partner (partner.rs)
//!   1000 SIP users ◀──mutual TLS──   127.0.40.1               ◀──S2S, STARTTLS+EXTERNAL──  1000 XMPP users
//!   127.0.40.3                                                                             127.0.40.2
//! ```
//!
//! Everything listens on 127.0.40.0/24 (the testbed has 127.0.10.0/24); certificates are
//! made at run time with openssl. Phases, each timed and accounted message by message
//! (delivered, or answered with an error; `lost` is what got neither):
//! 1. start-up: spawn to both listeners accepting (`startup_ms`);
//! 2. saturation each way with a window of messages in flight (`sip_to_xmpp_msgs_per_s`,
//!    `xmpp_to_sip_msgs_per_s`), xsgw's CPU from /proc per message (`cpu_us_per_msg`);
//! 3. fixed rates each way (1k, 5k, 20k/s by default): latency p50/p99/p99.9, SIP→XMPP from
//!    the MESSAGE to its final response (the barrier included; the partner's own time to
//!    answer the ping beside it), XMPP→SIP from writing the stanza to the MESSAGE at the Edge;
//! 4. a run both ways where the partner's and the Edge's connections are cut mid-run;
//! 5. idle scale: `E2E_IDLE_STREAMS` authenticated streams from as many partner domains,
//!    RSS per stream, time to accept them, and messages crossing while they are open.
//!
//! Each group (saturation, fixed rates, the cut run, idle scale) starts on a fresh xsgw
//! process, so that what one left broken does not spoil the next one's figures.
//!
//! Writes `target/bench/e2e.json` (merged with `target/bench/peers.json` when the peers'
//! bench wrote one, with the ratios) and prints a table. Environment: see [`Settings`].

// The bench is all shell: threads, sockets, channels, clocks and locks are its job, so the
// core/shell line of clippy.toml (`disallowed-methods`/`-types`) does not apply here.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod edge;
mod gateway;
mod json;
mod partner;
mod pki;
mod pump;
mod tracker;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use edge::Edge;
use gateway::{Addresses, Gateway};
use json::{Figures, Value};
use partner::{Out, Partner};
use tracker::{quantile_ms, Summary, Tracker};

/// What the environment may change (defaults keep the whole run near two minutes).
struct Settings {
    /// `E2E_SECONDS`: each saturation phase.
    seconds: f64,
    /// `E2E_RATE_SECONDS`: each fixed-rate phase.
    rate_seconds: f64,
    /// `E2E_RATES`: comma-separated messages per second.
    rates: Vec<u64>,
    /// `E2E_WINDOW`: messages in flight at saturation, per direction (xsgw answers 503 past
    /// 1024 requests pending on one Edge connection: `sip::link::MAX_PENDING_SERVER`).
    window: u64,
    /// `E2E_IDLE_STREAMS`: idle authenticated streams (0 skips the phase).
    idle_streams: usize,
    /// `E2E_IDLE_CONNECTORS`: streams being set up at once.
    idle_connectors: usize,
    /// `E2E_DROP_SECONDS` and `E2E_DROP_RATE`: the run with cut connections.
    drop_seconds: f64,
    drop_rate: u64,
    /// `E2E_DRAIN_SECONDS`: how long a phase waits for its last answers. (`E2E_STRICT=1`
    /// makes the bench fail when a message was lost; `E2E_MAX_MESSAGES` sizes the tables.)
    drain_seconds: f64,
}

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

impl Settings {
    fn from_env() -> Settings {
        Settings {
            seconds: env("E2E_SECONDS", 5.0),
            rate_seconds: env("E2E_RATE_SECONDS", 3.0),
            rates: std::env::var("E2E_RATES")
                .unwrap_or_else(|_| "1000,5000,20000".into())
                .split(',')
                .filter_map(|r| r.trim().parse().ok())
                .collect(),
            window: env("E2E_WINDOW", 512),
            idle_streams: env("E2E_IDLE_STREAMS", 10_000),
            idle_connectors: env("E2E_IDLE_CONNECTORS", 8),
            drop_seconds: env("E2E_DROP_SECONDS", 6.0),
            drop_rate: env("E2E_DROP_RATE", 2000),
            drain_seconds: env("E2E_DRAIN_SECONDS", 40.0),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Dir {
    SipToXmpp,
    XmppToSip,
}

impl Dir {
    fn key(self) -> &'static str {
        match self {
            Dir::SipToXmpp => "sip_to_xmpp",
            Dir::XmppToSip => "xmpp_to_sip",
        }
    }
    fn arrow(self) -> &'static str {
        match self {
            Dir::SipToXmpp => "sip→xmpp",
            Dir::XmppToSip => "xmpp→sip",
        }
    }
}

/// Everything a phase drives.
struct Rig {
    gateway: Gateway,
    bin: PathBuf,
    config: PathBuf,
    work: PathBuf,
    /// How many times xsgw was started (each start has its own log file).
    starts: u32,
    edge: Arc<Edge>,
    partner: Arc<Partner>,
    s2x: Arc<Tracker>,
    x2s: Arc<Tracker>,
    addresses: Addresses,
    drain: Duration,
}

/// How a phase sends.
struct Load {
    /// Messages per second per direction; `None`: as fast as the window allows.
    rate: Option<f64>,
    duration: Duration,
    /// Most messages in flight per direction.
    window: u64,
    /// Most messages per direction.
    limit: u64,
}

/// One direction's outcome in a phase.
struct Outcome {
    summary: Summary,
    /// Messages the generator reserved but could not write (its own connection was down).
    unsent: u64,
    /// Ping answer times of the partner during the phase (SIP→XMPP), sorted.
    answer_ns: Vec<u64>,
}

impl Rig {
    /// The log file of the `n`th start of xsgw.
    fn log(&self) -> PathBuf {
        match self.starts {
            0 | 1 => self.work.join("xsgw.log"),
            n => self.work.join(format!("xsgw-{n}.log")),
        }
    }

    /// Waits for xsgw's connection to the Edge and the partner's stream to xsgw (counters
    /// past the given values), then sends a few messages each way, which also opens xsgw's
    /// stream to the partner.
    fn connected(&self, accepted: u64, streams: u64) -> Result<(), String> {
        let waited = Instant::now();
        while self.edge.accepted.load(Ordering::SeqCst) <= accepted
            || self.partner.outbound_streams.load(Ordering::SeqCst) <= streams
        {
            if waited.elapsed() > Duration::from_secs(10) {
                return Err(format!(
                    "xsgw and the generators did not connect within 10 s; see {}",
                    self.log().display()
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let warm = Load {
            rate: None,
            duration: Duration::from_secs(15),
            window: 1,
            limit: 20,
        };
        for dir in [Dir::SipToXmpp, Dir::XmppToSip] {
            let o = self.phase(&[dir], &warm, |_| {});
            if o[0].summary.delivered == 0 {
                return Err(format!(
                    "warm-up: no {} message was delivered ({} errors, {} lost); see {}",
                    dir.arrow(),
                    o[0].summary.errors,
                    o[0].summary.lost,
                    self.log().display()
                ));
            }
        }
        Ok(())
    }

    /// A fresh xsgw for the next group of phases, so that what one group left broken (a
    /// stuck barrier, a full queue) does not spoil the next one's figures; the generators
    /// reconnect. Fails when xsgw is no longer running (a crash is a finding).
    fn restart(&mut self) -> Result<(), String> {
        if !self.gateway.alive() {
            return Err(format!(
                "xsgw exited during the run; see {}",
                self.log().display()
            ));
        }
        let accepted = self.edge.accepted.load(Ordering::SeqCst);
        let streams = self.partner.outbound_streams.load(Ordering::SeqCst);
        self.gateway.terminate(Duration::from_secs(10));
        self.starts += 1;
        let (gateway, _) = Gateway::start(&self.bin, &self.config, &self.log(), &self.addresses)?;
        self.gateway = gateway;
        self.edge
            .connect(self.addresses.sip)
            .map_err(|e| format!("the Edge's connection to xsgw: {e}"))?;
        let drain = self.drain;
        self.drain = Duration::from_secs(10);
        let result = self.connected(accepted, streams);
        self.drain = drain;
        result
    }

    fn tracker(&self, dir: Dir) -> &Tracker {
        match dir {
            Dir::SipToXmpp => &self.s2x,
            Dir::XmppToSip => &self.x2s,
        }
    }

    fn send(&self, dir: Dir, range: std::ops::Range<u64>) {
        match dir {
            Dir::SipToXmpp => {
                self.edge.send(range);
            }
            Dir::XmppToSip => self.partner.send(Out::Messages(range)),
        }
    }

    /// Drives `dirs` together; `tick` is called with the fraction of the duration elapsed.
    fn phase(&self, dirs: &[Dir], load: &Load, mut tick: impl FnMut(f64)) -> Vec<Outcome> {
        self.partner.answer_ns.lock().unwrap().clear();
        let firsts: Vec<u64> = dirs
            .iter()
            .map(|d| self.tracker(*d).begin_phase())
            .collect();
        let start = Instant::now();
        loop {
            let elapsed = start.elapsed();
            if elapsed >= load.duration {
                break;
            }
            tick(elapsed.as_secs_f64() / load.duration.as_secs_f64());
            let mut idle = true;
            let mut done = true;
            for (dir, first) in dirs.iter().zip(&firsts) {
                let t = self.tracker(*dir);
                let issued = t.issued() - first;
                if issued < load.limit {
                    done = false;
                }
                let due = match load.rate {
                    Some(r) => (r * elapsed.as_secs_f64()) as u64 + 1,
                    None => u64::MAX,
                };
                let in_flight = issued.saturating_sub(t.phase_ended());
                let n = due
                    .saturating_sub(issued)
                    .min(load.window.saturating_sub(in_flight))
                    .min(load.limit - issued.min(load.limit))
                    .min(256);
                if n > 0 {
                    let range = t.reserve(n);
                    if !range.is_empty() {
                        self.send(*dir, range);
                        idle = false;
                    }
                }
            }
            if done
                && dirs
                    .iter()
                    .zip(&firsts)
                    .all(|(d, f)| self.tracker(*d).phase_ended() >= self.tracker(*d).issued() - f)
            {
                break;
            }
            if idle {
                std::thread::sleep(Duration::from_micros(100));
            }
        }
        let deadline = Instant::now() + self.drain;
        let ends: Vec<u64> = dirs.iter().map(|d| self.tracker(*d).issued()).collect();
        while Instant::now() < deadline
            && dirs
                .iter()
                .zip(firsts.iter().zip(&ends))
                .any(|(d, (f, e))| self.tracker(*d).phase_ended() < e - f)
        {
            std::thread::sleep(Duration::from_millis(1));
        }
        let mut answers = std::mem::take(&mut *self.partner.answer_ns.lock().unwrap());
        answers.sort_unstable();
        dirs.iter()
            .zip(firsts.iter().zip(&ends))
            .map(|(d, (f, e))| {
                let summary = self.tracker(*d).summary(*f..*e);
                Outcome {
                    unsent: (e - f).saturating_sub(summary.sent),
                    summary,
                    answer_ns: if *d == Dir::SipToXmpp {
                        answers.clone()
                    } else {
                        Vec::new()
                    },
                }
            })
            .collect()
    }
}

fn main() {
    if let Err(e) = run() {
        eprintln!("e2e bench: {e}");
        std::process::exit(1);
    }
}

/// A free port on a loopback address of ours.
fn free_port(ip: &str) -> Result<SocketAddr, String> {
    TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("cannot bind {ip}: {e}"))
}

struct Row {
    dir: Dir,
    mode: String,
    outcome: Outcome,
    cpu_us_per_msg: Option<f64>,
}

fn run() -> Result<(), String> {
    let settings = Settings::from_env();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out_dir = root.join("target/bench");
    let work = out_dir.join("e2e-run");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(work.join("state")).map_err(|e| e.to_string())?;
    let mut figures = Figures::default();

    let bin = gateway::binary()?;
    let binary_bytes = std::fs::metadata(&bin).map_err(|e| e.to_string())?.len();
    // xsgw holds two descriptors per stream (the socket and its clone for the reader), the
    // bench one; both inherit this limit.
    let mut idle_streams = settings.idle_streams;
    let nofile = gateway::raise_open_files(2 * idle_streams as u64 + 1024);
    if (nofile as usize) < 2 * idle_streams + 1024 {
        let fits = (nofile as usize).saturating_sub(1024) / 2;
        println!(
            "open files limited to {nofile} (ulimit -n): {fits} idle streams instead of {idle_streams}"
        );
        idle_streams = fits;
    }

    let pki = pki::Pki::create(&work.join("pki"))?;
    let epoch = Instant::now();
    let capacity: usize = env("E2E_MAX_MESSAGES", 2_000_000);
    let s2x = Arc::new(Tracker::new(epoch, capacity));
    let x2s = Arc::new(Tracker::new(epoch, capacity));
    let xmpp = free_port("127.0.40.1")?;
    let sip = free_port("127.0.40.1")?;
    let (partner, partner_addr) = Partner::start(
        &pki,
        "127.0.40.2:0".parse().unwrap(),
        xmpp,
        Arc::clone(&s2x),
        Arc::clone(&x2s),
    )?;
    let (edge, edge_addr) = Edge::start(
        &pki,
        "127.0.40.3:0".parse().unwrap(),
        Arc::clone(&s2x),
        Arc::clone(&x2s),
    )?;
    let addresses = Addresses {
        xmpp,
        sip,
        partner: partner_addr,
        edge: edge_addr,
    };
    let config_path = work.join("xsgw.ini");
    std::fs::write(
        &config_path,
        gateway::config(&pki, &work.join("state"), &addresses, idle_streams),
    )
    .map_err(|e| e.to_string())?;
    let log = work.join("xsgw.log");
    let (gateway, startup) = Gateway::start(&bin, &config_path, &log, &addresses)?;
    println!(
        "xsgw {} started, listening after {:.1} ms (pid {}, log {})",
        bin.display(),
        startup.as_secs_f64() * 1e3,
        gateway.pid,
        log.display()
    );
    edge.connect(sip)
        .map_err(|e| format!("the Edge's connection to xsgw: {e}"))?;
    partner
        .connect()
        .map_err(|e| format!("the partner's stream to xsgw: {e}"))?;
    let mut rig = Rig {
        gateway,
        bin: bin.clone(),
        config: config_path.clone(),
        work: work.clone(),
        starts: 1,
        edge,
        partner,
        s2x,
        x2s,
        addresses,
        drain: Duration::from_secs(10),
    };
    rig.connected(0, 0)?;
    rig.drain = Duration::from_secs_f64(settings.drain_seconds);
    let mut rows: Vec<Row> = Vec::new();

    // Saturation, one direction at a time.
    let mut cpu_total = Duration::ZERO;
    let mut msgs_total = 0u64;
    for dir in [Dir::SipToXmpp, Dir::XmppToSip] {
        let cpu0 = rig.gateway.cpu();
        let own0 = gateway::cpu_of(std::process::id()).unwrap_or_default();
        let o = rig
            .phase(
                &[dir],
                &Load {
                    rate: None,
                    duration: Duration::from_secs_f64(settings.seconds),
                    window: settings.window,
                    limit: u64::MAX,
                },
                |_| {},
            )
            .remove(0);
        let cpu = rig.gateway.cpu() - cpu0;
        let own = gateway::cpu_of(std::process::id()).unwrap_or_default() - own0;
        let n = o.summary.delivered + o.summary.errors;
        if n > 0 {
            // The generators' own cost: when it nears xsgw's, they may be what limits.
            figures.num(
                format!("generator_cpu_us_per_msg_{}", dir.key()),
                own.as_secs_f64() * 1e6 / n as f64,
            );
        }
        cpu_total += cpu;
        msgs_total += n;
        let per = (n > 0).then(|| cpu.as_secs_f64() * 1e6 / n as f64);
        figures.num(format!("{}_msgs_per_s", dir.key()), o.summary.rate());
        figures.int(format!("{}_saturation_sent", dir.key()), o.summary.sent);
        figures.int(format!("{}_saturation_errors", dir.key()), o.summary.errors);
        figures.int(
            format!("{}_saturation_lost", dir.key()),
            o.summary.lost + o.unsent,
        );
        if let Some(per) = per {
            figures.num(format!("cpu_us_per_msg_{}", dir.key()), per);
        }
        rows.push(Row {
            dir,
            mode: "saturation".into(),
            outcome: o,
            cpu_us_per_msg: per,
        });
    }
    if msgs_total > 0 {
        figures.num(
            "cpu_us_per_msg",
            cpu_total.as_secs_f64() * 1e6 / msgs_total as f64,
        );
    }
    let (rss, threads) = rig.gateway.rss_kib_and_threads();
    figures.int("rss_kib", rss);
    figures.int("threads", threads);

    // Fixed rates, one direction at a time.
    if !settings.rates.is_empty() {
        rig.restart()?;
    }
    for &rate in &settings.rates {
        for dir in [Dir::SipToXmpp, Dir::XmppToSip] {
            let cpu0 = rig.gateway.cpu();
            let o = rig
                .phase(
                    &[dir],
                    &Load {
                        rate: Some(rate as f64),
                        duration: Duration::from_secs_f64(settings.rate_seconds),
                        window: (rate * 2).max(settings.window),
                        limit: u64::MAX,
                    },
                    |_| {},
                )
                .remove(0);
            let cpu = rig.gateway.cpu() - cpu0;
            let n = o.summary.delivered + o.summary.errors;
            let tag = rate_tag(rate);
            let k = dir.key();
            figures.num(format!("{k}_p50_ms_at_{tag}"), o.summary.quantile_ms(0.5));
            figures.num(format!("{k}_p99_ms_at_{tag}"), o.summary.quantile_ms(0.99));
            figures.num(
                format!("{k}_p99_9_ms_at_{tag}"),
                o.summary.quantile_ms(0.999),
            );
            figures.num(format!("{k}_msgs_per_s_at_{tag}"), o.summary.rate());
            figures.int(format!("{k}_lost_at_{tag}"), o.summary.lost + o.unsent);
            if dir == Dir::SipToXmpp {
                figures.num(
                    format!("partner_answer_p99_ms_at_{tag}"),
                    quantile_ms(&o.answer_ns, 0.99),
                );
            }
            rows.push(Row {
                dir,
                mode: format!("{rate}/s"),
                outcome: o,
                cpu_us_per_msg: (n > 0).then(|| cpu.as_secs_f64() * 1e6 / n as f64),
            });
        }
    }

    // Both ways with the partner's and the Edge's connections cut mid-run.
    if settings.drop_seconds > 0.0 {
        rig.restart()?;
        let reopened = rig.partner.outbound_streams.load(Ordering::SeqCst);
        let reconnected = rig.edge.accepted.load(Ordering::SeqCst);
        let (mut cut_out, mut cut_in, mut cut_edge) = (false, false, false);
        let (partner, edge) = (Arc::clone(&rig.partner), Arc::clone(&rig.edge));
        let outcomes = rig.phase(
            &[Dir::SipToXmpp, Dir::XmppToSip],
            &Load {
                rate: Some(settings.drop_rate as f64),
                duration: Duration::from_secs_f64(settings.drop_seconds),
                window: settings.window.max(settings.drop_rate * 2),
                limit: u64::MAX,
            },
            |f| {
                if f >= 0.3 && !cut_out {
                    cut_out = true;
                    partner.cut_outbound();
                }
                if f >= 0.5 && !cut_in {
                    cut_in = true;
                    partner.cut_inbound();
                }
                if f >= 0.7 && !cut_edge {
                    cut_edge = true;
                    edge.cut_from_gateway();
                }
            },
        );
        for (dir, o) in [Dir::SipToXmpp, Dir::XmppToSip].into_iter().zip(outcomes) {
            let k = dir.key();
            figures.int(format!("drop_{k}_sent"), o.summary.sent);
            figures.int(format!("drop_{k}_delivered"), o.summary.delivered);
            figures.int(format!("drop_{k}_errors"), o.summary.errors);
            figures.int(format!("drop_{k}_lost"), o.summary.lost + o.unsent);
            rows.push(Row {
                dir,
                mode: "cut mid-run".into(),
                outcome: o,
                cpu_us_per_msg: None,
            });
        }
        figures.int(
            "drop_partner_streams_reopened",
            rig.partner.outbound_streams.load(Ordering::SeqCst) - reopened,
        );
        figures.int(
            "drop_edge_reconnections",
            rig.edge.accepted.load(Ordering::SeqCst) - reconnected,
        );
    }

    // Idle scale.
    let mut idle_line = String::from("idle scale: skipped (E2E_IDLE_STREAMS=0)");
    if idle_streams > 0 {
        rig.restart()?;
        idle_line = idle_phase(
            &mut rig,
            &pki,
            idle_streams,
            &settings,
            &mut figures,
            &mut rows,
        )?;
    }

    if !rig.gateway.alive() {
        return Err(format!(
            "xsgw exited during the run; see {}",
            rig.log().display()
        ));
    }
    rig.edge.stop();
    rig.partner.stop();
    let exit = rig.gateway.stop(Duration::from_secs(10));
    figures.str(
        "xsgw_exit",
        exit.map_or("killed after 10 s".to_string(), |c| c.to_string()),
    );

    figures.num("startup_ms", startup.as_secs_f64() * 1e3);
    figures.int("binary_bytes", binary_bytes);
    // The static binary of `make static`, when it is not older than the binary measured.
    let static_bin = root.join("target/x86_64-unknown-linux-musl/release/xsgw");
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if let (Ok(m), Some(at), Some(release_at)) = (
        std::fs::metadata(&static_bin),
        modified(&static_bin),
        modified(&bin),
    ) {
        if at >= release_at {
            figures.int("static_binary_bytes", m.len());
        }
    }
    let lost: u64 = rows
        .iter()
        .map(|r| r.outcome.summary.lost + r.outcome.unsent)
        .sum();
    figures.int("lost", lost);
    let unseen: u64 = rows
        .iter()
        .map(|r| r.outcome.summary.delivered_unseen)
        .sum();
    figures.int("sip_200_without_partner_receipt", unseen);
    figures.int(
        "duplicate_answers",
        rig.s2x.duplicates.load(Ordering::SeqCst) + rig.x2s.duplicates.load(Ordering::SeqCst),
    );
    figures.int(
        "partner_messages_received",
        rig.partner.received.load(Ordering::SeqCst),
    );
    figures.int(
        "partner_pings_answered",
        rig.partner.pings.load(Ordering::SeqCst),
    );
    figures.int(
        "partner_streams_accepted",
        rig.partner.inbound_streams.load(Ordering::SeqCst),
    );
    figures.str(
        "sip_to_xmpp_final_statuses",
        format!("{:?}", rig.edge.statuses.lock().unwrap()),
    );
    figures.num("e2e_seconds", settings.seconds);
    figures.num("e2e_rate_seconds", settings.rate_seconds);
    figures.int("e2e_window", settings.window);
    figures.int("e2e_idle_streams", settings.idle_streams as u64);

    let ratios = merge_peers(&out_dir, &mut figures);
    print_table(&rows, &figures, &idle_line, &ratios, lost);
    let path = out_dir.join("e2e.json");
    std::fs::write(&path, figures.to_json()).map_err(|e| format!("{}: {e}", path.display()))?;
    println!("written: {}", path.display());
    if lost > 0 && env("E2E_STRICT", 0) == 1 {
        return Err(format!("{lost} message(s) lost (E2E_STRICT=1)"));
    }
    Ok(())
}

fn rate_tag(rate: u64) -> String {
    if rate % 1000 == 0 {
        format!("{}k", rate / 1000)
    } else {
        rate.to_string()
    }
}

fn idle_phase(
    rig: &mut Rig,
    pki: &pki::Pki,
    n: usize,
    settings: &Settings,
    figures: &mut Figures,
    rows: &mut Vec<Row>,
) -> Result<String, String> {
    let tls = partner::xmpp_tls(pki, "idle")?;
    let (rss0, threads0) = rig.gateway.rss_kib_and_threads();
    let fds0 = rig.gateway.open_fds();
    let held = Mutex::new(Vec::with_capacity(n));
    let next = AtomicUsize::new(0);
    let failed = AtomicUsize::new(0);
    let first_error = Mutex::new(None::<String>);
    let started = Instant::now();
    let xmpp = rig.addresses.xmpp;
    std::thread::scope(|scope| {
        for _ in 0..settings.idle_connectors.max(1) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= n || failed.load(Ordering::SeqCst) > 100 {
                    break;
                }
                match partner::open_idle(&tls, xmpp, i) {
                    Ok(conn) => held.lock().unwrap().push(conn),
                    Err(e) => {
                        failed.fetch_add(1, Ordering::SeqCst);
                        first_error.lock().unwrap().get_or_insert(e.to_string());
                    }
                }
            });
        }
    });
    let accept = started.elapsed();
    std::thread::sleep(Duration::from_millis(500));
    let (rss1, threads1) = rig.gateway.rss_kib_and_threads();
    let fds1 = rig.gateway.open_fds();
    let count = held.lock().unwrap().len();
    let failed = failed.load(Ordering::SeqCst);
    if let Some(e) = first_error.lock().unwrap().as_ref() {
        println!("idle streams: {failed} failed to set up; the first: {e}");
    }
    let per_stream = if count > 0 {
        rss1.saturating_sub(rss0) as f64 / count as f64
    } else {
        0.0
    };
    figures.int("idle_streams", count as u64);
    figures.int("idle_streams_failed", failed as u64);
    figures.num("idle_accept_s", accept.as_secs_f64());
    figures.num("idle_streams_per_s", count as f64 / accept.as_secs_f64());
    figures.num("idle_stream_rss_kib", per_stream);
    figures.int("idle_rss_kib", rss1);
    figures.int("idle_threads", threads1);
    figures.int("idle_fds", fds1);

    // Messages crossing one at a time while the streams are open.
    let mut crossing = Vec::new();
    for dir in [Dir::SipToXmpp, Dir::XmppToSip] {
        let o = rig
            .phase(
                &[dir],
                &Load {
                    rate: None,
                    duration: Duration::from_secs(20),
                    window: 1,
                    limit: 200,
                },
                |_| {},
            )
            .remove(0);
        let k = dir.key();
        figures.num(format!("idle_{k}_p50_ms"), o.summary.quantile_ms(0.5));
        figures.num(format!("idle_{k}_max_ms"), o.summary.quantile_ms(1.0));
        crossing.push(format!(
            "{} p50 {:.2} ms, max {:.2} ms",
            dir.arrow(),
            o.summary.quantile_ms(0.5),
            o.summary.quantile_ms(1.0)
        ));
        rows.push(Row {
            dir,
            mode: format!("{count} idle open"),
            outcome: o,
            cpu_us_per_msg: None,
        });
    }
    let closing = Instant::now();
    drop(held);
    let line = format!(
        "idle scale: {count} streams ({failed} failed) from {count} domains in {:.1} s ({:.0}/s); \
         xsgw RSS {rss0} → {rss1} KiB = {per_stream:.1} KiB per stream, threads {threads0} → {threads1}, \
         open files {fds0} → {fds1}; \
         a message across meanwhile: {}",
        accept.as_secs_f64(),
        count as f64 / accept.as_secs_f64(),
        crossing.join("; ")
    );
    // Let xsgw see the closes before it is stopped.
    while closing.elapsed() < Duration::from_secs(10) {
        let (_, t) = rig.gateway.rss_kib_and_threads();
        if t <= threads0 + 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(line)
}

/// Adds peers.json's keys; returns the ratio lines.
fn merge_peers(out_dir: &Path, figures: &mut Figures) -> Vec<String> {
    let mut lines = Vec::new();
    let Ok(text) = std::fs::read_to_string(out_dir.join("peers.json")) else {
        return lines;
    };
    let Some(members) = json::members(&text) else {
        lines.push("target/bench/peers.json is not a JSON object: not merged".into());
        return lines;
    };
    for (key, raw) in &members {
        // A key this bench wrote too stays ours; the peers' figure is kept beside it.
        let key = if figures.get(key).is_some() {
            format!("peers_{key}")
        } else {
            key.clone()
        };
        figures.set(key, Value::Raw(raw.clone()));
    }
    for (key, raw) in &members {
        let Ok(theirs) = raw.parse::<f64>() else {
            continue;
        };
        if theirs <= 0.0 {
            continue;
        }
        // Ratios against the real peers' own figures only.
        let peer = key.split('_').next().unwrap_or(key);
        if !matches!(peer, "prosody" | "kamailio") {
            continue;
        }
        if key.ends_with("_msgs_per_s") {
            for dir in [Dir::SipToXmpp, Dir::XmppToSip] {
                if let Some(ours) = figures.get_num(&format!("{}_msgs_per_s", dir.key())) {
                    let r = ours / theirs;
                    figures.num(format!("ratio_{}_over_{key}", dir.key()), r);
                    lines.push(format!(
                        "xsgw {} {ours:.0}/s ÷ {key} {theirs:.0}/s = {r:.2} (xsgw/{peer})",
                        dir.arrow()
                    ));
                }
            }
        } else if key.ends_with("cpu_us_per_msg") {
            if let Some(ours) = figures.get_num("cpu_us_per_msg") {
                let r = ours / theirs;
                figures.num(format!("ratio_cpu_us_per_msg_over_{key}"), r);
                lines.push(format!(
                    "xsgw cpu {ours:.1} µs/msg ÷ {key} {theirs:.1} = {r:.2} (xsgw/{peer})"
                ));
            }
        }
    }
    lines
}

fn print_table(rows: &[Row], figures: &Figures, idle: &str, ratios: &[String], lost: u64) {
    println!();
    println!(
        "xsgw end to end (TLS both legs, loopback; a shared machine is noisy: compare ratios)"
    );
    println!(
        "{:<9} {:<16} {:>8} {:>9} {:>6} {:>5} {:>9} {:>8} {:>8} {:>8} {:>11} {:>8}",
        "way",
        "load",
        "sent",
        "delivered",
        "errors",
        "lost",
        "msgs/s",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "partner p99",
        "cpu µs"
    );
    for r in rows {
        let s = &r.outcome.summary;
        let partner = if r.dir == Dir::SipToXmpp && !r.outcome.answer_ns.is_empty() {
            format!("{:.3}", quantile_ms(&r.outcome.answer_ns, 0.99))
        } else {
            "-".into()
        };
        println!(
            "{:<9} {:<16} {:>8} {:>9} {:>6} {:>5} {:>9.0} {:>8.2} {:>8.2} {:>8.2} {:>11} {:>8}",
            r.dir.arrow(),
            r.mode,
            s.sent,
            s.delivered,
            s.errors,
            s.lost + r.outcome.unsent,
            s.rate(),
            s.quantile_ms(0.5),
            s.quantile_ms(0.99),
            s.quantile_ms(0.999),
            partner,
            r.cpu_us_per_msg
                .map_or("-".to_string(), |c| format!("{c:.1}")),
        );
    }
    println!("lost={lost} (sent and neither delivered nor answered with an error, all phases)");
    let get_str = |k: &str| match figures.get(k) {
        Some(Value::Str(s)) => s.clone(),
        _ => String::new(),
    };
    println!(
        "sip→xmpp final responses by status: {}; 200 for a stanza the partner never got: {:.0}",
        get_str("sip_to_xmpp_final_statuses"),
        figures
            .get_num("sip_200_without_partner_receipt")
            .unwrap_or(0.0)
    );
    let get = |k: &str| figures.get_num(k).unwrap_or(f64::NAN);
    println!(
        "cpu {:.1} µs/msg at saturation; RSS {:.0} KiB, {:.0} threads; start-up {:.1} ms; binary {:.0} KiB",
        get("cpu_us_per_msg"),
        get("rss_kib"),
        get("threads"),
        get("startup_ms"),
        get("binary_bytes") / 1024.0
    );
    println!(
        "the generators' own CPU at saturation: sip→xmpp {:.1} µs/msg, xmpp→sip {:.1} µs/msg (same 2 cores)",
        get("generator_cpu_us_per_msg_sip_to_xmpp"),
        get("generator_cpu_us_per_msg_xmpp_to_sip")
    );
    println!("{idle}");
    for line in ratios {
        println!("{line}");
    }
}
