//! MQTT against real brokers: the machine's Mosquitto (each test on its own random topic prefix) and a private
//! Mosquitto on a free port for the broker-crash test. Two hubs on one PostgreSQL share the device topics through
//! an MQTT 5 shared subscription and store every record exactly once. A private Mosquitto with a TLS listener
//! carries `mqtts://` end to end.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use custos_client::{Fingerprint, TlsTrust};
use custos_device::Factory;
use custos_device::agent::{Agent, AgentError, MqttLink};
use custos_device::keyfile::Keys;
use custos_hub::mqtt::MqttConfig;
use custos_hub::{Hub, HubKeys, app};
use custos_proto::{
    DeviceId, Epoch, MasterSecret, RustCrypto, Schedule, Secret, Span, Suite, TreeSpec, UnixTime,
};
use custos_store::{AnyStore, PendingAdmission, RecordQuery, Store};
use rand_core::{OsRng, RngCore};
use sqlx::Connection;
use tokio::sync::watch;

const SHARED_BROKER: &str = "mqtt://127.0.0.1:1883";

fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

/// A hub over `store`, serving HTTP on a free port and MQTT on `broker`, until `stop` turns true.
async fn start_hub<S: Store + Clone + 'static>(
    store: S,
    broker: &str,
    prefix: &str,
    stop: watch::Receiver<bool>,
) -> (Arc<Hub<S>>, String) {
    start_hub_trusting(store, broker, prefix, stop, TlsTrust::System).await
}

/// [`start_hub`], verifying an `mqtts://` broker as `trust` says.
async fn start_hub_trusting<S: Store + Clone + 'static>(
    store: S,
    broker: &str,
    prefix: &str,
    stop: watch::Receiver<bool>,
    trust: TlsTrust,
) -> (Arc<Hub<S>>, String) {
    let hub = Hub::new(store, HubKeys::generate());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
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
    let config = MqttConfig {
        url: broker.into(),
        prefix: prefix.into(),
        client_id: format!("custos-hub-test-{}", random_hex(6)),
        trust,
    };
    tokio::spawn(custos_hub::mqtt::run(hub.clone(), config, stopped(stop)));
    (hub, format!("http://{addr}"))
}

/// A device made, admitted on `store`, joined over HTTP at `url`, provisioned for 2026.
async fn device<S: Store>(store: &S, url: &str, dir: &Path) -> (Agent, DeviceId) {
    let made = Factory::make(&mut OsRng);
    made.write_state(dir).unwrap();
    store
        .put_admission(&PendingAdmission {
            device: made.device,
            join_code: made.join_code,
            created_at: 0,
            expires_at: i64::MAX,
        })
        .await
        .unwrap();
    let mut agent = Agent::open(dir).unwrap();
    agent.join(url, 0).await.unwrap();
    let span = Span::new(
        UnixTime::from_date(2026, 1, 1).unwrap(),
        UnixTime::from_date(2027, 1, 1).unwrap(),
    )
    .unwrap();
    let spec = TreeSpec::new(made.device, Epoch(1), Schedule::default(), span).unwrap();
    let dpk = spec
        .root(&RustCrypto, &MasterSecret::new(Secret::from_bytes([3; 32])))
        .unwrap();
    agent
        .provision(
            &Keys {
                spec,
                suite: Suite::AES256GCM,
                nodes: vec![dpk],
            },
            at(0),
        )
        .unwrap();
    (agent, made.device)
}

fn at(minute: u64) -> UnixTime {
    UnixTime::new(UnixTime::from_date(2026, 5, 4).unwrap().secs() + minute * 60).unwrap()
}

async fn seqs<S: Store>(store: &S, device: DeviceId) -> Vec<u64> {
    let q = RecordQuery {
        device,
        epoch: 1,
        leaf_from: 0,
        leaf_until: u32::MAX,
        after: None,
        limit: 10_000,
    };
    store
        .records(&q)
        .await
        .unwrap()
        .iter()
        .map(|r| r.record.seq)
        .collect()
}

