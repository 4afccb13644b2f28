//! Pairing: the keeper and a device agree on the *user–device key* with the device's *owner code*, through the
//! hub's relay, and the keeper then provisions the device's DPK secrets over that channel.
//!
//! The owner code (16 bytes, printed for the user, never given to the hub) is the pre-shared key of
//! `Noise_NNpsk0_25519_AESGCM_SHA256`; the prologue is `custos/v1/pairing ‖ device id`, so a handshake for one
//! device cannot be relayed to another. The hub carries every byte and can open none of them.
//!
//! ```text
//! keeper (initiator)                                   device (responder)
//! PairInit      21 ‖ 01 ‖ psk, e ‖ tag           (50 B) →  wrong code, other device, altered: Error::Handshake
//! PairAccept    22 ‖ e, ee ‖ tag                 (49 B) ←  proves the device knew the code
//! Provision     23 ‖ counter ‖ ENC(body) ‖ tag   (46 + 41·n B with month/week/day) →  proves the keeper did
//! ProvisionAck  24 ‖ counter ‖ tag               (21 B) ←  the Provision with this counter is stored
//! ```
//!
//! With `psk0` the code is mixed in before the first message, so the device refuses a wrong-code `PairInit` at
//! once, before it answers. The keeper checks the code when it reads `PairAccept`; the device has key confirmation
//! only when the first `Provision` opens, and only then does it get a [`DevicePaired`] and the user–device key: a
//! replayed `PairInit` gets an answer, but nobody can complete that session. `PairAccept` carries no payload: the
//! keeper needs nothing from the device to provision it, and in `NN` a key sent in a payload would only be a claim by
//! whoever holds the code (the device's identity key is the hub's business, pinned at admission).
//!
//! Keys: `S = HKDF-Extract(salt = h, ikm = k1 ‖ k2)` from Noise's handshake hash and split, then the user–device key
//! `UDK = Expand(S, "custos/v1/user-device")` and two transport keys, `Expand(S, "custos/v1/provision")`
//! (keeper → device) and `Expand(S, "custos/v1/provision-ack")` (device → keeper). The transport keys live only as
//! long as the session, and the UDK does not derive them, so a device stolen later (UDK and owner code in hand)
//! opens no `Provision` the hub recorded. Each transport message has a 32-bit counter in its nonce and associated
//! data: a receiver accepts only counters above the last it accepted, so replays within a session are refused, and
//! those of another session fail authentication.
//!
//! **Rotation** to a new epoch is a fresh pairing session with the same owner code, never a longer-lived key:
//! every `Provision` gets forward secrecy, nothing has to persist counters across reboots, and it is the same code
//! path as the first pairing. Each completed session yields a new user–device key, which replaces the old one. The
//! device therefore keeps its owner code (as well protected as its identity key), the latest UDK, and the node
//! secrets a `Provision` carries — by default the forward-secure frontier ([`Provision::frontier`]).
//!
//! Ephemeral keys are passed in, so the caller owns randomness. Byte layouts and a test vector are in
//! `docs/wire.md` §9. This module never does I/O and never releases the code, a key or a node secret.

use alloc::vec::Vec;

use snow::{Builder, HandshakeState};
use zeroize::Zeroize;

use crate::codec::Reader;
use crate::crypto::{NONCE_LEN, TAG_LEN};
use crate::schedule::Stage;
use crate::{
    Crypto, DeviceId, Epoch, Error, NodeId, NodeSecret, RustCrypto, Schedule, Secret, Span, Suite,
    TreeSpec, UnixTime,
};

