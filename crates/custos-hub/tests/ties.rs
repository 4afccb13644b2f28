//! The hub as Central Entity for device-to-device keys, over a loopback socket, with the nodes played by the test
//! from `custos_proto::ties`: every mode end to end (the key the peer opens is the requester's), receipts and the
//! requester's notices, group keys; and the attacker: forged, swapped and replayed requests, a peer or requester
//! that is revoked or unknown, a reused key id, a bad expiry, reading someone else's packages or notices, a forged
//! or stranger's receipt, oversized bodies, a flood; the dead keys of a revoked device in the signed list; and a
//! scan of the hub's database for the key.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Loopback, admit, device_auth_at, wall_clock};
use custos_hub::{AccountConfig, DeviceList};
use custos_proto::ties::{
    self, KeyId, Link, NodeKeys, Refusal, Request, Seed, SessionKey, open_notice, open_package,
    open_refusal, seal_receipt,
};
use custos_proto::{DeviceId, RustCrypto, Secret};
use custos_store::Store;
use serde_json::Value;

const C: RustCrypto = RustCrypto;
const A: DeviceId = DeviceId([0x02, 0, 0x5e, 0x10, 0, 0, 0, 0xa1]);
const B: DeviceId = DeviceId([0x02, 0, 0x5e, 0x10, 0, 0, 0, 0xb2]);
const D: DeviceId = DeviceId([0x02, 0, 0x5e, 0x10, 0, 0, 0, 0xd4]);
const X: DeviceId = DeviceId([0x02, 0, 0x5e, 0x10, 0, 0, 0, 0x99]);

fn sdk(d: DeviceId) -> [u8; 32] {
    [d.0[7]; 32]
}

fn keys(d: DeviceId) -> NodeKeys {
    NodeKeys::derive(&C, &Secret::from_bytes(sdk(d))).unwrap()
}

fn now() -> u64 {
    wall_clock() as u64
}

struct Net {
    hub: Loopback,
    http: reqwest::Client,
}

async fn net() -> Net {
    let hub = Loopback::start(AccountConfig::default()).await;
    let at = wall_clock();
    for d in [A, B, D] {
        admit(hub.hub.store(), d, sdk(d), at).await;
    }
    Net {
        hub,
        http: custos_client::tls::http_client(
            reqwest::Client::builder().no_proxy(),
            &custos_client::TlsTrust::System,
        )
        .unwrap(),
    }
}

impl Net {
    async fn post(&self, path: &str, body: &[u8]) -> (u16, Value) {
        let r = self
            .http
            .post(self.hub.url(path))
            .body(body.to_vec())
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (
            status,
            serde_json::from_slice(&r.bytes().await.unwrap()).unwrap_or(Value::Null),
        )
    }

    async fn get(&self, path: &str, auth: Option<String>) -> (u16, Value) {
        let mut req = self.http.get(self.hub.url(path));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        (
            status,
            serde_json::from_slice(&r.bytes().await.unwrap()).unwrap_or(Value::Null),
        )
    }

    /// Sends `req` (with `seed` for KTC) as its requester.
    async fn ask(&self, req: &Request, seed: Option<&Seed>) -> (u16, Value) {
        let msg = req.seal(&C, &keys(req.requester), seed).unwrap();
        self.post(
            &format!("/v1/devices/{}/keys", req.requester),
            msg.as_bytes(),
        )
        .await
    }

