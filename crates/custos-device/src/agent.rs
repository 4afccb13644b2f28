//! The device agent: joins a hub, seals readings with its forward-secure frontier, and publishes them through an
//! on-disk queue, so nothing is lost while the hub is down or the agent restarts.
//!
//! State directory layout (all owner-only): `device.json` (identity, codes, hub session), `keys.json` (the
//! frontier: the only data-key secrets the device holds), `seq` (the next sequence number) and `queue/`, one file
//! per message not yet acknowledged, named by its sequence number. Every write is atomic (write, sync, rename).
//!
//! Sequence numbers are reserved on disk before use, so a crash can skip one but never reuse one. The sequence
//! number is also the record's nonce: unique per device, hence per leaf key.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use custos_proto::admission::DeviceAwaitingResponse;
use custos_proto::cose::DeviceList;
use custos_proto::record::OVERHEAD;
use custos_proto::uplink::{ACK_LEN, LinkKeys, UPLINK_OVERHEAD, Verdict, open_ack, seal_uplink};
use custos_proto::{DeviceId, LeafKey, RustCrypto, Secret, UnixTime};
use rand_core::{OsRng, RngCore};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use zeroize::Zeroizing;

use crate::keyfile::{self, Keys};
use crate::state::{DeviceState, Session, StateError, write_atomic};

/// The most messages sent in one request.
pub const MAX_BATCH: usize = 500;
/// The most bytes in one HTTP batch.
pub const MAX_HTTP_BATCH_BYTES: usize = 1 << 20;
/// The most bytes in one MQTT batch: well inside the 1 MiB packet limit both sides set.
pub const MAX_MQTT_BATCH_BYTES: usize = 256 << 10;

/// What can go wrong in the agent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// The state directory.
    #[error(transparent)]
    State(#[from] StateError),
    /// A key file.
    #[error("{0:#}")]
    Keys(#[from] anyhow::Error),
    /// The hub could not be reached; queued messages stay queued.
    #[error("hub unreachable: {0}")]
    Unreachable(String),
    /// The hub refused the request.
    #[error("hub refused ({status}): {message}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// The hub's message.
        message: String,
    },
    /// A protocol step failed (e.g. a Welcome or an ack that does not verify).
    #[error("protocol: {0}")]
    Protocol(#[from] custos_proto::Error),
    /// The device has not joined a hub yet.
    #[error("the device has not joined a hub: run it with --hub URL")]
    NotJoined,
    /// The device has no join code left (it joined before, or its state was reset).
    #[error("the device has no join code (already used); a device joins once")]
    NoJoinCode,
    /// The device holds no data keys.
    #[error(
        "the device holds no keys: provision it with --keys FILE (a DPK from `custos dpk new`)"
    )]
    NoKeys,
    /// The device has no owner code, so it cannot pair.
    #[error("the device has no owner code; it cannot pair with a keeper")]
    NoOwnerCode,
    /// No keeper paired within the time allowed.
    #[error("no keeper paired within the time allowed")]
    NotPaired,
    /// The key file belongs to another device.
    #[error("the key file is for device {0}, not this one")]
    WrongDevice(DeviceId),
    /// The device does not have the hub's signing key yet, so it cannot check a device list.
    #[error("the hub's signing key is not pinned yet; cannot check a device list")]
    NoHubKey,
    /// A device list older than one already accepted: a replay, or a hub rolled back.
    #[error("device list version {got} is older than version {have}, already accepted")]
    StaleList {
        /// The version the device holds.
        have: i64,
        /// The version offered.
        got: i64,
    },
}

/// What a device list told the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListUpdate {
    /// The version now held.
    pub version: i64,
    /// Whether it is newer than the one held before.
    pub changed: bool,
    /// Whether this device is on it. A device that is not has been revoked: the hub refuses its messages.
    pub authorized: bool,
}

/// A queued message: its sequence number and its file.
pub type Queued = (u64, PathBuf);

