//! The published device-to-device key vectors of docs/wire.md §12 (Vector 9, docs/vectors/ties-v1.json): the
//! wrapping keys of three nodes, a KTC and a KDC request each direct and indirect with their deliveries and grants,
//! a group key with two peers, a receipt, a notice, a refusal for each reason, the session key, both key
//! confirmations, two data messages, and a Noise KK exchange with fixed ephemeral keys, from fixed inputs.
//!
//! Every value is computed twice: by hand from §12 (HKDF, HMAC and AES-256-GCM straight from the RustCrypto crates
//! and the crate's primitives, and Noise KK written out step by step from the Noise specification), and through the
//! public API of `custos_proto::ties`; the two must agree, and the file must equal what they produce. The published
//! bytes are then opened by the CE's and the nodes' side.
//!
//! To regenerate after a deliberate format change: `CUSTOS_WRITE_VECTORS=1 cargo test -p custos-proto --test ties_vectors`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use custos_proto::ties::{
    self, CONFIRM_LEN, CONFIRM_PEER, CONFIRM_REQUESTER, DATA, DATA_OVERHEAD, DELIVERY, GRANT,
    KDC_DIRECT, KDC_INDIRECT, KTC_DIRECT, KTC_INDIRECT, KeyId, NOTICE, NodeKeys, RECEIPT, REFUSAL,
    REFUSAL_LEN, Refusal, Request, SIGNAL_LEN, Seed, SessionKey, kk,
};
use custos_proto::{Crypto, DeviceId, RustCrypto, Secret};
use hkdf::Hkdf;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const PATH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../docs/vectors/ties-v1.json"
);

const C: RustCrypto = RustCrypto;
const N1: DeviceId = DeviceId([0x10, 0, 0, 0, 0, 0, 0, 0x01]);
const N2: DeviceId = DeviceId([0x20, 0, 0, 0, 0, 0, 0, 0x02]);
const N3: DeviceId = DeviceId([0x30, 0, 0, 0, 0, 0, 0, 0x03]);
const SDK1: [u8; 32] = [0x51; 32];
const SDK2: [u8; 32] = [0x52; 32];
const SDK3: [u8; 32] = [0x53; 32];
/// The nodes' and the CE's clock: 2027-01-15T08:00:00Z.
const NOW: u64 = 1_800_000_000;
/// Every key dies an hour later.
const EXPIRES: u32 = 1_800_003_600;
/// The seed the requester of a KTC request draws.
const SEED: [u8; 16] = [0x5e; 16];
/// The seed the CE draws for a KDC request.
const CE_SEED: [u8; 16] = [0xce; 16];
const KID_KTC_DIRECT: KeyId = [0x41, 0x41, 0x41, 0x41, 0x00, 0x00, 0x00, 0x01];
const KID_KTC_INDIRECT: KeyId = [0x42, 0x42, 0x42, 0x42, 0x00, 0x00, 0x00, 0x02];
const KID_KDC_DIRECT: KeyId = [0x43, 0x43, 0x43, 0x43, 0x00, 0x00, 0x00, 0x03];
const KID_KDC_INDIRECT: KeyId = [0x44, 0x44, 0x44, 0x44, 0x00, 0x00, 0x00, 0x04];
const KID_GROUP: KeyId = [0x47, 0x47, 0x47, 0x47, 0x00, 0x00, 0x00, 0x05];
const KID_REFUSED: KeyId = [0x4f, 0x4f, 0x4f, 0x4f, 0x00, 0x00, 0x00, 0x06];
const DATA0: &[u8] = b"open";
const DATA1: &[u8] = b"close";
/// The nodes' static (admission) keys and the ephemeral keys of the Noise KK exchange (N1 initiates).
const KK_STATIC1: [u8; 32] = [0x61; 32];
const KK_STATIC2: [u8; 32] = [0x62; 32];
const KK_E1: [u8; 32] = [0xe1; 32];
const KK_E2: [u8; 32] = [0xe2; 32];

fn h(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

fn unhex(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().expect("hex string")).expect("valid hex")
}

fn concat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// `Expand(prk, info)` of wire.md §1, by hand.
fn expand(prk: &[u8], info: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    Hkdf::<Sha256>::from_prk(prk)
        .unwrap()
        .expand(info, &mut out)
        .unwrap();
    out
}

