//! Wire tables for XMPP error conditions and the elements that carry them.
//!
//! Owns: stream error conditions (RFC 6120 §4.9.3) and the `<stream:error>` element (§4.9.2);
//! stanza error conditions (§8.3.3), error types (§8.3.2) and the stanza `<error>` child (§8.3).
//! Each table is one `match` from variant to wire name and back, every row tested.
//!
//! Out of scope: deciding which condition to send (the stream parser and the session pick it),
//! mapping to SIP status codes (the translation layer owns RFC 7247's tables), and
//! application-specific conditions beyond keeping them when parsing.
//!
//! ```text
//!  <stream:error>                                   <error type='cancel' by='gw.example'>
//!    <policy-violation xmlns='…xmpp-streams'/>        <item-not-found xmlns='…xmpp-stanzas'/>
//!    <text xmlns='…xmpp-streams'>stanza too large</text>  <text xmlns='…xmpp-stanzas'>…</text>
//!  </stream:error>                                  </error>
//! ```

use std::fmt;

use super::element::{Element, NS_STREAMS, NS_XML};

/// Namespace of stream error conditions and their `<text/>` (RFC 6120 §4.9.2).
pub const NS_STREAM_ERRORS: &str = "urn:ietf:params:xml:ns:xmpp-streams";
/// Namespace of stanza error conditions and their `<text/>` (RFC 6120 §8.3.2).
pub const NS_STANZA_ERRORS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";

macro_rules! wire_table {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $wire:literal,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum $name {
            $($(#[$vmeta])* $variant,)*
        }

        impl $name {
            /// Every variant, in table order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];

            /// The element or attribute name on the wire.
            pub fn wire_name(self) -> &'static str {
                match self {
                    $($name::$variant => $wire,)*
                }
            }

            /// The variant for a wire name, if it is one of the table's.
            pub fn from_wire(name: &str) -> Option<Self> {
                match name {
                    $($wire => Some($name::$variant),)*
                    _ => None,
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.wire_name())
            }
        }
    };
}

wire_table! {
    /// A defined stream error condition (RFC 6120 §4.9.3).
    StreamErrorCondition {
        /// §4.9.3.1: XML that cannot be processed.
        BadFormat = "bad-format",
        /// §4.9.3.2: an unsupported or unbound namespace prefix.
        BadNamespacePrefix = "bad-namespace-prefix",
        /// §4.9.3.3: a new stream conflicts with an existing one.
        Conflict = "conflict",
        /// §4.9.3.4: no traffic for too long.
        ConnectionTimeout = "connection-timeout",
        /// §4.9.3.5: the `to` domain is no longer served here.
        HostGone = "host-gone",
        /// §4.9.3.6: the `to` domain is not served here.
        HostUnknown = "host-unknown",
        /// §4.9.3.7: a stanza lacks a required `to` or `from`.
        ImproperAddressing = "improper-addressing",
        /// §4.9.3.8: a local fault.
        InternalServerError = "internal-server-error",
        /// §4.9.3.9: the `from` does not match an authenticated domain.
        InvalidFrom = "invalid-from",
        /// §4.9.3.10: wrong stream or content namespace.
        InvalidNamespace = "invalid-namespace",
        /// §4.9.3.11: XML invalid against the schema.
        InvalidXml = "invalid-xml",
        /// §4.9.3.12: data sent before the stream was authenticated.
        NotAuthorized = "not-authorized",
        /// §4.9.3.13: XML that is not well-formed.
        NotWellFormed = "not-well-formed",
        /// §4.9.3.14: a local policy was violated (e.g. a size limit).
        PolicyViolation = "policy-violation",
        /// §4.9.3.15: a needed remote connection failed.
        RemoteConnectionFailed = "remote-connection-failed",
        /// §4.9.3.16: the stream is being reset by the server.
        Reset = "reset",
        /// §4.9.3.17: out of resources.
        ResourceConstraint = "resource-constraint",
        /// §4.9.3.18: restricted XML (comments, PIs, DTDs, entity references).
        RestrictedXml = "restricted-xml",
        /// §4.9.3.19: connect to another host instead.
        SeeOtherHost = "see-other-host",
        /// §4.9.3.20: the server is shutting down.
        SystemShutdown = "system-shutdown",
        /// §4.9.3.21: none of the above.
        UndefinedCondition = "undefined-condition",
        /// §4.9.3.22: an encoding other than UTF-8.
        UnsupportedEncoding = "unsupported-encoding",
        /// §4.9.3.23: a required feature is not supported.
        UnsupportedFeature = "unsupported-feature",
        /// §4.9.3.24: an unknown first-level child element.
        UnsupportedStanzaType = "unsupported-stanza-type",
        /// §4.9.3.25: an unsupported stream version.
        UnsupportedVersion = "unsupported-version",
    }
}

