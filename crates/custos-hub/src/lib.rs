//! The hub: the cloud side of Custos. It admits devices with their one-time join codes, takes in their sealed
//! records over authenticated messages, serves records and presence, and signs the list of authorized devices.
//!
//! It never holds a key that opens a record: what it stores is ciphertext, metadata, its own keys and each
//! device's server–device key. Every HTTP endpoint is in `docs/api.md`; [`app`] builds the router, which tests
//! drive without a socket.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod accounts;
pub mod authz;
pub mod control;
mod error;
mod extract;
pub mod identity;
mod keys;
pub mod mqtt;
mod routes;
pub mod serve;
pub mod sharing;
pub mod ties;
pub mod web;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use custos_proto::admission::HubAwaitingFinish;
use custos_store::Store;

pub use accounts::{Account, LoginRate, Operator, PasswordCost};
pub use custos_proto::cose::DeviceList;
pub use error::ApiError;
pub use keys::HubKeys;
pub use routes::{MAX_GAPS, MAX_PAGE, MAX_UPLOAD, app, ingest};

/// How long a device may take between `Hello` and `Finish`.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(60);
/// The most admission handshakes in progress at once; more are refused until some finish or time out.
pub const MAX_PENDING_HANDSHAKES: usize = 10_000;
/// The most handshakes in progress for one device; a further Hello displaces that device's oldest. Only devices
/// with a pending admission get this far, so the table holds at most this many per registered device, and
/// nobody can fill it for other devices.
pub const MAX_PENDING_PER_DEVICE: usize = 4;
/// The largest request body, bytes, where no smaller limit applies: a signed sharing request or answer (a grant
/// carries about 57 bytes per node secret, so this is thousands of them). Uplink batches have their own
/// ([`routes::MAX_UPLOAD`]).
pub const MAX_BODY: usize = 256 << 10;

/// A handshake between `Hello` and `Finish`.
struct Pending {
    device: custos_proto::DeviceId,
    state: HubAwaitingFinish,
    started: Instant,
}

/// A finished handshake, kept for [`HANDSHAKE_TIMEOUT`] (see `Hub::finished`).
struct Finished {
    finish: Vec<u8>,
    welcome: Vec<u8>,
    at: Instant,
}

/// The hub's state, shared by every request.
pub struct Hub<S> {
    store: S,
    keys: HubKeys,
    /// Admission handshakes between `Hello` and `Finish`, by handshake id.
    pending: Mutex<HashMap<[u8; 16], Pending>>,
    /// Finished handshakes for a while, by handshake id: the Finish received and the Welcome sent, so that a
    /// device whose Welcome was lost on the way can send the same Finish again and get the same Welcome.
    finished: Mutex<HashMap<[u8; 16], Finished>>,
    clock: fn() -> i64,
    /// Woken whenever this hub stores a sharing request, an answer or a relayed message, so long-polls return at
    /// once; they also re-check the store now and then, for what other replicas stored.
    changed: tokio::sync::Notify,
    /// Uplink batches this hub took in (HTTP and MQTT), for operators and tests.
    batches: std::sync::atomic::AtomicU64,
    /// MQTT batches dropped as junk (malformed or unauthenticated).
    junk: std::sync::atomic::AtomicU64,
    /// MQTT batches acknowledged unstored because the store's workers were behind.
    shed: std::sync::atomic::AtomicU64,
    /// Turns at decoding and verifying signed statements off the async workers (see [`Hub::off_workers`]).
    cpu: Arc<tokio::sync::Semaphore>,
    /// The link keys of devices this hub took batches from, so that forgeries are refused before any query. A
    /// device's session key never changes once it is admitted, so an entry never goes stale; revocation is still
    /// checked in the store for every batch that authenticates.
    link_keys: Mutex<HashMap<custos_proto::DeviceId, custos_proto::uplink::LinkKeys>>,
    /// The Argon2id cost of password hashes.
    password_cost: PasswordCost,
    /// Login attempts per client address, and the per-account delay base.
    login_rate: LoginRate,
    /// The infield identity registry, if the hub consults one (docs/registry.md §9).
    registry: OnceLock<identity::RegistryLink>,
    /// Login attempts per client address (`None`: no per-address limit).
    login_limiter: Option<accounts::LoginLimiter>,
    /// A hash that unknown accounts' logins are checked against, made on first use.
    dummy: OnceLock<String>,
    /// SHA-256 of the operator token; admin endpoints refuse everyone without it.
    operator: OnceLock<[u8; 32]>,
    /// A device not heard from for this many seconds is offline.
    offline_after: i64,
    /// Every control message this hub queues, for its MQTT side to publish (`mqtt.rs`). Nothing listens without
    /// MQTT, and a lagging listener skips messages: the HTTP queue is what delivers, MQTT only makes it faster.
    downlink: tokio::sync::broadcast::Sender<control::Downlink>,
    /// The dashboard's open event streams, per account (`web.rs`).
    streams: web::Streams,
    /// Device-to-device key requests per requester (`ties.rs`).
    key_limiter: Option<ties::KeyLimiter>,
    /// Single key requests waiting to be translated together (`ties.rs`).
    key_queue: ties::KeyQueue,
    /// Set when the hub begins to stop: the event streams end, so that they do not hold up a graceful shutdown
    /// (they would otherwise last their hour).
    stopping: tokio::sync::watch::Sender<bool>,
}

