//! The agent against a real hub on loopback: it joins with its code, streams readings, keeps them on disk while
//! the hub is down and across its own restart, and every record arrives exactly once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::path::Path;

use custos_device::Factory;
use custos_device::agent::{Agent, AgentError};
use custos_device::keyfile::Keys;
use custos_hub::serve::{Running, ServeConfig, spawn};
use custos_proto::cose::DeviceList;
use custos_proto::{
    Crypto, DeviceId, Epoch, MasterSecret, Opener, RecordHeader, RustCrypto, Schedule, Secret,
    Span, Suite, TreeSpec, UnixTime,
};
use custos_store::{AnyStore, PendingAdmission, RecordQuery, Store};
use rand_core::OsRng;

/// A hub in `dir/hub` and a device in `dir/device`, admitted and joined.
async fn joined() -> (tempfile::TempDir, Running, AnyStore, Factory, Agent) {
    let dir = tempfile::tempdir().unwrap();
    let hub_dir = dir.path().join("hub");
    let made = Factory::make(&mut OsRng);
    made.write_state(&dir.path().join("device")).unwrap();
    let hub = start_hub(&hub_dir, "127.0.0.1:0".parse().unwrap()).await;
    let store = AnyStore::open(hub_dir.join("hub.db").to_str().unwrap())
        .await
        .unwrap();
    store
        .put_admission(&PendingAdmission {
            device: made.device,
            join_code: made.join_code,
            created_at: 0,
            expires_at: i64::MAX,
        })
        .await
        .unwrap();
    let mut agent = Agent::open(&dir.path().join("device")).unwrap();
    agent.join(&hub.url(), 0).await.unwrap();
    (dir, hub, store, made, agent)
}

async fn start_hub(data: &Path, listen: SocketAddr) -> Running {
    spawn(ServeConfig {
        registry: None,
        data_dir: data.to_path_buf(),
        listen,
        database: None,
        mqtt: None,
        accounts: Default::default(),
        limits: Default::default(),
        // Plain HTTP on loopback: the TLS paths have their own tests (custos-hub tests/tls.rs, the CLI tests).
        tls: custos_hub::serve::HubTls::Plain,
    })
    .await
    .unwrap()
}

async fn stop_hub(h: Running) {
    h.stop().await.unwrap();
}

fn year_keys(device: DeviceId, master: &MasterSecret) -> Keys {
    let span = Span::new(
        UnixTime::from_date(2026, 1, 1).unwrap(),
        UnixTime::from_date(2027, 1, 1).unwrap(),
    )
    .unwrap();
    let spec = TreeSpec::new(device, Epoch(1), Schedule::default(), span).unwrap();
    Keys {
        spec,
        suite: Suite::AES256GCM,
        nodes: vec![spec.root(&RustCrypto, master).unwrap()],
    }
}

