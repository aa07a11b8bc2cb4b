//! A small namespaced XML element tree and its serializer.
//!
//! Owns: the in-memory form of one stanza or stream-level element (`Element`, `Node`, `Attribute`)
//! and writing it back as XML inside an S2S stream whose default namespace is `jabber:server`
//! with the `stream` and `db` prefixes declared (RFC 6120 §4.8, XEP-0220 §2.1).
//!
//! Out of scope: parsing (see [`super::stream`], which builds these trees from bytes),
//! stanza semantics (message/presence/iq structs live above this layer).
//!
//! Names are stored resolved: an element carries its namespace URI, never a prefix, so two
//! elements are equal whatever prefixes the peer happened to use. The serializer picks prefixes:
//!
//! ```text
//!  namespace of element          written as
//!  ─────────────────────────     ───────────────────────────────────────────────
//!  the default in scope           <name …>                     (no declaration)
//!  jabber:server:dialback         <db:name …>                  (prefix from the stream header)
//!  http://etherx.jabber.org/…     <stream:name …>              (prefix from the stream header)
//!  anything else                  <name xmlns='uri' …>         (children inherit it)
//! ```
//!
//! Every text and attribute value is escaped (`& < > " '`); characters XML 1.0 cannot carry
//! at all (C0 controls other than tab, LF, CR; U+FFFE, U+FFFF) are replaced by U+FFFD, because
//! not even a character reference may name them (XML 1.0 §2.2, §4.1 WFC: Legal Character).

/// Namespace of the S2S stream content (RFC 6120 §4.8.3).
pub const NS_SERVER: &str = "jabber:server";
/// Namespace of the stream element itself (RFC 6120 §4.8.1).
pub const NS_STREAMS: &str = "http://etherx.jabber.org/streams";
/// Namespace of the dialback elements, usually under the `db` prefix (XEP-0220 §2.1).
pub const NS_DIALBACK: &str = "jabber:server:dialback";
/// The namespace bound to the reserved `xml` prefix (`xml:lang`).
pub const NS_XML: &str = "http://www.w3.org/XML/1998/namespace";

/// One attribute: a local name, an optional namespace (for `xml:lang` it is [`NS_XML`]) and a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    /// Local name, without any prefix.
    pub name: String,
    /// Namespace URI; `None` for an unprefixed attribute (attributes never inherit a default namespace).
    pub namespace: Option<String>,
    /// Unescaped value.
    pub value: String,
}

/// A child of an element: another element or a run of character data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// A child element.
    Element(Element),
    /// Character data, unescaped (CDATA sections become plain text).
    Text(String),
}

/// An XML element with resolved namespaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    /// Local name, without any prefix.
    pub name: String,
    /// Namespace URI; the empty string means "no namespace".
    pub namespace: String,
    /// Attributes in document order (namespace declarations are not attributes here).
    pub attributes: Vec<Attribute>,
    /// Children in document order.
    pub children: Vec<Node>,
}

impl Element {
    /// A new empty element `name` in namespace `namespace`.
    pub fn new(name: impl Into<String>, namespace: impl Into<String>) -> Self {
        Element {
            name: name.into(),
            namespace: namespace.into(),
            attributes: Vec::new(),
            children: Vec::new(),
        }
    }

    /// Builder: sets the unprefixed attribute `name` (replacing an earlier value).
    #[must_use]
    pub fn with_attr(mut self, name: &str, value: impl Into<String>) -> Self {
        self.set_attr(name, value);
        self
    }

    /// Builder: sets the attribute `name` when `value` is `Some`.
    #[must_use]
    pub fn with_opt_attr(mut self, name: &str, value: Option<&str>) -> Self {
        if let Some(value) = value {
            self.set_attr(name, value);
        }
        self
    }

    /// Builder: appends a child element.
    #[must_use]
    pub fn with_child(mut self, child: Element) -> Self {
        self.children.push(Node::Element(child));
        self
    }

    /// Builder: appends character data.
    #[must_use]
    pub fn with_text(mut self, text: impl Into<String>) -> Self {
        self.children.push(Node::Text(text.into()));
        self
    }

