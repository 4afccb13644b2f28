//! What the keeper keeps to control devices: each owned device's user–device key, the people the owner lets
//! control it, and the key and counter this keeper sends commands with (docs/wire.md §11).
//!
//! All of it is in `control.json`, every key sealed by the vault ([`Vault::seal_state`]) under a context that
//! names the device (and the sender), so a key cannot be moved to another entry, and a copy of the file without
//! the vault opens nothing. Counters are written *before* a command is sealed with them, so a keeper that
//! crashes never seals two commands with one counter.

use std::collections::BTreeMap;
use std::path::Path;

use custos_proto::control::{self, CommandHeader, Op, OwnerKeys, SenderKeys, Status};
use custos_proto::{DeviceId, RustCrypto, Secret, Suite};
use custos_vault::Vault;
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::keeper::KeeperError;

/// The file, in the keeper's directory.
pub const FILE: &str = "control.json";
const FORMAT: &str = "custos-keeper-control/1";
/// The most people one device may be shared with (the list format's limit).
pub const MAX_MEMBERS: usize = 64;

/// Someone the owner lets control a device: an entry of the authorized-sender list.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Member {
    /// The sender id the device knows them by (never reused for this device).
    pub sender: u32,
    /// Their account at the hub.
    pub account: String,
    /// Sealed key (hex).
    key: String,
}

/// What the keeper holds for one device.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Entry {
    /// The user–device key, sealed (hex); only for a device this keeper paired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    udk: Option<String>,
    /// This keeper's sender id for the device: 0 for the owner.
    sender: u32,
    /// This keeper's sender key, sealed (hex), for a device shared with it; the owner's comes from the UDK.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key: Option<String>,
    /// The last command counter used (reserved on disk before use).
    counter: u64,
    /// The version of the last authorized-sender list sealed for the device.
    list_version: u64,
    /// The next sender id to give out.
    next_sender: u32,
    /// The people the owner lets control the device.
    #[serde(default)]
    members: Vec<Member>,
}

#[derive(Default, Serialize, Deserialize)]
struct ControlFile {
    format: String,
    devices: BTreeMap<String, Entry>,
}

/// The keeper's control state over `dir/control.json`, with the vault that seals its keys.
pub struct ControlBook<'v> {
    path: std::path::PathBuf,
    vault: &'v dyn Vault,
    file: ControlFile,
}

/// How this keeper sends commands to a device.
pub struct SenderKey {
    /// The sender id.
    pub sender: u32,
    /// The sender key: the user–device key for the owner (the command keys derive from it), the member key
    /// otherwise.
    pub key: Secret,
    /// Whether this is the owner (sender 0, keyed by the user–device key).
    pub owner: bool,
}

fn udk_context(device: DeviceId) -> Vec<u8> {
    [b"custos/v1/keeper/udk".as_slice(), &device.0].concat()
}

fn member_context(device: DeviceId, sender: u32) -> Vec<u8> {
    [
        b"custos/v1/keeper/member".as_slice(),
        &device.0,
        &sender.to_be_bytes(),
    ]
    .concat()
}

fn bad(path: &Path, why: impl ToString) -> KeeperError {
    KeeperError::State {
        path: path.to_path_buf(),
        why: why.to_string(),
    }
}

