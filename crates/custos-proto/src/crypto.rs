//! The crypto backend: one trait, so that a hardware accelerator or a PSA backend can replace RustCrypto.
//!
//! Profile 1 is HKDF-SHA256 + AES-256-GCM, profile 2 is HKDF-SHA256 + ChaCha20-Poly1305 (for MCUs without AES
//! hardware). Both use Ed25519 and X25519 for the protocols built on this core. The suite travels in every record
//! header.

use core::fmt;

use crate::{Error, Secret};

/// A cipher suite: the AEAD used for records. Unknown codes still decode and print, so that errors can name them.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Suite(u8);

impl Suite {
    /// Profile 1: HKDF-SHA256, AES-256-GCM.
    pub const AES256GCM: Suite = Suite(1);
    /// Profile 2: HKDF-SHA256, ChaCha20-Poly1305.
    pub const CHACHA20POLY1305: Suite = Suite(2);

    /// The suite with this code, known or not.
    pub const fn from_code(code: u8) -> Self {
        Self(code)
    }

    /// The suite's code (4 bits on the wire).
    pub const fn code(self) -> u8 {
        self.0
    }

    /// Whether this implementation defines the suite.
    pub const fn is_known(self) -> bool {
        matches!(self.0, 1 | 2)
    }

    /// The suite's name as used by the CLI: `aes256gcm` or `chacha20poly1305`.
    pub const fn name(self) -> Option<&'static str> {
        match self.0 {
            1 => Some("aes256gcm"),
            2 => Some("chacha20poly1305"),
            _ => None,
        }
    }

    /// The suite called `name` (see [`Suite::name`]).
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::AES256GCM, Self::CHACHA20POLY1305]
            .into_iter()
            .find(|s| s.name() == Some(name))
    }
}

impl fmt::Debug for Suite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "Suite({:#04x})", self.0),
        }
    }
}

impl fmt::Display for Suite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// AEAD tag length, bytes (both suites).
pub const TAG_LEN: usize = 16;
/// AEAD nonce length, bytes (both suites).
pub const NONCE_LEN: usize = 12;

/// The primitives the core needs. Implementations must compare tags in constant time and, when `aead_open`
/// fails, leave no plaintext in `buf`.
pub trait Crypto {
    /// An AEAD key ready for use (for AES, the expanded key schedule). Zeroized on drop.
    type AeadKey;

    /// HKDF-Extract with SHA-256 (RFC 5869 §2.2).
    fn hkdf_extract(&self, salt: &[u8], ikm: &[u8]) -> Secret;

    /// HKDF-Expand with SHA-256 (RFC 5869 §2.3); `info` is the concatenation of the given parts.
    fn hkdf_expand(&self, prk: &[u8], info: &[&[u8]], okm: &mut [u8]) -> Result<(), Error>;

    /// HMAC-SHA256 (RFC 2104) of the concatenation of `parts`.
    fn hmac_sha256(&self, key: &[u8], parts: &[&[u8]]) -> [u8; 32];

    /// Prepares `key` for `suite`; fails with [`Error::UnsupportedSuite`] if the backend lacks it.
    fn aead_key(&self, suite: Suite, key: &Secret) -> Result<Self::AeadKey, Error>;

    /// Encrypts `buf` in place and returns the tag.
    fn aead_seal(
        &self,
        key: &Self::AeadKey,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
    ) -> Result<[u8; TAG_LEN], Error>;

    /// Verifies `tag`, then decrypts `buf` in place. On failure `buf` holds no plaintext.
    fn aead_open(
        &self,
        key: &Self::AeadKey,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), Error>;

    /// The Ed25519 public key of a 32-byte seed (RFC 8032).
    fn ed25519_public(&self, seed: &Secret) -> [u8; 32];

    /// An Ed25519 signature over `msg` (RFC 8032).
    fn ed25519_sign(&self, seed: &Secret, msg: &[u8]) -> [u8; 64];

    /// Verifies an Ed25519 signature strictly (no small-order keys, canonical S).
    fn ed25519_verify(&self, public: &[u8; 32], msg: &[u8], sig: &[u8; 64]) -> Result<(), Error>;

    /// X25519 (RFC 7748). Fails on a small-order peer key (all-zero shared secret).
    fn x25519(&self, secret: &Secret, public: &[u8; 32]) -> Result<Secret, Error>;

    /// The X25519 public key of `secret`.
    fn x25519_public(&self, secret: &Secret) -> [u8; 32];
}

#[cfg(feature = "rustcrypto")]
mod rustcrypto {
    use aes_gcm::aead::AeadInPlace;
    use aes_gcm::{Aes256Gcm, KeyInit};
    use chacha20poly1305::ChaCha20Poly1305;
    use hkdf::Hkdf;
    use sha2::Sha256;

    use super::{Crypto, NONCE_LEN, Suite, TAG_LEN};
    use crate::{Error, Secret};

    /// The RustCrypto/dalek backend.
    #[derive(Clone, Copy, Debug, Default)]
    pub struct RustCrypto;

