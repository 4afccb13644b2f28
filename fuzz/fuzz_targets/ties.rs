//! Arbitrary bytes into every device-to-device key decoder (docs/wire.md §12), under the fixed keys of Vector 9, so
//! the seeds (the vector's messages) authenticate and their mutations reach every check: the CE's reading of a
//! request, a receipt and a TPM parent registration, a node's reading of a package (plain or TPM), a notice, a refusal, a key confirmation and a data message,
//! and both sides of Noise KK. No decoder panics, and whatever is accepted is what it claims: a request, receipt,
//! notice or refusal re-seals to the same bytes; a package gives a key bound to the facts it carries; a confirmation
//! is the one the key's holder would send; a data message opens once and is what the sender seals at that number.
#![no_main]

use custos_proto::ties::{
    self, DELIVERY, GRANT, KeyId, Link, NodeKeys, Request, SIGNAL_LEN, Seed, SessionKey, kk,
};
use custos_proto::{Crypto, DeviceId, RustCrypto, Secret};
use libfuzzer_sys::fuzz_target;

const C: RustCrypto = RustCrypto;
const N1: DeviceId = DeviceId([0x10, 0, 0, 0, 0, 0, 0, 0x01]);
const N2: DeviceId = DeviceId([0x20, 0, 0, 0, 0, 0, 0, 0x02]);
const N3: DeviceId = DeviceId([0x30, 0, 0, 0, 0, 0, 0, 0x03]);
/// Vector 9's clock: its keys are alive.
const NOW: u64 = 1_800_000_000;
const EXPIRES: u32 = 1_800_003_600;
const SEED: [u8; 16] = [0x5e; 16];
const KID: KeyId = [0x41, 0x41, 0x41, 0x41, 0x00, 0x00, 0x00, 0x01];

fn keys(sdk: u8) -> NodeKeys {
    NodeKeys::derive(&C, &Secret::from_bytes([sdk; 32])).unwrap()
}

fn nodes() -> [(DeviceId, NodeKeys); 3] {
    [(N1, keys(0x51)), (N2, keys(0x52)), (N3, keys(0x53))]
}

/// N1's and N2's ends of KTC direct's session key.
fn links() -> (Link, Link) {
    let req = Request::new(ties::KTC_DIRECT, N1, &[N2], KID, EXPIRES).unwrap();
    let k = req.session_key(&C, &Seed::from_bytes(SEED)).unwrap();
    (k.clone().link(N1).unwrap(), k.link(N2).unwrap())
}

fn check_key(k: &SessionKey, me: DeviceId, data: &[u8]) {
    let kid: KeyId = data[1..9].try_into().unwrap();
    let expires = u32::from_be_bytes(data[9..13].try_into().unwrap());
    assert_eq!((k.kid(), k.expires()), (kid, expires));
    assert!(u64::from(expires) > NOW, "an expired package was accepted");
    assert!(k.is_member(me));
    let holders: Vec<DeviceId> = data[13..data.len() - 32]
        .chunks_exact(8)
        .map(|c| DeviceId(c.try_into().unwrap()))
        .collect();
    assert!(!holders.contains(&me));
    let requester = if data[0] == GRANT { me } else { holders[0] };
    assert_eq!(k.requester(), requester);
    let mut members: Vec<DeviceId> = holders.iter().copied().chain([me]).collect();
    members.retain(|&d| d != requester);
    members.sort();
    assert_eq!(k.peers(), &members[..]);
}

