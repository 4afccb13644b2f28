//! The published test vectors of docs/wire.md (docs/vectors/wire-v1.json): every derived value and record is
//! recomputed from the inputs in the file and must match byte for byte; every `reject` record must fail to open.
//!
//! To regenerate after a deliberate format change: `CUSTOS_WRITE_VECTORS=1 cargo test -p custos-proto --test wire_vectors`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use custos_proto::record::{HEADER_LEN, RecordHeader};
use custos_proto::tree::{KEY_LABEL, NODE_LABEL};
use custos_proto::{
    Crypto, DeviceId, Epoch, MasterSecret, NodeId, Opener, RustCrypto, Schedule, Secret, Span,
    Suite, TreeSpec, UnixTime,
};
use serde_json::{Value, json};

const PATH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../docs/vectors/wire-v1.json"
);

fn unhex(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().expect("hex string")).expect("valid hex")
}

fn time(v: &Value) -> UnixTime {
    UnixTime::new(v.as_u64().expect("seconds")).unwrap()
}

/// The tree of a record case's inputs.
fn spec_of(input: &Value) -> TreeSpec {
    TreeSpec::new(
        input["device"].as_str().unwrap().parse().unwrap(),
        Epoch(input["epoch"].as_u64().unwrap() as u16),
        Schedule::parse(input["schedule"].as_str().unwrap()).unwrap(),
        Span::new(time(&input["valid_from"]), time(&input["valid_until"])).unwrap(),
    )
    .unwrap()
}

/// Everything a case derives from its inputs.
fn compute(input: &Value) -> Value {
    let c = RustCrypto;
    let master = MasterSecret::new(Secret::from_bytes(
        unhex(&input["master"]).try_into().unwrap(),
    ));
    let device: DeviceId = input["device"].as_str().unwrap().parse().unwrap();
    let epoch = Epoch(input["epoch"].as_u64().unwrap() as u16);
    let schedule = Schedule::parse(input["schedule"].as_str().unwrap()).unwrap();
    let span = Span::new(time(&input["valid_from"]), time(&input["valid_until"])).unwrap();
    let spec = TreeSpec::new(device, epoch, schedule, span).unwrap();
    let suite = Suite::from_name(input["suite"].as_str().unwrap()).unwrap();
    let t = time(&input["time"]);
    let nonce: [u8; 8] = unhex(&input["nonce"]).try_into().unwrap();
    let plaintext = unhex(&input["plaintext"]);

    let mut sched_bytes = [0u8; Schedule::MAX_ENCODED];
    let n = schedule.encode(&mut sched_bytes).unwrap();

    let root = spec.root(&c, &master).unwrap();
    let mut path = Vec::new();
    for depth in 1..=spec.leaf_depth() {
        let node = spec.node_at(depth, t).unwrap();
        let stage = schedule.stages()[usize::from(depth) - 1];
        let mut info = NODE_LABEL.to_vec();
        info.extend_from_slice(&[depth, stage.code()]);
        info.extend_from_slice(&stage.param().to_be_bytes());
        info.extend_from_slice(&node.index.to_be_bytes());
        let secret = spec.derive(&c, &root, node).unwrap();
        let period = spec.node_span(node).unwrap();
        path.push(json!({
            "depth": depth,
            "stage": stage.to_string(),
            "index": node.index,
            "period": [period.start().to_string(), period.end().to_string()],
            "info": hex::encode(&info),
            "secret": hex::encode(secret.secret().expose()),
        }));
    }
    let leaf = spec.leaf_at(t).unwrap();
    let mut key_info = KEY_LABEL.to_vec();
    key_info.push(suite.code());
    let key = spec.leaf_key_bytes(&c, &root, leaf, suite).unwrap();
    let leaf_key = spec.leaf_key(&c, &root, leaf, suite).unwrap();
    let mut record = vec![0u8; plaintext.len() + custos_proto::record::OVERHEAD];
    leaf_key.seal(&c, nonce, &plaintext, &mut record).unwrap();
    let mut aead_nonce = vec![0u8; 4];
    aead_nonce.extend_from_slice(&nonce);

    let mut dpk_info = custos_proto::tree::DPK_LABEL.to_vec();
    dpk_info.extend_from_slice(&device.0);
    dpk_info.extend_from_slice(&epoch.0.to_be_bytes());

    json!({
        "schedule_bytes": hex::encode(&sched_bytes[..n]),
        "dpk_info": hex::encode(&dpk_info),
        "dpk": hex::encode(root.secret().expose()),
        "path": path,
        "leaf": leaf,
        "key_info": hex::encode(&key_info),
        "aead_key": hex::encode(key.expose()),
        "aead_nonce": hex::encode(&aead_nonce),
        "header": hex::encode(&record[..HEADER_LEN]),
        "record": hex::encode(&record),
    })
}

