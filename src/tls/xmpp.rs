//! rustls configurations for the XMPP leg (STARTTLS on server-to-server streams, RFC 6120 §5).
//!
//! In scope: the server side (our certificate; a client certificate requested but optional,
//! its chain checked against `[xmpp] ca` *after* the handshake so a peer with an unknown or
//! missing certificate still gets a TLS stream and can fall back to dialback), the client side
//! (SNI = the remote domain, the server certificate verified for that domain per RFC 6125 by
//! webpki against `[xmpp] ca`, our certificate offered for SASL EXTERNAL, XEP-0178), and a
//! verified peer certificate ([`VerifiedCert`]: which domains it is valid for, by webpki,
//! subjectAltName only).
//!
//! Out of scope: deciding what a name is good for (the session offers SASL EXTERNAL only
//! when the names match the domain the peer claims), POSH/DANE.

use std::fmt;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

use super::names::VerifiedCert;
use super::provider;
use crate::config::Credentials;

/// Accepts any client certificate during the handshake (signatures are still checked, so
/// the peer holds the key), leaving the chain to [`XmppTls::verified_peer`].
///
/// Why: refusing an unverifiable client certificate would fail the whole handshake, and real
/// servers (Prosody, ejabberd) then give up instead of falling back to dialback.
struct DeferredClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
}

impl fmt::Debug for DeferredClientVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DeferredClientVerifier")
    }
}

impl ClientCertVerifier for DeferredClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // No hints: a peer with a certificate from any CA should still present it.
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
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

/// The server-side twin of [`DeferredClientVerifier`]: the handshake completes with any
/// certificate (signatures checked), and [`XmppTls::verify_server`] judges the chain and the
/// name afterwards. Why: with `tls = optional`, an invalid certificate still gives an
/// encrypted stream on which dialback (which does not rely on the certificate) can run, as
/// Prosody and ejabberd do; SASL EXTERNAL is then not attempted, and `tls = required`
/// refuses the stream.
struct DeferredServerVerifier {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
}

impl fmt::Debug for DeferredServerVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DeferredServerVerifier")
    }
}

impl ServerCertVerifier for DeferredServerVerifier {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
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

/// Both TLS sides of the XMPP leg, built once at start.
#[derive(Clone)]
pub struct XmppTls {
    /// For inbound streams after `<proceed/>`.
    pub server: Arc<rustls::ServerConfig>,
    /// For outbound streams after `<proceed/>`.
    pub client: Arc<rustls::ClientConfig>,
    chain_verifier: Arc<dyn ClientCertVerifier>,
    server_verifier: Arc<rustls::client::WebPkiServerVerifier>,
}

impl fmt::Debug for XmppTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("XmppTls(..)")
    }
}

impl XmppTls {
    /// `None` when no XMPP identity is loaded (`tls = disabled` everywhere).
    pub fn new(credentials: &Credentials) -> Result<Option<XmppTls>, rustls::Error> {
        let Some(identity) = &credentials.xmpp else {
            return Ok(None);
        };
        let provider = provider();
        let chain_verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::clone(&credentials.xmpp_roots),
            Arc::clone(&provider),
        )
        .build()
        .map_err(|e| rustls::Error::General(format!("[xmpp] ca cannot verify peers: {e}")))?;
        let deferred = Arc::new(DeferredClientVerifier {
            inner: Arc::clone(&chain_verifier),
        });
        let server = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(deferred)
            .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(Arc::clone(
                &identity.key,
            ))));
        let server_verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::clone(&credentials.xmpp_roots),
            Arc::clone(&provider),
        )
        .build()
        .map_err(|e| rustls::Error::General(format!("[xmpp] ca cannot verify servers: {e}")))?;
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(DeferredServerVerifier {
                inner: Arc::clone(&server_verifier),
            }))
            .with_client_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(Arc::clone(
                &identity.key,
            ))));
        Ok(Some(XmppTls {
            server: Arc::new(server),
            client: Arc::new(client),
            chain_verifier,
            server_verifier,
        }))
    }

    /// A client connection for a stream to `domain` (SNI and the name checked).
    pub fn connect(&self, domain: &str) -> Result<rustls::ClientConnection, rustls::Error> {
        let name = ServerName::try_from(domain.to_owned())
            .map_err(|e| rustls::Error::General(format!("{domain} is not a DNS name: {e}")))?;
        rustls::ClientConnection::new(Arc::clone(&self.client), name)
    }

    /// Whether a server's certificate chain verifies against `[xmpp] ca` and names `domain`
    /// (RFC 6125 DNS-ID, wildcards in the leftmost label); `Err` says why not.
    pub fn verify_server(
        &self,
        chain: Option<&[CertificateDer<'_>]>,
        domain: &str,
    ) -> Result<(), String> {
        let Some((leaf, intermediates)) = chain.and_then(|c| c.split_first()) else {
            return Err("no certificate presented".into());
        };
        let name = ServerName::try_from(domain.to_owned())
            .map_err(|e| format!("{domain} is not a DNS name: {e}"))?;
        self.server_verifier
            .verify_server_cert(leaf, intermediates, &name, &[], UnixTime::now())
            .map(|_| ())
            .map_err(|e| format!("certificate not valid for {domain}: {e}"))
    }

    /// A server connection for an inbound stream.
    pub fn accept(&self) -> Result<rustls::ServerConnection, rustls::Error> {
        rustls::ServerConnection::new(Arc::clone(&self.server))
    }

    /// The peer's certificate when its chain verifies against `[xmpp] ca` with the
    /// client-auth EKU (webpki applies the CAs' name constraints there); what it is valid for
    /// is then asked of [`VerifiedCert::is_valid_for`] (SAN only, never the CN). `Err` says
    /// why not (for the log).
    pub fn verified_peer(
        &self,
        chain: Option<&[CertificateDer<'_>]>,
    ) -> Result<VerifiedCert, String> {
        let Some((leaf, intermediates)) = chain.and_then(|c| c.split_first()) else {
            return Err("no certificate presented".into());
        };
        self.chain_verifier
            .verify_client_cert(leaf, intermediates, UnixTime::now())
            .map_err(|e| format!("certificate not accepted: {e}"))?;
        Ok(VerifiedCert::chain_verified(leaf))
    }
}
