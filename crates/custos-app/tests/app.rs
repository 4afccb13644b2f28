//! The application SDK against a real hub on loopback, with the keeper's side played by the protocol crate:
//! the application gets exactly its grant, and nothing the hub can do widens or redirects it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use custos_app::{Answer, App, Ask, decrypt_all};
use custos_hub::serve::{ServeConfig, spawn};
use custos_proto::sharing::{Denial, Grant, GrantedTree, SharingRequest};
use custos_proto::{
    Crypto, DeviceId, Epoch, MasterSecret, RustCrypto, Schedule, Secret, Span, Suite, TreeSpec,
    UnixTime,
};
use custos_store::{AnyStore, Device, NewRecord, Store};

const C: RustCrypto = RustCrypto;
const DEV: DeviceId = DeviceId([2, 0, 0x5e, 0x10, 0, 0, 0, 1]);
const OTHER: DeviceId = DeviceId([2, 0, 0x5e, 0x10, 0, 0, 0, 2]);
const KEEPER: u8 = 2;

fn day(d: u32) -> UnixTime {
    UnixTime::from_date(2026, 3, d).unwrap()
}

fn keeper() -> Secret {
    Secret::from_bytes([KEEPER; 32])
}

fn master() -> MasterSecret {
    MasterSecret::new(Secret::from_bytes([7; 32]))
}

fn spec(device: DeviceId) -> TreeSpec {
    let year = Span::new(
        UnixTime::from_date(2026, 1, 1).unwrap(),
        UnixTime::from_date(2027, 1, 1).unwrap(),
    )
    .unwrap();
    TreeSpec::new(device, Epoch(1), Schedule::default(), year).unwrap()
}

/// Hourly readings of March 1–21 for `device`, sealed as the device would, as the hub stores them.
fn records(device: DeviceId) -> Vec<NewRecord> {
    let spec = spec(device);
    let root = spec.root(&C, &master()).unwrap();
    (0..21 * 24u64)
        .map(|h| {
            let t = UnixTime::new(day(1).secs() + h * 3600).unwrap();
            let leaf = spec.leaf_at(t).unwrap();
            let key = spec.leaf_key(&C, &root, leaf, Suite::AES256GCM).unwrap();
            let text = format!("{t} 21.{h}");
            let mut body = vec![0u8; text.len() + custos_proto::record::OVERHEAD];
            key.seal(&C, h.to_be_bytes(), text.as_bytes(), &mut body)
                .unwrap();
            NewRecord {
                device,
                seq: h,
                epoch: 1,
                leaf,
                body,
                received_at: 0,
            }
        })
        .collect()
}

/// The keeper's side: verify the request and grant its range for the devices it names.
fn grant(signed: &[u8]) -> Vec<u8> {
    let v = SharingRequest::verify(&C, signed, wall_clock()).unwrap();
    let trees: Vec<_> = v
        .request
        .devices
        .iter()
        .map(|d| {
            let spec = spec(*d);
            let root = spec.root(&C, &master()).unwrap();
            let nodes = spec
                .cover(v.request.range)
                .unwrap()
                .map(|n| spec.derive(&C, &root, n).unwrap())
                .collect();
            GrantedTree { spec, nodes }
        })
        .collect();
    Grant::seal(
        &C,
        &v,
        &trees,
        day(1),
        &Secret::from_bytes([5; 32]),
        |tbs| C.ed25519_sign(&keeper(), tbs),
    )
    .unwrap()
}

