//! The published owner-control vector of docs/wire.md §11 (Vector 8, docs/vectors/control-v1.json): every key
//! derived from the user–device key, a command from the owner and its answer, a command from a member, a list and
//! its acknowledgement, a sealed claim, the device's claim proof and its persisted control state, from fixed
//! inputs. Every value is computed twice: by hand from §11 (HKDF-Expand and AES-256-GCM straight from the RustCrypto
//! crates, since the module keeps its keys behind types), and through the public API of `custos_proto::control`;
//! the two must agree, and the file must equal what they produce. The published bytes are then opened by the
//! device's and the owner's side.
//!
//! To regenerate after a deliberate format change: `CUSTOS_WRITE_VECTORS=1 cargo test -p custos-proto --test control_vectors`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use custos_proto::control::{
    self, CommandHeader, DeviceControl, Member, Op, OwnerKeys, RIGHT_CONTROL, SenderKeys, Status,
};
use custos_proto::uplink::{self, LinkKeys};
use custos_proto::{Crypto, DeviceId, RustCrypto, Secret, Suite};
use hkdf::Hkdf;
use serde_json::{Value, json};
use sha2::Sha256;

const PATH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../docs/vectors/control-v1.json"
);

const C: RustCrypto = RustCrypto;
const DEV: DeviceId = DeviceId([0, 1, 2, 3, 4, 5, 6, 7]);
const UDK: [u8; 32] = [0x11; 32];
const MEMBER_KEY: [u8; 32] = [0x22; 32];
const MEMBER: u32 = 1;
const TOKEN: [u8; 16] = [0x33; 16];
const SDK: [u8; 32] = [0x44; 32];
/// The device's clock when it opens the commands: 2026-09-21T14:13:20Z.
const NOW: u64 = 1_790_000_000;
/// The commands expire a minute later.
const EXPIRES: u32 = 1_790_000_060;
const OWNER_COUNTER: u64 = 1_790_000_000_000;
const MEMBER_COUNTER: u64 = 7;
const ANSWER_NONCE: [u8; 12] = [0x0a; 12];
const LIST_NONCE: [u8; 12] = [0x0b; 12];
const ACK_NONCE: [u8; 12] = [0x0c; 12];
const CLAIM_NONCE: [u8; 12] = [0x0d; 12];
const LIST_VERSION: u64 = 1;

