//! Every kind of message a device exchanges crosses a LoRa link intact at SF12 (MTU 51 bytes) with 30 % of frames
//! lost: admission, an uplink, pairing, an owner's command, key distribution and a signed device list. Each one
//! is built by the real `custos-proto` code and opened by it on the far side, so the link delivered it byte for
//! byte.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use custos_link::{Addr, Event, Link, LinkConfig, SpreadingFactor};
use custos_proto::admission::{DeviceAwaitingResponse, HubAwaitingCode};
use custos_proto::control::{CommandHeader, Op, SenderKeys, open_command_with, seal_command};
use custos_proto::cose::DeviceList;
use custos_proto::pairing::{DeviceAwaitingProvision, KeeperAwaitingAccept};
use custos_proto::ties::{self, NodeKeys, Request, Seed};
use custos_proto::uplink::{LinkKeys, UPLINK_OVERHEAD, open_uplink, seal_uplink};
use custos_proto::{Crypto, DeviceId, RustCrypto, Secret, Suite};

const DEVICE: DeviceId = DeviceId([0xd0, 0, 0, 0, 0, 0, 0, 1]);

/// Sends `msg` from a to b over a channel that loses each frame with probability 0.3 (a fixed xorshift
/// sequence), and returns what b delivered, with the frames it took.
fn carry(msg: &[u8], seed: u32) -> (Vec<u8>, usize) {
    let config = LinkConfig {
        max_retries: 30,
        ..LinkConfig::for_sf(SpreadingFactor::Sf12)
    };
    let (mut atx, mut arx, mut btx, mut brx) = ([0u8; 2048], [0u8; 2048], [0u8; 2048], [0u8; 2048]);
    let mut a = Link::new(config, Addr(0), Addr(1), &mut atx, &mut arx);
    let mut b = Link::new(config, Addr(1), Addr(0), &mut btx, &mut brx);
    a.send(0, msg).unwrap();
    let mut rng = seed.max(1);
    let mut lost = || {
        rng ^= rng << 13;
        rng ^= rng >> 17;
        rng ^= rng << 5;
        rng % 10 < 3
    };
    let (mut now, mut frames, mut got) = (0u64, 0usize, None);
    let mut frame = [0u8; 51];
    loop {
        let mut sent = false;
        if let Some(n) = a.poll_transmit(now, &mut frame) {
            frames += 1;
            sent = true;
            if !lost() {
                let _ = b.handle_frame(now, &frame[..n]);
            }
        }
        while let Some(e) = b.poll_event() {
            assert_eq!(e, Event::Received);
            got = Some(b.received().unwrap().to_vec());
            b.release_received();
        }
        if let Some(n) = b.poll_transmit(now, &mut frame) {
            frames += 1;
            sent = true;
            if !lost() {
                let _ = a.handle_frame(now, &frame[..n]);
            }
        }
        match a.poll_event() {
            Some(Event::Delivered) => return (got.expect("delivered before received"), frames),
            Some(e) => panic!("the link gave up: {e:?}"),
            None => {}
        }
        now = if sent {
            now + 3_000_000
        } else {
            [a.next_deadline(), b.next_deadline()]
                .into_iter()
                .flatten()
                .min()
                .unwrap()
                .max(now + 1)
        };
    }
}