    /// Sets the unprefixed attribute `name`, replacing an earlier value.
    pub fn set_attr(&mut self, name: &str, value: impl Into<String>) {
        let value = value.into();
        match self
            .attributes
            .iter_mut()
            .find(|a| a.namespace.is_none() && a.name == name)
        {
            Some(attr) => attr.value = value,
            None => self.attributes.push(Attribute {
                name: name.to_owned(),
                namespace: None,
                value,
            }),
        }
    }

    /// Sets the attribute `name` in namespace `ns` (e.g. `("lang", NS_XML)` for `xml:lang`).
    pub fn set_attr_ns(&mut self, name: &str, ns: &str, value: impl Into<String>) {
        let value = value.into();
        match self
            .attributes
            .iter_mut()
            .find(|a| a.namespace.as_deref() == Some(ns) && a.name == name)
        {
            Some(attr) => attr.value = value,
            None => self.attributes.push(Attribute {
                name: name.to_owned(),
                namespace: Some(ns.to_owned()),
                value,
            }),
        }
    }

    /// The value of the unprefixed attribute `name`.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|a| a.namespace.is_none() && a.name == name)
            .map(|a| a.value.as_str())
    }

    /// The value of attribute `name` in namespace `ns`.
    pub fn attr_ns(&self, name: &str, ns: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|a| a.namespace.as_deref() == Some(ns) && a.name == name)
            .map(|a| a.value.as_str())
    }

    /// The `xml:lang` attribute.
    pub fn lang(&self) -> Option<&str> {
        self.attr_ns("lang", NS_XML)
    }

    /// Whether this element is `name` in namespace `ns`.
    pub fn is(&self, name: &str, ns: &str) -> bool {
        self.name == name && self.namespace == ns
    }

    /// The first child element `name` in namespace `ns`.
    pub fn child(&self, name: &str, ns: &str) -> Option<&Element> {
        self.elements().find(|e| e.is(name, ns))
    }

    /// Mutable access to the first child element `name` in namespace `ns`.
    pub fn child_mut(&mut self, name: &str, ns: &str) -> Option<&mut Element> {
        self.children.iter_mut().find_map(|n| match n {
            Node::Element(e) if e.is(name, ns) => Some(e),
            _ => None,
        })
    }

    /// The child elements, skipping text.
    pub fn elements(&self) -> impl Iterator<Item = &Element> {
        self.children.iter().filter_map(|n| match n {
            Node::Element(e) => Some(e),
            Node::Text(_) => None,
        })
    }

    /// The concatenated direct character data of this element (not of its descendants).
    pub fn text(&self) -> String {
        let mut out = String::new();
        for node in &self.children {
            if let Node::Text(t) = node {
                out.push_str(t);
            }
        }
        out
    }

    /// Whether the element has no text other than whitespace and no child elements.
    pub fn is_empty(&self) -> bool {
        self.children
            .iter()
            .all(|n| matches!(n, Node::Text(t) if t.trim().is_empty()))
    }

    /// Serializes the element as it is written inside an S2S stream: default namespace
    /// `jabber:server`, prefixes `stream` and `db` declared on the stream header.
    pub fn to_stream_xml(&self) -> String {
        let mut out = String::new();
        self.write_xml(&mut out, &Scope::s2s_stream());
        out
    }

    /// Appends the serialization of the element to `out`, relative to the enclosing `scope`.
    pub fn write_xml(&self, out: &mut String, scope: &Scope) {
        let mut decls = Vec::new();
        self.write_inner(out, scope, scope.default_ns.as_str(), &mut decls);
    }

    fn write_inner(
        &self,
        out: &mut String,
        scope: &Scope,
        default_ns: &str,
        scratch: &mut Vec<(String, String)>,
    ) {
        // Prefix or default-namespace declaration for the element itself.
        let prefix = if self.namespace == default_ns {
            None
        } else {
            scope.prefix_for(&self.namespace)
        };
        let mut new_default: Option<&str> = None;
        out.push('<');
        if let Some(p) = prefix {
            out.push_str(p);
            out.push(':');
        } else if self.namespace != default_ns {
            new_default = Some(self.namespace.as_str());
        }
        out.push_str(&self.name);
        if let Some(ns) = new_default {
            out.push_str(" xmlns='");
            escape_into(out, ns, true);
            out.push('\'');
        }
        // Attributes; namespaced ones other than xml:* get a local prefix declared here.
        let first_local = scratch.len();
        for attr in &self.attributes {
            out.push(' ');
            if let Some(ns) = attr.namespace.as_deref() {
                if ns == NS_XML {
                    out.push_str("xml:");
                } else if let Some(p) = scope.prefix_for(ns) {
                    out.push_str(p);
                    out.push(':');
                } else {
                    let known = scratch
                        .get(first_local..)
                        .unwrap_or_default()
                        .iter()
                        .find(|(_, uri)| uri == ns)
                        .map(|(p, _)| p.clone());
                    let p = match known {
                        Some(p) => p,
                        None => {
                            let p = format!("a{}", scratch.len() - first_local);
                            out.push_str("xmlns:");
                            out.push_str(&p);
                            out.push_str("='");
                            escape_into(out, ns, true);
                            out.push_str("' ");
                            scratch.push((p.clone(), ns.to_owned()));
                            p
                        }
                    };
                    out.push_str(&p);
                    out.push(':');
                }
            }
            out.push_str(&attr.name);
            out.push_str("='");
            escape_into(out, &attr.value, true);
            out.push('\'');
        }
        scratch.truncate(first_local);
        if self.children.is_empty() {
            out.push_str("/>");
            return;
        }
        out.push('>');
        let child_default = new_default.unwrap_or(default_ns);
        for node in &self.children {
            match node {
                Node::Element(e) => e.write_inner(out, scope, child_default, scratch),
                Node::Text(t) => escape_into(out, t, false),
            }
        }
        out.push_str("</");
        if let Some(p) = prefix {
            out.push_str(p);
            out.push(':');
        }
        out.push_str(&self.name);
        out.push('>');
    }
}

