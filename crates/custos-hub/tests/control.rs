//! Owner control driven without a socket: the claim flow with a real claim proof, who may call what (strangers,
//! shared accounts, forged device tokens), the queue bound, expiry, answers once, shares and transfers, the
//! heartbeat; and the MQTT downlink and answers against the real broker (127.0.0.1:1883, a random topic prefix).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::cell::Cell;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, to_bytes};
use axum::http::{Request, StatusCode};
use common::link;
use custos_hub::{AccountConfig, Hub, HubKeys, PasswordCost, app};
use custos_proto::control::{
    CommandHeader, Member, Op, OwnerKeys, RIGHT_CONTROL, open_claim, seal_claim, seal_command,
    seal_list,
};
use custos_proto::uplink::seal_claim_proof;
use custos_proto::{DeviceId, RustCrypto, Secret, Suite};
use custos_store::{SqliteStore, Store};
use serde_json::{Value, json};
use tower::ServiceExt;

const C: RustCrypto = RustCrypto;
const START: i64 = 1_782_864_000; // 2026-07-01
const DEV: DeviceId = DeviceId([0x02, 0, 0x5e, 0x10, 0, 0, 0, 1]);
const DEV2: DeviceId = DeviceId([0x02, 0, 0x5e, 0x10, 0, 0, 0, 2]);
const SK: [u8; 32] = [7; 32];
const SK2: [u8; 32] = [8; 32];
const PASSWORD: &str = "correct horse battery";
const UNKNOWN: &str = "00-00-00-00-00-00-00-99";

thread_local! {
    // Each test runs on its own thread with a current-thread runtime, so each has its own clock.
    static CLOCK: Cell<i64> = const { Cell::new(START) };
}

fn now() -> i64 {
    CLOCK.with(Cell::get)
}

fn advance(secs: i64) {
    CLOCK.with(|c| c.set(c.get() + secs));
}

struct Fixture {
    _dir: tempfile::TempDir,
    hub: Arc<Hub<SqliteStore>>,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("hub.db")).await.unwrap();
    let config = AccountConfig {
        password_cost: PasswordCost {
            memory_kib: 8,
            iterations: 1,
            parallelism: 1,
        },
        ..AccountConfig::default()
    };
    let hub = Hub::configured(store, HubKeys::generate(), now, config);
    Fixture { _dir: dir, hub }
}

async fn call(
    f: &Fixture,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: Vec<u8>,
) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    if body.first() == Some(&b'{') {
        req = req.header("content-type", "application/json");
    }
    let resp = app(f.hub.clone())
        .oneshot(req.body(Body::from(body)).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let bytes = to_bytes(resp.into_body(), usize::MAX).await.unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn j(v: Value) -> Vec<u8> {
    v.to_string().into_bytes()
}

/// Registers `name` and logs in: `Bearer <token>`.
async fn user(f: &Fixture, name: &str) -> String {
    let creds = json!({"name": name, "password": PASSWORD});
    let (s, _) = call(f, "POST", "/v1/accounts", None, j(creds.clone())).await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, v) = call(f, "POST", "/v1/sessions", None, j(creds)).await;
    assert_eq!(s, StatusCode::CREATED);
    format!("Bearer {}", v["token"].as_str().unwrap())
}

async fn id_of(f: &Fixture, name: &str) -> i64 {
    f.hub
        .store()
        .account_by_name(name)
        .await
        .unwrap()
        .unwrap()
        .id
}

/// Admits `device` straight in the store, with a known session key.
async fn admitted(f: &Fixture, device: DeviceId, session_key: [u8; 32]) {
    common::admit(f.hub.store(), device, session_key, now()).await;
}

/// The device token of `device` under `session_key`, at the test's clock plus `skew`.
fn token_bytes(session_key: [u8; 32], device: DeviceId, skew: i64) -> [u8; 25] {
    common::device_token(session_key, device, now() + skew)
}

fn device_auth(session_key: [u8; 32], device: DeviceId) -> String {
    common::device_auth_at(session_key, device, now())
}

fn owner_keys() -> OwnerKeys {
    OwnerKeys::from_udk(&C, &Secret::from_bytes([5; 32])).unwrap()
}

