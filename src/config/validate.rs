//! Stage 2 of configuration checking: what needs several keys, the file system or the
//! certificates. Every problem is recorded; the TLS material that loaded is handed back so
//! start-up does not read it twice.

use std::collections::HashMap;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use super::{AuthPolicy, Config, FederationMode, Report, Requirement, TrustAnchors};
use crate::tls::{self, Identity};

/// Certificates, keys and trust anchors loaded and checked by [`validate`].
#[derive(Debug, Clone)]
pub struct Credentials {
    /// The gateway's identity toward the Edge, naming `[gateway] fqdn`.
    pub sip: Identity,
    /// The internal CA that issued the Edge's certificate.
    pub sip_roots: std::sync::Arc<rustls::RootCertStore>,
    /// The identity offered on STARTTLS; `None` when no policy allows TLS.
    pub xmpp: Option<Identity>,
    /// Trust anchors for partner certificates.
    pub xmpp_roots: std::sync::Arc<rustls::RootCertStore>,
}

/// Certificates that expire within this many days are warned about.
const EXPIRY_WARNING_DAYS: i64 = 30;

/// Checks `config` as a whole and loads its TLS material. Problems go to `report`;
/// `None` when something needed could not be loaded.
pub fn validate(config: &Config, report: &mut Report) -> Option<Credentials> {
    check_policies(config, report);
    check_domains(config, report);
    check_addresses(config, report);
    check_outbound(config, report);
    check_admission(config, report);
    check_quotas(config, report);
    check_fqdn_is_this_host(config, report);
    check_state(config, report);
    let sip = load_sip_identity(config, report);
    check_edge_pin(config, sip.as_ref(), report);
    let sip_roots = load_roots_file(config, &config.sip.ca, "[sip] ca", report);
    let xmpp = load_xmpp_identity(config, report);
    let xmpp_roots = match &config.xmpp.ca {
        TrustAnchors::System => Some(tls::system_roots()),
        TrustAnchors::File(path) => load_roots_file(config, path, "[xmpp] ca", report),
    };
    Some(Credentials {
        sip: sip?,
        sip_roots: std::sync::Arc::new(sip_roots?),
        xmpp: xmpp?,
        xmpp_roots: std::sync::Arc::new(xmpp_roots?),
    })
}

/// Quotas that contradict each other, for `[quota]` and each `[partner]`.
fn check_quotas(config: &Config, report: &mut Report) {
    let total = config.quota.presence_cache_total;
    let check = |place: String, q: super::Quota, report: &mut Report| {
        let line = config.line(&place);
        if q.pending_subscriptions > q.subscriptions {
            report.warning(
                line,
                &place,
                format!(
                    "pending_subscriptions ({}) is over subscriptions ({}): only {} can ever be pending",
                    q.pending_subscriptions, q.subscriptions, q.subscriptions
                ),
            );
        }
        if q.presence_cache > total {
            report.warning(
                line,
                &place,
                format!(
                    "presence_cache ({} bytes) is over [quota] presence_cache_total ({total} bytes): the total bounds it",
                    q.presence_cache
                ),
            );
        }
        if q.stanza_rate > 0 && q.stanza_burst < q.stanza_rate {
            report.error(
                line,
                &place,
                format!(
                    "stanza_burst ({}) is under stanza_rate ({}): a partner could never send a second's worth at once; make stanza_burst at least stanza_rate",
                    q.stanza_burst, q.stanza_rate
                ),
            );
        }
        if q.subscriptions > crate::bridge::MAX_SUBSCRIPTIONS {
            report.warning(
                line,
                &place,
                format!(
                    "subscriptions ({}) is over the gateway's total of {}: the total bounds it",
                    q.subscriptions,
                    crate::bridge::MAX_SUBSCRIPTIONS
                ),
            );
        }
    };
    check("[quota]".to_owned(), config.quota.per_partner, report);
    for partner in &config.partners {
        let place = format!("[partner {}]", partner.domain);
        if partner.quota != super::QuotaOverrides::default() {
            check(place, config.quota.per_partner.with(&partner.quota), report);
        }
    }
}

