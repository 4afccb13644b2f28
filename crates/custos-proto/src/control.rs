//! Owner control: commands the hub can neither read, forge nor replay, the device's authenticated answers, the
//! owner's list of who else may command the device, and the claim token's round trip (docs/wire.md §11).
//!
//! Everything is keyed by the *user–device key* (UDK) from pairing, which the keeper and the device hold and the
//! hub never sees, or by a member's key that the owner put in the list (sealed under the UDK):
//!
//! ```text
//! K_owner = Expand(UDK, "custos/v1/command/owner")   sender 0's key        K_list  = Expand(UDK, "custos/v1/control-list")
//! K_ack   = Expand(UDK, "custos/v1/control-list-ack")                      K_claim = Expand(UDK, "custos/v1/claim")
//! for every sender key K_s (K_owner, or a member's random key):  K_cmd = Expand(K_s, "custos/v1/command")
//!                                                                 K_ans = Expand(K_s, "custos/v1/answer")
//!
//! Command  41 ‖ suite ‖ sender (4) ‖ counter (8) ‖ expires (4) ‖ AEAD(K_cmd, sender ‖ counter, op ‖ value)   35 B + value
//! Answer   42 ‖ suite ‖ sender (4) ‖ counter (8) ‖ nonce (12) ‖ AEAD(K_ans, nonce, status ‖ state)         43 B + state
//! List     45 ‖ suite ‖ version (8) ‖ nonce (12) ‖ AEAD(K_list, nonce, n ‖ n × (sender ‖ rights ‖ key))
//! ListAck  46 ‖ suite ‖ version (8) ‖ nonce (12) ‖ tag                                                     38 B
//! Claim    47 ‖ suite ‖ nonce (12) ‖ AEAD(K_claim, nonce, token (16))                                        46 B
//! ```
//!
//! Each message's associated data is its label, the device id (not sent; the transport names the device) and
//! every header byte before the ciphertext, so nothing can be moved to another device, another sender, another
//! counter or another kind of message. The device ([`DeviceControl`]) accepts a command only if it
//! authenticates under the key of its sender, has not expired by the device's clock, and carries a counter above
//! the highest it accepted from that sender; the caller persists the raised mark ([`DeviceControl::commit`] and
//! [`DeviceControl::encode`]) *before* it acts. It accepts a list only with a version above the one it holds, so
//! a relay can delay a revocation but never undo it. Re-pairing rotates the UDK, and with it every key above
//! except members' own: whatever was sealed under the old UDK no longer opens.
//!
//! The module never does I/O and takes its nonces and clock from the caller.

use alloc::vec::Vec;

use crate::codec::Reader;
use crate::crypto::{NONCE_LEN, TAG_LEN};
use crate::{Crypto, DeviceId, Error, Secret, Suite};

/// Message type of a command (sender → device).
pub const COMMAND: u8 = 0x41;
/// Message type of an answer (device → sender).
pub const ANSWER: u8 = 0x42;
/// Message type of an authorized-sender list (owner → device).
pub const LIST: u8 = 0x45;
/// Message type of a list acknowledgement (device → owner).
pub const LIST_ACK: u8 = 0x46;
/// Message type of a sealed claim token (owner → device).
pub const CLAIM: u8 = 0x47;

/// The bytes before a command's ciphertext.
pub const COMMAND_HEADER: usize = 1 + 1 + 4 + 8 + 4;
/// What a command adds to its value: header, op and tag.
pub const COMMAND_OVERHEAD: usize = COMMAND_HEADER + 1 + TAG_LEN;
/// The bytes before an answer's ciphertext.
pub const ANSWER_HEADER: usize = 1 + 1 + 4 + 8 + NONCE_LEN;
/// What an answer adds to the state it reports: header, status and tag.
pub const ANSWER_OVERHEAD: usize = ANSWER_HEADER + 1 + TAG_LEN;
/// Length of a list acknowledgement.
pub const LIST_ACK_LEN: usize = 1 + 1 + 8 + NONCE_LEN + TAG_LEN;
/// Length of a claim token.
pub const TOKEN_LEN: usize = 16;
/// Length of a sealed claim.
pub const CLAIM_LEN: usize = 1 + 1 + NONCE_LEN + TOKEN_LEN + TAG_LEN;
/// The longest value a command carries and the longest state an answer reports, bytes.
pub const MAX_VALUE: usize = 64;
/// The most members a list holds.
pub const MAX_MEMBERS: usize = 64;
/// The right to send commands: bit 0 of a member's rights (the only one defined; other bits must be 0).
pub const RIGHT_CONTROL: u8 = 0x01;

