//! Which names a peer's certificate is good for, decided by webpki (rustls-webpki), and the
//! optional pin of the Edge's key.
//!
//! Always after the chain verified against the configured CA (webpki applies the issuing
//! CAs' name constraints there, to the subjectAltName entries):
//!
//! - Names come from the **subjectAltName** only (dNSName, iPAddress), as webpki reads it. The
//!   subject CN is never used, not even when a certificate has no SAN at all: such a
//!   certificate names nothing. Name constraints do not cover a CN, so a CN fallback would let
//!   a constrained sub-CA name anything; modern CAs always put the names in the SAN
//!   (CA/Browser Forum baseline requirements), and webpki has never read the CN.
//! - **Partners** (SASL EXTERNAL and the server certificate of an outbound stream) and the
//!   gateway's own certificates (`xsgw check`): RFC 6125 §6.4 as webpki implements it, a `*`
//!   as the whole leftmost label standing for exactly one label ([`VerifiedCert::is_valid_for`]).
//! - **The Edge** (its client certificate on `[sip] listen`, its server certificate on xsgw's
//!   own connection): [`EdgePolicy`]. A name counts only when the certificate carries it
//!   itself; a wildcard SAN counts only if `[sip] edge_names` lists that same wildcard,
//!   compared literally (`*.contoso.com` in edge_names accepts a certificate for
//!   `*.contoso.com`, not one for `rogue.contoso.com`). Otherwise any certificate from the
//!   internal CA with `*.contoso.com` could pose as the Edge and send requests "from" any
//!   hosted user.
//! - **Pin** (`[sip] edge_pin`, optional): the SHA-256 of the Edge certificate's
//!   SubjectPublicKeyInfo, written `sha256/<base64>` as HPKP and `curl --pinnedpubkey` do
//!   ([`SpkiPin`]); several for a key rollover. Only the leaf's key is pinned (a renewed
//!   certificate with the same key still matches), in both directions.
//!
//! Both Edge checks run inside the TLS handshake ([`EdgePolicy`] is applied by the verifiers
//! in [`super::sip`]): a refused certificate ends the handshake with an alert, and the reason
//! ([`EdgeCertError`]) reaches the log through the handshake error.

use std::fmt;
use std::net::IpAddr;

use rustls::pki_types::{CertificateDer, ServerName};

/// The SHA-256 of a SubjectPublicKeyInfo: what `[sip] edge_pin` lists.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SpkiPin(pub [u8; 32]);

/// Why a pin is not one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinError(String);

impl fmt::Display for PinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PinError {}

impl SpkiPin {
    /// `sha256/<base64 of 32 bytes>` (curl's `sha256//<base64>` is taken too).
    pub fn parse(text: &str) -> Result<SpkiPin, PinError> {
        let text = text.trim();
        let Some(b64) = text.strip_prefix("sha256/") else {
            return Err(PinError(format!(
                "`{}` is not a pin: expected sha256/ and the base64 SHA-256 of the Edge's public key (SubjectPublicKeyInfo)",
                crate::logsafe::escaped(text)
            )));
        };
        // curl writes `sha256//<base64>`; base64 may itself start with `/`, so the extra
        // slash is only taken for one when what follows is a whole SHA-256 (44 characters).
        let b64 = match b64.strip_prefix('/') {
            Some(rest) if rest.len() == 44 => rest,
            _ => b64,
        };
        let bytes = crate::base64::decode(b64, 64).ok_or_else(|| {
            PinError(format!(
                "`{}` is not valid base64",
                crate::logsafe::escaped(b64)
            ))
        })?;
        let digest: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
            PinError(format!(
                "`{}` holds {} bytes; a SHA-256 pin holds 32 (44 base64 characters ending in =)",
                crate::logsafe::escaped(b64),
                bytes.len()
            ))
        })?;
        Ok(SpkiPin(digest))
    }

    /// A comma-separated list; empty is no pin at all.
    pub fn parse_list(text: &str) -> Result<Vec<SpkiPin>, PinError> {
        let mut pins = Vec::new();
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let pin = SpkiPin::parse(item)?;
            if pins.contains(&pin) {
                return Err(PinError(format!("{pin} is listed twice")));
            }
            pins.push(pin);
        }
        Ok(pins)
    }

    /// The pin of a certificate's public key.
    pub fn of_certificate(der: &CertificateDer<'_>) -> Result<SpkiPin, String> {
        let cert = webpki::EndEntityCert::try_from(der).map_err(|e| e.to_string())?;
        let spki = cert.subject_public_key_info();
        let digest = ring::digest::digest(&ring::digest::SHA256, spki.as_ref());
        let mut pin = [0u8; 32];
        pin.copy_from_slice(digest.as_ref());
        Ok(SpkiPin(pin))
    }
}

