//! A hostile partner against xsgw's bounded state, with the testbed's real peers: Prosody's
//! users (driven by a small slixmpp script below) flood xsgw through Prosody's S2S stream,
//! Kamailio is the Edge, the testbed's `sip-presence` is the SIP users. What a user or an
//! operator checks:
//! - a flood of presence with a huge `xml:lang`, many resources and many statuses leaves the
//!   xsgw process's peak RSS (`VmHWM` in /proc/PID/status) within the presence-cache budget
//!   plus a margin, while the watched user's presence still reaches the SIP watcher;
//! - a subscription flood from one partner (gmail.test) stops at its quota (the flooder gets
//!   `resource-constraint`, the log says which quota once) while another partner
//!   (googlemail.test, configured as a partner of its own here) still subscribes.
//!
//! Both in one test: one testbed, one gateway, well under a minute.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::peers::{start_gateway, Peer};
use common::testbed::{Testbed, PYTHON};

const T: Duration = Duration::from_secs(15);

/// The presence-cache budget given to xsgw here (per partner and in total).
const BUDGET: u64 = 1024 * 1024;
/// What else the process may grow by during the flood: parser buffers of a few 256 KiB
/// stanzas, allocator slack, thread stacks touched. The old behaviour grew by hundreds of MiB.
const MARGIN: u64 = 24 * 1024 * 1024;

/// Logs Prosody users in and sends what `mode` says; prints one JSON line with what came
/// back. Usage: `flood.py DIR MODE ARGS...`.
///   presence JID RESOURCES COUNT MARKER: RESOURCES sessions of JID (available), each sends
///     COUNT directed presences to carol@contoso.test with a 100 KB xml:lang and 16 statuses
///     of 4 KB; then one session sends the status MARKER.
///   subscribe JID COUNT: one available session asks u0..u{COUNT-1}@contoso.test for
///     subscription, then waits up to 10 s for presence errors; prints their conditions.
///   subscribe-one JID TO: one session asks TO for subscription.
///   approve JID TO: one session approves TO's subscription request.
const FLOOD: &str = r#"
import asyncio, json, logging, sys
logging.basicConfig(level=logging.CRITICAL)
import slixmpp

d, mode, args = sys.argv[1], sys.argv[2], sys.argv[3:]
info = json.load(open(d + "/testbed.json"))
users = {u["jid"]: u["password"] for u in info["xmpp"]["users"]}
c2s = (info["xmpp"]["c2s"]["host"], info["xmpp"]["c2s"]["port"])

async def session(full):
    loop = asyncio.get_event_loop()
    c = slixmpp.ClientXMPP(full, users[full.split("/")[0]])
    c.ca_certs = info["pki"]["ca"]["cert"]
    c.reconnect_max_attempts = 0
    c.roster.auto_authorize = None
    c.roster.auto_subscribe = False
    ready = loop.create_future()
    errors = []
    def started(_e):
        if not ready.done():
            ready.set_result(True)
    def failed(e):
        if not ready.done():
            ready.set_result(False)
    c.add_event_handler("session_start", started)
    c.add_event_handler("failed_auth", failed)
    c.add_event_handler("connection_failed", failed)
    c.add_event_handler("presence_error", lambda p: errors.append(p["error"]["condition"]))
    c.connect(address=c2s)
    if not await asyncio.wait_for(ready, 15):
        raise SystemExit("login failed: " + full)
    c.send_presence()
    return c, errors

async def main():
    if mode == "presence":
        jid, resources, count, marker = args[0], int(args[1]), int(args[2]), args[3]
        sessions = [await session("%s/r%d" % (jid, r)) for r in range(resources)]
        lang = "x" * 100000
        statuses = ("<status>%s</status>" % ("s" * 4096)) * 16
        sent = 0
        for n in range(count):
            for c, _ in sessions:
                c.send_raw("<presence to='carol@contoso.test' xml:lang='%s'>%s</presence>"
                           % (lang, statuses))
                sent += 1
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        sessions[0][0].send_presence(pto="carol@contoso.test", pstatus=marker)
        await asyncio.sleep(1)
        print(json.dumps({"sent": sent, "bytes": sent * (len(lang) + len(statuses))}))
    elif mode == "subscribe":
        jid, count = args[0], int(args[1])
        c, errors = await session(jid + "/flood")
        for i in range(count):
            c.send_presence(pto="u%d@contoso.test" % i, ptype="subscribe")
        deadline = asyncio.get_event_loop().time() + 10
        while len(errors) < count and asyncio.get_event_loop().time() < deadline:
            await asyncio.sleep(0.2)
        print(json.dumps({"errors": errors}))
    elif mode == "subscribe-one":
        c, errors = await session(args[0] + "/one")
        c.send_presence(pto=args[1], ptype="subscribe")
        await asyncio.sleep(1)
        print(json.dumps({"errors": errors}))
    elif mode == "approve":
        c, _ = await session(args[0] + "/approve")
        c.send_presence(pto=args[1], ptype="subscribed")
        await asyncio.sleep(1)
        print(json.dumps({"approved": args[1]}))

