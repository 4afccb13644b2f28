//! The hub and its infield identity registry (a real registry on loopback): admission requires a
//! manufacturer-certified identity for the device's key; a certificate for the same device id with another key, or
//! one certified by a stranger, does not count; a device marked stolen is refused at admission, and one marked
//! stolen after it joined is revoked: its next message is refused and the signed device list drops it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use axum::body::{Body, to_bytes};
use axum::http::{Request, StatusCode};
use custos_hub::identity::{RegistryLink, revoke_by_status};
use custos_hub::{DeviceList, Hub, HubKeys, app};
use custos_proto::admission::{Admitted, DeviceAwaitingResponse};
use custos_proto::uplink::{LinkKeys, UPLINK_OVERHEAD, seal_uplink};
use custos_proto::{Crypto, DeviceId, RustCrypto, Secret};
use custos_registry::cert::{self, Claims, Ed25519Key};
use custos_registry::policy::policy_toml;
use custos_registry::statement::{Statement, Status};
use custos_registry::{Policy, Registry};
use custos_store::{PendingAdmission, SqliteStore, Store};
use tower::ServiceExt;

const NOW: i64 = 1_780_000_000;
const CODE: [u8; 16] = *b"join-code-0001!!";

fn now() -> i64 {
    NOW
}

struct World {
    _dir: tempfile::TempDir,
    hub: Arc<Hub<SqliteStore>>,
    registry: Arc<Registry<SqliteStore>>,
    maker: Ed25519Key,
    maint: Ed25519Key,
}

