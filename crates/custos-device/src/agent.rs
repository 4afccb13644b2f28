//! The device agent: joins a hub, seals readings with its forward-secure frontier, and publishes them through an
//! on-disk queue, so nothing is lost while the hub is down or the agent restarts.
//!
//! State directory layout (all owner-only): `device.json` (identity, codes, hub session), `keys.json` (the
//! frontier: the only data-key secrets the device holds), `seq` (the next sequence number) and `queue/`, one file
//! per message not yet acknowledged, named by its sequence number (`….up` for an uplink, `….skip` for a skip
//! notice, named by its first number), and `queue/acked`, the acknowledged message with the highest sequence number
//! (kept instead of deleted). Every write is atomic (write, sync, rename).
//!
//! Sequence numbers are reserved on disk before use, so a crash can skip one but never reuse one. The sequence
//! number is also the record's nonce: unique per device, hence per leaf key. Numbers reserved but never queued
//! (the agent died between the two writes) are found when the agent opens its state: they lie between the highest
//! number queued or acked and `seq`, and the agent queues a skip notice for them, so that a gap the hub reports is a
//! real loss.
//!
//! Only what verifies under the device's session acts on the queue: a message leaves it when an authenticated ack
//! for it arrives. Anything else that comes down (forged or stale acks, refusals, junk) is ignored and counted.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use custos_client::TlsTrust;
use custos_proto::admission::DeviceAwaitingResponse;
use custos_proto::cose::DeviceList;
use custos_proto::record::OVERHEAD;
use custos_proto::uplink::{
    ACK_LEN, LinkKeys, UPLINK_OVERHEAD, Verdict, open_ack, seal_skip, seal_uplink,
};
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
    /// The hub's or the broker's URL or TLS settings cannot be used: plain HTTP to another machine, an unreadable
    /// CA file.
    #[error("{0}")]
    Tls(String),
    /// The hub answered, but without an authenticated ack for the messages sent (over MQTT: none within
    /// [`ACK_TIMEOUT`]); they stay queued.
    #[error("no authenticated ack: {0}")]
    NoAck(String),
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
    /// The hub refused a device-to-device key, and said why in a refusal it authenticated.
    #[error("the hub refused the key: {}", match .0 {
        custos_proto::ties::Refusal::PeerNotAuthorized => "a peer is not on its list of authorized devices",
        custos_proto::ties::Refusal::BadExpiry => "the expiry is not between 60 s and 7 days ahead of its clock",
        custos_proto::ties::Refusal::KeyIdReused => "the key id was used before",
    })]
    KeyRefused(custos_proto::ties::Refusal),
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
    /// Skip notices the hub noted.
    pub noted: usize,
    /// Downlink messages ignored: acks that do not verify or match no queued message, refusals on the MQTT
    /// `…/error` topic (unauthenticated), device lists that fail their checks.
    pub ignored: usize,
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
    trust: TlsTrust,
    keys: Option<Keys>,
    cached: Option<LeafKey<RustCrypto>>,
    /// The next sequence number to reserve, once read from disk.
    next_seq: Option<u64>,
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
        let trust = custos_client::tls::remembered(dir, None).map_err(tls_err)?;
        let http = http_client(&trust)?;
        let mut agent = Self {
            dir: dir.to_path_buf(),
            state,
            http,
            trust,
            keys,
            cached: None,
            next_seq: None,
        };
        agent.account_for_skips()?;
        Ok(agent)
    }

    /// Trusts the hub's certificate as `trust` says from now on. A pinned fingerprint is also remembered in the
    /// state directory (`hub-fingerprint`), so that later runs need not be told again; a CA file is for this run.
    pub fn set_hub_trust(&mut self, trust: TlsTrust) -> Result<(), AgentError> {
        let trust = custos_client::tls::remembered(&self.dir, Some(trust)).map_err(tls_err)?;
        self.http = http_client(&trust)?;
        self.trust = trust;
        Ok(())
    }

    /// How this agent trusts the hub's certificate.
    pub fn hub_trust(&self) -> &TlsTrust {
        &self.trust
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

    /// Joins the hub at `hub` (e.g. `http://127.0.0.1:7180`) with the device's join code; does nothing if the
    /// device already joined. The code is erased once used.
    pub async fn join(&mut self, hub: &str, now: i64) -> Result<(), AgentError> {
        if self.state.session.is_some() {
            return Ok(());
        }
        let code = Zeroizing::new(self.state.join_code.ok_or(AgentError::NoJoinCode)?);
        let hub = hub.trim_end_matches('/').to_string();
        custos_client::tls::check_url(&hub).map_err(tls_err)?;
        let mut ephemeral = Zeroizing::new([0u8; 32]);
        OsRng.fill_bytes(ephemeral.as_mut());
        let (device, hello) = DeviceAwaitingResponse::start(
            self.state.device,
            &self.state.identity,
            &code,
            Secret::from_bytes(*ephemeral),
            None,
        )?;
        let reply = post(&self.http, &format!("{hub}/v1/admission/hello"), hello).await?;
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
            match post(&self.http, &url, body.clone()).await {
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
        accept_list(&self.dir, &key, self.state.device, bytes)
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
        let client = HubClient::new(&session.hub, Duration::from_secs(10), &self.trust)
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
                            // The new user–device key replaces the old one before the ack: once the keeper
                            // sees the ack it uses the new key, and anything under the old one is refused.
                            self.state.user_device_key = Some(paired.user_device_key().clone());
                            // Members go with the old key: a new owner must not inherit the old owner's.
                            crate::control::drop_members(&self.dir)?;
                            self.state.save(&self.dir)?;
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
        let link = LinkKeys::derive(&RustCrypto, &session.session_key)?;
        let bytes = fetch_device_list(&self.http, &session.hub, &link, self.state.device).await?;
        self.accept_device_list(&bytes)
    }

    /// Fetches the hub's key for device lists, authenticated under the session, and pins it.
    pub async fn fetch_hub_key(&mut self) -> Result<[u8; 32], AgentError> {
        let session = self.state.session.as_ref().ok_or(AgentError::NotJoined)?;
        let link = LinkKeys::derive(&RustCrypto, &session.session_key)?;
        let url = format!("{}/v1/devices/{}/hub-key", session.hub, self.state.device);
        let body = get(&self.http, &url).await?;
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

    fn reserve_seq(&mut self) -> Result<u64, AgentError> {
        let path = self.dir.join("seq");
        let seq = match self.next_seq {
            Some(s) => s,
            None => {
                // Never below a message queued or acked, even if `seq` was lost.
                let accounted = accounted_until(&self.dir.join("queue"))?;
                read_seq_file(&path)?.max(accounted)
            }
        };
        write_atomic(&path, (seq + 1).to_string().as_bytes())?;
        self.next_seq = Some(seq + 1);
        Ok(seq)
    }

    /// Finds the sequence numbers reserved on disk (`seq`) but never queued, nor acked: the agent died between
    /// reserving one and queueing its message. Queues a skip notice for them, so the hub can tell them from lost
    /// messages. Returns the range skipped, if any.
    fn account_for_skips(&mut self) -> Result<Option<(u64, u64)>, AgentError> {
        let Some(session) = self.state.session.as_ref() else {
            return Ok(None);
        };
        let queue = self.dir.join("queue");
        let reserved = read_seq_file(&self.dir.join("seq"))?;
        let accounted = accounted_until(&queue)?;
        if reserved <= accounted {
            return Ok(None);
        }
        let link = LinkKeys::derive(&RustCrypto, &session.session_key)?;
        let skip = seal_skip(&RustCrypto, &link, self.state.device, accounted, reserved)?;
        write_atomic(&queue.join(format!("{accounted:016x}.skip")), &skip)?;
        tracing::warn!(
            from = accounted,
            until = reserved,
            "sequence numbers were reserved but never queued (the agent was stopped abruptly); telling the hub"
        );
        Ok(Some((accounted, reserved)))
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
        let seq = self.reserve_seq()?;
        let key = self.cached.as_ref().ok_or(AgentError::NoKeys)?;
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

    /// The queued messages (uplinks, `….up`, and skip notices, `….skip`), oldest first.
    pub fn queued(&self) -> Result<Vec<Queued>, AgentError> {
        queued_in(&self.dir.join("queue"))
    }

    /// What publishes this device's queue: owns everything it needs, so it can run in a task of its own while the
    /// agent goes on sealing into the same queue.
    pub fn publisher(&self) -> Result<Publisher, AgentError> {
        let session = self.state.session.as_ref().ok_or(AgentError::NotJoined)?;
        let queue = self.dir.join("queue");
        Ok(Publisher {
            link: LinkKeys::derive(&RustCrypto, &session.session_key)?,
            hub: session.hub.clone(),
            hub_signing: session.hub_signing,
            device: self.state.device,
            http: self.http.clone(),
            last_acked: last_acked(&queue)?,
            dir: self.dir.clone(),
            queue,
        })
    }

    /// The device's line to the hub for device-to-device keys.
    pub fn key_node(&self) -> Result<crate::ties::KeyNode, AgentError> {
        let session = self.state.session.as_ref().ok_or(AgentError::NotJoined)?;
        crate::ties::KeyNode::new(
            &session.hub,
            &self.trust,
            self.state.device,
            &session.session_key,
            self.state.identity.clone(),
        )
    }

    /// The device's owner control: its [`Controller`](crate::control::Controller) over `actuator` (restoring
    /// the last state now), the channel to its control queue at the hub, and the user–device key from its latest
    /// pairing (`None` before the first: then it takes no command, list or claim).
    pub fn controller(
        &self,
        actuator: Box<dyn crate::actuator::Actuator>,
    ) -> Result<
        (
            crate::control::Controller,
            crate::control::ControlChannel,
            Option<Secret>,
        ),
        AgentError,
    > {
        let session = self.state.session.as_ref().ok_or(AgentError::NotJoined)?;
        let link = LinkKeys::derive(&RustCrypto, &session.session_key)?;
        let controller =
            crate::control::Controller::open(&self.dir, self.state.device, link.clone(), actuator)?;
        let channel = crate::control::ControlChannel::new(
            &session.hub,
            &self.trust,
            &self.dir,
            self.state.device,
            link,
        )?;
        Ok((controller, channel, self.state.user_device_key.clone()))
    }

    /// Sends queued messages to the hub over HTTP (see [`Publisher::publish`]).
    pub async fn publish(&mut self) -> Result<Published, AgentError> {
        self.publisher()?.publish().await
    }

    /// Sends queued messages over MQTT (see [`Publisher::publish_mqtt`]).
    pub async fn publish_mqtt(&mut self, mqtt: &mut MqttLink) -> Result<Published, AgentError> {
        let mut publisher = self.publisher()?;
        publisher.publish_mqtt(mqtt).await
    }
}

/// How long a device waits for the authenticated acks of a batch sent over MQTT.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(10);

/// The name under which the last acknowledged message with the highest sequence number is kept in the queue
/// directory, instead of being deleted, so that the agent knows on start how far its numbers were accounted for.
const LAST_ACKED: &str = "acked";

/// The sequence number after the highest one accounted for: queued (an uplink, or a skip notice's last number), or
/// acked (kept as [`LAST_ACKED`]). 0 if none.
fn accounted_until(queue: &Path) -> Result<u64, AgentError> {
    let mut until = last_acked(queue)?.map_or(0, |s| s + 1);
    for (seq, path) in queued_in(queue)? {
        let high = if is_skip(&path) {
            let bytes = fs::read(&path).map_err(err_io(&path))?;
            message_high(&bytes).unwrap_or(seq)
        } else {
            seq
        };
        until = until.max(high + 1);
    }
    Ok(until)
}

/// The highest sequence number of the kept last acked message.
fn last_acked(queue: &Path) -> Result<Option<u64>, AgentError> {
    let path = queue.join(LAST_ACKED);
    match fs::read(&path) {
        Ok(bytes) => Ok(message_high(&bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StateError::Io { path, source: e }.into()),
    }
}

/// The highest sequence number a queued message accounts for: an uplink's own, or a skip's last.
fn message_high(msg: &[u8]) -> Option<u64> {
    let six = |b: &[u8]| b.iter().fold(0u64, |acc, &x| (acc << 8) | u64::from(x));
    match msg.first() {
        Some(&custos_proto::uplink::UPLINK) => msg.get(1..7).map(six),
        Some(&custos_proto::uplink::SKIP) => msg.get(7..13).map(six),
        _ => None,
    }
}

fn read_seq_file(path: &Path) -> Result<u64, AgentError> {
    match fs::read_to_string(path) {
        Ok(t) => Ok(t.trim().parse().map_err(|_| StateError::Invalid {
            path: path.to_path_buf(),
            why: "not a number".into(),
        })?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(StateError::Io {
            path: path.to_path_buf(),
            source: e,
        }
        .into()),
    }
}

fn is_skip(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "skip")
}

fn queued_in(dir: &Path) -> Result<Vec<Queued>, AgentError> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(err_io(dir))? {
        let path = entry.map_err(err_io(dir))?.path();
        let seq = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".up").or_else(|| n.strip_suffix(".skip")))
            .and_then(|h| u64::from_str_radix(h, 16).ok());
        if let Some(seq) = seq {
            out.push((seq, path));
        }
    }
    out.sort();
    Ok(out)
}

/// Publishes a device's queue to its hub, over HTTP or MQTT. Made by [`Agent::publisher`].
///
/// A message leaves the queue only when an ack for it verifies under the device's session: with the verdict of an
/// uplink (stored, duplicate, too old) for an uplink, "noted" for a skip notice. Everything else that comes down
/// (acks that fail to verify, acks for messages no longer queued, the wrong number of acks, refusals on the MQTT
/// `…/error` topic, which anyone on the broker can post) is ignored and counted in [`Published::ignored`]. Dropping
/// a publish future half-way is safe: at worst a message is sent again, and the hub answers "duplicate".
pub struct Publisher {
    dir: PathBuf,
    queue: PathBuf,
    device: DeviceId,
    hub: String,
    link: LinkKeys,
    hub_signing: Option<[u8; 32]>,
    http: reqwest::Client,
    last_acked: Option<u64>,
}

/// Messages sent and not answered yet: by sequence number, whether a skip, and its file.
type InFlight = std::collections::BTreeMap<(u64, bool), PathBuf>;

impl Publisher {
    /// The device id.
    pub fn device(&self) -> DeviceId {
        self.device
    }

    /// How many messages are queued.
    pub fn pending(&self) -> Result<usize, AgentError> {
        Ok(queued_in(&self.queue)?.len())
    }

    /// The next batch of queued messages, framed as the hub expects (`length (u16) ‖ message`, repeated).
    fn next_batch(&self, max_bytes: usize) -> Result<(InFlight, Vec<u8>), AgentError> {
        let mut batch = InFlight::new();
        let mut body = Vec::new();
        for (seq, path) in queued_in(&self.queue)?.into_iter().take(MAX_BATCH) {
            let msg = match fs::read(&path) {
                Ok(m) => m,
                // Settled meanwhile by a late ack.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(StateError::Io { path, source: e }.into()),
            };
            // Always at least one message, so a large one still goes out alone.
            if !batch.is_empty() && body.len() + 2 + msg.len() > max_bytes {
                break;
            }
            let len = u16::try_from(msg.len())
                .map_err(|_| custos_proto::Error::InvalidValue("message over 64 KiB"))?;
            body.extend_from_slice(&len.to_be_bytes());
            body.extend_from_slice(&msg);
            batch.insert((seq, is_skip(&path)), path);
        }
        Ok((batch, body))
    }

    /// Takes in acks: each one that verifies and matches a queued message settles it (drops it from the queue,
    /// and from `flight`); the rest are ignored and counted. Returns how many messages were settled.
    fn settle(
        &mut self,
        acks: &[u8],
        flight: &mut InFlight,
        report: &mut Published,
    ) -> Result<usize, AgentError> {
        if acks.is_empty() || !acks.len().is_multiple_of(ACK_LEN) {
            report.ignored += 1;
            tracing::warn!(
                len = acks.len(),
                ignored = report.ignored,
                "ignoring an answer that is not a whole number of acks"
            );
            return Ok(0);
        }
        let mut settled = 0;
        for ack in acks.chunks(ACK_LEN) {
            let (seq, verdict) = match open_ack(&RustCrypto, &self.link, self.device, ack) {
                Ok(a) => a,
                Err(e) => {
                    report.ignored += 1;
                    tracing::warn!(%e, ignored = report.ignored, "ignoring an ack that does not verify");
                    continue;
                }
            };
            let skip = verdict == Verdict::Noted;
            let path = match flight.remove(&(seq, skip)) {
                Some(p) => p,
                // An authenticated ack for a message still queued, though not in this batch (a late answer to
                // an earlier send) is genuine.
                None => self
                    .queue
                    .join(format!("{seq:016x}.{}", if skip { "skip" } else { "up" })),
            };
            let bytes = match fs::read(&path) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    report.ignored += 1;
                    tracing::info!(
                        seq,
                        ?verdict,
                        ignored = report.ignored,
                        "ignoring an ack that matches no queued message (stale, or a verdict of the wrong kind)"
                    );
                    continue;
                }
                Err(e) => return Err(StateError::Io { path, source: e }.into()),
            };
            match verdict {
                Verdict::Stored => report.stored += 1,
                Verdict::Duplicate => report.duplicates += 1,
                Verdict::TooOld => {
                    report.too_old += 1;
                    tracing::warn!(seq, "the hub refused a message as too old; dropping it");
                }
                Verdict::Noted => report.noted += 1,
            }
            self.retire(&path, &bytes)?;
            settled += 1;
        }
        Ok(settled)
    }

    /// Drops an acknowledged message from the queue. The one accounting for the highest sequence number so far is
    /// kept as [`LAST_ACKED`] (a rename, as cheap as deleting), so that on start the agent can tell numbers that
    /// were queued and acked from numbers reserved and never queued.
    fn retire(&mut self, path: &Path, msg: &[u8]) -> Result<(), AgentError> {
        let high = message_high(msg);
        let result = if high > self.last_acked {
            let r = fs::rename(path, self.queue.join(LAST_ACKED));
            if r.is_ok() {
                self.last_acked = high;
            }
            r
        } else {
            fs::remove_file(path)
        };
        match result {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StateError::Io {
                path: path.to_path_buf(),
                source: e,
            }
            .into()),
        }
    }

    /// Sends queued messages to the hub over HTTP, a batch at a time, and drops each one an authenticated ack
    /// settles. Any failure leaves the rest queued: [`AgentError::Unreachable`] (no answer), [`AgentError::Refused`]
    /// (an HTTP error status, which anyone in between can forge), or [`AgentError::NoAck`] (an answer without a
    /// single ack for the batch).
    pub async fn publish(&mut self) -> Result<Published, AgentError> {
        let url = format!("{}/v1/devices/{}/uplinks", self.hub, self.device);
        let mut report = Published::default();
        loop {
            let (mut batch, body) = self.next_batch(MAX_HTTP_BATCH_BYTES)?;
            if batch.is_empty() {
                break;
            }
            let acks = post(&self.http, &url, body).await?;
            if self.settle(&acks, &mut batch, &mut report)? == 0 {
                return Err(AgentError::NoAck(format!(
                    "the hub's answer settled none of {} message(s)",
                    batch.len()
                )));
            }
        }
        report.pending = self.pending()?;
        Ok(report)
    }

    /// The same over MQTT: each batch goes to `{prefix}/{device}/up`, and the hub's acks come back on
    /// `{prefix}/{device}/ack`. The agent waits up to [`ACK_TIMEOUT`] for authenticated acks settling the whole
    /// batch; a refusal on `…/error` is only logged (anyone on the broker can post one). Device lists pushed
    /// meanwhile are taken in.
    pub async fn publish_mqtt(&mut self, mqtt: &mut MqttLink) -> Result<Published, AgentError> {
        let mut report = Published::default();
        loop {
            // Late answers to earlier batches may still settle queued messages; device lists are taken in.
            let mut none = InFlight::new();
            while let Ok(msg) = mqtt.incoming.try_recv() {
                self.on_downlink(msg, &mut none, &mut report)?;
            }
            let (mut batch, body) = self.next_batch(MAX_MQTT_BATCH_BYTES)?;
            if batch.is_empty() {
                break;
            }
            let total = batch.len();
            mqtt.client
                .try_publish(mqtt.topic("up"), QoS::AtLeastOnce, false, body)
                .map_err(|e| AgentError::Unreachable(e.to_string()))?;
            let deadline = tokio::time::Instant::now() + ACK_TIMEOUT;
            while !batch.is_empty() {
                let answer = tokio::time::timeout_at(deadline, mqtt.incoming.recv())
                    .await
                    .map_err(|_| {
                        AgentError::NoAck(format!(
                            "{} of {total} message(s) unanswered after {} s",
                            batch.len(),
                            ACK_TIMEOUT.as_secs()
                        ))
                    })?
                    .ok_or_else(|| AgentError::Unreachable("MQTT connection closed".into()))?;
                self.on_downlink(answer, &mut batch, &mut report)?;
            }
        }
        report.ignored += mqtt.dropped.swap(0, Ordering::Relaxed) as usize;
        report.pending = self.pending()?;
        Ok(report)
    }

    fn on_downlink(
        &mut self,
        (kind, payload): (Incoming, Vec<u8>),
        flight: &mut InFlight,
        report: &mut Published,
    ) -> Result<(), AgentError> {
        match kind {
            Incoming::Ack => {
                self.settle(&payload, flight, report)?;
            }
            Incoming::DeviceList => match self.accept_device_list(&payload) {
                Ok(update) => report.list = Some(update),
                Err(e) => {
                    report.ignored += 1;
                    tracing::warn!(%e, ignored = report.ignored, "ignoring a device list from the broker");
                }
            },
        }
        Ok(())
    }

    /// Checks a signed device list (see [`Agent::accept_device_list`]).
    pub fn accept_device_list(&mut self, bytes: &[u8]) -> Result<ListUpdate, AgentError> {
        let key = self.hub_signing.ok_or(AgentError::NoHubKey)?;
        accept_list(&self.dir, &key, self.device, bytes)
    }

    /// Fetches the hub's current device list over HTTP and checks it, fetching the hub's signing key first if the
    /// device does not have it yet.
    pub async fn refresh_device_list(&mut self) -> Result<ListUpdate, AgentError> {
        if self.hub_signing.is_none() {
            let url = format!("{}/v1/devices/{}/hub-key", self.hub, self.device);
            let body = get(&self.http, &url).await?;
            let key =
                custos_proto::uplink::open_hub_key(&RustCrypto, &self.link, self.device, &body)?;
            let mut state = DeviceState::read(&self.dir)?;
            if let Some(s) = state.session.as_mut() {
                s.hub_signing = Some(key);
            }
            state.save(&self.dir)?;
            self.hub_signing = Some(key);
        }
        let bytes = fetch_device_list(&self.http, &self.hub, &self.link, self.device).await?;
        self.accept_device_list(&bytes)
    }
}

