//! XMPP `<presence>` ⇄ PIDF, and presence subscriptions as a sans-IO state machine (RFC 8048).
//!
//! Owns:
//! - [`XmppPresence`]: the `<presence>` stanza as the gateway uses it (RFC 6121 §4.7), to and
//!   from an [`Element`] (addresses are the router's: it sets `from`/`to`).
//! - The availability mapping both ways: [`pidf_from_presence`], [`presence_from_pidf`],
//!   [`presences_by_tuple`] and their pieces (show ⇄ activities, priority ⇄ qvalue,
//!   resource ⇄ tuple id).
//! - [`NotifyState`]: the `Subscription-State` header (RFC 6665 §8.2.3).
//! - [`Subscription`]: one subscription between a SIP user and an XMPP user in one direction,
//!   events in ([`Event`], `now` passed in), [`Action`]s out, one line of text to persist.
//!
//! Out of scope: addresses (JID ⇄ URI is `address`), SIP dialogs and transactions (the
//! router keeps Call-ID, tags and CSeq; it may store them in [`Subscription::dialog`]),
//! sockets, clocks and files.
//!
//! # Availability (RFC 8048 §4–§5)
//!
//! ```text
//!  XMPP                                PIDF
//!  ──────────────────────────────      ──────────────────────────────────────────────
//!  no type (available)                 <basic>open</basic>
//!  type='unavailable'                  <basic>closed</basic>
//!  <status xml:lang=L>T</status>  ⇄    <note xml:lang=L>T</note> (in the tuple)
//!  resource R                     ⇄    <tuple id='r-'+escape(R)>   (no resource: id 'r')
//!  <priority>P</priority> −128..127 ⇄  <contact priority=Q> 0..1, linear:
//!                                        Q = round((P+128)·1000/255) / 1000
//!                                        P = round(Q·255) − 128        (exact round trip)
//! ```
//!
//! `escape(R)`: each byte of R's UTF-8 other than `A–Z a–z 0–9 - .` becomes `_XX` (upper-case
//! hex), so the id is an NCName starting with a letter. Tuple ids that are not of this form
//! (an Edge's `0`, `bs35r9`) are used as the resource unchanged.
//!
//! Show ⇄ RPID activities (RFC 4480 §3.2), written in a data-model `person` (RFC 4479):
//!
//! ```text
//!  XMPP → PIDF                         PIDF → XMPP (the most restrictive wins: dnd > xa > away)
//!  ────────────                        ───────────────────────────────────────────────────────
//!  (none), chat → no activities        busy, on-the-phone, meeting, appointment, presentation,
//!  away         → <away/>                performance, steering, worship            → dnd
//!  xa           → <away/>              vacation, holiday, permanent-absence, sleeping,
//!  dnd          → <busy/>                travel                                    → xa
//!                                      away, meal, breakfast, dinner, in-transit, shopping,
//!                                        playing, tv, spectator, looking-for-work  → away
//!                                      working, unknown, other                     → (none)
//! ```
//!
//! Lossy on purpose: `chat` arrives as plain available and `xa` as `away` on the SIP side.
//!
//! # Subscriptions (RFC 8048 §4.2–§4.4, RFC 6665)
//!
//! ```text
//!  Outbound: an XMPP user U watches a SIP user S; xsgw is the SIP subscriber.
//!   U ──subscribe──▶ xsgw ──SUBSCRIBE (Expires 3600)──▶ Edge       None → Pending
//!                    xsgw ◀──200 (neutral), NOTIFY pending──         (nothing to U)
//!   U ◀─subscribed── xsgw ◀──NOTIFY active + PIDF──                Pending → Active
//!   U ◀─presence──── xsgw ◀──NOTIFY active + PIDF──                (ForwardPresence)
//!   U ──unsubscribe─▶ xsgw ──SUBSCRIBE Expires 0──▶ ─200─▶ U ◀─unsubscribed   → None
//!
//!  Inbound: a SIP user S watches an XMPP user U; xsgw is the SIP notifier.
//!   Edge ──SUBSCRIBE──▶ xsgw ──subscribe──▶ U; 200, NOTIFY pending  None → Pending
//!   Edge ◀─NOTIFY active + PIDF── xsgw ◀──subscribed── U            Pending → Active
//!   Edge ◀─NOTIFY active + PIDF── xsgw ◀──presence──── U
//!   Edge ◀─NOTIFY terminated;reason=rejected── xsgw ◀──unsubscribed── U   → None
//!   SIP subscription lapses or Expires 0: NOTIFY terminated;reason=timeout  Active → Approved
//! ```
//!
//! Responses to our SUBSCRIBE (outbound): 2xx is neutral (only a NOTIFY `active` approves);
//! 403, 489, 603 end the subscription (`unsubscribed` to U); 423 is retried with the
//! Min-Expires; 481 re-establishes it in a new dialog; other failures of a refresh keep the
//! subscription (RFC 6665 §4.1.2.2) and retry with back-off; other failures of the initial
//! SUBSCRIBE (4xx except 408/480, 6xx) end it. NOTIFY `terminated` with reason `rejected`,
//! `noresource` or `invariant` ends it; `deactivated`, `timeout` (or none) re-subscribe at
//! once, `probation` and `giveup` after `retry-after` (RFC 6665 §4.1.3).
//!
//! **No leak**: [`Action::ForwardPresence`] is only emitted in state `Active`, for a NOTIFY
//! `active` of the subscription's dialog or a non-`pending` NOTIFY of a probe's fetch dialog
//! (those end `terminated;reason=timeout`); [`Action::SendNotify`] with presence only when
//! the XMPP user has approved (`Active`, or `Approved` for a final NOTIFY). A seeded random
//! test checks this against an independent model for any order of events.

use std::fmt;
use std::time::{Duration, Instant};

use crate::sip::TokenParams;
use crate::xmpp::element::{Element, NS_SERVER, NS_XML};

use super::pidf::{Activity, Basic, Contact, Note, Person, Pidf, QValue, Tuple};

/// The `Event` package (RFC 3856 §4).
pub const EVENT_PRESENCE: &str = "presence";
/// What xsgw puts in `Accept` of its SUBSCRIBE.
pub const ACCEPT: &str = super::pidf::CONTENT_TYPE;
/// Expires of the SUBSCRIBEs xsgw sends, and the longest it grants, in seconds.
pub const DEFAULT_EXPIRES: u32 = 3600;
/// Shortest Expires granted to an inbound SUBSCRIBE (shorter gets 423 with this Min-Expires).
pub const MIN_EXPIRES: u32 = 60;
/// Refresh at this per mille of the granted Expires.
pub const REFRESH_PER_MILLE: u64 = 800;
/// First delay before retrying after a transient failure; doubles up to [`MAX_RETRY_DELAY`].
pub const RETRY_DELAY: Duration = Duration::from_secs(30);
/// Longest delay between retries.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(3600);
/// Most `<status>` elements read from one stanza.
pub const MAX_STATUSES: usize = 16;
/// Longest `<status>` text, in bytes.
pub const MAX_STATUS_LEN: usize = 4096;
/// Longest `xml:lang` kept (RFC 5646 §4.4.1 advises 35 bytes for any tag; longer or
/// misshapen ones are dropped, never stored).
pub const MAX_LANG: usize = 35;
/// Longest persisted subscription line, in bytes.
pub const MAX_LINE: usize = 8192;
/// First field of a persisted line: format and version.
pub const LINE_MAGIC: &str = "xsgw-presence/1";

/// Why a `<presence>` stanza could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PresenceError {
    /// The element is not `presence` in the server (or client) namespace.
    NotPresence,
    /// `type` holds a value RFC 6121 §4.7.1 does not define.
    BadType {
        /// The value.
        value: String,
    },
    /// `<show>` holds a value other than away, chat, dnd, xa.
    BadShow {
        /// The value.
        value: String,
    },
    /// `<priority>` is not an integer in −128..127.
    BadPriority {
        /// The value.
        value: String,
    },
    /// More `<status>` elements than [`MAX_STATUSES`].
    TooManyStatuses {
        /// The limit.
        max: usize,
    },
    /// A `<status>` longer than [`MAX_STATUS_LEN`].
    TooLarge {
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
}

impl fmt::Display for PresenceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PresenceError::NotPresence => f.write_str("not a presence stanza"),
            PresenceError::BadType { value } => write!(f, "unknown presence type {value:?}"),
            PresenceError::BadShow { value } => write!(f, "unknown show value {value:?}"),
            PresenceError::BadPriority { value } => write!(f, "bad presence priority {value:?}"),
            PresenceError::TooManyStatuses { max } => write!(f, "more than {max} status elements"),
            PresenceError::TooLarge { len, max } => {
                write!(f, "status too large: {len} bytes, limit {max}")
            }
        }
    }
}

impl std::error::Error for PresenceError {}

/// The `type` of a presence stanza (RFC 6121 §4.7.1); no type is [`PresenceKind::Available`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PresenceKind {
    /// No `type`: available.
    Available,
    /// `unavailable`
    Unavailable,
    /// `subscribe`
    Subscribe,
    /// `subscribed`
    Subscribed,
    /// `unsubscribe`
    Unsubscribe,
    /// `unsubscribed`
    Unsubscribed,
    /// `probe`
    Probe,
    /// `error`
    Error,
}

impl PresenceKind {
    /// The `type` attribute value; `None` for available.
    pub fn as_type(self) -> Option<&'static str> {
        Some(match self {
            PresenceKind::Available => return None,
            PresenceKind::Unavailable => "unavailable",
            PresenceKind::Subscribe => "subscribe",
            PresenceKind::Subscribed => "subscribed",
            PresenceKind::Unsubscribe => "unsubscribe",
            PresenceKind::Unsubscribed => "unsubscribed",
            PresenceKind::Probe => "probe",
            PresenceKind::Error => "error",
        })
    }

    /// The kind for a `type` attribute value.
    pub fn from_type(t: Option<&str>) -> Option<PresenceKind> {
        Some(match t {
            None => PresenceKind::Available,
            Some("unavailable") => PresenceKind::Unavailable,
            Some("subscribe") => PresenceKind::Subscribe,
            Some("subscribed") => PresenceKind::Subscribed,
            Some("unsubscribe") => PresenceKind::Unsubscribe,
            Some("unsubscribed") => PresenceKind::Unsubscribed,
            Some("probe") => PresenceKind::Probe,
            Some("error") => PresenceKind::Error,
            Some(_) => return None,
        })
    }
}

/// `<show>` (RFC 6121 §4.7.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Show {
    /// `away`
    Away,
    /// `chat`
    Chat,
    /// `dnd`
    Dnd,
    /// `xa`
    Xa,
}

impl Show {
    /// The element text.
    pub fn as_str(self) -> &'static str {
        match self {
            Show::Away => "away",
            Show::Chat => "chat",
            Show::Dnd => "dnd",
            Show::Xa => "xa",
        }
    }

    /// The show for an element text.
    pub fn parse(s: &str) -> Option<Show> {
        Some(match s {
            "away" => Show::Away,
            "chat" => Show::Chat,
            "dnd" => Show::Dnd,
            "xa" => Show::Xa,
            _ => return None,
        })
    }
}

/// One `<status>` with its language (RFC 6121 §4.7.2.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// The text.
    pub text: String,
    /// The status's own `xml:lang`, when it has one that differs from the stanza's
    /// ([`XmppPresence::lang`] applies otherwise: see [`XmppPresence::lang_of`]).
    pub lang: Option<String>,
}

/// A `<presence>` stanza without its addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XmppPresence {
    /// The type.
    pub kind: PresenceKind,
    /// `<show>`.
    pub show: Option<Show>,
    /// `<status>` elements.
    pub statuses: Vec<Status>,
    /// `<priority>`, 0 when absent.
    pub priority: i8,
    /// The stanza's `xml:lang`, stored once (not copied into each status); only a tag shaped
    /// like BCP 47 and at most [`MAX_LANG`] bytes ([`language_tag`]).
    pub lang: Option<String>,
}

/// `s` when it is shaped like a BCP 47 language tag (RFC 5646 §2.1 at its simplest): 1–35
/// bytes, subtags of 1–8 ASCII letters or digits separated by `-`, the first letters only
/// (or the `x`/`i` singletons). Anything else is not a language and is dropped.
pub fn language_tag(s: &str) -> Option<&str> {
    let ok = !s.is_empty()
        && s.len() <= MAX_LANG
        && s.split('-')
            .all(|t| (1..=8).contains(&t.len()) && t.bytes().all(|b| b.is_ascii_alphanumeric()))
        && s.split('-')
            .next()
            .is_some_and(|t| t.bytes().all(|b| b.is_ascii_alphabetic()));
    ok.then_some(s)
}

impl XmppPresence {
    /// A presence of `kind` with nothing else.
    pub fn new(kind: PresenceKind) -> XmppPresence {
        XmppPresence {
            kind,
            show: None,
            statuses: Vec::new(),
            priority: 0,
            lang: None,
        }
    }

    /// The language of `status`: its own, else the stanza's.
    pub fn lang_of<'a>(&'a self, status: &'a Status) -> Option<&'a str> {
        status.lang.as_deref().or(self.lang.as_deref())
    }

