//! Real OpenPGP clients against a registry on loopback: GnuPG (`gpg --recv-keys`, `--search-keys`,
//! `--send-keys`) and Sequoia (`sq keyserver get`) fetch a device certificate with its manufacturer's
//! certification and an integrator's endorsement, and the registry drops what no authorized party signed. The tests
//! fail, never skip, without `gpg` or `sq` (`.ci/run` installs both).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Command, Output};
use std::sync::Arc;

use anyhow::{Context, Result, ensure};
use custos_proto::DeviceId;
use custos_registry::cert::{self, Claims, Ed25519Key};
use custos_registry::policy::policy_toml;
use custos_registry::{Policy, Registry};
use custos_store::SqliteStore;

const AT: u32 = 1_780_000_000;

struct World {
    maker: Ed25519Key,
    integrator: Ed25519Key,
    stranger: Ed25519Key,
    device: pgp::composed::SignedPublicKey,
    device_fpr: String,
    url: String,
    _dir: tempfile::TempDir,
}

fn policy(maker: &Ed25519Key, integrator: &Ed25519Key) -> Policy {
    Policy::parse(&policy_toml(
        "infield.test",
        "site",
        &[
            ("acme", &maker.fingerprint(), &["manufacturer"]),
            ("integrator", &integrator.fingerprint(), &["integrator"]),
        ],
        &[("site", &["*"], &["acme", "integrator"])],
    ))
    .unwrap()
}

async fn world() -> Result<World> {
    let dir = tempfile::tempdir()?;
    let maker = Ed25519Key::from_seed(&[1; 32], AT)?;
    let integrator = Ed25519Key::from_seed(&[2; 32], AT)?;
    let stranger = Ed25519Key::from_seed(&[3; 32], AT)?;
    let store = SqliteStore::open(&dir.path().join("registry.db")).await?;
    let registry = Arc::new(
        Registry::open(
            store,
            policy(&maker, &integrator),
            custos_proto::Secret::from_bytes([9; 32]),
        )
        .await?,
    );
    // The parties' own certificates first: their certifications are checked against them.
    for (key, uid) in [
        (&maker, "Acme Sensors (manufacturer)"),
        (&integrator, "Integra (integrator)"),
    ] {
        let c = cert::party_certificate(key, uid)?;
        registry
            .submit_certs(cert::to_armored(&c)?.as_bytes(), None, u64::from(AT))
            .await?;
    }
    // The device's own certificate, certified by its manufacturer, endorsed by the integrator, and signed by a
    // stranger the policy does not know.
    let id = DeviceId([2, 0, 0x5e, 0x10, 0, 0, 0, 7]);
    let secret = [7u8; 32];
    let static_public =
        x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(secret)).to_bytes();
    let identity = Ed25519Key::from_seed(&cert::device_identity_seed(&secret, id), AT)?;
    let mut device = cert::device_certificate(&identity, id, static_public)?;
    let made = Claims {
        role: "manufacturer".into(),
        attributes: vec![
            ("model".into(), "TH-1".into()),
            ("lot".into(), "2026-48".into()),
        ],
    };
    let sig = cert::certify(&maker, &device, &made, AT + 10)?;
    device.details.users[0].signatures.push(sig);
    let endorsed = Claims {
        role: "integrator".into(),
        attributes: vec![],
    };
    let sig = cert::certify(&integrator, &device, &endorsed, AT + 20)?;
    device.details.users[0].signatures.push(sig);
    let spam = Claims {
        role: "integrator".into(),
        attributes: vec![],
    };
    let sig = cert::certify(&stranger, &device, &spam, AT + 30)?;
    device.details.users[0].signatures.push(sig);
    let done = registry
        .submit_certs(&cert::to_bytes(&device)?, None, u64::from(AT) + 40)
        .await?;
    ensure!(
        done.len() == 1 && done[0].dropped == 1,
        "the stranger's signature is dropped: {done:?}"
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("hkp://{}", listener.local_addr()?);
    let app = custos_registry::http::app(registry);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(World {
        device_fpr: hex::encode_upper(identity.fingerprint()),
        maker,
        integrator,
        stranger,
        device,
        url,
        _dir: dir,
    })
}

