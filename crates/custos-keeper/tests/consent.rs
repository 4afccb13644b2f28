#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The consent log, played by an attacker: every modification of a signed, hash-chained log is caught with an
//! error that names the entry, except tail truncation, which a pinned head catches.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use custos_keeper::consent::{
    ConsentError, ConsentLog, DecidedBy, Entry, Head, NewEntry, Outcome, verify_export,
    verify_export_with_head,
};
use custos_proto::{Crypto, DeviceId, RustCrypto, Secret};
use serde_json::{Value, json};

const KEEPER_SEED: [u8; 32] = [0x07; 32];
const ATTACKER_SEED: [u8; 32] = [0x66; 32];
const DAY: u64 = 86_400;

fn public(seed: [u8; 32]) -> [u8; 32] {
    RustCrypto.ed25519_public(&Secret::from_bytes(seed))
}

fn signer(seed: [u8; 32]) -> impl FnOnce(&[u8]) -> [u8; 64] {
    move |msg| RustCrypto.ed25519_sign(&Secret::from_bytes(seed), msg)
}

fn keeper() -> [u8; 32] {
    public(KEEPER_SEED)
}

/// A varied decision: granted by a rule, denied by default, granted by the user, …
fn sample(i: u64) -> NewEntry {
    let from = 1_764_547_200 + i * DAY;
    let until = from + 7 * DAY;
    let (outcome, decided_by) = match i % 3 {
        0 => (
            Outcome::Granted {
                from,
                until,
                nodes: 1 + i as u32,
            },
            DecidedBy::PolicyRule(1 + i),
        ),
        1 => (Outcome::Denied, DecidedBy::PolicyDefault),
        _ => (
            Outcome::Granted {
                from,
                until: until - DAY,
                nodes: 2,
            },
            DecidedBy::User,
        ),
    };
    NewEntry {
        time: 1_767_225_600 + i * 60,
        request: [i as u8; 32],
        app_name: format!("app-{i}"),
        app_key: [0x30 + i as u8; 32],
        devices: (0..=i).map(|d| DeviceId([d as u8; 8])).collect(),
        from,
        until,
        outcome,
        purpose: "energy.optimization".into(),
        purpose_text: format!("Optimise heating ({i})"),
        retention: 30 * DAY,
        decided_by,
    }
}

fn new_log(dir: &Path, name: &str, seed: [u8; 32], n: u64) -> (PathBuf, ConsentLog) {
    let path = dir.join(name);
    let mut log = ConsentLog::open(&path, public(seed)).unwrap();
    for i in 0..n {
        log.append(sample(i), signer(seed)).unwrap();
    }
    (path, log)
}

fn read_lines(path: &Path) -> Vec<Value> {
    fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn write_lines(path: &Path, lines: &[Value]) {
    let mut text = String::new();
    for l in lines {
        text.push_str(&l.to_string());
        text.push('\n');
    }
    fs::write(path, text).unwrap();
}

/// The file and the export of one 6-entry log, made once: signing in a debug build is slow.
fn base() -> &'static (Vec<u8>, Vec<u8>) {
    static BASE: OnceLock<(Vec<u8>, Vec<u8>)> = OnceLock::new();
    BASE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let (path, log) = new_log(dir.path(), "log", KEEPER_SEED, 6);
        (fs::read(&path).unwrap(), log.export())
    })
}

/// Applies `attack` to the entries of a 6-entry log, both in its file and in its export, and returns what
/// opening the file and verifying the export say.
fn attack(attack: impl Fn(&mut Vec<Value>)) -> (ConsentError, ConsentError) {
    let (file, export) = base();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    fs::write(&path, file).unwrap();
    let mut export: Value = serde_json::from_slice(export).unwrap();

    let mut lines = read_lines(&path);
    attack(&mut lines);
    write_lines(&path, &lines);
    let from_file = ConsentLog::open(&path, keeper()).unwrap_err();

    attack(export["entries"].as_array_mut().unwrap());
    let from_export = verify_export(export.to_string().as_bytes(), &keeper()).unwrap_err();
    (from_file, from_export)
}

