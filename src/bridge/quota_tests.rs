//! Quotas and the presence cache through the bridge: what one partner can make xsgw hold,
//! and that every refusal is answered.

use std::time::{Duration, Instant};

use super::presence_cache::{ENTRY_OVERHEAD, RESOURCE_OVERHEAD, STATUS_OVERHEAD};
use super::tests::{actions, bridge_with, request, stanza, status_of};
use super::*;
use crate::xmpp::element::NS_SERVER;

/// SIP user u{i}@contoso.test subscribes to x{i}@{domain}.
fn subscribe(i: usize, domain: &str, expires: u32) -> Request {
    request(&format!(
        "SUBSCRIBE sip:x{i}@{domain} SIP/2.0\nVia: SIP/2.0/TLS 127.0.10.30:5061;branch=z9hG4bKs{i}e{expires}\nMax-Forwards: 69\nFrom: <sip:u{i}@contoso.test>;tag=t{i}\nTo: <sip:x{i}@{domain}>\nCall-ID: c{i}-{domain}-{expires}\nCSeq: 1 SUBSCRIBE\nContact: <sip:u{i}@127.0.10.40>\nEvent: presence\nExpires: {expires}\nContent-Length: 0\n\n"
    ))
}

fn message(i: usize, to: &str) -> Request {
    request(&format!(
        "MESSAGE sip:{to} SIP/2.0\nVia: SIP/2.0/TLS 127.0.10.30:5061;branch=z9hG4bKm{i}\nMax-Forwards: 69\nFrom: <sip:bob@contoso.test>;tag=m{i}\nTo: <sip:{to}>\nCall-ID: m{i}\nCSeq: 1 MESSAGE\nContent-Type: text/plain\nContent-Length: 2\n\nhi"
    ))
}

/// Delivers `xml` (a stanza with a `from`) as its sender's server would.
fn from_partner(b: &mut Bridge, now: Instant, xml: &str) {
    let st = stanza(xml);
    let remote = st
        .attr("from")
        .map(|f| f.split_once('@').map_or(f, |(_, d)| d))
        .map(|d| d.split('/').next().unwrap_or(d).to_owned())
        .expect("from has a domain");
    b.handle_stanza(now, "contoso.test", &remote, st);
}

/// The error conditions of the error stanzas among `acts`.
fn stanza_errors(acts: &[Action]) -> Vec<String> {
    acts.iter()
        .filter_map(|a| match a {
            Action::SendStanza { stanza, .. } if stanza.attr("type") == Some("error") => {
                let error = stanza.child("error", NS_SERVER)?;
                error
                    .elements()
                    .find(|e| e.name != "text")
                    .map(|e| e.name.clone())
            }
            _ => None,
        })
        .collect()
}

fn sip_methods(acts: &[Action]) -> Vec<String> {
    acts.iter()
        .filter_map(|a| match a {
            Action::SendSip { request, .. } => String::from_utf8(request.to_bytes())
                .ok()
                .and_then(|t| t.split(' ').next().map(str::to_owned)),
            _ => None,
        })
        .collect()
}

fn responses(acts: &[Action]) -> Vec<(RequestId, u16, Option<String>)> {
    acts.iter()
        .filter(|a| matches!(a, Action::Respond { .. }))
        .map(status_of)
        .collect()
}

#[test]
fn presence_of_unwatched_users_is_not_cached() {
    let mut b = bridge_with("");
    let now = Instant::now();
    for i in 0..100 {
        from_partner(
            &mut b,
            now,
            &format!("<presence xmlns='jabber:server' from='x{i}@gmail.test/r' to='u{i}@contoso.test'><status>here</status></presence>"),
        );
    }
    assert_eq!(b.presence_cache_bytes("gmail.test"), (0, 0));
    // Once u1 watches x1 (pending is enough), x1's presence is kept...
    b.handle_sip_request(now, 1, &subscribe(1, "gmail.test", 3600));
    actions(&mut b);
    from_partner(
        &mut b,
        now,
        "<presence xmlns='jabber:server' from='x1@gmail.test/r' to='u1@contoso.test'><status>here</status></presence>",
    );
    let (partner, total) = b.presence_cache_bytes("gmail.test");
    assert!(partner > 0 && partner == total, "{partner} {total}");
    // ... and forgotten when nobody watches any more (x1 refuses).
    from_partner(
        &mut b,
        now,
        "<presence xmlns='jabber:server' type='unsubscribed' from='x1@gmail.test' to='u1@contoso.test'/>",
    );
    actions(&mut b);
    assert_eq!(b.subscriptions(), 0);
    assert_eq!(b.presence_cache_bytes("gmail.test"), (0, 0));
}