impl fmt::Display for SpkiPin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256/{}", crate::base64::encode(&self.0))
    }
}

impl fmt::Debug for SpkiPin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The names in a certificate's subjectAltName as webpki reads them (DNS names and
/// wildcards), for messages; never the CN. Empty when it cannot be read.
pub fn san_names(der: &CertificateDer<'_>) -> Vec<String> {
    webpki::EndEntityCert::try_from(der)
        .map(|cert| cert.valid_dns_names().map(str::to_owned).collect())
        .unwrap_or_default()
}

/// `names` for a message: "a, b", or what it means when there are none.
fn describe_names(names: &[String]) -> String {
    if names.is_empty() {
        "nothing (no DNS name in its subjectAltName; the CN is not used)".into()
    } else {
        names.join(", ")
    }
}

/// Whether a certificate is valid for `name` by webpki (RFC 6125: SAN only, a wildcard
/// as the whole leftmost label).
fn webpki_valid_for(cert: &webpki::EndEntityCert<'_>, name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    let server_name = match name.parse::<IpAddr>() {
        Ok(ip) => ServerName::IpAddress(ip.into()),
        Err(_) => match ServerName::try_from(name) {
            Ok(n) => n,
            Err(_) => return false,
        },
    };
    cert.verify_is_valid_for_subject_name(&server_name).is_ok()
}

/// A peer's end-entity certificate whose chain verified: what it is valid for.
#[derive(Clone)]
pub struct VerifiedCert {
    leaf: CertificateDer<'static>,
}

impl fmt::Debug for VerifiedCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("VerifiedCert")
            .field(&self.dns_names())
            .finish()
    }
}

impl VerifiedCert {
    /// Wraps a leaf whose chain the caller has verified (name constraints included).
    pub(crate) fn chain_verified(leaf: &CertificateDer<'_>) -> VerifiedCert {
        VerifiedCert {
            leaf: leaf.clone().into_owned(),
        }
    }

    /// Whether it is valid for `domain` (RFC 6125 by webpki: SAN only, `*.example.org` for
    /// exactly one more label).
    pub fn is_valid_for(&self, domain: &str) -> bool {
        webpki::EndEntityCert::try_from(&self.leaf)
            .is_ok_and(|cert| webpki_valid_for(&cert, domain))
    }

    /// Its SAN DNS names, for the log.
    pub fn dns_names(&self) -> Vec<String> {
        san_names(&self.leaf)
    }
}

/// Whether a certificate is valid for `name` by webpki; for `xsgw check` on the gateway's
/// own certificates (which peers match by RFC 6125, wildcards included).
pub fn names_host(der: &CertificateDer<'_>, name: &str) -> bool {
    webpki::EndEntityCert::try_from(der).is_ok_and(|cert| webpki_valid_for(&cert, name))
}

/// What the Edge's certificate must satisfy beyond its chain: `[sip] edge_names` (and, on
/// xsgw's own connection, the name connected to), and `[sip] edge_pin` when set.
#[derive(Debug, Clone)]
pub struct EdgePolicy {
    names: Vec<String>,
    pins: Vec<SpkiPin>,
}

/// Why the Edge's certificate (or one posing as it) is refused after its chain verified.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EdgeCertError {
    /// It carries none of the accepted names (a wildcard only counts when listed as is).
    NotNamed {
        /// What its subjectAltName names.
        presented: Vec<String>,
        /// `[sip] edge_names`.
        accepted: Vec<String>,
        /// The name xsgw connected to (outbound only), also accepted.
        connected: Option<String>,
    },
    /// Its key is none of `[sip] edge_pin`.
    NotPinned {
        /// The pin of the key it holds.
        presented: SpkiPin,
        /// How many pins are configured.
        configured: usize,
    },
    /// webpki cannot read it.
    Unreadable(String),
}

