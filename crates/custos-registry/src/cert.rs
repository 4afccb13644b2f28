//! OpenPGP certificates (RFC 9580, v4 keys so that GnuPG 2.2 and sq read them): the parties' own certificates, and
//! device identity certificates with the manufacturer's certification and further endorsements.
//!
//! A device's certificate is the device's own: its primary key is the device's Ed25519 identity key (derived from
//! its admission key, [`device_identity_seed`]), self-signed, with the device's X25519 admission (Noise static) key
//! bound as an encryption subkey. Parties add third-party certifications of its User ID: the manufacturer's carries
//! the device attributes as notations; an integrator's, maintainer's or certification body's is an endorsement.

use custos_proto::DeviceId;
use ed25519_dalek::Signer as _;
use pgp::composed::{Deserializable, SignedKeyDetails, SignedPublicKey, SignedPublicSubKey};
use pgp::crypto::hash::HashAlgorithm;
use pgp::crypto::public_key::PublicKeyAlgorithm;
use pgp::crypto::sym::SymmetricKeyAlgorithm;
use pgp::packet::{
    KeyFlags, Notation, PubKeyInner, PublicKey, PublicSubkey, Signature, SignatureConfig,
    SignatureType, Subpacket, SubpacketData, UserId,
};
use pgp::ser::Serialize;
use pgp::types::{
    EcdhKdfType, EcdhPublicParams, EddsaLegacyPublicParams, Fingerprint, KeyDetails, KeyId,
    KeyVersion, Mpi, PacketHeaderVersion, Password, PublicParams, SignatureBytes, SigningKey, Tag,
    Timestamp,
};

/// A version 4 OpenPGP fingerprint.
pub type Fpr = [u8; 20];

/// The namespace of our notations. The expired device-certificate draft (draft-atkins-openpgp-device-certificates)
/// named them in the IETF namespace (no `@`), which only an RFC may use; ours keep the draft's short names in a
/// user namespace.
pub const NOTATION_DOMAIN: &str = "custos.dev";

/// What can be wrong with a certificate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    /// The bytes are not an OpenPGP certificate.
    #[error("not an OpenPGP certificate: {0}")]
    Parse(String),
    /// The certificate is well formed but not one this registry holds.
    #[error("certificate refused: {0}")]
    Refused(&'static str),
    /// A signature does not verify.
    #[error("bad signature: {0}")]
    Signature(&'static str),
    /// OpenPGP could not build a packet.
    #[error("OpenPGP: {0}")]
    Build(String),
}

fn build(e: pgp::errors::Error) -> CertError {
    CertError::Build(e.to_string())
}

/// The 20 bytes of a v4 fingerprint.
pub fn fpr(key: &impl KeyDetails) -> Fpr {
    let fp = key.fingerprint();
    let mut out = [0; 20];
    let bytes = fp.as_bytes();
    if bytes.len() == 20 {
        out.copy_from_slice(bytes);
    }
    out
}

/// An Ed25519 key that signs OpenPGP packets: a party's key, or a device's identity key.
pub struct Ed25519Key {
    secret: ed25519_dalek::SigningKey,
    public: PublicKey,
}

impl std::fmt::Debug for Ed25519Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ed25519Key")
            .field("fingerprint", &hex::encode_upper(fpr(&self.public)))
            .finish_non_exhaustive()
    }
}

impl Ed25519Key {
    /// The key with secret `seed`, created at `created` (Unix seconds; part of the fingerprint).
    pub fn from_seed(seed: &[u8; 32], created: u32) -> Result<Self, CertError> {
        let secret = ed25519_dalek::SigningKey::from_bytes(seed);
        let params = PublicParams::EdDSALegacy(EddsaLegacyPublicParams::Ed25519 {
            key: secret.verifying_key(),
        });
        let inner = PubKeyInner::new(
            KeyVersion::V4,
            PublicKeyAlgorithm::EdDSALegacy,
            Timestamp::from_secs(created),
            None,
            params,
        )
        .map_err(build)?;
        let public = PublicKey::from_inner(inner).map_err(build)?;
        Ok(Self { secret, public })
    }

