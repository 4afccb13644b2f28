//! Arbitrary bytes as a record: decoding and opening must never panic, a failure must leave no plaintext, and
//! a record that opens must be exactly what sealing its plaintext gives (no malleable encodings).
//! The key is the one of docs/vectors/wire-v1.json, so the seed records in fuzz/seeds open.
//! The same bytes go to the uplink, skip, ack and pairing-wait decoders, which must refuse them (the fuzzer has no
//! MAC key).
#![no_main]

use custos_proto::{DeviceId, Epoch, MasterSecret, NodeSecret, Opener, RecordHeader, RustCrypto, Schedule, Secret, Span, TreeSpec, UnixTime};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let c = RustCrypto;
    let header = RecordHeader::peek(data);
    let span = Span::new(UnixTime::new(1_767_225_600).unwrap(), UnixTime::new(1_798_761_600).unwrap()).unwrap();
    let spec = TreeSpec::new(DeviceId([0, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77]), Epoch(1), Schedule::default(), span).unwrap();
    let master = MasterSecret::new(Secret::from_bytes(core::array::from_fn(|i| i as u8)));
    let held: [NodeSecret; 1] = [spec.root(&c, &master).unwrap()];
    let mut opener = Opener::new(&c, &spec, &held);
    let mut out = vec![0u8; data.len()];
    let result = opener.open(data, &mut out);
    match result {
        Ok((h, n)) => {
            let key = spec.leaf_key(&c, &held[0], h.leaf, h.suite).unwrap();
            let mut again = vec![0u8; data.len()];
            key.seal(&c, h.nonce, &out[..n], &mut again).unwrap();
            assert_eq!(again, data, "a record opened that sealing would not produce: {header:?}");
        }
        Err(_) => assert!(out.iter().all(|&b| b == 0), "plaintext left in the output after a failure"),
    }
    let mut copy = data.to_vec();
    match (opener.open_in_place(&mut copy), result) {
        (Ok((_, plain)), Ok((_, n))) => assert_eq!(plain, &out[..n]),
        (Err(a), Err(b)) => assert_eq!(a, b),
        (a, b) => panic!("open and open_in_place disagree: {a:?} vs {b:?}"),
    }
    let keys = custos_proto::uplink::LinkKeys::derive(&c, &Secret::from_bytes([9; 32])).unwrap();
    let dev = DeviceId([0, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77]);
    assert!(custos_proto::uplink::open_uplink(&c, &keys, dev, data).is_err(), "forged uplink accepted");
    assert!(custos_proto::uplink::open_ack(&c, &keys, dev, data).is_err(), "forged ack accepted");
    assert!(custos_proto::uplink::open_upward(&c, &keys, dev, data).is_err(), "forged skip accepted");
    assert!(
        custos_proto::uplink::open_pairing_wait(&c, &keys, dev, data).is_err(),
        "forged pairing-wait token accepted"
    );
});
