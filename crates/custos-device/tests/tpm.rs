//! Keys delivered by TPM duplication, end to end through a real hub on loopback, with the node's TPM a private
//! software TPM (swtpm; a missing swtpm fails these tests, it never skips them): a TPM node and a software node end
//! with the same key, in KTC and KDC, delivered directly and forwarded; and the attacker: a blob for another TPM,
//! an altered blob in an authentic envelope (a faulty or hostile hub), an altered envelope, an expired package,
//! a package replayed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

// custos-vault's private-swtpm helper; this test does not restart its TPMs.
#[allow(dead_code)]
#[path = "../../custos-vault/tests/swtpm/mod.rs"]
mod swtpm;

use std::time::Duration;

use custos_client::TlsTrust;
use custos_device::agent::AgentError;
use custos_device::ties::{KeyNode, Mode};
use custos_hub::serve::{HubTls, Running, ServeConfig, spawn};
use custos_proto::ties::tpm::MAX_TPM_PACKAGE;
use custos_proto::ties::{self, NodeKeys, Request, Seed, SessionKey};
use custos_proto::{DeviceId, RustCrypto, Secret};
use custos_store::{AnyStore, Store};
use custos_vault::{TpmSealer, wrap_hmac_key_for_tpm};
use swtpm::Swtpm;

const A: DeviceId = DeviceId([0x02, 0, 0x5e, 0x10, 0, 0, 0, 0xa1]);
const B: DeviceId = DeviceId([0x02, 0, 0x5e, 0x10, 0, 0, 0, 0xb2]);

