//! The published vectors of TPM deliveries (docs/wire.md §12, "TPM duplication"; docs/vectors/ties-tpm-v1.json):
//! a TPM parent registration from N2, a TPM delivery to N2 (KTC direct from N1) and a TPM grant to N2 (its own KDC
//! request to N1), each with its PRK, the message N2's TPM HMACs and the session key.
//!
//! The import blob is opaque to the envelope, and one built for a TPM is random (an ephemeral ECDH key); the vectors
//! carry a fixed stand-in of a real blob's size (230 bytes) so that they are reproducible. Every value is computed
//! by hand (HKDF, HMAC, AES-256-GCM from the RustCrypto crates) and through `custos_proto::ties::tpm`, which must
//! agree; the session key is also the one a software node derives from the seed. The file must equal what they
//! produce.
//!
//! To regenerate after a deliberate format change:
//! `CUSTOS_WRITE_VECTORS=1 cargo test -p custos-proto --test ties_tpm_vectors`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use custos_proto::ties::tpm::{self, MAX_TPM_PACKAGE, MAX_TPM_PARENT_MESSAGE};
use custos_proto::ties::{self, NodeKeys, Request, Seed, SessionKey};
use custos_proto::{Crypto, DeviceId, RustCrypto, Secret};
use hkdf::Hkdf;
use serde_json::{Value, json};
use sha2::Sha256;

const PATH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../docs/vectors/ties-tpm-v1.json"
);
const C: RustCrypto = RustCrypto;
const N1: DeviceId = DeviceId([0x10, 0, 0, 0, 0, 0, 0, 0x01]);
const N2: DeviceId = DeviceId([0x20, 0, 0, 0, 0, 0, 0, 0x02]);
const SDK1: [u8; 32] = [0x51; 32];
const SDK2: [u8; 32] = [0x52; 32];
const NOW: u64 = 1_800_000_000;
const EXPIRES: u32 = 1_800_003_600;
const SEED: [u8; 16] = [0x5e; 16];
const CE_SEED: [u8; 16] = [0xce; 16];
const KID_KTC: [u8; 8] = [0x58, 0x58, 0x58, 0x58, 0, 0, 0, 0x01];
const KID_KDC: [u8; 8] = [0x59, 0x59, 0x59, 0x59, 0, 0, 0, 0x02];

fn h(b: &[u8]) -> String {
    hex::encode(b)
}

fn expand(prk: &[u8], info: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    Hkdf::<Sha256>::from_prk(prk)
        .unwrap()
        .expand(info, &mut out)
        .unwrap();
    out
}

fn gcm(key: &[u8; 32], aad: &[u8], plain: &[u8]) -> Vec<u8> {
    let mut buf = plain.to_vec();
    let tag = Aes256Gcm::new(key.into())
        .encrypt_in_place_detached(Nonce::from_slice(&[0; 12]), aad, &mut buf)
        .unwrap();
    buf.extend_from_slice(&tag);
    buf
}

