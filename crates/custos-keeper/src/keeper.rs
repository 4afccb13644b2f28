//! The keeper over its state directory: the vault, the devices it provisioned, the policy, the consent log, the
//! requests waiting for the user, and the answers not yet delivered.
//!
//! Layout (all owner-only): `vault.json` (master secret and signing key, encrypted), `devices.json` (each
//! device's DPK epochs: tree and suite), `apps.json` (application names the user pinned to their keys),
//! `policy.toml` (optional; without it every request is asked), `consent.log` and `consent.head`, `pending/`
//! (requests the user has not decided: `{id}.cose`) and `outbox/` (signed answers not yet accepted by the hub).
//!
//! Every decision is appended to the consent log before its answer leaves, and an answer stays in `outbox/`
//! until the hub has it: a keeper that stops at any point loses no request and no answer, and never answers one
//! request twice.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use custos_client::ClientError;
use custos_proto::sharing::{
    AccessToken, Denial, Grant, GrantedTree, SharingRequest, VerifiedRequest, statement_id,
};
use custos_proto::{
    DeviceId, Epoch, NodeId, RustCrypto, Schedule, Secret, Span, Suite, TreeSpec, UnixTime,
};
use custos_vault::{SoftwareVault, Vault, VaultError, fsio};
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::consent::{ConsentError, ConsentLog, DecidedBy, Head, NewEntry, Outcome};
use crate::policy::{Action, Policy, PolicyError, Query, range_days};

/// What can go wrong in the keeper.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeeperError {
    /// The vault.
    #[error(transparent)]
    Vault(#[from] VaultError),
    /// The consent log.
    #[error(transparent)]
    Consent(#[from] ConsentError),
    /// The policy file.
    #[error("policy.toml: {0}")]
    Policy(#[from] PolicyError),
    /// A state file.
    #[error("{path}: {why}")]
    State {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// A request, grant or key operation failed its checks.
    #[error("{0}")]
    Protocol(#[from] custos_proto::Error),
    /// No pending request with that id.
    #[error("no pending request {0}; `custos keeper inbox` lists them")]
    NotPending(String),
    /// The device is not one of this keeper's.
    #[error("device {0} is not one of this keeper's devices; provision it first")]
    UnknownDevice(DeviceId),
    /// The hub could not be reached or refused.
    #[error("hub: {0}")]
    Hub(String),
    /// The keeper holds no control key for the device (neither paired by it nor shared with it).
    #[error(
        "this keeper cannot control device {0}: pair it (`custos keeper pair`) or have its owner share it"
    )]
    NoControl(DeviceId),
    /// The keeper is not the device's owner's (it did not pair the device).
    #[error("only the keeper that paired device {0} can do that")]
    NotOwner(DeviceId),
    /// The device did not answer in time (its message may still wait at the hub).
    #[error("no answer from device {device}: {why}")]
    NoAnswer {
        /// The device.
        device: DeviceId,
        /// What the hub said about it.
        why: String,
    },
    /// An answer that does not authenticate as the device's: the hub (or someone on the way) made it up or
    /// altered it. Nothing in it is believed.
    #[error("the answer said to be from device {device} is not authentic ({why}); it is ignored")]
    ForgedAnswer {
        /// The device.
        device: DeviceId,
        /// Why it was refused.
        why: String,
    },
    /// A share code that is not one (`custos-share-1:<device>:<sender>:<key>`).
    #[error("not a share code: expected custos-share-1:<device hex>:<sender>:<64 hex digits>")]
    BadShareCode,
}

type Result<T, E = KeeperError> = std::result::Result<T, E>;

fn state_err(path: &Path, why: impl ToString) -> KeeperError {
    KeeperError::State {
        path: path.to_path_buf(),
        why: why.to_string(),
    }
}

/// One DPK epoch of a device, as the keeper provisioned it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct EpochRecord {
    /// The DPK epoch.
    pub epoch: u16,
    /// The schedule, in its text form.
    pub schedule: String,
    /// The epoch's span, Unix seconds.
    pub from: u64,
    /// The end of the span (exclusive).
    pub until: u64,
    /// The record suite's name.
    pub suite: String,
}

impl EpochRecord {
    /// The tree of `device` in this epoch.
    pub fn spec(&self, device: DeviceId) -> Result<TreeSpec, custos_proto::Error> {
        let schedule: Schedule = self.schedule.parse()?;
        TreeSpec::new(
            device,
            Epoch(self.epoch),
            schedule,
            Span::new(UnixTime::new(self.from)?, UnixTime::new(self.until)?)?,
        )
    }

    /// The suite.
    pub fn suite(&self) -> Result<Suite, custos_proto::Error> {
        Suite::from_name(&self.suite).ok_or(custos_proto::Error::InvalidValue("unknown suite"))
    }
}

/// A request waiting for the user, as `custos keeper inbox` shows it.
#[derive(Clone, Debug)]
pub struct Pending {
    /// The request id, hex.
    pub id: String,
    /// The checked request.
    pub request: VerifiedRequest,
    /// The name the keeper knows the application by (pinned to its key), if any.
    pub known_as: Option<String>,
    /// What the policy said (always `Ask` for a pending request) and why.
    pub reason: String,
}

/// What became of one request during a sync.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Handled {
    /// Granted by policy: node secrets sent.
    Granted {
        /// Request id, hex.
        id: String,
        /// How many node secrets.
        nodes: usize,
        /// Who decided.
        by: String,
    },
    /// Denied by policy.
    Denied {
        /// Request id, hex.
        id: String,
        /// Why.
        reason: String,
    },
    /// Waiting for the user.
    Asked {
        /// Request id, hex.
        id: String,
        /// Why the policy asks.
        reason: String,
    },
    /// Refused without an answer (forged, expired, replayed, or for another owner).
    Refused {
        /// Request id, hex.
        id: String,
        /// Why.
        reason: String,
    },
}

