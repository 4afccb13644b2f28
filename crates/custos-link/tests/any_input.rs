//! Any frame, any settings, any clock: a link, a group sender and a group member are handed near-genuine headers
//! and garbage, with the clock jumping forward by up to 2^64 µs or going back, under extreme settings (MTU 0 or
//! `usize::MAX`, timeouts, backoff, jitter and slots of 0 or `u64::MAX`, 0 to 255 retries) and buffers of 0 to 2,000
//! bytes. None may panic; every frame one emits parses, fits its MTU and is addressed as it should be; a message
//! held fits its buffer; and each runs beside a copy handed only the frames it accepted, which must stay
//! indistinguishable (a refused frame changes nothing, whatever the clock says).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use custos_link::{Addr, Frame, GroupReceiver, GroupSender, Link, LinkConfig};
use proptest::prelude::*;

const LOCAL: Addr = Addr(0x02);
const PEER: Addr = Addr(0x01);
const MEMBERS: [Addr; 3] = [PEER, Addr(0x03), Addr(0x04)];

#[derive(Clone, Debug)]
enum Op {
    Send(usize),
    /// dst, src, control, id, count, index, payload length: a header an attacker would try.
    Header(u8, u8, u8, u8, u8, u8, usize),
    Garbage(Vec<u8>),
    Poll,
    Release,
    Forward(u64),
    Back(u64),
}

fn op() -> impl Strategy<Value = Op> {
    let addr = |a: u8| prop_oneof![Just(a), Just(0xff), any::<u8>()];
    prop_oneof![
        1 => (0usize..2_000).prop_map(Op::Send),
        6 => (addr(LOCAL.0), addr(PEER.0), prop_oneof![Just(0x10u8), Just(0x11), Just(0x20), Just(0x21), any::<u8>()],
              0u8..4, 0u8..34, 0u8..34, 0usize..260)
            .prop_map(|(d, s, c, i, n, x, l)| Op::Header(d, s, c, i, n, x, l)),
        1 => prop::collection::vec(any::<u8>(), 0..80).prop_map(Op::Garbage),
        3 => Just(Op::Poll),
        1 => Just(Op::Release),
        2 => prop_oneof![0u64..10_000_000, any::<u64>()].prop_map(Op::Forward),
        1 => any::<u64>().prop_map(Op::Back),
    ]
}

fn config() -> impl Strategy<Value = LinkConfig> {
    let time = || prop_oneof![Just(0u64), Just(1_000), Just(u64::MAX)];
    (
        prop_oneof![
            Just(0usize),
            Just(9),
            Just(24),
            Just(51),
            Just(255),
            Just(usize::MAX)
        ],
        (time(), any::<u8>(), time(), time(), time()),
    )
        .prop_map(|(mtu, (ack, retries, backoff, jitter, slot))| LinkConfig {
            mtu,
            ack_timeout_us: ack,
            max_retries: retries,
            max_backoff_us: backoff,
            jitter_us: jitter,
            group_slot_us: slot,
        })
}

fn buffer() -> impl Strategy<Value = usize> {
    prop_oneof![Just(0usize), Just(10), Just(100), Just(2_000)]
}

