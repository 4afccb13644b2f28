//! The registry itself: what it accepts, under its policy, and the log every accepted item is appended to.
//!
//! One process writes a registry's log (a log has one sequencer): appends are serialized in memory, and the store's
//! `append_entry` refuses an append at a size it does not have, so a second writer on the same database fails
//! instead of forking the log.

use coset::cbor::Value;
use custos_proto::translog::{self, Checkpoint, NoteSigner, Proof, Tree};
use custos_proto::{Secret, cose};
use custos_store::{CertRow, NewLogEntry, RegistryStore, StatementRow, StoreError};
use pgp::composed::SignedPublicKey;
use pgp::ser::Serialize as _;
use tokio::sync::Mutex;

use crate::answers::{self, Answers};
use crate::cert::{self, Cert, CertError, Fpr};
use crate::policy::Policy;
use crate::public::Public;
use crate::statement::{Statement, StatementError, Status};

/// Log entry kinds (the first element of an entry).
pub mod kind {
    /// OpenPGP packets: a certificate as first accepted, or one certification added to it later.
    pub const CERT: u8 = 1;
    /// A signed statement (status or code identity), as submitted.
    pub const STATEMENT: u8 = 2;
}

/// How far in the future a statement's time may be, seconds: clocks disagree a little, but a status dated next
/// year would win over every honest one until then.
pub const MAX_CLOCK_SKEW: u64 = 300;

/// What went wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// A certificate is malformed or refused.
    #[error(transparent)]
    Cert(#[from] CertError),
    /// A statement is malformed or its signature does not verify.
    #[error(transparent)]
    Statement(#[from] StatementError),
    /// The policy does not allow it.
    #[error("refused: {0}")]
    Refused(String),
    /// No such thing.
    #[error("not found: {0}")]
    NotFound(&'static str),
    /// A proof was asked for sizes the log does not have.
    #[error("log: {0}")]
    Log(#[from] translog::LogError),
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

/// Result of registry operations.
pub type Result<T, E = RegistryError> = std::result::Result<T, E>;

/// The bytes of a log entry: the CBOR array `[kind, domain, added_at, data]` (docs/registry.md §4). The domain and
/// the time are in the leaf, so a log cannot move an entry to another domain or another date unnoticed.
pub fn entry_bytes(kind: u8, domain: &str, added_at: u64, data: &[u8]) -> Vec<u8> {
    let value = Value::Array(vec![
        Value::from(kind),
        Value::Text(domain.to_string()),
        Value::from(added_at),
        Value::Bytes(data.to_vec()),
    ]);
    // A CBOR array of an int, a text, an int and bytes always encodes.
    cose::to_cbor(&value).unwrap_or_default()
}

/// A decoded log entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// [`kind::CERT`] or [`kind::STATEMENT`].
    pub kind: u8,
    /// Its domain.
    pub domain: String,
    /// When the registry logged it.
    pub added_at: u64,
    /// OpenPGP packets or a COSE_Sign1.
    pub data: Vec<u8>,
}

impl Entry {
    /// Reads an entry's bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, StatementError> {
        let items = cose::array_from_cbor(bytes)
            .map_err(|_| StatementError::Malformed("log entry is not a CBOR array"))?;
        let [kind, domain, added_at, data] = items.as_slice() else {
            return Err(StatementError::Malformed("log entry has the wrong length"));
        };
        let kind = kind
            .as_integer()
            .and_then(|i| u8::try_from(i).ok())
            .filter(|k| [kind::CERT, kind::STATEMENT].contains(k))
            .ok_or(StatementError::Malformed("unknown log entry kind"))?;
        Ok(Self {
            kind,
            domain: domain
                .as_text()
                .ok_or(StatementError::Malformed("domain"))?
                .to_string(),
            added_at: added_at
                .as_integer()
                .and_then(|i| u64::try_from(i).ok())
                .ok_or(StatementError::Malformed("added_at"))?,
            data: data
                .as_bytes()
                .ok_or(StatementError::Malformed("data"))?
                .clone(),
        })
    }
}

/// What a submission did to one certificate.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Submitted {
    /// The certificate, 40 hex digits.
    pub fingerprint: String,
    /// The log indices of the entries appended (none if nothing was new).
    pub entries: Vec<u64>,
    /// Third-party certifications dropped: by unknown parties, parties not allowed to write the domain in the
    /// role they claim, or that do not verify.
    pub dropped: usize,
}

/// The status a subject has: the latest valid one by an authorized party, and the history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    /// The winning status and the log index that holds it.
    pub current: Option<(Statement, u64)>,
    /// Every valid status, oldest first, with its log index.
    pub history: Vec<(Statement, u64)>,
}