/// An entry built by hand: an attacker who knows the format and the chain, but not the keeper's key.
fn forged(seq: u64, prev: [u8; 32], seed: [u8; 32]) -> Value {
    let mut e = Entry {
        seq,
        prev,
        owner: keeper(),
        body: NewEntry {
            decided_by: DecidedBy::User,
            app_name: "data-broker".into(),
            ..sample(0)
        },
        sig: [0; 64],
    };
    e.sig = signer(seed)(&e.signed_bytes());
    serde_json::from_str(&e.to_json()).unwrap()
}

fn hash_of(v: &Value) -> [u8; 32] {
    Entry::from_json(&v.to_string()).unwrap().hash()
}

// ---- the worked example of docs/consent-log.md ----

const EXAMPLE_SIGNED: &str = "637573746f732f76312f636f6e73656e740000000000000000000000006955b9000000000000000000000000000000000000000000000000000000000000000000000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f001168656174696e672d6f7074696d697a65723333333333333333333333333333333333333333333333333333333333333333ea4a6c63e29c520abef5507b132ec5f9954776aebebe7b92421eea691446d22c0001010203040506070800000000692cda80000000006955b9000100000000692cda80000000006955b900000000010013656e657267792e6f7074696d697a6174696f6e00274f7074696d6973652068656174696e672066726f6d20726f6f6d2074656d7065726174757265730000000000278d00020000000000000001";
const EXAMPLE_SIG: &str = "c6947290d253cf35f7e829679bad7629a65333728e40e8cc42d1b52b65e4106902f416217044404b79834174507318a47cde31b1afd44513ecd8497e9cafc20b";
const EXAMPLE_HASH: &str = "e3c389dd104f04fcb8a790c8fd033ba0dead7b338eb12d3d10c5333bde45ad84";
const EXAMPLE_JSON: &str = r#"{"seq":0,"time":1767225600,"prev":"0000000000000000000000000000000000000000000000000000000000000000","request":"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f","app_name":"heating-optimizer","app_key":"3333333333333333333333333333333333333333333333333333333333333333","owner":"ea4a6c63e29c520abef5507b132ec5f9954776aebebe7b92421eea691446d22c","devices":["0102030405060708"],"from":1764547200,"until":1767225600,"granted_from":1764547200,"granted_until":1767225600,"purpose":"energy.optimization","purpose_text":"Optimise heating from room temperatures","retention":2592000,"decision":"granted","decided_by":"policy rule 1","grant_nodes":1,"sig":"c6947290d253cf35f7e829679bad7629a65333728e40e8cc42d1b52b65e4106902f416217044404b79834174507318a47cde31b1afd44513ecd8497e9cafc20b"}"#;

fn example_entry() -> NewEntry {
    NewEntry {
        time: 1_767_225_600, // 2026-01-01T00:00:00Z
        request: core::array::from_fn(|i| i as u8),
        app_name: "heating-optimizer".into(),
        app_key: [0x33; 32],
        devices: vec![DeviceId([1, 2, 3, 4, 5, 6, 7, 8])],
        from: 1_764_547_200,  // 2025-12-01T00:00:00Z
        until: 1_767_225_600, // 2026-01-01T00:00:00Z
        outcome: Outcome::Granted {
            from: 1_764_547_200,
            until: 1_767_225_600,
            nodes: 1,
        },
        purpose: "energy.optimization".into(),
        purpose_text: "Optimise heating from room temperatures".into(),
        retention: 30 * DAY,
        decided_by: DecidedBy::PolicyRule(1),
    }
}