/// The Noise protocol name.
pub const PATTERN: &str = "Noise_NNpsk0_25519_AESGCM_SHA256";
/// The start of the Noise prologue; the 8-byte device id follows.
pub const PROLOGUE: &[u8] = b"custos/v1/pairing";
/// The pairing protocol version, sent in `PairInit` and bound by the prologue.
pub const VERSION: u8 = 1;
/// Message type of `PairInit` (keeper → device).
pub const PAIR_INIT: u8 = 0x21;
/// Message type of `PairAccept` (device → keeper).
pub const PAIR_ACCEPT: u8 = 0x22;
/// Message type of `Provision` (keeper → device).
pub const PROVISION: u8 = 0x23;
/// Message type of `ProvisionAck` (device → keeper).
pub const PROVISION_ACK: u8 = 0x24;
/// Length of an owner code, bytes.
pub const OWNER_CODE_LEN: usize = 16;
/// Length of `PairInit`: type, version, `e`, the tag of the empty payload.
pub const PAIR_INIT_LEN: usize = 1 + 1 + 32 + TAG_LEN;
/// Length of `PairAccept`: type, `e`, the tag of the empty payload.
pub const PAIR_ACCEPT_LEN: usize = 1 + 32 + TAG_LEN;
/// Bytes a `Provision` adds to its body: type, counter, tag.
pub const PROVISION_OVERHEAD: usize = 1 + 4 + TAG_LEN;
/// Length of `ProvisionAck`: type, counter, tag.
pub const PROVISION_ACK_LEN: usize = 1 + 4 + TAG_LEN;
/// Length of one node in a `Provision` body: depth, index, secret.
pub const NODE_LEN: usize = 1 + 8 + 32;
/// The most node secrets one `Provision` carries (bounds what a device must hold; a frontier under
/// `day/hour` for a year is under 400).
pub const MAX_NODES: usize = 1024;

const PSK_SALT: &[u8] = b"custos/v1/owner-psk";
const UDK_LABEL: &[u8] = b"custos/v1/user-device";
const PROVISION_LABEL: &[u8] = b"custos/v1/provision";
const ACK_LABEL: &[u8] = b"custos/v1/provision-ack";
/// The fixed fields of a `Provision` body: epoch, valid from, valid until, suite, node count.
const BODY_FIXED: usize = 2 + 8 + 8 + 1 + 2;

/// The prologue of a pairing with `device`.
fn prologue(device: DeviceId) -> [u8; PROLOGUE.len() + 8] {
    let mut p = [0u8; PROLOGUE.len() + 8];
    p[..PROLOGUE.len()].copy_from_slice(PROLOGUE);
    p[PROLOGUE.len()..].copy_from_slice(&device.0);
    p
}

/// A handshake state for `device` keyed by `code`; `initiator` for the keeper.
fn handshake(
    device: DeviceId,
    code: &[u8; OWNER_CODE_LEN],
    ephemeral: Secret,
    initiator: bool,
) -> Result<HandshakeState, Error> {
    let psk = psk(device, code)?;
    let prologue = prologue(device);
    let builder = crate::noise::builder(PATTERN, ephemeral)?
        .prologue(&prologue)
        .and_then(|b| b.psk(0, psk.expose()));
    let hs = if initiator {
        builder.and_then(Builder::build_initiator)
    } else {
        builder.and_then(Builder::build_responder)
    };
    hs.map_err(|_| Error::Crypto)
}

/// `HKDF-Expand(HKDF-Extract("custos/v1/owner-psk", code), device id, 32)`: the join code's derivation under
/// another salt, so an owner code and a join code never give the same PSK.
fn psk(device: DeviceId, code: &[u8; OWNER_CODE_LEN]) -> Result<Secret, Error> {
    crate::noise::code_psk(PSK_SALT, device, code)
}

/// What a finished handshake yields: the user–device key, the two transport keys and the transcript hash.
struct SessionKeys {
    device: DeviceId,
    user_device_key: Secret,
    provision: Secret,
    ack: Secret,
    handshake_hash: [u8; 32],
}

impl SessionKeys {
    fn derive(device: DeviceId, hs: &mut HandshakeState) -> Result<Self, Error> {
        let c = RustCrypto;
        let (session, handshake_hash) = crate::noise::split_secret(hs)?;
        let expand = |label: &[u8]| -> Result<Secret, Error> {
            let mut key = Secret::zero();
            c.hkdf_expand(session.expose(), &[label], key.expose_mut())?;
            Ok(key)
        };
        Ok(Self {
            device,
            user_device_key: expand(UDK_LABEL)?,
            provision: expand(PROVISION_LABEL)?,
            ack: expand(ACK_LABEL)?,
            handshake_hash,
        })
    }

    fn nonce(counter: u32) -> [u8; NONCE_LEN] {
        let mut n = [0u8; NONCE_LEN];
        n[NONCE_LEN - 4..].copy_from_slice(&counter.to_be_bytes());
        n
    }

