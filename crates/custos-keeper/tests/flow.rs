//! The whole sharing flow on loopback: an application asks for two months, a week and a day while the keeper is
//! offline; the keeper comes back, its policy grants the week and denies the day, the user approves the two
//! months after a keeper restart; the application opens exactly what was granted.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::time::Duration;

use custos_app::{Answer, App, Ask, decrypt_all};
use custos_hub::serve::{ServeConfig, spawn};
use custos_keeper::{Handled, Keeper};
use custos_proto::{DeviceId, Epoch, RustCrypto, Schedule, Span, Suite, TreeSpec, UnixTime};
use custos_store::{AnyStore, Device, NewRecord, PendingAdmission, Store};
use custos_vault::{KdfParams, Unlock};

const DEV: DeviceId = DeviceId([2, 0, 0x5e, 0x10, 0, 0, 0, 1]);
const PASS: Unlock<'static> = Unlock::Passphrase("correct horse battery staple");

fn date(m: u32, d: u32) -> UnixTime {
    UnixTime::from_date(2026, m, d).unwrap()
}

fn span(a: UnixTime, b: UnixTime) -> Span {
    Span::new(a, b).unwrap()
}

fn wall() -> UnixTime {
    UnixTime::new(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

const POLICY: &str = r#"
default = "ask"

[[rule]]
app = "heating-optimizer"
purpose = "energy.*"
action = "allow"
max_days = 31

[[rule]]
purpose = "marketing.*"
action = "deny"
"#;

fn open_keeper(dir: &Path) -> Keeper {
    Keeper::open(dir, PASS).unwrap()
}

/// Six-hourly readings of March and April, sealed with what the keeper provisioned on January 1.
fn records(provision: &custos_proto::pairing::Provision) -> Vec<NewRecord> {
    let spec = *provision.tree();
    let mut out = Vec::new();
    let mut t = date(3, 1).secs();
    let mut seq = 0u64;
    while t < date(5, 1).secs() {
        let at = UnixTime::new(t).unwrap();
        let leaf = spec.leaf_at(at).unwrap();
        let holder = spec
            .holder(provision.nodes(), spec.leaf_node(leaf))
            .unwrap()
            .unwrap();
        let key = spec
            .leaf_key(&RustCrypto, holder, leaf, Suite::AES256GCM)
            .unwrap();
        let text = format!("{at} 21.5");
        let mut body = vec![0u8; text.len() + custos_proto::record::OVERHEAD];
        key.seal(&RustCrypto, seq.to_be_bytes(), text.as_bytes(), &mut body)
            .unwrap();
        out.push(NewRecord {
            device: DEV,
            seq,
            epoch: 1,
            leaf,
            body,
            received_at: 0,
        });
        seq += 1;
        t += 6 * 3600;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_keeper_policy_user_and_application() {
    let dir = tempfile::tempdir().unwrap();
    let hub = spawn(ServeConfig {
        registry: None,
        data_dir: dir.path().join("hub"),
        listen: "127.0.0.1:0".parse().unwrap(),
        database: None,
        mqtt: None,
        accounts: Default::default(),
        limits: Default::default(),
        // Plain HTTP on loopback: the TLS paths have their own tests (custos-hub tests/tls.rs, the CLI tests).
        tls: custos_hub::serve::HubTls::Plain,
    })
    .await
    .unwrap();
    let url = hub.url();

    // The keeper: a vault, a policy, one device provisioned for 2026 on January 1.
    let kdir = dir.path().join("keeper");
    let mut keeper = Keeper::init(&kdir, PASS, KdfParams::new(256, 1, 1).unwrap()).unwrap();
    std::fs::write(kdir.join("policy.toml"), POLICY).unwrap();
    #[cfg(unix)]
    for sub in ["", "pending", "outbox"] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(kdir.join(sub))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o700, "keeper directory `{sub}` is not owner-only");
    }
    let year = span(date(1, 1), UnixTime::from_date(2027, 1, 1).unwrap());
    let spec = TreeSpec::new(DEV, Epoch(1), Schedule::default(), year).unwrap();
    let provision = keeper
        .new_epoch(spec, Suite::AES256GCM, date(1, 1))
        .unwrap();
    assert!(
        keeper
            .new_epoch(spec, Suite::AES256GCM, date(1, 1))
            .is_err(),
        "a DPK epoch reused"
    );
    let owner = keeper.owner();
    drop(keeper); // offline from here

    // The device's records at the hub.
    let store = AnyStore::open(dir.path().join("hub/hub.db").to_str().unwrap())
        .await
        .unwrap();
    store
        .put_admission(&PendingAdmission {
            device: DEV,
            join_code: [0; 16],
            created_at: 0,
            expires_at: i64::MAX,
        })
        .await
        .unwrap();
    store
        .complete_admission(
            &Device {
                device: DEV,
                static_key: [1; 32],
                session_key: [2; 32],
                admitted_at: 0,
                revoked_at: None,
                max_seq: -1,
            },
            0,
        )
        .await
        .unwrap();
    let all = records(&provision);
    store.insert_records(&all).await.unwrap();
    let everything: Vec<Vec<u8>> = all.iter().map(|r| r.body.clone()).collect();

    // The application asks three times.
    let app = App::create(&dir.path().join("app"), "heating-optimizer").unwrap();
    let ask = |range: Span, purpose: &str| Ask {
        owner,
        devices: vec![DEV],
        range,
        purpose: purpose.into(),
        purpose_text: "Tune the heating curve to the room".into(),
        retention: 30 * 86_400,
        expires: UnixTime::new(wall().secs() + 7 * 86_400).unwrap(),
    };
    let months = span(date(3, 1), date(5, 1));
    let week2 = span(date(3, 8), date(3, 15));
    let day = span(date(4, 2), date(4, 3));
    let m = app
        .request(&url, &ask(months, "energy.optimization"))
        .await
        .unwrap();
    let w = app
        .request(&url, &ask(week2, "energy.optimization"))
        .await
        .unwrap();
    let d = app
        .request(&url, &ask(day, "marketing.profile"))
        .await
        .unwrap();

    // The keeper comes back: policy grants the week, denies the day, asks about 61 days. The user had installed
    // the application and pinned its name to its key; rules by name apply to that key only.
    let mut keeper = open_keeper(&kdir);
    keeper
        .trust_app("heating-optimizer", app.public_key())
        .unwrap();
    assert!(
        keeper.trust_app("heating-optimizer", [9; 32]).is_err(),
        "a pinned name moved to another key"
    );
    let report = keeper.sync(&url).await.unwrap();
    assert_eq!(report.handled.len(), 3, "{report:?}");
    assert!(report.handled.contains(&Handled::Granted {
        id: w.id.clone(),
        nodes: 1,
        by: "policy rule 1".into()
    }));
    assert!(
        report
            .handled
            .iter()
            .any(|h| matches!(h, Handled::Denied { id, .. } if *id == d.id))
    );
    assert!(report.handled.iter().any(
        |h| matches!(h, Handled::Asked { id, reason } if *id == m.id && reason.contains("61"))
    ));
    assert_eq!(report.delivered, 2);
    // A second sync asks nothing twice.
    assert!(keeper.sync(&url).await.unwrap().handled.is_empty());

    // The keeper restarts; the pending request is still there, and the user approves it.
    drop(keeper);
    let mut keeper = open_keeper(&kdir);
    let pending = keeper.pending(wall()).unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].id, m.id);
    assert_eq!(pending[0].known_as.as_deref(), Some("heating-optimizer"));
    let approved = keeper.approve(&m.id[..12], None, wall()).unwrap();
    assert_eq!(
        approved,
        Handled::Granted {
            id: m.id.clone(),
            nodes: 2,
            by: "user".into()
        }
    );
    assert!(keeper.pending(wall()).unwrap().is_empty());
    assert_eq!(keeper.sync(&url).await.unwrap().delivered, 1);

    // The application opens exactly what was granted.
    let Answer::Granted(week) = app.wait(&w.id, Duration::from_secs(5)).await.unwrap() else {
        panic!("week")
    };
    let opened = decrypt_all(&week, &everything);
    assert_eq!(opened.opened(), 7 * 4, "week 2 is 28 six-hourly readings");
    for (h, _) in opened.iter().flatten() {
        let s = spec.node_span(spec.leaf_node(h.leaf)).unwrap();
        assert!(week2.includes(s), "opened outside week 2");
    }
    let Answer::Granted(two) = app.wait(&m.id, Duration::from_secs(5)).await.unwrap() else {
        panic!("months")
    };
    assert_eq!(two[0].nodes.len(), 2, "two whole months are two secrets");
    assert_eq!(decrypt_all(&two, &everything).opened(), everything.len());
    match app.wait(&d.id, Duration::from_secs(5)).await.unwrap() {
        Answer::Denied(reason) => assert!(reason.contains("policy"), "{reason}"),
        Answer::Granted(_) => panic!("a denied request opened"),
    }

    // Every decision is in the signed, chained log.
    let log = keeper.log();
    assert_eq!(log.entries().len(), 3);
    let exported = log.export();
    assert_eq!(
        custos_keeper::consent::verify_export(&exported, &owner)
            .unwrap()
            .len(),
        3
    );

    // Replays and strangers get no answer.
    let again = keeper.consider(&w.signed, wall()).unwrap();
    assert!(
        matches!(again, Handled::Refused { ref reason, .. } if reason.contains("already decided")),
        "{again:?}"
    );
    let stranger = App::create(&dir.path().join("stranger"), "heating-optimizer").unwrap();
    let mut foreign = ask(week2, "energy.optimization");
    foreign.devices = vec![DeviceId([9; 8])];
    let f = stranger.request(&url, &foreign).await.unwrap();
    let r = keeper.consider(&f.signed, wall()).unwrap();
    assert!(
        matches!(r, Handled::Refused { ref reason, .. } if reason.contains("not one of this keeper's")),
        "{r:?}"
    );
    // An impostor using a pinned name is matched by key, not name: the policy does not allow it, it asks.
    let imp = stranger
        .request(&url, &ask(week2, "energy.optimization"))
        .await
        .unwrap();
    let r = keeper.consider(&imp.signed, wall()).unwrap();
    assert!(
        matches!(r, Handled::Asked { .. }),
        "an impostor was allowed by name: {r:?}"
    );

    store.close().await;
    hub.stop().await.unwrap();
}