impl<'v> ControlBook<'v> {
    /// Reads `dir/control.json` (empty if missing).
    pub fn open(dir: &Path, vault: &'v dyn Vault) -> Result<Self, KeeperError> {
        let path = dir.join(FILE);
        let file = match std::fs::read(&path) {
            Ok(bytes) => {
                let f: ControlFile = serde_json::from_slice(&bytes).map_err(|e| bad(&path, e))?;
                if f.format != FORMAT {
                    return Err(bad(&path, format!("unknown format `{}`", f.format)));
                }
                f
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => ControlFile {
                format: FORMAT.into(),
                devices: BTreeMap::new(),
            },
            Err(e) => return Err(bad(&path, e)),
        };
        Ok(Self { path, vault, file })
    }

    fn save(&self) -> Result<(), KeeperError> {
        let bytes = serde_json::to_vec_pretty(&self.file).map_err(|e| bad(&self.path, e))?;
        custos_vault::fsio::replace(&self.path, &bytes)?;
        Ok(())
    }

    fn seal(&self, context: &[u8], key: &Secret) -> Result<String, KeeperError> {
        Ok(hex::encode(self.vault.seal_state(context, key.expose())?))
    }

    fn open_key(&self, context: &[u8], sealed: &str) -> Result<Secret, KeeperError> {
        let bytes = hex::decode(sealed).map_err(|e| bad(&self.path, e))?;
        let plain = self.vault.open_state(context, &bytes)?;
        let k: [u8; 32] = plain
            .as_slice()
            .try_into()
            .map_err(|_| bad(&self.path, "a sealed key is not 32 bytes"))?;
        Ok(Secret::from_bytes(k))
    }

    fn entry(&self, device: DeviceId) -> Result<&Entry, KeeperError> {
        self.file
            .devices
            .get(&device.to_string())
            .ok_or(KeeperError::NoControl(device))
    }

    /// Keeps `udk` as the user–device key of `device` after a pairing: this keeper is its owner's. Replaces an
    /// earlier key (rotation); the counter and the list go on.
    pub fn set_user_device_key(
        &mut self,
        device: DeviceId,
        udk: &Secret,
    ) -> Result<(), KeeperError> {
        let sealed = self.seal(&udk_context(device), udk)?;
        let e = self.file.devices.entry(device.to_string()).or_default();
        e.udk = Some(sealed);
        e.sender = 0;
        e.key = None;
        e.next_sender = e.next_sender.max(1);
        self.save()
    }

    /// The user–device key of `device`, if this keeper paired it.
    pub fn user_device_key(&self, device: DeviceId) -> Result<Secret, KeeperError> {
        let e = self.entry(device)?;
        let sealed = e.udk.as_deref().ok_or(KeeperError::NotOwner(device))?;
        self.open_key(&udk_context(device), sealed)
    }

    /// Keeps a sender key someone else's keeper shared for `device` (this keeper is then a member, not the
    /// owner).
    pub fn set_member_key(
        &mut self,
        device: DeviceId,
        sender: u32,
        key: &Secret,
    ) -> Result<(), KeeperError> {
        if sender == 0 {
            return Err(bad(&self.path, "sender 0 is the owner's"));
        }
        let sealed = self.seal(&member_context(device, sender), key)?;
        let e = self.file.devices.entry(device.to_string()).or_default();
        if e.udk.is_some() {
            return Err(bad(
                &self.path,
                format!("this keeper owns {device}; it needs no shared key"),
            ));
        }
        e.sender = sender;
        e.key = Some(sealed);
        self.save()
    }

    /// How this keeper sends commands to `device`.
    pub fn sender_key(&self, device: DeviceId) -> Result<SenderKey, KeeperError> {
        let e = self.entry(device)?;
        match (&e.udk, &e.key) {
            (Some(udk), _) => Ok(SenderKey {
                sender: 0,
                key: self.open_key(&udk_context(device), udk)?,
                owner: true,
            }),
            (None, Some(key)) => Ok(SenderKey {
                sender: e.sender,
                key: self.open_key(&member_context(device, e.sender), key)?,
                owner: false,
            }),
            (None, None) => Err(KeeperError::NoControl(device)),
        }
    }

    /// Reserves the next command counter for `device`: `max(last + 1, now_ms)`, written to disk before it is
    /// returned, so that no two commands ever share one, even across a crash or a lost file restored from a
    /// backup (the clock keeps it moving forward).
    pub fn next_counter(&mut self, device: DeviceId, now_ms: u64) -> Result<u64, KeeperError> {
        let e = self
            .file
            .devices
            .get_mut(&device.to_string())
            .ok_or(KeeperError::NoControl(device))?;
        let c = e.counter.saturating_add(1).max(now_ms);
        e.counter = c;
        self.save()?;
        Ok(c)
    }

    /// The people `device` is shared with, and the version of the last list sealed.
    pub fn members(&self, device: DeviceId) -> Result<(u64, Vec<Member>), KeeperError> {
        let e = self.entry(device)?;
        Ok((e.list_version, e.members.clone()))
    }

    /// The key of member `m` of `device`, to put in the list.
    pub fn member_key(&self, device: DeviceId, m: &Member) -> Result<Secret, KeeperError> {
        self.open_key(&member_context(device, m.sender), &m.key)
    }

    /// Adds `account` to `device`'s members with a fresh random key and a sender id never used before, or
    /// returns its entry if it is a member already. The owner then seals a new list (see
    /// [`ControlBook::bump_list`]).
    pub fn add_member(&mut self, device: DeviceId, account: &str) -> Result<Member, KeeperError> {
        let e = self.entry(device)?;
        if e.udk.is_none() {
            return Err(KeeperError::NotOwner(device));
        }
        if let Some(m) = e.members.iter().find(|m| m.account == account) {
            return Ok(m.clone());
        }
        if e.members.len() >= MAX_MEMBERS {
            return Err(bad(
                &self.path,
                format!("{device} is shared with {MAX_MEMBERS} people already"),
            ));
        }
        let sender = e.next_sender.max(1);
        let mut k = Zeroizing::new([0u8; 32]);
        OsRng.fill_bytes(k.as_mut());
        let key = self.seal(&member_context(device, sender), &Secret::from_bytes(*k))?;
        let m = Member {
            sender,
            account: account.into(),
            key,
        };
        let e = self
            .file
            .devices
            .get_mut(&device.to_string())
            .ok_or(KeeperError::NoControl(device))?;
        e.next_sender = sender + 1;
        e.members.push(m.clone());
        self.save()?;
        Ok(m)
    }

    /// Removes `account` from `device`'s members. Returns whether it was one.
    pub fn remove_member(&mut self, device: DeviceId, account: &str) -> Result<bool, KeeperError> {
        let e = self
            .file
            .devices
            .get_mut(&device.to_string())
            .ok_or(KeeperError::NoControl(device))?;
        let before = e.members.len();
        e.members.retain(|m| m.account != account);
        let removed = e.members.len() != before;
        if removed {
            self.save()?;
        }
        Ok(removed)
    }

    /// Reserves the next list version for `device` (written before the list is sealed): `max(last + 1, now in
    /// ms)`, so that the list of a new owner's keeper (after a transfer, or a keeper restored from an old backup)
    /// is newer than anything the device holds.
    pub fn bump_list(&mut self, device: DeviceId, now_ms: u64) -> Result<u64, KeeperError> {
        let e = self
            .file
            .devices
            .get_mut(&device.to_string())
            .ok_or(KeeperError::NoControl(device))?;
        e.list_version = e.list_version.saturating_add(1).max(now_ms);
        let v = e.list_version;
        self.save()?;
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use custos_vault::{KdfParams, SoftwareVault, Unlock};

    fn vault(dir: &Path) -> SoftwareVault {
        SoftwareVault::create(
            &dir.join("vault.json"),
            Unlock::Passphrase("a passphrase"),
            KdfParams::new(8 * 1024, 1, 1).unwrap(),
            &mut OsRng,
        )
        .unwrap()
    }

    #[test]
    fn keys_are_sealed_counters_only_rise_and_members_get_fresh_ids() {
        let dir = tempfile::tempdir().unwrap();
        let v = vault(dir.path());
        let device = DeviceId([1, 2, 3, 4, 5, 6, 7, 8]);
        let udk = Secret::from_bytes([0x5a; 32]);
        let mut book = ControlBook::open(dir.path(), &v).unwrap();
        assert!(matches!(
            book.sender_key(device),
            Err(KeeperError::NoControl(_))
        ));
        book.set_user_device_key(device, &udk).unwrap();
        let s = book.sender_key(device).unwrap();
        assert!(s.owner && s.sender == 0 && s.key == udk);
        // Counters: never repeat, never fall behind the clock, survive reopening.
        let a = book.next_counter(device, 1_000).unwrap();
        let b = book.next_counter(device, 10).unwrap();
        assert_eq!((a, b), (1_000, 1_001));
        let mut book = ControlBook::open(dir.path(), &v).unwrap();
        assert_eq!(book.next_counter(device, 5).unwrap(), 1_002);
        // Members: fresh ids, never reused after removal.
        let bob = book.add_member(device, "bob").unwrap();
        assert_eq!(bob.sender, 1);
        assert_eq!(book.add_member(device, "bob").unwrap(), bob);
        assert!(book.remove_member(device, "bob").unwrap());
        assert_eq!(book.add_member(device, "bob").unwrap().sender, 2);
        let key = book
            .member_key(device, &book.members(device).unwrap().1[0])
            .unwrap();
        // Nothing secret is in the file in clear.
        let text = std::fs::read(dir.path().join(FILE)).unwrap();
        for secret in [udk.expose(), key.expose()] {
            assert!(!text.windows(32).any(|w| w == secret));
            let h = hex::encode(secret);
            assert!(!text.windows(h.len()).any(|w| w == h.as_bytes()));
        }
        // A sealed key moved to another device's entry does not open.
        let mut f: ControlFile = serde_json::from_slice(&text).unwrap();
        let entry = f.devices.values().next().unwrap().clone();
        f.devices.insert(DeviceId([9; 8]).to_string(), entry);
        std::fs::write(dir.path().join(FILE), serde_json::to_vec(&f).unwrap()).unwrap();
        let book = ControlBook::open(dir.path(), &v).unwrap();
        assert!(matches!(
            book.user_device_key(DeviceId([9; 8])),
            Err(KeeperError::Vault(custos_vault::VaultError::StateTampered))
        ));
        assert!(book.user_device_key(device).is_ok());
    }

    #[test]
    fn a_member_keeper_holds_only_its_own_key() {
        let dir = tempfile::tempdir().unwrap();
        let v = vault(dir.path());
        let device = DeviceId([8; 8]);
        let mut book = ControlBook::open(dir.path(), &v).unwrap();
        assert!(
            book.set_member_key(device, 0, &Secret::from_bytes([1; 32]))
                .is_err()
        );
        book.set_member_key(device, 3, &Secret::from_bytes([7; 32]))
            .unwrap();
        let s = book.sender_key(device).unwrap();
        assert!(!s.owner && s.sender == 3);
        assert!(matches!(
            book.user_device_key(device),
            Err(KeeperError::NotOwner(_))
        ));
        assert!(matches!(
            book.add_member(device, "eve"),
            Err(KeeperError::NotOwner(_))
        ));
    }
}

/// A device's answer to a command, as its sender reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The hub's id of the command.
    pub id: i64,
    /// The sender's counter in it.
    pub counter: u64,
    /// What the device did.
    pub status: Status,
    /// The device's state after it.
    pub state: String,
}

/// The prefix of a share code (see [`crate::Keeper::share_control`]).
pub const SHARE_CODE_PREFIX: &str = "custos-share-1";

/// How long a command stays valid, by default: it is refused by the device if it arrives later.
pub const COMMAND_LIFETIME: std::time::Duration = std::time::Duration::from_secs(300);

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn fresh_nonce() -> [u8; 12] {
    let mut n = [0u8; 12];
    OsRng.fill_bytes(&mut n);
    n
}

/// Waits up to `timeout` for the device's answer to control message `id`.
async fn wait_answer(
    client: &custos_client::HubClient,
    device: DeviceId,
    id: i64,
    auth: &str,
    timeout: std::time::Duration,
) -> Result<Vec<u8>, KeeperError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let d = client
            .control_result(
                device,
                id,
                left.min(std::time::Duration::from_secs(25)),
                auth,
            )
            .await
            .map_err(crate::keeper::hub_err)?;
        if let Some(a) = d.answer {
            return Ok(a);
        }
        if d.expired {
            return Err(KeeperError::NoAnswer {
                device,
                why: "it expired before the device took it".into(),
            });
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(KeeperError::NoAnswer {
                device,
                why: if d.online {
                    format!(
                        "the device is online but did not answer (message {id} waits at the hub)"
                    )
                } else {
                    format!("the device is offline; message {id} waits at the hub until it expires")
                },
            });
        }
    }
}

