#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The software vault against its promises: round trips, refusal of wrong unlocks and altered files, no secret
//! on disk, private atomic files, passphrase rotation, clear errors on malformed input.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use custos_proto::tree::{DeviceId, Epoch, MasterSecret, NodeId, TreeSpec};
use custos_proto::{Crypto, RustCrypto, Schedule, Secret, Span, UnixTime};
use custos_vault::{KdfParams, SoftwareVault, Unlock, Vault, VaultError, create_key_file};
use rand_core::{CryptoRng, OsRng, RngCore};
use serde_json::Value;

const PASS: &str = "correct horse battery staple";

/// Small Argon2id cost so the tests run fast; the cost is stored in the file like any other.
fn fast() -> KdfParams {
    KdfParams::new(64, 1, 1).unwrap()
}

fn spec() -> TreeSpec {
    let year = Span::new(
        UnixTime::from_date(2026, 1, 1).unwrap(),
        UnixTime::from_date(2027, 1, 1).unwrap(),
    )
    .unwrap();
    TreeSpec::new(
        DeviceId([1, 2, 3, 4, 5, 6, 7, 8]),
        Epoch(3),
        Schedule::default(),
        year,
    )
    .unwrap()
}

/// A month and a day of the tree, below the root.
fn nodes(spec: &TreeSpec) -> [NodeId; 2] {
    let t = UnixTime::from_date(2026, 3, 9).unwrap();
    [
        spec.node_at(1, t).unwrap(),
        spec.node_at(spec.leaf_depth(), t).unwrap(),
    ]
}

/// OsRng that remembers every byte it hands out, so a test can find the secrets the vault drew.
#[derive(Default)]
struct Recording {
    seen: Vec<u8>,
}

