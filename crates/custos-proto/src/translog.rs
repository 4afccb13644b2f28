//! The transparency log core: an append-only Merkle tree hashed as in RFC 9162 §2.1 (the hashing of RFC 6962),
//! proofs that an entry is in the log (inclusion) and that a later log extends an earlier one (consistency), and
//! signed checkpoints of the tree in the C2SP `tlog-checkpoint` format. docs/registry.md gives the formats and the
//! vectors.
//!
//! The identity registry appends every identity, endorsement and status it holds to such a log; a client (a device
//! too: it checks that a firmware's code identity is in the log before it installs it) verifies a checkpoint
//! signed by the registry's key, an inclusion proof of the entry it was shown, and a consistency proof from the
//! last checkpoint it trusted, so that no registry can show two clients two histories or rewrite its past without
//! being caught.
//!
//! - Hashing: [`leaf_hash`], [`node_hash`], [`EMPTY_ROOT`]. SHA-256 with the RFC 6962 domain separation: a leaf
//!   is `H(0x00 ‖ entry)`, an interior node `H(0x01 ‖ left ‖ right)`, the empty tree `H("")`.
//! - Verification, with no heap: [`verify_inclusion`], [`root_from_inclusion`], [`verify_consistency`]
//!   (RFC 9162 §2.1.3.2 and §2.1.4.2). A proof is a slice of 32-byte hashes, ordered from the leaf (or the old
//!   tree) up to the root.
//! - Generation, with no heap either: [`root`], [`inclusion_proof`] and [`consistency_proof`] for any size up to
//!   the log's, over any [`NodeSource`] (the hashes of perfect subtrees, by level and index), in O(log n) node
//!   reads and hashes. [`Tree`] (feature `alloc`) is the in-memory source; a store can be another.
//! - Checkpoints ([`Checkpoint`], [`VerifierKey`], [`NoteSigner`]): C2SP signed notes with Ed25519 signatures,
//!   read from bounded text without a heap.
//!
//! Everything here takes its input from the network: no input makes it panic, allocate without bound or accept a
//! proof, a checkpoint or a key that does not check out, and every refusal says which check failed
//! ([`LogError`]). It holds no secret but a [`NoteSigner`]'s key, which zeroizes on drop and is never printed.

mod checkpoint;
mod frontier;
#[cfg(all(test, feature = "alloc"))]
mod tests;
#[cfg(feature = "alloc")]
mod tree;

use core::fmt;
use core::ops::Deref;

use sha2::{Digest, Sha256};

pub use self::checkpoint::{
    Checkpoint, ED25519, MAX_NOTE_LEN, MAX_NOTE_LINES, NoteSigner, SignatureLine, VerifierKey,
    key_id,
};
pub use self::frontier::Frontier;
#[cfg(feature = "alloc")]
pub use self::tree::Tree;

/// The root hash of the empty tree: SHA-256 of the empty string (RFC 9162 §2.1.1).
pub const EMPTY_ROOT: [u8; 32] = [
    0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24,
    0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55,
];

/// The most hashes a proof can hold for a tree of up to 2⁶⁴ − 1 leaves: ⌈log₂ n⌉ ≤ 64 for an inclusion proof,
/// one more for a consistency proof.
pub const MAX_PROOF_LEN: usize = 65;

/// The hash of a log entry: `SHA-256(0x00 ‖ entry)`.
pub fn leaf_hash(entry: &[u8]) -> [u8; 32] {
    Sha256::new()
        .chain_update([0x00])
        .chain_update(entry)
        .finalize()
        .into()
}

/// The hash of an interior node: `SHA-256(0x01 ‖ left ‖ right)`.
pub fn node_hash(left: &[u8; 32], right: &[u8; 32]) -> [u8; 32] {
    Sha256::new()
        .chain_update([0x01])
        .chain_update(left)
        .chain_update(right)
        .finalize()
        .into()
}

