//! How a client trusts the hub's certificate (and an MQTT broker's): the system's roots, a CA file, or one pinned
//! certificate. Every TLS config made here is rustls on the `ring` provider, the one crypto stack of the
//! workspace's TLS. This module never accepts a certificate it cannot verify, and never sends plain HTTP beyond
//! the loopback interface ([`check_url`]).

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use sha2::Digest as _;

use crate::ClientError;

/// The SHA-256 of a DER end-entity certificate, written `sha256:<64 hex digits>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// The fingerprint of the DER certificate `der`.
    pub fn of(der: &[u8]) -> Self {
        Self(sha2::Sha256::digest(der).into())
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", hex::encode(self.0))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Fingerprint {
    type Err = String;

    /// `sha256:<hex>`; colons between the hex pairs (as `openssl x509 -fingerprint` prints them) are allowed.
    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("`{text}` is not a fingerprint: expected sha256: and 64 hex digits");
        let hex_part = text
            .trim()
            .strip_prefix("sha256:")
            .or_else(|| text.trim().strip_prefix("SHA256:"))
            .ok_or_else(bad)?
            .replace(':', "");
        let mut out = [0u8; 32];
        hex::decode_to_slice(hex_part, &mut out).map_err(|_| bad())?;
        Ok(Self(out))
    }
}

/// What a client accepts as the server's certificate.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub enum TlsTrust {
    /// A certificate chaining to the system's root certificates, for the server's name.
    #[default]
    System,
    /// A certificate chaining to one of these CA certificates (read from a PEM file), for the server's name.
    Ca {
        /// The file they came from (for messages).
        path: PathBuf,
        /// The CA certificates.
        certs: Vec<CertificateDer<'static>>,
    },
    /// Exactly the certificate with this fingerprint, whatever names and dates it carries (a self-signed
    /// development certificate, say); the handshake signature is still verified with its key.
    Pinned(Fingerprint),
}

impl TlsTrust {
    /// Trust the CA certificates in the PEM file `path`.
    pub fn ca_file(path: &Path) -> Result<Self, ClientError> {
        let bad = |why: String| ClientError::Tls(format!("CA file {}: {why}", path.display()));
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| bad(e.to_string()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(e.to_string()))?;
        if certs.is_empty() {
            return Err(bad("no certificate in it".into()));
        }
        Ok(Self::Ca {
            path: path.to_path_buf(),
            certs,
        })
    }

    /// The trust a command was given: a CA file, or a pinned fingerprint (not both), or the system's roots.
    pub fn from_options(
        ca: Option<&Path>,
        fingerprint: Option<Fingerprint>,
    ) -> Result<Option<Self>, ClientError> {
        match (ca, fingerprint) {
            (Some(_), Some(_)) => Err(ClientError::Tls(
                "give either a CA file or a pinned fingerprint, not both".into(),
            )),
            (Some(path), None) => Self::ca_file(path).map(Some),
            (None, Some(f)) => Ok(Some(Self::Pinned(f))),
            (None, None) => Ok(None),
        }
    }

    /// A rustls client config (ring provider, TLS 1.2 and 1.3, no client certificate) that verifies servers this
    /// way. No ALPN protocols are set.
    pub fn client_config(&self) -> Result<rustls::ClientConfig, ClientError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| ClientError::Tls(e.to_string()))?;
        let roots = |certs: &[CertificateDer<'static>]| -> Result<_, ClientError> {
            let mut roots = rustls::RootCertStore::empty();
            let (added, _ignored) = roots.add_parsable_certificates(certs.iter().cloned());
            if added == 0 {
                return Err(ClientError::Tls("no usable root certificate".into()));
            }
            Ok(roots)
        };
        Ok(match self {
            Self::System => {
                // Some unreadable files among the system's certificates are no reason to refuse the rest; and a
                // machine without any still builds clients (for plain HTTP on loopback), whose handshakes then
                // fail for want of a trusted issuer.
                let found = rustls_native_certs::load_native_certs();
                let mut roots = rustls::RootCertStore::empty();
                roots.add_parsable_certificates(found.certs);
                builder.with_root_certificates(roots).with_no_client_auth()
            }
            Self::Ca { path, certs } => {
                builder
                    .with_root_certificates(roots(certs).map_err(|e| {
                        ClientError::Tls(format!("CA file {}: {e}", path.display()))
                    })?)
                    .with_no_client_auth()
            }
            Self::Pinned(pin) => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(PinnedCertificate {
                    pin: *pin,
                    provider,
                }))
                .with_no_client_auth(),
        })
    }
}

/// Accepts exactly one end-entity certificate, by its SHA-256, and checks that the server holds its key.
#[derive(Debug)]
struct PinnedCertificate {
    pin: Fingerprint,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCertificate {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // Names and dates are not checked: the pin names the one certificate the operator vouched for.
        let seen = Fingerprint::of(end_entity);
        if seen == self.pin {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                rustls::OtherError(Arc::new(PinMismatch {
                    seen,
                    pinned: self.pin,
                })),
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The server showed another certificate than the pinned one.
struct PinMismatch {
    seen: Fingerprint,
    pinned: Fingerprint,
}

impl fmt::Display for PinMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the server's certificate is {}, not the pinned {}",
            self.seen, self.pinned
        )
    }
}

// rustls shows the cause of a certificate error with `Debug`: the same sentence.
impl fmt::Debug for PinMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for PinMismatch {}

