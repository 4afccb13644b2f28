//! `custos device run` as a process, against `custos hub serve`: hubs killed, answering 500 or stopped; agents
//! stopped by SIGINT and SIGTERM, killed by SIGKILL over and over, or out of disk space. Every reading is stored
//! once, and the hub reports no gap that is not a real loss.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::{custos, free_port, start_hub};

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A device made in `state` (relative to `d`, or absolute), admitted at the hub in `d/hub`, a master secret and a
/// DPK for it in `d/dpk.json`; returns the device id.
fn make_device(d: &Path, state: &str) -> String {
    let made = common::make_admitted_device(d, state);
    let device = made["device"].as_str().unwrap().to_string();
    custos(d, &["master", "new"]);
    custos(
        d,
        &[
            "dpk", "new", "--device", &device, "--epoch", "1", "-o", "dpk.json",
        ],
    );
    device
}

/// `custos device run` with `args`, its stderr into `d/{log}`.
fn spawn_agent(d: &Path, log: &str, args: &[&str]) -> Child {
    let err = std::fs::File::create(d.join(log)).unwrap();
    common::trusting(&mut Command::new(env!("CARGO_BIN_EXE_custos")), d)
        .args(["device", "run"])
        .args(args)
        .current_dir(d)
        .env_remove("RUST_LOG")
        .env_remove("CUSTOS_MQTT_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::from(err))
        .spawn()
        .unwrap()
}

/// Waits for `child` at most `limit`; kills it and fails if it is still running.
fn wait_for(child: &mut Child, limit: Duration, what: &str) -> ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn signal(child: &Child, name: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success(), "kill -{name}");
}

/// `GET path` on the hub at `port`, as JSON.
fn get_json(port: u16, path: &str) -> serde_json::Value {
    let (status, body) = common::get(port, path);
    serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("{e}: {status} {}", String::from_utf8_lossy(&body)))
}

fn stored_seqs(port: u16, device: &str) -> Vec<u64> {
    let v = get_json(port, &format!("/v1/devices/{device}/records?epoch=1"));
    assert!(v["next_after"].is_null(), "more than one page: {v}");
    v["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["seq"].as_u64().unwrap())
        .collect()
}

fn gaps(port: u16, device: &str) -> serde_json::Value {
    get_json(port, &format!("/v1/devices/{device}/gaps"))
}

fn queue_len(state: &Path) -> usize {
    std::fs::read_dir(state.join("queue"))
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            let name = name.to_string_lossy();
            name.ends_with(".up") || name.ends_with(".skip")
        })
        .count()
}

fn stop(mut hub: Child) {
    hub.kill().unwrap();
    hub.wait().unwrap();
}

#[test]
fn a_hub_killed_mid_stream_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let device = make_device(d, "dev");
    let port = free_port();
    let url = common::hub_url(port);

    let hub = start_hub(d, port);
    let mut agent = spawn_agent(
        d,
        "agent.log",
        &[
            "--state-dir",
            "dev",
            "--hub",
            &url,
            "--keys",
            "dpk.json",
            "--every",
            "100ms",
            "--count",
            "40",
        ],
    );
    std::thread::sleep(Duration::from_millis(1500));
    stop(hub); // SIGKILL: no graceful shutdown
    std::thread::sleep(Duration::from_millis(1500));
    let hub = start_hub(d, port);

    let status = wait_for(&mut agent, Duration::from_secs(60), "the agent");
    let log = std::fs::read_to_string(d.join("agent.log")).unwrap();
    assert!(status.success(), "the agent failed: {log}");
    let seqs = stored_seqs(port, &device);
    let gaps = gaps(port, &device);
    stop(hub);
    assert_eq!(
        seqs,
        (0..40).collect::<Vec<_>>(),
        "every reading once, in order"
    );
    assert_eq!(gaps["gaps"], serde_json::json!([]), "{gaps}");
    // The operator's view says the same.
    let listed: serde_json::Value = serde_json::from_slice(&custos(
        d,
        &["hub", "devices", "--data-dir", "hub", "--json"],
    ))
    .unwrap();
    let row = &listed["devices"][0];
    assert_eq!(
        (row["max_seq"].as_i64(), row["lost"].as_u64()),
        (Some(39), Some(0)),
        "{listed}"
    );
}

