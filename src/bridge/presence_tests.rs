//! Presence scenarios through the bridge: subscriptions both ways, refresh, persistence.

use std::time::{Duration, Instant};

use super::tests::{actions, bridge, ok_to, request, stanza, status_of};
use super::*;
use crate::xmpp::element::NS_SERVER;

fn presence_stanza(from: &str, to: &str, kind: Option<&str>, extra: &str) -> Element {
    let t = kind.map(|k| format!(" type='{k}'")).unwrap_or_default();
    stanza(&format!(
        "<presence xmlns='jabber:server' from='{from}' to='{to}'{t}>{extra}</presence>"
    ))
}

/// Hands `stanza` to the bridge as its sender's server would deliver it to contoso.test.
fn from_partner(b: &mut Bridge, now: Instant, stanza: Element) {
    let remote = stanza
        .attr("from")
        .and_then(|f| f.split('@').nth(1))
        .map(|d| d.split('/').next().unwrap_or(d).to_owned())
        .expect("from has a domain");
    b.handle_stanza(now, "contoso.test", &remote, stanza);
}

fn header<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
}

fn stanzas(acts: &[Action]) -> Vec<&Element> {
    acts.iter()
        .filter_map(|a| match a {
            Action::SendStanza { stanza, .. } => Some(stanza),
            _ => None,
        })
        .collect()
}

fn sips(acts: Vec<Action>) -> Vec<(TxTag, String)> {
    acts.into_iter()
        .filter_map(|a| match a {
            Action::SendSip { tag, request } => {
                Some((tag, String::from_utf8(request.to_bytes()).unwrap()))
            }
            _ => None,
        })
        .collect()
}

const PIDF_AWAY: &str = "<?xml version='1.0' encoding='UTF-8'?><presence xmlns='urn:ietf:params:xml:ns:pidf' xmlns:dm='urn:ietf:params:xml:ns:pidf:data-model' xmlns:rpid='urn:ietf:params:xml:ns:pidf:rpid' entity='sip:bob@contoso.test'><tuple id='t1'><status><basic>open</basic></status><note>In a meeting</note></tuple><dm:person id='p1'><rpid:activities><rpid:away/></rpid:activities></dm:person></presence>";

fn notify_to_us(subscribe: &str, seq: u32, state: &str, body: &str) -> Request {
    let call_id = header(subscribe, "Call-ID").unwrap();
    let from = header(subscribe, "From").unwrap();
    let to = header(subscribe, "To").unwrap();
    let ctype = if body.is_empty() {
        String::new()
    } else {
        "Content-Type: application/pidf+xml\n".to_owned()
    };
    request(&format!(
        "NOTIFY sip:gw.contoso.test:5061;transport=tls SIP/2.0\nVia: SIP/2.0/TLS 127.0.10.30:5061;branch=z9hG4bKn{seq}\nMax-Forwards: 69\nFrom: {to};tag=edge1\nTo: {from}\nCall-ID: {call_id}\nCSeq: {seq} NOTIFY\nContact: <sip:bob@127.0.10.40:5060>\nEvent: presence\nSubscription-State: {state}\n{ctype}Content-Length: {}\n\n{body}",
        body.len()
    ))
}

