//! HKP lookups against the keyserver to beat, Debian's SKS, in one run (docs/benchmarks.md, "Registry: HKP lookups
//! against sks").
//!
//! - **The certificates**: N device certificates (`CUSTOS_HKP_CERTS`, default 2 000) made as the registry's tests
//!   make them (an Ed25519 identity key derived from the device's X25519 admission secret, its X25519 key as an
//!   encryption subkey, certified by the manufacturer with `role`, `model` and `lot` notations), and the
//!   manufacturer's party certificate; all from fixed seeds, so every run serves the same bytes.
//! - **Ours**: `custos_registry::Registry` on SQLite in a temporary directory, the certificates submitted through
//!   `submit_certs` (checked, logged), served by `custos_registry::http::app` behind `custos_hub::serve::serve_router`
//!   on a current-thread runtime of its own thread: what `custos registry serve` runs.
//! - **SKS**: Debian's `sks` (1.1.6) with a throwaway basedir on 127.0.0.1 (no membership, no gossip, no mail
//!   sync), loaded with the same certificates as a keydump (`sks build`, `sks cleandb`, `sks pbuild`, as
//!   `/usr/lib/sks/sks_build.sh` does), then `sks db` (its HKP server) until the end of the run; killed on exit.
//! - **The load**: K clients (1 and 16), each a thread of this process with one blocking HTTP/1.1 connection: a
//!   lookup is a `write` and the `read`s of the answer, so that the client's own CPU per lookup (which one client's
//!   rate includes whole) stays well below either server's (hyper's client on a tokio runtime cost 124–152 µs per
//!   lookup, more than our server):
//!   - `get`: loops of `GET /pks/lookup?op=get&options=mr&search=0x<fingerprint>` on keep-alive connections, the
//!     fingerprints drawn at random from the N. Our registry holds every public certificate in memory
//!     (`custos_registry::public`, read after loading, as `custos registry serve` does at start); with
//!     `CUSTOS_HKP_HOLD=0` it does not, and keeps every HKP answer it served in memory until the log takes a
//!     certificate (`custos_registry::answers`), so after the first pass these are hits;
//!   - `fresh`: the same with a new connection per lookup. SKS answers in HTTP/1.0 and closes every connection,
//!     so its figures are that in both rows;
//!   - `cold`: every certificate asked for once, in a shuffled order, ours' round starting with an empty answer
//!     cache (`Registry::forget_answers`, what logging a certificate does): first lookups. With the certificates
//!     held they are answered from memory as any other; with `CUSTOS_HKP_HOLD=0` every one reads the store, as it
//!     would just after a write, or in a registry of many certificates each rarely asked for;
//!   - `index`: `op=index&options=mr&search=<device id>` (a whole-word search over User IDs, ours and SKS's),
//!     device ids drawn at random (hits, as for `get`);
//!   - `index-cold`: the same, every device id once, ours' answer cache emptied first (with `CUSTOS_HKP_HOLD=0`,
//!     every search reads the store's word index).
//!
//!   Every answer must be 200 and hold an armoured certificate (an index: the fingerprint asked for), or the bench
//!   exits non-zero. Before the timed rounds every certificate is fetched once from each server, parsed and
//!   checked (the right key, with the manufacturer's certification), and found alone by an index search, through
//!   hyper's client: both servers' answers are read by a full HTTP implementation too.
//! - Rounds of `CUSTOS_HKP_SECONDS` (default 3 s; a `cold` round is one pass), `CUSTOS_HKP_ROUNDS` of them
//!   (default 5), the servers alternating within each round; the medians of the rates, of the server's CPU time
//!   per lookup (SKS: its process; ours: this process minus the client threads) and of the client's, and the CPU
//!   the rest of the machine used meanwhile (a build beside the bench shows there).
//! - **Where ours spends it**: before serving, each step of a lookup timed alone in process, without HTTP.
//!
//! Needs `sks` (Debian: `apt-get install -y sks`); fails with a message if it is missing or does not start. It
//! never skips, and never contacts anything but 127.0.0.1.
//!
//! Run: `cargo bench -p custos-registry --bench hkp`; `-- get` (or `fresh`, `cold`, `index`, `index-cold`) runs only those
//! lookups; `CUSTOS_HKP_CERTS=10000 cargo bench ...` for more certificates.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use custos_proto::DeviceId;
use custos_registry::answers::Ask;
use custos_registry::cert::{self, Claims, Ed25519Key};
use custos_registry::policy::policy_toml;
use custos_registry::{Policy, Registry};

/// Creation time of every key (part of the fingerprints).
const AT: u32 = 1_780_000_000;
const DEFAULT_CERTS: usize = 2_000;
const DEFAULT_ROUNDS: usize = 5;
const DEFAULT_SECONDS: f64 = 3.0;
/// Concurrent clients of the two columns.
const CONCURRENCY: [usize; 2] = [1, 16];
/// Worker threads of the runtime that fetches and checks every certificate before the rounds (hyper's client).
const CLIENT_THREADS: usize = 1;
const CLIENT_THREAD_NAME: &str = "hkp-client";
/// Clients fewer than this poll their sockets for the answer rather than sleep in `read` (this leaves a core to
/// the server, which runs on one thread, ours as SKS). On the VM the benches ran on, waking a sleeping reader cost
/// the writer more CPU than either server's whole lookup (`_raw_spin_unlock_irqrestore` under `sock_def_readable`
/// was a third of our server's samples): with a sleeping client, one client's rate measured the hypervisor's wake-up
/// more than the server. More clients than cores sleep, or they would take the cores from the servers.
const SPIN_BELOW: usize = 2;
const ARMOR: &str = "BEGIN PGP PUBLIC KEY BLOCK";

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v} is not a valid value")),
        Err(_) => default,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

// ---- the certificates ----------------------------------------------------------------------------------------------

/// A device id whose printed form (`e5-05-00-00-xx-yy-zz-ww`) has, in its last four bytes, a value no other device
/// uses in any position, so that SKS's word search (it splits User IDs on non-alphanumerics and intersects the
/// words' key sets) finds exactly one certificate for it, as ours does. Bytes 4..8 encode `i` in
/// base 48, one digit per byte, each position in a range of its own (0x10.., 0x40.., 0x70.., 0xa0..0xcf), none
/// of them equal to the fixed bytes e5, 05 or 00.
fn device_id(i: usize) -> DeviceId {
    assert!(i < 48usize.pow(4), "at most 48^4 devices");
    let digit = |k: u32| ((i / 48usize.pow(k)) % 48) as u8;
    DeviceId([
        0xe5,
        0x05,
        0x00,
        0x00,
        0x10 + digit(3),
        0x40 + digit(2),
        0x70 + digit(1),
        0xa0 + digit(0),
    ])
}

