//! The vault file: a small versioned JSON document, its associated data, sealing and opening.
//!
//! Layout and reasons are in docs/vault.md. The JSON is only a carrier: what is authenticated is the header as
//! parsed ([`Header::aad`]), so a change to any value is caught while re-indenting the file is harmless.

use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes256Gcm, KeyInit};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::VaultError;
use crate::kdf::{KdfParams, SALT_LEN};

/// The value of the `format` field this version writes and reads.
pub(crate) const FORMAT: &str = "custos-vault/1";
/// The one AEAD of format 1.
const AEAD: &str = "aes-256-gcm";
/// Argon2 version 0x13 (1.3), the only one accepted.
const ARGON2_VERSION: u32 = 0x13;
/// AES-GCM nonce length, bytes.
pub(crate) const NONCE_LEN: usize = 12;
/// The sealed secrets: master secret ‖ Ed25519 seed.
pub(crate) const PLAIN_LEN: usize = 64;
const TAG_LEN: usize = 16;
const CIPHERTEXT_LEN: usize = PLAIN_LEN + TAG_LEN;
/// A vault file is a few hundred bytes; anything much larger is not one, and is not read into memory.
pub(crate) const MAX_FILE_LEN: u64 = 64 * 1024;

/// The two secrets in the clear: master secret ‖ Ed25519 seed. Zeroized on drop.
pub(crate) type Plain = Zeroizing<[u8; PLAIN_LEN]>;

/// How the file's key is made, as the header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kdf {
    /// Argon2id over a passphrase.
    Argon2id {
        params: KdfParams,
        salt: [u8; SALT_LEN],
    },
    /// HKDF over a key file.
    KeyFile { salt: [u8; SALT_LEN] },
}

impl Kdf {
    /// The kind of unlock this KDF takes, in the words of [`VaultError::UnlockKind`].
    pub(crate) fn unlock_kind(&self) -> &'static str {
        match self {
            Self::Argon2id { .. } => "passphrase",
            Self::KeyFile { .. } => "key file",
        }
    }
}

/// Everything in the file except the ciphertext; all of it is authenticated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) kdf: Kdf,
    pub(crate) nonce: [u8; NONCE_LEN],
}

impl Header {
    /// The AEAD associated data: a fixed binary encoding of every header value, so that no field can be
    /// changed unnoticed, including ones (like the AEAD name) that do not feed the key.
    ///
    /// `"custos-vault/1" 0 ‖ kdf ‖ "aes-256-gcm" 0 ‖ nonce`, where kdf is
    /// `"argon2id" 0 ‖ version ‖ memory_kib ‖ iterations ‖ parallelism ‖ salt` (u32 big-endian) or
    /// `"keyfile" 0 ‖ salt`.
    pub(crate) fn aad(&self) -> Vec<u8> {
        let mut aad = Vec::with_capacity(96);
        aad.extend_from_slice(FORMAT.as_bytes());
        aad.push(0);
        match &self.kdf {
            Kdf::Argon2id { params, salt } => {
                aad.extend_from_slice(b"argon2id\0");
                for v in [
                    ARGON2_VERSION,
                    params.memory_kib(),
                    params.iterations(),
                    params.parallelism(),
                ] {
                    aad.extend_from_slice(&v.to_be_bytes());
                }
                aad.extend_from_slice(salt);
            }
            Kdf::KeyFile { salt } => {
                aad.extend_from_slice(b"keyfile\0");
                aad.extend_from_slice(salt);
            }
        }
        aad.extend_from_slice(AEAD.as_bytes());
        aad.push(0);
        aad.extend_from_slice(&self.nonce);
        aad
    }
}

/// A parsed vault file: header and ciphertext (with its tag).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Sealed {
    pub(crate) header: Header,
    ciphertext: [u8; CIPHERTEXT_LEN],
}

