//! Instant messages and typing both ways (RFC 7572, RFC 3994, XEP-0085, Microsoft IM
//! sessions): the tables of what waits for what, the delivery barrier and the sessions.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use super::outside_dialog::fresh_request;
use super::quota::{domain_of, Counted, Partnered, QuotaKind};
use super::{
    Action, Answer, Bridge, DialogIndex, PairKey, Receipt, RequestId, SipOutcome, TxTag,
    MAX_SESSIONS, MAX_SIP_TRANSACTIONS, MAX_WAITING,
};
use crate::config::ImMode;
use crate::sip::dialog::{Dialog, DialogId, DialogKind, DialogState};
use crate::sip::{Contact, MessageBuilder, Method, NameAddr, Request, StatusCode};
use crate::translate::address::{jid_to_sip, sip_to_jid};
use crate::translate::errors::{sip_to_xmpp, xmpp_to_sip, ErrorContext};
use crate::translate::im::{
    im_answer, im_offer, info_to_message, invite_first_message, message_to_sip, parse_im_sdp,
    sip_to_message, FromSip, OutgoingMessage,
};
use crate::translate::typing::{
    chat_state_to_sip, ChatState, SipTyping, ISCOMPOSING_CONTENT_TYPE,
    KEYBOARD_ACTIVITY_CONTENT_TYPE,
};
use crate::xmpp::element::{Element, NS_SERVER};
use crate::xmpp::error::{error_reply, StanzaError, StanzaErrorCondition};
use crate::xmpp::jid::Jid;

/// XEP-0199.
const NS_PING: &str = "urn:xmpp:ping";
/// XEP-0030.
const NS_DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
/// Messages waiting for a session to be set up, per session.
const MAX_SESSION_QUEUE: usize = 64;
/// SIP statuses with which an Edge says "not in page mode" (`im_mode = auto` then switches
/// that SIP domain to sessions): method not allowed/implemented, media refused.
const PAGE_MODE_REFUSED: &[u16] = &[405, 415, 488, 501, 606];

#[derive(Default)]
pub(super) struct ImState {
    /// SIP requests waiting for the XMPP side, by the receipt of their stanza (counted per
    /// partner domain for its `waiting_deliveries` quota).
    waiting: Counted<Receipt, Waiting>,
    /// Our stanza ids → receipt: an error stanza finds its request this way.
    by_stanza_id: HashMap<String, Receipt>,
    /// Delivery barriers per (hosted domain, partner domain).
    barriers: HashMap<(String, String), Barrier>,
    /// Barrier IQ id → domain pair.
    barrier_ids: HashMap<String, (String, String)>,
    /// SIP client transactions the bridge started, by tag.
    transactions: HashMap<TxTag, Transaction>,
    /// IM sessions, by the two parties (counted per partner domain for its `im_sessions`
    /// quota).
    pub(super) sessions: Counted<PairKey, Session>,
    /// Established sessions' dialogs → parties.
    dialogs: DialogIndex,
    /// SIP domains whose Edge refused page mode (`im_mode = auto`).
    session_domains: HashSet<String>,
    /// Typing indications that need a timer, by conversation.
    typing: HashMap<PairKey, Typing>,
    /// No typing timer is due before this.
    typing_next: Option<Instant>,
}

/// At most this many conversations have typing timers; beyond, indications are still
/// carried, only their refresh and lapse are not (bounded memory).
const MAX_TYPING: usize = 50_000;

/// RFC 3994 timers of one conversation: an `active` indication from SIP lapses to `idle`
/// (XMPP `<paused/>`) unless refreshed; an XMPP user still composing is announced `active`
/// again before the refresh interval we promised runs out.
struct Typing {
    sip_user: Jid,
    xmpp_user: Jid,
    /// When to tell XMPP the SIP user stopped (no refresh came).
    lapse_to_xmpp: Option<Instant>,
    /// When to send SIP another `active` for the XMPP user.
    refresh_to_sip: Option<Instant>,
}

