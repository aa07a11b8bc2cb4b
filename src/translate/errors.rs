//! XMPP stanza errors ⇄ SIP status codes (RFC 7247 §7), one exhaustive table each way.
//!
//! Owns: [`xmpp_to_sip`] (an XMPP error came back for a stanza that a SIP request caused: which
//! final response to send) and [`sip_to_xmpp`] (a SIP request that an XMPP stanza caused
//! failed: which stanza error to bounce). Out of scope: building the error stanza or the SIP
//! response (see `xmpp::error` and `sip::build`), and errors of the gateway's own making,
//! which carry their own mapping (`AddressError`, `ImError`, `TypingError`).
//!
//! ```text
//!  SIP UA ── MESSAGE ──▶ xsgw ── <message/> ──▶ XMPP server
//!  SIP UA ◀── 404 ────── xsgw ◀── <error><item-not-found/></error>     xmpp_to_sip
//!
//!  XMPP client ── <message/> ──▶ xsgw ── MESSAGE ──▶ Edge
//!  XMPP client ◀── <error><recipient-unavailable/> ◀── 480 ──          sip_to_xmpp
//! ```
//!
//! Where the project's table departs from RFC 7247 (house decision, `protocol-notes.md` §7):
//! `service-unavailable` never becomes 503, because a SIP 503 tells the previous hop to try
//! another server (RFC 3261 §21.5.4) rather than reporting that the user has no such service.

use crate::sip::{Method, StatusCode};
use crate::xmpp::error::{StanzaErrorCondition, StanzaErrorType};

/// What the gateway knows beyond the condition, where a row of the table has two answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ErrorContext {
    /// The SIP method itself is what the XMPP side cannot do (e.g. an INFO with no XMPP
    /// equivalent): `feature-not-implemented` and `service-unavailable` become 405.
    pub method_refused: bool,
    /// `remote-server-not-found` arose because resolving or connecting timed out: 408.
    pub timed_out: bool,
    /// A `gone` error carried a new address (the router puts it in Contact): 301.
    pub new_address: bool,
}

impl ErrorContext {
    /// The context for an error that answers a request with `method`, when the XMPP side has
    /// no equivalent for that method at all (anything but MESSAGE, INVITE/ACK/BYE/CANCEL of an
    /// IM session, INFO typing, SUBSCRIBE/NOTIFY, OPTIONS).
    pub fn for_unsupported_method(method: &Method) -> ErrorContext {
        let supported = matches!(
            method,
            Method::Message
                | Method::Invite
                | Method::Ack
                | Method::Bye
                | Method::Cancel
                | Method::Info
                | Method::Subscribe
                | Method::Notify
                | Method::Options
        );
        ErrorContext {
            method_refused: !supported,
            ..ErrorContext::default()
        }
    }
}

/// XMPP stanza error condition → SIP final response (RFC 7247 §7.1, as amended in the module
/// doc). Always a 3xx–6xx code.
pub fn xmpp_to_sip(condition: StanzaErrorCondition, context: ErrorContext) -> StatusCode {
    use StanzaErrorCondition as C;
    match condition {
        C::BadRequest
        | C::Conflict
        | C::JidMalformed
        | C::SubscriptionRequired
        | C::UndefinedCondition => StatusCode::BAD_REQUEST,
        C::FeatureNotImplemented => {
            if context.method_refused {
                StatusCode::METHOD_NOT_ALLOWED
            } else {
                StatusCode::NOT_IMPLEMENTED
            }
        }
        C::Forbidden | C::NotAllowed | C::PolicyViolation => StatusCode::FORBIDDEN,
        C::Gone => {
            if context.new_address {
                StatusCode::MOVED_PERMANENTLY
            } else {
                StatusCode::GONE
            }
        }
        C::InternalServerError | C::ResourceConstraint => StatusCode::SERVER_INTERNAL_ERROR,
        C::ItemNotFound => StatusCode::NOT_FOUND,
        C::NotAcceptable => StatusCode::NOT_ACCEPTABLE,
        C::NotAuthorized => StatusCode::UNAUTHORIZED,
        C::RecipientUnavailable => StatusCode::TEMPORARILY_UNAVAILABLE,
        C::Redirect => StatusCode::MOVED_TEMPORARILY,
        C::RegistrationRequired => StatusCode::PROXY_AUTHENTICATION_REQUIRED,
        C::RemoteServerNotFound => {
            if context.timed_out {
                StatusCode::REQUEST_TIMEOUT
            } else {
                StatusCode::NOT_FOUND
            }
        }
        C::RemoteServerTimeout => StatusCode::REQUEST_TIMEOUT,
        C::ServiceUnavailable => {
            if context.method_refused {
                StatusCode::METHOD_NOT_ALLOWED
            } else {
                StatusCode::FORBIDDEN
            }
        }
        C::UnexpectedRequest => StatusCode::REQUEST_PENDING,
    }
}

