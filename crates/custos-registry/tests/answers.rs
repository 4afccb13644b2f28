//! HKP lookups from memory (docs/registry.md §8, "Answers from memory"): the answer cache and the certificates held
//! whole. An answer served from memory never outlives a write to the log, made by this process (gone at once) or by
//! another process on the same store (gone within a second); a private certificate is never cached nor served; a
//! budget of 0 keeps nothing; certificates held in memory answer every lookup byte for byte as the store does.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, ensure};
use axum::body::{Body, to_bytes};
use axum::http::{Request, StatusCode};
use custos_proto::DeviceId;
use custos_registry::answers::CHECK_EVERY;
use custos_registry::cert::{self, Claims, Ed25519Key};
use custos_registry::policy::policy_toml;
use custos_registry::{Policy, Registry};
use custos_store::SqliteStore;
use tower::ServiceExt;

const AT: u32 = 1_780_000_000;

struct Parties {
    maker: Ed25519Key,
    integrator: Ed25519Key,
}

fn policy(p: &Parties) -> Policy {
    Policy::parse(&policy_toml(
        "infield.test",
        "site",
        &[
            ("acme", &p.maker.fingerprint(), &["manufacturer"]),
            ("integrator", &p.integrator.fingerprint(), &["integrator"]),
        ],
        &[
            ("site", &["*"], &["acme", "integrator"]),
            ("private", &["acme"], &["acme"]),
        ],
    ))
    .unwrap()
}

async fn open(
    dir: &std::path::Path,
    p: &Parties,
    budget: usize,
) -> Result<Arc<Registry<SqliteStore>>> {
    let store = SqliteStore::open(&dir.join("registry.db")).await?;
    Ok(Arc::new(
        Registry::open(store, policy(p), custos_proto::Secret::from_bytes([9; 32]))
            .await?
            .with_answer_budget(budget),
    ))
}

/// A device certificate certified by its manufacturer, and its fingerprint.
fn device(p: &Parties, n: u8) -> Result<(pgp::composed::SignedPublicKey, String, DeviceId)> {
    let id = DeviceId([2, 0, 0x5e, 0x10, 0, 0, 0, n]);
    let identity = Ed25519Key::from_seed(&[n; 32], AT)?;
    let mut c = cert::device_certificate(&identity, id, [n; 32])?;
    let made = Claims {
        role: "manufacturer".into(),
        attributes: vec![("model".into(), "TH-1".into())],
    };
    let sig = cert::certify(&p.maker, &c, &made, AT + 10)?;
    c.details.users[0].signatures.push(sig);
    Ok((c, hex::encode_upper(identity.fingerprint()), id))
}

/// The same certificate endorsed by the integrator.
fn endorsed(p: &Parties, c: &pgp::composed::SignedPublicKey) -> Result<Vec<u8>> {
    let mut c = c.clone();
    let claims = Claims {
        role: "integrator".into(),
        attributes: vec![],
    };
    let sig = cert::certify(&p.integrator, &c, &claims, AT + 20)?;
    c.details.users[0].signatures.push(sig);
    Ok(cert::to_bytes(&c)?)
}

async fn hkp(app: &axum::Router, query: &str) -> Result<(StatusCode, String)> {
    let req = Request::builder()
        .uri(format!("/pks/lookup?{query}"))
        .body(Body::empty())?;
    let resp = app.clone().oneshot(req).await?;
    let status = resp.status();
    let body = to_bytes(resp.into_body(), usize::MAX).await?;
    Ok((status, String::from_utf8(body.to_vec())?))
}

/// `op=index` for a device id: the status and the answer.
async fn search(app: &axum::Router, id: &DeviceId) -> Result<(StatusCode, String)> {
    hkp(app, &format!("op=index&options=mr&search={id}")).await
}

/// How many certifications the certificate `op=get` serves for `fpr` carries.
async fn certifications(app: &axum::Router, fpr: &str) -> Result<usize> {
    let (status, text) = hkp(app, &format!("op=get&options=mr&search=0x{fpr}")).await?;
    ensure!(status == StatusCode::OK, "get {fpr}: {status} {text}");
    certifications_in(&text)
}

/// How many certifications an armoured certificate carries.
fn certifications_in(text: &str) -> Result<usize> {
    Ok(cert::check(cert::parse(text.as_bytes())?)?
        .certifications
        .len())
}

async fn setup(
    dir: &std::path::Path,
    budget: usize,
) -> Result<(Parties, Arc<Registry<SqliteStore>>)> {
    let p = Parties {
        maker: Ed25519Key::from_seed(&[1; 32], AT)?,
        integrator: Ed25519Key::from_seed(&[2; 32], AT)?,
    };
    let r = open(dir, &p, budget).await?;
    for (key, uid) in [
        (&p.maker, "Acme Sensors (manufacturer)"),
        (&p.integrator, "Integra (integrator)"),
    ] {
        let c = cert::party_certificate(key, uid)?;
        r.submit_certs(&cert::to_bytes(&c)?, None, u64::from(AT))
            .await?;
    }
    Ok((p, r))
}

