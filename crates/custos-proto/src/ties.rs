//! Device-to-device keys through the hub as Central Entity (CE), after TIES: key translation (KTC), key
//! distribution (KDC), group keys, key confirmation, and an authenticated node-to-node channel.
//!
//! Two nodes admitted to a hub share nothing with each other, but each shares its server–device key (SDK) with the
//! hub. From it each derives two wrapping keys, one per direction, that are separate from the uplink keys:
//!
//! ```text
//! K_n2h = HKDF-Expand(SDK, "custos/v1/ties/node-to-hub", 32)
//! K_h2n = HKDF-Expand(SDK, "custos/v1/ties/hub-to-node", 32)
//! ```
//!
//! Every message between a node and the CE is `header ‖ ciphertext ‖ tag` with
//! `tag = AES-256-GCM(K_msg, nonce = 0^12, aad = A, plaintext)` where `A` is the message's *associated data* (its
//! header with the identities the transport names put back in) and `K_msg = HKDF-Expand(K_dir, "custos/v1/ties/msg"
//! ‖ A, 32)`. Each message has its own key, so the zero nonce is never reused under one key: `A` holds a key id the
//! requester drew at random and the CE refuses a key id twice.
//!
//! What the original scheme lacked, and this has: every wrapped key binds the requester and the recipient, the
//! requester's fresh key id (its nonce) and an expiry, so an old package cannot be replayed (Denning–Sacco), sent
//! back to its sender (reflection) or passed off with the two nodes swapped. The CE checks both nodes against its
//! list of authorized devices and keeps no copy of the key. The nodes enforce the expiry.
//!
//! The layouts (all integers big-endian; `kid` 8 bytes, `expires` 4 bytes of Unix seconds, ids 8 bytes):
//!
//! ```text
//! request, KTC   41|42 ‖ peers (8 each) ‖ kid ‖ expires ‖ seed (16, encrypted) ‖ tag   A = type ‖ requester ‖ peers ‖ kid ‖ expires
//! request, KDC   43|44 ‖ peers (8 each) ‖ kid ‖ expires ‖ tag                          (same A)
//! delivery       48 ‖ kid ‖ expires ‖ holders (8 each) ‖ seed (16, encrypted) ‖ tag    A = type ‖ recipient ‖ kid ‖ expires ‖ holders
//! grant (KDC)    49 ‖ kid ‖ expires ‖ peers (8 each) ‖ seed (16, encrypted) ‖ tag      (same A)
//! receipt        4a ‖ requester ‖ kid ‖ tag     (peer → CE)                            A = type ‖ peer ‖ requester ‖ kid
//! notice         4b ‖ peer ‖ kid ‖ tag          (CE → requester: the peer has it)      A = type ‖ requester ‖ peer ‖ kid
//! refusal        4f ‖ kid ‖ reason ‖ tag        (CE → requester)                       A = type ‖ requester ‖ kid ‖ reason
//! ```
//!
//! `41`/`43` ask the CE to deliver to the peers itself (direct); `42`/`44` ask it to return the deliveries to the
//! requester, which forwards them (indirect). A delivery's holders are the requester first, then the other peers.
//! Node-to-node messages (confirmations and data) are in [`Link`].

#[cfg(feature = "admission")]
pub mod kk;
pub mod tpm;

use subtle::ConstantTimeEq;
use zeroize::Zeroize;

use crate::crypto::{NONCE_LEN, TAG_LEN};
use crate::{Crypto, DeviceId, Error, Secret, Suite};

/// A key id: 8 random bytes drawn by the requester, its nonce for this request.
pub type KeyId = [u8; 8];

/// The secret a requester (KTC) or the CE (KDC) draws: 16 random bytes from which the session key is derived.
pub const SEED_LEN: usize = 16;
/// The most peers one request may name (a group key: the requester and up to this many others).
pub const MAX_PEERS: usize = 8;
/// The longest key lifetime the CE accepts, seconds (7 days).
pub const MAX_LIFETIME: u32 = 7 * 24 * 3600;
/// The shortest, seconds: a key must outlive its own distribution.
pub const MIN_LIFETIME: u32 = 60;

/// Request types.
pub const KTC_DIRECT: u8 = 0x41;
/// KTC, the deliveries returned to the requester to forward.
pub const KTC_INDIRECT: u8 = 0x42;
/// KDC: the CE draws the key and delivers it to the peers.
pub const KDC_DIRECT: u8 = 0x43;
/// KDC, the deliveries returned to the requester to forward.
pub const KDC_INDIRECT: u8 = 0x44;
/// A wrapped key for a peer.
pub const DELIVERY: u8 = 0x48;
/// A wrapped key for the requester of a KDC request.
pub const GRANT: u8 = 0x49;
/// A peer tells the CE it holds the key.
pub const RECEIPT: u8 = 0x4a;
/// The CE tells the requester a peer holds the key.
pub const NOTICE: u8 = 0x4b;
/// The requester's key confirmation to a peer.
pub const CONFIRM_REQUESTER: u8 = 0x4c;
/// A peer's key confirmation to the requester.
pub const CONFIRM_PEER: u8 = 0x4d;
/// A node-to-node data message.
pub const DATA: u8 = 0x4e;
/// The CE refuses a request.
pub const REFUSAL: u8 = 0x4f;

/// Length of a receipt, a notice: type, id, kid, tag.
pub const SIGNAL_LEN: usize = 1 + 8 + 8 + TAG_LEN;
/// Length of a refusal.
pub const REFUSAL_LEN: usize = 1 + 8 + 1 + TAG_LEN;
/// Length of a key confirmation: type, key hint (the kid's first 4 bytes), tag.
pub const CONFIRM_LEN: usize = 1 + 4 + TAG_LEN;
/// What a data message adds to its plaintext: type, key hint, sequence number, tag.
pub const DATA_OVERHEAD: usize = 1 + 4 + 4 + TAG_LEN;
/// The longest node ↔ CE message (a request or package naming [`MAX_PEERS`] ids).
pub const MAX_MESSAGE: usize = 1 + 8 * MAX_PEERS + 8 + 4 + SEED_LEN + TAG_LEN;

const LABEL_N2H: &[u8] = b"custos/v1/ties/node-to-hub";
const LABEL_H2N: &[u8] = b"custos/v1/ties/hub-to-node";
const LABEL_MSG: &[u8] = b"custos/v1/ties/msg";
const LABEL_SESSION: &[u8] = b"custos/v1/ties/session";
const LABEL_CONFIRM: &[u8] = b"custos/v1/ties/confirm";
const LABEL_SEND: &[u8] = b"custos/v1/ties/send";

/// Why the CE refuses a request (the refusal's reason byte).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Refusal {
    /// A peer is not on the list of authorized devices (unknown, or revoked).
    PeerNotAuthorized = 1,
    /// The expiry is in the past, too near, or further than [`MAX_LIFETIME`] away.
    BadExpiry = 2,
    /// The requester used this key id before.
    KeyIdReused = 3,
}

