//! Bulk decryption by `custos_app::decrypt_all` against raw AES-256-GCM on the same bytes, in the same run.
//!
//! The raw baseline gets every leaf key for free (derived and expanded before the clock starts), runs on one
//! core and keeps every plaintext in one buffer; the SDK derives its keys from the granted node, checks every
//! header and keeps every plaintext with its header. Reports medians of 9 runs of 100,000 records:
//! the SDK on 1 thread as a fraction of raw (per-core efficiency), and on every core as a speed-up over 1 thread.
//!
//! `cargo bench -p custos-app --bench decrypt`
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes256Gcm, KeyInit, Nonce, Tag};
use custos_app::decrypt_all;
use custos_proto::record::{HEADER_LEN, OVERHEAD, RecordHeader};
use custos_proto::sharing::GrantedTree;
use custos_proto::{
    DeviceId, Epoch, MasterSecret, RustCrypto, Schedule, Secret, Span, Suite, TreeSpec, UnixTime,
};

const N: u64 = 100_000;
const RUNS: usize = 9;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let c = RustCrypto;
    let month = Span::new(
        UnixTime::from_date(2026, 3, 1).unwrap(),
        UnixTime::from_date(2026, 4, 1).unwrap(),
    )
    .unwrap();
    let year = Span::new(
        UnixTime::from_date(2026, 1, 1).unwrap(),
        UnixTime::from_date(2027, 1, 1).unwrap(),
    )
    .unwrap();
    let spec = TreeSpec::new(
        DeviceId([2, 0, 0x5e, 0x10, 0, 0, 0, 1]),
        Epoch(1),
        Schedule::default(),
        year,
    )
    .unwrap();
    let root = spec
        .root(&c, &MasterSecret::new(Secret::from_bytes([7; 32])))
        .unwrap();
    let nodes: Vec<_> = spec
        .cover(month)
        .unwrap()
        .map(|n| spec.derive(&c, &root, n).unwrap())
        .collect();
    let trees = vec![GrantedTree { spec, nodes }];

    // 100,000 readings of 32 bytes spread over March, sealed as a device would.
    let step = (month.end().secs() - month.start().secs()) / N;
    let mut keys = HashMap::new();
    let records: Vec<Vec<u8>> = (0..N)
        .map(|i| {
            let t = UnixTime::new(month.start().secs() + i * step).unwrap();
            let leaf = spec.leaf_at(t).unwrap();
            let key = keys.entry(leaf).or_insert_with(|| {
                spec.leaf_key_bytes(&c, &root, leaf, Suite::AES256GCM)
                    .unwrap()
            });
            let sealer = spec.leaf_key(&c, &root, leaf, Suite::AES256GCM).unwrap();
            let _ = key;
            let mut out = vec![0u8; 32 + OVERHEAD];
            sealer
                .seal(&c, i.to_be_bytes(), &[0x42; 32], &mut out)
                .unwrap();
            out
        })
        .collect();
    let ciphers: HashMap<u32, Aes256Gcm> = keys
        .iter()
        .map(|(leaf, k)| (*leaf, Aes256Gcm::new_from_slice(k.expose()).unwrap()))
        .collect();

    let raw = || {
        let start = Instant::now();
        // Like the SDK, keep every plaintext.
        let mut plain = Vec::with_capacity(records.len() * 32);
        for r in &records {
            let header = RecordHeader::peek(r).unwrap();
            let (aad, rest) = r.split_at(HEADER_LEN);
            let (ct, tag) = rest.split_at(rest.len() - 16);
            let at = plain.len();
            plain.extend_from_slice(ct);
            let buf = &mut plain[at..];
            let mut nonce = [0u8; 12];
            nonce[4..].copy_from_slice(&header.nonce);
            ciphers[&header.leaf]
                .decrypt_in_place_detached(
                    Nonce::from_slice(&nonce),
                    aad,
                    buf,
                    Tag::from_slice(tag),
                )
                .unwrap();
        }
        let d = start.elapsed();
        assert_eq!(plain.len(), records.len() * 32);
        d
    };
    let sdk = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let start = Instant::now();
        let out = pool.install(|| decrypt_all(&trees, &records));
        let d = start.elapsed();
        assert_eq!(out.opened(), records.len());
        d
    };
    let opener_only = || {
        let start = Instant::now();
        let mut o = custos_proto::Opener::new(&c, &trees[0].spec, &trees[0].nodes);
        let mut buf = vec![0u8; 32];
        for r in &records {
            o.open(r, &mut buf).unwrap();
        }
        start.elapsed()
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (mut r, mut one, mut all) = (Vec::new(), Vec::new(), Vec::new());
    let mut oo = Vec::new();
    for _ in 0..RUNS {
        oo.push(opener_only());
        r.push(raw());
        one.push(sdk(1));
        all.push(sdk(cores));
    }
    let (r, one, all) = (median(r), median(one), median(all));
    let rate = |d: Duration| N as f64 / d.as_secs_f64();
    println!(
        "custos_proto::Opener alone, 1 core, reused buffer: {:?}",
        median(oo.clone())
    );
    println!(
        "records: {N} of 32 bytes over one month (31 day keys from 1 month node); medians of {RUNS} runs"
    );
    println!(
        "raw AES-256-GCM, 1 core:   {:>10.0} records/s ({:?})",
        rate(r),
        r
    );
    println!(
        "custos-app, 1 thread:      {:>10.0} records/s ({:?})  = {:.2} of raw",
        rate(one),
        one,
        rate(one) / rate(r)
    );
    println!(
        "custos-app, {cores} threads:     {:>10.0} records/s ({:?})  = {:.2}x one thread",
        rate(all),
        all,
        rate(all) / rate(one)
    );
}