    /// Reads a `<presence>` element (namespace `jabber:server` or `jabber:client`).
    /// Unknown children are ignored; the first `<show>` and `<priority>` count.
    pub fn from_element(e: &Element) -> Result<XmppPresence, PresenceError> {
        let ns = e.namespace.as_str();
        if e.name != "presence" || !(ns == NS_SERVER || ns == "jabber:client") {
            return Err(PresenceError::NotPresence);
        }
        let kind =
            PresenceKind::from_type(e.attr("type")).ok_or_else(|| PresenceError::BadType {
                value: e
                    .attr("type")
                    .unwrap_or_default()
                    .chars()
                    .take(64)
                    .collect(),
            })?;
        let mut p = XmppPresence::new(kind);
        p.lang = e.lang().and_then(language_tag).map(str::to_owned);
        let mut seen_priority = false;
        for child in e.elements().filter(|c| c.namespace == ns) {
            match child.name.as_str() {
                "show" if p.show.is_none() => {
                    let text = child.text();
                    p.show =
                        Some(
                            Show::parse(text.trim()).ok_or_else(|| PresenceError::BadShow {
                                value: text.chars().take(64).collect(),
                            })?,
                        );
                }
                "priority" if !seen_priority => {
                    seen_priority = true;
                    let text = child.text();
                    p.priority =
                        text.trim()
                            .parse::<i8>()
                            .map_err(|_| PresenceError::BadPriority {
                                value: text.chars().take(64).collect(),
                            })?;
                }
                "status" => {
                    if p.statuses.len() >= MAX_STATUSES {
                        return Err(PresenceError::TooManyStatuses { max: MAX_STATUSES });
                    }
                    let text = child.text();
                    if text.len() > MAX_STATUS_LEN {
                        return Err(PresenceError::TooLarge {
                            len: text.len(),
                            max: MAX_STATUS_LEN,
                        });
                    }
                    // Only a status's own, valid language that differs from the stanza's is
                    // kept with it; an invalid one falls back to the stanza's.
                    let own = child
                        .lang()
                        .and_then(language_tag)
                        .filter(|l| Some(*l) != p.lang.as_deref());
                    p.statuses.push(Status {
                        text,
                        lang: own.map(str::to_owned),
                    });
                }
                _ => {}
            }
        }
        Ok(p)
    }

    /// The `<presence>` element in `jabber:server`, without `from`/`to`/`id` (the router
    /// adds them). `<priority>` is written only when not 0.
    pub fn to_element(&self) -> Element {
        let mut e = Element::new("presence", NS_SERVER).with_opt_attr("type", self.kind.as_type());
        if let Some(lang) = &self.lang {
            e.set_attr_ns("lang", NS_XML, lang.clone());
        }
        if let Some(show) = self.show {
            e = e.with_child(Element::new("show", NS_SERVER).with_text(show.as_str()));
        }
        for s in &self.statuses {
            let mut status = Element::new("status", NS_SERVER).with_text(s.text.clone());
            if let Some(lang) = &s.lang {
                status.set_attr_ns("lang", NS_XML, lang.clone());
            }
            e = e.with_child(status);
        }
        if self.priority != 0 {
            e = e.with_child(
                Element::new("priority", NS_SERVER).with_text(self.priority.to_string()),
            );
        }
        e
    }
}

/// XMPP priority −128..127 → PIDF contact priority 0..1, linear (see the module docs).
pub fn priority_to_qvalue(priority: i8) -> QValue {
    let steps = u32::from(priority.wrapping_sub(i8::MIN) as u8);
    let t = (steps * 1000 + 127) / 255;
    QValue::from_thousandths(t as u16).unwrap_or(QValue::MAX)
}

/// PIDF contact priority 0..1 → XMPP priority −128..127, the inverse of [`priority_to_qvalue`].
pub fn qvalue_to_priority(q: QValue) -> i8 {
    let steps = (u32::from(q.thousandths()) * 255 + 500) / 1000;
    let steps = u8::try_from(steps).unwrap_or(u8::MAX);
    (steps as i8).wrapping_add(i8::MIN)
}

/// The RPID activities written for a show (see the table in the module docs).
pub fn show_to_activities(show: Option<Show>) -> Vec<Activity> {
    match show {
        None | Some(Show::Chat) => Vec::new(),
        Some(Show::Away | Show::Xa) => vec![Activity::Away],
        Some(Show::Dnd) => vec![Activity::Busy],
    }
}

/// The show one activity stands for (see the table in the module docs).
pub fn show_for_activity(activity: &Activity) -> Option<Show> {
    match activity {
        Activity::Busy
        | Activity::OnThePhone
        | Activity::Meeting
        | Activity::Appointment
        | Activity::Presentation
        | Activity::Performance
        | Activity::Steering
        | Activity::Worship => Some(Show::Dnd),
        Activity::Vacation
        | Activity::Holiday
        | Activity::PermanentAbsence
        | Activity::Sleeping
        | Activity::Travel => Some(Show::Xa),
        Activity::Away
        | Activity::Meal
        | Activity::Breakfast
        | Activity::Dinner
        | Activity::InTransit
        | Activity::Shopping
        | Activity::Playing
        | Activity::Tv
        | Activity::Spectator
        | Activity::LookingForWork => Some(Show::Away),
        Activity::Working | Activity::Unknown | Activity::Other(_) => None,
    }
}

/// The show for a set of activities: the most restrictive one (dnd > xa > away).
pub fn show_from_activities<'a>(
    activities: impl IntoIterator<Item = &'a Activity>,
) -> Option<Show> {
    let rank = |s: Show| match s {
        Show::Dnd => 3,
        Show::Xa => 2,
        Show::Away => 1,
        Show::Chat => 0,
    };
    activities
        .into_iter()
        .filter_map(show_for_activity)
        .max_by_key(|s| rank(*s))
}

/// The tuple id for an XMPP resource: `r-` + escaped resource, or `r` without one.
pub fn tuple_id_for_resource(resource: Option<&str>) -> String {
    let Some(resource) = resource else {
        return "r".to_owned();
    };
    let mut id = String::with_capacity(resource.len() + 2);
    id.push_str("r-");
    for b in resource.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.') {
            id.push(char::from(b));
        } else {
            id.push_str(&format!("_{b:02X}"));
        }
    }
    id
}

/// The XMPP resource for a tuple id: the inverse of [`tuple_id_for_resource`] for ids of
/// that form, the id itself for any other; `None` for `r` (no resource).
pub fn resource_for_tuple_id(id: &str) -> Option<String> {
    if id == "r" {
        return None;
    }
    Some(decode_tuple_id(id).unwrap_or_else(|| id.to_owned()))
}

fn decode_tuple_id(id: &str) -> Option<String> {
    let rest = id.strip_prefix("r-")?;
    let mut bytes = Vec::with_capacity(rest.len());
    let mut it = rest.bytes();
    while let Some(b) = it.next() {
        match b {
            b'_' => {
                let hi = hex_upper(it.next()?)?;
                let lo = hex_upper(it.next()?)?;
                let byte = hi * 16 + lo;
                // Canonical form only: a byte that is written raw must not come escaped.
                if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.') {
                    return None;
                }
                bytes.push(byte);
            }
            b if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.') => bytes.push(b),
            _ => return None,
        }
    }
    String::from_utf8(bytes).ok()
}

fn hex_upper(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// One XMPP resource's presence, for [`pidf_from_presence`].
#[derive(Debug, Clone, Copy)]
pub struct ResourcePresence<'a> {
    /// The resource, when the presence came from a full JID.
    pub resource: Option<&'a str>,
    /// A contact URI for the tuple (e.g. `xmpp:juliet@example.com/balcony`); the priority
    /// is only carried when there is one.
    pub contact: Option<&'a str>,
    /// The presence; anything but [`PresenceKind::Available`] is written as closed.
    pub presence: &'a XmppPresence,
}

/// The PIDF document for an XMPP user's presence: one tuple per resource (basic, contact with
/// priority, status notes), and a `person` with the activities of the highest-priority
/// available resource when its show maps to any. No resources: one closed tuple `r`.
pub fn pidf_from_presence(entity: &str, resources: &[ResourcePresence<'_>]) -> Pidf {
    let mut tuples = Vec::with_capacity(resources.len().max(1));
    for r in resources {
        let id = tuple_id_for_resource(r.resource);
        if tuples.iter().any(|t: &Tuple| t.id == id) {
            continue;
        }
        let p = r.presence;
        tuples.push(Tuple {
            id,
            basic: Some(if p.kind == PresenceKind::Available {
                Basic::Open
            } else {
                Basic::Closed
            }),
            activities: Vec::new(),
            contact: r.contact.map(|uri| Contact {
                uri: uri.to_owned(),
                priority: Some(priority_to_qvalue(p.priority)),
            }),
            notes: p
                .statuses
                .iter()
                .map(|s| Note {
                    text: s.text.clone(),
                    lang: p.lang_of(s).map(str::to_owned),
                })
                .collect(),
            timestamp: None,
        });
    }
    if tuples.is_empty() {
        tuples.push(Tuple::new(tuple_id_for_resource(None), Basic::Closed));
    }
    let top = resources
        .iter()
        .filter(|r| r.presence.kind == PresenceKind::Available)
        .fold(None::<&ResourcePresence<'_>>, |best, r| match best {
            Some(b) if b.presence.priority >= r.presence.priority => Some(b),
            _ => Some(r),
        });
    let activities = show_to_activities(top.and_then(|r| r.presence.show));
    Pidf {
        entity: entity.to_owned(),
        tuples,
        notes: Vec::new(),
        person: (!activities.is_empty()).then(|| Person {
            id: "p".to_owned(),
            activities,
            notes: Vec::new(),
        }),
    }
}

fn statuses_of(notes: &[Note]) -> Vec<Status> {
    notes
        .iter()
        .take(MAX_STATUSES)
        .map(|n| Status {
            text: n.text.clone(),
            lang: n.lang.as_deref().and_then(language_tag).map(str::to_owned),
        })
        .collect()
}

fn presence_of_tuple(pidf: &Pidf, tuple: &Tuple) -> XmppPresence {
    let open = tuple.basic == Some(Basic::Open);
    let person_activities = pidf.person.iter().flat_map(|p| p.activities.iter());
    let notes = [
        tuple.notes.as_slice(),
        pidf.notes.as_slice(),
        pidf.person.as_ref().map_or(&[][..], |p| p.notes.as_slice()),
    ]
    .into_iter()
    .find(|n| !n.is_empty())
    .unwrap_or_default();
    XmppPresence {
        kind: if open {
            PresenceKind::Available
        } else {
            PresenceKind::Unavailable
        },
        show: if open {
            show_from_activities(person_activities.chain(tuple.activities.iter()))
        } else {
            None
        },
        statuses: statuses_of(notes),
        priority: if open {
            tuple
                .contact
                .as_ref()
                .and_then(|c| c.priority)
                .map_or(0, qvalue_to_priority)
        } else {
            0
        },
        lang: None,
    }
}

/// One presence for a whole PIDF document: available when any tuple is open, described by
/// the open tuple with the highest contact priority (the first on a tie); its notes, else
/// the document's, else the person's, become the statuses; the show comes from the person's
/// and that tuple's activities. No open tuple: unavailable.
pub fn presence_from_pidf(pidf: &Pidf) -> XmppPresence {
    let prio = |t: &Tuple| t.contact.as_ref().and_then(|c| c.priority);
    let best = pidf
        .tuples
        .iter()
        .filter(|t| t.basic == Some(Basic::Open))
        .fold(None::<&Tuple>, |best, t| match best {
            Some(b) if prio(b) >= prio(t) => Some(b),
            _ => Some(t),
        });
    match best.or(pidf.tuples.first()) {
        Some(t) => presence_of_tuple(pidf, t),
        None => {
            let mut p = XmppPresence::new(PresenceKind::Unavailable);
            let notes = if pidf.notes.is_empty() {
                pidf.person.as_ref().map_or(&[][..], |p| p.notes.as_slice())
            } else {
                &pidf.notes
            };
            p.statuses = statuses_of(notes);
            p
        }
    }
}

/// One presence per tuple, with the resource its id stands for (see
/// [`resource_for_tuple_id`]); for gateways that expose each SIP endpoint as a resource.
pub fn presences_by_tuple(pidf: &Pidf) -> Vec<(Option<String>, XmppPresence)> {
    pidf.tuples
        .iter()
        .map(|t| (resource_for_tuple_id(&t.id), presence_of_tuple(pidf, t)))
        .collect()
}

/// `reason` of a terminated subscription (RFC 6665 §4.1.3, §8.2.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// `deactivated`: re-subscribe at once.
    Deactivated,
    /// `probation`: re-subscribe after `retry-after`.
    Probation,
    /// `rejected`: refused; do not re-subscribe.
    Rejected,
    /// `timeout`: not refreshed in time (also the answer to Expires 0).
    Timeout,
    /// `giveup`: the notifier could not get a decision; may retry after `retry-after`.
    Giveup,
    /// `noresource`: the resource no longer exists.
    Noresource,
    /// `invariant`: the resource will never be available.
    Invariant,
    /// Any other token.
    Other(String),
}

impl Reason {
    fn parse(s: &str) -> Reason {
        match s.to_ascii_lowercase().as_str() {
            "deactivated" => Reason::Deactivated,
            "probation" => Reason::Probation,
            "rejected" => Reason::Rejected,
            "timeout" => Reason::Timeout,
            "giveup" => Reason::Giveup,
            "noresource" => Reason::Noresource,
            "invariant" => Reason::Invariant,
            _ => Reason::Other(s.to_owned()),
        }
    }

    /// The token.
    pub fn as_str(&self) -> &str {
        match self {
            Reason::Deactivated => "deactivated",
            Reason::Probation => "probation",
            Reason::Rejected => "rejected",
            Reason::Timeout => "timeout",
            Reason::Giveup => "giveup",
            Reason::Noresource => "noresource",
            Reason::Invariant => "invariant",
            Reason::Other(s) => s,
        }
    }
}

