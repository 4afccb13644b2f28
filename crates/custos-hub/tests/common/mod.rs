//! Helpers shared by the hub's integration tests: admitting a device straight in the store, its device token,
//! and a hub over a loopback socket with a store the test can reach.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::sync::Arc;

use custos_hub::{AccountConfig, Hub, HubKeys, PasswordCost, app};
use custos_proto::uplink::{LinkKeys, seal_pairing_wait};
use custos_proto::{DeviceId, RustCrypto, Secret};
use custos_store::{SqliteStore, Store};

/// An Argon2id cost that makes registering and logging in take microseconds.
pub const CHEAP: PasswordCost = PasswordCost {
    memory_kib: 8,
    iterations: 1,
    parallelism: 1,
};

/// Admits `device` straight in the store at `at`, with a known session key.
pub async fn admit(store: &impl Store, device: DeviceId, session_key: [u8; 32], at: i64) {
    store
        .put_admission(&custos_store::PendingAdmission {
            device,
            join_code: [1; 16],
            created_at: at,
            expires_at: at + 600,
        })
        .await
        .unwrap();
    store
        .complete_admission(
            &custos_store::Device {
                device,
                static_key: [2; 32],
                session_key,
                admitted_at: at,
                revoked_at: None,
                max_seq: -1,
            },
            at,
        )
        .await
        .unwrap();
}

/// The link keys of a device admitted with `session_key`.
pub fn link(session_key: [u8; 32]) -> LinkKeys {
    LinkKeys::derive(&RustCrypto, &Secret::from_bytes(session_key)).unwrap()
}

/// The device token of `device` under `session_key`, made at `at` (Unix seconds).
pub fn device_token(session_key: [u8; 32], device: DeviceId, at: i64) -> [u8; 25] {
    seal_pairing_wait(&RustCrypto, &link(session_key), device, at as u64)
}

/// `Custos-Device <hex device token>`, as a device sends it.
pub fn device_auth_at(session_key: [u8; 32], device: DeviceId, at: i64) -> String {
    format!(
        "Custos-Device {}",
        hex::encode(device_token(session_key, device, at))
    )
}

/// The system clock, Unix seconds.
pub fn wall_clock() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A hub on the system clock serving its whole router on a loopback port, with its store at hand for the test.
/// It stops when dropped.
pub struct Loopback {
    pub hub: Arc<Hub<SqliteStore>>,
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Loopback {
    /// A hub with cheap password hashes and `accounts` otherwise.
    pub async fn start(accounts: AccountConfig) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("hub.db")).await.unwrap();
        let hub = Hub::configured(
            store,
            HubKeys::generate(),
            wall_clock,
            AccountConfig {
                password_cost: CHEAP,
                ..accounts
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let service = app(hub.clone()).into_make_service_with_connect_info::<SocketAddr>();
        let task = tokio::spawn(async move {
            axum::serve(listener, service).await.unwrap();
        });
        Self {
            hub,
            addr,
            task,
            _dir: dir,
        }
    }

    /// The directory that holds the hub's database.
    pub fn dir(&self) -> &std::path::Path {
        self._dir.path()
    }

    /// `http://127.0.0.1:port` followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for Loopback {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The contents of every file in `dir`, for scanning a store for secrets. SQLite may remove its `-wal` and `-shm`
/// files between the listing and the read (a connection closing checkpoints and deletes them); the scan then starts
/// again, so that it reads one consistent set of files and never skips one.
pub fn files_in(dir: &std::path::Path) -> Vec<Vec<u8>> {
    for _ in 0..50 {
        let read: Result<Vec<Vec<u8>>, std::io::Error> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| std::fs::read(e?.path()))
            .collect();
        match read {
            Ok(files) => return files,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            Err(e) => panic!("reading {}: {e}", dir.display()),
        }
    }
    panic!("the files in {} kept changing", dir.display());
}
