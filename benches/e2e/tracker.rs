//! What happened to each message of a run: when it was sent, when and how it ended.
//!
//! Messages are numbered by a sequence per direction; the number travels in the message
//! (SIP Call-ID and body, XMPP stanza id and body) so that whichever thread sees the end can
//! record it. A message ends once: delivered (a 200, or the MESSAGE at the Edge) or answered
//! with an error (a SIP error response, an XMPP error stanza); a second end is counted as a
//! duplicate, never as another message.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

/// The end of a message: delivered or answered with an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    Delivered,
    Error,
}

const ERROR_BIT: u64 = 1 << 63;

/// One direction's messages.
pub struct Tracker {
    epoch: Instant,
    /// Nanoseconds since `epoch` + 1 when sent (0: not sent).
    sent: Vec<AtomicU64>,
    /// Nanoseconds since `epoch` + 1 when it ended, with [`ERROR_BIT`] for an error.
    ended: Vec<AtomicU64>,
    /// Seen by the receiving side (the partner, for SIP→XMPP), whatever the sender was told.
    seen: Vec<AtomicBool>,
    next: AtomicU64,
    /// Messages of the current phase (seq ≥ phase_start) that ended.
    phase_start: AtomicU64,
    phase_ended: AtomicU64,
    pub duplicates: AtomicU64,
}

impl Tracker {
    pub fn new(epoch: Instant, capacity: usize) -> Tracker {
        Tracker {
            epoch,
            sent: (0..capacity).map(|_| AtomicU64::new(0)).collect(),
            ended: (0..capacity).map(|_| AtomicU64::new(0)).collect(),
            seen: (0..capacity).map(|_| AtomicBool::new(false)).collect(),
            next: AtomicU64::new(0),
            phase_start: AtomicU64::new(0),
            phase_ended: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
        }
    }

    pub fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64 + 1
    }

    /// Starts a phase: its messages are numbered from the returned sequence.
    pub fn begin_phase(&self) -> u64 {
        let start = self.next.load(Ordering::SeqCst);
        self.phase_start.store(start, Ordering::SeqCst);
        self.phase_ended.store(0, Ordering::SeqCst);
        start
    }

    /// Reserves up to `n` sequence numbers; fewer (maybe none) when the table is full.
    pub fn reserve(&self, n: u64) -> std::ops::Range<u64> {
        let cap = self.sent.len() as u64;
        let first = self.next.fetch_add(n, Ordering::SeqCst);
        let end = (first + n).min(cap);
        if first + n > cap {
            self.next.store(cap, Ordering::SeqCst);
        }
        first.min(cap)..end
    }

    /// The next sequence number to be reserved.
    pub fn issued(&self) -> u64 {
        self.next.load(Ordering::SeqCst)
    }

    /// Messages of the current phase that ended.
    pub fn phase_ended(&self) -> u64 {
        self.phase_ended.load(Ordering::SeqCst)
    }

    pub fn mark_sent(&self, seq: u64, now_ns: u64) {
        if let Some(s) = self.sent.get(seq as usize) {
            s.store(now_ns, Ordering::Relaxed);
        }
    }

    /// Records the end of `seq` (the first end counts).
    pub fn end(&self, seq: u64, end: End) {
        let Some(slot) = self.ended.get(seq as usize) else {
            return;
        };
        let mut value = self.now_ns();
        if end == End::Error {
            value |= ERROR_BIT;
        }
        if slot
            .compare_exchange(0, value, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            if seq >= self.phase_start.load(Ordering::SeqCst) {
                self.phase_ended.fetch_add(1, Ordering::SeqCst);
            }
        } else {
            self.duplicates.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The receiving side saw `seq`.
    pub fn mark_seen(&self, seq: u64) {
        if let Some(s) = self.seen.get(seq as usize) {
            s.store(true, Ordering::Relaxed);
        }
    }

    /// What became of the messages in `range`.
    pub fn summary(&self, range: std::ops::Range<u64>) -> Summary {
        let mut s = Summary::default();
        let mut first_sent = u64::MAX;
        let mut last_end = 0;
        for seq in range {
            let sent = self.sent[seq as usize].load(Ordering::SeqCst);
            if sent == 0 {
                continue;
            }
            s.sent += 1;
            first_sent = first_sent.min(sent);
            let ended = self.ended[seq as usize].load(Ordering::SeqCst);
            if ended == 0 {
                s.lost += 1;
                continue;
            }
            let at = ended & !ERROR_BIT;
            last_end = last_end.max(at);
            if ended & ERROR_BIT != 0 {
                s.errors += 1;
            } else {
                s.delivered += 1;
                if !self.seen[seq as usize].load(Ordering::SeqCst) {
                    s.delivered_unseen += 1;
                }
                s.latencies_ns.push(at.saturating_sub(sent));
            }
        }
        s.latencies_ns.sort_unstable();
        if last_end > first_sent {
            s.span_s = (last_end - first_sent) as f64 / 1e9;
        }
        s
    }
}

/// A phase's messages.
#[derive(Debug, Default)]
pub struct Summary {
    pub sent: u64,
    pub delivered: u64,
    pub errors: u64,
    /// Sent and never ended (neither delivered nor answered with an error).
    pub lost: u64,
    /// Delivered without the receiving side having seen it (only meaningful where the
    /// receiver marks what it sees: SIP→XMPP, a 200 for a stanza the partner never got).
    pub delivered_unseen: u64,
    /// From the first send to the last end.
    pub span_s: f64,
    /// Delivered messages, sorted.
    pub latencies_ns: Vec<u64>,
}

impl Summary {
    /// Messages delivered per second over the phase's span (errors do not count).
    pub fn rate(&self) -> f64 {
        if self.span_s > 0.0 {
            self.delivered as f64 / self.span_s
        } else {
            0.0
        }
    }

    /// The `q` quantile of the delivered latencies, in milliseconds.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        quantile_ms(&self.latencies_ns, q)
    }
}

/// The `q` quantile of sorted nanoseconds, in milliseconds (0 when empty).
pub fn quantile_ms(sorted_ns: &[u64], q: f64) -> f64 {
    if sorted_ns.is_empty() {
        return 0.0;
    }
    let i = ((sorted_ns.len() as f64 * q).ceil() as usize).clamp(1, sorted_ns.len()) - 1;
    sorted_ns[i] as f64 / 1e6
}
