//! Header field names: canonical spellings and compact forms (RFC 3261 §7.3.3 and the IANA
//! SIP parameters registry), compared case-insensitively (§7.3.1).
//!
//! Unknown names (including Microsoft's `Ms-Conversation-ID`, `ms-keep-alive`) are not in the
//! table: they are kept and written exactly as received.

/// A known header name with its canonical spelling and optional compact form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderName {
    /// The full name as it is written on output.
    pub canonical: &'static str,
    /// The one-letter compact form, lowercase.
    pub compact: Option<u8>,
}

impl HeaderName {
    const fn new(canonical: &'static str, compact: Option<u8>) -> Self {
        HeaderName { canonical, compact }
    }

    /// True when `name` (as received) names this header in full or compact form.
    pub fn matches(&self, name: &[u8]) -> bool {
        match name {
            [one] => self.compact == Some(one.to_ascii_lowercase()),
            _ => name.eq_ignore_ascii_case(self.canonical.as_bytes()),
        }
    }
}

macro_rules! names {
    ($($id:ident = $name:literal $(, $c:literal)?;)*) => {
        $(
            #[doc = concat!("`", $name, "`")]
            pub const $id: HeaderName = HeaderName::new($name, names!(@c $($c)?));
        )*
        /// Every known header name.
        pub const ALL: &[HeaderName] = &[$($id),*];
    };
    (@c) => { None };
    (@c $c:literal) => { Some($c) };
}

names! {
    ACCEPT = "Accept";
    ACCEPT_CONTACT = "Accept-Contact", b'a';
    ACCEPT_ENCODING = "Accept-Encoding";
    ACCEPT_LANGUAGE = "Accept-Language";
    ALERT_INFO = "Alert-Info";
    ALLOW = "Allow";
    ALLOW_EVENTS = "Allow-Events", b'u';
    AUTHENTICATION_INFO = "Authentication-Info";
    AUTHORIZATION = "Authorization";
    CALL_ID = "Call-ID", b'i';
    CALL_INFO = "Call-Info";
    CONTACT = "Contact", b'm';
    CONTENT_DISPOSITION = "Content-Disposition";
    CONTENT_ENCODING = "Content-Encoding", b'e';
    CONTENT_LANGUAGE = "Content-Language";
    CONTENT_LENGTH = "Content-Length", b'l';
    CONTENT_TYPE = "Content-Type", b'c';
    CSEQ = "CSeq";
    DATE = "Date";
    ERROR_INFO = "Error-Info";
    EVENT = "Event", b'o';
    EXPIRES = "Expires";
    FROM = "From", b'f';
    IDENTITY = "Identity", b'y';
    IDENTITY_INFO = "Identity-Info", b'n';
    IN_REPLY_TO = "In-Reply-To";
    MAX_FORWARDS = "Max-Forwards";
    MIME_VERSION = "MIME-Version";
    MIN_EXPIRES = "Min-Expires";
    ORGANIZATION = "Organization";
    PRIORITY = "Priority";
    PROXY_AUTHENTICATE = "Proxy-Authenticate";
    PROXY_AUTHORIZATION = "Proxy-Authorization";
    PROXY_REQUIRE = "Proxy-Require";
    RACK = "RAck";
    RECORD_ROUTE = "Record-Route";
    REFER_TO = "Refer-To", b'r';
    REFERRED_BY = "Referred-By", b'b';
    REJECT_CONTACT = "Reject-Contact", b'j';
    REPLY_TO = "Reply-To";
    REQUEST_DISPOSITION = "Request-Disposition", b'd';
    REQUIRE = "Require";
    RETRY_AFTER = "Retry-After";
    ROUTE = "Route";
    RSEQ = "RSeq";
    SERVER = "Server";
    SESSION_EXPIRES = "Session-Expires", b'x';
    SUBJECT = "Subject", b's';
    SUBSCRIPTION_STATE = "Subscription-State";
    SUPPORTED = "Supported", b'k';
    TIMESTAMP = "Timestamp";
    TO = "To", b't';
    UNSUPPORTED = "Unsupported";
    USER_AGENT = "User-Agent";
    VIA = "Via", b'v';
    WARNING = "Warning";
    WWW_AUTHENTICATE = "WWW-Authenticate";
}

/// The known header `name` refers to, if any.
pub fn lookup(name: &[u8]) -> Option<HeaderName> {
    ALL.iter().copied().find(|h| h.matches(name))
}

/// The spelling used on output: the canonical full name for a known header, else `name`.
pub fn canonical(name: &str) -> &str {
    match lookup(name.as_bytes()) {
        Some(h) => h.canonical,
        None => name,
    }
}

/// True when `a` and `b` name the same header (case-insensitive, compact forms resolved).
pub fn same(a: &[u8], b: &[u8]) -> bool {
    match lookup(b) {
        Some(h) => h.matches(a),
        None => a.eq_ignore_ascii_case(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_and_case() {
        assert!(VIA.matches(b"v"));
        assert!(VIA.matches(b"V"));
        assert!(VIA.matches(b"vIA"));
        assert!(!VIA.matches(b"x"));
        assert_eq!(canonical("i"), "Call-ID");
        assert_eq!(canonical("cseq"), "CSeq");
        assert_eq!(canonical("Ms-Conversation-ID"), "Ms-Conversation-ID");
        assert!(same(b"l", b"content-length"));
        assert!(same(b"ms-keep-alive", b"MS-KEEP-ALIVE"));
        assert!(!same(b"s", b"Supported"));
    }

    #[test]
    fn table_has_no_duplicate_compact_forms() {
        for (i, a) in ALL.iter().enumerate() {
            for b in ALL.iter().skip(i + 1) {
                assert!(a.compact.is_none() || a.compact != b.compact, "{a:?} {b:?}");
                assert!(!a.canonical.eq_ignore_ascii_case(b.canonical));
            }
        }
    }
}
