//! The hub's HTTP API driven without a socket: admission with the right, a wrong, a reused and an expired code;
//! authenticated ingest with replays, tampering, revocation and malformed bodies; the signed device list; and a
//! scan of the hub's database for plaintext and keys.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use axum::body::{Body, to_bytes};
use axum::http::{Request, StatusCode};
use custos_hub::{DeviceList, Hub, HubKeys, app};

fn verify_device_list(bytes: &[u8], key: &[u8; 32]) -> Result<DeviceList, custos_proto::Error> {
    DeviceList::verify(&RustCrypto, bytes, key)
}
use custos_proto::admission::{Admitted, DeviceAwaitingResponse};
use custos_proto::record::OVERHEAD;
use custos_proto::uplink::{LinkKeys, UPLINK_OVERHEAD, Verdict, open_ack, seal_uplink};
use custos_proto::{
    Crypto, DeviceId, Epoch, MasterSecret, RustCrypto, Schedule, Secret, Span, Suite, TreeSpec,
    UnixTime,
};
use custos_store::{PendingAdmission, SqliteStore, Store};
use tower::ServiceExt;

const NOW: i64 = 1_773_584_400; // 2026-03-15T14:20:00Z
const DEV: DeviceId = DeviceId([0x02, 0, 0x5e, 0x10, 0, 0, 0, 1]);
const CODE: [u8; 16] = *b"join-code-0001!!";

fn now() -> i64 {
    NOW
}

struct Fixture {
    _dir: tempfile::TempDir,
    db: std::path::PathBuf,
    hub: Arc<Hub<SqliteStore>>,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("hub.db");
    let store = SqliteStore::open(&db).await.unwrap();
    let hub = Hub::with_clock(store, HubKeys::generate(), now);
    hub.set_operator_token(OPERATOR);
    Fixture { hub, db, _dir: dir }
}

/// The operator token of the fixture's hub, sent with every call (only the admin listings look at it).
const OPERATOR: &str = "operator-test-token";

async fn call(f: &Fixture, method: &str, path: &str, body: Vec<u8>) -> (StatusCode, Vec<u8>) {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {OPERATOR}"))
        .body(Body::from(body))
        .unwrap();
    let resp = app(f.hub.clone()).oneshot(req).await.unwrap();
    let status = resp.status();
    (
        status,
        to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap()
            .to_vec(),
    )
}

fn message(body: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    v["message"].as_str().unwrap_or_default().to_string()
}

fn fresh(b: u8) -> Secret {
    let mut bytes = [b; 32];
    bytes[0] = rand_byte();
    Secret::from_bytes(bytes)
}

