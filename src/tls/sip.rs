//! rustls configurations and handshake diagnostics for the SIP leg (mutual TLS with the Edge).
//!
//! Both directions are mutual: the Edge connects to `[sip] listen` presenting its certificate
//! ([`sip_server_config`]), and xsgw connects to `[sip] edge` presenting the gateway
//! certificate ([`sip_client_config`]). Each side's certificate must chain to `[sip] ca`.
//! The Edge's certificate must then satisfy [`EdgePolicy`] (see [`super::names`]): name one of
//! `[sip] edge_names` (outbound also: the host of `[sip] edge`) in its subjectAltName, a
//! wildcard only when listed as is, and hold a key of `[sip] edge_pin` when pins are set.
//! Both checks run inside the handshake, so a refused peer never gets past it; the reason
//! comes back in the handshake error ([`describe_handshake_failure`]).

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

use super::names::{EdgeCertError, EdgePolicy};
use super::provider;
use crate::config::{Credentials, Sip};

/// The server side of the SIP leg: TLS 1.2/1.3, our certificate, and a client certificate
/// required, chained to `[sip] ca` and accepted by [`EdgePolicy`].
pub fn sip_server_config(
    credentials: &Credentials,
    sip: &Sip,
) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
    let verifier = edge_client_verifier(
        Arc::clone(&credentials.sip_roots),
        EdgePolicy::new(&sip.edge_names, &sip.edge_pin),
    )?;
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(Arc::clone(
            &credentials.sip.key,
        ))));
    Ok(Arc::new(config))
}

/// The verifier of the Edge's client certificate: webpki's chain verification against
/// `roots` (name constraints included), then `policy`.
pub(crate) fn edge_client_verifier(
    roots: Arc<rustls::RootCertStore>,
    policy: EdgePolicy,
) -> Result<Arc<dyn ClientCertVerifier>, rustls::Error> {
    let inner = rustls::server::WebPkiClientVerifier::builder_with_provider(roots, provider())
        .build()
        .map_err(|e| rustls::Error::General(format!("[sip] ca cannot verify clients: {e}")))?;
    Ok(Arc::new(EdgeClientVerifier { inner, policy }))
}

/// WebPKI verification of the client certificate, then the Edge's names and pin.
#[derive(Debug)]
struct EdgeClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    policy: EdgePolicy,
}

impl ClientCertVerifier for EdgeClientVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        self.policy
            .check(end_entity, None)
            .map_err(EdgeCertError::into_rustls)?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The client side of the SIP leg: TLS 1.2/1.3, the gateway certificate presented, the Edge's
/// certificate verified against `[sip] ca`, then [`EdgePolicy`] with the name connected to.
pub fn sip_client_config(
    credentials: &Credentials,
    sip: &Sip,
) -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
    client_config(
        credentials,
        Some(EdgePolicy::new(&sip.edge_names, &sip.edge_pin)),
    )
}

/// [`sip_client_config`] that verifies the chain against `[sip] ca` but no name or pin: for
/// `xsgw diagnose` only, to learn what answers on a port after the real handshake failed on
/// the name (an internal interface presenting a pool certificate, say). Never for traffic.
pub fn chain_only_client_config(
    credentials: &Credentials,
) -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
    client_config(credentials, None)
}

fn client_config(
    credentials: &Credentials,
    policy: Option<EdgePolicy>,
) -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
    let provider = provider();
    let signatures = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::clone(&credentials.sip_roots),
        Arc::clone(&provider),
    )
    .build()
    .map_err(|e| rustls::Error::General(format!("[sip] ca cannot verify the Edge: {e}")))?;
    let verifier = Arc::new(EdgeServerVerifier {
        roots: Arc::clone(&credentials.sip_roots),
        algorithms: provider.signature_verification_algorithms.all,
        signatures,
        policy,
    });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(Arc::clone(
            &credentials.sip.key,
        ))));
    Ok(Arc::new(config))
}

/// The chain verified by webpki against `[sip] ca` (name constraints included), then the
/// name connected to or one of `[sip] edge_names`, and the pin, by [`EdgePolicy`]: unlike
/// plain RFC 6125 server verification, a wildcard SAN alone does not make the Edge.
#[derive(Debug)]
struct EdgeServerVerifier {
    roots: Arc<rustls::RootCertStore>,
    algorithms: &'static [&'static dyn rustls::pki_types::SignatureVerificationAlgorithm],
    /// For the handshake signatures only.
    signatures: Arc<rustls::client::WebPkiServerVerifier>,
    /// `None` only for [`chain_only_client_config`].
    policy: Option<EdgePolicy>,
}

impl ServerCertVerifier for EdgeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let parsed = rustls::server::ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.roots,
            intermediates,
            now,
            self.algorithms,
        )?;
        if let Some(policy) = &self.policy {
            policy
                .check(end_entity, Some(server_name))
                .map_err(EdgeCertError::into_rustls)?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.signatures.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.signatures.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.signatures.supported_verify_schemes()
    }
}

/// An operator-facing reason for a failed outbound handshake with the Edge.
pub fn describe_client_failure(error: &std::io::Error, edge: &str, ca: &Path) -> String {
    let inner = error
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>());
    match inner {
        Some(rustls::Error::InvalidCertificate(
            rustls::CertificateError::NotValidForName
            | rustls::CertificateError::NotValidForNameContext { .. },
        )) => format!(
            "the Edge's certificate does not name {edge} nor any of [sip] edge_names"
        ),
        Some(rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)) => format!(
            "the Edge's certificate is not issued by the CA in {} ([sip] ca)",
            ca.display()
        ),
        Some(rustls::Error::AlertReceived(alert)) => format!(
            "the Edge refused the handshake (alert {alert:?}): it may not trust the gateway certificate, or not expect its name"
        ),
        _ => describe_handshake_failure(error, ca),
    }
}

/// An operator-facing reason for a failed handshake on the SIP leg.
pub fn describe_handshake_failure(error: &std::io::Error, ca: &Path) -> String {
    let inner = error
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>());
    if let Some(refusal) = inner.and_then(EdgeCertError::from_rustls) {
        return refusal.to_string();
    }
    match inner {
        Some(rustls::Error::NoCertificatesPresented) => {
            "the peer presented no client certificate; the Edge must present its certificate (mutual TLS)".into()
        }
        Some(rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)) => format!(
            "the peer's certificate is not issued by the CA in {} ([sip] ca)",
            ca.display()
        ),
        Some(rustls::Error::InvalidCertificate(rustls::CertificateError::Expired)) => {
            "the peer's certificate has expired".into()
        }
        Some(rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other)))
            if matches!(
                other.0.downcast_ref::<webpki::Error>(),
                Some(webpki::Error::NameConstraintViolation)
            ) =>
        {
            format!(
                "the peer's certificate names something its issuing CA may not certify (name constraints of a CA in {} or of an intermediate)",
                ca.display()
            )
        }
        Some(other) => other.to_string(),
        None => match error.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                "handshake not completed within [sip] connect_timeout".into()
            }
            std::io::ErrorKind::UnexpectedEof => "the peer closed the connection during the handshake".into(),
            _ => error.to_string(),
        },
    }
}
