//! Ingest throughput of the hub, over HTTP batches and over MQTT, on SQLite and on PostgreSQL, each as a ratio to
//! a raw multi-row INSERT of the same rows into the same database in the same run; and the admission handshake's
//! bytes and CPU time per join on each side.
//!
//! Run: `cargo bench -p custos-device --bench ingest` (needs PostgreSQL and Mosquitto on 127.0.0.1, like the
//! tests). Prints medians over several runs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::Path;
use std::time::{Duration, Instant};

use custos_device::agent::{Agent, MqttLink};
use custos_device::{DeviceState, Factory};
use custos_hub::mqtt::MqttConfig;
use custos_hub::{Hub, HubKeys, app};
use custos_proto::admission::{DeviceAwaitingResponse, HubAwaitingCode};
use custos_proto::uplink::{LinkKeys, UPLINK_OVERHEAD, seal_uplink};
use custos_proto::{DeviceId, RustCrypto, Secret};
use custos_store::{AnyStore, PendingAdmission, Store};
use rand_core::{OsRng, RngCore};
use sqlx::Connection;
use tokio::sync::watch;

const ROWS: u64 = 2000;
const RUNS: usize = 7;
const BODY: usize = 64 + 39; // a 64-byte reading, sealed

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Writes `ROWS` uplinks starting at `first` straight into the device's queue (preparation, not measured).
fn fill_queue(dir: &Path, device: DeviceId, link: &LinkKeys, first: u64) {
    let mut record = vec![0u8; BODY];
    record[0] = 0x11;
    record[1..9].copy_from_slice(&device.0);
    record[9..11].copy_from_slice(&1u16.to_be_bytes());
    for seq in first..first + ROWS {
        record[11..15].copy_from_slice(&20_577u32.to_be_bytes());
        record[15..23].copy_from_slice(&seq.to_be_bytes());
        let mut msg = vec![0u8; BODY + UPLINK_OVERHEAD];
        seal_uplink(&RustCrypto, link, device, seq, &record, &mut msg).unwrap();
        std::fs::write(dir.join("queue").join(format!("{seq:016x}.up")), &msg).unwrap();
    }
}

/// A plain multi-row INSERT of `ROWS` rows like the hub's, in one transaction.
async fn raw_insert(url: &str, device: DeviceId, first: u64) -> Duration {
    let body = [0xabu8; BODY];
    let started = Instant::now();
    if url.starts_with("postgres") {
        let mut c = sqlx::PgConnection::connect(url).await.unwrap();
        let mut tx = c.begin().await.unwrap();
        for chunk in (first..first + ROWS).collect::<Vec<_>>().chunks(1000) {
            let mut q = sqlx::QueryBuilder::<sqlx::Postgres>::new(
                "INSERT INTO records (device, seq, epoch, leaf, body, received_at) ",
            );
            q.push_values(chunk, |mut b, s| {
                b.push_bind(&device.0[..])
                    .push_bind(*s as i64)
                    .push_bind(1i32)
                    .push_bind(20_577i64)
                    .push_bind(&body[..])
                    .push_bind(0i64);
            });
            q.build().execute(&mut *tx).await.unwrap();
        }
        tx.commit().await.unwrap();
    } else {
        let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
        let mut tx = c.begin().await.unwrap();
        for chunk in (first..first + ROWS).collect::<Vec<_>>().chunks(1000) {
            let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
                "INSERT INTO records (device, seq, epoch, leaf, body, received_at) ",
            );
            q.push_values(chunk, |mut b, s| {
                b.push_bind(&device.0[..])
                    .push_bind(*s as i64)
                    .push_bind(1i32)
                    .push_bind(20_577i64)
                    .push_bind(&body[..])
                    .push_bind(0i64);
            });
            q.build().execute(&mut *tx).await.unwrap();
        }
        tx.commit().await.unwrap();
    }
    started.elapsed()
}

