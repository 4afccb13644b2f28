//! Two hub replicas on one PostgreSQL share the devices' MQTT topics; one is killed (SIGKILL) and later started
//! again. The dead replica must hold nothing back: every device still delivers every reading promptly, and the
//! store keeps each exactly once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::{custos, free_port, serve};

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rand_core::{OsRng, RngCore};
use sqlx::Connection;

const BROKER: &str = "mqtt://127.0.0.1:1883";
const DEVICES: usize = 4;
const READINGS: u64 = 60;

fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

/// `custos hub serve` on PostgreSQL and the shared broker.
fn replica(dir: &Path, data: &str, database: &str, prefix: &str, port: u16) -> Child {
    let args = ["--data-dir", data, "--database", database, "--mqtt", BROKER];
    serve(dir, &[&args[..], &["--mqtt-prefix", prefix]].concat(), port)
}

struct Killed(Vec<Child>);

impl Drop for Killed {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn a_killed_mqtt_replica_holds_nothing_back() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let admin_url = std::env::var("CUSTOS_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let name = format!("custos_t_{}", random_hex(6));
    let mut admin = rt
        .block_on(sqlx::PgConnection::connect(&admin_url))
        .expect("PostgreSQL is required for this test");
    rt.block_on(sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut admin))
        .unwrap();
    let url = format!("{}/{name}", admin_url.rsplit_once('/').unwrap().0);
    let result = std::panic::catch_unwind(|| run(&rt, &url));
    rt.block_on(sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)")).execute(&mut admin))
        .unwrap();
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

fn run(rt: &tokio::runtime::Runtime, database: &str) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let prefix = format!("custos-test-{}", random_hex(6));
    custos(d, &["master", "new"]);
    let mut devices = Vec::new();
    for i in 0..DEVICES {
        let state = format!("dev{i}");
        let made: serde_json::Value = serde_json::from_slice(&custos(
            d,
            &["device", "make", "--state-dir", &state, "--json"],
        ))
        .unwrap();
        let id = made["device"].as_str().unwrap().to_string();
        custos(
            d,
            &[
                "hub",
                "admit",
                "--data-dir",
                "hub",
                "--database",
                database,
                "--device",
                &id,
                "--code",
                made["join_code"].as_str().unwrap(),
            ],
        );
        let keys = format!("dpk{i}.json");
        custos(
            d,
            &["dpk", "new", "--device", &id, "--epoch", "1", "-o", &keys],
        );
        devices.push((state, keys));
    }
    // The second replica shares the first one's keys, as replicas must.
    std::fs::create_dir(d.join("hub2")).unwrap();
    std::fs::copy(d.join("hub/hub-keys.json"), d.join("hub2/hub-keys.json")).unwrap();
    let (port1, port2) = (free_port(), free_port());
    let mut hubs = Killed(vec![replica(d, "hub", database, &prefix, port1)]);
    // ... and its TLS certificate (made at its first start), as replicas behind one name do.
    for f in ["tls.crt", "tls.key"] {
        std::fs::copy(d.join("hub").join(f), d.join("hub2").join(f)).unwrap();
    }
    hubs.0.push(replica(d, "hub2", database, &prefix, port2));
    std::thread::sleep(Duration::from_secs(2)); // both subscribed

    // The second replica dies without a word.
    hubs.0[1].kill().unwrap();
    hubs.0[1].wait().unwrap();

    let started = Instant::now();
    let url1 = common::hub_url(port1);
    let mut agents = Killed(
        devices
            .iter()
            .map(|(state, keys)| {
                common::trusting(&mut Command::new(env!("CARGO_BIN_EXE_custos")), d)
                    .args(["device", "run", "--state-dir", state, "--hub", &url1])
                    .args(["--keys", keys, "--mqtt", BROKER, "--mqtt-prefix", &prefix])
                    .args(["--every", "50ms", "--count", &READINGS.to_string()])
                    .current_dir(d)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect(),
    );
    // Half way, the dead replica comes back (a new session: it must not replay anything stale).
    std::thread::sleep(Duration::from_secs(2));
    hubs.0[1] = replica(d, "hub2", database, &prefix, port2);

    // Each agent sends READINGS readings over about 3 s, then drains its queue and exits. A replica that kept
    // its share of the batches while dead would cost 10 s (an agent's ack timeout) per batch it swallowed.
    let deadline = Instant::now() + Duration::from_secs(45);
    for (i, agent) in agents.0.iter_mut().enumerate() {
        loop {
            if let Some(status) = agent.try_wait().unwrap() {
                assert!(status.success(), "agent {i} failed: {status}");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "agent {i} still draining after {:?}",
                started.elapsed()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let took = started.elapsed();

    let counts: Vec<(i64, i64, i64)> = rt.block_on(async {
        let mut db = sqlx::PgConnection::connect(database).await.unwrap();
        sqlx::query_as(
            "SELECT count(*), count(DISTINCT seq), max(seq) FROM records GROUP BY device ORDER BY device",
        )
        .fetch_all(&mut db)
        .await
        .unwrap()
    });
    let want = i64::try_from(READINGS).unwrap();
    assert_eq!(counts.len(), DEVICES, "{counts:?}");
    for c in &counts {
        assert_eq!(*c, (want, want, want - 1), "every reading once, none lost");
    }
    assert!(took < Duration::from_secs(30), "took {took:?}");
}
