//! An attacker on the node ↔ CE and node ↔ node links of docs/wire.md §12 (device-to-device keys): it replays,
//! reflects, redirects and edits messages, but knows no node's SDK. Each test names the attack and the check that
//! stops it, and asserts the error that check gives, so that it fails if the check is removed. The module's own
//! tests cover single flipped bytes and the honest runs; these are whole messages put where they do not belong.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use custos_proto::ties::{
    self, KDC_DIRECT, KTC_DIRECT, KTC_INDIRECT, KeyId, Link, MAX_LIFETIME, NodeKeys, REPLAY_WINDOW,
    Refusal, Request, Seed, SessionKey,
};
use custos_proto::{DeviceId, Error, RustCrypto, Secret};

const C: RustCrypto = RustCrypto;
const N1: DeviceId = DeviceId([0x10, 0, 0, 0, 0, 0, 0, 0x01]);
const N2: DeviceId = DeviceId([0x20, 0, 0, 0, 0, 0, 0, 0x02]);
const N3: DeviceId = DeviceId([0x30, 0, 0, 0, 0, 0, 0, 0x03]);
const N4: DeviceId = DeviceId([0x40, 0, 0, 0, 0, 0, 0, 0x04]);
const NOW: u64 = 1_800_000_000;
const EXPIRES: u32 = 1_800_003_600;
const KID: KeyId = [0x41, 0x41, 0x41, 0x41, 0, 0, 0, 1];
const SEED: [u8; 16] = [0x5e; 16];

fn keys(d: DeviceId) -> NodeKeys {
    NodeKeys::derive(&C, &Secret::from_bytes([0x50 | d.0[7]; 32])).unwrap()
}

fn seed() -> Seed {
    Seed::from_bytes(SEED)
}

/// A request as the CE reads it, from N1.
fn request(kind: u8, peers: &[DeviceId]) -> Request {
    let s = (!ties::is_distribution(kind)).then(seed);
    let msg = Request::new(kind, N1, peers, KID, EXPIRES)
        .unwrap()
        .seal(&C, &keys(N1), s.as_ref())
        .unwrap();
    Request::open(&C, N1, &keys(N1), msg.as_bytes()).unwrap().0
}

fn package(req: &Request, to: DeviceId) -> Vec<u8> {
    req.package(&C, to, &keys(to), &seed())
        .unwrap()
        .as_bytes()
        .to_vec()
}

fn open(me: DeviceId, k: DeviceId, msg: &[u8]) -> Result<SessionKey, Error> {
    ties::open_package(&C, me, &keys(k), msg, NOW)
}

/// Every member's link for N1's KTC key with `peers`.
fn links(peers: &[DeviceId]) -> Vec<Link> {
    let req = request(KTC_DIRECT, peers);
    let mut out = vec![req.session_key(&C, &seed()).unwrap().link(N1).unwrap()];
    for &p in peers {
        out.push(open(p, p, &package(&req, p)).unwrap().link(p).unwrap());
    }
    out
}

const AUTH: Result<(), Error> = Err(Error::Authentication);

fn fails<T>(r: Result<T, Error>) -> Result<(), Error> {
    r.map(|_| ())
}

#[test]
fn a_package_replayed_after_its_expiry_is_refused() {
    // Node side: every package of a KDC group key (the grant and both deliveries) opens until `expires` and never
    // from then on: a recorded package replayed late (Denning–Sacco) gives nothing.
    let req = request(KDC_DIRECT, &[N2, N3]);
    for to in [N1, N2, N3] {
        let p = package(&req, to);
        assert!(ties::open_package(&C, to, &keys(to), &p, u64::from(EXPIRES) - 1).is_ok());
        for late in [
            u64::from(EXPIRES),
            u64::from(EXPIRES) + 1,
            u64::from(EXPIRES) + 86_400,
        ] {
            assert_eq!(
                fails(ties::open_package(&C, to, &keys(to), &p, late)),
                Err(Error::Expired),
                "package for {to} at {late}"
            );
        }
    }
    // CE side: the request itself replayed later still authenticates, but its expiry is then too near (or past).
    let req = request(KTC_INDIRECT, &[N2]);
    assert_eq!(req.check_expiry(NOW), Ok(()));
    assert_eq!(
        req.check_expiry(u64::from(EXPIRES) - 59),
        Err(Refusal::BadExpiry)
    );
    assert_eq!(
        req.check_expiry(u64::from(EXPIRES)),
        Err(Refusal::BadExpiry)
    );
    // Nor can a requester ask for a key that outlives the CE's limit.
    let far = Request::new(KTC_DIRECT, N1, &[N2], KID, (NOW as u32) + MAX_LIFETIME + 1).unwrap();
    assert_eq!(far.check_expiry(NOW), Err(Refusal::BadExpiry));
}

