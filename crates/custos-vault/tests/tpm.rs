//! The TPM backend against a software TPM (swtpm), one private TPM per test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod swtpm;

use custos_proto::{
    Crypto, DeviceId, Epoch, MasterSecret, NodeId, RustCrypto, Schedule, Secret, Span, TreeSpec,
    UnixTime,
};
use custos_vault::{
    TpmImportBlob, TpmKey, TpmSealed, TpmSealer, TpmVault, Vault, VaultError, wrap_hmac_key_for_tpm,
};
use ed25519_dalek::{Signature, VerifyingKey};
use rand_core::{OsRng, RngCore};
use swtpm::Swtpm;

fn spec(device: u8) -> TreeSpec {
    let span = Span::new(
        UnixTime::from_date(2026, 1, 1).unwrap(),
        UnixTime::from_date(2027, 1, 1).unwrap(),
    )
    .unwrap();
    TreeSpec::new(DeviceId([device; 8]), Epoch(1), Schedule::default(), span).unwrap()
}

/// The root, a node of every depth in March, and the last leaf of the year.
fn nodes(spec: &TreeSpec) -> Vec<NodeId> {
    let march = UnixTime::from_date(2026, 3, 14).unwrap();
    let mut out = vec![NodeId::ROOT];
    for depth in 1..=spec.leaf_depth() {
        out.push(spec.node_at(depth, march).unwrap());
    }
    let last = UnixTime::from_date(2027, 1, 1).unwrap().secs() - 1;
    out.push(
        spec.node_at(spec.leaf_depth(), UnixTime::new(last).unwrap())
            .unwrap(),
    );
    out
}

fn random32() -> [u8; 32] {
    let mut b = [0u8; 32];
    OsRng.fill_bytes(&mut b);
    b
}

fn verify(public: [u8; 32], msg: &[u8], sig: [u8; 64]) -> bool {
    VerifyingKey::from_bytes(&public)
        .unwrap()
        .verify_strict(msg, &Signature::from_bytes(&sig))
        .is_ok()
}

#[test]
fn signs_with_the_sealed_seed() {
    let dir = tempfile::tempdir().unwrap();
    let tpm = Swtpm::start(dir.path());
    let path = dir.path().join("vault.json");
    let vault = TpmVault::create(&path, &tpm.tcti()).unwrap();
    assert!(format!("{vault:?}").starts_with("TpmVault"));
    let sig = vault.sign(b"grant").unwrap();
    assert!(verify(vault.signing_public(), b"grant", sig));
    assert!(!verify(vault.signing_public(), b"grunt", sig));
    // Through the trait object the keeper uses.
    let boxed: Box<dyn Vault> = Box::new(vault);
    let sig = boxed.sign(b"log entry").unwrap();
    assert!(verify(boxed.signing_public(), b"log entry", sig));
    // Never over an existing file.
    assert!(matches!(
        TpmVault::create(&path, &tpm.tcti()),
        Err(VaultError::AlreadyExists(_))
    ));
}

#[test]
fn imported_master_derives_what_software_derives() {
    let dir = tempfile::tempdir().unwrap();
    let tpm = Swtpm::start(dir.path());
    let (m, seed) = (random32(), random32());
    let master = MasterSecret::new(Secret::from_bytes(m));
    let path = dir.path().join("vault.json");
    let vault = TpmVault::import(&path, &tpm.tcti(), &master, &Secret::from_bytes(seed)).unwrap();
    assert_eq!(
        vault.signing_public(),
        RustCrypto.ed25519_public(&Secret::from_bytes(seed))
    );
    for device in [1, 2] {
        let spec = spec(device);
        let root = spec.root(&RustCrypto, &master).unwrap();
        for node in nodes(&spec) {
            let expected = spec.derive(&RustCrypto, &root, node).unwrap();
            assert_eq!(vault.derive(&spec, node).unwrap(), expected);
        }
    }
    // Not in the tree: an error, not a TPM call that pretends.
    let bad = NodeId { depth: 0, index: 1 };
    assert!(matches!(
        vault.derive(&spec(1), bad),
        Err(VaultError::Derive(_))
    ));
    // The file holds neither secret, raw or in hex.
    let file = std::fs::read(&path).unwrap();
    for secret in [m, seed] {
        assert!(!file.windows(32).any(|w| w == secret));
        let hex = hex::encode(secret);
        assert!(!String::from_utf8_lossy(&file).contains(&hex));
    }
}

