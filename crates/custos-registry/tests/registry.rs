//! The registry's rules, played by the parties and by attackers: who may write, which status wins, what the log
//! proves, and that a restart rebuilds the same log.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use anyhow::Result;
use custos_proto::translog::{self, VerifierKey};
use custos_proto::{DeviceId, Secret};
use custos_registry::cert::{self, Claims, Ed25519Key};
use custos_registry::policy::policy_toml;
use custos_registry::registry::{Entry, kind};
use custos_registry::statement::{Statement, Status};
use custos_registry::{Policy, Registry, RegistryError};
use custos_store::{RegistryStore, SqliteStore};

const AT: u32 = 1_780_000_000;
const NOW: u64 = AT as u64 + 1000;

struct Parties {
    maker: Ed25519Key,
    maint: Ed25519Key,
    dev: Ed25519Key,
    outsider: Ed25519Key,
}

fn parties() -> Parties {
    Parties {
        maker: Ed25519Key::from_seed(&[1; 32], AT).unwrap(),
        maint: Ed25519Key::from_seed(&[2; 32], AT).unwrap(),
        dev: Ed25519Key::from_seed(&[3; 32], AT).unwrap(),
        outsider: Ed25519Key::from_seed(&[4; 32], AT).unwrap(),
    }
}

fn policy(p: &Parties) -> Policy {
    Policy::parse(&policy_toml(
        "maintenance.test",
        "site",
        &[
            ("acme", &p.maker.fingerprint(), &["manufacturer"]),
            ("maint", &p.maint.fingerprint(), &["maintainer"]),
            ("devco", &p.dev.fingerprint(), &["developer"]),
            ("outsider", &p.outsider.fingerprint(), &["maintainer"]),
        ],
        &[
            ("site", &["*"], &["acme", "maint"]),
            ("firmware", &["*"], &["devco", "maint"]),
            ("elsewhere", &["outsider"], &["outsider"]),
        ],
    ))
    .unwrap()
}

async fn open(dir: &tempfile::TempDir, p: &Parties) -> Result<Registry<SqliteStore>> {
    let store = SqliteStore::open(&dir.path().join("r.db")).await?;
    Ok(Registry::open(store, policy(p), Secret::from_bytes([8; 32])).await?)
}

/// A registry with the parties' certificates and one manufacturer-certified device; returns the device's fingerprint.
async fn setup(r: &Registry<SqliteStore>, p: &Parties) -> Result<[u8; 20]> {
    for (k, uid) in [
        (&p.maker, "Acme"),
        (&p.maint, "Maint"),
        (&p.dev, "DevCo"),
        (&p.outsider, "Outsider"),
    ] {
        r.submit_certs(
            &cert::to_bytes(&cert::party_certificate(k, uid)?)?,
            None,
            NOW,
        )
        .await?;
    }
    let id = DeviceId([2, 0, 0, 0, 0, 0, 0, 1]);
    let identity = Ed25519Key::from_seed(&[7; 32], AT)?;
    let mut device = cert::device_certificate(&identity, id, [9; 32])?;
    let made = Claims {
        role: "manufacturer".into(),
        attributes: vec![("model".into(), "X".into())],
    };
    let sig = cert::certify(&p.maker, &device, &made, AT)?;
    device.details.users[0].signatures.push(sig);
    r.submit_certs(&cert::to_bytes(&device)?, Some("site"), NOW)
        .await?;
    Ok(identity.fingerprint())
}

fn status(by: &Ed25519Key, subject: &[u8], at: u64, s: Status, domain: &str) -> Vec<u8> {
    Statement::Status {
        signer: by.fingerprint(),
        subject: subject.to_vec(),
        issued_at: at,
        status: s,
        domain: domain.into(),
        note: String::new(),
    }
    .sign(by)
    .unwrap()
}