impl Refusal {
    fn from_code(b: u8) -> Result<Self, Error> {
        Ok(match b {
            1 => Self::PeerNotAuthorized,
            2 => Self::BadExpiry,
            3 => Self::KeyIdReused,
            _ => return Err(Error::InvalidValue("unknown refusal reason")),
        })
    }
}

/// Up to `1 + MAX_PEERS` device ids, without a heap.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Ids {
    ids: [DeviceId; MAX_PEERS + 1],
    len: u8,
}

impl Ids {
    /// No ids.
    pub const fn new() -> Self {
        Self {
            ids: [DeviceId([0; 8]); MAX_PEERS + 1],
            len: 0,
        }
    }

    /// These ids, if there are at most `1 + MAX_PEERS`.
    pub fn from_slice(ids: &[DeviceId]) -> Result<Self, Error> {
        let mut s = Self::new();
        for &d in ids {
            s.push(d)?;
        }
        Ok(s)
    }

    fn push(&mut self, d: DeviceId) -> Result<(), Error> {
        let slot = self
            .ids
            .get_mut(usize::from(self.len))
            .ok_or(Error::InvalidValue("too many devices for one key"))?;
        *slot = d;
        self.len += 1;
        Ok(())
    }

    /// The ids, in order.
    pub fn as_slice(&self) -> &[DeviceId] {
        &self.ids[..usize::from(self.len)]
    }

    /// Whether `d` is one of them.
    pub fn contains(&self, d: DeviceId) -> bool {
        self.as_slice().contains(&d)
    }

    fn sorted(&self) -> Self {
        let mut s = *self;
        s.ids[..usize::from(s.len)].sort_unstable();
        s
    }
}

impl Default for Ids {
    fn default() -> Self {
        Self::new()
    }
}

impl core::fmt::Debug for Ids {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

/// A message of at most [`MAX_MESSAGE`] bytes, without a heap.
#[derive(Clone, Copy)]
pub struct Packet {
    buf: [u8; MAX_MESSAGE],
    len: usize,
}

impl Packet {
    fn new() -> Self {
        Self {
            buf: [0; MAX_MESSAGE],
            len: 0,
        }
    }

    fn put(&mut self, bytes: &[u8]) -> Result<(), Error> {
        let end = self.len + bytes.len();
        self.buf
            .get_mut(self.len..end)
            .ok_or(Error::BufferTooSmall { needed: end })?
            .copy_from_slice(bytes);
        self.len = end;
        Ok(())
    }

    /// The bytes to send.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl core::fmt::Debug for Packet {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Packet({} bytes)", self.len)
    }
}

/// The random seed of a session key. Zeroized on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct Seed([u8; SEED_LEN]);

impl Seed {
    /// Wraps 16 random bytes.
    pub const fn from_bytes(b: [u8; SEED_LEN]) -> Self {
        Self(b)
    }
}

impl Drop for Seed {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl core::fmt::Debug for Seed {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Seed(..)")
    }
}

/// The two wrapping keys one node shares with the CE, derived from its server–device key.
#[derive(Clone, Debug)]
pub struct NodeKeys {
    to_hub: Secret,
    to_node: Secret,
}

impl NodeKeys {
    /// Derives the node's wrapping keys from its server–device key.
    pub fn derive<C: Crypto>(c: &C, sdk: &Secret) -> Result<Self, Error> {
        let mut to_hub = Secret::zero();
        let mut to_node = Secret::zero();
        c.hkdf_expand(sdk.expose(), &[LABEL_N2H], to_hub.expose_mut())?;
        c.hkdf_expand(sdk.expose(), &[LABEL_H2N], to_node.expose_mut())?;
        Ok(Self { to_hub, to_node })
    }
}

/// Associated data, built without a heap. Every write is checked: a full buffer is an error, never a short `A`.
struct Aad {
    buf: [u8; AAD_MAX],
    len: usize,
}

/// The largest `A` of any message: a request's (type, requester, up to `1 + MAX_PEERS` ids, kid, expires) with one
/// byte to spare.
const AAD_MAX: usize = 1 + 8 + 8 * (MAX_PEERS + 1) + 8 + 4 + 1;

impl Aad {
    fn new(kind: u8) -> Self {
        let mut buf = [0; AAD_MAX];
        buf[0] = kind;
        Self { buf, len: 1 }
    }

    fn put(&mut self, b: &[u8]) -> Result<(), Error> {
        let end = self.len + b.len();
        self.buf
            .get_mut(self.len..end)
            .ok_or(Error::BufferTooSmall { needed: end })?
            .copy_from_slice(b);
        self.len = end;
        Ok(())
    }

    fn ids(&mut self, ids: &[DeviceId]) -> Result<(), Error> {
        for d in ids {
            self.put(&d.0)?;
        }
        Ok(())
    }

    fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

fn message_key<C: Crypto>(c: &C, dir: &Secret, aad: &[u8]) -> Result<C::AeadKey, Error> {
    let mut k = Secret::zero();
    c.hkdf_expand(dir.expose(), &[LABEL_MSG, aad], k.expose_mut())?;
    c.aead_key(Suite::AES256GCM, &k)
}

fn seal<C: Crypto>(
    c: &C,
    dir: &Secret,
    aad: &[u8],
    buf: &mut [u8],
) -> Result<[u8; TAG_LEN], Error> {
    let k = message_key(c, dir, aad)?;
    c.aead_seal(&k, &[0; NONCE_LEN], aad, buf)
}

fn open<C: Crypto>(
    c: &C,
    dir: &Secret,
    aad: &[u8],
    buf: &mut [u8],
    tag: &[u8],
) -> Result<(), Error> {
    let tag: &[u8; TAG_LEN] = tag.try_into().map_err(|_| Error::Truncated)?;
    let k = message_key(c, dir, aad)?;
    c.aead_open(&k, &[0; NONCE_LEN], aad, buf, tag)
}

fn ids_from(bytes: &[u8]) -> Result<Ids, Error> {
    if !bytes.len().is_multiple_of(8) {
        return Err(Error::InvalidValue(
            "a list of device ids is not a multiple of 8 bytes",
        ));
    }
    let mut ids = Ids::new();
    for chunk in bytes.chunks_exact(8) {
        let mut d = [0; 8];
        d.copy_from_slice(chunk);
        let d = DeviceId(d);
        if ids.contains(d) {
            return Err(Error::InvalidValue("a device is named twice"));
        }
        ids.push(d)?;
    }
    Ok(ids)
}

fn kid_expires(b: &[u8]) -> (KeyId, u32) {
    let mut kid = [0; 8];
    kid.copy_from_slice(&b[..8]);
    let expires = u32::from_be_bytes([b[8], b[9], b[10], b[11]]);
    (kid, expires)
}

/// Whether a request type asks the CE to draw the key (KDC) rather than translate the requester's (KTC).
pub const fn is_distribution(kind: u8) -> bool {
    matches!(kind, KDC_DIRECT | KDC_INDIRECT)
}

/// Whether a request type asks the CE to deliver to the peers itself (direct) rather than return the deliveries.
pub const fn is_direct(kind: u8) -> bool {
    matches!(kind, KTC_DIRECT | KDC_DIRECT)
}

/// What a node asks the CE for.
#[derive(Clone, Debug)]
pub struct Request {
    /// One of [`KTC_DIRECT`], [`KTC_INDIRECT`], [`KDC_DIRECT`], [`KDC_INDIRECT`].
    pub kind: u8,
    /// The requester.
    pub requester: DeviceId,
    /// The peers to share the key with, in the requester's order.
    pub peers: Ids,
    /// The requester's fresh key id.
    pub kid: KeyId,
    /// When the key dies, Unix seconds.
    pub expires: u32,
}

impl Request {
    /// A request; checks the kind and the peers (1 to [`MAX_PEERS`], distinct, not the requester).
    pub fn new(
        kind: u8,
        requester: DeviceId,
        peers: &[DeviceId],
        kid: KeyId,
        expires: u32,
    ) -> Result<Self, Error> {
        if !matches!(kind, KTC_DIRECT | KTC_INDIRECT | KDC_DIRECT | KDC_INDIRECT) {
            return Err(Error::InvalidValue("not a key request type"));
        }
        if peers.is_empty() || peers.len() > MAX_PEERS {
            return Err(Error::InvalidValue("a key request names 1 to 8 peers"));
        }
        let mut ids = Ids::new();
        for &p in peers {
            if p == requester {
                return Err(Error::InvalidValue(
                    "a node cannot ask for a key with itself",
                ));
            }
            if ids.contains(p) {
                return Err(Error::InvalidValue("a device is named twice"));
            }
            ids.push(p)?;
        }
        Ok(Self {
            kind,
            requester,
            peers: ids,
            kid,
            expires,
        })
    }

