//! The software vault: the keeper's two secrets in one file, encrypted under a passphrase or a key file.

use std::fmt;
use std::path::Path;

use custos_proto::tree::{MasterSecret, NodeId, NodeSecret, TreeSpec};
use custos_proto::{Crypto, RustCrypto, Secret};
use rand_core::CryptoRngCore;
use zeroize::Zeroizing;

use crate::file::{Header, Kdf, MAX_FILE_LEN, NONCE_LEN, PLAIN_LEN, Plain, Sealed};
use crate::kdf::{KEY_FILE_LEN, SALT_LEN, key_file_kek, passphrase_kek};
use crate::{KdfParams, Unlock, Vault, VaultError, fsio};

/// The keeper's secrets held in memory after unlocking a vault file; zeroized on drop.
///
/// The file is read once, at [`SoftwareVault::open`]; nothing is written back except by
/// [`SoftwareVault::change_unlock`].
pub struct SoftwareVault {
    master: MasterSecret,
    seed: Secret,
    // Computed once: the keeper asks for it on every grant it signs.
    public: [u8; 32],
}

impl SoftwareVault {
    /// Draws a fresh master secret and signing seed from `rng`, writes them encrypted to `path` (which must not
    /// exist) and returns the unlocked vault. `kdf` sets the Argon2id cost for a passphrase and is not used for
    /// a key file.
    pub fn create(
        path: &Path,
        unlock: Unlock<'_>,
        kdf: KdfParams,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Self, VaultError> {
        // Checked early only to fail before the slow KDF; the atomic check is in `write_new`.
        if path.symlink_metadata().is_ok() {
            return Err(VaultError::AlreadyExists(path.to_path_buf()));
        }
        let mut plain: Plain = Zeroizing::new([0; PLAIN_LEN]);
        fill(rng, &mut plain[..])?;
        let sealed = seal(unlock, kdf, &plain, rng)?;
        fsio::write_new(path, &sealed.to_json()?)?;
        Ok(Self::from_plain(&plain))
    }

    /// Reads and decrypts the vault at `path`. A wrong passphrase or key file, or any change to the file, gives
    /// [`VaultError::WrongUnlock`] and releases nothing.
    pub fn open(path: &Path, unlock: Unlock<'_>) -> Result<Self, VaultError> {
        let plain = unseal(path, unlock)?;
        Ok(Self::from_plain(&plain))
    }

    /// Re-encrypts the vault at `path` under `new` (with a fresh salt and nonce), replacing the file in one
    /// atomic step; afterwards `old` no longer opens it. `kdf` is used when `new` is a passphrase. Can also
    /// switch between a passphrase and a key file.
    pub fn change_unlock(
        path: &Path,
        old: Unlock<'_>,
        new: Unlock<'_>,
        kdf: KdfParams,
        rng: &mut impl CryptoRngCore,
    ) -> Result<(), VaultError> {
        let plain = unseal(path, old)?;
        let sealed = seal(new, kdf, &plain, rng)?;
        fsio::replace(path, &sealed.to_json()?)
    }

    fn from_plain(plain: &Plain) -> Self {
        let (mut master, mut seed) = (Zeroizing::new([0u8; 32]), Zeroizing::new([0u8; 32]));
        master.copy_from_slice(&plain[..32]);
        seed.copy_from_slice(&plain[32..]);
        // `Secret::from_bytes` takes the array by value, so a stack copy may outlive this call; the proto
        // crate offers no way to fill a `Secret` in place from outside.
        let seed = Secret::from_bytes(*seed);
        Self {
            master: MasterSecret::new(Secret::from_bytes(*master)),
            public: RustCrypto.ed25519_public(&seed),
            seed,
        }
    }
}

impl Vault for SoftwareVault {
    fn signing_public(&self) -> [u8; 32] {
        self.public
    }

    fn sign(&self, msg: &[u8]) -> Result<[u8; 64], VaultError> {
        Ok(RustCrypto.ed25519_sign(&self.seed, msg))
    }

    fn derive(&self, spec: &TreeSpec, node: NodeId) -> Result<NodeSecret, VaultError> {
        let root = spec.root(&RustCrypto, &self.master)?;
        Ok(spec.derive(&RustCrypto, &root, node)?)
    }

    fn seal_state(&self, context: &[u8], plain: &[u8]) -> Result<Vec<u8>, VaultError> {
        seal_state_with(&*self.state_key()?, context, plain)
    }

