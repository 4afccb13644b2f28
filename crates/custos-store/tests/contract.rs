//! One contract for every store: each test below runs against SQLite (a temporary file) and against the real
//! PostgreSQL server (a fresh database per test, dropped afterwards). PostgreSQL is found at
//! `CUSTOS_TEST_POSTGRES` (default `postgres://postgres@127.0.0.1:5432/test`); if it is unreachable the
//! PostgreSQL tests fail, they are never skipped.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use anyhow::{Context, Result, ensure};
use custos_proto::DeviceId;
use custos_store::{
    CertRow, Claim, Device, GrantSpan, KeyPeer, LogEntry, NewControl, NewLogEntry, NewRecord,
    PeerLog, PendingAdmission, PgStore, RecordQuery, RegistryStore, Rights, Session,
    SessionKeyRecord, SqliteStore, StatementRow, Store, StoreError, StoredRequest,
};
use rand_core::{OsRng, RngCore};
use sqlx::Connection;

const NOW: i64 = 1_773_584_400;

fn dev(n: u8) -> DeviceId {
    DeviceId([0x02, 0, 0, 0, 0, 0, 0, n])
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

async fn admit<S: Store>(s: &S, n: u8) -> Result<()> {
    s.put_admission(&pending(n, NOW + 600)).await?;
    s.complete_admission(&admitted(n), NOW).await?;
    Ok(())
}

fn record(n: u8, seq: u64, leaf: u32) -> NewRecord {
    NewRecord {
        device: dev(n),
        seq,
        epoch: 1,
        leaf,
        body: vec![n, seq as u8, 0xaa, 0x55],
        received_at: NOW + seq as i64,
    }
}

fn query(n: u8) -> RecordQuery {
    RecordQuery {
        device: dev(n),
        epoch: 1,
        leaf_from: 0,
        leaf_until: u32::MAX,
        after: None,
        limit: 1000,
    }
}

async fn admission_is_single_use<S: Store>(s: S) -> Result<()> {
    s.put_admission(&pending(1, NOW + 600)).await?;
    ensure!(s.admission(dev(1), NOW).await? == Some(pending(1, NOW + 600)));
    s.complete_admission(&admitted(1), NOW).await?;
    ensure!(
        s.admission(dev(1), NOW).await?.is_none(),
        "the code must be used up"
    );
    let again = s.complete_admission(&admitted(1), NOW).await;
    ensure!(
        matches!(again, Err(StoreError::NoPendingAdmission(_))),
        "{again:?}"
    );
    ensure!(s.device(dev(1)).await? == Some(admitted(1)));
    let readmit = s.put_admission(&pending(1, NOW + 600)).await;
    ensure!(
        matches!(readmit, Err(StoreError::AlreadyAdmitted(_))),
        "{readmit:?}"
    );
    Ok(())
}

async fn expired_and_unknown_codes_admit_nothing<S: Store>(s: S) -> Result<()> {
    s.put_admission(&pending(2, NOW - 1)).await?;
    ensure!(
        s.admission(dev(2), NOW).await?.is_none(),
        "expired code still offered"
    );
    let late = s.complete_admission(&admitted(2), NOW).await;
    ensure!(
        matches!(late, Err(StoreError::NoPendingAdmission(_))),
        "{late:?}"
    );
    let unknown = s.complete_admission(&admitted(3), NOW).await;
    ensure!(
        matches!(unknown, Err(StoreError::NoPendingAdmission(_))),
        "{unknown:?}"
    );
    ensure!(s.devices().await?.is_empty(), "a device was half-admitted");
    ensure!(s.purge_admissions(NOW).await? == 1);
    // A new code replaces an unused one.
    s.put_admission(&pending(4, NOW + 10)).await?;
    let mut newer = pending(4, NOW + 900);
    newer.join_code = [0x44; 16];
    s.put_admission(&newer).await?;
    ensure!(s.admission(dev(4), NOW).await? == Some(newer));
    Ok(())
}

async fn concurrent_completions_admit_once<S: Store + Clone + 'static>(s: S) -> Result<()> {
    s.put_admission(&pending(5, NOW + 600)).await?;
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let s = s.clone();
            tokio::spawn(async move { s.complete_admission(&admitted(5), NOW).await })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        match t.await? {
            Ok(()) => ok += 1,
            Err(StoreError::NoPendingAdmission(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    ensure!(ok == 1, "{ok} completions succeeded");
    Ok(())
}

async fn records_are_stored_exactly_once<S: Store>(s: S) -> Result<()> {
    admit(&s, 1).await?;
    admit(&s, 2).await?;
    let first = s
        .insert_records(&[
            record(1, 0, 10),
            record(1, 1, 10),
            record(1, 1, 10),
            record(2, 0, 10),
        ])
        .await?;
    ensure!(first == [true, true, false, true], "{first:?}");
    // A replay, a reordered duplicate and a new record in one batch.
    let second = s
        .insert_records(&[record(1, 1, 10), record(1, 0, 10), record(1, 5, 11)])
        .await?;
    ensure!(second == [false, false, true], "{second:?}");
    ensure!(s.device(dev(1)).await?.map(|d| d.max_seq) == Some(5));
    let got = s.records(&query(1)).await?;
    let seqs: Vec<u64> = got.iter().map(|r| r.record.seq).collect();
    ensure!(seqs == [0, 1, 5], "{seqs:?}");
    ensure!(got[2].record == record(1, 5, 11), "stored bytes differ");
    Ok(())
}

async fn a_failing_batch_stores_nothing<S: Store>(s: S) -> Result<()> {
    admit(&s, 1).await?;
    let r = s
        .insert_records(&[record(1, 0, 10), record(9, 0, 10)])
        .await;
    ensure!(
        matches!(r, Err(StoreError::UnknownDevice(d)) if d == dev(9)),
        "{r:?}"
    );
    ensure!(
        s.records(&query(1)).await?.is_empty(),
        "part of a failed batch was stored"
    );
    ensure!(s.device(dev(1)).await?.map(|d| d.max_seq) == Some(-1));
    let huge = s.insert_records(&[record(1, u64::MAX, 10)]).await;
    ensure!(matches!(huge, Err(StoreError::InvalidInput(_))), "{huge:?}");
    Ok(())
}

async fn queries_filter_and_page<S: Store>(s: S) -> Result<()> {
    admit(&s, 1).await?;
    admit(&s, 2).await?;
    let mut batch: Vec<NewRecord> = (0..30)
        .map(|i| record(1, i, 100 + (i as u32 % 10)))
        .collect();
    let mut other_epoch = record(1, 99, 105);
    other_epoch.epoch = 2;
    batch.push(other_epoch);
    batch.push(record(2, 0, 105));
    s.insert_records(&batch).await?;
    let mut q = query(1);
    q.leaf_from = 103;
    q.leaf_until = 106;
    q.limit = 4;
    let mut seen = Vec::new();
    loop {
        let page = s.records(&q).await?;
        if page.is_empty() {
            break;
        }
        ensure!(page.len() <= 4);
        q.after = page.last().map(|r| r.id);
        seen.extend(page.into_iter().map(|r| r.record));
    }
    ensure!(seen.len() == 9, "{} records", seen.len());
    ensure!(
        seen.iter()
            .all(|r| r.device == dev(1) && r.epoch == 1 && (103..106).contains(&r.leaf))
    );
    let mut seqs: Vec<u64> = seen.iter().map(|r| r.seq).collect();
    seqs.dedup();
    ensure!(seqs.len() == 9, "a page repeated a record");
    Ok(())
}

async fn revocation_and_presence<S: Store>(s: S) -> Result<()> {
    admit(&s, 1).await?;
    ensure!(s.revoke(dev(1), NOW + 5).await?);
    ensure!(!s.revoke(dev(1), NOW + 9).await?, "revoked twice");
    ensure!(s.device(dev(1)).await?.and_then(|d| d.revoked_at) == Some(NOW + 5));
    ensure!(matches!(
        s.revoke(dev(7), NOW).await,
        Err(StoreError::UnknownDevice(_))
    ));

    admit(&s, 2).await?;
    s.touch(dev(2), NOW + 10, "127.0.0.1:5000").await?;
    s.touch(dev(2), NOW + 5, "127.0.0.1:6000").await?;
    let p = s.presence().await?;
    ensure!(
        p.len() == 1 && p[0].last_seen == NOW + 10 && p[0].address == "127.0.0.1:5000",
        "{p:?}"
    );
    ensure!(s.last_seen(dev(2)).await? == Some(NOW + 10));
    ensure!(s.last_seen(dev(1)).await?.is_none(), "never heard");
    ensure!(matches!(
        s.touch(dev(8), NOW, "x").await,
        Err(StoreError::UnknownDevice(_))
    ));
    Ok(())
}

async fn device_list_versions_only_go_up<S: Store>(s: S) -> Result<()> {
    ensure!(s.device_list().await?.is_none());
    ensure!(s.put_device_list(1, b"v1").await?);
    ensure!(s.put_device_list(3, b"v3").await?);
    ensure!(
        !s.put_device_list(2, b"v2").await?,
        "an older list replaced a newer one"
    );
    ensure!(!s.put_device_list(3, b"v3 again").await?);
    ensure!(s.device_list().await? == Some((3, b"v3".to_vec())));
    Ok(())
}

fn req(id: u8, owner: u8, expires_at: i64) -> StoredRequest {
    StoredRequest {
        seq: 0,
        id: [id; 32],
        owner: [owner; 32],
        signed: vec![id; 100],
        received_at: NOW,
        expires_at,
    }
}

async fn the_inbox_holds_open_requests_until_answered_or_expired<S: Store>(s: S) -> Result<()> {
    ensure!(s.put_request(&req(1, 7, NOW + 100)).await?);
    ensure!(s.put_request(&req(2, 7, NOW + 10)).await?);
    ensure!(s.put_request(&req(3, 8, NOW + 100)).await?);
    ensure!(s.put_request(&req(4, 7, NOW + 100)).await?);
    ensure!(
        !s.put_request(&req(1, 7, NOW + 100)).await?,
        "a request stored twice"
    );
    let ids = |v: Vec<StoredRequest>| v.iter().map(|r| r.id[0]).collect::<Vec<_>>();
    ensure!(ids(s.inbox([7; 32], 0, NOW, 10).await?) == vec![1, 2, 4]);
    ensure!(
        ids(s.inbox([8; 32], 0, NOW, 10).await?) == vec![3],
        "another owner's requests"
    );
    ensure!(
        ids(s.inbox([7; 32], 0, NOW + 50, 10).await?) == vec![1, 4],
        "an expired request"
    );
    let page = s.inbox([7; 32], 0, NOW, 1).await?;
    ensure!(
        ids(s.inbox([7; 32], page[0].seq, NOW, 10).await?) == vec![2, 4],
        "paging"
    );
    // Answered requests leave the inbox; answers are final.
    ensure!(s.put_answer([1; 32], b"grant", NOW).await?);
    ensure!(
        !s.put_answer([1; 32], b"another grant", NOW).await?,
        "an answer replaced"
    );
    ensure!(s.answer([1; 32]).await? == Some(b"grant".to_vec()));
    ensure!(s.answer([4; 32]).await?.is_none());
    ensure!(ids(s.inbox([7; 32], 0, NOW, 10).await?) == vec![2, 4]);
    ensure!(
        matches!(
            s.put_answer([9; 32], b"grant", NOW).await,
            Err(StoreError::InvalidInput(_))
        ),
        "an answer to no request"
    );
    ensure!(s.request([3; 32]).await?.map(|r| r.owner) == Some([8; 32]));
    // Housekeeping: requests expired before the cut go, with their answers; live ones stay.
    ensure!(
        s.relay_push("m", b"old", NOW - 10, u32::MAX, u64::MAX)
            .await?
            > 0
    );
    ensure!(
        s.relay_push("m", b"new", NOW + 10, u32::MAX, u64::MAX)
            .await?
            > 0
    );
    let gone = s.purge_sharing(NOW + 50, NOW + 50, NOW).await?;
    ensure!(gone == 2, "purged {gone} rows"); // request 2 (expired at NOW + 10, no answer) and the old message
    ensure!(s.request([2; 32]).await?.is_none());
    ensure!(s.request([1; 32]).await?.is_some() && s.answer([1; 32]).await?.is_some());
    ensure!(s.relay_fetch("m", 0, 10).await?.len() == 1);
    Ok(())
}

async fn relay_mailboxes_deliver_in_order_until_acknowledged<S: Store>(s: S) -> Result<()> {
    let a = s
        .relay_push("dev/1/to-device", b"one", NOW, u32::MAX, u64::MAX)
        .await?;
    let b = s
        .relay_push("dev/1/to-device", b"two", NOW, u32::MAX, u64::MAX)
        .await?;
    s.relay_push("dev/2/to-device", b"other", NOW, u32::MAX, u64::MAX)
        .await?;
    ensure!(a < b);
    let got = s.relay_fetch("dev/1/to-device", 0, 10).await?;
    ensure!(got == vec![(a, b"one".to_vec()), (b, b"two".to_vec())]);
    ensure!(s.relay_fetch("dev/1/to-device", a, 10).await? == vec![(b, b"two".to_vec())]);
    ensure!(s.relay_ack("dev/1/to-device", a).await? == 1);
    ensure!(s.relay_fetch("dev/1/to-device", 0, 10).await?.len() == 1);
    ensure!(
        s.relay_fetch("dev/2/to-device", 0, 10).await?.len() == 1,
        "another mailbox changed"
    );
    Ok(())
}

async fn skipped_ranges_are_not_losses<S: Store>(s: S) -> Result<()> {
    admit(&s, 1).await?;
    let seqs = [0, 1, 2, 5, 6, 10, 11, 20];
    s.insert_records(&seqs.map(|q| record(1, q, 10))).await?;
    ensure!(s.gaps(dev(1), 10).await? == [(3, 5), (7, 10), (12, 20)]);
    s.put_skipped(dev(1), 7, 10, NOW).await?;
    s.put_skipped(dev(1), 7, 10, NOW + 1).await?; // idempotent
    ensure!(s.gaps(dev(1), 10).await? == [(3, 5), (12, 20)]);
    // Overlapping and partial ranges; an empty one changes nothing.
    s.put_skipped(dev(1), 12, 15, NOW).await?;
    s.put_skipped(dev(1), 14, 18, NOW).await?;
    s.put_skipped(dev(1), 3, 4, NOW).await?;
    s.put_skipped(dev(1), 19, 19, NOW).await?;
    ensure!(s.gaps(dev(1), 10).await? == [(4, 5), (18, 20)]);
    ensure!(s.gaps(dev(1), 1).await? == [(4, 5)], "limit");
    // Above the highest stored sequence number nothing is a loss yet, skipped or not.
    s.put_skipped(dev(1), 25, u64::MAX, NOW).await?;
    ensure!(s.gaps(dev(1), 10).await? == [(4, 5), (18, 20)]);
    s.insert_records(&[record(1, 30, 10)]).await?;
    ensure!(s.gaps(dev(1), 10).await? == [(4, 5), (18, 20), (21, 25)]);
    // Losses before the first stored record count too.
    admit(&s, 2).await?;
    s.insert_records(&[record(2, 3, 10)]).await?;
    ensure!(s.gaps(dev(2), 10).await? == [(0, 3)]);
    ensure!(s.gaps(dev(9), 10).await?.is_empty(), "an unknown device");
    let unknown = s.put_skipped(dev(9), 0, 1, NOW).await;
    ensure!(
        matches!(unknown, Err(StoreError::UnknownDevice(_))),
        "{unknown:?}"
    );
    Ok(())
}

async fn open_requests_are_counted_per_owner_and_in_all<S: Store>(s: S) -> Result<()> {
    ensure!(s.open_requests(None, NOW).await? == 0);
    s.put_request(&req(1, 7, NOW + 100)).await?;
    s.put_request(&req(2, 7, NOW + 10)).await?;
    s.put_request(&req(3, 7, NOW + 100)).await?;
    s.put_request(&req(4, 8, NOW + 100)).await?;
    s.put_answer([1; 32], b"grant", NOW).await?;
    ensure!(s.open_requests(Some([7; 32]), NOW).await? == 2);
    ensure!(s.open_requests(Some([8; 32]), NOW).await? == 1);
    ensure!(s.open_requests(Some([9; 32]), NOW).await? == 0);
    ensure!(s.open_requests(None, NOW).await? == 3);
    ensure!(
        s.open_requests(Some([7; 32]), NOW + 10).await? == 1,
        "an expired request"
    );
    ensure!(s.open_requests(None, NOW + 100).await? == 0);
    Ok(())
}

async fn expired_unanswered_requests_go_at_once<S: Store>(s: S) -> Result<()> {
    s.put_request(&req(1, 7, NOW + 10)).await?;
    s.put_request(&req(2, 7, NOW + 10)).await?;
    s.put_answer([2; 32], b"grant", NOW).await?;
    s.put_request(&req(3, 7, NOW + 1000)).await?;
    // The hub's clock has passed the first two expiries.
    ensure!(
        s.purge_sharing(NOW + 20, NOW - 86_400, NOW - 86_400)
            .await?
            == 1
    );
    ensure!(
        s.request([1; 32]).await?.is_none(),
        "an expired unanswered request kept"
    );
    ensure!(
        s.answer([2; 32]).await?.is_some(),
        "an answer went before its grace period"
    );
    ensure!(s.request([3; 32]).await?.is_some());
    Ok(())
}

async fn relay_mailboxes_keep_the_newest_within_limits<S: Store>(s: S) -> Result<()> {
    let mut last = 0;
    for i in 0..5u8 {
        last = s.relay_push("count", &[i; 10], NOW, 3, 1000).await?;
    }
    s.relay_push("other", b"x", NOW, 3, 1000).await?;
    let kept = s.relay_fetch("count", 0, 10).await?;
    let bodies: Vec<u8> = kept.iter().map(|(_, b)| b[0]).collect();
    ensure!(bodies == [2, 3, 4], "{bodies:?}");
    ensure!(kept.last().map(|(q, _)| *q) == Some(last));
    for i in 0..4u8 {
        s.relay_push("bytes", &[i; 100], NOW, 10, 250).await?;
    }
    let bodies: Vec<u8> = s
        .relay_fetch("bytes", 0, 10)
        .await?
        .iter()
        .map(|(_, b)| b[0])
        .collect();
    ensure!(bodies == [2, 3], "{bodies:?}");
    // A message above the byte limit on its own still stays, alone; so does one with no room by count.
    s.relay_push("bytes", &[9; 300], NOW, 10, 250).await?;
    ensure!(s.relay_fetch("bytes", 0, 10).await?.len() == 1);
    let z = s.relay_push("count", b"z", NOW, 0, 1000).await?;
    ensure!(s.relay_fetch("count", 0, 10).await? == [(z, b"z".to_vec())]);
    ensure!(
        s.relay_fetch("other", 0, 10).await?.len() == 1,
        "another mailbox changed"
    );
    Ok(())
}

async fn pairing_windows_open_for_admitted_devices_only<S: Store>(s: S) -> Result<()> {
    ensure!(
        !s.open_pairing(dev(9), NOW + 300).await?,
        "an unknown device"
    );
    ensure!(!s.pairing_open(dev(9), NOW).await?);
    admit(&s, 1).await?;
    ensure!(!s.pairing_open(dev(1), NOW).await?, "never opened");
    ensure!(s.open_pairing(dev(1), NOW + 300).await?);
    ensure!(s.pairing_open(dev(1), NOW).await?);
    ensure!(s.pairing_open(dev(1), NOW + 299).await?);
    ensure!(
        !s.pairing_open(dev(1), NOW + 300).await?,
        "an expired window"
    );
    ensure!(s.revoke(dev(1), NOW).await?);
    ensure!(!s.pairing_open(dev(1), NOW).await?, "a revoked device");
    ensure!(
        !s.open_pairing(dev(1), NOW + 600).await?,
        "a revoked device"
    );
    Ok(())
}

/// Transactions that read then write (admission) run beside other writers without failing: on SQLite a deferred
/// transaction would get SQLITE_BUSY at its first write.
async fn read_then_write_transactions_wait_their_turn<S: Store + Clone + 'static>(
    s: S,
) -> Result<()> {
    let writer = {
        let s = s.clone();
        tokio::spawn(async move {
            for i in 0..300 {
                s.relay_push("busy", &[1; 64], i, u32::MAX, u64::MAX)
                    .await?;
            }
            anyhow::Ok(())
        })
    };
    for n in 0..100u8 {
        s.put_admission(&pending(n, NOW + 600)).await?;
    }
    writer.await??;
    Ok(())
}

async fn two_writers_store_each_record_once<S: Store + Clone + 'static>(s: S) -> Result<()> {
    admit(&s, 1).await?;
    let records: Vec<NewRecord> = (0..200).map(|i| record(1, i, 10)).collect();
    let tasks: Vec<_> = (0..2)
        .map(|_| {
            let (s, records) = (s.clone(), records.clone());
            tokio::spawn(async move {
                let mut fresh = 0;
                for chunk in records.chunks(20) {
                    fresh += s
                        .insert_records(chunk)
                        .await?
                        .iter()
                        .filter(|&&f| f)
                        .count();
                }
                Ok::<_, StoreError>(fresh)
            })
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await??;
    }
    ensure!(total == 200, "{total} records reported new");
    ensure!(s.records(&query(1)).await?.len() == 200);
    Ok(())
}

fn session(n: u8, account: i64, expires_at: i64) -> Session {
    Session {
        token_hash: [n; 32],
        account,
        created_at: NOW,
        expires_at,
        last_used_at: NOW,
    }
}

async fn accounts_have_unique_names_and_sessions_end<S: Store>(s: S) -> Result<()> {
    let alice = s.create_account("alice", "$argon2id$v=19$x", NOW).await?;
    let taken = s.create_account("alice", "$argon2id$v=19$y", NOW).await;
    ensure!(matches!(taken, Err(StoreError::NameTaken)), "{taken:?}");
    let bob = s.create_account("bob", "$argon2id$v=19$z", NOW).await?;
    ensure!(alice != bob);
    let a = s.account_by_name("alice").await?.unwrap();
    ensure!(a.id == alice && a.password_hash == "$argon2id$v=19$x" && a.created_at == NOW);
    ensure!(s.account(bob).await?.unwrap().name == "bob");
    ensure!(s.account_by_name("carol").await?.is_none());

    s.put_session(&session(1, alice, NOW + 100)).await?;
    s.put_session(&session(2, alice, NOW + 100)).await?;
    s.put_session(&session(3, bob, NOW + 100)).await?;
    let orphan = s.put_session(&session(4, 9999, NOW + 100)).await;
    ensure!(
        matches!(orphan, Err(StoreError::UnknownAccount(9999))),
        "{orphan:?}"
    );
    ensure!(s.session([1; 32], NOW).await? == Some(session(1, alice, NOW + 100)));
    ensure!(
        s.session([1; 32], NOW + 100).await?.is_none(),
        "expired session"
    );
    // Sliding: a use moves the end forward, never back.
    ensure!(s.touch_session([1; 32], NOW + 50, NOW + 150).await?);
    ensure!(s.touch_session([1; 32], NOW + 60, NOW + 120).await?);
    let touched = s.session([1; 32], NOW + 120).await?.unwrap();
    ensure!(touched.expires_at == NOW + 150 && touched.last_used_at == NOW + 60);
    ensure!(
        !s.touch_session([2; 32], NOW + 100, NOW + 200).await?,
        "expired"
    );
    ensure!(!s.touch_session([9; 32], NOW, NOW + 200).await?, "unknown");

    // A new password ends every other session of the account, and only those.
    s.put_session(&session(5, alice, NOW + 100)).await?;
    ensure!(
        s.set_password(alice, "$argon2id$new", Some([1; 32]))
            .await?
            == 2
    );
    ensure!(s.account(alice).await?.unwrap().password_hash == "$argon2id$new");
    ensure!(s.session([1; 32], NOW).await?.is_some());
    ensure!(s.session([5; 32], NOW).await?.is_none());
    ensure!(s.session([3; 32], NOW).await?.is_some(), "bob's session");
    let unknown = s.set_password(9999, "x", None).await;
    ensure!(
        matches!(unknown, Err(StoreError::UnknownAccount(9999))),
        "{unknown:?}"
    );
    ensure!(s.delete_session([1; 32]).await?);
    ensure!(!s.delete_session([1; 32]).await?);
    ensure!(s.purge_sessions(NOW + 100).await? == 1, "bob's, expired");
    Ok(())
}

async fn login_failures_are_counted_per_home_and_elsewhere<S: Store>(s: S) -> Result<()> {
    let a = s.create_account("alice", "h", NOW).await?;
    let t = s.account(a).await?.unwrap().throttle;
    ensure!(t == Default::default(), "{t:?}");
    s.login_failed(a, false, NOW).await?;
    let t = s.login_failed(a, false, NOW + 1).await?;
    ensure!(t.failures == 2 && t.last_failure_at == Some(NOW + 1) && t.home_failures == 0);
    s.login_succeeded(a, "192.0.2.7").await?;
    let t = s.account(a).await?.unwrap().throttle;
    ensure!(
        t.failures == 0 && t.last_failure_at.is_none() && t.home.as_deref() == Some("192.0.2.7")
    );
    let t = s.login_failed(a, true, NOW + 2).await?;
    ensure!(t.home_failures == 1 && t.failures == 0 && t.home_last_failure_at == Some(NOW + 2));
    let t = s.login_failed(a, false, NOW + 3).await?;
    ensure!(t.home_failures == 1 && t.failures == 1);
    let unknown = s.login_failed(9999, false, NOW).await;
    ensure!(
        matches!(unknown, Err(StoreError::UnknownAccount(_))),
        "{unknown:?}"
    );
    let unknown = s.login_succeeded(9999, "x").await;
    ensure!(
        matches!(unknown, Err(StoreError::UnknownAccount(_))),
        "{unknown:?}"
    );
    Ok(())
}

async fn devices_have_one_owner_and_transfers_are_logged<S: Store>(s: S) -> Result<()> {
    admit(&s, 1).await?;
    admit(&s, 2).await?;
    let alice = s.create_account("alice", "h", NOW).await?;
    let bob = s.create_account("bob", "h", NOW).await?;
    ensure!(s.owner(dev(1)).await?.is_none());
    ensure!(s.set_owner(dev(1), None, alice, NOW).await?);
    ensure!(
        !s.set_owner(dev(1), None, bob, NOW).await?,
        "a claimed device cannot be claimed again"
    );
    ensure!(
        !s.set_owner(dev(1), Some(bob), bob, NOW).await?,
        "bob is not the owner"
    );
    ensure!(s.owner(dev(1)).await? == Some(alice));
    ensure!(s.owned_devices(alice).await? == vec![dev(1)]);

    s.put_share(dev(1), bob, Rights::View, NOW).await?;
    s.put_share(dev(1), bob, Rights::Control, NOW + 1).await?;
    ensure!(s.shared_with(bob).await? == vec![(dev(1), Rights::Control)]);
    ensure!(s.shares_of(dev(1)).await? == vec![(bob, Rights::Control)]);
    let own = s.put_share(dev(1), alice, Rights::View, NOW).await;
    ensure!(matches!(own, Err(StoreError::InvalidInput(_))), "{own:?}");
    let unknown = s.put_share(dev(9), bob, Rights::View, NOW).await;
    ensure!(
        matches!(unknown, Err(StoreError::UnknownDevice(_))),
        "{unknown:?}"
    );
    let unknown = s.put_share(dev(2), 9999, Rights::View, NOW).await;
    ensure!(
        matches!(unknown, Err(StoreError::UnknownAccount(9999))),
        "{unknown:?}"
    );

    // A transfer is explicit, logged, and ends the old owner's shares.
    ensure!(s.set_owner(dev(1), Some(alice), bob, NOW + 10).await?);
    ensure!(s.owner(dev(1)).await? == Some(bob));
    ensure!(s.shared_with(bob).await?.is_empty());
    ensure!(s.owned_devices(alice).await?.is_empty());
    let log = s.ownership_log(dev(1)).await?;
    ensure!(log.len() == 2, "{log:?}");
    ensure!(log[0].from.is_none() && log[0].to == alice && log[0].at == NOW);
    ensure!(log[1].from == Some(alice) && log[1].to == bob && log[1].at == NOW + 10);

    s.put_share(dev(1), alice, Rights::View, NOW).await?;
    ensure!(s.remove_share(dev(1), alice).await?);
    ensure!(!s.remove_share(dev(1), alice).await?);
    let unknown = s.set_owner(dev(9), None, alice, NOW).await;
    ensure!(
        matches!(unknown, Err(StoreError::UnknownDevice(_))),
        "{unknown:?}"
    );
    let unknown = s.set_owner(dev(2), None, 9999, NOW).await;
    ensure!(
        matches!(unknown, Err(StoreError::UnknownAccount(9999))),
        "{unknown:?}"
    );
    ensure!(s.owner(dev(2)).await?.is_none() && s.ownership_log(dev(2)).await?.is_empty());
    Ok(())
}

async fn claims_are_used_once<S: Store + Clone + 'static>(s: S) -> Result<()> {
    admit(&s, 1).await?;
    let alice = s.create_account("alice", "h", NOW).await?;
    let claim = |n: u8, expires_at| Claim {
        token_hash: [n; 32],
        device: dev(1),
        account: alice,
        created_at: NOW,
        expires_at,
    };
    ensure!(s.put_claim(&claim(1, NOW + 600)).await?);
    ensure!(!s.put_claim(&claim(1, NOW + 600)).await?, "same hash twice");
    ensure!(s.open_claims(alice, None, NOW).await? == 1);
    ensure!(s.open_claims(alice, Some(dev(1)), NOW).await? == 1);
    ensure!(s.open_claims(alice, Some(dev(2)), NOW).await? == 0);
    ensure!(s.open_claims(alice, None, NOW + 600).await? == 0, "expired");
    ensure!(s.open_claims(alice + 1, None, NOW).await? == 0);
    let unknown = s
        .put_claim(&Claim {
            device: dev(9),
            ..claim(2, NOW + 600)
        })
        .await;
    ensure!(
        matches!(unknown, Err(StoreError::UnknownDevice(_))),
        "{unknown:?}"
    );
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let s = s.clone();
            tokio::spawn(async move { s.take_claim([1; 32], NOW).await })
        })
        .collect();
    let mut got = 0;
    for t in tasks {
        if let Some(c) = t.await?? {
            ensure!(c == claim(1, NOW + 600));
            got += 1;
        }
    }
    ensure!(got == 1, "{got} takes got the claim");
    s.put_claim(&claim(3, NOW + 10)).await?;
    ensure!(s.take_claim([3; 32], NOW + 10).await?.is_none(), "expired");
    ensure!(
        s.take_claim([3; 32], NOW).await?.is_none(),
        "gone once tried"
    );
    s.put_claim(&claim(4, NOW + 10)).await?;
    ensure!(s.purge_control(NOW + 11).await? == 1);
    Ok(())
}