/// `HKDF-Extract(salt, ikm)` = `HMAC-SHA256(salt, ikm)`, by hand.
fn extract(salt: &[u8], ikm: &[u8]) -> [u8; 32] {
    let (prk, _) = Hkdf::<Sha256>::extract(Some(salt), ikm);
    prk.into()
}

/// AES-256-GCM by hand: ciphertext ‖ tag.
fn gcm(key: &[u8; 32], nonce: &[u8; 12], aad: &[u8], plain: &[u8]) -> Vec<u8> {
    let mut buf = plain.to_vec();
    let tag = Aes256Gcm::new(key.into())
        .encrypt_in_place_detached(Nonce::from_slice(nonce), aad, &mut buf)
        .unwrap();
    buf.extend_from_slice(&tag);
    buf
}

fn ids(list: &[DeviceId]) -> Vec<u8> {
    list.iter().flat_map(|d| d.0).collect()
}

fn id_names(list: &[DeviceId]) -> Vec<String> {
    list.iter().map(|d| d.to_string()).collect()
}

struct Node {
    id: DeviceId,
    sdk: [u8; 32],
    n2h: [u8; 32],
    h2n: [u8; 32],
}

fn node(id: DeviceId, sdk: [u8; 32]) -> Node {
    Node {
        id,
        sdk,
        n2h: expand(&sdk, b"custos/v1/ties/node-to-hub"),
        h2n: expand(&sdk, b"custos/v1/ties/hub-to-node"),
    }
}

fn nodes() -> [Node; 3] {
    [node(N1, SDK1), node(N2, SDK2), node(N3, SDK3)]
}

fn by_id(id: DeviceId) -> Node {
    nodes().into_iter().find(|n| n.id == id).unwrap()
}

fn node_keys(id: DeviceId) -> NodeKeys {
    NodeKeys::derive(&C, &Secret::from_bytes(by_id(id).sdk)).unwrap()
}

/// A node ↔ CE message by hand: `header ‖ AES-256-GCM(Expand(K_dir, "custos/v1/ties/msg" ‖ A), 0^12, A, plain)`.
fn message(k_dir: &[u8; 32], header: &[u8], aad: &[u8], plain: &[u8]) -> (Vec<u8>, Value) {
    let k_msg = expand(k_dir, &concat(&[b"custos/v1/ties/msg", aad]));
    let bytes = concat(&[header, &gcm(&k_msg, &[0; 12], aad, plain)]);
    let v = json!({
        "aad": h(aad), "K_msg": h(&k_msg), "plaintext": h(plain), "bytes": h(&bytes), "size": bytes.len(),
    });
    (bytes, v)
}

fn merge(mut v: Value, extra: Value) -> Value {
    let o = v.as_object_mut().unwrap();
    for (k, x) in extra.as_object().unwrap() {
        o.insert(k.clone(), x.clone());
    }
    v
}

/// The session key by hand: `S = HKDF(salt = kid ‖ expires, ikm = seed, info = label ‖ requester ‖ peers sorted)`.
fn session(seed: &[u8], kid: &KeyId, requester: DeviceId, peers: &[DeviceId]) -> ([u8; 32], Value) {
    let salt = concat(&[kid, &EXPIRES.to_be_bytes()]);
    let prk = extract(&salt, seed);
    let mut sorted = peers.to_vec();
    sorted.sort();
    let info = concat(&[b"custos/v1/ties/session", &requester.0, &ids(&sorted)]);
    let s = expand(&prk, &info);
    (
        s,
        json!({"salt": h(&salt), "prk": h(&prk), "info": h(&info), "S": h(&s)}),
    )
}

