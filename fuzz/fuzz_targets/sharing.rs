//! Arbitrary bytes into every reader of the sharing statements (wire.md §10): no panic. The fuzzer holds no signing
//! key, so a grant, denial or token it hands in verifies only if it carries a payload the keeper signed (the keys
//! and the one-week grant of docs/vectors/sharing-v1.json, whose statements are the seeds).
//!
//! The same bytes are also signed here as each kind's payload, with the right key, so the payload decoders behind
//! the signature are fuzzed too: whatever decodes re-signs and verifies to the same value, and a grant that opens
//! releases only the tree's true node secrets.
#![no_main]

use std::sync::OnceLock;

use custos_proto::cose::{DEVICE_LIST, DeviceList, sign1, unverified_payload, verify1};
use custos_proto::sharing::{
    self, ACCESS, AccessToken, DENIAL, Denial, GRANT, Grant, GrantedTree, REQUEST, SharingRequest,
    VerifiedRequest, statement_id,
};
use custos_proto::{
    Crypto, DeviceId, Epoch, MasterSecret, RustCrypto, Schedule, Secret, Span, TreeSpec, UnixTime,
};
use libfuzzer_sys::fuzz_target;

const C: RustCrypto = RustCrypto;
const DEV: DeviceId = DeviceId([0, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77]);
const APP: [u8; 32] = [0x01; 32];
const KEEPER: [u8; 32] = [0x02; 32];
const REPLY: [u8; 32] = [0x03; 32];
const MASTER: [u8; 32] = [
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25,
    26, 27, 28, 29, 30, 31,
];

fn signer(seed: [u8; 32]) -> impl FnOnce(&[u8]) -> [u8; 64] {
    move |tbs| C.ed25519_sign(&Secret::from_bytes(seed), tbs)
}

fn day(y: i64, m: u32, d: u32) -> UnixTime {
    UnixTime::from_date(y, m, d).unwrap()
}

/// The fixed world: the vectors' keys, tree and one-week request, and what the keeper signed for it.
struct Fixed {
    now: UnixTime,
    keeper: [u8; 32],
    app: [u8; 32],
    scope: String,
    spec: TreeSpec,
    root: custos_proto::NodeSecret,
    request: VerifiedRequest,
    grant_payload: Vec<u8>,
    trees: Vec<GrantedTree>,
    denial_payload: Vec<u8>,
    token_payload: Vec<u8>,
}

fn fixed() -> &'static Fixed {
    static FIXED: OnceLock<Fixed> = OnceLock::new();
    FIXED.get_or_init(|| {
        let now = day(2026, 7, 1);
        let keeper = C.ed25519_public(&Secret::from_bytes(KEEPER));
        let app = C.ed25519_public(&Secret::from_bytes(APP));
        let week = Span::new(day(2026, 3, 8), day(2026, 3, 15)).unwrap();
        let request = SharingRequest {
            app_key: app,
            app_name: "heating-optimizer".into(),
            owner: keeper,
            devices: vec![DEV],
            range: week,
            purpose: "energy.optimization".into(),
            purpose_text: "Tune the heating curve to the room's temperature history".into(),
            retention: 30 * 86_400,
            reply_key: C.x25519_public(&Secret::from_bytes(REPLY)),
            nonce: [0x07; 16],
            expires: day(2026, 8, 1),
        };
        let request = SharingRequest::verify(&C, &request.sign(signer(APP)).unwrap(), now).unwrap();
        let spec = TreeSpec::new(
            DEV,
            Epoch(1),
            Schedule::default(),
            Span::new(day(2026, 1, 1), day(2027, 1, 1)).unwrap(),
        )
        .unwrap();
        let root = spec
            .root(&C, &MasterSecret::new(Secret::from_bytes(MASTER)))
            .unwrap();
        let nodes: Vec<_> = spec
            .cover(week)
            .unwrap()
            .map(|n| spec.derive(&C, &root, n).unwrap())
            .collect();
        let trees = vec![GrantedTree { spec, nodes }];
        let grant = Grant::seal(
            &C,
            &request,
            &trees,
            now,
            &Secret::from_bytes([0x55; 32]),
            signer(KEEPER),
        )
        .unwrap();
        let denial = Denial {
            request: request.id,
            issued_at: now,
            reason: "denied by policy rule 2".into(),
        }
        .sign(signer(KEEPER))
        .unwrap();
        let scope = format!(
            "GET /v1/owners/{}/inbox",
            keeper
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        );
        let token = AccessToken {
            owner: keeper,
            scope: scope.clone(),
            at: now,
        }
        .sign(signer(KEEPER))
        .unwrap();
        Fixed {
            now,
            keeper,
            app,
            scope,
            spec,
            root,
            request,
            grant_payload: unverified_payload(&grant).unwrap(),
            trees,
            denial_payload: unverified_payload(&denial).unwrap(),
            token_payload: unverified_payload(&token).unwrap(),
        }
    })
}

