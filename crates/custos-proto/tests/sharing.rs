//! Sharing requests, grants and denials, played against a hub that relays them and an application that wants more.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use custos_proto::sharing::{
    Denial, Grant, GrantedTree, SharingRequest, VerifiedRequest, kind, statement_id,
};
use custos_proto::{
    Crypto, DeviceId, Epoch, Error, MasterSecret, Opener, RustCrypto, Schedule, Secret, Span,
    Suite, TreeSpec, UnixTime,
};

const C: RustCrypto = RustCrypto;
const DEV: DeviceId = DeviceId([0, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77]);
const OTHER_DEV: DeviceId = DeviceId([0, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x78]);

fn key(b: u8) -> Secret {
    Secret::from_bytes([b; 32])
}

fn signer(b: u8) -> impl FnOnce(&[u8]) -> [u8; 64] {
    move |tbs| C.ed25519_sign(&key(b), tbs)
}

fn day(y: i64, m: u32, d: u32) -> UnixTime {
    UnixTime::from_date(y, m, d).unwrap()
}

fn span(a: UnixTime, b: UnixTime) -> Span {
    Span::new(a, b).unwrap()
}

const APP: u8 = 1;
const KEEPER: u8 = 2;
const REPLY: u8 = 3;

fn request(range: Span, devices: Vec<DeviceId>) -> SharingRequest {
    SharingRequest {
        app_key: C.ed25519_public(&key(APP)),
        app_name: "heating-optimizer".into(),
        owner: C.ed25519_public(&key(KEEPER)),
        devices,
        range,
        purpose: "energy.optimization".into(),
        purpose_text: "Tune the heating curve to the room's temperature history".into(),
        retention: 30 * 86_400,
        reply_key: C.x25519_public(&key(REPLY)),
        nonce: [7; 16],
        expires: day(2026, 8, 1),
    }
}

fn now() -> UnixTime {
    day(2026, 7, 1)
}

fn tree(device: DeviceId) -> (TreeSpec, custos_proto::NodeSecret) {
    let spec = TreeSpec::new(
        device,
        Epoch(1),
        Schedule::default(),
        span(day(2026, 1, 1), day(2027, 1, 1)),
    )
    .unwrap();
    let root = spec
        .root(&C, &MasterSecret::new(Secret::from_bytes([9; 32])))
        .unwrap();
    (spec, root)
}

/// The keeper's side: the minimal cover of `range` for `device`, sealed to the request.
fn grant_for(req: &VerifiedRequest, range: Span, device: DeviceId) -> (Vec<u8>, usize) {
    let (spec, root) = tree(device);
    let nodes: Vec<_> = spec
        .cover(range)
        .unwrap()
        .map(|n| spec.derive(&C, &root, n).unwrap())
        .collect();
    let n = nodes.len();
    let bytes = Grant::seal(
        &C,
        req,
        &[GrantedTree { spec, nodes }],
        now(),
        &key(0x55),
        signer(KEEPER),
    )
    .unwrap();
    (bytes, n)
}

#[test]
fn a_request_round_trips_and_forgeries_are_refused() {
    let req = request(span(day(2026, 3, 1), day(2026, 5, 1)), vec![DEV]);
    let signed = req.sign(signer(APP)).unwrap();
    let v = SharingRequest::verify(&C, &signed, now()).unwrap();
    assert_eq!(v.request, req);
    assert_eq!(v.id, statement_id(&signed));
    assert_eq!(kind(&signed).unwrap(), custos_proto::sharing::REQUEST);

    // Signed by someone else than the key it names.
    let forged = req.sign(signer(9)).unwrap();
    assert_eq!(
        SharingRequest::verify(&C, &forged, now()),
        Err(Error::Signature)
    );
    // Expired.
    assert_eq!(
        SharingRequest::verify(&C, &signed, day(2026, 8, 1)),
        Err(Error::Expired)
    );
    // Valid for too long.
    let forever = SharingRequest {
        expires: day(2027, 7, 1),
        ..req.clone()
    };
    assert!(matches!(
        SharingRequest::verify(&C, &forever.sign(signer(APP)).unwrap(), now()),
        Err(Error::InvalidValue(_))
    ));
    // Every single-byte change is refused.
    for i in 0..signed.len() {
        let mut bad = signed.clone();
        bad[i] ^= 0x04;
        assert!(SharingRequest::verify(&C, &bad, now()).is_err(), "byte {i}");
    }
    // Shapes a request may not have.
    let none = SharingRequest {
        devices: vec![],
        ..req.clone()
    };
    assert!(none.sign(signer(APP)).is_err());
    let no_purpose = SharingRequest {
        purpose: String::new(),
        ..req.clone()
    };
    for bad in ["Marketing.ads", "energy..x", "energy.", "énergie", "a b"] {
        let r = SharingRequest {
            purpose: bad.into(),
            ..req.clone()
        };
        assert!(r.sign(signer(APP)).is_err(), "purpose {bad:?} accepted");
    }
    let twice = SharingRequest {
        devices: vec![DEV, DEV],
        ..req.clone()
    };
    assert!(twice.sign(signer(APP)).is_err(), "a device named twice");
    assert!(no_purpose.sign(signer(APP)).is_err());
    // A grant's signature is not a request's.
    let v = SharingRequest::verify(&C, &signed, now()).unwrap();
    let (grant, _) = grant_for(&v, span(day(2026, 3, 1), day(2026, 4, 1)), DEV);
    assert!(SharingRequest::verify(&C, &grant, now()).is_err());
    for junk in [&b""[..], b"\x84\x40\xa0\x40\x40", b"not cbor at all"] {
        assert!(SharingRequest::verify(&C, junk, now()).is_err());
    }
}

