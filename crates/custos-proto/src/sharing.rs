//! Sharing: an application's signed request for a slice of time, and the keeper's signed answer.
//!
//! - A [`SharingRequest`] is COSE_Sign1 by the application's Ed25519 key, which the request itself names. It says
//!   whose data (the owner: the keeper's signing key), which devices, which time range, why (a purpose code and
//!   text), how long the application keeps it, where to seal the answer (an X25519 reply key), a nonce and an expiry.
//!   Its id is the SHA-256 of its signed bytes.
//! - A [`Grant`] is COSE_Sign1 by the keeper. It names the request it answers and carries, per device and DPK epoch,
//!   the tree the application needs (device, epoch, schedule, span) and the minimal cover of the approved range,
//!   each node secret sealed with HPKE (RFC 9180, base mode, DHKEM(X25519, HKDF-SHA256), HKDF-SHA256,
//!   AES-256-GCM) to the reply key. One encapsulation per grant; the secrets are sealed in order under its
//!   context, each with the node's identity as associated data.
//! - A [`Denial`] is COSE_Sign1 by the keeper, naming the request and saying why.
//!
//! The hub stores and forwards all three and learns nothing usable: it cannot forge a request (the application's
//! key), alter or redirect a grant (the keeper's signature binds it to the request, and only the reply key opens
//! it), or widen one (the application checks every node against what it asked for). Byte layouts and vectors are
//! in `docs/wire.md`.

use alloc::string::String;
use alloc::vec::Vec;

use coset::cbor::Value;
use hpke::{Deserializable, Serializable};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::cose::{array_from_cbor, bytes_n, int, sign1, to_cbor, unverified_payload, verify1};
use crate::{
    Crypto, DeviceId, Epoch, Error, NodeId, NodeSecret, Schedule, Secret, Span, TreeSpec, UnixTime,
};

/// Content type of a signed sharing request.
pub const REQUEST: &str = "application/custos-request+cbor";
/// Content type of a signed grant.
pub const GRANT: &str = "application/custos-grant+cbor";
/// Content type of a signed denial.
pub const DENIAL: &str = "application/custos-denial+cbor";
/// The only format version of all three.
pub const VERSION: i64 = 1;
/// HPKE `info` prefix; the request id follows.
pub const GRANT_INFO: &[u8] = b"custos/v1/grant";
/// The most devices one request may name.
pub const MAX_DEVICES: usize = 64;
/// The longest application name, purpose code or denial reason, bytes.
pub const MAX_SHORT_TEXT: usize = 64;
/// The longest purpose text, bytes.
pub const MAX_PURPOSE_TEXT: usize = 512;
/// The most node secrets in one grant.
pub const MAX_GRANT_NODES: usize = 4096;
/// The longest a request may stay valid: a keeper offline for weeks still answers, a request does not live forever.
pub const MAX_REQUEST_LIFETIME: u64 = 90 * 86_400;

type Kem = hpke::kem::X25519HkdfSha256;
type Kdf = hpke::kdf::HkdfSha256;
type Aead = hpke::aead::AesGcm256;

/// What an application asks of a data owner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SharingRequest {
    /// The application's Ed25519 key; the request is signed with it.
    pub app_key: [u8; 32],
    /// The application's name as it presents itself (a claim: policies should name keys).
    pub app_name: String,
    /// The data owner: the Ed25519 key of the owner's keeper.
    pub owner: [u8; 32],
    /// The devices whose records it wants.
    pub devices: Vec<DeviceId>,
    /// The time range `[from, until)`.
    pub range: Span,
    /// A machine-readable purpose code, e.g. `energy.optimization`.
    pub purpose: String,
    /// The purpose in words, shown to the user.
    pub purpose_text: String,
    /// How long the application keeps the data, seconds.
    pub retention: u64,
    /// The X25519 key the grant's secrets are sealed to.
    pub reply_key: [u8; 32],
    /// Random, so that two equal requests have different ids.
    pub nonce: [u8; 16],
    /// The request is void from this time on.
    pub expires: UnixTime,
}

/// A request whose signature, shape and expiry were checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedRequest {
    /// SHA-256 of the signed bytes: what grants, denials and the consent log name.
    pub id: [u8; 32],
    /// The request.
    pub request: SharingRequest,
}