    fn aad(&self) -> Result<Aad, Error> {
        let mut a = Aad::new(self.kind);
        a.put(&self.requester.0)?;
        a.ids(self.peers.as_slice())?;
        a.put(&self.kid)?;
        a.put(&self.expires.to_be_bytes())?;
        Ok(a)
    }

    /// The request on the wire, authenticated (and for KTC its seed encrypted) under the requester's key.
    /// `seed` is the key the requester drew (KTC); it must be `None` for KDC.
    pub fn seal<C: Crypto>(
        &self,
        c: &C,
        keys: &NodeKeys,
        seed: Option<&Seed>,
    ) -> Result<Packet, Error> {
        let mut p = Packet::new();
        p.put(&[self.kind])?;
        for d in self.peers.as_slice() {
            p.put(&d.0)?;
        }
        p.put(&self.kid)?;
        p.put(&self.expires.to_be_bytes())?;
        let aad = self.aad()?;
        let mut body = [0u8; SEED_LEN];
        let body: &mut [u8] = match (is_distribution(self.kind), seed) {
            (false, Some(s)) => {
                body.copy_from_slice(&s.0);
                &mut body
            }
            (true, None) => &mut [],
            (false, None) => {
                return Err(Error::InvalidValue(
                    "a KTC request carries the requester's key",
                ));
            }
            (true, Some(_)) => {
                return Err(Error::InvalidValue("in a KDC request the CE draws the key"));
            }
        };
        let tag = seal(c, &keys.to_hub, aad.bytes(), body)?;
        p.put(body)?;
        body.zeroize();
        p.put(&tag)?;
        Ok(p)
    }

    /// The CE reads a request that came from `requester` (the transport names it) with the requester's keys.
    /// Returns the request and, for KTC, the requester's seed. Checks nothing about the peers: that is the CE's list.
    pub fn open<C: Crypto>(
        c: &C,
        requester: DeviceId,
        keys: &NodeKeys,
        msg: &[u8],
    ) -> Result<(Self, Option<Seed>), Error> {
        let (&kind, rest) = msg.split_first().ok_or(Error::Truncated)?;
        let body_len = match kind {
            KTC_DIRECT | KTC_INDIRECT => SEED_LEN,
            KDC_DIRECT | KDC_INDIRECT => 0,
            _ => return Err(Error::InvalidValue("not a key request type")),
        };
        let fixed = 8 + 4 + body_len + TAG_LEN;
        if rest.len() < fixed + 8 {
            return Err(Error::Truncated);
        }
        if rest.len() > fixed + 8 * MAX_PEERS {
            return Err(Error::InvalidValue("a key request names 1 to 8 peers"));
        }
        let (peers, rest) = rest.split_at(rest.len() - fixed);
        let (kid, expires) = kid_expires(rest);
        let peers = ids_from(peers)?;
        let req = Self::new(kind, requester, peers.as_slice(), kid, expires)?;
        let (body, tag) = rest[12..].split_at(body_len);
        let mut seed = Seed([0; SEED_LEN]);
        seed.0[..body_len].copy_from_slice(body);
        open(
            c,
            &keys.to_hub,
            req.aad()?.bytes(),
            &mut seed.0[..body_len],
            tag,
        )?;
        Ok((req, (body_len == SEED_LEN).then_some(seed)))
    }

    /// The requester's own copy of the key it drew for a KTC request.
    pub fn session_key<C: Crypto>(&self, c: &C, seed: &Seed) -> Result<SessionKey, Error> {
        SessionKey::derive(c, seed, self.kid, self.expires, self.requester, &self.peers)
    }

    /// The CE's check of the expiry against its clock: in `[now + MIN_LIFETIME, now + MAX_LIFETIME]`.
    pub fn check_expiry(&self, now: u64) -> Result<(), Refusal> {
        let e = u64::from(self.expires);
        if e < now + u64::from(MIN_LIFETIME) || e > now + u64::from(MAX_LIFETIME) {
            return Err(Refusal::BadExpiry);
        }
        Ok(())
    }

    /// Everyone who will hold the key: the requester first, then the peers. For a request from [`Request::new`] or
    /// [`Request::open`] (at most [`MAX_PEERS`] peers) that is all of them; for a request built field by field with
    /// more peers than that the list stops at `1 + MAX_PEERS`, and [`Request::try_members`] refuses it instead.
    pub fn members(&self) -> Ids {
        let mut m = Ids::new();
        let _ = m.push(self.requester);
        for &p in self.peers.as_slice() {
            let _ = m.push(p);
        }
        m
    }

    /// Everyone who will hold the key, or an error if there are more than `1 + MAX_PEERS` (possible only for a
    /// request built field by field).
    pub fn try_members(&self) -> Result<Ids, Error> {
        let mut m = Ids::new();
        m.push(self.requester)?;
        for &p in self.peers.as_slice() {
            m.push(p)?;
        }
        Ok(m)
    }

