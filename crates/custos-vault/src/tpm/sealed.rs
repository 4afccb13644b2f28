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