/// A policy must be able to authenticate a peer: by dialback, or by SASL EXTERNAL over TLS.
fn check_policy(policy: AuthPolicy, place: &str, line: Option<usize>, report: &mut Report) {
    use Requirement::*;
    if policy.sasl == Required && policy.tls == Disabled {
        report.error(
            line,
            place,
            "sasl = required needs TLS (SASL EXTERNAL authenticates with the TLS certificate), but tls = disabled; set tls to optional or required, or sasl to optional",
        );
    } else if policy.dialback == Disabled && (policy.sasl == Disabled || policy.tls == Disabled) {
        let why = if policy.sasl == Disabled {
            "sasl and dialback are both disabled"
        } else {
            "dialback is disabled and SASL EXTERNAL cannot work with tls = disabled"
        };
        report.error(
            line,
            place,
            format!("no partner could ever authenticate: {why}; enable dialback, or sasl with tls"),
        );
    }
    if policy.sasl == Required && policy.dialback == Required {
        report.error(
            line,
            place,
            "sasl and dialback are both required, but they exclude each other: sasl = required authenticates with certificates only, dialback = required with dialback only; set one of them to optional",
        );
    }
}

fn check_policies(config: &Config, report: &mut Report) {
    let line = config
        .line("[xmpp] sasl")
        .or(config.line("[xmpp] dialback"))
        .or(config.line("[xmpp] tls"))
        .or(config.line("[xmpp]"));
    check_policy(config.xmpp.policy, "[xmpp]", line, report);
    for partner in &config.partners {
        // Only partners that override something can differ from [xmpp].
        if partner.tls.is_none() && partner.sasl.is_none() && partner.dialback.is_none() {
            continue;
        }
        let place = format!("[partner {}]", partner.domain);
        check_policy(
            config.policy_for(partner),
            &place,
            Some(partner.line),
            report,
        );
    }
}

fn check_domains(config: &Config, report: &mut Report) {
    // Every domain the gateway answers for or federates with, with where it was named.
    let mut owners: HashMap<String, String> = HashMap::new();
    let mut claim =
        |domain: &str, place: String, line: Option<usize>, report: &mut Report| match owners
            .get(domain)
        {
            Some(first) => report.error(
                line,
                place.clone(),
                format!("`{domain}` is already named by {first}; each domain may appear once"),
            ),
            None => {
                owners.insert(domain.to_string(), place);
            }
        };
    let hosted_line = config.line("[gateway] sip_domains");
    for domain in &config.gateway.sip_domains {
        claim(domain, "[gateway] sip_domains".into(), hosted_line, report);
    }
    for partner in &config.partners {
        let place = format!("[partner {}]", partner.domain);
        claim(&partner.domain, place.clone(), Some(partner.line), report);
        let alias_line = config.line(&format!("{place} aliases"));
        for alias in &partner.aliases {
            claim(alias, format!("{place} aliases"), alias_line, report);
        }
    }
    let block_line = config.line("[federation] block");
    for blocked in &config.federation.block {
        if let Some(partner) = config.partner(blocked) {
            report.error(
                block_line,
                "[federation] block",
                format!(
                    "`{blocked}` is blocked but also configured by [partner {}]; remove one",
                    partner.domain
                ),
            );
        }
        if config.gateway.sip_domains.contains(blocked) {
            report.error(
                block_line,
                "[federation] block",
                format!("`{blocked}` is a hosted SIP domain; it cannot be blocked"),
            );
        }
    }
    match config.federation.mode {
        FederationMode::Allowlist if config.partners.is_empty() => report.warning(
            config.line("[federation] mode"),
            "[federation] mode",
            "allowlist with no [partner] section: no XMPP domain may federate; add [partner example.com] sections or set mode = open",
        ),
        FederationMode::Allowlist if !config.federation.block.is_empty() => report.warning(
            block_line,
            "[federation] block",
            "block only applies in open mode; in allowlist mode remove the [partner] section instead",
        ),
        _ => {}
    }
}