/// How a hub treats accounts and what it tells them: the cost of password hashes, the login limits, and when a
/// device counts as offline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccountConfig {
    /// The Argon2id cost of password hashes.
    pub password_cost: PasswordCost,
    /// Login attempts per client address, and the per-account delay base.
    pub login_rate: LoginRate,
    /// A device not heard from for this long is offline (`online: false` in control answers and device state);
    /// whole seconds, at least 1. Default [`DEFAULT_OFFLINE_AFTER`].
    pub offline_after: Duration,
}

/// How long a device may be silent and still count as online, by default.
pub const DEFAULT_OFFLINE_AFTER: Duration = Duration::from_secs(5);

impl Default for AccountConfig {
    fn default() -> Self {
        Self {
            password_cost: PasswordCost::default(),
            login_rate: LoginRate::default(),
            offline_after: DEFAULT_OFFLINE_AFTER,
        }
    }
}

/// How many queued control messages wait for the MQTT side to publish them; past that it skips the oldest.
pub const DOWNLINK_BUFFER: usize = 1024;

/// The most devices whose link keys a hub keeps in memory (about 100 bytes each); past that it starts afresh.
pub const LINK_KEY_CACHE: usize = 100_000;

/// How many signed statements the hub decodes and verifies at once, off the async workers.
pub const CPU_TURNS: usize = 2;
/// How long a request waits for a turn before the hub answers `503 busy`.
pub const CPU_WAIT: Duration = Duration::from_secs(5);

impl<S: Store> Hub<S> {
    /// A hub over `store` with `keys`, reading the system clock.
    pub fn new(store: S, keys: HubKeys) -> Arc<Self> {
        Self::with_clock(store, keys, system_now)
    }

    /// A hub with its own clock (Unix seconds), for tests.
    pub fn with_clock(store: S, keys: HubKeys, clock: fn() -> i64) -> Arc<Self> {
        Self::configured(store, keys, clock, AccountConfig::default())
    }

