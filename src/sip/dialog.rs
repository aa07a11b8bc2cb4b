//! Dialogs (RFC 3261 §12) for INVITE sessions and subscriptions (RFC 6665 §4.1.2, §4.2.2),
//! sans-IO: the state a user agent keeps between requests, and the requests and responses
//! it builds from it.
//!
//! ```text
//!  UAS: request ─▶ Dialog::answer(req, 2xx, tag, contact)  (Record-Route copied, §12.1.1)
//!                  Dialog::uas(req, tag)                    route set = Record-Route as received
//!  UAC: request + 2xx ─▶ Dialog::uac(req, resp)             route set = Record-Route reversed
//!  in-dialog request received ─▶ Dialog::handle_request     CSeq order (500), target refresh,
//!                                                           BYE / NOTIFY terminated ─▶ Terminated
//!  in-dialog request sent ◀── Dialog::request(method)      Request-URI = remote target,
//!                                                           Route = route set (loose routing),
//!                                                           CSeq = local + 1
//! ```
//!
//! [`Dialogs`] is a bounded table keyed by [`DialogId`]; a request with a To tag that matches
//! no dialog gets 481 (§12.2.2). Out of scope: strict routing (a route set whose first
//! element lacks `lr`: the Request-URI is still the remote target; the Edge loose-routes),
//! forking (one dialog per early response), session timers, GRUU.

use std::collections::HashMap;
use std::fmt;

use super::build::{response_to, BuildError, MessageBuilder};
use super::header::{Contact, NameAddr};
use super::name;
use super::request::{Method, Request, Response};
use super::status::StatusCode;
use super::uri::Uri;

/// At most this many dialogs in one [`Dialogs`] table.
pub const MAX_DIALOGS: usize = 100_000;

/// Identifies a dialog from this side (§12): Call-ID, local tag, remote tag.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DialogId {
    /// Call-ID.
    pub call_id: String,
    /// Our tag.
    pub local_tag: String,
    /// The peer's tag.
    pub remote_tag: String,
}

impl DialogId {
    /// The dialog a received request belongs to (To tag = ours, From tag = theirs); `None`
    /// outside a dialog (no To tag).
    pub fn of_request(req: &Request) -> Option<DialogId> {
        Some(DialogId {
            call_id: req.call_id.clone(),
            local_tag: req.to.tag()?.to_owned(),
            remote_tag: req.from.tag().unwrap_or("").to_owned(),
        })
    }
}

/// What the dialog is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DialogKind {
    /// An INVITE session (IM session with SDP `m=message`).
    Invite,
    /// A subscription for this event package (RFC 6665).
    Subscription {
        /// The Event value's token (`presence`).
        event: String,
    },
}

/// Where the dialog is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialogState {
    /// Established by a 2xx (subscriptions: by the 2xx or the first NOTIFY).
    Confirmed,
    /// Ended by BYE, a NOTIFY with `Subscription-State: terminated`, or locally.
    Terminated,
}

/// Why a dialog could not be made or a request does not fit it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DialogError {
    /// The request or response has no tag where one is needed.
    MissingTag,
    /// No usable Contact (remote target) in the request or 2xx.
    NoContact,
    /// The method does not create dialogs.
    NotDialogCreating,
    /// The request's CSeq is lower than one already seen (answer 500, §12.2.2).
    CSeqOutOfOrder {
        /// Received.
        got: u32,
        /// Highest seen.
        seen: u32,
    },
    /// The dialog has ended.
    Terminated,
    /// [`MAX_DIALOGS`] dialogs exist already.
    TooMany {
        /// The limit.
        max: usize,
    },
    /// A header could not be built.
    Build(BuildError),
}

impl fmt::Display for DialogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DialogError::MissingTag => f.write_str("dialog tag missing"),
            DialogError::NoContact => f.write_str("no usable contact for the remote target"),
            DialogError::NotDialogCreating => f.write_str("method does not create a dialog"),
            DialogError::CSeqOutOfOrder { got, seen } => {
                write!(f, "cseq {got} is lower than {seen} already seen")
            }
            DialogError::Terminated => f.write_str("dialog terminated"),
            DialogError::TooMany { max } => write!(f, "{max} dialogs already exist"),
            DialogError::Build(e) => write!(f, "cannot build: {e}"),
        }
    }
}

