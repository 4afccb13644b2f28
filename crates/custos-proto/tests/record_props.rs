//! Properties of sealed records: seal/open round-trips for both suites, the 39-byte overhead, rejection of
//! every single-byte change, of truncation and of keys for another leaf, suite, device or epoch, and the
//! `Opener` granting exactly the leaves under the secrets it holds.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use custos_proto::record::{HEADER_LEN, OVERHEAD};
use custos_proto::time::DAY;
use custos_proto::{
    Crypto, DeviceId, Epoch, Error, LeafKey, MasterSecret, NodeSecret, Opener, RecordHeader,
    RustCrypto, Schedule, Secret, Span, Suite, TreeSpec, UnixTime,
};
use proptest::prelude::*;

const DEVICE: DeviceId = DeviceId([0xd0, 0x0d, 0xfe, 0xed, 0x00, 0x00, 0x00, 0x01]);
const OTHER_DEVICE: DeviceId = DeviceId([0xd0, 0x0d, 0xfe, 0xed, 0x00, 0x00, 0x00, 0x02]);
const EPOCH: Epoch = Epoch(7);
const SUITES: [Suite; 2] = [Suite::AES256GCM, Suite::CHACHA20POLY1305];

fn date(y: i64, m: u32, d: u32) -> UnixTime {
    UnixTime::from_date(y, m, d).unwrap()
}

fn master() -> MasterSecret {
    MasterSecret::new(Secret::from_bytes([0x6d; 32]))
}

/// month/week/day over the year 2026.
fn spec_for(device: DeviceId, epoch: Epoch) -> TreeSpec {
    let span = Span::new(date(2026, 1, 1), date(2027, 1, 1)).unwrap();
    TreeSpec::new(device, epoch, Schedule::default(), span).unwrap()
}

fn spec() -> TreeSpec {
    spec_for(DEVICE, EPOCH)
}

fn root(spec: &TreeSpec) -> NodeSecret {
    spec.root(&RustCrypto, &master()).unwrap()
}

/// The leaf period index of day `day` (0-based) of 2026.
fn leaf_of_day(spec: &TreeSpec, day: u64) -> u32 {
    spec.leaf_at(UnixTime::new(date(2026, 1, 1).secs() + day * DAY).unwrap())
        .unwrap()
}

fn key(spec: &TreeSpec, leaf: u32, suite: Suite) -> LeafKey<RustCrypto> {
    spec.leaf_key(&RustCrypto, &root(spec), leaf, suite)
        .unwrap()
}

fn seal(key: &LeafKey<RustCrypto>, nonce: [u8; 8], plaintext: &[u8]) -> Vec<u8> {
    let mut record = vec![0u8; plaintext.len() + OVERHEAD];
    let n = key
        .seal(&RustCrypto, nonce, plaintext, &mut record)
        .unwrap();
    assert_eq!(n, record.len());
    record
}

fn suite_strategy() -> impl Strategy<Value = Suite> {
    prop::sample::select(&SUITES[..])
}

