//! The two SQL implementations. They share every statement (written to the subset of SQL both engines accept);
//! a macro instantiates the one implementation for each driver.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

use custos_proto::DeviceId;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Connection, Row};

use crate::{
    Account, CertRow, Claim, ControlMessage, Device, DeviceKeys, GrantSpan, KeyDelivery, KeyPeer,
    LogEntry, LoginThrottle, MAX_DEVICE_STATE, NewControl, NewLogEntry, NewRecord, OwnershipChange,
    PeerLog, PendingAdmission, Presence, RecordQuery, RegistryStore, Result, Rights, Session,
    SessionKeyRecord, StatementRow, Store, StoreError, StoredRecord, StoredRequest,
    StoredStatement,
};

/// The store on SQLite: one file, the embedded default.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// SQLite has one writer at a time, and a writer that finds the database locked sleeps in SQLite's busy
    /// handler (for up to 100 ms at a time). Writers of this process queue here instead and take turns at once.
    write: std::sync::Arc<tokio::sync::Mutex<()>>,
    /// The background checkpointer, told after each write.
    checkpoints: std::sync::Arc<Checkpointer>,
}

/// How long the checkpointer lets writes gather before it checkpoints them.
const CHECKPOINT_AFTER: Duration = Duration::from_millis(100);
/// WAL pages (4 KiB each) past which the writer checkpoints by itself, as SQLite's default of 1 000 would at every
/// few commits: only when the checkpointer falls behind, or has stopped.
const WAL_BACKSTOP_PAGES: u32 = 16_384;
/// The WAL file is cut back to this size after a checkpoint: the backstop's pages.
const WAL_LIMIT_BYTES: u64 = WAL_BACKSTOP_PAGES as u64 * 4096;

/// Copies committed WAL frames back into the database file on a connection of its own, so that writers never do
/// it (docs/operations.md, "SQLite"). A checkpoint inside a writer's commit (SQLite's default, every 1 000 pages)
/// held the write lock while it copied pages and called `fsync`; taking it off the writer's path raised the hub's
/// batched key translations by a fifth to a third (docs/benchmarks.md, "WAL checkpoints off the writer's path").
#[derive(Debug)]
struct Checkpointer {
    wrote: std::sync::Arc<tokio::sync::Notify>,
    task: tokio::task::AbortHandle,
}

impl Checkpointer {
    fn start(pool: SqlitePool) -> Self {
        let wrote = std::sync::Arc::new(tokio::sync::Notify::new());
        let task = tokio::spawn(Self::run(pool, wrote.clone())).abort_handle();
        Self { wrote, task }
    }

    async fn run(pool: SqlitePool, wrote: std::sync::Arc<tokio::sync::Notify>) {
        loop {
            // A write during the pause leaves a permit: the next pass comes at once.
            wrote.notified().await;
            tokio::time::sleep(CHECKPOINT_AFTER).await;
            if pool.is_closed() {
                return;
            }
            // PASSIVE: copies what no reader still needs and never waits for, or blocks, readers or the writer.
            // A failure leaves the frames in the WAL for the next pass, or for the backstop.
            let _ = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                .execute(&pool)
                .await;
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A writer's turn on SQLite; when it ends, the checkpointer is told.
struct WriteTurn<'a> {
    _turn: tokio::sync::MutexGuard<'a, ()>,
    wrote: &'a tokio::sync::Notify,
}

impl Drop for WriteTurn<'_> {
    fn drop(&mut self) {
        self.wrote.notify_one();
    }
}

/// The store on PostgreSQL: what several hub processes share.
#[derive(Clone, Debug)]
pub struct PgStore {
    pool: PgPool,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path` and brings its schema up to date.
    pub async fn open(path: &Path) -> Result<Self> {
        // Create the file owner-only before SQLite does: it holds session keys and join codes, and SQLite gives
        // its -wal and -shm files the database file's permissions.
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            let created = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path);
            if let Err(e) = created
                && e.kind() != std::io::ErrorKind::AlreadyExists
            {
                return Err(StoreError::Database(sqlx::Error::Io(e)));
            }
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // WAL with NORMAL is durable across process crashes; only power loss may drop the last commits.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true)
            .pragma("wal_autocheckpoint", WAL_BACKSTOP_PAGES.to_string())
            // After a checkpoint the WAL is reused from its start; past this size it is also truncated.
            .pragma("journal_size_limit", WAL_LIMIT_BYTES.to_string())
            // A statement that may fail half way (a multi-row insert with foreign keys: a gateway's key batch)
            // keeps the pages it changes in a statement journal, which SQLite spills to a temporary file past
            // 64 KiB: a file created, written and deleted inside the writer's turn. In memory it is a copy.
            .pragma("temp_store", "memory");
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            // A connection to a local file does not go stale as a network one may; the check sqlx makes by default
            // is a round trip to the connection's worker thread before every query.
            .test_before_acquire(false)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        let store = Self {
            checkpoints: std::sync::Arc::new(Checkpointer::start(pool.clone())),
            pool,
            write: Default::default(),
        };
        store.index_missing_words().await?;
        Ok(store)
    }

    /// Closes the pool, waiting for connections to finish.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

impl SqliteStore {
    async fn writer(&self) -> Option<WriteTurn<'_>> {
        Some(WriteTurn {
            _turn: self.write.lock().await,
            wrote: &self.checkpoints.wrote,
        })
    }
}

impl PgStore {
    /// PostgreSQL handles concurrent writers itself.
    async fn writer(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        None
    }

    /// Connects to `url` (`postgres://…`) and brings the schema up to date. Migrations take a lock, so hub
    /// replicas may start together.
    pub async fn connect(url: &str) -> Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        let store = Self { pool };
        store.index_missing_words().await?;
        Ok(store)
    }

    /// Closes the pool, waiting for connections to finish.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Rows per INSERT statement: 6 parameters a row stays far below SQLite's 32 766 and PostgreSQL's 65 535.
const INSERT_CHUNK: usize = 1000;

fn device_id(bytes: &[u8]) -> Result<DeviceId> {
    Ok(DeviceId(bytes.try_into().map_err(|_| {
        StoreError::Corrupt("device id is not 8 bytes")
    })?))
}

fn key(bytes: &[u8]) -> Result<[u8; 32]> {
    bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt("key is not 32 bytes"))
}

fn seq(n: u64) -> Result<i64> {
    i64::try_from(n).map_err(|_| StoreError::InvalidInput("sequence number above 2^63 - 1"))
}

/// A transaction that failed in the database may have been rolled back by SQLite already (on a full disk, for
/// one); sqlx's own rollback then fails and leaves the connection believing it is still in a transaction, refusing
/// every later BEGIN. Such a connection is closed instead of going back to the pool.
fn settle<DB: sqlx::Database, T>(conn: &mut PoolConnection<DB>, result: &Result<T>) {
    if matches!(result, Err(StoreError::Database(_))) {
        conn.close_on_drop();
    }
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

fn is_foreign_key_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_foreign_key_violation())
}

fn count(n: i64) -> Result<u32> {
    u32::try_from(n).map_err(|_| StoreError::Corrupt("counter out of range"))
}

fn rights(text: &str) -> Result<Rights> {
    Rights::parse(text).ok_or(StoreError::Corrupt("unknown rights"))
}

/// A registry log index or size as stored (BIGINT): at most 2^63 - 1.
fn log_index(n: u64) -> Result<i64> {
    i64::try_from(n).map_err(|_| StoreError::InvalidInput("log index or size above 2^63 - 1"))
}

fn stored_index(n: i64) -> Result<u64> {
    u64::try_from(n).map_err(|_| StoreError::Corrupt("negative log index or size"))
}

fn hash(bytes: &[u8]) -> Result<[u8; 32]> {
    bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt("hash is not 32 bytes"))
}

fn fingerprint(bytes: &[u8]) -> Result<[u8; 20]> {
    bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt("fingerprint is not 20 bytes"))
}

fn byte(n: i32) -> Result<u8> {
    u8::try_from(n).map_err(|_| StoreError::Corrupt("kind or status is not a byte"))
}

/// PostgreSQL text cannot hold NUL; both stores refuse it so that they accept the same values.
fn no_nul(text: &str, what: &'static str) -> Result<()> {
    if text.contains('\0') {
        return Err(StoreError::InvalidInput(what));
    }
    Ok(())
}

/// Checks everything of an entry the database would refuse, before a transaction starts.
fn check_entry(e: &NewLogEntry) -> Result<()> {
    no_nul(&e.domain, "a NUL character in a domain")?;
    if let Some(c) = &e.cert {
        no_nul(&c.domain, "a NUL character in a domain")?;
        if c.uids.iter().any(|u| u.contains('\0')) {
            return Err(StoreError::InvalidInput("a NUL character in a user id"));
        }
        if !c.keys.contains(&c.fingerprint) {
            return Err(StoreError::InvalidInput(
                "a certificate's keys must include its primary key",
            ));
        }
        let mut seen = HashSet::with_capacity(c.keys.len());
        if !c.keys.iter().all(|k| seen.insert(k)) {
            return Err(StoreError::InvalidInput("a certificate lists a key twice"));
        }
        if i32::try_from(c.keys.len()).is_err() || i32::try_from(c.uids.len()).is_err() {
            return Err(StoreError::InvalidInput("too many keys or user ids"));
        }
    }
    if let Some(st) = &e.statement
        && !matches!(st.subject.len(), 20 | 32)
    {
        return Err(StoreError::InvalidInput(
            "a statement's subject is 20 or 32 bytes",
        ));
    }
    Ok(())
}

/// One statement that reads certificates with their keys and user ids, so that a reader never sees a certificate
/// half replaced (PostgreSQL takes a snapshot per statement, not per transaction). `hit` selects
/// `(fingerprint, ord)` of the wanted certificates; rows come back by `ord`, each certificate's row before its keys
/// (`part` 1) and user ids (`part` 2), in their order.
fn cert_select(hit: &str) -> String {
    format!(
        "WITH hit AS ({hit}) \
         SELECT 0 AS part, h.ord, c.fingerprint AS cert, 0 AS pos, NULL AS key_fpr, NULL AS uid, \
           c.domain, c.data, c.updated_at \
         FROM hit h JOIN registry_certs c ON c.fingerprint = h.fingerprint \
         UNION ALL SELECT 1, h.ord, k.cert, k.pos, k.fingerprint, NULL, NULL, NULL, NULL \
         FROM hit h JOIN registry_cert_keys k ON k.cert = h.fingerprint \
         UNION ALL SELECT 2, h.ord, u.cert, u.pos, NULL, u.uid, NULL, NULL, NULL \
         FROM hit h JOIN registry_cert_uids u ON u.cert = h.fingerprint \
         ORDER BY ord, cert, part, pos"
    )
}

/// The query that selects `columns` of `registry_certs c` for the certificate holding the key `$1` (see
/// [`RegistryStore::cert_by_key`]).
fn cert_by_key_select(id: &[u8], columns: &str) -> Result<String> {
    let column = match id.len() {
        20 => "fingerprint",
        8 => "key_id",
        _ => {
            return Err(StoreError::InvalidInput(
                "a key is found by its 20-byte fingerprint or 8-byte key id",
            ));
        }
    };
    Ok(format!(
        "SELECT {columns} FROM registry_cert_keys k \
         JOIN registry_certs c ON c.fingerprint = k.cert WHERE k.{column} = $1 \
         ORDER BY CASE WHEN k.fingerprint = k.cert THEN 0 ELSE 1 END, c.first_idx LIMIT 1"
    ))
}

/// The peer a key keeps in its own `session_keys` row: a two-party key's one peer (migration 0010). A group key
/// keeps its peers in `session_key_peers`.
fn inline_peer(k: &SessionKeyRecord) -> Option<&KeyPeer> {
    match k.peers.as_slice() {
        [p] => Some(p),
        _ => None,
    }
}

/// At most this many domains in one [`RegistryStore::log_entries`] filter: one bound value each.
const MAX_DOMAINS: usize = 10_000;

/// Placeholders for `rows` groups of `per_row` values: `(?, ?), (?, ?)` for SQLite, `($1, $2), ($3, $4)` for
/// PostgreSQL; without the parentheses when `grouped` is false (an `IN` list). SQLite gets anonymous `?` because
/// sqlx looks every numbered parameter up by name, and SQLite's lookup scans the statement's list of names: `$n`
/// makes a long statement cost O(n²) (a gateway batch of 256 key requests spent a third of its time there).
fn placeholders(numbered: bool, rows: usize, per_row: usize, grouped: bool) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(rows * per_row * 5);
    for r in 0..rows {
        if r > 0 {
            out.push_str(", ");
        }
        if grouped {
            out.push('(');
        }
        for c in 0..per_row {
            if c > 0 {
                out.push_str(", ");
            }
            if numbered {
                let _ = write!(out, "${}", r * per_row + c + 1);
            } else {
                out.push('?');
            }
        }
        if grouped {
            out.push(')');
        }
    }
    out
}