/// Without a hub: ranges are rounded inward and clipped, never widened; the user cannot grant outside the
/// request; a crash between logging a decision and queueing its answer loses nothing.
#[test]
fn ranges_never_widen_and_a_crash_loses_no_answer() {
    use custos_proto::sharing::{Grant, SharingRequest, statement_id};
    use custos_proto::{Crypto, Secret};

    let dir = tempfile::tempdir().unwrap();
    let kdir = dir.path().join("keeper");
    let keeper = Keeper::init(&kdir, PASS, KdfParams::new(256, 1, 1).unwrap()).unwrap();
    std::fs::write(kdir.join("policy.toml"), "default = \"allow\"\n").unwrap();
    drop(keeper);
    let mut keeper = open_keeper(&kdir);
    let year = span(date(1, 1), UnixTime::from_date(2027, 1, 1).unwrap());
    let spec = TreeSpec::new(DEV, Epoch(1), Schedule::default(), year).unwrap();
    keeper
        .new_epoch(spec, Suite::AES256GCM, date(1, 1))
        .unwrap();

    let c = RustCrypto;
    let app = Secret::from_bytes([4; 32]);
    let reply = Secret::from_bytes([5; 32]);
    let owner = keeper.owner();
    let request = |range: Span, nonce: u8| {
        SharingRequest {
            app_key: c.ed25519_public(&app),
            app_name: "tester".into(),
            owner,
            devices: vec![DEV],
            range,
            purpose: "test".into(),
            purpose_text: "test".into(),
            retention: 1,
            reply_key: c.x25519_public(&reply),
            nonce: [nonce; 16],
            expires: UnixTime::new(wall().secs() + 3600).unwrap(),
        }
        .sign(|tbs| c.ed25519_sign(&app, tbs))
        .unwrap()
    };

    // Noon March 8 to noon March 15: only the six whole days in between are granted.
    let odd = span(
        UnixTime::new(date(3, 8).secs() + 43_200).unwrap(),
        UnixTime::new(date(3, 15).secs() + 43_200).unwrap(),
    );
    let signed = request(odd, 1);
    let id = hex::encode(statement_id(&signed));
    assert!(matches!(
        keeper.consider(&signed, wall()).unwrap(),
        Handled::Granted { .. }
    ));
    let answer = std::fs::read(kdir.join("outbox").join(format!("{id}.cose"))).unwrap();
    let v = SharingRequest::verify(&c, &signed, wall()).unwrap();
    let trees = Grant::open(&c, &answer, &owner, &v, &reply).unwrap();
    let (mut from, mut until) = (u64::MAX, 0);
    for n in &trees[0].nodes {
        let s = trees[0].spec.node_span(n.node()).unwrap();
        from = from.min(s.start().secs());
        until = until.max(s.end().secs());
    }
    assert_eq!((from, until), (date(3, 9).secs(), date(3, 15).secs()));

    // A crash after the decision was logged but before its answer was queued: the answer is queued on reopen.
    let queued = kdir.join("outbox").join(format!("{id}.cose"));
    let staged = kdir.join("outbox").join(format!("{id}.staged"));
    std::fs::rename(&queued, &staged).unwrap();
    // And a crash before an answer was logged: that answer is dropped (the request will be considered again).
    let unlogged = kdir
        .join("outbox")
        .join(format!("{}.staged", "ab".repeat(32)));
    std::fs::write(&unlogged, b"answer that never was").unwrap();
    drop(keeper);
    let keeper = open_keeper(&kdir);
    assert!(
        queued.exists() && !staged.exists(),
        "a logged answer was lost"
    );
    assert!(
        !unlogged.exists(),
        "an answer without its log entry was kept"
    );

    // A rule naming an application applies only to the key the user pinned that name to: whoever signs first
    // under the name (the hub, say) gets asked about, not allowed.
    std::fs::write(
        kdir.join("policy.toml"),
        "default = \"ask\"\n[[rule]]\napp = \"tester\"\npurpose = \"*\"\naction = \"allow\"\n",
    )
    .unwrap();
    drop(keeper);
    let mut keeper = open_keeper(&kdir);
    let claimed = request(span(date(3, 2), date(3, 3)), 3);
    assert!(matches!(
        keeper.consider(&claimed, wall()).unwrap(),
        Handled::Asked { .. }
    ));
    keeper.trust_app("tester", c.ed25519_public(&app)).unwrap();
    let pinned = request(span(date(3, 3), date(3, 4)), 4);
    assert!(matches!(
        keeper.consider(&pinned, wall()).unwrap(),
        Handled::Granted { .. }
    ));

    // The user cannot approve more than was asked.
    std::fs::write(kdir.join("policy.toml"), "default = \"ask\"\n").unwrap();
    drop(keeper);
    let mut keeper = open_keeper(&kdir);
    let week = span(date(3, 8), date(3, 15));
    let asked = request(week, 2);
    assert!(matches!(
        keeper.consider(&asked, wall()).unwrap(),
        Handled::Asked { .. }
    ));
    let aid = hex::encode(statement_id(&asked));
    let wider = span(date(3, 1), date(3, 15));
    assert!(keeper.approve(&aid, Some(wider), wall()).is_err());
    let narrower = span(date(3, 9), date(3, 10));
    assert!(matches!(
        keeper.approve(&aid, Some(narrower), wall()).unwrap(),
        Handled::Granted { nodes: 1, .. }
    ));
}