    /// A fresh key from the OS generator.
    pub fn generate(created: u32) -> Result<Self, CertError> {
        let mut seed = zeroize::Zeroizing::new([0u8; 32]);
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, seed.as_mut());
        Self::from_seed(&seed, created)
    }

    /// The secret seed (for the key file).
    pub fn seed(&self) -> zeroize::Zeroizing<[u8; 32]> {
        zeroize::Zeroizing::new(self.secret.to_bytes())
    }

    /// The public key packet.
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// The raw Ed25519 public key (what signed statements are checked with).
    pub fn ed25519_public(&self) -> [u8; 32] {
        self.secret.verifying_key().to_bytes()
    }

    /// Signs `bytes` with plain Ed25519 (signed statements, [`crate::statement`]).
    pub fn sign_raw(&self, bytes: &[u8]) -> [u8; 64] {
        self.secret.sign(bytes).to_bytes()
    }

    /// The fingerprint.
    pub fn fingerprint(&self) -> Fpr {
        fpr(&self.public)
    }
}

impl KeyDetails for Ed25519Key {
    fn version(&self) -> KeyVersion {
        self.public.version()
    }
    fn legacy_key_id(&self) -> KeyId {
        self.public.legacy_key_id()
    }
    fn fingerprint(&self) -> Fingerprint {
        self.public.fingerprint()
    }
    fn algorithm(&self) -> PublicKeyAlgorithm {
        self.public.algorithm()
    }
    fn created_at(&self) -> Timestamp {
        self.public.created_at()
    }
    fn legacy_v3_expiration_days(&self) -> Option<u16> {
        None
    }
    fn public_params(&self) -> &PublicParams {
        self.public.public_params()
    }
}

impl SigningKey for Ed25519Key {
    fn sign(
        &self,
        _: &Password,
        hash: HashAlgorithm,
        digest: &[u8],
    ) -> pgp::errors::Result<SignatureBytes> {
        // EdDSA in OpenPGP signs the digest; RFC 9580 §5.2.3.3 wants a digest of at least 256 bits.
        if hash != HashAlgorithm::Sha256 && hash != HashAlgorithm::Sha512 {
            return Err(pgp::errors::Error::Message {
                message: "Ed25519 signs only SHA-256 or SHA-512 digests".into(),
                backtrace: None,
            });
        }
        let sig = self.secret.sign(digest).to_bytes();
        Ok(SignatureBytes::Mpis(vec![
            Mpi::from_slice(&sig[..32]),
            Mpi::from_slice(&sig[32..]),
        ]))
    }

    fn hash_alg(&self) -> HashAlgorithm {
        HashAlgorithm::Sha256
    }
}

/// The seed of a device's Ed25519 identity key: HKDF-SHA256 of its X25519 admission secret, bound to the device id.
/// Deriving it (rather than keeping a second secret) gives every admitted device an identity key with nothing new
/// to store; the derivation is one-way, so the certificate's Ed25519 key reveals nothing of the admission key.
pub fn device_identity_seed(static_secret: &[u8; 32], device: DeviceId) -> [u8; 32] {
    let hk = hkdf::Hkdf::<sha2::Sha256>::new(Some(b"custos device identity v1"), static_secret);
    let mut out = [0; 32];
    // 32 bytes are always within HKDF-SHA256's 8160-byte limit.
    let _ = hk.expand(&device.0, &mut out);
    out
}

/// The User ID of a device's certificate.
pub fn device_user_id(device: DeviceId) -> String {
    format!("custos device {device}")
}

fn hashed(config: &mut SignatureConfig, data: SubpacketData) -> Result<(), CertError> {
    config
        .hashed_subpackets
        .push(Subpacket::regular(data).map_err(build)?);
    Ok(())
}