struct Device {
    /// Upper-case hex fingerprint.
    fpr: String,
    /// The device id as printed in its User ID: what the index search asks for.
    id: String,
    /// The certificate, binary.
    bytes: Vec<u8>,
}

struct Certs {
    maker: Ed25519Key,
    /// The manufacturer's party certificate, binary.
    party: Vec<u8>,
    devices: Vec<Device>,
}

fn make_certs(n: usize) -> Certs {
    let maker = Ed25519Key::from_seed(&[1; 32], AT).unwrap();
    let party =
        cert::to_bytes(&cert::party_certificate(&maker, "Acme Sensors (manufacturer)").unwrap())
            .unwrap();
    let devices = (0..n)
        .map(|i| {
            let id = device_id(i);
            let mut secret = [0x5d; 32];
            secret[..8].copy_from_slice(&(i as u64).to_be_bytes());
            let static_public =
                x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(secret)).to_bytes();
            let identity =
                Ed25519Key::from_seed(&cert::device_identity_seed(&secret, id), AT).unwrap();
            let mut device = cert::device_certificate(&identity, id, static_public).unwrap();
            let made = Claims {
                role: "manufacturer".into(),
                attributes: vec![
                    ("model".into(), "TH-1".into()),
                    ("lot".into(), format!("2026-{:02}", i % 52 + 1)),
                ],
            };
            let sig = cert::certify(&maker, &device, &made, AT + 10).unwrap();
            device.details.users[0].signatures.push(sig);
            Device {
                fpr: hex::encode_upper(identity.fingerprint()),
                id: id.to_string(),
                bytes: cert::to_bytes(&device).unwrap(),
            }
        })
        .collect();
    Certs {
        maker,
        party,
        devices,
    }
}

// ---- ours ----------------------------------------------------------------------------------------------------------

fn policy(maker: &Ed25519Key) -> Policy {
    Policy::parse(&policy_toml(
        "bench.test",
        "site",
        &[("acme", &maker.fingerprint(), &["manufacturer"])],
        &[("site", &["*"], &["acme"])],
    ))
    .unwrap()
}

/// Our registry, serving on its own thread; stopped on drop.
struct Ours {
    url: String,
    /// The registry served, to empty its answer cache before a cold round.
    registry: Arc<Registry<custos_store::SqliteStore>>,
    /// Steps of a lookup timed alone, in process: (what, µs per call).
    parts: Vec<(&'static str, f64)>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Ours {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn start_ours(certs: &Certs, hold: bool) -> Ours {
    let policy = policy(&certs.maker);
    let party = certs.party.clone();
    let devices: Vec<Vec<u8>> = certs.devices.iter().map(|d| d.bytes.clone()).collect();
    let keys: Vec<(Vec<u8>, String)> = certs
        .devices
        .iter()
        .map(|d| (hex::decode(&d.fpr).unwrap(), d.id.clone()))
        .collect();
    type Ready = Result<
        (
            String,
            Duration,
            Vec<(&'static str, f64)>,
            Arc<Registry<custos_store::SqliteStore>>,
        ),
        String,
    >;
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Ready>();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("registry".into())
        .spawn(move || {
            // `custos registry serve` runs on a current-thread runtime (crates/custos-cli/src/keeper.rs, `runtime`).
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let setup = async {
                    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
                    let store = custos_store::SqliteStore::open(&dir.path().join("registry.db"))
                        .await
                        .map_err(|e| e.to_string())?;
                    let registry =
                        Registry::open(store, policy, custos_proto::Secret::from_bytes([9; 32]))
                            .await
                            .map_err(|e| e.to_string())?;
                    let t0 = Instant::now();
                    let now = u64::from(AT) + 100;
                    registry
                        .submit_certs(&party, None, now)
                        .await
                        .map_err(|e| format!("party certificate: {e}"))?;
                    for (i, d) in devices.iter().enumerate() {
                        let done = registry
                            .submit_certs(d, None, now)
                            .await
                            .map_err(|e| format!("device certificate {i}: {e}"))?;
                        if done.len() != 1 || done[0].dropped != 0 || done[0].entries.len() != 1 {
                            return Err(format!(
                                "device certificate {i} not taken whole: {done:?}"
                            ));
                        }
                    }
                    let loaded = t0.elapsed();
                    let mut parts = breakdown(&registry, &keys).await?;
                    if hold {
                        // What `custos registry serve` does in the background at start.
                        let t = Instant::now();
                        registry.hold_public().await.map_err(|e| e.to_string())?;
                        if registry.public_bytes() == 0 {
                            return Err("the certificates did not fit the default budget".into());
                        }
                        parts.push((
                            "`Registry::hold_public` (every certificate read into memory), ms in all",
                            t.elapsed().as_secs_f64() * 1e3,
                        ));
                        parts.push((
                            "held certificates, bytes in all",
                            registry.public_bytes() as f64,
                        ));
                        parts.extend(held_breakdown(&registry, &keys).await?);
                    }
                    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                        .await
                        .map_err(|e| e.to_string())?;
                    let url = format!(
                        "http://{}",
                        listener.local_addr().map_err(|e| e.to_string())?
                    );
                    Ok::<_, String>((dir, Arc::new(registry), listener, url, loaded, parts))
                };
                match setup.await {
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                    Ok((dir, registry, listener, url, loaded, parts)) => {
                        let _ = ready_tx.send(Ok((url, loaded, parts, registry.clone())));
                        let limits = custos_hub::serve::Limits {
                            shutdown_grace: Duration::from_secs(1),
                            ..Default::default()
                        };
                        custos_hub::serve::serve_router(
                            listener,
                            custos_registry::http::app(registry),
                            &limits,
                            async {
                                let _ = stop_rx.await;
                            },
                        )
                        .await;
                        drop(dir);
                    }
                }
            });
        })
        .unwrap();
    let (url, loaded, parts, registry) = ready_rx
        .recv()
        .expect("the registry thread ended")
        .unwrap_or_else(|e| panic!("our registry did not start: {e}"));
    println!(
        "  ours: {} certificates submitted in {:.1} s; serving on {url}",
        certs.devices.len() + 1,
        loaded.as_secs_f64()
    );
    Ours {
        url,
        registry,
        parts,
        stop: Some(stop_tx),
        thread: Some(thread),
    }
}