/// Why a proof, a checkpoint or a key was refused, or a proof could not be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LogError {
    /// An inclusion proof names a leaf index that is not below the tree size.
    IndexOutOfRange {
        /// The leaf index.
        index: u64,
        /// The tree size.
        size: u64,
    },
    /// A consistency proof is asked from a larger tree to a smaller one.
    SizesReversed {
        /// The size of the tree said to be older.
        size1: u64,
        /// The size of the tree said to be newer.
        size2: u64,
    },
    /// A proof holds more or fewer hashes than its index and sizes call for.
    ProofLength {
        /// Hashes the sizes call for.
        expected: usize,
        /// Hashes the proof holds.
        got: usize,
    },
    /// The proof does not lead to the root hash given (for a consistency proof: to one of the two).
    RootMismatch,
    /// A proof or root was asked for a size larger than the log holds.
    SizeBeyondLog {
        /// The size asked for.
        size: u64,
        /// The log's size.
        log_size: u64,
    },
    /// A node source lacks a node that its size says it has (a store that lost a row).
    MissingNode {
        /// The node's level (0: leaves).
        level: u8,
        /// The node's index in its level.
        index: u64,
    },
    /// A note is longer than [`MAX_NOTE_LEN`] bytes or has more than [`MAX_NOTE_LINES`] lines.
    TooLong,
    /// Text does not have the syntax of its format.
    Syntax(Syntax),
    /// A verifier key is for a signature type other than Ed25519 ([`ED25519`]).
    UnsupportedKeyType(u8),
    /// A verifier key's Ed25519 public key is not a valid point, or has small order.
    InvalidKey,
    /// No signature in the note is by the verifier key (its name and key ID): an unknown signer.
    UnknownSigner,
    /// A signature line by the verifier key (its name and key ID) does not verify: the note is refused whole.
    BadSignature,
    /// The checkpoint's origin is not the name of the key that signs it (Custos's convention: they are equal).
    OriginMismatch,
}

/// Which syntax rule a text broke.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Syntax {
    /// Not UTF-8, or an ASCII control character other than newline.
    Encoding,
    /// A note without a blank line before its signatures, without a signature line, or without a final newline.
    NoteShape,
    /// A signature line that is not `— <key name> <base64>` with at least five bytes under the base64.
    SignatureLine,
    /// A key name that is empty or holds a Unicode space, a plus sign or a control character.
    KeyName,
    /// A verifier key that is not `<name>+<8 lowercase hex digits>+<base64>`, or whose key ID is not the hash of
    /// its name and key.
    VerifierKey,
    /// Checkpoint text with fewer than three lines, an empty line, or no final newline.
    CheckpointShape,
    /// A tree size that is not a decimal number below 2⁶⁴ without leading zeros.
    TreeSize,
    /// A root hash that is not the base64 of 32 bytes.
    RootHash,
}

impl fmt::Display for LogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::IndexOutOfRange { index, size } => {
                write!(f, "leaf index {index} is not below the tree size {size}")
            }
            Self::SizesReversed { size1, size2 } => {
                write!(
                    f,
                    "consistency asked from size {size1} to the smaller size {size2}"
                )
            }
            Self::ProofLength { expected, got } => {
                write!(f, "proof has {got} hashes, its sizes call for {expected}")
            }
            Self::RootMismatch => f.write_str("proof does not lead to the root hash given"),
            Self::SizeBeyondLog { size, log_size } => {
                write!(f, "size {size} is beyond the log's {log_size} entries")
            }
            Self::MissingNode { level, index } => {
                write!(f, "the node source lacks node {index} of level {level}")
            }
            Self::TooLong => write!(
                f,
                "note is longer than {MAX_NOTE_LEN} bytes or {MAX_NOTE_LINES} lines"
            ),
            Self::Syntax(s) => write!(f, "malformed: {s}"),
            Self::UnsupportedKeyType(t) => write!(f, "unsupported signature type {t:#04x}"),
            Self::InvalidKey => f.write_str("Ed25519 public key is invalid or of small order"),
            Self::UnknownSigner => f.write_str("no signature in the note is by the verifier key"),
            Self::BadSignature => f.write_str("a signature by the verifier key does not verify"),
            Self::OriginMismatch => f.write_str("checkpoint origin is not the signing key's name"),
        }
    }
}

