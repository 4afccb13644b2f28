//! One transmission for many receivers: a group's sender and its members (docs/lora.md §9).
//!
//! A LoRa channel is a broadcast medium: the gateway's device list, pushed to every node after a join, costs one
//! burst for all of them instead of one per node. A [`GroupSender`] sends a message as data frames to
//! [`Addr::BROADCAST`] (the same frames as a link's), keeps one acknowledgement bitmap per member, resends in each
//! burst the union of what any member lacks, and reports [`Event::Delivered`] once every member holds every
//! fragment. A [`GroupReceiver`] is a member's state for one sender: a link's receiving half that takes only that
//! sender's group frames and answers a request for an acknowledgement with a group acknowledgement (control
//! `0x21`), not at once but in its own slot, so that the members' answers do not collide on the air.
//!
//! **Slots.** Member `k` of the sender's list (counting from 0) answers in slot `k`: `k ×`
//! [`LinkConfig::group_slot_us`] after it heard the request. The sender's list order is the slot assignment; the
//! application tells each member its slot (e.g. the gateway in its answer to a join), and a member is built with
//! it ([`GroupReceiver::new`]). The sender waits for the answers `members × group_slot_us` longer than a link
//! waits for its one answer.
//!
//! Like a [`Link`](crate::Link), neither may panic or allocate, whatever arrives, and a frame either refuses
//! leaves it exactly as it was.

use crate::LinkError;
use crate::frame::{Addr, Data, Frame, Sack, full_bitmap};
use crate::link::{
    Event, Events, LinkConfig, Phase, Receiver, fragment, is_older, jitter, load_message,
    lowest_bit, request_carrier,
};

/// The most members of a group: the answer slots a sender waits for, and the bitmaps it keeps (4 bytes each).
pub const MAX_MEMBERS: usize = 16;

// One bit per member in `answered`.
const _: () = assert!(MAX_MEMBERS <= 32);

/// The group message in flight.
#[derive(Clone, Copy, Debug)]
struct GroupOutgoing {
    id: u8,
    len: usize,
    count: u8,
    /// Per member (in slot order), the fragments it acknowledged.
    acked: [u32; MAX_MEMBERS],
    /// Fragments still to send in this burst.
    pending: u32,
    phase: Phase,
    /// Requests for an acknowledgement since the last progress, beyond the first.
    retries: u8,
    /// The members that answered the last request (bit k: slot k).
    answered: u32,
    /// Whether an answer since the last request acknowledged something new.
    progress: bool,
}

impl GroupOutgoing {
    /// What any member still lacks.
    fn missing(&self, members: usize) -> u32 {
        let full = full_bitmap(self.count);
        self.acked
            .iter()
            .take(members)
            .fold(0, |union, acked| union | (full & !acked))
    }
}

/// The low `n` bits set: the first `n` members or fragments.
fn low_bits(n: usize) -> u32 {
    full_bitmap(u8::try_from(n).unwrap_or(u8::MAX))
}

/// The checked member list: 1 to [`MAX_MEMBERS`] distinct addresses, none of them the sender's or
/// [`Addr::BROADCAST`].
fn check_members(local: Addr, members: &[Addr]) -> Result<[Addr; MAX_MEMBERS], LinkError> {
    if members.is_empty() || members.len() > MAX_MEMBERS {
        return Err(LinkError::BadMembers);
    }
    let mut list = [Addr::BROADCAST; MAX_MEMBERS];
    for (i, &m) in members.iter().enumerate() {
        if m == Addr::BROADCAST || m == local || members[..i].contains(&m) {
            return Err(LinkError::BadMembers);
        }
        list[i] = m;
    }
    Ok(list)
}

/// The sender of a group: one message at a time to every member, in the caller's transmit buffer. Driven like a
/// [`Link`](crate::Link): [`send`](Self::send), [`handle_frame`](Self::handle_frame) with the group
/// acknowledgements addressed to it ([`is_group`](crate::is_group)), [`poll_transmit`](Self::poll_transmit) when
/// the radio may send, [`poll_event`](Self::poll_event), [`next_deadline`](Self::next_deadline).
///
/// Its rules (docs/lora.md §9): a burst sends every fragment some member lacks, and its last frame asks for
/// acknowledgements; the sender then waits `backoff + members × group_slot_us + jitter` for the members' answers,
/// or less if every member answered and one of them showed progress. After the wait, if any answer showed
/// progress, the next burst sends what any member still lacks; if none did, it asks again with one frame (the
/// highest fragment some member lacks) and backs off as a link does, giving up ([`Event::Failed`]) after
/// [`LinkConfig::max_retries`] requests without progress from anyone. [`Event::Delivered`] comes as soon as every
/// member has acknowledged every fragment.
#[derive(Debug)]
pub struct GroupSender<'a> {
    config: LinkConfig,
    local: Addr,
    /// The members, in slot order; the first `member_count` are in use.
    members: [Addr; MAX_MEMBERS],
    member_count: usize,
    tx_buf: &'a mut [u8],
    /// The id of the next message sent (the group's own sequence, apart from the sender's links').
    next_id: u8,
    out: Option<GroupOutgoing>,
    /// No frame before this: members in later slots may still be answering the request that completed the last
    /// message.
    quiet_until: u64,
    /// The members that had not acknowledged the whole of the last message given up.
    unacked: [Addr; MAX_MEMBERS],
    unacked_count: usize,
    events: Events,
    /// xorshift32 state for the backoff jitter.
    rng: u32,
}

