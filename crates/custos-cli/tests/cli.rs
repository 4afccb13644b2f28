//! The `custos` command as a user drives it: key files, covers exported to an application, sealing and opening,
//! and the errors and exit codes a script relies on.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn custos(dir: &Path, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_custos"))
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A command that refuses its arguments exits without reading its input: that is not the test's failure.
    if let Err(e) = child.stdin.take().unwrap().write_all(stdin) {
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
    }
    child.wait_with_output().unwrap()
}

fn ok(dir: &Path, args: &[&str], stdin: &[u8]) -> Vec<u8> {
    let out = custos(dir, args, stdin);
    assert!(
        out.status.success(),
        "custos {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A keeper with a master secret and a device DPK for 2026 under month/week/day.
fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    ok(dir.path(), &["master", "new"], b"");
    ok(
        dir.path(),
        &[
            "dpk",
            "new",
            "--device",
            "00-11-22-33-44-55-66-77",
            "--epoch",
            "1",
            "--from",
            "2026-01-01",
            "--until",
            "2027-01-01",
            "-o",
            "dpk.json",
        ],
        b"",
    );
    dir
}

#[test]
fn key_files_are_private_and_never_silently_overwritten() {
    let dir = setup();
    #[cfg(unix)]
    for f in ["master.key", "dpk.json"] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(f))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{f}");
    }
    let before = std::fs::read(dir.path().join("master.key")).unwrap();
    let again = custos(dir.path(), &["master", "new"], b"");
    assert_eq!(again.status.code(), Some(1));
    assert!(stderr(&again).contains("--force"), "{}", stderr(&again));
    assert_eq!(
        std::fs::read(dir.path().join("master.key")).unwrap(),
        before,
        "existing master secret changed"
    );
}

#[test]
fn an_application_opens_exactly_its_week() {
    let dir = setup();
    let d = dir.path();
    let lines = |day: u32| format!("reading of 2026-03-{day:02}\n");
    let mut sealed = Vec::new();
    for day in [7u32, 8, 14, 15] {
        let at = format!("2026-03-{day:02}T12:00");
        sealed.extend(ok(
            d,
            &["seal", "--keys", "dpk.json", "--at", &at, "--lines"],
            lines(day).as_bytes(),
        ));
    }
    let cover = ok(
        d,
        &[
            "cover",
            "--keys",
            "dpk.json",
            "--from",
            "2026-03-08",
            "--until",
            "2026-03-15",
            "--export",
            "week2.json",
            "--json",
        ],
        b"",
    );
    let cover: serde_json::Value = serde_json::from_slice(&cover).unwrap();
    assert_eq!(cover["count"], 1, "week 2 of March is one node: {cover}");
    assert_eq!(cover["nodes"][0]["stage"], "week");

    // The DPK opens everything.
    let all = ok(d, &["open", "--keys", "dpk.json", "--lines"], &sealed);
    assert_eq!(
        String::from_utf8(all).unwrap(),
        [7, 8, 14, 15].map(lines).concat()
    );

    // The week-2 grant opens the 8th and the 14th and refuses the 7th and the 15th, with exit code 3.
    let out = custos(d, &["open", "--keys", "week2.json", "--lines"], &sealed);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert_eq!(
        String::from_utf8(out.stdout.clone()).unwrap(),
        [8, 14].map(lines).concat()
    );
    assert_eq!(
        stderr(&out).matches("no secret held covers").count(),
        2,
        "{}",
        stderr(&out)
    );

    // The grant cannot be widened: exporting week 1 from it fails.
    let widen = custos(
        d,
        &[
            "cover",
            "--keys",
            "week2.json",
            "--from",
            "2026-03-01",
            "--until",
            "2026-03-08",
            "--export",
            "w1.json",
        ],
        b"",
    );
    assert_eq!(widen.status.code(), Some(1));
    assert!(
        stderr(&widen).contains("holds no secret"),
        "{}",
        stderr(&widen)
    );
    assert!(!d.join("w1.json").exists());
}