/// Where a lookup's time goes inside the registry, without HTTP: each step the handler takes (crates/
/// custos-registry/src/http.rs, `lookup` and `find`) timed alone on the server's current-thread runtime, over the
/// certificates in order; µs per call, the median of 3 passes.
async fn breakdown<S: custos_store::RegistryStore>(
    r: &Registry<S>,
    keys: &[(Vec<u8>, String)],
) -> Result<Vec<(&'static str, f64)>, String> {
    const PASSES: usize = 3;
    // The index's query scans; a few hundred calls are enough.
    const INDEX_CALLS: usize = 200;
    let store = r.store();
    let mut rows = Vec::new();
    for (fpr, _) in keys {
        let row = store
            .cert_by_key(fpr)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("a stored certificate is missing")?;
        rows.push(row.data);
    }
    let us = |t: Instant, calls: usize| t.elapsed().as_secs_f64() * 1e6 / calls as f64;
    let (mut by_key, mut data_by_key, mut armor, mut by_uid, mut check, mut hit) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    for _ in 0..PASSES {
        let t = Instant::now();
        for (fpr, _) in keys {
            std::hint::black_box(store.cert_by_key(fpr).await.map_err(|e| e.to_string())?);
        }
        by_key.push(us(t, keys.len()));
        let t = Instant::now();
        for (fpr, _) in keys {
            std::hint::black_box(
                store
                    .cert_data_by_key(fpr)
                    .await
                    .map_err(|e| e.to_string())?,
            );
        }
        data_by_key.push(us(t, keys.len()));
        let t = Instant::now();
        for data in &rows {
            std::hint::black_box(cert::armor_bytes(data).map_err(|e| e.to_string())?);
        }
        armor.push(us(t, rows.len()));
        // What `op=get` asks first: the answer from memory (filled here as a miss fills it).
        let answers = r.answers().await.map_err(|e| e.to_string())?;
        for ((fpr, _), data) in keys.iter().zip(&rows) {
            if let Err(miss) = answers.get(Ask::Key(fpr)) {
                let text = cert::armor_bytes(data).map_err(|e| e.to_string())?;
                answers.put(Ask::Key(fpr), miss, text.into());
            }
        }
        let t = Instant::now();
        for (fpr, _) in keys {
            std::hint::black_box(
                r.answers()
                    .await
                    .map_err(|e| e.to_string())?
                    .get(Ask::Key(fpr))
                    .ok(),
            );
        }
        hit.push(us(t, keys.len()));
        r.forget_answers();
        let t = Instant::now();
        for data in &rows {
            std::hint::black_box(cert::stored(data).map_err(|e| e.to_string())?);
        }
        check.push(us(t, rows.len()));
        let calls = keys.len().min(INDEX_CALLS);
        let t = Instant::now();
        for (_, id) in &keys[..calls] {
            let found = store
                .certs_by_words(id, custos_registry::http::MAX_INDEX)
                .await
                .map_err(|e| e.to_string())?;
            if found.len() != 1 {
                return Err(format!("certs_by_words({id}) found {}", found.len()));
            }
        }
        by_uid.push(us(t, calls));
    }
    Ok(vec![
        (
            "`store.cert_by_key` (the whole certificate row with its keys and User IDs; not on the HKP path)",
            median(by_key),
        ),
        (
            "`store.cert_data_by_key` (get, a miss: the one-row SQL query, through sqlx's worker thread)",
            median(data_by_key),
        ),
        (
            "`cert::armor_bytes` (get: the stored bytes armoured)",
            median(armor),
        ),
        (
            "`Registry::answers` + `Answers::get`, a hit (get: the armour from memory)",
            median(hit),
        ),
        (
            "`store.certs_by_words` (index: the whole-word SQL search)",
            median(by_uid),
        ),
        (
            "`cert::stored` (index: per certificate found, read without verifying again)",
            median(check),
        ),
    ])
}

/// The held certificates' lookups, in process: µs per call, the median of 3 passes.
async fn held_breakdown<S: custos_store::RegistryStore>(
    r: &Registry<S>,
    keys: &[(Vec<u8>, String)],
) -> Result<Vec<(&'static str, f64)>, String> {
    let us = |t: Instant, calls: usize| t.elapsed().as_secs_f64() * 1e6 / calls as f64;
    let (mut by_key, mut by_words) = (vec![], vec![]);
    for _ in 0..3 {
        let t = Instant::now();
        for (fpr, _) in keys {
            let public = r.public().await;
            let found = public.by_key(fpr).ok_or("not held")?;
            std::hint::black_box(found.ok_or("a held certificate is missing")?);
        }
        by_key.push(us(t, keys.len()));
        let t = Instant::now();
        for (_, id) in keys {
            let public = r.public().await;
            let found = public
                .by_words(id, custos_registry::http::MAX_INDEX as usize)
                .ok_or("not held")?;
            if found.len() != 1 {
                return Err(format!("by_words({id}) found {}", found.len()));
            }
        }
        by_words.push(us(t, keys.len()));
    }
    Ok(vec![
        (
            "`Registry::public` + `Public::by_key` (get: the held certificate's armour)",
            median(by_key),
        ),
        (
            "`Registry::public` + `Public::by_words` (index: the held certificates holding every word)",
            median(by_words),
        ),
    ])
}

// ---- SKS -----------------------------------------------------------------------------------------------------------

