//! rustls configurations and handshake diagnostics for the SIP leg (mutual TLS with the Edge).
//!
//! Both directions are mutual: the Edge connects to `[sip] listen` presenting its certificate
//! ([`sip_server_config`]), and xsgw connects to `[sip] edge` presenting the gateway
//! certificate ([`sip_client_config`]). Each side's certificate must chain to `[sip] ca`.
//! Outbound, the Edge's certificate must name the host of `[sip] edge` or one of
//! `[sip] edge_names` (an Edge pool reached by a pool name whose members carry their own).

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::DigitallySignedStruct;

use super::provider;

/// The server side of the SIP leg: TLS 1.2/1.3, our certificate, and a client certificate
/// required and chained to `[sip] ca`. Names are checked after the handshake against
/// `[sip] edge_names`, so the refusal can be logged with what was presented.
pub fn sip_server_config(
    credentials: &crate::config::Credentials,
) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
    let provider = provider();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::clone(&credentials.sip_roots),
        Arc::clone(&provider),
    )
    .build()
    .map_err(|e| rustls::Error::General(format!("[sip] ca cannot verify clients: {e}")))?;
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(Arc::clone(
            &credentials.sip.key,
        ))));
    Ok(Arc::new(config))
}

/// The client side of the SIP leg: TLS 1.2/1.3, the gateway certificate presented, the Edge's
/// certificate verified against `[sip] ca` for the name connected to or one of `edge_names`.
pub fn sip_client_config(
    credentials: &crate::config::Credentials,
    edge_names: &[String],
) -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
    let provider = provider();
    let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::clone(&credentials.sip_roots),
        Arc::clone(&provider),
    )
    .build()
    .map_err(|e| rustls::Error::General(format!("[sip] ca cannot verify the Edge: {e}")))?;
    let names = edge_names
        .iter()
        .filter_map(|n| ServerName::try_from(n.clone()).ok())
        .collect();
    let verifier = Arc::new(EdgeVerifier { inner, names });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(Arc::clone(
            &credentials.sip.key,
        ))));
    Ok(Arc::new(config))
}

/// WebPKI verification for the connected name, then for each of `[sip] edge_names`: the
/// chain and signatures are always checked by webpki; only the accepted names widen.
#[derive(Debug)]
struct EdgeVerifier {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    names: Vec<ServerName<'static>>,
}

impl ServerCertVerifier for EdgeVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let first = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        );
        let wrong_name = matches!(
            &first,
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName
                    | rustls::CertificateError::NotValidForNameContext { .. }
            ))
        );
        if !wrong_name {
            return first;
        }
        for name in &self.names {
            if let Ok(ok) =
                self.inner
                    .verify_server_cert(end_entity, intermediates, name, ocsp_response, now)
            {
                return Ok(ok);
            }
        }
        first
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

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
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
