//! Groups (docs/lora.md §9): one sender, 1 to 16 members, over a simulated broadcast channel that loses (up to
//! 40 %, independently per member and per frame), duplicates and reorders frames.
//!
//! Whatever the channel does, every member gets every message at most once, intact and in order; a message the
//! sender reports `Delivered` reached every member; a member the sender does not list as unacknowledged after
//! `Failed` has the message; `Failed` happens only when the channel lost at least `max_retries + 1` frames while
//! the message was in flight (each request round without progress needs a loss of its own). Members answer each
//! request in distinct slots. Refused frames change nothing, in the sender and in a member (two copies side by
//! side, as tests/refusals.rs does for a link). The test vectors of §9 are read from the page.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::{Op, PAGE, Rng, frame_of, op, vector};

use std::collections::BTreeMap;

use custos_link::{
    Addr, Event, Frame, GROUP_SLOT_GUARD_US, GroupReceiver, GroupSender, LinkConfig, LinkError,
    MAX_MEMBERS, SACK_LEN, SpreadingFactor, is_group, peek_addrs, time_on_air_us,
};
use proptest::prelude::*;

const SENDER: Addr = Addr(0x00);
const MAX_STEPS: usize = 400_000;

#[derive(Clone, Debug)]
struct Channel {
    seed: u64,
    loss_percent: u32,
    dup_percent: u32,
    /// Extra delay per frame copy, 0 to this, µs: frames overtake each other.
    reorder_us: u64,
}

fn config(mtu: usize, max_retries: u8) -> LinkConfig {
    LinkConfig {
        mtu,
        // Far above the round trip: a frame each way (≤ 400 ms at SF7) and reordering; the slots come on top.
        ack_timeout_us: 2_000_000,
        max_retries,
        max_backoff_us: 16_000_000,
        jitter_us: 200_000,
        group_slot_us: time_on_air_us(SpreadingFactor::Sf7, SACK_LEN) + GROUP_SLOT_GUARD_US,
    }
}

struct Member<'a> {
    rx: GroupReceiver<'a>,
    received: Vec<Vec<u8>>,
    busy_until: u64,
}

/// A frame copy on its way: (arrival time, sequence for a stable order), its destination (`None`: the sender),
/// the transmission it is a copy of.
struct OnAir {
    at: u64,
    seq: u64,
    to: Option<usize>,
    transmission: u64,
    frame: Vec<u8>,
}

struct Report {
    sent: Vec<Vec<u8>>,
    outcomes: Vec<Option<Event>>,
    /// Per message given up, the members the sender listed as unacknowledged.
    unacknowledged: Vec<Vec<Addr>>,
    /// Per message, the losses while it was in flight.
    drops_in_flight: Vec<u64>,
    /// Per member, what it delivered.
    received: Vec<Vec<Vec<u8>>>,
    /// Per transmission of a request, the members that took it and the delay of their answer.
    answer_delays: BTreeMap<u64, Vec<(usize, u64)>>,
}