fn h(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

fn unhex(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().expect("hex string")).expect("valid hex")
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

/// AES-256-GCM by hand: ciphertext ‖ tag.
fn gcm(key: &[u8; 32], nonce: &[u8; 12], aad: &[u8], plain: &[u8]) -> Vec<u8> {
    let mut buf = plain.to_vec();
    let tag = Aes256Gcm::new(key.into())
        .encrypt_in_place_detached(Nonce::from_slice(nonce), aad, &mut buf)
        .unwrap();
    buf.extend_from_slice(&tag);
    buf
}

struct Keys {
    owner: [u8; 32],
    list: [u8; 32],
    ack: [u8; 32],
    claim: [u8; 32],
    owner_cmd: [u8; 32],
    owner_ans: [u8; 32],
    member_cmd: [u8; 32],
    member_ans: [u8; 32],
    up: [u8; 32],
}

fn keys() -> Keys {
    let owner = expand(&UDK, b"custos/v1/command/owner");
    Keys {
        owner,
        list: expand(&UDK, b"custos/v1/control-list"),
        ack: expand(&UDK, b"custos/v1/control-list-ack"),
        claim: expand(&UDK, b"custos/v1/claim"),
        owner_cmd: expand(&owner, b"custos/v1/command"),
        owner_ans: expand(&owner, b"custos/v1/answer"),
        member_cmd: expand(&MEMBER_KEY, b"custos/v1/command"),
        member_ans: expand(&MEMBER_KEY, b"custos/v1/answer"),
        up: expand(&SDK, b"custos/v1/uplink"),
    }
}

fn owner_keys() -> OwnerKeys {
    OwnerKeys::from_udk(&C, &Secret::from_bytes(UDK)).unwrap()
}

fn member_keys() -> SenderKeys {
    SenderKeys::derive(&C, &Secret::from_bytes(MEMBER_KEY)).unwrap()
}

fn member() -> Member {
    Member {
        sender: MEMBER,
        rights: RIGHT_CONTROL,
        key: Secret::from_bytes(MEMBER_KEY),
    }
}

fn header(sender: u32, counter: u64) -> CommandHeader {
    CommandHeader {
        suite: Suite::AES256GCM,
        sender,
        counter,
        expires: EXPIRES,
    }
}

fn concat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// A command by hand (§11), checked against `seal_command`.
fn command(
    key: &[u8; 32],
    keys: &SenderKeys,
    sender: u32,
    counter: u64,
    op: Op,
    value: &[u8],
) -> Value {
    let head = concat(&[
        &[control::COMMAND, 1],
        &sender.to_be_bytes(),
        &counter.to_be_bytes(),
        &EXPIRES.to_be_bytes(),
    ]);
    let nonce: [u8; 12] = concat(&[&sender.to_be_bytes(), &counter.to_be_bytes()])
        .try_into()
        .unwrap();
    let aad = concat(&[b"custos/v1/command", &DEV.0, &head]);
    let code = match op {
        Op::Set => 1u8,
        Op::Get => 2u8,
    };
    let plain = concat(&[&[code], value]);
    let bytes = concat(&[&head, &gcm(key, &nonce, &aad, &plain)]);
    let api = control::seal_command(&C, keys, DEV, header(sender, counter), op, value).unwrap();
    assert_eq!(h(&api), h(&bytes), "seal_command disagrees with §11");
    json!({
        "sender": sender, "counter": counter, "expires": EXPIRES, "op": code, "value": h(value),
        "header": h(&head), "nonce": h(&nonce), "aad": h(&aad), "plaintext": h(&plain),
        "bytes": h(&bytes), "size": bytes.len(),
    })
}

fn generate() -> Value {
    let k = keys();
    let owner = owner_keys();

    let owner_set = command(
        &k.owner_cmd,
        owner.owner(),
        0,
        OWNER_COUNTER,
        Op::Set,
        b"on",
    );
    let member_get = command(
        &k.member_cmd,
        &member_keys(),
        MEMBER,
        MEMBER_COUNTER,
        Op::Get,
        b"",
    );

    // The DONE answer to the owner's command, state "on".
    let ans_head = concat(&[
        &[control::ANSWER, 1],
        &0u32.to_be_bytes(),
        &OWNER_COUNTER.to_be_bytes(),
        &ANSWER_NONCE,
    ]);
    let ans_aad = concat(&[b"custos/v1/answer", &DEV.0, &ans_head]);
    let ans_plain = concat(&[&[0u8], b"on"]);
    let answer = concat(&[
        &ans_head,
        &gcm(&k.owner_ans, &ANSWER_NONCE, &ans_aad, &ans_plain),
    ]);
    let api = control::seal_answer(
        &C,
        owner.owner(),
        DEV,
        &header(0, OWNER_COUNTER),
        ANSWER_NONCE,
        Status::Done,
        b"on",
    )
    .unwrap();
    assert_eq!(h(&api), h(&answer), "seal_answer disagrees with §11");

    // List version 1 with the member.
    let list_head = concat(&[
        &[control::LIST, 1],
        &LIST_VERSION.to_be_bytes(),
        &LIST_NONCE,
    ]);
    let list_aad = concat(&[b"custos/v1/control-list", &DEV.0, &list_head]);
    let list_plain = concat(&[&[1u8], &MEMBER.to_be_bytes(), &[RIGHT_CONTROL], &MEMBER_KEY]);
    let list = concat(&[
        &list_head,
        &gcm(&k.list, &LIST_NONCE, &list_aad, &list_plain),
    ]);
    let api = control::seal_list(
        &C,
        Suite::AES256GCM,
        &owner,
        DEV,
        LIST_VERSION,
        LIST_NONCE,
        &[member()],
    )
    .unwrap();
    assert_eq!(h(&api), h(&list), "seal_list disagrees with §11");

    // Its acknowledgement: the tag of an empty plaintext.
    let ack_head = concat(&[
        &[control::LIST_ACK, 1],
        &LIST_VERSION.to_be_bytes(),
        &ACK_NONCE,
    ]);
    let ack_aad = concat(&[b"custos/v1/control-list-ack", &DEV.0, &ack_head]);
    let ack = concat(&[&ack_head, &gcm(&k.ack, &ACK_NONCE, &ack_aad, &[])]);
    let api =
        control::seal_list_ack(&C, Suite::AES256GCM, &owner, DEV, LIST_VERSION, ACK_NONCE).unwrap();
    assert_eq!(h(&api), h(&ack), "seal_list_ack disagrees with §11");

    // The claim.
    let claim_head = concat(&[&[control::CLAIM, 1], &CLAIM_NONCE]);
    let claim_aad = concat(&[b"custos/v1/claim", &DEV.0, &claim_head]);
    let claim = concat(&[
        &claim_head,
        &gcm(&k.claim, &CLAIM_NONCE, &claim_aad, &TOKEN),
    ]);
    let api = control::seal_claim(&C, Suite::AES256GCM, &owner, DEV, CLAIM_NONCE, &TOKEN).unwrap();
    assert_eq!(h(&api), h(&claim), "seal_claim disagrees with §11");

    // The claim proof (§8 style): HMAC-SHA256(K_up, 35 ‖ device ‖ token)[..16].
    let mac_input = concat(&[&[uplink::CLAIM_PROOF], &DEV.0, &TOKEN]);
    let mac = C.hmac_sha256(&k.up, &[&mac_input]);
    let proof = concat(&[&[uplink::CLAIM_PROOF], &TOKEN, &mac[..16]]);
    let link = LinkKeys::derive(&C, &Secret::from_bytes(SDK)).unwrap();
    let api = uplink::seal_claim_proof(&C, &link, DEV, &TOKEN);
    assert_eq!(h(&api), h(&proof), "seal_claim_proof disagrees with §11");

    // The device's state after the list and both commands: encode() by hand.
    let state = concat(&[
        &[1u8],
        &LIST_VERSION.to_be_bytes(),
        &OWNER_COUNTER.to_be_bytes(),
        &[1u8],
        &MEMBER.to_be_bytes(),
        &[RIGHT_CONTROL],
        &MEMBER_KEY,
        &MEMBER_COUNTER.to_be_bytes(),
    ]);
    let mut dev = DeviceControl::new();
    dev.accept_list(&C, &owner, DEV, &list).unwrap();
    for msg in [&owner_set, &member_get] {
        let cmd = dev
            .open_command(&C, &owner, DEV, NOW, &unhex(&msg["bytes"]))
            .unwrap();
        dev.commit(&cmd);
    }
    assert_eq!(h(&dev.encode()), h(&state), "encode disagrees with §11");

    json!({
        "input": {
            "udk": h(&UDK),
            "device": "00-01-02-03-04-05-06-07",
            "suite": "aes256gcm",
            "member": {"sender": MEMBER, "rights": RIGHT_CONTROL, "key": h(&MEMBER_KEY)},
            "now": NOW,
            "sdk": h(&SDK),
            "token": h(&TOKEN),
        },
        "keys": {
            "K_owner": h(&k.owner),
            "K_list": h(&k.list),
            "K_ack": h(&k.ack),
            "K_claim": h(&k.claim),
            "owner": {"K_cmd": h(&k.owner_cmd), "K_ans": h(&k.owner_ans)},
            "member": {"K_cmd": h(&k.member_cmd), "K_ans": h(&k.member_ans)},
            "K_up": h(&k.up),
        },
        "owner_set": owner_set,
        "owner_answer": {
            "sender": 0, "counter": OWNER_COUNTER, "status": 0, "state": h(b"on"),
            "header": h(&ans_head), "nonce": h(&ANSWER_NONCE), "aad": h(&ans_aad), "plaintext": h(&ans_plain),
            "bytes": h(&answer), "size": answer.len(),
        },
        "member_get": member_get,
        "list": {
            "version": LIST_VERSION, "header": h(&list_head), "nonce": h(&LIST_NONCE), "aad": h(&list_aad),
            "plaintext": h(&list_plain), "bytes": h(&list), "size": list.len(),
        },
        "list_ack": {
            "version": LIST_VERSION, "header": h(&ack_head), "nonce": h(&ACK_NONCE), "aad": h(&ack_aad),
            "bytes": h(&ack), "size": ack.len(),
        },
        "claim": {
            "header": h(&claim_head), "nonce": h(&CLAIM_NONCE), "aad": h(&claim_aad), "plaintext": h(&TOKEN),
            "bytes": h(&claim), "size": claim.len(),
        },
        "claim_proof": {
            "mac_input": h(&mac_input), "hmac": h(&mac), "bytes": h(&proof), "size": proof.len(),
        },
        "state": {"bytes": h(&state), "size": state.len()},
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
    assert_eq!(generated, file, "docs/vectors/control-v1.json is stale");
}

/// The published bytes, read back from the file, open through the public API on both sides, and the sizes are
/// those §11 states.
#[test]
fn published_messages_open() {
    let v: Value = serde_json::from_str(&std::fs::read_to_string(PATH).unwrap()).unwrap();
    let owner = owner_keys();
    let mut dev = DeviceControl::new();

    let list = unhex(&v["list"]["bytes"]);
    let (version, members) = control::open_list(&C, &owner, DEV, &list).unwrap();
    assert_eq!((version, members), (LIST_VERSION, vec![member()]));
    assert!(dev.accept_list(&C, &owner, DEV, &list).unwrap().changed);
    // The same list again is acknowledged again and changes nothing.
    assert!(!dev.accept_list(&C, &owner, DEV, &list).unwrap().changed);
    let ack = unhex(&v["list_ack"]["bytes"]);
    assert_eq!(
        control::open_list_ack(&C, &owner, DEV, &ack).unwrap(),
        LIST_VERSION
    );

    let set = unhex(&v["owner_set"]["bytes"]);
    let cmd = dev.open_command(&C, &owner, DEV, NOW, &set).unwrap();
    assert_eq!(
        (cmd.header, cmd.op, cmd.value.as_slice()),
        (header(0, OWNER_COUNTER), Op::Set, b"on".as_slice())
    );
    assert_eq!(CommandHeader::peek(&set).unwrap(), header(0, OWNER_COUNTER));
    dev.commit(&cmd);
    // Replayed: refused with an answer; after its expiry: expired (expiry is checked first).
    assert!(matches!(
        dev.open_command(&C, &owner, DEV, NOW, &set),
        Err(control::Refusal::Answered(_, Status::Replayed))
    ));
    assert!(matches!(
        dev.open_command(&C, &owner, DEV, u64::from(EXPIRES), &set),
        Err(control::Refusal::Answered(_, Status::Expired))
    ));

    let answer = unhex(&v["owner_answer"]["bytes"]);
    assert_eq!(
        control::open_answer(&C, owner.owner(), DEV, 0, OWNER_COUNTER, &answer).unwrap(),
        (Status::Done, b"on".to_vec())
    );

    let get = unhex(&v["member_get"]["bytes"]);
    let cmd = dev.open_command(&C, &owner, DEV, NOW, &get).unwrap();
    assert_eq!(
        (cmd.header, cmd.op, cmd.value.len()),
        (header(MEMBER, MEMBER_COUNTER), Op::Get, 0)
    );
    dev.commit(&cmd);
    assert_eq!(h(&dev.encode()), v["state"]["bytes"].as_str().unwrap());
    assert_eq!(
        DeviceControl::decode(&unhex(&v["state"]["bytes"])).unwrap(),
        dev
    );

    let claim = unhex(&v["claim"]["bytes"]);
    assert_eq!(control::open_claim(&C, &owner, DEV, &claim).unwrap(), TOKEN);
    let link = LinkKeys::derive(&C, &Secret::from_bytes(SDK)).unwrap();
    let proof = unhex(&v["claim_proof"]["bytes"]);
    assert_eq!(
        uplink::open_claim_proof(&C, &link, DEV, &proof).unwrap(),
        TOKEN
    );

    let size = |part: &str| v[part]["size"].as_u64().unwrap() as usize;
    assert_eq!(size("owner_set"), control::COMMAND_OVERHEAD + 2);
    assert_eq!(size("member_get"), control::COMMAND_OVERHEAD);
    assert_eq!(size("owner_answer"), control::ANSWER_OVERHEAD + 2);
    assert_eq!(size("list"), 22 + 1 + 37 + 16);
    assert_eq!(size("list_ack"), control::LIST_ACK_LEN);
    assert_eq!(size("claim"), control::CLAIM_LEN);
    assert_eq!(size("claim_proof"), uplink::CLAIM_PROOF_LEN);
    assert_eq!(size("state"), 18 + 45);
    assert_eq!(
        (
            control::COMMAND_OVERHEAD,
            control::ANSWER_OVERHEAD,
            control::LIST_ACK_LEN,
            control::CLAIM_LEN,
            uplink::CLAIM_PROOF_LEN
        ),
        (35, 43, 38, 46, 33)
    );
}

/// Every long hex string in wire.md §11 is a value of the vector file (or part of one), so the document cannot
/// drift from the file; and every message of the file is quoted whole in §11.
#[test]
fn wire_md_quotes_the_vectors() {
    let file = std::fs::read_to_string(PATH).unwrap();
    // Each derived key and each message appears whole: §11 prints them on one or more lines of hex, with
    // notes only after the last line, so without whitespace each is a substring.
    let flat = common::section_quoting_vectors("## 11. Owner control", &file, 20);
    let v: Value = serde_json::from_str(&file).unwrap();
    let mut wanted = vec![];
    for k in ["K_owner", "K_list", "K_ack", "K_claim", "K_up"] {
        wanted.push(v["keys"][k].as_str().unwrap().to_owned());
    }
    for s in ["owner", "member"] {
        for k in ["K_cmd", "K_ans"] {
            wanted.push(v["keys"][s][k].as_str().unwrap().to_owned());
        }
    }
    for m in [
        "owner_set",
        "owner_answer",
        "member_get",
        "list",
        "list_ack",
        "claim",
        "claim_proof",
        "state",
    ] {
        wanted.push(v[m]["bytes"].as_str().unwrap().to_owned());
    }
    for w in wanted {
        assert!(flat.contains(&w), "wire.md §11 does not quote {w}");
    }
}