fn cover(input: &Value) -> Value {
    let device: DeviceId = input["device"].as_str().unwrap().parse().unwrap();
    let schedule = Schedule::parse(input["schedule"].as_str().unwrap()).unwrap();
    let span = Span::new(time(&input["valid_from"]), time(&input["valid_until"])).unwrap();
    let spec = TreeSpec::new(device, Epoch(1), schedule, span).unwrap();
    let range = Span::new(time(&input["from"]), time(&input["until"])).unwrap();
    let nodes: Vec<Value> = spec
        .cover(range)
        .unwrap()
        .map(|n: NodeId| {
            let p = spec.node_span(n).unwrap();
            json!({"depth": n.depth, "index": n.index, "period": [p.start().to_string(), p.end().to_string()]})
        })
        .collect();
    json!(nodes)
}

fn inputs() -> Value {
    let base = json!({
        "master": "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
        "device": "00-11-22-33-44-55-66-77",
        "epoch": 1,
        "valid_from": 1_767_225_600u64, // 2026-01-01T00:00:00Z
        "valid_until": 1_798_761_600u64, // 2027-01-01T00:00:00Z
        "time": 1_773_584_400u64, // 2026-03-15T14:20:00Z
        "nonce": "0000000000000001",
        "plaintext": hex::encode(br#"{"t":"2026-03-15T14:20:00Z","temp_c":21.5}"#),
    });
    let with = |schedule: &str, suite: &str| {
        let mut v = base.clone();
        v["schedule"] = json!(schedule);
        v["suite"] = json!(suite);
        v
    };
    json!({
        "records": [
            {"name": "default schedule, AES-256-GCM", "input": with("month/week/day", "aes256gcm")},
            {"name": "default schedule, ChaCha20-Poly1305", "input": with("month/week/day", "chacha20poly1305")},
            {"name": "fixed stages day/6h/15m, AES-256-GCM", "input": with("day/6h/15m", "aes256gcm")},
        ],
        "covers": [
            {"name": "two whole months", "input": {"device": "00-11-22-33-44-55-66-77", "schedule": "month/week/day",
                "valid_from": 1_767_225_600u64, "valid_until": 1_798_761_600u64,
                "from": 1_772_323_200u64, "until": 1_777_593_600u64}},
            {"name": "[2026-03-06, 2026-03-23): 17 days", "input": {"device": "00-11-22-33-44-55-66-77",
                "schedule": "month/week/day", "valid_from": 1_767_225_600u64, "valid_until": 1_798_761_600u64,
                "from": 1_772_755_200u64, "until": 1_774_224_000u64}},
            {"name": "week 2 of March", "input": {"device": "00-11-22-33-44-55-66-77", "schedule": "month/week/day",
                "valid_from": 1_767_225_600u64, "valid_until": 1_798_761_600u64,
                "from": 1_772_928_000u64, "until": 1_773_532_800u64}},
            {"name": "the whole epoch span", "input": {"device": "00-11-22-33-44-55-66-77", "schedule": "month/week/day",
                "valid_from": 1_767_225_600u64, "valid_until": 1_798_761_600u64,
                "from": 1_767_225_600u64, "until": 1_798_761_600u64}},
            {"name": "an epoch span from 2026-03-10, clipped month and week at its start", "input": {
                "device": "00-11-22-33-44-55-66-77", "schedule": "month/week/day",
                "valid_from": 1_773_100_800u64, "valid_until": 1_798_761_600u64,
                "from": 1_773_100_800u64, "until": 1_777_593_600u64}},
        ],
    })
}

/// Rejected records: the first case's record with one byte changed in each field.
fn rejects(good: &[u8]) -> Value {
    let flip = |at: usize, x: u8, why: &str| {
        let mut r = good.to_vec();
        r[at] ^= x;
        json!({"why": why, "record": hex::encode(r)})
    };
    let last = good.len() - 1;
    json!([
        flip(0, 0x30, "version byte changed to 2"),
        flip(0, 0x03, "suite changed to 2 (the key is for suite 1)"),
        flip(8, 0x01, "device id changed"),
        flip(10, 0x01, "epoch changed"),
        flip(14, 0x01, "leaf index changed"),
        flip(22, 0x01, "nonce changed"),
        flip(23, 0x80, "first ciphertext byte changed"),
        flip(last, 0x01, "last tag byte changed"),
        flip(0, 0x02, "suite changed to 3, which is not defined"),
        {"why": "truncated inside the tag", "record": hex::encode(&good[..good.len() - 1])},
        {"why": "38 bytes: shorter than header and tag", "record": hex::encode(&good[..38])},
    ])
}

fn generate() -> Value {
    let mut v = inputs();
    for case in v["records"].as_array_mut().unwrap() {
        case["expect"] = compute(&case["input"]);
    }
    for case in v["covers"].as_array_mut().unwrap() {
        case["expect"] = cover(&case["input"]);
    }
    let good = unhex(&v["records"][0]["expect"]["record"]);
    v["reject"] = json!({"key_of": 0, "records": rejects(&good)});
    v
}

#[test]
fn vectors_match_the_published_file() {
    if std::env::var_os("CUSTOS_WRITE_VECTORS").is_some() {
        std::fs::write(
            PATH,
            serde_json::to_string_pretty(&generate()).unwrap() + "\n",
        )
        .unwrap();
    }
    let file: Value = serde_json::from_str(&std::fs::read_to_string(PATH).unwrap()).unwrap();
    let records = file["records"].as_array().unwrap();
    assert!(records.len() >= 3);
    for case in records {
        assert_eq!(
            compute(&case["input"]),
            case["expect"],
            "record vector {}",
            case["name"]
        );
    }
    let covers = file["covers"].as_array().unwrap();
    assert_eq!(
        covers[0]["expect"].as_array().unwrap().len(),
        2,
        "two whole months are two nodes"
    );
    for case in covers {
        assert_eq!(
            cover(&case["input"]),
            case["expect"],
            "cover vector {}",
            case["name"]
        );
    }
}

#[test]
fn published_records_open_and_rejects_fail() {
    let file: Value = serde_json::from_str(&std::fs::read_to_string(PATH).unwrap()).unwrap();
    let c = RustCrypto;
    for case in file["records"].as_array().unwrap() {
        let input = &case["input"];
        let spec = spec_of(input);
        // Open with the AEAD key alone, as an independent implementation would.
        let record = unhex(&case["expect"]["record"]);
        let header = RecordHeader::peek(&record).unwrap();
        let key = Secret::from_bytes(unhex(&case["expect"]["aead_key"]).try_into().unwrap());
        let aead = c.aead_key(header.suite, &key).unwrap();
        let mut body = record[HEADER_LEN..record.len() - 16].to_vec();
        let tag: [u8; 16] = record[record.len() - 16..].try_into().unwrap();
        let nonce: [u8; 12] = unhex(&case["expect"]["aead_nonce"]).try_into().unwrap();
        c.aead_open(&aead, &nonce, &record[..HEADER_LEN], &mut body, &tag)
            .unwrap();
        assert_eq!(body, unhex(&input["plaintext"]));
        assert_eq!(spec.leaf_at(time(&input["time"])).unwrap(), header.leaf);
    }

    let case = &file["records"][file["reject"]["key_of"].as_u64().unwrap() as usize];
    let input = &case["input"];
    let master = MasterSecret::new(Secret::from_bytes(
        unhex(&input["master"]).try_into().unwrap(),
    ));
    let spec = spec_of(input);
    let root = [spec.root(&c, &master).unwrap()];
    let mut opener = Opener::new(&c, &spec, &root);
    let mut out = vec![0u8; 256];
    let good = unhex(&case["expect"]["record"]);
    assert!(opener.open(&good, &mut out).is_ok());
    let rejects = file["reject"]["records"].as_array().unwrap();
    assert!(rejects.len() >= 8);
    for bad in rejects {
        out.fill(0);
        let err = opener.open(&unhex(&bad["record"]), &mut out);
        assert!(err.is_err(), "accepted: {}", bad["why"]);
        assert!(
            out.iter().all(|&b| b == 0),
            "plaintext left behind: {}",
            bad["why"]
        );
    }
}
