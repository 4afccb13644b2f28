//! Abuse benchmark: real `custos device run` agents stream to a real `custos hub serve` while one attack at a
//! time runs against the hub, and the hub's real ingest under attack is reported as a ratio of the same run
//! without attack.
//!
//! Run: `cargo bench -p custos-cli --bench abuse` (all scenarios), or name some:
//! `cargo bench -p custos-cli --bench abuse -- slowloris readers`. `--json` also prints the JSON lines on stdout;
//! they are always written to `abuse.jsonl` in the target directory. The MQTT scenarios need Mosquitto (like the
//! tests). Settings, by environment variable:
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `CUSTOS_ABUSE_SECS` | 20 | length of each window (baseline, then attack) |
//! | `CUSTOS_ABUSE_DEVICES` | 8 | honest agents |
//! | `CUSTOS_ABUSE_EVERY` | 10ms | their reading interval (`--every`) |
//! | `CUSTOS_ABUSE_SOURCES` | 8 | attacker source addresses, 127.0.0.2 upwards |
//! | `CUSTOS_ABUSE_SCALE` | 1 | multiplies the attacks' connection and task counts |
//! | `CUSTOS_ABUSE_HUB_NOFILE` | 1024 | the hub's soft descriptor limit (`ulimit -Sn`); 0 keeps ours |
//! | `CUSTOS_ABUSE_MQTT` | mqtt://127.0.0.1:1883 | the broker of the MQTT scenarios |
//!
//! Each scenario starts a fresh hub (SQLite in a temporary directory) and fresh devices, waits until every device
//! has stored a reading, measures a baseline window, then the same window with the attack running (from other
//! loopback addresses than the agents), stops the attack, stops the agents with SIGINT (each must exit 0), lets
//! them drain what they still hold, and checks every device's stored sequence numbers against what it sealed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use custos_proto::sharing::{MAX_DEVICES, MAX_PURPOSE_TEXT, SharingRequest};
use custos_proto::{Crypto, DeviceId, RustCrypto, Secret, Span, UnixTime};
use rand_core::{OsRng, RngCore};
use serde_json::{Value, json};
use sqlx::Connection;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep, timeout, timeout_at};

const BIN: &str = env!("CARGO_BIN_EXE_custos");
/// The hub's largest accepted body (docs/api.md, Limits).
const MAX_BODY: usize = 4 * 1024 * 1024;

struct Config {
    secs: u64,
    devices: usize,
    every: String,
    sources: u8,
    scale: f64,
    hub_nofile: u64,
    mqtt: String,
    json: bool,
    only: Vec<String>,
}

fn env_or<T: FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v} does not parse")),
        Err(_) => default,
    }
}

impl Config {
    fn load() -> Self {
        let mut json = false;
        let mut only = Vec::new();
        for a in std::env::args().skip(1) {
            if a == "--json" {
                json = true;
            } else if !a.starts_with('-') {
                only.push(a);
            }
            // Anything else (`--bench` from cargo) is ignored.
        }
        Self {
            secs: env_or("CUSTOS_ABUSE_SECS", 20),
            devices: env_or("CUSTOS_ABUSE_DEVICES", 8),
            every: env_or("CUSTOS_ABUSE_EVERY", "10ms".to_string()),
            sources: env_or::<u8>("CUSTOS_ABUSE_SOURCES", 8).clamp(1, 250),
            scale: env_or("CUSTOS_ABUSE_SCALE", 1.0),
            hub_nofile: env_or("CUSTOS_ABUSE_HUB_NOFILE", 1024),
            mqtt: env_or("CUSTOS_ABUSE_MQTT", "mqtt://127.0.0.1:1883".to_string()),
            json,
            only,
        }
    }