fn control(n: u8, account: i64, created_at: i64, expires_at: i64) -> NewControl {
    NewControl {
        device: dev(n),
        account,
        kind: 0x41,
        message: vec![0x41, n, 0xaa],
        created_at,
        expires_at,
    }
}

async fn control_queues_are_bounded_and_answered_once<S: Store + Clone + 'static>(
    s: S,
) -> Result<()> {
    admit(&s, 1).await?;
    admit(&s, 2).await?;
    let alice = s.create_account("alice", "h", NOW).await?;
    let short = s.push_control(&control(1, alice, NOW, NOW + 5), 3).await?;
    let a = s.push_control(&control(1, alice, NOW, NOW + 60), 3).await?;
    let b = s.push_control(&control(1, alice, NOW, NOW + 60), 3).await?;
    ensure!(short < a && a < b);
    let full = s.push_control(&control(1, alice, NOW, NOW + 60), 3).await;
    ensure!(matches!(full, Err(StoreError::QueueFull(_))), "{full:?}");
    // Other devices have their own queues; expired messages no longer count.
    s.push_control(&control(2, alice, NOW, NOW + 60), 3).await?;
    let c = s
        .push_control(&control(1, alice, NOW + 5, NOW + 60), 3)
        .await?;
    let unknown = s.push_control(&control(9, alice, NOW, NOW + 60), 3).await;
    ensure!(
        matches!(unknown, Err(StoreError::UnknownDevice(_))),
        "{unknown:?}"
    );
    let unknown = s.push_control(&control(2, 9999, NOW, NOW + 60), 3).await;
    ensure!(
        matches!(unknown, Err(StoreError::UnknownAccount(_))),
        "{unknown:?}"
    );

    let ids = |v: Vec<custos_store::ControlMessage>| v.iter().map(|m| m.id).collect::<Vec<_>>();
    ensure!(ids(s.pending_control(dev(1), 0, NOW, 100).await?) == vec![short, a, b, c]);
    ensure!(ids(s.pending_control(dev(1), a, NOW + 5, 100).await?) == vec![b, c]);
    ensure!(ids(s.pending_control(dev(1), 0, NOW + 5, 1).await?) == vec![a]);

    // Concurrent answers to one message: exactly one is kept.
    let tasks: Vec<_> = (0..4u8)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move { s.put_control_answer(dev(1), a, &[0x42, i], NOW + 1).await })
        })
        .collect();
    let mut kept = 0;
    for t in tasks {
        kept += usize::from(t.await??);
    }
    ensure!(kept == 1, "{kept} answers kept");
    let m = s.control_message(dev(1), a).await?.unwrap();
    ensure!(m.answer.as_ref().is_some_and(|x| x[0] == 0x42) && m.answered_at == Some(NOW + 1));
    ensure!(m.posted == control(1, alice, NOW, NOW + 60));
    ensure!(
        !s.put_control_answer(dev(1), a, &[0x42], NOW + 2).await?,
        "answers are final"
    );
    let wrong = s.put_control_answer(dev(2), a, &[0x42], NOW).await;
    ensure!(
        matches!(wrong, Err(StoreError::UnknownControl(_, _))),
        "{wrong:?}"
    );
    ensure!(
        s.control_message(dev(2), a).await?.is_none(),
        "another device's message"
    );
    ensure!(ids(s.pending_control(dev(1), 0, NOW + 5, 100).await?) == vec![b, c]);
    // Answering makes room.
    s.push_control(&control(1, alice, NOW + 5, NOW + 60), 3)
        .await?;

    ensure!(s.purge_control(NOW + 6).await? == 1, "the short one");
    ensure!(s.control_message(dev(1), short).await?.is_none());
    Ok(())
}

