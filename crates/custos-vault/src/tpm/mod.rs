//! The TPM 2.0 backend (feature `tpm`): the keeper's vault and a device's long-term secrets held by a TPM.
//!
//! TPM 2.0 has neither Ed25519 nor X25519, so the TPM holds what it can compute with and seals the rest:
//! - the master secret `M` is a keyed-hash (HMAC-SHA256) object: a DPK is `HKDF-Expand(M, info, 32)`, which is the
//!   single HMAC `HMAC(M, info ‖ 0x01)`, so `TPM2_HMAC` computes it and `M` never leaves the TPM;
//! - the Ed25519 signing seed and a device's secrets are sealed data objects, unsealed into memory for one use.
//!
//! Every object is a child of the TCG-profile ECC P-256 storage key of the owner hierarchy, re-created from its
//! template on every connect (the same key for the same TPM until its owner hierarchy is cleared). On disk are only
//! the objects' public and private blobs: the private part is encrypted and integrity-protected under that storage
//! key, so the blobs load in no other TPM. Layouts and the threat model are in docs/vault.md ("TPM backend").
//!
//! Commands run in one HMAC session salted with the storage key, with parameter encryption both ways, so `M`
//! (when imported) and the unsealed secrets are encrypted on the bus to a discrete TPM.

mod sealed;
mod vault;

pub use sealed::{TpmKey, TpmSealed, TpmSealer};
pub use vault::TpmVault;

use std::str::FromStr;

use tss_esapi::attributes::{ObjectAttributesBuilder, SessionAttributesBuilder};
use tss_esapi::constants::SessionType;
use tss_esapi::constants::response_code::Tss2ResponseCodeKind;
use tss_esapi::handles::KeyHandle;
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, PublicAlgorithm};
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::resource_handles::Hierarchy;
use tss_esapi::structures::{
    Auth, EccPoint, EccScheme, EncryptedSecret, HmacScheme, KeyDerivationFunctionScheme,
    KeyedHashScheme, MaxBuffer, Private, Public, PublicBuilder, PublicEccParametersBuilder,
    PublicKeyedHashParameters, SensitiveData, SymmetricDefinition, SymmetricDefinitionObject,
};
use tss_esapi::traits::{Marshall, UnMarshall};
use tss_esapi::utils::TpmsContext;
use tss_esapi::{Context, TctiNameConf};
use zeroize::Zeroizing;

use crate::VaultError;

/// The most a sealed data object holds (`MAX_SYM_DATA`).
pub const MAX_SEALED_LEN: usize = 128;

/// A TPM error as a [`VaultError`], saying what the vault was doing.
fn tpm_err(op: &'static str) -> impl FnOnce(tss_esapi::Error) -> VaultError {
    move |e| VaultError::Tpm {
        op,
        detail: e.to_string(),
    }
}

/// A connection to a TPM with an encrypting session open. Commands are serialized by the caller (a `Mutex`): one
/// TCTI connection carries one command at a time.
///
/// Nothing stays loaded between operations: the storage key is kept as a saved context and each operation loads
/// it and its child and flushes both. A TPM reached without a resource manager (swtpm, `/dev/tpm0`) holds only
/// three transient objects, and several vaults and sealers may share one; through `/dev/tpmrm0` the kernel would
/// do the same swapping anyway.
#[derive(Debug)]
pub(crate) struct Tpm {
    ctx: Context,
    storage: TpmsContext,
}

/// A TPM object as stored: `TPM2B_PUBLIC ‖ TPM2B_PRIVATE`, the marshalled forms `tpm2_create -u/-r` write.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Blob {
    public: Public,
    private: Private,
}