fn signature_config(
    typ: SignatureType,
    signer: &Ed25519Key,
    at: u32,
) -> Result<SignatureConfig, CertError> {
    let mut config =
        SignatureConfig::v4(typ, PublicKeyAlgorithm::EdDSALegacy, HashAlgorithm::Sha256);
    hashed(
        &mut config,
        SubpacketData::SignatureCreationTime(Timestamp::from_secs(at)),
    )?;
    hashed(
        &mut config,
        SubpacketData::IssuerFingerprint(signer.public.fingerprint()),
    )?;
    config.unhashed_subpackets.push(
        Subpacket::regular(SubpacketData::IssuerKeyId(signer.public.legacy_key_id()))
            .map_err(build)?,
    );
    Ok(config)
}

fn user_id(text: &str) -> Result<UserId, CertError> {
    UserId::from_str(PacketHeaderVersion::New, text).map_err(build)
}

fn self_certification(key: &Ed25519Key, uid: &UserId, at: u32) -> Result<Signature, CertError> {
    let mut config = signature_config(SignatureType::CertPositive, key, at)?;
    let mut flags = KeyFlags::default();
    flags.set_certify(true);
    flags.set_sign(true);
    hashed(&mut config, SubpacketData::KeyFlags(flags))?;
    hashed(&mut config, SubpacketData::IsPrimary(true))?;
    config
        .sign_certification(key, &key.public, &Password::empty(), Tag::UserId, uid)
        .map_err(build)
}

/// A party's certificate (a manufacturer, an integrator, a maintainer, a certification body, a developer): its
/// Ed25519 key, self-signed with one User ID.
pub fn party_certificate(key: &Ed25519Key, uid: &str) -> Result<SignedPublicKey, CertError> {
    let uid = user_id(uid)?;
    let at = key.public.created_at().as_secs();
    let sig = self_certification(key, &uid, at)?;
    Ok(SignedPublicKey::new(
        key.public.clone(),
        SignedKeyDetails::new(vec![], vec![], vec![uid.into_signed(sig)], vec![]),
        vec![],
    ))
}

/// The certificate a device makes for itself at the factory: its identity key, self-signed with the device's User
/// ID, and its X25519 admission key bound as an encryption subkey. The manufacturer then certifies it
/// ([`certify`]).
pub fn device_certificate(
    identity: &Ed25519Key,
    device: DeviceId,
    static_public: [u8; 32],
) -> Result<SignedPublicKey, CertError> {
    let at = identity.public.created_at().as_secs();
    let uid = user_id(&device_user_id(device))?;
    let sig = self_certification(identity, &uid, at)?;
    let params = PublicParams::ECDH(EcdhPublicParams::Curve25519Legacy {
        p: x25519_dalek::PublicKey::from(static_public),
        hash: HashAlgorithm::Sha256,
        alg_sym: SymmetricKeyAlgorithm::AES128,
        ecdh_kdf_type: EcdhKdfType::Native,
    });
    let inner = PubKeyInner::new(
        KeyVersion::V4,
        PublicKeyAlgorithm::ECDH,
        Timestamp::from_secs(at),
        None,
        params,
    )
    .map_err(build)?;
    let subkey = PublicSubkey::from_inner(inner).map_err(build)?;
    let mut config = signature_config(SignatureType::SubkeyBinding, identity, at)?;
    let mut flags = KeyFlags::default();
    flags.set_encrypt_comms(true);
    hashed(&mut config, SubpacketData::KeyFlags(flags))?;
    let binding = config
        .sign_subkey_binding(identity, &identity.public, &Password::empty(), &subkey)
        .map_err(build)?;
    Ok(SignedPublicKey::new(
        identity.public.clone(),
        SignedKeyDetails::new(vec![], vec![], vec![uid.into_signed(sig)], vec![]),
        vec![SignedPublicSubKey::new(subkey, vec![binding])],
    ))
}

/// What a party asserts when it certifies a device.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Claims {
    /// The party's role: `manufacturer`, `integrator`, `maintainer`, `certification-body`, `developer`.
    pub role: String,
    /// Device attributes (the manufacturer's): the draft's `manu`, `make`, `model`, `prodid`, `pvers`, `lot`; or a
    /// trust label (`label`) of a certification body. Names without the `@custos.dev` suffix.
    pub attributes: Vec<(String, String)>,
}