#[test]
fn a_delivery_reflected_to_its_requester_is_refused() {
    for kind in [KTC_DIRECT, KDC_DIRECT] {
        let req = request(kind, &[N2]);
        let d = package(&req, N2);
        // To N1 under N1's own keys: N1 is named in the holders, and the tag is N2's.
        assert_eq!(
            fails(open(N1, N1, &d)),
            Err(Error::InvalidValue(
                "a package names its recipient among the holders"
            ))
        );
        // Even if N1's id were used with the key the package was sealed under, the holders check refuses it first.
        assert_eq!(
            fails(open(N1, N2, &d)),
            Err(Error::InvalidValue(
                "a package names its recipient among the holders"
            ))
        );
    }
    // A KDC grant for N1 sent on to the peer N2: it names N2 among the holders too.
    let req = request(KDC_DIRECT, &[N2]);
    let g = package(&req, N1);
    assert!(open(N1, N1, &g).is_ok());
    assert_eq!(
        fails(open(N2, N2, &g)),
        Err(Error::InvalidValue(
            "a package names its recipient among the holders"
        ))
    );
}

#[test]
fn a_request_with_requester_and_peer_swapped_fails_or_gives_another_key() {
    let msg = Request::new(KTC_DIRECT, N1, &[N2], KID, EXPIRES)
        .unwrap()
        .seal(&C, &keys(N1), Some(&seed()))
        .unwrap();
    // N1's request replayed by N2 (the transport names N2), under either node's keys: the requester is in A. Read
    // with N2 as the requester it names N2 as its own peer, which is refused before the tag.
    assert_eq!(
        fails(Request::open(&C, N2, &keys(N1), msg.as_bytes())),
        Err(Error::InvalidValue(
            "a node cannot ask for a key with itself"
        ))
    );
    let msg3 = Request::new(KTC_DIRECT, N1, &[N3], KID, EXPIRES)
        .unwrap()
        .seal(&C, &keys(N1), Some(&seed()))
        .unwrap();
    assert_eq!(
        fails(Request::open(&C, N2, &keys(N1), msg3.as_bytes())),
        AUTH
    );
    assert_eq!(
        fails(Request::open(&C, N2, &keys(N2), msg3.as_bytes())),
        AUTH
    );
    // Honest requests with the roles swapped and everything else equal (seed, kid, expiry, so the same hint) give
    // another key: what N1 sends under the swapped key does not open under N1's own key.
    let swapped = Request::new(KTC_DIRECT, N2, &[N1], KID, EXPIRES).unwrap();
    let d = swapped
        .package(&C, N1, &keys(N1), &seed())
        .unwrap()
        .as_bytes()
        .to_vec();
    let b1 = open(N1, N1, &d).unwrap();
    assert_eq!((b1.requester(), b1.peers()), (N2, &[N1][..]));
    let mut b1 = b1.link(N1).unwrap();
    let mut out = [0u8; 64];
    let n = b1.seal(&C, b"swap", &mut out, NOW).unwrap();
    let mut b2 = swapped.session_key(&C, &seed()).unwrap().link(N2).unwrap();
    let mut m = out[..n].to_vec();
    assert_eq!(b2.open(&C, N1, &mut m, NOW).unwrap(), b"swap");
    let mut a2 = links(&[N2]).remove(1);
    let mut m = out[..n].to_vec();
    assert_eq!(fails(a2.open(&C, N1, &mut m, NOW)), AUTH);
}

