//! The published vectors of docs/registry.md (docs/vectors/registry-v1.json): the code must make exactly these
//! bytes from these seeds, and read them back. `docs/vectors/verify.py` checks them independently (fingerprints,
//! the OpenPGP and COSE signatures, the log entries' leaf hashes). To write the file after a deliberate format
//! change: `CUSTOS_WRITE_VECTORS=1 cargo test -p custos-registry --test vectors`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use custos_proto::DeviceId;
use custos_proto::translog;
use custos_registry::cert::{self, Claims, Ed25519Key};
use custos_registry::registry::{Entry, entry_bytes, kind};
use custos_registry::statement::{Statement, Status};
use serde_json::{Value, json};

const PATH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../docs/vectors/registry-v1.json"
);

fn seed(b: u8) -> [u8; 32] {
    core::array::from_fn(|i| b.wrapping_add(i as u8))
}

fn build() -> Value {
    let created = 1_780_000_000u32;
    let device = DeviceId([0x02, 0x00, 0x5e, 0x10, 0x00, 0x00, 0x00, 0x01]);
    let admission_secret = seed(0x40);
    let admission_public =
        x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(admission_secret))
            .to_bytes();
    let identity_seed = cert::device_identity_seed(&admission_secret, device);
    let identity = Ed25519Key::from_seed(&identity_seed, created).unwrap();
    let maker = Ed25519Key::from_seed(&seed(0x00), created).unwrap();
    let maker_cert = cert::party_certificate(&maker, "Acme Sensors (manufacturer)").unwrap();
    let own = cert::device_certificate(&identity, device, admission_public).unwrap();
    let claims = Claims {
        role: "manufacturer".into(),
        attributes: vec![
            ("manu".into(), "Acme Sensors".into()),
            ("model".into(), "TH-1".into()),
            ("lot".into(), "2026-48".into()),
        ],
    };
    let certification = cert::certify(&maker, &own, &claims, created + 60).unwrap();
    let mut issued = own.clone();
    issued.details.users[0].signatures.push(certification);
    let status = Statement::Status {
        signer: maker.fingerprint(),
        subject: identity.fingerprint().to_vec(),
        issued_at: u64::from(created) + 3600,
        status: Status::Stolen,
        domain: "acme".into(),
        note: "reported by the site".into(),
    };
    let status_bytes = status.sign(&maker).unwrap();
    let code = Statement::Code {
        signer: maker.fingerprint(),
        digest: seed(0xa0),
        issued_at: u64::from(created) + 7200,
        name: "th1-firmware".into(),
        version: "1.4.2".into(),
        domain: "acme".into(),
    };
    let code_bytes = code.sign(&maker).unwrap();
    let cert_bytes = cert::to_bytes(&issued).unwrap();
    let entry = entry_bytes(kind::CERT, "acme", u64::from(created) + 61, &cert_bytes);
    let statement_entry = entry_bytes(
        kind::STATEMENT,
        "acme",
        u64::from(created) + 3601,
        &status_bytes,
    );
    json!({
        "created": created,
        "device": device.to_string(),
        "admission_secret": hex::encode(admission_secret),
        "admission_public": hex::encode(admission_public),
        "identity_seed": hex::encode(identity_seed),
        "identity_fingerprint": hex::encode_upper(identity.fingerprint()),
        "manufacturer_seed": hex::encode(seed(0x00)),
        "manufacturer_fingerprint": hex::encode_upper(maker.fingerprint()),
        "manufacturer_certificate": hex::encode(cert::to_bytes(&maker_cert).unwrap()),
        "device_certificate_own": hex::encode(cert::to_bytes(&own).unwrap()),
        "device_certificate_issued": hex::encode(&cert_bytes),
        "status": hex::encode(&status_bytes),
        "code_identity": hex::encode(&code_bytes),
        "code_digest": hex::encode(seed(0xa0)),
        "log_entries": [
            {"entry": hex::encode(&entry), "leaf_hash": hex::encode(translog::leaf_hash(&entry))},
            {"entry": hex::encode(&statement_entry), "leaf_hash": hex::encode(translog::leaf_hash(&statement_entry))},
        ],
    })
}

#[test]
fn the_code_makes_the_published_vectors_and_reads_them_back() {
    let built = build();
    if std::env::var_os("CUSTOS_WRITE_VECTORS").is_some() {
        std::fs::write(PATH, serde_json::to_string_pretty(&built).unwrap() + "\n").unwrap();
    }
    let published: Value = serde_json::from_str(&std::fs::read_to_string(PATH).unwrap()).unwrap();
    assert_eq!(
        built, published,
        "docs/vectors/registry-v1.json differs from what the code makes"
    );

    let h = |k: &str| hex::decode(published[k].as_str().unwrap()).unwrap();
    let issued = cert::check(cert::parse(&h("device_certificate_issued")).unwrap()).unwrap();
    assert_eq!(
        hex::encode_upper(issued.fingerprint),
        published["identity_fingerprint"]
    );
    assert_eq!(
        hex::encode(issued.x25519.unwrap()),
        published["admission_public"]
    );
    let maker = cert::check(cert::parse(&h("manufacturer_certificate")).unwrap()).unwrap();
    cert::verify_certification(&issued, &issued.certifications[0], &maker.cert.primary_key)
        .unwrap();
    assert_eq!(issued.certifications[0].claims.role, "manufacturer");
    let status = Statement::verify(&h("status"), &maker.ed25519).unwrap();
    assert!(matches!(
        status,
        Statement::Status {
            status: Status::Stolen,
            ..
        }
    ));
    let code = Statement::verify(&h("code_identity"), &maker.ed25519).unwrap();
    assert_eq!(code.subject(), h("code_digest").as_slice());
    for e in published["log_entries"].as_array().unwrap() {
        let bytes = hex::decode(e["entry"].as_str().unwrap()).unwrap();
        assert_eq!(hex::encode(translog::leaf_hash(&bytes)), e["leaf_hash"]);
        Entry::decode(&bytes).unwrap();
    }
}