fn check_addresses(config: &Config, report: &mut Report) {
    if config.xmpp.listen == config.sip.listen {
        report.error(
            config.line("[sip] listen"),
            "[sip] listen",
            format!(
                "{} is also [xmpp] listen; XMPP and SIP need different ports (5269 and 5061)",
                config.sip.listen
            ),
        );
    }
    if config.xmpp.keepalive >= config.xmpp.idle_timeout {
        report.warning(
            config.line("[xmpp] keepalive"),
            "[xmpp] keepalive",
            "keepalive is not shorter than idle_timeout, so idle streams close before any keepalive is sent",
        );
    }
    if config.gateway.sip_domains.contains(&config.sip.edge.host) {
        report.warning(
            config.line("[sip] edge"),
            "[sip] edge",
            format!(
                "`{}` is a SIP domain, not the Edge server's host name; edge must be the Edge's federation FQDN",
                config.sip.edge.host
            ),
        );
    }
}

/// Outbound caps that cannot both hold, and internal addresses opened to anybody's DNS.
fn check_outbound(config: &Config, report: &mut Report) {
    let xmpp = &config.xmpp;
    if xmpp.max_outbound_per_address > xmpp.max_outbound {
        report.warning(
            config.line("[xmpp] max_outbound_per_address"),
            "[xmpp] max_outbound_per_address",
            format!(
                "{} is more than max_outbound = {}, which bounds all outbound streams together, so it is never reached",
                xmpp.max_outbound_per_address, xmpp.max_outbound
            ),
        );
    }
    if config.federation.allow_private_addresses && config.federation.mode == FederationMode::Open {
        report.warning(
            config.line("[federation] private_addresses"),
            "[federation] private_addresses",
            "allow in open federation: any domain's DNS can make xsgw connect to loopback and internal networks (SSRF); keep refuse and give internal partners a [partner] route instead",
        );
    }
}

/// The admission limits must nest: one address within one network within all unauthenticated
/// streams, which must leave part of `max_connections` to authenticated ones.
fn check_admission(config: &Config, report: &mut Report) {
    let x = &config.xmpp;
    let line = |key: &str| {
        config
            .line(&format!("[xmpp] {key}"))
            .or(config.line("[xmpp]"))
    };
    if x.max_unauthenticated_per_address > x.max_unauthenticated_per_network {
        report.error(
            line("max_unauthenticated_per_address"),
            "[xmpp] max_unauthenticated_per_address",
            format!(
                "{} is more than max_unauthenticated_per_network ({}); one address is part of its network",
                x.max_unauthenticated_per_address, x.max_unauthenticated_per_network
            ),
        );
    }
    if x.max_unauthenticated_per_network > x.max_unauthenticated {
        report.error(
            line("max_unauthenticated_per_network"),
            "[xmpp] max_unauthenticated_per_network",
            format!(
                "{} is more than max_unauthenticated ({})",
                x.max_unauthenticated_per_network, x.max_unauthenticated
            ),
        );
    }
    if x.max_unauthenticated >= x.max_connections {
        report.error(
            line("max_unauthenticated"),
            "[xmpp] max_unauthenticated",
            format!(
                "{} is not less than max_connections ({}): nothing would be kept for authenticated partner streams",
                x.max_unauthenticated, x.max_connections
            ),
        );
    }
    if x.handshake_timeout > std::time::Duration::from_secs(60) {
        report.warning(
            line("handshake_timeout"),
            "[xmpp] handshake_timeout",
            "more than 60s: a stranger holds a slot that long for nothing; 30s is plenty for TLS and dialback",
        );
    }
    let s = &config.sip;
    if s.max_unauthenticated_per_address > s.max_connections / 2 {
        report.error(
            config
                .line("[sip] max_unauthenticated_per_address")
                .or(config.line("[sip] max_connections")),
            "[sip] max_unauthenticated_per_address",
            format!(
                "{} is more than half of max_connections ({}); half is kept for connections whose TLS handshake is done",
                s.max_unauthenticated_per_address, s.max_connections
            ),
        );
    }
}