impl fmt::Display for Syntax {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Encoding => "not UTF-8, or a control character other than newline",
            Self::NoteShape => "note lacks the blank line, a signature line or the final newline",
            Self::SignatureLine => "signature line is not `— <key name> <base64>`",
            Self::KeyName => {
                "key name is empty or holds a space, a plus sign or a control character"
            }
            Self::VerifierKey => {
                "verifier key is not `<name>+<key ID in hex>+<base64 key>` or its key ID is wrong"
            }
            Self::CheckpointShape => {
                "checkpoint needs three or more non-empty lines ending in newline"
            }
            Self::TreeSize => "tree size is not a decimal number below 2^64 without leading zeros",
            Self::RootHash => "root hash is not the base64 of 32 bytes",
        })
    }
}

impl core::error::Error for LogError {}

impl From<Syntax> for LogError {
    fn from(s: Syntax) -> Self {
        Self::Syntax(s)
    }
}

// ---- verification ---------------------------------------------------------------------------------------------

/// How many hashes the inclusion proof of leaf `index` in a tree of `size` leaves holds: the siblings below the
/// level where the paths to the leaf and to the last leaf part (`inner`), and the left siblings above it.
pub fn inclusion_proof_len(index: u64, size: u64) -> Result<usize, LogError> {
    if index >= size {
        return Err(LogError::IndexOutOfRange { index, size });
    }
    Ok(path_len(index, size - 1))
}

/// How many hashes the consistency proof from `size1` to `size2` leaves holds (0 when `size1` is 0 or equal to
/// `size2`).
pub fn consistency_proof_len(size1: u64, size2: u64) -> Result<usize, LogError> {
    if size1 > size2 {
        return Err(LogError::SizesReversed { size1, size2 });
    }
    if size1 == 0 || size1 == size2 {
        return Ok(0);
    }
    // The proof is the largest perfect subtree that ends at size1 (unless it is the whole old tree, which the
    // verifier knows as root1), then that subtree's inclusion path in the new tree.
    let shift = size1.trailing_zeros();
    let index = (size1 - 1) >> shift;
    Ok(path_len(index, (size2 - 1) >> shift) + usize::from(index != 0))
}

/// Hashes in the path from node `index` to the root of a tree whose last node on that level is `last`.
fn path_len(index: u64, last: u64) -> usize {
    let inner = 64 - (index ^ last).leading_zeros();
    let border = index.checked_shr(inner).unwrap_or(0).count_ones();
    (inner + border) as usize
}

/// The root hash an inclusion proof leads to from the hash of leaf `index` in a tree of `size` leaves
/// (RFC 9162 §2.1.3.2). Compare it with a root you trust, or use [`verify_inclusion`].
pub fn root_from_inclusion(
    leaf_hash: &[u8; 32],
    index: u64,
    size: u64,
    proof: &[[u8; 32]],
) -> Result<[u8; 32], LogError> {
    let expected = inclusion_proof_len(index, size)?;
    if proof.len() != expected {
        return Err(LogError::ProofLength {
            expected,
            got: proof.len(),
        });
    }
    let (mut fnode, mut snode) = (index, size - 1);
    let mut r = *leaf_hash;
    for p in proof {
        if snode == 0 {
            // Unreachable once the length is right; kept so the loop stands on its own, as in the RFC.
            return Err(LogError::ProofLength {
                expected,
                got: proof.len(),
            });
        }
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(LogError::ProofLength {
            expected,
            got: proof.len(),
        });
    }
    Ok(r)
}

/// Verifies that the leaf whose hash is `leaf_hash` is entry `index` of the tree of `size` leaves whose root is
/// `root` (RFC 9162 §2.1.3.2). `proof` is the audit path, from the leaf's sibling up.
pub fn verify_inclusion(
    leaf_hash: &[u8; 32],
    index: u64,
    size: u64,
    proof: &[[u8; 32]],
    root: &[u8; 32],
) -> Result<(), LogError> {
    if root_from_inclusion(leaf_hash, index, size, proof)? == *root {
        Ok(())
    } else {
        Err(LogError::RootMismatch)
    }
}

