//! The key tree of one data protection key (DPK).
//!
//! ```text
//! M (keeper master secret)
//! └─ DPK(device, epoch) = HKDF-Expand(M, "custos/v1/dpk" ‖ device ‖ epoch)             depth 0, the root
//!    └─ stage 1 node   = HKDF-Expand(DPK, "custos/v1/node" ‖ 1 ‖ code ‖ param ‖ index)  e.g. a month
//!       └─ stage 2 node = HKDF-Expand(parent, "custos/v1/node" ‖ 2 ‖ ...)               e.g. a week
//!          └─ leaf      = ...                                                         e.g. a day
//!             └─ AEAD key = HKDF-Expand(leaf, "custos/v1/key" ‖ suite)
//! ```
//!
//! It is a tree, not a chain: a node's secret derives its descendants and nothing else, so holding one week
//! reveals no other week. A DPK is valid for a span of time, its *epoch*; the tree only has the leaves inside it.
//! Byte layouts are in docs/wire.md.

use core::fmt;
use core::str::FromStr;

use crate::schedule::Stage;
use crate::time::{Span, UnixTime};
use crate::{Crypto, Error, Schedule, Secret};

/// Label of the DPK derivation.
pub const DPK_LABEL: &[u8] = b"custos/v1/dpk";
/// Label of a tree node derivation.
pub const NODE_LABEL: &[u8] = b"custos/v1/node";
/// Length of a node derivation's info: label, depth, stage code, stage parameter, period index.
const NODE_INFO_LEN: usize = NODE_LABEL.len() + 1 + 1 + 4 + 8;
/// Label of the AEAD key derivation from a leaf secret.
pub const KEY_LABEL: &[u8] = b"custos/v1/key";

/// A device identifier: 8 bytes, EUI-64 style. Printed as `00-11-22-33-44-55-66-77`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceId(pub [u8; 8]);

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("-")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceId({self})")
    }
}

/// Accepts 16 hex digits, optionally separated by `-` or `:` (`00-11-22-33-44-55-66-77`, `0011223344556677`).
impl FromStr for DeviceId {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        const BAD: Error =
            Error::InvalidValue("device id must be 16 hex digits, e.g. 00-11-22-33-44-55-66-77");
        let mut out = [0u8; 8];
        let mut n = 0;
        for c in s.chars().filter(|c| *c != '-' && *c != ':') {
            let v = c.to_digit(16).ok_or(BAD)? as u8;
            let byte = out.get_mut(n / 2).ok_or(BAD)?;
            *byte = (*byte << 4) | v;
            n += 1;
        }
        if n == 16 { Ok(Self(out)) } else { Err(BAD) }
    }
}

/// The number of a DPK: a device's DPK is rotated by moving to the next epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Epoch(pub u16);

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The keeper's master secret `M`. Never leaves the keeper.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MasterSecret(Secret);

impl MasterSecret {
    /// Wraps 32 random bytes.
    pub fn new(secret: Secret) -> Self {
        Self(secret)
    }

    /// The secret bytes, for storing in the keeper's vault.
    pub fn expose(&self) -> &Secret {
        &self.0
    }

    /// `DPK(device, epoch) = HKDF-Expand(M, "custos/v1/dpk" ‖ device ‖ epoch, 32)`.
    pub fn dpk<C: Crypto>(
        &self,
        crypto: &C,
        device: DeviceId,
        epoch: Epoch,
    ) -> Result<Secret, Error> {
        let mut dpk = Secret::zero();
        crypto.hkdf_expand(
            self.0.expose(),
            &[DPK_LABEL, &device.0, &epoch.0.to_be_bytes()],
            dpk.expose_mut(),
        )?;
        Ok(dpk)
    }
}

/// A node of a key tree: its depth (0 is the DPK, `schedule.depth()` the leaves) and the index of its period in
/// the stage at that depth.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId {
    /// 0 for the root (the DPK), 1 for the first stage, and so on.
    pub depth: u8,
    /// The period index within the stage at `depth` (see [`Stage::index_of`]); 0 for the root.
    pub index: u64,
}

impl NodeId {
    /// The root: the DPK itself.
    pub const ROOT: NodeId = NodeId { depth: 0, index: 0 };
}

/// The secret of one tree node. Zeroized on drop; `Debug` shows only the node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeSecret {
    node: NodeId,
    secret: Secret,
}

