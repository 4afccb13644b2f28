//! Two links exchanging messages over a simulated channel that loses (up to 50 %), duplicates and reorders frames.
//!
//! Whatever the channel does, every message arrives at most once, intact and in order, every message the sender
//! was told is delivered did arrive, and every message ends in `Delivered` or `Failed`. `Failed` happens only when
//! the channel lost at least `max_retries + 1` frames while the message was in flight (each request for an
//! acknowledgement that went unanswered needs a loss of its own). When the channel never loses two frames in a row
//! in a direction (50 % loss at worst), nothing fails at all.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::Rng;

use custos_link::{
    Addr, Event, Link, LinkConfig, LinkError, SpreadingFactor, peek_addrs, time_on_air_us,
};
use proptest::prelude::*;

const ADDRS: [Addr; 2] = [Addr(0x01), Addr(0x02)];
const MAX_STEPS: usize = 200_000;

#[derive(Clone, Debug)]
struct Channel {
    seed: u64,
    loss_percent: u32,
    dup_percent: u32,
    /// Extra delay per frame, 0 to this, µs: frames overtake each other.
    reorder_us: u64,
    /// Never lose two frames in a row in one direction.
    bounded: bool,
}

struct Node<'a> {
    link: Link<'a>,
    to_send: Vec<Vec<u8>>,
    next: usize,
    /// Per message sent: the outcome, and the channel's losses when it was queued.
    outcomes: Vec<Option<Event>>,
    drops_at_send: Vec<u64>,
    received: Vec<Vec<u8>>,
    busy_until: u64,
}

struct Report {
    sent: [Vec<Vec<u8>>; 2],
    outcomes: [Vec<Option<Event>>; 2],
    received: [Vec<Vec<u8>>; 2],
    /// Per message sent, the losses while it was in flight.
    drops_in_flight: [Vec<u64>; 2],
}

fn config(mtu: usize, max_retries: u8) -> LinkConfig {
    LinkConfig {
        mtu,
        // Far above the round trip: a frame each way (≤ 400 ms at SF7), the peer's current frame, and reordering.
        ack_timeout_us: 2_000_000,
        max_retries,
        max_backoff_us: 16_000_000,
        jitter_us: 200_000,
        group_slot_us: 50_000,
    }
}