#[test]
fn a_grant_for_week_2_opens_week_2_only_and_for_that_device_only() {
    let week2 = span(day(2026, 3, 8), day(2026, 3, 15));
    let req = request(week2, vec![DEV]);
    let v = SharingRequest::verify(&C, &req.sign(signer(APP)).unwrap(), now()).unwrap();
    let (grant, n) = grant_for(&v, week2, DEV);
    assert_eq!(n, 1);
    let keeper = C.ed25519_public(&key(KEEPER));
    let trees = Grant::open(&C, &grant, &keeper, &v, &key(REPLY)).unwrap();
    assert_eq!(trees.len(), 1);
    let (spec, root) = tree(DEV);
    assert_eq!(trees[0].spec, spec);
    let expected: Vec<_> = spec
        .cover(week2)
        .unwrap()
        .map(|n| spec.derive(&C, &root, n).unwrap())
        .collect();
    assert_eq!(trees[0].nodes, expected);

    // Records of every day of March: only week 2 opens.
    let mut opener = Opener::new(&C, &trees[0].spec, &trees[0].nodes);
    for d in 1..=31 {
        let t = day(2026, 3, d);
        let leaf = spec.leaf_at(t).unwrap();
        let k = spec.leaf_key(&C, &root, leaf, Suite::AES256GCM).unwrap();
        let mut rec = [0u8; 4 + custos_proto::record::OVERHEAD];
        k.seal(&C, [0; 8], b"21.5", &mut rec).unwrap();
        let mut out = [0u8; 4];
        let opened = opener.open(&rec, &mut out);
        assert_eq!(
            opened.is_ok(),
            (8..15).contains(&d),
            "March {d}: {opened:?}"
        );
    }
    // The other device's records do not open under it.
    let (ospec, oroot) = tree(OTHER_DEV);
    let leaf = ospec.leaf_at(day(2026, 3, 9)).unwrap();
    let k = ospec.leaf_key(&C, &oroot, leaf, Suite::AES256GCM).unwrap();
    let mut rec = [0u8; 4 + custos_proto::record::OVERHEAD];
    k.seal(&C, [0; 8], b"21.5", &mut rec).unwrap();
    assert!(opener.open(&rec, &mut [0u8; 4]).is_err());
}

