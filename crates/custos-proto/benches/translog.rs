//! The transparency log at 10⁶ entries: proof sizes against the ⌈log₂ n⌉ goal (printed once), and the time to
//! build and to check each proof, with a raw SHA-256 of one 32-byte node pair as the baseline in the same run.
//!
//! Run: `cargo bench -p custos-proto --bench translog -- --warm-up-time 1 --measurement-time 3`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use criterion::Criterion;
use custos_proto::translog::{Tree, leaf_hash, node_hash, verify_consistency, verify_inclusion};
use sha2::{Digest, Sha256};

const N: u64 = 1_000_000;

fn entry(i: u64) -> [u8; 40] {
    // A status-sized entry: its index, then filler.
    let mut e = [0x5a; 40];
    e[..8].copy_from_slice(&i.to_be_bytes());
    e
}

fn main() {
    let mut tree = Tree::new();
    for i in 0..N {
        tree.append(&entry(i));
    }
    let bound = 64 - (N - 1).leading_zeros() as usize; // ⌈log₂ N⌉
    let root = tree.root(N).unwrap();
    let (mut most_incl, mut most_cons) = (0, 0);
    for i in [0, 1, N / 3, N / 2, N - 2, N - 1] {
        let p = tree.inclusion_proof(i, N).unwrap();
        verify_inclusion(&leaf_hash(&entry(i)), i, N, &p, &root).unwrap();
        most_incl = most_incl.max(p.len());
    }
    for m in [1, 2, 999, N / 2, N - 1] {
        let p = tree.consistency_proof(m, N).unwrap();
        verify_consistency(m, N, &p, &tree.root(m).unwrap(), &root).unwrap();
        most_cons = most_cons.max(p.len());
    }
    eprintln!(
        "log of {N} entries: inclusion proofs at most {most_incl} hashes ({} B), consistency proofs at most \
         {most_cons} hashes ({} B); ⌈log₂ n⌉ = {bound}",
        most_incl * 32,
        most_cons * 32
    );
    assert!(most_incl <= bound && most_cons <= bound + 1);

    let mut c = Criterion::default().configure_from_args();
    let mut g = c.benchmark_group("translog_1e6");
    let (l, r) = (leaf_hash(b"left"), leaf_hash(b"right"));
    g.bench_function("raw_sha256_node", |b| {
        b.iter(|| {
            let mut h = Sha256::new();
            h.update([1u8]);
            h.update(black_box(l));
            h.update(black_box(r));
            h.finalize()
        })
    });
    g.bench_function("node_hash", |b| {
        b.iter(|| node_hash(black_box(&l), black_box(&r)))
    });
    let i = N / 3;
    let proof = tree.inclusion_proof(i, N).unwrap();
    let lh = leaf_hash(&entry(i));
    g.bench_function("inclusion_proof", |b| {
        b.iter(|| tree.inclusion_proof(black_box(i), N).unwrap())
    });
    g.bench_function("verify_inclusion", |b| {
        b.iter(|| verify_inclusion(black_box(&lh), i, N, &proof, &root).unwrap())
    });
    let m = N / 2 + 1;
    let cons = tree.consistency_proof(m, N).unwrap();
    let root_m = tree.root(m).unwrap();
    g.bench_function("consistency_proof", |b| {
        b.iter(|| tree.consistency_proof(black_box(m), N).unwrap())
    });
    g.bench_function("verify_consistency", |b| {
        b.iter(|| verify_consistency(m, N, black_box(&cons), &root_m, &root).unwrap())
    });
    g.bench_function("append", |b| {
        let mut t = tree.clone();
        let mut k = N;
        b.iter(|| {
            k += 1;
            t.append(&entry(k))
        })
    });
    g.finish();
    c.final_summary();
}
