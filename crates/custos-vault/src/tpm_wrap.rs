//! Delivering a 32-byte key into a TPM by duplication, built in software (feature `tpm-wrap`).
//!
//! The sender (a hub, which has no TPM) knows the recipient TPM's storage key (an ECC P-256 restricted decryption
//! key, as `TPM2B_PUBLIC`) and builds what `TPM2_Import` takes: the new object's public area, its sensitive area
//! under an outer wrapper, and the wrapper's seed encrypted to the storage key. Only that TPM can import it; the
//! imported key is an HMAC-SHA256 key the TPM uses without releasing it. TPM 2.0 Library Part 1 §22-23 (outer
//! wrapper, KDFa, KDFe/ECDH secret sharing); structures in Part 2. The node side is `TpmSealer::import`.
//!
//! Must never: accept a parent that is not a restricted ECC P-256 / AES-128-CFB / SHA-256 storage key (the
//! wrapper's parameters follow from the parent, and a wrong guess would make an unimportable or weaker blob).

use aes::Aes128;
use cfb_mode::cipher::{AsyncStreamCipher, KeyIvInit};
use hmac::{Hmac, Mac};
use p256::ecdh::EphemeralSecret;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use rand_core::CryptoRngCore;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::VaultError;

/// TPM algorithm and curve identifiers (Part 2, §6).
const ALG_SHA256: u16 = 0x000B;
const ALG_HMAC: u16 = 0x0005;
const ALG_AES: u16 = 0x0006;
const ALG_KEYEDHASH: u16 = 0x0008;
const ALG_NULL: u16 = 0x0010;
const ALG_ECC: u16 = 0x0023;
const ALG_CFB: u16 = 0x0043;
const ECC_NIST_P256: u16 = 0x0003;
/// TPMA_OBJECT bits.
const ATTR_FIXED_TPM: u32 = 1 << 1;
const ATTR_FIXED_PARENT: u32 = 1 << 4;
const ATTR_USER_WITH_AUTH: u32 = 1 << 6;
const ATTR_NO_DA: u32 = 1 << 10;
const ATTR_RESTRICTED: u32 = 1 << 16;
const ATTR_DECRYPT: u32 = 1 << 17;
const ATTR_SIGN: u32 = 1 << 18;
/// The imported key: an HMAC key usable with an empty authorization, movable (not fixedTPM/fixedParent, which
/// TPM2_Import requires clear) but only by whoever holds the blob and the recipient's TPM.
const IMPORTED_ATTRS: u32 = ATTR_USER_WITH_AUTH | ATTR_NO_DA | ATTR_SIGN;

/// What `TPM2_Import` takes, in wire form: `TPM2B_PUBLIC ‖ TPM2B_PRIVATE ‖ TPM2B_ENCRYPTED_SECRET`, 230 bytes for
/// a 32-byte HMAC key and a P-256 parent (50 + 110 + 70).
#[derive(Clone, PartialEq, Eq)]
pub struct TpmImportBlob {
    /// `TPMT_PUBLIC` of the new object (without the size prefix).
    pub(crate) public: Vec<u8>,
    /// The duplicate, `TPM2B_PRIVATE` contents: `TPM2B_DIGEST outerHMAC ‖ AES-128-CFB(TPM2B_SENSITIVE)`.
    pub(crate) duplicate: Vec<u8>,
    /// `TPM2B_ENCRYPTED_SECRET` contents: the sender's ephemeral P-256 point as `TPMS_ECC_POINT`.
    pub(crate) seed: Vec<u8>,
}

impl TpmImportBlob {
    /// The wire form: the three size-prefixed structures.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(6 + self.public.len() + self.duplicate.len() + self.seed.len());
        for part in [&self.public, &self.duplicate, &self.seed] {
            put_sized(&mut out, part);
        }
        out
    }

    /// Parses [`TpmImportBlob::to_bytes`]; the recipient's TPM checks everything else.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, VaultError> {
        let bad = |why: &str| VaultError::Malformed(format!("TPM import blob: {why}"));
        let mut r = Reader(bytes);
        let public = r
            .sized()
            .ok_or_else(|| bad("truncated public area"))?
            .to_vec();
        let duplicate = r
            .sized()
            .ok_or_else(|| bad("truncated duplicate"))?
            .to_vec();
        let seed = r.sized().ok_or_else(|| bad("truncated seed"))?.to_vec();
        if !r.0.is_empty() {
            return Err(bad("trailing bytes"));
        }
        Ok(Self {
            public,
            duplicate,
            seed,
        })
    }
}