#[test]
fn a_huge_lang_and_many_resources_stay_within_the_byte_budget() {
    let budget = 16 * 1024;
    let mut b = bridge_with(
        "[quota]\npresence_cache = 16KiB\npresence_cache_total = 1MiB\nstanza_rate = 0\n",
    );
    let now = Instant::now();
    // 10 watched users of gmail.test.
    for i in 0..10 {
        b.handle_sip_request(now, i as u64, &subscribe(i, "gmail.test", 3600));
    }
    actions(&mut b);
    // Exactly accounted: one resource, 16 statuses sharing the stanza's language, stored once.
    let statuses = "<status>ab</status>".repeat(16);
    from_partner(
        &mut b,
        now,
        &format!("<presence xmlns='jabber:server' xml:lang='en-GB' from='x0@gmail.test/r' to='u0@contoso.test'>{statuses}</presence>"),
    );
    let jid = "x0@gmail.test";
    let expected = ENTRY_OVERHEAD
        + 3 * jid.len()
        + "gmail.test".len()
        + RESOURCE_OVERHEAD
        + 1
        + "en-GB".len()
        + 16 * (STATUS_OVERHEAD + 2);
    assert_eq!(b.presence_cache_bytes("gmail.test").0, expected);
    // The flood: every user, 16 resources, 16 statuses of 4 KiB, an xml:lang of 150 KB.
    let lang = "x".repeat(150_000);
    let big = format!("<status>{}</status>", "s".repeat(4096)).repeat(16);
    for i in 0..10 {
        for r in 0..16 {
            from_partner(
                &mut b,
                now,
                &format!("<presence xmlns='jabber:server' xml:lang='{lang}' from='x{i}@gmail.test/r{r}' to='u{i}@contoso.test'>{big}</presence>"),
            );
            let (partner, total) = b.presence_cache_bytes("gmail.test");
            assert!(partner <= budget && total <= budget, "{partner} bytes held");
        }
        // Short statuses fit: the budget is used, not exceeded.
        for r in 0..16 {
            from_partner(
                &mut b,
                now,
                &format!("<presence xmlns='jabber:server' xml:lang='{lang}' from='x{i}@gmail.test/r{r}' to='u{i}@contoso.test'><status>ok</status></presence>"),
            );
        }
        let (partner, _) = b.presence_cache_bytes("gmail.test");
        assert!(partner <= budget, "{partner} bytes held");
    }
    let (partner, _) = b.presence_cache_bytes("gmail.test");
    assert!(partner > budget / 2, "the budget is used: {partner}");
    // x9's other resources leave; its watcher is approved: the NOTIFY carries what is left.
    for r in 1..16 {
        from_partner(
            &mut b,
            now,
            &format!("<presence xmlns='jabber:server' type='unavailable' xml:lang='{lang}' from='x9@gmail.test/r{r}' to='u9@contoso.test'>{big}</presence>"),
        );
    }
    from_partner(
        &mut b,
        now,
        "<presence xmlns='jabber:server' type='subscribed' from='x9@gmail.test' to='u9@contoso.test'/>",
    );
    let acts = actions(&mut b);
    let notify = acts
        .iter()
        .find_map(|a| match a {
            Action::SendSip { request, .. } => {
                let text = String::from_utf8(request.to_bytes()).unwrap();
                text.starts_with("NOTIFY").then_some(text)
            }
            _ => None,
        })
        .expect("NOTIFY active");
    assert!(notify.contains("<note>ok</note>"), "{notify}");
    assert!(!notify.contains("xxxx"), "no huge language reaches SIP");
    assert!(notify.len() <= 4096, "[sip] max_message: {}", notify.len());
}