/// Runs a program off the async runtime (gpg talks to our server, which runs on it).
async fn run(
    program: &'static str,
    args: Vec<String>,
    env: Vec<(String, String)>,
) -> Result<Output> {
    tokio::task::spawn_blocking(move || {
        Command::new(program)
            .args(&args)
            .envs(env)
            .output()
            .with_context(|| format!("{program} is not installed (.ci/run installs it)"))
    })
    .await?
}

fn gnupg_home() -> Result<tempfile::TempDir> {
    let home = tempfile::tempdir()?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o700))?;
    }
    // dirmngr must not try any other keyserver, nor DNS.
    std::fs::write(home.path().join("dirmngr.conf"), "standard-resolver\n")?;
    Ok(home)
}

async fn gpg(home: &tempfile::TempDir, args: &[&str]) -> Result<Output> {
    let mut all = vec![
        "--batch".to_string(),
        "--no-tty".into(),
        "--homedir".into(),
        home.path().display().to_string(),
    ];
    all.extend(args.iter().map(|s| s.to_string()));
    run("gpg", all, vec![]).await
}

async fn stop_dirmngr(home: &tempfile::TempDir) {
    let _ = run(
        "gpgconf",
        vec![
            "--homedir".into(),
            home.path().display().to_string(),
            "--kill".into(),
            "all".into(),
        ],
        vec![],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gpg_receives_the_device_certificate_with_its_endorsements() -> Result<()> {
    let w = world().await?;
    let home = gnupg_home()?;
    let result = async {
        // The parties' certificates first, so that gpg keeps (and checks) their certifications.
        for key in [&w.maker, &w.integrator] {
            let out = gpg(
                &home,
                &[
                    "--keyserver",
                    &w.url,
                    "--recv-keys",
                    &hex::encode_upper(key.fingerprint()),
                ],
            )
            .await?;
            ensure!(
                out.status.success(),
                "gpg --recv-keys party: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        // GnuPG ≥ 2.2.17 keeps only self-signatures from a keyserver unless told otherwise (its defence against
        // certificate flooding); endorsements are what a device certificate is for, so ask for them.
        let out = gpg(
            &home,
            &[
                "--keyserver",
                &w.url,
                "--keyserver-options",
                "no-self-sigs-only,no-import-clean",
                "--recv-keys",
                &w.device_fpr,
            ],
        )
        .await?;
        ensure!(
            out.status.success(),
            "gpg --recv-keys device: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = gpg(&home, &["--with-colons", "--check-sigs", &w.device_fpr]).await?;
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        ensure!(
            out.status.success(),
            "gpg --check-sigs: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // `sig:!:` is a signature gpg checked and found good; field 5 is the signer's key id.
        let good_by = |key: &Ed25519Key| {
            let keyid = hex::encode_upper(&key.fingerprint()[12..]);
            text.lines()
                .any(|l| l.starts_with("sig:!:") && l.split(':').nth(4) == Some(keyid.as_str()))
        };
        ensure!(
            good_by(&w.maker),
            "manufacturer's certification is good in gpg:\n{text}"
        );
        ensure!(
            good_by(&w.integrator),
            "integrator's endorsement is good in gpg:\n{text}"
        );
        let stranger = hex::encode_upper(&w.stranger.fingerprint()[12..]);
        ensure!(
            !text.contains(&stranger),
            "the stranger's signature was not served:\n{text}"
        );
        ensure!(
            text.contains("custos device 02-00-5e-10-00-00-00-07"),
            "{text}"
        );
        // The admission key is there as a Curve25519 encryption subkey (algorithm 18, cv25519).
        ensure!(
            text.lines()
                .any(|l| l.starts_with("sub:") && l.split(':').nth(3) == Some("18")),
            "{text}"
        );
        // The manufacturer's notations are readable by gpg.
        let out = gpg(
            &home,
            &[
                "--list-options",
                "show-notations",
                "--list-sigs",
                &w.device_fpr,
            ],
        )
        .await?;
        let listing = String::from_utf8_lossy(&out.stdout).to_string();
        ensure!(listing.contains("model@custos.dev=TH-1"), "{listing}");

        // --search-keys (index, mr) finds it by User ID.
        let out = gpg(
            &home,
            &[
                "--keyserver",
                &w.url,
                "--search-keys",
                "02-00-5e-10-00-00-00-07",
            ],
        )
        .await?;
        let both = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        ensure!(
            both.contains("custos device 02-00-5e-10-00-00-00-07"),
            "gpg --search-keys: {both}"
        );
        Ok(())
    }
    .await;
    stop_dirmngr(&home).await;
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gpg_send_keys_is_subject_to_the_policy() -> Result<()> {
    let w = world().await?;
    let home = gnupg_home()?;
    let result = async {
        // A key gpg made itself, signed by nobody the policy knows: refused.
        let out = gpg(
            &home,
            &[
                "--passphrase",
                "",
                "--quick-gen-key",
                "Mallory <m@example.org>",
                "ed25519",
                "cert",
                "never",
            ],
        )
        .await?;
        ensure!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = gpg(&home, &["--with-colons", "--list-keys", "m@example.org"]).await?;
        let listing = String::from_utf8_lossy(&out.stdout).to_string();
        let fpr = listing
            .lines()
            .find(|l| l.starts_with("fpr:"))
            .and_then(|l| l.split(':').nth(9))
            .context("fpr")?
            .to_string();
        let out = gpg(&home, &["--keyserver", &w.url, "--send-keys", &fpr]).await?;
        ensure!(
            !out.status.success(),
            "the registry must refuse an uncertified key"
        );
        let out = gpg(&home, &["--keyserver", &w.url, "--recv-keys", &fpr]).await?;
        ensure!(!out.status.success(), "the refused key is not served");

        // The device certificate, sent back by gpg after fetching it: accepted, nothing new logged.
        let out = gpg(
            &home,
            &["--keyserver", &w.url, "--recv-keys", &w.device_fpr],
        )
        .await?;
        ensure!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = gpg(
            &home,
            &["--keyserver", &w.url, "--send-keys", &w.device_fpr],
        )
        .await?;
        ensure!(
            out.status.success(),
            "gpg --send-keys of a known certificate: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }
    .await;
    stop_dirmngr(&home).await;
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sq_fetches_the_device_certificate() -> Result<()> {
    let w = world().await?;
    let home = tempfile::tempdir()?;
    let out_file = home.path().join("device.pgp");
    // Debian 12's sq 0.27 spells the lookup `sq keyserver get`; sq 1.x calls it `sq network keyserver search`.
    let out = run(
        "sq",
        vec![
            "keyserver".into(),
            // Plain HKP on loopback: sq's default policy wants TLS.
            "--policy".into(),
            "insecure".into(),
            "--server".into(),
            w.url.clone(),
            "get".into(),
            "--output".into(),
            out_file.display().to_string(),
            w.device_fpr.clone(),
        ],
        vec![],
    )
    .await?;
    ensure!(
        out.status.success(),
        "sq keyserver get: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fetched = cert::check(cert::parse(&std::fs::read(&out_file)?)?)?;
    ensure!(hex::encode_upper(fetched.fingerprint) == w.device_fpr);
    let signers: Vec<_> = fetched.certifications.iter().map(|c| c.signer).collect();
    ensure!(
        signers.contains(&w.maker.fingerprint()) && signers.contains(&w.integrator.fingerprint()),
        "both certifications came through sq"
    );
    ensure!(!signers.contains(&w.stranger.fingerprint()));
    ensure!(fetched.x25519 == cert::check(w.device.clone())?.x25519);
    Ok(())
}
