//! Configuration: one INI file → a typed [`Config`], checked in two stages.
//!
//! Stage 1 ([`parse`]) reads the file and turns every key into a typed value, refusing unknown
//! sections and keys (with a "did you mean"). Stage 2 ([`validate`]) checks what needs several
//! keys or the file system: policies that can authenticate somebody, certificates and keys that
//! load and match, the SIP certificate naming `[gateway] fqdn`. Both stages collect every
//! problem, each with `file:line`, section and key, so `xsgw check` can list them all at once.
//! Neither stage opens a socket.

mod diff;
pub mod ini;
pub mod keys;
// Stage 2 checks the machine as it is now: files, permissions, host name, and the clock for
// certificate expiry (no socket, thread, channel or lock: only the clock is allowed).
#[allow(clippy::disallowed_methods)]
mod validate;
pub mod values;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use diff::{diff, keep_restart_only, Changes, RESTART_ONLY};
pub use validate::{validate, Credentials};
pub use values::{HostPort, Requirement};

/// The whole configuration, typed. Domain names are lowercase without a trailing dot.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this was read from, for messages.
    pub source: PathBuf,
    pub gateway: Gateway,
    pub xmpp: Xmpp,
    pub sip: Sip,
    pub federation: Federation,
    pub partners: Vec<Partner>,
    /// `[quota]`: what one partner domain may hold at once (a `[partner]` may override).
    pub quota: Quotas,
    /// `[hosts]`: static name → addresses, consulted before DNS.
    pub hosts: BTreeMap<String, Vec<IpAddr>>,
    pub dns: Dns,
    pub metrics: Metrics,
    pub log: Log,
    /// Where each key and section was written (`"[sip] cert"` → line), for stage-2 messages.
    pub lines: HashMap<String, usize>,
    /// The value in force of every key, as written or its default (`"[xmpp] tls"` →
    /// `"optional"`, `"[partner gmail.com] tls"`, `"[hosts] edge.contoso.com"`), so a reload
    /// can say what changed ([`diff`]).
    pub values: BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
pub struct Gateway {
    pub fqdn: String,
    pub sip_domains: Vec<String>,
    pub state_dir: PathBuf,
}

/// How partner certificates are trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrustAnchors {
    /// The Mozilla roots compiled into the binary (webpki-roots).
    System,
    /// A PEM file of CA certificates.
    File(PathBuf),
}

/// The three authentication knobs, as set globally or for one partner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthPolicy {
    pub tls: Requirement,
    pub sasl: Requirement,
    pub dialback: Requirement,
}

#[derive(Debug, Clone)]
pub struct Xmpp {
    pub listen: SocketAddr,
    pub public_name: String,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: TrustAnchors,
    pub policy: AuthPolicy,
    pub dialback_secret: PathBuf,
    pub max_stanza: usize,
    pub max_connections: usize,
    pub max_per_partner: usize,
    /// Outbound streams at once (stanza streams and dialback verifications).
    pub max_outbound: usize,
    /// Outbound streams at once to one resolved address.
    pub max_outbound_per_address: usize,
    /// Inbound streams not authenticated yet: in all, per /24 or /64, per address.
    pub max_unauthenticated: usize,
    pub max_unauthenticated_per_network: usize,
    pub max_unauthenticated_per_address: usize,
    /// From accept to the first authenticated domain pair of an inbound stream.
    pub handshake_timeout: Duration,
    /// Set-up of an outbound stream.
    pub stream_timeout: Duration,
    pub connect_timeout: Duration,
    pub keepalive: Duration,
    pub idle_timeout: Duration,
    pub log_bodies: bool,
}

#[derive(Debug, Clone)]
pub struct Sip {
    pub listen: SocketAddr,
    pub edge: HostPort,
    /// DNS names, IP addresses or `*.` wildcards (matched literally), see [`crate::tls::names`].
    pub edge_names: Vec<String>,
    /// `[sip] edge_pin`: the Edge's key must be one of these when any are set.
    pub edge_pin: Vec<crate::tls::names::SpkiPin>,
    /// Who else may connect to `listen` besides the Edge's addresses.
    pub allow_from: Vec<values::IpNet>,
    pub max_connections: usize,
    pub max_unauthenticated_per_address: usize,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
    pub max_message: usize,
    pub max_headers: usize,
    pub connect_timeout: Duration,
    pub im_mode: ImMode,
    pub delivery_timeout: Duration,
    pub session_idle: Duration,
}

/// How messages from XMPP are carried to SIP users (`[sip] im_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImMode {
    /// Each message is a MESSAGE outside any dialog (RFC 3428).
    Page,
    /// An INVITE opens an IM session (Microsoft style); messages go inside it.
    Session,
    /// Page mode, switching to sessions for a SIP domain that refuses MESSAGE outside a dialog.
    Auto,
}