const OWNER_LABEL: &[u8] = b"custos/v1/command/owner";
const LIST_LABEL: &[u8] = b"custos/v1/control-list";
const ACK_LABEL: &[u8] = b"custos/v1/control-list-ack";
const CLAIM_LABEL: &[u8] = b"custos/v1/claim";
const CMD_LABEL: &[u8] = b"custos/v1/command";
const ANS_LABEL: &[u8] = b"custos/v1/answer";
const MEMBER_LEN: usize = 4 + 1 + 32;
/// The format byte of [`DeviceControl::encode`].
const STATE_FORMAT: u8 = 1;

fn expand<C: Crypto>(crypto: &C, key: &Secret, label: &[u8]) -> Result<Secret, Error> {
    let mut out = Secret::zero();
    crypto.hkdf_expand(key.expose(), &[label], out.expose_mut())?;
    Ok(out)
}

/// What a command asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Drive the actuator to the value (e.g. `on`, `off`, `21.5`).
    Set,
    /// Report the state; the value is empty.
    Get,
}

impl Op {
    fn code(self) -> u8 {
        match self {
            Self::Set => 1,
            Self::Get => 2,
        }
    }
    fn from_code(c: u8) -> Result<Self, Error> {
        match c {
            1 => Ok(Self::Set),
            2 => Ok(Self::Get),
            _ => Err(Error::InvalidValue("unknown command op")),
        }
    }
}

/// What the device did with a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Done: the state is the actuator's new state.
    Done,
    /// Refused: its counter is not above the highest accepted from its sender (a replay, or out of order).
    Replayed,
    /// Refused: it expired before it reached the device.
    Expired,
    /// The actuator failed; its state is unchanged.
    Failed,
    /// The actuator does not take that value.
    BadValue,
}

impl Status {
    /// The status byte.
    pub fn code(self) -> u8 {
        match self {
            Self::Done => 0,
            Self::Replayed => 1,
            Self::Expired => 2,
            Self::Failed => 3,
            Self::BadValue => 4,
        }
    }
    fn from_code(c: u8) -> Result<Self, Error> {
        Ok(match c {
            0 => Self::Done,
            1 => Self::Replayed,
            2 => Self::Expired,
            3 => Self::Failed,
            4 => Self::BadValue,
            _ => return Err(Error::InvalidValue("unknown answer status")),
        })
    }
}

/// The keys the owner's side and the device derive from the UDK.
pub struct OwnerKeys {
    owner: SenderKeys,
    list: Secret,
    ack: Secret,
    claim: Secret,
}

impl OwnerKeys {
    /// Derives them from the user–device key.
    pub fn from_udk<C: Crypto>(crypto: &C, udk: &Secret) -> Result<Self, Error> {
        Ok(Self {
            owner: SenderKeys::derive(crypto, &expand(crypto, udk, OWNER_LABEL)?)?,
            list: expand(crypto, udk, LIST_LABEL)?,
            ack: expand(crypto, udk, ACK_LABEL)?,
            claim: expand(crypto, udk, CLAIM_LABEL)?,
        })
    }

    /// The command and answer keys of sender 0, the owner.
    pub fn owner(&self) -> &SenderKeys {
        &self.owner
    }
}

/// One sender's two keys: commands one way, answers the other.
#[derive(Clone)]
pub struct SenderKeys {
    cmd: Secret,
    ans: Secret,
}

impl SenderKeys {
    /// Derives them from a sender key (a member's key from the list).
    pub fn derive<C: Crypto>(crypto: &C, sender_key: &Secret) -> Result<Self, Error> {
        Ok(Self {
            cmd: expand(crypto, sender_key, CMD_LABEL)?,
            ans: expand(crypto, sender_key, ANS_LABEL)?,
        })
    }
}

