//! Arbitrary bytes into every owner-control decoder, under the fixed keys of Vector 8 (docs/wire.md §11), so the
//! seeds (the vector's messages) authenticate and their mutations reach every check. No decoder panics; a device
//! state that decodes encodes back to the same bytes; and whatever authenticates is canonical: sealing what was
//! opened again, with the same keys and the nonce it carries, gives the same bytes. A list that is refused leaves
//! the device's state as it was, and a command the device accepts is fresh.
#![no_main]

use custos_proto::control::{
    self, CommandHeader, DeviceControl, Member, OwnerKeys, RIGHT_CONTROL, Refusal, SenderKeys,
};
use custos_proto::uplink::{self, LinkKeys};
use custos_proto::{DeviceId, RustCrypto, Secret, Suite};
use libfuzzer_sys::fuzz_target;

const C: RustCrypto = RustCrypto;
const DEV: DeviceId = DeviceId([0, 1, 2, 3, 4, 5, 6, 7]);
/// Vector 8's device clock: its commands are not expired yet.
const NOW: u64 = 1_790_000_000;

fn nonce(data: &[u8], at: usize) -> [u8; 12] {
    // Only called on messages that authenticated, which are long enough to carry a nonce at `at`.
    data[at..at + 12].try_into().unwrap()
}

fuzz_target!(|data: &[u8]| {
    let owner = OwnerKeys::from_udk(&C, &Secret::from_bytes([0x11; 32])).unwrap();
    let member_key = Secret::from_bytes([0x22; 32]);
    let member = SenderKeys::derive(&C, &member_key).unwrap();
    let link = LinkKeys::derive(&C, &Secret::from_bytes([0x44; 32])).unwrap();

    // The persisted state.
    if let Ok(state) = DeviceControl::decode(data) {
        assert_eq!(
            state.encode().as_slice(),
            data,
            "a control state that does not re-encode to itself"
        );
    }

    // The header the hub reads without authenticating: it says what the bytes say.
    if let Ok(h) = CommandHeader::peek(data) {
        assert!(data.len() >= control::COMMAND_OVERHEAD);
        assert_eq!(data[0], control::COMMAND);
        assert_eq!(h.sender.to_be_bytes(), data[2..6]);
        assert_eq!(h.counter.to_be_bytes(), data[6..14]);
        assert_eq!(h.expires.to_be_bytes(), data[14..18]);
    }

    // A list, into a device that holds none.
    let mut fresh = DeviceControl::new();
    match fresh.accept_list(&C, &owner, DEV, data) {
        Ok(done) => {
            let (version, members) = control::open_list(&C, &owner, DEV, data).unwrap();
            assert_eq!((done.version, fresh.version()), (version, version));
            let again = control::seal_list(
                &C,
                Suite::from_code(data[1]),
                &owner,
                DEV,
                version,
                nonce(data, 10),
                &members,
            )
            .unwrap();
            assert_eq!(again, data, "an accepted list is not canonical");
        }
        Err(_) => assert_eq!(
            fresh,
            DeviceControl::new(),
            "a refused list changed the state"
        ),
    }

    // A command, into a device that holds Vector 8's list (member 1) and has accepted no command yet.
    let mut dev = DeviceControl::new();
    let list = control::seal_list(
        &C,
        Suite::AES256GCM,
        &owner,
        DEV,
        1,
        [0x0b; 12],
        &[Member {
            sender: 1,
            rights: RIGHT_CONTROL,
            key: member_key.clone(),
        }],
    )
    .unwrap();
    dev.accept_list(&C, &owner, DEV, &list).unwrap();
    let opened = match dev.open_command(&C, &owner, DEV, NOW, data) {
        Ok(cmd) => {
            assert!(
                u64::from(cmd.header.expires) > NOW,
                "an expired command was accepted"
            );
            assert!(cmd.header.counter > 0, "a counter at the mark was accepted");
            Some(cmd)
        }
        Err(Refusal::Answered(cmd, _)) => Some(cmd),
        Err(Refusal::Unauthenticated(_)) => None,
    };
    if let Some(cmd) = opened {
        let keys = match cmd.header.sender {
            0 => owner.owner(),
            1 => &member,
            s => panic!("a command from sender {s}, who has no key, authenticated"),
        };
        let again = control::seal_command(&C, keys, DEV, cmd.header, cmd.op, &cmd.value).unwrap();
        assert_eq!(again, data, "an authenticated command is not canonical");
    }

    // An answer, for the owner and for the member, to the command its header names.
    if data.len() >= control::ANSWER_HEADER {
        let counter = u64::from_be_bytes(data[6..14].try_into().unwrap());
        for (keys, sender) in [(owner.owner(), 0u32), (&member, 1)] {
            if let Ok((status, state)) = control::open_answer(&C, keys, DEV, sender, counter, data)
            {
                let header = CommandHeader {
                    suite: Suite::from_code(data[1]),
                    sender,
                    counter,
                    expires: 0,
                };
                let again =
                    control::seal_answer(&C, keys, DEV, &header, nonce(data, 14), status, &state)
                        .unwrap();
                assert_eq!(again, data, "an authenticated answer is not canonical");
            }
        }
    }

    if let Ok(version) = control::open_list_ack(&C, &owner, DEV, data) {
        let again = control::seal_list_ack(
            &C,
            Suite::from_code(data[1]),
            &owner,
            DEV,
            version,
            nonce(data, 10),
        )
        .unwrap();
        assert_eq!(again, data, "an authenticated list ack is not canonical");
    }
    if let Ok(token) = control::open_claim(&C, &owner, DEV, data) {
        let again = control::seal_claim(
            &C,
            Suite::from_code(data[1]),
            &owner,
            DEV,
            nonce(data, 2),
            &token,
        )
        .unwrap();
        assert_eq!(again, data, "an authenticated claim is not canonical");
    }
    if let Ok(token) = uplink::open_claim_proof(&C, &link, DEV, data) {
        assert_eq!(
            uplink::seal_claim_proof(&C, &link, DEV, &token).as_slice(),
            data,
            "a verified claim proof is not canonical"
        );
    }
});
