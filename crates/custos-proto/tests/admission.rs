//! The admission handshake, with an honest device and hub and with attackers: a wrong code, a man in the middle
//! without the code, replayed and altered messages, an impostor hub.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicU8, Ordering};

use custos_proto::admission::{Admitted, DeviceAwaitingResponse, HubAwaitingCode};
use custos_proto::{Crypto, DeviceId, Error, RustCrypto, Secret};

const DEVICE: DeviceId = DeviceId([0x02, 0, 0x5e, 0x10, 0, 0, 0, 7]);
const CODE: [u8; 16] = *b"0123456789abcdef";

/// Distinct ephemeral keys for every handshake the test runs.
fn fresh() -> Secret {
    static N: AtomicU8 = AtomicU8::new(1);
    let n = N.fetch_add(1, Ordering::Relaxed);
    Secret::from_bytes(core::array::from_fn(|i| {
        n.wrapping_mul(31).wrapping_add(i as u8)
    }))
}

fn device_key() -> Secret {
    Secret::from_bytes([0x11; 32])
}

fn hub_key() -> Secret {
    Secret::from_bytes([0x22; 32])
}

/// Runs the whole handshake; returns both results and the four messages.
fn join(
    device_code: &[u8; 16],
    hub_code: &[u8; 16],
) -> Result<(Admitted, Admitted, [Vec<u8>; 4]), Error> {
    let (device, hello) =
        DeviceAwaitingResponse::start(DEVICE, &device_key(), device_code, fresh(), None)?;
    let hub = HubAwaitingCode::read_hello(&hub_key(), fresh(), &hello)?;
    assert_eq!(hub.device(), DEVICE);
    let (hub, response) = hub.respond(hub_code)?;
    let (device, finish) = device.read_response(&response)?;
    let (at_hub, welcome) = hub.read_finish(&finish)?;
    let at_device = device.read_welcome(&welcome)?;
    Ok((at_device, at_hub, [hello, response, finish, welcome]))
}

#[test]
fn the_right_code_admits_and_both_sides_agree() {
    let c = RustCrypto;
    let (at_device, at_hub, msgs) = join(&CODE, &CODE).unwrap();
    assert_eq!(at_device.session_key, at_hub.session_key);
    assert_eq!(at_device.handshake_hash, at_hub.handshake_hash);
    assert_eq!(
        at_device.peer_static,
        c.x25519_public(&hub_key()),
        "device pins the hub's static key"
    );
    assert_eq!(
        at_hub.peer_static,
        c.x25519_public(&device_key()),
        "hub pins the device's static key"
    );
    let sizes: Vec<usize> = msgs.iter().map(Vec::len).collect();
    assert_eq!(sizes, [57, 97, 65, 17]);
    assert_eq!(
        sizes.iter().sum::<usize>(),
        custos_proto::admission::HANDSHAKE_BYTES
    );
    const { assert!(custos_proto::admission::HANDSHAKE_BYTES <= 256) };
    // Forward secrecy: a second join with the same code and keys gives another session key.
    let (again, _, _) = join(&CODE, &CODE).unwrap();
    assert_ne!(again.session_key, at_device.session_key);
}

#[test]
fn a_wrong_code_is_refused_by_the_hub() {
    let mut wrong = CODE;
    wrong[15] ^= 1;
    assert_eq!(join(&wrong, &CODE).unwrap_err(), Error::Handshake);
    assert_eq!(join(&CODE, &wrong).unwrap_err(), Error::Handshake);
}

#[test]
fn a_man_in_the_middle_without_the_code_completes_neither_side() {
    let guess = [0u8; 16];
    let mallory_key = Secret::from_bytes([0x33; 32]);
    // Toward the device, Mallory plays the hub.
    let (device, hello) =
        DeviceAwaitingResponse::start(DEVICE, &device_key(), &CODE, fresh(), None).unwrap();
    let fake_hub = HubAwaitingCode::read_hello(&mallory_key, fresh(), &hello).unwrap();
    let (fake_hub, response) = fake_hub.respond(&guess).unwrap();
    // The device cannot tell yet (XX without a pinned hub key) and sends Finish...
    let (device, finish) = device.read_response(&response).unwrap();
    // ...which Mallory cannot read without the code, so she cannot produce a Welcome.
    assert_eq!(fake_hub.read_finish(&finish).unwrap_err(), Error::Handshake);
    let mut forged = vec![0x04];
    forged.extend_from_slice(&[0u8; 16]);
    assert_eq!(device.read_welcome(&forged).unwrap_err(), Error::Handshake);

    // Toward the hub, Mallory plays the device with her own keys and a guessed code.
    let (fake_device, hello) =
        DeviceAwaitingResponse::start(DEVICE, &mallory_key, &guess, fresh(), None).unwrap();
    let hub = HubAwaitingCode::read_hello(&hub_key(), fresh(), &hello).unwrap();
    let (hub, response) = hub.respond(&CODE).unwrap();
    let (_, finish) = fake_device.read_response(&response).unwrap();
    assert_eq!(hub.read_finish(&finish).unwrap_err(), Error::Handshake);
}