async fn device_state_keeps_the_newest<S: Store>(s: S) -> Result<()> {
    admit(&s, 1).await?;
    ensure!(s.device_state(dev(1)).await?.is_none());
    s.put_device_state(dev(1), "on", NOW).await?;
    s.put_device_state(dev(1), "21.5", NOW + 2).await?;
    s.put_device_state(dev(1), "off", NOW + 1).await?;
    ensure!(s.device_state(dev(1)).await? == Some(("21.5".into(), NOW + 2)));
    let long = s.put_device_state(dev(1), &"x".repeat(65), NOW + 3).await;
    ensure!(matches!(long, Err(StoreError::InvalidInput(_))), "{long:?}");
    s.put_device_state(dev(1), &"é".repeat(32), NOW + 3).await?;
    let unknown = s.put_device_state(dev(9), "on", NOW).await;
    ensure!(
        matches!(unknown, Err(StoreError::UnknownDevice(_))),
        "{unknown:?}"
    );
    Ok(())
}

fn span(app: u8, n: u8, from_leaf: u32, until_leaf: u64, request: u8) -> GrantSpan {
    GrantSpan {
        app: [app; 32],
        device: dev(n),
        epoch: 1,
        from_leaf,
        until_leaf,
        request: [request; 32],
    }
}