/// A request and the packages the CE makes from it, by hand and through the API.
fn scenario(kind: u8, kid: KeyId, peers: &[DeviceId]) -> Value {
    let me = by_id(N1);
    let ktc = !ties::is_distribution(kind);
    let seed: &[u8] = if ktc { &SEED } else { &CE_SEED };
    let header = concat(&[&[kind], &ids(peers), &kid, &EXPIRES.to_be_bytes()]);
    let aad = concat(&[&[kind], &N1.0, &ids(peers), &kid, &EXPIRES.to_be_bytes()]);
    let plain: &[u8] = if ktc { &SEED } else { &[] };
    let (bytes, request) = message(&me.n2h, &header, &aad, plain);
    let req = Request::new(kind, N1, peers, kid, EXPIRES).unwrap();
    let api = req
        .seal(
            &C,
            &node_keys(N1),
            ktc.then(|| Seed::from_bytes(SEED)).as_ref(),
        )
        .unwrap();
    assert_eq!(
        h(api.as_bytes()),
        h(&bytes),
        "Request::seal disagrees with §12"
    );
    let request = merge(json!({"header": h(&header)}), request);

    let api_seed = Seed::from_bytes(seed.try_into().unwrap());
    let mut packages = vec![];
    let recipients: Vec<DeviceId> = if ktc {
        peers.to_vec()
    } else {
        [&[N1], peers].concat()
    };
    for r in recipients {
        let (pkind, holders): (u8, Vec<DeviceId>) = if r == N1 {
            (GRANT, peers.to_vec())
        } else {
            (
                DELIVERY,
                [&[N1], peers]
                    .concat()
                    .into_iter()
                    .filter(|&d| d != r)
                    .collect(),
            )
        };
        let header = concat(&[&[pkind], &kid, &EXPIRES.to_be_bytes(), &ids(&holders)]);
        let aad = concat(&[&[pkind], &r.0, &kid, &EXPIRES.to_be_bytes(), &ids(&holders)]);
        let (bytes, p) = message(&by_id(r).h2n, &header, &aad, seed);
        let api = req.package(&C, r, &node_keys(r), &api_seed).unwrap();
        assert_eq!(
            h(api.as_bytes()),
            h(&bytes),
            "Request::package disagrees with §12"
        );
        packages.push(merge(
            json!({
                "type": h(&[pkind]), "recipient": r.to_string(), "holders": id_names(&holders),
                "header": h(&header),
            }),
            p,
        ));
    }
    let (_, session) = session(seed, &kid, N1, peers);
    json!({
        "type": h(&[kind]), "requester": N1.to_string(), "peers": id_names(peers), "kid": h(&kid),
        "expires": EXPIRES, "seed": h(seed), "request": request, "packages": packages, "session": session,
    })
}

fn confirmation(
    s: &[u8; 32],
    kind: u8,
    from: DeviceId,
    to: DeviceId,
    kid: &KeyId,
    expires: u32,
) -> Value {
    let k_conf = expand(s, b"custos/v1/ties/confirm");
    let mac_input = concat(&[&[kind], &from.0, &to.0, kid, &expires.to_be_bytes()]);
    let mac = C.hmac_sha256(&k_conf, &[&mac_input]);
    let bytes = concat(&[&[kind], &kid[..4], &mac[..16]]);
    json!({
        "from": from.to_string(), "to": to.to_string(), "mac_input": h(&mac_input), "hmac": h(&mac),
        "bytes": h(&bytes), "size": bytes.len(),
    })
}

fn data(s: &[u8; 32], from: DeviceId, kid: &KeyId, seq: u32, plain: &[u8]) -> Value {
    let k_send = expand(s, &concat(&[b"custos/v1/ties/send", &from.0]));
    let mut nonce = [0u8; 12];
    nonce[8..].copy_from_slice(&seq.to_be_bytes());
    let aad = concat(&[
        &[DATA],
        kid,
        &EXPIRES.to_be_bytes(),
        &from.0,
        &seq.to_be_bytes(),
    ]);
    let bytes = concat(&[
        &[DATA],
        &kid[..4],
        &seq.to_be_bytes(),
        &gcm(&k_send, &nonce, &aad, plain),
    ]);
    json!({
        "from": from.to_string(), "seq": seq, "plaintext": h(plain), "K_send": h(&k_send), "nonce": h(&nonce),
        "aad": h(&aad), "bytes": h(&bytes), "size": bytes.len(),
    })
}

/// Noise's symmetric state (revision 34, §5.2) with SHA-256 and AES-256-GCM, by hand.
struct Symmetric {
    ck: [u8; 32],
    h: [u8; 32],
    k: Option<[u8; 32]>,
}

