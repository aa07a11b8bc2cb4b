//! What a reload changes: the difference between the configuration in force and a new one,
//! key by key ([`diff`]), and which keys cannot change while xsgw runs ([`RESTART_ONLY`]).
//!
//! Restart-only, and why:
//! - `[xmpp] listen`, `[sip] listen`: the sockets are bound once, before any thread starts
//!   (a new address might also not be bindable any more without the privileges given up).
//! - `[gateway] state_dir`, `[xmpp] dialback_secret`: the subscriptions journal and the
//!   secret are opened at start; every instance serving the same domains shares the secret,
//!   so switching it under live dialback exchanges would fail them.
//! - `[gateway] fqdn`: it is the name the Edge's allow list, our certificate, every dialog's
//!   Contact and Via, and the Edge connection carry; dialogs and subscriptions in flight
//!   name it.
//! - `[gateway] sip_domains`: the hosted domains are what partners' streams are
//!   authenticated for (per domain pair, for the life of the stream), what presence
//!   subscriptions and IM sessions are held for, and what the certificates were checked
//!   against at start; removing one live would have to tear all of that down for a change
//!   that also needs DNS and the Edge changed, i.e. a maintenance window anyway.
//! - `[sip] edge`, `[dns]`, `[hosts]`: the Edge connection, the resolver and the static
//!   hosts are built once at start by the threads that use them.
//!
//! Everything else applies live: partners, aliases, per-partner policy and routes,
//! `[federation]`, caps, `[quota]` and timeouts (for new connections and decisions), the log level,
//! certificates and CA files (for new TLS handshakes).

use std::fmt;

use super::Config;

/// Keys that need a restart to change; `[hosts]` stands for every key of that section.
pub const RESTART_ONLY: &[&str] = &[
    "[gateway] fqdn",
    "[gateway] sip_domains",
    "[gateway] state_dir",
    "[xmpp] listen",
    "[xmpp] dialback_secret",
    "[sip] listen",
    "[sip] edge",
    "[dns] servers",
    "[dns] timeout",
    "[hosts]",
];

fn restart_only(place: &str) -> bool {
    RESTART_ONLY
        .iter()
        .any(|k| place == *k || (k.ends_with(']') && place.starts_with(&format!("{k} "))))
}

/// What differs between two configurations.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// `[partner]` sections added and removed (by domain).
    pub partners_added: Vec<String>,
    pub partners_removed: Vec<String>,
    /// Keys applied live: `"[xmpp] tls optional→required"`.
    pub applied: Vec<String>,
    /// Restart-only keys that differ: `"[xmpp] listen"`.
    pub needs_restart: Vec<String>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.partners_added.is_empty()
            && self.partners_removed.is_empty()
            && self.applied.is_empty()
            && self.needs_restart.is_empty()
    }

    /// Something to apply (as opposed to only restart-only keys, or nothing).
    pub fn applies_anything(&self) -> bool {
        !(self.partners_added.is_empty()
            && self.partners_removed.is_empty()
            && self.applied.is_empty())
    }
}

/// `partners +a.test -b.test, [xmpp] tls optional→required; needs a restart: [xmpp] listen`
impl fmt::Display for Changes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = Vec::new();
        if !self.partners_added.is_empty() || !self.partners_removed.is_empty() {
            let names: Vec<String> = self
                .partners_added
                .iter()
                .map(|d| format!("+{d}"))
                .chain(self.partners_removed.iter().map(|d| format!("-{d}")))
                .collect();
            parts.push(format!("partners {}", names.join(" ")));
        }
        parts.extend(self.applied.iter().cloned());
        if parts.is_empty() {
            f.write_str("nothing applied")?;
        } else {
            f.write_str(&parts.join(", "))?;
        }
        if !self.needs_restart.is_empty() {
            write!(f, "; needs a restart: {}", self.needs_restart.join(", "))?;
        }
        Ok(())
    }
}

/// The partner domain of `[partner DOMAIN]` or `[partner DOMAIN] key`.
fn partner_of(place: &str) -> Option<&str> {
    let rest = place.strip_prefix("[partner ")?;
    rest.split(']').next()
}

fn shown(value: Option<&String>) -> String {
    const MAX: usize = 80;
    match value {
        None => "(unset)".into(),
        Some(v) if v.is_empty() => "(empty)".into(),
        Some(v) if v.chars().count() > MAX => {
            format!("{}…", v.chars().take(MAX).collect::<String>())
        }
        Some(v) => v.clone(),
    }
}

/// What changes from `old` to `new`, key by key (values as written, defaults included).
pub fn diff(old: &Config, new: &Config) -> Changes {
    let mut changes = Changes::default();
    let header = |place: &String| place.starts_with("[partner ") && place.ends_with(']');
    for place in new.values.keys().filter(|p| header(p)) {
        if !old.values.contains_key(place) {
            changes
                .partners_added
                .extend(partner_of(place).map(str::to_owned));
        }
    }
    for place in old.values.keys().filter(|p| header(p)) {
        if !new.values.contains_key(place) {
            changes
                .partners_removed
                .extend(partner_of(place).map(str::to_owned));
        }
    }
    let whole_partner = |place: &str| {
        partner_of(place).is_some_and(|d| {
            changes.partners_added.iter().any(|a| a == d)
                || changes.partners_removed.iter().any(|r| r == d)
        })
    };
    let mut places: Vec<&String> = old.values.keys().chain(new.values.keys()).collect();
    places.sort();
    places.dedup();
    let mut applied = Vec::new();
    let mut needs_restart = Vec::new();
    for place in places {
        if header(place) || whole_partner(place) {
            continue;
        }
        let (before, after) = (old.values.get(place), new.values.get(place));
        if before == after {
            continue;
        }
        if restart_only(place) {
            needs_restart.push(place.clone());
        } else {
            applied.push(format!("{place} {}→{}", shown(before), shown(after)));
        }
    }
    changes.applied = applied;
    changes.needs_restart = needs_restart;
    changes
}

