//! Owner control on loopback: what a command costs from the user's keeper to the device and back, against a raw
//! HTTP round trip to the same hub measured in the same run; the bytes a command and its answer take on the wire;
//! and what a login costs (Argon2id at the hub's default cost).
//!
//! In one process and one runtime (multi-thread, 2 workers), as `custos demo` sets it up: a hub on 127.0.0.1
//! (SQLite, no per-address rate limits), a device made, admitted, joined and paired with a keeper through the
//! hub's relay, an account that claims the device, and the device's control loop
//! (`custos_device::control::serve`, a simulated relay, heartbeat 1 s). Everything is done twice: with the hub
//! on HTTPS (its self-signed certificate, pinned) and on plain HTTP, which shows TLS's share.
//!
//! Per hub, after 20 warm-ups each, 300 of each:
//! - `GET /healthz` round trips (the raw baseline), on one client that keeps its connection;
//! - `Keeper::command` round trips (SET on / off alternately): seal, counter on disk, post, device acts and
//!   answers, the keeper's long-poll returns the answer, which it opens;
//! - the same steps done one by one with one client, timed apart (the breakdown), and again with a fresh client
//!   per command (what `Keeper::command` did before it kept its client);
//! - `POST` of a command-sized body to the device's control queue without waiting for an answer (the device's
//!   loop is stopped meanwhile; each message is marked answered in the store after its post, so the queue never
//!   fills).
//!
//! Then 10 logins (`POST /v1/sessions`) after 2 warm-ups, and 20 Argon2id hashes at the hub's default cost on
//! one thread.
//!
//! `cargo bench -p custos-cli --bench control`. Under `cargo test --benches` it does nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use custos_client::{HubClient, TlsTrust};
use custos_device::Factory;
use custos_device::actuator::{Actuator, ActuatorError, parse_switch};
use custos_device::agent::Agent;
use custos_device::control::Handled;
use custos_hub::serve::{HubTls, Limits, Rate, Running, ServeConfig, spawn};
use custos_hub::{AccountConfig, LoginRate, PasswordCost};
use custos_keeper::Keeper;
use custos_proto::control::{
    self, ANSWER_OVERHEAD, COMMAND_OVERHEAD, CommandHeader, Op, OwnerKeys, SenderKeys, Status,
};
use custos_proto::{
    DeviceId, Epoch, RustCrypto, Schedule, Secret, Span, Suite, TreeSpec, UnixTime,
};
use custos_store::{AnyStore, PendingAdmission, Store};
use custos_vault::{KdfParams, Unlock};
use rand_core::{OsRng, RngCore};

// The goal: at most 64 B of overhead over a command's value, so that a command fits one LoRa frame at SF12.
const _: () = assert!(COMMAND_OVERHEAD <= 64);

const WARMUP: usize = 20;
const RUNS: usize = 300;
const LOGINS: usize = 10;
const HASHES: usize = 20;
const QUICK: Duration = Duration::from_secs(10);
const PASSWORD: &str = "a long enough passphrase";

/// Sorted samples.
struct Samples(Vec<Duration>);

