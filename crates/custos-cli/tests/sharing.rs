//! Sharing data with an application through the real `custos` binary: a hub on loopback, a keeper created with a
//! passphrase (or a key file), a device provisioned by the keeper and streaming through `custos device run`, and
//! an application that asks, waits, and fetches exactly what the keeper's policy or its user granted.
//!
//! `custos device run` seals at the wall clock, so the device's key schedule here is compressed to
//! `hour/1m/1s`: one-second leaves stand in for days, and a two-second window for a week. The application also
//! asks for a literal week, which the keeper clips to the device's epoch.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::{free_port, start_hub};

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
        .env_remove("CUSTOS_APP_DIR")
        .env_remove("RUST_LOG");
    c
}

fn run(dir: &Path, args: &[&str]) -> Output {
    command(dir, args).output().unwrap()
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let out = run(dir, args);
    assert!(
        out.status.success(),
        "custos {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs a command that must fail with `code`, and returns its stderr.
fn fails(dir: &Path, args: &[&str], code: i32) -> String {
    let out = run(dir, args);
    assert_eq!(
        out.status.code(),
        Some(code),
        "custos {args:?}: {}",
        stderr(&out)
    );
    stderr(&out)
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

fn stop(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

fn wall() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// One CSV line (RFC 4180 quoting, no line breaks inside fields).
fn csv_fields(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            ('"', true) => quoted = false,
            ('"', false) if cur.is_empty() => quoted = true,
            (',', false) => fields.push(std::mem::take(&mut cur)),
            (c, _) => cur.push(c),
        }
    }
    fields.push(cur);
    fields
}

/// A CSV export as rows of (leaf start, reading), checking the header and that each reading was taken in its leaf.
fn csv_rows(dir: &Path, file: &str, device: &str) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(dir.join(file)).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("device,epoch,leaf_start_rfc3339,nonce_hex,reading")
    );
    lines
        .map(|l| {
            let f = csv_fields(l);
            assert_eq!(f.len(), 5, "{l}");
            assert_eq!(f[0], device);
            assert_eq!(f[1], "1");
            assert_eq!(f[3].len(), 16, "nonce: {l}");
            // The simulated thermometer writes the time it was read; with one-second leaves it is the leaf's start.
            let reading = json(&f[4]);
            assert_eq!(reading["t"].as_str().unwrap(), f[2], "{l}");
            (f[2].clone(), f[4].clone())
        })
        .collect()
}