fn sks_path() -> PathBuf {
    for p in [
        "/usr/sbin/sks",
        "/usr/bin/sks",
        "/usr/local/sbin/sks",
        "/usr/local/bin/sks",
    ] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    panic!(
        "`sks` is missing: install it (Debian: apt-get install -y sks); this benchmark does not skip"
    )
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `sks db`'s process group, killed on drop; its basedir removed.
struct Sks {
    child: Child,
    url: String,
    version: String,
    dir: tempfile::TempDir,
}

impl Drop for Sks {
    fn drop(&mut self) {
        let pgid = self.child.id();
        let _ = Command::new("kill")
            .args(["-TERM", "--", &format!("-{pgid}")])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if !matches!(self.child.try_wait(), Ok(Some(_))) {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{pgid}")])
                .status();
            let _ = self.child.wait();
        }
    }
}

impl Sks {
    fn pid(&self) -> u32 {
        self.child.id()
    }
}

fn sks_run(sks: &Path, dir: &Path, args: &[&str]) -> Result<(), String> {
    let out = Command::new(sks)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("sks {}: {e}", args.join(" ")))?;
    if !out.status.success() {
        return Err(format!(
            "sks {} failed ({}):\n{}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

fn start_sks(certs: &Certs) -> Result<Sks, String> {
    let sks = sks_path();
    let version = Command::new(&sks)
        .arg("version")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or_default()
                .trim()
                .to_owned()
        })
        .unwrap_or_default();
    let dir = tempfile::Builder::new()
        .prefix("custos-sks-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let base = dir.path();
    let (hkp_port, recon_port) = loop {
        let (a, b) = (free_port(), free_port());
        if a != b {
            break (a, b);
        }
    };
    // Debian's sks has its paths built in (/etc/sks/sksconf, /var/lib/sks/DB, /var/lib/sks/PTree,
    // /var/lib/sks/dump, /var/log/sks, its command socket in /var/run/sks) and puts `-basedir` in front of every one of them: every call below
    // passes it, so nothing outside the temporary directory is read or written.
    let b = base.display().to_string();
    let (etc, lib) = (base.join("etc/sks"), base.join("var/lib/sks"));
    for d in [
        etc.clone(),
        lib.join("dump"),
        base.join("var/log/sks"),
        base.join("var/run/sks"),
    ] {
        std::fs::create_dir_all(d).map_err(|e| e.to_string())?;
    }
    // A standalone server: loopback only, nobody to gossip or mail with. The page sizes are Debian's
    // /etc/sks/sksconf; like Debian's setup (sks-db-setup), no DB_CONFIG: sks sizes its Berkeley DB cache itself,
    // and the whole database (a few MB) stays in memory.
    std::fs::write(
        etc.join("sksconf"),
        format!(
            "hostname: localhost\nhkp_address: 127.0.0.1\nhkp_port: {hkp_port}\nrecon_address: 127.0.0.1\n\
             recon_port: {recon_port}\ndisable_mailsync:\ndontgossip:\ndebuglevel: 3\npagesize: 16\n\
             ptree_pagesize: 16\n"
        ),
    )
    .map_err(|e| e.to_string())?;
    std::fs::write(etc.join("membership"), "").map_err(|e| e.to_string())?;
    std::fs::write(etc.join("mailsync"), "").map_err(|e| e.to_string())?;
    // The keydump: the certificates, binary, concatenated.
    let mut dump = certs.party.clone();
    for d in &certs.devices {
        dump.extend_from_slice(&d.bytes);
    }
    let dump_file = lib.join("dump/0000.pgp");
    std::fs::write(&dump_file, dump).map_err(|e| e.to_string())?;
    let dump_file = dump_file.display().to_string();
    // What /usr/lib/sks/sks_build.sh does (`--normal`): build, cleandb (tried twice), pbuild.
    let t0 = Instant::now();
    sks_run(
        &sks,
        base,
        &[
            "build", "-basedir", &b, &dump_file, "-n", "10", "-cache", "100",
        ],
    )?;
    if sks_run(&sks, base, &["cleandb", "-basedir", &b]).is_err() {
        sks_run(&sks, base, &["cleandb", "-basedir", &b])?;
    }
    sks_run(
        &sks,
        base,
        &[
            "pbuild",
            "-basedir",
            &b,
            "-cache",
            "20",
            "-ptree_cache",
            "70",
        ],
    )?;
    let loaded = t0.elapsed();
    let log = std::fs::File::create(base.join("db.stdout")).map_err(|e| e.to_string())?;
    // As Debian's sks.service runs it: `sks -stdoutlog db`.
    let child = Command::new(&sks)
        .args(["-stdoutlog", "db", "-basedir", &b])
        .current_dir(base)
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .map_err(|e| format!("start sks db: {e}"))?;
    let url = format!("http://127.0.0.1:{hkp_port}");
    let mut server = Sks {
        child,
        url,
        version,
        dir,
    };
    // Wait until it answers.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(Some(status)) = server.child.try_wait() {
            return Err(format!(
                "sks db exited ({status}):\n{}",
                std::fs::read_to_string(server.dir.path().join("db.stdout")).unwrap_or_default()
            ));
        }
        if http_status(&format!("127.0.0.1:{hkp_port}"), "/pks/lookup?op=stats") == Some(200) {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "sks db did not answer on 127.0.0.1:{hkp_port} within 60 s:\n{}",
                std::fs::read_to_string(server.dir.path().join("db.stdout")).unwrap_or_default()
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    println!(
        "  sks: {} certificates built (build, cleandb, pbuild) in {:.1} s; serving on {}",
        certs.devices.len() + 1,
        loaded.as_secs_f64(),
        server.url
    );
    Ok(server)
}

/// The status of a plain HTTP/1.0 GET, without any client library (the readiness probe).
fn http_status(addr: &str, path: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let mut s =
        std::net::TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .ok()?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

// ---- CPU time ------------------------------------------------------------------------------------------------------

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// (comm, utime + stime in ticks) of a `/proc/.../stat` file.
fn stat_ticks(path: &Path) -> Option<(String, u64)> {
    let text = std::fs::read_to_string(path).ok()?;
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text[open + 1..close].to_owned();
    let fields: Vec<&str> = text[close + 2..].split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some((comm, ticks))
}

/// CPU ticks of the client threads of rounds that ended (their own count, taken as each ended).
static ENDED_CLIENT_TICKS: AtomicU64 = AtomicU64::new(0);

/// CPU ticks of this process's client threads, running and ended.
fn client_ticks() -> u64 {
    let mut sum = ENDED_CLIENT_TICKS.load(Ordering::Relaxed);
    if let Ok(dir) = std::fs::read_dir("/proc/self/task") {
        for t in dir.flatten() {
            if let Some((comm, ticks)) = stat_ticks(&t.path().join("stat"))
                && comm.starts_with(CLIENT_THREAD_NAME)
            {
                sum += ticks;
            }
        }
    }
    sum
}

/// CPU ticks the whole machine spent on anything but this process and SKS (other users' builds, say; and time
/// the hypervisor stole), from `/proc/stat`.
fn other_ticks(sks: u32) -> u64 {
    let busy = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|t| {
            let line = t.lines().find(|l| l.starts_with("cpu "))?.to_owned();
            let f: Vec<u64> = line
                .split_whitespace()
                .skip(1)
                .filter_map(|x| x.parse().ok())
                .collect();
            // user nice system idle iowait irq softirq steal
            Some(f.first()? + f.get(1)? + f.get(2)? + f.get(5)? + f.get(6)? + f.get(7)?)
        })
        .unwrap_or(0);
    let mine = stat_ticks(Path::new("/proc/self/stat")).map_or(0, |(_, t)| t);
    let theirs = stat_ticks(&PathBuf::from(format!("/proc/{sks}/stat"))).map_or(0, |(_, t)| t);
    busy.saturating_sub(mine + theirs)
}

/// CPU ticks the server under test spent so far.
#[derive(Clone, Copy)]
enum Server {
    Ours,
    Sks(u32),
}

fn server_ticks(s: Server) -> u64 {
    match s {
        Server::Ours => {
            stat_ticks(Path::new("/proc/self/stat")).map_or(0, |(_, t)| t) - client_ticks()
        }
        Server::Sks(pid) => {
            stat_ticks(&PathBuf::from(format!("/proc/{pid}/stat"))).map_or(0, |(_, t)| t)
        }
    }
}

// ---- the load ------------------------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq)]
enum Op {
    /// `op=get` by fingerprint on keep-alive connections.
    Get,
    /// The same on a new connection per lookup: how SKS serves every request (HTTP/1.0, no keep-alive), and how
    /// a one-shot client (`gpg --recv-keys`) asks.
    GetFresh,
    /// `op=get` on keep-alive connections, every certificate asked for once, ours' answer cache emptied first:
    /// it misses every time, as just after a write, or in a registry whose certificates are many and each rarely
    /// asked for.
    GetCold,
    /// `op=index` by device id on keep-alive connections.
    Index,
    /// The same, every device id once, ours' answer cache emptied first.
    IndexCold,
}

impl Op {
    /// Every key once, ours' answer cache emptied first.
    fn cold(self) -> bool {
        matches!(self, Op::GetCold | Op::IndexCold)
    }
}

struct Load {
    /// (fingerprint, device id) of every device.
    keys: Arc<Vec<(String, String)>>,
    /// SKS's process, whose CPU time is not "other load".
    sks_pid: u32,
    failures: Arc<AtomicU64>,
    first_failure: Arc<Mutex<Option<String>>>,
}

impl Load {
    fn fail(&self, what: String) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_failure.lock().unwrap();
        if first.is_none() {
            *first = Some(what);
        }
    }
}

fn request_path(op: Op, fpr: &str, id: &str) -> String {
    match op {
        Op::Get | Op::GetFresh | Op::GetCold => {
            format!("/pks/lookup?op=get&options=mr&search=0x{fpr}")
        }
        Op::Index | Op::IndexCold => format!("/pks/lookup?op=index&options=mr&search={id}"),
    }
}

/// One client's connection to a server: hyper's HTTP/1.1 connection API, with no pool, proxy or redirect logic, so
/// that the client costs less CPU per lookup than the servers it measures. It fetches and checks every
/// certificate before the timed rounds. A connection the server closed (SKS closes every one) is opened again.
struct Conn {
    addr: std::net::SocketAddr,
    sender:
        Option<hyper::client::conn::http1::SendRequest<http_body_util::Empty<hyper::body::Bytes>>>,
}

/// The address of a server's `http://IP:PORT` base URL.
fn socket_addr(base: &str) -> std::net::SocketAddr {
    base.trim_start_matches("http://")
        .parse()
        .unwrap_or_else(|e| panic!("{base}: {e}"))
}

impl Conn {
    fn new(base: &str) -> Self {
        Self {
            addr: socket_addr(base),
            sender: None,
        }
    }

    async fn connect(
        &self,
    ) -> Result<
        hyper::client::conn::http1::SendRequest<http_body_util::Empty<hyper::body::Bytes>>,
        String,
    > {
        let tcp = tokio::net::TcpStream::connect(self.addr)
            .await
            .map_err(|e| format!("{}: {e}", self.addr))?;
        tcp.set_nodelay(true).map_err(|e| e.to_string())?;
        let (sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
                .await
                .map_err(|e| format!("{}: {e}", self.addr))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }

    /// GET `path`: the status and the body.
    async fn get(&mut self, path: &str) -> Result<(u16, String), String> {
        use http_body_util::BodyExt as _;
        let mut reused = self.sender.take();
        if let Some(s) = reused.as_mut()
            && s.ready().await.is_err()
        {
            reused = None;
        }
        let was_reused = reused.is_some();
        let mut sender = match reused {
            Some(s) => s,
            None => self.connect().await?,
        };
        let request = || {
            hyper::Request::get(path)
                .header(hyper::header::HOST, self.addr.to_string())
                .body(http_body_util::Empty::new())
                .map_err(|e| e.to_string())
        };
        let response = match sender.send_request(request()?).await {
            Ok(r) => r,
            // The server closed a kept connection as the request went out: once more, on a new one.
            Err(_) if was_reused => {
                sender = self.connect().await?;
                sender
                    .send_request(request()?)
                    .await
                    .map_err(|e| format!("{}{path}: {e}", self.addr))?
            }
            Err(e) => return Err(format!("{}{path}: {e}", self.addr)),
        };
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("{}{path}: {e}", self.addr))?
            .to_bytes();
        self.sender = Some(sender);
        let body =
            String::from_utf8(body.to_vec()).map_err(|e| format!("{}{path}: {e}", self.addr))?;
        Ok((status, body))
    }
}

/// One lookup, checked: the body if it succeeded, else why not.
async fn lookup(conn: &mut Conn, op: Op, fpr: &str, id: &str) -> Result<String, String> {
    let path = request_path(op, fpr, id);
    let url = format!("{}{path}", conn.addr);
    let (status, body) = conn.get(&path).await?;
    if status != 200 {
        return Err(format!(
            "{url}: {status} {}",
            body.chars().take(200).collect::<String>()
        ));
    }
    if !answers(op, body.as_bytes(), fpr) {
        return Err(format!(
            "{url}: 200 without the answer: {}",
            body.chars().take(300).collect::<String>()
        ));
    }
    Ok(body)
}

/// Whether `body` answers a lookup of `op` for `fpr`: an armoured certificate, or an index listing the
/// fingerprint (in either case).
fn answers(op: Op, body: &[u8], fpr: &str) -> bool {
    match op {
        Op::Get | Op::GetFresh | Op::GetCold => {
            body.windows(ARMOR.len()).any(|w| w == ARMOR.as_bytes())
        }
        Op::Index | Op::IndexCold => body
            .windows(fpr.len())
            .any(|w| w.eq_ignore_ascii_case(fpr.as_bytes())),
    }
}

/// xorshift64*: the next pseudo-random number of the stream `x`.
fn next_random(x: &mut u64) -> u64 {
    *x ^= *x >> 12;
    *x ^= *x << 25;
    *x ^= *x >> 27;
    x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11
}

/// The timed rounds' client: one blocking HTTP/1.1 connection on a thread of its own. A lookup is one `write` of
/// the request and the `read`s of its answer, with no event loop between the client and the kernel, so that the
/// client's own cost per lookup (which one client's rate includes whole) stays far below either server's. It
/// understands what both servers send: a `Content-Length` body (ours, kept alive) or a body to the end of the
/// connection (SKS answers in HTTP/1.0 and closes). hyper's client (`Conn`) fetches and checks every certificate
/// before the rounds, so both servers' answers are also read by a full HTTP implementation.
struct Blocking {
    addr: std::net::SocketAddr,
    keep_alive: bool,
    /// Waits for the answer by polling a non-blocking socket instead of sleeping in `read`, see [`SPIN_BELOW`].
    spin: bool,
    stream: Option<std::net::TcpStream>,
    /// The request bytes and the answer, reused from lookup to lookup.
    request: Vec<u8>,
    buf: Vec<u8>,
}

/// Where a received answer's body starts and how long it is (`None`: until the connection ends), and whether the
/// connection may be used again.
struct Head {
    status: u16,
    body_at: usize,
    length: Option<usize>,
    reusable: bool,
}

/// Parses the status line and headers of `buf`, if they are all there.
fn parse_head(buf: &[u8]) -> Result<Option<Head>, String> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..end]).map_err(|e| format!("answer head: {e}"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    let status = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("not an HTTP status line: {status_line:?}"))?;
    let mut length = None;
    let mut reusable = version == "HTTP/1.1";
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Err(format!("not a header: {line:?}"));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(
                value
                    .parse()
                    .map_err(|_| format!("bad Content-Length {value:?}"))?,
            );
        } else if name.eq_ignore_ascii_case("connection") && value.eq_ignore_ascii_case("close") {
            reusable = false;
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(format!(
                "the bench client reads no Transfer-Encoding ({value})"
            ));
        }
    }
    Ok(Some(Head {
        status,
        body_at: end + 4,
        length,
        reusable: reusable && length.is_some(),
    }))
}