impl<'a> GroupSender<'a> {
    /// The sender of the group of `members` from `local`: member `members[k]` answers in slot `k`. Outgoing
    /// messages are copied into `tx_buf`. Refused: a `local` of [`Addr::BROADCAST`] ([`LinkError::WrongAddress`]),
    /// a member list that is empty, longer than [`MAX_MEMBERS`], names a member twice, `local` or the broadcast
    /// address ([`LinkError::BadMembers`]). The MTU is clamped as a link's; the first message has id 0.
    pub fn new(
        config: LinkConfig,
        local: Addr,
        members: &[Addr],
        tx_buf: &'a mut [u8],
    ) -> Result<Self, LinkError> {
        if local == Addr::BROADCAST {
            return Err(LinkError::WrongAddress);
        }
        let list = check_members(local, members)?;
        let config = LinkConfig {
            mtu: config.effective_mtu(),
            ..config
        };
        // Seeded like a link's, from the pair (local, broadcast).
        let pair = (u32::from(local.0) << 8) | u32::from(Addr::BROADCAST.0);
        let rng = 0x9e37_79b9 ^ ((pair << 16) | pair);
        Ok(GroupSender {
            config,
            local,
            members: list,
            member_count: members.len(),
            tx_buf,
            next_id: 0,
            out: None,
            quiet_until: 0,
            unacked: [Addr::BROADCAST; MAX_MEMBERS],
            unacked_count: 0,
            events: Events::new(),
            rng: if rng == 0 { 1 } else { rng },
        })
    }

    /// The settings, with the MTU as clamped.
    pub fn config(&self) -> &LinkConfig {
        &self.config
    }

    /// The sender's address.
    pub fn local(&self) -> Addr {
        self.local
    }

    /// The members, in slot order.
    pub fn members(&self) -> &[Addr] {
        self.members.get(..self.member_count).unwrap_or(&[])
    }

    /// A member's answer slot: its position in the member list; `None` for a node that is not a member.
    pub fn slot_of(&self, member: Addr) -> Option<u8> {
        let k = self.members().iter().position(|&m| m == member)?;
        u8::try_from(k).ok()
    }

    /// Replace the member list, between messages ([`LinkError::Busy`] while one is in flight); checked as in
    /// [`new`](Self::new), and refused as a whole. The slots follow the new order: tell the members whose
    /// position changed their new slot ([`GroupReceiver::set_slot`]).
    pub fn set_members(&mut self, members: &[Addr]) -> Result<(), LinkError> {
        if self.out.is_some() {
            return Err(LinkError::Busy);
        }
        self.members = check_members(self.local, members)?;
        self.member_count = members.len();
        Ok(())
    }

    /// How much longer than a link the sender waits for the answers to a request: `members × group_slot_us`.
    pub fn answer_window_us(&self) -> u64 {
        let members = u64::try_from(self.member_count).unwrap_or(u64::MAX);
        members.saturating_mul(self.config.group_slot_us)
    }

    /// The largest message [`send`](Self::send) takes: the transmit buffer or [`LinkConfig::max_message_len`],
    /// whichever is smaller.
    pub fn max_message_len(&self) -> usize {
        self.tx_buf.len().min(self.config.max_message_len())
    }

    /// Whether a message is in flight (so [`send`](Self::send) and [`set_members`](Self::set_members) would
    /// refuse).
    pub fn is_busy(&self) -> bool {
        self.out.is_some()
    }

    /// The id the next message will have. A group's ids are its own: the members keep one receive state per
    /// sender for its group, apart from their links with it.
    pub fn next_message_id(&self) -> u8 {
        self.next_id
    }

    /// Set the id of the next message (for a sender that restarts and kept its ids, as
    /// [`Link::set_next_message_id`](crate::Link::set_next_message_id)). Refused while a message is in flight.
    pub fn set_next_message_id(&mut self, id: u8) -> Result<(), LinkError> {
        if self.out.is_some() {
            return Err(LinkError::Busy);
        }
        self.next_id = id;
        Ok(())
    }

    /// Queue one message for every member, as [`Link::send`](crate::Link::send): [`LinkError::Busy`] until its
    /// [`Event::Delivered`] or [`Event::Failed`], [`LinkError::MessageTooLarge`] beyond
    /// [`max_message_len`](Self::max_message_len). Its first frame goes from `now_us`, or once the members in
    /// later slots have answered the request that completed the previous message.
    pub fn send(&mut self, now_us: u64, msg: &[u8]) -> Result<(), LinkError> {
        if self.out.is_some() {
            return Err(LinkError::Busy);
        }
        let count = load_message(&self.config, self.tx_buf, msg)?;
        self.unacked_count = 0;
        self.out = Some(GroupOutgoing {
            id: self.next_id,
            len: msg.len(),
            count,
            acked: [0; MAX_MEMBERS],
            pending: full_bitmap(count),
            phase: Phase::Burst {
                since: now_us.max(self.quiet_until),
            },
            retries: 0,
            answered: 0,
            progress: false,
        });
        Ok(())
    }

    /// Take a group acknowledgement (control `0x21`) addressed to this sender from one of its members. Anything
    /// else is refused and changes nothing: another frame type or a frame to another address, or from a node
    /// that is not a member ([`LinkError::WrongAddress`]), malformed frames, an acknowledgement of an old message
    /// ([`LinkError::Stale`]) or of none in flight ([`LinkError::UnexpectedAck`]), with another fragment count
    /// ([`LinkError::InconsistentCount`]).
    pub fn handle_frame(&mut self, now_us: u64, frame: &[u8]) -> Result<(), LinkError> {
        if frame.len() > self.config.mtu {
            return Err(LinkError::TooLong);
        }
        let Frame::GroupSack(s) = Frame::parse(frame)? else {
            return Err(LinkError::WrongAddress);
        };
        if s.dst != self.local {
            return Err(LinkError::WrongAddress);
        }
        let slot = self
            .members()
            .iter()
            .position(|&m| m == s.src)
            .ok_or(LinkError::WrongAddress)?;
        self.on_sack(now_us, slot, &s)
    }

    /// The next frame to put on air now, written into `out`, and its length; `None` if there is nothing to send
    /// (or `out` is too short; the frame then stays queued). Timers fire here, as in
    /// [`Link::poll_transmit`](crate::Link::poll_transmit): call it at [`next_deadline`](Self::next_deadline).
    pub fn poll_transmit(&mut self, now_us: u64, out: &mut [u8]) -> Option<usize> {
        self.expire(now_us);
        self.transmit_data(now_us, out)
    }