impl std::error::Error for DialogError {}

impl DialogError {
    /// The status that answers a request this error refuses.
    pub fn status(&self) -> StatusCode {
        match self {
            DialogError::CSeqOutOfOrder { .. } | DialogError::Build(_) => {
                StatusCode::SERVER_INTERNAL_ERROR
            }
            DialogError::TooMany { .. } => StatusCode::SERVICE_UNAVAILABLE,
            DialogError::Terminated => StatusCode::CALL_DOES_NOT_EXIST,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// The state of one dialog; see the module documentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dialog {
    /// Call-ID and tags.
    pub id: DialogId,
    /// Session or subscription.
    pub kind: DialogKind,
    /// Confirmed or terminated.
    pub state: DialogState,
    /// Our address (From of our requests), with our tag.
    pub local: NameAddr,
    /// The peer's address (To of our requests), with its tag.
    pub remote: NameAddr,
    /// Last CSeq we sent.
    pub local_seq: u32,
    /// Highest CSeq received (`None` before the first request from the peer).
    pub remote_seq: Option<u32>,
    /// Where in-dialog requests go (the peer's Contact).
    pub remote_target: Uri,
    /// Route headers of in-dialog requests, in order.
    pub route_set: Vec<NameAddr>,
}

fn kind_of(req: &Request) -> Result<DialogKind, DialogError> {
    match req.method {
        Method::Invite => Ok(DialogKind::Invite),
        Method::Subscribe | Method::Notify => Ok(DialogKind::Subscription {
            event: req
                .event
                .as_ref()
                .map(|e| e.value.to_ascii_lowercase())
                .unwrap_or_else(|| "presence".into()),
        }),
        _ => Err(DialogError::NotDialogCreating),
    }
}

fn first_contact(contacts: &[Contact]) -> Option<Uri> {
    contacts.iter().find_map(|c| match c {
        Contact::Addr(a) => Some(a.uri.clone()),
        Contact::Star => None,
    })
}

impl Dialog {
    /// The 2xx (or other) answer of a UAS to `req`: §8.2.6 headers, `local_tag` on To, the
    /// Record-Route values copied in order (§12.1.1), and `contact` as Contact.
    pub fn answer(
        req: &Request,
        status: StatusCode,
        local_tag: &str,
        contact: &Uri,
    ) -> Result<MessageBuilder, BuildError> {
        let mut b = response_to(req, status, Some(local_tag))?;
        for rr in req.message().all(name::RECORD_ROUTE) {
            if let Some(v) = rr.value_str() {
                b.header(name::RECORD_ROUTE.canonical, &v)?;
            }
        }
        b.header(name::CONTACT.canonical, &format!("<{contact}>"))?;
        Ok(b)
    }

    /// The dialog a UAS holds after answering `req` 2xx with `local_tag` (§12.1.1).
    pub fn uas(req: &Request, local_tag: &str) -> Result<Dialog, DialogError> {
        let kind = kind_of(req)?;
        let remote_tag = req.from.tag().ok_or(DialogError::MissingTag)?;
        let remote_target = first_contact(&req.contact).ok_or(DialogError::NoContact)?;
        let mut local = req.to.clone();
        local
            .set_tag(local_tag)
            .map_err(|_| DialogError::MissingTag)?;
        Ok(Dialog {
            id: DialogId {
                call_id: req.call_id.clone(),
                local_tag: local_tag.to_owned(),
                remote_tag: remote_tag.to_owned(),
            },
            kind,
            state: DialogState::Confirmed,
            local,
            remote: req.from.clone(),
            local_seq: 0,
            remote_seq: Some(req.cseq.seq),
            remote_target,
            route_set: req.record_route.clone(),
        })
    }

    /// The dialog a UAC holds after `resp` (2xx, or a NOTIFY's request for subscriptions
    /// is handled by [`Dialog::uas`] on the NOTIFY) to its request `req` (§12.1.2).
    pub fn uac(req: &Request, resp: &Response) -> Result<Dialog, DialogError> {
        let kind = kind_of(req)?;
        let local_tag = req.from.tag().ok_or(DialogError::MissingTag)?;
        let remote_tag = resp.to.tag().ok_or(DialogError::MissingTag)?;
        let remote_target = first_contact(&resp.contact).ok_or(DialogError::NoContact)?;
        let mut route_set = resp.record_route.clone();
        route_set.reverse();
        Ok(Dialog {
            id: DialogId {
                call_id: req.call_id.clone(),
                local_tag: local_tag.to_owned(),
                remote_tag: remote_tag.to_owned(),
            },
            kind,
            state: DialogState::Confirmed,
            local: req.from.clone(),
            remote: resp.to.clone(),
            local_seq: req.cseq.seq,
            remote_seq: None,
            remote_target,
            route_set,
        })
    }

    /// Checks and applies a request received in this dialog (§12.2.2): CSeq order, target
    /// refresh (INVITE, SUBSCRIBE, NOTIFY with a Contact), termination by BYE or by a NOTIFY
    /// whose Subscription-State is `terminated`. The caller answers 481/500 on error.
    pub fn handle_request(&mut self, req: &Request) -> Result<(), DialogError> {
        if self.state == DialogState::Terminated {
            return Err(DialogError::Terminated);
        }
        if req.method == Method::Ack {
            return Ok(());
        }
        if let Some(seen) = self.remote_seq {
            if req.cseq.seq < seen {
                return Err(DialogError::CSeqOutOfOrder {
                    got: req.cseq.seq,
                    seen,
                });
            }
        }
        self.remote_seq = Some(req.cseq.seq);
        if matches!(
            req.method,
            Method::Invite | Method::Subscribe | Method::Notify
        ) {
            if let Some(target) = first_contact(&req.contact) {
                self.remote_target = target;
            }
        }
        let ends = match req.method {
            Method::Bye => true,
            Method::Notify => req
                .subscription_state
                .as_ref()
                .is_some_and(|s| s.value.eq_ignore_ascii_case("terminated")),
            Method::Subscribe => req.expires == Some(0),
            _ => false,
        };
        if ends {
            self.state = DialogState::Terminated;
        }
        Ok(())
    }

    /// A new request in this dialog (§12.2.1.1): Request-URI = remote target, Route = the
    /// route set, From/To with the tags, Call-ID, the next local CSeq. Add Event, Contact,
    /// bodies as the method needs; the connection adds Via and Max-Forwards.
    pub fn request(&mut self, method: &Method) -> Result<MessageBuilder, DialogError> {
        if self.state == DialogState::Terminated && *method != Method::Ack {
            return Err(DialogError::Terminated);
        }
        self.local_seq = self.local_seq.saturating_add(1);
        self.build(method, self.local_seq)
    }

    /// The ACK for a 2xx to our INVITE with CSeq `invite_seq` (§13.2.2.4).
    pub fn ack(&self, invite_seq: u32) -> Result<MessageBuilder, DialogError> {
        self.build(&Method::Ack, invite_seq)
    }

    fn build(&self, method: &Method, seq: u32) -> Result<MessageBuilder, DialogError> {
        let mut b = MessageBuilder::request(method, &self.remote_target);
        let e = DialogError::Build;
        for r in &self.route_set {
            b.header_display(name::ROUTE.canonical, r).map_err(e)?;
        }
        b.header_display(name::FROM.canonical, &self.local)
            .map_err(e)?
            .header_display(name::TO.canonical, &self.remote)
            .map_err(e)?
            .header(name::CALL_ID.canonical, &self.id.call_id)
            .map_err(e)?
            .header(name::CSEQ.canonical, &format!("{seq} {}", method.as_str()))
            .map_err(e)?;
        Ok(b)
    }
}

/// A bounded table of dialogs.
#[derive(Debug, Default)]
pub struct Dialogs {
    dialogs: HashMap<DialogId, Dialog>,
}

impl Dialogs {
    /// An empty table.
    pub fn new() -> Dialogs {
        Dialogs::default()
    }

    /// Adds `dialog`, replacing one with the same id.
    pub fn insert(&mut self, dialog: Dialog) -> Result<(), DialogError> {
        if self.dialogs.len() >= MAX_DIALOGS && !self.dialogs.contains_key(&dialog.id) {
            return Err(DialogError::TooMany { max: MAX_DIALOGS });
        }
        self.dialogs.insert(dialog.id.clone(), dialog);
        Ok(())
    }

    /// The dialog under `id`.
    pub fn get_mut(&mut self, id: &DialogId) -> Option<&mut Dialog> {
        self.dialogs.get_mut(id)
    }

    /// Routes a request received with a To tag: `Ok(dialog)` after
    /// [`Dialog::handle_request`]; `Err(status)` to answer (481 when no dialog matches).
    /// Terminated dialogs are removed after the request that ended them.
    pub fn handle_request(&mut self, req: &Request) -> Result<Dialog, StatusCode> {
        let id = DialogId::of_request(req).ok_or(StatusCode::CALL_DOES_NOT_EXIST)?;
        let dialog = self
            .dialogs
            .get_mut(&id)
            .ok_or(StatusCode::CALL_DOES_NOT_EXIST)?;
        dialog.handle_request(req).map_err(|e| e.status())?;
        let copy = dialog.clone();
        if copy.state == DialogState::Terminated {
            self.dialogs.remove(&id);
        }
        Ok(copy)
    }

    /// Removes a dialog (ended locally).
    pub fn remove(&mut self, id: &DialogId) -> Option<Dialog> {
        self.dialogs.remove(id)
    }

    /// How many dialogs exist.
    pub fn len(&self) -> usize {
        self.dialogs.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.dialogs.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::parse_message;

    const INVITE: &[u8] = b"INVITE sip:alice@gmail.test SIP/2.0\r\n\
Via: SIP/2.0/TLS 127.0.10.30;branch=z9hG4bKe1\r\n\
Record-Route: <sip:127.0.10.30;transport=tls;r2=on;lr>\r\n\
Record-Route: <sip:127.0.10.30;r2=on;lr>\r\n\
From: <sip:bob@contoso.test>;tag=bob1\r\n\
To: <sip:alice@gmail.test>\r\n\
Call-ID: d1\r\n\
CSeq: 10 INVITE\r\n\
Contact: <sip:bob@127.0.10.40:5060>\r\n\
Content-Length: 0\r\n\r\n";

    fn req(bytes: &[u8]) -> Request {
        Request::from_message(parse_message(bytes).unwrap()).unwrap()
    }

    fn gw_contact() -> Uri {
        Uri::parse("sip:gw.contoso.test:5061;transport=tls").unwrap()
    }

    #[test]
    fn uas_answer_copies_record_route_and_the_dialog_follows_it() {
        let invite = req(INVITE);
        let ok = Dialog::answer(&invite, StatusCode::OK, "gw1", &gw_contact()).unwrap();
        let resp = Response::from_message(parse_message(&ok.to_bytes()).unwrap()).unwrap();
        assert_eq!(resp.record_route, invite.record_route);
        assert_eq!(resp.to.tag(), Some("gw1"));
        let mut d = Dialog::uas(&invite, "gw1").unwrap();
        assert_eq!(d.remote_target.as_str(), "sip:bob@127.0.10.40:5060");
        let bye = d.request(&Method::Bye).unwrap().to_bytes();
        let text = String::from_utf8(bye).unwrap();
        assert!(text.starts_with("BYE sip:bob@127.0.10.40:5060 SIP/2.0\r\nRoute: <sip:127.0.10.30;transport=tls;r2=on;lr>\r\nRoute: <sip:127.0.10.30;r2=on;lr>\r\n"), "{text}");
        assert!(
            text.contains("From: <sip:alice@gmail.test>;tag=gw1\r\n"),
            "{text}"
        );
        assert!(
            text.contains("To: <sip:bob@contoso.test>;tag=bob1\r\n"),
            "{text}"
        );
        assert!(text.contains("CSeq: 1 BYE\r\n"), "{text}");
    }

    #[test]
    fn uac_reverses_the_route_set_and_acks() {
        let invite = req(INVITE);
        let ok = Dialog::answer(&invite, StatusCode::OK, "gw1", &gw_contact()).unwrap();
        let resp = Response::from_message(parse_message(&ok.to_bytes()).unwrap()).unwrap();
        let d = Dialog::uac(&invite, &resp).unwrap();
        assert_eq!(d.route_set.len(), 2);
        assert_eq!(d.route_set[0], invite.record_route[1]);
        assert_eq!(d.remote_target, gw_contact());
        let ack = String::from_utf8(d.ack(10).unwrap().to_bytes()).unwrap();
        assert!(ack.contains("CSeq: 10 ACK\r\n"), "{ack}");
    }

    #[test]
    fn in_dialog_requests_are_checked_and_end_the_dialog() {
        let invite = req(INVITE);
        let mut table = Dialogs::new();
        table.insert(Dialog::uas(&invite, "gw1").unwrap()).unwrap();
        let in_dialog = |method: &str, seq: u32, to_tag: &str| {
            let text = format!("{method} sip:gw.contoso.test SIP/2.0\r\nVia: SIP/2.0/TLS h;branch=z9hG4bK{seq}\r\nFrom: <sip:bob@contoso.test>;tag=bob1\r\nTo: <sip:alice@gmail.test>;tag={to_tag}\r\nCall-ID: d1\r\nCSeq: {seq} {method}\r\nContent-Length: 0\r\n\r\n");
            req(text.as_bytes())
        };
        assert!(table.handle_request(&in_dialog("INFO", 11, "gw1")).is_ok());
        assert_eq!(
            table
                .handle_request(&in_dialog("INFO", 5, "gw1"))
                .unwrap_err(),
            StatusCode::SERVER_INTERNAL_ERROR
        );
        assert_eq!(
            table
                .handle_request(&in_dialog("INFO", 12, "other"))
                .unwrap_err(),
            StatusCode::CALL_DOES_NOT_EXIST
        );
        let ended = table.handle_request(&in_dialog("BYE", 12, "gw1")).unwrap();
        assert_eq!(ended.state, DialogState::Terminated);
        assert!(table.is_empty());
        assert_eq!(
            table
                .handle_request(&in_dialog("BYE", 13, "gw1"))
                .unwrap_err(),
            StatusCode::CALL_DOES_NOT_EXIST
        );
    }

    #[test]
    fn notify_terminated_ends_a_subscription() {
        let sub = String::from_utf8(INVITE.to_vec())
            .unwrap()
            .replace("INVITE sip", "SUBSCRIBE sip")
            .replace("10 INVITE", "1 SUBSCRIBE")
            .replace("Content-Length", "Event: presence\r\nContent-Length");
        let sub = req(sub.as_bytes());
        let ok = Dialog::answer(&sub, StatusCode::OK, "gw1", &gw_contact()).unwrap();
        let resp = Response::from_message(parse_message(&ok.to_bytes()).unwrap()).unwrap();
        // The gateway as subscriber: the peer's NOTIFY comes in the dialog.
        let mut d = Dialog::uac(&sub, &resp).unwrap();
        assert_eq!(
            d.kind,
            DialogKind::Subscription {
                event: "presence".into()
            }
        );
        let notify = String::from("NOTIFY sip:bob@127.0.10.40:5060 SIP/2.0\r\nVia: SIP/2.0/TLS h;branch=z9hG4bKn\r\nFrom: <sip:alice@gmail.test>;tag=gw1\r\nTo: <sip:bob@contoso.test>;tag=bob1\r\nCall-ID: d1\r\nCSeq: 1 NOTIFY\r\nEvent: presence\r\nSubscription-State: terminated;reason=timeout\r\nContact: <sip:gw2.contoso.test>\r\nContent-Length: 0\r\n\r\n");
        d.handle_request(&req(notify.as_bytes())).unwrap();
        assert_eq!(d.state, DialogState::Terminated);
        assert_eq!(d.remote_target.as_str(), "sip:gw2.contoso.test");
        assert!(d.request(&Method::Subscribe).is_err());
    }
}
