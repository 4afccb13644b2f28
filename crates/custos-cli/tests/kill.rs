//! The hub process is killed (SIGKILL) in the middle of a device's stream and started again: the device agent
//! keeps its readings queued on disk, and after the restart every reading is stored exactly once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::{free_port, start_hub};

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn custos(dir: &Path, args: &[&str]) -> Vec<u8> {
    let out = Command::new(env!("CARGO_BIN_EXE_custos"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "custos {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn a_hub_killed_mid_stream_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let made: serde_json::Value = serde_json::from_slice(&custos(
        d,
        &["device", "make", "--state-dir", "dev", "--json"],
    ))
    .unwrap();
    let device = made["device"].as_str().unwrap().to_string();
    custos(
        d,
        &[
            "hub",
            "admit",
            "--data-dir",
            "hub",
            "--device",
            &device,
            "--code",
            made["join_code"].as_str().unwrap(),
        ],
    );
    custos(d, &["master", "new"]);
    custos(
        d,
        &[
            "dpk", "new", "--device", &device, "--epoch", "1", "-o", "dpk.json",
        ],
    );
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");

    let mut hub = start_hub(d, port);
    let mut agent = Command::new(env!("CARGO_BIN_EXE_custos"))
        .args([
            "device",
            "run",
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
        ])
        .current_dir(d)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    hub.kill().unwrap(); // SIGKILL: no graceful shutdown
    hub.wait().unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let mut hub = start_hub(d, port);

    let started = Instant::now();
    let status = loop {
        if let Some(s) = agent.try_wait().unwrap() {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the agent did not finish"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "the agent failed");

    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        conn,
        "GET /v1/devices/{device}/records?epoch=1 HTTP/1.0\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    conn.read_to_string(&mut text).unwrap();
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {text}"));
    let seqs: Vec<u64> = v["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["seq"].as_u64().unwrap())
        .collect();
    hub.kill().unwrap();
    hub.wait().unwrap();
    assert_eq!(
        seqs,
        (0..40).collect::<Vec<_>>(),
        "every reading once, in order"
    );
}

#[test]
fn a_revoked_device_stops_on_the_signed_device_list() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let made: serde_json::Value = serde_json::from_slice(&custos(
        d,
        &["device", "make", "--state-dir", "dev", "--json"],
    ))
    .unwrap();
    let device = made["device"].as_str().unwrap().to_string();
    let code = made["join_code"].as_str().unwrap();
    custos(
        d,
        &[
            "hub",
            "admit",
            "--data-dir",
            "hub",
            "--device",
            &device,
            "--code",
            code,
        ],
    );
    custos(d, &["master", "new"]);
    custos(
        d,
        &[
            "dpk", "new", "--device", &device, "--epoch", "1", "-o", "dpk.json",
        ],
    );
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let mut hub = start_hub(d, port);
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
        Command::new(env!("CARGO_BIN_EXE_custos"))
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
    hub.kill().unwrap();
    hub.wait().unwrap();
    assert_eq!(second.status.code(), Some(1), "{text}");
    assert!(
        text.contains("not on the hub's signed device list"),
        "{text}"
    );
    assert!(!text.contains("sealed"), "sealed after revocation: {text}");
}
