//! Keys delivered by TPM duplication through the hub, over a loopback socket: a node registers its TPM storage
//! parent and from then on gets its deliveries and grants as TPM import blobs (in every mode, single and in gateway
//! batches), while nodes without one keep plain packages; and the attacker: a forged or a stranger's registration,
//! an unknown or revoked device, a public area that is not a P-256 storage parent, an oversized body. That the blob
//! imports into the right TPM only, and gives the same key, is custos-device's TPM test (it needs a TPM).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Loopback, admit, device_auth_at, wall_clock};
use custos_hub::AccountConfig;
use custos_proto::ties::tpm::{
    MAX_TPM_PARENT_MESSAGE, TPM_DELIVERY, TPM_GRANT, open_tpm_package, seal_tpm_parent,
};
use custos_proto::ties::{self, NodeKeys, Request, Seed, open_package};
use custos_proto::{DeviceId, RustCrypto, Secret};
use custos_store::Store;
use custos_vault::TpmImportBlob;
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

/// A P-256 storage parent's `TPM2B_PUBLIC` as a TPM marshals it, with the curve's generator as its point (any
/// point on the curve will do: the hub cannot tell, and the import is custos-device's test).
fn storage_parent() -> Vec<u8> {
    let x =
        hex::decode("6b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296").unwrap();
    let y =
        hex::decode("4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5").unwrap();
    let mut t = Vec::new();
    t.extend_from_slice(&0x0023u16.to_be_bytes()); // ECC
    t.extend_from_slice(&0x000bu16.to_be_bytes()); // SHA-256
    // fixedTPM, fixedParent, sensitiveDataOrigin, userWithAuth, noDA, restricted, decrypt.
    t.extend_from_slice(&0x0003_0472u32.to_be_bytes());
    t.extend_from_slice(&0u16.to_be_bytes()); // authPolicy
    for v in [0x0006u16, 128, 0x0043, 0x0010, 0x0003, 0x0010] {
        t.extend_from_slice(&v.to_be_bytes());
    }
    for c in [&x, &y] {
        t.extend_from_slice(&(c.len() as u16).to_be_bytes());
        t.extend_from_slice(c);
    }
    let mut out = (t.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(&t);
    out
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
    async fn send(&self, method: reqwest::Method, path: &str, body: &[u8]) -> (u16, Value) {
        let r = self
            .http
            .request(method, self.hub.url(path))
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

    async fn register(&self, d: DeviceId, as_: DeviceId, public: &[u8]) -> (u16, Value) {
        let mut out = [0u8; MAX_TPM_PARENT_MESSAGE];
        let n = seal_tpm_parent(&C, as_, &keys(as_), public, &mut out).unwrap();
        self.send(
            reqwest::Method::PUT,
            &format!("/v1/devices/{d}/keys/tpm"),
            &out[..n],
        )
        .await
    }

    async fn ask(&self, req: &Request, seed: Option<&Seed>) -> (u16, Value) {
        let msg = req.seal(&C, &keys(req.requester), seed).unwrap();
        self.send(
            reqwest::Method::POST,
            &format!("/v1/devices/{}/keys", req.requester),
            msg.as_bytes(),
        )
        .await
    }

    async fn waiting(&self, d: DeviceId) -> Vec<Vec<u8>> {
        let r = self
            .http
            .get(self.hub.url(&format!("/v1/devices/{d}/keys")))
            .header("authorization", device_auth_at(sdk(d), d, wall_clock()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let v: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
        v["packages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| hex::decode(p["body"].as_str().unwrap()).unwrap())
            .collect()
    }
}

fn hexes(v: &Value) -> Vec<Vec<u8>> {
    v["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| hex::decode(p.as_str().unwrap()).unwrap())
        .collect()
}

fn now() -> u64 {
    wall_clock() as u64
}

/// The blob in a TPM package is a well-formed import triple for a P-256 parent (230 bytes).
fn blob_of(me: DeviceId, pkg: &[u8]) -> Vec<u8> {
    let mut m = pkg.to_vec();
    let p = open_tpm_package(&C, me, &keys(me), &mut m, now()).unwrap();
    let blob = p.blob().to_vec();
    assert_eq!(blob.len(), 230);
    TpmImportBlob::from_bytes(&blob).unwrap();
    blob
}

#[tokio::test]
async fn a_registered_node_gets_tpm_packages_in_every_mode_and_others_plain_ones() {
    let n = net().await;
    let parent = storage_parent();
    let (s, v) = n.register(B, B, &parent).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["bytes"], parent.len());
    assert_eq!(
        n.hub
            .hub
            .store()
            .tpm_parents_among(&[A, B, D])
            .await
            .unwrap()[&B],
        parent
    );
    let expires = (now() + 3600) as u32;

    // KTC direct to B (TPM) and D (plain): B's delivery waits as a TPM delivery, D's as a plain one.
    let req = Request::new(ties::KTC_DIRECT, A, &[B, D], [1; 8], expires).unwrap();
    let (s, v) = n.ask(&req, Some(&Seed::from_bytes([1; 16]))).await;
    assert_eq!(s, 201, "{v}");
    let b = n.waiting(B).await;
    assert_eq!(b.len(), 1);
    assert_eq!(b[0][0], TPM_DELIVERY);
    assert_eq!(b[0].len(), 1 + 8 + 4 + 1 + 16 + 230 + 16);
    blob_of(B, &b[0]);
    // Not a plain package, and for B only.
    assert!(open_package(&C, B, &keys(B), &b[0], now()).is_err());
    assert!(open_tpm_package(&C, D, &keys(D), &mut b[0].clone(), now()).is_err());
    let d = n.waiting(D).await;
    assert_eq!(d[0][0], ties::DELIVERY);
    open_package(&C, D, &keys(D), &d[0], now()).unwrap();

    // KTC indirect: the requester gets B's TPM delivery to forward.
    let req = Request::new(ties::KTC_INDIRECT, A, &[B], [2; 8], expires).unwrap();
    let (s, v) = n.ask(&req, Some(&Seed::from_bytes([2; 16]))).await;
    assert_eq!(s, 201, "{v}");
    let p = hexes(&v);
    assert_eq!(p.len(), 1);
    assert_eq!(p[0][0], TPM_DELIVERY);
    blob_of(B, &p[0]);

    // KDC with B as the requester: its grant is a TPM grant; A's delivery is plain.
    let req = Request::new(ties::KDC_INDIRECT, B, &[A], [3; 8], expires).unwrap();
    let (s, v) = n.ask(&req, None).await;
    assert_eq!(s, 201, "{v}");
    let p = hexes(&v);
    assert_eq!(p.len(), 2);
    assert_eq!(p[0][0], TPM_GRANT);
    blob_of(B, &p[0]);
    assert_eq!(p[1][0], ties::DELIVERY);
    open_package(&C, A, &keys(A), &p[1], now()).unwrap();

    // The hub stored no blob's key: only the packages it cannot open (checked as for plain keys elsewhere), and
    // each blob is fresh (a new ephemeral key each time): two deliveries of one seed differ.
    let req1 = Request::new(ties::KTC_INDIRECT, A, &[B], [4; 8], expires).unwrap();
    let req2 = Request::new(ties::KTC_INDIRECT, A, &[B], [5; 8], expires).unwrap();
    let (_, v1) = n.ask(&req1, Some(&Seed::from_bytes([4; 16]))).await;
    let (_, v2) = n.ask(&req2, Some(&Seed::from_bytes([4; 16]))).await;
    assert_ne!(blob_of(B, &hexes(&v1)[0]), blob_of(B, &hexes(&v2)[0]));
}

#[tokio::test]
async fn bad_registrations_are_refused_with_their_status() {
    let n = net().await;
    let parent = storage_parent();
    // A registration sealed by A but sent as B's: its tag is under A's keys, bound to A.
    assert_eq!(n.register(B, A, &parent).await.0, 401);
    // Garbage.
    let (s, _) = n
        .send(
            reqwest::Method::PUT,
            &format!("/v1/devices/{B}/keys/tpm"),
            &[0x45; 40],
        )
        .await;
    assert_eq!(s, 401);
    // Unknown device, then a revoked one.
    assert_eq!(n.register(X, X, &parent).await.0, 403);
    n.hub.hub.store().revoke(D, wall_clock()).await.unwrap();
    assert_eq!(n.register(D, D, &parent).await.0, 403);
    // Authentic, but not a P-256 storage parent: a signing key, another curve, a point off the curve.
    let mut signing = parent.clone();
    signing[7] |= 0x04; // the sign bit (bit 18) of the attributes
    assert_eq!(n.register(B, B, &signing).await.0, 400);
    let mut curve = parent.clone();
    curve[21] = 0x04; // P-384
    assert_eq!(n.register(B, B, &curve).await.0, 400);
    let mut off = parent.clone();
    let last = off.len() - 1;
    off[last] ^= 1;
    assert_eq!(n.register(B, B, &off).await.0, 400);
    assert_eq!(n.register(B, B, &[0x11; 200]).await.0, 400);
    // Past the bound: refused before it is read.
    let (s, _) = n
        .send(
            reqwest::Method::PUT,
            &format!("/v1/devices/{B}/keys/tpm"),
            &vec![0x45; MAX_TPM_PARENT_MESSAGE + 1],
        )
        .await;
    assert_eq!(s, 413);
    // Nothing of it was stored; B still gets plain packages.
    assert!(
        n.hub
            .hub
            .store()
            .tpm_parents_among(&[B, D, X])
            .await
            .unwrap()
            .is_empty()
    );
    let req = Request::new(ties::KTC_INDIRECT, A, &[B], [9; 8], (now() + 3600) as u32).unwrap();
    let (s, v) = n.ask(&req, Some(&Seed::from_bytes([9; 16]))).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(hexes(&v)[0][0], ties::DELIVERY);
}