    /// The packages waiting for `d`, with its own device token.
    async fn waiting(&self, d: DeviceId) -> Vec<Vec<u8>> {
        let (s, v) = self
            .get(
                &format!("/v1/devices/{d}/keys"),
                Some(device_auth_at(sdk(d), d, wall_clock())),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        v["packages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| hex::decode(p["body"].as_str().unwrap()).unwrap())
            .collect()
    }

    async fn receipt(&self, peer: DeviceId, key: &SessionKey) -> u16 {
        let r = seal_receipt(&C, peer, &keys(peer), key.requester(), &key.kid()).unwrap();
        self.post(&format!("/v1/devices/{peer}/keys/receipts"), &r)
            .await
            .0
    }
}

fn kid(n: u8) -> KeyId {
    [n, 0xee, 0, 0, 0, 0, 0, n]
}

fn seed(n: u8) -> Seed {
    Seed::from_bytes([n; 16])
}

fn hexes(v: &Value) -> Vec<Vec<u8>> {
    v["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| hex::decode(p.as_str().unwrap()).unwrap())
        .collect()
}

/// Both ends hold the same key: a confirmation each way and a message go through.
fn same_key(requester: SessionKey, peer: SessionKey, peer_id: DeviceId) {
    let me = requester.requester();
    assert_eq!(peer.requester(), me);
    assert_eq!(peer.kid(), requester.kid());
    let mut r: Link = requester.link(me).unwrap();
    let mut q: Link = peer.link(peer_id).unwrap();
    let c = r.confirm_to(&C, peer_id, now()).unwrap();
    let answer = q.accept_confirmation(&C, me, &c, now()).unwrap().unwrap();
    assert!(
        r.accept_confirmation(&C, peer_id, &answer, now())
            .unwrap()
            .is_none()
    );
    assert!(r.is_confirmed(peer_id) && q.is_confirmed(me));
    let mut out = [0u8; 64];
    let n = r.seal(&C, b"open the valve", &mut out, now()).unwrap();
    assert_eq!(
        q.open(&C, me, &mut out[..n], now()).unwrap(),
        b"open the valve"
    );
}

#[tokio::test]
async fn ktc_direct_delivers_to_the_peer_which_confirms_and_the_requester_hears_of_it() {
    let n = net().await;
    let expires = (now() + 3600) as u32;
    let req = Request::new(ties::KTC_DIRECT, A, &[B], kid(1), expires).unwrap();
    let (s, v) = n.ask(&req, Some(&seed(1))).await;
    assert_eq!(s, 201, "{v}");
    assert!(hexes(&v).is_empty(), "direct: nothing for the requester");
    let mine = req.session_key(&C, &seed(1)).unwrap();

    // The requester's status shows no holder yet.
    let auth_a = device_auth_at(sdk(A), A, wall_clock());
    let (s, v) = n
        .get(
            &format!("/v1/devices/{A}/keys/{}", hex::encode(kid(1))),
            Some(auth_a.clone()),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert!(v["peers"][0]["notice"].is_null());

    let got = n.waiting(B).await;
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].len(),
        53,
        "a delivery with one other holder is 53 bytes"
    );
    let theirs = open_package(&C, B, &keys(B), &got[0], now()).unwrap();
    assert_eq!(n.receipt(B, &theirs).await, 200);
    // Delivered once: after the receipt the hub holds nothing for B.
    assert!(n.waiting(B).await.is_empty());

    let (s, v) = n
        .get(
            &format!("/v1/devices/{A}/keys/{}?wait=5", hex::encode(kid(1))),
            Some(auth_a),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let notice = hex::decode(v["peers"][0]["notice"].as_str().unwrap()).unwrap();
    assert_eq!(open_notice(&C, A, &keys(A), &notice).unwrap(), (B, kid(1)));
    same_key(mine, theirs, B);
}

#[tokio::test]
async fn every_mode_and_a_group_key_give_every_member_the_same_key() {
    let n = net().await;
    let expires = (now() + 600) as u32;
    for (i, kind) in [ties::KTC_INDIRECT, ties::KDC_DIRECT, ties::KDC_INDIRECT]
        .into_iter()
        .enumerate()
    {
        let k = kid(10 + i as u8);
        let req = Request::new(kind, A, &[B, D], k, expires).unwrap();
        let s0 = seed(10 + i as u8);
        let ktc = !ties::is_distribution(kind);
        let (s, v) = n.ask(&req, ktc.then_some(&s0)).await;
        assert_eq!(s, 201, "{kind:#x}: {v}");
        let mut packages = hexes(&v).into_iter();
        let mine = if ktc {
            req.session_key(&C, &s0).unwrap()
        } else {
            let grant = packages.next().unwrap();
            assert_eq!(grant[0], ties::GRANT);
            open_package(&C, A, &keys(A), &grant, now()).unwrap()
        };
        let (for_b, for_d) = if ties::is_direct(kind) {
            assert_eq!(packages.len(), 0);
            (n.waiting(B).await.remove(0), n.waiting(D).await.remove(0))
        } else {
            assert!(
                n.waiting(B).await.is_empty(),
                "indirect: the hub holds nothing"
            );
            (packages.next().unwrap(), packages.next().unwrap())
        };
        let kb = open_package(&C, B, &keys(B), &for_b, now()).unwrap();
        let kd = open_package(&C, D, &keys(D), &for_d, now()).unwrap();
        // A package forwarded to the wrong peer opens for no one else.
        assert!(open_package(&C, D, &keys(D), &for_b, now()).is_err());
        assert_eq!(n.receipt(B, &kb).await, 200);
        assert_eq!(n.receipt(D, &kd).await, 200);
        same_key(mine.clone(), kb, B);
        same_key(mine, kd, D);
    }
}

#[tokio::test]
async fn the_hub_refuses_with_a_reason_the_requester_can_check() {
    let n = net().await;
    let hub = &n.hub.hub;
    let expires = (now() + 600) as u32;
    let refusal = |v: &Value| hex::decode(v["refusal"].as_str().unwrap()).unwrap();

    // A peer the hub does not know, then one it revoked.
    for (k, peer) in [(kid(20), X), (kid(21), D)] {
        if peer == D {
            hub.store().revoke(D, wall_clock()).await.unwrap();
        }
        let req = Request::new(ties::KTC_DIRECT, A, &[B, peer], k, expires).unwrap();
        let (s, v) = n.ask(&req, Some(&seed(2))).await;
        assert_eq!(s, 403, "{v}");
        assert_eq!(
            open_refusal(&C, A, &keys(A), &refusal(&v)).unwrap(),
            (k, Refusal::PeerNotAuthorized)
        );
        // Nothing went to the authorized peer either.
        assert!(n.waiting(B).await.is_empty());
    }

    // Expiry in the past, too near, too far.
    for (i, e) in [now() - 10, now() + 30, now() + 8 * 86_400]
        .into_iter()
        .enumerate()
    {
        let k = kid(30 + i as u8);
        let req = Request::new(ties::KDC_DIRECT, A, &[B], k, e as u32).unwrap();
        let (s, v) = n.ask(&req, None).await;
        assert_eq!(s, 422, "{v}");
        assert_eq!(
            open_refusal(&C, A, &keys(A), &refusal(&v)).unwrap(),
            (k, Refusal::BadExpiry)
        );
    }

    // A key id used twice: refused even with another seed and other peers (the zero nonce must never repeat).
    let req = Request::new(ties::KTC_INDIRECT, A, &[B], kid(40), expires).unwrap();
    assert_eq!(n.ask(&req, Some(&seed(4))).await.0, 201);
    let again = Request::new(ties::KTC_INDIRECT, A, &[B], kid(40), expires).unwrap();
    let (s, v) = n.ask(&again, Some(&seed(5))).await;
    assert_eq!(s, 409, "{v}");
    assert_eq!(
        open_refusal(&C, A, &keys(A), &refusal(&v)).unwrap(),
        (kid(40), Refusal::KeyIdReused)
    );
    // A refusal is not the requester's to believe if altered.
    let mut forged = refusal(&v);
    forged[9] = Refusal::BadExpiry as u8;
    assert!(open_refusal(&C, A, &keys(A), &forged).is_err());
}

#[tokio::test]
async fn forged_swapped_and_revoked_requests_get_nothing() {
    let n = net().await;
    let expires = (now() + 600) as u32;
    let req = Request::new(ties::KTC_INDIRECT, A, &[B], kid(50), expires).unwrap();
    let msg = req.seal(&C, &keys(A), Some(&seed(5))).unwrap();

    // A's request posted as B's (N1 and N2 swapped): B's keys do not open it.
    let (s, v) = n
        .post(&format!("/v1/devices/{B}/keys"), msg.as_bytes())
        .await;
    assert_eq!(s, 401, "{v}");
    // A flipped bit anywhere.
    for i in 0..msg.as_bytes().len() {
        let mut m = msg.as_bytes().to_vec();
        m[i] ^= 1;
        let (s, _) = n.post(&format!("/v1/devices/{A}/keys"), &m).await;
        assert_eq!(s, 401, "byte {i}");
    }
    // Sealed under another device's keys.
    let wrong = req.seal(&C, &keys(D), Some(&seed(5))).unwrap();
    assert_eq!(
        n.post(&format!("/v1/devices/{A}/keys"), wrong.as_bytes())
            .await
            .0,
        401
    );
    // Junk, empty, oversized, unknown device.
    assert_eq!(n.post(&format!("/v1/devices/{A}/keys"), b"").await.0, 401);
    assert_eq!(
        n.post(&format!("/v1/devices/{A}/keys"), &[0x41; 300])
            .await
            .0,
        413
    );
    assert_eq!(
        n.post(&format!("/v1/devices/{X}/keys"), msg.as_bytes())
            .await
            .0,
        403
    );
    assert_eq!(
        n.post("/v1/devices/nonsense/keys", msg.as_bytes()).await.0,
        400
    );

    // A revoked requester gets nothing, not even a refusal to study.
    n.hub.hub.store().revoke(A, wall_clock()).await.unwrap();
    let (s, v) = n
        .post(&format!("/v1/devices/{A}/keys"), msg.as_bytes())
        .await;
    assert_eq!(s, 403, "{v}");
    assert!(v["refusal"].is_null() && v["packages"].is_null());
    assert!(n.waiting(B).await.is_empty());
}

#[tokio::test]
async fn packages_notices_and_receipts_are_for_their_own_devices_only() {
    let n = net().await;
    let expires = (now() + 600) as u32;
    let req = Request::new(ties::KDC_DIRECT, A, &[B], kid(60), expires).unwrap();
    assert_eq!(n.ask(&req, None).await.0, 201);
    let path_b = format!("/v1/devices/{B}/keys");
    // No token, D's token on B's path, B's token made an hour ago.
    assert_eq!(n.get(&path_b, None).await.0, 401);
    let d_token = device_auth_at(sdk(D), D, wall_clock());
    assert_eq!(n.get(&path_b, Some(d_token.clone())).await.0, 401);
    assert_eq!(
        n.get(
            &path_b,
            Some(device_auth_at(sdk(B), B, wall_clock() - 3600))
        )
        .await
        .0,
        401
    );
    // D cannot read A's notices.
    let status_a = format!("/v1/devices/{A}/keys/{}", hex::encode(kid(60)));
    assert_eq!(n.get(&status_a, Some(d_token)).await.0, 401);

    let got = n.waiting(B).await;
    let kb = open_package(&C, B, &keys(B), &got[0], now()).unwrap();
    // D says it holds A's key: it is no peer of it.
    let r = seal_receipt(&C, D, &keys(D), A, &kid(60)).unwrap();
    assert_eq!(
        n.post(&format!("/v1/devices/{D}/keys/receipts"), &r)
            .await
            .0,
        404
    );
    // A receipt for B made by D, or posted under another path, does not verify.
    let forged = seal_receipt(&C, B, &keys(D), A, &kid(60)).unwrap();
    assert_eq!(
        n.post(&format!("/v1/devices/{B}/keys/receipts"), &forged)
            .await
            .0,
        401
    );
    let real = seal_receipt(&C, B, &keys(B), A, &kid(60)).unwrap();
    assert_eq!(
        n.post(&format!("/v1/devices/{D}/keys/receipts"), &real)
            .await
            .0,
        401
    );
    // Nobody has claimed B's receipt: the requester's status still has no notice.
    let (_, v) = n
        .get(&status_a, Some(device_auth_at(sdk(A), A, wall_clock())))
        .await;
    assert!(v["peers"][0]["notice"].is_null());
    assert_eq!(n.receipt(B, &kb).await, 200);
    // Twice is fine (a receipt lost on the way is sent again).
    assert_eq!(n.receipt(B, &kb).await, 200);
    // An unknown key id.
    let status_x = format!("/v1/devices/{A}/keys/{}", hex::encode(kid(61)));
    assert_eq!(
        n.get(&status_x, Some(device_auth_at(sdk(A), A, wall_clock())))
            .await
            .0,
        404
    );
}

#[tokio::test]
async fn a_revoked_devices_keys_are_dead_in_the_signed_list() {
    let n = net().await;
    let hub = &n.hub.hub;
    let expires = (now() + 600) as u32;
    let req = Request::new(ties::KTC_DIRECT, A, &[B], kid(70), expires).unwrap();
    assert_eq!(n.ask(&req, Some(&seed(7))).await.0, 201);
    let other = Request::new(ties::KTC_DIRECT, A, &[D], kid(71), expires).unwrap();
    assert_eq!(n.ask(&other, Some(&seed(8))).await.0, 201);
    hub.store().revoke(B, wall_clock()).await.unwrap();
    hub.publish_device_list().await.unwrap();
    let (_, signed) = hub.store().device_list().await.unwrap().unwrap();
    let list = DeviceList::verify(&C, &signed, &hub.keys().signing_public()).unwrap();
    assert!(!list.devices.contains(&B));
    assert_eq!(list.dead, vec![(A, kid(70), i64::from(expires))]);
    // And the revoked peer's package is no longer handed out (its token is refused).
    let (s, _) = n
        .get(
            &format!("/v1/devices/{B}/keys"),
            Some(device_auth_at(sdk(B), B, wall_clock())),
        )
        .await;
    assert_eq!(s, 403);
}

#[tokio::test]
async fn the_hub_keeps_no_copy_of_the_key() {
    let n = net().await;
    let expires = (now() + 600) as u32;
    let secret = [0x5a; 16];
    // Group keys (peers in rows of their own) and a two-party key (its peer and package in the key's row).
    for (k, kind, peers) in [
        (kid(80), ties::KTC_DIRECT, &[B, D][..]),
        (kid(81), ties::KTC_INDIRECT, &[B, D][..]),
        (kid(82), ties::KTC_DIRECT, &[D][..]),
    ] {
        let req = Request::new(kind, A, peers, k, expires).unwrap();
        assert_eq!(n.ask(&req, Some(&Seed::from_bytes(secret))).await.0, 201);
    }
    let got = n.waiting(B).await;
    let kb = open_package(&C, B, &keys(B), &got[0], now()).unwrap();
    assert_eq!(n.receipt(B, &kb).await, 200);
    // Everything the store wrote: the database and its write-ahead log.
    let mut scanned = 0;
    for bytes in common::files_in(n.hub.dir()) {
        scanned += bytes.len();
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret),
            "the seed is in the hub's store"
        );
    }
    assert!(scanned > 0);
}

#[tokio::test]
async fn a_flood_of_requests_from_one_device_is_rate_limited() {
    let n = net().await;
    let expires = (now() + 600) as u32;
    // Twice the burst at once: far more than the sustained rate can refill meanwhile.
    let n = std::sync::Arc::new(n);
    let mut all = tokio::task::JoinSet::new();
    for i in 0..(2 * custos_hub::ties::KEY_BURST) {
        let n = n.clone();
        all.spawn(async move {
            let mut k = [0u8; 8];
            k[..4].copy_from_slice(&i.to_be_bytes());
            let req = Request::new(ties::KDC_INDIRECT, A, &[B], k, expires).unwrap();
            n.ask(&req, None).await.0
        });
    }
    let mut limited = 0;
    while let Some(s) = all.join_next().await {
        match s.unwrap() {
            201 => {}
            429 => limited += 1,
            s => panic!("status {s}"),
        }
    }
    assert!(limited >= 10, "{limited} requests limited");
    // Another device is not held back by A's flood.
    let req = Request::new(ties::KDC_INDIRECT, B, &[A], kid(90), expires).unwrap();
    assert_eq!(n.ask(&req, None).await.0, 201);
}

/// Direct deliveries also go out on MQTT `{prefix}/{peer}/keys` (the real broker on 127.0.0.1:1883, a random
/// prefix): the payload is the delivery itself, which opens for the peer, and nothing goes to the requester's topic.
#[tokio::test]
async fn direct_deliveries_are_published_on_mqtt() {
    use std::time::Duration;

    use rand_core::{OsRng, RngCore};
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::mqttbytes::v5::Packet;
    use rumqttc::v5::{AsyncClient, Event, MqttOptions};

    let n = net().await;
    let mut r = [0u8; 6];
    OsRng.fill_bytes(&mut r);
    let prefix = format!("custos-test-{}", hex::encode(r));
    let config = custos_hub::mqtt::MqttConfig {
        url: "mqtt://127.0.0.1:1883".into(),
        trust: custos_client::TlsTrust::default(),
        prefix: prefix.clone(),
        client_id: format!("hub-{prefix}"),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let hub = n.hub.hub.clone();
    let running = tokio::spawn(async move {
        custos_hub::mqtt::run(hub, config, async {
            let _ = stopped.await;
        })
        .await
    });
    let mut opts = MqttOptions::new(format!("dev-{prefix}"), "127.0.0.1", 1883);
    opts.set_max_packet_size(Some(1 << 16));
    let (client, mut events) = AsyncClient::new(opts, 64);
    for d in [A, B] {
        client
            .subscribe(format!("{prefix}/{d}/keys"), QoS::AtLeastOnce)
            .await
            .unwrap();
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let pump = tokio::spawn(async move {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let _ = tx.send((
                        String::from_utf8_lossy(&p.topic).into_owned(),
                        p.payload.to_vec(),
                    ));
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    // Until both sides are connected and subscribed, a publish may be lost: ask again until one arrives.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let expires = (now() + 600) as u32;
    let mut i = 0u8;
    let (topic, payload) = loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no delivery over MQTT"
        );
        i += 1;
        let req = Request::new(ties::KTC_DIRECT, A, &[B], kid(100 + i), expires).unwrap();
        assert_eq!(n.ask(&req, Some(&seed(i))).await.0, 201);
        if let Ok(Some(got)) = tokio::time::timeout(Duration::from_millis(700), rx.recv()).await {
            break got;
        }
    };
    assert_eq!(topic, format!("{prefix}/{B}/keys"));
    let key = open_package(&C, B, &keys(B), &payload, now()).unwrap();
    assert_eq!(key.requester(), A);
    // The same package is what HTTP hands out.
    assert!(n.waiting(B).await.contains(&payload));
    let _ = stop.send(());
    running.await.unwrap().unwrap();
    pump.abort();
}

/// A gateway's batch (`POST /v1/keys`): one outcome per request, in order, each as the single endpoint would
/// answer it; a forged or unknown requester's request is not taken; a key id twice in one batch is refused the
/// second time; malformed framing is refused whole.
#[tokio::test]
async fn a_gateway_batch_answers_each_request_in_order() {
    let n = net().await;
    n.hub.hub.store().revoke(D, wall_clock()).await.unwrap();
    let expires = (now() + 600) as u32;
    let frame = |requester: DeviceId, msg: &[u8]| {
        let mut f = ((8 + msg.len()) as u16).to_be_bytes().to_vec();
        f.extend_from_slice(&requester.0);
        f.extend_from_slice(msg);
        f
    };
    let ktc = Request::new(ties::KTC_DIRECT, A, &[B], kid(1), expires).unwrap();
    let kdc = Request::new(ties::KDC_INDIRECT, B, &[A], kid(2), expires).unwrap();
    let to_revoked = Request::new(ties::KTC_INDIRECT, A, &[D], kid(3), expires).unwrap();
    let mut forged = ktc
        .seal(&C, &keys(A), Some(&seed(1)))
        .unwrap()
        .as_bytes()
        .to_vec();
    let last = forged.len() - 1;
    forged[last] ^= 1;
    let mut body = Vec::new();
    body.extend(frame(
        A,
        ktc.seal(&C, &keys(A), Some(&seed(1))).unwrap().as_bytes(),
    ));
    body.extend(frame(B, kdc.seal(&C, &keys(B), None).unwrap().as_bytes()));
    body.extend(frame(A, &forged));
    body.extend(frame(
        X,
        ktc.seal(&C, &keys(X), Some(&seed(1))).unwrap().as_bytes(),
    ));
    body.extend(frame(
        A,
        to_revoked
            .seal(&C, &keys(A), Some(&seed(3)))
            .unwrap()
            .as_bytes(),
    ));
    // The first request again, in the same batch.
    body.extend(frame(
        A,
        ktc.seal(&C, &keys(A), Some(&seed(9))).unwrap().as_bytes(),
    ));
    let r = n
        .http
        .post(n.hub.url("/v1/keys"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let out = r.bytes().await.unwrap().to_vec();
    let mut outcomes = Vec::new();
    let mut rest = &out[..];
    while !rest.is_empty() {
        let len = u16::from_be_bytes([rest[0], rest[1]]) as usize;
        outcomes.push(rest[2..2 + len].to_vec());
        rest = &rest[2 + len..];
    }
    assert_eq!(outcomes.len(), 6);
    // 1: issued, nothing for the requester (direct); B gets it from the hub.
    assert_eq!(outcomes[0], [0x00, 0]);
    let got = n.waiting(B).await;
    assert_eq!(got.len(), 1);
    let kb = open_package(&C, B, &keys(B), &got[0], now()).unwrap();
    same_key(ktc.session_key(&C, &seed(1)).unwrap(), kb, B);
    // 2: issued: the grant, then the delivery to forward.
    assert_eq!(&outcomes[1][..2], [0x00, 2]);
    let mut p = &outcomes[1][2..];
    let mut packages = Vec::new();
    while !p.is_empty() {
        let len = u16::from_be_bytes([p[0], p[1]]) as usize;
        packages.push(p[2..2 + len].to_vec());
        p = &p[2 + len..];
    }
    let mine = open_package(&C, B, &keys(B), &packages[0], now()).unwrap();
    let theirs = open_package(&C, A, &keys(A), &packages[1], now()).unwrap();
    same_key(mine, theirs, A);
    // 3, 4: not taken (a bad tag; a device the hub does not know).
    assert_eq!(outcomes[2], [0x02]);
    assert_eq!(outcomes[3], [0x02]);
    // 5: refused, a peer revoked; 6: refused, the key id was just used.
    assert_eq!(outcomes[4][0], 0x01);
    assert_eq!(
        open_refusal(&C, A, &keys(A), &outcomes[4][1..]).unwrap(),
        (kid(3), Refusal::PeerNotAuthorized)
    );
    assert_eq!(
        open_refusal(&C, A, &keys(A), &outcomes[5][1..]).unwrap(),
        (kid(1), Refusal::KeyIdReused)
    );
    // Still one package for B: the refused duplicate stored nothing.
    assert_eq!(n.waiting(B).await.len(), 1);

    // Framing that does not add up is refused whole; an empty batch is an empty answer.
    for bad in [vec![0u8], vec![0, 20, 1, 2, 3], vec![0, 3, 1, 2, 3]] {
        let r = n
            .http
            .post(n.hub.url("/v1/keys"))
            .body(bad)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 400);
    }
    let r = n
        .http
        .post(n.hub.url("/v1/keys"))
        .body(Vec::new())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.bytes().await.unwrap().is_empty());
}

/// Single requests that arrive together are translated together (one transaction): each still gets the packages of
/// its own request, and of two at once with the same key id exactly one is issued.
#[tokio::test]
async fn concurrent_single_requests_each_get_their_own_answer() {
    let n = std::sync::Arc::new(net().await);
    let expires = (now() + 600) as u32;
    let mut all = tokio::task::JoinSet::new();
    for i in 0..60u8 {
        let n = n.clone();
        all.spawn(async move {
            let (requester, peer) = [(A, B), (B, D), (D, A)][usize::from(i / 2 % 3)];
            // Key ids 100..129 twice each, from the same requester: every pair races.
            let k = kid(100 + i / 2);
            let req = Request::new(ties::KDC_INDIRECT, requester, &[peer], k, expires).unwrap();
            let (s, v) = n.ask(&req, None).await;
            (i, requester, peer, k, s, v)
        });
    }
    let mut issued = std::collections::HashMap::new();
    while let Some(r) = all.join_next().await {
        let (i, requester, peer, k, s, v) = r.unwrap();
        match s {
            201 => {
                assert_eq!(v["kid"], hex::encode(k), "request {i}");
                let mut p = hexes(&v).into_iter();
                let mine = open_package(&C, requester, &keys(requester), &p.next().unwrap(), now())
                    .unwrap();
                assert_eq!(mine.kid(), k, "request {i} got another request's grant");
                let theirs =
                    open_package(&C, peer, &keys(peer), &p.next().unwrap(), now()).unwrap();
                same_key(mine, theirs, peer);
                assert!(
                    issued.insert((requester, k), i).is_none(),
                    "key id {k:?} issued twice"
                );
            }
            409 => {
                let msg = hex::decode(v["refusal"].as_str().unwrap()).unwrap();
                assert_eq!(
                    open_refusal(&C, requester, &keys(requester), &msg).unwrap(),
                    (k, Refusal::KeyIdReused)
                );
            }
            s => panic!("request {i}: status {s}: {v}"),
        }
    }
    assert_eq!(issued.len(), 30, "each key id issued exactly once");
}