fn seal_into<C: Crypto>(
    crypto: &C,
    suite: Suite,
    key: &Secret,
    nonce: &[u8; NONCE_LEN],
    aad: &[&[u8]],
    out: &mut Vec<u8>,
    plain_at: usize,
) -> Result<(), Error> {
    let k = crypto.aead_key(suite, key)?;
    let ad: Vec<u8> = aad.concat();
    let tag = crypto.aead_seal(&k, nonce, &ad, &mut out[plain_at..])?;
    out.extend_from_slice(&tag);
    Ok(())
}

/// Opens `body ‖ tag` into a fresh buffer; on failure nothing is released.
fn open_from<C: Crypto>(
    crypto: &C,
    suite: Suite,
    key: &Secret,
    nonce: &[u8; NONCE_LEN],
    aad: &[&[u8]],
    sealed: &[u8],
) -> Result<zeroize::Zeroizing<Vec<u8>>, Error> {
    if sealed.len() < TAG_LEN {
        return Err(Error::Truncated);
    }
    let (body, tag) = sealed.split_at(sealed.len() - TAG_LEN);
    let tag: &[u8; TAG_LEN] = tag.try_into().map_err(|_| Error::Truncated)?;
    let k = crypto.aead_key(suite, key)?;
    let ad: Vec<u8> = aad.concat();
    let mut buf = zeroize::Zeroizing::new(body.to_vec());
    if crypto.aead_open(&k, nonce, &ad, &mut buf, tag).is_err() {
        return Err(Error::Authentication);
    }
    Ok(buf)
}

fn check_type(msg: &[u8], want: u8) -> Result<(), Error> {
    match msg.first() {
        None => Err(Error::Truncated),
        Some(&t) if t != want => Err(Error::UnexpectedMessage {
            expected: want,
            got: t,
        }),
        Some(_) => Ok(()),
    }
}

fn suite_of(code: u8) -> Result<Suite, Error> {
    let s = Suite::from_code(code);
    if s.is_known() {
        Ok(s)
    } else {
        Err(Error::UnsupportedSuite(code))
    }
}

fn command_nonce(sender: u32, counter: u64) -> [u8; NONCE_LEN] {
    let mut n = [0u8; NONCE_LEN];
    n[..4].copy_from_slice(&sender.to_be_bytes());
    n[4..].copy_from_slice(&counter.to_be_bytes());
    n
}

/// A command's cleartext header: what the hub may read to route and expire it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommandHeader {
    /// The AEAD suite.
    pub suite: Suite,
    /// The sender id (0 = the owner).
    pub sender: u32,
    /// The sender's counter.
    pub counter: u64,
    /// When it expires (Unix seconds).
    pub expires: u32,
}

impl CommandHeader {
    /// Reads the header of a command without authenticating anything (for routing; the device authenticates).
    pub fn peek(msg: &[u8]) -> Result<Self, Error> {
        check_type(msg, COMMAND)?;
        if msg.len() < COMMAND_OVERHEAD {
            return Err(Error::Truncated);
        }
        let mut r = Reader::new(&msg[1..COMMAND_HEADER]);
        let suite = suite_of(r.u8()?)?;
        let sender = r.u32()?;
        let counter = u64::from_be_bytes(r.array()?);
        let expires = r.u32()?;
        Ok(Self {
            suite,
            sender,
            counter,
            expires,
        })
    }

    fn bytes(&self) -> [u8; COMMAND_HEADER] {
        let mut h = [0u8; COMMAND_HEADER];
        h[0] = COMMAND;
        h[1] = self.suite.code();
        h[2..6].copy_from_slice(&self.sender.to_be_bytes());
        h[6..14].copy_from_slice(&self.counter.to_be_bytes());
        h[14..18].copy_from_slice(&self.expires.to_be_bytes());
        h
    }
}