/// A `Subscription-State` header value (RFC 6665 §8.2.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotifyState {
    /// `active;expires=N`
    Active {
        /// Remaining seconds, when given.
        expires: Option<u32>,
    },
    /// `pending;expires=N`
    Pending {
        /// Remaining seconds, when given.
        expires: Option<u32>,
    },
    /// `terminated;reason=R;retry-after=N`
    Terminated {
        /// The reason, when given.
        reason: Option<Reason>,
        /// `retry-after` seconds, when given.
        retry_after: Option<u32>,
    },
}

impl NotifyState {
    /// Reads a parsed header. Values other than active, pending and terminated (extensions)
    /// are read as `pending`: nothing is forwarded on a state xsgw does not understand.
    pub fn from_header(h: &TokenParams) -> NotifyState {
        let seconds = |name: &str| {
            h.params
                .get(name)
                .and_then(|v| crate::sip::header::delta_seconds(v.as_bytes()).ok())
        };
        match h.value.to_ascii_lowercase().as_str() {
            "active" => NotifyState::Active {
                expires: h.expires(),
            },
            "terminated" => NotifyState::Terminated {
                reason: h
                    .params
                    .get("reason")
                    .filter(|r| !r.is_empty())
                    .map(Reason::parse),
                retry_after: seconds("retry-after"),
            },
            _ => NotifyState::Pending {
                expires: h.expires(),
            },
        }
    }

    /// The header value, e.g. `active;expires=3600`, `terminated;reason=rejected`. A
    /// [`Reason::Other`] that is not a token is left out.
    pub fn to_header_value(&self) -> String {
        match self {
            NotifyState::Active { expires } => with_expires("active", *expires),
            NotifyState::Pending { expires } => with_expires("pending", *expires),
            NotifyState::Terminated {
                reason,
                retry_after,
            } => {
                let mut s = "terminated".to_owned();
                if let Some(r) = reason
                    .as_ref()
                    .filter(|r| !r.as_str().is_empty() && r.as_str().bytes().all(is_token_byte))
                {
                    s.push_str(";reason=");
                    s.push_str(r.as_str());
                }
                if let Some(n) = retry_after {
                    s.push_str(&format!(";retry-after={n}"));
                }
                s
            }
        }
    }
}

/// RFC 3261 §25.1 `token` characters.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

fn with_expires(state: &str, expires: Option<u32>) -> String {
    match expires {
        Some(n) => format!("{state};expires={n}"),
        None => state.to_owned(),
    }
}

/// Whether an `Event` header names the presence package (RFC 6665 §8.2.1: compared
/// case-sensitively by the spec, but Edges vary, so case is ignored; an `id` is allowed).
pub fn is_presence_event(event: &TokenParams) -> bool {
    event.value.eq_ignore_ascii_case(EVENT_PRESENCE)
}

/// The headers of a SUBSCRIBE for presence, for [`Action::SendSubscribe`]:
/// `Event: presence`, `Accept: application/pidf+xml`, `Expires: N`.
pub fn subscribe_headers(expires: u32) -> [(&'static str, String); 3] {
    [
        ("Event", EVENT_PRESENCE.to_owned()),
        ("Accept", ACCEPT.to_owned()),
        ("Expires", expires.to_string()),
    ]
}

/// The headers of a NOTIFY for presence, for [`Action::SendNotify`]: `Event: presence`,
/// `Subscription-State: …` (the body, if any, is `application/pidf+xml`).
pub fn notify_headers(state: &NotifyState) -> [(&'static str, String); 2] {
    [
        ("Event", EVENT_PRESENCE.to_owned()),
        ("Subscription-State", state.to_header_value()),
    ]
}

/// Which way a subscription goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// An XMPP user watches a SIP user: xsgw sends SUBSCRIBE and receives NOTIFY.
    Outbound,
    /// A SIP user watches an XMPP user: xsgw receives SUBSCRIBE and sends NOTIFY.
    Inbound,
}

/// Where a subscription stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SubscriptionState {
    /// Nothing asked, nothing approved.
    None,
    /// Asked, not (or no longer) approved. Outbound: SUBSCRIBE sent, no NOTIFY `active`
    /// yet (or re-establishing). Inbound: the SIP user subscribed, the XMPP user was asked.
    Pending,
    /// Approved and carried by a live SIP subscription: presence flows.
    Active,
    /// Inbound only: the XMPP user approved, but no SIP subscription is alive (it lapsed or
    /// was ended with Expires 0, or came before the SIP user asked); the next SUBSCRIBE
    /// becomes `Active` at once.
    Approved,
    /// Outbound only: the XMPP user unsubscribed; SUBSCRIBE Expires 0 sent.
    Unsubscribing,
}

impl SubscriptionState {
    fn as_str(self) -> &'static str {
        match self {
            SubscriptionState::None => "none",
            SubscriptionState::Pending => "pending",
            SubscriptionState::Active => "active",
            SubscriptionState::Approved => "approved",
            SubscriptionState::Unsubscribing => "unsubscribing",
        }
    }

    fn parse(s: &str) -> Option<SubscriptionState> {
        Some(match s {
            "none" => SubscriptionState::None,
            "pending" => SubscriptionState::Pending,
            "active" => SubscriptionState::Active,
            "approved" => SubscriptionState::Approved,
            "unsubscribing" => SubscriptionState::Unsubscribing,
            _ => return None,
        })
    }

    fn fits(self, direction: Direction) -> bool {
        match self {
            SubscriptionState::Approved => direction == Direction::Inbound,
            SubscriptionState::Unsubscribing => direction == Direction::Outbound,
            _ => true,
        }
    }
}

/// Which dialog a SUBSCRIBE goes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DialogUse {
    /// A new dialog: the first SUBSCRIBE, or re-establishing one (after 481, a terminated
    /// NOTIFY, or a restart).
    New,
    /// The subscription's dialog: a refresh or an unsubscribe.
    Existing,
    /// A new one-shot dialog with Expires 0: fetch the current state (for a probe).
    Fetch,
}

/// What happened, fed to [`Subscription::handle`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Outbound: the XMPP user sent `subscribe` to the SIP user's JID.
    XmppSubscribe,
    /// Outbound: the XMPP user sent `unsubscribe`.
    XmppUnsubscribe,
    /// Outbound: the XMPP user's server sent `probe`.
    XmppProbe,
    /// Outbound: the XMPP user came online (refresh the subscription).
    XmppAvailable,
    /// Outbound: the final (or provisional) response to a SUBSCRIBE xsgw sent.
    SubscribeResponse {
        /// Status code.
        status: u16,
        /// `Expires` of a 2xx.
        expires: Option<u32>,
        /// `Min-Expires` of a 423.
        min_expires: Option<u32>,
        /// Whether it answers a [`DialogUse::Fetch`] SUBSCRIBE.
        fetch: bool,
    },
    /// Outbound: a NOTIFY arrived.
    Notify {
        /// Its Subscription-State.
        state: NotifyState,
        /// Whether it carries a PIDF body.
        has_body: bool,
        /// Whether it belongs to a [`DialogUse::Fetch`] dialog.
        fetch: bool,
    },
    /// Inbound: a SUBSCRIBE arrived from the SIP user.
    SipSubscribe {
        /// Its Expires (the router uses [`DEFAULT_EXPIRES`] when absent).
        expires: u32,
        /// Whether it starts a new dialog (an Expires 0 one is then a fetch, not an
        /// unsubscribe).
        new_dialog: bool,
    },
    /// Inbound: the XMPP user sent `subscribed` (approval, or pre-approval).
    XmppSubscribed,
    /// Inbound: the XMPP user sent `unsubscribed` (refusal or revocation).
    XmppUnsubscribed,
    /// Inbound: the XMPP user's presence changed.
    XmppPresence,
    /// The time from [`Subscription::poll_timeout`] has come.
    Timeout,
    /// xsgw started again and read this subscription from its line.
    Restart,
}

/// What the router must do. Actions come in the order they are to be done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send SUBSCRIBE (Event: presence, Accept: application/pidf+xml) with this Expires.
    SendSubscribe {
        /// Expires, seconds (0: unsubscribe or fetch).
        expires: u32,
        /// Which dialog.
        dialog: DialogUse,
    },
    /// Answer the SUBSCRIBE being handled: 200 with `Expires: expires`, or 423 with
    /// `Min-Expires: expires`.
    RespondSubscribe {
        /// Status code.
        status: u16,
        /// Expires (200) or Min-Expires (423).
        expires: u32,
    },
    /// Answer the NOTIFY being handled (200, or 481 when there is no subscription).
    RespondNotify {
        /// Status code.
        status: u16,
    },
    /// Send NOTIFY in the subscription's dialog.
    SendNotify {
        /// Its Subscription-State.
        state: NotifyState,
        /// Whether to attach the XMPP user's current presence as PIDF (closed when unknown);
        /// without it the NOTIFY has no body.
        with_presence: bool,
    },
    /// Send `<presence type=kind>` from the SIP user's JID to the XMPP user.
    SendXmpp {
        /// subscribe, subscribed, unsubscribe, unsubscribed or probe.
        kind: PresenceKind,
    },
    /// Deliver the PIDF of the NOTIFY being handled to the XMPP user as `<presence>`.
    ForwardPresence,
    /// Call `handle(Event::Timeout)` at this time (replaces any earlier time).
    SetTimer {
        /// When.
        at: Instant,
    },
    /// Write [`Subscription::to_line`] (the state changed).
    Persist,
    /// Nothing is left: delete the line and drop the subscription.
    Forget,
}

/// One subscription of a (SIP user, XMPP user) pair in one direction.
///
/// Calling order: [`Subscription::handle`] for each event, do the returned actions in
/// order, and arrange for `handle(Event::Timeout, now)` at [`Subscription::poll_timeout`].
/// After reading lines at start-up, call `handle(Event::Restart, now)` on each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    direction: Direction,
    sip_user: String,
    xmpp_user: String,
    state: SubscriptionState,
    /// When the SIP subscription lapses.
    expires_at: Option<Instant>,
    timer: Option<Instant>,
    /// Outbound: where the next refresh goes.
    next_dialog: DialogUse,
    /// Outbound: transient failures in a row (for back-off; not persisted).
    failures: u32,
    /// Router data persisted with the subscription (e.g. Call-ID, tags, CSeq, route set);
    /// opaque here.
    pub dialog: String,
}

/// `now + d`, saturating: a far-future time is as good as an overflow-free one.
fn after(now: Instant, d: Duration) -> Instant {
    now.checked_add(d)
        .or_else(|| now.checked_add(MAX_RETRY_DELAY))
        .unwrap_or(now)
}

fn secs(n: u32) -> Duration {
    Duration::from_secs(u64::from(n))
}

fn refresh_delay(expires: u32) -> Duration {
    Duration::from_millis(u64::from(expires) * REFRESH_PER_MILLE)
}

impl Subscription {
    /// A new subscription in state `None`. `sip_user` and `xmpp_user` are the router's keys
    /// (e.g. `sip:alice@contoso.com` and `juliet@example.com`).
    pub fn new(direction: Direction, sip_user: &str, xmpp_user: &str) -> Subscription {
        Subscription {
            direction,
            sip_user: sip_user.to_owned(),
            xmpp_user: xmpp_user.to_owned(),
            state: SubscriptionState::None,
            expires_at: None,
            timer: None,
            next_dialog: DialogUse::New,
            failures: 0,
            dialog: String::new(),
        }
    }

    /// The direction.
    pub fn direction(&self) -> Direction {
        self.direction
    }

    /// The SIP user.
    pub fn sip_user(&self) -> &str {
        &self.sip_user
    }

    /// The XMPP user.
    pub fn xmpp_user(&self) -> &str {
        &self.xmpp_user
    }

    /// The state.
    pub fn state(&self) -> SubscriptionState {
        self.state
    }

    /// Whether presence may flow now (state `Active`).
    pub fn is_active(&self) -> bool {
        self.state == SubscriptionState::Active
    }

    /// When the SIP subscription lapses, if one is alive.
    pub fn expires_at(&self) -> Option<Instant> {
        self.expires_at
    }

