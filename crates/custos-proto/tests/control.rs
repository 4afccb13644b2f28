//! Owner control, played as the attacker: a hub (or anyone on the broker) that forges, replays, reorders, alters,
//! delays, reflects and rolls back control messages, and a revoked member who keeps trying.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use custos_proto::control::{
    self, ANSWER_OVERHEAD, COMMAND_OVERHEAD, CommandHeader, DeviceControl, Member, Op, OwnerKeys,
    RIGHT_CONTROL, Refusal, SenderKeys, Status,
};
use custos_proto::{DeviceId, Error, RustCrypto, Secret, Suite};
use proptest::prelude::*;

const C: RustCrypto = RustCrypto;
const DEV: DeviceId = DeviceId([0, 1, 2, 3, 4, 5, 6, 7]);
const OTHER: DeviceId = DeviceId([9, 9, 9, 9, 9, 9, 9, 9]);
const NOW: u64 = 1_790_000_000;

fn udk(b: u8) -> OwnerKeys {
    OwnerKeys::from_udk(&C, &Secret::from_bytes([b; 32])).unwrap()
}

fn header(sender: u32, counter: u64) -> CommandHeader {
    CommandHeader {
        suite: Suite::AES256GCM,
        sender,
        counter,
        expires: (NOW + 60) as u32,
    }
}

fn set(keys: &SenderKeys, sender: u32, counter: u64, value: &str) -> Vec<u8> {
    control::seal_command(
        &C,
        keys,
        DEV,
        header(sender, counter),
        Op::Set,
        value.as_bytes(),
    )
    .unwrap()
}

fn member(sender: u32, key: u8) -> Member {
    Member {
        sender,
        rights: RIGHT_CONTROL,
        key: Secret::from_bytes([key; 32]),
    }
}

fn list(owner: &OwnerKeys, version: u64, members: &[Member]) -> Vec<u8> {
    control::seal_list(
        &C,
        Suite::AES256GCM,
        owner,
        DEV,
        version,
        [version as u8; 12],
        members,
    )
    .unwrap()
}

fn unauthenticated(r: Result<control::OpenedCommand, Refusal>) -> bool {
    matches!(r, Err(Refusal::Unauthenticated(_)))
}

fn answered(r: Result<control::OpenedCommand, Refusal>, want: Status) -> bool {
    matches!(r, Err(Refusal::Answered(_, s)) if s == want)
}

#[test]
fn the_owner_commands_and_the_answer_is_bound_to_the_command() {
    let owner = udk(1);
    let dev = DeviceControl::new();
    let msg = set(owner.owner(), 0, 5, "on");
    assert_eq!(msg.len(), COMMAND_OVERHEAD + 2);
    let cmd = dev.open_command(&C, &owner, DEV, NOW, &msg).unwrap();
    assert_eq!((cmd.op, cmd.value.as_slice()), (Op::Set, b"on".as_slice()));
    let ans = control::seal_answer(
        &C,
        owner.owner(),
        DEV,
        &cmd.header,
        [7; 12],
        Status::Done,
        b"on",
    )
    .unwrap();
    assert_eq!(ans.len(), ANSWER_OVERHEAD + 2);
    assert_eq!(
        control::open_answer(&C, owner.owner(), DEV, 0, 5, &ans).unwrap(),
        (Status::Done, b"on".to_vec())
    );
    // An answer for another command, another device, or one the hub made up is refused.
    assert!(control::open_answer(&C, owner.owner(), DEV, 0, 6, &ans).is_err());
    assert!(control::open_answer(&C, owner.owner(), OTHER, 0, 5, &ans).is_err());
    let mut forged = ans.clone();
    *forged.last_mut().unwrap() ^= 1;
    assert_eq!(
        control::open_answer(&C, owner.owner(), DEV, 0, 5, &forged),
        Err(Error::Authentication)
    );
    // The hub cannot turn "failed" into "done": the status is inside the AEAD.
    let failed = control::seal_answer(
        &C,
        owner.owner(),
        DEV,
        &cmd.header,
        [8; 12],
        Status::Failed,
        b"off",
    )
    .unwrap();
    for i in control::ANSWER_HEADER..failed.len() {
        let mut x = failed.clone();
        x[i] ^= 0x01;
        assert!(control::open_answer(&C, owner.owner(), DEV, 0, 5, &x).is_err());
    }
}