impl crate::Keeper {
    /// Sends `op` with `value` to `device` through `hub` as the account of session `auth` (`Bearer <token>`),
    /// sealed with this keeper's sender key, and waits up to `timeout` for the device's authenticated answer:
    /// [`Outcome`] says what the device did, and the hub cannot have made it up.
    pub async fn command(
        &self,
        hub: &str,
        auth: &str,
        device: DeviceId,
        op: Op,
        value: &str,
        timeout: std::time::Duration,
    ) -> Result<Outcome, KeeperError> {
        let mut book = self.control()?;
        let sender = book.sender_key(device)?;
        let keys = if sender.owner {
            OwnerKeys::from_udk(&RustCrypto, &sender.key)?
                .owner()
                .clone()
        } else {
            SenderKeys::derive(&RustCrypto, &sender.key)?
        };
        let counter = book.next_counter(device, now_ms())?;
        let expires = (now_ms() / 1000).saturating_add(COMMAND_LIFETIME.as_secs());
        let header = CommandHeader {
            suite: Suite::AES256GCM,
            sender: sender.sender,
            counter,
            expires: u32::try_from(expires).map_err(|_| custos_proto::Error::TimeOutOfRange)?,
        };
        let msg = control::seal_command(&RustCrypto, &keys, device, header, op, value.as_bytes())?;
        let client = self.client(hub)?;
        let id = client
            .control_send(device, &msg, auth)
            .await
            .map_err(crate::keeper::hub_err)?;
        let answer = wait_answer(&client, device, id, auth, timeout).await?;
        let (status, state) =
            control::open_answer(&RustCrypto, &keys, device, sender.sender, counter, &answer)
                .map_err(|e| KeeperError::ForgedAnswer {
                    device,
                    why: e.to_string(),
                })?;
        Ok(Outcome {
            id,
            counter,
            status,
            state: String::from_utf8_lossy(&state).into_owned(),
        })
    }

