//! The subscriptions file of `[gateway] state_dir`, read at start
//! (`bridge::Bridge::restore_subscriptions`: `translate::presence::Subscription::from_line`
//! per line, the saved SIP dialog, then each subscription restarted).
//!
//! Invariants: no panic; every non-blank line is either taken or refused with a message;
//! a line taken, written back with `to_line`, reads back the same.
#![no_main]

use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use xsgw::bridge::{Bridge, BridgeConfig};
use xsgw::translate::presence::Subscription;

const CONFIG: &str = "[gateway]\nfqdn = xsgw.a.example\nsip_domains = a.example\n\
[sip]\nedge = edge.a.example:5061\n[federation]\nmode = open\n";

fn bridge_config() -> Option<&'static BridgeConfig> {
    static CONFIG_ONCE: OnceLock<Option<BridgeConfig>> = OnceLock::new();
    CONFIG_ONCE
        .get_or_init(|| {
            let (config, _) = xsgw::config::parse(CONFIG, Path::new("fuzz.ini")).ok()?;
            BridgeConfig::from_config(&config).ok()
        })
        .as_ref()
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let now = Instant::now();
    let unix_now = 1_790_000_000;
    for line in text.lines() {
        if let Ok(sub) = Subscription::from_line(line, now, unix_now) {
            let written = sub.to_line(now, unix_now);
            let again = Subscription::from_line(&written, now, unix_now)
                .unwrap_or_else(|e| panic!("xsgw wrote {written:?}: {e}"));
            assert_eq!(again, sub, "written as {written:?}");
        }
    }
    let Some(config) = bridge_config() else {
        panic!("the fuzz target's configuration does not parse");
    };
    let mut seed = 1u64;
    let random = Box::new(move |buf: &mut [u8]| {
        for b in buf.iter_mut() {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
            *b = (seed >> 56) as u8;
        }
    });
    let mut bridge = Bridge::new(config.clone(), random, now, unix_now);
    let (taken, refused) = bridge.restore_subscriptions(now, text);
    let lines = text.lines().filter(|l| !l.trim().is_empty()).count();
    assert_eq!(taken + refused.len(), lines);
    while bridge.poll_action().is_some() {}
    bridge.flush(now + Duration::from_secs(2));
    while bridge.poll_action().is_some() {}
});