impl Symmetric {
    fn new(name: &[u8]) -> Self {
        let mut h = [0u8; 32];
        h[..name.len()].copy_from_slice(name);
        Self { ck: h, h, k: None }
    }

    fn mix_hash(&mut self, data: &[u8]) {
        let mut d = Sha256::new();
        d.update(self.h);
        d.update(data);
        self.h = d.finalize().into();
    }

    /// `HKDF(ck, ikm, 2)` of Noise §4.3.
    fn hkdf2(ck: &[u8; 32], ikm: &[u8]) -> ([u8; 32], [u8; 32]) {
        let temp = C.hmac_sha256(ck, &[ikm]);
        let o1 = C.hmac_sha256(&temp, &[&[1]]);
        let o2 = C.hmac_sha256(&temp, &[&o1, &[2]]);
        (o1, o2)
    }

    fn mix_key(&mut self, ikm: &[u8]) {
        let (ck, k) = Self::hkdf2(&self.ck, ikm);
        self.ck = ck;
        self.k = Some(k);
    }

    /// `EncryptAndHash` with the first (and only) nonce of the current key, 0.
    fn encrypt_and_hash(&mut self, plain: &[u8]) -> Vec<u8> {
        let ct = gcm(&self.k.unwrap(), &[0; 12], &self.h, plain);
        self.mix_hash(&ct);
        ct
    }

    fn split(&self) -> ([u8; 32], [u8; 32]) {
        Self::hkdf2(&self.ck, &[])
    }
}

fn dh(secret: &[u8; 32], public: &[u8; 32]) -> [u8; 32] {
    *C.x25519(&Secret::from_bytes(*secret), public)
        .unwrap()
        .expose()
}

fn public(secret: &[u8; 32]) -> [u8; 32] {
    C.x25519_public(&Secret::from_bytes(*secret))
}

/// Noise KK between N1 (initiator) and N2, by hand from the Noise specification, then through `ties::kk`.
fn noise_kk() -> Value {
    let (s1, s2, e1, e2) = (
        public(&KK_STATIC1),
        public(&KK_STATIC2),
        public(&KK_E1),
        public(&KK_E2),
    );
    let prologue = concat(&[b"custos/v1/ties/kk", &N1.0, &N2.0]);
    let mut st = Symmetric::new(kk::PATTERN.as_bytes());
    st.mix_hash(&prologue);
    // Pre-messages: -> s, <- s.
    st.mix_hash(&s1);
    st.mix_hash(&s2);
    // -> e, es, ss: the payload is `expires`.
    st.mix_hash(&e1);
    st.mix_key(&dh(&KK_E1, &s2));
    st.mix_key(&dh(&KK_STATIC1, &s2));
    let init = concat(&[
        &[kk::INIT],
        &e1,
        &st.encrypt_and_hash(&EXPIRES.to_be_bytes()),
    ]);
    // <- e, ee, se: an empty payload.
    st.mix_hash(&e2);
    st.mix_key(&dh(&KK_E2, &e1));
    st.mix_key(&dh(&KK_E2, &s1));
    let reply = concat(&[&[kk::REPLY], &e2, &st.encrypt_and_hash(&[])]);
    let (k1, k2) = st.split();
    let s = extract(&st.h, &concat(&[&k1, &k2]));
    let kid: KeyId = st.h[..8].try_into().unwrap();

    let (init_state, api_init) = kk::Initiator::start(
        N1,
        &Secret::from_bytes(KK_STATIC1),
        N2,
        &s2,
        Secret::from_bytes(KK_E1),
        EXPIRES,
    )
    .unwrap();
    assert_eq!(
        h(&api_init),
        h(&init),
        "kk::Initiator::start disagrees with §12"
    );
    let (k_resp, api_reply) = kk::respond(
        N2,
        &Secret::from_bytes(KK_STATIC2),
        N1,
        &s1,
        Secret::from_bytes(KK_E2),
        &init,
        NOW,
    )
    .unwrap();
    assert_eq!(h(&api_reply), h(&reply), "kk::respond disagrees with §12");
    let k_init = init_state.finish(&reply).unwrap();
    assert_eq!((k_init.kid(), k_resp.kid()), (kid, kid));
    assert_eq!((k_init.requester(), k_init.peers()), (N1, &[N2][..]));
    let c1 = confirmation(&s, CONFIRM_REQUESTER, N1, N2, &kid, EXPIRES);
    let l1 = k_init.link(N1).unwrap();
    let api_c1 = l1.confirm_to(&C, N2, NOW).unwrap();
    assert_eq!(
        h(&api_c1),
        c1["bytes"],
        "a KK key's confirmation disagrees with §12"
    );

    json!({
        "pattern": kk::PATTERN, "initiator": N1.to_string(), "responder": N2.to_string(),
        "static": {"N1": {"secret": h(&KK_STATIC1), "public": h(&s1)}, "N2": {"secret": h(&KK_STATIC2), "public": h(&s2)}},
        "ephemeral": {"N1": {"secret": h(&KK_E1), "public": h(&e1)}, "N2": {"secret": h(&KK_E2), "public": h(&e2)}},
        "prologue": h(&prologue), "expires": EXPIRES,
        "init": {"bytes": h(&init), "size": init.len()},
        "reply": {"bytes": h(&reply), "size": reply.len()},
        "h": h(&st.h), "k1": h(&k1), "k2": h(&k2), "S": h(&s), "kid": h(&kid),
        "confirm_requester": c1,
    })
}