    /// The next event, oldest first: [`Event::Delivered`] or [`Event::Failed`].
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop()
    }

    /// When [`poll_transmit`](Self::poll_transmit) next has something to do: the start of a burst, or the end of
    /// the wait for the members' answers; `None` if nothing is in flight.
    pub fn next_deadline(&self) -> Option<u64> {
        self.out.map(|o| match o.phase {
            Phase::Burst { since } => since,
            Phase::AwaitAck { deadline } => deadline,
        })
    }

    /// After [`Event::Failed`], the members that had not acknowledged every fragment of the message given up
    /// (they may or may not have it), in slot order; empty after [`Event::Delivered`], and from the next
    /// [`send`](Self::send) on.
    pub fn unacknowledged(&self) -> &[Addr] {
        self.unacked.get(..self.unacked_count).unwrap_or(&[])
    }

    /// The fragments `member` has acknowledged of the message in flight (bit i: fragment i); `None` if it is not a
    /// member or nothing is in flight.
    pub fn acknowledged(&self, member: Addr) -> Option<u32> {
        let slot = usize::from(self.slot_of(member)?);
        self.out?.acked.get(slot).copied()
    }

    fn on_sack(&mut self, now_us: u64, slot: usize, s: &Sack) -> Result<(), LinkError> {
        let members = self.member_count;
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
        let acked = o.acked.get_mut(slot).ok_or(LinkError::WrongAddress)?;
        if s.bitmap & !*acked != 0 {
            *acked |= s.bitmap;
            o.retries = 0;
            o.progress = true;
        }
        let missing = o.missing(members);
        match o.phase {
            Phase::AwaitAck { .. } => {
                o.answered |= 1 << slot;
                if missing == 0 {
                    // Members in later slots that have not answered yet (they answer even with the whole
                    // message) are about to: stay off the air until the last of them is done. Slot j's answer
                    // ends (j − slot) slots after this one's did.
                    let waiting = low_bits(members) & !o.answered & !low_bits(slot + 1);
                    if let Some(last) = waiting.checked_ilog2() {
                        let slots =
                            u64::from(last).saturating_sub(u64::try_from(slot).unwrap_or(u64::MAX));
                        let quiet =
                            now_us.saturating_add(slots.saturating_mul(self.config.group_slot_us));
                        self.quiet_until = self.quiet_until.max(quiet);
                    }
                    self.finish(Event::Delivered);
                } else if o.progress && o.answered == low_bits(members) {
                    // Every member answered and there was progress: no need to wait out the slots.
                    o.pending = missing;
                    o.phase = Phase::Burst { since: now_us };
                }
            }
            Phase::Burst { .. } if missing == 0 => self.finish(Event::Delivered),
            // An answer overtaken by this burst: skip what no member lacks any more.
            Phase::Burst { .. } => o.pending &= missing,
        }
        Ok(())
    }

    /// The end of the wait for answers: the next burst if any answer showed progress, else one more request, or
    /// give up.
    fn expire(&mut self, now_us: u64) {
        let members = self.member_count;
        let Some(o) = self.out.as_mut() else {
            return;
        };
        let Phase::AwaitAck { deadline } = o.phase else {
            return;
        };
        if now_us < deadline {
            return;
        }
        let missing = o.missing(members);
        if o.progress {
            o.pending = missing;
        } else if o.retries >= self.config.max_retries {
            self.finish(Event::Failed);
            return;
        } else {
            o.retries += 1;
            o.pending = request_carrier(missing);
        }
        o.phase = Phase::Burst { since: deadline };
    }

    fn transmit_data(&mut self, now_us: u64, out: &mut [u8]) -> Option<usize> {
        let frag = self.config.fragment_len();
        let members = self.member_count;
        let window = self.answer_window_us();
        let o = self.out.as_mut()?;
        let Phase::Burst { since } = o.phase else {
            return None;
        };
        if now_us < since {
            return None;
        }
        let missing = o.missing(members);
        let mut pending = o.pending & missing;
        if pending == 0 {
            // Answers emptied the burst before its last frame: one frame must still ask for acknowledgements.
            pending = request_carrier(missing);
        }
        if pending == 0 {
            // Every member has it all (then the message is no longer in flight).
            return None;
        }
        let bit = lowest_bit(pending);
        let index = bit.trailing_zeros();
        let ack_request = pending == bit;
        let payload = fragment(self.tx_buf, frag, o.len, index)?;
        let frame = Frame::Data(Data {
            dst: Addr::BROADCAST,
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
                .saturating_add(window)
                .saturating_add(jitter(&mut self.rng, self.config.jitter_us));
            o.phase = Phase::AwaitAck {
                deadline: now_us.saturating_add(wait),
            };
            o.answered = 0;
            o.progress = false;
        }
        Some(n)
    }

    fn finish(&mut self, event: Event) {
        let Some(o) = self.out.take() else {
            return;
        };
        self.next_id = o.id.wrapping_add(1);
        self.unacked_count = 0;
        if event == Event::Failed {
            let full = full_bitmap(o.count);
            for (&member, &acked) in self.members.iter().zip(&o.acked).take(self.member_count) {
                if acked != full
                    && let Some(slot) = self.unacked.get_mut(self.unacked_count)
                {
                    *slot = member;
                    self.unacked_count += 1;
                }
            }
        }
        self.events.push(event);
    }
}

/// A member's state for one sender's group: a link's receiving half that takes only that sender's data frames to
/// [`Addr::BROADCAST`], reassembles and delivers each message once ([`Event::Received`], [`received`](Self::received),
/// [`release_received`](Self::release_received)), and answers a request for an acknowledgement with a group
/// acknowledgement to the sender, due `slot × group_slot_us` after the request arrived
/// ([`next_deadline`](Self::next_deadline), [`poll_transmit`](Self::poll_transmit)). It answers with the full
/// bitmap once it has the message, so that a lost answer is recovered. A node keeps one per sender it listens to,
/// apart from its [`Link`](crate::Link) with that sender.
#[derive(Debug)]
pub struct GroupReceiver<'a> {
    config: LinkConfig,
    local: Addr,
    sender: Addr,
    slot: u8,
    rx: Receiver<'a>,
    events: Events,
}

