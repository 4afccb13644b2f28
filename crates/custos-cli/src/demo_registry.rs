//! The demo's fourth act: identity certificate servers (docs/registry.md). A manufacturer's registry issues a
//! device's identity; an integrator endorses it; the site's infield registry pulls it; a hub that requires
//! certified identities admits the device because of it and refuses one without; the maintainer marks it stolen
//! and the hub revokes it; gpg (if installed) fetches the certificate with its endorsements; a forged status and
//! a rewritten log are caught. Each claim is checked as it is printed.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, ensure};
use custos_device::Factory;
use custos_device::agent::Agent;
use custos_hub::serve::{HubTls, RegistryConfig, ServeConfig};
use custos_proto::Secret;
use custos_registry::cert::{self, Claims, Ed25519Key};
use custos_registry::policy::{Pull, policy_toml};
use custos_registry::statement::{Statement, Status};
use custos_registry::sync::{self, SyncError};
use custos_registry::{Policy, Registry};
use custos_store::{AnyStore, PendingAdmission, Store};
use rand_core::{OsRng, RngCore};

fn now() -> Result<u64> {
    Ok(std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs())
}

/// What the act measured, for the summary.
pub(crate) struct Acted {
    /// The device certificate's fingerprint.
    pub fingerprint: String,
    /// Entries in the manufacturer's and the site's logs at the end.
    pub logs: (u64, u64),
}

struct Served {
    registry: Arc<Registry<AnyStore>>,
    url: String,
    task: tokio::task::JoinHandle<()>,
}

async fn serve_registry(dir: &Path, policy: Policy, seed: [u8; 32]) -> Result<Served> {
    std::fs::create_dir_all(dir)?;
    let store = AnyStore::open(&dir.join("registry.db").to_string_lossy()).await?;
    let registry = Arc::new(Registry::open(store, policy, Secret::from_bytes(seed)).await?);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let app = custos_registry::http::app(registry.clone());
    let task = tokio::spawn(async move {
        let limits = custos_hub::serve::Limits::default();
        custos_hub::serve::serve_router(listener, app, &limits, std::future::pending()).await;
    });
    Ok(Served {
        registry,
        url,
        task,
    })
}

fn fresh_seed() -> [u8; 32] {
    let mut s = [0u8; 32];
    OsRng.fill_bytes(&mut s);
    s
}