#[tokio::test]
async fn the_latest_status_by_an_authorized_party_wins_and_history_is_kept() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let p = parties();
    let r = open(&dir, &p).await?;
    let device = setup(&r, &p).await?;
    r.submit_statement(
        &status(&p.maint, &device, NOW - 100, Status::InUse, "site"),
        NOW,
    )
    .await?;
    r.submit_statement(
        &status(&p.maint, &device, NOW - 10, Status::Stolen, "site"),
        NOW,
    )
    .await?;
    // An older status arriving later does not win over a newer one.
    r.submit_statement(
        &status(&p.maker, &device, NOW - 50, Status::InUse, "site"),
        NOW,
    )
    .await?;
    let s = r.status(&device).await?;
    assert_eq!(s.history.len(), 3);
    assert!(matches!(
        s.current,
        Some((
            Statement::Status {
                status: Status::Stolen,
                ..
            },
            _
        ))
    ));
    assert!(
        r.has_status(&device, &[Status::Stolen, Status::Destroyed])
            .await?
    );
    Ok(())
}

#[tokio::test]
async fn forged_unauthorized_and_misdated_statuses_are_refused() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let p = parties();
    let r = open(&dir, &p).await?;
    let device = setup(&r, &p).await?;
    let size = r.size().await;
    // Signed by the outsider but naming the maintainer as signer: the signature does not verify.
    let forged = Statement::Status {
        signer: p.maint.fingerprint(),
        subject: device.to_vec(),
        issued_at: NOW,
        status: Status::Destroyed,
        domain: "site".into(),
        note: String::new(),
    };
    let mut bytes = forged.sign(&p.maint)?;
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    assert!(matches!(
        r.submit_statement(&bytes, NOW).await,
        Err(RegistryError::Statement(_))
    ));
    // A party of this registry, but not of the device's domain.
    let e = r
        .submit_statement(
            &status(&p.outsider, &device, NOW, Status::Stolen, "site"),
            NOW,
        )
        .await;
    assert!(matches!(e, Err(RegistryError::Refused(_))), "{e:?}");
    // Naming its own domain does not reach a device of another.
    let e = r
        .submit_statement(
            &status(&p.outsider, &device, NOW, Status::Stolen, "elsewhere"),
            NOW,
        )
        .await;
    assert!(matches!(e, Err(RegistryError::Refused(_))), "{e:?}");
    // Dated next week: it would win over every honest status until then.
    let e = r
        .submit_statement(
            &status(&p.maint, &device, NOW + 7 * 86_400, Status::InUse, "site"),
            NOW,
        )
        .await;
    assert!(matches!(e, Err(RegistryError::Refused(_))), "{e:?}");
    // About nothing the registry holds.
    let e = r
        .submit_statement(
            &status(&p.maint, &[0x55; 20], NOW, Status::Stolen, "site"),
            NOW,
        )
        .await;
    assert!(matches!(e, Err(RegistryError::NotFound(_))), "{e:?}");
    // A key the policy does not name at all.
    let nobody = Ed25519Key::from_seed(&[99; 32], AT)?;
    let e = r
        .submit_statement(&status(&nobody, &device, NOW, Status::Stolen, "site"), NOW)
        .await;
    assert!(matches!(e, Err(RegistryError::Refused(_))), "{e:?}");
    assert_eq!(r.size().await, size, "nothing refused was logged");
    assert!(r.status(&device).await?.current.is_none());
    Ok(())
}

#[tokio::test]
async fn code_identities_and_deprecation() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let p = parties();
    let r = open(&dir, &p).await?;
    setup(&r, &p).await?;
    let digest = [0xc0; 32];
    let code = |by: &Ed25519Key| {
        Statement::Code {
            signer: by.fingerprint(),
            digest,
            issued_at: NOW,
            name: "fw".into(),
            version: "1.0".into(),
            domain: "firmware".into(),
        }
        .sign(by)
        .unwrap()
    };
    // Only a developer may issue a code identity, even in a domain the maintainer may write.
    assert!(matches!(
        r.submit_statement(&code(&p.maint), NOW).await,
        Err(RegistryError::Refused(_))
    ));
    r.submit_statement(&code(&p.dev), NOW).await?;
    let ids = r.code_identities(&digest).await?;
    assert_eq!(ids.len(), 1);
    assert!(!r.has_status(&digest, &[Status::Deprecated]).await?);
    r.submit_statement(
        &status(&p.maint, &digest, NOW, Status::Deprecated, "firmware"),
        NOW,
    )
    .await?;
    assert!(r.has_status(&digest, &[Status::Deprecated]).await?);
    Ok(())
}

