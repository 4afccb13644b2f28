//! A reliable link layer for LoRa-sized frames: `no_std`, no heap, sans-IO (docs/lora.md).
//!
//! - [`airtime`]: LoRa time on air by Semtech's formula, and the EU868 payload limit per [`SpreadingFactor`].
//! - [`duty`]: the EU868 duty-cycle budget of a radio on a sub-band ([`DutyCycle`], [`SubBand`]).
//! - [`frame`]: the frames, data and selective acknowledgement, a link's or a group's ([`Frame`]), with 1-byte
//!   addresses ([`Addr`], of which [`Addr::BROADCAST`] is reserved for a group's data).
//! - [`Link`]: one link from a local address to a peer, which cuts messages into frames that fit the MTU, sends
//!   them in bursts that ask for one acknowledgement at their end, resends only what the acknowledgement's bitmap
//!   shows missing, backs off exponentially when no acknowledgement comes, and delivers each incoming message
//!   once, whatever the loss, duplication and reordering.
//! - [`GroupSender`] and [`GroupReceiver`]: one message to up to [`MAX_MEMBERS`] nodes with one transmission (a
//!   LoRa channel is a broadcast medium): data frames to [`Addr::BROADCAST`], one bitmap per member, bursts of what
//!   any member lacks, and the members' acknowledgements in distinct slots so that they do not collide.
//!
//! # Driving it
//!
//! The caller owns the radio, the clock (µs, any origin, never going back) and the buffers. One [`DutyCycle`] per
//! radio; one [`Link`] per peer (a gateway has one per node). The radio is half-duplex: the caller decides when
//! it transmits.
//!
//! ```text
//! Link::new(config, local, peer, tx_buf, rx_buf)
//! link.send(now, msg)                 -> Result<(), LinkError>   one message in flight at a time (Busy)
//! link.is_busy()                      -> bool                    a message is in flight
//! peek_addrs(frame)                   -> Option<(dst, src)>      which link a frame is for
//! link.handle_frame(now, frame)       -> Result<(), LinkError>   a frame from the radio; refusals change nothing
//! link.poll_transmit(now, &mut out)   -> Option<usize>           the next frame to send now, if any
//! link.poll_event()                   -> Option<Event>           Delivered / Failed (outgoing), Received (incoming)
//! link.received()                     -> Option<&[u8]>           the message, after Received ...
//! link.release_received()                                        ... until released
//! link.next_deadline()                -> Option<u64>             call poll_transmit then, even if nothing arrives
//! duty.wait_for_us(now, toa) -> u64 ; duty.record(now, time_on_air_us(sf, len))
//!
//! GroupSender::new(config, local, &members, tx_buf) -> Result   member k answers in slot k
//! GroupReceiver::new(config, local, sender, slot, rx_buf) -> Result
//! is_group(frame)                     -> bool                    a group's frame, not a link's
//! ```
//!
//! A group sender and a group receiver are driven like a link (`send`, `handle_frame`, `poll_transmit`,
//! `poll_event`, `next_deadline`; `received` and `release_received` on the receiver). A node routes each frame it
//! hears by its header: to [`Addr::BROADCAST`], to its [`GroupReceiver`] for the frame's source; to itself and
//! [`is_group`], to its [`GroupSender`]; to itself otherwise, to its [`Link`] with the source.
//!
//! A loop: whenever the radio is idle and `duty.wait_for_us(now, time_on_air_us(sf, mtu)) == 0` (the frame's
//! length is not known before a link hands it out, so budget for the longest), ask the links (round robin) for a
//! frame with `poll_transmit`; put the first one on air for `time_on_air_us(sf, len)` and `duty.record` it. Hand
//! each frame heard to the link `peek_addrs` names, then drain `poll_event`. Sleep until the earliest
//! `next_deadline`, the duty-cycle wait, or the next frame. `custos-sim` is such a loop.
//!
//! ```
//! use custos_link::{Addr, Event, Link, LinkConfig, SpreadingFactor};
//!
//! let config = LinkConfig::for_sf(SpreadingFactor::Sf10);
//! let (mut a_tx, mut a_rx, mut b_tx, mut b_rx) = ([0u8; 256], [0u8; 256], [0u8; 256], [0u8; 256]);
//! let mut a = Link::new(config, Addr(1), Addr(2), &mut a_tx, &mut a_rx);
//! let mut b = Link::new(config, Addr(2), Addr(1), &mut b_tx, &mut b_rx);
//! let msg: [u8; 120] = core::array::from_fn(|i| i as u8);
//! a.send(0, &msg)?;
//! let mut frame = [0u8; 51];
//! let mut now = 0;
//! // A perfect channel: a's three fragments, then b's one acknowledgement.
//! while let Some(n) = a.poll_transmit(now, &mut frame) {
//!     b.handle_frame(now, &frame[..n])?;
//!     now += 1_000;
//! }
//! assert_eq!(b.poll_event(), Some(Event::Received));
//! assert_eq!(b.received(), Some(&msg[..]));
//! b.release_received();
//! let n = b.poll_transmit(now, &mut frame).unwrap_or(0);
//! a.handle_frame(now, &frame[..n])?;
//! assert_eq!(a.poll_event(), Some(Event::Delivered));
//! # Ok::<(), custos_link::LinkError>(())
//! ```
//!
//! One message to a group of two:
//!
//! ```
//! use custos_link::{Addr, Event, GroupReceiver, GroupSender, LinkConfig, SpreadingFactor};
//!
//! let config = LinkConfig::for_sf(SpreadingFactor::Sf10);
//! let (mut tx, mut rx1, mut rx2) = ([0u8; 512], [0u8; 512], [0u8; 512]);
//! let mut gateway = GroupSender::new(config, Addr(0), &[Addr(1), Addr(2)], &mut tx)?;
//! let mut one = GroupReceiver::new(config, Addr(1), Addr(0), 0, &mut rx1)?;
//! let mut two = GroupReceiver::new(config, Addr(2), Addr(0), 1, &mut rx2)?;
//! let list = [7u8; 300]; // 7 frames at SF10, sent once for both
//! gateway.send(0, &list)?;
//! let mut frame = [0u8; 51];
//! while let Some(n) = gateway.poll_transmit(0, &mut frame) {
//!     one.handle_frame(1_000, &frame[..n])?;
//!     two.handle_frame(1_000, &frame[..n])?;
//! }
//! assert_eq!((one.received(), two.received()), (Some(&list[..]), Some(&list[..])));
//! // Each answers in its own slot: member 1 at once, member 2 a slot later.
//! assert_eq!(one.next_deadline(), Some(1_000));
//! assert_eq!(two.next_deadline(), Some(1_000 + config.group_slot_us));
//! for (member, at) in [(&mut one, 1_000), (&mut two, 1_000 + config.group_slot_us)] {
//!     let n = member.poll_transmit(at, &mut frame).unwrap_or(0);
//!     gateway.handle_frame(at + 300_000, &frame[..n])?;
//! }
//! assert_eq!(gateway.poll_event(), Some(Event::Delivered));
//! # Ok::<(), custos_link::LinkError>(())
//! ```
//!
//! # Limits
//!
//! A message has at most [`MAX_FRAGMENTS`] (32) fragments of MTU − 6 bytes: 6,912 bytes at SF7–8 (MTU 222),
//! 3,488 at SF9 (115), 1,440 at SF10–12 (51), and no more than the buffers hold. The link authenticates nothing:
//! anyone on the air can forge a frame, so what it promises an attacker is only no panic, bounded memory, and
//! that a malformed frame changes nothing. Integrity and freshness are the job of what it carries (sealed
//! records and uplinks, docs/wire.md).
//!
//! This crate must never panic, allocate or read a clock; time and buffers are passed in.
#![no_std]
#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

#[cfg(test)]
extern crate std;

pub mod airtime;
pub mod duty;
mod error;
pub mod frame;
mod group;
mod link;

pub use airtime::{SpreadingFactor, time_on_air_us};
pub use duty::{DutyCycle, SubBand};
pub use error::LinkError;
pub use frame::{
    Addr, Frame, HEADER_LEN, MAX_FRAGMENTS, MAX_FRAME, SACK_LEN, is_group, peek_addrs,
};
pub use group::{GroupReceiver, GroupSender, MAX_MEMBERS};
pub use link::{EVENT_CAPACITY, Event, GROUP_SLOT_GUARD_US, Link, LinkConfig, MIN_MTU};
