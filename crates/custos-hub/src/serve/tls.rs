//! The hub's TLS: its certificate (the operator's files, or a self-signed one made once in the data directory for
//! development) and the rustls server config (ring provider, TLS 1.2 and 1.3, ALPN `http/1.1`). It never serves
//! a certificate whose key it cannot load, and never writes a private key readable by others.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use custos_client::Fingerprint;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// How the hub serves its API.
#[derive(Clone, Debug, Default)]
pub enum HubTls {
    /// HTTPS with a self-signed certificate for `localhost`, 127.0.0.1, ::1 and the listen address, made at first
    /// start as `tls.crt` and `tls.key` in the data directory and reused after. Clients pin its fingerprint.
    #[default]
    SelfSigned,
    /// HTTPS with this certificate chain and key (PEM files).
    Files {
        /// The certificate chain, end-entity certificate first.
        cert: PathBuf,
        /// Its private key (PKCS#8, PKCS#1 or SEC1).
        key: PathBuf,
    },
    /// Plain HTTP, without TLS: behind a TLS-terminating proxy, or on the loopback interface.
    Plain,
}

/// The certificate file of the self-signed certificate, in the data directory.
pub const SELF_SIGNED_CERT: &str = "tls.crt";
/// Its key file (mode 0600).
pub const SELF_SIGNED_KEY: &str = "tls.key";

/// Why the hub's certificate could not be loaded or made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A certificate or key file.
    #[error("{path}: {why}")]
    File {
        /// The path.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// Making the self-signed certificate, or a certificate rustls refused.
    #[error("TLS: {0}")]
    Config(String),
}

/// A rustls server config for `tls` (none for plain HTTP), and the fingerprint of the certificate it serves.
pub fn server_config(
    tls: &HubTls,
    data_dir: &Path,
    listen: SocketAddr,
) -> Result<Option<(Arc<rustls::ServerConfig>, Fingerprint)>, TlsError> {
    let (certs, key) = match tls {
        HubTls::Plain => return Ok(None),
        HubTls::Files { cert, key } => (read_certs(cert)?, read_key(key)?),
        HubTls::SelfSigned => self_signed(data_dir, listen)?,
    };
    let fingerprint = Fingerprint::of(certs.first().map_or(&[][..], |c| c.as_ref()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Config(format!("certificate and key: {e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some((Arc::new(config), fingerprint)))
}

fn file_err(path: &Path, why: impl ToString) -> TlsError {
    TlsError::File {
        path: path.to_path_buf(),
        why: why.to_string(),
    }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_err(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_err(path, e))?;
    if certs.is_empty() {
        return Err(file_err(path, "no PEM certificate in it"));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| file_err(path, format!("no PEM private key: {e}")))
}

/// The self-signed certificate in `data_dir`, made now if it is not there.
fn self_signed(
    data_dir: &Path,
    listen: SocketAddr,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let cert_path = data_dir.join(SELF_SIGNED_CERT);
    let key_path = data_dir.join(SELF_SIGNED_KEY);
    if cert_path.exists() || key_path.exists() {
        return Ok((read_certs(&cert_path)?, read_key(&key_path)?));
    }
    let mut names = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
    let host = listen.ip();
    if !host.is_unspecified() && !host.is_loopback() {
        names.push(host.to_string());
    }
    let made =
        rcgen::generate_simple_self_signed(names).map_err(|e| TlsError::Config(e.to_string()))?;
    // The key first, owner-only and complete, so that a certificate file never exists without its key.
    write_new(
        &key_path,
        made.signing_key.serialize_pem().as_bytes(),
        0o600,
    )?;
    write_new(&cert_path, made.cert.pem().as_bytes(), 0o644)?;
    tracing::info!(cert = %cert_path.display(), "made a self-signed TLS certificate");
    Ok((
        vec![made.cert.der().clone()],
        PrivateKeyDer::try_from(made.signing_key.serialize_der())
            .map_err(|e| TlsError::Config(e.to_string()))?,
    ))
}

/// Writes a new file (refusing to replace one) with `mode` on Unix.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), TlsError> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(path).map_err(|e| file_err(path, e))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| file_err(path, e))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_self_signed_certificate_is_made_once() {
        let dir = std::env::temp_dir().join(format!("custos-hub-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let listen = SocketAddr::from(([127, 0, 0, 1], 0));
        let (_, first) = server_config(&HubTls::SelfSigned, &dir, listen)
            .unwrap()
            .unwrap();
        let (_, again) = server_config(&HubTls::SelfSigned, &dir, listen)
            .unwrap()
            .unwrap();
        assert_eq!(first, again);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(dir.join(SELF_SIGNED_KEY))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(
            server_config(&HubTls::Plain, &dir, listen)
                .unwrap()
                .is_none()
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
