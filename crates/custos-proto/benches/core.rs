//! Benchmarks of the core against raw RustCrypto baselines measured in the same run.
//!
//! Each group puts our operation next to the cheapest hand-written equivalent on the same primitives, so the
//! medians can be read side by side and the ratio is the cost of the core's checks, copies and zeroization:
//!
//! - `derive`: DPK → day leaf through `month/week/day` ([`TreeSpec::derive`]) vs three chained raw
//!   `Hkdf::from_prk(..).expand(..)` calls with 28-byte infos (the `NODE_LABEL` layout); the leaf's AEAD key
//!   bytes ([`TreeSpec::leaf_key_bytes`]) vs four raw expands (the last with the 14-byte key info).
//! - `seal_open_64B`: [`LeafKey::seal`] / [`LeafKey::open`] of a 64-byte reading vs a pre-initialized raw
//!   `Aes256Gcm` (`encrypt_in_place_detached` / `decrypt_in_place_detached` after a copy into a buffer).
//! - `bulk_open_day`: 100 000 records of one day leaf opened with a fresh [`Opener`] holding the DPK (so the one
//!   leaf-key derivation is included) vs a pre-initialized raw `Aes256Gcm` decrypting every record.
//! - `cover_5y`: minimal covers of 64 pseudo-random leaf-aligned ranges in a 5-year epoch, under `month/week/day`
//!   and `year/month/week/day/hour` (no raw equivalent; the node counts are printed once before the group).
//!
//! Run: `cargo bench -p custos-proto --bench core -- --warm-up-time 1 --measurement-time 3`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes256Gcm, KeyInit};
use criterion::{Criterion, Throughput};
use custos_proto::crypto::{NONCE_LEN, TAG_LEN};
use custos_proto::record::{HEADER_LEN, OVERHEAD};
use custos_proto::tree::{KEY_LABEL, NODE_LABEL};
use custos_proto::{
    DeviceId, Epoch, NodeId, NodeSecret, Opener, RustCrypto, Schedule, Secret, Span, Suite,
    TreeSpec, UnixTime,
};
use hkdf::Hkdf;
use sha2::Sha256;

const DEVICE: DeviceId = DeviceId([0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77]);
const EPOCH: Epoch = Epoch(3);
const READING: usize = 64;
const RECORD: usize = READING + OVERHEAD;
const BULK_RECORDS: usize = 100_000;

fn date(y: i64, m: u32, d: u32) -> UnixTime {
    UnixTime::from_date(y, m, d).unwrap()
}

fn span(a: UnixTime, b: UnixTime) -> Span {
    Span::new(a, b).unwrap()
}

/// A one-year epoch (2026) under `month/week/day`, its DPK as the root secret, and the leaf of 2026-03-17.
fn year_tree() -> (TreeSpec, NodeSecret, u32) {
    let spec = TreeSpec::new(
        DEVICE,
        EPOCH,
        Schedule::default(),
        span(date(2026, 1, 1), date(2027, 1, 1)),
    )
    .unwrap();
    let root = NodeSecret::new(NodeId::ROOT, Secret::from_bytes([0x5a; 32]));
    let leaf = spec.leaf_at(date(2026, 3, 17)).unwrap();
    (spec, root, leaf)
}

/// The HKDF info of each stage on the path from the root to `leaf`, built exactly as `tree.rs` does (28 bytes).
fn node_infos(spec: &TreeSpec, leaf: u32) -> Vec<[u8; 28]> {
    let start = spec.node_span(spec.leaf_node(leaf)).unwrap().start();
    spec.schedule()
        .stages()
        .iter()
        .enumerate()
        .map(|(i, stage)| {
            let mut info = [0u8; 28];
            info[..14].copy_from_slice(NODE_LABEL);
            info[14] = u8::try_from(i + 1).unwrap();
            info[15] = stage.code();
            info[16..20].copy_from_slice(&stage.param().to_be_bytes());
            info[20..28].copy_from_slice(&stage.index_of(start).to_be_bytes());
            info
        })
        .collect()
}

/// The 14-byte info of the AEAD key derivation.
fn key_info(suite: Suite) -> [u8; 14] {
    let mut info = [0u8; 14];
    info[..13].copy_from_slice(KEY_LABEL);
    info[13] = suite.code();
    info
}

/// Chained raw HKDF-Expand: each output is the next PRK.
fn raw_chain(prk: &[u8; 32], infos: &[&[u8]]) -> [u8; 32] {
    let mut secret = *prk;
    for info in infos {
        let mut okm = [0u8; 32];
        Hkdf::<Sha256>::from_prk(&secret)
            .unwrap()
            .expand(info, &mut okm)
            .unwrap();
        secret = okm;
    }
    secret
}

fn aead_nonce(record: &[u8]) -> [u8; NONCE_LEN] {
    let mut n = [0u8; NONCE_LEN];
    n[4..].copy_from_slice(&record[15..HEADER_LEN]);
    n
}

