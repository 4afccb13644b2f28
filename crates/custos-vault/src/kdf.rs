//! How the key that encrypts a vault file is made: Argon2id from a passphrase, or HKDF from a key file.

use std::fmt;
use std::fs::File;
use std::io::Read;
use std::path::Path;

use argon2::{Algorithm, Argon2, Params, Version};
use custos_proto::{Crypto, RustCrypto};
use zeroize::Zeroizing;

use crate::VaultError;

/// Length of a key file, bytes.
pub const KEY_FILE_LEN: usize = 32;
/// Length of the salt stored in a vault file, bytes.
pub(crate) const SALT_LEN: usize = 16;
/// HKDF info for the key made from a key file; the format name keeps it apart from any other use of the file.
const KEY_FILE_INFO: &[u8] = b"custos-vault/1 keyfile";

/// The key that encrypts a vault file (the key-encryption key). Zeroized on drop.
pub(crate) type Kek = Zeroizing<[u8; 32]>;

/// How to unlock a vault: the secret the user (or the service manager) supplies.
#[derive(Clone, Copy)]
pub enum Unlock<'a> {
    /// A passphrase, stretched with Argon2id. Its UTF-8 bytes are used as given (no Unicode normalization).
    Passphrase(&'a str),
    /// A file of exactly 32 random bytes (see [`create_key_file`](crate::create_key_file)), for unattended
    /// use such as `keeper serve`, where nobody is there to type a passphrase.
    KeyFile(&'a Path),
}

impl Unlock<'_> {
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Self::Passphrase(_) => "passphrase",
            Self::KeyFile(_) => "key file",
        }
    }
}

/// Redacts the passphrase; a key file's path is not secret.
impl fmt::Debug for Unlock<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Passphrase(_) => f.write_str("Passphrase(..)"),
            Self::KeyFile(path) => f.debug_tuple("KeyFile").field(path).finish(),
        }
    }
}

/// Argon2id cost parameters (version 0x13, 32-byte output). Checked on construction, so a value of this type
/// is always one the vault accepts, whether it came from the caller or from a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KdfParams {
    memory_kib: u32,
    iterations: u32,
    parallelism: u32,
}

impl KdfParams {
    /// OWASP's recommendation for Argon2id: 19 MiB, 2 iterations, 1 lane. Tens of milliseconds per guess in a
    /// release build, paid in memory that GPUs and ASICs cannot cheaply parallelize: slow for an attacker who
    /// guesses, unnoticed by a user who unlocks once. Still affordable on a phone.
    pub const OWASP: Self = Self {
        memory_kib: 19 * 1024,
        iterations: 2,
        parallelism: 1,
    };
    /// Largest memory accepted: 4 GiB. More would only let an altered file exhaust the machine's memory.
    pub const MAX_MEMORY_KIB: u32 = 4 * 1024 * 1024;
    /// Most iterations accepted; beyond this an open would take minutes.
    pub const MAX_ITERATIONS: u32 = 100;
    /// Most lanes accepted. This build computes lanes one after another, so more lanes buy nothing.
    pub const MAX_PARALLELISM: u32 = 64;

    /// Checks the ranges: memory from 8 KiB per lane (Argon2's minimum) to [`Self::MAX_MEMORY_KIB`],
    /// 1 to [`Self::MAX_ITERATIONS`] iterations, 1 to [`Self::MAX_PARALLELISM`] lanes.
    pub fn new(memory_kib: u32, iterations: u32, parallelism: u32) -> Result<Self, VaultError> {
        Self::check(
            u64::from(memory_kib),
            u64::from(iterations),
            u64::from(parallelism),
        )
    }