fn wall_clock() -> UnixTime {
    UnixTime::new(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

async fn post(url: &str, body: Vec<u8>) -> u16 {
    custos_client::tls::http_client(reqwest::Client::builder(), &custos_client::TlsTrust::System)
        .unwrap()
        .post(url)
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_gets_exactly_its_week_and_the_hub_cannot_redirect_it() {
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
    let store = AnyStore::open(dir.path().join("hub/hub.db").to_str().unwrap())
        .await
        .unwrap();
    for d in [DEV, OTHER] {
        store
            .put_admission(&custos_store::PendingAdmission {
                device: d,
                join_code: [0; 16],
                created_at: 0,
                expires_at: i64::MAX,
            })
            .await
            .unwrap();
        store
            .complete_admission(
                &Device {
                    device: d,
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
        store.insert_records(&records(d)).await.unwrap();
    }

    let app = App::create(&dir.path().join("app"), "heating-optimizer").unwrap();
    assert!(
        App::create(&dir.path().join("app"), "again").is_err(),
        "an identity was replaced"
    );
    let week2 = Span::new(day(8), day(15)).unwrap();
    let ask = Ask {
        owner: C.ed25519_public(&keeper()),
        devices: vec![DEV],
        range: week2,
        purpose: "energy.optimization".into(),
        purpose_text: "Tune the heating curve".into(),
        retention: 86_400,
        expires: UnixTime::new(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs()
                + 7 * 86_400,
        )
        .unwrap(),
    };
    let sent = app.request(&hub.url(), &ask).await.unwrap();
    assert!(matches!(
        app.wait(&sent.id, Duration::from_millis(200)).await,
        Err(custos_app::AppError::NoAnswerYet)
    ));
    // The keeper answers while the application waits (after a restart: the reply key was kept on disk).
    let app = App::open(&dir.path().join("app")).unwrap();
    let answer = grant(&sent.signed);
    let url = format!("{}/v1/answers", hub.url());
    let poster = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        post(&url, answer).await
    });
    let Answer::Granted(trees) = app.wait(&sent.id, Duration::from_secs(20)).await.unwrap() else {
        panic!("expected a grant");
    };
    assert_eq!(poster.await.unwrap(), 201);
    assert_eq!(trees.len(), 1);
    assert_eq!(trees[0].nodes.len(), 1, "a week is one node");

    // The granted range's records: all 168 open.
    let mine = app
        .fetch_records(&hub.url(), &trees[0], week2)
        .await
        .unwrap();
    assert_eq!(mine.len(), 7 * 24);
    let opened = decrypt_all(&trees, &mine);
    assert_eq!((opened.len(), opened.opened()), (7 * 24, 7 * 24));
    let (_, first) = opened.iter().next().unwrap().unwrap();
    assert!(String::from_utf8_lossy(first).starts_with("2026-03-08"));
    // Everything the hub holds of both devices: only week 2 of DEV opens.
    let everything: Vec<Vec<u8>> = records(DEV)
        .into_iter()
        .chain(records(OTHER))
        .map(|r| r.body)
        .collect();
    let opened = decrypt_all(&trees, &everything);
    let ok = opened.iter().filter(|r| r.is_ok()).count();
    assert_eq!(ok, 7 * 24, "weeks 1 and 3, or the other device, opened");
    for (header, _) in opened.iter().flatten() {
        assert_eq!(header.device, DEV);
        let t = spec(DEV)
            .node_span(spec(DEV).leaf_node(header.leaf))
            .unwrap();
        assert!(week2.includes(t));
    }

    // Another application's request answered with this grant: the hub replaying it gains nothing.
    let other_app = App::create(&dir.path().join("other"), "ad-network").unwrap();
    let theirs = other_app.request(&hub.url(), &ask).await.unwrap();
    assert!(
        other_app
            .open_answer(&theirs.id, &grant(&sent.signed))
            .is_err()
    );
    // A denial from someone but the owner is refused; the owner's denial is read.
    let v = SharingRequest::verify(&C, &theirs.signed, wall_clock()).unwrap();
    let deny = |by: Secret| {
        Denial {
            request: v.id,
            issued_at: day(1),
            reason: "denied by policy rule 2".into(),
        }
        .sign(|tbs| C.ed25519_sign(&by, tbs))
        .unwrap()
    };
    assert!(
        other_app
            .open_answer(&theirs.id, &deny(Secret::from_bytes([9; 32])))
            .is_err()
    );
    assert_eq!(
        post(&format!("{}/v1/answers", hub.url()), deny(keeper())).await,
        201
    );
    match other_app
        .wait(&theirs.id, Duration::from_secs(5))
        .await
        .unwrap()
    {
        Answer::Denied(reason) => assert_eq!(reason, "denied by policy rule 2"),
        Answer::Granted(_) => panic!("a denial opened as a grant"),
    }
    assert!(matches!(
        app.wait(&"00".repeat(32), Duration::from_secs(1)).await,
        Err(custos_app::AppError::UnknownRequest(_))
    ));
    store.close().await;
    hub.stop().await.unwrap();
}