impl RngCore for Recording {
    fn next_u32(&mut self) -> u32 {
        let mut b = [0; 4];
        self.fill_bytes(&mut b);
        u32::from_le_bytes(b)
    }
    fn next_u64(&mut self) -> u64 {
        let mut b = [0; 8];
        self.fill_bytes(&mut b);
        u64::from_le_bytes(b)
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        OsRng.fill_bytes(dest);
        self.seen.extend_from_slice(dest);
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl CryptoRng for Recording {}

fn dir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn key_file(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    create_key_file(&path, &mut OsRng).unwrap();
    path
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn write_json(path: &Path, v: &Value) {
    std::fs::write(path, serde_json::to_vec_pretty(v).unwrap()).unwrap();
}

/// The vault that created the file and the one that opened it act as one: same key, same tree.
fn assert_same_vault(created: &dyn Vault, opened: &dyn Vault) {
    let c = RustCrypto;
    assert_eq!(created.signing_public(), opened.signing_public());
    let msg = b"grant: app 7, device 01-02, March 2026";
    let sig = opened.sign(msg).unwrap();
    c.ed25519_verify(&created.signing_public(), msg, &sig)
        .unwrap();
    assert!(
        c.ed25519_verify(&created.signing_public(), b"another message", &sig)
            .is_err()
    );

    let spec = spec();
    let root = opened.derive(&spec, NodeId::ROOT).unwrap();
    assert_eq!(
        root.secret().expose(),
        created
            .derive(&spec, NodeId::ROOT)
            .unwrap()
            .secret()
            .expose()
    );
    for node in nodes(&spec) {
        let derived = opened.derive(&spec, node).unwrap();
        assert_eq!(derived.node(), node);
        assert_eq!(derived, spec.derive(&c, &root, node).unwrap());
        assert_ne!(derived.secret(), root.secret());
    }
    // A node that is not in the tree is an error, not a panic.
    let bad = NodeId { depth: 9, index: 0 };
    assert!(matches!(
        opened.derive(&spec, bad),
        Err(VaultError::Derive(_))
    ));
}

#[test]
fn passphrase_round_trip() {
    let d = dir();
    let path = d.path().join("vault.json");
    let created =
        SoftwareVault::create(&path, Unlock::Passphrase(PASS), fast(), &mut OsRng).unwrap();
    let opened = SoftwareVault::open(&path, Unlock::Passphrase(PASS)).unwrap();
    assert_same_vault(&created, &opened);

    // Two vaults never share secrets.
    let other_path = d.path().join("other.json");
    let other =
        SoftwareVault::create(&other_path, Unlock::Passphrase(PASS), fast(), &mut OsRng).unwrap();
    assert_ne!(other.signing_public(), created.signing_public());
    assert_ne!(
        other.derive(&spec(), NodeId::ROOT).unwrap(),
        created.derive(&spec(), NodeId::ROOT).unwrap()
    );
}

#[test]
fn key_file_round_trip() {
    let d = dir();
    let key = key_file(d.path(), "vault.key");
    assert_eq!(std::fs::read(&key).unwrap().len(), 32);
    let path = d.path().join("vault.json");
    let created = SoftwareVault::create(&path, Unlock::KeyFile(&key), fast(), &mut OsRng).unwrap();
    let opened = SoftwareVault::open(&path, Unlock::KeyFile(&key)).unwrap();
    assert_same_vault(&created, &opened);
    assert_eq!(read_json(&path)["kdf"]["algorithm"], "keyfile");
}

#[test]
fn default_kdf_is_owasp_and_stored_in_the_file() {
    assert_eq!(KdfParams::default(), KdfParams::OWASP);
    assert_eq!(
        (
            KdfParams::OWASP.memory_kib(),
            KdfParams::OWASP.iterations(),
            KdfParams::OWASP.parallelism()
        ),
        (19 * 1024, 2, 1)
    );
    let d = dir();
    let path = d.path().join("vault.json");
    let params = KdfParams::new(96, 3, 2).unwrap();
    SoftwareVault::create(&path, Unlock::Passphrase(PASS), params, &mut OsRng).unwrap();
    let kdf = &read_json(&path)["kdf"];
    assert_eq!(kdf["algorithm"], "argon2id");
    assert_eq!(kdf["version"], 19);
    assert_eq!(kdf["memory_kib"], 96);
    assert_eq!(kdf["iterations"], 3);
    assert_eq!(kdf["parallelism"], 2);
    assert_eq!(kdf["salt"].as_str().unwrap().len(), 32);
    SoftwareVault::open(&path, Unlock::Passphrase(PASS)).unwrap();
}

/// Finds the master secret and the signing seed among the bytes the RNG gave out, by what they do: the master
/// derives the vault's DPK, the seed gives its public key. Fails if either is not found, so the search below
/// always looks for the real secrets.
fn drawn_secrets(vault: &SoftwareVault, drawn: &[u8]) -> ([u8; 32], [u8; 32]) {
    let c = RustCrypto;
    let spec = spec();
    let root = vault.derive(&spec, NodeId::ROOT).unwrap();
    let mut master = None;
    let mut seed = None;
    for w in drawn.windows(32) {
        let candidate: [u8; 32] = w.try_into().unwrap();
        let secret = Secret::from_bytes(candidate);
        if c.ed25519_public(&secret) == vault.signing_public() {
            seed = Some(candidate);
        }
        if spec
            .root(&c, &MasterSecret::new(secret))
            .is_ok_and(|r| r == root)
        {
            master = Some(candidate);
        }
    }
    (
        master.expect("master secret not among the random bytes"),
        seed.expect("signing seed not among the random bytes"),
    )
}

fn assert_not_in(haystack: &[u8], secret: &[u8; 32], what: &str) {
    let lower = hex::encode(secret);
    let upper = lower.to_uppercase();
    for needle in [&secret[..], lower.as_bytes(), upper.as_bytes()] {
        assert!(
            !haystack.windows(needle.len()).any(|w| w == needle),
            "{what} found in the vault file"
        );
    }
    // Not even a recognisable half of it.
    assert!(!haystack.windows(16).any(|w| w == &secret[..16]));
    assert!(
        !haystack
            .windows(32)
            .any(|w| w.eq_ignore_ascii_case(&lower.as_bytes()[..32]))
    );
}

#[test]
fn vault_file_holds_neither_master_nor_seed() {
    let d = dir();
    let key = key_file(d.path(), "vault.key");
    for (name, unlock) in [
        ("pass.json", Unlock::Passphrase(PASS)),
        ("key.json", Unlock::KeyFile(&key)),
    ] {
        let path = d.path().join(name);
        let mut rng = Recording::default();
        let vault = SoftwareVault::create(&path, unlock, fast(), &mut rng).unwrap();
        let (master, seed) = drawn_secrets(&vault, &rng.seen);
        assert_ne!(master, seed);
        let file = std::fs::read(&path).unwrap();
        assert_not_in(&file, &master, "master secret");
        assert_not_in(&file, &seed, "signing seed");

        // Debug output is as clean as the file.
        let printed = format!("{vault:?}").into_bytes();
        assert_not_in(&printed, &master, "master secret");
        assert_not_in(&printed, &seed, "signing seed");
        // And the reopened vault holds the very same secrets.
        let reopened = SoftwareVault::open(&path, unlock).unwrap();
        assert_eq!(drawn_secrets(&reopened, &rng.seen), (master, seed));
    }
}

#[test]
fn wrong_passphrase_is_refused() {
    let d = dir();
    let path = d.path().join("vault.json");
    SoftwareVault::create(&path, Unlock::Passphrase(PASS), fast(), &mut OsRng).unwrap();
    for wrong in [
        "correct horse battery stapl",
        "Correct horse battery staple",
        "x",
        "",
    ] {
        let err = SoftwareVault::open(&path, Unlock::Passphrase(wrong)).unwrap_err();
        assert!(matches!(err, VaultError::WrongUnlock), "{wrong:?}: {err}");
    }
    assert_eq!(
        VaultError::WrongUnlock.to_string(),
        "wrong passphrase or key file, or the vault file was altered"
    );
}

#[test]
fn wrong_key_file_is_refused() {
    let d = dir();
    let key = key_file(d.path(), "right.key");
    let wrong = key_file(d.path(), "wrong.key");
    let path = d.path().join("vault.json");
    SoftwareVault::create(&path, Unlock::KeyFile(&key), fast(), &mut OsRng).unwrap();
    assert!(matches!(
        SoftwareVault::open(&path, Unlock::KeyFile(&wrong)),
        Err(VaultError::WrongUnlock)
    ));

    // A key file of the wrong length is named as such, both when creating and when opening.
    for len in [0, 31, 33, 64] {
        let short = d.path().join(format!("len{len}.key"));
        std::fs::write(&short, vec![7u8; len]).unwrap();
        assert!(matches!(
            SoftwareVault::open(&path, Unlock::KeyFile(&short)),
            Err(VaultError::KeyFileLength)
        ));
        assert!(matches!(
            SoftwareVault::create(
                &d.path().join(format!("v{len}.json")),
                Unlock::KeyFile(&short),
                fast(),
                &mut OsRng
            ),
            Err(VaultError::KeyFileLength)
        ));
        assert!(!d.path().join(format!("v{len}.json")).exists());
    }
    let missing = d.path().join("missing.key");
    assert!(matches!(
        SoftwareVault::open(&path, Unlock::KeyFile(&missing)),
        Err(VaultError::Io { path, .. }) if path == missing
    ));
}

#[test]
fn other_kind_of_unlock_is_explained() {
    let d = dir();
    let key = key_file(d.path(), "vault.key");
    let by_pass = d.path().join("pass.json");
    let by_key = d.path().join("key.json");
    SoftwareVault::create(&by_pass, Unlock::Passphrase(PASS), fast(), &mut OsRng).unwrap();
    SoftwareVault::create(&by_key, Unlock::KeyFile(&key), fast(), &mut OsRng).unwrap();
    assert!(matches!(
        SoftwareVault::open(&by_pass, Unlock::KeyFile(&key)),
        Err(VaultError::UnlockKind {
            expected: "passphrase",
            given: "key file"
        })
    ));
    assert!(matches!(
        SoftwareVault::open(&by_key, Unlock::Passphrase(PASS)),
        Err(VaultError::UnlockKind {
            expected: "key file",
            given: "passphrase"
        })
    ));
}

/// Flips one bit in each byte of a hex field, in turn, and expects every altered file to be refused.
fn assert_every_byte_authenticated(path: &Path, unlock: Unlock<'_>, field: &[&str]) {
    let original = read_json(path);
    let at = |v: &Value| {
        field
            .iter()
            .fold(v.clone(), |v, f| v[*f].clone())
            .as_str()
            .unwrap()
            .to_owned()
    };
    let bytes = hex::decode(at(&original)).unwrap();
    assert!(!bytes.is_empty());
    for i in 0..bytes.len() {
        let mut changed = bytes.clone();
        changed[i] ^= 0x01;
        let mut v = original.clone();
        let slot = field.iter().fold(&mut v, |v, f| &mut v[*f]);
        *slot = Value::String(hex::encode(&changed));
        write_json(path, &v);
        let got = SoftwareVault::open(path, unlock);
        assert!(
            matches!(got, Err(VaultError::WrongUnlock)),
            "{field:?} byte {i}: {got:?}"
        );
    }
    write_json(path, &original);
    SoftwareVault::open(path, unlock).unwrap();
}

#[test]
fn every_byte_of_salt_nonce_and_ciphertext_is_authenticated() {
    let d = dir();
    let key = key_file(d.path(), "vault.key");
    for (name, unlock) in [
        ("pass.json", Unlock::Passphrase(PASS)),
        ("key.json", Unlock::KeyFile(&key)),
    ] {
        let path = d.path().join(name);
        SoftwareVault::create(&path, unlock, fast(), &mut OsRng).unwrap();
        assert_every_byte_authenticated(&path, unlock, &["ciphertext"]);
        assert_every_byte_authenticated(&path, unlock, &["nonce"]);
        assert_every_byte_authenticated(&path, unlock, &["kdf", "salt"]);
    }
}

#[test]
fn changed_kdf_parameters_are_refused() {
    let d = dir();
    let path = d.path().join("vault.json");
    SoftwareVault::create(&path, Unlock::Passphrase(PASS), fast(), &mut OsRng).unwrap();
    let original = read_json(&path);
    // In range, so they reach the AEAD, which refuses them.
    for (field, value) in [("memory_kib", 72), ("iterations", 2), ("parallelism", 2)] {
        let mut v = original.clone();
        v["kdf"][field] = value.into();
        write_json(&path, &v);
        let got = SoftwareVault::open(&path, Unlock::Passphrase(PASS));
        assert!(
            matches!(got, Err(VaultError::WrongUnlock)),
            "{field}: {got:?}"
        );
    }
    let mut v = original.clone();
    v["kdf"]["version"] = 16.into();
    write_json(&path, &v);
    assert!(matches!(
        SoftwareVault::open(&path, Unlock::Passphrase(PASS)),
        Err(VaultError::KdfParams(_))
    ));
    write_json(&path, &original);
    SoftwareVault::open(&path, Unlock::Passphrase(PASS)).unwrap();
}

/// Any single-bit change anywhere in the file, structure included, is refused (an error, never a vault).
#[test]
fn any_altered_byte_of_the_file_is_refused() {
    let d = dir();
    let key = key_file(d.path(), "vault.key");
    for (name, unlock) in [
        ("pass.json", Unlock::Passphrase(PASS)),
        ("key.json", Unlock::KeyFile(&key)),
    ] {
        let path = d.path().join(name);
        SoftwareVault::create(&path, unlock, fast(), &mut OsRng).unwrap();
        let original = std::fs::read(&path).unwrap();
        for i in 0..original.len() {
            let mut changed = original.clone();
            changed[i] ^= 0x01;
            std::fs::write(&path, &changed).unwrap();
            let got = SoftwareVault::open(&path, unlock);
            assert!(
                got.is_err(),
                "byte {i} ({:?}) changed and still opened",
                original[i] as char
            );
        }
        std::fs::write(&path, &original).unwrap();
        SoftwareVault::open(&path, unlock).unwrap();
    }
}

#[test]
fn absurd_kdf_parameters_are_refused() {
    for (m, t, p) in [
        (KdfParams::MAX_MEMORY_KIB + 1, 1, 1),
        (u32::MAX, 1, 1),
        (7, 1, 1),
        (15, 1, 2),
        (64, 0, 1),
        (64, KdfParams::MAX_ITERATIONS + 1, 1),
        (64, 1, 0),
        (1024, 1, KdfParams::MAX_PARALLELISM + 1),
    ] {
        assert!(
            matches!(KdfParams::new(m, t, p), Err(VaultError::KdfParams(_))),
            "{m} {t} {p}"
        );
    }
    KdfParams::new(KdfParams::MAX_MEMORY_KIB, 1, 1).unwrap();

    // The same limits apply to a file, checked before any memory is allocated.
    let d = dir();
    let path = d.path().join("vault.json");
    SoftwareVault::create(&path, Unlock::Passphrase(PASS), fast(), &mut OsRng).unwrap();
    let original = read_json(&path);
    for (field, value) in [
        ("memory_kib", Value::from(4u64 * 1024 * 1024 + 1)),
        ("memory_kib", Value::from(1u64 << 40)),
        ("iterations", Value::from(0)),
        ("iterations", Value::from(u64::MAX)),
        ("parallelism", Value::from(0)),
    ] {
        let mut v = original.clone();
        v["kdf"][field] = value.clone();
        write_json(&path, &v);
        let err = SoftwareVault::open(&path, Unlock::Passphrase(PASS)).unwrap_err();
        assert!(
            matches!(err, VaultError::KdfParams(_)),
            "{field}={value}: {err}"
        );
        assert!(err.to_string().contains(field.split('_').next().unwrap()));
    }
}

#[test]
fn malformed_files_get_clear_errors() {
    let d = dir();
    let path = d.path().join("vault.json");
    SoftwareVault::create(&path, Unlock::Passphrase(PASS), fast(), &mut OsRng).unwrap();
    let good = read_json(&path);
    let open = |bytes: &[u8]| {
        std::fs::write(&path, bytes).unwrap();
        SoftwareVault::open(&path, Unlock::Passphrase(PASS)).unwrap_err()
    };

    let err = open(b"");
    assert!(
        matches!(&err, VaultError::Malformed(m) if m.contains("empty")),
        "{err}"
    );
    assert!(matches!(open(b" \n"), VaultError::Malformed(m) if m.contains("empty")));
    assert!(matches!(open(b"not json"), VaultError::Malformed(_)));
    assert!(matches!(open(b"[1, 2]"), VaultError::Malformed(m) if m.contains("object")));
    assert!(matches!(open(b"{}"), VaultError::Malformed(m) if m.contains("format")));
    assert!(matches!(open(br#"{"format": 1}"#), VaultError::Malformed(m) if m.contains("format")));
    let truncated = serde_json::to_vec(&good).unwrap();
    assert!(matches!(
        open(&truncated[..truncated.len() / 2]),
        VaultError::Malformed(_)
    ));

    let err = open(br#"{"format": "custos-vault/2", "anything": "new"}"#);
    assert!(matches!(&err, VaultError::UnsupportedFormat(f) if f == "custos-vault/2"));
    assert!(err.to_string().contains("custos-vault/2"));

    let with = |edit: &dyn Fn(&mut Value)| {
        let mut v = good.clone();
        edit(&mut v);
        open(&serde_json::to_vec(&v).unwrap())
    };
    assert!(matches!(
        with(&|v| v["extra"] = "unauthenticated".into()),
        VaultError::Malformed(m) if m.contains("extra")
    ));
    assert!(matches!(
        with(&|v| v["kdf"]["extra"] = 1.into()),
        VaultError::Malformed(m) if m.contains("extra")
    ));
    assert!(matches!(
        with(&|v| v["kdf"]["algorithm"] = "scrypt".into()),
        VaultError::Malformed(m) if m.contains("scrypt")
    ));
    assert!(matches!(
        with(&|v| v["aead"] = "chacha20-poly1305".into()),
        VaultError::Malformed(m) if m.contains("aead")
    ));
    assert!(matches!(
        with(&|v| v["nonce"] = "zz".repeat(12).into()),
        VaultError::Malformed(m) if m.contains("nonce")
    ));
    assert!(matches!(
        with(&|v| v["kdf"]["salt"] = "00".repeat(8).into()),
        VaultError::Malformed(m) if m.contains("salt")
    ));
    assert!(matches!(
        with(&|v| {
            let ct = v["ciphertext"].as_str().unwrap().to_owned();
            v["ciphertext"] = ct[..ct.len() - 2].into();
        }),
        VaultError::Malformed(m) if m.contains("ciphertext")
    ));
    assert!(matches!(
        with(&|v| v.as_object_mut().unwrap().remove("nonce").map(drop).unwrap()),
        VaultError::Malformed(m) if m.contains("nonce")
    ));
    assert!(matches!(
        open(&vec![b' '; 100 * 1024]),
        VaultError::Malformed(m) if m.contains("larger")
    ));

    let missing = d.path().join("missing.json");
    assert!(matches!(
        SoftwareVault::open(&missing, Unlock::Passphrase(PASS)),
        Err(VaultError::Io { path, .. }) if path == missing
    ));
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Only the files we asked for: no temporary file is left behind.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[test]
fn files_are_private_and_never_overwritten() {
    let d = dir();
    let key = key_file(d.path(), "vault.key");
    let path = d.path().join("vault.json");
    let vault = SoftwareVault::create(&path, Unlock::KeyFile(&key), fast(), &mut OsRng).unwrap();
    #[cfg(unix)]
    {
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&key), 0o600);
    }

    let before_vault = std::fs::read(&path).unwrap();
    let before_key = std::fs::read(&key).unwrap();
    let err =
        SoftwareVault::create(&path, Unlock::Passphrase(PASS), fast(), &mut OsRng).unwrap_err();
    assert!(
        matches!(&err, VaultError::AlreadyExists(p) if *p == path),
        "{err}"
    );
    assert!(matches!(
        create_key_file(&key, &mut OsRng),
        Err(VaultError::AlreadyExists(p)) if p == key
    ));
    // Neither may a key file clobber a vault, nor a vault a file that is not one.
    assert!(matches!(
        create_key_file(&path, &mut OsRng),
        Err(VaultError::AlreadyExists(_))
    ));
    assert!(matches!(
        SoftwareVault::create(&key, Unlock::Passphrase(PASS), fast(), &mut OsRng),
        Err(VaultError::AlreadyExists(_))
    ));
    assert_eq!(std::fs::read(&path).unwrap(), before_vault);
    assert_eq!(std::fs::read(&key).unwrap(), before_key);
    let reopened = SoftwareVault::open(&path, Unlock::KeyFile(&key)).unwrap();
    assert_eq!(reopened.signing_public(), vault.signing_public());
    assert_eq!(names(d.path()), ["vault.json", "vault.key"]);

    // A missing directory is an I/O error and leaves nothing behind.
    let sub = d.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    assert!(matches!(
        SoftwareVault::create(
            &sub.join("no/such/dir.json"),
            Unlock::Passphrase(PASS),
            fast(),
            &mut OsRng
        ),
        Err(VaultError::Io { .. })
    ));
    assert!(names(&sub).is_empty());
}

#[test]
fn change_unlock_rotates_the_passphrase() {
    let d = dir();
    let path = d.path().join("vault.json");
    let vault = SoftwareVault::create(&path, Unlock::Passphrase(PASS), fast(), &mut OsRng).unwrap();
    let root = vault.derive(&spec(), NodeId::ROOT).unwrap();
    let before = read_json(&path);

    // The wrong old passphrase changes nothing.
    assert!(matches!(
        SoftwareVault::change_unlock(
            &path,
            Unlock::Passphrase("guess"),
            Unlock::Passphrase("attacker's"),
            fast(),
            &mut OsRng
        ),
        Err(VaultError::WrongUnlock)
    ));
    assert_eq!(read_json(&path), before);
    // Nor does an empty new one.
    assert!(matches!(
        SoftwareVault::change_unlock(
            &path,
            Unlock::Passphrase(PASS),
            Unlock::Passphrase(""),
            fast(),
            &mut OsRng
        ),
        Err(VaultError::EmptyPassphrase)
    ));
    assert_eq!(read_json(&path), before);

    let new = KdfParams::new(128, 2, 1).unwrap();
    SoftwareVault::change_unlock(
        &path,
        Unlock::Passphrase(PASS),
        Unlock::Passphrase("new passphrase"),
        new,
        &mut OsRng,
    )
    .unwrap();
    assert!(matches!(
        SoftwareVault::open(&path, Unlock::Passphrase(PASS)),
        Err(VaultError::WrongUnlock)
    ));
    let after = SoftwareVault::open(&path, Unlock::Passphrase("new passphrase")).unwrap();
    assert_same_vault(&vault, &after);
    assert_eq!(after.derive(&spec(), NodeId::ROOT).unwrap(), root);
    let json = read_json(&path);
    assert_eq!(json["kdf"]["memory_kib"], 128);
    assert_ne!(json["kdf"]["salt"], before["kdf"]["salt"]);
    assert_ne!(json["nonce"], before["nonce"]);
    #[cfg(unix)]
    assert_eq!(mode(&path), 0o600);

    // From a passphrase to a key file and back.
    let key = key_file(d.path(), "vault.key");
    SoftwareVault::change_unlock(
        &path,
        Unlock::Passphrase("new passphrase"),
        Unlock::KeyFile(&key),
        fast(),
        &mut OsRng,
    )
    .unwrap();
    assert!(matches!(
        SoftwareVault::open(&path, Unlock::Passphrase("new passphrase")),
        Err(VaultError::UnlockKind { .. })
    ));
    let by_key = SoftwareVault::open(&path, Unlock::KeyFile(&key)).unwrap();
    assert_same_vault(&vault, &by_key);
    SoftwareVault::change_unlock(
        &path,
        Unlock::KeyFile(&key),
        Unlock::Passphrase(PASS),
        fast(),
        &mut OsRng,
    )
    .unwrap();
    assert_same_vault(
        &vault,
        &SoftwareVault::open(&path, Unlock::Passphrase(PASS)).unwrap(),
    );
    assert_eq!(names(d.path()), ["vault.json", "vault.key"]);
}

#[test]
fn empty_passphrase_is_refused() {
    let d = dir();
    let path = d.path().join("vault.json");
    assert!(matches!(
        SoftwareVault::create(&path, Unlock::Passphrase(""), fast(), &mut OsRng),
        Err(VaultError::EmptyPassphrase)
    ));
    assert!(!path.exists());
}

#[test]
fn debug_never_prints_secrets() {
    assert_eq!(format!("{:?}", Unlock::Passphrase(PASS)), "Passphrase(..)");
    let d = dir();
    let path = d.path().join("vault.json");
    let vault = SoftwareVault::create(&path, Unlock::Passphrase(PASS), fast(), &mut OsRng).unwrap();
    let printed = format!("{vault:?}");
    assert!(printed.contains(&hex::encode(vault.signing_public())));
    let root = vault.derive(&spec(), NodeId::ROOT).unwrap();
    assert!(!format!("{root:?}").contains(&hex::encode(root.secret().expose())));
}

#[test]
fn vault_is_an_object_safe_shared_handle() {
    let d = dir();
    let path = d.path().join("vault.json");
    SoftwareVault::create(&path, Unlock::Passphrase(PASS), fast(), &mut OsRng).unwrap();
    let vault: Arc<dyn Vault> =
        Arc::new(SoftwareVault::open(&path, Unlock::Passphrase(PASS)).unwrap());
    let public = vault.signing_public();
    let handles: Vec<_> = (0..4u8)
        .map(|i| {
            let v = Arc::clone(&vault);
            std::thread::spawn(move || (i, v.sign(&[i]).unwrap()))
        })
        .collect();
    for h in handles {
        let (i, sig) = h.join().unwrap();
        RustCrypto.ed25519_verify(&public, &[i], &sig).unwrap();
    }
}
