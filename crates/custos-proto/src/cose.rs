//! Signed statements: COSE_Sign1 (RFC 9052) with EdDSA, so any COSE library can check what Custos signs.
//!
//! Every statement names its kind in the protected header's content type, and [`verify1`] checks it: a signature
//! made over one kind of statement (a device list, say) is never accepted as another (a grant). The signer is a
//! closure, so a key kept behind a handle (a vault, a TPM) signs without handing its bytes to this crate.
//!
//! The payloads are CBOR arrays with a fixed field order (see `docs/wire.md`).

use alloc::vec::Vec;

use coset::cbor::Value;
use coset::{CborSerializable, CoseSign1, CoseSign1Builder, HeaderBuilder, iana};

use crate::{Crypto, DeviceId, Error};

/// Content type of a signed authorized-device list.
pub const DEVICE_LIST: &str = "application/custos-device-list+cbor";

/// Signs `payload` as COSE_Sign1 with EdDSA, labelled with `content_type`; `sign` makes the Ed25519 signature
/// over the bytes it is given.
pub fn sign1(
    content_type: &str,
    payload: Vec<u8>,
    sign: impl FnOnce(&[u8]) -> [u8; 64],
) -> Result<Vec<u8>, Error> {
    let protected = HeaderBuilder::new()
        .algorithm(iana::Algorithm::EdDSA)
        .content_type(content_type.into())
        .build();
    CoseSign1Builder::new()
        .protected(protected)
        .payload(payload)
        .create_signature(b"", |tbs| sign(tbs).to_vec())
        .build()
        .to_vec()
        .map_err(|_| Error::InvalidValue("COSE_Sign1 does not encode"))
}

/// The CBOR tag of a COSE_Sign1 (RFC 9052 §2), as its first byte: major type 6, value 18.
const SIGN1_TAG: u8 = 0xd2;

/// Reads a COSE_Sign1 as Custos sends it: untagged. A tagged one gets an error that says so, since many COSE
/// libraries tag by default.
pub(crate) fn parse_sign1(bytes: &[u8]) -> Result<CoseSign1, Error> {
    if bytes.first() == Some(&SIGN1_TAG) {
        return Err(Error::InvalidValue(
            "a tagged COSE_Sign1 (tag 18): send it untagged",
        ));
    }
    CoseSign1::from_slice(bytes).map_err(|_| Error::InvalidValue("not a COSE_Sign1"))
}

/// The payload of a COSE_Sign1 statement, without checking anything: for reading the signer's key id out of a
/// statement that is then checked with [`verify1`].
pub fn unverified_payload(bytes: &[u8]) -> Result<Vec<u8>, Error> {
    let sign1 = parse_sign1(bytes)?;
    sign1
        .payload
        .ok_or(Error::InvalidValue("COSE_Sign1 without a payload"))
}

/// Checks a COSE_Sign1 statement of kind `content_type` against the Ed25519 key `public`, and returns its payload.
pub fn verify1<C: Crypto>(
    c: &C,
    bytes: &[u8],
    content_type: &str,
    public: &[u8; 32],
) -> Result<Vec<u8>, Error> {
    let sign1 = parse_sign1(bytes)?;
    // One encoding per statement: ids are hashes of the signed bytes, so a relay that re-encodes a statement
    // (longer length heads, say) must not get a second id for it past the signature.
    let canonical = sign1
        .clone()
        .to_vec()
        .map_err(|_| Error::InvalidValue("not a COSE_Sign1"))?;
    if canonical != bytes {
        return Err(Error::InvalidValue(
            "COSE_Sign1 is not in its canonical encoding",
        ));
    }
    // The unprotected header is not signed: anything in it could be changed in transit, and with it the id.
    if !sign1.unprotected.is_empty() {
        return Err(Error::InvalidValue("the unprotected header must be empty"));
    }
    let header = &sign1.protected.header;
    if header.alg
        != Some(coset::RegisteredLabelWithPrivate::Assigned(
            iana::Algorithm::EdDSA,
        ))
    {
        return Err(Error::InvalidValue("COSE algorithm is not EdDSA"));
    }
    match &header.content_type {
        Some(coset::ContentType::Text(t)) if t == content_type => {}
        _ => return Err(Error::InvalidValue("signed statement of another kind")),
    }
    sign1.verify_signature(b"", |sig, tbs| {
        let sig: &[u8; 64] = sig.try_into().map_err(|_| Error::Signature)?;
        c.ed25519_verify(public, tbs, sig)
            .map_err(|_| Error::Signature)
    })?;
    sign1
        .payload
        .ok_or(Error::InvalidValue("COSE_Sign1 without a payload"))
}

/// Encodes a CBOR value.
pub fn to_cbor(value: &Value) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    coset::cbor::into_writer(value, &mut out)
        .map_err(|_| Error::InvalidValue("CBOR does not encode"))?;
    Ok(out)
}

