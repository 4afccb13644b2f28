//! Device-to-device keys against the peer to beat, MIT Kerberos, in one run (docs/benchmarks.md, "Device-to-device
//! keys").
//!
//! - **KTC core, in process**: what the hub does per KTC direct translation (docs/wire.md §12): `Request::open` with
//!   the requester's `NodeKeys`, a lookup of both nodes in a `HashMap` (the authorized list, 1 000 nodes),
//!   `check_expiry`, `Request::package` for the peer. Translations per second on 1 thread and on 2 threads (each
//!   translating its own share of pre-sealed requests); medians of 11 runs.
//! - **MIT Kerberos**: Debian's `krb5kdc` on 127.0.0.1 with a throwaway realm in a temporary directory (its own
//!   krb5.conf and kdc.conf, `kdb5_util create`, `kadmin.local addprinc`), two worker processes (`-w 2`), driven by
//!   `benches/krb5_client.c` (compiled here with `cc -O2 ... -lkrb5`): AS exchanges (`krb5_get_init_creds_keytab`;
//!   the client principal does not require pre-authentication, so one round trip each, the cheapest AS there is)
//!   and TGS exchanges (`krb5_get_credentials` with `KRB5_GC_NO_STORE`, so every call is a round trip), with 1 and 2
//!   client threads; medians of 5 runs of 2 s. The KDC is killed on exit.
//! - The bytes each mode puts on the air per key (request, delivery, confirmations), from the crate's constants.
//!
//! Needs `krb5kdc`, `kdb5_util`, `kadmin.local` (Debian: krb5-kdc, krb5-admin-server) and `krb5.h` with libkrb5
//! (libkrb5-dev) and a C compiler; fails with a message naming what is missing. It never skips.
//!
//! - The hub over HTTP on SQLite (the embedded default), one request per POST (`hub`) and in gateway batches
//!   (`batch`); batches on PostgreSQL (`pg`, a database of its own on `CUSTOS_TEST_POSTGRES`, as the tests use).
//!   With `kerberos` too, each batched run is paired with a TGS run of as many client threads just before it, and
//!   the ratio to TGS is also given as the median of the pairs' ratios: the VM's speed drifts over the minutes
//!   between the Kerberos section and the hub's.
//!
//! Run: `cargo bench -p custos-hub --bench ktc`; `-- hub batch` (or `core`, `kerberos`, `pg`, `bytes`) runs only
//! those sections.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