/// SHA-256 of a signed statement: the id of a request.
pub fn statement_id(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn text(v: &Value, max: usize, what: &'static str) -> Result<String, Error> {
    match v.as_text() {
        Some(t) if t.len() <= max => Ok(t.into()),
        Some(_) => Err(Error::InvalidValue(what)),
        None => Err(Error::InvalidValue(what)),
    }
}

fn uint(v: &Value, what: &'static str) -> Result<u64, Error> {
    u64::try_from(int(v, what)?).map_err(|_| Error::InvalidValue(what))
}

fn time(v: &Value, what: &'static str) -> Result<UnixTime, Error> {
    UnixTime::new(uint(v, what)?)
}

fn check_version(v: &Value) -> Result<(), Error> {
    match int(v, "version is not an integer")? {
        VERSION => Ok(()),
        other => Err(Error::UnsupportedVersion(
            u8::try_from(other).unwrap_or(u8::MAX),
        )),
    }
}

fn u(v: u64) -> Value {
    Value::Integer(v.into())
}

fn b(bytes: &[u8]) -> Value {
    Value::Bytes(bytes.to_vec())
}

impl SharingRequest {
    fn check_shape(&self) -> Result<(), Error> {
        if self.devices.is_empty() || self.devices.len() > MAX_DEVICES {
            return Err(Error::InvalidValue("a request names 1 to 64 devices"));
        }
        if self.app_name.len() > MAX_SHORT_TEXT || self.purpose.len() > MAX_SHORT_TEXT {
            return Err(Error::InvalidValue(
                "application name or purpose code over 64 bytes",
            ));
        }
        if self.purpose_text.len() > MAX_PURPOSE_TEXT {
            return Err(Error::InvalidValue("purpose text over 512 bytes"));
        }
        if self.purpose.is_empty() {
            return Err(Error::InvalidValue("a request must state a purpose"));
        }
        // One spelling per purpose, so that a policy rule for `marketing.*` cannot be dodged with `Marketing.ads`.
        let segment = |seg: &str| {
            !seg.is_empty()
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        };
        if !self.purpose.split('.').all(segment) {
            return Err(Error::InvalidValue(
                "a purpose code is dot-separated segments of lowercase letters, digits, '-' and '_'",
            ));
        }
        // Each device once: the keeper's answer and the consent log name every device asked for.
        for (i, d) in self.devices.iter().enumerate() {
            if self.devices[..i].contains(d) {
                return Err(Error::InvalidValue("a request names a device twice"));
            }
        }
        Ok(())
    }

    /// Signs the request with the application's key; `sign` makes the Ed25519 signature (the key must be the
    /// one in `app_key`, or nobody will accept the request).
    pub fn sign(&self, sign: impl FnOnce(&[u8]) -> [u8; 64]) -> Result<Vec<u8>, Error> {
        self.check_shape()?;
        let payload = Value::Array(alloc::vec![
            Value::Integer(VERSION.into()),
            b(&self.app_key),
            Value::Text(self.app_name.clone()),
            b(&self.owner),
            Value::Array(self.devices.iter().map(|d| b(&d.0)).collect()),
            u(self.range.start().secs()),
            u(self.range.end().secs()),
            Value::Text(self.purpose.clone()),
            Value::Text(self.purpose_text.clone()),
            u(self.retention),
            b(&self.reply_key),
            b(&self.nonce),
            u(self.expires.secs()),
        ]);
        sign1(REQUEST, to_cbor(&payload)?, sign)
    }

    fn decode(payload: &[u8]) -> Result<Self, Error> {
        let items = array_from_cbor(payload)?;
        let [
            version,
            app_key,
            app_name,
            owner,
            Value::Array(devices),
            from,
            until,
            purpose,
            purpose_text,
            retention,
            reply_key,
            nonce,
            expires,
        ] = items.as_slice()
        else {
            return Err(Error::InvalidValue(
                "a request is [version, app key, app name, owner, devices, from, until, purpose, purpose text, \
                 retention, reply key, nonce, expires]",
            ));
        };
        check_version(version)?;
        if devices.len() > MAX_DEVICES {
            return Err(Error::InvalidValue("a request names 1 to 64 devices"));
        }
        let request = Self {
            app_key: bytes_n(app_key, "app key is not 32 bytes")?,
            app_name: text(
                app_name,
                MAX_SHORT_TEXT,
                "app name is not text of at most 64 bytes",
            )?,
            owner: bytes_n(owner, "owner is not 32 bytes")?,
            devices: devices
                .iter()
                .map(|d| bytes_n(d, "a device id is not 8 bytes").map(DeviceId))
                .collect::<Result<_, _>>()?,
            range: Span::new(
                time(from, "from is not a time")?,
                time(until, "until is not a time")?,
            )?,
            purpose: text(
                purpose,
                MAX_SHORT_TEXT,
                "purpose is not text of at most 64 bytes",
            )?,
            purpose_text: text(
                purpose_text,
                MAX_PURPOSE_TEXT,
                "purpose text is not text of at most 512 bytes",
            )?,
            retention: uint(retention, "retention is not a number of seconds")?,
            reply_key: bytes_n(reply_key, "reply key is not 32 bytes")?,
            nonce: bytes_n(nonce, "nonce is not 16 bytes")?,
            expires: time(expires, "expires is not a time")?,
        };
        request.check_shape()?;
        Ok(request)
    }

    /// Reads a request without checking its signature or expiry, for routing (the hub reads the owner) and for
    /// showing why one was refused. Never act on it without [`SharingRequest::verify`].
    pub fn peek(bytes: &[u8]) -> Result<Self, Error> {
        Self::decode(&unverified_payload(bytes)?)
    }

    /// Checks a signed request: its signature by the key it names, its shape, and that it has not expired at `now`
    /// nor claims a lifetime over [`MAX_REQUEST_LIFETIME`]. Replays are the keeper's to catch, by id.
    pub fn verify<C: Crypto>(c: &C, bytes: &[u8], now: UnixTime) -> Result<VerifiedRequest, Error> {
        let claimed = Self::peek(bytes)?;
        let payload = verify1(c, bytes, REQUEST, &claimed.app_key)?;
        let request = Self::decode(&payload)?;
        if now >= request.expires {
            return Err(Error::Expired);
        }
        if request.expires.secs() - now.secs() > MAX_REQUEST_LIFETIME {
            return Err(Error::InvalidValue(
                "a request may stay valid for at most 90 days",
            ));
        }
        Ok(VerifiedRequest {
            id: statement_id(bytes),
            request,
        })
    }
}

/// The secrets for one device and DPK epoch, as the keeper grants them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrantedTree {
    /// The tree: device, epoch, schedule and span, so the application can derive leaf keys.
    pub spec: TreeSpec,
    /// The minimal cover of the approved range within this tree.
    pub nodes: Vec<NodeSecret>,
}