/// Seals a command from `header.sender` with its keys. The sender must never use a counter twice under one key
/// (the counter is the nonce): keep it on disk, raise it before use.
pub fn seal_command<C: Crypto>(
    crypto: &C,
    keys: &SenderKeys,
    device: DeviceId,
    header: CommandHeader,
    op: Op,
    value: &[u8],
) -> Result<Vec<u8>, Error> {
    if value.len() > MAX_VALUE {
        return Err(Error::InvalidValue("a command value is at most 64 bytes"));
    }
    if op == Op::Get && !value.is_empty() {
        return Err(Error::InvalidValue("a GET command carries no value"));
    }
    let h = header.bytes();
    let mut out = Vec::with_capacity(COMMAND_OVERHEAD + value.len());
    out.extend_from_slice(&h);
    out.push(op.code());
    out.extend_from_slice(value);
    let nonce = command_nonce(header.sender, header.counter);
    seal_into(
        crypto,
        header.suite,
        &keys.cmd,
        &nonce,
        &[CMD_LABEL, &device.0, &h],
        &mut out,
        COMMAND_HEADER,
    )?;
    Ok(out)
}

/// A command that authenticated, opened by [`open_command_with`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenedCommand {
    /// Its header.
    pub header: CommandHeader,
    /// What it asks.
    pub op: Op,
    /// The value (empty for [`Op::Get`]).
    pub value: Vec<u8>,
}

/// Opens a command under one sender's keys: authentication only; expiry and counter are the caller's (see
/// [`DeviceControl::open_command`]).
pub fn open_command_with<C: Crypto>(
    crypto: &C,
    keys: &SenderKeys,
    device: DeviceId,
    msg: &[u8],
) -> Result<OpenedCommand, Error> {
    let header = CommandHeader::peek(msg)?;
    if msg.len() > COMMAND_OVERHEAD + MAX_VALUE {
        return Err(Error::TrailingBytes);
    }
    let nonce = command_nonce(header.sender, header.counter);
    let plain = open_from(
        crypto,
        header.suite,
        &keys.cmd,
        &nonce,
        &[CMD_LABEL, &device.0, &msg[..COMMAND_HEADER]],
        &msg[COMMAND_HEADER..],
    )?;
    let (&op, value) = plain.split_first().ok_or(Error::Truncated)?;
    let op = Op::from_code(op)?;
    if op == Op::Get && !value.is_empty() {
        return Err(Error::InvalidValue("a GET command carries no value"));
    }
    Ok(OpenedCommand {
        header,
        op,
        value: value.to_vec(),
    })
}

fn answer_head(
    suite: Suite,
    sender: u32,
    counter: u64,
    nonce: &[u8; NONCE_LEN],
) -> [u8; ANSWER_HEADER] {
    let mut h = [0u8; ANSWER_HEADER];
    h[0] = ANSWER;
    h[1] = suite.code();
    h[2..6].copy_from_slice(&sender.to_be_bytes());
    h[6..14].copy_from_slice(&counter.to_be_bytes());
    h[14..].copy_from_slice(nonce);
    h
}

/// The device's answer to `header`'s command: `status` and the actuator's `state` after it. `nonce` is 12 fresh
/// random bytes (a device may answer one command more than once, e.g. a replay, so the counter cannot be the
/// nonce).
pub fn seal_answer<C: Crypto>(
    crypto: &C,
    keys: &SenderKeys,
    device: DeviceId,
    header: &CommandHeader,
    nonce: [u8; NONCE_LEN],
    status: Status,
    state: &[u8],
) -> Result<Vec<u8>, Error> {
    if state.len() > MAX_VALUE {
        return Err(Error::InvalidValue("a state is at most 64 bytes"));
    }
    let h = answer_head(header.suite, header.sender, header.counter, &nonce);
    let mut out = Vec::with_capacity(ANSWER_OVERHEAD + state.len());
    out.extend_from_slice(&h);
    out.push(status.code());
    out.extend_from_slice(state);
    seal_into(
        crypto,
        header.suite,
        &keys.ans,
        &nonce,
        &[ANS_LABEL, &device.0, &h],
        &mut out,
        ANSWER_HEADER,
    )?;
    Ok(out)
}