async fn grants_index_what_each_app_may_fetch<S: Store>(s: S) -> Result<()> {
    admit(&s, 1).await?;
    admit(&s, 2).await?;
    let batch: Vec<_> = (0..10u64).map(|i| record(1, i, 100 + i as u32)).collect();
    s.insert_records(&batch).await?;
    s.insert_records(&[record(2, 0, 103)]).await?;
    ensure!(s.put_request(&req(1, 7, NOW + 100)).await?);
    ensure!(s.put_request(&req(2, 7, NOW + 100)).await?);
    // App 5 gets leaves 102..104 and 108..; the index and the answer are one transaction.
    let spans = [span(5, 1, 102, 104, 1), span(5, 1, 108, 1 << 32, 1)];
    ensure!(s.put_grant([1; 32], b"grant", NOW, &spans).await?);
    ensure!(s.answer([1; 32]).await? == Some(b"grant".to_vec()));
    ensure!(s.grant_spans([5; 32], dev(1)).await? == spans);
    ensure!(s.grant_spans([5; 32], dev(2)).await?.is_empty());
    ensure!(s.grant_spans([6; 32], dev(1)).await?.is_empty());
    let leaves = |page: Vec<custos_store::StoredRecord>| -> Vec<u32> {
        page.iter().map(|r| r.record.leaf).collect()
    };
    ensure!(leaves(s.granted_records(&query(1), [5; 32]).await?) == [102, 103, 108, 109]);
    let mut q = query(1);
    q.leaf_from = 103;
    q.limit = 2;
    let page = s.granted_records(&q, [5; 32]).await?;
    ensure!(leaves(page.clone()) == [103, 108]);
    q.after = Some(page[1].id);
    ensure!(leaves(s.granted_records(&q, [5; 32]).await?) == [109]);
    ensure!(
        s.granted_records(&query(1), [6; 32]).await?.is_empty(),
        "another app"
    );
    ensure!(
        s.granted_records(&query(2), [5; 32]).await?.is_empty(),
        "another device"
    );
    let mut other_epoch = query(1);
    other_epoch.epoch = 2;
    ensure!(s.granted_records(&other_epoch, [5; 32]).await?.is_empty());
    // A second answer changes nothing and indexes nothing; an unknown request is refused.
    ensure!(
        !s.put_grant([1; 32], b"again", NOW, &[span(6, 1, 0, 200, 1)])
            .await?
    );
    ensure!(s.grant_spans([6; 32], dev(1)).await?.is_empty());
    ensure!(!s.put_answer([1; 32], b"denial", NOW).await?);
    ensure!(s.put_answer([2; 32], b"denial", NOW).await?);
    ensure!(
        !s.put_grant([2; 32], b"grant", NOW, &[span(6, 1, 0, 200, 2)])
            .await?
    );
    ensure!(
        s.grant_spans([6; 32], dev(1)).await?.is_empty(),
        "a denied request"
    );
    let unknown = s
        .put_grant([3; 32], b"grant", NOW, &[span(6, 1, 0, 200, 3)])
        .await;
    ensure!(
        matches!(unknown, Err(StoreError::InvalidInput(_))),
        "{unknown:?}"
    );
    // The index outlives the request and its answer.
    s.purge_sharing(NOW + 1000, NOW + 1000, NOW).await?;
    ensure!(s.answer([1; 32]).await?.is_none());
    ensure!(s.grant_spans([5; 32], dev(1)).await? == spans);
    Ok(())
}

