//! Hub storage behind one repository trait, [`Store`], implemented on SQLite (the embedded default: a file in the
//! data directory) and on PostgreSQL (to scale out: several hub processes on one database).
//!
//! Both implementations run the same SQL; only the migrations differ (`migrations/sqlite`, `migrations/postgres`),
//! and one contract test suite (`tests/contract.rs`) runs against both. The store holds what the hub holds:
//! ciphertext, metadata, the hub's own session keys and join codes — never a key that opens a record.
//!
//! The identity registry (docs/registry.md) keeps its own tables behind a second trait, [`RegistryStore`], on the
//! same two stores (migration 0008): its append-only transparency log, one row per entry, and the indexes derived
//! from the entries (certificates with their keys and user ids, signed statements), its signed checkpoints and what
//! it last saw of each peer's log.
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
    /// An account of that (normalised) name exists already.
    #[error("the account name is taken")]
    NameTaken,
    /// No such account.
    #[error("no account {0}")]
    UnknownAccount(i64),
    /// The device's control queue holds as many unanswered, unexpired messages as it may.
    #[error("device {0} has too many control messages waiting")]
    QueueFull(DeviceId),
    /// No control message of that id for that device.
    #[error("no control message {1} for device {0}")]
    UnknownControl(DeviceId, i64),
    /// The registry's log did not have the size the writer expected: another writer appended first, or the
    /// writer's view of the log is stale. Nothing was written; the writer re-reads the log before trying again, so
    /// two writers can never fork it.
    #[error("the log holds {actual} entries, not the {expected} the writer expected")]
    LogConflict {
        /// The size the writer expected (the index it meant to append at).
        expected: u64,
        /// The size the log had.
        actual: u64,
    },
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

/// What checking a device's request, or wrapping a key for it, needs of its row: one of
/// [`Store::device_keys_among`].
#[derive(Clone, PartialEq, Eq)]
pub struct DeviceKeys {
    /// The device.
    pub device: DeviceId,
    /// The server–device key.
    pub session_key: [u8; 32],
    /// When it was revoked, if it was.
    pub revoked_at: Option<i64>,
}

impl std::fmt::Debug for DeviceKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceKeys")
            .field("device", &self.device)
            .field("revoked_at", &self.revoked_at)
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

/// What a device's owner has granted another account.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rights {
    /// May send commands (and see state).
    Control,
    /// May see state only.
    View,
}

impl Rights {
    /// The stored (and JSON) name: `control` or `view`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Control => "control",
            Self::View => "view",
        }
    }

    /// Parses [`Rights::as_str`].
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "control" => Some(Self::Control),
            "view" => Some(Self::View),
            _ => None,
        }
    }
}

/// The login-throttle state of an account (see docs/api.md, "Login throttling"). Kept in the store because hub
/// replicas share it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoginThrottle {
    /// Consecutive failed logins from anywhere but `home`.
    pub failures: u32,
    /// When the last of them was.
    pub last_failure_at: Option<i64>,
    /// The client address of the last successful login, if any.
    pub home: Option<String>,
    /// Consecutive failed logins from `home`.
    pub home_failures: u32,
    /// When the last of them was.
    pub home_last_failure_at: Option<i64>,
}

/// A user account.
#[derive(Clone, PartialEq, Eq)]
pub struct Account {
    /// Store-wide id.
    pub id: i64,
    /// The normalised name.
    pub name: String,
    /// The password's Argon2id hash, a PHC string.
    pub password_hash: String,
    /// When it was created (Unix seconds).
    pub created_at: i64,
    /// Failed-login state.
    pub throttle: LoginThrottle,
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("created_at", &self.created_at)
            .field("throttle", &self.throttle)
            .finish_non_exhaustive()
    }
}

/// A login session, found by the SHA-256 of its bearer token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    /// SHA-256 of the bearer token (the token itself is never stored).
    pub token_hash: [u8; 32],
    /// The account.
    pub account: i64,
    /// When it was created (Unix seconds).
    pub created_at: i64,
    /// When it ends unless used again.
    pub expires_at: i64,
    /// When it was last used.
    pub last_used_at: i64,
}

/// A change of a device's owner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnershipChange {
    /// The device.
    pub device: DeviceId,
    /// The previous owner; `None` for the first claim.
    pub from: Option<i64>,
    /// The new owner.
    pub to: i64,
    /// When (Unix seconds).
    pub at: i64,
}

/// A one-time claim token for (account, device), by SHA-256.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    /// SHA-256 of the token.
    pub token_hash: [u8; 32],
    /// The device to be claimed.
    pub device: DeviceId,
    /// The account claiming it.
    pub account: i64,
    /// When it was issued.
    pub created_at: i64,
    /// When it stops working.
    pub expires_at: i64,
}