fn command(device: DeviceId, counter: u64, expires: i64) -> Vec<u8> {
    let header = CommandHeader {
        suite: Suite::AES256GCM,
        sender: 0,
        counter,
        expires: expires as u32,
    };
    seal_command(&C, owner_keys().owner(), device, header, Op::Set, b"on").unwrap()
}

fn list(device: DeviceId) -> Vec<u8> {
    let members = [Member {
        sender: 1,
        rights: RIGHT_CONTROL,
        key: Secret::from_bytes([9; 32]),
    }];
    seal_list(
        &C,
        Suite::AES256GCM,
        &owner_keys(),
        device,
        1,
        [3; 12],
        &members,
    )
    .unwrap()
}

/// A claim token for `device`, as `auth`.
async fn claim_token(f: &Fixture, device: DeviceId, auth: &str) -> [u8; 16] {
    let (s, v) = call(
        f,
        "POST",
        &format!("/v1/devices/{device}/claim"),
        Some(auth),
        vec![],
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["expires"].as_i64(), Some(now() + 600));
    let mut t = [0u8; 16];
    hex::decode_to_slice(v["token"].as_str().unwrap(), &mut t).unwrap();
    t
}

/// Posts a control message; its id.
async fn queue(f: &Fixture, device: DeviceId, auth: &str, msg: Vec<u8>) -> i64 {
    let (s, v) = call(
        f,
        "POST",
        &format!("/v1/devices/{device}/control"),
        Some(auth),
        msg,
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    v["id"].as_i64().unwrap()
}

/// What the device fetches: (id, body) pairs.
async fn fetch(f: &Fixture, device: DeviceId, sk: [u8; 32], after: i64) -> Vec<(i64, Vec<u8>)> {
    let (s, v) = call(
        f,
        "GET",
        &format!("/v1/devices/{device}/control?after={after}"),
        Some(&device_auth(sk, device)),
        vec![],
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["id"].as_i64().unwrap(),
                hex::decode(m["body"].as_str().unwrap()).unwrap(),
            )
        })
        .collect()
}

async fn answer(
    f: &Fixture,
    device: DeviceId,
    sk: [u8; 32],
    id: i64,
    body: Vec<u8>,
) -> (StatusCode, Value) {
    call(
        f,
        "POST",
        &format!("/v1/devices/{device}/control/{id}/answer"),
        Some(&device_auth(sk, device)),
        body,
    )
    .await
}

