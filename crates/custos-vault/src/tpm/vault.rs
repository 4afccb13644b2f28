//! [`TpmVault`]: the keeper's vault with `M` inside a TPM and the signing seed sealed to it.

use std::fmt;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use custos_proto::tree::{DPK_LABEL, MasterSecret, NodeId, NodeSecret, TreeSpec};
use custos_proto::{Crypto, RustCrypto, Secret};
use serde::{Deserialize, Serialize};
use tss_esapi::structures::SensitiveData;
use zeroize::Zeroizing;

use super::{Blob, Tpm, TpmSealed, hmac_key_template, tpm_err};
use crate::software::{STATE_LABEL, fill, open_state_with, seal_state_with};
use crate::{Vault, VaultError, fsio};

/// The value of the `format` field of a TPM vault file.
const FORMAT: &str = "custos-vault-tpm/1";
/// The one storage parent this format knows (see `storage_template`).
const PARENT: &str = "owner/ecc-p256-aes128cfb";
/// The name the signing seed is sealed under; device secrets get other names.
const SEED_NAME: &str = "custos/v1/vault-signing-seed";
const MAX_FILE_LEN: u64 = 64 * 1024;

/// The keeper's vault in a TPM 2.0.
///
/// `M` is an HMAC-SHA256 key inside the TPM, loaded for the vault's lifetime: [`Vault::derive`] and the
/// sealed-state key are one `TPM2_HMAC` each, and `M` is never in this process (unless it was imported, and then
/// only during [`TpmVault::import`]). The Ed25519 seed is a sealed data object, unsealed for each signature and
/// zeroized right after. The file holds only the two objects' blobs and the public key.
pub struct TpmVault {
    inner: Mutex<Inner>,
    public: [u8; 32],
}

struct Inner {
    tpm: Tpm,
    master: Blob,
    seed: Blob,
}

/// The file: JSON, like the software vault's (docs/vault.md, "TPM backend").
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    format: String,
    parent: String,
    signing_public: String,
    master: String,
    seed: String,
}

impl TpmVault {
    /// A new vault whose `M` the TPM draws itself: it has never existed outside this TPM and cannot be backed up
    /// (see docs/vault.md on what that means when the TPM is lost). The signing seed is drawn_seed from the OS and
    /// sealed. Writes `path` (which must not exist).
    pub fn create(path: &Path, tcti: &str) -> Result<Self, VaultError> {
        Self::make(path, tcti, None)
    }

    /// A new vault with a given `M` and signing seed (e.g. moving a software vault's secrets into a TPM, keeping
    /// an offline backup of `M`). They cross into the TPM once, encrypted by the session; afterwards the vault
    /// behaves like [`TpmVault::create`]'s and derives the same nodes as a software vault with the same `M`.
    pub fn import(
        path: &Path,
        tcti: &str,
        master: &MasterSecret,
        seed: &Secret,
    ) -> Result<Self, VaultError> {
        Self::make(path, tcti, Some((master, seed)))
    }

    fn make(
        path: &Path,
        tcti: &str,
        given: Option<(&MasterSecret, &Secret)>,
    ) -> Result<Self, VaultError> {
        if path.symlink_metadata().is_ok() {
            return Err(VaultError::AlreadyExists(path.to_path_buf()));
        }
        let mut tpm = Tpm::connect(tcti)?;
        let mut drawn_seed = Zeroizing::new([0u8; 32]);
        let (master, seed) = match given {
            Some((m, s)) => {
                let data = SensitiveData::try_from(m.expose().expose().to_vec())
                    .map_err(tpm_err("importing the master secret"))?;
                let blob = tpm.create(hmac_key_template(true)?, None, Some(data))?;
                (blob, s.expose())
            }
            None => {
                fill(&mut rand_core::OsRng, &mut drawn_seed[..])?;
                (
                    tpm.create(hmac_key_template(false)?, None, None)?,
                    &*drawn_seed,
                )
            }
        };
        let public = RustCrypto.ed25519_public(&Secret::from_bytes(*seed));
        let seed = super::seal(&mut tpm, SEED_NAME, seed)?;
        let file = File {
            format: FORMAT.into(),
            parent: PARENT.into(),
            signing_public: hex::encode(public),
            master: hex::encode(master.encode()?),
            seed: hex::encode(seed.encode()?),
        };
        let json =
            serde_json::to_vec_pretty(&file).map_err(|e| VaultError::Malformed(e.to_string()))?;
        fsio::write_new(path, &json)?;
        Ok(Self::start(tpm, master, seed, public))
    }