// The hub tests' helpers: admitting a device straight in the store.
#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::hint::black_box;
use std::net::{TcpListener, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use custos_proto::ties::{
    self, CONFIRM_LEN, KTC_DIRECT, KeyId, NodeKeys, REFUSAL_LEN, Request, SEED_LEN, SIGNAL_LEN, kk,
};
use custos_proto::{DeviceId, RustCrypto, Secret};

const C: RustCrypto = RustCrypto;
const NODES: usize = 1_000;
const REQUESTS: usize = 4_096;
const PER_RUN: usize = 100_000;
const RUNS: usize = 11;
const NOW: u64 = 1_800_000_000;
const EXPIRES: u32 = 1_800_003_600;
const REALM: &str = "CUSTOS.TEST";
const SERVICES: usize = 4;
const KRB_RUNS: usize = 5;
const KRB_SECONDS: f64 = 2.0;
/// Admitted devices in the hub the HTTP rows measure: enough that no device comes near its request rate.
const HUB_NODES: usize = 10_000;
/// Requests per gateway batch in the batched row.
const BATCH: usize = 256;
/// The most clients at once in the last column, for both the KDC and the hub.
const CONCURRENT: usize = 16;

fn id(i: usize) -> DeviceId {
    let mut b = [0u8; 8];
    b[..4].copy_from_slice(b"ties");
    b[4..].copy_from_slice(&(i as u32).to_be_bytes());
    DeviceId(b)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

// ---- the in-process KTC core -------------------------------------------------------------------------------------

struct Hub {
    authorized: HashMap<DeviceId, NodeKeys>,
    /// Pre-sealed KTC direct requests: (transport name of the requester, bytes).
    requests: Vec<(DeviceId, Vec<u8>)>,
}

fn hub() -> Hub {
    let authorized: HashMap<DeviceId, NodeKeys> = (0..NODES)
        .map(|i| {
            let mut sdk = [0u8; 32];
            sdk[..8].copy_from_slice(&id(i).0);
            (
                id(i),
                NodeKeys::derive(&C, &Secret::from_bytes(sdk)).unwrap(),
            )
        })
        .collect();
    let requests = (0..REQUESTS)
        .map(|n| {
            let (a, b) = (n * 7919 % NODES, (n * 104_729 + 1) % NODES);
            let b = if a == b { (b + 1) % NODES } else { b };
            let mut kid: KeyId = [0; 8];
            kid[..8].copy_from_slice(&(n as u64).to_be_bytes());
            let mut seed = [0u8; SEED_LEN];
            seed[..8].copy_from_slice(&kid);
            let msg = Request::new(KTC_DIRECT, id(a), &[id(b)], kid, EXPIRES)
                .unwrap()
                .seal(&C, &authorized[&id(a)], Some(&ties::Seed::from_bytes(seed)))
                .unwrap();
            (id(a), msg.as_bytes().to_vec())
        })
        .collect();
    Hub {
        authorized,
        requests,
    }
}

/// One KTC direct translation, as the hub does it: the delivery for the peer, or why not.
fn translate(hub: &Hub, requester: DeviceId, msg: &[u8]) -> usize {
    let Some(keys) = hub.authorized.get(&requester) else {
        return 0;
    };
    let Ok((req, Some(seed))) = Request::open(&C, requester, keys, msg) else {
        return 0;
    };
    let peer = req.peers.as_slice()[0];
    let Some(peer_keys) = hub.authorized.get(&peer) else {
        return 0;
    };
    if req.check_expiry(NOW).is_err() {
        return 0;
    }
    match req.package(&C, peer, peer_keys, &seed) {
        Ok(p) => black_box(p).as_bytes().len(),
        Err(_) => 0,
    }
}

/// Translations per second over `PER_RUN` translations per thread, `threads` threads in parallel.
fn ktc_run(hub: &Hub, threads: usize) -> f64 {
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            s.spawn(move || {
                let mut bytes = 0usize;
                for n in 0..PER_RUN {
                    let (who, msg) = &hub.requests[(n + t * 997) % REQUESTS];
                    bytes += translate(hub, *who, msg);
                }
                assert_eq!(bytes, PER_RUN * 53, "a translation failed");
            });
        }
    });
    (threads * PER_RUN) as f64 / start.elapsed().as_secs_f64()
}

fn ktc_rates(threads: usize) -> (f64, f64, f64) {
    let hub = hub();
    ktc_run(&hub, threads); // warm-up
    let runs: Vec<f64> = (0..RUNS).map(|_| ktc_run(&hub, threads)).collect();
    let (lo, hi) = (
        runs.iter().copied().fold(f64::MAX, f64::min),
        runs.iter().copied().fold(0.0, f64::max),
    );
    (median(runs), lo, hi)
}

// ---- MIT Kerberos ------------------------------------------------------------------------------------------------

fn tool(name: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/usr/bin", "/sbin", "/bin", "/usr/local/sbin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    if let Some(p) = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(name))
            .find(|p| p.exists())
    }) {
        return p;
    }
    panic!(
        "`{name}` is missing: install MIT Kerberos (Debian: apt-get install -y krb5-kdc krb5-admin-server krb5-user \
         libkrb5-dev); this benchmark does not skip"
    );
}