wire_table! {
    /// A defined stanza error condition (RFC 6120 §8.3.3).
    StanzaErrorCondition {
        /// §8.3.3.1.
        BadRequest = "bad-request",
        /// §8.3.3.2.
        Conflict = "conflict",
        /// §8.3.3.3.
        FeatureNotImplemented = "feature-not-implemented",
        /// §8.3.3.4.
        Forbidden = "forbidden",
        /// §8.3.3.5 (may carry a new address as text).
        Gone = "gone",
        /// §8.3.3.6.
        InternalServerError = "internal-server-error",
        /// §8.3.3.7.
        ItemNotFound = "item-not-found",
        /// §8.3.3.8.
        JidMalformed = "jid-malformed",
        /// §8.3.3.9.
        NotAcceptable = "not-acceptable",
        /// §8.3.3.10.
        NotAllowed = "not-allowed",
        /// §8.3.3.11.
        NotAuthorized = "not-authorized",
        /// §8.3.3.12.
        PolicyViolation = "policy-violation",
        /// §8.3.3.13.
        RecipientUnavailable = "recipient-unavailable",
        /// §8.3.3.14 (may carry a new address as text).
        Redirect = "redirect",
        /// §8.3.3.15.
        RegistrationRequired = "registration-required",
        /// §8.3.3.16.
        RemoteServerNotFound = "remote-server-not-found",
        /// §8.3.3.17.
        RemoteServerTimeout = "remote-server-timeout",
        /// §8.3.3.18.
        ResourceConstraint = "resource-constraint",
        /// §8.3.3.19.
        ServiceUnavailable = "service-unavailable",
        /// §8.3.3.20.
        SubscriptionRequired = "subscription-required",
        /// §8.3.3.21.
        UndefinedCondition = "undefined-condition",
        /// §8.3.3.22.
        UnexpectedRequest = "unexpected-request",
    }
}

wire_table! {
    /// The `type` of a stanza error: what the sender should do about it (RFC 6120 §8.3.2).
    StanzaErrorType {
        /// Retry after providing credentials.
        Auth = "auth",
        /// Do not retry: the error cannot be remedied.
        Cancel = "cancel",
        /// Proceed: the condition was only a warning.
        Continue = "continue",
        /// Retry after changing the data sent.
        Modify = "modify",
        /// Retry after waiting: the error is temporary.
        Wait = "wait",
    }
}

impl StanzaErrorCondition {
    /// The error type RFC 6120 §8.3.3 gives as the usual one for this condition.
    pub fn default_type(self) -> StanzaErrorType {
        use StanzaErrorCondition as C;
        use StanzaErrorType as T;
        match self {
            C::BadRequest
            | C::JidMalformed
            | C::NotAcceptable
            | C::PolicyViolation
            | C::Redirect => T::Modify,
            C::Conflict
            | C::FeatureNotImplemented
            | C::Gone
            | C::InternalServerError
            | C::ItemNotFound
            | C::NotAllowed
            | C::RemoteServerNotFound
            | C::ServiceUnavailable
            | C::UndefinedCondition => T::Cancel,
            C::Forbidden | C::NotAuthorized | C::RegistrationRequired | C::SubscriptionRequired => {
                T::Auth
            }
            C::RecipientUnavailable
            | C::RemoteServerTimeout
            | C::ResourceConstraint
            | C::UnexpectedRequest => T::Wait,
        }
    }
}

/// Builds `<stream:error><condition/><text>…</text></stream:error>` (RFC 6120 §4.9.2).
///
/// `text` is for humans and for logs; xsgw writes it in English (`xml:lang='en'`).
pub fn stream_error_element(condition: StreamErrorCondition, text: Option<&str>) -> Element {
    let mut error = Element::new("error", NS_STREAMS)
        .with_child(Element::new(condition.wire_name(), NS_STREAM_ERRORS));
    if let Some(text) = text {
        let mut t = Element::new("text", NS_STREAM_ERRORS).with_text(text);
        t.set_attr_ns("lang", NS_XML, "en");
        error = error.with_child(t);
    }
    error
}

/// A parsed `<stream:error>`: the condition (if one of the defined ones) and the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedStreamError {
    /// The defined condition, `None` when the peer sent none we know.
    pub condition: Option<StreamErrorCondition>,
    /// The optional descriptive text.
    pub text: Option<String>,
}

impl ReceivedStreamError {
    /// Reads a `<stream:error>` element; `None` if `element` is not one.
    pub fn from_element(element: &Element) -> Option<Self> {
        if !element.is("error", NS_STREAMS) {
            return None;
        }
        let condition = element
            .elements()
            .filter(|e| e.namespace == NS_STREAM_ERRORS && e.name != "text")
            .find_map(|e| StreamErrorCondition::from_wire(&e.name));
        let text = element.child("text", NS_STREAM_ERRORS).map(Element::text);
        Some(ReceivedStreamError { condition, text })
    }
}