fn rfc3339(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Civil date from days since 1970 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

const POLICY: &str = r#"
default = "ask"

[[rule]]
app = "thermo-report"
purpose = "energy.*"
action = "allow"
max_days = 7

[[rule]]
purpose = "marketing.*"
action = "deny"
"#;

#[test]
fn an_application_gets_exactly_what_the_keeper_grants() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let port = free_port();
    let url = common::hub_url(port);
    let hub = start_hub(d, port);

    // The keeper, and its owner id.
    let init = json(&ok(
        d,
        &[
            "keeper",
            "init",
            "--dir",
            "keeper",
            "--kdf-memory",
            "64",
            "--json",
        ],
    ));
    let owner = init["owner"].as_str().unwrap().to_string();
    assert_eq!(owner.len(), 64);
    assert_eq!(ok(d, &["keeper", "id", "--dir", "keeper"]).trim(), owner);
    #[cfg(unix)]
    assert_eq!(mode(&d.join("keeper")), 0o700);

    // A device, admitted, provisioned by the keeper for two days from the start of this hour.
    let made = json(&ok(d, &["device", "make", "--state-dir", "dev", "--json"]));
    let device = made["device"].as_str().unwrap().to_string();
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
            made["join_code"].as_str().unwrap(),
        ],
    );
    let hour = wall() / 3600 * 3600;
    let provisioned = json(&ok(
        d,
        &[
            "keeper",
            "provision",
            "--dir",
            "keeper",
            "--device",
            &device,
            "--epoch-from",
            &format!("@{hour}"),
            "--epoch-until",
            &format!("@{}", hour + 2 * 86_400),
            "--schedule",
            "hour/1m/1s",
            "-o",
            "dpk.json",
            "--json",
        ],
    ));
    assert_eq!(provisioned["epoch"], 1);
    #[cfg(unix)]
    assert_eq!(mode(&d.join("dpk.json")), 0o600);

    // The policy: checked, then installed.
    std::fs::write(d.join("policy.toml"), POLICY).unwrap();
    let checked = ok(d, &["keeper", "policy", "--check", "policy.toml"]);
    assert!(checked.contains("valid: 2 rules, default ask"), "{checked}");
    std::fs::copy(d.join("policy.toml"), d.join("keeper/policy.toml")).unwrap();
    let shown = json(&ok(d, &["keeper", "policy", "--dir", "keeper", "--json"]));
    assert_eq!(shown["rules"], 2);

    // The device streams 24 readings, four a second, with the keeper's provisioning.
    let t0 = wall();
    ok(
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
            "--every",
            "250ms",
            "--count",
            "24",
        ],
    );
    assert!(wall() >= t0 + 5);

    // The application asks four times.
    let key = ok(
        d,
        &["app", "new", "--dir", "app", "--name", "thermo-report"],
    );
    assert_eq!(key.trim().len(), 64);
    let ask = |from: u64, until: u64, purpose: &str| -> String {
        let out = json(&ok(
            d,
            &[
                "app",
                "request",
                "--dir",
                "app",
                "--hub",
                &url,
                "--owner",
                &owner,
                "--device",
                &device,
                "--from",
                &format!("@{from}"),
                "--until",
                &format!("@{until}"),
                "--purpose",
                purpose,
                "--purpose-text",
                "Tune the heating curve to the room",
                "--json",
            ],
        ));
        out["id"].as_str().unwrap().to_string()
    };
    let week = ask(t0 - 3 * 86_400, t0 + 4 * 86_400, "energy.optimization");
    let ads = ask(t0, t0 + 10, "marketing.profile");
    let study = ask(t0, t0 + 10, "research.sleep");
    let other = ask(t0, t0 + 10, "research.other");

    // The user pins the application's name to its key, so the rule naming it applies; a wrong key is refused.
    let pinned = ok(
        d,
        &[
            "keeper",
            "trust",
            "--dir",
            "keeper",
            "--name",
            "thermo-report",
            "--key",
            key.trim(),
            "--json",
        ],
    );
    assert!(pinned.contains(key.trim()), "{pinned}");
    let taken = fails(
        d,
        &[
            "keeper",
            "trust",
            "--dir",
            "keeper",
            "--name",
            "thermo-report",
            "--key",
            &"ab".repeat(32),
        ],
        2,
    );
    assert!(taken.contains("already pinned"), "{taken}");

    // One round of the keeper: the policy grants one, denies one, asks about two.
    let report = json(&ok(
        d,
        &["keeper", "sync", "--dir", "keeper", "--hub", &url, "--json"],
    ));
    let outcome = |report: &serde_json::Value, id: &str| {
        report["handled"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["id"] == id)
            .unwrap_or_else(|| panic!("{id} not handled: {report}"))["outcome"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(outcome(&report, &week), "granted");
    assert_eq!(outcome(&report, &ads), "denied");
    assert_eq!(outcome(&report, &study), "asked");
    assert_eq!(outcome(&report, &other), "asked");
    assert_eq!(report["delivered"], 2);

    // Denied: exit 1 with the policy's reason; not answered yet: exit 1, and says so.
    let denied = fails(d, &["app", "wait", "--dir", "app", &ads], 1);
    assert!(
        denied.contains("denied") && denied.contains("rule 2"),
        "{denied}"
    );
    let unanswered = fails(
        d,
        &["app", "wait", "--dir", "app", &study, "--timeout", "0s"],
        1,
    );
    assert!(unanswered.contains("no answer"), "{unanswered}");
    assert!(!unanswered.contains("denied"), "{unanswered}");

    // The week is clipped to the device's epoch and holds every reading.
    ok(
        d,
        &[
            "app", "fetch", "--dir", "app", &week, "--hub", &url, "-o", "week.csv",
        ],
    );
    let all = csv_rows(d, "week.csv", &device);
    assert_eq!(all.len(), 24, "every reading of the stream");
    let mut seconds: Vec<String> = all.iter().map(|(t, _)| t.clone()).collect();
    seconds.dedup();
    assert!(seconds.len() >= 5, "{seconds:?}");
    // Back from RFC 3339 to seconds: the stream started after t0.
    let secs = |t: &str| t0 + (0..600).find(|k| rfc3339(t0 + k) == t).unwrap();
    let in_window = |from: u64, until: u64| -> Vec<(String, String)> {
        let (from, until) = (rfc3339(from), rfc3339(until));
        all.iter()
            .filter(|(t, _)| *t >= from && *t < until)
            .cloned()
            .collect()
    };

    // A window of two one-second leaves inside the stream: granted by the policy, and exactly that is opened.
    let (w_from, w_until) = (secs(&seconds[1]), secs(&seconds[3]));
    let window = ask(w_from, w_until, "energy.optimization");
    let report = json(&ok(
        d,
        &["keeper", "sync", "--dir", "keeper", "--hub", &url, "--json"],
    ));
    assert_eq!(outcome(&report, &window), "granted");
    let waited = ok(d, &["app", "wait", "--dir", "app", &window[..12]]);
    assert!(waited.contains("granted: 2 node secret(s)"), "{waited}");
    let out = run(
        d,
        &[
            "app",
            "fetch",
            "--dir",
            "app",
            &window,
            "--hub",
            &url,
            "--format",
            "csv",
            "-o",
            "window.csv",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("records opened: ") && stderr(&out).contains("refused: 0"),
        "{}",
        stderr(&out)
    );
    #[cfg(unix)]
    assert_eq!(mode(&d.join("window.csv")), 0o600);
    let got = csv_rows(d, "window.csv", &device);
    assert!(!got.is_empty(), "readings in the window");
    assert!(got.len() < all.len(), "readings outside the window");
    assert_eq!(got, in_window(w_from, w_until));
    let again = fails(
        d,
        &[
            "app",
            "fetch",
            "--dir",
            "app",
            &window,
            "--hub",
            &url,
            "-o",
            "window.csv",
        ],
        1,
    );
    assert!(again.contains("--force"), "{again}");
    let jsonl = ok(
        d,
        &[
            "app", "fetch", "--dir", "app", &window, "--hub", &url, "--format", "jsonl",
        ],
    );
    assert_eq!(jsonl.lines().count(), got.len());
    assert_eq!(
        json(jsonl.lines().next().unwrap())["reading"].as_str(),
        Some(got[0].1.as_str())
    );

    // The user's inbox holds the two asked requests, by the pinned name.
    let inbox = json(&ok(d, &["keeper", "inbox", "--dir", "keeper", "--json"]));
    let pending = inbox["pending"].as_array().unwrap();
    assert_eq!(pending.len(), 2, "{inbox}");
    let p = pending.iter().find(|p| p["id"] == study).unwrap();
    assert_eq!(p["app_name"], "thermo-report");
    assert_eq!(p["name"], "pinned");
    assert_eq!(p["purpose"], "research.sleep");
    assert_eq!(p["retention"], 30 * 86_400);
    let text = ok(d, &["keeper", "inbox", "--dir", "keeper"]);
    assert!(text.contains(&study[..12]), "{text}");
    assert!(text.contains("thermo-report (pinned name)"), "{text}");
    assert!(
        text.contains("research.sleep: Tune the heating curve"),
        "{text}"
    );
    assert!(text.contains("retention  30 days"), "{text}");

    // The user approves one second of the study and delivers at once; denies the other.
    let approved = ok(
        d,
        &[
            "keeper",
            "approve",
            "--dir",
            "keeper",
            &study[..12],
            "--from",
            &format!("@{w_from}"),
            "--until",
            &format!("@{}", w_from + 1),
            "--hub",
            &url,
        ],
    );
    assert!(approved.contains("granted"), "{approved}");
    ok(d, &["keeper", "deny", "--dir", "keeper", &other[..12]]);
    let twice = fails(
        d,
        &["keeper", "approve", "--dir", "keeper", &study[..12]],
        2,
    );
    assert!(twice.contains("already granted"), "{twice}");
    ok(
        d,
        &[
            "app",
            "fetch",
            "--dir",
            "app",
            &study,
            "--hub",
            &url,
            "-o",
            "study.csv",
        ],
    );
    assert_eq!(
        csv_rows(d, "study.csv", &device),
        in_window(w_from, w_from + 1)
    );
    // The denial is queued until a sync delivers it.
    assert!(
        fails(
            d,
            &["app", "wait", "--dir", "app", &other, "--timeout", "0s"],
            1
        )
        .contains("no answer")
    );
    ok(d, &["keeper", "sync", "--dir", "keeper", "--hub", &url]);
    let denied = fails(d, &["app", "wait", "--dir", "app", &other], 1);
    assert!(denied.contains("denied by the owner"), "{denied}");

    // The consent log: five decisions, exported and verified against the owner id and the pinned head.
    let doc = json(&ok(d, &["keeper", "log", "--dir", "keeper", "--json"]));
    assert_eq!(doc["entries"].as_array().unwrap().len(), 5);
    let head = format!(
        "{}:{}",
        doc["head"]["seq"],
        doc["head"]["hash"].as_str().unwrap()
    );
    let listed = ok(d, &["keeper", "log", "--dir", "keeper"]);
    assert!(listed.contains("by policy rule 2"), "{listed}");
    ok(
        d,
        &["keeper", "log", "--dir", "keeper", "--export", "log.json"],
    );
    let verified = ok(
        d,
        &[
            "keeper",
            "log-verify",
            "log.json",
            "--owner",
            &owner,
            "--head",
            &head,
        ],
    );
    assert!(verified.contains("intact: 5 entries"), "{verified}");
    let stranger = "ab".repeat(32);
    fails(
        d,
        &["keeper", "log-verify", "log.json", "--owner", &stranger],
        1,
    );
    let mut bytes = std::fs::read(d.join("log.json")).unwrap();
    let at = bytes
        .windows(17)
        .position(|w| w == b"marketing.profile")
        .unwrap();
    bytes[at + 16] = b'f';
    std::fs::write(d.join("altered.json"), &bytes).unwrap();
    let broken = fails(
        d,
        &["keeper", "log-verify", "altered.json", "--owner", &owner],
        1,
    );
    assert!(broken.contains("signature does not verify"), "{broken}");

    stop(hub);
}

#[test]
fn keeper_serve_rides_out_an_unreachable_hub_and_stops_on_sigterm() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let port = free_port();
    let url = common::hub_url(port);
    // The hub's first start makes its certificate, whose fingerprint the keeper is then given; it goes away again.
    let mut first = start_hub(d, port);
    first.kill().unwrap();
    first.wait().unwrap();

    // Unattended: the vault is locked with a key file, and the policy allows everything.
    let owner = ok(
        d,
        &[
            "keeper",
            "init",
            "--dir",
            "keeper",
            "--key-file",
            "keeper.key",
            "--new-key-file",
        ],
    )
    .trim()
    .to_string();
    assert_eq!(std::fs::read(d.join("keeper.key")).unwrap().len(), 32);
    #[cfg(unix)]
    assert_eq!(mode(&d.join("keeper.key")), 0o600);
    let device = "02-00-5e-10-00-00-00-01";
    ok(
        d,
        &[
            "keeper",
            "provision",
            "--dir",
            "keeper",
            "--key-file",
            "keeper.key",
            "--device",
            device,
            "-o",
            "dpk.json",
        ],
    );
    std::fs::write(d.join("keeper/policy.toml"), "default = \"allow\"\n").unwrap();
    let log = std::fs::File::create(d.join("serve.log")).unwrap();
    let mut serve = command(
        d,
        &[
            "keeper",
            "serve",
            "--dir",
            "keeper",
            "--key-file",
            "keeper.key",
            "--hub",
            &url,
            "--every",
            "1s",
        ],
    )
    .env_remove("CUSTOS_KEEPER_PASSPHRASE")
    .stdout(Stdio::null())
    .stderr(log)
    .spawn()
    .unwrap();

    // No hub yet: the keeper keeps trying.
    std::thread::sleep(Duration::from_millis(2500));
    assert!(
        serve.try_wait().unwrap().is_none(),
        "serve stopped without a hub"
    );
    let hub = start_hub(d, port);
    ok(d, &["app", "new", "--dir", "app", "--name", "night-owl"]);
    let today = wall() / 86_400 * 86_400;
    let id = ok(
        d,
        &[
            "app",
            "request",
            "--dir",
            "app",
            "--hub",
            &url,
            "--owner",
            &owner,
            "--device",
            device,
            "--from",
            &format!("@{today}"),
            "--until",
            &format!("@{}", today + 86_400),
            "--purpose",
            "sleep.analysis",
            "--purpose-text",
            "Sleep quality from the bedroom's temperature",
            "--retention",
            "12h",
        ],
    )
    .trim()
    .to_string();
    let granted = ok(d, &["app", "wait", "--dir", "app", &id, "--timeout", "30s"]);
    assert!(granted.contains("granted"), "{granted}");

    // SIGTERM stops it cleanly.
    let term = Command::new("kill")
        .args(["-TERM", &serve.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let started = Instant::now();
    let status = loop {
        if let Some(s) = serve.try_wait().unwrap() {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "serve did not stop"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let log = std::fs::read_to_string(d.join("serve.log")).unwrap();
    assert!(status.success(), "{log}");
    assert!(log.contains("hub:"), "the unreachable hub is logged: {log}");
    assert!(log.contains("granted"), "{log}");
    assert!(log.contains("stopping"), "{log}");
    stop(hub);
}

#[test]
fn bad_input_exits_2_with_a_clear_message() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let owner = ok(
        d,
        &["keeper", "init", "--dir", "keeper", "--kdf-memory", "64"],
    )
    .trim()
    .to_string();
    let again = fails(
        d,
        &["keeper", "init", "--dir", "keeper", "--kdf-memory", "64"],
        1,
    );
    assert!(again.contains("already holds a keeper"), "{again}");
    let locked = command(d, &["keeper", "id", "--dir", "keeper"])
        .env_remove("CUSTOS_KEEPER_PASSPHRASE")
        .output()
        .unwrap();
    assert_eq!(locked.status.code(), Some(2));
    assert!(
        stderr(&locked).contains("CUSTOS_KEEPER_PASSPHRASE"),
        "{}",
        stderr(&locked)
    );
    let wrong = command(d, &["keeper", "id", "--dir", "keeper"])
        .env("CUSTOS_KEEPER_PASSPHRASE", "not it")
        .output()
        .unwrap();
    assert_eq!(wrong.status.code(), Some(1));
    assert!(
        stderr(&wrong).contains("wrong passphrase"),
        "{}",
        stderr(&wrong)
    );
    let missing = fails(d, &["keeper", "inbox", "--dir", "nowhere"], 2);
    assert!(missing.contains("keeper init"), "{missing}");

    let unknown = fails(
        d,
        &["keeper", "approve", "--dir", "keeper", "0123456789ab"],
        2,
    );
    assert!(
        unknown.contains("no pending request 0123456789ab"),
        "{unknown}"
    );
    std::fs::write(
        d.join("bad.toml"),
        "[[rule]]\npurpose = \"*\"\naction = \"allow\"\n\n[[rule]]\npurpose = \"x\"\naction = \"alow\"\n",
    )
    .unwrap();
    let bad = fails(d, &["keeper", "policy", "--check", "bad.toml"], 2);
    assert!(bad.contains("rule 2") && bad.contains("alow"), "{bad}");
    let unaligned = fails(
        d,
        &[
            "keeper",
            "provision",
            "--dir",
            "keeper",
            "--device",
            "00-11-22-33-44-55-66-77",
            "--epoch-from",
            "2030-01-01T12:30",
            "--epoch-until",
            "2031-01-01",
            "-o",
            "dpk.json",
        ],
        2,
    );
    assert!(unaligned.contains("boundaries"), "{unaligned}");
    assert!(!d.join("dpk.json").exists());

    ok(
        d,
        &["app", "new", "--dir", "app", "--name", "thermo-report"],
    );
    let request = |owner: &str, from: &str, until: &str| {
        run(
            d,
            &[
                "app",
                "request",
                "--dir",
                "app",
                "--hub",
                "http://127.0.0.1:9",
                "--owner",
                owner,
                "--device",
                "00-11-22-33-44-55-66-77",
                "--from",
                from,
                "--until",
                until,
                "--purpose",
                "energy.optimization",
                "--purpose-text",
                "Tune the heating",
            ],
        )
    };
    let out = request("not-hex", "2026-03-01", "2026-03-08");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("expected 64 hex digits"),
        "{}",
        stderr(&out)
    );
    let out = request(&owner, "2026-03-08", "2026-03-01");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("is not before --until"),
        "{}",
        stderr(&out)
    );
    let out = request(&owner, "2026-03-01", "next week");
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--until"), "{}", stderr(&out));
    let unknown = fails(d, &["app", "wait", "--dir", "app", "0123456789abcdef"], 2);
    assert!(unknown.contains("no request 0123456789abcdef"), "{unknown}");
    let unknown = fails(
        d,
        &[
            "app",
            "fetch",
            "--dir",
            "app",
            "0123456789abcdef",
            "--hub",
            "http://127.0.0.1:9",
        ],
        2,
    );
    assert!(unknown.contains("no request"), "{unknown}");
    let short = fails(d, &["app", "wait", "--dir", "app", "01ab"], 2);
    assert!(short.contains("at least 8"), "{short}");
}

#[test]
fn keeper_pair_provisions_a_waiting_device_through_the_hub() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let port = free_port();
    let url = common::hub_url(port);
    let hub = start_hub(d, port);
    ok(
        d,
        &["keeper", "init", "--dir", "keeper", "--kdf-memory", "64"],
    );
    let made = json(&ok(d, &["device", "make", "--state-dir", "dev", "--json"]));
    let device = made["device"].as_str().unwrap().to_string();
    let owner_code = made["owner_code"].as_str().unwrap().to_string();
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
            made["join_code"].as_str().unwrap(),
        ],
    );
    // The device joins and, holding no keys, waits for its keeper.
    let agent = command(
        d,
        &[
            "device",
            "run",
            "--state-dir",
            "dev",
            "--hub",
            &url,
            "--every",
            "200ms",
            "--count",
            "3",
            "--pair-timeout",
            "60s",
        ],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();

    // A wrong owner code gets nowhere, and registers nothing.
    let mut wrong = owner_code.clone().into_bytes();
    wrong[0] = if wrong[0] == b'0' { b'1' } else { b'0' };
    let wrong = String::from_utf8(wrong).unwrap();
    let err = fails(
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
            &wrong,
            "--timeout",
            "3s",
        ],
        1,
    );
    assert!(err.contains("did not answer"), "{err}");
    let bad = fails(
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
            "xyz",
        ],
        2,
    );
    assert!(bad.contains("--owner-code must be 32 hex digits"), "{bad}");

    // The right code: paired, provisioned, and the device streams.
    let paired = json(&ok(
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
            &owner_code,
            "--json",
        ],
    ));
    assert_eq!(paired["epoch"], 1);
    assert!(paired["secrets"].as_u64().unwrap() >= 1);
    let out = agent.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("paired: DPK epoch 1"), "{text}");
    assert!(text.contains("reading 2 sealed"), "{text}");
    // The epoch is registered: pairing epoch 1 again is refused before anything is sent.
    let again = fails(
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
            &owner_code,
            "--epoch",
            "1",
            "--timeout",
            "2s",
        ],
        2,
    );
    assert!(again.contains("never reused"), "{again}");
    stop(hub);
}