/// Raw open of one record: copy the ciphertext into `out`, decrypt in place with the record's nonce and header.
fn raw_open(cipher: &Aes256Gcm, record: &[u8], out: &mut [u8; READING]) {
    let nonce = aead_nonce(record);
    out.copy_from_slice(&record[HEADER_LEN..HEADER_LEN + READING]);
    let tag: &[u8; TAG_LEN] = record[HEADER_LEN + READING..].try_into().unwrap();
    cipher
        .decrypt_in_place_detached((&nonce).into(), &record[..HEADER_LEN], out, tag.into())
        .unwrap();
}

fn derive(c: &mut Criterion) {
    let crypto = RustCrypto;
    let (spec, root, leaf) = year_tree();
    let target = spec.leaf_node(leaf);
    let infos = node_infos(&spec, leaf);
    assert_eq!(infos.len(), 3);
    let kinfo = key_info(Suite::AES256GCM);
    let node_path: Vec<&[u8]> = infos.iter().map(|i| i.as_slice()).collect();
    let mut key_path = node_path.clone();
    key_path.push(&kinfo);

    // The baselines compute the same bytes.
    let prk = *root.secret().expose();
    assert_eq!(
        spec.derive(&crypto, &root, target)
            .unwrap()
            .secret()
            .expose(),
        &raw_chain(&prk, &node_path)
    );
    assert_eq!(
        spec.leaf_key_bytes(&crypto, &root, leaf, Suite::AES256GCM)
            .unwrap()
            .expose(),
        &raw_chain(&prk, &key_path)
    );

    let mut g = c.benchmark_group("derive");
    g.bench_function("leaf", |b| {
        b.iter(|| {
            spec.derive(black_box(&crypto), black_box(&root), black_box(target))
                .unwrap()
        })
    });
    g.bench_function("raw_3_expand", |b| {
        b.iter(|| raw_chain(black_box(&prk), black_box(&node_path)))
    });
    g.bench_function("leaf_key", |b| {
        b.iter(|| {
            spec.leaf_key_bytes(
                black_box(&crypto),
                black_box(&root),
                black_box(leaf),
                black_box(Suite::AES256GCM),
            )
            .unwrap()
        })
    });
    g.bench_function("raw_4_expand", |b| {
        b.iter(|| raw_chain(black_box(&prk), black_box(&key_path)))
    });
    g.finish();
}

fn seal_open(c: &mut Criterion) {
    let crypto = RustCrypto;
    let (spec, root, leaf) = year_tree();
    let key = spec
        .leaf_key(&crypto, &root, leaf, Suite::AES256GCM)
        .unwrap();
    let key_bytes = spec
        .leaf_key_bytes(&crypto, &root, leaf, Suite::AES256GCM)
        .unwrap();
    let cipher = Aes256Gcm::new(key_bytes.expose().into());
    let plaintext: [u8; READING] = core::array::from_fn(|i| i as u8);
    let nonce = 7u64.to_be_bytes();

    let mut record = [0u8; RECORD];
    assert_eq!(
        key.seal(&crypto, nonce, &plaintext, &mut record).unwrap(),
        RECORD
    );
    let header: [u8; HEADER_LEN] = record[..HEADER_LEN].try_into().unwrap();
    let raw_nonce = aead_nonce(&record);
    // The raw baseline produces the same ciphertext and tag, and opens our record.
    let mut buf = plaintext;
    let tag = cipher
        .encrypt_in_place_detached((&raw_nonce).into(), &header, &mut buf)
        .unwrap();
    assert_eq!(&record[HEADER_LEN..HEADER_LEN + READING], &buf);
    assert_eq!(&record[HEADER_LEN + READING..], tag.as_slice());
    let mut out = [0u8; READING];
    raw_open(&cipher, &record, &mut out);
    assert_eq!(out, plaintext);

    let mut g = c.benchmark_group("seal_open_64B");
    g.throughput(Throughput::Bytes(READING as u64));
    g.bench_function("seal", |b| {
        b.iter(|| {
            let mut out = [0u8; RECORD];
            let n = key
                .seal(
                    black_box(&crypto),
                    black_box(nonce),
                    black_box(&plaintext),
                    &mut out,
                )
                .unwrap();
            black_box(&out);
            n
        })
    });
    g.bench_function("raw_seal", |b| {
        b.iter(|| {
            let mut buf = [0u8; READING];
            buf.copy_from_slice(black_box(&plaintext));
            let tag = black_box(&cipher)
                .encrypt_in_place_detached(
                    black_box(&raw_nonce).into(),
                    black_box(&header),
                    &mut buf,
                )
                .unwrap();
            black_box(&buf);
            tag
        })
    });
    g.bench_function("open", |b| {
        b.iter(|| {
            let mut out = [0u8; READING];
            let n = key
                .open(black_box(&crypto), black_box(&record), &mut out)
                .unwrap();
            black_box(&out);
            n
        })
    });
    g.bench_function("raw_open", |b| {
        b.iter(|| {
            let mut out = [0u8; READING];
            raw_open(black_box(&cipher), black_box(&record), &mut out);
            black_box(&out);
        })
    });
    g.finish();
}

