//! Key custody behind handles: callers sign and derive without ever holding the key bytes.
//!
//! A vault holds the keeper's two long-term secrets: the master secret `M` of the key tree and the Ed25519 seed
//! that signs grants and the consent log. Callers get a [`Vault`] and ask it to [`sign`](Vault::sign) or to
//! [`derive`](Vault::derive) a tree node; the master secret and the signing seed never leave it.
//!
//! - [`SoftwareVault`]: both secrets encrypted at rest in one small JSON file (AES-256-GCM under a key from
//!   Argon2id or from a 32-byte key file), zeroized in memory on drop. The format is in docs/vault.md.
//! - `TpmVault` (feature `tpm`): `M` as an HMAC key inside a TPM 2.0, the signing seed sealed to it; and
//!   `TpmSealer` for a device's long-term secrets. The trait is object safe, works on handles rather than bytes,
//!   and returns `Result` even where the software vault cannot fail, so the keeper does not care which it has.
//!
//! This crate must never write a secret unencrypted to disk, print one (every `Debug` is redacted), or return the
//! master secret or the signing seed.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

mod error;
mod file;
pub mod fsio;
mod kdf;
mod software;
#[cfg(feature = "tpm")]
mod tpm;
#[cfg(feature = "tpm-wrap")]
mod tpm_wrap;

pub use crate::error::VaultError;
pub use crate::kdf::{KEY_FILE_LEN, KdfParams, Unlock};
pub use crate::software::{SoftwareVault, create_key_file};
#[cfg(feature = "tpm")]
pub use crate::tpm::{
    MAX_SEALED_LEN, TpmKey, TpmSealed, TpmSealer, TpmVault, hmac_template as tpm_hmac_template,
    storage_template as tpm_storage_template,
};
#[cfg(feature = "tpm-wrap")]
pub use crate::tpm_wrap::{TpmImportBlob, check_storage_parent, wrap_hmac_key_for_tpm};

use custos_proto::tree::{NodeId, NodeSecret, TreeSpec};

/// The keeper's key custody: a handle that signs and derives with secrets it never gives out.
///
/// Object safe (`Box<dyn Vault>`), so the keeper does not care whether the keys live in a file or in a TPM.
pub trait Vault: Send + Sync {
    /// The Ed25519 public key that verifies [`Vault::sign`]'s signatures.
    fn signing_public(&self) -> [u8; 32];

    /// An Ed25519 signature (RFC 8032) over `msg` with the vault's signing key.
    fn sign(&self, msg: &[u8]) -> Result<[u8; 64], VaultError>;

    /// The secret of tree node `node` of `spec` (the DPK root or any descendant), derived from the master
    /// secret. Node secrets are what the keeper hands out (a DPK to its device, a grant to an app); the master
    /// secret itself stays inside.
    fn derive(&self, spec: &TreeSpec, node: NodeId) -> Result<NodeSecret, VaultError>;

    /// Encrypts `plain` for the keeper's own state (user–device keys, control keys), bound to `context` (what
    /// the bytes are and whose they are, so one sealed value cannot stand in for another). The key is the
    /// vault's own, never released: `nonce (12) ‖ ciphertext ‖ tag (16)`, AES-256-GCM under
    /// `HKDF-Expand(M, "custos/v1/vault-state")` with a random nonce (docs/vault.md).
    fn seal_state(&self, context: &[u8], plain: &[u8]) -> Result<Vec<u8>, VaultError>;

    /// Opens what [`Vault::seal_state`] sealed under the same `context`; anything else is
    /// [`VaultError::StateTampered`] and releases nothing.
    fn open_state(
        &self,
        context: &[u8],
        sealed: &[u8],
    ) -> Result<zeroize::Zeroizing<Vec<u8>>, VaultError>;
}
