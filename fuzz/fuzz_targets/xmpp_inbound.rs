//! The receiving side of an S2S stream (`xmpp::session::InboundSession`) as a connection
//! thread drives it: the peer's bytes in reads of random sizes, STARTTLS completed with or
//! without a certificate name, dialback verdicts given or held back, time moving on and
//! deadlines firing; limits and policy as the gateway configures them.
//!
//! Invariants: no panic; a stanza is handed on only for an authenticated pair, addressed
//! from its remote domain to its local one; nothing comes out after `Closed`; everything
//! xsgw wrote is well-formed XML.
#![no_main]

use std::sync::Arc;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use xsgw::xmpp::error::{StanzaErrorCondition, StreamErrorCondition};
use xsgw::xmpp::jid::Jid;
use xsgw::xmpp::session::{
    DialbackVerdict, InboundConfig, InboundSession, PeerDecision, PeerPolicy, SessionEvent,
    TlsPolicy,
};
use xsgw_fuzz::{check_xmpp_output, chunks, Rng};

const HOSTED: [&str; 2] = ["a.example", "sip.a.example"];

fn config(rng: &mut Rng) -> InboundConfig {
    let mut c = InboundConfig::new(HOSTED.map(str::to_owned), "s3cr3t".to_owned());
    c.tls = match rng.below(3) {
        0 => TlsPolicy::Required,
        1 => TlsPolicy::Optional,
        _ => TlsPolicy::NotSupported,
    };
    c.sasl = rng.one_in(2);
    c.dialback = !rng.one_in(4);
    // `[xmpp] max_stanza`: its minimum or its default.
    c.limits.max_stanza = if rng.one_in(2) { 4096 } else { 256 * 1024 };
    c.peer_policy = Some(PeerPolicy(Arc::new(|domain: &str| match domain {
        "blocked.example" => PeerDecision::Refuse(StreamErrorCondition::PolicyViolation),
        d if d.ends_with(".tls.example") => PeerDecision::Accept {
            tls: TlsPolicy::Required,
            sasl: true,
            dialback: false,
        },
        _ => PeerDecision::Accept {
            tls: TlsPolicy::Optional,
            sasl: true,
            dialback: true,
        },
    })));
    c
}

fn domain(jid: Option<&str>) -> Option<String> {
    jid.and_then(|j| j.parse::<Jid>().ok())
        .map(|j| j.domain().to_owned())
}

fuzz_target!(|data: &[u8]| {
    let mut rng = Rng::from_input(data);
    let start = Instant::now();
    let mut now = start;
    let mut ids = 0u32;
    let mut session = InboundSession::new(
        config(&mut rng),
        now,
        Box::new(move || {
            ids += 1;
            format!("id{ids}")
        }),
    );
    let mut out = Vec::new();
    let mut waiting: Vec<(String, String)> = Vec::new();
    let mut closed = false;
    for read in chunks(data, &mut rng) {
        now += Duration::from_millis(rng.below(5000));
        if rng.one_in(16) {
            if let Some(deadline) = session.poll_timeout() {
                now = now.max(deadline);
                session.handle_timeout(now);
            }
        }
        session.handle_input(now, read);
        while let Some(event) = session.poll_event() {
            assert!(!closed, "event after Closed: {event:?}");
            match event {
                SessionEvent::StartTls => {
                    // What follows <starttls/> belongs to TLS; the rest of the input is
                    // what the peer sends inside it.
                    let _ = session.take_tls_bytes();
                    // No certificate, one for b.example, or one for *.tls.example (RFC 6125
                    // wildcard: exactly one label), as the webpki check in the shell answers.
                    let certified: Option<xsgw::xmpp::session::CertifiedFor> = match rng.below(3) {
                        0 => None,
                        1 => Some(Box::new(|d: &str| d.eq_ignore_ascii_case("b.example"))),
                        _ => Some(Box::new(|d: &str| {
                            d.split_once('.').is_some_and(|(label, rest)| {
                                !label.is_empty() && rest.eq_ignore_ascii_case("tls.example")
                            })
                        })),
                    };
                    session.handle_tls_established(now, certified);
                }
                SessionEvent::VerifyDialback { local, remote, .. } => {
                    assert!(HOSTED.contains(&local.as_str()), "verify for {local}");
                    waiting.push((local, remote));
                }
                SessionEvent::Authenticated { local, remote, .. } => {
                    assert!(HOSTED.contains(&local.as_str()), "authenticated {local}");
                    assert!(
                        session
                            .domain_pairs()
                            .contains(&(local.clone(), remote.clone())),
                        "authenticated {local}/{remote} is not a pair"
                    );
                }
                SessionEvent::Stanza {
                    local,
                    remote,
                    element,
                } => {
                    assert!(
                        session
                            .domain_pairs()
                            .contains(&(local.clone(), remote.clone())),
                        "stanza for unauthenticated {local}/{remote}"
                    );
                    assert_eq!(domain(element.attr("from")).as_ref(), Some(&remote));
                    assert_eq!(domain(element.attr("to")).as_ref(), Some(&local));
                }
                SessionEvent::Closed(_) => {
                    assert!(session.is_closed());
                    closed = true;
                }
            }
        }
        // The authoritative server answers some verifications now, others later.
        while !waiting.is_empty() && rng.one_in(2) {
            let (local, remote) = waiting.swap_remove(0);
            let verdict = match rng.below(3) {
                0 => DialbackVerdict::Valid,
                1 => DialbackVerdict::Invalid,
                _ => DialbackVerdict::Error(StanzaErrorCondition::RemoteServerNotFound),
            };
            session.handle_dialback_verdict(&local, &remote, verdict);
        }
        session.poll_transmit(&mut out);
    }
    session.close(None);
    session.poll_transmit(&mut out);
    check_xmpp_output(&out);
});