/// Checks a signed device list against the hub's key and keeps it in `dir` if it is newer.
fn accept_list(
    dir: &Path,
    key: &[u8; 32],
    device: DeviceId,
    bytes: &[u8],
) -> Result<ListUpdate, AgentError> {
    let list = DeviceList::verify(&RustCrypto, bytes, key)?;
    let path = dir.join("device-list.cose");
    let have = match fs::read(&path) {
        Ok(b) => Some(DeviceList::verify(&RustCrypto, &b, key)?.version),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(StateError::Io { path, source: e }.into()),
    };
    if let Some(have) = have.filter(|&h| h > list.version) {
        return Err(AgentError::StaleList {
            have,
            got: list.version,
        });
    }
    let changed = have != Some(list.version);
    if changed {
        write_atomic(&path, bytes)?;
    }
    // A list signed before this device was admitted leaves it out too (it may arrive first: a retained MQTT
    // message, or a list signed while the device was joining). Only a list newer than one that named the device
    // says it was revoked; the version that first named it is kept in `listed-since`.
    let since_path = dir.join("listed-since");
    let since: Option<i64> = fs::read_to_string(&since_path)
        .ok()
        .and_then(|t| t.trim().parse().ok());
    let on_list = list.contains(device);
    if on_list && since.is_none_or(|v| list.version < v) {
        write_atomic(&since_path, list.version.to_string().as_bytes())?;
    }
    let authorized = on_list || since.is_none_or(|v| list.version < v);
    if changed && !on_list {
        if authorized {
            tracing::info!(
                version = list.version,
                "a device list from before this device was admitted; waiting for a newer one"
            );
        } else {
            tracing::warn!(
                version = list.version,
                "this device is not on the hub's device list: revoked"
            );
        }
    }
    Ok(ListUpdate {
        version: list.version,
        changed,
        authorized,
    })
}

