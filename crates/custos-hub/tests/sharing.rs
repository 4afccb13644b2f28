//! The sharing broker over HTTP: what it takes from applications and keepers, and what it refuses.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use axum::body::{Body, to_bytes};
use axum::http::{Request, StatusCode};
use custos_hub::sharing::inbox_scope;
use custos_hub::{Hub, HubKeys, app};
use custos_proto::sharing::{AccessToken, Denial, Grant, GrantedTree, SharingRequest};
use custos_proto::{
    Crypto, DeviceId, Epoch, MasterSecret, RustCrypto, Schedule, Secret, Span, TreeSpec, UnixTime,
};
use custos_store::{SqliteStore, Store};
use tower::ServiceExt;

const C: RustCrypto = RustCrypto;
const NOW: i64 = 1_782_864_000; // 2026-07-01
const DEV: DeviceId = DeviceId([0x02, 0, 0x5e, 0x10, 0, 0, 0, 1]);
const APP: u8 = 1;
const KEEPER: u8 = 2;

fn now() -> i64 {
    NOW
}

fn key(b: u8) -> Secret {
    Secret::from_bytes([b; 32])
}

fn signer(b: u8) -> impl FnOnce(&[u8]) -> [u8; 64] {
    move |tbs| C.ed25519_sign(&key(b), tbs)
}

fn t(secs: i64) -> UnixTime {
    UnixTime::new(secs as u64).unwrap()
}

fn day(y: i64, m: u32, d: u32) -> UnixTime {
    UnixTime::from_date(y, m, d).unwrap()
}

fn owner() -> [u8; 32] {
    C.ed25519_public(&key(KEEPER))
}

fn request(nonce: u8) -> SharingRequest {
    SharingRequest {
        app_key: C.ed25519_public(&key(APP)),
        app_name: "heating-optimizer".into(),
        owner: owner(),
        devices: vec![DEV],
        range: Span::new(day(2026, 3, 8), day(2026, 3, 15)).unwrap(),
        purpose: "energy.optimization".into(),
        purpose_text: "Tune the heating".into(),
        retention: 86_400,
        reply_key: C.x25519_public(&key(3)),
        nonce: [nonce; 16],
        expires: t(NOW + 86_400),
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    hub: Arc<Hub<SqliteStore>>,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("hub.db")).await.unwrap();
    Fixture {
        hub: Hub::with_clock(store, HubKeys::generate(), now),
        _dir: dir,
    }
}

async fn call(
    f: &Fixture,
    method: &str,
    path: &str,
    auth: Option<String>,
    body: Vec<u8>,
) -> (StatusCode, Vec<u8>) {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    let resp = app(f.hub.clone())
        .oneshot(req.body(Body::from(body)).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    (
        status,
        to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap()
            .to_vec(),
    )
}

fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body).unwrap_or_default()
}

fn token(by: u8, owner: [u8; 32], scope: &str, at: i64) -> String {
    let tok = AccessToken {
        owner,
        scope: scope.into(),
        at: t(at),
    }
    .sign(signer(by))
    .unwrap();
    format!("Custos {}", hex::encode(tok))
}

fn inbox_path() -> String {
    format!("/v1/owners/{}/inbox", hex::encode(owner()))
}