#[test]
fn a_notify_too_large_for_max_message_leaves_the_status_texts_out() {
    let mut b = bridge_with("[quota]\nstanza_rate = 0\n");
    let now = Instant::now();
    b.handle_sip_request(now, 1, &subscribe(1, "gmail.test", 3600));
    from_partner(
        &mut b,
        now,
        "<presence xmlns='jabber:server' type='subscribed' from='x1@gmail.test' to='u1@contoso.test'/>",
    );
    actions(&mut b);
    let big = format!("<status>{}</status>", "s".repeat(1000)).repeat(8);
    let mut notifies = Vec::new();
    for r in 0..4 {
        from_partner(
            &mut b,
            now,
            &format!("<presence xmlns='jabber:server' from='x1@gmail.test/r{r}' to='u1@contoso.test'><show>away</show>{big}</presence>"),
        );
        notifies.extend(actions(&mut b).into_iter().filter_map(|a| match a {
            Action::SendSip { request, .. } => Some(String::from_utf8(request.to_bytes()).unwrap()),
            _ => None,
        }));
    }
    assert_eq!(notifies.len(), 4, "one NOTIFY per presence");
    for n in &notifies {
        assert!(n.len() <= 4096, "[sip] max_message = 4KiB: {}", n.len());
        assert!(
            n.contains("<basic>open</basic>") && n.contains("away"),
            "{n}"
        );
    }
    assert!(!notifies[3].contains("ssss"), "the texts were left out");
    assert_eq!(
        notifies[3].matches("<tuple").count(),
        4,
        "every resource is still there"
    );
    // A short status set now still reaches SIP: the large texts go first.
    from_partner(
        &mut b,
        now,
        "<presence xmlns='jabber:server' from='x1@gmail.test/r0' to='u1@contoso.test'><status>back soon</status></presence>",
    );
    let last = actions(&mut b)
        .into_iter()
        .find_map(|a| match a {
            Action::SendSip { request, .. } => Some(String::from_utf8(request.to_bytes()).unwrap()),
            _ => None,
        })
        .expect("a NOTIFY");
    assert!(last.len() <= 4096, "{}", last.len());
    assert!(last.contains("back soon"), "{last}");
    assert_eq!(last.matches("<tuple").count(), 4, "{last}");
}

#[test]
fn least_recently_updated_users_are_forgotten_first() {
    let mut b = bridge_with("[quota]\npresence_cache = 2KiB\n");
    let now = Instant::now();
    for i in 0..10 {
        b.handle_sip_request(now, i as u64, &subscribe(i, "gmail.test", 3600));
    }
    actions(&mut b);
    let update = |b: &mut Bridge, i: usize| {
        from_partner(
            b,
            now,
            &format!("<presence xmlns='jabber:server' from='x{i}@gmail.test/r' to='u{i}@contoso.test'><status>status of x{i}</status></presence>"),
        );
    };
    for i in 0..10 {
        update(&mut b, i);
        assert!(b.presence_cache_bytes("gmail.test").0 <= 2048);
    }
    let held: Vec<usize> = (0..10)
        .filter(|i| b.presence.cached(&format!("x{i}@gmail.test")))
        .collect();
    assert!(held.len() >= 2 && held.len() < 10, "{held:?}");
    let first = 10 - held.len();
    assert_eq!(held, (first..10).collect::<Vec<_>>(), "the newest are kept");
    // Updating the oldest kept user makes it the newest: the next eviction spares it.
    update(&mut b, first);
    update(&mut b, 0);
    assert!(b.presence.cached(&format!("x{first}@gmail.test")));
    assert!(!b.presence.cached(&format!("x{}@gmail.test", first + 1)));
}

#[test]
fn a_subscription_flood_from_one_partner_stops_at_its_quota_and_others_still_subscribe() {
    let mut b =
        bridge_with("[partner evil.test]\n[quota]\nsubscriptions = 8\npending_subscriptions = 5\n");
    let now = Instant::now();
    let mut errors = Vec::new();
    let mut subscribes = 0;
    for i in 0..50 {
        from_partner(
            &mut b,
            now,
            &format!("<presence xmlns='jabber:server' type='subscribe' from='e{i}@evil.test' to='u{i}@contoso.test' id='s{i}'/>"),
        );
        let acts = actions(&mut b);
        subscribes += sip_methods(&acts).len();
        errors.extend(stanza_errors(&acts));
    }
    assert_eq!(subscribes, 5, "the pending quota");
    assert_eq!(errors.len(), 45, "every refusal answered");
    assert!(errors.iter().all(|e| e == "resource-constraint"));
    // `subscribed` for subscriptions nobody asked for count too (approved, not pending).
    for i in 0..10 {
        from_partner(
            &mut b,
            now,
            &format!("<presence xmlns='jabber:server' type='subscribed' from='f{i}@evil.test' to='u{i}@contoso.test'/>"),
        );
    }
    let errors = stanza_errors(&actions(&mut b));
    assert_eq!(
        errors.len(),
        7,
        "8 subscriptions in all: 5 pending + 3 approved"
    );
    // SIP users subscribing to evil.test's users: 403 with the quota named.
    b.handle_sip_request(now, 1, &subscribe(1, "evil.test", 3600));
    let r = responses(&actions(&mut b));
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].1, 403);
    assert!(
        r[0].2.as_deref().unwrap().contains("subscriptions"),
        "{r:?}"
    );
    // Another partner is not affected, both ways.
    from_partner(
        &mut b,
        now,
        "<presence xmlns='jabber:server' type='subscribe' from='alice@gmail.test' to='bob@contoso.test'/>",
    );
    assert_eq!(sip_methods(&actions(&mut b)), ["SUBSCRIBE"]);
    b.handle_sip_request(now, 2, &subscribe(2, "gmail.test", 3600));
    let acts = actions(&mut b);
    assert_eq!(responses(&acts)[0].1, 200);
    assert_eq!(b.subscriptions(), 8 + 2);
    assert_eq!(b.quota_refusals(), 45 + 7 + 1);
}

