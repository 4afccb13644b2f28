//! End-to-end latency on loopback, from an application's request to its first decrypted record, with a policy
//! that approves by itself: the app signs and posts a request; the keeper, long-polling its inbox, verifies it,
//! applies the policy, derives the cover, seals it with HPKE, logs the decision and posts the grant; the app,
//! long-polling for the answer, opens the grant, fetches the week's records and decrypts them.
//!
//! `cargo bench -p custos-keeper --bench latency` — prints p50 / p90 / p99 over 200 requests, and the parts.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use custos_app::{Answer, App, Ask, decrypt_all};
use custos_hub::serve::{ServeConfig, spawn};
use custos_keeper::Keeper;
use custos_proto::{DeviceId, Epoch, RustCrypto, Schedule, Span, Suite, TreeSpec, UnixTime};
use custos_store::{AnyStore, Device, NewRecord, PendingAdmission, Store};
use custos_vault::{KdfParams, Unlock};

const DEV: DeviceId = DeviceId([2, 0, 0x5e, 0x10, 0, 0, 0, 1]);
const RUNS: usize = 200;

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn wall() -> UnixTime {
    UnixTime::new(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run());
}

async fn run() {
    let dir = std::env::temp_dir().join(format!("custos-latency-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let hub = spawn(ServeConfig {
        registry: None,
        data_dir: dir.join("hub"),
        listen: "127.0.0.1:0".parse().unwrap(),
        database: None,
        mqtt: None,
        // A benchmark from one address: no per-address rate limits.
        accounts: Default::default(),
        limits: custos_hub::serve::Limits {
            write_rate: custos_hub::serve::Rate::UNLIMITED,
            read_rate: custos_hub::serve::Rate::UNLIMITED,
            ..Default::default()
        },
        tls: custos_hub::serve::HubTls::Plain,
    })
    .await
    .unwrap();
    let url = hub.url();
    let pass = Unlock::Passphrase("bench");
    let kdir = dir.join("keeper");
    let mut keeper = Keeper::init(&kdir, pass, KdfParams::new(256, 1, 1).unwrap()).unwrap();
    std::fs::write(kdir.join("policy.toml"), "default = \"allow\"\n").unwrap();
    let year = Span::new(
        UnixTime::from_date(2026, 1, 1).unwrap(),
        UnixTime::from_date(2027, 1, 1).unwrap(),
    )
    .unwrap();
    let spec = TreeSpec::new(DEV, Epoch(1), Schedule::default(), year).unwrap();
    let provision = keeper
        .new_epoch(
            spec,
            Suite::AES256GCM,
            UnixTime::from_date(2026, 1, 1).unwrap(),
        )
        .unwrap();

    // A week of readings every 10 minutes at the hub: 1,008 records.
    let store = AnyStore::open(dir.join("hub/hub.db").to_str().unwrap())
        .await
        .unwrap();
    store
        .put_admission(&PendingAdmission {
            device: DEV,
            join_code: [0; 16],
            created_at: 0,
            expires_at: i64::MAX,
        })
        .await
        .unwrap();
    store
        .complete_admission(
            &Device {
                device: DEV,
                static_key: [1; 32],
                session_key: [2; 32],
                admitted_at: 0,
                revoked_at: None,
                max_seq: -1,
            },
            0,
        )
        .await
        .unwrap();
    let week = Span::new(
        UnixTime::from_date(2026, 3, 8).unwrap(),
        UnixTime::from_date(2026, 3, 15).unwrap(),
    )
    .unwrap();
    let mut records = Vec::new();
    for i in 0..1008u64 {
        let t = UnixTime::new(week.start().secs() + i * 600).unwrap();
        let leaf = spec.leaf_at(t).unwrap();
        let holder = spec
            .holder(provision.nodes(), spec.leaf_node(leaf))
            .unwrap()
            .unwrap();
        let key = spec
            .leaf_key(&RustCrypto, holder, leaf, Suite::AES256GCM)
            .unwrap();
        let mut body = vec![0u8; 23 + custos_proto::record::OVERHEAD];
        key.seal(
            &RustCrypto,
            i.to_be_bytes(),
            b"{\"temp_c\":21.5,\"rh\":40}",
            &mut body,
        )
        .unwrap();
        records.push(NewRecord {
            device: DEV,
            seq: i,
            epoch: 1,
            leaf,
            body,
            received_at: 0,
        });
    }
    store.insert_records(&records).await.unwrap();

    // The keeper serves: it long-polls its inbox and answers by policy.
    let owner = keeper.owner();
    let keeper_url = url.clone();
    let serving = tokio::spawn(async move {
        loop {
            if let Err(e) = keeper
                .sync_waiting(&keeper_url, Duration::from_secs(5))
                .await
            {
                eprintln!("keeper: {e}");
            }
        }
    });

    let app = App::create(&dir.join("app"), "bench").unwrap();
    let (mut total, mut granted, mut fetched) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..RUNS + 10 {
        let t0 = Instant::now();
        let sent = app
            .request(
                &url,
                &Ask {
                    owner,
                    devices: vec![DEV],
                    range: week,
                    purpose: "bench".into(),
                    purpose_text: "latency".into(),
                    retention: 60,
                    expires: UnixTime::new(wall().secs() + 3600).unwrap(),
                },
            )
            .await
            .unwrap();
        let Answer::Granted(trees) = app.wait(&sent.id, Duration::from_secs(30)).await.unwrap()
        else {
            panic!("denied")
        };
        let t1 = Instant::now();
        let got = app.fetch_records(&url, &trees[0], week).await.unwrap();
        let t2 = Instant::now();
        let opened = decrypt_all(&trees, &got);
        let first = opened.iter().next().unwrap().unwrap();
        assert_eq!(first.1, b"{\"temp_c\":21.5,\"rh\":40}");
        let t3 = Instant::now();
        assert_eq!(opened.opened(), 1008);
        if i >= 10 {
            // The first ten warm up connections and caches.
            granted.push(t1 - t0);
            fetched.push(t2 - t1);
            total.push(t3 - t0);
        }
    }
    serving.abort();
    for v in [&mut total, &mut granted, &mut fetched] {
        v.sort();
    }
    println!(
        "{RUNS} requests for one week (1 node secret, 1,008 records), auto-approving policy, loopback, SQLite:"
    );
    for (what, v) in [
        ("request -> first decrypted record", &total),
        ("  request -> grant opened", &granted),
        ("  fetch 1,008 records", &fetched),
    ] {
        println!(
            "{what:<36} p50 {:>8.2} ms   p90 {:>8.2} ms   p99 {:>8.2} ms",
            pct(v, 0.5).as_secs_f64() * 1e3,
            pct(v, 0.9).as_secs_f64() * 1e3,
            pct(v, 0.99).as_secs_f64() * 1e3
        );
    }
    hub.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