/// A P-256 storage parent's TPM2B_PUBLIC (the curve's generator as its point), 92 bytes.
fn parent() -> Vec<u8> {
    let x =
        hex::decode("6b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296").unwrap();
    let y =
        hex::decode("4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5").unwrap();
    let mut t = Vec::new();
    for v in [0x0023u16, 0x000b] {
        t.extend_from_slice(&v.to_be_bytes());
    }
    t.extend_from_slice(&0x0003_0472u32.to_be_bytes());
    for v in [0u16, 0x0006, 128, 0x0043, 0x0010, 0x0003, 0x0010, 32] {
        t.extend_from_slice(&v.to_be_bytes());
    }
    t.extend_from_slice(&x);
    t.extend_from_slice(&32u16.to_be_bytes());
    t.extend_from_slice(&y);
    let mut out = (t.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(&t);
    out
}

/// The stand-in import blob: 230 bytes `0, 1, 2, …`.
fn blob() -> Vec<u8> {
    (0..230u32).map(|i| i as u8).collect()
}

fn keys(sdk: [u8; 32]) -> NodeKeys {
    NodeKeys::derive(&C, &Secret::from_bytes(sdk)).unwrap()
}

/// One TPM package by hand and through the API, opened by N2, with its PRK, HMAC input and session key.
fn package(
    req: &Request,
    seed: &Seed,
    seed_bytes: [u8; 16],
    kind: u8,
    holders: &[DeviceId],
) -> Value {
    let h2n = expand(&SDK2, b"custos/v1/ties/hub-to-node");
    let mut aad = vec![kind];
    aad.extend_from_slice(&N2.0);
    aad.extend_from_slice(&req.kid);
    aad.extend_from_slice(&EXPIRES.to_be_bytes());
    for d in holders {
        aad.extend_from_slice(&d.0);
    }
    let k_msg = expand(&h2n, &[&b"custos/v1/ties/msg"[..], &aad].concat());
    let mut header = vec![kind];
    header.extend_from_slice(&req.kid);
    header.extend_from_slice(&EXPIRES.to_be_bytes());
    header.push(holders.len() as u8);
    for d in holders {
        header.extend_from_slice(&d.0);
    }
    let bytes = [header.clone(), gcm(&k_msg, &aad, &blob())].concat();
    let mut out = [0u8; MAX_TPM_PACKAGE];
    let n = req
        .package_tpm(&C, N2, &keys(SDK2), &blob(), &mut out)
        .unwrap();
    assert_eq!(&out[..n], &bytes[..]);

    let mut salt = req.kid.to_vec();
    salt.extend_from_slice(&EXPIRES.to_be_bytes());
    let prk = C.hmac_sha256(&salt, &[&seed_bytes]);
    assert_eq!(req.tpm_prk(&C, seed).expose(), &prk);
    let mut m = out;
    let p = tpm::open_tpm_package(&C, N2, &keys(SDK2), &mut m[..n], NOW).unwrap();
    assert_eq!(p.blob(), &blob()[..]);
    let (input, len) = p.hmac_input();
    let input = input[..len].to_vec();
    let s = C.hmac_sha256(&prk, &[&input]);
    let key: SessionKey = p.into_session_key(s);
    // A software holder's key from the seed is the same: N1 for KTC, N2's plain package for KDC.
    let soft = ties::open_package(
        &C,
        N2,
        &keys(SDK2),
        req.package(&C, N2, &keys(SDK2), seed).unwrap().as_bytes(),
        NOW,
    )
    .unwrap();
    let soft_s = {
        let mut l1 = soft.link(N2).unwrap();
        let mut l2 = key.link(N2).unwrap();
        let mut a = [0u8; 64];
        let k = l1.seal(&C, b"same", &mut a, NOW).unwrap();
        // A node does not open its own messages; sealing the same plaintext at the same number under the same key
        // gives the same bytes.
        let mut b = [0u8; 64];
        let k2 = l2.seal(&C, b"same", &mut b, NOW).unwrap();
        a[..k] == b[..k2]
    };
    assert!(soft_s, "the TPM path's key differs from the software one");
    json!({
        "aad": h(&aad), "K_msg": h(&k_msg), "header": h(&header), "blob": h(&blob()), "bytes": h(&bytes),
        "size": bytes.len(), "PRK": h(&prk), "hmac_input": h(&input), "S": h(&s),
    })
}

fn generate() -> Value {
    let n2h = expand(&SDK2, b"custos/v1/ties/node-to-hub");
    let public = parent();
    let len = (public.len() as u16).to_be_bytes();
    let aad = [&[tpm::TPM_PARENT][..], &N2.0, &len, &public].concat();
    let k_msg = expand(&n2h, &[&b"custos/v1/ties/msg"[..], &aad].concat());
    let bytes = [
        &[tpm::TPM_PARENT][..],
        &len,
        &public,
        &gcm(&k_msg, &aad, &[]),
    ]
    .concat();
    let mut out = [0u8; MAX_TPM_PARENT_MESSAGE];
    let n = tpm::seal_tpm_parent(&C, N2, &keys(SDK2), &public, &mut out).unwrap();
    assert_eq!(&out[..n], &bytes[..]);
    assert_eq!(
        tpm::open_tpm_parent(&C, N2, &keys(SDK2), &bytes).unwrap(),
        &public[..]
    );

    let ktc = Request::new(ties::KTC_DIRECT, N1, &[N2], KID_KTC, EXPIRES).unwrap();
    let kdc = Request::new(ties::KDC_INDIRECT, N2, &[N1], KID_KDC, EXPIRES).unwrap();
    json!({
        "input": {
            "nodes": {
                "N1": {"id": N1.to_string(), "sdk": h(&SDK1)},
                "N2": {"id": N2.to_string(), "sdk": h(&SDK2)},
            },
            "now": NOW, "expires": EXPIRES,
            "tpm_parent_of_N2": h(&public),
            "blob_stand_in": "230 bytes 00 01 02 ... e5: an import blob is opaque to the envelope and random when built",
        },
        "registration": {
            "from": "N2", "aad": h(&aad), "K_msg": h(&k_msg), "bytes": h(&bytes), "size": bytes.len(),
        },
        "tpm_delivery": merge(json!({"kind": "KTC direct", "requester": "N1", "kid": h(&KID_KTC), "seed": h(&SEED)}),
            package(&ktc, &Seed::from_bytes(SEED), SEED, tpm::TPM_DELIVERY, &[N1])),
        "tpm_grant": merge(json!({"kind": "KDC indirect", "requester": "N2", "kid": h(&KID_KDC), "seed": h(&CE_SEED)}),
            package(&kdc, &Seed::from_bytes(CE_SEED), CE_SEED, tpm::TPM_GRANT, &[N1])),
    })
}

fn merge(mut v: Value, extra: Value) -> Value {
    let o = v.as_object_mut().unwrap();
    for (k, x) in extra.as_object().unwrap() {
        o.insert(k.clone(), x.clone());
    }
    v
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
    assert_eq!(generated, file, "docs/vectors/ties-tpm-v1.json is stale");
}
