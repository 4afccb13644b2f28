//! Known-answer tests of the RustCrypto backend against published vectors (tests/data/*.json):
//! RFC 5869 (HKDF-SHA256, test cases 1–3), RFC 8032 (Ed25519, TEST 1–3), RFC 7748 (X25519, §5.2 and §6.1),
//! RFC 8439 §2.8.2 (ChaCha20-Poly1305) and McGrew–Viega GCM test case 16 (AES-256-GCM), plus negatives:
//! a flipped signature bit, small-order X25519 peers and tampered AEAD tags, ciphertexts and associated data.
//!
//! Every vector was cross-checked with an independent implementation (Python `hmac`/`hashlib`, OpenSSL via
//! `cryptography`, and a from-the-RFC X25519 ladder) before it was committed here.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use custos_proto::crypto::{NONCE_LEN, TAG_LEN};
use custos_proto::{Crypto, Error, RustCrypto, Secret, Suite};
use serde_json::Value;

const HKDF: &str = include_str!("data/hkdf_sha256_rfc5869.json");
const ED25519: &str = include_str!("data/ed25519_rfc8032.json");
const X25519: &str = include_str!("data/x25519_rfc7748.json");
const AEAD: &str = include_str!("data/aead.json");

fn parse(text: &str) -> Value {
    serde_json::from_str(text).expect("valid JSON vector file")
}

fn bytes(v: &Value, field: &str) -> Vec<u8> {
    let s = v[field]
        .as_str()
        .unwrap_or_else(|| panic!("field {field} is not a string in {v}"));
    hex::decode(s).unwrap_or_else(|e| panic!("field {field} is not hex: {e}"))
}

fn array<const N: usize>(v: &Value, field: &str) -> [u8; N] {
    let b = bytes(v, field);
    b.try_into()
        .unwrap_or_else(|b: Vec<u8>| panic!("field {field} has {} bytes, expected {N}", b.len()))
}

fn secret(v: &Value, field: &str) -> Secret {
    Secret::from_bytes(array(v, field))
}

fn name(v: &Value) -> &str {
    v["name"].as_str().expect("vector name")
}

/// The vectors of a file; fails if there are not exactly `count`, so that a loop can never pass vacuously.
fn vectors<'a>(file: &'a Value, field: &str, count: usize) -> &'a [Value] {
    let list = file[field].as_array().expect("vector list");
    assert_eq!(list.len(), count, "number of vectors in `{field}`");
    list
}

#[test]
fn hkdf_sha256_rfc5869_test_cases_1_to_3() {
    let c = RustCrypto;
    let file = parse(HKDF);
    for v in vectors(&file, "vectors", 3) {
        let (ikm, salt, info) = (bytes(v, "ikm"), bytes(v, "salt"), bytes(v, "info"));
        let expected_okm = bytes(v, "okm");
        let length = usize::try_from(v["length"].as_u64().expect("length")).unwrap();
        assert_eq!(
            expected_okm.len(),
            length,
            "{}: the vector's OKM length",
            name(v)
        );

        let prk = c.hkdf_extract(&salt, &ikm);
        assert_eq!(
            hex::encode(prk.expose()),
            hex::encode(bytes(v, "prk")),
            "{}: PRK",
            name(v)
        );

        let mut okm = vec![0u8; length];
        c.hkdf_expand(prk.expose(), &[&info], &mut okm).unwrap();
        assert_eq!(
            hex::encode(&okm),
            hex::encode(&expected_okm),
            "{}: OKM",
            name(v)
        );

        // `info` is the concatenation of its parts, wherever it is split.
        for split in [0, info.len() / 2, info.len()] {
            let (a, b) = info.split_at(split);
            let mut okm2 = vec![0u8; length];
            c.hkdf_expand(prk.expose(), &[a, &[], b], &mut okm2)
                .unwrap();
            assert_eq!(
                okm2,
                expected_okm,
                "{}: OKM with info split at {split}",
                name(v)
            );
        }

        // A shorter output is a prefix of the longer one (RFC 5869 §2.3: T(1) ‖ T(2) ‖ ...).
        let mut short = [0u8; 16];
        c.hkdf_expand(prk.expose(), &[&info], &mut short).unwrap();
        assert_eq!(
            short[..],
            expected_okm[..16],
            "{}: 16-byte OKM prefix",
            name(v)
        );
    }
}