    /// The associated data of a transport message: its type, the device id (authenticated, not sent), the counter.
    fn aad(&self, kind: u8, counter: u32) -> [u8; 13] {
        let mut aad = [0u8; 13];
        aad[0] = kind;
        aad[1..9].copy_from_slice(&self.device.0);
        aad[9..].copy_from_slice(&counter.to_be_bytes());
        aad
    }

    /// Opens a `Provision` whose counter must be above `received`; returns its counter and content.
    fn open_provision(&self, received: u32, msg: &[u8]) -> Result<(u32, Provision), Error> {
        let (body, counter, tag) = split_transport(msg, PROVISION)?;
        if counter <= received {
            return Err(Error::Handshake);
        }
        let c = RustCrypto;
        let key = c.aead_key(Suite::AES256GCM, &self.provision)?;
        let mut plain = Plain(body.to_vec());
        c.aead_open(
            &key,
            &Self::nonce(counter),
            &self.aad(PROVISION, counter),
            &mut plain.0,
            &tag,
        )
        .map_err(|_| Error::Handshake)?;
        Ok((counter, Provision::decode(self.device, &plain.0)?))
    }
}

/// Splits a transport message of type `kind` into body, counter and tag.
use crate::noise::expect;

fn split_transport(msg: &[u8], kind: u8) -> Result<(&[u8], u32, [u8; TAG_LEN]), Error> {
    let (&got, _) = msg.split_first().ok_or(Error::Truncated)?;
    if got != kind {
        return Err(Error::UnexpectedMessage {
            expected: kind,
            got,
        });
    }
    if msg.len() < PROVISION_OVERHEAD {
        return Err(Error::Truncated);
    }
    let (head, tag) = msg.split_at(msg.len() - TAG_LEN);
    let mut r = Reader::new(&head[1..]);
    let counter = r.u32()?;
    Ok((
        r.rest(),
        counter,
        tag.try_into().map_err(|_| Error::Truncated)?,
    ))
}

/// A buffer that held plaintext secrets: zeroized on drop, whatever path the code takes.
struct Plain(Vec<u8>);

impl Drop for Plain {
    fn drop(&mut self) {
        self.0.as_mut_slice().zeroize();
    }
}

/// What the keeper provisions: the tree of one DPK (device, epoch, schedule, span), the suite the device seals
/// records with, and the node secrets it keeps — the DPK itself, or by default its forward-secure frontier.
///
/// The nodes are checked to exist in the tree, to lie in time order and not to overlap. Secrets zeroize on drop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Provision {
    tree: TreeSpec,
    suite: Suite,
    nodes: Vec<NodeSecret>,
}

impl Provision {
    /// A provision of `nodes` (1 to [`MAX_NODES`]) of `tree` for records sealed with `suite`.
    pub fn new(tree: TreeSpec, suite: Suite, nodes: Vec<NodeSecret>) -> Result<Self, Error> {
        if !suite.is_known() {
            return Err(Error::UnsupportedSuite(suite.code()));
        }
        if nodes.is_empty() {
            return Err(Error::InvalidValue(
                "a Provision carries at least one node secret",
            ));
        }
        if nodes.len() > MAX_NODES {
            return Err(Error::InvalidValue(
                "a Provision carries at most 1024 node secrets",
            ));
        }
        let mut end: Option<UnixTime> = None;
        for n in &nodes {
            let span = tree.node_span(n.node())?;
            if end.is_some_and(|end| span.start() < end) {
                return Err(Error::InvalidValue(
                    "Provision nodes must be in time order and must not overlap",
                ));
            }
            end = Some(span.end());
        }
        Ok(Self { tree, suite, nodes })
    }

    /// The forward-secure frontier of `tree` at `now` (see [`TreeSpec::frontier`]), derived from `held` (the DPK,
    /// usually): what a device keeps to seal from `now` on while opening nothing earlier. Fails once the epoch is
    /// over, as there is nothing left to provision.
    pub fn frontier<C: Crypto>(
        crypto: &C,
        tree: TreeSpec,
        suite: Suite,
        held: &[NodeSecret],
        now: UnixTime,
    ) -> Result<Self, Error> {
        let nodes = tree
            .frontier(crypto, held, now)?
            .collect::<Result<Vec<_>, _>>()?;
        Self::new(tree, suite, nodes)
    }

    /// The tree: device, epoch, schedule and span.
    pub fn tree(&self) -> &TreeSpec {
        &self.tree
    }

    /// The suite the device seals records with.
    pub fn suite(&self) -> Suite {
        self.suite
    }