fn run(ch: &Channel, cfg: LinkConfig, messages: [Vec<Vec<u8>>; 2]) -> Report {
    let mut rng = Rng(ch.seed | 1);
    let size = 8 * 1024;
    let mut bufs: Vec<Vec<u8>> = (0..4).map(|_| vec![0u8; size]).collect();
    let [t0, r0, t1, r1] = &mut bufs[..] else {
        unreachable!()
    };
    let [m0, m1] = messages;
    let mut nodes = [
        Node {
            link: Link::new(cfg, ADDRS[0], ADDRS[1], t0, r0),
            outcomes: vec![None; m0.len()],
            drops_at_send: vec![0; m0.len()],
            to_send: m0,
            next: 0,
            received: Vec::new(),
            busy_until: 0,
        },
        Node {
            link: Link::new(cfg, ADDRS[1], ADDRS[0], t1, r1),
            outcomes: vec![None; m1.len()],
            drops_at_send: vec![0; m1.len()],
            to_send: m1,
            next: 0,
            received: Vec::new(),
            busy_until: 0,
        },
    ];
    let mut drops_in_flight: [Vec<u64>; 2] = [
        vec![0; nodes[0].to_send.len()],
        vec![0; nodes[1].to_send.len()],
    ];
    // (arrival time, sequence for a stable order, destination node, frame)
    let mut air: Vec<(u64, u64, usize, Vec<u8>)> = Vec::new();
    let mut seq = 0u64;
    let mut drops = 0u64;
    let mut last_dropped = [false; 2];
    let mut now = 0u64;
    let mut out = [0u8; 255];

    for step in 0.. {
        assert!(step < MAX_STEPS, "no progress: the links are stuck");
        // Hand each idle link its next message.
        for n in nodes.iter_mut() {
            if !n.link.is_busy() && n.next < n.to_send.len() {
                n.link.send(now, &n.to_send[n.next]).unwrap();
                n.drops_at_send[n.next] = drops;
                n.next += 1;
            }
        }
        // Each node whose radio is free sends what its link has.
        for k in 0..2 {
            let i = (k + step) % 2;
            let n = &mut nodes[i];
            if n.busy_until > now {
                continue;
            }
            if let Some(len) = n.link.poll_transmit(now, &mut out) {
                let frame = &out[..len];
                assert!(len <= cfg.mtu);
                assert_eq!(peek_addrs(frame), Some((ADDRS[1 - i], ADDRS[i])));
                let toa = time_on_air_us(SpreadingFactor::Sf7, len);
                n.busy_until = now + toa;
                let lose = rng.percent(ch.loss_percent) && !(ch.bounded && last_dropped[i]);
                last_dropped[i] = lose;
                if lose {
                    drops += 1;
                } else {
                    let copies = if rng.percent(ch.dup_percent) { 2 } else { 1 };
                    for _ in 0..copies {
                        let at = now + toa + rng.below(ch.reorder_us + 1);
                        air.push((at, seq, 1 - i, frame.to_vec()));
                        seq += 1;
                    }
                }
            }
            collect(&mut nodes[i], i, &mut drops_in_flight, drops);
        }
        // Frames that arrive now, in order of arrival.
        air.sort_by_key(|&(t, s, _, _)| (t, s));
        while air.first().is_some_and(|&(t, ..)| t <= now) {
            let (_, _, to, frame) = air.remove(0);
            let n = &mut nodes[to];
            match n.link.handle_frame(now, &frame) {
                // Late duplicates and overtaken acknowledgements are refused as such; nothing else may be.
                Ok(()) | Err(LinkError::Stale) => {}
                Err(e) => panic!("an honest frame was refused: {e:?} {frame:02x?}"),
            }
            collect(n, to, &mut drops_in_flight, drops);
        }
        let done = nodes.iter().all(|n| n.outcomes.iter().all(Option::is_some));
        if done && air.is_empty() {
            break;
        }
        // The next thing that happens: a frame lands, a radio frees, a link's timer.
        let mut next = air.first().map(|&(t, ..)| t);
        for n in &nodes {
            if !n.link.is_busy() && n.next < n.to_send.len() {
                next = Some(now);
            }
            let link_due = n.link.next_deadline().map(|t| t.max(n.busy_until));
            let wake = [link_due, (n.busy_until > now).then_some(n.busy_until)];
            for t in wake.into_iter().flatten() {
                next = Some(next.map_or(t, |x| x.min(t)));
            }
        }
        match next {
            Some(t) => now = t.max(now + 1),
            None => {
                // Nothing pending anywhere: every message must have an outcome.
                assert!(
                    done,
                    "a message neither delivered nor given up, and nothing pending"
                );
                break;
            }
        }
    }
    let [n0, n1] = nodes;
    Report {
        sent: [n0.to_send, n1.to_send],
        outcomes: [n0.outcomes, n1.outcomes],
        received: [n1.received, n0.received],
        drops_in_flight,
    }
}

/// Drain a node's events: outcomes of its messages, messages received.
fn collect(n: &mut Node<'_>, _i: usize, drops_in_flight: &mut [Vec<u64>; 2], drops: u64) {
    while let Some(e) = n.link.poll_event() {
        match e {
            Event::Received => {
                n.received.push(n.link.received().unwrap().to_vec());
                n.link.release_received();
            }
            Event::Delivered | Event::Failed => {
                // The message in flight is the last one handed to the link.
                let idx = n.next - 1;
                assert!(n.outcomes[idx].is_none(), "two outcomes for one message");
                n.outcomes[idx] = Some(e);
                drops_in_flight[_i][idx] = drops - n.drops_at_send[idx];
            }
        }
    }
}