#[tokio::test]
async fn an_answer_never_outlives_a_write_of_this_process() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (p, r) = setup(dir.path(), 1 << 20).await?;
    let (dev, fpr, id) = device(&p, 7)?;
    r.submit_certs(&cert::to_bytes(&dev)?, None, u64::from(AT) + 30)
        .await?;
    let app = custos_registry::http::app(r.clone());

    assert_eq!(certifications(&app, &fpr).await?, 1);
    let (status, index) = search(&app, &id).await?;
    assert_eq!(status, StatusCode::OK, "{index}");
    assert!(index.contains(&fpr), "{index}");
    // Both answers are now served from memory…
    assert_eq!(r.answers().await?.len(), 2);
    assert_eq!(certifications(&app, &fpr).await?, 1);

    // …until the log takes the integrator's endorsement: the next lookup serves it.
    r.submit_certs(&endorsed(&p, &dev)?, None, u64::from(AT) + 40)
        .await?;
    assert!(
        r.answers().await?.is_empty(),
        "a logged certificate clears every answer"
    );
    assert_eq!(certifications(&app, &fpr).await?, 2);

    // A search that found nothing is not remembered: a certificate logged after it is found at once.
    let (late, late_fpr, late_id) = device(&p, 8)?;
    let (status, _) = search(&app, &late_id).await?;
    assert_eq!(status, StatusCode::NOT_FOUND);
    r.submit_certs(&cert::to_bytes(&late)?, None, u64::from(AT) + 50)
        .await?;
    let (status, index) = search(&app, &late_id).await?;
    assert_eq!(status, StatusCode::OK);
    assert!(index.contains(&late_fpr), "{index}");
    Ok(())
}

#[tokio::test]
async fn another_process_s_write_is_served_within_a_second() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (p, serving) = setup(dir.path(), 1 << 20).await?;
    let (dev, fpr, _) = device(&p, 7)?;
    serving
        .submit_certs(&cert::to_bytes(&dev)?, None, u64::from(AT) + 30)
        .await?;
    let app = custos_registry::http::app(serving.clone());
    assert_eq!(certifications(&app, &fpr).await?, 1);
    let (other_dev, other_fpr, other_id) = device(&p, 9)?;
    let (status, _) = search(&app, &other_id).await?;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Another process (here: another registry over the same database file) logs the endorsement and a new device.
    let writer = open(dir.path(), &p, 0).await?;
    writer
        .submit_certs(&endorsed(&p, &dev)?, None, u64::from(AT) + 40)
        .await?;
    writer
        .submit_certs(&cert::to_bytes(&other_dev)?, None, u64::from(AT) + 50)
        .await?;

    // Within CHECK_EVERY the serving registry may still answer from memory; after it, never.
    tokio::time::sleep(CHECK_EVERY + Duration::from_millis(100)).await;
    assert_eq!(certifications(&app, &fpr).await?, 2);
    let (status, index) = search(&app, &other_id).await?;
    assert_eq!(status, StatusCode::OK);
    assert!(index.contains(&other_fpr), "{index}");
    Ok(())
}

#[tokio::test]
async fn private_certificates_are_neither_served_nor_kept() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (p, r) = setup(dir.path(), 1 << 20).await?;
    let (dev, fpr, id) = device(&p, 7)?;
    r.submit_certs(&cert::to_bytes(&dev)?, Some("private"), u64::from(AT) + 30)
        .await?;
    let app = custos_registry::http::app(r.clone());
    for query in [
        format!("op=get&options=mr&search=0x{fpr}"),
        format!("op=get&options=mr&search=0x{}", &fpr[24..]),
        format!("op=index&options=mr&search={id}"),
        format!("op=get&options=mr&search={id}"),
    ] {
        for _ in 0..2 {
            let (status, text) = hkp(&app, &query).await?;
            assert_eq!(status, StatusCode::NOT_FOUND, "{query}: {text}");
        }
    }
    assert!(r.answers().await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn a_budget_of_zero_keeps_nothing_and_a_small_one_stays_within_it() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (p, r) = setup(dir.path(), 0).await?;
    let app = custos_registry::http::app(r.clone());
    let mut fprs = Vec::new();
    for n in 10..30 {
        let (dev, fpr, _) = device(&p, n)?;
        r.submit_certs(&cert::to_bytes(&dev)?, None, u64::from(AT) + 30)
            .await?;
        fprs.push(fpr);
    }
    for fpr in &fprs {
        assert_eq!(certifications(&app, fpr).await?, 1);
    }
    assert!(r.answers().await?.is_empty());

    // The same store served with room for a few answers (each some 1.5 KiB of armour): every lookup still gets
    // the right certificate, and the cache never holds more than its budget.
    let budget = 16 << 10;
    let small = open(dir.path(), &p, budget).await?;
    let app = custos_registry::http::app(small.clone());
    for _ in 0..3 {
        for fpr in &fprs {
            assert_eq!(certifications(&app, fpr).await?, 1);
            let answers = small.answers().await?;
            assert!(answers.bytes() <= budget, "{} > {budget}", answers.bytes());
        }
    }
    assert!(!small.answers().await?.is_empty());
    Ok(())
}

