//! What the link's test files share: a seeded generator, the attacker's operations over a pool of genuine frames,
//! and the reader of docs/lora.md's vectors.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use proptest::prelude::*;

/// A small deterministic generator (xorshift64*), so a failing case replays from its seed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn percent(&mut self, p: u32) -> bool {
        self.next() % 100 < u64::from(p)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
}

/// One step of an attacker against a state that must refuse what is wrong and change nothing.
#[derive(Clone, Debug)]
pub enum Op {
    /// A genuine frame, maybe with one byte altered (and maybe cut short).
    Frame {
        pick: usize,
        at: usize,
        xor: u8,
        cut: Option<usize>,
    },
    Garbage(Vec<u8>),
    Poll,
    Release,
}

/// A step, and the µs that pass before it.
pub fn op() -> impl Strategy<Value = (u16, Op)> {
    let op = prop_oneof![
        4 => (any::<usize>(), any::<usize>(), prop_oneof![Just(0u8), any::<u8>()], proptest::option::of(0usize..60))
            .prop_map(|(pick, at, xor, cut)| Op::Frame { pick, at, xor, cut }),
        1 => prop::collection::vec(any::<u8>(), 0..60).prop_map(Op::Garbage),
        2 => Just(Op::Poll),
        1 => Just(Op::Release),
    ];
    (0u16..3_000, op)
}

/// The frame a step delivers, from `pool`; `None` for the steps that deliver none.
pub fn frame_of(pool: &[Vec<u8>], op: Op) -> Option<Vec<u8>> {
    match op {
        Op::Frame { pick, at, xor, cut } => {
            let mut f = pool[pick % pool.len()].clone();
            let i = at % f.len();
            f[i] ^= xor;
            if let Some(c) = cut {
                f.truncate(c);
            }
            Some(f)
        }
        Op::Garbage(g) => Some(g),
        _ => None,
    }
}

pub const PAGE: &str = include_str!("../../../../docs/lora.md");

/// The bytes of the docs/lora.md vector line that starts with `label`, which must appear exactly once.
pub fn vector(label: &str) -> Vec<u8> {
    let lines: Vec<&str> = PAGE
        .lines()
        .filter(|l| l.starts_with(label) && l[label.len()..].starts_with("  "))
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "vector {label:?} appears {} times in docs/lora.md",
        lines.len()
    );
    let hex: String = lines[0][label.len()..]
        .chars()
        .filter(|c| c.is_ascii_hexdigit())
        .collect();
    assert_eq!(hex.len() % 2, 0);
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}
