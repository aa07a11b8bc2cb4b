//! Presence and presence subscriptions (RFC 8048) around the sans-IO
//! [`Subscription`](crate::translate::presence::Subscription) core: one per (direction, SIP
//! user, XMPP user), its SIP dialog, its timer, and the file line that survives a restart.
//!
//! ```text
//!  outbound (XMPP user U watches SIP user S; xsgw subscribes):
//!    <presence type=subscribe/unsubscribe/probe> from U to S ─▶ core ─▶ SUBSCRIBE (Event presence)
//!    NOTIFY (PIDF) from the Edge ─▶ core ─▶ <presence/> from S to U (only when Active)
//!  inbound (SIP user S watches XMPP user U; xsgw is the notifier):
//!    SUBSCRIBE from the Edge ─▶ core ─▶ 200 + NOTIFY pending, <presence type=subscribe/> to U
//!    <presence type=subscribed/unsubscribed> from U ─▶ core ─▶ NOTIFY active / terminated
//!    <presence/> from U to S ─▶ core ─▶ NOTIFY active with PIDF (only when Active)
//! ```
//!
//! Lookups are by the pair (O(1)): a partner's server sends U's presence to each contact S
//! in its own stanza, so "fan-out" is one stanza → one NOTIFY here. Presence of an XMPP user
//! is remembered per resource only while some SIP user watches that user (an inbound
//! subscription pending or active), in a cache bounded in bytes per partner and in total
//! (`presence_cache.rs`); nobody else's presence is kept. Whether an XMPP user is online
//! (so that coming online, not each status change, refreshes what the user watches) is kept
//! apart, as 64-bit hashes, for users with a subscription here.
//!
//! Quotas (`quota.rs`): a new subscription counts against the partner domain of its XMPP
//! user: `subscriptions` (both directions) and `pending_subscriptions`, besides the
//! gateway's [`MAX_SUBSCRIPTIONS`]. Refused: an XMPP `subscribe`/`subscribed` gets
//! `resource-constraint`; a SIP SUBSCRIBE gets 403 with a Warning naming the quota (503 only
//! for the gateway-wide total, as before).
//!
//! Persistence: each change marks its subscription changed; at most once per
//! [`SAVE_EVERY`] the bridge hands the router the changed subscriptions' lines (or their
//! removal) as [`super::Action::SaveSubscriptions`], and the router passes them to the state
//! writer thread, which owns the saved table (`gateway::state`). So a change costs the
//! router the lines that changed, whatever the number of subscriptions. An inbound
//! subscription keeps its SIP dialog in its line, so NOTIFYs continue in the same dialog
//! after a restart; outbound ones re-subscribe in a new dialog (the core's choice).

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::BuildHasher;
use std::time::{Duration, Instant};

use super::outside_dialog::fresh_request;
use super::presence_cache::{PresenceCache, Resources};
use super::quota::{domain_of, Counts, QuotaKind};
use super::{Action, Answer, Bridge, RequestId, SipOutcome, SubscriptionChange, TxTag};
use crate::sip::dialog::{Dialog, DialogId, DialogKind, DialogState};
use crate::sip::{Contact, Method, NameAddr, Request, Response, StatusCode, Uri};
use crate::translate::address::{jid_to_sip, sip_to_jid};
use crate::translate::pidf::{Pidf, CONTENT_TYPE as PIDF_TYPE};
use crate::translate::presence::{
    is_presence_event, notify_headers, pidf_from_presence, presences_by_tuple, subscribe_headers,
    subscription_key, Action as CoreAction, DialogUse, Direction, Event, NotifyState, PresenceKind,
    ResourcePresence, Subscription, SubscriptionState, XmppPresence, DEFAULT_EXPIRES,
};
use crate::xmpp::element::Element;
use crate::xmpp::jid::Jid;

/// The table is written at most this often (changes in between are written together).
pub const SAVE_EVERY: Duration = Duration::from_secs(1);
/// At most this many subscriptions; more SUBSCRIBEs get 503 and more XMPP requests an error.
pub const MAX_SUBSCRIPTIONS: usize = 200_000;
/// At most this many resources of one XMPP user are remembered.
const MAX_RESOURCES: usize = 16;
/// At most this many XMPP users' online state is tracked (beyond: taken as online, so no
/// refresh is sent for them).
const MAX_ONLINE: usize = MAX_SUBSCRIPTIONS;

type SubKey = (Direction, String, String);

#[derive(Default)]
pub(super) struct PresenceState {
    subs: HashMap<SubKey, Sub>,
    /// Live SIP subscription dialogs → subscription.
    dialogs: HashMap<DialogId, SubKey>,
    /// Our SUBSCRIBEs not yet answered, by (Call-ID, our tag): a NOTIFY may come first
    /// (RFC 6665 §4.1.2.4), and fetch NOTIFYs come in such a dialog.
    early: HashMap<(String, String), (SubKey, bool)>,
    /// Our SUBSCRIBE and NOTIFY transactions.
    txs: HashMap<TxTag, SubTx>,
    /// Subscription timers; an entry is stale when the core's timer moved.
    timers: BTreeMap<(Instant, u64), SubKey>,
    timer_seq: u64,
    /// Last known presence of watched XMPP users (bare JID → resource → presence).
    cache: PresenceCache,
    /// The presence being handled when the cache could not keep it (over budget): its
    /// NOTIFYs still say what it says.
    current: Option<(String, Resources)>,
    /// Inbound subscriptions pending or active, per XMPP user: who is watched.
    watchers: HashMap<String, u32>,
    /// Subscriptions and pending ones per partner domain (of the XMPP user).
    per_partner: Counts,
    pending: Counts,
    /// Online XMPP users with a subscription here: hash of the bare JID → hashes of its
    /// available resources.
    online: HashMap<u64, Vec<u64>>,
    hasher: RandomState,
    /// Subscriptions changed since the last save.
    changed: HashSet<SubKey>,
    last_save: Option<Instant>,
    /// Dialogs of subscriptions that just ended (bounded, oldest forgotten first): the final
    /// NOTIFY a notifier sends after our unsubscribe is answered 200, not 481.
    ended: std::collections::VecDeque<DialogId>,
}