    fn scaled(&self, n: usize) -> usize {
        ((n as f64 * self.scale).round() as usize).max(1)
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Attack {
    Control,
    SharingFlood,
    PairingFlood,
    HugeLength,
    Slowloris,
    IdleSockets,
    SlowUploads,
    CborBombs,
    Readers,
    MqttError,
    MqttAck,
    MqttUp,
}

impl Attack {
    const ALL: [Self; 12] = [
        Self::Control,
        Self::SharingFlood,
        Self::PairingFlood,
        Self::HugeLength,
        Self::Slowloris,
        Self::IdleSockets,
        Self::SlowUploads,
        Self::CborBombs,
        Self::Readers,
        Self::MqttError,
        Self::MqttAck,
        Self::MqttUp,
    ];

    fn name(self) -> &'static str {
        match self {
            Self::Control => "control",
            Self::SharingFlood => "sharing-flood",
            Self::PairingFlood => "pairing-flood",
            Self::HugeLength => "huge-length",
            Self::Slowloris => "slowloris",
            Self::IdleSockets => "idle-sockets",
            Self::SlowUploads => "slow-uploads",
            Self::CborBombs => "cbor-bombs",
            Self::Readers => "readers",
            Self::MqttError => "mqtt-error",
            Self::MqttAck => "mqtt-ack",
            Self::MqttUp => "mqtt-up",
        }
    }

    fn mqtt(self) -> bool {
        matches!(self, Self::MqttError | Self::MqttAck | Self::MqttUp)
    }

    /// Whether the attack holds connections open (reported as connections) rather than sending requests.
    fn holds(self) -> bool {
        matches!(
            self,
            Self::HugeLength | Self::Slowloris | Self::IdleSockets | Self::SlowUploads
        )
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Processes

fn custos(dir: &Path, args: &[&str]) -> Vec<u8> {
    let out = Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "custos {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `--every` in milliseconds (`10ms`, `1s`).
fn every_ms(every: &str) -> f64 {
    let at = every
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(every.len());
    let n: f64 = every[..at].parse().unwrap_or(1.0);
    match &every[at..] {
        "s" => n * 1000.0,
        "m" => n * 60_000.0,
        _ => n,
    }
}

fn log_file(path: &Path) -> Stdio {
    Stdio::from(std::fs::File::create(path).unwrap())
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn signal(child: &Child, sig: &str) {
    let _ = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .stderr(Stdio::null())
        .status();
}

/// Sends SIGINT once a second until the child exits, for at most `secs` seconds; then SIGKILL.
/// Returns the exit code, or None if it had to be killed (or died by a signal).
fn interrupt(child: &mut Child, secs: u64) -> Option<i32> {
    for _ in 0..secs {
        if let Some(s) = child.try_wait().unwrap() {
            return s.code();
        }
        signal(child, "-INT");
        for _ in 0..10 {
            std::thread::sleep(Duration::from_millis(100));
            if let Some(s) = child.try_wait().unwrap() {
                return s.code();
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// Runs a child to its end for at most `secs` seconds; Some(success) or None if it was killed.
fn run_bounded(mut cmd: Command, secs: u64) -> Option<bool> {
    let mut child = cmd.spawn().unwrap();
    for _ in 0..secs * 10 {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s.success());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

struct Device {
    id: String,
    dir: PathBuf,
    log: PathBuf,
    agent: Option<Child>,
    /// Stopped by SIGKILL after ignoring SIGINT: its last reserved sequence number may never have been queued.
    killed: bool,
}

struct Rig {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    port: u16,
    url: String,
    hub: Child,
    devices: Vec<Device>,
    prefix: Option<String>,
}

impl Rig {
    fn start(cfg: &Config, mqtt: bool) -> Self {
        let tmp = tempfile::Builder::new()
            .prefix("custos-abuse-")
            .tempdir()
            .unwrap();
        let root = tmp.path().to_path_buf();
        custos(&root, &["master", "new"]);
        let mut devices = Vec::new();
        for i in 0..cfg.devices {
            let state = format!("dev{i}");
            let made: Value = serde_json::from_slice(&custos(
                &root,
                &["device", "make", "--state-dir", &state, "--json"],
            ))
            .unwrap();
            let id = made["device"].as_str().unwrap().to_string();
            custos(
                &root,
                &[
                    "hub",
                    "admit",
                    "--data-dir",
                    "hub",
                    "--device",
                    &id,
                    "--code",
                    made["join_code"].as_str().unwrap(),
                ],
            );
            custos(
                &root,
                &[
                    "dpk",
                    "new",
                    "--device",
                    &id,
                    "--epoch",
                    "1",
                    "-o",
                    &format!("dpk{i}.json"),
                ],
            );
            devices.push(Device {
                id,
                dir: root.join(&state),
                log: root.join(format!("dev{i}.log")),
                agent: None,
                killed: false,
            });
        }
        let prefix = mqtt.then(|| {
            let mut tag = [0u8; 6];
            OsRng.fill_bytes(&mut tag);
            format!("custos-abuse-{}", hex::encode(tag))
        });
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let mut cmd = if cfg.hub_nofile > 0 {
            // A common default soft limit; the hub may raise it up to the hard limit itself.
            let mut c = Command::new("sh");
            c.args([
                "-c",
                &format!("ulimit -Sn {} && exec \"$0\" \"$@\"", cfg.hub_nofile),
                BIN,
            ]);
            c
        } else {
            Command::new(BIN)
        };
        // Plain HTTP on loopback: the figures in docs/benchmarks.md measure the limits, not TLS.
        cmd.args([
            "hub",
            "serve",
            "--data-dir",
            "hub",
            "--listen",
            &listen,
            "--plain-http",
        ]);
        if let Some(p) = &prefix {
            cmd.args(["--mqtt", &cfg.mqtt, "--mqtt-prefix", p]);
        }
        let mut hub = cmd
            .current_dir(&root)
            .env_remove("RUST_LOG")
            .env_remove("CUSTOS_DATABASE_URL")
            .env_remove("CUSTOS_HUB_CONFIG")
            .env_remove("CUSTOS_MQTT_URL")
            .stdout(Stdio::piped())
            .stderr(log_file(&root.join("hub.log")))
            .spawn()
            .unwrap();
        let mut out = BufReader::new(hub.stdout.take().unwrap());
        let mut line = String::new();
        for _ in 0..20 {
            line.clear();
            if out.read_line(&mut line).unwrap() == 0 || line.starts_with("listening on") {
                break;
            }
        }
        assert!(
            line.starts_with("listening on"),
            "the hub did not start: {line}\n{}",
            tail(&root.join("hub.log"), 20)
        );
        // Keep reading what the hub prints, so it never writes to a closed pipe.
        std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
        let url = format!("http://{listen}");
        let mut rig = Self {
            _tmp: tmp,
            root,
            port,
            url,
            hub,
            devices,
            prefix,
        };
        for i in 0..rig.devices.len() {
            let keys = format!("dpk{i}.json");
            let mut cmd = rig.agent_command(cfg, i);
            cmd.args(["--hub", &rig.url, "--keys", &keys, "--every", &cfg.every]);
            rig.devices[i].agent = Some(cmd.spawn().unwrap());
        }
        rig
    }

    fn agent_command(&self, cfg: &Config, i: usize) -> Command {
        let d = &self.devices[i];
        let mut cmd = Command::new(BIN);
        cmd.args(["device", "run", "--state-dir"])
            .arg(&d.dir)
            .current_dir(&self.root)
            .env_remove("RUST_LOG")
            .env_remove("CUSTOS_MQTT_URL")
            .env_remove("CUSTOS_MQTT_PREFIX")
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&d.log)
                    .unwrap(),
            ));
        if let Some(p) = &self.prefix {
            cmd.args(["--mqtt", &cfg.mqtt, "--mqtt-prefix", p]);
        }
        cmd
    }

    fn db(&self) -> PathBuf {
        self.root.join("hub").join("hub.db")
    }

    fn hub_alive(&mut self) -> bool {
        self.hub.try_wait().unwrap().is_none()
    }

    fn agents_alive(&mut self) -> usize {
        self.devices
            .iter_mut()
            .map(|d| {
                d.agent
                    .as_mut()
                    .is_some_and(|c| c.try_wait().unwrap().is_none())
            })
            .filter(|alive| *alive)
            .count()
    }

    /// Readings sealed but not yet acknowledged, over all devices.
    fn backlog(&self) -> usize {
        self.devices
            .iter()
            .map(|d| {
                std::fs::read_dir(d.dir.join("queue"))
                    .map(|r| r.count())
                    .unwrap_or(0)
            })
            .sum()
    }
}

/// Records the hub has stored, read from its SQLite file (WAL: a reader never blocks the hub's writer), so the
/// count works even while the hub's HTTP side is saturated.
async fn stored(db: &Path) -> (u64, u64) {
    let opts = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(db)
        .read_only(true);
    let mut c = sqlx::SqliteConnection::connect_with(&opts).await.unwrap();
    let (n, devices): (i64, i64) =
        sqlx::query_as("SELECT COUNT(*), COUNT(DISTINCT device) FROM records")
            .fetch_one(&mut c)
            .await
            .unwrap();
    let _ = c.close().await;
    (n as u64, devices as u64)
}

/// The hub's resident memory now and its peak so far (VmRSS, VmHWM), in KiB.
fn memory(pid: u32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

// ---------------------------------------------------------------------------------------------------------------
// Attacks

#[derive(Default)]
struct Stats {
    /// Requests answered (any status), or MQTT messages the broker took.
    ops: AtomicU64,
    ok: AtomicU64,
    refused: AtomicU64,
    /// Transport errors: refused or reset connections, timeouts.
    failed: AtomicU64,
    /// Connections opened, ended by the hub (closed, reset or answered), held now and at most.
    opened: AtomicU64,
    ended: AtomicU64,
    held: AtomicU64,
    peak: AtomicU64,
    bytes: AtomicU64,
}

impl Stats {
    fn answer(&self, status: reqwest::StatusCode) {
        self.ops.fetch_add(1, Relaxed);
        if status.is_success() {
            self.ok.fetch_add(1, Relaxed);
        } else {
            self.refused.fetch_add(1, Relaxed);
        }
    }
}

struct Ctx {
    hub: SocketAddr,
    url: String,
    sources: u8,
    devices: Vec<String>,
    prefix: Option<String>,
    mqtt: String,
    clients: Vec<reqwest::Client>,
}

impl Ctx {
    fn source(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(127, 0, 0, 2 + (i % self.sources as usize) as u8)
    }

    fn client(&self, i: usize) -> &reqwest::Client {
        &self.clients[i % self.clients.len()]
    }

    async fn connect(&self, i: usize) -> std::io::Result<TcpStream> {
        let s = TcpSocket::new_v4()?;
        s.bind(SocketAddr::new(IpAddr::V4(self.source(i)), 0))?;
        match timeout(Duration::from_secs(3), s.connect(self.hub)).await {
            Ok(r) => r,
            Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
        }
    }
}

fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    OsRng.fill_bytes(&mut b);
    b
}

fn random_device() -> String {
    DeviceId(random()).to_string()
}

/// A validly signed sharing request from a fresh application key, to a random owner, as large as the limits
/// allow (64 devices, the longest purpose text).
fn sharing_request() -> Vec<u8> {
    let seed = Secret::from_bytes(random());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let request = SharingRequest {
        app_key: RustCrypto.ed25519_public(&seed),
        app_name: format!("app-{}", hex::encode(random::<4>())),
        owner: random(),
        devices: (0..MAX_DEVICES).map(|_| DeviceId(random())).collect(),
        range: Span::new(
            UnixTime::new(now - 60 * 86_400).unwrap(),
            UnixTime::new(now).unwrap(),
        )
        .unwrap(),
        purpose: "energy.optimization".into(),
        purpose_text: "x".repeat(MAX_PURPOSE_TEXT),
        retention: 86_400,
        reply_key: random(),
        nonce: random(),
        expires: UnixTime::new(now + 86_400).unwrap(),
    };
    request
        .sign(|tbs| RustCrypto.ed25519_sign(&seed, tbs))
        .unwrap()
}

/// 4 MiB of CBOR: an array announcing 4 194 295 items, each the integer 1.
fn cbor_bomb() -> Vec<u8> {
    let n = (MAX_BODY - 9) as u64;
    let mut b = Vec::with_capacity(MAX_BODY);
    b.push(0x9b);
    b.extend_from_slice(&n.to_be_bytes());
    b.resize(MAX_BODY, 0x01);
    b
}

/// Posts `body()` to `path()` in a loop until the deadline.
async fn post_loop(
    ctx: Arc<Ctx>,
    i: usize,
    stats: Arc<Stats>,
    deadline: Instant,
    path: impl Fn(usize) -> String,
    body: impl Fn() -> reqwest::Body,
    len: u64,
) {
    let mut n = 0usize;
    while Instant::now() < deadline {
        let url = format!("{}{}", ctx.url, path(n));
        n += 1;
        let sent = timeout_at(deadline, async {
            let resp = ctx.client(i).post(&url).body(body()).send().await?;
            let status = resp.status();
            resp.bytes().await?;
            Ok::<_, reqwest::Error>(status)
        })
        .await;
        match sent {
            Ok(Ok(status)) => {
                stats.answer(status);
                stats.bytes.fetch_add(len, Relaxed);
            }
            Ok(Err(_)) => {
                stats.failed.fetch_add(1, Relaxed);
                sleep(Duration::from_millis(10)).await;
            }
            Err(_) => break,
        }
    }
}

/// Pages one device's records with `limit=10000` from the start, over and over.
async fn read_loop(ctx: Arc<Ctx>, i: usize, stats: Arc<Stats>, deadline: Instant) {
    let device = ctx.devices[i % ctx.devices.len()].clone();
    let mut after: Option<u64> = None;
    while Instant::now() < deadline {
        let mut url = format!(
            "{}/v1/devices/{device}/records?epoch=1&limit=10000",
            ctx.url
        );
        if let Some(a) = after {
            write!(url, "&after={a}").unwrap();
        }
        let got = timeout_at(deadline, async {
            let resp = ctx.client(i).get(&url).send().await?;
            let status = resp.status();
            Ok::<_, reqwest::Error>((status, resp.bytes().await?))
        })
        .await;
        match got {
            Ok(Ok((status, body))) => {
                stats.answer(status);
                stats.bytes.fetch_add(body.len() as u64, Relaxed);
                // Only the cursor matters: find it without parsing the whole page.
                let text = String::from_utf8_lossy(&body);
                after = text.rfind("\"next_after\":").and_then(|at| {
                    let rest = &text[at + 13..];
                    let end = rest
                        .find(|c: char| !c.is_ascii_digit())
                        .unwrap_or(rest.len());
                    rest[..end].parse().ok()
                });
            }
            Ok(Err(_)) => {
                stats.failed.fetch_add(1, Relaxed);
                sleep(Duration::from_millis(10)).await;
            }
            Err(_) => break,
        }
    }
}

/// Reads until the hub closes the connection (or sends anything: an answer ends the attack on this socket too).
async fn until_closed(r: &mut (impl AsyncReadExt + Unpin)) {
    let mut buf = [0u8; 4096];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// What one held connection does once open; returns when the hub ends it.
async fn play(kind: Attack, s: TcpStream, ctx: &Ctx, i: usize, stats: &Stats) {
    let (mut r, mut w) = s.into_split();
    match kind {
        Attack::IdleSockets => until_closed(&mut r).await,
        Attack::Slowloris => {
            let trickle = async {
                if w.write_all(b"GET /v1/devices HTTP/1.1\r\nHost: hub\r\n")
                    .await
                    .is_err()
                {
                    return;
                }
                for n in 0u64..100_000 {
                    sleep(Duration::from_secs(1)).await;
                    if w.write_all(format!("X-{n}: {n}\r\n").as_bytes())
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            };
            tokio::select! {
                _ = until_closed(&mut r) => {}
                _ = trickle => {}
            }
        }
        Attack::HugeLength => {
            // Half announce exactly the largest accepted body, half a terabyte; both send 16 bytes and wait.
            let length: u64 = if i.is_multiple_of(2) {
                MAX_BODY as u64
            } else {
                1 << 40
            };
            let path = if i % 4 < 2 {
                "/v1/requests".to_string()
            } else {
                format!("/v1/devices/{}/uplinks", ctx.devices[i % ctx.devices.len()])
            };
            let head = format!(
                "POST {path} HTTP/1.1\r\nHost: hub\r\nContent-Type: application/octet-stream\r\nContent-Length: {length}\r\n\r\n0123456789abcdef"
            );
            if w.write_all(head.as_bytes()).await.is_ok() {
                until_closed(&mut r).await;
            }
        }
        Attack::SlowUploads => {
            // Announce 4 MiB, send all but the last byte in 64 KiB steps, then hold.
            let path = match i % 3 {
                0 => format!("/v1/devices/{}/uplinks", ctx.devices[i % ctx.devices.len()]),
                1 => "/v1/requests".to_string(),
                _ => format!("/v1/pairing/{}/to-keeper", random_device()),
            };
            let head = format!(
                "POST {path} HTTP/1.1\r\nHost: hub\r\nContent-Type: application/octet-stream\r\nContent-Length: {MAX_BODY}\r\n\r\n"
            );
            let chunk = vec![0x5au8; 64 * 1024];
            let send = async {
                w.write_all(head.as_bytes()).await?;
                let mut left = MAX_BODY - 1;
                while left > 0 {
                    let n = left.min(chunk.len());
                    w.write_all(&chunk[..n]).await?;
                    stats.bytes.fetch_add(n as u64, Relaxed);
                    left -= n;
                    sleep(Duration::from_millis(20)).await;
                }
                Ok::<_, std::io::Error>(())
            };
            tokio::select! {
                _ = until_closed(&mut r) => {}
                sent = send => if sent.is_ok() { until_closed(&mut r).await },
            }
        }
        _ => unreachable!("not a connection attack"),
    }
}

/// Keeps one connection of the attack open until the deadline, opening a new one whenever the hub ends it.
async fn hold_loop(ctx: Arc<Ctx>, i: usize, kind: Attack, stats: Arc<Stats>, deadline: Instant) {
    // Spread the connections over the first second, as clients arrive.
    sleep(Duration::from_millis((i % 1000) as u64)).await;
    while Instant::now() < deadline {
        let s = match timeout_at(deadline, ctx.connect(i)).await {
            Ok(Ok(s)) => s,
            Ok(Err(_)) => {
                stats.failed.fetch_add(1, Relaxed);
                sleep(Duration::from_millis(100)).await;
                continue;
            }
            Err(_) => break,
        };
        stats.opened.fetch_add(1, Relaxed);
        let now = stats.held.fetch_add(1, Relaxed) + 1;
        stats.peak.fetch_max(now, Relaxed);
        let ended = timeout_at(deadline, play(kind, s, &ctx, i, &stats)).await;
        stats.held.fetch_sub(1, Relaxed);
        if ended.is_err() {
            break;
        }
        stats.ended.fetch_add(1, Relaxed);
        sleep(Duration::from_millis(50)).await;
    }
}

/// Publishes forged messages on the honest devices' topics as fast as the broker takes them (QoS 1).
async fn mqtt_loop(ctx: Arc<Ctx>, i: usize, kind: Attack, stats: Arc<Stats>, deadline: Instant) {
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::mqttbytes::v5::Packet;
    use rumqttc::v5::{AsyncClient, Event, MqttOptions};
    let rest = ctx.mqtt.trim_start_matches("mqtt://");
    let (host, port) = rest.rsplit_once(':').unwrap_or((rest, "1883"));
    let mut opts = MqttOptions::new(
        format!("abuse-{}-{i}", hex::encode(random::<4>())),
        host,
        port.parse().unwrap(),
    );
    opts.set_keep_alive(Duration::from_secs(5));
    let (client, mut events) = AsyncClient::new(opts, 256);
    let counted = stats.clone();
    let poller = tokio::spawn(async move {
        while let Ok(ev) = timeout_at(deadline, events.poll()).await {
            match ev {
                Ok(Event::Incoming(Packet::PubAck(_))) => {
                    counted.ops.fetch_add(1, Relaxed);
                    counted.ok.fetch_add(1, Relaxed);
                }
                Ok(_) => {}
                Err(_) => {
                    counted.failed.fetch_add(1, Relaxed);
                    sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    let prefix = ctx.prefix.clone().unwrap();
    let mut n = 0usize;
    while Instant::now() < deadline {
        let device = &ctx.devices[n % ctx.devices.len()];
        n += 1;
        let (topic, payload) = match kind {
            Attack::MqttError => (
                format!("{prefix}/{device}/error"),
                if n.is_multiple_of(2) {
                    format!(r#"{{"error":"unauthorized","message":"forged refusal {n}"}}"#)
                        .into_bytes()
                } else {
                    random::<64>().to_vec()
                },
            ),
            Attack::MqttAck => {
                // 1 to 8 acks: `32 ‖ seq (6) ‖ verdict ‖ tag (16)` with small sequence numbers and random tags.
                let mut p = Vec::new();
                for k in 0..(1 + n % 8) {
                    p.push(0x32);
                    p.extend_from_slice(&((n / 8 + k) as u64).to_be_bytes()[2..]);
                    p.push(0);
                    p.extend_from_slice(&random::<16>());
                }
                (format!("{prefix}/{device}/ack"), p)
            }
            _ => {
                // Framed junk: `u16 length ‖ 31 ‖ random`, or plain random bytes.
                let mut p = Vec::new();
                if n.is_multiple_of(2) {
                    p.extend_from_slice(&100u16.to_be_bytes());
                    p.push(0x31);
                    p.extend_from_slice(&random::<99>());
                } else {
                    p.extend_from_slice(&random::<64>());
                }
                (format!("{prefix}/{device}/up"), p)
            }
        };
        stats.bytes.fetch_add(payload.len() as u64, Relaxed);
        match timeout_at(
            deadline,
            client.publish(topic, QoS::AtLeastOnce, false, payload),
        )
        .await
        {
            Ok(Ok(())) => {}
            Ok(Err(_)) => sleep(Duration::from_millis(10)).await,
            Err(_) => break,
        }
    }
    let _ = client.disconnect().await;
    let _ = timeout(Duration::from_secs(1), poller).await;
}

fn launch(
    kind: Attack,
    ctx: &Arc<Ctx>,
    cfg: &Config,
    stats: &Arc<Stats>,
    deadline: Instant,
) -> JoinSet<()> {
    let mut set = JoinSet::new();
    let tasks = |n: usize| cfg.scaled(n);
    match kind {
        Attack::Control => {}
        Attack::SharingFlood => {
            for i in 0..tasks(32) {
                let (c, s) = (ctx.clone(), stats.clone());
                set.spawn(async move {
                    let len = sharing_request().len() as u64;
                    post_loop(
                        c,
                        i,
                        s,
                        deadline,
                        |_| "/v1/requests".into(),
                        || sharing_request().into(),
                        len,
                    )
                    .await
                });
            }
        }
        Attack::PairingFlood => {
            let body = bytes_of(random_vec(64 * 1024));
            for i in 0..tasks(32) {
                let (c, s, b) = (ctx.clone(), stats.clone(), body);
                let real = c.devices.clone();
                set.spawn(async move {
                    post_loop(
                        c,
                        i,
                        s,
                        deadline,
                        move |n| {
                            // Three in four to random device ids, one in four to the honest devices.
                            let (device, dir) = if n % 4 == 3 {
                                (
                                    real[n % real.len()].clone(),
                                    ["to-device", "to-keeper"][n % 2],
                                )
                            } else {
                                (random_device(), "to-keeper")
                            };
                            format!("/v1/pairing/{device}/{dir}")
                        },
                        move || b.into(),
                        64 * 1024,
                    )
                    .await
                });
            }
        }
        Attack::CborBombs => {
            let body = bytes_of(cbor_bomb());
            for i in 0..tasks(8) {
                let (c, s, b) = (ctx.clone(), stats.clone(), body);
                set.spawn(async move {
                    post_loop(
                        c,
                        i,
                        s,
                        deadline,
                        move |n| ["/v1/requests", "/v1/answers"][(n + i) % 2].into(),
                        move || b.into(),
                        MAX_BODY as u64,
                    )
                    .await
                });
            }
        }
        Attack::Readers => {
            for i in 0..tasks(8) {
                set.spawn(read_loop(ctx.clone(), i, stats.clone(), deadline));
            }
        }
        Attack::HugeLength => {
            for i in 0..tasks(500) {
                set.spawn(hold_loop(ctx.clone(), i, kind, stats.clone(), deadline));
            }
        }
        Attack::Slowloris => {
            for i in 0..tasks(400) {
                set.spawn(hold_loop(ctx.clone(), i, kind, stats.clone(), deadline));
            }
        }
        Attack::IdleSockets => {
            for i in 0..tasks(1100) {
                set.spawn(hold_loop(ctx.clone(), i, kind, stats.clone(), deadline));
            }
        }
        Attack::SlowUploads => {
            for i in 0..tasks(300) {
                set.spawn(hold_loop(ctx.clone(), i, kind, stats.clone(), deadline));
            }
        }
        Attack::MqttError | Attack::MqttAck | Attack::MqttUp => {
            for i in 0..tasks(4) {
                set.spawn(mqtt_loop(ctx.clone(), i, kind, stats.clone(), deadline));
            }
        }
    }
    set
}

fn random_vec(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    OsRng.fill_bytes(&mut v);
    v
}

/// A body sent over and over without copying: leaked once per scenario (at most a few MiB).
fn bytes_of(v: Vec<u8>) -> &'static [u8] {
    Box::leak(v.into_boxed_slice())
}

// ---------------------------------------------------------------------------------------------------------------
// Measuring

struct Window {
    stored: u64,
    rate: f64,
    backlog: usize,
    rss_peak_kib: u64,
}

/// Measures one window of `secs` seconds: records stored, backlog at its end, the hub's peak RSS sampled every
/// 100 ms.
async fn window(rig: &Rig, secs: u64) -> Window {
    let db = rig.db();
    let pid = rig.hub.id();
    let (before, _) = stored(&db).await;
    let started = Instant::now();
    let end = started + Duration::from_secs(secs);
    let mut peak = 0;
    while Instant::now() < end {
        peak = peak.max(memory(pid).0);
        sleep(Duration::from_millis(100)).await;
    }
    let (after, _) = stored(&db).await;
    let took = started.elapsed().as_secs_f64();
    Window {
        stored: after - before,
        rate: (after - before) as f64 / took,
        backlog: rig.backlog(),
        rss_peak_kib: peak.max(memory(pid).0),
    }
}

#[derive(Default)]
struct Integrity {
    sealed: u64,
    lost: u64,
    duplicated: u64,
    gaps: Option<u64>,
    unchecked: usize,
    /// Still in the agents' queues after the drain.
    still_queued: u64,
}

/// Every device's stored sequence numbers against what it sealed (its `seq` file), and the hub's gap report.
async fn integrity(rig: &Rig) -> Integrity {
    let http = custos_client::tls::http_client(
        reqwest::Client::builder().timeout(Duration::from_secs(30)),
        &custos_client::TlsTrust::System,
    )
    .unwrap();
    let mut out = Integrity::default();
    for d in &rig.devices {
        let sealed: u64 = std::fs::read_to_string(d.dir.join("seq"))
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0);
        out.sealed += sealed;
        let expected = if d.killed {
            sealed.saturating_sub(1)
        } else {
            sealed
        };
        let mut seqs = BTreeSet::new();
        let mut total = 0u64;
        let mut after: Option<u64> = None;
        let mut complete = false;
        for _ in 0..100_000 {
            let mut url = format!("{}/v1/devices/{}/records?epoch=1&limit=1000", rig.url, d.id);
            if let Some(a) = after {
                write!(url, "&after={a}").unwrap();
            }
            let Ok(resp) = http.get(&url).send().await else {
                break;
            };
            let Some(page) = resp
                .bytes()
                .await
                .ok()
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            else {
                break;
            };
            for r in page["records"].as_array().into_iter().flatten() {
                total += 1;
                seqs.insert(r["seq"].as_u64().unwrap());
            }
            match page["next_after"].as_u64() {
                Some(a) => after = Some(a),
                None => {
                    complete = true;
                    break;
                }
            }
        }
        if !complete {
            out.unchecked += 1;
            continue;
        }
        out.duplicated += total - seqs.len() as u64;
        // What the agent still holds after draining is late, not lost: counted apart.
        let queued: BTreeSet<u64> = std::fs::read_dir(d.dir.join("queue"))
            .into_iter()
            .flatten()
            .filter_map(|e| {
                let name = e.ok()?.file_name();
                u64::from_str_radix(name.to_str()?.strip_suffix(".up")?, 16).ok()
            })
            .collect();
        out.still_queued += queued.len() as u64;
        out.lost += (0..expected)
            .filter(|s| !seqs.contains(s) && !queued.contains(s))
            .count() as u64;
        let gaps = async {
            let resp = http
                .get(format!("{}/v1/devices/{}/gaps", rig.url, d.id))
                .send()
                .await
                .ok()?;
            if !resp.status().is_success() {
                return None;
            }
            serde_json::from_slice::<Value>(&resp.bytes().await.ok()?).ok()?["missing"].as_u64()
        }
        .await;
        if let Some(g) = gaps {
            *out.gaps.get_or_insert(0) += g;
        }
    }
    out
}

struct Row {
    scenario: &'static str,
    attack: String,
    attack_detail: Value,
    baseline: Window,
    under: Window,
    hwm_kib: u64,
    /// Readings per second the agents take.
    offered: f64,
    hub_alive: bool,
    agents_alive: usize,
    agents: usize,
    clean_exits: usize,
    exits: Vec<Option<i32>>,
    drained: bool,
    integrity: Integrity,
}

impl Row {
    fn ratio(&self) -> f64 {
        if self.baseline.rate > 0.0 {
            self.under.rate / self.baseline.rate
        } else {
            0.0
        }
    }

    fn verdict(&self) -> String {
        let mut why = Vec::new();
        if self.ratio() < 0.8 {
            why.push("ratio");
        }
        if !self.hub_alive {
            why.push("hub died");
        }
        if self.agents_alive < self.agents {
            why.push("agent exited");
        }
        if self.clean_exits < self.agents {
            why.push("exit code");
        }
        if self.integrity.lost > 0 {
            why.push("lost");
        }
        if self.integrity.duplicated > 0 {
            why.push("duplicated");
        }
        if self.integrity.gaps.unwrap_or(0) > 0 {
            why.push("gaps");
        }
        if self.integrity.unchecked > 0 {
            why.push("unchecked");
        }
        if !self.drained {
            why.push("undrained");
        }
        if why.is_empty() {
            "ok".into()
        } else {
            format!("FAIL: {}", why.join(", "))
        }
    }

    fn json(&self) -> Value {
        json!({
            "scenario": self.scenario,
            "attack": self.attack,
            "attack_detail": self.attack_detail,
            "baseline_ingest_per_s": self.baseline.rate,
            "attack_ingest_per_s": self.under.rate,
            "baseline_stored": self.baseline.stored,
            "attack_stored": self.under.stored,
            "ratio": self.ratio(),
            "baseline_backlog": self.baseline.backlog,
            "attack_backlog": self.under.backlog,
            "attack_backlog_s": self.under.backlog as f64 / self.offered,
            "baseline_rss_peak_mib": self.baseline.rss_peak_kib as f64 / 1024.0,
            "attack_rss_peak_mib": self.under.rss_peak_kib as f64 / 1024.0,
            "hub_vmhwm_mib": self.hwm_kib as f64 / 1024.0,
            "hub_alive": self.hub_alive,
            "agents": self.agents,
            "agents_alive": self.agents_alive,
            "agents_exit_0": self.clean_exits,
            "agent_exit_codes": self.exits,
            "drained": self.drained,
            "sealed": self.integrity.sealed,
            "lost": self.integrity.lost,
            "duplicated": self.integrity.duplicated,
            "still_queued": self.integrity.still_queued,
            "gaps_missing": self.integrity.gaps,
            "devices_unchecked": self.integrity.unchecked,
            "verdict": self.verdict(),
        })
    }
}

fn describe(kind: Attack, s: &Stats, secs: f64) -> (String, Value) {
    let g = |a: &AtomicU64| a.load(Relaxed);
    let detail = json!({
        "ops": g(&s.ops), "ok": g(&s.ok), "refused": g(&s.refused), "failed": g(&s.failed),
        "opened": g(&s.opened), "ended_by_hub": g(&s.ended), "held_peak": g(&s.peak),
        "bytes": g(&s.bytes),
    });
    let text = if kind == Attack::Control {
        "none".to_string()
    } else if kind.holds() {
        format!(
            "{} held (peak), {} opened, {} ended by hub",
            g(&s.peak),
            g(&s.opened),
            g(&s.ended)
        )
    } else {
        format!(
            "{:.0}/s ({:.1} MB/s), {} refused, {} failed",
            g(&s.ops) as f64 / secs,
            g(&s.bytes) as f64 / secs / 1e6,
            g(&s.refused),
            g(&s.failed)
        )
    };
    (text, detail)
}

fn scenario(cfg: &Config, rt: &tokio::runtime::Runtime, kind: Attack) -> Row {
    let mut rig = Rig::start(cfg, kind.mqtt());
    let n = rig.devices.len() as u64;
    // Warm-up: every device joined and stored something, then a moment to settle.
    let warm = rt.block_on(async {
        for _ in 0..600 {
            if stored(&rig.db()).await.1 >= n {
                sleep(Duration::from_secs(2)).await;
                return true;
            }
            sleep(Duration::from_millis(100)).await;
        }
        false
    });
    if !warm {
        let logs: Vec<String> = rig.devices.iter().map(|d| tail(&d.log, 3)).collect();
        panic!(
            "{}: the devices did not start streaming\nhub: {}\nagents: {}",
            kind.name(),
            tail(&rig.root.join("hub.log"), 10),
            logs.join("\n")
        );
    }
    let baseline = rt.block_on(window(&rig, cfg.secs));

    let ctx = Arc::new(Ctx {
        hub: SocketAddr::from(([127, 0, 0, 1], rig.port)),
        url: rig.url.clone(),
        sources: cfg.sources,
        devices: rig.devices.iter().map(|d| d.id.clone()).collect(),
        prefix: rig.prefix.clone(),
        mqtt: cfg.mqtt.clone(),
        clients: (0..cfg.sources as usize)
            .map(|k| {
                custos_client::tls::http_client(
                    reqwest::Client::builder()
                        .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + k as u8)))
                        .timeout(Duration::from_secs(30)),
                    &custos_client::TlsTrust::System,
                )
                .unwrap()
            })
            .collect(),
    });
    let stats = Arc::new(Stats::default());
    let (under, agents_alive, hub_alive) = rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(cfg.secs);
        let mut set = launch(kind, &ctx, cfg, &stats, deadline);
        let under = window(&rig, cfg.secs).await;
        let alive = rig.agents_alive();
        let hub = rig.hub_alive();
        set.abort_all();
        let _ = timeout(Duration::from_secs(10), async {
            while set.join_next().await.is_some() {}
        })
        .await;
        (under, alive, hub)
    });
    drop(ctx);
    let (attack, attack_detail) = describe(kind, &stats, cfg.secs as f64);
    let hwm_kib = memory(rig.hub.id()).1;

    // Let the agents catch up for a moment, then stop them: each must exit 0.
    for _ in 0..100 {
        if rig.backlog() == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut exits = Vec::new();
    for d in &mut rig.devices {
        if let Some(mut c) = d.agent.take() {
            let code = interrupt(&mut c, 15);
            d.killed = code.is_none();
            exits.push(code);
        }
    }
    let clean_exits = exits.iter().filter(|c| **c == Some(0)).count();
    // An agent stopped by SIGINT keeps what it has not sent; `--count 0` sends it and exits.
    let mut drained = true;
    for i in 0..rig.devices.len() {
        if std::fs::read_dir(rig.devices[i].dir.join("queue")).is_ok_and(|mut r| r.next().is_some())
        {
            let mut cmd = rig.agent_command(cfg, i);
            cmd.args(["--count", "0"]);
            drained &= run_bounded(cmd, 45) == Some(true);
        }
    }
    let integrity = rt.block_on(integrity(&rig));
    interrupt(&mut rig.hub, 10);
    let agents = rig.devices.len();
    if std::env::var_os("CUSTOS_ABUSE_KEEP").is_some() {
        eprintln!("abuse: {}: kept {}", kind.name(), rig.root.display());
        std::mem::forget(rig);
    }
    Row {
        scenario: kind.name(),
        attack,
        attack_detail,
        baseline,
        under,
        hwm_kib,
        offered: cfg.devices as f64 * 1000.0 / every_ms(&cfg.every),
        hub_alive,
        agents_alive,
        agents,
        clean_exits,
        exits,
        drained,
        integrity,
    }
}

fn table(cfg: &Config, rows: &[Row]) -> String {
    let mut t = String::new();
    writeln!(
        t,
        "\nabuse: {} agents every {}, windows of {} s, attackers from {} address(es), hub soft fd limit {}",
        cfg.devices,
        cfg.every,
        cfg.secs,
        cfg.sources,
        if cfg.hub_nofile > 0 {
            cfg.hub_nofile.to_string()
        } else {
            "inherited".into()
        }
    )
    .unwrap();
    writeln!(
        t,
        "| scenario | attack achieved | baseline ingest/s | attack ingest/s | ratio | backlog at end | peak hub RSS MiB (baseline / attack / VmHWM) | agents alive | exit 0 | lost | duplicated | gaps | verdict |"
    )
    .unwrap();
    writeln!(t, "|---|---|---|---|---|---|---|---|---|---|---|---|---|").unwrap();
    for r in rows {
        writeln!(
            t,
            "| {} | {} | {:.0} | {:.0} | {:.2} | {} ({:.1} s) | {:.0} / {:.0} / {:.0} | {}/{} | {}/{} | {} | {} | {} | {} |",
            r.scenario,
            r.attack,
            r.baseline.rate,
            r.under.rate,
            r.ratio(),
            r.under.backlog,
            r.under.backlog as f64 / r.offered,
            r.baseline.rss_peak_kib as f64 / 1024.0,
            r.under.rss_peak_kib as f64 / 1024.0,
            r.hwm_kib as f64 / 1024.0,
            r.agents_alive,
            r.agents,
            r.clean_exits,
            r.agents,
            r.integrity.lost,
            r.integrity.duplicated,
            r.integrity
                .gaps
                .map_or("n/a".to_string(), |g| g.to_string()),
            r.verdict(),
        )
        .unwrap();
    }
    t
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` (or `--all-targets`) does not: then do nothing, since
    // a run takes minutes.
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("abuse: a benchmark; run it with `cargo bench -p custos-cli --bench abuse`");
        return;
    }
    let cfg = Config::load();
    let chosen: Vec<Attack> = Attack::ALL
        .into_iter()
        .filter(|a| cfg.only.is_empty() || cfg.only.iter().any(|o| a.name().contains(o.as_str())))
        .collect();
    if chosen.is_empty() {
        let names: Vec<&str> = Attack::ALL.iter().map(|a| a.name()).collect();
        eprintln!("no such scenario; choose from: {}", names.join(" "));
        std::process::exit(2);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // benches run in target/<profile>/deps/: the report goes next to the profile directories.
    let jsonl = std::env::current_exe()
        .ok()
        .and_then(|p| p.ancestors().nth(3).map(|t| t.join("abuse.jsonl")))
        .unwrap_or_else(|| PathBuf::from("abuse.jsonl"));
    let mut file = std::fs::File::create(&jsonl).unwrap();
    let mut rows = Vec::new();
    for kind in chosen {
        eprintln!("abuse: {} …", kind.name());
        let row = scenario(&cfg, &rt, kind);
        let line = row.json().to_string();
        writeln!(file, "{line}").unwrap();
        if cfg.json {
            println!("{line}");
        }
        eprintln!(
            "abuse: {}: ratio {:.2} ({:.0} → {:.0} records/s), {}",
            row.scenario,
            row.ratio(),
            row.baseline.rate,
            row.under.rate,
            row.verdict()
        );
        rows.push(row);
    }
    println!("{}", table(&cfg, &rows));
    println!("JSON lines: {}", jsonl.display());
}