async fn inbox_ids(f: &Fixture) -> Vec<String> {
    let (status, body) = call(
        f,
        "GET",
        &inbox_path(),
        Some(token(KEEPER, owner(), &inbox_scope(&owner()), NOW)),
        vec![],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    json(&body)["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn the_hub_stores_only_well_signed_live_requests() {
    let f = fixture().await;
    let signed = request(1).sign(signer(APP)).unwrap();
    let (status, body) = call(&f, "POST", "/v1/requests", None, signed.clone()).await;
    assert_eq!(status, StatusCode::CREATED);
    let id = json(&body)["id"].as_str().unwrap().to_string();
    let (status, _) = call(&f, "POST", "/v1/requests", None, signed).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "a resent request is not stored twice"
    );

    let forged = request(2).sign(signer(9)).unwrap();
    assert_eq!(
        call(&f, "POST", "/v1/requests", None, forged).await.0,
        StatusCode::UNAUTHORIZED
    );
    let mut old = request(3);
    old.expires = t(NOW - 1);
    let old = old.sign(signer(APP)).unwrap();
    let (status, body) = call(&f, "POST", "/v1/requests", None, old).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(json(&body)["message"].as_str().unwrap().contains("expired"));
    for junk in [vec![], b"hello".to_vec(), vec![0x84; 40]] {
        let (status, body) = call(&f, "POST", "/v1/requests", None, junk).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(json(&body)["error"], "bad_request");
    }
    assert_eq!(inbox_ids(&f).await, vec![id]);
}

#[tokio::test]
async fn only_the_owners_keeper_reads_its_inbox() {
    let f = fixture().await;
    let signed = request(1).sign(signer(APP)).unwrap();
    call(&f, "POST", "/v1/requests", None, signed).await;
    let scope = inbox_scope(&owner());
    let refused = [
        None,
        Some("Bearer abc".to_string()),
        Some("Custos nothex".to_string()),
        Some(token(9, owner(), &scope, NOW)), // another key
        Some(token(9, C.ed25519_public(&key(9)), &scope, NOW)), // another owner's token
        Some(token(KEEPER, owner(), "POST /v1/answers", NOW)), // another operation
        Some(token(KEEPER, owner(), &scope, NOW - 600)), // a captured old token
    ];
    for auth in refused {
        let (status, body) = call(&f, "GET", &inbox_path(), auth.clone(), vec![]).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{auth:?}");
        assert!(json(&body)["requests"].is_null(), "{auth:?} read the inbox");
    }
    assert_eq!(inbox_ids(&f).await.len(), 1);
}

fn grant(req: &[u8], by: u8) -> Vec<u8> {
    let v = SharingRequest::verify(&C, req, t(NOW)).unwrap();
    let spec = TreeSpec::new(
        DEV,
        Epoch(1),
        Schedule::default(),
        Span::new(day(2026, 1, 1), day(2027, 1, 1)).unwrap(),
    )
    .unwrap();
    let root = spec.root(&C, &MasterSecret::new(key(7))).unwrap();
    let nodes = spec
        .cover(v.request.range)
        .unwrap()
        .map(|n| spec.derive(&C, &root, n).unwrap())
        .collect();
    Grant::seal(
        &C,
        &v,
        &[GrantedTree { spec, nodes }],
        t(NOW),
        &key(5),
        signer(by),
    )
    .unwrap()
}

#[tokio::test]
async fn answers_come_only_from_the_owner_and_are_final() {
    let f = Arc::new(fixture().await);
    let req = request(1).sign(signer(APP)).unwrap();
    let (_, body) = call(&f, "POST", "/v1/requests", None, req.clone()).await;
    let id = json(&body)["id"].as_str().unwrap().to_string();
    let answer_path = format!("/v1/requests/{id}/answer");
    let (status, body) = call(&f, "GET", &answer_path, None, vec![]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(json(&body)["error"], "not_answered");
    let (status, body) = call(
        &f,
        "GET",
        &format!("/v1/requests/{}/answer", "ab".repeat(32)),
        None,
        vec![],
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(json(&body)["error"], "not_found");

    // Someone other than the owner answers: refused.
    let (status, _) = call(&f, "POST", "/v1/answers", None, grant(&req, 9)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // A request is not an answer; junk is junk.
    assert_eq!(
        call(&f, "POST", "/v1/answers", None, req.clone()).await.0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        call(&f, "POST", "/v1/answers", None, b"x".to_vec()).await.0,
        StatusCode::BAD_REQUEST
    );

    // The application waits; the keeper answers meanwhile.
    let waiting = {
        let f = f.clone();
        let path = format!("{answer_path}?wait=10");
        tokio::spawn(async move { call(&f, "GET", &path, None, vec![]).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let good = grant(&req, KEEPER);
    assert_eq!(
        call(&f, "POST", "/v1/answers", None, good.clone()).await.0,
        StatusCode::CREATED
    );
    let (status, body) = waiting.await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, good);

    // Answers are final: a later denial does not replace the grant.
    let v = SharingRequest::verify(&C, &req, t(NOW)).unwrap();
    let denial = Denial {
        request: v.id,
        issued_at: t(NOW),
        reason: "changed my mind".into(),
    }
    .sign(signer(KEEPER))
    .unwrap();
    let (status, body) = call(&f, "POST", "/v1/answers", None, denial).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(json(&body)["error"], "conflict");
    assert_eq!(call(&f, "GET", &answer_path, None, vec![]).await.1, good);
    assert!(
        inbox_ids(&f).await.is_empty(),
        "an answered request stays in the inbox"
    );
    assert_eq!(
        call(&f, "GET", "/v1/requests/abcd/answer", None, vec![])
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
}

/// A serving hub drops what nobody can use any more: here, a request that expired long ago, at start-up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_serving_hub_purges_long_expired_requests() {
    use custos_store::{Store, StoredRequest};
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("hub")).unwrap();
    let db = dir.path().join("hub/hub.db");
    let store = SqliteStore::open(&db).await.unwrap();
    for (id, expires_at) in [(1u8, 1_000), (2, i64::MAX)] {
        store
            .put_request(&StoredRequest {
                seq: 0,
                id: [id; 32],
                owner: [7; 32],
                signed: vec![id; 10],
                received_at: 0,
                expires_at,
            })
            .await
            .unwrap();
    }
    store.close().await;
    let hub = custos_hub::serve::spawn(custos_hub::serve::ServeConfig {
        registry: None,
        data_dir: dir.path().join("hub"),
        listen: "127.0.0.1:0".parse().unwrap(),
        database: None,
        mqtt: None,
        accounts: Default::default(),
        limits: Default::default(),
        // Plain HTTP on loopback: the TLS paths have their own tests (custos-hub tests/tls.rs, the CLI tests).
        tls: custos_hub::serve::HubTls::Plain,
    })
    .await
    .unwrap();
    let store = SqliteStore::open(&db).await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while store.request([1; 32]).await.unwrap().is_some() {
        assert!(
            std::time::Instant::now() < deadline,
            "the expired request was kept"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        store.request([2; 32]).await.unwrap().is_some(),
        "a live request was purged"
    );
    store.close().await;
    hub.stop().await.unwrap();
}

/// Admits `device` straight in the store, with a known session key.
async fn admitted(f: &Fixture, device: DeviceId, session_key: [u8; 32]) {
    let store = f.hub.store();
    store
        .put_admission(&custos_store::PendingAdmission {
            device,
            join_code: [1; 16],
            created_at: NOW,
            expires_at: NOW + 600,
        })
        .await
        .unwrap();
    store
        .complete_admission(
            &custos_store::Device {
                device,
                static_key: [2; 32],
                session_key,
                admitted_at: NOW,
                revoked_at: None,
                max_seq: -1,
            },
            NOW,
        )
        .await
        .unwrap();
}

fn wait_token(session_key: [u8; 32], device: DeviceId, at: i64) -> String {
    let keys =
        custos_proto::uplink::LinkKeys::derive(&C, &Secret::from_bytes(session_key)).unwrap();
    let t = custos_proto::uplink::seal_pairing_wait(&C, &keys, device, at as u64);
    format!("Custos-Device {}", hex::encode(t))
}

#[tokio::test]
async fn the_relay_takes_messages_only_for_devices_that_wait_for_their_keeper() {
    let f = fixture().await;
    let to_device = format!("/v1/pairing/{DEV}/to-device");
    let to_keeper = format!("/v1/pairing/{DEV}/to-keeper");
    // A device that does not exist, then one that exists but does not wait: nothing is kept.
    for path in [&to_device, &to_keeper] {
        let (status, _) = call(&f, "POST", path, None, vec![0x22; 49]).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}");
    }
    let sk = [7u8; 32];
    admitted(&f, DEV, sk).await;
    let (status, _) = call(&f, "POST", &to_device, None, vec![0x22; 49]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Reading without a token is allowed and opens nothing; forged, foreign and stale tokens are refused.
    let (status, _) = call(&f, "GET", &to_device, None, vec![]).await;
    assert_eq!(status, StatusCode::OK);
    let mut other = DEV;
    other.0[7] ^= 1;
    for bad in [
        wait_token([8; 32], DEV, NOW),
        wait_token(sk, other, NOW),
        wait_token(sk, DEV, NOW - 600),
        wait_token(sk, DEV, NOW + 600),
        "Custos-Device zz".into(),
        "Custos 00".into(),
    ] {
        let (status, _) = call(&f, "GET", &to_device, Some(bad.clone()), vec![]).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{bad}");
    }
    let (status, _) = call(&f, "POST", &to_device, None, vec![0x22; 49]).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "no window was opened");

    // The device waits: both mailboxes take messages, at most MAILBOX_BYTES of the newest.
    let (status, _) = call(
        &f,
        "GET",
        &to_device,
        Some(wait_token(sk, DEV, NOW)),
        vec![],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    for i in 0..6u8 {
        for path in [&to_device, &to_keeper] {
            let (status, body) = call(
                &f,
                "POST",
                path,
                None,
                vec![i; custos_hub::sharing::MAX_RELAYED],
            )
            .await;
            assert_eq!(
                status,
                StatusCode::CREATED,
                "{path}: {}",
                String::from_utf8_lossy(&body)
            );
        }
    }
    let (_, body) = call(&f, "GET", &to_keeper, None, vec![]).await;
    let kept: Vec<u8> = json(&body)["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| hex::decode(m["body"].as_str().unwrap()).unwrap()[0])
        .collect();
    let fit = (custos_hub::sharing::MAILBOX_BYTES / custos_hub::sharing::MAX_RELAYED as u64) as u8;
    assert_eq!(
        kept,
        (6 - fit..6).collect::<Vec<u8>>(),
        "the newest that fit"
    );

    // A revoked device's window is shut.
    f.hub.store().revoke(DEV, NOW).await.unwrap();
    let (status, _) = call(&f, "POST", &to_device, None, vec![0x22; 49]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = call(
        &f,
        "GET",
        &to_device,
        Some(wait_token(sk, DEV, NOW)),
        vec![],
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn an_owner_flooded_with_requests_costs_the_hub_a_bounded_amount() {
    let f = fixture().await;
    let quota = custos_hub::sharing::MAX_OPEN_PER_OWNER;
    for i in 0..quota {
        let mut r = request(0);
        r.nonce[..8].copy_from_slice(&i.to_be_bytes());
        let (status, body) = call(
            &f,
            "POST",
            "/v1/requests",
            None,
            r.sign(signer(APP)).unwrap(),
        )
        .await;
        assert_eq!(
            status,
            StatusCode::CREATED,
            "{i}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    let mut r = request(0);
    r.nonce = [0xee; 16];
    let over = r.sign(signer(APP)).unwrap();
    let (status, body) = call(&f, "POST", "/v1/requests", None, over).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(json(&body)["error"], "quota");
    // A request already held is still acknowledged (a retry), and other owners are not affected.
    let mut first = request(0);
    first.nonce[..8].copy_from_slice(&0u64.to_be_bytes());
    let (status, _) = call(
        &f,
        "POST",
        "/v1/requests",
        None,
        first.sign(signer(APP)).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let mut other = request(1);
    other.owner = C.ed25519_public(&key(0x55));
    let (status, _) = call(
        &f,
        "POST",
        "/v1/requests",
        None,
        other.sign(signer(APP)).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(
        f.hub.store().open_requests(None, NOW).await.unwrap(),
        quota + 1
    );
}