#[test]
fn overheads_fit_a_lora_frame() {
    assert_eq!(COMMAND_OVERHEAD, 35);
    assert_eq!(ANSWER_OVERHEAD, 43);
    const { assert!(COMMAND_OVERHEAD <= 64) };
}

#[test]
fn forged_altered_and_misdirected_commands_are_unauthenticated() {
    let owner = udk(1);
    let dev = DeviceControl::new();
    let msg = set(owner.owner(), 0, 5, "on");
    // A key the hub made up.
    let hub = SenderKeys::derive(&C, &Secret::from_bytes([0xee; 32])).unwrap();
    assert!(unauthenticated(dev.open_command(
        &C,
        &owner,
        DEV,
        NOW,
        &set(&hub, 0, 5, "on")
    )));
    // Every byte altered.
    for i in 0..msg.len() {
        let mut x = msg.clone();
        x[i] ^= 0x80;
        assert!(
            unauthenticated(dev.open_command(&C, &owner, DEV, NOW, &x)),
            "byte {i}"
        );
    }
    // Sealed for another device.
    assert!(unauthenticated(
        dev.open_command(&C, &owner, OTHER, NOW, &msg)
    ));
    // Truncated, extended.
    assert!(unauthenticated(dev.open_command(
        &C,
        &owner,
        DEV,
        NOW,
        &msg[..msg.len() - 1]
    )));
    let mut long = msg.clone();
    long.push(0);
    assert!(unauthenticated(
        dev.open_command(&C, &owner, DEV, NOW, &long)
    ));
    // The sender id swapped to a member's: no member 3 exists, and if it did its key differs.
    let mut swapped = msg.clone();
    swapped[5] = 3;
    assert!(unauthenticated(
        dev.open_command(&C, &owner, DEV, NOW, &swapped)
    ));
}

#[test]
fn replays_reorderings_and_late_commands_are_refused_and_answered() {
    let owner = udk(1);
    let mut dev = DeviceControl::new();
    let c5 = set(owner.owner(), 0, 5, "on");
    let c4 = set(owner.owner(), 0, 4, "off");
    let cmd = dev.open_command(&C, &owner, DEV, NOW, &c5).unwrap();
    dev.commit(&cmd);
    // Persisted, reloaded (a reboot): the mark survives.
    let dev = DeviceControl::decode(&dev.encode()).unwrap();
    assert!(answered(
        dev.open_command(&C, &owner, DEV, NOW, &c5),
        Status::Replayed
    ));
    assert!(answered(
        dev.open_command(&C, &owner, DEV, NOW, &c4),
        Status::Replayed
    ));
    // Held back past its expiry.
    let c6 = set(owner.owner(), 0, 6, "on");
    assert!(answered(
        dev.open_command(&C, &owner, DEV, NOW + 60, &c6),
        Status::Expired
    ));
    assert!(dev.open_command(&C, &owner, DEV, NOW + 59, &c6).is_ok());
    // open_command changes nothing: only commit raises the mark.
    assert_eq!(dev.mark(0), Some(5));
}