impl ImMode {
    fn parse(v: &str) -> Result<ImMode, String> {
        match v.to_ascii_lowercase().as_str() {
            "page" => Ok(ImMode::Page),
            "session" => Ok(ImMode::Session),
            "auto" => Ok(ImMode::Auto),
            _ => Err(format!(
                "`{v}` is not an IM mode; expected page, session or auto"
            )),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FederationMode {
    /// Only domains with a `[partner]` section (and their aliases).
    Allowlist,
    /// Any domain except those in `block`.
    Open,
}

#[derive(Debug, Clone)]
pub struct Federation {
    pub mode: FederationMode,
    pub block: Vec<String>,
    /// `private_addresses = allow`: addresses in special-purpose ranges (loopback, RFC 1918,
    /// ...) that a partner's DNS names may be connected to. The Edge's never are.
    pub allow_private_addresses: bool,
}

/// One `[partner DOMAIN]` section. `None` policy fields inherit `[xmpp]`.
#[derive(Debug, Clone)]
pub struct Partner {
    pub domain: String,
    pub aliases: Vec<String>,
    pub tls: Option<Requirement>,
    pub sasl: Option<Requirement>,
    pub dialback: Option<Requirement>,
    pub route: Option<HostPort>,
    /// Overrides `[sip] im_mode` for this partner.
    pub im_mode: Option<ImMode>,
    /// Overrides of `[quota]` for this partner.
    pub quota: QuotaOverrides,
    /// Line of the section header, for later messages.
    pub line: usize,
}

/// What one partner domain may hold at once (`[quota]`, or its `[partner]` section).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Presence subscriptions (both directions) with the partner's users.
    pub subscriptions: usize,
    /// Of those, subscriptions not yet approved.
    pub pending_subscriptions: usize,
    /// IM sessions with the partner's users.
    pub im_sessions: usize,
    /// SIP requests to the partner waiting for its server to accept their stanza.
    pub waiting_deliveries: usize,
    /// Bytes of cached presence of the partner's watched users.
    pub presence_cache: usize,
    /// Stanzas per second accepted from the partner; 0: no limit.
    pub stanza_rate: u32,
    /// Stanzas the partner may send at once (the token bucket's size).
    pub stanza_burst: u32,
}

/// `[quota]` as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quotas {
    /// Each partner domain's quota unless its section overrides it.
    pub per_partner: Quota,
    /// Bytes of cached presence for all partners together.
    pub presence_cache_total: usize,
}

/// The `[quota]` keys a `[partner]` section sets; `None` inherits `[quota]`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QuotaOverrides {
    pub subscriptions: Option<usize>,
    pub pending_subscriptions: Option<usize>,
    pub im_sessions: Option<usize>,
    pub waiting_deliveries: Option<usize>,
    pub presence_cache: Option<usize>,
    pub stanza_rate: Option<u32>,
    pub stanza_burst: Option<u32>,
}

impl Quota {
    /// This quota with `o`'s values where it has them.
    pub fn with(self, o: &QuotaOverrides) -> Quota {
        Quota {
            subscriptions: o.subscriptions.unwrap_or(self.subscriptions),
            pending_subscriptions: o
                .pending_subscriptions
                .unwrap_or(self.pending_subscriptions),
            im_sessions: o.im_sessions.unwrap_or(self.im_sessions),
            waiting_deliveries: o.waiting_deliveries.unwrap_or(self.waiting_deliveries),
            presence_cache: o.presence_cache.unwrap_or(self.presence_cache),
            stanza_rate: o.stanza_rate.unwrap_or(self.stanza_rate),
            stanza_burst: o.stanza_burst.unwrap_or(self.stanza_burst),
        }
    }
}

/// Largest `presence_cache` / `presence_cache_total`: 4 GiB.
const MAX_CACHE: usize = 4 << 30;

fn rate(value: &str) -> Result<u32, String> {
    let n = values::count(value)?;
    u32::try_from(n)
        .ok()
        .filter(|n| *n <= 1_000_000)
        .ok_or_else(|| format!("{n} is over the sane maximum of 1000000"))
}

fn cache_size(value: &str) -> Result<usize, String> {
    bounded_size(value, 0, MAX_CACHE)
}

#[derive(Debug, Clone)]
pub struct Dns {
    /// Empty: use the system's /etc/resolv.conf.
    pub servers: Vec<SocketAddr>,
    pub timeout: Duration,
}

/// `[metrics]`: the optional Prometheus endpoint.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// `None`: no endpoint.
    pub listen: Option<SocketAddr>,
}