fn key(requester: u8, kid: u8, peers: &[u8], expires_at: i64) -> SessionKeyRecord {
    SessionKeyRecord {
        requester: dev(requester),
        kid: [kid; 8],
        kind: 0x41,
        expires_at,
        created_at: NOW,
        peers: peers
            .iter()
            .map(|&p| KeyPeer {
                peer: dev(p),
                package: Some(vec![0x48, p, kid]),
                received_at: None,
            })
            .collect(),
    }
}

async fn a_batch_of_keys_is_one_transaction_and_reports_each_reused_kid<S: Store>(
    s: S,
) -> Result<()> {
    for n in 1..=4 {
        admit(&s, n).await?;
    }
    ensure!(s.put_session_key(&key(1, 7, &[2], NOW + 3600)).await?);
    // Fresh, reused (stored before), fresh with two peers, and reused within the batch itself.
    let batch = [
        key(2, 1, &[3], NOW + 3600),
        key(1, 7, &[3], NOW + 3600),
        key(3, 1, &[1, 4], NOW + 3600),
        key(2, 1, &[4], NOW + 3600),
    ];
    let fresh = s.put_session_keys(&batch).await?;
    ensure!(fresh == [true, false, true, false], "{fresh:?}");
    // What was new is stored whole; the reused ones changed nothing.
    let k = s.session_key(dev(3), [1; 8]).await?.context("key stored")?;
    ensure!(k.peers.len() == 2);
    let k = s.session_key(dev(1), [7; 8]).await?.context("key stored")?;
    ensure!(k.peers.iter().map(|p| p.peer).collect::<Vec<_>>() == [dev(2)]);
    let k = s.session_key(dev(2), [1; 8]).await?.context("key stored")?;
    ensure!(k.peers.iter().map(|p| p.peer).collect::<Vec<_>>() == [dev(3)]);
    ensure!(s.key_deliveries(dev(4), NOW, 10).await?.len() == 1);
    // A batch naming a device that was never admitted stores nothing at all.
    let bad = [key(4, 9, &[1], NOW + 3600), key(1, 9, &[99], NOW + 3600)];
    ensure!(s.put_session_keys(&bad).await.is_err());
    ensure!(s.session_key(dev(4), [9; 8]).await?.is_none());
    ensure!(s.put_session_keys(&[]).await?.is_empty());
    // Looking devices up by the batch: each one's key and revocation, as its row holds them.
    ensure!(s.revoke(dev(3), NOW + 5).await?);
    let among = s
        .device_keys_among(&[dev(1), dev(3), dev(99), dev(3)])
        .await?;
    for d in &among {
        let row = s.device(d.device).await?.context("an admitted device")?;
        ensure!(d.session_key == row.session_key && d.revoked_at == row.revoked_at);
    }
    ensure!(
        among
            .iter()
            .any(|d| d.device == dev(3) && d.revoked_at == Some(NOW + 5))
    );
    let mut found: Vec<_> = among.iter().map(|d| d.device).collect();
    found.sort();
    found.dedup();
    ensure!(found == [dev(1), dev(3)], "{found:?}");
    ensure!(s.device_keys_among(&[]).await?.is_empty());
    Ok(())
}

async fn session_keys_are_remembered_delivered_once_and_listed_dead<S: Store>(s: S) -> Result<()> {
    for n in 1..=4 {
        admit(&s, n).await?;
    }
    ensure!(s.put_session_key(&key(1, 7, &[2, 3], NOW + 3600)).await?);
    // A key id is used once per requester; another requester may use the same.
    ensure!(!s.put_session_key(&key(1, 7, &[4], NOW + 3600)).await?);
    ensure!(s.put_session_key(&key(2, 7, &[4], NOW + 60)).await?);
    // An unknown peer: nothing is kept.
    ensure!(matches!(
        s.put_session_key(&key(1, 8, &[2, 9], NOW + 3600)).await,
        Err(StoreError::UnknownDevice(d)) if d == dev(9)
    ));
    ensure!(s.session_key(dev(1), [8; 8]).await?.is_none());
    let got = s.session_key(dev(1), [7; 8]).await?.unwrap();
    ensure!(got == key(1, 7, &[2, 3], NOW + 3600));

    let waiting = s.key_deliveries(dev(2), NOW, 10).await?;
    ensure!(
        waiting.len() == 1
            && waiting[0].package == vec![0x48, 2, 7]
            && waiting[0].requester == dev(1)
    );
    // Received: the package is gone, the time kept (the first one).
    ensure!(s.key_received(dev(2), dev(1), [7; 8], NOW + 5).await?);
    ensure!(s.key_received(dev(2), dev(1), [7; 8], NOW + 9).await?);
    ensure!(!s.key_received(dev(4), dev(1), [7; 8], NOW).await?);
    ensure!(s.key_deliveries(dev(2), NOW, 10).await?.is_empty());
    let got = s.session_key(dev(1), [7; 8]).await?.unwrap();
    ensure!(got.peers[0].package.is_none() && got.peers[0].received_at == Some(NOW + 5));
    ensure!(got.peers[1].received_at.is_none());
    // Expired keys wait for no one.
    ensure!(s.key_deliveries(dev(4), NOW + 60, 10).await?.is_empty());
    ensure!(s.key_deliveries(dev(4), NOW, 10).await?.len() == 1);

    // Dead: alive keys a revoked device held.
    ensure!(s.dead_keys(NOW, 10).await?.is_empty());
    s.revoke(dev(3), NOW).await?;
    ensure!(s.dead_keys(NOW, 10).await? == vec![(dev(1), [7; 8], NOW + 3600)]);
    s.revoke(dev(2), NOW).await?;
    ensure!(
        s.dead_keys(NOW, 10).await?
            == vec![(dev(1), [7; 8], NOW + 3600), (dev(2), [7; 8], NOW + 60)]
    );
    ensure!(s.dead_keys(NOW + 60, 10).await?.len() == 1);

    ensure!(s.purge_session_keys(NOW + 61).await? == 1);
    ensure!(s.session_key(dev(2), [7; 8]).await?.is_none());
    ensure!(s.session_key(dev(1), [7; 8]).await?.is_some());

    // A two-party key (its peer kept in the key's own row): an unknown peer keeps nothing, a receipt drops the
    // package once, and a revoked peer makes it dead.
    for n in 5..=6 {
        admit(&s, n).await?;
    }
    ensure!(matches!(
        s.put_session_key(&key(5, 2, &[9], NOW + 3600)).await,
        Err(StoreError::UnknownDevice(d)) if d == dev(9)
    ));
    ensure!(s.session_key(dev(5), [2; 8]).await?.is_none());
    ensure!(matches!(
        s.put_session_keys(&[key(5, 3, &[6], NOW + 3600), key(5, 4, &[9], NOW + 3600)])
            .await,
        Err(StoreError::InvalidInput(_))
    ));
    ensure!(
        s.session_key(dev(5), [3; 8]).await?.is_none(),
        "a failed batch keeps nothing"
    );
    ensure!(s.put_session_keys(&[key(5, 1, &[6], NOW + 3600)]).await? == [true]);
    ensure!(s.session_key(dev(5), [1; 8]).await? == Some(key(5, 1, &[6], NOW + 3600)));
    ensure!(s.key_deliveries(dev(6), NOW, 10).await?.len() == 1);
    ensure!(
        !s.key_received(dev(5), dev(5), [1; 8], NOW).await?,
        "not its peer"
    );
    ensure!(s.key_received(dev(6), dev(5), [1; 8], NOW + 7).await?);
    ensure!(s.key_received(dev(6), dev(5), [1; 8], NOW + 8).await?);
    ensure!(s.key_deliveries(dev(6), NOW, 10).await?.is_empty());
    let got = s.session_key(dev(5), [1; 8]).await?.unwrap();
    ensure!(
        got.peers.len() == 1
            && got.peers[0].package.is_none()
            && got.peers[0].received_at == Some(NOW + 7)
    );
    ensure!(
        !s.dead_keys(NOW, 10)
            .await?
            .contains(&(dev(5), [1; 8], NOW + 3600))
    );
    s.revoke(dev(6), NOW).await?;
    ensure!(
        s.dead_keys(NOW, 10)
            .await?
            .contains(&(dev(5), [1; 8], NOW + 3600))
    );
    Ok(())
}

