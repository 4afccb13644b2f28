//! The crate's one error type.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong in a vault. No variant carries secret material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VaultError {
    /// The AEAD tag did not verify. One variant for all three causes on purpose: they cannot be told apart
    /// cryptographically, and nothing of the vault was released.
    #[error("wrong passphrase or key file, or the vault file was altered")]
    WrongUnlock,
    /// The vault is locked with the other kind of [`Unlock`](crate::Unlock) than the one given.
    #[error("this vault is unlocked with a {expected}, not a {given}")]
    UnlockKind {
        /// What the vault file asks for: "passphrase" or "key file".
        expected: &'static str,
        /// What was given.
        given: &'static str,
    },
    /// The file is not a well-formed vault document (empty, not JSON, missing or unknown fields, bad hex).
    #[error("not a valid Custos vault file: {0}")]
    Malformed(String),
    /// The file's `format` is not one this version reads.
    #[error("unsupported vault format {0:?} (this version reads \"custos-vault/1\")")]
    UnsupportedFormat(String),
    /// Argon2id parameters out of the accepted range, given by the caller or read from a file.
    #[error("Argon2id parameters out of range: {0}")]
    KdfParams(String),
    /// A key file must hold exactly 32 bytes.
    #[error("a key file must hold exactly 32 bytes")]
    KeyFileLength,
    /// An empty passphrase protects nothing, so a vault is never locked with one.
    #[error("the passphrase is empty")]
    EmptyPassphrase,
    /// The target file exists; the vault never overwrites a file it was not asked to replace.
    #[error("{} already exists; refusing to overwrite it", .0.display())]
    AlreadyExists(PathBuf),
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// The node cannot be derived (not in the tree, or a backend failure).
    #[error("cannot derive the node: {0}")]
    Derive(#[from] custos_proto::Error),
    /// Sealed keeper state did not open: altered, moved to another context, or sealed by another vault.
    #[error("sealed keeper state was altered, or belongs to another vault or entry")]
    StateTampered,
    /// The random number generator failed, so no secret, salt or nonce could be drawn.
    #[error("the random number generator failed")]
    Random,
    /// A TPM command failed (connecting through the TCTI, or a response code from the TPM).
    #[error("TPM: {op} failed: {detail}")]
    Tpm {
        /// What the vault was doing.
        op: &'static str,
        /// The TCTI's or the TPM's error, as tpm2-tss describes it.
        detail: String,
    },
    /// The TPM refused to load the vault's objects: they were made by another TPM, its owner hierarchy was
    /// cleared since (which changes the storage key), or the blobs were altered.
    #[error(
        "this TPM cannot load the vault's objects: another TPM, a cleared owner hierarchy, or altered blobs ({0})"
    )]
    WrongTpm(String),
    /// A sealed secret did not unseal under the name given: it was sealed under another name or for another
    /// purpose. The TPM released nothing.
    #[error("the sealed secret belongs to another name")]
    SealedName,
    /// A TPM sealed data object holds at most 128 bytes.
    #[error("a TPM-sealed secret holds 1 to 128 bytes, not {0}")]
    SealedLength(usize),
    /// A primitive (Argon2id, AES-GCM) failed on inputs that were already checked; not expected to happen.
    #[error("a cryptographic operation failed unexpectedly")]
    Crypto,
}

impl VaultError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}