fn at(minutes: u64) -> UnixTime {
    UnixTime::new(UnixTime::from_date(2026, 3, 9).unwrap().secs() + minutes * 60).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_survive_a_hub_outage_and_an_agent_restart_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let hub_dir = dir.path().join("hub");
    let dev_dir = dir.path().join("device");
    let made = Factory::make(&mut OsRng);
    made.write_state(&dev_dir).unwrap();
    let device = made.device;

    let hub = start_hub(&hub_dir, "127.0.0.1:0".parse().unwrap()).await;
    let url = format!("http://{}", hub.addr);
    {
        let store = AnyStore::open(hub_dir.join("hub.db").to_str().unwrap())
            .await
            .unwrap();
        store
            .put_admission(&PendingAdmission {
                device,
                join_code: made.join_code,
                created_at: 0,
                expires_at: i64::MAX,
            })
            .await
            .unwrap();
        store.close().await;
    }

    let mut agent = Agent::open(&dev_dir).unwrap();
    assert!(matches!(
        agent.seal(b"x", at(0)),
        Err(AgentError::NotJoined)
    ));
    agent.join(&url, 0).await.unwrap();
    let info: serde_json::Value = serde_json::from_slice(
        &plain_get(format!("{url}/v1/hub"))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        agent.hub_signing_key().map(hex::encode),
        info["signing_public"].as_str().map(str::to_string),
        "the device pinned the hub's list-signing key, received under its session"
    );
    let master = MasterSecret::new(Secret::from_bytes([0x4d; 32]));
    let kept = agent.provision(&year_keys(device, &master), at(0)).unwrap();
    assert!(kept > 1, "the device keeps a frontier, not the DPK");
    for i in 0..5 {
        agent
            .seal(format!("reading {i}").as_bytes(), at(i))
            .unwrap();
    }
    let sent = agent.publish().await.unwrap();
    assert_eq!((sent.stored, sent.pending), (5, 0));

    // The hub goes down; the agent keeps sealing into its queue.
    stop_hub(hub).await;
    for i in 5..10 {
        agent
            .seal(format!("reading {i}").as_bytes(), at(i))
            .unwrap();
    }
    assert!(matches!(
        agent.publish().await,
        Err(AgentError::Unreachable(_))
    ));
    assert_eq!(agent.queued().unwrap().len(), 5);

    // The agent restarts (its state is all on disk) and the hub comes back on the same address.
    drop(agent);
    let hub = start_hub(&hub_dir, url.trim_start_matches("http://").parse().unwrap()).await;
    let mut agent = Agent::open(&dev_dir).unwrap();
    agent.join(&url, 0).await.unwrap(); // already joined: a no-op, the code is gone
    agent.seal(b"reading 10", at(10)).unwrap();
    let sent = agent.publish().await.unwrap();
    assert_eq!((sent.stored, sent.duplicates, sent.pending), (6, 0, 0));
    stop_hub(hub).await;

    // Every reading is stored exactly once, in order, and opens under the DPK.
    let store = AnyStore::open(hub_dir.join("hub.db").to_str().unwrap())
        .await
        .unwrap();
    let q = RecordQuery {
        device,
        epoch: 1,
        leaf_from: 0,
        leaf_until: u32::MAX,
        after: None,
        limit: 100,
    };
    let records = store.records(&q).await.unwrap();
    store.close().await;
    let seqs: Vec<u64> = records.iter().map(|r| r.record.seq).collect();
    assert_eq!(seqs, (0..11).collect::<Vec<_>>());
    let keys = year_keys(device, &master);
    let mut opener = Opener::new(&RustCrypto, &keys.spec, &keys.nodes);
    for (i, r) in records.iter().enumerate() {
        let mut out = vec![0u8; r.record.body.len()];
        let (h, n) = opener.open(&r.record.body, &mut out).unwrap();
        assert_eq!(&out[..n], format!("reading {i}").as_bytes());
        assert_eq!(h, RecordHeader::peek(&r.record.body).unwrap());
    }
    // The device's key file holds only its frontier: nothing there opens the day before.
    let held = custos_device::keyfile::read_keys(&dev_dir.join("keys.json")).unwrap();
    let day_before = held
        .spec
        .leaf_at(UnixTime::from_date(2026, 3, 8).unwrap())
        .unwrap();
    assert!(
        held.spec
            .holder(&held.nodes, held.spec.leaf_node(day_before))
            .unwrap()
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_with_a_wrong_code_is_told_why_and_stays_unjoined() {
    let dir = tempfile::tempdir().unwrap();
    let made = Factory::make(&mut OsRng);
    made.write_state(&dir.path().join("device")).unwrap();
    let hub = start_hub(&dir.path().join("hub"), "127.0.0.1:0".parse().unwrap()).await;
    {
        let store = AnyStore::open(dir.path().join("hub/hub.db").to_str().unwrap())
            .await
            .unwrap();
        let mut wrong = made.join_code;
        wrong[3] ^= 0x40;
        store
            .put_admission(&PendingAdmission {
                device: made.device,
                join_code: wrong,
                created_at: 0,
                expires_at: i64::MAX,
            })
            .await
            .unwrap();
        store.close().await;
    }
    let mut agent = Agent::open(&dir.path().join("device")).unwrap();
    match agent.join(&format!("http://{}", hub.addr), 0).await {
        Err(AgentError::Refused {
            status: 401,
            message,
        }) => assert!(message.contains("wrong join code"), "{message}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(!agent.joined());
    assert!(
        !Agent::open(&dir.path().join("device")).unwrap().joined(),
        "a failed join was saved"
    );
    stop_hub(hub).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_checks_the_signed_device_list_and_notices_its_revocation() {
    let (dir, hub, store, made, mut agent) = joined().await;
    let hub_dir = dir.path().join("hub");
    let first = agent.refresh_device_list().await.unwrap();
    assert!(first.authorized && first.changed);
    let captured = operator_get(&hub_dir, format!("{}/v1/device-list", hub.url()))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();

    // A list signed by anyone but the pinned hub key is refused, whatever it claims.
    let forged = DeviceList {
        version: first.version + 10,
        issued_at: 0,
        devices: vec![made.device],
        statics: vec![],
        dead: vec![],
    }
    .sign(|tbs| RustCrypto.ed25519_sign(&Secret::from_bytes([9; 32]), tbs))
    .unwrap();
    assert!(matches!(
        agent.accept_device_list(&forged),
        Err(AgentError::Protocol(custos_proto::Error::Signature))
    ));

    // The operator revokes the device: the next list leaves it out, and the agent sees it.
    assert!(store.revoke(made.device, 1).await.unwrap());
    let keys = custos_hub::HubKeys::load_or_create(&hub_dir).unwrap();
    custos_hub::Hub::new(store.clone(), keys)
        .publish_device_list()
        .await
        .unwrap();
    let revoked = agent.refresh_device_list().await.unwrap();
    assert!(!revoked.authorized && revoked.changed);
    assert!(revoked.version > first.version);

    // Replaying the older list, which still names the device, does not bring it back, and survives a restart.
    let mut agent = Agent::open(&dir.path().join("device")).unwrap();
    match agent.accept_device_list(&captured) {
        Err(AgentError::StaleList { have, got }) => {
            assert_eq!((have, got), (revoked.version, first.version))
        }
        other => panic!("expected a stale list, got {other:?}"),
    }
    let held = agent.device_list().unwrap().unwrap();
    assert!(!held.contains(made.device));
    store.close().await;
    stop_hub(hub).await;
}

/// The hub admits the device but the answer to Finish (the Welcome) is lost on the way: the agent sends the same
/// Finish again, gets the same Welcome, and is joined.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_welcome_is_fetched_again() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let dir = tempfile::tempdir().unwrap();
    let made = Factory::make(&mut OsRng);
    made.write_state(&dir.path().join("device")).unwrap();
    let hub = start_hub(&dir.path().join("hub"), "127.0.0.1:0".parse().unwrap()).await;
    let store = AnyStore::open(dir.path().join("hub/hub.db").to_str().unwrap())
        .await
        .unwrap();
    store
        .put_admission(&PendingAdmission {
            device: made.device,
            join_code: made.join_code,
            created_at: 0,
            expires_at: i64::MAX,
        })
        .await
        .unwrap();

    // A proxy that drops the first response to a Finish and closes that connection.
    let proxy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_addr = proxy.local_addr().unwrap();
    let hub_addr = hub.addr;
    let dropped = Arc::new(AtomicBool::new(false));
    let dropped_flag = dropped.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = proxy.accept().await {
            let upstream = tokio::net::TcpStream::connect(hub_addr).await.unwrap();
            let (mut cr, mut cw) = client.into_split();
            let (mut ur, mut uw) = upstream.into_split();
            let drop_next = Arc::new(AtomicBool::new(false));
            let (mark, dropped) = (drop_next.clone(), dropped_flag.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                while let Ok(n) = cr.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    let finish = buf[..n].windows(20).any(|w| w == b"/v1/admission/finish");
                    if finish && !dropped.swap(true, Ordering::SeqCst) {
                        mark.store(true, Ordering::SeqCst);
                    }
                    if uw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                while let Ok(n) = ur.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    if drop_next.load(Ordering::SeqCst) {
                        // The hub's answer to Finish: lost. The client sees the connection close.
                        break;
                    }
                    if cw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
                let _ = cw.shutdown().await;
            });
        }
    });

    let mut agent = Agent::open(&dir.path().join("device")).unwrap();
    agent
        .join(&format!("http://{proxy_addr}"), 0)
        .await
        .unwrap();
    assert!(dropped.load(Ordering::SeqCst), "the proxy dropped nothing");
    assert!(agent.joined());
    let stored = store.device(made.device).await.unwrap().unwrap();
    assert_eq!(
        agent_session_key(&dir.path().join("device")),
        stored.session_key,
        "the device and the hub hold different sessions"
    );
    store.close().await;
    stop_hub(hub).await;
}

fn agent_session_key(dir: &Path) -> [u8; 32] {
    let state = custos_device::DeviceState::read(dir).unwrap();
    *state.session.unwrap().session_key.expose()
}

/// The agent was killed between reserving sequence numbers and queueing their messages (here: `seq` moved on by
/// two, as a crash leaves it), after everything before had been acked and dropped from the queue. On its next start
/// it queues a skip notice for exactly those numbers, once; the hub notes it, and reports no gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numbers_reserved_but_never_queued_are_sent_as_a_skip() {
    use custos_proto::uplink::{LinkKeys, seal_skip};

    let dir = tempfile::tempdir().unwrap();
    let hub_dir = dir.path().join("hub");
    let dev_dir = dir.path().join("device");
    let made = Factory::make(&mut OsRng);
    made.write_state(&dev_dir).unwrap();
    let device = made.device;
    let hub = start_hub(&hub_dir, "127.0.0.1:0".parse().unwrap()).await;
    {
        let store = AnyStore::open(hub_dir.join("hub.db").to_str().unwrap())
            .await
            .unwrap();
        store
            .put_admission(&PendingAdmission {
                device,
                join_code: made.join_code,
                created_at: 0,
                expires_at: i64::MAX,
            })
            .await
            .unwrap();
        store.close().await;
    }
    let mut agent = Agent::open(&dev_dir).unwrap();
    agent.join(&hub.url(), 0).await.unwrap();
    let master = MasterSecret::new(Secret::from_bytes([0x4d; 32]));
    agent.provision(&year_keys(device, &master), at(0)).unwrap();
    for i in 0..3 {
        agent.seal(b"r", at(i)).unwrap();
    }
    let sent = agent.publish().await.unwrap();
    assert_eq!((sent.stored, sent.pending), (3, 0));

    // Numbers 3 and 4 were reserved, and the agent died before queueing them.
    drop(agent);
    std::fs::write(dev_dir.join("seq"), "5").unwrap();
    let agent = Agent::open(&dev_dir).unwrap();
    let skip = dev_dir.join("queue/0000000000000003.skip");
    let session = custos_device::DeviceState::read(&dev_dir)
        .unwrap()
        .session
        .unwrap();
    let link = LinkKeys::derive(&RustCrypto, &session.session_key).unwrap();
    assert_eq!(
        std::fs::read(&skip).expect("no skip notice queued"),
        seal_skip(&RustCrypto, &link, device, 3, 5).unwrap(),
        "the skip names 3..5"
    );
    assert_eq!(agent.queued().unwrap().len(), 1);
    // Opening again finds nothing new to skip.
    drop(agent);
    let mut agent = Agent::open(&dev_dir).unwrap();
    assert_eq!(agent.queued().unwrap().len(), 1);
    assert_eq!(agent.seal(b"r", at(5)).unwrap(), 5);
    let sent = agent.publish().await.unwrap();
    assert_eq!((sent.stored, sent.pending), (1, 0));
    let gaps: serde_json::Value = serde_json::from_slice(
        &operator_get(&hub_dir, format!("{}/v1/devices/{device}/gaps", hub.url()))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(gaps["gaps"], serde_json::json!([]), "{gaps}");
    assert_eq!(gaps["max_seq"], 5);
    // A clean restart skips nothing.
    drop(agent);
    let agent = Agent::open(&dev_dir).unwrap();
    assert!(agent.queued().unwrap().is_empty());
    stop_hub(hub).await;
}

#[tokio::test]
async fn a_list_from_before_the_device_was_admitted_is_no_revocation() {
    let (dir, hub, store, _made, mut agent) = joined().await;
    let hub_dir = dir.path().join("hub");
    let keys = custos_hub::HubKeys::load_or_create(&hub_dir).unwrap();
    let signed = |version: i64, devices: Vec<DeviceId>| {
        DeviceList {
            version,
            issued_at: 0,
            devices,
            statics: vec![],
            dead: vec![],
        }
        .sign(|tbs| keys.sign(tbs))
        .unwrap()
    };
    // A genuine list signed before the device was admitted (say, retained on the broker) reaches it first.
    let before = agent.accept_device_list(&signed(0, vec![])).unwrap();
    assert!(before.authorized, "taken for a revocation");
    // The hub's current list names it; a later one that leaves it out is a revocation.
    let now = agent.refresh_device_list().await.unwrap();
    assert!(now.authorized && now.changed && now.version > 0);
    let after = agent
        .accept_device_list(&signed(now.version + 1, vec![]))
        .unwrap();
    assert!(!after.authorized, "a revocation not noticed");
    // And after a restart too.
    let mut agent = Agent::open(&dir.path().join("device")).unwrap();
    let again = agent
        .accept_device_list(&signed(now.version + 2, vec![]))
        .unwrap();
    assert!(!again.authorized);
    store.close().await;
    hub.stop().await.unwrap();
}

/// `GET url` over plain HTTP (the tests' hubs listen on loopback without TLS).
async fn plain_get(url: String) -> reqwest::Result<reqwest::Response> {
    custos_client::tls::http_client(reqwest::Client::builder(), &custos_client::TlsTrust::System)
        .unwrap()
        .get(url)
        .send()
        .await
}

/// `GET url` as the operator of the hub whose data directory is `hub_dir`.
async fn operator_get(hub_dir: &Path, url: String) -> reqwest::Result<reqwest::Response> {
    let token = custos_hub::serve::operator_token(hub_dir).unwrap();
    custos_client::tls::http_client(reqwest::Client::builder(), &custos_client::TlsTrust::System)
        .unwrap()
        .get(url)
        .bearer_auth(token.as_str())
        .send()
        .await
}