#[test]
fn hkdf_expand_rejects_output_longer_than_255_blocks() {
    let c = RustCrypto;
    let prk = c.hkdf_extract(b"salt", b"ikm");
    let mut ok = vec![0u8; 255 * 32];
    assert_eq!(c.hkdf_expand(prk.expose(), &[b"info"], &mut ok), Ok(()));
    let mut too_long = vec![0u8; 255 * 32 + 1];
    assert_eq!(
        c.hkdf_expand(prk.expose(), &[b"info"], &mut too_long),
        Err(Error::Crypto)
    );
}

#[test]
fn ed25519_rfc8032_tests_1_to_3() {
    let c = RustCrypto;
    let file = parse(ED25519);
    for v in vectors(&file, "vectors", 3) {
        let seed = secret(v, "secret");
        let public: [u8; 32] = array(v, "public");
        let msg = bytes(v, "message");
        let sig: [u8; 64] = array(v, "signature");

        assert_eq!(
            hex::encode(c.ed25519_public(&seed)),
            hex::encode(public),
            "{}: public key",
            name(v)
        );
        assert_eq!(
            hex::encode(c.ed25519_sign(&seed, &msg)),
            hex::encode(sig),
            "{}: signature",
            name(v)
        );
        assert_eq!(
            c.ed25519_verify(&public, &msg, &sig),
            Ok(()),
            "{}: verify",
            name(v)
        );

        // A flipped bit anywhere in R or S breaks the signature.
        for bit in [0usize, 7, 100, 255, 256, 300, 400, 503] {
            let mut bad = sig;
            bad[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(
                c.ed25519_verify(&public, &msg, &bad),
                Err(Error::Authentication),
                "{}: signature with bit {bit} flipped",
                name(v)
            );
        }
        // Another message, or another key, does not verify.
        let mut other_msg = msg.clone();
        other_msg.push(0);
        assert_eq!(
            c.ed25519_verify(&public, &other_msg, &sig),
            Err(Error::Authentication),
            "{}",
            name(v)
        );
        let other_public = c.ed25519_public(&Secret::from_bytes([7; 32]));
        assert_eq!(
            c.ed25519_verify(&other_public, &msg, &sig),
            Err(Error::Authentication),
            "{}",
            name(v)
        );
    }
}

#[test]
fn ed25519_verify_rejects_a_non_canonical_s() {
    // S + L (the group order) is the same scalar but not canonical; strict verification must refuse it.
    let c = RustCrypto;
    let file = parse(ED25519);
    let v = &vectors(&file, "vectors", 3)[0];
    let public: [u8; 32] = array(v, "public");
    let msg = bytes(v, "message");
    let mut sig: [u8; 64] = array(v, "signature");
    const L: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde,
        0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];
    let mut carry = 0u16;
    for i in 0..32 {
        let sum = u16::from(sig[32 + i]) + u16::from(L[i]) + carry;
        sig[32 + i] = sum as u8;
        carry = sum >> 8;
    }
    assert_eq!(carry, 0, "S + L still fits 256 bits for this vector");
    assert_eq!(
        c.ed25519_verify(&public, &msg, &sig),
        Err(Error::Authentication)
    );
}

#[test]
fn ed25519_verify_rejects_small_order_keys() {
    // With the identity as public key and R, and S = 0, the verification equation [S]B = R + [k]A holds for
    // every message; only the strict check (no small-order keys or R) refuses it.
    let c = RustCrypto;
    let mut identity = [0u8; 32];
    identity[0] = 1;
    let mut sig = [0u8; 64];
    sig[..32].copy_from_slice(&identity);
    for msg in [&b""[..], b"any message at all"] {
        assert_eq!(
            c.ed25519_verify(&identity, msg, &sig),
            Err(Error::Authentication)
        );
    }
}

