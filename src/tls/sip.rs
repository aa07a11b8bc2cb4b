//! rustls configurations and handshake diagnostics for the SIP leg (mutual TLS with the Edge).

use std::path::Path;
use std::sync::Arc;

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
