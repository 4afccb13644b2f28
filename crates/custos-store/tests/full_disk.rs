//! Writes on a full disk: a write that fails is an error, never a success, and leaves what was stored intact.
//!
//! Each test mounts a small tmpfs, so it needs root: without, it fails (it is never skipped). SQLite keeps its
//! database there; PostgreSQL gets a tablespace there for a fresh database (its write-ahead log stays on the
//! server's own disk, so the server keeps working). PostgreSQL is found as in `contract.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, ensure};
use custos_proto::DeviceId;
use custos_store::{
    Device, NewRecord, PendingAdmission, PgStore, Presence, RecordQuery, SqliteStore, Store,
    StoreError, StoredRecord, StoredRequest,
};
use rand_core::{OsRng, RngCore};
use sqlx::Connection;

const NOW: i64 = 1_773_584_400;
const DAY: i64 = 86_400;

fn dev(n: u8) -> DeviceId {
    DeviceId([0x02, 0, 0, 0, 0, 0, 0, n])
}

/// Incompressible bytes: a write of them needs as much new space (PostgreSQL compresses what it can).
fn noise(len: usize) -> Vec<u8> {
    let mut b = vec![0; len];
    OsRng.fill_bytes(&mut b);
    b
}

fn pending(n: u8, expires_at: i64) -> PendingAdmission {
    PendingAdmission {
        device: dev(n),
        join_code: [n; 16],
        created_at: NOW - 60,
        expires_at,
    }
}

fn admitted(n: u8) -> Device {
    Device {
        device: dev(n),
        static_key: [n; 32],
        session_key: [n ^ 0xff; 32],
        admitted_at: NOW,
        revoked_at: None,
        max_seq: -1,
    }
}

fn record(seq: u64, body: Vec<u8>) -> NewRecord {
    NewRecord {
        device: dev(1),
        seq,
        epoch: 1,
        leaf: 10,
        body,
        received_at: NOW,
    }
}

fn req(id: u8, expires_at: i64, signed: Vec<u8>) -> StoredRequest {
    StoredRequest {
        seq: 0,
        id: [id; 32],
        owner: [7; 32],
        signed,
        received_at: NOW,
        expires_at,
    }
}