#[test]
fn worked_example_matches_docs() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = ConsentLog::open(dir.path().join("log"), keeper()).unwrap();
    let e = log.append(example_entry(), signer(KEEPER_SEED)).unwrap();
    let signed = hex::encode(e.signed_bytes());
    let sig = hex::encode(e.sig);
    let hash = hex::encode(e.hash());
    let line = e.to_json();
    assert_eq!(signed, EXAMPLE_SIGNED);
    assert_eq!(sig, EXAMPLE_SIG);
    assert_eq!(hash, EXAMPLE_HASH);
    assert_eq!(line, EXAMPLE_JSON);

    // The document shows the same bytes (hex may wrap across lines there).
    let doc = fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/consent-log.md"
    ))
    .unwrap();
    let flat: String = doc.chars().filter(|c| !c.is_whitespace()).collect();
    for (what, hex) in [
        ("keeper public key", hex::encode(keeper()).as_str()),
        ("signed bytes", EXAMPLE_SIGNED),
        ("signature", EXAMPLE_SIG),
        ("hash", EXAMPLE_HASH),
    ] {
        assert!(flat.contains(hex), "docs/consent-log.md lacks the {what}");
    }
    assert!(
        doc.contains(EXAMPLE_JSON),
        "docs/consent-log.md lacks the JSON line"
    );
}

// ---- the honest keeper ----

#[test]
fn append_fills_seq_prev_owner_and_signs() {
    let dir = tempfile::tempdir().unwrap();
    let (_, log) = new_log(dir.path(), "log", KEEPER_SEED, 5);
    let entries = log.entries();
    assert_eq!(entries.len(), 5);
    for (i, e) in entries.iter().enumerate() {
        assert_eq!(e.seq, i as u64);
        assert_eq!(e.owner, keeper());
        assert_eq!(e.body, sample(i as u64));
        let prev = if i == 0 {
            [0; 32]
        } else {
            entries[i - 1].hash()
        };
        assert_eq!(e.prev, prev, "entry {i}");
    }
    assert_eq!(
        log.head(),
        Some(Head {
            seq: 4,
            hash: entries[4].hash()
        })
    );
}

#[test]
fn signature_verifies_with_the_keepers_public_key_only() {
    let dir = tempfile::tempdir().unwrap();
    let (_, log) = new_log(dir.path(), "log", KEEPER_SEED, 5);
    for e in log.entries() {
        // Anyone with the public key and docs/consent-log.md can check an entry.
        RustCrypto
            .ed25519_verify(&keeper(), &e.signed_bytes(), &e.sig)
            .unwrap();
        assert!(
            RustCrypto
                .ed25519_verify(&public(ATTACKER_SEED), &e.signed_bytes(), &e.sig)
                .is_err()
        );
    }
    // Verifying an export needs nothing but the bytes and the public key.
    let entries = verify_export(&log.export(), &keeper()).unwrap();
    assert_eq!(entries, log.entries());
}

#[test]
fn reopening_after_appends_keeps_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let (path, log) = new_log(dir.path(), "log", KEEPER_SEED, 3);
    let head3 = log.head().unwrap();
    drop(log);

    let mut log = ConsentLog::open(&path, keeper()).unwrap();
    assert_eq!(log.entries().len(), 3);
    assert_eq!(log.head(), Some(head3));
    let e3 = log.append(sample(3), signer(KEEPER_SEED)).unwrap();
    assert_eq!((e3.seq, e3.prev), (3, head3.hash));
    let e4 = log.append(sample(4), signer(KEEPER_SEED)).unwrap();
    assert_eq!((e4.seq, e4.prev), (4, e3.hash()));
    let head5 = log.head().unwrap();
    drop(log);

    let log = ConsentLog::open(&path, keeper()).unwrap();
    assert_eq!(log.entries().len(), 5);
    assert_eq!(log.head(), Some(head5));
    assert_eq!(log.entries()[3], e3);
    // An older pinned head is still in the grown log.
    log.check_head(&head3).unwrap();
    verify_export_with_head(&log.export(), &keeper(), &head3).unwrap();
}

#[test]
fn export_to_writes_a_verifiable_document() {
    let dir = tempfile::tempdir().unwrap();
    let (_, log) = new_log(dir.path(), "log", KEEPER_SEED, 5);
    let out = dir.path().join("export.json");
    log.export_to(&out).unwrap();
    let bytes = fs::read(&out).unwrap();
    assert_eq!(bytes, log.export());
    let entries = verify_export_with_head(&bytes, &keeper(), &log.head().unwrap()).unwrap();
    assert_eq!(entries, log.entries());
}

