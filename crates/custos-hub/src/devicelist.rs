//! The authorized-device list: COSE_Sign1 (RFC 9052) with EdDSA over a CBOR payload
//! `[version, issued_at, [device id, ...]]`, so any COSE library can verify it with the hub's signing key.

use coset::cbor::Value;
use coset::{CborSerializable, CoseSign1, CoseSign1Builder, HeaderBuilder, iana};
use custos_proto::{Crypto, DeviceId, RustCrypto};

use crate::{ApiError, HubKeys};

/// Content type of the payload, in the protected header.
const CONTENT_TYPE: &str = "application/custos-device-list+cbor";

/// A version of the list of devices the hub accepts messages from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceList {
    /// Increases by one with every change.
    pub version: i64,
    /// When it was signed (Unix seconds).
    pub issued_at: i64,
    /// The authorized devices.
    pub devices: Vec<DeviceId>,
}

impl DeviceList {
    /// Signs the list as COSE_Sign1 with the hub's Ed25519 key.
    pub fn sign(&self, keys: &HubKeys) -> Result<Vec<u8>, ApiError> {
        let payload = Value::Array(vec![
            Value::Integer(self.version.into()),
            Value::Integer(self.issued_at.into()),
            Value::Array(
                self.devices
                    .iter()
                    .map(|d| Value::Bytes(d.0.to_vec()))
                    .collect(),
            ),
        ]);
        let mut bytes = Vec::new();
        coset::cbor::into_writer(&payload, &mut bytes)
            .map_err(|_| ApiError::Internal("encoding the device list".into()))?;
        let protected = HeaderBuilder::new()
            .algorithm(iana::Algorithm::EdDSA)
            .content_type(CONTENT_TYPE.into())
            .build();
        let sign1 = CoseSign1Builder::new()
            .protected(protected)
            .payload(bytes)
            .create_signature(b"", |tbs| keys.sign(tbs).to_vec())
            .build();
        sign1
            .to_vec()
            .map_err(|_| ApiError::Internal("encoding COSE_Sign1".into()))
    }
}

/// Why a device list was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ListError {
    /// Not COSE_Sign1, or a payload that is not the list.
    #[error("malformed device list: {0}")]
    Malformed(&'static str),
    /// The signature does not verify with the pinned key.
    #[error("device list signature does not verify")]
    BadSignature,
}

/// Verifies a signed device list with the hub's signing key and decodes it.
pub fn verify_device_list(
    bytes: &[u8],
    signing_public: &[u8; 32],
) -> Result<DeviceList, ListError> {
    let sign1 = CoseSign1::from_slice(bytes).map_err(|_| ListError::Malformed("not COSE_Sign1"))?;
    if sign1.protected.header.alg
        != Some(coset::RegisteredLabelWithPrivate::Assigned(
            iana::Algorithm::EdDSA,
        ))
    {
        return Err(ListError::Malformed("algorithm is not EdDSA"));
    }
    sign1
        .verify_signature(b"", |sig, tbs| {
            let sig: [u8; 64] = sig.try_into().map_err(|_| ())?;
            RustCrypto
                .ed25519_verify(signing_public, tbs, &sig)
                .map_err(|_| ())
        })
        .map_err(|()| ListError::BadSignature)?;
    let payload = sign1.payload.ok_or(ListError::Malformed("no payload"))?;
    let value: Value = coset::cbor::from_reader(payload.as_slice())
        .map_err(|_| ListError::Malformed("payload is not CBOR"))?;
    let int = |v: &Value| {
        v.as_integer()
            .and_then(|i| i64::try_from(i).ok())
            .ok_or(ListError::Malformed("not an integer"))
    };
    let Value::Array(items) = value else {
        return Err(ListError::Malformed("payload is not an array"));
    };
    let [version, issued_at, Value::Array(ids)] = items.as_slice() else {
        return Err(ListError::Malformed(
            "payload is not [version, issued_at, devices]",
        ));
    };
    let devices = ids
        .iter()
        .map(|v| {
            v.as_bytes()
                .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
                .map(DeviceId)
        })
        .collect::<Option<Vec<_>>>()
        .ok_or(ListError::Malformed("a device id is not 8 bytes"))?;
    Ok(DeviceList {
        version: int(version)?,
        issued_at: int(issued_at)?,
        devices,
    })
}
