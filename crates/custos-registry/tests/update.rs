//! A device's update check against a real registry, and against a registry that lies: it shows a code identity
//! the developer signed but that was never logged, or serves another log's checkpoint. The device checks the
//! signature and the inclusion proof itself, so neither lie gets an image installed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use axum::Json;
use axum::routing::get;
use base64::Engine as _;
use custos_client::HubClient;
use custos_registry::cert::{self, Ed25519Key};
use custos_registry::policy::policy_toml;
use custos_registry::statement::{Statement, Status};
use custos_registry::update::{UpdateError, check_update};
use custos_registry::{Policy, Registry};
use custos_store::SqliteStore;

const AT: u32 = 1_780_000_000;
const NOW: u64 = AT as u64 + 100;

fn digest(image: &[u8]) -> [u8; 32] {
    <sha2::Sha256 as sha2::Digest>::digest(image).into()
}

fn code(dev: &Ed25519Key, image: &[u8], version: &str) -> Vec<u8> {
    Statement::Code {
        signer: dev.fingerprint(),
        digest: digest(image),
        issued_at: NOW,
        name: "fw".into(),
        version: version.into(),
        domain: "firmware".into(),
    }
    .sign(dev)
    .unwrap()
}

async fn serve(router: axum::Router) -> HubClient {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    HubClient::new(
        &url,
        std::time::Duration::from_secs(10),
        &Default::default(),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_logged_undeprecated_code_of_a_trusted_developer_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Ed25519Key::from_seed(&[3; 32], AT).unwrap();
    let other = Ed25519Key::from_seed(&[4; 32], AT).unwrap();
    let policy = Policy::parse(&policy_toml(
        "developer",
        "firmware",
        &[
            ("devco", &dev.fingerprint(), &["developer"]),
            ("other", &other.fingerprint(), &["developer"]),
        ],
        &[("firmware", &["*"], &["devco", "other"])],
    ))
    .unwrap();
    let store = SqliteStore::open(&dir.path().join("r.db")).await.unwrap();
    let r = Arc::new(
        Registry::open(store, policy, custos_proto::Secret::from_bytes([7; 32]))
            .await
            .unwrap(),
    );
    let party =
        |k: &Ed25519Key, uid: &str| cert::check(cert::party_certificate(k, uid).unwrap()).unwrap();
    let (dev_cert, other_cert) = (party(&dev, "DevCo"), party(&other, "Other"));
    for c in [&dev_cert, &other_cert] {
        r.submit_certs(&cert::to_bytes(&c.cert).unwrap(), None, NOW)
            .await
            .unwrap();
    }
    let key = r.verifier_key().unwrap();
    r.submit_statement(&code(&dev, b"fw 1", "1"), NOW)
        .await
        .unwrap();
    r.submit_statement(&code(&other, b"fw other", "9"), NOW)
        .await
        .unwrap();
    let http = serve(custos_registry::http::app(r.clone())).await;
    let trusted = [dev_cert.clone()];

    let ok = check_update(&http, &key, &trusted, b"fw 1").await.unwrap();
    assert_eq!((ok.name.as_str(), ok.version.as_str()), ("fw", "1"));
    // Signed by a developer this device does not trust.
    assert!(matches!(
        check_update(&http, &key, &trusted, b"fw other").await,
        Err(UpdateError::Unknown(_))
    ));
    // An image nobody signed.
    assert!(matches!(
        check_update(&http, &key, &trusted, b"fw 1!").await,
        Err(UpdateError::Unknown(_))
    ));
    // The checkpoint of this registry under another log key.
    let wrong = Registry::open(
        SqliteStore::open(&dir.path().join("w.db")).await.unwrap(),
        Policy::parse("name = \"developer\"\ndefault_domain = \"x\"\n[[domain]]\nname = \"x\"\nread = [\"*\"]\nwrite = []\n").unwrap(),
        custos_proto::Secret::from_bytes([8; 32]),
    )
    .await
    .unwrap()
    .verifier_key()
    .unwrap();
    assert!(matches!(
        check_update(&http, &wrong, &trusted, b"fw 1").await,
        Err(UpdateError::Evidence(_))
    ));

    // A lying registry: it shows a code identity the developer did sign (it leaked, say) but that is not in the
    // log, claiming it is entry 2; everything else is the real registry's.
    let leaked = code(&dev, b"fw backdoor", "1.1");
    let lie = serde_json::json!({
        "identities": [{
            "index": 2, "statement": base64::engine::general_purpose::STANDARD.encode(&leaked),
            "added_at": NOW, "entry_domain": "firmware",
        }],
        "status": null,
    });
    let liar = axum::Router::new()
        .route(
            "/registry/v1/code/{digest}",
            get(move || {
                let lie = lie.clone();
                async move { Json(lie) }
            }),
        )
        .fallback_service(custos_registry::http::app(r.clone()));
    let lying = serve(liar).await;
    let e = check_update(&lying, &key, &trusted, b"fw backdoor").await;
    assert!(matches!(e, Err(UpdateError::Evidence(_))), "{e:?}");

    // Deprecated: refused from then on.
    let status = Statement::Status {
        signer: dev.fingerprint(),
        subject: digest(b"fw 1").to_vec(),
        issued_at: NOW + 1,
        status: Status::Deprecated,
        domain: "firmware".into(),
        note: "CVE".into(),
    };
    r.submit_statement(&status.sign(&dev).unwrap(), NOW + 1)
        .await
        .unwrap();
    assert!(matches!(
        check_update(&http, &key, &trusted, b"fw 1").await,
        Err(UpdateError::Deprecated(..))
    ));
}