    /// Claims `device` for the account of session `auth`: the hub's one-time token, sealed under the user–device
    /// key, goes to the device, which proves to the hub that it opened it. Only the keeper that paired the device
    /// can do this. Returns when the device answered (the hub then binds it to the account).
    pub async fn claim(
        &self,
        hub: &str,
        auth: &str,
        device: DeviceId,
        timeout: std::time::Duration,
    ) -> Result<(), KeeperError> {
        let book = self.control()?;
        let owner = OwnerKeys::from_udk(&RustCrypto, &book.user_device_key(device)?)?;
        let client = self.client(hub)?;
        let token = client
            .claim_start(device, auth)
            .await
            .map_err(crate::keeper::hub_err)?;
        let sealed = control::seal_claim(
            &RustCrypto,
            Suite::AES256GCM,
            &owner,
            device,
            fresh_nonce(),
            &token,
        )?;
        let id = client
            .control_send(device, &sealed, auth)
            .await
            .map_err(crate::keeper::hub_err)?;
        wait_answer(&client, device, id, auth, timeout).await?;
        Ok(())
    }

    /// Seals the current list of `device`'s members (a new version) and waits for the device's acknowledgement:
    /// when this returns, a member removed from the list can no longer command the device.
    pub async fn send_members(
        &self,
        hub: &str,
        auth: &str,
        device: DeviceId,
        timeout: std::time::Duration,
    ) -> Result<u64, KeeperError> {
        let mut book = self.control()?;
        let owner = OwnerKeys::from_udk(&RustCrypto, &book.user_device_key(device)?)?;
        let (_, members) = book.members(device)?;
        let mut list = Vec::with_capacity(members.len());
        for m in &members {
            list.push(control::Member {
                sender: m.sender,
                rights: control::RIGHT_CONTROL,
                key: book.member_key(device, m)?,
            });
        }
        list.sort_by_key(|m| m.sender);
        let version = book.bump_list(device, now_ms())?;
        let msg = control::seal_list(
            &RustCrypto,
            Suite::AES256GCM,
            &owner,
            device,
            version,
            fresh_nonce(),
            &list,
        )?;
        let client = self.client(hub)?;
        let id = client
            .control_send(device, &msg, auth)
            .await
            .map_err(crate::keeper::hub_err)?;
        let answer = wait_answer(&client, device, id, auth, timeout).await?;
        let held = control::open_list_ack(&RustCrypto, &owner, device, &answer).map_err(|e| {
            KeeperError::ForgedAnswer {
                device,
                why: e.to_string(),
            }
        })?;
        if held != version {
            return Err(KeeperError::ForgedAnswer {
                device,
                why: format!("the device acknowledged list version {held}, not {version}"),
            });
        }
        Ok(version)
    }