impl<'a> GroupReceiver<'a> {
    /// The state of member `local` of the group of `sender`, answering in `slot` (its position in the sender's
    /// member list), reassembling in `rx_buf`. Refused: `local` or `sender` [`Addr::BROADCAST`], or the same
    /// ([`LinkError::WrongAddress`]); a slot not below [`MAX_MEMBERS`] ([`LinkError::BadMembers`]).
    pub fn new(
        config: LinkConfig,
        local: Addr,
        sender: Addr,
        slot: u8,
        rx_buf: &'a mut [u8],
    ) -> Result<Self, LinkError> {
        if local == Addr::BROADCAST || sender == Addr::BROADCAST || local == sender {
            return Err(LinkError::WrongAddress);
        }
        if usize::from(slot) >= MAX_MEMBERS {
            return Err(LinkError::BadMembers);
        }
        Ok(GroupReceiver {
            config: LinkConfig {
                mtu: config.effective_mtu(),
                ..config
            },
            local,
            sender,
            slot,
            rx: Receiver::new(rx_buf),
            events: Events::new(),
        })
    }

    /// The settings, with the MTU as clamped.
    pub fn config(&self) -> &LinkConfig {
        &self.config
    }

    /// The member's address.
    pub fn local(&self) -> Addr {
        self.local
    }

    /// The group's sender.
    pub fn sender(&self) -> Addr {
        self.sender
    }

    /// The answer slot.
    pub fn slot(&self) -> u8 {
        self.slot
    }

    /// Take another answer slot (the sender's member list changed), for the requests that come from now on.
    /// [`LinkError::BadMembers`] if not below [`MAX_MEMBERS`].
    pub fn set_slot(&mut self, slot: u8) -> Result<(), LinkError> {
        if usize::from(slot) >= MAX_MEMBERS {
            return Err(LinkError::BadMembers);
        }
        self.slot = slot;
        Ok(())
    }

    /// How long after a request the answer is due: `slot × group_slot_us`.
    pub fn answer_delay_us(&self) -> u64 {
        u64::from(self.slot).saturating_mul(self.config.group_slot_us)
    }

    /// Take a frame of the group (a data frame from the sender to [`Addr::BROADCAST`]) that arrived at `now_us`:
    /// pass the time it arrived, since the slot counts from it. Anything else is refused with the reason and
    /// changes nothing, with the checks of [`Link::handle_frame`](crate::Link::handle_frame): a frame from
    /// another node or to another address, a link's frame, an acknowledgement ([`LinkError::WrongAddress`]),
    /// malformed frames, fragments that do not fit their message, old ids ([`LinkError::Stale`]), a new message
    /// while the last is not released ([`LinkError::RxBusy`]).
    pub fn handle_frame(&mut self, now_us: u64, frame: &[u8]) -> Result<(), LinkError> {
        if frame.len() > self.config.mtu {
            return Err(LinkError::TooLong);
        }
        let Frame::Data(d) = Frame::parse(frame)? else {
            return Err(LinkError::WrongAddress);
        };
        if d.dst != Addr::BROADCAST || d.src != self.sender {
            return Err(LinkError::WrongAddress);
        }
        if self.rx.on_data(now_us, &d, self.answer_delay_us())? {
            self.events.push(Event::Received);
        }
        Ok(())
    }

    /// The group acknowledgement owed, once its slot has come, written into `out`, and its length; `None` before
    /// then (see [`next_deadline`](Self::next_deadline)), if nothing is owed, or if `out` is too short.
    pub fn poll_transmit(&mut self, now_us: u64, out: &mut [u8]) -> Option<usize> {
        let Some(ack) = self.rx.ack() else {
            // Owed for a message that is gone: nothing is owed any more.
            self.rx.clear_ack();
            return None;
        };
        if now_us < ack.due {
            return None;
        }
        let n = Frame::GroupSack(Sack {
            dst: self.sender,
            src: self.local,
            id: ack.id,
            count: ack.count,
            bitmap: ack.bitmap,
        })
        .write(out)?;
        self.rx.clear_ack();
        Some(n)
    }