impl NodeSecret {
    /// Pairs a node with its secret (e.g. read from a grant). Use [`TreeSpec::check_node`] on untrusted nodes.
    pub fn new(node: NodeId, secret: Secret) -> Self {
        Self { node, secret }
    }

    /// Which node this is.
    pub fn node(&self) -> NodeId {
        self.node
    }

    /// The secret.
    pub fn secret(&self) -> &Secret {
        &self.secret
    }
}

/// Everything that fixes the shape of one DPK's tree: device, epoch, schedule and the epoch's validity span.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TreeSpec {
    device: DeviceId,
    epoch: Epoch,
    schedule: Schedule,
    span: Span,
}

impl TreeSpec {
    /// Checks that `span` starts and ends on leaf boundaries and that every leaf index fits 32 bits.
    pub fn new(
        device: DeviceId,
        epoch: Epoch,
        schedule: Schedule,
        span: Span,
    ) -> Result<Self, Error> {
        let leaf = schedule.leaf();
        for t in [span.start(), span.end()] {
            if !leaf.is_boundary(t) && t.secs() != crate::time::MAX {
                return Err(Error::NotAligned { at: t.secs(), leaf });
            }
        }
        let last = UnixTime::new(span.end().secs() - 1)?;
        if leaf.index_of(last) > u64::from(u32::MAX) {
            return Err(Error::LeafIndexOverflow);
        }
        Ok(Self {
            device,
            epoch,
            schedule,
            span,
        })
    }

    /// The device.
    pub fn device(&self) -> DeviceId {
        self.device
    }

    /// The DPK epoch.
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// The schedule.
    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    /// The epoch's validity span.
    pub fn span(&self) -> Span {
        self.span
    }

    /// The depth of the leaves.
    pub fn leaf_depth(&self) -> u8 {
        self.schedule.depth()
    }

    fn stage(&self, depth: u8) -> Result<Stage, Error> {
        match depth {
            0 => Err(Error::InvalidNode),
            d => self
                .schedule
                .stages()
                .get(usize::from(d) - 1)
                .copied()
                .ok_or(Error::InvalidNode),
        }
    }

    /// The node at `depth` whose period contains `t`.
    pub fn node_at(&self, depth: u8, t: UnixTime) -> Result<NodeId, Error> {
        if !self.span.contains(t) {
            return Err(Error::OutsideEpoch);
        }
        let index = if depth == 0 {
            0
        } else {
            self.stage(depth)?.index_of(t)
        };
        Ok(NodeId { depth, index })
    }

    /// The leaf period index of `t`, as carried in record headers.
    pub fn leaf_at(&self, t: UnixTime) -> Result<u32, Error> {
        let node = self.node_at(self.leaf_depth(), t)?;
        u32::try_from(node.index).map_err(|_| Error::LeafIndexOverflow)
    }

    /// The leaf node with period index `leaf`.
    pub fn leaf_node(&self, leaf: u32) -> NodeId {
        NodeId {
            depth: self.leaf_depth(),
            index: u64::from(leaf),
        }
    }

    /// The span of time a node's leaves cover: its period, clipped to the epoch. Fails for nodes that do not
    /// exist in this tree, which makes it the check for nodes read from untrusted input.
    pub fn node_span(&self, node: NodeId) -> Result<Span, Error> {
        if node.depth == 0 {
            return if node.index == 0 {
                Ok(self.span)
            } else {
                Err(Error::InvalidNode)
            };
        }
        let stage = self.stage(node.depth)?;
        let period = Span::new(stage.start_of(node.index)?, stage.end_of(node.index)?)?;
        period.intersect(self.span).ok_or(Error::OutsideEpoch)
    }

    /// Checks that `node` exists in this tree.
    pub fn check_node(&self, node: NodeId) -> Result<(), Error> {
        self.node_span(node).map(|_| ())
    }

    /// Whether `ancestor` is `node` or one of its ancestors.
    pub fn is_ancestor(&self, ancestor: NodeId, node: NodeId) -> Result<bool, Error> {
        let start = self.node_span(node)?.start();
        Ok(ancestor.depth <= node.depth && self.node_at(ancestor.depth, start)? == ancestor)
    }