/// The keeper's answer when it approves: the secrets, sealed to the application.
pub struct Grant;

/// A deterministic generator for HPKE's ephemeral key, seeded with 32 fresh random bytes from the caller, so this
/// crate stays free of I/O and vectors are reproducible. HPKE asks for exactly one 32-byte key.
struct SeededRng<'a, C: Crypto> {
    c: &'a C,
    seed: &'a Secret,
    counter: u32,
}

impl<C: Crypto> hpke::rand_core::RngCore for SeededRng<'_, C> {
    fn next_u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        self.fill_bytes(&mut b);
        u32::from_le_bytes(b)
    }

    fn next_u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        self.fill_bytes(&mut b);
        u64::from_le_bytes(b)
    }

    fn fill_bytes(&mut self, dst: &mut [u8]) {
        for chunk in dst.chunks_mut(32) {
            let block = Zeroizing::new(self.c.hmac_sha256(
                self.seed.expose(),
                &[b"custos/v1/hpke-ephemeral", &self.counter.to_be_bytes()],
            ));
            self.counter = self.counter.wrapping_add(1);
            chunk.copy_from_slice(&block[..chunk.len()]);
        }
    }
}

impl<C: Crypto> hpke::rand_core::CryptoRng for SeededRng<'_, C> {}

fn grant_info(request: &[u8; 32]) -> Vec<u8> {
    let mut info = GRANT_INFO.to_vec();
    info.extend_from_slice(request);
    info
}

