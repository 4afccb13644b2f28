//! The published sharing vectors of docs/wire.md §10 (docs/vectors/sharing-v1.json): requests, grants, a denial
//! and an access token, built from fixed keys, seeds and values. Ed25519 and the seeded HPKE ephemeral key make
//! every byte deterministic, so the whole file is regenerated and compared: any disagreement fails.
//!
//! The HPKE key schedule (enc, shared secret, key, base nonce) is computed here a second time, by hand from
//! RFC 9180 with the crate's primitives, and every sealed secret must equal AES-256-GCM under that key and nonce.
//!
//! To regenerate after a deliberate format change: `CUSTOS_WRITE_VECTORS=1 cargo test -p custos-proto --test sharing_vectors`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use custos_proto::sharing::{
    ACCESS, ACCESS_SKEW, AccessToken, DENIAL, Denial, GRANT, GRANT_INFO, Grant, GrantedTree,
    REQUEST, SharingRequest, VerifiedRequest, kind, statement_id,
};
use custos_proto::{
    Crypto, DeviceId, Epoch, Error, MasterSecret, NodeId, RustCrypto, Schedule, Secret, Span,
    Suite, TreeSpec, UnixTime,
};
use serde_json::{Value, json};

const PATH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../docs/vectors/sharing-v1.json"
);

const C: RustCrypto = RustCrypto;
const DEV: DeviceId = DeviceId([0, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77]);
const APP_SEED: [u8; 32] = [0x01; 32];
const KEEPER_SEED: [u8; 32] = [0x02; 32];
const REPLY_SECRET: [u8; 32] = [0x03; 32];
const HPKE_SEED: [u8; 32] = [0x55; 32];
const NONCE: [u8; 16] = [0x07; 16];
/// Vector 1's master secret (wire.md §3), so the node secrets can be checked against it.
const MASTER: [u8; 32] = [
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25,
    26, 27, 28, 29, 30, 31,
];

fn day(y: i64, m: u32, d: u32) -> UnixTime {
    UnixTime::from_date(y, m, d).unwrap()
}

fn span(a: UnixTime, b: UnixTime) -> Span {
    Span::new(a, b).unwrap()
}

/// When requests are verified, grants and denials issued, and the access token made: 2026-07-01T00:00:00Z.
fn now() -> UnixTime {
    day(2026, 7, 1)
}

fn signer(seed: [u8; 32]) -> impl FnOnce(&[u8]) -> [u8; 64] {
    move |tbs| C.ed25519_sign(&Secret::from_bytes(seed), tbs)
}

fn keeper() -> [u8; 32] {
    C.ed25519_public(&Secret::from_bytes(KEEPER_SEED))
}

fn spec() -> TreeSpec {
    TreeSpec::new(
        DEV,
        Epoch(1),
        Schedule::default(),
        span(day(2026, 1, 1), day(2027, 1, 1)),
    )
    .unwrap()
}

/// The three ranges of the sizes table; the second is the annotated example.
fn ranges() -> [(&'static str, Span); 3] {
    [
        ("two whole months", span(day(2026, 3, 1), day(2026, 5, 1))),
        ("one week", span(day(2026, 3, 8), day(2026, 3, 15))),
        (
            "45 days from Feb 20",
            span(day(2026, 2, 20), day(2026, 4, 6)),
        ),
    ]
}

fn request(range: Span) -> SharingRequest {
    SharingRequest {
        app_key: C.ed25519_public(&Secret::from_bytes(APP_SEED)),
        app_name: "heating-optimizer".into(),
        owner: keeper(),
        devices: vec![DEV],
        range,
        purpose: "energy.optimization".into(),
        purpose_text: "Tune the heating curve to the room's temperature history".into(),
        retention: 30 * 86_400,
        reply_key: C.x25519_public(&Secret::from_bytes(REPLY_SECRET)),
        nonce: NONCE,
        expires: day(2026, 8, 1),
    }
}

fn h(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

fn unhex(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().expect("hex string")).expect("valid hex")
}

/// The parts of an untagged COSE_Sign1 `[protected, {}, payload, signature]` as written by this crate: every
/// length is given in the head, so the parts are found by reading the heads.
fn cose_parts(signed: &[u8]) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    fn bstr(b: &[u8]) -> (&[u8], &[u8]) {
        let (len, at) = match b[0] & 0x1f {
            n @ 0..=23 => (usize::from(n), 1),
            24 => (usize::from(b[1]), 2),
            25 => (usize::from(u16::from_be_bytes([b[1], b[2]])), 3),
            _ => panic!("unexpected length"),
        };
        assert_eq!(b[0] >> 5, 2, "a byte string");
        (&b[at..at + len], &b[at + len..])
    }
    assert_eq!(signed[0], 0x84, "an array of four");
    let (protected, rest) = bstr(&signed[1..]);
    assert_eq!(rest[0], 0xa0, "an empty unprotected header");
    let (payload, rest) = bstr(&rest[1..]);
    let (signature, rest) = bstr(rest);
    assert!(rest.is_empty());
    (protected.to_vec(), payload.to_vec(), signature.to_vec())
}