/// The Edge routes to `[gateway] fqdn`; when it is not this machine's name, traffic may go
/// to another host. A warning only: the DMZ host's own name often differs from its public one.
fn check_fqdn_is_this_host(config: &Config, report: &mut Report) {
    let Some(hostname) = read_trimmed("/proc/sys/kernel/hostname") else {
        return;
    };
    let hostname = hostname.to_ascii_lowercase();
    let fqdn = &config.gateway.fqdn;
    let first_label = fqdn.split('.').next().unwrap_or_default();
    let canonical = canonical_name_from_hosts(&hostname);
    if *fqdn == hostname || first_label == hostname || canonical.as_deref() == Some(fqdn) {
        return;
    }
    report.warning(
        config.line("[gateway] fqdn"),
        "[gateway] fqdn",
        format!(
            "`{fqdn}` is not this machine's name (`{hostname}`{}); the Edge must route the partner domains to exactly this FQDN and it must resolve to this host",
            canonical
                .map(|c| format!(", `{c}` in /etc/hosts"))
                .unwrap_or_default()
        ),
    );
}

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// The first name on the /etc/hosts line that lists `hostname`: the usual place of the FQDN.
fn canonical_name_from_hosts(hostname: &str) -> Option<String> {
    let hosts = std::fs::read_to_string("/etc/hosts").ok()?;
    hosts.lines().find_map(|line| {
        let line = line.split('#').next().unwrap_or_default();
        let mut fields = line.split_whitespace().skip(1);
        let canonical = fields.next()?.to_ascii_lowercase();
        let listed = canonical == hostname
            || line
                .split_whitespace()
                .skip(2)
                .any(|n| n.eq_ignore_ascii_case(hostname));
        (listed && canonical.contains('.')).then_some(canonical)
    })
}

fn check_state(config: &Config, report: &mut Report) {
    let dir = &config.gateway.state_dir;
    let line = config.line("[gateway] state_dir");
    match std::fs::metadata(dir) {
        Ok(meta) if !meta.is_dir() => report.error(
            line,
            "[gateway] state_dir",
            format!("{} exists but is not a directory", dir.display()),
        ),
        Ok(meta) if meta.permissions().readonly() => report.error(
            line,
            "[gateway] state_dir",
            format!("{} is read-only; xsgw keeps subscription state there", dir.display()),
        ),
        Ok(_) => {}
        Err(_) => report.warning(
            line,
            "[gateway] state_dir",
            format!(
                "{} does not exist yet; `xsgw run` creates it (its parent must be writable by the xsgw user)",
                dir.display()
            ),
        ),
    }
    let secret = &config.xmpp.dialback_secret;
    let line = config.line("[xmpp] dialback_secret");
    if let Ok(meta) = std::fs::metadata(secret) {
        use std::os::unix::fs::PermissionsExt;
        if !meta.is_file() {
            report.error(
                line,
                "[xmpp] dialback_secret",
                format!("{} is not a regular file", secret.display()),
            );
        } else if meta.len() < crate::gateway::state::MIN_SECRET_LEN as u64 {
            report.error(
                line,
                "[xmpp] dialback_secret",
                format!(
                    "{} holds {} bytes; a dialback secret needs at least {}: delete it and xsgw generates one",
                    secret.display(),
                    meta.len(),
                    crate::gateway::state::MIN_SECRET_LEN
                ),
            );
        } else if meta.permissions().mode() & 0o077 != 0 {
            report.warning(
                line,
                "[xmpp] dialback_secret",
                format!(
                    "{} is readable by other users (mode {:o}); anyone who reads it can forge dialback keys: chmod 600",
                    secret.display(),
                    meta.permissions().mode() & 0o777
                ),
            );
        }
    }
}

fn now_epoch() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn check_validity(identity: &Identity, place: &str, line: Option<usize>, report: &mut Report) {
    let now = now_epoch();
    let summary = &identity.summary;
    let path = identity.cert_path.display();
    if summary.not_after < now {
        report.error(
            line,
            place,
            format!(
                "{path} expired on {}; peers will refuse it",
                tls::x509::format_date(summary.not_after)
            ),
        );
    } else if summary.not_before > now {
        report.error(
            line,
            place,
            format!(
                "{path} is not valid before {}; check the clock or the certificate",
                tls::x509::format_date(summary.not_before)
            ),
        );
    } else if summary.not_after - now < EXPIRY_WARNING_DAYS * 86_400 {
        report.warning(
            line,
            place,
            format!(
                "{path} expires on {}; renew it soon",
                tls::x509::format_date(summary.not_after)
            ),
        );
    }
}