#[test]
fn empty_log_exports_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let (path, log) = new_log(dir.path(), "log", KEEPER_SEED, 0);
    assert!(path.exists());
    assert_eq!(log.head(), None);
    assert_eq!(verify_export(&log.export(), &keeper()).unwrap(), vec![]);
    let pinned = Head {
        seq: 0,
        hash: [1; 32],
    };
    assert!(matches!(
        verify_export_with_head(&log.export(), &keeper(), &pinned),
        Err(ConsentError::Truncated { last: None, .. })
    ));
}

#[test]
fn wrong_signer_is_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let (path, mut log) = new_log(dir.path(), "log", KEEPER_SEED, 2);
    let before = fs::read(&path).unwrap();
    let err = log.append(sample(2), signer(ATTACKER_SEED)).unwrap_err();
    assert!(matches!(err, ConsentError::SignerMismatch), "{err:?}");
    assert_eq!(fs::read(&path).unwrap(), before);
    assert_eq!(log.entries().len(), 2);
    // The log is still usable.
    assert_eq!(log.append(sample(2), signer(KEEPER_SEED)).unwrap().seq, 2);
}

#[test]
fn inconsistent_entries_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (path, mut log) = new_log(dir.path(), "log", KEEPER_SEED, 1);
    let before = fs::read(&path).unwrap();
    let empty_grant = NewEntry {
        outcome: Outcome::Granted {
            from: 10,
            until: 10,
            nodes: 1,
        },
        ..sample(1)
    };
    let rule_zero = NewEntry {
        decided_by: DecidedBy::PolicyRule(0),
        ..sample(1)
    };
    let long_name = NewEntry {
        app_name: "x".repeat(70_000),
        ..sample(1)
    };
    for bad in [empty_grant, rule_zero, long_name] {
        let err = log.append(bad, signer(KEEPER_SEED)).unwrap_err();
        assert!(matches!(err, ConsentError::InvalidEntry(_)), "{err:?}");
    }
    assert_eq!(fs::read(&path).unwrap(), before);
}

// ---- crashes ----

#[test]
fn torn_last_line_is_reported_then_recovered_explicitly() {
    let dir = tempfile::tempdir().unwrap();
    let (path, log) = new_log(dir.path(), "log", KEEPER_SEED, 5);
    let good_len = fs::metadata(&path).unwrap().len();
    let full = log.entries()[4].to_json();
    drop(log);

    // A crash in the middle of writing a sixth line.
    let mut bytes = fs::read(&path).unwrap();
    bytes.extend_from_slice(&full.as_bytes()[..40]);
    fs::write(&path, &bytes).unwrap();

    match ConsentLog::open(&path, keeper()).unwrap_err() {
        ConsentError::TornTail(t) => {
            assert_eq!((t.line, t.offset), (6, good_len));
            assert_eq!(t.bytes, full.as_bytes()[..40]);
        }
        other => panic!("{other:?}"),
    }
    // Opening refused and changed nothing.
    assert_eq!(fs::read(&path).unwrap(), bytes);

    let (mut log, torn) = ConsentLog::recover(&path, keeper()).unwrap();
    assert_eq!(torn.unwrap().offset, good_len);
    assert_eq!(fs::metadata(&path).unwrap().len(), good_len);
    assert_eq!(log.entries().len(), 5);
    log.append(sample(5), signer(KEEPER_SEED)).unwrap();
    drop(log);
    assert_eq!(
        ConsentLog::open(&path, keeper()).unwrap().entries().len(),
        6
    );
}

