//! Factory provisioning and the device's state file.

use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use custos_proto::{Crypto, DeviceId, RustCrypto, Secret};
use rand_core::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

const FORMAT: &str = "custos-device/v1";
const FILE: &str = "device.json";
const MAX_FILE: u64 = 64 << 10;

/// What can go wrong with device state.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// The state directory already holds a device.
    #[error("{0} already holds a device; refusing to overwrite its identity")]
    Exists(PathBuf),
    /// The state file is missing, unreadable or malformed.
    #[error("device state {path}: {why}")]
    Invalid {
        /// The state file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The file system failed.
    #[error("{path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A freshly made device, before it leaves the factory.
pub struct Factory {
    /// The device id.
    pub device: DeviceId,
    /// The device's X25519 identity key.
    pub identity: Secret,
    /// The one-time join code, for the operator who admits the device to a hub.
    pub join_code: [u8; 16],
    /// The owner code, for the user who pairs the device with their keeper. Never given to the hub.
    pub owner_code: [u8; 16],
}

impl Drop for Factory {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.join_code);
        zeroize::Zeroize::zeroize(&mut self.owner_code);
    }
}

impl Factory {
    /// Makes a new device identity from `rng`.
    pub fn make<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        let mut id = [0u8; 8];
        rng.fill_bytes(&mut id);
        // EUI-64 style, locally administered (bit 1 set) and unicast (bit 0 clear): never collides with a
        // manufacturer-assigned id.
        id[0] = (id[0] & 0xfc) | 0x02;
        let mut identity = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(identity.as_mut());
        let mut join_code = [0u8; 16];
        let mut owner_code = [0u8; 16];
        rng.fill_bytes(&mut join_code);
        rng.fill_bytes(&mut owner_code);
        Self {
            device: DeviceId(id),
            identity: Secret::from_bytes(*identity),
            join_code,
            owner_code,
        }
    }

    /// The device's identity public key.
    pub fn public_key(&self) -> [u8; 32] {
        RustCrypto.x25519_public(&self.identity)
    }

    /// The text for the packaging label: the device id, the join code for the operator, and the owner code for
    /// the user (to be printed under a scratch-off or inside the box).
    pub fn label(&self) -> String {
        format!(
            "Custos device {}\n\
             Join code (operator, admits the device to a hub, single use):\n  {}\n\
             Owner code (user only, pairs the device with your keeper; never give it to the hub):\n  {}\n",
            self.device,
            format_code(&self.join_code),
            format_code(&self.owner_code)
        )
    }

    /// Writes the device's state into `dir` (created owner-only if missing); refuses to overwrite a device.
    pub fn write_state(&self, dir: &Path) -> Result<PathBuf, StateError> {
        create_private_dir(dir)?;
        let path = dir.join(FILE);
        let file = StateFile {
            format: FORMAT.into(),
            device: self.device.to_string(),
            identity: hex::encode(self.identity.expose()),
            join_code: Some(hex::encode(self.join_code)),
            owner_code: Some(hex::encode(self.owner_code)),
            session: None,
            user_device_key: None,
        };
        let text = Zeroizing::new(
            serde_json::to_string_pretty(&file).map_err(|e| StateError::Invalid {
                path: path.clone(),
                why: e.to_string(),
            })? + "\n",
        );
        drop(Zeroizing::new(file.identity));
        let mut opts = OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut f = opts.open(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => StateError::Exists(dir.to_path_buf()),
            _ => StateError::Io {
                path: path.clone(),
                source: e,
            },
        })?;
        f.write_all(text.as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(io(&path))?;
        Ok(path)
    }
}

fn create_private_dir(dir: &Path) -> Result<(), StateError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(io(dir))
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    format: String,
    device: String,
    identity: String,
    join_code: Option<String>,
    owner_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    session: Option<SessionFile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    user_device_key: Option<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SessionFile {
    hub: String,
    hub_static: String,
    session_key: String,
    joined_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    hub_signing: Option<String>,
}