fn node_aad(device: DeviceId, epoch: Epoch, node: NodeId) -> [u8; 19] {
    let mut aad = [0u8; 19];
    aad[..8].copy_from_slice(&device.0);
    aad[8..10].copy_from_slice(&epoch.0.to_be_bytes());
    aad[10] = node.depth;
    aad[11..].copy_from_slice(&node.index.to_be_bytes());
    aad
}

impl Grant {
    /// Seals `trees` to the request's reply key and signs the grant with the keeper's key. `seed` is 32 fresh
    /// random bytes for the HPKE ephemeral key; `sign` is the keeper's Ed25519 signer.
    pub fn seal<C: Crypto>(
        c: &C,
        request: &VerifiedRequest,
        trees: &[GrantedTree],
        issued_at: UnixTime,
        seed: &Secret,
        sign: impl FnOnce(&[u8]) -> [u8; 64],
    ) -> Result<Vec<u8>, Error> {
        let count: usize = trees.iter().map(|t| t.nodes.len()).sum();
        if count == 0 || count > MAX_GRANT_NODES {
            return Err(Error::InvalidValue(
                "a grant carries 1 to 4096 node secrets",
            ));
        }
        let reply = <Kem as hpke::Kem>::PublicKey::from_bytes(&request.request.reply_key)
            .map_err(|_| Error::InvalidValue("reply key is not an X25519 key"))?;
        let mut rng = SeededRng {
            c,
            seed,
            counter: 0,
        };
        let (enc, mut ctx) = hpke::setup_sender::<Aead, Kdf, Kem, _>(
            &hpke::OpModeS::Base,
            &reply,
            &grant_info(&request.id),
            &mut rng,
        )
        .map_err(|_| Error::InvalidValue("reply key is a small-order X25519 key"))?;
        let mut encoded_trees = Vec::with_capacity(trees.len());
        for tree in trees {
            let spec = &tree.spec;
            let mut sched = [0u8; Schedule::MAX_ENCODED];
            let n = spec.schedule().encode(&mut sched)?;
            let mut nodes = Vec::with_capacity(tree.nodes.len());
            for secret in &tree.nodes {
                let node = secret.node();
                spec.check_node(node)?;
                let sealed = ctx
                    .seal(
                        secret.secret().expose(),
                        &node_aad(spec.device(), spec.epoch(), node),
                    )
                    .map_err(|_| Error::Crypto)?;
                nodes.push(Value::Array(alloc::vec![
                    u(node.depth.into()),
                    u(node.index),
                    Value::Bytes(sealed)
                ]));
            }
            encoded_trees.push(Value::Array(alloc::vec![
                b(&spec.device().0),
                u(spec.epoch().0.into()),
                b(&sched[..n]),
                u(spec.span().start().secs()),
                u(spec.span().end().secs()),
                Value::Array(nodes),
            ]));
        }
        let payload = Value::Array(alloc::vec![
            Value::Integer(VERSION.into()),
            b(&request.id),
            u(issued_at.secs()),
            b(&enc.to_bytes()),
            Value::Array(encoded_trees),
        ]);
        sign1(GRANT, to_cbor(&payload)?, sign)
    }

    /// The request a grant answers, without checking anything: for routing at the hub.
    pub fn request_id_unverified(bytes: &[u8]) -> Result<[u8; 32], Error> {
        let items = array_from_cbor(&unverified_payload(bytes)?)?;
        bytes_n(
            items.get(1).ok_or(Error::Truncated)?,
            "request id is not 32 bytes",
        )
    }

