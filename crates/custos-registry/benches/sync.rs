//! Sync between two registries on loopback: a manufacturer's registry with N device identities (default 100,000;
//! `CUSTOS_SYNC_N`), a second registry that pulls them all, then 100 changes (statuses) and a second pull. Reported:
//! time and bytes of each pull, bytes per entry against the entries' own bytes (the raw baseline, in the same run),
//! and the time of a full pull against importing the same entries locally with no network and no log checks.
//!
//! `cargo bench -p custos-registry --bench sync`
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::Arc;
use std::time::Instant;

use custos_proto::{DeviceId, Secret};
use custos_registry::cert::{self, Claims, Ed25519Key};
use custos_registry::policy::Pull;
use custos_registry::policy::policy_toml;
use custos_registry::statement::{Statement, Status};
use custos_registry::{Policy, Registry};
use custos_store::{RegistryStore, SqliteStore};

const AT: u32 = 1_780_000_000;
const NOW: u64 = AT as u64 + 10;

fn policy(name: &str, maker: &Ed25519Key, maint: &Ed25519Key) -> Policy {
    Policy::parse(&policy_toml(
        name,
        "devices",
        &[
            ("acme", &maker.fingerprint(), &["manufacturer"]),
            ("maint", &maint.fingerprint(), &["maintainer"]),
        ],
        &[("devices", &["*"], &["acme", "maint"])],
    ))
    .unwrap()
}

async fn open(dir: &std::path::Path, p: Policy, seed: u8) -> Arc<Registry<SqliteStore>> {
    let store = SqliteStore::open(&dir.join(format!("{seed}.db")))
        .await
        .unwrap();
    Arc::new(
        Registry::open(store, p, Secret::from_bytes([seed; 32]))
            .await
            .unwrap(),
    )
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1 << 20) as f64)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: u64 = std::env::var("CUSTOS_SYNC_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let changes = 100u64;
    let dir = tempfile::tempdir().unwrap();
    let maker = Ed25519Key::from_seed(&[1; 32], AT).unwrap();
    let maint = Ed25519Key::from_seed(&[2; 32], AT).unwrap();
    let a = open(dir.path(), policy("manufacturer", &maker, &maint), 11).await;
    for (k, uid) in [(&maker, "Acme"), (&maint, "Maint")] {
        a.submit_certs(
            &cert::to_bytes(&cert::party_certificate(k, uid).unwrap()).unwrap(),
            None,
            NOW,
        )
        .await
        .unwrap();
    }
    eprintln!("making and loading {n} device identities…");
    let t = Instant::now();
    let mut fingerprints = Vec::new();
    for i in 0..n {
        let mut seed = [0u8; 32];
        seed[..8].copy_from_slice(&i.to_be_bytes());
        seed[8] = 0xd0;
        let id = DeviceId((i | 0x0200_0000_0000_0000).to_be_bytes());
        let identity = Ed25519Key::from_seed(&seed, AT).unwrap();
        let mut c = cert::device_certificate(
            &identity,
            id,
            x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(seed)).to_bytes(),
        )
        .unwrap();
        let claims = Claims {
            role: "manufacturer".into(),
            attributes: vec![
                ("model".into(), "TH-1".into()),
                ("lot".into(), format!("{}", i / 1000)),
            ],
        };
        let sig = cert::certify(&maker, &c, &claims, AT + 1).unwrap();
        c.details.users[0].signatures.push(sig);
        a.submit_certs(&cert::to_bytes(&c).unwrap(), None, NOW)
            .await
            .unwrap();
        fingerprints.push(identity.fingerprint());
    }
    let load = t.elapsed();
    let size = a.size().await;
    let raw: u64 = a
        .store()
        .log_entries(0, u32::MAX, None)
        .await
        .unwrap()
        .iter()
        .map(|e| e.data.len() as u64)
        .sum();
    eprintln!(
        "loaded {size} entries ({}) in {:.1} s",
        mib(raw),
        load.as_secs_f64()
    );

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = custos_registry::http::app(a.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let pull = Pull {
        name: "manufacturer".into(),
        url: url.clone(),
        key: a.verifier_key().unwrap(),
        domains: vec!["devices".into()],
        reader_key: None,
    };
    let http = custos_registry::sync::client(&url).unwrap();

    let b = open(dir.path(), policy("maintenance", &maker, &maint), 12).await;
    let t = Instant::now();
    let first = custos_registry::sync::pull(&b, &pull, &http, NOW)
        .await
        .unwrap();
    let full = t.elapsed();
    assert_eq!(first.taken, size, "every entry taken: {first:?}");
    assert_eq!(b.store().cert_count().await.unwrap(), n + 2);

    // The baseline: the same entries imported straight into a third registry, no network, no log checks.
    let entries = a.store().log_entries(0, u32::MAX, None).await.unwrap();
    let c = open(dir.path(), policy("direct", &maker, &maint), 13).await;
    let t = Instant::now();
    for e in &entries {
        c.submit_certs(&e.data, Some(&e.domain), NOW).await.unwrap();
    }
    let direct = t.elapsed();

    // 100 changes: statuses of 100 devices.
    for f in fingerprints.iter().take(changes as usize) {
        let s = Statement::Status {
            signer: maint.fingerprint(),
            subject: f.to_vec(),
            issued_at: NOW,
            status: Status::InUse,
            domain: "devices".into(),
            note: String::new(),
        };
        a.submit_statement(&s.sign(&maint).unwrap(), NOW)
            .await
            .unwrap();
    }
    let change_raw: u64 = a
        .store()
        .log_entries(size, u32::MAX, None)
        .await
        .unwrap()
        .iter()
        .map(|e| e.data.len() as u64)
        .sum();
    let t = Instant::now();
    let second = custos_registry::sync::pull(&b, &pull, &http, NOW)
        .await
        .unwrap();
    let incremental = t.elapsed();
    assert_eq!(second.taken, changes);
    let t = Instant::now();
    let idle = custos_registry::sync::pull(&b, &pull, &http, NOW)
        .await
        .unwrap();
    let nothing = t.elapsed();

    println!(
        "\nsync of {n} device identities between two registries on loopback (SQLite, 2 worker threads)\n"
    );
    println!("| pull | entries | bytes received | entries' own bytes | ratio | time |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| full ({n} identities + 2 parties) | {} | {} | {} | {:.2} | {:.1} s |",
        first.taken,
        mib(first.bytes),
        mib(raw),
        first.bytes as f64 / raw as f64,
        full.as_secs_f64()
    );
    println!(
        "| {changes} changes after it | {} | {} B ({:.0} B per change) | {} B | {:.2} | {:.3} s |",
        second.taken,
        second.bytes,
        second.bytes as f64 / changes as f64,
        change_raw,
        second.bytes as f64 / change_raw as f64,
        incremental.as_secs_f64()
    );
    println!(
        "| nothing new | 0 | {} B | 0 B | — | {:.3} s |",
        idle.bytes,
        nothing.as_secs_f64()
    );
    println!(
        "\nfull pull {:.1} s against a direct local import of the same entries {:.1} s: {:.2}×; loading the manufacturer took {:.1} s",
        full.as_secs_f64(),
        direct.as_secs_f64(),
        full.as_secs_f64() / direct.as_secs_f64(),
        load.as_secs_f64()
    );
}