/// A CBOR head: major type and argument, in the shortest form (RFC 8949 §3).
fn cbor_head(major: u8, n: u64) -> Vec<u8> {
    let m = major << 5;
    match n {
        0..=23 => vec![m | n as u8],
        24..=0xff => vec![m | 24, n as u8],
        0x100..=0xffff => [&[m | 25][..], &(n as u16).to_be_bytes()].concat(),
        0x1_0000..=0xffff_ffff => [&[m | 26][..], &(n as u32).to_be_bytes()].concat(),
        _ => [&[m | 27][..], &n.to_be_bytes()].concat(),
    }
}

/// Sig_structure = ["Signature1", protected, h'', payload] (RFC 9052 §4.4).
fn sig_structure(protected: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut v = vec![0x84, 0x6a];
    v.extend_from_slice(b"Signature1");
    v.extend(cbor_head(2, protected.len() as u64));
    v.extend_from_slice(protected);
    v.push(0x40);
    v.extend(cbor_head(2, payload.len() as u64));
    v.extend_from_slice(payload);
    v
}

/// What every signed statement publishes, checked against the parts of its bytes.
fn statement(signed: &[u8], signer_public: &[u8; 32]) -> Value {
    let (protected, payload, signature) = cose_parts(signed);
    let tbs = sig_structure(&protected, &payload);
    C.ed25519_verify(signer_public, &tbs, &signature.clone().try_into().unwrap())
        .expect("the signature is over the Sig_structure");
    json!({
        "protected": h(&protected),
        "payload": h(&payload),
        "sig_structure": h(&tbs),
        "signature": h(&signature),
        "signed": h(signed),
        "size": signed.len(),
    })
}

// ---- RFC 9180 by hand ---------------------------------------------------------------------------------------

const KEM_SUITE: &[u8] = b"KEM\x00\x20";
const HPKE_SUITE: &[u8] = b"HPKE\x00\x20\x00\x01\x00\x02";

fn labeled_extract(suite: &[u8], salt: &[u8], label: &[u8], ikm: &[u8]) -> [u8; 32] {
    let mut input = b"HPKE-v1".to_vec();
    input.extend_from_slice(suite);
    input.extend_from_slice(label);
    input.extend_from_slice(ikm);
    *C.hkdf_extract(salt, &input).expose()
}

fn labeled_expand(prk: &[u8], suite: &[u8], label: &[u8], info: &[u8], len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    let l = (len as u16).to_be_bytes();
    C.hkdf_expand(prk, &[&l, b"HPKE-v1", suite, label, info], &mut out)
        .unwrap();
    out
}

/// Every intermediate value of the grant's HPKE setup, from the seed and the reply key.
struct Hpke {
    info: Vec<u8>,
    ikm: [u8; 32],
    sk_e: [u8; 32],
    enc: [u8; 32],
    dh: [u8; 32],
    shared_secret: Vec<u8>,
    key: Vec<u8>,
    base_nonce: Vec<u8>,
}

fn hpke(request_id: &[u8; 32], reply_key: &[u8; 32]) -> Hpke {
    let mut info = GRANT_INFO.to_vec();
    info.extend_from_slice(request_id);
    // The seeded generator's first block is DeriveKeyPair's ikm (RFC 9180 §7.1.3).
    let ikm = C.hmac_sha256(
        &HPKE_SEED,
        &[b"custos/v1/hpke-ephemeral", &0u32.to_be_bytes()],
    );
    let dkp_prk = labeled_extract(KEM_SUITE, b"", b"dkp_prk", &ikm);
    let sk_e: [u8; 32] = labeled_expand(&dkp_prk, KEM_SUITE, b"sk", b"", 32)
        .try_into()
        .unwrap();
    let enc = C.x25519_public(&Secret::from_bytes(sk_e));
    let dh = *C
        .x25519(&Secret::from_bytes(sk_e), reply_key)
        .unwrap()
        .expose();
    let eae_prk = labeled_extract(KEM_SUITE, b"", b"eae_prk", &dh);
    let kem_context = [&enc[..], &reply_key[..]].concat();
    let shared_secret = labeled_expand(&eae_prk, KEM_SUITE, b"shared_secret", &kem_context, 32);
    let psk_id_hash = labeled_extract(HPKE_SUITE, b"", b"psk_id_hash", b"");
    let info_hash = labeled_extract(HPKE_SUITE, b"", b"info_hash", &info);
    let context = [&[0u8][..], &psk_id_hash, &info_hash].concat();
    let secret = labeled_extract(HPKE_SUITE, &shared_secret, b"secret", b"");
    Hpke {
        info,
        ikm,
        sk_e,
        enc,
        dh,
        shared_secret,
        key: labeled_expand(&secret, HPKE_SUITE, b"key", &context, 32),
        base_nonce: labeled_expand(&secret, HPKE_SUITE, b"base_nonce", &context, 12),
    }
}

