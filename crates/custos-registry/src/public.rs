//! Every certificate HKP may serve, held in memory: lookups by key or by User ID words read no store.
//!
//! A keyserver's lookups are mostly first lookups (`gpg --recv-keys` of a certificate nobody asked for lately), so
//! keeping past answers ([`crate::answers`]) helps only with what is asked again. This holds the certificates
//! themselves: each one's armoured text and `op=index` lines, found by primary or subkey fingerprint, key id or
//! User ID word, with the store's own rules (see [`RegistryStore::cert_by_key`] and
//! [`RegistryStore::certs_by_words`]). Certificates of domains anyone may not read are held too, without their text,
//! so that a key id two certificates share picks the same one as the store does and is still not served.
//!
//! It is built from the store in the background when the registry starts serving ([`Public::build`]), and kept in
//! step with the log, by log position: a certificate this process logs makes it stale at once, and the next lookup
//! first reads what was logged since (one query for the log, one per certificate); another process's writes are
//! noticed when the answer cache compares the log's size, at most once a second, and dropped with its answers. Until it is built, while
//! it is stale and behind by more than a few thousand entries (then it is rebuilt), and when the certificates do not
//! fit the budget, lookups go to the store and the answer cache.

use std::collections::HashMap;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use axum::body::Bytes;
use custos_store::{CertRow, MAX_SEARCH_WORDS, RegistryStore, uid_words};

use crate::cert::{self, Fpr};
use crate::policy::Policy;
use crate::registry::Result;
use crate::registry::kind;

/// Certificates read from the store per query while building.
const PAGE: u32 = 1_000;

/// Behind by more entries than this, the certificates are read again from the start rather than entry by entry.
const REBUILD_AFTER: u64 = 5_000;

/// What each certificate costs beyond its texts: its maps' slots and vectors.
const OVERHEAD: usize = 256;

/// What HKP serves for one certificate.
#[derive(Debug)]
pub struct Served {
    /// The certificate, ASCII-armoured: the `op=get` answer.
    pub armored: Bytes,
    /// Its `pub:` and `uid:` lines of an `op=index` answer.
    pub index: String,
    /// Its User IDs, for `exact=on`.
    pub user_ids: Vec<String>,
}

#[derive(Debug)]
struct Entry {
    first_idx: u64,
    keys: Vec<Fpr>,
    words: Vec<String>,
    /// `None` for a certificate of a domain anyone may not read: found, never served.
    served: Option<std::sync::Arc<Served>>,
    bytes: usize,
}

#[derive(Debug, Default)]
struct Held {
    certs: HashMap<Fpr, Entry>,
    /// Every primary key and subkey fingerprint, and every key id, to the certificates holding it.
    keys: HashMap<Vec<u8>, Vec<Fpr>>,
    words: HashMap<String, Vec<Fpr>>,
    bytes: usize,
}

#[derive(Debug, Default)]
struct Inner {
    held: Option<Held>,
    /// The log size `held` reflects.
    size: u64,
    /// Certificates logged since `size` (by this process, or noticed from another): `held` may not show them until
    /// `applied_writes` catches up.
    writes: u64,
    applied_writes: u64,
    /// The certificates did not fit the budget: not tried again until the process restarts.
    too_big: bool,
}

/// The public certificates in memory.
#[derive(Debug)]
pub struct Public {
    budget: usize,
    inner: RwLock<Inner>,
    /// One catch-up or build at a time.
    refresh: tokio::sync::Mutex<()>,
}

/// What a lookup found: `None` from [`Public::by_key`] or [`Public::by_words`] means "ask the store".
pub type Found = Option<std::sync::Arc<Served>>;