/// How one publish went.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Published {
    /// Newly stored by the hub.
    pub stored: usize,
    /// Already stored (a resend after a lost ack).
    pub duplicates: usize,
    /// Refused as too old.
    pub too_old: usize,
    /// Still queued.
    pub pending: usize,
    /// A device list that arrived meanwhile (over MQTT) and was accepted.
    pub list: Option<ListUpdate>,
}

/// A device agent over its state directory.
pub struct Agent {
    dir: PathBuf,
    state: DeviceState,
    http: reqwest::Client,
    keys: Option<Keys>,
    cached: Option<LeafKey<RustCrypto>>,
}

fn err_io(path: &Path) -> impl FnOnce(std::io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Agent {
    /// Opens the agent over the state directory `dir` (made by `custos device make`).
    pub fn open(dir: &Path) -> Result<Self, AgentError> {
        let state = DeviceState::read(dir)?;
        let keys_path = dir.join("keys.json");
        let keys = if keys_path.exists() {
            Some(keyfile::read_keys(&keys_path)?)
        } else {
            None
        };
        let queue = dir.join("queue");
        fs::create_dir_all(&queue).map_err(err_io(&queue))?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| AgentError::Unreachable(e.to_string()))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            state,
            http,
            keys,
            cached: None,
        })
    }

    /// The device id.
    pub fn device(&self) -> DeviceId {
        self.state.device
    }

    /// Whether the device holds data keys (a provisioned DPK epoch's frontier).
    pub fn has_keys(&self) -> bool {
        self.keys.is_some()
    }

    /// Whether the device has joined a hub.
    pub fn joined(&self) -> bool {
        self.state.session.is_some()
    }

    async fn post(&self, url: &str, body: Vec<u8>) -> Result<Vec<u8>, AgentError> {
        let resp = self
            .http
            .post(url)
            .header("content-type", "application/octet-stream")
            .body(body)
            .send()
            .await
            .map_err(|e| AgentError::Unreachable(e.to_string()))?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| AgentError::Unreachable(e.to_string()))?;
        if !status.is_success() {
            return Err(refusal(status.as_u16(), &bytes));
        }
        Ok(bytes.to_vec())
    }

    /// Joins the hub at `hub` (e.g. `http://127.0.0.1:7180`) with the device's join code; does nothing if the
    /// device already joined. The code is erased once used.
    pub async fn join(&mut self, hub: &str, now: i64) -> Result<(), AgentError> {
        if self.state.session.is_some() {
            return Ok(());
        }
        let code = Zeroizing::new(self.state.join_code.ok_or(AgentError::NoJoinCode)?);
        let hub = hub.trim_end_matches('/').to_string();
        let mut ephemeral = Zeroizing::new([0u8; 32]);
        OsRng.fill_bytes(ephemeral.as_mut());
        let (device, hello) = DeviceAwaitingResponse::start(
            self.state.device,
            &self.state.identity,
            &code,
            Secret::from_bytes(*ephemeral),
            None,
        )?;
        let reply = self
            .post(&format!("{hub}/v1/admission/hello"), hello)
            .await?;
        let (id, response) = reply
            .split_at_checked(16)
            .ok_or(custos_proto::Error::Truncated)?;
        let (device, finish) = device.read_response(response)?;
        let mut body = id.to_vec();
        body.extend_from_slice(&finish);
        // A lost answer to Finish would leave the device admitted at the hub without its session: the hub answers
        // the same Finish again with the same Welcome for a minute, so send it again a few times.
        let url = format!("{hub}/v1/admission/finish");
        let mut tries = 0;
        let welcome = loop {
            match self.post(&url, body.clone()).await {
                Err(AgentError::Unreachable(e)) if tries < 4 => {
                    tries += 1;
                    tracing::warn!(%e, "no answer to Finish; sending it again");
                    tokio::time::sleep(Duration::from_millis(500 * tries)).await;
                }
                other => break other?,
            }
        };
        let admitted = device.read_welcome(&welcome)?;
        self.state.session = Some(Session {
            hub,
            hub_static: admitted.peer_static,
            session_key: admitted.session_key,
            joined_at: now,
            hub_signing: None,
        });
        self.state.join_code = None;
        // The hub has admitted the device: keep the session before anything else can fail.
        self.state.save(&self.dir)?;
        tracing::info!(device = %self.state.device, "joined the hub");
        if let Err(e) = self.fetch_hub_key().await {
            tracing::warn!(%e, "could not fetch the hub's signing key yet; will retry");
        }
        Ok(())
    }

    /// The last device list this device accepted, if any.
    pub fn device_list(&self) -> Result<Option<DeviceList>, AgentError> {
        let path = self.dir.join("device-list.cose");
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StateError::Io { path, source: e }.into()),
        };
        let key = self.hub_signing_key().ok_or(AgentError::NoHubKey)?;
        Ok(Some(DeviceList::verify(&RustCrypto, &bytes, &key)?))
    }

    /// Checks a signed device list from the hub (over HTTP or the retained MQTT message) against the pinned
    /// signing key and keeps it if it is newer. Refuses a forged list and one older than the list held, so a
    /// replayed list cannot bring back a revoked device.
    pub fn accept_device_list(&mut self, bytes: &[u8]) -> Result<ListUpdate, AgentError> {
        let key = self.hub_signing_key().ok_or(AgentError::NoHubKey)?;
        let list = DeviceList::verify(&RustCrypto, bytes, &key)?;
        let have = self.device_list()?.map(|l| l.version);
        if let Some(have) = have.filter(|&h| h > list.version) {
            return Err(AgentError::StaleList {
                have,
                got: list.version,
            });
        }
        let changed = have != Some(list.version);
        if changed {
            write_atomic(&self.dir.join("device-list.cose"), bytes)?;
        }
        let authorized = list.contains(self.state.device);
        if changed && !authorized {
            tracing::warn!(
                version = list.version,
                "this device is not on the hub's device list: revoked"
            );
        }
        Ok(ListUpdate {
            version: list.version,
            changed,
            authorized,
        })
    }

    /// Waits up to `timeout` for the owner's keeper to pair through the hub's relay (Noise NNpsk0 keyed by the
    /// owner code), takes the DPK epoch it provisions, keeping only the frontier at `now`, and acknowledges it.
    /// Messages that do not authenticate (anyone may post to the relay) are skipped. Returns the provisioned
    /// epoch and how many secrets the device now holds.
    pub async fn await_pairing(
        &mut self,
        now: UnixTime,
        timeout: Duration,
    ) -> Result<(u16, usize), AgentError> {
        use custos_client::{Direction, HubClient};
        use custos_proto::pairing::DeviceAwaitingProvision;
        let session = self.state.session.as_ref().ok_or(AgentError::NotJoined)?;
        let link = LinkKeys::derive(&RustCrypto, &session.session_key)?;
        let code = Zeroizing::new(self.state.owner_code.ok_or(AgentError::NoOwnerCode)?);
        let client = HubClient::new(&session.hub, Duration::from_secs(10))
            .map_err(|e| AgentError::Unreachable(e.to_string()))?;
        let device = self.state.device;
        let cursor_path = self.dir.join("pairing.cursor");
        let mut cursor: i64 = fs::read_to_string(&cursor_path)
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0);
        let deadline = tokio::time::Instant::now() + timeout;
        let mut awaiting: Option<DeviceAwaitingProvision> = None;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Err(AgentError::NotPaired);
            }
            // Each read carries a fresh pairing-wait token: the hub relays messages for this device only while
            // it proves, under its session, that it waits.
            let clock = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let token = custos_proto::uplink::seal_pairing_wait(&RustCrypto, &link, device, clock);
            let auth = format!("Custos-Device {}", hex::encode(token));
            let got = client
                .relay_recv(
                    device,
                    Direction::ToDevice,
                    cursor,
                    left.min(Duration::from_secs(10)),
                    Some(&auth),
                )
                .await
                .map_err(|e| AgentError::Unreachable(e.to_string()))?;
            for (seq, msg) in got {
                cursor = seq;
                write_atomic(&cursor_path, seq.to_string().as_bytes())?;
                // Only a Provision may end the session in progress: other junk must not cost it.
                let provision = msg.first() == Some(&custos_proto::pairing::PROVISION);
                if let Some(state) = awaiting.take_if(|_| provision) {
                    match state.open_provision(&msg) {
                        Ok((paired, provision)) => {
                            let spec = *provision.tree();
                            let keys = Keys {
                                spec,
                                suite: provision.suite(),
                                nodes: provision.into_nodes(),
                            };
                            let held = self.provision(&keys, now)?;
                            let ack = paired.seal_ack()?;
                            client
                                .relay_send(device, Direction::ToKeeper, &ack)
                                .await
                                .map_err(|e| AgentError::Unreachable(e.to_string()))?;
                            tracing::info!(
                                epoch = spec.epoch().0,
                                held,
                                "paired and provisioned by the owner's keeper"
                            );
                            return Ok((spec.epoch().0, held));
                        }
                        // Not the Provision of this session: maybe a fresh PairInit, tried below.
                        Err(e) => tracing::debug!(%e, "not a provision for this session"),
                    }
                }
                let mut ephemeral = Zeroizing::new([0u8; 32]);
                OsRng.fill_bytes(ephemeral.as_mut());
                match DeviceAwaitingProvision::read_init(
                    device,
                    &code,
                    Secret::from_bytes(*ephemeral),
                    &msg,
                ) {
                    Ok((state, accept)) => {
                        client
                            .relay_send(device, Direction::ToKeeper, &accept)
                            .await
                            .map_err(|e| AgentError::Unreachable(e.to_string()))?;
                        awaiting = Some(state);
                    }
                    Err(e) => {
                        tracing::debug!(%e, "ignoring a relayed message that is not a PairInit for this device")
                    }
                }
            }
        }
    }

    /// Fetches the hub's current device list over HTTP and accepts it (see [`Agent::accept_device_list`]).
    pub async fn refresh_device_list(&mut self) -> Result<ListUpdate, AgentError> {
        if self.hub_signing_key().is_none() {
            self.fetch_hub_key().await?;
        }
        let session = self.state.session.as_ref().ok_or(AgentError::NotJoined)?;
        let bytes = self.get(&format!("{}/v1/device-list", session.hub)).await?;
        self.accept_device_list(&bytes)
    }

    async fn get(&self, url: &str) -> Result<Vec<u8>, AgentError> {
        let resp = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| AgentError::Unreachable(e.to_string()))?;
        let status = resp.status();
        let body = resp
            .bytes()
            .await
            .map_err(|e| AgentError::Unreachable(e.to_string()))?;
        if !status.is_success() {
            return Err(refusal(status.as_u16(), &body));
        }
        Ok(body.to_vec())
    }

    /// Fetches the hub's key for device lists, authenticated under the session, and pins it.
    pub async fn fetch_hub_key(&mut self) -> Result<[u8; 32], AgentError> {
        let session = self.state.session.as_ref().ok_or(AgentError::NotJoined)?;
        let link = LinkKeys::derive(&RustCrypto, &session.session_key)?;
        let url = format!("{}/v1/devices/{}/hub-key", session.hub, self.state.device);
        let body = self.get(&url).await?;
        let key = custos_proto::uplink::open_hub_key(&RustCrypto, &link, self.state.device, &body)?;
        if let Some(s) = self.state.session.as_mut() {
            s.hub_signing = Some(key);
        }
        self.state.save(&self.dir)?;
        Ok(key)
    }

    /// The hub's signing key for device lists, if the device has it.
    pub fn hub_signing_key(&self) -> Option<[u8; 32]> {
        self.state.session.as_ref().and_then(|s| s.hub_signing)
    }

    /// Provisions the device's data keys from `keys` (a DPK or any key file of this device), keeping only the
    /// frontier at `now`: the device can seal from now on and holds nothing that opens an earlier record.
    pub fn provision(&mut self, keys: &Keys, now: UnixTime) -> Result<usize, AgentError> {
        if keys.spec.device() != self.state.device {
            return Err(AgentError::WrongDevice(keys.spec.device()));
        }
        let frontier = keys
            .spec
            .frontier(&RustCrypto, &keys.nodes, now)?
            .collect::<Result<Vec<_>, _>>()?;
        let kept = Keys {
            spec: keys.spec,
            suite: keys.suite,
            nodes: frontier,
        };
        keyfile::replace_keys(&self.dir.join("keys.json"), &kept)?;
        let n = kept.nodes.len();
        self.keys = Some(kept);
        self.cached = None;
        Ok(n)
    }

    fn reserve_seq(&self) -> Result<u64, AgentError> {
        let path = self.dir.join("seq");
        let stored: u64 = match fs::read_to_string(&path) {
            Ok(t) => t.trim().parse().map_err(|_| StateError::Invalid {
                path: path.clone(),
                why: "not a number".into(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(StateError::Io { path, source: e }.into()),
        };
        // Never below a queued message, even if `seq` was lost.
        let queued = self.queued()?.last().map_or(0, |(s, _)| s + 1);
        let seq = stored.max(queued);
        write_atomic(&path, (seq + 1).to_string().as_bytes())?;
        Ok(seq)
    }

    /// Seals `reading` taken at `at`, and queues it for the hub. Returns its sequence number.
    pub fn seal(&mut self, reading: &[u8], at: UnixTime) -> Result<u64, AgentError> {
        let session = self.state.session.as_ref().ok_or(AgentError::NotJoined)?;
        let link = LinkKeys::derive(&RustCrypto, &session.session_key)?;
        let keys = self.keys.as_mut().ok_or(AgentError::NoKeys)?;
        let leaf = keys.spec.leaf_at(at)?;
        if self.cached.as_ref().is_none_or(|k| k.leaf() != leaf) {
            // A new leaf: move the frontier up to it and forget everything before, on disk too.
            let next = keys
                .spec
                .frontier(&RustCrypto, &keys.nodes, at)?
                .collect::<Result<Vec<_>, _>>()?;
            keys.nodes = next;
            keyfile::replace_keys(&self.dir.join("keys.json"), keys)?;
            let holder = keys
                .spec
                .holder(&keys.nodes, keys.spec.leaf_node(leaf))?
                .ok_or(AgentError::NoKeys)?;
            self.cached = Some(keys.spec.leaf_key(&RustCrypto, holder, leaf, keys.suite)?);
        }
        let key = self.cached.as_ref().ok_or(AgentError::NoKeys)?;
        let seq = self.reserve_seq()?;
        let mut record = vec![0u8; reading.len() + OVERHEAD];
        key.seal(&RustCrypto, seq.to_be_bytes(), reading, &mut record)?;
        let mut msg = vec![0u8; record.len() + UPLINK_OVERHEAD];
        seal_uplink(
            &RustCrypto,
            &link,
            self.state.device,
            seq,
            &record,
            &mut msg,
        )?;
        write_atomic(&self.dir.join("queue").join(format!("{seq:016x}.up")), &msg)?;
        Ok(seq)
    }

    /// The queued messages, oldest first.
    pub fn queued(&self) -> Result<Vec<Queued>, AgentError> {
        let dir = self.dir.join("queue");
        let mut out = Vec::new();
        for entry in fs::read_dir(&dir).map_err(err_io(&dir))? {
            let path = entry.map_err(err_io(&dir))?.path();
            let seq = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".up"))
                .and_then(|h| u64::from_str_radix(h, 16).ok());
            if let Some(seq) = seq {
                out.push((seq, path));
            }
        }
        out.sort();
        Ok(out)
    }

    /// The next batch of queued messages, framed as the hub expects (`length (u16) ‖ uplink`, repeated).
    fn next_batch(&self, max_bytes: usize) -> Result<(Vec<Queued>, Vec<u8>), AgentError> {
        let mut batch = Vec::new();
        let mut body = Vec::new();
        for (seq, path) in self.queued()?.into_iter().take(MAX_BATCH) {
            let msg = fs::read(&path).map_err(err_io(&path))?;
            // Always at least one message, so a large one still goes out alone.
            if !batch.is_empty() && body.len() + 2 + msg.len() > max_bytes {
                break;
            }
            batch.push((seq, path));
            let len = u16::try_from(msg.len())
                .map_err(|_| custos_proto::Error::InvalidValue("message over 64 KiB"))?;
            body.extend_from_slice(&len.to_be_bytes());
            body.extend_from_slice(&msg);
        }
        Ok((batch, body))
    }

    /// Verifies the hub's acks for `batch` and drops every acknowledged message from the queue.
    fn settle(
        &self,
        link: &LinkKeys,
        batch: &[Queued],
        acks: &[u8],
        report: &mut Published,
    ) -> Result<(), AgentError> {
        if acks.len() != batch.len() * ACK_LEN {
            return Err(
                custos_proto::Error::InvalidValue("ack count differs from the batch").into(),
            );
        }
        for ((seq, path), ack) in batch.iter().zip(acks.chunks(ACK_LEN)) {
            let (acked, verdict) = open_ack(&RustCrypto, link, self.state.device, ack)?;
            if acked != *seq {
                return Err(custos_proto::Error::InvalidValue("ack for another message").into());
            }
            match verdict {
                Verdict::Stored => report.stored += 1,
                Verdict::Duplicate => report.duplicates += 1,
                Verdict::TooOld => {
                    report.too_old += 1;
                    tracing::warn!(seq, "the hub refused a message as too old; dropping it");
                }
                Verdict::Noted => {
                    return Err(custos_proto::Error::InvalidValue(
                        "a skip's verdict for an uplink",
                    )
                    .into());
                }
            }
            fs::remove_file(path).map_err(err_io(path))?;
        }
        Ok(())
    }

    /// Sends queued messages to the hub over HTTP, a batch at a time, and drops each one the hub acknowledged.
    /// On a network failure the rest stays queued for the next call.
    pub async fn publish(&mut self) -> Result<Published, AgentError> {
        let session = self.state.session.as_ref().ok_or(AgentError::NotJoined)?;
        let link = LinkKeys::derive(&RustCrypto, &session.session_key)?;
        let url = format!("{}/v1/devices/{}/uplinks", session.hub, self.state.device);
        let mut report = Published::default();
        loop {
            let (batch, body) = self.next_batch(MAX_HTTP_BATCH_BYTES)?;
            if batch.is_empty() {
                break;
            }
            let acks = self.post(&url, body).await?;
            self.settle(&link, &batch, &acks, &mut report)?;
        }
        report.pending = self.queued()?.len();
        Ok(report)
    }

    /// The same over MQTT: each batch goes to `{prefix}/{device}/up`, and the hub's acks come back on
    /// `{prefix}/{device}/ack` (or a refusal on `…/error`) within 10 seconds.
    pub async fn publish_mqtt(&mut self, mqtt: &mut MqttLink) -> Result<Published, AgentError> {
        let session = self.state.session.as_ref().ok_or(AgentError::NotJoined)?;
        let link = LinkKeys::derive(&RustCrypto, &session.session_key)?;
        let mut report = Published::default();
        loop {
            let (batch, body) = self.next_batch(MAX_MQTT_BATCH_BYTES)?;
            if batch.is_empty() {
                break;
            }
            // Forget answers to earlier batches that arrived late, but take in device lists.
            while let Ok(msg) = mqtt.incoming.try_recv() {
                self.on_mqtt_list(msg, &mut report);
            }
            mqtt.client
                .publish(mqtt.topic("up"), QoS::AtLeastOnce, false, body)
                .await
                .map_err(|e| AgentError::Unreachable(e.to_string()))?;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            loop {
                let answer = tokio::time::timeout_at(deadline, mqtt.incoming.recv())
                    .await
                    .map_err(|_| {
                        AgentError::Unreachable("no answer from a hub within 10 s".into())
                    })?
                    .ok_or_else(|| AgentError::Unreachable("MQTT connection closed".into()))?;
                match answer {
                    (Incoming::Ack, payload) => {
                        self.settle(&link, &batch, &payload, &mut report)?;
                        break;
                    }
                    (Incoming::Error, payload) => return Err(refusal(0, &payload)),
                    list @ (Incoming::DeviceList, _) => self.on_mqtt_list(list, &mut report),
                }
            }
        }
        report.pending = self.queued()?.len();
        Ok(report)
    }
}

