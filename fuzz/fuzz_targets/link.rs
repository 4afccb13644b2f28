//! Arbitrary frames into the LoRa link layer (docs/lora.md): no panic, whatever arrives in whatever order, and a
//! refused frame changes nothing. Two copies of one link run side by side: X is handed every frame, Y only the
//! frames X accepted, and the two must stay indistinguishable (same answers, frames, events, messages, timers).
//! Every frame the link emits is well-formed, addressed to the peer and within the MTU; every frame the parser
//! accepts re-encodes to the same bytes. The same frames go to two copies of a group sender (LOCAL sending to
//! PEER and two other members) and of a group member (LOCAL in PEER's group, slot 1), with the same checks
//! (docs/lora.md §9); a frame is accepted by at most one of the three, as `is_group` and the addresses route it.
//!
//! Input: a setup byte (MTU and the link's own outgoing message), then operations of two bytes `op ‖ len`:
//! `op & 3` = 0 or 1: a frame of the next `len` bytes; 2: poll for frames to send; 3: release the received
//! messages (and give an idle group sender its next message).
//! `op >> 2` advances the clock by that many 100 µs steps first, so timers fire.
#![no_main]

use custos_link::{
    Addr, Frame, GroupReceiver, GroupSender, Link, LinkConfig, LinkError, is_group, peek_addrs,
};
use libfuzzer_sys::fuzz_target;

const LOCAL: Addr = Addr(0x02);
const PEER: Addr = Addr(0x01);
const MTUS: [usize; 5] = [51, 115, 222, 9, 24];
const MEMBERS: [Addr; 3] = [PEER, Addr(0x03), Addr(0x04)];

fn same_state(x: &mut Link<'_>, y: &mut Link<'_>) {
    loop {
        let (ex, ey) = (x.poll_event(), y.poll_event());
        assert_eq!(ex, ey, "a refused frame changed the events");
        if ex.is_none() {
            break;
        }
    }
    assert_eq!(
        x.received(),
        y.received(),
        "a refused frame changed the message received"
    );
    assert_eq!(
        x.next_deadline(),
        y.next_deadline(),
        "a refused frame changed the timers"
    );
    assert_eq!(x.is_busy(), y.is_busy());
    if let Some(m) = x.received() {
        assert!(m.len() <= 1024);
    }
}

fn same_sender(x: &mut GroupSender<'_>, y: &mut GroupSender<'_>) {
    loop {
        let (ex, ey) = (x.poll_event(), y.poll_event());
        assert_eq!(ex, ey, "a refused frame changed the group's events");
        if ex.is_none() {
            break;
        }
    }
    assert_eq!(
        x.next_deadline(),
        y.next_deadline(),
        "a refused frame changed the group's timers"
    );
    assert_eq!(x.is_busy(), y.is_busy());
    assert_eq!(x.unacknowledged(), y.unacknowledged());
    for m in MEMBERS {
        assert_eq!(x.acknowledged(m), y.acknowledged(m));
    }
}

