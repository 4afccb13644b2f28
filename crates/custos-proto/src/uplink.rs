//! Device ↔ hub messages: a sealed record (or a batch of them) authenticated with the server–device key, with a
//! sequence number the hub checks so that no message is stored twice, replayed, or accepted too late.
//!
//! ```text
//! Uplink (device → hub)                              Ack (hub → device)
//! offset len                                         offset len
//!      0   1  0x31                                        0   1  0x32
//!      1   6  sequence number, big-endian (< 2^48)        1   6  sequence number acknowledged
//!      7   n  body: one sealed record                     7   1  verdict: 0 stored, 1 duplicate, 2 too old
//!    7+n  16  tag                                         8  16  tag
//! ```
//!
//! `tag = HMAC-SHA256(K, type ‖ device id ‖ seq ‖ body)[..16]`, with `K = HKDF-Expand(SDK, "custos/v1/uplink")`
//! for uplinks and `"custos/v1/downlink"` for acks. The device id is not sent (the transport names it: the MQTT
//! topic, the HTTP path) but it is authenticated. The body is not encrypted: it is a sealed record already, and
//! the hub must read its header to index it. Overhead: [`UPLINK_OVERHEAD`] = 23 bytes.
//!
//! The MAC does not depend on a nonce, so a device that loses its counter in a crash loses nothing but the
//! messages the hub then calls duplicates; it never weakens the key. Sequence numbers are checked against the
//! highest one stored: anything more than [`WINDOW`] below it is too old, anything stored already is a duplicate.
//!
//! A device that reserved sequence numbers it never sent (it was killed between reserving one and queueing the
//! message) says so with a **skip** notice, so that the hub can tell such a gap from a lost message:
//!
//! ```text
//! Skip (device → hub)
//! offset len
//!      0   1  0x33
//!      1   6  first skipped sequence number
//!      7   6  last skipped sequence number (not below the first)
//!     13  16  tag = HMAC-SHA256(K_up, 0x33 ‖ device id ‖ first ‖ last)[..16]
//! ```
//!
//! A skip travels in a batch like an uplink and is answered with an ack for `from` whose verdict is
//! [`Verdict::Noted`]; saying the same thing twice is harmless.

use subtle::ConstantTimeEq;

use crate::{Crypto, DeviceId, Error, Secret};

/// Message type of an uplink.
pub const UPLINK: u8 = 0x31;
/// Message type of an ack.
pub const ACK: u8 = 0x32;
/// Message type of a skip notice.
pub const SKIP: u8 = 0x33;
/// Length of a skip notice.
pub const SKIP_LEN: usize = 1 + 6 + 6 + 16;
/// Message type of a pairing-wait token.
pub const PAIRING_WAIT: u8 = 0x34;
/// Length of a pairing-wait token.
pub const PAIRING_WAIT_LEN: usize = 1 + 8 + 16;
/// Bytes an uplink adds to its body.
pub const UPLINK_OVERHEAD: usize = 1 + 6 + 16;
/// Length of an ack.
pub const ACK_LEN: usize = 1 + 6 + 1 + 16;
/// How far below the highest stored sequence number a message may still arrive (reordering on lossy links).
pub const WINDOW: u64 = 1024;
/// The largest sequence number (48 bits).
pub const MAX_SEQ: u64 = (1 << 48) - 1;

const UP_LABEL: &[u8] = b"custos/v1/uplink";
const HUB_KEY_LABEL: &[u8] = b"custos/v1/hub-key";
/// Length of an authenticated hub signing key.
pub const HUB_KEY_LEN: usize = 32 + 16;
const DOWN_LABEL: &[u8] = b"custos/v1/downlink";

/// What the hub did with an uplink.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Stored.
    Stored,
    /// A message with this sequence number is stored already; nothing changed.
    Duplicate,
    /// More than [`WINDOW`] below the highest stored sequence number; refused.
    TooOld,
    /// A skip notice was recorded (the answer to a skip, never to an uplink).
    Noted,
}

impl Verdict {
    fn code(self) -> u8 {
        match self {
            Self::Stored => 0,
            Self::Duplicate => 1,
            Self::TooOld => 2,
            Self::Noted => 3,
        }
    }
}

/// Whether `seq` is too old to accept, given the highest stored sequence number (−1 if none yet).
pub fn is_too_old(seq: u64, max_seq: i64) -> bool {
    u64::try_from(max_seq).is_ok_and(|max| seq.saturating_add(WINDOW) <= max)
}

/// The two MAC keys of a device's session, derived from its server–device key.
#[derive(Clone)]
pub struct LinkKeys {
    up: Secret,
    down: Secret,
}