async fn tpm_parents_are_one_per_admitted_device_and_looked_up_together<S: Store>(
    s: S,
) -> Result<()> {
    admit(&s, 1).await?;
    admit(&s, 2).await?;
    admit(&s, 3).await?;
    assert!(s.tpm_parents_among(&[dev(1), dev(2)]).await?.is_empty());
    assert!(s.tpm_parents_among(&[]).await?.is_empty());
    s.put_tpm_parent(dev(1), &[0xa1; 90]).await?;
    s.put_tpm_parent(dev(2), &[0xa2; 256]).await?;
    // The last registration wins.
    s.put_tpm_parent(dev(1), &[0xb1; 80]).await?;
    let got = s
        .tpm_parents_among(&[dev(1), dev(2), dev(3), dev(9)])
        .await?;
    assert_eq!(got.len(), 2);
    assert_eq!(got[&dev(1)], vec![0xb1; 80]);
    assert_eq!(got[&dev(2)], vec![0xa2; 256]);
    assert_eq!(s.tpm_parents_among(&[dev(2)]).await?.len(), 1);
    // Unknown devices, empty and oversized areas are refused and change nothing.
    assert!(matches!(
        s.put_tpm_parent(dev(9), &[1; 90]).await,
        Err(StoreError::UnknownDevice(_))
    ));
    assert!(matches!(
        s.put_tpm_parent(dev(3), &[]).await,
        Err(StoreError::InvalidInput(_))
    ));
    assert!(matches!(
        s.put_tpm_parent(dev(3), &[1; 257]).await,
        Err(StoreError::InvalidInput(_))
    ));
    assert!(s.tpm_parents_among(&[dev(3), dev(9)]).await?.is_empty());
    Ok(())
}

/// A key fingerprint: `n` names the key, `tail` its key id (the last 8 bytes), so tests can make two keys whose key
/// ids collide.
fn fpr(n: u8, tail: u8) -> [u8; 20] {
    let mut f = [n; 20];
    f[12..].copy_from_slice(&[tail; 8]);
    f
}

fn key_id(f: &[u8; 20]) -> [u8; 8] {
    f[12..].try_into().unwrap()
}

fn cert_row(primary: [u8; 20], subkeys: &[[u8; 20]], uids: &[&str], at: i64) -> CertRow {
    CertRow {
        fingerprint: primary,
        domain: "example.org".into(),
        data: [&primary[..], &[0xc0, at as u8]].concat(),
        keys: std::iter::once(primary)
            .chain(subkeys.iter().copied())
            .collect(),
        uids: uids.iter().map(|u| u.to_string()).collect(),
        updated_at: at,
    }
}

/// An entry; the leaf hash need not be a real one here (the store keeps what it is given).
fn log_entry(tag: u8, domain: &str) -> NewLogEntry {
    NewLogEntry {
        kind: 1,
        data: vec![tag, 0xe0, tag],
        leaf_hash: [tag; 32],
        domain: domain.into(),
        added_at: NOW + i64::from(tag),
        cert: None,
        statement: None,
    }
}

fn cert_entry(tag: u8, cert: CertRow) -> NewLogEntry {
    NewLogEntry {
        domain: cert.domain.clone(),
        cert: Some(cert),
        ..log_entry(tag, "")
    }
}

fn statement_entry(tag: u8, subject: &[u8], issued_at: i64, status: Option<u8>) -> NewLogEntry {
    NewLogEntry {
        kind: 2,
        statement: Some(StatementRow {
            subject: subject.to_vec(),
            kind: if status.is_some() { 1 } else { 2 },
            signer: fpr(0x5e, 0x5e),
            issued_at,
            status,
        }),
        ..log_entry(tag, "example.org")
    }
}

fn logged(e: &NewLogEntry, index: u64) -> LogEntry {
    LogEntry {
        index,
        kind: e.kind,
        data: e.data.clone(),
        leaf_hash: e.leaf_hash,
        domain: e.domain.clone(),
        added_at: e.added_at,
    }
}

/// Appends at the end of the log, as a single writer does.
async fn append<S: RegistryStore>(s: &S, e: &NewLogEntry) -> Result<u64> {
    let size = s.log_size().await?;
    Ok(s.append_entry(e, size).await?)
}

async fn registry_log_appends_and_reads_back<S: RegistryStore>(s: S) -> Result<()> {
    ensure!(s.log_size().await? == 0);
    ensure!(s.log_entry(0).await?.is_none());
    ensure!(s.leaf_hashes(0, u64::MAX).await?.is_empty());
    ensure!(s.log_entries(0, 10, None).await?.is_empty());
    let entries: Vec<NewLogEntry> = [
        (1, "a.example"),
        (2, "b.example"),
        (3, "a.example"),
        (4, "c.example"),
        (5, "a.example"),
        (6, "b.example"),
    ]
    .into_iter()
    .map(|(tag, domain)| log_entry(tag, domain))
    .collect();
    for (i, e) in entries.iter().enumerate() {
        ensure!(s.append_entry(e, i as u64).await? == i as u64);
    }
    ensure!(s.log_size().await? == 6);
    for (i, e) in entries.iter().enumerate() {
        ensure!(s.log_entry(i as u64).await? == Some(logged(e, i as u64)));
    }
    ensure!(s.log_entry(6).await?.is_none());
    let hashes: Vec<[u8; 32]> = entries.iter().map(|e| e.leaf_hash).collect();
    ensure!(s.leaf_hashes(0, 6).await? == hashes);
    ensure!(s.leaf_hashes(2, 4).await? == hashes[2..4]);
    ensure!(
        s.leaf_hashes(4, u64::MAX).await? == hashes[4..],
        "past the end"
    );
    ensure!(s.leaf_hashes(6, 10).await?.is_empty());
    ensure!(s.leaf_hashes(3, 2).await?.is_empty());
    // Every entry, in order; then pages.
    let all = s.log_entries(0, 100, None).await?;
    let want: Vec<LogEntry> = entries
        .iter()
        .enumerate()
        .map(|(i, e)| logged(e, i as u64))
        .collect();
    ensure!(all == want);
    let page: Vec<u64> = s
        .log_entries(2, 3, None)
        .await?
        .iter()
        .map(|e| e.index)
        .collect();
    ensure!(page == [2, 3, 4], "{page:?}");
    // Only some domains, with a limit and from an index.
    let ac = ["a.example".to_string(), "c.example".to_string()];
    let indices = |v: Vec<LogEntry>| v.iter().map(|e| e.index).collect::<Vec<_>>();
    ensure!(indices(s.log_entries(0, 100, Some(&ac)).await?) == [0, 2, 3, 4]);
    ensure!(indices(s.log_entries(0, 2, Some(&ac)).await?) == [0, 2]);
    ensure!(indices(s.log_entries(3, 100, Some(&ac)).await?) == [3, 4]);
    ensure!(s.log_entries(0, 100, Some(&[])).await?.is_empty());
    ensure!(
        s.log_entries(0, 100, Some(&["x.example".into(), "nul\0".into()]))
            .await?
            .is_empty()
    );
    ensure!(s.log_entries(6, 100, None).await?.is_empty());
    ensure!(s.log_entries(0, 0, None).await?.is_empty());
    // Indices beyond what BIGINT holds are refused.
    let huge = s.append_entry(&log_entry(9, "a.example"), u64::MAX).await;
    ensure!(matches!(huge, Err(StoreError::InvalidInput(_))), "{huge:?}");
    let huge = s.log_entry(u64::MAX).await;
    ensure!(matches!(huge, Err(StoreError::InvalidInput(_))), "{huge:?}");
    ensure!(s.log_size().await? == 6);
    Ok(())
}

async fn registry_log_conflicts_and_bad_entries_write_nothing<S: RegistryStore>(
    s: S,
) -> Result<()> {
    append(&s, &log_entry(1, "example.org")).await?;
    let cert = cert_row(fpr(1, 1), &[fpr(2, 2)], &["Alice <alice@example.org>"], NOW);
    let mut e = cert_entry(2, cert.clone());
    e.statement = statement_entry(2, &fpr(1, 1), NOW, Some(1)).statement;
    for expected in [0, 5] {
        let r = s.append_entry(&e, expected).await;
        ensure!(
            matches!(r, Err(StoreError::LogConflict { expected: x, actual: 1 }) if x == expected),
            "{r:?}"
        );
    }
    // Refused before anything is written.
    let mut no_primary = cert.clone();
    no_primary.keys = vec![fpr(2, 2)];
    let mut twice = cert.clone();
    twice.keys.push(fpr(2, 2));
    let mut nul = cert.clone();
    nul.uids.push("bad\0uid".into());
    for bad in [no_primary, twice, nul] {
        let r = s.append_entry(&cert_entry(2, bad), 1).await;
        ensure!(matches!(r, Err(StoreError::InvalidInput(_))), "{r:?}");
    }
    let r = s
        .append_entry(&statement_entry(2, &[1; 7], NOW, Some(1)), 1)
        .await;
    ensure!(matches!(r, Err(StoreError::InvalidInput(_))), "{r:?}");
    // Nothing of any of them is stored.
    ensure!(s.log_size().await? == 1);
    ensure!(s.log_entry(1).await?.is_none());
    ensure!(s.cert(fpr(1, 1)).await?.is_none());
    ensure!(s.cert_by_key(&fpr(2, 2)).await?.is_none());
    ensure!(s.certs_by_words("alice", 10).await?.is_empty());
    ensure!(s.cert_count().await? == 0);
    ensure!(s.statements(&fpr(1, 1)).await?.is_empty());
    // At the right size it goes in, whole.
    ensure!(s.append_entry(&e, 1).await? == 1);
    ensure!(s.cert(fpr(1, 1)).await? == Some(cert));
    ensure!(s.statements(&fpr(1, 1)).await?.len() == 1);
    Ok(())
}

