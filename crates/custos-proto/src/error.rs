//! The crate's one error type.

use core::fmt;

use crate::schedule::{ScheduleError, Stage};

/// Everything that can go wrong in the core. Each variant says what was wrong with the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// A schedule is malformed or does not nest.
    Schedule(ScheduleError),
    /// Bytes ended before the structure did.
    Truncated,
    /// Bytes continued after the structure ended.
    TrailingBytes,
    /// A field holds a value that is not allowed there.
    InvalidValue(&'static str),
    /// The object carries a format version this implementation does not know.
    UnsupportedVersion(u8),
    /// The object names a cipher suite this implementation (or backend) does not offer.
    UnsupportedSuite(u8),
    /// A time lies before 1970-01-01 or after 9999-12-31 (UTC).
    TimeOutOfRange,
    /// A time that must lie on a leaf boundary of the schedule does not.
    NotAligned {
        /// The offending time, seconds since the Unix epoch.
        at: u64,
        /// The schedule's leaf stage.
        leaf: Stage,
    },
    /// A time span is empty or reversed.
    EmptySpan,
    /// A time or node lies outside the DPK epoch's validity span.
    OutsideEpoch,
    /// The leaf period index does not fit the record header's 32 bits.
    LeafIndexOverflow,
    /// A node index names no period of its stage (for example the fifth week of a 28-day February).
    InvalidNode,
    /// The secret held is not an ancestor of the node asked for, so it cannot derive it.
    NotDescendant,
    /// None of the secrets held covers this leaf period.
    NotGranted {
        /// The leaf period index of the record.
        leaf: u32,
    },
    /// The record belongs to another device, epoch, leaf or suite than the key used.
    KeyMismatch,
    /// The output buffer is too small.
    BufferTooSmall {
        /// Bytes needed.
        needed: usize,
    },
    /// The record failed authentication: it was altered, or the key is wrong. No plaintext was released.
    Authentication,
    /// The crypto backend refused the operation (for example an HKDF output length out of range).
    Crypto,
    /// A handshake message failed: a wrong code, an altered or replayed message, or a peer that is not the one
    /// pinned. Nothing of the session is kept.
    Handshake,
    /// A signature does not verify with the key it must come from.
    Signature,
    /// A signed statement (a request, a grant) is past its expiry.
    Expired,
    /// A protocol message arrived that this state does not expect.
    UnexpectedMessage {
        /// The message type expected.
        expected: u8,
        /// The message type received.
        got: u8,
    },
    /// A list of authorized senders older than the one held (or the same version with other contents): a replay,
    /// or a relay that tries to undo a revocation.
    StaleList,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Schedule(e) => write!(f, "invalid schedule: {e}"),
            Self::Truncated => f.write_str("input is truncated"),
            Self::TrailingBytes => f.write_str("unexpected bytes after the end of the input"),
            Self::InvalidValue(what) => write!(f, "invalid value: {what}"),
            Self::UnsupportedVersion(v) => write!(f, "unsupported format version {v}"),
            Self::UnsupportedSuite(s) => write!(f, "unsupported cipher suite {s}"),
            Self::TimeOutOfRange => f.write_str("time is outside 1970-01-01..9999-12-31 UTC"),
            Self::NotAligned { at, leaf } => match crate::UnixTime::new(*at) {
                Ok(t) => write!(
                    f,
                    "{t} is not on a {leaf} boundary (the schedule's leaf stage)"
                ),
                Err(_) => write!(
                    f,
                    "time {at} is not on a {leaf} boundary (the schedule's leaf stage)"
                ),
            },
            Self::EmptySpan => f.write_str("time span is empty: the end must be after the start"),
            Self::OutsideEpoch => f.write_str("time lies outside the DPK epoch's validity span"),
            Self::LeafIndexOverflow => f.write_str("leaf period index does not fit in 32 bits"),
            Self::InvalidNode => f.write_str("node index names no period of its stage"),
            Self::NotDescendant => f.write_str("the secret held does not cover the node asked for"),
            Self::NotGranted { leaf } => write!(f, "no secret held covers leaf period {leaf}"),
            Self::KeyMismatch => {
                f.write_str("record belongs to another device, epoch, leaf or suite than the key")
            }
            Self::BufferTooSmall { needed } => {
                write!(f, "output buffer too small: {needed} bytes needed")
            }
            Self::Authentication => f.write_str(
                "record failed authentication (altered, or wrong key); no plaintext released",
            ),
            Self::Crypto => f.write_str("crypto backend refused the operation"),
            Self::Handshake => f.write_str(
                "handshake failed: wrong code, an altered or replayed message, or not the expected peer",
            ),
            Self::Signature => f.write_str("signature does not verify with the expected key"),
            Self::Expired => f.write_str("the statement has expired"),
            Self::UnexpectedMessage { expected, got } => {
                write!(f, "unexpected message type {got:#04x} (expected {expected:#04x})")
            }
            Self::StaleList => f.write_str(
                "the list of authorized senders is not newer than the one held (replayed or rolled back)",
            ),
        }
    }
}

impl core::error::Error for Error {}

impl From<ScheduleError> for Error {
    fn from(e: ScheduleError) -> Self {
        Self::Schedule(e)
    }
}
