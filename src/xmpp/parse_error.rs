//! Why the bytes of an XMPP stream cannot be read any further: [`StreamError`], shared by the
//! stream scanner ([`super::stream`]) and the stanza parser (`super::fragment`).
//!
//! Owns: the error type of reading a stream (restricted or malformed XML, a stream that is not
//! XMPP, an incompatible peer, a local limit reached) and the stream error condition each one
//! is answered with (RFC 6120 §4.9.3), so that a caller needs only [`StreamError::condition`]
//! to write the `<stream:error>`.
//!
//! Out of scope: the wire names of the conditions and the `<stream:error>` element
//! ([`super::error`]), finding or parsing anything. Published as `xmpp::stream::StreamError`,
//! beside the parser that returns it.

use std::fmt;

use super::error::StreamErrorCondition;

/// Why a stream cannot go on. Every variant maps to a stream error condition.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StreamError {
    // Peer misbehaved: XML.
    /// Restricted XML (RFC 6120 §11.1): a DTD, comment, processing instruction or declaration.
    RestrictedXml {
        /// The construct seen.
        what: &'static str,
    },
    /// XML that is not well-formed.
    NotWellFormed {
        /// What was wrong.
        detail: String,
    },
    /// A namespace prefix that is not bound.
    BadNamespacePrefix {
        /// What was wrong.
        detail: String,
    },
    /// Well-formed XML that is not an XMPP stream (e.g. text at stream level).
    BadFormat {
        /// What was wrong.
        detail: &'static str,
    },
    /// The stream element is not in the streams namespace, or content is not `jabber:server`.
    InvalidNamespace {
        /// The namespace received.
        namespace: String,
    },
    // Peer incompatible.
    /// A stream `version` this server does not speak (major version above 1, or malformed).
    UnsupportedVersion {
        /// The version received.
        version: String,
    },
    /// An encoding other than UTF-8 in the XML declaration.
    UnsupportedEncoding {
        /// The encoding declared.
        encoding: String,
    },
    // Local policy.
    /// A top-level element (or the header) grew larger than the limit.
    TooLarge {
        /// Bytes buffered so far.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Elements nested deeper than the limit.
    TooDeep {
        /// Depth reached.
        depth: usize,
        /// The limit.
        max: usize,
    },
    /// An element with more attributes than the limit.
    TooManyAttributes {
        /// Attributes counted so far.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A top-level element with more elements plus attributes than the limit.
    TooManyNodes {
        /// Nodes counted so far.
        count: usize,
        /// The limit.
        max: usize,
    },
}

impl StreamError {
    /// The stream error condition to send for this error (RFC 6120 §4.9.3).
    pub fn condition(&self) -> StreamErrorCondition {
        match self {
            StreamError::RestrictedXml { .. } => StreamErrorCondition::RestrictedXml,
            StreamError::NotWellFormed { .. } => StreamErrorCondition::NotWellFormed,
            StreamError::BadNamespacePrefix { .. } => StreamErrorCondition::BadNamespacePrefix,
            StreamError::BadFormat { .. } => StreamErrorCondition::BadFormat,
            StreamError::InvalidNamespace { .. } => StreamErrorCondition::InvalidNamespace,
            StreamError::UnsupportedVersion { .. } => StreamErrorCondition::UnsupportedVersion,
            StreamError::UnsupportedEncoding { .. } => StreamErrorCondition::UnsupportedEncoding,
            StreamError::TooLarge { .. }
            | StreamError::TooDeep { .. }
            | StreamError::TooManyAttributes { .. }
            | StreamError::TooManyNodes { .. } => StreamErrorCondition::PolicyViolation,
        }
    }
}

impl fmt::Display for StreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamError::RestrictedXml { what } => write!(f, "restricted xml: {what} not allowed"),
            StreamError::NotWellFormed { detail } => write!(f, "xml not well-formed: {detail}"),
            StreamError::BadNamespacePrefix { detail } => {
                write!(f, "bad namespace prefix: {detail}")
            }
            StreamError::BadFormat { detail } => write!(f, "bad stream format: {detail}"),
            StreamError::InvalidNamespace { namespace } => {
                write!(f, "invalid stream namespace '{namespace}'")
            }
            StreamError::UnsupportedVersion { version } => {
                write!(f, "unsupported stream version '{version}'")
            }
            StreamError::UnsupportedEncoding { encoding } => {
                write!(f, "unsupported encoding '{encoding}'")
            }
            StreamError::TooLarge { len, max } => {
                write!(f, "element too large: {len} bytes, limit {max}")
            }
            StreamError::TooDeep { depth, max } => {
                write!(f, "elements nested too deep: {depth}, limit {max}")
            }
            StreamError::TooManyAttributes { count, max } => {
                write!(f, "too many attributes: {count}, limit {max}")
            }
            StreamError::TooManyNodes { count, max } => {
                write!(f, "too many elements and attributes: {count}, limit {max}")
            }
        }
    }
}

impl std::error::Error for StreamError {}