    /// Checks and opens a grant as the application that sent `request`: the keeper's signature, that it answers
    /// this request, that every secret opens with `reply_secret`, and that every node lies inside what was asked
    /// (the devices and the range). Any failure releases nothing.
    pub fn open<C: Crypto>(
        c: &C,
        bytes: &[u8],
        keeper: &[u8; 32],
        request: &VerifiedRequest,
        reply_secret: &Secret,
    ) -> Result<Vec<GrantedTree>, Error> {
        let payload = verify1(c, bytes, GRANT, keeper)?;
        if *keeper != request.request.owner {
            return Err(Error::InvalidValue("the grant is not from the owner asked"));
        }
        let items = array_from_cbor(&payload)?;
        let [version, id, issued_at, enc, Value::Array(trees)] = items.as_slice() else {
            return Err(Error::InvalidValue(
                "a grant is [version, request id, issued at, enc, trees]",
            ));
        };
        check_version(version)?;
        time(issued_at, "issued_at is not a time")?;
        if bytes_n::<32>(id, "request id is not 32 bytes")? != request.id {
            return Err(Error::InvalidValue("the grant answers another request"));
        }
        let sk = <Kem as hpke::Kem>::PrivateKey::from_bytes(reply_secret.expose())
            .map_err(|_| Error::InvalidValue("reply secret is not an X25519 key"))?;
        let enc = <Kem as hpke::Kem>::EncappedKey::from_bytes(&bytes_n::<32>(
            enc,
            "enc is not 32 bytes",
        )?)
        .map_err(|_| Error::InvalidValue("enc is not an X25519 key"))?;
        let mut ctx = hpke::setup_receiver::<Aead, Kdf, Kem>(
            &hpke::OpModeR::Base,
            &sk,
            &enc,
            &grant_info(&request.id),
        )
        .map_err(|_| Error::Authentication)?;
        let mut out = Vec::with_capacity(trees.len());
        let mut count = 0usize;
        for tree in trees {
            let (spec, nodes) = read_tree(tree, &request.request, &mut count)?;
            let mut secrets = Vec::with_capacity(nodes.len());
            for (id, sealed) in nodes {
                let plain = Zeroizing::new(
                    ctx.open(sealed, &node_aad(spec.device(), spec.epoch(), id))
                        .map_err(|_| Error::Authentication)?,
                );
                let secret: [u8; 32] = plain
                    .as_slice()
                    .try_into()
                    .map_err(|_| Error::InvalidValue("a node secret is not 32 bytes"))?;
                secrets.push(NodeSecret::new(id, Secret::from_bytes(secret)));
            }
            out.push(GrantedTree {
                spec,
                nodes: secrets,
            });
        }
        if count == 0 {
            return Err(Error::InvalidValue(
                "a grant carries 1 to 4096 node secrets",
            ));
        }
        Ok(out)
    }
    /// What a grant shares, as the hub may read it: checks the keeper's signature, that it answers `request`
    /// (whose id is `request_id`), and every tree and node as [`Grant::open`] does (the devices asked for, nodes
    /// that exist and lie inside the range asked for), and returns each tree with its node ids. Opens no secret:
    /// the hub indexes these spans to decide which records the application may fetch.
    pub fn verify_public<C: Crypto>(
        c: &C,
        bytes: &[u8],
        keeper: &[u8; 32],
        request: &SharingRequest,
        request_id: &[u8; 32],
    ) -> Result<Vec<(TreeSpec, Vec<NodeId>)>, Error> {
        let payload = verify1(c, bytes, GRANT, keeper)?;
        if *keeper != request.owner {
            return Err(Error::InvalidValue("the grant is not from the owner asked"));
        }
        let items = array_from_cbor(&payload)?;
        let [version, id, issued_at, _enc, Value::Array(trees)] = items.as_slice() else {
            return Err(Error::InvalidValue(
                "a grant is [version, request id, issued at, enc, trees]",
            ));
        };
        check_version(version)?;
        time(issued_at, "issued_at is not a time")?;
        if bytes_n::<32>(id, "request id is not 32 bytes")? != *request_id {
            return Err(Error::InvalidValue("the grant answers another request"));
        }
        let mut count = 0usize;
        let mut out = Vec::with_capacity(trees.len());
        for tree in trees {
            let (spec, nodes) = read_tree(tree, request, &mut count)?;
            out.push((spec, nodes.into_iter().map(|(id, _)| id).collect()));
        }
        if count == 0 {
            return Err(Error::InvalidValue(
                "a grant carries 1 to 4096 node secrets",
            ));
        }
        Ok(out)
    }
}

