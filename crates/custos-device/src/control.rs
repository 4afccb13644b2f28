//! Owner control on the device: it takes commands, lists of authorized senders and claims from its queue at the
//! hub, acts on those that authenticate under keys only it and its owner's side hold, and answers each so that
//! the sender — not the hub — can tell it was done (docs/wire.md §11).
//!
//! Files in the state directory: `control.bin` (the list of authorized senders and the high-water mark of each
//! sender's counter, written atomically), `current.state` (the actuator's state, see [`crate::actuator`]) and
//! `control.cursor` (the last queue position read). The high-water mark is written *before* the actuator moves:
//! a device that crashes after writing it and before acting has lost one command (the sender sees no answer and
//! sends a new one), but no crash and no reboot ever lets a command run twice.

use std::path::{Path, PathBuf};
use std::time::Duration;

use custos_client::{HubClient, Queued};
use custos_proto::control::{self, DeviceControl, Op, OpenedCommand, OwnerKeys, Refusal, Status};
use custos_proto::uplink::LinkKeys;
use custos_proto::{DeviceId, RustCrypto, Secret};
use rand_core::{OsRng, RngCore};

use crate::actuator::{Actuator, ActuatorError, CurrentState};
use crate::agent::AgentError;
use crate::state::{StateError, write_atomic};

/// The device's line to its control queue at the hub (HTTP long-poll), authenticated by its device token.
pub struct ControlChannel {
    client: HubClient,
    device: DeviceId,
    link: LinkKeys,
    cursor_path: PathBuf,
    cursor: i64,
}

impl ControlChannel {
    /// A channel to `hub` for `device`, whose session gives `link`; resumes after the position kept in `dir`.
    pub fn new(
        hub: &str,
        trust: &custos_client::TlsTrust,
        dir: &Path,
        device: DeviceId,
        link: LinkKeys,
    ) -> Result<Self, AgentError> {
        let client = HubClient::new(hub, Duration::from_secs(10), trust)
            .map_err(|e| AgentError::Unreachable(e.to_string()))?;
        let cursor_path = dir.join("control.cursor");
        let cursor = std::fs::read_to_string(&cursor_path)
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0);
        Ok(Self {
            client,
            device,
            link,
            cursor_path,
            cursor,
        })
    }

    fn token(&self) -> String {
        device_token(&self.link, self.device)
    }

    /// The messages queued after the last one taken, waiting up to `wait`; also the device's heartbeat, with
    /// its actuator `state`.
    pub async fn fetch(
        &self,
        wait: Duration,
        state: Option<&str>,
    ) -> Result<Vec<Queued>, AgentError> {
        self.client
            .control_fetch(self.device, self.cursor, wait, state, &self.token())
            .await
            .map_err(client_err)
    }

    /// Sends the answer to message `id`.
    pub async fn answer(&self, id: i64, answer: &[u8]) -> Result<(), AgentError> {
        self.client
            .control_answer(self.device, id, answer, &self.token())
            .await
            .map_err(client_err)
    }

    /// Marks message `id` taken: it is not fetched again after a restart. Called once the message was handled
    /// (its effect and high-water mark on disk), before the answer is sent: an answer lost on the way is not
    /// worth running a command twice, and the sender can ask again with a new one.
    pub fn taken(&mut self, id: i64) -> Result<(), AgentError> {
        if id > self.cursor {
            self.cursor = id;
            write_atomic(&self.cursor_path, id.to_string().as_bytes())?;
        }
        Ok(())
    }
}

/// A fresh device token: the pairing-wait token (docs/wire.md §8) made now.
pub(crate) fn raw_device_token(
    link: &LinkKeys,
    device: DeviceId,
) -> [u8; custos_proto::uplink::PAIRING_WAIT_LEN] {
    let clock = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    custos_proto::uplink::seal_pairing_wait(&RustCrypto, link, device, clock)
}

/// A fresh device token as `Authorization` carries it: `Custos-Device <hex>`.
pub(crate) fn device_token(link: &LinkKeys, device: DeviceId) -> String {
    format!(
        "Custos-Device {}",
        hex::encode(raw_device_token(link, device))
    )
}