/// Puts `old`'s values back into `new` for every restart-only key, so the configuration
/// published at a reload describes what really runs (and the next reload reports the same
/// keys as still needing a restart).
pub fn keep_restart_only(old: &Config, new: &mut Config) {
    new.gateway = old.gateway.clone();
    new.xmpp.listen = old.xmpp.listen;
    new.xmpp.dialback_secret = old.xmpp.dialback_secret.clone();
    new.sip.listen = old.sip.listen;
    new.sip.edge = old.sip.edge.clone();
    new.dns = old.dns.clone();
    new.hosts = old.hosts.clone();
    new.values.retain(|place, _| !restart_only(place));
    for (place, value) in &old.values {
        if restart_only(place) {
            new.values.insert(place.clone(), value.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const BASE: &str = "[gateway]
fqdn = gw.contoso.test
sip_domains = contoso.test
[xmpp]
listen = 127.0.0.1:5269
tls = optional
[sip]
edge = sip.contoso.test:5061
[partner old.test]
[partner kept.test]
tls = optional
";

    fn parse(text: &str) -> Config {
        super::super::parse(text, Path::new("x.ini")).unwrap().0
    }

    #[test]
    fn partners_keys_and_restart_keys_are_told_apart() {
        let old = parse(BASE);
        let new = parse(
            &(BASE
                .replace("tls = optional\n[sip]", "tls = required\n[sip]")
                .replace("127.0.0.1:5269", "127.0.0.2:5269")
                .replace(
                    "[partner old.test]\n",
                    "[partner jabber.test]\naliases = j.test\n",
                )
                .replace(
                    "[partner kept.test]\ntls = optional",
                    "[partner kept.test]\ntls = required",
                )
                + "[log]\nlevel = debug\n[quota]\nim_sessions = 7\n"),
        );
        let changes = diff(&old, &new);
        assert_eq!(changes.partners_added, ["jabber.test"]);
        assert_eq!(changes.partners_removed, ["old.test"]);
        assert_eq!(
            changes.applied,
            [
                "[log] level info→debug",
                "[partner kept.test] tls optional→required",
                "[quota] im_sessions 5000→7",
                "[xmpp] tls optional→required",
            ]
        );
        assert_eq!(changes.needs_restart, ["[xmpp] listen"]);
        assert_eq!(
            changes.to_string(),
            "partners +jabber.test -old.test, [log] level info→debug, [partner kept.test] tls optional→required, [quota] im_sessions 5000→7, [xmpp] tls optional→required; needs a restart: [xmpp] listen"
        );
    }

    #[test]
    fn the_same_file_changes_nothing() {
        let changes = diff(&parse(BASE), &parse(BASE));
        assert!(changes.is_empty(), "{changes:?}");
        assert_eq!(changes.to_string(), "nothing applied");
    }

    #[test]
    fn every_restart_only_key_is_reported_and_kept_at_its_old_value() {
        let old = parse(&format!("{BASE}[hosts]\nsip.contoso.test = 127.0.0.9\n"));
        let text = "[gateway]
fqdn = gw2.contoso.test
sip_domains = contoso.test, fabrikam.test
state_dir = /tmp/xsgw-other
[xmpp]
listen = 127.0.0.1:5270
dialback_secret = /tmp/other.secret
tls = optional
[sip]
listen = 127.0.0.1:5062
edge = sip2.contoso.test:5061
edge_names = sip.contoso.test
[partner old.test]
[partner kept.test]
tls = optional
[dns]
servers = 127.0.0.53
timeout = 9s
[hosts]
sip.contoso.test = 127.0.0.8
";
        let mut new = parse(text);
        let changes = diff(&old, &new);
        let mut expected: Vec<String> = RESTART_ONLY
            .iter()
            .map(|k| match *k {
                "[hosts]" => "[hosts] sip.contoso.test".to_string(),
                k => k.to_string(),
            })
            .collect();
        expected.sort();
        assert_eq!(changes.needs_restart, expected);
        assert_eq!(
            changes.applied,
            ["[sip] edge_names (empty)→sip.contoso.test"],
            "only edge_names is live"
        );
        keep_restart_only(&old, &mut new);
        assert_eq!(new.gateway.fqdn, "gw.contoso.test");
        assert_eq!(new.gateway.sip_domains, ["contoso.test"]);
        assert_eq!(new.xmpp.listen, old.xmpp.listen);
        assert_eq!(new.sip.listen, old.sip.listen);
        assert_eq!(new.sip.edge.host, "sip.contoso.test");
        assert_eq!(new.dns.servers, old.dns.servers);
        assert_eq!(new.hosts, old.hosts);
        let again = diff(&old, &new);
        assert!(again.needs_restart.is_empty(), "{again:?}");
    }
}
