//! The link between a local address and one peer: fragmentation, selective acknowledgements, retransmission
//! (docs/lora.md §4–§5).
//!
//! One [`Link`] carries one message at a time in each direction, in the caller's two buffers. Airtime is the scarce
//! resource, so the sender sends a whole burst and asks for one acknowledgement with its last frame; the receiver
//! answers with one bitmap of what it holds; only the missing fragments go again.
//!
//! It must never panic or allocate, whatever arrives, and a frame it refuses must leave it exactly as it was.
//!
//! The receiving half ([`Receiver`]) is shared with the group member state ([`GroupReceiver`](crate::GroupReceiver)),
//! and the sender's helpers with [`GroupSender`](crate::GroupSender) (docs/lora.md §9).

use crate::LinkError;
use crate::airtime::{SpreadingFactor, time_on_air_us};
use crate::frame::{
    Addr, Data, Frame, HEADER_LEN, MAX_FRAGMENTS, MAX_FRAME, SACK_LEN, Sack, full_bitmap,
};

/// The smallest MTU: an acknowledgement must fit in a frame.
pub const MIN_MTU: usize = SACK_LEN;
/// How many events a link keeps for [`Link::poll_event`]; past that the oldest is dropped.
pub const EVENT_CAPACITY: usize = 8;

/// A link's settings. Both ends of a link should use the same.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkConfig {
    /// The largest frame to send or accept, header included, e.g. [`SpreadingFactor::max_payload`]. Clamped to
    /// [`MIN_MTU`]`..=`[`MAX_FRAME`] by [`Link::new`].
    pub mtu: usize,
    /// How long to wait for an acknowledgement after the frame that asked for it starts, before asking again: at
    /// least that frame's time on air, the acknowledgement's, and the peer's turnaround.
    pub ack_timeout_us: u64,
    /// How many times to ask again, without any progress in between, before giving up ([`Event::Failed`]).
    pub max_retries: u8,
    /// The longest wait between two requests for the same acknowledgement, before jitter: the exponential backoff
    /// stops doubling there.
    pub max_backoff_us: u64,
    /// Up to this much is added to every wait, so that nodes whose frames collided do not ask again in lockstep.
    pub jitter_us: u64,
    /// The length of one answer slot of a group (docs/lora.md §9): a group member in slot k answers a request for
    /// an acknowledgement k × this after it heard it, so that members do not answer at once; a
    /// [`GroupSender`](crate::GroupSender) waits `members × group_slot_us` longer than a link for the answers. At
    /// least an acknowledgement's time on air plus the members' timing error.
    pub group_slot_us: u64,
}

/// What [`LinkConfig::for_sf`] adds to an acknowledgement's time on air to make a group's answer slot: a member's
/// turnaround and timing error (it counts its slot from the moment it was handed the request), 20 ms.
pub const GROUP_SLOT_GUARD_US: u64 = 20_000;

impl LinkConfig {
    /// Settings for a spreading factor: the EU868 payload limit as MTU; an acknowledgement timeout of a full
    /// frame's time on air, an acknowledgement's and 1 s of turnaround (LoRaWAN's RX1 delay); 12 retries; a backoff
    /// that stops doubling at 64 timeouts; jitter up to a quarter of the timeout; a group answer slot of an
    /// acknowledgement's time on air plus [`GROUP_SLOT_GUARD_US`].
    pub fn for_sf(sf: SpreadingFactor) -> LinkConfig {
        let mtu = sf.max_payload();
        let sack_us = time_on_air_us(sf, SACK_LEN);
        let ack_timeout_us = time_on_air_us(sf, mtu)
            .saturating_add(sack_us)
            .saturating_add(1_000_000);
        LinkConfig {
            mtu,
            ack_timeout_us,
            // A round fails if either the request or the answer is lost (half the rounds at 30 % loss), so
            // LoRaWAN's 8 retransmissions of a one-way confirmed frame are too few here.
            max_retries: 12,
            max_backoff_us: ack_timeout_us.saturating_mul(64),
            jitter_us: ack_timeout_us / 4,
            group_slot_us: sack_us.saturating_add(GROUP_SLOT_GUARD_US),
        }
    }

    /// The MTU a link uses: [`mtu`](Self::mtu) clamped to [`MIN_MTU`]`..=`[`MAX_FRAME`].
    pub fn effective_mtu(&self) -> usize {
        self.mtu.clamp(MIN_MTU, MAX_FRAME)
    }

    /// The payload of every fragment but a message's last: the MTU less the 6-byte header.
    pub fn fragment_len(&self) -> usize {
        self.effective_mtu() - HEADER_LEN
    }

    /// The largest message at this MTU: [`MAX_FRAGMENTS`] full fragments (buffers may limit it further).
    pub fn max_message_len(&self) -> usize {
        self.fragment_len() * MAX_FRAGMENTS
    }

    /// The wait after the `retries`-th repeated request for an acknowledgement (0 for the first request), before
    /// jitter: `min(ack_timeout_us · 2^retries, max(max_backoff_us, ack_timeout_us))`.
    pub fn backoff_us(&self, retries: u8) -> u64 {
        let factor = 1u64.checked_shl(u32::from(retries)).unwrap_or(u64::MAX);
        self.ack_timeout_us
            .saturating_mul(factor)
            .min(self.max_backoff_us.max(self.ack_timeout_us))
    }
}

/// What happened on a link, for [`Link::poll_event`] (and [`GroupSender::poll_event`](crate::GroupSender::poll_event),
/// [`GroupReceiver::poll_event`](crate::GroupReceiver::poll_event)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// The outgoing message was acknowledged in full (by every member, for a group); [`Link::send`] takes the next.
    Delivered,
    /// The outgoing message was given up after [`LinkConfig::max_retries`] requests without progress; the peer may
    /// or may not have it (for a group: [`GroupSender::unacknowledged`](crate::GroupSender::unacknowledged) lists
    /// the members that had not acknowledged all of it). [`Link::send`] takes the next.
    Failed,
    /// An incoming message is complete: read it with [`Link::received`], then [`Link::release_received`].
    Received,
}

/// The outgoing message in flight.
#[derive(Clone, Copy, Debug)]
struct Outgoing {
    id: u8,
    len: usize,
    count: u8,
    /// Fragments the peer acknowledged.
    acked: u32,
    /// Fragments still to send in this burst.
    pending: u32,
    phase: Phase,
    /// Requests for an acknowledgement since the last progress, beyond the first.
    retries: u8,
}

#[derive(Clone, Copy, Debug)]
pub(crate) enum Phase {
    /// Frames to send, since this time.
    Burst { since: u64 },
    /// The burst's last frame asked for an acknowledgement; ask again at `deadline`.
    AwaitAck { deadline: u64 },
}

/// The incoming side.
#[derive(Clone, Copy, Debug)]
enum Rx {
    Idle,
    Assembling(Assembly),
    /// A complete message of this length is in the receive buffer until released.
    Held {
        len: usize,
    },
}

/// A message being reassembled in the receive buffer. Fragment i is at i × `frag`; until `frag` is known (the
/// last fragment came first) the last fragment waits at the very end of the buffer.
#[derive(Clone, Copy, Debug)]
struct Assembly {
    id: u8,
    count: u8,
    have: u32,
    /// The fragment size, learnt from the first fragment other than the last.
    frag: Option<usize>,
    /// The last fragment's length, once it is here.
    last_len: Option<usize>,
}