/// The namespace context an element is written into: the default namespace and the prefixes
/// declared by enclosing elements (for us, the stream header).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// The default namespace in scope.
    pub default_ns: String,
    /// Declared prefixes as `(prefix, uri)`.
    pub prefixes: Vec<(String, String)>,
}

impl Scope {
    /// The scope inside an S2S stream as xsgw opens it: default `jabber:server`,
    /// `stream` → streams namespace, `db` → dialback namespace.
    pub fn s2s_stream() -> Self {
        Scope {
            default_ns: NS_SERVER.to_owned(),
            prefixes: vec![
                ("stream".to_owned(), NS_STREAMS.to_owned()),
                ("db".to_owned(), NS_DIALBACK.to_owned()),
            ],
        }
    }

    fn prefix_for(&self, ns: &str) -> Option<&str> {
        if ns.is_empty() {
            return None;
        }
        self.prefixes
            .iter()
            .find(|(_, uri)| uri == ns)
            .map(|(p, _)| p.as_str())
    }
}

/// Whether `c` may appear in an XML 1.0 document at all (XML 1.0 §2.2 `Char`).
pub fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..='\u{10FFFF}')
}

/// Appends `text` to `out` escaped for character data (`in_attr == false`) or for a
/// single- or double-quoted attribute value (`in_attr == true`).
///
/// All five predefined entities are always used. CR is written as `&#xD;` (a parser would
/// normalise a raw CR away); in attributes tab and LF are written as references too, because
/// attribute-value normalisation would turn them into spaces. Characters XML 1.0 cannot carry
/// become U+FFFD.
pub fn escape_into(out: &mut String, text: &str, in_attr: bool) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\r' => out.push_str("&#xD;"),
            '\t' if in_attr => out.push_str("&#x9;"),
            '\n' if in_attr => out.push_str("&#xA;"),
            c if !is_xml_char(c) => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
}