/// A stanza error (RFC 6120 §8.3): what goes in the `<error/>` child of an error stanza.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StanzaError {
    /// What the sender should do.
    pub error_type: StanzaErrorType,
    /// The defined condition.
    pub condition: StanzaErrorCondition,
    /// Optional descriptive text (English).
    pub text: Option<String>,
    /// The entity that generated the error (`by` attribute), e.g. the gateway's domain.
    pub by: Option<String>,
    /// Application-specific condition elements, kept as they came.
    pub extra: Vec<Element>,
}

/// Why an `<error/>` child could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StanzaErrorParseError {
    /// The element is not an `<error/>` in the content namespace.
    NotAnError,
    /// The `type` attribute is missing or not one of the five.
    BadType,
    /// No defined condition element is present.
    NoCondition,
}

impl fmt::Display for StanzaErrorParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StanzaErrorParseError::NotAnError => "element is not a stanza error",
            StanzaErrorParseError::BadType => "stanza error type missing or unknown",
            StanzaErrorParseError::NoCondition => "stanza error has no defined condition",
        })
    }
}

impl std::error::Error for StanzaErrorParseError {}

impl StanzaError {
    /// An error with the condition's usual type and no text.
    pub fn new(condition: StanzaErrorCondition) -> Self {
        StanzaError {
            error_type: condition.default_type(),
            condition,
            text: None,
            by: None,
            extra: Vec::new(),
        }
    }

    /// Builder: adds descriptive text.
    #[must_use]
    pub fn with_text(mut self, text: impl Into<String>) -> Self {
        self.text = Some(text.into());
        self
    }

    /// Builder: sets the `by` attribute.
    #[must_use]
    pub fn with_by(mut self, by: impl Into<String>) -> Self {
        self.by = Some(by.into());
        self
    }

    /// The `<error/>` element in namespace `content_ns` (`jabber:server` on S2S).
    pub fn to_element(&self, content_ns: &str) -> Element {
        let mut e = Element::new("error", content_ns)
            .with_attr("type", self.error_type.wire_name())
            .with_opt_attr("by", self.by.as_deref())
            .with_child(Element::new(self.condition.wire_name(), NS_STANZA_ERRORS));
        if let Some(text) = &self.text {
            let mut t = Element::new("text", NS_STANZA_ERRORS).with_text(text.as_str());
            t.set_attr_ns("lang", NS_XML, "en");
            e = e.with_child(t);
        }
        for extra in &self.extra {
            e = e.with_child(extra.clone());
        }
        e
    }

    /// Reads an `<error/>` element in namespace `content_ns`.
    pub fn from_element(
        element: &Element,
        content_ns: &str,
    ) -> Result<Self, StanzaErrorParseError> {
        if !element.is("error", content_ns) {
            return Err(StanzaErrorParseError::NotAnError);
        }
        let error_type = element
            .attr("type")
            .and_then(StanzaErrorType::from_wire)
            .ok_or(StanzaErrorParseError::BadType)?;
        let condition = element
            .elements()
            .filter(|e| e.namespace == NS_STANZA_ERRORS && e.name != "text")
            .find_map(|e| StanzaErrorCondition::from_wire(&e.name))
            .ok_or(StanzaErrorParseError::NoCondition)?;
        let text = element.child("text", NS_STANZA_ERRORS).map(Element::text);
        let extra = element
            .elements()
            .filter(|e| e.namespace != NS_STANZA_ERRORS)
            .cloned()
            .collect();
        Ok(StanzaError {
            error_type,
            condition,
            text,
            by: element.attr("by").map(str::to_owned),
            extra,
        })
    }
}

