//! Pairing of the keeper with a device through the hub's relay, with honest parties and with attackers: a wrong
//! owner code, a relay that reads every byte or plays man in the middle, an init relayed to another device,
//! altered, replayed, malformed and truncated messages. Ends with the published vector of docs/wire.md §9.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicU8, Ordering};

use custos_proto::pairing::{
    DeviceAwaitingProvision, DevicePaired, KeeperAwaitingAccept, KeeperPaired, MAX_NODES,
    PAIR_ACCEPT_LEN, PAIR_INIT_LEN, PROVISION_ACK_LEN, PROVISION_OVERHEAD, Provision,
};
use custos_proto::{
    Crypto, DeviceId, Epoch, Error, MasterSecret, NodeId, NodeSecret, RustCrypto, Secret, Span,
    Suite, TreeSpec, UnixTime,
};

const DEVICE: DeviceId = DeviceId([0x02, 0, 0x5e, 0x10, 0, 0, 0, 7]);
const OTHER: DeviceId = DeviceId([0x02, 0, 0x5e, 0x10, 0, 0, 0, 8]);
const CODE: [u8; 16] = *b"fedcba9876543210";

/// Distinct ephemeral keys for every handshake the test runs.
fn fresh() -> Secret {
    static N: AtomicU8 = AtomicU8::new(1);
    let n = N.fetch_add(1, Ordering::Relaxed);
    Secret::from_bytes(core::array::from_fn(|i| {
        n.wrapping_mul(31).wrapping_add(i as u8)
    }))
}

fn date(y: i64, m: u32, d: u32) -> UnixTime {
    UnixTime::from_date(y, m, d).unwrap()
}

fn master() -> MasterSecret {
    MasterSecret::new(Secret::from_bytes([0x4d; 32]))
}

fn tree(device: DeviceId, epoch: u16, schedule: &str, from: UnixTime, until: UnixTime) -> TreeSpec {
    TreeSpec::new(
        device,
        Epoch(epoch),
        schedule.parse().unwrap(),
        Span::new(from, until).unwrap(),
    )
    .unwrap()
}

fn year(device: DeviceId, epoch: u16) -> TreeSpec {
    let y = 2025 + i64::from(epoch);
    tree(
        device,
        epoch,
        "month/week/day",
        date(y, 1, 1),
        date(y + 1, 1, 1),
    )
}

fn dpk(tree: &TreeSpec) -> NodeSecret {
    tree.root(&RustCrypto, &master()).unwrap()
}

/// The keeper's default: the frontier of `tree` at `now`.
fn frontier(tree: TreeSpec, now: UnixTime) -> Provision {
    let root = dpk(&tree);
    Provision::frontier(&RustCrypto, tree, Suite::AES256GCM, &[root], now).unwrap()
}

/// The DPK itself.
fn root_only(tree: TreeSpec) -> Provision {
    let root = dpk(&tree);
    Provision::new(tree, Suite::AES256GCM, vec![root]).unwrap()
}

/// Both sides after a pairing and its first Provision, and every relayed message.
struct Run {
    keeper: KeeperPaired,
    device: DevicePaired,
    opened: Provision,
    /// PairInit, PairAccept, Provision, ProvisionAck.
    relayed: [Vec<u8>; 4],
}