/// `text` escaped for character data or attribute values; see [`escape_into`].
pub fn escape(text: &str, in_attr: bool) -> String {
    let mut out = String::with_capacity(text.len());
    escape_into(&mut out, text, in_attr);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xmpp::stream::parse_fragment;

    fn round_trip(e: &Element) {
        let xml = e.to_stream_xml();
        let parsed = parse_fragment(xml.as_bytes()).unwrap_or_else(|err| panic!("{xml}: {err}"));
        assert_eq!(&parsed, e, "round trip of {xml}");
    }

    #[test]
    fn writes_default_namespace_without_declaration() {
        let e = Element::new("message", NS_SERVER)
            .with_attr("to", "a@b")
            .with_child(Element::new("body", NS_SERVER).with_text("hi"));
        assert_eq!(
            e.to_stream_xml(),
            "<message to='a@b'><body>hi</body></message>"
        );
        round_trip(&e);
    }

    #[test]
    fn writes_db_and_stream_prefixes() {
        let e = Element::new("result", NS_DIALBACK)
            .with_attr("from", "a")
            .with_text("k");
        assert_eq!(e.to_stream_xml(), "<db:result from='a'>k</db:result>");
        let f = Element::new("features", NS_STREAMS)
            .with_child(Element::new("starttls", "urn:ietf:params:xml:ns:xmpp-tls"));
        assert_eq!(f.to_stream_xml(), "<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/></stream:features>");
        round_trip(&e);
        round_trip(&f);
    }

    #[test]
    fn foreign_namespace_is_inherited_and_reset() {
        let e = Element::new("iq", NS_SERVER).with_child(
            Element::new("query", "jabber:iq:version")
                .with_child(Element::new("name", "jabber:iq:version").with_text("x"))
                .with_child(Element::new("back", NS_SERVER))
                .with_child(Element::new("none", "")),
        );
        let xml = e.to_stream_xml();
        assert_eq!(
            xml,
            "<iq><query xmlns='jabber:iq:version'><name>x</name><back xmlns='jabber:server'/><none xmlns=''/></query></iq>"
        );
        round_trip(&e);
    }

    #[test]
    fn escapes_everything() {
        let nasty = "a&b<c>d\"e'f\r\n\tg ]]> \u{1}\u{FFFF}ü😀";
        let e = Element::new("message", NS_SERVER)
            .with_attr("id", nasty)
            .with_text(nasty);
        let xml = e.to_stream_xml();
        assert!(!xml.contains('\u{1}'));
        let parsed = parse_fragment(xml.as_bytes()).unwrap();
        let clean = "a&b<c>d\"e'f\r\n\tg ]]> \u{FFFD}\u{FFFD}ü😀";
        assert_eq!(parsed.attr("id"), Some(clean));
        assert_eq!(parsed.text(), clean);
    }

    #[test]
    fn namespaced_attributes() {
        let mut e = Element::new("message", NS_SERVER);
        e.set_attr_ns("lang", NS_XML, "en");
        e.set_attr_ns("foo", "urn:x", "1");
        e.set_attr_ns("bar", "urn:x", "2");
        e.set_attr_ns("key", NS_DIALBACK, "3");
        let xml = e.to_stream_xml();
        assert_eq!(
            xml,
            "<message xml:lang='en' xmlns:a0='urn:x' a0:foo='1' a0:bar='2' db:key='3'/>"
        );
        assert_eq!(e.lang(), Some("en"));
        round_trip(&e);
    }

    #[test]
    fn helpers() {
        let e = Element::new("m", NS_SERVER)
            .with_text("a")
            .with_child(Element::new("x", "u"))
            .with_text("b")
            .with_opt_attr("t", None)
            .with_opt_attr("u", Some("v"));
        assert_eq!(e.text(), "ab");
        assert!(e.child("x", "u").is_some());
        assert!(e.child("x", NS_SERVER).is_none());
        assert_eq!(e.attr("t"), None);
        assert_eq!(e.attr("u"), Some("v"));
        assert!(!e.is_empty());
        assert!(Element::new("a", "").with_text(" \n").is_empty());
        assert_eq!(escape("<'>", true), "&lt;&apos;&gt;");
    }
}
