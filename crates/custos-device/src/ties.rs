//! The device's side of device-to-device keys (docs/wire.md §12): asking the hub for a key to share with other
//! devices, taking the keys others asked for, and telling the hub it holds them.
//!
//! What a [`KeyNode`] returns is a [`SessionKey`]; [`SessionKey::link`] turns it into the node-to-node channel
//! (confirmation, then data with a replay window), which runs over whatever link the two devices share. The hub
//! never sees that traffic and cannot open it.

use std::collections::HashMap;
use std::time::Duration;

use custos_client::{HubClient, KeyAnswer, TlsTrust};
use custos_proto::ties::{self, KeyId, NodeKeys, Request, Seed, SessionKey};
use custos_proto::uplink::LinkKeys;
use custos_proto::{DeviceId, RustCrypto, Secret};
use rand_core::{OsRng, RngCore};

use crate::agent::AgentError;
use crate::control::client_err;

/// How a key is made and delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The requester draws the key; the hub translates it and holds it for the peers (`41`).
    KtcDirect,
    /// The requester draws the key; the hub translates it and returns the packages for the requester to forward
    /// (`42`).
    KtcIndirect,
    /// The hub draws the key and holds it for the peers (`43`).
    KdcDirect,
    /// The hub draws the key and returns the packages to forward (`44`).
    KdcIndirect,
}

impl Mode {
    /// The request's type byte.
    pub const fn kind(self) -> u8 {
        match self {
            Self::KtcDirect => ties::KTC_DIRECT,
            Self::KtcIndirect => ties::KTC_INDIRECT,
            Self::KdcDirect => ties::KDC_DIRECT,
            Self::KdcIndirect => ties::KDC_INDIRECT,
        }
    }

    /// Its name on the command line and in docs: `ktc-direct`, `ktc-indirect`, `kdc-direct`, `kdc-indirect`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::KtcDirect => "ktc-direct",
            Self::KtcIndirect => "ktc-indirect",
            Self::KdcDirect => "kdc-direct",
            Self::KdcIndirect => "kdc-indirect",
        }
    }

    /// Every mode.
    pub const ALL: [Self; 4] = [
        Self::KtcDirect,
        Self::KtcIndirect,
        Self::KdcDirect,
        Self::KdcIndirect,
    ];
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| {
                format!("`{s}` is not a mode: ktc-direct, ktc-indirect, kdc-direct or kdc-indirect")
            })
    }
}

/// A key the hub issued to its requester.
#[derive(Debug)]
pub struct Issued {
    /// The requester's own copy of the key.
    pub key: SessionKey,
    /// For indirect modes: the packages the requester forwards, to each peer.
    pub forward: Vec<(DeviceId, Vec<u8>)>,
}

/// A device's line to the hub for device-to-device keys.
pub struct KeyNode {
    client: HubClient,
    device: DeviceId,
    keys: NodeKeys,
    link: LinkKeys,
    /// The device's X25519 identity key, pinned at admission: its static key for Noise KK between nodes.
    identity: Secret,
    /// Keys taken, by (requester, kid), with their expiry: a package for one of them again is a replay.
    held: HashMap<(DeviceId, KeyId), u32>,
    /// The device's TPM, once its storage parent is registered: TPM packages are opened there.
    #[cfg(feature = "tpm")]
    tpm: Option<custos_vault::TpmSealer>,
}

impl std::fmt::Debug for KeyNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyNode")
            .field("device", &self.device)
            .field("held", &self.held.len())
            .finish_non_exhaustive()
    }
}

impl KeyNode {
    /// A node for `device` at `hub`, with its server–device key `sdk` and its identity key.
    pub fn new(
        hub: &str,
        trust: &TlsTrust,
        device: DeviceId,
        sdk: &Secret,
        identity: Secret,
    ) -> Result<Self, AgentError> {
        let client = HubClient::new(hub, Duration::from_secs(10), trust)
            .map_err(|e| AgentError::Unreachable(e.to_string()))?;
        Ok(Self {
            client,
            device,
            keys: NodeKeys::derive(&RustCrypto, sdk)?,
            link: LinkKeys::derive(&RustCrypto, sdk)?,
            identity,
            held: HashMap::new(),
            #[cfg(feature = "tpm")]
            tpm: None,
        })
    }

    /// Registers this device's TPM storage parent with the hub and keeps `tpm` to open what the hub then sends:
    /// deliveries and grants as TPM import blobs, whose session key the TPM computes (docs/device-keys.md, "TPM
    /// duplication").
    #[cfg(feature = "tpm")]
    pub async fn register_tpm(&mut self, tpm: custos_vault::TpmSealer) -> Result<(), AgentError> {
        let public = tpm.storage_public().map_err(tpm_err)?;
        let mut msg = [0u8; ties::tpm::MAX_TPM_PARENT_MESSAGE];
        let n =
            ties::tpm::seal_tpm_parent(&RustCrypto, self.device, &self.keys, &public, &mut msg)?;
        self.client
            .key_tpm_parent(self.device, &msg[..n])
            .await
            .map_err(client_err)?;
        self.tpm = Some(tpm);
        Ok(())
    }