/// What a device keeps once it has joined a hub.
pub struct Session {
    /// The hub's base URL.
    pub hub: String,
    /// The hub's pinned Noise static key.
    pub hub_static: [u8; 32],
    /// The server–device key.
    pub session_key: Secret,
    /// When the device joined (Unix seconds).
    pub joined_at: i64,
    /// The hub's Ed25519 key for device lists, received authenticated under the session.
    pub hub_signing: Option<[u8; 32]>,
}

/// What a device keeps in its state directory.
pub struct DeviceState {
    /// The device id.
    pub device: DeviceId,
    /// The X25519 identity key.
    pub identity: Secret,
    /// The join code, until the device has joined a hub.
    pub join_code: Option<[u8; 16]>,
    /// The owner code. Kept after pairing: every DPK rotation is a fresh pairing keyed by it.
    pub owner_code: Option<[u8; 16]>,
    /// The hub session, once joined.
    pub session: Option<Session>,
    /// The user–device key from the latest pairing with the owner's keeper: what owner commands, the list of
    /// authorized senders and claims are keyed by (docs/wire.md §11). Each pairing replaces it.
    pub user_device_key: Option<Secret>,
}

impl DeviceState {
    /// Reads the state in `dir`.
    pub fn read(dir: &Path) -> Result<Self, StateError> {
        let path = dir.join(FILE);
        let bad = |why: &str| StateError::Invalid {
            path: path.clone(),
            why: why.into(),
        };
        let f = fs::File::open(&path).map_err(io(&path))?;
        let mut text = Zeroizing::new(String::new());
        f.take(MAX_FILE + 1)
            .read_to_string(&mut text)
            .map_err(io(&path))?;
        if text.len() as u64 > MAX_FILE {
            return Err(bad("too large"));
        }
        let file: StateFile = serde_json::from_str(&text).map_err(|e| bad(&e.to_string()))?;
        if file.format != FORMAT {
            return Err(bad(&format!("unknown format `{}`", file.format)));
        }
        let identity =
            Zeroizing::new(hex::decode(&file.identity).map_err(|_| bad("identity is not hex"))?);
        let identity: [u8; 32] = identity
            .as_slice()
            .try_into()
            .map_err(|_| bad("identity is not 32 bytes"))?;
        let code = |c: &Option<String>| -> Result<Option<[u8; 16]>, StateError> {
            c.as_deref()
                .map(|c| parse_code(c).ok_or_else(|| bad("a code is not 32 hex digits")))
                .transpose()
        };
        let session = match &file.session {
            None => None,
            Some(s) => {
                let key32 = |h: &str| -> Result<[u8; 32], StateError> {
                    let b = Zeroizing::new(
                        hex::decode(h).map_err(|_| bad("a session key is not hex"))?,
                    );
                    b.as_slice()
                        .try_into()
                        .map_err(|_| bad("a session key is not 32 bytes"))
                };
                Some(Session {
                    hub: s.hub.clone(),
                    hub_static: key32(&s.hub_static)?,
                    session_key: Secret::from_bytes(key32(&s.session_key)?),
                    joined_at: s.joined_at,
                    hub_signing: s.hub_signing.as_deref().map(key32).transpose()?,
                })
            }
        };
        Ok(Self {
            device: file
                .device
                .parse()
                .map_err(|_| bad("device id is malformed"))?,
            identity: Secret::from_bytes(identity),
            join_code: code(&file.join_code)?,
            owner_code: code(&file.owner_code)?,
            session,
            user_device_key: match &file.user_device_key {
                None => None,
                Some(h) => {
                    let b = Zeroizing::new(
                        hex::decode(h).map_err(|_| bad("the user-device key is not hex"))?,
                    );
                    let k: [u8; 32] = b
                        .as_slice()
                        .try_into()
                        .map_err(|_| bad("the user-device key is not 32 bytes"))?;
                    Some(Secret::from_bytes(k))
                }
            },
        })
    }

