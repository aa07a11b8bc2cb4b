//! PIDF presence documents (RFC 3863) with the RPID activities of RFC 4480, parsed and written.
//!
//! Owns: turning an `application/pidf+xml` body into a small [`Pidf`] struct, bounded and with
//! a typed [`PidfError`], and writing a [`Pidf`] back as a document with the shape the PIDF
//! schema asks for (RFC 3863 §4.1–§4.4, §6). Used by [`super::presence`] in both directions.
//!
//! In scope:
//! - `presence@entity`, `tuple@id`, `status/basic` (open/closed), `contact@priority`,
//!   `note@xml:lang`, `timestamp` (RFC 3863 §4.1.1–§4.1.7).
//! - RPID `activities` (RFC 4480 §3.2) in a data-model `person` (RFC 4479 §3.1) or, as older
//!   and Microsoft-style Edges put them, inside a tuple's `status`; the legacy namespace
//!   `urn:ietf:params:xml:ns:pidf:status:rpid` is read like the RFC 4480 one.
//!
//! Out of scope: every other RPID element (mood, place-type, user-input…), devices, CIPID,
//! timed status: unknown elements and extra namespaces are skipped, never refused.
//!
//! ```text
//!  <?xml version='1.0' encoding='UTF-8'?>
//!  <presence xmlns='urn:ietf:params:xml:ns:pidf' xmlns:dm=… xmlns:rpid=… entity='pres:…'>
//!    <tuple id='r-balcony'>                     ◀─ Tuple (id must start with a letter)
//!      <status><basic>open</basic>               ◀─ basic first in status
//!        <rpid:activities><rpid:away/></rpid:activities></status>   (tuple-level activities)
//!      <contact priority='0.502'>xmpp:…</contact>
//!      <note xml:lang='en'>…</note>
//!      <timestamp>2026-11-25T16:00:00Z</timestamp>
//!    </tuple>
//!    <note>…</note>                              ◀─ document notes
//!    <dm:person id='p'><rpid:activities><rpid:busy/></rpid:activities>
//!      <dm:note>…</dm:note></dm:person>          ◀─ Person
//!  </presence>
//! ```
//!
//! Hostile input: the document is bounded ([`MAX_PIDF_LEN`]), a document type declaration
//! is refused before any entity could expand (billion laughs), nesting is bounded
//! ([`MAX_DEPTH`]) and so are the element count and each list. Comments and processing
//! instructions are skipped (PIDF is not restricted XML).
//!
//! # DoS warning
//! Parsing is linear in the input, which is bounded by [`MAX_PIDF_LEN`].

use std::fmt;

use xml::reader::{ParserConfig, XmlEvent};

use crate::xmpp::element::{escape_into, Attribute, Element, Node, NS_XML};

/// PIDF namespace (RFC 3863 §4.1).
pub const NS_PIDF: &str = "urn:ietf:params:xml:ns:pidf";
/// PIDF data model namespace, for `person` (RFC 4479 §6).
pub const NS_DATA_MODEL: &str = "urn:ietf:params:xml:ns:pidf:data-model";
/// RPID namespace (RFC 4480 §4).
pub const NS_RPID: &str = "urn:ietf:params:xml:ns:pidf:rpid";
/// Pre-RFC RPID status namespace some Edges still send activities in.
pub const NS_RPID_LEGACY: &str = "urn:ietf:params:xml:ns:pidf:status:rpid";
/// The media type of a PIDF body (RFC 3863 §7).
pub const CONTENT_TYPE: &str = "application/pidf+xml";

/// Largest PIDF document accepted, in bytes.
pub const MAX_PIDF_LEN: usize = 64 * 1024;
/// Deepest element nesting accepted (`presence` is depth 1).
pub const MAX_DEPTH: usize = 16;
/// Most elements in one document.
pub const MAX_ELEMENTS: usize = 2048;
/// Most tuples in one document.
pub const MAX_TUPLES: usize = 64;
/// Most notes in one container (document, tuple, person).
pub const MAX_NOTES: usize = 32;
/// Most activities in one container.
pub const MAX_ACTIVITIES: usize = 32;
/// Longest name (element, attribute, prefix) in bytes.
const MAX_NAME: usize = 256;
/// Most attributes on one element, namespace declarations included.
const MAX_ATTRIBUTES: usize = 32;

/// Why a PIDF document was refused, or could not be written.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PidfError {
    /// The document is larger than [`MAX_PIDF_LEN`].
    TooLarge {
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Elements nest deeper than [`MAX_DEPTH`].
    TooDeep {
        /// The limit.
        max: usize,
    },
    /// A list holds more entries than its limit; `what` names the list.
    TooMany {
        /// The list: "elements", "tuples", "notes", "activities".
        what: &'static str,
        /// The limit.
        max: usize,
    },
    /// The document has a document type declaration (refused: entity expansion).
    Doctype,
    /// The XML is not well-formed, or breaks a parser limit.
    NotWellFormed {
        /// What the XML parser said.
        detail: String,
    },
    /// The root element is not `presence` in the PIDF namespace.
    NotPidf,
    /// `presence` has no (or an empty) `entity` attribute.
    MissingEntity,
    /// A tuple has no (or an empty) `id` attribute.
    MissingTupleId,
    /// Two tuples share an `id`.
    DuplicateTupleId {
        /// The repeated id.
        id: String,
    },
    /// `basic` holds something other than `open` or `closed`.
    BadBasic {
        /// The value received.
        value: String,
    },
    /// Writing: an `id` that is not an XML NCName starting with a letter.
    BadId {
        /// The id.
        id: String,
    },
}

impl fmt::Display for PidfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PidfError::TooLarge { len, max } => {
                write!(f, "pidf document too large: {len} bytes, limit {max}")
            }
            PidfError::TooDeep { max } => write!(f, "pidf elements nest deeper than {max}"),
            PidfError::TooMany { what, max } => write!(f, "pidf has more than {max} {what}"),
            PidfError::Doctype => f.write_str("pidf document type declarations are refused"),
            PidfError::NotWellFormed { detail } => write!(f, "pidf not well-formed: {detail}"),
            PidfError::NotPidf => f.write_str("root element is not a pidf presence"),
            PidfError::MissingEntity => f.write_str("pidf presence has no entity"),
            PidfError::MissingTupleId => f.write_str("pidf tuple has no id"),
            PidfError::DuplicateTupleId { id } => write!(f, "pidf tuple id {id:?} repeated"),
            PidfError::BadBasic { value } => write!(f, "pidf basic status {value:?} unknown"),
            PidfError::BadId { id } => write!(f, "{id:?} is not a valid pidf id"),
        }
    }
}