#[test]
fn the_hub_cannot_redirect_alter_or_widen_a_grant() {
    let week2 = span(day(2026, 3, 8), day(2026, 3, 15));
    let keeper = C.ed25519_public(&key(KEEPER));
    let v = SharingRequest::verify(
        &C,
        &request(week2, vec![DEV]).sign(signer(APP)).unwrap(),
        now(),
    )
    .unwrap();
    let (grant, _) = grant_for(&v, week2, DEV);

    // Replayed to another application: its request has another id and another reply key.
    let mut other = request(week2, vec![DEV]);
    other.app_key = C.ed25519_public(&key(11));
    other.reply_key = C.x25519_public(&key(12));
    let ov = SharingRequest::verify(&C, &other.sign(signer(11)).unwrap(), now()).unwrap();
    assert!(matches!(
        Grant::open(&C, &grant, &keeper, &ov, &key(12)),
        Err(Error::InvalidValue(_))
    ));
    // Even with the right request id, another reply secret opens nothing.
    assert_eq!(
        Grant::open(&C, &grant, &keeper, &v, &key(12)),
        Err(Error::Authentication)
    );
    // Not from the owner's keeper.
    assert_eq!(
        Grant::open(&C, &grant, &C.ed25519_public(&key(9)), &v, &key(REPLY)),
        Err(Error::Signature)
    );
    // Every single-byte change is refused.
    for i in 0..grant.len() {
        let mut bad = grant.clone();
        bad[i] ^= 0x10;
        assert!(
            Grant::open(&C, &bad, &keeper, &v, &key(REPLY)).is_err(),
            "byte {i}"
        );
    }
    // A grant wider than the request (a keeper bug, or a stale grant) is refused whole.
    let (wide, _) = grant_for(&v, span(day(2026, 3, 1), day(2026, 4, 1)), DEV);
    assert!(matches!(
        Grant::open(&C, &wide, &keeper, &v, &key(REPLY)),
        Err(Error::InvalidValue(_))
    ));
    let (elsewhere, _) = grant_for(&v, week2, OTHER_DEV);
    assert!(matches!(
        Grant::open(&C, &elsewhere, &keeper, &v, &key(REPLY)),
        Err(Error::InvalidValue(_))
    ));
    // A denial is not a grant, and a grant is not a denial.
    let denial = Denial {
        request: v.id,
        issued_at: now(),
        reason: "denied by policy rule 2".into(),
    }
    .sign(signer(KEEPER))
    .unwrap();
    assert!(Grant::open(&C, &denial, &keeper, &v, &key(REPLY)).is_err());
    assert!(Denial::verify(&C, &grant, &keeper).is_err());
    let d = Denial::verify(&C, &denial, &keeper).unwrap();
    assert_eq!(d.request, v.id);
    assert_eq!(
        Denial::verify(&C, &denial, &C.ed25519_public(&key(9))),
        Err(Error::Signature)
    );
    assert_eq!(Grant::request_id_unverified(&grant).unwrap(), v.id);
}

/// Sizes quoted in docs/wire.md and the report.
#[test]
fn request_and_grant_sizes() {
    let cases = [
        (
            "two whole months",
            span(day(2026, 3, 1), day(2026, 5, 1)),
            2,
        ),
        ("one week", span(day(2026, 3, 8), day(2026, 3, 15)), 1),
        (
            "45 days from Feb 20",
            span(day(2026, 2, 20), day(2026, 4, 6)),
            0,
        ),
    ];
    for (what, range, nodes) in cases {
        let req = request(range, vec![DEV]);
        let texts = req.app_name.len() + req.purpose.len() + req.purpose_text.len();
        let signed = req.sign(signer(APP)).unwrap();
        let v = SharingRequest::verify(&C, &signed, now()).unwrap();
        let (grant, n) = grant_for(&v, range, DEV);
        if nodes > 0 {
            assert_eq!(n, nodes, "{what}");
        }
        // Per secret: [depth, index, 48-byte sealed secret] in CBOR is at most 1 + 1 + 5 + 2 + 48 = 57 bytes.
        let base = grant.len() - n * 57;
        println!(
            "{what}: request {} B, grant {} B for {n} secrets",
            signed.len(),
            grant.len()
        );
        // The texts are the application's to choose; everything else is fixed.
        assert!(
            signed.len() - texts < 280,
            "{what}: request {} B",
            signed.len()
        );
        assert!(base < 250, "{what}: grant without its secrets {base} B");
    }
}

/// A relay that re-encodes a request (here: the payload's length head in a longer form) keeps the signature valid
/// but would change the request's id; such encodings are refused, so a request has exactly one id.
#[test]
fn a_re_encoded_request_is_refused() {
    let signed = request(span(day(2026, 3, 8), day(2026, 3, 15)), vec![DEV])
        .sign(signer(APP))
        .unwrap();
    // COSE_Sign1 = [protected bstr, unprotected map, payload bstr, signature bstr]; find the payload's head.
    assert_eq!(
        (signed[0], signed[1]),
        (0x84, 0x58),
        "array of 4, protected bstr with a 1-byte length"
    );
    let plen = signed[2] as usize;
    let at = 3 + plen + 1; // after the protected bytes and the empty map `a0`
    assert_eq!(
        signed[at], 0x58,
        "payload head is bstr with a 1-byte length"
    );
    let len = signed[at + 1];
    let mut longer = signed[..at].to_vec();
    longer.push(0x59); // the same length in 2 bytes
    longer.extend_from_slice(&u16::from(len).to_be_bytes());
    longer.extend_from_slice(&signed[at + 2..]);
    assert_ne!(statement_id(&longer), statement_id(&signed));
    assert!(matches!(
        SharingRequest::verify(&C, &longer, now()),
        Err(Error::InvalidValue(_))
    ));
}

