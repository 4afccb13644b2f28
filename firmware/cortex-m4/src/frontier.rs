//! The device's frontier in a fixed array: the node secrets that cover `[now, epoch end)` and nothing earlier.
//!
//! The agent on Linux keeps the same secrets in a `Vec` (`custos-device`, `keys.json`); here they live in
//! [`CAPACITY`] slots on the stack. Moving forward builds the next frontier from the current one with
//! [`TreeSpec::frontier`] and then drops the current one, whose secrets zeroize.

use custos_proto::{Crypto, Error, NodeId, NodeSecret, Secret, TreeSpec, UnixTime};

/// The most nodes a frontier holds. Under `month/week/day` over one year the largest is 21 (6 days left in the
/// week, 4 weeks left in the month, 11 months), reached on the 2nd of January; deeper or longer schedules need more,
/// and [`Frontier::advance`] refuses rather than drops a node.
pub const CAPACITY: usize = 24;

/// The secrets the device holds to seal from now on.
pub struct Frontier {
    nodes: [NodeSecret; CAPACITY],
    len: usize,
}

impl Frontier {
    fn empty() -> Self {
        Self {
            nodes: core::array::from_fn(|_| {
                NodeSecret::new(NodeId::ROOT, Secret::from_bytes([0; 32]))
            }),
            len: 0,
        }
    }

    /// What the keeper provisions before the epoch starts: the DPK alone, the root of the tree.
    pub fn provisioned(dpk: Secret) -> Self {
        let mut f = Self::empty();
        f.nodes[0] = NodeSecret::new(NodeId::ROOT, dpk);
        f.len = 1;
        f
    }

    /// The secrets held.
    pub fn held(&self) -> &[NodeSecret] {
        &self.nodes[..self.len]
    }

    /// Moves the frontier to `now`: afterwards the device holds nothing that opens a record of a leaf before
    /// `now`'s. Fails with [`Error::NotDescendant`] for a time before the current frontier.
    pub fn advance<C: Crypto>(
        &mut self,
        crypto: &C,
        spec: &TreeSpec,
        now: UnixTime,
    ) -> Result<(), Error> {
        let mut next = Self::empty();
        for node in spec.frontier(crypto, self.held(), now)? {
            let slot = next.nodes.get_mut(next.len).ok_or(Error::BufferTooSmall {
                needed: next.len + 1,
            })?;
            *slot = node?;
            next.len += 1;
        }
        // The old secrets zeroize as they drop here.
        *self = next;
        Ok(())
    }

    /// A check value over the nodes and their secrets, so the host can compare the whole frontier without the
    /// firmware printing a secret: `c_0 = 0^32`, `c_i = HMAC-SHA256(c_{i-1}, "custos/fw/frontier" ‖ depth (1) ‖
    /// index (8) ‖ secret)`, first 16 bytes of the last.
    pub fn check<C: Crypto>(&self, crypto: &C) -> [u8; 16] {
        let mut acc = [0u8; 32];
        for n in self.held() {
            let id = n.node();
            acc = crypto.hmac_sha256(
                &acc,
                &[
                    b"custos/fw/frontier",
                    &[id.depth],
                    &id.index.to_be_bytes(),
                    n.secret().expose(),
                ],
            );
        }
        let mut out = [0u8; 16];
        out.copy_from_slice(&acc[..16]);
        out
    }
}
