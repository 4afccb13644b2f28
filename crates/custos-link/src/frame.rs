//! The frames of the link, byte by byte (docs/lora.md §3), and their stateless checks.
//!
//! ```text
//! data:       dst ‖ src ‖ ctl (0x10, or 0x11 to ask for an ack) ‖ id ‖ count ‖ index ‖ payload (0–249 bytes)
//! sack:       dst ‖ src ‖ ctl (0x20)                            ‖ id ‖ count ‖ bitmap (4 bytes, big-endian)
//! group sack: dst ‖ src ‖ ctl (0x21)                            ‖ id ‖ count ‖ bitmap (4 bytes, big-endian)
//! ```
//!
//! A data frame to [`Addr::BROADCAST`] is a group's (docs/lora.md §9): same bytes, one transmission for every
//! member. A member answers it with a group acknowledgement, addressed to the sender like a link's, whose control
//! byte tells the sender it is for its group, not for its link with that member ([`is_group`]).
//!
//! Parsing checks everything a single frame can be checked for, so the link's state machine sees only frames that
//! are well-formed on their own. It must never accept two encodings of one frame.

use crate::LinkError;

/// The data frame header: dst, src, ctl, id, count, index.
pub const HEADER_LEN: usize = 6;
/// A selective acknowledgement: dst, src, ctl, id, count, bitmap.
pub const SACK_LEN: usize = 9;
/// The most fragments in a message: the width of the acknowledgement bitmap.
pub const MAX_FRAGMENTS: usize = 32;
/// The largest LoRa frame (the SX127x payload length register is 8 bits).
pub const MAX_FRAME: usize = 255;

/// Control byte of a data frame.
pub const CTL_DATA: u8 = 0x10;
/// Control byte of a data frame that asks for an acknowledgement: the last frame of a burst.
pub const CTL_DATA_ACK_REQUEST: u8 = 0x11;
/// Control byte of a selective acknowledgement.
pub const CTL_SACK: u8 = 0x20;
/// Control byte of a selective acknowledgement of a group message (a data frame to [`Addr::BROADCAST`]).
pub const CTL_GROUP_SACK: u8 = 0x21;

/// A link address, one byte. LoRa is a shared medium, so every frame names its destination and source; one byte
/// suits the star of a gateway and up to 254 nodes this layer is for. One value is reserved:
/// [`Addr::BROADCAST`], `0xFF`, is no node's address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Addr(pub u8);

impl Addr {
    /// The destination of a group's data frames (docs/lora.md §9), which every member hears. It is never a node's
    /// address: [`Frame::parse`] refuses it as a source and as an acknowledgement's destination, a [`Link`](crate::Link)
    /// never takes it for its own, and the group states refuse it as a member, sender or local address.
    pub const BROADCAST: Addr = Addr(0xFF);
}

/// A parsed frame, borrowing its payload from the received bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// One fragment of a message.
    Data(Data<'a>),
    /// A selective acknowledgement of a message's fragments.
    Sack(Sack),
    /// A selective acknowledgement of a group message's fragments, from a member to the group's sender.
    GroupSack(Sack),
}

/// A data frame: fragment `index` of the `count` fragments of message `id`; a group's if `dst` is
/// [`Addr::BROADCAST`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Data<'a> {
    /// The destination.
    pub dst: Addr,
    /// The source.
    pub src: Addr,
    /// The message id (per link and direction, +1 per message, wrapping).
    pub id: u8,
    /// The number of fragments of the message, 1 to [`MAX_FRAGMENTS`].
    pub count: u8,
    /// This fragment's index, below `count`.
    pub index: u8,
    /// Whether the sender asks for a [`Sack`] now (the last frame of a burst).
    pub ack_request: bool,
    /// The fragment's bytes. All fragments of a message but the last have the same length; the last is no longer.
    pub payload: &'a [u8],
}

/// A selective acknowledgement ([`Frame::Sack`] or [`Frame::GroupSack`]): which fragments of message `id` the
/// receiver holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sack {
    /// The destination (the data's source).
    pub dst: Addr,
    /// The source (the data's destination).
    pub src: Addr,
    /// The message id acknowledged.
    pub id: u8,
    /// The message's fragment count, echoed.
    pub count: u8,
    /// Bit i (of value 2^i) set: fragment i is held. No bit at or above `count` is set.
    pub bitmap: u32,
}