/// The last message delivered: its duplicates are acknowledged, never delivered again.
#[derive(Clone, Copy, Debug)]
struct Done {
    id: u8,
    count: u8,
}

/// An acknowledgement owed to the peer for message `id`, due from a time on.
#[derive(Clone, Copy, Debug)]
struct Owed {
    id: u8,
    since: u64,
}

/// An acknowledgement a [`Receiver`] owes, as it would go now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Ack {
    /// When it may go (at once for a link; at the member's slot for a group).
    pub(crate) due: u64,
    pub(crate) id: u8,
    pub(crate) count: u8,
    pub(crate) bitmap: u32,
}

/// The receiving half of a [`Link`], and the whole of a [`GroupReceiver`](crate::GroupReceiver): a message
/// reassembled in the caller's buffer, the last message delivered (whose duplicates are answered, never delivered
/// again), and the acknowledgement owed. Frames reach it checked for their addresses.
#[derive(Debug)]
pub(crate) struct Receiver<'a> {
    buf: &'a mut [u8],
    rx: Rx,
    last: Option<Done>,
    sack: Option<Owed>,
}

impl<'a> Receiver<'a> {
    pub(crate) fn new(buf: &'a mut [u8]) -> Self {
        Receiver {
            buf,
            rx: Rx::Idle,
            last: None,
            sack: None,
        }
    }

    /// The complete message, until released.
    pub(crate) fn received(&self) -> Option<&[u8]> {
        match self.rx {
            Rx::Held { len } => self.buf.get(..len),
            _ => None,
        }
    }

    pub(crate) fn release(&mut self) {
        if let Rx::Held { .. } = self.rx {
            self.rx = Rx::Idle;
        }
    }

    /// Take a data frame whose addresses the caller checked; `Ok(true)` if it completed a message. An
    /// acknowledgement it asks for is due `delay_us` after `now_us` (0 for a link, the slot's delay for a group).
    /// A refused frame changes nothing.
    pub(crate) fn on_data(
        &mut self,
        now_us: u64,
        d: &Data<'_>,
        delay_us: u64,
    ) -> Result<bool, LinkError> {
        if let Some(done) = self.last {
            if d.id == done.id {
                // The message already delivered, again: its acknowledgement was lost. Answer, never deliver twice.
                if d.count != done.count {
                    return Err(LinkError::InconsistentCount);
                }
                if d.ack_request {
                    self.owe_sack(now_us, d.id, delay_us);
                }
                return Ok(false);
            }
            if is_older(d.id, done.id) {
                return Err(LinkError::Stale);
            }
        }
        let mut next = match self.rx {
            Rx::Held { .. } => return Err(LinkError::RxBusy),
            Rx::Assembling(a) if a.id == d.id => {
                if d.count != a.count {
                    return Err(LinkError::InconsistentCount);
                }
                a
            }
            Rx::Assembling(a) if is_older(d.id, a.id) => return Err(LinkError::Stale),
            // A newer message: the sender gave up the one in progress (it sends one at a time), so it goes, but
            // only once this frame has passed every check.
            Rx::Assembling(_) | Rx::Idle => Assembly {
                id: d.id,
                count: d.count,
                have: 0,
                frag: None,
                last_len: None,
            },
        };
        next.accept(d, self.buf)?;
        let complete = next.have == full_bitmap(next.count);
        if complete {
            self.rx = Rx::Held {
                len: next.message_len(),
            };
            self.last = Some(Done {
                id: next.id,
                count: next.count,
            });
        } else {
            self.rx = Rx::Assembling(next);
        }
        if d.ack_request {
            self.owe_sack(now_us, d.id, delay_us);
        }
        Ok(complete)
    }

    /// Owe an acknowledgement of message `id`, due `delay_us` from `now_us`. One already owed for it stays as it
    /// is (a duplicate request), unless it is delayed and overdue: a new request then sets a new slot, rather
    /// than answering at once over an earlier slot of another member.
    fn owe_sack(&mut self, now_us: u64, id: u8, delay_us: u64) {
        match self.sack {
            Some(o) if o.id == id && (delay_us == 0 || o.since >= now_us) => {}
            _ => {
                self.sack = Some(Owed {
                    id,
                    since: now_us.saturating_add(delay_us),
                })
            }
        }
    }

    /// The acknowledgement owed, as it would go now; `None` if none is owed or its message is gone.
    pub(crate) fn ack(&self) -> Option<Ack> {
        let owed = self.sack?;
        let (count, bitmap) = match (self.rx, self.last) {
            (Rx::Assembling(a), _) if a.id == owed.id => (a.count, a.have),
            (_, Some(d)) if d.id == owed.id => (d.count, full_bitmap(d.count)),
            _ => return None,
        };
        Some(Ack {
            due: owed.since,
            id: owed.id,
            count,
            bitmap,
        })
    }

    /// The acknowledgement owed went (or its message is gone): nothing is owed any more.
    pub(crate) fn clear_ack(&mut self) {
        self.sack = None;
    }
}

/// A small ring of events, so that a caller that polls late still sees them in order.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Events {
    ring: [Event; EVENT_CAPACITY],
    head: usize,
    len: usize,
}

impl Events {
    pub(crate) const fn new() -> Events {
        Events {
            ring: [Event::Delivered; EVENT_CAPACITY],
            head: 0,
            len: 0,
        }
    }

    pub(crate) fn push(&mut self, event: Event) {
        if self.len == EVENT_CAPACITY {
            self.head = (self.head + 1) % EVENT_CAPACITY;
            self.len -= 1;
        }
        self.ring[(self.head + self.len) % EVENT_CAPACITY] = event;
        self.len += 1;
    }

    pub(crate) fn pop(&mut self) -> Option<Event> {
        if self.len == 0 {
            return None;
        }
        let event = self.ring[self.head];
        self.head = (self.head + 1) % EVENT_CAPACITY;
        self.len -= 1;
        Some(event)
    }
}

/// Whether message id `a` is older than `b`: ids count up by one per message and wrap, so `a` is older when it is
/// up to 128 behind (RFC 1982 serial number arithmetic on 8 bits).
pub(crate) fn is_older(a: u8, b: u8) -> bool {
    b.wrapping_sub(a).wrapping_sub(1) < 128
}

/// The lowest set bit of `bits` alone (0 for 0).
pub(crate) fn lowest_bit(bits: u32) -> u32 {
    bits & bits.wrapping_neg()
}

/// The highest set bit of `bits` alone (0 for 0).
fn highest_bit(bits: u32) -> u32 {
    match bits.checked_ilog2() {
        Some(i) => 1 << i,
        None => 0,
    }
}

/// The fragment to carry a repeated request for an acknowledgement: the highest one not acknowledged. That is
/// the message's last fragment, the shortest, when it is missing; a shorter frame costs less airtime and, under a
/// duty cycle, a shorter silence before the next.
pub(crate) fn request_carrier(unacked: u32) -> u32 {
    highest_bit(unacked)
}