#[test]
fn members_are_added_revoked_and_a_rollback_of_the_list_is_refused() {
    let owner = udk(1);
    let mut dev = DeviceControl::new();
    let bob = member(1, 0xb0);
    let bob_keys = SenderKeys::derive(&C, &bob.key).unwrap();
    let carol = member(2, 0xc0);
    let v1 = list(&owner, 1, &[bob.clone(), carol.clone()]);
    let v2 = list(&owner, 2, std::slice::from_ref(&carol));
    assert!(dev.accept_list(&C, &owner, DEV, &v1).unwrap().changed);
    let cmd = dev
        .open_command(&C, &owner, DEV, NOW, &set(&bob_keys, 1, 10, "on"))
        .unwrap();
    dev.commit(&cmd);
    assert_eq!(dev.mark(1), Some(10));
    // The same list again (its ack was lost): accepted, nothing changes, bob keeps his mark.
    assert!(!dev.accept_list(&C, &owner, DEV, &v1).unwrap().changed);
    assert!(answered(
        dev.open_command(&C, &owner, DEV, NOW, &set(&bob_keys, 1, 10, "on")),
        Status::Replayed
    ));
    // Bob is revoked: his next command is refused at once.
    dev.accept_list(&C, &owner, DEV, &v2).unwrap();
    assert!(unauthenticated(dev.open_command(
        &C,
        &owner,
        DEV,
        NOW,
        &set(&bob_keys, 1, 11, "on")
    )));
    // The hub replays the older list to bring him back: refused, also after a reboot.
    assert_eq!(dev.accept_list(&C, &owner, DEV, &v1), Err(Error::StaleList));
    let mut dev = DeviceControl::decode(&dev.encode()).unwrap();
    assert_eq!(dev.accept_list(&C, &owner, DEV, &v1), Err(Error::StaleList));
    // The same version with other members is refused too.
    let v2b = list(&owner, 2, &[bob.clone(), carol.clone()]);
    assert_eq!(
        dev.accept_list(&C, &owner, DEV, &v2b),
        Err(Error::StaleList)
    );
    // A list the hub made up does not open.
    let forged = list(&udk(0xee), 9, std::slice::from_ref(&bob));
    assert_eq!(
        dev.accept_list(&C, &owner, DEV, &forged),
        Err(Error::Authentication)
    );
    assert_eq!(dev.version(), 2);
    // A member without the control right cannot command.
    let view_only = Member {
        rights: 0,
        ..member(3, 0xd0)
    };
    dev.accept_list(
        &C,
        &owner,
        DEV,
        &list(&owner, 3, &[carol, view_only.clone()]),
    )
    .unwrap();
    let d_keys = SenderKeys::derive(&C, &view_only.key).unwrap();
    assert!(unauthenticated(dev.open_command(
        &C,
        &owner,
        DEV,
        NOW,
        &set(&d_keys, 3, 1, "on")
    )));
}

#[test]
fn the_list_ack_and_the_claim_need_the_user_device_key() {
    let owner = udk(1);
    let ack = control::seal_list_ack(&C, Suite::AES256GCM, &owner, DEV, 7, [3; 12]).unwrap();
    assert_eq!(ack.len(), control::LIST_ACK_LEN);
    assert_eq!(control::open_list_ack(&C, &owner, DEV, &ack).unwrap(), 7);
    assert!(control::open_list_ack(&C, &udk(2), DEV, &ack).is_err());
    assert!(control::open_list_ack(&C, &owner, OTHER, &ack).is_err());
    let token = [0x42; 16];
    let claim = control::seal_claim(&C, Suite::AES256GCM, &owner, DEV, [4; 12], &token).unwrap();
    assert_eq!(claim.len(), control::CLAIM_LEN);
    assert_eq!(control::open_claim(&C, &owner, DEV, &claim).unwrap(), token);
    // Without the UDK nobody makes a claim the device opens.
    let forged =
        control::seal_claim(&C, Suite::AES256GCM, &udk(0xee), DEV, [4; 12], &token).unwrap();
    assert_eq!(
        control::open_claim(&C, &owner, DEV, &forged),
        Err(Error::Authentication)
    );
    assert!(control::open_claim(&C, &owner, OTHER, &claim).is_err());
}