impl Blocking {
    fn new(base: &str, keep_alive: bool, spin: bool) -> Self {
        let addr = socket_addr(base);
        Self {
            addr,
            keep_alive,
            spin,
            stream: None,
            request: Vec::with_capacity(256),
            buf: Vec::with_capacity(8192),
        }
    }

    fn connect(&self) -> Result<std::net::TcpStream, String> {
        let tcp =
            std::net::TcpStream::connect(self.addr).map_err(|e| format!("{}: {e}", self.addr))?;
        tcp.set_nodelay(true).map_err(|e| e.to_string())?;
        // A server that stops answering fails the bench instead of hanging it.
        tcp.set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(|e| e.to_string())?;
        tcp.set_nonblocking(self.spin).map_err(|e| e.to_string())?;
        Ok(tcp)
    }

    /// `read`, or, spinning, polls until there is something to read (at most 30 s, as the blocking timeout).
    fn read(&self, tcp: &mut std::net::TcpStream, into: &mut [u8]) -> std::io::Result<usize> {
        use std::io::Read as _;
        let since = Instant::now();
        loop {
            match tcp.read(into) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && self.spin => {
                    if since.elapsed() > Duration::from_secs(30) {
                        return Err(std::io::ErrorKind::TimedOut.into());
                    }
                    std::hint::spin_loop();
                }
                r => return r,
            }
        }
    }

    /// Sends the request on `tcp` and reads the answer into `self.buf`: its head, or `None` if the connection
    /// ended before any byte of an answer (a kept connection the server had closed).
    fn exchange(&mut self, tcp: &mut std::net::TcpStream) -> Result<Option<Head>, String> {
        use std::io::Write as _;
        let e = |e: std::io::Error| format!("{}: {e}", self.addr);
        if let Err(err) = tcp.write_all(&self.request) {
            return if matches!(
                err.kind(),
                std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
            ) {
                Ok(None)
            } else {
                Err(e(err))
            };
        }
        self.buf.clear();
        let mut chunk = [0u8; 16 * 1024];
        let head = loop {
            let n = match self.read(tcp, &mut chunk) {
                Ok(n) => n,
                Err(err)
                    if err.kind() == std::io::ErrorKind::ConnectionReset && self.buf.is_empty() =>
                {
                    0
                }
                Err(err) => return Err(e(err)),
            };
            if n == 0 {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                return Err(format!(
                    "{}: the connection ended inside an answer's head",
                    self.addr
                ));
            }
            self.buf.extend_from_slice(&chunk[..n]);
            if let Some(head) = parse_head(&self.buf)? {
                break head;
            }
            if self.buf.len() > 64 * 1024 {
                return Err(format!("{}: an answer head over 64 KiB", self.addr));
            }
        };
        let want = head.length.map(|l| head.body_at + l);
        loop {
            if want.is_some_and(|w| self.buf.len() >= w) {
                break;
            }
            let n = self.read(tcp, &mut chunk).map_err(e)?;
            if n == 0 {
                if want.is_some() {
                    return Err(format!(
                        "{}: the connection ended inside an answer's body",
                        self.addr
                    ));
                }
                break;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
        if want.is_some_and(|w| self.buf.len() != w) {
            return Err(format!(
                "{}: more bytes than the answer's Content-Length",
                self.addr
            ));
        }
        Ok(Some(head))
    }

    /// GET `path`: the status and the body (in `self.buf`, from the returned offset).
    fn get(&mut self, path: &str) -> Result<(u16, usize), String> {
        use std::io::Write as _;
        self.request.clear();
        write!(
            self.request,
            "GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n",
            self.addr
        )
        .map_err(|e| e.to_string())?;
        let reused = self.stream.take();
        let was_reused = reused.is_some();
        let mut tcp = match reused {
            Some(s) => s,
            None => self.connect()?,
        };
        let head = match self.exchange(&mut tcp)? {
            Some(h) => h,
            // The server closed a kept connection: once more, on a new one.
            None if was_reused => {
                tcp = self.connect()?;
                self.exchange(&mut tcp)?.ok_or_else(|| {
                    format!("{}{path}: the connection ended with no answer", self.addr)
                })?
            }
            None => {
                return Err(format!(
                    "{}{path}: the connection ended with no answer",
                    self.addr
                ));
            }
        };
        if self.keep_alive && head.reusable {
            self.stream = Some(tcp);
        }
        Ok((head.status, head.body_at))
    }

    /// One lookup, checked as [`lookup`] checks it.
    fn lookup(&mut self, op: Op, fpr: &str, id: &str) -> Result<(), String> {
        let path = request_path(op, fpr, id);
        let (status, at) = self.get(&path)?;
        let body = &self.buf[at..];
        if status == 200 && answers(op, body, fpr) {
            return Ok(());
        }
        Err(format!(
            "{}{path}: {status} without the answer: {}",
            self.addr,
            String::from_utf8_lossy(&body[..body.len().min(300)])
        ))
    }
}

/// One round: lookups per second, server CPU µs per lookup, the rest of the machine's load in cores, client CPU
/// µs per lookup. `clients` threads loop for `seconds`; for a cold op, until every certificate was asked for once,
/// in an order shuffled by `seed`.
fn round(
    load: &Load,
    base: &str,
    server: Server,
    op: Op,
    clients: usize,
    seconds: f64,
    seed: u64,
) -> (f64, f64, f64, f64) {
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let ticks0 = server_ticks(server);
    let others0 = other_ticks(load.sks_pid);
    let client0 = client_ticks();
    let cold = op.cold();
    let order: Arc<Vec<usize>> = Arc::new(if cold {
        let mut order: Vec<usize> = (0..load.keys.len()).collect();
        let mut x = seed | 1;
        for i in (1..order.len()).rev() {
            order.swap(i, next_random(&mut x) as usize % (i + 1));
        }
        order
    } else {
        Vec::new()
    });
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let t0 = Instant::now();
    let mut threads = Vec::new();
    for c in 0..clients {
        let (order, next) = (order.clone(), next.clone());
        let mut conn = Blocking::new(base, op != Op::GetFresh, clients < SPIN_BELOW);
        let (keys, done) = (load.keys.clone(), done.clone());
        let failures = (load.failures.clone(), load.first_failure.clone());
        let thread = std::thread::Builder::new()
            .name(format!("{CLIENT_THREAD_NAME}-{c}"))
            .spawn(move || {
                // xorshift64*, a stream of its own per client and round.
                let mut x = seed ^ ((c as u64 + 1) * 0x9E37_79B9_7F4A_7C15);
                loop {
                    let pick = if cold {
                        match order.get(next.fetch_add(1, Ordering::Relaxed)) {
                            Some(&i) => i,
                            None => break,
                        }
                    } else if Instant::now() < deadline {
                        next_random(&mut x) as usize % keys.len()
                    } else {
                        break;
                    };
                    let (fpr, id) = &keys[pick];
                    match conn.lookup(op, fpr, id) {
                        Ok(()) => {
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => {
                            failures.0.fetch_add(1, Ordering::Relaxed);
                            let mut first = failures.1.lock().unwrap();
                            if first.is_none() {
                                *first = Some(e);
                            }
                        }
                    }
                }
                // Counted before the thread ends and its CPU time leaves `/proc/self/task`.
                let mine = stat_ticks(Path::new("/proc/thread-self/stat")).map_or(0, |(_, t)| t);
                ENDED_CLIENT_TICKS.fetch_add(mine, Ordering::Relaxed);
            })
            .unwrap();
        threads.push(thread);
    }
    for t in threads {
        if t.join().is_err() {
            load.fail("a client thread panicked".into());
        }
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let ticks = server_ticks(server).saturating_sub(ticks0);
    let others = other_ticks(load.sks_pid).saturating_sub(others0);
    let client = client_ticks().saturating_sub(client0);
    let n = done.load(Ordering::Relaxed);
    let cpu_us = if n == 0 {
        f64::NAN
    } else {
        ticks as f64 / clock_ticks_cached() * 1e6 / n as f64
    };
    (
        n as f64 / elapsed,
        cpu_us,
        others as f64 / clock_ticks_cached() / elapsed,
        client as f64 / clock_ticks_cached() * 1e6 / n.max(1) as f64,
    )
}

fn clock_ticks_cached() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(clock_ticks)
}

/// Fetches every certificate once from `base` and checks it: the fingerprint asked for, the manufacturer's
/// certification on it, and an index by its device id that lists it alone. Returns the number of failures.
async fn verify_all(load: &Load, base: &str, maker: &[u8; 20], name: &str) -> usize {
    let mut bad = 0;
    let keys = load.keys.clone();
    // 8 at a time, in order.
    for chunk in keys.chunks(8) {
        let answers = futures_join(chunk.iter().map(|(fpr, id)| {
            let mut conn = Conn::new(base);
            let (fpr, id) = (fpr.clone(), id.clone());
            tokio::spawn(async move {
                let body = lookup(&mut conn, Op::Get, &fpr, &id).await?;
                let c =
                    cert::check(cert::parse(body.as_bytes()).map_err(|e| format!("{fpr}: {e}"))?)
                        .map_err(|e| format!("{fpr}: {e}"))?;
                if hex::encode_upper(c.fingerprint) != fpr {
                    return Err(format!("{fpr}: another certificate was served"));
                }
                // The index by device id: this certificate and no other.
                let index = lookup(&mut conn, Op::Index, &fpr, &id).await?;
                let listed = index.lines().filter(|l| l.starts_with("pub:")).count();
                if listed != 1 {
                    return Err(format!("index of {id}: {listed} certificates:\n{index}"));
                }
                Ok(c.certifications
                    .iter()
                    .map(|c| c.signer)
                    .collect::<Vec<_>>())
            })
        }))
        .await;
        for a in answers {
            match a {
                Ok(signers) if signers.contains(maker) => {}
                Ok(_) => {
                    bad += 1;
                    load.fail(format!(
                        "{name}: a certificate without the manufacturer's certification"
                    ));
                }
                Err(e) => {
                    bad += 1;
                    load.fail(format!("{name}: {e}"));
                }
            }
        }
    }
    bad
}

async fn futures_join<I>(tasks: I) -> Vec<Result<Vec<[u8; 20]>, String>>
where
    I: Iterator<Item = tokio::task::JoinHandle<Result<Vec<[u8; 20]>, String>>>,
{
    let mut out = Vec::new();
    for t in tasks.collect::<Vec<_>>() {
        out.push(t.await.unwrap_or_else(|e| Err(e.to_string())));
    }
    out
}

// ---- main ----------------------------------------------------------------------------------------------------------

struct Row {
    op: Op,
    clients: usize,
    ours: (f64, f64),
    sks: (f64, f64),
    ours_runs: Vec<f64>,
    sks_runs: Vec<f64>,
    /// Median CPU the rest of the machine used during the cell's rounds, in cores.
    other: f64,
    /// Median CPU time of the client threads per lookup, µs (both servers' rounds).
    client: f64,
}

fn main() -> ExitCode {
    let n: usize = env_or("CUSTOS_HKP_CERTS", DEFAULT_CERTS);
    let rounds: usize = env_or("CUSTOS_HKP_ROUNDS", DEFAULT_ROUNDS);
    let seconds: f64 = env_or("CUSTOS_HKP_SECONDS", DEFAULT_SECONDS);
    assert!(n > 0 && rounds > 0 && seconds > 0.0);
    // `cargo bench` passes `--bench`; `get`, `fresh`, `cold` or `index` runs only those lookups.
    let picks: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let ops: Vec<Op> = [
        (Op::Get, "get"),
        (Op::GetFresh, "fresh"),
        (Op::GetCold, "cold"),
        (Op::Index, "index"),
        (Op::IndexCold, "index-cold"),
    ]
    .into_iter()
    .filter(|(_, name)| picks.is_empty() || picks.iter().any(|p| p == name))
    .map(|(op, _)| op)
    .collect();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("HKP lookups: {n} device certificates + 1 party certificate; {cores} cores");

    let t0 = Instant::now();
    let certs = make_certs(n);
    println!(
        "  made the certificates in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    let sks = match start_sks(&certs) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("SKS could not be started: {e}");
            return ExitCode::FAILURE;
        }
    };
    let hold = env_or("CUSTOS_HKP_HOLD", 1u8) == 1;
    let ours = start_ours(&certs, hold);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(CLIENT_THREADS)
        .thread_name(CLIENT_THREAD_NAME)
        .enable_all()
        .build()
        .unwrap();
    let load = Load {
        sks_pid: sks.pid(),
        keys: Arc::new(
            certs
                .devices
                .iter()
                .map(|d| (d.fpr.clone(), d.id.clone()))
                .collect(),
        ),
        failures: Arc::new(AtomicU64::new(0)),
        first_failure: Arc::new(Mutex::new(None)),
    };
    let maker = certs.maker.fingerprint();
    let (ours_url, sks_url, sks_pid) = (ours.url.clone(), sks.url.clone(), sks.pid());

    rt.block_on(async {
        // Every certificate, once, from each: the right key with its certification (and a warm cache for both).
        for (name, base) in [("ours", &ours_url), ("sks", &sks_url)] {
            let t = Instant::now();
            let bad = verify_all(&load, base, &maker, name).await;
            println!(
                "  {name}: fetched, checked and found by index all {n} certificates in {:.1} s, {bad} failed",
                t.elapsed().as_secs_f64()
            );
        }
    });
    let rows: Vec<Row> = {
        let mut rows = Vec::new();
        for op in ops.iter().copied() {
            for clients in CONCURRENCY {
                let (mut o, mut s) = (Vec::new(), Vec::new());
                for r in 0..rounds {
                    let seed = 0xC057_0500 + r as u64;
                    // Alternate which server goes first.
                    let order = if r % 2 == 0 {
                        [true, false]
                    } else {
                        [false, true]
                    };
                    for is_ours in order {
                        if is_ours {
                            if op.cold() {
                                ours.registry.forget_answers();
                            }
                            o.push(round(
                                &load,
                                &ours_url,
                                Server::Ours,
                                op,
                                clients,
                                seconds,
                                seed,
                            ));
                        } else {
                            s.push(round(
                                &load,
                                &sks_url,
                                Server::Sks(sks_pid),
                                op,
                                clients,
                                seconds,
                                seed,
                            ));
                        }
                    }
                }
                let row = Row {
                    op,
                    clients,
                    ours: (
                        median(o.iter().map(|x| x.0).collect()),
                        median(o.iter().map(|x| x.1).collect()),
                    ),
                    sks: (
                        median(s.iter().map(|x| x.0).collect()),
                        median(s.iter().map(|x| x.1).collect()),
                    ),
                    ours_runs: o.iter().map(|x| x.0).collect(),
                    sks_runs: s.iter().map(|x| x.0).collect(),
                    other: median(o.iter().chain(&s).map(|x| x.2).collect()),
                    client: median(o.iter().chain(&s).map(|x| x.3).collect()),
                };
                let what = match op {
                    Op::Get => "get",
                    Op::GetFresh => "get, new connections",
                    Op::GetCold => "get, each once, none cached",
                    Op::Index => "index",
                    Op::IndexCold => "index, each once, none cached",
                };
                let range = |v: &[f64]| {
                    (
                        v.iter().copied().fold(f64::MAX, f64::min),
                        v.iter().copied().fold(0.0, f64::max),
                    )
                };
                let ((olo, ohi), (slo, shi)) = (range(&row.ours_runs), range(&row.sks_runs));
                println!(
                    "  {what}, {clients} client(s): ours {:>7.0} /s (runs {olo:.0} .. {ohi:.0}), sks {:>7.0} /s (runs {slo:.0} .. {shi:.0}); client CPU {:.0} µs per lookup; other load {:.2} cores",
                    row.ours.0, row.sks.0, row.client, row.other
                );
                rows.push(row);
            }
        }
        rows
    };

    println!(
        "\n{} (`sks db`, one process) against ours (`serve_router`, a current-thread runtime; {}); {n} device \
         certificates; {rounds} rounds of {seconds} s per cell, servers alternating; medians; a blocking \
         client thread per client, polling below {SPIN_BELOW} clients (its CPU per lookup is then its whole core); \
         {cores} cores",
        sks.version,
        if hold {
            "public certificates held in memory"
        } else {
            "certificates not held: answer cache and store"
        },
    );
    println!(
        "\n| lookups per second | clients | ours | sks | ours / sks | server CPU per lookup, ours | sks | client CPU per lookup | other load |\n|---|---|---|---|---|---|---|---|---|"
    );
    for r in &rows {
        let what = match r.op {
            Op::Get => "`op=get&options=mr&search=0x<fingerprint>`, keep-alive",
            Op::GetFresh => "the same, a new connection per lookup",
            Op::GetCold => "the same, keep-alive, every certificate once and none in our cache",
            Op::Index => "`op=index&options=mr&search=<device id>`, keep-alive",
            Op::IndexCold => "the same, every device id once and none in our cache",
        };
        println!(
            "| {what} | {} | {:.0} | {:.0} | {:.2} | {:.0} µs | {:.0} µs | {:.0} µs | {:.2} cores |",
            r.clients,
            r.ours.0,
            r.sks.0,
            r.ours.0 / r.sks.0,
            r.ours.1,
            r.sks.1,
            r.client,
            r.other
        );
    }

    println!(
        "\nOurs, in process, without HTTP ({n} certificates; µs per call, median of 3 passes):\n\n| step | µs |\n|---|---|"
    );
    for (what, us) in &ours.parts {
        println!("| {what} | {us:.1} |");
    }

    drop(rt);
    drop(ours);
    let failures = load.failures.load(Ordering::Relaxed);
    drop(sks);
    if failures > 0 {
        eprintln!(
            "\n{failures} lookup(s) failed; the first: {}",
            load.first_failure
                .lock()
                .unwrap()
                .clone()
                .unwrap_or_default()
        );
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