/// The notation names a certification may carry (without the namespace).
pub const ATTRIBUTES: &[&str] = &[
    "manu", "make", "model", "prodid", "pvers", "lot", "label", "domain",
];

/// The roles a party may certify in.
pub const ROLES: &[&str] = &[
    "manufacturer",
    "integrator",
    "maintainer",
    "certification-body",
    "developer",
];

/// A third-party certification of `cert`'s first User ID by `signer`, at `at`, carrying `claims` as notations.
pub fn certify(
    signer: &Ed25519Key,
    cert: &SignedPublicKey,
    claims: &Claims,
    at: u32,
) -> Result<Signature, CertError> {
    if !ROLES.contains(&claims.role.as_str()) {
        return Err(CertError::Refused("unknown role"));
    }
    let user = cert
        .details
        .users
        .first()
        .ok_or(CertError::Refused("the certificate has no User ID"))?;
    let typ = if claims.role == "manufacturer" {
        // The manufacturer made the device: it has checked the key and the id as well as anyone can.
        SignatureType::CertPositive
    } else {
        SignatureType::CertGeneric
    };
    let mut config = signature_config(typ, signer, at)?;
    let mut notations = vec![("role".to_string(), claims.role.clone())];
    for (name, value) in &claims.attributes {
        if !ATTRIBUTES.contains(&name.as_str()) {
            return Err(CertError::Refused("unknown attribute"));
        }
        notations.push((name.clone(), value.clone()));
    }
    for (name, value) in notations {
        hashed(
            &mut config,
            SubpacketData::Notation(Notation {
                readable: true,
                name: format!("{name}@{NOTATION_DOMAIN}").into_bytes().into(),
                value: value.into_bytes().into(),
            }),
        )?;
    }
    config
        .sign_certification_third_party(
            signer,
            &Password::empty(),
            &cert.primary_key,
            Tag::UserId,
            &user.id,
        )
        .map_err(build)
}

/// One third-party certification found on a certificate (not yet verified: that needs the signer's key).
#[derive(Clone, Debug)]
pub struct Certification {
    /// The signer's fingerprint, from the hashed Issuer Fingerprint subpacket.
    pub signer: Fpr,
    /// When it was made.
    pub created: u32,
    /// The User ID it certifies.
    pub user_id: String,
    /// Its claims, from our notations.
    pub claims: Claims,
    /// The signature packet.
    pub signature: Signature,
}

/// A certificate that parsed and whose self-signatures verify.
#[derive(Clone, Debug)]
pub struct Cert {
    /// The certificate, with only what verified or is a third-party certification.
    pub cert: SignedPublicKey,
    /// The primary key's fingerprint.
    pub fingerprint: Fpr,
    /// Fingerprints of the primary key and of every subkey bound to it.
    pub keys: Vec<Fpr>,
    /// The self-signed User IDs.
    pub user_ids: Vec<String>,
    /// The X25519 key of a bound Curve25519 ECDH subkey (a device's admission key), if there is one.
    pub x25519: Option<[u8; 32]>,
    /// The Ed25519 primary key, raw.
    pub ed25519: [u8; 32],
    /// Third-party certifications of the User IDs.
    pub certifications: Vec<Certification>,
}

/// The longest certificate the registry takes (armored or not): Hagrid's limit. A device's certificate with a
/// dozen endorsements is under 4 KiB.
pub const MAX_CERT: usize = 1 << 20;

/// Reads one certificate, armored or binary.
pub fn parse(bytes: &[u8]) -> Result<SignedPublicKey, CertError> {
    if bytes.len() > MAX_CERT {
        return Err(CertError::Refused("certificate above 1 MiB"));
    }
    let trimmed = bytes.trim_ascii_start();
    let cert = if trimmed.starts_with(b"-----BEGIN PGP") {
        SignedPublicKey::from_armor_single(trimmed).map(|(k, _)| k)
    } else {
        SignedPublicKey::from_bytes(bytes)
    };
    cert.map_err(|e| CertError::Parse(e.to_string()))
}

