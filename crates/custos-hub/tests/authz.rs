//! Who may read what: every read endpoint tried as anonymous, a stranger account, another user without a share,
//! a user with a view share, the owner, an application inside and outside its grant, and the operator.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use axum::body::{Body, to_bytes};
use axum::http::{Request, StatusCode};
use custos_hub::authz::records_scope;
use custos_hub::{Hub, HubKeys, app};
use custos_proto::sharing::{AccessToken, Grant, GrantedTree, SharingRequest};
use custos_proto::{
    Crypto, DeviceId, Epoch, MasterSecret, RustCrypto, Schedule, Secret, Span, TreeSpec, UnixTime,
};
use custos_store::{NewRecord, Rights, Session, SqliteStore, Store};
use sha2::{Digest, Sha256};
use tower::ServiceExt;

const C: RustCrypto = RustCrypto;
const NOW: i64 = 1_782_864_000; // 2026-07-01
const DEV: DeviceId = DeviceId([0x02, 0, 0x5e, 0x10, 0, 0, 0, 1]);
const OTHER: DeviceId = DeviceId([0x02, 0, 0x5e, 0x10, 0, 0, 0, 2]);
const APP: u8 = 1;
const KEEPER: u8 = 2;
const RIVAL: u8 = 4;
const OPERATOR: &str = "operator-token-for-tests";

fn now() -> i64 {
    NOW
}

fn key(b: u8) -> Secret {
    Secret::from_bytes([b; 32])
}

fn t(secs: i64) -> UnixTime {
    UnixTime::new(secs as u64).unwrap()
}

fn day(y: i64, m: u32, d: u32) -> UnixTime {
    UnixTime::from_date(y, m, d).unwrap()
}

fn spec(device: DeviceId) -> TreeSpec {
    TreeSpec::new(
        device,
        Epoch(1),
        Schedule::default(),
        Span::new(day(2026, 1, 1), day(2027, 1, 1)).unwrap(),
    )
    .unwrap()
}

fn week2() -> Span {
    Span::new(day(2026, 3, 8), day(2026, 3, 15)).unwrap()
}

struct Fixture {
    _dir: tempfile::TempDir,
    hub: Arc<Hub<SqliteStore>>,
}

async fn admit(hub: &Hub<SqliteStore>, device: DeviceId) {
    let store = hub.store();
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
                session_key: session_key(device),
                admitted_at: NOW,
                revoked_at: None,
                max_seq: -1,
            },
            NOW,
        )
        .await
        .unwrap();
}

fn session_key(device: DeviceId) -> [u8; 32] {
    [device.0[7]; 32]
}

/// An account with a live session; returns its id and `Bearer <token>`.
async fn account(hub: &Hub<SqliteStore>, name: &str, n: u8) -> (i64, String) {
    let id = hub
        .store()
        .create_account(name, "$argon2id$unused", NOW)
        .await
        .unwrap();
    let raw = [n; 32];
    hub.store()
        .put_session(&Session {
            token_hash: Sha256::digest(raw).into(),
            account: id,
            created_at: NOW,
            expires_at: NOW + 86_400,
            last_used_at: NOW,
        })
        .await
        .unwrap();
    (id, format!("Bearer {}", hex::encode(raw)))
}

/// The days of March 2026, one record each, for both devices; week 2 is days 8 to 14.
async fn records(hub: &Hub<SqliteStore>, device: DeviceId) {
    let s = spec(device);
    let batch: Vec<_> = (1..=31u32)
        .map(|d| NewRecord {
            device,
            seq: u64::from(d),
            epoch: 1,
            leaf: s.leaf_at(day(2026, 3, d)).unwrap(),
            body: vec![d as u8; 40],
            received_at: NOW,
        })
        .collect();
    hub.store().insert_records(&batch).await.unwrap();
    hub.store().touch(device, NOW, "10.0.0.1:1").await.unwrap();
}

struct World {
    f: Fixture,
    owner: String,
    viewer: String,
    other_user: String,
    stranger: String,
}

async fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("hub.db")).await.unwrap();
    let hub = Hub::with_clock(store, HubKeys::generate(), now);
    hub.set_operator_token(OPERATOR);
    admit(&hub, DEV).await;
    admit(&hub, OTHER).await;
    records(&hub, DEV).await;
    records(&hub, OTHER).await;
    let (alice, owner) = account(&hub, "alice", 11).await;
    let (bob, viewer) = account(&hub, "bob", 12).await;
    let (carol, other_user) = account(&hub, "carol", 13).await;
    let (_, stranger) = account(&hub, "mallory", 14).await;
    let s = hub.store();
    s.set_owner(DEV, None, alice, NOW).await.unwrap();
    s.set_owner(OTHER, None, carol, NOW).await.unwrap();
    s.put_share(DEV, bob, Rights::View, NOW).await.unwrap();
    let f = Fixture { _dir: dir, hub };
    // The keeper grants the app week 2 of DEV, through the hub.
    let req = SharingRequest {
        app_key: C.ed25519_public(&key(APP)),
        app_name: "heating-optimizer".into(),
        owner: C.ed25519_public(&key(KEEPER)),
        devices: vec![DEV],
        range: week2(),
        purpose: "energy.optimization".into(),
        purpose_text: "Tune the heating".into(),
        retention: 86_400,
        reply_key: C.x25519_public(&key(3)),
        nonce: [9; 16],
        expires: t(NOW + 86_400),
    }
    .sign(|tbs| C.ed25519_sign(&key(APP), tbs))
    .unwrap();
    let (status, _) = call(&f, "POST", "/v1/requests", None, req.clone()).await;
    assert_eq!(status, StatusCode::CREATED);
    let v = SharingRequest::verify(&C, &req, t(NOW)).unwrap();
    let s = spec(DEV);
    let root = s.root(&C, &MasterSecret::new(key(7))).unwrap();
    let nodes = s
        .cover(week2())
        .unwrap()
        .map(|n| s.derive(&C, &root, n).unwrap())
        .collect();
    let grant = Grant::seal(
        &C,
        &v,
        &[GrantedTree { spec: s, nodes }],
        t(NOW),
        &key(5),
        |tbs| C.ed25519_sign(&key(KEEPER), tbs),
    )
    .unwrap();
    let (status, body) = call(&f, "POST", "/v1/answers", None, grant).await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&body)
    );
    World {
        f,
        owner,
        viewer,
        other_user,
        stranger,
    }
}