    /// The CE wraps `seed` for `recipient` (a peer: a delivery; the requester of a KDC request: a grant) under the
    /// recipient's keys. The CE calls it once per member and then drops the seed.
    pub fn package<C: Crypto>(
        &self,
        c: &C,
        recipient: DeviceId,
        keys: &NodeKeys,
        seed: &Seed,
    ) -> Result<Packet, Error> {
        let (kind, holders) = self.holders_for(recipient)?;
        let aad = package_aad(kind, recipient, &self.kid, self.expires, &holders)?;
        let mut p = Packet::new();
        p.put(&[kind])?;
        p.put(&self.kid)?;
        p.put(&self.expires.to_be_bytes())?;
        for d in holders.as_slice() {
            p.put(&d.0)?;
        }
        let mut body = seed.0;
        let tag = seal(c, &keys.to_node, aad.bytes(), &mut body)?;
        p.put(&body)?;
        body.zeroize();
        p.put(&tag)?;
        Ok(p)
    }
    /// What a package for `recipient` is (a delivery to a peer, a grant to a KDC requester) and whom it names.
    fn holders_for(&self, recipient: DeviceId) -> Result<(u8, Ids), Error> {
        Ok(if recipient == self.requester {
            if !is_distribution(self.kind) {
                return Err(Error::InvalidValue(
                    "in KTC the requester drew the key; it gets no grant",
                ));
            }
            (GRANT, self.peers)
        } else {
            if !self.peers.contains(recipient) {
                return Err(Error::InvalidValue(
                    "the recipient is not one of the request's peers",
                ));
            }
            let mut h = Ids::new();
            for &d in self.try_members()?.as_slice() {
                if d != recipient {
                    h.push(d)?;
                }
            }
            (DELIVERY, h)
        })
    }
}

fn package_aad(
    kind: u8,
    recipient: DeviceId,
    kid: &KeyId,
    expires: u32,
    holders: &Ids,
) -> Result<Aad, Error> {
    let mut a = Aad::new(kind);
    a.put(&recipient.0)?;
    a.put(kid)?;
    a.put(&expires.to_be_bytes())?;
    a.ids(holders.as_slice())?;
    Ok(a)
}

/// A session key as a node holds it: who asked for it, who else holds it, its id and expiry.
#[derive(Clone, Debug)]
pub struct SessionKey {
    kid: KeyId,
    expires: u32,
    requester: DeviceId,
    /// The other members, sorted.
    peers: Ids,
    secret: Secret,
}

impl SessionKey {
    /// `S = HKDF(salt = kid ‖ expires, ikm = seed, info = "custos/v1/ties/session" ‖ requester ‖ peers (sorted))`:
    /// every holder derives the same key from the same facts, and a key bound to other facts is another key.
    pub fn derive<C: Crypto>(
        c: &C,
        seed: &Seed,
        kid: KeyId,
        expires: u32,
        requester: DeviceId,
        peers: &Ids,
    ) -> Result<Self, Error> {
        let mut salt = [0u8; 12];
        salt[..8].copy_from_slice(&kid);
        salt[8..].copy_from_slice(&expires.to_be_bytes());
        let prk = c.hkdf_extract(&salt, &seed.0);
        let peers = peers.sorted();
        let mut ids = [0u8; 8 * MAX_PEERS];
        for (slot, d) in ids.chunks_exact_mut(8).zip(peers.as_slice()) {
            slot.copy_from_slice(&d.0);
        }
        let ids = ids
            .get(..8 * peers.as_slice().len())
            .ok_or(Error::InvalidValue("too many devices for one key"))?;
        let mut secret = Secret::zero();
        c.hkdf_expand(
            prk.expose(),
            &[LABEL_SESSION, &requester.0, ids],
            secret.expose_mut(),
        )?;
        Ok(Self {
            kid,
            expires,
            requester,
            peers,
            secret,
        })
    }

    /// A session key from a finished Noise KK handshake (the hub never sees it).
    #[cfg(feature = "admission")]
    pub(crate) fn from_secret(
        kid: KeyId,
        expires: u32,
        requester: DeviceId,
        peer: DeviceId,
        secret: Secret,
    ) -> Self {
        let mut peers = Ids::new();
        let _ = peers.push(peer);
        Self {
            kid,
            expires,
            requester,
            peers,
            secret,
        }
    }

    /// The key's id.
    pub fn kid(&self) -> KeyId {
        self.kid
    }

    /// When the key dies, Unix seconds.
    pub fn expires(&self) -> u32 {
        self.expires
    }

    /// The node that asked for it.
    pub fn requester(&self) -> DeviceId {
        self.requester
    }

    /// Everyone else who holds it, sorted.
    pub fn peers(&self) -> &[DeviceId] {
        self.peers.as_slice()
    }

    /// Whether `d` holds this key.
    pub fn is_member(&self, d: DeviceId) -> bool {
        d == self.requester || self.peers.contains(d)
    }