/// How many unanswered SUBSCRIBEs (and fetches awaiting their NOTIFY) are tracked.
const MAX_EARLY: usize = 50_000;
/// How many ended dialogs are remembered.
const MAX_ENDED: usize = 4096;

fn forget_dialog(state: &mut PresenceState, dialog: &Dialog) {
    state.dialogs.remove(&dialog.id);
    if state.ended.len() >= MAX_ENDED {
        state.ended.pop_front();
    }
    state.ended.push_back(dialog.id.clone());
}

struct Sub {
    core: Subscription,
    dialog: Option<Box<Dialog>>,
}

enum SubTx {
    Subscribe {
        key: SubKey,
        fetch: bool,
        call_id: String,
        our_tag: String,
    },
    Notify {
        key: SubKey,
    },
}

fn lower(jid: &Jid) -> String {
    jid.bare().to_string().to_lowercase()
}

impl PresenceState {
    pub(super) fn len(&self) -> usize {
        self.subs.len()
    }

    /// Whether `jid`'s presence is cached.
    #[cfg(test)]
    pub(super) fn cached(&self, jid: &str) -> bool {
        self.cache.get(jid).is_some()
    }

    pub(super) fn cache_bytes(&self, partner: &str) -> (usize, usize) {
        (self.cache.partner_bytes(partner), self.cache.total_bytes())
    }

    /// The next subscription timer or save. `past`: an instant already gone (the bridge's
    /// start), the due time of a first save, which need not wait.
    pub(super) fn next_timer(&self, past: Instant) -> Option<Instant> {
        let timer = self.timers.keys().next().map(|(at, _)| *at);
        let save =
            (!self.changed.is_empty()).then(|| self.last_save.map_or(past, |t| t + SAVE_EVERY));
        [timer, save].into_iter().flatten().min()
    }
}

// ---------------------------------------------------------------------------------------
// Driving the core

/// Feeds `event` to the subscription `key` (created if `create`), then carries out what it
/// says. `request` is the SIP request being handled (SUBSCRIBE or NOTIFY), if any.
fn drive(
    b: &mut Bridge,
    now: Instant,
    key: &SubKey,
    event: Event,
    request: Option<(RequestId, &Request)>,
    notify_body: Option<&Pidf>,
) {
    let Some(sub) = b.presence.subs.get_mut(key) else {
        return;
    };
    let before = sub.core.state();
    let actions = sub.core.handle(event, now);
    for action in actions {
        match action {
            CoreAction::SendSubscribe { expires, dialog } => {
                send_subscribe(b, now, key, expires, dialog)
            }
            CoreAction::RespondSubscribe { status, expires } => {
                if let Some((id, req)) = request {
                    respond_subscribe(b, key, id, req, status, expires);
                }
            }
            CoreAction::RespondNotify { status } => {
                if let Some((id, _)) = request {
                    let status = StatusCode::new(status).unwrap_or(StatusCode::OK);
                    b.respond(id, status, None);
                }
            }
            CoreAction::SendNotify {
                state,
                with_presence,
            } => send_notify(b, key, &state, with_presence),
            CoreAction::SendXmpp { kind } => send_xmpp(b, key, kind),
            CoreAction::ForwardPresence => {
                if let Some(pidf) = notify_body {
                    forward_presence(b, key, pidf);
                }
            }
            CoreAction::SetTimer { at } => {
                b.presence.timer_seq += 1;
                let seq = b.presence.timer_seq;
                b.presence.timers.insert((at, seq), key.clone());
            }
            CoreAction::Persist => {
                b.presence.changed.insert(key.clone());
            }
            CoreAction::Forget => {
                if let Some(sub) = b.presence.subs.remove(key) {
                    if let Some(d) = sub.dialog {
                        forget_dialog(&mut b.presence, &d);
                    }
                }
                b.presence.changed.insert(key.clone());
            }
        }
    }
    // A subscription that never got anywhere (a fetch, an unknown NOTIFY) leaves nothing.
    if b.presence
        .subs
        .get(key)
        .is_some_and(|s| s.core.state() == SubscriptionState::None)
    {
        if let Some(sub) = b.presence.subs.remove(key) {
            if let Some(d) = sub.dialog {
                b.presence.dialogs.remove(&d.id);
            }
        }
    }
    let after = b.presence.subs.get(key).map(|s| s.core.state());
    account(&mut b.presence, key, Some(before), after);
}