impl LinkKeys {
    /// Derives the uplink and downlink keys from the server–device key.
    pub fn derive<C: Crypto>(crypto: &C, session_key: &Secret) -> Result<Self, Error> {
        let mut up = Secret::zero();
        let mut down = Secret::zero();
        crypto.hkdf_expand(session_key.expose(), &[UP_LABEL], up.expose_mut())?;
        crypto.hkdf_expand(session_key.expose(), &[DOWN_LABEL], down.expose_mut())?;
        Ok(Self { up, down })
    }
}

fn seq_bytes(seq: u64) -> Result<[u8; 6], Error> {
    if seq > MAX_SEQ {
        return Err(Error::InvalidValue("sequence number above 2^48 - 1"));
    }
    let b = seq.to_be_bytes();
    Ok([b[2], b[3], b[4], b[5], b[6], b[7]])
}

fn read_seq(b: &[u8]) -> u64 {
    b.iter().fold(0u64, |acc, &x| (acc << 8) | u64::from(x))
}

fn tag<C: Crypto>(
    crypto: &C,
    key: &Secret,
    kind: u8,
    device: DeviceId,
    head: &[u8],
    body: &[u8],
) -> [u8; 16] {
    let full = crypto.hmac_sha256(key.expose(), &[&[kind], &device.0, head, body]);
    let mut t = [0u8; 16];
    t.copy_from_slice(&full[..16]);
    t
}

/// Writes an uplink carrying `body` into `out`; returns its length (`body.len() + UPLINK_OVERHEAD`).
pub fn seal_uplink<C: Crypto>(
    crypto: &C,
    keys: &LinkKeys,
    device: DeviceId,
    seq: u64,
    body: &[u8],
    out: &mut [u8],
) -> Result<usize, Error> {
    let needed = body.len() + UPLINK_OVERHEAD;
    let out = out
        .get_mut(..needed)
        .ok_or(Error::BufferTooSmall { needed })?;
    let seq = seq_bytes(seq)?;
    out[0] = UPLINK;
    out[1..7].copy_from_slice(&seq);
    out[7..7 + body.len()].copy_from_slice(body);
    let t = tag(crypto, &keys.up, UPLINK, device, &seq, body);
    out[7 + body.len()..].copy_from_slice(&t);
    Ok(needed)
}

/// Verifies an uplink from `device` and returns its sequence number and body.
pub fn open_uplink<'m, C: Crypto>(
    crypto: &C,
    keys: &LinkKeys,
    device: DeviceId,
    msg: &'m [u8],
) -> Result<(u64, &'m [u8]), Error> {
    let (&kind, rest) = msg.split_first().ok_or(Error::Truncated)?;
    if kind != UPLINK {
        return Err(Error::UnexpectedMessage {
            expected: UPLINK,
            got: kind,
        });
    }
    if rest.len() < 6 + 16 {
        return Err(Error::Truncated);
    }
    let (seq, rest) = rest.split_at(6);
    let (body, got) = rest.split_at(rest.len() - 16);
    let want = tag(crypto, &keys.up, UPLINK, device, seq, body);
    if !bool::from(want.ct_eq(got)) {
        return Err(Error::Authentication);
    }
    Ok((read_seq(seq), body))
}

/// Writes a skip notice: the device reserved the sequence numbers `from..until` but will never send them.
pub fn seal_skip<C: Crypto>(
    crypto: &C,
    keys: &LinkKeys,
    device: DeviceId,
    from: u64,
    until: u64,
) -> Result<[u8; SKIP_LEN], Error> {
    if from >= until || until > MAX_SEQ + 1 {
        return Err(Error::InvalidValue(
            "a skip runs from a sequence number to a later one",
        ));
    }
    let mut out = [0u8; SKIP_LEN];
    out[0] = SKIP;
    out[1..7].copy_from_slice(&seq_bytes(from)?);
    // The last number, inclusive, so that a range may end at the largest sequence number.
    out[7..13].copy_from_slice(&seq_bytes(until - 1)?);
    let t = tag(crypto, &keys.up, SKIP, device, &out[1..13], &[]);
    out[13..].copy_from_slice(&t);
    Ok(out)
}

