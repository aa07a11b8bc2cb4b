//! A parser for one complete, already delimited XML element: the fast path of [`super::stream`].
//!
//! Owns: turning the bytes of one top-level element, whose boundaries the stream scanner has
//! found, into an [`Element`]: UTF-8, names (XML 1.0 §2.3), attributes and their
//! normalisation (§3.3.3), line ends (§2.11), the five predefined entities and character
//! references (§4.1, §4.6), CDATA sections, matching end tags, and namespaces (Namespaces in
//! XML 1.0 §3–§6) resolved against the declarations of the stream header.
//!
//! Out of scope: anything outside one element. Doctypes, comments and processing
//! instructions never reach this parser (the scanner refuses them first) and are refused here
//! too. The stream header is parsed with xml-rs (rare, and its XML declaration needs checks).
//!
//! Why not xml-rs for stanzas: xml-rs walks every character through a general state machine
//! and clones the namespace map for each element; this parser does the same checks in one
//! pass over bytes it knows to be complete, several times faster. xml-rs remains the
//! reference: a test feeds both thousands of mutated stanzas and requires the same answers.
//!
//! # DoS warning
//! Work is linear in the input; the caller bounds input size, depth (recursion depth
//! equals element depth) and attribute count.

use xml::common::{is_name_char, is_name_start_char, is_xml10_char};

use super::element::{Attribute, Element, Node, NS_XML};
use super::parse_error::StreamError;

const NS_XMLNS: &str = "http://www.w3.org/2000/xmlns/";

/// Parses `input`, which must be exactly one element, in the namespace context of a stream
/// whose default namespace is `default_ns` and whose header declared `prefixes`.
pub(crate) fn parse_element(
    input: &[u8],
    default_ns: &str,
    prefixes: &[(String, String)],
    max_name: usize,
) -> Result<Element, StreamError> {
    let text = std::str::from_utf8(input).map_err(|_| bad("invalid utf-8"))?;
    let mut p = Parser {
        s: text,
        b: text.as_bytes(),
        pos: 0,
        max_name,
        bindings: Vec::new(),
    };
    p.bindings.push((String::new(), default_ns.to_owned()));
    for (prefix, uri) in prefixes {
        p.bindings.push((prefix.clone(), uri.clone()));
    }
    if p.peek() != Some(b'<') {
        return Err(bad("fragment does not start with an element"));
    }
    let element = p.element()?;
    if p.pos != p.b.len() {
        return Err(bad("data after the element"));
    }
    Ok(element)
}

fn bad(detail: &str) -> StreamError {
    StreamError::NotWellFormed {
        detail: detail.to_owned(),
    }
}

/// What kind of literal run is being copied.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Run {
    /// Character data: `]]>` is not allowed.
    Text,
    /// An attribute value: whitespace becomes spaces.
    Attr,
    /// A CDATA section's body.
    Cdata,
}