impl Agent {
    /// Takes in a device list that arrived over MQTT. Anyone who can publish to the broker can put bytes there,
    /// so a list that fails its checks is logged and ignored, never fatal.
    fn on_mqtt_list(&mut self, (kind, payload): (Incoming, Vec<u8>), report: &mut Published) {
        if kind != Incoming::DeviceList {
            return;
        }
        match self.accept_device_list(&payload) {
            Ok(update) => report.list = Some(update),
            Err(e) => tracing::warn!(%e, "ignoring a device list from the broker"),
        }
    }

    /// Waits up to `wait` for device lists on MQTT (the hub keeps the latest one retained, so a fresh connection
    /// gets it at once) and takes in each one; returns the last update.
    pub async fn watch_device_list(
        &mut self,
        mqtt: &mut MqttLink,
        wait: Duration,
    ) -> Option<ListUpdate> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut report = Published::default();
        while let Ok(Some(msg)) = tokio::time::timeout_at(deadline, mqtt.incoming.recv()).await {
            self.on_mqtt_list(msg, &mut report);
        }
        report.list
    }
}

/// What arrived for the device over MQTT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Incoming {
    Ack,
    Error,
    DeviceList,
}

/// The hub's refusal: its JSON `message`, or the body as text.
fn refusal(status: u16, body: &[u8]) -> AgentError {
    AgentError::Refused {
        status,
        message: custos_client::hub_message(body),
    }
}