    /// The node-to-node channel of `me` under this key.
    pub fn link(self, me: DeviceId) -> Result<Link, Error> {
        if !self.is_member(me) {
            return Err(Error::InvalidValue("this node does not hold the key"));
        }
        Ok(Link {
            key: self,
            me,
            next_seq: 0,
            windows: [Window::default(); MAX_PEERS + 1],
            confirmed: Ids::new(),
        })
    }
}

/// A node opens a package (a delivery, or the grant of its own KDC request) from the CE. `now` is the node's
/// clock (Unix seconds): an expired key is refused. The caller must also refuse a `(requester, kid)` it already holds
/// or held: [`Link`]s remember theirs until they expire.
pub fn open_package<C: Crypto>(
    c: &C,
    me: DeviceId,
    keys: &NodeKeys,
    msg: &[u8],
    now: u64,
) -> Result<SessionKey, Error> {
    let (&kind, rest) = msg.split_first().ok_or(Error::Truncated)?;
    if kind != DELIVERY && kind != GRANT {
        return Err(Error::UnexpectedMessage {
            expected: DELIVERY,
            got: kind,
        });
    }
    let fixed = 8 + 4 + SEED_LEN + TAG_LEN;
    if rest.len() < fixed + 8 {
        return Err(Error::Truncated);
    }
    if rest.len() > fixed + 8 * MAX_PEERS {
        return Err(Error::InvalidValue("a package names 1 to 8 holders"));
    }
    let (kid, expires) = kid_expires(rest);
    let (holders, body) = rest[12..].split_at(rest.len() - fixed);
    let holders = ids_from(holders)?;
    if holders.contains(me) {
        return Err(Error::InvalidValue(
            "a package names its recipient among the holders",
        ));
    }
    let aad = package_aad(kind, me, &kid, expires, &holders)?;
    let (ct, tag) = body.split_at(SEED_LEN);
    let mut seed = Seed([0; SEED_LEN]);
    seed.0.copy_from_slice(ct);
    open(c, &keys.to_node, aad.bytes(), &mut seed.0, tag)?;
    if u64::from(expires) <= now {
        return Err(Error::Expired);
    }
    let (requester, peers) = if kind == GRANT {
        let mut all = holders;
        all.push(me)?;
        (me, remove(&all, me))
    } else {
        let requester = holders.as_slice()[0];
        let mut all = holders;
        all.push(me)?;
        (requester, remove(&all, requester))
    };
    SessionKey::derive(c, &seed, kid, expires, requester, &peers)
}

fn remove(ids: &Ids, d: DeviceId) -> Ids {
    let mut out = Ids::new();
    for &x in ids.as_slice() {
        if x != d {
            let _ = out.push(x);
        }
    }
    out
}

fn signal<C: Crypto>(
    c: &C,
    kind: u8,
    dir: &Secret,
    who: DeviceId,
    about: DeviceId,
    kid: &KeyId,
) -> Result<[u8; SIGNAL_LEN], Error> {
    let mut a = Aad::new(kind);
    a.put(&who.0)?;
    a.put(&about.0)?;
    a.put(kid)?;
    let tag = seal(c, dir, a.bytes(), &mut [])?;
    let mut out = [0u8; SIGNAL_LEN];
    out[0] = kind;
    out[1..9].copy_from_slice(&about.0);
    out[9..17].copy_from_slice(kid);
    out[17..].copy_from_slice(&tag);
    Ok(out)
}

fn open_signal<C: Crypto>(
    c: &C,
    kind: u8,
    dir: &Secret,
    who: DeviceId,
    msg: &[u8],
) -> Result<(DeviceId, KeyId), Error> {
    let got = *msg.first().ok_or(Error::Truncated)?;
    if got != kind {
        return Err(Error::UnexpectedMessage {
            expected: kind,
            got,
        });
    }
    if msg.len() != SIGNAL_LEN {
        return Err(if msg.len() < SIGNAL_LEN {
            Error::Truncated
        } else {
            Error::TrailingBytes
        });
    }
    let mut about = [0; 8];
    about.copy_from_slice(&msg[1..9]);
    let mut kid = [0; 8];
    kid.copy_from_slice(&msg[9..17]);
    let mut a = Aad::new(kind);
    a.put(&who.0)?;
    a.put(&about)?;
    a.put(&kid)?;
    open(c, dir, a.bytes(), &mut [], &msg[17..])?;
    Ok((DeviceId(about), kid))
}

/// A peer tells the CE that it holds `kid` from `requester` (under the peer's node-to-hub key).
pub fn seal_receipt<C: Crypto>(
    c: &C,
    me: DeviceId,
    keys: &NodeKeys,
    requester: DeviceId,
    kid: &KeyId,
) -> Result<[u8; SIGNAL_LEN], Error> {
    signal(c, RECEIPT, &keys.to_hub, me, requester, kid)
}

/// The CE reads a receipt from `peer`: which requester's key it holds.
pub fn open_receipt<C: Crypto>(
    c: &C,
    peer: DeviceId,
    keys: &NodeKeys,
    msg: &[u8],
) -> Result<(DeviceId, KeyId), Error> {
    open_signal(c, RECEIPT, &keys.to_hub, peer, msg)
}

/// The CE tells `requester` that `peer` holds `kid` (under the requester's hub-to-node key).
pub fn seal_notice<C: Crypto>(
    c: &C,
    requester: DeviceId,
    keys: &NodeKeys,
    peer: DeviceId,
    kid: &KeyId,
) -> Result<[u8; SIGNAL_LEN], Error> {
    signal(c, NOTICE, &keys.to_node, requester, peer, kid)
}

/// The requester reads a notice: which peer holds which of its keys.
pub fn open_notice<C: Crypto>(
    c: &C,
    me: DeviceId,
    keys: &NodeKeys,
    msg: &[u8],
) -> Result<(DeviceId, KeyId), Error> {
    open_signal(c, NOTICE, &keys.to_node, me, msg)
}

/// The CE refuses `requester`'s request `kid`.
pub fn seal_refusal<C: Crypto>(
    c: &C,
    requester: DeviceId,
    keys: &NodeKeys,
    kid: &KeyId,
    why: Refusal,
) -> Result<[u8; REFUSAL_LEN], Error> {
    let mut a = Aad::new(REFUSAL);
    a.put(&requester.0)?;
    a.put(kid)?;
    a.put(&[why as u8])?;
    let tag = seal(c, &keys.to_node, a.bytes(), &mut [])?;
    let mut out = [0u8; REFUSAL_LEN];
    out[0] = REFUSAL;
    out[1..9].copy_from_slice(kid);
    out[9] = why as u8;
    out[10..].copy_from_slice(&tag);
    Ok(out)
}

/// The requester reads a refusal of one of its requests.
pub fn open_refusal<C: Crypto>(
    c: &C,
    me: DeviceId,
    keys: &NodeKeys,
    msg: &[u8],
) -> Result<(KeyId, Refusal), Error> {
    let got = *msg.first().ok_or(Error::Truncated)?;
    if got != REFUSAL {
        return Err(Error::UnexpectedMessage {
            expected: REFUSAL,
            got,
        });
    }
    if msg.len() != REFUSAL_LEN {
        return Err(if msg.len() < REFUSAL_LEN {
            Error::Truncated
        } else {
            Error::TrailingBytes
        });
    }
    let mut kid = [0; 8];
    kid.copy_from_slice(&msg[1..9]);
    let mut a = Aad::new(REFUSAL);
    a.put(&me.0)?;
    a.put(&kid)?;
    a.put(&[msg[9]])?;
    open(c, &keys.to_node, a.bytes(), &mut [], &msg[10..])?;
    Ok((kid, Refusal::from_code(msg[9])?))
}

/// Replay window for one sender: the highest sequence number seen and a bitmap of the 64 below it.
#[derive(Clone, Copy, Debug, Default)]
struct Window {
    /// Highest sequence number accepted, plus one (0: none yet).
    top: u64,
    seen: u64,
}

/// How far below the highest sequence number a data message may arrive (reordering on a lossy radio).
pub const REPLAY_WINDOW: u64 = 64;

impl Window {
    fn check(&self, seq: u64) -> Result<(), Error> {
        if seq >= self.top {
            return Ok(());
        }
        let back = self.top - 1 - seq;
        if back >= REPLAY_WINDOW || self.seen & (1 << back) != 0 {
            return Err(Error::InvalidValue(
                "a replayed or too old node-to-node message",
            ));
        }
        Ok(())
    }

