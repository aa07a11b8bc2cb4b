//! SRV target ordering (RFC 2782, "Usage rules"). Pure: no I/O, randomness injected.
//!
//! Owns: [`order`], which turns an SRV record set into the order in which to try targets,
//! and [`SrvOrder`], which keeps "no records" apart from "service decidedly not available".
//! Out of scope: fetching records (`client`), resolving targets to addresses (`xmpp`).
//!
//! ```text
//!  records ──▶ single target "." ? ──yes──▶ NotAvailable
//!                     │no
//!                     ▼
//!   group by priority, lowest first ──▶ within a group: weighted random draws
//!                                       without replacement ──▶ Targets([...])
//! ```
//!
//! # Weighted selection
//! RFC 2782 places zero-weight records first, computes running sums and draws a number in
//! `0..=sum`, taking the first record whose running sum is `>=` the draw. Drawing `0` there
//! gives the *first* record one extra chance in `sum + 1`: with weights 1 and 3 the first is
//! chosen 40 % of the time, not 25 %. We keep the RFC's structure but draw in `1..=sum`, so each
//! record with weight `w` is chosen with probability exactly `w / sum`, and zero-weight records
//! come after every weighted one of their priority (among themselves in random order), which
//! is what the RFC's "very small chance" means in the limit. Go's `net` package does the same.

/// One SRV record (RFC 2782), with its target normalised (lowercase, no trailing dot; the
/// root target is `"."`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SrvRecord {
    /// Lower is tried first.
    pub priority: u16,
    /// Relative share of selections within one priority.
    pub weight: u16,
    /// The port on the target.
    pub port: u16,
    /// The target host name, or `"."`.
    pub target: String,
}

/// The outcome of ordering an SRV record set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SrvOrder {
    /// The targets in the order to try them.
    Targets(Vec<SrvRecord>),
    /// The set is a single record with target `.`: the service is decidedly not available
    /// at this domain; do not fall back to its A/AAAA.
    NotAvailable,
    /// The set is empty: the caller falls back to the domain's A/AAAA on the default port.
    NoRecords,
}

/// A source of randomness for [`order`]: called as `rng(n)` with `n >= 1`, it returns a
/// uniformly distributed value in `0..n`. Values `>= n` are reduced modulo `n`.
pub type RandomBelow<'a> = &'a mut dyn FnMut(u32) -> u32;

/// The most records [`order`] looks at; the rest are dropped (a UDP answer holds far fewer,
/// and a TCP one at most ~3,600).
pub const MAX_SRV_RECORDS: usize = 256;

/// Orders an SRV record set for use (RFC 2782): lowest priority first, weighted random order
/// within a priority. Records with target `.` are dropped unless the set is only that one
/// record, which yields [`SrvOrder::NotAvailable`].
pub fn order(mut records: Vec<SrvRecord>, rng: RandomBelow<'_>) -> SrvOrder {
    if records.len() == 1 && records.first().is_some_and(|r| r.target == ".") {
        return SrvOrder::NotAvailable;
    }
    // A "." among real targets is a broken zone; it cannot be connected to, so skip it.
    records.retain(|r| r.target != ".");
    records.truncate(MAX_SRV_RECORDS);
    if records.is_empty() {
        return SrvOrder::NoRecords;
    }
    // Stable sort: within a priority, zero weights first, otherwise the order received.
    records.sort_by_key(|r| (r.priority, r.weight != 0));

    let mut ordered = Vec::with_capacity(records.len());
    let mut rest = records.into_iter().peekable();
    while let Some(first) = rest.next() {
        let priority = first.priority;
        let mut group = vec![first];
        while let Some(next) = rest.next_if(|r| r.priority == priority) {
            group.push(next);
        }
        order_group(group, rng, &mut ordered);
    }
    SrvOrder::Targets(ordered)
}

fn random_below(rng: RandomBelow<'_>, n: u32) -> u32 {
    // n >= 1 is guaranteed by the callers.
    rng(n) % n.max(1)
}

/// Orders the records of one priority into `out` by repeated weighted draws.
fn order_group(mut group: Vec<SrvRecord>, rng: RandomBelow<'_>, out: &mut Vec<SrvRecord>) {
    while !group.is_empty() {
        // At most MAX_SRV_RECORDS * u16::MAX < u32::MAX.
        let sum: u32 = group.iter().map(|r| u32::from(r.weight)).sum();
        let index = if sum == 0 {
            let len = u32::try_from(group.len()).unwrap_or(u32::MAX);
            random_below(rng, len) as usize
        } else {
            let draw = random_below(rng, sum) + 1; // 1..=sum, see the module doc
            let mut running = 0u32;
            group
                .iter()
                .position(|r| {
                    running += u32::from(r.weight);
                    running >= draw
                })
                .unwrap_or(group.len() - 1)
        };
        if index < group.len() {
            out.push(group.remove(index));
        } else if let Some(last) = group.pop() {
            out.push(last);
        }
    }
}