/// What opening `record` with byte `i` changed must fail with, for a key that matches the original header.
fn expected_error(i: usize, tampered: &[u8]) -> Error {
    match i {
        0 => {
            let (version, suite) = (tampered[0] >> 4, tampered[0] & 0x0f);
            if version != 1 {
                Error::UnsupportedVersion(version)
            } else if !Suite::from_code(suite).is_known() {
                Error::UnsupportedSuite(suite)
            } else {
                Error::KeyMismatch // the other known suite
            }
        }
        // Device, epoch or leaf changed: the header names another key.
        1..15 => Error::KeyMismatch,
        // Nonce, ciphertext or tag changed.
        _ => Error::Authentication,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn seal_open_round_trip(
        plaintext in prop::collection::vec(any::<u8>(), 0..512),
        suite in suite_strategy(),
        day in 0u64..365,
        nonce in any::<[u8; 8]>(),
    ) {
        let c = RustCrypto;
        let spec = spec();
        let leaf = leaf_of_day(&spec, day);
        let k = key(&spec, leaf, suite);
        prop_assert_eq!((k.leaf(), k.suite()), (leaf, suite));

        // Too small an output buffer says how much is needed.
        let mut short = vec![0u8; plaintext.len() + OVERHEAD - 1];
        prop_assert_eq!(
            k.seal(&c, nonce, &plaintext, &mut short),
            Err(Error::BufferTooSmall { needed: plaintext.len() + OVERHEAD })
        );

        let record = seal(&k, nonce, &plaintext);
        prop_assert_eq!(OVERHEAD, 39);
        prop_assert_eq!(record.len() - plaintext.len(), 39, "overhead");
        let header = RecordHeader::peek(&record).unwrap();
        prop_assert_eq!(header, RecordHeader { suite, device: DEVICE, epoch: EPOCH, leaf, nonce });
        prop_assert_eq!(&record[..HEADER_LEN], &header.encode()[..]);
        prop_assert_eq!(record[0], 0x10 | suite.code());
        if plaintext.len() >= 16 {
            prop_assert_ne!(&record[HEADER_LEN..HEADER_LEN + plaintext.len()], &plaintext[..], "not encrypted");
        }

        // Open into an exact buffer, a larger one, in place, with a freshly derived key, and through an Opener.
        let mut out = vec![0u8; plaintext.len()];
        prop_assert_eq!(k.open(&c, &record, &mut out), Ok(plaintext.len()));
        prop_assert_eq!(&out, &plaintext);
        let mut big = vec![0u8; plaintext.len() + 10];
        prop_assert_eq!(key(&spec, leaf, suite).open(&c, &record, &mut big), Ok(plaintext.len()));
        prop_assert_eq!(&big[..plaintext.len()], &plaintext[..]);
        let mut in_place = record.clone();
        prop_assert_eq!(k.open_in_place(&c, &mut in_place).unwrap(), &plaintext[..]);
        let held = [root(&spec)];
        let mut opener = Opener::new(&c, &spec, &held);
        let mut out = vec![0u8; plaintext.len()];
        prop_assert_eq!(opener.open(&record, &mut out), Ok((header, plaintext.len())));
        prop_assert_eq!(&out, &plaintext);
        if !plaintext.is_empty() {
            let mut small = vec![0u8; plaintext.len() - 1];
            prop_assert_eq!(k.open(&c, &record, &mut small), Err(Error::BufferTooSmall { needed: plaintext.len() }));
        }
    }

}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Any single-byte change anywhere in a record makes it fail to open, with the error of the field changed,
    /// and releases nothing: the output buffer stays all-zero, an in-place buffer keeps the altered record.
    #[test]
    fn every_single_byte_change_is_rejected(
        plaintext in prop::collection::vec(any::<u8>(), 0..48),
        suite in suite_strategy(),
        day in 0u64..365,
        nonce in any::<[u8; 8]>(),
        xors in prop::collection::vec(1u8..=255, 48 + OVERHEAD),
    ) {
        let c = RustCrypto;
        let spec = spec();
        let k = key(&spec, leaf_of_day(&spec, day), suite);
        let record = seal(&k, nonce, &plaintext);
        let held = [root(&spec)];
        let mut opener = Opener::new(&c, &spec, &held);
        for i in 0..record.len() {
            let mut tampered = record.clone();
            tampered[i] ^= xors[i];
            let expected = expected_error(i, &tampered);

            let mut out = vec![0u8; plaintext.len()];
            prop_assert_eq!(k.open(&c, &tampered, &mut out), Err(expected), "byte {} ^= {:#04x}", i, xors[i]);
            prop_assert!(out.iter().all(|&b| b == 0), "byte {i}: output buffer not all-zero: {out:02x?}");
            if expected == Error::Authentication {
                // Even a buffer full of other data is wiped (the ciphertext was copied into it before the check).
                let mut dirty = vec![0xa5u8; plaintext.len()];
                prop_assert_eq!(k.open(&c, &tampered, &mut dirty), Err(expected));
                prop_assert!(dirty.iter().all(|&b| b == 0), "byte {i}: output buffer not wiped: {dirty:02x?}");
            }

            let mut in_place = tampered.clone();
            prop_assert_eq!(k.open_in_place(&c, &mut in_place).err(), Some(expected), "in place, byte {}", i);
            prop_assert_eq!(&in_place, &tampered, "in place, byte {}: the record was modified", i);

            // Through an Opener holding the root, it fails too (a changed leaf names another key, which then
            // fails authentication or lies outside the epoch).
            let mut out = vec![0u8; plaintext.len()];
            prop_assert!(opener.open(&tampered, &mut out).is_err(), "opener, byte {}", i);
            prop_assert!(out.iter().all(|&b| b == 0));
        }
        // The untouched record still opens: the failures above came from the changes.
        let mut out = vec![0u8; plaintext.len()];
        prop_assert_eq!(k.open(&c, &record, &mut out), Ok(plaintext.len()));
        prop_assert_eq!(out, plaintext);
    }

}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn truncated_and_extended_records_are_rejected(
        plaintext in prop::collection::vec(any::<u8>(), 0..40),
        suite in suite_strategy(),
        nonce in any::<[u8; 8]>(),
        extra in 1u8..=255,
    ) {
        let c = RustCrypto;
        let spec = spec();
        let k = key(&spec, leaf_of_day(&spec, 100), suite);
        let record = seal(&k, nonce, &plaintext);
        for cut in 0..record.len() {
            // Shorter than header + tag: truncated. Longer: it parses as a shorter record, whose tag is wrong.
            let expected = if cut < OVERHEAD { Error::Truncated } else { Error::Authentication };
            let mut out = vec![0u8; plaintext.len()];
            prop_assert_eq!(k.open(&c, &record[..cut], &mut out), Err(expected), "cut to {} bytes", cut);
            prop_assert!(out.iter().all(|&b| b == 0));
            let mut in_place = record[..cut].to_vec();
            prop_assert_eq!(k.open_in_place(&c, &mut in_place).err(), Some(expected), "in place, cut to {}", cut);
            if cut < OVERHEAD {
                prop_assert_eq!(RecordHeader::peek(&record[..cut]), Err(Error::Truncated));
            }
        }
        let mut longer = record.clone();
        longer.push(extra);
        let mut out = vec![0u8; plaintext.len() + 1];
        prop_assert_eq!(k.open(&c, &longer, &mut out), Err(Error::Authentication));
        prop_assert!(out.iter().all(|&b| b == 0));
    }

    /// A record of one leaf does not open with the key of another leaf, suite, device or epoch.
    #[test]
    fn keys_of_other_leaves_suites_devices_and_epochs_do_not_open(
        plaintext in prop::collection::vec(any::<u8>(), 0..64),
        suite in suite_strategy(),
        day in 0u64..365,
        other_day in 0u64..365,
        nonce in any::<[u8; 8]>(),
    ) {
        prop_assume!(day != other_day);
        let c = RustCrypto;
        let spec = spec();
        let (leaf, other_leaf) = (leaf_of_day(&spec, day), leaf_of_day(&spec, other_day));
        let record = seal(&key(&spec, leaf, suite), nonce, &plaintext);
        let mut out = vec![0u8; plaintext.len()];

        // The key of another leaf refuses the record by its header ...
        prop_assert_eq!(key(&spec, other_leaf, suite).open(&c, &record, &mut out), Err(Error::KeyMismatch));
        // ... and is a different key: used directly on the record's own header and nonce, it fails to authenticate.
        let other_bytes = spec.leaf_key_bytes(&c, &root(&spec), other_leaf, suite).unwrap();
        let own_bytes = spec.leaf_key_bytes(&c, &root(&spec), leaf, suite).unwrap();
        prop_assert!(other_bytes != own_bytes);
        let n = plaintext.len();
        let mut aead_nonce = [0u8; 12];
        aead_nonce[4..].copy_from_slice(&nonce);
        let tag: [u8; 16] = record[HEADER_LEN + n..].try_into().unwrap();
        let mut body = record[HEADER_LEN..HEADER_LEN + n].to_vec();
        let other_key = c.aead_key(suite, &other_bytes).unwrap();
        prop_assert_eq!(c.aead_open(&other_key, &aead_nonce, &record[..HEADER_LEN], &mut body, &tag), Err(Error::Authentication));
        let own_key = c.aead_key(suite, &own_bytes).unwrap();
        prop_assert_eq!(c.aead_open(&own_key, &aead_nonce, &record[..HEADER_LEN], &mut body, &tag), Ok(()));
        prop_assert_eq!(&body, &plaintext);

        // A header rewritten to name the other leaf matches the other key but fails to authenticate.
        let mut relabelled = record.clone();
        relabelled[11..15].copy_from_slice(&other_leaf.to_be_bytes());
        prop_assert_eq!(key(&spec, other_leaf, suite).open(&c, &relabelled, &mut out), Err(Error::Authentication));

        // Each suite has its own key bytes for the same leaf.
        let (aes, chacha) = (
            spec.leaf_key_bytes(&c, &root(&spec), leaf, Suite::AES256GCM).unwrap(),
            spec.leaf_key_bytes(&c, &root(&spec), leaf, Suite::CHACHA20POLY1305).unwrap(),
        );
        prop_assert!(aes != chacha, "both suites share the key bytes of leaf {}", leaf);
        prop_assert_eq!(
            spec.leaf_key_bytes(&c, &root(&spec), leaf, Suite::from_code(3)).err(),
            Some(Error::UnsupportedSuite(3))
        );

        // Another suite, device or epoch: the header names another key.
        let other_suite = if suite == Suite::AES256GCM { Suite::CHACHA20POLY1305 } else { Suite::AES256GCM };
        prop_assert_eq!(key(&spec, leaf, other_suite).open(&c, &record, &mut out), Err(Error::KeyMismatch));
        let other_device = spec_for(OTHER_DEVICE, EPOCH);
        prop_assert_eq!(key(&other_device, leaf, suite).open(&c, &record, &mut out), Err(Error::KeyMismatch));
        let other_epoch = spec_for(DEVICE, Epoch(EPOCH.0 + 1));
        prop_assert_eq!(key(&other_epoch, leaf, suite).open(&c, &record, &mut out), Err(Error::KeyMismatch));
        // The same tree under another master secret gives another key for the very same header.
        let other_master = MasterSecret::new(Secret::from_bytes([0x6e; 32]));
        let foreign = spec.leaf_key(&c, &spec.root(&c, &other_master).unwrap(), leaf, suite).unwrap();
        prop_assert_eq!(foreign.open(&c, &record, &mut out), Err(Error::Authentication));
        prop_assert!(out.iter().all(|&b| b == 0));
    }
}