/// Decodes a CBOR array, refusing trailing bytes.
pub fn array_from_cbor(bytes: &[u8]) -> Result<Vec<Value>, Error> {
    let mut reader = bytes;
    let value: Value = coset::cbor::from_reader(&mut reader)
        .map_err(|_| Error::InvalidValue("payload is not CBOR"))?;
    if !reader.is_empty() {
        return Err(Error::TrailingBytes);
    }
    match value {
        Value::Array(items) => Ok(items),
        _ => Err(Error::InvalidValue("payload is not a CBOR array")),
    }
}

/// Reads a CBOR integer as `i64`.
pub fn int(v: &Value, what: &'static str) -> Result<i64, Error> {
    v.as_integer()
        .and_then(|i| i64::try_from(i).ok())
        .ok_or(Error::InvalidValue(what))
}

/// Reads a CBOR byte string of exactly `N` bytes.
pub fn bytes_n<const N: usize>(v: &Value, what: &'static str) -> Result<[u8; N], Error> {
    v.as_bytes()
        .and_then(|b| <[u8; N]>::try_from(b.as_slice()).ok())
        .ok_or(Error::InvalidValue(what))
}

/// A version of the list of devices a hub accepts messages from (TIES' authorized-device list).
///
/// Payload: `[version, issued_at, [device id, ...], [static key, ...], [[requester, kid, expires], ...]]`. The
/// fourth element vouches for each device's Noise static key (pinned at admission; same order as the ids), so two
/// nodes can run Noise KK with each other; the fifth names the device-to-device keys that are dead because a device
/// that held one was revoked (docs/wire.md §12). A list of three elements (before device-to-device keys) still reads,
/// with no keys and nothing dead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceList {
    /// Increases by one with every change.
    pub version: i64,
    /// When it was signed (Unix seconds).
    pub issued_at: i64,
    /// The authorized devices.
    pub devices: Vec<DeviceId>,
    /// Each authorized device's static X25519 key, in the order of `devices` (empty: not published).
    pub statics: Vec<[u8; 32]>,
    /// Device-to-device keys no node may use any more: `(requester, key id, expiry)`.
    pub dead: Vec<(DeviceId, [u8; 8], i64)>,
}

impl DeviceList {
    /// Signs the list; `sign` is the hub's Ed25519 signer.
    pub fn sign(&self, sign: impl FnOnce(&[u8]) -> [u8; 64]) -> Result<Vec<u8>, Error> {
        if !self.statics.is_empty() && self.statics.len() != self.devices.len() {
            return Err(Error::InvalidValue(
                "a device list has one static key per device, or none",
            ));
        }
        let payload = Value::Array(alloc::vec![
            Value::Integer(self.version.into()),
            Value::Integer(self.issued_at.into()),
            Value::Array(
                self.devices
                    .iter()
                    .map(|d| Value::Bytes(d.0.to_vec()))
                    .collect()
            ),
            Value::Array(
                self.statics
                    .iter()
                    .map(|k| Value::Bytes(k.to_vec()))
                    .collect()
            ),
            Value::Array(
                self.dead
                    .iter()
                    .map(|(r, kid, e)| {
                        Value::Array(alloc::vec![
                            Value::Bytes(r.0.to_vec()),
                            Value::Bytes(kid.to_vec()),
                            Value::Integer((*e).into()),
                        ])
                    })
                    .collect()
            ),
        ]);
        sign1(DEVICE_LIST, to_cbor(&payload)?, sign)
    }

    /// Checks a signed list against the hub's signing key and decodes it.
    pub fn verify<C: Crypto>(c: &C, bytes: &[u8], hub_signing: &[u8; 32]) -> Result<Self, Error> {
        let payload = verify1(c, bytes, DEVICE_LIST, hub_signing)?;
        let items = array_from_cbor(&payload)?;
        let (version, issued_at, ids, statics, dead) = match items.as_slice() {
            [v, i, Value::Array(ids)] => (v, i, ids, &[][..], &[][..]),
            [v, i, Value::Array(ids), Value::Array(k), Value::Array(d)] => {
                (v, i, ids, k.as_slice(), d.as_slice())
            }
            _ => {
                return Err(Error::InvalidValue(
                    "device list is not [version, issued_at, devices, static keys, dead keys]",
                ));
            }
        };
        let devices = ids
            .iter()
            .map(|v| bytes_n::<8>(v, "a device id is not 8 bytes").map(DeviceId))
            .collect::<Result<Vec<_>, _>>()?;
        let statics = statics
            .iter()
            .map(|v| bytes_n::<32>(v, "a static key is not 32 bytes"))
            .collect::<Result<Vec<_>, _>>()?;
        if !statics.is_empty() && statics.len() != devices.len() {
            return Err(Error::InvalidValue(
                "a device list has one static key per device, or none",
            ));
        }
        let dead = dead
            .iter()
            .map(|v| match v {
                Value::Array(t) if t.len() == 3 => Ok((
                    DeviceId(bytes_n::<8>(
                        &t[0],
                        "a dead key's requester is not 8 bytes",
                    )?),
                    bytes_n::<8>(&t[1], "a dead key's id is not 8 bytes")?,
                    int(&t[2], "a dead key's expiry is not an integer")?,
                )),
                _ => Err(Error::InvalidValue(
                    "a dead key is not [requester, kid, expires]",
                )),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            version: int(version, "version is not an integer")?,
            issued_at: int(issued_at, "issued_at is not an integer")?,
            devices,
            statics,
            dead,
        })
    }