    fn mark(&mut self, seq: u64) {
        if seq >= self.top {
            let shift = seq + 1 - self.top;
            self.seen = if shift >= 64 { 0 } else { self.seen << shift };
            self.seen |= 1;
            self.top = seq + 1;
        } else {
            self.seen |= 1 << (self.top - 1 - seq);
        }
    }
}

/// One node's end of a session key: key confirmation with the other holders, then authenticated, encrypted
/// messages with a sequence number and a replay window per sender.
///
/// ```text
/// confirmation   4c|4d ‖ hint (4) ‖ tag (16)        tag = HMAC-SHA256(K_conf, type ‖ from ‖ to ‖ kid ‖ expires)[..16]
/// data           4e ‖ hint (4) ‖ seq (4) ‖ ciphertext ‖ tag (16)
///                AES-256-GCM(K_send(from), nonce = 0^8 ‖ seq, aad = 4e ‖ kid ‖ expires ‖ from ‖ seq)
/// K_conf = HKDF-Expand(S, "custos/v1/ties/confirm"), K_send(from) = HKDF-Expand(S, "custos/v1/ties/send" ‖ from)
/// ```
///
/// The hint is the key id's first 4 bytes: enough to find the key, and the tag binds the whole id. The requester
/// confirms first (`4c`), each peer answers (`4d`); type, sender and recipient are in the tag, so a confirmation sent
/// back to its sender or to another node fails, and one from another key fails because the key differs. A sender
/// has its own key and its own sequence numbers, so the members of a group never share a nonce.
#[derive(Debug)]
pub struct Link {
    key: SessionKey,
    me: DeviceId,
    next_seq: u32,
    /// One per member, in the order of `members()`.
    windows: [Window; MAX_PEERS + 1],
    confirmed: Ids,
}

impl Link {
    /// The session key.
    pub fn key(&self) -> &SessionKey {
        &self.key
    }

    /// This node.
    pub fn me(&self) -> DeviceId {
        self.me
    }

    /// The key's 4-byte hint, as node-to-node messages carry it.
    pub fn hint(&self) -> [u8; 4] {
        [
            self.key.kid[0],
            self.key.kid[1],
            self.key.kid[2],
            self.key.kid[3],
        ]
    }

    fn member_index(&self, d: DeviceId) -> Option<usize> {
        if d == self.key.requester {
            return Some(0);
        }
        self.key
            .peers
            .as_slice()
            .iter()
            .position(|&p| p == d)
            .map(|i| i + 1)
    }

    fn check_alive(&self, now: u64) -> Result<(), Error> {
        if now >= u64::from(self.key.expires) {
            return Err(Error::Expired);
        }
        Ok(())
    }

    fn confirmation_tag<C: Crypto>(
        &self,
        c: &C,
        kind: u8,
        from: DeviceId,
        to: DeviceId,
    ) -> Result<[u8; 16], Error> {
        let mut k = Secret::zero();
        c.hkdf_expand(self.key.secret.expose(), &[LABEL_CONFIRM], k.expose_mut())?;
        let mac = c.hmac_sha256(
            k.expose(),
            &[
                &[kind],
                &from.0,
                &to.0,
                &self.key.kid,
                &self.key.expires.to_be_bytes(),
            ],
        );
        let mut t = [0; 16];
        t.copy_from_slice(&mac[..16]);
        Ok(t)
    }

    fn confirmation<C: Crypto>(
        &self,
        c: &C,
        kind: u8,
        to: DeviceId,
    ) -> Result<[u8; CONFIRM_LEN], Error> {
        let tag = self.confirmation_tag(c, kind, self.me, to)?;
        let mut out = [0u8; CONFIRM_LEN];
        out[0] = kind;
        out[1..5].copy_from_slice(&self.hint());
        out[5..].copy_from_slice(&tag);
        Ok(out)
    }

    /// The requester's confirmation to `peer` (send it first).
    pub fn confirm_to<C: Crypto>(
        &self,
        c: &C,
        peer: DeviceId,
        now: u64,
    ) -> Result<[u8; CONFIRM_LEN], Error> {
        self.check_alive(now)?;
        if self.me != self.key.requester || !self.key.peers.contains(peer) {
            return Err(Error::InvalidValue(
                "only the requester confirms first, and only to a peer",
            ));
        }
        self.confirmation(c, CONFIRM_REQUESTER, peer)
    }

    /// Reads a confirmation from `from`. A peer that reads the requester's gets the answer to send back; the
    /// requester that reads a peer's gets `None`. Either way `from` is then confirmed: it holds the key.
    pub fn accept_confirmation<C: Crypto>(
        &mut self,
        c: &C,
        from: DeviceId,
        msg: &[u8],
        now: u64,
    ) -> Result<Option<[u8; CONFIRM_LEN]>, Error> {
        self.check_alive(now)?;
        if msg.len() != CONFIRM_LEN {
            return Err(if msg.len() < CONFIRM_LEN {
                Error::Truncated
            } else {
                Error::TrailingBytes
            });
        }
        let expected = if self.me == self.key.requester {
            CONFIRM_PEER
        } else {
            CONFIRM_REQUESTER
        };
        if msg[0] != expected {
            return Err(Error::UnexpectedMessage {
                expected,
                got: msg[0],
            });
        }
        let from_ok = if expected == CONFIRM_PEER {
            self.key.peers.contains(from)
        } else {
            from == self.key.requester
        };
        if !from_ok || msg[1..5] != self.hint() {
            return Err(Error::Authentication);
        }
        let tag = self.confirmation_tag(c, expected, from, self.me)?;
        if !bool::from(tag.ct_eq(&msg[5..])) {
            return Err(Error::Authentication);
        }
        if !self.confirmed.contains(from) {
            self.confirmed.push(from)?;
        }
        if expected == CONFIRM_REQUESTER {
            return self.confirmation(c, CONFIRM_PEER, from).map(Some);
        }
        Ok(None)
    }

    /// Whether `d` has proved it holds the key.
    pub fn is_confirmed(&self, d: DeviceId) -> bool {
        self.confirmed.contains(d)
    }

    fn send_key<C: Crypto>(&self, c: &C, from: DeviceId) -> Result<C::AeadKey, Error> {
        let mut k = Secret::zero();
        c.hkdf_expand(
            self.key.secret.expose(),
            &[LABEL_SEND, &from.0],
            k.expose_mut(),
        )?;
        c.aead_key(Suite::AES256GCM, &k)
    }

    fn data_aad(&self, from: DeviceId, seq: u32) -> [u8; 1 + 8 + 4 + 8 + 4] {
        let mut a = [0u8; 25];
        a[0] = DATA;
        a[1..9].copy_from_slice(&self.key.kid);
        a[9..13].copy_from_slice(&self.key.expires.to_be_bytes());
        a[13..21].copy_from_slice(&from.0);
        a[21..].copy_from_slice(&seq.to_be_bytes());
        a
    }

    /// Writes a data message carrying `plaintext` into `out` and returns its length (`plaintext.len() +
    /// DATA_OVERHEAD`). Each call takes the next sequence number; a node that keeps a key across a restart must keep
    /// its next number with it.
    pub fn seal<C: Crypto>(
        &mut self,
        c: &C,
        plaintext: &[u8],
        out: &mut [u8],
        now: u64,
    ) -> Result<usize, Error> {
        self.check_alive(now)?;
        let len = plaintext.len() + DATA_OVERHEAD;
        if out.len() < len {
            return Err(Error::BufferTooSmall { needed: len });
        }
        let seq = self.next_seq;
        self.next_seq = seq.checked_add(1).ok_or(Error::InvalidValue(
            "this key's sequence numbers are used up",
        ))?;
        out[0] = DATA;
        out[1..5].copy_from_slice(&self.hint());
        out[5..9].copy_from_slice(&seq.to_be_bytes());
        let body = &mut out[9..9 + plaintext.len()];
        body.copy_from_slice(plaintext);
        let k = self.send_key(c, self.me)?;
        let mut nonce = [0u8; NONCE_LEN];
        nonce[8..].copy_from_slice(&seq.to_be_bytes());
        let tag = c.aead_seal(&k, &nonce, &self.data_aad(self.me, seq), body)?;
        out[9 + plaintext.len()..len].copy_from_slice(&tag);
        Ok(len)
    }