/// Keeps the per-partner counts and the watched users in step with a subscription that went
/// from `before` to `after` (`None`: not in the table).
fn account(
    state: &mut PresenceState,
    key: &SubKey,
    before: Option<SubscriptionState>,
    after: Option<SubscriptionState>,
) {
    use SubscriptionState as S;
    let domain = domain_of(&key.2);
    match (before.is_some(), after.is_some()) {
        (false, true) => state.per_partner.add(domain),
        (true, false) => state.per_partner.sub(domain),
        _ => {}
    }
    let pending = |s: Option<S>| s == Some(S::Pending);
    if pending(before) != pending(after) {
        if pending(after) {
            state.pending.add(domain);
        } else {
            state.pending.sub(domain);
        }
    }
    let watching =
        |s: Option<S>| key.0 == Direction::Inbound && matches!(s, Some(S::Pending | S::Active));
    if watching(before) != watching(after) {
        if watching(after) {
            *state.watchers.entry(key.2.clone()).or_default() += 1;
        } else if let Some(n) = state.watchers.get_mut(&key.2) {
            *n -= 1;
            if *n == 0 {
                // Nobody watches this user any more: nothing of its presence is kept.
                state.watchers.remove(&key.2);
                state.cache.remove(&key.2);
            }
        }
    }
}

/// Why a new subscription was refused.
enum Refused {
    /// The gateway holds [`MAX_SUBSCRIPTIONS`].
    Full,
    /// The XMPP user's partner is at one of its quotas.
    Quota {
        partner: String,
        kind: QuotaKind,
        limit: usize,
    },
}

/// The subscription `key`, created if it does not exist and the quotas allow; `pends` says
/// whether a new one starts pending (then the partner's pending quota applies too).
fn entry<'a>(
    b: &'a mut Bridge,
    now: Instant,
    key: &SubKey,
    pends: bool,
) -> Result<&'a mut Sub, Refused> {
    if !b.presence.subs.contains_key(key) {
        if b.presence.subs.len() >= MAX_SUBSCRIPTIONS {
            return Err(Refused::Full);
        }
        let (partner, q) = b.config.quotas.partner(domain_of(&key.2));
        let quotas = &b.config.quotas;
        let over = if b.presence.per_partner.of(quotas, &partner) >= q.subscriptions {
            Some((QuotaKind::Subscriptions, q.subscriptions))
        } else if pends && b.presence.pending.of(quotas, &partner) >= q.pending_subscriptions {
            Some((QuotaKind::PendingSubscriptions, q.pending_subscriptions))
        } else {
            None
        };
        if let Some((kind, limit)) = over {
            b.quota.hit(now, &partner, kind, limit as u64);
            return Err(Refused::Quota {
                partner,
                kind,
                limit,
            });
        }
        b.presence.subs.insert(
            key.clone(),
            Sub {
                core: Subscription::new(key.0, &key.1, &key.2),
                dialog: None,
            },
        );
        account(&mut b.presence, key, None, Some(SubscriptionState::None));
    }
    b.presence.subs.get_mut(key).ok_or(Refused::Full)
}

// ---------------------------------------------------------------------------------------
// XMPP side

/// A `<presence/>` from `from` (a partner's user) to `to` (a hosted SIP user's JID).
pub(super) fn stanza(b: &mut Bridge, now: Instant, stanza: &Element, from: &Jid, to: &Jid) {
    let Ok(presence) = XmppPresence::from_element(stanza) else {
        log::debug!("xmpp inbound: presence from {from} not understood, ignored");
        return;
    };
    let (sip, xmpp) = (lower(to), lower(from));
    let outbound = (Direction::Outbound, sip.clone(), xmpp.clone());
    let inbound = (Direction::Inbound, sip, xmpp.clone());
    match presence.kind {
        PresenceKind::Subscribe => {
            if let Err(why) = entry(b, now, &outbound, true) {
                return refuse_xmpp(b, stanza, why);
            }
            drive(b, now, &outbound, Event::XmppSubscribe, None, None);
        }
        PresenceKind::Unsubscribe => drive(b, now, &outbound, Event::XmppUnsubscribe, None, None),
        PresenceKind::Probe => drive(b, now, &outbound, Event::XmppProbe, None, None),
        PresenceKind::Subscribed => {
            if let Err(why) = entry(b, now, &inbound, false) {
                return refuse_xmpp(b, stanza, why);
            }
            drive(b, now, &inbound, Event::XmppSubscribed, None, None);
        }
        PresenceKind::Unsubscribed => drive(b, now, &inbound, Event::XmppUnsubscribed, None, None),
        PresenceKind::Available | PresenceKind::Unavailable => {
            let tracked = b.presence.subs.contains_key(&outbound);
            let was_online = track_online(b, from, &xmpp, presence.kind, tracked);
            if b.presence.watchers.contains_key(&xmpp) {
                remember(b, now, from, &xmpp, presence.clone());
            }
            drive(b, now, &inbound, Event::XmppPresence, None, None);
            b.presence.current = None;
            // Coming online (not every status change) refreshes what the user watches.
            if presence.kind == PresenceKind::Available && !was_online {
                drive(b, now, &outbound, Event::XmppAvailable, None, None);
            }
        }
        _ => {}
    }
}

/// Answers a refused `subscribe`/`subscribed` with `resource-constraint`.
fn refuse_xmpp(b: &mut Bridge, stanza: &Element, why: Refused) {
    match why {
        Refused::Full => {
            use crate::xmpp::error::{error_reply, StanzaError, StanzaErrorCondition};
            let error = StanzaError::new(StanzaErrorCondition::ResourceConstraint)
                .with_text("too many presence subscriptions at the gateway");
            if let Some(reply) = error_reply(stanza, &error) {
                b.send_stanza(reply, None);
            }
        }
        Refused::Quota { kind, .. } => b.refuse_stanza(stanza, kind),
    }
}

