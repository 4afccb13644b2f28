//! Signed statements: statuses ("in use", "stolen", "destroyed", "deprecated") and code identities (a signed,
//! time-stamped hash of a firmware image or update). Each is a COSE_Sign1 with EdDSA by a party's Ed25519 key, the
//! same key as its OpenPGP certificate's primary key, named in the payload by that certificate's fingerprint —
//! the shape of a SCITT signed statement (RFC 9943), with the log's inclusion proof as its receipt.
//!
//! Payloads (CBOR arrays, docs/registry.md §5):
//! - status: `[1, signer fpr (20 B), subject (20 B certificate fingerprint or 32 B code digest), issued_at, status,
//!   domain, note]`
//! - code identity: `[2, signer fpr, SHA-256 of the image (32 B), issued_at, name, version, domain]`

use coset::cbor::Value;
use custos_proto::{RustCrypto, cose};

use crate::cert::{Ed25519Key, Fpr};

/// Content type of a registry statement.
pub const STATEMENT: &str = "application/custos-statement+cbor";

/// The longest statement the registry takes, bytes.
pub const MAX_STATEMENT: usize = 4096;

/// The longest text field (domain, note, name, version), bytes.
pub const MAX_TEXT: usize = 256;

/// A status a party gives a device or a piece of code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// Deployed and in service.
    InUse = 1,
    /// Stolen: its key must no longer be trusted (the hub revokes it).
    Stolen = 2,
    /// Destroyed: nothing should come from it any more.
    Destroyed = 3,
    /// Code that must no longer be installed.
    Deprecated = 4,
}

impl Status {
    /// The status of a wire code.
    pub fn from_code(code: i64) -> Option<Self> {
        Some(match code {
            1 => Self::InUse,
            2 => Self::Stolen,
            3 => Self::Destroyed,
            4 => Self::Deprecated,
            _ => return None,
        })
    }

    /// Its name, as the CLI and the JSON API write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InUse => "in-use",
            Self::Stolen => "stolen",
            Self::Destroyed => "destroyed",
            Self::Deprecated => "deprecated",
        }
    }

    /// Reads a name.
    pub fn parse(text: &str) -> Option<Self> {
        [Self::InUse, Self::Stolen, Self::Destroyed, Self::Deprecated]
            .into_iter()
            .find(|s| s.as_str() == text)
    }
}

/// What a statement says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Statement {
    /// A status of a device certificate or of a code identity.
    Status {
        /// The signing party's certificate fingerprint.
        signer: Fpr,
        /// A certificate fingerprint (20 B) or a code digest (32 B).
        subject: Vec<u8>,
        /// When the party made it, Unix seconds.
        issued_at: u64,
        /// The status.
        status: Status,
        /// The domain it belongs to.
        domain: String,
        /// Free text (why).
        note: String,
    },
    /// A code identity: the developer's signed hash of an image.
    Code {
        /// The developer's certificate fingerprint.
        signer: Fpr,
        /// SHA-256 of the image.
        digest: [u8; 32],
        /// When the developer made it, Unix seconds.
        issued_at: u64,
        /// The software's name.
        name: String,
        /// Its version.
        version: String,
        /// The domain it belongs to.
        domain: String,
    },
}

/// What can be wrong with a statement.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StatementError {
    /// Not a statement.
    #[error("malformed statement: {0}")]
    Malformed(&'static str),
    /// The signature does not verify.
    #[error("the statement's signature does not verify")]
    Signature,
}

fn text(v: &Value, what: &'static str) -> Result<String, StatementError> {
    match v {
        Value::Text(t) if t.len() <= MAX_TEXT => Ok(t.clone()),
        _ => Err(StatementError::Malformed(what)),
    }
}

fn uint(v: &Value, what: &'static str) -> Result<u64, StatementError> {
    v.as_integer()
        .and_then(|i| u64::try_from(i).ok())
        .ok_or(StatementError::Malformed(what))
}

impl Statement {
    /// The signer's fingerprint.
    pub fn signer(&self) -> Fpr {
        match self {
            Self::Status { signer, .. } | Self::Code { signer, .. } => *signer,
        }
    }

    /// What it is about: a certificate fingerprint or a code digest.
    pub fn subject(&self) -> &[u8] {
        match self {
            Self::Status { subject, .. } => subject,
            Self::Code { digest, .. } => digest,
        }
    }

    /// When it was made.
    pub fn issued_at(&self) -> u64 {
        match self {
            Self::Status { issued_at, .. } | Self::Code { issued_at, .. } => *issued_at,
        }
    }

    /// Its domain.
    pub fn domain(&self) -> &str {
        match self {
            Self::Status { domain, .. } | Self::Code { domain, .. } => domain,
        }
    }

    /// 1 for a status, 2 for a code identity.
    pub fn kind(&self) -> u8 {
        match self {
            Self::Status { .. } => 1,
            Self::Code { .. } => 2,
        }
    }

    fn payload(&self) -> Result<Vec<u8>, StatementError> {
        let long = |t: &str| t.len() > MAX_TEXT;
        let value = match self {
            Self::Status {
                signer,
                subject,
                issued_at,
                status,
                domain,
                note,
            } => {
                if !(subject.len() == 20 || subject.len() == 32) || long(domain) || long(note) {
                    return Err(StatementError::Malformed("subject or text out of bounds"));
                }
                Value::Array(vec![
                    Value::from(1),
                    Value::Bytes(signer.to_vec()),
                    Value::Bytes(subject.clone()),
                    Value::from(*issued_at),
                    Value::from(*status as u8),
                    Value::Text(domain.clone()),
                    Value::Text(note.clone()),
                ])
            }
            Self::Code {
                signer,
                digest,
                issued_at,
                name,
                version,
                domain,
            } => {
                if long(name) || long(version) || long(domain) {
                    return Err(StatementError::Malformed("text out of bounds"));
                }
                Value::Array(vec![
                    Value::from(2),
                    Value::Bytes(signer.to_vec()),
                    Value::Bytes(digest.to_vec()),
                    Value::from(*issued_at),
                    Value::Text(name.clone()),
                    Value::Text(version.clone()),
                    Value::Text(domain.clone()),
                ])
            }
        };
        cose::to_cbor(&value).map_err(|_| StatementError::Malformed("does not encode"))
    }