asyncio.new_event_loop().run_until_complete(main())
"#;

fn flood(testbed: &Testbed, args: &[&str]) -> String {
    let out = Command::new(PYTHON)
        .args(["-c", FLOOD])
        .arg(&testbed.dir)
        .args(args)
        .output()
        .expect("python3 with slixmpp (make test installs it)");
    assert!(
        out.status.success(),
        "flood {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A field of /proc/PID/status in bytes (`VmRSS`, `VmHWM`).
fn memory(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

#[test]
fn a_hostile_partner_floods_presence_and_subscriptions_within_its_bounds() {
    let started = Instant::now();
    let testbed = Testbed::up("attack-state", &[]);
    // googlemail.test as a partner of its own (not an alias): a second partner domain.
    let config = testbed
        .gateway_config("info")
        .replace("aliases = googlemail.test", "\n[partner googlemail.test]")
        + &format!(
            "\n[quota]\npresence_cache = {BUDGET}\npresence_cache_total = {BUDGET}\npending_subscriptions = 20\n"
        );
    assert!(config.contains("[partner googlemail.test]"), "{config}");
    let gw = start_gateway(&testbed, &config);
    let pid = gw.child.id();

    // carol (SIP) watches alice (gmail.test); alice approves: her presence is cached.
    let mut carol = Peer::start_interactive(
        &testbed,
        &[
            "sip-presence",
            "--user",
            "sip:carol@contoso.test",
            "--port",
            "0",
        ],
    );
    carol.wait_ready();
    let c = carol.mark();
    carol.send(r#"{"cmd": "subscribe", "to": "sip:alice@gmail.test", "expires": 600}"#);
    carol.wait_since(c, &["\"notify\"", "\"subscription_state\": \"pending"], T);
    flood(
        &testbed,
        &["approve", "alice@gmail.test", "carol@contoso.test"],
    );
    carol.wait_since(c, &["\"notify\"", "\"subscription_state\": \"active"], T);

    // The presence flood: alice (watched) and bob (not watched), 16 resources each.
    std::thread::sleep(Duration::from_millis(500));
    let before = memory(pid, "VmRSS");
    let c = carol.mark();
    let a = flood(
        &testbed,
        &["presence", "alice@gmail.test", "16", "4", "flood-over"],
    );
    let b = flood(&testbed, &["presence", "bob@gmail.test", "16", "4", "-"]);
    carol.wait_since(c, &["\"notify\"", "flood-over"], 3 * T);
    let peak = memory(pid, "VmHWM");
    let growth = peak.saturating_sub(before);
    eprintln!(
        "presence flood: {} and {}; xsgw RSS {} KiB before, peak {} KiB: grew {} KiB (budget {} KiB + margin {} KiB)",
        a.trim(),
        b.trim(),
        before / 1024,
        peak / 1024,
        growth / 1024,
        BUDGET / 1024,
        MARGIN / 1024
    );
    assert!(
        growth <= BUDGET + MARGIN,
        "xsgw grew by {} KiB during the flood",
        growth / 1024
    );
    // The huge language never reached the SIP side.
    assert!(
        !carol.printed_since(c, &["xxxxxxxxxx"]),
        "{}",
        carol.transcript()
    );

    // The subscription flood: alice asks 60 SIP users; 20 may be pending (nobody answers
    // the SUBSCRIBEs at the users' address yet), the other 40 get resource-constraint.
    let out = flood(&testbed, &["subscribe", "alice@gmail.test", "60"]);
    let refused = out.matches("resource-constraint").count();
    assert_eq!(refused, 40, "{out}");
    let hit = gw.wait_for("quota pending_subscriptions = 20 reached");
    assert!(hit.contains("partner gmail.test"), "{hit}");
    // Another partner still subscribes: carol@googlemail.test asks bob, bob's SIP side sees it.
    let bob = Peer::start_interactive(
        &testbed,
        &["sip-presence", "--user", "sip:bob@contoso.test"],
    );
    bob.wait_ready();
    let m = bob.mark();
    flood(
        &testbed,
        &["subscribe-one", "carol@googlemail.test", "bob@contoso.test"],
    );
    bob.wait_since(
        m,
        &[
            "\"method\": \"SUBSCRIBE\"",
            "\"request\"",
            "carol@googlemail.test",
        ],
        T,
    );
    eprintln!("attack_state took {:?}", started.elapsed());
    drop(bob);
    drop(carol);
}
