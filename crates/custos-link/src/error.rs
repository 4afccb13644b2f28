//! The one error type of the crate.

use core::fmt;

/// Why a message was refused by [`Link::send`](crate::Link::send) or a frame by
/// [`Link::handle_frame`](crate::Link::handle_frame) or [`Frame::parse`](crate::Frame::parse) (and the same for
/// [`GroupSender`](crate::GroupSender) and [`GroupReceiver`](crate::GroupReceiver)).
///
/// A refused frame changes nothing in the link: what was already received stays, and no acknowledgement is owed
/// for it. None of these is fatal; a caller may count them and carry on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LinkError {
    /// `send`: the previous outgoing message is neither acknowledged nor given up yet (also
    /// [`GroupSender::set_members`](crate::GroupSender::set_members) while one is in flight).
    Busy,
    /// `send`: the message is longer than the transmit buffer or needs more than
    /// [`MAX_FRAGMENTS`](crate::MAX_FRAGMENTS) frames at this MTU. `handle_frame`: the incoming message would not
    /// fit the receive buffer.
    MessageTooLarge,
    /// The frame is shorter than its header (5 bytes, 6 for data, 9 for an acknowledgement).
    Truncated,
    /// The frame is longer than the link's MTU, or an acknowledgement has trailing bytes.
    TooLong,
    /// The control byte is not one of the three frame types.
    UnknownType,
    /// The frame is not from this link's peer to its local address: from another node, to another, a group's frame
    /// to a link or a link's to a group state, a group acknowledgement from a node that is not a member, or
    /// [`Addr::BROADCAST`](crate::Addr::BROADCAST) as a source or as an acknowledgement's destination. Also
    /// [`Link::send`](crate::Link::send) on a link with a broadcast end, and a group state built with a broadcast
    /// local or sender address.
    WrongAddress,
    /// The fragment count is 0 or above [`MAX_FRAGMENTS`](crate::MAX_FRAGMENTS).
    BadCount,
    /// The fragment index is not below the fragment count.
    BadIndex,
    /// The fragment's length does not fit its message: an empty fragment of a message of several, a fragment
    /// whose length differs from the message's fragment size, or a final fragment longer than it.
    BadLength,
    /// The fragment count differs from that of the message with the same id.
    InconsistentCount,
    /// An acknowledgement marks fragments at or above the fragment count.
    BadBitmap,
    /// The message id is older than the message in progress or than the last message delivered: a late
    /// duplicate or a replay, dropped.
    Stale,
    /// An acknowledgement for no message in flight.
    UnexpectedAck,
    /// A fragment of a new message while the last one received has not been released
    /// ([`Link::release_received`](crate::Link::release_received)); dropped, and the peer will send it again.
    RxBusy,
    /// A group's member list is empty, longer than [`MAX_MEMBERS`](crate::MAX_MEMBERS), names a member twice,
    /// names the sender or [`Addr::BROADCAST`](crate::Addr::BROADCAST); or a member's answer slot is not below
    /// [`MAX_MEMBERS`](crate::MAX_MEMBERS).
    BadMembers,
}

impl fmt::Display for LinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LinkError::Busy => "a message is already in flight",
            LinkError::MessageTooLarge => "message too large for the buffer or the fragment limit",
            LinkError::Truncated => "frame shorter than its header",
            LinkError::TooLong => "frame longer than the MTU",
            LinkError::UnknownType => "unknown frame type",
            LinkError::WrongAddress => "frame not from the peer to this address",
            LinkError::BadCount => "fragment count out of range",
            LinkError::BadIndex => "fragment index not below the count",
            LinkError::BadLength => "fragment length inconsistent with its message",
            LinkError::InconsistentCount => "fragment count differs within a message",
            LinkError::BadBitmap => "acknowledgement marks fragments beyond the count",
            LinkError::Stale => "old message id",
            LinkError::UnexpectedAck => "acknowledgement for no message in flight",
            LinkError::RxBusy => "the last received message is not released",
            LinkError::BadMembers => "invalid group member list or slot",
        })
    }
}

impl core::error::Error for LinkError {}
