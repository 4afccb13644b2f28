//! Sync between registries, by log position: a registry pulls from a peer what was appended to the peer's log since
//! it last looked, in the domains its policy pulls, and pushes its own new entries to peers that take them.
//!
//! A pull first checks the peer's signed checkpoint with the pinned key, then that the new log extends the one it
//! saw last (RFC 9162 consistency proof), then every leaf hash since (the peer sends the hashes of all new entries
//! and the bytes of those in the pulled domains), folding them into the frontier it kept and comparing the result
//! with the signed root. Only if all of that holds is anything taken; a peer that fails is flagged and nothing of
//! it is taken, now or later, until an operator clears the flag. What is taken is submitted to this registry as if
//! posted, under this registry's own policy: what the policy refuses is skipped, and the position advances anyway,
//! so peers with different filters converge instead of asking each other again forever (the SKS failure).
//! Statuses only accumulate and the latest by its own time wins, so a stale copy synced late cannot resurrect a
//! device that was marked stolen.

use std::time::Duration;

use base64::Engine as _;
use custos_client::HubClient;
use custos_proto::translog::{self, Frontier, VerifierKey};
use custos_store::{PeerLog, RegistryStore};
use serde::Deserialize;

use crate::policy::{Pull, Push};
use crate::registry::{self, Entry, Registry, RegistryError, kind};

/// Leaf hashes per sync page (320 KB).
pub const PAGE_LEAVES: u64 = 10_000;

/// Entries per sync page, at most.
pub const PAGE_ENTRIES: u32 = 1_000;

/// What can go wrong in a sync.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SyncError {
    /// The peer could not be reached or sent something that is not the API.
    #[error("peer {peer}: {why}")]
    Peer {
        /// The peer.
        peer: String,
        /// What happened.
        why: String,
    },
    /// The peer's log is not a consistent extension of what it showed before: flagged, nothing taken.
    #[error("peer {peer} is flagged: {why}")]
    Flagged {
        /// The peer.
        peer: String,
        /// What it did.
        why: String,
    },
    /// This registry failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

/// What a pull did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct PullReport {
    /// The peer.
    pub peer: String,
    /// The peer's log size before and after.
    pub from: u64,
    /// The peer's log size now.
    pub to: u64,
    /// Entries in the pulled domains.
    pub received: u64,
    /// Of those, what this registry logged as new.
    pub taken: u64,
    /// Of those, what this registry's policy refused.
    pub refused: u64,
    /// Bytes of the peer's answers.
    pub bytes: u64,
}

/// What a push did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct PushReport {
    /// The peer.
    pub peer: String,
    /// Entries sent.
    pub sent: u64,
    /// Of those, what the peer refused.
    pub refused: u64,
}

#[derive(Deserialize)]
struct Page {
    from: u64,
    to: u64,
    leaves: String,
    entries: Vec<PageEntry>,
}

#[derive(Deserialize)]
struct PageEntry {
    index: u64,
    entry: String,
}

#[derive(Deserialize)]
struct ProofJson {
    hashes: Vec<String>,
}

fn peer_err(peer: &str, why: impl std::fmt::Display) -> SyncError {
    SyncError::Peer {
        peer: peer.to_string(),
        why: why.to_string(),
    }
}

/// An HTTP client for a peer.
pub fn client(url: &str) -> Result<HubClient, SyncError> {
    HubClient::new(
        url.trim_end_matches('/'),
        Duration::from_secs(30),
        &custos_client::TlsTrust::System,
    )
    .map_err(|e| peer_err(url, e))
}

async fn flag<S: RegistryStore>(
    r: &Registry<S>,
    peer: &str,
    prev: Option<PeerLog>,
    why: String,
    now: u64,
) -> Result<SyncError, SyncError> {
    let mut state = prev.unwrap_or(peer_row(peer.to_string(), 0, translog::EMPTY_ROOT, now));
    state.flagged = Some(why.clone());
    state.updated_at = i64::try_from(now).unwrap_or(i64::MAX);
    r.store()
        .put_peer_log(&state)
        .await
        .map_err(RegistryError::from)?;
    tracing::error!(peer, %why, "peer flagged: its log does not extend what it showed before");
    Ok(SyncError::Flagged {
        peer: peer.to_string(),
        why,
    })
}

/// A peer row with no checkpoint and no frontier: a flag, a position per domain, a push position.
fn peer_row(peer: String, size: u64, root: [u8; 32], now: u64) -> PeerLog {
    PeerLog {
        peer,
        size,
        root,
        checkpoint: Vec::new(),
        frontier: Vec::new(),
        flagged: None,
        updated_at: i64::try_from(now).unwrap_or(i64::MAX),
    }
}

fn hash_hex(text: &str) -> Option<[u8; 32]> {
    hex::decode(text).ok()?.try_into().ok()
}