/// Reads every certificate of a keyring, armored or binary (what `gpg --send-keys` posts may hold several).
pub fn parse_many(bytes: &[u8]) -> Result<Vec<SignedPublicKey>, CertError> {
    if bytes.len() > MAX_CERT {
        return Err(CertError::Refused("keyring above 1 MiB"));
    }
    let trimmed = bytes.trim_ascii_start();
    let mut out = Vec::new();
    if trimmed.starts_with(b"-----BEGIN PGP") {
        let (iter, _) = SignedPublicKey::from_armor_many(trimmed)
            .map_err(|e| CertError::Parse(e.to_string()))?;
        for k in iter {
            out.push(k.map_err(|e| CertError::Parse(e.to_string()))?);
        }
    } else {
        let iter =
            SignedPublicKey::from_bytes_many(bytes).map_err(|e| CertError::Parse(e.to_string()))?;
        for k in iter {
            out.push(k.map_err(|e| CertError::Parse(e.to_string()))?);
        }
    }
    if out.is_empty() {
        return Err(CertError::Parse("no certificate".into()));
    }
    Ok(out)
}

fn claims_of(sig: &Signature) -> Claims {
    let mut claims = Claims::default();
    let suffix = format!("@{NOTATION_DOMAIN}");
    for n in sig.notations() {
        let (Ok(name), Ok(value)) = (std::str::from_utf8(&n.name), std::str::from_utf8(&n.value))
        else {
            continue;
        };
        let Some(short) = name.strip_suffix(&suffix) else {
            continue;
        };
        if short == "role" {
            claims.role = value.to_string();
        } else {
            claims
                .attributes
                .push((short.to_string(), value.to_string()));
        }
    }
    claims
}

/// Checks a certificate the way the registry stores it: a v4 Ed25519 primary key; User IDs kept only with a valid
/// self-certification; subkeys kept only with a valid binding; revocations and direct-key signatures by the primary
/// kept if valid; third-party certifications collected (verified later against the signer's key).
pub fn check(cert: SignedPublicKey) -> Result<Cert, CertError> {
    classify(cert, true)
}

/// Reads a certificate the registry stored (it was [`check`]ed when it was taken) without verifying its
/// signatures again: what reads of the store use.
pub fn stored(bytes: &[u8]) -> Result<Cert, CertError> {
    classify(parse(bytes)?, false)
}