#[test]
fn tampered_records_are_rejected_with_exit_code_3_and_no_output() {
    let dir = setup();
    let d = dir.path();
    std::fs::write(d.join("plain.txt"), b"door opened at 14:20").unwrap();
    ok(
        d,
        &[
            "seal",
            "--keys",
            "dpk.json",
            "--at",
            "2026-03-15T14:20",
            "-i",
            "plain.txt",
            "-o",
            "rec.bin",
        ],
        b"",
    );
    let record = std::fs::read(d.join("rec.bin")).unwrap();
    assert_eq!(record.len(), 20 + 39);
    assert_eq!(
        ok(d, &["open", "--keys", "dpk.json", "-i", "rec.bin"], b""),
        b"door opened at 14:20"
    );
    for i in [0, 5, 12, 20, 30, record.len() - 1] {
        let mut bad = record.clone();
        bad[i] ^= 0x04;
        let out = custos(d, &["open", "--keys", "dpk.json"], &bad);
        assert_eq!(out.status.code(), Some(3), "byte {i}: {}", stderr(&out));
        assert!(out.stdout.is_empty(), "byte {i}: plaintext released");
        assert!(stderr(&out).contains("record rejected"), "{}", stderr(&out));
    }
    let inspect = ok(
        d,
        &["inspect", "-i", "rec.bin", "--keys", "dpk.json", "--json"],
        b"",
    );
    let inspect: serde_json::Value = serde_json::from_slice(&inspect).unwrap();
    assert_eq!(inspect["device"], "00-11-22-33-44-55-66-77");
    assert_eq!(inspect["from"], "2026-03-15T00:00:00Z");
    assert_eq!(inspect["plaintext_len"], 20);
}