impl Sealed {
    /// Encrypts `plain` under `kek`, binding `header`.
    pub(crate) fn seal(kek: &[u8; 32], header: Header, plain: &Plain) -> Result<Self, VaultError> {
        let mut buf = Zeroizing::new([0u8; PLAIN_LEN]);
        buf.copy_from_slice(&plain[..]);
        let tag = Aes256Gcm::new(kek.into())
            .encrypt_in_place_detached((&header.nonce).into(), &header.aad(), &mut buf[..])
            // Only inputs over 64 GiB fail; this one is 64 bytes.
            .map_err(|_| VaultError::Crypto)?;
        let mut ciphertext = [0u8; CIPHERTEXT_LEN];
        ciphertext[..PLAIN_LEN].copy_from_slice(&buf[..]);
        ciphertext[PLAIN_LEN..].copy_from_slice(&tag);
        Ok(Self { header, ciphertext })
    }

    /// Verifies and decrypts. On failure nothing is returned and the buffer that held the ciphertext is wiped.
    pub(crate) fn open(&self, kek: &[u8; 32]) -> Result<Plain, VaultError> {
        let mut plain = Zeroizing::new([0u8; PLAIN_LEN]);
        plain.copy_from_slice(&self.ciphertext[..PLAIN_LEN]);
        let tag = &self.ciphertext[PLAIN_LEN..];
        Aes256Gcm::new(kek.into())
            .decrypt_in_place_detached(
                (&self.header.nonce).into(),
                &self.header.aad(),
                &mut plain[..],
                tag.into(),
            )
            .map_err(|_| VaultError::WrongUnlock)?;
        Ok(plain)
    }

    /// Parses a vault file strictly: known format, no unknown or duplicate fields, exact hex lengths, KDF
    /// parameters in range. Says what is wrong; never panics.
    pub(crate) fn parse(bytes: &[u8]) -> Result<Self, VaultError> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(VaultError::Malformed("the file is empty".into()));
        }
        // Read the format first, so that a future version gets "unsupported format" rather than a complaint
        // about fields this version has never heard of.
        let probe: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| VaultError::Malformed(e.to_string()))?;
        let serde_json::Value::Object(fields) = probe else {
            return Err(VaultError::Malformed("expected a JSON object".into()));
        };
        match fields.get("format") {
            Some(serde_json::Value::String(f)) if f == FORMAT => {}
            Some(serde_json::Value::String(f)) => {
                return Err(VaultError::UnsupportedFormat(f.clone()));
            }
            Some(_) => {
                return Err(VaultError::Malformed("`format` must be a string".into()));
            }
            None => return Err(VaultError::Malformed("missing field `format`".into())),
        }
        // Parsed again into the typed document, which (unlike the map above) refuses duplicate fields.
        let doc: Doc =
            serde_json::from_slice(bytes).map_err(|e| VaultError::Malformed(e.to_string()))?;
        if doc.aead != AEAD {
            return Err(VaultError::Malformed(format!(
                "unknown aead {:?} (expected {AEAD:?})",
                doc.aead
            )));
        }
        let kdf = match doc.kdf {
            DocKdf::Argon2id {
                version,
                memory_kib,
                iterations,
                parallelism,
                salt,
            } => {
                if version != u64::from(ARGON2_VERSION) {
                    return Err(VaultError::KdfParams(format!(
                        "Argon2 version {version} (only 19, i.e. 0x13, is supported)"
                    )));
                }
                Kdf::Argon2id {
                    params: KdfParams::check(memory_kib, iterations, parallelism)?,
                    salt: unhex("salt", &salt)?,
                }
            }
            DocKdf::KeyFile { salt } => Kdf::KeyFile {
                salt: unhex("salt", &salt)?,
            },
        };
        Ok(Self {
            header: Header {
                kdf,
                nonce: unhex("nonce", &doc.nonce)?,
            },
            ciphertext: unhex("ciphertext", &doc.ciphertext)?,
        })
    }

    /// The file's bytes: pretty JSON with a final newline.
    pub(crate) fn to_json(&self) -> Result<Vec<u8>, VaultError> {
        let kdf = match &self.header.kdf {
            Kdf::Argon2id { params, salt } => DocKdf::Argon2id {
                version: u64::from(ARGON2_VERSION),
                memory_kib: u64::from(params.memory_kib()),
                iterations: u64::from(params.iterations()),
                parallelism: u64::from(params.parallelism()),
                salt: hex::encode(salt),
            },
            Kdf::KeyFile { salt } => DocKdf::KeyFile {
                salt: hex::encode(salt),
            },
        };
        let doc = Doc {
            format: FORMAT.into(),
            kdf,
            aead: AEAD.into(),
            nonce: hex::encode(self.header.nonce),
            ciphertext: hex::encode(self.ciphertext),
        };
        let mut out =
            serde_json::to_vec_pretty(&doc).map_err(|e| VaultError::Malformed(e.to_string()))?;
        out.push(b'\n');
        Ok(out)
    }
}