/// `LeafKey::open` and `Opener::open` zero the whole output buffer on every failure, header errors included, so a
/// caller reusing one buffer never finds an earlier record's plaintext next to a failure.
#[test]
fn open_zeroes_the_whole_output_buffer_on_every_failure() {
    let c = RustCrypto;
    let spec = spec();
    let leaf = leaf_of_day(&spec, 40);
    let k = key(&spec, leaf, Suite::AES256GCM);
    let record = seal(&k, [1; 8], b"a reading of 21.5 degrees");
    let mut bad_tag = record.clone();
    *bad_tag.last_mut().unwrap() ^= 1;
    let mut bad_version = record.clone();
    bad_version[0] = 0x21;
    let other_leaf = key(&spec, leaf + 1, Suite::AES256GCM);
    let mut tiny = [0xa5u8; 4];

    let mut failures = Vec::new();
    let mut check = |what: &str, key: &LeafKey<RustCrypto>, record: &[u8], out: &mut [u8]| {
        let result = key.open(&c, record, out);
        assert!(result.is_err(), "{what}: must fail");
        if out.iter().any(|&b| b != 0) {
            failures.push(format!("{what} ({result:?})"));
        }
    };
    // A buffer that still holds an earlier record's plaintext (here: 0xa5 bytes).
    check(
        "authentication failure, larger buffer",
        &k,
        &bad_tag,
        &mut [0xa5u8; 64],
    );
    check("key mismatch", &other_leaf, &record, &mut [0xa5u8; 64]);
    check("unsupported version", &k, &bad_version, &mut [0xa5u8; 64]);
    check("truncated", &k, &record[..20], &mut [0xa5u8; 64]);
    check("buffer too small", &k, &record, &mut tiny);
    assert!(
        failures.is_empty(),
        "`out` was not all-zero after a failed open for: {}",
        failures.join("; ")
    );
}