/// What one sync with the hub did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Each request taken from the inbox, and what became of it.
    pub handled: Vec<Handled>,
    /// Answers delivered to the hub (including ones left over from before).
    pub delivered: usize,
}

/// The keeper.
pub struct Keeper {
    dir: PathBuf,
    vault: Box<dyn Vault>,
    policy: Policy,
    log: ConsentLog,
    devices: BTreeMap<String, Vec<EpochRecord>>,
    apps: BTreeMap<String, String>,
    trust: custos_client::TlsTrust,
    /// The client of the last hub called, kept so that its connection (and TLS session) is reused from one call
    /// to the next: a fresh client per call costs a TCP and TLS handshake each time (see docs/benchmarks.md,
    /// "Owner control"). Dropped when the trust changes.
    client: std::sync::Mutex<Option<custos_client::HubClient>>,
}

fn read_json<T: for<'de> Deserialize<'de> + Default>(path: &Path) -> Result<T> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| state_err(path, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
        Err(e) => Err(state_err(path, e)),
    }
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| state_err(path, e))?;
    Ok(fsio::replace(path, &bytes)?)
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Keeper {
    /// Makes a new keeper in `dir` with a fresh vault, unlocked by `unlock`.
    pub fn init(
        dir: &Path,
        unlock: custos_vault::Unlock<'_>,
        kdf: custos_vault::KdfParams,
    ) -> Result<Self> {
        private_dir(dir)?;
        SoftwareVault::create(&dir.join("vault.json"), unlock, kdf, &mut OsRng)?;
        Self::open(dir, unlock)
    }

    /// Opens the keeper in `dir`. Refuses a consent log that was cut short (the pinned head is missing from it).
    pub fn open(dir: &Path, unlock: custos_vault::Unlock<'_>) -> Result<Self> {
        let vault = SoftwareVault::open(&dir.join("vault.json"), unlock)?;
        Self::with_vault(dir, Box::new(vault))
    }

    /// Opens the keeper's state in `dir` around an already opened vault (a TPM-backed one, say).
    pub fn with_vault(dir: &Path, vault: Box<dyn Vault>) -> Result<Self> {
        let owner = vault.signing_public();
        let policy = read_policy(dir)?;
        let log = ConsentLog::open(dir.join("consent.log"), owner)?;
        let head_path = dir.join("consent.head");
        if let Some(pinned) = read_json::<Option<HeadFile>>(&head_path)? {
            let mut hash = [0u8; 32];
            hex::decode_to_slice(&pinned.hash, &mut hash).map_err(|e| state_err(&head_path, e))?;
            log.check_head(&Head {
                seq: pinned.seq,
                hash,
            })?;
        }
        for sub in ["pending", "outbox"] {
            let p = dir.join(sub);
            private_dir(&p)?;
        }
        let keeper = Self {
            dir: dir.to_path_buf(),
            vault,
            policy,
            log,
            devices: read_json(&dir.join("devices.json"))?,
            apps: read_json(&dir.join("apps.json"))?,
            trust: custos_client::tls::remembered(dir, None).map_err(hub_err)?,
            client: std::sync::Mutex::new(None),
        };
        keeper.settle_staged()?;
        Ok(keeper)
    }

    /// Trusts the hub's certificate as `trust` says from now on. A pinned fingerprint is also remembered in the
    /// keeper's directory (`hub-fingerprint`), so that later commands need not be told again; a CA file is for
    /// this keeper only while it is open.
    pub fn set_hub_trust(&mut self, trust: custos_client::TlsTrust) -> Result<()> {
        self.trust = custos_client::tls::remembered(&self.dir, Some(trust)).map_err(hub_err)?;
        *self
            .client
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
        Ok(())
    }

    /// How this keeper trusts the hub's certificate.
    pub fn hub_trust(&self) -> &custos_client::TlsTrust {
        &self.trust
    }

    /// A client for `hub`; long-polls get their wait on top of the timeout. The same one (sharing its pool of
    /// connections) for as long as the calls go to the same hub.
    pub(crate) fn client(&self, hub: &str) -> Result<custos_client::HubClient> {
        // A poisoned lock only means another thread panicked while swapping the cached client: the cache
        // holds either the old client or none, and both are fine to use or replace.
        let mut cached = self
            .client
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(c) = cached
            .as_ref()
            .filter(|c| c.base() == hub.trim_end_matches('/'))
        {
            return Ok(c.clone());
        }
        let c = custos_client::HubClient::new(hub, std::time::Duration::from_secs(30), &self.trust)
            .map_err(hub_err)?;
        *cached = Some(c.clone());
        Ok(c)
    }

    /// The owner id: the keeper's Ed25519 public key. Applications address their requests to it.
    pub fn owner(&self) -> [u8; 32] {
        self.vault.signing_public()
    }

    /// The keeper's control state: user–device keys, members, command counters (sealed by the vault).
    pub fn control(&self) -> Result<crate::control::ControlBook<'_>> {
        crate::control::ControlBook::open(&self.dir, &*self.vault)
    }

    /// The consent log.
    pub fn log(&self) -> &ConsentLog {
        &self.log
    }

    /// The policy in force.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The devices and their DPK epochs.
    pub fn devices(&self) -> &BTreeMap<String, Vec<EpochRecord>> {
        &self.devices
    }

    /// Registers a new DPK epoch for `device` and returns what to provision it with: the epoch's tree and the
    /// forward-secure frontier at `now` (the device never gets secrets of time before `now`).
    pub fn new_epoch(
        &mut self,
        spec: TreeSpec,
        suite: Suite,
        now: UnixTime,
    ) -> Result<custos_proto::pairing::Provision> {
        let provision = self.prepare_epoch(spec, suite, now)?;
        self.register_epoch(&spec, suite)?;
        Ok(provision)
    }

    /// The provisioning for a DPK epoch not registered yet (refused if it is: DPKs are never reused).
    fn prepare_epoch(
        &self,
        spec: TreeSpec,
        suite: Suite,
        now: UnixTime,
    ) -> Result<custos_proto::pairing::Provision> {
        let used = self
            .devices
            .get(&spec.device().to_string())
            .is_some_and(|e| e.iter().any(|e| e.epoch == spec.epoch().0));
        if used {
            return Err(custos_proto::Error::InvalidValue(
                "this device already has that DPK epoch; DPKs are never reused",
            )
            .into());
        }
        let root = self.vault.derive(&spec, NodeId::ROOT)?;
        Ok(custos_proto::pairing::Provision::frontier(
            &RustCrypto,
            spec,
            suite,
            core::slice::from_ref(&root),
            now,
        )?)
    }

    fn register_epoch(&mut self, spec: &TreeSpec, suite: Suite) -> Result<()> {
        self.devices
            .entry(spec.device().to_string())
            .or_default()
            .push(EpochRecord {
                epoch: spec.epoch().0,
                schedule: spec.schedule().to_string(),
                from: spec.span().start().secs(),
                until: spec.span().end().secs(),
                suite: suite.name().unwrap_or("aes256gcm").into(),
            });
        write_json(&self.dir.join("devices.json"), &self.devices)
    }

    /// Pairs with `device` through the hub's relay, keyed by the device's owner code (Noise NNpsk0), and
    /// provisions it with the new DPK epoch `spec` over that channel; the device keeps only the frontier at `now`.
    /// Rotating to a new epoch is the same call with the next epoch. The hub relays ciphertext only.
    pub async fn pair(
        &mut self,
        hub: &str,
        spec: TreeSpec,
        suite: Suite,
        owner_code: &[u8; 16],
        now: UnixTime,
        timeout: std::time::Duration,
    ) -> Result<Paired> {
        use custos_client::Direction;
        use custos_proto::pairing::KeeperAwaitingAccept;
        let device = spec.device();
        let provision = self.prepare_epoch(spec, suite, now)?;
        let client = self.client(hub)?;
        let deadline = tokio::time::Instant::now() + timeout;
        // Only answers that arrive after our PairInit count: start past everything in the mailbox now.
        let mut cursor = client
            .relay_recv(
                device,
                Direction::ToKeeper,
                0,
                std::time::Duration::ZERO,
                None,
            )
            .await
            .map_err(hub_err)?
            .last()
            .map_or(0, |(seq, _)| *seq);
        // Anyone may post to a mailbox. Each message is tried against a handshake state rebuilt from the same
        // ephemeral key (the start is deterministic), so junk, or an answer to an earlier attempt, is skipped
        // without losing this attempt.
        let mut ephemeral = Zeroizing::new([0u8; 32]);
        OsRng.fill_bytes(ephemeral.as_mut());
        let attempt =
            || KeeperAwaitingAccept::start(device, owner_code, Secret::from_bytes(*ephemeral));
        let (_, init) = attempt()?;
        // The hub relays only while the device waits for its keeper: until it does, try again every second.
        loop {
            match client.relay_send(device, Direction::ToDevice, &init).await {
                Ok(_) => break,
                Err(custos_client::ClientError::Refused { code, message, .. })
                    if code == "forbidden" =>
                {
                    let e = message;
                    if tokio::time::Instant::now() >= deadline {
                        return Err(KeeperError::Hub(format!(
                            "device {device} is not waiting for its keeper: start it (`custos device run`, with \
                             --pair to rotate) and pair again ({e})"
                        )));
                    }
                    tracing::debug!(%device, %e, "the device does not wait for pairing yet");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
                Err(e) => return Err(hub_err(e)),
            }
        }
        let mut paired = loop {
            let msg = next_message(&client, device, &mut cursor, deadline).await?;
            match attempt()?.0.read_accept(&msg) {
                Ok(p) => break p,
                Err(e) => {
                    tracing::warn!(%device, %e, "skipping a relayed message that is not the device's answer")
                }
            }
        };
        let sealed = paired.seal_provision(&provision)?;
        client
            .relay_send(device, Direction::ToDevice, &sealed)
            .await
            .map_err(hub_err)?;
        loop {
            let msg = next_message(&client, device, &mut cursor, deadline).await?;
            if paired.open_ack(&msg).is_ok() {
                break;
            }
        }
        self.register_epoch(&spec, suite)?;
        // The device took the new user–device key with this Provision; from now on only it opens commands.
        self.control()?
            .set_user_device_key(device, paired.user_device_key())?;
        Ok(Paired {
            device,
            epoch: spec.epoch().0,
            secrets: provision.nodes().len(),
        })
    }

    /// The secret of `node` in `spec`'s tree, derived in the vault: what an audit needs to look for leaked keys
    /// (the demo scans the hub's store for every one). The master secret itself never leaves the vault.
    pub fn node_secret(&self, spec: &TreeSpec, node: NodeId) -> Result<custos_proto::NodeSecret> {
        Ok(self.vault.derive(spec, node)?)
    }

    /// The next unused DPK epoch number of `device`.
    pub fn next_epoch(&self, device: DeviceId) -> u16 {
        self.devices
            .get(&device.to_string())
            .and_then(|e| e.iter().map(|r| r.epoch).max())
            .map_or(1, |m| m.saturating_add(1))
    }

    fn sign(&self) -> impl FnOnce(&[u8]) -> [u8; 64] + '_ {
        // The vault signs; a failure here (a TPM gone away) yields a signature that verifies nothing, and every
        // caller checks what it signed before it is used (the consent log verifies its entries).
        move |tbs| self.vault.sign(tbs).unwrap_or([0; 64])
    }

    /// The name to match policy rules by: the name the user pinned to this key, if any. A name a request merely
    /// claims matches no name rule: anyone can sign a request under any name.
    fn known_name(&self, request: &SharingRequest) -> Option<String> {
        self.apps.get(&hex::encode(request.app_key)).cloned()
    }

    /// Pins `name` to the application key `key`: from now on policy rules naming `name` apply to requests signed
    /// with `key`, and to no other. Refused if the name or the key is already pinned to another.
    pub fn trust_app(&mut self, name: &str, key: [u8; 32]) -> Result<()> {
        let hex_key = hex::encode(key);
        match self.apps.get(&hex_key) {
            Some(n) if n == name => return Ok(()),
            Some(n) => {
                return Err(KeeperError::State {
                    path: self.dir.join("apps.json"),
                    why: format!("key {}… is already pinned to \"{n}\"", &hex_key[..16]),
                });
            }
            None => {}
        }
        if let Some((k, _)) = self.apps.iter().find(|(_, n)| *n == name) {
            return Err(KeeperError::State {
                path: self.dir.join("apps.json"),
                why: format!("\"{name}\" is already pinned to key {}…", &k[..16]),
            });
        }
        self.apps.insert(hex_key, name.into());
        write_json(&self.dir.join("apps.json"), &self.apps)
    }

    /// The applications the user trusts: key (hex) → name.
    pub fn trusted_apps(&self) -> &BTreeMap<String, String> {
        &self.apps
    }

    fn already_decided(&self, id: &[u8; 32]) -> bool {
        self.log.entries().iter().any(|e| e.body.request == *id)
    }

    /// Checks a request that arrived for this keeper: signature, expiry, addressee, replay, devices.
    fn check(&self, bytes: &[u8], now: UnixTime) -> Result<VerifiedRequest, String> {
        let v = SharingRequest::verify(&RustCrypto, bytes, now).map_err(|e| e.to_string())?;
        if v.request.owner != self.owner() {
            return Err("addressed to another owner".into());
        }
        if self.already_decided(&v.id) {
            return Err("already decided (a replay)".into());
        }
        if let Some(d) = v
            .request
            .devices
            .iter()
            .find(|d| !self.devices.contains_key(&d.to_string()))
        {
            return Err(format!("device {d} is not one of this keeper's"));
        }
        Ok(v)
    }

    /// The secrets for `range` of the request's devices: per device and epoch, the minimal cover of the part of
    /// the range, rounded inward to whole leaves, that the epoch spans. Never more than asked.
    fn trees(&self, request: &SharingRequest, range: Span) -> Result<Vec<GrantedTree>> {
        let mut trees = Vec::new();
        for device in &request.devices {
            let epochs = self
                .devices
                .get(&device.to_string())
                .ok_or(KeeperError::UnknownDevice(*device))?;
            for e in epochs {
                let spec = e.spec(*device)?;
                let Some(part) = range.intersect(spec.span()) else {
                    continue;
                };
                let Some(part) = round_inward(&spec, part)? else {
                    continue;
                };
                let nodes = spec
                    .cover(part)?
                    .map(|n| self.vault.derive(&spec, n))
                    .collect::<Result<Vec<_>, _>>()?;
                trees.push(GrantedTree { spec, nodes });
            }
        }
        Ok(trees)
    }

    fn entry(
        v: &VerifiedRequest,
        name: &str,
        now: UnixTime,
        outcome: Outcome,
        by: DecidedBy,
    ) -> NewEntry {
        let r = &v.request;
        NewEntry {
            time: now.secs(),
            request: v.id,
            app_name: name.into(),
            app_key: r.app_key,
            devices: r.devices.clone(),
            from: r.range.start().secs(),
            until: r.range.end().secs(),
            outcome,
            purpose: r.purpose.clone(),
            purpose_text: r.purpose_text.clone(),
            retention: r.retention,
            decided_by: by,
        }
    }

    /// Logs the decision, pins the new head, and queues the signed answer for the hub.
    ///
    /// The answer is staged first (`outbox/{id}.staged`), then the decision is logged, then the answer is moved
    /// into the outbox. A crash in between is settled when the keeper opens: a staged answer whose decision is in
    /// the log goes to the outbox; one whose decision is not is dropped, and the request, still unanswered at the
    /// hub, is considered again. So no answer leaves without its log entry, and none is lost.
    fn record(&mut self, entry: NewEntry, answer: &[u8]) -> Result<()> {
        let id = hex::encode(entry.request);
        let staged = self.dir.join("outbox").join(format!("{id}.staged"));
        fsio::replace(&staged, answer)?;
        let vault = &self.vault;
        self.log
            .append(entry, |tbs| vault.sign(tbs).unwrap_or([0; 64]))?;
        if let Some(head) = self.log.head() {
            write_json(
                &self.dir.join("consent.head"),
                &Some(HeadFile {
                    seq: head.seq,
                    hash: hex::encode(head.hash),
                }),
            )?;
        }
        let queued = self.dir.join("outbox").join(format!("{id}.cose"));
        fs::rename(&staged, &queued).map_err(|e| state_err(&queued, e))?;
        let _ = fs::remove_file(self.dir.join("pending").join(format!("{id}.cose")));
        Ok(())
    }

    /// Settles answers a crash left staged (see [`Keeper::record`]).
    fn settle_staged(&self) -> Result<()> {
        let dir = self.dir.join("outbox");
        for entry in fs::read_dir(&dir).map_err(|e| state_err(&dir, e))? {
            let path = entry.map_err(|e| state_err(&dir, e))?.path();
            if path.extension().is_none_or(|x| x != "staged") {
                continue;
            }
            let mut id = [0u8; 32];
            let logged = path
                .file_stem()
                .and_then(|s| s.to_str())
                .is_some_and(|s| hex::decode_to_slice(s, &mut id).is_ok())
                && self.already_decided(&id);
            if logged {
                let queued = path.with_extension("cose");
                fs::rename(&path, &queued).map_err(|e| state_err(&queued, e))?;
            } else {
                fs::remove_file(&path).map_err(|e| state_err(&path, e))?;
            }
        }
        Ok(())
    }

    /// Grants `v` for `range` (the request's, or less), signed, logged and queued.
    fn grant(
        &mut self,
        v: &VerifiedRequest,
        name: &str,
        range: Span,
        by: DecidedBy,
        now: UnixTime,
    ) -> Result<Handled> {
        let trees = self.trees(&v.request, range)?;
        let nodes: usize = trees.iter().map(|t| t.nodes.len()).sum();
        if nodes == 0 {
            return self.deny(v, name, "no data keys cover that range", by, now);
        }
        let (mut from, mut until) = (u64::MAX, 0u64);
        for t in &trees {
            for n in &t.nodes {
                let span = t.spec.node_span(n.node())?;
                from = from.min(span.start().secs());
                until = until.max(span.end().secs());
            }
        }
        let mut seed = Zeroizing::new([0u8; 32]);
        OsRng.fill_bytes(seed.as_mut());
        let answer = Grant::seal(
            &RustCrypto,
            v,
            &trees,
            now,
            &Secret::from_bytes(*seed),
            self.sign(),
        )?;
        let outcome = Outcome::Granted {
            from,
            until,
            nodes: u32::try_from(nodes).unwrap_or(u32::MAX),
        };
        self.record(Self::entry(v, name, now, outcome, by), &answer)?;
        Ok(Handled::Granted {
            id: hex::encode(v.id),
            nodes,
            by: by.to_string(),
        })
    }

    fn deny(
        &mut self,
        v: &VerifiedRequest,
        name: &str,
        reason: &str,
        by: DecidedBy,
        now: UnixTime,
    ) -> Result<Handled> {
        let mut short = reason.to_string();
        short.truncate(custos_proto::sharing::MAX_SHORT_TEXT);
        while !short.is_char_boundary(short.len()) {
            short.pop();
        }
        let answer = Denial {
            request: v.id,
            issued_at: now,
            reason: short.clone(),
        }
        .sign(self.sign())?;
        self.record(Self::entry(v, name, now, Outcome::Denied, by), &answer)?;
        Ok(Handled::Denied {
            id: hex::encode(v.id),
            reason: short,
        })
    }

    /// Applies the policy to a request that arrived (from the hub or a file): grants, denies, or keeps it for the
    /// user. A request that fails its checks is refused without an answer.
    pub fn consider(&mut self, bytes: &[u8], now: UnixTime) -> Result<Handled> {
        let id = hex::encode(statement_id(bytes));
        let v = match self.check(bytes, now) {
            Ok(v) => v,
            Err(reason) => return Ok(Handled::Refused { id, reason }),
        };
        let name = self.known_name(&v.request);
        let days = range_days(v.request.range.start().secs(), v.request.range.end().secs());
        let decision = self.policy.decide(&Query {
            app_name: name.as_deref().unwrap_or(""),
            app_key: &v.request.app_key,
            purpose: &v.request.purpose,
            days,
        });
        let shown = name.unwrap_or_else(|| format!("unverified \"{}\"", v.request.app_name));
        let by = DecidedBy::policy(decision.rule);
        match decision.action {
            // A request the policy allows but that cannot be granted as asked (too many secrets, say) is denied,
            // with the reason: left unanswered, it would stop every later sync.
            Action::Allow => match self.grant(&v, &shown, v.request.range, by, now) {
                Err(KeeperError::Protocol(e)) => {
                    self.deny(&v, &shown, &format!("cannot be granted: {e}"), by, now)
                }
                other => other,
            },
            Action::Deny => {
                let reason = match decision.rule {
                    Some(n) => format!("denied by the owner's policy (rule {n})"),
                    None => "denied by the owner's policy".to_string(),
                };
                self.deny(&v, &shown, &reason, by, now)
            }
            Action::Ask => {
                fsio::replace(&self.dir.join("pending").join(format!("{id}.cose")), bytes)?;
                Ok(Handled::Asked {
                    id,
                    reason: decision.reason,
                })
            }
        }
    }

    /// The requests waiting for the user, oldest first. Expired ones are dropped: nobody can use an answer to them.
    pub fn pending(&mut self, now: UnixTime) -> Result<Vec<Pending>> {
        let dir = self.dir.join("pending");
        let mut out = Vec::new();
        let mut names: Vec<_> = fs::read_dir(&dir)
            .map_err(|e| state_err(&dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "cose"))
            .collect();
        names.sort();
        for path in names {
            let bytes = fs::read(&path).map_err(|e| state_err(&path, e))?;
            let id = hex::encode(statement_id(&bytes));
            // Every check again (a crash may have left a decided request here), not just the signature.
            match self.check(&bytes, now) {
                Ok(request) => {
                    let known_as = self
                        .apps
                        .get(&hex::encode(request.request.app_key))
                        .cloned();
                    let days = range_days(
                        request.request.range.start().secs(),
                        request.request.range.end().secs(),
                    );
                    let reason = self
                        .policy
                        .decide(&Query {
                            app_name: known_as.as_deref().unwrap_or(""),
                            app_key: &request.request.app_key,
                            purpose: &request.request.purpose,
                            days,
                        })
                        .reason;
                    out.push(Pending {
                        id,
                        request,
                        known_as,
                        reason,
                    })
                }
                // Expired, decided already, or no longer valid: nothing for the user to decide.
                Err(reason) => {
                    tracing::info!(%id, %reason, "dropping a pending request");
                    fs::remove_file(&path).map_err(|e| state_err(&path, e))?;
                }
            }
        }
        out.sort_by_key(|p| p.request.request.expires);
        Ok(out)
    }

    fn take_pending(&mut self, id: &str, now: UnixTime) -> Result<(VerifiedRequest, String)> {
        let mut matching: Vec<_> = self
            .pending(now)?
            .into_iter()
            .filter(|p| p.id == id || (id.len() >= 8 && p.id.starts_with(id)))
            .collect();
        // A prefix must name one request: never decide one the user did not mean.
        let p = match matching.len() {
            1 => matching.remove(0),
            0 => return Err(KeeperError::NotPending(id.into())),
            _ => {
                return Err(KeeperError::NotPending(format!(
                    "{id} (it matches {} requests; give more digits)",
                    matching.len()
                )));
            }
        };
        let name = p
            .known_as
            .unwrap_or_else(|| format!("unverified \"{}\"", p.request.request.app_name));
        Ok((p.request, name))
    }

    /// The user approves pending request `id` (or a unique prefix of 8+ digits), for `range` if given (it must lie
    /// within the request's) or else the whole request.
    pub fn approve(&mut self, id: &str, range: Option<Span>, now: UnixTime) -> Result<Handled> {
        let (v, name) = self.take_pending(id, now)?;
        let range = match range {
            Some(r) if v.request.range.includes(r) => r,
            Some(_) => {
                return Err(custos_proto::Error::InvalidValue(
                    "the range to grant must lie within the range asked for",
                )
                .into());
            }
            None => v.request.range,
        };
        let granted = self.grant(&v, &name, range, DecidedBy::User, now)?;
        // The user saw this application's name and key and approved it: pin the name to the key if both are
        // free, so that rules naming it apply to this key from now on (and to no other).
        let free = !self.apps.contains_key(&hex::encode(v.request.app_key))
            && !self.apps.values().any(|n| *n == v.request.app_name);
        if free {
            self.trust_app(&v.request.app_name, v.request.app_key)?;
        }
        Ok(granted)
    }

    /// The user denies pending request `id`.
    pub fn deny_pending(&mut self, id: &str, now: UnixTime) -> Result<Handled> {
        let (v, name) = self.take_pending(id, now)?;
        self.deny(&v, &name, "denied by the owner", DecidedBy::User, now)
    }

    /// A short-lived token proving to the hub that this is the owner's keeper, for `scope`.
    pub fn access_token(&self, scope: &str, now: UnixTime) -> Result<Vec<u8>> {
        Ok(AccessToken {
            owner: self.owner(),
            scope: scope.into(),
            at: now,
        }
        .sign(self.sign())?)
    }

    /// What it takes to wait for the next request without holding the keeper open: the inbox cursor and an access
    /// token (valid for two minutes). `keeper serve` waits on it between rounds, so that it answers a request as
    /// soon as it reaches the hub, while the user's own commands can still take the keeper's directory.
    pub fn watch(&self, now: UnixTime) -> Result<InboxWatch> {
        self.inbox_page(self.inbox_cursor(), 1, now)
    }

    /// The owner's inbox after `after`, at most `limit` requests, with an access token made at `now`.
    fn inbox_page(&self, after: i64, limit: u32, now: UnixTime) -> Result<InboxWatch> {
        let owner = hex::encode(self.owner());
        let token = self.access_token(&format!("GET /v1/owners/{owner}/inbox"), now)?;
        Ok(InboxWatch {
            path: format!("/v1/owners/{owner}/inbox?after={after}&limit={limit}"),
            auth: format!("Custos {}", hex::encode(token)),
        })
    }

    /// The last inbox position considered (see `inbox.cursor`).
    fn inbox_cursor(&self) -> i64 {
        fs::read_to_string(self.dir.join("inbox.cursor"))
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Delivers queued answers to the hub; keeps those the hub could not take. Returns how many it took.
    pub async fn deliver(&mut self, hub: &str) -> Result<usize> {
        let client = self.client(hub)?;
        let dir = self.dir.join("outbox");
        let mut delivered = 0;
        let mut paths: Vec<_> = fs::read_dir(&dir)
            .map_err(|e| state_err(&dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "cose"))
            .collect();
        paths.sort();
        for path in paths {
            let body = fs::read(&path).map_err(|e| state_err(&path, e))?;
            match client.post("/v1/answers", body).await {
                // 409: the hub already has an answer to it (ours, delivered before a crash took the file).
                Ok(_) | Err(ClientError::Refused { status: 409, .. }) => {
                    fs::remove_file(&path).map_err(|e| state_err(&path, e))?;
                    delivered += 1;
                }
                // The hub will never take it (it lost the request, say): set it aside, so that it does not hold
                // up the answers behind it, and keep it for the user to look at.
                Err(ClientError::Refused {
                    status, message, ..
                }) if (400..500).contains(&status) => {
                    let aside = dir.join("refused");
                    private_dir(&aside)?;
                    let target = aside.join(path.file_name().unwrap_or_default());
                    fs::rename(&path, &target).map_err(|e| state_err(&target, e))?;
                    tracing::warn!(status, %message, file = %target.display(), "the hub refused an answer; set aside");
                }
                Err(e) => {
                    return Err(KeeperError::Hub(format!("{e}; the answer stays queued")));
                }
            }
        }
        Ok(delivered)
    }

    /// One round with the hub: deliver queued answers, take every new request from the owner's inbox and
    /// consider it, then deliver the new answers.
    pub async fn sync(&mut self, hub: &str) -> Result<SyncReport> {
        self.sync_waiting(hub, std::time::Duration::ZERO).await
    }

    /// [`Keeper::sync`], but if no new request is there, waits up to `wait` (at most 30 s) for one to arrive:
    /// what `keeper serve` loops on, so a request is answered as soon as it reaches the hub.
    pub async fn sync_waiting(
        &mut self,
        hub: &str,
        wait: std::time::Duration,
    ) -> Result<SyncReport> {
        let hub = hub.trim_end_matches('/');
        // The user may have edited the policy since: a broken file stops the round, it never falls back silently.
        self.policy = read_policy(&self.dir)?;
        let mut report = SyncReport {
            delivered: self.deliver(hub).await?,
            ..SyncReport::default()
        };
        let client = self.client(hub)?;
        // Requests up to the cursor were considered already (decided, or pending with the user).
        let cursor_path = self.dir.join("inbox.cursor");
        let mut after = self.inbox_cursor();
        let mut wait = wait;
        loop {
            let now = UnixTime::new(now_secs())?;
            let body = self
                .inbox_page(after, MAX_INBOX_PAGE, now)?
                .fetch(&client, wait)
                .await?;
            let items = body["requests"].as_array().cloned().unwrap_or_default();
            for item in &items {
                let Some(bytes) = item["request"].as_str().and_then(|h| hex::decode(h).ok()) else {
                    // Not something the hub would send; nothing to decide on.
                    continue;
                };
                let id = hex::encode(statement_id(&bytes));
                // Already waiting for the user: the hub keeps it until answered, don't ask twice.
                if self.dir.join("pending").join(format!("{id}.cose")).exists() {
                    continue;
                }
                report.handled.push(self.consider(&bytes, now)?);
            }
            wait = std::time::Duration::ZERO;
            match body["next"].as_i64() {
                Some(n) if !items.is_empty() => {
                    after = n;
                    fsio::replace(&cursor_path, n.to_string().as_bytes())?;
                }
                _ => break,
            }
        }
        report.delivered += self.deliver(hub).await?;
        Ok(report)
    }
}