#[test]
fn open_lines_with_no_records_opens_nothing_and_succeeds() {
    let dir = setup();
    let out = custos(dir.path(), &["open", "--keys", "dpk.json", "--lines"], b"");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(out.stdout.is_empty());
    let out = custos(
        dir.path(),
        &["open", "--keys", "dpk.json", "--lines"],
        b"\n\n",
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(out.stdout.is_empty());
}

#[test]
fn bad_input_gets_a_clear_error() {
    let dir = setup();
    let d = dir.path();
    // (arguments, stdin, exit code, expected in the message)
    let cases: &[(&[&str], &[u8], i32, &str)] = &[
        (&["schedule", "day/month"], b"", 2, "does not nest"),
        (&["schedule", "fortnight"], b"", 2, "is not a stage"),
        (
            &["schedule", "1s", "--at", "2200-01-01"],
            b"",
            1,
            "beyond 2^32 - 1",
        ),
        (
            &["schedule", "month/week/day", "--at", "9999-12-31T12:00"],
            b"",
            1,
            "RFC 3339 cannot write",
        ),
        (
            &["schedule", "day", "--at", "10000-01-01"],
            b"",
            2,
            "after 9999-12-31T23:59:59Z",
        ),
        (
            &["schedule", "day", "--at", "@253402300800"],
            b"",
            2,
            "after 9999-12-31T23:59:59Z",
        ),
        (
            &[
                "cover",
                "--schedule",
                "day",
                "--from",
                "2026-03-02",
                "--until",
                "2026-03-01",
            ],
            b"",
            2,
            "is not before --until",
        ),
        (
            &[
                "cover",
                "--keys",
                "dpk.json",
                "--from",
                "2026-03-01",
                "--until",
                "2026-03-01",
            ],
            b"",
            2,
            "is not before --until",
        ),
        (
            &[
                "cover",
                "--schedule",
                "1s",
                "--from",
                "2026-03-01",
                "--until",
                "2026-03-02",
            ],
            b"",
            1,
            "too short to number",
        ),
        (
            &[
                "cover",
                "--schedule",
                "month/week/day",
                "--from",
                "2026-03-08T10:00",
                "--until",
                "2026-03-15",
            ],
            b"",
            1,
            "--round-out",
        ),
        (
            &[
                "cover",
                "--keys",
                "dpk.json",
                "--from",
                "2027-03-01",
                "--until",
                "2027-04-01",
            ],
            b"",
            1,
            "outside",
        ),
        (
            &["cover", "--from", "2026-03-01", "--until", "2026-04-01"],
            b"",
            2,
            "--schedule",
        ),
        (
            &[
                "cover",
                "--schedule",
                "month/week/day",
                "--from",
                "2026-03-01",
                "--until",
                "2026-04-01",
                "--export",
                "x.json",
            ],
            b"",
            1,
            "--export needs --keys",
        ),
        (
            &["seal", "--keys", "dpk.json", "--at", "2025-06-01", "--hex"],
            b"",
            1,
            "outside the key file's epoch",
        ),
        (
            &["seal", "--keys", "dpk.json", "--at", "2026-02-30"],
            b"",
            2,
            "not a time",
        ),
        (
            &["seal", "--keys", "dpk.json", "--at", "+2026-+3-+15"],
            b"",
            2,
            "not a time",
        ),
        (
            &["open", "--keys", "master.key"],
            b"",
            1,
            "is a master secret file, not a key file",
        ),
        (&["open", "--keys", "missing.json"], b"", 1, "cannot read"),
        (&["open", "--keys", "."], b"", 1, "not a regular file"),
        (&["open", "--keys", "dpk.json"], b"", 2, "input is empty"),
        (
            &["open", "--keys", "dpk.json"],
            b" \n\n",
            2,
            "input is empty",
        ),
        (&["inspect"], b"", 2, "input is empty"),
        (
            &["open", "--keys", "dpk.json"],
            b"zz",
            1,
            "text but not hex",
        ),
        (
            &["open", "--keys", "dpk.json"],
            b"1100\n1100\n",
            1,
            "pass --lines",
        ),
        (&["open", "--keys", "dpk.json"], b"\x11\x00", 3, "truncated"),
        (
            &["master", "new", "-o", "master.key"],
            b"",
            1,
            "already exists",
        ),
        (
            &[
                "dpk", "new", "--device", "00-11", "--epoch", "1", "-o", "x.json",
            ],
            b"",
            2,
            "16 hex digits",
        ),
        (
            &[
                "dpk",
                "new",
                "--device",
                "00-11-22-33-44-55-66-77",
                "-o",
                "x.json",
            ],
            b"",
            2,
            "--epoch",
        ),
        (
            &[
                "dpk",
                "new",
                "--device",
                "00-11-22-33-44-55-66-77",
                "--epoch",
                "2",
                "--from",
                "2026-01-01T12:00",
                "-o",
                "x.json",
            ],
            b"",
            1,
            "2026-01-01T12:00:00Z is not on a day boundary",
        ),
        (
            &[
                "dpk",
                "new",
                "--device",
                "00-11-22-33-44-55-66-77",
                "--epoch",
                "2",
                "--from",
                "2026-01-01",
                "--until",
                "2025-01-01",
                "-o",
                "x.json",
            ],
            b"",
            2,
            "is not before --until",
        ),
    ];
    for (args, stdin, code, expect) in cases {
        let out = custos(d, args, stdin);
        assert_eq!(out.status.code(), Some(*code), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(expect),
            "{args:?}: expected `{expect}` in: {}",
            stderr(&out)
        );
    }
    assert!(
        !d.join("x.json").exists(),
        "a failed command left a file behind"
    );
    // A key file whose node is not in its tree is refused, not trusted.
    let text = std::fs::read_to_string(d.join("dpk.json")).unwrap();
    std::fs::write(
        d.join("forged.json"),
        text.replace("\"depth\": 0", "\"depth\": 9"),
    )
    .unwrap();
    let out = custos(d, &["open", "--keys", "forged.json"], b"00");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("not in this tree"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn schedule_and_cover_explain_themselves() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = String::from_utf8(ok(
        d,
        &["schedule", "month/week/day", "--at", "2026-03-15T14:20:00Z"],
        b"",
    ))
    .unwrap();
    assert!(out.contains("leaf stage day"), "{out}");
    assert!(
        out.contains("[2026-03-15T00:00:00Z, 2026-03-22T00:00:00Z)"),
        "week 3 of March: {out}"
    );
    let cover = ok(
        d,
        &[
            "cover",
            "--schedule",
            "month/week/day",
            "--from",
            "2026-03-01",
            "--until",
            "2026-05-01",
            "--json",
        ],
        b"",
    );
    let cover: serde_json::Value = serde_json::from_slice(&cover).unwrap();
    assert_eq!(cover["count"], 2, "two whole months: {cover}");
    let rounded = ok(
        d,
        &[
            "cover",
            "--schedule",
            "day/6h",
            "--from",
            "2026-03-01T07:00",
            "--until",
            "2026-03-01T13:00",
            "--round-out",
            "--json",
        ],
        b"",
    );
    let rounded: serde_json::Value = serde_json::from_slice(&rounded).unwrap();
    assert_eq!(rounded["from"], "2026-03-01T06:00:00Z");
    assert_eq!(rounded["until"], "2026-03-01T18:00:00Z");
    assert_eq!(rounded["count"], 2);
}

#[test]
fn a_schedule_too_fine_for_1970_to_9999_still_shows_the_path_of_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // 2s leaves cannot be numbered in 32 bits up to 9999, but in an epoch around 2026 they can.
    let out = ok(
        d,
        &["schedule", "2s", "--at", "2026-03-15T14:20:01Z", "--json"],
        b"",
    );
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    let node = &v["path"]["nodes"][0];
    assert_eq!(node["index"], 1_773_584_400u64 / 2, "{v}");
    assert_eq!(node["from"], "2026-03-15T14:20:00Z");
    assert_eq!(node["until"], "2026-03-15T14:20:02Z");
    let out = ok(
        d,
        &["schedule", "day/1h/1s", "--at", "2026-03-15T14:20:01Z"],
        b"",
    );
    let out = String::from_utf8(out).unwrap();
    assert!(out.contains("index 1773584401"), "{out}");
}

#[test]
fn times_at_the_end_of_9999_are_printed_as_rfc_3339() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // The last time the CLI takes, and the last period it can show, end in 9999.
    let out = ok(
        d,
        &[
            "schedule",
            "month/week/day",
            "--at",
            "9999-12-30T23:59:59Z",
            "--json",
        ],
        b"",
    );
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["path"]["time"], "9999-12-30T23:59:59Z");
    for node in v["path"]["nodes"].as_array().unwrap() {
        assert_eq!(node["until"], "9999-12-31T00:00:00Z", "{v}");
    }
    let out = ok(
        d,
        &[
            "cover",
            "--schedule",
            "day",
            "--from",
            "9999-12-01",
            "--until",
            "9999-12-31T23:59:59Z",
            "--round-out",
            "--json",
        ],
        b"",
    );
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["until"], "9999-12-31T00:00:00Z", "{v}");
}