/// [`check`], with the self-signatures verified only if `verify`.
fn classify(cert: SignedPublicKey, verify: bool) -> Result<Cert, CertError> {
    let primary = &cert.primary_key;
    let PublicParams::EdDSALegacy(EddsaLegacyPublicParams::Ed25519 { key }) =
        primary.public_params()
    else {
        return Err(CertError::Refused(
            "the primary key is not a version 4 Ed25519 key",
        ));
    };
    if primary.version() != KeyVersion::V4 {
        return Err(CertError::Refused(
            "the primary key is not a version 4 Ed25519 key",
        ));
    }
    let ed25519 = key.to_bytes();
    let fingerprint = fpr(primary);
    let mut users = Vec::new();
    let mut user_ids = Vec::new();
    let mut certifications = Vec::new();
    for user in &cert.details.users {
        let Some(text) = user.id.as_str().map(str::to_string) else {
            continue;
        };
        let mut own = Vec::new();
        let mut third = Vec::new();
        for sig in &user.signatures {
            let issuer = sig.issuer_fingerprint().first().map(|f| {
                let mut out = [0u8; 20];
                if f.as_bytes().len() == 20 {
                    out.copy_from_slice(f.as_bytes());
                }
                out
            });
            if issuer == Some(fingerprint)
                || (issuer.is_none()
                    && sig
                        .issuer_key_id()
                        .iter()
                        .any(|id| **id == primary.legacy_key_id()))
            {
                if !verify
                    || sig
                        .verify_certification(primary, Tag::UserId, &user.id)
                        .is_ok()
                {
                    own.push(sig.clone());
                }
            } else if let Some(signer) = issuer
                && sig
                    .created()
                    .is_some_and(|t| t.as_secs() >= primary.created_at().as_secs())
            {
                // Without a hashed issuer fingerprint a certification cannot be attributed, and one dated before
                // the key existed is void (OpenPGP clients ignore it): both dropped.
                certifications.push(Certification {
                    signer,
                    created: sig.created().map(|t| t.as_secs()).unwrap_or(0),
                    user_id: text.clone(),
                    claims: claims_of(sig),
                    signature: sig.clone(),
                });
                third.push(sig.clone());
            }
        }
        if own.is_empty() {
            continue;
        }
        user_ids.push(text);
        own.extend(third);
        users.push(pgp::types::SignedUser {
            id: user.id.clone(),
            signatures: own,
        });
    }
    if users.is_empty() {
        return Err(CertError::Refused("no self-signed User ID"));
    }
    // Keep only third-party certifications of User IDs that stayed.
    certifications.retain(|c| user_ids.contains(&c.user_id));
    let mut keys = vec![fingerprint];
    let mut x25519 = None;
    let mut subkeys = Vec::new();
    for sub in &cert.public_subkeys {
        let sigs: Vec<Signature> = sub
            .signatures
            .iter()
            .filter(|s| !verify || s.verify_subkey_binding(primary, &sub.key).is_ok())
            .cloned()
            .collect();
        if sigs.is_empty() {
            continue;
        }
        keys.push(fpr(&sub.key));
        if let PublicParams::ECDH(EcdhPublicParams::Curve25519Legacy { p, .. }) =
            sub.key.public_params()
        {
            x25519.get_or_insert(p.to_bytes());
        }
        subkeys.push(SignedPublicSubKey::new(sub.key.clone(), sigs));
    }
    let revocations = cert
        .details
        .revocation_signatures
        .iter()
        .filter(|s| !verify || s.verify_key(primary).is_ok())
        .cloned()
        .collect();
    let direct = cert
        .details
        .direct_signatures
        .iter()
        .filter(|s| !verify || s.verify_key(primary).is_ok())
        .cloned()
        .collect();
    let cleaned = SignedPublicKey::new(
        primary.clone(),
        SignedKeyDetails {
            revocation_signatures: revocations,
            direct_signatures: direct,
            users,
            user_attributes: vec![],
        },
        subkeys,
    );
    Ok(Cert {
        cert: cleaned,
        fingerprint,
        keys,
        user_ids,
        x25519,
        ed25519,
        certifications,
    })
}

/// Verifies a third-party certification against the signer's primary key.
pub fn verify_certification(
    cert: &Cert,
    certification: &Certification,
    signer: &PublicKey,
) -> Result<(), CertError> {
    if fpr(signer) != certification.signer {
        return Err(CertError::Signature("signed by another key"));
    }
    let user = cert
        .cert
        .details
        .users
        .iter()
        .find(|u| u.id.as_str() == Some(certification.user_id.as_str()))
        .ok_or(CertError::Signature(
            "certifies a User ID not on the certificate",
        ))?;
    certification
        .signature
        .verify_third_party_certification(&cert.cert.primary_key, signer, Tag::UserId, &user.id)
        .map_err(|_| CertError::Signature("third-party certification does not verify"))
}

/// The certificate with only the given third-party certifications kept (by signature bytes): what the registry
/// stores after dropping certifications by unknown or unauthorized parties (the certificate-flooding defence).
pub fn keep_certifications(
    cert: &Cert,
    keep: &[&Certification],
) -> Result<SignedPublicKey, CertError> {
    let keep: Vec<Vec<u8>> = keep
        .iter()
        .map(|c| c.signature.to_bytes().map_err(build))
        .collect::<Result<_, _>>()?;
    let mut out = cert.cert.clone();
    for user in &mut out.details.users {
        let mut sigs = Vec::new();
        for sig in &user.signatures {
            let own = sig
                .issuer_fingerprint()
                .first()
                .is_some_and(|f| f.as_bytes() == cert.fingerprint);
            if own || keep.contains(&sig.to_bytes().map_err(build)?) {
                sigs.push(sig.clone());
            }
        }
        user.signatures = sigs;
    }
    Ok(out)
}