#[test]
fn a_revoked_device_stops_on_the_signed_device_list() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let device = make_device(d, "dev");
    let port = free_port();
    let url = common::hub_url(port);
    let hub = start_hub(d, port);
    let run = |extra: &[&str]| {
        let mut args = vec![
            "device",
            "run",
            "--state-dir",
            "dev",
            "--every",
            "100ms",
            "--count",
            "2",
        ];
        args.extend_from_slice(extra);
        common::trusting(&mut Command::new(env!("CARGO_BIN_EXE_custos")), d)
            .args(&args)
            .current_dir(d)
            .output()
            .unwrap()
    };
    let first = run(&["--hub", &url, "--keys", "dpk.json"]);
    let text = String::from_utf8_lossy(&first.stderr);
    assert!(first.status.success(), "{text}");
    assert!(text.contains("this device is authorized"), "{text}");

    custos(
        d,
        &["hub", "revoke", "--data-dir", "hub", "--device", &device],
    );
    let second = run(&[]);
    let text = String::from_utf8_lossy(&second.stderr);
    stop(hub);
    assert_eq!(second.status.code(), Some(4), "{text}");
    assert!(
        text.contains("not on the hub's signed device list"),
        "{text}"
    );
    assert!(!text.contains("sealed"), "sealed after revocation: {text}");
}

/// What `custos device run` cannot work with is a usage error (exit code 2), said plainly, before anything is sent.
#[test]
fn bad_configuration_exits_with_code_2() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_device(d, "dev");
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_custos"))
            .args(["device", "run"])
            .args(args)
            .current_dir(d)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, text) = run(&["--state-dir", "dev"]);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("--hub"), "{text}");
    let (code, text) = run(&["--state-dir", "dev", "--every", "often"]);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("not an interval"), "{text}");
    let (code, text) = run(&["--state-dir", "dev", "--source", "radio"]);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("not a source"), "{text}");
    let (code, text) = run(&["--state-dir", "nowhere", "--hub", "http://127.0.0.1:9"]);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("device.json"), "{text}");
}

/// A proxy in front of a hub that answers every request with 500 while `failing` is set (a hub whose database is
/// gone), and forwards it otherwise.
struct Proxy {
    port: u16,
    failing: Arc<AtomicBool>,
    refused: Arc<AtomicUsize>,
}

fn proxy(upstream: u16) -> Proxy {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let failing = Arc::new(AtomicBool::new(false));
    let refused = Arc::new(AtomicUsize::new(0));
    let (f, r) = (failing.clone(), refused.clone());
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(mut client) = client else { break };
            let (failing, refused) = (f.clone(), r.clone());
            std::thread::spawn(move || {
                let refuse = |client: &mut TcpStream| {
                    let body = r#"{"error":"internal","message":"the database is unavailable"}"#;
                    let _ = write!(
                        client,
                        "HTTP/1.1 500 Internal Server Error\r\ncontent-type: application/json\r\n\
                         content-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    refused.fetch_add(1, Ordering::SeqCst);
                    let _ = client.shutdown(std::net::Shutdown::Both);
                };
                let mut buf = vec![0u8; 1 << 16];
                let Ok(mut up) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    return;
                };
                let (mut up_r, mut client_w) =
                    (up.try_clone().unwrap(), client.try_clone().unwrap());
                let back = std::thread::spawn(move || {
                    let _ = std::io::copy(&mut up_r, &mut client_w);
                    let _ = client_w.shutdown(std::net::Shutdown::Write);
                });
                loop {
                    let n = match client.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    if failing.load(Ordering::SeqCst) {
                        let _ = up.shutdown(std::net::Shutdown::Both);
                        refuse(&mut client);
                        break;
                    }
                    if up.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                let _ = up.shutdown(std::net::Shutdown::Write);
                let _ = back.join();
            });
        }
    });
    Proxy {
        port,
        failing,
        refused,
    }
}