/// Seals a record of `day` with the tree's own keys.
fn record_of(spec: &TreeSpec, day: UnixTime, suite: Suite, plaintext: &[u8]) -> Vec<u8> {
    let leaf = spec.leaf_at(day).unwrap();
    seal(
        &key(spec, leaf, suite),
        [leaf as u8, 0, 0, 0, 0, 0, 0, 9],
        plaintext,
    )
}

fn grant(spec: &TreeSpec, start: UnixTime, end: UnixTime) -> Vec<NodeSecret> {
    let c = RustCrypto;
    let root = root(spec);
    let nodes: Vec<_> = spec
        .cover(Span::new(start, end).unwrap())
        .unwrap()
        .collect();
    nodes
        .into_iter()
        .map(|n| spec.derive(&c, &root, n).unwrap())
        .collect()
}

fn days(from: UnixTime, n: u64) -> impl Iterator<Item = UnixTime> {
    (0..n).map(move |i| UnixTime::new(from.secs() + i * DAY).unwrap())
}

fn check_week_grant(start: UnixTime, expected_nodes: usize) {
    let c = RustCrypto;
    let spec = spec();
    let end = UnixTime::new(start.secs() + 7 * DAY).unwrap();
    let held = grant(&spec, start, end);
    assert_eq!(held.len(), expected_nodes, "cover of the week of {start}");
    let mut opener = Opener::new(&c, &spec, &held);
    let plaintext = b"sensor frame";

    for day in days(start, 7) {
        for suite in SUITES {
            let record = record_of(&spec, day, suite, plaintext);
            let mut out = [0u8; 12];
            let (header, n) = opener
                .open(&record, &mut out)
                .unwrap_or_else(|e| panic!("{day} {suite}: {e}"));
            assert_eq!(
                (header.leaf, header.suite, &out[..n]),
                (spec.leaf_at(day).unwrap(), suite, &plaintext[..])
            );
            let mut in_place = record.clone();
            let (_, plain) = opener.open_in_place(&mut in_place).unwrap();
            assert_eq!(plain, plaintext);
        }
    }
    let before = UnixTime::new(start.secs() - DAY).unwrap();
    for day in [before, end] {
        let leaf = spec.leaf_at(day).unwrap();
        for suite in SUITES {
            let record = record_of(&spec, day, suite, plaintext);
            let mut out = [0u8; 12];
            assert_eq!(
                opener.open(&record, &mut out),
                Err(Error::NotGranted { leaf }),
                "{day} is outside the grant"
            );
            assert_eq!(out, [0u8; 12]);
            let mut in_place = record.clone();
            assert_eq!(
                opener.open_in_place(&mut in_place).err(),
                Some(Error::NotGranted { leaf })
            );
            assert_eq!(in_place, record);
        }
    }
    // Records of another device or epoch are for another key, whether their day is inside the week or not.
    for other in [
        spec_for(OTHER_DEVICE, EPOCH),
        spec_for(DEVICE, Epoch(EPOCH.0 + 1)),
    ] {
        for day in [start, before] {
            let record = record_of(&other, day, Suite::AES256GCM, plaintext);
            let mut out = [0u8; 12];
            assert_eq!(
                opener.open(&record, &mut out),
                Err(Error::KeyMismatch),
                "{day}"
            );
            assert_eq!(out, [0u8; 12]);
        }
    }
}