/// Keeps the watched XMPP user's presence per resource for NOTIFY bodies, within the
/// partner's and the total byte budget. An `unavailable` is kept too (closed, with its
/// status text) until that user is available again somewhere.
fn remember(b: &mut Bridge, now: Instant, from: &Jid, bare: &str, presence: XmppPresence) {
    let resource = from.resource().unwrap_or_default().to_owned();
    let (partner, q) = b.config.quotas.partner(domain_of(bare));
    let total = b.config.quotas.presence_cache_total;
    let evicted = b
        .presence
        .cache
        .update(bare, &partner, q.presence_cache, total, |resources| {
            if presence.kind == PresenceKind::Available {
                resources.retain(|_, p| p.kind == PresenceKind::Available);
            } else if resource.is_empty() {
                resources.clear();
            } else if resources
                .iter()
                .any(|(r, p)| r != &resource && p.kind == PresenceKind::Available)
            {
                // Another resource is still online: this one just leaves the document.
                resources.remove(&resource);
                return;
            }
            if resources.len() < MAX_RESOURCES || resources.contains_key(&resource) {
                resources.insert(resource, presence);
            }
        });
    if evicted.partner > 0 {
        b.quota.hit(
            now,
            &partner,
            QuotaKind::PresenceCache,
            q.presence_cache as u64,
        );
    }
    if let Some(refused) = evicted.refused {
        // Over budget by itself: not kept, but the NOTIFYs for this stanza say it.
        b.presence.current = Some((bare.to_owned(), refused));
    }
}

/// Notes whether the XMPP user is online (a hash per available resource), for users with a
/// subscription here (`tracked`) or already noted; returns whether it was online before.
fn track_online(b: &mut Bridge, from: &Jid, bare: &str, kind: PresenceKind, tracked: bool) -> bool {
    let state = &mut b.presence;
    let user = state.hasher.hash_one(bare);
    let resource = state.hasher.hash_one(from.resource().unwrap_or_default());
    let was_online = match state.online.get(&user) {
        Some(r) => !r.is_empty(),
        // Beyond the bound nobody new is tracked: taken as online (no refresh storm).
        None => state.online.len() >= MAX_ONLINE,
    };
    if !tracked && !state.online.contains_key(&user) {
        return was_online;
    }
    if kind == PresenceKind::Available {
        if state.online.len() < MAX_ONLINE || state.online.contains_key(&user) {
            let r = state.online.entry(user).or_default();
            if !r.contains(&resource) && r.len() < MAX_RESOURCES {
                r.push(resource);
            }
        }
    } else if let Some(r) = state.online.get_mut(&user) {
        if from.resource().is_none() {
            r.clear();
        } else {
            r.retain(|x| *x != resource);
        }
        if r.is_empty() {
            state.online.remove(&user);
        }
    }
    was_online
}

fn send_xmpp(b: &mut Bridge, key: &SubKey, kind: PresenceKind) {
    let mut p = XmppPresence::new(kind).to_element();
    p.set_attr("from", key.1.as_str());
    p.set_attr("to", key.2.as_str());
    b.send_stanza(p, None);
}

fn forward_presence(b: &mut Bridge, key: &SubKey, pidf: &Pidf) {
    for (resource, presence) in presences_by_tuple(pidf) {
        let mut p = presence.to_element();
        let from = match resource.filter(|r| !r.is_empty()) {
            Some(r) => format!("{}/{}", key.1, r),
            None => key.1.clone(),
        };
        // A resource that cannot be part of a JID is dropped rather than sent broken.
        let from = if from.parse::<Jid>().is_ok() {
            from
        } else {
            key.1.clone()
        };
        p.set_attr("from", from);
        p.set_attr("to", key.2.as_str());
        b.send_stanza(p, None);
    }
}

// ---------------------------------------------------------------------------------------
// SIP side

fn sip_uri(jid_text: &str) -> Option<Uri> {
    jid_to_sip(&jid_text.parse::<Jid>().ok()?).ok()
}

/// A SUBSCRIBE or NOTIFY from the Edge.
pub(super) fn sip_request(b: &mut Bridge, now: Instant, id: RequestId, req: &Request) {
    if !req.event.as_ref().is_some_and(is_presence_event) {
        return b.respond(
            id,
            StatusCode::BAD_EVENT,
            Some("only the presence event package is served".into()),
        );
    }
    match req.method {
        Method::Subscribe => subscribe_from_sip(b, now, id, req),
        _ => notify_from_sip(b, now, id, req),
    }
}