/// The agent's HTTP client: 10 s per call, the hub verified as `trust` says.
fn http_client(trust: &TlsTrust) -> Result<reqwest::Client, AgentError> {
    custos_client::tls::http_client(
        reqwest::Client::builder().timeout(Duration::from_secs(10)),
        trust,
    )
    .map_err(tls_err)
}

/// A failed request: a certificate the agent does not trust is no transient failure.
fn transport_err(e: reqwest::Error) -> AgentError {
    let text = custos_client::error_text(&e);
    if custos_client::tls::is_refused_certificate(&e) {
        AgentError::Tls(text)
    } else {
        AgentError::Unreachable(text)
    }
}

pub(crate) fn tls_err(e: custos_client::ClientError) -> AgentError {
    AgentError::Tls(e.to_string())
}

async fn post(http: &reqwest::Client, url: &str, body: Vec<u8>) -> Result<Vec<u8>, AgentError> {
    let resp = http
        .post(url)
        .header("content-type", "application/octet-stream")
        .body(body)
        .send()
        .await
        .map_err(transport_err)?;
    answer(resp).await
}

/// `GET /v1/device-list?device=D` with a fresh device token (the hub gives the list to devices and its operator).
async fn fetch_device_list(
    http: &reqwest::Client,
    hub: &str,
    link: &LinkKeys,
    device: DeviceId,
) -> Result<Vec<u8>, AgentError> {
    let resp = http
        .get(format!("{hub}/v1/device-list?device={device}"))
        .header("authorization", crate::control::device_token(link, device))
        .send()
        .await
        .map_err(transport_err)?;
    answer(resp).await
}