/// SIP final response → XMPP stanza error (RFC 7247 §7.2): specific codes first, then the
/// class default. `None` for 1xx and 2xx, which are not errors. The type is the condition's
/// RFC 6120 default.
pub fn sip_to_xmpp(status: StatusCode) -> Option<(StanzaErrorType, StanzaErrorCondition)> {
    use StanzaErrorCondition as C;
    let code = status.as_u16();
    let specific = match code {
        400 => Some(C::BadRequest),
        401 => Some(C::NotAuthorized),
        407 => Some(C::RegistrationRequired),
        402 | 403 => Some(C::Forbidden),
        404 | 481 | 484 | 485 | 604 => Some(C::ItemNotFound),
        405 | 420 | 501 => Some(C::FeatureNotImplemented),
        406 | 415 | 488 | 606 => Some(C::NotAcceptable),
        408 | 504 => Some(C::RemoteServerTimeout),
        410 => Some(C::Gone),
        413 | 414 | 440 | 489 | 513 => Some(C::PolicyViolation),
        480 | 486 | 600 | 603 => Some(C::RecipientUnavailable),
        491 => Some(C::UnexpectedRequest),
        502 => Some(C::RemoteServerNotFound),
        _ => None,
    };
    let condition = match (specific, status.class()) {
        (Some(c), _) => c,
        (None, 1 | 2) => return None,
        (None, 3) => C::Redirect,
        (None, 4) => C::BadRequest,
        (None, 5) => C::InternalServerError,
        // 6xx; StatusCode holds nothing outside 100..=699.
        (None, _) => C::RecipientUnavailable,
    };
    Some((condition.default_type(), condition))
}

#[cfg(test)]
mod tests {
    use super::*;
    use StanzaErrorCondition as C;

    fn to_sip(c: StanzaErrorCondition) -> u16 {
        xmpp_to_sip(c, ErrorContext::default()).as_u16()
    }

    fn to_xmpp(code: u16) -> StanzaErrorCondition {
        sip_to_xmpp(StatusCode::new(code).unwrap()).unwrap().1
    }

    const METHOD: ErrorContext = ErrorContext {
        method_refused: true,
        timed_out: false,
        new_address: false,
    };

    // XMPP → SIP, one test per row of protocol-notes §7.

    #[test]
    fn xmpp_bad_request_conflict_jid_malformed_subscription_required_undefined_condition_400() {
        for c in [
            C::BadRequest,
            C::Conflict,
            C::JidMalformed,
            C::SubscriptionRequired,
            C::UndefinedCondition,
        ] {
            assert_eq!(to_sip(c), 400, "{c}");
        }
    }

    #[test]
    fn xmpp_feature_not_implemented_501_or_405_for_the_method() {
        assert_eq!(to_sip(C::FeatureNotImplemented), 501);
        assert_eq!(xmpp_to_sip(C::FeatureNotImplemented, METHOD).as_u16(), 405);
    }