fn subscribe_from_sip(b: &mut Bridge, now: Instant, id: RequestId, req: &Request) {
    let expires = req.expires.unwrap_or(DEFAULT_EXPIRES);
    if req.to.tag().is_some() {
        // A refresh or an unsubscribe in the subscription's dialog.
        let key = DialogId::of_request(req).and_then(|d| b.presence.dialogs.get(&d).cloned());
        let Some(key) = key else {
            return b.respond(id, StatusCode::CALL_DOES_NOT_EXIST, None);
        };
        if let Some(Some(dialog)) = b.presence.subs.get_mut(&key).map(|s| s.dialog.as_mut()) {
            if let Err(e) = dialog.handle_request(req) {
                return b.respond(id, e.status(), Some(e.to_string()));
            }
        }
        let event = Event::SipSubscribe {
            expires,
            new_dialog: false,
        };
        return drive(b, now, &key, event, Some((id, req)), None);
    }
    let from_host = req.from.uri.host().to_ascii_lowercase();
    if !b.config.is_hosted(&from_host) {
        return b.respond(
            id,
            StatusCode::FORBIDDEN,
            Some(format!("sender domain {from_host} is not hosted here")),
        );
    }
    let (sip, xmpp) = match (sip_to_jid(&req.from.uri), sip_to_jid(&req.uri)) {
        (Ok(s), Ok(x)) => (s, x),
        (Err(e), _) | (_, Err(e)) => {
            return b.respond(id, e.sip_status(), Some(format!("cannot be mapped: {e}")))
        }
    };
    let key = (Direction::Inbound, lower(&sip), lower(&xmpp));
    let local_tag = b.random_hex(8);
    let dialog = match Dialog::uas(req, &local_tag) {
        Ok(d) => d,
        Err(e) => return b.respond(id, e.status(), Some(e.to_string())),
    };
    let sub = match entry(b, now, &key, true) {
        Ok(sub) => sub,
        Err(Refused::Full) => {
            return b.respond(
                id,
                StatusCode::SERVICE_UNAVAILABLE,
                Some("too many presence subscriptions".into()),
            )
        }
        Err(Refused::Quota {
            partner,
            kind,
            limit,
        }) => {
            return b.respond(
                id,
                StatusCode::FORBIDDEN,
                Some(format!(
                    "{partner} is at its quota of {limit} {} at this gateway",
                    kind.key().replace('_', " ")
                )),
            )
        }
    };
    // A new SUBSCRIBE (dialog) replaces the subscription's old dialog, except a fetch
    // (Expires 0), which lives only for its final NOTIFY.
    let old = if expires > 0 {
        sub.dialog.replace(Box::new(dialog.clone()))
    } else {
        None
    };
    if let Some(old) = old {
        b.presence.dialogs.remove(&old.id);
    }
    if expires > 0 {
        b.presence.dialogs.insert(dialog.id.clone(), key.clone());
        store_dialog(b, &key);
    }
    let fetch_dialog = (expires == 0).then_some(dialog);
    with_fetch_dialog(b, &key, fetch_dialog, |b| {
        let event = Event::SipSubscribe {
            expires,
            new_dialog: true,
        };
        drive(b, now, &key, event, Some((id, req)), None);
    });
    log::debug!("sip presence: {} subscribes to {}", key.1, key.2);
}

/// Runs `f` with `fetch` as the subscription's dialog (the NOTIFY of an Expires 0 SUBSCRIBE
/// goes in that new dialog), then puts the real one back.
fn with_fetch_dialog(
    b: &mut Bridge,
    key: &SubKey,
    fetch: Option<Dialog>,
    f: impl FnOnce(&mut Bridge),
) {
    let Some(fetch) = fetch else {
        return f(b);
    };
    let saved = b
        .presence
        .subs
        .get_mut(key)
        .and_then(|s| s.dialog.replace(Box::new(fetch)));
    f(b);
    if let Some(sub) = b.presence.subs.get_mut(key) {
        sub.dialog = saved;
    }
}

fn respond_subscribe(
    b: &mut Bridge,
    key: &SubKey,
    id: RequestId,
    req: &Request,
    status: u16,
    expires: u32,
) {
    let status = StatusCode::new(status).unwrap_or(StatusCode::OK);
    let local_tag = b
        .presence
        .subs
        .get(key)
        .and_then(|s| s.dialog.as_ref())
        .map(|d| d.id.local_tag.clone())
        .or_else(|| req.to.tag().map(str::to_owned))
        .unwrap_or_else(|| b.random_hex(8));
    let built = Dialog::answer(req, status, &local_tag, &b.config.contact).and_then(|mut m| {
        if status == StatusCode::OK {
            m.header("Expires", &expires.to_string())?;
        } else {
            m.header("Min-Expires", &expires.to_string())?;
        }
        Ok(m)
    });
    match built {
        Ok(m) => b.actions.push_back(Action::Respond {
            request: id,
            answer: Answer::Built(Box::new(m)),
        }),
        Err(e) => b.respond(id, StatusCode::SERVER_INTERNAL_ERROR, Some(e.to_string())),
    }
}

fn send_notify(b: &mut Bridge, key: &SubKey, state: &NotifyState, with_presence: bool) {
    let body = with_presence.then(|| notify_body(b, key)).flatten();
    let Some(sub) = b.presence.subs.get_mut(key) else {
        return;
    };
    let Some(dialog) = sub.dialog.as_mut() else {
        return;
    };
    let Ok(mut m) = dialog.request(&Method::Notify) else {
        return;
    };
    let mut ok = m
        .header("Contact", &format!("<{}>", b.config.contact))
        .is_ok();
    for (name, value) in notify_headers(state) {
        ok &= m.header(name, &value).is_ok();
    }
    if let Some(body) = body {
        ok &= m.body(PIDF_TYPE, body.into_bytes()).is_ok();
    }
    if !ok {
        return;
    }
    if matches!(state, NotifyState::Terminated { .. }) {
        if let Some(d) = b.presence.subs.get_mut(key).and_then(|s| s.dialog.take()) {
            b.presence.dialogs.remove(&d.id);
        }
    }
    store_dialog(b, key);
    let tag = b.fresh_id();
    b.presence
        .txs
        .insert(tag, SubTx::Notify { key: key.clone() });
    b.send_sip(tag, m);
}