async fn get(http: &reqwest::Client, url: &str) -> Result<Vec<u8>, AgentError> {
    let resp = http.get(url).send().await.map_err(transport_err)?;
    answer(resp).await
}

async fn answer(resp: reqwest::Response) -> Result<Vec<u8>, AgentError> {
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

/// Jittered exponential backoff ("full jitter"): after the `n`th failure in a row the agent waits a random time
/// between 0 and `min(cap, base · 2ⁿ⁻¹)` (never less than 50 ms); a refusal (an HTTP 4xx) waits as after the fourth
/// failure at least. [`Backoff::reset`] after a success.
#[derive(Clone, Debug)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    failures: u32,
}

impl Default for Backoff {
    /// 1 s doubling to 60 s.
    fn default() -> Self {
        Self::new(Duration::from_secs(1), Duration::from_secs(60))
    }
}

impl Backoff {
    /// Backoff from `base`, doubling up to `cap`.
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap,
            failures: 0,
        }
    }

    /// After a success.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// How long to wait after one more failure; `refused` for a refusal.
    pub fn next(&mut self, refused: bool) -> Duration {
        if refused {
            self.failures = self.failures.max(3);
        }
        let ceiling = self
            .base
            .saturating_mul(1u32 << self.failures.min(20))
            .min(self.cap);
        self.failures = self.failures.saturating_add(1);
        let millis = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
        let wait = OsRng.next_u64() % millis.saturating_add(1);
        Duration::from_millis(wait.max(50))
    }
}