#[test]
fn generated_master_is_deterministic_and_separates_devices() {
    let dir = tempfile::tempdir().unwrap();
    let tpm = Swtpm::start(dir.path());
    let a = TpmVault::create(&dir.path().join("a.json"), &tpm.tcti()).unwrap();
    let b = TpmVault::create(&dir.path().join("b.json"), &tpm.tcti()).unwrap();
    let (s1, s2) = (spec(1), spec(2));
    let leaf = nodes(&s1)[2];
    assert_eq!(a.derive(&s1, leaf).unwrap(), a.derive(&s1, leaf).unwrap());
    assert_ne!(
        a.derive(&s1, NodeId::ROOT).unwrap().secret(),
        a.derive(&s2, NodeId::ROOT).unwrap().secret()
    );
    assert_ne!(
        a.derive(&s1, NodeId::ROOT).unwrap().secret(),
        b.derive(&s1, NodeId::ROOT).unwrap().secret()
    );
    // Nodes below the root follow from it as in software.
    let root = a.derive(&s1, NodeId::ROOT).unwrap();
    assert_eq!(
        a.derive(&s1, leaf).unwrap(),
        s1.derive(&RustCrypto, &root, leaf).unwrap()
    );
}

#[test]
fn sealed_state_opens_only_in_its_context_and_vault() {
    let dir = tempfile::tempdir().unwrap();
    let tpm = Swtpm::start(dir.path());
    let master = MasterSecret::new(Secret::from_bytes(random32()));
    let a = TpmVault::import(
        &dir.path().join("a.json"),
        &tpm.tcti(),
        &master,
        &Secret::from_bytes(random32()),
    )
    .unwrap();
    let b = TpmVault::create(&dir.path().join("b.json"), &tpm.tcti()).unwrap();
    let ctx = b"custos/v1/keeper/udk\x00\x11\x22\x33\x44\x55\x66\x77";
    let sealed = a.seal_state(ctx, b"key bytes").unwrap();
    assert_eq!(&a.open_state(ctx, &sealed).unwrap()[..], b"key bytes");
    assert!(!sealed.windows(9).any(|w| w == b"key bytes"));
    for bad in [
        a.open_state(b"custos/v1/keeper/udk\x00", &sealed),
        b.open_state(ctx, &sealed),
        a.open_state(ctx, &sealed[..20]),
        a.open_state(ctx, &[]),
    ] {
        assert!(matches!(bad, Err(VaultError::StateTampered)));
    }
    for i in 0..sealed.len() {
        let mut x = sealed.clone();
        x[i] ^= 1;
        assert!(matches!(
            a.open_state(ctx, &x),
            Err(VaultError::StateTampered)
        ));
    }
    // The state key is HKDF-Expand(M, "custos/v1/vault-state"), as in the software vault: same M, same key.
    let mut key = [0u8; 32];
    RustCrypto
        .hkdf_expand(
            master.expose().expose(),
            &[b"custos/v1/vault-state"],
            &mut key,
        )
        .unwrap();
    let aead = RustCrypto
        .aead_key(custos_proto::Suite::AES256GCM, &Secret::from_bytes(key))
        .unwrap();
    let (nonce, rest) = sealed.split_at(12);
    let (body, tag) = rest.split_at(rest.len() - 16);
    let mut buf = body.to_vec();
    RustCrypto
        .aead_open(
            &aead,
            nonce.try_into().unwrap(),
            ctx,
            &mut buf,
            tag.try_into().unwrap(),
        )
        .unwrap();
    assert_eq!(buf, b"key bytes");
}

#[test]
fn reopens_after_the_tpm_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("tpm");
    std::fs::create_dir(&state).unwrap();
    let tpm = Swtpm::start(&state);
    let path = dir.path().join("vault.json");
    let vault = TpmVault::create(&path, &tpm.tcti()).unwrap();
    let (public, root) = (
        vault.signing_public(),
        vault.derive(&spec(3), NodeId::ROOT).unwrap(),
    );
    let sealed = vault.seal_state(b"ctx", b"kept").unwrap();
    let sealer = TpmSealer::connect(&tpm.tcti()).unwrap();
    let sdk = sealer.seal("custos/v1/device/sdk", &[7; 32]).unwrap();
    drop((vault, sealer));

    let tpm = tpm.restart();
    let vault = TpmVault::open(&path, &tpm.tcti()).unwrap();
    assert_eq!(vault.signing_public(), public);
    assert_eq!(vault.derive(&spec(3), NodeId::ROOT).unwrap(), root);
    assert_eq!(&vault.open_state(b"ctx", &sealed).unwrap()[..], b"kept");
    assert!(verify(public, b"m", vault.sign(b"m").unwrap()));
    let sealer = TpmSealer::connect(&tpm.tcti()).unwrap();
    assert_eq!(
        &sealer.unseal("custos/v1/device/sdk", &sdk).unwrap()[..],
        &[7; 32]
    );
}