#[derive(Debug, Clone)]
pub struct Log {
    pub level: log::LevelFilter,
}

impl Config {
    /// The policy in force for `partner`, `[xmpp]` where the partner does not override it.
    pub fn policy_for(&self, partner: &Partner) -> AuthPolicy {
        AuthPolicy {
            tls: partner.tls.unwrap_or(self.xmpp.policy.tls),
            sasl: partner.sasl.unwrap_or(self.xmpp.policy.sasl),
            dialback: partner.dialback.unwrap_or(self.xmpp.policy.dialback),
        }
    }

    /// The line where `place` (`"[sip] cert"`, `"[partner gmail.com]"`) was written, if it was.
    pub fn line(&self, place: &str) -> Option<usize> {
        self.lines.get(place).copied()
    }

    /// The partner section that handles `domain`, by its own name or one of its aliases
    /// (ASCII case and a trailing dot do not matter).
    /// `[gateway] sip_domains`, lowercased, as a set.
    pub fn hosted_domains(&self) -> std::collections::HashSet<String> {
        self.gateway
            .sip_domains
            .iter()
            .map(|d| d.to_ascii_lowercase())
            .collect()
    }

    /// The quota of partner `domain` (or alias): its section's overrides over `[quota]`.
    pub fn quota_for(&self, domain: &str) -> Quota {
        match self.partner(domain) {
            Some(p) => self.quota.per_partner.with(&p.quota),
            None => self.quota.per_partner,
        }
    }

    pub fn partner(&self, domain: &str) -> Option<&Partner> {
        let domain = domain.strip_suffix('.').unwrap_or(domain);
        let same = |name: &String| name.eq_ignore_ascii_case(domain);
        self.partners
            .iter()
            .find(|p| same(&p.domain) || p.aliases.iter().any(same))
    }
}

/// How bad a [`Problem`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// xsgw can run, but something is probably not what the operator meant.
    Warning,
    /// xsgw refuses to run with this.
    Error,
}

/// One thing wrong with the configuration, located as precisely as possible.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub severity: Severity,
    pub line: Option<usize>,
    /// `[xmpp] tls`, `[partner gmail.com] aliases`, or empty for the file as a whole.
    pub place: String,
    pub message: String,
}

/// Every problem found in one file.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub file: PathBuf,
    pub problems: Vec<Problem>,
}

impl Report {
    fn new(file: &Path) -> Self {
        Report {
            file: file.to_path_buf(),
            problems: Vec::new(),
        }
    }

    pub fn error(
        &mut self,
        line: Option<usize>,
        place: impl Into<String>,
        message: impl Into<String>,
    ) {
        self.push(Severity::Error, line, place.into(), message.into());
    }

    pub fn warning(
        &mut self,
        line: Option<usize>,
        place: impl Into<String>,
        message: impl Into<String>,
    ) {
        self.push(Severity::Warning, line, place.into(), message.into());
    }

    fn push(&mut self, severity: Severity, line: Option<usize>, place: String, message: String) {
        self.problems.push(Problem {
            severity,
            line,
            place,
            message,
        });
    }

    pub fn has_errors(&self) -> bool {
        self.problems.iter().any(|p| p.severity == Severity::Error)
    }

    pub fn errors(&self) -> impl Iterator<Item = &Problem> {
        self.problems
            .iter()
            .filter(|p| p.severity == Severity::Error)
    }

    pub fn warnings(&self) -> impl Iterator<Item = &Problem> {
        self.problems
            .iter()
            .filter(|p| p.severity == Severity::Warning)
    }

    /// One line per problem: `file:line: error: [section] key: message`.
    pub fn lines(&self) -> Vec<String> {
        let mut sorted: Vec<&Problem> = self.problems.iter().collect();
        sorted.sort_by_key(|p| (p.line.unwrap_or(usize::MAX), std::cmp::Reverse(p.severity)));
        sorted
            .into_iter()
            .map(|p| {
                let location = match p.line {
                    Some(line) => format!("{}:{line}", self.file.display()),
                    None => self.file.display().to_string(),
                };
                let severity = match p.severity {
                    Severity::Error => "error",
                    Severity::Warning => "warning",
                };
                if p.place.is_empty() {
                    format!("{location}: {severity}: {}", p.message)
                } else {
                    format!("{location}: {severity}: {}: {}", p.place, p.message)
                }
            })
            .collect()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for line in self.lines() {
            writeln!(f, "{line}")?;
        }
        Ok(())
    }
}

