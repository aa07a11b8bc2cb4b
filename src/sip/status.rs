//! SIP status codes and their reason phrases: one table (house style #15), RFC 3261 §21
//! plus the codes of the extensions the gateway meets (RFC 3265/6665, 3329, 4028, 3428,
//! 5626, 6086, 4412, 4474, 3903, 3891, 5360, 5393, 5839, 6442, 8224, 8599).

use std::fmt;

/// A SIP status code (100–699).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StatusCode(u16);

macro_rules! codes {
    ($($id:ident = $n:literal, $reason:literal;)*) => {
        impl StatusCode {
            $(
                #[doc = concat!("`", stringify!($n), " ", $reason, "`")]
                pub const $id: StatusCode = StatusCode($n);
            )*
        }
        /// Every code with a registered reason phrase, ascending.
        pub const TABLE: &[(u16, &str)] = &[$(($n, $reason)),*];
    };
}

codes! {
    TRYING = 100, "Trying";
    RINGING = 180, "Ringing";
    CALL_IS_BEING_FORWARDED = 181, "Call Is Being Forwarded";
    QUEUED = 182, "Queued";
    SESSION_PROGRESS = 183, "Session Progress";
    EARLY_DIALOG_TERMINATED = 199, "Early Dialog Terminated";
    OK = 200, "OK";
    ACCEPTED = 202, "Accepted";
    NO_NOTIFICATION = 204, "No Notification";
    MULTIPLE_CHOICES = 300, "Multiple Choices";
    MOVED_PERMANENTLY = 301, "Moved Permanently";
    MOVED_TEMPORARILY = 302, "Moved Temporarily";
    USE_PROXY = 305, "Use Proxy";
    ALTERNATIVE_SERVICE = 380, "Alternative Service";
    BAD_REQUEST = 400, "Bad Request";
    UNAUTHORIZED = 401, "Unauthorized";
    PAYMENT_REQUIRED = 402, "Payment Required";
    FORBIDDEN = 403, "Forbidden";
    NOT_FOUND = 404, "Not Found";
    METHOD_NOT_ALLOWED = 405, "Method Not Allowed";
    NOT_ACCEPTABLE = 406, "Not Acceptable";
    PROXY_AUTHENTICATION_REQUIRED = 407, "Proxy Authentication Required";
    REQUEST_TIMEOUT = 408, "Request Timeout";
    CONFLICT = 409, "Conflict";
    GONE = 410, "Gone";
    LENGTH_REQUIRED = 411, "Length Required";
    CONDITIONAL_REQUEST_FAILED = 412, "Conditional Request Failed";
    REQUEST_ENTITY_TOO_LARGE = 413, "Request Entity Too Large";
    REQUEST_URI_TOO_LONG = 414, "Request-URI Too Long";
    UNSUPPORTED_MEDIA_TYPE = 415, "Unsupported Media Type";
    UNSUPPORTED_URI_SCHEME = 416, "Unsupported URI Scheme";
    UNKNOWN_RESOURCE_PRIORITY = 417, "Unknown Resource-Priority";
    BAD_EXTENSION = 420, "Bad Extension";
    EXTENSION_REQUIRED = 421, "Extension Required";
    SESSION_INTERVAL_TOO_SMALL = 422, "Session Interval Too Small";
    INTERVAL_TOO_BRIEF = 423, "Interval Too Brief";
    BAD_LOCATION_INFORMATION = 424, "Bad Location Information";
    USE_IDENTITY_HEADER = 428, "Use Identity Header";
    PROVIDE_REFERRER_IDENTITY = 429, "Provide Referrer Identity";
    FLOW_FAILED = 430, "Flow Failed";
    ANONYMITY_DISALLOWED = 433, "Anonymity Disallowed";
    BAD_IDENTITY_INFO = 436, "Bad Identity-Info";
    UNSUPPORTED_CERTIFICATE = 437, "Unsupported Certificate";
    INVALID_IDENTITY_HEADER = 438, "Invalid Identity Header";
    FIRST_HOP_LACKS_OUTBOUND_SUPPORT = 439, "First Hop Lacks Outbound Support";
    MAX_BREADTH_EXCEEDED = 440, "Max-Breadth Exceeded";
    BAD_INFO_PACKAGE = 469, "Bad Info Package";
    CONSENT_NEEDED = 470, "Consent Needed";
    TEMPORARILY_UNAVAILABLE = 480, "Temporarily Unavailable";
    CALL_DOES_NOT_EXIST = 481, "Call/Transaction Does Not Exist";
    LOOP_DETECTED = 482, "Loop Detected";
    TOO_MANY_HOPS = 483, "Too Many Hops";
    ADDRESS_INCOMPLETE = 484, "Address Incomplete";
    AMBIGUOUS = 485, "Ambiguous";
    BUSY_HERE = 486, "Busy Here";
    REQUEST_TERMINATED = 487, "Request Terminated";
    NOT_ACCEPTABLE_HERE = 488, "Not Acceptable Here";
    BAD_EVENT = 489, "Bad Event";
    REQUEST_PENDING = 491, "Request Pending";
    UNDECIPHERABLE = 493, "Undecipherable";
    SECURITY_AGREEMENT_REQUIRED = 494, "Security Agreement Required";
    SERVER_INTERNAL_ERROR = 500, "Server Internal Error";
    NOT_IMPLEMENTED = 501, "Not Implemented";
    BAD_GATEWAY = 502, "Bad Gateway";
    SERVICE_UNAVAILABLE = 503, "Service Unavailable";
    SERVER_TIMEOUT = 504, "Server Time-out";
    VERSION_NOT_SUPPORTED = 505, "Version Not Supported";
    MESSAGE_TOO_LARGE = 513, "Message Too Large";
    PRECONDITION_FAILURE = 580, "Precondition Failure";
    BUSY_EVERYWHERE = 600, "Busy Everywhere";
    DECLINE = 603, "Decline";
    DOES_NOT_EXIST_ANYWHERE = 604, "Does Not Exist Anywhere";
    NOT_ACCEPTABLE_ANYWHERE = 606, "Not Acceptable";
    UNWANTED = 607, "Unwanted";
}