/// A frame a state emitted: it parses, fits the MTU and goes from `src` to `dst`.
fn emitted(frame: &[u8], mtu: usize, dst: Addr, src: Addr) -> Result<(), TestCaseError> {
    prop_assert!(frame.len() <= mtu);
    let f = Frame::parse(frame).map_err(|e| TestCaseError::fail(format!("{e:?} {frame:02x?}")))?;
    prop_assert_eq!((f.dst(), f.src()), (dst, src));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1_000))]

    #[test]
    fn nothing_panics_and_refusals_change_nothing(
        cfg in config(),
        tx in buffer(),
        rx in buffer(),
        slot in 0u8..16,
        ops in prop::collection::vec(op(), 0..120),
    ) {
        let mut bufs: Vec<Vec<u8>> = [tx, rx, tx, rx, tx, tx, rx, rx].map(|n| vec![0u8; n]).into();
        let [xt, xr, yt, yr, gxt, gyt, mxr, myr] = &mut bufs[..] else { unreachable!() };
        let mut x = Link::new(cfg, LOCAL, PEER, xt, xr);
        let mut y = Link::new(cfg, LOCAL, PEER, yt, yr);
        let mut gx = GroupSender::new(cfg, LOCAL, &MEMBERS, gxt).unwrap();
        let mut gy = GroupSender::new(cfg, LOCAL, &MEMBERS, gyt).unwrap();
        let mut mx = GroupReceiver::new(cfg, LOCAL, PEER, slot, mxr).unwrap();
        let mut my = GroupReceiver::new(cfg, LOCAL, PEER, slot, myr).unwrap();
        let mtu = x.config().mtu;
        let msg: Vec<u8> = (0..2_000).map(|i| i as u8).collect();
        let (mut now, mut ox, mut oy) = (0u64, [0u8; 255], [0u8; 255]);
        for op in ops {
            let frame = match op {
                Op::Send(n) => {
                    prop_assert_eq!(x.send(now, &msg[..n]), y.send(now, &msg[..n]));
                    prop_assert_eq!(gx.send(now, &msg[..n]), gy.send(now, &msg[..n]));
                    None
                }
                Op::Header(d, s, c, i, n, x, l) => {
                    let mut f = vec![d, s, c, i, n, x];
                    f.extend((0..l).map(|b| b as u8));
                    Some(f)
                }
                Op::Garbage(g) => Some(g),
                Op::Poll => {
                    for _ in 0..40 {
                        let (nx, ny) = (x.poll_transmit(now, &mut ox), y.poll_transmit(now, &mut oy));
                        prop_assert_eq!(nx, ny);
                        let Some(n) = nx else { break };
                        prop_assert_eq!(&ox[..n], &oy[..n]);
                        emitted(&ox[..n], mtu, PEER, LOCAL)?;
                    }
                    for _ in 0..40 {
                        let (nx, ny) = (gx.poll_transmit(now, &mut ox), gy.poll_transmit(now, &mut oy));
                        prop_assert_eq!(nx, ny);
                        let Some(n) = nx else { break };
                        prop_assert_eq!(&ox[..n], &oy[..n]);
                        emitted(&ox[..n], mtu, Addr::BROADCAST, LOCAL)?;
                    }
                    let (nx, ny) = (mx.poll_transmit(now, &mut ox), my.poll_transmit(now, &mut oy));
                    prop_assert_eq!(nx, ny);
                    if let Some(n) = nx {
                        prop_assert_eq!(&ox[..n], &oy[..n]);
                        emitted(&ox[..n], mtu, PEER, LOCAL)?;
                    }
                    None
                }
                Op::Release => {
                    x.release_received();
                    y.release_received();
                    mx.release_received();
                    my.release_received();
                    None
                }
                Op::Forward(dt) => {
                    now = now.saturating_add(dt);
                    None
                }
                Op::Back(dt) => {
                    now = now.saturating_sub(dt);
                    None
                }
            };
            if let Some(f) = frame {
                if x.handle_frame(now, &f).is_ok() {
                    prop_assert_eq!(y.handle_frame(now, &f), Ok(()));
                }
                if gx.handle_frame(now, &f).is_ok() {
                    prop_assert_eq!(gy.handle_frame(now, &f), Ok(()));
                }
                if mx.handle_frame(now, &f).is_ok() {
                    prop_assert_eq!(my.handle_frame(now, &f), Ok(()));
                }
            }
            loop {
                let e = (x.poll_event(), gx.poll_event(), mx.poll_event());
                prop_assert_eq!(e, (y.poll_event(), gy.poll_event(), my.poll_event()));
                if e == (None, None, None) {
                    break;
                }
            }
            prop_assert_eq!(x.received(), y.received());
            prop_assert_eq!(mx.received(), my.received());
            prop_assert!(x.received().is_none_or(|m| m.len() <= rx));
            prop_assert!(mx.received().is_none_or(|m| m.len() <= rx));
            prop_assert_eq!(x.next_deadline(), y.next_deadline());
            prop_assert_eq!(gx.next_deadline(), gy.next_deadline());
            prop_assert_eq!(mx.next_deadline(), my.next_deadline());
            prop_assert_eq!(gx.unacknowledged(), gy.unacknowledged());
            for m in MEMBERS {
                prop_assert_eq!(gx.acknowledged(m), gy.acknowledged(m));
            }
        }
    }
}