/// A device's connection to an MQTT broker: publishes to `{prefix}/{device}/up`, receives acks and refusals.
pub struct MqttLink {
    client: AsyncClient,
    incoming: tokio::sync::mpsc::Receiver<(Incoming, Vec<u8>)>,
    prefix: String,
    device: DeviceId,
    task: tokio::task::JoinHandle<()>,
}

impl MqttLink {
    /// Connects to `mqtt://host:port` for `device`; reconnects on its own in the background.
    pub fn connect(url: &str, prefix: &str, device: DeviceId) -> Result<Self, AgentError> {
        let (host, port) = custos_proto::codec::mqtt_endpoint(url)
            .map_err(|e| AgentError::Unreachable(format!("`{url}`: {e}")))?;
        let mut opts = MqttOptions::new(
            format!("custos-dev-{}", hex::encode(device.0)),
            host.to_string(),
            port,
        );
        opts.set_keep_alive(Duration::from_secs(10));
        opts.set_max_packet_size(Some(1 << 20));
        let mut net = opts.network_options();
        net.set_tcp_nodelay(true);
        opts.set_network_options(net);
        let (client, mut events) = AsyncClient::new(opts, 64);
        let (tx, incoming) = tokio::sync::mpsc::channel(64);
        let (ack_topic, error_topic, list_topic) = (
            format!("{prefix}/{device}/ack"),
            format!("{prefix}/{device}/error"),
            format!("{prefix}/device-list"),
        );
        let sub = client.clone();
        let task = tokio::spawn(async move {
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = sub.subscribe(ack_topic.clone(), QoS::AtLeastOnce).await;
                        let _ = sub.subscribe(error_topic.clone(), QoS::AtLeastOnce).await;
                        let _ = sub.subscribe(list_topic.clone(), QoS::AtLeastOnce).await;
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let topic = String::from_utf8_lossy(&p.topic);
                        let kind = if topic == ack_topic {
                            Incoming::Ack
                        } else if topic == error_topic {
                            Incoming::Error
                        } else if topic == list_topic {
                            Incoming::DeviceList
                        } else {
                            continue;
                        };
                        if tx.send((kind, p.payload.to_vec())).await.is_err() {
                            break;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::debug!(%e, "MQTT connection lost; retrying");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
        });
        Ok(Self {
            client,
            incoming,
            prefix: prefix.to_string(),
            device,
            task,
        })
    }

    fn topic(&self, leaf: &str) -> String {
        format!("{}/{}/{leaf}", self.prefix, self.device)
    }
}

impl Drop for MqttLink {
    fn drop(&mut self) {
        self.task.abort();
    }
}