impl StatusCode {
    /// A code in 100–699, else `None`.
    pub fn new(code: u16) -> Option<StatusCode> {
        (100..=699).contains(&code).then_some(StatusCode(code))
    }

    /// The numeric code.
    pub fn as_u16(self) -> u16 {
        self.0
    }

    /// The class: 1 to 6.
    pub fn class(self) -> u16 {
        self.0 / 100
    }

    /// True for 1xx.
    pub fn is_provisional(self) -> bool {
        self.class() == 1
    }

    /// True for 2xx.
    pub fn is_success(self) -> bool {
        self.class() == 2
    }

    /// True for 2xx–6xx.
    pub fn is_final(self) -> bool {
        self.class() >= 2
    }

    /// The registered reason phrase, or the class's generic one for an unregistered code
    /// (RFC 3261 §21: an unknown code is treated as x00 of its class).
    pub fn reason_phrase(self) -> &'static str {
        if let Ok(i) = TABLE.binary_search_by_key(&self.0, |&(n, _)| n) {
            if let Some(&(_, r)) = TABLE.get(i) {
                return r;
            }
        }
        match self.class() {
            1 => "Trying",
            2 => "OK",
            3 => "Multiple Choices",
            4 => "Bad Request",
            5 => "Server Internal Error",
            _ => "Busy Everywhere",
        }
    }
}

impl fmt::Display for StatusCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.0, self.reason_phrase())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_unique_and_in_range() {
        for w in TABLE.windows(2) {
            assert!(w[0].0 < w[1].0, "{:?}", w);
        }
        for &(n, r) in TABLE {
            let c = StatusCode::new(n).unwrap();
            assert_eq!(c.reason_phrase(), r);
            assert!(!r.is_empty() && !r.contains(['\r', '\n']));
        }
    }

    #[test]
    fn lookups() {
        assert_eq!(StatusCode::TOO_MANY_HOPS.as_u16(), 483);
        assert_eq!(StatusCode::BAD_EXTENSION.to_string(), "420 Bad Extension");
        assert_eq!(StatusCode::new(499).unwrap().reason_phrase(), "Bad Request");
        assert_eq!(StatusCode::new(99), None);
        assert_eq!(StatusCode::new(700), None);
        assert!(StatusCode::RINGING.is_provisional());
        assert!(StatusCode::OK.is_success() && StatusCode::OK.is_final());
    }
}