    /// Signs the statement with `key`, which must be the signer's.
    pub fn sign(&self, key: &Ed25519Key) -> Result<Vec<u8>, StatementError> {
        if key.fingerprint() != self.signer() {
            return Err(StatementError::Malformed(
                "signed by a key other than its signer",
            ));
        }
        cose::sign1(STATEMENT, self.payload()?, |tbs| key.sign_raw(tbs))
            .map_err(|_| StatementError::Malformed("does not encode"))
    }

    /// Reads a statement without checking its signature: to learn whose key to check it with.
    pub fn read_unverified(bytes: &[u8]) -> Result<Self, StatementError> {
        if bytes.len() > MAX_STATEMENT {
            return Err(StatementError::Malformed("statement above 4 KiB"));
        }
        let payload = cose::unverified_payload(bytes)
            .map_err(|_| StatementError::Malformed("not a COSE_Sign1"))?;
        Self::decode(&payload)
    }

    /// Checks the statement's signature with the signer's Ed25519 key and returns what it says.
    pub fn verify(bytes: &[u8], signer_key: &[u8; 32]) -> Result<Self, StatementError> {
        if bytes.len() > MAX_STATEMENT {
            return Err(StatementError::Malformed("statement above 4 KiB"));
        }
        let payload =
            cose::verify1(&RustCrypto, bytes, STATEMENT, signer_key).map_err(|e| match e {
                custos_proto::Error::Signature => StatementError::Signature,
                _ => StatementError::Malformed("not a registry statement"),
            })?;
        Self::decode(&payload)
    }

    fn decode(payload: &[u8]) -> Result<Self, StatementError> {
        let items = cose::array_from_cbor(payload)
            .map_err(|_| StatementError::Malformed("payload is not a CBOR array"))?;
        let [kind, signer, subject, issued_at, a, b, c] = items.as_slice() else {
            return Err(StatementError::Malformed("payload has the wrong length"));
        };
        let signer = cose::bytes_n::<20>(signer, "signer")
            .map_err(|_| StatementError::Malformed("signer is not 20 bytes"))?;
        let issued_at = uint(issued_at, "issued_at")?;
        match uint(kind, "kind")? {
            1 => {
                let subject = subject
                    .as_bytes()
                    .filter(|s| s.len() == 20 || s.len() == 32)
                    .ok_or(StatementError::Malformed("subject is not 20 or 32 bytes"))?
                    .clone();
                let status = i64::try_from(uint(a, "status")?)
                    .ok()
                    .and_then(Status::from_code)
                    .ok_or(StatementError::Malformed("unknown status"))?;
                Ok(Self::Status {
                    signer,
                    subject,
                    issued_at,
                    status,
                    domain: text(b, "domain")?,
                    note: text(c, "note")?,
                })
            }
            2 => Ok(Self::Code {
                signer,
                digest: cose::bytes_n::<32>(subject, "digest")
                    .map_err(|_| StatementError::Malformed("digest is not 32 bytes"))?,
                issued_at,
                name: text(a, "name")?,
                version: text(b, "version")?,
                domain: text(c, "domain")?,
            }),
            _ => Err(StatementError::Malformed("unknown statement kind")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_round_trips_and_a_changed_byte_fails() {
        let key = Ed25519Key::from_seed(&[3; 32], 1_780_000_000).unwrap();
        let s = Statement::Status {
            signer: key.fingerprint(),
            subject: vec![0xab; 20],
            issued_at: 1_780_000_100,
            status: Status::Stolen,
            domain: "acme".into(),
            note: "reported by the site".into(),
        };
        let bytes = s.sign(&key).unwrap();
        assert_eq!(Statement::verify(&bytes, &key.ed25519_public()).unwrap(), s);
        assert_eq!(Statement::read_unverified(&bytes).unwrap(), s);
        let other = Ed25519Key::from_seed(&[4; 32], 1_780_000_000).unwrap();
        assert!(matches!(
            Statement::verify(&bytes, &other.ed25519_public()),
            Err(StatementError::Signature)
        ));
        for i in 0..bytes.len() {
            let mut forged = bytes.clone();
            forged[i] ^= 1;
            assert!(
                Statement::verify(&forged, &key.ed25519_public()).is_err(),
                "byte {i}"
            );
        }
    }

    #[test]
    fn code_identity_round_trips() {
        let key = Ed25519Key::from_seed(&[5; 32], 1_780_000_000).unwrap();
        let s = Statement::Code {
            signer: key.fingerprint(),
            digest: [9; 32],
            issued_at: 1_780_000_200,
            name: "thermo-fw".into(),
            version: "1.4.2".into(),
            domain: "acme-dev".into(),
        };
        let bytes = s.sign(&key).unwrap();
        assert_eq!(Statement::verify(&bytes, &key.ed25519_public()).unwrap(), s);
        // Someone else's key cannot sign it in the developer's name.
        assert!(
            s.sign(&Ed25519Key::from_seed(&[6; 32], 0).unwrap())
                .is_err()
        );
    }
}