    /// The same checks on values as read from a file, where they may not even fit 32 bits.
    pub(crate) fn check(
        memory_kib: u64,
        iterations: u64,
        parallelism: u64,
    ) -> Result<Self, VaultError> {
        let bad = |what: String| Err(VaultError::KdfParams(what));
        if !(1..=u64::from(Self::MAX_PARALLELISM)).contains(&parallelism) {
            return bad(format!(
                "parallelism {parallelism} is not between 1 and {}",
                Self::MAX_PARALLELISM
            ));
        }
        if !(1..=u64::from(Self::MAX_ITERATIONS)).contains(&iterations) {
            return bad(format!(
                "iterations {iterations} is not between 1 and {}",
                Self::MAX_ITERATIONS
            ));
        }
        let min_memory = 8 * parallelism;
        if !(min_memory..=u64::from(Self::MAX_MEMORY_KIB)).contains(&memory_kib) {
            return bad(format!(
                "memory {memory_kib} KiB is not between {min_memory} KiB (8 per lane) and {} KiB (4 GiB)",
                Self::MAX_MEMORY_KIB
            ));
        }
        // All three were just bounded below u32::MAX, so the conversions cannot fail.
        let (Ok(memory_kib), Ok(iterations), Ok(parallelism)) = (
            u32::try_from(memory_kib),
            u32::try_from(iterations),
            u32::try_from(parallelism),
        ) else {
            return bad("value does not fit 32 bits".into());
        };
        Ok(Self {
            memory_kib,
            iterations,
            parallelism,
        })
    }

    /// Memory, KiB.
    pub fn memory_kib(&self) -> u32 {
        self.memory_kib
    }

    /// Number of passes over the memory.
    pub fn iterations(&self) -> u32 {
        self.iterations
    }

    /// Number of lanes.
    pub fn parallelism(&self) -> u32 {
        self.parallelism
    }
}

/// [`KdfParams::OWASP`].
impl Default for KdfParams {
    fn default() -> Self {
        Self::OWASP
    }
}

/// Argon2id(passphrase, salt) with `params`, 32 bytes.
pub(crate) fn passphrase_kek(
    passphrase: &str,
    params: &KdfParams,
    salt: &[u8; SALT_LEN],
) -> Result<Kek, VaultError> {
    let p = Params::new(
        params.memory_kib,
        params.iterations,
        params.parallelism,
        Some(32),
    )
    .map_err(|e| VaultError::KdfParams(e.to_string()))?;
    let mut kek = Zeroizing::new([0u8; 32]);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, p)
        .hash_password_into(passphrase.as_bytes(), salt, &mut kek[..])
        .map_err(|_| VaultError::Crypto)?;
    Ok(kek)
}

/// HKDF-SHA256(salt, key file, "custos-vault/1 keyfile"), 32 bytes. The key file already has full entropy,
/// so no stretching; the per-file salt still gives every vault file its own key.
pub(crate) fn key_file_kek(path: &Path, salt: &[u8; SALT_LEN]) -> Result<Kek, VaultError> {
    let key = read_key_file(path)?;
    let prk = RustCrypto.hkdf_extract(salt, &key[..]);
    let mut kek = Zeroizing::new([0u8; 32]);
    RustCrypto
        .hkdf_expand(prk.expose(), &[KEY_FILE_INFO], &mut kek[..])
        .map_err(|_| VaultError::Crypto)?;
    Ok(kek)
}

/// Reads a key file, which must hold exactly [`KEY_FILE_LEN`] bytes.
fn read_key_file(path: &Path) -> Result<Zeroizing<[u8; KEY_FILE_LEN]>, VaultError> {
    let file = File::open(path).map_err(|e| VaultError::io(path, e))?;
    // One byte more than a key tells a long file from a good one; reading into our own zeroized buffer keeps
    // the key out of `read_to_end`'s growing (and unzeroized) allocations.
    let mut buf = Zeroizing::new([0u8; KEY_FILE_LEN + 1]);
    let mut len = 0;
    let mut limited = file.take(buf.len() as u64);
    loop {
        match limited.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(VaultError::io(path, e)),
        }
    }
    if len != KEY_FILE_LEN {
        return Err(VaultError::KeyFileLength);
    }
    let mut key = Zeroizing::new([0u8; KEY_FILE_LEN]);
    key.copy_from_slice(&buf[..KEY_FILE_LEN]);
    Ok(key)
}