#[test]
fn a_complete_line_without_newline_is_still_torn() {
    // The newline is the commit mark: without it, the append never returned.
    let dir = tempfile::tempdir().unwrap();
    let (path, log) = new_log(dir.path(), "log", KEEPER_SEED, 5);
    let mut bytes = fs::read(&path).unwrap();
    bytes.pop();
    fs::write(&path, &bytes).unwrap();
    drop(log);
    match ConsentLog::open(&path, keeper()).unwrap_err() {
        ConsentError::TornTail(t) => assert_eq!(t.line, 5),
        other => panic!("{other:?}"),
    }
    // Some file systems leave zeros after a crash; they are torn bytes too.
    let mut zeros = bytes.clone();
    zeros.extend_from_slice(b"\n\0\0\0\0");
    fs::write(&path, &zeros).unwrap();
    assert!(matches!(
        ConsentLog::open(&path, keeper()),
        Err(ConsentError::TornTail(_))
    ));
}

#[test]
fn recover_does_not_hide_damage_before_the_tail() {
    let dir = tempfile::tempdir().unwrap();
    let (path, log) = new_log(dir.path(), "log", KEEPER_SEED, 5);
    drop(log);
    let mut text = fs::read_to_string(&path).unwrap();
    text = text.replacen("app-2", "app-X", 1);
    text.push_str("{\"seq\":5,");
    fs::write(&path, &text).unwrap();
    assert!(matches!(
        ConsentLog::recover(&path, keeper()),
        Err(ConsentError::BadSignature { seq: 2 })
    ));
    assert_eq!(fs::read_to_string(&path).unwrap(), text);
}

#[test]
fn a_garbled_middle_line_is_malformed() {
    let dir = tempfile::tempdir().unwrap();
    let (path, log) = new_log(dir.path(), "log", KEEPER_SEED, 5);
    drop(log);
    let text = fs::read_to_string(&path).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines[2] = "{\"seq\":2,";
    fs::write(&path, lines.join("\n") + "\n").unwrap();
    match ConsentLog::open(&path, keeper()).unwrap_err() {
        ConsentError::Malformed { position, .. } => assert_eq!(position, 3),
        other => panic!("{other:?}"),
    }
}

// ---- the attacker ----