    /// When to call `handle(Event::Timeout)`.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timer
    }

    fn remaining(&self, now: Instant) -> u32 {
        self.expires_at.map_or(0, |at| {
            u32::try_from(at.saturating_duration_since(now).as_secs()).unwrap_or(u32::MAX)
        })
    }

    fn set_timer(&mut self, at: Instant, out: &mut Vec<Action>) {
        self.timer = Some(at);
        out.push(Action::SetTimer { at });
    }

    fn forget(&mut self, out: &mut Vec<Action>) {
        self.state = SubscriptionState::None;
        self.expires_at = None;
        self.timer = None;
        self.next_dialog = DialogUse::New;
        self.failures = 0;
        out.push(Action::Forget);
    }

    /// Handles one event; see [`Event`] for which apply to which [`Direction`] (the others
    /// return nothing).
    pub fn handle(&mut self, event: Event, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        match self.direction {
            Direction::Outbound => self.outbound(event, now, &mut out),
            Direction::Inbound => self.inbound(event, now, &mut out),
        }
        out
    }

    fn subscribe(&mut self, dialog: DialogUse, out: &mut Vec<Action>) {
        self.next_dialog = dialog;
        out.push(Action::SendSubscribe {
            expires: DEFAULT_EXPIRES,
            dialog,
        });
    }

    /// Outbound subscription over: tell the XMPP user.
    fn end_outbound(&mut self, out: &mut Vec<Action>) {
        out.push(Action::SendXmpp {
            kind: PresenceKind::Unsubscribed,
        });
        self.forget(out);
    }

    fn retry_later(&mut self, now: Instant, out: &mut Vec<Action>) {
        let shift = self.failures.min(7);
        self.failures = self.failures.saturating_add(1);
        let delay = RETRY_DELAY.saturating_mul(1 << shift).min(MAX_RETRY_DELAY);
        self.set_timer(after(now, delay), out);
    }

    fn outbound(&mut self, event: Event, now: Instant, out: &mut Vec<Action>) {
        use SubscriptionState as S;
        match (event, self.state) {
            (Event::XmppSubscribe, S::None | S::Unsubscribing | S::Approved) => {
                self.state = S::Pending;
                self.expires_at = None;
                self.timer = None;
                self.failures = 0;
                self.subscribe(DialogUse::New, out);
                out.push(Action::Persist);
            }
            (Event::XmppSubscribe, S::Active) => out.push(Action::SendXmpp {
                kind: PresenceKind::Subscribed,
            }),
            (Event::XmppUnsubscribe, S::Pending | S::Active) => {
                self.state = S::Unsubscribing;
                self.timer = None;
                out.push(Action::SendSubscribe {
                    expires: 0,
                    dialog: DialogUse::Existing,
                });
                out.push(Action::Persist);
            }
            (Event::XmppProbe, S::Active) => out.push(Action::SendSubscribe {
                expires: 0,
                dialog: DialogUse::Fetch,
            }),
            (Event::XmppAvailable, S::Active) => {
                let dialog = self.next_dialog;
                self.subscribe(dialog, out);
            }
            (
                Event::SubscribeResponse {
                    status,
                    expires,
                    min_expires,
                    fetch: false,
                },
                state,
            ) => self.outbound_response(state, status, expires, min_expires, now, out),
            (
                Event::Notify {
                    state: notify,
                    has_body,
                    fetch,
                },
                state,
            ) => {
                out.push(Action::RespondNotify {
                    status: if state == S::None && !fetch { 481 } else { 200 },
                });
                if fetch {
                    if state == S::Active
                        && has_body
                        && !matches!(notify, NotifyState::Pending { .. })
                    {
                        out.push(Action::ForwardPresence);
                    }
                    return;
                }
                self.outbound_notify(state, notify, has_body, now, out);
            }
            (Event::Timeout, S::Pending | S::Active) if self.timer.is_some_and(|t| t <= now) => {
                self.timer = None;
                if !matches!(self.expires_at, Some(at) if at > now) {
                    self.next_dialog = DialogUse::New;
                }
                let dialog = self.next_dialog;
                self.subscribe(dialog, out);
            }
            (Event::Restart, S::Pending | S::Active) => {
                // The dialog may be gone with the old process: start a new one. Approval
                // comes back with the first NOTIFY active.
                self.state = S::Pending;
                self.expires_at = None;
                self.timer = None;
                self.subscribe(DialogUse::New, out);
                out.push(Action::Persist);
            }
            (Event::Restart, S::Unsubscribing) => self.end_outbound(out),
            _ => {}
        }
    }

    fn outbound_response(
        &mut self,
        state: SubscriptionState,
        status: u16,
        expires: Option<u32>,
        min_expires: Option<u32>,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        use SubscriptionState as S;
        if status < 200 {
            return;
        }
        match state {
            S::Unsubscribing => return self.end_outbound(out),
            S::Pending | S::Active => {}
            S::None | S::Approved => return,
        }
        match status {
            200..=299 => {
                let granted = expires.unwrap_or(DEFAULT_EXPIRES);
                if granted == 0 {
                    // The notifier ended it on the spot; its NOTIFY terminated says why.
                    return;
                }
                self.failures = 0;
                self.next_dialog = DialogUse::Existing;
                self.expires_at = Some(after(now, secs(granted)));
                self.set_timer(after(now, refresh_delay(granted)), out);
                out.push(Action::Persist);
            }
            423 => {
                let expires = min_expires.unwrap_or(DEFAULT_EXPIRES).max(MIN_EXPIRES);
                out.push(Action::SendSubscribe {
                    expires,
                    dialog: self.next_dialog,
                });
            }
            481 if self.next_dialog != DialogUse::New => {
                self.state = S::Pending;
                self.expires_at = None;
                self.subscribe(DialogUse::New, out);
                out.push(Action::Persist);
            }
            403 | 489 | 603 => self.end_outbound(out),
            408 | 480 | 500..=599 => self.retry_later(now, out),
            // Other failures: fatal for a first SUBSCRIBE, tolerated for a refresh (RFC 6665
            // §4.1.2.2: the subscription holds until it expires).
            _ if self.next_dialog == DialogUse::New => self.end_outbound(out),
            _ => self.retry_later(now, out),
        }
    }

    fn outbound_notify(
        &mut self,
        state: SubscriptionState,
        notify: NotifyState,
        has_body: bool,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        use SubscriptionState as S;
        match (notify, state) {
            (NotifyState::Active { expires }, S::Pending | S::Active) => {
                if state == S::Pending {
                    self.state = S::Active;
                    out.push(Action::SendXmpp {
                        kind: PresenceKind::Subscribed,
                    });
                    out.push(Action::Persist);
                }
                if let Some(e) = expires.filter(|e| *e > 0) {
                    self.expires_at = Some(after(now, secs(e)));
                    self.set_timer(after(now, refresh_delay(e)), out);
                }
                if has_body {
                    out.push(Action::ForwardPresence);
                }
            }
            (NotifyState::Pending { .. }, S::Active) => {
                self.state = S::Pending;
                out.push(Action::Persist);
            }
            (NotifyState::Terminated { .. }, S::Unsubscribing) => self.end_outbound(out),
            (
                NotifyState::Terminated {
                    reason,
                    retry_after,
                },
                S::Pending | S::Active,
            ) => match reason {
                Some(Reason::Rejected | Reason::Noresource | Reason::Invariant) => {
                    self.end_outbound(out)
                }
                Some(Reason::Probation | Reason::Giveup) => {
                    self.state = S::Pending;
                    self.expires_at = None;
                    self.next_dialog = DialogUse::New;
                    let delay = retry_after.map_or(RETRY_DELAY, |s| {
                        Duration::from_secs(u64::from(s)).min(MAX_RETRY_DELAY)
                    });
                    self.set_timer(after(now, delay), out);
                    out.push(Action::Persist);
                }
                _ => {
                    self.state = S::Pending;
                    self.expires_at = None;
                    self.timer = None;
                    self.subscribe(DialogUse::New, out);
                    out.push(Action::Persist);
                }
            },
            _ => {}
        }
    }

    fn inbound(&mut self, event: Event, now: Instant, out: &mut Vec<Action>) {
        use SubscriptionState as S;
        match (event, self.state) {
            (
                Event::SipSubscribe {
                    expires,
                    new_dialog,
                },
                state,
            ) => self.inbound_subscribe(state, expires, new_dialog, now, out),
            (Event::XmppSubscribed, S::Pending) => {
                if self.expires_at.is_some_and(|at| at > now) {
                    self.state = S::Active;
                    out.push(Action::SendNotify {
                        state: NotifyState::Active {
                            expires: Some(self.remaining(now)),
                        },
                        with_presence: true,
                    });
                    out.push(Action::SendXmpp {
                        kind: PresenceKind::Probe,
                    });
                } else {
                    self.state = S::Approved;
                    self.expires_at = None;
                    self.timer = None;
                }
                out.push(Action::Persist);
            }
            (Event::XmppSubscribed, S::None) => {
                self.state = S::Approved;
                out.push(Action::Persist);
            }
            (Event::XmppUnsubscribed, S::Pending | S::Active) => {
                out.push(Action::SendNotify {
                    state: NotifyState::Terminated {
                        reason: Some(Reason::Rejected),
                        retry_after: None,
                    },
                    with_presence: false,
                });
                self.forget(out);
            }
            (Event::XmppUnsubscribed, S::Approved) => self.forget(out),
            (Event::XmppPresence, S::Active) => out.push(Action::SendNotify {
                state: NotifyState::Active {
                    expires: Some(self.remaining(now)),
                },
                with_presence: true,
            }),
            (Event::Timeout, S::Pending | S::Active) if self.timer.is_some_and(|t| t <= now) => {
                out.push(Action::SendNotify {
                    state: NotifyState::Terminated {
                        reason: Some(Reason::Timeout),
                        retry_after: None,
                    },
                    with_presence: false,
                });
                if self.state == S::Active {
                    self.state = S::Approved;
                    self.expires_at = None;
                    self.timer = None;
                    out.push(Action::Persist);
                } else {
                    self.forget(out);
                }
            }
            (Event::Restart, S::Pending | S::Active) => match self.expires_at {
                Some(at) if at > now => {
                    if self.state == S::Active {
                        out.push(Action::SendNotify {
                            state: NotifyState::Active {
                                expires: Some(self.remaining(now)),
                            },
                            with_presence: true,
                        });
                    }
                    self.set_timer(at, out);
                }
                _ if self.state == S::Active => {
                    self.state = S::Approved;
                    self.expires_at = None;
                    self.timer = None;
                    out.push(Action::Persist);
                }
                _ => self.forget(out),
            },
            _ => {}
        }
    }

    fn inbound_subscribe(
        &mut self,
        state: SubscriptionState,
        expires: u32,
        new_dialog: bool,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        use SubscriptionState as S;
        let approved = matches!(state, S::Active | S::Approved);
        if expires == 0 {
            out.push(Action::RespondSubscribe {
                status: 200,
                expires: 0,
            });
            out.push(Action::SendNotify {
                state: NotifyState::Terminated {
                    reason: Some(Reason::Timeout),
                    retry_after: None,
                },
                with_presence: approved,
            });
            if new_dialog {
                // A fetch: the subscription, if any, stays as it is.
                return;
            }
            match state {
                S::Active => {
                    self.state = S::Approved;
                    self.expires_at = None;
                    self.timer = None;
                    out.push(Action::Persist);
                }
                S::Pending => {
                    // Withdraw the request the XMPP user has not answered.
                    out.push(Action::SendXmpp {
                        kind: PresenceKind::Unsubscribe,
                    });
                    self.forget(out);
                }
                _ => {}
            }
            return;
        }
        if expires < MIN_EXPIRES {
            out.push(Action::RespondSubscribe {
                status: 423,
                expires: MIN_EXPIRES,
            });
            return;
        }
        let granted = expires.min(DEFAULT_EXPIRES);
        out.push(Action::RespondSubscribe {
            status: 200,
            expires: granted,
        });
        let at = after(now, secs(granted));
        self.expires_at = Some(at);
        match state {
            S::None | S::Pending | S::Unsubscribing => {
                self.state = S::Pending;
                out.push(Action::SendNotify {
                    state: NotifyState::Pending {
                        expires: Some(granted),
                    },
                    with_presence: false,
                });
                if state != S::Pending || new_dialog {
                    out.push(Action::SendXmpp {
                        kind: PresenceKind::Subscribe,
                    });
                }
            }
            S::Approved | S::Active => {
                self.state = S::Active;
                out.push(Action::SendNotify {
                    state: NotifyState::Active {
                        expires: Some(granted),
                    },
                    with_presence: true,
                });
                if state == S::Approved {
                    out.push(Action::SendXmpp {
                        kind: PresenceKind::Probe,
                    });
                }
            }
        }
        self.set_timer(at, out);
        out.push(Action::Persist);
    }

    /// One line (no newline) that [`Subscription::from_line`] reads back:
    /// `xsgw-presence/1 <in|out> <state> <expires-unix|-> <sip-user> <xmpp-user> <dialog|->`,
    /// fields percent-escaped. `unix_now` is the wall-clock time (seconds since the epoch)
    /// that corresponds to `now`, so the expiry survives a restart.
    pub fn to_line(&self, now: Instant, unix_now: u64) -> String {
        let expires = match self.expires_at {
            Some(at) => unix_now
                .saturating_add(at.saturating_duration_since(now).as_secs())
                .to_string(),
            None => "-".to_owned(),
        };
        let direction = match self.direction {
            Direction::Outbound => "out",
            Direction::Inbound => "in",
        };
        format!(
            "{LINE_MAGIC} {direction} {} {expires} {} {} {}",
            self.state.as_str(),
            escape_field(&self.sip_user),
            escape_field(&self.xmpp_user),
            escape_field(&self.dialog),
        )
    }

    /// What identifies this subscription's line among the others ([`line_key`] of the line):
    /// `<in|out> <sip-user> <xmpp-user>`, escaped as in the line.
    pub fn line_key(&self) -> String {
        subscription_key(self.direction, &self.sip_user, &self.xmpp_user)
    }

    /// Reads a line written by [`Subscription::to_line`]; `now` and `unix_now` as there.
    /// The subscription has no timer until `handle(Event::Restart, now)`.
    pub fn from_line(line: &str, now: Instant, unix_now: u64) -> Result<Subscription, LineError> {
        if line.len() > MAX_LINE {
            return Err(LineError::TooLarge {
                len: line.len(),
                max: MAX_LINE,
            });
        }
        if line.chars().any(char::is_control) {
            return Err(LineError::ControlCharacter);
        }
        let fields: Vec<&str> = line.split(' ').collect();
        let [magic, direction, state, expires, sip_user, xmpp_user, dialog] = fields[..] else {
            return Err(LineError::FieldCount {
                found: fields.len(),
            });
        };
        if magic != LINE_MAGIC {
            return Err(LineError::UnknownFormat);
        }
        let direction = match direction {
            "out" => Direction::Outbound,
            "in" => Direction::Inbound,
            _ => return Err(LineError::BadField { field: "direction" }),
        };
        let state = SubscriptionState::parse(state)
            .filter(|s| s.fits(direction))
            .ok_or(LineError::BadField { field: "state" })?;
        let expires_at = match expires {
            "-" => None,
            digits if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) => {
                let unix: u64 = digits
                    .parse()
                    .map_err(|_| LineError::BadField { field: "expires" })?;
                let left = unix.saturating_sub(unix_now).min(u64::from(u32::MAX));
                Some(after(now, Duration::from_secs(left)))
            }
            _ => return Err(LineError::BadField { field: "expires" }),
        };
        let sip_user = unescape_field(sip_user).ok_or(LineError::BadField { field: "sip user" })?;
        let xmpp_user =
            unescape_field(xmpp_user).ok_or(LineError::BadField { field: "xmpp user" })?;
        let dialog = unescape_field(dialog).ok_or(LineError::BadField { field: "dialog" })?;
        if sip_user.is_empty() || xmpp_user.is_empty() {
            return Err(LineError::BadField { field: "user" });
        }
        Ok(Subscription {
            direction,
            sip_user,
            xmpp_user,
            state,
            expires_at,
            timer: None,
            next_dialog: DialogUse::New,
            failures: 0,
            dialog,
        })
    }
}