#[test]
fn relayed_messages_from_another_session_are_refused() {
    let (_, _, old) = join(&CODE, &CODE).unwrap();
    // A new session on both sides, fed the old session's messages.
    let (device, hello) =
        DeviceAwaitingResponse::start(DEVICE, &device_key(), &CODE, fresh(), None).unwrap();
    let (hub, response) = HubAwaitingCode::read_hello(&hub_key(), fresh(), &hello)
        .unwrap()
        .respond(&CODE)
        .unwrap();
    assert_eq!(
        hub.read_finish(&old[2]).unwrap_err(),
        Error::Handshake,
        "replayed Finish"
    );
    assert_eq!(
        device.read_response(&old[1]).err(),
        Some(Error::Handshake),
        "replayed Response"
    );
    // A replayed Welcome does not confirm a new session.
    let (device, hello) =
        DeviceAwaitingResponse::start(DEVICE, &device_key(), &CODE, fresh(), None).unwrap();
    let (hub, response2) = HubAwaitingCode::read_hello(&hub_key(), fresh(), &hello)
        .unwrap()
        .respond(&CODE)
        .unwrap();
    let (device, finish) = device.read_response(&response2).unwrap();
    assert!(hub.read_finish(&finish).is_ok());
    assert_eq!(
        device.read_welcome(&old[3]).unwrap_err(),
        Error::Handshake,
        "replayed Welcome"
    );
    assert_ne!(
        response, old[1],
        "a hub never sends the same Response twice"
    );
}

#[test]
fn every_altered_byte_is_refused() {
    for which in 1..4 {
        let len = [57, 97, 65, 17][which];
        for at in 0..len {
            let (device, hello) =
                DeviceAwaitingResponse::start(DEVICE, &device_key(), &CODE, fresh(), None).unwrap();
            let hub = HubAwaitingCode::read_hello(&hub_key(), fresh(), &hello).unwrap();
            let (hub, mut response) = hub.respond(&CODE).unwrap();
            if which == 1 {
                response[at] ^= 0x01;
                assert!(
                    device.read_response(&response).is_err(),
                    "Response byte {at}"
                );
                continue;
            }
            let (device, mut finish) = device.read_response(&response).unwrap();
            if which == 2 {
                finish[at] ^= 0x01;
                assert!(hub.read_finish(&finish).is_err(), "Finish byte {at}");
                continue;
            }
            let (_, mut welcome) = hub.read_finish(&finish).unwrap();
            welcome[at] ^= 0x01;
            assert!(device.read_welcome(&welcome).is_err(), "Welcome byte {at}");
        }
    }
}

#[test]
fn a_device_with_a_pinned_hub_refuses_another_hub() {
    let c = RustCrypto;
    let pinned = c.x25519_public(&hub_key());
    let other = Secret::from_bytes([0x44; 32]);
    let (device, hello) =
        DeviceAwaitingResponse::start(DEVICE, &device_key(), &CODE, fresh(), Some(pinned)).unwrap();
    let (_, response) = HubAwaitingCode::read_hello(&other, fresh(), &hello)
        .unwrap()
        .respond(&CODE)
        .unwrap();
    assert_eq!(
        device.read_response(&response).err(),
        Some(Error::Handshake)
    );
    // The pinned hub itself is accepted.
    let (device, hello) =
        DeviceAwaitingResponse::start(DEVICE, &device_key(), &CODE, fresh(), Some(pinned)).unwrap();
    let (_, response) = HubAwaitingCode::read_hello(&hub_key(), fresh(), &hello)
        .unwrap()
        .respond(&CODE)
        .unwrap();
    assert!(device.read_response(&response).is_ok());
}

#[test]
fn malformed_messages_get_precise_errors() {
    let hub = |m: &[u8]| HubAwaitingCode::read_hello(&hub_key(), fresh(), m).err();
    assert_eq!(hub(&[]), Some(Error::Truncated));
    assert_eq!(
        hub(&[0x03; 57]),
        Some(Error::UnexpectedMessage {
            expected: 0x01,
            got: 0x03
        })
    );
    assert_eq!(hub(&[0x01; 56]), Some(Error::Truncated));
    assert_eq!(hub(&[0x01; 58]), Some(Error::TrailingBytes));
    // A Hello whose device id was changed in flight fails authentication.
    let (_, mut hello) =
        DeviceAwaitingResponse::start(DEVICE, &device_key(), &CODE, fresh(), None).unwrap();
    hello[40] ^= 1;
    assert_eq!(hub(&hello), Some(Error::Handshake));
}