impl std::fmt::Debug for TpmImportBlob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TpmImportBlob({} bytes)", self.to_bytes().len())
    }
}

/// Wraps `secret` as an HMAC-SHA256 key for the TPM whose storage key is `parent` (`TPM2B_PUBLIC`, as
/// `TpmSealer::storage_public` gives it). Software only: an ephemeral ECDH with the storage key gives the seed
/// (KDFe, label "DUPLICATE"); the seed gives the AES-128-CFB key (KDFa "STORAGE", bound to the object's name) and
/// the integrity key (KDFa "INTEGRITY").
pub fn wrap_hmac_key_for_tpm(
    parent: &[u8],
    secret: &[u8; 32],
    rng: &mut impl CryptoRngCore,
) -> Result<TpmImportBlob, VaultError> {
    let parent_point = parse_storage_parent(parent)?;

    // The object: public area whose unique field commits to the sensitive area (H(seedValue ‖ key)).
    let mut obfuscation = Zeroizing::new([0u8; 32]);
    rng.try_fill_bytes(&mut obfuscation[..])
        .map_err(|_| VaultError::Random)?;
    let unique = Sha256::new()
        .chain_update(&obfuscation[..])
        .chain_update(secret)
        .finalize();
    let mut public = Vec::with_capacity(48);
    put_u16(&mut public, ALG_KEYEDHASH);
    put_u16(&mut public, ALG_SHA256);
    public.extend_from_slice(&IMPORTED_ATTRS.to_be_bytes());
    put_sized(&mut public, &[]); // authPolicy
    put_u16(&mut public, ALG_HMAC);
    put_u16(&mut public, ALG_SHA256);
    put_sized(&mut public, &unique);
    let mut name = Vec::with_capacity(34);
    put_u16(&mut name, ALG_SHA256);
    name.extend_from_slice(&Sha256::digest(&public));

    // TPM2B_SENSITIVE: type, empty authValue, seedValue, the key.
    let mut sensitive = Zeroizing::new(Vec::with_capacity(74));
    put_u16(&mut sensitive, 0); // size, set below
    put_u16(&mut sensitive, ALG_KEYEDHASH);
    put_sized(&mut sensitive, &[]);
    put_sized(&mut sensitive, &obfuscation[..]);
    put_sized(&mut sensitive, secret);
    let inner_len = u16::try_from(sensitive.len() - 2).map_err(|_| VaultError::Crypto)?;
    sensitive[..2].copy_from_slice(&inner_len.to_be_bytes());

    // The seed, shared with the parent by ECDH (Part 1 §C.6.4 / §11.4.10.3: KDFe over Z.x, Qe.x, Qs.x).
    let ephemeral = EphemeralSecret::random(rng);
    let eph_point = ephemeral.public_key().to_encoded_point(false);
    let (ex, ey) = match (eph_point.x(), eph_point.y()) {
        (Some(x), Some(y)) => (x, y),
        _ => return Err(VaultError::Crypto),
    };
    let shared = ephemeral.diffie_hellman(&parent_point.key);
    let seed = kdf_e(
        shared.raw_secret_bytes().as_slice(),
        b"DUPLICATE\0",
        ex.as_slice(),
        &parent_point.x,
    );

    // The outer wrapper: AES-128-CFB with a zero IV under KDFa(seed, "STORAGE", name), then an HMAC over the
    // ciphertext and the name.
    let sym = kdf_a(&seed[..], b"STORAGE\0", &name, 128);
    let mut enc = sensitive.to_vec();
    cfb_mode::Encryptor::<Aes128>::new_from_slices(&sym[..16], &[0u8; 16])
        .map_err(|_| VaultError::Crypto)?
        .encrypt(&mut enc);
    let hmac_key = kdf_a(&seed[..], b"INTEGRITY\0", &[], 256);
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(&hmac_key[..]).map_err(|_| VaultError::Crypto)?;
    mac.update(&enc);
    mac.update(&name);
    let outer = mac.finalize().into_bytes();
    let mut duplicate = Vec::with_capacity(34 + enc.len());
    put_sized(&mut duplicate, &outer);
    duplicate.extend_from_slice(&enc);

    let mut encrypted_seed = Vec::with_capacity(68);
    put_sized(&mut encrypted_seed, ex);
    put_sized(&mut encrypted_seed, ey);
    Ok(TpmImportBlob {
        public,
        duplicate,
        seed: encrypted_seed,
    })
}