fn bulk_open_day(c: &mut Criterion) {
    let crypto = RustCrypto;
    let (spec, root, leaf) = year_tree();
    let key = spec
        .leaf_key(&crypto, &root, leaf, Suite::AES256GCM)
        .unwrap();
    let key_bytes = spec
        .leaf_key_bytes(&crypto, &root, leaf, Suite::AES256GCM)
        .unwrap();
    let cipher = Aes256Gcm::new(key_bytes.expose().into());

    // 100 000 readings of one day leaf, sealed once with distinct nonces, stored back to back.
    let mut records = vec![0u8; BULK_RECORDS * RECORD];
    for (i, rec) in records.chunks_exact_mut(RECORD).enumerate() {
        let reading: [u8; READING] = core::array::from_fn(|j| (i + j) as u8);
        key.seal(&crypto, (i as u64).to_be_bytes(), &reading, rec)
            .unwrap();
    }
    let held = [root];
    {
        let mut opener = Opener::new(&crypto, &spec, &held);
        let mut out = [0u8; READING];
        let mut raw = [0u8; READING];
        for (i, rec) in records.chunks_exact(RECORD).enumerate().step_by(997) {
            let reading: [u8; READING] = core::array::from_fn(|j| (i + j) as u8);
            assert_eq!(opener.open(rec, &mut out).unwrap().1, READING);
            raw_open(&cipher, rec, &mut raw);
            assert_eq!((out, raw), (reading, reading));
        }
    }

    let mut g = c.benchmark_group("bulk_open_day");
    g.throughput(Throughput::Bytes((BULK_RECORDS * READING) as u64));
    g.sample_size(10);
    let mut out = [0u8; READING];
    g.bench_function("opener", |b| {
        b.iter(|| {
            let mut opener = Opener::new(black_box(&crypto), black_box(&spec), black_box(&held));
            let mut total = 0;
            for rec in black_box(&records).chunks_exact(RECORD) {
                total += opener.open(rec, &mut out).unwrap().1;
            }
            black_box(&out);
            total
        })
    });
    g.bench_function("raw_aes256gcm", |b| {
        b.iter(|| {
            let cipher = black_box(&cipher);
            let mut total = 0;
            for rec in black_box(&records).chunks_exact(RECORD) {
                raw_open(cipher, rec, &mut out);
                total += READING;
            }
            black_box(&out);
            total
        })
    });
    g.finish();
}

/// A tiny fixed-seed LCG (Knuth's MMIX constants); the high bits are the output.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % bound
    }
}

/// `n` pseudo-random ranges of whole `unit`-second periods inside `spec`'s epoch.
fn random_ranges(spec: &TreeSpec, unit: u64, n: usize) -> Vec<Span> {
    let start = spec.span().start().secs();
    let periods = (spec.span().end().secs() - start) / unit;
    let mut lcg = Lcg(0x0c05_7005);
    (0..n)
        .map(|_| {
            let (a, mut b) = (lcg.below(periods), lcg.below(periods));
            if a == b {
                b += 1;
            }
            let (a, b) = (a.min(b), a.max(b));
            span(
                UnixTime::new(start + a * unit).unwrap(),
                UnixTime::new(start + b * unit).unwrap(),
            )
        })
        .collect()
}

fn cover(c: &mut Criterion) {
    const RANGES: usize = 64;
    let epoch = span(date(2026, 1, 1), date(2031, 1, 1));
    let variants = [
        ("month/week/day", custos_proto::time::DAY),
        ("year/month/week/day/hour", custos_proto::time::HOUR),
    ];
    let two_months = span(date(2026, 3, 1), date(2026, 5, 1));
    let days_45 = span(date(2027, 2, 10), date(2027, 3, 27));

    let mut g = c.benchmark_group("cover_5y");
    g.throughput(Throughput::Elements(RANGES as u64));
    for (schedule, unit) in variants {
        let spec = TreeSpec::new(DEVICE, EPOCH, Schedule::parse(schedule).unwrap(), epoch).unwrap();
        let ranges = random_ranges(&spec, unit, RANGES);
        let mut counts: Vec<usize> = ranges
            .iter()
            .map(|r| spec.cover(*r).unwrap().count())
            .collect();
        counts.sort_unstable();
        eprintln!(
            "cover_5y {schedule}: nodes over {RANGES} random ranges min {} / median {} / max {}; \
             two whole months ({two_months}) {}; 45 days ({days_45}) {}",
            counts[0],
            counts[RANGES / 2],
            counts[RANGES - 1],
            spec.cover(two_months).unwrap().count(),
            spec.cover(days_45).unwrap().count(),
        );
        g.bench_function(format!("{schedule}/64_ranges"), |b| {
            b.iter(|| {
                let spec = black_box(&spec);
                black_box(&ranges)
                    .iter()
                    .map(|r| spec.cover(*r).unwrap().count())
                    .sum::<usize>()
            })
        });
    }
    g.finish();
}

// `criterion_group!` would define an undocumented public function, which the `missing_docs` lint rejects.
fn main() {
    let mut c = Criterion::default().configure_from_args();
    derive(&mut c);
    seal_open(&mut c);
    bulk_open_day(&mut c);
    cover(&mut c);
    c.final_summary();
}
