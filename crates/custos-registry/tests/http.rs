//! Bad input on every endpoint of the registry's HTTP API: each gets a JSON error with the right status, no panic,
//! and nothing is logged; bodies over an endpoint's limit are refused; a private domain is served to nobody.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use axum::body::{Body, to_bytes};
use axum::http::{Request, StatusCode};
use custos_registry::cert::{self, Claims, Ed25519Key};
use custos_registry::policy::policy_toml;
use custos_registry::{Policy, Registry};
use custos_store::SqliteStore;
use tower::ServiceExt;

const AT: u32 = 1_780_000_000;

async fn call(
    app: &axum::Router,
    method: &str,
    uri: &str,
    ctype: &str,
    body: Vec<u8>,
) -> (StatusCode, serde_json::Value) {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", ctype)
        .body(Body::from(body))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = to_bytes(resp.into_body(), usize::MAX).await.unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    )
}

#[tokio::test]
async fn bad_input_gets_json_errors_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let maker = Ed25519Key::from_seed(&[1; 32], AT).unwrap();
    let policy = Policy::parse(&policy_toml(
        "t",
        "public",
        &[("acme", &maker.fingerprint(), &["manufacturer"])],
        &[
            ("public", &["*"], &["acme"]),
            ("private", &["acme"], &["acme"]),
        ],
    ))
    .unwrap();
    let store = SqliteStore::open(&dir.path().join("r.db")).await.unwrap();
    let r = Arc::new(
        Registry::open(store, policy, custos_proto::Secret::from_bytes([2; 32]))
            .await
            .unwrap(),
    );
    r.submit_certs(
        &cert::to_bytes(&cert::party_certificate(&maker, "Acme").unwrap()).unwrap(),
        None,
        AT as u64,
    )
    .await
    .unwrap();
    // A device certificate in the private domain.
    let identity = Ed25519Key::from_seed(&[7; 32], AT).unwrap();
    let mut dev = cert::device_certificate(
        &identity,
        custos_proto::DeviceId([2, 0, 0, 0, 0, 0, 0, 9]),
        [9; 32],
    )
    .unwrap();
    let sig = cert::certify(
        &maker,
        &dev,
        &Claims {
            role: "manufacturer".into(),
            attributes: vec![],
        },
        AT,
    )
    .unwrap();
    dev.details.users[0].signatures.push(sig);
    r.submit_certs(&cert::to_bytes(&dev).unwrap(), Some("private"), AT as u64)
        .await
        .unwrap();
    let size = r.size().await;
    let app = custos_registry::http::app(r.clone());
    let other = Ed25519Key::from_seed(&[8; 32], AT).unwrap();
    let mut fresh = cert::device_certificate(
        &other,
        custos_proto::DeviceId([2, 0, 0, 0, 0, 0, 0, 10]),
        [10; 32],
    )
    .unwrap();
    let sig = cert::certify(
        &maker,
        &fresh,
        &Claims {
            role: "manufacturer".into(),
            attributes: vec![],
        },
        AT,
    )
    .unwrap();
    fresh.details.users[0].signatures.push(sig);
    let fpr = hex::encode_upper(identity.fingerprint());

    let octet = "application/octet-stream";
    let form = "application/x-www-form-urlencoded";
    let cases: Vec<(&str, String, &str, Vec<u8>, StatusCode)> = vec![
        (
            "POST",
            "/registry/v1/certs".into(),
            octet,
            b"not openpgp".to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "POST",
            "/registry/v1/certs".into(),
            octet,
            vec![0x99, 0xff, 0xff],
            StatusCode::BAD_REQUEST,
        ),
        (
            "POST",
            "/registry/v1/certs?domain=nope".into(),
            octet,
            cert::to_bytes(&fresh).unwrap(),
            StatusCode::FORBIDDEN,
        ),
        (
            "POST",
            "/registry/v1/certs".into(),
            octet,
            vec![0; (1 << 20) + 1],
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            "POST",
            "/registry/v1/statements".into(),
            octet,
            vec![0x84, 0x40, 0xa0, 0x40, 0x40],
            StatusCode::BAD_REQUEST,
        ),
        (
            "POST",
            "/registry/v1/statements".into(),
            octet,
            vec![0xff; 5000],
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            "POST",
            "/pks/add".into(),
            form,
            b"keytext=garbage".to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "POST",
            "/pks/add".into(),
            form,
            b"nokeytext=1".to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "POST",
            "/pks/add".into(),
            octet,
            b"keytext=x".to_vec(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            "GET",
            "/pks/lookup".into(),
            octet,
            vec![],
            StatusCode::BAD_REQUEST,
        ),
        (
            "GET",
            "/pks/lookup?op=explode&search=x".into(),
            octet,
            vec![],
            StatusCode::NOT_IMPLEMENTED,
        ),
        (
            "GET",
            format!("/pks/lookup?op=get&search=0x{}", "A".repeat(300)),
            octet,
            vec![],
            StatusCode::BAD_REQUEST,
        ),
        (
            "GET",
            format!("/pks/lookup?op=get&options=mr&search=0x{fpr}"),
            octet,
            vec![],
            StatusCode::NOT_FOUND,
        ),
        (
            "GET",
            format!("/registry/v1/certs/{fpr}"),
            octet,
            vec![],
            StatusCode::NOT_FOUND,
        ),
        (
            "GET",
            "/registry/v1/certs/zz".into(),
            octet,
            vec![],
            StatusCode::BAD_REQUEST,
        ),
        (
            "GET",
            "/registry/v1/status/00".into(),
            octet,
            vec![],
            StatusCode::BAD_REQUEST,
        ),
        (
            "GET",
            "/registry/v1/proof/inclusion?index=99&size=3".into(),
            octet,
            vec![],
            StatusCode::BAD_REQUEST,
        ),
        (
            "GET",
            "/registry/v1/proof/inclusion?index=x".into(),
            octet,
            vec![],
            StatusCode::BAD_REQUEST,
        ),
        (
            "GET",
            format!("/registry/v1/proof/consistency?from=1&to={}", size + 5),
            octet,
            vec![],
            StatusCode::BAD_REQUEST,
        ),
        (
            "GET",
            "/registry/v1/sync?from=0&to=1&domains=private".into(),
            octet,
            vec![],
            StatusCode::FORBIDDEN,
        ),
        (
            "GET",
            "/registry/v1/sync?from=0&to=999&domains=public".into(),
            octet,
            vec![],
            StatusCode::BAD_REQUEST,
        ),
        (
            "GET",
            "/registry/v1/devices/not-a-device".into(),
            octet,
            vec![],
            StatusCode::BAD_REQUEST,
        ),
        (
            "GET",
            "/registry/v1/entries?from=x".into(),
            octet,
            vec![],
            StatusCode::BAD_REQUEST,
        ),
        (
            "DELETE",
            "/registry/v1/checkpoint".into(),
            octet,
            vec![],
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            "GET",
            "/no/such/path".into(),
            octet,
            vec![],
            StatusCode::NOT_FOUND,
        ),
    ];
    for (method, uri, ctype, body, want) in cases {
        let (status, json) = call(&app, method, &uri, ctype, body).await;
        assert_eq!(status, want, "{method} {uri}: {json}");
        assert!(
            json["error"].is_string() && json["message"].is_string(),
            "{method} {uri}: not a JSON error: {json}"
        );
    }
    assert_eq!(r.size().await, size, "nothing was logged");
    // The private certificate is not listed among the entries either.
    let (status, json) = call(&app, "GET", "/registry/v1/entries?from=0", octet, vec![]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json["entries"].as_array().unwrap().len() as u64, size - 1);
}