/// `keeper serve` answers a request as soon as it reaches the hub, not at its next tick: between rounds it
/// long-polls the inbox (here the tick is an hour away).
#[test]
fn keeper_serve_answers_at_once_between_rounds() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let port = free_port();
    let url = common::hub_url(port);
    let hub = start_hub(d, port);
    let owner = ok(
        d,
        &[
            "keeper",
            "init",
            "--dir",
            "keeper",
            "--key-file",
            "keeper.key",
            "--new-key-file",
        ],
    )
    .trim()
    .to_string();
    let device = "02-00-5e-10-00-00-00-02";
    ok(
        d,
        &[
            "keeper",
            "provision",
            "--dir",
            "keeper",
            "--key-file",
            "keeper.key",
            "--device",
            device,
            "-o",
            "dpk.json",
        ],
    );
    std::fs::write(d.join("keeper/policy.toml"), "default = \"allow\"\n").unwrap();
    let mut serve = command(
        d,
        &[
            "keeper",
            "serve",
            "--dir",
            "keeper",
            "--key-file",
            "keeper.key",
            "--hub",
            &url,
            "--every",
            "1h",
        ],
    )
    .env_remove("CUSTOS_KEEPER_PASSPHRASE")
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    std::thread::sleep(Duration::from_millis(1500)); // the first round, at start
    ok(d, &["app", "new", "--dir", "app", "--name", "dashboard"]);
    let today = wall() / 86_400 * 86_400;
    let id = ok(
        d,
        &[
            "app",
            "request",
            "--dir",
            "app",
            "--hub",
            &url,
            "--owner",
            &owner,
            "--device",
            device,
            "--from",
            &format!("@{today}"),
            "--until",
            &format!("@{}", today + 86_400),
            "--purpose",
            "display",
            "--purpose-text",
            "Show today",
        ],
    )
    .trim()
    .to_string();
    let started = Instant::now();
    let granted = ok(d, &["app", "wait", "--dir", "app", &id, "--timeout", "15s"]);
    assert!(granted.contains("granted"), "{granted}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "answered only after {:?}",
        started.elapsed()
    );
    serve.kill().unwrap();
    serve.wait().unwrap();
    stop(hub);
}