impl Tpm {
    /// Connects through `tcti` (e.g. `device:/dev/tpmrm0`, `swtpm:host=127.0.0.1,port=2321`), re-creates the
    /// storage key and opens the session.
    pub(crate) fn connect(tcti: &str) -> Result<Self, VaultError> {
        let conf = TctiNameConf::from_str(tcti).map_err(|e| VaultError::Tpm {
            op: "parsing the TCTI",
            detail: format!("{tcti:?}: {e}"),
        })?;
        let mut ctx = Context::new(conf).map_err(|e| VaultError::Tpm {
            op: "connecting",
            detail: format!("{tcti}: {e}"),
        })?;
        let template = storage_template()?;
        // The owner hierarchy's authorization is assumed empty, as TPMs ship and as tpm2-tools leave it.
        let storage = ctx
            .execute_with_nullauth_session(|c| {
                c.create_primary(Hierarchy::Owner, template, None, None, None, None)
            })
            .map_err(tpm_err("creating the storage key"))?
            .key_handle;
        let session = ctx
            .start_auth_session(
                Some(storage),
                None,
                None,
                SessionType::Hmac,
                SymmetricDefinition::AES_128_CFB,
                HashingAlgorithm::Sha256,
            )
            .map_err(tpm_err("starting the session"))?
            .ok_or(VaultError::Tpm {
                op: "starting the session",
                detail: "no session handle returned".into(),
            })?;
        let (attrs, mask) = SessionAttributesBuilder::new()
            .with_decrypt(true)
            .with_encrypt(true)
            .with_continue_session(true)
            .build();
        ctx.tr_sess_set_attributes(session, attrs, mask)
            .map_err(tpm_err("starting the session"))?;
        ctx.set_sessions((Some(session), None, None));
        let saved = ctx
            .context_save(storage.into())
            .map_err(tpm_err("saving the storage key's context"))?;
        ctx.flush_context(storage.into())
            .map_err(tpm_err("unloading the storage key"))?;
        Ok(Self {
            ctx,
            storage: saved,
        })
    }

    /// Runs `f` with the storage key loaded, and unloads it afterwards whatever `f` returned.
    fn with_storage<T>(
        &mut self,
        f: impl FnOnce(&mut Context, KeyHandle) -> Result<T, VaultError>,
    ) -> Result<T, VaultError> {
        let storage = self
            .ctx
            .context_load(self.storage.clone())
            .map_err(tpm_err(
                "loading the storage key (reconnect after a TPM reset)",
            ))?;
        let out = f(&mut self.ctx, storage.into());
        let flushed = self
            .ctx
            .flush_context(storage)
            .map_err(tpm_err("unloading the storage key"));
        let out = out?;
        flushed?;
        Ok(out)
    }

    /// Runs `f` with `blob` loaded (the TPM checks its integrity against the storage key), then unloads it.
    fn with_object<T>(
        &mut self,
        blob: &Blob,
        f: impl FnOnce(&mut Context, KeyHandle) -> Result<T, VaultError>,
    ) -> Result<T, VaultError> {
        let handle = self.with_storage(|ctx, storage| {
            ctx.load(storage, blob.private.clone(), blob.public.clone())
                .map_err(|e| VaultError::WrongTpm(e.to_string()))
        })?;
        let out = f(&mut self.ctx, handle);
        let flushed = self
            .ctx
            .flush_context(handle.into())
            .map_err(tpm_err("unloading an object"));
        let out = out?;
        flushed?;
        Ok(out)
    }

    /// Creates a child of the storage key. `data` is the object's secret (an HMAC key or sealed bytes) or `None`
    /// for the TPM to draw it (HMAC keys only).
    pub(crate) fn create(
        &mut self,
        template: Public,
        auth: Option<Auth>,
        data: Option<SensitiveData>,
    ) -> Result<Blob, VaultError> {
        let out = self.with_storage(|ctx, storage| {
            ctx.create(storage, template, auth, data, None, None)
                .map_err(tpm_err("creating an object"))
        })?;
        Ok(Blob {
            public: out.out_public,
            private: out.out_private,
        })
    }