fn node_aad(node: NodeId) -> Vec<u8> {
    let mut aad = DEV.0.to_vec();
    aad.extend_from_slice(&1u16.to_be_bytes());
    aad.push(node.depth);
    aad.extend_from_slice(&node.index.to_be_bytes());
    aad
}

// ---- the vectors ---------------------------------------------------------------------------------------------

fn keys() -> Value {
    json!({
        "app_seed": h(&APP_SEED),
        "app_public": h(&C.ed25519_public(&Secret::from_bytes(APP_SEED))),
        "keeper_seed": h(&KEEPER_SEED),
        "keeper_public": h(&keeper()),
        "reply_secret": h(&REPLY_SECRET),
        "reply_public": h(&C.x25519_public(&Secret::from_bytes(REPLY_SECRET))),
        "hpke_seed": h(&HPKE_SEED),
        "master": h(&MASTER),
    })
}

fn tree() -> Value {
    let spec = spec();
    let mut sched = [0u8; Schedule::MAX_ENCODED];
    let n = spec.schedule().encode(&mut sched).unwrap();
    json!({
        "device": DEV.to_string(),
        "epoch": spec.epoch().0,
        "schedule": spec.schedule().to_string(),
        "schedule_bytes": h(&sched[..n]),
        "valid_from": spec.span().start().secs(),
        "valid_until": spec.span().end().secs(),
    })
}

fn request_input(r: &SharingRequest) -> Value {
    json!({
        "app_key": h(&r.app_key),
        "app_name": r.app_name,
        "owner": h(&r.owner),
        "devices": r.devices.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
        "from": r.range.start().secs(),
        "until": r.range.end().secs(),
        "purpose": r.purpose,
        "purpose_text": r.purpose_text,
        "retention": r.retention,
        "reply_key": h(&r.reply_key),
        "nonce": h(&r.nonce),
        "expires": r.expires.secs(),
    })
}