#[test]
fn x25519_rfc7748_scalar_multiplication() {
    let c = RustCrypto;
    let file = parse(X25519);
    for v in vectors(&file, "scalar_mult", 2) {
        let out = c.x25519(&secret(v, "scalar"), &array(v, "u")).unwrap();
        assert_eq!(
            hex::encode(out.expose()),
            hex::encode(bytes(v, "output")),
            "{}",
            name(v)
        );
    }
}

#[test]
fn x25519_rfc7748_alice_and_bob() {
    let c = RustCrypto;
    let file = parse(X25519);
    let v = &file["dh"];
    let (a, b) = (secret(v, "alice_private"), secret(v, "bob_private"));
    let (a_pub, b_pub): ([u8; 32], [u8; 32]) = (array(v, "alice_public"), array(v, "bob_public"));
    assert_eq!(
        hex::encode(c.x25519_public(&a)),
        hex::encode(a_pub),
        "Alice's public key"
    );
    assert_eq!(
        hex::encode(c.x25519_public(&b)),
        hex::encode(b_pub),
        "Bob's public key"
    );
    let k_alice = c.x25519(&a, &b_pub).unwrap();
    let k_bob = c.x25519(&b, &a_pub).unwrap();
    assert_eq!(
        hex::encode(k_alice.expose()),
        hex::encode(bytes(v, "shared")),
        "K computed by Alice"
    );
    assert_eq!(
        hex::encode(k_bob.expose()),
        hex::encode(bytes(v, "shared")),
        "K computed by Bob"
    );
    // X25519(a, 9) is the public key: the base point is u = 9.
    let mut nine = [0u8; 32];
    nine[0] = 9;
    assert_eq!(c.x25519(&a, &nine).unwrap().expose(), &a_pub);
}

#[test]
fn x25519_rejects_small_order_public_keys() {
    let c = RustCrypto;
    let file = parse(X25519);
    let ours = secret(&file["dh"], "alice_private");
    let mut one = [0u8; 32];
    one[0] = 1;
    let small_order: [[u8; 32]; 3] = [
        [0u8; 32], // u = 0, order 2: the all-zero public key
        one,       // u = 1, order 4
        // A point of order 8 (from the well-known list of small-order Curve25519 points).
        hex::decode("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800")
            .unwrap()
            .try_into()
            .unwrap(),
    ];
    for (i, public) in small_order.iter().enumerate() {
        let result = c.x25519(&ours, public);
        assert!(
            matches!(result, Err(Error::InvalidValue(_))),
            "small-order public key #{i} ({}) must be rejected, got {result:?}",
            hex::encode(public)
        );
    }
}

fn suite_of(v: &Value) -> Suite {
    Suite::from_name(v["suite"].as_str().expect("suite")).expect("known suite name")
}

#[test]
fn aead_known_vectors_seal_and_open() {
    let c = RustCrypto;
    let file = parse(AEAD);
    let list = vectors(&file, "vectors", 2);
    let suites: Vec<Suite> = list.iter().map(suite_of).collect();
    assert!(suites.contains(&Suite::AES256GCM) && suites.contains(&Suite::CHACHA20POLY1305));
    for v in list {
        let key = c.aead_key(suite_of(v), &secret(v, "key")).unwrap();
        let nonce: [u8; NONCE_LEN] = array(v, "nonce");
        let aad = bytes(v, "aad");
        let plaintext = bytes(v, "plaintext");
        let ciphertext = bytes(v, "ciphertext");
        let tag: [u8; TAG_LEN] = array(v, "tag");

        let mut buf = plaintext.clone();
        let got_tag = c.aead_seal(&key, &nonce, &aad, &mut buf).unwrap();
        assert_eq!(
            hex::encode(&buf),
            hex::encode(&ciphertext),
            "{}: ciphertext",
            name(v)
        );
        assert_eq!(hex::encode(got_tag), hex::encode(tag), "{}: tag", name(v));

        let mut buf = ciphertext.clone();
        c.aead_open(&key, &nonce, &aad, &mut buf, &tag).unwrap();
        assert_eq!(buf, plaintext, "{}: decrypted plaintext", name(v));
    }
}