impl std::error::Error for PidfError {}

/// `basic` status of a tuple (RFC 3863 §4.1.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Basic {
    /// `open`: able to receive.
    Open,
    /// `closed`: not able to receive.
    Closed,
}

impl Basic {
    /// The element text.
    pub fn as_str(self) -> &'static str {
        match self {
            Basic::Open => "open",
            Basic::Closed => "closed",
        }
    }
}

/// A `qvalue` priority 0..1 in thousandths, as in `<contact priority='0.8'>` (RFC 3863 §4.1.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QValue(u16);

impl QValue {
    /// The highest priority, 1.
    pub const MAX: QValue = QValue(1000);

    /// A qvalue from thousandths; `None` above 1000.
    pub fn from_thousandths(t: u16) -> Option<QValue> {
        (t <= 1000).then_some(QValue(t))
    }

    /// The value in thousandths (0..=1000).
    pub fn thousandths(self) -> u16 {
        self.0
    }

    /// Parses `qvalue = ("0" ["." 0*3DIGIT]) / ("1" ["." 0*3("0")])` (RFC 3261 §25.1).
    pub fn parse(s: &str) -> Option<QValue> {
        let (int, frac) = match s.split_once('.') {
            Some((i, f)) => (i, f),
            None => (s, ""),
        };
        if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let mut t: u16 = 0;
        let mut scale = 100;
        for b in frac.bytes() {
            t += u16::from(b - b'0') * scale;
            scale /= 10;
        }
        match int {
            "0" => Some(QValue(t)),
            "1" if t == 0 => Some(QValue(1000)),
            _ => None,
        }
    }
}

impl fmt::Display for QValue {
    /// Shortest form: `0`, `1`, `0.5`, `0.25`, `0.125`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 >= 1000 {
            return f.write_str("1");
        }
        if self.0 == 0 {
            return f.write_str("0");
        }
        let digits = format!("{:03}", self.0);
        write!(f, "0.{}", digits.trim_end_matches('0'))
    }
}

/// A `note`, with its language (RFC 3863 §4.1.6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// The text as received (not trimmed).
    pub text: String,
    /// `xml:lang`, when given.
    pub lang: Option<String>,
}

/// A `contact` address with an optional priority (RFC 3863 §4.1.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contact {
    /// The URI, trimmed.
    pub uri: String,
    /// `priority`; a malformed one is read as absent.
    pub priority: Option<QValue>,
}

/// An RPID activity (RFC 4480 §3.2). Unknown activity elements are skipped when parsing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Activity {
    /// `appointment`
    Appointment,
    /// `away`
    Away,
    /// `breakfast`
    Breakfast,
    /// `busy`
    Busy,
    /// `dinner`
    Dinner,
    /// `holiday`
    Holiday,
    /// `in-transit`
    InTransit,
    /// `looking-for-work`
    LookingForWork,
    /// `meal`
    Meal,
    /// `meeting`
    Meeting,
    /// `on-the-phone`
    OnThePhone,
    /// `performance`
    Performance,
    /// `permanent-absence`
    PermanentAbsence,
    /// `playing`
    Playing,
    /// `presentation`
    Presentation,
    /// `shopping`
    Shopping,
    /// `sleeping`
    Sleeping,
    /// `spectator`
    Spectator,
    /// `steering`
    Steering,
    /// `travel`
    Travel,
    /// `tv`
    Tv,
    /// `unknown`
    Unknown,
    /// `vacation`
    Vacation,
    /// `working`
    Working,
    /// `worship`
    Worship,
    /// `other`, with its text.
    Other(String),
}

/// The activity element names, in the order of RFC 4480 §3.2, `other` excluded.
const ACTIVITY_NAMES: &[(&str, Activity)] = &[
    ("appointment", Activity::Appointment),
    ("away", Activity::Away),
    ("breakfast", Activity::Breakfast),
    ("busy", Activity::Busy),
    ("dinner", Activity::Dinner),
    ("holiday", Activity::Holiday),
    ("in-transit", Activity::InTransit),
    ("looking-for-work", Activity::LookingForWork),
    ("meal", Activity::Meal),
    ("meeting", Activity::Meeting),
    ("on-the-phone", Activity::OnThePhone),
    ("performance", Activity::Performance),
    ("permanent-absence", Activity::PermanentAbsence),
    ("playing", Activity::Playing),
    ("presentation", Activity::Presentation),
    ("shopping", Activity::Shopping),
    ("sleeping", Activity::Sleeping),
    ("spectator", Activity::Spectator),
    ("steering", Activity::Steering),
    ("travel", Activity::Travel),
    ("tv", Activity::Tv),
    ("unknown", Activity::Unknown),
    ("vacation", Activity::Vacation),
    ("working", Activity::Working),
    ("worship", Activity::Worship),
];

impl Activity {
    /// The activity named by the RPID element `name`; `None` for unknown names and `other`.
    pub fn from_name(name: &str) -> Option<Activity> {
        ACTIVITY_NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, a)| a.clone())
    }

    /// The RPID element name.
    pub fn name(&self) -> &'static str {
        if let Activity::Other(_) = self {
            return "other";
        }
        ACTIVITY_NAMES
            .iter()
            .find(|(_, a)| a == self)
            .map_or("unknown", |(n, _)| n)
    }
}

/// One `tuple` (RFC 3863 §4.1.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tuple {
    /// `id` as received (written only when it is an NCName starting with a letter).
    pub id: String,
    /// `status/basic`; `None` when absent.
    pub basic: Option<Basic>,
    /// RPID activities found inside `status` (or directly in the tuple).
    pub activities: Vec<Activity>,
    /// `contact`.
    pub contact: Option<Contact>,
    /// `note`s.
    pub notes: Vec<Note>,
    /// `timestamp` (an `xs:dateTime`, kept as text, trimmed).
    pub timestamp: Option<String>,
}