/// The safety properties, whatever the channel.
fn check(r: &Report, max_retries: u8) {
    for dir in 0..2 {
        let (sent, outcomes, received) = (&r.sent[dir], &r.outcomes[dir], &r.received[dir]);
        // Every message got exactly one outcome.
        assert!(outcomes.iter().all(Option::is_some));
        // Received: intact, in order, no duplicates (the first byte is the message's index).
        let mut last = None;
        for m in received {
            let idx = usize::from(m[0]);
            assert_eq!(m, &sent[idx], "altered");
            assert!(
                last.is_none_or(|l| idx > l),
                "duplicated or out of order: {idx} after {last:?}"
            );
            last = Some(idx);
        }
        for (idx, o) in outcomes.iter().enumerate() {
            let got = received.iter().any(|m| usize::from(m[0]) == idx);
            match o {
                Some(Event::Delivered) => {
                    assert!(got, "message {idx} reported delivered but never received")
                }
                Some(Event::Failed) => assert!(
                    r.drops_in_flight[dir][idx] > u64::from(max_retries),
                    "message {idx} given up after only {} losses",
                    r.drops_in_flight[dir][idx]
                ),
                _ => unreachable!(),
            }
        }
    }
}

fn messages(max_len: usize, count: core::ops::Range<usize>) -> impl Strategy<Value = Vec<Vec<u8>>> {
    prop::collection::vec(prop::collection::vec(any::<u8>(), 1..=max_len), count).prop_map(
        |mut ms| {
            for (i, m) in ms.iter_mut().enumerate() {
                m[0] = i as u8;
            }
            ms
        },
    )
}

fn channel(bounded: bool) -> impl Strategy<Value = Channel> {
    (
        any::<u64>(),
        0u32..=50,
        0u32..=30,
        prop_oneof![Just(0u64), 0u64..=300_000],
    )
        .prop_map(
            move |(seed, loss_percent, dup_percent, reorder_us)| Channel {
                seed,
                loss_percent,
                dup_percent,
                reorder_us,
                bounded,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Random loss up to 50 %, duplication and reordering, both directions at once, few retries: exactly once,
    /// intact, in order; `Failed` only after enough losses.
    #[test]
    fn exactly_once_under_loss_duplication_and_reordering(
        ch in channel(false),
        mtu in prop_oneof![Just(24usize), Just(51), Just(115)],
        a in messages(570, 1..6),
        b in messages(570, 0..6),
    ) {
        let max_retries = 3;
        let report = run(&ch, config(mtu, max_retries), [a, b]);
        check(&report, max_retries);
    }

    /// Up to 50 % loss but never two frames in a row in one direction: every message is delivered.
    #[test]
    fn bounded_loss_never_fails(
        ch in channel(true),
        mtu in prop_oneof![Just(24usize), Just(51), Just(115)],
        a in messages(570, 1..6),
    ) {
        let max_retries = 3;
        let report = run(&ch, config(mtu, max_retries), [a, Vec::new()]);
        check(&report, max_retries);
        prop_assert!(report.outcomes[0].iter().all(|o| *o == Some(Event::Delivered)));
        prop_assert_eq!(&report.received[0], &report.sent[0]);
    }
}

/// A channel that loses everything: each message fails after exactly `max_retries + 1` requests (its burst of 3,
/// then 2 repeated requests: 5 frames lost), and the next message still goes; over a healthy channel all arrive.
#[test]
fn a_dead_channel_fails_each_message_then_heals() {
    let ch = Channel {
        seed: 7,
        loss_percent: 100,
        dup_percent: 0,
        reorder_us: 0,
        bounded: false,
    };
    let msgs: Vec<Vec<u8>> = (0..3u8).map(|i| vec![i; 100]).collect();
    let r = run(&ch, config(51, 2), [msgs, Vec::new()]);
    assert!(r.outcomes[0].iter().all(|o| *o == Some(Event::Failed)));
    assert!(r.received[0].is_empty());
    assert_eq!(r.drops_in_flight[0], [5, 5, 5]);
    check(&r, 2);
    let healed = Channel {
        loss_percent: 0,
        ..ch
    };
    let msgs: Vec<Vec<u8>> = (0..3u8).map(|i| vec![i; 100]).collect();
    let r = run(&healed, config(51, 2), [msgs.clone(), Vec::new()]);
    assert_eq!(r.received[0], msgs);
}
