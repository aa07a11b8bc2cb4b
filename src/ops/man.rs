//! The manual pages `xsgw(8)` and `xsgw.ini(5)`, generated from what the program itself uses:
//! the usage text of the command line and the one key table (`config::keys`) that `xsgw
//! check` and `etc/xsgw.ini` follow, so the pages cannot drift from the code.
//!
//! Written as roff (man(7) macros). Not part of the `xsgw` binary: `examples/manpages.rs`
//! writes the files for `make deb`, and the linker drops these functions from the gateway.

use std::fmt::Write as _;

use crate::config::keys::{self, KeyDef};

/// Escapes text for a roff body line: backslashes and hyphens (so `max_stanza` and `--config`
/// copy and search as typed), and a leading `.` or `'` that roff would take for a request.
pub fn roff_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\e"),
            '-' => out.push_str("\\-"),
            c => out.push(c),
        }
    }
    if out.starts_with('.') || out.starts_with('\'') {
        out.insert_str(0, "\\&");
    }
    out
}

fn header(out: &mut String, name: &str, section: u8, version: &str, title: &str) {
    let _ = writeln!(
        out,
        ".TH {} {section} \"\" \"xsgw {version}\" \"{title}\"",
        name.to_uppercase()
    );
}

/// What each section is for, in the order `keys::sections()` gives them.
fn section_doc(section: &str) -> &'static str {
    match section {
        "gateway" => "This host's identity and state.",
        "xmpp" => "The server-to-server XMPP side: listener, certificate, authentication policies, limits and timeouts.",
        "sip" => "The mutual-TLS SIP side toward the Access Edge's federation listener.",
        "federation" => "Which XMPP domains may federate.",
        "partner" => "One section per partner domain, written [partner DOMAIN]; every key is optional and overrides the general setting for that partner.",
        "hosts" => "Static addresses consulted before DNS for names xsgw was configured with, one per line: NAME = ADDRESS[, ADDRESS...].",
        "dns" => "The DNS client used for SRV, A and AAAA lookups.",
        "metrics" => "The optional Prometheus endpoint (GET /metrics): the same numbers as xsgw status, unauthenticated, so on loopback or a management network only.",
        "log" => "Logging.",
        _ => "",
    }
}

fn key_entry(out: &mut String, def: &KeyDef) {
    let value = match def.default {
        None => "(required)".to_owned(),
        Some("") => "(empty)".to_owned(),
        Some(v) => v.to_owned(),
    };
    let _ = writeln!(out, ".TP\n.BR {} \" = {}\"", def.name, roff_escape(&value));
    let _ = writeln!(out, "{}", roff_escape(&capitalise(def.doc)));
}

fn capitalise(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect::<String>() + ".",
        None => String::new(),
    }
}

/// `xsgw.ini(5)`: the file's syntax, then every section and key of the key table with its
/// default and purpose.
pub fn xsgw_ini_5(version: &str) -> String {
    let mut out = String::new();
    header(&mut out, "xsgw.ini", 5, version, "File formats");
    out.push_str(
        ".SH NAME\nxsgw.ini \\- configuration of the xsgw XMPP/SIP federation gateway\n\
         .SH SYNOPSIS\n/etc/xsgw/xsgw.ini\n\
         .SH DESCRIPTION\n\
         One INI file configures\n.BR xsgw (8).\n\
         Sections are written [name] (or [partner DOMAIN]); keys as key = value.\n\
         Comments start a line with ; or #, or follow a value after whitespace.\n\
         Durations are written 500ms, 60s, 5m or 8h; sizes 65536, 64KiB or 1MiB;\n\
         booleans yes or no; lists are comma\\-separated.\n\
         A key left out takes its default.\n\
         Unknown sections and keys are errors, so a typo never passes silently:\n\
         .B xsgw check \\-c FILE\n\
         lists every problem with its line number.\n\
         The annotated sample /usr/share/doc/xsgw/examples/xsgw.ini (installed as\n\
         /etc/xsgw/xsgw.ini) explains each key at more length.\n",
    );
    for section in keys::sections() {
        let heading = match section {
            "partner" => "[partner DOMAIN]".to_owned(),
            other => format!("[{other}]"),
        };
        let _ = writeln!(
            out,
            ".SH \"{heading}\"\n{}",
            roff_escape(section_doc(section))
        );
        for def in keys::KEYS.iter().filter(|d| d.section == section) {
            key_entry(&mut out, def);
        }
    }
    out.push_str(
        ".SH FILES\n.TP\n/etc/xsgw/xsgw.ini\nThe configuration.\n\
         .TP\n/var/lib/xsgw\nState: presence subscriptions and the dialback secret.\n\
         .SH SEE ALSO\n.BR xsgw (8)\n",
    );
    out
}