    /// The next event: [`Event::Received`].
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop()
    }

    /// The complete message, from [`Event::Received`] until [`release_received`](Self::release_received).
    pub fn received(&self) -> Option<&[u8]> {
        self.rx.received()
    }

    /// Free the receive buffer for the next message; until then fragments of a new one are refused
    /// ([`LinkError::RxBusy`]) and the sender sends them again later.
    pub fn release_received(&mut self) {
        self.rx.release();
    }

    /// When the acknowledgement owed is due (its slot), `None` if none is owed.
    pub fn next_deadline(&self) -> Option<u64> {
        self.rx.ack().map(|a| a.due)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::MAX_FRAME;
    use std::vec::Vec;

    const S: Addr = Addr(0);
    const SLOT: u64 = 100_000;

    /// MTU 51 (fragments of 45), 1 s ack timeout, 3 retries, no jitter, slots of 100 ms: timers are exact.
    fn config() -> LinkConfig {
        LinkConfig {
            mtu: 51,
            ack_timeout_us: 1_000_000,
            max_retries: 3,
            max_backoff_us: 4_000_000,
            jitter_us: 0,
            group_slot_us: SLOT,
        }
    }

    fn msg(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + 3) as u8).collect()
    }

    fn drain(g: &mut GroupSender<'_>, now: u64) -> Vec<Vec<u8>> {
        let mut frames = Vec::new();
        let mut out = [0u8; MAX_FRAME];
        while let Some(n) = g.poll_transmit(now, &mut out) {
            frames.push(out[..n].to_vec());
        }
        frames
    }

    fn answer(r: &mut GroupReceiver<'_>, now: u64) -> Option<Vec<u8>> {
        let mut out = [0u8; MAX_FRAME];
        r.poll_transmit(now, &mut out).map(|n| out[..n].to_vec())
    }

    fn events(g: &mut GroupSender<'_>) -> Vec<Event> {
        core::iter::from_fn(|| g.poll_event()).collect()
    }

    fn gsack(member: u8, id: u8, count: u8, bitmap: u32) -> Vec<u8> {
        [&[0, member, 0x21, id, count][..], &bitmap.to_be_bytes()].concat()
    }

    /// A sender to members 1..=n and their receivers (member k + 1 in slot k).
    macro_rules! group {
        ($g:ident, $rs:ident, $n:expr) => {
            let mut tx = std::vec![0u8; 2048];
            let mut rxs: Vec<Vec<u8>> = (0..$n).map(|_| std::vec![0u8; 2048]).collect();
            let members: Vec<Addr> = (1..=$n).map(Addr).collect();
            let mut $g = GroupSender::new(config(), S, &members, &mut tx).unwrap();
            let mut $rs: Vec<GroupReceiver<'_>> = rxs
                .iter_mut()
                .enumerate()
                .map(|(k, buf)| {
                    GroupReceiver::new(config(), members[k], S, k as u8, buf).unwrap()
                })
                .collect();
        };
    }

    #[test]
    fn one_burst_for_every_member_and_answers_in_slots() {
        group!(g, rs, 3u8);
        let m = msg(100);
        g.send(0, &m).unwrap();
        assert!(g.is_busy());
        assert_eq!(g.send(0, b"x"), Err(LinkError::Busy));
        let frames = drain(&mut g, 0);
        assert_eq!(frames.len(), 3);
        assert!(frames.iter().all(|f| f[0] == 0xff && f[1] == 0));
        assert_eq!(
            frames.iter().map(|f| f[2]).collect::<Vec<_>>(),
            [0x10, 0x10, 0x11]
        );
        // The wait covers the link's timeout and every member's slot.
        assert_eq!(g.next_deadline(), Some(1_000_000 + 3 * SLOT));
        for r in rs.iter_mut() {
            for f in &frames {
                r.handle_frame(10, f).unwrap();
            }
            assert_eq!(r.poll_event(), Some(Event::Received));
            assert_eq!(r.received(), Some(&m[..]));
        }
        // Distinct slots: member k answers k slots after the request.
        let due: Vec<_> = rs.iter().map(|r| r.next_deadline()).collect();
        assert_eq!(due, [Some(10), Some(10 + SLOT), Some(10 + 2 * SLOT)]);
        for (k, r) in rs.iter_mut().enumerate() {
            let at = 10 + k as u64 * SLOT;
            if at > 10 {
                assert_eq!(answer(r, at - 1), None, "before its slot");
            }
            let a = answer(r, at).unwrap();
            assert_eq!(a, gsack(k as u8 + 1, 0, 3, 7));
            assert_eq!(answer(r, at), None);
            assert_eq!(r.next_deadline(), None);
            g.handle_frame(at + 50_000, &a).unwrap();
            let expect: &[Event] = if k == 2 { &[Event::Delivered] } else { &[] };
            assert_eq!(events(&mut g), expect);
        }
        assert!(!g.is_busy());
        assert_eq!(g.next_message_id(), 1);
        assert_eq!(g.next_deadline(), None);
        assert!(g.unacknowledged().is_empty());
    }

    #[test]
    fn a_burst_resends_the_union_of_what_members_lack() {
        group!(g, rs, 3u8);
        let m = msg(200); // 5 fragments
        g.send(0, &m).unwrap();
        let frames = drain(&mut g, 0);
        // Member 1 loses fragment 1, member 2 fragment 3, member 3 nothing.
        for (k, lost) in [(0, Some(1)), (1, Some(3)), (2, None)] {
            for (i, f) in frames.iter().enumerate() {
                if Some(i) != lost {
                    rs[k].handle_frame(0, f).unwrap();
                }
            }
        }
        let acks: Vec<_> = (0..3)
            .map(|k| answer(&mut rs[k], k as u64 * SLOT).unwrap())
            .collect();
        assert_eq!(acks[0], gsack(1, 0, 5, 0b11101));
        assert_eq!(acks[1], gsack(2, 0, 5, 0b10111));
        g.handle_frame(1, &acks[0]).unwrap();
        g.handle_frame(2, &acks[1]).unwrap();
        // Not every member has answered: wait for the last slot.
        assert!(drain(&mut g, 3).is_empty());
        assert_eq!(g.acknowledged(Addr(1)), Some(0b11101));
        g.handle_frame(SLOT * 2, &acks[2]).unwrap();
        assert_eq!(g.acknowledged(Addr(3)), Some(0b11111));
        // Everyone answered with progress: the next burst goes at once, fragments 1 and 3, the last asking.
        assert_eq!(g.next_deadline(), Some(SLOT * 2));
        let again = drain(&mut g, SLOT * 2);
        assert_eq!(
            again.iter().map(|f| (f[2], f[5])).collect::<Vec<_>>(),
            [(0x10, 1), (0x11, 3)]
        );
        for r in rs.iter_mut() {
            for f in &again {
                r.handle_frame(SLOT * 3, f).unwrap();
            }
            assert_eq!(r.received(), Some(&m[..]));
        }
        let answers: Vec<_> = (0..3)
            .map(|k| answer(&mut rs[k], SLOT * (3 + k as u64)).unwrap())
            .collect();
        g.handle_frame(SLOT * 3, &answers[0]).unwrap();
        assert!(events(&mut g).is_empty());
        // Member 3 had it all already: member 2's answer completes the message, and member 3's is late.
        g.handle_frame(SLOT * 4, &answers[1]).unwrap();
        assert_eq!(events(&mut g), [Event::Delivered]);
        assert_eq!(g.handle_frame(SLOT * 5, &answers[2]), Err(LinkError::Stale));
        // Each member delivered the message once.
        for r in rs.iter_mut() {
            assert_eq!(r.poll_event(), Some(Event::Received));
            assert_eq!(r.poll_event(), None);
        }
    }

    #[test]
    fn the_sender_waits_out_the_slots_then_sends_what_anyone_lacks() {
        group!(g, rs, 3u8);
        let m = msg(100);
        g.send(0, &m).unwrap();
        let frames = drain(&mut g, 0);
        // Only member 1 hears the burst; it answers, and the others stay silent.
        for f in &frames {
            rs[0].handle_frame(0, f).unwrap();
        }
        g.handle_frame(0, &answer(&mut rs[0], 0).unwrap()).unwrap();
        assert!(drain(&mut g, 1_000_000).is_empty());
        let deadline = 1_000_000 + 3 * SLOT;
        assert_eq!(g.next_deadline(), Some(deadline));
        // Progress from member 1 only: the whole message again, for the two who have nothing.
        let again = drain(&mut g, deadline);
        assert_eq!(again, frames);
        assert_eq!(g.next_deadline(), Some(deadline + 1_000_000 + 3 * SLOT));
    }

    #[test]
    fn a_lost_answer_is_recovered_without_a_second_delivery() {
        group!(g, rs, 2u8);
        let m = msg(60);
        g.send(0, &m).unwrap();
        let frames = drain(&mut g, 0);
        for r in rs.iter_mut() {
            for f in &frames {
                r.handle_frame(0, f).unwrap();
            }
            r.release_received();
        }
        // Member 1's answer arrives, member 2's is lost.
        g.handle_frame(0, &answer(&mut rs[0], 0).unwrap()).unwrap();
        assert!(answer(&mut rs[1], SLOT).is_some());
        // Progress from member 1 only: what member 2 lacks as far as the sender knows (all of it) goes again.
        let deadline = 1_000_000 + 2 * SLOT;
        let again = drain(&mut g, deadline);
        assert_eq!(again, frames);
        for r in rs.iter_mut() {
            for f in &again {
                r.handle_frame(deadline, f).unwrap();
            }
        }
        // Both answer, full; neither delivers twice.
        for (k, r) in rs.iter_mut().enumerate() {
            assert_eq!(r.poll_event(), Some(Event::Received));
            assert_eq!(r.poll_event(), None);
            let at = deadline + k as u64 * SLOT;
            let a = answer(r, at).unwrap();
            assert_eq!(a, gsack(k as u8 + 1, 0, 2, 3));
            if k == 1 {
                g.handle_frame(at, &a).unwrap();
            }
        }
        assert_eq!(events(&mut g), [Event::Delivered]);
        // Duplicates of the answers are stale now.
        assert_eq!(g.handle_frame(0, &gsack(1, 0, 2, 3)), Err(LinkError::Stale));
    }

    #[test]
    fn gives_up_and_names_the_members_missing() {
        group!(g, rs, 3u8);
        g.send(0, &msg(100)).unwrap();
        let frames = drain(&mut g, 0);
        // Member 2 is out of range; members 1 and 3 get everything.
        for k in [0, 2] {
            for f in &frames {
                rs[k].handle_frame(0, f).unwrap();
            }
            let a = answer(&mut rs[k], k as u64 * SLOT).unwrap();
            g.handle_frame(k as u64 * SLOT, &a).unwrap();
        }
        // Progress in the first round (no wait for member 2, which may yet answer): the union again.
        let window = 3 * SLOT;
        let mut now = 1_000_000 + window;
        let again = drain(&mut g, now);
        assert_eq!(again.len(), 3);
        // Then requests without progress: 1, 2, 4, 4 s (capped) plus the slots, and Failed after 3 retries.
        for wait in [1_000_000, 2_000_000, 4_000_000] {
            now += wait + window;
            assert_eq!(g.next_deadline(), Some(now));
            let req = drain(&mut g, now);
            assert_eq!(req.len(), 1);
            assert_eq!((req[0][2], req[0][5]), (0x11, 2));
        }
        now += 4_000_000 + window;
        assert_eq!(g.next_deadline(), Some(now));
        assert!(drain(&mut g, now).is_empty());
        assert_eq!(events(&mut g), [Event::Failed]);
        assert_eq!(g.unacknowledged(), [Addr(2)]);
        assert!(!g.is_busy());
        // The next message starts afresh.
        g.send(now, b"next").unwrap();
        assert!(g.unacknowledged().is_empty());
        assert_eq!(drain(&mut g, now)[0][3], 1);
    }

    #[test]
    fn the_sender_keeps_quiet_while_later_slots_answer() {
        group!(g, rs, 3u8);
        let m = msg(100);
        g.send(0, &m).unwrap();
        let frames = drain(&mut g, 0);
        // Member 1 (slot 0) loses fragment 0; members 2 and 3 get all.
        for (k, r) in rs.iter_mut().enumerate() {
            for f in &frames[usize::from(k == 0)..] {
                r.handle_frame(0, f).unwrap();
            }
        }
        for (k, r) in rs.iter_mut().enumerate() {
            g.handle_frame(k as u64 * SLOT, &answer(r, k as u64 * SLOT).unwrap())
                .unwrap();
        }
        let t = 2 * SLOT;
        let req = drain(&mut g, t);
        assert_eq!(req.len(), 1);
        for r in rs.iter_mut() {
            r.handle_frame(t, &req[0]).unwrap();
        }
        // Member 1's answer completes the message; members 2 and 3 still answer in slots 1 and 2.
        g.handle_frame(t + 40_000, &answer(&mut rs[0], t).unwrap())
            .unwrap();
        assert_eq!(events(&mut g), [Event::Delivered]);
        g.send(t + 40_000, b"next").unwrap();
        assert_eq!(g.next_deadline(), Some(t + 40_000 + 2 * SLOT));
        assert!(drain(&mut g, t + 40_000 + 2 * SLOT - 1).is_empty());
        assert_eq!(drain(&mut g, t + 40_000 + 2 * SLOT).len(), 1);
    }

    #[test]
    fn answers_are_checked() {
        group!(g, rs, 2u8);
        let _ = &mut rs;
        // Nothing in flight.
        assert_eq!(
            g.handle_frame(0, &gsack(1, 0, 1, 1)),
            Err(LinkError::UnexpectedAck)
        );
        g.send(0, &msg(100)).unwrap();
        drain(&mut g, 0);
        let before = (g.next_deadline(), g.acknowledged(Addr(1)));
        let refused: &[(Vec<u8>, LinkError)] = &[
            (gsack(9, 0, 3, 7), LinkError::WrongAddress), // not a member
            (gsack(0xff, 0, 3, 7), LinkError::WrongAddress),
            (
                [&[5, 1, 0x21, 0, 3][..], &7u32.to_be_bytes()].concat(),
                LinkError::WrongAddress,
            ), // another sender's
            (
                [&[0, 1, 0x20, 0, 3][..], &7u32.to_be_bytes()].concat(),
                LinkError::WrongAddress,
            ), // a link's ack
            (std::vec![0xff, 1, 0x11, 0, 1, 0], LinkError::WrongAddress), // data
            (std::vec![0xff, 0, 0x11, 0, 1, 0], LinkError::WrongAddress), // its own data, heard back
            (gsack(1, 0, 2, 3), LinkError::InconsistentCount),
            (gsack(1, 0, 3, 8), LinkError::BadBitmap),
            (gsack(1, 0, 40, 8), LinkError::BadCount),
            (gsack(1, 1, 3, 7), LinkError::UnexpectedAck),
            (gsack(1, 255, 3, 7), LinkError::Stale),
            (gsack(1, 0, 3, 7)[..8].to_vec(), LinkError::Truncated),
            ([&gsack(1, 0, 3, 7)[..], &[0]].concat(), LinkError::TooLong),
            (
                std::vec![0, 1, 0x77, 0, 3, 0, 0, 0, 7],
                LinkError::UnknownType,
            ),
            (std::vec![0; 60], LinkError::TooLong),
        ];
        for (f, e) in refused {
            assert_eq!(g.handle_frame(5, f), Err(*e), "{f:02x?}");
            assert_eq!((g.next_deadline(), g.acknowledged(Addr(1))), before);
            assert!(events(&mut g).is_empty());
        }
        // An answer that shows nothing new changes nothing but the count of answers.
        g.handle_frame(5, &gsack(1, 0, 3, 0)).unwrap();
        assert_eq!(g.next_deadline(), before.0);
    }

    #[test]
    fn member_lists_are_checked() {
        let mut tx = [0u8; 256];
        let c = config();
        let many: Vec<Addr> = (1..=17).map(Addr).collect();
        for bad in [
            &[][..],
            &many[..],
            &[Addr(1), Addr(2), Addr(1)],
            &[Addr(1), S],
            &[Addr::BROADCAST],
        ] {
            assert_eq!(
                GroupSender::new(c, S, bad, &mut tx).err(),
                Some(LinkError::BadMembers)
            );
        }
        assert_eq!(
            GroupSender::new(c, Addr::BROADCAST, &[Addr(1)], &mut tx).err(),
            Some(LinkError::WrongAddress)
        );
        let mut g = GroupSender::new(c, S, &many[..16], &mut tx).unwrap();
        assert_eq!(g.members().len(), MAX_MEMBERS);
        assert_eq!(g.slot_of(Addr(16)), Some(15));
        assert_eq!(g.answer_window_us(), 16 * SLOT);
        g.send(0, b"x").unwrap();
        assert_eq!(g.set_members(&[Addr(3)]), Err(LinkError::Busy));
        assert_eq!(g.set_next_message_id(9), Err(LinkError::Busy));
        drain(&mut g, 0);
        for m in 1..=16 {
            g.handle_frame(0, &gsack(m, 0, 1, 1)).unwrap();
        }
        assert_eq!(events(&mut g), [Event::Delivered]);
        assert_eq!(g.set_members(&[Addr(1), S]), Err(LinkError::BadMembers));
        assert_eq!(g.members().len(), 16, "a refused list changes nothing");
        g.set_members(&[Addr(7), Addr(3)]).unwrap();
        assert_eq!((g.slot_of(Addr(3)), g.slot_of(Addr(1))), (Some(1), None));
        assert_eq!(
            g.handle_frame(0, &gsack(1, 0, 1, 1)),
            Err(LinkError::WrongAddress)
        );
        g.set_next_message_id(200).unwrap();
        g.send(0, b"y").unwrap();
        assert_eq!(drain(&mut g, 0)[0][3], 200);

        let mut rx = [0u8; 64];
        assert_eq!(
            GroupReceiver::new(c, Addr(1), Addr(1), 0, &mut rx).err(),
            Some(LinkError::WrongAddress)
        );
        assert_eq!(
            GroupReceiver::new(c, Addr::BROADCAST, S, 0, &mut rx).err(),
            Some(LinkError::WrongAddress)
        );
        assert_eq!(
            GroupReceiver::new(c, Addr(1), Addr::BROADCAST, 0, &mut rx).err(),
            Some(LinkError::WrongAddress)
        );
        assert_eq!(
            GroupReceiver::new(c, Addr(1), S, 16, &mut rx).err(),
            Some(LinkError::BadMembers)
        );
        let mut r = GroupReceiver::new(c, Addr(1), S, 15, &mut rx).unwrap();
        assert_eq!(r.answer_delay_us(), 15 * SLOT);
        assert_eq!(r.set_slot(16), Err(LinkError::BadMembers));
        r.set_slot(2).unwrap();
        assert_eq!((r.slot(), r.sender(), r.local()), (2, S, Addr(1)));
    }

    #[test]
    fn a_member_takes_only_its_senders_group_frames() {
        let mut rx = [0u8; 256];
        let mut r = GroupReceiver::new(config(), Addr(1), S, 1, &mut rx).unwrap();
        let refused: &[(&[u8], LinkError)] = &[
            (&[1, 0, 0x11, 0, 1, 0, 7], LinkError::WrongAddress), // the sender's link frame to this node
            (&[0xff, 5, 0x11, 0, 1, 0, 7], LinkError::WrongAddress), // another sender's group
            (&[0xff, 1, 0x11, 0, 1, 0, 7], LinkError::WrongAddress), // its own
            (&[0, 1, 0x21, 0, 1, 0, 0, 0, 1], LinkError::WrongAddress), // an answer
            (&[1, 0, 0x20, 0, 1, 0, 0, 0, 1], LinkError::WrongAddress),
            (&[0xff, 0, 0x11, 0, 2, 2, 7], LinkError::BadIndex),
            (&[0xff, 0, 0x11, 0, 2, 1], LinkError::BadLength),
            (&[0xff, 0, 0x11], LinkError::Truncated),
        ];
        for (f, e) in refused {
            assert_eq!(r.handle_frame(0, f), Err(*e), "{f:02x?}");
            assert_eq!(r.next_deadline(), None);
            assert_eq!(r.poll_event(), None);
        }
        r.handle_frame(0, &[0xff, 0, 0x11, 4, 1, 0, 7]).unwrap();
        assert_eq!(r.received(), Some(&[7u8][..]));
        assert_eq!(r.poll_event(), Some(Event::Received));
        // A new message while the last is held; then an old id.
        assert_eq!(
            r.handle_frame(0, &[0xff, 0, 0x11, 5, 1, 0, 8]),
            Err(LinkError::RxBusy)
        );
        r.release_received();
        assert_eq!(
            r.handle_frame(0, &[0xff, 0, 0x11, 3, 1, 0, 8]),
            Err(LinkError::Stale)
        );
        // Its answer, a slot after the request, for the right sender.
        assert_eq!(r.next_deadline(), Some(SLOT));
        let mut out = [0u8; 8];
        assert_eq!(r.poll_transmit(SLOT, &mut out), None, "too short a buffer");
        assert_eq!(
            answer(&mut r, SLOT),
            Some(std::vec![0, 1, 0x21, 4, 1, 0, 0, 0, 1])
        );
    }

    #[test]
    fn a_repeated_request_keeps_or_renews_the_slot() {
        let mut rx = [0u8; 256];
        let mut r = GroupReceiver::new(config(), Addr(3), S, 2, &mut rx).unwrap();
        let req = [0xff, 0, 0x11, 0, 2, 1, 7];
        r.handle_frame(0, &req).unwrap();
        assert_eq!(r.next_deadline(), Some(2 * SLOT));
        // A duplicate of the request before the slot: the slot stays.
        r.handle_frame(SLOT, &req).unwrap();
        assert_eq!(r.next_deadline(), Some(2 * SLOT));
        // The answer did not go (the radio was busy) and a new request comes: a new slot, not at once.
        r.handle_frame(5 * SLOT, &req).unwrap();
        assert_eq!(r.next_deadline(), Some(7 * SLOT));
        assert_eq!(answer(&mut r, 6 * SLOT), None);
        assert_eq!(
            answer(&mut r, 7 * SLOT),
            Some(std::vec![0, 3, 0x21, 0, 2, 0, 0, 0, 2])
        );
    }

    /// The state sizes docs/lora.md §4 and §9 give, on a 64-bit host.
    #[test]
    #[cfg(target_pointer_width = "64")]
    fn memory_is_fixed() {
        use core::mem::size_of;
        assert_eq!(size_of::<crate::Link<'_>>(), 224);
        assert_eq!(size_of::<GroupSender<'_>>(), 256);
        assert_eq!(size_of::<GroupReceiver<'_>>(), 168);
    }

    #[test]
    fn a_groups_ids_are_apart_from_the_links() {
        use crate::Link;
        // The sender's link to member 1 and its group both start at id 0; member 1 keeps one state for each.
        let (mut lt, mut lr, mut mt, mut mr, mut gt, mut gr) = (
            [0u8; 256], [0u8; 256], [0u8; 256], [0u8; 256], [0u8; 256], [0u8; 256],
        );
        let mut link_s = Link::new(config(), S, Addr(1), &mut lt, &mut lr);
        let mut link_m = Link::new(config(), Addr(1), S, &mut mt, &mut mr);
        let mut g = GroupSender::new(config(), S, &[Addr(1)], &mut gt).unwrap();
        let mut r = GroupReceiver::new(config(), Addr(1), S, 0, &mut gr).unwrap();
        link_s.send(0, b"to one").unwrap();
        g.send(0, b"to all").unwrap();
        let mut out = [0u8; 64];
        let n = link_s.poll_transmit(0, &mut out).unwrap();
        let unicast = out[..n].to_vec();
        let n = g.poll_transmit(0, &mut out).unwrap();
        let group = out[..n].to_vec();
        assert_eq!((unicast[3], group[3]), (0, 0));
        // Each frame goes to one state only.
        assert!(!crate::is_group(&unicast) && crate::is_group(&group));
        assert_eq!(r.handle_frame(0, &unicast), Err(LinkError::WrongAddress));
        assert_eq!(link_m.handle_frame(0, &group), Err(LinkError::WrongAddress));
        link_m.handle_frame(0, &unicast).unwrap();
        r.handle_frame(0, &group).unwrap();
        assert_eq!(link_m.received(), Some(&b"to one"[..]));
        assert_eq!(r.received(), Some(&b"to all"[..]));
        // And each answer to its own state.
        let n = link_m.poll_transmit(0, &mut out).unwrap();
        let link_ack = out[..n].to_vec();
        let n = r.poll_transmit(0, &mut out).unwrap();
        let group_ack = out[..n].to_vec();
        assert!(!crate::is_group(&link_ack) && crate::is_group(&group_ack));
        assert_eq!(g.handle_frame(0, &link_ack), Err(LinkError::WrongAddress));
        assert_eq!(
            link_s.handle_frame(0, &group_ack),
            Err(LinkError::WrongAddress)
        );
        g.handle_frame(0, &group_ack).unwrap();
        link_s.handle_frame(0, &link_ack).unwrap();
        assert_eq!(
            (g.poll_event(), link_s.poll_event()),
            (Some(Event::Delivered), Some(Event::Delivered))
        );
    }
}