#[test]
fn the_inbox_says_why_a_name_is_unverified_and_wait_and_fetch_take_the_same_hub() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let port = free_port();
    let url = common::hub_url(port);
    let hub = start_hub(d, port);

    let init = json(&ok(
        d,
        &[
            "keeper",
            "init",
            "--dir",
            "keeper",
            "--kdf-memory",
            "64",
            "--json",
        ],
    ));
    let owner = init["owner"].as_str().unwrap().to_string();
    let made = json(&ok(d, &["device", "make", "--state-dir", "dev", "--json"]));
    let device = made["device"].as_str().unwrap().to_string();
    let hour = wall() / 3600 * 3600;
    ok(
        d,
        &[
            "keeper",
            "provision",
            "--dir",
            "keeper",
            "--device",
            &device,
            "--epoch-from",
            &format!("@{hour}"),
            "--epoch-until",
            &format!("@{}", hour + 86_400),
            "--schedule",
            "hour/1m/1s",
            "-o",
            "dpk.json",
        ],
    );

    // "thermo-report" is pinned to one key; another key claims it; a third name is pinned to no key at all.
    let pinned = ok(
        d,
        &["app", "new", "--dir", "pinned", "--name", "thermo-report"],
    );
    ok(
        d,
        &[
            "keeper",
            "trust",
            "--dir",
            "keeper",
            "--name",
            "thermo-report",
            "--key",
            pinned.trim(),
        ],
    );
    ok(
        d,
        &["app", "new", "--dir", "impostor", "--name", "thermo-report"],
    );
    ok(
        d,
        &["app", "new", "--dir", "newcomer", "--name", "sleep-study"],
    );
    let ask = |app: &str| -> String {
        let out = json(&ok(
            d,
            &[
                "app",
                "request",
                "--dir",
                app,
                "--hub",
                &url,
                "--owner",
                &owner,
                "--device",
                &device,
                "--from",
                &format!("@{hour}"),
                "--until",
                &format!("@{}", hour + 60),
                "--purpose",
                "research.sleep",
                "--purpose-text",
                "A study",
                "--json",
            ],
        ));
        out["id"].as_str().unwrap().to_string()
    };
    let impostor = ask("impostor");
    let newcomer = ask("newcomer");
    ok(d, &["keeper", "sync", "--dir", "keeper", "--hub", &url]);
    let text = ok(d, &["keeper", "inbox", "--dir", "keeper"]);
    assert!(
        text.contains("\"thermo-report\" (unverified: the name is pinned to another key)"),
        "{text}"
    );
    assert!(
        text.contains("\"sleep-study\" (unverified: no key is pinned to this name yet)"),
        "{text}"
    );
    assert!(!text.contains("another key already goes by"), "{text}");

    // `app wait` takes --hub as `app fetch` does; both default to the hub the request was posted to.
    let waiting = fails(
        d,
        &[
            "app",
            "wait",
            "--dir",
            "newcomer",
            &newcomer,
            "--hub",
            &url,
            "--timeout",
            "0s",
        ],
        1,
    );
    assert!(waiting.contains("no answer"), "{waiting}");
    let bad = fails(
        d,
        &[
            "app", "wait", "--dir", "newcomer", &newcomer, "--hub", "hub:7180",
        ],
        2,
    );
    assert!(bad.contains("not a hub URL"), "{bad}");
    ok(
        d,
        &[
            "keeper",
            "approve",
            "--dir",
            "keeper",
            &newcomer[..12],
            "--hub",
            &url,
        ],
    );
    ok(d, &["keeper", "deny", "--dir", "keeper", &impostor[..12]]);
    let granted = ok(
        d,
        &["app", "wait", "--dir", "newcomer", &newcomer, "--hub", &url],
    );
    assert!(granted.contains("granted"), "{granted}");
    let fetched = run(d, &["app", "fetch", "--dir", "newcomer", &newcomer]);
    assert!(fetched.status.success(), "{}", stderr(&fetched));
    assert!(
        String::from_utf8_lossy(&fetched.stdout)
            .starts_with("device,epoch,leaf_start_rfc3339,nonce_hex,reading"),
        "{}",
        stderr(&fetched)
    );
    stop(hub);
}