fn load_identity(
    config: &Config,
    cert: &Path,
    key: &Path,
    section: &str,
    report: &mut Report,
) -> Option<Identity> {
    let cert_place = format!("[{section}] cert");
    match Identity::load(cert, key) {
        Ok(identity) => {
            check_validity(&identity, &cert_place, config.line(&cert_place), report);
            Some(identity)
        }
        Err(error) => {
            let place = match &error {
                tls::TlsError::UnsupportedKey { .. } => format!("[{section}] key"),
                tls::TlsError::Unreadable { path, .. }
                | tls::TlsError::NoPem { path, .. }
                | tls::TlsError::BadPem { path, .. }
                    if path == key =>
                {
                    format!("[{section}] key")
                }
                _ => cert_place,
            };
            report.error(config.line(&place), place, error.to_string());
            None
        }
    }
}

fn load_sip_identity(config: &Config, report: &mut Report) -> Option<Identity> {
    let identity = load_identity(config, &config.sip.cert, &config.sip.key, "sip", report)?;
    let fqdn = &config.gateway.fqdn;
    let leaf = identity.key.cert.first()?;
    if !tls::names::names_host(leaf, fqdn) {
        let sans = tls::names::san_names(leaf);
        let in_cn = identity
            .summary
            .common_names
            .iter()
            .any(|cn| cn.eq_ignore_ascii_case(fqdn));
        if sans.is_empty() && in_cn {
            // COMPAT: an Edge that still reads the CN accepts it; RFC 6125 peers do not.
            report.warning(
                config.line("[sip] cert"),
                "[sip] cert",
                format!(
                    "certificate {} names `{fqdn}` only in its CN, without a subjectAltName: peers that follow RFC 6125 (and xsgw itself for its peers) never read the CN; ask the internal CA for one with DNS:{fqdn} in its SAN",
                    identity.cert_path.display()
                ),
            );
        } else {
            let names = identity.summary.all_names();
            report.error(
                config.line("[sip] cert"),
                "[sip] cert",
                format!(
                    "certificate {} names {} but not `{fqdn}`; [gateway] fqdn must appear in its subjectAltName, because the Edge routes to and checks exactly that name: get a certificate for {fqdn} from the internal CA, or correct fqdn",
                    identity.cert_path.display(),
                    if names.is_empty() {
                        "nothing".to_string()
                    } else {
                        names.join(", ")
                    }
                ),
            );
        }
    }
    Some(identity)
}

/// `[sip] edge_pin` pins the Edge's own key, which xsgw never holds; what can be caught here
/// is a pin copied from the wrong file: the key of a CA in `[sip] ca`, or of the gateway's
/// own `[sip] cert`. Such a pin can never match.
fn check_edge_pin(config: &Config, sip: Option<&Identity>, report: &mut Report) {
    if config.sip.edge_pin.is_empty() {
        return;
    }
    let mut known: Vec<(tls::names::SpkiPin, String)> = Vec::new();
    if let Ok(cas) = tls::load_certs(&config.sip.ca) {
        for ca in &cas {
            if let Ok(pin) = tls::names::SpkiPin::of_certificate(ca) {
                known.push((
                    pin,
                    format!("a CA certificate in {}", config.sip.ca.display()),
                ));
            }
        }
    }
    if let Some(leaf) = sip.and_then(|id| id.key.cert.first()) {
        if let Ok(pin) = tls::names::SpkiPin::of_certificate(leaf) {
            known.push((
                pin,
                format!(
                    "the gateway's own certificate {}",
                    config.sip.cert.display()
                ),
            ));
        }
    }
    for pin in &config.sip.edge_pin {
        if let Some((_, what)) = known.iter().find(|(k, _)| k == pin) {
            report.error(
                config.line("[sip] edge_pin"),
                "[sip] edge_pin",
                format!(
                    "{pin} is the key of {what}, never of the Edge's certificate, so no Edge could match it; pin the key of the Edge's own certificate (see etc/xsgw.ini for the openssl command)"
                ),
            );
        }
    }
}