/// A tmpfs of `size` bytes mounted on a fresh temporary directory, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0755")])
            .arg("custos-full-disk")
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "mounting a tmpfs failed: these tests need root"
        );
        Self { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fills the file system with one file; returns its path (remove it to free the space again).
    fn fill(&self) -> PathBuf {
        let path = self.path().join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        let chunk = vec![0x5a; 64 << 10];
        loop {
            match f.write_all(&chunk) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(28) => return path, // ENOSPC
                Err(e) => panic!("filling the tmpfs: {e}"),
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: a connection still closing must not leave the mount behind.
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Everything the writes below could change, read back through the store.
#[derive(Debug, PartialEq)]
struct Snapshot {
    devices: Vec<Device>,
    records: Vec<StoredRecord>,
    gaps: Vec<(u64, u64)>,
    presence: Vec<Presence>,
    device_list: Option<(i64, Vec<u8>)>,
    requests: Vec<Option<StoredRequest>>,
    answer: Option<Vec<u8>>,
    open_requests: u64,
    relay: Vec<(i64, Vec<u8>)>,
    admissions: Vec<Option<PendingAdmission>>,
    pairing: bool,
}

async fn snapshot<S: Store>(s: &S) -> Result<Snapshot> {
    let q = RecordQuery {
        device: dev(1),
        epoch: 1,
        leaf_from: 0,
        leaf_until: u32::MAX,
        after: None,
        limit: 1000,
    };
    let mut requests = Vec::new();
    for id in 1..=3 {
        requests.push(s.request([id; 32]).await?);
    }
    let mut admissions = Vec::new();
    for n in [5, 6, 7] {
        // Expired codes count too: `admission` at a time before they expire shows whether they are still there.
        admissions.push(s.admission(dev(n), NOW - 3600).await?);
    }
    Ok(Snapshot {
        devices: s.devices().await?,
        records: s.records(&q).await?,
        gaps: s.gaps(dev(1), 100).await?,
        presence: s.presence().await?,
        device_list: s.device_list().await?,
        requests,
        answer: s.answer([1; 32]).await?,
        open_requests: s.open_requests(None, NOW).await?,
        relay: s.relay_fetch("m", 0, 100).await?,
        admissions,
        pairing: s.pairing_open(dev(1), NOW).await?,
    })
}

/// What each backend may do on a full disk.
#[derive(Clone, Copy, PartialEq)]
enum Backend {
    /// Every write needs new space (SQLite appends it to the emptied write-ahead log): every write must fail.
    Sqlite,
    /// A write that fits in pages already allocated (a delete, an update in place) really succeeds, its log on
    /// another disk: it must then be stored. A write that needs a new page must fail.
    Postgres,
}

/// Judges one write made on the full disk.
async fn judge<S: Store>(
    s: &S,
    backend: Backend,
    name: &str,
    needs_space: bool,
    before: Snapshot,
    result: Result<(), StoreError>,
    effect: impl Future<Output = Result<bool>>,
) -> Result<()> {
    match result {
        Err(e) => {
            println!("{name}: failed as it should: {e}");
            ensure!(
                snapshot(s).await? == before,
                "{name} failed ({e}) but changed what was stored"
            );
        }
        Ok(()) => {
            ensure!(
                backend == Backend::Postgres && !needs_space,
                "{name} reported success on a full disk"
            );
            ensure!(
                effect.await?,
                "{name} reported success but its effect is not stored"
            );
            println!("{name}: succeeded without new space, and is stored");
        }
    }
    Ok(())
}

/// One write on the full disk: `needs_space` says whether it needs a new page on PostgreSQL too; `effect` checks
/// that a success is stored.
macro_rules! attempt {
    ($s:expr, $backend:expr, $name:literal, needs_space: $space:expr, $write:expr, effect: $effect:expr) => {{
        let before = snapshot($s).await?;
        let result = $write.await.map(|_| ());
        judge($s, $backend, $name, $space, before, result, async {
            anyhow::Ok($effect)
        })
        .await?;
    }};
}

/// Stores a little of everything, fills the disk with `fill`, then tries every write path.
async fn writes_on_a_full_disk<S: Store>(
    s: &S,
    backend: Backend,
    fill: impl AsyncFnOnce() -> Result<PathBuf>,
) -> Result<()> {
    for n in [1, 2] {
        s.put_admission(&pending(n, NOW + 600)).await?;
        s.complete_admission(&admitted(n), NOW).await?;
    }
    s.put_admission(&pending(5, NOW + 600)).await?;
    s.put_admission(&pending(6, NOW - 1)).await?;
    let seqs = [0, 1, 2, 5, 6, 9];
    s.insert_records(&seqs.map(|q| record(q, vec![q as u8; 16])))
        .await?;
    s.put_request(&req(1, NOW + 100, vec![1; 64])).await?;
    s.put_request(&req(2, NOW - 10, vec![2; 64])).await?;
    let kept = s.relay_push("m", b"kept", NOW, 64, 1 << 20).await?;
    s.put_device_list(1, b"v1").await?;
    let stored = snapshot(s).await?;
    ensure!(stored.records.len() == 6 && stored.relay.len() == 1);

    let filler = fill().await?;

    attempt!(s, backend, "put_admission", needs_space: false,
        s.put_admission(&pending(7, NOW + 600)),
        effect: s.admission(dev(7), NOW).await?.is_some());
    attempt!(s, backend, "complete_admission", needs_space: false,
        s.complete_admission(&admitted(5), NOW),
        effect: s.device(dev(5)).await?.is_some());
    attempt!(s, backend, "insert_records", needs_space: true,
        s.insert_records(&[record(10, noise(8 << 10))]),
        effect: s.gaps(dev(1), 100).await?.last() == Some(&(7, 9)));
    attempt!(s, backend, "touch", needs_space: true,
        s.touch(dev(1), NOW + 9, "127.0.0.1:9"),
        effect: s.presence().await?.iter().any(|p| p.last_seen == NOW + 9));
    attempt!(s, backend, "put_device_list", needs_space: true,
        s.put_device_list(2, &noise(8 << 10)),
        effect: s.device_list().await?.is_some_and(|(v, _)| v == 2));
    attempt!(s, backend, "put_request", needs_space: true,
        s.put_request(&req(3, NOW + 100, noise(8 << 10))),
        effect: s.request([3; 32]).await?.is_some());
    attempt!(s, backend, "put_answer", needs_space: true,
        s.put_answer([1; 32], &noise(8 << 10), NOW),
        effect: s.answer([1; 32]).await?.is_some());
    attempt!(s, backend, "relay_push", needs_space: true,
        s.relay_push("m", &noise(8 << 10), NOW, 64, 1 << 20),
        effect: s.relay_fetch("m", 0, 100).await?.len() == 2);
    attempt!(s, backend, "put_skipped", needs_space: true,
        s.put_skipped(dev(1), 3, 5, NOW),
        effect: s.gaps(dev(1), 100).await?.first() == Some(&(7, 9)));
    attempt!(s, backend, "open_pairing", needs_space: false,
        s.open_pairing(dev(1), NOW + 300),
        effect: s.pairing_open(dev(1), NOW).await?);
    attempt!(s, backend, "revoke", needs_space: false,
        s.revoke(dev(2), NOW),
        effect: s.device(dev(2)).await?.is_some_and(|d| d.revoked_at.is_some()));
    // Deletes need no new page on PostgreSQL.
    attempt!(s, backend, "relay_ack", needs_space: false,
        s.relay_ack("m", kept),
        effect: s.relay_fetch("m", 0, 100).await?.iter().all(|(q, _)| *q != kept));
    attempt!(s, backend, "purge_admissions", needs_space: false,
        s.purge_admissions(NOW),
        effect: s.admission(dev(6), NOW - 3600).await?.is_none());
    attempt!(s, backend, "purge_sharing", needs_space: false,
        s.purge_sharing(NOW, NOW - 30 * DAY, NOW - DAY),
        effect: s.request([2; 32]).await?.is_none());

    // Nothing stored before the disk filled up was lost; room again, writes work again.
    let now = snapshot(s).await?;
    ensure!(
        now.records[..6] == stored.records[..],
        "stored records lost"
    );
    std::fs::remove_file(filler)?;
    // More rounds than the pool has connections: a connection a failed transaction left broken must not be back.
    for n in 10..20 {
        let seq = s.relay_push("m", b"room again", NOW, 64, 1 << 20).await?;
        ensure!(s.relay_fetch("m", seq - 1, 10).await? == [(seq, b"room again".to_vec())]);
        s.put_admission(&pending(n, NOW + 600)).await?;
    }
    Ok(())
}

/// Folds SQLite's write-ahead log into the database file and truncates it, so that every later write needs new
/// space (a log that already has room takes writes on a full disk, and rightly reports success).
async fn truncate_wal(db: &Path) -> Result<()> {
    let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display())).await?;
    let (busy, _, _): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(TRUNCATE)")
        .fetch_one(&mut c)
        .await?;
    ensure!(busy == 0, "checkpoint blocked");
    c.close().await?;
    Ok(())
}

#[tokio::test]
async fn sqlite_relay_push_on_a_full_disk_is_an_error() {
    let fs = Tmpfs::mount(4 << 20);
    let db = fs.path().join("hub.db");
    let s = SqliteStore::open(&db).await.unwrap();
    let kept = s.relay_push("m", b"kept", NOW, 64, 1 << 20).await.unwrap();
    truncate_wal(&db).await.unwrap();
    fs.fill();
    let r = s.relay_push("m", &[7; 4000], NOW, 64, 1 << 20).await;
    let stored = s.relay_fetch("m", 0, 10).await.unwrap();
    assert!(r.is_err(), "relay_push answered {r:?} on a full disk");
    assert_eq!(stored, [(kept, b"kept".to_vec())]);
    s.close().await;
}

#[tokio::test]
async fn sqlite_every_write_on_a_full_disk_is_an_error() {
    let fs = Tmpfs::mount(4 << 20);
    let db = fs.path().join("hub.db");
    let s = SqliteStore::open(&db).await.unwrap();
    let result = writes_on_a_full_disk(&s, Backend::Sqlite, async || {
        truncate_wal(&db).await?;
        Ok(fs.fill())
    })
    .await;
    s.close().await;
    result.unwrap();
}

#[tokio::test]
async fn postgres_every_write_that_needs_space_on_a_full_disk_is_an_error() {
    // The database's tablespace on the tmpfs, in a directory the server (user `postgres`) owns.
    let fs = Tmpfs::mount(32 << 20);
    let location = fs.path().join("tablespace");
    std::fs::create_dir(&location).unwrap();
    let chown = Command::new("chown")
        .arg("postgres:postgres")
        .arg(&location)
        .status()
        .unwrap();
    assert!(chown.success(), "chown postgres {}", location.display());

    let admin_url = std::env::var("CUSTOS_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let mut suffix = [0u8; 6];
    OsRng.fill_bytes(&mut suffix);
    let name = format!("custos_full_{}", hex::encode(suffix));
    let mut admin = sqlx::PgConnection::connect(&admin_url)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {admin_url} is required for these tests: {e}"));
    let url = match admin_url.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{name}"),
        None => panic!("CUSTOS_TEST_POSTGRES must end in /DATABASE"),
    };
    let result = async {
        sqlx::query(&format!(
            "CREATE TABLESPACE {name} LOCATION '{}'",
            location.display()
        ))
        .execute(&mut admin)
        .await
        .context("CREATE TABLESPACE")?;
        sqlx::query(&format!("CREATE DATABASE {name} TABLESPACE {name}"))
            .execute(&mut admin)
            .await?;
        let s = PgStore::connect(&url).await?;
        let r = writes_on_a_full_disk(&s, Backend::Postgres, async || Ok(fs.fill())).await;
        s.close().await;
        r
    }
    .await;
    let dropped = async {
        sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut admin)
            .await?;
        sqlx::query(&format!("DROP TABLESPACE IF EXISTS {name}"))
            .execute(&mut admin)
            .await?;
        anyhow::Ok(())
    }
    .await;
    result.unwrap();
    dropped.unwrap();
    // The server, its log elsewhere, kept working throughout.
    let mut again = sqlx::PgConnection::connect(&admin_url).await.unwrap();
    let (one,): (i32,) = sqlx::query_as("SELECT 1")
        .fetch_one(&mut again)
        .await
        .unwrap();
    assert_eq!(one, 1);
}