// No write may report success for a failed commit. A write that reads rows back (RETURNING) runs in a transaction
// whose commit is checked: SQLite hands over a RETURNING row before the statement completes, and the failure of an
// autocommit at its end (a full disk) never reaches the reader. A write without RETURNING may autocommit: `execute`
// steps the statement, commit included, to the end and reports its error.
macro_rules! sql_store {
    ($store:ty, $row:ty, $db:ty, $begin:literal, $numbered:literal) => {
        impl $store {
            fn request_row(row: &$row) -> Result<StoredRequest> {
                Ok(StoredRequest {
                    seq: row.try_get("seq")?,
                    id: key(row.try_get("id")?)?,
                    owner: key(row.try_get("owner")?)?,
                    signed: row.try_get("signed")?,
                    received_at: row.try_get("received_at")?,
                    expires_at: row.try_get("expires_at")?,
                })
            }

            fn record_row(row: &$row, device: DeviceId) -> Result<StoredRecord> {
                let epoch: i32 = row.try_get("epoch")?;
                let leaf: i64 = row.try_get("leaf")?;
                let seq: i64 = row.try_get("seq")?;
                Ok(StoredRecord {
                    id: row.try_get("id")?,
                    record: NewRecord {
                        device,
                        seq: u64::try_from(seq).map_err(|_| StoreError::Corrupt("negative sequence number"))?,
                        epoch: u16::try_from(epoch).map_err(|_| StoreError::Corrupt("epoch out of range"))?,
                        leaf: u32::try_from(leaf).map_err(|_| StoreError::Corrupt("leaf out of range"))?,
                        body: row.try_get("body")?,
                        received_at: row.try_get("received_at")?,
                    },
                })
            }

            fn device_row(row: &$row) -> Result<Device> {
                Ok(Device {
                    device: device_id(row.try_get("device")?)?,
                    static_key: key(row.try_get("static_key")?)?,
                    session_key: key(row.try_get("session_key")?)?,
                    admitted_at: row.try_get("admitted_at")?,
                    revoked_at: row.try_get("revoked_at")?,
                    max_seq: row.try_get("max_seq")?,
                })
            }

            fn account_row(row: &$row) -> Result<Account> {
                Ok(Account {
                    id: row.try_get("id")?,
                    name: row.try_get("name")?,
                    password_hash: row.try_get("password")?,
                    created_at: row.try_get("created_at")?,
                    throttle: Self::throttle_row(row)?,
                })
            }

            fn throttle_row(row: &$row) -> Result<LoginThrottle> {
                Ok(LoginThrottle {
                    failures: count(row.try_get("failures")?)?,
                    last_failure_at: row.try_get("last_failure_at")?,
                    home: row.try_get("home_address")?,
                    home_failures: count(row.try_get("home_failures")?)?,
                    home_last_failure_at: row.try_get("home_last_failure_at")?,
                })
            }

            fn session_row(row: &$row) -> Result<Session> {
                Ok(Session {
                    token_hash: key(row.try_get("token_hash")?)?,
                    account: row.try_get("account")?,
                    created_at: row.try_get("created_at")?,
                    expires_at: row.try_get("expires_at")?,
                    last_used_at: row.try_get("last_used_at")?,
                })
            }

            fn control_row(row: &$row) -> Result<ControlMessage> {
                let kind: i32 = row.try_get("kind")?;
                Ok(ControlMessage {
                    id: row.try_get("id")?,
                    posted: NewControl {
                        device: device_id(row.try_get("device")?)?,
                        account: row.try_get("account")?,
                        kind: u8::try_from(kind).map_err(|_| StoreError::Corrupt("control kind is not a byte"))?,
                        message: row.try_get("message")?,
                        created_at: row.try_get("created_at")?,
                        expires_at: row.try_get("expires_at")?,
                    },
                    answer: row.try_get("answer")?,
                    answered_at: row.try_get("answered_at")?,
                })
            }

            fn log_row(row: &$row) -> Result<LogEntry> {
                Ok(LogEntry {
                    index: stored_index(row.try_get("idx")?)?,
                    kind: byte(row.try_get("kind")?)?,
                    data: row.try_get("data")?,
                    leaf_hash: hash(row.try_get("leaf_hash")?)?,
                    domain: row.try_get("domain")?,
                    added_at: row.try_get("added_at")?,
                })
            }

            /// Indexes the words of a certificate's user ids ([`crate::uid_words`]), each once.
            async fn insert_words(
                conn: &mut <$db as sqlx::Database>::Connection,
                cert: &[u8; 20],
                uids: &[String],
            ) -> Result<()> {
                let mut words: Vec<String> = uids.iter().flat_map(|u| crate::uid_words(u)).collect();
                words.sort_unstable();
                words.dedup();
                for chunk in words.chunks(INSERT_CHUNK) {
                    let mut q = sqlx::QueryBuilder::<$db>::new("INSERT INTO registry_cert_words (word, cert) ");
                    q.push_values(chunk, |mut b, w| {
                        b.push_bind(w.as_str()).push_bind(&cert[..]);
                    });
                    q.push(" ON CONFLICT DO NOTHING");
                    q.build().execute(&mut *conn).await?;
                }
                Ok(())
            }

            /// Indexes the words of certificates stored before the word index existed (migration 0009), each
            /// in its own transaction; a no-op once every certificate with a user id has its words.
            pub(crate) async fn index_missing_words(&self) -> Result<()> {
                // Pages by fingerprint, so that certificates whose user ids hold no word are passed only once.
                let mut after: Vec<u8> = Vec::new();
                loop {
                    let rows = sqlx::query(
                        "SELECT u.cert, u.uid FROM registry_cert_uids u \
                         WHERE u.cert IN (SELECT c.fingerprint FROM registry_certs c \
                           WHERE c.fingerprint > $1 \
                           AND NOT EXISTS (SELECT 1 FROM registry_cert_words w WHERE w.cert = c.fingerprint) \
                           AND EXISTS (SELECT 1 FROM registry_cert_uids x WHERE x.cert = c.fingerprint) \
                           ORDER BY c.fingerprint LIMIT 1000) \
                         ORDER BY u.cert, u.pos",
                    )
                    .bind(&after[..])
                    .fetch_all(&self.pool)
                    .await?;
                    let mut certs: Vec<([u8; 20], Vec<String>)> = Vec::new();
                    for row in &rows {
                        let cert = fingerprint(row.try_get("cert")?)?;
                        let uid: String = row.try_get("uid")?;
                        match certs.last_mut() {
                            Some((c, uids)) if *c == cert => uids.push(uid),
                            _ => certs.push((cert, vec![uid])),
                        }
                    }
                    let Some((last, _)) = certs.last() else {
                        return Ok(());
                    };
                    after = last.to_vec();
                    let _write = self.writer().await;
                    let mut tx = self.pool.begin().await?;
                    for (cert, uids) in &certs {
                        Self::insert_words(&mut tx, cert, uids).await?;
                    }
                    tx.commit().await?;
                }
            }

            /// Assembles the rows of a [`cert_select`] into certificates, in their order.
            /// Inserts `ks` in one transaction and returns which key ids were new. Without `naming`, the insert
            /// returns no rows: if every key was new it commits and returns `Some`, else it rolls back and returns
            /// `None`.
            async fn try_put_session_keys(
                &self,
                conn: &mut sqlx::pool::PoolConnection<$db>,
                ks: &[SessionKeyRecord],
                naming: bool,
            ) -> Result<Option<Vec<bool>>> {
                let mut tx = conn.begin_with($begin).await?;
                // One statement for the keys and one for the peers: a gateway's batch costs two round trips to the
                // database, not two per key. A two-party key keeps its peer in its own row (migration 0010): one
                // row per key. A statement binds at most 32 766 values (SQLite): 8 per key, and a batch is at most
                // 256 keys.
                let sql = format!(
                    "INSERT INTO session_keys (requester, kid, kind, expires_at, created_at, peer, package, received_at) VALUES {} \
                     ON CONFLICT (requester, kid) DO NOTHING{}",
                    placeholders($numbered, ks.len(), 8, true),
                    if naming { " RETURNING requester, kid" } else { "" },
                );
                let mut q = sqlx::query(&sql);
                for k in ks {
                    let inline = inline_peer(k);
                    q = q.bind(&k.requester.0[..]).bind(&k.kid[..]).bind(i32::from(k.kind)).bind(k.expires_at).bind(k.created_at)
                        .bind(inline.map(|p| &p.peer.0[..]))
                        .bind(inline.and_then(|p| p.package.as_deref()))
                        .bind(inline.and_then(|p| p.received_at));
                }
                let not_admitted = |e: sqlx::Error| {
                    if is_foreign_key_violation(&e) {
                        StoreError::InvalidInput("a key names a device that is not admitted")
                    } else {
                        e.into()
                    }
                };
                let fresh: Vec<bool> = if naming {
                    let rows = q.fetch_all(&mut *tx).await.map_err(not_admitted)?;
                    let mut new = std::collections::HashSet::with_capacity(rows.len());
                    for r in &rows {
                        let requester: Vec<u8> = r.try_get("requester")?;
                        let kid: Vec<u8> = r.try_get("kid")?;
                        new.insert((requester, kid));
                    }
                    // A key id twice in one batch: the first row was inserted and the second skipped.
                    ks.iter().map(|k| new.remove(&(k.requester.0.to_vec(), k.kid.to_vec()))).collect()
                } else {
                    let done = q.execute(&mut *tx).await.map_err(not_admitted)?;
                    if done.rows_affected() != ks.len() as u64 {
                        tx.rollback().await?;
                        return Ok(None);
                    }
                    vec![true; ks.len()]
                };
                let peers: Vec<(&SessionKeyRecord, &KeyPeer)> = ks
                    .iter()
                    .zip(&fresh)
                    .filter(|(k, f)| **f && inline_peer(k).is_none())
                    .flat_map(|(k, _)| k.peers.iter().map(move |p| (k, p)))
                    .collect();
                // A statement binds at most 32 766 values (SQLite) or 65 535 (PostgreSQL): 5 per peer row.
                for chunk in peers.chunks(4096) {
                    let sql = format!(
                        "INSERT INTO session_key_peers (requester, kid, peer, package, received_at) VALUES {}",
                        placeholders($numbered, chunk.len(), 5, true)
                    );
                    let mut q = sqlx::query(&sql);
                    for (k, p) in chunk {
                        q = q.bind(&k.requester.0[..]).bind(&k.kid[..]).bind(&p.peer.0[..]).bind(p.package.as_deref()).bind(p.received_at);
                    }
                    q.execute(&mut *tx).await.map_err(not_admitted)?;
                }
                tx.commit().await?;
                Ok(Some(fresh))
            }

            fn cert_rows(rows: &[$row]) -> Result<Vec<CertRow>> {
                Ok(Self::cert_rows_ord(rows)?.into_iter().map(|(_, c)| c).collect())
            }

            /// [`cert_rows`](Self::cert_rows), each with its `ord`.
            fn cert_rows_ord(rows: &[$row]) -> Result<Vec<(u64, CertRow)>> {
                let mut certs: Vec<(u64, CertRow)> = Vec::new();
                for row in rows {
                    let part: i32 = row.try_get("part")?;
                    let cert = fingerprint(row.try_get("cert")?)?;
                    if part == 0 {
                        certs.push((stored_index(row.try_get("ord")?)?, CertRow {
                            fingerprint: cert,
                            domain: row.try_get("domain")?,
                            data: row.try_get("data")?,
                            keys: Vec::new(),
                            uids: Vec::new(),
                            updated_at: row.try_get("updated_at")?,
                        }));
                        continue;
                    }
                    let c = certs
                        .last_mut()
                        .map(|(_, c)| c)
                        .filter(|c| c.fingerprint == cert)
                        .ok_or(StoreError::Corrupt("a certificate's key or user id without the certificate"))?;
                    match part {
                        1 => c.keys.push(fingerprint(row.try_get("key_fpr")?)?),
                        2 => c.uids.push(row.try_get("uid")?),
                        _ => return Err(StoreError::Corrupt("unknown part of a certificate")),
                    }
                }
                Ok(certs)
            }
        }

        impl Store for $store {
            async fn put_admission(&self, a: &PendingAdmission) -> Result<()> {
                let _write = self.writer().await;
                let mut conn = self.pool.acquire().await?;
                let result: Result<()> = async {
                    let mut tx = conn.begin_with($begin).await?;
                    let admitted = sqlx::query("SELECT 1 FROM devices WHERE device = $1")
                        .bind(&a.device.0[..])
                        .fetch_optional(&mut *tx)
                        .await?;
                    if admitted.is_some() {
                        return Err(StoreError::AlreadyAdmitted(a.device));
                    }
                    sqlx::query(
                        "INSERT INTO admissions (device, join_code, created_at, expires_at) VALUES ($1, $2, $3, $4) \
                         ON CONFLICT (device) DO UPDATE SET join_code = excluded.join_code, \
                         created_at = excluded.created_at, expires_at = excluded.expires_at",
                    )
                    .bind(&a.device.0[..])
                    .bind(&a.join_code[..])
                    .bind(a.created_at)
                    .bind(a.expires_at)
                    .execute(&mut *tx)
                    .await?;
                    tx.commit().await?;
                    Ok(())
                }
                .await;
                settle(&mut conn, &result);
                result
            }

            async fn admission(&self, device: DeviceId, now: i64) -> Result<Option<PendingAdmission>> {
                let row = sqlx::query(
                    "SELECT join_code, created_at, expires_at FROM admissions WHERE device = $1 AND expires_at > $2",
                )
                .bind(&device.0[..])
                .bind(now)
                .fetch_optional(&self.pool)
                .await?;
                row.map(|row| {
                    let code: &[u8] = row.try_get("join_code")?;
                    Ok(PendingAdmission {
                        device,
                        join_code: code.try_into().map_err(|_| StoreError::Corrupt("join code is not 16 bytes"))?,
                        created_at: row.try_get("created_at")?,
                        expires_at: row.try_get("expires_at")?,
                    })
                })
                .transpose()
            }

            async fn complete_admission(&self, d: &Device, now: i64) -> Result<()> {
                let _write = self.writer().await;
                let mut conn = self.pool.acquire().await?;
                let result: Result<()> = async {
                    let mut tx = conn.begin_with($begin).await?;
                    let used = sqlx::query("DELETE FROM admissions WHERE device = $1 AND expires_at > $2 RETURNING device")
                        .bind(&d.device.0[..])
                        .bind(now)
                        .fetch_optional(&mut *tx)
                        .await?;
                    if used.is_none() {
                        return Err(StoreError::NoPendingAdmission(d.device));
                    }
                    let inserted = sqlx::query(
                        "INSERT INTO devices (device, static_key, session_key, admitted_at, revoked_at, max_seq) \
                         VALUES ($1, $2, $3, $4, NULL, -1)",
                    )
                    .bind(&d.device.0[..])
                    .bind(&d.static_key[..])
                    .bind(&d.session_key[..])
                    .bind(d.admitted_at)
                    .execute(&mut *tx)
                    .await;
                    match inserted {
                        Err(e) if is_unique_violation(&e) => return Err(StoreError::AlreadyAdmitted(d.device)),
                        other => other?,
                    };
                    tx.commit().await?;
                    Ok(())
                }
                .await;
                settle(&mut conn, &result);
                result
            }

            async fn purge_admissions(&self, now: i64) -> Result<u64> {
                let _write = self.writer().await;
                let done = sqlx::query("DELETE FROM admissions WHERE expires_at <= $1").bind(now).execute(&self.pool).await?;
                Ok(done.rows_affected())
            }

            async fn device(&self, device: DeviceId) -> Result<Option<Device>> {
                let row = sqlx::query("SELECT * FROM devices WHERE device = $1")
                    .bind(&device.0[..])
                    .fetch_optional(&self.pool)
                    .await?;
                row.as_ref().map(Self::device_row).transpose()
            }

            async fn device_keys_among(&self, ids: &[DeviceId]) -> Result<Vec<DeviceKeys>> {
                if ids.is_empty() {
                    return Ok(Vec::new());
                }
                let sql = format!(
                    "SELECT device, session_key, revoked_at FROM devices WHERE device IN ({})",
                    placeholders($numbered, ids.len(), 1, false)
                );
                let mut q = sqlx::query(&sql);
                for d in ids {
                    q = q.bind(&d.0[..]);
                }
                let rows = q.fetch_all(&self.pool).await?;
                rows.iter()
                    .map(|row| {
                        Ok(DeviceKeys {
                            device: device_id(row.try_get("device")?)?,
                            session_key: key(row.try_get("session_key")?)?,
                            revoked_at: row.try_get("revoked_at")?,
                        })
                    })
                    .collect()
            }

            async fn devices(&self) -> Result<Vec<Device>> {
                let rows = sqlx::query("SELECT * FROM devices ORDER BY device").fetch_all(&self.pool).await?;
                rows.iter().map(Self::device_row).collect()
            }

            async fn revoke(&self, device: DeviceId, at: i64) -> Result<bool> {
                let _write = self.writer().await;
                let done = sqlx::query("UPDATE devices SET revoked_at = $2 WHERE device = $1 AND revoked_at IS NULL")
                    .bind(&device.0[..])
                    .bind(at)
                    .execute(&self.pool)
                    .await?;
                if done.rows_affected() == 0 && self.device(device).await?.is_none() {
                    return Err(StoreError::UnknownDevice(device));
                }
                Ok(done.rows_affected() == 1)
            }

            async fn insert_records(&self, batch: &[NewRecord]) -> Result<Vec<bool>> {
                let _write = self.writer().await;
                // Check every value before touching the database.
                let seqs: Vec<i64> = batch.iter().map(|r| seq(r.seq)).collect::<Result<_>>()?;
                let mut conn = self.pool.acquire().await?;
                let result: Result<Vec<bool>> = async {
                    let mut tx = conn.begin_with($begin).await?;
                    // Multi-row inserts; RETURNING names the rows that were new.
                    let mut new: HashSet<(DeviceId, i64)> = HashSet::new();
                    for (chunk, chunk_seqs) in batch.chunks(INSERT_CHUNK).zip(seqs.chunks(INSERT_CHUNK)) {
                        let mut q = sqlx::QueryBuilder::<$db>::new("INSERT INTO records (device, seq, epoch, leaf, body, received_at) ");
                        q.push_values(chunk.iter().zip(chunk_seqs), |mut b, (r, s)| {
                            b.push_bind(&r.device.0[..])
                                .push_bind(*s)
                                .push_bind(i32::from(r.epoch))
                                .push_bind(i64::from(r.leaf))
                                .push_bind(&r.body[..])
                                .push_bind(r.received_at);
                        });
                        q.push(" ON CONFLICT (device, seq) DO NOTHING RETURNING device, seq");
                        let rows = match q.build().fetch_all(&mut *tx).await {
                            // The only other constraint well-formed records can break: a device that is not admitted.
                            Err(sqlx::Error::Database(e)) if e.is_foreign_key_violation() => {
                                // PostgreSQL has aborted the transaction: roll back, then find the culprit outside it.
                                tx.rollback().await?;
                                let known: HashSet<Vec<u8>> = sqlx::query("SELECT device FROM devices")
                                    .fetch_all(&self.pool)
                                    .await?
                                    .iter()
                                    .map(|row| row.try_get::<Vec<u8>, _>("device"))
                                    .collect::<std::result::Result<_, _>>()?;
                                let unknown = chunk.iter().find(|r| !known.contains(&r.device.0[..])).map_or(chunk[0].device, |r| r.device);
                                return Err(StoreError::UnknownDevice(unknown));
                            }
                            other => other?,
                        };
                        for row in rows {
                            new.insert((device_id(row.try_get("device")?)?, row.try_get("seq")?));
                        }
                    }
                    // The first occurrence of a new (device, seq) is the stored one; any repeat in the batch is not.
                    let mut highest: HashMap<DeviceId, i64> = HashMap::new();
                    let fresh: Vec<bool> = batch
                        .iter()
                        .zip(&seqs)
                        .map(|(r, s)| {
                            let stored = new.remove(&(r.device, *s));
                            if stored {
                                let h = highest.entry(r.device).or_insert(*s);
                                *h = (*h).max(*s);
                            }
                            stored
                        })
                        .collect();
                    for (device, max) in highest {
                        sqlx::query("UPDATE devices SET max_seq = CASE WHEN $2 > max_seq THEN $2 ELSE max_seq END WHERE device = $1")
                            .bind(&device.0[..])
                            .bind(max)
                            .execute(&mut *tx)
                            .await?;
                    }
                    tx.commit().await?;
                    Ok(fresh)
                }
                .await;
                settle(&mut conn, &result);
                result
            }

            async fn records(&self, q: &RecordQuery) -> Result<Vec<StoredRecord>> {
                let rows = sqlx::query(
                    "SELECT id, seq, epoch, leaf, body, received_at FROM records \
                     WHERE device = $1 AND epoch = $2 AND leaf >= $3 AND leaf < $4 AND id > $5 ORDER BY id LIMIT $6",
                )
                .bind(&q.device.0[..])
                .bind(i32::from(q.epoch))
                .bind(i64::from(q.leaf_from))
                .bind(i64::from(q.leaf_until))
                .bind(q.after.unwrap_or(-1))
                .bind(i64::from(q.limit))
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(|row| Self::record_row(row, q.device)).collect()
            }

            async fn touch(&self, device: DeviceId, at: i64, address: &str) -> Result<()> {
                let _write = self.writer().await;
                let done = sqlx::query(
                    "INSERT INTO presence (device, last_seen, address) VALUES ($1, $2, $3) \
                     ON CONFLICT (device) DO UPDATE SET last_seen = excluded.last_seen, address = excluded.address \
                     WHERE excluded.last_seen >= presence.last_seen",
                )
                .bind(&device.0[..])
                .bind(at)
                .bind(address)
                .execute(&self.pool)
                .await;
                match done {
                    Err(sqlx::Error::Database(e)) if e.is_foreign_key_violation() => Err(StoreError::UnknownDevice(device)),
                    other => other.map(|_| ()).map_err(Into::into),
                }
            }

            async fn presence(&self) -> Result<Vec<Presence>> {
                let rows = sqlx::query("SELECT device, last_seen, address FROM presence ORDER BY device")
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter()
                    .map(|row| {
                        Ok(Presence {
                            device: device_id(row.try_get("device")?)?,
                            last_seen: row.try_get("last_seen")?,
                            address: row.try_get("address")?,
                        })
                    })
                    .collect()
            }

            async fn put_device_list(&self, version: i64, signed: &[u8]) -> Result<bool> {
                let _write = self.writer().await;
                let done = sqlx::query(
                    "INSERT INTO device_lists (version, signed) \
                     SELECT $1, $2 WHERE $1 > (SELECT COALESCE(MAX(version), -1) FROM device_lists) \
                     ON CONFLICT (version) DO NOTHING",
                )
                .bind(version)
                .bind(signed)
                .execute(&self.pool)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn device_list(&self) -> Result<Option<(i64, Vec<u8>)>> {
                let row = sqlx::query("SELECT version, signed FROM device_lists ORDER BY version DESC LIMIT 1")
                    .fetch_optional(&self.pool)
                    .await?;
                row.map(|row| Ok((row.try_get("version")?, row.try_get("signed")?))).transpose()
            }

            async fn put_request(&self, r: &StoredRequest) -> Result<bool> {
                let _write = self.writer().await;
                let done = sqlx::query(
                    "INSERT INTO sharing_requests (id, owner, signed, received_at, expires_at) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO NOTHING",
                )
                .bind(&r.id[..])
                .bind(&r.owner[..])
                .bind(&r.signed[..])
                .bind(r.received_at)
                .bind(r.expires_at)
                .execute(&self.pool)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn request(&self, id: [u8; 32]) -> Result<Option<StoredRequest>> {
                let row = sqlx::query(
                    "SELECT seq, id, owner, signed, received_at, expires_at FROM sharing_requests WHERE id = $1",
                )
                .bind(&id[..])
                .fetch_optional(&self.pool)
                .await?;
                row.as_ref().map(Self::request_row).transpose()
            }

            async fn inbox(&self, owner: [u8; 32], after: i64, now: i64, limit: u32) -> Result<Vec<StoredRequest>> {
                let rows = sqlx::query(
                    "SELECT seq, id, owner, signed, received_at, expires_at FROM sharing_requests r \
                     WHERE owner = $1 AND seq > $2 AND expires_at > $3 \
                     AND NOT EXISTS (SELECT 1 FROM sharing_answers a WHERE a.request = r.id) \
                     ORDER BY seq LIMIT $4",
                )
                .bind(&owner[..])
                .bind(after)
                .bind(now)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(Self::request_row).collect()
            }

            async fn put_answer(&self, request: [u8; 32], signed: &[u8], at: i64) -> Result<bool> {
                let _write = self.writer().await;
                let done = sqlx::query(
                    "INSERT INTO sharing_answers (request, signed, answered_at) VALUES ($1, $2, $3) \
                     ON CONFLICT (request) DO NOTHING",
                )
                .bind(&request[..])
                .bind(signed)
                .bind(at)
                .execute(&self.pool)
                .await;
                match done {
                    Err(sqlx::Error::Database(e)) if e.is_foreign_key_violation() => {
                        Err(StoreError::InvalidInput("no such request"))
                    }
                    other => Ok(other?.rows_affected() == 1),
                }
            }

            async fn answer(&self, request: [u8; 32]) -> Result<Option<Vec<u8>>> {
                let row = sqlx::query("SELECT signed FROM sharing_answers WHERE request = $1")
                    .bind(&request[..])
                    .fetch_optional(&self.pool)
                    .await?;
                row.map(|row| Ok(row.try_get("signed")?)).transpose()
            }

            async fn relay_push(&self, mailbox: &str, body: &[u8], at: i64, max_count: u32, max_bytes: u64) -> Result<i64> {
                let _write = self.writer().await;
                // A transaction whose commit is checked: on SQLite, a RETURNING row read in autocommit arrives
                // before the statement's implicit commit, and that commit's failure (a full disk) is lost.
                let mut conn = self.pool.acquire().await?;
                let result: Result<i64> = async {
                    let mut tx = conn.begin_with($begin).await?;
                    let seq: i64 = sqlx::query("INSERT INTO relay (mailbox, body, created_at) VALUES ($1, $2, $3) RETURNING seq")
                        .bind(mailbox)
                        .bind(body)
                        .bind(at)
                        .fetch_one(&mut *tx)
                        .await?
                        .try_get("seq")?;
                    // Counting newest first, the newest older message past either limit and everything before it go.
                    sqlx::query(
                        "DELETE FROM relay WHERE mailbox = $1 AND seq <= (SELECT seq FROM (\
                           SELECT seq, \
                           COUNT(*) OVER (ORDER BY seq DESC ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS n, \
                           SUM(LENGTH(body)) OVER (ORDER BY seq DESC ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS bytes \
                           FROM relay WHERE mailbox = $1) AS newest_first \
                         WHERE seq < $2 AND (n > $3 OR bytes > $4) ORDER BY seq DESC LIMIT 1)",
                    )
                    .bind(mailbox)
                    .bind(seq)
                    .bind(i64::from(max_count))
                    .bind(i64::try_from(max_bytes).unwrap_or(i64::MAX))
                    .execute(&mut *tx)
                    .await?;
                    tx.commit().await?;
                    Ok(seq)
                }
                .await;
                settle(&mut conn, &result);
                result
            }

            async fn relay_fetch(&self, mailbox: &str, after: i64, limit: u32) -> Result<Vec<(i64, Vec<u8>)>> {
                let rows = sqlx::query(
                    "SELECT seq, body FROM relay WHERE mailbox = $1 AND seq > $2 ORDER BY seq LIMIT $3",
                )
                .bind(mailbox)
                .bind(after)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(|row| Ok((row.try_get("seq")?, row.try_get("body")?))).collect()
            }

            async fn purge_sharing(&self, now: i64, requests_before: i64, relay_before: i64) -> Result<u64> {
                let _write = self.writer().await;
                let mut conn = self.pool.acquire().await?;
                let result: Result<u64> = async {
                    let mut tx = conn.begin_with($begin).await?;
                    let answers = sqlx::query(
                        "DELETE FROM sharing_answers WHERE request IN \
                         (SELECT id FROM sharing_requests WHERE expires_at < $1)",
                    )
                    .bind(requests_before)
                    .execute(&mut *tx)
                    .await?;
                    // Unanswered requests go once expired; answered ones after the grace period.
                    let requests = sqlx::query(
                        "DELETE FROM sharing_requests WHERE expires_at < $1 \
                         OR (expires_at <= $2 \
                         AND NOT EXISTS (SELECT 1 FROM sharing_answers a WHERE a.request = sharing_requests.id))",
                    )
                    .bind(requests_before)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                    let relay = sqlx::query("DELETE FROM relay WHERE created_at < $1")
                        .bind(relay_before)
                        .execute(&mut *tx)
                        .await?;
                    tx.commit().await?;
                    Ok(answers.rows_affected() + requests.rows_affected() + relay.rows_affected())
                }
                .await;
                settle(&mut conn, &result);
                result
            }

            async fn relay_ack(&self, mailbox: &str, upto: i64) -> Result<u64> {
                let _write = self.writer().await;
                let done = sqlx::query("DELETE FROM relay WHERE mailbox = $1 AND seq <= $2")
                    .bind(mailbox)
                    .bind(upto)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected())
            }

            async fn put_skipped(&self, device: DeviceId, from: u64, until: u64, at: i64) -> Result<()> {
                // No sequence number above 2^63 - 1 can be stored, so a range reaching past it ends there.
                let (from, until) = (seq(from)?, i64::try_from(until).unwrap_or(i64::MAX));
                if until <= from {
                    return Ok(());
                }
                let _write = self.writer().await;
                let done = sqlx::query(
                    "INSERT INTO skipped (device, from_seq, until_seq, noted_at) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (device, from_seq, until_seq) DO NOTHING",
                )
                .bind(&device.0[..])
                .bind(from)
                .bind(until)
                .bind(at)
                .execute(&self.pool)
                .await;
                match done {
                    Err(sqlx::Error::Database(e)) if e.is_foreign_key_violation() => Err(StoreError::UnknownDevice(device)),
                    other => other.map(|_| ()).map_err(Into::into),
                }
            }

            async fn gaps(&self, device: DeviceId, limit: u32) -> Result<Vec<(u64, u64)>> {
                // Stored records and skipped ranges are spans [s, e] (inclusive, so no + 1 can overflow). Walking
                // them by start, a gap lies before every span that starts more than one past the highest end so
                // far; only gaps below the highest stored sequence number count.
                let rows = sqlx::query(
                    "SELECT prev, s FROM (\
                       SELECT s, COALESCE(MAX(e) OVER \
                         (ORDER BY s, e ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), -1) AS prev \
                       FROM (SELECT seq AS s, seq AS e FROM records WHERE device = $1 \
                             UNION ALL SELECT from_seq, until_seq - 1 FROM skipped WHERE device = $1) AS spans\
                     ) AS walk \
                     WHERE s - prev > 1 AND s <= (SELECT max_seq FROM devices WHERE device = $1) \
                     ORDER BY s LIMIT $2",
                )
                .bind(&device.0[..])
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
                rows.iter()
                    .map(|row| {
                        let prev: i64 = row.try_get("prev")?;
                        let until: i64 = row.try_get("s")?;
                        let bad = || StoreError::Corrupt("negative sequence number");
                        Ok((u64::try_from(prev + 1).map_err(|_| bad())?, u64::try_from(until).map_err(|_| bad())?))
                    })
                    .collect()
            }

            async fn open_requests(&self, owner: Option<[u8; 32]>, now: i64) -> Result<u64> {
                let n: i64 = sqlx::query(
                    "SELECT COUNT(*) AS n FROM sharing_requests r \
                     WHERE ($1 IS NULL OR owner = $1) AND expires_at > $2 \
                     AND NOT EXISTS (SELECT 1 FROM sharing_answers a WHERE a.request = r.id)",
                )
                .bind(owner.as_ref().map(|o| &o[..]))
                .bind(now)
                .fetch_one(&self.pool)
                .await?
                .try_get("n")?;
                u64::try_from(n).map_err(|_| StoreError::Corrupt("negative count"))
            }

            async fn open_pairing(&self, device: DeviceId, until: i64) -> Result<bool> {
                let _write = self.writer().await;
                let done = sqlx::query("UPDATE devices SET pairing_until = $2 WHERE device = $1 AND revoked_at IS NULL")
                    .bind(&device.0[..])
                    .bind(until)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn pairing_open(&self, device: DeviceId, now: i64) -> Result<bool> {
                let open = sqlx::query(
                    "SELECT 1 FROM devices WHERE device = $1 AND revoked_at IS NULL AND pairing_until > $2",
                )
                .bind(&device.0[..])
                .bind(now)
                .fetch_optional(&self.pool)
                .await?;
                Ok(open.is_some())
            }

            async fn create_account(&self, name: &str, password_hash: &str, at: i64) -> Result<i64> {
                let _write = self.writer().await;
                let mut conn = self.pool.acquire().await?;
                let result: Result<i64> = async {
                    let mut tx = conn.begin_with($begin).await?;
                    let row = sqlx::query(
                        "INSERT INTO accounts (name, password, created_at) VALUES ($1, $2, $3) RETURNING id",
                    )
                    .bind(name)
                    .bind(password_hash)
                    .bind(at)
                    .fetch_one(&mut *tx)
                    .await;
                    let id: i64 = match row {
                        Err(e) if is_unique_violation(&e) => return Err(StoreError::NameTaken),
                        other => other?.try_get("id")?,
                    };
                    tx.commit().await?;
                    Ok(id)
                }
                .await;
                settle(&mut conn, &result);
                result
            }

            async fn account_by_name(&self, name: &str) -> Result<Option<Account>> {
                let row = sqlx::query("SELECT * FROM accounts WHERE name = $1")
                    .bind(name)
                    .fetch_optional(&self.pool)
                    .await?;
                row.as_ref().map(Self::account_row).transpose()
            }

            async fn account(&self, id: i64) -> Result<Option<Account>> {
                let row = sqlx::query("SELECT * FROM accounts WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?;
                row.as_ref().map(Self::account_row).transpose()
            }

            async fn set_password(&self, account: i64, password_hash: &str, keep: Option<[u8; 32]>) -> Result<u64> {
                let _write = self.writer().await;
                let mut conn = self.pool.acquire().await?;
                let result: Result<u64> = async {
                    let mut tx = conn.begin_with($begin).await?;
                    let done = sqlx::query("UPDATE accounts SET password = $2 WHERE id = $1")
                        .bind(account)
                        .bind(password_hash)
                        .execute(&mut *tx)
                        .await?;
                    if done.rows_affected() != 1 {
                        return Err(StoreError::UnknownAccount(account));
                    }
                    let ended = sqlx::query(
                        "DELETE FROM sessions WHERE account = $1 AND ($2 IS NULL OR token_hash <> $2)",
                    )
                    .bind(account)
                    .bind(keep.as_ref().map(|k| &k[..]))
                    .execute(&mut *tx)
                    .await?;
                    tx.commit().await?;
                    Ok(ended.rows_affected())
                }
                .await;
                settle(&mut conn, &result);
                result
            }

            async fn login_failed(&self, account: i64, home: bool, at: i64) -> Result<LoginThrottle> {
                let _write = self.writer().await;
                let mut conn = self.pool.acquire().await?;
                let result: Result<LoginThrottle> = async {
                    let mut tx = conn.begin_with($begin).await?;
                    let statement = if home {
                        "UPDATE accounts SET home_failures = home_failures + 1, home_last_failure_at = $2 \
                         WHERE id = $1 RETURNING *"
                    } else {
                        "UPDATE accounts SET failures = failures + 1, last_failure_at = $2 WHERE id = $1 RETURNING *"
                    };
                    let row = sqlx::query(statement)
                        .bind(account)
                        .bind(at)
                        .fetch_optional(&mut *tx)
                        .await?
                        .ok_or(StoreError::UnknownAccount(account))?;
                    let throttle = Self::throttle_row(&row)?;
                    tx.commit().await?;
                    Ok(throttle)
                }
                .await;
                settle(&mut conn, &result);
                result
            }

            async fn login_succeeded(&self, account: i64, address: &str) -> Result<()> {
                let _write = self.writer().await;
                let done = sqlx::query(
                    "UPDATE accounts SET failures = 0, last_failure_at = NULL, home_address = $2, \
                     home_failures = 0, home_last_failure_at = NULL WHERE id = $1",
                )
                .bind(account)
                .bind(address)
                .execute(&self.pool)
                .await?;
                if done.rows_affected() != 1 {
                    return Err(StoreError::UnknownAccount(account));
                }
                Ok(())
            }

            async fn put_session(&self, s: &Session) -> Result<()> {
                let _write = self.writer().await;
                let done = sqlx::query(
                    "INSERT INTO sessions (token_hash, account, created_at, expires_at, last_used_at) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(&s.token_hash[..])
                .bind(s.account)
                .bind(s.created_at)
                .bind(s.expires_at)
                .bind(s.last_used_at)
                .execute(&self.pool)
                .await;
                match done {
                    Err(e) if is_foreign_key_violation(&e) => Err(StoreError::UnknownAccount(s.account)),
                    Err(e) if is_unique_violation(&e) => Err(StoreError::InvalidInput("session token reused")),
                    other => other.map(|_| ()).map_err(Into::into),
                }
            }

            async fn session(&self, token_hash: [u8; 32], now: i64) -> Result<Option<Session>> {
                let row = sqlx::query("SELECT * FROM sessions WHERE token_hash = $1 AND expires_at > $2")
                    .bind(&token_hash[..])
                    .bind(now)
                    .fetch_optional(&self.pool)
                    .await?;
                row.as_ref().map(Self::session_row).transpose()
            }

            async fn touch_session(&self, token_hash: [u8; 32], now: i64, expires_at: i64) -> Result<bool> {
                let _write = self.writer().await;
                let done = sqlx::query(
                    "UPDATE sessions SET last_used_at = $2, \
                     expires_at = CASE WHEN $3 > expires_at THEN $3 ELSE expires_at END \
                     WHERE token_hash = $1 AND expires_at > $2",
                )
                .bind(&token_hash[..])
                .bind(now)
                .bind(expires_at)
                .execute(&self.pool)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn delete_session(&self, token_hash: [u8; 32]) -> Result<bool> {
                let _write = self.writer().await;
                let done = sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
                    .bind(&token_hash[..])
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn purge_sessions(&self, now: i64) -> Result<u64> {
                let _write = self.writer().await;
                let done = sqlx::query("DELETE FROM sessions WHERE expires_at <= $1").bind(now).execute(&self.pool).await?;
                Ok(done.rows_affected())
            }

            async fn set_owner(&self, device: DeviceId, from: Option<i64>, to: i64, at: i64) -> Result<bool> {
                let _write = self.writer().await;
                let mut conn = self.pool.acquire().await?;
                let result: Result<bool> = async {
                    let mut tx = conn.begin_with($begin).await?;
                    // A no-op write locks the device's row (PostgreSQL; SQLite's IMMEDIATE holds the whole
                    // database): concurrent changes of one device's owner take turns.
                    let known = sqlx::query("UPDATE devices SET pairing_until = pairing_until WHERE device = $1")
                        .bind(&device.0[..])
                        .execute(&mut *tx)
                        .await?;
                    if known.rows_affected() == 0 {
                        return Err(StoreError::UnknownDevice(device));
                    }
                    if sqlx::query("SELECT 1 FROM accounts WHERE id = $1").bind(to).fetch_optional(&mut *tx).await?.is_none() {
                        return Err(StoreError::UnknownAccount(to));
                    }
                    let current: Option<i64> = sqlx::query("SELECT account FROM ownership WHERE device = $1")
                        .bind(&device.0[..])
                        .fetch_optional(&mut *tx)
                        .await?
                        .map(|row| row.try_get("account"))
                        .transpose()?;
                    if current != from {
                        return Ok(false);
                    }
                    if from.is_some() {
                        sqlx::query("UPDATE ownership SET account = $2, since = $3 WHERE device = $1")
                            .bind(&device.0[..])
                            .bind(to)
                            .bind(at)
                            .execute(&mut *tx)
                            .await?;
                        // A new owner starts with no shares: the old owner's grants were the old owner's.
                        sqlx::query("DELETE FROM shares WHERE device = $1")
                            .bind(&device.0[..])
                            .execute(&mut *tx)
                            .await?;
                    } else {
                        sqlx::query("INSERT INTO ownership (device, account, since) VALUES ($1, $2, $3)")
                            .bind(&device.0[..])
                            .bind(to)
                            .bind(at)
                            .execute(&mut *tx)
                            .await?;
                        // The owner needs no share of its own device.
                        sqlx::query("DELETE FROM shares WHERE device = $1 AND account = $2")
                            .bind(&device.0[..])
                            .bind(to)
                            .execute(&mut *tx)
                            .await?;
                    }
                    sqlx::query("INSERT INTO ownership_log (device, from_account, to_account, at) VALUES ($1, $2, $3, $4)")
                        .bind(&device.0[..])
                        .bind(from)
                        .bind(to)
                        .bind(at)
                        .execute(&mut *tx)
                        .await?;
                    tx.commit().await?;
                    Ok(true)
                }
                .await;
                settle(&mut conn, &result);
                result
            }

            async fn owner(&self, device: DeviceId) -> Result<Option<i64>> {
                let row = sqlx::query("SELECT account FROM ownership WHERE device = $1")
                    .bind(&device.0[..])
                    .fetch_optional(&self.pool)
                    .await?;
                row.map(|row| Ok(row.try_get("account")?)).transpose()
            }

            async fn owned_devices(&self, account: i64) -> Result<Vec<DeviceId>> {
                let rows = sqlx::query("SELECT device FROM ownership WHERE account = $1 ORDER BY device")
                    .bind(account)
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(|row| device_id(row.try_get("device")?)).collect()
            }

            async fn ownership_log(&self, device: DeviceId) -> Result<Vec<OwnershipChange>> {
                let rows = sqlx::query(
                    "SELECT from_account, to_account, at FROM ownership_log WHERE device = $1 ORDER BY id",
                )
                .bind(&device.0[..])
                .fetch_all(&self.pool)
                .await?;
                rows.iter()
                    .map(|row| {
                        Ok(OwnershipChange {
                            device,
                            from: row.try_get("from_account")?,
                            to: row.try_get("to_account")?,
                            at: row.try_get("at")?,
                        })
                    })
                    .collect()
            }

            async fn put_share(&self, device: DeviceId, account: i64, rights: Rights, at: i64) -> Result<()> {
                let _write = self.writer().await;
                let mut conn = self.pool.acquire().await?;
                let result: Result<()> = async {
                    let mut tx = conn.begin_with($begin).await?;
                    let owns = sqlx::query("SELECT 1 FROM ownership WHERE device = $1 AND account = $2")
                        .bind(&device.0[..])
                        .bind(account)
                        .fetch_optional(&mut *tx)
                        .await?;
                    if owns.is_some() {
                        return Err(StoreError::InvalidInput("the account owns the device"));
                    }
                    let done = sqlx::query(
                        "INSERT INTO shares (device, account, rights, granted_at) VALUES ($1, $2, $3, $4) \
                         ON CONFLICT (device, account) DO UPDATE SET rights = excluded.rights, \
                         granted_at = excluded.granted_at",
                    )
                    .bind(&device.0[..])
                    .bind(account)
                    .bind(rights.as_str())
                    .bind(at)
                    .execute(&mut *tx)
                    .await;
                    match done {
                        Err(e) if is_foreign_key_violation(&e) => {
                            // PostgreSQL has aborted the transaction; which of the two is unknown?
                            tx.rollback().await?;
                            return Err(match self.device(device).await? {
                                None => StoreError::UnknownDevice(device),
                                Some(_) => StoreError::UnknownAccount(account),
                            });
                        }
                        other => other?,
                    };
                    tx.commit().await?;
                    Ok(())
                }
                .await;
                settle(&mut conn, &result);
                result
            }

            async fn remove_share(&self, device: DeviceId, account: i64) -> Result<bool> {
                let _write = self.writer().await;
                let done = sqlx::query("DELETE FROM shares WHERE device = $1 AND account = $2")
                    .bind(&device.0[..])
                    .bind(account)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn shared_with(&self, account: i64) -> Result<Vec<(DeviceId, Rights)>> {
                let rows = sqlx::query("SELECT device, rights FROM shares WHERE account = $1 ORDER BY device")
                    .bind(account)
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(|row| Ok((device_id(row.try_get("device")?)?, rights(row.try_get("rights")?)?))).collect()
            }

            async fn shares_of(&self, device: DeviceId) -> Result<Vec<(i64, Rights)>> {
                let rows = sqlx::query("SELECT account, rights FROM shares WHERE device = $1 ORDER BY account")
                    .bind(&device.0[..])
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(|row| Ok((row.try_get("account")?, rights(row.try_get("rights")?)?))).collect()
            }

            async fn put_claim(&self, c: &Claim) -> Result<bool> {
                let _write = self.writer().await;
                let done = sqlx::query(
                    "INSERT INTO claims (token_hash, device, account, created_at, expires_at) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (token_hash) DO NOTHING",
                )
                .bind(&c.token_hash[..])
                .bind(&c.device.0[..])
                .bind(c.account)
                .bind(c.created_at)
                .bind(c.expires_at)
                .execute(&self.pool)
                .await;
                match done {
                    Err(e) if is_foreign_key_violation(&e) => Err(match self.device(c.device).await? {
                        None => StoreError::UnknownDevice(c.device),
                        Some(_) => StoreError::UnknownAccount(c.account),
                    }),
                    other => Ok(other?.rows_affected() == 1),
                }
            }

            async fn take_claim(&self, token_hash: [u8; 32], now: i64) -> Result<Option<Claim>> {
                let _write = self.writer().await;
                let mut conn = self.pool.acquire().await?;
                let result: Result<Option<Claim>> = async {
                    let mut tx = conn.begin_with($begin).await?;
                    let row = sqlx::query("DELETE FROM claims WHERE token_hash = $1 RETURNING *")
                        .bind(&token_hash[..])
                        .fetch_optional(&mut *tx)
                        .await?;
                    let claim = row
                        .map(|row| -> Result<Claim> {
                            Ok(Claim {
                                token_hash: key(row.try_get("token_hash")?)?,
                                device: device_id(row.try_get("device")?)?,
                                account: row.try_get("account")?,
                                created_at: row.try_get("created_at")?,
                                expires_at: row.try_get("expires_at")?,
                            })
                        })
                        .transpose()?;
                    tx.commit().await?;
                    Ok(claim.filter(|c| c.expires_at > now))
                }
                .await;
                settle(&mut conn, &result);
                result
            }

            async fn open_claims(&self, account: i64, device: Option<DeviceId>, now: i64) -> Result<u64> {
                let n: i64 = sqlx::query(
                    "SELECT COUNT(*) AS n FROM claims WHERE account = $1 AND ($2 IS NULL OR device = $2) \
                     AND expires_at > $3",
                )
                .bind(account)
                .bind(device.as_ref().map(|d| &d.0[..]))
                .bind(now)
                .fetch_one(&self.pool)
                .await?
                .try_get("n")?;
                u64::try_from(n).map_err(|_| StoreError::Corrupt("negative count"))
            }

            async fn last_seen(&self, device: DeviceId) -> Result<Option<i64>> {
                let row = sqlx::query("SELECT last_seen FROM presence WHERE device = $1")
                    .bind(&device.0[..])
                    .fetch_optional(&self.pool)
                    .await?;
                row.map(|row| row.try_get("last_seen")).transpose().map_err(Into::into)
            }

            async fn push_control(&self, m: &NewControl, max_waiting: u32) -> Result<i64> {
                let _write = self.writer().await;
                let mut conn = self.pool.acquire().await?;
                let result: Result<i64> = async {
                    let mut tx = conn.begin_with($begin).await?;
                    // Lock the device's row first, so that two pushes cannot both see room for one more.
                    let known = sqlx::query("UPDATE devices SET pairing_until = pairing_until WHERE device = $1")
                        .bind(&m.device.0[..])
                        .execute(&mut *tx)
                        .await?;
                    if known.rows_affected() == 0 {
                        return Err(StoreError::UnknownDevice(m.device));
                    }
                    let waiting: i64 = sqlx::query(
                        "SELECT COUNT(*) AS n FROM control WHERE device = $1 AND answer IS NULL AND expires_at > $2",
                    )
                    .bind(&m.device.0[..])
                    .bind(m.created_at)
                    .fetch_one(&mut *tx)
                    .await?
                    .try_get("n")?;
                    if waiting >= i64::from(max_waiting) {
                        return Err(StoreError::QueueFull(m.device));
                    }
                    let row = sqlx::query(
                        "INSERT INTO control (device, account, kind, message, created_at, expires_at) \
                         VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
                    )
                    .bind(&m.device.0[..])
                    .bind(m.account)
                    .bind(i32::from(m.kind))
                    .bind(&m.message[..])
                    .bind(m.created_at)
                    .bind(m.expires_at)
                    .fetch_one(&mut *tx)
                    .await;
                    let id: i64 = match row {
                        Err(e) if is_foreign_key_violation(&e) => return Err(StoreError::UnknownAccount(m.account)),
                        other => other?.try_get("id")?,
                    };
                    tx.commit().await?;
                    Ok(id)
                }
                .await;
                settle(&mut conn, &result);
                result
            }

            async fn pending_control(&self, device: DeviceId, after: i64, now: i64, limit: u32) -> Result<Vec<ControlMessage>> {
                let rows = sqlx::query(
                    "SELECT * FROM control WHERE device = $1 AND id > $2 AND answer IS NULL AND expires_at > $3 \
                     ORDER BY id LIMIT $4",
                )
                .bind(&device.0[..])
                .bind(after)
                .bind(now)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(Self::control_row).collect()
            }

            async fn control_message(&self, device: DeviceId, id: i64) -> Result<Option<ControlMessage>> {
                let row = sqlx::query("SELECT * FROM control WHERE device = $1 AND id = $2")
                    .bind(&device.0[..])
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?;
                row.as_ref().map(Self::control_row).transpose()
            }

            async fn put_control_answer(&self, device: DeviceId, id: i64, answer: &[u8], at: i64) -> Result<bool> {
                let _write = self.writer().await;
                let mut conn = self.pool.acquire().await?;
                let result: Result<bool> = async {
                    let mut tx = conn.begin_with($begin).await?;
                    let done = sqlx::query(
                        "UPDATE control SET answer = $3, answered_at = $4 \
                         WHERE device = $1 AND id = $2 AND answer IS NULL",
                    )
                    .bind(&device.0[..])
                    .bind(id)
                    .bind(answer)
                    .bind(at)
                    .execute(&mut *tx)
                    .await?;
                    if done.rows_affected() == 1 {
                        tx.commit().await?;
                        return Ok(true);
                    }
                    let exists = sqlx::query("SELECT 1 FROM control WHERE device = $1 AND id = $2")
                        .bind(&device.0[..])
                        .bind(id)
                        .fetch_optional(&mut *tx)
                        .await?;
                    tx.commit().await?;
                    match exists {
                        Some(_) => Ok(false),
                        None => Err(StoreError::UnknownControl(device, id)),
                    }
                }
                .await;
                settle(&mut conn, &result);
                result
            }

            async fn purge_control(&self, before: i64) -> Result<u64> {
                let _write = self.writer().await;
                let mut conn = self.pool.acquire().await?;
                let result: Result<u64> = async {
                    let mut tx = conn.begin_with($begin).await?;
                    let control = sqlx::query("DELETE FROM control WHERE expires_at < $1")
                        .bind(before)
                        .execute(&mut *tx)
                        .await?;
                    let claims = sqlx::query("DELETE FROM claims WHERE expires_at < $1")
                        .bind(before)
                        .execute(&mut *tx)
                        .await?;
                    tx.commit().await?;
                    Ok(control.rows_affected() + claims.rows_affected())
                }
                .await;
                settle(&mut conn, &result);
                result
            }

            async fn put_device_state(&self, device: DeviceId, state: &str, at: i64) -> Result<()> {
                if state.len() > MAX_DEVICE_STATE {
                    return Err(StoreError::InvalidInput("device state longer than 64 bytes"));
                }
                let _write = self.writer().await;
                let done = sqlx::query(
                    "INSERT INTO device_state (device, state, at) VALUES ($1, $2, $3) \
                     ON CONFLICT (device) DO UPDATE SET state = excluded.state, at = excluded.at \
                     WHERE excluded.at >= device_state.at",
                )
                .bind(&device.0[..])
                .bind(state)
                .bind(at)
                .execute(&self.pool)
                .await;
                match done {
                    Err(e) if is_foreign_key_violation(&e) => Err(StoreError::UnknownDevice(device)),
                    other => other.map(|_| ()).map_err(Into::into),
                }
            }

            async fn put_grant(&self, request: [u8; 32], signed: &[u8], at: i64, spans: &[GrantSpan]) -> Result<bool> {
                let _write = self.writer().await;
                let mut conn = self.pool.acquire().await?;
                let result: Result<bool> = async {
                    let mut tx = conn.begin_with($begin).await?;
                    let known = sqlx::query("SELECT 1 FROM sharing_requests WHERE id = $1")
                        .bind(&request[..])
                        .fetch_optional(&mut *tx)
                        .await?;
                    if known.is_none() {
                        return Err(StoreError::InvalidInput("no such request"));
                    }
                    let done = sqlx::query(
                        "INSERT INTO sharing_answers (request, signed, answered_at) VALUES ($1, $2, $3) \
                         ON CONFLICT (request) DO NOTHING",
                    )
                    .bind(&request[..])
                    .bind(signed)
                    .bind(at)
                    .execute(&mut *tx)
                    .await?;
                    if done.rows_affected() != 1 {
                        return Ok(false);
                    }
                    for span in spans {
                        sqlx::query(
                            "INSERT INTO grant_spans (app, device, epoch, from_leaf, until_leaf, request, granted_at) \
                             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
                        )
                        .bind(&span.app[..])
                        .bind(&span.device.0[..])
                        .bind(i32::from(span.epoch))
                        .bind(i64::from(span.from_leaf))
                        .bind(i64::try_from(span.until_leaf).map_err(|_| StoreError::InvalidInput("leaf above 2^63 - 1"))?)
                        .bind(&request[..])
                        .bind(at)
                        .execute(&mut *tx)
                        .await?;
                    }
                    tx.commit().await?;
                    Ok(true)
                }
                .await;
                settle(&mut conn, &result);
                result
            }

            async fn grant_spans(&self, app: [u8; 32], device: DeviceId) -> Result<Vec<GrantSpan>> {
                let rows = sqlx::query(
                    "SELECT epoch, from_leaf, until_leaf, request FROM grant_spans WHERE app = $1 AND device = $2 \
                     ORDER BY epoch, from_leaf, until_leaf, request",
                )
                .bind(&app[..])
                .bind(&device.0[..])
                .fetch_all(&self.pool)
                .await?;
                rows.iter()
                    .map(|row| {
                        let epoch: i32 = row.try_get("epoch")?;
                        let from: i64 = row.try_get("from_leaf")?;
                        let until: i64 = row.try_get("until_leaf")?;
                        Ok(GrantSpan {
                            app,
                            device,
                            epoch: u16::try_from(epoch).map_err(|_| StoreError::Corrupt("epoch out of range"))?,
                            from_leaf: u32::try_from(from).map_err(|_| StoreError::Corrupt("leaf out of range"))?,
                            until_leaf: u64::try_from(until).map_err(|_| StoreError::Corrupt("leaf out of range"))?,
                            request: key(row.try_get("request")?)?,
                        })
                    })
                    .collect()
            }

            async fn granted_records(&self, q: &RecordQuery, app: [u8; 32]) -> Result<Vec<StoredRecord>> {
                let rows = sqlx::query(
                    "SELECT id, seq, epoch, leaf, body, received_at FROM records r \
                     WHERE device = $1 AND epoch = $2 AND leaf >= $3 AND leaf < $4 AND id > $5 \
                     AND EXISTS (SELECT 1 FROM grant_spans g WHERE g.app = $7 AND g.device = r.device \
                     AND g.epoch = r.epoch AND g.from_leaf <= r.leaf AND r.leaf < g.until_leaf) \
                     ORDER BY id LIMIT $6",
                )
                .bind(&q.device.0[..])
                .bind(i32::from(q.epoch))
                .bind(i64::from(q.leaf_from))
                .bind(i64::from(q.leaf_until))
                .bind(q.after.unwrap_or(-1))
                .bind(i64::from(q.limit))
                .bind(&app[..])
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(|row| Self::record_row(row, q.device)).collect()
            }

            async fn put_session_key(&self, k: &SessionKeyRecord) -> Result<bool> {
                let _write = self.writer().await;
                let mut conn = self.pool.acquire().await?;
                let result: Result<bool> = async {
                    let mut tx = conn.begin_with($begin).await?;
                    // A two-party key keeps its peer in its own row (migration 0010); a group key, in
                    // session_key_peers.
                    let inline = inline_peer(k);
                    let done = sqlx::query(
                        "INSERT INTO session_keys (requester, kid, kind, expires_at, created_at, peer, package, received_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (requester, kid) DO NOTHING",
                    )
                    .bind(&k.requester.0[..])
                    .bind(&k.kid[..])
                    .bind(i32::from(k.kind))
                    .bind(k.expires_at)
                    .bind(k.created_at)
                    .bind(inline.map(|p| &p.peer.0[..]))
                    .bind(inline.and_then(|p| p.package.as_deref()))
                    .bind(inline.and_then(|p| p.received_at))
                    .execute(&mut *tx)
                    .await;
                    let done = match done {
                        Err(e) if is_foreign_key_violation(&e) => {
                            return Err(match inline {
                                Some(p) => StoreError::UnknownDevice(p.peer),
                                None => StoreError::UnknownDevice(k.requester),
                            });
                        }
                        other => other?,
                    };
                    if done.rows_affected() == 0 {
                        return Ok(false);
                    }
                    for p in k.peers.iter().filter(|_| inline.is_none()) {
                        let done = sqlx::query(
                            "INSERT INTO session_key_peers (requester, kid, peer, package, received_at) VALUES ($1, $2, $3, $4, $5)",
                        )
                        .bind(&k.requester.0[..])
                        .bind(&k.kid[..])
                        .bind(&p.peer.0[..])
                        .bind(p.package.as_deref())
                        .bind(p.received_at)
                        .execute(&mut *tx)
                        .await;
                        match done {
                            Err(e) if is_foreign_key_violation(&e) => return Err(StoreError::UnknownDevice(p.peer)),
                            other => other?,
                        };
                    }
                    tx.commit().await?;
                    Ok(true)
                }
                .await;
                settle(&mut conn, &result);
                result
            }

            async fn put_session_keys(&self, ks: &[SessionKeyRecord]) -> Result<Vec<bool>> {
                if ks.is_empty() {
                    return Ok(Vec::new());
                }
                let _write = self.writer().await;
                let mut conn = self.pool.acquire().await?;
                // Every key id is new but for a replayed request: the insert returns no rows, only how many it took
                // (each row returned is a hand-off between threads in sqlx's SQLite driver, and they were most of
                // the hub's cost of a gateway batch). If it took fewer than it was given, it is undone and done
                // again, naming the keys that were new.
                let mut result = self.try_put_session_keys(&mut conn, ks, false).await;
                if matches!(result, Ok(None)) {
                    settle(&mut conn, &result);
                    result = self.try_put_session_keys(&mut conn, ks, true).await;
                }
                settle(&mut conn, &result);
                result?.ok_or(StoreError::Corrupt("a batch of keys was neither taken nor named"))
            }

            async fn session_key(&self, requester: DeviceId, kid: [u8; 8]) -> Result<Option<SessionKeyRecord>> {
                let Some(row) = sqlx::query("SELECT kind, expires_at, created_at, peer, package, received_at FROM session_keys WHERE requester = $1 AND kid = $2")
                    .bind(&requester.0[..])
                    .bind(&kid[..])
                    .fetch_optional(&self.pool)
                    .await?
                else {
                    return Ok(None);
                };
                let kind: i32 = row.try_get("kind")?;
                let inline: Option<&[u8]> = row.try_get("peer")?;
                let rows = sqlx::query("SELECT peer, package, received_at FROM session_key_peers WHERE requester = $1 AND kid = $2 ORDER BY peer")
                    .bind(&requester.0[..])
                    .bind(&kid[..])
                    .fetch_all(&self.pool)
                    .await?;
                let peers = std::iter::once(&row)
                    .filter(|_| inline.is_some())
                    .chain(&rows)
                    .map(|r| {
                        Ok(KeyPeer {
                            peer: device_id(r.try_get::<&[u8], _>("peer")?)?,
                            package: r.try_get("package")?,
                            received_at: r.try_get("received_at")?,
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                Ok(Some(SessionKeyRecord {
                    requester,
                    kid,
                    kind: u8::try_from(kind).map_err(|_| StoreError::Corrupt("key request type"))?,
                    expires_at: row.try_get("expires_at")?,
                    created_at: row.try_get("created_at")?,
                    peers,
                }))
            }

            async fn key_deliveries(&self, peer: DeviceId, now: i64, limit: u32) -> Result<Vec<KeyDelivery>> {
                let rows = sqlx::query(
                    "SELECT requester, kid, package, expires_at FROM (\
                       SELECT k.requester, k.kid, k.package, k.expires_at, k.created_at FROM session_keys k \
                       WHERE k.peer = $1 AND k.package IS NOT NULL AND k.received_at IS NULL AND k.expires_at > $2 \
                       UNION ALL \
                       SELECT p.requester, p.kid, p.package, k.expires_at, k.created_at FROM session_key_peers p \
                       JOIN session_keys k ON k.requester = p.requester AND k.kid = p.kid \
                       WHERE p.peer = $1 AND p.received_at IS NULL AND p.package IS NOT NULL AND k.expires_at > $2) AS waiting \
                     ORDER BY created_at, requester, kid LIMIT $3",
                )
                .bind(&peer.0[..])
                .bind(now)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
                rows.iter()
                    .map(|r| {
                        Ok(KeyDelivery {
                            requester: device_id(r.try_get::<&[u8], _>("requester")?)?,
                            kid: r.try_get::<&[u8], _>("kid")?.try_into().map_err(|_| StoreError::Corrupt("key id is not 8 bytes"))?,
                            package: r.try_get("package")?,
                            expires_at: r.try_get("expires_at")?,
                        })
                    })
                    .collect()
            }

            async fn key_received(&self, peer: DeviceId, requester: DeviceId, kid: [u8; 8], at: i64) -> Result<bool> {
                let _write = self.writer().await;
                // The peer is in the key's own row (a two-party key) or in session_key_peers (a group key, or a
                // key stored before migration 0010); never in both.
                for table in ["session_keys", "session_key_peers"] {
                    let done = sqlx::query(&format!(
                        "UPDATE {table} SET package = NULL, received_at = COALESCE(received_at, $4) \
                         WHERE peer = $1 AND requester = $2 AND kid = $3",
                    ))
                    .bind(&peer.0[..])
                    .bind(&requester.0[..])
                    .bind(&kid[..])
                    .bind(at)
                    .execute(&self.pool)
                    .await?;
                    if done.rows_affected() == 1 {
                        return Ok(true);
                    }
                }
                Ok(false)
            }

            async fn dead_keys(&self, now: i64, limit: u32) -> Result<Vec<(DeviceId, [u8; 8], i64)>> {
                let rows = sqlx::query(
                    "SELECT k.requester, k.kid, k.expires_at FROM session_keys k WHERE k.expires_at > $1 AND (\
                       EXISTS (SELECT 1 FROM devices d WHERE d.device = k.requester AND d.revoked_at IS NOT NULL) \
                       OR EXISTS (SELECT 1 FROM devices d WHERE d.device = k.peer AND d.revoked_at IS NOT NULL) \
                       OR EXISTS (SELECT 1 FROM session_key_peers p JOIN devices d ON d.device = p.peer \
                                  WHERE p.requester = k.requester AND p.kid = k.kid AND d.revoked_at IS NOT NULL)) \
                     ORDER BY k.requester, k.kid LIMIT $2",
                )
                .bind(now)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
                rows.iter()
                    .map(|r| {
                        Ok((
                            device_id(r.try_get::<&[u8], _>("requester")?)?,
                            r.try_get::<&[u8], _>("kid")?.try_into().map_err(|_| StoreError::Corrupt("key id is not 8 bytes"))?,
                            r.try_get("expires_at")?,
                        ))
                    })
                    .collect()
            }

            async fn purge_session_keys(&self, before: i64) -> Result<u64> {
                let _write = self.writer().await;
                let mut conn = self.pool.acquire().await?;
                let result: Result<u64> = async {
                    let mut tx = conn.begin_with($begin).await?;
                    // No reliance on ON DELETE CASCADE: delete the peers first, then the keys.
                    sqlx::query(
                        "DELETE FROM session_key_peers WHERE EXISTS (SELECT 1 FROM session_keys k \
                         WHERE k.requester = session_key_peers.requester AND k.kid = session_key_peers.kid AND k.expires_at < $1)",
                    )
                    .bind(before)
                    .execute(&mut *tx)
                    .await?;
                    let keys = sqlx::query("DELETE FROM session_keys WHERE expires_at < $1").bind(before).execute(&mut *tx).await?;
                    tx.commit().await?;
                    Ok(keys.rows_affected())
                }
                .await;
                settle(&mut conn, &result);
                result
            }

            async fn device_state(&self, device: DeviceId) -> Result<Option<(String, i64)>> {
                let row = sqlx::query("SELECT state, at FROM device_state WHERE device = $1")
                    .bind(&device.0[..])
                    .fetch_optional(&self.pool)
                    .await?;
                row.map(|row| Ok((row.try_get("state")?, row.try_get("at")?))).transpose()
            }

            async fn put_tpm_parent(&self, device: DeviceId, public: &[u8]) -> Result<()> {
                if public.is_empty() || public.len() > 256 {
                    return Err(StoreError::InvalidInput("a TPM public area is 1 to 256 bytes"));
                }
                let _write = self.writer().await;
                let done = sqlx::query(
                    "INSERT INTO tpm_parents (device, public) SELECT device, $2 FROM devices WHERE device = $1 \
                     ON CONFLICT (device) DO UPDATE SET public = excluded.public",
                )
                .bind(&device.0[..])
                .bind(public)
                .execute(&self.pool)
                .await?;
                if done.rows_affected() == 0 {
                    return Err(StoreError::UnknownDevice(device));
                }
                Ok(())
            }

            async fn tpm_parents_among(&self, ids: &[DeviceId]) -> Result<std::collections::HashMap<DeviceId, Vec<u8>>> {
                if ids.is_empty() {
                    return Ok(std::collections::HashMap::new());
                }
                let sql = format!(
                    "SELECT device, public FROM tpm_parents WHERE device IN ({})",
                    placeholders($numbered, ids.len(), 1, false)
                );
                let mut q = sqlx::query(&sql);
                for d in ids {
                    q = q.bind(&d.0[..]);
                }
                let rows = q.fetch_all(&self.pool).await?;
                rows.iter()
                    .map(|r| Ok((device_id(r.try_get::<&[u8], _>("device")?)?, r.try_get("public")?)))
                    .collect()
            }
        }

        impl RegistryStore for $store {
            async fn append_entry(&self, e: &NewLogEntry, expected_size: u64) -> Result<u64> {
                let index = log_index(expected_size)?;
                check_entry(e)?;
                let _write = self.writer().await;
                let mut conn = self.pool.acquire().await?;
                let result: Result<u64> = async {
                    let mut tx = conn.begin_with($begin).await?;
                    // Indices are contiguous from 0 (each append is at the size it read), so the size is the
                    // highest index plus one: one primary-key lookup, not a count.
                    let size: i64 = sqlx::query("SELECT COALESCE(MAX(idx) + 1, 0) AS n FROM registry_log")
                        .fetch_one(&mut *tx)
                        .await?
                        .try_get("n")?;
                    if size != index {
                        return Err(StoreError::LogConflict { expected: expected_size, actual: stored_index(size)? });
                    }
                    let inserted = sqlx::query(
                        "INSERT INTO registry_log (idx, kind, data, leaf_hash, domain, added_at) \
                         VALUES ($1, $2, $3, $4, $5, $6)",
                    )
                    .bind(index)
                    .bind(i32::from(e.kind))
                    .bind(&e.data[..])
                    .bind(&e.leaf_hash[..])
                    .bind(e.domain.as_str())
                    .bind(e.added_at)
                    .execute(&mut *tx)
                    .await;
                    match inserted {
                        // PostgreSQL: a writer that read the same size committed this index first (this insert
                        // waited for it on the primary key). It has aborted the transaction: ask outside it.
                        Err(err) if is_unique_violation(&err) => {
                            tx.rollback().await?;
                            let actual = self.log_size().await?;
                            return Err(StoreError::LogConflict { expected: expected_size, actual });
                        }
                        other => other?,
                    };
                    if let Some(c) = &e.cert {
                        sqlx::query(
                            "INSERT INTO registry_certs (fingerprint, domain, data, updated_at, first_idx) \
                             VALUES ($1, $2, $3, $4, $5) \
                             ON CONFLICT (fingerprint) DO UPDATE SET data = excluded.data, updated_at = excluded.updated_at",
                        )
                        .bind(&c.fingerprint[..])
                        .bind(c.domain.as_str())
                        .bind(&c.data[..])
                        .bind(c.updated_at)
                        .bind(index)
                        .execute(&mut *tx)
                        .await?;
                        // The merged certificate replaces the old one: so do its keys and user ids.
                        sqlx::query("DELETE FROM registry_cert_keys WHERE cert = $1")
                            .bind(&c.fingerprint[..])
                            .execute(&mut *tx)
                            .await?;
                        sqlx::query("DELETE FROM registry_cert_uids WHERE cert = $1")
                            .bind(&c.fingerprint[..])
                            .execute(&mut *tx)
                            .await?;
                        for (n, chunk) in c.keys.chunks(INSERT_CHUNK).enumerate() {
                            let base = i32::try_from(n * INSERT_CHUNK).map_err(|_| StoreError::InvalidInput("too many keys"))?;
                            let mut q = sqlx::QueryBuilder::<$db>::new("INSERT INTO registry_cert_keys (cert, pos, fingerprint, key_id) ");
                            q.push_values((0..).zip(chunk), |mut b, (i, k): (i32, &[u8; 20])| {
                                b.push_bind(&c.fingerprint[..]).push_bind(base + i).push_bind(&k[..]).push_bind(&k[12..]);
                            });
                            q.build().execute(&mut *tx).await?;
                        }
                        sqlx::query("DELETE FROM registry_cert_words WHERE cert = $1")
                            .bind(&c.fingerprint[..])
                            .execute(&mut *tx)
                            .await?;
                        Self::insert_words(&mut tx, &c.fingerprint, &c.uids).await?;
                        for (n, chunk) in c.uids.chunks(INSERT_CHUNK).enumerate() {
                            let base = i32::try_from(n * INSERT_CHUNK).map_err(|_| StoreError::InvalidInput("too many user ids"))?;
                            let mut q = sqlx::QueryBuilder::<$db>::new("INSERT INTO registry_cert_uids (cert, pos, uid) ");
                            q.push_values((0..).zip(chunk), |mut b, (i, uid): (i32, &String)| {
                                b.push_bind(&c.fingerprint[..]).push_bind(base + i).push_bind(uid.as_str());
                            });
                            q.build().execute(&mut *tx).await?;
                        }
                    }
                    if let Some(st) = &e.statement {
                        sqlx::query(
                            "INSERT INTO registry_statements (idx, subject, kind, signer, issued_at, status) \
                             VALUES ($1, $2, $3, $4, $5, $6)",
                        )
                        .bind(index)
                        .bind(&st.subject[..])
                        .bind(i32::from(st.kind))
                        .bind(&st.signer[..])
                        .bind(st.issued_at)
                        .bind(st.status.map(i32::from))
                        .execute(&mut *tx)
                        .await?;
                    }
                    tx.commit().await?;
                    Ok(expected_size)
                }
                .await;
                settle(&mut conn, &result);
                result
            }

            async fn log_size(&self) -> Result<u64> {
                let size: i64 = sqlx::query("SELECT COALESCE(MAX(idx) + 1, 0) AS n FROM registry_log")
                    .fetch_one(&self.pool)
                    .await?
                    .try_get("n")?;
                stored_index(size)
            }

            async fn leaf_hashes(&self, from: u64, to: u64) -> Result<Vec<[u8; 32]>> {
                let from = log_index(from)?;
                // No index lies past 2^63 - 1: an end beyond it means "to the end".
                let to = i64::try_from(to).unwrap_or(i64::MAX);
                if to <= from {
                    return Ok(Vec::new());
                }
                // Each row becomes its 32 bytes as it streams in: the rows themselves are never all held.
                let hashes: Vec<Option<[u8; 32]>> =
                    sqlx::query("SELECT leaf_hash FROM registry_log WHERE idx >= $1 AND idx < $2 ORDER BY idx")
                        .bind(from)
                        .bind(to)
                        .try_map(|row: $row| {
                            // By position: sqlx finds a column by name per row, which on SQLite took 40 % of a
                            // 10^6-row read.
                            let h: &[u8] = row.try_get(0)?;
                            Ok(<[u8; 32]>::try_from(h).ok())
                        })
                        .fetch_all(&self.pool)
                        .await?;
                hashes.into_iter().map(|h| h.ok_or(StoreError::Corrupt("hash is not 32 bytes"))).collect()
            }

            async fn log_entries(&self, from: u64, limit: u32, domains: Option<&[String]>) -> Result<Vec<LogEntry>> {
                let from = log_index(from)?;
                let mut q = sqlx::QueryBuilder::<$db>::new(
                    "SELECT idx, kind, data, leaf_hash, domain, added_at FROM registry_log WHERE idx >= ",
                );
                q.push_bind(from);
                if let Some(domains) = domains {
                    if domains.len() > MAX_DOMAINS {
                        return Err(StoreError::InvalidInput("more than 10 000 domains"));
                    }
                    // A domain with a NUL character names no entry (none can be stored).
                    let domains: Vec<&str> = domains.iter().map(String::as_str).filter(|d| !d.contains('\0')).collect();
                    if domains.is_empty() {
                        return Ok(Vec::new());
                    }
                    q.push(" AND domain IN (");
                    let mut list = q.separated(", ");
                    for d in domains {
                        list.push_bind(d);
                    }
                    q.push(")");
                }
                q.push(" ORDER BY idx LIMIT ");
                q.push_bind(i64::from(limit));
                let rows = q.build().fetch_all(&self.pool).await?;
                rows.iter().map(Self::log_row).collect()
            }

            async fn log_entry(&self, index: u64) -> Result<Option<LogEntry>> {
                let row = sqlx::query("SELECT idx, kind, data, leaf_hash, domain, added_at FROM registry_log WHERE idx = $1")
                    .bind(log_index(index)?)
                    .fetch_optional(&self.pool)
                    .await?;
                row.as_ref().map(Self::log_row).transpose()
            }

            async fn cert(&self, fingerprint: [u8; 20]) -> Result<Option<CertRow>> {
                let sql = cert_select("SELECT fingerprint, first_idx AS ord FROM registry_certs WHERE fingerprint = $1");
                let rows = sqlx::query(&sql).bind(&fingerprint[..]).fetch_all(&self.pool).await?;
                Ok(Self::cert_rows(&rows)?.into_iter().next())
            }

            async fn cert_by_key(&self, id: &[u8]) -> Result<Option<CertRow>> {
                let sql = cert_select(&cert_by_key_select(id, "c.fingerprint, c.first_idx AS ord")?);
                let rows = sqlx::query(&sql).bind(id).fetch_all(&self.pool).await?;
                Ok(Self::cert_rows(&rows)?.into_iter().next())
            }

            async fn cert_data_by_key(&self, id: &[u8]) -> Result<Option<(String, Vec<u8>)>> {
                let sql = cert_by_key_select(id, "c.domain, c.data")?;
                let row = sqlx::query(&sql).bind(id).fetch_optional(&self.pool).await?;
                row.map(|row| Ok((row.try_get("domain")?, row.try_get("data")?))).transpose()
            }

            async fn certs_by_words(&self, search: &str, limit: u32) -> Result<Vec<CertRow>> {
                let words = crate::uid_words(search);
                if words.is_empty() || words.len() > crate::MAX_SEARCH_WORDS {
                    return Ok(Vec::new());
                }
                // The certificates holding every word (each word once per certificate: the primary key), then
                // those few by key. Driven by the search's rarest word, as counted up to 64 (common words such as
                // `com` or a device id's shared bytes would otherwise each scan every certificate holding them):
                // its certificates are checked for the other words through the index by certificate.
                let sql = cert_select(&format!(
                    "WITH q(word) AS (VALUES {}), \
                     rarest AS (SELECT q.word FROM q ORDER BY (SELECT COUNT(*) FROM \
                       (SELECT 1 FROM registry_cert_words x WHERE x.word = q.word LIMIT 64) AS x64), q.word LIMIT 1) \
                     SELECT c.fingerprint, c.first_idx AS ord FROM registry_certs c \
                     WHERE c.fingerprint IN (SELECT w.cert FROM registry_cert_words w \
                       WHERE w.word = (SELECT word FROM rarest) \
                       AND (SELECT COUNT(*) FROM registry_cert_words y JOIN q ON q.word = y.word \
                            WHERE y.cert = w.cert) = {}) \
                     ORDER BY c.first_idx LIMIT {limit}",
                    placeholders($numbered, words.len(), 1, true),
                    words.len(),
                ));
                let mut q = sqlx::query(&sql);
                for w in &words {
                    q = q.bind(w.as_str());
                }
                let rows = q.fetch_all(&self.pool).await?;
                Self::cert_rows(&rows)
            }

            async fn certs_from(&self, from: u64, limit: u32) -> Result<Vec<(u64, CertRow)>> {
                let sql = cert_select(&format!(
                    "SELECT fingerprint, first_idx AS ord FROM registry_certs WHERE first_idx >= $1 \
                     ORDER BY first_idx LIMIT {limit}"
                ));
                let rows = sqlx::query(&sql).bind(log_index(from)?).fetch_all(&self.pool).await?;
                Self::cert_rows_ord(&rows)
            }

            async fn cert_count(&self) -> Result<u64> {
                let n: i64 = sqlx::query("SELECT COUNT(*) AS n FROM registry_certs")
                    .fetch_one(&self.pool)
                    .await?
                    .try_get("n")?;
                u64::try_from(n).map_err(|_| StoreError::Corrupt("negative count"))
            }

            async fn statements(&self, subject: &[u8]) -> Result<Vec<StoredStatement>> {
                let rows = sqlx::query(
                    "SELECT s.idx, s.subject, s.kind, s.signer, s.issued_at, s.status, l.data \
                     FROM registry_statements s JOIN registry_log l ON l.idx = s.idx \
                     WHERE s.subject = $1 ORDER BY s.issued_at, s.idx",
                )
                .bind(subject)
                .fetch_all(&self.pool)
                .await?;
                rows.iter()
                    .map(|row| {
                        let status: Option<i32> = row.try_get("status")?;
                        Ok(StoredStatement {
                            index: stored_index(row.try_get("idx")?)?,
                            row: StatementRow {
                                subject: row.try_get("subject")?,
                                kind: byte(row.try_get("kind")?)?,
                                signer: fingerprint(row.try_get("signer")?)?,
                                issued_at: row.try_get("issued_at")?,
                                status: status.map(byte).transpose()?,
                            },
                            data: row.try_get("data")?,
                        })
                    })
                    .collect()
            }

            async fn put_checkpoint(&self, size: u64, note: &[u8]) -> Result<()> {
                let size = log_index(size)?;
                let _write = self.writer().await;
                let done = sqlx::query(
                    "INSERT INTO registry_checkpoints (size, note) \
                     SELECT $1, $2 WHERE $1 <= (SELECT COALESCE(MAX(idx) + 1, 0) FROM registry_log) \
                     ON CONFLICT (size) DO UPDATE SET note = excluded.note",
                )
                .bind(size)
                .bind(note)
                .execute(&self.pool)
                .await?;
                if done.rows_affected() == 0 {
                    return Err(StoreError::InvalidInput("a checkpoint beyond the end of the log"));
                }
                Ok(())
            }

            async fn checkpoint(&self) -> Result<Option<(u64, Vec<u8>)>> {
                let row = sqlx::query("SELECT size, note FROM registry_checkpoints ORDER BY size DESC LIMIT 1")
                    .fetch_optional(&self.pool)
                    .await?;
                row.map(|row| Ok((stored_index(row.try_get("size")?)?, row.try_get("note")?))).transpose()
            }

            async fn peer_log(&self, peer: &str) -> Result<Option<PeerLog>> {
                // No stored peer name holds a NUL character.
                if peer.contains('\0') {
                    return Ok(None);
                }
                let row = sqlx::query(
                    "SELECT peer, size, root, checkpoint, frontier, flagged, updated_at FROM registry_peers WHERE peer = $1",
                )
                .bind(peer)
                .fetch_optional(&self.pool)
                .await?;
                row.map(|row| {
                    Ok(PeerLog {
                        peer: row.try_get("peer")?,
                        size: stored_index(row.try_get("size")?)?,
                        root: hash(row.try_get("root")?)?,
                        checkpoint: row.try_get("checkpoint")?,
                        frontier: row.try_get("frontier")?,
                        flagged: row.try_get("flagged")?,
                        updated_at: row.try_get("updated_at")?,
                    })
                })
                .transpose()
            }

            async fn put_peer_log(&self, p: &PeerLog) -> Result<()> {
                let size = log_index(p.size)?;
                no_nul(&p.peer, "a NUL character in a peer's name")?;
                if let Some(why) = &p.flagged {
                    no_nul(why, "a NUL character in a peer's flag")?;
                }
                let _write = self.writer().await;
                sqlx::query(
                    "INSERT INTO registry_peers (peer, size, root, checkpoint, frontier, flagged, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7) \
                     ON CONFLICT (peer) DO UPDATE SET size = excluded.size, root = excluded.root, \
                     checkpoint = excluded.checkpoint, frontier = excluded.frontier, flagged = excluded.flagged, \
                     updated_at = excluded.updated_at",
                )
                .bind(p.peer.as_str())
                .bind(size)
                .bind(&p.root[..])
                .bind(&p.checkpoint[..])
                .bind(&p.frontier[..])
                .bind(p.flagged.as_deref())
                .bind(p.updated_at)
                .execute(&self.pool)
                .await?;
                Ok(())
            }
        }
    };
}

// SQLite: transactions that read before they write must take the write lock at BEGIN. A deferred transaction
// that reads and then writes fails at once with SQLITE_BUSY (no busy wait) when another connection wrote since its
// read began; IMMEDIATE makes it wait its turn instead.
sql_store!(
    SqliteStore,
    sqlx::sqlite::SqliteRow,
    sqlx::Sqlite,
    "BEGIN IMMEDIATE",
    false
);
sql_store!(
    PgStore,
    sqlx::postgres::PgRow,
    sqlx::Postgres,
    "BEGIN",
    true
);

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    /// Size of the database file itself, not of its WAL.
    fn db_bytes(path: &Path) -> u64 {
        std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
    }

    // What a writer commits reaches the database file in the background, far below the writer's own backstop:
    // without the checkpointer the 8 MiB below would stay in the WAL (the backstop is 64 MiB).
    #[tokio::test]
    async fn writes_are_checkpointed_in_the_background() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hub.db");
        let store = SqliteStore::open(&path).await.unwrap();
        let before = db_bytes(&path);
        {
            let _turn = store.writer().await;
            sqlx::query("CREATE TABLE filler (b BLOB NOT NULL)")
                .execute(&store.pool)
                .await
                .unwrap();
            for _ in 0..64 {
                sqlx::query("INSERT INTO filler (b) VALUES (zeroblob(131072))")
                    .execute(&store.pool)
                    .await
                    .unwrap();
            }
        }
        let wal = path.with_extension("db-wal");
        assert!(
            db_bytes(&wal) >= 8 << 20,
            "the writes went to the WAL first"
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while db_bytes(&path) < before + (8 << 20) {
            assert!(
                std::time::Instant::now() < deadline,
                "the database file did not take the writes: {} bytes, {} before",
                db_bytes(&path),
                before
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The database reads the same from a new connection.
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM filler")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(n, 64);
        store.close().await;
    }

    // Every connection of the pool has the settings the store depends on (sqlx applies them per connection).
    #[tokio::test]
    async fn connections_have_the_settings() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("hub.db")).await.unwrap();
        let mut conns = Vec::new();
        for _ in 0..4 {
            conns.push(store.pool.acquire().await.unwrap());
        }
        for conn in &mut conns {
            let mut get = async |pragma: &str| -> String {
                let row = sqlx::query(&format!("PRAGMA {pragma}"))
                    .fetch_one(&mut **conn)
                    .await
                    .unwrap();
                row.try_get_unchecked::<String, _>(0)
                    .or_else(|_| row.try_get::<i64, _>(0).map(|v| v.to_string()))
                    .unwrap()
            };
            assert_eq!(get("journal_mode").await, "wal");
            assert_eq!(get("synchronous").await, "1", "NORMAL");
            assert_eq!(get("foreign_keys").await, "1");
            assert_eq!(get("temp_store").await, "2", "MEMORY");
            assert_eq!(
                get("wal_autocheckpoint").await,
                WAL_BACKSTOP_PAGES.to_string()
            );
            assert_eq!(get("journal_size_limit").await, WAL_LIMIT_BYTES.to_string());
        }
    }

    // The checkpointer stops with the last clone of the store.
    #[tokio::test]
    async fn the_checkpointer_ends_with_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("hub.db")).await.unwrap();
        let task = store.checkpoints.task.clone();
        let copy = store.clone();
        drop(store);
        assert!(!task.is_finished());
        drop(copy);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !task.is_finished() {
            assert!(
                std::time::Instant::now() < deadline,
                "the checkpointer outlived its store"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