fn rand_byte() -> u8 {
    use std::sync::atomic::{AtomicU8, Ordering};
    static N: AtomicU8 = AtomicU8::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

async fn register(f: &Fixture, device: DeviceId, expires_at: i64) {
    f.hub
        .store()
        .put_admission(&PendingAdmission {
            device,
            join_code: CODE,
            created_at: NOW - 10,
            expires_at,
        })
        .await
        .unwrap();
}

/// Runs the device's side of admission over the API; returns the result or the failing status and message.
async fn join(
    f: &Fixture,
    device: DeviceId,
    code: &[u8; 16],
) -> Result<Admitted, (StatusCode, String)> {
    let identity = Secret::from_bytes([device.0[7]; 32]);
    let (dev, hello) =
        DeviceAwaitingResponse::start(device, &identity, code, fresh(1), None).unwrap();
    let (status, body) = call(f, "POST", "/v1/admission/hello", hello).await;
    if status != StatusCode::OK {
        return Err((status, message(&body)));
    }
    let (id, response) = body.split_at(16);
    let (dev, finish) = dev.read_response(response).unwrap();
    let mut req = id.to_vec();
    req.extend_from_slice(&finish);
    let (status, body) = call(f, "POST", "/v1/admission/finish", req).await;
    if status != StatusCode::OK {
        return Err((status, message(&body)));
    }
    Ok(dev.read_welcome(&body).unwrap())
}

#[tokio::test]
async fn admission_with_the_right_code_works_once() {
    let f = fixture().await;
    register(&f, DEV, NOW + 600).await;
    let admitted = join(&f, DEV, &CODE).await.unwrap();
    assert_eq!(
        admitted.peer_static,
        f.hub.keys().noise_public(),
        "the device learns the hub's static key"
    );
    let stored = f.hub.store().device(DEV).await.unwrap().unwrap();
    assert_eq!(stored.session_key, *admitted.session_key.expose());
    assert_eq!(
        stored.static_key,
        RustCrypto.x25519_public(&Secret::from_bytes([DEV.0[7]; 32]))
    );

    // The code is used up: joining again is refused and changes nothing.
    let (status, msg) = join(&f, DEV, &CODE).await.unwrap_err();
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(msg.contains("already admitted"), "{msg}");
    assert_eq!(
        f.hub
            .store()
            .device(DEV)
            .await
            .unwrap()
            .unwrap()
            .session_key,
        stored.session_key
    );

    // The signed device list names the device and verifies with the hub's key only.
    let (status, list) = call(&f, "GET", "/v1/device-list", vec![]).await;
    assert_eq!(status, StatusCode::OK);
    let list_v = verify_device_list(&list, &f.hub.keys().signing_public()).unwrap();
    assert_eq!(list_v.devices, [DEV]);
    assert!(verify_device_list(&list, &HubKeys::generate().signing_public()).is_err());
    let mut forged = list.clone();
    let last = forged.len() - 70;
    forged[last] ^= 1;
    assert!(verify_device_list(&forged, &f.hub.keys().signing_public()).is_err());
}

#[tokio::test]
async fn wrong_expired_and_unknown_codes_admit_nothing() {
    let f = fixture().await;
    register(&f, DEV, NOW + 600).await;
    let mut wrong = CODE;
    wrong[0] ^= 1;
    let (status, msg) = join(&f, DEV, &wrong).await.unwrap_err();
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{msg}");
    assert!(msg.contains("wrong join code"), "{msg}");
    assert!(
        f.hub.store().device(DEV).await.unwrap().is_none(),
        "half-admitted after a wrong code"
    );
    // A failed attempt does not burn the code: the real device still joins.
    join(&f, DEV, &CODE).await.unwrap();

    let expired = DeviceId([0x02, 0, 0, 0, 0, 0, 0, 2]);
    register(&f, expired, NOW - 1).await;
    let (status, msg) = join(&f, expired, &CODE).await.unwrap_err();
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(msg.contains("no pending admission"), "{msg}");

    let unknown = DeviceId([0x02, 0, 0, 0, 0, 0, 0, 3]);
    let (status, _) = join(&f, unknown, &CODE).await.unwrap_err();
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(f.hub.store().devices().await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_flood_of_hellos_neither_fills_the_table_nor_blocks_the_device() {
    let f = fixture().await;
    register(&f, DEV, NOW + 600).await;
    // Hello carries no proof of the code, so anyone who read the label can send it, as often as they like.
    for i in 0..50u8 {
        let (_, hello) = DeviceAwaitingResponse::start(
            DEV,
            &Secret::from_bytes([i; 32]),
            &[0xEE; 16],
            fresh(i),
            None,
        )
        .unwrap();
        let (status, _) = call(&f, "POST", "/v1/admission/hello", hello).await;
        assert_eq!(status, StatusCode::OK);
        assert!(f.hub.handshakes_in_progress() <= custos_hub::MAX_PENDING_PER_DEVICE);
    }
    // Devices without a pending admission get no entry at all.
    let other = DeviceId([9; 8]);
    let (_, hello) =
        DeviceAwaitingResponse::start(other, &fresh(2), &CODE, fresh(3), None).unwrap();
    let (status, _) = call(&f, "POST", "/v1/admission/hello", hello).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        f.hub.handshakes_in_progress(),
        custos_hub::MAX_PENDING_PER_DEVICE
    );
    // The real device still joins.
    join(&f, DEV, &CODE).await.unwrap();
}

#[tokio::test]
async fn a_replayed_finish_is_refused() {
    let f = fixture().await;
    register(&f, DEV, NOW + 600).await;
    let (dev, hello) =
        DeviceAwaitingResponse::start(DEV, &fresh(9), &CODE, fresh(1), None).unwrap();
    let (_, body) = call(&f, "POST", "/v1/admission/hello", hello).await;
    let (dev, finish) = dev.read_response(&body[16..]).unwrap();
    let mut req = body[..16].to_vec();
    req.extend_from_slice(&finish);
    let (status, welcome) = call(&f, "POST", "/v1/admission/finish", req.clone()).await;
    assert_eq!(status, StatusCode::OK);
    let stored = f.hub.store().device(DEV).await.unwrap().unwrap();
    // The same Finish again (its Welcome was lost): the same Welcome, and nothing else changes.
    let (status, again) = call(&f, "POST", "/v1/admission/finish", req.clone()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again, welcome);
    dev.read_welcome(&again).unwrap();
    let now_stored = f.hub.store().device(DEV).await.unwrap().unwrap();
    assert_eq!(
        (now_stored.session_key, now_stored.admitted_at),
        (stored.session_key, stored.admitted_at)
    );
    // Any other Finish for that handshake is refused.
    let mut altered = req.clone();
    let last = altered.len() - 1;
    altered[last] ^= 1;
    let (status, body) = call(&f, "POST", "/v1/admission/finish", altered).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{}", message(&body));
    let (status, body) = call(&f, "POST", "/v1/admission/hello", vec![1, 2, 3]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        message(&body).contains("malformed Hello"),
        "{}",
        message(&body)
    );
}

/// A device's tree for 2026 and a sealed reading at `t`.
fn reading(t: i64, text: &str) -> Vec<u8> {
    let c = RustCrypto;
    let span = Span::new(
        UnixTime::from_date(2026, 1, 1).unwrap(),
        UnixTime::from_date(2027, 1, 1).unwrap(),
    )
    .unwrap();
    let spec = TreeSpec::new(DEV, Epoch(1), Schedule::default(), span).unwrap();
    let dpk = spec
        .root(&c, &MasterSecret::new(Secret::from_bytes([0x4d; 32])))
        .unwrap();
    let t = UnixTime::new(t as u64).unwrap();
    let key = spec
        .leaf_key(&c, &dpk, spec.leaf_at(t).unwrap(), Suite::AES256GCM)
        .unwrap();
    let mut out = vec![0u8; text.len() + OVERHEAD];
    key.seal(&c, (t.secs()).to_be_bytes(), text.as_bytes(), &mut out)
        .unwrap();
    out
}

fn batch(keys: &LinkKeys, device: DeviceId, msgs: &[(u64, Vec<u8>)]) -> Vec<u8> {
    let mut body = Vec::new();
    for (seq, record) in msgs {
        let mut m = vec![0u8; record.len() + UPLINK_OVERHEAD];
        seal_uplink(&RustCrypto, keys, device, *seq, record, &mut m).unwrap();
        body.extend_from_slice(&(m.len() as u16).to_be_bytes());
        body.extend_from_slice(&m);
    }
    body
}

fn verdicts(keys: &LinkKeys, acks: &[u8]) -> Vec<(u64, Verdict)> {
    acks.chunks(24)
        .map(|a| open_ack(&RustCrypto, keys, DEV, a).unwrap())
        .collect()
}

async fn records(f: &Fixture) -> Vec<serde_json::Value> {
    let (status, body) = call(
        f,
        "GET",
        &format!("/v1/devices/{DEV}/records?epoch=1"),
        vec![],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    v["records"].as_array().unwrap().clone()
}

#[tokio::test]
async fn ingest_stores_each_record_once_and_refuses_forgeries() {
    let f = fixture().await;
    register(&f, DEV, NOW + 600).await;
    let admitted = join(&f, DEV, &CODE).await.unwrap();
    let keys = LinkKeys::derive(&RustCrypto, &admitted.session_key).unwrap();
    let path = format!("/v1/devices/{DEV}/uplinks");
    let msgs: Vec<(u64, Vec<u8>)> = (0..3)
        .map(|i| (i, reading(NOW + i as i64 * 60, &format!("21.{i}"))))
        .collect();

    let (status, acks) = call(&f, "POST", &path, batch(&keys, DEV, &msgs)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        verdicts(&keys, &acks),
        [
            (0, Verdict::Stored),
            (1, Verdict::Stored),
            (2, Verdict::Stored)
        ]
    );
    // A replay, and a reordered duplicate with a new one, are told apart; nothing is stored twice.
    let again = vec![
        msgs[2].clone(),
        msgs[0].clone(),
        (3, reading(NOW + 300, "22.0")),
    ];
    let (_, acks) = call(&f, "POST", &path, batch(&keys, DEV, &again)).await;
    assert_eq!(
        verdicts(&keys, &acks),
        [
            (2, Verdict::Duplicate),
            (0, Verdict::Duplicate),
            (3, Verdict::Stored)
        ]
    );
    assert_eq!(records(&f).await.len(), 4);

    // Tampered, forged or misaddressed messages change nothing.
    let before = records(&f).await;
    let mut tampered = batch(&keys, DEV, &[(4, reading(NOW + 400, "x"))]);
    let n = tampered.len();
    tampered[n - 20] ^= 1;
    let (status, body) = call(&f, "POST", &path, tampered).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{}", message(&body));
    let stranger = LinkKeys::derive(&RustCrypto, &Secret::from_bytes([7; 32])).unwrap();
    let (status, _) = call(
        &f,
        "POST",
        &path,
        batch(&stranger, DEV, &[(5, reading(NOW, "forged"))]),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // One bad message spoils the whole batch: the good one in it is not stored either.
    let mut mixed = batch(&keys, DEV, &[(6, reading(NOW + 500, "good"))]);
    mixed.extend_from_slice(&[0, 3, 1, 2, 3]);
    let (status, body) = call(&f, "POST", &path, mixed).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{}", message(&body));
    assert!(message(&body).contains("message 1"), "{}", message(&body));
    for (bad, expect) in [
        (vec![0u8, 9, 1], "announced"),
        (vec![7u8], "truncated length"),
        (vec![], "empty batch"),
    ] {
        let (status, body) = call(&f, "POST", &path, bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(message(&body).contains(expect), "{}", message(&body));
    }
    let (status, _) = call(&f, "POST", "/v1/devices/zz/uplinks", vec![]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        records(&f).await,
        before,
        "a refused batch changed the store"
    );

    // A revoked device drops off the signed list, whose version goes up, and is refused.
    let (_, before) = call(&f, "GET", "/v1/device-list", vec![]).await;
    let before = verify_device_list(&before, &f.hub.keys().signing_public()).unwrap();
    assert!(before.devices.contains(&DEV));
    f.hub.store().revoke(DEV, NOW).await.unwrap();
    f.hub.publish_device_list().await.unwrap();
    let (_, after) = call(&f, "GET", "/v1/device-list", vec![]).await;
    let after = verify_device_list(&after, &f.hub.keys().signing_public()).unwrap();
    assert!(
        !after.devices.contains(&DEV),
        "a revoked device is still on the list"
    );
    assert!(after.version > before.version);
    let (status, body) = call(
        &f,
        "POST",
        &path,
        batch(&keys, DEV, &[(7, reading(NOW + 700, "late"))]),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(message(&body).contains("revoked"), "{}", message(&body));
}

#[tokio::test]
async fn presence_and_devices_show_no_keys() {
    let f = fixture().await;
    register(&f, DEV, NOW + 600).await;
    let admitted = join(&f, DEV, &CODE).await.unwrap();
    let keys = LinkKeys::derive(&RustCrypto, &admitted.session_key).unwrap();
    call(
        &f,
        "POST",
        &format!("/v1/devices/{DEV}/uplinks"),
        batch(&keys, DEV, &[(0, reading(NOW, "1"))]),
    )
    .await;
    let (_, body) = call(&f, "GET", "/v1/presence?offline_after=60", vec![]).await;
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["devices"][0]["device"], DEV.to_string());
    assert_eq!(v["devices"][0]["online"], true);
    let (status, _) = call(&f, "GET", "/v1/presence?offline_after=0", vec![]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (_, body) = call(&f, "GET", "/v1/devices", vec![]).await;
    let text = String::from_utf8(body).unwrap();
    assert!(
        !text.contains(&hex::encode(admitted.session_key.expose())),
        "the session key leaked: {text}"
    );
}

#[tokio::test]
async fn the_hub_database_holds_no_plaintext_and_no_record_key() {
    let f = fixture().await;
    register(&f, DEV, NOW + 600).await;
    let admitted = join(&f, DEV, &CODE).await.unwrap();
    let keys = LinkKeys::derive(&RustCrypto, &admitted.session_key).unwrap();
    let marker = "PLAINTEXT-READING-MARKER-2026";
    let msgs: Vec<(u64, Vec<u8>)> = (0..50)
        .map(|i| (i, reading(NOW + i as i64 * 60, marker)))
        .collect();
    let (status, _) = call(
        &f,
        "POST",
        &format!("/v1/devices/{DEV}/uplinks"),
        batch(&keys, DEV, &msgs),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    f.hub.store().close().await;

    // Every secret that opens a record of this device in 2026: master, DPK, the path nodes and the leaf keys.
    let c = RustCrypto;
    let span = Span::new(
        UnixTime::from_date(2026, 1, 1).unwrap(),
        UnixTime::from_date(2027, 1, 1).unwrap(),
    )
    .unwrap();
    let spec = TreeSpec::new(DEV, Epoch(1), Schedule::default(), span).unwrap();
    let master = MasterSecret::new(Secret::from_bytes([0x4d; 32]));
    let dpk = spec.root(&c, &master).unwrap();
    let t = UnixTime::new(NOW as u64).unwrap();
    let mut secrets = vec![
        master.expose().expose().to_vec(),
        dpk.secret().expose().to_vec(),
    ];
    for depth in 1..=3 {
        secrets.push(
            spec.derive(&c, &dpk, spec.node_at(depth, t).unwrap())
                .unwrap()
                .secret()
                .expose()
                .to_vec(),
        );
    }
    secrets.push(
        spec.leaf_key_bytes(&c, &dpk, spec.leaf_at(t).unwrap(), Suite::AES256GCM)
            .unwrap()
            .expose()
            .to_vec(),
    );

    let mut bytes = std::fs::read(&f.db).unwrap();
    for extra in ["hub.db-wal", "hub.db-shm"] {
        if let Ok(b) = std::fs::read(f.db.with_file_name(extra)) {
            bytes.extend(b);
        }
    }
    assert!(bytes.len() > 50 * 60, "the database is suspiciously small");
    let contains = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
    assert!(!contains(marker.as_bytes()), "a reading is stored in clear");
    for s in &secrets {
        assert!(
            !contains(s),
            "a key that opens records is in the hub's database"
        );
        assert!(!contains(hex::encode(s).as_bytes()));
    }
    // The check can fail: the device's session key (which the hub must hold) is found.
    assert!(contains(admitted.session_key.expose()));
}

fn skip(keys: &LinkKeys, from: u64, until: u64) -> Vec<u8> {
    let m = custos_proto::uplink::seal_skip(&RustCrypto, keys, DEV, from, until).unwrap();
    let mut body = (m.len() as u16).to_be_bytes().to_vec();
    body.extend_from_slice(&m);
    body
}

async fn gaps(f: &Fixture) -> serde_json::Value {
    let (status, body) = call(f, "GET", &format!("/v1/devices/{DEV}/gaps"), vec![]).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).unwrap()
}

#[tokio::test]
async fn skip_notices_account_for_gaps_and_only_the_device_can_send_them() {
    let f = fixture().await;
    register(&f, DEV, NOW + 600).await;
    let admitted = join(&f, DEV, &CODE).await.unwrap();
    let keys = LinkKeys::derive(&RustCrypto, &admitted.session_key).unwrap();
    let path = format!("/v1/devices/{DEV}/uplinks");
    let msgs: Vec<(u64, Vec<u8>)> = [0u64, 1, 2, 5, 9]
        .iter()
        .map(|&i| (i, reading(NOW + i as i64 * 60, "20.0")))
        .collect();
    let (status, _) = call(&f, "POST", &path, batch(&keys, DEV, &msgs)).await;
    assert_eq!(status, StatusCode::OK);
    let g = gaps(&f).await;
    assert_eq!(g["gaps"], serde_json::json!([[3, 5], [6, 9]]));
    assert_eq!(
        (g["missing"].as_u64(), g["max_seq"].as_i64()),
        (Some(5), Some(9))
    );

    // A skip notice from someone without the device's key changes nothing.
    let forged = LinkKeys::derive(&RustCrypto, &Secret::from_bytes([9; 32])).unwrap();
    let (status, _) = call(&f, "POST", &path, skip(&forged, 3, 9)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(gaps(&f).await["gaps"], serde_json::json!([[3, 5], [6, 9]]));

    // The device's own notices, one alone and one in a batch with a record, are acked "noted" in order.
    let (status, acks) = call(&f, "POST", &path, skip(&keys, 3, 5)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(verdicts(&keys, &acks), [(3, Verdict::Noted)]);
    let mut mixed = skip(&keys, 6, 8);
    mixed.extend(batch(&keys, DEV, &[(10, reading(NOW + 600, "20.1"))]));
    let (status, acks) = call(&f, "POST", &path, mixed).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        verdicts(&keys, &acks),
        [(6, Verdict::Noted), (10, Verdict::Stored)]
    );
    // What is left is a real loss: seq 8, never stored nor skipped.
    let g = gaps(&f).await;
    assert_eq!(g["gaps"], serde_json::json!([[8, 9]]));
    assert_eq!(g["missing"], 1);
    // Saying it twice is harmless.
    let (status, _) = call(&f, "POST", &path, skip(&keys, 3, 5)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(gaps(&f).await["gaps"], serde_json::json!([[8, 9]]));
}

#[tokio::test]
async fn bad_paths_and_oversized_bodies_get_json_errors() {
    let f = fixture().await;
    // Invalid UTF-8 in a percent-escape: axum's own refusal would be text/plain.
    for path in [
        "/v1/devices/%FF%FE/records?epoch=1",
        "/v1/devices/%FF/gaps",
        "/v1/requests/%C3%28/answer",
        "/v1/pairing/%FF/to-device",
    ] {
        let (status, body) = call(&f, "GET", path, vec![]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}");
        let v: serde_json::Value = serde_json::from_slice(&body)
            .unwrap_or_else(|_| panic!("{path}: not JSON: {}", String::from_utf8_lossy(&body)));
        assert_eq!(v["error"], "bad_request", "{path}");
    }
    // Each endpoint takes what its messages need, and answers 413 in JSON past that.
    for (path, size) in [
        ("/v1/requests", custos_hub::MAX_BODY + 1),
        ("/v1/answers", custos_hub::MAX_BODY + 1),
        ("/v1/admission/hello", 1025),
        (
            &format!("/v1/pairing/{DEV}/to-device") as &str,
            custos_hub::sharing::MAX_RELAYED + 1,
        ),
        (
            &format!("/v1/devices/{DEV}/uplinks"),
            custos_hub::MAX_UPLOAD + 1,
        ),
    ] {
        let (status, body) = call(&f, "POST", path, vec![0xa1; size]).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{path}");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"], "too_large", "{path}");
    }
    // A page is at most MAX_PAGE records, whatever is asked.
    register(&f, DEV, NOW + 600).await;
    join(&f, DEV, &CODE).await.unwrap();
    let rows: Vec<_> = (0..u64::from(custos_hub::MAX_PAGE) + 50)
        .map(|seq| custos_store::NewRecord {
            device: DEV,
            seq,
            epoch: 1,
            leaf: 0,
            body: vec![0; 40],
            received_at: NOW,
        })
        .collect();
    f.hub.store().insert_records(&rows).await.unwrap();
    let (status, body) = call(
        &f,
        "GET",
        &format!("/v1/devices/{DEV}/records?epoch=1&limit=100000"),
        vec![],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        v["records"].as_array().unwrap().len(),
        custos_hub::MAX_PAGE as usize
    );
    assert!(v["next_after"].is_i64());
}

#[tokio::test]
async fn a_forgery_for_a_known_device_costs_no_query() {
    let f = fixture().await;
    register(&f, DEV, NOW + 600).await;
    let admitted = join(&f, DEV, &CODE).await.unwrap();
    let keys = LinkKeys::derive(&RustCrypto, &admitted.session_key).unwrap();
    let path = format!("/v1/devices/{DEV}/uplinks");
    let good = batch(&keys, DEV, &[(0, reading(NOW, "20.0"))]);
    let (status, _) = call(&f, "POST", &path, good.clone()).await;
    assert_eq!(status, StatusCode::OK);
    // With the database gone, a forgery is still refused as a forgery: it never reached the store.
    f.hub.store().close().await;
    let forged = LinkKeys::derive(&RustCrypto, &Secret::from_bytes([9; 32])).unwrap();
    let (status, body) = call(
        &f,
        "POST",
        &path,
        batch(&forged, DEV, &[(1, reading(NOW, "6"))]),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{}", message(&body));
    assert_eq!(message(&body), "message 0 failed authentication");
    // An authentic batch does need the store (for revocation and the window): now a 500, nothing claimed.
    let (status, _) = call(&f, "POST", &path, good).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
}