#[test]
fn reflected_messages_are_refused() {
    let owner = udk(1);
    let dev = DeviceControl::new();
    let cmd = set(owner.owner(), 0, 5, "on");
    let opened = dev.open_command(&C, &owner, DEV, NOW, &cmd).unwrap();
    let ans = control::seal_answer(
        &C,
        owner.owner(),
        DEV,
        &opened.header,
        [1; 12],
        Status::Done,
        b"on",
    )
    .unwrap();
    let ack = control::seal_list_ack(&C, Suite::AES256GCM, &owner, DEV, 1, [3; 12]).unwrap();
    let l = list(&owner, 1, &[]);
    let claim = control::seal_claim(&C, Suite::AES256GCM, &owner, DEV, [4; 12], &[1; 16]).unwrap();
    // An answer or a list fed back as a command; a command or an ack as an answer; an ack as a list.
    for m in [&ans, &l, &ack, &claim] {
        assert!(unauthenticated(dev.open_command(&C, &owner, DEV, NOW, m)));
        let mut relabelled = m.clone();
        relabelled[0] = control::COMMAND;
        assert!(unauthenticated(dev.open_command(
            &C,
            &owner,
            DEV,
            NOW,
            &relabelled
        )));
    }
    assert!(control::open_answer(&C, owner.owner(), DEV, 0, 5, &cmd).is_err());
    let mut cmd_as_answer = cmd.clone();
    cmd_as_answer[0] = control::ANSWER;
    assert!(control::open_answer(&C, owner.owner(), DEV, 0, 5, &cmd_as_answer).is_err());
    let mut d = DeviceControl::new();
    assert!(d.accept_list(&C, &owner, DEV, &ack).is_err());
    let mut ack_as_list = ack.clone();
    ack_as_list[0] = control::LIST;
    assert!(d.accept_list(&C, &owner, DEV, &ack_as_list).is_err());
    assert!(control::open_claim(&C, &owner, DEV, &ack).is_err());
}

#[test]
fn rotating_the_user_device_key_retires_everything_sealed_under_the_old_one() {
    let old = udk(1);
    let new = udk(2);
    let mut dev = DeviceControl::new();
    let bob = member(1, 0xb0);
    dev.accept_list(&C, &old, DEV, &list(&old, 1, std::slice::from_ref(&bob)))
        .unwrap();
    let stale_cmd = set(old.owner(), 0, 9, "on");
    let stale_list = list(&old, 2, &[]);
    let stale_claim =
        control::seal_claim(&C, Suite::AES256GCM, &old, DEV, [4; 12], &[1; 16]).unwrap();
    // After re-pairing the device holds `new`.
    assert!(unauthenticated(
        dev.open_command(&C, &new, DEV, NOW, &stale_cmd)
    ));
    assert_eq!(
        dev.accept_list(&C, &new, DEV, &stale_list),
        Err(Error::Authentication)
    );
    assert!(control::open_claim(&C, &new, DEV, &stale_claim).is_err());
    // New commands work; members keep their keys until the owner sends the next list.
    assert!(
        dev.open_command(&C, &new, DEV, NOW, &set(new.owner(), 0, 10, "on"))
            .is_ok()
    );
    let bob_keys = SenderKeys::derive(&C, &bob.key).unwrap();
    assert!(
        dev.open_command(&C, &new, DEV, NOW, &set(&bob_keys, 1, 1, "on"))
            .is_ok()
    );
    dev.accept_list(&C, &new, DEV, &list(&new, 2, &[])).unwrap();
    assert!(unauthenticated(dev.open_command(
        &C,
        &new,
        DEV,
        NOW,
        &set(&bob_keys, 1, 2, "on")
    )));
}