/// Every kind of lookup, for comparing answers.
fn lookups(fprs: &[String], ids: &[DeviceId]) -> Vec<String> {
    let mut out = Vec::new();
    for fpr in fprs {
        for search in [format!("0x{fpr}"), format!("0x{}", &fpr[24..]), fpr.clone()] {
            out.push(format!("op=get&options=mr&search={search}"));
            out.push(format!("op=index&options=mr&search={search}"));
        }
    }
    for id in ids {
        out.push(format!("op=get&options=mr&search={id}"));
        out.push(format!("op=index&options=mr&search={id}"));
        out.push(format!("op=vindex&search=custos+device+{id}&exact=on"));
    }
    for search in [
        "acme",
        "ACME+sensors",
        "custos+device",
        "custos",
        "00-00",
        // Words of different certificates: none holds both.
        "acme+custos",
        "integrator+device+00",
        "=Acme+Sensors+(manufacturer)",
        "Integra+(integrator)",
        "nobody",
        "%21%21",
        "0x0000000000000000",
    ] {
        for op in ["get", "index"] {
            out.push(format!("op={op}&options=mr&search={search}"));
            out.push(format!("op={op}&options=mr&search={search}&exact=on"));
        }
    }
    out
}

#[tokio::test]
async fn certificates_held_in_memory_answer_as_the_store_does() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (p, r) = setup(dir.path(), 0).await?;
    let mut fprs = Vec::new();
    let mut ids = Vec::new();
    for n in 40..60 {
        let (dev, fpr, id) = device(&p, n)?;
        let domain = (n % 5 == 0).then_some("private");
        r.submit_certs(&cert::to_bytes(&dev)?, domain, u64::from(AT) + 30)
            .await?;
        if n % 3 == 0 {
            r.submit_certs(&endorsed(&p, &dev)?, None, u64::from(AT) + 40)
                .await?;
        }
        fprs.push(fpr);
        ids.push(id);
    }
    let (unknown, unknown_fpr, unknown_id) = device(&p, 99)?;
    drop(unknown);
    fprs.push(unknown_fpr);
    ids.push(unknown_id);
    let plain = custos_registry::http::app(r.clone());
    let held = open(dir.path(), &p, 1 << 20).await?;
    held.hold_public().await?;
    assert!(held.public_bytes() > 0, "the certificates fit 1 MiB");
    let app = custos_registry::http::app(held.clone());
    // The answers keep what the held certificates leave of the budget.
    assert_eq!(
        held.answers().await?.budget(),
        (1 << 20) - held.public_bytes()
    );
    let mut found = 0;
    // Twice: the second time, searches are answered as kept from the first.
    for pass in 0..2 {
        for query in lookups(&fprs, &ids) {
            let want = hkp(&plain, &query).await?;
            let got = hkp(&app, &query).await?;
            assert_eq!(got, want, "pass {pass}: {query}");
            found += usize::from(want.0 == StatusCode::OK);
        }
    }
    assert!(found > 200, "only {found} lookups found something");
    assert!(
        !held.answers().await?.is_empty(),
        "searches' answers are kept"
    );
    Ok(())
}

/// A registry with device 7's certificate, holding its certificates in memory, and its HKP app.
struct Held {
    p: Parties,
    r: Arc<Registry<SqliteStore>>,
    app: axum::Router,
    dev: pgp::composed::SignedPublicKey,
    fpr: String,
    id: DeviceId,
}

async fn held_with_a_device(dir: &std::path::Path) -> Result<Held> {
    let (p, r) = setup(dir, 1 << 20).await?;
    let (dev, fpr, id) = device(&p, 7)?;
    r.submit_certs(&cert::to_bytes(&dev)?, None, u64::from(AT) + 30)
        .await?;
    r.hold_public().await?;
    assert!(r.public_bytes() > 0);
    let app = custos_registry::http::app(r.clone());
    assert_eq!(certifications(&app, &fpr).await?, 1);
    Ok(Held {
        p,
        r,
        app,
        dev,
        fpr,
        id,
    })
}