/// Why a persisted subscription line was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LineError {
    /// The line is longer than [`MAX_LINE`].
    TooLarge {
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The line holds a control character (a torn or concatenated write).
    ControlCharacter,
    /// Not seven space-separated fields.
    FieldCount {
        /// How many there were.
        found: usize,
    },
    /// The first field is not [`LINE_MAGIC`].
    UnknownFormat,
    /// A field is malformed; `field` names it.
    BadField {
        /// Which field.
        field: &'static str,
    },
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LineError::TooLarge { len, max } => {
                write!(f, "subscription line too large: {len} bytes, limit {max}")
            }
            LineError::ControlCharacter => f.write_str("control character in subscription line"),
            LineError::FieldCount { found } => {
                write!(f, "subscription line has {found} fields, expected 7")
            }
            LineError::UnknownFormat => f.write_str("not an xsgw-presence/1 line"),
            LineError::BadField { field } => write!(f, "malformed {field} in subscription line"),
        }
    }
}

impl std::error::Error for LineError {}

/// `-` for empty; `%`, space, controls and a lone `-` escaped as `%XX`.
/// The key of the subscription (`direction`, `sip_user`, `xmpp_user`) as
/// [`Subscription::line_key`] gives it: no space inside a field, no control character.
pub fn subscription_key(direction: Direction, sip_user: &str, xmpp_user: &str) -> String {
    let direction = match direction {
        Direction::Outbound => "out",
        Direction::Inbound => "in",
    };
    format!(
        "{direction} {} {}",
        escape_field(sip_user),
        escape_field(xmpp_user)
    )
}

/// The key of a line written by [`Subscription::to_line`], without reading the rest of it;
/// `None` when it is not such a line.
pub fn line_key(line: &str) -> Option<String> {
    let mut f = line.split(' ');
    let (magic, direction, _state, _expires, sip, xmpp) = (
        f.next()?,
        f.next()?,
        f.next()?,
        f.next()?,
        f.next()?,
        f.next()?,
    );
    (magic == LINE_MAGIC && matches!(direction, "in" | "out") && f.next().is_some())
        .then(|| format!("{direction} {sip} {xmpp}"))
}