#[test]
fn bounds_are_enforced() {
    let owner = udk(1);
    let long = "x".repeat(control::MAX_VALUE + 1);
    assert!(
        control::seal_command(
            &C,
            owner.owner(),
            DEV,
            header(0, 1),
            Op::Set,
            long.as_bytes()
        )
        .is_err()
    );
    assert!(control::seal_command(&C, owner.owner(), DEV, header(0, 1), Op::Get, b"x").is_err());
    let too_many: Vec<Member> = (1..=65).map(|i| member(i, 1)).collect();
    assert!(control::seal_list(&C, Suite::AES256GCM, &owner, DEV, 1, [0; 12], &too_many).is_err());
    let unordered = [member(2, 1), member(1, 1)];
    assert!(control::seal_list(&C, Suite::AES256GCM, &owner, DEV, 1, [0; 12], &unordered).is_err());
    let zero = [member(0, 1)];
    assert!(control::seal_list(&C, Suite::AES256GCM, &owner, DEV, 1, [0; 12], &zero).is_err());
    assert!(DeviceControl::decode(&[]).is_err());
    assert!(DeviceControl::decode(&[2; 18]).is_err());
    let mut state = DeviceControl::new().encode().to_vec();
    state.push(0);
    assert_eq!(DeviceControl::decode(&state), Err(Error::TrailingBytes));
}

#[test]
fn the_chacha_suite_works_too() {
    let owner = udk(1);
    let h = CommandHeader {
        suite: Suite::CHACHA20POLY1305,
        ..header(0, 1)
    };
    let msg = control::seal_command(&C, owner.owner(), DEV, h, Op::Get, b"").unwrap();
    let cmd = DeviceControl::new()
        .open_command(&C, &owner, DEV, NOW, &msg)
        .unwrap();
    assert_eq!(cmd.op, Op::Get);
}

proptest! {
    #[test]
    fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let owner = udk(1);
        let mut dev = DeviceControl::new();
        let _ = dev.open_command(&C, &owner, DEV, NOW, &bytes);
        let _ = dev.accept_list(&C, &owner, DEV, &bytes);
        let _ = control::open_answer(&C, owner.owner(), DEV, 0, 1, &bytes);
        let _ = control::open_list_ack(&C, &owner, DEV, &bytes);
        let _ = control::open_claim(&C, &owner, DEV, &bytes);
        let _ = CommandHeader::peek(&bytes);
        let _ = DeviceControl::decode(&bytes);
    }
}

#[test]
fn a_new_owner_inherits_no_members_and_its_first_list_is_newer() {
    let old = udk(1);
    let mut dev = DeviceControl::new();
    let bob = member(1, 0xb0);
    let bob_keys = SenderKeys::derive(&C, &bob.key).unwrap();
    dev.accept_list(
        &C,
        &old,
        DEV,
        &list(&old, 1_790_000_000_000, std::slice::from_ref(&bob)),
    )
    .unwrap();
    dev.commit(
        &dev.open_command(&C, &old, DEV, NOW, &set(&bob_keys, 1, 5, "on"))
            .unwrap(),
    );
    // The device is paired by its new owner: members go, version and marks stay.
    dev.drop_members();
    let new = udk(2);
    assert!(unauthenticated(dev.open_command(
        &C,
        &new,
        DEV,
        NOW,
        &set(&bob_keys, 1, 6, "on")
    )));
    assert_eq!(dev.version(), 1_790_000_000_000);
    // The new owner's keeper takes versions from its clock: its first list is newer.
    let carol = member(1, 0xc0);
    let fresh = list(&new, 1_790_000_100_000, std::slice::from_ref(&carol));
    assert!(dev.accept_list(&C, &new, DEV, &fresh).unwrap().changed);
    let carol_keys = SenderKeys::derive(&C, &carol.key).unwrap();
    assert!(
        dev.open_command(&C, &new, DEV, NOW, &set(&carol_keys, 1, 1, "on"))
            .is_ok()
    );
    // The old owner's list, replayed, is refused.
    let old_list = list(&old, 1_790_000_000_001, std::slice::from_ref(&bob));
    assert!(dev.accept_list(&C, &new, DEV, &old_list).is_err());
}
