//! Known answers from independent implementations, the published vectors of docs/registry.md, and properties
//! checked against a brute-force transcription of RFC 9162's recursive definitions.
//!
//! Sources: the RFC 6962 test tree of transparency-dev/merkle (`testonly/constants.go`: leaves, node hashes and
//! roots; `cmd/proofgen/main.go`: inclusion and consistency proofs), golang.org/x/mod/sumdb/note's `note_test.go`
//! (keys, a signed note, and what `Open` refuses), and the example of the C2SP `signed-note` specification.

use std::string::{String, ToString};
use std::sync::OnceLock;
use std::vec::Vec;
use std::{format, vec};

use proptest::prelude::*;

use super::*;
use crate::Secret;

/// Base64 (standard, padded), through the same crate (built without its `alloc` feature here).
fn b64(s: &str) -> Vec<u8> {
    use base64::Engine;
    let mut out = vec![0; s.len() / 4 * 3];
    let n = base64::engine::general_purpose::STANDARD
        .decode_slice(s, &mut out)
        .unwrap();
    out.truncate(n);
    out
}

fn h(s: &str) -> [u8; 32] {
    hex::decode(s).unwrap().try_into().unwrap()
}

// ---- the RFC 6962 test tree (transparency-dev/merkle testonly/constants.go) ------------------------------------

const LEAVES: [&str; 8] = [
    "",
    "00",
    "10",
    "2021",
    "3031",
    "40414243",
    "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
];

/// Node hashes by level and index.
const NODES: [&[&str]; 4] = [
    &[
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
        "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
        "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
        "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1",
    ],
    &[
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
    ],
    &[
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ],
    &["5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"],
];

/// Roots by size, 0 to 8.
const ROOTS: [&str; 9] = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];