/// A hub that answers 500 for a while (a dropped database connection, a full disk) is a hub to try again later:
/// the agent keeps measuring on schedule and queueing, backs off, and then delivers everything once.
#[test]
fn a_hub_answering_500_for_a_while_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let device = make_device(d, "dev");
    let port = free_port();
    // Plain HTTP on loopback: the proxy answers 500 in plain HTTP itself.
    let hub = common::serve(d, &["--data-dir", "hub", "--plain-http"], port);
    let proxy = proxy(port);
    let url = format!("http://127.0.0.1:{}", proxy.port);
    let started = Instant::now();
    let mut agent = spawn_agent(
        d,
        "agent.log",
        &[
            "--state-dir",
            "dev",
            "--hub",
            &url,
            "--keys",
            "dpk.json",
            "--every",
            "50ms",
            "--count",
            "60",
        ],
    );
    std::thread::sleep(Duration::from_millis(700));
    proxy.failing.store(true, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(2000));
    let queued_meanwhile = queue_len(&d.join("dev"));
    proxy.failing.store(false, Ordering::SeqCst);
    let status = wait_for(&mut agent, Duration::from_secs(60), "the agent");
    let log = std::fs::read_to_string(d.join("agent.log")).unwrap();
    assert!(status.success(), "the agent failed: {log}");
    assert!(
        proxy.refused.load(Ordering::SeqCst) > 0,
        "the proxy refused nothing"
    );
    assert!(
        queued_meanwhile >= 20,
        "the agent did not keep measuring while the hub failed ({queued_meanwhile} queued): {log}"
    );
    assert!(log.contains("500"), "the refusal was not logged: {log}");
    assert!(
        started.elapsed() < Duration::from_secs(40),
        "{:?}",
        started.elapsed()
    );
    let seqs = stored_seqs(port, &device);
    let gaps = gaps(port, &device);
    stop(hub);
    assert_eq!(seqs, (0..60).collect::<Vec<_>>(), "{log}");
    assert_eq!(gaps["gaps"], serde_json::json!([]), "{gaps}");
    assert_eq!(queue_len(&d.join("dev")), 0);
}

/// SIGINT and SIGTERM stop the agent promptly at `--every 10ms`, whether it is sealing and sending or
/// backing off from a hub that is gone, with exit code 0 and its queue intact: a later run delivers all of it,
/// and the hub sees no gap.
#[test]
fn sigint_and_sigterm_stop_the_agent_promptly_with_its_queue_intact() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let device = make_device(d, "dev");
    let port = free_port();
    let url = common::hub_url(port);
    let hub = start_hub(d, port);
    custos(
        d,
        &[
            "device",
            "run",
            "--state-dir",
            "dev",
            "--hub",
            &url,
            "--keys",
            "dpk.json",
            "--count",
            "1",
        ],
    );
    // The agent stops within a second; the bound leaves room for a loaded machine.
    let bound = Duration::from_secs(2);
    let stop_with = |name: &str, log: &str| {
        let mut agent = spawn_agent(d, log, &["--state-dir", "dev", "--every", "10ms"]);
        std::thread::sleep(Duration::from_millis(1500));
        signal(&agent, name);
        let sent = Instant::now();
        let status = wait_for(&mut agent, Duration::from_secs(10), name);
        let took = sent.elapsed();
        let text = std::fs::read_to_string(d.join(log)).unwrap();
        assert!(took < bound, "SIG{name}: stopped after {took:?}: {text}");
        assert_eq!(status.code(), Some(0), "SIG{name}: {text}");
        assert!(text.contains("stopping"), "SIG{name}: {text}");
    };
    stop_with("INT", "int.log");
    stop_with("TERM", "term.log");
    // The hub is gone: the agent queues and backs off, and still stops at once.
    stop(hub);
    stop_with("INT", "int-down.log");
    stop_with("TERM", "term-down.log");
    let queued = queue_len(&d.join("dev"));
    assert!(queued > 20, "only {queued} queued");

    let hub = start_hub(d, port);
    custos(d, &["device", "run", "--state-dir", "dev", "--count", "1"]);
    let seqs = stored_seqs(port, &device);
    let gaps = gaps(port, &device);
    stop(hub);
    assert_eq!(queue_len(&d.join("dev")), 0);
    let n = u64::try_from(seqs.len()).unwrap();
    assert_eq!(seqs, (0..n).collect::<Vec<_>>());
    assert_eq!(gaps["gaps"], serde_json::json!([]), "{gaps}");
}

