//! `/etc/resolv.conf` as xsgw reads it (`dns::ResolvConf::parse`).
//!
//! Invariants: no panic; at least one name server, at most the resolver's bound, and the
//! timeout and attempts within glibc's ranges.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xsgw::dns::ResolvConf;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(conf) = ResolvConf::parse(text) else {
        return;
    };
    assert!(!conf.nameservers.is_empty() && conf.nameservers.len() <= 3);
    assert!(conf.timeout.as_secs() <= 30);
    assert!((1..=5).contains(&conf.attempts));
});