/// Opens the device's answer to the command with `sender` and `counter`: an answer to any other command, or one
/// the hub made up, is refused. Returns the status and the device's state.
pub fn open_answer<C: Crypto>(
    crypto: &C,
    keys: &SenderKeys,
    device: DeviceId,
    sender: u32,
    counter: u64,
    msg: &[u8],
) -> Result<(Status, Vec<u8>), Error> {
    check_type(msg, ANSWER)?;
    if msg.len() < ANSWER_OVERHEAD {
        return Err(Error::Truncated);
    }
    if msg.len() > ANSWER_OVERHEAD + MAX_VALUE {
        return Err(Error::TrailingBytes);
    }
    let mut r = Reader::new(&msg[1..ANSWER_HEADER]);
    let suite = suite_of(r.u8()?)?;
    let (s, c) = (r.u32()?, u64::from_be_bytes(r.array()?));
    let nonce: [u8; NONCE_LEN] = r.array()?;
    if (s, c) != (sender, counter) {
        return Err(Error::InvalidValue("the answer is for another command"));
    }
    let plain = open_from(
        crypto,
        suite,
        &keys.ans,
        &nonce,
        &[ANS_LABEL, &device.0, &msg[..ANSWER_HEADER]],
        &msg[ANSWER_HEADER..],
    )?;
    let (&status, state) = plain.split_first().ok_or(Error::Truncated)?;
    Ok((Status::from_code(status)?, state.to_vec()))
}

/// An entry of the authorized-sender list: someone other than the owner who may command the device.
#[derive(Clone, PartialEq, Eq)]
pub struct Member {
    /// The sender id (1 or more; 0 is the owner).
    pub sender: u32,
    /// Rights: [`RIGHT_CONTROL`].
    pub rights: u8,
    /// The member's sender key.
    pub key: Secret,
}

impl core::fmt::Debug for Member {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Member")
            .field("sender", &self.sender)
            .field("rights", &self.rights)
            .finish_non_exhaustive()
    }
}

fn check_members(members: &[Member]) -> Result<(), Error> {
    if members.len() > MAX_MEMBERS {
        return Err(Error::InvalidValue("a list holds at most 64 members"));
    }
    let mut last = 0u32;
    for m in members {
        if m.sender <= last {
            return Err(Error::InvalidValue(
                "list members must have sender ids from 1, strictly increasing",
            ));
        }
        if m.rights & !RIGHT_CONTROL != 0 {
            return Err(Error::InvalidValue("unknown rights bits"));
        }
        last = m.sender;
    }
    Ok(())
}

fn list_head(suite: Suite, version: u64, nonce: &[u8; NONCE_LEN], kind: u8) -> [u8; 22] {
    let mut h = [0u8; 22];
    h[0] = kind;
    h[1] = suite.code();
    h[2..10].copy_from_slice(&version.to_be_bytes());
    h[10..].copy_from_slice(nonce);
    h
}

/// Seals the owner's list of authorized senders, version `version` (above every earlier one), with a fresh
/// random `nonce`.
pub fn seal_list<C: Crypto>(
    crypto: &C,
    suite: Suite,
    keys: &OwnerKeys,
    device: DeviceId,
    version: u64,
    nonce: [u8; NONCE_LEN],
    members: &[Member],
) -> Result<Vec<u8>, Error> {
    check_members(members)?;
    let h = list_head(suite, version, &nonce, LIST);
    let mut out = Vec::with_capacity(h.len() + 1 + members.len() * MEMBER_LEN + TAG_LEN);
    out.extend_from_slice(&h);
    out.push(u8::try_from(members.len()).map_err(|_| Error::InvalidValue("too many members"))?);
    for m in members {
        out.extend_from_slice(&m.sender.to_be_bytes());
        out.push(m.rights);
        out.extend_from_slice(m.key.expose());
    }
    seal_into(
        crypto,
        suite,
        &keys.list,
        &nonce,
        &[LIST_LABEL, &device.0, &h],
        &mut out,
        h.len(),
    )?;
    Ok(out)
}