/// Publishes over MQTT until the queue is empty, retrying while the link comes up.
async fn drain(agent: &mut Agent, link: &mut MqttLink) -> usize {
    let mut stored = 0;
    for _ in 0..40 {
        match agent.publish_mqtt(link).await {
            Ok(p) if p.pending == 0 => return stored + p.stored,
            Ok(p) => stored += p.stored,
            Err(e) if e.is_transient() => tokio::time::sleep(Duration::from_millis(250)).await,
            Err(e) => panic!("{e}"),
        }
    }
    panic!("the queue did not drain");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_publish_over_mqtt_and_bad_payloads_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = AnyStore::open(dir.path().join("hub.db").to_str().unwrap())
        .await
        .unwrap();
    let prefix = format!("custos-test-{}", random_hex(6));
    let (stop_tx, stop) = watch::channel(false);
    let (hub, url) = start_hub(store.clone(), SHARED_BROKER, &prefix, stop).await;
    let (mut agent, id) = device(&store, &url, &dir.path().join("dev")).await;
    let mut link = MqttLink::connect(SHARED_BROKER, &prefix, id).unwrap();
    // 300 readings in one batch: about 40 KiB, over rumqttc's default 10 KiB packet limit.
    for i in 0..300 {
        agent
            .seal(format!("reading {i}").as_bytes(), at(i))
            .unwrap();
    }
    assert_eq!(drain(&mut agent, &mut link).await, 300);
    assert_eq!(seqs(&store, id).await, (0..300).collect::<Vec<_>>());
    assert!(hub.batches_ingested() >= 1);

    // A malformed payload on the device's topic is refused with a reason, and changes nothing.
    let (probe, mut events) = rumqttc::v5::AsyncClient::new(
        rumqttc::v5::MqttOptions::new(format!("probe-{}", random_hex(4)), "127.0.0.1", 1883),
        16,
    );
    probe
        .subscribe(
            format!("{prefix}/{id}/error"),
            rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
        )
        .await
        .unwrap();
    probe
        .subscribe(
            format!("{prefix}/device-list"),
            rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
        )
        .await
        .unwrap();
    probe
        .publish(
            format!("{prefix}/{id}/up"),
            rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
            false,
            vec![0u8, 5, 1],
        )
        .await
        .unwrap();
    let (mut error, mut list) = (None, None);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while list.is_none() && tokio::time::Instant::now() < deadline {
        if let Ok(Ok(rumqttc::v5::Event::Incoming(rumqttc::v5::mqttbytes::v5::Packet::Publish(
            p,
        )))) = tokio::time::timeout(Duration::from_secs(1), events.poll()).await
        {
            if p.topic.ends_with(b"/error") {
                error = Some(String::from_utf8_lossy(&p.payload).into_owned());
            } else {
                list = Some(p.payload.to_vec());
            }
        }
    }
    // Junk on a device's topic may be anyone's: the hub drops it, counts it, and answers nothing.
    assert_eq!(error, None, "the hub answered junk");
    assert!(hub.mqtt_junk() >= 1, "the junk was not counted");
    // The retained, signed device list names the device.
    let list = custos_hub::DeviceList::verify(
        &custos_proto::RustCrypto,
        &list.expect("no retained device list"),
        &hub.keys().signing_public(),
    )
    .unwrap();
    assert!(list.devices.contains(&id));
    assert_eq!(seqs(&store, id).await.len(), 300);

    // The agent takes the pushed list in; a forged one on the topic is ignored.
    let forged = custos_hub::DeviceList {
        version: list.version + 100,
        issued_at: 0,
        devices: vec![],
        statics: vec![],
        dead: vec![],
    }
    .sign(|tbs| {
        custos_proto::Crypto::ed25519_sign(
            &custos_proto::RustCrypto,
            &Secret::from_bytes([9; 32]),
            tbs,
        )
    })
    .unwrap();
    probe
        .publish(
            format!("{prefix}/device-list"),
            rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
            false,
            forged,
        )
        .await
        .unwrap();
    agent
        .watch_device_list(&mut link, Duration::from_secs(1))
        .await;
    let held = agent
        .device_list()
        .unwrap()
        .expect("no list taken in over MQTT");
    assert!(held.contains(id) && held.version < list.version + 100);

    // Revoked: the hub re-publishes the retained list within seconds, and the agent learns it is off it.
    assert!(store.revoke(id, 1).await.unwrap());
    hub.publish_device_list().await.unwrap();
    let mut update = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while update.is_none_or(|u: custos_device::agent::ListUpdate| u.authorized)
        && tokio::time::Instant::now() < deadline
    {
        update = agent
            .watch_device_list(&mut link, Duration::from_secs(1))
            .await
            .or(update);
    }
    assert!(!update.expect("no list after the revocation").authorized);
    let _ = stop_tx.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hubs_on_one_postgres_share_the_topics_and_store_each_record_once() {
    let admin_url = std::env::var("CUSTOS_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let name = format!("custos_t_{}", random_hex(6));
    let mut admin = sqlx::PgConnection::connect(&admin_url)
        .await
        .expect("PostgreSQL is required for this test");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .unwrap();
    let url = format!("{}/{name}", admin_url.rsplit_once('/').unwrap().0);
    let result = tokio::spawn(async move {
        let dir = tempfile::tempdir().unwrap();
        let a = AnyStore::open(&url).await.unwrap();
        let b = AnyStore::open(&url).await.unwrap();
        let prefix = format!("custos-test-{}", random_hex(6));
        let (stop_tx, stop) = watch::channel(false);
        let (hub_a, url_a) = start_hub(a.clone(), SHARED_BROKER, &prefix, stop.clone()).await;
        let (hub_b, _) = start_hub(b.clone(), SHARED_BROKER, &prefix, stop).await;
        tokio::time::sleep(Duration::from_millis(1500)).await; // both subscribed
        let (mut agent, id) = device(&a, &url_a, &dir.path().join("dev")).await;
        let mut link = MqttLink::connect(SHARED_BROKER, &prefix, id).unwrap();
        let mut stored = 0;
        for round in 0..30u64 {
            for i in 0..10 {
                agent.seal(b"r", at(round * 10 + i)).unwrap();
            }
            stored += drain(&mut agent, &mut link).await;
        }
        let _ = stop_tx.send(true);
        let got = seqs(&b, id).await;
        let (na, nb) = (hub_a.batches_ingested(), hub_b.batches_ingested());
        a.close().await;
        b.close().await;
        (stored, got, na, nb)
    })
    .await;
    sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .execute(&mut admin)
        .await
        .unwrap();
    let (stored, got, na, nb) = result.unwrap();
    assert_eq!(stored, 300, "acknowledged as stored");
    assert_eq!(got, (0..300).collect::<Vec<_>>(), "no loss, no duplicate");
    assert_eq!(
        na + nb,
        30,
        "each batch reached exactly one hub ({na} + {nb})"
    );
    assert!(
        na > 0 && nb > 0,
        "the shared subscription spread the batches ({na} + {nb})"
    );
}

/// A private Mosquitto on a free loopback port, killed on drop.
struct Broker {
    child: std::process::Child,
    port: u16,
}

impl Broker {
    fn start(dir: &Path, port: u16) -> Self {
        Self::with_config(dir, port, "")
    }

    /// A broker whose listener speaks TLS with `dir/broker.pem` and `dir/broker.key`.
    fn start_tls(dir: &Path, port: u16) -> Self {
        // Mosquitto started as root reads its files as the `mosquitto` user: the test's files must be readable.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            for (path, mode) in [
                (dir.to_path_buf(), 0o755),
                (dir.join("broker.pem"), 0o644),
                (dir.join("broker.key"), 0o644),
            ] {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
            }
        }
        let tls = format!(
            "certfile {}\nkeyfile {}\n",
            dir.join("broker.pem").display(),
            dir.join("broker.key").display()
        );
        Self::with_config(dir, port, &tls)
    }

    fn with_config(dir: &Path, port: u16, extra: &str) -> Self {
        let conf = dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!("listener {port} 127.0.0.1\n{extra}allow_anonymous true\npersistence false\n"),
        )
        .unwrap();
        let child = std::process::Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("mosquitto must be installed for this test");
        Self { child, port }
    }

    fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_crash_mid_stream_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let broker = Broker::start(dir.path(), port);
    let broker_url = broker.url();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let store = AnyStore::open(dir.path().join("hub.db").to_str().unwrap())
        .await
        .unwrap();
    let (stop_tx, stop) = watch::channel(false);
    let (_hub, url) = start_hub(store.clone(), &broker_url, "custos", stop).await;
    let (mut agent, id) = device(&store, &url, &dir.path().join("dev")).await;
    let mut link = MqttLink::connect(&broker_url, "custos", id).unwrap();
    for i in 0..10 {
        agent.seal(b"before", at(i)).unwrap();
    }
    assert_eq!(drain(&mut agent, &mut link).await, 10);

    // The broker dies; readings pile up in the device's queue.
    drop(broker);
    for i in 10..25 {
        agent.seal(b"during", at(i)).unwrap();
    }
    match agent.publish_mqtt(&mut link).await {
        Err(AgentError::Unreachable(_) | AgentError::NoAck(_)) => {}
        other => panic!("expected no answer, got {other:?}"),
    }
    assert_eq!(agent.queued().unwrap().len(), 15);

    // It comes back on the same port; hub and device reconnect by themselves.
    let _broker = Broker::start(dir.path(), port);
    assert_eq!(drain(&mut agent, &mut link).await, 15);
    assert_eq!(seqs(&store, id).await, (0..25).collect::<Vec<_>>());
    let _ = stop_tx.send(true);
}