/// KDFa with SHA-256 (Part 1 §11.4.10.2): `HMAC(key, i ‖ label ‖ contextU ‖ contextV ‖ bits)` for i = 1, 2, ….
/// Here at most 256 bits, so one block; `label` includes its terminating zero.
fn kdf_a(key: &[u8], label: &[u8], context_u: &[u8], bits: u32) -> Zeroizing<[u8; 32]> {
    let mut out = Zeroizing::new([0u8; 32]);
    if let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(key) {
        mac.update(&1u32.to_be_bytes());
        mac.update(label);
        mac.update(context_u);
        mac.update(&bits.to_be_bytes());
        out.copy_from_slice(&mac.finalize().into_bytes());
    }
    out
}

/// KDFe with SHA-256 (Part 1 §11.4.10.3) for 256 bits: `H(1 ‖ Z ‖ label ‖ partyU ‖ partyV)`.
fn kdf_e(z: &[u8], label: &[u8], party_u: &[u8], party_v: &[u8]) -> Zeroizing<[u8; 32]> {
    let d = Sha256::new()
        .chain_update(1u32.to_be_bytes())
        .chain_update(z)
        .chain_update(label)
        .chain_update(party_u)
        .chain_update(party_v)
        .finalize();
    let mut out = Zeroizing::new([0u8; 32]);
    out.copy_from_slice(&d);
    out
}

struct ParentPoint {
    key: p256::PublicKey,
    /// The x-coordinate, 32 bytes big-endian, as KDFe's partyVInfo.
    x: [u8; 32],
}

/// Checks that `parent` (`TPM2B_PUBLIC`) is a storage key this wrapper is made for and returns its point.
/// Checks that `parent` (`TPM2B_PUBLIC`) is a storage key [`wrap_hmac_key_for_tpm`] can build blobs for: a
/// restricted decryption ECC P-256 key with AES-128-CFB and SHA-256, whose point is on the curve. A hub checks a
/// node's registration with it, so that a bad parent is refused once rather than at every delivery.
pub fn check_storage_parent(parent: &[u8]) -> Result<(), VaultError> {
    parse_storage_parent(parent).map(|_| ())
}