/// Pairs through an honest relay and delivers one Provision and its ack.
fn pair(
    keeper_code: &[u8; 16],
    device_code: &[u8; 16],
    provision: &Provision,
) -> Result<Run, Error> {
    let (keeper, init) = KeeperAwaitingAccept::start(DEVICE, keeper_code, fresh())?;
    let (device, accept) = DeviceAwaitingProvision::read_init(DEVICE, device_code, fresh(), &init)?;
    let mut keeper = keeper.read_accept(&accept)?;
    let sealed = keeper.seal_provision(provision)?;
    let (device, opened) = device.open_provision(&sealed)?;
    let ack = device.seal_ack()?;
    assert_eq!(keeper.open_ack(&ack)?, 1);
    Ok(Run {
        keeper,
        device,
        opened,
        relayed: [init, accept, sealed, ack],
    })
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn the_right_code_pairs_and_both_sides_get_the_same_key() {
    let provision = frontier(year(DEVICE, 1), date(2026, 3, 9));
    let run = pair(&CODE, &CODE, &provision).unwrap();
    assert_eq!(run.keeper.user_device_key(), run.device.user_device_key());
    assert_eq!(run.keeper.handshake_hash(), run.device.handshake_hash());
    assert_eq!(run.keeper.device(), DEVICE);
    assert_eq!(run.device.device(), DEVICE);
    assert_eq!(run.keeper.acknowledged(), 1);
    assert_eq!(run.opened, provision);

    // Bytes per message: 50, 49, 46 + 41 per node under month/week/day, 21.
    let n = provision.nodes().len();
    assert_eq!(
        n, 18,
        "days 9–14 of March, its weeks 3–5, April to December"
    );
    let sizes: Vec<usize> = run.relayed.iter().map(Vec::len).collect();
    assert_eq!(sizes, [50, 49, 46 + 41 * n, 21]);
    assert_eq!(
        [PAIR_INIT_LEN, PAIR_ACCEPT_LEN, PROVISION_ACK_LEN],
        [50, 49, 21]
    );
    assert_eq!(sizes[2], PROVISION_OVERHEAD + provision.encoded_len());
    assert_eq!(
        pair(&CODE, &CODE, &root_only(year(DEVICE, 1)))
            .unwrap()
            .relayed[2]
            .len(),
        87
    );

    // Forward secrecy: the same code and provision in a second session give another key.
    let again = pair(&CODE, &CODE, &provision).unwrap();
    assert_ne!(again.device.user_device_key(), run.device.user_device_key());
    assert_ne!(again.relayed[2], run.relayed[2]);
}

#[test]
fn a_wrong_owner_code_fails_on_the_device_at_pair_init() {
    let (_, init) = KeeperAwaitingAccept::start(DEVICE, &CODE, fresh()).unwrap();
    for i in 0..16 {
        let mut wrong = CODE;
        wrong[i] ^= 1;
        // The device refuses the init itself: it answers nothing, and no state exists to hold.
        assert_eq!(
            DeviceAwaitingProvision::read_init(DEVICE, &wrong, fresh(), &init).err(),
            Some(Error::Handshake),
            "code byte {i}"
        );
        // And a keeper with the wrong code is refused the same way.
        let (_, init) = KeeperAwaitingAccept::start(DEVICE, &wrong, fresh()).unwrap();
        assert_eq!(
            DeviceAwaitingProvision::read_init(DEVICE, &CODE, fresh(), &init).err(),
            Some(Error::Handshake)
        );
    }
    // A refusal changes nothing: the right init still pairs.
    let provision = root_only(year(DEVICE, 1));
    assert!(pair(&CODE, &CODE, &provision).is_ok());
    // The join code (admission) is another code, under another PSK label; using it here fails too.
    assert_eq!(
        pair(b"0123456789abcdef", &CODE, &provision).err(),
        Some(Error::Handshake)
    );
}

#[test]
fn the_relay_sees_every_byte_and_no_secret() {
    for provision in [
        root_only(year(DEVICE, 1)),
        frontier(year(DEVICE, 1), date(2026, 3, 9)),
    ] {
        let run = pair(&CODE, &CODE, &provision).unwrap();
        let relayed = run.relayed.concat();
        let root = dpk(provision.tree());
        let mut secrets: Vec<&[u8]> = vec![
            root.secret().expose(),
            run.keeper.user_device_key().expose(),
            &CODE,
        ];
        secrets.extend(provision.nodes().iter().map(|n| &n.secret().expose()[..]));
        for secret in secrets {
            for window in secret.windows(8) {
                assert!(
                    !contains(&relayed, window),
                    "8 secret bytes in the relayed messages"
                );
            }
        }
    }
}

#[test]
fn a_relay_in_the_middle_without_the_code_completes_neither_side() {
    let guess = [0u8; 16];
    let provision = root_only(year(DEVICE, 1));

    // Toward the device, the hub plays the keeper with its own ephemeral key.
    let (_, forged_init) = KeeperAwaitingAccept::start(DEVICE, &guess, fresh()).unwrap();
    assert_eq!(
        DeviceAwaitingProvision::read_init(DEVICE, &CODE, fresh(), &forged_init).err(),
        Some(Error::Handshake)
    );

    // Toward the keeper, the hub plays the device: it cannot read the real init...
    let (keeper, init) = KeeperAwaitingAccept::start(DEVICE, &CODE, fresh()).unwrap();
    assert_eq!(
        DeviceAwaitingProvision::read_init(DEVICE, &guess, fresh(), &init).err(),
        Some(Error::Handshake)
    );
    // ...and an accept from a session of its own, or made up, does not pass.
    let (_, own_init) = KeeperAwaitingAccept::start(DEVICE, &guess, fresh()).unwrap();
    let (_, own_accept) =
        DeviceAwaitingProvision::read_init(DEVICE, &guess, fresh(), &own_init).unwrap();
    assert_eq!(
        keeper.read_accept(&own_accept).err(),
        Some(Error::Handshake)
    );
    let (keeper, _) = KeeperAwaitingAccept::start(DEVICE, &CODE, fresh()).unwrap();
    let mut made_up = vec![0x22];
    made_up.extend_from_slice(&RustCrypto.x25519_public(&fresh()));
    made_up.extend_from_slice(&[0; 16]);
    assert_eq!(keeper.read_accept(&made_up).err(), Some(Error::Handshake));

    // Relaying the handshake honestly, the hub still cannot inject a Provision or an ack.
    let (keeper, init) = KeeperAwaitingAccept::start(DEVICE, &CODE, fresh()).unwrap();
    let (device, accept) =
        DeviceAwaitingProvision::read_init(DEVICE, &CODE, fresh(), &init).unwrap();
    let mut keeper = keeper.read_accept(&accept).unwrap();
    let real = keeper.seal_provision(&provision).unwrap();
    let mut forged = vec![0x23, 0, 0, 0, 1];
    forged.extend_from_slice(&real[5..]);
    forged[10] ^= 0x55;
    assert_eq!(device.open_provision(&forged).err(), Some(Error::Handshake));
    let forged_ack = [&[0x24, 0, 0, 0, 1][..], &[0; 16]].concat();
    assert_eq!(keeper.open_ack(&forged_ack), Err(Error::Handshake));
    assert_eq!(keeper.acknowledged(), 0);
}

#[test]
fn a_stolen_device_opens_no_provision_the_relay_recorded() {
    use aes_gcm::aead::{AeadInPlace, KeyInit};
    // The hub records a whole pairing; later a thief takes the device, with its owner code and user–device key.
    let provision = frontier(year(DEVICE, 1), date(2026, 3, 9));
    let run = pair(&CODE, &CODE, &provision).unwrap();
    let [init, _, sealed, _] = &run.relayed;
    let udk = run.device.user_device_key().clone();
    // The code only starts a new session: its keys open nothing of the recorded one.
    let (replayed, _) = DeviceAwaitingProvision::read_init(DEVICE, &CODE, fresh(), init).unwrap();
    assert_eq!(
        replayed.open_provision(sealed).err(),
        Some(Error::Handshake)
    );
    // Nor does the UDK, used directly or expanded with any of the protocol's labels.
    let mut candidates = vec![*udk.expose()];
    for label in [
        &b"custos/v1/provision"[..],
        b"custos/v1/provision-ack",
        b"custos/v1/user-device",
    ] {
        let mut k = [0u8; 32];
        hkdf::Hkdf::<sha2::Sha256>::from_prk(udk.expose())
            .unwrap()
            .expand(label, &mut k)
            .unwrap();
        candidates.push(k);
    }
    let nonce = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    let aad = [&[0x23][..], &DEVICE.0, &[0, 0, 0, 1]].concat();
    for key in candidates {
        let mut body = sealed[5..sealed.len() - 16].to_vec();
        let opened = aes_gcm::Aes256Gcm::new((&key).into()).decrypt_in_place_detached(
            (&nonce).into(),
            &aad,
            &mut body,
            sealed[sealed.len() - 16..].into(),
        );
        assert!(opened.is_err());
    }
}

#[test]
fn an_init_for_one_device_relayed_to_another_fails() {
    // Even when both devices had the same owner code, the device id in the prologue and the PSK binds the init.
    let (_, init) = KeeperAwaitingAccept::start(DEVICE, &CODE, fresh()).unwrap();
    assert_eq!(
        DeviceAwaitingProvision::read_init(OTHER, &CODE, fresh(), &init).err(),
        Some(Error::Handshake)
    );
    // An accept of the other device does not pass the keeper either.
    let (keeper, _) = KeeperAwaitingAccept::start(DEVICE, &CODE, fresh()).unwrap();
    let (_, other_init) = KeeperAwaitingAccept::start(OTHER, &CODE, fresh()).unwrap();
    let (_, other_accept) =
        DeviceAwaitingProvision::read_init(OTHER, &CODE, fresh(), &other_init).unwrap();
    assert_eq!(
        keeper.read_accept(&other_accept).err(),
        Some(Error::Handshake)
    );
    // The keeper seals only the paired device's tree.
    let run = pair(&CODE, &CODE, &root_only(year(DEVICE, 1))).unwrap();
    let mut keeper = run.keeper;
    assert_eq!(
        keeper.seal_provision(&root_only(year(OTHER, 1))),
        Err(Error::KeyMismatch)
    );
}

#[test]
fn every_altered_byte_is_refused() {
    let small = root_only(year(DEVICE, 1));
    let large = frontier(year(DEVICE, 1), date(2026, 3, 9));
    for delta in [0x01, 0x80] {
        // PairInit, read by a fresh device each time.
        let (_, init) = KeeperAwaitingAccept::start(DEVICE, &CODE, fresh()).unwrap();
        for at in 0..PAIR_INIT_LEN {
            let mut m = init.clone();
            m[at] ^= delta;
            let err = DeviceAwaitingProvision::read_init(DEVICE, &CODE, fresh(), &m).err();
            let expected = match at {
                0 => Error::UnexpectedMessage {
                    expected: 0x21,
                    got: 0x21 ^ delta,
                },
                1 => Error::UnsupportedVersion(1 ^ delta),
                _ => Error::Handshake,
            };
            assert_eq!(err, Some(expected), "PairInit byte {at}");
        }
        // PairAccept and the first Provision: every try costs a session, since both states are consumed.
        for at in 0..PAIR_ACCEPT_LEN {
            let (keeper, init) = KeeperAwaitingAccept::start(DEVICE, &CODE, fresh()).unwrap();
            let (_, mut accept) =
                DeviceAwaitingProvision::read_init(DEVICE, &CODE, fresh(), &init).unwrap();
            accept[at] ^= delta;
            assert!(keeper.read_accept(&accept).is_err(), "PairAccept byte {at}");
        }
        let len = PROVISION_OVERHEAD + small.encoded_len();
        for at in 0..len {
            let (keeper, init) = KeeperAwaitingAccept::start(DEVICE, &CODE, fresh()).unwrap();
            let (device, accept) =
                DeviceAwaitingProvision::read_init(DEVICE, &CODE, fresh(), &init).unwrap();
            let mut sealed = keeper
                .read_accept(&accept)
                .unwrap()
                .seal_provision(&small)
                .unwrap();
            assert_eq!(sealed.len(), len);
            sealed[at] ^= delta;
            assert!(
                device.open_provision(&sealed).is_err(),
                "Provision byte {at}"
            );
        }
        // A later Provision and its ack: a refusal changes nothing, so one session serves every try.
        let Run {
            mut keeper,
            mut device,
            ..
        } = pair(&CODE, &CODE, &small).unwrap();
        let sealed = keeper.seal_provision(&large).unwrap();
        for at in 0..sealed.len() {
            let mut m = sealed.clone();
            m[at] ^= delta;
            assert!(
                device.open_provision(&m).is_err(),
                "later Provision byte {at}"
            );
        }
        assert_eq!(device.open_provision(&sealed).unwrap(), large);
        let ack = device.seal_ack().unwrap();
        for at in 0..ack.len() {
            let mut m = ack.clone();
            m[at] ^= delta;
            assert!(keeper.open_ack(&m).is_err(), "ProvisionAck byte {at}");
        }
        assert_eq!(keeper.open_ack(&ack), Ok(2));
    }
}

#[test]
fn replayed_provisions_and_acks_are_refused() {
    let first = root_only(year(DEVICE, 1));
    let Run {
        mut keeper,
        mut device,
        relayed,
        ..
    } = pair(&CODE, &CODE, &first).unwrap();
    let [_, _, p1, a1] = relayed;

    // Within the session: the same Provision again, and an older one after a newer.
    assert_eq!(
        device.open_provision(&p1),
        Err(Error::Handshake),
        "replayed Provision 1"
    );
    assert_eq!(
        keeper.open_ack(&a1),
        Err(Error::Handshake),
        "replayed ack 1"
    );
    let p2 = keeper.seal_provision(&first).unwrap();
    assert_ne!(p2, p1, "a re-send is a new message");
    let p3 = keeper
        .seal_provision(&frontier(year(DEVICE, 1), date(2026, 6, 1)))
        .unwrap();
    assert!(device.open_provision(&p3).is_ok());
    assert_eq!(
        device.open_provision(&p2),
        Err(Error::Handshake),
        "older than the last accepted"
    );
    let a3 = device.seal_ack().unwrap();
    assert_eq!(
        device.seal_ack().unwrap(),
        a3,
        "the ack can be sent again, byte for byte"
    );
    assert_eq!(keeper.open_ack(&a3), Ok(3));
    assert_eq!(
        keeper.open_ack(&a3),
        Err(Error::Handshake),
        "replayed ack 3"
    );
    assert_eq!(keeper.acknowledged(), 3);

    // Across sessions: the old session's messages fail under the new session's keys.
    let (new_keeper, init) = KeeperAwaitingAccept::start(DEVICE, &CODE, fresh()).unwrap();
    let (new_device, accept) =
        DeviceAwaitingProvision::read_init(DEVICE, &CODE, fresh(), &init).unwrap();
    let mut new_keeper = new_keeper.read_accept(&accept).unwrap();
    new_keeper.seal_provision(&first).unwrap();
    assert_eq!(
        new_keeper.open_ack(&a1),
        Err(Error::Handshake),
        "ack of another session"
    );
    assert_eq!(
        new_device.open_provision(&p1).err(),
        Some(Error::Handshake),
        "Provision of another session"
    );

    // A replayed PairInit gets an answer, but the session cannot complete: no Provision opens in it.
    let (_, init) = KeeperAwaitingAccept::start(DEVICE, &CODE, fresh()).unwrap();
    let (replayed, _) = DeviceAwaitingProvision::read_init(DEVICE, &CODE, fresh(), &init).unwrap();
    assert_eq!(replayed.open_provision(&p1).err(), Some(Error::Handshake));
}

#[test]
fn rotation_is_a_fresh_session_with_the_same_code() {
    // Epoch 1 in 2026, then the keeper rotates to epoch 2 for 2027 in a new session.
    let one = frontier(year(DEVICE, 1), date(2026, 3, 9));
    let first = pair(&CODE, &CODE, &one).unwrap();
    let two = frontier(year(DEVICE, 2), date(2026, 12, 20));
    let mut second = pair(&CODE, &CODE, &two).unwrap();
    assert_eq!(second.opened, two);
    assert_eq!(second.opened.tree().epoch(), Epoch(2));
    assert_ne!(
        first.device.user_device_key(),
        second.device.user_device_key(),
        "the new session's user–device key replaces the old one"
    );
    // The new DPK derives the same leaf keys on both sides; the old session opens nothing of the new.
    let t = date(2027, 2, 2);
    let spec = *two.tree();
    let leaf = spec.leaf_at(t).unwrap();
    let holder = spec
        .holder(second.opened.nodes(), spec.leaf_node(leaf))
        .unwrap()
        .unwrap();
    assert_eq!(
        spec.leaf_key_bytes(&RustCrypto, holder, leaf, Suite::AES256GCM)
            .unwrap(),
        spec.leaf_key_bytes(&RustCrypto, &dpk(&spec), leaf, Suite::AES256GCM)
            .unwrap()
    );
    let mut old_device = first.device;
    assert_eq!(
        old_device.open_provision(&second.relayed[2]),
        Err(Error::Handshake)
    );
    // The new session may carry more than one Provision, each with a higher counter.
    let again = second.keeper.seal_provision(&two).unwrap();
    assert_eq!(second.device.open_provision(&again).unwrap(), two);
    assert_eq!(
        second.keeper.open_ack(&second.device.seal_ack().unwrap()),
        Ok(2)
    );
}

#[test]
fn malformed_messages_get_precise_errors() {
    let device = |m: &[u8]| DeviceAwaitingProvision::read_init(DEVICE, &CODE, fresh(), m).err();
    assert_eq!(device(&[]), Some(Error::Truncated));
    assert_eq!(
        device(&[0x22; 50]),
        Some(Error::UnexpectedMessage {
            expected: 0x21,
            got: 0x22
        })
    );
    assert_eq!(device(&[0x21]), Some(Error::Truncated));
    assert_eq!(device(&[0x21, 0x02]), Some(Error::UnsupportedVersion(2)));
    assert_eq!(device(&[0x21, 0x01, 0]), Some(Error::Truncated));
    let (_, init) = KeeperAwaitingAccept::start(DEVICE, &CODE, fresh()).unwrap();
    assert_eq!(device(&init[..49]), Some(Error::Truncated));
    assert_eq!(
        device(&[&init[..], &[0]].concat()),
        Some(Error::TrailingBytes)
    );

    let keeper = |m: &[u8]| {
        let (k, _) = KeeperAwaitingAccept::start(DEVICE, &CODE, fresh()).unwrap();
        k.read_accept(m).err()
    };
    assert_eq!(keeper(&[]), Some(Error::Truncated));
    assert_eq!(
        keeper(&[0x21; 49]),
        Some(Error::UnexpectedMessage {
            expected: 0x22,
            got: 0x21
        })
    );
    assert_eq!(keeper(&[0x22; 48]), Some(Error::Truncated));
    assert_eq!(keeper(&[0x22; 50]), Some(Error::TrailingBytes));

    let Run {
        mut keeper,
        mut device,
        relayed,
        ..
    } = pair(&CODE, &CODE, &root_only(year(DEVICE, 1))).unwrap();
    assert_eq!(device.open_provision(&[]), Err(Error::Truncated));
    assert_eq!(
        device.open_provision(&relayed[3]),
        Err(Error::UnexpectedMessage {
            expected: 0x23,
            got: 0x24
        })
    );
    assert_eq!(device.open_provision(&[0x23; 20]), Err(Error::Truncated));
    assert_eq!(keeper.open_ack(&[]), Err(Error::Truncated));
    assert_eq!(
        keeper.open_ack(&relayed[2]),
        Err(Error::UnexpectedMessage {
            expected: 0x24,
            got: 0x23
        })
    );
    assert_eq!(keeper.open_ack(&relayed[3][..20]), Err(Error::Truncated));
    assert_eq!(
        keeper.open_ack(&[&relayed[3][..], &[0]].concat()),
        Err(Error::TrailingBytes)
    );
    // An ack of a Provision never sent.
    let mut ahead = relayed[3].clone();
    ahead[4] = 9;
    assert_eq!(keeper.open_ack(&ahead), Err(Error::Handshake));
}

#[test]
fn malformed_provision_bodies_get_precise_errors() {
    let provision = frontier(year(DEVICE, 1), date(2026, 12, 27));
    let mut body = Vec::new();
    provision.encode(&mut body).unwrap();
    assert_eq!(body.len(), provision.encoded_len());
    assert_eq!(Provision::decode(DEVICE, &body).unwrap(), provision);
    // epoch 0..2, schedule 2..6 (03 02 03 04), from 6..14, until 14..22, suite 22, count 23..25, nodes 25..
    let patched = |at: usize, bytes: &[u8]| {
        let mut b = body.clone();
        b[at..at + bytes.len()].copy_from_slice(bytes);
        Provision::decode(DEVICE, &b).err()
    };
    assert_eq!(patched(22, &[3]), Some(Error::UnsupportedSuite(3)));
    assert_eq!(patched(22, &[0]), Some(Error::UnsupportedSuite(0)));
    assert_eq!(
        patched(2, &[0]),
        Some(Error::Schedule(
            custos_proto::schedule::ScheduleError::Empty
        ))
    );
    assert_eq!(
        patched(2, &[3, 4, 3, 2]).map(|e| matches!(e, Error::Schedule(_))),
        Some(true)
    );
    assert_eq!(
        patched(13, &[1]).map(|e| matches!(e, Error::NotAligned { .. })),
        Some(true)
    );
    assert_eq!(
        patched(14, &date(2025, 1, 1).secs().to_be_bytes()),
        Some(Error::EmptySpan)
    );
    assert_eq!(
        patched(6, &u64::MAX.to_be_bytes()),
        Some(Error::TimeOutOfRange)
    );
    assert_eq!(
        patched(23, &[0, 0]),
        Some(Error::TrailingBytes),
        "count 0 with nodes after it"
    );
    assert_eq!(patched(23, &[0, 2]), Some(Error::TrailingBytes));
    assert_eq!(patched(23, &[0, 4]), Some(Error::Truncated));
    assert_eq!(
        patched(23, &(MAX_NODES as u16 + 1).to_be_bytes()),
        Some(Error::InvalidValue(
            "a Provision carries at most 1024 node secrets"
        ))
    );
    assert_eq!(
        patched(25, &[9]),
        Some(Error::InvalidNode),
        "depth beyond the schedule"
    );
    assert_eq!(
        patched(26, &[0; 8]),
        Some(Error::OutsideEpoch),
        "a day of 1970"
    );
    assert_eq!(
        patched(25 + 41, &body[25..25 + 9]),
        Some(Error::InvalidValue(
            "Provision nodes must be in time order and must not overlap"
        ))
    );
    assert_eq!(
        Provision::decode(DEVICE, &body[..body.len() - 1]).err(),
        Some(Error::Truncated)
    );
    assert_eq!(
        Provision::decode(DEVICE, &body[..20]).err(),
        Some(Error::Truncated)
    );
    assert_eq!(Provision::decode(DEVICE, &[]).err(), Some(Error::Truncated));
    assert_eq!(
        Provision::decode(DEVICE, &[&body[..], &[0]].concat()).err(),
        Some(Error::TrailingBytes)
    );
    let mut empty = body[..25].to_vec();
    empty[23..25].copy_from_slice(&[0, 0]);
    assert_eq!(
        Provision::decode(DEVICE, &empty).err(),
        Some(Error::InvalidValue(
            "a Provision carries at least one node secret"
        ))
    );

    // The same checks guard what the keeper builds.
    let spec = year(DEVICE, 1);
    let root = dpk(&spec);
    assert_eq!(
        Provision::new(spec, Suite::from_code(7), vec![root.clone()]),
        Err(Error::UnsupportedSuite(7))
    );
    let month = spec
        .derive(
            &RustCrypto,
            &root,
            NodeId {
                depth: 1,
                index: 674,
            },
        )
        .unwrap();
    assert_eq!(
        Provision::new(spec, Suite::AES256GCM, vec![root, month]).err(),
        Some(Error::InvalidValue(
            "Provision nodes must be in time order and must not overlap"
        ))
    );
    assert_eq!(
        Provision::frontier(
            &RustCrypto,
            spec,
            Suite::AES256GCM,
            &[dpk(&spec)],
            date(2027, 1, 1)
        )
        .err(),
        Some(Error::InvalidValue(
            "a Provision carries at least one node secret"
        )),
        "nothing to provision after the epoch"
    );
}

#[test]
fn provision_round_trips_the_tree_and_nodes_exactly() {
    let cases = [
        ("month/week/day", date(2026, 1, 1), date(2027, 1, 1)),
        ("day/6h/15m", date(2026, 3, 1), date(2026, 3, 8)),
        ("year/month/day/hour", date(2026, 1, 1), date(2028, 1, 1)),
        ("month/week/day", date(2026, 3, 10), date(2026, 6, 1)),
    ];
    let mut run = pair(&CODE, &CODE, &root_only(year(DEVICE, 1))).unwrap();
    let mut counter = 1;
    for (schedule, from, until) in cases {
        for suite in [Suite::AES256GCM, Suite::CHACHA20POLY1305] {
            let spec = tree(DEVICE, 3, schedule, from, until);
            let root = dpk(&spec);
            let mut provisions = vec![Provision::new(spec, suite, vec![root.clone()]).unwrap()];
            for days in [0, 1, 9, 13, 40, 200] {
                let now = UnixTime::new(from.secs() + days * 86_400 + 3_600).unwrap();
                if now < until {
                    provisions.push(
                        Provision::frontier(
                            &RustCrypto,
                            spec,
                            suite,
                            std::slice::from_ref(&root),
                            now,
                        )
                        .unwrap(),
                    );
                }
            }
            for p in provisions {
                let sealed = run.keeper.seal_provision(&p).unwrap();
                assert_eq!(sealed.len(), PROVISION_OVERHEAD + p.encoded_len());
                let opened = run.device.open_provision(&sealed).unwrap();
                assert_eq!(opened, p, "{schedule}");
                assert_eq!(opened.tree(), &spec);
                assert_eq!(opened.suite(), suite);
                counter += 1;
                assert_eq!(
                    run.keeper.open_ack(&run.device.seal_ack().unwrap()),
                    Ok(counter)
                );
                // What the device keeps seals the keys the keeper derives from the DPK.
                let nodes = opened.into_nodes();
                let last = UnixTime::new(until.secs() - 1).unwrap();
                let leaf = spec.leaf_at(last).unwrap();
                let holder = spec.holder(&nodes, spec.leaf_node(leaf)).unwrap().unwrap();
                assert_eq!(
                    spec.leaf_key_bytes(&RustCrypto, holder, leaf, suite)
                        .unwrap(),
                    spec.leaf_key_bytes(&RustCrypto, &root, leaf, suite)
                        .unwrap()
                );
            }
        }
    }
}

/// snow wants an RNG even when the ephemeral key is fixed; this one is never asked for bytes.
struct NoRng;

impl snow::types::Random for NoRng {
    fn try_fill_bytes(&mut self, _: &mut [u8]) -> Result<(), snow::Error> {
        Err(snow::Error::Rng)
    }
}

impl snow::resolvers::CryptoResolver for NoRng {
    fn resolve_rng(&self) -> Option<Box<dyn snow::types::Random>> {
        Some(Box::new(NoRng))
    }
    fn resolve_dh(&self, _: &snow::params::DHChoice) -> Option<Box<dyn snow::types::Dh>> {
        None
    }
    fn resolve_hash(&self, _: &snow::params::HashChoice) -> Option<Box<dyn snow::types::Hash>> {
        None
    }
    fn resolve_cipher(
        &self,
        _: &snow::params::CipherChoice,
    ) -> Option<Box<dyn snow::types::Cipher>> {
        None
    }
}

/// Vector 6 of docs/wire.md §9, recomputed two ways: by this crate, and from the document alone (snow for the Noise
/// handshake, HKDF and AES-GCM by hand).
#[test]
fn vector_6_pairing() {
    use aes_gcm::aead::{AeadInPlace, KeyInit};
    let h = |b: &[u8]| hex::encode(b);
    let device: DeviceId = "00-11-22-33-44-55-66-77".parse().unwrap();
    let code = *b"0123456789abcdef";
    let keeper_e = Secret::from_bytes([0xe1; 32]);
    let device_e = Secret::from_bytes([0xe2; 32]);
    let master = MasterSecret::new(Secret::from_bytes(core::array::from_fn(|i| i as u8)));
    let spec = tree(
        device,
        1,
        "month/week/day",
        date(2026, 1, 1),
        date(2027, 1, 1),
    );
    let root = spec.root(&RustCrypto, &master).unwrap();
    let provision = Provision::frontier(
        &RustCrypto,
        spec,
        Suite::AES256GCM,
        &[root],
        date(2026, 12, 27),
    )
    .unwrap();

    let (keeper, init) = KeeperAwaitingAccept::start(device, &code, keeper_e).unwrap();
    let (waiting, accept) =
        DeviceAwaitingProvision::read_init(device, &code, device_e, &init).unwrap();
    let mut keeper = keeper.read_accept(&accept).unwrap();
    let sealed = keeper.seal_provision(&provision).unwrap();
    let (paired, _) = waiting.open_provision(&sealed).unwrap();
    let ack = paired.seal_ack().unwrap();
    let mut body = Vec::new();
    provision.encode(&mut body).unwrap();

    // From the document: PSK, prologue, Noise with fixed ephemeral keys, then the key schedule.
    let prk = hkdf::Hkdf::<sha2::Sha256>::extract(Some(b"custos/v1/owner-psk"), &code).0;
    let mut psk = [0u8; 32];
    hkdf::Hkdf::<sha2::Sha256>::from_prk(&prk)
        .unwrap()
        .expand(&device.0, &mut psk)
        .unwrap();
    let prologue = [&b"custos/v1/pairing"[..], &device.0].concat();
    let noise = |e: &[u8; 32], initiator: bool| {
        let resolver = snow::resolvers::FallbackResolver::new(
            Box::new(NoRng),
            Box::new(snow::resolvers::DefaultResolver),
        );
        let params = "Noise_NNpsk0_25519_AESGCM_SHA256".parse().unwrap();
        let b = snow::Builder::with_resolver(params, Box::new(resolver))
            .prologue(&prologue)
            .unwrap()
            .psk(0, &psk)
            .unwrap()
            .fixed_ephemeral_key_for_testing_only(e);
        if initiator {
            b.build_initiator()
        } else {
            b.build_responder()
        }
        .unwrap()
    };
    let mut ki = noise(&[0xe1; 32], true);
    let mut dr = noise(&[0xe2; 32], false);
    let mut buf = [0u8; 64];
    let n = ki.write_message(&[], &mut buf).unwrap();
    assert_eq!([&[0x21, 0x01][..], &buf[..n]].concat(), init);
    dr.read_message(&buf[..n], &mut [0u8; 64]).unwrap();
    let n = dr.write_message(&[], &mut buf).unwrap();
    assert_eq!([&[0x22][..], &buf[..n]].concat(), accept);
    ki.read_message(&buf[..n], &mut [0u8; 64]).unwrap();
    let hh = ki.get_handshake_hash().to_vec();
    assert_eq!(&hh[..], paired.handshake_hash());
    let (k1, k2) = ki.dangerously_get_raw_split();
    let s = hkdf::Hkdf::<sha2::Sha256>::extract(Some(&hh), &[k1, k2].concat()).0;
    let expand = |label: &[u8]| {
        let mut out = [0u8; 32];
        hkdf::Hkdf::<sha2::Sha256>::from_prk(&s)
            .unwrap()
            .expand(label, &mut out)
            .unwrap();
        out
    };
    let udk = expand(b"custos/v1/user-device");
    let k_prov = expand(b"custos/v1/provision");
    let k_ack = expand(b"custos/v1/provision-ack");
    assert_eq!(&udk, keeper.user_device_key().expose());
    let aad = |t: u8| [&[t][..], &device.0, &[0, 0, 0, 1]].concat();
    let nonce = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    let mut plain = sealed[5..sealed.len() - 16].to_vec();
    aes_gcm::Aes256Gcm::new((&k_prov).into())
        .decrypt_in_place_detached(
            (&nonce).into(),
            &aad(0x23),
            &mut plain,
            sealed[sealed.len() - 16..].into(),
        )
        .unwrap();
    assert_eq!(plain, body);
    let tag = aes_gcm::Aes256Gcm::new((&k_ack).into())
        .encrypt_in_place_detached((&nonce).into(), &aad(0x24), &mut [])
        .unwrap();
    assert_eq!([&[0x24, 0, 0, 0, 1][..], &tag].concat(), ack);

    let expected = [
        (
            h(&prk),
            "5adfc7b2d99c84d032e244b4864346effc0df1d261f0f7a5010c1edcda857137",
        ),
        (
            h(&psk),
            "2462e56999a7814655f0b70bfe7114a2f6547414f8dadae6b62f67db3ebe9322",
        ),
        (
            h(&prologue),
            "637573746f732f76312f70616972696e670011223344556677",
        ),
        (h(&init), INIT),
        (h(&accept), ACCEPT),
        (
            h(&hh),
            "d1a3a3c2b3df0285faac9a2fc3c4b869c6daab1301aace7dfa8b993ba8a99b15",
        ),
        (
            h(&k1),
            "f8ea80c5b2b33648ecd54f116ec76432b156c56fb34c8b83cb571571d7f46ac6",
        ),
        (
            h(&k2),
            "29c25386e49d23eb9c846ea16030e5c890cf71b3135bf60e7ac30239fbca248e",
        ),
        (
            h(&s),
            "80fda2c5b15bfdf123dbc2305ca6da1f8bab05846374207fcf636a3724cb3e8f",
        ),
        (
            h(&udk),
            "8f88eaf8dd56d7b0e8115c620510813869070597adf5678b5646e4ae7959bf1b",
        ),
        (
            h(&k_prov),
            "3a0ad2ce03e41945f562a8636ebbbe2e5a46370df05683b634499cd744625a98",
        ),
        (
            h(&k_ack),
            "295b90cc56dd8ee8cf348ca911b443d97c6d50fc91b47e8c8b1dfd94a7044bec",
        ),
        (h(&body), BODY),
        (h(&sealed), PROVISION),
        (h(&ack), "24000000013f75821b85ffcaeed8c2f98cc1bbb389"),
    ];
    // docs/wire.md prints each value on one or more lines of hex; without whitespace, each must appear there.
    let doc: String = include_str!("../../../docs/wire.md")
        .split_whitespace()
        .collect();
    for (got, want) in expected {
        assert_eq!(got, want);
        assert!(doc.contains(want), "docs/wire.md §9 lacks {want}");
    }
    assert_eq!(sealed.len(), 169);
}

const INIT: &str = concat!(
    "2101",
    "4c2817a9d668ed844d2f95b93b69ecb8485095783a015a424164b0d09702894f",
    "89acc0215b1fdae249b5e166a85f8fa4",
);
const ACCEPT: &str = concat!(
    "22",
    "19d80204bf85f3e1118e1b23410c88f0d0eeced5156f4c5bdf347b14ed7ec63f",
    "ffeb681a476573e7d387b7468a29cd9d",
);
const BODY: &str = concat!(
    "0001",
    "03020304",
    "000000006955b900",
    "000000006b36ec80",
    "01",
    "0003",
    "03000000000000514e67417def76ed0444a3f091d86775c0021501ee16ade99fa8da396c4d64a68e2d",
    "03000000000000514f6ff603602506c1c06468b175f21c1eafd421dd0f8abf499cfac39bb4174ca821",
    "020000000000000d5ba58b34e2321c983a39bcd32aaf02091a04f95d9a12b5bb537346878b99384e81",
);
const PROVISION: &str = concat!(
    "2300000001",
    "56cd18e767219302ea04685adc6db87b23913af9e42012cc1c6b5871ee1f6dcb",
    "6366ba0360b938925ffaa55d59a72a9a760da169190a679f1d656780b2b6cd3e",
    "276fda25765ba391afcd8e0292cbb62a1b38dcd0051c76b8a7da307ce36444a7",
    "631fa2d8412979dd017ad573409f8c38d145f1e4e6269a7d46fbdb54ce1c4133",
    "bed9f4e3e9e78f57aea342e8d7f46d0b2df5222a4882ce764b66c426737fcb93",
    "6125afc9",
);