#[test]
fn demo_runs_and_reports_what_each_party_holds() {
    let dir = tempfile::tempdir().unwrap();
    let out = ok(
        dir.path(),
        &["demo", "--json", "--every", "120", "--devices", "2"],
        b"",
    );
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    let per_device = (31 + 30) * 12;
    assert_eq!(v["devices"], 2);
    assert_eq!(v["records"], 2 * per_device);
    assert_eq!(
        v["fetched"], per_device,
        "the app fetched the first device's two months"
    );
    assert_eq!(v["opened_week"], 7 * 12, "exactly week 2");
    assert_eq!(v["opened_months"], per_device);
    assert_eq!(v["cross_device_opened"], 0);
    assert_eq!(v["requests"]["two_months"]["granted_nodes"], 2);
    assert_eq!(v["requests"]["week"]["granted_nodes"], 1);
    assert!(
        v["requests"]["day"]["denied"]
            .as_str()
            .unwrap()
            .contains("policy")
    );
    assert_eq!(v["consent_entries"], 3);
    assert_eq!(v["app_node_secrets"], 3);
    assert_eq!(v["hub_keys_found"], 0);
    // Device-to-device keys in every mode, at the sizes docs/wire.md §12 gives.
    let modes: Vec<(String, u64)> = v["device_to_device"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["mode"].as_str().unwrap().to_string(),
                m["bytes"].as_u64().unwrap(),
            )
        })
        .collect();
    let want = [
        ("ktc-direct", 148),
        ("ktc-indirect", 201),
        ("kdc-direct", 185),
        ("kdc-indirect", 238),
        ("noise-kk", 144),
    ];
    assert_eq!(modes, want.map(|(m, b)| (m.to_string(), b)).to_vec(), "{v}");
    assert!(v["hub"].as_str().unwrap().starts_with("https://127.0.0.1:"));
}

#[test]
fn outputs_never_overwrite_unasked_and_stay_private() {
    let dir = setup();
    let d = dir.path();
    let dpk_before = std::fs::read(d.join("dpk.json")).unwrap();
    std::fs::write(d.join("plain.txt"), b"hello").unwrap();
    ok(
        d,
        &[
            "seal",
            "--keys",
            "dpk.json",
            "--at",
            "2026-03-09",
            "-i",
            "plain.txt",
            "-o",
            "rec.bin",
        ],
        b"",
    );
    // Opening onto the key file is refused: the DPK survives.
    let out = custos(
        d,
        &[
            "open", "--keys", "dpk.json", "-i", "rec.bin", "-o", "dpk.json",
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("--force"));
    assert_eq!(std::fs::read(d.join("dpk.json")).unwrap(), dpk_before);
    ok(
        d,
        &[
            "open",
            "--keys",
            "dpk.json",
            "-i",
            "rec.bin",
            "-o",
            "plain.out",
        ],
        b"",
    );
    assert_eq!(std::fs::read(d.join("plain.out")).unwrap(), b"hello");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |f: &str| std::fs::metadata(d.join(f)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode("plain.out"), 0o600, "decrypted output must be private");
        // --force replaces a loose file with a private one.
        std::fs::write(d.join("loose.key"), b"x").unwrap();
        std::fs::set_permissions(d.join("loose.key"), std::fs::Permissions::from_mode(0o644))
            .unwrap();
        ok(d, &["master", "new", "-o", "loose.key", "--force"], b"");
        assert_eq!(mode("loose.key"), 0o600);
        // --force replaces a symlink, never the file it points to.
        std::os::unix::fs::symlink(d.join("plain.txt"), d.join("link.key")).unwrap();
        ok(d, &["master", "new", "-o", "link.key", "--force"], b"");
        assert_eq!(std::fs::read(d.join("plain.txt")).unwrap(), b"hello");
        assert!(
            !std::fs::symlink_metadata(d.join("link.key"))
                .unwrap()
                .file_type()
                .is_symlink()
        );
    }
}

