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

async fn backend(name: &str, location: &str, raw_url: &str, broker_port: u16) {
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
        url: format!("mqtt://127.0.0.1:{broker_port}"),
        prefix: prefix.clone(),
        client_id: format!("{prefix}-hub"),
        trust: custos_client::TlsTrust::System,
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
    let mqtt = MqttLink::connect(
        &format!("mqtt://127.0.0.1:{broker_port}"),
        &prefix,
        made.device,
    )
    .unwrap();

    // A lean MQTT client for the load: the hub is measured, not the agent's queue.
    let mut opts =
        rumqttc::v5::MqttOptions::new(format!("{prefix}-load"), "127.0.0.1", broker_port);
    opts.set_max_packet_size(Some(1 << 20));
    let mut net = opts.network_options();
    net.set_tcp_nodelay(true);
    opts.set_network_options(net);
    let (load, mut events) = rumqttc::v5::AsyncClient::new(opts, 64);
    let (ack_tx, mut acks) = tokio::sync::mpsc::channel::<Vec<u8>>(64);
    tokio::spawn(async move {
        while let Ok(ev) = events.poll().await {
            if let rumqttc::v5::Event::Incoming(rumqttc::v5::mqttbytes::v5::Packet::Publish(p)) = ev
            {
                let _ = ack_tx.send(p.payload.to_vec()).await;
            }
        }
    });
    load.subscribe(
        format!("{prefix}/{}/ack", made.device),
        rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
    )
    .await
    .unwrap();
    let http = custos_client::tls::http_client(
        reqwest::Client::builder(),
        &custos_client::TlsTrust::System,
    )
    .unwrap();
    let uplinks = format!("{url}/v1/devices/{}/uplinks", made.device);
    tokio::time::sleep(Duration::from_millis(500)).await;

    let (mut raw, mut over_http, mut over_mqtt, mut agent_http) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut next = 0u64;
    for run in 0..=RUNS {
        let t_raw = raw_insert(raw_url, made.device, 1_000_000_000 + next).await;
        next += ROWS;

        let batches = frames(made.device, &link, next, BATCH);
        next += ROWS;
        let started = Instant::now();
        for b in batches {
            let resp = http.post(&uplinks).body(b).send().await.unwrap();
            assert!(resp.status().is_success());
            assert_eq!(resp.bytes().await.unwrap().len(), BATCH * 24);
        }
        let t_http = started.elapsed();

        let batches = frames(made.device, &link, next, MQTT_BATCH);
        next += ROWS;
        let started = Instant::now();
        // All batches in flight at once, as several devices (or a device with a backlog) would send them.
        let n = batches.len();
        let topic = format!("{prefix}/{}/up", made.device);
        for b in batches {
            load.publish(
                topic.clone(),
                rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                false,
                b,
            )
            .await
            .unwrap();
        }
        for _ in 0..n {
            let ack = tokio::time::timeout(Duration::from_secs(10), acks.recv())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(ack.len(), MQTT_BATCH * 24);
        }
        let t_mqtt = started.elapsed();

        fill_queue(&dev_dir, made.device, &link, next);
        next += ROWS;
        let started = Instant::now();
        assert_eq!(agent.publish().await.unwrap().stored as u64, ROWS);
        let t_agent = started.elapsed();

        if run > 0 {
            // Run 0 warms caches and connections.
            raw.push(ROWS as f64 / t_raw.as_secs_f64());
            over_http.push(ROWS as f64 / t_http.as_secs_f64());
            over_mqtt.push(ROWS as f64 / t_mqtt.as_secs_f64());
            agent_http.push(ROWS as f64 / t_agent.as_secs_f64());
        }
    }
    let (r, h, m, a) = (
        median(raw),
        median(over_http),
        median(over_mqtt),
        median(agent_http),
    );
    println!(
        "{name:<27} raw insert {r:>7.0} rows/s | HTTP {h:>7.0} rows/s, ratio {:.2} | MQTT {m:>7.0} rows/s, ratio {:.2} | agent over HTTP, with its on-disk queue, {a:>6.0} rows/s",
        h / r,
        m / r
    );
    drop(mqtt);
    let _ = stop_tx.send(true);
    store.close().await;
}

/// Rows per HTTP batch.
const BATCH: usize = 500;
/// Rows per MQTT batch: about 250 KiB, the agent's limit for one MQTT message.
const MQTT_BATCH: usize = 1000;

/// `ROWS` uplinks from `first`, framed into batches of `BATCH` as a device sends them.
fn frames(device: DeviceId, link: &LinkKeys, first: u64, batch: usize) -> Vec<Vec<u8>> {
    let mut record = vec![0u8; BODY];
    record[0] = 0x11;
    record[1..9].copy_from_slice(&device.0);
    record[9..11].copy_from_slice(&1u16.to_be_bytes());
    record[11..15].copy_from_slice(&20_577u32.to_be_bytes());
    let seqs: Vec<u64> = (first..first + ROWS).collect();
    seqs.chunks(batch)
        .map(|chunk| {
            let mut body = Vec::new();
            for &seq in chunk {
                record[15..23].copy_from_slice(&seq.to_be_bytes());
                let mut msg = vec![0u8; BODY + UPLINK_OVERHEAD];
                seal_uplink(&RustCrypto, link, device, seq, &record, &mut msg).unwrap();
                body.extend_from_slice(&(msg.len() as u16).to_be_bytes());
                body.extend_from_slice(&msg);
            }
            body
        })
        .collect()
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
        // The machine's Mosquitto with its defaults, and a private one with `set_tcp_nodelay true`, as a
        // production broker should run: without it, Nagle's algorithm and delayed ACKs stall some batches.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let conf = dir.path().join("mosquitto.conf");
        let settings = format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nset_tcp_nodelay true\n");
        std::fs::write(&conf, settings).unwrap();
        let mut broker = std::process::Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("mosquitto");
        tokio::time::sleep(Duration::from_millis(300)).await;
        let lite = format!("sqlite://{}", sqlite.display());
        backend("SQLite, machine broker", sqlite.to_str().unwrap(), &lite, 1883).await;
        backend("SQLite, NODELAY broker", sqlite.to_str().unwrap(), &lite, port).await;
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
        backend("PostgreSQL, machine broker", &url, &url, 1883).await;
        backend("PostgreSQL, NODELAY broker", &url, &url, port).await;
        let _ = broker.kill();
        let _ = broker.wait();
        sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
            .execute(&mut admin)
            .await
            .unwrap();
    });
}