/// A port free on 127.0.0.1 for both UDP and TCP.
fn free_port() -> u16 {
    loop {
        let u = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = u.local_addr().unwrap().port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

fn run(dir: &Path, cmd: &mut Command, what: &str) -> String {
    let out = cmd
        .env("KRB5_CONFIG", dir.join("krb5.conf"))
        .env("KRB5_KDC_PROFILE", dir.join("kdc.conf"))
        .output()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The KDC's process group, killed on drop (the bench's own child and its workers, by id).
struct Kdc {
    child: Child,
    dir: PathBuf,
}

impl Drop for Kdc {
    fn drop(&mut self) {
        let pgid = self.child.id();
        let _ = Command::new("kill")
            .args(["-TERM", "--", &format!("-{pgid}")])
            .status();
        let deadline = Instant::now() + Duration::from_secs(3);
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
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

struct Realm {
    kdc: Kdc,
    client: PathBuf,
}

fn realm() -> Realm {
    let (krb5kdc, kdb5_util, kadmin) = (tool("krb5kdc"), tool("kdb5_util"), tool("kadmin.local"));
    let cc = tool("cc");
    assert!(
        Path::new("/usr/include/krb5.h").exists() || Path::new("/usr/include/krb5/krb5.h").exists(),
        "krb5.h is missing: install libkrb5-dev (Debian: apt-get install -y libkrb5-dev); this benchmark does not skip"
    );
    let dir = std::env::temp_dir().join(format!("custos-krb5-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let d = dir.display();
    std::fs::write(
        dir.join("krb5.conf"),
        format!(
            "[libdefaults]\n default_realm = {REALM}\n dns_lookup_kdc = false\n dns_lookup_realm = false\n \
             rdns = false\n\n[realms]\n {REALM} = {{\n  kdc = 127.0.0.1:{port}\n }}\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("kdc.conf"),
        format!(
            "[kdcdefaults]\n kdc_listen = 127.0.0.1:{port}\n kdc_tcp_listen = 127.0.0.1:{port}\n\n[realms]\n \
             {REALM} = {{\n  database_name = {d}/principal\n  key_stash_file = {d}/stash\n  acl_file = {d}/kadm5.acl\n  \
             kdc_listen = 127.0.0.1:{port}\n  kdc_tcp_listen = 127.0.0.1:{port}\n  max_life = 10h\n }}\n\n[logging]\n \
             kdc = FILE:{d}/kdc.log\n"
        ),
    )
    .unwrap();
    std::fs::write(dir.join("kadm5.acl"), "").unwrap();
    run(
        &dir,
        Command::new(&kdb5_util).args(["create", "-s", "-P", "throwaway-master-pw", "-r", REALM]),
        "kdb5_util create",
    );
    let mut q = vec!["addprinc -randkey client".to_owned()];
    for i in 0..SERVICES {
        q.push(format!("addprinc -randkey host/svc{i}.custos.test"));
    }
    q.push(format!("ktadd -k {d}/client.keytab client"));
    for query in q {
        run(
            &dir,
            Command::new(&kadmin).args(["-r", REALM, "-q", &query]),
            &format!("kadmin.local {query}"),
        );
    }

    let child = Command::new(&krb5kdc)
        .args(["-n", "-w", "2", "-r", REALM])
        .env("KRB5_CONFIG", dir.join("krb5.conf"))
        .env("KRB5_KDC_PROFILE", dir.join("kdc.conf"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("start krb5kdc");
    let kdc = Kdc {
        child,
        dir: dir.clone(),
    };

    let client = dir.join("krb5_client");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/krb5_client.c");
    let out = Command::new(&cc)
        .arg("-O2")
        .arg("-o")
        .arg(&client)
        .arg(&src)
        .args(["-lkrb5", "-lpthread"])
        .output()
        .expect("run cc");
    assert!(
        out.status.success(),
        "compiling benches/krb5_client.c failed (is libkrb5-dev installed?):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Wait until the KDC answers an AS exchange.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ok = krb_once(&dir, &client, "as", 1, 0.05).is_ok();
        if ok {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "krb5kdc did not answer on 127.0.0.1:{port}; its log: {}",
            std::fs::read_to_string(dir.join("kdc.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Realm { kdc, client }
}

/// One run of the C client: exchanges per second.
fn krb_once(
    dir: &Path,
    client: &Path,
    mode: &str,
    threads: usize,
    seconds: f64,
) -> Result<f64, String> {
    let mut cmd = Command::new(client);
    cmd.args([
        mode,
        &threads.to_string(),
        &seconds.to_string(),
        &format!("FILE:{}", dir.join("client.keytab").display()),
        &format!("client@{REALM}"),
    ]);
    for i in 0..SERVICES {
        cmd.arg(format!("host/svc{i}.custos.test@{REALM}"));
    }
    let out = cmd
        .env("KRB5_CONFIG", dir.join("krb5.conf"))
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let line = String::from_utf8_lossy(&out.stdout);
    let rate = line
        .split_whitespace()
        .last()
        .and_then(|r| r.parse().ok())
        .ok_or_else(|| format!("unreadable client output: {line}"))?;
    Ok(rate)
}

fn krb_rate(r: &Realm, mode: &str, threads: usize) -> f64 {
    let runs: Vec<f64> = (0..KRB_RUNS)
        .map(|_| {
            krb_once(&r.kdc.dir, &r.client, mode, threads, KRB_SECONDS)
                .unwrap_or_else(|e| panic!("Kerberos {mode} with {threads} threads failed: {e}"))
        })
        .collect();
    let (lo, hi) = (
        runs.iter().copied().fold(f64::MAX, f64::min),
        runs.iter().copied().fold(0.0, f64::max),
    );
    println!(
        "  {mode:>3}, {threads} client thread(s): {:>8.0} /s  (runs {lo:.0} .. {hi:.0})",
        median(runs.clone())
    );
    median(runs)
}

// ---- the hub over HTTP -------------------------------------------------------------------------------------------

/// The hub's KTC over HTTP: a real hub (`custos_hub::app` on `store`, SQLite in a temporary directory or a
/// PostgreSQL database of its own, 2 worker threads) on 127.0.0.1 with `HUB_NODES` admitted devices, and `clients`
/// clients, each a loop of one KTC direct request at a time (`batch` 1, sealed as it goes, as the Kerberos client
/// makes its requests) or of gateway batches of `batch` requests. Each is answered only after the hub checked both
/// nodes, translated, and stored the record and the peer's package. Translations per second, median of `KRB_RUNS`
/// runs of `KRB_SECONDS`.
fn hub_http_ktc(clients: usize, batch: usize, store: Backend, paired: Option<&Realm>) -> Measured {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        match store {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let store = custos_store::SqliteStore::open(&dir.path().join("hub.db"))
                    .await
                    .unwrap();
                serve_ktc(store, clients, batch, paired).await
            }
            Backend::Postgres => {
                use rand_core::RngCore;
                use sqlx::Connection;
                // A database of its own, as the tests make theirs, dropped after the run.
                let admin_url = std::env::var("CUSTOS_TEST_POSTGRES")
                    .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
                let mut suffix = [0u8; 6];
                rand_core::OsRng.fill_bytes(&mut suffix);
                let name = format!("custos_ktc_{}", hex::encode(suffix));
                let mut admin = sqlx::PgConnection::connect(&admin_url)
                    .await
                    .unwrap_or_else(|e| panic!("PostgreSQL at {admin_url} is required: {e}"));
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&mut admin)
                    .await
                    .unwrap();
                let (base, _) = admin_url
                    .rsplit_once('/')
                    .unwrap_or_else(|| panic!("CUSTOS_TEST_POSTGRES must end in /DATABASE"));
                let store = custos_store::PgStore::connect(&format!("{base}/{name}"))
                    .await
                    .unwrap();
                let r = serve_ktc(store.clone(), clients, batch, paired).await;
                store.close().await;
                sqlx::query(&format!("DROP DATABASE {name}"))
                    .execute(&mut admin)
                    .await
                    .unwrap();
                r
            }
        }
    })
}

/// Where the measured hub keeps its state.
#[derive(Clone, Copy)]
enum Backend {
    /// The embedded default.
    Sqlite,
    /// PostgreSQL on 127.0.0.1 (`CUSTOS_TEST_POSTGRES`, as for the tests), the store for several hubs.
    Postgres,
}

/// The hub's runs, and with `paired` the TGS runs of as many Kerberos client threads, each just before the hub's
/// run it is paired with: the VM's speed drifts over minutes (TGS at two clients measured 3 231 to 9 642 per second
/// on different days), so a ratio is taken within each pair, a few seconds apart.
struct Measured {
    hub: Vec<f64>,
    tgs: Vec<f64>,
}

impl Measured {
    fn rate(&self) -> f64 {
        median(self.hub.clone())
    }

    /// The median of the pairs' ratios, hub / TGS (NaN without pairs).
    fn paired_ratio(&self) -> f64 {
        if self.tgs.is_empty() {
            return f64::NAN;
        }
        median(self.hub.iter().zip(&self.tgs).map(|(h, t)| h / t).collect())
    }
}

/// Admits `HUB_NODES` devices in `store`, serves a hub on it, and measures (see [`hub_http_ktc`]).
async fn serve_ktc<S: custos_store::Store + 'static>(
    store: S,
    clients: usize,
    batch: usize,
    paired: Option<&Realm>,
) -> Measured {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let at = now as i64;
    for i in 0..HUB_NODES {
        common::admit(&store, id(i), sdk(i), at).await;
    }
    // Progress, and the moment to attach a profiler.
    eprintln!("    {clients} client(s), batches of {batch}: devices admitted, measuring");
    let hub = custos_hub::Hub::new(store, custos_hub::HubKeys::generate());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let service =
        custos_hub::app(hub).into_make_service_with_connect_info::<std::net::SocketAddr>();
    let server = tokio::spawn(async move { axum::serve(listener, service).await });
    let keys: Arc<Vec<NodeKeys>> = Arc::new(
        (0..HUB_NODES)
            .map(|i| NodeKeys::derive(&C, &Secret::from_bytes(sdk(i))).unwrap())
            .collect(),
    );
    let http = custos_client::tls::http_client(
        reqwest::Client::builder().no_proxy(),
        &custos_client::TlsTrust::System,
    )
    .unwrap();
    // Key ids are unique over the whole bench; requesters rotate over all nodes, well inside the per-device
    // rate.
    let next = Arc::new(AtomicU64::new(0));
    let mut runs = Vec::new();
    let mut tgs = Vec::new();
    for _ in 0..KRB_RUNS {
        if let Some(r) = paired {
            // The hub is idle meanwhile; the KDC and its client have the machine, as the hub and its clients do next.
            tgs.push(
                krb_once(&r.kdc.dir, &r.client, "tgs", clients, KRB_SECONDS)
                    .unwrap_or_else(|e| panic!("Kerberos tgs with {clients} threads failed: {e}")),
            );
        }
        let done = Arc::new(AtomicU64::new(0));
        let deadline = Instant::now() + Duration::from_secs_f64(KRB_SECONDS);
        let mut tasks = Vec::new();
        let t0 = Instant::now();
        for _ in 0..clients {
            let (http, url, keys, next, done) = (
                http.clone(),
                url.clone(),
                keys.clone(),
                next.clone(),
                done.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let seal = |n: u64| {
                    let i = (n as usize) % HUB_NODES;
                    let req = Request::new(
                        KTC_DIRECT,
                        id(i),
                        &[id((i + 1) % HUB_NODES)],
                        n.to_be_bytes(),
                        (now + 3600) as u32,
                    )
                    .unwrap();
                    let seed = ties::Seed::from_bytes([(n % 251) as u8; SEED_LEN]);
                    (id(i), req.seal(&C, &keys[i], Some(&seed)).unwrap())
                };
                while Instant::now() < deadline {
                    if batch == 1 {
                        let (d, msg) = seal(next.fetch_add(1, Ordering::Relaxed));
                        let r = http
                            .post(format!("{url}/v1/devices/{d}/keys"))
                            .body(msg.as_bytes().to_vec())
                            .send()
                            .await
                            .unwrap();
                        let status = r.status().as_u16();
                        assert_eq!(status, 201, "{}", r.text().await.unwrap());
                        done.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    let first = next.fetch_add(batch as u64, Ordering::Relaxed);
                    let mut body = Vec::with_capacity(batch * 80);
                    for n in first..first + batch as u64 {
                        let (d, msg) = seal(n);
                        body.extend_from_slice(&((8 + msg.as_bytes().len()) as u16).to_be_bytes());
                        body.extend_from_slice(&d.0);
                        body.extend_from_slice(msg.as_bytes());
                    }
                    let r = http
                        .post(format!("{url}/v1/keys"))
                        .body(body)
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status().as_u16(), 200);
                    let out = r.bytes().await.unwrap();
                    // Every outcome issued with no package back (KTC direct): `00 02 00 00` each.
                    assert_eq!(out.len(), 4 * batch, "some requests were not issued");
                    assert!(
                        out.chunks(4).all(|o| o == [0, 2, 0, 0]),
                        "some requests were not issued"
                    );
                    done.fetch_add(batch as u64, Ordering::Relaxed);
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        runs.push(done.load(Ordering::Relaxed) as f64 / t0.elapsed().as_secs_f64());
    }
    server.abort();
    Measured { hub: runs, tgs }
}

/// The server–device key of node `i`.
fn sdk(i: usize) -> [u8; 32] {
    let mut k = [0x5c; 32];
    k[..8].copy_from_slice(&(i as u64).to_be_bytes());
    k
}

// ---- bytes on the air ----------------------------------------------------------------------------------------------

fn print_bytes() {
    let request_ktc = 1 + 8 + 8 + 4 + SEED_LEN + 16;
    let request_kdc = 1 + 8 + 8 + 4 + 16;
    let package = 1 + 8 + 4 + 8 + SEED_LEN + 16;
    let conf = 2 * CONFIRM_LEN;
    println!("\nBytes per two-party key (request + deliveries + confirmations 4c/4d):");
    println!(
        "| mode | request | deliveries | confirmations | total | receipt + notice |\n|---|---|---|---|---|---|"
    );
    let rows = [
        ("KTC direct", request_ktc, package, "53"),
        (
            "KTC indirect",
            request_ktc,
            2 * package,
            "53 + 53 forwarded",
        ),
        ("KDC direct", request_kdc, 2 * package, "53 grant + 53"),
        (
            "KDC indirect",
            request_kdc,
            3 * package,
            "53 grant + 53 + 53 forwarded",
        ),
    ];
    for (name, req, pk, how) in rows {
        println!(
            "| {name} | {req} | {pk} ({how}) | {conf} | {} | {} |",
            req + pk + conf,
            2 * SIGNAL_LEN
        );
    }
    println!(
        "| Noise KK | Init {} | Reply {} | {} (4c) / {} (4c + 4d) | {} / {} | — |",
        kk::INIT_LEN,
        kk::REPLY_LEN,
        CONFIRM_LEN,
        conf,
        kk::INIT_LEN + kk::REPLY_LEN + CONFIRM_LEN,
        kk::INIT_LEN + kk::REPLY_LEN + conf
    );
    println!("(a refusal is {REFUSAL_LEN} bytes)");
}

fn main() {
    // `cargo bench` passes `--bench`; other arguments pick sections by name (`core`, `kerberos`, `hub`, `batch`, `pg`,
    // `bytes`), all of them when none is given. The ratio table needs them all.
    let picks: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let want = |s: &str| picks.is_empty() || picks.iter().any(|p| p == s);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (mut k1, mut k2) = (f64::NAN, f64::NAN);
    if want("core") {
        println!(
            "KTC core: {NODES} authorized nodes, {REQUESTS} pre-sealed KTC direct requests, {PER_RUN} translations per thread per run, median of {RUNS} runs; {cores} cores"
        );
        let (r1, lo1, hi1) = ktc_rates(1);
        println!("  1 thread : {r1:>10.0} /s  (runs {lo1:.0} .. {hi1:.0})");
        let (r2, lo2, hi2) = ktc_rates(2);
        println!("  2 threads: {r2:>10.0} /s  (runs {lo2:.0} .. {hi2:.0})");
        (k1, k2) = (r1, r2);
    }

    let [mut as1, mut as2, mut tgs1, mut tgs2, mut as16, mut tgs16] = [f64::NAN; 6];
    // Kept for the batch rows' paired TGS runs; the KDC stops when it is dropped.
    let mut kerberos = None;
    if want("kerberos") {
        println!("\nMIT Kerberos: starting a throwaway KDC on 127.0.0.1 ...");
        let realm = kerberos.insert(realm());
        let version = Command::new(tool("krb5-config"))
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default();
        println!("  {version}; krb5kdc -w 2; {KRB_RUNS} runs of {KRB_SECONDS} s each, medians");
        as1 = krb_rate(realm, "as", 1);
        as2 = krb_rate(realm, "as", 2);
        tgs1 = krb_rate(realm, "tgs", 1);
        tgs2 = krb_rate(realm, "tgs", 2);
        as16 = krb_rate(realm, "as", CONCURRENT);
        tgs16 = krb_rate(realm, "tgs", CONCURRENT);
    }

    let hub_row = |batch: usize, store: Backend, paired: Option<&Realm>| -> [Measured; 3] {
        let r = [1, 2, CONCURRENT].map(|clients| hub_http_ktc(clients, batch, store, paired));
        let on = match store {
            Backend::Sqlite => "SQLite",
            Backend::Postgres => "PostgreSQL",
        };
        println!(
            "  batch {batch:>3}, {on}: {:.0} / {:.0} / {:.0} per second (1 / 2 / {CONCURRENT} clients)",
            r[0].rate(),
            r[1].rate(),
            r[2].rate()
        );
        for m in r.iter().filter(|m| !m.tgs.is_empty()) {
            let runs = |v: &[f64]| {
                v.iter()
                    .map(|x| format!("{x:.0}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            println!(
                "    paired runs: hub {} against TGS {}: ratio {:.1}",
                runs(&m.hub),
                runs(&m.tgs),
                m.paired_ratio()
            );
        }
        r
    };
    let [mut h1, mut h2, mut h16] = [f64::NAN; 3];
    let [mut b1, mut b2, mut b16] = [f64::NAN; 3];
    let [mut p1, mut p2, mut p16] = [f64::NAN; 3];
    if want("hub") || want("batch") || want("pg") {
        println!(
            "\nThe hub over HTTP: a hub with {HUB_NODES} admitted devices on 127.0.0.1, per POST and in batches of {BATCH} ..."
        );
    }
    let [mut q1, mut q2, mut q16] = [f64::NAN; 3];
    if want("hub") {
        [h1, h2, h16] = hub_row(1, Backend::Sqlite, None).map(|m| m.rate());
    }
    if want("batch") {
        let r = hub_row(BATCH, Backend::Sqlite, kerberos.as_ref());
        [b1, b2, b16] = [0, 1, 2].map(|i| r[i].rate());
        [q1, q2, q16] = [0, 1, 2].map(|i| r[i].paired_ratio());
    }
    if want("pg") {
        [p1, p2, p16] = hub_row(BATCH, Backend::Postgres, None).map(|m| m.rate());
    }
    println!("\n| per second | 1 client | 2 clients | {CONCURRENT} clients |\n|---|---|---|---|");
    println!("| KTC translations, in process (threads) | {k1:.0} | {k2:.0} | — |");
    println!(
        "| KTC translations, hub over HTTP, one request per POST | {h1:.0} | {h2:.0} | {h16:.0} |"
    );
    println!(
        "| KTC translations, hub over HTTP, gateway batches of {BATCH} | {b1:.0} | {b2:.0} | {b16:.0} |"
    );
    println!(
        "| KTC translations, hub over HTTP on PostgreSQL, gateway batches of {BATCH} | {p1:.0} | {p2:.0} | {p16:.0} |"
    );
    println!("| Kerberos AS exchanges | {as1:.0} | {as2:.0} | {as16:.0} |");
    println!("| Kerberos TGS exchanges | {tgs1:.0} | {tgs2:.0} | {tgs16:.0} |");
    println!(
        "| ratio KTC in process / TGS | {:.1} | {:.1} | — |",
        k1 / tgs1,
        k2 / tgs2
    );
    println!(
        "| ratio hub over HTTP / TGS | {:.1} | {:.1} | {:.1} |",
        h1 / tgs1,
        h2 / tgs2,
        h16 / tgs16
    );
    println!(
        "| ratio hub over HTTP, batches / TGS | {:.1} | {:.1} | {:.1} |",
        b1 / tgs1,
        b2 / tgs2,
        b16 / tgs16
    );
    println!(
        "| ratio hub over HTTP, batches / TGS, each run against a TGS run just before it (median) | {q1:.1} | {q2:.1} | {q16:.1} |"
    );
    println!(
        "| ratio hub over HTTP / AS | {:.1} | {:.1} | {:.1} |",
        h1 / as1,
        h2 / as2,
        h16 / as16
    );
    if want("bytes") {
        print_bytes();
    }
}
