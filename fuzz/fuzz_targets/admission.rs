//! Arbitrary bytes at every step of the admission handshake, on both sides: no panic, and no step that reads
//! attacker bytes ever completes an admission (the fuzzer does not know the code, so Finish and Welcome must fail).
#![no_main]

use custos_proto::admission::{DeviceAwaitingResponse, HubAwaitingCode};
use custos_proto::{DeviceId, Secret};
use libfuzzer_sys::fuzz_target;

const CODE: [u8; 16] = [0x42; 16];

fuzz_target!(|data: &[u8]| {
    let device = DeviceId([2, 0, 0, 0, 0, 0, 0, 1]);
    let secret = |b: u8| Secret::from_bytes([b; 32]);
    // The hub reading a Hello, then a Finish, from the fuzzer.
    if let Ok(hub) = HubAwaitingCode::read_hello(&secret(1), secret(2), data) {
        if let Ok((hub, _)) = hub.respond(&CODE) {
            assert!(hub.read_finish(data).is_err(), "the hub admitted a device that never knew the code");
        }
    }
    // The device reading a Response, then a Welcome, from the fuzzer.
    let (dev, _) = DeviceAwaitingResponse::start(device, &secret(3), &CODE, secret(4), None).unwrap();
    if let Ok((dev, _)) = dev.read_response(data) {
        assert!(dev.read_welcome(data).is_err(), "the device accepted a Welcome from a hub without the code");
    }
});
