//! `custos account` against a running hub: register, log in, whoami, change the password, log out.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// Runs `custos args` in `dir` with `input` on stdin.
fn custos_in(dir: &Path, args: &[&str], input: &str) -> Output {
    let mut child = common::trusting(&mut Command::new(env!("CARGO_BIN_EXE_custos")), dir)
        .args(args)
        .current_dir(dir)
        .env_remove("CUSTOS_SESSION")
        .env_remove("CUSTOS_HUB_URL")
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

fn ok(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_default()
}

#[test]
fn register_login_whoami_passwd_logout() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let mut hub = common::serve(
        dir.path(),
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
    let url = common::hub_url(port);
    let session = dir.path().join("cfg/session.json");
    let session = session.to_str().unwrap();
    let d = dir.path();
    // The hub wrote its operator token at first start, owner-only.
    let operator = std::fs::read_to_string(d.join("hub/operator.token")).unwrap();
    assert_eq!(operator.trim().len(), 64);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(d.join("hub/operator.token"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    let r = ok(&custos_in(
        d,
        &[
            "account",
            "register",
            "--hub",
            &url,
            "--name",
            "Hana",
            "--password-stdin",
            "--json",
        ],
        "a long enough password\n",
    ));
    assert_eq!(r["name"], "hana");
    // The same name again: the hub's 409 is an error (exit 1).
    let again = custos_in(
        d,
        &[
            "account",
            "register",
            "--hub",
            &url,
            "--name",
            "hana",
            "--password-stdin",
        ],
        "a long enough password\n",
    );
    assert_eq!(again.status.code(), Some(1));
    // No password on a non-terminal stdin without --password-stdin: a usage error.
    let no_pw = custos_in(
        d,
        &[
            "account",
            "login",
            "--hub",
            &url,
            "--name",
            "hana",
            "--session",
            session,
        ],
        "",
    );
    assert_eq!(no_pw.status.code(), Some(2));
    let wrong = custos_in(
        d,
        &[
            "account",
            "login",
            "--hub",
            &url,
            "--name",
            "hana",
            "--password-stdin",
            "--session",
            session,
        ],
        "not the password\n",
    );
    assert_eq!(wrong.status.code(), Some(1));
    assert!(!Path::new(session).exists());

    let r = ok(&custos_in(
        d,
        &[
            "account",
            "login",
            "--hub",
            &url,
            "--name",
            "hana",
            "--password-stdin",
            "--session",
            session,
            "--json",
        ],
        "a long enough password\n",
    ));
    assert_eq!(r["name"], "hana");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(session).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(session).unwrap()).unwrap();
    assert_eq!(saved["hub"], url);
    assert_eq!(saved["token"].as_str().unwrap().len(), 64);

    let me = ok(&custos_in(
        d,
        &["account", "whoami", "--session", session, "--json"],
        "",
    ));
    assert_eq!(me["name"], "hana");
    assert_eq!(me["owned"], serde_json::json!([]));
    // The environment names the session file too, and the session remembers the hub's pinned certificate.
    let me = Command::new(env!("CARGO_BIN_EXE_custos"))
        .args(["account", "whoami"])
        .env_remove("CUSTOS_HUB_FINGERPRINT")
        .env("CUSTOS_SESSION", session)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&me.stdout).starts_with("hana at "));

    let r = ok(&custos_in(
        d,
        &[
            "account",
            "passwd",
            "--password-stdin",
            "--session",
            session,
            "--json",
        ],
        "a long enough password\nan even longer password\n",
    ));
    assert_eq!(r["sessions_ended"], 0);

    let r = ok(&custos_in(
        d,
        &["account", "logout", "--session", session, "--json"],
        "",
    ));
    assert_eq!(r["logged_out"], true);
    assert!(!Path::new(session).exists(), "the session file is gone");
    let after = custos_in(d, &["account", "whoami", "--session", session], "");
    assert_eq!(after.status.code(), Some(2), "no session: log in first");

    ok(&custos_in(
        d,
        &[
            "account",
            "login",
            "--hub",
            &url,
            "--name",
            "hana",
            "--password-stdin",
            "--session",
            session,
        ],
        "an even longer password\n",
    ));
    hub.kill().unwrap();
    hub.wait().unwrap();
}