    /// Lets `account` command `device`: a fresh member key and sender id, a new list sent to the device (and
    /// acknowledged), and the **share code** that hands the key to the member's keeper
    /// (`custos-share-1:<device>:<sender>:<key hex>`). The code is a secret: give it to the member yourself (in
    /// person, or over a channel you trust), never through the hub, which could otherwise keep the key.
    pub async fn share_control(
        &self,
        hub: &str,
        auth: &str,
        device: DeviceId,
        account: &str,
        timeout: std::time::Duration,
    ) -> Result<Zeroizing<String>, KeeperError> {
        let mut book = self.control()?;
        let m = book.add_member(device, account)?;
        let key = book.member_key(device, &m)?;
        drop(book);
        self.send_members(hub, auth, device, timeout).await?;
        Ok(Zeroizing::new(format!(
            "{SHARE_CODE_PREFIX}:{}:{}:{}",
            hex::encode(device.0),
            m.sender,
            hex::encode(key.expose())
        )))
    }

    /// Withdraws `account`'s control of `device`: a new list without it, acknowledged by the device. Returns
    /// whether it was a member.
    pub async fn unshare_control(
        &self,
        hub: &str,
        auth: &str,
        device: DeviceId,
        account: &str,
        timeout: std::time::Duration,
    ) -> Result<bool, KeeperError> {
        let removed = self.control()?.remove_member(device, account)?;
        self.send_members(hub, auth, device, timeout).await?;
        Ok(removed)
    }

    /// Takes a share code from a device's owner: this keeper can then command that device. Returns the device.
    pub fn accept_share(&self, code: &str) -> Result<DeviceId, KeeperError> {
        let bad = || KeeperError::BadShareCode;
        let mut parts = code.trim().split(':');
        if parts.next() != Some(SHARE_CODE_PREFIX) {
            return Err(bad());
        }
        let (Some(device), Some(sender), Some(key), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        let mut d = [0u8; 8];
        hex::decode_to_slice(device, &mut d).map_err(|_| bad())?;
        let sender: u32 = sender.parse().map_err(|_| bad())?;
        let mut k = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(key, k.as_mut()).map_err(|_| bad())?;
        let device = DeviceId(d);
        self.control()?
            .set_member_key(device, sender, &Secret::from_bytes(*k))?;
        Ok(device)
    }
}
