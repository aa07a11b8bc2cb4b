//! Whom a request from the Edge is for, decided from its Request-URI and the configuration:
//! the gateway itself, an XMPP domain xsgw federates with, or something it must refuse
//! (`sips:` targets cannot be reached with end-to-end TLS over XMPP: 403; a domain that is
//! not federated: 404; xsgw never relays, RFC 3261 §16 is not its job).

use crate::config::{Config, FederationMode};
use crate::sip::{Scheme, Uri};

/// What a Request-URI designates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The gateway itself (its name or listening address): OPTIONS probes and keepalives.
    Gateway,
    /// A user or domain on the XMPP side that xsgw federates with (lowercase domain).
    Federated(String),
    /// A `sips:` URI: refused with 403.
    Sips(String),
    /// A domain xsgw does not federate with (or a non-SIP URI): refused with 404.
    Unknown(String),
}

/// Classifies `uri` for a gateway configured by `config`.
pub fn classify(uri: &Uri, config: &Config) -> Target {
    let host = uri
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
        .to_ascii_lowercase();
    if uri.scheme() == Scheme::Sips {
        return Target::Sips(host);
    }
    if uri.scheme() != Scheme::Sip {
        return Target::Unknown(host);
    }
    let listen_ip = config.sip.listen.ip().to_string();
    if host == config.gateway.fqdn.to_ascii_lowercase() || host == listen_ip {
        return Target::Gateway;
    }
    let ours = config
        .gateway
        .sip_domains
        .iter()
        .any(|d| d.eq_ignore_ascii_case(&host));
    let federated = !ours
        && host.parse::<std::net::IpAddr>().is_err()
        && match config.federation.mode {
            FederationMode::Allowlist => config.partner(&host).is_some(),
            FederationMode::Open => !config
                .federation
                .block
                .iter()
                .any(|b| b.eq_ignore_ascii_case(&host)),
        };
    if federated {
        Target::Federated(host)
    } else {
        Target::Unknown(host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INI: &str = "[gateway]\nfqdn = gw.contoso.test\nsip_domains = contoso.test\nstate_dir = /tmp/xsgw-target-test\n\n[xmpp]\nlisten = 127.0.10.100:5269\npublic_name = xmpp.contoso.test\ncert = /nonexistent/x.pem\nkey = /nonexistent/x.key\nca = system\n\n[sip]\nlisten = 127.0.10.100:5061\nedge = sip.contoso.test:5061\nedge_names = sip.contoso.test\ncert = /nonexistent/g.pem\nkey = /nonexistent/g.key\nca = /nonexistent/ca.pem\n\n[partner gmail.test]\naliases = googlemail.test\n";

    fn config() -> Config {
        crate::config::parse(INI, std::path::Path::new("t.ini"))
            .expect("test config parses")
            .0
    }

    fn of(uri: &str) -> Target {
        classify(&Uri::parse(uri).unwrap(), &config())
    }

    #[test]
    fn every_kind_of_target() {
        assert_eq!(
            of("sip:alice@gmail.test"),
            Target::Federated("gmail.test".into())
        );
        assert_eq!(
            of("sip:carol@GoogleMail.test"),
            Target::Federated("googlemail.test".into())
        );
        assert_eq!(
            of("sip:gw.contoso.test:5061;transport=tls"),
            Target::Gateway
        );
        assert_eq!(of("sip:127.0.10.100"), Target::Gateway);
        assert_eq!(
            of("sips:alice@gmail.test"),
            Target::Sips("gmail.test".into())
        );
        assert_eq!(
            of("sip:x@example.org"),
            Target::Unknown("example.org".into())
        );
        assert_eq!(
            of("sip:bob@contoso.test"),
            Target::Unknown("contoso.test".into())
        );
        assert_eq!(of("tel:+15551234"), Target::Unknown("".into()));
    }
}