impl Typing {
    fn next(&self) -> Option<Instant> {
        match (self.lapse_to_xmpp, self.refresh_to_sip) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// Earliest typing timer, possibly one that was cleared since (a wake-up that finds nothing
/// due costs one scan, and keeps `poll_timeout` O(1) per event).
pub(super) fn next_typing_timer(b: &Bridge) -> Option<Instant> {
    b.im.typing_next
}

/// Sets or clears a conversation's typing timers.
fn set_typing(
    b: &mut Bridge,
    sip_user: &Jid,
    xmpp_user: &Jid,
    lapse_to_xmpp: Option<Option<Instant>>,
    refresh_to_sip: Option<Option<Instant>>,
) {
    let pair = pair_key(sip_user, xmpp_user);
    if !b.im.typing.contains_key(&pair) {
        let wanted =
            matches!(lapse_to_xmpp, Some(Some(_))) || matches!(refresh_to_sip, Some(Some(_)));
        if !wanted || b.im.typing.len() >= MAX_TYPING {
            return;
        }
        b.im.typing.insert(
            pair.clone(),
            Typing {
                sip_user: sip_user.bare(),
                xmpp_user: xmpp_user.bare(),
                lapse_to_xmpp: None,
                refresh_to_sip: None,
            },
        );
    }
    if let Some(t) = b.im.typing.get_mut(&pair) {
        if let Some(v) = lapse_to_xmpp {
            t.lapse_to_xmpp = v;
        }
        if let Some(v) = refresh_to_sip {
            t.refresh_to_sip = v;
        }
        if let Some(at) = t.next() {
            b.im.typing_next = Some(b.im.typing_next.map_or(at, |n| n.min(at)));
        } else {
            b.im.typing.remove(&pair);
        }
    }
}

/// Fires due typing timers.
pub(super) fn typing_timers(b: &mut Bridge, now: Instant) {
    if !b.im.typing_next.is_some_and(|at| at <= now) {
        return;
    }
    b.im.typing_next = None;
    let due: Vec<PairKey> =
        b.im.typing
            .iter()
            .filter(|(_, t)| t.next().is_some_and(|at| at <= now))
            .map(|(k, _)| k.clone())
            .collect();
    for pair in due {
        let Some(t) = b.im.typing.get(&pair) else {
            continue;
        };
        let (sip_user, xmpp_user) = (t.sip_user.clone(), t.xmpp_user.clone());
        if t.lapse_to_xmpp.is_some_and(|at| at <= now) {
            // RFC 3994 §4: an active indication not refreshed in time means idle.
            let paused = Element::new("message", NS_SERVER)
                .with_attr("type", "chat")
                .with_attr("from", sip_user.to_string())
                .with_attr("to", xmpp_user.to_string())
                .with_child(ChatState::Paused.to_element());
            b.send_stanza(paused, None);
            set_typing(b, &sip_user, &xmpp_user, Some(None), None);
        }
        if b.im
            .typing
            .get(&pair)
            .and_then(|t| t.refresh_to_sip)
            .is_some_and(|at| at <= now)
        {
            set_typing(b, &sip_user, &xmpp_user, None, Some(None));
            let remote = xmpp_user.domain().to_owned();
            typing_to_sip(b, now, &remote, &xmpp_user, &sip_user, ChatState::Composing);
        }
    }
    // The timers left (and those just set) decide the next wake-up.
    b.im.typing_next = b.im.typing.values().filter_map(Typing::next).min();
}

struct Waiting {
    request: RequestId,
    pair: (String, String),
    stanza_id: String,
    /// A message waits for the barrier after the write; typing only for the write.
    needs_barrier: bool,
    what: &'static str,
    /// For the first message riding in an INVITE: the INVITE's 200 (sent on success) and
    /// the session (forgotten on failure, the INVITE then gets the error).
    invite: Option<(Box<MessageBuilder>, PairKey)>,
}

#[derive(Default)]
struct Barrier {
    /// The ping on its way and the receipts it covers.
    in_flight: Option<(String, Vec<Receipt>)>,
    /// Written since, waiting for the next ping.
    next: Vec<Receipt>,
}

enum Transaction {
    /// A page-mode MESSAGE for `stanza`; `may_switch` under `im_mode = auto`.
    Page {
        stanza: Element,
        outgoing: OutgoingMessage,
        pair: PairKey,
        may_switch: bool,
    },
    /// A MESSAGE inside the session of `pair`.
    InSession {
        stanza: Element,
        outgoing: OutgoingMessage,
        pair: PairKey,
        retried: bool,
    },
    /// The INVITE opening the session of `pair`.
    Invite { pair: PairKey },
    /// Typing, BYE: nobody to tell if it fails.
    Quiet { what: &'static str },
}

pub(super) struct Session {
    /// The XMPP party (bare JID) and the SIP party (its JID form), for stanzas.
    xmpp_user: Jid,
    sip_user: Jid,
    state: SessionState,
    last_activity: Instant,
}

enum SessionState {
    /// Our INVITE is on its way; messages wait.
    Inviting {
        local: Box<NameAddr>,
        call_id: String,
        queue: Vec<(Element, OutgoingMessage)>,
    },
    Established {
        dialog: Box<Dialog>,
    },
}

fn pair_key(sip_user: &Jid, xmpp_user: &Jid) -> PairKey {
    PairKey {
        sip: sip_user.bare().to_string().to_lowercase(),
        xmpp: xmpp_user.bare().to_string().to_lowercase(),
    }
}

fn jid_attr(stanza: &Element, name: &str) -> Option<Jid> {
    stanza.attr(name).and_then(|v| v.parse::<Jid>().ok())
}

fn domains(from: &Jid, to: &Jid) -> (String, String) {
    (
        from.domain().to_ascii_lowercase(),
        to.domain().to_ascii_lowercase(),
    )
}

// ---------------------------------------------------------------------------------------
// SIP → XMPP

pub(super) fn sip_request(b: &mut Bridge, now: Instant, id: RequestId, req: &Request) {
    if req.method == Method::Ack {
        if let Some(pair) = DialogId::of_request(req).and_then(|d| b.im.dialogs.get(&d)) {
            if let Some(s) = b.im.sessions.get_mut(pair) {
                s.last_activity = now;
            }
        }
        return;
    }
    if req.to.tag().is_some() {
        return in_dialog(b, now, id, req);
    }
    match req.method {
        Method::Message | Method::Invite => {}
        Method::Info | Method::Bye => {
            return b.respond(
                id,
                StatusCode::CALL_DOES_NOT_EXIST,
                Some(format!("{} outside a dialog", req.method)),
            )
        }
        _ => {
            return b.respond(
                id,
                StatusCode::METHOD_NOT_ALLOWED,
                Some(format!("{} has no XMPP equivalent", req.method)),
            )
        }
    }
    // No open relay: the sender must be one of ours (the Request-URI was checked already).
    let from_host = req.from.uri.host().to_ascii_lowercase();
    if !b.config.is_hosted(&from_host) {
        log::warn!(
            "sip → xmpp: {} from {} refused with 403: {from_host} is not a hosted domain ([gateway] sip_domains)",
            req.method,
            req.from.uri
        );
        return b.respond(
            id,
            StatusCode::FORBIDDEN,
            Some(format!("sender domain {from_host} is not hosted here")),
        );
    }
    let from = match sip_to_jid(&req.from.uri) {
        Ok(j) => j.bare(),
        Err(e) => return refuse_address(b, id, req, "From", &e),
    };
    let to = match sip_to_jid(&req.uri) {
        Ok(j) => j,
        Err(e) => return refuse_address(b, id, req, "Request-URI", &e),
    };
    if b.config.is_hosted(to.domain()) {
        return b.respond(
            id,
            StatusCode::NOT_FOUND,
            Some(format!(
                "{} is a hosted SIP domain, not an XMPP one",
                to.domain()
            )),
        );
    }
    match req.method {
        Method::Invite => accept_session(b, now, id, req, from, to),
        _ => message_from_sip(b, now, id, req, &from, &to),
    }
}

fn refuse_address(
    b: &mut Bridge,
    id: RequestId,
    req: &Request,
    which: &str,
    e: &crate::translate::address::AddressError,
) {
    log::info!(
        "sip → xmpp: {} {} refused: {which} cannot be mapped to a JID: {e}",
        req.method,
        req.call_id
    );
    b.respond(
        id,
        e.sip_status(),
        Some(format!("{which} cannot be mapped to XMPP: {e}")),
    );
}

fn message_from_sip(
    b: &mut Bridge,
    now: Instant,
    id: RequestId,
    req: &Request,
    from: &Jid,
    to: &Jid,
) {
    match sip_to_message(req, from, to, &b.config.limits) {
        Ok(FromSip::Message(stanza)) => {
            // A message ends the sender's composing (RFC 3994 §3).
            set_typing(b, from, to, Some(None), None);
            forward(b, now, id, stanza, true, "message")
        }
        Ok(FromSip::Typing { stanza, indication }) => {
            b.stats.typing += 1;
            let active = indication.active_for();
            let lapse = (!active.is_zero()).then(|| now + active);
            set_typing(b, from, to, Some(lapse), None);
            forward(b, now, id, stanza, false, "typing")
        }
        Err(e) => {
            log::info!("sip → xmpp: MESSAGE from {from} to {to} refused: {e}");
            b.stats.sip_to_xmpp_refused += 1;
            b.respond(id, e.sip_status(), Some(e.to_string()));
        }
    }
}

/// Sends a stanza for the request `id` and remembers what to answer when.
fn forward(
    b: &mut Bridge,
    now: Instant,
    id: RequestId,
    stanza: Element,
    needs_barrier: bool,
    what: &'static str,
) {
    forward_answering(b, now, id, stanza, needs_barrier, what, None)
}

fn forward_answering(
    b: &mut Bridge,
    now: Instant,
    id: RequestId,
    mut stanza: Element,
    needs_barrier: bool,
    what: &'static str,
    invite: Option<(Box<MessageBuilder>, PairKey)>,
) {
    if b.im.waiting.len() >= MAX_WAITING {
        b.stats.sip_to_xmpp_refused += 1;
        return b.respond(
            id,
            xmpp_to_sip(
                StanzaErrorCondition::ResourceConstraint,
                ErrorContext::default(),
            ),
            Some("too many messages in flight".into()),
        );
    }
    let (Some(from), Some(to)) = (jid_attr(&stanza, "from"), jid_attr(&stanza, "to")) else {
        return b.respond(id, StatusCode::SERVER_INTERNAL_ERROR, None);
    };
    if let Some(warning) = over_quota(b, now, to.domain(), QuotaKind::WaitingDeliveries) {
        b.stats.sip_to_xmpp_refused += 1;
        if let Some((_, pair)) = &invite {
            end_session(b, pair, false, false);
        }
        let retry = b.config.delivery_timeout;
        return b.respond_busy(id, retry, warning);
    }
    let receipt = b.fresh_id();
    let stanza_id = unguessable_id(b, "");
    stanza.set_attr("id", stanza_id.as_str());
    b.im.by_stanza_id.insert(stanza_id.clone(), receipt);
    b.im.waiting.insert(
        receipt,
        Waiting {
            request: id,
            pair: domains(&from, &to),
            stanza_id,
            needs_barrier,
            what,
            invite,
        },
    );
    b.deadlines
        .push_back((now + b.config.delivery_timeout, receipt));
    log::debug!("sip → xmpp: {what} from {from} to {to} sent, receipt {receipt}");
    b.send_stanza(stanza, Some(receipt));
}

/// These stanzas are on their streams: typing is answered now, messages wait for a ping,
/// one per domain pair for the whole batch.
pub(super) fn written(b: &mut Bridge, receipts: &[Receipt]) {
    let mut pairs: Vec<(String, String)> = Vec::new();
    for &receipt in receipts {
        let Some(w) = b.im.waiting.get(&receipt) else {
            continue;
        };
        if !w.needs_barrier {
            finish_ok(b, receipt);
            continue;
        }
        let pair = w.pair.clone();
        b.im.barriers
            .entry(pair.clone())
            .or_default()
            .next
            .push(receipt);
        if !pairs.contains(&pair) {
            pairs.push(pair);
        }
    }
    for pair in pairs {
        send_barrier(b, &pair);
    }
}

/// Sends a ping covering everything written for `pair`, unless one is on its way.
fn send_barrier(b: &mut Bridge, pair: &(String, String)) {
    let Some(barrier) = b.im.barriers.get_mut(pair) else {
        return;
    };
    if barrier.in_flight.is_some() || barrier.next.is_empty() {
        return;
    }
    let covered = std::mem::take(&mut barrier.next);
    let id = unguessable_id(b, "b");
    if let Some(barrier) = b.im.barriers.get_mut(pair) {
        barrier.in_flight = Some((id.clone(), covered));
    }
    b.im.barrier_ids.insert(id.clone(), pair.clone());
    let ping = Element::new("iq", NS_SERVER)
        .with_attr("type", "get")
        .with_attr("id", id)
        .with_attr("from", pair.0.as_str())
        .with_attr("to", pair.1.as_str())
        .with_child(Element::new("ping", NS_PING));
    b.send_stanza(ping, None);
}

/// The partner answered our ping `id`: what was written before it was accepted.
fn barrier_answered(b: &mut Bridge, id: &str, remote: &str) -> bool {
    let Some(pair) = b.im.barrier_ids.get(id) else {
        return false;
    };
    if !pair.1.eq_ignore_ascii_case(remote) {
        return false;
    }
    let pair = pair.clone();
    b.im.barrier_ids.remove(id);
    let covered =
        b.im.barriers
            .get_mut(&pair)
            .and_then(|barrier| barrier.in_flight.take())
            .map(|(_, covered)| covered)
            .unwrap_or_default();
    for receipt in covered {
        if b.im.waiting.contains_key(&receipt) {
            finish_ok(b, receipt);
        }
    }
    if b.im.barriers.get(&pair).is_some_and(|x| x.next.is_empty()) {
        b.im.barriers.remove(&pair);
    } else {
        send_barrier(b, &pair);
    }
    true
}

fn finish_ok(b: &mut Bridge, receipt: Receipt) {
    let Some(w) = take_waiting(b, receipt) else {
        return;
    };
    if w.needs_barrier {
        b.stats.sip_to_xmpp_delivered += 1;
    }
    log::debug!(
        "sip → xmpp: {} {} accepted by {}",
        w.what,
        w.stanza_id,
        w.pair.1
    );
    match w.invite {
        Some((ok, _)) => b.actions.push_back(Action::Respond {
            request: w.request,
            answer: Answer::Built(ok),
        }),
        None => b.respond(w.request, StatusCode::OK, None),
    }
}

fn finish_err(
    b: &mut Bridge,
    receipt: Receipt,
    condition: StanzaErrorCondition,
    text: Option<String>,
) {
    let Some(w) = take_waiting(b, receipt) else {
        return;
    };
    let status = xmpp_to_sip(
        condition,
        ErrorContext {
            timed_out: condition == StanzaErrorCondition::RemoteServerTimeout,
            ..ErrorContext::default()
        },
    );
    b.stats.sip_to_xmpp_refused += 1;
    let warning = match &text {
        Some(t) => format!("XMPP error {condition} from {}: {t}", w.pair.1),
        None => format!("XMPP error {condition} from {}", w.pair.1),
    };
    log::info!(
        "sip → xmpp: {} {} to {} not delivered: {condition}{}; answered {status}",
        w.what,
        w.stanza_id,
        w.pair.1,
        text.map(|t| format!(" ({t})")).unwrap_or_default()
    );
    if let Some((_, pair)) = &w.invite {
        // The INVITE is refused with the message's error: no session was promised.
        end_session(b, pair, false, false);
    }
    b.respond(w.request, status, Some(warning));
}

fn take_waiting(b: &mut Bridge, receipt: Receipt) -> Option<Waiting> {
    let w = b.im.waiting.remove(&receipt)?;
    b.im.by_stanza_id.remove(&w.stanza_id);
    if b.im.waiting.is_empty() {
        // Every deadline left belongs to an answered request: drop them all at once.
        b.deadlines.clear();
    }
    Some(w)
}

pub(super) fn shut_down(b: &mut Bridge) {
    let mut receipts: Vec<Receipt> = b.im.waiting.keys().copied().collect();
    receipts.sort_unstable();
    let written: std::collections::HashSet<Receipt> =
        b.im.barriers
            .values()
            .flat_map(|x| {
                x.next
                    .iter()
                    .chain(x.in_flight.iter().flat_map(|(_, covered)| covered.iter()))
            })
            .copied()
            .collect();
    for receipt in receipts {
        let Some(w) = take_waiting(b, receipt) else {
            continue;
        };
        let warning = if written.contains(&receipt) {
            "the gateway is stopping; the message was sent to the XMPP server, which had not confirmed it"
        } else {
            "the gateway is stopping; the message was not sent"
        };
        b.stats.sip_to_xmpp_refused += 1;
        b.respond(
            w.request,
            StatusCode::TEMPORARILY_UNAVAILABLE,
            Some(warning.into()),
        );
    }
}

pub(super) fn xmpp_failed(
    b: &mut Bridge,
    receipt: Receipt,
    condition: StanzaErrorCondition,
    text: Option<String>,
) {
    finish_err(b, receipt, condition, text);
}

pub(super) fn deadline(b: &mut Bridge, receipt: Receipt) {
    if b.im.waiting.contains_key(&receipt) {
        let text = format!(
            "the XMPP side did not accept it within {:?}",
            b.config.delivery_timeout
        );
        finish_err(
            b,
            receipt,
            StanzaErrorCondition::RemoteServerTimeout,
            Some(text),
        );
    }
}

fn in_dialog(b: &mut Bridge, now: Instant, id: RequestId, req: &Request) {
    let pair = DialogId::of_request(req).and_then(|d| b.im.dialogs.get(&d).cloned());
    let Some(pair) = pair else {
        return b.respond(
            id,
            StatusCode::CALL_DOES_NOT_EXIST,
            Some("no such IM session".into()),
        );
    };
    let Some(session) = b.im.sessions.get_mut(&pair) else {
        return b.respond(id, StatusCode::CALL_DOES_NOT_EXIST, None);
    };
    let SessionState::Established { dialog } = &mut session.state else {
        return b.respond(id, StatusCode::CALL_DOES_NOT_EXIST, None);
    };
    if let Err(e) = dialog.handle_request(req) {
        return b.respond(id, e.status(), Some(e.to_string()));
    }
    session.last_activity = now;
    let (from, to) = (session.sip_user.clone(), session.xmpp_user.clone());
    match req.method {
        Method::Message => message_from_sip(b, now, id, req, &from, &to),
        Method::Info => match info_to_message(req, &from, &to) {
            Ok(stanza) => {
                b.stats.typing += 1;
                let composing = ChatState::of_message(&stanza) == Some(ChatState::Composing);
                let lapse = composing.then(|| {
                    now + std::time::Duration::from_secs(u64::from(
                        crate::translate::typing::DEFAULT_ACTIVE_SECS,
                    ))
                });
                set_typing(b, &from, &to, Some(lapse), None);
                forward(b, now, id, stanza, false, "typing")
            }
            Err(e) => b.respond(id, e.sip_status(), Some(e.to_string())),
        },
        Method::Bye => {
            b.respond(id, StatusCode::OK, None);
            log::info!("sip session of {from} with {to} ended by BYE");
            end_session(b, &pair, false, true);
        }
        Method::Invite => {
            // A re-INVITE: answer the offer again, the dialog stays.
            let local_tag = req.to.tag().unwrap_or_default().to_owned();
            match answer_invite(b, req, &local_tag) {
                Ok(built) => b.actions.push_back(Action::Respond {
                    request: id,
                    answer: Answer::Built(Box::new(built)),
                }),
                Err((status, why)) => b.respond(id, status, Some(why)),
            }
        }
        _ => b.respond(
            id,
            StatusCode::METHOD_NOT_ALLOWED,
            Some(format!("{} is not carried in IM sessions", req.method)),
        ),
    }
}

/// The 200 for an IM-session INVITE: Record-Route copied, our Contact, the SDP answer.
fn answer_invite(
    b: &mut Bridge,
    req: &Request,
    local_tag: &str,
) -> Result<MessageBuilder, (StatusCode, String)> {
    let offer = parse_im_sdp(req.body()).map_err(|e| (e.sip_status(), e.to_string()))?;
    let sdp = im_answer(&offer, &req.to.uri, b.config.sdp_address)
        .map_err(|e| (e.sip_status(), e.to_string()))?;
    let mut built = Dialog::answer(req, StatusCode::OK, local_tag, &b.config.contact)
        .map_err(|e| (StatusCode::SERVER_INTERNAL_ERROR, e.to_string()))?;
    built
        .body("application/sdp", sdp.into_bytes())
        .map_err(|e| (StatusCode::SERVER_INTERNAL_ERROR, e.to_string()))?;
    Ok(built)
}

fn accept_session(b: &mut Bridge, now: Instant, id: RequestId, req: &Request, from: Jid, to: Jid) {
    if b.im.sessions.len() >= MAX_SESSIONS {
        return b.respond(
            id,
            StatusCode::TEMPORARILY_UNAVAILABLE,
            Some("too many IM sessions".into()),
        );
    }
    if !b.im.sessions.contains_key(&pair_key(&from, &to)) {
        if let Some(warning) = over_quota(b, now, to.domain(), QuotaKind::ImSessions) {
            let retry = b.config.session_idle;
            return b.respond_busy(id, retry, warning);
        }
    }
    let local_tag = b.random_hex(8);
    let built = match answer_invite(b, req, &local_tag) {
        Ok(built) => built,
        Err((status, why)) => {
            log::info!("sip → xmpp: IM session from {from} to {to} refused: {why}");
            return b.respond(id, status, Some(why));
        }
    };
    let first = match invite_first_message(req, &from, &to, &b.config.limits) {
        Ok(first) => first,
        Err(e) => {
            log::info!("sip → xmpp: IM session from {from} to {to} refused: first message: {e}");
            return b.respond(id, e.sip_status(), Some(e.to_string()));
        }
    };
    let dialog = match Dialog::uas(req, &local_tag) {
        Ok(d) => d,
        Err(e) => return b.respond(id, e.status(), Some(e.to_string())),
    };
    let pair = pair_key(&from, &to);
    if b.im.sessions.contains_key(&pair) {
        // The SIP user started a new conversation: it replaces ours (ended politely).
        end_session(b, &pair, true, false);
    }
    b.im.dialogs.insert(dialog.id.clone(), pair.clone());
    b.im.sessions.insert(
        pair.clone(),
        Session {
            xmpp_user: to.bare(),
            sip_user: from.clone(),
            state: SessionState::Established {
                dialog: Box::new(dialog),
            },
            last_activity: now,
        },
    );
    b.stats.sessions_opened += 1;
    log::info!("sip session opened by {from} with {to}");
    match first {
        // Microsoft puts the first message in the INVITE: the session is accepted when the
        // message is, so neither is promised early.
        Some(stanza) => forward_answering(
            b,
            now,
            id,
            stanza,
            true,
            "message",
            Some((Box::new(built), pair)),
        ),
        None => b.actions.push_back(Action::Respond {
            request: id,
            answer: Answer::Built(Box::new(built)),
        }),
    }
}

/// Forgets the session of `pair`; `bye` ends its dialog toward SIP, `tell_xmpp` sends the
/// XMPP user `<gone/>`.
fn end_session(b: &mut Bridge, pair: &PairKey, bye: bool, tell_xmpp: bool) {
    let Some(session) = b.im.sessions.remove(pair) else {
        return;
    };
    match session.state {
        SessionState::Established { mut dialog } => {
            b.im.dialogs.remove(&dialog.id);
            if bye {
                if let Ok(request) = dialog.request(&Method::Bye) {
                    let tag = b.fresh_id();
                    b.im.transactions
                        .insert(tag, Transaction::Quiet { what: "BYE" });
                    b.send_sip(tag, request);
                }
            }
        }
        SessionState::Inviting { queue, .. } => {
            for (stanza, _) in queue {
                bounce(
                    b,
                    &stanza,
                    StanzaErrorCondition::RecipientUnavailable,
                    "the IM session ended before it was set up",
                );
            }
        }
    }
    if tell_xmpp {
        let gone = Element::new("message", NS_SERVER)
            .with_attr("type", "chat")
            .with_attr("from", session.sip_user.to_string())
            .with_attr("to", session.xmpp_user.to_string())
            .with_child(ChatState::Gone.to_element());
        b.send_stanza(gone, None);
    }
}

pub(super) fn sweep_sessions(b: &mut Bridge, now: Instant) {
    let idle = b.config.session_idle;
    let stale: Vec<PairKey> =
        b.im.sessions
            .iter()
            .filter(|(_, s)| {
                matches!(s.state, SessionState::Established { .. }) && s.last_activity + idle <= now
            })
            .map(|(k, _)| k.clone())
            .collect();
    for pair in stale {
        log::info!(
            "sip session of {} with {} idle for {idle:?}: ended with BYE",
            pair.sip,
            pair.xmpp
        );
        end_session(b, &pair, true, false);
    }
}

// ---------------------------------------------------------------------------------------
// XMPP → SIP

pub(super) fn stanza(b: &mut Bridge, now: Instant, local: &str, remote: &str, stanza: Element) {
    match stanza.name.as_str() {
        "message" => message_from_xmpp(b, now, local, remote, stanza),
        "iq" => iq_from_xmpp(b, local, remote, stanza),
        "presence" => presence_from_xmpp(b, now, local, remote, &stanza),
        other => log::debug!("xmpp inbound {remote}: <{other}/> ignored"),
    }
}

fn presence_from_xmpp(b: &mut Bridge, now: Instant, local: &str, remote: &str, stanza: &Element) {
    if stanza.attr("type") == Some("error") {
        log::debug!("xmpp inbound {remote}: presence error ignored");
        return;
    }
    let (Some(from), Some(to)) = (jid_attr(stanza, "from"), jid_attr(stanza, "to")) else {
        return;
    };
    if !from.domain().eq_ignore_ascii_case(remote) || !to.domain().eq_ignore_ascii_case(local) {
        log::warn!("xmpp inbound {remote}: presence from {from} to {to} outside the authenticated pair {remote} → {local}: dropped");
        return;
    }
    if to.local().is_none() {
        // Presence to the gateway's domain itself (e.g. a probe of the server): nothing to do.
        return;
    }
    super::presence::stanza(b, now, stanza, &from, &to);
}

fn message_from_xmpp(b: &mut Bridge, now: Instant, local: &str, remote: &str, stanza: Element) {
    let kind = stanza.attr("type");
    if kind == Some("error") {
        return error_from_xmpp(b, remote, &stanza);
    }
    let (Some(from), Some(to)) = (jid_attr(&stanza, "from"), jid_attr(&stanza, "to")) else {
        log::info!("xmpp inbound {remote}: message without valid from/to dropped");
        return;
    };
    if !from.domain().eq_ignore_ascii_case(remote) || !to.domain().eq_ignore_ascii_case(local) {
        // The stream layer refuses these (invalid-from, host-unknown); never relay one.
        log::warn!("xmpp inbound {remote}: message from {from} to {to} outside the authenticated pair {remote} → {local}: dropped");
        return;
    }
    if kind == Some("headline") {
        // RFC 6121 §5.2.2: never answered with an error; nothing on the SIP side takes it.
        log::debug!("xmpp inbound {remote}: headline from {from} to {to} ignored");
        return;
    }
    if to.local().is_none() {
        return bounce(
            b,
            &stanza,
            StanzaErrorCondition::ServiceUnavailable,
            "the gateway's domain itself takes no messages",
        );
    }
    let has_body = stanza.child("body", NS_SERVER).is_some();
    if !has_body {
        match ChatState::of_message(&stanza) {
            Some(state) => typing_to_sip(b, now, remote, &from, &to, state),
            None => log::debug!("xmpp inbound {remote}: message without body from {from} ignored"),
        }
        return;
    }
    let from_uri = match jid_to_sip(&from.bare()) {
        Ok(u) => u,
        Err(e) => return bounce(b, &stanza, e.stanza_condition(), &e.to_string()),
    };
    let to_uri = match jid_to_sip(&to.bare()) {
        Ok(u) => u,
        Err(e) => return bounce(b, &stanza, e.stanza_condition(), &e.to_string()),
    };
    let outgoing = match message_to_sip(&stanza, from_uri, to_uri, &b.config.limits) {
        Ok(o) => o,
        Err(e) => {
            let condition = e
                .stanza_condition()
                .unwrap_or(StanzaErrorCondition::BadRequest);
            return bounce(b, &stanza, condition, &e.to_string());
        }
    };
    let pair = pair_key(&to, &from);
    set_typing(b, &to, &from, None, Some(None));
    let mode = b.config.mode_for(remote);
    deliver_to_sip(b, now, pair, stanza, outgoing, mode, &from, &to);
}

#[allow(clippy::too_many_arguments)]
fn deliver_to_sip(
    b: &mut Bridge,
    now: Instant,
    pair: PairKey,
    stanza: Element,
    outgoing: OutgoingMessage,
    mode: ImMode,
    xmpp_user: &Jid,
    sip_user: &Jid,
) {
    if b.im.transactions.len() >= MAX_SIP_TRANSACTIONS {
        return bounce(
            b,
            &stanza,
            StanzaErrorCondition::ResourceConstraint,
            "too many messages in flight",
        );
    }
    match b.im.sessions.get_mut(&pair).map(|s| &mut s.state) {
        Some(SessionState::Established { .. }) => {
            return send_in_session(b, now, pair, stanza, outgoing, false)
        }
        Some(SessionState::Inviting { queue, .. }) => {
            if queue.len() < MAX_SESSION_QUEUE {
                queue.push((stanza, outgoing));
                return;
            }
            return bounce(
                b,
                &stanza,
                StanzaErrorCondition::ResourceConstraint,
                "too many messages waiting for the IM session",
            );
        }
        None => {}
    }
    let domain = outgoing.to.host().to_ascii_lowercase();
    let session = match mode {
        ImMode::Page => false,
        ImMode::Session => true,
        ImMode::Auto => b.im.session_domains.contains(&domain),
    };
    if session {
        open_session(b, now, pair, xmpp_user, sip_user, vec![(stanza, outgoing)]);
    } else {
        send_page(b, pair, stanza, outgoing, mode == ImMode::Auto);
    }
}

fn send_page(
    b: &mut Bridge,
    pair: PairKey,
    stanza: Element,
    outgoing: OutgoingMessage,
    may_switch: bool,
) {
    let built = fresh_request(
        b,
        &Method::Message,
        &outgoing.from,
        &outgoing.to,
        outgoing.call_id.clone(),
    )
    .map_err(|e| e.to_string())
    .and_then(|(mut m, _, _)| {
        outgoing
            .add_to(&mut m)
            .map(|()| m)
            .map_err(|e| e.to_string())
    });
    send_built(b, built, stanza, |stanza| Transaction::Page {
        stanza,
        outgoing,
        pair,
        may_switch,
    });
}

/// Sends the MESSAGE built for `stanza` and remembers it as `transaction` makes it; a
/// MESSAGE that could not be built bounces the stanza.
fn send_built(
    b: &mut Bridge,
    built: Result<MessageBuilder, String>,
    stanza: Element,
    transaction: impl FnOnce(Element) -> Transaction,
) {
    let request = match built {
        Ok(m) => m,
        Err(e) => return bounce(b, &stanza, StanzaErrorCondition::InternalServerError, &e),
    };
    let tag = b.fresh_id();
    b.im.transactions.insert(tag, transaction(stanza));
    b.send_sip(tag, request);
}

fn send_in_session(
    b: &mut Bridge,
    now: Instant,
    pair: PairKey,
    stanza: Element,
    outgoing: OutgoingMessage,
    retried: bool,
) {
    let Some(session) = b.im.sessions.get_mut(&pair) else {
        return send_page(b, pair, stanza, outgoing, false);
    };
    let SessionState::Established { dialog } = &mut session.state else {
        return send_page(b, pair, stanza, outgoing, false);
    };
    session.last_activity = now;
    let built = dialog
        .request(&Method::Message)
        .map_err(|e| e.to_string())
        .and_then(|mut m| {
            outgoing
                .add_to(&mut m)
                .map(|()| m)
                .map_err(|e| e.to_string())
        });
    send_built(b, built, stanza, |stanza| Transaction::InSession {
        stanza,
        outgoing,
        pair,
        retried,
    });
}

fn open_session(
    b: &mut Bridge,
    now: Instant,
    pair: PairKey,
    xmpp_user: &Jid,
    sip_user: &Jid,
    queue: Vec<(Element, OutgoingMessage)>,
) {
    let Some((_, first)) = queue.first() else {
        return;
    };
    let (from, to) = (first.from.clone(), first.to.clone());
    let over = over_quota(b, now, xmpp_user.domain(), QuotaKind::ImSessions);
    if let Some(text) = over {
        for (stanza, _) in queue {
            bounce(b, &stanza, StanzaErrorCondition::ResourceConstraint, &text);
        }
        return;
    }
    if b.im.sessions.len() >= MAX_SESSIONS {
        for (stanza, _) in queue {
            bounce(
                b,
                &stanza,
                StanzaErrorCondition::ResourceConstraint,
                "too many IM sessions",
            );
        }
        return;
    }
    let built =
        fresh_request(b, &Method::Invite, &from, &to, None).and_then(|(mut m, tag, cid)| {
            m.header("Contact", &format!("<{}>", b.config.contact))?
                .body(
                    "application/sdp",
                    im_offer(b.config.sdp_address).into_bytes(),
                )?;
            Ok((m, tag, cid))
        });
    let (request, local_tag, call_id) = match built {
        Ok(x) => x,
        Err(e) => {
            for (stanza, _) in queue {
                bounce(
                    b,
                    &stanza,
                    StanzaErrorCondition::InternalServerError,
                    &e.to_string(),
                );
            }
            return;
        }
    };
    let mut local = NameAddr::new(None, from);
    if local.set_tag(&local_tag).is_err() {
        return;
    }
    let tag = b.fresh_id();
    b.im.sessions.insert(
        pair.clone(),
        Session {
            xmpp_user: xmpp_user.bare(),
            sip_user: sip_user.bare(),
            state: SessionState::Inviting {
                local: Box::new(local),
                call_id,
                queue,
            },
            last_activity: now,
        },
    );
    b.im.transactions.insert(tag, Transaction::Invite { pair });
    b.stats.sessions_opened += 1;
    b.send_sip(tag, request);
}

fn typing_to_sip(
    b: &mut Bridge,
    now: Instant,
    remote: &str,
    from: &Jid,
    to: &Jid,
    state: ChatState,
) {
    let pair = pair_key(to, from);
    let typing = chat_state_to_sip(state);
    // While the XMPP user is composing, SIP hears `active` again before the refresh we
    // announced runs out (RFC 3994 §4); any other state stops that.
    set_typing(b, to, from, None, Some(None));
    if typing == SipTyping::EndSession {
        if matches!(
            b.im.sessions.get(&pair).map(|s| &s.state),
            Some(SessionState::Established { .. })
        ) {
            log::info!("sip session of {to} with {from} ended: {from} is gone");
            end_session(b, &pair, true, false);
        }
        return;
    }
    let request = match b.im.sessions.get_mut(&pair) {
        Some(Session {
            state: SessionState::Established { dialog },
            last_activity,
            ..
        }) => {
            *last_activity = now;
            let Some(activity) = typing.to_keyboard_activity() else {
                return;
            };
            dialog.request(&Method::Info).ok().and_then(|mut m| {
                m.body(
                    KEYBOARD_ACTIVITY_CONTENT_TYPE,
                    activity.to_xml().into_bytes(),
                )
                .ok()?;
                Some(m)
            })
        }
        Some(_) => None,
        None => {
            let (Ok(from_uri), Ok(to_uri)) = (jid_to_sip(&from.bare()), jid_to_sip(&to.bare()))
            else {
                return;
            };
            let page = match b.config.mode_for(remote) {
                ImMode::Page => true,
                ImMode::Session => false,
                ImMode::Auto => !b
                    .im
                    .session_domains
                    .contains(&to_uri.host().to_ascii_lowercase()),
            };
            let Some(doc) = typing.to_iscomposing().filter(|_| page) else {
                // Session mode: typing waits for the session the first message opens.
                return;
            };
            fresh_request(b, &Method::Message, &from_uri, &to_uri, None)
                .ok()
                .and_then(|(mut m, _, _)| {
                    m.body(ISCOMPOSING_CONTENT_TYPE, doc.to_xml().into_bytes())
                        .ok()?;
                    Some(m)
                })
        }
    };
    if let Some(request) = request {
        b.stats.typing += 1;
        let tag = b.fresh_id();
        b.im.transactions
            .insert(tag, Transaction::Quiet { what: "typing" });
        b.send_sip(tag, request);
        if typing == SipTyping::Composing {
            let refresh = now
                + std::time::Duration::from_secs(u64::from(
                    crate::translate::typing::REFRESH_SECS.saturating_sub(10),
                ));
            set_typing(b, to, from, None, Some(Some(refresh)));
        }
    }
}

pub(super) fn sip_outcome(b: &mut Bridge, now: Instant, tag: TxTag, outcome: SipOutcome) {
    let Some(tx) = b.im.transactions.remove(&tag) else {
        return;
    };
    match tx {
        Transaction::Page {
            stanza,
            outgoing,
            pair,
            may_switch,
        } => match outcome {
            SipOutcome::Final(r) if r.status.is_success() => delivered(b, &stanza),
            SipOutcome::Final(r)
                if may_switch && PAGE_MODE_REFUSED.contains(&r.status.as_u16()) =>
            {
                let domain = outgoing.to.host().to_ascii_lowercase();
                log::info!(
                    "sip: the Edge refused a page-mode MESSAGE for {domain} with {} {}: using IM sessions for {domain} from now on",
                    r.status.as_u16(),
                    r.reason
                );
                b.im.session_domains.insert(domain);
                let (Some(xmpp_user), Some(sip_user)) =
                    (jid_attr(&stanza, "from"), jid_attr(&stanza, "to"))
                else {
                    return;
                };
                open_session(
                    b,
                    now,
                    pair,
                    &xmpp_user,
                    &sip_user,
                    vec![(stanza, outgoing)],
                );
            }
            SipOutcome::Final(r) => bounce_status(b, &stanza, r.status, &r.reason),
            SipOutcome::Failed(why) => {
                bounce(b, &stanza, StanzaErrorCondition::RemoteServerTimeout, &why)
            }
        },
        Transaction::InSession {
            stanza,
            outgoing,
            pair,
            retried,
        } => match outcome {
            SipOutcome::Final(r) if r.status.is_success() => delivered(b, &stanza),
            SipOutcome::Final(r) if r.status == StatusCode::CALL_DOES_NOT_EXIST && !retried => {
                // The Edge forgot the session: start again with this message.
                end_session(b, &pair, false, false);
                let (Some(xmpp_user), Some(sip_user)) =
                    (jid_attr(&stanza, "from"), jid_attr(&stanza, "to"))
                else {
                    return;
                };
                let mode = b.config.mode_for(xmpp_user.domain());
                deliver_to_sip(b, now, pair, stanza, outgoing, mode, &xmpp_user, &sip_user);
            }
            SipOutcome::Final(r) => bounce_status(b, &stanza, r.status, &r.reason),
            SipOutcome::Failed(why) => {
                bounce(b, &stanza, StanzaErrorCondition::RemoteServerTimeout, &why)
            }
        },
        Transaction::Invite { pair } => invite_outcome(b, now, pair, outcome),
        Transaction::Quiet { what } => match outcome {
            SipOutcome::Final(r) if r.status.is_success() => {}
            SipOutcome::Final(r) => {
                log::debug!("sip: {what} answered {} {}", r.status.as_u16(), r.reason)
            }
            SipOutcome::Failed(why) => log::debug!("sip: {what} failed: {why}"),
        },
    }
}

fn invite_outcome(b: &mut Bridge, now: Instant, pair: PairKey, outcome: SipOutcome) {
    let Some(session) = b.im.sessions.remove(&pair) else {
        return;
    };
    let SessionState::Inviting {
        local,
        call_id,
        queue,
    } = session.state
    else {
        b.im.sessions.insert(pair, session);
        return;
    };
    let response = match outcome {
        SipOutcome::Final(r) if r.status.is_success() => r,
        SipOutcome::Final(r) => {
            log::info!(
                "sip: IM session of {} with {} refused: {} {}",
                pair.xmpp,
                pair.sip,
                r.status.as_u16(),
                r.reason
            );
            for (stanza, _) in queue {
                bounce_status(b, &stanza, r.status, &r.reason);
            }
            return;
        }
        SipOutcome::Failed(why) => {
            for (stanza, _) in queue {
                bounce(b, &stanza, StanzaErrorCondition::RemoteServerTimeout, &why);
            }
            return;
        }
    };
    let remote_target = response.contact.iter().find_map(|c| match c {
        Contact::Addr(a) => Some(a.uri.clone()),
        Contact::Star => None,
    });
    let (Some(remote_tag), Some(remote_target)) = (response.to.tag(), remote_target) else {
        for (stanza, _) in queue {
            bounce(
                b,
                &stanza,
                StanzaErrorCondition::InternalServerError,
                "the Edge's 200 to our INVITE lacks a To tag or Contact",
            );
        }
        return;
    };
    let mut route_set = response.record_route.clone();
    route_set.reverse();
    let dialog = Dialog {
        id: DialogId {
            call_id,
            local_tag: local.tag().unwrap_or_default().to_owned(),
            remote_tag: remote_tag.to_owned(),
        },
        kind: DialogKind::Invite,
        state: DialogState::Confirmed,
        local: *local,
        remote: response.to.clone(),
        local_seq: 1,
        remote_seq: None,
        remote_target,
        route_set,
    };
    if let Ok(mut ack) = dialog.ack(1) {
        let branch = format!("z9hG4bK{}", b.random_hex(8));
        let via = format!("SIP/2.0/TLS {};branch={branch}", b.config.via_sent_by);
        if ack.prepend_header("Via", &via).is_ok() && ack.header("Max-Forwards", "70").is_ok() {
            b.actions.push_back(Action::SendSipStateless {
                request: Box::new(ack),
            });
        }
    }
    log::info!("sip session opened with {} for {}", pair.sip, pair.xmpp);
    b.im.dialogs.insert(dialog.id.clone(), pair.clone());
    b.im.sessions.insert(
        pair.clone(),
        Session {
            state: SessionState::Established {
                dialog: Box::new(dialog),
            },
            last_activity: now,
            ..session
        },
    );
    for (stanza, outgoing) in queue {
        send_in_session(b, now, pair.clone(), stanza, outgoing, false);
    }
}

fn delivered(b: &mut Bridge, stanza: &Element) {
    b.stats.xmpp_to_sip_delivered += 1;
    log::debug!(
        "xmpp → sip: message from {} to {} delivered",
        stanza.attr("from").unwrap_or("?"),
        stanza.attr("to").unwrap_or("?")
    );
}

fn bounce_status(b: &mut Bridge, stanza: &Element, status: StatusCode, reason: &str) {
    let condition = sip_to_xmpp(status)
        .map(|(_, c)| c)
        .unwrap_or(StanzaErrorCondition::UndefinedCondition);
    bounce(
        b,
        stanza,
        condition,
        &format!("SIP {} {reason}", status.as_u16()),
    );
}

/// Answers `stanza` with an error (never an error to an error), from the gateway's domain.
fn bounce(b: &mut Bridge, stanza: &Element, condition: StanzaErrorCondition, text: &str) {
    let to_domain = jid_attr(stanza, "to").map(|j| j.domain().to_owned());
    let mut error = StanzaError::new(condition).with_text(text);
    if let Some(by) = &to_domain {
        error = error.with_by(by.as_str());
    }
    if let Some(reply) = error_reply(stanza, &error) {
        b.stats.xmpp_to_sip_bounced += 1;
        log::info!(
            "xmpp → sip: <{}/> from {} to {} answered {condition}: {text}",
            stanza.name,
            stanza.attr("from").unwrap_or("?"),
            stanza.attr("to").unwrap_or("?")
        );
        b.send_stanza(reply, None);
    }
}

/// An id for a stanza we send: `xsgw-` and `kind`, then [`ID_RANDOM_BYTES`] from the bridge's
/// random source, so that only whoever received the stanza can answer it (an error or a
/// ping result with a guessed id would otherwise answer another partner's message).
fn unguessable_id(b: &mut Bridge, kind: &str) -> String {
    format!("xsgw-{kind}{}", b.random_hex(ID_RANDOM_BYTES))
}

/// 128 random bits per stanza id.
const ID_RANDOM_BYTES: usize = 16;

/// An error stanza from `remote`: it answers the message with its id only if that message
/// went to `remote` (another partner that learnt or guessed the id is ignored, and the
/// message still gets its own answer).
fn error_from_xmpp(b: &mut Bridge, remote: &str, stanza: &Element) {
    let receipt = stanza
        .attr("id")
        .and_then(|id| b.im.by_stanza_id.get(id).copied())
        .filter(|receipt| {
            b.im.waiting
                .get(receipt)
                .is_some_and(|w| w.pair.1.eq_ignore_ascii_case(remote))
        });
    let error = stanza
        .child("error", NS_SERVER)
        .and_then(|e| StanzaError::from_element(e, NS_SERVER).ok());
    let (condition, text) = match error {
        Some(e) => (e.condition, e.text),
        None => (StanzaErrorCondition::UndefinedCondition, None),
    };
    match receipt {
        Some(receipt) => finish_err(b, receipt, condition, text),
        None => log::debug!(
            "xmpp inbound {remote}: error {condition} for {} ignored (unknown, already answered, or not sent to {remote})",
            crate::logsafe::escaped(stanza.attr("id").unwrap_or("?"))
        ),
    }
}

fn iq_from_xmpp(b: &mut Bridge, local: &str, remote: &str, stanza: Element) {
    match stanza.attr("type") {
        Some("result") | Some("error") => {
            let id = stanza.attr("id").unwrap_or_default();
            if !barrier_answered(b, id, remote) {
                log::debug!(
                    "xmpp inbound {remote}: iq {} not ours, ignored",
                    crate::logsafe::escaped(id)
                );
            }
        }
        Some("get") | Some("set") => {
            let to_domain = jid_attr(&stanza, "to").is_some_and(|j| j.local().is_none());
            let get = stanza.attr("type") == Some("get");
            let payload = stanza.elements().next();
            let answer = match payload {
                // XEP-0199 server ping: partners may use it as we do.
                Some(p) if get && to_domain && p.is("ping", NS_PING) => Some(None),
                Some(p) if get && to_domain && p.is("query", NS_DISCO_INFO) => Some(Some(
                    Element::new("query", NS_DISCO_INFO)
                        .with_child(
                            Element::new("identity", NS_DISCO_INFO)
                                .with_attr("category", "gateway")
                                .with_attr("type", "sip")
                                .with_attr("name", "xsgw"),
                        )
                        .with_child(
                            Element::new("feature", NS_DISCO_INFO).with_attr("var", NS_DISCO_INFO),
                        )
                        .with_child(
                            Element::new("feature", NS_DISCO_INFO).with_attr("var", NS_PING),
                        ),
                )),
                _ => None,
            };
            match answer {
                Some(payload) => {
                    let mut result = Element::new("iq", NS_SERVER)
                        .with_attr("type", "result")
                        .with_attr("from", stanza.attr("to").unwrap_or(local))
                        .with_opt_attr("to", stanza.attr("from"))
                        .with_opt_attr("id", stanza.attr("id"));
                    if let Some(p) = payload {
                        result = result.with_child(p);
                    }
                    b.send_stanza(result, None);
                }
                None => bounce(
                    b,
                    &stanza,
                    StanzaErrorCondition::ServiceUnavailable,
                    "not served by the gateway",
                ),
            }
        }
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------
// Quotas (`quota.rs`)

impl Partnered<PairKey> for Session {
    fn partner_domain<'a>(&'a self, key: &'a PairKey) -> &'a str {
        domain_of(&key.xmpp)
    }
}

impl Partnered<Receipt> for Waiting {
    fn partner_domain<'a>(&'a self, _: &'a Receipt) -> &'a str {
        &self.pair.1
    }
}

/// `Some(why)` when the partner of `domain` holds its quota of `kind` (IM sessions or
/// waiting deliveries) already; the hit is logged (rate-limited).
fn over_quota(b: &mut Bridge, now: Instant, domain: &str, kind: QuotaKind) -> Option<String> {
    let (partner, q) = b.config.quotas.partner(domain);
    let (held, limit) = match kind {
        QuotaKind::ImSessions => (
            b.im.sessions.count(&b.config.quotas, &partner),
            q.im_sessions,
        ),
        _ => (
            b.im.waiting.count(&b.config.quotas, &partner),
            q.waiting_deliveries,
        ),
    };
    if held < limit {
        return None;
    }
    b.quota.hit(now, &partner, kind, limit as u64);
    Some(format!(
        "{partner} is at its quota of {limit} {} at this gateway",
        kind.key().replace('_', " ")
    ))
}