async fn world(require_identity: bool) -> World {
    let dir = tempfile::tempdir().unwrap();
    let maker = Ed25519Key::from_seed(&[1; 32], NOW as u32).unwrap();
    let maint = Ed25519Key::from_seed(&[2; 32], NOW as u32).unwrap();
    let policy = Policy::parse(&policy_toml(
        "infield",
        "site",
        &[
            ("acme", &maker.fingerprint(), &["manufacturer"]),
            ("maint", &maint.fingerprint(), &["maintainer"]),
        ],
        &[("site", &["*"], &["acme", "maint"])],
    ))
    .unwrap();
    let rstore = SqliteStore::open(&dir.path().join("registry.db"))
        .await
        .unwrap();
    let registry = Arc::new(
        Registry::open(rstore, policy, Secret::from_bytes([5; 32]))
            .await
            .unwrap(),
    );
    for (k, uid) in [(&maker, "Acme"), (&maint, "Maint")] {
        registry
            .submit_certs(
                &cert::to_bytes(&cert::party_certificate(k, uid).unwrap()).unwrap(),
                None,
                NOW as u64,
            )
            .await
            .unwrap();
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let router = custos_registry::http::app(registry.clone());
    tokio::spawn(async move { axum::serve(listener, router).await });
    let store = SqliteStore::open(&dir.path().join("hub.db")).await.unwrap();
    let hub = Hub::with_clock(store, HubKeys::generate(), now);
    assert!(hub.set_registry(RegistryLink::new(&url, require_identity).unwrap()));
    World {
        _dir: dir,
        hub,
        registry,
        maker,
        maint,
    }
}

fn device(n: u8) -> (DeviceId, Secret) {
    (
        DeviceId([0x02, 0, 0, 0, 0, 0, 0, n]),
        Secret::from_bytes([0x30 + n; 32]),
    )
}

/// The device's certificate, certified by `by` in `role`, published at the registry.
async fn publish(w: &World, n: u8, by: &Ed25519Key, role: &str, key_of: u8) -> [u8; 20] {
    let (id, _) = device(n);
    let (_, secret) = device(key_of);
    let public = RustCrypto.x25519_public(&secret);
    let identity =
        Ed25519Key::from_seed(&cert::device_identity_seed(secret.expose(), id), NOW as u32)
            .unwrap();
    let mut c = cert::device_certificate(&identity, id, public).unwrap();
    let sig = cert::certify(
        by,
        &c,
        &Claims {
            role: role.into(),
            attributes: vec![],
        },
        NOW as u32,
    )
    .unwrap();
    c.details.users[0].signatures.push(sig);
    // Refused outright if nobody the policy knows certified it; that is fine for the attacker cases.
    let _ = w
        .registry
        .submit_certs(&cert::to_bytes(&c).unwrap(), None, NOW as u64)
        .await;
    identity.fingerprint()
}

async fn call(hub: &Arc<Hub<SqliteStore>>, path: &str, body: Vec<u8>) -> (StatusCode, Vec<u8>) {
    let req = Request::builder()
        .method("POST")
        .uri(path)
        .body(Body::from(body))
        .unwrap();
    let resp = app(hub.clone()).oneshot(req).await.unwrap();
    let status = resp.status();
    (
        status,
        to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap()
            .to_vec(),
    )
}

async fn join(w: &World, n: u8) -> Result<Admitted, (StatusCode, String)> {
    let (id, secret) = device(n);
    w.hub
        .store()
        .put_admission(&PendingAdmission {
            device: id,
            join_code: CODE,
            created_at: NOW - 10,
            expires_at: NOW + 600,
        })
        .await
        .unwrap();
    let (dev, hello) =
        DeviceAwaitingResponse::start(id, &secret, &CODE, Secret::from_bytes([n; 32]), None)
            .unwrap();
    let (status, body) = call(&w.hub, "/v1/admission/hello", hello).await;
    if status != StatusCode::OK {
        return Err((status, String::from_utf8_lossy(&body).into()));
    }
    let (hid, response) = body.split_at(16);
    let (dev, finish) = dev.read_response(response).unwrap();
    let mut req = hid.to_vec();
    req.extend_from_slice(&finish);
    let (status, body) = call(&w.hub, "/v1/admission/finish", req).await;
    if status != StatusCode::OK {
        return Err((status, String::from_utf8_lossy(&body).into()));
    }
    Ok(dev.read_welcome(&body).unwrap())
}

async fn stolen(w: &World, subject: [u8; 20]) {
    let s = Statement::Status {
        signer: w.maint.fingerprint(),
        subject: subject.to_vec(),
        issued_at: NOW as u64,
        status: Status::Stolen,
        domain: "site".into(),
        note: "gone from the ward".into(),
    };
    w.registry
        .submit_statement(&s.sign(&w.maint).unwrap(), NOW as u64)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_requires_a_manufacturer_certified_identity_for_the_devices_key() {
    let w = world(true).await;
    // Nothing at the registry yet: refused, and the join code is not used up.
    let e = join(&w, 1).await.unwrap_err();
    assert_eq!(e.0, StatusCode::FORBIDDEN, "{}", e.1);
    assert!(
        e.1.contains("no manufacturer-certified identity"),
        "{}",
        e.1
    );
    // A certificate for this device id but another key, certified by the manufacturer: not this device's.
    publish(&w, 1, &w.maker, "manufacturer", 9).await;
    assert_eq!(join(&w, 1).await.unwrap_err().0, StatusCode::FORBIDDEN);
    // Its own key, but certified only by a party that is not its manufacturer.
    publish(&w, 1, &w.maint, "maintainer", 1).await;
    assert_eq!(join(&w, 1).await.unwrap_err().0, StatusCode::FORBIDDEN);
    // Its own key, certified by its manufacturer: admitted.
    publish(&w, 1, &w.maker, "manufacturer", 1).await;
    join(&w, 1).await.unwrap();
    assert!(w.hub.store().device(device(1).0).await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_marked_stolen_is_refused_and_revoked() {
    let w = world(false).await;
    // Marked stolen before it joins: refused even by a hub that does not require identities.
    let fpr = publish(&w, 2, &w.maker, "manufacturer", 2).await;
    stolen(&w, fpr).await;
    let e = join(&w, 2).await.unwrap_err();
    assert_eq!(e.0, StatusCode::FORBIDDEN);
    assert!(e.1.contains("stolen"), "{}", e.1);

    // Joined, then marked stolen: the hub's status watch revokes it.
    let fpr = publish(&w, 3, &w.maker, "manufacturer", 3).await;
    let admitted = join(&w, 3).await.unwrap();
    let keys = LinkKeys::derive(&RustCrypto, &admitted.session_key).unwrap();
    let uplink = |seq: u64| {
        let record = vec![0x55; 40];
        let mut m = vec![0u8; record.len() + UPLINK_OVERHEAD];
        seal_uplink(&RustCrypto, &keys, device(3).0, seq, &record, &mut m).unwrap();
        let mut body = (m.len() as u16).to_be_bytes().to_vec();
        body.extend_from_slice(&m);
        body
    };
    let path = format!("/v1/devices/{}/uplinks", device(3).0);
    let (before, _) = call(&w.hub, &path, uplink(0)).await;
    assert_ne!(
        before,
        StatusCode::FORBIDDEN,
        "admitted and not yet revoked"
    );
    let link = w.hub.registry().unwrap().clone();
    let next = revoke_by_status(&w.hub, &link, 0).await.unwrap();
    assert!(
        w.hub
            .store()
            .device(device(3).0)
            .await
            .unwrap()
            .unwrap()
            .revoked_at
            .is_none()
    );
    stolen(&w, fpr).await;
    let after = revoke_by_status(&w.hub, &link, next).await.unwrap();
    assert!(after > next);
    assert!(
        w.hub
            .store()
            .device(device(3).0)
            .await
            .unwrap()
            .unwrap()
            .revoked_at
            .is_some()
    );
    let (status, _) = call(&w.hub, &path, uplink(1)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "its next message is refused");
    let (_, list) = w.hub.store().device_list().await.unwrap().unwrap();
    let list = DeviceList::verify(&RustCrypto, &list, &w.hub.keys().signing_public()).unwrap();
    assert!(
        !list.contains(device(3).0),
        "the signed device list drops it"
    );
}