    /// The node secrets, in time order.
    pub fn nodes(&self) -> &[NodeSecret] {
        &self.nodes
    }

    /// The node secrets, for the device's key store.
    pub fn into_nodes(self) -> Vec<NodeSecret> {
        self.nodes
    }

    /// Length of the body [`Provision::encode`] writes.
    pub fn encoded_len(&self) -> usize {
        let schedule = 1 + self
            .tree
            .schedule()
            .stages()
            .iter()
            .map(|s| if matches!(s, Stage::Fixed(_)) { 5 } else { 1 })
            .sum::<usize>();
        BODY_FIXED + schedule + self.nodes.len() * NODE_LEN
    }

    /// Appends the body: `epoch (2) ‖ schedule (§2 binary form) ‖ valid from (8) ‖ valid until (8) ‖ suite (1) ‖
    /// count (2) ‖ count × (depth (1) ‖ index (8) ‖ secret (32))`. The device id is not in it: the session names
    /// it. `out` then holds secrets; the caller zeroizes it.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), Error> {
        let mut schedule = [0u8; Schedule::MAX_ENCODED];
        let n = self.tree.schedule().encode(&mut schedule)?;
        let count = u16::try_from(self.nodes.len())
            .map_err(|_| Error::InvalidValue("a Provision carries at most 1024 node secrets"))?;
        out.extend_from_slice(&self.tree.epoch().0.to_be_bytes());
        out.extend_from_slice(&schedule[..n]);
        out.extend_from_slice(&self.tree.span().start().secs().to_be_bytes());
        out.extend_from_slice(&self.tree.span().end().secs().to_be_bytes());
        out.push(self.suite.code());
        out.extend_from_slice(&count.to_be_bytes());
        for node in &self.nodes {
            out.push(node.node().depth);
            out.extend_from_slice(&node.node().index.to_be_bytes());
            out.extend_from_slice(node.secret().expose());
        }
        Ok(())
    }

    /// Reads a body (see [`Provision::encode`]) for `device`; `bytes` must hold exactly one.
    pub fn decode(device: DeviceId, bytes: &[u8]) -> Result<Self, Error> {
        let mut r = Reader::new(bytes);
        let epoch = Epoch(r.u16()?);
        let schedule = Schedule::read(&mut r)?;
        let from = UnixTime::new(u64::from_be_bytes(r.array()?))?;
        let until = UnixTime::new(u64::from_be_bytes(r.array()?))?;
        let suite = Suite::from_code(r.u8()?);
        let count = usize::from(r.u16()?);
        let tree = TreeSpec::new(device, epoch, schedule, Span::new(from, until)?)?;
        if !suite.is_known() {
            return Err(Error::UnsupportedSuite(suite.code()));
        }
        if count > MAX_NODES {
            return Err(Error::InvalidValue(
                "a Provision carries at most 1024 node secrets",
            ));
        }
        // Bound the allocation by the bytes actually present, not by the count.
        match r.rest().len().cmp(&(count * NODE_LEN)) {
            core::cmp::Ordering::Less => return Err(Error::Truncated),
            core::cmp::Ordering::Greater => return Err(Error::TrailingBytes),
            core::cmp::Ordering::Equal => {}
        }
        let mut nodes = Vec::with_capacity(count);
        for _ in 0..count {
            let depth = r.u8()?;
            let index = u64::from_be_bytes(r.array()?);
            let mut secret = r.array::<32>()?;
            nodes.push(NodeSecret::new(
                NodeId { depth, index },
                Secret::from_bytes(secret),
            ));
            secret.zeroize();
        }
        r.finish()?;
        Self::new(tree, suite, nodes)
    }
}

/// The keeper has sent `PairInit` and waits for the device's `PairAccept`.
pub struct KeeperAwaitingAccept {
    hs: HandshakeState,
    device: DeviceId,
}

impl KeeperAwaitingAccept {
    /// Starts a pairing with `device`, keyed by its owner code; `ephemeral` is 32 fresh random bytes.
    /// Returns the state and `PairInit`, for the hub to relay.
    pub fn start(
        device: DeviceId,
        owner_code: &[u8; OWNER_CODE_LEN],
        ephemeral: Secret,
    ) -> Result<(Self, Vec<u8>), Error> {
        let mut hs = handshake(device, owner_code, ephemeral, true)?;
        let mut init = alloc::vec![0u8; PAIR_INIT_LEN];
        init[0] = PAIR_INIT;
        init[1] = VERSION;
        let n = hs
            .write_message(&[], &mut init[2..])
            .map_err(|_| Error::Handshake)?;
        if n + 2 != PAIR_INIT_LEN {
            return Err(Error::Crypto);
        }
        Ok((Self { hs, device }, init))
    }

