//! Hub storage behind one repository trait, [`Store`], implemented on SQLite (the embedded default: a file in the
//! data directory) and on PostgreSQL (to scale out: several hub processes on one database).
//!
//! Both implementations run the same SQL; only the migrations differ (`migrations/sqlite`, `migrations/postgres`),
//! and one contract test suite (`tests/contract.rs`) runs against both. The store holds what the hub holds:
//! ciphertext, metadata, the hub's own session keys and join codes — never a key that opens a record.
//!
//! ```
//! use custos_proto::DeviceId;
//! use custos_store::{PendingAdmission, SqliteStore, Store};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let store = SqliteStore::open(&dir.path().join("hub.db")).await?;
//! let device = DeviceId([2, 0, 0x5e, 0x10, 0, 0, 0, 1]);
//! store.put_admission(&PendingAdmission { device, join_code: [7; 16], created_at: 0, expires_at: 600 }).await?;
//! assert!(store.admission(device, 60).await?.is_some());
//! assert!(store.admission(device, 600).await?.is_none(), "expired");
//! # Ok(())
//! # }
//! ```
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

use std::future::Future;

use custos_proto::DeviceId;

mod sql;

pub use sql::{PgStore, SqliteStore};

/// What can go wrong in the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The device is already admitted.
    #[error("device {0} is already admitted")]
    AlreadyAdmitted(DeviceId),
    /// No pending admission for the device, or its code expired or was used.
    #[error("device {0} has no pending admission (unknown, expired or already used)")]
    NoPendingAdmission(DeviceId),
    /// The device is not admitted.
    #[error("device {0} is not admitted")]
    UnknownDevice(DeviceId),
    /// A value does not fit the store (e.g. a sequence number above 2⁶³ − 1).
    #[error("invalid input: {0}")]
    InvalidInput(&'static str),
    /// A stored value is not what the schema promises (e.g. a key of the wrong length).
    #[error("corrupt row: {0}")]
    Corrupt(&'static str),
    /// The database failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// A migration failed.
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// Result of store operations.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A device registered for admission with its one-time join code.
#[derive(Clone, PartialEq, Eq)]
pub struct PendingAdmission {
    /// The device.
    pub device: DeviceId,
    /// The join code (the Noise pre-shared key of the admission handshake).
    pub join_code: [u8; 16],
    /// When the operator registered it (Unix seconds).
    pub created_at: i64,
    /// When the code stops working (Unix seconds).
    pub expires_at: i64,
}

impl std::fmt::Debug for PendingAdmission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingAdmission")
            .field("device", &self.device)
            .field("created_at", &self.created_at)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// An admitted device.
#[derive(Clone, PartialEq, Eq)]
pub struct Device {
    /// The device.
    pub device: DeviceId,
    /// The device's pinned Noise static public key.
    pub static_key: [u8; 32],
    /// The server–device key: authenticates the device's messages to the hub.
    pub session_key: [u8; 32],
    /// When it was admitted (Unix seconds).
    pub admitted_at: i64,
    /// When it was revoked, if it was.
    pub revoked_at: Option<i64>,
    /// The highest message sequence number stored so far, or −1.
    pub max_seq: i64,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("device", &self.device)
            .field("admitted_at", &self.admitted_at)
            .field("revoked_at", &self.revoked_at)
            .field("max_seq", &self.max_seq)
            .finish_non_exhaustive()
    }
}

/// A sealed record as the hub received it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewRecord {
    /// The sending device.
    pub device: DeviceId,
    /// The device's message sequence number: each is stored at most once.
    pub seq: u64,
    /// The record's DPK epoch (from its header).
    pub epoch: u16,
    /// The record's leaf period index (from its header).
    pub leaf: u32,
    /// The sealed record, header included.
    pub body: Vec<u8>,
    /// When the hub received it (Unix seconds).
    pub received_at: i64,
}

/// A stored record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredRecord {
    /// Store-wide id, increasing in insertion order: the paging cursor.
    pub id: i64,
    /// The record as received.
    pub record: NewRecord,
}