/// A random source for [`order`] backed by the operating system (`ring::rand::SystemRandom`),
/// unbiased by rejection sampling. If the system source fails it returns 0, which still
/// yields a valid (priority-correct) order.
pub fn system_random() -> impl FnMut(u32) -> u32 {
    use ring::rand::{SecureRandom, SystemRandom};
    let rng = SystemRandom::new();
    move |n: u32| {
        if n <= 1 {
            return 0;
        }
        // Largest multiple of n that fits: values at or above it would bias the result.
        let zone = u32::MAX - (u32::MAX % n);
        for _ in 0..64 {
            let mut bytes = [0u8; 4];
            if rng.fill(&mut bytes).is_err() {
                log::debug!("dns: system random failed; srv order falls back to received order");
                return 0;
            }
            let value = u32::from_le_bytes(bytes);
            if value < zone {
                return value % n;
            }
        }
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(priority: u16, weight: u16, target: &str) -> SrvRecord {
        SrvRecord {
            priority,
            weight,
            port: 5269,
            target: target.into(),
        }
    }

    /// SplitMix64: small, seeded, good enough for distribution tests.
    struct SplitMix(u64);
    impl SplitMix {
        fn below(&mut self, n: u32) -> u32 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            (((z >> 32) * u64::from(n)) >> 32) as u32
        }
    }

    fn targets(o: SrvOrder) -> Vec<String> {
        match o {
            SrvOrder::Targets(t) => t.into_iter().map(|r| r.target).collect(),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn lowest_priority_first() {
        let records = vec![
            rec(20, 10, "c"),
            rec(5, 0, "a"),
            rec(20, 10, "d"),
            rec(10, 1, "b"),
        ];
        let mut prng = SplitMix(1);
        for _ in 0..100 {
            let t = targets(order(records.clone(), &mut |n| prng.below(n)));
            assert_eq!(&t[..2], ["a", "b"]);
            let mut tail = t[2..].to_vec();
            tail.sort();
            assert_eq!(tail, ["c", "d"]);
        }
    }

    #[test]
    fn weights_one_to_three() {
        let records = vec![rec(1, 1, "light"), rec(1, 3, "heavy")];
        let mut prng = SplitMix(42);
        let draws = 10_000;
        let mut light_first = 0;
        for _ in 0..draws {
            let t = targets(order(records.clone(), &mut |n| prng.below(n)));
            assert_eq!(t.len(), 2);
            if t[0] == "light" {
                light_first += 1;
            }
        }
        let share = f64::from(light_first) / f64::from(draws);
        assert!((0.23..0.27).contains(&share), "light first {share}");
    }

    #[test]
    fn weights_distribution_three_way() {
        let records = vec![rec(0, 10, "a"), rec(0, 30, "b"), rec(0, 60, "c")];
        let mut prng = SplitMix(7);
        let mut first = [0u32; 3];
        for _ in 0..10_000 {
            let t = targets(order(records.clone(), &mut |n| prng.below(n)));
            let i = ["a", "b", "c"].iter().position(|x| *x == t[0]).unwrap();
            first[i] += 1;
        }
        for (count, expect) in first.iter().zip([1_000, 3_000, 6_000]) {
            assert!(count.abs_diff(expect) < 300, "{first:?}");
        }
    }

    #[test]
    fn zero_weights_come_after_weighted_and_are_shuffled() {
        let records = vec![rec(1, 0, "z1"), rec(1, 5, "w"), rec(1, 0, "z2")];
        let mut prng = SplitMix(3);
        let mut z1_before_z2 = 0;
        for _ in 0..1_000 {
            let t = targets(order(records.clone(), &mut |n| prng.below(n)));
            assert_eq!(t[0], "w");
            if t[1] == "z1" {
                z1_before_z2 += 1;
            }
        }
        assert!((400..600).contains(&z1_before_z2), "{z1_before_z2}");
    }

    #[test]
    fn all_zero_weights_keep_every_record() {
        let records = vec![rec(1, 0, "a"), rec(1, 0, "b"), rec(1, 0, "c")];
        let mut t = targets(order(records, &mut |_| 0));
        t.sort();
        assert_eq!(t, ["a", "b", "c"]);
    }

    #[test]
    fn deterministic_with_a_fixed_source() {
        // Draw 0 -> 1: first record whose running sum reaches 1.
        let records = vec![rec(1, 2, "a"), rec(1, 2, "b")];
        assert_eq!(targets(order(records.clone(), &mut |_| 0)), ["a", "b"]);
        // Draw n-1 -> sum: the last record.
        assert_eq!(targets(order(records, &mut |n| n - 1)), ["b", "a"]);
    }

    #[test]
    fn out_of_range_random_values_are_reduced() {
        let records = vec![
            rec(1, 2, "a"),
            rec(1, 2, "b"),
            rec(2, 0, "c"),
            rec(2, 0, "d"),
        ];
        let t = targets(order(records, &mut |_| u32::MAX));
        assert_eq!(t.len(), 4);
        assert_eq!(&t[2..].len(), &2);
    }

    #[test]
    fn dot_target_alone_means_not_available() {
        assert_eq!(
            order(vec![rec(0, 0, ".")], &mut |_| 0),
            SrvOrder::NotAvailable
        );
    }

    #[test]
    fn dot_among_real_targets_is_skipped() {
        let t = targets(order(vec![rec(0, 0, "."), rec(1, 0, "a")], &mut |_| 0));
        assert_eq!(t, ["a"]);
        assert_eq!(
            order(vec![rec(0, 0, "."), rec(1, 0, ".")], &mut |_| 0),
            SrvOrder::NoRecords
        );
    }

    #[test]
    fn empty_set_means_no_records() {
        assert_eq!(order(Vec::new(), &mut |_| 0), SrvOrder::NoRecords);
    }

    #[test]
    fn record_count_is_bounded() {
        let records: Vec<_> = (0..1_000)
            .map(|i| rec(0, u16::MAX, &format!("t{i}")))
            .collect();
        let t = targets(order(records, &mut |n| n / 2));
        assert_eq!(t.len(), MAX_SRV_RECORDS);
    }

    #[test]
    fn system_random_stays_in_range() {
        let mut rng = system_random();
        for n in [1, 2, 3, 7, 1_000, u32::MAX] {
            for _ in 0..50 {
                assert!(rng(n) < n.max(1));
            }
        }
        assert_eq!(rng(0), 0);
    }
}