fn escape_field(s: &str) -> String {
    if s.is_empty() {
        return "-".to_owned();
    }
    if s == "-" {
        return "%2D".to_owned();
    }
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c == '%' || c == ' ' || c.is_control() {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn unescape_field(s: &str) -> Option<String> {
    if s == "-" {
        return Some(String::new());
    }
    if s.is_empty() {
        return None;
    }
    let mut bytes = Vec::with_capacity(s.len());
    let mut it = s.bytes();
    while let Some(b) = it.next() {
        if b == b'%' {
            let hi = hex_upper(it.next()?)?;
            let lo = hex_upper(it.next()?)?;
            bytes.push(hi * 16 + lo);
        } else {
            bytes.push(b);
        }
    }
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::translate::pidf::is_valid_id;
    use crate::xmpp::stream::parse_fragment;

    const LYNC_BUSY: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<presence xmlns="urn:ietf:params:xml:ns:pidf" xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model"
 xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid" xmlns:msft="http://schemas.microsoft.com/2006/09/sip/presence"
 entity="sip:alice@contoso.com">
 <tuple id="0"><status><basic>open</basic></status>
  <contact priority="0.3">sip:alice@contoso.com;opaque=desk</contact></tuple>
 <tuple id="1"><status><basic>open</basic><msft:x/></status>
  <contact priority="0.9">sip:alice@contoso.com;opaque=mobile</contact>
  <note xml:lang="en">In a meeting</note></tuple>
 <dm:person id="p"><rpid:activities><rpid:meeting/></rpid:activities></dm:person>
</presence>"#;

    const CLOSED: &str = "<presence xmlns='urn:ietf:params:xml:ns:pidf' entity='sip:b@f'>\
        <tuple id='t1'><status><basic>closed</basic></status><note>Signed out</note></tuple></presence>";

    fn parse_presence(xml: &str) -> Result<XmppPresence, PresenceError> {
        XmppPresence::from_element(&parse_fragment(xml.as_bytes()).unwrap())
    }

    #[test]
    fn a_language_is_kept_once_and_only_when_it_looks_like_one() {
        // A stanza-sized xml:lang is not a language: dropped, never copied per status.
        let huge = "a".repeat(100_000);
        let statuses = "<status>s</status>".repeat(MAX_STATUSES);
        let p = parse_presence(&format!(
            "<presence xml:lang='{huge}'>{statuses}</presence>"
        ))
        .unwrap();
        assert_eq!(p.lang, None);
        assert!(p.statuses.iter().all(|s| s.lang.is_none()));
        // A valid stanza language is stored once; statuses that repeat it store nothing.
        let p = parse_presence(
            "<presence xml:lang='en-GB'><status>a</status><status xml:lang='en-GB'>b</status>\
             <status xml:lang='x y'>c</status><status xml:lang='zh-Hant-TW'>d</status></presence>",
        )
        .unwrap();
        assert_eq!(p.lang.as_deref(), Some("en-GB"));
        let own: Vec<_> = p.statuses.iter().map(|s| s.lang.as_deref()).collect();
        assert_eq!(own, [None, None, None, Some("zh-Hant-TW")]);
        let seen: Vec<_> = p.statuses.iter().map(|s| p.lang_of(s)).collect();
        assert_eq!(
            seen,
            [
                Some("en-GB"),
                Some("en-GB"),
                Some("en-GB"),
                Some("zh-Hant-TW")
            ]
        );
        for bad in [
            "",
            "-en",
            "en-",
            "e n",
            "123",
            "en--gb",
            "abcdefghi",
            &"a-".repeat(18),
        ] {
            assert_eq!(language_tag(bad), None, "{bad:?}");
        }
        for good in ["en", "de-CH", "i-klingon", "x-private", "sr-Latn-RS"] {
            assert_eq!(language_tag(good), Some(good));
        }
    }

    #[test]
    fn reads_and_writes_xmpp_presence() {
        let p = parse_presence(
            "<presence xml:lang='en' from='a@b/c'><show> dnd </show><status>Busy</status>\
             <status xml:lang='de'>Beschäftigt</status><priority> -5 </priority>\
             <x xmlns='vcard-temp:x:update'/></presence>",
        )
        .unwrap();
        assert_eq!(
            p,
            XmppPresence {
                kind: PresenceKind::Available,
                show: Some(Show::Dnd),
                statuses: vec![
                    Status {
                        text: "Busy".into(),
                        lang: None
                    },
                    Status {
                        text: "Beschäftigt".into(),
                        lang: Some("de".into())
                    },
                ],
                priority: -5,
                lang: Some("en".into()),
            }
        );
        assert_eq!(p.lang_of(&p.statuses[0]), Some("en"));
        assert_eq!(p.lang_of(&p.statuses[1]), Some("de"));
        assert_eq!(
            p.to_element().to_stream_xml(),
            "<presence xml:lang='en'><show>dnd</show><status>Busy</status>\
             <status xml:lang='de'>Beschäftigt</status><priority>-5</priority></presence>"
        );
        assert_eq!(XmppPresence::from_element(&p.to_element()), Ok(p));
        for kind in [
            PresenceKind::Available,
            PresenceKind::Unavailable,
            PresenceKind::Subscribe,
            PresenceKind::Subscribed,
            PresenceKind::Unsubscribe,
            PresenceKind::Unsubscribed,
            PresenceKind::Probe,
            PresenceKind::Error,
        ] {
            let p = XmppPresence::new(kind);
            assert_eq!(PresenceKind::from_type(kind.as_type()), Some(kind));
            assert_eq!(XmppPresence::from_element(&p.to_element()), Ok(p));
        }
        for show in [Show::Away, Show::Chat, Show::Dnd, Show::Xa] {
            assert_eq!(Show::parse(show.as_str()), Some(show));
        }
    }

    #[test]
    fn refuses_bad_presence() {
        let cases: &[(&str, PresenceError)] = &[
            ("<message/>", PresenceError::NotPresence),
            ("<presence xmlns='urn:x'/>", PresenceError::NotPresence),
            (
                "<presence type='away'/>",
                PresenceError::BadType {
                    value: "away".into(),
                },
            ),
            (
                "<presence><show>busy</show></presence>",
                PresenceError::BadShow {
                    value: "busy".into(),
                },
            ),
            (
                "<presence><priority>128</priority></presence>",
                PresenceError::BadPriority {
                    value: "128".into(),
                },
            ),
            (
                "<presence><priority>-129</priority></presence>",
                PresenceError::BadPriority {
                    value: "-129".into(),
                },
            ),
            (
                "<presence><priority>1.5</priority></presence>",
                PresenceError::BadPriority {
                    value: "1.5".into(),
                },
            ),
        ];
        for (xml, want) in cases {
            assert_eq!(parse_presence(xml).as_ref(), Err(want), "{xml}");
        }
        let many = format!(
            "<presence>{}</presence>",
            "<status>s</status>".repeat(MAX_STATUSES + 1)
        );
        assert_eq!(
            parse_presence(&many),
            Err(PresenceError::TooManyStatuses { max: MAX_STATUSES })
        );
        let big = format!(
            "<presence><status>{}</status></presence>",
            "x".repeat(MAX_STATUS_LEN + 1)
        );
        assert!(matches!(
            parse_presence(&big),
            Err(PresenceError::TooLarge { .. })
        ));
        // Extremes accepted; a second priority is ignored.
        assert_eq!(
            parse_presence("<presence><priority>-128</priority><priority>x</priority></presence>")
                .unwrap()
                .priority,
            -128
        );
    }

    #[test]
    fn priority_mapping_is_linear_and_exact() {
        assert_eq!(priority_to_qvalue(-128).thousandths(), 0);
        assert_eq!(priority_to_qvalue(0).thousandths(), 502);
        assert_eq!(priority_to_qvalue(127).thousandths(), 1000);
        let mut last = None;
        for p in i8::MIN..=i8::MAX {
            let q = priority_to_qvalue(p);
            assert_eq!(qvalue_to_priority(q), p, "priority {p} via {q}");
            assert!(last < Some(q));
            last = Some(q);
        }
        let mut last = i8::MIN;
        for t in 0..=1000 {
            let p = qvalue_to_priority(QValue::from_thousandths(t).unwrap());
            assert!(p >= last, "not monotonic at {t}");
            last = p;
        }
        assert_eq!(last, 127);
    }

    #[test]
    fn show_activity_table() {
        use Activity as A;
        let table: &[(Activity, Option<Show>)] = &[
            (A::Appointment, Some(Show::Dnd)),
            (A::Away, Some(Show::Away)),
            (A::Breakfast, Some(Show::Away)),
            (A::Busy, Some(Show::Dnd)),
            (A::Dinner, Some(Show::Away)),
            (A::Holiday, Some(Show::Xa)),
            (A::InTransit, Some(Show::Away)),
            (A::LookingForWork, Some(Show::Away)),
            (A::Meal, Some(Show::Away)),
            (A::Meeting, Some(Show::Dnd)),
            (A::OnThePhone, Some(Show::Dnd)),
            (A::Performance, Some(Show::Dnd)),
            (A::PermanentAbsence, Some(Show::Xa)),
            (A::Playing, Some(Show::Away)),
            (A::Presentation, Some(Show::Dnd)),
            (A::Shopping, Some(Show::Away)),
            (A::Sleeping, Some(Show::Xa)),
            (A::Spectator, Some(Show::Away)),
            (A::Steering, Some(Show::Dnd)),
            (A::Travel, Some(Show::Xa)),
            (A::Tv, Some(Show::Away)),
            (A::Unknown, None),
            (A::Vacation, Some(Show::Xa)),
            (A::Working, None),
            (A::Worship, Some(Show::Dnd)),
            (A::Other("Presenting".into()), None),
        ];
        for (a, want) in table {
            assert_eq!(show_for_activity(a), *want, "{a:?}");
        }
        assert_eq!(
            show_from_activities(&[A::Away, A::Busy, A::Vacation]),
            Some(Show::Dnd)
        );
        assert_eq!(
            show_from_activities(&[A::Away, A::Vacation]),
            Some(Show::Xa)
        );
        assert_eq!(show_from_activities(&[A::Working, A::Tv]), Some(Show::Away));
        assert_eq!(show_from_activities(&[]), None);
        // XMPP → PIDF → XMPP: away and dnd survive, xa becomes away, chat plain available.
        for (show, back) in [
            (None, None),
            (Some(Show::Chat), None),
            (Some(Show::Away), Some(Show::Away)),
            (Some(Show::Xa), Some(Show::Away)),
            (Some(Show::Dnd), Some(Show::Dnd)),
        ] {
            assert_eq!(
                show_from_activities(&show_to_activities(show)),
                back,
                "{show:?}"
            );
        }
    }

    #[test]
    fn resource_tuple_ids() {
        let resources = [
            "balcony",
            "Gajim.X1-2",
            "my phone",
            "a_b",
            "r",
            "-",
            ".",
            "/x@y",
            "Роме́о",
            "😀",
            "_41",
            "%20",
            "",
        ];
        for r in resources {
            let id = tuple_id_for_resource(Some(r));
            assert!(is_valid_id(&id), "{r:?} → {id:?}");
            assert_eq!(resource_for_tuple_id(&id).as_deref(), Some(r), "{id}");
        }
        assert_eq!(tuple_id_for_resource(Some("my phone")), "r-my_20phone");
        assert_eq!(tuple_id_for_resource(Some("a_b")), "r-a_5Fb");
        assert_eq!(tuple_id_for_resource(None), "r");
        assert_eq!(resource_for_tuple_id("r"), None);
        // Ids xsgw did not write are resources as they are.
        for foreign in [
            "0", "bs35r9", "r-_41", "r-_4", "r-_zz", "r-a b", "r-_FF", "r_x",
        ] {
            assert_eq!(resource_for_tuple_id(foreign).as_deref(), Some(foreign));
        }
    }

    #[test]
    fn xmpp_to_pidf_and_back() {
        let phone = XmppPresence {
            kind: PresenceKind::Available,
            show: Some(Show::Dnd),
            statuses: vec![Status {
                text: "On a call <3 & such".into(),
                lang: Some("en".into()),
            }],
            priority: 10,
            lang: None,
        };
        let desk = XmppPresence {
            kind: PresenceKind::Available,
            show: Some(Show::Away),
            statuses: vec![],
            priority: 5,
            lang: None,
        };
        let gone = XmppPresence::new(PresenceKind::Unavailable);
        let pidf = pidf_from_presence(
            "pres:juliet@example.com",
            &[
                ResourcePresence {
                    resource: Some("desk"),
                    contact: Some("xmpp:juliet@example.com/desk"),
                    presence: &desk,
                },
                ResourcePresence {
                    resource: Some("phone"),
                    contact: Some("xmpp:juliet@example.com/phone"),
                    presence: &phone,
                },
                ResourcePresence {
                    resource: Some("old pc"),
                    contact: None,
                    presence: &gone,
                },
            ],
        );
        let xml = pidf.to_xml().unwrap();
        let back = Pidf::parse(xml.as_bytes()).unwrap();
        assert_eq!(back, pidf);
        assert_eq!(back.tuples.len(), 3);
        assert_eq!(back.tuples[2].id, "r-old_20pc");
        assert_eq!(back.tuples[2].basic, Some(Basic::Closed));
        assert_eq!(
            back.person.as_ref().unwrap().activities,
            vec![Activity::Busy]
        );
        // The highest-priority open tuple describes the whole.
        assert_eq!(presence_from_pidf(&back), phone);
        let by_tuple = presences_by_tuple(&back);
        assert_eq!(by_tuple[0].0.as_deref(), Some("desk"));
        assert_eq!(by_tuple[0].1.priority, 5);
        assert_eq!(by_tuple[2].0.as_deref(), Some("old pc"));
        assert_eq!(by_tuple[2].1, gone);
        // Unavailable everywhere, and no resources at all.
        let pidf = pidf_from_presence(
            "pres:j@e",
            &[ResourcePresence {
                resource: None,
                contact: None,
                presence: &gone,
            }],
        );
        assert_eq!(pidf.tuples, vec![Tuple::new("r", Basic::Closed)]);
        assert_eq!(pidf.person, None);
        assert_eq!(presence_from_pidf(&pidf), gone);
        assert_eq!(
            pidf_from_presence("pres:j@e", &[]).tuples,
            vec![Tuple::new("r", Basic::Closed)]
        );
    }

    #[test]
    fn pidf_to_xmpp_samples() {
        let p = presence_from_pidf(&Pidf::parse(LYNC_BUSY.as_bytes()).unwrap());
        assert_eq!(p.kind, PresenceKind::Available);
        assert_eq!(p.show, Some(Show::Dnd));
        assert_eq!(p.statuses[0].text, "In a meeting");
        assert_eq!(
            p.priority,
            qvalue_to_priority(QValue::from_thousandths(900).unwrap())
        );
        let p = presence_from_pidf(&Pidf::parse(CLOSED.as_bytes()).unwrap());
        assert_eq!(
            p,
            XmppPresence {
                kind: PresenceKind::Unavailable,
                show: None,
                statuses: vec![Status {
                    text: "Signed out".into(),
                    lang: None
                }],
                priority: 0,
                lang: None,
            }
        );
        // No tuples: unavailable, document notes kept; tuples without basic are not open.
        let p = presence_from_pidf(
            &Pidf::parse(
                b"<presence xmlns='urn:ietf:params:xml:ns:pidf' entity='a'><note>gone</note></presence>",
            )
            .unwrap(),
        );
        assert_eq!(p.kind, PresenceKind::Unavailable);
        assert_eq!(p.statuses[0].text, "gone");
        let p = presence_from_pidf(
            &Pidf::parse(b"<presence xmlns='urn:ietf:params:xml:ns:pidf' entity='a'><tuple id='x'/></presence>")
                .unwrap(),
        );
        assert_eq!(p.kind, PresenceKind::Unavailable);
    }

    #[test]
    fn subscription_state_header() {
        let cases: &[(&str, NotifyState, &str)] = &[
            (
                "active;expires=3600",
                NotifyState::Active {
                    expires: Some(3600),
                },
                "active;expires=3600",
            ),
            ("ACTIVE", NotifyState::Active { expires: None }, "active"),
            (
                "pending;expires=60",
                NotifyState::Pending { expires: Some(60) },
                "pending;expires=60",
            ),
            (
                "waiting;expires=5",
                NotifyState::Pending { expires: Some(5) },
                "pending;expires=5",
            ),
            (
                "terminated;reason=rejected",
                NotifyState::Terminated {
                    reason: Some(Reason::Rejected),
                    retry_after: None,
                },
                "terminated;reason=rejected",
            ),
            (
                "terminated;reason=Probation;retry-after=30",
                NotifyState::Terminated {
                    reason: Some(Reason::Probation),
                    retry_after: Some(30),
                },
                "terminated;reason=probation;retry-after=30",
            ),
            (
                "terminated;reason=ms-custom",
                NotifyState::Terminated {
                    reason: Some(Reason::Other("ms-custom".into())),
                    retry_after: None,
                },
                "terminated;reason=ms-custom",
            ),
            (
                "terminated",
                NotifyState::Terminated {
                    reason: None,
                    retry_after: None,
                },
                "terminated",
            ),
        ];
        for (text, want, written) in cases {
            let h = TokenParams::parse(text.as_bytes()).unwrap();
            let got = NotifyState::from_header(&h);
            assert_eq!(&got, want, "{text}");
            assert_eq!(got.to_header_value(), *written);
            assert_eq!(
                NotifyState::from_header(&TokenParams::parse(written.as_bytes()).unwrap()),
                got
            );
        }
        for r in [
            "deactivated",
            "timeout",
            "giveup",
            "noresource",
            "invariant",
        ] {
            assert_eq!(Reason::parse(r).as_str(), r);
        }
        let odd = NotifyState::Terminated {
            reason: Some(Reason::Other("a b".into())),
            retry_after: None,
        };
        assert_eq!(odd.to_header_value(), "terminated");
    }

    #[test]
    fn sip_headers_parse_back() {
        use crate::sip::{parse_message, MessageBuilder, Method, Request, Uri};
        let uri = Uri::parse("sip:alice@contoso.com").unwrap();
        let common = [
            ("Via", "SIP/2.0/TLS gw.example.com;branch=z9hG4bK1"),
            ("From", "<sip:juliet@example.com>;tag=a"),
            ("To", "<sip:alice@contoso.com>"),
            ("Call-ID", "c1"),
            ("Max-Forwards", "70"),
        ];
        let mut b = MessageBuilder::request(&Method::Subscribe, &uri);
        for (n, v) in common {
            b.header(n, v).unwrap();
        }
        b.header("CSeq", "1 SUBSCRIBE").unwrap();
        for (n, v) in subscribe_headers(3600) {
            b.header(n, &v).unwrap();
        }
        let r = Request::from_message(parse_message(&b.to_bytes()).unwrap()).unwrap();
        assert!(is_presence_event(r.event.as_ref().unwrap()));
        assert_eq!(r.expires, Some(3600));
        assert!(r.accept.unwrap()[0].is("application", "pidf+xml"));

        let state = NotifyState::Terminated {
            reason: Some(Reason::Rejected),
            retry_after: None,
        };
        let mut b = MessageBuilder::request(&Method::Notify, &uri);
        for (n, v) in common {
            b.header(n, v).unwrap();
        }
        b.header("CSeq", "2 NOTIFY").unwrap();
        for (n, v) in notify_headers(&state) {
            b.header(n, &v).unwrap();
        }
        let body = pidf_from_presence("pres:juliet@example.com", &[])
            .to_xml()
            .unwrap();
        b.body(ACCEPT, body.into_bytes()).unwrap();
        let r = Request::from_message(parse_message(&b.to_bytes()).unwrap()).unwrap();
        assert_eq!(
            NotifyState::from_header(r.subscription_state.as_ref().unwrap()),
            state
        );
        let pidf = Pidf::parse(r.message().body()).unwrap();
        assert_eq!(presence_from_pidf(&pidf).kind, PresenceKind::Unavailable);
        assert!(!is_presence_event(&TokenParams::parse(b"dialog").unwrap()));
        assert!(is_presence_event(
            &TokenParams::parse(b"Presence;id=7").unwrap()
        ));
    }

    #[test]
    fn far_future_times_do_not_overflow() {
        let t0 = Instant::now();
        let mut s = Subscription::new(Direction::Inbound, "sip:a@b", "c@d");
        s.handle(Event::XmppSubscribed, t0);
        s.handle(
            Event::SipSubscribe {
                expires: u32::MAX,
                new_dialog: true,
            },
            t0,
        );
        let line = s.to_line(t0, u64::MAX - 5);
        assert!(line.contains(&u64::MAX.to_string()));
        let r = Subscription::from_line(
            &format!("xsgw-presence/1 in active {} a b -", u64::MAX),
            t0,
            0,
        )
        .unwrap();
        assert!(r.expires_at().unwrap() > t0);
        let mut o = active_outbound(t0);
        o.handle(response(200, Some(u32::MAX)), t0);
        o.handle(notify(active(u32::MAX), false), t0);
        assert!(o.poll_timeout().unwrap() > t0);
    }

    fn active(expires: u32) -> NotifyState {
        NotifyState::Active {
            expires: Some(expires),
        }
    }

    fn terminated(reason: Reason) -> NotifyState {
        NotifyState::Terminated {
            reason: Some(reason),
            retry_after: None,
        }
    }

    fn response(status: u16, expires: Option<u32>) -> Event {
        Event::SubscribeResponse {
            status,
            expires,
            min_expires: None,
            fetch: false,
        }
    }

    fn notify(state: NotifyState, has_body: bool) -> Event {
        Event::Notify {
            state,
            has_body,
            fetch: false,
        }
    }

    /// An outbound subscription brought to Active, and the time.
    fn active_outbound(t0: Instant) -> Subscription {
        let mut s = Subscription::new(
            Direction::Outbound,
            "sip:alice@contoso.com",
            "juliet@example.com",
        );
        s.handle(Event::XmppSubscribe, t0);
        s.handle(response(200, Some(3600)), t0);
        s.handle(notify(active(3600), true), t0);
        assert_eq!(s.state(), SubscriptionState::Active);
        s
    }

    #[test]
    fn outbound_subscribe_approve_refresh_unsubscribe() {
        let t0 = Instant::now();
        let mut s = Subscription::new(
            Direction::Outbound,
            "sip:alice@contoso.com",
            "juliet@example.com",
        );
        assert_eq!(
            s.handle(Event::XmppSubscribe, t0),
            vec![
                Action::SendSubscribe {
                    expires: 3600,
                    dialog: DialogUse::New
                },
                Action::Persist
            ]
        );
        assert_eq!(s.state(), SubscriptionState::Pending);
        // 200 is neutral: nothing to XMPP, only the refresh timer.
        let at = t0 + Duration::from_secs(2880);
        assert_eq!(
            s.handle(response(200, Some(3600)), t0),
            vec![Action::SetTimer { at }, Action::Persist]
        );
        assert_eq!(s.state(), SubscriptionState::Pending);
        // NOTIFY pending: nothing forwarded, even with a body.
        assert_eq!(
            s.handle(
                notify(
                    NotifyState::Pending {
                        expires: Some(3600)
                    },
                    true
                ),
                t0
            ),
            vec![Action::RespondNotify { status: 200 }]
        );
        // NOTIFY active: subscribed, then the presence.
        assert_eq!(
            s.handle(notify(active(3600), true), t0),
            vec![
                Action::RespondNotify { status: 200 },
                Action::SendXmpp {
                    kind: PresenceKind::Subscribed
                },
                Action::Persist,
                Action::SetTimer { at },
                Action::ForwardPresence,
            ]
        );
        assert_eq!(s.poll_timeout(), Some(at));
        // Early timeout does nothing; the due one refreshes in the dialog.
        assert_eq!(
            s.handle(Event::Timeout, at - Duration::from_secs(1)),
            vec![]
        );
        assert_eq!(
            s.handle(Event::Timeout, at),
            vec![Action::SendSubscribe {
                expires: 3600,
                dialog: DialogUse::Existing
            }]
        );
        // A shorter grant: refresh at 80 % of it.
        assert_eq!(
            s.handle(response(200, Some(100)), at),
            vec![
                Action::SetTimer {
                    at: at + Duration::from_secs(80)
                },
                Action::Persist
            ]
        );
        // XMPP user online again: refresh; probe: one-shot fetch, its NOTIFY forwarded.
        assert_eq!(
            s.handle(Event::XmppAvailable, at),
            vec![Action::SendSubscribe {
                expires: 3600,
                dialog: DialogUse::Existing
            }]
        );
        assert_eq!(
            s.handle(Event::XmppProbe, at),
            vec![Action::SendSubscribe {
                expires: 0,
                dialog: DialogUse::Fetch
            }]
        );
        assert_eq!(
            s.handle(
                Event::Notify {
                    state: terminated(Reason::Timeout),
                    has_body: true,
                    fetch: true
                },
                at
            ),
            vec![
                Action::RespondNotify { status: 200 },
                Action::ForwardPresence
            ]
        );
        assert_eq!(s.state(), SubscriptionState::Active);
        // Already subscribed: subscribe is confirmed at once.
        assert_eq!(
            s.handle(Event::XmppSubscribe, at),
            vec![Action::SendXmpp {
                kind: PresenceKind::Subscribed
            }]
        );
        // Unsubscribe: Expires 0, then unsubscribed on success.
        assert_eq!(
            s.handle(Event::XmppUnsubscribe, at),
            vec![
                Action::SendSubscribe {
                    expires: 0,
                    dialog: DialogUse::Existing
                },
                Action::Persist
            ]
        );
        assert_eq!(
            s.handle(notify(active(10), true), at),
            vec![Action::RespondNotify { status: 200 }]
        );
        assert_eq!(
            s.handle(response(200, Some(0)), at),
            vec![
                Action::SendXmpp {
                    kind: PresenceKind::Unsubscribed
                },
                Action::Forget
            ]
        );
        assert_eq!(s.state(), SubscriptionState::None);
        // A NOTIFY for nothing gets 481.
        assert_eq!(
            s.handle(notify(active(10), true), at),
            vec![Action::RespondNotify { status: 481 }]
        );
    }

    #[test]
    fn outbound_refresh_failures() {
        let t0 = Instant::now();
        for status in [403, 489, 603] {
            let mut s = active_outbound(t0);
            assert_eq!(
                s.handle(response(status, None), t0),
                vec![
                    Action::SendXmpp {
                        kind: PresenceKind::Unsubscribed
                    },
                    Action::Forget
                ],
                "{status}"
            );
        }
        // 481 on a refresh: new dialog, approval again from its first NOTIFY.
        let mut s = active_outbound(t0);
        assert_eq!(
            s.handle(response(481, None), t0),
            vec![
                Action::SendSubscribe {
                    expires: 3600,
                    dialog: DialogUse::New
                },
                Action::Persist
            ]
        );
        assert_eq!(s.state(), SubscriptionState::Pending);
        // ... and a 481 to that new-dialog SUBSCRIBE ends it (no loop).
        assert_eq!(
            s.handle(response(481, None), t0),
            vec![
                Action::SendXmpp {
                    kind: PresenceKind::Unsubscribed
                },
                Action::Forget
            ]
        );
        // 423: retried with Min-Expires in the same dialog.
        let mut s = active_outbound(t0);
        assert_eq!(
            s.handle(
                Event::SubscribeResponse {
                    status: 423,
                    expires: None,
                    min_expires: Some(7200),
                    fetch: false
                },
                t0
            ),
            vec![Action::SendSubscribe {
                expires: 7200,
                dialog: DialogUse::Existing
            }]
        );
        // Transient failures keep the subscription and back off.
        let mut s = active_outbound(t0);
        let mut delays = Vec::new();
        for status in [503, 408, 500, 480, 404, 503, 503, 503, 503, 503] {
            let actions = s.handle(response(status, None), t0);
            let [Action::SetTimer { at }] = actions[..] else {
                panic!("{status}: {actions:?}")
            };
            delays.push((at - t0).as_secs());
            assert_eq!(s.state(), SubscriptionState::Active);
        }
        assert_eq!(delays, [30, 60, 120, 240, 480, 960, 1920, 3600, 3600, 3600]);
        // Past expiry, the retry goes to a new dialog.
        let late = t0 + Duration::from_secs(4000);
        assert_eq!(
            s.handle(Event::Timeout, late),
            vec![Action::SendSubscribe {
                expires: 3600,
                dialog: DialogUse::New
            }]
        );
        // Provisional responses and responses to fetches change nothing.
        let mut s = active_outbound(t0);
        assert_eq!(s.handle(response(100, None), t0), vec![]);
        assert_eq!(
            s.handle(
                Event::SubscribeResponse {
                    status: 403,
                    expires: None,
                    min_expires: None,
                    fetch: true
                },
                t0
            ),
            vec![]
        );
        assert!(s.is_active());
    }

    #[test]
    fn outbound_initial_failures_and_terminations() {
        let t0 = Instant::now();
        for status in [404, 403, 603, 400, 489] {
            let mut s = Subscription::new(Direction::Outbound, "sip:a@b", "c@d");
            s.handle(Event::XmppSubscribe, t0);
            assert_eq!(
                s.handle(response(status, None), t0),
                vec![
                    Action::SendXmpp {
                        kind: PresenceKind::Unsubscribed
                    },
                    Action::Forget
                ],
                "{status}"
            );
        }
        for reason in [Reason::Rejected, Reason::Noresource, Reason::Invariant] {
            let mut s = active_outbound(t0);
            assert_eq!(
                s.handle(notify(terminated(reason.clone()), true), t0),
                vec![
                    Action::RespondNotify { status: 200 },
                    Action::SendXmpp {
                        kind: PresenceKind::Unsubscribed
                    },
                    Action::Forget
                ],
                "{reason:?}"
            );
        }
        for reason in [Some(Reason::Deactivated), Some(Reason::Timeout), None] {
            let mut s = active_outbound(t0);
            assert_eq!(
                s.handle(
                    notify(
                        NotifyState::Terminated {
                            reason,
                            retry_after: None
                        },
                        true
                    ),
                    t0
                ),
                vec![
                    Action::RespondNotify { status: 200 },
                    Action::SendSubscribe {
                        expires: 3600,
                        dialog: DialogUse::New
                    },
                    Action::Persist
                ]
            );
            assert_eq!(s.state(), SubscriptionState::Pending);
        }
        let mut s = active_outbound(t0);
        let at = t0 + Duration::from_secs(90);
        assert_eq!(
            s.handle(
                notify(
                    NotifyState::Terminated {
                        reason: Some(Reason::Probation),
                        retry_after: Some(90)
                    },
                    false
                ),
                t0
            ),
            vec![
                Action::RespondNotify { status: 200 },
                Action::SetTimer { at },
                Action::Persist
            ]
        );
        assert_eq!(
            s.handle(Event::Timeout, at),
            vec![Action::SendSubscribe {
                expires: 3600,
                dialog: DialogUse::New
            }]
        );
        // Active → pending: presence stops.
        let mut s = active_outbound(t0);
        s.handle(notify(NotifyState::Pending { expires: None }, false), t0);
        assert_eq!(
            s.handle(notify(NotifyState::Pending { expires: None }, true), t0),
            vec![Action::RespondNotify { status: 200 }]
        );
        // Probe when not approved: nothing.
        let mut s = Subscription::new(Direction::Outbound, "sip:a@b", "c@d");
        assert_eq!(s.handle(Event::XmppProbe, t0), vec![]);
        s.handle(Event::XmppSubscribe, t0);
        assert_eq!(s.handle(Event::XmppProbe, t0), vec![]);
        assert_eq!(
            s.handle(
                Event::Notify {
                    state: active(5),
                    has_body: true,
                    fetch: true
                },
                t0
            ),
            vec![Action::RespondNotify { status: 200 }]
        );
    }

    #[test]
    fn inbound_approve_update_refuse_expire() {
        let t0 = Instant::now();
        let mut s = Subscription::new(
            Direction::Inbound,
            "sip:alice@contoso.com",
            "juliet@example.com",
        );
        let exp = t0 + Duration::from_secs(3600);
        assert_eq!(
            s.handle(
                Event::SipSubscribe {
                    expires: 7200,
                    new_dialog: true
                },
                t0
            ),
            vec![
                Action::RespondSubscribe {
                    status: 200,
                    expires: 3600
                },
                Action::SendNotify {
                    state: NotifyState::Pending {
                        expires: Some(3600)
                    },
                    with_presence: false
                },
                Action::SendXmpp {
                    kind: PresenceKind::Subscribe
                },
                Action::SetTimer { at: exp },
                Action::Persist,
            ]
        );
        // Presence of the XMPP user does not flow before approval.
        assert_eq!(s.handle(Event::XmppPresence, t0), vec![]);
        let t1 = t0 + Duration::from_secs(600);
        assert_eq!(
            s.handle(Event::XmppSubscribed, t1),
            vec![
                Action::SendNotify {
                    state: active(3000),
                    with_presence: true
                },
                Action::SendXmpp {
                    kind: PresenceKind::Probe
                },
                Action::Persist,
            ]
        );
        assert_eq!(
            s.handle(Event::XmppPresence, t1),
            vec![Action::SendNotify {
                state: active(3000),
                with_presence: true
            }]
        );
        // Refresh.
        let exp2 = t1 + Duration::from_secs(1800);
        assert_eq!(
            s.handle(
                Event::SipSubscribe {
                    expires: 1800,
                    new_dialog: false
                },
                t1
            ),
            vec![
                Action::RespondSubscribe {
                    status: 200,
                    expires: 1800
                },
                Action::SendNotify {
                    state: active(1800),
                    with_presence: true
                },
                Action::SetTimer { at: exp2 },
                Action::Persist,
            ]
        );
        // Expiry: terminated;reason=timeout, approval kept.
        assert_eq!(
            s.handle(Event::Timeout, exp2),
            vec![
                Action::SendNotify {
                    state: terminated(Reason::Timeout),
                    with_presence: false
                },
                Action::Persist
            ]
        );
        assert_eq!(s.state(), SubscriptionState::Approved);
        assert_eq!(s.handle(Event::XmppPresence, exp2), vec![]);
        // A new SUBSCRIBE is active at once.
        let actions = s.handle(
            Event::SipSubscribe {
                expires: 3600,
                new_dialog: true,
            },
            exp2,
        );
        assert_eq!(
            actions[1],
            Action::SendNotify {
                state: active(3600),
                with_presence: true
            }
        );
        assert_eq!(
            actions[2],
            Action::SendXmpp {
                kind: PresenceKind::Probe
            }
        );
        // Unsubscribe (Expires 0 in the dialog): final NOTIFY, approval kept.
        assert_eq!(
            s.handle(
                Event::SipSubscribe {
                    expires: 0,
                    new_dialog: false
                },
                exp2
            ),
            vec![
                Action::RespondSubscribe {
                    status: 200,
                    expires: 0
                },
                Action::SendNotify {
                    state: terminated(Reason::Timeout),
                    with_presence: true
                },
                Action::Persist
            ]
        );
        assert_eq!(s.state(), SubscriptionState::Approved);
        // Revocation.
        assert_eq!(
            s.handle(Event::XmppUnsubscribed, exp2),
            vec![Action::Forget]
        );
        assert_eq!(s.state(), SubscriptionState::None);
    }

    #[test]
    fn inbound_refusal_fetch_and_brief_interval() {
        let t0 = Instant::now();
        let mut s = Subscription::new(Direction::Inbound, "sip:a@b", "c@d");
        assert_eq!(
            s.handle(
                Event::SipSubscribe {
                    expires: 30,
                    new_dialog: true
                },
                t0
            ),
            vec![Action::RespondSubscribe {
                status: 423,
                expires: MIN_EXPIRES
            }]
        );
        assert_eq!(s.state(), SubscriptionState::None);
        // A fetch by someone not approved gets no presence.
        assert_eq!(
            s.handle(
                Event::SipSubscribe {
                    expires: 0,
                    new_dialog: true
                },
                t0
            ),
            vec![
                Action::RespondSubscribe {
                    status: 200,
                    expires: 0
                },
                Action::SendNotify {
                    state: terminated(Reason::Timeout),
                    with_presence: false
                },
            ]
        );
        s.handle(
            Event::SipSubscribe {
                expires: 3600,
                new_dialog: true,
            },
            t0,
        );
        assert_eq!(
            s.handle(Event::XmppUnsubscribed, t0),
            vec![
                Action::SendNotify {
                    state: terminated(Reason::Rejected),
                    with_presence: false
                },
                Action::Forget
            ]
        );
        // Withdrawn before the XMPP user answered.
        s.handle(
            Event::SipSubscribe {
                expires: 3600,
                new_dialog: true,
            },
            t0,
        );
        assert_eq!(
            s.handle(
                Event::SipSubscribe {
                    expires: 0,
                    new_dialog: false
                },
                t0
            ),
            vec![
                Action::RespondSubscribe {
                    status: 200,
                    expires: 0
                },
                Action::SendNotify {
                    state: terminated(Reason::Timeout),
                    with_presence: false
                },
                Action::SendXmpp {
                    kind: PresenceKind::Unsubscribe
                },
                Action::Forget
            ]
        );
        // Pending expires unanswered; a late approval is kept for next time.
        s.handle(
            Event::SipSubscribe {
                expires: 60,
                new_dialog: true,
            },
            t0,
        );
        let late = t0 + Duration::from_secs(60);
        assert_eq!(
            s.handle(Event::Timeout, late),
            vec![
                Action::SendNotify {
                    state: terminated(Reason::Timeout),
                    with_presence: false
                },
                Action::Forget
            ]
        );
        assert_eq!(s.handle(Event::XmppSubscribed, late), vec![Action::Persist]);
        assert_eq!(s.state(), SubscriptionState::Approved);
        // A fetch by an approved watcher gets the presence.
        assert_eq!(
            s.handle(
                Event::SipSubscribe {
                    expires: 0,
                    new_dialog: true
                },
                late
            )[1],
            Action::SendNotify {
                state: terminated(Reason::Timeout),
                with_presence: true
            }
        );
        // Events of the other direction are ignored.
        assert_eq!(s.handle(Event::XmppSubscribe, late), vec![]);
        assert_eq!(s.handle(notify(active(1), true), late), vec![]);
    }

    #[test]
    fn restart_from_lines() {
        let t0 = Instant::now();
        let unix0 = 1_790_000_000;
        // Outbound active: a new dialog, approval again from the NOTIFY.
        let mut s = active_outbound(t0);
        s.dialog = "call-id=abc@x;tags=1,2 %".into();
        let line = s.to_line(t0, unix0);
        assert_eq!(
            line,
            "xsgw-presence/1 out active 1790003600 sip:alice@contoso.com juliet@example.com \
             call-id=abc@x;tags=1,2%20%25"
        );
        // A restart 100 s later.
        let t1 = t0 + Duration::from_secs(5);
        let mut r = Subscription::from_line(&line, t1, unix0 + 100).unwrap();
        assert_eq!(r.dialog, s.dialog);
        assert_eq!(r.expires_at(), Some(t1 + Duration::from_secs(3500)));
        assert_eq!(r.poll_timeout(), None);
        assert_eq!(
            r.handle(Event::Restart, t1),
            vec![
                Action::SendSubscribe {
                    expires: 3600,
                    dialog: DialogUse::New
                },
                Action::Persist
            ]
        );
        // Inbound active: NOTIFY with the current presence in the kept dialog.
        let mut s = Subscription::new(Direction::Inbound, "sip:a@b", "c@d");
        s.handle(
            Event::SipSubscribe {
                expires: 3600,
                new_dialog: true,
            },
            t0,
        );
        s.handle(Event::XmppSubscribed, t0);
        let line = s.to_line(t0, unix0);
        let mut r = Subscription::from_line(&line, t1, unix0 + 100).unwrap();
        assert_eq!(
            r.handle(Event::Restart, t1),
            vec![
                Action::SendNotify {
                    state: active(3500),
                    with_presence: true
                },
                Action::SetTimer {
                    at: t1 + Duration::from_secs(3500)
                }
            ]
        );
        // ... or, when it lapsed while xsgw was down, approval only.
        let mut r = Subscription::from_line(&line, t1, unix0 + 4000).unwrap();
        assert_eq!(r.handle(Event::Restart, t1), vec![Action::Persist]);
        assert_eq!(r.state(), SubscriptionState::Approved);
        // Outbound unsubscribing: finished.
        let mut s = active_outbound(t0);
        s.handle(Event::XmppUnsubscribe, t0);
        let mut r = Subscription::from_line(&s.to_line(t0, unix0), t1, unix0).unwrap();
        assert_eq!(
            r.handle(Event::Restart, t1),
            vec![
                Action::SendXmpp {
                    kind: PresenceKind::Unsubscribed
                },
                Action::Forget
            ]
        );
    }

    #[test]
    fn lines_round_trip() {
        let t0 = Instant::now();
        let unix0 = 1_000;
        let names = [
            "sip:a@b",
            "sip:%20 x@b;user=phone",
            "-",
            "é@ü/Роме́о 😀",
            "a\tb\nc",
        ];
        for direction in [Direction::Outbound, Direction::Inbound] {
            for state in [
                SubscriptionState::None,
                SubscriptionState::Pending,
                SubscriptionState::Active,
                SubscriptionState::Approved,
                SubscriptionState::Unsubscribing,
            ] {
                if !state.fits(direction) {
                    continue;
                }
                for name in names {
                    for expires in [None, Some(0), Some(59), Some(3600)] {
                        let mut s = Subscription::new(direction, name, name);
                        s.state = state;
                        s.expires_at = expires.map(|e| t0 + Duration::from_secs(e));
                        s.dialog = name.to_owned();
                        let line = s.to_line(t0, unix0);
                        assert!(!line.contains('\n'));
                        let back = Subscription::from_line(&line, t0, unix0).unwrap();
                        assert_eq!(back, s, "{line}");
                        assert_eq!(back.to_line(t0, unix0), line);
                    }
                }
            }
        }
    }

    #[test]
    fn refuses_corrupt_lines() {
        let good = "xsgw-presence/1 in active 1000 sip:a@b c@d -";
        let t0 = Instant::now();
        assert!(Subscription::from_line(good, t0, 0).is_ok());
        let cases: &[(&str, LineError)] = &[
            ("", LineError::FieldCount { found: 1 }),
            (
                "xsgw-presence/1 in active 1000 sip:a@b c@d",
                LineError::FieldCount { found: 6 },
            ),
            (
                "xsgw-presence/1 in active 1000 sip:a@b c@d - x",
                LineError::FieldCount { found: 8 },
            ),
            (
                "xsgw-presence/1  in active 1000 sip:a@b c@d",
                LineError::BadField { field: "direction" },
            ),
            (
                "xsgw-presence/2 in active 1000 sip:a@b c@d -",
                LineError::UnknownFormat,
            ),
            (
                "xsgw-presence/1 up active 1000 sip:a@b c@d -",
                LineError::BadField { field: "direction" },
            ),
            (
                "xsgw-presence/1 in fine 1000 sip:a@b c@d -",
                LineError::BadField { field: "state" },
            ),
            (
                "xsgw-presence/1 in unsubscribing 1000 sip:a@b c@d -",
                LineError::BadField { field: "state" },
            ),
            (
                "xsgw-presence/1 out approved 1000 sip:a@b c@d -",
                LineError::BadField { field: "state" },
            ),
            (
                "xsgw-presence/1 in active -5 sip:a@b c@d -",
                LineError::BadField { field: "expires" },
            ),
            (
                "xsgw-presence/1 in active 99999999999999999999999 sip:a@b c@d -",
                LineError::BadField { field: "expires" },
            ),
            (
                "xsgw-presence/1 in active  sip:a@b c@d -",
                LineError::BadField { field: "expires" },
            ),
            (
                "xsgw-presence/1 in active 1000 sip:a%2 c@d -",
                LineError::BadField { field: "sip user" },
            ),
            (
                "xsgw-presence/1 in active 1000 sip:a%zz c@d -",
                LineError::BadField { field: "sip user" },
            ),
            (
                "xsgw-presence/1 in active 1000 sip:a@b %FF -",
                LineError::BadField { field: "xmpp user" },
            ),
            (
                "xsgw-presence/1 in active 1000 sip:a@b c@d %",
                LineError::BadField { field: "dialog" },
            ),
            (
                "xsgw-presence/1 in active 1000 - c@d -",
                LineError::BadField { field: "user" },
            ),
            (
                "xsgw-presence/1 in active 1000 sip:a@b c@d -\n",
                LineError::ControlCharacter,
            ),
            (
                "xsgw-presence/1 in active 1000 sip:a@b c@d -\0",
                LineError::ControlCharacter,
            ),
        ];
        for (line, want) in cases {
            assert_eq!(
                Subscription::from_line(line, t0, 0).as_ref(),
                Err(want),
                "{line:?}"
            );
        }
        let long = format!(
            "xsgw-presence/1 in active 1000 sip:a@b c@d {}",
            "x".repeat(MAX_LINE)
        );
        assert!(matches!(
            Subscription::from_line(&long, t0, 0),
            Err(LineError::TooLarge { .. })
        ));
        // A torn write (any prefix) never reads as a different valid subscription.
        let line = active_outbound(t0).to_line(t0, 0);
        for cut in 0..line.len() {
            if let Some(prefix) = line.get(..cut) {
                if let Ok(s) = Subscription::from_line(prefix, t0, 0) {
                    // Only a cut inside the last field can parse; it must differ visibly.
                    assert_ne!(s.to_line(t0, 0), line);
                }
            }
        }
    }

    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    fn random_notify_state(rng: &mut XorShift) -> NotifyState {
        let expires = [None, Some(0), Some(30), Some(3600)][rng.below(4) as usize];
        match rng.below(3) {
            0 => NotifyState::Active { expires },
            1 => NotifyState::Pending { expires },
            _ => NotifyState::Terminated {
                reason: [
                    None,
                    Some(Reason::Deactivated),
                    Some(Reason::Probation),
                    Some(Reason::Rejected),
                    Some(Reason::Timeout),
                    Some(Reason::Giveup),
                    Some(Reason::Noresource),
                    Some(Reason::Invariant),
                    Some(Reason::Other("x".into())),
                ][rng.below(9) as usize]
                    .clone(),
                retry_after: [None, Some(0), Some(60)][rng.below(3) as usize],
            },
        }
    }

    fn random_event(rng: &mut XorShift) -> Event {
        match rng.below(13) {
            0 => Event::XmppSubscribe,
            1 => Event::XmppUnsubscribe,
            2 => Event::XmppProbe,
            3 => Event::XmppAvailable,
            4 => Event::SubscribeResponse {
                status: [100, 200, 202, 403, 404, 408, 423, 481, 489, 500, 503, 603]
                    [rng.below(12) as usize],
                expires: [None, Some(0), Some(60), Some(3600)][rng.below(4) as usize],
                min_expires: [None, Some(120)][rng.below(2) as usize],
                fetch: rng.below(4) == 0,
            },
            5 | 6 => Event::Notify {
                state: random_notify_state(rng),
                has_body: rng.below(4) != 0,
                fetch: rng.below(4) == 0,
            },
            7 => Event::SipSubscribe {
                expires: [0, 30, 60, 3600, 100_000][rng.below(5) as usize],
                new_dialog: rng.below(2) == 0,
            },
            8 => Event::XmppSubscribed,
            9 => Event::XmppUnsubscribed,
            10 => Event::XmppPresence,
            11 => Event::Timeout,
            _ => Event::Restart,
        }
    }

    /// The no-leak property: for any order of events, presence goes out only when an
    /// independent model says the pair is approved.
    ///
    /// Model, outbound: the XMPP user wants the subscription (last of subscribe/unsubscribe
    /// was subscribe) and the SIP side's last word in the subscription's own dialog was
    /// `active`. Inbound: the XMPP user's last word was `subscribed`.
    #[test]
    fn no_presence_leaks_whatever_the_order() {
        let mut rng = XorShift(0x2545_F491_4F6C_DD1D);
        let mut forwards = 0;
        let mut notifies_with_presence = 0;
        for run in 0..2000 {
            let direction = if run % 2 == 0 {
                Direction::Outbound
            } else {
                Direction::Inbound
            };
            let mut s = Subscription::new(direction, "sip:alice@contoso.com", "juliet@example.com");
            let t0 = Instant::now();
            let mut now = t0;
            let mut user_wants = false;
            let mut sip_active = false;
            let mut user_approved = false;
            for _ in 0..60 {
                now += Duration::from_secs(rng.below(2000));
                let mut event = random_event(&mut rng);
                if event == Event::Timeout {
                    if let Some(at) = s.poll_timeout() {
                        now = now.max(at);
                    }
                }
                match &event {
                    Event::XmppSubscribe => user_wants = true,
                    Event::XmppUnsubscribe => user_wants = false,
                    Event::XmppSubscribed => user_approved = true,
                    Event::XmppUnsubscribed => user_approved = false,
                    Event::Notify {
                        state,
                        fetch: false,
                        ..
                    } => sip_active = matches!(state, NotifyState::Active { .. }),
                    _ => {}
                }
                if event == Event::Restart {
                    // Persist and read back, as a restart does.
                    let line = s.to_line(now, 1_000_000);
                    s = Subscription::from_line(&line, now, 1_000_000)
                        .unwrap_or_else(|e| panic!("{line}: {e}"));
                    event = Event::Restart;
                }
                let actions = s.handle(event.clone(), now);
                for a in &actions {
                    match a {
                        Action::ForwardPresence => {
                            forwards += 1;
                            assert!(
                                direction == Direction::Outbound && user_wants && sip_active,
                                "leak on {event:?}: {actions:?}"
                            );
                        }
                        Action::SendNotify {
                            state,
                            with_presence,
                        } => {
                            assert_eq!(direction, Direction::Inbound);
                            if *with_presence {
                                notifies_with_presence += 1;
                                assert!(user_approved, "leak on {event:?}: {actions:?}");
                            }
                            if matches!(state, NotifyState::Active { .. }) {
                                assert!(user_approved, "active without approval on {event:?}");
                            }
                        }
                        Action::SetTimer { at } => assert!(*at >= now),
                        _ => {}
                    }
                }
                assert!(s.state().fits(direction));
            }
        }
        assert!(forwards > 100, "only {forwards} forwards");
        assert!(
            notifies_with_presence > 100,
            "only {notifies_with_presence} notifies"
        );
    }
}