impl fmt::Display for EdgeCertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EdgeCertError::NotNamed {
                presented,
                accepted,
                connected: None,
            } => write!(
                f,
                "certificate names {}, none of [sip] edge_names ({}); only the Edge may connect (a wildcard counts only when edge_names lists it as is)",
                describe_names(presented),
                accepted.join(", ")
            ),
            EdgeCertError::NotNamed {
                presented,
                accepted,
                connected: Some(host),
            } => write!(
                f,
                "the Edge's certificate does not name {host} nor any of [sip] edge_names ({}); it names {} (a wildcard counts only when edge_names lists it as is)",
                accepted.join(", "),
                describe_names(presented)
            ),
            EdgeCertError::NotPinned {
                presented,
                configured,
            } => write!(
                f,
                "certificate key {presented} is not one of the {configured} [sip] edge_pin value(s)"
            ),
            EdgeCertError::Unreadable(e) => write!(f, "certificate unreadable: {e}"),
        }
    }
}

impl std::error::Error for EdgeCertError {}

impl EdgeCertError {
    /// As a rustls error, so it ends the handshake and comes back out of it for the log.
    pub fn into_rustls(self) -> rustls::Error {
        rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(
            std::sync::Arc::new(self),
        )))
    }

    /// The [`EdgeCertError`] inside a handshake error, if that is why it failed.
    pub fn from_rustls(error: &rustls::Error) -> Option<&EdgeCertError> {
        match error {
            rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other)) => {
                other.0.downcast_ref::<EdgeCertError>()
            }
            _ => None,
        }
    }
}

impl EdgePolicy {
    pub fn new(edge_names: &[String], pins: &[SpkiPin]) -> EdgePolicy {
        EdgePolicy {
            names: edge_names.to_vec(),
            pins: pins.to_vec(),
        }
    }

    /// Checks the Edge's leaf certificate (its chain already verified). `connected`: the
    /// name xsgw connected to, accepted besides `edge_names` (outbound).
    pub fn check(
        &self,
        leaf: &CertificateDer<'_>,
        connected: Option<&ServerName<'_>>,
    ) -> Result<(), EdgeCertError> {
        let cert = webpki::EndEntityCert::try_from(leaf)
            .map_err(|e| EdgeCertError::Unreadable(e.to_string()))?;
        let connected = connected.map(|n| match n {
            ServerName::DnsName(d) => d.as_ref().to_owned(),
            ServerName::IpAddress(ip) => IpAddr::from(*ip).to_string(),
            other => format!("{other:?}"),
        });
        let named = connected
            .iter()
            .chain(&self.names)
            .any(|name| carries(&cert, name));
        if !named {
            return Err(EdgeCertError::NotNamed {
                presented: cert.valid_dns_names().map(str::to_owned).collect(),
                accepted: self.names.clone(),
                connected,
            });
        }
        if !self.pins.is_empty() {
            let presented = SpkiPin::of_certificate(leaf).map_err(EdgeCertError::Unreadable)?;
            if !self.pins.contains(&presented) {
                return Err(EdgeCertError::NotPinned {
                    presented,
                    configured: self.pins.len(),
                });
            }
        }
        Ok(())
    }
}