/// Which records to return.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordQuery {
    /// The device.
    pub device: DeviceId,
    /// Only this DPK epoch.
    pub epoch: u16,
    /// Leaf indices from (inclusive).
    pub leaf_from: u32,
    /// Leaf indices to (exclusive).
    pub leaf_until: u32,
    /// Only records with an id greater than this (the last id of the previous page).
    pub after: Option<i64>,
    /// At most this many.
    pub limit: u32,
}

/// When and from where a device was last heard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Presence {
    /// The device.
    pub device: DeviceId,
    /// Unix seconds.
    pub last_seen: i64,
    /// The peer address, as the transport saw it.
    pub address: String,
}

/// An application's signed sharing request, as the hub keeps it for the owner's keeper.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredRequest {
    /// Store-wide, increasing: the keeper's inbox cursor.
    pub seq: i64,
    /// The request id (SHA-256 of `signed`).
    pub id: [u8; 32],
    /// The owner it is addressed to (the keeper's signing key).
    pub owner: [u8; 32],
    /// The COSE_Sign1 request.
    pub signed: Vec<u8>,
    /// When the hub took it in.
    pub received_at: i64,
    /// When it expires.
    pub expires_at: i64,
}

/// The hub's storage. Every method is atomic.
pub trait Store: Send + Sync {
    /// Registers `a`, replacing a pending admission of the same device. Fails if the device is already admitted.
    fn put_admission(&self, a: &PendingAdmission) -> impl Future<Output = Result<()>> + Send;

    /// The pending admission of `device`, if any and not expired at `now`.
    fn admission(
        &self,
        device: DeviceId,
        now: i64,
    ) -> impl Future<Output = Result<Option<PendingAdmission>>> + Send;