/// A granted node and its sealed secret, as read from a grant.
type SealedNode<'v> = (NodeId, &'v [u8]);

/// Reads one granted tree against `request`: its device is one asked for, its tree is valid, and each node exists
/// and lies inside the range asked for; `count` counts nodes across the grant, at most [`MAX_GRANT_NODES`].
/// Returns the tree and each node with its sealed secret, unopened.
fn read_tree<'v>(
    tree: &'v Value,
    request: &SharingRequest,
    count: &mut usize,
) -> Result<(TreeSpec, Vec<SealedNode<'v>>), Error> {
    let Value::Array(fields) = tree else {
        return Err(Error::InvalidValue("a granted tree is not an array"));
    };
    let [device, epoch, sched, start, end, Value::Array(nodes)] = fields.as_slice() else {
        return Err(Error::InvalidValue(
            "a granted tree is [device, epoch, schedule, start, end, nodes]",
        ));
    };
    let device = DeviceId(bytes_n(device, "a device id is not 8 bytes")?);
    if !request.devices.contains(&device) {
        return Err(Error::InvalidValue(
            "the grant covers a device not asked for",
        ));
    }
    let epoch = Epoch(
        u16::try_from(uint(epoch, "epoch is not a number")?)
            .map_err(|_| Error::InvalidValue("epoch over 16 bits"))?,
    );
    let schedule = Schedule::decode(
        sched
            .as_bytes()
            .ok_or(Error::InvalidValue("schedule is not bytes"))?,
    )?;
    let span = Span::new(
        time(start, "span start is not a time")?,
        time(end, "span end is not a time")?,
    )?;
    let spec = TreeSpec::new(device, epoch, schedule, span)?;
    let mut out = Vec::with_capacity(nodes.len());
    for node in nodes {
        *count += 1;
        if *count > MAX_GRANT_NODES {
            return Err(Error::InvalidValue(
                "a grant carries 1 to 4096 node secrets",
            ));
        }
        let Value::Array(parts) = node else {
            return Err(Error::InvalidValue("a granted node is not an array"));
        };
        let [depth, index, Value::Bytes(sealed)] = parts.as_slice() else {
            return Err(Error::InvalidValue(
                "a granted node is [depth, index, sealed secret]",
            ));
        };
        let id = NodeId {
            depth: u8::try_from(uint(depth, "depth is not a number")?)
                .map_err(|_| Error::InvalidNode)?,
            index: uint(index, "index is not a number")?,
        };
        spec.check_node(id)?;
        if !request.range.includes(spec.node_span(id)?) {
            return Err(Error::InvalidValue("the grant covers time not asked for"));
        }
        out.push((id, sealed.as_slice()));
    }
    Ok((spec, out))
}

/// The keeper's signed refusal of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denial {
    /// The request refused.
    pub request: [u8; 32],
    /// When.
    pub issued_at: UnixTime,
    /// Why, in words (at most 64 bytes), e.g. "denied by policy rule 2".
    pub reason: String,
}

impl Denial {
    /// Signs the denial with the keeper's key.
    pub fn sign(&self, sign: impl FnOnce(&[u8]) -> [u8; 64]) -> Result<Vec<u8>, Error> {
        if self.reason.len() > MAX_SHORT_TEXT {
            return Err(Error::InvalidValue("reason over 64 bytes"));
        }
        let payload = Value::Array(alloc::vec![
            Value::Integer(VERSION.into()),
            b(&self.request),
            u(self.issued_at.secs()),
            Value::Text(self.reason.clone()),
        ]);
        sign1(DENIAL, to_cbor(&payload)?, sign)
    }

    /// Checks a denial against the keeper's key.
    pub fn verify<C: Crypto>(c: &C, bytes: &[u8], keeper: &[u8; 32]) -> Result<Self, Error> {
        let items = array_from_cbor(&verify1(c, bytes, DENIAL, keeper)?)?;
        let [version, request, issued_at, reason] = items.as_slice() else {
            return Err(Error::InvalidValue(
                "a denial is [version, request id, issued at, reason]",
            ));
        };
        check_version(version)?;
        Ok(Self {
            request: bytes_n(request, "request id is not 32 bytes")?,
            issued_at: time(issued_at, "issued_at is not a time")?,
            reason: text(
                reason,
                MAX_SHORT_TEXT,
                "reason is not text of at most 64 bytes",
            )?,
        })
    }
}