#[test]
fn another_tpm_cannot_open_the_blobs() {
    let dir = tempfile::tempdir().unwrap();
    let (state_a, state_b) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir(&state_a).unwrap();
    std::fs::create_dir(&state_b).unwrap();
    let (tpm_a, tpm_b) = (Swtpm::start(&state_a), Swtpm::start(&state_b));
    let path = dir.path().join("vault.json");
    drop(TpmVault::create(&path, &tpm_a.tcti()).unwrap());
    // The attacker with the disk (the vault file, the sealed blobs) and a TPM, but not this TPM.
    let err = TpmVault::open(&path, &tpm_b.tcti()).unwrap_err();
    assert!(matches!(err, VaultError::WrongTpm(_)), "{err}");
    assert!(err.to_string().contains("another TPM"), "{err}");
    let sealed = TpmSealer::connect(&tpm_a.tcti())
        .unwrap()
        .seal("custos/v1/device/x25519", &[9; 32])
        .unwrap();
    let other = TpmSealer::connect(&tpm_b.tcti()).unwrap();
    assert!(matches!(
        other.unseal("custos/v1/device/x25519", &sealed),
        Err(VaultError::WrongTpm(_))
    ));
    // And the right TPM still opens it.
    assert!(TpmVault::open(&path, &tpm_a.tcti()).is_ok());
}

#[test]
fn device_secrets_seal_to_the_tpm_under_their_names() {
    let dir = tempfile::tempdir().unwrap();
    let tpm = Swtpm::start(dir.path());
    let sealer = TpmSealer::connect(&tpm.tcti()).unwrap();
    let (sdk, x25519) = (random32(), random32());
    let sealed_sdk = sealer.seal("custos/v1/device/sdk", &sdk).unwrap();
    let sealed_x = sealer.seal("custos/v1/device/x25519", &x25519).unwrap();
    let bytes = sealed_sdk.to_bytes().unwrap();
    assert!(!bytes.windows(32).any(|w| w == sdk));
    let back = TpmSealed::from_bytes(&bytes).unwrap();
    assert_eq!(back, sealed_sdk);
    assert_eq!(
        &sealer.unseal("custos/v1/device/sdk", &back).unwrap()[..],
        &sdk
    );
    assert_eq!(
        &sealer.unseal("custos/v1/device/x25519", &sealed_x).unwrap()[..],
        &x25519
    );
    // Under another name the TPM releases nothing.
    assert!(matches!(
        sealer.unseal("custos/v1/device/x25519", &sealed_sdk),
        Err(VaultError::SealedName)
    ));
    // Sizes: 1 to 128 bytes.
    for len in [0, 129] {
        assert!(matches!(
            sealer.seal("n", &vec![1; len]),
            Err(VaultError::SealedLength(l)) if l == len
        ));
    }
    assert_eq!(
        &sealer
            .unseal("n", &sealer.seal("n", &[5; 128]).unwrap())
            .unwrap()[..],
        &[5; 128]
    );
    // Every altered byte is refused, by the parser or by the TPM, and releases nothing.
    for i in 0..bytes.len() {
        let mut x = bytes.clone();
        x[i] ^= 0x01;
        let opened =
            TpmSealed::from_bytes(&x).and_then(|s| sealer.unseal("custos/v1/device/sdk", &s));
        assert!(opened.is_err(), "byte {i} altered, still unsealed");
    }
    for bad in [
        &[][..],
        &[2, 0, 0][..],
        &bytes[..bytes.len() - 1],
        &[bytes.clone(), vec![0]].concat()[..],
    ] {
        assert!(TpmSealed::from_bytes(bad).is_err());
    }
    // The keeper's vault offers the same to a device run beside it.
    let vault = TpmVault::create(&dir.path().join("vault.json"), &tpm.tcti()).unwrap();
    let s = vault
        .seal_device_secret("custos/v1/device/sdk", &sdk)
        .unwrap();
    assert_eq!(
        &vault
            .unseal_device_secret("custos/v1/device/sdk", &s)
            .unwrap()[..],
        &sdk
    );
    assert_eq!(
        &sealer.unseal("custos/v1/device/sdk", &s).unwrap()[..],
        &sdk
    );
}

