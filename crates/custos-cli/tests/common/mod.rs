//! What the CLI tests share: a free loopback port, and `custos hub serve` started on it.
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

/// Starts `custos hub serve` with `args`, on 127.0.0.1:`port`, in `dir`, and waits until it listens.
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
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("listening on"), "{line}");
    child
}

/// Runs `custos args` in `dir`, asserts it succeeded, and returns its standard output.
pub fn custos(dir: &Path, args: &[&str]) -> Vec<u8> {
    let out = Command::new(env!("CARGO_BIN_EXE_custos"))
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