    #[test]
    fn xmpp_forbidden_not_allowed_policy_violation_403() {
        for c in [C::Forbidden, C::NotAllowed, C::PolicyViolation] {
            assert_eq!(to_sip(c), 403, "{c}");
        }
    }

    #[test]
    fn xmpp_gone_410_or_301_with_new_address() {
        assert_eq!(to_sip(C::Gone), 410);
        let ctx = ErrorContext {
            new_address: true,
            ..ErrorContext::default()
        };
        assert_eq!(xmpp_to_sip(C::Gone, ctx).as_u16(), 301);
    }

    #[test]
    fn xmpp_internal_server_error_resource_constraint_500() {
        assert_eq!(to_sip(C::InternalServerError), 500);
        assert_eq!(to_sip(C::ResourceConstraint), 500);
    }

    #[test]
    fn xmpp_item_not_found_404() {
        assert_eq!(to_sip(C::ItemNotFound), 404);
    }

    #[test]
    fn xmpp_not_acceptable_406() {
        assert_eq!(to_sip(C::NotAcceptable), 406);
    }

    #[test]
    fn xmpp_not_authorized_401() {
        assert_eq!(to_sip(C::NotAuthorized), 401);
    }

    #[test]
    fn xmpp_recipient_unavailable_480() {
        assert_eq!(to_sip(C::RecipientUnavailable), 480);
    }

    #[test]
    fn xmpp_redirect_302() {
        assert_eq!(to_sip(C::Redirect), 302);
    }

    #[test]
    fn xmpp_registration_required_407() {
        assert_eq!(to_sip(C::RegistrationRequired), 407);
    }

    #[test]
    fn xmpp_remote_server_not_found_404_or_408_when_timed_out() {
        assert_eq!(to_sip(C::RemoteServerNotFound), 404);
        let ctx = ErrorContext {
            timed_out: true,
            ..ErrorContext::default()
        };
        assert_eq!(xmpp_to_sip(C::RemoteServerNotFound, ctx).as_u16(), 408);
    }

    #[test]
    fn xmpp_remote_server_timeout_408() {
        assert_eq!(to_sip(C::RemoteServerTimeout), 408);
    }

    #[test]
    fn xmpp_service_unavailable_403_or_405_never_503() {
        assert_eq!(to_sip(C::ServiceUnavailable), 403);
        assert_eq!(xmpp_to_sip(C::ServiceUnavailable, METHOD).as_u16(), 405);
        for c in StanzaErrorCondition::ALL {
            for method_refused in [false, true] {
                for timed_out in [false, true] {
                    for new_address in [false, true] {
                        let ctx = ErrorContext {
                            method_refused,
                            timed_out,
                            new_address,
                        };
                        let code = xmpp_to_sip(*c, ctx);
                        assert_ne!(code, StatusCode::SERVICE_UNAVAILABLE, "{c}");
                        assert!((300..=699).contains(&code.as_u16()), "{c}");
                    }
                }
            }
        }
    }

    #[test]
    fn xmpp_unexpected_request_491() {
        assert_eq!(to_sip(C::UnexpectedRequest), 491);
    }

    // SIP → XMPP, one test per row of protocol-notes §7.

    #[test]
    fn sip_3xx_redirect() {
        for code in [300, 301, 302, 305, 380, 399] {
            assert_eq!(to_xmpp(code), C::Redirect, "{code}");
        }
    }

    #[test]
    fn sip_400_bad_request() {
        assert_eq!(to_xmpp(400), C::BadRequest);
    }

    #[test]
    fn sip_401_407_not_authorized_registration_required() {
        assert_eq!(to_xmpp(401), C::NotAuthorized);
        assert_eq!(to_xmpp(407), C::RegistrationRequired);
    }

    #[test]
    fn sip_402_403_forbidden() {
        assert_eq!(to_xmpp(402), C::Forbidden);
        assert_eq!(to_xmpp(403), C::Forbidden);
    }

