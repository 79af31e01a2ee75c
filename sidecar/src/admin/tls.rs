//! TLS for the admin API (rustls): the server's certificate and key, and what its
//! clients (`multiaz status` and the other operator commands, `multiaz check`, the
//! chaos runner) trust.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;

/// The server side: the certificate chain in `cert_file` (PEM) and its key (PEM bytes,
/// read from a 0600 file like every secret).
pub fn server_config(
    cert_file: &Path,
    key_pem: &[u8],
) -> Result<Arc<rustls::ServerConfig>, String> {
    let certs = certificates(cert_file)?;
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| format!("admin.tls_key_file: no private key in it ({e})"))?;
    rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map(Arc::new)
        .map_err(|e| format!("admin.tls_cert_file and tls_key_file do not go together: {e}"))
}

/// The client side: trusts only the certificates in `ca_file` (a CA, or the server's
/// own self-signed certificate).
pub fn client_config(ca_file: &Path) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certificates(ca_file)? {
        roots
            .add(cert)
            .map_err(|e| format!("{}: {e}", ca_file.display()))?;
    }
    Ok(Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    ))
}

/// The PEM certificates in `file`; an error when there are none.
pub fn certificates(file: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(file)
        .map_err(|e| format!("cannot read {}: {e}", file.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: not PEM certificates ({e})", file.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate in it", file.display()));
    }
    Ok(certs)
}
