//! Reading domains that are not public: a party signs each read with its key (docs/registry.md §5.1), and a
//! registry serves it the domains its policy lets that party read. A party's key lives in a key file
//! (`custos registry party`), which the CLI and sync (`reader_key` of a `[[pull]]`) both read.
//!
//! `Authorization: Custos-Registry <fingerprint, 40 hex>:<time, Unix s>:<signature, base64>`, the Ed25519 signature
//! over `custos-registry-read-v1\n<path and query>\n<time>`, within 300 s of the registry's clock.

use std::path::Path;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::cert::{Ed25519Key, Fpr};

/// The `format` of a party key file.
pub const PARTY_FORMAT: &str = "custos-registry-party-v1";

/// How far a signed read's time may be from the registry's clock, seconds.
pub const MAX_READ_SKEW: u64 = 300;

/// The authorization scheme of a signed read.
pub const SCHEME: &str = "Custos-Registry";

/// A party key file: `{"format", "uid", "created", "seed"}` (JSON, mode 0600).
#[derive(Serialize, Deserialize)]
struct PartyFile {
    format: String,
    uid: String,
    created: u32,
    seed: String,
}

/// What is wrong with a key file or a signed read.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ReaderError(pub String);

/// Reads a party key file: the key and its User ID.
pub fn read_party(path: &Path) -> Result<(Ed25519Key, String), ReaderError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ReaderError(format!("cannot read {}: {e}", path.display())))?;
    let f: PartyFile = serde_json::from_str(&text).map_err(|_| {
        ReaderError(format!(
            "{} is not a registry party key file",
            path.display()
        ))
    })?;
    if f.format != PARTY_FORMAT {
        return Err(ReaderError(format!(
            "{}: format `{}`, expected {PARTY_FORMAT}",
            path.display(),
            f.format
        )));
    }
    let mut seed: [u8; 32] = hex::decode(&f.seed)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| ReaderError(format!("{}: the seed is not 64 hex digits", path.display())))?;
    let key = Ed25519Key::from_seed(&seed, f.created).map_err(|e| ReaderError(e.to_string()));
    zeroize::Zeroize::zeroize(&mut seed);
    Ok((key?, f.uid))
}

/// The text of a party key file for `key` with User ID `uid`.
pub fn party_file(key: &Ed25519Key, uid: &str) -> Result<String, ReaderError> {
    let created = pgp::types::KeyDetails::created_at(key).as_secs();
    let f = PartyFile {
        format: PARTY_FORMAT.into(),
        uid: uid.into(),
        created,
        seed: hex::encode(*key.seed()),
    };
    serde_json::to_string_pretty(&f).map_err(|e| ReaderError(e.to_string()))
}

fn signed_bytes(path_and_query: &str, time: u64) -> Vec<u8> {
    format!("custos-registry-read-v1\n{path_and_query}\n{time}").into_bytes()
}

/// The `Authorization` value that signs a read of `path_and_query` at `time` with `key`.
pub fn authorization(key: &Ed25519Key, path_and_query: &str, time: u64) -> String {
    let sig = key.sign_raw(&signed_bytes(path_and_query, time));
    format!(
        "{SCHEME} {}:{time}:{}",
        hex::encode_upper(key.fingerprint()),
        base64::engine::general_purpose::STANDARD.encode(sig)
    )
}

/// A signed read as received: who claims to sign it, when, and the signature.
pub struct SignedRead {
    /// The party's certificate fingerprint.
    pub reader: Fpr,
    time: u64,
    signature: [u8; 64],
}

impl SignedRead {
    /// Reads an `Authorization` value; `None` if it is not of this scheme.
    pub fn parse(value: &str) -> Option<Result<Self, ReaderError>> {
        let rest = value.strip_prefix(SCHEME)?.strip_prefix(' ')?;
        let bad = |why: &str| Some(Err(ReaderError(format!("signed read: {why}"))));
        let mut parts = rest.splitn(3, ':');
        let (Some(f), Some(t), Some(s)) = (parts.next(), parts.next(), parts.next()) else {
            return bad("expected <fingerprint>:<time>:<signature>");
        };
        let Some(reader) = hex::decode(f)
            .ok()
            .and_then(|b| <[u8; 20]>::try_from(b).ok())
        else {
            return bad("the fingerprint is not 40 hex digits");
        };
        let Ok(time) = t.parse() else {
            return bad("the time is not a number");
        };
        let Some(signature) = base64::engine::general_purpose::STANDARD
            .decode(s)
            .ok()
            .and_then(|b| <[u8; 64]>::try_from(b).ok())
        else {
            return bad("the signature is not 64 bytes of base64");
        };
        Some(Ok(Self {
            reader,
            time,
            signature,
        }))
    }

    /// Checks the read against the party's Ed25519 key, the request's path and query, and the clock.
    pub fn verify(
        &self,
        key: &[u8; 32],
        path_and_query: &str,
        now: u64,
    ) -> Result<(), ReaderError> {
        if self.time.abs_diff(now) > MAX_READ_SKEW {
            return Err(ReaderError(
                "signed read: the time is more than 300 s off".into(),
            ));
        }
        let vk = ed25519_dalek::VerifyingKey::from_bytes(key)
            .map_err(|_| ReaderError("signed read: the party's key is not a valid point".into()))?;
        vk.verify_strict(
            &signed_bytes(path_and_query, self.time),
            &ed25519_dalek::Signature::from_bytes(&self.signature),
        )
        .map_err(|_| ReaderError("signed read: the signature does not verify".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_read_verifies_only_for_its_path_key_and_time() {
        let key = Ed25519Key::from_seed(&[1; 32], 1_780_000_000).unwrap();
        let auth = authorization(
            &key,
            "/registry/v1/sync?from=0&to=3&domains=x",
            1_780_000_100,
        );
        let read = SignedRead::parse(&auth).unwrap().unwrap();
        assert_eq!(read.reader, key.fingerprint());
        let pk = key.ed25519_public();
        read.verify(
            &pk,
            "/registry/v1/sync?from=0&to=3&domains=x",
            1_780_000_200,
        )
        .unwrap();
        assert!(
            read.verify(
                &pk,
                "/registry/v1/sync?from=0&to=3&domains=y",
                1_780_000_200
            )
            .is_err()
        );
        assert!(
            read.verify(
                &pk,
                "/registry/v1/sync?from=0&to=3&domains=x",
                1_780_001_000
            )
            .is_err()
        );
        let other = Ed25519Key::from_seed(&[2; 32], 1_780_000_000)
            .unwrap()
            .ed25519_public();
        assert!(
            read.verify(
                &other,
                "/registry/v1/sync?from=0&to=3&domains=x",
                1_780_000_200
            )
            .is_err()
        );
        assert!(SignedRead::parse("Bearer x").is_none());
        assert!(
            SignedRead::parse("Custos-Registry zz:1:AA")
                .unwrap()
                .is_err()
        );
    }
}
