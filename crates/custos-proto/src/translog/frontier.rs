//! The frontier of a log: the roots of the perfect subtrees that make up its first `size` leaves (one per set bit
//! of `size`, largest first), at most 64 hashes. It is all a verifier needs to extend a log it has checked by new
//! leaf hashes and compare the result with a signed root: a sync peer keeps a frontier per peer instead of the
//! peer's whole tree.

use super::{EMPTY_ROOT, LogError, node_hash};

/// A log's frontier, with no heap.
#[derive(Clone)]
pub struct Frontier {
    size: u64,
    /// `nodes[i]` is the root of the perfect subtree of height `i` if bit `i` of `size` is set.
    nodes: [[u8; 32]; 64],
}

impl core::fmt::Debug for Frontier {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Frontier")
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

// Slots of unset bits hold stale hashes: two frontiers are equal when their sizes and live subtree roots are.
impl PartialEq for Frontier {
    fn eq(&self, other: &Self) -> bool {
        self.size == other.size && self.hashes().eq(other.hashes())
    }
}

impl Eq for Frontier {}

impl Default for Frontier {
    fn default() -> Self {
        Self::new()
    }
}

impl Frontier {
    /// The frontier of the empty log.
    pub const fn new() -> Self {
        Self {
            size: 0,
            nodes: [[0; 32]; 64],
        }
    }

    /// The number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends a leaf by its leaf hash.
    pub fn append_hash(&mut self, hash: [u8; 32]) -> Result<(), LogError> {
        if self.size == u64::MAX {
            return Err(LogError::SizeBeyondLog {
                size: u64::MAX,
                log_size: u64::MAX,
            });
        }
        let mut carry = hash;
        let mut height = 0;
        // Each set low bit of the old size is a left sibling waiting for this leaf's subtree.
        while self.size & (1 << height) != 0 {
            carry = node_hash(&self.nodes[height], &carry);
            height += 1;
        }
        self.nodes[height] = carry;
        self.size += 1;
        Ok(())
    }

    /// The root hash (RFC 9162 §2.1.1): the subtrees folded from the smallest up.
    pub fn root(&self) -> [u8; 32] {
        let mut acc: Option<[u8; 32]> = None;
        for height in 0..64 {
            if self.size & (1 << height) != 0 {
                acc = Some(match acc {
                    None => self.nodes[height],
                    Some(right) => node_hash(&self.nodes[height], &right),
                });
            }
        }
        acc.unwrap_or(EMPTY_ROOT)
    }

    /// The subtree roots, largest first: what is stored to resume.
    pub fn hashes(&self) -> impl Iterator<Item = [u8; 32]> + '_ {
        (0..64)
            .rev()
            .filter(|h| self.size & (1 << h) != 0)
            .map(|h| self.nodes[h])
    }

    /// The frontier of a log of `size` leaves from its subtree roots, largest first (as [`Frontier::hashes`]
    /// gives them); `None` if their number is not the number of set bits of `size`.
    pub fn from_hashes(size: u64, hashes: &[[u8; 32]]) -> Option<Self> {
        if hashes.len() != size.count_ones() as usize {
            return None;
        }
        let mut f = Self::new();
        f.size = size;
        let mut it = hashes.iter();
        for h in (0..64).rev() {
            if size & (1 << h) != 0 {
                f.nodes[h] = *it.next()?;
            }
        }
        Some(f)
    }
}