impl AgentError {
    /// Whether this is the hub's or the network's failure, to try again later: no answer, an HTTP error status
    /// (anyone in between can forge one), no authenticated ack. Anything else is local.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Unreachable(_) | Self::Refused { .. } | Self::NoAck(_)
        )
    }

    /// Whether the hub (or someone posing as it) refused the request with a 4xx status.
    pub fn is_refusal(&self) -> bool {
        matches!(self, Self::Refused { status, .. } if (400..500).contains(status))
    }

    /// Whether the local disk is full (or the device's quota used up).
    pub fn is_disk_full(&self) -> bool {
        let full = |e: &std::io::Error| {
            matches!(
                e.kind(),
                std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
            )
        };
        match self {
            Self::State(StateError::Io { source, .. }) => full(source),
            Self::Keys(e) => e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>().is_some_and(full)
                    || matches!(c.downcast_ref::<StateError>(), Some(StateError::Io { source, .. }) if full(source))
            }),
            _ => false,
        }
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
    /// Downlink messages dropped unread because they do not authenticate (forged acks, anything on `…/error`).
    dropped: Arc<AtomicU64>,
}

impl Agent {
    /// Connects to the MQTT broker at `url` (`mqtt://…`, or `mqtts://…` verified as `trust` says) for this
    /// device. Acks are checked under the device's session as they arrive and forged ones dropped at once, so
    /// that a flood of them cannot crowd out the hub's real acks.
    pub fn connect_mqtt(
        &self,
        url: &str,
        prefix: &str,
        trust: &TlsTrust,
    ) -> Result<MqttLink, AgentError> {
        let session = self.state.session.as_ref().ok_or(AgentError::NotJoined)?;
        let keys = LinkKeys::derive(&RustCrypto, &session.session_key)?;
        MqttLink::open(url, prefix, self.state.device, Some(keys), trust)
    }
}