/// The XMPP identity is needed when any policy lets TLS happen.
fn load_xmpp_identity(config: &Config, report: &mut Report) -> Option<Option<Identity>> {
    let tls_used = config.xmpp.policy.tls != Requirement::Disabled
        || config
            .partners
            .iter()
            .any(|p| config.policy_for(p).tls != Requirement::Disabled);
    if !tls_used {
        return Some(None);
    }
    let identity = load_identity(config, &config.xmpp.cert, &config.xmpp.key, "xmpp", report)?;
    let unnamed: Vec<&str> = config
        .gateway
        .sip_domains
        .iter()
        .filter(|d| {
            !identity
                .key
                .cert
                .first()
                .is_some_and(|leaf| tls::names::names_host(leaf, d))
        })
        .map(String::as_str)
        .collect();
    if !unnamed.is_empty() {
        report.warning(
            config.line("[xmpp] cert"),
            "[xmpp] cert",
            format!(
                "certificate {} does not name {} in its subjectAltName (it names {}); partners that check certificates will fall back to dialback or refuse TLS for those domains",
                identity.cert_path.display(),
                unnamed.join(", "),
                identity.summary.all_names().join(", ")
            ),
        );
    }
    Some(Some(identity))
}

fn load_roots_file(
    config: &Config,
    path: &Path,
    place: &str,
    report: &mut Report,
) -> Option<rustls::RootCertStore> {
    match tls::load_roots(path) {
        Ok(roots) => Some(roots),
        Err(error) => {
            report.error(config.line(place), place, error.to_string());
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission_problems(extra_xmpp: &str, extra_sip: &str) -> Vec<String> {
        let text = format!(
            "[gateway]\nfqdn = gw.contoso.test\nsip_domains = contoso.test\n\
             [xmpp]\n{extra_xmpp}\n[sip]\nedge = sip.contoso.test:5061\n{extra_sip}\n"
        );
        let (config, _) = super::super::parse(&text, Path::new("t.ini")).expect("parses");
        let mut report = Report::new(Path::new("t.ini"));
        check_admission(&config, &mut report);
        report.lines()
    }

    #[test]
    fn admission_limits_must_nest_below_max_connections() {
        assert_eq!(admission_problems("", ""), Vec::<String>::new(), "defaults");
        let one = |xmpp: &str, sip: &str, want: &str| {
            let lines = admission_problems(xmpp, sip);
            assert!(
                lines.len() == 1 && lines[0].contains(want),
                "{xmpp} {sip}: {lines:?}"
            );
        };
        one(
            "max_unauthenticated_per_address = 33",
            "",
            "t.ini:5: error: [xmpp] max_unauthenticated_per_address: 33 is more than max_unauthenticated_per_network (32)",
        );
        one(
            "max_unauthenticated_per_network = 300",
            "",
            "error: [xmpp] max_unauthenticated_per_network: 300 is more than max_unauthenticated (200)",
        );
        one(
            "max_unauthenticated = 1000",
            "",
            "error: [xmpp] max_unauthenticated: 1000 is not less than max_connections (1000)",
        );
        one(
            "",
            "max_connections = 8\nmax_unauthenticated_per_address = 5",
            "error: [sip] max_unauthenticated_per_address: 5 is more than half of max_connections (8)",
        );
        one(
            "handshake_timeout = 5min",
            "",
            "warning: [xmpp] handshake_timeout",
        );
    }

    #[test]
    fn quotas_that_contradict_each_other_are_reported() {
        let text = "[gateway]\nfqdn = gw.contoso.test\nsip_domains = contoso.test\n\
                    [sip]\nedge = sip.contoso.test:5061\n\
                    [quota]\npending_subscriptions = 30000\nstanza_burst = 10\n\
                    presence_cache_total = 1MiB\n\
                    [partner gmail.test]\npresence_cache = 2MiB\nstanza_rate = 0\n\
                    [partner ok.test]\n";
        let config = super::super::parse(text, Path::new("q.ini")).unwrap().0;
        let mut report = Report::new(Path::new("q.ini"));
        check_quotas(&config, &mut report);
        let lines = report.lines();
        let text = lines.join("\n");
        assert!(
            text.contains("q.ini:6: error: [quota]: stanza_burst (10) is under stanza_rate (100)"),
            "{text}"
        );
        assert!(text.contains("pending_subscriptions (30000) is over subscriptions (20000)"));
        assert!(
            text.contains("[partner gmail.test]: presence_cache (2097152 bytes) is over"),
            "{text}"
        );
        // gmail.test's rate is off (0): its burst does not matter; ok.test overrides nothing.
        assert!(
            !text.contains("[partner gmail.test]: stanza_burst"),
            "{text}"
        );
        assert!(!text.contains("ok.test"), "{text}");
    }
}