    /// A hub with its own clock and account settings.
    pub fn configured(
        store: S,
        keys: HubKeys,
        clock: fn() -> i64,
        accounts: AccountConfig,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            keys,
            pending: Mutex::new(HashMap::new()),
            finished: Mutex::new(HashMap::new()),
            clock,
            batches: Default::default(),
            junk: Default::default(),
            shed: Default::default(),
            changed: tokio::sync::Notify::new(),
            streams: web::Streams::default(),
            key_limiter: Some(ties::key_limiter()),
            key_queue: ties::KeyQueue::default(),
            stopping: tokio::sync::watch::channel(false).0,
            cpu: Arc::new(tokio::sync::Semaphore::new(CPU_TURNS)),
            link_keys: Mutex::new(HashMap::new()),
            password_cost: accounts.password_cost,
            login_rate: accounts.login_rate,
            login_limiter: accounts::login_limiter(accounts.login_rate),
            dummy: OnceLock::new(),
            operator: OnceLock::new(),
            registry: OnceLock::new(),
            offline_after: i64::try_from(accounts.offline_after.as_secs())
                .unwrap_or(i64::MAX)
                .max(1),
            downlink: tokio::sync::broadcast::channel(DOWNLINK_BUFFER).0,
        })
    }

    /// Makes the hub consult `link` at every admission; the first call wins (false if a registry was set).
    pub fn set_registry(&self, link: identity::RegistryLink) -> bool {
        self.registry.set(link).is_ok()
    }

    /// The registry the hub consults, if any.
    pub fn registry(&self) -> Option<&identity::RegistryLink> {
        self.registry.get()
    }

    /// Tells the hub's open event streams to end: the server calls this when it begins to stop.
    pub(crate) fn begin_stopping(&self) {
        self.stopping.send_replace(true);
    }

    /// Forgets the login-rate state of client addresses that are back to a full burst. Run now and then.
    pub fn forget_quiet_logins(&self) {
        if let Some(l) = &self.login_limiter {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }

    pub(crate) fn link_keys(
        &self,
        device: custos_proto::DeviceId,
    ) -> Option<custos_proto::uplink::LinkKeys> {
        self.link_keys.lock().ok()?.get(&device).cloned()
    }

    pub(crate) fn remember_link_keys(
        &self,
        device: custos_proto::DeviceId,
        keys: &custos_proto::uplink::LinkKeys,
    ) {
        if let Ok(mut cache) = self.link_keys.lock() {
            if cache.len() >= LINK_KEY_CACHE && !cache.contains_key(&device) {
                cache.clear();
            }
            cache.insert(device, keys.clone());
        }
    }

    /// Runs CPU-bound work (decoding CBOR, checking signatures of bodies up to [`MAX_BODY`]) on the blocking pool,
    /// [`CPU_TURNS`] at a time, so that a flood of large statements cannot stall ingest on the async workers;
    /// `503 busy` after waiting [`CPU_WAIT`] for a turn.
    pub(crate) async fn off_workers<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let turn = tokio::time::timeout(CPU_WAIT, self.cpu.clone().acquire_owned())
            .await
            .map_err(|_| ApiError::Busy)?
            .map_err(|_| ApiError::Busy)?;
        tokio::task::spawn_blocking(move || {
            let out = work();
            drop(turn);
            out
        })
        .await
        .map_err(|e| ApiError::Internal(format!("verification task: {e}")))
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The hub's keys.
    pub fn keys(&self) -> &HubKeys {
        &self.keys
    }

    /// How many uplink batches this hub has taken in since it started.
    pub fn batches_ingested(&self) -> u64 {
        self.batches.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How many MQTT batches this hub dropped as junk (malformed, or failing authentication) since it started.
    pub fn mqtt_junk(&self) -> u64 {
        self.junk.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How many admission handshakes wait for their `Finish` (timed-out ones included until the next `Hello`).
    pub fn handshakes_in_progress(&self) -> usize {
        self.pending.lock().map_or(0, |m| m.len())
    }

    pub(crate) fn now(&self) -> i64 {
        (self.clock)()
    }

    /// Signs the current list of authorized (admitted, not revoked) devices as the next version and stores it.
    pub async fn publish_device_list(&self) -> Result<DeviceList, ApiError> {
        // Two hubs may publish at once; the store keeps versions increasing, so retry on a lost race.
        for _ in 0..5 {
            // The version first, then the devices: a device named by any list up to that version was admitted
            // before this read, so no later version can leave it out unless it was revoked.
            let version = self.store.device_list().await?.map_or(1, |(v, _)| v + 1);
            let devices = self.store.devices().await?;
            let authorized: Vec<_> = devices.iter().filter(|d| d.revoked_at.is_none()).collect();
            // Keys a revoked device held are named dead until they expire (docs/wire.md §12).
            let dead = self.store.dead_keys(self.now(), MAX_DEAD_KEYS).await?;
            let list = DeviceList {
                version,
                issued_at: self.now(),
                devices: authorized.iter().map(|d| d.device).collect(),
                statics: authorized.iter().map(|d| d.static_key).collect(),
                dead,
            };
            let signed = list
                .sign(|tbs| self.keys.sign(tbs))
                .map_err(|e| ApiError::Internal(format!("signing the device list: {e}")))?;
            if self.store.put_device_list(version, &signed).await? {
                return Ok(list);
            }
        }
        Err(ApiError::Busy)
    }
}

/// The most dead device-to-device keys one signed device list names.
const MAX_DEAD_KEYS: u32 = 4096;

pub(crate) fn system_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}