    /// Writes the state back to `dir`, replacing the file atomically (write, sync, rename), owner-only.
    pub fn save(&self, dir: &Path) -> Result<(), StateError> {
        let path = dir.join(FILE);
        let file = StateFile {
            format: FORMAT.into(),
            device: self.device.to_string(),
            identity: hex::encode(self.identity.expose()),
            join_code: self.join_code.map(hex::encode),
            owner_code: self.owner_code.map(hex::encode),
            session: self.session.as_ref().map(|s| SessionFile {
                hub: s.hub.clone(),
                hub_static: hex::encode(s.hub_static),
                session_key: hex::encode(s.session_key.expose()),
                joined_at: s.joined_at,
                hub_signing: s.hub_signing.map(hex::encode),
            }),
            user_device_key: self
                .user_device_key
                .as_ref()
                .map(|k| hex::encode(k.expose())),
        };
        let text = Zeroizing::new(
            serde_json::to_string_pretty(&file).map_err(|e| StateError::Invalid {
                path: path.clone(),
                why: e.to_string(),
            })? + "\n",
        );
        drop(Zeroizing::new(file.identity));
        if let Some(s) = file.session {
            drop(Zeroizing::new(s.session_key));
        }
        drop(file.user_device_key.map(Zeroizing::new));
        write_atomic(&path, text.as_bytes())
    }
}

/// Replaces `path` with `bytes` so that a crash leaves either the old or the new content, never a mix.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(&tmp).map_err(io(&tmp))?;
    if let Err(e) = f.write_all(bytes).and_then(|()| f.sync_all()) {
        // Do not leave a partial file taking space (the disk may be full).
        drop(f);
        let _ = fs::remove_file(&tmp);
        return Err(io(&tmp)(e));
    }
    fs::rename(&tmp, path).map_err(io(path))?;
    if let Some(dir) = path.parent() {
        // Make the rename itself durable.
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// A code as people read it: 32 hex digits in groups of four (`3f2a-91c4-…`).
pub fn format_code(code: &[u8; 16]) -> String {
    let h = hex::encode(code);
    h.as_bytes()
        .chunks(4)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join("-")
}

/// Reads a code typed by a person: 32 hex digits, with or without `-` or spaces.
pub fn parse_code(text: &str) -> Option<[u8; 16]> {
    let digits: String = text
        .chars()
        .filter(|c| *c != '-' && !c.is_whitespace())
        .collect();
    hex::decode(digits).ok()?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::OsRng;

    #[test]
    fn made_devices_round_trip_through_their_state_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = Factory::make(&mut OsRng);
        assert_eq!(f.device.0[0] & 0x03, 0x02, "locally administered unicast");
        let path = f.write_state(&dir.path().join("dev")).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
            assert_eq!(
                fs::metadata(dir.path().join("dev"))
                    .unwrap()
                    .permissions()
                    .mode()
                    & 0o777,
                0o700
            );
        }
        let s = DeviceState::read(&dir.path().join("dev")).unwrap();
        assert_eq!(s.device, f.device);
        assert_eq!(s.identity, f.identity);
        assert_eq!(s.join_code, Some(f.join_code));
        assert_eq!(s.owner_code, Some(f.owner_code));
        assert_ne!(f.join_code, f.owner_code);
        // A second device in the same directory is refused; the first is untouched.
        let other = Factory::make(&mut OsRng);
        assert!(matches!(
            other.write_state(&dir.path().join("dev")),
            Err(StateError::Exists(_))
        ));
        assert_eq!(
            DeviceState::read(&dir.path().join("dev")).unwrap().device,
            f.device
        );
    }

    #[test]
    fn codes_read_as_people_type_them() {
        let code = [0x3f, 0x2a, 0x91, 0xc4, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11];
        let text = format_code(&code);
        assert_eq!(text, "3f2a-91c4-0001-0203-0405-0607-0809-0a0b");
        assert_eq!(parse_code(&text), Some(code));
        assert_eq!(
            parse_code(&text.replace('-', " ").to_uppercase()),
            Some(code)
        );
        assert_eq!(parse_code("3f2a"), None);
        assert_eq!(parse_code("zz2a-91c4-0001-0203-0405-0607-0809-0a0b"), None);
    }

    #[test]
    fn the_label_carries_both_codes_and_says_who_gets_which() {
        let f = Factory::make(&mut OsRng);
        let label = f.label();
        assert!(label.contains(&f.device.to_string()));
        assert!(label.contains(&format_code(&f.join_code)));
        assert!(label.contains(&format_code(&f.owner_code)));
        assert!(label.contains("never give it to the hub"));
    }
}