/// Opens a list: its version and members (checked: ids increasing from 1, known rights, at most 64).
pub fn open_list<C: Crypto>(
    crypto: &C,
    keys: &OwnerKeys,
    device: DeviceId,
    msg: &[u8],
) -> Result<(u64, Vec<Member>), Error> {
    check_type(msg, LIST)?;
    if msg.len() < 22 + 1 + TAG_LEN {
        return Err(Error::Truncated);
    }
    if msg.len() > 22 + 1 + MAX_MEMBERS * MEMBER_LEN + TAG_LEN {
        return Err(Error::TrailingBytes);
    }
    let mut r = Reader::new(&msg[1..22]);
    let suite = suite_of(r.u8()?)?;
    let version = u64::from_be_bytes(r.array()?);
    let nonce: [u8; NONCE_LEN] = r.array()?;
    let plain = open_from(
        crypto,
        suite,
        &keys.list,
        &nonce,
        &[LIST_LABEL, &device.0, &msg[..22]],
        &msg[22..],
    )?;
    let mut r = Reader::new(&plain);
    let n = usize::from(r.u8()?);
    let mut members = Vec::with_capacity(n.min(MAX_MEMBERS));
    for _ in 0..n {
        members.push(Member {
            sender: r.u32()?,
            rights: r.u8()?,
            key: Secret::from_bytes(r.array()?),
        });
    }
    r.finish()?;
    check_members(&members)?;
    Ok((version, members))
}

/// The device's acknowledgement of list `version`, with a fresh random `nonce`.
pub fn seal_list_ack<C: Crypto>(
    crypto: &C,
    suite: Suite,
    keys: &OwnerKeys,
    device: DeviceId,
    version: u64,
    nonce: [u8; NONCE_LEN],
) -> Result<Vec<u8>, Error> {
    let h = list_head(suite, version, &nonce, LIST_ACK);
    let mut out = h.to_vec();
    let at = out.len();
    seal_into(
        crypto,
        suite,
        &keys.ack,
        &nonce,
        &[ACK_LABEL, &device.0, &h],
        &mut out,
        at,
    )?;
    Ok(out)
}

/// Opens a list acknowledgement; returns the version the device now holds.
pub fn open_list_ack<C: Crypto>(
    crypto: &C,
    keys: &OwnerKeys,
    device: DeviceId,
    msg: &[u8],
) -> Result<u64, Error> {
    check_type(msg, LIST_ACK)?;
    if msg.len() != LIST_ACK_LEN {
        return Err(if msg.len() < LIST_ACK_LEN {
            Error::Truncated
        } else {
            Error::TrailingBytes
        });
    }
    let mut r = Reader::new(&msg[1..22]);
    let suite = suite_of(r.u8()?)?;
    let version = u64::from_be_bytes(r.array()?);
    let nonce: [u8; NONCE_LEN] = r.array()?;
    open_from(
        crypto,
        suite,
        &keys.ack,
        &nonce,
        &[ACK_LABEL, &device.0, &msg[..22]],
        &msg[22..],
    )?;
    Ok(version)
}

/// Seals the hub's one-time claim `token` for the device, with a fresh random `nonce`: only a holder of the UDK
/// can make one the device opens.
pub fn seal_claim<C: Crypto>(
    crypto: &C,
    suite: Suite,
    keys: &OwnerKeys,
    device: DeviceId,
    nonce: [u8; NONCE_LEN],
    token: &[u8; TOKEN_LEN],
) -> Result<Vec<u8>, Error> {
    let mut out = Vec::with_capacity(CLAIM_LEN);
    out.push(CLAIM);
    out.push(suite.code());
    out.extend_from_slice(&nonce);
    let head: [u8; 14] = out[..14].try_into().map_err(|_| Error::Crypto)?;
    out.extend_from_slice(token);
    seal_into(
        crypto,
        suite,
        &keys.claim,
        &nonce,
        &[CLAIM_LABEL, &device.0, &head],
        &mut out,
        14,
    )?;
    Ok(out)
}