/// A long-poll on the owner's inbox (see [`Keeper::watch`]).
#[derive(Clone, Debug)]
pub struct InboxWatch {
    path: String,
    auth: String,
}

impl InboxWatch {
    /// The inbox page, waiting up to `wait` (at most 30 s) for a request if there is none.
    async fn fetch(
        &self,
        hub: &custos_client::HubClient,
        wait: std::time::Duration,
    ) -> Result<serde_json::Value> {
        let path = format!("{}&wait={}", self.path, wait.as_secs());
        let body = hub.get(&path, Some(&self.auth)).await.map_err(hub_err)?;
        serde_json::from_slice(&body)
            .map_err(|e| KeeperError::Hub(format!("the inbox is not JSON: {e}")))
    }

    /// Waits up to `wait` (at most 30 s) for a request the keeper has not seen; true if one is there.
    pub async fn wait(
        &self,
        hub: &custos_client::HubClient,
        wait: std::time::Duration,
    ) -> Result<bool> {
        let v = self.fetch(hub, wait).await?;
        Ok(v["requests"].as_array().is_some_and(|r| !r.is_empty()))
    }
}

/// A device paired and provisioned by [`Keeper::pair`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Paired {
    /// The device.
    pub device: DeviceId,
    /// The DPK epoch it now holds.
    pub epoch: u16,
    /// How many node secrets (its frontier) it was sent.
    pub secrets: usize,
}