fn generate() -> Value {
    let ns = nodes();
    let keys: serde_json::Map<String, Value> = ["N1", "N2", "N3"]
        .iter()
        .zip(&ns)
        .map(|(name, n)| {
            (
                name.to_string(),
                json!({"K_n2h": h(&n.n2h), "K_h2n": h(&n.h2n)}),
            )
        })
        .collect();

    let ktc_direct = scenario(KTC_DIRECT, KID_KTC_DIRECT, &[N2]);
    let ktc_indirect = scenario(KTC_INDIRECT, KID_KTC_INDIRECT, &[N2]);
    let kdc_direct = scenario(KDC_DIRECT, KID_KDC_DIRECT, &[N2]);
    let kdc_indirect = scenario(KDC_INDIRECT, KID_KDC_INDIRECT, &[N2]);
    // A group: N1 asks for a key with N3 and N2, in that order; the session key sorts them.
    let group = scenario(KTC_DIRECT, KID_GROUP, &[N3, N2]);

    // N2's receipt for KTC direct, and the CE's notice to N1.
    let (n1, n2) = (by_id(N1), by_id(N2));
    let head = concat(&[&[RECEIPT], &N1.0, &KID_KTC_DIRECT]);
    let aad = concat(&[&[RECEIPT], &N2.0, &N1.0, &KID_KTC_DIRECT]);
    let (bytes, receipt) = message(&n2.n2h, &head, &aad, &[]);
    let api = ties::seal_receipt(&C, N2, &node_keys(N2), N1, &KID_KTC_DIRECT).unwrap();
    assert_eq!(h(&api), h(&bytes), "seal_receipt disagrees with §12");
    let receipt = merge(
        json!({"peer": N2.to_string(), "requester": N1.to_string(), "kid": h(&KID_KTC_DIRECT)}),
        receipt,
    );
    let head = concat(&[&[NOTICE], &N2.0, &KID_KTC_DIRECT]);
    let aad = concat(&[&[NOTICE], &N1.0, &N2.0, &KID_KTC_DIRECT]);
    let (bytes, notice) = message(&n1.h2n, &head, &aad, &[]);
    let api = ties::seal_notice(&C, N1, &node_keys(N1), N2, &KID_KTC_DIRECT).unwrap();
    assert_eq!(h(&api), h(&bytes), "seal_notice disagrees with §12");
    let notice = merge(
        json!({"requester": N1.to_string(), "peer": N2.to_string(), "kid": h(&KID_KTC_DIRECT)}),
        notice,
    );

    let mut refusals = vec![];
    for why in [
        Refusal::PeerNotAuthorized,
        Refusal::BadExpiry,
        Refusal::KeyIdReused,
    ] {
        let head = concat(&[&[REFUSAL], &KID_REFUSED, &[why as u8]]);
        let aad = concat(&[&[REFUSAL], &N1.0, &KID_REFUSED, &[why as u8]]);
        let (bytes, r) = message(&n1.h2n, &head, &aad, &[]);
        let api = ties::seal_refusal(&C, N1, &node_keys(N1), &KID_REFUSED, why).unwrap();
        assert_eq!(h(&api), h(&bytes), "seal_refusal disagrees with §12");
        refusals.push(merge(
            json!({"requester": N1.to_string(), "kid": h(&KID_REFUSED), "reason": why as u8, "name": format!("{why:?}")}),
            r,
        ));
    }

    // Key confirmation and data under KTC direct's session key.
    let (s, _) = session(&SEED, &KID_KTC_DIRECT, N1, &[N2]);
    let c1 = confirmation(&s, CONFIRM_REQUESTER, N1, N2, &KID_KTC_DIRECT, EXPIRES);
    let c2 = confirmation(&s, CONFIRM_PEER, N2, N1, &KID_KTC_DIRECT, EXPIRES);
    let d0 = data(&s, N1, &KID_KTC_DIRECT, 0, DATA0);
    let d1 = data(&s, N1, &KID_KTC_DIRECT, 1, DATA1);
    let req = Request::new(KTC_DIRECT, N1, &[N2], KID_KTC_DIRECT, EXPIRES).unwrap();
    let mut l1 = req
        .session_key(&C, &Seed::from_bytes(SEED))
        .unwrap()
        .link(N1)
        .unwrap();
    let k2 = ties::open_package(
        &C,
        N2,
        &node_keys(N2),
        &unhex(&ktc_direct["packages"][0]["bytes"]),
        NOW,
    )
    .unwrap();
    let mut l2 = k2.link(N2).unwrap();
    let api_c1 = l1.confirm_to(&C, N2, NOW).unwrap();
    assert_eq!(h(&api_c1), c1["bytes"], "confirm_to disagrees with §12");
    let api_c2 = l2
        .accept_confirmation(&C, N1, &api_c1, NOW)
        .unwrap()
        .unwrap();
    assert_eq!(
        h(&api_c2),
        c2["bytes"],
        "accept_confirmation disagrees with §12"
    );
    for (d, plain) in [(&d0, DATA0), (&d1, DATA1)] {
        let mut out = [0u8; 64];
        let n = l1.seal(&C, plain, &mut out, NOW).unwrap();
        assert_eq!(h(&out[..n]), d["bytes"], "Link::seal disagrees with §12");
    }
    let link = json!({
        "K_conf": h(&expand(&s, b"custos/v1/ties/confirm")),
        "confirm_requester": c1,
        "confirm_peer": c2,
        "data": [d0, d1],
    });

    json!({
        "input": {
            "nodes": {
                "N1": {"id": N1.to_string(), "sdk": h(&SDK1)},
                "N2": {"id": N2.to_string(), "sdk": h(&SDK2)},
                "N3": {"id": N3.to_string(), "sdk": h(&SDK3)},
            },
            "now": NOW,
            "expires": EXPIRES,
            "seed": h(&SEED),
            "ce_seed": h(&CE_SEED),
            "kids": {
                "ktc_direct": h(&KID_KTC_DIRECT), "ktc_indirect": h(&KID_KTC_INDIRECT),
                "kdc_direct": h(&KID_KDC_DIRECT), "kdc_indirect": h(&KID_KDC_INDIRECT),
                "group": h(&KID_GROUP), "refused": h(&KID_REFUSED),
            },
        },
        "keys": keys,
        "ktc_direct": ktc_direct,
        "ktc_indirect": ktc_indirect,
        "kdc_direct": kdc_direct,
        "kdc_indirect": kdc_indirect,
        "group": group,
        "receipt": receipt,
        "notice": notice,
        "refusals": refusals,
        "link": link,
        "kk": noise_kk(),
    })
}