async fn call(
    f: &Fixture,
    method: &str,
    path: &str,
    auth: Option<&str>,
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

/// `Authorization: Custos <token>` signed by `by`, naming `owner`, for `scope`, made at `at`.
fn app_token(by: u8, owner: u8, scope: &str, at: i64) -> String {
    let tok = AccessToken {
        owner: C.ed25519_public(&key(owner)),
        scope: scope.into(),
        at: t(at),
    }
    .sign(|tbs| C.ed25519_sign(&key(by), tbs))
    .unwrap();
    format!("Custos {}", hex::encode(tok))
}

fn records_path(device: DeviceId) -> String {
    format!("/v1/devices/{device}/records?epoch=1")
}

/// The days of March whose records a page holds (each record's body is its day, repeated).
fn days(body: &[u8]) -> Vec<u8> {
    json(body)["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| hex::decode(r["record"].as_str().unwrap()).unwrap()[0])
        .collect()
}

#[tokio::test]
async fn records_and_gaps_are_for_the_owner_shares_granted_apps_and_the_operator() {
    let w = world().await;
    let f = &w.f;
    let operator = format!("Bearer {OPERATOR}");
    let app = app_token(APP, APP, &records_scope(DEV), NOW);
    let all: Vec<u8> = (1..=31).collect();
    let cases: [(&str, Option<&str>, StatusCode, StatusCode); 7] = [
        (
            "anonymous",
            None,
            StatusCode::UNAUTHORIZED,
            StatusCode::UNAUTHORIZED,
        ),
        (
            "stranger",
            Some(&w.stranger),
            StatusCode::NOT_FOUND,
            StatusCode::NOT_FOUND,
        ),
        (
            "another user",
            Some(&w.other_user),
            StatusCode::NOT_FOUND,
            StatusCode::NOT_FOUND,
        ),
        (
            "view share",
            Some(&w.viewer),
            StatusCode::OK,
            StatusCode::OK,
        ),
        ("owner", Some(&w.owner), StatusCode::OK, StatusCode::OK),
        ("operator", Some(&operator), StatusCode::OK, StatusCode::OK),
        ("app", Some(&app), StatusCode::OK, StatusCode::UNAUTHORIZED),
    ];
    for (who, auth, records, gaps) in cases {
        let (status, body) = call(f, "GET", &records_path(DEV), auth, vec![]).await;
        assert_eq!(
            status,
            records,
            "{who} reading records: {}",
            String::from_utf8_lossy(&body)
        );
        if status == StatusCode::OK {
            let expected: Vec<u8> = if who == "app" {
                (8..=14).collect()
            } else {
                all.clone()
            };
            assert_eq!(days(&body), expected, "{who}");
        } else {
            assert!(
                !String::from_utf8_lossy(&body).contains("record\""),
                "{who}"
            );
        }
        let path = format!("/v1/devices/{DEV}/gaps");
        let (status, body) = call(f, "GET", &path, auth, vec![]).await;
        assert_eq!(
            status,
            gaps,
            "{who} reading gaps: {}",
            String::from_utf8_lossy(&body)
        );
    }
    // The other user sees their own device, the owner does not; an unknown device looks the same as a hidden one.
    let (status, _) = call(f, "GET", &records_path(OTHER), Some(&w.other_user), vec![]).await;
    assert_eq!(status, StatusCode::OK);
    let (hidden, hidden_body) = call(f, "GET", &records_path(OTHER), Some(&w.owner), vec![]).await;
    let unknown = DeviceId([9; 8]);
    let (none, none_body) = call(f, "GET", &records_path(unknown), Some(&w.owner), vec![]).await;
    assert_eq!(
        (hidden, none),
        (StatusCode::NOT_FOUND, StatusCode::NOT_FOUND)
    );
    assert_eq!(json(&hidden_body)["error"], json(&none_body)["error"]);
    // A bad session or operator token is 401, not a fall-through to anonymous or another scheme.
    for bad in [
        "Bearer 00",
        "Bearer nonsense",
        "Basic YWxpY2U6eA==",
        "Custos zz",
    ] {
        let (status, _) = call(f, "GET", &records_path(DEV), Some(bad), vec![]).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{bad}");
    }
}

#[tokio::test]
async fn an_application_reads_only_inside_its_grant() {
    let w = world().await;
    let f = &w.f;
    let scope = records_scope(DEV);
    // Inside: a narrower query gets the granted part of it; a query outside the grant gets nothing.
    let ok = app_token(APP, APP, &scope, NOW);
    let s = spec(DEV);
    let leaf = |d: u32| s.leaf_at(day(2026, 3, d)).unwrap();
    let path = format!(
        "{}&from_leaf={}&until_leaf={}",
        records_path(DEV),
        leaf(1),
        leaf(10)
    );
    let (status, body) = call(f, "GET", &path, Some(&ok), vec![]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(days(&body), [8, 9]);
    let path = format!(
        "{}&from_leaf={}&until_leaf={}",
        records_path(DEV),
        leaf(20),
        leaf(31)
    );
    let (status, body) = call(f, "GET", &path, Some(&ok), vec![]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(days(&body).is_empty(), "a range outside the grant");
    let path = format!("/v1/devices/{DEV}/records?epoch=2");
    let (status, body) = call(f, "GET", &path, Some(&ok), vec![]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(days(&body).is_empty(), "another epoch");
    // Another device: its own token (right scope) finds nothing granted; the first device's token is for
    // another operation.
    let other = app_token(APP, APP, &records_scope(OTHER), NOW);
    let (status, _) = call(f, "GET", &records_path(OTHER), Some(&other), vec![]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = call(f, "GET", &records_path(OTHER), Some(&ok), vec![]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Expired, from the future, forged (signed by another key than it names), another app's key, the keeper's
    // inbox token.
    let refused = [
        (
            "expired",
            app_token(APP, APP, &scope, NOW - 121),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "future",
            app_token(APP, APP, &scope, NOW + 121),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "forged",
            app_token(RIVAL, APP, &scope, NOW),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "another app",
            app_token(RIVAL, RIVAL, &scope, NOW),
            StatusCode::NOT_FOUND,
        ),
        (
            "inbox token",
            app_token(
                KEEPER,
                KEEPER,
                &custos_hub::sharing::inbox_scope(&C.ed25519_public(&key(KEEPER))),
                NOW,
            ),
            StatusCode::UNAUTHORIZED,
        ),
    ];
    for (what, token, expected) in refused {
        let (status, body) = call(f, "GET", &records_path(DEV), Some(&token), vec![]).await;
        assert_eq!(
            status,
            expected,
            "{what}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    // Apps see no presence, gaps or device list.
    for path in [
        "/v1/presence".to_string(),
        format!("/v1/devices/{DEV}/gaps"),
        "/v1/devices".into(),
    ] {
        let (status, _) = call(f, "GET", &path, Some(&ok), vec![]).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
    }
}

#[tokio::test]
async fn presence_shows_each_caller_its_devices_and_the_operator_all() {
    let w = world().await;
    let f = &w.f;
    let operator = format!("Bearer {OPERATOR}");
    let seen = |body: &[u8]| -> Vec<String> {
        json(body)["devices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["device"].as_str().unwrap().to_string())
            .collect()
    };
    let cases = [
        (&w.owner, vec![DEV.to_string()]),
        (&w.viewer, vec![DEV.to_string()]),
        (&w.other_user, vec![OTHER.to_string()]),
        (&w.stranger, vec![]),
        (&operator, vec![DEV.to_string(), OTHER.to_string()]),
    ];
    for (auth, expected) in cases {
        let (status, body) = call(f, "GET", "/v1/presence", Some(auth), vec![]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(seen(&body), expected, "{auth}");
    }
    let (status, _) = call(f, "GET", "/v1/presence", None, vec![]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // The operator's listing stays the operator's.
    for auth in [None, Some(w.owner.as_str())] {
        let (status, _) = call(f, "GET", "/v1/devices", auth, vec![]).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
}

fn device_token(device: DeviceId, at: i64) -> String {
    let keys = custos_proto::uplink::LinkKeys::derive(&C, &Secret::from_bytes(session_key(device)))
        .unwrap();
    let t = custos_proto::uplink::seal_pairing_wait(&C, &keys, device, at as u64);
    format!("Custos-Device {}", hex::encode(t))
}

#[tokio::test]
async fn the_device_list_is_for_devices_and_the_operator() {
    let w = world().await;
    let f = &w.f;
    f.hub.publish_device_list().await.unwrap();
    let path = format!("/v1/device-list?device={DEV}");
    let operator = format!("Bearer {OPERATOR}");
    let cases = [
        (
            "anonymous",
            "/v1/device-list".to_string(),
            None,
            StatusCode::UNAUTHORIZED,
        ),
        (
            "anonymous, naming a device",
            path.clone(),
            None,
            StatusCode::UNAUTHORIZED,
        ),
        (
            "owner account",
            path.clone(),
            Some(w.owner.clone()),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "the device",
            path.clone(),
            Some(device_token(DEV, NOW)),
            StatusCode::OK,
        ),
        (
            "another device's token",
            path.clone(),
            Some(device_token(OTHER, NOW)),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "a stale token",
            path.clone(),
            Some(device_token(DEV, NOW - 121)),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "the operator",
            "/v1/device-list".into(),
            Some(operator),
            StatusCode::OK,
        ),
    ];
    for (who, path, auth, expected) in cases {
        let (status, body) = call(f, "GET", &path, auth.as_deref(), vec![]).await;
        assert_eq!(
            status,
            expected,
            "{who}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    // A revoked device still gets the list that leaves it out.
    f.hub.store().revoke(DEV, NOW).await.unwrap();
    f.hub.publish_device_list().await.unwrap();
    let (status, _) = call(f, "GET", &path, Some(&device_token(DEV, NOW)), vec![]).await;
    assert_eq!(status, StatusCode::OK);
}