    #[test]
    fn sip_404_481_484_485_604_item_not_found() {
        for code in [404, 481, 484, 485, 604] {
            assert_eq!(to_xmpp(code), C::ItemNotFound, "{code}");
        }
    }

    #[test]
    fn sip_405_420_501_feature_not_implemented() {
        for code in [405, 420, 501] {
            assert_eq!(to_xmpp(code), C::FeatureNotImplemented, "{code}");
        }
    }

    #[test]
    fn sip_406_415_488_606_not_acceptable() {
        for code in [406, 415, 488, 606] {
            assert_eq!(to_xmpp(code), C::NotAcceptable, "{code}");
        }
    }

    #[test]
    fn sip_408_504_remote_server_timeout() {
        assert_eq!(to_xmpp(408), C::RemoteServerTimeout);
        assert_eq!(to_xmpp(504), C::RemoteServerTimeout);
    }

    #[test]
    fn sip_410_gone() {
        assert_eq!(to_xmpp(410), C::Gone);
    }

    #[test]
    fn sip_413_414_440_489_513_policy_violation() {
        for code in [413, 414, 440, 489, 513] {
            assert_eq!(to_xmpp(code), C::PolicyViolation, "{code}");
        }
    }

    #[test]
    fn sip_480_486_600_603_recipient_unavailable() {
        for code in [480, 486, 600, 603] {
            assert_eq!(to_xmpp(code), C::RecipientUnavailable, "{code}");
        }
    }

    #[test]
    fn sip_491_unexpected_request() {
        assert_eq!(to_xmpp(491), C::UnexpectedRequest);
    }

    #[test]
    fn sip_502_remote_server_not_found() {
        assert_eq!(to_xmpp(502), C::RemoteServerNotFound);
    }

    #[test]
    fn sip_other_4xx_bad_request() {
        for code in [409, 411, 412, 416, 421, 423, 482, 483, 487, 493, 499] {
            assert_eq!(to_xmpp(code), C::BadRequest, "{code}");
        }
    }

    #[test]
    fn sip_other_5xx_internal_server_error() {
        for code in [500, 503, 505, 580, 599] {
            assert_eq!(to_xmpp(code), C::InternalServerError, "{code}");
        }
    }

    #[test]
    fn sip_other_6xx_recipient_unavailable() {
        for code in [601, 605, 607, 699] {
            assert_eq!(to_xmpp(code), C::RecipientUnavailable, "{code}");
        }
    }

    #[test]
    fn every_3xx_to_6xx_maps_and_1xx_2xx_are_refused() {
        for code in 100..=699 {
            let status = StatusCode::new(code).unwrap();
            match sip_to_xmpp(status) {
                None => assert!(code < 300, "{code}"),
                Some((t, c)) => {
                    assert!(code >= 300, "{code}");
                    assert_eq!(t, c.default_type(), "{code}");
                }
            }
        }
    }

    #[test]
    fn error_types_follow_rfc6120_defaults() {
        assert_eq!(
            sip_to_xmpp(StatusCode::NOT_FOUND),
            Some((StanzaErrorType::Cancel, C::ItemNotFound))
        );
        assert_eq!(
            sip_to_xmpp(StatusCode::TEMPORARILY_UNAVAILABLE),
            Some((StanzaErrorType::Wait, C::RecipientUnavailable))
        );
        assert_eq!(
            sip_to_xmpp(StatusCode::FORBIDDEN),
            Some((StanzaErrorType::Auth, C::Forbidden))
        );
    }

    #[test]
    fn method_context() {
        assert!(!ErrorContext::for_unsupported_method(&Method::Message).method_refused);
        assert!(ErrorContext::for_unsupported_method(&Method::Register).method_refused);
        assert!(ErrorContext::for_unsupported_method(&Method::Other("FOO".into())).method_refused);
    }
}
