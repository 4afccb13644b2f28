//! HKP answers kept in memory: what `op=get` and `op=index` last answered, by what was asked.
//!
//! HKP lookups are the hot path of a keyserver and every answer is public (HKP clients do not sign, so only
//! domains anyone may read are served), so one answer serves every client that asks the same thing. An answer
//! stays until the log takes a certificate, from this process (cleared at once) or from another process writing to
//! the same store (cleared when [`Registry`](crate::Registry) next compares the log's size, at most once a
//! second): answers are never more than about a second behind the store. Statements do not change HKP answers
//! (HKP serves certificates, not statuses) and clear nothing.
//!
//! The cache is bounded in bytes; when a new answer would pass the budget, entries are dropped until a quarter of
//! it is free. A budget of 0 turns it off.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::Bytes;

/// The default budget: 64 MiB, some 40 000 armoured device certificates.
pub const DEFAULT_BUDGET: usize = 64 << 20;

/// How often the store's log size is compared with the one last seen, to drop answers another process's writes
/// made stale.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);

/// What each entry costs beyond its key and text: the map's slot, the `Bytes` handle and the key's box.
const OVERHEAD: usize = 64;

/// What an entry counts against the budget.
fn entry_cost(key_len: usize, text_len: usize) -> usize {
    key_len + text_len + OVERHEAD
}