    /// The secret among `held` that derives `node` (is `node` or an ancestor of it), if any.
    pub fn holder<'h>(
        &self,
        held: &'h [NodeSecret],
        node: NodeId,
    ) -> Result<Option<&'h NodeSecret>, Error> {
        self.check_node(node)?;
        for h in held {
            if self.is_ancestor(h.node, node)? {
                return Ok(Some(h));
            }
        }
        Ok(None)
    }

    /// The root of the tree: the DPK, derived from the keeper's master secret.
    pub fn root<C: Crypto>(&self, crypto: &C, master: &MasterSecret) -> Result<NodeSecret, Error> {
        Ok(NodeSecret {
            node: NodeId::ROOT,
            secret: master.dpk(crypto, self.device, self.epoch)?,
        })
    }

    /// The first second of a node's extent (its period clipped to the epoch); fails for nodes not in the tree.
    /// The cheap half of [`TreeSpec::node_span`], for the derivation path.
    fn node_start(&self, node: NodeId) -> Result<UnixTime, Error> {
        if node.depth == 0 {
            return if node.index == 0 {
                Ok(self.span.start())
            } else {
                Err(Error::InvalidNode)
            };
        }
        let stage = self.stage(node.depth)?;
        let start = stage.start_of(node.index)?;
        if start >= self.span.end() {
            return Err(Error::OutsideEpoch);
        }
        if start < self.span.start() {
            if stage.end_of(node.index)? <= self.span.start() {
                return Err(Error::OutsideEpoch);
            }
            return Ok(self.span.start());
        }
        Ok(start)
    }

    /// Derives `target` from `held`, which must be `target` or one of its ancestors.
    pub fn derive<C: Crypto>(
        &self,
        crypto: &C,
        held: &NodeSecret,
        target: NodeId,
    ) -> Result<NodeSecret, Error> {
        let start = self.node_start(target)?;
        // The calendar date of `start`, computed once for every calendar stage on the path.
        let mut civil = None;
        let held_index = match held.node.depth {
            0 => 0,
            d => self.stage(d)?.index_with(start, &mut civil),
        };
        if held.node.depth > target.depth || held_index != held.node.index {
            return Err(Error::NotDescendant);
        }
        if held.node.depth == target.depth {
            return Ok(held.clone());
        }
        // Two buffers, swapped level by level; the first level reads the held secret in place.
        let mut secret = Secret::zero();
        let mut next = Secret::zero();
        let mut info = [0u8; NODE_INFO_LEN];
        info[..NODE_LABEL.len()].copy_from_slice(NODE_LABEL);
        for depth in held.node.depth + 1..=target.depth {
            let stage = self.stage(depth)?;
            let index = stage.index_with(start, &mut civil);
            let at = NODE_LABEL.len();
            info[at] = depth;
            info[at + 1] = stage.code();
            info[at + 2..at + 6].copy_from_slice(&stage.param().to_be_bytes());
            info[at + 6..].copy_from_slice(&index.to_be_bytes());
            let prk = if depth == held.node.depth + 1 {
                held.secret.expose()
            } else {
                secret.expose()
            };
            crypto.hkdf_expand(prk, &[&info], next.expose_mut())?;
            core::mem::swap(&mut secret, &mut next);
        }
        Ok(NodeSecret {
            node: target,
            secret,
        })
    }

    /// The raw AEAD key bytes of `leaf` for `suite`: `HKDF-Expand(leaf secret, "custos/v1/key" ‖ suite, 32)`.
    pub fn leaf_key_bytes<C: Crypto>(
        &self,
        crypto: &C,
        held: &NodeSecret,
        leaf: u32,
        suite: crate::Suite,
    ) -> Result<Secret, Error> {
        if !suite.is_known() {
            return Err(Error::UnsupportedSuite(suite.code()));
        }
        let leaf_secret = self.derive(crypto, held, self.leaf_node(leaf))?;
        let mut key = Secret::zero();
        crypto.hkdf_expand(
            leaf_secret.secret.expose(),
            &[KEY_LABEL, &[suite.code()]],
            key.expose_mut(),
        )?;
        Ok(key)
    }

    /// The AEAD key of `leaf` for `suite`, ready to seal and open records of this device and epoch.
    pub fn leaf_key<C: Crypto>(
        &self,
        crypto: &C,
        held: &NodeSecret,
        leaf: u32,
        suite: crate::Suite,
    ) -> Result<crate::LeafKey<C>, Error> {
        let key = self.leaf_key_bytes(crypto, held, leaf, suite)?;
        Ok(crate::LeafKey::new(
            crypto.aead_key(suite, &key)?,
            suite,
            self.device,
            self.epoch,
            leaf,
        ))
    }
}