fn parse_storage_parent(parent: &[u8]) -> Result<ParentPoint, VaultError> {
    let bad = |why: &str| VaultError::Malformed(format!("TPM storage parent: {why}"));
    let mut outer = Reader(parent);
    let body = outer.sized().ok_or_else(|| bad("truncated"))?;
    if !outer.0.is_empty() {
        return Err(bad("trailing bytes"));
    }
    let mut r = Reader(body);
    let short = || bad("truncated");
    if r.u16().ok_or_else(short)? != ALG_ECC {
        return Err(bad("not an ECC key"));
    }
    if r.u16().ok_or_else(short)? != ALG_SHA256 {
        return Err(bad("name algorithm is not SHA-256"));
    }
    let attrs = r.u32().ok_or_else(short)?;
    let want = ATTR_FIXED_TPM | ATTR_FIXED_PARENT | ATTR_RESTRICTED | ATTR_DECRYPT;
    if attrs & want != want || attrs & ATTR_SIGN != 0 {
        return Err(bad("not a restricted decryption (storage) key"));
    }
    r.sized().ok_or_else(short)?; // authPolicy: not ours to judge
    if (r.u16(), r.u16(), r.u16()) != (Some(ALG_AES), Some(128), Some(ALG_CFB)) {
        return Err(bad("its children are not wrapped with AES-128-CFB"));
    }
    if r.u16() != Some(ALG_NULL) {
        return Err(bad("has a scheme (a storage key has none)"));
    }
    if r.u16() != Some(ECC_NIST_P256) {
        return Err(bad("curve is not NIST P-256"));
    }
    if r.u16() != Some(ALG_NULL) {
        return Err(bad("has a KDF scheme"));
    }
    let x = r.sized().ok_or_else(short)?;
    let y = r.sized().ok_or_else(short)?;
    if !r.0.is_empty() {
        return Err(bad("trailing bytes in the public area"));
    }
    let (x, y) = (
        pad32(x).ok_or_else(|| bad("x too long"))?,
        pad32(y).ok_or_else(|| bad("y too long"))?,
    );
    let mut sec1 = [0u8; 65];
    sec1[0] = 0x04;
    sec1[1..33].copy_from_slice(&x);
    sec1[33..].copy_from_slice(&y);
    let key = p256::PublicKey::from_sec1_bytes(&sec1).map_err(|_| bad("point not on P-256"))?;
    Ok(ParentPoint { key, x })
}

/// A TPM2B_ECC_PARAMETER may drop leading zero bytes; KDFe and SEC1 want the full 32.
fn pad32(v: &[u8]) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    let start = 32usize.checked_sub(v.len())?;
    out[start..].copy_from_slice(v);
    Some(out)
}

fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// A TPM2B: u16 big-endian length, then the bytes. Every caller's part is far below 64 KiB.
fn put_sized(out: &mut Vec<u8>, part: &[u8]) {
    put_u16(out, u16::try_from(part.len()).unwrap_or(u16::MAX));
    out.extend_from_slice(part);
}

/// A bounded big-endian reader over a byte slice.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn u16(&mut self) -> Option<u16> {
        let (v, rest) = self.0.split_first_chunk::<2>()?;
        self.0 = rest;
        Some(u16::from_be_bytes(*v))
    }

    fn u32(&mut self) -> Option<u32> {
        let (v, rest) = self.0.split_first_chunk::<4>()?;
        self.0 = rest;
        Some(u32::from_be_bytes(*v))
    }

    fn sized(&mut self) -> Option<&'a [u8]> {
        let len = usize::from(self.u16()?);
        if self.0.len() < len {
            return None;
        }
        let (v, rest) = self.0.split_at(len);
        self.0 = rest;
        Some(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kdf_a_matches_the_spec_formula() {
        // One block of KDFa is HMAC(key, 00000001 ‖ label ‖ context ‖ bits), computed here independently.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(b"k").unwrap();
        mac.update(b"\x00\x00\x00\x01STORAGE\x00ctx\x00\x00\x00\x80");
        assert_eq!(
            &kdf_a(b"k", b"STORAGE\0", b"ctx", 128)[..],
            &mac.finalize().into_bytes()[..]
        );
    }

    #[test]
    fn refuses_what_is_not_a_p256_storage_key() {
        for bad in [&[][..], &[0, 1, 0][..], &[0, 2, 0, 1][..]] {
            assert!(matches!(
                wrap_hmac_key_for_tpm(bad, &[1; 32], &mut rand_core::OsRng),
                Err(VaultError::Malformed(_))
            ));
        }
    }

    #[test]
    fn blob_bytes_round_trip_and_reject_garbage() {
        let blob = TpmImportBlob {
            public: vec![1; 48],
            duplicate: vec![2; 108],
            seed: vec![3; 68],
        };
        let bytes = blob.to_bytes();
        assert_eq!(bytes.len(), 230);
        assert_eq!(TpmImportBlob::from_bytes(&bytes).unwrap(), blob);
        assert!(TpmImportBlob::from_bytes(&bytes[..229]).is_err());
        assert!(TpmImportBlob::from_bytes(&[bytes.clone(), vec![0]].concat()).is_err());
    }
}