    /// Opens a package for this device: a plain one in software, a TPM one in the device's TPM (import, then
    /// `TPM2_HMAC` of the session label under the imported key).
    fn open(&self, package: &[u8], now: u64) -> Result<SessionKey, AgentError> {
        #[cfg(feature = "tpm")]
        if matches!(
            package.first(),
            Some(&ties::tpm::TPM_DELIVERY | &ties::tpm::TPM_GRANT)
        ) {
            let tpm = self.tpm.as_ref().ok_or(AgentError::Protocol(
                custos_proto::Error::InvalidValue("a TPM package, and this node registered no TPM"),
            ))?;
            let mut msg = package.to_vec();
            let p =
                ties::tpm::open_tpm_package(&RustCrypto, self.device, &self.keys, &mut msg, now)?;
            let blob = custos_vault::TpmImportBlob::from_bytes(p.blob()).map_err(tpm_err)?;
            let key = tpm.import(&blob).map_err(tpm_err)?;
            let (m, n) = p.hmac_input();
            let s = tpm.hmac(&key, &m[..n]).map_err(tpm_err)?;
            return Ok(p.into_session_key(*s));
        }
        Ok(ties::open_package(
            &RustCrypto,
            self.device,
            &self.keys,
            package,
            now,
        )?)
    }

    /// This device.
    pub fn device(&self) -> DeviceId {
        self.device
    }

    fn token(&self) -> String {
        crate::control::device_token(&self.link, self.device)
    }

    /// Asks the hub for a key shared with `peers`, alive for `lifetime` from `now` (Unix seconds). A refusal the
    /// hub authenticates is [`AgentError::KeyRefused`]; one it does not is [`AgentError::Refused`].
    pub async fn request(
        &mut self,
        mode: Mode,
        peers: &[DeviceId],
        lifetime: Duration,
        now: u64,
    ) -> Result<Issued, AgentError> {
        let mut kid = [0u8; 8];
        OsRng.fill_bytes(&mut kid);
        let expires = u32::try_from(now + lifetime.as_secs())
            .map_err(|_| custos_proto::Error::InvalidValue("expiry past 2106"))?;
        let req = Request::new(mode.kind(), self.device, peers, kid, expires)?;
        let seed = (!ties::is_distribution(req.kind)).then(|| {
            let mut b = [0u8; ties::SEED_LEN];
            OsRng.fill_bytes(&mut b);
            Seed::from_bytes(b)
        });
        let msg = req.seal(&RustCrypto, &self.keys, seed.as_ref())?;
        let answer = self
            .client
            .key_request(self.device, msg.as_bytes())
            .await
            .map_err(client_err)?;
        let mut packages = match answer {
            KeyAnswer::Issued(p) => p.into_iter(),
            KeyAnswer::Refused {
                status,
                refusal,
                message,
            } => {
                return Err(
                    match ties::open_refusal(&RustCrypto, self.device, &self.keys, &refusal) {
                        Ok((k, why)) if k == kid => AgentError::KeyRefused(why),
                        _ => AgentError::Refused { status, message },
                    },
                );
            }
        };
        let bad =
            |what: &'static str| AgentError::Protocol(custos_proto::Error::InvalidValue(what));
        let key = match &seed {
            Some(seed) => req.session_key(&RustCrypto, seed)?,
            None => {
                let grant = packages.next().ok_or(bad("the hub sent no grant"))?;
                let key = self.open(&grant, now)?;
                if key.kid() != kid || key.expires() != expires || key.peers().len() != peers.len()
                {
                    return Err(bad("the grant is not for this request"));
                }
                key
            }
        };
        let forward: Vec<_> = if ties::is_direct(req.kind) {
            Vec::new()
        } else {
            req.peers.as_slice().iter().copied().zip(packages).collect()
        };
        if !ties::is_direct(req.kind) && forward.len() != peers.len() {
            return Err(bad("the hub sent too few packages to forward"));
        }
        self.held.insert((self.device, kid), expires);
        Ok(Issued { key, forward })
    }