#[tokio::test]
async fn a_claim_with_a_real_proof_binds_the_owner() {
    let f = fixture().await;
    admitted(&f, DEV, SK).await;
    let alice = user(&f, "alice").await;
    let bob = user(&f, "bob").await;
    let token = claim_token(&f, DEV, &alice).await;
    let seal = seal_claim(&C, Suite::AES256GCM, &owner_keys(), DEV, [4; 12], &token).unwrap();
    // Bob holds no claim for the device: he may not queue a seal.
    let (s, _) = call(
        &f,
        "POST",
        &format!("/v1/devices/{DEV}/control"),
        Some(&bob),
        seal.clone(),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let id = queue(&f, DEV, &alice, seal.clone()).await;

    // The device fetches it (its heartbeat, with its state), opens it with the UDK and proves the token.
    let state = hex::encode("off");
    let (s, v) = call(
        &f,
        "GET",
        &format!("/v1/devices/{DEV}/control?after=0&state={state}"),
        Some(&device_auth(SK, DEV)),
        vec![],
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["messages"][0]["id"].as_i64(), Some(id));
    let body = hex::decode(v["messages"][0]["body"].as_str().unwrap()).unwrap();
    assert_eq!(body, seal);
    let opened = open_claim(&C, &owner_keys(), DEV, &body).unwrap();
    assert_eq!(opened, token);
    let (s, v) = call(
        &f,
        "GET",
        &format!("/v1/devices/{DEV}/control/{id}"),
        Some(&alice),
        vec![],
    )
    .await;
    assert_eq!(
        (s, v["status"].as_str()),
        (StatusCode::ACCEPTED, Some("waiting"))
    );
    assert_eq!(v["online"], json!(true));
    assert_eq!(v["state"], json!("off"));

    let proof = seal_claim_proof(&C, &link(SK), DEV, &opened).to_vec();
    let (s, v) = answer(&f, DEV, SK, id, proof.clone()).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let alice_id = id_of(&f, "alice").await;
    assert_eq!(f.hub.store().owner(DEV).await.unwrap(), Some(alice_id));
    let log = f.hub.store().ownership_log(DEV).await.unwrap();
    assert_eq!((log.len(), log[0].from, log[0].to), (1, None, alice_id));

    let (s, v) = call(
        &f,
        "GET",
        &format!("/v1/devices/{DEV}/control/{id}?wait=5"),
        Some(&alice),
        vec![],
    )
    .await;
    assert_eq!(
        (s, v["status"].as_str()),
        (StatusCode::OK, Some("answered"))
    );
    assert_eq!(v["answer"].as_str(), Some(hex::encode(&proof).as_str()));
    // A second answer is refused; the answered message is no longer delivered.
    let (s, _) = answer(&f, DEV, SK, id, proof).await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert!(fetch(&f, DEV, SK, 0).await.is_empty());
    // The device is owned now: no more claims, and Alice sees it as hers.
    let (s, _) = call(
        &f,
        "POST",
        &format!("/v1/devices/{DEV}/claim"),
        Some(&bob),
        vec![],
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT);
    let (_, v) = call(&f, "GET", "/v1/accounts/me", Some(&alice), vec![]).await;
    assert_eq!(v["owned"], json!([DEV.to_string()]));
}

#[tokio::test]
async fn bad_claim_proofs_bind_nothing() {
    let f = fixture().await;
    admitted(&f, DEV, SK).await;
    admitted(&f, DEV2, SK2).await;
    let alice = user(&f, "alice").await;
    let token = claim_token(&f, DEV, &alice).await;
    let token2 = claim_token(&f, DEV2, &alice).await;
    let seal = seal_claim(&C, Suite::AES256GCM, &owner_keys(), DEV, [4; 12], &token).unwrap();
    let id = queue(&f, DEV, &alice, seal).await;

    // A proof under another device's keys, a wrong token, and the token of another device's claim: refused.
    let foreign = seal_claim_proof(&C, &link(SK2), DEV, &token).to_vec();
    assert_eq!(
        answer(&f, DEV, SK, id, foreign).await.0,
        StatusCode::FORBIDDEN
    );
    let wrong = seal_claim_proof(&C, &link(SK), DEV, &[0xee; 16]).to_vec();
    assert_eq!(
        answer(&f, DEV, SK, id, wrong).await.0,
        StatusCode::FORBIDDEN
    );
    let other = seal_claim_proof(&C, &link(SK), DEV, &token2).to_vec();
    assert_eq!(
        answer(&f, DEV, SK, id, other).await.0,
        StatusCode::FORBIDDEN
    );
    // Not a claim proof at all.
    assert_eq!(
        answer(&f, DEV, SK, id, vec![0x42; 40]).await.0,
        StatusCode::BAD_REQUEST
    );
    // A forged device token: 401 before anything is looked at.
    let forged = format!("Custos-Device {}", hex::encode(token_bytes(SK2, DEV, 0)));
    let (s, _) = call(
        &f,
        "POST",
        &format!("/v1/devices/{DEV}/control/{id}/answer"),
        Some(&forged),
        seal_claim_proof(&C, &link(SK), DEV, &token).to_vec(),
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(f.hub.store().owner(DEV).await.unwrap(), None);
    assert_eq!(f.hub.store().owner(DEV2).await.unwrap(), None);
    assert!(f.hub.store().ownership_log(DEV).await.unwrap().is_empty());

    // The refusals left the message unanswered and the claim open: the right proof still binds.
    let right = seal_claim_proof(&C, &link(SK), DEV, &token).to_vec();
    assert_eq!(answer(&f, DEV, SK, id, right).await.0, StatusCode::CREATED);
    assert_eq!(
        f.hub.store().owner(DEV).await.unwrap(),
        Some(id_of(&f, "alice").await)
    );
    assert_eq!(f.hub.store().owner(DEV2).await.unwrap(), None);
}

#[tokio::test]
async fn who_may_call_what() {
    let f = fixture().await;
    admitted(&f, DEV, SK).await;
    admitted(&f, DEV2, SK2).await;
    let alice = user(&f, "alice").await;
    let bob = user(&f, "bob").await;
    let carol = user(&f, "carol").await;
    let mallory = user(&f, "mallory").await;
    let store = f.hub.store();
    let alice_id = id_of(&f, "alice").await;
    assert!(store.set_owner(DEV, None, alice_id, now()).await.unwrap());
    let (s, _) = call(
        &f,
        "POST",
        &format!("/v1/devices/{DEV}/shares"),
        Some(&alice),
        j(json!({"account": "bob", "rights": "control"})),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = call(
        &f,
        "POST",
        &format!("/v1/devices/{DEV}/shares"),
        Some(&alice),
        j(json!({"account": "carol", "rights": "view"})),
    )
    .await;
    assert_eq!(s, StatusCode::OK);

    let cmd = || command(DEV, now() as u64 * 1000, now() + 60);
    let alice_msg = queue(&f, DEV, &alice, cmd()).await;
    let bob_msg = queue(&f, DEV, &bob, cmd()).await;
    let _ = queue(&f, DEV, &alice, list(DEV)).await;

    let control = format!("/v1/devices/{DEV}/control");
    let account_calls: Vec<(&str, String, Vec<u8>)> = vec![
        ("POST", control.clone(), cmd()),
        ("POST", control.clone(), list(DEV)),
        ("GET", format!("{control}/{alice_msg}"), vec![]),
        ("GET", format!("/v1/devices/{DEV}/shares"), vec![]),
        (
            "POST",
            format!("/v1/devices/{DEV}/shares"),
            j(json!({"account": "mallory", "rights": "control"})),
        ),
        ("DELETE", format!("/v1/devices/{DEV}/shares/bob"), vec![]),
        ("GET", format!("/v1/devices/{DEV}/state"), vec![]),
        (
            "POST",
            format!("/v1/devices/{DEV}/transfer"),
            j(json!({"to": "mallory"})),
        ),
        ("POST", format!("/v1/devices/{DEV2}/claim"), vec![]),
    ];
    // Without a session, or with a made-up one: 401.
    for (m, p, b) in &account_calls {
        for auth in [
            None,
            Some("Bearer 00"),
            Some(&*format!("Bearer {}", "ab".repeat(32))),
        ] {
            let (s, _) = call(&f, m, p, auth, b.clone()).await;
            assert_eq!(s, StatusCode::UNAUTHORIZED, "{m} {p} {auth:?}");
        }
    }
    // A stranger learns nothing about the device: the same 404 as for an unknown one.
    for (m, p, b) in &account_calls[..8] {
        let (s, v) = call(&f, m, p, Some(&mallory), b.clone()).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{m} {p}");
        let unknown = p.replace(&DEV.to_string(), UNKNOWN);
        let (s2, v2) = call(&f, m, &unknown, Some(&mallory), b.clone()).await;
        let text = |v: &Value, d: &str| v["message"].as_str().unwrap().replace(d, "D");
        assert_eq!(
            (s2, text(&v2, UNKNOWN)),
            (s, text(&v, &DEV.to_string())),
            "{m} {p}"
        );
    }
    // A view share sees the state, sends nothing; a control share sends commands, not lists; neither manages
    // shares nor sees another's message.
    let (s, v) = call(
        &f,
        "GET",
        &format!("/v1/devices/{DEV}/state"),
        Some(&carol),
        vec![],
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, _) = call(&f, "POST", &control, Some(&carol), cmd()).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = call(&f, "POST", &control, Some(&bob), list(DEV)).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    for who in [&bob, &carol] {
        let (s, _) = call(
            &f,
            "GET",
            &format!("/v1/devices/{DEV}/shares"),
            Some(who),
            vec![],
        )
        .await;
        assert_eq!(s, StatusCode::FORBIDDEN);
        let (s, _) = call(
            &f,
            "GET",
            &format!("{control}/{alice_msg}"),
            Some(who),
            vec![],
        )
        .await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        let (s, _) = call(
            &f,
            "POST",
            &format!("/v1/devices/{DEV}/transfer"),
            Some(who),
            j(json!({"to": "carol"})),
        )
        .await;
        assert_eq!(s, StatusCode::FORBIDDEN);
    }
    let (s, v) = call(
        &f,
        "GET",
        &format!("{control}/{bob_msg}"),
        Some(&bob),
        vec![],
    )
    .await;
    assert_eq!(
        (s, v["status"].as_str()),
        (StatusCode::ACCEPTED, Some("waiting"))
    );
    // The owner sees every message on her device.
    let (s, _) = call(
        &f,
        "GET",
        &format!("{control}/{bob_msg}"),
        Some(&alice),
        vec![],
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    // Malformed messages.
    for (body, want) in [
        (vec![], StatusCode::BAD_REQUEST),
        (vec![0x99; 40], StatusCode::BAD_REQUEST),
        (vec![0x41; 10], StatusCode::BAD_REQUEST),
        (command(DEV, 1, now()), StatusCode::BAD_REQUEST),
        (command(DEV, 1, now() + 86_401), StatusCode::BAD_REQUEST),
        (vec![0x41; 513], StatusCode::PAYLOAD_TOO_LARGE),
        (vec![0x45; 3000], StatusCode::PAYLOAD_TOO_LARGE),
    ] {
        let (s, v) = call(&f, "POST", &control, Some(&alice), body).await;
        assert_eq!(s, want, "{v}");
    }

    // The device side: no token, a forged one, another device's, a stale one, for an unknown device.
    let fetch_path = format!("/v1/devices/{DEV}/control");
    let answer_path = format!("{fetch_path}/{alice_msg}/answer");
    for (m, p) in [("GET", &fetch_path), ("POST", &answer_path)] {
        let b = if m == "POST" { vec![0x42; 60] } else { vec![] };
        for auth in [
            None,
            Some("Custos-Device zz".to_string()),
            Some(format!(
                "Custos-Device {}",
                hex::encode(token_bytes(SK2, DEV, 0))
            )),
            Some(format!(
                "Custos-Device {}",
                hex::encode(token_bytes(SK, DEV2, 0))
            )),
            Some(format!(
                "Custos-Device {}",
                hex::encode(token_bytes(SK, DEV, -200))
            )),
            Some(alice.clone()),
        ] {
            let (s, _) = call(&f, m, p, auth.as_deref(), b.clone()).await;
            assert_eq!(s, StatusCode::UNAUTHORIZED, "{m} {p} {auth:?}");
        }
        let unknown = p.replace(&DEV.to_string(), UNKNOWN);
        let (s, _) = call(&f, m, &unknown, Some(&device_auth(SK, DEV)), b.clone()).await;
        assert_eq!(s, StatusCode::FORBIDDEN);
    }
    // A revoked device is refused, and nothing more is queued for it.
    store.revoke(DEV, now()).await.unwrap();
    let (s, _) = call(&f, "GET", &fetch_path, Some(&device_auth(SK, DEV)), vec![]).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = call(&f, "POST", &control, Some(&alice), cmd()).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = call(
        &f,
        "POST",
        &format!("/v1/devices/{DEV}/claim"),
        Some(&mallory),
        vec![],
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn queues_are_bounded_messages_expire_and_answers_are_final() {
    let f = fixture().await;
    admitted(&f, DEV, SK).await;
    let alice = user(&f, "alice").await;
    let alice_id = id_of(&f, "alice").await;
    assert!(
        f.hub
            .store()
            .set_owner(DEV, None, alice_id, now())
            .await
            .unwrap()
    );
    let short = queue(&f, DEV, &alice, command(DEV, 1, now() + 10)).await;
    for i in 1..64u64 {
        queue(&f, DEV, &alice, command(DEV, 1 + i, now() + 3600)).await;
    }
    let (s, v) = call(
        &f,
        "POST",
        &format!("/v1/devices/{DEV}/control"),
        Some(&alice),
        command(DEV, 99, now() + 60),
    )
    .await;
    assert_eq!(
        (s, v["error"].as_str()),
        (StatusCode::TOO_MANY_REQUESTS, Some("quota"))
    );
    let got = fetch(&f, DEV, SK, 0).await;
    assert_eq!(got.len(), 64);
    assert_eq!(got[0].0, short);

    // The short command expires: no longer delivered, reported expired, and its place in the queue is free.
    advance(11);
    let got = fetch(&f, DEV, SK, 0).await;
    assert_eq!(got.len(), 63);
    assert!(got.iter().all(|(id, _)| *id != short));
    let (s, v) = call(
        &f,
        "GET",
        &format!("/v1/devices/{DEV}/control/{short}?wait=5"),
        Some(&alice),
        vec![],
    )
    .await;
    assert_eq!((s, v["status"].as_str()), (StatusCode::OK, Some("expired")));
    queue(&f, DEV, &alice, command(DEV, 100, now() + 60)).await;

    // Answers: the right type, once.
    let id = got[0].0;
    assert_eq!(
        answer(&f, DEV, SK, id, vec![0x46; 30]).await.0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        answer(&f, DEV, SK, id, vec![0x42; 300]).await.0,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    assert_eq!(
        answer(&f, DEV, SK, id, vec![0x42; 60]).await.0,
        StatusCode::CREATED
    );
    assert_eq!(
        answer(&f, DEV, SK, id, vec![0x42; 61]).await.0,
        StatusCode::CONFLICT
    );
    assert_eq!(
        answer(&f, DEV, SK, 999_999, vec![0x42; 60]).await.0,
        StatusCode::NOT_FOUND
    );
    let (s, v) = call(
        &f,
        "GET",
        &format!("/v1/devices/{DEV}/control/{id}"),
        Some(&alice),
        vec![],
    )
    .await;
    assert_eq!(
        (s, v["answer"].as_str()),
        (StatusCode::OK, Some(hex::encode([0x42; 60]).as_str()))
    );
    // Cursors page: after the first id, the rest.
    assert_eq!(fetch(&f, DEV, SK, id).await.len(), 63);
    // Housekeeping drops what expired long ago.
    advance(40 * 86_400);
    assert!(
        f.hub
            .store()
            .purge_control(now() - 30 * 86_400)
            .await
            .unwrap()
            > 0
    );
}

#[tokio::test]
async fn open_claims_are_bounded_per_account() {
    let f = fixture().await;
    admitted(&f, DEV, SK).await;
    let alice = user(&f, "alice").await;
    for _ in 0..16 {
        claim_token(&f, DEV, &alice).await;
    }
    let (s, v) = call(
        &f,
        "POST",
        &format!("/v1/devices/{DEV}/claim"),
        Some(&alice),
        vec![],
    )
    .await;
    assert_eq!(
        (s, v["error"].as_str()),
        (StatusCode::TOO_MANY_REQUESTS, Some("quota"))
    );
    advance(601);
    claim_token(&f, DEV, &alice).await;
    let (s, _) = call(
        &f,
        "POST",
        "/v1/devices/00-00-00-00-00-00-00-99/claim",
        Some(&alice),
        vec![],
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn shares_and_transfers() {
    let f = fixture().await;
    admitted(&f, DEV, SK).await;
    let alice = user(&f, "alice").await;
    let bob = user(&f, "bob").await;
    user(&f, "carol").await;
    let alice_id = id_of(&f, "alice").await;
    let bob_id = id_of(&f, "bob").await;
    assert!(
        f.hub
            .store()
            .set_owner(DEV, None, alice_id, now())
            .await
            .unwrap()
    );
    let shares = format!("/v1/devices/{DEV}/shares");
    for (body, want) in [
        (
            json!({"account": "Bob", "rights": "control"}),
            StatusCode::OK,
        ),
        (
            json!({"account": "carol", "rights": "view"}),
            StatusCode::OK,
        ),
        (
            json!({"account": "carol", "rights": "admin"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"account": "nobody", "rights": "view"}),
            StatusCode::NOT_FOUND,
        ),
        (
            json!({"account": "alice", "rights": "view"}),
            StatusCode::BAD_REQUEST,
        ),
        (json!({"rights": "view"}), StatusCode::BAD_REQUEST),
    ] {
        let (s, v) = call(&f, "POST", &shares, Some(&alice), j(body.clone())).await;
        assert_eq!(s, want, "{body} {v}");
    }
    let (s, v) = call(&f, "GET", &shares, Some(&alice), vec![]).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        v,
        json!({"owner": "alice", "shares": [{"account": "bob", "rights": "control"}, {"account": "carol", "rights": "view"}]})
    );
    assert_eq!(
        call(
            &f,
            "DELETE",
            &format!("{shares}/carol"),
            Some(&alice),
            vec![]
        )
        .await
        .0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        call(
            &f,
            "DELETE",
            &format!("{shares}/carol"),
            Some(&alice),
            vec![]
        )
        .await
        .0,
        StatusCode::NOT_FOUND
    );
    // Bob's share lets him command; the transfer to him makes him owner and ends every share.
    let transfer = format!("/v1/devices/{DEV}/transfer");
    assert_eq!(
        call(
            &f,
            "POST",
            &transfer,
            Some(&alice),
            j(json!({"to": "alice"}))
        )
        .await
        .0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        call(
            &f,
            "POST",
            &transfer,
            Some(&alice),
            j(json!({"to": "nobody"}))
        )
        .await
        .0,
        StatusCode::NOT_FOUND
    );
    let (s, v) = call(&f, "POST", &transfer, Some(&alice), j(json!({"to": "bob"}))).await;
    assert_eq!((s, v["owner"].as_str()), (StatusCode::OK, Some("bob")));
    assert_eq!(f.hub.store().owner(DEV).await.unwrap(), Some(bob_id));
    let log = f.hub.store().ownership_log(DEV).await.unwrap();
    assert_eq!(
        log.last().map(|c| (c.from, c.to)),
        Some((Some(alice_id), bob_id))
    );
    let (_, v) = call(&f, "GET", &shares, Some(&bob), vec![]).await;
    assert_eq!(v, json!({"owner": "bob", "shares": []}));
    assert_eq!(
        call(&f, "GET", &shares, Some(&alice), vec![]).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        call(
            &f,
            "POST",
            &transfer,
            Some(&alice),
            j(json!({"to": "alice"}))
        )
        .await
        .0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn the_device_long_poll_is_its_heartbeat() {
    let f = fixture().await;
    admitted(&f, DEV, SK).await;
    let alice = user(&f, "alice").await;
    let alice_id = id_of(&f, "alice").await;
    assert!(
        f.hub
            .store()
            .set_owner(DEV, None, alice_id, now())
            .await
            .unwrap()
    );
    let state = format!("/v1/devices/{DEV}/state");
    let (_, v) = call(&f, "GET", &state, Some(&alice), vec![]).await;
    assert_eq!(
        (v["online"].clone(), v["state"].clone()),
        (json!(false), Value::Null)
    );
    for bad in ["zz", &hex::encode("a\u{7}"), &hex::encode("x".repeat(65))] {
        let (s, _) = call(
            &f,
            "GET",
            &format!("/v1/devices/{DEV}/control?state={bad}"),
            Some(&device_auth(SK, DEV)),
            vec![],
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}");
    }
    let (s, _) = call(
        &f,
        "GET",
        &format!("/v1/devices/{DEV}/control?state={}", hex::encode("21.5")),
        Some(&device_auth(SK, DEV)),
        vec![],
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (_, v) = call(&f, "GET", &state, Some(&alice), vec![]).await;
    assert_eq!(v["online"], json!(true));
    assert_eq!(v["state"], json!("21.5"));
    assert_eq!(v["at"].as_i64(), Some(now()));
    advance(5);
    let (_, v) = call(&f, "GET", &state, Some(&alice), vec![]).await;
    assert_eq!(
        v["online"],
        json!(false),
        "5 s silent is offline by default"
    );
    assert_eq!(v["last_seen"].as_i64(), Some(now() - 5));

    // A waiting long-poll returns as soon as a message is queued.
    let hub = f.hub.clone();
    let waiting = tokio::spawn(async move {
        let req = Request::builder()
            .uri(format!("/v1/devices/{DEV}/control?wait=20"))
            .header("authorization", device_auth(SK, DEV))
            .body(Body::empty())
            .unwrap();
        let started = tokio::time::Instant::now();
        let resp = app(hub).oneshot(req).await.unwrap();
        let v: Value =
            serde_json::from_slice(&to_bytes(resp.into_body(), usize::MAX).await.unwrap()).unwrap();
        (started.elapsed(), v)
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let id = queue(&f, DEV, &alice, command(DEV, 1, now() + 60)).await;
    let (took, v) = waiting.await.unwrap();
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_eq!(v["messages"][0]["id"].as_i64(), Some(id));
}

/// The MQTT side against the broker on 127.0.0.1:1883: a queued message is published on `…/control`, and an
/// answer on `…/answer` (with the device token) is stored; a forged one is not.
#[tokio::test]
async fn control_over_mqtt() {
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::mqttbytes::v5::Packet;
    use rumqttc::v5::{AsyncClient, Event, MqttOptions};

    let f = fixture().await;
    admitted(&f, DEV, SK).await;
    let alice = user(&f, "alice").await;
    let alice_id = id_of(&f, "alice").await;
    assert!(
        f.hub
            .store()
            .set_owner(DEV, None, alice_id, now())
            .await
            .unwrap()
    );
    let prefix = format!("custos-test-{}", hex::encode(rand_bytes()));
    let config = custos_hub::mqtt::MqttConfig {
        url: "mqtt://127.0.0.1:1883".into(),
        trust: custos_client::TlsTrust::default(),
        prefix: prefix.clone(),
        client_id: format!("hub-{prefix}"),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let hub = f.hub.clone();
    let running = tokio::spawn(async move {
        custos_hub::mqtt::run(hub, config, async {
            let _ = stopped.await;
        })
        .await
    });

    let mut opts = MqttOptions::new(format!("dev-{prefix}"), "127.0.0.1", 1883);
    opts.set_max_packet_size(Some(1 << 20));
    let (client, mut events) = AsyncClient::new(opts, 64);
    client
        .subscribe(format!("{prefix}/{DEV}/control"), QoS::AtLeastOnce)
        .await
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let pump = tokio::spawn(async move {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let _ = tx.send(p.payload.to_vec());
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });

    // Until both sides are connected and subscribed, publishes may be lost: queue commands until one arrives.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let mut posted = Vec::new();
    let (id, message) = loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no control message over MQTT"
        );
        let cmd = command(DEV, posted.len() as u64 + 1, now() + 600);
        posted.push((queue(&f, DEV, &alice, cmd.clone()).await, cmd));
        if let Ok(Some(payload)) = tokio::time::timeout(Duration::from_millis(700), rx.recv()).await
        {
            let id = i64::from_be_bytes(payload[..8].try_into().unwrap());
            break (id, payload[8..].to_vec());
        }
    };
    assert!(
        posted.contains(&(id, message)),
        "the payload is id ‖ a queued message"
    );

    // A forged answer (another key's token) is dropped; the device's own is stored.
    let payload = |sk: [u8; 32]| {
        let mut p = (id as u64).to_be_bytes().to_vec();
        p.extend_from_slice(&token_bytes(sk, DEV, 0));
        p.extend_from_slice(&[0x42; 50]);
        p
    };
    let topic = format!("{prefix}/{DEV}/answer");
    client
        .publish(topic.clone(), QoS::AtLeastOnce, false, payload(SK2))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        f.hub
            .store()
            .control_message(DEV, id)
            .await
            .unwrap()
            .unwrap()
            .answer
            .is_none()
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        client
            .publish(topic.clone(), QoS::AtLeastOnce, false, payload(SK))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let m = f
            .hub
            .store()
            .control_message(DEV, id)
            .await
            .unwrap()
            .unwrap();
        if m.answer.is_some() {
            assert_eq!(m.answer, Some(vec![0x42; 50]));
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the MQTT answer was not stored"
        );
    }
    let (s, v) = call(
        &f,
        "GET",
        &format!("/v1/devices/{DEV}/control/{id}"),
        Some(&alice),
        vec![],
    )
    .await;
    assert_eq!(
        (s, v["status"].as_str()),
        (StatusCode::OK, Some("answered"))
    );

    pump.abort();
    let _ = stop.send(());
    running.await.unwrap().unwrap();
}

fn rand_bytes() -> [u8; 6] {
    use rand_core::RngCore;
    let mut b = [0u8; 6];
    rand_core::OsRng.fill_bytes(&mut b);
    b
}
