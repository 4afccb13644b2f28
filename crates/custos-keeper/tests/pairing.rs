//! The keeper pairs with a device through the hub's relay with the owner code and provisions its DPK epoch; the
//! device keeps only its frontier, seals readings, and an application the policy allows opens them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use custos_app::{Answer, App, Ask, decrypt_all};
use custos_device::Factory;
use custos_device::agent::Agent;
use custos_hub::serve::{ServeConfig, spawn};
use custos_keeper::{Handled, Keeper};
use custos_proto::{Epoch, Schedule, Span, Suite, TreeSpec, UnixTime};
use custos_store::{AnyStore, PendingAdmission, Store};
use custos_vault::{KdfParams, Unlock};
use rand_core::OsRng;

const PASS: Unlock<'static> = Unlock::Passphrase("pairing test");

fn wall() -> UnixTime {
    UnixTime::new(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

fn this_year() -> Span {
    let (y, ..) = wall().civil();
    Span::new(
        UnixTime::from_date(y, 1, 1).unwrap(),
        UnixTime::from_date(y + 1, 1, 1).unwrap(),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pair_provision_seal_and_share() {
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

    // A device made, admitted and joined.
    let made = Factory::make(&mut OsRng);
    let ddir = dir.path().join("device");
    made.write_state(&ddir).unwrap();
    let store = AnyStore::open(dir.path().join("hub/hub.db").to_str().unwrap())
        .await
        .unwrap();
    store
        .put_admission(&PendingAdmission {
            device: made.device,
            join_code: made.join_code,
            created_at: 0,
            expires_at: i64::MAX,
        })
        .await
        .unwrap();
    let mut agent = Agent::open(&ddir).unwrap();
    agent.join(&url, 0).await.unwrap();

    let kdir = dir.path().join("keeper");
    let mut keeper = Keeper::init(&kdir, PASS, KdfParams::new(256, 1, 1).unwrap()).unwrap();
    std::fs::write(
        kdir.join("policy.toml"),
        "default = \"deny\"\n[[rule]]\napp = \"dashboard\"\npurpose = \"*\"\naction = \"allow\"\nmax_days = 2\n",
    )
    .unwrap();
    let spec = TreeSpec::new(made.device, Epoch(1), Schedule::default(), this_year()).unwrap();

    // A wrong owner code: the device ignores the init, the keeper gives up, nothing is registered.
    let waiting = tokio::spawn(async move {
        let r = agent.await_pairing(wall(), Duration::from_secs(3)).await;
        (agent, r)
    });
    let mut wrong = made.owner_code;
    wrong[0] ^= 1;
    let err = keeper
        .pair(
            &url,
            spec,
            Suite::AES256GCM,
            &wrong,
            wall(),
            Duration::from_secs(2),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("did not answer"), "{err}");
    assert!(keeper.devices().is_empty());
    let (mut agent, r) = waiting.await.unwrap();
    assert!(r.is_err(), "the device paired with a wrong code");

    // The right code: paired and provisioned with the frontier, while someone posts junk to both mailboxes.
    // The device starts listening late, so the keeper meets the junk before the device's answer.
    let waiting = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(800)).await;
        let r = agent.await_pairing(wall(), Duration::from_secs(20)).await;
        (agent, r)
    });
    let junk = {
        let client = custos_client::HubClient::new(
            &url,
            Duration::from_secs(5),
            &custos_client::TlsTrust::System,
        )
        .unwrap();
        let device = made.device;
        tokio::spawn(async move {
            for i in 0..8u8 {
                tokio::time::sleep(Duration::from_millis(50)).await;
                let mut bytes = vec![0x22; 49];
                bytes[1] = i;
                for d in [
                    custos_client::Direction::ToKeeper,
                    custos_client::Direction::ToDevice,
                ] {
                    client.relay_send(device, d, &bytes).await.unwrap();
                }
            }
        })
    };
    let paired = keeper
        .pair(
            &url,
            spec,
            Suite::AES256GCM,
            &made.owner_code,
            wall(),
            Duration::from_secs(20),
        )
        .await
        .unwrap();
    junk.await.unwrap();
    let (mut agent, r) = waiting.await.unwrap();
    let (epoch, held) = r.unwrap();
    assert_eq!((paired.epoch, epoch), (1, 1));
    assert_eq!(held, paired.secrets);
    assert_eq!(keeper.devices()[&made.device.to_string()].len(), 1);

    // The device seals readings now; they go to the hub.
    for i in 0..5 {
        agent
            .seal(format!("reading {i}").as_bytes(), wall())
            .unwrap();
    }
    assert_eq!(agent.publish().await.unwrap().stored, 5);

    // An application the policy allows asks for today, and opens all five.
    let app = App::create(&dir.path().join("app"), "dashboard").unwrap();
    // Only once the user pins the name to this key does the rule naming "dashboard" apply.
    keeper.trust_app("dashboard", app.public_key()).unwrap();
    let (y, m, d, ..) = wall().civil();
    let today = Span::new(
        UnixTime::from_date(y, m, d).unwrap(),
        UnixTime::new(UnixTime::from_date(y, m, d).unwrap().secs() + 86_400).unwrap(),
    )
    .unwrap();
    let sent = app
        .request(
            &url,
            &Ask {
                owner: keeper.owner(),
                devices: vec![made.device],
                range: today,
                purpose: "display".into(),
                purpose_text: "Show today's readings".into(),
                retention: 3600,
                expires: UnixTime::new(wall().secs() + 3600).unwrap(),
            },
        )
        .await
        .unwrap();
    let report = keeper.sync(&url).await.unwrap();
    assert!(
        matches!(report.handled[0], Handled::Granted { nodes: 1, .. }),
        "{report:?}"
    );
    let Answer::Granted(trees) = app.wait(&sent.id, Duration::from_secs(5)).await.unwrap() else {
        panic!("not granted")
    };
    let records = app.fetch_records(&url, &trees[0], today).await.unwrap();
    assert_eq!(records.len(), 5);
    let opened = decrypt_all(&trees, &records);
    assert_eq!(opened.opened(), 5);
    let (_, first) = opened.iter().next().unwrap().unwrap();
    assert_eq!(first, b"reading 0");

    // Rotation: the next epoch is a fresh pairing; reusing epoch 1 is refused before anything is sent.
    assert!(
        keeper
            .pair(
                &url,
                spec,
                Suite::AES256GCM,
                &made.owner_code,
                wall(),
                Duration::from_secs(1)
            )
            .await
            .is_err()
    );
    store.close().await;
    hub.stop().await.unwrap();
}
