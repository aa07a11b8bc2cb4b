//! Log lines a hostile peer cannot forge or flood.
//!
//! Owns two things every log site that shows something from the network uses:
//! - [`Escaped`]: a peer-supplied string as it may appear in a log line — control characters
//!   (CR, LF, TAB, ESC, C1, Unicode line/paragraph separators and bidi overrides) escaped, and
//!   at most [`MAX_SHOWN`] characters shown, so `from='a&#10;ERROR forged'` stays on one line
//!   and a 256 KiB attribute does not become a 256 KiB log line. The log formatter
//!   (`ops::logging`) escapes control characters once more for lines that forgot to.
//! - [`RateLimit`] / [`SharedRateLimit`]: warnings a peer can trigger at will (refused
//!   connections, failed handshakes, quotas) are logged a few times per window and key
//!   (usually the source address or partner domain); the next line logged says how many were
//!   suppressed ([`Suppressed`]). Keys are bounded: past `max_keys` the oldest is forgotten,
//!   so an attacker spreading over many addresses costs memory no more than a fixed table.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::hash::Hash;
use std::time::{Duration, Instant};

/// Characters of a peer-supplied string shown in a log line; the rest becomes "…".
pub const MAX_SHOWN: usize = 200;

/// A peer-supplied string, escaped and truncated for a log line.
#[derive(Debug, Clone, Copy)]
pub struct Escaped<'a>(pub &'a str);

/// `s` as it may appear in a log line.
pub fn escaped(s: &str) -> Escaped<'_> {
    Escaped(s)
}

/// Whether `c` must not reach a log line as itself: C0/C1 controls, DEL, line and paragraph
/// separators, and the bidi controls that make a line read differently from its bytes.
pub fn is_unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
        )
}

/// Writes `c` escaped: `\n`, `\r`, `\t`, `\\`-free `\u{..}` for the rest.
fn write_escaped_char(f: &mut impl fmt::Write, c: char) -> fmt::Result {
    match c {
        '\n' => f.write_str("\\n"),
        '\r' => f.write_str("\\r"),
        '\t' => f.write_str("\\t"),
        c => write!(f, "\\u{{{:x}}}", c as u32),
    }
}

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (shown, c) in self.0.chars().enumerate() {
            if shown == MAX_SHOWN {
                return f.write_char('…');
            }
            if is_unsafe_char(c) {
                write_escaped_char(f, c)?;
            } else {
                f.write_char(c)?;
            }
        }
        Ok(())
    }
}

/// A whole formatted log line with any unsafe character escaped (no truncation); borrowed
/// when there is nothing to escape, which is nearly always.
pub fn escape_line(line: &str) -> std::borrow::Cow<'_, str> {
    if !line.chars().any(is_unsafe_char) {
        return std::borrow::Cow::Borrowed(line);
    }
    let mut out = String::with_capacity(line.len() + 16);
    for c in line.chars() {
        if is_unsafe_char(c) {
            let _ = write_escaped_char(&mut out, c);
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// "" for 0, else " (N similar lines suppressed)": appended to the line a [`RateLimit`] let
/// through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Suppressed(pub u64);

impl fmt::Display for Suppressed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            0 => Ok(()),
            1 => f.write_str(" (1 similar line suppressed)"),
            n => write!(f, " ({n} similar lines suppressed)"),
        }
    }
}

/// One key's window.
#[derive(Debug, Clone)]
struct Window {
    started: Instant,
    logged: u32,
    suppressed: u64,
    /// Insertion order, to forget the oldest key first.
    age: u64,
}

/// Per-key log rate limiter: `per_window` lines per key per `window`. Not thread-safe: own
/// it in one thread, or use [`SharedRateLimit`].
#[derive(Debug)]
pub struct RateLimit<K> {
    per_window: u32,
    window: Duration,
    max_keys: usize,
    keys: HashMap<K, Window>,
    next_age: u64,
}

impl<K: Hash + Eq + Clone> RateLimit<K> {
    /// `per_window` lines per key per `window`; at most `max_keys` keys remembered (at least 1).
    pub fn new(per_window: u32, window: Duration, max_keys: usize) -> Self {
        RateLimit {
            per_window: per_window.max(1),
            window,
            max_keys: max_keys.max(1),
            keys: HashMap::new(),
            next_age: 0,
        }
    }

    /// `Some(suppressed)` when a line for `key` may be logged now (`suppressed`: lines dropped
    /// for it since the last one logged); `None` when this one is to be dropped.
    pub fn allow(&mut self, key: &K, now: Instant) -> Option<u64> {
        if !self.keys.contains_key(key) && self.keys.len() >= self.max_keys {
            self.forget_oldest_half(now);
        }
        let age = self.next_age;
        match self.keys.entry(key.clone()) {
            Entry::Vacant(slot) => {
                self.next_age += 1;
                slot.insert(Window {
                    started: now,
                    logged: 1,
                    suppressed: 0,
                    age,
                });
                Some(0)
            }
            Entry::Occupied(mut slot) => {
                let w = slot.get_mut();
                if now.saturating_duration_since(w.started) >= self.window {
                    w.started = now;
                    w.logged = 0;
                }
                if w.logged < self.per_window {
                    w.logged += 1;
                    Some(std::mem::take(&mut w.suppressed))
                } else {
                    w.suppressed = w.suppressed.saturating_add(1);
                    None
                }
            }
        }
    }