/// Why a configuration could not be used.
#[derive(Debug)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read at all.
    Unreadable {
        path: PathBuf,
        error: std::io::Error,
    },
    /// The file is larger than any configuration could be.
    TooLarge { path: PathBuf, len: u64, max: usize },
    /// The file was read; these are its problems (at least one error).
    Invalid(Report),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Unreadable { path, error } => {
                write!(f, "cannot read configuration {}: {error}", path.display())
            }
            ConfigError::TooLarge { path, len, max } => write!(
                f,
                "configuration {} is {len} bytes; the limit is {max}: is this the right file?",
                path.display()
            ),
            ConfigError::Invalid(report) => {
                let count = report.errors().count();
                write!(
                    f,
                    "configuration {} has {count} error{}",
                    report.file.display(),
                    if count == 1 { "" } else { "s" }
                )
            }
        }
    }
}

impl std::error::Error for ConfigError {}

/// Reads `path` and runs stage 1. On success the report holds the warnings found so far.
pub fn load(path: &Path) -> Result<(Config, Report), ConfigError> {
    let text = read(path)?;
    parse(&text, path)
}

fn read(path: &Path) -> Result<String, ConfigError> {
    let len = std::fs::metadata(path)
        .map_err(|error| ConfigError::Unreadable {
            path: path.to_path_buf(),
            error,
        })?
        .len();
    if len > ini::MAX_FILE_LEN as u64 {
        return Err(ConfigError::TooLarge {
            path: path.to_path_buf(),
            len,
            max: ini::MAX_FILE_LEN,
        });
    }
    std::fs::read_to_string(path).map_err(|error| ConfigError::Unreadable {
        path: path.to_path_buf(),
        error,
    })
}

/// Stage 1 on text already read; `source` names it in messages.
pub fn parse(text: &str, source: &Path) -> Result<(Config, Report), ConfigError> {
    match parse_lenient(text, source) {
        (Some(config), report) if !report.has_errors() => Ok((config, report)),
        (_, report) => Err(ConfigError::Invalid(report)),
    }
}

/// Stage 1 that still returns the configuration when every key it needs could be typed,
/// even if the file has other errors (an unknown key, a repeated section), so that stage 2
/// can report its problems in the same run.
fn parse_lenient(text: &str, source: &Path) -> (Option<Config>, Report) {
    let mut report = Report::new(source);
    let (sections, syntax_errors) = ini::parse(text);
    for e in syntax_errors {
        report.error(Some(e.line), "", e.message);
    }
    let config = Reader::new(&sections, &mut report).build(source);
    (config, report)
}

/// Both stages, as `xsgw check` and `xsgw run` use them: every problem that can be found in
/// one pass, and the configuration with its credentials when there is no error.
pub fn check_file(path: &Path) -> Result<(Config, Credentials, Report), ConfigError> {
    let text = read(path)?;
    let (config, mut report) = parse_lenient(&text, path);
    let Some(config) = config else {
        return Err(ConfigError::Invalid(report));
    };
    let credentials = validate(&config, &mut report);
    match credentials {
        Some(credentials) if !report.has_errors() => Ok((config, credentials, report)),
        _ => Err(ConfigError::Invalid(report)),
    }
}

/// Walks the sections once, typing values and recording problems.
struct Reader<'a> {
    /// Section name → the singular section (first occurrence).
    singles: HashMap<&'a str, &'a ini::Section>,
    partners: Vec<&'a ini::Section>,
    lines: HashMap<String, usize>,
    values: BTreeMap<String, String>,
    report: &'a mut Report,
}