fn run(ch: &Channel, cfg: LinkConfig, members: usize, messages: Vec<Vec<u8>>) -> Report {
    let mut rng = Rng(ch.seed | 1);
    let size = 4 * 1024;
    let addrs: Vec<Addr> = (1..=members as u8).map(Addr).collect();
    let mut tx = vec![0u8; size];
    let mut bufs: Vec<Vec<u8>> = (0..members).map(|_| vec![0u8; size]).collect();
    let mut sender = GroupSender::new(cfg, SENDER, &addrs, &mut tx).unwrap();
    let mut nodes: Vec<Member<'_>> = bufs
        .iter_mut()
        .enumerate()
        .map(|(k, buf)| Member {
            rx: GroupReceiver::new(cfg, addrs[k], SENDER, k as u8, buf).unwrap(),
            received: Vec::new(),
            busy_until: 0,
        })
        .collect();
    let mut outcomes = vec![None; messages.len()];
    let mut unacknowledged = vec![Vec::new(); messages.len()];
    let mut drops_at_send = vec![0u64; messages.len()];
    let mut drops_in_flight = vec![0u64; messages.len()];
    let mut answer_delays: BTreeMap<u64, Vec<(usize, u64)>> = BTreeMap::new();
    let mut next = 0usize;
    let mut sender_busy_until = 0u64;
    let mut air: Vec<OnAir> = Vec::new();
    let mut seq = 0u64;
    let mut transmission = 0u64;
    let mut drops = 0u64;
    let mut now = 0u64;
    let mut out = [0u8; 255];

    for step in 0.. {
        assert!(step < MAX_STEPS, "no progress: the group is stuck");
        if !sender.is_busy() && next < messages.len() {
            sender.send(now, &messages[next]).unwrap();
            drops_at_send[next] = drops;
            next += 1;
        }
        // The sender, if its radio is free: one frame for every member, each copy lost on its own.
        if sender_busy_until <= now
            && let Some(len) = sender.poll_transmit(now, &mut out)
        {
            let frame = &out[..len];
            assert!(len <= cfg.mtu);
            assert_eq!(peek_addrs(frame), Some((Addr::BROADCAST, SENDER)));
            assert!(is_group(frame));
            let toa = time_on_air_us(SpreadingFactor::Sf7, len);
            sender_busy_until = now + toa;
            transmission += 1;
            for k in 0..members {
                if rng.percent(ch.loss_percent) {
                    drops += 1;
                    continue;
                }
                let copies = if rng.percent(ch.dup_percent) { 2 } else { 1 };
                for _ in 0..copies {
                    let at = now + toa + rng.below(ch.reorder_us + 1);
                    air.push(OnAir {
                        at,
                        seq,
                        to: Some(k),
                        transmission,
                        frame: frame.to_vec(),
                    });
                    seq += 1;
                }
            }
        }
        collect_sender(
            &mut sender,
            next,
            &mut outcomes,
            &mut unacknowledged,
            &mut drops_in_flight,
            &drops_at_send,
            drops,
        );
        // The members' answers, each when its slot has come and its radio is free.
        for (k, m) in nodes.iter_mut().enumerate() {
            if m.busy_until > now {
                continue;
            }
            if let Some(len) = m.rx.poll_transmit(now, &mut out) {
                let frame = &out[..len];
                assert_eq!(peek_addrs(frame), Some((SENDER, addrs[k])));
                assert!(is_group(frame));
                let toa = time_on_air_us(SpreadingFactor::Sf7, len);
                m.busy_until = now + toa;
                if rng.percent(ch.loss_percent) {
                    drops += 1;
                } else {
                    let copies = if rng.percent(ch.dup_percent) { 2 } else { 1 };
                    for _ in 0..copies {
                        let at = now + toa + rng.below(ch.reorder_us + 1);
                        air.push(OnAir {
                            at,
                            seq,
                            to: None,
                            transmission: 0,
                            frame: frame.to_vec(),
                        });
                        seq += 1;
                    }
                }
            }
        }
        // Frames that arrive now, in order of arrival.
        air.sort_by_key(|f| (f.at, f.seq));
        while air.first().is_some_and(|f| f.at <= now) {
            let OnAir {
                to,
                transmission: tx_id,
                frame,
                ..
            } = air.remove(0);
            let result = match to {
                None => sender.handle_frame(now, &frame),
                Some(k) => {
                    let m = &mut nodes[k];
                    let owed_before = m.rx.next_deadline();
                    let r = m.rx.handle_frame(now, &frame);
                    // The first copy of a request a member answers (a duplicate copy that arrives after the
                    // answer went is answered again, as by a link).
                    if frame[2] == 0x11
                        && owed_before.is_none()
                        && let Some(due) = m.rx.next_deadline()
                    {
                        let answers = answer_delays.entry(tx_id).or_default();
                        if !answers.iter().any(|&(j, _)| j == k) {
                            answers.push((k, due - now));
                        }
                    }
                    while let Some(e) = m.rx.poll_event() {
                        assert_eq!(e, Event::Received);
                        m.received.push(m.rx.received().unwrap().to_vec());
                        m.rx.release_received();
                    }
                    r
                }
            };
            match result {
                // Late duplicates and answers to a message already settled are refused as such; nothing else
                // may be.
                Ok(()) | Err(LinkError::Stale) => {}
                Err(e) => panic!("an honest frame was refused: {e:?} {frame:02x?}"),
            }
            collect_sender(
                &mut sender,
                next,
                &mut outcomes,
                &mut unacknowledged,
                &mut drops_in_flight,
                &drops_at_send,
                drops,
            );
        }
        let done = outcomes.iter().all(Option::is_some);
        if done && air.is_empty() && nodes.iter().all(|m| m.rx.next_deadline().is_none()) {
            break;
        }
        // The next thing that happens: a frame lands, a radio frees, a timer or a slot.
        let mut wake: Vec<u64> = air.iter().map(|f| f.at).collect();
        if !sender.is_busy() && next < messages.len() {
            wake.push(now);
        }
        if let Some(t) = sender.next_deadline() {
            wake.push(t.max(sender_busy_until));
        }
        for m in &nodes {
            if let Some(t) = m.rx.next_deadline() {
                wake.push(t.max(m.busy_until));
            }
        }
        match wake.into_iter().min() {
            Some(t) => now = t.max(now + 1),
            None => {
                assert!(
                    done,
                    "a message neither delivered nor given up, and nothing pending"
                );
                break;
            }
        }
    }
    Report {
        sent: messages,
        outcomes,
        unacknowledged,
        drops_in_flight,
        received: nodes.into_iter().map(|m| m.received).collect(),
        answer_delays,
    }
}