/// `ours` with every signature of `theirs` it lacks (same primary key): User IDs, subkeys, revocations. Signatures
/// are compared by their bytes, so merging is idempotent and order-independent up to the order of appends.
pub fn merge(
    ours: &SignedPublicKey,
    theirs: &SignedPublicKey,
) -> Result<SignedPublicKey, CertError> {
    if fpr(&ours.primary_key) != fpr(&theirs.primary_key) {
        return Err(CertError::Refused("merging two different certificates"));
    }
    fn add(into: &mut Vec<Signature>, from: &[Signature]) -> Result<(), CertError> {
        let have: Vec<Vec<u8>> = into
            .iter()
            .map(|s| s.to_bytes().map_err(build))
            .collect::<Result<_, _>>()?;
        for s in from {
            if !have.contains(&s.to_bytes().map_err(build)?) {
                into.push(s.clone());
            }
        }
        Ok(())
    }
    let mut out = ours.clone();
    add(
        &mut out.details.revocation_signatures,
        &theirs.details.revocation_signatures,
    )?;
    add(
        &mut out.details.direct_signatures,
        &theirs.details.direct_signatures,
    )?;
    for user in &theirs.details.users {
        match out.details.users.iter_mut().find(|u| u.id == user.id) {
            Some(mine) => add(&mut mine.signatures, &user.signatures)?,
            None => out.details.users.push(user.clone()),
        }
    }
    for sub in &theirs.public_subkeys {
        match out
            .public_subkeys
            .iter_mut()
            .find(|s| fpr(&s.key) == fpr(&sub.key))
        {
            Some(mine) => add(&mut mine.signatures, &sub.signatures)?,
            None => out.public_subkeys.push(sub.clone()),
        }
    }
    Ok(out)
}

/// The certificate's binary encoding.
pub fn to_bytes(cert: &SignedPublicKey) -> Result<Vec<u8>, CertError> {
    cert.to_bytes().map_err(build)
}

/// The certificate ASCII-armored, as HKP serves it.
pub fn to_armored(cert: &SignedPublicKey) -> Result<String, CertError> {
    cert.to_armored_string(Default::default()).map_err(build)
}

/// Stored certificate bytes, ASCII-armoured as they are (no parsing): what HKP serves.
pub fn armor_bytes(bytes: &[u8]) -> Result<String, CertError> {
    struct Raw<'a>(&'a [u8]);
    impl Serialize for Raw<'_> {
        fn to_writer<W: std::io::Write>(&self, w: &mut W) -> pgp::errors::Result<()> {
            w.write_all(self.0)?;
            Ok(())
        }
        fn write_len(&self) -> usize {
            self.0.len()
        }
    }
    let mut out = Vec::new();
    pgp::armor::write(
        &Raw(bytes),
        pgp::armor::BlockType::PublicKey,
        &mut out,
        None,
        true,
    )
    .map_err(build)?;
    String::from_utf8(out).map_err(|_| CertError::Build("armour is not text".into()))
}