/// Verifies that the tree of `size2` leaves with root `root2` extends the tree of `size1` leaves with root `root1`
/// (RFC 9162 §2.1.4.2). Equal sizes need an empty proof and equal roots; from the empty tree (`size1` 0), an empty
/// proof and `root1` = [`EMPTY_ROOT`].
pub fn verify_consistency(
    size1: u64,
    size2: u64,
    proof: &[[u8; 32]],
    root1: &[u8; 32],
    root2: &[u8; 32],
) -> Result<(), LogError> {
    let expected = consistency_proof_len(size1, size2)?;
    if proof.len() != expected {
        return Err(LogError::ProofLength {
            expected,
            got: proof.len(),
        });
    }
    // Every tree extends the empty one, whose root is fixed; equal sizes must have equal roots.
    let trivial = if size1 == 0 {
        Some(*root1 == EMPTY_ROOT && (size2 != 0 || root2 == root1))
    } else if size1 == size2 {
        Some(root1 == root2)
    } else {
        None
    };
    match trivial {
        Some(true) => return Ok(()),
        Some(false) => return Err(LogError::RootMismatch),
        None => {}
    }
    // RFC 9162 §2.1.4.2, steps 2 to 7. When size1 is a power of two the old root is the path's first node.
    let (first, rest) = if size1.is_power_of_two() {
        (root1, proof)
    } else {
        match proof.split_first() {
            Some(split) => split,
            None => return Err(LogError::ProofLength { expected, got: 0 }),
        }
    };
    let (mut fnode, mut snode) = (size1 - 1, size2 - 1);
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    let (mut fr, mut sr) = (*first, *first);
    for c in rest {
        if snode == 0 {
            return Err(LogError::ProofLength {
                expected,
                got: proof.len(),
            });
        }
        if fnode & 1 == 1 || fnode == snode {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(LogError::ProofLength {
            expected,
            got: proof.len(),
        });
    }
    if fr == *root1 && sr == *root2 {
        Ok(())
    } else {
        Err(LogError::RootMismatch)
    }
}

// ---- generation -----------------------------------------------------------------------------------------------

/// Where the proof algorithms read node hashes: the hashes of the perfect subtrees of a log.
///
/// Node `(level, index)` is the root of the perfect subtree over leaves `[index·2^level, (index+1)·2^level)`; level 0
/// holds the leaf hashes. A source has every node whose leaves are all below [`size`](NodeSource::size), and is
/// append-only: a node, once there, never changes. From these, [`root`], [`inclusion_proof`] and
/// [`consistency_proof`] serve any past size in O(log n) reads and hashes. [`Tree`] keeps them in memory; a store
/// can keep them as rows `(level, index) → hash`.
pub trait NodeSource {
    /// The number of leaves in the log.
    fn size(&self) -> u64;
    /// The hash of node `(level, index)`, or `None` if the source does not have it.
    fn node(&self, level: u8, index: u64) -> Option<[u8; 32]>;
}

/// A proof as generated: up to [`MAX_PROOF_LEN`] hashes, kept inline (no heap). It derefs to `[[u8; 32]]`, the
/// form the verifiers take.
#[derive(Clone, PartialEq, Eq)]
pub struct Proof {
    len: usize,
    hashes: [[u8; 32]; MAX_PROOF_LEN],
}

impl Proof {
    fn new() -> Self {
        Self {
            len: 0,
            hashes: [[0; 32]; MAX_PROOF_LEN],
        }
    }

    fn push(&mut self, hash: [u8; 32]) -> Result<(), LogError> {
        // The callers push at most the length `inclusion_proof_len` / `consistency_proof_len` give, which is at
        // most MAX_PROOF_LEN; a node source cannot make them push more.
        let slot = self.hashes.get_mut(self.len).ok_or(LogError::ProofLength {
            expected: MAX_PROOF_LEN,
            got: self.len + 1,
        })?;
        *slot = hash;
        self.len += 1;
        Ok(())
    }

    /// The hashes, from the leaf (or the old tree) up.
    pub fn as_slice(&self) -> &[[u8; 32]] {
        &self.hashes[..self.len]
    }
}

impl Deref for Proof {
    type Target = [[u8; 32]];
    fn deref(&self) -> &[[u8; 32]] {
        self.as_slice()
    }
}

impl fmt::Debug for Proof {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Hex<'a>(&'a [u8; 32]);
        impl fmt::Debug for Hex<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
            }
        }
        f.debug_list()
            .entries(self.as_slice().iter().map(Hex))
            .finish()
    }
}

fn read<S: NodeSource + ?Sized>(source: &S, level: u32, index: u64) -> Result<[u8; 32], LogError> {
    // Levels are below 64: every caller derives them from a u64 leaf count.
    let level = u8::try_from(level).map_err(|_| LogError::MissingNode {
        level: u8::MAX,
        index,
    })?;
    source
        .node(level, index)
        .ok_or(LogError::MissingNode { level, index })
}