/// `xsgw(8)`: commands, options, signals and exit status from the command line's usage text.
pub fn xsgw_8(version: &str) -> String {
    let mut out = String::new();
    header(&mut out, "xsgw", 8, version, "System administration");
    out.push_str(
        ".SH NAME\nxsgw \\- XMPP <\\-> SIP federation gateway for an enterprise SIP Access Edge\n\
         .SH SYNOPSIS\n\
         .B xsgw run\n[\\-c FILE] [\\-\\-pidfile FILE]\n.br\n\
         .B xsgw check\n[\\-c FILE]\n.br\n\
         .B xsgw reload\n[\\-c FILE] [\\-\\-pidfile FILE]\n.br\n\
         .B xsgw diagnose\n[\\-c FILE] [\\-\\-json] [\\-\\-deep] [\\-\\-only ID...]\n.br\n\
         .B xsgw status\n[\\-c FILE] [\\-\\-json]\n.br\n\
         .B xsgw version\n.br\n\
         .B xsgw help\n\
         .SH DESCRIPTION\n\
         xsgw lets the users of an enterprise SIP instant\\-messaging platform behind an Access Edge\n\
         chat with, and see the presence of, people on public XMPP services.\n\
         It accepts server\\-to\\-server XMPP streams on port 5269 (found by partners through\n\
         _xmpp\\-server._tcp SRV records) and keeps mutual\\-TLS SIP connections with the Edge's\n\
         federation listener on port 5061, translating messages, typing, presence and\n\
         subscriptions both ways (RFC 7247, 7572, 8048).\n\
         .SH USAGE\n.nf\n",
    );
    for line in super::cli::USAGE.lines() {
        let _ = writeln!(out, "{}", roff_escape(line));
    }
    out.push_str(
        ".fi\n\
         .SH EXIT STATUS\n\
         .TP\n0\nSuccess; after SIGTERM or SIGINT, an orderly stop.\n\
         .TP\n1\nThe configuration was refused, or the gateway could not start, or a\n\
         .B diagnose\ncheck failed,\n.B status\nfound no running xsgw, or\n.B reload\nfound errors in the file (xsgw was then not\n\
         signalled) or no running xsgw in the pidfile.\n\
         .TP\n2\nThe command line was not understood.\n\
         .TP\n70\nA bug stopped a service thread (router, listeners, state writer, the Edge\n\
         connection owner); xsgw exited so that systemd or the init script restarts it.\n\
         .SH RELOAD\n\
         SIGHUP (\n.BR \"systemctl reload xsgw\" ,\n.BR \"/etc/init.d/xsgw reload\" ,\n.BR \"xsgw reload\" )\n\
         makes the running xsgw read its configuration file again and check it as\n.B xsgw check\n\
         does, certificates included. With an error it keeps the configuration in force and logs\n\
         every error, one line each with file:line. Otherwise it applies partners, aliases,\n\
         per\\-partner policies and routes, [federation], caps, [quota] and timeouts, the log level, and\n\
         certificates and CA files (new TLS handshakes use them; established connections keep\n\
         theirs), without closing streams or connections the new file still allows. Streams of\n\
         a partner removed or now refused are closed (stream error policy\\-violation inbound,\n\
         a plain close outbound) and what waited for them is answered with an error (a SIP\n\
         request with its error response). [gateway] fqdn, sip_domains and state_dir, [xmpp]\n\
         listen and dialback_secret, [sip] listen and edge, [dns] and [hosts] need a restart:\n\
         a change to them is logged as such and otherwise ignored. One log line says what\n\
         changed, e.g.\n.B \"reloaded /etc/xsgw/xsgw.ini: partners +jabber.org, [xmpp] tls optional\\(->required; needs a restart: [xmpp] listen\"\n\
         .SH FILES\n\
         .TP\n/etc/xsgw/xsgw.ini\nThe configuration, see\n.BR xsgw.ini (5).\n\
         .TP\n/run/xsgw/xsgw.pid\nThe pidfile the init script has xsgw write;\n.B xsgw reload\nsignals the process it names.\n\
         .TP\n/var/lib/xsgw\nState: presence subscriptions and the dialback secret.\n\
         .TP\n/var/lib/xsgw/control.sock\nThe control socket\n.B xsgw status\nasks (mode 0600: the service user and root); under\n\
         [gateway] state_dir.\n\
         .SH SEE ALSO\n.BR xsgw.ini (5)\n",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_of_the_table_is_in_the_ini_page_with_its_default() {
        let page = xsgw_ini_5("1.2.3");
        assert!(page.starts_with(".TH XSGW.INI 5 \"\" \"xsgw 1.2.3\""));
        for def in keys::KEYS {
            let entry = format!(".BR {} \" = ", def.name);
            assert!(page.contains(&entry), "{} missing", def.name);
            if let Some(default) = def.default.filter(|d| !d.is_empty()) {
                assert!(
                    page.contains(&roff_escape(default)),
                    "{} default {default}",
                    def.name
                );
            }
        }
        for section in keys::sections() {
            assert!(page.contains(&format!(".SH \"[{section}")), "{section}");
        }
    }

    #[test]
    fn the_command_page_lists_every_command_and_exit_status() {
        let page = xsgw_8("1.2.3");
        for word in [
            "xsgw run",
            "xsgw check",
            "xsgw reload",
            "xsgw version",
            "SIGHUP",
            "needs a restart",
            "\n70\n",
        ] {
            assert!(page.contains(word), "{word}");
        }
    }

    #[test]
    fn roff_requests_and_escapes_cannot_be_smuggled_in() {
        assert_eq!(roff_escape(".TH x"), "\\&.TH x");
        assert_eq!(roff_escape("'x"), "\\&'x");
        assert_eq!(roff_escape("a\\b-c"), "a\\eb\\-c");
        // No line of either page starts with a request that is not one of ours.
        for page in [xsgw_ini_5("0"), xsgw_8("0")] {
            for line in page.lines().filter(|l| l.starts_with('.')) {
                let request = line.split_whitespace().next().unwrap_or_default();
                assert!(
                    [".TH", ".SH", ".TP", ".B", ".BR", ".br", ".nf", ".fi"].contains(&request),
                    "{line}"
                );
            }
        }
    }
}