/// A reliable link from `local` to `peer` over caller-provided buffers: see the crate documentation for how to
/// drive it.
#[derive(Debug)]
pub struct Link<'a> {
    config: LinkConfig,
    local: Addr,
    peer: Addr,
    tx_buf: &'a mut [u8],
    /// The id of the next message sent.
    next_id: u8,
    out: Option<Outgoing>,
    rx: Receiver<'a>,
    events: Events,
    /// xorshift32 state for the backoff jitter (not a secret, just decorrelation).
    rng: u32,
}

impl<'a> Link<'a> {
    /// A link from `local` to `peer`. Outgoing messages are copied into `tx_buf` and incoming ones reassembled in
    /// `rx_buf`, so their lengths bound the messages each way (with [`LinkConfig::max_message_len`]). The MTU is
    /// clamped to [`MIN_MTU`]`..=`[`MAX_FRAME`] (a LoRa frame holds at most 255 bytes, and an acknowledgement 9).
    /// The first message sent has id 0.
    ///
    /// Neither address may be [`Addr::BROADCAST`], which is no node's: a link with a broadcast end sends nothing
    /// ([`send`](Self::send) refuses with [`LinkError::WrongAddress`]) and accepts no frame.
    pub fn new(
        config: LinkConfig,
        local: Addr,
        peer: Addr,
        tx_buf: &'a mut [u8],
        rx_buf: &'a mut [u8],
    ) -> Self {
        let config = LinkConfig {
            mtu: config.effective_mtu(),
            ..config
        };
        // Seeded from the addresses so that two nodes' jitter differs but every run is reproducible.
        let pair = (u32::from(local.0) << 8) | u32::from(peer.0);
        let rng = 0x9e37_79b9 ^ ((pair << 16) | pair);
        Link {
            config,
            local,
            peer,
            tx_buf,
            next_id: 0,
            out: None,
            rx: Receiver::new(rx_buf),
            events: Events::new(),
            rng: if rng == 0 { 1 } else { rng },
        }
    }

    /// The settings, with the MTU as clamped.
    pub fn config(&self) -> &LinkConfig {
        &self.config
    }

    /// The local address.
    pub fn local(&self) -> Addr {
        self.local
    }

    /// The peer's address.
    pub fn peer(&self) -> Addr {
        self.peer
    }

    /// The largest message [`send`](Self::send) takes: the transmit buffer or [`LinkConfig::max_message_len`],
    /// whichever is smaller.
    pub fn max_message_len(&self) -> usize {
        self.tx_buf.len().min(self.config.max_message_len())
    }

    /// Whether an outgoing message is in flight (so [`send`](Self::send) would refuse another).
    pub fn is_busy(&self) -> bool {
        self.out.is_some()
    }

    /// The id the next message sent will have.
    pub fn next_message_id(&self) -> u8 {
        self.next_id
    }

    /// Set the id of the next message, for a node that restarts and kept its ids: its peer drops messages whose id
    /// is up to 128 behind the last it delivered as stale. Refused while a message is in flight.
    pub fn set_next_message_id(&mut self, id: u8) -> Result<(), LinkError> {
        if self.out.is_some() {
            return Err(LinkError::Busy);
        }
        self.next_id = id;
        Ok(())
    }

    /// Queue one message: it is copied into the transmit buffer and cut into fragments of
    /// [`LinkConfig::fragment_len`] bytes (an empty message is one empty fragment), which
    /// [`poll_transmit`](Self::poll_transmit) hands out from `now_us` on. One message at a time:
    /// [`LinkError::Busy`] until its [`Event::Delivered`] or [`Event::Failed`]; [`LinkError::MessageTooLarge`]
    /// beyond [`max_message_len`](Self::max_message_len); [`LinkError::WrongAddress`] if an end of the link is
    /// [`Addr::BROADCAST`] (its frames would pass for a group's).
    pub fn send(&mut self, now_us: u64, msg: &[u8]) -> Result<(), LinkError> {
        if self.out.is_some() {
            return Err(LinkError::Busy);
        }
        if self.local == Addr::BROADCAST || self.peer == Addr::BROADCAST {
            return Err(LinkError::WrongAddress);
        }
        let count = load_message(&self.config, self.tx_buf, msg)?;
        self.out = Some(Outgoing {
            id: self.next_id,
            len: msg.len(),
            count,
            acked: 0,
            pending: full_bitmap(count),
            phase: Phase::Burst { since: now_us },
            retries: 0,
        });
        Ok(())
    }

    /// Take a frame that arrived from the radio at `now_us`, addressed to this link (pick the link with
    /// [`peek_addrs`](crate::peek_addrs) and [`is_group`](crate::is_group)). A frame that is not from the peer to
    /// the local address (a group frame, to [`Addr::BROADCAST`] or a group acknowledgement, is not), is malformed,
    /// or does not fit the message it claims to belong to is refused with the reason, and changes nothing.
    /// Duplicates are accepted and dropped (and answered, if they ask for an acknowledgement).
    pub fn handle_frame(&mut self, now_us: u64, frame: &[u8]) -> Result<(), LinkError> {
        if frame.len() > self.config.mtu {
            return Err(LinkError::TooLong);
        }
        let frame = Frame::parse(frame)?;
        // Frame::parse refuses a broadcast source; a broadcast destination is a group's, never this link's (even if
        // it was wrongly given that local address).
        if frame.dst() != self.local || frame.src() != self.peer || frame.dst() == Addr::BROADCAST {
            return Err(LinkError::WrongAddress);
        }
        match frame {
            Frame::Data(d) => {
                if self.rx.on_data(now_us, &d, 0)? {
                    self.events.push(Event::Received);
                }
                Ok(())
            }
            Frame::Sack(s) => self.on_sack(now_us, &s),
            // Its sender's group state takes it, not the link with the member.
            Frame::GroupSack(_) => Err(LinkError::WrongAddress),
        }
    }

    /// The next frame to put on air now, written into `out` (which should hold an MTU), and its length; `None` if
    /// there is nothing to send, or if `out` is too short for the frame, which then stays queued. An
    /// acknowledgement owed goes first, then the fragments of the outgoing burst. The caller has checked that the radio is free and
    /// that the duty cycle allows a frame now, and calls again once this one is on air.
    ///
    /// This is also where timers fire: when an acknowledgement is overdue the link asks again (or gives up, with
    /// [`Event::Failed`]), so call it at [`next_deadline`](Self::next_deadline) even if no frame arrived.
    pub fn poll_transmit(&mut self, now_us: u64, out: &mut [u8]) -> Option<usize> {
        self.expire(now_us);
        if let Some(ack) = self.rx.ack() {
            let sack = Sack {
                dst: self.peer,
                src: self.local,
                id: ack.id,
                count: ack.count,
                bitmap: ack.bitmap,
            };
            let n = Frame::Sack(sack).write(out)?;
            self.rx.clear_ack();
            return Some(n);
        }
        // The acknowledgement owed (if any) was for a message that is gone: nothing is owed any more.
        self.rx.clear_ack();
        self.transmit_data(now_us, out)
    }