#[test]
fn vectors_match_the_published_file() {
    let generated = generate();
    if std::env::var_os("CUSTOS_WRITE_VECTORS").is_some() {
        std::fs::write(
            PATH,
            serde_json::to_string_pretty(&generated).unwrap() + "\n",
        )
        .unwrap();
    }
    let file: Value = serde_json::from_str(&std::fs::read_to_string(PATH).unwrap()).unwrap();
    for part in generated.as_object().unwrap().keys() {
        assert_eq!(generated[part], file[part], "{part}");
    }
    assert_eq!(generated, file, "docs/vectors/ties-v1.json is stale");
}

fn id_of(v: &Value) -> DeviceId {
    let b = hex::decode(v.as_str().unwrap().replace('-', "")).unwrap();
    DeviceId(b.try_into().unwrap())
}

/// The published bytes, read back from the file, open through the public API on the CE's and the nodes' side, and
/// the sizes are those §12 states.
#[test]
fn published_messages_open() {
    let v: Value = serde_json::from_str(&std::fs::read_to_string(PATH).unwrap()).unwrap();

    for name in [
        "ktc_direct",
        "ktc_indirect",
        "kdc_direct",
        "kdc_indirect",
        "group",
    ] {
        let sc = &v[name];
        let kind = unhex(&sc["type"])[0];
        let peers: Vec<DeviceId> = sc["peers"].as_array().unwrap().iter().map(id_of).collect();
        let kid: KeyId = unhex(&sc["kid"]).try_into().unwrap();
        let msg = unhex(&sc["request"]["bytes"]);
        // The CE reads the request, checks its expiry and wraps the seed for each recipient.
        let (req, seed) = Request::open(&C, N1, &node_keys(N1), &msg).unwrap();
        assert_eq!(
            (
                req.kind,
                req.requester,
                req.peers.as_slice(),
                req.kid,
                req.expires
            ),
            (kind, N1, &peers[..], kid, EXPIRES)
        );
        req.check_expiry(NOW).unwrap();
        let seed = match seed {
            Some(s) => {
                assert!(!ties::is_distribution(kind));
                assert_eq!(s, Seed::from_bytes(SEED));
                s
            }
            None => Seed::from_bytes(CE_SEED),
        };
        let size =
            1 + 8 * peers.len() + 8 + 4 + if ties::is_distribution(kind) { 0 } else { 16 } + 16;
        assert_eq!(msg.len(), size, "{name}");
        let mut keys: Vec<SessionKey> = vec![];
        for p in sc["packages"].as_array().unwrap() {
            let r = id_of(&p["recipient"]);
            let bytes = unhex(&p["bytes"]);
            assert_eq!(
                req.package(&C, r, &node_keys(r), &seed).unwrap().as_bytes(),
                &bytes[..]
            );
            assert_eq!(bytes.len(), 1 + 8 + 4 + 8 * peers.len() + 16 + 16, "{name}");
            let k = ties::open_package(&C, r, &node_keys(r), &bytes, NOW).unwrap();
            assert_eq!((k.kid(), k.expires(), k.requester()), (kid, EXPIRES, N1));
            let mut sorted = peers.clone();
            sorted.sort();
            assert_eq!(k.peers(), &sorted[..]);
            keys.push(k);
        }
        if !ties::is_distribution(kind) {
            keys.push(req.session_key(&C, &seed).unwrap());
        }
        assert_eq!(
            keys.len(),
            peers.len() + 1,
            "{name}: every member holds the key"
        );
        // Every member holds the same key: N1's confirmation checks out at each peer.
        let l1 = keys[0].clone().link(N1).unwrap();
        for &p in &peers {
            let c1 = l1.confirm_to(&C, p, NOW).unwrap();
            for k in &keys {
                let mut lp = k.clone().link(p).unwrap();
                lp.accept_confirmation(&C, N1, &c1, NOW).unwrap();
            }
        }
    }

    let r = unhex(&v["receipt"]["bytes"]);
    assert_eq!(r.len(), SIGNAL_LEN);
    assert_eq!(
        ties::open_receipt(&C, N2, &node_keys(N2), &r).unwrap(),
        (N1, KID_KTC_DIRECT)
    );
    let n = unhex(&v["notice"]["bytes"]);
    assert_eq!(n.len(), SIGNAL_LEN);
    assert_eq!(
        ties::open_notice(&C, N1, &node_keys(N1), &n).unwrap(),
        (N2, KID_KTC_DIRECT)
    );
    let reasons = [
        Refusal::PeerNotAuthorized,
        Refusal::BadExpiry,
        Refusal::KeyIdReused,
    ];
    for (f, why) in v["refusals"].as_array().unwrap().iter().zip(reasons) {
        let f = unhex(&f["bytes"]);
        assert_eq!(f.len(), REFUSAL_LEN);
        assert_eq!(
            ties::open_refusal(&C, N1, &node_keys(N1), &f).unwrap(),
            (KID_REFUSED, why)
        );
    }

    // Confirmation and data: N2 opens what N1 sent.
    let k2 = ties::open_package(
        &C,
        N2,
        &node_keys(N2),
        &unhex(&v["ktc_direct"]["packages"][0]["bytes"]),
        NOW,
    )
    .unwrap();
    let mut l2 = k2.link(N2).unwrap();
    let c1 = unhex(&v["link"]["confirm_requester"]["bytes"]);
    let c2 = unhex(&v["link"]["confirm_peer"]["bytes"]);
    assert_eq!((c1.len(), c2.len()), (CONFIRM_LEN, CONFIRM_LEN));
    assert_eq!(
        l2.accept_confirmation(&C, N1, &c1, NOW)
            .unwrap()
            .unwrap()
            .to_vec(),
        c2
    );
    let req = Request::new(KTC_DIRECT, N1, &[N2], KID_KTC_DIRECT, EXPIRES).unwrap();
    let mut l1 = req
        .session_key(&C, &Seed::from_bytes(SEED))
        .unwrap()
        .link(N1)
        .unwrap();
    assert_eq!(l1.accept_confirmation(&C, N2, &c2, NOW).unwrap(), None);
    assert!(l1.is_confirmed(N2) && l2.is_confirmed(N1));
    for (d, plain) in v["link"]["data"]
        .as_array()
        .unwrap()
        .iter()
        .zip([DATA0, DATA1])
    {
        let mut msg = unhex(&d["bytes"]);
        assert_eq!(msg.len(), plain.len() + DATA_OVERHEAD);
        assert_eq!(l2.open(&C, N1, &mut msg, NOW).unwrap(), plain);
    }

    // Noise KK: N2 answers the published Init with its fixed ephemeral key, N1 finishes with the published Reply.
    let k = &v["kk"];
    let init = unhex(&k["init"]["bytes"]);
    let reply = unhex(&k["reply"]["bytes"]);
    assert_eq!((init.len(), reply.len()), (kk::INIT_LEN, kk::REPLY_LEN));
    let (k_resp, answer) = kk::respond(
        N2,
        &Secret::from_bytes(KK_STATIC2),
        N1,
        &public(&KK_STATIC1),
        Secret::from_bytes(KK_E2),
        &init,
        NOW,
    )
    .unwrap();
    assert_eq!(answer, reply);
    let kid: KeyId = unhex(&k["kid"]).try_into().unwrap();
    assert_eq!(k_resp.kid(), kid);
    let mut lr = k_resp.link(N2).unwrap();
    let c = unhex(&k["confirm_requester"]["bytes"]);
    lr.accept_confirmation(&C, N1, &c, NOW).unwrap();

    assert_eq!(
        (
            SIGNAL_LEN,
            REFUSAL_LEN,
            CONFIRM_LEN,
            DATA_OVERHEAD,
            kk::INIT_LEN,
            kk::REPLY_LEN
        ),
        (33, 26, 21, 25, 53, 49)
    );
}

/// Every long hex string in wire.md §12 is a value of the vector file (or part of one), so the document cannot
/// drift from the file; and the worked example's messages are quoted whole.
#[test]
fn wire_md_quotes_the_vectors() {
    let file = std::fs::read_to_string(PATH).unwrap();
    let flat = common::section_quoting_vectors("## 12. Device-to-device keys", &file, 10);
    let v: Value = serde_json::from_str(&file).unwrap();
    let wanted = [
        &v["keys"]["N1"]["K_n2h"],
        &v["keys"]["N2"]["K_h2n"],
        &v["ktc_direct"]["request"]["K_msg"],
        &v["ktc_direct"]["request"]["bytes"],
        &v["ktc_direct"]["packages"][0]["K_msg"],
        &v["ktc_direct"]["packages"][0]["bytes"],
        &v["ktc_direct"]["session"]["S"],
    ];
    for w in wanted {
        let w = w.as_str().unwrap();
        assert!(flat.contains(w), "wire.md §12 does not quote {w}");
    }
}
