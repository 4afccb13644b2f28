//! Owner control through the real `custos` binary: a hub, a keeper that pairs with a device, two accounts, a
//! claim, commands that switch an actuator program, sharing, and a device killed at the worst moments — after it
//! wrote the sender's mark but before the actuator moved, and after the actuator moved but before it answered.
//! Neither may ever make a command run twice.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const PASS: &str = "correct horse battery staple";

fn command(dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_custos"));
    common::trusting(&mut c, dir);
    c.args(args)
        .current_dir(dir)
        .env("CUSTOS_KEEPER_PASSPHRASE", PASS)
        .env_remove("CUSTOS_HUB_URL")
        .env_remove("CUSTOS_KEEPER_DIR")
        .env_remove("CUSTOS_SESSION")
        .env_remove("RUST_LOG");
    c
}

fn run_in(dir: &Path, args: &[&str], input: &str) -> Output {
    let mut child = command(dir, args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let out = run_in(dir, args, "");
    assert!(
        out.status.success(),
        "custos {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

fn stop(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// The actuator: a program that appends the state it is given to `actuator.log`, and that kills its parent (the
/// agent) with SIGKILL before or after doing so when `kill-before` or `kill-after` exists.
fn actuator(dir: &Path) -> String {
    let script = dir.join("switch.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nd={}\nif [ -f $d/kill-before ]; then rm $d/kill-before; kill -9 $PPID; sleep 5; exit 1; fi\n\
             echo \"$1\" >> $d/actuator.log\n\
             if [ -f $d/kill-after ]; then rm $d/kill-after; kill -9 $PPID; sleep 5; fi\nexit 0\n",
            dir.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    format!("command:{}", script.display())
}

fn log(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("actuator.log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// `custos device run` with no sensor, `actuator` and `heartbeat`, plus `extra` arguments.
fn agent(dir: &Path, url: &str, actuator: &str, heartbeat: &str, extra: &[&str]) -> Child {
    let mut args = vec![
        "device",
        "run",
        "--state-dir",
        "dev",
        "--hub",
        url,
        "--source",
        "none",
        "--actuator",
        actuator,
        "--heartbeat",
        heartbeat,
        "--pair-timeout",
        "60s",
    ];
    args.extend_from_slice(extra);
    command(dir, &args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Sends "off" while `marker` makes the actuator program SIGKILL the agent; the sender gets no answer (exit 1).
/// Restarts the agent and gives it 3 s to restore its state and take the redelivered command.
fn crash_on_off(
    d: &Path,
    mut dev: Child,
    marker: &str,
    device: &str,
    session: &str,
    url: &str,
    act: &str,
) -> Child {
    std::fs::write(d.join(marker), "").unwrap();
    let out = set(d, device, session, "off", "4s");
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        wait_exit(&mut dev, Duration::from_secs(10)),
        "the agent was not killed"
    );
    stop(dev);
    let dev = agent(d, url, act, "1s", &[]);
    std::thread::sleep(Duration::from_secs(3));
    dev
}

fn wait_exit(child: &mut Child, within: Duration) -> bool {
    let until = Instant::now() + within;
    while Instant::now() < until {
        if child.try_wait().unwrap().is_some() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

fn set(dir: &Path, device: &str, session: &str, state: &str, timeout: &str) -> Output {
    run_in(
        dir,
        &[
            "device",
            "set",
            device,
            state,
            "--dir",
            "keeper",
            "--session",
            session,
            "--timeout",
            timeout,
            "--json",
        ],
        "",
    )
}

fn account(dir: &Path, url: &str, name: &str) -> String {
    let session = format!("{name}.session");
    let pw = format!("{name}'s long password\n");
    for verb in ["register", "login"] {
        let out = run_in(
            dir,
            &[
                "account",
                verb,
                "--hub",
                url,
                "--name",
                name,
                "--password-stdin",
                "--session",
                &session,
            ],
            &pw,
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    session
}

/// A keeper in `d/keeper`, and a device made in `d/dev` and admitted at the hub in `d/hub`: its factory JSON and id.
fn keeper_and_device(d: &Path) -> (serde_json::Value, String) {
    ok(
        d,
        &["keeper", "init", "--dir", "keeper", "--kdf-memory", "64"],
    );
    let made = json(&ok(d, &["device", "make", "--state-dir", "dev", "--json"]));
    let device = made["device"].as_str().unwrap().to_string();
    let code = made["join_code"].as_str().unwrap();
    ok(
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
    (made, device)
}

#[test]
fn claim_switch_share_and_crashes_never_run_a_command_twice() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let port = common::free_port();
    let url = common::hub_url(port);
    let hub = common::serve(
        d,
        &[
            "--data-dir",
            "hub",
            "--password-memory-kib",
            "8",
            "--password-iterations",
            "1",
        ],
        port,
    );
    let (made, device) = keeper_and_device(d);
    let act = actuator(d);
    let dev = agent(d, &url, &act, "1s", &[]);
    ok(
        d,
        &[
            "keeper",
            "pair",
            "--dir",
            "keeper",
            "--hub",
            &url,
            "--device",
            &device,
            "--owner-code",
            made["owner_code"].as_str().unwrap(),
        ],
    );
    let alice = account(d, &url, "alice");
    let bob = account(d, &url, "bob");

    // Bob cannot claim: his keeper never paired the device (it has no user–device key).
    ok(
        d,
        &[
            "keeper",
            "init",
            "--dir",
            "bob-keeper",
            "--kdf-memory",
            "64",
        ],
    );
    let out = run_in(
        d,
        &[
            "device",
            "claim",
            &device,
            "--dir",
            "bob-keeper",
            "--session",
            &bob,
        ],
        "",
    );
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Alice claims it with the keeper that paired it.
    ok(
        d,
        &[
            "device",
            "claim",
            &device,
            "--dir",
            "keeper",
            "--session",
            &alice,
        ],
    );
    let owners = json(&ok(
        d,
        &["device", "owners", &device, "--session", &alice, "--json"],
    ));
    assert_eq!(owners["owner"], "alice", "{owners}");

    // On, end to end: the program ran with "on" and the answer says done.
    let out = set(d, &device, &alice, "on", "20s");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer = json(&String::from_utf8(out.stdout).unwrap());
    assert_eq!(
        (answer["status"].as_str(), answer["state"].as_str()),
        (Some("done"), Some("on"))
    );
    assert_eq!(log(d), ["on"]);
    std::thread::sleep(Duration::from_millis(1500));
    let state = json(&ok(
        d,
        &["device", "state", &device, "--session", &alice, "--json"],
    ));
    assert_eq!(
        (state["state"].as_str(), state["online"].as_bool()),
        (Some("on"), Some(true)),
        "{state}"
    );

    // Killed after writing the mark, before the actuator moved: "off" never runs, not even after the restart,
    // when the hub hands the same command over again.
    let dev = crash_on_off(d, dev, "kill-before", &device, &alice, &url, &act);
    // At restart the last confirmed state ("on") is restored; the redelivered "off" is refused as a replay.
    assert_eq!(
        log(d),
        ["on", "on"],
        "a command ran after its mark was written"
    );

    // Killed after the actuator moved, before the answer: it ran once, and never again.
    let dev = crash_on_off(d, dev, "kill-after", &device, &alice, &url, &act);
    let l = log(d);
    assert_eq!(l.iter().filter(|s| *s == "off").count(), 1, "{l:?}");
    // The state it confirmed last was "on": that is what the restart restores.
    assert_eq!(l.last().map(String::as_str), Some("on"), "{l:?}");

    // Commands still work after the crashes.
    let out = set(d, &device, &alice, "off", "20s");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(log(d).last().map(String::as_str), Some("off"));

    // Shared control: bob takes the share code and switches the device; unshared, the hub refuses him.
    let shared = json(&ok(
        d,
        &[
            "device",
            "share",
            &device,
            "--with",
            "bob",
            "--dir",
            "keeper",
            "--session",
            &alice,
            "--json",
        ],
    ));
    let code = shared["share_code"].as_str().unwrap().to_string();
    let out = run_in(
        d,
        &["device", "accept", "--dir", "bob-keeper"],
        &format!("{code}\n"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run_in(
        d,
        &[
            "device",
            "set",
            &device,
            "on",
            "--dir",
            "bob-keeper",
            "--session",
            &bob,
            "--json",
        ],
        "",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(log(d).last().map(String::as_str), Some("on"));
    ok(
        d,
        &[
            "device",
            "unshare",
            &device,
            "--from",
            "bob",
            "--dir",
            "keeper",
            "--session",
            &alice,
        ],
    );
    let out = run_in(
        d,
        &[
            "device",
            "set",
            &device,
            "off",
            "--dir",
            "bob-keeper",
            "--session",
            &bob,
            "--timeout",
            "3s",
        ],
        "",
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(log(d).last().map(String::as_str), Some("on"));
    // A stranger sees nothing of the device.
    let out = run_in(d, &["device", "state", &device, "--session", &bob], "");
    assert!(!out.status.success());

    // Rotation: the device waits for its keeper again and they pair afresh (a new user–device key); alice's
    // commands keep working under the new key.
    stop(dev);
    let dev = agent(d, &url, &act, "1s", &["--pair"]);
    ok(
        d,
        &[
            "keeper",
            "pair",
            "--dir",
            "keeper",
            "--hub",
            &url,
            "--device",
            &device,
            "--owner-code",
            made["owner_code"].as_str().unwrap(),
        ],
    );
    let out = set(d, &device, &alice, "off", "20s");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(log(d).last().map(String::as_str), Some("off"));

    stop(dev);
    stop(hub);
}

#[test]
fn commands_reach_a_device_over_mqtt_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let port = common::free_port();
    let url = common::hub_url(port);
    let prefix = format!("custos-test-{}", port);
    let hub = common::serve(
        d,
        &[
            "--data-dir",
            "hub",
            "--password-memory-kib",
            "8",
            "--password-iterations",
            "1",
            "--mqtt",
            "mqtt://127.0.0.1:1883",
            "--mqtt-prefix",
            &prefix,
        ],
        port,
    );
    let (made, device) = keeper_and_device(d);
    let act = actuator(d);
    // The HTTP queue is read only every 60 s (the heartbeat): a command that arrives within seconds came over MQTT.
    let dev = agent(
        d,
        &url,
        &act,
        "60s",
        &["--mqtt", "mqtt://127.0.0.1:1883", "--mqtt-prefix", &prefix],
    );
    ok(
        d,
        &[
            "keeper",
            "pair",
            "--dir",
            "keeper",
            "--hub",
            &url,
            "--device",
            &device,
            "--owner-code",
            made["owner_code"].as_str().unwrap(),
        ],
    );
    let alice = account(d, &url, "alice");
    ok(
        d,
        &[
            "device",
            "claim",
            &device,
            "--dir",
            "keeper",
            "--session",
            &alice,
            "--timeout",
            "10s",
        ],
    );
    for state in ["on", "off", "on"] {
        let started = Instant::now();
        let out = set(d, &device, &alice, state, "10s");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(started.elapsed() < Duration::from_secs(10));
    }
    assert_eq!(log(d), ["on", "off", "on"]);
    stop(dev);
    stop(hub);
}