/// The PIDF of the XMPP user's current presence (closed when unknown).
fn notify_body(b: &Bridge, key: &SubKey) -> Option<String> {
    let entity = sip_uri(&key.2)?.to_string();
    let empty = BTreeMap::new();
    let resources = match (&b.presence.current, b.presence.cache.get(&key.2)) {
        (_, Some(r)) => r,
        (Some((jid, r)), None) if *jid == key.2 => r,
        _ => &empty,
    };
    let contacts: Vec<(Option<&str>, String, &XmppPresence)> = resources
        .iter()
        .map(|(r, p)| {
            let resource = (!r.is_empty()).then_some(r.as_str());
            let contact = match resource {
                Some(r) => format!("xmpp:{}/{r}", key.2),
                None => format!("xmpp:{}", key.2),
            };
            (resource, contact, p)
        })
        .collect();
    let list: Vec<ResourcePresence<'_>> = contacts
        .iter()
        .map(|(resource, contact, presence)| ResourcePresence {
            resource: *resource,
            contact: Some(contact.as_str()),
            presence,
        })
        .collect();
    let full = pidf_from_presence(&entity, &list).to_xml().ok()?;
    // The NOTIFY must fit [sip] max_message with its headers: when the status texts make it
    // too large, the resources with the most status text lose theirs first (availability,
    // show and priority stay), so a short status, such as the one just set, still gets through.
    if full.len() + NOTIFY_HEADROOM <= b.config.limits.max_body {
        return Some(full);
    }
    let mut trimmed: Vec<XmppPresence> = list.iter().map(|r| r.presence.clone()).collect();
    let mut order: Vec<usize> = (0..trimmed.len()).collect();
    order.sort_by_key(|&i| {
        std::cmp::Reverse(
            trimmed[i]
                .statuses
                .iter()
                .map(|s| s.text.len())
                .sum::<usize>(),
        )
    });
    let mut xml = full;
    for i in order {
        if let Some(presence) = trimmed.get_mut(i) {
            presence.statuses.clear();
            presence.lang = None;
        }
        let list: Vec<ResourcePresence<'_>> = list
            .iter()
            .zip(&trimmed)
            .map(|(r, presence)| ResourcePresence { presence, ..*r })
            .collect();
        xml = pidf_from_presence(&entity, &list).to_xml().ok()?;
        if xml.len() + NOTIFY_HEADROOM <= b.config.limits.max_body {
            break;
        }
    }
    Some(xml)
}

/// Room left for a NOTIFY's start line and headers within `[sip] max_message`.
const NOTIFY_HEADROOM: usize = 2048;

fn send_subscribe(b: &mut Bridge, now: Instant, key: &SubKey, expires: u32, use_: DialogUse) {
    let _ = now;
    let existing = match use_ {
        DialogUse::Existing => b
            .presence
            .subs
            .get_mut(key)
            .and_then(|s| s.dialog.as_mut())
            .and_then(|d| d.request(&Method::Subscribe).ok()),
        _ => None,
    };
    let (mut m, call_id, our_tag, fetch) = match existing {
        Some(m) => {
            let Some(d) = b.presence.subs.get(key).and_then(|s| s.dialog.as_ref()) else {
                return;
            };
            (m, d.id.call_id.clone(), d.id.local_tag.clone(), false)
        }
        None => {
            // XMPP user key.2 subscribes, as its SIP address, to SIP user key.1.
            let (Some(from), Some(to)) = (sip_uri(&key.2), sip_uri(&key.1)) else {
                return;
            };
            let Ok((m, tag, call_id)) = fresh_request(b, &Method::Subscribe, &from, &to, None)
            else {
                return;
            };
            let fetch = use_ == DialogUse::Fetch;
            // Bounded: a notifier that never sends the NOTIFY of a fetch leaves an entry
            // behind; beyond the bound such NOTIFYs are answered 481 instead.
            if b.presence.early.len() < MAX_EARLY {
                b.presence
                    .early
                    .insert((call_id.clone(), tag.clone()), (key.clone(), fetch));
            }
            (m, call_id, tag, fetch)
        }
    };
    let mut ok = m
        .header("Contact", &format!("<{}>", b.config.contact))
        .is_ok();
    for (name, value) in subscribe_headers(expires) {
        ok &= m.header(name, &value).is_ok();
    }
    if !ok {
        return;
    }
    let tag = b.fresh_id();
    b.presence.txs.insert(
        tag,
        SubTx::Subscribe {
            key: key.clone(),
            fetch,
            call_id,
            our_tag,
        },
    );
    b.send_sip(tag, m);
}

fn notify_from_sip(b: &mut Bridge, now: Instant, id: RequestId, req: &Request) {
    let Some(did) = DialogId::of_request(req) else {
        return b.respond(id, StatusCode::CALL_DOES_NOT_EXIST, None);
    };
    let early_key = (did.call_id.clone(), did.local_tag.clone());
    let (key, fetch) = match b.presence.dialogs.get(&did) {
        Some(key) => (key.clone(), false),
        None => match b.presence.early.get(&early_key) {
            Some((key, fetch)) => (key.clone(), *fetch),
            // The notifier's last word on a subscription we ended: acknowledged.
            None if b.presence.ended.contains(&did) => return b.respond(id, StatusCode::OK, None),
            None => return b.respond(id, StatusCode::CALL_DOES_NOT_EXIST, None),
        },
    };
    if !fetch {
        // The NOTIFY may be the first word of the notifier (before its 200): the dialog
        // starts here (RFC 6665 §4.1.2.4).
        let has_dialog = b
            .presence
            .subs
            .get(&key)
            .and_then(|s| s.dialog.as_ref())
            .is_some_and(|d| d.id == did);
        if !has_dialog {
            if let Ok(mut dialog) = Dialog::uas(req, &did.local_tag) {
                // Our SUBSCRIBE that made this dialog was CSeq 1 (a fresh request).
                dialog.local_seq = 1;
                if let Some(sub) = b.presence.subs.get_mut(&key) {
                    if let Some(old) = sub.dialog.replace(Box::new(dialog)) {
                        b.presence.dialogs.remove(&old.id);
                    }
                    b.presence.dialogs.insert(did.clone(), key.clone());
                }
            }
        } else if let Some(Some(d)) = b.presence.subs.get_mut(&key).map(|s| s.dialog.as_mut()) {
            if let Err(e) = d.handle_request(req) {
                return b.respond(id, e.status(), Some(e.to_string()));
            }
        }
    }
    let state = req
        .subscription_state
        .as_ref()
        .map(NotifyState::from_header)
        .unwrap_or(NotifyState::Active { expires: None });
    if matches!(state, NotifyState::Terminated { .. }) {
        b.presence.dialogs.remove(&did);
        if let Some(sub) = b.presence.subs.get_mut(&key) {
            if sub.dialog.as_ref().is_some_and(|d| d.id == did) {
                sub.dialog = None;
            }
        }
        b.presence.early.remove(&early_key);
    }
    let body = (!req.body().is_empty())
        .then(|| Pidf::parse(req.body()).ok())
        .flatten();
    if !req.body().is_empty() && body.is_none() {
        log::info!(
            "sip presence: NOTIFY for {} with a PIDF that cannot be read: presence not forwarded",
            key.2
        );
    }
    let event = Event::Notify {
        state,
        has_body: body.is_some(),
        fetch,
    };
    if !b.presence.subs.contains_key(&key) {
        return b.respond(id, StatusCode::CALL_DOES_NOT_EXIST, None);
    }
    drive(b, now, &key, event, Some((id, req)), body.as_ref());
}