#[test]
fn device_make_writes_a_private_identity_and_prints_the_label() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let label = String::from_utf8(ok(d, &["device", "make", "--state-dir", "dev1"], b"")).unwrap();
    assert!(label.starts_with("Custos device "), "{label}");
    assert!(
        label.contains("Join code") && label.contains("Owner code"),
        "{label}"
    );
    let made = ok(d, &["device", "make", "--state-dir", "dev2", "--json"], b"");
    let made: serde_json::Value = serde_json::from_slice(&made).unwrap();
    assert_eq!(
        made["join_code"].as_str().unwrap().len(),
        39,
        "32 hex digits in groups of 4"
    );
    assert_ne!(made["join_code"], made["owner_code"]);
    // The state directory of an existing device is never overwritten.
    let again = custos(d, &["device", "make", "--state-dir", "dev2"], b"");
    assert_eq!(again.status.code(), Some(1));
    assert!(
        stderr(&again).contains("already holds a device"),
        "{}",
        stderr(&again)
    );
    let state = std::fs::read_to_string(d.join("dev2/device.json")).unwrap();
    assert!(state.contains(&made["device"].as_str().unwrap().to_string()));
}

#[test]
fn a_key_files_suite_is_for_sealing_and_opening_follows_the_records_header() {
    let dir = setup();
    let d = dir.path();
    let rec = ok(
        d,
        &["seal", "--keys", "dpk.json", "--at", "2026-03-15", "--hex"],
        b"21.5",
    );
    // The same nodes, but the file says the device seals with ChaCha20-Poly1305.
    let text = std::fs::read_to_string(d.join("dpk.json")).unwrap();
    assert!(text.contains("\"aes256gcm\""), "{text}");
    std::fs::write(
        d.join("chacha.json"),
        text.replace("\"aes256gcm\"", "\"chacha20poly1305\""),
    )
    .unwrap();
    assert_eq!(ok(d, &["open", "--keys", "chacha.json"], &rec), b"21.5");
    let rec2 = ok(
        d,
        &[
            "seal",
            "--keys",
            "chacha.json",
            "--at",
            "2026-03-15",
            "--hex",
        ],
        b"19.0",
    );
    let inspect = ok(d, &["inspect", "--json"], &rec2);
    let inspect: serde_json::Value = serde_json::from_slice(&inspect).unwrap();
    assert_eq!(inspect["suite"], "chacha20poly1305");
    assert_eq!(ok(d, &["open", "--keys", "dpk.json"], &rec2), b"19.0");
    // A record relabelled to the other suite does not open: the suite is authenticated.
    let mut bytes = hex::decode(String::from_utf8(rec).unwrap().trim()).unwrap();
    bytes[0] ^= 0x03;
    let out = custos(
        d,
        &["open", "--keys", "dpk.json"],
        hex::encode(bytes).as_bytes(),
    );
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
}

#[test]
fn sim_lora_prints_the_table_as_json_and_refuses_a_spreading_factor_lora_lacks() {
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "sim", "lora", "--sf", "7,12", "--loss", "0", "--runs", "1", "--json",
    ];
    let rows: serde_json::Value = serde_json::from_slice(&ok(dir.path(), &args, b"")).unwrap();
    let rows = rows.as_array().unwrap();
    // Two procedures at two spreading factors.
    assert_eq!(rows.len(), 4);
    for r in rows {
        assert_eq!(r["completed"], 1, "{r}");
        assert!(r["ce_s"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["starter_speedup"].as_f64().unwrap() > 1.0, "{r}");
    }
    // The same seed gives the same table.
    let again: serde_json::Value = serde_json::from_slice(&ok(dir.path(), &args, b"")).unwrap();
    assert_eq!(again.as_array().unwrap(), rows);
    // The human form is the Markdown table, with TIES' row first.
    let text = ok(
        dir.path(),
        &["sim", "lora", "--sf", "7", "--loss", "0", "--runs", "1"],
        b"",
    );
    let text = String::from_utf8(text).unwrap();
    assert!(text.contains("| TIES | — | 44.7 |"), "{text}");
    // SF13 does not exist: a usage error, exit code 2.
    let out = custos(dir.path(), &["sim", "lora", "--sf", "13"], b"");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--sf"), "{}", stderr(&out));
}