impl Tuple {
    /// A tuple with an id and a basic status, nothing else.
    pub fn new(id: impl Into<String>, basic: Basic) -> Tuple {
        Tuple {
            id: id.into(),
            basic: Some(basic),
            activities: Vec::new(),
            contact: None,
            notes: Vec::new(),
            timestamp: None,
        }
    }
}

/// A data-model `person` (RFC 4479 §3.1) with the RPID parts we use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Person {
    /// `id`.
    pub id: String,
    /// RPID activities.
    pub activities: Vec<Activity>,
    /// `note`s (data-model namespace).
    pub notes: Vec<Note>,
}

/// A parsed PIDF document: what the gateway uses of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pidf {
    /// `presence@entity`, e.g. `pres:alice@contoso.com` or `sip:alice@contoso.com`.
    pub entity: String,
    /// Tuples in document order.
    pub tuples: Vec<Tuple>,
    /// Document-level `note`s.
    pub notes: Vec<Note>,
    /// The first data-model `person`, when present.
    pub person: Option<Person>,
}

impl Pidf {
    /// Parses a PIDF body. See the module docs for what is read, skipped and refused.
    pub fn parse(bytes: &[u8]) -> Result<Pidf, PidfError> {
        let root = parse_document(bytes)?;
        from_root(&root)
    }

    /// Writes the document: XML declaration, then `presence` with the PIDF namespace as
    /// default and `dm`/`rpid` declared only when used. Every value is escaped.
    ///
    /// Refuses an empty entity and ids that are not NCNames starting with a letter.
    pub fn to_xml(&self) -> Result<String, PidfError> {
        if self.entity.is_empty() {
            return Err(PidfError::MissingEntity);
        }
        let mut seen: Vec<&str> = Vec::with_capacity(self.tuples.len());
        for t in &self.tuples {
            check_id(&t.id)?;
            if seen.contains(&t.id.as_str()) {
                return Err(PidfError::DuplicateTupleId { id: t.id.clone() });
            }
            seen.push(&t.id);
        }
        if let Some(p) = &self.person {
            check_id(&p.id)?;
        }
        let uses_rpid = self.tuples.iter().any(|t| !t.activities.is_empty())
            || self
                .person
                .as_ref()
                .is_some_and(|p| !p.activities.is_empty());
        let mut out = String::with_capacity(512);
        out.push_str("<?xml version='1.0' encoding='UTF-8'?>\n<presence xmlns='");
        out.push_str(NS_PIDF);
        out.push('\'');
        if self.person.is_some() {
            out.push_str(" xmlns:dm='");
            out.push_str(NS_DATA_MODEL);
            out.push('\'');
        }
        if uses_rpid {
            out.push_str(" xmlns:rpid='");
            out.push_str(NS_RPID);
            out.push('\'');
        }
        out.push_str(" entity='");
        escape_into(&mut out, &self.entity, true);
        out.push_str("'>");
        for t in &self.tuples {
            write_tuple(&mut out, t);
        }
        for n in &self.notes {
            write_note(&mut out, "note", n);
        }
        if let Some(p) = &self.person {
            out.push_str("<dm:person id='");
            escape_into(&mut out, &p.id, true);
            out.push_str("'>");
            write_activities(&mut out, &p.activities);
            for n in &p.notes {
                write_note(&mut out, "dm:note", n);
            }
            out.push_str("</dm:person>");
        }
        out.push_str("</presence>\n");
        Ok(out)
    }
}

/// Whether `id` is an NCName (XML Namespaces §3) starting with an ASCII letter and made of
/// ASCII letters, digits, `-`, `.` and `_`: the subset xsgw writes.
pub fn is_valid_id(id: &str) -> bool {
    let mut bytes = id.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
}

fn check_id(id: &str) -> Result<(), PidfError> {
    if is_valid_id(id) {
        Ok(())
    } else {
        Err(PidfError::BadId { id: id.to_owned() })
    }
}

fn write_note(out: &mut String, qname: &str, note: &Note) {
    out.push('<');
    out.push_str(qname);
    if let Some(lang) = &note.lang {
        out.push_str(" xml:lang='");
        escape_into(out, lang, true);
        out.push('\'');
    }
    out.push('>');
    escape_into(out, &note.text, false);
    out.push_str("</");
    out.push_str(qname);
    out.push('>');
}

fn write_activities(out: &mut String, activities: &[Activity]) {
    if activities.is_empty() {
        return;
    }
    out.push_str("<rpid:activities>");
    for a in activities {
        match a {
            Activity::Other(text) => {
                out.push_str("<rpid:other>");
                escape_into(out, text, false);
                out.push_str("</rpid:other>");
            }
            a => {
                out.push_str("<rpid:");
                out.push_str(a.name());
                out.push_str("/>");
            }
        }
    }
    out.push_str("</rpid:activities>");
}

/// Schema order (RFC 3863 §6): status (basic first), extensions, contact, note*, timestamp.
fn write_tuple(out: &mut String, t: &Tuple) {
    out.push_str("<tuple id='");
    escape_into(out, &t.id, true);
    out.push_str("'><status>");
    if let Some(b) = t.basic {
        out.push_str("<basic>");
        out.push_str(b.as_str());
        out.push_str("</basic>");
    }
    write_activities(out, &t.activities);
    out.push_str("</status>");
    if let Some(c) = &t.contact {
        out.push_str("<contact");
        if let Some(q) = c.priority {
            out.push_str(" priority='");
            out.push_str(&q.to_string());
            out.push('\'');
        }
        out.push('>');
        escape_into(out, &c.uri, false);
        out.push_str("</contact>");
    }
    for n in &t.notes {
        write_note(out, "note", n);
    }
    if let Some(ts) = &t.timestamp {
        out.push_str("<timestamp>");
        escape_into(out, ts, false);
        out.push_str("</timestamp>");
    }
    out.push_str("</tuple>");
}