/// The outcome of a SUBSCRIBE or NOTIFY the bridge sent; `false` if `tag` is not ours.
pub(super) fn sip_outcome(b: &mut Bridge, now: Instant, tag: TxTag, outcome: &SipOutcome) -> bool {
    let Some(tx) = b.presence.txs.remove(&tag) else {
        return false;
    };
    match tx {
        SubTx::Notify { key } => {
            if let SipOutcome::Final(r) = outcome {
                if r.status == StatusCode::CALL_DOES_NOT_EXIST {
                    // The subscriber forgot the dialog: stop notifying in it.
                    if let Some(d) = b.presence.subs.get_mut(&key).and_then(|s| s.dialog.take()) {
                        b.presence.dialogs.remove(&d.id);
                    }
                }
            }
        }
        SubTx::Subscribe {
            key,
            fetch,
            call_id,
            our_tag,
        } => {
            let (status, response) = match outcome {
                SipOutcome::Final(r) => (r.status.as_u16(), Some(r)),
                SipOutcome::Failed(_) => (408, None),
            };
            if let Some(r) = response.filter(|r| r.status.is_success()) {
                if !fetch {
                    establish(b, &key, &call_id, &our_tag, r);
                }
            } else {
                b.presence.early.remove(&(call_id.clone(), our_tag.clone()));
            }
            if fetch && !(200..300).contains(&status) {
                b.presence.early.remove(&(call_id, our_tag));
            }
            let event = Event::SubscribeResponse {
                status,
                expires: response.and_then(|r| r.expires),
                min_expires: response
                    .and_then(|r| r.message().get("Min-Expires"))
                    .and_then(|f| f.value_str())
                    .and_then(|v| v.trim().parse().ok()),
                fetch,
            };
            drive(b, now, &key, event, None, None);
        }
    }
    true
}

/// The dialog of our SUBSCRIBE after its 2xx (unless a NOTIFY made it already).
fn establish(b: &mut Bridge, key: &SubKey, call_id: &str, our_tag: &str, r: &Response) {
    let Some(remote_tag) = r.to.tag() else {
        return;
    };
    let id = DialogId {
        call_id: call_id.to_owned(),
        local_tag: our_tag.to_owned(),
        remote_tag: remote_tag.to_owned(),
    };
    b.presence
        .early
        .remove(&(call_id.to_owned(), our_tag.to_owned()));
    let Some(sub) = b.presence.subs.get_mut(key) else {
        return;
    };
    if sub.dialog.as_ref().is_some_and(|d| d.id == id) {
        return;
    }
    let remote_target = r.contact.iter().find_map(|c| match c {
        Contact::Addr(a) => Some(a.uri.clone()),
        Contact::Star => None,
    });
    let (Some(remote_target), Ok(mut local)) = (
        remote_target,
        NameAddr::parse(r.from.to_string().as_bytes()),
    ) else {
        return;
    };
    if local.set_tag(our_tag).is_err() {
        return;
    }
    let mut route_set = r.record_route.clone();
    route_set.reverse();
    let dialog = Dialog {
        id: id.clone(),
        kind: DialogKind::Subscription {
            event: "presence".into(),
        },
        state: DialogState::Confirmed,
        local,
        remote: r.to.clone(),
        local_seq: r.cseq.seq,
        remote_seq: None,
        remote_target,
        route_set,
    };
    if let Some(old) = sub.dialog.replace(Box::new(dialog)) {
        b.presence.dialogs.remove(&old.id);
    }
    b.presence.dialogs.insert(id, key.clone());
}

// ---------------------------------------------------------------------------------------
// Timers and persistence

pub(super) fn timers(b: &mut Bridge, now: Instant) {
    while let Some((&(at, seq), _)) = b.presence.timers.iter().next() {
        if at > now {
            break;
        }
        let Some(key) = b.presence.timers.remove(&(at, seq)) else {
            break;
        };
        let due = b
            .presence
            .subs
            .get(&key)
            .and_then(|s| s.core.poll_timeout())
            .is_some_and(|t| t <= now);
        if due {
            drive(b, now, &key, Event::Timeout, None, None);
        }
    }
    maybe_save(b, now);
}

trait Elapsed {
    fn is_none_or_elapsed(&self, now: Instant, d: Duration) -> bool;
}

