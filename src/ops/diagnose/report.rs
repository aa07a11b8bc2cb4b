//! The result of one check and its two renderings: text for people, JSON lines for scripts.
//! Pure: no I/O here, so the formats are tested exactly.

use std::fmt::Write as _;

/// How a check came out. Ordered: `Ok < Warn < Fail`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    /// What the check proves is true.
    Ok,
    /// xsgw can work, but something is probably not what the operator meant, or could not
    /// be tested.
    Warn,
    /// Traffic will not flow (or not for this domain, partner or address).
    Fail,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "fail",
        }
    }
}

/// One check's finding. A check may give several (one per domain, partner or address).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The stable check id (`dns.hosted-srv`).
    pub id: &'static str,
    pub status: Status,
    /// The domain, partner or address concerned; empty when the check is about the host.
    pub subject: String,
    /// What was found, one line.
    pub detail: String,
    /// What to change and where; empty for `ok`.
    pub fix: String,
}

impl Finding {
    pub fn ok(id: &'static str, subject: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(id, Status::Ok, subject, detail, "")
    }

    pub fn warn(
        id: &'static str,
        subject: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self::new(id, Status::Warn, subject, detail, fix)
    }

    pub fn fail(
        id: &'static str,
        subject: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self::new(id, Status::Fail, subject, detail, fix)
    }

    pub fn new(
        id: &'static str,
        status: Status,
        subject: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Finding {
            id,
            status,
            subject: subject.into(),
            detail: one_line(&detail.into()),
            fix: one_line(&fix.into()),
        }
    }
}

/// Control characters (peer-supplied text can end up in a detail) become spaces: one
/// finding, one line.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// The width of the id column in text output (the longest id, `edge.federation-port`).
const ID_WIDTH: usize = 20;

/// `ok|warn|fail  <id>  <detail>` and, for warn/fail, an indented `fix:` line.
pub fn text(findings: &[Finding]) -> String {
    let mut out = String::new();
    for f in findings {
        let _ = writeln!(
            out,
            "{:<4}  {:<ID_WIDTH$}  {}",
            f.status.as_str(),
            f.id,
            f.detail
        );
        if f.status != Status::Ok && !f.fix.is_empty() {
            let _ = writeln!(out, "      fix: {}", f.fix);
        }
    }
    out
}

/// One JSON object per line: `{"id","status","subject","detail","fix"}`.
pub fn json(findings: &[Finding]) -> String {
    let mut out = String::new();
    for f in findings {
        out.push_str("{\"id\":");
        json_string(&mut out, f.id);
        out.push_str(",\"status\":");
        json_string(&mut out, f.status.as_str());
        out.push_str(",\"subject\":");
        json_string(&mut out, &f.subject);
        out.push_str(",\"detail\":");
        json_string(&mut out, &f.detail);
        out.push_str(",\"fix\":");
        json_string(&mut out, &f.fix);
        out.push_str("}\n");
    }
    out
}

/// The JSON writer shared with `xsgw status --json`.
pub use crate::status::json::json_string;

/// 0 when nothing failed, 1 otherwise.
pub fn exit_status(findings: &[Finding]) -> i32 {
    if findings.iter().any(|f| f.status == Status::Fail) {
        super::super::EXIT_FAILURE
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_has_one_line_per_finding_and_a_fix_for_warn_and_fail() {
        let findings = vec![
            Finding::ok("config", "", "usable"),
            Finding::warn("fqdn.hostname", "gw.example", "not this host", "set it"),
            Finding::fail("edge.allowed", "sip.example", "403\nForbidden", "add gw"),
        ];
        assert_eq!(
            text(&findings),
            "ok    config                usable\n\
             warn  fqdn.hostname         not this host\n      fix: set it\n\
             fail  edge.allowed          403 Forbidden\n      fix: add gw\n"
        );
        assert_eq!(exit_status(&findings), 1);
        assert_eq!(exit_status(&findings[..2]), 0);
    }

    #[test]
    fn json_escapes_what_json_requires() {
        let f = Finding::fail("dns.partner-srv", "a\"b\\c", "tab\there \u{1}", "é 日本");
        assert_eq!(
            json(&[f]),
            "{\"id\":\"dns.partner-srv\",\"status\":\"fail\",\"subject\":\"a\\\"b\\\\c\",\
             \"detail\":\"tab here  \",\"fix\":\"é 日本\"}\n"
        );
        let mut s = String::new();
        json_string(&mut s, "\u{1}\n\u{7f}\u{2028}");
        assert_eq!(s, "\"\\u0001\\n\\u007f\\u2028\"");
    }
}