fn collect_sender(
    sender: &mut GroupSender<'_>,
    next: usize,
    outcomes: &mut [Option<Event>],
    unacknowledged: &mut [Vec<Addr>],
    drops_in_flight: &mut [u64],
    drops_at_send: &[u64],
    drops: u64,
) {
    while let Some(e) = sender.poll_event() {
        assert_ne!(e, Event::Received);
        let idx = next - 1;
        assert!(outcomes[idx].is_none(), "two outcomes for one message");
        outcomes[idx] = Some(e);
        drops_in_flight[idx] = drops - drops_at_send[idx];
        if e == Event::Failed {
            assert!(!sender.unacknowledged().is_empty());
            unacknowledged[idx] = sender.unacknowledged().to_vec();
        } else {
            assert!(sender.unacknowledged().is_empty());
        }
    }
}

/// The safety properties, whatever the channel.
fn check(r: &Report, cfg: &LinkConfig) {
    assert!(r.outcomes.iter().all(Option::is_some));
    for (k, received) in r.received.iter().enumerate() {
        let member = Addr(k as u8 + 1);
        // Intact, in order, no duplicates (the first byte is the message's index).
        let mut last = None;
        for m in received {
            let idx = usize::from(m[0]);
            assert_eq!(m, &r.sent[idx], "altered");
            assert!(
                last.is_none_or(|l| idx > l),
                "member {k}: duplicated or out of order: {idx} after {last:?}"
            );
            last = Some(idx);
        }
        for (idx, o) in r.outcomes.iter().enumerate() {
            let got = received.iter().any(|m| usize::from(m[0]) == idx);
            match o {
                Some(Event::Delivered) => {
                    assert!(got, "message {idx} delivered but member {k} never got it")
                }
                Some(Event::Failed) => {
                    if !r.unacknowledged[idx].contains(&member) {
                        assert!(got, "member {k} acknowledged message {idx} without it");
                    }
                }
                _ => unreachable!(),
            }
        }
    }
    for (idx, o) in r.outcomes.iter().enumerate() {
        if *o == Some(Event::Failed) {
            assert!(
                r.drops_in_flight[idx] > u64::from(cfg.max_retries),
                "message {idx} given up after only {} losses",
                r.drops_in_flight[idx]
            );
        }
    }
    // One request, distinct slots: member k answers k slots after it heard the request.
    for answers in r.answer_delays.values() {
        let mut delays: Vec<u64> = answers.iter().map(|&(_, d)| d).collect();
        delays.sort_unstable();
        delays.dedup();
        assert_eq!(
            delays.len(),
            answers.len(),
            "two answers due at once: {answers:?}"
        );
        for &(k, d) in answers {
            assert_eq!(d, k as u64 * cfg.group_slot_us);
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

fn channel(max_loss: u32) -> impl Strategy<Value = Channel> {
    (
        any::<u64>(),
        0u32..=max_loss,
        0u32..=30,
        prop_oneof![Just(0u64), 0u64..=300_000],
    )
        .prop_map(|(seed, loss_percent, dup_percent, reorder_us)| Channel {
            seed,
            loss_percent,
            dup_percent,
            reorder_us,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// 1 to 16 members, loss up to 40 % per member and frame, duplication, reordering; few retries: at most
    /// once, intact, in order; Delivered only when every member has it; Failed only after enough losses; distinct
    /// slots.
    #[test]
    fn every_member_gets_every_message_at_most_once(
        ch in channel(40),
        members in 1usize..=MAX_MEMBERS,
        mtu in prop_oneof![Just(24usize), Just(51), Just(115)],
        msgs in messages(400, 1..4),
    ) {
        let cfg = config(mtu, 3);
        let report = run(&ch, cfg, members, msgs);
        check(&report, &cfg);
    }

    /// The same with 30 retries (more than `LinkConfig::for_sf`'s 12, for 40 % loss per member): every message
    /// reaches every member.
    #[test]
    fn with_enough_retries_every_member_gets_everything(
        ch in channel(40),
        members in 1usize..=MAX_MEMBERS,
        msgs in messages(300, 1..3),
    ) {
        let cfg = config(51, 30);
        let report = run(&ch, cfg, members, msgs);
        check(&report, &cfg);
        prop_assert!(report.outcomes.iter().all(|o| *o == Some(Event::Delivered)));
        for received in &report.received {
            prop_assert_eq!(received, &report.sent);
        }
    }
}

/// A perfect channel and 16 members: one burst, one answer each, each in its own slot.
#[test]
fn sixteen_members_one_burst() {
    let ch = Channel {
        seed: 1,
        loss_percent: 0,
        dup_percent: 0,
        reorder_us: 0,
    };
    let cfg = config(51, 3);
    let msgs = vec![(0..300).map(|i| i as u8).collect::<Vec<u8>>()];
    let r = run(&ch, cfg, 16, msgs.clone());
    check(&r, &cfg);
    assert_eq!(r.outcomes, [Some(Event::Delivered)]);
    assert!(r.received.iter().all(|m| *m == msgs));
    // One request (the burst's last frame), sixteen distinct slots.
    assert_eq!(r.answer_delays.len(), 1);
    let answers = r.answer_delays.values().next().unwrap();
    assert_eq!(answers.len(), 16);
}

/// A member that hears nothing: the others get the message; the sender gives up naming that member alone.
#[test]
fn a_dead_member_is_named() {
    let cfg = config(51, 3);
    let addrs: Vec<Addr> = (1..=3).map(Addr).collect();
    let mut tx = [0u8; 512];
    let mut bufs = [[0u8; 512]; 3];
    let mut g = GroupSender::new(cfg, SENDER, &addrs, &mut tx).unwrap();
    let mut rs: Vec<GroupReceiver<'_>> = bufs
        .iter_mut()
        .enumerate()
        .map(|(k, b)| GroupReceiver::new(cfg, addrs[k], SENDER, k as u8, b).unwrap())
        .collect();
    let msg = [5u8; 200];
    g.send(0, &msg).unwrap();
    let mut now = 0;
    let mut out = [0u8; 64];
    let mut failed = false;
    for _ in 0..100 {
        while let Some(n) = g.poll_transmit(now, &mut out) {
            let frame = out[..n].to_vec();
            for r in rs.iter_mut().take(2) {
                r.handle_frame(now, &frame).unwrap();
            }
        }
        for (k, r) in rs.iter_mut().enumerate().take(2) {
            let at = now + k as u64 * cfg.group_slot_us;
            if let Some(n) = r.poll_transmit(at, &mut out) {
                g.handle_frame(at, &out[..n]).unwrap();
            }
        }
        if let Some(e) = g.poll_event() {
            assert_eq!(e, Event::Failed);
            failed = true;
            break;
        }
        now = g.next_deadline().unwrap();
    }
    assert!(failed);
    assert_eq!(g.unacknowledged(), [Addr(3)]);
    assert_eq!(rs[0].received(), Some(&msg[..]));
    assert_eq!(rs[1].received(), Some(&msg[..]));
    assert_eq!(rs[2].received(), None);
}

/// A member of two groups: each answer goes to its own sender, and one sender refuses the other's.
#[test]
fn an_answer_for_another_senders_group_is_refused() {
    let cfg = config(51, 3);
    let (s0, s1, m) = (Addr(0), Addr(9), Addr(4));
    let (mut t0, mut t1, mut r0, mut r1) = ([0u8; 256], [0u8; 256], [0u8; 256], [0u8; 256]);
    let mut g0 = GroupSender::new(cfg, s0, &[m], &mut t0).unwrap();
    let mut g1 = GroupSender::new(cfg, s1, &[Addr(3), m], &mut t1).unwrap();
    let mut m0 = GroupReceiver::new(cfg, m, s0, 0, &mut r0).unwrap();
    let mut m1 = GroupReceiver::new(cfg, m, s1, 1, &mut r1).unwrap();
    g0.send(0, b"from zero").unwrap();
    g1.send(0, b"from nine").unwrap();
    let mut out = [0u8; 64];
    let n = g0.poll_transmit(0, &mut out).unwrap();
    let f0 = out[..n].to_vec();
    let n = g1.poll_transmit(0, &mut out).unwrap();
    let f1 = out[..n].to_vec();
    // Each member state takes its own sender's frames only.
    assert_eq!(m0.handle_frame(0, &f1), Err(LinkError::WrongAddress));
    assert_eq!(m1.handle_frame(0, &f0), Err(LinkError::WrongAddress));
    m0.handle_frame(0, &f0).unwrap();
    m1.handle_frame(0, &f1).unwrap();
    let n = m0.poll_transmit(0, &mut out).unwrap();
    let a0 = out[..n].to_vec();
    assert_eq!(m1.poll_transmit(0, &mut out), None, "slot 1 is later");
    let n = m1.poll_transmit(cfg.group_slot_us, &mut out).unwrap();
    let a1 = out[..n].to_vec();
    // Same id, same count, same bitmap: only the destination tells them apart.
    assert_eq!(a0[2..], a1[2..]);
    let before = (g0.next_deadline(), g0.acknowledged(m));
    assert_eq!(g0.handle_frame(0, &a1), Err(LinkError::WrongAddress));
    assert_eq!((g0.next_deadline(), g0.acknowledged(m)), before);
    assert_eq!(g1.handle_frame(0, &a0), Err(LinkError::WrongAddress));
    g0.handle_frame(0, &a0).unwrap();
    assert_eq!(g0.poll_event(), Some(Event::Delivered));
    g1.handle_frame(0, &a1).unwrap();
    assert_eq!(g1.acknowledged(m), Some(1));
    assert_eq!(g1.poll_event(), None, "member 3 has not answered");
}

// ---- Refused frames change nothing ----

const ME: Addr = Addr(0x02);

fn small_config() -> LinkConfig {
    LinkConfig {
        mtu: 51,
        ack_timeout_us: 1_000,
        max_retries: 3,
        max_backoff_us: 8_000,
        jitter_us: 100,
        group_slot_us: 50,
    }
}

/// The frames an honest group produces: the sender's two messages (ids 0 and 1) with their repeated requests,
/// and its members' answers to a message of 3 fragments, partial and full; and some frames of another sender
/// and of a link.
fn genuine_frames() -> Vec<Vec<u8>> {
    let cfg = small_config();
    let mut tx = [0u8; 1024];
    let mut g = GroupSender::new(cfg, SENDER, &[Addr(1), ME, Addr(3)], &mut tx).unwrap();
    let mut frames = Vec::new();
    let mut out = [0u8; 255];
    for (i, len) in [130usize, 60].into_iter().enumerate() {
        let msg: Vec<u8> = (0..len).map(|b| (b + i) as u8).collect();
        g.send(0, &msg).unwrap();
        for t in [0u64, 3_000, 7_000, 20_000, 40_000] {
            while let Some(n) = g.poll_transmit(t, &mut out) {
                frames.push(out[..n].to_vec());
            }
        }
        while g.poll_event().is_some() {}
    }
    for member in [1u8, 2, 3, 7] {
        for bitmap in [0u32, 1, 5, 7] {
            frames.push([&[0, member, 0x21, 2, 3][..], &bitmap.to_be_bytes()].concat());
        }
    }
    // Another sender's group frame, a link's data and acknowledgement.
    frames.push(vec![0xff, 9, 0x11, 0, 1, 0, 1, 2, 3]);
    frames.push(vec![ME.0, 0, 0x11, 0, 1, 0, 1, 2, 3]);
    frames.push(vec![0, 1, 0x20, 2, 3, 0, 0, 0, 7]);
    frames
}

fn same_sender(x: &mut GroupSender<'_>, y: &mut GroupSender<'_>) {
    loop {
        let (ex, ey) = (x.poll_event(), y.poll_event());
        assert_eq!(ex, ey, "a refused frame changed the events");
        if ex.is_none() {
            break;
        }
    }
    assert_eq!(
        x.next_deadline(),
        y.next_deadline(),
        "a refused frame changed the timers"
    );
    assert_eq!(x.is_busy(), y.is_busy());
    assert_eq!(x.unacknowledged(), y.unacknowledged());
    for m in [Addr(1), ME, Addr(3)] {
        assert_eq!(
            x.acknowledged(m),
            y.acknowledged(m),
            "a refused frame changed a bitmap"
        );
    }
}

fn same_member(x: &mut GroupReceiver<'_>, y: &mut GroupReceiver<'_>) {
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
        "a refused frame changed the message"
    );
    assert_eq!(
        x.next_deadline(),
        y.next_deadline(),
        "a refused frame changed the answer owed"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(384))]

    /// A sender with a message of 3 fragments in flight: X is handed everything, Y what X accepts.
    #[test]
    fn refused_frames_change_nothing_in_a_sender(ops in prop::collection::vec(op(), 0..80)) {
        let pool = genuine_frames();
        let cfg = small_config();
        let members = [Addr(1), ME, Addr(3)];
        let (mut xt, mut yt) = ([0u8; 1024], [0u8; 1024]);
        let mut x = GroupSender::new(cfg, SENDER, &members, &mut xt).unwrap();
        let mut y = GroupSender::new(cfg, SENDER, &members, &mut yt).unwrap();
        // Ids 0 and 1 given up on a dead channel; id 2 (3 fragments) in flight.
        for s in [&mut x, &mut y] {
            s.set_next_message_id(2).unwrap();
            s.send(0, &[7; 120]).unwrap();
        }
        let mut now = 0u64;
        let (mut ox, mut oy) = ([0u8; 255], [0u8; 255]);
        for (dt, op) in ops {
            now += u64::from(dt);
            match op {
                Op::Poll => loop {
                    let (nx, ny) = (x.poll_transmit(now, &mut ox), y.poll_transmit(now, &mut oy));
                    prop_assert_eq!(nx, ny);
                    let Some(n) = nx else { break };
                    prop_assert_eq!(&ox[..n], &oy[..n]);
                    let f = Frame::parse(&ox[..n]).unwrap();
                    prop_assert_eq!((f.dst(), f.src()), (Addr::BROADCAST, SENDER));
                },
                Op::Release => {
                    // Between messages, the next one.
                    if !x.is_busy() {
                        x.send(now, &[8; 50]).unwrap();
                        y.send(now, &[8; 50]).unwrap();
                    }
                }
                op => {
                    let f = frame_of(&pool, op).unwrap();
                    if x.handle_frame(now, &f).is_ok() {
                        prop_assert!(is_group(&f));
                        prop_assert_eq!(y.handle_frame(now, &f), Ok(()));
                    }
                }
            }
            same_sender(&mut x, &mut y);
        }
    }

    /// A member (slot 1) of SENDER's group: X is handed everything, Y what X accepts.
    #[test]
    fn refused_frames_change_nothing_in_a_member(ops in prop::collection::vec(op(), 0..80)) {
        let pool = genuine_frames();
        let cfg = small_config();
        let (mut xr, mut yr) = ([0u8; 1024], [0u8; 1024]);
        let mut x = GroupReceiver::new(cfg, ME, SENDER, 1, &mut xr).unwrap();
        let mut y = GroupReceiver::new(cfg, ME, SENDER, 1, &mut yr).unwrap();
        let mut now = 0u64;
        let (mut ox, mut oy) = ([0u8; 255], [0u8; 255]);
        for (dt, op) in ops {
            now += u64::from(dt);
            match op {
                Op::Poll => loop {
                    let (nx, ny) = (x.poll_transmit(now, &mut ox), y.poll_transmit(now, &mut oy));
                    prop_assert_eq!(nx, ny);
                    let Some(n) = nx else { break };
                    prop_assert_eq!(&ox[..n], &oy[..n]);
                    let f = Frame::parse(&ox[..n]).unwrap();
                    prop_assert!(matches!(f, Frame::GroupSack(_)));
                    prop_assert_eq!((f.dst(), f.src()), (SENDER, ME));
                },
                Op::Release => {
                    x.release_received();
                    y.release_received();
                }
                op => {
                    let f = frame_of(&pool, op).unwrap();
                    if x.handle_frame(now, &f).is_ok() {
                        prop_assert_eq!(peek_addrs(&f), Some((Addr::BROADCAST, SENDER)));
                        prop_assert_eq!(y.handle_frame(now, &f), Ok(()));
                    }
                }
            }
            same_member(&mut x, &mut y);
        }
    }
}

/// The genuine frames alone, in order, deliver the sender's two messages to a member.
#[test]
fn the_pool_is_genuine() {
    let pool = genuine_frames();
    let mut r = [0u8; 1024];
    let mut m = GroupReceiver::new(small_config(), ME, SENDER, 1, &mut r).unwrap();
    let mut got = Vec::new();
    for f in &pool {
        let _ = m.handle_frame(0, f);
        if let Some(msg) = m.received() {
            got.push(msg.to_vec());
            m.release_received();
        }
    }
    assert_eq!(got.len(), 2);
    assert_eq!(got[0], (0..130).map(|b| b as u8).collect::<Vec<u8>>());
}

// ---- The test vectors of docs/lora.md §9 ----

#[test]
fn the_pages_group_vectors() {
    let config = LinkConfig::for_sf(SpreadingFactor::Sf10);
    assert_eq!(config.mtu, 51);
    // The page's slot: a 9-byte SACK's 247.808 ms at SF10 and the 20 ms guard.
    assert_eq!(config.group_slot_us, 267_808);
    let slot = config.group_slot_us;
    let members = [Addr(0x01), Addr(0x02), Addr(0x03)];
    let mut tx = [0u8; 256];
    let mut bufs = [[0u8; 256]; 3];
    let mut g = GroupSender::new(config, Addr(0x00), &members, &mut tx).unwrap();
    let mut rs: Vec<GroupReceiver<'_>> = bufs
        .iter_mut()
        .enumerate()
        .map(|(k, b)| GroupReceiver::new(config, members[k], Addr(0x00), k as u8, b).unwrap())
        .collect();
    let msg: Vec<u8> = (0..100).collect();
    g.send(0, &msg).unwrap();
    let mut out = [0u8; 51];
    let mut frames = Vec::new();
    while let Some(n) = g.poll_transmit(0, &mut out) {
        frames.push(out[..n].to_vec());
    }
    assert_eq!(
        frames,
        [vector("gdata 0"), vector("gdata 1"), vector("gdata 2")]
    );

    // Member 0x02 loses fragment 1; the others get all three. All hear the request at t.
    let t = 1_000_000;
    for (k, r) in rs.iter_mut().enumerate() {
        for (i, f) in frames.iter().enumerate() {
            if !(k == 1 && i == 1) {
                r.handle_frame(t, f).unwrap();
            }
        }
    }
    let dues: Vec<u64> = rs.iter().map(|r| r.next_deadline().unwrap()).collect();
    assert_eq!(dues, [t, t + slot, t + 2 * slot]);
    let mut acks = Vec::new();
    for (r, &due) in rs.iter_mut().zip(&dues) {
        let n = r.poll_transmit(due, &mut out).unwrap();
        acks.push(out[..n].to_vec());
    }
    assert_eq!(
        acks,
        [
            vector("gsack 01 111"),
            vector("gsack 02 101"),
            vector("gsack 03 111")
        ]
    );
    for (a, &due) in acks.iter().zip(&dues) {
        g.handle_frame(due + 300_000, a).unwrap();
    }
    // Every member answered and one made progress: fragment 1 goes again at once, to all, asking.
    let n = g.poll_transmit(t + 2 * slot + 300_000, &mut out).unwrap();
    assert_eq!(out[..n], vector("gresend 1"));
    let t2 = 5_000_000;
    for r in rs.iter_mut() {
        r.handle_frame(t2, &out[..n]).unwrap();
        assert_eq!(r.received(), Some(&msg[..]));
    }
    let mut out2 = [0u8; 51];
    let n = rs[1].poll_transmit(t2 + slot, &mut out2).unwrap();
    assert_eq!(out2[..n], vector("gsack 02 111"));
    g.handle_frame(t2 + slot + 300_000, &out2[..n]).unwrap();
    assert_eq!(g.poll_event(), Some(Event::Delivered));

    // The times the page gives.
    assert_eq!(time_on_air_us(SpreadingFactor::Sf10, 16), 329_728);
    assert!(PAGE.contains("329.7 ms for the 16-byte `gdata 2`"));
    assert!(PAGE.contains("t + 267.808 ms and t + 535.616 ms"));
    assert_eq!((slot, 2 * slot), (267_808, 535_616));
    let window = config.ack_timeout_us + 3 * slot;
    assert_eq!(window, 2_667_680);
    assert!(PAGE.contains("2.668 s"));
}

/// The slot table of §9: a SACK's time on air, the slot, the link's timeout and the group's wait.
#[test]
fn the_pages_slot_table() {
    use SpreadingFactor::*;
    let ms3 = |us: u64| {
        let whole = us / 1000;
        let whole = if whole >= 1000 {
            format!("{},{:03}", whole / 1000, whole % 1000)
        } else {
            whole.to_string()
        };
        format!("{whole}.{:03}", us % 1000)
    };
    let ms1 = |us: u64| format!("{:.1}", us as f64 / 1e3);
    let s3 = |us: u64| format!("{:.3}", us as f64 / 1e6);
    for (sf, name) in [(Sf7, "SF7"), (Sf9, "SF9"), (Sf10, "SF10"), (Sf12, "SF12")] {
        let c = LinkConfig::for_sf(sf);
        let sack = time_on_air_us(sf, SACK_LEN);
        assert_eq!(c.group_slot_us, sack + GROUP_SLOT_GUARD_US);
        let mut tx = [0u8; 64];
        let three: Vec<Addr> = (1..=3).map(Addr).collect();
        let g = GroupSender::new(c, SENDER, &three, &mut tx).unwrap();
        assert_eq!(g.answer_window_us(), 3 * c.group_slot_us);
        let row = format!(
            "| {name} | {} ms | {} ms | {} s | {} s | {} s |",
            ms1(sack),
            ms3(c.group_slot_us),
            s3(c.ack_timeout_us),
            s3(c.ack_timeout_us + 3 * c.group_slot_us),
            s3(c.ack_timeout_us + 16 * c.group_slot_us),
        );
        assert!(PAGE.contains(&row), "docs/lora.md §9 lacks {row}");
    }
}