fn sdk(d: DeviceId) -> Secret {
    Secret::from_bytes([d.0[7]; 32])
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

struct Net {
    _dir: tempfile::TempDir,
    hub: Running,
}

async fn net() -> Net {
    let dir = tempfile::tempdir().unwrap();
    let hub_dir = dir.path().join("hub");
    let hub = spawn(ServeConfig {
        registry: None,
        data_dir: hub_dir.clone(),
        listen: "127.0.0.1:0".parse().unwrap(),
        database: None,
        mqtt: None,
        accounts: Default::default(),
        limits: Default::default(),
        tls: HubTls::Plain,
    })
    .await
    .unwrap();
    let store = AnyStore::open(hub_dir.join("hub.db").to_str().unwrap())
        .await
        .unwrap();
    let at = now() as i64;
    for d in [A, B] {
        store
            .put_admission(&custos_store::PendingAdmission {
                device: d,
                join_code: [1; 16],
                created_at: at,
                expires_at: at + 600,
            })
            .await
            .unwrap();
        store
            .complete_admission(
                &custos_store::Device {
                    device: d,
                    static_key: [2; 32],
                    session_key: *sdk(d).expose(),
                    admitted_at: at,
                    revoked_at: None,
                    max_seq: -1,
                },
                at,
            )
            .await
            .unwrap();
    }
    Net { _dir: dir, hub }
}

fn node(n: &Net, d: DeviceId) -> KeyNode {
    KeyNode::new(
        &n.hub.url(),
        &TlsTrust::System,
        d,
        &sdk(d),
        Secret::from_bytes([d.0[7] ^ 0xff; 32]),
    )
    .unwrap()
}

/// Both hold the same key: a confirmation each way and a message go through.
fn same_key(a: SessionKey, a_id: DeviceId, b: SessionKey, b_id: DeviceId) {
    let c = RustCrypto;
    let t = now();
    assert_eq!((a.kid(), a.requester()), (b.kid(), b.requester()));
    let requester = a.requester();
    let mut la = a.link(a_id).unwrap();
    let mut lb = b.link(b_id).unwrap();
    // The requester confirms first.
    let (first, second, fid, sid) = if a_id == requester {
        (&mut la, &mut lb, a_id, b_id)
    } else {
        (&mut lb, &mut la, b_id, a_id)
    };
    let m = first.confirm_to(&c, sid, t).unwrap();
    let answer = second.accept_confirmation(&c, fid, &m, t).unwrap().unwrap();
    assert!(
        first
            .accept_confirmation(&c, sid, &answer, t)
            .unwrap()
            .is_none()
    );
    let mut out = [0u8; 64];
    let n = first.seal(&c, b"open the valve", &mut out, t).unwrap();
    assert_eq!(
        second.open(&c, fid, &mut out[..n], t).unwrap(),
        b"open the valve"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tpm_node_and_a_software_node_end_with_the_same_key() {
    let state = tempfile::tempdir().unwrap();
    let tpm = Swtpm::start(state.path());
    let n = net().await;
    let mut a = node(&n, A);
    let mut b = node(&n, B);
    b.register_tpm(TpmSealer::connect(&tpm.tcti()).unwrap())
        .await
        .unwrap();

    // KTC, delivered directly: B fetches a TPM delivery and its TPM computes the key A derived.
    let issued = a
        .request(Mode::KtcDirect, &[B], Duration::from_secs(3600), now())
        .await
        .unwrap();
    let got = b.fetch(Duration::from_secs(5), now()).await.unwrap();
    assert_eq!(got.len(), 1);
    same_key(issued.key, A, got.into_iter().next().unwrap(), B);

    // KDC, forwarded: B asks, its grant is opened in its TPM; A takes the plain delivery B forwards.
    let issued = b
        .request(Mode::KdcIndirect, &[A], Duration::from_secs(3600), now())
        .await
        .unwrap();
    let (to, pkg) = &issued.forward[0];
    assert_eq!(*to, A);
    assert_eq!(pkg[0], ties::DELIVERY);
    let theirs = a.accept(pkg, now()).await.unwrap();
    same_key(issued.key, B, theirs, A);

    // KTC forwarded to B: a TPM delivery; taken once, refused when replayed.
    let issued = a
        .request(Mode::KtcIndirect, &[B], Duration::from_secs(3600), now())
        .await
        .unwrap();
    let pkg = issued.forward[0].1.clone();
    assert_eq!(pkg[0], ties::tpm::TPM_DELIVERY);
    // After its expiry it is refused before the TPM sees it.
    let late = u64::from(issued.key.expires());
    assert!(matches!(
        b.accept(&pkg, late).await,
        Err(AgentError::Protocol(custos_proto::Error::Expired))
    ));
    // An altered envelope.
    let mut bad = pkg.clone();
    bad[40] ^= 1;
    assert!(matches!(
        b.accept(&bad, now()).await,
        Err(AgentError::Protocol(_))
    ));
    let theirs = b.accept(&pkg, now()).await.unwrap();
    same_key(issued.key, A, theirs, B);
    assert!(matches!(
        b.accept(&pkg, now()).await,
        Err(AgentError::Protocol(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_for_another_tpm_or_an_altered_blob_is_refused_by_the_tpm() {
    let s1 = tempfile::tempdir().unwrap();
    let s2 = tempfile::tempdir().unwrap();
    let tpm1 = Swtpm::start(s1.path());
    let tpm2 = Swtpm::start(s2.path());
    let n = net().await;
    let mut a = node(&n, A);
    let mut b = node(&n, B);
    b.register_tpm(TpmSealer::connect(&tpm1.tcti()).unwrap())
        .await
        .unwrap();
    let issued = a
        .request(Mode::KtcIndirect, &[B], Duration::from_secs(3600), now())
        .await
        .unwrap();
    let for_tpm1 = issued.forward[0].1.clone();

    // The same device (its keys stolen, say) with another TPM: the envelope opens, the import does not.
    let mut b2 = node(&n, B);
    b2.register_tpm(TpmSealer::connect(&tpm2.tcti()).unwrap())
        .await
        .unwrap();
    let e = b2.accept(&for_tpm1, now()).await.unwrap_err();
    assert!(
        matches!(e, AgentError::Protocol(custos_proto::Error::InvalidValue(m)) if m.contains("TPM refused")),
        "{e}"
    );

    // A hub that alters the blob inside an authentic envelope (the test plays it: it knows B's keys): refused by
    // the TPM, for every part of the blob (public area, duplicate, encrypted seed).
    let tpm2_public = TpmSealer::connect(&tpm2.tcti())
        .unwrap()
        .storage_public()
        .unwrap();
    let expires = (now() + 3600) as u32;
    for (i, at) in [10usize, 100, 200].into_iter().enumerate() {
        let req = Request::new(ties::KTC_INDIRECT, A, &[B], [i as u8 + 1; 8], expires).unwrap();
        let seed = Seed::from_bytes([7; 16]);
        let prk = req.tpm_prk(&RustCrypto, &seed);
        let mut blob = wrap_hmac_key_for_tpm(&tpm2_public, prk.expose(), &mut rand_core::OsRng)
            .unwrap()
            .to_bytes();
        blob[at] ^= 1;
        let keys = NodeKeys::derive(&RustCrypto, &sdk(B)).unwrap();
        let mut out = [0u8; MAX_TPM_PACKAGE];
        let len = req
            .package_tpm(&RustCrypto, B, &keys, &blob, &mut out)
            .unwrap();
        let e = b2.accept(&out[..len], now()).await.unwrap_err();
        assert!(matches!(e, AgentError::Protocol(_)), "byte {at}: {e}");
    }
    // The unaltered blob built the same way imports: the refusals above are the alteration's. The node opens it
    // (import and HMAC in the TPM) and only then sends its receipt, which the real hub refuses (404): it never
    // issued this key.
    let req = Request::new(ties::KTC_INDIRECT, A, &[B], [9; 8], expires).unwrap();
    let prk = req.tpm_prk(&RustCrypto, &Seed::from_bytes([7; 16]));
    let blob = wrap_hmac_key_for_tpm(&tpm2_public, prk.expose(), &mut rand_core::OsRng)
        .unwrap()
        .to_bytes();
    let keys = NodeKeys::derive(&RustCrypto, &sdk(B)).unwrap();
    let mut out = [0u8; MAX_TPM_PACKAGE];
    let len = req
        .package_tpm(&RustCrypto, B, &keys, &blob, &mut out)
        .unwrap();
    assert!(matches!(
        b2.accept(&out[..len], now()).await,
        Err(AgentError::Refused { status: 404, .. })
    ));

    // A node that registered no TPM refuses a TPM package rather than guess.
    let mut plain = node(&n, B);
    assert!(matches!(
        plain.accept(&for_tpm1, now()).await,
        Err(AgentError::Protocol(_))
    ));
}