/// Anyone may publish on the broker. A relay between the device's topics and the hub's (a prefix of its own) forges
/// downlinks before each batch reaches the hub: a refusal on `…/error`, acks with a bad MAC or a bad length, an
/// authenticated ack with a skip's verdict for an uplink, junk on the hub's `…/up` (whose real refusal it passes
/// on), and it prepends the previous batch's real acks to each real answer (a stale ack, and the wrong count). The
/// agent ignores all of it, counts it, and delivers everything exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_stale_and_unmatched_downlinks_are_ignored() {
    use custos_proto::uplink::{LinkKeys, Verdict, seal_ack};
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::mqttbytes::v5::Packet;
    use rumqttc::v5::{AsyncClient, Event, MqttOptions};

    let dir = tempfile::tempdir().unwrap();
    let store = AnyStore::open(dir.path().join("hub.db").to_str().unwrap())
        .await
        .unwrap();
    let outer = format!("custos-test-{}", random_hex(6));
    let inner = format!("custos-test-{}", random_hex(6));
    let (stop_tx, stop) = watch::channel(false);
    let (_hub, url) = start_hub(store.clone(), SHARED_BROKER, &inner, stop).await;
    let dev_dir = dir.path().join("dev");
    let (mut agent, id) = device(&store, &url, &dev_dir).await;
    let session = custos_device::DeviceState::read(&dev_dir)
        .unwrap()
        .session
        .unwrap();
    let keys = LinkKeys::derive(&RustCrypto, &session.session_key).unwrap();

    let (relay, mut events) = AsyncClient::new(
        MqttOptions::new(format!("relay-{}", random_hex(4)), "127.0.0.1", 1883),
        64,
    );
    for t in [
        format!("{outer}/{id}/up"),
        format!("{inner}/{id}/ack"),
        format!("{inner}/{id}/error"),
    ] {
        relay.subscribe(t, QoS::AtLeastOnce).await.unwrap();
    }
    let (subscribed_tx, subscribed) = tokio::sync::oneshot::channel();
    let forwarder = relay.clone();
    let (outer_, inner_) = (outer.clone(), inner.clone());
    let relay_task = tokio::spawn(async move {
        let (outer, inner) = (outer_, inner_);
        let mut subscribed_tx = Some(subscribed_tx);
        let mut suback = 0;
        let mut previous: Vec<u8> = Vec::new();
        let pub_to = |topic: String, payload: Vec<u8>| {
            let c = forwarder.clone();
            async move {
                c.publish(topic, QoS::AtLeastOnce, false, payload)
                    .await
                    .unwrap()
            }
        };
        loop {
            let p = match events.poll().await {
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    suback += 1;
                    if suback == 3 {
                        let _ = subscribed_tx.take().map(|t| t.send(()));
                    }
                    continue;
                }
                Ok(Event::Incoming(Packet::Publish(p))) => p,
                Ok(_) => continue,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let topic = String::from_utf8_lossy(&p.topic).into_owned();
            if topic.ends_with("/up") {
                let first = u64::from_be_bytes([
                    0,
                    0,
                    p.payload[3],
                    p.payload[4],
                    p.payload[5],
                    p.payload[6],
                    p.payload[7],
                    p.payload[8],
                ]);
                let refusal = br#"{"error":"revoked","message":"device is revoked"}"#;
                pub_to(format!("{outer}/{id}/error"), refusal.to_vec()).await;
                let mut junk = vec![0x32u8; 24];
                OsRng.fill_bytes(&mut junk[1..]);
                pub_to(format!("{outer}/{id}/ack"), junk).await;
                pub_to(format!("{outer}/{id}/ack"), vec![0x32; 23]).await;
                let wrong = seal_ack(&RustCrypto, &keys, id, first, Verdict::Noted).unwrap();
                pub_to(format!("{outer}/{id}/ack"), wrong.to_vec()).await;
                pub_to(format!("{inner}/{id}/up"), vec![0, 5, 1]).await;
                pub_to(format!("{inner}/{id}/up"), p.payload.to_vec()).await;
            } else if topic.ends_with("/ack") {
                let mut both = previous.clone();
                both.extend_from_slice(&p.payload);
                previous = p.payload.to_vec();
                pub_to(format!("{outer}/{id}/ack"), both).await;
            } else {
                pub_to(format!("{outer}/{id}/error"), p.payload.to_vec()).await;
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(10), subscribed)
        .await
        .unwrap()
        .unwrap();

    let mut link = agent
        .connect_mqtt(SHARED_BROKER, &outer, &custos_client::TlsTrust::System)
        .unwrap();
    let (mut stored, mut ignored) = (0, 0);
    for round in 0..5u64 {
        for i in 0..10 {
            agent.seal(b"r", at(round * 10 + i)).unwrap();
        }
        for _ in 0..10 {
            match agent.publish_mqtt(&mut link).await {
                Ok(p) => {
                    stored += p.stored;
                    ignored += p.ignored;
                    if p.pending == 0 {
                        break;
                    }
                }
                Err(e) if e.is_transient() => {}
                Err(e) => panic!("{e}"),
            }
        }
    }
    assert_eq!(stored, 50);
    // Per batch: the refusal, two bad acks, the skip's verdict; and from the second batch on, the previous batch's
    // acks (all settled already). The hub answers the junk on `…/up` with nothing.
    assert!(ignored >= 5 * 4 + 4 * 10, "{ignored} ignored");
    assert_eq!(seqs(&store, id).await, (0..50).collect::<Vec<_>>());
    relay_task.abort();
    let _ = stop_tx.send(true);
}

/// A CA (`dir/ca.pem`) and a broker certificate it issued for 127.0.0.1 (`dir/broker.pem`, `dir/broker.key`);
/// returns the broker certificate's fingerprint.
fn issue_broker_certificate(dir: &Path) -> Fingerprint {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap())
        .unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".into()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.join("broker.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("broker.key"), key.serialize_pem()).unwrap();
    Fingerprint::of(cert.der())
}