/// An HTTP client from `builder` that speaks HTTPS (HTTP/1.1 over rustls) trusting servers as `trust` says.
pub fn http_client(
    builder: reqwest::ClientBuilder,
    trust: &TlsTrust,
) -> Result<reqwest::Client, ClientError> {
    let mut config = trust.client_config()?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    builder
        .tls_backend_preconfigured(config)
        .build()
        .map_err(|e| ClientError::Tls(e.to_string()))
}

/// Whether `e` (or one of its causes) is a TLS handshake that failed on the certificate: not trusted, not for
/// this name, not the pinned one. Such a failure is not worth retrying.
pub fn is_refused_certificate(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(err) = next {
        let tls = err.downcast_ref::<rustls::Error>().or_else(|| {
            err.downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        });
        if matches!(
            tls,
            Some(rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented)
        ) {
            return true;
        }
        // Boxed causes (a `Box<dyn Error>` reports its inner error's causes, not the inner error) hide the rustls
        // error from `downcast_ref`; its message is stable.
        let text = err.to_string();
        if text.contains("invalid peer certificate") || text.contains("peer sent no certificates") {
            return true;
        }
        next = err.source();
    }
    false
}

/// Refuses a hub URL that would send requests in the clear beyond this machine: `https://` is fine, `http://`
/// only to `localhost`, 127.0.0.0/8 or `[::1]`.
pub fn check_url(url: &str) -> Result<(), ClientError> {
    if url.starts_with("https://") {
        return Ok(());
    }
    let Some(rest) = url.strip_prefix("http://") else {
        return Err(ClientError::Insecure(format!(
            "`{url}` is not an https:// URL"
        )));
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    if is_loopback(host) {
        Ok(())
    } else {
        Err(ClientError::Insecure(format!(
            "`{url}` is plain HTTP to another machine: use https:// (plain http:// is allowed only to localhost, \
             127.0.0.1 or [::1])"
        )))
    }
}

/// Whether `host` (a name or an address, IPv6 without brackets) is this machine's loopback interface.
pub fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The file in a device's state directory or a keeper's directory that holds the hub's pinned fingerprint.
pub const PIN_FILE: &str = "hub-fingerprint";

/// The trust for the hub of a client that keeps state in `dir`: a pinned fingerprint given now is remembered in
/// `dir/hub-fingerprint` (trust on first use: later runs need no flag); a CA file given now is used for this run
/// only; with neither, a remembered fingerprint, else the system's roots.
pub fn remembered(dir: &Path, given: Option<TlsTrust>) -> Result<TlsTrust, ClientError> {
    let path = dir.join(PIN_FILE);
    let io = |e: std::io::Error| ClientError::Tls(format!("{}: {e}", path.display()));
    match given {
        Some(TlsTrust::Pinned(pin)) => {
            let line = format!("{pin}\n");
            if std::fs::read_to_string(&path).ok().as_deref() != Some(line.as_str()) {
                let tmp = dir.join(format!("{PIN_FILE}.tmp"));
                std::fs::write(&tmp, line).map_err(io)?;
                std::fs::rename(&tmp, &path).map_err(io)?;
            }
            Ok(TlsTrust::Pinned(pin))
        }
        Some(other) => Ok(other),
        None => match std::fs::read_to_string(&path) {
            Ok(text) => text
                .parse()
                .map(TlsTrust::Pinned)
                .map_err(|e| ClientError::Tls(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(TlsTrust::System),
            Err(e) => Err(io(e)),
        },
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn fingerprints_parse_and_print() {
        let f = Fingerprint([0xab; 32]);
        let text = f.to_string();
        assert_eq!(text, format!("sha256:{}", "ab".repeat(32)));
        assert_eq!(text.parse::<Fingerprint>().unwrap(), f);
        let colons = format!("SHA256:{}", vec!["AB"; 32].join(":"));
        assert_eq!(colons.parse::<Fingerprint>().unwrap(), f);
        for bad in [
            "",
            "sha256:",
            "ab".repeat(32).as_str(),
            "sha256:abcd",
            "sha1:00",
        ] {
            assert!(bad.parse::<Fingerprint>().is_err(), "{bad}");
        }
    }

    #[test]
    fn plain_http_only_to_loopback() {
        for ok in [
            "https://hub.example",
            "http://127.0.0.1:7180",
            "http://localhost/",
            "http://[::1]:80",
            "http://127.1.2.3",
        ] {
            assert!(check_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://hub.example",
            "http://10.0.0.1:7180",
            "http://[2001:db8::1]:7180",
            "http://localhost.example",
            "http://127.0.0.1.example",
            "ftp://127.0.0.1",
            "127.0.0.1:7180",
        ] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_kind_of_trust_makes_a_config() {
        assert!(TlsTrust::System.client_config().is_ok());
        assert!(
            TlsTrust::Pinned(Fingerprint([1; 32]))
                .client_config()
                .is_ok()
        );
        let none = std::env::temp_dir().join("custos-no-such-ca.pem");
        assert!(matches!(TlsTrust::ca_file(&none), Err(ClientError::Tls(_))));
        assert!(TlsTrust::from_options(Some(&none), Some(Fingerprint([1; 32]))).is_err());
    }

    #[test]
    fn a_pin_is_remembered() {
        let dir = std::env::temp_dir().join(format!("custos-pin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert!(matches!(remembered(&dir, None).unwrap(), TlsTrust::System));
        let pin = Fingerprint([7; 32]);
        remembered(&dir, Some(TlsTrust::Pinned(pin))).unwrap();
        assert!(matches!(remembered(&dir, None).unwrap(), TlsTrust::Pinned(p) if p == pin));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