#[test]
fn over_the_stanza_rate_a_partner_gets_resource_constraint() {
    let mut b = bridge_with("[quota]\nstanza_rate = 10\nstanza_burst = 20\n");
    let now = Instant::now();
    let send = |b: &mut Bridge, at: Instant, n: usize| {
        let mut out = (0, Vec::new());
        for i in 0..n {
            from_partner(
                b,
                at,
                &format!("<message xmlns='jabber:server' type='chat' id='m{i}' from='alice@gmail.test/r' to='bob@contoso.test'><body>{}</body></message>", "x".repeat(1000)),
            );
            let acts = actions(b);
            out.0 += sip_methods(&acts).len();
            out.1.extend(acts.into_iter().filter_map(|a| match a {
                Action::SendStanza { stanza, .. } => Some(stanza),
                _ => None,
            }));
        }
        out
    };
    let (forwarded, errors) = send(&mut b, now, 30);
    assert_eq!(forwarded, 20, "the burst");
    assert_eq!(errors.len(), 10, "every stanza over the rate answered");
    for e in &errors {
        assert_eq!(e.attr("type"), Some("error"));
        assert_eq!(e.attr("to"), Some("alice@gmail.test/r"));
        let err = e.child("error", NS_SERVER).unwrap();
        assert!(err.elements().any(|c| c.name == "resource-constraint"));
        assert!(
            e.child("body", NS_SERVER).is_none(),
            "the payload is not echoed"
        );
    }
    // Another partner has its own bucket.
    from_partner(
        &mut b,
        now,
        "<message xmlns='jabber:server' type='chat' from='carol@fabrikam-partner.test/r' to='bob@contoso.test'><body>hi</body></message>",
    );
    assert_eq!(sip_methods(&actions(&mut b)).len(), 1);
    // Half a second later (the clock the bridge is given): 5 more.
    let (forwarded, errors) = send(&mut b, now + Duration::from_millis(500), 10);
    assert_eq!((forwarded, errors.len()), (5, 5));
    // Errors and IQ results answer what xsgw sent: never refused by the rate.
    from_partner(
        &mut b,
        now + Duration::from_millis(500),
        "<iq xmlns='jabber:server' type='result' id='nothing' from='gmail.test' to='contoso.test'/>",
    );
    assert!(stanza_errors(&actions(&mut b)).is_empty());
}

#[test]
fn sessions_and_waiting_deliveries_over_quota_are_answered_busy_or_bounced() {
    let mut b =
        bridge_with("im_mode = session\n[quota]\nim_sessions = 1\nwaiting_deliveries = 3\n");
    let now = Instant::now();
    // SIP → XMPP: three messages wait for gmail.test's barrier; the fourth is refused with
    // 503 and Retry-After (they drain within the delivery timeout).
    for i in 0..4 {
        b.handle_sip_request(now, i, &message(i as usize, "alice@gmail.test"));
    }
    let acts = actions(&mut b);
    let busy: Vec<_> = acts
        .iter()
        .filter_map(|a| match a {
            Action::Respond {
                request,
                answer:
                    Answer::Busy {
                        retry_after,
                        warning,
                    },
            } => Some((*request, *retry_after, warning.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(busy.len(), 1, "{acts:?}");
    assert_eq!((busy[0].0, busy[0].1), (3, 20));
    assert!(busy[0].2.contains("waiting deliveries"), "{}", busy[0].2);
    // Another partner's messages still go.
    b.handle_sip_request(now, 10, &message(10, "dan@other.test"));
    let acts = actions(&mut b);
    assert!(acts.iter().any(|a| matches!(
        a,
        Action::SendStanza {
            receipt: Some(_),
            ..
        }
    )));
    // XMPP → SIP in session mode: one session for gmail.test; a second is bounced.
    from_partner(
        &mut b,
        now,
        "<message xmlns='jabber:server' type='chat' from='alice@gmail.test/r' to='bob@contoso.test'><body>hi</body></message>",
    );
    assert_eq!(sip_methods(&actions(&mut b)), ["INVITE"]);
    from_partner(
        &mut b,
        now,
        "<message xmlns='jabber:server' type='chat' from='zoe@googlemail.test/r' to='bob@contoso.test'><body>hi</body></message>",
    );
    let acts = actions(&mut b);
    assert!(sip_methods(&acts).is_empty());
    assert_eq!(
        stanza_errors(&acts),
        ["resource-constraint"],
        "aliases share the quota"
    );
}
