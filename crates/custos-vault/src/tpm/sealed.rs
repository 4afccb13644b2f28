//! [`TpmSealer`]: a device's long-term secrets (its server–device key, its X25519 static secret) sealed to its TPM.

use std::fmt;
use std::sync::Mutex;

use zeroize::Zeroizing;

use super::{Blob, Tpm};
use crate::VaultError;

/// The version byte in front of [`TpmSealed::to_bytes`].
const SEALED_VERSION: u8 = 1;

/// A connection to a TPM for sealing small secrets to it. A device needs no keeper vault for this: it seals its
/// secrets here and keeps the [`TpmSealed`] blobs in its state file.
pub struct TpmSealer {
    tpm: Mutex<Tpm>,
}

/// A secret sealed to one TPM under one name: useless without that TPM, and unsealed only under that name.
///
/// Bytes: `0x01 ‖ TPM2B_PUBLIC ‖ TPM2B_PRIVATE` (the private part is encrypted and integrity-protected by the
/// TPM's storage key). About 130 bytes for a 32-byte secret.
#[derive(Clone, PartialEq, Eq)]
pub struct TpmSealed(pub(super) Blob);

impl TpmSealer {
    /// Connects to the TPM at `tcti` (e.g. `device:/dev/tpmrm0`, `swtpm:host=127.0.0.1,port=2321`).
    pub fn connect(tcti: &str) -> Result<Self, VaultError> {
        Ok(Self {
            tpm: Mutex::new(Tpm::connect(tcti)?),
        })
    }

    /// Seals `secret` (1 to 128 bytes) under `name`, e.g. `"custos/v1/device/sdk"`.
    pub fn seal(&self, name: &str, secret: &[u8]) -> Result<TpmSealed, VaultError> {
        let mut tpm = self.tpm.lock().unwrap_or_else(|p| p.into_inner());
        super::seal(&mut tpm, name, secret).map(TpmSealed)
    }

    /// Unseals `sealed` into memory (zeroized on drop). Another TPM gives [`VaultError::WrongTpm`], another name
    /// [`VaultError::SealedName`].
    pub fn unseal(&self, name: &str, sealed: &TpmSealed) -> Result<Zeroizing<Vec<u8>>, VaultError> {
        let mut tpm = self.tpm.lock().unwrap_or_else(|p| p.into_inner());
        super::unseal(&mut tpm, name, &sealed.0)
    }
}

/// An HMAC-SHA256 key imported into this TPM ([`TpmSealer::import`]), stored like [`TpmSealed`]: the TPM uses it
/// ([`TpmSealer::hmac`]) and never releases it.
#[derive(Clone, PartialEq, Eq)]
pub struct TpmKey(pub(super) Blob);

impl TpmSealer {
    /// The storage key's public area (`TPM2B_PUBLIC`): what a sender needs to build a
    /// [`TpmImportBlob`](crate::TpmImportBlob) for this TPM. The same for every connection until the owner
    /// hierarchy is cleared.
    pub fn storage_public(&self) -> Result<Vec<u8>, VaultError> {
        let mut tpm = self.tpm.lock().unwrap_or_else(|p| p.into_inner());
        tpm.storage_public()
    }

    /// `TPM2_Import` of a key built by [`wrap_hmac_key_for_tpm`](crate::wrap_hmac_key_for_tpm) for this TPM:
    /// the TPM checks the outer wrapper's integrity and re-wraps the key under its storage key. A blob for another
    /// TPM, or an altered one, is refused ([`VaultError::WrongTpm`]).
    pub fn import(&self, blob: &crate::TpmImportBlob) -> Result<TpmKey, VaultError> {
        let mut tpm = self.tpm.lock().unwrap_or_else(|p| p.into_inner());
        tpm.import(blob).map(TpmKey)
    }

    /// `HMAC-SHA256(key, msg)` computed by the TPM with an imported key.
    pub fn hmac(&self, key: &TpmKey, msg: &[u8]) -> Result<Zeroizing<[u8; 32]>, VaultError> {
        let mut tpm = self.tpm.lock().unwrap_or_else(|p| p.into_inner());
        tpm.hmac(&key.0, msg)
    }
}

impl TpmKey {
    /// The stored form: `0x01 ‖ TPM2B_PUBLIC ‖ TPM2B_PRIVATE`.
    pub fn to_bytes(&self) -> Result<Vec<u8>, VaultError> {
        TpmSealed(self.0.clone()).to_bytes()
    }

    /// Parses [`TpmKey::to_bytes`]'s output.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, VaultError> {
        TpmSealed::from_bytes(bytes).map(|s| Self(s.0))
    }
}

impl fmt::Debug for TpmKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TpmKey(..)")
    }
}

impl TpmSealed {
    /// The stored form.
    pub fn to_bytes(&self) -> Result<Vec<u8>, VaultError> {
        let mut out = vec![SEALED_VERSION];
        out.extend_from_slice(&self.0.encode()?);
        Ok(out)
    }

    /// Parses [`TpmSealed::to_bytes`]'s output; the TPM checks the rest when unsealing.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, VaultError> {
        match bytes.split_first() {
            Some((&SEALED_VERSION, rest)) => Ok(Self(Blob::decode(rest)?)),
            Some((v, _)) => Err(VaultError::UnsupportedFormat(format!(
                "TPM-sealed blob version {v}"
            ))),
            None => Err(VaultError::Malformed("empty TPM-sealed blob".into())),
        }
    }
}

impl fmt::Debug for TpmSealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TpmSealed(..)")
    }
}

impl fmt::Debug for TpmSealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TpmSealer(..)")
    }
}