/// What a grant that opened released must be true: every secret is its node's, for the tree the keeper signed.
fn check_opened(f: &Fixed, trees: &[GrantedTree]) {
    for tree in trees {
        assert!(f.request.request.devices.contains(&tree.spec.device()));
        for node in &tree.nodes {
            let extent = tree.spec.node_span(node.node()).unwrap();
            assert!(
                f.request.request.range.includes(extent),
                "a grant released a node outside the request"
            );
            if tree.spec == f.spec {
                assert_eq!(
                    f.spec.derive(&C, &f.root, node.node()).unwrap(),
                    *node,
                    "a grant released a secret that is not its node's"
                );
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let f = fixed();
    let reply = Secret::from_bytes(REPLY);

    // The bytes as a whole statement: nothing the fuzzer makes carries a new signature.
    let peeked = SharingRequest::peek(data);
    if let Ok(v) = SharingRequest::verify(&C, data, f.now) {
        assert_eq!(v.id, statement_id(data));
        assert_eq!(peeked.as_ref().ok(), Some(&v.request));
        assert_eq!(sharing::kind(data).ok(), Some(REQUEST));
    }
    let routed = Grant::request_id_unverified(data);
    if let Ok(trees) = Grant::open(&C, data, &f.keeper, &f.request, &reply) {
        assert_eq!(
            unverified_payload(data).unwrap(),
            f.grant_payload,
            "a grant opened that the keeper never signed"
        );
        assert!(verify1(&C, data, GRANT, &f.keeper).is_ok());
        assert_eq!(routed.ok(), Some(f.request.id));
        assert_eq!(trees, f.trees);
    }
    if Denial::verify(&C, data, &f.keeper).is_ok() {
        assert_eq!(
            unverified_payload(data).unwrap(),
            f.denial_payload,
            "a denial the keeper never signed"
        );
    }
    if AccessToken::verify(&C, data, &f.keeper, &f.scope, f.now).is_ok() {
        assert_eq!(
            unverified_payload(data).unwrap(),
            f.token_payload,
            "a token the keeper never signed"
        );
    }
    let _ = sharing::kind(data);
    let _ = DeviceList::verify(&C, data, &f.keeper);

    // The bytes as a payload, signed with the right key: the decoders behind the signature.
    if let Ok(signed) = sign1(REQUEST, data.to_vec(), signer(APP)) {
        if let Ok(v) = SharingRequest::verify(&C, &signed, f.now) {
            assert_eq!(v.request.app_key, f.app);
            let again = v.request.sign(signer(APP)).unwrap();
            assert_eq!(
                SharingRequest::verify(&C, &again, f.now).unwrap().request,
                v.request
            );
        }
    }
    if let Ok(signed) = sign1(GRANT, data.to_vec(), signer(KEEPER)) {
        if let Ok(trees) = Grant::open(&C, &signed, &f.keeper, &f.request, &reply) {
            check_opened(f, &trees);
        }
    }
    if let Ok(signed) = sign1(DENIAL, data.to_vec(), signer(KEEPER)) {
        if let Ok(d) = Denial::verify(&C, &signed, &f.keeper) {
            let again = d.sign(signer(KEEPER)).unwrap();
            assert_eq!(Denial::verify(&C, &again, &f.keeper).unwrap(), d);
        }
    }
    if let Ok(signed) = sign1(ACCESS, data.to_vec(), signer(KEEPER)) {
        if let Ok(t) = AccessToken::verify(&C, &signed, &f.keeper, &f.scope, f.now) {
            let again = t.sign(signer(KEEPER)).unwrap();
            assert_eq!(
                AccessToken::verify(&C, &again, &f.keeper, &f.scope, f.now).unwrap(),
                t
            );
        }
    }
    if let Ok(signed) = sign1(DEVICE_LIST, data.to_vec(), signer(KEEPER)) {
        if let Ok(list) = DeviceList::verify(&C, &signed, &f.keeper) {
            let again = list.sign(signer(KEEPER)).unwrap();
            assert_eq!(DeviceList::verify(&C, &again, &f.keeper).unwrap(), list);
        }
    }
});
