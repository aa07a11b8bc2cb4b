//! TLS material for both legs: loading PEM certificates, keys and CA files, checking that a key
//! matches its certificate, and reading what a certificate names (see [`x509`]).
//!
//! In scope: everything `xsgw check` and start-up need to know the files are usable, the
//! rustls configurations of each leg ([`sip`], [`xmpp`]) built on [`Identity`] and
//! [`load_roots`], and which names a peer's certificate is good for ([`names`]: webpki's name
//! validation, subjectAltName only, the Edge's stricter rules and its pin). [`x509`] only
//! reads what a certificate names and when it expires, for messages.

pub mod names;
pub mod sip;
pub mod x509;
pub mod xmpp;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

/// The crypto provider for both legs: ring only (see Cargo.toml).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Why TLS material could not be used. Each variant names the file.
#[derive(Debug)]
#[non_exhaustive]
pub enum TlsError {
    /// The file could not be opened or read.
    Unreadable {
        path: PathBuf,
        error: std::io::Error,
    },
    /// The file holds no PEM block of the kind needed.
    NoPem { path: PathBuf, what: &'static str },
    /// A PEM block was there but could not be decoded.
    BadPem { path: PathBuf, error: String },
    /// The private key is not one rustls can sign with (RSA, ECDSA P-256/P-384, Ed25519).
    UnsupportedKey { path: PathBuf, error: String },
    /// The key does not belong to the certificate.
    KeyMismatch { cert: PathBuf, key: PathBuf },
    /// The certificate could not be read for its names.
    BadCertificate { path: PathBuf, error: String },
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::Unreadable { path, error } => {
                write!(f, "cannot read {}: {error}", path.display())
            }
            TlsError::NoPem { path, what } => write!(
                f,
                "{} holds no PEM {what} (expected a -----BEGIN ...----- block)",
                path.display()
            ),
            TlsError::BadPem { path, error } => {
                write!(f, "{} is not valid PEM: {error}", path.display())
            }
            TlsError::UnsupportedKey { path, error } => write!(
                f,
                "{} is not a usable private key ({error}); RSA, ECDSA P-256/P-384 and Ed25519 keys in PKCS#8, PKCS#1 or SEC1 PEM are supported",
                path.display()
            ),
            TlsError::KeyMismatch { cert, key } => write!(
                f,
                "the key {} does not belong to the certificate {}: their public keys differ",
                key.display(),
                cert.display()
            ),
            TlsError::BadCertificate { path, error } => {
                write!(f, "{}: {error}", path.display())
            }
        }
    }
}

impl std::error::Error for TlsError {}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|error| TlsError::Unreadable {
        path: path.to_path_buf(),
        error,
    })
}

/// Every certificate in a PEM file, in order (leaf first for a chain).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::BadPem {
            path: path.to_path_buf(),
            error: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoPem {
            path: path.to_path_buf(),
            what: "certificate",
        });
    }
    Ok(certs)
}

/// The first private key in a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::NoPem {
            path: path.to_path_buf(),
            what: "private key",
        },
        other => TlsError::BadPem {
            path: path.to_path_buf(),
            error: other.to_string(),
        },
    })
}

/// A certificate chain with its key, checked to match, and what the leaf names.
#[derive(Clone)]
pub struct Identity {
    pub cert_path: PathBuf,
    pub key: Arc<CertifiedKey>,
    pub summary: x509::CertSummary,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("cert_path", &self.cert_path)
            .field("summary", &self.summary)
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// Loads `cert` and `key`, and checks that the key belongs to the leaf certificate.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let chain = load_certs(cert)?;
        let summary = x509::summarize(&chain[0]).map_err(|e| TlsError::BadCertificate {
            path: cert.to_path_buf(),
            error: e.to_string(),
        })?;
        let private_key = load_key(key)?;
        let signing_key = provider()
            .key_provider
            .load_private_key(private_key)
            .map_err(|e| TlsError::UnsupportedKey {
                path: key.to_path_buf(),
                error: e.to_string(),
            })?;
        let certified = CertifiedKey::new(chain, signing_key);
        match certified.keys_match() {
            Ok(()) => {}
            Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
                // The provider cannot show the public key (some key types): rustls will find
                // out at the first handshake; nothing more to check here.
            }
            Err(_) => {
                return Err(TlsError::KeyMismatch {
                    cert: cert.to_path_buf(),
                    key: key.to_path_buf(),
                })
            }
        }
        Ok(Identity {
            cert_path: cert.to_path_buf(),
            key: Arc::new(certified),
            summary,
        })
    }
}

/// CA certificates from a PEM file as a root store. Certificates rustls cannot use as trust
/// anchors make this fail, naming the file.
pub fn load_roots(path: &Path) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in load_certs(path)? {
        roots.add(cert).map_err(|e| TlsError::BadCertificate {
            path: path.to_path_buf(),
            error: format!("not usable as a CA certificate: {e}"),
        })?;
    }
    Ok(roots)
}

/// The Mozilla roots compiled into the binary, for `[xmpp] ca = system`.
pub fn system_roots() -> rustls::RootCertStore {
    rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    }
}
