//! TPM operation latencies on swtpm (a private one on loopback): medians over repeated runs.
//!
//! `cargo bench -p custos-vault --bench tpm` (needs swtpm and libtss2-dev, like the tests).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

// Shared with the tests, which also restart it.
#[allow(dead_code)]
#[path = "../tests/swtpm/mod.rs"]
mod swtpm;

use std::time::{Duration, Instant};

use custos_proto::{Crypto, RustCrypto, Secret, Suite};
use custos_proto::{DeviceId, Epoch, NodeId, Schedule, Span, TreeSpec, UnixTime};
use custos_vault::{TpmSealer, TpmVault, Vault, wrap_hmac_key_for_tpm};
use tss_esapi::interface_types::algorithm::HashingAlgorithm;
use tss_esapi::interface_types::resource_handles::Hierarchy;
use tss_esapi::structures::MaxBuffer;
use tss_esapi::{Context, TctiNameConf};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn time<T>(n: usize, mut f: impl FnMut() -> T) -> Duration {
    median(
        (0..n)
            .map(|_| {
                let t = Instant::now();
                std::hint::black_box(f());
                t.elapsed()
            })
            .collect(),
    )
}

fn report(what: &str, d: Duration) {
    if d >= Duration::from_millis(1) {
        println!("{what:<56} {:>9.2} ms", d.as_secs_f64() * 1e3);
    } else {
        println!("{what:<56} {:>9.2} µs", d.as_secs_f64() * 1e6);
    }
}

fn main() {
    let n = 50;
    let dir = tempfile::tempdir().unwrap();
    let tpm = swtpm::Swtpm::start(dir.path());
    let tcti = tpm.tcti();
    println!("TPM 2.0 latencies on swtpm over loopback TCP, median of {n} runs");

    // The raw commands, through tss-esapi with password sessions.
    let mut ctx = Context::new(tcti.parse::<TctiNameConf>().unwrap()).unwrap();
    report(
        "CreatePrimary (ECC P-256 storage key)",
        time(n, || {
            let h = ctx
                .execute_with_nullauth_session(|c| {
                    c.create_primary(
                        Hierarchy::Owner,
                        custos_vault::tpm_storage_template().unwrap(),
                        None,
                        None,
                        None,
                        None,
                    )
                })
                .unwrap()
                .key_handle;
            ctx.flush_context(h.into()).unwrap();
        }),
    );
    let parent = ctx
        .execute_with_nullauth_session(|c| {
            c.create_primary(
                Hierarchy::Owner,
                custos_vault::tpm_storage_template().unwrap(),
                None,
                None,
                None,
                None,
            )
        })
        .unwrap()
        .key_handle;
    report(
        "Create (HMAC-SHA256 key under it)",
        time(n, || {
            ctx.execute_with_nullauth_session(|c| {
                c.create(
                    parent,
                    custos_vault::tpm_hmac_template().unwrap(),
                    None,
                    None,
                    None,
                    None,
                )
            })
            .unwrap()
        }),
    );
    let key = ctx
        .execute_with_nullauth_session(|c| {
            c.create(
                parent,
                custos_vault::tpm_hmac_template().unwrap(),
                None,
                None,
                None,
                None,
            )
        })
        .unwrap();
    report(
        "Load + FlushContext",
        time(n, || {
            let h = ctx
                .execute_with_nullauth_session(|c| {
                    c.load(parent, key.out_private.clone(), key.out_public.clone())
                })
                .unwrap();
            ctx.flush_context(h.into()).unwrap();
        }),
    );
    let h = ctx
        .execute_with_nullauth_session(|c| {
            c.load(parent, key.out_private.clone(), key.out_public.clone())
        })
        .unwrap();
    let msg = MaxBuffer::try_from(vec![7u8; 32]).unwrap();
    report(
        "HMAC (one command, key loaded)",
        time(n, || {
            ctx.execute_with_nullauth_session(|c| {
                c.hmac(h.into(), msg.clone(), HashingAlgorithm::Sha256)
            })
            .unwrap()
        }),
    );
    drop(ctx);

    // Through the vault: what the keeper pays per call (session encryption, load, op, flush).
    report(
        "TpmVault::create (connect, TPM-drawn M, seal seed)",
        time(10, || {
            let p = dir.path().join(format!(
                "v{}.json",
                rand_core::RngCore::next_u64(&mut rand_core::OsRng)
            ));
            TpmVault::create(&p, &tcti).unwrap()
        }),
    );
    let path = dir.path().join("vault.json");
    drop(TpmVault::create(&path, &tcti).unwrap());
    report(
        "TpmVault::open (connect, unseal check, load check)",
        time(10, || TpmVault::open(&path, &tcti).unwrap()),
    );
    let vault = TpmVault::open(&path, &tcti).unwrap();
    let span = Span::new(
        UnixTime::from_date(2026, 1, 1).unwrap(),
        UnixTime::from_date(2027, 1, 1).unwrap(),
    )
    .unwrap();
    let spec = TreeSpec::new(DeviceId([1; 8]), Epoch(1), Schedule::default(), span).unwrap();
    let leaf = spec
        .node_at(spec.leaf_depth(), UnixTime::from_date(2026, 6, 1).unwrap())
        .unwrap();
    report(
        "sign (unseal seed + Ed25519)",
        time(n, || vault.sign(b"grant").unwrap()),
    );
    report(
        "derive root (HMAC with M in the TPM)",
        time(n, || vault.derive(&spec, NodeId::ROOT).unwrap()),
    );
    report(
        "derive leaf (TPM HMAC + software path)",
        time(n, || vault.derive(&spec, leaf).unwrap()),
    );
    let sealed = vault.seal_state(b"ctx", &[1; 32]).unwrap();
    report(
        "open_state (state key by TPM HMAC + AES-GCM)",
        time(n, || vault.open_state(b"ctx", &sealed).unwrap()),
    );
    let sealer = TpmSealer::connect(&tcti).unwrap();
    report(
        "TpmSealer::seal (32 bytes)",
        time(n, || sealer.seal("custos/v1/device/sdk", &[3; 32]).unwrap()),
    );
    let blob = sealer.seal("custos/v1/device/sdk", &[3; 32]).unwrap();
    report(
        "TpmSealer::unseal (32 bytes)",
        time(n, || sealer.unseal("custos/v1/device/sdk", &blob).unwrap()),
    );

    // Delivering a key by TPM duplication, the blob built in software (no TPM at the sender).
    let parent = sealer.storage_public().unwrap();
    let key = [9u8; 32];
    report(
        "wrap_hmac_key_for_tpm (software: ECDH P-256, KDFs, CFB)",
        time(500, || {
            wrap_hmac_key_for_tpm(&parent, &key, &mut rand_core::OsRng).unwrap()
        }),
    );
    let blob = wrap_hmac_key_for_tpm(&parent, &key, &mut rand_core::OsRng).unwrap();
    println!(
        "{:<56} {:>9} B",
        "  import blob (TPM2B public + duplicate + seed)",
        blob.to_bytes().len()
    );
    report(
        "TpmSealer::import (TPM2_Import under the storage key)",
        time(n, || sealer.import(&blob).unwrap()),
    );
    let imported = sealer.import(&blob).unwrap();
    println!(
        "{:<56} {:>9} B",
        "  imported key as stored (0x01 + public + private)",
        imported.to_bytes().unwrap().len()
    );
    report(
        "TpmSealer::hmac with the imported key (load+HMAC)",
        time(n, || sealer.hmac(&imported, b"msg").unwrap()),
    );
    // The comparison: a TIES delivery's wrapping (wire.md §12), a per-message key and AES-256-GCM over 16 bytes.
    let k_dir = [4u8; 32];
    let aad = [0x48u8; 37];
    report(
        "TIES delivery wrap (HKDF-Expand + AES-256-GCM, 53 B)",
        time(500, || {
            let mut k = [0u8; 32];
            RustCrypto
                .hkdf_expand(&k_dir, &[b"custos/v1/ties/msg", &aad], &mut k)
                .unwrap();
            let aead = RustCrypto
                .aead_key(Suite::AES256GCM, &Secret::from_bytes(k))
                .unwrap();
            let mut seed = [5u8; 16];
            RustCrypto
                .aead_seal(&aead, &[0; 12], &aad, &mut seed)
                .unwrap()
        }),
    );

    ties_delivery(&sealer);
}

