//! The hub's own keys: its Noise static key (X25519), pinned by devices at admission, and its Ed25519 key that
//! signs the authorized-device list. Kept in the data directory, owner-only, created on first start.

use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::path::Path;

use custos_proto::{Crypto, RustCrypto, Secret};
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

const FORMAT: &str = "custos-hub-keys/v1";
const FILE: &str = "hub-keys.json";

/// The hub's static X25519 key and its Ed25519 signing key.
pub struct HubKeys {
    noise: Secret,
    signing: Secret,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysFile {
    format: String,
    noise: String,
    signing: String,
}

impl HubKeys {
    /// Fresh random keys.
    pub fn generate() -> Self {
        let mut a = Zeroizing::new([0u8; 32]);
        let mut b = Zeroizing::new([0u8; 32]);
        OsRng.fill_bytes(a.as_mut());
        OsRng.fill_bytes(b.as_mut());
        Self {
            noise: Secret::from_bytes(*a),
            signing: Secret::from_bytes(*b),
        }
    }

    /// Loads the keys from `data_dir`, creating them (owner-only) on first use.
    pub fn load_or_create(data_dir: &Path) -> std::io::Result<Self> {
        let path = data_dir.join(FILE);
        match fs::File::open(&path) {
            Ok(f) => {
                let mut text = Zeroizing::new(String::new());
                f.take(64 << 10).read_to_string(&mut text)?;
                let bad = |why: &str| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("{}: {why}", path.display()),
                    )
                };
                let file: KeysFile =
                    serde_json::from_str(&text).map_err(|e| bad(&e.to_string()))?;
                if file.format != FORMAT {
                    return Err(bad("unknown format"));
                }
                let key = |h: &str| -> std::io::Result<Secret> {
                    let b = Zeroizing::new(hex::decode(h).map_err(|_| bad("key is not hex"))?);
                    Ok(Secret::from_bytes(
                        b.as_slice()
                            .try_into()
                            .map_err(|_| bad("key is not 32 bytes"))?,
                    ))
                };
                Ok(Self {
                    noise: key(&file.noise)?,
                    signing: key(&file.signing)?,
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let keys = Self::generate();
                let file = KeysFile {
                    format: FORMAT.into(),
                    noise: hex::encode(keys.noise.expose()),
                    signing: hex::encode(keys.signing.expose()),
                };
                let text = Zeroizing::new(
                    serde_json::to_string_pretty(&file).map_err(std::io::Error::other)? + "\n",
                );
                drop(Zeroizing::new(file.noise));
                drop(Zeroizing::new(file.signing));
                let mut opts = OpenOptions::new();
                opts.write(true).create_new(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
                let mut f = opts.open(&path)?;
                f.write_all(text.as_bytes())?;
                f.sync_all()?;
                Ok(keys)
            }
            Err(e) => Err(e),
        }
    }

    /// The Noise static secret (for the admission handshake).
    pub(crate) fn noise(&self) -> &Secret {
        &self.noise
    }

    /// The hub's Noise static public key: what devices pin.
    pub fn noise_public(&self) -> [u8; 32] {
        RustCrypto.x25519_public(&self.noise)
    }

    /// The public key that verifies device lists.
    pub fn signing_public(&self) -> [u8; 32] {
        RustCrypto.ed25519_public(&self.signing)
    }

    /// Signs `msg` with the hub's Ed25519 key (device lists are signed with it).
    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        RustCrypto.ed25519_sign(&self.signing, msg)
    }
}