#[test]
fn aead_rejects_tampered_tag_ciphertext_aad_and_nonce() {
    let c = RustCrypto;
    let file = parse(AEAD);
    for v in vectors(&file, "vectors", 2) {
        let key = c.aead_key(suite_of(v), &secret(v, "key")).unwrap();
        let nonce: [u8; NONCE_LEN] = array(v, "nonce");
        let aad = bytes(v, "aad");
        let ciphertext = bytes(v, "ciphertext");
        let tag: [u8; TAG_LEN] = array(v, "tag");

        // Every bit of the tag matters; on failure the buffer still holds the ciphertext, never plaintext.
        for bit in 0..TAG_LEN * 8 {
            let mut bad_tag = tag;
            bad_tag[bit / 8] ^= 1 << (bit % 8);
            let mut buf = ciphertext.clone();
            assert_eq!(
                c.aead_open(&key, &nonce, &aad, &mut buf, &bad_tag),
                Err(Error::Authentication),
                "{}: tag bit {bit} flipped",
                name(v)
            );
            assert_eq!(
                buf,
                ciphertext,
                "{}: buffer changed after a failed open (tag bit {bit})",
                name(v)
            );
        }
        for i in [0, ciphertext.len() / 2, ciphertext.len() - 1] {
            let mut buf = ciphertext.clone();
            buf[i] ^= 0x80;
            let tampered = buf.clone();
            assert_eq!(
                c.aead_open(&key, &nonce, &aad, &mut buf, &tag),
                Err(Error::Authentication),
                "{}",
                name(v)
            );
            assert_eq!(
                buf,
                tampered,
                "{}: buffer changed after a failed open (ciphertext byte {i})",
                name(v)
            );
        }
        let mut bad_aad = aad.clone();
        bad_aad[0] ^= 1;
        let mut buf = ciphertext.clone();
        assert_eq!(
            c.aead_open(&key, &nonce, &bad_aad, &mut buf, &tag),
            Err(Error::Authentication),
            "{}",
            name(v)
        );
        let mut bad_nonce = nonce;
        bad_nonce[NONCE_LEN - 1] ^= 1;
        let mut buf = ciphertext.clone();
        assert_eq!(
            c.aead_open(&key, &bad_nonce, &aad, &mut buf, &tag),
            Err(Error::Authentication),
            "{}",
            name(v)
        );
        // The same key bytes under the other suite do not open it either.
        let other = if suite_of(v) == Suite::AES256GCM {
            Suite::CHACHA20POLY1305
        } else {
            Suite::AES256GCM
        };
        let other_key = c.aead_key(other, &secret(v, "key")).unwrap();
        let mut buf = ciphertext.clone();
        assert_eq!(
            c.aead_open(&other_key, &nonce, &aad, &mut buf, &tag),
            Err(Error::Authentication),
            "{}",
            name(v)
        );
    }
}

#[test]
fn aead_key_rejects_unknown_suites() {
    let c = RustCrypto;
    let key = Secret::from_bytes([0x42; 32]);
    for code in [0u8, 3, 15, 255] {
        assert!(
            matches!(c.aead_key(Suite::from_code(code), &key), Err(Error::UnsupportedSuite(s)) if s == code),
            "suite code {code}"
        );
    }
}

const HMAC: &str = include_str!("data/hmac_sha256_rfc4231.json");

#[test]
fn hmac_sha256_rfc4231() {
    let file = parse(HMAC);
    for v in vectors(&file, "vectors", 3) {
        let data = bytes(v, "data");
        // Split the data to check that the parts are concatenated.
        let (a, b) = data.split_at(data.len() / 2);
        let mac = RustCrypto.hmac_sha256(&bytes(v, "key"), &[a, b]);
        assert_eq!(mac.to_vec(), bytes(v, "mac"), "{}", name(v));
        let mut wrong = bytes(v, "key");
        wrong[0] ^= 1;
        assert_ne!(
            RustCrypto.hmac_sha256(&wrong, &[&data]).to_vec(),
            bytes(v, "mac")
        );
    }
}