    /// Opens a data message from `from` (the link names the sender) in place and returns the plaintext. A replayed,
    /// altered or too old message, or one after the key's expiry, is refused and releases nothing.
    pub fn open<'m, C: Crypto>(
        &mut self,
        c: &C,
        from: DeviceId,
        msg: &'m mut [u8],
        now: u64,
    ) -> Result<&'m [u8], Error> {
        self.check_alive(now)?;
        if msg.len() < DATA_OVERHEAD {
            return Err(Error::Truncated);
        }
        if msg[0] != DATA {
            return Err(Error::UnexpectedMessage {
                expected: DATA,
                got: msg[0],
            });
        }
        let i = match self.member_index(from) {
            Some(i) if from != self.me && msg[1..5] == self.hint() => i,
            _ => return Err(Error::Authentication),
        };
        let seq = u32::from_be_bytes([msg[5], msg[6], msg[7], msg[8]]);
        self.windows[i].check(u64::from(seq))?;
        let rest = &mut msg[9..];
        let (body, tag) = rest.split_at_mut(rest.len() - TAG_LEN);
        let tag: [u8; TAG_LEN] = (&*tag).try_into().map_err(|_| Error::Truncated)?;
        let k = self.send_key(c, from)?;
        let mut nonce = [0u8; NONCE_LEN];
        nonce[8..].copy_from_slice(&seq.to_be_bytes());
        c.aead_open(&k, &nonce, &self.data_aad(from, seq), body, &tag)?;
        self.windows[i].mark(u64::from(seq));
        Ok(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RustCrypto;

    const N1: DeviceId = DeviceId([1; 8]);
    const N2: DeviceId = DeviceId([2; 8]);
    const N3: DeviceId = DeviceId([3; 8]);
    const NOW: u64 = 1_800_000_000;
    const EXPIRES: u32 = 1_800_003_600;

    fn keys(b: u8) -> NodeKeys {
        NodeKeys::derive(&RustCrypto, &Secret::from_bytes([b; 32])).unwrap()
    }

    fn translate(kind: u8, peers: &[DeviceId]) -> (Request, Packet) {
        let c = RustCrypto;
        let req = Request::new(kind, N1, peers, [7; 8], EXPIRES).unwrap();
        let seed = (!is_distribution(kind)).then(|| Seed([9; 16]));
        let msg = req.seal(&c, &keys(1), seed.as_ref()).unwrap();
        (req, msg)
    }

    #[test]
    fn ktc_direct_gives_both_nodes_the_same_key_and_they_confirm_it() {
        let c = RustCrypto;
        let (_, msg) = translate(KTC_DIRECT, &[N2]);
        assert_eq!(msg.as_bytes().len(), 53);
        let (req, seed) = Request::open(&c, N1, &keys(1), msg.as_bytes()).unwrap();
        let seed = seed.unwrap();
        assert_eq!(seed, Seed([9; 16]));
        req.check_expiry(NOW).unwrap();
        let delivery = req.package(&c, N2, &keys(2), &seed).unwrap();
        assert_eq!(delivery.as_bytes().len(), 53);
        let k2 = open_package(&c, N2, &keys(2), delivery.as_bytes(), NOW).unwrap();
        assert_eq!(k2.requester(), N1);
        let k1 = SessionKey::derive(
            &c,
            &Seed([9; 16]),
            [7; 8],
            EXPIRES,
            N1,
            &Ids::from_slice(&[N2]).unwrap(),
        )
        .unwrap();
        assert_eq!(k1.secret, k2.secret);

        let mut l1 = k1.link(N1).unwrap();
        let mut l2 = k2.link(N2).unwrap();
        let c1 = l1.confirm_to(&c, N2, NOW).unwrap();
        let c2 = l2.accept_confirmation(&c, N1, &c1, NOW).unwrap().unwrap();
        assert_eq!(l1.accept_confirmation(&c, N2, &c2, NOW).unwrap(), None);
        assert!(l1.is_confirmed(N2) && l2.is_confirmed(N1));
        // Reflected: N1's own confirmation sent back to it, or N2's answer sent to N2.
        assert!(l1.accept_confirmation(&c, N2, &c1, NOW).is_err());
        assert!(l2.accept_confirmation(&c, N1, &c2, NOW).is_err());

        let mut out = [0u8; 64];
        let n = l1.seal(&c, b"open", &mut out, NOW).unwrap();
        assert_eq!(n, 4 + DATA_OVERHEAD);
        let mut copy = out;
        assert_eq!(l2.open(&c, N1, &mut out[..n], NOW).unwrap(), b"open");
        // Replayed.
        assert!(l2.open(&c, N1, &mut copy[..n], NOW).is_err());
        // After expiry nothing opens or seals.
        let n = l1.seal(&c, b"late", &mut out, NOW).unwrap();
        assert_eq!(
            l2.open(&c, N1, &mut out[..n], u64::from(EXPIRES)),
            Err(Error::Expired)
        );
        assert_eq!(
            l1.seal(&c, b"x", &mut out, u64::from(EXPIRES)),
            Err(Error::Expired)
        );
    }

    #[test]
    fn every_altered_byte_of_a_request_or_package_is_refused() {
        let c = RustCrypto;
        for kind in [KTC_DIRECT, KTC_INDIRECT, KDC_DIRECT, KDC_INDIRECT] {
            let (_, msg) = translate(kind, &[N2, N3]);
            for i in 0..msg.as_bytes().len() {
                let mut bad = msg.as_bytes().to_vec();
                bad[i] ^= 1;
                assert!(
                    Request::open(&c, N1, &keys(1), &bad).is_err(),
                    "{kind:x} byte {i}"
                );
            }
            // Another requester's transport name.
            assert!(Request::open(&c, N2, &keys(1), msg.as_bytes()).is_err());
        }
        let (req, _) = translate(KTC_DIRECT, &[N2, N3]);
        let p = req.package(&c, N3, &keys(3), &Seed([9; 16])).unwrap();
        for i in 0..p.as_bytes().len() {
            let mut bad = p.as_bytes().to_vec();
            bad[i] ^= 1;
            assert!(
                open_package(&c, N3, &keys(3), &bad, NOW).is_err(),
                "byte {i}"
            );
        }
    }

    #[test]
    fn packages_cannot_be_swapped_reflected_or_replayed_late() {
        let c = RustCrypto;
        let (req, _) = translate(KTC_DIRECT, &[N2]);
        let seed = Seed([9; 16]);
        let d = req.package(&c, N2, &keys(2), &seed).unwrap();
        // For N2, not for N1 (reflection) nor N3 (even with N2's keys: the recipient is in the AAD).
        assert!(open_package(&c, N1, &keys(1), d.as_bytes(), NOW).is_err());
        assert!(open_package(&c, N3, &keys(2), d.as_bytes(), NOW).is_err());
        // The same package after its expiry: an old package replayed (Denning–Sacco).
        assert_eq!(
            open_package(&c, N2, &keys(2), d.as_bytes(), u64::from(EXPIRES)).unwrap_err(),
            Error::Expired
        );
        // Swapping N1 and N2: a request from N2 naming N1 gives another key.
        let swapped = Request::new(KTC_DIRECT, N2, &[N1], [7; 8], EXPIRES).unwrap();
        let d2 = swapped.package(&c, N1, &keys(1), &seed).unwrap();
        let k = open_package(&c, N1, &keys(1), d2.as_bytes(), NOW).unwrap();
        let k1 = open_package(&c, N2, &keys(2), d.as_bytes(), NOW).unwrap();
        assert_ne!(k.secret, k1.secret);
        // A CE cannot give the requester a grant for its own KTC key.
        assert!(req.package(&c, N1, &keys(1), &seed).is_err());
    }

    #[test]
    fn kdc_and_group_keys() {
        let c = RustCrypto;
        let (_, msg) = translate(KDC_DIRECT, &[N2, N3]);
        let (req, none) = Request::open(&c, N1, &keys(1), msg.as_bytes()).unwrap();
        assert!(none.is_none());
        let seed = Seed([5; 16]);
        let g = req.package(&c, N1, &keys(1), &seed).unwrap();
        let k1 = open_package(&c, N1, &keys(1), g.as_bytes(), NOW).unwrap();
        let k2 = open_package(
            &c,
            N2,
            &keys(2),
            req.package(&c, N2, &keys(2), &seed).unwrap().as_bytes(),
            NOW,
        )
        .unwrap();
        let k3 = open_package(
            &c,
            N3,
            &keys(3),
            req.package(&c, N3, &keys(3), &seed).unwrap().as_bytes(),
            NOW,
        )
        .unwrap();
        assert_eq!(k1.secret, k2.secret);
        assert_eq!(k2.secret, k3.secret);
        assert_eq!(k3.peers(), &[N2, N3]);
        let mut l1 = k1.link(N1).unwrap();
        let mut l2 = k2.link(N2).unwrap();
        let mut l3 = k3.link(N3).unwrap();
        // Each member sends under its own key and numbers; everyone else opens.
        let mut a = [0u8; 64];
        let n = l2.seal(&c, b"from 2", &mut a, NOW).unwrap();
        let mut b = a;
        assert_eq!(l1.open(&c, N2, &mut a[..n], NOW).unwrap(), b"from 2");
        assert_eq!(l3.open(&c, N2, &mut b[..n], NOW).unwrap(), b"from 2");
        // A message from N2 claimed to be from N3 fails.
        let n = l2.seal(&c, b"x", &mut a, NOW).unwrap();
        assert!(l1.open(&c, N3, &mut a[..n], NOW).is_err());
    }

    #[test]
    fn receipts_notices_and_refusals_are_bound_to_their_nodes() {
        let c = RustCrypto;
        let r = seal_receipt(&c, N2, &keys(2), N1, &[7; 8]).unwrap();
        assert_eq!(open_receipt(&c, N2, &keys(2), &r).unwrap(), (N1, [7; 8]));
        assert!(open_receipt(&c, N3, &keys(2), &r).is_err());
        let n = seal_notice(&c, N1, &keys(1), N2, &[7; 8]).unwrap();
        assert_eq!(open_notice(&c, N1, &keys(1), &n).unwrap(), (N2, [7; 8]));
        // A receipt is not a notice, even under the same SDK.
        assert!(open_notice(&c, N2, &keys(2), &r).is_err());
        let f = seal_refusal(&c, N1, &keys(1), &[7; 8], Refusal::PeerNotAuthorized).unwrap();
        assert_eq!(
            open_refusal(&c, N1, &keys(1), &f).unwrap(),
            ([7; 8], Refusal::PeerNotAuthorized)
        );
        let mut bad = f;
        bad[9] = 2;
        assert!(open_refusal(&c, N1, &keys(1), &bad).is_err());
    }

    #[test]
    fn a_request_with_too_many_peers_is_an_error_not_a_short_message() {
        let c = RustCrypto;
        // `Request`'s fields are public: one built by hand may name 1 + MAX_PEERS peers, which no AAD, packet or
        // member list can hold. Every path must refuse it rather than authenticate a truncated header.
        let peers: std::vec::Vec<DeviceId> = (10..10 + MAX_PEERS as u8 + 1)
            .map(|b| DeviceId([b; 8]))
            .collect();
        let req = Request {
            kind: KTC_DIRECT,
            requester: N1,
            peers: Ids::from_slice(&peers).unwrap(),
            kid: [7; 8],
            expires: EXPIRES,
        };
        assert!(req.seal(&c, &keys(1), Some(&Seed([9; 16]))).is_err());
        assert!(req.try_members().is_err());
        assert_eq!(req.members().as_slice().len(), MAX_PEERS + 1);
        assert!(req.package(&c, peers[0], &keys(2), &Seed([9; 16])).is_err());
        // The largest legal A fits: a request naming MAX_PEERS peers.
        let req = Request::new(KTC_DIRECT, N1, &peers[..MAX_PEERS], [7; 8], EXPIRES).unwrap();
        let msg = req.seal(&c, &keys(1), Some(&Seed([9; 16]))).unwrap();
        assert_eq!(msg.as_bytes().len(), MAX_MESSAGE);
        Request::open(&c, N1, &keys(1), msg.as_bytes()).unwrap();
        let d = req.package(&c, peers[0], &keys(2), &Seed([9; 16])).unwrap();
        assert_eq!(d.as_bytes().len(), MAX_MESSAGE);
        open_package(&c, peers[0], &keys(2), d.as_bytes(), NOW).unwrap();
        // An Aad that runs out of room says so.
        let mut a = Aad::new(DATA);
        assert!(a.put(&[0; AAD_MAX - 1]).is_ok());
        assert_eq!(
            a.put(&[0]),
            Err(Error::BufferTooSmall {
                needed: AAD_MAX + 1
            })
        );
        assert_eq!(a.bytes().len(), AAD_MAX);
    }

    #[test]
    fn the_replay_window_takes_reordered_messages_once() {
        let mut w = Window::default();
        for s in [5u64, 3, 4, 70, 7] {
            w.check(s).unwrap();
            w.mark(s);
        }
        // 6 is 64 below 70: outside the window. 7 was just inside it.
        for s in [3u64, 4, 5, 6, 7, 70, 2] {
            assert!(w.check(s).is_err(), "{s}");
        }
        w.check(69).unwrap();
    }
}