/// A request, and the keeper's grant of the cover of its whole range.
fn case(name: &str, range: Span) -> Value {
    let req = request(range);
    let signed = req.sign(signer(APP_SEED)).unwrap();
    let v = SharingRequest::verify(&C, &signed, now()).unwrap();
    assert_eq!(v.request, req);
    assert_eq!(kind(&signed).unwrap(), REQUEST);
    let mut req_out = statement(&signed, &req.app_key);
    req_out["id"] = json!(h(&statement_id(&signed)));

    let spec = spec();
    let root = spec
        .root(&C, &MasterSecret::new(Secret::from_bytes(MASTER)))
        .unwrap();
    let nodes: Vec<_> = spec
        .cover(range)
        .unwrap()
        .map(|n| spec.derive(&C, &root, n).unwrap())
        .collect();
    let grant = Grant::seal(
        &C,
        &v,
        &[GrantedTree {
            spec,
            nodes: nodes.clone(),
        }],
        now(),
        &Secret::from_bytes(HPKE_SEED),
        signer(KEEPER_SEED),
    )
    .unwrap();
    assert_eq!(kind(&grant).unwrap(), GRANT);
    let opened = Grant::open(&C, &grant, &keeper(), &v, &Secret::from_bytes(REPLY_SECRET)).unwrap();
    assert_eq!(opened.len(), 1);
    assert_eq!(opened[0].nodes, nodes);

    // The same HPKE context, by hand: enc in the payload, and every sealed secret under key and nonce i.
    let hp = hpke(&v.id, &req.reply_key);
    let mut grant_out = statement(&grant, &keeper());
    let payload = unhex(&grant_out["payload"]);
    let at = payload
        .windows(34)
        .position(|w| w[..2] == [0x58, 0x20] && w[2..] == hp.enc)
        .expect("enc in the grant");
    assert_eq!(at, 41, "enc follows version, request id and issued-at");
    let aead = C
        .aead_key(
            Suite::AES256GCM,
            &Secret::from_bytes(hp.key.clone().try_into().unwrap()),
        )
        .unwrap();
    let sealed_nodes: Vec<Value> = nodes
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let node = s.node();
            let mut nonce: [u8; 12] = hp.base_nonce.clone().try_into().unwrap();
            for (n, x) in nonce[4..].iter_mut().zip((i as u64).to_be_bytes()) {
                *n ^= x;
            }
            let mut buf = s.secret().expose().to_vec();
            let tag = C
                .aead_seal(&aead, &nonce, &node_aad(node), &mut buf)
                .unwrap();
            buf.extend_from_slice(&tag);
            let mut item = vec![0x83];
            item.extend(cbor_head(0, node.depth.into()));
            item.extend(cbor_head(0, node.index));
            item.extend([0x58, 0x30]);
            item.extend_from_slice(&buf);
            assert!(
                payload.windows(item.len()).any(|w| w == item),
                "{name}: node {i} is sealed under the hand-made context"
            );
            let p = spec.node_span(node).unwrap();
            json!({
                "depth": node.depth,
                "index": node.index,
                "period": [p.start().to_string(), p.end().to_string()],
                "secret": h(s.secret().expose()),
                "aad": h(&node_aad(node)),
                "nonce": h(&nonce),
                "sealed": h(&buf),
            })
        })
        .collect();
    grant_out["hpke"] = json!({
        "info": h(&hp.info),
        "ikm": h(&hp.ikm),
        "ephemeral_secret": h(&hp.sk_e),
        "enc": h(&hp.enc),
        "dh": h(&hp.dh),
        "shared_secret": h(&hp.shared_secret),
        "key": h(&hp.key),
        "base_nonce": h(&hp.base_nonce),
    });
    grant_out["nodes"] = json!(sealed_nodes);
    json!({
        "name": name,
        "request": {"input": request_input(&req), "expect": req_out},
        "grant": {"input": {"issued_at": now().secs()}, "expect": grant_out},
    })
}

fn denial(request_id: [u8; 32]) -> Value {
    let d = Denial {
        request: request_id,
        issued_at: now(),
        reason: "denied by policy rule 2".into(),
    };
    let signed = d.sign(signer(KEEPER_SEED)).unwrap();
    assert_eq!(kind(&signed).unwrap(), DENIAL);
    assert_eq!(Denial::verify(&C, &signed, &keeper()).unwrap(), d);
    json!({
        "input": {"request": h(&d.request), "issued_at": d.issued_at.secs(), "reason": d.reason},
        "expect": statement(&signed, &keeper()),
    })
}

fn access_token() -> Value {
    let owner = keeper();
    let scope = format!("GET /v1/owners/{}/inbox", h(&owner));
    let t = AccessToken {
        owner,
        scope: scope.clone(),
        at: now(),
    };
    let signed = t.sign(signer(KEEPER_SEED)).unwrap();
    assert!(kind(&signed).is_err(), "a token is not a sharing statement");
    let later = |s: u64| UnixTime::new(now().secs() + s).unwrap();
    let earlier = |s: u64| UnixTime::new(now().secs() - s).unwrap();
    assert_eq!(
        AccessToken::verify(&C, &signed, &owner, &scope, later(ACCESS_SKEW)).unwrap(),
        t
    );
    assert!(AccessToken::verify(&C, &signed, &owner, &scope, earlier(ACCESS_SKEW)).is_ok());
    assert_eq!(
        AccessToken::verify(&C, &signed, &owner, &scope, later(ACCESS_SKEW + 1)),
        Err(Error::Expired)
    );
    assert_eq!(
        AccessToken::verify(&C, &signed, &owner, &scope, earlier(ACCESS_SKEW + 1)),
        Err(Error::Expired)
    );
    let (protected, _, _) = cose_parts(&signed);
    assert!(
        protected.ends_with(ACCESS.as_bytes()),
        "the content type ends the protected header"
    );
    json!({
        "input": {"owner": h(&owner), "scope": scope, "at": t.at.secs()},
        "expect": statement(&signed, &owner),
    })
}