/// Killed with SIGKILL again and again at `--every 10ms` (so sometimes between reserving a sequence number and
/// queueing its message), restarted each time: the agent tells the hub which numbers it skipped, and once it has
/// drained, the hub reports no gap and holds every message once.
#[test]
fn an_agent_killed_over_and_over_leaves_no_gap_at_the_hub() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let device = make_device(d, "dev");
    let port = free_port();
    let url = common::hub_url(port);
    let hub = start_hub(d, port);
    custos(
        d,
        &[
            "device",
            "run",
            "--state-dir",
            "dev",
            "--hub",
            &url,
            "--keys",
            "dpk.json",
            "--count",
            "1",
        ],
    );
    let kill_a_few_times = |rounds: u64| {
        for i in 0..rounds {
            let mut agent = spawn_agent(d, "agent.log", &["--state-dir", "dev", "--every", "10ms"]);
            std::thread::sleep(Duration::from_millis(300 + 37 * i));
            agent.kill().unwrap(); // SIGKILL
            agent.wait().unwrap();
        }
    };
    // With the hub up (messages acked and gone from the queue), then down (the queue grows, and the agent spends
    // most of its time sealing).
    kill_a_few_times(6);
    stop(hub);
    kill_a_few_times(10);
    let hub = start_hub(d, port);
    let mut agent = spawn_agent(
        d,
        "agent.log",
        &["--state-dir", "dev", "--every", "10ms", "--count", "3"],
    );
    let status = wait_for(&mut agent, Duration::from_secs(60), "the last agent");
    let log = std::fs::read_to_string(d.join("agent.log")).unwrap();
    assert!(status.success(), "{log}");
    let seqs = stored_seqs(port, &device);
    let gaps = gaps(port, &device);
    stop(hub);
    assert_eq!(queue_len(&d.join("dev")), 0, "{log}");
    assert_eq!(gaps["gaps"], serde_json::json!([]), "{gaps}");
    let mut unique = seqs.clone();
    unique.dedup();
    assert_eq!(unique.len(), seqs.len());
    assert!(seqs.len() > 50, "only {} stored", seqs.len());
    let next: u64 = std::fs::read_to_string(d.join("dev/seq"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(gaps["max_seq"].as_u64(), Some(next - 1), "{gaps}");
}

/// A tmpfs mounted for a test, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Self {
        std::fs::create_dir_all(path).unwrap();
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(path)
            .status()
            .expect("mount(8) must be available");
        assert!(
            status.success(),
            "cannot mount a tmpfs (this test needs root): {status}"
        );
        Self(path.to_path_buf())
    }

    fn resize(&self, size: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(status.success(), "remount: {status}");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// The device's disk fills up while the hub is away: the agent stops with a clear message and exit code 1, the
/// queue it had is intact, and once there is room again a run delivers all of it without a gap.
#[test]
fn a_full_disk_stops_the_agent_and_keeps_its_queue() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let fs = Tmpfs::mount(&d.join("small"), "256k");
    let state = d.join("small/dev");
    let state_arg = state.to_str().unwrap();
    let device = make_device(d, state_arg);
    let port = free_port();
    let url = common::hub_url(port);
    let hub = start_hub(d, port);
    custos(
        d,
        &[
            "device",
            "run",
            "--state-dir",
            state_arg,
            "--hub",
            &url,
            "--keys",
            "dpk.json",
            "--count",
            "1",
        ],
    );
    stop(hub);
    let mut agent = spawn_agent(
        d,
        "full.log",
        &["--state-dir", state_arg, "--every", "10ms"],
    );
    let status = wait_for(
        &mut agent,
        Duration::from_secs(60),
        "the agent on a full disk",
    );
    let log = std::fs::read_to_string(d.join("full.log")).unwrap();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("disk is full"), "{log}");
    let queued = queue_len(&state);
    assert!(queued > 10, "only {queued} queued: {log}");

    fs.resize("4m");
    let hub = start_hub(d, port);
    custos(
        d,
        &["device", "run", "--state-dir", state_arg, "--count", "0"],
    );
    let seqs = stored_seqs(port, &device);
    let gaps = gaps(port, &device);
    stop(hub);
    assert_eq!(queue_len(&state), 0);
    assert_eq!(seqs.len(), 1 + queued, "every queued reading arrived");
    assert_eq!(gaps["gaps"], serde_json::json!([]), "{gaps}");
}