#[test]
fn opener_with_a_calendar_week_opens_that_week_only() {
    // Days 8–14 of March 2026: the second week of the month, one node.
    check_week_grant(date(2026, 3, 8), 1);
}

#[test]
fn opener_with_a_week_across_a_month_boundary_opens_that_week_only() {
    // 2026-03-28 .. 2026-04-04: day 28, the fifth week of March (29–31), then April 1, 2 and 3.
    check_week_grant(date(2026, 3, 28), 5);
}

#[test]
fn opener_alternating_leaves_and_suites_uses_the_right_key() {
    // The opener caches one leaf key: records that alternate leaf and suite must each get their own.
    let c = RustCrypto;
    let spec = spec();
    let held = [root(&spec)];
    let mut opener = Opener::new(&c, &spec, &held);
    let days: Vec<UnixTime> = days(date(2026, 5, 30), 4).collect();
    for round in 0..3 {
        for (i, day) in days.iter().enumerate() {
            for suite in SUITES {
                let plaintext = format!("round {round} day {i} {suite}");
                let record = record_of(&spec, *day, suite, plaintext.as_bytes());
                let mut out = vec![0u8; plaintext.len()];
                assert_eq!(opener.open(&record, &mut out).unwrap().1, plaintext.len());
                assert_eq!(out, plaintext.as_bytes());
            }
        }
    }
}

#[test]
fn opener_rejects_leaves_outside_the_epoch() {
    let c = RustCrypto;
    let spec = spec();
    let held = [root(&spec)];
    let mut opener = Opener::new(&c, &spec, &held);
    let mut record = record_of(&spec, date(2026, 12, 31), Suite::CHACHA20POLY1305, b"x");
    let outside = spec.leaf_at(date(2026, 12, 31)).unwrap() + 1; // 2027-01-01
    record[11..15].copy_from_slice(&outside.to_be_bytes());
    let mut out = [0u8; 1];
    // No held secret covers a leaf outside the epoch: the same answer as for any leaf not granted.
    assert_eq!(
        opener.open(&record, &mut out),
        Err(Error::NotGranted { leaf: outside })
    );
}