/// Runs gpg against the manufacturer's HKP endpoint; `None` if gpg is not installed.
fn gpg_fetch(
    work: &Path,
    url: &str,
    fingerprints: &[String],
    device: &str,
) -> Result<Option<usize>> {
    let home = work.join("gnupg");
    std::fs::create_dir_all(&home)?;
    #[cfg(unix)]
    std::fs::set_permissions(&home, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
    let gpg = |args: &[&str]| {
        std::process::Command::new("gpg")
            .args(["--batch", "--no-tty", "--homedir"])
            .arg(&home)
            .args(args)
            .output()
    };
    let hkp = url.replace("http://", "hkp://");
    let mut wanted: Vec<&str> = fingerprints.iter().map(String::as_str).collect();
    wanted.push(device);
    for f in &wanted {
        let out = match gpg(&[
            "--keyserver",
            &hkp,
            // GnuPG keeps only self-signatures from keyservers unless asked (its flooding defence).
            "--keyserver-options",
            "no-self-sigs-only,no-import-clean",
            "--recv-keys",
            f,
        ]) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            other => other?,
        };
        ensure!(
            out.status.success(),
            "gpg --recv-keys {f}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = gpg(&["--with-colons", "--check-sigs", device])?;
    let text = String::from_utf8_lossy(&out.stdout);
    let good = text.lines().filter(|l| l.starts_with("sig:!:")).count();
    if std::env::var_os("CUSTOS_DEMO_DEBUG").is_some() {
        eprintln!("{text}");
    }
    let _ = std::process::Command::new("gpgconf")
        .arg("--homedir")
        .arg(&home)
        .args(["--kill", "all"])
        .output();
    Ok(Some(good))
}

pub(crate) async fn act(work: &Path, say: &impl Fn(&str, String)) -> Result<Acted> {
    let created = u32::try_from(now()?)?;
    let acme = Ed25519Key::generate(created)?;
    let integra = Ed25519Key::generate(created)?;
    let maint = Ed25519Key::generate(created)?;
    // The three registries of this act (the manufacturer's, the site's, the rewritten one) share one policy but
    // for their names.
    let (fa, fi, fm) = (
        acme.fingerprint(),
        integra.fingerprint(),
        maint.fingerprint(),
    );
    let policy = |name: &str| {
        Policy::parse(&policy_toml(
            name,
            "acme",
            &[
                ("acme", &fa, &["manufacturer"]),
                ("integra", &fi, &["integrator"]),
                ("maint", &fm, &["maintainer"]),
            ],
            &[("acme", &["*"], &["acme", "integra", "maint"])],
        ))
    };
    let maker_seed = fresh_seed();
    let maker = serve_registry(
        &work.join("registry-manufacturer"),
        policy("manufacturer")?,
        maker_seed,
    )
    .await?;
    let pull = Pull {
        name: "manufacturer".into(),
        url: maker.url.clone(),
        key: maker.registry.verifier_key()?,
        domains: vec!["acme".into()],
        reader_key: None,
    };
    let site = serve_registry(
        &work.join("registry-infield"),
        policy("infield")?,
        fresh_seed(),
    )
    .await?;
    let t = now()?;
    for (k, uid) in [
        (&acme, "Acme Sensors (manufacturer)"),
        (&integra, "Integra (integrator)"),
        (&maint, "Maint Co (maintainer)"),
    ] {
        maker
            .registry
            .submit_certs(&cert::to_bytes(&cert::party_certificate(k, uid)?)?, None, t)
            .await?;
    }

    // The device makes its certificate at the factory; its manufacturer certifies it; the integrator endorses it.
    let dir = work.join("device-registry");
    let made = Factory::make(&mut OsRng);
    made.write_state(&dir)?;
    let own = cert::parse(crate::registry::device_certificate(&dir)?.as_bytes())?;
    let claims = Claims {
        role: "manufacturer".into(),
        attributes: vec![
            ("model".into(), "TH-1".into()),
            ("lot".into(), "2026-49".into()),
        ],
    };
    let mut issued = own.clone();
    issued.details.users[0].signatures.push(cert::certify(
        &acme,
        &own,
        &claims,
        u32::try_from(now()?)?,
    )?);
    let done = maker
        .registry
        .submit_certs(&cert::to_bytes(&issued)?, None, now()?)
        .await?;
    let fingerprint = done[0].fingerprint.clone();
    say(
        "acme",
        format!(
            "manufacturer registry issues {}'s identity: certificate {fingerprint}, model TH-1, lot 2026-49",
            made.device
        ),
    );
    let mut endorsed = issued.clone();
    let integrator = Claims {
        role: "integrator".into(),
        attributes: vec![],
    };
    endorsed.details.users[0].signatures.push(cert::certify(
        &integra,
        &issued,
        &integrator,
        u32::try_from(now()?)?,
    )?);
    let done = maker
        .registry
        .submit_certs(&cert::to_bytes(&endorsed)?, None, now()?)
        .await?;
    ensure!(
        done[0].entries.len() == 1,
        "the endorsement was not logged as one entry"
    );
    say(
        "integra",
        "endorses it; the endorsement is its own log entry".into(),
    );

    // The site's registry pulls it, checking the manufacturer's signed log.
    let http = sync::client(&maker.url)?;
    let pulled = sync::pull(&site.registry, &pull, &http, now()?).await?;
    ensure!(
        pulled.taken == pulled.received && pulled.taken > 0,
        "the site took {pulled:?}"
    );
    say(
        "infield",
        format!(
            "pulls {} entries from the manufacturer's log ({} B), its checkpoint and every leaf checked",
            pulled.taken, pulled.bytes
        ),
    );

    // A hub that admits only devices with a manufacturer-certified identity at its infield registry.
    let hub_dir = work.join("hub-registry");
    let running = custos_hub::serve::spawn(ServeConfig {
        registry: Some(RegistryConfig {
            url: site.url.clone(),
            require_identity: true,
            poll: Duration::from_millis(200),
        }),
        data_dir: hub_dir.clone(),
        listen: "127.0.0.1:0".parse()?,
        database: None,
        mqtt: None,
        accounts: Default::default(),
        limits: Default::default(),
        tls: HubTls::SelfSigned,
    })
    .await?;
    let url = running.url();
    let trust = running.trust();
    let store = AnyStore::open(&hub_dir.join("hub.db").to_string_lossy()).await?;
    let admit = |device, code| PendingAdmission {
        device,
        join_code: code,
        created_at: i64::try_from(now().unwrap_or(0)).unwrap_or(0),
        expires_at: i64::try_from(now().unwrap_or(0)).unwrap_or(0) + 600,
    };
    store
        .put_admission(&admit(made.device, made.join_code))
        .await?;
    let mut agent = Agent::open(&dir)?;
    agent.set_hub_trust(trust.clone())?;
    agent.join(&url, i64::try_from(now()?)?).await?;
    say(
        "hub",
        format!(
            "admits {} because its infield registry holds a manufacturer-certified identity for the key it joined with",
            made.device
        ),
    );
    let stranger_dir = work.join("device-uncertified");
    let stranger = Factory::make(&mut OsRng);
    stranger.write_state(&stranger_dir)?;
    store
        .put_admission(&admit(stranger.device, stranger.join_code))
        .await?;
    let mut other = Agent::open(&stranger_dir)?;
    other.set_hub_trust(trust.clone())?;
    ensure!(
        other.join(&url, i64::try_from(now()?)?).await.is_err(),
        "a device without an identity was admitted"
    );
    say(
        "hub",
        format!(
            "refuses {}: right join code, but no certified identity",
            stranger.device
        ),
    );

    // gpg, a client we did not write, fetches the certificate with both certifications.
    let fprs = [
        hex::encode_upper(acme.fingerprint()),
        hex::encode_upper(integra.fingerprint()),
    ];
    match gpg_fetch(work, &maker.url, &fprs, &fingerprint)? {
        Some(good) => {
            ensure!(
                good >= 3,
                "gpg found {good} good signatures, expected self, manufacturer and integrator"
            );
            say(
                "gpg",
                format!(
                    "--recv-keys over HKP: the certificate with {good} good signatures (its own, the manufacturer's, the integrator's)"
                ),
            );
        }
        None => say("gpg", "not installed: skipped (the tests run it)".into()),
    }

    // A forged status: the integrator's key signing in the maintainer's name; and a party outside the policy.
    let subject = hex::decode(&fingerprint)?;
    let status = |by: &Ed25519Key, status, note: &str| -> Result<Statement> {
        Ok(Statement::Status {
            signer: by.fingerprint(),
            subject: subject.clone(),
            issued_at: now()?,
            status,
            domain: "acme".into(),
            note: note.into(),
        })
    };
    let forged = status(&maint, Status::Destroyed, "")?;
    let mut bytes = forged.sign(&maint)?;
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    ensure!(
        maker
            .registry
            .submit_statement(&bytes, now()?)
            .await
            .is_err(),
        "a forged status was taken"
    );
    let outsider = Ed25519Key::generate(created)?;
    let foreign = status(&outsider, Status::Destroyed, "")?;
    ensure!(
        maker
            .registry
            .submit_statement(&foreign.sign(&outsider)?, now()?)
            .await
            .is_err(),
        "an outsider's status was taken"
    );
    say(
        "acme",
        "refuses a status with a bad signature and one by a key outside its policy".into(),
    );

    // Stolen: the maintainer says so at the manufacturer's registry; the site pulls it; the hub revokes.
    let stolen = status(&maint, Status::Stolen, "taken from ward 3")?;
    maker
        .registry
        .submit_statement(&stolen.sign(&maint)?, now()?)
        .await?;
    sync::pull(&site.registry, &pull, &http, now()?).await?;
    // The hub's status watch revokes the device, then signs a list without it: wait for both (a poll of 200 ms).
    let hub_key = custos_hub::HubKeys::load_or_create(&hub_dir)?.signing_public();
    let mut dropped = (false, false);
    for _ in 0..50 {
        let revoked = store
            .device(made.device)
            .await?
            .and_then(|d| d.revoked_at)
            .is_some();
        let listed = match store.device_list().await? {
            Some((_, list)) => {
                custos_hub::DeviceList::verify(&custos_proto::RustCrypto, &list, &hub_key)?
                    .contains(made.device)
            }
            None => true,
        };
        dropped = (revoked, !listed);
        if revoked && !listed {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ensure!(dropped.0, "the hub did not revoke the stolen device");
    ensure!(
        dropped.1,
        "the signed device list still names the stolen device"
    );
    say(
        "maint",
        format!(
            "marks {} stolen; the site pulls it; the hub revokes it and signs a device list without it",
            made.device
        ),
    );

    // A rewritten log: the manufacturer's registry replaced by one with the same key but other entries.
    let forged_dir = work.join("registry-rewritten");
    let rewritten = serve_registry(&forged_dir, policy("manufacturer")?, maker_seed).await?;
    for (k, uid) in [(&acme, "Acme"), (&maint, "Maint")] {
        rewritten
            .registry
            .submit_certs(
                &cert::to_bytes(&cert::party_certificate(k, uid)?)?,
                None,
                now()?,
            )
            .await?;
    }
    for i in 0..8 {
        let claims = Claims {
            role: "manufacturer".into(),
            attributes: vec![("lot".into(), format!("{i}"))],
        };
        let mut c = own.clone();
        c.details.users[0].signatures.push(cert::certify(
            &acme,
            &own,
            &claims,
            u32::try_from(now()?)?,
        )?);
        rewritten
            .registry
            .submit_certs(&cert::to_bytes(&c)?, None, now()?)
            .await?;
    }
    let before = site.registry.size().await;
    let liar = Pull {
        url: rewritten.url.clone(),
        ..pull.clone()
    };
    let e = sync::pull(
        &site.registry,
        &liar,
        &sync::client(&rewritten.url)?,
        now()?,
    )
    .await;
    ensure!(
        matches!(e, Err(SyncError::Flagged { .. })),
        "a rewritten log was not caught: {e:?}"
    );
    ensure!(
        site.registry.size().await == before,
        "the site took entries of a rewritten log"
    );
    say("infield", "a manufacturer log rewritten under the same key: no consistency proof; the peer is flagged, nothing taken".into());

    let logs = (maker.registry.size().await, site.registry.size().await);
    running.stop().await?;
    store.close().await;
    for s in [maker, site, rewritten] {
        s.task.abort();
    }
    Ok(Acted { fingerprint, logs })
}