fn parser_config() -> ParserConfig {
    let mut c = ParserConfig::new();
    c.trim_whitespace = false;
    c.whitespace_to_characters = true;
    c.cdata_to_characters = true;
    c.ignore_comments = true;
    c.coalesce_characters = true;
    c.ignore_end_of_stream = false;
    c.replace_unknown_entity_references = false;
    c.ignore_root_level_whitespace = true;
    c.ignore_invalid_encoding_declarations = false;
    c.allow_multiple_root_elements = false;
    // No DTD is accepted (refused below), so only the five predefined entities exist;
    // these bounds hold even if one slipped through.
    c.max_entity_expansion_length = 64;
    c.max_entity_expansion_depth = 1;
    c.max_name_length = MAX_NAME;
    c.max_attributes = MAX_ATTRIBUTES;
    c.max_attribute_length = MAX_PIDF_LEN;
    c.max_data_length = MAX_PIDF_LEN;
    c
}

/// Whether `bytes` contain a markup declaration (`<!` other than a comment or CDATA).
fn has_markup_declaration(bytes: &[u8]) -> bool {
    bytes.windows(2).enumerate().any(|(i, w)| {
        w == b"<!" && {
            let rest = bytes.get(i + 2..).unwrap_or_default();
            !rest.starts_with(b"--") && !rest.starts_with(b"[CDATA[")
        }
    })
}

/// Parses the whole document into an element tree, enforcing every bound.
fn parse_document(bytes: &[u8]) -> Result<Element, PidfError> {
    if bytes.len() > MAX_PIDF_LEN {
        return Err(PidfError::TooLarge {
            len: bytes.len(),
            max: MAX_PIDF_LEN,
        });
    }
    if has_markup_declaration(bytes) {
        return Err(PidfError::Doctype);
    }
    let mut reader = parser_config().create_reader(bytes);
    let mut stack: Vec<Element> = Vec::new();
    let mut elements = 0usize;
    let mut root: Option<Element> = None;
    loop {
        let event = reader.next().map_err(|e| PidfError::NotWellFormed {
            detail: e.msg().to_string(),
        })?;
        match event {
            XmlEvent::StartElement {
                name, attributes, ..
            } => {
                elements += 1;
                if elements > MAX_ELEMENTS {
                    return Err(PidfError::TooMany {
                        what: "elements",
                        max: MAX_ELEMENTS,
                    });
                }
                if stack.len() >= MAX_DEPTH {
                    return Err(PidfError::TooDeep { max: MAX_DEPTH });
                }
                stack.push(Element {
                    name: name.local_name,
                    namespace: name.namespace.unwrap_or_default(),
                    attributes: attributes
                        .into_iter()
                        .map(|a| Attribute {
                            name: a.name.local_name,
                            namespace: a.name.namespace,
                            value: a.value,
                        })
                        .collect(),
                    children: Vec::new(),
                });
            }
            XmlEvent::EndElement { .. } => {
                let Some(done) = stack.pop() else {
                    return Err(PidfError::NotWellFormed {
                        detail: "unbalanced end tag".into(),
                    });
                };
                match stack.last_mut() {
                    Some(parent) => parent.children.push(Node::Element(done)),
                    // Read on to the end: anything but comments and whitespace is an error.
                    None => root = Some(done),
                }
            }
            XmlEvent::Characters(text) | XmlEvent::CData(text) | XmlEvent::Whitespace(text) => {
                if let Some(parent) = stack.last_mut() {
                    match parent.children.last_mut() {
                        Some(Node::Text(prev)) => prev.push_str(&text),
                        _ => parent.children.push(Node::Text(text)),
                    }
                }
            }
            XmlEvent::Doctype { .. } => return Err(PidfError::Doctype),
            XmlEvent::Comment(_)
            | XmlEvent::ProcessingInstruction { .. }
            | XmlEvent::StartDocument { .. } => {}
            XmlEvent::EndDocument => {
                return root.ok_or_else(|| PidfError::NotWellFormed {
                    detail: "no root element".into(),
                })
            }
        }
    }
}

fn push_bounded<T>(
    list: &mut Vec<T>,
    item: T,
    what: &'static str,
    max: usize,
) -> Result<(), PidfError> {
    if list.len() >= max {
        return Err(PidfError::TooMany { what, max });
    }
    list.push(item);
    Ok(())
}

fn note_of(e: &Element) -> Note {
    Note {
        text: e.text(),
        lang: e.attr_ns("lang", NS_XML).map(str::to_owned),
    }
}

fn is_rpid(ns: &str) -> bool {
    ns == NS_RPID || ns == NS_RPID_LEGACY
}

/// Appends the activities of an `activities` element.
fn read_activities(e: &Element, out: &mut Vec<Activity>) -> Result<(), PidfError> {
    for child in e.elements().filter(|c| is_rpid(&c.namespace)) {
        let activity = if child.name == "other" {
            Activity::Other(child.text())
        } else if child.name == "activity" {
            // COMPAT(pre-RFC RPID): `<activity>busy</activity>` instead of `<busy/>`.
            match Activity::from_name(child.text().trim()) {
                Some(a) => a,
                None => continue,
            }
        } else {
            match Activity::from_name(&child.name) {
                Some(a) => a,
                None => continue,
            }
        };
        push_bounded(out, activity, "activities", MAX_ACTIVITIES)?;
    }
    Ok(())
}