    /// Uses up the pending admission of `device` and admits it, in one transaction: of two concurrent
    /// completions exactly one succeeds. Fails with [`StoreError::NoPendingAdmission`] if the code is gone or
    /// expired at `now`.
    fn complete_admission(
        &self,
        device: &Device,
        now: i64,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Deletes expired pending admissions; returns how many.
    fn purge_admissions(&self, now: i64) -> impl Future<Output = Result<u64>> + Send;

    /// An admitted device.
    fn device(&self, device: DeviceId) -> impl Future<Output = Result<Option<Device>>> + Send;

    /// All admitted devices, revoked ones included, ordered by id.
    fn devices(&self) -> impl Future<Output = Result<Vec<Device>>> + Send;

    /// Revokes a device at `at`; returns false if it was already revoked.
    fn revoke(&self, device: DeviceId, at: i64) -> impl Future<Output = Result<bool>> + Send;

    /// Stores a batch; for each record, whether it was new (`true`) or a duplicate of a stored sequence number
    /// (`false`, nothing changed). One transaction: on error nothing of the batch is stored.
    fn insert_records(&self, batch: &[NewRecord])
    -> impl Future<Output = Result<Vec<bool>>> + Send;

    /// Records of one device, epoch and leaf range, in id order.
    fn records(&self, q: &RecordQuery) -> impl Future<Output = Result<Vec<StoredRecord>>> + Send;

    /// Notes that `device` was heard at `at` from `address` (never moves `last_seen` back).
    fn touch(
        &self,
        device: DeviceId,
        at: i64,
        address: &str,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Presence of every device heard so far, ordered by id.
    fn presence(&self) -> impl Future<Output = Result<Vec<Presence>>> + Send;

    /// Stores a signed device list; versions only go up (an older or equal version is refused: returns false).
    fn put_device_list(
        &self,
        version: i64,
        signed: &[u8],
    ) -> impl Future<Output = Result<bool>> + Send;

    /// The newest signed device list.
    fn device_list(&self) -> impl Future<Output = Result<Option<(i64, Vec<u8>)>>> + Send;

    /// Keeps a sharing request (`seq` is ignored); false if a request with that id is already there.
    fn put_request(&self, r: &StoredRequest) -> impl Future<Output = Result<bool>> + Send;

    /// A stored request by id.
    fn request(&self, id: [u8; 32]) -> impl Future<Output = Result<Option<StoredRequest>>> + Send;

    /// The owner's requests after `after` (a `seq`) that are not answered and not expired at `now`, oldest first.
    fn inbox(
        &self,
        owner: [u8; 32],
        after: i64,
        now: i64,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<StoredRequest>>> + Send;

    /// Keeps the answer (grant or denial) to a stored request; false if it already has one (answers are final).
    fn put_answer(
        &self,
        request: [u8; 32],
        signed: &[u8],
        at: i64,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// The answer to a request, if there is one.
    fn answer(&self, request: [u8; 32]) -> impl Future<Output = Result<Option<Vec<u8>>>> + Send;

    /// Appends a message to a relay mailbox and, in the same transaction, drops its oldest messages until it holds
    /// at most `max_count` messages and `max_bytes` bytes (the new one always stays). Returns the new message's seq.
    fn relay_push(
        &self,
        mailbox: &str,
        body: &[u8],
        at: i64,
        max_count: u32,
        max_bytes: u64,
    ) -> impl Future<Output = Result<i64>> + Send;

    /// Messages of a mailbox after `after`, oldest first.
    fn relay_fetch(
        &self,
        mailbox: &str,
        after: i64,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<(i64, Vec<u8>)>>> + Send;

    /// Deletes a mailbox's messages up to and including `upto`; returns how many.
    fn relay_ack(&self, mailbox: &str, upto: i64) -> impl Future<Output = Result<u64>> + Send;

    /// Housekeeping; returns how many rows went. Deletes:
    /// - requests that expired unanswered by `now`: nobody can use them;
    /// - answered requests that expired before `requests_before`, with their answers (the grace period in which
    ///   the application can still fetch its answer);
    /// - relayed messages created before `relay_before`.
    fn purge_sharing(
        &self,
        now: i64,
        requests_before: i64,
        relay_before: i64,
    ) -> impl Future<Output = Result<u64>> + Send;

    /// Notes that `device` reserved the sequence numbers `from..until` (exclusive) but never sent them (a crash
    /// between reserving and queueing), so they are not counted as losses. Idempotent; overlapping ranges are
    /// fine; an empty range changes nothing. Fails with [`StoreError::UnknownDevice`] if the device is not admitted.
    fn put_skipped(
        &self,
        device: DeviceId,
        from: u64,
        until: u64,
        at: i64,
    ) -> impl Future<Output = Result<()>> + Send;

    /// The sequence-number ranges `[from, until)` of `device`, below its highest stored one, that are neither
    /// stored nor noted as skipped: real losses. At most `limit` ranges, lowest first (none for an unknown device).
    fn gaps(
        &self,
        device: DeviceId,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<(u64, u64)>>> + Send;

    /// How many requests are open (not expired at `now`, not answered): for `owner`, or for everyone with `None`.
    fn open_requests(
        &self,
        owner: Option<[u8; 32]>,
        now: i64,
    ) -> impl Future<Output = Result<u64>> + Send;

    /// Opens `device`'s pairing window until `until` (Unix seconds): only then does the hub relay pairing messages
    /// for it. False if the device is not admitted or is revoked.
    fn open_pairing(
        &self,
        device: DeviceId,
        until: i64,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// Whether `device`'s pairing window is open at `now` (admitted, not revoked, window not past).
    fn pairing_open(&self, device: DeviceId, now: i64)
    -> impl Future<Output = Result<bool>> + Send;
}

/// Either store, chosen at run time from a database URL: what a service holds when its operator picks the backend.
#[derive(Clone, Debug)]
pub enum AnyStore {
    /// SQLite in a file.
    Sqlite(SqliteStore),
    /// PostgreSQL.
    Postgres(PgStore),
}

impl AnyStore {
    /// `postgres://…` or `postgresql://…` opens PostgreSQL; anything else is taken as the path of a SQLite file.
    pub async fn open(location: &str) -> Result<Self> {
        if location.starts_with("postgres://") || location.starts_with("postgresql://") {
            Ok(Self::Postgres(PgStore::connect(location).await?))
        } else {
            Ok(Self::Sqlite(
                SqliteStore::open(std::path::Path::new(location)).await?,
            ))
        }
    }

    /// Closes the connections.
    pub async fn close(&self) {
        match self {
            Self::Sqlite(s) => s.close().await,
            Self::Postgres(s) => s.close().await,
        }
    }
}

macro_rules! delegate {
    ($self:ident, $method:ident ( $($arg:expr),* )) => {
        match $self {
            AnyStore::Sqlite(s) => s.$method($($arg),*).await,
            AnyStore::Postgres(s) => s.$method($($arg),*).await,
        }
    };
}

impl Store for AnyStore {
    async fn put_admission(&self, a: &PendingAdmission) -> Result<()> {
        delegate!(self, put_admission(a))
    }
    async fn admission(&self, device: DeviceId, now: i64) -> Result<Option<PendingAdmission>> {
        delegate!(self, admission(device, now))
    }
    async fn complete_admission(&self, device: &Device, now: i64) -> Result<()> {
        delegate!(self, complete_admission(device, now))
    }
    async fn purge_admissions(&self, now: i64) -> Result<u64> {
        delegate!(self, purge_admissions(now))
    }
    async fn device(&self, device: DeviceId) -> Result<Option<Device>> {
        delegate!(self, device(device))
    }
    async fn devices(&self) -> Result<Vec<Device>> {
        delegate!(self, devices())
    }
    async fn revoke(&self, device: DeviceId, at: i64) -> Result<bool> {
        delegate!(self, revoke(device, at))
    }
    async fn insert_records(&self, batch: &[NewRecord]) -> Result<Vec<bool>> {
        delegate!(self, insert_records(batch))
    }
    async fn records(&self, q: &RecordQuery) -> Result<Vec<StoredRecord>> {
        delegate!(self, records(q))
    }
    async fn touch(&self, device: DeviceId, at: i64, address: &str) -> Result<()> {
        delegate!(self, touch(device, at, address))
    }
    async fn presence(&self) -> Result<Vec<Presence>> {
        delegate!(self, presence())
    }
    async fn put_device_list(&self, version: i64, signed: &[u8]) -> Result<bool> {
        delegate!(self, put_device_list(version, signed))
    }
    async fn device_list(&self) -> Result<Option<(i64, Vec<u8>)>> {
        delegate!(self, device_list())
    }
    async fn put_request(&self, r: &StoredRequest) -> Result<bool> {
        delegate!(self, put_request(r))
    }
    async fn request(&self, id: [u8; 32]) -> Result<Option<StoredRequest>> {
        delegate!(self, request(id))
    }
    async fn inbox(
        &self,
        owner: [u8; 32],
        after: i64,
        now: i64,
        limit: u32,
    ) -> Result<Vec<StoredRequest>> {
        delegate!(self, inbox(owner, after, now, limit))
    }
    async fn put_answer(&self, request: [u8; 32], signed: &[u8], at: i64) -> Result<bool> {
        delegate!(self, put_answer(request, signed, at))
    }
    async fn answer(&self, request: [u8; 32]) -> Result<Option<Vec<u8>>> {
        delegate!(self, answer(request))
    }
    async fn relay_push(
        &self,
        mailbox: &str,
        body: &[u8],
        at: i64,
        max_count: u32,
        max_bytes: u64,
    ) -> Result<i64> {
        delegate!(self, relay_push(mailbox, body, at, max_count, max_bytes))
    }
    async fn relay_fetch(
        &self,
        mailbox: &str,
        after: i64,
        limit: u32,
    ) -> Result<Vec<(i64, Vec<u8>)>> {
        delegate!(self, relay_fetch(mailbox, after, limit))
    }
    async fn relay_ack(&self, mailbox: &str, upto: i64) -> Result<u64> {
        delegate!(self, relay_ack(mailbox, upto))
    }
    async fn purge_sharing(
        &self,
        now: i64,
        requests_before: i64,
        relay_before: i64,
    ) -> Result<u64> {
        delegate!(self, purge_sharing(now, requests_before, relay_before))
    }
    async fn put_skipped(&self, device: DeviceId, from: u64, until: u64, at: i64) -> Result<()> {
        delegate!(self, put_skipped(device, from, until, at))
    }
    async fn gaps(&self, device: DeviceId, limit: u32) -> Result<Vec<(u64, u64)>> {
        delegate!(self, gaps(device, limit))
    }
    async fn open_requests(&self, owner: Option<[u8; 32]>, now: i64) -> Result<u64> {
        delegate!(self, open_requests(owner, now))
    }
    async fn open_pairing(&self, device: DeviceId, until: i64) -> Result<bool> {
        delegate!(self, open_pairing(device, until))
    }
    async fn pairing_open(&self, device: DeviceId, now: i64) -> Result<bool> {
        delegate!(self, pairing_open(device, now))
    }
}