async fn registry_certs_are_replaced_with_their_keys_and_uids<S: RegistryStore>(
    s: S,
) -> Result<()> {
    let (a, s1, s2, s3) = (
        fpr(0xa1, 0xa1),
        fpr(0xa2, 0xa2),
        fpr(0xa3, 0xa3),
        fpr(0xa4, 0xa4),
    );
    let first = cert_row(
        a,
        &[s1, s2],
        &[
            "Alice <alice@example.org>",
            "Alice at work <a@work.example>",
        ],
        NOW,
    );
    append(&s, &cert_entry(1, first.clone())).await?;
    ensure!(s.cert(a).await? == Some(first.clone()));
    for id in [&a[..], &s1[..], &key_id(&s2)[..], &key_id(&a)[..]] {
        ensure!(
            s.cert_by_key(id).await? == Some(first.clone()),
            "lookup by {}",
            hex::encode(id)
        );
        ensure!(
            s.cert_data_by_key(id).await? == Some((first.domain.clone(), first.data.clone())),
            "data by {}",
            hex::encode(id)
        );
    }
    ensure!(s.certs_by_words("work", 10).await? == std::slice::from_ref(&first));
    // The merged certificate replaces the old one, keys and user ids included; its domain stays.
    let mut second = cert_row(a, &[s3], &["Alice <alice@example.org>"], NOW + 100);
    second.domain = "elsewhere.example".into();
    append(&s, &cert_entry(2, second.clone())).await?;
    let want = CertRow {
        domain: "example.org".into(),
        ..second.clone()
    };
    ensure!(s.cert(a).await? == Some(want.clone()));
    ensure!(s.cert_by_key(&s3).await? == Some(want.clone()));
    ensure!(s.cert_by_key(&key_id(&s3)).await? == Some(want.clone()));
    ensure!(s.cert_by_key(&s1).await?.is_none(), "a removed subkey");
    ensure!(
        s.cert_by_key(&key_id(&s2)).await?.is_none(),
        "a removed subkey's key id"
    );
    ensure!(
        s.certs_by_words("work", 10).await?.is_empty(),
        "a removed user id"
    );
    ensure!(s.certs_by_words("alice", 10).await? == std::slice::from_ref(&want));
    ensure!(s.cert_count().await? == 1);
    // Ambiguity: b (logged next) lists a's subkey s3 and a key x whose key id collides with a's, and c, logged
    // last, is x's own certificate. The certificate whose primary key it is wins, then the one logged first.
    let x = fpr(0xc1, 0xa1);
    let b = cert_row(fpr(0xb1, 0xb1), &[s3, x], &["Bob <bob@example.org>"], NOW);
    append(&s, &cert_entry(3, b.clone())).await?;
    ensure!(s.cert_by_key(&s3).await? == Some(want.clone()));
    ensure!(s.cert_by_key(&x).await? == Some(b.clone()));
    let c = cert_row(x, &[], &["Carol <carol@example.org>"], NOW);
    append(&s, &cert_entry(4, c.clone())).await?;
    ensure!(s.cert_by_key(&x).await? == Some(c.clone()), "primary wins");
    ensure!(s.cert_data_by_key(&x).await? == Some((c.domain.clone(), c.data.clone())));
    ensure!(
        s.cert_data_by_key(&key_id(&a)).await? == Some((want.domain.clone(), want.data.clone()))
    );
    ensure!(s.cert_data_by_key(&s1).await?.is_none(), "a removed subkey");
    ensure!(
        s.cert_by_key(&key_id(&a)).await? == Some(want.clone()),
        "primary then first"
    );
    ensure!(s.cert_count().await? == 3);
    // Paged in the order first logged (a at 0, replaced at 1; b at 2; c at 3), each with that index.
    let all = s.certs_from(0, 10).await?;
    ensure!(
        all == [(0, want.clone()), (2, b.clone()), (3, c.clone())],
        "{all:?}"
    );
    ensure!(s.certs_from(0, 2).await? == all[..2]);
    ensure!(s.certs_from(1, 10).await? == all[1..]);
    ensure!(s.certs_from(3, 10).await? == all[2..]);
    ensure!(s.certs_from(4, 10).await?.is_empty());
    ensure!(s.cert(fpr(0xee, 0xee)).await?.is_none());
    ensure!(s.cert_by_key(&fpr(0xee, 0xee)).await?.is_none());
    ensure!(s.cert_by_key(&[0xee; 8]).await?.is_none());
    for bad in [&[0xa1; 7][..], &[0xa1; 32][..], &[][..]] {
        let r = s.cert_by_key(bad).await;
        ensure!(matches!(r, Err(StoreError::InvalidInput(_))), "{r:?}");
        let r = s.cert_data_by_key(bad).await;
        ensure!(matches!(r, Err(StoreError::InvalidInput(_))), "{r:?}");
    }
    Ok(())
}

/// `n` distinct words, `w01 w02 …`.
fn words(n: usize) -> String {
    (1..=n)
        .map(|i| format!("w{i:02}"))
        .collect::<Vec<_>>()
        .join(" ")
}

async fn registry_uid_search_matches_whole_words<S: RegistryStore>(s: S) -> Result<()> {
    let long = "x".repeat(100);
    let uids = [
        "Alice <alice@example.org>".to_string(),
        "100% sure <p@example.org>".into(),
        "1000 sure <q@example.org>".into(),
        "under_score <u@example.org>".into(),
        "underXscore <v@example.org>".into(),
        "Ärger Ünïcode <w@example.org>".into(),
        "bang! <b@example.org>".into(),
        "bang <c@example.org>".into(),
        format!("{long} <l@example.org>"),
        "!!! ???".into(),
        words(17),
        "custos device be-e0-59-99-f4-db-6a-da".into(),
    ];
    let mut certs = Vec::new();
    for (n, uid) in (1u8..).zip(&uids) {
        let c = cert_row(fpr(n, n), &[], &[uid.as_str()], NOW);
        append(&s, &cert_entry(n, c.clone())).await?;
        certs.push(c);
    }
    let found = |search: String| {
        let s = &s;
        async move {
            let got = s.certs_by_words(&search, 100).await?;
            anyhow::Ok(
                got.iter()
                    .map(|c| c.uids[0].clone())
                    .collect::<Vec<String>>(),
            )
        }
    };
    let f = |search: &str| found(search.to_string());
    ensure!(f("ALICE").await? == [uids[0].as_str()]);
    ensure!(
        f("alice@example.org").await? == [uids[0].as_str()],
        "every word, not any"
    );
    ensure!(f("ali").await?.is_empty(), "whole words, not prefixes");
    ensure!(f("lice").await?.is_empty(), "whole words, not substrings");
    ensure!(
        f("100%").await? == [uids[1].as_str()],
        "punctuation separates words"
    );
    ensure!(f("sure").await? == [uids[1].as_str(), uids[2].as_str()]);
    ensure!(f("under_score").await? == [uids[3].as_str()]);
    ensure!(f("underxscore").await? == [uids[4].as_str()]);
    ensure!(
        f("äRGER üNÏcode").await? == [uids[5].as_str()],
        "beyond ASCII"
    );
    ensure!(f("bang!").await? == [uids[6].as_str(), uids[7].as_str()]);
    ensure!(f("bang c").await? == [uids[7].as_str()]);
    // A word is cut to its first 64 characters, in the index and in the search alike.
    ensure!(f(&long).await? == [uids[8].as_str()]);
    ensure!(f(&long[..64]).await? == [uids[8].as_str()]);
    ensure!(f(&long[..63]).await?.is_empty());
    for none in ["nobody", "%", "!!!", "", "a b c d e f g h i"] {
        ensure!(f(none).await?.is_empty(), "{none:?}");
    }
    ensure!(f("nul\0").await?.is_empty());
    // Sixteen different words are allowed; seventeen find nothing.
    ensure!(f("alice alice example org example org alice org").await? == [uids[0].as_str()]);
    ensure!(f(&words(16)).await? == [uids[10].as_str()]);
    ensure!(f(&words(17)).await?.is_empty());
    // A device's User ID, searched whole (as the hub's admission check does through the registry), finds it.
    ensure!(f(&uids[11]).await? == [uids[11].as_str()]);
    // A limit, in the order first logged.
    let two = s.certs_by_words("@EXAMPLE.org", 2).await?;
    ensure!(two == certs[..2]);
    // More certificates holding the same common words than the search counts (64): a search is driven by its
    // rarest word, and every other word must still hold.
    for n in 100u8..180 {
        let uid = format!("common shared w{n} tag{}", n % 3);
        append(
            &s,
            &cert_entry(n, cert_row(fpr(n, n), &[], &[uid.as_str()], NOW)),
        )
        .await?;
    }
    ensure!(f("common shared w105").await? == ["common shared w105 tag0"]);
    ensure!(f("tag0 w105 shared").await? == ["common shared w105 tag0"]);
    ensure!(
        f("common w105 tag1").await?.is_empty(),
        "the rarest word's certificate lacks tag1"
    );
    ensure!(f("common alice").await?.is_empty());
    let tagged = f("tag2 common").await?;
    ensure!(
        tagged.len() == 27 && tagged.iter().all(|u| u.ends_with(" tag2")),
        "{tagged:?}"
    );
    ensure!(
        tagged[0] == "common shared w101 tag2",
        "in the order first logged"
    );
    Ok(())
}