/// Inclusion proofs (cmd/proofgen, whose leaf numbers are 1-based): (index, size, proof).
const INCLUSION: [(u64, u64, &[&str]); 5] = [
    (0, 1, &[]),
    (
        0,
        8,
        &[
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        &[
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        3,
        &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
    ),
    (
        1,
        5,
        &[
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
];

/// Consistency proofs (cmd/proofgen): (size1, size2, proof).
const CONSISTENCY: [(u64, u64, &[&str]); 5] = [
    (1, 1, &[]),
    (
        1,
        8,
        &[
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        &[
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        &[
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (
        6,
        7,
        &[
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
];

fn test_tree() -> Tree {
    let mut t = Tree::new();
    for (i, leaf) in LEAVES.iter().enumerate() {
        assert_eq!(t.append(&hex::decode(leaf).unwrap()), i as u64);
    }
    t
}

fn hashes(list: &[&str]) -> Vec<[u8; 32]> {
    list.iter().map(|s| h(s)).collect()
}

#[test]
fn hashing_matches_rfc6962() {
    use sha2::{Digest, Sha256};
    assert_eq!(EMPTY_ROOT, <[u8; 32]>::from(Sha256::digest(b"")));
    // rfc6962_test.go: the empty leaf, and a leaf of "L123456".
    assert_eq!(leaf_hash(b""), h(NODES[0][0]));
    assert_eq!(
        leaf_hash(b"L123456"),
        h("395aa064aa4c29f7010acfe3f25db9485bbd4b91897b6ad7ad547639252b4d56")
    );
    assert_ne!(leaf_hash(b""), EMPTY_ROOT);
    for (i, leaf) in LEAVES.iter().enumerate() {
        assert_eq!(leaf_hash(&hex::decode(leaf).unwrap()), h(NODES[0][i]));
    }
    for level in 1..NODES.len() {
        for (i, node) in NODES[level].iter().enumerate() {
            let (l, r) = (h(NODES[level - 1][2 * i]), h(NODES[level - 1][2 * i + 1]));
            assert_eq!(node_hash(&l, &r), h(node), "level {level} node {i}");
        }
    }
}

#[test]
fn tree_keeps_the_perfect_subtrees() {
    let t = test_tree();
    assert_eq!(t.size(), 8);
    for (level, row) in NODES.iter().enumerate() {
        for (i, node) in row.iter().enumerate() {
            assert_eq!(t.node(level as u8, i as u64), Some(h(node)));
        }
        assert_eq!(t.node(level as u8, row.len() as u64), None);
    }
    assert_eq!(t.node(4, 0), None);
    assert_eq!(t.node(255, 0), None);
    for (size, want) in ROOTS.iter().enumerate() {
        assert_eq!(t.root(size as u64).unwrap(), h(want), "root of size {size}");
    }
    assert_eq!(
        t.root(9),
        Err(LogError::SizeBeyondLog {
            size: 9,
            log_size: 8
        })
    );
    assert_eq!(Tree::new().root(0).unwrap(), EMPTY_ROOT);
}

#[test]
fn inclusion_vectors() {
    let t = test_tree();
    for (index, size, proof) in INCLUSION {
        let proof = hashes(proof);
        assert_eq!(
            t.inclusion_proof(index, size).unwrap().as_slice(),
            &proof[..]
        );
        let leaf = h(NODES[0][index as usize]);
        verify_inclusion(&leaf, index, size, &proof, &h(ROOTS[size as usize])).unwrap();
        assert_eq!(
            root_from_inclusion(&leaf, index, size, &proof).unwrap(),
            h(ROOTS[size as usize])
        );
    }
    // Every leaf of every size of the test tree.
    for size in 1..=8u64 {
        for index in 0..size {
            let proof = t.inclusion_proof(index, size).unwrap();
            let leaf = h(NODES[0][index as usize]);
            verify_inclusion(&leaf, index, size, &proof, &h(ROOTS[size as usize])).unwrap();
        }
    }
}

#[test]
fn consistency_vectors() {
    let t = test_tree();
    for (size1, size2, proof) in CONSISTENCY {
        let proof = hashes(proof);
        assert_eq!(
            t.consistency_proof(size1, size2).unwrap().as_slice(),
            &proof[..]
        );
        verify_consistency(
            size1,
            size2,
            &proof,
            &h(ROOTS[size1 as usize]),
            &h(ROOTS[size2 as usize]),
        )
        .unwrap();
    }
    for size2 in 0..=8u64 {
        for size1 in 0..=size2 {
            let proof = t.consistency_proof(size1, size2).unwrap();
            let (r1, r2) = (h(ROOTS[size1 as usize]), h(ROOTS[size2 as usize]));
            verify_consistency(size1, size2, &proof, &r1, &r2).unwrap();
        }
    }
}

#[test]
fn verifiers_refuse_what_they_must() {
    let t = test_tree();
    let (leaf, root8, root7) = (h(NODES[0][5]), h(ROOTS[8]), h(ROOTS[7]));
    let proof = t.inclusion_proof(5, 8).unwrap();
    assert_eq!(
        verify_inclusion(&leaf, 8, 8, &proof, &root8),
        Err(LogError::IndexOutOfRange { index: 8, size: 8 })
    );
    assert_eq!(
        verify_inclusion(&leaf, 0, 0, &[], &EMPTY_ROOT),
        Err(LogError::IndexOutOfRange { index: 0, size: 0 })
    );
    assert_eq!(
        verify_inclusion(&leaf, 5, 8, &proof[..2], &root8),
        Err(LogError::ProofLength {
            expected: 3,
            got: 2
        })
    );
    let mut longer = proof.to_vec();
    longer.push(root8);
    assert_eq!(
        verify_inclusion(&leaf, 5, 8, &longer, &root8),
        Err(LogError::ProofLength {
            expected: 3,
            got: 4
        })
    );
    assert_eq!(
        verify_inclusion(&leaf, 5, 8, &proof, &root7),
        Err(LogError::RootMismatch)
    );
    assert_eq!(
        verify_inclusion(&leaf, 4, 8, &proof, &root8),
        Err(LogError::RootMismatch)
    );
    // The transparency-dev probes: a leaf of size 1 must equal the root, and u64::MAX sizes do not overflow.
    verify_inclusion(&leaf, 0, 1, &[], &leaf).unwrap();
    assert_eq!(
        verify_inclusion(&leaf, u64::MAX - 1, u64::MAX, &[], &leaf),
        Err(LogError::ProofLength {
            expected: 63,
            got: 0
        })
    );
    assert_eq!(inclusion_proof_len(u64::MAX - 1, u64::MAX), Ok(63));
    assert_eq!(inclusion_proof_len(0, u64::MAX), Ok(64));

    let proof = t.consistency_proof(6, 8).unwrap();
    let root6 = h(ROOTS[6]);
    assert_eq!(
        verify_consistency(8, 6, &proof, &root8, &root6),
        Err(LogError::SizesReversed { size1: 8, size2: 6 })
    );
    assert_eq!(
        verify_consistency(6, 8, &proof[1..], &root6, &root8),
        Err(LogError::ProofLength {
            expected: 3,
            got: 2
        })
    );
    assert_eq!(
        verify_consistency(6, 8, &proof, &root7, &root8),
        Err(LogError::RootMismatch)
    );
    assert_eq!(
        verify_consistency(6, 8, &proof, &root6, &root7),
        Err(LogError::RootMismatch)
    );
    assert_eq!(
        verify_consistency(8, 8, &[], &root8, &root7),
        Err(LogError::RootMismatch)
    );
    assert_eq!(
        verify_consistency(8, 8, &[root8], &root8, &root8),
        Err(LogError::ProofLength {
            expected: 0,
            got: 1
        })
    );
    verify_consistency(0, 8, &[], &EMPTY_ROOT, &root8).unwrap();
    assert_eq!(
        verify_consistency(0, 8, &[], &root8, &root8),
        Err(LogError::RootMismatch)
    );
    assert_eq!(
        verify_consistency(0, 8, &[root8], &EMPTY_ROOT, &root8),
        Err(LogError::ProofLength {
            expected: 0,
            got: 1
        })
    );
    verify_consistency(0, 0, &[], &EMPTY_ROOT, &EMPTY_ROOT).unwrap();
    assert_eq!(
        verify_consistency(0, 0, &[], &root8, &root8),
        Err(LogError::RootMismatch)
    );
    assert_eq!(
        verify_consistency(0, 0, &[], &EMPTY_ROOT, &root8),
        Err(LogError::RootMismatch)
    );
    assert_eq!(consistency_proof_len(u64::MAX - 2, u64::MAX), Ok(65));
    assert_eq!(
        verify_consistency(u64::MAX - 2, u64::MAX, &[], &root8, &root8),
        Err(LogError::ProofLength {
            expected: 65,
            got: 0
        })
    );
    // Generation refuses what the log does not have.
    assert_eq!(
        t.inclusion_proof(8, 8),
        Err(LogError::IndexOutOfRange { index: 8, size: 8 })
    );
    assert_eq!(
        t.inclusion_proof(0, 9),
        Err(LogError::SizeBeyondLog {
            size: 9,
            log_size: 8
        })
    );
    assert_eq!(
        t.consistency_proof(5, 4),
        Err(LogError::SizesReversed { size1: 5, size2: 4 })
    );
    assert_eq!(
        t.consistency_proof(4, 9),
        Err(LogError::SizeBeyondLog {
            size: 9,
            log_size: 8
        })
    );
}

/// A node source that claims more than it has: generation reports the missing node instead of panicking.
#[test]
fn a_source_that_lost_a_node() {
    struct Lossy(Tree);
    impl NodeSource for Lossy {
        fn size(&self) -> u64 {
            self.0.size()
        }
        fn node(&self, level: u8, index: u64) -> Option<[u8; 32]> {
            if (level, index) == (1, 1) {
                None
            } else {
                self.0.node(level, index)
            }
        }
    }
    let s = Lossy(test_tree());
    assert_eq!(root(&s, 8).unwrap(), h(ROOTS[8]));
    assert_eq!(root(&s, 7).unwrap(), h(ROOTS[7]));
    assert_eq!(
        consistency_proof(&s, 2, 4),
        Err(LogError::MissingNode { level: 1, index: 1 })
    );
    assert_eq!(
        inclusion_proof(&s, 0, 8),
        Err(LogError::MissingNode { level: 1, index: 1 })
    );
    struct Liar;
    impl NodeSource for Liar {
        fn size(&self) -> u64 {
            u64::MAX
        }
        fn node(&self, _: u8, _: u64) -> Option<[u8; 32]> {
            Some([7; 32])
        }
    }
    // The largest sizes: no overflow, and the proofs have the lengths the verifiers expect (up to 65 hashes).
    for (index, size) in [
        (u64::MAX - 1, u64::MAX),
        (0, u64::MAX),
        (1 << 63, u64::MAX),
        (u64::MAX - 2, u64::MAX - 1),
    ] {
        let p = inclusion_proof(&Liar, index, size).unwrap();
        assert_eq!(p.len(), inclusion_proof_len(index, size).unwrap());
    }
    for (size1, size2) in [
        (u64::MAX - 2, u64::MAX),
        (u64::MAX - 1, u64::MAX),
        (1 << 63, u64::MAX),
        (1, u64::MAX),
    ] {
        let p = consistency_proof(&Liar, size1, size2).unwrap();
        assert_eq!(p.len(), consistency_proof_len(size1, size2).unwrap());
    }
    assert_eq!(
        consistency_proof(&Liar, u64::MAX - 2, u64::MAX)
            .unwrap()
            .len(),
        MAX_PROOF_LEN
    );
    root(&Liar, u64::MAX).unwrap();
}

// ---- brute force: RFC 9162 §2.1.1, §2.1.3.1 and §2.1.4.1 as written ---------------------------------------------

fn split(n: usize) -> usize {
    1 << (usize::BITS - 1 - (n - 1).leading_zeros())
}

fn mth(d: &[[u8; 32]]) -> [u8; 32] {
    match d.len() {
        0 => EMPTY_ROOT,
        1 => d[0],
        n => {
            let k = split(n);
            node_hash(&mth(&d[..k]), &mth(&d[k..]))
        }
    }
}

fn ref_path(m: usize, d: &[[u8; 32]]) -> Vec<[u8; 32]> {
    let n = d.len();
    if n == 1 {
        return vec![];
    }
    let k = split(n);
    let (mut p, other) = if m < k {
        (ref_path(m, &d[..k]), mth(&d[k..]))
    } else {
        (ref_path(m - k, &d[k..]), mth(&d[..k]))
    };
    p.push(other);
    p
}

fn ref_subproof(m: usize, d: &[[u8; 32]], b: bool) -> Vec<[u8; 32]> {
    let n = d.len();
    if m == n {
        return if b { vec![] } else { vec![mth(d)] };
    }
    let k = split(n);
    let (mut p, other) = if m <= k {
        (ref_subproof(m, &d[..k], b), mth(&d[k..]))
    } else {
        (ref_subproof(m - k, &d[k..], false), mth(&d[..k]))
    };
    p.push(other);
    p
}

const BIG: u64 = 3000;

/// A log of BIG distinct entries, its leaf hashes, and its roots by size (computed another way).
type Big = (Tree, Vec<[u8; 32]>, Vec<[u8; 32]>);

fn big() -> &'static Big {
    static BIG_TREE: OnceLock<Big> = OnceLock::new();
    BIG_TREE.get_or_init(|| {
        let mut t = Tree::new();
        let leaves: Vec<[u8; 32]> = (0..BIG as u32)
            .map(|i| leaf_hash(&i.to_be_bytes()))
            .collect();
        for l in &leaves {
            t.append_hash(*l);
        }
        // Roots by size from a compact range (the perfect subtrees along the right edge, merged as leaves come):
        // another algorithm than the tree's, tied to the RFC's definition by `small_trees_against_brute_force`.
        let mut roots = vec![EMPTY_ROOT];
        let mut stack: Vec<(u64, [u8; 32])> = vec![];
        for l in &leaves {
            stack.push((1, *l));
            while stack.len() >= 2 && stack[stack.len() - 1].0 == stack[stack.len() - 2].0 {
                let (n, right) = stack.pop().unwrap();
                let (_, left) = stack.pop().unwrap();
                stack.push((2 * n, node_hash(&left, &right)));
            }
            let mut acc = stack[stack.len() - 1].1;
            for (_, left) in stack.iter().rev().skip(1) {
                acc = node_hash(left, &acc);
            }
            roots.push(acc);
        }
        (t, leaves, roots)
    })
}

fn ceil_log2(n: u64) -> usize {
    if n <= 1 {
        0
    } else {
        (64 - (n - 1).leading_zeros()) as usize
    }
}

#[test]
fn small_trees_against_brute_force() {
    let (t, leaves, roots) = big();
    for n in 0..=70usize {
        assert_eq!(mth(&leaves[..n]), roots[n]);
        assert_eq!(t.root(n as u64).unwrap(), roots[n]);
        for m in 0..n {
            let p = t.inclusion_proof(m as u64, n as u64).unwrap();
            assert_eq!(
                p.as_slice(),
                &ref_path(m, &leaves[..n])[..],
                "PATH({m}, {n})"
            );
            verify_inclusion(&leaves[m], m as u64, n as u64, &p, &roots[n]).unwrap();
        }
        for m in 1..n {
            let p = t.consistency_proof(m as u64, n as u64).unwrap();
            assert_eq!(
                p.as_slice(),
                &ref_subproof(m, &leaves[..n], true)[..],
                "PROOF({m}, {n})"
            );
            verify_consistency(m as u64, n as u64, &p, &roots[m], &roots[n]).unwrap();
        }
    }
}

fn flip(proof: &[[u8; 32]], which: usize, bit: u8) -> Vec<[u8; 32]> {
    let mut p = proof.to_vec();
    let i = which % p.len();
    p[i][usize::from(bit / 8) % 32] ^= 1 << (bit % 8);
    p
}

#[test]
fn the_frontier_gives_every_root_and_resumes_from_its_hashes() {
    let (_, leaves, roots) = big();
    let mut f = Frontier::new();
    assert_eq!(f.root(), roots[0]);
    for (i, leaf) in leaves.iter().enumerate() {
        f.append_hash(*leaf).unwrap();
        assert_eq!(f.root(), roots[i + 1], "size {}", i + 1);
        // Stored and read back, it goes on the same.
        let hashes: Vec<[u8; 32]> = f.hashes().collect();
        let g = Frontier::from_hashes(f.size(), &hashes).unwrap();
        assert_eq!(g, f);
        assert!(Frontier::from_hashes(f.size(), &hashes[1..]).is_none());
    }
}

proptest! {
    #[test]
    fn inclusion_proofs_verify_and_mutations_fail(
        size in 1..=BIG, index_seed in any::<u64>(), other in any::<u64>(), which in any::<usize>(), bit in any::<u8>(),
    ) {
        let (t, leaves, roots) = big();
        let index = index_seed % size;
        let (leaf, root) = (leaves[index as usize], roots[size as usize]);
        let proof = t.inclusion_proof(index, size).unwrap();
        prop_assert_eq!(proof.as_slice(), &ref_path(index as usize, &leaves[..size as usize])[..]);
        prop_assert!(proof.len() <= ceil_log2(size));
        prop_assert_eq!(verify_inclusion(&leaf, index, size, &proof, &root), Ok(()));

        if !proof.is_empty() {
            prop_assert!(verify_inclusion(&leaf, index, size, &flip(&proof, which, bit), &root).is_err());
            prop_assert!(verify_inclusion(&leaf, index, size, &proof[1..], &root).is_err());
        }
        let mut longer = proof.to_vec();
        longer.push(root);
        prop_assert!(verify_inclusion(&leaf, index, size, &longer, &root).is_err());
        let mut bad_root = root;
        bad_root[usize::from(bit) % 32] ^= 1;
        prop_assert!(verify_inclusion(&leaf, index, size, &proof, &bad_root).is_err());
        // Another index (the leaves are distinct).
        let j = other % size;
        if j != index {
            prop_assert!(verify_inclusion(&leaf, j, size, &proof, &root).is_err());
        }
        // Another size, with that size's true root: only its own proof may verify.
        let m = 1 + other % BIG;
        if m != size && index < m {
            let ok = verify_inclusion(&leaf, index, m, &proof, &roots[m as usize]).is_ok();
            prop_assert!(!ok || proof == t.inclusion_proof(index, m).unwrap());
        }
        prop_assert!(verify_inclusion(&leaf, index, size, &proof, &roots[size as usize - 1]).is_err());
    }

    #[test]
    fn consistency_proofs_verify_and_mutations_fail(
        size2 in 1..=BIG, seed1 in any::<u64>(), other in any::<u64>(), which in any::<usize>(), bit in any::<u8>(),
    ) {
        let (t, leaves, roots) = big();
        let size1 = seed1 % (size2 + 1);
        let (r1, r2) = (roots[size1 as usize], roots[size2 as usize]);
        let proof = t.consistency_proof(size1, size2).unwrap();
        if 0 < size1 && size1 < size2 {
            prop_assert_eq!(proof.as_slice(), &ref_subproof(size1 as usize, &leaves[..size2 as usize], true)[..]);
        } else {
            prop_assert!(proof.is_empty());
        }
        prop_assert!(proof.len() <= ceil_log2(size2) + 1);
        prop_assert_eq!(verify_consistency(size1, size2, &proof, &r1, &r2), Ok(()));

        if !proof.is_empty() {
            prop_assert!(verify_consistency(size1, size2, &flip(&proof, which, bit), &r1, &r2).is_err());
            prop_assert!(verify_consistency(size1, size2, &proof[1..], &r1, &r2).is_err());
        }
        let mut longer = proof.to_vec();
        longer.push(r2);
        prop_assert!(verify_consistency(size1, size2, &longer, &r1, &r2).is_err());
        let (mut b1, mut b2) = (r1, r2);
        b1[usize::from(bit) % 32] ^= 1;
        b2[usize::from(bit) % 32] ^= 1;
        prop_assert!(verify_consistency(size1, size2, &proof, &b1, &r2).is_err());
        // Every tree extends the empty one, so from size 0 only the old root is checked.
        if size1 > 0 {
            prop_assert!(verify_consistency(size1, size2, &proof, &r1, &b2).is_err());
        }
        // Other sizes, with their true roots: only their own proof may verify.
        let m1 = other % (size2 + 1);
        if m1 != size1 {
            let ok = verify_consistency(m1, size2, &proof, &roots[m1 as usize], &r2).is_ok();
            prop_assert!(!ok || proof == t.consistency_proof(m1, size2).unwrap());
        }
        let m2 = size1.max(1) + other % BIG;
        if m2 != size2 && m2 <= BIG {
            let ok = verify_consistency(size1, m2, &proof, &r1, &roots[m2 as usize]).is_ok();
            prop_assert!(!ok || proof == t.consistency_proof(size1, m2).unwrap());
        }
    }

    #[test]
    fn verifiers_never_panic(
        index in any::<u64>(), size in any::<u64>(), size1 in any::<u64>(),
        proof in proptest::collection::vec(any::<[u8; 32]>(), 0..70), root in any::<[u8; 32]>(),
    ) {
        let _ = verify_inclusion(&root, index, size, &proof, &root);
        let _ = verify_consistency(size1, size, &proof, &root, &root);
        let _ = verify_consistency(size1 % (size | 1), size, &proof, &root, &root);
    }
}

// ---- signed notes: golang.org/x/mod/sumdb/note (note_test.go) and C2SP signed-note -----------------------------

const PETER_VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
const ENOCH_VKEY: &str = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop";
/// Go's private key text for PeterNeumann: base64(0x01 ‖ Ed25519 seed).
const PETER_SKEY_B64: &str = "AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
const GO_TEXT: &str = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n";
const PETER_SIG: &str = "— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";
const ENOCH_SIG: &str = "— EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n";

fn go_note(sigs: &[&str]) -> String {
    format!("{GO_TEXT}\n{}", sigs.concat())
}

#[test]
fn go_verifier_keys() {
    let peter = VerifierKey::parse(PETER_VKEY).unwrap();
    assert_eq!(peter.name(), "PeterNeumann");
    assert_eq!(peter.id(), [0xc7, 0x4f, 0x20, 0xa3]);
    assert_eq!(peter.to_string(), PETER_VKEY);
    assert_eq!(key_id(peter.name(), &peter.public_key()), peter.id());
    let enoch = VerifierKey::parse(ENOCH_VKEY).unwrap();
    assert_eq!(enoch.id(), [0xaf, 0x0c, 0xfe, 0x78]);
    assert_eq!(enoch.to_string(), ENOCH_VKEY);
    // TestNewVerifier: no substring and no single-byte change of the key is accepted.
    let b = PETER_VKEY.as_bytes();
    for i in 0..=b.len() {
        for j in i + 1..=b.len() {
            if (i, j) != (0, b.len()) {
                let s = std::str::from_utf8(&b[i..j]).unwrap();
                assert!(VerifierKey::parse(s).is_err(), "{s:?} was accepted");
            }
        }
    }
    for i in 0..b.len() {
        let mut m = b.to_vec();
        m[i] += 1;
        let s = String::from_utf8(m).unwrap();
        assert!(VerifierKey::parse(&s).is_err(), "{s:?} was accepted");
    }
    // Wrong key length and unknown algorithm, each with an adjusted key hash.
    assert_eq!(
        VerifierKey::parse(
            "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY=="
        ),
        Err(LogError::Syntax(Syntax::VerifierKey))
    );
    assert_eq!(
        VerifierKey::parse("PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"),
        Err(LogError::UnsupportedKeyType(0x65))
    );
    // Upper-case hex is not the canonical form.
    assert!(
        VerifierKey::parse("PeterNeumann+C74F20A3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW")
            .is_err()
    );
    // A small-order public key (the identity point) is refused.
    let mut identity = [0u8; 32];
    identity[0] = 1;
    assert_eq!(VerifierKey::new("x", &identity), Err(LogError::InvalidKey));
    assert_eq!(
        VerifierKey::new("a+b", &peter.public_key()),
        Err(LogError::Syntax(Syntax::KeyName))
    );
}

#[test]
fn go_signed_note_opens() {
    let peter = VerifierKey::parse(PETER_VKEY).unwrap();
    let enoch = VerifierKey::parse(ENOCH_VKEY).unwrap();
    let note = go_note(&[PETER_SIG]);
    assert_eq!(peter.open_note(note.as_bytes()), Ok(GO_TEXT));
    // TestOpen: one signature verified, the other (an unknown key to this verifier) skipped; both; neither.
    let both = go_note(&[PETER_SIG, ENOCH_SIG]);
    assert_eq!(peter.open_note(both.as_bytes()), Ok(GO_TEXT));
    assert_eq!(enoch.open_note(both.as_bytes()), Ok(GO_TEXT));
    assert_eq!(
        enoch.open_note(note.as_bytes()),
        Err(LogError::UnknownSigner)
    );
    // An altered signature by the known key refuses the note, even next to a good one.
    let bad = format!("{}ABCD{}", &PETER_SIG[..60], &PETER_SIG[60..]);
    assert_eq!(
        peter.open_note(go_note(&[&bad]).as_bytes()),
        Err(LogError::BadSignature)
    );
    assert_eq!(
        peter.open_note(go_note(&[PETER_SIG, &bad]).as_bytes()),
        Err(LogError::BadSignature)
    );
    // The same signature line twice: both verify. A second line by the same key, of the right length, whose
    // signature does not verify (its last base64 digit before the padding changed): refused, in either order.
    assert_eq!(
        peter.open_note(go_note(&[PETER_SIG, PETER_SIG]).as_bytes()),
        Ok(GO_TEXT)
    );
    let forged = PETER_SIG.replace("BwJnAM=", "BwJnAQ=");
    assert_ne!(forged, PETER_SIG);
    for sigs in [[PETER_SIG, forged.as_str()], [forged.as_str(), PETER_SIG]] {
        assert_eq!(
            peter.open_note(go_note(&sigs).as_bytes()),
            Err(LogError::BadSignature)
        );
    }
    // An altered text.
    let altered = note.replacen("cryptography", "cryptographY", 1);
    assert_eq!(
        peter.open_note(altered.as_bytes()),
        Err(LogError::BadSignature)
    );
    // The same name with another key ID, and another name with the same key ID, are other keys: skipped.
    let wrong_hash = PETER_SIG.replace("x08g", "xxxx");
    assert_eq!(
        peter.open_note(go_note(&[&wrong_hash]).as_bytes()),
        Err(LogError::UnknownSigner)
    );
    let misnamed = PETER_SIG.replace("PeterNeumann", "CarmenSandiego");
    assert_eq!(
        peter.open_note(go_note(&[&misnamed]).as_bytes()),
        Err(LogError::UnknownSigner)
    );
    // Too many signatures (Go refuses 101).
    let many = go_note(&[&PETER_SIG.repeat(101)]);
    assert_eq!(peter.open_note(many.as_bytes()), Err(LogError::TooLong));
    // Go's malformed notes.
    let bad_msgs = [
        GO_TEXT.to_string(),
        format!("{GO_TEXT}\n"),
        format!("{GO_TEXT}\n{}", &PETER_SIG[..PETER_SIG.len() - 1]),
        format!("\x01{GO_TEXT}\n{PETER_SIG}"),
        format!(
            "{GO_TEXT}\n— Bad Name x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM="
        ),
        format!("{GO_TEXT}\n{PETER_SIG}Unexpected line.\n"),
    ];
    for msg in &bad_msgs {
        assert!(
            matches!(peter.open_note(msg.as_bytes()), Err(LogError::Syntax(_))),
            "{msg:?}: {:?}",
            peter.open_note(msg.as_bytes())
        );
    }
    let mut not_utf8 = note.clone().into_bytes();
    not_utf8.insert(0, 0xff);
    assert_eq!(
        peter.open_note(&not_utf8),
        Err(LogError::Syntax(Syntax::Encoding))
    );
    assert_eq!(
        peter.open_note(&vec![b'a'; MAX_NOTE_LEN + 1]),
        Err(LogError::TooLong)
    );
    // Non-canonical base64 (padding in the middle, trailing bits) in an unknown key's line is malformed too.
    let padded = go_note(&[PETER_SIG, "— Other AAA=AAAA\n"]);
    assert_eq!(
        peter.open_note(padded.as_bytes()),
        Err(LogError::Syntax(Syntax::SignatureLine))
    );
    let trailing = go_note(&[PETER_SIG, "— Other AAAAAB==\n"]);
    assert_eq!(
        peter.open_note(trailing.as_bytes()),
        Err(LogError::Syntax(Syntax::SignatureLine))
    );
    let short = go_note(&[PETER_SIG, "— Other AAAA\n"]);
    assert_eq!(
        peter.open_note(short.as_bytes()),
        Err(LogError::Syntax(Syntax::SignatureLine))
    );
}

/// A signed checkpoint with an extension line and a witness cosignature, for the mutation test below.
fn cosigned_checkpoint() -> &'static (String, String) {
    static NOTE: OnceLock<(String, String)> = OnceLock::new();
    NOTE.get_or_init(|| {
        let signer =
            NoteSigner::from_seed("custos-registry/test", &Secret::from_bytes([0x11; 32])).unwrap();
        let witness =
            NoteSigner::from_seed("witness.example", &Secret::from_bytes([0x22; 32])).unwrap();
        let c = Checkpoint::new("custos-registry/test", 8, h(ROOTS[8]))
            .unwrap()
            .with_extensions("x\n")
            .unwrap();
        let note = signer.sign_checkpoint(&c).unwrap();
        let cosigned = format!("{note}{}", witness.signature_line(&c.to_string()).unwrap());
        (cosigned, signer.verifier().to_string())
    })
}

proptest! {
    /// Untrusted text, arbitrary or a valid note with bytes changed, inserted or cut: every reader returns, and a
    /// changed note never opens to other text than the signed one.
    #[test]
    fn note_readers_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..300),
        edits in proptest::collection::vec((any::<usize>(), any::<u8>(), 0u8..3), 1..4),
    ) {
        let peter = VerifierKey::parse(PETER_VKEY).unwrap();
        let _ = peter.open_note(&bytes);
        let _ = peter.open_checkpoint(&bytes);
        if let Ok(text) = core::str::from_utf8(&bytes) {
            let _ = Checkpoint::parse(text);
            let _ = VerifierKey::parse(text);
        }

        let (note, vkey) = cosigned_checkpoint();
        let key = VerifierKey::parse(vkey).unwrap();
        let signed = key.open_note(note.as_bytes()).unwrap();
        let mut m = note.clone().into_bytes();
        for &(at, byte, op) in &edits {
            let at = at % (m.len() + 1);
            match op {
                0 if at < m.len() => m[at] = byte,
                1 => m.insert(at, byte),
                _ if at < m.len() => {
                    m.remove(at);
                }
                _ => {}
            }
        }
        if let Ok(text) = key.open_note(&m) {
            prop_assert_eq!(text, signed);
        }
        if let Ok(c) = key.open_checkpoint(&m) {
            prop_assert_eq!(c.to_string(), signed);
        }
        let _ = witness_open(&m);
        let mut k = vkey.clone().into_bytes();
        let (at, byte, _) = edits[0];
        let at = at % k.len();
        k[at] = byte;
        if let Ok(text) = core::str::from_utf8(&k) {
            prop_assert!(text == vkey || VerifierKey::parse(text).is_err());
        }
    }
}

/// Opens a note with the witness key of [`cosigned_checkpoint`] (another position in the signature lines).
fn witness_open(note: &[u8]) -> Result<(), LogError> {
    let witness =
        NoteSigner::from_seed("witness.example", &Secret::from_bytes([0x22; 32])).unwrap();
    witness.verifier().open_note(note).map(|_| ())
}

#[test]
fn signs_as_go_does() {
    let raw = b64(PETER_SKEY_B64);
    assert_eq!(raw[0], ED25519);
    let seed = Secret::from_bytes(raw[1..].try_into().unwrap());
    let signer = NoteSigner::from_seed("PeterNeumann", &seed).unwrap();
    assert_eq!(signer.verifier().to_string(), PETER_VKEY);
    // TestSign: the same bytes as Go's Sign.
    assert_eq!(signer.sign(GO_TEXT).unwrap(), go_note(&[PETER_SIG]));
    assert_eq!(
        signer.signature_line(GO_TEXT).unwrap().to_string(),
        PETER_SIG
    );
    assert_eq!(signer.sign("abc"), Err(LogError::Syntax(Syntax::NoteShape)));
    assert_eq!(
        signer.sign("a\tb\n"),
        Err(LogError::Syntax(Syntax::Encoding))
    );
    assert_eq!(
        signer.sign(&"a\n".repeat(MAX_NOTE_LINES)),
        Err(LogError::TooLong)
    );
    assert!(format!("{signer:?}").contains(PETER_VKEY));
    assert_eq!(
        NoteSigner::from_seed("bad name", &seed).unwrap_err(),
        LogError::Syntax(Syntax::KeyName)
    );
}

#[test]
fn c2sp_signed_note_example() {
    let key =
        VerifierKey::parse("example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k")
            .unwrap();
    let note = "This is an example message.\n\n— example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n";
    assert_eq!(
        key.open_note(note.as_bytes()),
        Ok("This is an example message.\n")
    );
}

// ---- checkpoints -----------------------------------------------------------------------------------------------

#[test]
fn checkpoint_text_round_trips_and_refuses_malformed() {
    let root = h(ROOTS[8]);
    let c = Checkpoint::new("custos-registry/test", 8, root).unwrap();
    let text = c.to_string();
    assert_eq!(
        text,
        "custos-registry/test\n8\nXcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=\n"
    );
    assert_eq!(Checkpoint::parse(&text), Ok(c));
    assert_eq!(c.extensions().count(), 0);
    let e = c.with_extensions("ext one\next two\n").unwrap();
    let text = e.to_string();
    let back = Checkpoint::parse(&text).unwrap();
    assert_eq!(back, e);
    assert_eq!(
        back.extensions().collect::<Vec<_>>(),
        ["ext one", "ext two"]
    );
    assert_eq!(
        (back.origin(), back.size(), back.root()),
        ("custos-registry/test", 8, root)
    );
    assert!(c.with_extensions("no newline").is_err());
    assert!(c.with_extensions("a\n\nb\n").is_err());
    assert!(c.with_extensions("\n").is_err());
    assert!(Checkpoint::new("", 0, root).is_err());
    assert!(Checkpoint::new("a\nb", 0, root).is_err());
    let zero = Checkpoint::parse("o\n0\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n").unwrap();
    assert_eq!((zero.size(), zero.root()), (0, EMPTY_ROOT));
    let max = Checkpoint::parse(
        "o\n18446744073709551615\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n",
    )
    .unwrap();
    assert_eq!(max.size(), u64::MAX);

    let r = "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=";
    let shape = LogError::Syntax(Syntax::CheckpointShape);
    let size = LogError::Syntax(Syntax::TreeSize);
    let hash = LogError::Syntax(Syntax::RootHash);
    for (text, want) in [
        (format!("o\n1\n{r}"), shape),
        (format!("o\n1\n{r}\n\n"), shape),
        (format!("\n1\n{r}\n"), shape),
        ("o\n1\n".to_string(), shape),
        (String::new(), shape),
        (format!("o\n01\n{r}\n"), size),
        (format!("o\n-1\n{r}\n"), size),
        (format!("o\n+1\n{r}\n"), size),
        (format!("o\n 1\n{r}\n"), size),
        (format!("o\n\n{r}\n"), size),
        (format!("o\n18446744073709551616\n{r}\n"), size),
        (format!("o\n1\r\n{r}\n"), size),
        ("o\n1\nAAAA\n".to_string(), hash),
        (format!("o\n1\n{r}AAAA\n"), hash),
        (
            "o\n1\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFV=\n".to_string(),
            hash,
        ),
        (
            "o\n1\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuF==\n".to_string(),
            hash,
        ),
        (
            "o\n1\n47DEQpj8HBSa-_TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n".to_string(),
            hash,
        ),
        (format!("o\n1\n{r}\next\n\n"), shape),
        (format!("o\n1\n{r}\next\r\n"), shape),
    ] {
        assert_eq!(Checkpoint::parse(&text), Err(want), "{text:?}");
    }
}

#[test]
fn signed_checkpoints() {
    let seed = Secret::from_bytes([0x11; 32]);
    let signer = NoteSigner::from_seed("custos-registry/test", &seed).unwrap();
    let key = signer.verifier();
    let c = Checkpoint::new("custos-registry/test", 8, h(ROOTS[8]))
        .unwrap()
        .with_extensions("x\n")
        .unwrap();
    let note = signer.sign_checkpoint(&c).unwrap();
    assert_eq!(key.open_checkpoint(note.as_bytes()), Ok(c));
    // Cosigned by another key: still opens with either.
    let witness =
        NoteSigner::from_seed("witness.example", &Secret::from_bytes([0x22; 32])).unwrap();
    let cosigned = format!("{note}{}", witness.signature_line(&c.to_string()).unwrap());
    assert_eq!(key.open_checkpoint(cosigned.as_bytes()), Ok(c));
    assert_eq!(
        witness.verifier().open_checkpoint(cosigned.as_bytes()),
        Err(LogError::OriginMismatch)
    );
    assert_eq!(
        witness.verifier().open_note(cosigned.as_bytes()),
        Ok(c.to_string().as_str())
    );
    // A signer signs only its own origin; a checkpoint of another origin does not open.
    let other = Checkpoint::new("custos-registry/other", 8, h(ROOTS[8])).unwrap();
    assert_eq!(
        signer.sign_checkpoint(&other),
        Err(LogError::OriginMismatch)
    );
    let foreign = signer.sign(&other.to_string()).unwrap();
    assert_eq!(
        key.open_checkpoint(foreign.as_bytes()),
        Err(LogError::OriginMismatch)
    );
    // A changed size or root breaks the signature.
    let forged = note.replacen("\n8\n", "\n9\n", 1);
    assert_eq!(
        key.open_checkpoint(forged.as_bytes()),
        Err(LogError::BadSignature)
    );
    // Signed by an unknown key only.
    let stranger =
        NoteSigner::from_seed("custos-registry/test", &Secret::from_bytes([0x33; 32])).unwrap();
    let by_stranger = stranger.sign_checkpoint(&c).unwrap();
    assert_eq!(
        key.open_checkpoint(by_stranger.as_bytes()),
        Err(LogError::UnknownSigner)
    );
    // Signed text that is not a checkpoint.
    let not_cp = signer.sign("custos-registry/test\n8\n").unwrap();
    assert_eq!(
        key.open_checkpoint(not_cp.as_bytes()),
        Err(LogError::Syntax(Syntax::CheckpointShape))
    );
}

// ---- the published vectors (docs/registry.md) ---------------------------------------------------------------------

const REGISTRY_MD: &str = include_str!("../../../../docs/registry.md");

/// The JSON block after the `translog-vectors` marker in docs/registry.md.
fn published() -> serde_json::Value {
    let after = REGISTRY_MD
        .split("<!-- translog-vectors -->")
        .nth(1)
        .unwrap();
    let block = after
        .split("```json\n")
        .nth(1)
        .unwrap()
        .split("\n```")
        .next()
        .unwrap();
    serde_json::from_str(block).unwrap()
}

fn text(v: &serde_json::Value) -> &str {
    v.as_str().unwrap()
}

#[test]
fn published_vectors() {
    let v = published();
    let mut t = Tree::new();
    for (i, leaf) in v["leaves"].as_array().unwrap().iter().enumerate() {
        t.append(&hex::decode(text(leaf)).unwrap());
        assert_eq!(
            text(&v["leaf_hashes"][i]),
            hex::encode(leaf_hash(&hex::decode(text(leaf)).unwrap()))
        );
        assert_eq!(text(leaf), LEAVES[i]);
    }
    for (size, root) in v["roots"].as_array().unwrap().iter().enumerate() {
        assert_eq!(text(root), hex::encode(t.root(size as u64).unwrap()));
        assert_eq!(text(root), ROOTS[size]);
    }
    for case in v["inclusion"].as_array().unwrap() {
        let (index, size) = (
            case["index"].as_u64().unwrap(),
            case["size"].as_u64().unwrap(),
        );
        let proof: Vec<String> = t
            .inclusion_proof(index, size)
            .unwrap()
            .iter()
            .map(hex::encode)
            .collect();
        assert_eq!(case["proof"], serde_json::json!(proof));
    }
    for case in v["consistency"].as_array().unwrap() {
        let (size1, size2) = (
            case["size1"].as_u64().unwrap(),
            case["size2"].as_u64().unwrap(),
        );
        let proof: Vec<String> = t
            .consistency_proof(size1, size2)
            .unwrap()
            .iter()
            .map(hex::encode)
            .collect();
        assert_eq!(case["proof"], serde_json::json!(proof));
    }

    let c = &v["checkpoint"];
    let seed = Secret::from_bytes(hex::decode(text(&c["seed"])).unwrap().try_into().unwrap());
    let signer = NoteSigner::from_seed(text(&c["origin"]), &seed).unwrap();
    let key = signer.verifier();
    assert_eq!(text(&c["public_key"]), hex::encode(key.public_key()));
    assert_eq!(text(&c["key_id"]), hex::encode(key.id()));
    assert_eq!(text(&c["verifier_key"]), key.to_string());
    let size = c["size"].as_u64().unwrap();
    let cp = Checkpoint::new(text(&c["origin"]), size, t.root(size).unwrap()).unwrap();
    assert_eq!(text(&c["text"]), cp.to_string());
    let note = signer.sign_checkpoint(&cp).unwrap();
    assert_eq!(text(&c["note"]), note);
    let line = signer.signature_line(&cp.to_string()).unwrap().to_string();
    let sig_b64 = line.trim_end().rsplit(' ').next().unwrap().to_string();
    let sig = b64(&sig_b64);
    assert_eq!(text(&c["signature"]), hex::encode(&sig[4..]));
    let parsed = VerifierKey::parse(text(&c["verifier_key"])).unwrap();
    assert_eq!(parsed.open_checkpoint(note.as_bytes()), Ok(cp));
    // The doc shows the note verbatim.
    assert!(
        REGISTRY_MD.contains(&format!("```text\n{note}```")),
        "docs/registry.md lacks the signed checkpoint"
    );

    // The tables and blocks above the JSON show the same values.
    let human = REGISTRY_MD
        .split("### 1.5 Vectors")
        .nth(1)
        .unwrap()
        .split("<!-- translog-vectors -->")
        .next()
        .unwrap();
    let cell = |row: &str, i: usize| {
        row.split('|')
            .nth(i)
            .unwrap()
            .trim()
            .trim_matches('`')
            .to_string()
    };
    let rows = |first: &str| -> Vec<String> {
        human
            .lines()
            .filter(|l| {
                l.starts_with("| ") && l.split('|').nth(1).unwrap().trim().parse::<u64>().is_ok()
            })
            .filter(|l| l.split('|').count() == if first == "leaves" { 5 } else { 4 })
            .map(str::to_string)
            .collect()
    };
    let leaf_rows = rows("leaves");
    assert_eq!(leaf_rows.len(), 8);
    for (i, row) in leaf_rows.iter().enumerate() {
        assert_eq!(cell(row, 1), i.to_string());
        let entry = cell(row, 2);
        assert_eq!(
            if entry == "(empty)" { "" } else { &entry },
            text(&v["leaves"][i])
        );
        assert_eq!(cell(row, 3), text(&v["leaf_hashes"][i]));
    }
    let root_rows = rows("roots");
    assert_eq!(root_rows.len(), 9);
    for (size, row) in root_rows.iter().enumerate() {
        assert_eq!(cell(row, 1), size.to_string());
        assert_eq!(cell(row, 2), text(&v["roots"][size]));
    }
    let blocks: Vec<&str> = human
        .split("```text\n")
        .skip(1)
        .map(|b| b.split("```").next().unwrap())
        .collect();
    assert_eq!(blocks.len(), 4);
    let proof_of = |cases: &serde_json::Value, a: (&str, u64), b: (&str, u64)| -> String {
        let case = cases
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c[a.0] == a.1 && c[b.0] == b.1)
            .unwrap();
        case["proof"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| format!("{}\n", text(x)))
            .collect()
    };
    assert_eq!(
        blocks[0],
        proof_of(&v["inclusion"], ("index", 5), ("size", 8))
    );
    assert_eq!(
        blocks[1],
        proof_of(&v["consistency"], ("size1", 3), ("size2", 7))
    );
    for line in blocks[2].lines() {
        let (label, value) = line.rsplit_once(' ').unwrap();
        let field = match label.trim() {
            "seed" => "seed",
            "public key" => "public_key",
            "key ID" => "key_id",
            "verifier key" => "verifier_key",
            "signature" => "signature",
            other => panic!("unexpected line {other:?}"),
        };
        assert_eq!(value, text(&c[field]), "{field}");
    }
    assert_eq!(blocks[2].lines().count(), 5);
    assert_eq!(blocks[3], text(&c["note"]));

    let g = &v["go_note"];
    let go = VerifierKey::parse(text(&g["verifier_key"])).unwrap();
    assert_eq!(
        go.open_note(text(&g["note"]).as_bytes()),
        Ok(text(&g["text"]))
    );
}