/// The most requests one inbox page asks for (the hub's own limit).
const MAX_INBOX_PAGE: u32 = 100;

pub(crate) fn hub_err(e: custos_client::ClientError) -> KeeperError {
    KeeperError::Hub(e.to_string())
}

/// The next message in the keeper's mailbox for `device` after `cursor`, waiting until `deadline`.
async fn next_message(
    client: &custos_client::HubClient,
    device: DeviceId,
    cursor: &mut i64,
    deadline: tokio::time::Instant,
) -> Result<Vec<u8>> {
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return Err(KeeperError::Hub(format!(
                "device {device} did not answer in time: is it running, online, and is the owner code right?"
            )));
        }
        let got = client
            .relay_recv(
                device,
                custos_client::Direction::ToKeeper,
                *cursor,
                left.min(std::time::Duration::from_secs(10)),
                None,
            )
            .await
            .map_err(hub_err)?;
        if let Some((seq, body)) = got.into_iter().next() {
            *cursor = seq;
            return Ok(body);
        }
    }
}

/// Creates `dir` (and its parents) owner-only if it does not exist: the keeper's state says who asked for what.
fn private_dir(dir: &Path) -> Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(|e| state_err(dir, e))
}

/// The policy in `dir/policy.toml`, or the default (ask about everything) if there is none.
fn read_policy(dir: &Path) -> Result<Policy> {
    let path = dir.join("policy.toml");
    match fs::read_to_string(&path) {
        Ok(text) => Ok(Policy::from_toml(&text)?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Policy::default()),
        Err(e) => Err(state_err(&path, e)),
    }
}

#[derive(Serialize, Deserialize)]
struct HeadFile {
    seq: u64,
    hash: String,
}

/// `range` shrunk to whole leaves of `spec`, or `None` if no whole leaf fits.
fn round_inward(spec: &TreeSpec, range: Span) -> Result<Option<Span>, custos_proto::Error> {
    let leaf = spec.schedule().leaf();
    let first = spec.leaf_at(range.start())?;
    let start = if leaf.is_boundary(range.start()) {
        range.start()
    } else {
        spec.node_span(
            spec.leaf_node(
                first
                    .checked_add(1)
                    .ok_or(custos_proto::Error::LeafIndexOverflow)?,
            ),
        )
        .map(|s| s.start())
        .unwrap_or(range.end())
    };
    let end_leaf = spec.leaf_at(UnixTime::new(range.end().secs() - 1)?)?;
    let end = if leaf.is_boundary(range.end()) || range.end() == spec.span().end() {
        range.end()
    } else {
        spec.node_span(spec.leaf_node(end_leaf))?.start()
    };
    Ok(Span::new(start, end).ok())
}