/// The kind of a signed statement, from its protected header, without checking it: lets the hub and the
/// application tell a grant from a denial before verifying it as such.
pub fn kind(bytes: &[u8]) -> Result<&'static str, Error> {
    let sign1 = crate::cose::parse_sign1(bytes)?;
    match &sign1.protected.header.content_type {
        Some(coset::ContentType::Text(t)) => [REQUEST, GRANT, DENIAL]
            .into_iter()
            .find(|k| k == t)
            .ok_or(Error::InvalidValue("not a Custos sharing statement")),
        _ => Err(Error::InvalidValue("not a Custos sharing statement")),
    }
}

/// Content type of a keeper's access token.
pub const ACCESS: &str = "application/custos-access+cbor";
/// How far an access token's time may lie from the hub's clock, seconds.
pub const ACCESS_SKEW: u64 = 120;

/// A keeper's short-lived proof, to the hub, that it holds the owner's key: COSE_Sign1 over
/// `[version, owner, scope, at]`, where `scope` names the one operation (e.g. `GET /v1/owners/{owner}/inbox`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessToken {
    /// The owner (the keeper's Ed25519 key).
    pub owner: [u8; 32],
    /// The operation it allows.
    pub scope: String,
    /// When it was made.
    pub at: UnixTime,
}

impl AccessToken {
    /// Signs the token with the keeper's key.
    pub fn sign(&self, sign: impl FnOnce(&[u8]) -> [u8; 64]) -> Result<Vec<u8>, Error> {
        if self.scope.len() > MAX_PURPOSE_TEXT {
            return Err(Error::InvalidValue("scope over 512 bytes"));
        }
        let payload = Value::Array(alloc::vec![
            Value::Integer(VERSION.into()),
            b(&self.owner),
            Value::Text(self.scope.clone()),
            u(self.at.secs()),
        ]);
        sign1(ACCESS, to_cbor(&payload)?, sign)
    }

    /// Checks a token for `owner` and `scope` at `now`: the owner's signature, the scope, and a time within
    /// [`ACCESS_SKEW`] of `now`.
    pub fn verify<C: Crypto>(
        c: &C,
        bytes: &[u8],
        owner: &[u8; 32],
        scope: &str,
        now: UnixTime,
    ) -> Result<Self, Error> {
        let items = array_from_cbor(&verify1(c, bytes, ACCESS, owner)?)?;
        let [version, token_owner, token_scope, at] = items.as_slice() else {
            return Err(Error::InvalidValue(
                "a token is [version, owner, scope, at]",
            ));
        };
        check_version(version)?;
        let token = Self {
            owner: bytes_n(token_owner, "owner is not 32 bytes")?,
            scope: text(token_scope, MAX_PURPOSE_TEXT, "scope is not text")?,
            at: time(at, "at is not a time")?,
        };
        if token.owner != *owner || token.scope != scope {
            return Err(Error::InvalidValue(
                "the token is for another owner or operation",
            ));
        }
        if token.at.secs().abs_diff(now.secs()) > ACCESS_SKEW {
            return Err(Error::Expired);
        }
        Ok(token)
    }

    /// Checks a token signed by the key its `owner` field names, for `scope` at `now`: how an application
    /// proves its key to the hub (e.g. `GET /v1/devices/{device}/records`). The key is read from the unverified
    /// payload and then checked as [`AccessToken::verify`] does, so the returned `owner` is the signer. Scopes
    /// differ by operation, so a keeper's inbox token never passes as an application's and the other way round.
    pub fn verify_self_signed<C: Crypto>(
        c: &C,
        bytes: &[u8],
        scope: &str,
        now: UnixTime,
    ) -> Result<Self, Error> {
        let items = array_from_cbor(&unverified_payload(bytes)?)?;
        let signer = bytes_n(
            items.get(1).ok_or(Error::Truncated)?,
            "owner is not 32 bytes",
        )?;
        Self::verify(c, bytes, &signer, scope, now)
    }
}
