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
use custos_proto::uplink::LinkKeys;
use custos_proto::{DeviceId, RustCrypto};

use crate::agent::AgentError;
use crate::state::write_atomic;

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
        let clock = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let token =
            custos_proto::uplink::seal_pairing_wait(&RustCrypto, &self.link, self.device, clock);
        format!("Custos-Device {}", hex::encode(token))
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

fn client_err(e: custos_client::ClientError) -> AgentError {
    match e {
        custos_client::ClientError::Refused {
            status, message, ..
        } => AgentError::Refused { status, message },
        other => AgentError::Unreachable(other.to_string()),
    }
}