    /// The next event, oldest first: call it after every [`handle_frame`](Self::handle_frame) and
    /// [`poll_transmit`](Self::poll_transmit) until `None` (the link keeps [`EVENT_CAPACITY`] at most).
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop()
    }

    /// The complete incoming message, from [`Event::Received`] until [`release_received`](Self::release_received).
    pub fn received(&self) -> Option<&[u8]> {
        self.rx.received()
    }

    /// Free the receive buffer for the next incoming message. Until then the link refuses fragments of a new
    /// message ([`LinkError::RxBusy`]), and the peer sends them again later.
    pub fn release_received(&mut self) {
        self.rx.release();
    }

    /// When [`poll_transmit`](Self::poll_transmit) next has something to do even if no frame arrives: a time at or
    /// before now if a frame is ready (an acknowledgement owed, fragments of a burst), the retransmission timer
    /// if the link waits for an acknowledgement, `None` if it waits for nothing.
    pub fn next_deadline(&self) -> Option<u64> {
        let sack = self.rx.ack().map(|a| a.due);
        let tx = self.out.map(|o| match o.phase {
            Phase::Burst { since } => since,
            Phase::AwaitAck { deadline } => deadline,
        });
        match (sack, tx) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn on_sack(&mut self, now_us: u64, s: &Sack) -> Result<(), LinkError> {
        let Some(o) = self.out.as_mut() else {
            return Err(if is_older(s.id, self.next_id) {
                LinkError::Stale
            } else {
                LinkError::UnexpectedAck
            });
        };
        if s.id != o.id {
            return Err(if is_older(s.id, o.id) {
                LinkError::Stale
            } else {
                LinkError::UnexpectedAck
            });
        }
        if s.count != o.count {
            return Err(LinkError::InconsistentCount);
        }
        let full = full_bitmap(o.count);
        if s.bitmap & !o.acked == 0 {
            // A duplicate or an acknowledgement overtaken by a later one: nothing learnt, and no reason to resend
            // (the retransmission timer still runs).
            return Ok(());
        }
        o.acked |= s.bitmap;
        if o.acked == full {
            self.finish(Event::Delivered);
            return Ok(());
        }
        o.retries = 0;
        match o.phase {
            // The answer to our request: send what is missing, as one new burst.
            Phase::AwaitAck { .. } => {
                o.pending = full & !o.acked;
                o.phase = Phase::Burst { since: now_us };
            }
            // An earlier answer, overtaken by this burst: skip what it shows the peer already has.
            Phase::Burst { .. } => o.pending &= !o.acked,
        }
        Ok(())
    }

    /// The retransmission timer: ask again for an acknowledgement with one fragment the peer has not
    /// acknowledged ([`request_carrier`]), or give up.
    fn expire(&mut self, now_us: u64) {
        let Some(o) = self.out.as_mut() else {
            return;
        };
        let Phase::AwaitAck { deadline } = o.phase else {
            return;
        };
        if now_us < deadline {
            return;
        }
        if o.retries >= self.config.max_retries {
            self.finish(Event::Failed);
            return;
        }
        o.retries += 1;
        o.pending = request_carrier(full_bitmap(o.count) & !o.acked);
        o.phase = Phase::Burst { since: deadline };
    }

    fn transmit_data(&mut self, now_us: u64, out: &mut [u8]) -> Option<usize> {
        let frag = self.config.fragment_len();
        let o = self.out.as_mut()?;
        let Phase::Burst { .. } = o.phase else {
            return None;
        };
        let unacked = full_bitmap(o.count) & !o.acked;
        let mut pending = o.pending & unacked;
        if pending == 0 {
            // Acknowledgements emptied the burst before its last frame: one frame must still ask for an ack.
            pending = request_carrier(unacked);
        }
        let bit = lowest_bit(pending);
        let index = bit.trailing_zeros();
        // The last frame of the burst asks for the acknowledgement.
        let ack_request = pending == bit;
        let payload = fragment(self.tx_buf, frag, o.len, index)?;
        let frame = Frame::Data(Data {
            dst: self.peer,
            src: self.local,
            id: o.id,
            count: o.count,
            index: u8::try_from(index).ok()?,
            ack_request,
            payload,
        });
        let n = frame.write(out)?;
        o.pending = pending & !bit;
        if ack_request {
            let wait = self
                .config
                .backoff_us(o.retries)
                .saturating_add(jitter(&mut self.rng, self.config.jitter_us));
            o.phase = Phase::AwaitAck {
                deadline: now_us.saturating_add(wait),
            };
        }
        Some(n)
    }

    fn finish(&mut self, event: Event) {
        if let Some(o) = self.out.take() {
            self.next_id = o.id.wrapping_add(1);
            self.events.push(event);
        }
    }
}

/// Copy a message into a transmit buffer; its number of fragments at this MTU (an empty message is one empty
/// fragment), or [`LinkError::MessageTooLarge`].
pub(crate) fn load_message(
    config: &LinkConfig,
    tx_buf: &mut [u8],
    msg: &[u8],
) -> Result<u8, LinkError> {
    let count = msg.len().div_ceil(config.fragment_len()).max(1);
    if count > MAX_FRAGMENTS {
        return Err(LinkError::MessageTooLarge);
    }
    let count = u8::try_from(count).map_err(|_| LinkError::MessageTooLarge)?;
    tx_buf
        .get_mut(..msg.len())
        .ok_or(LinkError::MessageTooLarge)?
        .copy_from_slice(msg);
    Ok(count)
}

/// Fragment `index` of a message of `len` bytes cut into fragments of `frag` bytes.
pub(crate) fn fragment(tx_buf: &[u8], frag: usize, len: usize, index: u32) -> Option<&[u8]> {
    let start = usize::try_from(index).ok()?.checked_mul(frag)?;
    let end = start.saturating_add(frag).min(len);
    tx_buf.get(start..end)
}

/// A uniform draw in `0..=max` µs (to within 2^32), from xorshift32.
pub(crate) fn jitter(state: &mut u32, max: u64) -> u64 {
    let mut x = *state;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    *state = x;
    u64::from(x) % max.saturating_add(1)
}

impl Assembly {
    /// Take one fragment into the buffer. Every check comes before the first byte is written, so a refused
    /// fragment leaves the buffer and the assembly as they were. A fragment already held is dropped: the first
    /// copy stays.
    fn accept(&mut self, d: &Data<'_>, buf: &mut [u8]) -> Result<(), LinkError> {
        let bit = 1u32
            .checked_shl(u32::from(d.index))
            .ok_or(LinkError::BadIndex)?;
        if self.have & bit != 0 {
            return Ok(());
        }
        let len = d.payload.len();
        let cap = buf.len();
        let last = usize::from(self.count) - 1;
        let index = usize::from(d.index);
        if last == 0 {
            buf.get_mut(..len)
                .ok_or(LinkError::MessageTooLarge)?
                .copy_from_slice(d.payload);
            self.last_len = Some(len);
        } else if index < last {
            // The first fragment other than the last sets the fragment size; the whole message (with the last
            // fragment, if it is already here) must then fit.
            let learnt = self.frag.is_none();
            let frag = match self.frag {
                Some(frag) if frag != len => return Err(LinkError::BadLength),
                Some(frag) => frag,
                None if self.last_len.is_some_and(|l| l > len) => return Err(LinkError::BadLength),
                None => len,
            };
            let need = last
                .checked_mul(frag)
                .and_then(|n| n.checked_add(self.last_len.unwrap_or(1)))
                .ok_or(LinkError::MessageTooLarge)?;
            if need > cap {
                return Err(LinkError::MessageTooLarge);
            }
            if learnt && let Some(l) = self.last_len {
                // Move the last fragment from the end of the buffer to its place.
                let stash = cap.checked_sub(l).ok_or(LinkError::MessageTooLarge)?;
                buf.copy_within(stash..cap, last * frag);
            }
            self.frag = Some(frag);
            // index < last, so this ends before the last fragment's place, inside `need`.
            let start = index * frag;
            buf.get_mut(start..start + frag)
                .ok_or(LinkError::MessageTooLarge)?
                .copy_from_slice(d.payload);
        } else {
            let start = match self.frag {
                Some(frag) if len > frag => return Err(LinkError::BadLength),
                Some(frag) => last * frag,
                // The fragment size is unknown yet: keep the last fragment at the end of the buffer, leaving at
                // least a byte for each other fragment.
                None if last.saturating_add(len) > cap => return Err(LinkError::MessageTooLarge),
                None => cap - len,
            };
            buf.get_mut(start..start + len)
                .ok_or(LinkError::MessageTooLarge)?
                .copy_from_slice(d.payload);
            self.last_len = Some(len);
        }
        self.have |= bit;
        Ok(())
    }