fn check_size<S: NodeSource + ?Sized>(source: &S, size: u64) -> Result<(), LogError> {
    let log_size = source.size();
    if size > log_size {
        return Err(LogError::SizeBeyondLog { size, log_size });
    }
    Ok(())
}

/// The Merkle tree hash of leaves `[start, end)`, where `start` is a multiple of the largest power of two not above
/// `end − start`: the range splits into perfect subtrees of decreasing size, which are hashed together from the
/// right, as MTH splits at the largest power of two below the count.
fn range_hash<S: NodeSource + ?Sized>(
    source: &S,
    start: u64,
    end: u64,
) -> Result<[u8; 32], LogError> {
    let mut rest = end - start;
    let mut acc: Option<[u8; 32]> = None;
    while rest != 0 {
        let level = rest.trailing_zeros();
        let piece = start + (rest - (1 << level));
        debug_assert_eq!(piece & ((1 << level) - 1), 0, "range not aligned");
        let node = read(source, level, piece >> level)?;
        acc = Some(match acc {
            None => node,
            Some(right) => node_hash(&node, &right),
        });
        rest -= 1 << level;
    }
    Ok(acc.unwrap_or(EMPTY_ROOT))
}

/// Appends to `proof` the path from the perfect node `(level, index)` to the root of the tree of `size` leaves: the
/// siblings up to the level where the paths to this node and to the last leaf part (the last of them may be a
/// partial subtree, hashed from its perfect pieces), then the left siblings above.
fn path<S: NodeSource + ?Sized>(
    source: &S,
    proof: &mut Proof,
    level: u32,
    index: u64,
    size: u64,
) -> Result<(), LogError> {
    let last = (size - 1) >> level;
    let inner = 64 - (index ^ last).leading_zeros();
    for j in 0..inner {
        let l = level + j;
        let sibling = (index >> j) ^ 1;
        // Below the parting level both siblings lie inside the tree; the right one at the parting level starts
        // before `size` but may end after it.
        let start = sibling << l;
        if (size - start) >> l != 0 {
            proof.push(read(source, l, sibling)?)?;
        } else {
            proof.push(range_hash(source, start, size)?)?;
        }
    }
    let mut up = index.checked_shr(inner).unwrap_or(0);
    let mut l = level + inner;
    while up != 0 {
        if up & 1 == 1 {
            proof.push(read(source, l, up ^ 1)?)?;
        }
        up >>= 1;
        l += 1;
    }
    Ok(())
}

/// The root hash of the log's first `size` leaves ([`EMPTY_ROOT`] for 0).
pub fn root<S: NodeSource + ?Sized>(source: &S, size: u64) -> Result<[u8; 32], LogError> {
    check_size(source, size)?;
    range_hash(source, 0, size)
}

/// The inclusion proof of leaf `index` in the log's first `size` leaves (RFC 9162 §2.1.3.1, PATH).
pub fn inclusion_proof<S: NodeSource + ?Sized>(
    source: &S,
    index: u64,
    size: u64,
) -> Result<Proof, LogError> {
    check_size(source, size)?;
    if index >= size {
        return Err(LogError::IndexOutOfRange { index, size });
    }
    let mut proof = Proof::new();
    path(source, &mut proof, 0, index, size)?;
    Ok(proof)
}

/// The consistency proof from the log's first `size1` leaves to its first `size2` (RFC 9162 §2.1.4.1, PROOF).
pub fn consistency_proof<S: NodeSource + ?Sized>(
    source: &S,
    size1: u64,
    size2: u64,
) -> Result<Proof, LogError> {
    if size1 > size2 {
        return Err(LogError::SizesReversed { size1, size2 });
    }
    check_size(source, size2)?;
    let mut proof = Proof::new();
    if size1 == 0 || size1 == size2 {
        return Ok(proof);
    }
    let shift = size1.trailing_zeros();
    let index = (size1 - 1) >> shift;
    if index != 0 {
        proof.push(read(source, shift, index)?)?;
    }
    path(source, &mut proof, shift, index, size2)?;
    Ok(proof)
}