/// Decodes a hex field that must be exactly `N` bytes.
fn unhex<const N: usize>(field: &str, s: &str) -> Result<[u8; N], VaultError> {
    let mut out = [0u8; N];
    hex::decode_to_slice(s, &mut out)
        .map_err(|_| VaultError::Malformed(format!("`{field}` must be {N} bytes in hex")))?;
    Ok(out)
}

/// The JSON document. Unknown fields are refused: they would be unauthenticated.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Doc {
    format: String,
    kdf: DocKdf,
    aead: String,
    nonce: String,
    ciphertext: String,
}

/// The `kdf` object, tagged by its `algorithm`. Numbers are read as u64 so that an oversized value gets the
/// range error rather than a type error.
#[derive(Serialize, Deserialize)]
#[serde(tag = "algorithm", deny_unknown_fields)]
enum DocKdf {
    #[serde(rename = "argon2id")]
    Argon2id {
        version: u64,
        memory_kib: u64,
        iterations: u64,
        parallelism: u64,
        salt: String,
    },
    #[serde(rename = "keyfile")]
    KeyFile { salt: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header {
            kdf: Kdf::Argon2id {
                params: KdfParams::OWASP,
                salt: [1; SALT_LEN],
            },
            nonce: [2; NONCE_LEN],
        }
    }

    /// The header is authenticated on its own: with the right key, a changed header value that does not feed
    /// the key (here the KDF parameters and the kind of KDF, since the key is given directly) is still refused.
    #[test]
    fn header_is_bound_as_associated_data() {
        let kek = [9u8; 32];
        let plain = Zeroizing::new([7u8; PLAIN_LEN]);
        let sealed = Sealed::seal(&kek, header(), &plain).unwrap();
        assert_eq!(*sealed.open(&kek).unwrap(), *plain);

        let changed = [
            Kdf::Argon2id {
                params: KdfParams::new(19 * 1024, 3, 1).unwrap(),
                salt: [1; SALT_LEN],
            },
            Kdf::Argon2id {
                params: KdfParams::new(20 * 1024, 2, 1).unwrap(),
                salt: [1; SALT_LEN],
            },
            Kdf::Argon2id {
                params: KdfParams::new(19 * 1024, 2, 2).unwrap(),
                salt: [1; SALT_LEN],
            },
            Kdf::Argon2id {
                params: KdfParams::OWASP,
                salt: [3; SALT_LEN],
            },
            Kdf::KeyFile {
                salt: [1; SALT_LEN],
            },
        ];
        for kdf in changed {
            let mut other = sealed.clone();
            other.header.kdf = kdf;
            assert!(
                matches!(other.open(&kek), Err(VaultError::WrongUnlock)),
                "{kdf:?}"
            );
        }
    }

    #[test]
    fn json_round_trip() {
        let sealed = Sealed::seal(&[9; 32], header(), &Zeroizing::new([7; PLAIN_LEN])).unwrap();
        let json = sealed.to_json().unwrap();
        assert_eq!(Sealed::parse(&json).unwrap(), sealed);
    }

    #[test]
    fn duplicate_fields_are_refused() {
        let sealed = Sealed::seal(&[9; 32], header(), &Zeroizing::new([7; PLAIN_LEN])).unwrap();
        let json = String::from_utf8(sealed.to_json().unwrap()).unwrap();
        let doubled = json.replacen("\"aead\"", "\"aead\": \"aes-256-gcm\",\n  \"aead\"", 1);
        assert_ne!(doubled, json);
        assert!(matches!(
            Sealed::parse(doubled.as_bytes()),
            Err(VaultError::Malformed(_))
        ));
    }
}