/// Opens a sealed claim; returns the token.
pub fn open_claim<C: Crypto>(
    crypto: &C,
    keys: &OwnerKeys,
    device: DeviceId,
    msg: &[u8],
) -> Result<[u8; TOKEN_LEN], Error> {
    check_type(msg, CLAIM)?;
    if msg.len() != CLAIM_LEN {
        return Err(if msg.len() < CLAIM_LEN {
            Error::Truncated
        } else {
            Error::TrailingBytes
        });
    }
    let suite = suite_of(msg[1])?;
    let nonce: [u8; NONCE_LEN] = msg[2..14].try_into().map_err(|_| Error::Truncated)?;
    let plain = open_from(
        crypto,
        suite,
        &keys.claim,
        &nonce,
        &[CLAIM_LABEL, &device.0, &msg[..14]],
        &msg[14..],
    )?;
    plain[..].try_into().map_err(|_| Error::Truncated)
}

/// Why the device refused a command.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// It does not authenticate under any key the device holds for its sender (forged, altered, for another
    /// device, from a revoked member, or under a rotated UDK). The device cannot answer it: it has no key the
    /// sender would trust.
    Unauthenticated(Error),
    /// It authenticated but is refused; the device answers with this status under the sender's keys.
    Answered(OpenedCommand, Status),
}

/// The device's control state: the list it holds, and the highest counter it accepted from each sender.
///
/// Only the owner (sender 0) and current members have marks: a member dropped from the list has no key on the
/// device any more, so nothing of it authenticates, and sender ids are never reused.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeviceControl {
    version: u64,
    owner_mark: u64,
    members: Vec<(Member, u64)>,
}

/// What [`DeviceControl::accept_list`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListAccepted {
    /// The version now held.
    pub version: u64,
    /// Whether anything changed (false for the same list again).
    pub changed: bool,
}

impl DeviceControl {
    /// A device that holds no list yet: only its owner may command it.
    pub fn new() -> Self {
        Self::default()
    }