    /// Opens the vault at `path` in the TPM at `tcti`. Another TPM, or this one after its owner hierarchy was
    /// cleared, gives [`VaultError::WrongTpm`]; a seed that does not match the recorded public key gives
    /// `Malformed`.
    pub fn open(path: &Path, tcti: &str) -> Result<Self, VaultError> {
        let bytes = fsio::read_limited(path, MAX_FILE_LEN)?;
        let file: File = serde_json::from_slice(&bytes)
            .map_err(|e| VaultError::Malformed(format!("TPM vault file: {e}")))?;
        if file.format != FORMAT {
            return Err(VaultError::UnsupportedFormat(file.format));
        }
        if file.parent != PARENT {
            return Err(VaultError::Malformed(format!(
                "unknown storage parent {:?}",
                file.parent
            )));
        }
        let hex_field = |name: &str, v: &str| {
            hex::decode(v).map_err(|e| VaultError::Malformed(format!("{name}: {e}")))
        };
        let public: [u8; 32] = hex_field("signing_public", &file.signing_public)?
            .try_into()
            .map_err(|_| VaultError::Malformed("signing_public: not 32 bytes".into()))?;
        let master = Blob::decode(&hex_field("master", &file.master)?)?;
        let seed = Blob::decode(&hex_field("seed", &file.seed)?)?;
        let mut tpm = Tpm::connect(tcti)?;
        // One unseal at open: the seed must be the one whose public key callers will be given.
        let unsealed = super::unseal(&mut tpm, SEED_NAME, &seed)?;
        let seed_bytes: [u8; 32] = unsealed[..]
            .try_into()
            .map_err(|_| VaultError::Malformed("sealed seed is not 32 bytes".into()))?;
        let seed_bytes = Zeroizing::new(seed_bytes);
        if RustCrypto.ed25519_public(&Secret::from_bytes(*seed_bytes)) != public {
            return Err(VaultError::Malformed(
                "signing_public does not match the sealed seed".into(),
            ));
        }
        tpm.check(&master)?;
        Ok(Self::start(tpm, master, seed, public))
    }

    fn start(tpm: Tpm, master: Blob, seed: Blob, public: [u8; 32]) -> Self {
        Self {
            inner: Mutex::new(Inner { tpm, master, seed }),
            public,
        }
    }

    /// Seals a device's long-term secret (1 to 128 bytes) to this TPM under `name`; see [`super::TpmSealer`].
    pub fn seal_device_secret(&self, name: &str, secret: &[u8]) -> Result<TpmSealed, VaultError> {
        let mut inner = self.lock()?;
        super::seal(&mut inner.tpm, name, secret).map(TpmSealed)
    }

    /// Unseals what [`TpmVault::seal_device_secret`] sealed under the same `name`.
    pub fn unseal_device_secret(
        &self,
        name: &str,
        sealed: &TpmSealed,
    ) -> Result<Zeroizing<Vec<u8>>, VaultError> {
        let mut inner = self.lock()?;
        super::unseal(&mut inner.tpm, name, &sealed.0)
    }

    fn lock(&self) -> Result<MutexGuard<'_, Inner>, VaultError> {
        // A panic while holding the lock cannot leave the TPM connection half-used in a way later commands
        // would misread (each command is one request and one response), so a poisoned lock is taken over.
        Ok(self.inner.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// `HKDF-Expand(M, label‖…, 32)`: one HMAC block, computed by the TPM.
    fn expand_m(&self, info: &[&[u8]]) -> Result<Zeroizing<[u8; 32]>, VaultError> {
        let mut msg = Vec::with_capacity(64);
        for part in info {
            msg.extend_from_slice(part);
        }
        msg.push(0x01);
        let mut inner = self.lock()?;
        let Inner { tpm, master, .. } = &mut *inner;
        tpm.hmac(master, &msg)
    }

    fn state_key(&self) -> Result<Zeroizing<[u8; 32]>, VaultError> {
        self.expand_m(&[STATE_LABEL])
    }
}

impl Vault for TpmVault {
    fn signing_public(&self) -> [u8; 32] {
        self.public
    }

    fn sign(&self, msg: &[u8]) -> Result<[u8; 64], VaultError> {
        let unsealed = {
            let mut inner = self.lock()?;
            let Inner { tpm, seed, .. } = &mut *inner;
            super::unseal(tpm, SEED_NAME, seed)?
        };
        let seed: [u8; 32] = unsealed[..]
            .try_into()
            .map_err(|_| VaultError::Malformed("sealed seed is not 32 bytes".into()))?;
        let seed = Secret::from_bytes(seed);
        Ok(RustCrypto.ed25519_sign(&seed, msg))
    }

    fn derive(&self, spec: &TreeSpec, node: NodeId) -> Result<NodeSecret, VaultError> {
        spec.check_node(node)?;
        let device = spec.device();
        let epoch = spec.epoch().0.to_be_bytes();
        let dpk = self.expand_m(&[DPK_LABEL, &device.0, &epoch])?;
        let root = NodeSecret::new(NodeId::ROOT, Secret::from_bytes(*dpk));
        Ok(spec.derive(&RustCrypto, &root, node)?)
    }

    fn seal_state(&self, context: &[u8], plain: &[u8]) -> Result<Vec<u8>, VaultError> {
        seal_state_with(&*self.state_key()?, context, plain)
    }

    fn open_state(&self, context: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, VaultError> {
        open_state_with(&*self.state_key()?, context, sealed)
    }
}

/// Shows the public key only.
impl fmt::Debug for TpmVault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TpmVault")
            .field("signing_public", &hex::encode(self.public))
            .finish_non_exhaustive()
    }
}