    /// The storage key's `TPM2B_PUBLIC`.
    pub(crate) fn storage_public(&mut self) -> Result<Vec<u8>, VaultError> {
        let public = self.with_storage(|ctx, storage| {
            ctx.read_public(storage)
                .map_err(tpm_err("reading the storage key"))
        })?;
        let body = public
            .0
            .marshall()
            .map_err(tpm_err("encoding the storage key"))?;
        let len = u16::try_from(body.len()).map_err(|_| VaultError::Crypto)?;
        let mut out = len.to_be_bytes().to_vec();
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// `TPM2_Import` under the storage key, with the outer wrapper only (no inner symmetric wrapper).
    pub(crate) fn import(&mut self, blob: &crate::TpmImportBlob) -> Result<Blob, VaultError> {
        let bad = |e: tss_esapi::Error| VaultError::Malformed(format!("TPM import blob: {e}"));
        let public = Public::unmarshall(&blob.public).map_err(bad)?;
        let duplicate = Private::try_from(blob.duplicate.clone()).map_err(bad)?;
        let seed = EncryptedSecret::try_from(blob.seed.clone()).map_err(bad)?;
        let import_public = public.clone();
        let private = self.with_storage(|ctx, storage| {
            ctx.import(
                storage.into(),
                None,
                import_public,
                duplicate,
                seed,
                SymmetricDefinitionObject::Null,
            )
            .map_err(|e| VaultError::WrongTpm(e.to_string()))
        })?;
        Ok(Blob { public, private })
    }

    /// Checks that `blob` loads in this TPM.
    pub(crate) fn check(&mut self, blob: &Blob) -> Result<(), VaultError> {
        self.with_object(blob, |_, _| Ok(()))
    }

    /// `HMAC-SHA256(key, msg)` inside the TPM, with `key` an HMAC key object.
    pub(crate) fn hmac(
        &mut self,
        key: &Blob,
        msg: &[u8],
    ) -> Result<Zeroizing<[u8; 32]>, VaultError> {
        let buf = MaxBuffer::try_from(msg.to_vec()).map_err(tpm_err("HMAC"))?;
        let digest = self.with_object(key, |ctx, handle| {
            ctx.hmac(handle.into(), buf, HashingAlgorithm::Sha256)
                .map_err(tpm_err("HMAC"))
        })?;
        let mut out = Zeroizing::new([0u8; 32]);
        if digest.value().len() != 32 {
            return Err(VaultError::Tpm {
                op: "HMAC",
                detail: format!("{} bytes, not 32", digest.value().len()),
            });
        }
        out.copy_from_slice(digest.value());
        Ok(out)
    }

    /// Unseals a sealed data object with `auth`.
    pub(crate) fn unseal(
        &mut self,
        blob: &Blob,
        auth: Auth,
    ) -> Result<Zeroizing<Vec<u8>>, VaultError> {
        self.with_object(blob, |ctx, handle| {
            let out = ctx
                .tr_set_auth(handle.into(), auth)
                .and_then(|()| ctx.unseal(handle.into()));
            match out {
                Ok(data) => Ok(Zeroizing::new(data.value().to_vec())),
                Err(tss_esapi::Error::Tss2Error(rc))
                    if matches!(
                        rc.kind(),
                        Some(Tss2ResponseCodeKind::BadAuth | Tss2ResponseCodeKind::AuthFail)
                    ) =>
                {
                    Err(VaultError::SealedName)
                }
                Err(e) => Err(tpm_err("unsealing")(e)),
            }
        })
    }
}

impl Blob {
    /// `TPM2B_PUBLIC ‖ TPM2B_PRIVATE`.
    pub(crate) fn encode(&self) -> Result<Vec<u8>, VaultError> {
        let public = self.public.marshall().map_err(tpm_err("encoding a blob"))?;
        let mut out = Vec::with_capacity(4 + public.len() + self.private.len());
        for part in [&public[..], self.private.value()] {
            let len = u16::try_from(part.len()).map_err(|_| VaultError::Crypto)?;
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(part);
        }
        Ok(out)
    }

    /// Parses what [`Blob::encode`] wrote; anything else (trailing bytes, a public area that does not re-encode
    /// to the same bytes) is `Malformed`.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, VaultError> {
        let bad = |why: &str| VaultError::Malformed(format!("TPM object blob: {why}"));
        let (public, rest) = take_sized(bytes).ok_or_else(|| bad("truncated public area"))?;
        let (private, rest) = take_sized(rest).ok_or_else(|| bad("truncated private area"))?;
        if !rest.is_empty() {
            return Err(bad("trailing bytes"));
        }
        let parsed = Public::unmarshall(public).map_err(|e| bad(&e.to_string()))?;
        // The unmarshaller ignores what follows the structure; re-encoding shows it consumed exactly the bytes.
        if parsed.marshall().ok().as_deref() != Some(public) {
            return Err(bad("public area not in canonical form"));
        }
        let private = Private::try_from(private.to_vec()).map_err(|e| bad(&e.to_string()))?;
        Ok(Self {
            public: parsed,
            private,
        })
    }
}

/// Splits a big-endian u16-length-prefixed field off the front of `bytes`.
fn take_sized(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let (len, rest) = bytes.split_first_chunk::<2>()?;
    let len = usize::from(u16::from_be_bytes(*len));
    (rest.len() >= len).then(|| rest.split_at(len))
}