/// The destination and source of a frame, read from its first two bytes without checking the rest: how a node
/// with several links picks the one to hand a frame to (frames for other addresses are not its business). With
/// [`is_group`], how it routes a group's frames: see [`is_group`].
pub fn peek_addrs(frame: &[u8]) -> Option<(Addr, Addr)> {
    match frame {
        [dst, src, ..] => Some((Addr(*dst), Addr(*src))),
        _ => None,
    }
}

/// Whether a frame belongs to a group rather than to a link, read from its header without checking the rest: a
/// data frame to [`Addr::BROADCAST`] (for the member state of its source, a
/// [`GroupReceiver`](crate::GroupReceiver)) or a group acknowledgement, control `0x21` (for the
/// [`GroupSender`](crate::GroupSender) of its destination). A node routes each frame it hears:
///
/// ```text
/// (dst, src) = peek_addrs(frame)
/// dst == Addr::BROADCAST           -> the GroupReceiver whose sender is src, if any; else ignore
/// dst == local &&  is_group(frame) -> this node's GroupSender
/// dst == local && !is_group(frame) -> the Link whose peer is src
/// otherwise                        -> not for this node
/// ```
pub fn is_group(frame: &[u8]) -> bool {
    matches!(frame, [0xFF, ..] | [_, _, CTL_GROUP_SACK, ..])
}

/// A bitmap with the low `count` bits set: all fragments of a message of `count`.
pub(crate) fn full_bitmap(count: u8) -> u32 {
    match 1u32.checked_shl(u32::from(count)) {
        Some(bit) => bit - 1,
        None => u32::MAX,
    }
}