impl Elapsed for Option<Instant> {
    fn is_none_or_elapsed(&self, now: Instant, d: Duration) -> bool {
        match self {
            None => true,
            Some(t) => *t + d <= now,
        }
    }
}

/// Hands the router what changed, now if the last save is old enough.
pub(super) fn maybe_save(b: &mut Bridge, now: Instant) {
    if !b.presence.changed.is_empty() && b.presence.last_save.is_none_or_elapsed(now, SAVE_EVERY) {
        save(b, now);
    }
}

pub(super) fn flush(b: &mut Bridge, now: Instant) {
    if !b.presence.changed.is_empty() {
        save(b, now);
    }
}

/// The changed subscriptions' lines (or their removal): the cost is what changed, not the
/// table's size.
fn save(b: &mut Bridge, now: Instant) {
    let unix_now = b.unix_now(now);
    let mut changes: Vec<SubscriptionChange> = std::mem::take(&mut b.presence.changed)
        .into_iter()
        .map(|key| match b.presence.subs.get(&key) {
            Some(s) if s.core.state() != SubscriptionState::None => SubscriptionChange::Put {
                key: s.core.line_key(),
                line: s.core.to_line(now, unix_now),
            },
            _ => SubscriptionChange::Remove {
                key: subscription_key(key.0, &key.1, &key.2),
            },
        })
        .collect();
    changes.sort_by(|a, b| a.key().cmp(b.key()));
    b.presence.last_save = Some(now);
    b.actions.push_back(Action::SaveSubscriptions(changes));
}

/// Keeps the subscription's SIP dialog in its persisted line.
fn store_dialog(b: &mut Bridge, key: &SubKey) {
    if let Some(sub) = b.presence.subs.get_mut(key) {
        sub.core.dialog = sub.dialog.as_deref().map(encode_dialog).unwrap_or_default();
        b.presence.changed.insert(key.clone());
    }
}

/// Dialog → text (fields separated by newlines; the line format escapes them).
fn encode_dialog(d: &Dialog) -> String {
    let routes: Vec<String> = d.route_set.iter().map(|r| r.to_string()).collect();
    [
        d.id.call_id.clone(),
        d.id.local_tag.clone(),
        d.id.remote_tag.clone(),
        d.local.to_string(),
        d.remote.to_string(),
        d.local_seq.to_string(),
        d.remote_seq.map(|s| s.to_string()).unwrap_or_default(),
        d.remote_target.to_string(),
        routes.join("\t"),
    ]
    .join("\n")
}

fn decode_dialog(text: &str) -> Option<Dialog> {
    let f: Vec<&str> = text.split('\n').collect();
    let [call_id, local_tag, remote_tag, local, remote, local_seq, remote_seq, target, routes] =
        f[..]
    else {
        return None;
    };
    let route_set = if routes.is_empty() {
        Vec::new()
    } else {
        routes
            .split('\t')
            .map(|r| NameAddr::parse(r.as_bytes()).ok())
            .collect::<Option<Vec<_>>>()?
    };
    Some(Dialog {
        id: DialogId {
            call_id: call_id.to_owned(),
            local_tag: local_tag.to_owned(),
            remote_tag: remote_tag.to_owned(),
        },
        kind: DialogKind::Subscription {
            event: "presence".into(),
        },
        state: DialogState::Confirmed,
        local: NameAddr::parse(local.as_bytes()).ok()?,
        remote: NameAddr::parse(remote.as_bytes()).ok()?,
        local_seq: local_seq.parse().ok()?,
        remote_seq: if remote_seq.is_empty() {
            None
        } else {
            Some(remote_seq.parse().ok()?)
        },
        remote_target: Uri::parse(target).ok()?,
        route_set,
    })
}

/// Reads the saved table (the router read the file) and restarts every subscription.
/// Returns how many lines were taken and the refusals (one per bad line).
pub(super) fn restore(b: &mut Bridge, now: Instant, text: &str) -> (usize, Vec<String>) {
    let unix_now = b.unix_now(now);
    let mut taken = 0;
    let mut refused = Vec::new();
    let mut keys = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match Subscription::from_line(line, now, unix_now) {
            Ok(core) => {
                let key = (
                    core.direction(),
                    core.sip_user().to_owned(),
                    core.xmpp_user().to_owned(),
                );
                let dialog = decode_dialog(&core.dialog).map(Box::new);
                if let Some(d) = &dialog {
                    b.presence.dialogs.insert(d.id.clone(), key.clone());
                }
                let state = core.state();
                if let Some(old) = b.presence.subs.insert(key.clone(), Sub { core, dialog }) {
                    account(&mut b.presence, &key, Some(old.core.state()), None);
                }
                account(&mut b.presence, &key, None, Some(state));
                keys.push(key);
                taken += 1;
            }
            Err(e) => refused.push(format!("line {}: {e}", n + 1)),
        }
    }
    for key in keys {
        drive(b, now, &key, Event::Restart, None, None);
        // Presence of XMPP users was not saved: ask for it, so the SIP watchers' next NOTIFY
        // says what is true rather than "closed".
        let active = b
            .presence
            .subs
            .get(&key)
            .is_some_and(|s| s.core.state() == SubscriptionState::Active);
        if key.0 == Direction::Inbound && active {
            send_xmpp(b, &key, PresenceKind::Probe);
        }
    }
    (taken, refused)
}

impl Bridge {
    fn unix_now(&self, now: Instant) -> u64 {
        let (at, unix) = self.clock;
        if now >= at {
            unix.saturating_add(now.duration_since(at).as_secs())
        } else {
            unix.saturating_sub(at.duration_since(now).as_secs())
        }
    }
}