#[test]
fn an_xmpp_user_subscribes_to_a_sip_user_and_sees_updates_until_unsubscribing() {
    let mut b = bridge();
    let now = Instant::now();
    from_partner(
        &mut b,
        now,
        presence_stanza(
            "alice@gmail.test/p",
            "bob@contoso.test",
            Some("subscribe"),
            "",
        ),
    );
    let acts = actions(&mut b);
    let (tag, sub) = sips(acts).into_iter().next().expect("a SUBSCRIBE");
    assert!(
        sub.starts_with("SUBSCRIBE sip:bob@contoso.test SIP/2.0"),
        "{sub}"
    );
    assert_eq!(header(&sub, "Event"), Some("presence"));
    assert_eq!(header(&sub, "Accept"), Some("application/pidf+xml"));
    assert_eq!(header(&sub, "Expires"), Some("3600"));
    assert!(header(&sub, "From")
        .unwrap()
        .starts_with("<sip:alice@gmail.test>;tag="));
    // 200 is neutral: nothing to alice yet.
    let ok = ok_to(
        &sub,
        "200 OK",
        "Contact: <sip:bob@127.0.10.40:5060>\nExpires: 3600\n",
    );
    b.handle_sip_outcome(now, tag, SipOutcome::Final(ok));
    assert!(stanzas(&actions(&mut b)).is_empty());
    // NOTIFY active with PIDF: subscribed, then presence.
    b.handle_sip_request(
        now,
        1,
        &notify_to_us(&sub, 1, "active;expires=3600", PIDF_AWAY),
    );
    let acts = actions(&mut b);
    assert_eq!(
        status_of(
            acts.iter()
                .find(|a| matches!(a, Action::Respond { .. }))
                .unwrap()
        )
        .1,
        200
    );
    let st = stanzas(&acts);
    assert_eq!(st[0].attr("type"), Some("subscribed"));
    assert_eq!(st[0].attr("from"), Some("bob@contoso.test"));
    assert_eq!(st[0].attr("to"), Some("alice@gmail.test"));
    assert_eq!(st[1].attr("type"), None, "available");
    assert_eq!(st[1].child("show", NS_SERVER).unwrap().text(), "away");
    assert_eq!(
        st[1].child("status", NS_SERVER).unwrap().text(),
        "In a meeting"
    );
    // Offline.
    let closed = PIDF_AWAY.replace("open", "closed");
    b.handle_sip_request(
        now,
        2,
        &notify_to_us(&sub, 2, "active;expires=3500", &closed),
    );
    let acts = actions(&mut b);
    assert_eq!(stanzas(&acts)[0].attr("type"), Some("unavailable"));
    // Unsubscribe: SUBSCRIBE Expires 0 in the dialog, then unsubscribed.
    from_partner(
        &mut b,
        now,
        presence_stanza(
            "alice@gmail.test/p",
            "bob@contoso.test",
            Some("unsubscribe"),
            "",
        ),
    );
    let (tag, unsub) = sips(actions(&mut b)).into_iter().next().unwrap();
    assert_eq!(header(&unsub, "Expires"), Some("0"));
    assert!(
        unsub.starts_with("SUBSCRIBE sip:bob@127.0.10.40:5060"),
        "in the dialog: {unsub}"
    );
    b.handle_sip_outcome(
        now,
        tag,
        SipOutcome::Final(ok_to(&unsub, "200 OK", "Expires: 0\n")),
    );
    let acts = actions(&mut b);
    assert_eq!(stanzas(&acts)[0].attr("type"), Some("unsubscribed"));
    assert_eq!(b.subscriptions(), 0);
}

fn subscribe_from_bob(call_id: &str, expires: u32, to_tag: Option<&str>, seq: u32) -> Request {
    let to_tag = to_tag.map(|t| format!(";tag={t}")).unwrap_or_default();
    request(&format!(
        "SUBSCRIBE sip:alice@gmail.test SIP/2.0\nVia: SIP/2.0/TLS 127.0.10.30:5061;branch=z9hG4bKs{seq}\nMax-Forwards: 69\nFrom: <sip:bob@contoso.test>;tag=bobsub\nTo: <sip:alice@gmail.test>{to_tag}\nCall-ID: {call_id}\nCSeq: {seq} SUBSCRIBE\nContact: <sip:bob@127.0.10.40:5060>\nEvent: presence\nAccept: application/pidf+xml\nExpires: {expires}\nContent-Length: 0\n\n"
    ))
}