fuzz_target!(|data: &[u8]| {
    let nodes = nodes();

    for (id, keys) in &nodes {
        // The CE reads a request from this node: canonical, and re-sealed from what it read.
        if let Ok((req, seed)) = Request::open(&C, *id, keys, data) {
            assert_eq!(req.kind, data[0]);
            assert_eq!(req.requester, *id);
            assert_eq!(seed.is_some(), !ties::is_distribution(req.kind));
            let again = req.seal(&C, keys, seed.as_ref()).unwrap();
            assert_eq!(
                again.as_bytes(),
                data,
                "an accepted request is not canonical"
            );
            let m = req.try_members().unwrap();
            assert_eq!(m.as_slice()[0], *id);
            assert_eq!(m.as_slice().len(), req.peers.as_slice().len() + 1);
        }
        // This node reads a package.
        if let Ok(k) = ties::open_package(&C, *id, keys, data, NOW) {
            assert!(data[0] == DELIVERY || data[0] == GRANT);
            check_key(&k, *id, data);
            // The same package after its expiry is refused.
            assert_eq!(
                ties::open_package(&C, *id, keys, data, u64::from(k.expires())).unwrap_err(),
                custos_proto::Error::Expired
            );
        }
        // The CE reads a TPM parent registration: canonical.
        if let Ok(public) = ties::tpm::open_tpm_parent(&C, *id, keys, data) {
            let mut again = [0u8; ties::tpm::MAX_TPM_PARENT_MESSAGE];
            let n = ties::tpm::seal_tpm_parent(&C, *id, keys, public, &mut again).unwrap();
            assert_eq!(&again[..n], data, "an accepted registration is not canonical");
        }
        // This node reads a TPM package: bound to the facts it carries, refused after its expiry.
        let mut buf = data.to_vec();
        if let Ok(p) = ties::tpm::open_tpm_package(&C, *id, keys, &mut buf, NOW) {
            assert!(data[0] == ties::tpm::TPM_DELIVERY || data[0] == ties::tpm::TPM_GRANT);
            assert!(u64::from(p.expires()) > NOW, "an expired TPM package was accepted");
            assert_eq!(p.kid(), <KeyId>::try_from(&data[1..9]).unwrap());
            assert!(!p.blob().is_empty() && p.blob().len() <= ties::tpm::MAX_TPM_BLOB);
            let expires = u64::from(p.expires());
            let mut again = data.to_vec();
            assert_eq!(
                ties::tpm::open_tpm_package(&C, *id, keys, &mut again, expires).unwrap_err(),
                custos_proto::Error::Expired
            );
        }
        if let Ok((requester, kid)) = ties::open_receipt(&C, *id, keys, data) {
            let again = ties::seal_receipt(&C, *id, keys, requester, &kid).unwrap();
            assert_eq!(&again[..], data, "an accepted receipt is not canonical");
        }
        if let Ok((peer, kid)) = ties::open_notice(&C, *id, keys, data) {
            assert_eq!(data.len(), SIGNAL_LEN);
            let again = ties::seal_notice(&C, *id, keys, peer, &kid).unwrap();
            assert_eq!(&again[..], data, "an accepted notice is not canonical");
        }
        if let Ok((kid, why)) = ties::open_refusal(&C, *id, keys, data) {
            let again = ties::seal_refusal(&C, *id, keys, &kid, why).unwrap();
            assert_eq!(&again[..], data, "an accepted refusal is not canonical");
        }
    }

    // Key confirmation: N2 reads one as from N1, N1 reads one as from N2.
    let (l1, _) = links();
    let c1 = l1.confirm_to(&C, N2, NOW).unwrap();
    let mut p = links().1;
    if let Ok(answer) = p.accept_confirmation(&C, N1, data, NOW) {
        assert_eq!(data, c1, "a confirmation N1 did not send was accepted");
        let mut r = links().0;
        assert_eq!(
            r.accept_confirmation(&C, N2, &answer.unwrap(), NOW),
            Ok(None)
        );
    }
    let mut r = links().0;
    if let Ok(none) = r.accept_confirmation(&C, N2, data, NOW) {
        assert!(none.is_none());
        let mut q = links().1;
        let c2 = q.accept_confirmation(&C, N1, &c1, NOW).unwrap().unwrap();
        assert_eq!(data, c2, "a confirmation N2 did not send was accepted");
    }

    // A data message to N2, as from N1 (and, in the same link, as from N2 itself, which must fail).
    let (_, mut l2) = links();
    let mut buf = data.to_vec();
    if let Ok(plain) = l2.open(&C, N1, &mut buf, NOW) {
        let plain = plain.to_vec();
        let seq = u32::from_be_bytes(data[5..9].try_into().unwrap());
        if seq < 256 {
            let (mut s, _) = links();
            let mut out = vec![0u8; plain.len() + ties::DATA_OVERHEAD];
            for _ in 0..=seq {
                s.seal(&C, &plain, &mut out, NOW).unwrap();
            }
            assert_eq!(out, data, "an accepted data message is not what N1 seals");
        }
        let mut again = data.to_vec();
        assert!(
            l2.open(&C, N1, &mut again, NOW).is_err(),
            "a data message opened twice"
        );
    }
    let mut buf = data.to_vec();
    assert!(links().1.open(&C, N2, &mut buf, NOW).is_err());

    // Noise KK: N2 answers an Init as from N1; N1 reads a Reply to its Init.
    let (s1, s2) = (
        Secret::from_bytes([0x61; 32]),
        Secret::from_bytes([0x62; 32]),
    );
    let (p1, p2) = (C.x25519_public(&s1), C.x25519_public(&s2));
    if let Ok((k, reply)) = kk::respond(N2, &s2, N1, &p1, Secret::from_bytes([0xe2; 32]), data, NOW)
    {
        assert_eq!((data.len(), reply.len()), (kk::INIT_LEN, kk::REPLY_LEN));
        assert_eq!((k.requester(), k.peers()), (N1, &[N2][..]));
        assert!(u64::from(k.expires()) > NOW);
        assert!(u64::from(k.expires()) <= NOW + u64::from(ties::MAX_LIFETIME));
    }
    let (init, _) =
        kk::Initiator::start(N1, &s1, N2, &p2, Secret::from_bytes([0xe1; 32]), EXPIRES).unwrap();
    if let Ok(k) = init.finish(data) {
        assert_eq!(data.len(), kk::REPLY_LEN);
        assert_eq!(
            (k.requester(), k.peers(), k.expires()),
            (N1, &[N2][..], EXPIRES)
        );
        // Whoever answered holds the same key: it answers N1's confirmation.
        let (k2, _) = kk::respond(
            N2,
            &s2,
            N1,
            &p1,
            Secret::from_bytes([0xe2; 32]),
            &kk::Initiator::start(N1, &s1, N2, &p2, Secret::from_bytes([0xe1; 32]), EXPIRES)
                .unwrap()
                .1,
            NOW,
        )
        .unwrap();
        assert_eq!(k2.kid(), k.kid());
        let c = k.link(N1).unwrap().confirm_to(&C, N2, NOW).unwrap();
        k2.link(N2)
            .unwrap()
            .accept_confirmation(&C, N1, &c, NOW)
            .unwrap();
    }
});