#[test]
fn bad_tcti_and_bad_files_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let err = TpmSealer::connect("nonsense:").unwrap_err();
    assert!(matches!(err, VaultError::Tpm { .. }), "{err}");
    // Nothing listens on this port: connecting fails with the TCTI in the message.
    let port = std::net::TcpListener::bind(("127.0.0.1", 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let tcti = format!("swtpm:host=127.0.0.1,port={port}");
    let err = TpmSealer::connect(&tcti).unwrap_err();
    assert!(err.to_string().contains(&tcti), "{err}");

    let tpm = Swtpm::start(dir.path());
    let path = dir.path().join("vault.json");
    drop(TpmVault::create(&path, &tpm.tcti()).unwrap());
    let good: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let edits: [(&str, serde_json::Value); 4] = [
        ("format", "custos-vault-tpm/2".into()),
        ("signing_public", hex::encode([1u8; 32]).into()),
        ("master", "00".into()),
        ("extra", "1".into()),
    ];
    for (i, (field, value)) in edits.into_iter().enumerate() {
        let mut doc = good.clone();
        doc[field] = value;
        let p = dir.path().join(format!("bad{i}.json"));
        std::fs::write(&p, serde_json::to_vec(&doc).unwrap()).unwrap();
        let err = TpmVault::open(&p, &tpm.tcti()).unwrap_err();
        assert!(
            matches!(
                err,
                VaultError::Malformed(_) | VaultError::UnsupportedFormat(_)
            ),
            "{field}: {err}"
        );
    }
    // A seed blob swapped for another vault's is refused (another name would be too, but this one matches).
    let other = dir.path().join("other.json");
    drop(TpmVault::create(&other, &tpm.tcti()).unwrap());
    let other: serde_json::Value = serde_json::from_slice(&std::fs::read(&other).unwrap()).unwrap();
    let mut doc = good.clone();
    doc["seed"] = other["seed"].clone();
    let p = dir.path().join("swapped.json");
    std::fs::write(&p, serde_json::to_vec(&doc).unwrap()).unwrap();
    assert!(matches!(
        TpmVault::open(&p, &tpm.tcti()),
        Err(VaultError::Malformed(_))
    ));
}

#[test]
fn a_key_wrapped_in_software_imports_into_the_recipient_tpm_only() {
    let dir = tempfile::tempdir().unwrap();
    let (state_a, state_b) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir(&state_a).unwrap();
    std::fs::create_dir(&state_b).unwrap();
    let (tpm_a, tpm_b) = (Swtpm::start(&state_a), Swtpm::start(&state_b));
    let node = TpmSealer::connect(&tpm_a.tcti()).unwrap();
    let parent = node.storage_public().unwrap();
    // The same storage key on every connection: the sender may cache it.
    assert_eq!(
        TpmSealer::connect(&tpm_a.tcti())
            .unwrap()
            .storage_public()
            .unwrap(),
        parent
    );

    // The hub's side: no TPM.
    let session_key = random32();
    let blob = wrap_hmac_key_for_tpm(&parent, &session_key, &mut OsRng).unwrap();
    let bytes = blob.to_bytes();
    assert_eq!(bytes.len(), 230);
    assert!(!bytes.windows(32).any(|w| w == session_key));
    let blob = TpmImportBlob::from_bytes(&bytes).unwrap();

    // The node's side: import, then the TPM's HMAC with the key equals the software HMAC with it.
    let key = node.import(&blob).unwrap();
    let key = TpmKey::from_bytes(&key.to_bytes().unwrap()).unwrap();
    let msg = b"custos/v1/node-session test";
    assert_eq!(
        *node.hmac(&key, msg).unwrap(),
        RustCrypto.hmac_sha256(&session_key, &[msg])
    );
    // Still there after the TPM restarts.
    drop(node);
    let tpm_a = tpm_a.restart();
    let node = TpmSealer::connect(&tpm_a.tcti()).unwrap();
    assert_eq!(
        *node.hmac(&key, msg).unwrap(),
        RustCrypto.hmac_sha256(&session_key, &[msg])
    );

    // Another TPM cannot import it, and no altered byte imports.
    let other = TpmSealer::connect(&tpm_b.tcti()).unwrap();
    assert!(matches!(other.import(&blob), Err(VaultError::WrongTpm(_))));
    for i in 0..bytes.len() {
        let mut x = bytes.clone();
        x[i] ^= 0x01;
        let imported = TpmImportBlob::from_bytes(&x).and_then(|b| node.import(&b));
        // Refused by the parser, by the TPM's checks of the public area, or by the outer HMAC, which covers the
        // ciphertext and the object's name (a hash of the public area).
        assert!(imported.is_err(), "byte {i} altered, still imported");
    }
    // A parent that is not a P-256 storage key is refused before any cryptography.
    let mut not_storage = parent.clone();
    // Set the sign attribute: bit 18 of the big-endian u32 after size, type and name algorithm.
    not_storage[2 + 2 + 2 + 1] |= 0x04;
    assert!(matches!(
        wrap_hmac_key_for_tpm(&not_storage, &session_key, &mut OsRng),
        Err(VaultError::Malformed(_))
    ));
}