fn read_tuple(e: &Element) -> Result<Tuple, PidfError> {
    let id = e
        .attr("id")
        .map(str::trim)
        .filter(|id| !id.is_empty())
        .ok_or(PidfError::MissingTupleId)?;
    let mut tuple = Tuple {
        id: id.to_owned(),
        basic: None,
        activities: Vec::new(),
        contact: None,
        notes: Vec::new(),
        timestamp: None,
    };
    for child in e.elements() {
        match (child.namespace.as_str(), child.name.as_str()) {
            (NS_PIDF, "status") => {
                for s in child.elements() {
                    if s.is("basic", NS_PIDF) && tuple.basic.is_none() {
                        tuple.basic = Some(match s.text().trim() {
                            "open" => Basic::Open,
                            "closed" => Basic::Closed,
                            other => {
                                return Err(PidfError::BadBasic {
                                    value: other.chars().take(64).collect(),
                                })
                            }
                        });
                    } else if is_rpid(&s.namespace) && s.name == "activities" {
                        read_activities(s, &mut tuple.activities)?;
                    }
                }
            }
            (NS_PIDF, "contact") if tuple.contact.is_none() => {
                tuple.contact = Some(Contact {
                    uri: child.text().trim().to_owned(),
                    priority: child.attr("priority").and_then(|p| QValue::parse(p.trim())),
                });
            }
            (NS_PIDF, "note") => {
                push_bounded(&mut tuple.notes, note_of(child), "notes", MAX_NOTES)?
            }
            (NS_PIDF, "timestamp") if tuple.timestamp.is_none() => {
                tuple.timestamp = Some(child.text().trim().to_owned());
            }
            (ns, "activities") if is_rpid(ns) => read_activities(child, &mut tuple.activities)?,
            _ => {}
        }
    }
    Ok(tuple)
}

fn read_person(e: &Element) -> Result<Person, PidfError> {
    let mut person = Person {
        id: e.attr("id").unwrap_or_default().trim().to_owned(),
        activities: Vec::new(),
        notes: Vec::new(),
    };
    for child in e.elements() {
        if is_rpid(&child.namespace) && child.name == "activities" {
            read_activities(child, &mut person.activities)?;
        } else if child.name == "note"
            && (child.namespace == NS_DATA_MODEL || child.namespace == NS_PIDF)
        {
            push_bounded(&mut person.notes, note_of(child), "notes", MAX_NOTES)?;
        }
    }
    Ok(person)
}