/// What was asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ask<'a> {
    /// `op=get` by fingerprint, subkey fingerprint or key id (the bytes).
    Key(&'a [u8]),
    /// `op=get` by User ID words, the search as given; `exact=on`.
    Get(&'a str, bool),
    /// `op=index` or `op=vindex` (the same answer), the search as given; `exact=on`.
    Index(&'a str, bool),
}

impl Ask<'_> {
    fn key(&self) -> Box<[u8]> {
        let (class, exact, rest) = match *self {
            Ask::Key(id) => (b'k', false, id),
            Ask::Get(s, exact) => (b'g', exact, s.as_bytes()),
            Ask::Index(s, exact) => (b'i', exact, s.as_bytes()),
        };
        let mut k = Vec::with_capacity(rest.len() + 2);
        k.push(class);
        k.push(u8::from(exact));
        k.extend_from_slice(rest);
        k.into_boxed_slice()
    }
}

/// A miss: what [`Answers::put`] needs to store the answer, unless the cache was cleared meanwhile.
#[derive(Debug)]
#[must_use]
pub struct Miss {
    generation: u64,
}

/// The cache.
#[derive(Debug)]
pub struct Answers {
    /// What it may hold now: the registry gives it what the held certificates leave of its budget.
    budget: AtomicUsize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    map: HashMap<Box<[u8]>, Bytes>,
    bytes: usize,
    /// Bumped by every clear: an answer read from the store before a clear is not stored after it.
    generation: u64,
    /// When the store's log size was last compared, and what it was.
    checked: Option<Instant>,
    log_size: u64,
}

impl Inner {
    /// Drops entries in the map's (arbitrary) order until a quarter of `budget` is free: no ordering to keep up on
    /// every hit, and the answers asked for most come back at their next miss.
    fn shrink(&mut self, budget: usize) {
        let target = budget - budget / 4;
        let mut bytes = self.bytes;
        self.map.retain(|k, v| {
            if bytes <= target {
                return true;
            }
            bytes -= entry_cost(k.len(), v.len());
            false
        });
        self.bytes = bytes;
    }
}

impl Answers {
    /// A cache of at most `budget` bytes (0: none) for a log of `log_size` entries.
    pub fn new(budget: usize, log_size: u64) -> Self {
        Self {
            budget: AtomicUsize::new(budget),
            inner: Mutex::new(Inner {
                log_size,
                ..Inner::default()
            }),
        }
    }

    /// The log size last seen.
    pub fn log_size(&self) -> u64 {
        self.lock().log_size
    }

    /// The budget in bytes.
    pub fn budget(&self) -> usize {
        self.budget.load(Ordering::Relaxed)
    }

    /// Changes the budget, dropping answers until a quarter of it is free if it is passed.
    pub fn set_budget(&self, budget: usize) {
        self.budget.store(budget, Ordering::Relaxed);
        let mut inner = self.lock();
        if inner.bytes > budget {
            inner.shrink(budget);
        }
    }

    /// Bytes held now.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    /// Answers held now.
    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    /// Whether it holds no answer.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves a consistent map (every change is one call), so go on with it.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The answer to `ask`, or what storing it will need.
    pub fn get(&self, ask: Ask<'_>) -> Result<Bytes, Miss> {
        let inner = self.lock();
        match inner.map.get(&*ask.key()) {
            Some(text) => Ok(text.clone()),
            None => Err(Miss {
                generation: inner.generation,
            }),
        }
    }

    /// Stores the answer to `ask`, unless the cache was cleared since the miss (the answer may predate a write)
    /// or the answer alone is larger than a quarter of the budget.
    pub fn put(&self, ask: Ask<'_>, miss: Miss, text: Bytes) {
        let key = ask.key();
        let cost = entry_cost(key.len(), text.len());
        let budget = self.budget();
        if cost > budget / 4 {
            return;
        }
        let mut inner = self.lock();
        if inner.generation != miss.generation {
            return;
        }
        if inner.bytes + cost > budget {
            inner.shrink(budget);
        }
        let key_len = key.len();
        inner.bytes += cost;
        if let Some(old) = inner.map.insert(key, text) {
            // Two misses for the same ask raced: the first answer's bytes go with it.
            inner.bytes -= entry_cost(key_len, old.len());
        }
    }

    /// This process logged an entry, and the log now has `size` entries: a certificate drops every answer, a
    /// statement none (HKP does not serve statements), and neither is mistaken later for another process's write.
    pub(crate) fn logged(&self, size: u64, certificate: bool) {
        if certificate {
            self.clear();
        }
        let mut inner = self.lock();
        inner.log_size = inner.log_size.max(size);
    }

    /// Drops every answer.
    pub fn clear(&self) {
        let mut inner = self.lock();
        inner.map.clear();
        inner.bytes = 0;
        inner.generation += 1;
    }

    /// Whether the store's log size is due to be compared (at most once per [`CHECK_EVERY`]); marks it done, so
    /// concurrent lookups do not all ask the store.
    pub(crate) fn check_due(&self, now: Instant) -> bool {
        let mut inner = self.lock();
        if inner
            .checked
            .is_some_and(|at| now.duration_since(at) < CHECK_EVERY)
        {
            return false;
        }
        inner.checked = Some(now);
        true
    }

    /// The store's log size as just read: a size larger than the one last seen means another process logged
    /// something, so every answer is dropped (and `true` is returned).
    pub(crate) fn saw_log_size(&self, size: u64) -> bool {
        // The log only grows: a size read before this process's own latest append is not news.
        let changed = {
            let mut inner = self.lock();
            let changed = size > inner.log_size;
            inner.log_size = inner.log_size.max(size);
            changed
        };
        if changed {
            self.clear();
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_read_before_a_clear_is_not_kept_after_it() {
        let a = Answers::new(1 << 20, 0);
        let miss = a.get(Ask::Key(b"k")).unwrap_err();
        // A certificate is logged while the lookup reads the store.
        a.logged(1, true);
        a.put(Ask::Key(b"k"), miss, Bytes::from_static(b"old"));
        assert!(a.get(Ask::Key(b"k")).is_err());
        // A statement clears nothing.
        let miss = a.get(Ask::Key(b"k")).unwrap_err();
        a.logged(2, false);
        a.put(Ask::Key(b"k"), miss, Bytes::from_static(b"new"));
        assert_eq!(a.get(Ask::Key(b"k")).unwrap(), Bytes::from_static(b"new"));
        assert_eq!(a.log_size(), 2);
    }

    #[test]
    fn asks_of_different_kinds_do_not_share_answers() {
        let a = Answers::new(1 << 20, 0);
        let miss = a.get(Ask::Index("alice", false)).unwrap_err();
        a.put(
            Ask::Index("alice", false),
            miss,
            Bytes::from_static(b"index"),
        );
        assert!(a.get(Ask::Index("alice", true)).is_err());
        assert!(a.get(Ask::Get("alice", false)).is_err());
        assert!(a.get(Ask::Key(b"alice")).is_err());
    }

    #[test]
    fn the_budget_holds_and_eviction_frees_a_quarter() {
        let budget = 10_000;
        let a = Answers::new(budget, 0);
        let text = Bytes::from(vec![b'x'; 900]);
        for i in 0u32..100 {
            let id = i.to_be_bytes();
            let miss = a.get(Ask::Key(&id)).unwrap_err();
            a.put(Ask::Key(&id), miss, text.clone());
            assert!(a.bytes() <= budget, "{} > {budget}", a.bytes());
        }
        assert!(a.len() >= 7, "{}", a.len());
        // Larger than a quarter of the budget: not kept.
        let miss = a.get(Ask::Key(b"big")).unwrap_err();
        a.put(Ask::Key(b"big"), miss, Bytes::from(vec![b'x'; budget / 4]));
        assert!(a.get(Ask::Key(b"big")).is_err());
        // Nothing at all with no budget.
        let none = Answers::new(0, 0);
        let miss = none.get(Ask::Key(b"k")).unwrap_err();
        none.put(Ask::Key(b"k"), miss, Bytes::from_static(b"x"));
        assert!(none.is_empty());
    }

    #[test]
    fn another_process_s_write_clears_and_its_check_is_rate_limited() {
        let a = Answers::new(1 << 20, 5);
        let miss = a.get(Ask::Key(b"k")).unwrap_err();
        a.put(Ask::Key(b"k"), miss, Bytes::from_static(b"x"));
        let t = Instant::now();
        assert!(a.check_due(t));
        assert!(!a.check_due(t + CHECK_EVERY / 2));
        a.saw_log_size(5);
        assert_eq!(a.len(), 1, "the same size clears nothing");
        a.saw_log_size(4);
        assert_eq!(
            a.len(),
            1,
            "a size read before this process's own append clears nothing"
        );
        assert_eq!(a.log_size(), 5);
        assert!(a.check_due(t + CHECK_EVERY));
        a.saw_log_size(6);
        assert!(a.is_empty());
    }
}