    /// The static key the hub vouches for `device`, if it is on the list.
    pub fn static_key(&self, device: DeviceId) -> Option<[u8; 32]> {
        let i = self.devices.iter().position(|&d| d == device)?;
        self.statics.get(i).copied()
    }

    /// Whether the key `kid` of `requester` is dead.
    pub fn is_dead(&self, requester: DeviceId, kid: &[u8; 8]) -> bool {
        self.dead
            .iter()
            .any(|(r, k, _)| *r == requester && k == kid)
    }

    /// Whether `device` is on the list.
    pub fn contains(&self, device: DeviceId) -> bool {
        self.devices.contains(&device)
    }
}

#[cfg(all(test, feature = "rustcrypto"))]
mod tests {
    use super::*;
    use crate::{RustCrypto, Secret};

    fn signer(seed: [u8; 32]) -> impl Fn(&[u8]) -> [u8; 64] {
        move |tbs| RustCrypto.ed25519_sign(&Secret::from_bytes(seed), tbs)
    }

    #[test]
    fn device_list_round_trip_and_attacks() {
        let c = RustCrypto;
        let public = c.ed25519_public(&Secret::from_bytes([1; 32]));
        let list = DeviceList {
            version: 3,
            issued_at: 1_800_000_000,
            devices: alloc::vec![DeviceId([2; 8]), DeviceId([3; 8])],
            statics: alloc::vec![[0x22; 32], [0x33; 32]],
            dead: alloc::vec![(DeviceId([4; 8]), [7; 8], 1_800_003_600)],
        };
        let signed = list.sign(signer([1; 32])).unwrap();
        assert_eq!(DeviceList::verify(&c, &signed, &public).unwrap(), list);
        assert!(list.contains(DeviceId([3; 8])) && !list.contains(DeviceId([4; 8])));
        assert_eq!(list.static_key(DeviceId([3; 8])), Some([0x33; 32]));
        assert!(
            list.is_dead(DeviceId([4; 8]), &[7; 8]) && !list.is_dead(DeviceId([4; 8]), &[8; 8])
        );
        // A list of three elements, as hubs signed before device-to-device keys, still reads.
        let old = sign1(
            DEVICE_LIST,
            to_cbor(&Value::Array(alloc::vec![
                Value::Integer(1.into()),
                Value::Integer(2.into()),
                Value::Array(alloc::vec![Value::Bytes(alloc::vec![2; 8])]),
            ]))
            .unwrap(),
            signer([1; 32]),
        )
        .unwrap();
        let old = DeviceList::verify(&c, &old, &public).unwrap();
        assert!(old.contains(DeviceId([2; 8])) && old.statics.is_empty() && old.dead.is_empty());

        // Another key's signature.
        let forged = list.sign(signer([9; 32])).unwrap();
        assert_eq!(
            DeviceList::verify(&c, &forged, &public),
            Err(Error::Signature)
        );
        // Every single-byte change is refused.
        for i in 0..signed.len() {
            let mut bad = signed.clone();
            bad[i] ^= 0x01;
            assert!(DeviceList::verify(&c, &bad, &public).is_err(), "byte {i}");
        }
        // The same key's signature on another kind of statement is not a device list.
        let other = sign1(
            "application/other",
            to_cbor(&Value::Array(alloc::vec![])).unwrap(),
            signer([1; 32]),
        )
        .unwrap();
        assert!(matches!(
            DeviceList::verify(&c, &other, &public),
            Err(Error::InvalidValue(_))
        ));
        // The same statement tagged (tag 18) is refused, and the error says what to change.
        let mut tagged = alloc::vec![SIGN1_TAG];
        tagged.extend_from_slice(&signed);
        let untag = Error::InvalidValue("a tagged COSE_Sign1 (tag 18): send it untagged");
        assert_eq!(DeviceList::verify(&c, &tagged, &public), Err(untag));
        assert_eq!(unverified_payload(&tagged), Err(untag));
        #[cfg(feature = "sharing")]
        assert_eq!(crate::sharing::kind(&tagged), Err(untag));
        assert_eq!(
            DeviceList::verify(&c, b"\x01", &public),
            Err(Error::InvalidValue("not a COSE_Sign1"))
        );
    }
}