    /// The length of the complete message.
    fn message_len(&self) -> usize {
        let last = usize::from(self.count) - 1;
        last * self.frag.unwrap_or(0) + self.last_len.unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    const A: Addr = Addr(1);
    const B: Addr = Addr(2);

    /// MTU 51 (fragments of 45), 1 s ack timeout, 3 retries, no jitter: timers are exact.
    fn config() -> LinkConfig {
        LinkConfig {
            mtu: 51,
            ack_timeout_us: 1_000_000,
            max_retries: 3,
            max_backoff_us: 4_000_000,
            jitter_us: 0,
            group_slot_us: 100_000,
        }
    }

    fn msg(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + 3) as u8).collect()
    }

    /// Every frame `link` has to send at `now`.
    fn drain(link: &mut Link<'_>, now: u64) -> Vec<Vec<u8>> {
        let mut frames = Vec::new();
        let mut out = [0u8; MAX_FRAME];
        while let Some(n) = link.poll_transmit(now, &mut out) {
            frames.push(out[..n].to_vec());
        }
        frames
    }

    fn events(link: &mut Link<'_>) -> Vec<Event> {
        core::iter::from_fn(|| link.poll_event()).collect()
    }

    macro_rules! links {
        ($a:ident, $b:ident) => {
            links!($a, $b, config(), 2048);
        };
        ($a:ident, $b:ident, $cfg:expr, $size:expr) => {
            let (mut at, mut ar, mut bt, mut br) = (
                std::vec![0u8; $size],
                std::vec![0u8; $size],
                std::vec![0u8; $size],
                std::vec![0u8; $size],
            );
            let mut $a = Link::new($cfg, A, B, &mut at, &mut ar);
            let mut $b = Link::new($cfg, B, A, &mut bt, &mut br);
            // Some tests only need one end.
            let _ = &mut $b;
        };
    }

    #[test]
    fn fragments_and_one_ack() {
        links!(a, b);
        let m = msg(100);
        a.send(0, &m).unwrap();
        assert!(a.is_busy());
        assert_eq!(a.send(0, b"x"), Err(LinkError::Busy));
        let frames = drain(&mut a, 0);
        assert_eq!(frames.len(), 3);
        assert_eq!(
            frames.iter().map(Vec::len).collect::<Vec<_>>(),
            [51, 51, 16]
        );
        // Only the last frame of the burst asks for an acknowledgement.
        assert_eq!(
            frames.iter().map(|f| f[2]).collect::<Vec<_>>(),
            [0x10, 0x10, 0x11]
        );
        assert_eq!(a.next_deadline(), Some(1_000_000));
        for f in &frames {
            b.handle_frame(10, f).unwrap();
        }
        assert_eq!(events(&mut b), [Event::Received]);
        assert_eq!(b.received(), Some(&m[..]));
        assert_eq!(b.next_deadline(), Some(10));
        let acks = drain(&mut b, 20);
        assert_eq!(acks, [std::vec![1, 2, 0x20, 0, 3, 0, 0, 0, 7]]);
        assert_eq!(b.next_deadline(), None);
        a.handle_frame(30, &acks[0]).unwrap();
        assert_eq!(events(&mut a), [Event::Delivered]);
        assert!(!a.is_busy());
        assert_eq!(a.next_deadline(), None);
        assert_eq!(a.next_message_id(), 1);
    }

    #[test]
    fn message_sizes() {
        links!(a, b);
        for len in [0, 1, 44, 45, 46, 90, 91, 1_439, 1_440] {
            let m = msg(len);
            a.send(0, &m).unwrap();
            let frames = drain(&mut a, 0);
            assert_eq!(frames.len(), len.div_ceil(45).max(1), "{len}");
            assert!(frames.iter().all(|f| f.len() <= 51));
            for f in &frames {
                b.handle_frame(0, f).unwrap();
            }
            assert_eq!(b.received(), Some(&m[..]), "{len}");
            b.release_received();
            for f in drain(&mut b, 0) {
                a.handle_frame(0, &f).unwrap();
            }
            assert_eq!(events(&mut a), [Event::Delivered]);
            events(&mut b);
        }
        // 32 fragments of 45 bytes is the most.
        assert_eq!(a.max_message_len(), 1_440);
        assert_eq!(a.send(0, &msg(1_441)), Err(LinkError::MessageTooLarge));
        // And no more than the transmit buffer.
        let (mut tx, mut rx) = ([0u8; 100], [0u8; 100]);
        let mut small = Link::new(config(), A, B, &mut tx, &mut rx);
        assert_eq!(small.send(0, &msg(101)), Err(LinkError::MessageTooLarge));
        assert!(!small.is_busy());
        small.send(0, &msg(100)).unwrap();
    }

    #[test]
    fn only_the_missing_fragments_go_again() {
        links!(a, b);
        let m = msg(200); // 5 fragments
        a.send(0, &m).unwrap();
        let frames = drain(&mut a, 0);
        for i in [0, 2, 4] {
            b.handle_frame(0, &frames[i]).unwrap();
        }
        let ack = drain(&mut b, 0);
        assert_eq!(ack, [std::vec![1, 2, 0x20, 0, 5, 0, 0, 0, 0b10101]]);
        a.handle_frame(0, &ack[0]).unwrap();
        let again = drain(&mut a, 0);
        assert_eq!(
            again,
            [frames[1].clone(), {
                let mut f = frames[3].clone();
                f[2] = 0x11; // now the last of its burst
                f
            }]
        );
        for f in &again {
            b.handle_frame(0, f).unwrap();
        }
        assert_eq!(b.received(), Some(&m[..]));
        a.handle_frame(0, &drain(&mut b, 0)[0]).unwrap();
        assert_eq!(events(&mut a), [Event::Delivered]);
    }

    #[test]
    fn backoff_then_give_up() {
        links!(a, b);
        a.send(0, &msg(100)).unwrap();
        let burst = drain(&mut a, 0);
        assert_eq!(burst.len(), 3);
        // Nothing comes back: the link asks again with one unacknowledged fragment, at 1, 2, 4 s after each
        // request (capped at 4 s), and gives up after 3 retries.
        let mut now = 0;
        let mut requests = Vec::new();
        for wait in [1_000_000, 2_000_000, 4_000_000] {
            assert_eq!(drain(&mut a, now + wait - 1), Vec::<Vec<u8>>::new());
            now += wait;
            assert_eq!(a.next_deadline(), Some(now));
            let f = drain(&mut a, now);
            assert_eq!(f.len(), 1);
            assert_eq!(
                (f[0][2], f[0][5], f[0].len()),
                (0x11, 2, 16),
                "the last fragment, the shortest, asking for an ack"
            );
            requests.push(f[0].clone());
        }
        now += 4_000_000;
        assert_eq!(a.next_deadline(), Some(now));
        assert!(events(&mut a).is_empty());
        assert_eq!(drain(&mut a, now), Vec::<Vec<u8>>::new());
        assert_eq!(events(&mut a), [Event::Failed]);
        assert!(!a.is_busy());
        assert_eq!(a.next_deadline(), None);
        // The next message has the next id, and the receiver takes it.
        a.send(now, b"next").unwrap();
        let f = drain(&mut a, now);
        assert_eq!(f[0][3], 1);
        b.handle_frame(now, &f[0]).unwrap();
        assert_eq!(b.received(), Some(&b"next"[..]));
        // A late answer to the message given up is stale.
        let late = [1, 2, 0x20, 0, 3, 0, 0, 0, 7];
        assert_eq!(a.handle_frame(now, &late), Err(LinkError::Stale));
    }

    #[test]
    fn progress_resets_the_retries() {
        links!(a, b);
        a.send(0, &msg(100)).unwrap();
        let burst = drain(&mut a, 0);
        b.handle_frame(0, &burst[0]).unwrap();
        // Two timeouts: the second request (the last fragment again) reaches b, which answers.
        drain(&mut a, 1_000_000);
        let req = drain(&mut a, 3_000_000);
        b.handle_frame(3_000_000, &req[0]).unwrap();
        a.handle_frame(3_100_000, &drain(&mut b, 3_000_000)[0])
            .unwrap();
        // Progress: the missing fragment goes as a new burst, with the first timeout again.
        let again = drain(&mut a, 3_200_000);
        assert_eq!(again.len(), 1);
        assert_eq!((again[0][2], again[0][5]), (0x11, 1));
        assert_eq!(a.next_deadline(), Some(4_200_000));
    }

    #[test]
    fn a_lost_final_ack_is_recovered_without_a_second_delivery() {
        links!(a, b);
        let m = msg(60);
        a.send(0, &m).unwrap();
        for f in drain(&mut a, 0) {
            b.handle_frame(0, &f).unwrap();
        }
        assert_eq!(events(&mut b), [Event::Received]);
        drain(&mut b, 0); // the acknowledgement is lost
        b.release_received();
        let req = drain(&mut a, 1_000_000);
        assert_eq!(req.len(), 1);
        b.handle_frame(1_000_000, &req[0]).unwrap();
        assert!(events(&mut b).is_empty(), "delivered twice");
        assert_eq!(b.received(), None);
        let ack = drain(&mut b, 1_000_000);
        assert_eq!(ack, [std::vec![1, 2, 0x20, 0, 2, 0, 0, 0, 3]]);
        a.handle_frame(1_000_000, &ack[0]).unwrap();
        assert_eq!(events(&mut a), [Event::Delivered]);
        // Duplicates of the acknowledgement are stale now.
        assert_eq!(a.handle_frame(1_000_000, &ack[0]), Err(LinkError::Stale));
    }

    #[test]
    fn every_arrival_order_gives_the_message() {
        // 4 fragments (the last one short), in all 24 orders, each with duplicates.
        let m = msg(150);
        let orders = permutations(&[0, 1, 2, 3]);
        assert_eq!(orders.len(), 24);
        for order in orders {
            links!(a, b);
            a.send(0, &m).unwrap();
            let frames = drain(&mut a, 0);
            for &i in &order {
                b.handle_frame(0, &frames[i]).unwrap();
                b.handle_frame(0, &frames[i]).unwrap();
            }
            assert_eq!(events(&mut b), [Event::Received], "{order:?}");
            assert_eq!(b.received(), Some(&m[..]), "{order:?}");
        }
        // The same with a receive buffer exactly the message's size: the early last fragment waits at its end.
        for order in permutations(&[0, 1, 2, 3]) {
            let (mut at, mut ar, mut bt, mut br) = ([0u8; 150], [0u8; 150], [0u8; 150], [0u8; 150]);
            let mut a = Link::new(config(), A, B, &mut at, &mut ar);
            let mut b = Link::new(config(), B, A, &mut bt, &mut br);
            a.send(0, &m).unwrap();
            let frames = drain(&mut a, 0);
            for &i in &order {
                b.handle_frame(0, &frames[i]).unwrap();
            }
            assert_eq!(b.received(), Some(&m[..]), "{order:?}");
        }
    }

    fn permutations(items: &[usize]) -> Vec<Vec<usize>> {
        if items.len() <= 1 {
            return std::vec![items.to_vec()];
        }
        let mut all = Vec::new();
        for (i, &x) in items.iter().enumerate() {
            let mut rest = items.to_vec();
            rest.remove(i);
            for mut p in permutations(&rest) {
                p.insert(0, x);
                all.push(p);
            }
        }
        all
    }

    #[test]
    fn a_message_too_large_for_the_receive_buffer_is_refused() {
        let (mut at, mut ar, mut bt, mut br) = ([0u8; 200], [0u8; 200], [0u8; 200], [0u8; 100]);
        let mut a = Link::new(config(), A, B, &mut at, &mut ar);
        let mut b = Link::new(config(), B, A, &mut bt, &mut br);
        a.send(0, &msg(150)).unwrap();
        let frames = drain(&mut a, 0);
        // The last fragment first: 3 × 1 + 15 bytes fit, so it waits; the first full one shows 3 × 45 + 15 do not.
        b.handle_frame(0, &frames[3]).unwrap();
        assert_eq!(
            b.handle_frame(0, &frames[0]),
            Err(LinkError::MessageTooLarge)
        );
        assert_eq!(
            b.handle_frame(0, &frames[1]),
            Err(LinkError::MessageTooLarge)
        );
        assert_eq!(b.received(), None);
    }

    #[test]
    fn the_receiver_holds_one_message_until_released() {
        links!(a, b);
        a.send(0, b"one").unwrap();
        let f1 = drain(&mut a, 0);
        b.handle_frame(0, &f1[0]).unwrap();
        a.handle_frame(0, &drain(&mut b, 0)[0]).unwrap();
        a.send(0, b"two").unwrap();
        let f2 = drain(&mut a, 0);
        assert_eq!(b.handle_frame(0, &f2[0]), Err(LinkError::RxBusy));
        assert_eq!(b.next_deadline(), None, "no ack for a refused frame");
        assert_eq!(b.received(), Some(&b"one"[..]));
        b.release_received();
        b.handle_frame(0, &f2[0]).unwrap();
        assert_eq!(b.received(), Some(&b"two"[..]));
        assert_eq!(events(&mut b), [Event::Received, Event::Received]);
    }

    #[test]
    fn a_newer_message_replaces_one_given_up() {
        links!(a, b);
        a.send(0, &msg(100)).unwrap();
        let old = drain(&mut a, 0);
        b.handle_frame(0, &old[0]).unwrap();
        for t in [1, 3, 7, 11] {
            drain(&mut a, t * 1_000_000);
        }
        assert_eq!(events(&mut a), [Event::Failed]);
        let m = msg(50);
        a.send(20_000_000, &m).unwrap();
        for f in drain(&mut a, 20_000_000) {
            b.handle_frame(20_000_000, &f).unwrap();
        }
        assert_eq!(b.received(), Some(&m[..]));
        // The old message's fragments are stale now.
        assert_eq!(b.handle_frame(0, &old[1]), Err(LinkError::Stale));
    }

    #[test]
    fn attacker_frames_change_nothing() {
        links!(a, b);
        let m = msg(150); // 4 fragments
        a.send(0, &m).unwrap();
        let frames = drain(&mut a, 0);
        b.handle_frame(0, &frames[0]).unwrap();
        b.handle_frame(0, &frames[3]).unwrap();

        let mut forged = frames[1].clone();
        forged[4] = 5; // a different count, same id
        assert_eq!(
            b.handle_frame(0, &forged),
            Err(LinkError::InconsistentCount)
        );
        let mut forged = frames[1].clone();
        forged.pop(); // a fragment shorter than the message's fragment size
        assert_eq!(b.handle_frame(0, &forged), Err(LinkError::BadLength));
        let mut forged = frames[1].clone();
        forged[1] = 9; // another source
        assert_eq!(b.handle_frame(0, &forged), Err(LinkError::WrongAddress));
        let mut forged = frames[1].clone();
        forged[0] = 9; // another destination
        assert_eq!(b.handle_frame(0, &forged), Err(LinkError::WrongAddress));
        let mut forged = frames[1].clone();
        forged[5] = 4; // index = count
        assert_eq!(b.handle_frame(0, &forged), Err(LinkError::BadIndex));
        let mut forged = frames[1].clone();
        forged[4] = 40; // count over the limit
        assert_eq!(b.handle_frame(0, &forged), Err(LinkError::BadCount));
        let mut forged = frames[1].clone();
        forged.push(0); // longer than the MTU
        assert_eq!(b.handle_frame(0, &forged), Err(LinkError::TooLong));
        assert_eq!(
            b.handle_frame(0, &frames[1][..5]),
            Err(LinkError::Truncated)
        );
        let mut forged = frames[3].clone();
        forged[3] = 200; // an old id (behind the one in progress)
        assert_eq!(b.handle_frame(0, &forged), Err(LinkError::Stale));
        for garbage in [&[][..], &[0xff; 3], &[2, 1, 0x77, 0, 0, 0], &[0; 51]] {
            assert!(b.handle_frame(0, garbage).is_err());
        }
        // A duplicate with different bytes is dropped: the first copy stays.
        let mut forged = frames[0].clone();
        forged[10] ^= 0xff;
        b.handle_frame(0, &forged).unwrap();
        assert!(events(&mut b).is_empty());
        assert_eq!(
            b.next_deadline(),
            Some(0),
            "the genuine last fragment asked for an ack"
        );

        // None of it disturbed the message.
        b.handle_frame(0, &frames[1]).unwrap();
        b.handle_frame(0, &frames[2]).unwrap();
        assert_eq!(b.received(), Some(&m[..]));
        let ack = drain(&mut b, 0);
        assert_eq!(ack, [std::vec![1, 2, 0x20, 0, 4, 0, 0, 0, 0x0f]]);

        // The message replayed, and with another count: acknowledged or refused, never delivered again.
        events(&mut b);
        b.release_received();
        for f in &frames {
            b.handle_frame(1, f).unwrap();
        }
        assert!(events(&mut b).is_empty());
        let mut forged = frames[0].clone();
        forged[4] = 1;
        assert_eq!(
            b.handle_frame(1, &forged),
            Err(LinkError::InconsistentCount)
        );
        assert_eq!(drain(&mut b, 1), ack);
    }

    #[test]
    fn a_last_fragment_too_long_for_the_fragment_size_is_refused() {
        // The sender cuts 25-byte fragments (MTU 31); the receiver takes frames up to 51 bytes.
        let (mut at, mut ar, mut bt, mut br) = ([0u8; 200], [0u8; 200], [0u8; 200], [0u8; 200]);
        let mut a = Link::new(
            LinkConfig {
                mtu: 31,
                ..config()
            },
            A,
            B,
            &mut at,
            &mut ar,
        );
        let mut b = Link::new(config(), B, A, &mut bt, &mut br);
        a.send(0, &msg(60)).unwrap(); // 25 + 25 + 10
        let frames = drain(&mut a, 0);
        assert_eq!(frames.len(), 3);
        // An attacker's last fragment of 40 bytes, before any other: it waits at the end of the buffer; the
        // genuine first fragment (25 bytes) then conflicts with it and is refused. The first one in wins; the
        // sender gives up in the end and its next message starts afresh.
        let mut forged = std::vec![2, 1, 0x11, 0, 3, 2];
        forged.extend_from_slice(&[0xee; 40]);
        b.handle_frame(0, &forged).unwrap();
        assert_eq!(b.handle_frame(0, &frames[0]), Err(LinkError::BadLength));
        assert_eq!(b.handle_frame(0, &frames[1]), Err(LinkError::BadLength));

        // Once the fragment size is known, a last fragment longer than it is refused, and a middle fragment of
        // another size too; the genuine ones still complete the message.
        let (mut ct, mut cr) = ([0u8; 200], [0u8; 200]);
        let mut c = Link::new(config(), B, A, &mut ct, &mut cr);
        c.handle_frame(0, &frames[0]).unwrap();
        let mut long = std::vec![2, 1, 0x11, 0, 3, 2];
        long.extend_from_slice(&[0; 26]);
        assert_eq!(c.handle_frame(0, &long), Err(LinkError::BadLength));
        let mut other = std::vec![2, 1, 0x10, 0, 3, 1];
        other.extend_from_slice(&[0; 24]);
        assert_eq!(c.handle_frame(0, &other), Err(LinkError::BadLength));
        c.handle_frame(0, &frames[2]).unwrap();
        c.handle_frame(0, &frames[1]).unwrap();
        assert_eq!(c.received(), Some(&msg(60)[..]));
    }

    #[test]
    fn acknowledgements_are_checked() {
        links!(a, b);
        // No message in flight.
        assert_eq!(
            a.handle_frame(0, &[1, 2, 0x20, 0, 1, 0, 0, 0, 1]),
            Err(LinkError::UnexpectedAck)
        );
        a.send(0, &msg(100)).unwrap();
        drain(&mut a, 0);
        assert_eq!(
            a.handle_frame(0, &[1, 2, 0x20, 0, 2, 0, 0, 0, 1]),
            Err(LinkError::InconsistentCount)
        );
        assert_eq!(
            a.handle_frame(0, &[1, 2, 0x20, 0, 3, 0, 0, 0, 8]),
            Err(LinkError::BadBitmap)
        );
        assert_eq!(
            a.handle_frame(0, &[1, 2, 0x20, 1, 3, 0, 0, 0, 1]),
            Err(LinkError::UnexpectedAck)
        );
        assert_eq!(
            a.handle_frame(0, &[1, 2, 0x20, 255, 3, 0, 0, 0, 1]),
            Err(LinkError::Stale)
        );
        assert_eq!(
            a.handle_frame(0, &[2, 1, 0x20, 0, 3, 0, 0, 0, 1]),
            Err(LinkError::WrongAddress)
        );
        // An acknowledgement that shows nothing new changes nothing (the timer still runs).
        a.handle_frame(0, &[1, 2, 0x20, 0, 3, 0, 0, 0, 0]).unwrap();
        assert_eq!(a.next_deadline(), Some(1_000_000));
        assert!(drain(&mut a, 0).is_empty());
        assert!(a.is_busy());
    }

    #[test]
    fn an_ack_overtaking_a_burst_trims_it() {
        links!(a, b);
        a.send(0, &msg(200)).unwrap(); // 5 fragments
        let mut out = [0u8; 64];
        assert!(a.poll_transmit(0, &mut out).is_some());
        // An acknowledgement of fragments 1–4 (say, from an earlier round) arrives mid-burst.
        a.handle_frame(0, &[1, 2, 0x20, 0, 5, 0, 0, 0, 0b11110])
            .unwrap();
        // Fragment 0 is unacknowledged and nothing else is pending: it goes again, asking for an ack.
        let rest = drain(&mut a, 0);
        assert_eq!(rest.len(), 1);
        assert_eq!((rest[0][2], rest[0][5]), (0x11, 0));
    }

    #[test]
    fn a_short_output_buffer_changes_nothing() {
        links!(a, b);
        a.send(0, &msg(100)).unwrap();
        let mut small = [0u8; 20];
        assert_eq!(a.poll_transmit(0, &mut small), None);
        assert_eq!(a.next_deadline(), Some(0));
        assert_eq!(drain(&mut a, 0).len(), 3);
    }

    #[test]
    fn the_mtu_is_clamped() {
        let (mut t, mut r) = ([0u8; 8], [0u8; 8]);
        let tiny = Link::new(LinkConfig { mtu: 2, ..config() }, A, B, &mut t, &mut r);
        assert_eq!(tiny.config().mtu, MIN_MTU);
        let (mut t, mut r) = ([0u8; 8], [0u8; 8]);
        let huge = Link::new(
            LinkConfig {
                mtu: 10_000,
                ..config()
            },
            A,
            B,
            &mut t,
            &mut r,
        );
        assert_eq!(huge.config().mtu, MAX_FRAME);
        assert_eq!(huge.config().max_message_len(), 249 * 32);
    }

    #[test]
    fn backoff_schedule() {
        let c = LinkConfig {
            ack_timeout_us: 3,
            max_backoff_us: 20,
            ..config()
        };
        let waits: Vec<u64> = (0..7).map(|r| c.backoff_us(r)).collect();
        assert_eq!(waits, [3, 6, 12, 20, 20, 20, 20]);
        assert_eq!(c.backoff_us(255), 20);
        let uncapped = LinkConfig {
            ack_timeout_us: u64::MAX / 2,
            max_backoff_us: u64::MAX,
            ..config()
        };
        assert_eq!(uncapped.backoff_us(200), u64::MAX);
    }

    #[test]
    fn jitter_stays_in_range() {
        let mut state = 0x1234_5678;
        for max in [0, 1, 250_000] {
            for _ in 0..1_000 {
                assert!(jitter(&mut state, max) <= max);
            }
        }
        assert!(jitter(&mut state, u64::MAX) < 1 << 32);
    }

    #[test]
    fn config_for_sf() {
        let c = LinkConfig::for_sf(SpreadingFactor::Sf12);
        assert_eq!(c.mtu, 51);
        // 2,465.792 ms + 991.232 ms + 1 s.
        assert_eq!(c.ack_timeout_us, 4_457_024);
        // A SACK's 991.232 ms and the 20 ms guard.
        assert_eq!(c.group_slot_us, 1_011_232);
        assert_eq!(
            LinkConfig::for_sf(SpreadingFactor::Sf10).group_slot_us,
            247_808 + GROUP_SLOT_GUARD_US
        );
        let sizes = SpreadingFactor::ALL.map(|sf| LinkConfig::for_sf(sf).max_message_len());
        assert_eq!(sizes, [6_912, 6_912, 3_488, 1_440, 1_440, 1_440]);
    }

    #[test]
    fn message_ids_wrap() {
        links!(a, b);
        for i in 0..300u32 {
            let m = i.to_be_bytes();
            a.send(0, &m).unwrap();
            for f in drain(&mut a, 0) {
                b.handle_frame(0, &f).unwrap();
            }
            assert_eq!(b.received(), Some(&m[..]));
            b.release_received();
            for f in drain(&mut b, 0) {
                a.handle_frame(0, &f).unwrap();
            }
            assert_eq!(events(&mut a), [Event::Delivered]);
            assert_eq!(events(&mut b), [Event::Received]);
        }
        assert!(is_older(255, 0) && is_older(0, 128) && !is_older(0, 129) && !is_older(7, 7));
        // The window: 127 ids ahead are new, 128 behind (or exactly opposite) are old.
        assert!(!is_older(0, 255) && !is_older(127, 0) && is_older(128, 0) && is_older(129, 0));
    }

    #[test]
    fn the_broadcast_address_is_never_a_links() {
        links!(a, b);
        let _ = &mut a;
        // A group's frames (data to 0xFF, a group acknowledgement) are not the link's, nor a frame from 0xFF.
        let refused: &[&[u8]] = &[
            &[0xff, 1, 0x11, 0, 1, 0, 7],
            &[2, 1, 0x21, 0, 1, 0, 0, 0, 1],
            &[2, 0xff, 0x11, 0, 1, 0, 7],
        ];
        for f in refused {
            assert_eq!(b.handle_frame(0, f), Err(LinkError::WrongAddress));
        }
        assert_eq!(b.next_deadline(), None);
        assert!(events(&mut b).is_empty());
        // Nor does a link wrongly given the broadcast address take them, or send.
        let (mut t, mut r) = ([0u8; 64], [0u8; 64]);
        let mut wrong = Link::new(config(), Addr::BROADCAST, A, &mut t, &mut r);
        assert_eq!(
            wrong.handle_frame(0, &[0xff, 1, 0x11, 0, 1, 0, 7]),
            Err(LinkError::WrongAddress)
        );
        assert_eq!(wrong.send(0, b"x"), Err(LinkError::WrongAddress));
        assert!(!wrong.is_busy());
        let (mut t, mut r) = ([0u8; 64], [0u8; 64]);
        let mut to_all = Link::new(config(), A, Addr::BROADCAST, &mut t, &mut r);
        assert_eq!(to_all.send(0, b"x"), Err(LinkError::WrongAddress));
        assert!(drain(&mut to_all, 0).is_empty());
    }

    #[test]
    fn events_keep_the_latest() {
        let mut e = Events::new();
        e.push(Event::Received);
        for _ in 0..EVENT_CAPACITY {
            e.push(Event::Failed);
        }
        let all: Vec<Event> = core::iter::from_fn(|| e.pop()).collect();
        assert_eq!(all, [Event::Failed; EVENT_CAPACITY]);
    }
}