/// A message for a device's control queue, as posted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewControl {
    /// The device it is for.
    pub device: DeviceId,
    /// The account that posted it.
    pub account: i64,
    /// Its type byte (0x41 command, 0x45 list, 0x47 claim seal).
    pub kind: u8,
    /// The message, opaque to the hub.
    pub message: Vec<u8>,
    /// When it was posted.
    pub created_at: i64,
    /// When it expires.
    pub expires_at: i64,
}

/// A stored control message and its answer, once the device gave one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControlMessage {
    /// Store-wide id, increasing: the device's cursor.
    pub id: i64,
    /// The message as posted.
    pub posted: NewControl,
    /// The device's answer.
    pub answer: Option<Vec<u8>>,
    /// When the answer came.
    pub answered_at: Option<i64>,
}

/// A device-to-device key as the hub, the Central Entity, remembers it (docs/wire.md §12): who asked, with whom, its id
/// and expiry, and the packages waiting for peers. Never the key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionKeyRecord {
    /// The node that asked for the key.
    pub requester: DeviceId,
    /// The requester's key id.
    pub kid: [u8; 8],
    /// The request type (0x41–0x44).
    pub kind: u8,
    /// When the key dies (Unix seconds).
    pub expires_at: i64,
    /// When the hub translated or drew it.
    pub created_at: i64,
    /// The peers, by id.
    pub peers: Vec<KeyPeer>,
}

/// One peer of a device-to-device key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyPeer {
    /// The peer.
    pub peer: DeviceId,
    /// The package wrapped for it, while it waits for the peer (direct delivery only).
    pub package: Option<Vec<u8>>,
    /// When the peer's receipt came.
    pub received_at: Option<i64>,
}

/// A package waiting for a peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyDelivery {
    /// Who asked for the key.
    pub requester: DeviceId,
    /// Its key id.
    pub kid: [u8; 8],
    /// The package (a delivery, type 0x48).
    pub package: Vec<u8>,
    /// When the key dies.
    pub expires_at: i64,
}

/// One granted node in the grant index: the leaves `[from_leaf, until_leaf)` of `device`'s DPK `epoch` that the
/// application with key `app` may fetch, because a grant answering `request` covers them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrantSpan {
    /// The application's Ed25519 key (the request's app key).
    pub app: [u8; 32],
    /// The device.
    pub device: DeviceId,
    /// The DPK epoch.
    pub epoch: u16,
    /// The first leaf covered.
    pub from_leaf: u32,
    /// The leaf after the last one covered (exclusive), above `from_leaf`.
    pub until_leaf: u64,
    /// The request the grant answers.
    pub request: [u8; 32],
}