    /// Reads `PairAccept`: only a device that knew the owner code can have sent it.
    pub fn read_accept(mut self, msg: &[u8]) -> Result<KeeperPaired, Error> {
        let body = expect(msg, PAIR_ACCEPT, PAIR_ACCEPT_LEN)?;
        let mut payload = [0u8; PAIR_ACCEPT_LEN];
        let n = self
            .hs
            .read_message(body, &mut payload)
            .map_err(|_| Error::Handshake)?;
        if n != 0 || !self.hs.is_handshake_finished() {
            return Err(Error::Handshake);
        }
        Ok(KeeperPaired {
            keys: SessionKeys::derive(self.device, &mut self.hs)?,
            sent: 0,
            acked: 0,
        })
    }
}

/// The keeper's side of a pairing session: it seals `Provision`s and reads their acks.
///
/// Store [`KeeperPaired::user_device_key`] once an ack arrives: only then has the device taken it too.
pub struct KeeperPaired {
    keys: SessionKeys,
    sent: u32,
    acked: u32,
}

impl KeeperPaired {
    /// The device paired with.
    pub fn device(&self) -> DeviceId {
        self.keys.device
    }

    /// The user–device key. The hub never learns it.
    pub fn user_device_key(&self) -> &Secret {
        &self.keys.user_device_key
    }

    /// The Noise handshake hash: a public transcript digest both sides share.
    pub fn handshake_hash(&self) -> &[u8; 32] {
        &self.keys.handshake_hash
    }

    /// The counter of the latest `Provision` the device acknowledged; 0 before the first ack.
    pub fn acknowledged(&self) -> u32 {
        self.acked
    }

    /// Seals `provision` (whose tree must be this device's) under the next counter. Send it again after a lost
    /// ack by sealing it again: the device refuses a replayed `Provision`, not a new one with the same content.
    pub fn seal_provision(&mut self, provision: &Provision) -> Result<Vec<u8>, Error> {
        if provision.tree.device() != self.keys.device {
            return Err(Error::KeyMismatch);
        }
        let counter = self.sent.checked_add(1).ok_or(Error::InvalidValue(
            "this session's counter is used up; pair again",
        ))?;
        // Exact capacity, so the plaintext is never copied by a reallocation.
        let mut msg = Plain(Vec::with_capacity(
            PROVISION_OVERHEAD + provision.encoded_len(),
        ));
        msg.0.push(PROVISION);
        msg.0.extend_from_slice(&counter.to_be_bytes());
        provision.encode(&mut msg.0)?;
        let c = RustCrypto;
        let key = c.aead_key(Suite::AES256GCM, &self.keys.provision)?;
        let tag = c.aead_seal(
            &key,
            &SessionKeys::nonce(counter),
            &self.keys.aad(PROVISION, counter),
            &mut msg.0[5..],
        )?;
        msg.0.extend_from_slice(&tag);
        self.sent = counter;
        Ok(core::mem::take(&mut msg.0))
    }

    /// Reads a `ProvisionAck`; returns the counter of the `Provision` it acknowledges. Refuses an ack of a
    /// `Provision` never sent, or one not newer than the last acknowledged (a replay), with [`Error::Handshake`].
    pub fn open_ack(&mut self, msg: &[u8]) -> Result<u32, Error> {
        let (body, counter, tag) = split_transport(msg, PROVISION_ACK)?;
        if !body.is_empty() {
            return Err(Error::TrailingBytes);
        }
        if counter <= self.acked || counter > self.sent {
            return Err(Error::Handshake);
        }
        let c = RustCrypto;
        let key = c.aead_key(Suite::AES256GCM, &self.keys.ack)?;
        c.aead_open(
            &key,
            &SessionKeys::nonce(counter),
            &self.keys.aad(PROVISION_ACK, counter),
            &mut [],
            &tag,
        )
        .map_err(|_| Error::Handshake)?;
        self.acked = counter;
        Ok(counter)
    }
}