#[test]
fn a_delivery_for_n2_given_to_n3_fails() {
    let req = request(KTC_DIRECT, &[N2]);
    let d = package(&req, N2);
    // N3 with its own keys, N3 with N2's keys (the recipient is in A), N2's id with N3's keys (the key is N2's).
    assert_eq!(fails(open(N3, N3, &d)), AUTH);
    assert_eq!(fails(open(N3, N2, &d)), AUTH);
    assert_eq!(fails(open(N2, N3, &d)), AUTH);
    assert!(open(N2, N2, &d).is_ok());
    // In a group N3 holds the same key, yet N2's delivery is still not N3's to open.
    let req = request(KTC_DIRECT, &[N2, N3]);
    let d2 = package(&req, N2);
    assert_eq!(
        fails(open(N3, N3, &d2)),
        Err(Error::InvalidValue(
            "a package names its recipient among the holders"
        ))
    );
    assert_eq!(fails(open(N4, N4, &d2)), AUTH);
}

#[test]
fn a_confirmation_replayed_under_another_key_or_reflected_fails() {
    let mut a = links(&[N2]);
    let c1 = a[0].confirm_to(&C, N2, NOW).unwrap();
    // Another key with the same kid, expiry and members (a second seed): the hint matches, the tag does not.
    let other = Request::new(KTC_DIRECT, N1, &[N2], KID, EXPIRES).unwrap();
    let mut o2 = other
        .session_key(&C, &Seed::from_bytes([0x33; 16]))
        .unwrap()
        .link(N2)
        .unwrap();
    assert_eq!(fails(o2.accept_confirmation(&C, N1, &c1, NOW)), AUTH);
    assert!(!o2.is_confirmed(N1));
    // The right key accepts it and answers.
    let c2 = a[1].accept_confirmation(&C, N1, &c1, NOW).unwrap().unwrap();
    // The answer replayed under the other key (to N1 of another key) fails too.
    let mut o1 = other
        .session_key(&C, &Seed::from_bytes([0x33; 16]))
        .unwrap()
        .link(N1)
        .unwrap();
    assert_eq!(fails(o1.accept_confirmation(&C, N2, &c2, NOW)), AUTH);
    // Reflected to its sender: N1's 4c back to N1, N2's 4d back to N2.
    assert!(a[0].accept_confirmation(&C, N2, &c1, NOW).is_err());
    assert!(!a[0].is_confirmed(N2));
    assert!(a[1].accept_confirmation(&C, N1, &c2, NOW).is_err());
    // Reflected with the type rewritten, so the type check passes: the tag binds type, sender and recipient.
    let mut turned = c1;
    turned[0] = ties::CONFIRM_PEER;
    assert_eq!(fails(a[0].accept_confirmation(&C, N2, &turned, NOW)), AUTH);
    assert!(!a[0].is_confirmed(N2));
    // In a group, N1's 4c to N2 redirected to N3: the recipient is in the tag.
    let mut g = links(&[N2, N3]);
    let to_n2 = g[0].confirm_to(&C, N2, NOW).unwrap();
    assert_eq!(fails(g[2].accept_confirmation(&C, N1, &to_n2, NOW)), AUTH);
    // N3 replaying N2's answer as its own: the sender is in the tag.
    let from_n2 = g[1]
        .accept_confirmation(&C, N1, &to_n2, NOW)
        .unwrap()
        .unwrap();
    assert_eq!(fails(g[0].accept_confirmation(&C, N3, &from_n2, NOW)), AUTH);
    assert!(!g[0].is_confirmed(N3));
}