/// The TCG provisioning-guidance ECC storage root key: a restricted decryption key on NIST P-256 with AES-128-CFB
/// for its children, no DA lockout, empty authorization. Also what `tpm2_createprimary -C o -G ecc` makes.
pub fn storage_template() -> Result<Public, VaultError> {
    let attrs = ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_sensitive_data_origin(true)
        .with_user_with_auth(true)
        .with_no_da(true)
        .with_restricted(true)
        .with_decrypt(true)
        .build()
        .map_err(tpm_err("building the storage template"))?;
    PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::Ecc)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attrs)
        .with_ecc_parameters(
            PublicEccParametersBuilder::new()
                .with_ecc_scheme(EccScheme::Null)
                .with_curve(EccCurve::NistP256)
                .with_is_signing_key(false)
                .with_is_decryption_key(true)
                .with_restricted(true)
                .with_symmetric(SymmetricDefinitionObject::AES_128_CFB)
                .with_key_derivation_function_scheme(KeyDerivationFunctionScheme::Null)
                .build()
                .map_err(tpm_err("building the storage template"))?,
        )
        .with_ecc_unique_identifier(EccPoint::default())
        .build()
        .map_err(tpm_err("building the storage template"))
}

/// An HMAC-SHA256 key that never leaves this TPM (fixedTPM, fixedParent: not duplicable). `imported` clears
/// sensitiveDataOrigin, which TPM2_Create requires when the caller supplies the key.
pub(crate) fn hmac_key_template(imported: bool) -> Result<Public, VaultError> {
    let attrs = ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_sensitive_data_origin(!imported)
        .with_user_with_auth(true)
        .with_no_da(true)
        .with_sign_encrypt(true)
        .build()
        .map_err(tpm_err("building the HMAC key template"))?;
    PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::KeyedHash)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attrs)
        .with_keyed_hash_parameters(PublicKeyedHashParameters::new(KeyedHashScheme::Hmac {
            hmac_scheme: HmacScheme::new(HashingAlgorithm::Sha256),
        }))
        .with_keyed_hash_unique_identifier(Default::default())
        .build()
        .map_err(tpm_err("building the HMAC key template"))
}

/// The template of the vault's HMAC keys (the master secret `M`), for tools that create such a key directly (the
/// TPM benchmark does).
pub fn hmac_template() -> Result<Public, VaultError> {
    hmac_key_template(false)
}

/// A sealed data object: a keyed-hash object with no scheme, whose only use is TPM2_Unseal.
fn sealed_template() -> Result<Public, VaultError> {
    let attrs = ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_user_with_auth(true)
        // The authorization value only binds a name (it is derivable), so failures must not count as attacks.
        .with_no_da(true)
        .build()
        .map_err(tpm_err("building the sealed-object template"))?;
    PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::KeyedHash)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attrs)
        .with_keyed_hash_parameters(PublicKeyedHashParameters::new(KeyedHashScheme::Null))
        .with_keyed_hash_unique_identifier(Default::default())
        .build()
        .map_err(tpm_err("building the sealed-object template"))
}

/// The authorization value of a sealed object: `HMAC-SHA256("custos/v1/tpm-sealed", name)`. Not a secret: it
/// makes the TPM refuse to unseal a blob under any name but its own, so one sealed secret cannot stand in for
/// another.
fn sealed_auth(name: &str) -> Result<Auth, VaultError> {
    use custos_proto::{Crypto, RustCrypto};
    let mac = Zeroizing::new(RustCrypto.hmac_sha256(SEALED_LABEL, &[name.as_bytes()]));
    Auth::try_from(mac.to_vec()).map_err(tpm_err("deriving the authorization value"))
}

const SEALED_LABEL: &[u8] = b"custos/v1/tpm-sealed";

/// Seals `secret` under `name` to the storage key.
pub(crate) fn seal(tpm: &mut Tpm, name: &str, secret: &[u8]) -> Result<Blob, VaultError> {
    if secret.is_empty() || secret.len() > MAX_SEALED_LEN {
        return Err(VaultError::SealedLength(secret.len()));
    }
    let data = SensitiveData::try_from(secret.to_vec()).map_err(tpm_err("sealing"))?;
    tpm.create(sealed_template()?, Some(sealed_auth(name)?), Some(data))
}

/// Unseals what [`seal`] sealed under the same `name`.
pub(crate) fn unseal(
    tpm: &mut Tpm,
    name: &str,
    blob: &Blob,
) -> Result<Zeroizing<Vec<u8>>, VaultError> {
    tpm.unseal(blob, sealed_auth(name)?)
}