impl Public {
    /// Holds at most `budget` bytes (0: nothing; every lookup goes to the store).
    pub fn new(budget: usize) -> Self {
        Self {
            budget,
            inner: RwLock::new(Inner::default()),
            refresh: tokio::sync::Mutex::new(()),
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        // Every change is applied whole under the lock, so a panic elsewhere leaves it consistent.
        self.inner
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Bytes held (what counts against the budget).
    pub fn bytes(&self) -> usize {
        self.read().held.as_ref().map_or(0, |h| h.bytes)
    }

    /// Stops holding the certificates (a catch-up failed): lookups read the store until the process restarts.
    pub(crate) fn drop_held(&self) {
        self.write().held = None;
    }

    /// The log grew beyond what this process logged (another process wrote to the store): what is held may be
    /// stale until the next catch-up.
    pub(crate) fn saw_growth(&self) {
        self.write().writes += 1;
    }

    /// This process logged an entry; the log now has `size` entries. A certificate makes what is held stale until
    /// the next catch-up; a statement changes nothing HKP serves.
    pub(crate) fn logged(&self, size: u64, certificate: bool) {
        let mut inner = self.write();
        if certificate {
            inner.writes += 1;
        } else if inner.size + 1 == size && inner.writes == inner.applied_writes {
            inner.size = size;
        }
    }

    /// Reads every certificate from the store, unless they are held already or do not fit the budget.
    pub async fn build<S: RegistryStore>(&self, store: &S, policy: &Policy) -> Result<()> {
        let _one = self.refresh.lock().await;
        {
            let inner = self.read();
            if self.budget == 0 || inner.too_big || inner.held.is_some() {
                return Ok(());
            }
        }
        self.rebuild(store, policy).await
    }

    async fn rebuild<S: RegistryStore>(&self, store: &S, policy: &Policy) -> Result<()> {
        let writes = self.read().writes;
        // The size first: a certificate logged while paging is read now or at the next catch-up (applying an entry
        // twice reads the same row twice).
        let size = store.log_size().await?;
        let mut held = Held::default();
        let mut from = 0;
        loop {
            let page = store.certs_from(from, PAGE).await?;
            let Some((last, _)) = page.last() else { break };
            from = last + 1;
            for (first_idx, row) in page {
                held.put(first_idx, &row, policy)?;
            }
            if held.bytes > self.budget {
                let mut inner = self.write();
                inner.too_big = true;
                inner.held = None;
                tracing::warn!(
                    budget = self.budget,
                    "the public certificates do not fit the HKP memory budget; lookups read the store"
                );
                return Ok(());
            }
        }
        let mut inner = self.write();
        inner.held = Some(held);
        inner.size = size;
        inner.applied_writes = writes;
        Ok(())
    }

    /// Brings what is held up to the log, if a certificate was logged since: by this process, or by another as
    /// noticed by [`Registry::answers`](crate::Registry::answers), at most a second after. Returns whether it
    /// changed what is held (and so its size); on the hot path, when nothing was logged, it takes one read lock.
    pub async fn catch_up<S: RegistryStore>(&self, store: &S, policy: &Policy) -> Result<bool> {
        let due = |inner: &Inner| inner.held.is_some() && inner.writes != inner.applied_writes;
        if !due(&self.read()) {
            return Ok(false);
        }
        let _one = self.refresh.lock().await;
        let (from, writes) = {
            let inner = self.read();
            if !due(&inner) {
                return Ok(false);
            }
            (inner.size, inner.writes)
        };
        let size = store.log_size().await?;
        if size.saturating_sub(from) > REBUILD_AFTER {
            self.write().held = None;
            self.rebuild(store, policy).await?;
            return Ok(true);
        }
        // Each certificate once, with the first of these entries that logged it.
        let mut changed: Vec<(u64, Fpr)> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut at = from;
        while at < size {
            let entries = store.log_entries(at, PAGE, None).await?;
            let Some(last) = entries.last() else { break };
            at = last.index + 1;
            for e in entries.iter().filter(|e| e.kind == kind::CERT) {
                let fpr = cert::fpr(&cert::parse(&e.data)?.primary_key);
                if seen.insert(fpr) {
                    changed.push((e.index, fpr));
                }
            }
        }
        let mut rows = Vec::with_capacity(changed.len());
        for (index, fpr) in changed {
            if let Some(row) = store.cert(fpr).await? {
                rows.push((index, row));
            }
        }
        let mut inner = self.write();
        let Some(held) = inner.held.as_mut() else {
            return Ok(true);
        };
        for (index, row) in &rows {
            // A certificate first logged by one of these entries takes its index; one held keeps its own.
            let first_idx = held
                .certs
                .get(&row.fingerprint)
                .map_or(*index, |e| e.first_idx);
            held.put(first_idx, row, policy)?;
        }
        if held.bytes > self.budget {
            inner.held = None;
            inner.too_big = true;
            return Ok(true);
        }
        inner.size = inner.size.max(size);
        inner.applied_writes = writes;
        Ok(true)
    }

    /// The certificate holding key `id` (a 20-byte fingerprint or an 8-byte key id), as
    /// [`RegistryStore::cert_by_key`] picks it: `Some(None)` when there is none or it is not served.
    pub fn by_key(&self, id: &[u8]) -> Option<Found> {
        let inner = self.read();
        let held = inner
            .held
            .as_ref()
            .filter(|_| inner.writes == inner.applied_writes)?;
        let best = held.keys.get(id).and_then(|fprs| {
            fprs.iter()
                .filter_map(|f| held.certs.get(f).map(|e| (f, e)))
                .min_by_key(|(f, e)| (!names_primary(f, id), e.first_idx))
        });
        Some(best.and_then(|(_, e)| e.served.clone()))
    }

    /// Up to `limit` certificates whose User IDs hold every word of `search`, in the order they were first logged,
    /// as [`RegistryStore::certs_by_words`] finds them, then only those served.
    pub fn by_words(&self, search: &str, limit: usize) -> Option<Vec<std::sync::Arc<Served>>> {
        let inner = self.read();
        let held = inner
            .held
            .as_ref()
            .filter(|_| inner.writes == inner.applied_writes)?;
        let words = uid_words(search);
        if words.is_empty() || words.len() > MAX_SEARCH_WORDS {
            return Some(Vec::new());
        }
        let mut lists = Vec::with_capacity(words.len());
        for w in &words {
            match held.words.get(w) {
                Some(list) => lists.push(list),
                None => return Some(Vec::new()),
            }
        }
        let rarest = lists
            .iter()
            .min_by_key(|l| l.len())
            .copied()
            .unwrap_or(lists[0]);
        let mut hits: Vec<&Entry> = rarest
            .iter()
            .filter_map(|f| held.certs.get(f))
            .filter(|e| words.iter().all(|w| e.words.binary_search(w).is_ok()))
            .collect();
        hits.sort_by_key(|e| e.first_idx);
        Some(
            hits.into_iter()
                .take(limit)
                .filter_map(|e| e.served.clone())
                .collect(),
        )
    }
}

/// Whether `id` names the primary key `fpr` (its fingerprint or key id).
fn names_primary(fpr: &Fpr, id: &[u8]) -> bool {
    id == &fpr[..] || id == &fpr[12..]
}

impl Held {
    /// Holds `row` (first logged at `first_idx`), replacing what was held of it.
    fn put(&mut self, first_idx: u64, row: &CertRow, policy: &Policy) -> Result<()> {
        self.remove(&row.fingerprint);
        let served = if policy.may_read(None, &row.domain) {
            let c = cert::stored(&row.data)?;
            let armored = Bytes::from(cert::armor_bytes(&row.data)?);
            let index = crate::http::index_lines(&c);
            Some(std::sync::Arc::new(Served {
                armored,
                index,
                user_ids: c.user_ids,
            }))
        } else {
            None
        };
        let mut words: Vec<String> = row.uids.iter().flat_map(|u| uid_words(u)).collect();
        words.sort_unstable();
        words.dedup();
        let bytes = OVERHEAD
            + row.keys.len() * 64
            + words.iter().map(|w| w.len() + 32).sum::<usize>()
            + served.as_ref().map_or(0, |s| {
                s.armored.len() + s.index.len() + s.user_ids.iter().map(String::len).sum::<usize>()
            });
        for k in &row.keys {
            for id in [&k[..], &k[12..]] {
                let list = self.keys.entry(id.to_vec()).or_default();
                if !list.contains(&row.fingerprint) {
                    list.push(row.fingerprint);
                }
            }
        }
        for w in &words {
            self.words
                .entry(w.clone())
                .or_default()
                .push(row.fingerprint);
        }
        self.bytes += bytes;
        self.certs.insert(
            row.fingerprint,
            Entry {
                first_idx,
                keys: row.keys.clone(),
                words,
                served,
                bytes,
            },
        );
        Ok(())
    }

    fn remove(&mut self, fpr: &Fpr) {
        let Some(old) = self.certs.remove(fpr) else {
            return;
        };
        self.bytes -= old.bytes;
        for k in &old.keys {
            for id in [&k[..], &k[12..]] {
                if let Some(list) = self.keys.get_mut(id) {
                    list.retain(|f| f != fpr);
                    if list.is_empty() {
                        self.keys.remove(id);
                    }
                }
            }
        }
        for w in &old.words {
            if let Some(list) = self.words.get_mut(w) {
                list.retain(|f| f != fpr);
                if list.is_empty() {
                    self.words.remove(w);
                }
            }
        }
    }
}
