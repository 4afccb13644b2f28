//! The in-memory log: every perfect subtree's hash, level by level.

use alloc::vec::Vec;

use super::{LogError, NodeSource, Proof, leaf_hash, node_hash};

/// An append-only Merkle tree in memory. It keeps the hash of every perfect subtree, level by level (level 0: the
/// leaf hashes; entry `k` of level `l`: the hash of leaves `[k·2^l, (k+1)·2^l)`), about two hashes per leaf, so
/// the root and the proofs of any past size cost O(log n) hashes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tree {
    levels: Vec<Vec<[u8; 32]>>,
}

impl Tree {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// The number of leaves.
    pub fn size(&self) -> u64 {
        self.levels.first().map_or(0, |l| l.len() as u64)
    }

    /// Appends an entry (hashed as a leaf) and returns its index.
    pub fn append(&mut self, entry: &[u8]) -> u64 {
        self.append_hash(leaf_hash(entry))
    }

    /// Appends a leaf by its leaf hash ([`leaf_hash`] of the entry) and returns its index.
    pub fn append_hash(&mut self, hash: [u8; 32]) -> u64 {
        let index = self.size();
        let mut carry = hash;
        let mut level = 0;
        loop {
            if self.levels.len() == level {
                self.levels.push(Vec::new());
            }
            let row = &mut self.levels[level];
            row.push(carry);
            let n = row.len();
            // A level's new entry completes a parent whenever it is a right child (its index is odd).
            if !n.is_multiple_of(2) {
                return index;
            }
            carry = node_hash(&row[n - 2], &row[n - 1]);
            level += 1;
        }
    }

    /// The root hash of the first `size` leaves.
    pub fn root(&self, size: u64) -> Result<[u8; 32], LogError> {
        super::root(self, size)
    }

    /// The inclusion proof of leaf `index` in the first `size` leaves.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Proof, LogError> {
        super::inclusion_proof(self, index, size)
    }

    /// The consistency proof from the first `size1` leaves to the first `size2`.
    pub fn consistency_proof(&self, size1: u64, size2: u64) -> Result<Proof, LogError> {
        super::consistency_proof(self, size1, size2)
    }
}

impl NodeSource for Tree {
    fn size(&self) -> u64 {
        Tree::size(self)
    }

    fn node(&self, level: u8, index: u64) -> Option<[u8; 32]> {
        let row = self.levels.get(usize::from(level))?;
        row.get(usize::try_from(index).ok()?).copied()
    }
}
