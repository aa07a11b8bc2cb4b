//! A small INI reader that keeps line numbers, so every later error can name `file:line`.
//!
//! Accepted syntax (what `etc/xsgw.ini` uses, nothing more):
//! - `[section]` and `[section argument]` headers (`[partner gmail.com]`);
//! - `key = value` lines; the value may be empty;
//! - comments: a line starting with `;` or `#`, and the rest of a line after whitespace
//!   followed by `;` or `#` (so `a=b;c` keeps its `;`, `a = b ; note` does not);
//! - blank lines.
//!
//! Out of scope: quoting, continuation lines, `include`. Anything else is a syntax error with
//! its line number; the reader goes on to report every bad line, not only the first.

/// One `[section]` or `[section argument]` with its entries in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    pub name: String,
    /// The word after the section name: the domain in `[partner gmail.com]`.
    pub argument: Option<String>,
    pub line: usize,
    pub entries: Vec<Entry>,
}

/// One `key = value` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: String,
    pub value: String,
    pub line: usize,
}

/// A line the reader could not understand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub line: usize,
    pub message: String,
}

/// Largest configuration file read; a bigger one is certainly not an xsgw configuration.
pub const MAX_FILE_LEN: usize = 1024 * 1024;

/// Parses `text` into sections. Entries before any section header are errors.
/// Returns every section that could be read together with every syntax error.
pub fn parse(text: &str) -> (Vec<Section>, Vec<SyntaxError>) {
    let mut sections: Vec<Section> = Vec::new();
    let mut errors = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let content = strip_comment(raw).trim();
        if content.is_empty() {
            continue;
        }
        if let Some(rest) = content.strip_prefix('[') {
            let Some(inner) = rest.strip_suffix(']') else {
                errors.push(SyntaxError {
                    line,
                    message: format!("section header `{content}` has no closing `]`"),
                });
                continue;
            };
            let mut words = inner.split_whitespace();
            let Some(name) = words.next() else {
                errors.push(SyntaxError {
                    line,
                    message: "empty section header `[]`".into(),
                });
                continue;
            };
            let argument = words.next().map(str::to_string);
            if words.next().is_some() {
                errors.push(SyntaxError {
                    line,
                    message: format!(
                        "section header `[{inner}]` has more than two words; expected `[name]` or `[name argument]`"
                    ),
                });
                continue;
            }
            sections.push(Section {
                name: name.to_ascii_lowercase(),
                argument,
                line,
                entries: Vec::new(),
            });
            continue;
        }
        let Some((key, value)) = content.split_once('=') else {
            errors.push(SyntaxError {
                line,
                message: format!("`{content}` is neither `[section]` nor `key = value`"),
            });
            continue;
        };
        let key = key.trim();
        if key.is_empty() || key.contains(char::is_whitespace) {
            errors.push(SyntaxError {
                line,
                message: format!("`{key}` is not a key name; expected one word before `=`"),
            });
            continue;
        }
        let Some(section) = sections.last_mut() else {
            errors.push(SyntaxError {
                line,
                message: format!("`{key}` comes before any [section] header"),
            });
            continue;
        };
        section.entries.push(Entry {
            key: key.to_ascii_lowercase(),
            value: value.trim().to_string(),
            line,
        });
    }
    (sections, errors)
}

/// Removes a whole-line comment, or a trailing comment introduced by whitespace + `;`/`#`.
fn strip_comment(line: &str) -> &str {
    let trimmed = line.trim_start();
    if trimmed.starts_with(';') || trimmed.starts_with('#') {
        return "";
    }
    let bytes = line.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if (b == b';' || b == b'#') && i > 0 && bytes[i - 1].is_ascii_whitespace() {
            return &line[..i];
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
; leading comment
[gateway]
fqdn = xmpp.jds.local          ; trailing comment
sip_domains = contoso.com, fabrikam.com

# another comment style
[partner gmail.com]
aliases = googlemail.com
route =
[hosts]   ; a comment after a header
sip.contoso.com = 10.11.12.33
";

    #[test]
    fn reads_sections_entries_and_lines() {
        let (sections, errors) = parse(SAMPLE);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(sections.len(), 3);
        assert_eq!(sections[0].name, "gateway");
        assert_eq!(sections[0].line, 2);
        assert_eq!(sections[0].entries[0].key, "fqdn");
        assert_eq!(sections[0].entries[0].value, "xmpp.jds.local");
        assert_eq!(sections[0].entries[0].line, 3);
        assert_eq!(sections[0].entries[1].value, "contoso.com, fabrikam.com");
        assert_eq!(sections[1].name, "partner");
        assert_eq!(sections[1].argument.as_deref(), Some("gmail.com"));
        assert_eq!(sections[1].entries[1].key, "route");
        assert_eq!(sections[1].entries[1].value, "");
        assert_eq!(sections[2].entries[0].key, "sip.contoso.com");
        assert_eq!(sections[2].entries[0].line, 11);
    }

    #[test]
    fn semicolon_without_space_is_part_of_the_value() {
        let (sections, _) = parse("[a]\nk = x;y\n");
        assert_eq!(sections[0].entries[0].value, "x;y");
    }

    #[test]
    fn reports_every_bad_line() {
        let text = "orphan = 1\n[gateway\n[]\njust words\n[ok]\n = empty key\n[a b c]\n";
        let (_, errors) = parse(text);
        let lines: Vec<usize> = errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![1, 2, 3, 4, 6, 7]);
        assert!(errors[0].message.contains("before any [section]"));
        assert!(errors[1].message.contains("closing `]`"));
    }

    #[test]
    fn keys_and_sections_are_case_insensitive() {
        let (sections, _) = parse("[XMPP]\nListen = 1.2.3.4:5269\n");
        assert_eq!(sections[0].name, "xmpp");
        assert_eq!(sections[0].entries[0].key, "listen");
    }
}