#[tokio::test]
async fn held_certificates_follow_every_write() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let Held {
        p,
        r,
        app,
        dev,
        fpr,
        id,
    } = held_with_a_device(dir.path()).await?;
    let held = r.public_bytes();

    // A write of this process is served by the next lookup: the endorsement, and a new device by its words.
    r.submit_certs(&endorsed(&p, &dev)?, None, u64::from(AT) + 40)
        .await?;
    assert_eq!(certifications(&app, &fpr).await?, 2);
    let (late, late_fpr, late_id) = device(&p, 8)?;
    r.submit_certs(&cert::to_bytes(&late)?, None, u64::from(AT) + 50)
        .await?;
    let (status, index) = search(&app, &late_id).await?;
    assert_eq!(status, StatusCode::OK, "{index}");
    assert!(index.contains(&late_fpr), "{index}");
    assert!(r.public_bytes() > held, "the new certificate is held");

    // Another process's writes are served within CHECK_EVERY, also where a search's answer was kept.
    let by_words = format!("op=get&options=mr&search={late_id}");
    for _ in 0..2 {
        let (status, text) = hkp(&app, &by_words).await?;
        assert_eq!(status, StatusCode::OK, "{text}");
        assert_eq!(certifications_in(&text)?, 1);
    }
    let writer = open(dir.path(), &p, 0).await?;
    writer
        .submit_certs(&endorsed(&p, &late)?, None, u64::from(AT) + 60)
        .await?;
    let (other, other_fpr, other_id) = device(&p, 9)?;
    writer
        .submit_certs(&cert::to_bytes(&other)?, None, u64::from(AT) + 70)
        .await?;
    tokio::time::sleep(CHECK_EVERY + Duration::from_millis(100)).await;
    let (status, text) = hkp(&app, &by_words).await?;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(certifications_in(&text)?, 2);
    assert_eq!(certifications(&app, &late_fpr).await?, 2);
    let (status, index) = search(&app, &other_id).await?;
    assert_eq!(status, StatusCode::OK, "{index}");
    assert!(index.contains(&other_fpr), "{index}");
    // The first device still answers, unchanged, by every word of its User ID.
    let (status, index) = search(&app, &id).await?;
    assert_eq!(status, StatusCode::OK, "{index}");
    assert!(index.starts_with("info:1:1\n"), "{index}");
    Ok(())
}

#[tokio::test]
async fn certificates_that_do_not_fit_are_not_held() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (p, r) = setup(dir.path(), 4 << 10).await?;
    let mut fprs = Vec::new();
    for n in 10..20 {
        let (dev, fpr, _) = device(&p, n)?;
        r.submit_certs(&cert::to_bytes(&dev)?, None, u64::from(AT) + 30)
            .await?;
        fprs.push(fpr);
    }
    r.hold_public().await?;
    assert_eq!(r.public_bytes(), 0, "ten certificates are more than 4 KiB");
    let app = custos_registry::http::app(r.clone());
    for fpr in &fprs {
        assert_eq!(certifications(&app, fpr).await?, 1);
    }
    Ok(())
}

#[tokio::test]
async fn a_certificate_that_cannot_be_read_makes_the_store_answer() -> Result<()> {
    use custos_registry::registry::kind;
    use custos_store::{CertRow, NewLogEntry, RegistryStore};
    let dir = tempfile::tempdir()?;
    let Held {
        r, app, fpr, id, ..
    } = held_with_a_device(dir.path()).await?;

    // Another writer puts bytes that are no certificate in the log of a public domain, straight into the store.
    let store = SqliteStore::open(&dir.path().join("registry.db")).await?;
    let size = store.log_size().await?;
    let junk = b"not an OpenPGP certificate".to_vec();
    store
        .append_entry(
            &NewLogEntry {
                kind: kind::CERT,
                data: junk.clone(),
                leaf_hash: [7; 32],
                domain: "site".into(),
                added_at: i64::from(AT) + 40,
                cert: Some(CertRow {
                    fingerprint: [0xee; 20],
                    domain: "site".into(),
                    data: junk,
                    keys: vec![[0xee; 20]],
                    uids: vec!["junk <junk@example.org>".into()],
                    updated_at: i64::from(AT) + 40,
                }),
                statement: None,
            },
            size,
        )
        .await?;
    tokio::time::sleep(CHECK_EVERY + Duration::from_millis(100)).await;
    // The held certificates cannot catch up: they are dropped, and every lookup is answered from the store.
    assert_eq!(certifications(&app, &fpr).await?, 1);
    assert_eq!(r.public_bytes(), 0, "no longer held");
    let (status, index) = search(&app, &id).await?;
    assert_eq!(status, StatusCode::OK, "{index}");
    assert!(index.contains(&fpr), "{index}");
    Ok(())
}