impl<'a> Frame<'a> {
    /// Parse one frame, checking everything that does not depend on the link's state: length, type, count, index
    /// and that a fragment of a message of several is not empty, that an acknowledgement marks no fragment
    /// beyond the count, and that [`Addr::BROADCAST`] is neither the source nor an acknowledgement's destination
    /// ([`LinkError::WrongAddress`]).
    pub fn parse(bytes: &'a [u8]) -> Result<Frame<'a>, LinkError> {
        let frame = Frame::parse_fields(bytes)?;
        if !frame.addresses_ok() {
            return Err(LinkError::WrongAddress);
        }
        Ok(frame)
    }

    /// Whether the addresses are possible: a source is a node, and only data goes to [`Addr::BROADCAST`].
    fn addresses_ok(&self) -> bool {
        match self {
            Frame::Data(d) => d.src != Addr::BROADCAST,
            Frame::Sack(s) | Frame::GroupSack(s) => {
                s.src != Addr::BROADCAST && s.dst != Addr::BROADCAST
            }
        }
    }

    fn parse_fields(bytes: &'a [u8]) -> Result<Frame<'a>, LinkError> {
        if bytes.len() > MAX_FRAME {
            return Err(LinkError::TooLong);
        }
        let [dst, src, ctl, id, count, rest @ ..] = bytes else {
            return Err(LinkError::Truncated);
        };
        let (dst, src, id, count) = (Addr(*dst), Addr(*src), *id, *count);
        if !matches!(
            *ctl,
            CTL_DATA | CTL_DATA_ACK_REQUEST | CTL_SACK | CTL_GROUP_SACK
        ) {
            return Err(LinkError::UnknownType);
        }
        if count == 0 || usize::from(count) > MAX_FRAGMENTS {
            return Err(LinkError::BadCount);
        }
        if matches!(*ctl, CTL_SACK | CTL_GROUP_SACK) {
            let bitmap: [u8; 4] = match rest.len() {
                ..4 => return Err(LinkError::Truncated),
                4 => rest.try_into().map_err(|_| LinkError::Truncated)?,
                _ => return Err(LinkError::TooLong),
            };
            let bitmap = u32::from_be_bytes(bitmap);
            if bitmap & !full_bitmap(count) != 0 {
                return Err(LinkError::BadBitmap);
            }
            let sack = Sack {
                dst,
                src,
                id,
                count,
                bitmap,
            };
            return Ok(if *ctl == CTL_GROUP_SACK {
                Frame::GroupSack(sack)
            } else {
                Frame::Sack(sack)
            });
        }
        let [index, payload @ ..] = rest else {
            return Err(LinkError::Truncated);
        };
        if *index >= count {
            return Err(LinkError::BadIndex);
        }
        // Only a message of one fragment may be empty: an empty fragment among several would make two encodings
        // of one message.
        if count > 1 && payload.is_empty() {
            return Err(LinkError::BadLength);
        }
        Ok(Frame::Data(Data {
            dst,
            src,
            id,
            count,
            index: *index,
            ack_request: *ctl == CTL_DATA_ACK_REQUEST,
            payload,
        }))
    }

    /// The destination.
    pub fn dst(&self) -> Addr {
        match self {
            Frame::Data(d) => d.dst,
            Frame::Sack(s) | Frame::GroupSack(s) => s.dst,
        }
    }

    /// The source.
    pub fn src(&self) -> Addr {
        match self {
            Frame::Data(d) => d.src,
            Frame::Sack(s) | Frame::GroupSack(s) => s.src,
        }
    }

    /// Whether it belongs to a group: a data frame to [`Addr::BROADCAST`] or a group acknowledgement.
    pub fn is_group(&self) -> bool {
        match self {
            Frame::Data(d) => d.dst == Addr::BROADCAST,
            Frame::Sack(_) => false,
            Frame::GroupSack(_) => true,
        }
    }

    /// The encoded length.
    pub fn len(&self) -> usize {
        match self {
            Frame::Data(d) => HEADER_LEN + d.payload.len(),
            Frame::Sack(_) | Frame::GroupSack(_) => SACK_LEN,
        }
    }

    /// Never true: a frame always has a header. (For clippy's `len_without_is_empty`.)
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Write the frame into `out`; its length, or `None` if `out` is too short, the frame longer than
    /// [`MAX_FRAME`], or its addresses impossible (what [`parse`](Self::parse) would refuse as
    /// [`LinkError::WrongAddress`]).
    pub fn write(&self, out: &mut [u8]) -> Option<usize> {
        let n = self.len();
        if n > MAX_FRAME || !self.addresses_ok() {
            return None;
        }
        let out = out.get_mut(..n)?;
        match self {
            Frame::Data(d) => {
                let (header, payload) = out.split_at_mut_checked(HEADER_LEN)?;
                let ctl = if d.ack_request {
                    CTL_DATA_ACK_REQUEST
                } else {
                    CTL_DATA
                };
                header.copy_from_slice(&[d.dst.0, d.src.0, ctl, d.id, d.count, d.index]);
                payload.copy_from_slice(d.payload);
            }
            Frame::Sack(s) | Frame::GroupSack(s) => {
                let ctl = if let Frame::GroupSack(_) = self {
                    CTL_GROUP_SACK
                } else {
                    CTL_SACK
                };
                let b = s.bitmap.to_be_bytes();
                out.copy_from_slice(&[
                    s.dst.0, s.src.0, ctl, s.id, s.count, b[0], b[1], b[2], b[3],
                ]);
            }
        }
        Some(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(f: Frame<'_>) {
        let mut buf = [0u8; MAX_FRAME];
        let n = f.write(&mut buf).unwrap_or(0);
        assert_eq!(n, f.len());
        assert_eq!(Frame::parse(&buf[..n]), Ok(f));
    }

    #[test]
    fn frames_round_trip() {
        round_trip(Frame::Data(Data {
            dst: Addr(2),
            src: Addr(1),
            id: 7,
            count: 3,
            index: 2,
            ack_request: true,
            payload: b"xyz",
        }));
        round_trip(Frame::Data(Data {
            dst: Addr(0),
            src: Addr(254),
            id: 255,
            count: 1,
            index: 0,
            ack_request: false,
            payload: b"",
        }));
        round_trip(Frame::Sack(Sack {
            dst: Addr(1),
            src: Addr(2),
            id: 0,
            count: 32,
            bitmap: u32::MAX,
        }));
        // A group's data frame and a group acknowledgement.
        round_trip(Frame::Data(Data {
            dst: Addr::BROADCAST,
            src: Addr(0),
            id: 9,
            count: 2,
            index: 1,
            ack_request: true,
            payload: b"group",
        }));
        round_trip(Frame::GroupSack(Sack {
            dst: Addr(0),
            src: Addr(3),
            id: 9,
            count: 2,
            bitmap: 0b10,
        }));
    }

    #[test]
    fn the_broadcast_address_is_never_a_source_nor_acknowledged_to() {
        let cases: &[&[u8]] = &[
            &[2, 0xff, 0x10, 0, 1, 0],
            &[0xff, 0xff, 0x11, 0, 1, 0, 7],
            &[1, 0xff, 0x20, 0, 1, 0, 0, 0, 1],
            &[0xff, 2, 0x20, 0, 1, 0, 0, 0, 1],
            &[0xff, 2, 0x21, 0, 1, 0, 0, 0, 1],
            &[0, 0xff, 0x21, 0, 1, 0, 0, 0, 1],
        ];
        for bytes in cases {
            assert_eq!(
                Frame::parse(bytes),
                Err(LinkError::WrongAddress),
                "{bytes:02x?}"
            );
        }
        let forged = Frame::GroupSack(Sack {
            dst: Addr::BROADCAST,
            src: Addr(1),
            id: 0,
            count: 1,
            bitmap: 1,
        });
        assert_eq!(forged.write(&mut [0u8; 16]), None);
        // Data to the broadcast address is a group's.
        let Ok(f) = Frame::parse(&[0xff, 0, 0x11, 4, 1, 0, 7]) else {
            panic!()
        };
        assert!(f.is_group());
        assert!(Frame::parse(&[0, 3, 0x21, 4, 1, 0, 0, 0, 1]).is_ok_and(|f| f.is_group()));
        assert!(Frame::parse(&[0, 3, 0x20, 4, 1, 0, 0, 0, 1]).is_ok_and(|f| !f.is_group()));
    }

    #[test]
    fn malformed_frames_are_refused() {
        use LinkError::*;
        let cases: &[(&[u8], LinkError)] = &[
            (&[], Truncated),
            (&[2, 1, 0x10, 0], Truncated),
            (&[2, 1, 0x10, 0, 1], Truncated),
            (&[2, 1, 0x20, 0, 1, 0, 0, 0], Truncated),
            (&[2, 1, 0x20, 0, 1, 0, 0, 0, 1, 0], TooLong),
            (&[2, 1, 0x00, 0, 1, 0], UnknownType),
            (&[2, 1, 0x12, 0, 1, 0], UnknownType),
            (&[2, 1, 0x22, 0, 1, 0, 0, 0, 1], UnknownType),
            (&[2, 1, 0x21, 0, 1, 0, 0, 0], Truncated),
            (&[2, 1, 0x21, 0, 1, 0, 0, 0, 1, 0], TooLong),
            (&[2, 1, 0x21, 0, 2, 0, 0, 0, 4], BadBitmap),
            (&[2, 1, 0x21, 0, 0, 0, 0, 0, 0], BadCount),
            (&[2, 1, 0x10, 0, 0, 0], BadCount),
            (&[2, 1, 0x10, 0, 33, 0, 1], BadCount),
            (&[2, 1, 0x20, 0, 0, 0, 0, 0, 0], BadCount),
            (&[2, 1, 0x10, 0, 3, 3, 1], BadIndex),
            (&[2, 1, 0x10, 0, 3, 0xff, 1], BadIndex),
            (&[2, 1, 0x10, 0, 3, 1], BadLength),
            (&[2, 1, 0x20, 0, 3, 0, 0, 0, 8], BadBitmap),
            (&[2, 1, 0x20, 0, 31, 0x80, 0, 0, 0], BadBitmap),
        ];
        for (bytes, err) in cases {
            assert_eq!(Frame::parse(bytes), Err(*err), "{bytes:02x?}");
        }
        assert_eq!(Frame::parse(&[0x10; 256]), Err(TooLong));
        // A one-fragment message may be empty; its header alone is a frame.
        assert!(Frame::parse(&[2, 1, 0x11, 0, 1, 0]).is_ok());
    }

    #[test]
    fn peek() {
        assert_eq!(peek_addrs(&[9, 8, 0xff]), Some((Addr(9), Addr(8))));
        assert_eq!(peek_addrs(&[9]), None);
        assert!(is_group(&[0xff]));
        assert!(is_group(&[0, 3, 0x21]));
        assert!(!is_group(&[0, 3, 0x20, 0, 1, 0, 0, 0, 1]));
        assert!(!is_group(&[2, 1, 0x11, 0, 1, 0]));
        assert!(!is_group(&[]));
        assert!(!is_group(&[2, 1]));
    }

    #[test]
    fn bitmaps() {
        assert_eq!(full_bitmap(1), 1);
        assert_eq!(full_bitmap(3), 0b111);
        assert_eq!(full_bitmap(32), u32::MAX);
        assert_eq!(full_bitmap(200), u32::MAX);
    }
}