    /// The version of the list held (0: none).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The sender ids that may command the device besides the owner.
    pub fn members(&self) -> impl Iterator<Item = u32> + '_ {
        self.members.iter().map(|(m, _)| m.sender)
    }

    /// The highest counter accepted from `sender`, if it may command the device.
    pub fn mark(&self, sender: u32) -> Option<u64> {
        if sender == 0 {
            Some(self.owner_mark)
        } else {
            self.members
                .iter()
                .find(|(m, _)| m.sender == sender)
                .map(|(_, c)| *c)
        }
    }

    /// The keys of `sender`, if it may command the device.
    pub fn sender_keys<C: Crypto>(
        &self,
        crypto: &C,
        owner: &OwnerKeys,
        sender: u32,
    ) -> Result<Option<SenderKeys>, Error> {
        if sender == 0 {
            return Ok(Some(owner.owner.clone()));
        }
        match self
            .members
            .iter()
            .find(|(m, _)| m.sender == sender && m.rights & RIGHT_CONTROL != 0)
        {
            Some((m, _)) => Ok(Some(SenderKeys::derive(crypto, &m.key)?)),
            None => Ok(None),
        }
    }

    /// Checks a command at device time `now` without changing anything. `Ok` means: persist
    /// [`DeviceControl::commit`]'s new mark, then act, then answer. In order: authentication under the sender's
    /// keys, expiry, counter.
    pub fn open_command<C: Crypto>(
        &self,
        crypto: &C,
        owner: &OwnerKeys,
        device: DeviceId,
        now: u64,
        msg: &[u8],
    ) -> Result<OpenedCommand, Refusal> {
        let header = CommandHeader::peek(msg).map_err(Refusal::Unauthenticated)?;
        let keys = self
            .sender_keys(crypto, owner, header.sender)
            .map_err(Refusal::Unauthenticated)?
            .ok_or(Refusal::Unauthenticated(Error::Authentication))?;
        let cmd =
            open_command_with(crypto, &keys, device, msg).map_err(Refusal::Unauthenticated)?;
        if u64::from(cmd.header.expires) <= now {
            return Err(Refusal::Answered(cmd, Status::Expired));
        }
        if self
            .mark(header.sender)
            .is_some_and(|m| cmd.header.counter <= m)
        {
            return Err(Refusal::Answered(cmd, Status::Replayed));
        }
        Ok(cmd)
    }

    /// Raises the sender's mark to the accepted command's counter.
    pub fn commit(&mut self, cmd: &OpenedCommand) {
        let (s, c) = (cmd.header.sender, cmd.header.counter);
        if s == 0 {
            self.owner_mark = self.owner_mark.max(c);
        } else if let Some((_, m)) = self.members.iter_mut().find(|(m, _)| m.sender == s) {
            *m = (*m).max(c);
        }
    }

    /// Takes a list from the owner: only a version above the one held changes anything; the same version with
    /// the same members is accepted again (its ack may have been lost); an older version, or the same version
    /// with other members, is refused ([`Error::StaleList`]). Members keep their marks; dropped members are gone.
    pub fn accept_list<C: Crypto>(
        &mut self,
        crypto: &C,
        owner: &OwnerKeys,
        device: DeviceId,
        msg: &[u8],
    ) -> Result<ListAccepted, Error> {
        let (version, members) = open_list(crypto, owner, device, msg)?;
        if version == self.version && version > 0 {
            let same = members.len() == self.members.len()
                && members.iter().zip(&self.members).all(|(a, (b, _))| a == b);
            return if same {
                Ok(ListAccepted {
                    version,
                    changed: false,
                })
            } else {
                Err(Error::StaleList)
            };
        }
        if version <= self.version {
            return Err(Error::StaleList);
        }
        let old = core::mem::take(&mut self.members);
        self.members = members
            .into_iter()
            .map(|m| {
                let mark = old
                    .iter()
                    .find(|(o, _)| o.sender == m.sender)
                    .map_or(0, |(_, c)| *c);
                (m, mark)
            })
            .collect();
        self.version = version;
        Ok(ListAccepted {
            version,
            changed: true,
        })
    }

    /// Forgets every member (keeping the list version and every mark): what a device does when it is paired
    /// again. A new user–device key may mean a new owner, who must not inherit members — holders of keys the old
    /// owner made — that it never chose; the owner re-sends its list under the new key.
    pub fn drop_members(&mut self) {
        self.members.clear();
    }

    /// The state as bytes, to persist atomically: `01 ‖ version (8) ‖ owner mark (8) ‖ n (1) ‖ n × (sender (4)
    /// ‖ rights (1) ‖ key (32) ‖ mark (8))`. It holds members' keys: keep it as protected as the UDK.
    pub fn encode(&self) -> zeroize::Zeroizing<Vec<u8>> {
        let mut out = zeroize::Zeroizing::new(Vec::with_capacity(
            18 + self.members.len() * (MEMBER_LEN + 8),
        ));
        out.push(STATE_FORMAT);
        out.extend_from_slice(&self.version.to_be_bytes());
        out.extend_from_slice(&self.owner_mark.to_be_bytes());
        // At most MAX_MEMBERS, checked on the way in.
        out.push(self.members.len() as u8);
        for (m, mark) in &self.members {
            out.extend_from_slice(&m.sender.to_be_bytes());
            out.push(m.rights);
            out.extend_from_slice(m.key.expose());
            out.extend_from_slice(&mark.to_be_bytes());
        }
        out
    }

    /// Reads [`DeviceControl::encode`]'s bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, Error> {
        let mut r = Reader::new(bytes);
        let format = r.u8()?;
        if format != STATE_FORMAT {
            return Err(Error::UnsupportedVersion(format));
        }
        let version = u64::from_be_bytes(r.array()?);
        let owner_mark = u64::from_be_bytes(r.array()?);
        let n = usize::from(r.u8()?);
        if n > MAX_MEMBERS {
            return Err(Error::InvalidValue("a list holds at most 64 members"));
        }
        let mut members = Vec::with_capacity(n);
        for _ in 0..n {
            let m = Member {
                sender: r.u32()?,
                rights: r.u8()?,
                key: Secret::from_bytes(r.array()?),
            };
            members.push((m, u64::from_be_bytes(r.array()?)));
        }
        r.finish()?;
        let plain: Vec<Member> = members.iter().map(|(m, _)| m.clone()).collect();
        check_members(&plain)?;
        Ok(Self {
            version,
            owner_mark,
            members,
        })
    }
}