#[tokio::test]
async fn every_entry_is_provably_in_the_signed_log_and_a_restart_keeps_it() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let p = parties();
    let (note1, size1, note2, key) = {
        let r = open(&dir, &p).await?;
        setup(&r, &p).await?;
        let note1 = r.checkpoint().await?;
        let size1 = r.size().await;
        let device = r.store().log_entry(size1 - 1).await?.unwrap();
        let fpr = {
            let c = cert::check(cert::parse(&device.data)?)?;
            c.fingerprint
        };
        r.submit_statement(&status(&p.maint, &fpr, NOW, Status::InUse, "site"), NOW)
            .await?;
        // An endorsement of a known certificate is its own entry: the primary key, the User ID and the signature.
        let stored = r.cert(&fpr).await?.unwrap().0;
        let mut endorsed = stored.cert.clone();
        let sig = cert::certify(
            &p.maint,
            &endorsed,
            &Claims {
                role: "maintainer".into(),
                attributes: vec![],
            },
            AT,
        )?;
        endorsed.details.users[0].signatures.push(sig);
        let done = r
            .submit_certs(&cert::to_bytes(&endorsed)?, None, NOW)
            .await?;
        assert_eq!(done[0].entries.len(), 1);
        // Posting it again changes nothing.
        let again = r
            .submit_certs(&cert::to_bytes(&endorsed)?, None, NOW)
            .await?;
        assert!(again[0].entries.is_empty());
        // The endorsement's own log entry (primary key, User ID, signature: no self-signature) is taken by a
        // registry that holds the certificate, as sync delivers it.
        let entry = r.store().log_entry(done[0].entries[0]).await?.unwrap();
        let other = tempfile::tempdir()?;
        let peer = open(&other, &p).await?;
        setup(&peer, &p).await?;
        let took = peer.submit_certs(&entry.data, None, NOW).await?;
        assert_eq!(took[0].entries.len(), 1, "{took:?}");
        assert_eq!(peer.cert(&fpr).await?.unwrap().0.certifications.len(), 2);
        (note1, size1, r.checkpoint().await?, r.verifier_key()?)
    };
    let r = open(&dir, &p).await?;
    assert_eq!(r.checkpoint().await?, note2, "the same log after a restart");
    let verifier = VerifierKey::parse(&key)?;
    let old = verifier.open_checkpoint(note1.as_bytes())?;
    let new = verifier.open_checkpoint(note2.as_bytes())?;
    assert_eq!(old.size(), size1);
    let proof = r.consistency(old.size(), new.size()).await?;
    translog::verify_consistency(old.size(), new.size(), &proof, &old.root(), &new.root())?;
    for i in 0..new.size() {
        let e = r.store().log_entry(i).await?.unwrap();
        let bytes =
            custos_registry::registry::entry_bytes(e.kind, &e.domain, e.added_at as u64, &e.data);
        let decoded = Entry::decode(&bytes)?;
        assert!(decoded.kind == kind::CERT || decoded.kind == kind::STATEMENT);
        let proof = r.inclusion(i, new.size()).await?;
        translog::verify_inclusion(
            &translog::leaf_hash(&bytes),
            i,
            new.size(),
            &proof,
            &new.root(),
        )?;
        // The same proof does not place a changed entry.
        let mut changed = bytes.clone();
        let last = changed.len() - 1;
        changed[last] ^= 1;
        assert!(
            translog::verify_inclusion(
                &translog::leaf_hash(&changed),
                i,
                new.size(),
                &proof,
                &new.root()
            )
            .is_err()
        );
    }
    Ok(())
}