    fn open_state(&self, context: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, VaultError> {
        open_state_with(&*self.state_key()?, context, sealed)
    }
}

/// `nonce (12, random) ‖ AES-256-GCM(key, context as associated data)`: the sealed-state format of every vault.
pub(crate) fn seal_state_with(
    key: &[u8; 32],
    context: &[u8],
    plain: &[u8],
) -> Result<Vec<u8>, VaultError> {
    let key = aead_key(key)?;
    let mut nonce = [0u8; STATE_NONCE];
    fill(&mut rand_core::OsRng, &mut nonce)?;
    let mut out = Vec::with_capacity(STATE_NONCE + plain.len() + TAG_LEN);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plain);
    let tag = RustCrypto
        .aead_seal(&key, &nonce, context, &mut out[STATE_NONCE..])
        .map_err(|_| VaultError::Crypto)?;
    out.extend_from_slice(&tag);
    Ok(out)
}

/// Opens what [`seal_state_with`] sealed under the same key and context.
pub(crate) fn open_state_with(
    key: &[u8; 32],
    context: &[u8],
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>, VaultError> {
    if sealed.len() < STATE_NONCE + TAG_LEN {
        return Err(VaultError::StateTampered);
    }
    let key = aead_key(key)?;
    let (nonce, rest) = sealed.split_at(STATE_NONCE);
    let (body, tag) = rest.split_at(rest.len() - TAG_LEN);
    let nonce: [u8; STATE_NONCE] = nonce.try_into().map_err(|_| VaultError::StateTampered)?;
    let tag: [u8; TAG_LEN] = tag.try_into().map_err(|_| VaultError::StateTampered)?;
    let mut buf = Zeroizing::new(body.to_vec());
    RustCrypto
        .aead_open(&key, &nonce, context, &mut buf, &tag)
        .map_err(|_| VaultError::StateTampered)?;
    Ok(buf)
}

fn aead_key(key: &[u8; 32]) -> Result<<RustCrypto as Crypto>::AeadKey, VaultError> {
    RustCrypto
        .aead_key(custos_proto::Suite::AES256GCM, &Secret::from_bytes(*key))
        .map_err(|_| VaultError::Crypto)
}

const STATE_NONCE: usize = 12;
const TAG_LEN: usize = 16;
/// The label of the key that seals the keeper's own state; nothing else is derived with it.
pub(crate) const STATE_LABEL: &[u8] = b"custos/v1/vault-state";

impl SoftwareVault {
    fn state_key(&self) -> Result<Zeroizing<[u8; 32]>, VaultError> {
        let mut k = Zeroizing::new([0u8; 32]);
        RustCrypto
            .hkdf_expand(self.master.expose().expose(), &[STATE_LABEL], k.as_mut())
            .map_err(|_| VaultError::Crypto)?;
        Ok(k)
    }
}

/// Shows the public key only.
impl fmt::Debug for SoftwareVault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SoftwareVault")
            .field("signing_public", &hex::encode(self.public))
            .finish_non_exhaustive()
    }
}

/// Writes a new key file of 32 random bytes to `path` (owner-only, never over an existing file), for
/// [`Unlock::KeyFile`]. Whoever can read it can open the vault: keep it off the disk the vault is backed up to.
pub fn create_key_file(path: &Path, rng: &mut impl CryptoRngCore) -> Result<(), VaultError> {
    let mut key = Zeroizing::new([0u8; KEY_FILE_LEN]);
    fill(rng, &mut key[..])?;
    fsio::write_new(path, &key[..])
}

/// Encrypts `plain` under `unlock` with a fresh salt and nonce.
fn seal(
    unlock: Unlock<'_>,
    params: KdfParams,
    plain: &Plain,
    rng: &mut impl CryptoRngCore,
) -> Result<Sealed, VaultError> {
    let mut salt = [0u8; SALT_LEN];
    fill(rng, &mut salt)?;
    let mut nonce = [0u8; NONCE_LEN];
    fill(rng, &mut nonce)?;
    let (kdf, kek) = match unlock {
        Unlock::Passphrase("") => return Err(VaultError::EmptyPassphrase),
        Unlock::Passphrase(p) => (
            Kdf::Argon2id { params, salt },
            passphrase_kek(p, &params, &salt)?,
        ),
        Unlock::KeyFile(k) => (Kdf::KeyFile { salt }, key_file_kek(k, &salt)?),
    };
    Sealed::seal(&kek, Header { kdf, nonce }, plain)
}

/// Reads, parses and decrypts the vault file at `path`.
fn unseal(path: &Path, unlock: Unlock<'_>) -> Result<Plain, VaultError> {
    let bytes = fsio::read_limited(path, MAX_FILE_LEN)?;
    let sealed = Sealed::parse(&bytes)?;
    let kek = match (unlock, sealed.header.kdf) {
        (Unlock::Passphrase(p), Kdf::Argon2id { params, salt }) => {
            passphrase_kek(p, &params, &salt)?
        }
        (Unlock::KeyFile(k), Kdf::KeyFile { salt }) => key_file_kek(k, &salt)?,
        (given, kdf) => {
            return Err(VaultError::UnlockKind {
                expected: kdf.unlock_kind(),
                given: given.kind(),
            });
        }
    };
    sealed.open(&kek)
}

pub(crate) fn fill(rng: &mut impl CryptoRngCore, buf: &mut [u8]) -> Result<(), VaultError> {
    rng.try_fill_bytes(buf).map_err(|_| VaultError::Random)
}

#[cfg(test)]
mod state_tests {
    use super::*;

    #[test]
    fn sealed_state_opens_only_in_its_context_and_vault() {
        let dir = tempfile::tempdir().unwrap();
        let fast = KdfParams::new(8 * 1024, 1, 1).unwrap();
        let a = SoftwareVault::create(
            &dir.path().join("a.json"),
            Unlock::Passphrase("correct horse"),
            fast,
            &mut rand_core::OsRng,
        )
        .unwrap();
        let b = SoftwareVault::create(
            &dir.path().join("b.json"),
            Unlock::Passphrase("correct horse"),
            fast,
            &mut rand_core::OsRng,
        )
        .unwrap();
        let sealed = a.seal_state(b"udk/0011223344556677", b"key bytes").unwrap();
        assert_eq!(
            &a.open_state(b"udk/0011223344556677", &sealed).unwrap()[..],
            b"key bytes"
        );
        assert!(!sealed.windows(9).any(|w| w == b"key bytes"));
        for bad in [
            a.open_state(b"udk/0011223344556678", &sealed),
            b.open_state(b"udk/0011223344556677", &sealed),
            a.open_state(b"udk/0011223344556677", &sealed[..20]),
        ] {
            assert!(matches!(bad, Err(VaultError::StateTampered)));
        }
        for i in 0..sealed.len() {
            let mut x = sealed.clone();
            x[i] ^= 1;
            assert!(a.open_state(b"udk/0011223344556677", &x).is_err());
        }
    }
}