impl<'a> Reader<'a> {
    fn new(sections: &'a [ini::Section], report: &'a mut Report) -> Self {
        let known = keys::sections();
        let mut singles: HashMap<&'a str, &'a ini::Section> = HashMap::new();
        let mut partners = Vec::new();
        let mut lines = HashMap::new();
        for section in sections {
            let name = section.name.as_str();
            let header = match &section.argument {
                Some(argument) => format!("[{name} {argument}]"),
                None => format!("[{name}]"),
            };
            lines.entry(header).or_insert(section.line);
            for entry in &section.entries {
                lines
                    .entry(section_place(section, &entry.key))
                    .or_insert(entry.line);
            }
            if !known.contains(&name) {
                let hint = keys::suggest(known.iter().copied(), name)
                    .map(|s| format!("; did you mean [{s}]?"))
                    .unwrap_or_default();
                report.error(
                    Some(section.line),
                    format!("[{name}]"),
                    format!(
                        "unknown section{hint} (known: {})",
                        known
                            .iter()
                            .map(|s| format!("[{s}]"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                );
                continue;
            }
            if keys::ARGUMENT_SECTIONS.contains(&name) {
                if section.argument.is_none() {
                    report.error(
                        Some(section.line),
                        format!("[{name}]"),
                        format!("needs the domain: write [{name} example.com]"),
                    );
                    continue;
                }
                partners.push(section);
            } else if let Some(argument) = &section.argument {
                report.error(
                    Some(section.line),
                    format!("[{name} {argument}]"),
                    format!("[{name}] takes no argument; write [{name}]"),
                );
            } else if let Some(first) = singles.get(name) {
                report.error(
                    Some(section.line),
                    format!("[{name}]"),
                    format!(
                        "section repeated (first at line {}); put all its keys in one place",
                        first.line
                    ),
                );
            } else {
                singles.insert(name, section);
            }
            Self::check_keys(section, report);
        }
        Reader {
            singles,
            partners,
            lines,
            values: BTreeMap::new(),
            report,
        }
    }

    /// Unknown and repeated keys, for table-driven sections.
    fn check_keys(section: &ini::Section, report: &mut Report) {
        let name = section.name.as_str();
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for entry in &section.entries {
            let place = section_place(section, &entry.key);
            if let Some(first) = seen.insert(entry.key.as_str(), entry.line) {
                report.error(
                    Some(entry.line),
                    place,
                    format!("key repeated (first at line {first}); keep one"),
                );
                continue;
            }
            if keys::FREE_SECTIONS.contains(&name) {
                continue;
            }
            if keys::find(name, &entry.key).is_none() {
                let candidates = keys::KEYS
                    .iter()
                    .filter(|d| d.section == name)
                    .map(|d| d.name);
                let hint = match keys::suggest(candidates, &entry.key) {
                    Some(s) => format!("; did you mean `{s}`?"),
                    None => {
                        let elsewhere: Vec<String> = keys::KEYS
                            .iter()
                            .filter(|d| d.name == entry.key)
                            .map(|d| format!("[{}]", d.section))
                            .collect();
                        if elsewhere.is_empty() {
                            String::new()
                        } else {
                            format!("; this key belongs in {}", elsewhere.join(" or "))
                        }
                    }
                };
                report.error(
                    Some(entry.line),
                    place,
                    format!("unknown key in [{name}]{hint}"),
                );
            }
        }
    }

    /// The raw value of `section.key` with its line, or the table default (line `None`).
    /// `None` when absent and required (the error is recorded).
    fn raw(&mut self, section: &str, key: &str) -> Option<(String, Option<usize>)> {
        let def = keys::find(section, key).expect("keys used by the reader are in the table");
        let found = self
            .singles
            .get(section)
            .and_then(|s| s.entries.iter().find(|e| e.key == key));
        match (found, def.default) {
            (Some(entry), _) if !entry.value.is_empty() => {
                Some((entry.value.clone(), Some(entry.line)))
            }
            (_, Some(default)) => Some((default.to_string(), None)),
            (found, None) => {
                let line = found
                    .map(|e| e.line)
                    .or_else(|| self.singles.get(section).map(|s| s.line));
                self.report.error(
                    line,
                    format!("[{section}] {key}"),
                    format!("missing; it is required: {}", def.doc),
                );
                None
            }
        }
    }

    /// A typed value; a parse error is recorded and `None` returned.
    fn get<T>(
        &mut self,
        section: &str,
        key: &str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Option<T> {
        let (value, line) = self.raw(section, key)?;
        self.values
            .insert(format!("[{section}] {key}"), value.trim().to_string());
        match parse(&value) {
            Ok(v) => Some(v),
            Err(message) => {
                let message = if line.is_none() {
                    format!("{message} (in the built-in default)")
                } else {
                    message
                };
                self.report
                    .error(line, format!("[{section}] {key}"), message);
                None
            }
        }
    }

    fn build(&mut self, source: &Path) -> Option<Config> {
        let fqdn = self.get("gateway", "fqdn", values::dns_name);
        let sip_domains = self.get("gateway", "sip_domains", domain_list);
        let state_dir = self.get("gateway", "state_dir", path);

        let listen = self.get("xmpp", "listen", values::socket_addr);
        let public_name = self.get("xmpp", "public_name", optional_dns_name);
        let xmpp_cert = self.get("xmpp", "cert", path);
        let xmpp_key = self.get("xmpp", "key", path);
        let xmpp_ca = self.get("xmpp", "ca", |v| {
            Ok(if v.eq_ignore_ascii_case("system") {
                TrustAnchors::System
            } else {
                TrustAnchors::File(PathBuf::from(v))
            })
        });
        let tls = self.get("xmpp", "tls", values::requirement);
        let sasl = self.get("xmpp", "sasl", values::requirement);
        let dialback = self.get("xmpp", "dialback", values::requirement);
        let dialback_secret = self.get("xmpp", "dialback_secret", path);
        let max_stanza = self.get("xmpp", "max_stanza", |v| bounded_size(v, 4096, 16 << 20));
        let max_connections = self.get("xmpp", "max_connections", positive_count);
        let max_per_partner = self.get("xmpp", "max_per_partner", positive_count);
        let max_outbound = self.get("xmpp", "max_outbound", positive_count);
        let max_outbound_per_address = self.get("xmpp", "max_outbound_per_address", positive_count);
        let max_unauthenticated = self.get("xmpp", "max_unauthenticated", positive_count);
        let max_unauthenticated_per_network =
            self.get("xmpp", "max_unauthenticated_per_network", positive_count);
        let max_unauthenticated_per_address =
            self.get("xmpp", "max_unauthenticated_per_address", positive_count);
        let handshake_timeout = self.get("xmpp", "handshake_timeout", nonzero_duration);
        let stream_timeout = self.get("xmpp", "stream_timeout", nonzero_duration);
        let connect_timeout = self.get("xmpp", "connect_timeout", nonzero_duration);
        let keepalive = self.get("xmpp", "keepalive", nonzero_duration);
        let idle_timeout = self.get("xmpp", "idle_timeout", nonzero_duration);
        let log_bodies = self.get("xmpp", "log_bodies", values::boolean);

        let sip_listen = self.get("sip", "listen", values::socket_addr);
        let edge = self.get("sip", "edge", values::host_port);
        let edge_names = self.get("sip", "edge_names", edge_name_list);
        let edge_pin = self.get("sip", "edge_pin", |v| {
            crate::tls::names::SpkiPin::parse_list(v).map_err(|e| e.to_string())
        });
        let allow_from = self.get("sip", "allow_from", values::ip_nets);
        let sip_max_connections = self.get("sip", "max_connections", positive_count);
        let sip_max_unauthenticated_per_address =
            self.get("sip", "max_unauthenticated_per_address", positive_count);
        let sip_cert = self.get("sip", "cert", path);
        let sip_key = self.get("sip", "key", path);
        let sip_ca = self.get("sip", "ca", path);
        let max_message = self.get("sip", "max_message", |v| bounded_size(v, 1024, 16 << 20));
        let max_headers = self.get("sip", "max_headers", positive_count);
        let sip_connect_timeout = self.get("sip", "connect_timeout", nonzero_duration);
        let im_mode = self.get("sip", "im_mode", ImMode::parse);
        let delivery_timeout = self.get("sip", "delivery_timeout", nonzero_duration);
        let session_idle = self.get("sip", "session_idle", nonzero_duration);

        let mode = self.get("federation", "mode", |v| {
            match v.to_ascii_lowercase().as_str() {
                "allowlist" => Ok(FederationMode::Allowlist),
                "open" => Ok(FederationMode::Open),
                _ => Err(format!(
                    "`{v}` is not a federation mode; expected allowlist or open"
                )),
            }
        });
        let block = self.get("federation", "block", domain_list_or_empty);
        let private_addresses = self.get("federation", "private_addresses", |v| {
            match v.to_ascii_lowercase().as_str() {
                "refuse" => Ok(false),
                "allow" => Ok(true),
                _ => Err(format!(
                    "`{v}` is not allowed here; expected refuse or allow"
                )),
            }
        });

        let quota = self.quota();
        let partners = self.partners();
        let hosts = self.hosts();
        let dns_servers = self.get("dns", "servers", |v| {
            values::list(v)
                .iter()
                .map(|s| values::dns_server(s))
                .collect()
        });
        let dns_timeout = self.get("dns", "timeout", nonzero_duration);
        let metrics_listen = self.get("metrics", "listen", |v| {
            if v.is_empty() {
                Ok(None)
            } else {
                values::socket_addr(v).map(Some)
            }
        });
        let level = self.get("log", "level", |v| {
            v.parse::<log::LevelFilter>().map_err(|_| {
                format!("`{v}` is not a log level; expected error, warn, info, debug or trace")
            })
        });

        let fqdn = fqdn?;
        let public_name = public_name?.unwrap_or_else(|| fqdn.clone());
        let edge = edge?;
        let edge_names = match edge_names? {
            names if names.is_empty() => vec![edge.host.clone()],
            names => names,
        };
        Some(Config {
            source: source.to_path_buf(),
            gateway: Gateway {
                fqdn,
                sip_domains: sip_domains?,
                state_dir: state_dir?,
            },
            xmpp: Xmpp {
                listen: listen?,
                public_name,
                cert: xmpp_cert?,
                key: xmpp_key?,
                ca: xmpp_ca?,
                policy: AuthPolicy {
                    tls: tls?,
                    sasl: sasl?,
                    dialback: dialback?,
                },
                dialback_secret: dialback_secret?,
                max_stanza: max_stanza?,
                max_connections: max_connections?,
                max_per_partner: max_per_partner?,
                max_outbound: max_outbound?,
                max_outbound_per_address: max_outbound_per_address?,
                max_unauthenticated: max_unauthenticated?,
                max_unauthenticated_per_network: max_unauthenticated_per_network?,
                max_unauthenticated_per_address: max_unauthenticated_per_address?,
                handshake_timeout: handshake_timeout?,
                stream_timeout: stream_timeout?,
                connect_timeout: connect_timeout?,
                keepalive: keepalive?,
                idle_timeout: idle_timeout?,
                log_bodies: log_bodies?,
            },
            sip: Sip {
                listen: sip_listen?,
                edge,
                edge_names,
                edge_pin: edge_pin?,
                allow_from: allow_from?,
                max_connections: sip_max_connections?,
                max_unauthenticated_per_address: sip_max_unauthenticated_per_address?,
                cert: sip_cert?,
                key: sip_key?,
                ca: sip_ca?,
                max_message: max_message?,
                max_headers: max_headers?,
                connect_timeout: sip_connect_timeout?,
                im_mode: im_mode?,
                delivery_timeout: delivery_timeout?,
                session_idle: session_idle?,
            },
            federation: Federation {
                mode: mode?,
                block: block?,
                allow_private_addresses: private_addresses?,
            },
            partners: partners?,
            quota: quota?,
            hosts: hosts?,
            dns: Dns {
                servers: dns_servers?,
                timeout: dns_timeout?,
            },
            metrics: Metrics {
                listen: metrics_listen?,
            },
            log: Log { level: level? },
            lines: std::mem::take(&mut self.lines),
            values: std::mem::take(&mut self.values),
        })
    }

    fn partners(&mut self) -> Option<Vec<Partner>> {
        let mut partners = Vec::new();
        let mut ok = true;
        for section in self.partners.clone() {
            let argument = section.argument.as_deref().unwrap_or_default();
            let place = format!("[partner {argument}]");
            let domain = match values::dns_name(argument) {
                Ok(d) => d,
                Err(message) => {
                    self.report.error(Some(section.line), place, message);
                    ok = false;
                    continue;
                }
            };
            let mut partner = Partner {
                domain,
                aliases: Vec::new(),
                tls: None,
                sasl: None,
                dialback: None,
                route: None,
                im_mode: None,
                quota: QuotaOverrides::default(),
                line: section.line,
            };
            self.values
                .insert(format!("[partner {}]", partner.domain), String::new());
            for entry in &section.entries {
                if entry.value.is_empty() {
                    continue;
                }
                self.values.insert(
                    format!("[partner {}] {}", partner.domain, entry.key),
                    entry.value.trim().to_string(),
                );
                let parsed: Result<(), String> =
                    match entry.key.as_str() {
                        "aliases" => domain_list(&entry.value).map(|v| partner.aliases = v),
                        "tls" => values::requirement(&entry.value).map(|v| partner.tls = Some(v)),
                        "sasl" => values::requirement(&entry.value).map(|v| partner.sasl = Some(v)),
                        "dialback" => {
                            values::requirement(&entry.value).map(|v| partner.dialback = Some(v))
                        }
                        "route" => values::host_port(&entry.value).map(|v| partner.route = Some(v)),
                        "im_mode" => ImMode::parse(&entry.value).map(|v| partner.im_mode = Some(v)),
                        "subscriptions" => positive_count(&entry.value)
                            .map(|v| partner.quota.subscriptions = Some(v)),
                        "pending_subscriptions" => positive_count(&entry.value)
                            .map(|v| partner.quota.pending_subscriptions = Some(v)),
                        "im_sessions" => positive_count(&entry.value)
                            .map(|v| partner.quota.im_sessions = Some(v)),
                        "waiting_deliveries" => positive_count(&entry.value)
                            .map(|v| partner.quota.waiting_deliveries = Some(v)),
                        "presence_cache" => {
                            cache_size(&entry.value).map(|v| partner.quota.presence_cache = Some(v))
                        }
                        "stanza_rate" => {
                            rate(&entry.value).map(|v| partner.quota.stanza_rate = Some(v))
                        }
                        "stanza_burst" => {
                            rate(&entry.value).map(|v| partner.quota.stanza_burst = Some(v))
                        }
                        _ => Ok(()), // unknown keys were reported by check_keys
                    };
                if let Err(message) = parsed {
                    self.report
                        .error(Some(entry.line), format!("{place} {}", entry.key), message);
                    ok = false;
                }
            }
            partners.push(partner);
        }
        ok.then_some(partners)
    }

    fn quota(&mut self) -> Option<Quotas> {
        let subscriptions = self.get("quota", "subscriptions", positive_count);
        let pending = self.get("quota", "pending_subscriptions", positive_count);
        let im_sessions = self.get("quota", "im_sessions", positive_count);
        let waiting = self.get("quota", "waiting_deliveries", positive_count);
        let cache = self.get("quota", "presence_cache", cache_size);
        let total = self.get("quota", "presence_cache_total", cache_size);
        let stanza_rate = self.get("quota", "stanza_rate", rate);
        let stanza_burst = self.get("quota", "stanza_burst", rate);
        Some(Quotas {
            per_partner: Quota {
                subscriptions: subscriptions?,
                pending_subscriptions: pending?,
                im_sessions: im_sessions?,
                waiting_deliveries: waiting?,
                presence_cache: cache?,
                stanza_rate: stanza_rate?,
                stanza_burst: stanza_burst?,
            },
            presence_cache_total: total?,
        })
    }

    fn hosts(&mut self) -> Option<BTreeMap<String, Vec<IpAddr>>> {
        let mut hosts = BTreeMap::new();
        let mut ok = true;
        let Some(section) = self.singles.get("hosts").copied() else {
            return Some(hosts);
        };
        for entry in &section.entries {
            let place = format!("[hosts] {}", entry.key);
            match (values::dns_name(&entry.key), values::ip_addrs(&entry.value)) {
                (Ok(name), Ok(addrs)) => {
                    self.values
                        .insert(format!("[hosts] {name}"), entry.value.trim().to_string());
                    hosts.insert(name, addrs);
                }
                (Err(message), _) | (_, Err(message)) => {
                    self.report.error(Some(entry.line), place, message);
                    ok = false;
                }
            }
        }
        ok.then_some(hosts)
    }
}

fn section_place(section: &ini::Section, key: &str) -> String {
    match &section.argument {
        Some(argument) => format!("[{} {argument}] {key}", section.name),
        None => format!("[{}] {key}", section.name),
    }
}

fn path(value: &str) -> Result<PathBuf, String> {
    Ok(PathBuf::from(value))
}

fn optional_dns_name(value: &str) -> Result<Option<String>, String> {
    if value.is_empty() {
        Ok(None)
    } else {
        values::dns_name(value).map(Some)
    }
}

fn domain_list_or_empty(value: &str) -> Result<Vec<String>, String> {
    let mut domains: Vec<String> = Vec::new();
    for item in values::list(value) {
        let domain = values::dns_name(&item)?;
        if domains.contains(&domain) {
            return Err(format!("`{domain}` is listed twice"));
        }
        domains.push(domain);
    }
    Ok(domains)
}

/// `[sip] edge_names`: DNS names, IP addresses, or a wildcard `*.` and a name of at least two
/// labels (a wildcard certificate accepted only as itself, see [`crate::tls::names`]).
fn edge_name_list(value: &str) -> Result<Vec<String>, String> {
    let mut names: Vec<String> = Vec::new();
    for item in values::list(value) {
        let name = if let Some(rest) = item.strip_prefix("*.") {
            let rest = values::dns_name(rest)?;
            if !rest.contains('.') {
                return Err(format!(
                    "`{item}`: a wildcard must stand for one label under a name of at least two labels, e.g. *.contoso.com"
                ));
            }
            format!("*.{rest}")
        } else if let Ok(ip) = item.parse::<std::net::IpAddr>() {
            ip.to_string()
        } else {
            values::dns_name(&item)?
        };
        if names.contains(&name) {
            return Err(format!("`{name}` is listed twice"));
        }
        names.push(name);
    }
    Ok(names)
}

fn domain_list(value: &str) -> Result<Vec<String>, String> {
    let domains = domain_list_or_empty(value)?;
    if domains.is_empty() {
        return Err("at least one domain is needed, e.g. contoso.com".into());
    }
    Ok(domains)
}

fn positive_count(value: &str) -> Result<usize, String> {
    match values::count(value)? {
        0 => Err("must be at least 1".into()),
        n => Ok(n),
    }
}

fn nonzero_duration(value: &str) -> Result<Duration, String> {
    match values::duration(value)? {
        d if d.is_zero() => Err("must be longer than zero".into()),
        d => Ok(d),
    }
}

fn bounded_size(value: &str, min: usize, max: usize) -> Result<usize, String> {
    let n = values::size(value)?;
    if n < min || n > max {
        return Err(format!(
            "{n} bytes is outside the sane range {min}..={max} bytes"
        ));
    }
    Ok(n)
}

#[cfg(test)]
mod tests;