async fn registry_statements_come_ordered_by_issue_then_index<S: RegistryStore>(
    s: S,
) -> Result<()> {
    let subject = fpr(7, 7);
    let digest = [0xd1; 32];
    let entries = [
        statement_entry(1, &subject, NOW + 30, Some(1)),
        statement_entry(2, &subject, NOW + 10, Some(2)),
        statement_entry(3, &digest, NOW, None),
        statement_entry(4, &subject, NOW + 30, Some(3)),
        statement_entry(5, &subject, NOW + 20, Some(4)),
        log_entry(6, "example.org"),
    ];
    for e in &entries {
        append(&s, e).await?;
    }
    let got = s.statements(&subject).await?;
    let order: Vec<u64> = got.iter().map(|st| st.index).collect();
    ensure!(order == [1, 4, 0, 3], "{order:?}");
    for st in &got {
        let e = &entries[st.index as usize];
        ensure!(Some(&st.row) == e.statement.as_ref());
        ensure!(st.data == e.data);
    }
    let code = s.statements(&digest).await?;
    ensure!(code.len() == 1 && code[0].index == 2, "{code:?}");
    ensure!(code[0].row.kind == 2 && code[0].row.status.is_none());
    ensure!(s.statements(&fpr(8, 8)).await?.is_empty());
    ensure!(s.statements(&[]).await?.is_empty());
    Ok(())
}

async fn registry_checkpoints_keep_the_largest<S: RegistryStore>(s: S) -> Result<()> {
    ensure!(s.checkpoint().await?.is_none());
    s.put_checkpoint(0, b"size 0").await?;
    ensure!(s.checkpoint().await? == Some((0, b"size 0".to_vec())));
    let r = s.put_checkpoint(1, b"size 1").await;
    ensure!(matches!(r, Err(StoreError::InvalidInput(_))), "{r:?}");
    for tag in 1..=3 {
        append(&s, &log_entry(tag, "example.org")).await?;
    }
    s.put_checkpoint(3, b"size 3").await?;
    s.put_checkpoint(2, b"size 2").await?;
    ensure!(s.checkpoint().await? == Some((3, b"size 3".to_vec())));
    // The same tree signed again (or cosigned) replaces the note.
    s.put_checkpoint(3, b"size 3, cosigned").await?;
    ensure!(s.checkpoint().await? == Some((3, b"size 3, cosigned".to_vec())));
    for beyond in [4, u64::MAX] {
        let r = s.put_checkpoint(beyond, b"beyond").await;
        ensure!(matches!(r, Err(StoreError::InvalidInput(_))), "{r:?}");
    }
    ensure!(s.checkpoint().await? == Some((3, b"size 3, cosigned".to_vec())));
    Ok(())
}

async fn registry_peer_logs_are_upserted<S: RegistryStore>(s: S) -> Result<()> {
    let peer = |name: &str, size: u64, flagged: Option<&str>| PeerLog {
        peer: name.into(),
        size,
        root: [size as u8; 32],
        checkpoint: format!("{name}\n{size}\n").into_bytes(),
        frontier: [size as u8; 32].repeat(size.count_ones() as usize),
        flagged: flagged.map(Into::into),
        updated_at: NOW + size as i64,
    };
    ensure!(s.peer_log("https://one.example").await?.is_none());
    s.put_peer_log(&peer("https://one.example", 10, None))
        .await?;
    s.put_peer_log(&peer("https://two.example", 5, None))
        .await?;
    ensure!(
        s.peer_log("https://one.example").await? == Some(peer("https://one.example", 10, None))
    );
    let forked = peer("https://one.example", 12, Some("inconsistent with size 10"));
    s.put_peer_log(&forked).await?;
    ensure!(s.peer_log("https://one.example").await? == Some(forked));
    ensure!(s.peer_log("https://two.example").await? == Some(peer("https://two.example", 5, None)));
    ensure!(s.peer_log("nul\0").await?.is_none());
    let r = s
        .put_peer_log(&peer("https://one.example", u64::MAX, None))
        .await;
    ensure!(matches!(r, Err(StoreError::InvalidInput(_))), "{r:?}");
    let r = s.put_peer_log(&peer("nul\0", 1, None)).await;
    ensure!(matches!(r, Err(StoreError::InvalidInput(_))), "{r:?}");
    Ok(())
}

/// Writers that read the same log size race to append: exactly one wins each round, the others get
/// [`StoreError::LogConflict`], and the log never forks (on PostgreSQL the primary key on the index decides).
async fn concurrent_appenders_at_one_size_append_once<S: RegistryStore + Clone + 'static>(
    s: S,
) -> Result<()> {
    for round in 0..10u64 {
        let tasks: Vec<_> = (0..8u8)
            .map(|w| {
                let s = s.clone();
                let tag = round as u8 * 8 + w;
                let e = cert_entry(tag, cert_row(fpr(tag, tag), &[], &["racer"], NOW));
                tokio::spawn(async move { (e.clone(), s.append_entry(&e, round).await) })
            })
            .collect();
        let mut winners = Vec::new();
        for t in tasks {
            match t.await? {
                (e, Ok(index)) => {
                    ensure!(index == round);
                    winners.push(e);
                }
                (_, Err(StoreError::LogConflict { expected, actual })) => {
                    ensure!(
                        expected == round && actual == round + 1,
                        "{expected} {actual}"
                    );
                }
                (_, Err(e)) => return Err(e.into()),
            }
        }
        ensure!(
            winners.len() == 1,
            "round {round}: {} appends",
            winners.len()
        );
        ensure!(s.log_size().await? == round + 1);
        ensure!(s.log_entry(round).await? == Some(logged(&winners[0], round)));
        ensure!(
            s.cert_count().await? == round + 1,
            "a loser's certificate was kept"
        );
    }
    Ok(())
}

/// A database written before the word index existed (migration 0009) has its certificates' words indexed when
/// the store opens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_certificates_stored_before_the_word_index_get_words_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hub.db");
    let s = SqliteStore::open(&path).await.unwrap();
    let alice = cert_row(fpr(1, 1), &[], &["Alice <alice@example.org>"], NOW);
    let nameless = cert_row(fpr(2, 2), &[], &["<>"], NOW);
    let bob = cert_row(fpr(3, 3), &[], &["Bob <bob@example.org>"], NOW);
    for (n, c) in [(1, &alice), (2, &nameless), (3, &bob)] {
        append(&s, &cert_entry(n, c.clone())).await.unwrap();
    }
    s.close().await;
    let mut raw = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    sqlx::query("DELETE FROM registry_cert_words")
        .execute(&mut raw)
        .await
        .unwrap();
    raw.close().await.unwrap();
    let s = SqliteStore::open(&path).await.unwrap();
    assert_eq!(s.certs_by_words("alice", 10).await.unwrap(), [alice]);
    assert_eq!(s.certs_by_words("bob example", 10).await.unwrap(), [bob]);
    assert_eq!(s.certs_by_words("org", 10).await.unwrap().len(), 2);
    s.close().await;
}

async fn on_sqlite<F, Fut>(test: F)
where
    F: FnOnce(SqliteStore) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("hub.db")).await.unwrap();
    let result = test(store.clone()).await;
    store.close().await;
    result.unwrap();
}

async fn on_postgres<F, Fut>(test: F)
where
    F: FnOnce(PgStore) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let admin_url = std::env::var("CUSTOS_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let mut suffix = [0u8; 6];
    OsRng.fill_bytes(&mut suffix);
    let name = format!("custos_t_{}", hex::encode(suffix));
    let mut admin = sqlx::PgConnection::connect(&admin_url)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {admin_url} is required for these tests: {e}"));
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .unwrap();
    let url = match admin_url.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{name}"),
        None => panic!("CUSTOS_TEST_POSTGRES must end in /DATABASE"),
    };
    let result = match PgStore::connect(&url).await {
        Ok(store) => {
            let r = test(store.clone()).await;
            store.close().await;
            r
        }
        Err(e) => Err(e.into()),
    };
    sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .execute(&mut admin)
        .await
        .unwrap();
    result.unwrap();
}

macro_rules! contract {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() { super::on_sqlite(super::$test).await }) *
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() { super::on_postgres(super::$test).await }) *
        }
    };
}

contract!(
    registry_log_appends_and_reads_back,
    registry_log_conflicts_and_bad_entries_write_nothing,
    registry_certs_are_replaced_with_their_keys_and_uids,
    registry_uid_search_matches_whole_words,
    registry_statements_come_ordered_by_issue_then_index,
    registry_checkpoints_keep_the_largest,
    registry_peer_logs_are_upserted,
    concurrent_appenders_at_one_size_append_once,
    tpm_parents_are_one_per_admitted_device_and_looked_up_together,
    session_keys_are_remembered_delivered_once_and_listed_dead,
    a_batch_of_keys_is_one_transaction_and_reports_each_reused_kid,
    admission_is_single_use,
    expired_and_unknown_codes_admit_nothing,
    concurrent_completions_admit_once,
    records_are_stored_exactly_once,
    a_failing_batch_stores_nothing,
    queries_filter_and_page,
    revocation_and_presence,
    device_list_versions_only_go_up,
    two_writers_store_each_record_once,
    the_inbox_holds_open_requests_until_answered_or_expired,
    relay_mailboxes_deliver_in_order_until_acknowledged,
    read_then_write_transactions_wait_their_turn,
    skipped_ranges_are_not_losses,
    open_requests_are_counted_per_owner_and_in_all,
    expired_unanswered_requests_go_at_once,
    relay_mailboxes_keep_the_newest_within_limits,
    pairing_windows_open_for_admitted_devices_only,
    accounts_have_unique_names_and_sessions_end,
    login_failures_are_counted_per_home_and_elsewhere,
    devices_have_one_owner_and_transfers_are_logged,
    claims_are_used_once,
    control_queues_are_bounded_and_answered_once,
    device_state_keeps_the_newest,
    grants_index_what_each_app_may_fetch,
);