/// Verifies a skip notice from `device`; returns the skipped range `from..until`.
pub fn open_skip<C: Crypto>(
    crypto: &C,
    keys: &LinkKeys,
    device: DeviceId,
    msg: &[u8],
) -> Result<(u64, u64), Error> {
    let (&kind, _) = msg.split_first().ok_or(Error::Truncated)?;
    if kind != SKIP {
        return Err(Error::UnexpectedMessage {
            expected: SKIP,
            got: kind,
        });
    }
    let msg: &[u8; SKIP_LEN] = msg.try_into().map_err(|_| {
        if msg.len() < SKIP_LEN {
            Error::Truncated
        } else {
            Error::TrailingBytes
        }
    })?;
    let want = tag(crypto, &keys.up, SKIP, device, &msg[1..13], &[]);
    if !bool::from(want.ct_eq(&msg[13..])) {
        return Err(Error::Authentication);
    }
    let (from, last) = (read_seq(&msg[1..7]), read_seq(&msg[7..13]));
    if last < from {
        return Err(Error::InvalidValue(
            "a skip runs from a sequence number to a later one",
        ));
    }
    Ok((from, last + 1))
}

/// A pairing-wait token: the device says, at `time` (Unix seconds), that it waits for its keeper, so that the hub
/// relays pairing messages for it. `0x34 ‖ time (8) ‖ HMAC-SHA256(K_up, 0x34 ‖ device id ‖ time)[..16]`.
pub fn seal_pairing_wait<C: Crypto>(
    crypto: &C,
    keys: &LinkKeys,
    device: DeviceId,
    time: u64,
) -> [u8; PAIRING_WAIT_LEN] {
    let mut out = [0u8; PAIRING_WAIT_LEN];
    out[0] = PAIRING_WAIT;
    out[1..9].copy_from_slice(&time.to_be_bytes());
    let t = tag(crypto, &keys.up, PAIRING_WAIT, device, &out[1..9], &[]);
    out[9..].copy_from_slice(&t);
    out
}

/// Verifies a pairing-wait token from `device`; returns the time it names (the caller checks it is recent).
pub fn open_pairing_wait<C: Crypto>(
    crypto: &C,
    keys: &LinkKeys,
    device: DeviceId,
    msg: &[u8],
) -> Result<u64, Error> {
    let msg: &[u8; PAIRING_WAIT_LEN] = msg.try_into().map_err(|_| {
        if msg.len() < PAIRING_WAIT_LEN {
            Error::Truncated
        } else {
            Error::TrailingBytes
        }
    })?;
    if msg[0] != PAIRING_WAIT {
        return Err(Error::UnexpectedMessage {
            expected: PAIRING_WAIT,
            got: msg[0],
        });
    }
    let want = tag(crypto, &keys.up, PAIRING_WAIT, device, &msg[1..9], &[]);
    if !bool::from(want.ct_eq(&msg[9..])) {
        return Err(Error::Authentication);
    }
    let mut time = [0u8; 8];
    time.copy_from_slice(&msg[1..9]);
    Ok(u64::from_be_bytes(time))
}

/// Message type of a claim proof.
pub const CLAIM_PROOF: u8 = 0x35;
/// Length of a claim proof.
pub const CLAIM_PROOF_LEN: usize = 1 + 16 + 16;

/// A claim proof: the device tells the hub, under its session, the claim token it opened from a sealed claim
/// (docs/wire.md §11), so the hub knows the claimant holds the user–device key.
/// `0x35 ‖ token (16) ‖ HMAC-SHA256(K_up, 0x35 ‖ device id ‖ token)[..16]`.
pub fn seal_claim_proof<C: Crypto>(
    crypto: &C,
    keys: &LinkKeys,
    device: DeviceId,
    token: &[u8; 16],
) -> [u8; CLAIM_PROOF_LEN] {
    let mut out = [0u8; CLAIM_PROOF_LEN];
    out[0] = CLAIM_PROOF;
    out[1..17].copy_from_slice(token);
    let t = tag(crypto, &keys.up, CLAIM_PROOF, device, token, &[]);
    out[17..].copy_from_slice(&t);
    out
}

/// Verifies a claim proof from `device`; returns the token.
pub fn open_claim_proof<C: Crypto>(
    crypto: &C,
    keys: &LinkKeys,
    device: DeviceId,
    msg: &[u8],
) -> Result<[u8; 16], Error> {
    let msg: &[u8; CLAIM_PROOF_LEN] = msg.try_into().map_err(|_| {
        if msg.len() < CLAIM_PROOF_LEN {
            Error::Truncated
        } else {
            Error::TrailingBytes
        }
    })?;
    if msg[0] != CLAIM_PROOF {
        return Err(Error::UnexpectedMessage {
            expected: CLAIM_PROOF,
            got: msg[0],
        });
    }
    let want = tag(crypto, &keys.up, CLAIM_PROOF, device, &msg[1..17], &[]);
    if !bool::from(want.ct_eq(&msg[17..])) {
        return Err(Error::Authentication);
    }
    let mut token = [0u8; 16];
    token.copy_from_slice(&msg[1..17]);
    Ok(token)
}

