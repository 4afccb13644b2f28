//! The attacker's frames, generated: genuine frames of a peer, mutated one byte at a time, mixed with garbage and
//! replayed in any order. Two copies of one link run side by side: X is handed every frame, Y only those X
//! accepts; they must stay indistinguishable, so a refused frame never changes anything (the same check as the
//! fuzz target `link`, fuzz/fuzz_targets/link.rs, here on every `cargo test`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::{Op, frame_of, op};

use custos_link::{Addr, Frame, Link, LinkConfig, LinkError};
use proptest::prelude::*;

const LOCAL: Addr = Addr(0x02);
const PEER: Addr = Addr(0x01);

fn config() -> LinkConfig {
    LinkConfig {
        mtu: 51,
        ack_timeout_us: 1_000,
        max_retries: 3,
        max_backoff_us: 8_000,
        jitter_us: 100,
        group_slot_us: 100,
    }
}

/// The frames an honest peer sends: two messages to LOCAL (ids 0 and 1), with their repeated requests, and
/// acknowledgements of LOCAL's own message.
fn genuine_frames() -> Vec<Vec<u8>> {
    let (mut pt, mut pr, mut lt, mut lr) = ([0u8; 1024], [0u8; 1024], [0u8; 1024], [0u8; 1024]);
    let mut peer = Link::new(config(), PEER, LOCAL, &mut pt, &mut pr);
    let mut local = Link::new(config(), LOCAL, PEER, &mut lt, &mut lr);
    let mut frames = Vec::new();
    let mut out = [0u8; 255];
    local.send(0, &[7; 120]).unwrap();
    for (i, len) in [130usize, 60].into_iter().enumerate() {
        let msg: Vec<u8> = (0..len).map(|b| (b + i) as u8).collect();
        peer.send(0, &msg).unwrap();
        for t in [0u64, 2_000, 5_000] {
            while let Some(n) = peer.poll_transmit(t, &mut out) {
                frames.push(out[..n].to_vec());
            }
        }
        for f in frames.clone() {
            let _ = local.handle_frame(6_000, &f);
        }
        while let Some(n) = local.poll_transmit(6_000, &mut out) {
            let _ = peer.handle_frame(6_000, &out[..n]);
        }
        while peer.poll_event().is_some() {}
        local.release_received();
    }
    // Acknowledgements of LOCAL's message (3 fragments), partial and full, as the peer would send them.
    for bitmap in [0u32, 1, 5, 7] {
        frames.push([&[LOCAL.0, PEER.0, 0x20, 0, 3][..], &bitmap.to_be_bytes()].concat());
    }
    frames
}

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
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn refused_frames_change_nothing(ops in prop::collection::vec(op(), 0..80)) {
        let pool = genuine_frames();
        let (mut xt, mut xr, mut yt, mut yr) = ([0u8; 1024], [0u8; 1024], [0u8; 1024], [0u8; 1024]);
        let mut x = Link::new(config(), LOCAL, PEER, &mut xt, &mut xr);
        let mut y = Link::new(config(), LOCAL, PEER, &mut yt, &mut yr);
        x.send(0, &[7; 120]).unwrap();
        y.send(0, &[7; 120]).unwrap();
        let mut now = 0u64;
        let (mut ox, mut oy) = ([0u8; 255], [0u8; 255]);
        for (dt, op) in ops {
            now += u64::from(dt);
            let frame = match op {
                Op::Frame { .. } | Op::Garbage(_) => frame_of(&pool, op),
                Op::Poll => {
                    loop {
                        let (nx, ny) = (x.poll_transmit(now, &mut ox), y.poll_transmit(now, &mut oy));
                        prop_assert_eq!(nx, ny);
                        let Some(n) = nx else { break };
                        prop_assert_eq!(&ox[..n], &oy[..n]);
                        let f = Frame::parse(&ox[..n]).unwrap();
                        prop_assert_eq!((f.dst(), f.src()), (PEER, LOCAL));
                    }
                    None
                }
                Op::Release => {
                    x.release_received();
                    y.release_received();
                    None
                }
            };
            if let Some(f) = frame {
                match x.handle_frame(now, &f) {
                    Ok(()) => prop_assert_eq!(y.handle_frame(now, &f), Ok(())),
                    Err(LinkError::Busy) => prop_assert!(false, "Busy is for send"),
                    Err(_) => {}
                }
            }
            same_state(&mut x, &mut y);
        }
    }
}

/// The genuine frames alone, in order, deliver the peer's two messages, and the partial acknowledgements are
/// taken as progress (a pool the link refuses outright would leave its sending half untested).
#[test]
fn the_pool_is_genuine() {
    let pool = genuine_frames();
    for f in &pool {
        assert_eq!(custos_link::peek_addrs(f), Some((LOCAL, PEER)), "{f:02x?}");
    }
    let (mut t, mut r) = ([0u8; 1024], [0u8; 1024]);
    let mut sender = Link::new(config(), LOCAL, PEER, &mut t, &mut r);
    sender.send(0, &[7; 120]).unwrap();
    let sacks: Vec<&Vec<u8>> = pool.iter().filter(|f| f[2] == 0x20 && f[3] == 0).collect();
    for sack in &sacks[sacks.len() - 4..sacks.len() - 1] {
        assert_eq!(sender.handle_frame(0, sack), Ok(()), "{sack:02x?}");
    }
    assert!(
        sender.is_busy(),
        "partial acknowledgements completed the message"
    );
    let (mut t, mut r) = ([0u8; 1024], [0u8; 1024]);
    let mut link = Link::new(config(), LOCAL, PEER, &mut t, &mut r);
    let mut got = Vec::new();
    for f in &pool {
        let _ = link.handle_frame(0, f);
        if let Some(m) = link.received() {
            got.push(m.to_vec());
            link.release_received();
        }
    }
    assert_eq!(got.len(), 2);
    assert_eq!(got[0], (0..130).map(|b| b as u8).collect::<Vec<u8>>());
}