impl Samples {
    fn new(mut v: Vec<Duration>) -> Self {
        v.sort();
        Self(v)
    }
    fn pct(&self, p: f64) -> Duration {
        self.0[((self.0.len() - 1) as f64 * p).round() as usize]
    }
    fn p50(&self) -> f64 {
        ms(self.pct(0.5))
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn now_ms() -> u64 {
    u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

/// A relay that notes when it last moved.
#[derive(Clone, Default)]
struct Relay(Arc<Mutex<(Option<bool>, Option<Instant>)>>);

impl Actuator for Relay {
    fn apply(&mut self, state: &str) -> Result<(), ActuatorError> {
        let on = parse_switch(state)?;
        *self.0.lock().unwrap() = (Some(on), Some(Instant::now()));
        Ok(())
    }
    fn describe(&self) -> String {
        "the bench's relay".into()
    }
}

/// When the device's loop finished handling each message (mark and state on disk, answer sealed), by id.
type Seen = Arc<Mutex<HashMap<i64, Instant>>>;

struct Rig {
    dir: PathBuf,
    hub: Running,
    url: String,
    trust: TlsTrust,
    store: AnyStore,
    keeper: Keeper,
    agent: Agent,
    device: DeviceId,
    auth: String,
    relay: Relay,
    seen: Seen,
    task: Option<tokio::task::JoinHandle<custos_device::agent::AgentError>>,
    /// The broker, when the device takes its commands over MQTT.
    mqtt: Option<custos_hub::mqtt::MqttConfig>,
}

/// The broker the MQTT run uses: `CUSTOS_BENCH_MQTT`, else the machine's Mosquitto.
fn broker() -> String {
    std::env::var("CUSTOS_BENCH_MQTT").unwrap_or_else(|_| "mqtt://127.0.0.1:1883".into())
}

impl Rig {
    async fn new(tls: HubTls, mqtt: bool) -> Self {
        let mut tag = [0u8; 6];
        OsRng.fill_bytes(&mut tag);
        let dir = std::env::temp_dir().join(format!("custos-ctlbench-{}", hex::encode(tag)));
        let mqtt = mqtt.then(|| custos_hub::mqtt::MqttConfig {
            url: broker(),
            trust: TlsTrust::default(),
            prefix: format!("custos-bench-{}", hex::encode(tag)),
            client_id: format!("custos-hub-bench-{}", hex::encode(tag)),
        });
        let hub = spawn(ServeConfig {
            registry: None,
            data_dir: dir.join("hub"),
            listen: "127.0.0.1:0".parse().unwrap(),
            database: None,
            mqtt: mqtt.clone(),
            // A benchmark from one address: no per-address limits; the password cost stays the default.
            accounts: AccountConfig {
                login_rate: LoginRate {
                    per_minute: 0,
                    ..Default::default()
                },
                ..Default::default()
            },
            limits: Limits {
                write_rate: Rate::UNLIMITED,
                read_rate: Rate::UNLIMITED,
                ..Default::default()
            },
            tls,
        })
        .await
        .unwrap();
        let url = hub.url();
        let trust = hub.trust();
        let store = AnyStore::open(dir.join("hub/hub.db").to_str().unwrap())
            .await
            .unwrap();

        // The keeper (a cheap vault KDF: the vault is not what is measured).
        let mut keeper = Keeper::init(
            &dir.join("keeper"),
            Unlock::Passphrase("bench"),
            KdfParams::new(256, 1, 1).unwrap(),
        )
        .unwrap();
        keeper.set_hub_trust(trust.clone()).unwrap();

        // A device, admitted, joined and paired, as the demo does.
        let now = i64::try_from(now_ms() / 1000).unwrap();
        let made = Factory::make(&mut OsRng);
        let ddir = dir.join("device");
        made.write_state(&ddir).unwrap();
        store
            .put_admission(&PendingAdmission {
                device: made.device,
                join_code: made.join_code,
                created_at: now,
                expires_at: now + 600,
            })
            .await
            .unwrap();
        let mut agent = Agent::open(&ddir).unwrap();
        agent.set_hub_trust(trust.clone()).unwrap();
        agent.join(&url, now).await.unwrap();
        let start = UnixTime::from_date(2026, 1, 1).unwrap();
        let year = Span::new(start, UnixTime::from_date(2027, 1, 1).unwrap()).unwrap();
        let spec = TreeSpec::new(made.device, Epoch(1), Schedule::default(), year).unwrap();
        let device_side = tokio::spawn(async move {
            let r = agent.await_pairing(start, Duration::from_secs(30)).await;
            (agent, r)
        });
        keeper
            .pair(
                &url,
                spec,
                Suite::AES256GCM,
                &made.owner_code,
                start,
                Duration::from_secs(30),
            )
            .await
            .unwrap();
        let (agent, paired) = device_side.await.unwrap();
        paired.unwrap();

        // An account, logged in, that claims the device through its running control loop.
        let client = HubClient::new(&url, QUICK, &trust).unwrap();
        client.register("bench", PASSWORD).await.unwrap();
        let auth = format!(
            "Bearer {}",
            client.login("bench", PASSWORD).await.unwrap().token
        );
        let mut rig = Self {
            dir,
            hub,
            url,
            trust,
            store,
            keeper,
            agent,
            device: made.device,
            auth,
            relay: Relay::default(),
            seen: Seen::default(),
            task: None,
            mqtt,
        };
        rig.start_device();
        rig.keeper
            .claim(&rig.url, &rig.auth, rig.device, QUICK)
            .await
            .unwrap();
        rig
    }

    fn start_device(&mut self) {
        let (controller, channel, udk) =
            self.agent.controller(Box::new(self.relay.clone())).unwrap();
        let seen = self.seen.clone();
        let note = move |id, _: &Handled, _: &custos_device::control::Controller| {
            seen.lock().unwrap().insert(id, Instant::now());
        };
        let controller = Arc::new(tokio::sync::Mutex::new(controller));
        let udk = Some(udk.expect("paired"));
        self.task = Some(match &self.mqtt {
            // Over MQTT the HTTP queue is read only every 60 s: commands come over the broker.
            Some(m) => tokio::spawn(custos_device::control::serve_mqtt(
                controller,
                channel,
                udk,
                Duration::from_secs(60),
                custos_device::control::MqttControl {
                    url: m.url.clone(),
                    prefix: m.prefix.clone(),
                    trust: TlsTrust::default(),
                },
                note,
            )),
            None => tokio::spawn(custos_device::control::serve(
                controller,
                channel,
                udk,
                Duration::from_secs(1),
                note,
            )),
        });
    }

    fn stop_device(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }

    async fn finish(mut self) {
        self.stop_device();
        self.store.close().await;
        self.hub.stop().await.unwrap();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn value(i: usize) -> &'static str {
    if i.is_multiple_of(2) { "on" } else { "off" }
}

/// The parts of one command, done one by one as `Keeper::command` does them.
#[derive(Default)]
struct Parts {
    total: Vec<Duration>,
    /// Control book opened, sender key unsealed, counter reserved on disk (fsync), command sealed.
    seal: Vec<Duration>,
    /// Of which the counter's write to disk.
    counter: Vec<Duration>,
    /// `POST /v1/devices/{d}/control` until its 201.
    post: Vec<Duration>,
    /// From the 201 until the relay moved: the device's long-poll wakes, it opens the command and writes its
    /// mark (fsync).
    to_actuator: Vec<Duration>,
    /// From the relay moving until the loop is done with it: the state and the queue cursor on disk, the answer
    /// sealed.
    after_actuator: Vec<Duration>,
    /// From then until the keeper's long-poll returned the answer: the device posts its answer, the hub stores
    /// it and wakes the keeper's long-poll.
    answer_back: Vec<Duration>,
    /// Opening the answer.
    open: Vec<Duration>,
}

async fn command_by_parts(rig: &Rig, client: &HubClient, i: usize, parts: &mut Parts, keep: bool) {
    let c = RustCrypto;
    let dev = rig.device;
    let t0 = Instant::now();
    let mut book = rig.keeper.control().unwrap();
    let sender = book.sender_key(dev).unwrap();
    let keys = OwnerKeys::from_udk(&c, &sender.key)
        .unwrap()
        .owner()
        .clone();
    let tc = Instant::now();
    let counter = book.next_counter(dev, now_ms()).unwrap();
    let tc1 = Instant::now();
    let header = CommandHeader {
        suite: Suite::AES256GCM,
        sender: sender.sender,
        counter,
        expires: u32::try_from(now_ms() / 1000 + 300).unwrap(),
    };
    let msg = control::seal_command(&c, &keys, dev, header, Op::Set, value(i).as_bytes()).unwrap();
    let t1 = Instant::now();
    let id = client.control_send(dev, &msg, &rig.auth).await.unwrap();
    let t2 = Instant::now();
    let answer = loop {
        if let Some(a) = client
            .control_result(dev, id, Duration::from_secs(5), &rig.auth)
            .await
            .unwrap()
            .answer
        {
            break a;
        }
    };
    let t3 = Instant::now();
    let (status, state) =
        control::open_answer(&c, &keys, dev, sender.sender, counter, &answer).unwrap();
    let t4 = Instant::now();
    assert!(status == Status::Done && state == value(i).as_bytes());
    if keep {
        let moved = rig.relay.0.lock().unwrap().1.unwrap();
        let done = *rig.seen.lock().unwrap().get(&id).unwrap();
        parts.total.push(t4 - t0);
        parts.seal.push(t1 - t0);
        parts.counter.push(tc1 - tc);
        parts.post.push(t2 - t1);
        parts.to_actuator.push(moved.saturating_duration_since(t2));
        parts
            .after_actuator
            .push(done.saturating_duration_since(moved));
        parts.answer_back.push(t3.saturating_duration_since(done));
        parts.open.push(t4 - t3);
    }
}

/// What one hub's run measured (p50s in ms, and the samples that get p90/p99).
struct Measured {
    healthz: Samples,
    command: Samples,
    parts: Parts,
    fresh: Samples,
    post: Samples,
    login: Samples,
    wire: usize,
}

/// Command round trips with the device on MQTT (hub on HTTPS), and the raw HTTPS baseline of the same run.
async fn measure_mqtt() -> (Samples, Samples) {
    let rig = Rig::new(HubTls::SelfSigned, true).await;
    // Let the device's MQTT subscription settle.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let client = HubClient::new(&rig.url, Duration::from_secs(30), &rig.trust).unwrap();
    let mut healthz = Vec::new();
    let mut command = Vec::new();
    for i in 0..WARMUP + RUNS {
        let t = Instant::now();
        client.get("/healthz", None).await.unwrap();
        if i >= WARMUP {
            healthz.push(t.elapsed());
        }
        let t = Instant::now();
        let out = rig
            .keeper
            .command(&rig.url, &rig.auth, rig.device, Op::Set, value(i), QUICK)
            .await
            .unwrap();
        if i >= WARMUP {
            command.push(t.elapsed());
        }
        assert!(out.status == Status::Done, "{out:?}");
    }
    rig.finish().await;
    (Samples::new(healthz), Samples::new(command))
}

async fn measure(tls: HubTls) -> Measured {
    let mut rig = Rig::new(tls, false).await;
    let client = HubClient::new(&rig.url, Duration::from_secs(30), &rig.trust).unwrap();
    let dev = rig.device;

    // Raw baseline: GET /healthz on one client.
    let mut healthz = Vec::new();
    for i in 0..WARMUP + RUNS {
        let t = Instant::now();
        let body = client.get("/healthz", None).await.unwrap();
        if i >= WARMUP {
            healthz.push(t.elapsed());
        }
        assert_eq!(body, b"ok");
    }

    // Keeper::command, end to end.
    let mut command = Vec::new();
    let mut on_id = 0;
    for i in 0..WARMUP + RUNS {
        let t = Instant::now();
        let out = rig
            .keeper
            .command(&rig.url, &rig.auth, dev, Op::Set, value(i), QUICK)
            .await
            .unwrap();
        if i >= WARMUP {
            command.push(t.elapsed());
        }
        assert!(
            out.status == Status::Done && out.state == value(i),
            "{out:?}"
        );
        if value(i) == "on" {
            on_id = out.id;
        }
    }
    let wire = rig
        .store
        .control_message(dev, on_id)
        .await
        .unwrap()
        .unwrap()
        .posted
        .message
        .len();

    // The same steps timed apart, on one client; then with a fresh client (a new connection) per command.
    let mut parts = Parts::default();
    for i in 0..WARMUP + RUNS {
        command_by_parts(&rig, &client, i, &mut parts, i >= WARMUP).await;
    }
    let mut fresh = Parts::default();
    for i in 0..WARMUP + RUNS {
        let c = HubClient::new(&rig.url, Duration::from_secs(30), &rig.trust).unwrap();
        command_by_parts(&rig, &c, i, &mut fresh, i >= WARMUP).await;
    }

    // Raw POST of a command-sized body (a command sealed under a key the device does not know), device stopped.
    rig.stop_device();
    let stranger = SenderKeys::derive(&RustCrypto, &Secret::from_bytes([7; 32])).unwrap();
    let mut post = Vec::new();
    for i in 0..WARMUP + RUNS {
        let header = CommandHeader {
            suite: Suite::AES256GCM,
            sender: 0,
            counter: i as u64,
            expires: u32::try_from(now_ms() / 1000 + 60).unwrap(),
        };
        let msg =
            control::seal_command(&RustCrypto, &stranger, dev, header, Op::Set, b"on").unwrap();
        let t = Instant::now();
        let id = client.control_send(dev, &msg, &rig.auth).await.unwrap();
        if i >= WARMUP {
            post.push(t.elapsed());
        }
        // Off the clock: answered, so it no longer counts against the device's queue.
        let now = i64::try_from(now_ms() / 1000).unwrap();
        rig.store
            .put_control_answer(dev, id, &[0; ANSWER_OVERHEAD + 2], now)
            .await
            .unwrap();
    }

    // Logins: POST /v1/sessions, one Argon2id verification each at the default cost.
    let mut login = Vec::new();
    for i in 0..2 + LOGINS {
        let t = Instant::now();
        client.login("bench", PASSWORD).await.unwrap();
        if i >= 2 {
            login.push(t.elapsed());
        }
    }
    rig.finish().await;
    Measured {
        healthz: Samples::new(healthz),
        command: Samples::new(command),
        fresh: Samples::new(fresh.total),
        parts,
        post: Samples::new(post),
        login: Samples::new(login),
        wire,
    }
}

fn line(what: &str, s: &Samples, base: Option<&Samples>) {
    let ratio = base.map_or(String::new(), |b| format!("{:>7.1}×", s.p50() / b.p50()));
    println!(
        "  {what:<46} p50 {:>7.3} ms  p90 {:>7.3} ms  p99 {:>7.3} ms {ratio}",
        s.p50(),
        ms(s.pct(0.9)),
        ms(s.pct(0.99)),
    );
}

fn report(name: &str, m: Measured) {
    println!("{name}: {RUNS} of each after {WARMUP} warm-ups; ratio = p50 / p50 of GET /healthz");
    line("GET /healthz (raw baseline)", &m.healthz, None);
    line(
        "POST a 37-byte command, no wait (raw)",
        &m.post,
        Some(&m.healthz),
    );
    line("Keeper::command round trip", &m.command, Some(&m.healthz));
    line(
        "  by parts, one client: total",
        &Samples::new(m.parts.total.clone()),
        Some(&m.healthz),
    );
    for (what, v) in [
        ("    keeper: book, counter (fsync), seal", &m.parts.seal),
        ("      of which the counter on disk", &m.parts.counter),
        ("    POST command -> 201", &m.parts.post),
        (
            "    201 -> relay moved (wake, open, mark)",
            &m.parts.to_actuator,
        ),
        (
            "    relay -> loop done (state, cursor)",
            &m.parts.after_actuator,
        ),
        (
            "    answer post + keeper long-poll wakes",
            &m.parts.answer_back,
        ),
        ("    keeper opens the answer", &m.parts.open),
    ] {
        line(what, &Samples::new(v.clone()), None);
    }
    line(
        "  by parts, a fresh client per command",
        &m.fresh,
        Some(&m.healthz),
    );
    line(
        &format!("login, POST /v1/sessions ({LOGINS})"),
        &m.login,
        None,
    );
    println!(
        "  command p50 = {:.1} × GET /healthz, {:.1} × raw POST; a command for \"on\" is {} B on the wire",
        m.command.p50() / m.healthz.p50(),
        m.command.p50() / m.post.p50(),
        m.wire
    );
    println!(
        "  JSON {{\"hub\":\"{name}\",\"healthz_p50_ms\":{:.4},\"post_p50_ms\":{:.4},\"command_p50_ms\":{:.4},\"command_p90_ms\":{:.4},\"command_p99_ms\":{:.4},\"fresh_client_p50_ms\":{:.4},\"login_p50_ms\":{:.3}}}",
        m.healthz.p50(),
        m.post.p50(),
        m.command.p50(),
        ms(m.command.pct(0.9)),
        ms(m.command.pct(0.99)),
        m.fresh.p50(),
        m.login.p50()
    );
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not: then do nothing.
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("control: a benchmark; run it with `cargo bench -p custos-cli --bench control`");
        return;
    }

    // Sizes.
    let c = RustCrypto;
    let keys = SenderKeys::derive(&c, &Secret::from_bytes([1; 32])).unwrap();
    let dev = DeviceId([2, 0, 0x5e, 0x10, 0, 0, 0, 1]);
    let header = CommandHeader {
        suite: Suite::AES256GCM,
        sender: 0,
        counter: 1,
        expires: u32::MAX,
    };
    let cmd = control::seal_command(&c, &keys, dev, header, Op::Set, b"on").unwrap();
    let answer =
        control::seal_answer(&c, &keys, dev, &header, [0; 12], Status::Done, b"on").unwrap();
    assert_eq!(cmd.len(), COMMAND_OVERHEAD + 2);
    assert_eq!(answer.len(), ANSWER_OVERHEAD + 2);
    println!(
        "sizes: command SET \"on\" {} B = 2 + {COMMAND_OVERHEAD} overhead (goal ≤ 64); answer \"on\" {} B = 2 + {ANSWER_OVERHEAD} overhead",
        cmd.len(),
        answer.len()
    );

    // Argon2id at the hub's default cost, on this thread, nothing else running.
    let cost = PasswordCost::default();
    cost.hash(PASSWORD.as_bytes()).unwrap();
    let mut hashes = Vec::new();
    for _ in 0..HASHES {
        let t = Instant::now();
        let phc = cost.hash(PASSWORD.as_bytes()).unwrap();
        hashes.push(t.elapsed());
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=10,p=1$"), "{phc}");
    }
    let hashes = Samples::new(hashes);
    println!(
        "login: Argon2id m = {} KiB, t = {}, p = {}: p50 {:.1} ms per hash (min {:.1}, max {:.1}) on one thread = {:.1} logins/s per core",
        cost.memory_kib,
        cost.iterations,
        cost.parallelism,
        hashes.p50(),
        ms(hashes.0[0]),
        ms(hashes.0[hashes.0.len() - 1]),
        1e3 / hashes.p50()
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let tls = rt.block_on(measure(HubTls::SelfSigned));
    let plain = rt.block_on(measure(HubTls::Plain));
    let (tls_cmd, plain_cmd) = (tls.command.p50(), plain.command.p50());
    report("HTTPS (self-signed, pinned)", tls);
    report("plain HTTP", plain);
    println!(
        "TLS's share of a command round trip: p50 {tls_cmd:.3} ms over HTTPS, {plain_cmd:.3} ms over HTTP ({:.2}×)",
        tls_cmd / plain_cmd
    );
    let (healthz, mqtt) = rt.block_on(measure_mqtt());
    println!(
        "device on MQTT ({}), hub on HTTPS: {RUNS} commands after {WARMUP} warm-ups",
        broker()
    );
    line("GET /healthz (raw baseline)", &healthz, None);
    line("Keeper::command, device on MQTT", &mqtt, Some(&healthz));
}
