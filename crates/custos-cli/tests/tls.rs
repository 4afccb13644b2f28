//! The CLI over TLS: `custos hub serve` prints the fingerprint of its self-signed certificate and keeps serving
//! the same one; a device pins it once and needs no flag after; a wrong pin, no trust at all, plain HTTP to
//! another machine and plain HTTP served beyond loopback are all refused, the last two with exit code 2 before
//! anything is sent.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::{custos, free_port, hub_url, start_hub};

use std::path::Path;
use std::process::{Command, Output};

/// `custos args` in `dir` with no hub trust from the environment.
fn bare(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_custos"))
        .args(args)
        .current_dir(dir)
        .env_remove("CUSTOS_HUB_FINGERPRINT")
        .env_remove("CUSTOS_HUB_CA")
        .env_remove("CUSTOS_MQTT_URL")
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A device made in `dir/state` and admitted at the hub in `dir/hub`; returns its id.
fn admitted_device(dir: &Path, state: &str) -> String {
    let made: serde_json::Value = serde_json::from_slice(&custos(
        dir,
        &["device", "make", "--state-dir", state, "--json"],
    ))
    .unwrap();
    let id = made["device"].as_str().unwrap().to_string();
    let code = made["join_code"].as_str().unwrap();
    custos(
        dir,
        &[
            "hub",
            "admit",
            "--data-dir",
            "hub",
            "--device",
            &id,
            "--code",
            code,
        ],
    );
    id
}

#[test]
fn a_device_pins_the_hub_once_and_wrong_or_missing_trust_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let port = free_port();
    let url = hub_url(port);
    let mut hub = start_hub(d, port);
    let pin = std::fs::read_to_string(d.join(common::FINGERPRINT_FILE)).unwrap();
    let device = admitted_device(d, "dev");
    custos(d, &["master", "new"]);
    custos(
        d,
        &[
            "dpk", "new", "--device", &device, "--epoch", "1", "-o", "dpk.json",
        ],
    );
    let run = |extra: &[&str]| {
        let mut args = vec![
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
            "1",
        ];
        args.extend_from_slice(extra);
        bare(d, &args)
    };

    // No trust: the system's roots know nothing of a self-signed certificate.
    let out = run(&[]);
    assert!(!out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("certificate"), "{}", stderr(&out));
    // A wrong pin.
    let mut wrong = pin.trim().to_string();
    let last = if wrong.ends_with('0') { "1" } else { "0" };
    wrong.replace_range(wrong.len() - 1.., last);
    let out = run(&["--hub-fingerprint", &wrong]);
    assert!(!out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("not the pinned"), "{}", stderr(&out));
    // The right one, by environment variable too; it is remembered in the state directory.
    let out = run(&["--hub-fingerprint", pin.trim()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(d.join("dev/hub-fingerprint"))
            .unwrap()
            .trim(),
        pin.trim()
    );
    let out = bare(
        d,
        &[
            "device",
            "run",
            "--state-dir",
            "dev",
            "--every",
            "100ms",
            "--count",
            "1",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));

    // A restarted hub serves the same certificate.
    hub.kill().unwrap();
    hub.wait().unwrap();
    let mut hub = start_hub(d, port);
    let again = std::fs::read_to_string(d.join(common::FINGERPRINT_FILE)).unwrap();
    assert_eq!(again, pin);
    hub.kill().unwrap();
    hub.wait().unwrap();
}

#[test]
fn plain_http_to_another_machine_is_refused_with_exit_code_2() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    custos(d, &["device", "make", "--state-dir", "dev"]);
    // 192.0.2.0/24 is reserved for documentation: the command must refuse before it connects anywhere.
    let out = bare(
        d,
        &[
            "device",
            "run",
            "--state-dir",
            "dev",
            "--hub",
            "http://192.0.2.7:7180",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("https://"), "{}", stderr(&out));
    let out = bare(
        d,
        &[
            "keeper",
            "sync",
            "--dir",
            "keeper",
            "--hub",
            "http://hub.example:7180",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    // A fingerprint that is not one.
    let out = bare(
        d,
        &[
            "device",
            "run",
            "--state-dir",
            "dev",
            "--hub-fingerprint",
            "abc",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[test]
fn plain_http_beyond_loopback_needs_insisting() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let port = free_port();
    let out = bare(
        d,
        &[
            "hub",
            "serve",
            "--data-dir",
            "hub",
            "--plain-http",
            "--listen",
            &format!("0.0.0.0:{port}"),
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--insecure-plain-http"),
        "{}",
        stderr(&out)
    );
    // On loopback it serves plain HTTP.
    let mut hub = common::serve(d, &["--data-dir", "hub", "--plain-http"], port);
    assert_eq!(common::get(port, "/healthz").0, 200);
    hub.kill().unwrap();
    hub.wait().unwrap();
}