/// Whether the certificate carries `name` itself: an IP address in its iPAddress SANs; a
/// DNS name in its dNSName SANs, as is, and valid for it by webpki (so a wildcard SAN alone
/// does not do); a wildcard `*.x` only as that same literal SAN.
fn carries(cert: &webpki::EndEntityCert<'_>, name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.parse::<IpAddr>().is_ok() {
        return webpki_valid_for(cert, name);
    }
    let literally = cert.valid_dns_names().any(|san| {
        san.strip_suffix('.')
            .unwrap_or(san)
            .eq_ignore_ascii_case(name)
    });
    if name.starts_with("*.") {
        literally
    } else {
        literally && webpki_valid_for(cert, name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::UnixTime;
    use rustls::server::danger::ClientCertVerifier;
    use std::sync::Arc;
    use std::time::Duration;

    /// The fixtures of `testdata/make.sh`, valid from their making in 2026 for 100 years.
    fn cert(name: &str) -> CertificateDer<'static> {
        let pem = match name {
            "ca" => include_str!("testdata/ca.pem"),
            "nc-ca" => include_str!("testdata/nc-ca.pem"),
            "edge" => include_str!("testdata/edge.pem"),
            "wildcard" => include_str!("testdata/wildcard.pem"),
            "cn-only" => include_str!("testdata/cn-only.pem"),
            "cn-partner" => include_str!("testdata/cn-partner.pem"),
            "nc-inside" => include_str!("testdata/nc-inside.pem"),
            "nc-outside" => include_str!("testdata/nc-outside.pem"),
            other => panic!("no fixture {other}"),
        };
        CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
    }

    /// 2030-01-01: inside every fixture's validity, whenever the tests run.
    fn now() -> UnixTime {
        UnixTime::since_unix_epoch(Duration::from_secs(1_893_456_000))
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn pin(name: &str) -> SpkiPin {
        SpkiPin::of_certificate(&cert(name)).unwrap()
    }

    /// The inbound verifier of the SIP leg, as xsgw builds it, over both test CAs.
    fn edge_verifier(edge_names: &[&str], pins: &[SpkiPin]) -> Arc<dyn ClientCertVerifier> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert("ca")).unwrap();
        roots.add(cert("nc-ca")).unwrap();
        super::super::sip::edge_client_verifier(
            Arc::new(roots),
            EdgePolicy::new(&names(edge_names), pins),
        )
        .unwrap()
    }

    fn edge_refusal(verifier: &dyn ClientCertVerifier, leaf: &str) -> Option<String> {
        match verifier.verify_client_cert(&cert(leaf), &[], now()) {
            Ok(_) => None,
            Err(e) => Some(
                EdgeCertError::from_rustls(&e)
                    .map(ToString::to_string)
                    .unwrap_or_else(|| e.to_string()),
            ),
        }
    }

    #[test]
    fn the_san_decides_and_the_cn_is_never_used() {
        let v = edge_verifier(&["sip.contoso.test"], &[]);
        assert_eq!(edge_refusal(&*v, "edge"), None);
        // CN sip.contoso.test without any SAN: names nothing.
        let why = edge_refusal(&*v, "cn-only").expect("CN-only refused");
        assert!(
            why.contains("certificate names nothing (no DNS name in its subjectAltName; the CN is not used), none of [sip] edge_names (sip.contoso.test)"),
            "{why}"
        );
        // CN gmail.test, SAN mail.unrelated.test: only the SAN counts.
        let v = edge_verifier(&["gmail.test"], &[]);
        let why = edge_refusal(&*v, "cn-partner").expect("CN ignored when a SAN exists");
        assert!(
            why.contains("certificate names mail.unrelated.test"),
            "{why}"
        );
        let cn_partner = VerifiedCert::chain_verified(&cert("cn-partner"));
        assert!(!cn_partner.is_valid_for("gmail.test"));
        assert!(cn_partner.is_valid_for("mail.unrelated.test"));
        assert!(!VerifiedCert::chain_verified(&cert("cn-only")).is_valid_for("sip.contoso.test"));
        assert_eq!(san_names(&cert("cn-only")), Vec::<String>::new());
    }

    #[test]
    fn a_wildcard_client_certificate_counts_only_when_edge_names_lists_it() {
        // Not for any name under it...
        for listed in [
            &["sip.contoso.test"][..],
            &["sip.contoso.test", "rogue.contoso.test"],
        ] {
            let why = edge_refusal(&*edge_verifier(listed, &[]), "wildcard")
                .expect("a wildcard is not the Edge");
            assert!(
                why.contains("certificate names *.contoso.test, none of"),
                "{why}"
            );
        }
        // ...only for itself, compared literally.
        let v = edge_verifier(&["sip.contoso.test", "*.contoso.test"], &[]);
        assert_eq!(edge_refusal(&*v, "wildcard"), None);
        assert_eq!(edge_refusal(&*v, "edge"), None);
        assert_eq!(
            edge_refusal(&*edge_verifier(&["*.CONTOSO.test."], &[]), "wildcard"),
            None
        );
        // A listed wildcard does not widen to the names it would match.
        assert!(edge_refusal(&*edge_verifier(&["*.contoso.test"], &[]), "edge").is_some());
        // Partners (RFC 6125): a wildcard stands for exactly one label.
        let w = VerifiedCert::chain_verified(&cert("wildcard"));
        assert!(w.is_valid_for("xmpp.contoso.test"));
        assert!(!w.is_valid_for("contoso.test"));
        assert!(!w.is_valid_for("a.b.contoso.test"));
    }

    #[test]
    fn name_constraints_of_the_issuing_ca_apply() {
        let v = edge_verifier(&["sip.contoso.test", "sip.fabrikam.test"], &[]);
        assert_eq!(edge_refusal(&*v, "nc-inside"), None);
        let why = edge_refusal(&*v, "nc-outside").expect("outside the CA's constraint");
        assert!(why.contains("NameConstraintViolation"), "{why}");
    }

    #[test]
    fn outbound_the_connected_name_counts_under_the_same_rules() {
        let policy = EdgePolicy::new(&names(&["pool.contoso.test"]), &[]);
        let host = ServerName::try_from("sip.contoso.test").unwrap();
        assert_eq!(policy.check(&cert("edge"), Some(&host)), Ok(()));
        let why = policy.check(&cert("wildcard"), Some(&host)).unwrap_err();
        assert_eq!(
            why.to_string(),
            "the Edge's certificate does not name sip.contoso.test nor any of [sip] edge_names (pool.contoso.test); it names *.contoso.test (a wildcard counts only when edge_names lists it as is)"
        );
        let ip = ServerName::try_from("127.0.10.30").unwrap();
        assert!(policy.check(&cert("edge"), Some(&ip)).is_err());
    }

    #[test]
    fn pins_good_wrong_and_a_rollover_list() {
        // The pin computed with openssl as etc/xsgw.ini shows (testdata/make.sh).
        let by_openssl = include_str!("testdata/edge.pin").trim();
        assert_eq!(pin("edge").to_string(), by_openssl);
        assert_eq!(SpkiPin::parse(by_openssl), Ok(pin("edge")));
        let curl_style = by_openssl.replacen("sha256/", "sha256//", 1);
        assert_eq!(SpkiPin::parse(&curl_style), Ok(pin("edge")));
        // A digest whose base64 starts with `/`, plain and curl-style.
        let slash = SpkiPin([0xfc; 32]);
        assert!(slash.to_string().starts_with("sha256//"), "{slash}");
        assert_eq!(SpkiPin::parse(&slash.to_string()), Ok(slash));
        let curl_slash = slash.to_string().replacen("sha256/", "sha256//", 1);
        assert_eq!(SpkiPin::parse(&curl_slash), Ok(slash));

        let edge_names = ["sip.contoso.test"];
        assert_eq!(
            edge_refusal(&*edge_verifier(&edge_names, &[pin("edge")]), "edge"),
            None
        );
        let why = edge_refusal(&*edge_verifier(&edge_names, &[pin("ca")]), "edge")
            .expect("wrong pin refused");
        assert_eq!(
            why,
            format!("certificate key {by_openssl} is not one of the 1 [sip] edge_pin value(s)")
        );
        // Rollover: the old and the new key both accepted while both are listed.
        let both = SpkiPin::parse_list(&format!("{}, {by_openssl}", pin("wildcard"))).unwrap();
        assert_eq!(both.len(), 2);
        assert_eq!(
            edge_refusal(&*edge_verifier(&edge_names, &both), "edge"),
            None
        );
        // A right pin does not excuse a wrong name.
        assert!(
            edge_refusal(&*edge_verifier(&edge_names, &[pin("wildcard")]), "wildcard").is_some()
        );
    }

    #[test]
    fn malformed_pins_are_refused_with_a_reason() {
        for (text, why) in [
            ("sha1/AAAA", "is not a pin"),
            (
                "508u3rrEYbSxrsz/aGJ4rvToyNBlKU7pd1wsZxHCPAc=",
                "is not a pin",
            ),
            ("sha256/not base64!", "not valid base64"),
            ("sha256/AAAA", "holds 3 bytes; a SHA-256 pin holds 32"),
        ] {
            let e = SpkiPin::parse(text).unwrap_err().to_string();
            assert!(e.contains(why), "{text}: {e}");
        }
        assert_eq!(SpkiPin::parse_list(""), Ok(vec![]));
        let p = pin("edge").to_string();
        assert!(SpkiPin::parse_list(&format!("{p},{p}"))
            .unwrap_err()
            .to_string()
            .contains("listed twice"));
    }

    #[test]
    fn the_gateway_own_names_follow_rfc_6125() {
        assert!(names_host(&cert("edge"), "sip.contoso.test"));
        assert!(names_host(&cert("edge"), "SIP.contoso.test."));
        assert!(!names_host(&cert("edge"), "gw.contoso.test"));
        assert!(names_host(&cert("wildcard"), "gw.contoso.test"));
        assert!(!names_host(&cert("cn-only"), "sip.contoso.test"));
    }
}