#[test]
fn every_kind_of_device_message_crosses_a_lossy_sf12_link_intact() {
    let c = RustCrypto;
    let mut carried = Vec::new();
    let mut over = |name: &str, msg: Vec<u8>| -> Vec<u8> {
        let (got, frames) = carry(&msg, carried.len() as u32 + 7);
        assert_eq!(got, msg, "{name}");
        carried.push((name.to_owned(), msg.len(), frames));
        got
    };

    // Admission: the four handshake messages, each carried and read by the other side.
    let (device_static, hub_static) = (Secret::from_bytes([1; 32]), Secret::from_bytes([2; 32]));
    let code = [7u8; 16];
    let (dev, hello) = DeviceAwaitingResponse::start(
        DEVICE,
        &device_static,
        &code,
        Secret::from_bytes([3; 32]),
        None,
    )
    .unwrap();
    let hub = HubAwaitingCode::read_hello(
        &hub_static,
        Secret::from_bytes([4; 32]),
        &over("Hello", hello),
    )
    .unwrap();
    let (hub, response) = hub.respond(&code).unwrap();
    let (dev, finish) = dev.read_response(&over("Response", response)).unwrap();
    let (hub_side, welcome) = hub.read_finish(&over("Finish", finish)).unwrap();
    let dev_side = dev.read_welcome(&over("Welcome", welcome)).unwrap();
    assert_eq!(dev_side.session_key, hub_side.session_key);

    // An uplink of a sealed reading's size.
    let keys = LinkKeys::derive(&c, &dev_side.session_key).unwrap();
    let body = [0x42u8; 90];
    let mut up = vec![0u8; body.len() + UPLINK_OVERHEAD];
    seal_uplink(&c, &keys, DEVICE, 5, &body, &mut up).unwrap();
    let up = over("uplink (90-byte body)", up);
    let (seq, got) = open_uplink(&c, &keys, DEVICE, &up).unwrap();
    assert_eq!((seq, got), (5, &body[..]));

    // Pairing: the keeper's init and the device's accept, through the relay.
    let owner = [9u8; 16];
    let (keeper, init) =
        KeeperAwaitingAccept::start(DEVICE, &owner, Secret::from_bytes([5; 32])).unwrap();
    let (_, accept) = DeviceAwaitingProvision::read_init(
        DEVICE,
        &owner,
        Secret::from_bytes([6; 32]),
        &over("PairInit", init),
    )
    .unwrap();
    keeper.read_accept(&over("PairAccept", accept)).unwrap();

    // An owner's command.
    let sender = SenderKeys::derive(&c, &Secret::from_bytes([8; 32])).unwrap();
    let header = CommandHeader {
        suite: Suite::AES256GCM,
        sender: 0,
        counter: 1,
        expires: 1_900_000_000,
    };
    let cmd = seal_command(&c, &sender, DEVICE, header, Op::Set, b"21.5").unwrap();
    let opened = open_command_with(&c, &sender, DEVICE, &over("command", cmd)).unwrap();
    assert_eq!(opened.value, b"21.5");

    // Key distribution: a KTC request, opened by the CE.
    let node = NodeKeys::derive(&c, &dev_side.session_key).unwrap();
    let peer = DeviceId([0xd0, 0, 0, 0, 0, 0, 0, 2]);
    let req = Request::new(ties::KTC_DIRECT, DEVICE, &[peer], [1; 8], 1_900_000_000).unwrap();
    let msg = req
        .seal(&c, &node, Some(&Seed::from_bytes([3; 16])))
        .unwrap();
    let hub_node = NodeKeys::derive(&c, &hub_side.session_key).unwrap();
    Request::open(
        &c,
        DEVICE,
        &hub_node,
        &over("KTC request", msg.as_bytes().to_vec()),
    )
    .unwrap();

    // A signed device list of 16 devices: the largest here, 15 fragments at SF12.
    let signing = Secret::from_bytes([10; 32]);
    let list = DeviceList {
        version: 2,
        issued_at: 1_800_000_000,
        devices: (0..16)
            .map(|i| DeviceId([0xd0, 0, 0, 0, 0, 0, 0, i]))
            .collect(),
        statics: (0..16).map(|i| [i; 32]).collect(),
        dead: Vec::new(),
    };
    let signed = list.sign(|m| c.ed25519_sign(&signing, m)).unwrap();
    let got = over("device list (16 devices)", signed);
    assert_eq!(
        DeviceList::verify(&c, &got, &c.ed25519_public(&signing)).unwrap(),
        list
    );

    for (name, len, frames) in &carried {
        eprintln!("{name}: {len} B in {frames} frames at SF12 with 30 % loss");
    }
    assert!(
        carried.iter().any(|(_, len, _)| *len > 45 * 8),
        "a message of many fragments"
    );
}