/// The unprotected header is not signed: a request with anything in it (here a key id) would verify under a new id,
/// so it is refused.
#[test]
fn a_request_with_an_unprotected_header_is_refused() {
    let signed = request(span(day(2026, 3, 8), day(2026, 3, 15)), vec![DEV])
        .sign(signer(APP))
        .unwrap();
    let plen = signed[2] as usize;
    let at = 3 + plen;
    assert_eq!(signed[at], 0xa0, "an empty unprotected map");
    let mut with_kid = signed[..at].to_vec();
    with_kid.extend_from_slice(&[0xa1, 0x04, 0x41, 0x07]); // {4 (kid): h'07'}
    with_kid.extend_from_slice(&signed[at + 1..]);
    assert_ne!(statement_id(&with_kid), statement_id(&signed));
    assert!(matches!(
        SharingRequest::verify(&C, &with_kid, now()),
        Err(Error::InvalidValue(_))
    ));
}

#[test]
fn the_hub_reads_a_grants_trees_and_nodes_but_no_secret() {
    let week2 = span(day(2026, 3, 8), day(2026, 3, 15));
    let req = request(week2, vec![DEV]);
    let v = SharingRequest::verify(&C, &req.sign(signer(APP)).unwrap(), now()).unwrap();
    let (grant, _) = grant_for(&v, week2, DEV);
    let keeper = C.ed25519_public(&key(KEEPER));
    let public = Grant::verify_public(&C, &grant, &keeper, &v.request, &v.id).unwrap();
    let opened = Grant::open(&C, &grant, &keeper, &v, &key(REPLY)).unwrap();
    assert_eq!(public.len(), 1);
    assert_eq!(public[0].0, opened[0].spec);
    let nodes: Vec<_> = opened[0].nodes.iter().map(|n| n.node()).collect();
    assert_eq!(public[0].1, nodes);
    for n in &public[0].1 {
        assert!(week2.includes(public[0].0.node_span(*n).unwrap()));
    }
    // Another signer, another request, or a request that does not name the device: refused.
    let app = C.ed25519_public(&key(APP));
    assert_eq!(
        Grant::verify_public(&C, &grant, &app, &v.request, &v.id),
        Err(Error::Signature)
    );
    assert!(Grant::verify_public(&C, &grant, &keeper, &v.request, &[0; 32]).is_err());
    let other = request(week2, vec![OTHER_DEV]);
    assert!(Grant::verify_public(&C, &grant, &keeper, &other, &v.id).is_err());
}

#[test]
fn an_application_token_is_checked_under_the_key_it_names() {
    use custos_proto::sharing::AccessToken;
    let app = C.ed25519_public(&key(APP));
    let scope = "GET /v1/devices/00-11-22-33-44-55-66-77/records";
    let token = |signer_seed: u8, owner: [u8; 32], scope: &str| {
        AccessToken {
            owner,
            scope: scope.into(),
            at: now(),
        }
        .sign(signer(signer_seed))
        .unwrap()
    };
    let ok = AccessToken::verify_self_signed(&C, &token(APP, app, scope), scope, now()).unwrap();
    assert_eq!(ok.owner, app);
    // Signed by another key than the one it names, for another scope, or too old: refused.
    assert_eq!(
        AccessToken::verify_self_signed(&C, &token(KEEPER, app, scope), scope, now()),
        Err(Error::Signature)
    );
    assert!(AccessToken::verify_self_signed(&C, &token(APP, app, "GET /x"), scope, now()).is_err());
    let later = UnixTime::new(now().secs() + 121).unwrap();
    assert_eq!(
        AccessToken::verify_self_signed(&C, &token(APP, app, scope), scope, later),
        Err(Error::Expired)
    );
}