/// The error stanza answering `stanza` (RFC 6120 §8.3.1): same name and `id`, `from` and
/// `to` swapped, `type='error'`, the original children kept, the `<error/>` appended.
/// `None` when `stanza` is itself an error, which must never be answered.
pub fn error_reply(stanza: &Element, error: &StanzaError) -> Option<Element> {
    if stanza.attr("type") == Some("error") {
        return None;
    }
    let mut reply = Element::new(stanza.name.as_str(), stanza.namespace.as_str())
        .with_opt_attr("from", stanza.attr("to"))
        .with_opt_attr("to", stanza.attr("from"))
        .with_opt_attr("id", stanza.attr("id"))
        .with_attr("type", "error");
    reply.children = stanza.children.clone();
    Some(reply.with_child(error.to_element(stanza.namespace.as_str())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xmpp::element::NS_SERVER;

    #[test]
    fn stream_conditions_round_trip_every_row() {
        assert_eq!(StreamErrorCondition::ALL.len(), 25);
        for &c in StreamErrorCondition::ALL {
            assert_eq!(StreamErrorCondition::from_wire(c.wire_name()), Some(c));
            assert_eq!(c.to_string(), c.wire_name());
            let e = stream_error_element(c, Some("why"));
            let back = ReceivedStreamError::from_element(&e).unwrap();
            assert_eq!(back.condition, Some(c));
            assert_eq!(back.text.as_deref(), Some("why"));
        }
        assert_eq!(StreamErrorCondition::from_wire("bogus"), None);
    }

    #[test]
    fn stanza_conditions_round_trip_every_row() {
        assert_eq!(StanzaErrorCondition::ALL.len(), 22);
        for &c in StanzaErrorCondition::ALL {
            assert_eq!(StanzaErrorCondition::from_wire(c.wire_name()), Some(c));
            let err = StanzaError::new(c).with_text("t").with_by("gw.example");
            let back = StanzaError::from_element(&err.to_element(NS_SERVER), NS_SERVER).unwrap();
            assert_eq!(back, err);
        }
        for &t in StanzaErrorType::ALL {
            assert_eq!(StanzaErrorType::from_wire(t.wire_name()), Some(t));
        }
    }

    #[test]
    fn default_types_follow_rfc6120() {
        use StanzaErrorCondition as C;
        use StanzaErrorType as T;
        let expected = [
            (C::BadRequest, T::Modify),
            (C::Conflict, T::Cancel),
            (C::FeatureNotImplemented, T::Cancel),
            (C::Forbidden, T::Auth),
            (C::Gone, T::Cancel),
            (C::InternalServerError, T::Cancel),
            (C::ItemNotFound, T::Cancel),
            (C::JidMalformed, T::Modify),
            (C::NotAcceptable, T::Modify),
            (C::NotAllowed, T::Cancel),
            (C::NotAuthorized, T::Auth),
            (C::PolicyViolation, T::Modify),
            (C::RecipientUnavailable, T::Wait),
            (C::Redirect, T::Modify),
            (C::RegistrationRequired, T::Auth),
            (C::RemoteServerNotFound, T::Cancel),
            (C::RemoteServerTimeout, T::Wait),
            (C::ResourceConstraint, T::Wait),
            (C::ServiceUnavailable, T::Cancel),
            (C::SubscriptionRequired, T::Auth),
            (C::UndefinedCondition, T::Cancel),
            (C::UnexpectedRequest, T::Wait),
        ];
        assert_eq!(expected.len(), StanzaErrorCondition::ALL.len());
        for (c, t) in expected {
            assert_eq!(c.default_type(), t, "{c}");
        }
    }

    #[test]
    fn error_reply_swaps_addresses_and_never_answers_errors() {
        let msg = Element::new("message", NS_SERVER)
            .with_attr("from", "a@example.org/r")
            .with_attr("to", "b@gw.example")
            .with_attr("id", "m1")
            .with_attr("type", "chat")
            .with_child(Element::new("body", NS_SERVER).with_text("hi"));
        let err = StanzaError::new(StanzaErrorCondition::ServiceUnavailable).with_by("gw.example");
        let reply = error_reply(&msg, &err).unwrap();
        assert_eq!(
            reply.to_stream_xml(),
            "<message from='b@gw.example' to='a@example.org/r' id='m1' type='error'><body>hi</body>\
             <error type='cancel' by='gw.example'><service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>"
        );
        assert_eq!(error_reply(&reply, &err), None);
    }

    #[test]
    fn stream_error_serializes_as_expected() {
        let e = stream_error_element(StreamErrorCondition::PolicyViolation, None);
        assert_eq!(
            e.to_stream_xml(),
            "<stream:error><policy-violation xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>"
        );
    }

    #[test]
    fn stanza_error_parse_failures_and_extras() {
        let bad = Element::new("error", NS_SERVER);
        assert_eq!(
            StanzaError::from_element(&bad, NS_SERVER),
            Err(StanzaErrorParseError::BadType)
        );
        let no_cond = Element::new("error", NS_SERVER).with_attr("type", "cancel");
        assert_eq!(
            StanzaError::from_element(&no_cond, NS_SERVER),
            Err(StanzaErrorParseError::NoCondition)
        );
        assert_eq!(
            StanzaError::from_element(&Element::new("x", NS_SERVER), NS_SERVER),
            Err(StanzaErrorParseError::NotAnError)
        );
        let with_app = Element::new("error", NS_SERVER)
            .with_attr("type", "modify")
            .with_child(Element::new("bad-request", NS_STANZA_ERRORS))
            .with_child(Element::new("too-many", "urn:app"));
        let parsed = StanzaError::from_element(&with_app, NS_SERVER).unwrap();
        assert_eq!(parsed.extra.len(), 1);
        assert_eq!(parsed.to_element(NS_SERVER), with_app);
    }
}