#[test]
fn altering_any_field_breaks_that_entrys_signature() {
    // Entries 0 and 3 are granted, so every field has a value to alter.
    type Alteration = (&'static str, Box<dyn Fn(&mut Value)>);
    let alterations: Vec<Alteration> = vec![
        (
            "time",
            Box::new(|e| e["time"] = json!(e["time"].as_u64().unwrap() + 1)),
        ),
        (
            "prev",
            Box::new(|e| e["prev"] = json!(hex::encode([9u8; 32]))),
        ),
        (
            "request",
            Box::new(|e| e["request"] = json!(hex::encode([9u8; 32]))),
        ),
        ("app_name", Box::new(|e| e["app_name"] = json!("app-evil"))),
        (
            "app_key",
            Box::new(|e| e["app_key"] = json!(hex::encode([9u8; 32]))),
        ),
        (
            "devices",
            Box::new(|e| {
                e["devices"]
                    .as_array_mut()
                    .unwrap()
                    .pop()
                    .map(drop)
                    .unwrap()
            }),
        ),
        (
            "devices+",
            Box::new(|e| {
                e["devices"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!("0909090909090909"))
            }),
        ),
        (
            "from",
            Box::new(|e| e["from"] = json!(e["from"].as_u64().unwrap() - DAY)),
        ),
        (
            "until",
            Box::new(|e| e["until"] = json!(e["until"].as_u64().unwrap() + DAY)),
        ),
        (
            "granted_from",
            Box::new(|e| e["granted_from"] = json!(e["granted_from"].as_u64().unwrap() - DAY)),
        ),
        (
            "granted_until",
            Box::new(|e| {
                e["granted_until"] = json!(e["granted_until"].as_u64().unwrap() + 30 * DAY)
            }),
        ),
        (
            "purpose",
            Box::new(|e| e["purpose"] = json!("marketing.email")),
        ),
        (
            "purpose_text",
            Box::new(|e| e["purpose_text"] = json!("Something else")),
        ),
        ("retention", Box::new(|e| e["retention"] = json!(365 * DAY))),
        (
            "decision",
            Box::new(|e| {
                e["decision"] = json!("denied");
                e["granted_from"] = Value::Null;
                e["granted_until"] = Value::Null;
                e["grant_nodes"] = json!(0);
            }),
        ),
        (
            "decided_by",
            Box::new(|e| e["decided_by"] = json!("policy default")),
        ),
        ("grant_nodes", Box::new(|e| e["grant_nodes"] = json!(99))),
        (
            "sig",
            Box::new(|e| {
                let mut sig = hex::decode(e["sig"].as_str().unwrap()).unwrap();
                sig[10] ^= 1;
                e["sig"] = json!(hex::encode(sig));
            }),
        ),
    ];
    for (field, alter) in &alterations {
        for seq in [0usize, 3] {
            let (file, export) = attack(|entries| alter(&mut entries[seq]));
            for err in [file, export] {
                match err {
                    ConsentError::BadSignature { seq: s } => assert_eq!(s, seq as u64, "{field}"),
                    other => panic!("{field} of entry {seq}: {other:?}"),
                }
            }
        }
    }
}

#[test]
fn altering_seq_is_a_missing_or_misplaced_entry() {
    let (file, export) = attack(|e| e[2]["seq"] = json!(9));
    for err in [file, export] {
        assert!(
            matches!(err, ConsentError::Missing { seq: 2, found: 9 }),
            "{err:?}"
        );
    }
    let (file, export) = attack(|e| e[2]["seq"] = json!(1));
    for err in [file, export] {
        assert!(
            matches!(
                err,
                ConsentError::OutOfOrder {
                    expected: 2,
                    found: 1
                }
            ),
            "{err:?}"
        );
    }
}

#[test]
fn altering_owner_names_the_entry() {
    let (file, export) = attack(|e| e[4]["owner"] = json!(hex::encode(public(ATTACKER_SEED))));
    for err in [file, export] {
        match err {
            ConsentError::WrongOwner { seq, owner } => {
                assert_eq!((seq, owner), (4, public(ATTACKER_SEED)));
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn removing_a_middle_entry_is_detected() {
    let (file, export) = attack(|e| {
        e.remove(2);
    });
    for err in [file, export] {
        assert!(
            matches!(err, ConsentError::Missing { seq: 2, found: 3 }),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "entry 2 is missing: the next entry present is 3"
        );
    }
}

#[test]
fn removing_the_first_entry_is_detected() {
    let (file, export) = attack(|e| {
        e.remove(0);
    });
    for err in [file, export] {
        assert!(
            matches!(err, ConsentError::Missing { seq: 0, found: 1 }),
            "{err:?}"
        );
    }
}

#[test]
fn removing_the_first_entry_and_renumbering_is_detected() {
    // The attacker renumbers and re-links what remains, but cannot re-sign it.
    let (file, export) = attack(|e| {
        e.remove(0);
        for (i, x) in e.iter_mut().enumerate() {
            x["seq"] = json!(i);
        }
        e[0]["prev"] = json!(hex::encode([0u8; 32]));
    });
    for err in [file, export] {
        assert!(
            matches!(err, ConsentError::BadSignature { seq: 0 }),
            "{err:?}"
        );
    }
}

#[test]
fn reordering_entries_is_detected() {
    let (file, export) = attack(|e| e.swap(2, 3));
    for err in [file, export] {
        assert!(
            matches!(
                err,
                ConsentError::OutOfOrder {
                    expected: 2,
                    found: 3
                }
            ),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "entry 3 is where entry 2 belongs: entries were reordered or duplicated"
        );
    }
}

#[test]
fn inserting_a_forged_entry_is_detected() {
    // Perfectly formed and chained, with the keeper named as owner, but signed with another key.
    let (file, export) = attack(|e| {
        let prev = hash_of(&e[1]);
        e.insert(2, forged(2, prev, ATTACKER_SEED));
        for (i, x) in e.iter_mut().enumerate().skip(3) {
            x["seq"] = json!(i);
        }
    });
    for err in [file, export] {
        assert!(
            matches!(err, ConsentError::BadSignature { seq: 2 }),
            "{err:?}"
        );
    }
    // Appended at the end instead.
    let (file, export) = attack(|e| {
        let prev = hash_of(&e[5]);
        e.push(forged(6, prev, ATTACKER_SEED));
    });
    for err in [file, export] {
        assert!(
            matches!(err, ConsentError::BadSignature { seq: 6 }),
            "{err:?}"
        );
    }
}

#[test]
fn replaying_a_genuine_entry_is_detected() {
    let (file, export) = attack(|e| {
        let copy = e[1].clone();
        e.insert(2, copy);
    });
    for err in [file, export] {
        assert!(
            matches!(
                err,
                ConsentError::OutOfOrder {
                    expected: 2,
                    found: 1
                }
            ),
            "{err:?}"
        );
    }
}

#[test]
fn splicing_two_histories_of_the_same_keeper_is_detected() {
    // Even entries the keeper really signed cannot be moved into another history: prev links them.
    let dir = tempfile::tempdir().unwrap();
    let (a_path, a) = new_log(dir.path(), "a", KEEPER_SEED, 5);
    let b_path = dir.path().join("b");
    let mut b = ConsentLog::open(&b_path, keeper()).unwrap();
    for i in 10..15 {
        b.append(sample(i), signer(KEEPER_SEED)).unwrap();
    }
    let a_head = a.head().unwrap();
    drop((a, b));
    let mut lines = read_lines(&a_path);
    lines.truncate(2);
    lines.extend(read_lines(&b_path).into_iter().skip(2));
    write_lines(&a_path, &lines);
    let err = ConsentLog::open(&a_path, keeper()).unwrap_err();
    assert!(
        matches!(err, ConsentError::BrokenChain { seq: 2 }),
        "{err:?}"
    );

    // A whole other history by the same keeper does not match a pinned head.
    let b = ConsentLog::open(&b_path, keeper()).unwrap();
    let err = b.check_head(&a_head).unwrap_err();
    assert!(
        matches!(err, ConsentError::PinnedMismatch { seq: 4 }),
        "{err:?}"
    );
}

#[test]
fn a_different_keeper_key_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let (path, log) = new_log(dir.path(), "log", KEEPER_SEED, 5);
    let export = log.export();
    drop(log);
    let other = public(ATTACKER_SEED);

    // Checked against the wrong key.
    match ConsentLog::open(&path, other).unwrap_err() {
        ConsentError::WrongOwner { seq, owner } => assert_eq!((seq, owner), (0, keeper())),
        e => panic!("{e:?}"),
    }
    assert!(matches!(
        verify_export(&export, &other),
        Err(ConsentError::WrongKeeper { keeper: k }) if k == keeper()
    ));

    // A whole log re-signed by someone else, presented as the keeper's.
    let (forged_path, forged_log) = new_log(dir.path(), "forged", ATTACKER_SEED, 5);
    match ConsentLog::open(&forged_path, keeper()).unwrap_err() {
        ConsentError::WrongOwner { seq, owner } => assert_eq!((seq, owner), (0, other)),
        e => panic!("{e:?}"),
    }
    assert!(matches!(
        verify_export(&forged_log.export(), &keeper()),
        Err(ConsentError::WrongKeeper { .. })
    ));
    // ... with the keeper's key written into the document and every entry.
    let mut doc: Value = serde_json::from_slice(&forged_log.export()).unwrap();
    doc["keeper"] = json!(hex::encode(keeper()));
    for e in doc["entries"].as_array_mut().unwrap() {
        e["owner"] = json!(hex::encode(keeper()));
    }
    assert!(matches!(
        verify_export(doc.to_string().as_bytes(), &keeper()),
        Err(ConsentError::BadSignature { seq: 0 })
    ));
}

// ---- truncation: the limitation and the pinned head ----

#[test]
fn tail_truncation_needs_a_pinned_head() {
    let dir = tempfile::tempdir().unwrap();
    let (path, log) = new_log(dir.path(), "log", KEEPER_SEED, 5);
    let pinned = log.head().unwrap();
    let mut doc: Value = serde_json::from_slice(&log.export()).unwrap();
    drop(log);

    // Cutting entries 3 and 4 and restating the head: the log alone cannot tell.
    let entries = doc["entries"].as_array_mut().unwrap();
    entries.truncate(3);
    let new_head = hash_of(&entries[2]);
    doc["head"] = json!({"seq": 2, "hash": hex::encode(new_head)});
    let bytes = doc.to_string();
    assert_eq!(verify_export(bytes.as_bytes(), &keeper()).unwrap().len(), 3);
    // The pinned head can.
    match verify_export_with_head(bytes.as_bytes(), &keeper(), &pinned).unwrap_err() {
        ConsentError::Truncated { pinned: p, last } => assert_eq!((p, last), (pinned, Some(2))),
        e => panic!("{e:?}"),
    }

    // Without restating the head, the export's own head gives it away.
    doc["head"] = json!({"seq": 4, "hash": hex::encode(pinned.hash)});
    assert!(matches!(
        verify_export(doc.to_string().as_bytes(), &keeper()),
        Err(ConsentError::HeadMismatch { .. })
    ));

    // The same on the file.
    let mut lines = read_lines(&path);
    lines.truncate(3);
    write_lines(&path, &lines);
    let log = ConsentLog::open(&path, keeper()).unwrap();
    let err = log.check_head(&pinned).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the log is truncated: it ends at entry 2, before the pinned entry 4"
    );
}

#[test]
fn malformed_exports_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_, log) = new_log(dir.path(), "log", KEEPER_SEED, 2);
    let doc: Value = serde_json::from_slice(&log.export()).unwrap();

    let mut v = doc.clone();
    v["format"] = json!("custos-consent-log/v2");
    assert!(matches!(
        verify_export(v.to_string().as_bytes(), &keeper()),
        Err(ConsentError::BadExport { .. })
    ));
    let mut v = doc.clone();
    v["extra"] = json!(1);
    assert!(matches!(
        verify_export(v.to_string().as_bytes(), &keeper()),
        Err(ConsentError::BadExport { .. })
    ));
    let mut v = doc.clone();
    v["entries"][1]["note"] = json!("hi");
    assert!(matches!(
        verify_export(v.to_string().as_bytes(), &keeper()),
        Err(ConsentError::Malformed { position: 2, .. })
    ));
    let mut v = doc.clone();
    v["entries"][0]["decided_by"] = json!("policy rule 01");
    assert!(matches!(
        verify_export(v.to_string().as_bytes(), &keeper()),
        Err(ConsentError::Malformed { position: 1, .. })
    ));
    // A duplicated key would let two JSON readers disagree about what was verified.
    let dup = String::from_utf8(log.export()).unwrap().replacen(
        "\"app_name\":\"app-1\"",
        "\"app_name\":\"app-1\",\"app_name\":\"app-1\"",
        1,
    );
    assert!(matches!(
        verify_export(dup.as_bytes(), &keeper()),
        Err(ConsentError::Malformed { position: 2, .. })
    ));
    assert!(matches!(
        verify_export(b"not json", &keeper()),
        Err(ConsentError::BadExport { .. })
    ));
    assert!(matches!(
        verify_export(&[0xff; 10], &keeper()),
        Err(ConsentError::BadExport { .. })
    ));
}

#[cfg(unix)]
#[test]
fn the_log_and_its_export_are_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let dir = tempfile::tempdir().unwrap();
    let (path, log) = new_log(dir.path(), "consent.log", KEEPER_SEED, 1);
    assert_eq!(mode(&path), 0o600, "a new log");
    let out = dir.path().join("export.json");
    log.export_to(&out).unwrap();
    assert_eq!(mode(&out), 0o600, "an export");
    drop(log);
    // A log left readable by others (by an earlier version) is made owner-only when opened.
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    let _log = ConsentLog::open(&path, keeper()).unwrap();
    assert_eq!(mode(&path), 0o600, "a reopened log");
}
