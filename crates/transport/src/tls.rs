//! Diameter over TLS/TCP (RFC 6733 §2.1, §13): TLS from the first octet on a port of its own
//! (IANA 5658), TLS 1.2 or later, and mutual authentication: a peer must present a certificate
//! signed by a configured CA, and (RFC 6733 §13.1) the Origin-Host of its CER must be a name its
//! certificate is valid for. Certificates and keys are PEM files. rustls with the ring provider.

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::version::{TLS12, TLS13};
use rustls::{RootCertStore, ServerConfig, SupportedProtocolVersion};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// A TLS setting that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {reason}")]
pub struct TlsError {
    pub what: String,
    pub reason: String,
}

fn err(what: impl Into<String>, reason: impl std::fmt::Display) -> TlsError {
    TlsError {
        what: what.into(),
        reason: reason.to_string(),
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// TLS versions from a minimum: "1.2" (1.2 and 1.3) or "1.3".
pub fn versions(min: &str) -> Result<&'static [&'static SupportedProtocolVersion], TlsError> {
    static BOTH: [&SupportedProtocolVersion; 2] = [&TLS13, &TLS12];
    static ONLY13: [&SupportedProtocolVersion; 1] = [&TLS13];
    match min {
        "1.2" => Ok(&BOTH),
        "1.3" => Ok(&ONLY13),
        other => Err(err(
            "min_version",
            format!("'{other}': use \"1.2\" or \"1.3\""),
        )),
    }
}

/// Certificates of a PEM file (a chain: the end entity first).
pub fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let what = path.display().to_string();
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(&what, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(&what, e))?;
    if certs.is_empty() {
        return Err(err(what, "no certificate in the file"));
    }
    Ok(certs)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| err(path.display().to_string(), e))
}

fn roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for c in certificates(path)? {
        roots
            .add(c)
            .map_err(|e| err(path.display().to_string(), e))?;
    }
    Ok(roots)
}

/// The server side: our certificate and key, and the CA that signs the peers' certificates
/// (a peer without such a certificate fails the handshake).
pub fn server_config(
    certificate: &Path,
    key: &Path,
    peer_ca: &Path,
    min_version: &str,
) -> Result<Arc<ServerConfig>, TlsError> {
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots(peer_ca)?),
        provider(),
    )
    .build()
    .map_err(|e| err(peer_ca.display().to_string(), e))?;
    let config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(versions(min_version)?)
        .map_err(|e| err("tls", e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certificates(certificate)?, private_key(key)?)
        .map_err(|e| err(certificate.display().to_string(), e))?;
    Ok(Arc::new(config))
}

/// The client side (the load tool, tests): the CA that signs the server's certificate, and
/// our own certificate and key.
pub fn client_config(
    server_ca: &Path,
    certificate: &Path,
    key: &Path,
    min_version: &str,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions(min_version)?)
        .map_err(|e| err("tls", e))?
        .with_root_certificates(roots(server_ca)?)
        .with_client_auth_cert(certificates(certificate)?, private_key(key)?)
        .map_err(|e| err(certificate.display().to_string(), e))?;
    Ok(Arc::new(config))
}

/// The earliest `notAfter` of the certificates of a PEM file, in seconds since 1970.
pub fn earliest_expiry(path: &Path) -> Result<i64, TlsError> {
    certificates(path)?
        .iter()
        .map(|c| crate::expiry::not_after(c))
        .try_fold(i64::MAX, |min, t| t.map(|t| min.min(t)))
        .ok_or_else(|| {
            err(
                path.display().to_string(),
                "a certificate's validity cannot be read",
            )
        })
}

/// Whether a peer's certificate (end entity, DER) is valid for `host` (its CER Origin-Host).
pub fn certificate_names(cert: &CertificateDer<'_>, host: &str) -> bool {
    let Ok(name) = ServerName::try_from(host.to_owned()) else {
        return false;
    };
    webpki::EndEntityCert::try_from(cert)
        .is_ok_and(|ee| ee.verify_is_valid_for_subject_name(&name).is_ok())
}