fn from_root(root: &Element) -> Result<Pidf, PidfError> {
    if !root.is("presence", NS_PIDF) {
        return Err(PidfError::NotPidf);
    }
    let entity = root
        .attr("entity")
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .ok_or(PidfError::MissingEntity)?;
    let mut pidf = Pidf {
        entity: entity.to_owned(),
        tuples: Vec::new(),
        notes: Vec::new(),
        person: None,
    };
    for child in root.elements() {
        if child.is("tuple", NS_PIDF) {
            let tuple = read_tuple(child)?;
            if pidf.tuples.iter().any(|t| t.id == tuple.id) {
                return Err(PidfError::DuplicateTupleId { id: tuple.id });
            }
            push_bounded(&mut pidf.tuples, tuple, "tuples", MAX_TUPLES)?;
        } else if child.is("note", NS_PIDF) {
            push_bounded(&mut pidf.notes, note_of(child), "notes", MAX_NOTES)?;
        } else if child.is("person", NS_DATA_MODEL) && pidf.person.is_none() {
            pidf.person = Some(read_person(child)?);
        }
    }
    Ok(pidf)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 3863 §5 example, as published (with its namespace for an IM extension).
    const RFC3863_EXAMPLE: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<impp:presence xmlns:impp="urn:ietf:params:xml:ns:pidf"
    xmlns:myex="http://id.example.com/presence/"
    entity="pres:someone@example.com">
  <impp:tuple id="bs35r9">
    <impp:status>
      <impp:basic>open</impp:basic>
      <myex:location>home</myex:location>
    </impp:status>
    <myex:mood>happy</myex:mood>
    <impp:contact priority="0.8">im:someone@mobilecarrier.net</impp:contact>
    <impp:note xml:lang="en">Don't Disturb Please!</impp:note>
    <impp:note xml:lang="fr">Ne derangez pas, s'il vous plait</impp:note>
    <impp:timestamp>2001-10-27T16:49:29Z</impp:timestamp>
  </impp:tuple>
  <impp:note xml:lang="en">I'll be in Tokyo next week</impp:note>
</impp:presence>
"#;

    /// A Lync/OCS-style document as an Edge sends it over federation: RPID and data model,
    /// Microsoft and Cisco extension namespaces, a tuple id that does not start with a
    /// letter, a comment, activities both in the person and (legacy) inside status.
    const LYNC_STYLE: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<!-- generated by the Access Edge -->
<presence xmlns="urn:ietf:params:xml:ns:pidf"
          xmlns:ep="urn:ietf:params:xml:ns:pidf:status:rpid"
          xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model"
          xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid"
          xmlns:ce="urn:cisco:params:xml:ns:pidf:rpid"
          xmlns:msft="http://schemas.microsoft.com/2006/09/sip/presence"
          entity="sip:alice@contoso.com">
  <tuple id="0">
    <status>
      <basic>open</basic>
      <ep:activities><ep:activity>busy</ep:activity><ep:on-the-phone/></ep:activities>
      <msft:availability>6500</msft:availability>
    </status>
    <contact priority="0.9">sip:alice@contoso.com;gruu;opaque=srvr:x</contact>
    <note xml:lang="en-US">In a call &amp; busy until 17:00 &lt;UTC&gt;</note>
    <timestamp>2026-11-25T16:00:00.123Z</timestamp>
    <msft:device-id>{6A1B}</msft:device-id>
  </tuple>
  <dm:person id="p1">
    <rpid:activities>
      <rpid:busy/>
      <rpid:meeting/>
      <rpid:other>Presenting</rpid:other>
      <ce:dnd/>
      <rpid:unheard-of/>
    </rpid:activities>
    <rpid:user-input last-input="2026-11-25T15:59:00Z">active</rpid:user-input>
    <dm:note>Quarterly review</dm:note>
  </dm:person>
  <dm:device id="d1"><dm:deviceID>urn:x</dm:deviceID></dm:device>
</presence>
"#;

    /// A closed document, as sent when the user signs out.
    const CLOSED: &str = "<?xml version='1.0'?><presence xmlns='urn:ietf:params:xml:ns:pidf' \
        entity='sip:bob@fabrikam.com'><tuple id='t1'><status><basic>closed</basic></status>\
        </tuple></presence>";

    fn round_trip(p: &Pidf) {
        let xml = p.to_xml().unwrap_or_else(|e| panic!("{p:?}: {e}"));
        let back = Pidf::parse(xml.as_bytes()).unwrap_or_else(|e| panic!("{xml}: {e}"));
        assert_eq!(&back, p, "{xml}");
    }

    #[test]
    fn parses_rfc3863_example() {
        let p = Pidf::parse(RFC3863_EXAMPLE.as_bytes()).unwrap();
        assert_eq!(p.entity, "pres:someone@example.com");
        assert_eq!(p.tuples.len(), 1);
        let t = &p.tuples[0];
        assert_eq!(t.id, "bs35r9");
        assert_eq!(t.basic, Some(Basic::Open));
        assert!(t.activities.is_empty());
        let c = t.contact.as_ref().unwrap();
        assert_eq!(c.uri, "im:someone@mobilecarrier.net");
        assert_eq!(c.priority, QValue::from_thousandths(800));
        assert_eq!(
            t.notes,
            vec![
                Note {
                    text: "Don't Disturb Please!".into(),
                    lang: Some("en".into())
                },
                Note {
                    text: "Ne derangez pas, s'il vous plait".into(),
                    lang: Some("fr".into())
                },
            ]
        );
        assert_eq!(t.timestamp.as_deref(), Some("2001-10-27T16:49:29Z"));
        assert_eq!(p.notes.len(), 1);
        assert_eq!(p.notes[0].text, "I'll be in Tokyo next week");
        assert_eq!(p.person, None);
        round_trip(&p);
    }

    #[test]
    fn parses_lync_style() {
        let p = Pidf::parse(LYNC_STYLE.as_bytes()).unwrap();
        assert_eq!(p.entity, "sip:alice@contoso.com");
        let t = &p.tuples[0];
        assert_eq!(t.id, "0");
        assert_eq!(t.basic, Some(Basic::Open));
        assert_eq!(t.activities, vec![Activity::Busy, Activity::OnThePhone]);
        assert_eq!(
            t.contact.as_ref().unwrap().uri,
            "sip:alice@contoso.com;gruu;opaque=srvr:x"
        );
        assert_eq!(t.notes[0].text, "In a call & busy until 17:00 <UTC>");
        assert_eq!(t.notes[0].lang.as_deref(), Some("en-US"));
        let person = p.person.as_ref().unwrap();
        assert_eq!(person.id, "p1");
        assert_eq!(
            person.activities,
            vec![
                Activity::Busy,
                Activity::Meeting,
                Activity::Other("Presenting".into())
            ]
        );
        assert_eq!(person.notes[0].text, "Quarterly review");
        // Tuple id "0" is accepted on input but not written.
        assert_eq!(p.to_xml(), Err(PidfError::BadId { id: "0".into() }));
        let mut fixed = p.clone();
        fixed.tuples[0].id = "t0".into();
        round_trip(&fixed);
    }

    #[test]
    fn parses_closed() {
        let p = Pidf::parse(CLOSED.as_bytes()).unwrap();
        assert_eq!(p.tuples, vec![Tuple::new("t1", Basic::Closed)]);
        round_trip(&p);
    }

    #[test]
    fn writes_schema_shape() {
        let p = Pidf {
            entity: "pres:juliet@example.com".into(),
            tuples: vec![Tuple {
                id: "r-balcony".into(),
                basic: Some(Basic::Open),
                activities: vec![Activity::Away],
                contact: Some(Contact {
                    uri: "xmpp:juliet@example.com/balcony".into(),
                    priority: QValue::from_thousandths(502),
                }),
                notes: vec![Note {
                    text: "<b>&'\"\r\n".into(),
                    lang: Some("en".into()),
                }],
                timestamp: Some("2026-11-25T16:00:00Z".into()),
            }],
            notes: vec![],
            person: Some(Person {
                id: "p".into(),
                activities: vec![Activity::Busy, Activity::Other("x<y".into())],
                notes: vec![],
            }),
        };
        let xml = p.to_xml().unwrap();
        assert_eq!(
            xml,
            "<?xml version='1.0' encoding='UTF-8'?>\n\
             <presence xmlns='urn:ietf:params:xml:ns:pidf' \
             xmlns:dm='urn:ietf:params:xml:ns:pidf:data-model' \
             xmlns:rpid='urn:ietf:params:xml:ns:pidf:rpid' entity='pres:juliet@example.com'>\
             <tuple id='r-balcony'><status><basic>open</basic>\
             <rpid:activities><rpid:away/></rpid:activities></status>\
             <contact priority='0.502'>xmpp:juliet@example.com/balcony</contact>\
             <note xml:lang='en'>&lt;b&gt;&amp;&apos;&quot;&#xD;\n</note>\
             <timestamp>2026-11-25T16:00:00Z</timestamp></tuple>\
             <dm:person id='p'><rpid:activities><rpid:busy/><rpid:other>x&lt;y</rpid:other>\
             </rpid:activities></dm:person></presence>\n"
        );
        round_trip(&p);
        // Minimal document: no dm, no rpid declared.
        let p = Pidf {
            entity: "pres:a@b".into(),
            tuples: vec![Tuple::new("t", Basic::Closed)],
            notes: vec![Note {
                text: "bye".into(),
                lang: None,
            }],
            person: None,
        };
        assert_eq!(
            p.to_xml().unwrap(),
            "<?xml version='1.0' encoding='UTF-8'?>\n<presence xmlns='urn:ietf:params:xml:ns:pidf' \
             entity='pres:a@b'><tuple id='t'><status><basic>closed</basic></status></tuple>\
             <note>bye</note></presence>\n"
        );
        round_trip(&p);
    }

    #[test]
    fn writer_refuses_bad_ids_and_entity() {
        let mut p = Pidf {
            entity: String::new(),
            tuples: vec![],
            notes: vec![],
            person: None,
        };
        assert_eq!(p.to_xml(), Err(PidfError::MissingEntity));
        p.entity = "pres:a@b".into();
        for bad in ["", "0", "-a", "a b", "a:b", "é", "_a"] {
            p.tuples = vec![Tuple::new(bad, Basic::Open)];
            assert_eq!(
                p.to_xml(),
                Err(PidfError::BadId { id: bad.into() }),
                "{bad}"
            );
        }
        p.tuples = vec![Tuple::new("a", Basic::Open), Tuple::new("a", Basic::Closed)];
        assert!(matches!(
            p.to_xml(),
            Err(PidfError::DuplicateTupleId { .. })
        ));
        p.tuples = vec![Tuple::new("a.b-c_9", Basic::Open)];
        assert!(p.to_xml().is_ok());
    }

    #[test]
    fn activities_names_round_trip() {
        for (name, a) in ACTIVITY_NAMES {
            assert_eq!(a.name(), *name);
            assert_eq!(Activity::from_name(name).as_ref(), Some(a));
        }
        assert_eq!(Activity::from_name("other"), None);
        assert_eq!(Activity::Other("x".into()).name(), "other");
        let mut all: Vec<Activity> = ACTIVITY_NAMES.iter().map(|(_, a)| a.clone()).collect();
        all.push(Activity::Other("free text".into()));
        let p = Pidf {
            entity: "pres:a@b".into(),
            tuples: vec![],
            notes: vec![],
            person: Some(Person {
                id: "p".into(),
                activities: all,
                notes: vec![Note {
                    text: "n".into(),
                    lang: Some("de".into()),
                }],
            }),
        };
        round_trip(&p);
    }

    #[test]
    fn qvalues() {
        let cases = [
            ("0", Some(0)),
            ("0.", Some(0)),
            ("0.5", Some(500)),
            ("0.25", Some(250)),
            ("0.125", Some(125)),
            ("0.999", Some(999)),
            ("1", Some(1000)),
            ("1.000", Some(1000)),
            ("1.001", None),
            ("0.1234", None),
            ("2", None),
            ("-0", None),
            ("", None),
            (".5", None),
            ("0.x", None),
            ("00.5", None),
        ];
        for (s, want) in cases {
            assert_eq!(QValue::parse(s).map(QValue::thousandths), want, "{s}");
        }
        for t in 0..=1000 {
            let q = QValue::from_thousandths(t).unwrap();
            assert_eq!(QValue::parse(&q.to_string()), Some(q));
        }
        assert_eq!(QValue::from_thousandths(1001), None);
        assert_eq!(QValue::from_thousandths(500).unwrap().to_string(), "0.5");
    }

    #[test]
    fn lenient_on_optional_values() {
        let p = Pidf::parse(
            b"<presence xmlns='urn:ietf:params:xml:ns:pidf' entity=' pres:a@b '>\
              <tuple id=' x '><status/><contact priority='high'> sip:a@b </contact>\
              <contact>sip:second@b</contact><unknown xmlns='urn:x'><tuple id='z'/></unknown>\
              </tuple><note><![CDATA[a<b]]> c</note></presence>",
        )
        .unwrap();
        assert_eq!(p.entity, "pres:a@b");
        assert_eq!(p.tuples.len(), 1);
        assert_eq!(p.tuples[0].id, "x");
        assert_eq!(p.tuples[0].basic, None);
        assert_eq!(
            p.tuples[0].contact,
            Some(Contact {
                uri: "sip:a@b".into(),
                priority: None
            })
        );
        assert_eq!(p.notes[0].text, "a<b c");
    }

    #[test]
    fn refuses() {
        let cases: &[(&str, PidfError)] = &[
            ("", PidfError::NotWellFormed { detail: String::new() }),
            ("<presence", PidfError::NotWellFormed { detail: String::new() }),
            ("<presence xmlns='urn:ietf:params:xml:ns:pidf' entity='a'></tuple>", PidfError::NotWellFormed { detail: String::new() }),
            ("<presence entity='a'/>", PidfError::NotPidf),
            ("<pidf xmlns='urn:ietf:params:xml:ns:pidf' entity='a'/>", PidfError::NotPidf),
            ("<presence xmlns='urn:ietf:params:xml:ns:pidf'/>", PidfError::MissingEntity),
            ("<presence xmlns='urn:ietf:params:xml:ns:pidf' entity=' '/>", PidfError::MissingEntity),
            ("<presence xmlns='urn:ietf:params:xml:ns:pidf' entity='a'><tuple/></presence>", PidfError::MissingTupleId),
            ("<presence xmlns='urn:ietf:params:xml:ns:pidf' entity='a'><tuple id='t'/><tuple id='t'/></presence>", PidfError::DuplicateTupleId { id: "t".into() }),
            ("<presence xmlns='urn:ietf:params:xml:ns:pidf' entity='a'><tuple id='t'><status><basic>half</basic></status></tuple></presence>", PidfError::BadBasic { value: "half".into() }),
            ("<presence xmlns='urn:ietf:params:xml:ns:pidf' entity='a'>&nbsp;</presence>", PidfError::NotWellFormed { detail: String::new() }),
            ("<presence xmlns='urn:ietf:params:xml:ns:pidf' entity='a'/><presence/>", PidfError::NotWellFormed { detail: String::new() }),
            ("<p:presence xmlns='urn:ietf:params:xml:ns:pidf' entity='a'/>", PidfError::NotWellFormed { detail: String::new() }),
        ];
        for (xml, want) in cases {
            let got = Pidf::parse(xml.as_bytes());
            match (want, &got) {
                (PidfError::NotWellFormed { .. }, Err(PidfError::NotWellFormed { .. })) => {}
                (want, Err(got)) => assert_eq!(got, want, "{xml}"),
                (_, Ok(p)) => panic!("{xml} accepted as {p:?}"),
            }
        }
    }

    #[test]
    fn refuses_doctype_and_billion_laughs() {
        let laughs = r#"<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
]>
<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="a"><note>&lol3;</note></presence>"#;
        assert_eq!(Pidf::parse(laughs.as_bytes()), Err(PidfError::Doctype));
        let external = "<!DOCTYPE presence SYSTEM 'file:///etc/passwd'><presence/>";
        assert_eq!(Pidf::parse(external.as_bytes()), Err(PidfError::Doctype));
        // The xml-rs path refuses a DTD too, should the byte scan ever miss one.
        let mut reader = parser_config().create_reader(laughs.as_bytes());
        let mut saw_doctype = false;
        for _ in 0..10 {
            match reader.next() {
                Ok(XmlEvent::Doctype { .. }) => {
                    saw_doctype = true;
                    break;
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        assert!(saw_doctype);
        // Comments and CDATA are not markup declarations.
        assert!(!has_markup_declaration(b"<a><!-- x --><![CDATA[y]]></a>"));
        assert!(has_markup_declaration(b"<a><!ELEMENT a ANY></a>"));
    }

    #[test]
    fn bounds() {
        let big = format!(
            "<presence xmlns='urn:ietf:params:xml:ns:pidf' entity='a'><note>{}</note></presence>",
            "x".repeat(MAX_PIDF_LEN)
        );
        assert!(matches!(
            Pidf::parse(big.as_bytes()),
            Err(PidfError::TooLarge {
                max: MAX_PIDF_LEN,
                ..
            })
        ));
        let deep = format!(
            "<presence xmlns='urn:ietf:params:xml:ns:pidf' entity='a'>{}{}</presence>",
            "<x>".repeat(MAX_DEPTH),
            "</x>".repeat(MAX_DEPTH)
        );
        assert_eq!(
            Pidf::parse(deep.as_bytes()),
            Err(PidfError::TooDeep { max: MAX_DEPTH })
        );
        let ok_depth = format!(
            "<presence xmlns='urn:ietf:params:xml:ns:pidf' entity='a'>{}{}</presence>",
            "<x>".repeat(MAX_DEPTH - 1),
            "</x>".repeat(MAX_DEPTH - 1)
        );
        assert!(Pidf::parse(ok_depth.as_bytes()).is_ok());
        let many = format!(
            "<presence xmlns='urn:ietf:params:xml:ns:pidf' entity='a'>{}</presence>",
            "<x/>".repeat(MAX_ELEMENTS)
        );
        assert_eq!(
            Pidf::parse(many.as_bytes()),
            Err(PidfError::TooMany {
                what: "elements",
                max: MAX_ELEMENTS
            })
        );
        let tuples: String = (0..=MAX_TUPLES)
            .map(|i| format!("<tuple id='t{i}'/>"))
            .collect();
        let doc =
            format!("<presence xmlns='urn:ietf:params:xml:ns:pidf' entity='a'>{tuples}</presence>");
        assert_eq!(
            Pidf::parse(doc.as_bytes()),
            Err(PidfError::TooMany {
                what: "tuples",
                max: MAX_TUPLES
            })
        );
        let notes = "<note>n</note>".repeat(MAX_NOTES + 1);
        let doc =
            format!("<presence xmlns='urn:ietf:params:xml:ns:pidf' entity='a'>{notes}</presence>");
        assert_eq!(
            Pidf::parse(doc.as_bytes()),
            Err(PidfError::TooMany {
                what: "notes",
                max: MAX_NOTES
            })
        );
        let acts = "<r:away/>".repeat(MAX_ACTIVITIES + 1);
        let doc = format!(
            "<presence xmlns='urn:ietf:params:xml:ns:pidf' xmlns:r='urn:ietf:params:xml:ns:pidf:rpid' \
             xmlns:dm='urn:ietf:params:xml:ns:pidf:data-model' entity='a'>\
             <dm:person id='p'><r:activities>{acts}</r:activities></dm:person></presence>"
        );
        assert_eq!(
            Pidf::parse(doc.as_bytes()),
            Err(PidfError::TooMany {
                what: "activities",
                max: MAX_ACTIVITIES
            })
        );
        let long_name = format!(
            "<presence xmlns='urn:ietf:params:xml:ns:pidf' entity='a'><{0}/></presence>",
            // xml-rs checks the limit before appending a character: one more gets through.
            "n".repeat(MAX_NAME + 2)
        );
        assert!(matches!(
            Pidf::parse(long_name.as_bytes()),
            Err(PidfError::NotWellFormed { .. })
        ));
    }

    #[test]
    fn bom_and_bad_encoding() {
        let mut doc = vec![0xEF, 0xBB, 0xBF];
        doc.extend_from_slice(CLOSED.as_bytes());
        assert!(Pidf::parse(&doc).is_ok());
        assert!(
            Pidf::parse(b"<presence xmlns='urn:ietf:params:xml:ns:pidf' entity='\xff'/>").is_err()
        );
    }

    use crate::testing::Rng as XorShift;

    /// Seeded mutations of every sample: parsing never panics, and whatever parses and can
    /// be written parses back to the same struct.
    #[test]
    fn mutations_never_panic_and_round_trip() {
        const PIECES: &[&[u8]] = &[
            b"<",
            b">",
            b"/>",
            b"&",
            b"&amp;",
            b"&#0;",
            b"'",
            b"\"",
            b"<!DOCTYPE x>",
            b"<![CDATA[",
            b"]]>",
            b"<tuple id='q'>",
            b"</tuple>",
            b"\xC3",
            b"\xFF",
            b"\0",
            b"xmlns='urn:x'",
            b"<rpid:away/>",
            b"<basic>closed</basic>",
        ];
        let samples = [RFC3863_EXAMPLE, LYNC_STYLE, CLOSED];
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        let mut parsed = 0;
        for round in 0..3000 {
            let mut doc = samples[round % samples.len()].as_bytes().to_vec();
            for _ in 0..=rng.below(4) {
                let at = rng.below(doc.len() + 1).min(doc.len());
                match rng.below(4) {
                    0 => {
                        let end = (at + rng.below(16)).min(doc.len());
                        doc.drain(at..end);
                    }
                    1 => {
                        let piece = PIECES[rng.below(PIECES.len())];
                        doc.splice(at..at, piece.iter().copied());
                    }
                    2 => {
                        if let Some(b) = doc.get_mut(at) {
                            *b ^= 1 << rng.below(8);
                        }
                    }
                    _ => doc.truncate(at),
                }
            }
            if let Ok(p) = Pidf::parse(&doc) {
                parsed += 1;
                if let Ok(xml) = p.to_xml() {
                    // Characters XML cannot carry are written as U+FFFD: skip those.
                    if !xml.contains('\u{FFFD}') {
                        assert_eq!(Pidf::parse(xml.as_bytes()).as_ref(), Ok(&p), "{xml}");
                    }
                }
            }
        }
        assert!(parsed > 100, "only {parsed} mutated documents parsed");
    }
}