fn built_response(a: &Action) -> String {
    match a {
        Action::Respond {
            answer: Answer::Built(m),
            ..
        } => String::from_utf8(m.to_bytes()).unwrap(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_sip_user_subscribes_to_an_xmpp_user_who_approves_then_updates_then_refuses() {
    let mut b = bridge();
    let now = Instant::now();
    b.handle_sip_request(now, 1, &subscribe_from_bob("s1", 600, None, 1));
    let acts = actions(&mut b);
    let ok = built_response(&acts[0]);
    assert!(ok.starts_with("SIP/2.0 200 OK"), "{ok}");
    assert_eq!(header(&ok, "Expires"), Some("600"));
    let our_tag = header(&ok, "To")
        .unwrap()
        .split("tag=")
        .nth(1)
        .unwrap()
        .to_owned();
    let asked = stanzas(&acts);
    assert_eq!(asked.len(), 1);
    assert_eq!(asked[0].attr("type"), Some("subscribe"));
    assert_eq!(asked[0].attr("from"), Some("bob@contoso.test"));
    assert_eq!(asked[0].attr("to"), Some("alice@gmail.test"));
    let notifies = sips(acts.into_iter().skip(1).collect());
    assert_eq!(
        header(&notifies[0].1, "Subscription-State"),
        Some("pending;expires=600")
    );
    assert!(
        !notifies[0].1.contains("<basic>"),
        "no presence before approval"
    );
    // Presence from alice before she approves: nothing reaches bob.
    from_partner(
        &mut b,
        now,
        presence_stanza(
            "alice@gmail.test/phone",
            "bob@contoso.test",
            None,
            "<show>dnd</show><status>busy!</status>",
        ),
    );
    assert!(sips(actions(&mut b)).is_empty(), "no leak before approval");
    // Approval: NOTIFY active with her presence (remembered), and a probe.
    from_partner(
        &mut b,
        now,
        presence_stanza(
            "alice@gmail.test",
            "bob@contoso.test",
            Some("subscribed"),
            "",
        ),
    );
    let acts = actions(&mut b);
    let st: Vec<String> = stanzas(&acts)
        .iter()
        .map(|s| s.attr("type").unwrap_or("").to_owned())
        .collect();
    assert!(st.contains(&"probe".to_owned()), "{st:?}");
    let n = sips(acts);
    let active = &n[0].1;
    assert!(
        active.starts_with("NOTIFY sip:bob@127.0.10.40:5060 SIP/2.0"),
        "{active}"
    );
    assert!(header(active, "Subscription-State")
        .unwrap()
        .starts_with("active;expires="));
    assert!(active.contains(&format!(";tag={our_tag}")));
    assert!(active.contains("<basic>open</basic>"), "{active}");
    assert!(active.contains("busy!"), "{active}");
    // Update.
    from_partner(
        &mut b,
        now,
        presence_stanza(
            "alice@gmail.test/phone",
            "bob@contoso.test",
            Some("unavailable"),
            "",
        ),
    );
    let n = sips(actions(&mut b));
    assert!(n[0].1.contains("<basic>closed</basic>"), "{}", n[0].1);
    // Refusal later: terminated;reason=rejected, and nothing more.
    from_partner(
        &mut b,
        now,
        presence_stanza(
            "alice@gmail.test",
            "bob@contoso.test",
            Some("unsubscribed"),
            "",
        ),
    );
    let n = sips(actions(&mut b));
    assert_eq!(
        header(&n[0].1, "Subscription-State"),
        Some("terminated;reason=rejected")
    );
    from_partner(
        &mut b,
        now,
        presence_stanza("alice@gmail.test/phone", "bob@contoso.test", None, ""),
    );
    assert!(
        sips(actions(&mut b)).is_empty(),
        "no presence after refusal"
    );
    assert_eq!(b.subscriptions(), 0);
}

#[test]
fn expiry_ends_an_inbound_subscription_with_notify_timeout() {
    let mut b = bridge();
    let now = Instant::now();
    b.handle_sip_request(now, 1, &subscribe_from_bob("s2", 60, None, 1));
    actions(&mut b);
    from_partner(
        &mut b,
        now,
        presence_stanza(
            "alice@gmail.test",
            "bob@contoso.test",
            Some("subscribed"),
            "",
        ),
    );
    actions(&mut b);
    b.handle_timeout(now + Duration::from_secs(61));
    let n = sips(actions(&mut b));
    assert_eq!(
        header(&n[0].1, "Subscription-State"),
        Some("terminated;reason=timeout")
    );
}

#[test]
fn an_outbound_subscription_is_refreshed_and_re_established_after_481() {
    let mut b = bridge();
    let now = Instant::now();
    from_partner(
        &mut b,
        now,
        presence_stanza(
            "alice@gmail.test",
            "bob@contoso.test",
            Some("subscribe"),
            "",
        ),
    );
    let (tag, sub) = sips(actions(&mut b)).into_iter().next().unwrap();
    b.handle_sip_outcome(
        now,
        tag,
        SipOutcome::Final(ok_to(
            &sub,
            "200 OK",
            "Contact: <sip:bob@127.0.10.40:5060>\nExpires: 100\n",
        )),
    );
    actions(&mut b);
    b.handle_timeout(now + Duration::from_secs(79));
    assert!(sips(actions(&mut b)).is_empty());
    b.handle_timeout(now + Duration::from_secs(80));
    let (tag, refresh) = sips(actions(&mut b))
        .into_iter()
        .next()
        .expect("refresh before expiry");
    assert!(
        refresh.starts_with("SUBSCRIBE sip:bob@127.0.10.40:5060"),
        "{refresh}"
    );
    assert_eq!(header(&refresh, "Call-ID"), header(&sub, "Call-ID"));
    b.handle_sip_outcome(
        now,
        tag,
        SipOutcome::Final(ok_to(&refresh, "481 Call/Transaction Does Not Exist", "")),
    );
    let (_, again) = sips(actions(&mut b))
        .into_iter()
        .next()
        .expect("re-established");
    assert!(
        again.starts_with("SUBSCRIBE sip:bob@contoso.test"),
        "a new dialog: {again}"
    );
    assert_ne!(header(&again, "Call-ID"), header(&sub, "Call-ID"));
}

/// What the state writer keeps: the saved changes folded, as the lines a restart reads.
#[derive(Default)]
pub(super) struct Saved(std::collections::BTreeMap<String, String>);

impl Saved {
    /// The bridge's actions, the saves among them applied here.
    pub(super) fn actions(&mut self, b: &mut Bridge) -> Vec<Action> {
        let acts = actions(b);
        for a in &acts {
            if let Action::SaveSubscriptions(changes) = a {
                for c in changes {
                    match c {
                        SubscriptionChange::Put { key, line } => {
                            assert_eq!(
                                crate::translate::presence::line_key(line).as_deref(),
                                Some(key.as_str())
                            );
                            self.0.insert(key.clone(), line.clone())
                        }
                        SubscriptionChange::Remove { key } => self.0.remove(key),
                    };
                }
            }
        }
        acts
    }

    pub(super) fn text(&self) -> String {
        self.0.values().map(|l| format!("{l}\n")).collect()
    }
}

#[test]
fn subscriptions_survive_a_restart() {
    let start = Instant::now();
    let mut saved = Saved::default();
    let mut b = bridge().with_clock(start, 1_000_000);
    // Inbound, approved and active.
    b.handle_sip_request(start, 1, &subscribe_from_bob("persist", 3600, None, 1));
    from_partner(
        &mut b,
        start,
        presence_stanza(
            "alice@gmail.test",
            "bob@contoso.test",
            Some("subscribed"),
            "",
        ),
    );
    // Outbound, active.
    from_partner(
        &mut b,
        start,
        presence_stanza(
            "carol@googlemail.test",
            "dave@contoso.test",
            Some("subscribe"),
            "",
        ),
    );
    let acts = saved.actions(&mut b);
    let (tag, sub) = sips(acts)
        .into_iter()
        .find(|(_, t)| t.starts_with("SUBSCRIBE"))
        .unwrap();
    b.handle_sip_outcome(
        start,
        tag,
        SipOutcome::Final(ok_to(
            &sub,
            "200 OK",
            "Contact: <sip:dave@127.0.10.40:5060>\nExpires: 3600\n",
        )),
    );
    b.handle_sip_request(start, 2, &notify_to_us(&sub, 1, "active;expires=3600", ""));
    b.flush(start + Duration::from_secs(5));
    saved.actions(&mut b);
    let saved = saved.text();
    assert_eq!(saved.lines().count(), 2, "{saved}");
    // A new process, 10 minutes later.
    let later = Instant::now() + Duration::from_secs(3);
    let mut b2 = bridge().with_clock(later, 1_000_600);
    let (taken, refused) = b2.restore_subscriptions(later, &saved);
    assert_eq!((taken, refused.len()), (2, 0));
    let reqs = sips(actions(&mut b2));
    let notify = reqs
        .iter()
        .find(|(_, t)| t.starts_with("NOTIFY"))
        .expect("NOTIFY in the old dialog");
    assert_eq!(header(&notify.1, "Call-ID"), Some("persist"));
    assert!(header(&notify.1, "Subscription-State")
        .unwrap()
        .starts_with("active;expires=30"));
    let resub = reqs
        .iter()
        .find(|(_, t)| t.starts_with("SUBSCRIBE"))
        .expect("re-subscribed");
    assert!(
        resub.1.starts_with("SUBSCRIBE sip:dave@contoso.test"),
        "{}",
        resub.1
    );
    assert!(header(&resub.1, "From")
        .unwrap()
        .starts_with("<sip:carol@googlemail.test>"));
}