/// A device-to-device key delivered as the hub does it (docs/wire.md §12), plain against TPM duplication: the
/// hub's cost to build one recipient's package, its size, and the node's cost from the package to the session key.
fn ties_delivery(sealer: &TpmSealer) {
    use custos_proto::DeviceId;
    use custos_proto::ties::tpm::{MAX_TPM_PACKAGE, open_tpm_package};
    use custos_proto::ties::{KTC_DIRECT, NodeKeys, Request, Seed, open_package};

    let (n1, n2) = (DeviceId([1; 8]), DeviceId([2; 8]));
    let keys = NodeKeys::derive(&RustCrypto, &Secret::from_bytes([2; 32])).unwrap();
    let req = Request::new(KTC_DIRECT, n1, &[n2], [7; 8], u32::MAX).unwrap();
    let seed = Seed::from_bytes([9; 16]);
    let parent = sealer.storage_public().unwrap();
    println!("TIES delivery to one peer, plain against TPM duplication (KTC, two holders)");
    println!(
        "{:<56} {:>9} B",
        "  TPM parent registration (once per node)",
        1 + 2 + parent.len() + 16
    );
    let plain = req.package(&RustCrypto, n2, &keys, &seed).unwrap();
    let tpm_package = || {
        let prk = req.tpm_prk(&RustCrypto, &seed);
        let blob = wrap_hmac_key_for_tpm(&parent, prk.expose(), &mut rand_core::OsRng)
            .unwrap()
            .to_bytes();
        let mut out = vec![0u8; MAX_TPM_PACKAGE];
        let len = req
            .package_tpm(&RustCrypto, n2, &keys, &blob, &mut out)
            .unwrap();
        out.truncate(len);
        out
    };
    let tpm = tpm_package();
    println!(
        "{:<56} {:>9} B",
        "  plain delivery (0x48)",
        plain.as_bytes().len()
    );
    println!("{:<56} {:>9} B", "  TPM delivery (0x58)", tpm.len());
    report(
        "hub: build a plain delivery",
        time(2000, || req.package(&RustCrypto, n2, &keys, &seed).unwrap()),
    );
    report(
        "hub: build a TPM delivery (PRK, blob, envelope)",
        time(500, tpm_package),
    );
    report(
        "node: plain delivery to session key (software)",
        time(2000, || {
            open_package(&RustCrypto, n2, &keys, plain.as_bytes(), 0).unwrap()
        }),
    );
    report(
        "node: TPM delivery to session key (open, import, HMAC)",
        time(50, || {
            let mut m = tpm.clone();
            let p = open_tpm_package(&RustCrypto, n2, &keys, &mut m, 0).unwrap();
            let blob = custos_vault::TpmImportBlob::from_bytes(p.blob()).unwrap();
            let k = sealer.import(&blob).unwrap();
            let (msg, len) = p.hmac_input();
            let s = sealer.hmac(&k, &msg[..len]).unwrap();
            p.into_session_key(*s)
        }),
    );
}