fn same_member(x: &mut GroupReceiver<'_>, y: &mut GroupReceiver<'_>) {
    loop {
        let (ex, ey) = (x.poll_event(), y.poll_event());
        assert_eq!(ex, ey, "a refused frame changed the member's events");
        if ex.is_none() {
            break;
        }
    }
    assert_eq!(
        x.received(),
        y.received(),
        "a refused frame changed the member's message"
    );
    assert_eq!(
        x.next_deadline(),
        y.next_deadline(),
        "a refused frame changed the answer owed"
    );
    if let Some(m) = x.received() {
        assert!(m.len() <= 1024);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&setup, mut rest)) = data.split_first() else {
        return;
    };
    let config = LinkConfig {
        mtu: MTUS[usize::from(setup) % MTUS.len()],
        ack_timeout_us: 1_000,
        max_retries: 3,
        max_backoff_us: 8_000,
        jitter_us: 100,
        group_slot_us: 50,
    };
    let (mut xt, mut xr, mut yt, mut yr) = ([0u8; 1024], [0u8; 1024], [0u8; 1024], [0u8; 1024]);
    let mut x = Link::new(config, LOCAL, PEER, &mut xt, &mut xr);
    let mut y = Link::new(config, LOCAL, PEER, &mut yt, &mut yr);
    // The link's own message in flight, so that acknowledgements have something to act on.
    let own: Vec<u8> = (0..usize::from(setup) * 4).map(|i| i as u8).collect();
    assert_eq!(x.send(0, &own), y.send(0, &own));
    // A group sender of LOCAL with its own message, and LOCAL's state as a member of PEER's group.
    let (mut gxt, mut gyt, mut mxr, mut myr) = ([0u8; 1024], [0u8; 1024], [0u8; 1024], [0u8; 1024]);
    let mut gx = GroupSender::new(config, LOCAL, &MEMBERS, &mut gxt).expect("a valid group");
    let mut gy = GroupSender::new(config, LOCAL, &MEMBERS, &mut gyt).expect("a valid group");
    assert_eq!(gx.send(0, &own), gy.send(0, &own));
    let mut mx = GroupReceiver::new(config, LOCAL, PEER, 1, &mut mxr).expect("a valid member");
    let mut my = GroupReceiver::new(config, LOCAL, PEER, 1, &mut myr).expect("a valid member");

    let mut now = 0u64;
    let (mut ox, mut oy) = ([0u8; 255], [0u8; 255]);
    while let [op, len, tail @ ..] = rest {
        now += u64::from(*op >> 2) * 100;
        match op & 3 {
            0 | 1 => {
                let n = usize::from(*len).min(tail.len());
                let (frame, after) = tail.split_at(n);
                rest = after;
                if let Ok(parsed) = Frame::parse(frame) {
                    let mut again = [0u8; 255];
                    let m = parsed.write(&mut again).unwrap();
                    assert_eq!(&again[..m], frame, "two encodings of one frame");
                }
                let mut accepted = 0;
                if x.handle_frame(now, frame).is_ok() {
                    assert!(peek_addrs(frame) == Some((LOCAL, PEER)) && !is_group(frame));
                    assert_eq!(y.handle_frame(now, frame), Ok(()), "the copies diverged");
                    accepted += 1;
                }
                match gx.handle_frame(now, frame) {
                    Ok(()) => {
                        let (dst, src) = peek_addrs(frame).expect("a frame");
                        assert!(dst == LOCAL && MEMBERS.contains(&src) && is_group(frame));
                        assert_eq!(
                            gy.handle_frame(now, frame),
                            Ok(()),
                            "the group copies diverged"
                        );
                        accepted += 1;
                    }
                    Err(LinkError::Busy) => panic!("Busy is for send"),
                    Err(_) => {}
                }
                if mx.handle_frame(now, frame).is_ok() {
                    assert!(peek_addrs(frame) == Some((Addr::BROADCAST, PEER)) && is_group(frame));
                    assert_eq!(
                        my.handle_frame(now, frame),
                        Ok(()),
                        "the member copies diverged"
                    );
                    accepted += 1;
                }
                assert!(accepted <= 1, "a frame taken by two states");
            }
            2 => {
                rest = tail;
                loop {
                    let (nx, ny) = (x.poll_transmit(now, &mut ox), y.poll_transmit(now, &mut oy));
                    assert_eq!(nx, ny, "a refused frame changed what is sent");
                    let Some(n) = nx else { break };
                    assert_eq!(ox[..n], oy[..n]);
                    assert!(n <= config.mtu);
                    let f = Frame::parse(&ox[..n]).expect("the link sent a malformed frame");
                    assert_eq!((f.dst(), f.src()), (PEER, LOCAL));
                    assert!(!f.is_group());
                }
                loop {
                    let (nx, ny) = (
                        gx.poll_transmit(now, &mut ox),
                        gy.poll_transmit(now, &mut oy),
                    );
                    assert_eq!(nx, ny, "a refused frame changed what the group sends");
                    let Some(n) = nx else { break };
                    assert_eq!(ox[..n], oy[..n]);
                    assert!(n <= config.mtu);
                    let f = Frame::parse(&ox[..n]).expect("the group sent a malformed frame");
                    assert!(matches!(f, Frame::Data(_)));
                    assert_eq!((f.dst(), f.src()), (Addr::BROADCAST, LOCAL));
                }
                loop {
                    let (nx, ny) = (
                        mx.poll_transmit(now, &mut ox),
                        my.poll_transmit(now, &mut oy),
                    );
                    assert_eq!(nx, ny, "a refused frame changed what the member sends");
                    let Some(n) = nx else { break };
                    assert_eq!(ox[..n], oy[..n]);
                    let f = Frame::parse(&ox[..n]).expect("the member sent a malformed frame");
                    assert!(matches!(f, Frame::GroupSack(_)));
                    assert_eq!((f.dst(), f.src()), (PEER, LOCAL));
                }
            }
            _ => {
                rest = tail;
                x.release_received();
                y.release_received();
                mx.release_received();
                my.release_received();
                if !gx.is_busy() {
                    assert_eq!(gx.send(now, &own), gy.send(now, &own));
                }
            }
        }
        same_state(&mut x, &mut y);
        same_sender(&mut gx, &mut gy);
        same_member(&mut mx, &mut my);
    }
});
