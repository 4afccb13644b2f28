//! What the CLI tests share: a free loopback port, and `custos hub serve` started on it, over HTTPS with its
//! self-signed certificate: the fingerprint it prints is kept in `hub.fingerprint` in the test's directory, and
//! every command the tests run is given it (`CUSTOS_HUB_FINGERPRINT`), as a user pins it.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A port nothing listens on now, below Linux's ephemeral range (32768 and up): tests stop and restart hubs on
/// their port, and a port from the ephemeral range could meanwhile become the source port of any connection.
pub fn free_port() -> u16 {
    use rand_core::RngCore;
    for _ in 0..1000 {
        let port = 20_000 + (rand_core::OsRng.next_u32() % 12_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port between 20000 and 32000")
}

/// Starts `custos hub serve` with its data in `dir/hub`, on 127.0.0.1:`port`, and waits until it listens.
pub fn start_hub(dir: &Path, port: u16) -> Child {
    serve(dir, &["--data-dir", "hub"], port)
}

/// The hub's URL on `port`: `https://127.0.0.1:{port}`.
pub fn hub_url(port: u16) -> String {
    format!("https://127.0.0.1:{port}")
}

/// The file in a test's directory holding the fingerprint of the hub it started last.
pub const FINGERPRINT_FILE: &str = "hub.fingerprint";

/// Gives `command` the fingerprint of the hub started in `dir` (if any), as `CUSTOS_HUB_FINGERPRINT`.
pub fn trusting<'a>(command: &'a mut Command, dir: &Path) -> &'a mut Command {
    match std::fs::read_to_string(dir.join(FINGERPRINT_FILE)) {
        Ok(f) => command.env("CUSTOS_HUB_FINGERPRINT", f.trim()),
        Err(_) => command.env_remove("CUSTOS_HUB_FINGERPRINT"),
    }
    .env_remove("CUSTOS_HUB_CA")
}

/// Starts `custos hub serve` with `args`, on 127.0.0.1:`port`, in `dir`, and waits until it listens. Unless
/// `args` has `--plain-http`, the hub serves HTTPS with its self-signed certificate, whose fingerprint is kept
/// in `dir/hub.fingerprint`.
pub fn serve(dir: &Path, args: &[&str], port: u16) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_custos"))
        .args(["hub", "serve"])
        .args(args)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .current_dir(dir)
        .env_remove("RUST_LOG")
        // Flags only: the environment of whoever runs the tests must not point the hub elsewhere.
        .env_remove("CUSTOS_DATABASE_URL")
        .env_remove("CUSTOS_HUB_CONFIG")
        .env_remove("CUSTOS_MQTT_URL")
        .env_remove("CUSTOS_MQTT_CLIENT_ID")
        .env_remove("CUSTOS_HUB_TLS_CERT")
        .env_remove("CUSTOS_HUB_TLS_KEY")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert!(line.starts_with("listening on"), "{line}");
    // The hub wrote its operator token before it listened: reads (records, gaps, presence) need it.
    if let Some(data) = args
        .iter()
        .position(|a| *a == "--data-dir")
        .and_then(|i| args.get(i + 1))
        && let Ok(token) = std::fs::read_to_string(dir.join(data).join("operator.token"))
    {
        OPERATORS
            .lock()
            .unwrap()
            .insert(port, token.trim().to_string());
    }
    if args.contains(&"--plain-http") {
        assert!(line.starts_with("listening on http://"), "{line}");
        return child;
    }
    assert!(line.starts_with("listening on https://"), "{line}");
    line.clear();
    out.read_line(&mut line).unwrap();
    let fingerprint = line
        .strip_prefix("tls fingerprint: ")
        .unwrap_or_else(|| panic!("no fingerprint: {line}"))
        .trim();
    assert!(
        fingerprint.starts_with("sha256:") && fingerprint.len() == 7 + 64,
        "{fingerprint}"
    );
    std::fs::write(dir.join(FINGERPRINT_FILE), fingerprint).unwrap();
    PINS.lock()
        .unwrap()
        .insert(port, fingerprint.parse().unwrap());
    child
}

/// The operator token of the hub started on each port, sent with [`get`].
static OPERATORS: std::sync::Mutex<std::collections::BTreeMap<u16, String>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

/// The fingerprint of the hub started on each port (none for a plain-HTTP hub).
static PINS: std::sync::Mutex<std::collections::BTreeMap<u16, custos_client::Fingerprint>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

/// `GET path` on the hub this process started on `port` (HTTPS with its pinned certificate, or plain HTTP if it
/// serves that), as its operator: the status and the body.
pub fn get(port: u16, path: &str) -> (u16, Vec<u8>) {
    let pin = PINS.lock().unwrap().get(&port).copied();
    let (url, trust) = match pin {
        Some(f) => (
            format!("https://127.0.0.1:{port}{path}"),
            custos_client::TlsTrust::Pinned(f),
        ),
        None => (
            format!("http://127.0.0.1:{port}{path}"),
            custos_client::TlsTrust::System,
        ),
    };
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let http = custos_client::tls::http_client(
                reqwest::Client::builder().timeout(std::time::Duration::from_secs(30)),
                &trust,
            )
            .unwrap();
            let mut req = http.get(url);
            if let Some(token) = OPERATORS.lock().unwrap().get(&port) {
                req = req.bearer_auth(token);
            }
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            (status, resp.bytes().await.unwrap().to_vec())
        })
}

/// Runs `custos args` in `dir`, asserts it succeeded, and returns its standard output.
pub fn custos(dir: &Path, args: &[&str]) -> Vec<u8> {
    let out = trusting(&mut Command::new(env!("CARGO_BIN_EXE_custos")), dir)
        .args(args)
        .current_dir(dir)
        .env_remove("CUSTOS_DATABASE_URL")
        .env_remove("CUSTOS_MQTT_URL")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "custos {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// `custos device make` in `state` (relative to `dir`, or absolute) and `custos hub admit` of it at the hub in
/// `dir/hub`; returns what `device make --json` printed (device id, join code, owner code).
#[allow(dead_code)] // Not every test binary that includes this module makes devices.
pub fn make_admitted_device(dir: &Path, state: &str) -> serde_json::Value {
    let made: serde_json::Value = serde_json::from_slice(&custos(
        dir,
        &["device", "make", "--state-dir", state, "--json"],
    ))
    .unwrap();
    let device = made["device"].as_str().unwrap().to_string();
    custos(
        dir,
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
    made
}
