//! `xsgw check`: both configuration stages, every problem listed, and on success a short
//! summary of what the gateway will do. Opens no socket.

use std::path::Path;

use crate::config::{self, ConfigError, FederationMode, ImMode, Report};
use crate::tls::x509::format_date;

use super::EXIT_FAILURE;

pub fn check(path: &Path) -> i32 {
    let (config, credentials, report) = match config::check_file(path) {
        Ok(checked) => checked,
        Err(ConfigError::Invalid(report)) => {
            print_report(&report);
            return EXIT_FAILURE;
        }
        Err(other) => {
            println!("{other}");
            return EXIT_FAILURE;
        }
    };
    print_report(&report);
    let gw = &config.gateway;
    println!(
        "  gateway     {} for SIP domains {}",
        gw.fqdn,
        gw.sip_domains.join(", ")
    );
    println!("  state       {}", gw.state_dir.display());
    let p = config.xmpp.policy;
    println!(
        "  xmpp        listen {}, public name {}, tls {}, sasl {}, dialback {}",
        config.xmpp.listen, config.xmpp.public_name, p.tls, p.sasl, p.dialback
    );
    let pins = match config.sip.edge_pin.len() {
        0 => String::new(),
        1 => ", its key pinned".to_string(),
        n => format!(", its key one of {n} pins"),
    };
    println!(
        "  sip         listen {}, Edge {} (certificate must name {} in its subjectAltName{pins})",
        config.sip.listen,
        config.sip.edge,
        config.sip.edge_names.join(" or ")
    );
    let sip = &credentials.sip.summary;
    println!(
        "  sip cert    {} names {}, valid until {}",
        credentials.sip.cert_path.display(),
        sip.all_names().join(", "),
        format_date(sip.not_after)
    );
    if let Some(xmpp) = &credentials.xmpp {
        println!(
            "  xmpp cert   {} names {}, valid until {}",
            xmpp.cert_path.display(),
            xmpp.summary.all_names().join(", "),
            format_date(xmpp.summary.not_after)
        );
    }
    let private = if config.federation.allow_private_addresses {
        "allowed"
    } else {
        "refused"
    };
    match config.federation.mode {
        FederationMode::Allowlist => {
            println!("  federation  allowlist, private addresses from DNS {private}")
        }
        FederationMode::Open if config.federation.block.is_empty() => {
            println!("  federation  open, private addresses from DNS {private}")
        }
        FederationMode::Open => println!(
            "  federation  open, blocking {}, private addresses from DNS {private}",
            config.federation.block.join(", ")
        ),
    }
    println!(
        "  outbound    at most {} streams, {} per address",
        config.xmpp.max_outbound, config.xmpp.max_outbound_per_address
    );
    for partner in &config.partners {
        let policy = config.policy_for(partner);
        let aliases = if partner.aliases.is_empty() {
            String::new()
        } else {
            format!(" (aliases {})", partner.aliases.join(", "))
        };
        let route = partner
            .route
            .as_ref()
            .map(|r| format!(", route {r}"))
            .unwrap_or_else(|| ", found by SRV".into());
        println!(
            "  partner     {}{aliases}: tls {}, sasl {}, dialback {}{route}, im_mode {}",
            partner.domain,
            policy.tls,
            policy.sasl,
            policy.dialback,
            im_mode_name(partner.im_mode.unwrap_or(config.sip.im_mode))
        );
    }
    0
}

fn im_mode_name(mode: ImMode) -> &'static str {
    match mode {
        ImMode::Page => "page",
        ImMode::Session => "session",
        ImMode::Auto => "auto",
    }
}

fn print_report(report: &Report) {
    for line in report.lines() {
        println!("{line}");
    }
    let errors = report.errors().count();
    let warnings = report.warnings().count();
    let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
    if errors > 0 {
        println!(
            "{}: not usable: {}, {}",
            report.file.display(),
            plural(errors, "error"),
            plural(warnings, "warning")
        );
    } else {
        println!(
            "{}: usable ({})",
            report.file.display(),
            plural(warnings, "warning")
        );
    }
}