#[test]
fn a_data_message_replayed_fails() {
    let mut a = links(&[N2]);
    let mut sent = vec![];
    for i in 0..(REPLAY_WINDOW as usize + 5) {
        let mut out = [0u8; 64];
        let n = a[0].seal(&C, &[i as u8; 3], &mut out, NOW).unwrap();
        sent.push(out[..n].to_vec());
    }
    let replayed = Err(Error::InvalidValue(
        "a replayed or too old node-to-node message",
    ));
    // In order, once each; the same again is refused, right away and later.
    let mut m = sent[0].clone();
    assert!(a[1].open(&C, N1, &mut m, NOW).is_ok());
    let mut m = sent[0].clone();
    assert_eq!(fails(a[1].open(&C, N1, &mut m, NOW)), replayed);
    let mut m = sent[2].clone();
    assert!(a[1].open(&C, N1, &mut m, NOW).is_ok());
    // Seq 1 arrives late (reordered): accepted once.
    let mut m = sent[1].clone();
    assert!(a[1].open(&C, N1, &mut m, NOW).is_ok());
    let mut m = sent[1].clone();
    assert_eq!(fails(a[1].open(&C, N1, &mut m, NOW)), replayed);
    // Far ahead, then one that fell out of the window although never seen.
    let mut m = sent.last().unwrap().clone();
    assert!(a[1].open(&C, N1, &mut m, NOW).is_ok());
    let mut m = sent[3].clone();
    assert_eq!(fails(a[1].open(&C, N1, &mut m, NOW)), replayed);
    // Reflected to its sender (as from itself, or as from N2): refused.
    let mut m = sent[5].clone();
    assert_eq!(fails(a[0].open(&C, N1, &mut m, NOW)), AUTH);
    let mut m = sent[5].clone();
    assert_eq!(fails(a[0].open(&C, N2, &mut m, NOW)), AUTH);
    // Replayed to a holder of another key with the same kid: the key differs.
    let mut b = Request::new(KTC_DIRECT, N1, &[N2], KID, EXPIRES)
        .unwrap()
        .session_key(&C, &Seed::from_bytes([0x33; 16]))
        .unwrap()
        .link(N2)
        .unwrap();
    let mut m = sent[5].clone();
    assert_eq!(fails(b.open(&C, N1, &mut m, NOW)), AUTH);
    // A refused message does not use up its number: the genuine one still opens.
    let mut m = sent[5].clone();
    assert!(a[1].open(&C, N1, &mut m, NOW).is_ok());
}

#[test]
fn a_delivery_with_a_modified_holders_list_fails() {
    // N3's delivery of N1's group key with N3 and N2: holders N1, N2 (requester first).
    let req = request(KTC_DIRECT, &[N3, N2]);
    let d = package(&req, N3);
    let k = open(N3, N3, &d).unwrap();
    assert_eq!((k.requester(), k.peers()), (N1, &[N2, N3][..]));
    let (head, tail) = d.split_at(13);
    let (holders, body) = tail.split_at(16);
    assert_eq!(holders, [N1.0, N2.0].concat());
    let with = |h: &[DeviceId]| -> Vec<u8> {
        [head, &h.iter().flat_map(|d| d.0).collect::<Vec<_>>(), body].concat()
    };
    // Swapped (N2 would become the requester), one dropped, one replaced, one added.
    for h in [
        &[N2, N1][..],
        &[N1],
        &[N2],
        &[N1, N4],
        &[N4, N2],
        &[N1, N2, N4],
    ] {
        assert_eq!(fails(open(N3, N3, &with(h))), AUTH, "{h:?}");
    }
    // A two-party delivery whose single holder is replaced: it would name another requester.
    let req = request(KTC_DIRECT, &[N2]);
    let d = package(&req, N2);
    let mut bad = d.clone();
    bad[13..21].copy_from_slice(&N4.0);
    assert_eq!(fails(open(N2, N2, &bad)), AUTH);
}

#[test]
fn a_refusal_with_a_modified_reason_fails() {
    let reasons = [
        Refusal::PeerNotAuthorized,
        Refusal::BadExpiry,
        Refusal::KeyIdReused,
    ];
    for why in reasons {
        let f = ties::seal_refusal(&C, N1, &keys(N1), &KID, why).unwrap();
        assert_eq!(ties::open_refusal(&C, N1, &keys(N1), &f), Ok((KID, why)));
        for other in reasons.iter().filter(|&&r| r != why) {
            let mut bad = f;
            bad[9] = *other as u8;
            assert_eq!(
                fails(ties::open_refusal(&C, N1, &keys(N1), &bad)),
                AUTH,
                "{why:?} -> {other:?}"
            );
        }
        for code in [0u8, 4, 0xff] {
            let mut bad = f;
            bad[9] = code;
            assert!(ties::open_refusal(&C, N1, &keys(N1), &bad).is_err());
        }
        // Another requester's refusal, or one redirected to another node.
        assert_eq!(fails(ties::open_refusal(&C, N2, &keys(N2), &f)), AUTH);
        assert_eq!(fails(ties::open_refusal(&C, N2, &keys(N1), &f)), AUTH);
    }
}