struct Parser<'a> {
    s: &'a str,
    b: &'a [u8],
    pos: usize,
    max_name: usize,
    /// In-scope namespace bindings, innermost last; prefix "" is the default namespace.
    bindings: Vec<(String, String)>,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.pos).copied()
    }

    fn starts_with(&self, lit: &[u8]) -> bool {
        self.b
            .get(self.pos..)
            .is_some_and(|rest| rest.starts_with(lit))
    }

    fn expect(&mut self, byte: u8, what: &str) -> Result<(), StreamError> {
        if self.peek() == Some(byte) {
            self.pos += 1;
            Ok(())
        } else {
            Err(bad(what))
        }
    }

    fn skip_ws(&mut self) -> bool {
        let start = self.pos;
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\r' | b'\n')) {
            self.pos += 1;
        }
        self.pos > start
    }

    fn next_char(&self) -> Option<char> {
        self.s.get(self.pos..)?.chars().next()
    }

    /// A `Name` (XML 1.0 §2.3 [5]); colons are checked later by namespace processing.
    fn name(&mut self) -> Result<&'a str, StreamError> {
        let start = self.pos;
        match self.next_char() {
            Some(c) if is_name_start_char(c) => self.pos += c.len_utf8(),
            _ => return Err(bad("expected a name")),
        }
        while let Some(c) = self.next_char() {
            if !is_name_char(c) {
                break;
            }
            self.pos += c.len_utf8();
        }
        if self.pos - start > self.max_name {
            return Err(StreamError::TooLarge {
                len: self.pos - start,
                max: self.max_name,
            });
        }
        self.s.get(start..self.pos).ok_or_else(|| bad("name"))
    }

    /// `&…;` after the `&`: one of the five predefined entities or a character reference.
    fn reference(&mut self, out: &mut String) -> Result<(), StreamError> {
        self.expect(b'&', "expected '&'")?;
        let rest = self.b.get(self.pos..).unwrap_or_default();
        let end = rest
            .iter()
            .take(12)
            .position(|&c| c == b';')
            .ok_or_else(|| bad("unterminated reference"))?;
        let body = self
            .s
            .get(self.pos..self.pos + end)
            .ok_or_else(|| bad("reference"))?;
        let c = match body {
            "lt" => '<',
            "gt" => '>',
            "amp" => '&',
            "apos" => '\'',
            "quot" => '"',
            _ => {
                let code = if let Some(hex) = body.strip_prefix("#x") {
                    if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                        return Err(bad("malformed character reference"));
                    }
                    u32::from_str_radix(hex, 16).ok()
                } else if let Some(dec) = body.strip_prefix('#') {
                    if dec.is_empty() || !dec.bytes().all(|b| b.is_ascii_digit()) {
                        return Err(bad("malformed character reference"));
                    }
                    dec.parse::<u32>().ok()
                } else {
                    return Err(bad("undefined entity reference"));
                };
                match code.and_then(char::from_u32) {
                    Some(c) if is_xml10_char(c) => c,
                    _ => return Err(bad("character reference to an invalid character")),
                }
            }
        };
        out.push(c);
        self.pos += end + 1;
        Ok(())
    }

    /// Copies literal characters up to one of `stops` (or `limit`), checking each is
    /// allowed and normalising line ends (§2.11) and, in attribute values, whitespace to
    /// spaces (§3.3.3).
    fn literal_run(
        &mut self,
        out: &mut String,
        stops: &[u8],
        mode: Run,
        limit: usize,
    ) -> Result<(), StreamError> {
        let start = self.pos;
        let mut copied = start;
        let in_attr = mode == Run::Attr;
        while self.pos < limit {
            let Some(b) = self.peek() else { break };
            if stops.contains(&b) {
                break;
            }
            match b {
                b'\r' | b'\n' | b'\t' if in_attr || b == b'\r' => {
                    out.push_str(
                        self.s
                            .get(copied..self.pos)
                            .ok_or_else(|| bad("utf-8 boundary"))?,
                    );
                    self.pos += 1;
                    if b == b'\r' && self.peek() == Some(b'\n') && self.pos < limit {
                        self.pos += 1;
                    }
                    out.push(if in_attr { ' ' } else { '\n' });
                    copied = self.pos;
                    continue;
                }
                b'\t' | b'\n' => {}
                0..=0x1f => return Err(bad("control character")),
                b'>' if mode == Run::Text
                    && self.pos >= 2
                    && self.b.get(self.pos - 2..self.pos) == Some(b"]]") =>
                {
                    return Err(bad("']]>' in character data"));
                }
                // U+FFFE and U+FFFF (EF BF BE / EF BF BF) are not XML characters.
                0xEF if matches!(
                    self.b.get(self.pos + 1..self.pos + 3),
                    Some([0xBF, 0xBE | 0xBF])
                ) =>
                {
                    return Err(bad("non-character in character data"));
                }
                _ => {}
            }
            self.pos += 1;
        }
        out.push_str(
            self.s
                .get(copied..self.pos)
                .ok_or_else(|| bad("utf-8 boundary"))?,
        );
        Ok(())
    }

    fn attr_value(&mut self) -> Result<String, StreamError> {
        let quote = match self.peek() {
            Some(q @ (b'"' | b'\'')) => q,
            _ => return Err(bad("attribute value not quoted")),
        };
        self.pos += 1;
        let mut value = String::new();
        loop {
            self.literal_run(&mut value, &[quote, b'&', b'<'], Run::Attr, usize::MAX)?;
            match self.peek() {
                Some(b'&') => self.reference(&mut value)?,
                Some(b'<') => return Err(bad("'<' in an attribute value")),
                Some(_) => {
                    self.pos += 1;
                    return Ok(value);
                }
                None => return Err(bad("unterminated attribute value")),
            }
        }
    }

    fn lookup(&self, prefix: &str) -> Option<&str> {
        if prefix == "xml" {
            return Some(NS_XML);
        }
        self.bindings
            .iter()
            .rev()
            .find(|(p, _)| p == prefix)
            .map(|(_, uri)| uri.as_str())
    }

    /// Splits a QName (Namespaces in XML §4): at most one colon, both sides non-empty.
    fn split_qname(qname: &str) -> Result<(Option<&str>, &str), StreamError> {
        match qname.split_once(':') {
            None => Ok((None, qname)),
            Some((prefix, local))
                if !prefix.is_empty() && !local.is_empty() && !local.contains(':') =>
            {
                match local.chars().next() {
                    Some(c) if is_name_start_char(c) => Ok((Some(prefix), local)),
                    _ => Err(bad("malformed qualified name")),
                }
            }
            Some(_) => Err(bad("malformed qualified name")),
        }
    }

    /// An element starting at `<`, with its content and end tag.
    fn element(&mut self) -> Result<Element, StreamError> {
        self.expect(b'<', "expected '<'")?;
        let qname = self.name()?;
        let mut raw: Vec<(&'a str, String)> = Vec::new();
        let empty = loop {
            let spaced = self.skip_ws();
            match self.peek() {
                Some(b'>') => {
                    self.pos += 1;
                    break false;
                }
                Some(b'/') => {
                    self.pos += 1;
                    self.expect(b'>', "expected '>' after '/'")?;
                    break true;
                }
                Some(_) if spaced => {
                    let name = self.name()?;
                    self.skip_ws();
                    self.expect(b'=', "expected '=' after an attribute name")?;
                    self.skip_ws();
                    let value = self.attr_value()?;
                    if raw.iter().any(|(n, _)| *n == name) {
                        return Err(bad(if name == "xmlns" || name.starts_with("xmlns:") {
                            "duplicate namespace declaration"
                        } else {
                            "duplicate attribute"
                        }));
                    }
                    raw.push((name, value));
                }
                _ => return Err(bad("malformed start tag")),
            }
        };

        // Namespace declarations first: they apply to this element's own name and attributes.
        let scope_mark = self.bindings.len();
        for (name, value) in &raw {
            let prefix = if *name == "xmlns" {
                ""
            } else if let Some(p) = name.strip_prefix("xmlns:") {
                if p.contains(':') || p.is_empty() {
                    return Err(bad("malformed namespace declaration"));
                }
                if p == "xmlns" || (p == "xml") != (value == NS_XML) || value.is_empty() {
                    return Err(StreamError::BadNamespacePrefix {
                        detail: format!("cannot bind prefix '{p}'"),
                    });
                }
                p
            } else {
                continue;
            };
            if value == NS_XMLNS || (prefix.is_empty() && value == NS_XML) {
                return Err(StreamError::BadNamespacePrefix {
                    detail: "reserved namespace".into(),
                });
            }
            self.bindings.push((prefix.to_owned(), value.clone()));
        }

        let (prefix, local) = Self::split_qname(qname)?;
        if matches!(prefix, Some("xml" | "xmlns")) {
            // Namespaces in XML §3: reserved prefixes; xml-rs refuses them on elements too.
            return Err(StreamError::BadNamespacePrefix {
                detail: format!("reserved prefix on element {qname}"),
            });
        }
        let namespace = self
            .lookup(prefix.unwrap_or(""))
            .ok_or_else(|| StreamError::BadNamespacePrefix {
                detail: format!("element {qname} prefix is unbound"),
            })?
            .to_owned();
        let mut attributes: Vec<Attribute> = Vec::with_capacity(raw.len());
        for (name, value) in raw {
            if name == "xmlns" || name.starts_with("xmlns:") {
                continue;
            }
            let (prefix, local) = Self::split_qname(name)?;
            let namespace = match prefix {
                None => None,
                Some(p) => Some(
                    self.lookup(p)
                        .filter(|uri| !uri.is_empty())
                        .ok_or_else(|| StreamError::BadNamespacePrefix {
                            detail: format!("attribute {name} prefix is unbound"),
                        })?
                        .to_owned(),
                ),
            };
            if attributes
                .iter()
                .any(|a| a.name == local && a.namespace == namespace)
            {
                return Err(bad("duplicate attribute"));
            }
            attributes.push(Attribute {
                name: local.to_owned(),
                namespace,
                value,
            });
        }
        let mut element = Element {
            name: local.to_owned(),
            namespace,
            attributes,
            children: Vec::new(),
        };
        if !empty {
            self.content(&mut element, qname)?;
        }
        self.bindings.truncate(scope_mark);
        Ok(element)
    }

    /// Content up to and including the end tag `</qname>`.
    fn content(&mut self, element: &mut Element, qname: &str) -> Result<(), StreamError> {
        let mut text = String::new();
        loop {
            match self.peek() {
                None => return Err(bad("element not closed")),
                Some(b'&') => self.reference(&mut text)?,
                Some(b'<') => {
                    if self.starts_with(b"</") {
                        self.pos += 2;
                        let end = self.name()?;
                        if end != qname {
                            return Err(bad("end tag does not match start tag"));
                        }
                        self.skip_ws();
                        self.expect(b'>', "expected '>' in end tag")?;
                        if !text.is_empty() {
                            element.children.push(Node::Text(text));
                        }
                        return Ok(());
                    } else if self.starts_with(b"<![CDATA[") {
                        self.pos += 9;
                        let rest = self.b.get(self.pos..).unwrap_or_default();
                        let len = rest
                            .windows(3)
                            .position(|w| w == b"]]>")
                            .ok_or_else(|| bad("unterminated cdata"))?;
                        let body_end = self.pos + len;
                        self.literal_run(&mut text, &[], Run::Cdata, body_end)?;
                        self.pos = body_end + 3;
                    } else if self.starts_with(b"<!") || self.starts_with(b"<?") {
                        return Err(StreamError::RestrictedXml {
                            what: "markup declaration or processing instruction",
                        });
                    } else {
                        if !text.is_empty() {
                            element.children.push(Node::Text(std::mem::take(&mut text)));
                        }
                        let child = self.element()?;
                        element.children.push(Node::Element(child));
                    }
                }
                Some(_) => self.literal_run(&mut text, b"<&", Run::Text, usize::MAX)?,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xmpp::element::{Scope, NS_DIALBACK, NS_SERVER};
    use crate::xmpp::error::StreamErrorCondition;

    fn parse(xml: &str) -> Result<Element, StreamError> {
        let scope = Scope::s2s_stream();
        parse_element(xml.as_bytes(), &scope.default_ns, &scope.prefixes, 1024)
    }

    #[test]
    fn accepts_and_normalises() {
        let e = parse("<message a=' x\r\ny\tz&#xA;' xml:lang='en'>a\r\nb\rc<![CDATA[<&\r\n>]]>&#65;</message >").unwrap();
        assert!(e.is("message", NS_SERVER));
        assert_eq!(e.attr("a"), Some(" x y z\n"));
        assert_eq!(e.lang(), Some("en"));
        assert_eq!(e.text(), "a\nb\nc<&\n>A");
        let e =
            parse("<db:result xmlns:p='urn:p' p:k='v'><p:x xmlns='urn:d'><y/></p:x></db:result>")
                .unwrap();
        assert!(e.is("result", NS_DIALBACK));
        assert_eq!(e.attr_ns("k", "urn:p"), Some("v"));
        let x = e.child("x", "urn:p").unwrap();
        assert!(x.child("y", "urn:d").is_some());
        let e = parse("<a xmlns=''><b/></a>").unwrap();
        assert_eq!(e.namespace, "");
        assert_eq!(e.elements().next().unwrap().namespace, "");
        assert_eq!(parse("<é\u{301}/>").unwrap().name, "é\u{301}");
    }

    #[test]
    fn refuses() {
        let cases: &[(&str, StreamErrorCondition)] = &[
            ("<a b='<'/>", StreamErrorCondition::NotWellFormed),
            ("<a b='1' b='2'/>", StreamErrorCondition::NotWellFormed),
            (
                "<a xmlns:p='u' xmlns:q='u' p:b='1' q:b='2'/>",
                StreamErrorCondition::NotWellFormed,
            ),
            ("<a b='1'c='2'/>", StreamErrorCondition::NotWellFormed),
            ("<a b=1/>", StreamErrorCondition::NotWellFormed),
            ("<a>]]></a>", StreamErrorCondition::NotWellFormed),
            ("<a>&nbsp;</a>", StreamErrorCondition::NotWellFormed),
            ("<a>&#xD800;</a>", StreamErrorCondition::NotWellFormed),
            ("<a>&#x1;</a>", StreamErrorCondition::NotWellFormed),
            ("<a>&#x;</a>", StreamErrorCondition::NotWellFormed),
            ("<a>&amp</a>", StreamErrorCondition::NotWellFormed),
            ("<a>\u{1}</a>", StreamErrorCondition::NotWellFormed),
            ("<a>\u{FFFE}</a>", StreamErrorCondition::NotWellFormed),
            ("<a></b>", StreamErrorCondition::NotWellFormed),
            ("<a><b></a></b>", StreamErrorCondition::NotWellFormed),
            ("<a/><b/>", StreamErrorCondition::NotWellFormed),
            ("<a:b:c/>", StreamErrorCondition::NotWellFormed),
            ("<:a/>", StreamErrorCondition::NotWellFormed),
            ("<1a/>", StreamErrorCondition::NotWellFormed),
            ("<a><!-- c --></a>", StreamErrorCondition::RestrictedXml),
            ("<a><?pi?></a>", StreamErrorCondition::RestrictedXml),
            ("<q:a/>", StreamErrorCondition::BadNamespacePrefix),
            ("<a q:b='1'/>", StreamErrorCondition::BadNamespacePrefix),
            ("<xmlns:a/>", StreamErrorCondition::BadNamespacePrefix),
            ("<a xmlns:q=''/>", StreamErrorCondition::BadNamespacePrefix),
            (
                "<a xmlns:xml='urn:x'/>",
                StreamErrorCondition::BadNamespacePrefix,
            ),
            (
                "<a xmlns:xmlns='urn:x'/>",
                StreamErrorCondition::BadNamespacePrefix,
            ),
            (
                "<a xmlns='http://www.w3.org/2000/xmlns/'/>",
                StreamErrorCondition::BadNamespacePrefix,
            ),
        ];
        for (xml, condition) in cases {
            match parse(xml) {
                Err(e) => assert_eq!(e.condition(), *condition, "{xml}: {e}"),
                Ok(e) => panic!("{xml} accepted as {e:?}"),
            }
        }
        let scope = Scope::s2s_stream();
        assert!(parse_element(b"<a>\xff</a>", &scope.default_ns, &scope.prefixes, 1024).is_err());
        assert!(matches!(
            parse_element(b"<abcdef/>", &scope.default_ns, &scope.prefixes, 4),
            Err(StreamError::TooLarge { len: 6, max: 4 })
        ));
    }
}