    /// Opens a package (a delivery from the hub, or one a requester forwarded), refusing one for a key already
    /// taken, and tells the hub this device holds it.
    pub async fn accept(&mut self, package: &[u8], now: u64) -> Result<SessionKey, AgentError> {
        let key = self.open(package, now)?;
        let id = (key.requester(), key.kid());
        if self.held.contains_key(&id) {
            // Still tell the hub: the first receipt may have been lost.
            self.receipt(&key).await?;
            return Err(AgentError::Protocol(custos_proto::Error::InvalidValue(
                "a package for a key already taken (a replay)",
            )));
        }
        self.held.retain(|_, e| u64::from(*e) > now);
        self.held.insert(id, key.expires());
        self.receipt(&key).await?;
        Ok(key)
    }

    async fn receipt(&self, key: &SessionKey) -> Result<(), AgentError> {
        let r = ties::seal_receipt(
            &RustCrypto,
            self.device,
            &self.keys,
            key.requester(),
            &key.kid(),
        )?;
        self.client
            .key_receipt(self.device, &r)
            .await
            .map_err(client_err)
    }

    /// The keys the hub holds for this device (direct modes), waiting up to `wait` for one; each is taken and
    /// its receipt sent. Packages that do not open (expired, replayed, not for this device) are skipped.
    pub async fn fetch(&mut self, wait: Duration, now: u64) -> Result<Vec<SessionKey>, AgentError> {
        let waiting = self
            .client
            .key_fetch(self.device, wait, &self.token())
            .await
            .map_err(client_err)?;
        let mut out = Vec::new();
        for p in waiting {
            match self.accept(&p.body, now).await {
                Ok(k) => out.push(k),
                Err(AgentError::Protocol(e)) => {
                    tracing::warn!(requester = %p.requester, kid = %hex::encode(p.kid), %e, "a key package was refused");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// The peers that hold key `kid` of this device, by the hub's authenticated notices, waiting up to `wait`
    /// until all do.
    pub async fn holders(&self, kid: &KeyId, wait: Duration) -> Result<Vec<DeviceId>, AgentError> {
        let peers = self
            .client
            .key_status(self.device, kid, wait, &self.token())
            .await
            .map_err(client_err)?;
        let mut out = Vec::new();
        for p in peers {
            if let Some(n) = p.notice {
                let (peer, k) = ties::open_notice(&RustCrypto, self.device, &self.keys, &n)?;
                if peer == p.peer && &k == kid {
                    out.push(peer);
                }
            }
        }
        Ok(out)
    }

    /// Starts a Noise KK handshake with `peer` (the third mode: the hub only vouches for the two static keys, in
    /// its signed device list, and never sees the key). `peer_static` must come from a verified list
    /// ([`vouched_static`]). Returns the initiator's state and the `46` message to send to the peer.
    pub fn kk_start(
        &self,
        peer: DeviceId,
        peer_static: &[u8; 32],
        lifetime: Duration,
        now: u64,
    ) -> Result<(ties::kk::Initiator, Vec<u8>), AgentError> {
        let expires = u32::try_from(now + lifetime.as_secs())
            .map_err(|_| custos_proto::Error::InvalidValue("expiry past 2106"))?;
        Ok(ties::kk::Initiator::start(
            self.device,
            &self.identity,
            peer,
            peer_static,
            fresh_secret(),
            expires,
        )?)
    }

    /// Answers a Noise KK `46` from `from`, whose static key the signed device list vouches for: the key, and the
    /// `47` message to send back.
    pub fn kk_respond(
        &self,
        from: DeviceId,
        from_static: &[u8; 32],
        msg: &[u8],
        now: u64,
    ) -> Result<(SessionKey, Vec<u8>), AgentError> {
        Ok(ties::kk::respond(
            self.device,
            &self.identity,
            from,
            from_static,
            fresh_secret(),
            msg,
            now,
        )?)
    }
}

fn fresh_secret() -> Secret {
    let mut b = zeroize::Zeroizing::new([0u8; 32]);
    OsRng.fill_bytes(b.as_mut());
    Secret::from_bytes(*b)
}

/// The static key a verified device list vouches for `device`, if it names it with one.
pub fn vouched_static(list: &custos_proto::cose::DeviceList, device: DeviceId) -> Option<[u8; 32]> {
    let i = list.devices.iter().position(|&d| d == device)?;
    list.statics.get(i).copied()
}

/// A TPM that refuses a blob (for another TPM, or altered) refuses that package, like any bad package; any other
/// TPM failure is the device's and is not passed off as a bad package.
#[cfg(feature = "tpm")]
fn tpm_err(e: custos_vault::VaultError) -> AgentError {
    match e {
        custos_vault::VaultError::WrongTpm(_) => AgentError::Protocol(
            custos_proto::Error::InvalidValue("the TPM refused the key's import blob"),
        ),
        custos_vault::VaultError::Malformed(_) => AgentError::Protocol(
            custos_proto::Error::InvalidValue("a TPM package's import blob is malformed"),
        ),
        e => AgentError::Keys(anyhow::anyhow!("the device's TPM: {e}")),
    }
}