/// `mqtts://` end to end: a private Mosquitto with a TLS listener; the hub trusts it through a CA file, the
/// device through the pinned fingerprint of its certificate. A device that trusts neither gets nothing through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_publish_over_mqtts() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    std::fs::create_dir(&certs).unwrap();
    let pin = issue_broker_certificate(&certs);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _broker = Broker::start_tls(&certs, port);
    let broker_url = format!("mqtts://127.0.0.1:{port}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let store = AnyStore::open(dir.path().join("hub.db").to_str().unwrap())
        .await
        .unwrap();
    let (stop_tx, stop) = watch::channel(false);
    let hub_trust = TlsTrust::ca_file(&certs.join("ca.pem")).unwrap();
    let (_hub, url) =
        start_hub_trusting(store.clone(), &broker_url, "custos", stop, hub_trust).await;
    let (mut agent, id) = device(&store, &url, &dir.path().join("dev")).await;

    // Without trust in the broker's certificate nothing is published.
    let mut untrusting = agent
        .connect_mqtt(&broker_url, "custos", &TlsTrust::System)
        .unwrap();
    agent.seal(b"first", at(0)).unwrap();
    assert!(agent.publish_mqtt(&mut untrusting).await.is_err());
    drop(untrusting);

    let mut link = agent
        .connect_mqtt(&broker_url, "custos", &TlsTrust::Pinned(pin))
        .unwrap();
    for i in 1..10 {
        agent.seal(b"over tls", at(i)).unwrap();
    }
    assert_eq!(drain(&mut agent, &mut link).await, 10);
    assert_eq!(seqs(&store, id).await, (0..10).collect::<Vec<_>>());
    let _ = stop_tx.send(true);
}
