//! Arbitrary bytes into the transparency log's readers (docs/registry.md §1): a signed checkpoint and a signed note
//! under the published vector's key and Go's, a verifier key, checkpoint text, and the inclusion and consistency
//! verifiers over a fixed log of 100 entries. No reader panics, and whatever is accepted is what it claims: an opened
//! checkpoint is canonical text signed by the key, a verifier key prints back to its text, and a proof that verifies
//! against the log's true roots is the proof the log itself makes (the leaves are distinct, so no other can).
//!
//! Input for the proof verifiers: index (8 bytes, big-endian), size (8), size1 (8), then the proof's 32-byte hashes.
#![no_main]

use std::sync::OnceLock;

use custos_proto::Secret;
use custos_proto::translog::{
    self, Checkpoint, MAX_NOTE_LEN, NoteSigner, Tree, VerifierKey, leaf_hash,
};
use libfuzzer_sys::fuzz_target;

/// The published checkpoint vector's key (docs/registry.md §1.5): seed 00 01 … 1f.
const ORIGIN: &str = "custos-registry/manufacturer.example";
const GO_VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
const N: u64 = 100;

fn log() -> &'static Tree {
    static LOG: OnceLock<Tree> = OnceLock::new();
    LOG.get_or_init(|| {
        let mut t = Tree::new();
        for i in 0..N as u32 {
            t.append(&i.to_be_bytes());
        }
        t
    })
}

fn key() -> VerifierKey<'static> {
    static KEY: OnceLock<VerifierKey<'static>> = OnceLock::new();
    *KEY.get_or_init(|| {
        let seed: [u8; 32] = core::array::from_fn(|i| i as u8);
        NoteSigner::from_seed(ORIGIN, &Secret::from_bytes(seed)).unwrap().verifier()
    })
}

fn u64_at(data: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    for (i, x) in b.iter_mut().enumerate() {
        *x = data.get(at + i).copied().unwrap_or(0);
    }
    u64::from_be_bytes(b)
}

fuzz_target!(|data: &[u8]| {
    // Signed notes and checkpoints.
    let key = key();
    if let Ok(c) = key.open_checkpoint(data) {
        assert!(data.len() <= MAX_NOTE_LEN);
        let text = c.to_string();
        assert!(data.starts_with(text.as_bytes()), "an opened checkpoint is not canonical");
        assert_eq!(data[text.len()], b'\n');
        assert_eq!(c.origin(), ORIGIN);
    }
    if let Ok(text) = key.open_note(data) {
        assert!(data.starts_with(text.as_bytes()) && text.ends_with('\n'));
    }
    let go = VerifierKey::parse(GO_VKEY).unwrap();
    if let Ok(text) = go.open_note(data) {
        assert!(data.starts_with(text.as_bytes()));
    }
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(k) = VerifierKey::parse(s) {
            assert_eq!(k.to_string(), s, "an accepted verifier key does not print back");
        }
        if let Ok(c) = Checkpoint::parse(s) {
            assert_eq!(c.to_string(), s, "accepted checkpoint text is not canonical");
        }
    }

    // Proofs, against the fixed log.
    let t = log();
    let (index, size, size1) = (u64_at(data, 0), u64_at(data, 8), u64_at(data, 16));
    let proof: Vec<[u8; 32]> = data
        .get(24..)
        .unwrap_or(&[])
        .chunks_exact(32)
        .map(|c| c.try_into().unwrap())
        .collect();
    let any_root = proof.first().copied().unwrap_or([0; 32]);
    let _ = translog::root_from_inclusion(&any_root, index, size, &proof);
    let _ = translog::verify_consistency(size1, size, &proof, &any_root, &any_root);
    if index < N && size <= N {
        let leaf = leaf_hash(&(index as u32).to_be_bytes());
        let root = t.root(size).unwrap();
        if translog::verify_inclusion(&leaf, index, size, &proof, &root).is_ok() {
            assert_eq!(&proof[..], &t.inclusion_proof(index, size).unwrap()[..], "a forged inclusion proof verified");
        }
    }
    if size1 <= N && size <= N {
        let (r1, r2) = (t.root(size1).unwrap(), t.root(size).unwrap());
        if translog::verify_consistency(size1, size, &proof, &r1, &r2).is_ok() {
            assert_eq!(&proof[..], &t.consistency_proof(size1, size).unwrap()[..], "a forged consistency proof verified");
        }
    }
});