/// A GET to a peer, signed with the reader key if there is one (docs/registry.md §5.1).
async fn get(
    http: &HubClient,
    reader: Option<&crate::cert::Ed25519Key>,
    path: &str,
) -> Result<Vec<u8>, custos_client::ClientError> {
    let auth = reader.map(|k| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        crate::reader::authorization(k, path, t)
    });
    http.get(path, auth.as_deref()).await
}

/// Pulls from one peer (a `[[pull]]` of the policy).
pub async fn pull<S: RegistryStore>(
    r: &Registry<S>,
    pull: &Pull,
    http: &HubClient,
    now: u64,
) -> Result<PullReport, SyncError> {
    let peer = pull.name.as_str();
    let prev = r
        .store()
        .peer_log(peer)
        .await
        .map_err(RegistryError::from)?;
    if let Some(why) = prev.as_ref().and_then(|p| p.flagged.clone()) {
        return Err(SyncError::Flagged {
            peer: peer.to_string(),
            why,
        });
    }
    // A domain added to the pull since the last one needs the peer's log from its start: the pull then reads and
    // checks the whole log again (entries of the other domains are taken again too; that changes nothing).
    let mut fresh = false;
    for d in &pull.domains {
        fresh |= r
            .store()
            .peer_log(&format!("{peer}#{d}"))
            .await
            .map_err(RegistryError::from)?
            .is_none();
    }
    let (old_size, old_root, frontier) = match &prev {
        Some(p) => {
            let hashes: Vec<[u8; 32]> = p
                .frontier
                .chunks_exact(32)
                .filter_map(|c| c.try_into().ok())
                .collect();
            let f = Frontier::from_hashes(p.size, &hashes).ok_or(RegistryError::Store(
                custos_store::StoreError::Corrupt("a peer's frontier does not match its size"),
            ))?;
            (p.size, p.root, f)
        }
        None => (0, translog::EMPTY_ROOT, Frontier::new()),
    };
    let mut report = PullReport {
        peer: peer.to_string(),
        from: old_size,
        ..Default::default()
    };
    let reader = match &pull.reader_key {
        Some(path) => Some(
            crate::reader::read_party(path)
                .map_err(|e| peer_err(peer, e))?
                .0,
        ),
        None => None,
    };
    let reader = reader.as_ref();
    let note = get(http, reader, "/registry/v1/checkpoint")
        .await
        .map_err(|e| peer_err(peer, e))?;
    report.bytes += note.len() as u64;
    let verifier = VerifierKey::parse(&pull.key)
        .map_err(|e| peer_err(peer, format!("its key in the policy: {e}")))?;
    let cp = verifier
        .open_checkpoint(&note)
        .map_err(|e| peer_err(peer, format!("checkpoint: {e}")))?;
    if cp.origin() != registry::origin(peer) {
        return Err(peer_err(
            peer,
            format!("checkpoint of another log: {}", cp.origin()),
        ));
    }
    let (new_size, new_root) = (cp.size(), cp.root());
    report.to = new_size;
    if new_size < old_size {
        return Err(flag(
            r,
            peer,
            prev,
            format!("its log shrank from {old_size} to {new_size} entries"),
            now,
        )
        .await?);
    }
    if new_size == old_size && new_root != old_root {
        return Err(flag(
            r,
            peer,
            prev,
            format!("two different roots at size {new_size}"),
            now,
        )
        .await?);
    }
    if new_size == old_size && !fresh {
        return Ok(report);
    }
    if old_size > 0 && new_size > old_size {
        let body = get(
            http,
            reader,
            &format!("/registry/v1/proof/consistency?from={old_size}&to={new_size}"),
        )
        .await
        .map_err(|e| peer_err(peer, e))?;
        report.bytes += body.len() as u64;
        let proof: ProofJson = serde_json::from_slice(&body).map_err(|e| peer_err(peer, e))?;
        let hashes: Option<Vec<[u8; 32]>> = proof.hashes.iter().map(|h| hash_hex(h)).collect();
        let ok = hashes.is_some_and(|h| {
            translog::verify_consistency(old_size, new_size, &h, &old_root, &new_root).is_ok()
        });
        if !ok {
            return Err(flag(
                r,
                peer,
                prev,
                format!("no valid consistency proof from {old_size} to {new_size}"),
                now,
            )
            .await?);
        }
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    let domains = pull.domains.join(",");
    let (mut f, mut pos) = if fresh {
        (Frontier::new(), 0)
    } else {
        (frontier, old_size)
    };
    report.from = pos;
    let mut taken_entries: Vec<Entry> = Vec::new();
    while pos < new_size {
        let body = get(
            http,
            reader,
            &format!("/registry/v1/sync?from={pos}&to={new_size}&domains={domains}"),
        )
        .await
        .map_err(|e| peer_err(peer, e))?;
        report.bytes += body.len() as u64;
        let page: Page = serde_json::from_slice(&body).map_err(|e| peer_err(peer, e))?;
        let leaves = b64.decode(&page.leaves).map_err(|e| peer_err(peer, e))?;
        if page.from != pos
            || page.to <= pos
            || page.to > new_size
            || leaves.len() as u64 != 32 * (page.to - pos)
        {
            return Err(peer_err(peer, "a sync page that does not fit"));
        }
        let leaves: Vec<[u8; 32]> = leaves
            .chunks_exact(32)
            .filter_map(|c| c.try_into().ok())
            .collect();
        for leaf in &leaves {
            f.append_hash(*leaf).map_err(RegistryError::from)?;
        }
        let mut last = None;
        for e in page.entries {
            let bytes = b64.decode(&e.entry).map_err(|x| peer_err(peer, x))?;
            let in_page = e.index >= pos && e.index < page.to && last.is_none_or(|l| e.index > l);
            let slot = usize::try_from(e.index.wrapping_sub(pos)).ok();
            if !in_page || slot.and_then(|s| leaves.get(s)) != Some(&translog::leaf_hash(&bytes)) {
                return Err(flag(
                    r,
                    peer,
                    prev,
                    format!("entry {} is not the leaf it claims to be", e.index),
                    now,
                )
                .await?);
            }
            last = Some(e.index);
            let entry = Entry::decode(&bytes).map_err(|x| peer_err(peer, x))?;
            if !pull.domains.contains(&entry.domain) {
                return Err(peer_err(
                    peer,
                    format!("sent entry {} of a domain not asked for", e.index),
                ));
            }
            taken_entries.push(entry);
        }
        pos = page.to;
    }
    if f.root() != new_root {
        return Err(flag(
            r,
            peer,
            prev,
            format!("its entries do not make the root it signed at size {new_size}"),
            now,
        )
        .await?);
    }
    // Everything checked: take what this registry's policy accepts.
    report.received = taken_entries.len() as u64;
    for entry in taken_entries {
        let result = match entry.kind {
            kind::CERT => r
                .submit_certs(&entry.data, Some(&entry.domain), now)
                .await
                .map(|done| done.iter().any(|d| !d.entries.is_empty())),
            _ => r.submit_statement_new(&entry.data, now).await,
        };
        match result {
            Ok(true) => report.taken += 1,
            Ok(false) => {}
            Err(RegistryError::Store(e)) => return Err(RegistryError::Store(e).into()),
            Err(e) => {
                tracing::debug!(peer, %e, "entry refused by this registry's policy");
                report.refused += 1;
            }
        }
    }
    for d in &pull.domains {
        r.store()
            .put_peer_log(&peer_row(format!("{peer}#{d}"), new_size, new_root, now))
            .await
            .map_err(RegistryError::from)?;
    }
    let frontier: Vec<u8> = f.hashes().flatten().collect();
    r.store()
        .put_peer_log(&PeerLog {
            peer: peer.to_string(),
            size: new_size,
            root: new_root,
            checkpoint: note,
            frontier,
            flagged: None,
            updated_at: i64::try_from(now).unwrap_or(i64::MAX),
        })
        .await
        .map_err(RegistryError::from)?;
    tracing::info!(
        peer,
        from = report.from,
        to = report.to,
        taken = report.taken,
        refused = report.refused,
        "pulled"
    );
    Ok(report)
}

/// Pushes this registry's entries in the pushed domains, appended since the last push, to a peer (a `[[push]]` of
/// the policy): statuses to `/registry/v1/statements`, certificates to `/registry/v1/certs`. The peer decides under
/// its own policy; a refusal is counted, not retried.
pub async fn push<S: RegistryStore>(
    r: &Registry<S>,
    push: &Push,
    http: &HubClient,
    now: u64,
) -> Result<PushReport, SyncError> {
    let peer = push.name.as_str();
    let key = format!("push:{peer}");
    let state = r
        .store()
        .peer_log(&key)
        .await
        .map_err(RegistryError::from)?;
    let mut pos = state.as_ref().map_or(0, |s| s.size);
    let size = r.size().await;
    let mut report = PushReport {
        peer: peer.to_string(),
        ..Default::default()
    };
    while pos < size {
        let rows = r
            .store()
            .log_entries(pos, PAGE_ENTRIES, Some(&push.domains))
            .await
            .map_err(RegistryError::from)?;
        let Some(last) = rows.last().map(|e| e.index) else {
            break;
        };
        for e in rows {
            let sent = match e.kind {
                kind::CERT => {
                    http.post(&format!("/registry/v1/certs?domain={}", e.domain), e.data)
                        .await
                }
                _ => http.post("/registry/v1/statements", e.data).await,
            };
            report.sent += 1;
            match sent {
                Ok(_) => {}
                Err(custos_client::ClientError::Refused { status, .. })
                    if (400..500).contains(&status) =>
                {
                    report.refused += 1;
                }
                Err(e) => return Err(peer_err(peer, e)),
            }
        }
        pos = last + 1;
    }
    r.store()
        .put_peer_log(&peer_row(key, size.max(pos), translog::EMPTY_ROOT, now))
        .await
        .map_err(RegistryError::from)?;
    Ok(report)
}