/// The packets that log one certification: the primary key, the User ID and the signature. Each is a valid
/// (if minimal) certificate on its own, so a log entry can be checked without the rest.
pub fn certification_packets(
    cert: &SignedPublicKey,
    certification: &Certification,
) -> Result<Vec<u8>, CertError> {
    use pgp::packet::PacketTrait;
    let user = cert
        .details
        .users
        .iter()
        .find(|u| u.id.as_str() == Some(certification.user_id.as_str()))
        .ok_or(CertError::Refused(
            "certifies a User ID not on the certificate",
        ))?;
    let mut out = Vec::new();
    cert.primary_key
        .to_writer_with_header(&mut out)
        .map_err(build)?;
    user.id.to_writer_with_header(&mut out).map_err(build)?;
    certification
        .signature
        .to_writer_with_header(&mut out)
        .map_err(build)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const AT: u32 = 1_780_000_000;

    fn device() -> (Ed25519Key, DeviceId, [u8; 32]) {
        let id = DeviceId([2, 0, 0x5e, 0x10, 0, 0, 0, 1]);
        let secret = [7u8; 32];
        let public = x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(secret));
        let key = Ed25519Key::from_seed(&device_identity_seed(&secret, id), AT).unwrap();
        (key, id, public.to_bytes())
    }

    #[test]
    fn device_certificate_checks_and_carries_its_admission_key() {
        let (key, id, static_public) = device();
        let cert = check(device_certificate(&key, id, static_public).unwrap()).unwrap();
        assert_eq!(cert.fingerprint, key.fingerprint());
        assert_eq!(cert.x25519, Some(static_public));
        assert_eq!(cert.user_ids, vec![device_user_id(id)]);
        assert_eq!(cert.keys.len(), 2);
        // It round-trips through both encodings, and the armour of the stored bytes is the armour of the parsed.
        let armored = to_armored(&cert.cert).unwrap();
        assert_eq!(
            armor_bytes(&to_bytes(&cert.cert).unwrap()).unwrap(),
            armored
        );
        // Read back from the store without verifying again, it is the same certificate.
        let again = stored(&to_bytes(&cert.cert).unwrap()).unwrap();
        assert_eq!(again.fingerprint, cert.fingerprint);
        assert_eq!(again.x25519, cert.x25519);
        assert_eq!(again.user_ids, cert.user_ids);
        assert_eq!(
            to_bytes(&parse(armored.as_bytes()).unwrap()).unwrap(),
            to_bytes(&cert.cert).unwrap()
        );
    }

    #[test]
    fn manufacturer_certification_verifies_and_carries_attributes() {
        let (key, id, static_public) = device();
        let maker = Ed25519Key::from_seed(&[1; 32], AT).unwrap();
        let mut cert = device_certificate(&key, id, static_public).unwrap();
        let claims = Claims {
            role: "manufacturer".into(),
            attributes: vec![("model".into(), "TH-1".into()), ("lot".into(), "42".into())],
        };
        let sig = certify(&maker, &cert, &claims, AT + 1).unwrap();
        cert.details.users[0].signatures.push(sig);
        let checked = check(cert).unwrap();
        assert_eq!(checked.certifications.len(), 1);
        let c = &checked.certifications[0];
        assert_eq!(c.signer, maker.fingerprint());
        assert_eq!(c.claims, claims);
        verify_certification(&checked, c, maker.public_key()).unwrap();
        // Another key does not verify it, even one claiming the same fingerprint is impossible: checked by bytes.
        let other = Ed25519Key::from_seed(&[2; 32], AT).unwrap();
        assert!(verify_certification(&checked, c, other.public_key()).is_err());
    }

    #[test]
    fn a_forged_self_signature_or_binding_is_dropped() {
        let (key, id, static_public) = device();
        let mallory = Ed25519Key::from_seed(&[9; 32], AT).unwrap();
        // Mallory binds her own X25519 key to the device's identity key: the binding does not verify.
        let mut cert = device_certificate(&key, id, static_public).unwrap();
        let forged = device_certificate(&mallory, id, [5; 32]).unwrap();
        cert.public_subkeys = forged.public_subkeys.clone();
        assert_eq!(check(cert).unwrap().x25519, None);
        // A User ID self-signed by another key is no User ID: the certificate is refused.
        let mut cert = device_certificate(&key, id, static_public).unwrap();
        cert.details.users = forged.details.users.clone();
        assert!(check(cert).is_err());
    }

    #[test]
    fn merge_is_idempotent() {
        let (key, id, static_public) = device();
        let maker = Ed25519Key::from_seed(&[1; 32], AT).unwrap();
        let plain = device_certificate(&key, id, static_public).unwrap();
        let mut endorsed = plain.clone();
        let claims = Claims {
            role: "integrator".into(),
            attributes: vec![],
        };
        endorsed.details.users[0]
            .signatures
            .push(certify(&maker, &plain, &claims, AT).unwrap());
        let once = merge(&plain, &endorsed).unwrap();
        let twice = merge(&once, &endorsed).unwrap();
        assert_eq!(to_bytes(&once).unwrap(), to_bytes(&twice).unwrap());
        assert_eq!(once.details.users[0].signatures.len(), 2);
    }
}