impl MqttLink {
    /// Connects to `mqtt://host:port` for `device`; reconnects on its own in the background. Without the device's
    /// keys it cannot drop forged acks before they are queued for the agent: prefer [`Agent::connect_mqtt`].
    pub fn connect(url: &str, prefix: &str, device: DeviceId) -> Result<Self, AgentError> {
        Self::open(url, prefix, device, None, &TlsTrust::System)
    }

    fn open(
        url: &str,
        prefix: &str,
        device: DeviceId,
        keys: Option<LinkKeys>,
        trust: &TlsTrust,
    ) -> Result<Self, AgentError> {
        let (host, port, tls) = custos_proto::codec::mqtt_broker(url)
            .map_err(|e| AgentError::Unreachable(format!("`{url}`: {e}")))?;
        let mut opts = MqttOptions::new(
            format!("custos-dev-{}", hex::encode(device.0)),
            host.to_string(),
            port,
        );
        if tls {
            let config = trust.client_config().map_err(tls_err)?;
            opts.set_transport(rumqttc::Transport::tls_with_config(
                rumqttc::TlsConfiguration::Rustls(Arc::new(config)),
            ));
        }
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
        let dropped = Arc::new(AtomicU64::new(0));
        let counter = dropped.clone();
        let task = tokio::spawn(async move {
            let mut logged = tokio::time::Instant::now();
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        // Acks and refusals at QoS 0: a lost one only means the batch is sent again, and a flood
                        // of forged ones then costs the device no PUBACKs.
                        let _ = sub.subscribe(ack_topic.clone(), QoS::AtMostOnce).await;
                        let _ = sub.subscribe(error_topic.clone(), QoS::AtMostOnce).await;
                        let _ = sub.subscribe(list_topic.clone(), QoS::AtLeastOnce).await;
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let topic = String::from_utf8_lossy(&p.topic);
                        let mut payload = p.payload.to_vec();
                        let kind = if topic == ack_topic {
                            // Keep only the acks that verify under the session: what is left is the hub's.
                            if let Some(keys) = &keys {
                                let total = payload.len().div_ceil(ACK_LEN);
                                payload = payload
                                    .chunks(ACK_LEN)
                                    .filter(|a| open_ack(&RustCrypto, keys, device, a).is_ok())
                                    .flatten()
                                    .copied()
                                    .collect();
                                let forged = total - payload.len() / ACK_LEN;
                                counter.fetch_add(forged as u64, Ordering::Relaxed);
                                if payload.is_empty() {
                                    continue;
                                }
                            }
                            Incoming::Ack
                        } else if topic == error_topic {
                            // Unauthenticated (anyone on the broker can post one): counted, never acted on. The
                            // agent waits for an authenticated ack, and sends the batch again without one.
                            counter.fetch_add(1, Ordering::Relaxed);
                            continue;
                        } else if topic == list_topic {
                            Incoming::DeviceList
                        } else {
                            continue;
                        };
                        if logged.elapsed() >= Duration::from_secs(10) {
                            let n = counter.load(Ordering::Relaxed);
                            if n > 0 {
                                tracing::warn!(
                                    dropped = n,
                                    "unauthenticated downlink messages ignored so far (forged acks, refusals on the error topic)"
                                );
                            }
                            logged = tokio::time::Instant::now();
                        }
                        // Never block the connection: if nobody reads (the agent backs off), drop what comes;
                        // unanswered batches are sent again.
                        match tx.try_send((kind, payload)) {
                            Ok(()) => {}
                            Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => {
                                tracing::debug!("dropping a downlink message nobody reads")
                            }
                            Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => break,
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
            dropped,
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
