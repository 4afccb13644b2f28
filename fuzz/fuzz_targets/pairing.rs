//! Arbitrary bytes at every step of pairing, on both sides, and into the Provision body decoder: no panic; no
//! step that reads attacker bytes ever completes (the fuzzer does not hold the session keys, and cannot make a
//! tag under the owner code); and every body that decodes encodes back to the same bytes.
#![no_main]

use custos_proto::pairing::{DeviceAwaitingProvision, KeeperAwaitingAccept, Provision};
use custos_proto::{DeviceId, Secret};
use libfuzzer_sys::fuzz_target;

const CODE: [u8; 16] = [0x42; 16];

fuzz_target!(|data: &[u8]| {
    let device = DeviceId([2, 0, 0, 0, 0, 0, 0, 1]);
    let secret = |b: u8| Secret::from_bytes([b; 32]);

    // The body decoder: canonical, so whatever decodes re-encodes byte for byte.
    if let Ok(p) = Provision::decode(device, data) {
        let mut again = Vec::new();
        p.encode(&mut again).unwrap();
        assert_eq!(
            again, data,
            "a Provision body that does not re-encode to itself"
        );
        assert_eq!(p.encoded_len(), data.len());
    }

    // The device reading a PairInit from the fuzzer.
    assert!(
        DeviceAwaitingProvision::read_init(device, &CODE, secret(1), data).is_err(),
        "the device accepted a PairInit made without the code"
    );
    // The keeper reading a PairAccept from the fuzzer.
    let (keeper, init) = KeeperAwaitingAccept::start(device, &CODE, secret(2)).unwrap();
    assert!(
        keeper.read_accept(data).is_err(),
        "the keeper accepted a PairAccept made without the code"
    );

    // An honest handshake, then fuzzer bytes as the first Provision and as an ack.
    let (waiting, accept) =
        DeviceAwaitingProvision::read_init(device, &CODE, secret(3), &init).unwrap();
    let (keeper, _) = KeeperAwaitingAccept::start(device, &CODE, secret(2)).unwrap();
    let mut keeper = keeper.read_accept(&accept).unwrap();
    assert!(
        waiting.open_provision(data).is_err(),
        "the device opened a forged Provision"
    );
    assert!(
        keeper.open_ack(data).is_err(),
        "the keeper took a forged ack"
    );
});