async fn backend(name: &str, location: &str, raw_url: &str) {
    let dir = tempfile::tempdir().unwrap();
    let store = AnyStore::open(location).await.unwrap();
    let hub = Hub::new(store.clone(), HubKeys::generate());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop_tx, stop) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let router = app(hub.clone());
    let s1 = stop.clone();
    tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(stopped(s1))
            .await
            .unwrap()
    });
    let mut tag = [0u8; 6];
    OsRng.fill_bytes(&mut tag);
    let prefix = format!("custos-bench-{}", hex::encode(tag));
    let config = MqttConfig {
        url: "mqtt://127.0.0.1:1883".into(),
        prefix: prefix.clone(),
        client_id: format!("{prefix}-hub"),
    };
    tokio::spawn(custos_hub::mqtt::run(hub.clone(), config, stopped(stop)));

    let made = Factory::make(&mut OsRng);
    let dev_dir = dir.path().join("dev");
    made.write_state(&dev_dir).unwrap();
    store
        .put_admission(&PendingAdmission {
            device: made.device,
            join_code: made.join_code,
            created_at: 0,
            expires_at: i64::MAX,
        })
        .await
        .unwrap();
    let mut agent = Agent::open(&dev_dir).unwrap();
    agent.join(&url, 0).await.unwrap();
    let session = DeviceState::read(&dev_dir).unwrap().session.unwrap();
    let link = LinkKeys::derive(&RustCrypto, &session.session_key).unwrap();
    let mut mqtt = MqttLink::connect("mqtt://127.0.0.1:1883", &prefix, made.device).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;

    let (mut raw, mut http, mut over_mqtt) = (Vec::new(), Vec::new(), Vec::new());
    let mut next = 0u64;
    for run in 0..=RUNS {
        let t = raw_insert(raw_url, made.device, 1_000_000_000 + next).await;
        next += ROWS;
        fill_queue(&dev_dir, made.device, &link, next);
        let started = Instant::now();
        let p = agent.publish().await.unwrap();
        let t_http = started.elapsed();
        assert_eq!(p.stored as u64, ROWS);
        next += ROWS;
        fill_queue(&dev_dir, made.device, &link, next);
        let started = Instant::now();
        let p = agent.publish_mqtt(&mut mqtt).await.unwrap();
        let t_mqtt = started.elapsed();
        assert_eq!(p.stored as u64, ROWS);
        next += ROWS;
        if run > 0 {
            // Run 0 warms caches and connections.
            raw.push(ROWS as f64 / t.as_secs_f64());
            http.push(ROWS as f64 / t_http.as_secs_f64());
            over_mqtt.push(ROWS as f64 / t_mqtt.as_secs_f64());
        }
    }
    let (r, h, m) = (median(raw), median(http), median(over_mqtt));
    println!(
        "{name:<10} raw insert {r:>9.0} rows/s | HTTP {h:>9.0} rows/s, ratio {:.2} | MQTT {m:>9.0} rows/s, ratio {:.2}",
        h / r,
        m / r
    );
    let _ = stop_tx.send(true);
    store.close().await;
}

fn admission() {
    let code = [7u8; 16];
    let device = DeviceId([2, 0, 0, 0, 0, 0, 0, 1]);
    let (dev_key, hub_key) = (Secret::from_bytes([1; 32]), Secret::from_bytes([2; 32]));
    let fresh = || {
        let mut b = [0u8; 32];
        OsRng.fill_bytes(&mut b);
        Secret::from_bytes(b)
    };
    let (mut on_device, mut on_hub, mut sizes) = (Vec::new(), Vec::new(), [0usize; 4]);
    for _ in 0..200 {
        let (e1, e2) = (fresh(), fresh());
        let t = Instant::now();
        let (d, hello) = DeviceAwaitingResponse::start(device, &dev_key, &code, e1, None).unwrap();
        let mut td = t.elapsed();
        let t = Instant::now();
        let (h, response) = HubAwaitingCode::read_hello(&hub_key, e2, &hello)
            .unwrap()
            .respond(&code)
            .unwrap();
        let mut th = t.elapsed();
        let t = Instant::now();
        let (d, finish) = d.read_response(&response).unwrap();
        td += t.elapsed();
        let t = Instant::now();
        let (_, welcome) = h.read_finish(&finish).unwrap();
        th += t.elapsed();
        let t = Instant::now();
        d.read_welcome(&welcome).unwrap();
        td += t.elapsed();
        on_device.push(td.as_secs_f64() * 1e6);
        on_hub.push(th.as_secs_f64() * 1e6);
        sizes = [hello.len(), response.len(), finish.len(), welcome.len()];
    }
    println!(
        "admission  messages {sizes:?} = {} bytes | CPU per join: device {:.0} µs, hub {:.0} µs (medians of 200)",
        sizes.iter().sum::<usize>(),
        median(on_device),
        median(on_hub)
    );
}

fn main() {
    // `cargo test --benches` runs bench binaries with --bench absent; do the work only under `cargo bench`.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    admission();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let sqlite = dir.path().join("bench.db");
        backend(
            "SQLite",
            sqlite.to_str().unwrap(),
            &format!("sqlite://{}", sqlite.display()),
        )
        .await;
        let admin_url = std::env::var("CUSTOS_TEST_POSTGRES")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let mut tag = [0u8; 6];
        OsRng.fill_bytes(&mut tag);
        let name = format!("custos_b_{}", hex::encode(tag));
        let mut admin = sqlx::PgConnection::connect(&admin_url).await.unwrap();
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .unwrap();
        let url = format!("{}/{name}", admin_url.rsplit_once('/').unwrap().0);
        backend("PostgreSQL", &url, &url).await;
        sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
            .execute(&mut admin)
            .await
            .unwrap();
    });
}