/// The device has answered a `PairInit` and waits for the first `Provision`, which proves the keeper's side of
/// the session. Until then it holds no user–device key it could store.
pub struct DeviceAwaitingProvision {
    keys: SessionKeys,
}

impl DeviceAwaitingProvision {
    /// Reads `PairInit` for this device, keyed by its owner code; `ephemeral` is 32 fresh random bytes. A wrong
    /// code, an init for another device, or an altered one fails here with [`Error::Handshake`] and leaves
    /// nothing. Returns the state and `PairAccept`.
    pub fn read_init(
        device: DeviceId,
        owner_code: &[u8; OWNER_CODE_LEN],
        ephemeral: Secret,
        msg: &[u8],
    ) -> Result<(Self, Vec<u8>), Error> {
        let (&got, rest) = msg.split_first().ok_or(Error::Truncated)?;
        if got != PAIR_INIT {
            return Err(Error::UnexpectedMessage {
                expected: PAIR_INIT,
                got,
            });
        }
        let (&version, _) = rest.split_first().ok_or(Error::Truncated)?;
        if version != VERSION {
            return Err(Error::UnsupportedVersion(version));
        }
        let body = expect(msg, PAIR_INIT, PAIR_INIT_LEN)?;
        let mut hs = handshake(device, owner_code, ephemeral, false)?;
        let mut payload = [0u8; PAIR_INIT_LEN];
        let n = hs
            .read_message(&body[1..], &mut payload)
            .map_err(|_| Error::Handshake)?;
        if n != 0 {
            return Err(Error::Handshake);
        }
        let mut accept = alloc::vec![0u8; PAIR_ACCEPT_LEN];
        accept[0] = PAIR_ACCEPT;
        let n = hs
            .write_message(&[], &mut accept[1..])
            .map_err(|_| Error::Handshake)?;
        if n + 1 != PAIR_ACCEPT_LEN || !hs.is_handshake_finished() {
            return Err(Error::Crypto);
        }
        let keys = SessionKeys::derive(device, &mut hs)?;
        Ok((Self { keys }, accept))
    }

    /// Opens the first `Provision`: the session is confirmed, and the device is paired. Store the provision,
    /// then answer with [`DevicePaired::seal_ack`].
    pub fn open_provision(self, msg: &[u8]) -> Result<(DevicePaired, Provision), Error> {
        let (counter, provision) = self.keys.open_provision(0, msg)?;
        Ok((
            DevicePaired {
                keys: self.keys,
                received: counter,
            },
            provision,
        ))
    }
}

/// The device's side of a confirmed pairing session.
pub struct DevicePaired {
    keys: SessionKeys,
    received: u32,
}

impl DevicePaired {
    /// This device.
    pub fn device(&self) -> DeviceId {
        self.keys.device
    }

    /// The user–device key: it replaces any earlier one. The hub never learns it.
    pub fn user_device_key(&self) -> &Secret {
        &self.keys.user_device_key
    }

    /// The Noise handshake hash: a public transcript digest both sides share.
    pub fn handshake_hash(&self) -> &[u8; 32] {
        &self.keys.handshake_hash
    }

    /// Opens a later `Provision` of this session (a re-send, or another epoch). Refuses one whose counter is not
    /// above the last accepted (a replay) with [`Error::Handshake`]; on any error nothing changes.
    pub fn open_provision(&mut self, msg: &[u8]) -> Result<Provision, Error> {
        let (counter, provision) = self.keys.open_provision(self.received, msg)?;
        self.received = counter;
        Ok(provision)
    }

    /// The `ProvisionAck` of the latest `Provision` opened; send it once that provision is stored. Sealing it
    /// again gives the same bytes.
    pub fn seal_ack(&self) -> Result<Vec<u8>, Error> {
        let c = RustCrypto;
        let key = c.aead_key(Suite::AES256GCM, &self.keys.ack)?;
        let counter = self.received;
        let tag = c.aead_seal(
            &key,
            &SessionKeys::nonce(counter),
            &self.keys.aad(PROVISION_ACK, counter),
            &mut [],
        )?;
        let mut ack = Vec::with_capacity(PROVISION_ACK_LEN);
        ack.push(PROVISION_ACK);
        ack.extend_from_slice(&counter.to_be_bytes());
        ack.extend_from_slice(&tag);
        Ok(ack)
    }
}