/// The longest device state, bytes.
pub const MAX_DEVICE_STATE: usize = 64;

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

    /// The keys of those of `ids` that are admitted devices (revoked ones included), in no particular order: one
    /// query for a batch, three columns a row (each row returned costs a hand-off between threads in SQLite's
    /// driver). At most 10 000 ids.
    fn device_keys_among(
        &self,
        ids: &[DeviceId],
    ) -> impl Future<Output = Result<Vec<DeviceKeys>>> + Send;

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

    /// Creates an account; returns its id. `name` must be normalised by the caller. Fails with
    /// [`StoreError::NameTaken`] if the name exists.
    fn create_account(
        &self,
        name: &str,
        password_hash: &str,
        at: i64,
    ) -> impl Future<Output = Result<i64>> + Send;

    /// The account of that (normalised) name.
    fn account_by_name(&self, name: &str) -> impl Future<Output = Result<Option<Account>>> + Send;

    /// The account of that id.
    fn account(&self, id: i64) -> impl Future<Output = Result<Option<Account>>> + Send;

    /// Replaces an account's password hash and, in the same transaction, ends every session of the account but
    /// `keep`; returns how many sessions ended. [`StoreError::UnknownAccount`] if there is no such account.
    fn set_password(
        &self,
        account: i64,
        password_hash: &str,
        keep: Option<[u8; 32]>,
    ) -> impl Future<Output = Result<u64>> + Send;

    /// Counts a failed login at `at`: against the home address's counter if `home`, else the other one. Returns
    /// the new state. [`StoreError::UnknownAccount`] if there is no such account.
    fn login_failed(
        &self,
        account: i64,
        home: bool,
        at: i64,
    ) -> impl Future<Output = Result<LoginThrottle>> + Send;

    /// A successful login from `address`: both failure counters go to zero and `address` becomes home.
    fn login_succeeded(
        &self,
        account: i64,
        address: &str,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Stores a new session. [`StoreError::UnknownAccount`] if the account does not exist.
    fn put_session(&self, s: &Session) -> impl Future<Output = Result<()>> + Send;

    /// The session of that token hash, if it has not expired at `now`.
    fn session(
        &self,
        token_hash: [u8; 32],
        now: i64,
    ) -> impl Future<Output = Result<Option<Session>>> + Send;

    /// Notes a use of an unexpired session at `now` and moves its end to `expires_at` (never back); false if
    /// it is gone or expired.
    fn touch_session(
        &self,
        token_hash: [u8; 32],
        now: i64,
        expires_at: i64,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// Ends a session; false if there was none.
    fn delete_session(&self, token_hash: [u8; 32]) -> impl Future<Output = Result<bool>> + Send;

    /// Deletes sessions expired at `now`; returns how many.
    fn purge_sessions(&self, now: i64) -> impl Future<Output = Result<u64>> + Send;

    /// Makes `to` the owner of `device` if its owner is now `from` (`None`: it has none), and logs the change, in
    /// one transaction. A transfer (from an owner) also ends every share of the device. False if the owner is not
    /// `from` (nothing changed). [`StoreError::UnknownDevice`] / [`StoreError::UnknownAccount`] for unknown ones.
    fn set_owner(
        &self,
        device: DeviceId,
        from: Option<i64>,
        to: i64,
        at: i64,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// The owning account of a device.
    fn owner(&self, device: DeviceId) -> impl Future<Output = Result<Option<i64>>> + Send;

    /// The devices an account owns, ordered by id.
    fn owned_devices(&self, account: i64) -> impl Future<Output = Result<Vec<DeviceId>>> + Send;

    /// Every change of a device's owner, oldest first.
    fn ownership_log(
        &self,
        device: DeviceId,
    ) -> impl Future<Output = Result<Vec<OwnershipChange>>> + Send;

    /// Grants (or changes) `account`'s rights on `device`. [`StoreError::InvalidInput`] if the account owns the
    /// device.
    fn put_share(
        &self,
        device: DeviceId,
        account: i64,
        rights: Rights,
        at: i64,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Withdraws a share; false if there was none.
    fn remove_share(
        &self,
        device: DeviceId,
        account: i64,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// The devices shared with an account and its rights on each, ordered by device.
    fn shared_with(
        &self,
        account: i64,
    ) -> impl Future<Output = Result<Vec<(DeviceId, Rights)>>> + Send;

    /// The accounts a device is shared with, ordered by account.
    fn shares_of(
        &self,
        device: DeviceId,
    ) -> impl Future<Output = Result<Vec<(i64, Rights)>>> + Send;

    /// Keeps a claim token (replacing none: false if that hash exists).
    fn put_claim(&self, c: &Claim) -> impl Future<Output = Result<bool>> + Send;

    /// Uses up a claim token: returns it if it existed and had not expired at `now`; it is gone either way. Of
    /// two concurrent takes, at most one gets it.
    fn take_claim(
        &self,
        token_hash: [u8; 32],
        now: i64,
    ) -> impl Future<Output = Result<Option<Claim>>> + Send;

    /// How many claim tokens of `account` are unexpired at `now`: for `device` only, or for any with `None`.
    fn open_claims(
        &self,
        account: i64,
        device: Option<DeviceId>,
        now: i64,
    ) -> impl Future<Output = Result<u64>> + Send;

    /// When `device` was last heard (see [`Store::touch`]), if ever.
    fn last_seen(&self, device: DeviceId) -> impl Future<Output = Result<Option<i64>>> + Send;

    /// Queues a control message; returns its id. Fails with [`StoreError::QueueFull`] if the device already has
    /// `max_waiting` messages that are unanswered and unexpired at `m.created_at`, with
    /// [`StoreError::UnknownDevice`] if it is not admitted.
    fn push_control(
        &self,
        m: &NewControl,
        max_waiting: u32,
    ) -> impl Future<Output = Result<i64>> + Send;

    /// What a device still has to act on: its messages after `after` that are unanswered and unexpired at `now`,
    /// oldest first.
    fn pending_control(
        &self,
        device: DeviceId,
        after: i64,
        now: i64,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<ControlMessage>>> + Send;

    /// One control message of a device, answered or not, expired or not (until purged).
    fn control_message(
        &self,
        device: DeviceId,
        id: i64,
    ) -> impl Future<Output = Result<Option<ControlMessage>>> + Send;

    /// Keeps the device's answer to a control message; false if it already has one (answers are final).
    /// [`StoreError::UnknownControl`] if the device has no message of that id.
    fn put_control_answer(
        &self,
        device: DeviceId,
        id: i64,
        answer: &[u8],
        at: i64,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// Deletes control messages and claims that expired before `before`; returns how many.
    fn purge_control(&self, before: i64) -> impl Future<Output = Result<u64>> + Send;

    /// Keeps a grant as the answer to a stored request and indexes its spans (the application, device, epoch and
    /// leaves each granted node covers), in one transaction; false if the request already has an answer (answers
    /// are final, and then nothing is indexed). [`StoreError::InvalidInput`] if there is no such request.
    fn put_grant(
        &self,
        request: [u8; 32],
        signed: &[u8],
        at: i64,
        spans: &[GrantSpan],
    ) -> impl Future<Output = Result<bool>> + Send;

    /// The spans the application `app` was granted on `device`, ordered by epoch and leaf.
    fn grant_spans(
        &self,
        app: [u8; 32],
        device: DeviceId,
    ) -> impl Future<Output = Result<Vec<GrantSpan>>> + Send;

    /// As [`Store::records`], but only records whose leaf lies in a span granted to `app` for their device and
    /// epoch.
    fn granted_records(
        &self,
        q: &RecordQuery,
        app: [u8; 32],
    ) -> impl Future<Output = Result<Vec<StoredRecord>>> + Send;

    /// Sets a device's reported state (at most [`MAX_DEVICE_STATE`] bytes), unless a newer one is stored.
    fn put_device_state(
        &self,
        device: DeviceId,
        state: &str,
        at: i64,
    ) -> impl Future<Output = Result<()>> + Send;

    /// A device's last reported state and when.
    fn device_state(
        &self,
        device: DeviceId,
    ) -> impl Future<Output = Result<Option<(String, i64)>>> + Send;

    /// Remembers a device-to-device key with its peers, in one transaction. `false` if the requester used this key id
    /// before (the hub then refuses the request). Fails with [`StoreError::UnknownDevice`] if a device is unknown.
    fn put_session_key(&self, k: &SessionKeyRecord) -> impl Future<Output = Result<bool>> + Send;

    /// Remembers many keys at once, in one transaction (a gateway's batch): for each, `true` if it is new, `false`
    /// if its requester used its key id before (nothing of it is stored). Fails, storing nothing, with
    /// [`StoreError::InvalidInput`] if a key names a device that is not admitted.
    fn put_session_keys(
        &self,
        ks: &[SessionKeyRecord],
    ) -> impl Future<Output = Result<Vec<bool>>> + Send;

    /// The key `kid` of `requester`, with its peers.
    fn session_key(
        &self,
        requester: DeviceId,
        kid: [u8; 8],
    ) -> impl Future<Output = Result<Option<SessionKeyRecord>>> + Send;

    /// Up to `limit` packages waiting for `peer` whose key is alive at `now`, oldest first.
    fn key_deliveries(
        &self,
        peer: DeviceId,
        now: i64,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<KeyDelivery>>> + Send;

    /// `peer` holds the key: its package is dropped and the time noted (the first time only). `false` if `peer` is
    /// not a peer of that key.
    fn key_received(
        &self,
        peer: DeviceId,
        requester: DeviceId,
        kid: [u8; 8],
        at: i64,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// Keys alive at `now` that a revoked device held (as requester or peer): `(requester, kid, expires_at)`, at most
    /// `limit`, ordered. The signed device list names them as dead.
    fn dead_keys(
        &self,
        now: i64,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<(DeviceId, [u8; 8], i64)>>> + Send;

    /// Forgets keys that died before `before`. Returns how many.
    fn purge_session_keys(&self, before: i64) -> impl Future<Output = Result<u64>> + Send;

    /// Remembers the TPM storage parent (`TPM2B_PUBLIC`, 1 to 256 bytes) `device` registered, replacing any
    /// earlier one. Fails with [`StoreError::UnknownDevice`] if the device is unknown and with
    /// [`StoreError::InvalidInput`] if `public` is empty or longer than 256 bytes.
    fn put_tpm_parent(
        &self,
        device: DeviceId,
        public: &[u8],
    ) -> impl Future<Output = Result<()>> + Send;

    /// The registered TPM storage parents of those of `ids` that have one, in one query.
    fn tpm_parents_among(
        &self,
        ids: &[DeviceId],
    ) -> impl Future<Output = Result<std::collections::HashMap<DeviceId, Vec<u8>>>> + Send;
}

/// One entry to append to a registry's log, with the index rows it adds: written in one transaction, so the
/// indexes never hold anything the log does not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewLogEntry {
    /// What the entry is: 1, OpenPGP certificate packets; 2, a signed statement (a status or a code identity).
    pub kind: u8,
    /// The entry's bytes, exactly as logged (and hashed).
    pub data: Vec<u8>,
    /// SHA-256(0x00 ‖ `data`), computed by the caller: the store keeps it so the tree can be rebuilt without
    /// rehashing every entry.
    pub leaf_hash: [u8; 32],
    /// The domain the entry belongs to: peers sync the domains they serve.
    pub domain: String,
    /// When the registry took it in (Unix seconds).
    pub added_at: i64,
    /// Set when the entry creates or extends a certificate: the certificate as it stands after the entry.
    pub cert: Option<CertRow>,
    /// Set when the entry is a signed statement.
    pub statement: Option<StatementRow>,
}

/// A certificate as the registry currently holds it (all its logged packets merged), with what it is looked up by.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertRow {
    /// The primary key's v4 fingerprint: the certificate's identity.
    pub fingerprint: [u8; 20],
    /// The domain it belongs to; set by the entry that created it and kept by later ones.
    pub domain: String,
    /// The whole merged certificate (binary OpenPGP); an update replaces it.
    pub data: Vec<u8>,
    /// The fingerprints of the primary key and of every subkey, each once, the primary key among them: it is found
    /// by any of them or by their key ids (their last 8 bytes).
    pub keys: Vec<[u8; 20]>,
    /// Its user ids, for search (no NUL characters: PostgreSQL text cannot hold them).
    pub uids: Vec<String>,
    /// When it last changed (Unix seconds).
    pub updated_at: i64,
}

/// The most distinct words a user id search may hold ([`RegistryStore::certs_by_words`]); a device's User ID
/// (`custos device be-e0-59-99-f4-db-6a-da`) has up to 10.
pub const MAX_SEARCH_WORDS: usize = 16;

/// A word is cut to this many characters, in the index and in a search alike.
pub const MAX_WORD_CHARS: usize = 64;

/// The words of a user id or of a search, as the registry's word index holds them: the runs of letters and digits
/// (Unicode `char::is_alphanumeric`), lowercased by Unicode rules, each cut to [`MAX_WORD_CHARS`] characters,
/// each once, sorted. `Alice Example <alice@example.org>` holds `alice`, `example` and `org`.
pub fn uid_words(text: &str) -> Vec<String> {
    let mut words: Vec<String> = text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| w.to_lowercase().chars().take(MAX_WORD_CHARS).collect())
        .collect();
    words.sort_unstable();
    words.dedup();
    words
}

/// A signed statement's index row: what it is about, who signed it and when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatementRow {
    /// What it is about: a certificate fingerprint (20 bytes) or a code digest (32 bytes).
    pub subject: Vec<u8>,
    /// 1, a status; 2, a code identity.
    pub kind: u8,
    /// The fingerprint of the signing party's key.
    pub signer: [u8; 20],
    /// When the signer issued it (Unix seconds).
    pub issued_at: i64,
    /// For a status (kind 1), its code.
    pub status: Option<u8>,
}

/// An entry of a registry's log, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogEntry {
    /// Its leaf index in the log.
    pub index: u64,
    /// What it is (see [`NewLogEntry::kind`]).
    pub kind: u8,
    /// Its bytes, exactly as logged.
    pub data: Vec<u8>,
    /// SHA-256(0x00 ‖ `data`).
    pub leaf_hash: [u8; 32],
    /// The domain it belongs to.
    pub domain: String,
    /// When the registry took it in (Unix seconds).
    pub added_at: i64,
}

/// A stored statement with the log entry that holds it: the entry is what a client verifies (and proves included).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredStatement {
    /// The log index of its entry.
    pub index: u64,
    /// Its index row.
    pub row: StatementRow,
    /// The entry's bytes (the signed statement).
    pub data: Vec<u8>,
}

/// What this registry last saw of a peer's log, so that sync resumes where it stopped and notices a peer that
/// rewrote its history (a later checkpoint that is not consistent with this one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerLog {
    /// The peer (its name or URL, as the caller identifies it; no NUL characters).
    pub peer: String,
    /// The size of its log at the last verified checkpoint.
    pub size: u64,
    /// The root hash at that size.
    pub root: [u8; 32],
    /// That checkpoint, as signed by the peer: the evidence if the peer later forks.
    pub checkpoint: Vec<u8>,
    /// The roots of the perfect subtrees of its log at that size, largest first, 32 bytes each: enough to check
    /// the next entries against the next checkpoint without keeping the peer's tree.
    pub frontier: Vec<u8>,
    /// Why the peer is distrusted, once it was caught rewriting history.
    pub flagged: Option<String>,
    /// When this was last updated (Unix seconds).
    pub updated_at: i64,
}

/// The identity registry's storage (docs/registry.md): an append-only log and what is indexed from it. The Merkle
/// tree is not stored: the caller rebuilds it in memory from [`RegistryStore::leaf_hashes`]. Every method is atomic;
/// log indices and sizes above 2⁶³ − 1 are refused with [`StoreError::InvalidInput`].
pub trait RegistryStore: Send + Sync {
    /// Appends `e` at index `expected_size` with its certificate and statement rows, in one transaction, and returns
    /// the index. Fails with [`StoreError::LogConflict`], writing nothing, unless the log holds exactly
    /// `expected_size` entries: of two writers that read the same size, one appends and the other fails, so the log
    /// never forks. A certificate is upserted: its data, keys, user ids and time are replaced, its domain kept. Fails
    /// with [`StoreError::InvalidInput`] for a certificate whose keys omit its primary key or repeat one, a
    /// statement subject that is neither 20 nor 32 bytes, or a NUL character in the domain or a user id.
    fn append_entry(
        &self,
        e: &NewLogEntry,
        expected_size: u64,
    ) -> impl Future<Output = Result<u64>> + Send;

    /// How many entries the log holds (the next index).
    fn log_size(&self) -> impl Future<Output = Result<u64>> + Send;

    /// The leaf hashes of the entries `from..to` (exclusive) that exist, in index order: fewer than `to - from`
    /// past the end of the log. One query, streamed, to rebuild the tree at start (10⁶ entries are 32 MB).
    fn leaf_hashes(&self, from: u64, to: u64)
    -> impl Future<Output = Result<Vec<[u8; 32]>>> + Send;

    /// At most `limit` entries from index `from` on, in index order; with `domains`, only entries of those domains
    /// (none for an empty list). What a peer pages through to sync.
    fn log_entries(
        &self,
        from: u64,
        limit: u32,
        domains: Option<&[String]>,
    ) -> impl Future<Output = Result<Vec<LogEntry>>> + Send;

    /// The entry at `index`, if the log is that long.
    fn log_entry(&self, index: u64) -> impl Future<Output = Result<Option<LogEntry>>> + Send;

    /// The certificate whose primary key has this fingerprint.
    fn cert(&self, fingerprint: [u8; 20]) -> impl Future<Output = Result<Option<CertRow>>> + Send;

    /// The certificate holding a key: `id` is the 20-byte fingerprint of its primary key or of any subkey, or an
    /// 8-byte key id (the last 8 bytes of one). If several match (a subkey attached to two certificates, or two key
    /// ids alike), the one whose primary key it is wins, then the one logged first. Other lengths are
    /// [`StoreError::InvalidInput`].
    fn cert_by_key(&self, id: &[u8]) -> impl Future<Output = Result<Option<CertRow>>> + Send;

    /// The domain and data of the certificate [`cert_by_key`](Self::cert_by_key) finds, in one row, without its
    /// keys and user ids: what serving it needs.
    fn cert_data_by_key(
        &self,
        id: &[u8],
    ) -> impl Future<Output = Result<Option<(String, Vec<u8>)>>> + Send;

    /// Up to `limit` certificates whose user ids hold every word of `search` ([`uid_words`]: whole words,
    /// case-insensitively, as SKS searches), in the order they were first logged. A search of no words (only
    /// punctuation, say) or of more than [`MAX_SEARCH_WORDS`] words finds nothing. It reads a word index, not the
    /// user ids.
    fn certs_by_words(
        &self,
        search: &str,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<CertRow>>> + Send;

    /// Up to `limit` certificates first logged at index `from` or later, in the order they were first logged, each
    /// with that index: what a reader pages through to hold every certificate in memory.
    fn certs_from(
        &self,
        from: u64,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<(u64, CertRow)>>> + Send;

    /// How many certificates the registry holds.
    fn cert_count(&self) -> impl Future<Output = Result<u64>> + Send;

    /// Every statement about `subject`, ordered by when it was issued, then by log index: the last one is the
    /// newest word.
    fn statements(
        &self,
        subject: &[u8],
    ) -> impl Future<Output = Result<Vec<StoredStatement>>> + Send;

    /// Keeps a signed checkpoint of the log at `size`, replacing one of the same size (the same tree, signed again
    /// or cosigned). Fails with [`StoreError::InvalidInput`] if the log holds fewer than `size` entries: a checkpoint
    /// must sign a tree the registry has.
    fn put_checkpoint(&self, size: u64, note: &[u8]) -> impl Future<Output = Result<()>> + Send;

    /// The checkpoint of the largest size, with its size.
    fn checkpoint(&self) -> impl Future<Output = Result<Option<(u64, Vec<u8>)>>> + Send;

    /// What this registry last saw of `peer`'s log.
    fn peer_log(&self, peer: &str) -> impl Future<Output = Result<Option<PeerLog>>> + Send;

    /// Remembers what was seen of a peer's log, replacing what was there.
    fn put_peer_log(&self, p: &PeerLog) -> impl Future<Output = Result<()>> + Send;
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
    async fn device_keys_among(&self, ids: &[DeviceId]) -> Result<Vec<DeviceKeys>> {
        delegate!(self, device_keys_among(ids))
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

    async fn create_account(&self, name: &str, password_hash: &str, at: i64) -> Result<i64> {
        delegate!(self, create_account(name, password_hash, at))
    }
    async fn account_by_name(&self, name: &str) -> Result<Option<Account>> {
        delegate!(self, account_by_name(name))
    }
    async fn account(&self, id: i64) -> Result<Option<Account>> {
        delegate!(self, account(id))
    }
    async fn set_password(
        &self,
        account: i64,
        password_hash: &str,
        keep: Option<[u8; 32]>,
    ) -> Result<u64> {
        delegate!(self, set_password(account, password_hash, keep))
    }
    async fn login_failed(&self, account: i64, home: bool, at: i64) -> Result<LoginThrottle> {
        delegate!(self, login_failed(account, home, at))
    }
    async fn login_succeeded(&self, account: i64, address: &str) -> Result<()> {
        delegate!(self, login_succeeded(account, address))
    }
    async fn put_session(&self, s: &Session) -> Result<()> {
        delegate!(self, put_session(s))
    }
    async fn session(&self, token_hash: [u8; 32], now: i64) -> Result<Option<Session>> {
        delegate!(self, session(token_hash, now))
    }
    async fn touch_session(&self, token_hash: [u8; 32], now: i64, expires_at: i64) -> Result<bool> {
        delegate!(self, touch_session(token_hash, now, expires_at))
    }
    async fn delete_session(&self, token_hash: [u8; 32]) -> Result<bool> {
        delegate!(self, delete_session(token_hash))
    }
    async fn purge_sessions(&self, now: i64) -> Result<u64> {
        delegate!(self, purge_sessions(now))
    }
    async fn set_owner(
        &self,
        device: DeviceId,
        from: Option<i64>,
        to: i64,
        at: i64,
    ) -> Result<bool> {
        delegate!(self, set_owner(device, from, to, at))
    }
    async fn owner(&self, device: DeviceId) -> Result<Option<i64>> {
        delegate!(self, owner(device))
    }
    async fn owned_devices(&self, account: i64) -> Result<Vec<DeviceId>> {
        delegate!(self, owned_devices(account))
    }
    async fn ownership_log(&self, device: DeviceId) -> Result<Vec<OwnershipChange>> {
        delegate!(self, ownership_log(device))
    }
    async fn put_share(
        &self,
        device: DeviceId,
        account: i64,
        rights: Rights,
        at: i64,
    ) -> Result<()> {
        delegate!(self, put_share(device, account, rights, at))
    }
    async fn remove_share(&self, device: DeviceId, account: i64) -> Result<bool> {
        delegate!(self, remove_share(device, account))
    }
    async fn shared_with(&self, account: i64) -> Result<Vec<(DeviceId, Rights)>> {
        delegate!(self, shared_with(account))
    }
    async fn shares_of(&self, device: DeviceId) -> Result<Vec<(i64, Rights)>> {
        delegate!(self, shares_of(device))
    }
    async fn put_claim(&self, c: &Claim) -> Result<bool> {
        delegate!(self, put_claim(c))
    }
    async fn take_claim(&self, token_hash: [u8; 32], now: i64) -> Result<Option<Claim>> {
        delegate!(self, take_claim(token_hash, now))
    }
    async fn open_claims(&self, account: i64, device: Option<DeviceId>, now: i64) -> Result<u64> {
        delegate!(self, open_claims(account, device, now))
    }
    async fn last_seen(&self, device: DeviceId) -> Result<Option<i64>> {
        delegate!(self, last_seen(device))
    }
    async fn push_control(&self, m: &NewControl, max_waiting: u32) -> Result<i64> {
        delegate!(self, push_control(m, max_waiting))
    }
    async fn pending_control(
        &self,
        device: DeviceId,
        after: i64,
        now: i64,
        limit: u32,
    ) -> Result<Vec<ControlMessage>> {
        delegate!(self, pending_control(device, after, now, limit))
    }
    async fn control_message(&self, device: DeviceId, id: i64) -> Result<Option<ControlMessage>> {
        delegate!(self, control_message(device, id))
    }
    async fn put_control_answer(
        &self,
        device: DeviceId,
        id: i64,
        answer: &[u8],
        at: i64,
    ) -> Result<bool> {
        delegate!(self, put_control_answer(device, id, answer, at))
    }
    async fn purge_control(&self, before: i64) -> Result<u64> {
        delegate!(self, purge_control(before))
    }
    async fn put_grant(
        &self,
        request: [u8; 32],
        signed: &[u8],
        at: i64,
        spans: &[GrantSpan],
    ) -> Result<bool> {
        delegate!(self, put_grant(request, signed, at, spans))
    }
    async fn grant_spans(&self, app: [u8; 32], device: DeviceId) -> Result<Vec<GrantSpan>> {
        delegate!(self, grant_spans(app, device))
    }
    async fn granted_records(&self, q: &RecordQuery, app: [u8; 32]) -> Result<Vec<StoredRecord>> {
        delegate!(self, granted_records(q, app))
    }
    async fn put_device_state(&self, device: DeviceId, state: &str, at: i64) -> Result<()> {
        delegate!(self, put_device_state(device, state, at))
    }
    async fn device_state(&self, device: DeviceId) -> Result<Option<(String, i64)>> {
        delegate!(self, device_state(device))
    }
    async fn put_session_key(&self, k: &SessionKeyRecord) -> Result<bool> {
        delegate!(self, put_session_key(k))
    }
    async fn put_session_keys(&self, ks: &[SessionKeyRecord]) -> Result<Vec<bool>> {
        delegate!(self, put_session_keys(ks))
    }
    async fn session_key(
        &self,
        requester: DeviceId,
        kid: [u8; 8],
    ) -> Result<Option<SessionKeyRecord>> {
        delegate!(self, session_key(requester, kid))
    }
    async fn key_deliveries(
        &self,
        peer: DeviceId,
        now: i64,
        limit: u32,
    ) -> Result<Vec<KeyDelivery>> {
        delegate!(self, key_deliveries(peer, now, limit))
    }
    async fn key_received(
        &self,
        peer: DeviceId,
        requester: DeviceId,
        kid: [u8; 8],
        at: i64,
    ) -> Result<bool> {
        delegate!(self, key_received(peer, requester, kid, at))
    }
    async fn dead_keys(&self, now: i64, limit: u32) -> Result<Vec<(DeviceId, [u8; 8], i64)>> {
        delegate!(self, dead_keys(now, limit))
    }
    async fn purge_session_keys(&self, before: i64) -> Result<u64> {
        delegate!(self, purge_session_keys(before))
    }
    async fn put_tpm_parent(&self, device: DeviceId, public: &[u8]) -> Result<()> {
        delegate!(self, put_tpm_parent(device, public))
    }
    async fn tpm_parents_among(
        &self,
        ids: &[DeviceId],
    ) -> Result<std::collections::HashMap<DeviceId, Vec<u8>>> {
        delegate!(self, tpm_parents_among(ids))
    }
}

impl RegistryStore for AnyStore {
    async fn append_entry(&self, e: &NewLogEntry, expected_size: u64) -> Result<u64> {
        delegate!(self, append_entry(e, expected_size))
    }
    async fn log_size(&self) -> Result<u64> {
        delegate!(self, log_size())
    }
    async fn leaf_hashes(&self, from: u64, to: u64) -> Result<Vec<[u8; 32]>> {
        delegate!(self, leaf_hashes(from, to))
    }
    async fn log_entries(
        &self,
        from: u64,
        limit: u32,
        domains: Option<&[String]>,
    ) -> Result<Vec<LogEntry>> {
        delegate!(self, log_entries(from, limit, domains))
    }
    async fn log_entry(&self, index: u64) -> Result<Option<LogEntry>> {
        delegate!(self, log_entry(index))
    }
    async fn cert(&self, fingerprint: [u8; 20]) -> Result<Option<CertRow>> {
        delegate!(self, cert(fingerprint))
    }
    async fn cert_by_key(&self, id: &[u8]) -> Result<Option<CertRow>> {
        delegate!(self, cert_by_key(id))
    }
    async fn cert_data_by_key(&self, id: &[u8]) -> Result<Option<(String, Vec<u8>)>> {
        delegate!(self, cert_data_by_key(id))
    }
    async fn certs_by_words(&self, search: &str, limit: u32) -> Result<Vec<CertRow>> {
        delegate!(self, certs_by_words(search, limit))
    }
    async fn certs_from(&self, from: u64, limit: u32) -> Result<Vec<(u64, CertRow)>> {
        delegate!(self, certs_from(from, limit))
    }
    async fn cert_count(&self) -> Result<u64> {
        delegate!(self, cert_count())
    }
    async fn statements(&self, subject: &[u8]) -> Result<Vec<StoredStatement>> {
        delegate!(self, statements(subject))
    }
    async fn put_checkpoint(&self, size: u64, note: &[u8]) -> Result<()> {
        delegate!(self, put_checkpoint(size, note))
    }
    async fn checkpoint(&self) -> Result<Option<(u64, Vec<u8>)>> {
        delegate!(self, checkpoint())
    }
    async fn peer_log(&self, peer: &str) -> Result<Option<PeerLog>> {
        delegate!(self, peer_log(peer))
    }
    async fn put_peer_log(&self, p: &PeerLog) -> Result<()> {
        delegate!(self, put_peer_log(p))
    }
}