/// One message of a batch from a device: an uplink or a skip notice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Upward<'m> {
    /// An uplink: its sequence number and body (a sealed record).
    Uplink {
        /// The sequence number.
        seq: u64,
        /// The body.
        body: &'m [u8],
    },
    /// A skip notice: sequence numbers `from..until` were reserved and will never be sent.
    Skip {
        /// The first skipped sequence number.
        from: u64,
        /// The end of the range, exclusive.
        until: u64,
    },
}

/// Verifies one message of a batch from `device`, an uplink or a skip notice, by its type byte.
pub fn open_upward<'m, C: Crypto>(
    crypto: &C,
    keys: &LinkKeys,
    device: DeviceId,
    msg: &'m [u8],
) -> Result<Upward<'m>, Error> {
    match msg.first() {
        Some(&SKIP) => {
            open_skip(crypto, keys, device, msg).map(|(from, until)| Upward::Skip { from, until })
        }
        _ => open_uplink(crypto, keys, device, msg).map(|(seq, body)| Upward::Uplink { seq, body }),
    }
}

/// The hub's answer to an uplink, authenticated so that nobody between can make a device drop unsaved data.
pub fn seal_ack<C: Crypto>(
    crypto: &C,
    keys: &LinkKeys,
    device: DeviceId,
    seq: u64,
    verdict: Verdict,
) -> Result<[u8; ACK_LEN], Error> {
    let mut out = [0u8; ACK_LEN];
    out[0] = ACK;
    out[1..7].copy_from_slice(&seq_bytes(seq)?);
    out[7] = verdict.code();
    let t = tag(crypto, &keys.down, ACK, device, &out[1..8], &[]);
    out[8..].copy_from_slice(&t);
    Ok(out)
}

/// Verifies an ack for `device`; returns the sequence number and verdict.
pub fn open_ack<C: Crypto>(
    crypto: &C,
    keys: &LinkKeys,
    device: DeviceId,
    msg: &[u8],
) -> Result<(u64, Verdict), Error> {
    let (&kind, _) = msg.split_first().ok_or(Error::Truncated)?;
    if kind != ACK {
        return Err(Error::UnexpectedMessage {
            expected: ACK,
            got: kind,
        });
    }
    let msg: &[u8; ACK_LEN] = msg.try_into().map_err(|_| {
        if msg.len() < ACK_LEN {
            Error::Truncated
        } else {
            Error::TrailingBytes
        }
    })?;
    let want = tag(crypto, &keys.down, ACK, device, &msg[1..8], &[]);
    if !bool::from(want.ct_eq(&msg[8..])) {
        return Err(Error::Authentication);
    }
    let verdict = match msg[7] {
        0 => Verdict::Stored,
        1 => Verdict::Duplicate,
        2 => Verdict::TooOld,
        3 => Verdict::Noted,
        _ => return Err(Error::InvalidValue("unknown ack verdict")),
    };
    Ok((read_seq(&msg[1..7]), verdict))
}

/// The hub's Ed25519 key for device lists, authenticated for `device` under the downlink key, so the device can
/// pin it: `key ‖ HMAC-SHA256(downlink key, "custos/v1/hub-key" ‖ device id ‖ key)[..16]`.
pub fn seal_hub_key<C: Crypto>(
    crypto: &C,
    keys: &LinkKeys,
    device: DeviceId,
    key: &[u8; 32],
) -> [u8; HUB_KEY_LEN] {
    let full = crypto.hmac_sha256(keys.down.expose(), &[HUB_KEY_LABEL, &device.0, key]);
    let mut out = [0u8; HUB_KEY_LEN];
    out[..32].copy_from_slice(key);
    out[32..].copy_from_slice(&full[..16]);
    out
}

/// Verifies [`seal_hub_key`]'s output and returns the key.
pub fn open_hub_key<C: Crypto>(
    crypto: &C,
    keys: &LinkKeys,
    device: DeviceId,
    msg: &[u8],
) -> Result<[u8; 32], Error> {
    let msg: &[u8; HUB_KEY_LEN] = msg.try_into().map_err(|_| {
        if msg.len() < HUB_KEY_LEN {
            Error::Truncated
        } else {
            Error::TrailingBytes
        }
    })?;
    let mut key = [0u8; 32];
    key.copy_from_slice(&msg[..32]);
    let want = seal_hub_key(crypto, keys, device, &key);
    if !bool::from(want[32..].ct_eq(&msg[32..])) {
        return Err(Error::Authentication);
    }
    Ok(key)
}