fn generate() -> Value {
    let cases: Vec<Value> = ranges().iter().map(|(n, r)| case(n, *r)).collect();
    let week_id: [u8; 32] = unhex(&cases[1]["request"]["expect"]["id"])
        .try_into()
        .unwrap();
    json!({
        "keys": keys(),
        "tree": tree(),
        "now": now().secs(),
        "cases": cases,
        "denial": denial(week_id),
        "access_token": access_token(),
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
    // Field by field first, for a readable failure; then the whole file.
    for (i, case) in generated["cases"].as_array().unwrap().iter().enumerate() {
        for part in ["request", "grant"] {
            assert_eq!(
                case[part], file["cases"][i][part],
                "{} {part}",
                case["name"]
            );
        }
    }
    assert_eq!(generated, file, "docs/vectors/sharing-v1.json is stale");
}

/// The published bytes, read back from the file, verify and open through the public API.
#[test]
fn published_statements_verify_and_open() {
    let file: Value = serde_json::from_str(&std::fs::read_to_string(PATH).unwrap()).unwrap();
    let keeper: [u8; 32] = unhex(&file["keys"]["keeper_public"]).try_into().unwrap();
    let reply = Secret::from_bytes(unhex(&file["keys"]["reply_secret"]).try_into().unwrap());
    let now = UnixTime::new(file["now"].as_u64().unwrap()).unwrap();
    let cases = file["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 3);
    let mut week: Option<VerifiedRequest> = None;
    for case in cases {
        let signed = unhex(&case["request"]["expect"]["signed"]);
        let v = SharingRequest::verify(&C, &signed, now).unwrap();
        assert_eq!(h(&v.id), case["request"]["expect"]["id"].as_str().unwrap());
        let grant = unhex(&case["grant"]["expect"]["signed"]);
        assert_eq!(Grant::request_id_unverified(&grant).unwrap(), v.id);
        let trees = Grant::open(&C, &grant, &keeper, &v, &reply).unwrap();
        let want = case["grant"]["expect"]["nodes"].as_array().unwrap();
        assert_eq!(trees[0].nodes.len(), want.len());
        for (got, want) in trees[0].nodes.iter().zip(want) {
            assert_eq!(u64::from(got.node().depth), want["depth"].as_u64().unwrap());
            assert_eq!(got.node().index, want["index"].as_u64().unwrap());
            assert_eq!(h(got.secret().expose()), want["secret"].as_str().unwrap());
        }
        if case["name"] == "one week" {
            week = Some(v);
        }
    }
    let week = week.unwrap();
    let denial = Denial::verify(&C, &unhex(&file["denial"]["expect"]["signed"]), &keeper).unwrap();
    assert_eq!(denial.request, week.id);
    let token = &file["access_token"];
    AccessToken::verify(
        &C,
        &unhex(&token["expect"]["signed"]),
        &keeper,
        token["input"]["scope"].as_str().unwrap(),
        now,
    )
    .unwrap();
    // Sizes the document quotes: one node per week, two per two whole months.
    let nodes = |i: usize| {
        cases[i]["grant"]["expect"]["nodes"]
            .as_array()
            .unwrap()
            .len()
    };
    assert_eq!((nodes(0), nodes(1)), (2, 1));
}

/// Every long hex string in wire.md §10 is a value of the vector file (or part of one), so the document cannot
/// drift from the file; and the sizes it quotes are those of the file.
#[test]
fn wire_md_quotes_the_vectors() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/wire.md"))
        .unwrap();
    let section = &doc[doc.find("## 10. Sharing statements").expect("wire.md §10")..];
    // §10 ends where the next section starts.
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |i| i + 3)];
    let file = std::fs::read_to_string(PATH).unwrap();
    let mut checked = 0;
    for word in section.split(|c: char| !c.is_ascii_alphanumeric()) {
        if word.len() >= 16 && word.chars().all(|c| c.is_ascii_hexdigit()) {
            assert!(
                file.contains(word),
                "wire.md §10 quotes {word}, which is not in the vectors"
            );
            checked += 1;
        }
    }
    assert!(checked >= 40, "only {checked} hex strings in wire.md §10");
    let v: Value = serde_json::from_str(&file).unwrap();
    for case in v["cases"].as_array().unwrap() {
        let row = section
            .lines()
            .find(|l| {
                l.contains(&format!(
                    "): {} |",
                    case["name"].as_str().unwrap().replace(" from Feb 20", "")
                ))
            })
            .unwrap_or_else(|| panic!("no size row for {}", case["name"]));
        for part in ["request", "grant"] {
            let size = case[part]["expect"]["size"].as_u64().unwrap();
            assert!(
                row.contains(&format!("| {size} bytes |")),
                "{row}: {part} is {size} bytes"
            );
        }
    }
    for (what, statement) in [
        ("The request, ", &v["cases"][1]["request"]),
        ("Its grant, ", &v["cases"][1]["grant"]),
        ("A denial of the same request, ", &v["denial"]),
    ] {
        let size = statement["expect"]["size"].as_u64().unwrap();
        assert!(
            section.contains(&format!("{what}{size} bytes")),
            "{what}{size} bytes"
        );
    }
}
