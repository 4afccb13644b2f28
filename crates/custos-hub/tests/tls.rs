//! The hub over HTTPS, on a real hub over loopback sockets: a client trusts it through a CA file or the pinned
//! fingerprint of its self-signed certificate, and is refused with a wrong pin or no trust at all; a TLS
//! handshake that dribbles is cut at the header timeout, and connections in their handshake count against the
//! per-client cap.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::time::{Duration, Instant};

use custos_client::{ClientError, Fingerprint, HubClient, TlsTrust};
use custos_hub::serve::{HubTls, Limits, Running, ServeConfig, spawn};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// The longest any one test may run.
const BOUND: Duration = Duration::from_secs(30);

async fn start(dir: &Path, tls: HubTls, limits: Limits) -> Running {
    spawn(ServeConfig {
        registry: None,
        data_dir: dir.join("hub"),
        listen: "127.0.0.1:0".parse().unwrap(),
        database: None,
        mqtt: None,
        limits,
        tls,
        accounts: Default::default(),
    })
    .await
    .unwrap()
}

/// A CA (its certificate written to `dir/ca.pem`) and a certificate it issued for 127.0.0.1 and localhost
/// (`dir/leaf.pem`, `dir/leaf.key`).
fn issue(dir: &Path) {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Custos test CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap())
        .unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.join("leaf.pem"), leaf.pem()).unwrap();
    std::fs::write(dir.join("leaf.key"), leaf_key.serialize_pem()).unwrap();
}

async fn health(url: &str, trust: &TlsTrust) -> Result<Vec<u8>, ClientError> {
    HubClient::new(url, Duration::from_secs(5), trust)?
        .get("/healthz", None)
        .await
}

#[tokio::test]
async fn a_ca_file_or_the_pinned_fingerprint_is_trusted_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    issue(dir.path());
    let hub = start(
        dir.path(),
        HubTls::Files {
            cert: dir.path().join("leaf.pem"),
            key: dir.path().join("leaf.key"),
        },
        Limits::default(),
    )
    .await;
    let url = hub.url();
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    timeout(BOUND, async {
        let ca = TlsTrust::ca_file(&dir.path().join("ca.pem")).unwrap();
        health(&url, &ca).await.unwrap();
        // The same certificate, pinned.
        health(&url, &hub.trust()).await.unwrap();
        // The leaf is no CA: trusting it as one does not make it trusted.
        let leaf_as_ca = TlsTrust::ca_file(&dir.path().join("leaf.pem")).unwrap();
        assert!(matches!(
            health(&url, &leaf_as_ca).await,
            Err(ClientError::Tls(_))
        ));
    })
    .await
    .unwrap();
    hub.stop().await.unwrap();
}

#[tokio::test]
async fn the_self_signed_certificate_needs_its_pin() {
    let dir = tempfile::tempdir().unwrap();
    let hub = start(dir.path(), HubTls::SelfSigned, Limits::default()).await;
    let url = hub.url();
    let pin = hub.fingerprint.unwrap();
    // The fingerprint is the SHA-256 of the certificate kept in the data directory.
    let pem = std::fs::read(dir.path().join("hub/tls.crt")).unwrap();
    let der = rustls_pki_types_der(&pem);
    assert_eq!(Fingerprint::of(&der), pin);
    timeout(BOUND, async {
        health(&url, &TlsTrust::Pinned(pin)).await.unwrap();
        let mut wrong = pin;
        wrong.0[0] ^= 1;
        match health(&url, &TlsTrust::Pinned(wrong)).await {
            Err(ClientError::Tls(why)) => assert!(why.contains("not the pinned"), "{why}"),
            other => panic!("a wrong pin was accepted: {other:?}"),
        }
        // The system's roots know nothing of it (where the machine has roots at all).
        match health(&url, &TlsTrust::System).await {
            Err(ClientError::Tls(_)) => {}
            other => panic!("a self-signed hub was trusted without a pin: {other:?}"),
        }
        // Plain HTTP to an HTTPS hub gets nothing.
        let plain = url.replace("https://", "http://");
        assert!(health(&plain, &TlsTrust::System).await.is_err());
    })
    .await
    .unwrap();
    hub.stop().await.unwrap();
    // A restart serves the same certificate.
    let again = start(dir.path(), HubTls::SelfSigned, Limits::default()).await;
    assert_eq!(again.fingerprint, Some(pin));
    again.stop().await.unwrap();
}

fn rustls_pki_types_der(pem: &[u8]) -> Vec<u8> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject as _;
    CertificateDer::from_pem_slice(pem).unwrap().to_vec()
}

/// Reads until the peer closes (or resets) the connection.
async fn closed(stream: &mut TcpStream) {
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

#[tokio::test]
async fn a_slow_tls_handshake_is_cut_at_the_header_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let hub = start(
        dir.path(),
        HubTls::SelfSigned,
        Limits {
            header_timeout: Duration::from_secs(1),
            ..Default::default()
        },
    )
    .await;
    timeout(BOUND, async {
        let stream = TcpStream::connect(hub.addr).await.unwrap();
        let (mut read, mut write) = stream.into_split();
        let started = Instant::now();
        // Slowloris on TLS: the start of a ClientHello record, one byte every 100 ms, never complete.
        let drip = tokio::spawn(async move {
            for b in [0x16u8, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc]
                .into_iter()
                .chain(std::iter::repeat(0))
            {
                if write.write_all(&[b]).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        let mut buf = [0u8; 64];
        loop {
            match read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        let took = started.elapsed();
        drip.abort();
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_secs(4),
            "closed after {took:?}"
        );
        // The hub still serves.
        health(&hub.url(), &hub.trust()).await.unwrap();
    })
    .await
    .unwrap();
    hub.stop().await.unwrap();
}

#[tokio::test]
async fn connections_in_their_handshake_count_against_the_client_cap() {
    let dir = tempfile::tempdir().unwrap();
    let hub = start(
        dir.path(),
        HubTls::SelfSigned,
        Limits {
            header_timeout: Duration::from_secs(3),
            max_connections_per_client: 2,
            ..Default::default()
        },
    )
    .await;
    timeout(BOUND, async {
        // Two connections that never start their handshake hold the client's two slots...
        let _a = TcpStream::connect(hub.addr).await.unwrap();
        let _b = TcpStream::connect(hub.addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        // ... so a third is closed at once, long before the handshake timeout.
        let started = Instant::now();
        let mut c = TcpStream::connect(hub.addr).await.unwrap();
        closed(&mut c).await;
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        // Once the stalled ones are cut at the timeout, the client is served again.
        tokio::time::sleep(Duration::from_secs(4)).await;
        health(&hub.url(), &hub.trust()).await.unwrap();
    })
    .await
    .unwrap();
    hub.stop().await.unwrap();
}