pub(crate) fn client_err(e: custos_client::ClientError) -> AgentError {
    match e {
        custos_client::ClientError::Refused {
            status, message, ..
        } => AgentError::Refused { status, message },
        other => AgentError::Unreachable(other.to_string()),
    }
}

/// The device's side of owner control: its control state, its actuator and the state it last applied.
pub struct Controller {
    dir: PathBuf,
    device: DeviceId,
    control: DeviceControl,
    actuator: Box<dyn Actuator>,
    current: Option<CurrentState>,
    /// Messages refused without an answer (unauthenticated: forged, altered, from a revoked member, under an old
    /// user–device key), for logs and tests.
    pub refused: u64,
    link: LinkKeys,
}

/// The file that holds [`DeviceControl`]'s bytes.
pub const CONTROL_FILE: &str = "control.bin";

/// Forgets the members of the list in `dir` (see [`DeviceControl::drop_members`]); called when the device is
/// paired again, before the new user–device key is kept.
pub fn drop_members(dir: &Path) -> Result<(), AgentError> {
    let path = dir.join(CONTROL_FILE);
    let mut control = match std::fs::read(&path) {
        Ok(bytes) => DeviceControl::decode(&bytes).map_err(|e| {
            AgentError::State(StateError::Invalid {
                path: path.clone(),
                why: e.to_string(),
            })
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(AgentError::State(StateError::Io { path, source: e })),
    };
    control.drop_members();
    write_atomic(&path, &control.encode())?;
    Ok(())
}

/// What the device did with one control message.
#[derive(Debug)]
pub enum Handled {
    /// A command ran (or was refused with an authenticated answer): the answer for the sender.
    Answer {
        /// The answer bytes.
        answer: Vec<u8>,
        /// The status.
        status: Status,
    },
    /// A list of authorized senders was taken (or re-acknowledged): the ack for the owner.
    ListAck {
        /// The ack bytes.
        answer: Vec<u8>,
        /// The version now held.
        version: u64,
    },
    /// A claim opened: the claim proof for the hub.
    Claim {
        /// The proof bytes.
        answer: Vec<u8>,
    },
    /// Not acted on and not answered: it does not authenticate (or is a stale list).
    Refused(String),
}

impl Handled {
    /// The bytes to send back, if any.
    pub fn answer(&self) -> Option<&[u8]> {
        match self {
            Self::Answer { answer, .. } | Self::ListAck { answer, .. } | Self::Claim { answer } => {
                Some(answer)
            }
            Self::Refused(_) => None,
        }
    }
}

impl Controller {
    /// Opens the device's control state in `dir` and restores the actuator's last state (the seed's
    /// `current.state`): a switch that was on before a reboot is on again. A state the actuator refuses at start
    /// is logged; the device still runs.
    pub fn open(
        dir: &Path,
        device: DeviceId,
        link: LinkKeys,
        mut actuator: Box<dyn Actuator>,
    ) -> Result<Self, AgentError> {
        let path = dir.join(CONTROL_FILE);
        let control = match std::fs::read(&path) {
            Ok(bytes) => DeviceControl::decode(&bytes).map_err(|e| {
                AgentError::State(StateError::Invalid {
                    path: path.clone(),
                    why: e.to_string(),
                })
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => DeviceControl::new(),
            Err(e) => return Err(AgentError::State(StateError::Io { path, source: e })),
        };
        let current = CurrentState::load(dir)?;
        if let Some(s) = &current {
            match actuator.apply(s.as_str()) {
                Ok(()) => {
                    tracing::info!(state = s.as_str(), actuator = %actuator.describe(), "state restored")
                }
                Err(e) => tracing::error!(state = s.as_str(), %e, "could not restore the state"),
            }
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            device,
            control,
            actuator,
            current,
            refused: 0,
            link,
        })
    }

    /// The actuator's state as last applied.
    pub fn state(&self) -> Option<&str> {
        self.current.as_ref().map(CurrentState::as_str)
    }

    /// The device's control state (list version, members, marks).
    pub fn control(&self) -> &DeviceControl {
        &self.control
    }

    fn persist(&self) -> Result<(), AgentError> {
        write_atomic(&self.dir.join(CONTROL_FILE), &self.control.encode())?;
        Ok(())
    }

    /// Handles one control message with the current user–device key `udk` at device time `now` (Unix
    /// seconds). A command that authenticates and is fresh: its mark is written to disk, then the actuator
    /// moves, then the answer is sealed. Errors are local failures (the disk); what the message itself gets
    /// wrong is in [`Handled::Refused`] or in the answer's status.
    pub fn handle(&mut self, udk: &Secret, now: u64, msg: &[u8]) -> Result<Handled, AgentError> {
        let owner = OwnerKeys::from_udk(&RustCrypto, udk)?;
        let refuse = |this: &mut Self, why: String| {
            this.refused += 1;
            tracing::warn!(refused = this.refused, %why, "control message refused");
            Ok(Handled::Refused(why))
        };
        match msg.first() {
            Some(&control::COMMAND) => {}
            Some(&control::LIST) => {
                return match self
                    .control
                    .accept_list(&RustCrypto, &owner, self.device, msg)
                {
                    Ok(done) => {
                        if done.changed {
                            self.persist()?;
                        }
                        tracing::info!(
                            version = done.version,
                            members = self.control.members().count(),
                            "authorized senders updated"
                        );
                        let answer = control::seal_list_ack(
                            &RustCrypto,
                            custos_proto::Suite::AES256GCM,
                            &owner,
                            self.device,
                            done.version,
                            nonce(),
                        )?;
                        Ok(Handled::ListAck {
                            answer,
                            version: done.version,
                        })
                    }
                    Err(e) => refuse(self, format!("list: {e}")),
                };
            }
            Some(&control::CLAIM) => {
                return match control::open_claim(&RustCrypto, &owner, self.device, msg) {
                    Ok(token) => {
                        let proof = custos_proto::uplink::seal_claim_proof(
                            &RustCrypto,
                            &self.link,
                            self.device,
                            &token,
                        );
                        tracing::info!("claim opened: proving it to the hub");
                        Ok(Handled::Claim {
                            answer: proof.to_vec(),
                        })
                    }
                    Err(e) => refuse(self, format!("claim: {e}")),
                };
            }
            other => return refuse(self, format!("unknown control message type {other:?}")),
        }
        let (cmd, status) =
            match self
                .control
                .open_command(&RustCrypto, &owner, self.device, now, msg)
            {
                Ok(cmd) => {
                    // The mark reaches the disk before anything moves: no crash, reboot or replay runs it twice.
                    self.control.commit(&cmd);
                    self.persist()?;
                    let status = self.act(&cmd)?;
                    (cmd, status)
                }
                Err(Refusal::Answered(cmd, status)) => {
                    tracing::warn!(
                        sender = cmd.header.sender,
                        counter = cmd.header.counter,
                        ?status,
                        "command refused"
                    );
                    (cmd, status)
                }
                Err(Refusal::Unauthenticated(e)) => return refuse(self, format!("command: {e}")),
            };
        let keys = self
            .control
            .sender_keys(&RustCrypto, &owner, cmd.header.sender)?
            .ok_or(AgentError::Protocol(custos_proto::Error::Authentication))?;
        let state = self.state().unwrap_or("").as_bytes().to_vec();
        let answer = control::seal_answer(
            &RustCrypto,
            &keys,
            self.device,
            &cmd.header,
            nonce(),
            status,
            &state,
        )?;
        Ok(Handled::Answer { answer, status })
    }

    fn act(&mut self, cmd: &OpenedCommand) -> Result<Status, AgentError> {
        if cmd.op == Op::Get {
            return Ok(Status::Done);
        }
        let Ok(text) = std::str::from_utf8(&cmd.value) else {
            return Ok(Status::BadValue);
        };
        let Ok(state) = CurrentState::new(text) else {
            return Ok(Status::BadValue);
        };
        match self.actuator.apply(state.as_str()) {
            Ok(()) => {
                state.save(&self.dir)?;
                tracing::info!(
                    state = state.as_str(),
                    sender = cmd.header.sender,
                    "command done"
                );
                self.current = Some(state);
                Ok(Status::Done)
            }
            Err(ActuatorError::BadValue(v)) => {
                tracing::warn!(value = %v, "the actuator does not take this value");
                Ok(Status::BadValue)
            }
            Err(ActuatorError::Failed(why)) => {
                tracing::error!(%why, "the actuator failed");
                Ok(Status::Failed)
            }
        }
    }
}

fn nonce() -> [u8; 12] {
    let mut n = [0u8; 12];
    OsRng.fill_bytes(&mut n);
    n
}

/// Handles message `id` unless it was taken already (it may come over MQTT and HTTP both): acts on it, marks it
/// taken, and returns what the device did.
async fn handle_one(
    controller: &tokio::sync::Mutex<Controller>,
    channel: &mut ControlChannel,
    udk: Option<&Secret>,
    id: i64,
    body: &[u8],
    seen: &mut impl FnMut(i64, &Handled, &Controller),
) -> Result<Option<Handled>, AgentError> {
    let mut c = controller.lock().await;
    if id <= channel.cursor {
        return Ok(None);
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let handled = match udk {
        Some(k) => c.handle(k, now, body)?,
        None => {
            c.refused += 1;
            Handled::Refused("the device is not paired".into())
        }
    };
    channel.taken(id)?;
    seen(id, &handled, &c);
    Ok(Some(handled))
}

/// Handles messages fetched over HTTP and answers them there.
async fn take_fetched(
    controller: &tokio::sync::Mutex<Controller>,
    channel: &mut ControlChannel,
    udk: Option<&Secret>,
    messages: Vec<Queued>,
    seen: &mut impl FnMut(i64, &Handled, &Controller),
) -> Result<(), AgentError> {
    for m in messages {
        if let Some(h) = handle_one(controller, channel, udk, m.id, &m.body, seen).await?
            && let Some(a) = h.answer()
        {
            answer_http(channel, m.id, a).await;
        }
    }
    Ok(())
}

/// Sends an answer over HTTP: a few tries; past that the sender sees no answer and may send a new command.
async fn answer_http(channel: &ControlChannel, id: i64, answer: &[u8]) {
    let mut tries = crate::agent::Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    for attempt in 1..=5 {
        match channel.answer(id, answer).await {
            Ok(()) => return,
            Err(e) if attempt < 5 && e.is_transient() && !e.is_refusal() => {
                tokio::time::sleep(tries.next(false)).await
            }
            Err(e) => {
                tracing::warn!(%e, id, "the answer did not reach the hub");
                return;
            }
        }
    }
}

/// Serves the device's control queue over HTTP until a local failure (the disk) ends it: long-polls for what
/// comes (each fetch is also the heartbeat, with the actuator's state, at least every `heartbeat`), handles each
/// message and answers it. Network failures back off and try again. `seen` is told about every message handled,
/// for logs. Without a user–device key (the device was never paired) every message is refused.
pub async fn serve(
    controller: std::sync::Arc<tokio::sync::Mutex<Controller>>,
    mut channel: ControlChannel,
    udk: Option<Secret>,
    heartbeat: Duration,
    mut seen: impl FnMut(i64, &Handled, &Controller),
) -> AgentError {
    let mut backoff = crate::agent::Backoff::default();
    loop {
        let state = controller.lock().await.state().map(str::to_owned);
        let messages = match channel.fetch(heartbeat, state.as_deref()).await {
            Ok(m) => {
                backoff.reset();
                m
            }
            Err(e) => {
                let wait = backoff.next(e.is_refusal());
                tracing::warn!(%e, "no control messages fetched; trying again in {} ms", wait.as_millis());
                tokio::time::sleep(wait).await;
                continue;
            }
        };
        if let Err(e) =
            take_fetched(&controller, &mut channel, udk.as_ref(), messages, &mut seen).await
        {
            return e;
        }
    }
}

/// Where a device takes its control messages over MQTT.
#[derive(Clone, Debug)]
pub struct MqttControl {
    /// The broker, `mqtt://host:port` or `mqtts://host:port`.
    pub url: String,
    /// The topic prefix the hub uses.
    pub prefix: String,
    /// How to trust an `mqtts://` broker.
    pub trust: custos_client::TlsTrust,
}

/// Like [`serve`], with control messages pushed over MQTT (`{prefix}/{device}/control`, `id (8) ‖ message`) and
/// answered there (`{prefix}/{device}/answer`, `id (8) ‖ device token (25) ‖ answer`), so a command reaches the
/// device at once without it holding an HTTP request open. Every `heartbeat` the device still calls the HTTP
/// queue without waiting: that is its heartbeat (with its state), and it catches up with messages queued while
/// it was offline (MQTT keeps nothing for it). A message that comes both ways is handled once. Anyone on the
/// broker can publish there: what does not authenticate is refused like anything else.
pub async fn serve_mqtt(
    controller: std::sync::Arc<tokio::sync::Mutex<Controller>>,
    mut channel: ControlChannel,
    udk: Option<Secret>,
    heartbeat: Duration,
    mqtt: MqttControl,
    mut seen: impl FnMut(i64, &Handled, &Controller),
) -> AgentError {
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::mqttbytes::v5::Packet;
    use rumqttc::v5::{AsyncClient, Event, MqttOptions};
    let (host, port, tls) = match custos_proto::codec::mqtt_broker(&mqtt.url) {
        Ok(b) => b,
        Err(e) => return AgentError::Unreachable(format!("`{}`: {e}", mqtt.url)),
    };
    let mut tag = [0u8; 4];
    OsRng.fill_bytes(&mut tag);
    let mut opts = MqttOptions::new(
        format!(
            "custos-ctl-{}-{}",
            hex::encode(channel.device.0),
            hex::encode(tag)
        ),
        host.to_string(),
        port,
    );
    if tls {
        match mqtt.trust.client_config() {
            Ok(config) => opts.set_transport(rumqttc::Transport::tls_with_config(
                rumqttc::TlsConfiguration::Rustls(std::sync::Arc::new(config)),
            )),
            Err(e) => return crate::agent::tls_err(e),
        };
    }
    opts.set_keep_alive(Duration::from_secs(10));
    opts.set_clean_start(true);
    opts.set_max_packet_size(Some(64 << 10));
    let mut net = opts.network_options();
    net.set_tcp_nodelay(true);
    opts.set_network_options(net);
    let (client, mut events) = AsyncClient::new(opts, 64);
    let topic = format!("{}/{}/control", mqtt.prefix, channel.device);
    let answers = format!("{}/{}/answer", mqtt.prefix, channel.device);
    let (tx, mut pushed) = tokio::sync::mpsc::channel::<(i64, Vec<u8>)>(64);
    let sub = client.clone();
    let reader = tokio::spawn(async move {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    let _ = sub.subscribe(topic.clone(), QoS::AtLeastOnce).await;
                }
                Ok(Event::Incoming(Packet::Publish(p))) if p.topic.as_ref() == topic.as_bytes() => {
                    // `id (8) ‖ message`; anything shorter is junk.
                    if let Some((id, body)) = p.payload.split_first_chunk::<8>() {
                        let _ = tx.try_send((i64::from_be_bytes(*id), body.to_vec()));
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(%e, "control over MQTT: the broker connection failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    });
    struct Abort(tokio::task::JoinHandle<()>);
    impl Drop for Abort {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    let _reader = Abort(reader);
    let mut ticker = tokio::time::interval(heartbeat);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            Some((id, body)) = pushed.recv() => {
                match handle_one(&controller, &mut channel, udk.as_ref(), id, &body, &mut seen).await {
                    Ok(Some(h)) => {
                        if let Some(a) = h.answer() {
                            let mut payload = id.to_be_bytes().to_vec();
                            payload.extend_from_slice(&raw_device_token(&channel.link, channel.device));
                            payload.extend_from_slice(a);
                            if client.publish(answers.clone(), QoS::AtLeastOnce, false, payload).await.is_err() {
                                answer_http(&channel, id, a).await;
                            }
                        }
                    }
                    Ok(None) => {}
                    Err(e) => return e,
                }
            }
            _ = ticker.tick() => {
                let state = controller.lock().await.state().map(str::to_owned);
                match channel.fetch(Duration::ZERO, state.as_deref()).await {
                    Ok(messages) => {
                        if let Err(e) = take_fetched(&controller, &mut channel, udk.as_ref(), messages, &mut seen).await {
                            return e;
                        }
                    }
                    Err(e) => tracing::warn!(%e, "heartbeat: the hub's control queue did not answer"),
                }
            }
        }
    }
}