/// The index row an entry adds.
enum Indexed {
    Cert(CertRow),
    Statement(StatementRow),
}

/// An identity certificate server over a store.
pub struct Registry<S> {
    store: S,
    policy: Policy,
    origin: String,
    seed: Secret,
    tree: Mutex<Tree>,
    /// The parties' certificates as last read, by fingerprint: every certification and statement is checked
    /// against one. Dropped when a party's certificate changes.
    parties: std::sync::Mutex<std::collections::HashMap<Fpr, Cert>>,
    /// HKP answers as last served (crate::answers): lookups are the hot path.
    answers: Answers,
    /// Every certificate HKP serves, when they fit (crate::public); the answers hold what they leave of the budget.
    public: Public,
    /// The memory budget of HKP lookups, bytes.
    hkp_budget: usize,
}

impl<S> std::fmt::Debug for Registry<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

/// The origin line of a registry's checkpoints.
pub fn origin(name: &str) -> String {
    format!("custos-registry/{name}")
}

impl<S: RegistryStore> Registry<S> {
    /// Opens the registry: rebuilds its tree from the stored leaf hashes (two hashes per entry, about 0.3 s per
    /// million entries) and signs checkpoints with the Ed25519 key of `seed`.
    pub async fn open(store: S, policy: Policy, seed: Secret) -> Result<Self> {
        let origin = origin(&policy.name);
        NoteSigner::from_seed(&origin, &seed)?;
        let size = store.log_size().await?;
        let mut tree = Tree::new();
        const CHUNK: u64 = 100_000;
        let mut from = 0;
        while from < size {
            let to = (from + CHUNK).min(size);
            for h in store.leaf_hashes(from, to).await? {
                tree.append_hash(h);
            }
            from = to;
        }
        if tree.size() != size {
            return Err(RegistryError::Store(StoreError::Corrupt(
                "the log has gaps in its indices",
            )));
        }
        Ok(Self {
            store,
            policy,
            origin,
            seed,
            tree: Mutex::new(tree),
            parties: Default::default(),
            answers: Answers::new(answers::DEFAULT_BUDGET, size),
            public: Public::new(answers::DEFAULT_BUDGET),
            hkp_budget: answers::DEFAULT_BUDGET,
        })
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The log's origin, `custos-registry/<name>`.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The checkpoint verifier key, `<origin>+<key id>+<key>`: what a peer or a client pins.
    pub fn verifier_key(&self) -> Result<String> {
        Ok(NoteSigner::from_seed(&self.origin, &self.seed)?
            .verifier()
            .to_string())
    }

    /// The number of entries in the log.
    pub async fn size(&self) -> u64 {
        self.tree.lock().await.size()
    }

    /// The number of entries in the log, after taking in what another process appended.
    pub async fn size_now(&self) -> Result<u64> {
        self.catch_up().await?;
        Ok(self.size().await)
    }

    async fn append(
        &self,
        tree: &mut Tree,
        kind: u8,
        domain: &str,
        data: &[u8],
        now: u64,
        indexed: Indexed,
    ) -> Result<u64> {
        let cert_logged = matches!(indexed, Indexed::Cert(_));
        let (cert, statement) = match indexed {
            Indexed::Cert(c) => (Some(c), None),
            Indexed::Statement(st) => (None, Some(st)),
        };
        let bytes = entry_bytes(kind, domain, now, data);
        let leaf_hash = translog::leaf_hash(&bytes);
        let index = self
            .store
            .append_entry(
                &NewLogEntry {
                    kind,
                    data: data.to_vec(),
                    leaf_hash,
                    domain: domain.to_string(),
                    added_at: i64::try_from(now).map_err(|_| StoreError::InvalidInput("time"))?,
                    cert,
                    statement,
                },
                tree.size(),
            )
            .await?;
        tree.append_hash(leaf_hash);
        // After the write: a lookup that missed before it stores nothing it read (Answers::put).
        self.answers.logged(index + 1, cert_logged);
        self.public.logged(index + 1, cert_logged);
        Ok(index)
    }

    /// Sets the memory budget of HKP lookups in bytes (0: none; every lookup reads the store). Default: 64 MiB.
    /// The public certificates are held whole when they fit ([`Registry::hold_public`]), and what they leave holds
    /// answers as last served (crate::answers).
    pub fn with_answer_budget(mut self, bytes: usize) -> Self {
        self.answers = Answers::new(bytes, self.answers.log_size());
        self.public = Public::new(bytes);
        self.hkp_budget = bytes;
        self
    }

    /// Reads every certificate HKP may serve into memory, if they fit the budget (crate::public): what a serving
    /// registry does in the background at start. Until it is done, lookups read the store.
    pub async fn hold_public(&self) -> Result<()> {
        self.public.build(&self.store, &self.policy).await?;
        self.share_budget();
        Ok(())
    }

    /// The answers keep what the held certificates leave of the budget (after they changed).
    fn share_budget(&self) {
        self.answers
            .set_budget(self.hkp_budget.saturating_sub(self.public.bytes()));
    }

    /// Bytes the certificates in memory take (0 when they are not held).
    pub fn public_bytes(&self) -> usize {
        self.public.bytes()
    }

    /// The certificates in memory, brought up to the log first (crate::public).
    pub async fn public(&self) -> &Public {
        match self.public.catch_up(&self.store, &self.policy).await {
            Ok(false) => {}
            Ok(true) => self.share_budget(),
            Err(e) => {
                // Serving stale certificates is not an option, and failing every lookup on, say, one certificate
                // that does not parse is not either: the store answers from now on.
                tracing::warn!(
                    "the certificates held for HKP could not catch up with the log; no longer held: {e}"
                );
                self.public.drop_held();
                self.share_budget();
            }
        }
        &self.public
    }

    /// The HKP answer cache, after dropping what another process's writes to the store made stale: the store's log
    /// size is compared at most once a second (a larger one also has the held certificates catch up, at
    /// [`Registry::public`]).
    pub async fn answers(&self) -> Result<&Answers> {
        if self.hkp_budget > 0
            && self.answers.check_due(std::time::Instant::now())
            && self.answers.saw_log_size(self.store.log_size().await?)
        {
            self.public.saw_growth();
        }
        Ok(&self.answers)
    }

    /// Drops every HKP answer kept in memory, as logging a certificate does (to measure lookups that miss).
    pub fn forget_answers(&self) {
        self.answers.clear();
    }

    /// The stored certificate with this fingerprint (or subkey fingerprint, or key id), checked.
    pub async fn cert(&self, id: &[u8]) -> Result<Option<(Cert, String)>> {
        let Some(row) = self.store.cert_by_key(id).await? else {
            return Ok(None);
        };
        Ok(Some((cert::stored(&row.data)?, row.domain)))
    }

    /// The Ed25519 key of a party the policy names, if the registry holds its certificate (signed reads).
    pub async fn party_ed25519(&self, fpr: &Fpr) -> Result<Option<[u8; 32]>> {
        Ok(self.party_key(fpr).await?.map(|c| c.ed25519))
    }

    /// The party certificate of a signer the policy names, if the registry holds it.
    async fn party_key(&self, signer: &Fpr) -> Result<Option<Cert>> {
        if self.policy.party(signer).is_none() {
            return Ok(None);
        }
        if let Some(c) = self
            .parties
            .lock()
            .ok()
            .and_then(|p| p.get(signer).cloned())
        {
            return Ok(Some(c));
        }
        let found = self.cert(signer).await?.map(|(c, _)| c);
        if let (Some(c), Ok(mut cache)) = (&found, self.parties.lock()) {
            cache.insert(*signer, c.clone());
        }
        Ok(found)
    }

    /// Takes certificates (a keyring, armored or binary): what `/pks/add` and `custos registry add` post.
    ///
    /// A certificate is accepted if it is a party's (named in the policy) or carries at least one certification by
    /// a party allowed to write its domain in the role it claims; every other third-party certification is dropped
    /// (the certificate-flooding defence). New certificates are logged whole; to a known certificate, each new
    /// certification is logged as its own entry.
    pub async fn submit_certs(
        &self,
        bytes: &[u8],
        domain: Option<&str>,
        now: u64,
    ) -> Result<Vec<Submitted>> {
        let mut out = Vec::new();
        for raw in cert::parse_many(bytes)? {
            out.push(match self.submit_cert(raw.clone(), domain, now).await {
                Err(RegistryError::Store(StoreError::LogConflict { .. })) => {
                    self.catch_up().await?;
                    self.submit_cert(raw, domain, now).await?
                }
                other => other?,
            });
        }
        Ok(out)
    }

    /// Takes into the in-memory tree what another process appended to the log (`custos registry sync` run
    /// beside the server, say): after it, a submission that lost the race is tried again on the current state.
    async fn catch_up(&self) -> Result<()> {
        let mut tree = self.tree.lock().await;
        let size = self.store.log_size().await?;
        if size > tree.size() {
            for h in self.store.leaf_hashes(tree.size(), size).await? {
                tree.append_hash(h);
            }
            // Another process logged something: answers may be stale.
            if self.answers.saw_log_size(size) {
                self.public.saw_growth();
            }
        }
        Ok(())
    }

    async fn submit_cert(
        &self,
        raw: SignedPublicKey,
        domain: Option<&str>,
        now: u64,
    ) -> Result<Submitted> {
        // What is posted may be only a part of a known certificate (a log entry of one certification is the primary
        // key, the User ID and the signature, without the self-signature): it is checked merged with what is held.
        let mut tree = self.tree.lock().await;
        let existing = self.store.cert(cert::fpr(&raw.primary_key)).await?;
        let raw = match &existing {
            Some(row) => cert::merge(&cert::parse(&row.data)?, &raw)?,
            None => raw,
        };
        let checked = cert::check(raw)?;
        let domain = match (&existing, domain) {
            (Some(row), _) => row.domain.clone(),
            (None, Some(d)) => d.to_string(),
            (None, None) => self.policy.default_domain.clone(),
        };
        if self.policy.domain(&domain).is_none() {
            return Err(RegistryError::Refused(format!("no domain {domain}")));
        }
        let mut kept = Vec::new();
        for c in &checked.certifications {
            if !self.policy.may_write(&c.signer, &domain, &c.claims.role) {
                continue;
            }
            let Some(signer) = self.party_key(&c.signer).await? else {
                continue;
            };
            if cert::verify_certification(&checked, c, &signer.cert.primary_key).is_ok() {
                kept.push(c);
            }
        }
        let dropped = checked.certifications.len() - kept.len();
        let is_party = self.policy.party(&checked.fingerprint).is_some();
        let clean = cert::keep_certifications(&checked, &kept)?;
        let fingerprint = hex::encode_upper(checked.fingerprint);
        let row = |data: &SignedPublicKey, c: &Cert| -> Result<CertRow> {
            Ok(CertRow {
                fingerprint: c.fingerprint,
                domain: domain.clone(),
                data: cert::to_bytes(data)?,
                keys: c.keys.clone(),
                uids: c.user_ids.clone(),
                updated_at: i64::try_from(now).unwrap_or(i64::MAX),
            })
        };
        let mut entries = Vec::new();
        match existing {
            None => {
                if kept.is_empty() && !is_party {
                    return Err(RegistryError::Refused(format!(
                        "{fingerprint}: not certified by a party that may write to domain {domain}"
                    )));
                }
                let data = cert::to_bytes(&clean)?;
                let r = row(&clean, &checked)?;
                entries.push(
                    self.append(&mut tree, kind::CERT, &domain, &data, now, Indexed::Cert(r))
                        .await?,
                );
            }
            Some(stored) => {
                let ours = cert::stored(&stored.data)?;
                let merged = cert::merge(&ours.cert, &clean)?;
                let merged_checked = cert::check(merged.clone())?;
                let have: Vec<Vec<u8>> = ours
                    .certifications
                    .iter()
                    .map(|c| c.signature.to_bytes().unwrap_or_default())
                    .collect();
                let new: Vec<_> = kept
                    .iter()
                    .filter(|c| !have.contains(&c.signature.to_bytes().unwrap_or_default()))
                    .collect();
                // Anything else new (a User ID, a subkey, a revocation) is logged as the whole merged certificate.
                let others_changed = {
                    let mut without = ours.cert.clone();
                    for c in &new {
                        if let Some(u) = without
                            .details
                            .users
                            .iter_mut()
                            .find(|u| u.id.as_str() == Some(c.user_id.as_str()))
                        {
                            u.signatures.push(c.signature.clone());
                        }
                    }
                    cert::to_bytes(&without)? != cert::to_bytes(&merged)?
                };
                for c in &new {
                    let data = cert::certification_packets(&merged, c)?;
                    let r = row(&merged, &merged_checked)?;
                    entries.push(
                        self.append(&mut tree, kind::CERT, &domain, &data, now, Indexed::Cert(r))
                            .await?,
                    );
                }
                if others_changed {
                    let data = cert::to_bytes(&merged)?;
                    let r = row(&merged, &merged_checked)?;
                    entries.push(
                        self.append(&mut tree, kind::CERT, &domain, &data, now, Indexed::Cert(r))
                            .await?,
                    );
                }
            }
        }
        if is_party
            && !entries.is_empty()
            && let Ok(mut cache) = self.parties.lock()
        {
            cache.remove(&checked.fingerprint);
        }
        Ok(Submitted {
            fingerprint,
            entries,
            dropped,
        })
    }

    /// Takes a signed statement: its signer must be a party allowed to write the statement's domain (a developer,
    /// for a code identity), its signature must verify with that party's certificate, its time must not be ahead
    /// of ours by more than [`MAX_CLOCK_SKEW`], and a status must be about a certificate or code identity of that
    /// domain.
    pub async fn submit_statement(&self, bytes: &[u8], now: u64) -> Result<u64> {
        Ok(self.submit_statement_inner(bytes, now).await?.0)
    }

    /// As [`Registry::submit_statement`], saying whether it was new (a statement already in the log is not logged
    /// again: sync sends statements back and forth).
    pub async fn submit_statement_new(&self, bytes: &[u8], now: u64) -> Result<bool> {
        Ok(self.submit_statement_inner(bytes, now).await?.1)
    }

    async fn submit_statement_inner(&self, bytes: &[u8], now: u64) -> Result<(u64, bool)> {
        match self.try_statement(bytes, now).await {
            Err(RegistryError::Store(StoreError::LogConflict { .. })) => {
                self.catch_up().await?;
                self.try_statement(bytes, now).await
            }
            other => other,
        }
    }

    async fn try_statement(&self, bytes: &[u8], now: u64) -> Result<(u64, bool)> {
        let claimed = Statement::read_unverified(bytes)?;
        let signer = claimed.signer();
        let party = self.policy.party(&signer).ok_or_else(|| {
            RegistryError::Refused("the signer is not a party of this registry".into())
        })?;
        let key = self.party_key(&signer).await?.ok_or_else(|| {
            RegistryError::Refused("the signer's certificate is not in this registry".into())
        })?;
        let statement = Statement::verify(bytes, &key.ed25519)?;
        if statement.issued_at() > now.saturating_add(MAX_CLOCK_SKEW) {
            return Err(RegistryError::Refused(
                "the statement is dated in the future".into(),
            ));
        }
        let domain = statement.domain().to_string();
        let allowed = match &statement {
            Statement::Code { .. } => self.policy.may_write(&signer, &domain, "developer"),
            Statement::Status { .. } => party
                .roles
                .iter()
                .any(|r| self.policy.may_write(&signer, &domain, r)),
        };
        if !allowed {
            return Err(RegistryError::Refused(format!(
                "party {} may not write to domain {domain}",
                party.name
            )));
        }
        if let Statement::Status { subject, .. } = &statement {
            let subject_domain = if subject.len() == 20 {
                self.store
                    .cert(subject.as_slice().try_into().unwrap_or([0; 20]))
                    .await?
                    .map(|r| r.domain)
            } else {
                self.store
                    .statements(subject)
                    .await?
                    .into_iter()
                    .find(|s| s.row.kind == 2)
                    .and_then(|s| Statement::read_unverified(&s.data).ok())
                    .map(|s| s.domain().to_string())
            };
            match subject_domain {
                None => {
                    return Err(RegistryError::NotFound(
                        "no certificate or code identity with that subject",
                    ));
                }
                Some(d) if d != domain => {
                    return Err(RegistryError::Refused(format!(
                        "the subject is in domain {d}, the status names {domain}"
                    )));
                }
                Some(_) => {}
            }
        }
        let row = StatementRow {
            subject: statement.subject().to_vec(),
            kind: statement.kind(),
            signer,
            issued_at: i64::try_from(statement.issued_at())
                .map_err(|_| StoreError::InvalidInput("time"))?,
            status: match &statement {
                Statement::Status { status, .. } => Some(*status as u8),
                Statement::Code { .. } => None,
            },
        };
        let mut tree = self.tree.lock().await;
        if let Some(known) = self
            .store
            .statements(statement.subject())
            .await?
            .into_iter()
            .find(|s| s.data == bytes)
        {
            return Ok((known.index, false));
        }
        let index = self
            .append(
                &mut tree,
                kind::STATEMENT,
                &domain,
                bytes,
                now,
                Indexed::Statement(row),
            )
            .await?;
        Ok((index, true))
    }

    /// The statuses of a subject (a certificate fingerprint or a code digest): every stored status that still
    /// verifies and whose signer the policy still allows, and the latest of them (by its time, then by log order).
    pub async fn status(&self, subject: &[u8]) -> Result<Resolved> {
        let mut history = Vec::new();
        for s in self.store.statements(subject).await? {
            if s.row.kind != 1 {
                continue;
            }
            let Some(party) = self.policy.party(&s.row.signer) else {
                continue;
            };
            let Some(key) = self.party_key(&s.row.signer).await? else {
                continue;
            };
            let Ok(statement) = Statement::verify(&s.data, &key.ed25519) else {
                continue;
            };
            if party
                .roles
                .iter()
                .any(|r| self.policy.may_write(&s.row.signer, statement.domain(), r))
            {
                history.push((statement, s.index));
            }
        }
        history.sort_by_key(|(s, i)| (s.issued_at(), *i));
        Ok(Resolved {
            current: history.last().cloned(),
            history,
        })
    }

    /// The code identities of an image's digest, by developers the policy allows, with their log indices.
    pub async fn code_identities(&self, digest: &[u8; 32]) -> Result<Vec<(Statement, u64)>> {
        let mut out = Vec::new();
        for s in self.store.statements(digest).await? {
            if s.row.kind != 2 {
                continue;
            }
            let Some(key) = self.party_key(&s.row.signer).await? else {
                continue;
            };
            if let Ok(st) = Statement::verify(&s.data, &key.ed25519)
                && self
                    .policy
                    .may_write(&s.row.signer, st.domain(), "developer")
            {
                out.push((st, s.index));
            }
        }
        Ok(out)
    }

    /// Whether a subject's current status is one of `bad`.
    pub async fn has_status(&self, subject: &[u8], bad: &[Status]) -> Result<bool> {
        Ok(self.status(subject).await?.current.is_some_and(
            |(s, _)| matches!(s, Statement::Status { status, .. } if bad.contains(&status)),
        ))
    }

    /// A signed checkpoint of the log as it is now (stored, so that the registry can show what it signed).
    pub async fn checkpoint(&self) -> Result<String> {
        self.catch_up().await?;
        let tree = self.tree.lock().await;
        let size = tree.size();
        let root = translog::root(&*tree, size)?;
        drop(tree);
        let signer = NoteSigner::from_seed(&self.origin, &self.seed)?;
        let note = signer.sign_checkpoint(&Checkpoint::new(&self.origin, size, root)?)?;
        self.store.put_checkpoint(size, note.as_bytes()).await?;
        Ok(note)
    }

    /// The inclusion proof of entry `index` in the log of size `size`.
    pub async fn inclusion(&self, index: u64, size: u64) -> Result<Proof> {
        self.catch_up().await?;
        let tree = self.tree.lock().await;
        Ok(translog::inclusion_proof(&*tree, index, size)?)
    }

    /// The consistency proof between the log at size `old` and at size `new`.
    pub async fn consistency(&self, old: u64, new: u64) -> Result<Proof> {
        self.catch_up().await?;
        let tree = self.tree.lock().await;
        Ok(translog::consistency_proof(&*tree, old, new)?)
    }

    /// The root of the log at a size it has had.
    pub async fn root(&self, size: u64) -> Result<[u8; 32]> {
        self.catch_up().await?;
        let tree = self.tree.lock().await;
        Ok(translog::root(&*tree, size)?)
    }
}