    /// Makes room: windows that have ended and suppressed nothing go first, then the oldest
    /// half by insertion. Amortised O(1) per new key.
    fn forget_oldest_half(&mut self, now: Instant) {
        let window = self.window;
        self.keys
            .retain(|_, w| now.saturating_duration_since(w.started) < window || w.suppressed > 0);
        if self.keys.len() < self.max_keys {
            return;
        }
        let mut ages: Vec<u64> = self.keys.values().map(|w| w.age).collect();
        let middle = ages.len() / 2;
        let (_, cut, _) = ages.select_nth_unstable(middle);
        let cut = *cut;
        self.keys.retain(|_, w| w.age >= cut);
    }

    /// How many keys are remembered (for tests and status).
    pub fn keys(&self) -> usize {
        self.keys.len()
    }
}

pub use shared::SharedRateLimit;

// Shell: a lock shared by the connection threads (the rest of this module is pure).
#[allow(clippy::disallowed_types)]
mod shared {
    use std::hash::Hash;
    use std::sync::Mutex;
    use std::time::{Duration, Instant};

    use super::RateLimit;

    /// [`RateLimit`] behind a mutex, for lines logged from many connection threads. Logging
    /// is never on the hot path; a poisoned lock lets every line through rather than hide
    /// them.
    #[derive(Debug)]
    pub struct SharedRateLimit<K>(Mutex<RateLimit<K>>);

    impl<K: Hash + Eq + Clone> SharedRateLimit<K> {
        /// See [`RateLimit::new`].
        pub fn new(per_window: u32, window: Duration, max_keys: usize) -> Self {
            SharedRateLimit(Mutex::new(RateLimit::new(per_window, window, max_keys)))
        }

        /// See [`RateLimit::allow`].
        pub fn allow(&self, key: &K, now: Instant) -> Option<u64> {
            match self.0.lock() {
                Ok(mut limit) => limit.allow(key, now),
                Err(_) => Some(0),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forged_lines_stay_on_one_line() {
        let s = "gmail.test\nERROR xsgw: forged\r\tbell\u{7}\u{1b}[31m\u{85}\u{2028}\u{202e}";
        let shown = escaped(s).to_string();
        assert_eq!(
            shown,
            "gmail.test\\nERROR xsgw: forged\\r\\tbell\\u{7}\\u{1b}[31m\\u{85}\\u{2028}\\u{202e}"
        );
        assert!(!shown.chars().any(is_unsafe_char));
        // Printable text, including non-ASCII, is shown as it is.
        assert_eq!(escaped("jürgen@例え.test").to_string(), "jürgen@例え.test");
    }

    #[test]
    fn long_strings_are_cut() {
        let long = "a".repeat(100_000);
        let shown = escaped(&long).to_string();
        assert_eq!(shown.chars().count(), MAX_SHOWN + 1);
        assert!(shown.ends_with('…'));
        let exact = "b".repeat(MAX_SHOWN);
        assert_eq!(escaped(&exact).to_string(), exact);
    }

    #[test]
    fn whole_lines_are_escaped_only_when_needed() {
        assert!(matches!(
            escape_line("plain line"),
            std::borrow::Cow::Borrowed("plain line")
        ));
        assert_eq!(escape_line("a\nb"), "a\\nb");
    }

    #[test]
    fn rate_limit_counts_what_it_suppressed() {
        let t0 = Instant::now();
        let mut limit = RateLimit::new(2, Duration::from_secs(60), 100);
        let key = "192.0.2.1".to_string();
        assert_eq!(limit.allow(&key, t0), Some(0));
        assert_eq!(limit.allow(&key, t0), Some(0));
        for _ in 0..5 {
            assert_eq!(limit.allow(&key, t0 + Duration::from_secs(1)), None);
        }
        // Another key is not affected.
        assert_eq!(limit.allow(&"192.0.2.2".to_string(), t0), Some(0));
        // Next window: the first line says how many were dropped.
        let later = t0 + Duration::from_secs(61);
        assert_eq!(limit.allow(&key, later), Some(5));
        assert_eq!(limit.allow(&key, later), Some(0));
        assert_eq!(limit.allow(&key, later), None);
        assert_eq!(Suppressed(0).to_string(), "");
        assert_eq!(Suppressed(1).to_string(), " (1 similar line suppressed)");
        assert_eq!(Suppressed(5).to_string(), " (5 similar lines suppressed)");
    }

    #[test]
    fn keys_stay_bounded_under_a_spread_attack() {
        let t0 = Instant::now();
        let mut limit = RateLimit::new(1, Duration::from_secs(60), 1000);
        for i in 0..100_000u32 {
            limit.allow(&i, t0);
            assert!(limit.keys() <= 1000);
        }
        // A key seen recently is still limited.
        assert_eq!(limit.allow(&99_999, t0), None);
    }

    #[test]
    fn shared_limit_works_across_threads() {
        let limit = std::sync::Arc::new(SharedRateLimit::new(3, Duration::from_secs(60), 10));
        let now = Instant::now();
        let allowed: usize = (0..4)
            .map(|_| {
                let limit = std::sync::Arc::clone(&limit);
                std::thread::spawn(move || {
                    (0..10).filter(|_| limit.allow(&"k", now).is_some()).count()
                })
            })
            .map(|t| t.join().unwrap_or(0))
            .sum();
        assert_eq!(allowed, 3);
    }
}