    /// An AEAD key expanded for one suite. The AES key schedule zeroizes on drop (`aes` feature `zeroize`).
    // Boxing the large AES variant would need a heap, which the core does without.
    #[allow(clippy::large_enum_variant)]
    pub enum AeadKey {
        /// AES-256-GCM.
        Aes256Gcm(Aes256Gcm),
        /// ChaCha20-Poly1305.
        ChaCha20Poly1305(ChaCha20Poly1305),
    }

    impl core::fmt::Debug for AeadKey {
        fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            f.write_str(match self {
                Self::Aes256Gcm(_) => "AeadKey(aes256gcm, ..)",
                Self::ChaCha20Poly1305(_) => "AeadKey(chacha20poly1305, ..)",
            })
        }
    }

    impl Crypto for RustCrypto {
        type AeadKey = AeadKey;

        fn hkdf_extract(&self, salt: &[u8], ikm: &[u8]) -> Secret {
            let (prk, _) = Hkdf::<Sha256>::extract(Some(salt), ikm);
            Secret::from_bytes(prk.into())
        }

        fn hkdf_expand(&self, prk: &[u8], info: &[&[u8]], okm: &mut [u8]) -> Result<(), Error> {
            let hk = Hkdf::<Sha256>::from_prk(prk).map_err(|_| Error::Crypto)?;
            hk.expand_multi_info(info, okm).map_err(|_| Error::Crypto)
        }

        fn hmac_sha256(&self, key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
            use hmac::Mac;
            // HMAC takes keys of any length, so `new_from_slice` cannot fail; the fallback is unreachable.
            let Ok(mut mac) = <hmac::Hmac<Sha256> as Mac>::new_from_slice(key) else {
                return [0; 32];
            };
            for p in parts {
                mac.update(p);
            }
            mac.finalize().into_bytes().into()
        }

        fn aead_key(&self, suite: Suite, key: &Secret) -> Result<AeadKey, Error> {
            match suite {
                Suite::AES256GCM => Ok(AeadKey::Aes256Gcm(Aes256Gcm::new(key.expose().into()))),
                Suite::CHACHA20POLY1305 => Ok(AeadKey::ChaCha20Poly1305(ChaCha20Poly1305::new(
                    key.expose().into(),
                ))),
                other => Err(Error::UnsupportedSuite(other.code())),
            }
        }

        fn aead_seal(
            &self,
            key: &AeadKey,
            nonce: &[u8; NONCE_LEN],
            aad: &[u8],
            buf: &mut [u8],
        ) -> Result<[u8; TAG_LEN], Error> {
            let tag = match key {
                AeadKey::Aes256Gcm(k) => k.encrypt_in_place_detached(nonce.into(), aad, buf),
                AeadKey::ChaCha20Poly1305(k) => k.encrypt_in_place_detached(nonce.into(), aad, buf),
            }
            .map_err(|_| Error::Crypto)?;
            Ok(tag.into())
        }

        fn aead_open(
            &self,
            key: &AeadKey,
            nonce: &[u8; NONCE_LEN],
            aad: &[u8],
            buf: &mut [u8],
            tag: &[u8; TAG_LEN],
        ) -> Result<(), Error> {
            // Both ciphers check the tag before they decrypt, so on failure `buf` still holds ciphertext.
            match key {
                AeadKey::Aes256Gcm(k) => {
                    k.decrypt_in_place_detached(nonce.into(), aad, buf, tag.into())
                }
                AeadKey::ChaCha20Poly1305(k) => {
                    k.decrypt_in_place_detached(nonce.into(), aad, buf, tag.into())
                }
            }
            .map_err(|_| Error::Authentication)
        }

        fn ed25519_public(&self, seed: &Secret) -> [u8; 32] {
            ed25519_dalek::SigningKey::from_bytes(seed.expose())
                .verifying_key()
                .to_bytes()
        }

        fn ed25519_sign(&self, seed: &Secret, msg: &[u8]) -> [u8; 64] {
            use ed25519_dalek::Signer;
            ed25519_dalek::SigningKey::from_bytes(seed.expose())
                .sign(msg)
                .to_bytes()
        }

        fn ed25519_verify(
            &self,
            public: &[u8; 32],
            msg: &[u8],
            sig: &[u8; 64],
        ) -> Result<(), Error> {
            let key = ed25519_dalek::VerifyingKey::from_bytes(public)
                .map_err(|_| Error::Authentication)?;
            key.verify_strict(msg, &ed25519_dalek::Signature::from_bytes(sig))
                .map_err(|_| Error::Authentication)
        }

        fn x25519(&self, secret: &Secret, public: &[u8; 32]) -> Result<Secret, Error> {
            let ours = x25519_dalek::StaticSecret::from(*secret.expose());
            let shared = ours.diffie_hellman(&x25519_dalek::PublicKey::from(*public));
            if !shared.was_contributory() {
                return Err(Error::InvalidValue("small-order X25519 public key"));
            }
            Ok(Secret::from_bytes(*shared.as_bytes()))
        }

        fn x25519_public(&self, secret: &Secret) -> [u8; 32] {
            x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(*secret.expose()))
                .to_bytes()
        }
    }
}

#[cfg(feature = "rustcrypto")]
pub use rustcrypto::{AeadKey as RustCryptoAeadKey, RustCrypto};
